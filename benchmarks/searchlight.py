"""Benchmark: neurocnn's batched searchlight vs rsatoolbox's one-centre-at-a-time searchlight.

Same data for both: a simulated 92-stimulus volume on the MNI 2 mm grid, cropped to a box
with >= 5000 brain-mask centres, 5 model RDMs, correlation distance, Spearman. The
baseline is rsatoolbox's documented pipeline: ``get_volume_searchlight`` (neighbours,
radius 3 voxels, spheres cut at the mask) -> ``get_searchlight_RDMs`` (``calc_rdm`` per
centre) -> ``evaluate_models_searchlight`` (``eval_fixed`` per centre). neurocnn uses
radius 5.9 mm (= every voxel closer than 3 voxels, the same spheres). The maps are
compared for agreement. Then the whole MNI brain mask (~235k centres) is run with
neurocnn when the measured throughput predicts < 10 min, else extrapolated.

Run: ``python benchmarks/searchlight.py [--whole-brain {auto,run,skip}]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import time

import numpy as np
import xarray as xr
from scipy.spatial.distance import pdist, squareform

from neurocnn import datasets
from neurocnn import searchlight as sl

N_STIM = 92
N_LAYERS = 5
BOX = ((-24, 24), (-100, -60), (-12, 22))  # occipital box of the MNI 2 mm grid


def model_rdms(seed: int = 0) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    ids = np.array([f"92img_{i:03d}" for i in range(N_STIM)])
    mats = [squareform(pdist(rng.standard_normal((N_STIM, 100)), "correlation")) for _ in range(N_LAYERS)]
    return xr.DataArray(np.stack(mats), dims=("layer", "stimulus", "stimulus2"),
                        coords={"layer": [f"layer{i}" for i in range(N_LAYERS)],
                                "stimulus": ids, "stimulus2": ids.copy()})


def rsatoolbox_searchlight(data4d: np.ndarray, mask: np.ndarray, rdms: xr.DataArray):
    from rsatoolbox.inference import eval_fixed
    from rsatoolbox.model import ModelFixed
    from rsatoolbox.rdm import RDMs
    from rsatoolbox.util.searchlight import (
        evaluate_models_searchlight,
        get_searchlight_RDMs,
        get_volume_searchlight,
    )

    times = {}
    quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
    with quiet[0], quiet[1]:
        t = time.perf_counter()
        centers, neighbors = get_volume_searchlight(mask, radius=3, threshold=0.0, truncate_at_boundary=True)
        times["neighbourhoods"] = time.perf_counter() - t
        data_2d = data4d.reshape(-1, data4d.shape[-1]).T  # (stimulus, voxel)
        t = time.perf_counter()
        sl_rdms = get_searchlight_RDMs(data_2d, centers, neighbors, np.arange(N_STIM), method="correlation")
        times["RDMs"] = time.perf_counter() - t
        iu = np.triu_indices(N_STIM, 1)
        models = [ModelFixed(str(n), RDMs(rdms.values[k][iu][None])) for k, n in enumerate(rdms.layer.values)]
        t = time.perf_counter()
        evals = evaluate_models_searchlight(sl_rdms, models, eval_fixed, method="spearman", n_jobs=1)
        times["evaluation"] = time.perf_counter() - t
    scores = np.array([e.evaluations[0, :, 0] for e in evals])  # (centre, model)
    return centers, scores, times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--whole-brain", choices=("auto", "run", "skip"), default="auto")
    args = parser.parse_args(argv)
    os.environ.setdefault("NILEARN_DATA", os.path.expanduser("~/nilearn_data"))

    rdms = model_rdms()
    vol = sl.simulate_volume(rdms, [{"layer": "layer0", "center": (0, -84, 4), "radius": 10}],
                             box=BOX, seed=0)
    data = np.asarray(vol.img.dataobj, dtype=np.float64)
    mask = np.asarray(vol.mask.dataobj) > 0
    n_centres = int(mask.sum())
    print(f"box: grid {mask.shape}, {n_centres} centres, {N_STIM} stimuli, {N_LAYERS} model RDMs, "
          "sphere radius 3 voxels (6 mm, < 3 voxels)")

    t = time.perf_counter()
    ours = sl.searchlight(vol.img, rdms, mask=vol.mask, radius=5.9, min_voxels=1, progress=False)
    t_ours = time.perf_counter() - t

    centers, theirs, times = rsatoolbox_searchlight(data, mask, rdms)
    t_theirs = sum(times.values())
    flat = np.ravel_multi_index((ours.i.values, ours.j.values, ours.k.values), mask.shape)
    pos = {c: n for n, c in enumerate(flat)}
    ours_aligned = ours["correlation"].values.T[[pos[c] for c in centers]]
    diff = np.nanmax(np.abs(ours_aligned - theirs))

    print(f"\n{'implementation':<48}{'time [s]':>10}{'centres/s':>12}")
    print(f"{'neurocnn.searchlight (batched)':<48}{t_ours:>10.2f}{n_centres / t_ours:>12.0f}")
    for k, v in times.items():
        print(f"{'  rsatoolbox ' + k:<48}{v:>10.2f}")
    print(f"{'rsatoolbox.util.searchlight (total, loop)':<48}{t_theirs:>10.2f}{n_centres / t_theirs:>12.0f}")
    print(f"speed-up: {t_theirs / t_ours:.1f}x   max |neurocnn - rsatoolbox| over {len(centers)} "
          f"centres x {N_LAYERS} layers: {diff:.2e}")

    mni = datasets.mni_brain_mask()
    n_brain = int(np.asarray(mni.dataobj).sum())
    estimate = n_brain / (n_centres / t_ours)
    print(f"\nwhole brain: {n_brain} centres in the MNI152 2 mm mask; estimate from the box "
          f"throughput: {estimate:.0f} s")
    if args.whole_brain == "run" or (args.whole_brain == "auto" and estimate < 600):
        t = time.perf_counter()
        brain = sl.simulate_volume(rdms, [{"layer": "layer0", "center": (0, -84, 4), "radius": 10}], seed=0)
        t_sim = time.perf_counter() - t
        t = time.perf_counter()
        whole = sl.searchlight(brain.img, rdms, mask=brain.mask, radius=6.0, progress=False)
        t_whole = time.perf_counter() - t
        print(f"whole-brain run (radius 6 mm, {whole.sizes['voxel']} centres, {N_STIM} stimuli, "
              f"{N_LAYERS} layers): {t_whole:.1f} s (+ {t_sim:.1f} s to simulate the volume)")
    else:
        print("whole-brain run skipped; the time above is an extrapolation")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
