"""Virtual TMS: face- vs place-selective knockouts on face and house same/different pairs.

Pitcher et al. (2009) / Dilks et al. (2013), modelled as in the Korotaev seed at the
depth of AlexNet conv3 (``layer_at_resolution``: AlexNet conv3, EfficientNet-Lite0
stage4). Face- and place-selective channels are chosen (Welch t, BH-FDR) on one half
of the fLoc images; the pair task uses the other half. Conditions: intact,
face-unit KO, place-unit KO, sham KO (as many random non-selected channels as the
face set), and noise TMS of the face / place units. Writes ``virtual_tms.nc``,
``interaction.nc``, ``selectivity.nc`` and ``virtual_tms.png``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr

sys.path.insert(0, str(Path(__file__).parent))

import neurocnn as nc  # noqa: E402
from _common import figure, fmt, fmt_int, fmt_p, load_result, make_parser, make_subject, md_table, output_dir, write_headline  # noqa: E402
from neurocnn import lesions, tasks  # noqa: E402

SIZES = {  # (localizer fraction, n_train, n_test, n_perm)
    "full": (0.5, 2400, 480, 10000),
    "quick": (0.05, 40, 24, 1000),
}


_SELECTIONS: dict[str, Callable[[dict], str]] = {
    "fdr": lambda attrs: f"Welch t, Benjamini-Hochberg FDR at q = {fmt(attrs['q'], 2)}",
    "top_n": lambda attrs: "the top-n most selective channels per class; too few localizer images for FDR",
}


def headline(folder: Path) -> dict[str, str]:
    """The values the manuscript prints about this analysis, read back from its results."""
    ds = load_result(folder, "virtual_tms.nc")
    inter = load_result(folder, "interaction.nc")
    cats = [str(c) for c in ds["category"].values]
    rows = [[str(cond)] + [f"{fmt(ds['accuracy'].sel(condition=cond, category=c))} "
                           f"[{fmt(ds['ci_low'].sel(condition=cond, category=c))}, {fmt(ds['ci_high'].sel(condition=cond, category=c))}]"
                           for c in cats] for cond in ds["condition"].values]
    values = {
        "tms_layer": str(ds.attrs["lesion_alias"] or ds.attrs["lesion_layer"]),
        "tms_layer_choice": str(ds.attrs["layer_choice"]),
        "tms_n_face": fmt_int(ds.attrs["n_face_units"]),
        "tms_n_place": fmt_int(ds.attrs["n_place_units"]),
        "tms_n_overlap": fmt_int(ds.attrs["n_overlap"]),
        "tms_n_channels": fmt_int(ds.attrs["n_channels"]),
        "tms_selection": _SELECTIONS[str(ds.attrs["selection"])](ds.attrs),
        "tms_amplitude": fmt(ds.attrs["tms_amplitude"], 1),
        "tms_n_localizer": fmt_int(ds.attrs["n_localizer_images"]),
        "tms_n_test": fmt_int(ds["n_pairs"].sel(condition="intact").sum()),
        "tms_cat_a": cats[0],
        "tms_cat_b": cats[1],
        "tms_intact_a": fmt(ds["accuracy"].sel(condition="intact", category=cats[0])),
        "tms_intact_b": fmt(ds["accuracy"].sel(condition="intact", category=cats[1])),
        "tms_table": md_table(["condition", *(f"{c} pairs: accuracy [CI]" for c in cats)], rows),
        "fig_tms": figure(folder, "virtual_tms.png"),
    }
    for manipulation, key in (("knockout", "ko"), ("tms", "noise")):
        r = inter.sel(manipulation=manipulation)
        values.update({
            f"tms_{key}_dod": fmt(r["dod"]),
            f"tms_{key}_dod_ci": f"[{fmt(r['dod_ci_low'])}, {fmt(r['dod_ci_high'])}]",
            f"tms_{key}_p_perm": fmt_p(r["p_permutation"]),
            f"tms_{key}_p_logit": fmt_p(r["p_logit"]),
        })
    values["tms_n_perm"] = fmt_int(inter.attrs["n_permutations"])
    values["tms_ci"] = fmt(100 * float(ds.attrs["ci"]), 0)
    return values


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("virtual_tms", __doc__.splitlines()[0])
    parser.add_argument("--layer", default=None, help="lesioned layer (default: the layer at AlexNet-conv3 depth)")
    parser.add_argument("--q", type=float, default=0.05, help="FDR level of unit selection")
    parser.add_argument("--select", choices=("fdr", "top_n"), default=None,
                        help="unit selection (default: fdr; --quick: top_n with 4 channels, too few localizer images for FDR)")
    parser.add_argument("--n-units", type=int, default=4, help="channels per class for --select top_n")
    parser.add_argument("--amplitude", type=float, default=2.0, help="TMS noise SD in units of activation SD")
    args = parser.parse_args(argv)
    out = output_dir(args)
    t0 = time.time()

    def log(step: str) -> None:
        if args.progress:
            print(f"[{time.time() - t0:6.1f} s] {step}", flush=True)

    frac, n_train, n_test, n_perm = SIZES["quick" if args.quick else "full"]
    subject = make_subject(args)
    layer = args.layer or lesions.layer_at_resolution(subject)
    floc = nc.load_stimuli("floc")
    localizer, held_out = lesions.split_localizer(floc, frac, seed=args.seed)
    acts = subject.activations(localizer, layer, progress=args.progress)
    log(f"localizer activations ({len(localizer)} images)")
    sel = {d: lesions.selectivity(subject, localizer, layer, target=d, against=[o for o in ("face", "place", "object") if o != d],
                                  activations=acts) for d in ("face", "place")}
    sd = lesions.activation_sd(acts)
    method = args.select or ("top_n" if args.quick else "fdr")
    units = {d: lesions.select_units(sel[d], method=method, q=args.q, n=args.n_units) for d in sel}
    overlap = np.intersect1d(units["face"].values, units["place"].values)
    size = lesions.layer_size(subject, layer)
    log("selectivity")
    task = tasks.make_pair_task(held_out, ("face", "house"), n_train=n_train, n_test=n_test, seed=args.seed)
    readout = tasks.fit_readout(subject, task, seed=args.seed, progress=args.progress)
    log("readout fit")
    conditions = {
        "intact": None,
        "face KO": lesions.knockout(subject, layer, units["face"]),
        "place KO": lesions.knockout(subject, layer, units["place"]),
        "sham KO": lesions.sham(subject, layer, units["face"].size, exclude=np.union1d(units["face"], units["place"]), seed=args.seed),
        "face TMS": lesions.tms(subject, layer, units["face"], amplitude=args.amplitude, sd=sd, seed=args.seed),
        "place TMS": lesions.tms(subject, layer, units["place"], amplitude=args.amplitude, sd=sd, seed=args.seed),
    }
    results = {}
    for name, lesion in conditions.items():
        results[name] = tasks.evaluate(subject, task, readout, lesion, seed=args.seed)
        log(name)
    combined = xr.concat([r[["accuracy", "ci_low", "ci_high", "n_pairs", "correct"]] for r in results.values()],
                         dim=xr.DataArray(list(results), dims="condition", name="condition"))
    combined.attrs = {
        **results["intact"].attrs, "lesion": "see condition", "lesion_layer": subject.resolve_layer(layer),
        "lesion_alias": subject.alias_of(layer), "layer_choice": "first default layer whose grid matches AlexNet conv3 (13/224 of the input)",
        "n_face_units": int(units["face"].size), "n_place_units": int(units["place"].size), "n_overlap": int(overlap.size),
        "n_channels": size, "selection": method, "q": args.q, "tms_amplitude": args.amplitude, "localizer_fraction": frac,
        "n_localizer_images": len(localizer), "seed": args.seed, "runtime_s": round(time.time() - t0, 1),
    }
    inter = tasks.interaction_test(results["face KO"], results["place KO"], n_permutations=n_perm, seed=args.seed)
    inter_tms = tasks.interaction_test(results["face TMS"], results["place TMS"], n_permutations=n_perm, seed=args.seed)
    named = [r.assign_coords(lesion=["A: face units", "B: place units"]) for r in (inter, inter_tms)]
    both = xr.concat(named, dim=xr.DataArray(["knockout", "tms"], dims="manipulation", name="manipulation"))
    selectivity = xr.concat([sel["face"], sel["place"]], dim=xr.DataArray(["face", "place"], dims="target", name="target"))
    nc.io.save(combined, out / "virtual_tms.nc", overwrite=args.overwrite)
    nc.io.save(both, out / "interaction.nc", overwrite=args.overwrite)
    nc.io.save(selectivity, out / "selectivity.nc", overwrite=args.overwrite)
    title = (f"{subject.name} {subject.alias_of(layer) or layer}: {units['face'].size} face / {units['place'].size} place "
             f"channels of {size} (FDR q={args.q}); KO interaction p={float(inter['p_permutation']):.3g}")
    fig = tasks.plot_accuracy(combined, title=title)
    nc.plotting.save_figure(fig, out / "virtual_tms.png", overwrite=args.overwrite)
    for name, r in results.items():
        print(f"{name:10s} " + "  ".join(f"{c}: {a:.3f} [{lo:.3f}, {hi:.3f}]" for c, a, lo, hi in
              zip(r["category"].values, r["accuracy"].values, r["ci_low"].values, r["ci_high"].values)))
    print(f"layer {layer}: face units {units['face'].size}, place units {units['place'].size}, overlap {overlap.size}, of {size}")
    for label, res in (("KO", inter), ("TMS", inter_tms)):
        print(f"{label} interaction: DoD={float(res['dod']):.3f} [{float(res['dod_ci_low']):.3f}, {float(res['dod_ci_high']):.3f}] "
              f"p_perm={float(res['p_permutation']):.4g} p_logit={float(res['p_logit']):.4g}")
    print(f"readout C={readout.C}, train accuracy {readout.train_accuracy:.3f}; {time.time() - t0:.0f} s")
    write_headline(out, headline)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
