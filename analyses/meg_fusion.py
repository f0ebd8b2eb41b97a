"""Time-resolved RSA from MEG epochs and MEG-fMRI fusion, on simulated data with planted truth.

No public MEG data can be had offline here, so the epochs are simulated
(:func:`neurocnn.rsa.simulate_epochs`): two model RDMs ("early", "late"; random
stimulus geometries) are planted into every subject's sensor patterns, "early" from
50 to 300 ms and "late" from 150 ms on, in noise. Per subject, RDM movies are computed
from the epochs (:func:`neurocnn.rsa.compute_rdm_movie`: crossnobis, leave-one-run-out,
multivariate noise normalization), compared with the model RDMs (layer x time curves),
tested over time with sign-flip cluster permutations (cluster mass and TFCE FWE), and
their onsets and peaks get bootstrap CIs over subjects. An fMRI volume with one sphere
per model RDM (:func:`neurocnn.searchlight.simulate_volume`) is fused with the subject-mean
MEG movie: every time's MEG RDM against every searchlight sphere's RDM
(:func:`neurocnn.rsa.meg_fmri_fusion`), a 4-D NIfTI movie.

The loaders take a user's real files too: ``compute_rdm_movie`` takes ``mne.Epochs``
(``mne.read_epochs(path)``), ``meg_fmri_fusion`` any 4-D NIfTI.

Outputs in ``--out``: ``curves.nc``, ``fusion.nc``, ``fusion.nii.gz`` (x, y, z, time),
``meg_fusion.png``, ``headline.json`` (planted vs recovered onsets, peaks, fusion
peak times per planted sphere, run times).

Run: ``python analyses/meg_fusion.py --out out/meg_fusion [--quick]``
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import xarray as xr  # noqa: E402

import neurocnn as nc  # noqa: E402
from _common import as_values, figure, make_parser, output_dir, write_headline  # noqa: E402
from neurocnn import rsa, searchlight  # noqa: E402

ONSETS = {"early": 0.05, "late": 0.15}
OFFSETS = {"early": 0.30}
CENTERS = {"early": (-20.0, -90.0, 0.0), "late": (40.0, -50.0, -14.0)}


def _model_rdms(n: int, seed: int) -> xr.DataArray:
    """Two random model RDMs, redrawn until their Spearman rho is <= -0.05: a positively
    correlated pair would let the early representation pass for the late model (a real
    effect, but it hides the planted late onset)."""
    import scipy.stats
    from scipy.spatial.distance import pdist, squareform

    ids = np.array([f"stim{i:02d}" for i in range(n)])
    for k in range(1000):
        rng = np.random.default_rng([seed, 7, k])
        vecs = [pdist(rng.standard_normal((n, 6)), "correlation") for _ in ONSETS]
        if scipy.stats.spearmanr(*vecs)[0] <= -0.05:
            break
    mats = np.stack([squareform(v) for v in vecs])
    return xr.DataArray(mats, dims=("layer", "stimulus", "stimulus2"),
                        coords={"layer": list(ONSETS), "stimulus": ids, "stimulus2": ids.copy()},
                        attrs={"metric": "correlation", "model": "simulated",
                               "model_spearman": float(scipy.stats.spearmanr(*vecs)[0])})


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("meg_fusion", __doc__.splitlines()[0])
    args = parser.parse_args(argv)
    out = output_dir(args)
    quick = args.quick
    n_stim, n_subj = (12, 8) if quick else (24, 15)
    n_perm, n_boot = (200, 100) if quick else (1000, 1000)
    models = _model_rdms(n_stim, args.seed)
    sfreq = 100.0
    times = np.round(np.arange(-0.1, 0.5 + 1e-9, 1 / sfreq), 6)
    epochs = {f"sub{s:02d}": rsa.simulate_epochs(models, ONSETS, offsets=OFFSETS, n_trials=8 if quick else 12,
                                                 n_sensors=24 if quick else 64, times=times, signal=0.4,
                                                 noise=1.0, n_runs=4, seed=args.seed * 1000 + s)
              for s in range(n_subj)}
    t0 = time.perf_counter()
    curves = rsa.layer_time_curves(models, epochs, metric="crossnobis", method="spearman", cv="leave_one_run_out",
                                   noise_normalization="epoch", test=True, n_permutations=n_perm,
                                   n_bootstrap=n_boot, seed=args.seed, progress=args.progress)
    t1 = time.perf_counter()
    movies = xr.concat([rsa.compute_rdm_movie(e, "correlation", progress=False) for e in epochs.values()], "subject")
    box = ((-40, 60), (-104, -30), (-24, 10)) if quick else ((-60, 70), (-104, -20), (-30, 30))
    vol = searchlight.simulate_volume(models, [{"layer": k, "center": c, "radius": 8.0} for k, c in CENTERS.items()],
                                      box=box, noise=1.0, signal=1.0, seed=args.seed)
    t2 = time.perf_counter()
    fus = rsa.meg_fmri_fusion(movies, vol.img, mask=vol.mask, radius=6.0, min_voxels=5,
                              stimulus_ids=vol.stimulus_ids, progress=args.progress)
    t3 = time.perf_counter()
    curves.attrs.update(simulated="planted onsets " + json.dumps(ONSETS), seed=args.seed)
    fus.attrs.update(simulated="spheres " + json.dumps(CENTERS), seed=args.seed)
    nc.io.save(curves, out / "curves.nc", overwrite=args.overwrite)
    nc.io.save(fus, out / "fusion.nc", overwrite=args.overwrite)
    img = rsa.fusion_to_nifti(fus)
    with nc.io.atomic_output(out / "fusion.nii.gz", overwrite=args.overwrite, kind="fusion movie") as tmp:
        img.to_filename(tmp)

    head = {"n_subjects": n_subj, "n_stimuli": n_stim, "model_rdm_spearman": models.attrs["model_spearman"], "n_permutations": n_perm, "n_bootstrap": n_boot,
            "sample_interval_s": 1 / sfreq,
            "seconds": {"curves_test_latency": round(t1 - t0, 2), "fusion": round(t3 - t2, 2)}, "layers": {}}
    for name in ONSETS:
        sph = np.sqrt(sum((fus[c] - v) ** 2 for c, v in zip("xyz", CENTERS[name]))) <= 4.0
        f_t = fus["fusion"].values[:, sph.values].mean(1)
        head["layers"][name] = {
            "planted_onset": ONSETS[name], "onset": float(curves["onset"].sel(layer=name)),
            "onset_ci": [float(curves["onset_ci_low"].sel(layer=name)), float(curves["onset_ci_high"].sel(layer=name))],
            "peak": float(curves["peak"].sel(layer=name)),
            "peak_ci": [float(curves["peak_ci_low"].sel(layer=name)), float(curves["peak_ci_high"].sel(layer=name))],
            "onset_error_samples": round(abs(float(curves["onset"].sel(layer=name)) - ONSETS[name]) * sfreq, 3),
            # a significant cluster before the stimulus is a false positive (FWE 5% per layer)
            "prestimulus_false_positive": bool((curves["p_fwe_cluster_mass"].sel(layer=name).values[times < 0] < 0.05).any()),
            "fusion_sphere_center_mm": list(CENTERS[name]),
            "fusion_sphere_onset": float(times[np.argmax(f_t > f_t[times < 0].mean() + 5 * f_t[times < 0].std())]),
            "fusion_sphere_peak_time": float(times[int(np.argmax(f_t))]),
        }

    fig = plt.figure(figsize=(13, 8))
    fig.subplots_adjust(hspace=0.45)
    ax = fig.add_subplot(2, 2, 1)
    for k, name in enumerate(ONSETS):
        c = curves["correlation"].sel(layer=name)
        ax.plot(curves["time"], c, color=f"C{k}", label=name)
        sig = curves["p_fwe_cluster_mass"].sel(layer=name).values < 0.05
        y = float(c.min()) - 0.02 - 0.02 * k
        ax.plot(curves["time"].values[sig], np.full(sig.sum(), y), "s", color=f"C{k}", ms=3)
        ax.axvline(ONSETS[name], color=f"C{k}", ls=":", lw=1)
        ax.errorbar(float(curves["onset"].sel(layer=name)), y - 0.015,
                    xerr=[[float(curves["onset"].sel(layer=name) - curves["onset_ci_low"].sel(layer=name))],
                          [float(curves["onset_ci_high"].sel(layer=name) - curves["onset"].sel(layer=name))]],
                    fmt="v", color=f"C{k}", capsize=3)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("Spearman rho (model vs MEG crossnobis RDM)")
    ax.set_title(f"layer x time curves ({n_subj} subjects); squares: cluster-mass p_FWE < 0.05;\n"
                 "dotted: planted onsets; triangles: onsets with 95% bootstrap CIs", fontsize=9)
    ax.legend(frameon=False, fontsize=8)
    ax = fig.add_subplot(2, 2, 2)
    gen = rsa.rdm_time_generalization(movies)
    im = ax.imshow(gen.values, origin="lower", cmap="viridis",
                   extent=[times[0], times[-1], times[0], times[-1]])
    fig.colorbar(im, ax=ax, shrink=0.8, label="Spearman rho")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("time (s)")
    ax.set_title("time x time generalization of the MEG RDMs (correlation distance)", fontsize=9)
    ax = fig.add_subplot(2, 2, 3)
    for k, name in enumerate(ONSETS):
        sph = np.sqrt(sum((fus[c] - v) ** 2 for c, v in zip("xyz", CENTERS[name]))) <= 4.0
        ax.plot(times, fus["fusion"].values[:, sph.values].mean(1), color=f"C{k}", label=f"{name} sphere {CENTERS[name]}")
        ax.axvline(ONSETS[name], color=f"C{k}", ls=":", lw=1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("fusion rho (MEG vs sphere RDM)")
    ax.set_title("MEG-fMRI fusion at the planted spheres", fontsize=9)
    ax.legend(frameon=False, fontsize=8)
    ax = fig.add_axes([0.55, 0.06, 0.42, 0.38])
    from nilearn import image, plotting

    t_show = float(head["layers"]["late"]["fusion_sphere_peak_time"])
    frame = image.index_img(img, int(np.argmin(np.abs(times - t_show))))
    plotting.plot_glass_brain(frame, axes=ax, plot_abs=False, colorbar=True, display_mode="lzr",
                              title=f"fusion at {t_show * 1000:.0f} ms", threshold=0.1)
    nc.plotting.save_figure(fig, out / "meg_fusion.png", overwrite=args.overwrite)
    plt.close(fig)
    for name, h in head["layers"].items():
        print(f"{name}: planted onset {h['planted_onset'] * 1000:.0f} ms, recovered {h['onset'] * 1000:.0f} ms "
              f"(95% CI {h['onset_ci'][0] * 1000:.0f}-{h['onset_ci'][1] * 1000:.0f}); peak {h['peak'] * 1000:.0f} ms; "
              f"fusion at its sphere rises at {h['fusion_sphere_onset'] * 1000:.0f} ms, peaks at "
              f"{h['fusion_sphere_peak_time'] * 1000:.0f} ms")
    print(f"times: {head['seconds']}; wrote {out}")
    write_headline(out, lambda folder: {**as_values("mf", head), "fig_mf": figure(folder, "meg_fusion.png")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
