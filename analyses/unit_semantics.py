"""Unit semantics per layer: colour detectors (Bau et al. 2017) and category detectors (Zhou et al. 2015).

1. Pixel-level network dissection of every spatial default layer on the 92 images with
   the eleven colour concepts computed from their pixels (quantile 0.005, IoU > 0.04):
   colour detectors per layer, and the median best colour IoU.
2. Image-level annotation of every default layer on fLoc (labels: the six categories,
   types: face / place / object) and on the 92 images (their 12 category labels): top-10
   images per unit, precision >= 0.75 and FDR < 0.05 against the label's base rate.

Writes ``pixel_<layer>.nc``, ``floc_<layer>.nc``, ``92images_<layer>.nc``, the three
per-layer summaries ``*_summary.nc`` with their bar charts ``*_detectors.png``, unit
cards ``cards_pixel.png`` / ``cards_floc.png`` and ``headline.json`` into ``--out``.

Usage: ``python analyses/unit_semantics.py --out out/unit_semantics [--quick] [--model efficientnet_lite0]``
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

import neurocnn as nc  # noqa: E402
from neurocnn import dissection  # noqa: E402
from neurocnn.concepts import concepts_from_stimuli  # noqa: E402

NAME = "unit_semantics"
#: quick: 3 layers, 24 of the 92 images, 10 fLoc images per category, a coarse IoU frame.
SETTINGS = {
    "full": {"layers": None, "images92": 92, "floc_per_category": 144, "size": (112, 112), "k": 10},
    "quick": {"layers": 3, "images92": 24, "floc_per_category": 10, "size": (56, 56), "k": 5},
}
logger = logging.getLogger("neurocnn.analyses")


def _pick(names: list[str], n: int | None) -> list[str]:
    if n is None or n >= len(names):
        return names
    return [names[i] for i in np.linspace(0, len(names) - 1, n).round().astype(int)]


def _spatial_layers(subject: nc.VirtualSubject, layers: list[str]) -> list[str]:
    probe = torch.zeros(1, 3, 224, 224, device=subject.device)
    with torch.inference_mode():
        outputs = subject.forward_layers(probe, layers)
    return [name for name in layers if outputs[name].ndim == 4]


def _save_all(results: dict, prefix: str, out: Path, overwrite: bool):
    for layer, res in results.items():
        res.attrs["requested_as"] = layer
        nc.save(res, out / f"{prefix}_{layer}.nc", overwrite=overwrite)
    summary = dissection.detector_summary(results)
    nc.save(summary, out / f"{prefix}_summary.nc", overwrite=overwrite)
    nc.plotting.save_figure(dissection.plot_detector_counts(summary), out / f"{prefix}_detectors.png",
                            overwrite=overwrite)
    return summary


def _best_units(result, n: int = 3) -> list[int]:
    score = result["label_iou"].values if "label_iou" in result else result["precision"].values
    return [int(u) for u in np.argsort(-score, kind="stable")[:n]]


def main(argv: list[str] | None = None) -> int:
    import matplotlib.pyplot as plt

    parser = _common.make_parser(NAME, __doc__.splitlines()[0])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    settings = SETTINGS["quick" if args.quick else "full"]
    out = _common.output_dir(args)
    subject = _common.make_subject(args)
    layers = _pick(list(subject.default_layers), settings["layers"])
    spatial = _spatial_layers(subject, layers)

    stim92 = nc.load_stimuli("92images")
    stim92 = stim92.subset(np.unique(np.linspace(0, len(stim92) - 1, settings["images92"]).round().astype(int)))
    floc = nc.load_stimuli("floc")
    per = settings["floc_per_category"]
    floc = floc.subset(np.concatenate([np.flatnonzero(floc.metadata["category"] == c)[:per]
                                       for c in dict.fromkeys(floc.metadata["category"].tolist())]))

    # 1. colour dissection; the layers' maps are streamed once into a zarr store, read twice
    probe = concepts_from_stimuli(stim92)
    with tempfile.TemporaryDirectory() as tmp:
        acts = subject.activations(stim92, spatial, store=Path(tmp) / "acts.zarr", progress=args.progress)
        pixel = {layer: dissection.dissect(subject, probe, layer, size=settings["size"], activations=acts[layer],
                                           progress=args.progress) for layer in spatial}
    pixel_summary = _save_all(pixel, "pixel", out, args.overwrite)

    # 2. image-level annotation (one forward pass per probe set for all layers)
    floc_res = dissection.annotate_units(subject, floc, layers, top_k=settings["k"], seed=args.seed, progress=args.progress)
    floc_summary = _save_all(floc_res, "floc", out, args.overwrite)
    res92 = dissection.annotate_units(subject, stim92, layers, top_k=settings["k"], seed=args.seed, progress=args.progress)
    summary92 = _save_all(res92, "92images", out, args.overwrite)

    first, last = spatial[0], layers[-1]
    cards = dissection.plot_unit_cards(subject, probe, pixel[first], _best_units(pixel[first]))
    nc.plotting.save_figure(cards, out / "cards_pixel.png", overwrite=args.overwrite)
    cards = dissection.plot_unit_cards(subject, floc, floc_res[last], _best_units(floc_res[last]))
    nc.plotting.save_figure(cards, out / "cards_floc.png", overwrite=args.overwrite)
    plt.close("all")

    def per_layer(summary):
        return {str(layer): {"fraction_detectors": round(float(summary["fraction_detectors"].sel(layer=layer)), 4),
                             **{str(c): int(summary["n_detectors"].sel(layer=layer, category=c))
                                for c in summary["category"].values}}
                for layer in summary["layer"].values}

    headline = {
        "model": subject.name, "weights_sha256": subject.weights_id, "seed": args.seed,
        "quick": bool(args.quick), "neurocnn_version": nc.subject.version(),
        "n_92images": len(stim92), "n_floc": len(floc),
        "color_detectors": per_layer(pixel_summary),
        "median_best_color_iou": {layer: round(float(np.median(r["label_iou"].values)), 4) for layer, r in pixel.items()},
        "floc_detectors": per_layer(floc_summary),
        "images92_detectors": per_layer(summary92),
    }
    values = _common.as_values("us", headline)
    _common.write_headline(out, lambda folder: {**values, "fig_us_cards_pixel": _common.figure(folder, "cards_pixel.png"),
                                                "fig_us_cards_floc": _common.figure(folder, "cards_floc.png")})
    for layer in spatial:
        logger.info("%s: colour detectors %.0f%% (median best IoU %.3f)", layer,
                    100 * headline["color_detectors"][layer]["fraction_detectors"],
                    headline["median_best_color_iou"][layer])
    for layer in layers:
        logger.info("%s: fLoc detectors %.0f%%, 92-image detectors %.0f%%", layer,
                    100 * headline["floc_detectors"][layer]["fraction_detectors"],
                    100 * headline["images92_detectors"][layer]["fraction_detectors"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
