"""Searchlight on real fMRI: category structure in Haxby et al. (2001), subject 1.

PyMVPA's single axial slice (40 x 20 voxels, 3.1 x 3.75 mm, 12 runs, 8 categories):
per-run category patterns (volumes of each category block, labels shifted 2 volumes
for the haemodynamic lag, minus the run mean; averaged over runs), sphere = in-slice
disc, compared with two category models: "category" (faces | cat | houses | small objects
| scrambled) and "animacy" (face, cat | inanimate objects and houses | scrambled).
Significance: stimulus-label permutations of the model RDM, FWE over the slice.

Outputs in ``--out``: ``haxby_searchlight.nc``, NIfTI maps, ``haxby_searchlight.png``;
the peak and mean correlation of each model are printed.

Run: ``python analyses/haxby_searchlight.py --out out/haxby_searchlight [--quick]``
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import neurocnn as nc  # noqa: E402
from _common import ALPHA, figure, fmt, fmt_int, fmt_p, load_result, make_parser, md_table, output_dir, peak, write_headline  # noqa: E402
from neurocnn import datasets, rsa, searchlight  # noqa: E402

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
    }


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("haxby_searchlight", __doc__.splitlines()[0])
    parser.add_argument("--radius", type=float, default=6.0, help="disc radius in mm (6 mm: 3 x 3 voxels)")
    parser.add_argument("--lag", type=int, default=2, help="haemodynamic lag in volumes (TR 2.5 s)")
    args = parser.parse_args(argv)
    out = output_dir(args)

    vol = datasets.haxby_category_patterns(lag=args.lag, categories=CATEGORIES)
    models = rsa.category_model_rdms(CATEGORIES, MODELS)
    n_perm = 200 if args.quick else 5000
    res = searchlight.searchlight(vol.img, models, mask=vol.mask, radius=args.radius, min_voxels=5,
                                  stimulus_ids=vol.stimulus_ids, n_permutations=n_perm,
                                  seed=args.seed, progress=args.progress)
    res.attrs.update(data="Haxby et al. 2001, subject 1, PyMVPA single slice", lag_volumes=args.lag)
    nc.io.save(res, out / "haxby_searchlight.nc", overwrite=args.overwrite)
    searchlight.save_maps(res, out / "nifti", overwrite=args.overwrite)

    fig, axes = plt.subplots(1, len(MODELS), figsize=(4.5 * len(MODELS), 4.5))
    print(f"{res.sizes['voxel']} centres (in-slice discs of up to {int(res['n_voxels'].max())} voxels), "
          f"{len(CATEGORIES)} categories x {len(vol.stimulus_ids) // len(CATEGORIES)} runs")
    for ax, name in zip(axes, MODELS):
        c = res["correlation"].sel(layer=name)
        p = res["p_fwe"].sel(layer=name)
        v = int(np.nanargmax(c.values))
        print(f"{name:>9}: mean rho over the mask {float(np.nanmean(c)):.3f}; peak rho {float(c[v]):.3f} "
              f"at voxel (i={int(c.i[v])}, j={int(c.j[v])}) = ({float(c.x[v]):.1f}, {float(c.y[v]):.1f}) mm; "
              f"{int((p < 0.05).sum())} voxels p_FWE < 0.05 (min p_FWE {float(p.min()):.3f}, "
              f"{n_perm} permutations)")
        img = np.asarray(searchlight.to_nifti(res, name, fill_value=np.nan).dataobj)[:, :, 0]
        im = ax.imshow(img.T, origin="lower", cmap="RdBu_r", vmin=-1, vmax=1)
        sig = np.asarray(searchlight.to_nifti(res, name, "p_fwe", fill_value=1.0).dataobj)[:, :, 0] < 0.05
        if sig.any():
            ax.contour(sig.T.astype(float), levels=[0.5], colors="k", linewidths=1)
        ax.plot(int(c.i[v]), int(c.j[v]), "k*", ms=10)
        ax.set_title(f"{name} model: Spearman rho\n(star: peak; contour: p_FWE < 0.05)")
        ax.set_xlabel("i (voxel)")
        ax.set_ylabel("j (voxel)")
    fig.colorbar(im, ax=axes, shrink=0.8)
    nc.plotting.save_figure(fig, out / "haxby_searchlight.png", overwrite=args.overwrite)
    plt.close(fig)
    print(f"wrote {out}")
    write_headline(out, headline)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
