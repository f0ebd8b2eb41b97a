"""Searchlight demo: model-layer RDMs of the 92 images against an fMRI volume.

The subject's layer RDMs (92 images, correlation distance) are correlated with the RDM
of every voxel's sphere (Cichy et al. 2016). The volume is either simulated on the MNI
2 mm grid, with one planted sphere per layer whose patterns follow that layer's RDM,
along the ventral stream (early layers posterior, late layers anterior), or a user's
4-D NIfTI (``--nifti``, one volume per stimulus; ``--ids`` a text file with one id per
volume, default the 92 image ids; ``--mask`` default the MNI152 brain mask).

Outputs in ``--out``: ``searchlight.nc`` (the maps), one NIfTI per layer, a glass-brain
PNG per layer and ``searchlight_overview.png``; the peak of each map is printed.

Run: ``python analyses/searchlight_demo.py --out out/searchlight_demo [--quick]``
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
from _common import figure, fmt, fmt_int, load_result, make_parser, make_subject, md_table, output_dir, peak, write_headline  # noqa: E402
from neurocnn import rsa, searchlight  # noqa: E402

#: planted sphere centres (MNI mm) from posterior (early layers) to anterior (late layers)
VENTRAL_STREAM = ((0.0, -92.0, 2.0), (-22.0, -84.0, -8.0), (-36.0, -66.0, -14.0), (38.0, -52.0, -18.0))
#: --quick: two spheres close together and a crop of the grid around them
QUICK_STREAM = ((-10.0, -92.0, 0.0), (-30.0, -76.0, -10.0))
QUICK_BOX = ((-42.0, 2.0), (-102.0, -64.0), (-22.0, 12.0))


def pick_layers(default_layers: list[str], n: int) -> list[str]:
    """``n`` layers spread by relative depth over the model's default analysis layers."""
    pos = np.linspace(0.15, 0.85, n) if n > 1 else np.array([0.5])
    return list(dict.fromkeys(default_layers[int(round(p * (len(default_layers) - 1)))] for p in pos))


def headline(folder: Path) -> dict[str, str]:
    """The values the manuscript prints about this analysis, read back from its results."""
    ds = load_result(folder, "searchlight.nc")
    rows = []
    for name in ds["layer"].values:
        c = ds["correlation"].sel(layer=name)
        rho, (x, y, z) = peak(c)
        rows.append([str(name), fmt(rho), f"({x:.0f}, {y:.0f}, {z:.0f})", fmt(np.nanmean(c.values))])
    return {
        "sl_data": str(ds.attrs["data"]),
        "sl_model": str(ds.attrs.get("model", ds.attrs.get("model_model", ""))),
        "sl_n_centres": fmt_int(ds.attrs["n_centres"]),
        "sl_radius": fmt(ds.attrs["radius_mm"], 1),
        "sl_n_stimuli": fmt_int(ds.attrs["n_stimuli"]),
        "sl_method": str(ds.attrs["method"]),
        "sl_n_layers": fmt_int(ds.sizes["layer"]),
        "sl_table": md_table(["layer", "peak ρ", "peak (MNI mm)", "mean ρ over mask"], rows),
        "fig_sl": figure(folder, "searchlight_overview.png"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("searchlight_demo", __doc__.splitlines()[0])
    parser.add_argument("--nifti", type=Path, help="4-D NIfTI of response patterns (x, y, z, stimulus)")
    parser.add_argument("--mask", type=Path, help="brain mask NIfTI on the data's grid")
    parser.add_argument("--ids", type=Path, help="text file: one stimulus id per volume")
    parser.add_argument("--radius", type=float, default=6.0, help="sphere radius in mm")
    parser.add_argument("--noise", type=float, default=1.0, help="noise sd of the simulation")
    parser.add_argument("--permutations", type=int, default=0, help="stimulus-label permutations (FWE)")
    args = parser.parse_args(argv)
    out = output_dir(args)

    subject = make_subject(args)
    layers = pick_layers(list(subject.default_layers), 2 if args.quick else 4)
    acts = subject.activations("92images", layers, progress=args.progress)
    layer_rdms = rsa.compute_rdm(acts, metric="correlation")

    if args.nifti is not None:
        ids = (np.loadtxt(args.ids, dtype=str, ndmin=1) if args.ids is not None
               else layer_rdms["stimulus"].values)
        img, mask, source = args.nifti, args.mask, str(args.nifti)
    else:
        stream = QUICK_STREAM if args.quick else VENTRAL_STREAM
        regions = [{"layer": name, "center": stream[i * (len(stream) - 1) // max(1, len(layers) - 1)],
                    "radius": 8.0 if args.quick else 10.0} for i, name in enumerate(layers)]
        vol = searchlight.simulate_volume(layer_rdms, regions, noise=args.noise,
                                          box=QUICK_BOX if args.quick else None, seed=args.seed)
        img, mask, ids, source = vol.img, vol.mask, vol.stimulus_ids, "simulated"
        for r in regions:
            print(f"planted {r['layer']:>8} at MNI {r['center']} (radius {r['radius']} mm)")

    res = searchlight.searchlight(img, layer_rdms, mask=mask, radius=args.radius, stimulus_ids=ids,
                                  progress=args.progress, n_permutations=args.permutations,
                                  seed=args.seed)
    res.attrs.update(data=source, model=str(layer_rdms.attrs.get("model", "")))
    nc.io.save(res, out / "searchlight.nc", overwrite=args.overwrite)
    searchlight.save_maps(res, out / "nifti", overwrite=args.overwrite)

    print(f"{res.sizes['voxel']} centres, radius {args.radius} mm, {len(ids)} volumes")
    fig, axes = plt.subplots(len(layers), 1, figsize=(9, 2.6 * len(layers)))
    for n, name in enumerate(res["layer"].values):
        c = res["correlation"].sel(layer=name)
        v = int(np.nanargmax(c.values))
        print(f"{name:>8}: peak rho = {float(c[v]):.3f} at MNI ({float(c.x[v]):.0f}, {float(c.y[v]):.0f}, "
              f"{float(c.z[v]):.0f}); mean over the mask {float(np.nanmean(c)):.3f}")
        glass = searchlight.plot_searchlight(res, name, kind="glass_brain", threshold=0.1)
        nc.plotting.save_figure(glass, out / f"glass_brain_{name}.png", overwrite=args.overwrite)
        plt.close(glass)
        from nilearn import plotting

        plotting.plot_stat_map(searchlight.to_nifti(res, name), bg_img=None if args.nifti else _template(),
                               axes=np.atleast_1d(axes)[n], title=f"{name}: searchlight rho",
                               cut_coords=(float(c.x[v]), float(c.y[v]), float(c.z[v])), threshold=0.1)
    nc.plotting.save_figure(fig, out / "searchlight_overview.png", overwrite=args.overwrite)
    plt.close(fig)
    print(f"wrote {out}")
    write_headline(out, headline)
    return 0


def _template():
    from nilearn import datasets

    return datasets.load_mni152_template(resolution=2)


if __name__ == "__main__":
    raise SystemExit(main())
