"""Lesion -> brain fit: what a face-unit knockout does to the network's IT-likeness, against sham.

Face- and place-selective channels (top 10% by d' on fLoc) of the lesioned layer (default:
the layer at AlexNet-conv3 depth) are knocked out; under each lesion the RDMs of the
layers from the lesion on are recomputed on the 92 images (correlation distance) and
compared with the human IT fMRI RDMs (Kriegeskorte et al. 2008; 4 subjects, sessions
averaged) by Kendall tau-a, with a bootstrap CI over stimuli and subjects
(:func:`neurocnn.rsa.bootstrap_rdm_comparison`). Block structure of each RDM: for faces,
bodies and animacy, mean between-block minus mean within-block dissimilarity (larger =
more categorical). The sham null: ``--n-sham`` knockouts of as many random channels
matched on mean activation. Writes ``lesion_brain_fit.nc``, ``lesion_brain_fit.png`` and
``headline.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).parent))

import neurocnn as nc  # noqa: E402
from _common import as_values, figure, make_parser, output_dir, write_headline  # noqa: E402
from neurocnn import datasets, lesions, rsa  # noqa: E402

SETTINGS = {  # localizer fraction, sham draws, bootstrap samples, number of fit layers
    "full": {"frac": 0.5, "n_sham": 50, "n_bootstrap": 1000, "n_layers": None},
    "quick": {"frac": 0.05, "n_sham": 2, "n_bootstrap": 100, "n_layers": 2},
}
SIZE = 0.1
BLOCKS = {"face": "label_face", "body": "label_body", "animate": "label_animate"}
#: the conditions with bootstrap CIs (the same seeded resamples, so their differences are paired); shams get the observed fit.
BOOTSTRAPPED = ("intact", "face KO", "place KO")


def block_structure(square: np.ndarray, stim: nc.StimulusSet) -> dict[str, float]:
    """Mean between-block minus mean within-block dissimilarity for each block (and animacy: both sides)."""
    out = {}
    off = ~np.eye(square.shape[0], dtype=bool)
    for name, key in BLOCKS.items():
        inside = np.asarray(stim.metadata[key]).astype(bool)
        between = square[np.ix_(inside, ~inside)].mean()
        if name == "animate":
            within = np.r_[square[np.ix_(inside, inside)][off[np.ix_(inside, inside)]],
                           square[np.ix_(~inside, ~inside)][off[np.ix_(~inside, ~inside)]]].mean()
        else:
            within = square[np.ix_(inside, inside)][off[np.ix_(inside, inside)]].mean()
        out[name] = float(between - within)
    return out


def _delta_cis(samples: dict[str, xr.DataArray], conditions: list[str], fit_layers: list[str], ci: float = 0.95) -> xr.Dataset:
    """Percentile CIs of each bootstrapped lesion's tau-a change from intact, paired over the same resamples."""
    low = np.full((len(conditions), len(fit_layers)), np.nan)
    high = low.copy()
    for i, c in enumerate(conditions):
        if c in samples and c != "intact":
            diff = (samples[c] - samples["intact"]).sel(layer=fit_layers).values
            low[i], high[i] = np.nanquantile(diff, [(1 - ci) / 2, 1 - (1 - ci) / 2], axis=1)
    dims = ("condition", "fit_layer")
    return xr.Dataset({"delta_tau_a_ci_low": (dims, low), "delta_tau_a_ci_high": (dims, high)},
                      coords={"condition": conditions, "fit_layer": fit_layers})


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("lesion_brain_fit", __doc__.splitlines()[0])
    parser.add_argument("--layer", default=None, help="lesioned layer (default: the layer at AlexNet-conv3 depth)")
    parser.add_argument("--n-sham", type=int, default=None, help="matched sham draws")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    out = output_dir(args)
    cfg = SETTINGS["quick" if args.quick else "full"]
    n_sham = args.n_sham or cfg["n_sham"]
    t0 = time.time()
    subject = nc.VirtualSubject(args.model or "efficientnet_lite0")
    layer = subject.resolve_layer(args.layer or lesions.layer_at_resolution(subject))
    names = subject.default_layers
    dotted = [subject.resolve_layer(x) for x in names]
    fit_layers = [x for x, d in zip(names, dotted) if dotted.index(d) >= dotted.index(layer) and len(subject.output_shape(x)) >= 1][:-1]
    if cfg["n_layers"] is not None:
        fit_layers = [fit_layers[0], fit_layers[-1]][: cfg["n_layers"]]
    floc = nc.load_stimuli("floc")
    localizer, _ = lesions.split_localizer(floc, cfg["frac"], seed=args.seed)
    acts = subject.activations(localizer, layer, progress=False)
    n = max(1, round(SIZE * lesions.layer_size(subject, layer)))
    units = {d: lesions.select_units(lesions.selectivity(subject, localizer, layer, target=d, activations=acts,
                                                         against=[o for o in ("face", "place", "object") if o != d]),
                                     method="top_n", n=n, stat="d_prime") for d in ("face", "place")}
    mean = acts.values.reshape(acts.shape[0], acts.shape[1], -1).mean((0, 2))
    both = np.union1d(units["face"].values, units["place"].values)
    conditions = {"intact": None, "face KO": lesions.knockout(subject, layer, units["face"]),
                  "place KO": lesions.knockout(subject, layer, units["place"])}
    for s in range(n_sham):
        rand = lesions.matched_random_units(units["face"].values, mean, exclude=both, seed=args.seed + s + 1)
        conditions[f"sham {s + 1}"] = lesions.knockout(subject, layer, rand)
    stim = nc.load_stimuli("92images")
    brain = datasets.load_92images_brain_rdms().groupby("subject").mean()
    fits, blocks, samples = {}, {}, {}
    for name, les in tqdm(conditions.items(), desc="lesions", disable=not args.progress):
        if les is None:
            act = subject.activations(stim, fit_layers, progress=False)
        else:
            with les:
                act = subject.activations(stim, fit_layers, progress=False)
        act = act if isinstance(act, dict) else {fit_layers[0]: act}
        rdms = {k: rsa.compute_rdm(v, metric="correlation") for k, v in act.items()}
        if name in BOOTSTRAPPED:
            boot = rsa.bootstrap_rdm_comparison(rdms, brain, method="tau_a", n_bootstrap=cfg["n_bootstrap"], over="both",
                                                seed=args.seed, progress=False)
            fits[name] = boot[["observed", "ci_low", "ci_high"]]
            samples[name] = boot["evaluation"]
        else:  # the mean over subjects of tau-a, as bootstrap_rdm_comparison's ``observed``
            observed = rsa.compare_rdms(rdms, brain, method="tau_a").mean("subject")
            fits[name] = xr.Dataset({"observed": observed, "ci_low": xr.full_like(observed, np.nan),
                                     "ci_high": xr.full_like(observed, np.nan)})
        blocks[name] = [[block_structure(np.asarray(rdms[k].values), stim)[b] for b in BLOCKS] for k in fit_layers]
    cond = list(conditions)
    fit = xr.concat([fits[c] for c in cond], dim=xr.DataArray(cond, dims="condition", name="condition"))
    ds = xr.Dataset({
        "tau_a": fit["observed"].rename({"layer": "fit_layer"}),
        "tau_a_ci_low": fit["ci_low"].rename({"layer": "fit_layer"}),
        "tau_a_ci_high": fit["ci_high"].rename({"layer": "fit_layer"}),
        "block_structure": (("condition", "fit_layer", "block"), np.array([blocks[c] for c in cond])),
    })
    ds = ds.assign_coords(fit_layer=fit_layers, block=list(BLOCKS))
    ds = ds.merge(_delta_cis(samples, cond, fit_layers))
    sham = [c for c in cond if c.startswith("sham")]
    delta = ds - ds.sel(condition="intact")
    summary = {"model": subject.name, "lesion_layer": subject.alias_of(layer) or layer, "n_units": n, "n_sham": n_sham,
                "quick": bool(args.quick), "seed": args.seed, "fit_layers": fit_layers}
    for layer_name in fit_layers:
        row = {}
        for c in ("intact", "face KO", "place KO"):
            sub = ds.sel(condition=c, fit_layer=layer_name)
            row[c] = {"tau_a": float(sub["tau_a"]), "ci": [float(sub["tau_a_ci_low"]), float(sub["tau_a_ci_high"])],
                      **{f"block_{b}": float(sub["block_structure"].sel(block=b)) for b in BLOCKS}}
        d_face = float(delta["tau_a"].sel(condition="face KO", fit_layer=layer_name))
        d_sham = delta["tau_a"].sel(condition=sham, fit_layer=layer_name).values
        for c, key in (("face KO", "face_ko"), ("place KO", "place_ko")):
            row[f"delta_tau_{key}"] = float(delta["tau_a"].sel(condition=c, fit_layer=layer_name))
            row[f"delta_tau_{key}_ci"] = [float(ds[f"delta_tau_a_ci_{e}"].sel(condition=c, fit_layer=layer_name)) for e in ("low", "high")]
        row["delta_tau_sham_mean"] = float(d_sham.mean())
        row["delta_tau_sham_range"] = [float(d_sham.min()), float(d_sham.max())]
        row["p_sham_face_ko_lower"] = float((1 + np.sum(d_sham <= d_face)) / (1 + d_sham.size))
        d_block = float(delta["block_structure"].sel(condition="face KO", fit_layer=layer_name, block="face"))
        sham_block = delta["block_structure"].sel(condition=sham, fit_layer=layer_name, block="face").values
        row["delta_face_block_face_ko"] = d_block
        row["delta_face_block_sham_mean"] = float(sham_block.mean())
        row["p_sham_face_block_lower"] = float((1 + np.sum(sham_block <= d_block)) / (1 + sham_block.size))
        summary[layer_name] = row
    ds.attrs = {"model": subject.name, "weights_sha256": subject.weights_id, "lesion_layer": layer, "seed": args.seed,
                "lesion_alias": subject.alias_of(layer) or layer,
                "n_units": n, "size_fraction": SIZE, "n_sham": n_sham, "method": "tau_a", "rdm_metric": "correlation",
                "bootstrap": "over stimuli and subjects, for intact, face KO and place KO (shams: observed fit only); "
                             "delta_tau_a_ci_*: percentile CI of the paired (same resamples) difference from intact",
                "n_bootstrap": cfg["n_bootstrap"], "brain": "human IT fMRI, 4 subjects (sessions averaged)",
                "sham": "knockout of random channels matched on mean localizer activation to the face units",
                "block_structure": "mean between-block minus mean within-block correlation distance",
                "selection": "top 10% channels by d' on a localizer half of fLoc", "quick": int(args.quick),
                "recalibrate": "none", "runtime_s": round(time.time() - t0, 1)}
    nc.io.save(ds, out / "lesion_brain_fit.nc", overwrite=args.overwrite)
    nc.plotting.save_figure(_plot(ds, sham), out / "lesion_brain_fit.png", overwrite=args.overwrite)
    print(json.dumps(summary, indent=1))
    write_headline(out, lambda folder: {**as_values("lbf", summary), "fig_lbf_fit": figure(folder, "lesion_brain_fit.png")})
    return 0


def _plot(ds: xr.Dataset, sham: list[str]):
    import matplotlib.pyplot as plt

    layers = list(ds["fit_layer"].values)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    x = np.arange(len(layers))
    change = ds["tau_a"] - ds["tau_a"].sel(condition="intact")
    for i, c in enumerate(["face KO", "place KO"]):
        d = change.sel(condition=c)
        err = np.vstack([d - ds["delta_tau_a_ci_low"].sel(condition=c), ds["delta_tau_a_ci_high"].sel(condition=c) - d])
        axes[0].errorbar(x + (i - 0.5) * 0.2, d, yerr=err, fmt="o", capsize=3, label=f"{c} (paired 95% CI)")
    s = change.sel(condition=sham)
    axes[0].fill_between(x, s.min("condition"), s.max("condition"), color="gray", alpha=0.3, label=f"{len(sham)} matched shams (range)")
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].set_xticks(x, layers, rotation=30)
    axes[0].set_ylabel("change in tau-a with human IT")
    axes[0].legend(fontsize=7)
    delta = ds["block_structure"] - ds["block_structure"].sel(condition="intact")
    blocks = list(ds["block"].values)
    width = 0.8 / 3
    last = layers[-1]
    for i, c in enumerate(["face KO", "place KO"]):
        axes[1].bar(np.arange(len(blocks)) + (i - 0.5) * width, delta.sel(condition=c, fit_layer=last), width, label=c)
    sm = delta.sel(condition=sham, fit_layer=last)
    axes[1].bar(np.arange(len(blocks)) + 1.5 * width, sm.mean("condition"), width, color="gray", label="sham (mean)",
                yerr=np.vstack([sm.mean("condition") - sm.min("condition"), sm.max("condition") - sm.mean("condition")]))
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].set_xticks(np.arange(len(blocks)), blocks)
    axes[1].set_ylabel(f"change in block structure ({last})")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{ds.attrs['model']}: knockout at {ds.attrs['lesion_alias']} ({ds.attrs['n_units']} channels)", fontsize=9)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    raise SystemExit(main())
