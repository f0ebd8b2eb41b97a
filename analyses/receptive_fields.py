"""Theoretical vs empirical receptive-field size per layer on the 92 images (Zhou et al. 2015).

The full protocol of Zhou et al. (2015) is the default: for every spatial default layer
of the subject (``--model``; AlexNet conv1..conv5 when its weights are available, else
the embedded EfficientNet-Lite0's stem, stage1..stage7, head), 10 seeded random channels,
each channel's top-10 images among the 92, sliding-window occlusion (11 px random
patches at stride 3 on the 224 px image: 5184 occluded copies per image) ->
discrepancy maps -> re-centred, averaged RFs -> RF size (side of the equal-area square
above half the maximum) next to the theoretical size. All layers are mapped in one
:func:`~neurocnn.receptive_fields.empirical_rfs` call: occluded images are evaluated on
the exact crop covering each unit's theoretical RF, or on the whole image (where no crop
is exact or the crop is over half the image; recorded per layer), shared by every layer
that needs the image and run from a frontier layer on. ``--quick`` is coarse (28 px
tiles, one unit, one image, three layers). Writes ``theoretical_rf.nc``,
``empirical_rf_<layer>.nc``, ``rf_sizes.nc``, ``rf_sizes.png``, ``rfs_<layer>.png``,
``discrepancy_<layer>.png`` and ``headline.json`` (sizes, occlusion modes and run time per
layer) into ``--out``.

Run time of the full protocol on 2 CPU threads (EfficientNet-Lite0, quiet machine): stem..stage4
with 10 units each take 707 s (stage4, on crops of 35% of the image, 640 s). stage5..head
(theoretical RFs of 339..851 px) run on whole images, every occluded image serving all deep
units that need it, from the stage2 frontier on: 54 s per image, measured with 1 unit per
layer (34 images, 1825 s); 5 units need 75 images (about 67 min), 10 units 90 (about 81 min).
On a GPU use ``--device cuda``; ``--layers`` and ``--units`` restrict a run.

Usage: ``python analyses/receptive_fields.py --out out/receptive_fields [--quick] [--model M]``
"""

from __future__ import annotations

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
    empirical_rfs,
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


def headline(folder: Path) -> dict[str, str]:
    """The values the manuscript prints about this analysis, read back from its results."""
    ds = _common.load_result(folder, "rf_sizes.nc")
    rows = [[str(name), _common.fmt(ds["theoretical_size"].sel(layer=name), 0),
             f"{_common.fmt(ds['empirical_mean'].sel(layer=name), 1)} ± {_common.fmt(ds['empirical_std'].sel(layer=name), 1)}",
             _common.fmt(ds["empirical_median"].sel(layer=name), 1), _common.fmt_int(ds["n_units"].sel(layer=name))]
            for name in ds["layer"].values]
    ratio = ds["empirical_mean"] / ds["theoretical_size"]
    finite = np.isfinite(ratio.values)
    deepest = str(ds["layer"].values[-1])
    measured = np.isfinite(ds["empirical_mean"].values)
    return {
        "rf_n_layers": _common.fmt_int(ds.sizes["layer"]),
        "rf_window": _common.fmt_int(ds.attrs["window"]),
        "rf_stride": _common.fmt_int(ds.attrs["stride"]),
        "rf_top_k": _common.fmt_int(ds.attrs["top_k"]),
        "rf_fill": str(ds.attrs["fill"]),
        "rf_threshold": _common.fmt(ds.attrs["threshold"], 2),
        "rf_ratio_min": _common.fmt(np.min(ratio.values[finite]), 2) if finite.any() else "n/a",
        "rf_ratio_max": _common.fmt(np.max(ratio.values[finite]), 2) if finite.any() else "n/a",
        "rf_deepest": deepest,
        "rf_n_measured": _common.fmt_int(measured.sum()),
        "rf_n_smaller": _common.fmt_int((ds["empirical_mean"].values[measured] < ds["theoretical_size"].values[measured]).sum()),
        "rf_table": _common.md_table(["layer", "theoretical (px)", "empirical mean ± sd (px)", "median (px)", "units"], rows),
        "fig_rf_sizes": _common.figure(folder, "rf_sizes.png"),
        "fig_rf_maps": _common.figure(folder, f"rfs_{deepest}.png"),
    }


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
    channels = {layer: np.sort(rng.choice(n_channels[layer], size=min(settings["units"], n_channels[layer]),
                                          replace=False)).tolist() for layer in layers}
    start = time.perf_counter()
    mapped = empirical_rfs(
        subject, channels, stim, top_k=settings["top_k"], window=settings["window"], stride=settings["stride"],
        fill="random", seed=args.seed, batch_size=args.batch_size, device=args.device, progress=args.progress,
    )
    wall = time.perf_counter() - start
    results, seconds = [], {}
    for layer in layers:
        result = mapped[layer]
        seconds[layer] = result.attrs["occlusion_seconds"]
        result.attrs["channel_seed"] = args.seed
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
    run = _run_values(subject, settings, summary, results, seconds, wall, args)
    _common.write_headline(out, lambda folder: {**headline(folder), **run})
    log.info("total run time %.1f s for %d layers (occlusion %.1f s)", wall, len(layers), sum(seconds.values()))
    return 0


def _run_values(subject, settings: dict, summary, results: list, seconds: dict, wall: float, args) -> dict[str, str]:
    """Headline values of this run beyond the manuscript's: protocol, occlusion mode and time per layer."""
    rows = [[str(layer), _common.fmt(summary["theoretical_size"].sel(layer=layer).item(), 0),
             _common.fmt(summary["empirical_mean"].sel(layer=layer).item(), 1), str(result.attrs["occlusion_mode"]),
             _common.fmt(result.attrs["crop_area_fraction"], 3), _common.fmt_int(result.attrs["n_shared_full_maps"]),
             _common.fmt(seconds[str(layer)], 1)]
            for layer, result in zip(summary["layer"].values, results)]
    return {
        "rf_model": subject.name,
        "rf_weights": subject.weights_id[:12],
        "rf_mode": "quick" if args.quick else "full",
        "rf_units_per_layer": _common.fmt_int(settings["units"]),
        "rf_n_images": _common.fmt_int(settings["images"]),
        "rf_seconds_total": _common.fmt(wall, 1),
        "rf_torch_threads": _common.fmt_int(torch.get_num_threads()),
        "rf_device": str(args.device or subject.device),
        "rf_timing_table": _common.md_table(
            ["layer", "theoretical (px)", "empirical mean (px)", "occlusion", "crop area fraction",
             "maps in shared passes", "seconds"], rows),
    }


if __name__ == "__main__":
    raise SystemExit(main())
