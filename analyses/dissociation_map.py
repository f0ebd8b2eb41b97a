"""Dissociation map: where (layer x lesion size) do face and place functions dissociate?

For every default layer before the readout layer and several lesion sizes (the top-N
channels by d' on the selection half of fLoc, N from 1 channel to 20% of the layer;
also unit-level channel x position lesions on layers of moderate size), the face-unit
knockout and the place-unit knockout are evaluated on face-pair and house-pair
same/different accuracy (and readout d') of the held-out half, against a sham null:
``--n-sham`` random draws of the same size matched one-to-one on the lesioned units'
mean activation (:func:`neurocnn.lesions.matched_random_units`). Per cell: the
double-dissociation index DoD = [acc_placeKO(face) - acc_faceKO(face)] -
[acc_placeKO(house) - acc_faceKO(house)] (positive = the predicted dissociation) with a
bootstrap CI and a pair-label permutation p (:func:`neurocnn.tasks.interaction_test`),
and the sham p: how often a pairing of a face-side and a place-side draw (the lesion or
one of its matched shams) gives a DoD as large (:func:`neurocnn.tasks.sham_interaction_test`;
its floor is 1 / (n_sham + 1)^2, attr ``p_sham_floor``). BH-FDR over all cells of a map;
a cell is significant when both q <= 0.05 and DoD > 0. The full mode draws
:func:`neurocnn.tasks.n_sham_for` shams per lesion, the fewest with which one cell alone can pass BH
over the map (28 for 40 cells), and draws them only for the cells that pass the
permutation criteria (``--shams candidates``; the others cannot be significant, and
their missing sham p counts as 1 in the sham FDR): a map costs two lesioned evaluations
per cell plus 2 x n_sham per candidate cell, instead of 2 + 2 x n_sham per cell.
``--shams all`` (the quick default) draws them everywhere. The same map for
virtual TMS (noise amplitude instead of size, top 10% channels). The full mode maps every
network with real weights (``--model`` for one, ``--maps`` for some maps); ``--quick``
maps the first of them (EfficientNet-Lite0) on two layers. Writes per network
``dissociation_map_<model>_<map>.nc`` (each as soon as its map is done),
``dissociation_map.png`` and ``headline.json``.

Measured run times of the full mode (2-core CPU, one thread per run, two or three runs
sharing it): EfficientNet-Lite0 channel KO 527 s, TMS 254 s, unit KO 1401 s (6 candidate
cells with 2 x 24 shams each), plus about 160 s for the readout and the localizer;
MobileNetV2 channel KO 176 s, TMS 115 s; EfficientNet-Lite2 channel KO 933 s, TMS 480 s.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.stats
import torch
import xarray as xr
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).parent))

import neurocnn as nc  # noqa: E402
from _common import as_values, available_models, figure, make_parser, output_dir, write_headline  # noqa: E402
from neurocnn import lesions, tasks  # noqa: E402

SIZE_FRACTIONS = (0.0, 0.025, 0.05, 0.1, 0.2)  # 0.0 = a single channel / unit
SETTINGS = {
    "full": {"frac": 0.5, "n_train": 2400, "n_test": 480, "n_sham": None, "shams": "candidates", "n_perm": 2000, "n_boot": 1000,
             "n_layers": None, "sizes": SIZE_FRACTIONS, "max_units": 80_000, "n_unit_layers": None,
             "amplitudes": (0.5, 1.0, 2.0, 4.0)},
    "quick": {"frac": 0.05, "n_train": 40, "n_test": 24, "n_sham": 2, "shams": "all", "n_perm": 200, "n_boot": 200,
              "n_layers": 2, "sizes": (0.0, 0.1), "max_units": 20_000, "n_unit_layers": 1, "amplitudes": (2.0,)},
}
#: the maps of one network: channel knockout, virtual TMS on channels, unit (channel x position) knockout.
MAPS = ("knockout_channel", "tms_channel", "knockout_unit")
#: which cells get sham draws (see _map).
SHAMS = ("candidates", "all")
TMS_SIZE = 0.1
ALPHA = 0.05
#: the dimensions of a cell's non-scalar results (after layer and size / amplitude).
_CELL_DIMS = {"accuracy": ("condition", "category"), "d_prime": ("condition", "category"), "sham_effect": ("matched_to", "sham")}


def _lesion_layers(subject, readout_layer: str, n: int | None) -> list[str]:
    """Default layers with a (channel, y, x) output that run before the readout layer (``n`` spread over depth)."""
    names = subject.default_layers
    stop = [subject.resolve_layer(x) for x in names].index(subject.resolve_layer(readout_layer))
    layers = [x for x in names[:stop] if len(subject.output_shape(x)) == 3]
    if n is not None and n < len(layers):  # --quick: the deepest ones (the cheapest to recompute from)
        layers = layers[-n:]
    return layers


def _localizer_responses(subject, stim, layers, unit_layers, batch_size, progress):
    """Per layer: channel responses (spatial means), channel SD over images x positions, unit responses."""
    x_all = subject.preprocess(stim)
    chan = {k: [] for k in layers}
    units = {k: [] for k in unit_layers}
    s1 = {k: 0.0 for k in layers}
    s2 = {k: 0.0 for k in layers}
    n = {k: 0 for k in layers}
    for i in tqdm(range(0, len(stim), batch_size), desc="localizer", disable=not progress, leave=False):
        with torch.inference_mode():
            out = subject.forward_layers(x_all[i : i + batch_size], layers)
        for k, v in out.items():
            v = v.double()
            chan[k].append(v.flatten(2).mean(-1).numpy())
            s1[k] = s1[k] + v.sum((0, 2, 3)).numpy()
            s2[k] = s2[k] + (v**2).sum((0, 2, 3)).numpy()
            n[k] += v.shape[0] * v.shape[2] * v.shape[3]
            if k in units:
                units[k].append(v.float().numpy())
    sd = {k: np.sqrt(np.maximum(s2[k] - s1[k] ** 2 / n[k], 0) / (n[k] - 1)) for k in layers}
    return {k: np.concatenate(v) for k, v in chan.items()}, sd, {k: np.concatenate(v) for k, v in units.items()}


def _as_activations(values: np.ndarray, subject, layer: str, stim) -> xr.DataArray:
    dims = ("stimulus", "channel") if values.ndim == 2 else ("stimulus", "channel", "y", "x")
    return xr.DataArray(values, dims=dims, coords={"stimulus": stim.ids}, attrs=subject.provenance(layer))


def _selections(subject, stim, layer, values, level, n_units):
    """Top-n face and place units by d' (face vs place+object; place vs face+object) and mean activations."""
    act = _as_activations(values, subject, layer, stim)
    sel = {d: lesions.selectivity(subject, stim, layer, target=d, against=[o for o in ("face", "place", "object") if o != d],
                                  activations=act, level=level) for d in ("face", "place")}
    chosen = {d: lesions.select_units(sel[d], method="top_n", n=n_units, stat="d_prime") for d in sel}
    mean = values.reshape(values.shape[0], -1).mean(0)
    return chosen, mean


class _Cell(NamedTuple):
    """One map cell: how to make its lesions, the face and place units, and the units' mean activations."""

    make: Callable[[Any, int | None], lesions.Lesion]  # (units, sham index or None) -> lesion
    face: xr.DataArray
    place: xr.DataArray
    mean: np.ndarray


def _lesion_pair(subject, task, readout, cell: _Cell, cfg, seed):
    """Stage 1 of a cell: the face and place lesions and their interaction test over pair labels."""
    ev = {d: tasks.evaluate(subject, task, readout, cell.make(u, None), n_bootstrap=1, seed=seed)
          for d, u in (("face", cell.face), ("place", cell.place))}
    return ev, tasks.interaction_test(ev["face"], ev["place"], n_permutations=cfg["n_perm"], n_bootstrap=cfg["n_boot"], seed=seed)


def _shams(subject, task, readout, cell: _Cell, n_sham, seed):
    """Stage 2 of a cell: ``n_sham`` random lesions matched to each of the face and the place units."""
    both = np.union1d(cell.face.values, cell.place.values)
    shams = {"face": [], "place": []}
    for s in range(n_sham):
        for d, u in (("face", cell.face), ("place", cell.place)):
            rand = lesions.matched_random_units(u.values, cell.mean, exclude=both, seed=seed + 1000 * (s + 1) + (d == "place"))
            shams[d].append(tasks.evaluate(subject, task, readout, cell.make(rand, s), n_bootstrap=1, seed=seed))
    return shams


def _cell_result(cell: _Cell, ev, inter, shams, n_sham) -> dict:
    """A cell's values; the sham ones are NaN where no shams were drawn."""
    if shams is None:
        none = np.full(len(ev["face"]["category"]), np.nan)
        sham_acc = sham_dp = (none, none)
        effect = np.full((2, n_sham), np.nan)
        null = {"p_sham": np.nan, "sham_dod_mean": np.nan, "sham_dod_sd": np.nan}
    else:
        sham_acc = [np.mean([x["accuracy"].values for x in shams[d]], 0) for d in ("face", "place")]
        sham_dp = [np.mean([x["d_prime"].values for x in shams[d]], 0) for d in ("face", "place")]
        null = tasks.sham_interaction_test(ev["face"], ev["place"], shams["face"], shams["place"])
        effect = np.stack([null["effect_a"].values[1:], null["effect_b"].values[1:]])
    return {
        "accuracy": np.stack([ev["face"]["accuracy"].values, ev["place"]["accuracy"].values, *sham_acc]),
        "d_prime": np.stack([ev["face"]["d_prime"].values, ev["place"]["d_prime"].values, *sham_dp]),
        "sham_effect": effect,
        "dod": float(inter["dod"]), "dod_ci_low": float(inter["dod_ci_low"]), "dod_ci_high": float(inter["dod_ci_high"]),
        "p_permutation": float(inter["p_permutation"]), "p_sham": float(null["p_sham"]),
        "sham_dod_mean": float(null["sham_dod_mean"]), "sham_dod_sd": float(null["sham_dod_sd"]),
        "shams_drawn": int(shams is not None),
        "n_face": int(cell.face.size), "n_place": int(cell.place.size),
        "n_overlap": int(np.intersect1d(cell.face.values, cell.place.values).size),
    }


def _bh(p: np.ndarray) -> np.ndarray:
    """BH-adjusted p over all cells; cells without a p (NaN: not tested) count as p = 1, which is conservative."""
    return scipy.stats.false_discovery_control(np.where(np.isfinite(p), p, 1.0))


def _fdr(ds: xr.Dataset) -> xr.Dataset:
    """BH-FDR over all cells of the map; ``significant`` = both q <= ALPHA and DoD > 0."""
    for p in ("p_permutation", "p_sham"):
        ds[p.replace("p_", "p_fdr_")] = (ds[p].dims, _bh(ds[p].values.ravel()).reshape(ds[p].shape))
    ds["significant"] = (ds["dod"].dims, ((ds["p_fdr_permutation"] <= ALPHA) & (ds["p_fdr_sham"] <= ALPHA) & (ds["dod"] > 0)).values.astype(np.int8))
    return ds


def _candidates(first: dict, shams: str) -> list:
    """Cells that get sham draws: all, or those that pass the permutation criteria (q <= ALPHA over the map, DoD > 0)."""
    keys = list(first)
    if shams == "all":
        return keys
    q = _bh(np.array([float(first[k][1]["p_permutation"]) for k in keys]))
    return [k for k, qk in zip(keys, q) if qk <= ALPHA and float(first[k][1]["dod"]) > 0]


def _map(subject, task, readout, layers, steps, step_name, make_cell, n_sham, shams, cfg, seed, progress, desc):
    """Run the cells ``make_cell(layer, step) -> _Cell`` in two stages; returns a Dataset over (layer, step_name).

    Stage 1 evaluates the face and the place lesion of every cell; stage 2 draws the
    matched shams (``n_sham``; None: :func:`neurocnn.tasks.n_sham_for` the map's number of cells) for
    the cells :func:`_candidates` names. A cell is significant only if it passes both
    criteria, so with ``shams="candidates"`` the other cells' sham p (NaN, counted as 1 in
    the BH of the sham p) cannot change which cells are significant, except to make the
    sham FDR more conservative.
    """
    n_sham = n_sham or tasks.n_sham_for(len(layers) * len(steps), ALPHA)
    keys = [(layer, step) for layer in layers for step in steps]
    cells = {k: make_cell(*k) for k in keys}
    first = {k: _lesion_pair(subject, task, readout, cells[k], cfg, seed) for k in tqdm(keys, desc=f"{desc}: lesions", disable=not progress)}
    chosen = _candidates(first, shams)
    drawn = {k: _shams(subject, task, readout, cells[k], n_sham, seed) for k in tqdm(chosen, desc=f"{desc}: shams", disable=not progress)}
    results = {k: _cell_result(cells[k], *first[k], drawn.get(k), n_sham) for k in keys}
    data = {}
    for key, val in results[keys[0]].items():
        arr = np.stack([results[k][key] for k in keys]).reshape(len(layers), len(steps), *np.shape(val))
        data[key] = (("layer", step_name) + _CELL_DIMS.get(key, ()), arr)
    coords = {"layer": [subject.alias_of(x) or x for x in layers], step_name: list(steps),
              "layer_dotted": ("layer", [subject.resolve_layer(x) for x in layers]),
              "condition": ["face KO", "place KO", "sham (face-matched)", "sham (place-matched)"], "category": task.categories,
              "matched_to": ["face", "place"], "sham": np.arange(n_sham)}
    ds = _fdr(xr.Dataset(data, coords=coords))
    ds.attrs.update({"n_sham": n_sham, "p_sham_floor": 1 / (n_sham + 1) ** 2, "shams": shams, "n_cells_with_shams": len(chosen)})
    return ds


def _logger(args, t0: float):
    def log(step: str) -> None:
        if args.progress:
            print(f"[{time.time() - t0:6.1f} s] {step}", flush=True)
    return log


def run_model(name: str, args, cfg: dict, save: Callable[[str, xr.Dataset], None]) -> tuple[dict[str, xr.Dataset], dict]:
    t0 = time.time()
    log = _logger(args, t0)
    subject = nc.VirtualSubject(name)
    floc = nc.load_stimuli("floc")
    localizer, held_out = lesions.split_localizer(floc, cfg["frac"], seed=args.seed)
    task = tasks.make_pair_task(held_out, ("face", "house"), n_train=cfg["n_train"], n_test=cfg["n_test"], seed=args.seed)
    readout = tasks.fit_readout(subject, task, args.readout_layer, seed=args.seed, progress=args.progress)
    log(f"{name}: readout fit ({task.views.sizes['view']} views)")
    layers = _lesion_layers(subject, readout.layer, cfg["n_layers"])
    unit_layers = [x for x in layers if np.prod(subject.output_shape(x)) <= cfg["max_units"]]
    if cfg["n_unit_layers"] is not None:
        unit_layers = unit_layers[-cfg["n_unit_layers"]:]
    chan, sd, unit_values = _localizer_responses(subject, localizer, layers, unit_layers, 32, args.progress)
    log(f"{name}: localizer responses ({len(localizer)} images, {len(layers)} layers)")
    intact = tasks.evaluate(subject, task, readout, n_bootstrap=1)
    sel_cache: dict = {}

    def selection(layer, level, n):
        key = (layer, level, n)
        if key not in sel_cache:
            values = chan[layer] if level == "channel" else unit_values[layer]
            sel_cache[key] = _selections(subject, localizer, layer, values, level, n)
        return sel_cache[key]

    def ko_cell(level):
        def make_cell(layer, size):
            n = max(1, round(size * lesions.layer_size(subject, layer, level)))
            units, mean = selection(layer, level, n)
            return _Cell(lambda u, _s: lesions.knockout(subject, layer, u, level=level), units["face"], units["place"], mean)
        return make_cell

    def tms_cell(layer, amplitude):
        n = max(1, round(TMS_SIZE * lesions.layer_size(subject, layer)))
        units, mean = selection(layer, "channel", n)

        def make(u, s):
            return lesions.tms(subject, layer, u, amplitude=amplitude, sd=sd[layer], seed=args.seed + (0 if s is None else s + 1))
        return _Cell(make, units["face"], units["place"], mean)

    sizes = list(cfg["sizes"])
    common = {"n_sham": args.n_sham or cfg["n_sham"], "shams": args.shams or cfg["shams"], "cfg": cfg, "seed": args.seed,
              "progress": args.progress}
    plans = {
        "knockout_channel": lambda: _map(subject, task, readout, layers, sizes, "size", ko_cell("channel"), desc="KO map (channels)", **common),
        "tms_channel": lambda: _map(subject, task, readout, layers, list(cfg["amplitudes"]), "amplitude", tms_cell, desc="TMS map", **common),
        "knockout_unit": lambda: _map(subject, task, readout, unit_layers, sizes, "size", ko_cell("unit"), desc="KO map (units)", **common),
    }
    attrs = {
        "model": subject.name, "weights_sha256": subject.weights_id, "seed": args.seed, "quick": int(args.quick),
        **readout.attrs(), **task.attrs(), "readout_training": "intact",
        "selection": "top-N by d' (face vs place+object / place vs face+object) on the selection half of fLoc",
        "localizer_fraction": cfg["frac"], "n_localizer_images": len(localizer),
        "p_sham_definition": "one sided, over all (n_sham + 1)^2 pairings of face-lesion and place-lesion draws "
                             "(neurocnn.tasks.sham_interaction_test); floor p_sham_floor = 1 / (n_sham + 1)^2",
        "sham": "random units matched one-to-one on mean localizer activation, excluding face and place units",
        "size_definition": "size = fraction of the layer's channels (units); 0 = a single channel (unit)",
        "tms_size": TMS_SIZE, "tms_sd": "channel activation SD over localizer images and positions",
        "n_permutations": cfg["n_perm"], "n_bootstrap": cfg["n_boot"], "fdr_alpha": ALPHA, "n_test_pairs": cfg["n_test"],
        "significant": "BH q (permutation) <= alpha and BH q (sham) <= alpha and DoD > 0, BH over the cells of one map",
        "dod_definition": "DoD = [acc_placeKO(face) - acc_faceKO(face)] - [acc_placeKO(house) - acc_faceKO(house)]",
        "intact_face_accuracy": float(intact["accuracy"].sel(category="face")),
        "intact_house_accuracy": float(intact["accuracy"].sel(category="house")),
        "recalibrate": "none",
    }
    maps = {}
    for kind in args.maps:
        if kind != "knockout_unit" or unit_layers:
            start = time.time()
            ds = plans[kind]()
            ds.attrs = {**attrs, **ds.attrs, "map_runtime_s": round(time.time() - start, 1), "runtime_s": round(time.time() - t0, 1)}
            save(kind, ds)  # each map as soon as it is done: a long run that stops later keeps it
            maps[kind] = ds
            log(f"{name}: {kind} map ({ds.attrs['map_runtime_s']} s)")
    return maps, {**attrs, "runtime_s": round(time.time() - t0, 1)}


def _best(ds: xr.Dataset, step: str) -> dict:
    flat = ds["dod"].stack(cell=("layer", step))
    i = int(np.nanargmax(flat.values))
    cell = flat.isel(cell=i)
    layer, value = str(cell["layer"].item()), cell[step].item()
    sub = ds.sel({"layer": layer, step: value})
    return {"layer": layer, step: float(value), "dod": float(sub["dod"]), "ci": [float(sub["dod_ci_low"]), float(sub["dod_ci_high"])],
            "p_permutation": float(sub["p_permutation"]), "p_sham": _or_none(sub["p_sham"]), "p_fdr_permutation": float(sub["p_fdr_permutation"]),
            "p_fdr_sham": float(sub["p_fdr_sham"]), "significant": bool(sub["significant"]), "n_face": int(sub["n_face"]), "n_place": int(sub["n_place"]),
            "min_p_fdr_permutation": float(ds["p_fdr_permutation"].min()), "n_significant_cells": int(ds["significant"].sum()),
            "n_cells": int(np.isfinite(ds["dod"].values).sum()), "n_cells_with_shams": int(ds["shams_drawn"].sum())}


def _or_none(value) -> float | None:
    """A float for JSON; None where the value is missing (no shams drawn)."""
    value = float(value)
    return value if np.isfinite(value) else None


def _plot(all_maps: dict[str, dict[str, xr.Dataset]]):
    import matplotlib.pyplot as plt

    kinds = [k for k in ("knockout_channel", "knockout_unit", "tms_channel") if any(k in m for m in all_maps.values())]
    fig, axes = plt.subplots(len(all_maps), len(kinds), figsize=(4.2 * len(kinds), 3.4 * len(all_maps)), squeeze=False)
    for r, (model, maps) in enumerate(all_maps.items()):
        for c, kind in enumerate(kinds):
            ax = axes[r, c]
            if kind not in maps:
                ax.axis("off")
                continue
            ds = maps[kind]
            step = "size" if "size" in ds.dims else "amplitude"
            dod = ds["dod"].values
            lim = max(0.05, float(np.nanmax(np.abs(dod))))
            im = ax.imshow(dod, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
            for i in range(dod.shape[0]):
                for j in range(dod.shape[1]):
                    mark = "*" if ds["significant"].values[i, j] else ""
                    ax.text(j, i, f"{dod[i, j]:+.2f}{mark}", ha="center", va="center", fontsize=7)
            labels = [("1" if v == 0 else f"{100 * v:g}%") for v in ds[step].values] if step == "size" else [f"{v:g}" for v in ds[step].values]
            ax.set_xticks(range(len(labels)), labels)
            ax.set_yticks(range(ds.sizes["layer"]), list(ds["layer"].values))
            ax.set_xlabel("lesion size (of the layer)" if step == "size" else "TMS amplitude (x activation SD)")
            ax.set_title(f"{model}: {kind.replace('_', ' (')})", fontsize=9)
            fig.colorbar(im, ax=ax, label="DoD (+ = face KO hurts faces)", shrink=0.8)
    fig.suptitle("Double-dissociation index per layer x size; * = BH q<0.05 vs pair permutation and vs matched sham", fontsize=9)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("dissociation_map", __doc__.splitlines()[0])
    parser.set_defaults(model=None)
    parser.add_argument("--readout-layer", default=None, help="readout layer (default: the penultimate default layer)")
    parser.add_argument("--n-sham", type=int, default=None, help="matched sham draws per lesion (default: by map size)")
    parser.add_argument("--shams", choices=SHAMS, default=None,
                        help="cells that get sham draws: those passing the permutation criteria (full default) or all (quick default)")
    parser.add_argument("--layers", type=int, default=None, help="only the deepest N lesion layers (default: by mode)")
    parser.add_argument("--sizes", nargs="*", type=float, default=None, help="lesion sizes as fractions (0 = one unit)")
    parser.add_argument("--n-test", type=int, default=None, help="test pairs (default: by mode)")
    parser.add_argument("--n-train", type=int, default=None, help="training pairs (default: by mode)")
    parser.add_argument("--localizer-fraction", type=float, default=None, help="fLoc fraction used for selection")
    parser.add_argument("--maps", nargs="+", choices=MAPS, default=list(MAPS), help="maps to run (default: all)")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    out = output_dir(args)
    cfg = dict(SETTINGS["quick" if args.quick else "full"])
    overrides = {"n_layers": args.layers, "sizes": tuple(args.sizes) if args.sizes else None, "n_test": args.n_test,
                 "n_train": args.n_train, "frac": args.localizer_fraction}
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    models = [args.model] if args.model else available_models()[:1] if args.quick else available_models()
    all_maps, summary = {}, {"models": models, "quick": bool(args.quick), "seed": args.seed, "best_cells": {}}
    for name in models:
        maps, attrs = run_model(name, args, cfg, lambda kind, m: nc.io.save(m, out / f"dissociation_map_{name}_{kind}.nc",
                                                                          overwrite=args.overwrite))
        all_maps[name] = maps
        summary["best_cells"][name] = {k: _best(m, "size" if "size" in m.dims else "amplitude") for k, m in maps.items()}
        summary["best_cells"][name]["intact"] = {"face": attrs["intact_face_accuracy"], "house": attrs["intact_house_accuracy"]}
        summary["best_cells"][name]["runtime_s"] = attrs["runtime_s"]
    nc.plotting.save_figure(_plot(all_maps), out / "dissociation_map.png", overwrite=args.overwrite)
    print(json.dumps(summary["best_cells"], indent=1))
    write_headline(out, lambda folder: {**as_values("dm", summary), "fig_dm_map": figure(folder, "dissociation_map.png")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
