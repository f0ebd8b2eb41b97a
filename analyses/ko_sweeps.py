"""Cheney-style knockout sweeps: accuracy vs fraction knocked out, per layer, node vs synapse KO.

Two measures in one run: the face/house same/different pair task (readout fit on
the intact network) and top-1 agreement with the intact network on the 92-image set
(ground-truth ImageNet labels do not exist for those objects, so agreement with the
intact network's own top-1 is the classification measure).

Each sweep runs twice: with the BatchNorm statistics of the intact network
(``fixed``, the plain Cheney et al. 2017 lesion) and with the statistics after each
lesion re-estimated on held-out fLoc images of other categories (car, instrument,
corridor; variables ``*_recalibrated``, :func:`neurocnn.lesions.knockout` ``recalibrate=``).
Cheney, Schrimpf & Kreiman (2017) found AlexNet (no BN) robust to removing >70% of the
weights into deep layers at random, and conv1 fragile. Writes ``ko_sweeps.nc``,
``ko_sweeps.png`` and ``headline.json``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

sys.path.insert(0, str(Path(__file__).parent))

import neurocnn as nc  # noqa: E402
from _common import as_values, figure, fmt, fmt_int, load_result, make_parser, make_subject, md_table, output_dir, write_headline  # noqa: E402
from neurocnn import tasks  # noqa: E402

SIZES = {  # (fractions, n_train, n_test, n_repeats, number of layers)
    "full": ((0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0), 800, 160, 2, 5),
    "quick": ((0.0, 0.5), 40, 24, 1, 2),
}
N_RECALIBRATION = {"full": 96, "quick": 8}
RECALIBRATION_CATEGORIES = ("car", "instrument", "corridor")


def _spread_layers(subject, n: int) -> list[str]:
    """``n`` default layers spread evenly over depth, among those with weights (synapse KO needs them), output layer excluded."""
    weighted = [name for name in subject.default_layers[:-1]
                if any(isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear)) for m in subject.module(name).modules())]
    index = np.unique(np.round(np.linspace(0, len(weighted) - 1, n)).astype(int))
    return [weighted[i] for i in index]


def headline(folder: Path) -> dict[str, str]:
    """The values the manuscript prints about this analysis, read back from its results."""
    ds = load_result(folder, "ko_sweeps.nc").mean("repeat")
    fractions = [float(f) for f in ds["fraction"].values]
    rows = []
    for layer in ds["layer"].values:
        for kind in ds["kind"].values:
            pair = ds["pair_accuracy"].sel(layer=layer, kind=kind).values
            top1 = ds["top1_agreement"].sel(layer=layer, kind=kind).values
            rows.append([str(layer), str(kind), *(f"{fmt(a, 2)} / {fmt(b, 2)}" for a, b in zip(pair, top1))])
    full = ds.sel(fraction=max(fractions))
    node_full = full["pair_accuracy"].sel(kind="node")
    return {
        "ko_n_layers": fmt_int(ds.sizes["layer"]),
        "ko_layers": ", ".join(str(v) for v in ds["layer"].values),
        "ko_fractions": ", ".join(fmt(f, 2) for f in fractions),
        "ko_n_train": fmt_int(ds.attrs["n_train_pairs"]),
        "ko_n_test": fmt_int(ds.attrs["n_test_pairs"]),
        "ko_chance": fmt(ds["pair_accuracy"].attrs["chance"], 2) if "chance" in ds["pair_accuracy"].attrs else "n/a",
        "ko_intact": fmt(ds["pair_accuracy"].sel(fraction=min(fractions)).mean(), 3),
        "ko_full_node_min": fmt(node_full.min(), 3),
        "ko_full_node_max": fmt(node_full.max(), 3),
        "ko_table": md_table(["layer", "KO", *(f"fraction {fmt(f, 2)}" for f in fractions)], rows),
        "fig_ko": figure(folder, "ko_sweeps.png"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("ko_sweeps", __doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="*", default=None, help="layers to sweep (default: spread over default_layers)")
    parser.add_argument("--fractions", nargs="*", type=float, default=None, help="fractions knocked out (default: by mode)")
    args = parser.parse_args(argv)
    out = output_dir(args)
    t0 = time.time()
    fractions, n_train, n_test, n_repeats, n_layers = SIZES["quick" if args.quick else "full"]
    fractions = tuple(args.fractions) if args.fractions else fractions
    subject = make_subject(args)
    layers = args.layers or _spread_layers(subject, n_layers)
    floc = nc.load_stimuli("floc")
    task = tasks.make_pair_task(floc, ("face", "house"), n_train=n_train, n_test=n_test, seed=args.seed)
    readout = tasks.fit_readout(subject, task, seed=args.seed, progress=args.progress)
    stim = nc.load_stimuli("92images")
    if args.quick:
        stim = stim.subset(range(0, 92, 4))
    others = np.flatnonzero(np.isin(np.asarray(floc.metadata["category"]).astype(str), RECALIBRATION_CATEGORIES))
    n_recal = N_RECALIBRATION["quick" if args.quick else "full"]
    recal_stim = floc.subset(np.random.default_rng(args.seed).choice(others, n_recal, replace=False))
    recal = subject.preprocess(recal_stim)
    sweeps = {}
    for bn, images in (("fixed", None), ("recalibrated", recal)):
        pairs = tasks.ko_sweep(subject, task, layers, fractions, readout=readout, seed=args.seed, n_repeats=n_repeats,
                               progress=args.progress, recalibrate=images)
        classification = tasks.ko_sweep(subject, stim, layers, fractions, seed=args.seed, n_repeats=n_repeats,
                                        progress=args.progress, recalibrate=images)
        sweeps[bn] = xr.Dataset({"pair_accuracy": pairs.drop_vars("layer_dotted"), "top1_agreement": classification.drop_vars("layer_dotted")})
    # fixed-BN variables keep their names (the paper reads them); recalibrated ones get a suffix
    ds = xr.merge([sweeps["fixed"], sweeps["recalibrated"].rename({v: f"{v}_recalibrated" for v in sweeps["recalibrated"].data_vars})],
                  combine_attrs="drop_conflicts")
    ds.attrs = {"model": subject.name, "weights_sha256": subject.weights_id, "seed": args.seed,
                "n_train_pairs": n_train, "n_test_pairs": n_test, "readout_training": "intact",
                "recalibrate": f"*_recalibrated: BatchNorm statistics after the lesion re-estimated on {n_recal} fLoc images "
                               f"of {', '.join(RECALIBRATION_CATEGORIES)} (not in the task); others: intact statistics",
                "runtime_s": round(time.time() - t0, 1)}
    nc.io.save(ds, out / "ko_sweeps.nc", overwrite=args.overwrite)
    figs = {bn: tasks.plot_sweep(sweeps[bn], title=f"{subject.name}: node vs synapse knockout, BN statistics {bn}") for bn in sweeps}
    nc.plotting.save_figure(figs["fixed"], out / "ko_sweeps.png", overwrite=args.overwrite)
    nc.plotting.save_figure(figs["recalibrated"], out / "ko_sweeps_recalibrated.png", overwrite=args.overwrite)
    mean = {bn: sweeps[bn].mean("repeat") for bn in sweeps}
    summary = {"model": subject.name, "quick": bool(args.quick), "seed": args.seed, "layers": [str(v) for v in ds["layer"].values],
                "fractions": [float(f) for f in ds["fraction"].values]}
    for var in ("pair_accuracy", "top1_agreement"):
        summary[var] = {bn: {kind: {str(layer): [round(float(v), 4) for v in mean[bn][var].sel(kind=kind, layer=layer).values]
                                     for layer in ds["layer"].values} for kind in ds["kind"].values} for bn in sweeps}
    print(ds.mean("repeat").to_dataframe().round(3).to_string())
    print(f"{time.time() - t0:.0f} s")
    write_headline(out, lambda folder: {**as_values("ko", summary), "fig_ko_recalibrated": figure(folder, "ko_sweeps_recalibrated.png"), **headline(folder)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
