"""MEG layer x time correlations with planted peaks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import xarray as xr

from neurocnn import rsa
from neurocnn.rsa import _stack
from neurocnn.exceptions import ShapeMismatchError

PEAKS = (8, 16, 24)  # sample index of each layer's peak
TIMES = np.arange(32) * 0.01 - 0.05


def _planted(n=24, n_subjects=0, seed=0):
    rng = np.random.default_rng(seed)
    iu = np.triu_indices(n, 1)
    layers = rng.random((len(PEAKS), iu[0].size))
    subjects = max(n_subjects, 1)
    meg = np.zeros((subjects, n, n, len(TIMES)))
    for s in range(subjects):
        for t in range(len(TIMES)):
            v = 0.3 * rng.random(iu[0].size)
            for layer, peak in enumerate(PEAKS):
                v = v + np.exp(-0.5 * ((t - peak) / 2.5) ** 2) * layers[layer]
            meg[s, iu[0], iu[1], t] = v
            meg[s, iu[1], iu[0], t] = v
    ids = [f"s{i}" for i in range(n)]
    lay = xr.DataArray(_stack._to_square(layers, n), dims=("layer", "stimulus", "stimulus2"),
                       coords={"layer": ["conv1", "conv3", "fc7"], "stimulus": ids, "stimulus2": ids})
    return lay, (meg if n_subjects else meg[0]), ids


@pytest.mark.parametrize("n_subjects", [0, 3])
def test_planted_peaks_recovered(n_subjects):
    lay, meg, ids = _planted(n_subjects=n_subjects)
    dims = (("subject",) if n_subjects else ()) + ("stimulus", "stimulus2", "time")
    da = xr.DataArray(meg, dims=dims, coords={"stimulus": ids, "stimulus2": ids, "time": TIMES})
    ds = rsa.meg_layer_time_correlation(lay, da, n_bootstrap=100, seed=1, progress=False)
    assert ds.correlation.dims == ("layer", "time")
    assert list(ds.layer.values) == ["conv1", "conv3", "fc7"]
    np.testing.assert_allclose(ds.peak_latency.values, TIMES[list(PEAKS)], atol=0.0101)
    assert np.all(ds.peak_latency_ci_low <= ds.peak_latency + 1e-12)
    assert np.all(ds.peak_latency_ci_high >= ds.peak_latency - 1e-12)
    assert np.all(ds.peak_latency_ci_high - ds.peak_latency_ci_low <= 0.0301)
    assert ds.attrs["over"] == ("subjects" if n_subjects else "stimuli")
    again = rsa.meg_layer_time_correlation(lay, da, n_bootstrap=100, seed=1, progress=False)
    xr.testing.assert_identical(ds, again)
    # the observed curve equals compare_rdms at one time point
    t = 10
    one = da.isel(time=t)
    if n_subjects:
        one = one.transpose("subject", "stimulus", "stimulus2")
    ref = rsa.compare_rdms(lay, one).values
    ref = ref.mean(1) if n_subjects else ref
    np.testing.assert_allclose(ds.correlation.values[:, t], ref, atol=1e-12)


def test_numpy_input_with_times_and_loader(tmp_path):
    lay, meg, _ = _planted(n=16)
    ds = rsa.meg_layer_time_correlation(lay.values, meg, times=TIMES, n_bootstrap=50, progress=False)
    np.testing.assert_allclose(ds.peak_latency.values, TIMES[list(PEAKS)], atol=0.0101)
    scipy.io.savemat(tmp_path / "meg.mat", {"rdms": meg, "times": TIMES})
    loaded = rsa.load_meg_rdms(tmp_path / "meg.mat")
    assert loaded.dims == ("stimulus", "stimulus2", "time")
    np.testing.assert_allclose(loaded.time.values, TIMES)
    np.save(tmp_path / "meg.npy", meg)
    assert rsa.load_meg_rdms(tmp_path / "meg.npy", times=TIMES).sizes["time"] == len(TIMES)


def test_meg_errors():
    lay, meg, _ = _planted(n=10)
    with pytest.raises(ShapeMismatchError, match="times"):
        rsa.meg_layer_time_correlation(lay.values, meg, times=TIMES[:3], progress=False)
    with pytest.raises(ShapeMismatchError, match="subject"):
        rsa.meg_layer_time_correlation(lay.values, meg, over="subjects", progress=False)
    with pytest.raises(ShapeMismatchError):
        rsa.meg_layer_time_correlation(lay.values, meg[..., 0], progress=False)
