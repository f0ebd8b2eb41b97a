"""RDM movies from epochs equal rsatoolbox's calc_rdm_movie; layer x time curves recover
planted onsets; MEG-fMRI fusion finds planted spheres at their times; bad input errors."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
import xarray as xr
from scipy.spatial.distance import pdist, squareform

from neurocnn import rsa, searchlight
from neurocnn.exceptions import InvalidDataError, ShapeMismatchError, UnknownNameError

C, R, S, T = 6, 4, 10, 7
IDS = np.tile([f"c{i}" for i in range(C)], R)
RUNS = np.repeat(np.arange(R), C)
TIMES = np.round(np.arange(T) * 0.1, 6)


@pytest.fixture(scope="module")
def epochs():
    return np.random.default_rng(0).standard_normal((C * R, S, T))


def _rsatoolbox_movie(X, method, **kw):
    from rsatoolbox.data import TemporalDataset
    from rsatoolbox.rdm import calc_rdm_movie

    ds = TemporalDataset(X, obs_descriptors={"stim": IDS, "run": RUNS, "half": kw.pop("half", RUNS)},
                         time_descriptors={"time": TIMES})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = calc_rdm_movie(ds, method=method, descriptor="stim", **kw)
    return r.get_matrices(), list(r.pattern_descriptors["stim"]), np.asarray(r.rdm_descriptors["time"])


def _ours(X, metric, order, **kw):
    mv = rsa.compute_rdm_movie(X, metric, stimulus_ids=IDS, runs=RUNS, times=TIMES, progress=False, **kw)
    return mv.sel(stimulus=order, stimulus2=order)


@pytest.mark.parametrize("ours,theirs,per_sensor,kw", [
    ("correlation", "correlation", False, {}),
    ("sqeuclidean", "euclidean", True, {}),
    ("crossnobis", "crossnobis", False, {"cv_descriptor": "run"}),
])
def test_movie_equals_rsatoolbox(epochs, ours, theirs, per_sensor, kw):
    ref, order, t = _rsatoolbox_movie(epochs, theirs, **kw)
    got = _ours(epochs, ours, order)
    np.testing.assert_allclose(got.values / (S if per_sensor else 1), ref, atol=1e-12)
    np.testing.assert_allclose(got["time"].values, t)


@pytest.mark.parametrize("ours,theirs,kw", [("sqeuclidean", "mahalanobis", {}),
                                            ("crossnobis", "crossnobis", {"cv_descriptor": "run"})])
def test_movie_with_noise_precision_equals_rsatoolbox(epochs, ours, theirs, kw):
    P = np.linalg.inv(np.cov(np.random.default_rng(1).standard_normal((60, S)).T))
    ref, order, _ = _rsatoolbox_movie(epochs, theirs, noise=P, **kw)
    got = _ours(epochs, ours, order, noise=P)
    np.testing.assert_allclose(got.values / (S if ours == "sqeuclidean" else 1), ref, atol=1e-11)


def test_split_half_crossnobis_equals_rsatoolbox(epochs):
    half = (RUNS >= R // 2).astype(int)  # first vs second half of each stimulus's trials
    ref, order, _ = _rsatoolbox_movie(epochs, "crossnobis", cv_descriptor="half", half=half)
    got = _ours(epochs, "crossnobis", order, cv="split_half")
    np.testing.assert_allclose(got.values, ref, atol=1e-12)


def test_bins_and_windows(epochs):
    bins = [TIMES[:2], TIMES[2:5], TIMES[5:]]
    ref, order, t = _rsatoolbox_movie(epochs, "euclidean", bins=bins)
    got = _ours(epochs, "sqeuclidean", order, bins=bins)
    np.testing.assert_allclose(got.values / S, ref, atol=1e-12)
    np.testing.assert_allclose(got["time"].values, t)
    win = rsa.compute_rdm_movie(epochs, "correlation", stimulus_ids=IDS, times=TIMES, window=3, step=2,
                                progress=False)
    manual = np.stack([epochs[:, :, s:s + 3].mean(-1) for s in (0, 2, 4)], -1)
    ref_w = rsa.compute_rdm_movie(manual, "correlation", stimulus_ids=IDS, progress=False)
    np.testing.assert_allclose(win.values, ref_w.values, atol=1e-12)
    np.testing.assert_allclose(win["time"].values, [0.1, 0.3, 0.5])
    chunked = rsa.compute_rdm_movie(epochs, "crossnobis", stimulus_ids=IDS, runs=RUNS, chunk_size=2, progress=False)
    whole = rsa.compute_rdm_movie(epochs, "crossnobis", stimulus_ids=IDS, runs=RUNS, progress=False)
    np.testing.assert_allclose(chunked.values, whole.values, atol=1e-13)


def test_noise_normalization_is_ledoit_wolf_of_residuals(epochs):
    import sklearn.covariance

    means = np.stack([epochs[IDS == c].mean(0) for c in np.unique(IDS)])
    resid = epochs - means[np.searchsorted(np.unique(IDS), IDS)]
    pooled = resid.transpose(2, 0, 1).reshape(-1, S)  # all times and trials
    cov = sklearn.covariance.ledoit_wolf(pooled, assume_centered=True)[0]
    ref, order, _ = _rsatoolbox_movie(epochs, "crossnobis", noise=np.linalg.inv(cov), cv_descriptor="run")
    got = _ours(epochs, "crossnobis", order, noise_normalization="epoch")
    np.testing.assert_allclose(got.values, ref, atol=1e-10)
    per_time = _ours(epochs, "sqeuclidean", order, noise_normalization="time")
    cov3 = sklearn.covariance.ledoit_wolf(resid[:, :, 3], assume_centered=True)[0]
    ref3, _, _ = _rsatoolbox_movie(epochs[:, :, 3:4].repeat(T, -1), "mahalanobis", noise=np.linalg.inv(cov3))
    np.testing.assert_allclose(per_time.values[3] / S, ref3[3], atol=1e-10)


def test_mne_epochs_input(epochs):
    mne = pytest.importorskip("mne")
    info = mne.create_info([f"MEG{i}" for i in range(S)], sfreq=10.0, ch_types="mag")
    names = sorted(set(IDS))
    event_id = {n: i + 1 for i, n in enumerate(names)}
    events = np.stack([np.arange(len(IDS)) * 20, np.zeros(len(IDS), int), [event_id[i] for i in IDS]], 1)
    ep = mne.EpochsArray(epochs, info, events=events, event_id=event_id, tmin=0.0, verbose=False)
    got = rsa.compute_rdm_movie(ep, "correlation", progress=False)
    ref = rsa.compute_rdm_movie(epochs, "correlation", stimulus_ids=IDS, times=ep.times, progress=False)
    xr.testing.assert_allclose(got.sel(stimulus=ref.stimulus.values, stimulus2=ref.stimulus.values), ref,
                               check_dim_order=True)
    mapped = rsa.compute_rdm_movie(ep, "correlation", stimulus_ids={n: n.upper() for n in names}, progress=False)
    assert set(mapped["stimulus"].values) == {n.upper() for n in names}


def _models(n=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.array([f"s{i:02d}" for i in range(n)])
    mats = np.stack([squareform(pdist(rng.standard_normal((n, 6)), "correlation")) for _ in range(2)])
    return xr.DataArray(mats, dims=("layer", "stimulus", "stimulus2"),
                        coords={"layer": ["early", "late"], "stimulus": ids, "stimulus2": ids})


def test_layer_time_curves_recover_planted_onsets():
    models = _models()
    onsets = {"early": 0.05, "late": 0.15}
    subs = {f"s{s}": rsa.simulate_epochs(models, onsets, offsets={"early": 0.3}, n_trials=8, n_sensors=20,
                                         signal=0.5, n_runs=4, seed=s) for s in range(8)}
    cur = rsa.layer_time_curves(models, subs, metric="crossnobis", test=True, n_permutations=200,
                                n_bootstrap=50, progress=False)
    assert cur["subject_correlation"].dims == ("subject", "layer", "time")
    for name, onset in onsets.items():
        assert abs(float(cur["onset"].sel(layer=name)) - onset) <= 0.01 + 1e-9, name
    assert 0.05 <= float(cur["peak"].sel(layer="early")) < 0.3
    assert float(cur["peak"].sel(layer="late")) >= 0.3
    pre = cur["time"].values < 0
    assert not (cur["p_fwe_cluster_mass"].values[:, pre] < 0.05).any()
    gen = rsa.rdm_time_generalization(rsa.compute_rdm_movie(subs["s0"], progress=False))
    np.testing.assert_allclose(np.diag(gen.values), 1.0)


def test_fusion_finds_planted_spheres_at_their_times():
    models = _models(seed=1)
    times = np.round(np.arange(-0.05, 0.3, 0.01), 6)
    ep = rsa.simulate_epochs(models, {"early": 0.05, "late": 0.15}, offsets={"early": 0.15}, n_trials=10,
                             n_sensors=30, times=times, signal=1.0, seed=3)
    movie = rsa.compute_rdm_movie(ep, "correlation", progress=False)
    aff = np.diag([4.0, 4.0, 4.0, 1.0])
    aff[:3, 3] = -30
    mask = nib.Nifti1Image(np.ones((16, 8, 6), np.uint8), aff)
    centers = {"early": (-14.0, -10.0, -10.0), "late": (18.0, -10.0, -10.0)}
    vol = searchlight.simulate_volume(models, [{"layer": k, "center": c, "radius": 8.0} for k, c in centers.items()],
                                      mask=mask, seed=2)
    fus = rsa.meg_fmri_fusion(movie, vol.img, mask=vol.mask, radius=5.0, min_voxels=5,
                              stimulus_ids=vol.stimulus_ids, progress=False)
    assert fus["fusion"].dims == ("time", "voxel")
    for name, (lo, hi) in {"early": (0.05, 0.15), "late": (0.15, 0.3)}.items():
        near = np.sqrt(sum((fus[c] - v) ** 2 for c, v in zip("xyz", centers[name]))).values <= 4.0
        f = fus["fusion"].values[:, near].mean(1)
        assert lo <= times[np.argmax(f)] < hi, name
    img = rsa.fusion_to_nifti(fus)
    assert img.shape == (16, 8, 6, len(times))
    assert img.header["pixdim"][4] == pytest.approx(0.01)


def test_bad_input_errors(epochs):
    with pytest.raises(ShapeMismatchError, match="stimulus ids for 24 trials"):
        rsa.compute_rdm_movie(epochs, stimulus_ids=IDS[:-1], progress=False)
    with pytest.raises(ShapeMismatchError, match="times for 7 samples"):
        rsa.compute_rdm_movie(epochs, stimulus_ids=IDS, times=TIMES[:-1], progress=False)
    with pytest.raises(ShapeMismatchError, match="runs="):
        rsa.compute_rdm_movie(epochs, "crossnobis", stimulus_ids=IDS, progress=False)
    with pytest.raises(ShapeMismatchError, match="every run"):
        bad = RUNS.copy()
        bad[0] = 1  # stimulus c0 has no trial in run 0
        rsa.compute_rdm_movie(epochs, "crossnobis", stimulus_ids=IDS, runs=bad, progress=False)
    with pytest.raises(ShapeMismatchError, match="noise must be"):
        rsa.compute_rdm_movie(epochs, "sqeuclidean", stimulus_ids=IDS, noise=np.eye(3), progress=False)
    with pytest.raises(UnknownNameError, match="metric"):
        rsa.compute_rdm_movie(epochs, "mahalanobiss", stimulus_ids=IDS, progress=False)
    with pytest.raises(InvalidDataError, match="window"):
        rsa.compute_rdm_movie(epochs, stimulus_ids=IDS, window=50, progress=False)
    nan = epochs.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(InvalidDataError, match="NaN"):
        rsa.compute_rdm_movie(nan, stimulus_ids=IDS, progress=False)
    models = rsa.compute_rdm(np.random.default_rng(0).standard_normal((C, 5)), stimulus_ids=list(np.unique(IDS)))
    with pytest.raises(ShapeMismatchError, match="sensors"):
        rsa.layer_time_curves(models, [epochs, epochs[:, :-1]], stimulus_ids=IDS, progress=False)
    with pytest.raises(ShapeMismatchError, match="time points"):
        rsa.layer_time_curves(models, [epochs, epochs[:, :, :-1]], stimulus_ids=IDS, progress=False)
    with pytest.raises(ShapeMismatchError, match="time"):
        rsa.meg_fmri_fusion(models, "x.nii.gz")
