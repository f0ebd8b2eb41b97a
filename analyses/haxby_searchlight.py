"""Searchlight on real fMRI: category structure in Haxby et al. (2001), subject 1.

PyMVPA's single axial slice (40 x 20 voxels, 3.1 x 3.75 mm, 12 runs, 8 categories):
per-run category patterns (volumes of each category block, labels shifted 2 volumes
for the haemodynamic lag, minus the run mean; averaged over runs), sphere = in-slice
disc, compared with two category models: "category" (faces | cat | houses | small objects
| scrambled) and "animacy" (face, cat | inanimate objects and houses | scrambled).
Significance: stimulus-label permutations of the model RDM (the same permutations for
both models), family-wise error over the slice under three corrections
(:mod:`neurocnn.clusters`): voxel-level maximum statistic, cluster mass (clusters of
centres above the ``1 - cluster_p`` quantile of the pooled null correlations, in-plane
face connectivity) and TFCE.

Outputs in ``--out``: ``haxby_searchlight.nc`` (maps), ``haxby_clusters.nc`` (all
corrections' p maps and clusters), ``clusters_<correction>.csv`` (cluster tables), NIfTI
maps (correlation and each correction's p_FWE), ``haxby_searchlight.png`` and
``headline.json`` (per model and correction: significant clusters, sizes, peaks, p; run
times). The data are in the subject's native space, so the tables carry no atlas label.

Run: ``python analyses/haxby_searchlight.py --out out/haxby_searchlight [--quick]``
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import neurocnn as nc  # noqa: E402
from _common import ALPHA, as_values, figure, fmt, fmt_int, fmt_p, load_result, make_parser, md_table, output_dir, peak, write_headline  # noqa: E402
from neurocnn import clusters, datasets, rsa, searchlight  # noqa: E402

CATEGORIES = ("face", "house", "shoe", "cat", "scissors", "scrambledpix", "bottle", "chair")
OBJECTS = {c: "object" for c in ("shoe", "scissors", "bottle", "chair")}
MODELS = {
    "category": {"face": "face", "cat": "animal", "house": "house", "scrambledpix": "scrambled", **OBJECTS},
    "animacy": {"face": "animate", "cat": "animate", "house": "inanimate", "scrambledpix": "scrambled",
                **{c: "inanimate" for c in OBJECTS}},
}


def headline(folder: Path) -> dict[str, str]:
    """The values the manuscript prints about this analysis, read back from its results."""
    ds = load_result(folder, "haxby_searchlight.nc")
    rows = []
    for name in ds["layer"].values:
        c, p = ds["correlation"].sel(layer=name), ds["p_fwe"].sel(layer=name)
        rho, (x, y, _) = peak(c)
        rows.append([str(name), fmt(rho), f"({x:.1f}, {y:.1f})", fmt(np.nanmean(c.values)),
                     fmt_int((p.values < ALPHA).sum()), fmt_p(np.nanmin(p.values))])
    return {
        "hx_data": str(ds.attrs["data"]),
        "hx_n_centres": fmt_int(ds.attrs["n_centres"]),
        "hx_radius": fmt(ds.attrs["radius_mm"], 1),
        "hx_n_categories": fmt_int(ds.attrs["n_stimuli"]),
        "hx_n_permutations": fmt_int(ds.attrs["n_permutations"]),
        "hx_lag": fmt_int(ds.attrs["lag_volumes"]),
        "hx_table": md_table(["model RDM", "peak ρ", "peak (mm)", "mean ρ", f"voxels p_FWE < {ALPHA}", "min p_FWE"], rows),
        "fig_hx": figure(folder, "haxby_searchlight.png"),
        **_corrections(load_result(folder, "haxby_clusters.nc")),
    }


def _corrections(cl) -> dict[str, str]:
    """Model x correction: the smallest p_FWE and the number of voxels below ALPHA."""
    rows = [[str(name), LABELS[corr], fmt_p(cl[P_VAR[corr]].sel(layer=name).min()),
             fmt_int((cl[P_VAR[corr]].sel(layer=name).values < ALPHA).sum())]
            for name in cl["layer"].values for corr in CORRECTIONS]
    return {"hx_cluster_p": fmt(cl.attrs["cluster_p"], 2),
            "hx_corrections_table": md_table(["model RDM", "correction", "min p_FWE", f"voxels p_FWE < {ALPHA}"], rows)}


CORRECTIONS = ("voxel", "cluster_mass", "tfce")
LABELS = {"voxel": "voxel-level", "cluster_mass": "cluster mass", "tfce": "TFCE"}
P_VAR = {"voxel": "p_fwe", "cluster_mass": "p_fwe_cluster_mass", "tfce": "p_fwe_tfce"}


def _supra_threshold_clusters(cl, name, top=3):
    """The largest-mass clusters above the cluster-forming threshold, with each correction's p."""
    sel = np.flatnonzero(cl["cluster_layer"].values == name)
    sel = sel[np.argsort(-cl["cluster_mass"].values[sel])][:top]
    li = list(cl["layer"].values).index(name)
    rows = []
    for c in sel:
        members = cl["cluster_id"].values[li] == int(cl["cluster_label"].values[c])
        rho = cl["statistic"].values[li]
        peak = np.flatnonzero(members)[np.nanargmax(rho[members])]
        rows.append({"size": int(members.sum()), "mass": float(cl["cluster_mass"].values[c]),
                     "peak_mm": [round(float(cl[a].values[peak]), 1) for a in ("x", "y", "z")],
                     "peak_rho": float(rho[peak]),
                     "p_fwe_cluster_mass": float(cl["cluster_p_fwe_cluster_mass"].values[c]),
                     "min_p_fwe_voxel": float(np.nanmin(cl["p_fwe"].values[li][members])),
                     "min_p_fwe_tfce": float(np.nanmin(cl["p_fwe_tfce"].values[li][members]))})
    return rows


def _summary(res, cl, tables, n_perm, times):
    """Everything the run found, per model and correction (written into headline.json as JSON)."""
    out = {"n_permutations": n_perm, "n_centres": int(res.sizes["voxel"]), "seconds": times,
           "cluster_p": float(cl.attrs["cluster_p"]), "models": {}}
    for name in MODELS:
        c = res["correlation"].sel(layer=name)
        v = int(np.nanargmax(c.values))
        entry = {"peak_rho": float(c[v]), "peak_mm": [float(c.x[v]), float(c.y[v]), float(c.z[v])],
                 "mean_rho": float(np.nanmean(c)),
                 "cluster_threshold_rho": float(cl["cluster_threshold"].sel(layer=name)),
                 "n_distinct_null_maps": int(len(np.unique(np.round(np.nan_to_num(res["null_correlation"].sel(layer=name).values), 10),
                                                       axis=0))),
                 "largest_clusters": _supra_threshold_clusters(cl, name)}
        for corr in CORRECTIONS:
            df = tables[corr][tables[corr]["layer"] == name]
            sig = df[df["significant"]]
            entry[corr] = {
                "min_p_fwe": float(np.nanmin(cl[P_VAR[corr]].sel(layer=name).values)),
                "n_significant_voxels": int((cl[P_VAR[corr]].sel(layer=name) < 0.05).sum()),
                "clusters": [{"size": int(r.size), "volume_mm3": float(r.volume_mm3), "mass": float(r.mass),
                              "p_fwe": float(r.p_fwe), "peak_mm": [float(r.peak_x), float(r.peak_y), float(r.peak_z)],
                              "peak_rho": float(r.peak_statistic)} for r in sig.itertuples()],
            }
        out["models"][name] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("haxby_searchlight", __doc__.splitlines()[0])
    parser.add_argument("--radius", type=float, default=6.0, help="disc radius in mm (6 mm: 3 x 3 voxels)")
    parser.add_argument("--lag", type=int, default=2, help="haemodynamic lag in volumes (TR 2.5 s)")
    parser.add_argument("--cluster-p", type=float, default=0.01,
                        help="cluster-forming threshold: 1 - this quantile of the pooled null correlations")
    args = parser.parse_args(argv)
    out = output_dir(args)

    vol = datasets.haxby_category_patterns(lag=args.lag, categories=CATEGORIES)
    models = rsa.category_model_rdms(CATEGORIES, MODELS)
    n_perm = 200 if args.quick else 5000
    t0 = time.perf_counter()
    res = searchlight.searchlight(vol.img, models, mask=vol.mask, radius=args.radius, min_voxels=5,
                                  stimulus_ids=vol.stimulus_ids, n_permutations=n_perm,
                                  seed=args.seed, progress=args.progress, return_null=True)
    t1 = time.perf_counter()
    cl = clusters.searchlight_cluster_test(res, cluster_p=args.cluster_p, corrections=CORRECTIONS,
                                           progress=args.progress)
    t2 = time.perf_counter()
    times = {"searchlight_and_permutations": round(t1 - t0, 3), "cluster_inference": round(t2 - t1, 3)}
    res.attrs.update(data="Haxby et al. 2001, subject 1, PyMVPA single slice", lag_volumes=args.lag)
    cl.attrs.update(data=res.attrs["data"], lag_volumes=args.lag)
    tables = {corr: clusters.cluster_table(cl, correction=corr, atlas=None) for corr in CORRECTIONS}
    summary = _summary(res, cl, tables, n_perm, times)
    nc.io.save(res.drop_vars("null_correlation"), out / "haxby_searchlight.nc", overwrite=args.overwrite)
    nc.io.save(cl, out / "haxby_clusters.nc", overwrite=args.overwrite)
    searchlight.save_maps(res, out / "nifti", overwrite=args.overwrite)
    for var in ("p_fwe", "p_fwe_cluster_mass", "p_fwe_tfce"):
        searchlight.save_maps(cl, out / "nifti", var=var, overwrite=args.overwrite)
    for corr, df in tables.items():
        nc.io.write_text(out / f"clusters_{corr}.csv", df.to_csv(index=False), overwrite=args.overwrite,
                         kind="cluster table")

    print(f"{res.sizes['voxel']} centres (in-slice discs of up to {int(res['n_voxels'].max())} voxels), "
          f"{len(CATEGORIES)} categories x {len(vol.stimulus_ids) // len(CATEGORIES)} runs, {n_perm} permutations; "
          f"searchlight + permutations {times['searchlight_and_permutations']:.1f} s, "
          f"cluster inference {times['cluster_inference']:.1f} s")
    cols = ["size", "volume_mm3", "mass", "p_fwe", "peak_statistic", "peak_x", "peak_y", "peak_z"]
    for name in MODELS:
        c = res["correlation"].sel(layer=name)
        v = int(np.nanargmax(c.values))
        print(f"\n{name}: peak rho {float(c[v]):.3f} at ({float(c.x[v]):.1f}, {float(c.y[v]):.1f}) mm; "
              f"cluster-forming rho > {float(cl['cluster_threshold'].sel(layer=name)):.3f}")
        for corr in CORRECTIONS:
            df = tables[corr][tables[corr]["layer"] == name]
            sig = df[df["significant"]]
            p = cl[P_VAR[corr]].sel(layer=name)
            print(f"  {LABELS[corr]:>12}: {len(sig)} significant cluster(s), {int((p < 0.05).sum())} voxels "
                  f"p_FWE < 0.05, min p_FWE {float(p.min()):.4f}")
            if len(sig):
                print(sig[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
        print(f"  {summary['models'][name]['n_distinct_null_maps']} distinct null maps among {n_perm} "
              "permutations; largest clusters above the cluster-forming threshold:")
        for r in summary["models"][name]["largest_clusters"]:
            print(f"    {r['size']:3d} voxels, mass {r['mass']:.3f}, peak rho {r['peak_rho']:.3f} at {r['peak_mm']} mm: "
                  f"p_FWE cluster mass {r['p_fwe_cluster_mass']:.4f}, min voxel {r['min_p_fwe_voxel']:.4f}, "
                  f"min TFCE {r['min_p_fwe_tfce']:.4f}")

    fig, axes = plt.subplots(len(MODELS), len(CORRECTIONS), figsize=(4.2 * len(CORRECTIONS), 2.5 * len(MODELS)),
                             squeeze=False)
    for row, name in zip(axes, MODELS):
        img = np.asarray(searchlight.to_nifti(res, name, fill_value=np.nan).dataobj)[:, :, 0]
        for ax, corr in zip(row, CORRECTIONS):
            var = P_VAR[corr]
            im = ax.imshow(img.T, origin="lower", cmap="RdBu_r", vmin=-1, vmax=1)
            sig = np.asarray(searchlight.to_nifti(cl, name, var=var, fill_value=1.0).dataobj)[:, :, 0] < 0.05
            if corr == "cluster_mass":
                supra = np.asarray(searchlight.to_nifti(cl, name, var="cluster_id").dataobj)[:, :, 0] > 0
                ax.contour(supra.T.astype(float), levels=[0.5], colors="0.3", linewidths=0.8, linestyles="--")
            if sig.any():
                ax.contour(sig.T.astype(float), levels=[0.5], colors="k", linewidths=1.2)
            ax.set_title(f"{name}: {LABELS[corr]} FWE\n({int(sig.sum())} voxels p < 0.05, min p "
                         f"{float(cl[var].sel(layer=name).min()):.3f})", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.6, label="Spearman rho")
    fig.suptitle("solid contour: p_FWE < 0.05; dashed: clusters above the cluster-forming threshold", fontsize=9)
    nc.plotting.save_figure(fig, out / "haxby_searchlight.png", overwrite=args.overwrite)
    plt.close(fig)
    write_headline(out, lambda folder: {**as_values("hx", summary), **headline(folder),
})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
