"""Theoretical vs empirical receptive-field size per layer on the 92 images (Zhou et al. 2015).

The full protocol of Zhou et al. (2015) is the default: for every spatial default layer
of the subject (``--model``; AlexNet conv1..conv5 when its weights are available, else
the embedded EfficientNet-Lite0's stem, stage1..stage7, head), 10 seeded random channels,
each channel's top-10 images among the 92, sliding-window occlusion (11 px random
patches at stride 3 on the 224 px image: 5184 occluded copies per image) ->
discrepancy maps -> re-centred, averaged RFs -> RF size (side of the equal-area square
above half the maximum) next to the theoretical size. Occluded images are evaluated
on the exact crop covering each unit's theoretical RF (full images where no crop is
exact, e.g. after a global pooling; recorded per layer). ``--quick`` is coarse (28 px
tiles, one unit, one image, three layers). Writes ``theoretical_rf.nc``,
``empirical_rf_<layer>.nc``, ``rf_sizes.nc``, ``rf_sizes.png``, ``rfs_<layer>.png``,
``discrepancy_<layer>.png`` and ``headline.json`` (sizes, occlusion modes and run time per
layer) into ``--out``.

Run time of the full protocol (EfficientNet-Lite0, 9 layers x 10 units x top-10; estimated
from per-image forward times measured on a loaded machine, 1 thread): about 39 CPU-hours,
almost all of it in stage5..head, whose theoretical RFs (339..851 px) cover the whole
image, so their crops are the image and every occluder hits; stem..stage3 take about
2 CPU-minutes on crops (about 1 hour on full images). Run it on a GPU (``--device cuda``)
or restrict it (``--layers``, ``--units``).

Usage: ``python analyses/receptive_fields.py --out out/receptive_fields [--quick] [--model M]``
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

import neurocnn as nc  # noqa: E402
from neurocnn.receptive_fields import (  # noqa: E402
    empirical_rf,
    plot_discrepancy_maps,
    plot_rf_sizes,
    plot_rfs,
    rf_size_summary,
    theoretical_rf,
)

NAME = "receptive_fields"
#: full run: Zhou et al.'s occluder and stride; quick: coarse tiles (every RF is hit) on
#: few units/images.
SETTINGS = {
    "full": {"units": 10, "top_k": 10, "images": 92, "window": 11, "stride": 3, "layers": None},
    "quick": {"units": 1, "top_k": 1, "images": 8, "window": 28, "stride": 28, "layers": 3},
}


def _pick_layers(names: list[str], n: int | None) -> list[str]:
    """All layers, or ``n`` spread evenly over the depth (first and last included)."""
    if n is None or n >= len(names):
        return names
    return [names[i] for i in np.linspace(0, len(names) - 1, n).round().astype(int)]


def main(argv: list[str] | None = None) -> int:
    parser = _common.make_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", default=None,
                        help="layers to map (default: every spatial default layer)")
    parser.add_argument("--units", type=int, default=None, help="channels per layer (default: 10; quick: 1)")
    parser.add_argument("--device", default=None, help="torch device of the occlusion runs (default: the subject's)")
    parser.add_argument("--batch-size", type=int, default=256, help="occluded images per forward pass")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    settings = dict(SETTINGS["quick" if args.quick else "full"])
    if args.units is not None:
        settings["units"] = args.units
    out = _common.output_dir(args)
    if not args.overwrite:
        nc.io.check_writable(out / "headline.json")
    subject = _common.make_subject(args)
    stim = nc.load_stimuli("92images").subset(range(settings["images"]))

    theory = theoretical_rf(subject, args.layers)
    layers = _pick_layers(list(theory["layer"].values), None if args.layers else settings["layers"])
    theory = theory.sel(layer=layers)
    nc.save(theory, out / "theoretical_rf.nc", overwrite=args.overwrite)

    probe = torch.zeros(1, 3, theory.attrs["input_height"], theory.attrs["input_width"], device=subject.device)
    with torch.inference_mode():
        n_channels = {name: out_.shape[1] for name, out_ in subject.forward_layers(probe, layers).items()}
    rng = np.random.default_rng(args.seed)
    results, seconds = [], {}
    for layer in layers:
        channels = np.sort(rng.choice(n_channels[layer], size=min(settings["units"], n_channels[layer]), replace=False))
        start = time.perf_counter()
        result = empirical_rf(
            subject, layer, channels.tolist(), stim, top_k=settings["top_k"], window=settings["window"],
            stride=settings["stride"], fill="random", seed=args.seed, batch_size=args.batch_size,
            device=args.device, progress=args.progress,
        )
        seconds[layer] = time.perf_counter() - start
        result.attrs["channel_seed"] = args.seed
        result.attrs["seconds"] = seconds[layer]
        results.append(result)
        nc.save(result, out / f"empirical_rf_{layer}.nc", overwrite=args.overwrite)
        nc.plotting.save_figure(plot_rfs(result), out / f"rfs_{layer}.png", overwrite=args.overwrite)

    summary = rf_size_summary(results, theory)
    nc.save(summary, out / "rf_sizes.nc", overwrite=args.overwrite)
    nc.plotting.save_figure(plot_rf_sizes(summary), out / "rf_sizes.png", overwrite=args.overwrite)
    nc.plotting.save_figure(plot_discrepancy_maps(results[-1], 0), out / f"discrepancy_{layers[-1]}.png",
                            overwrite=args.overwrite)
    log = logging.getLogger("neurocnn.analyses")
    for layer, result in zip(layers, results):
        row = summary.sel(layer=layer)
        log.info("%s: theoretical %.0f px, empirical %.1f +- %.1f px (%d units); %s occlusion, %.1f s", layer,
                 row["theoretical_size"].item(), row["empirical_mean"].item(), row["empirical_std"].item(),
                 row["n_units"].item(), result.attrs["occlusion_mode"], seconds[layer])
    _write_headline(out / "headline.json", subject, settings, summary, results, seconds, args)
    log.info("total occlusion time %.1f s for %d layers", sum(seconds.values()), len(layers))
    return 0


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _write_headline(path: Path, subject, settings: dict, summary, results: list, seconds: dict, args) -> None:
    """Headline numbers (per layer: theoretical and empirical sizes, occlusion mode, seconds) as JSON."""
    layers = {
        str(layer): {
            "theoretical_size": _finite(summary["theoretical_size"].sel(layer=layer).item()),
            "empirical_mean": _finite(summary["empirical_mean"].sel(layer=layer).item()),
            "empirical_median": _finite(summary["empirical_median"].sel(layer=layer).item()),
            "empirical_std": _finite(summary["empirical_std"].sel(layer=layer).item()),
            "n_units": int(summary["n_units"].sel(layer=layer).item()),
            "occlusion_mode": result.attrs["occlusion_mode"],
            "crop_area_fraction": result.attrs["crop_area_fraction"],
            "seconds": seconds[str(layer)],
        }
        for layer, result in zip(summary["layer"].values, results)
    }
    headline = {
        "analysis": NAME,
        "model": subject.name,
        "weights_sha256": subject.weights_id,
        "mode": "quick" if args.quick else "full",
        "seed": args.seed,
        "window": settings["window"],
        "stride": settings["stride"],
        "top_k": settings["top_k"],
        "units_per_layer": settings["units"],
        "n_images": settings["images"],
        "seconds_total": sum(seconds.values()),
        "torch_threads": torch.get_num_threads(),
        "device": str(args.device or subject.device),
        "neurocnn_version": summary.attrs.get("neurocnn_version", ""),
        "layers": layers,
    }
    path.write_text(json.dumps(headline, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
