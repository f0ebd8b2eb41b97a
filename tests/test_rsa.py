"""Tests of neurocnn.rsa: oracles scipy and rsatoolbox, errors, round trips."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import scipy.stats
import xarray as xr
from scipy.spatial.distance import pdist, squareform

from neurocnn import datasets, rsa
from neurocnn.rsa import _kernels, _resampling
from neurocnn.exceptions import (
    InvalidDataError,
    MissingFileError,
    ShapeMismatchError,
    UnknownNameError,
)

rsa_rdm = pytest.importorskip("rsatoolbox.rdm")
from rsatoolbox.data import Dataset  # noqa: E402
from rsatoolbox.inference import boot_noise_ceiling  # noqa: E402

RSA_METHOD = {
    "spearman": "spearman",
    "tau_a": "tau-a",
    "rho_a": "rho-a",
    "pearson": "corr",
    "corr": "corr",
    "cosine": "cosine",
    "corr_cov": "corr_cov",
    "cosine_cov": "cosine_cov",
}


def _activations(n=12, f=40, seed=0, dims=("stimulus", "unit")):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, f)) + rng.normal(size=(n, 1)) * 3.0
    ids = [f"s{i:02d}" for i in range(n)]
    return xr.DataArray(
        x, dims=dims,
        coords={"stimulus": ids, "category": ("stimulus", np.array(["a", "b"] * (n // 2)))},
        attrs={"model": "tiny", "weights_sha256": "ab" * 32, "layer": "features.0",
               "relu": True, "preprocessing": "none", "extra": {"no": "dict"}},
    )


def _vectors(k, n, seed, ties=False):
    rng = np.random.default_rng(seed)
    base = rng.random(n * (n - 1) // 2)
    v = base + 0.8 * rng.random((k, base.size))
    if ties:
        v[0, : base.size // 3] = v[0, 0]
        v = np.round(v, 1)
    return v


# ------------------------------------------------------------------------ compute_rdm
@pytest.mark.parametrize("metric", ["correlation", "euclidean", "sqeuclidean", "cosine"])
def test_compute_rdm_matches_pdist(metric):
    x = _activations()
    got = rsa.compute_rdm(x, metric=metric, chunk_size=7)
    np.testing.assert_allclose(squareform(got.values, checks=False), pdist(x.values, metric),
                               rtol=1e-10, atol=1e-12)
    assert got.dims == ("stimulus", "stimulus2")
    assert list(got.stimulus2.values) == list(x.stimulus.values)
    assert list(got.category.values) == list(x.category.values)
    assert got.attrs["model"] == "tiny" and got.attrs["metric"] == metric
    assert got.attrs["relu"] == 1 and "extra" not in got.attrs
    assert all(isinstance(v, (str, int, float)) for v in got.attrs.values())


def test_compute_rdm_matches_rsatoolbox_correlation_and_euclidean():
    x = _activations(seed=3).values
    ds = Dataset(x)
    ref = rsa_rdm.calc_rdm(ds, method="correlation").get_vectors()[0]
    got = rsa.compute_rdm(x, metric="correlation")
    np.testing.assert_allclose(squareform(got.values, checks=False), ref, atol=1e-12)
    ref = rsa_rdm.calc_rdm(ds, method="euclidean").get_vectors()[0]  # mean squared diff
    got = rsa.compute_rdm(x, metric="sqeuclidean")
    np.testing.assert_allclose(squareform(got.values, checks=False) / x.shape[1], ref, rtol=1e-10)


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")  # rsatoolbox
@pytest.mark.parametrize("diag_noise", [False, True])
def test_crossnobis_matches_rsatoolbox(diag_noise):
    rng = np.random.default_rng(1)
    n_cond, n_run, f = 6, 3, 15
    patterns = rng.normal(size=(n_cond, f))
    x = patterns[:, None, :] + rng.normal(size=(n_cond, n_run, f))
    conds = np.repeat([f"c{i}" for i in range(n_cond)], n_run)
    runs = np.tile(np.arange(n_run), n_cond)
    noise = rng.uniform(0.5, 2.0, size=f) if diag_noise else None
    ds = Dataset(x.reshape(-1, f), obs_descriptors={"conds": conds, "runs": runs})
    ref = rsa_rdm.calc_rdm(ds, method="crossnobis", descriptor="conds", cv_descriptor="runs",
                           noise=None if noise is None else np.diag(noise))
    da = xr.DataArray(x, dims=("stimulus", "run", "unit"),
                      coords={"stimulus": [f"c{i}" for i in range(n_cond)], "run": np.arange(n_run)})
    got = rsa.compute_rdm(da, metric="crossnobis", noise=noise, chunk_size=4)
    np.testing.assert_allclose(squareform(got.values, checks=False), ref.get_vectors()[0], atol=1e-12)
    # the same with runs= labels per row of a plain array, and a full noise matrix
    got2 = rsa.compute_rdm(x.reshape(-1, f), metric="crossnobis", runs=runs, stimulus_ids=conds,
                           noise=None if noise is None else np.diag(noise))
    np.testing.assert_allclose(got2.values, got.values, atol=1e-12)
    assert got.attrs["n_runs"] == n_run


def test_repeated_measurements_are_averaged_for_plain_metrics():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 2, 30))  # stimulus, run, unit
    da = xr.DataArray(x, dims=("stimulus", "run", "unit"), coords={"stimulus": list("abcde")})
    got = rsa.compute_rdm(da, metric="correlation")
    np.testing.assert_allclose(squareform(got.values, checks=False), pdist(x.mean(1), "correlation"),
                               atol=1e-12)
    assert list(got.stimulus.values) == list("abcde")


def test_compute_rdm_dict_of_layers_and_netcdf(tmp_path):
    acts = {"conv1": _activations(seed=1), "fc": _activations(seed=2)}
    stacked = rsa.compute_rdm(acts)
    assert stacked.dims == ("layer", "stimulus", "stimulus2")
    assert list(stacked.layer.values) == ["conv1", "fc"]
    assert "layer" not in stacked.attrs
    path = tmp_path / "rdms.nc"
    stacked.to_netcdf(path, engine="h5netcdf")
    back = xr.load_dataarray(path, engine="h5netcdf")
    xr.testing.assert_identical(back, stacked)


@pytest.mark.filterwarnings("ignore:The data type .* does not have a Zarr V3 specification")
def test_compute_rdm_dask_zarr_chunked_equals_in_memory(tmp_path):
    pytest.importorskip("zarr")
    pytest.importorskip("dask")
    rng = np.random.default_rng(4)
    x = xr.DataArray(rng.normal(size=(10, 16, 5, 5)).astype(np.float32),
                     dims=("stimulus", "channel", "y", "x"),
                     coords={"stimulus": [f"s{i}" for i in range(10)]}, name="acts")
    x.to_dataset().chunk({"channel": 4}).to_zarr(tmp_path / "a.zarr", consolidated=False)
    lazy = xr.open_zarr(tmp_path / "a.zarr", consolidated=False)["acts"]
    assert lazy.chunks is not None
    got = rsa.compute_rdm(lazy, metric="correlation", chunk_size=50)
    ref = rsa.compute_rdm(x.values.reshape(10, -1).astype(np.float64), metric="correlation",
                          stimulus_ids=x.stimulus.values)
    np.testing.assert_allclose(got.values, ref.values, atol=1e-12)


def test_compute_rdm_torch_input_and_float32_dtype():
    import torch

    x = _activations().values
    got = rsa.compute_rdm(torch.from_numpy(x), metric="cosine", dtype=torch.float32)
    np.testing.assert_allclose(squareform(got.values, checks=False), pdist(x, "cosine"), atol=1e-5)


def test_compute_rdm_errors():
    x = _activations()
    with pytest.raises(UnknownNameError, match="correlation"):
        rsa.compute_rdm(x, metric="corelation")
    bad = x.copy()
    bad[3, 5] = np.nan
    with pytest.raises(InvalidDataError, match="s03"):
        rsa.compute_rdm(bad)
    const = x.copy()
    const[4] = 2.5
    with pytest.raises(InvalidDataError, match="s04"):
        rsa.compute_rdm(const, metric="correlation")
    rsa.compute_rdm(const, metric="euclidean")  # fine for euclidean
    zero = x.copy()
    zero[2] = 0.0
    with pytest.raises(InvalidDataError, match="s02"):
        rsa.compute_rdm(zero, metric="cosine")
    with pytest.raises(ShapeMismatchError, match="stimulus"):
        rsa.compute_rdm(x.rename(stimulus="image"))
    with pytest.raises(ShapeMismatchError, match="runs"):
        rsa.compute_rdm(x, metric="crossnobis")
    with pytest.raises(ShapeMismatchError, match="ids"):
        rsa.compute_rdm(x.values, stimulus_ids=["a", "b"])
    with pytest.raises(ShapeMismatchError, match="noise"):
        rsa.compute_rdm(x.values, metric="crossnobis", runs=[0, 1] * 6, noise=np.ones(3),
                        stimulus_ids=np.repeat(np.arange(6), 2))
    with pytest.raises(InvalidDataError, match="chunk_size"):
        rsa.compute_rdm(x, chunk_size=0)


# ----------------------------------------------------------------------- compare_rdms
@pytest.mark.parametrize("method", sorted(RSA_METHOD))
@pytest.mark.parametrize("ties", [False, True])
def test_compare_matches_rsatoolbox(method, ties):
    a, b = _vectors(3, 15, 0, ties), _vectors(4, 15, 1, ties)
    got = rsa.compare_rdms(a, b, method=method)
    ref = rsa_rdm.compare(rsa_rdm.RDMs(a), rsa_rdm.RDMs(b), RSA_METHOD[method])
    assert got.dims == ("rdm", "rdm2") and got.shape == (3, 4)
    np.testing.assert_allclose(got.values, ref, atol=1e-12)


def test_compare_scipy_oracles():
    a, b = _vectors(1, 20, 2)[0], _vectors(1, 20, 3)[0]
    assert float(rsa.compare_rdms(a, b, method="spearman")) == pytest.approx(scipy.stats.spearmanr(a, b)[0], abs=1e-12)
    assert float(rsa.compare_rdms(a, b, method="pearson")) == pytest.approx(scipy.stats.pearsonr(a, b)[0], abs=1e-12)
    # tie-free: tau-a == tau-b
    assert float(rsa.compare_rdms(a, b, method="tau_a")) == pytest.approx(scipy.stats.kendalltau(a, b)[0], abs=1e-12)


def test_tau_a_with_ties_by_hand():
    x = np.array([1.0, 2.0, 2.0, 3.0, 1.0, 4.0])  # n=4 condensed
    y = np.array([1.0, 1.0, 2.0, 3.0, 4.0, 4.0])
    s = 0
    for i in range(6):
        for j in range(i + 1, 6):
            s += np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
    assert float(rsa.compare_rdms(x, y, method="tau_a")) == pytest.approx(s / 15.0, abs=1e-15)


def test_tau_a_large_fallback_matches_planned_path(monkeypatch):
    a, b = _vectors(2, 12, 5, ties=True), _vectors(2, 12, 6, ties=True)
    exact = rsa.compare_rdms(a, b, method="tau_a").values
    monkeypatch.setattr(_kernels, "_TAU_PLAN_MAX_PAIRS", 10)
    np.testing.assert_array_equal(rsa.compare_rdms(a, b, method="tau_a").values, exact)
    brute = [[_tau_a_brute(x, y, np.ones(x.size)) for y in b] for x in a]
    np.testing.assert_allclose(exact, brute, atol=1e-12)


def _tau_a_brute(a, b, w):
    """Weighted tau-a from explicit O(P^2) sign matrices (the former implementation)."""
    cd = (np.sign(a[:, None] - a[None, :]) * np.sign(b[:, None] - b[None, :]) * np.outer(w, w)).sum() / 2
    n = w.sum()
    return cd / (n * (n - 1) / 2)


def _stimulus_weights(counts):
    n = counts.shape[-1]
    iu = np.triu_indices(n, 1)
    return (counts[:, iu[0]] * counts[:, iu[1]]).astype(np.float64)[:, None, :]


@pytest.mark.parametrize("small_chunks", [False, True])
def test_weighted_tau_a_fast_paths_equal_sign_matrices(monkeypatch, small_chunks):
    """Planned (binned) and expanded (scipy) weighted tau-a == O(P^2) sign sums, exactly,
    with tie groups larger than a bin, a constant RDM, and float64 block sums."""
    if small_chunks:  # exercise the chunk loops
        monkeypatch.setattr(_kernels, "_TAU_BLOCK_ELEMENTS", 64)
        monkeypatch.setattr(_kernels, "_TAU_GRID_CELLS", 8)
    n = 30
    a, b = _vectors(4, n, 11), _vectors(3, n, 12, ties=True)
    a[1] = np.round(a[1] * 2)  # 3 values: tie groups far larger than a bin (size 16)
    a[2, ::3] = a[2, 0]
    b[2] = 1.0  # constant: every pair tied
    counts = np.random.default_rng(3).multinomial(n, np.ones(n) / n, size=6)
    w = _stimulus_weights(counts)
    w[5] *= 900  # block sums beyond float32's exact integers -> float64 path
    brute = np.array([[[_tau_a_brute(x, y, ws[0]) for y in b] for x in a] for ws in w])
    planned = _kernels._cmp_tau_a(_kernels._prep_tau(a[None], order=_kernels._TauPlan.of(a)),
                             _kernels._prep_tau(b[None], order=_kernels._TauPlan.of(b)), w)
    np.testing.assert_allclose(planned, brute, atol=1e-12)
    assert np.all(planned[:, :, 2] == 0.0)
    expanded = _kernels._cmp_tau_a(np.broadcast_to(a, (6,) + a.shape), b[None], w)  # per-sample path
    np.testing.assert_allclose(expanded, brute, atol=1e-12)
    cd_planned = _kernels._tau_cd_planned(_kernels._TauPlan.of(a), _kernels._TauPlan.of(b), w[:, 0])
    np.testing.assert_array_equal(cd_planned, _kernels._tau_cd_expanded(a[None], b[None], w))
    np.testing.assert_array_equal(cd_planned, np.round(cd_planned))  # integer counts


@pytest.mark.filterwarnings("ignore:Noise ceiling for tau based on averaged ranks:UserWarning")
def test_tau_a_bootstrap_92images_equals_rsatoolbox_resampled_rdms():
    """The first samples of a tau-a bootstrap over stimuli and subjects on the 92 images
    (categorical model RDMs with large ties), redone by rsatoolbox on explicitly
    resampled RDMs."""
    from rsatoolbox.util.inference_util import pool_rdm

    brain = datasets.load_92images_brain_rdms().groupby("subject").mean()
    models = datasets.load_92images_reference_rdms().isel(rdm=[2, 3, 5, 8])  # animacy, categories, EVA, V1
    ds = rsa.bootstrap_rdm_comparison(models, brain, method="tau_a", n_bootstrap=3, over="both", seed=7,
                                      progress=False)
    samples = _resampling._draw(np.random.default_rng(7), 3, 92, 4, "both")
    m_rdms, b_rdms = rsa_rdm.RDMs(models.values), rsa_rdm.RDMs(brain.values)
    for s in range(3):
        idx = np.repeat(np.arange(92), samples.stim[s])
        c = samples.subj[s].astype(float)
        sub_b = b_rdms.subsample_pattern("index", idx)
        sims = rsa_rdm.compare(m_rdms.subsample_pattern("index", idx), sub_b, "tau-a")
        np.testing.assert_allclose(ds.evaluation[:, s], sims @ c / c.sum(), atol=1e-12)
        # noise ceiling: subjects enter c times, leave-one-out drops all copies of one
        keep = np.flatnonzero(c)
        up = rsa_rdm.compare(pool_rdm(sub_b.subsample("index", np.repeat(np.arange(4), samples.subj[s])),
                                      "tau-a"), sub_b, "tau-a")[0]
        lo = [rsa_rdm.compare(pool_rdm(sub_b.subsample("index", np.repeat(np.delete(np.arange(4), i),
                                                                          np.delete(samples.subj[s], i))),
                                       "tau-a"), sub_b[i], "tau-a")[0, 0] for i in keep]
        np.testing.assert_allclose(ds.noise_ceiling_samples[:, s],
                                   [np.mean(lo) if len(keep) > 1 else np.nan, up[keep].mean()], atol=1e-12)


def test_compare_reorders_stimuli_and_accepts_formats():
    x = _activations(n=10, seed=7)
    r1 = rsa.compute_rdm(x)
    r2 = rsa.compute_rdm(x + np.random.default_rng(8).normal(size=x.shape))
    perm = np.random.default_rng(9).permutation(10)
    shuffled = r2.isel(stimulus=perm, stimulus2=perm)
    ref = float(rsa.compare_rdms(r1, r2))
    assert float(rsa.compare_rdms(r1, shuffled)) == pytest.approx(ref, abs=1e-14)
    assert float(rsa.compare_rdms(r1.values, squareform(r2.values, checks=False))) == pytest.approx(ref)
    assert float(rsa.compare_rdms(r1, rsa.to_rsatoolbox(r2))) == pytest.approx(ref)
    both = rsa.compare_rdms({"a": r1, "b": r2}, np.stack([r1.values, r2.values]))
    assert both.dims == ("layer", "rdm") and list(both.layer.values) == ["a", "b"]
    same_dim = rsa.compare_rdms(np.stack([r1.values] * 2), np.stack([r2.values] * 3))
    assert same_dim.dims == ("rdm", "rdm2")


def test_compare_flattens_several_stack_dims():
    v = _vectors(6, 8, 1).reshape(2, 3, -1)
    da = xr.DataArray(v, dims=("subject", "session", "pair"), coords={"subject": ["x", "y"]})
    got = rsa.compare_rdms(_vectors(1, 8, 2)[0], da, method="pearson")
    assert got.dims == ("rdm",) and list(got.subject.values) == ["x"] * 3 + ["y"] * 3
    np.testing.assert_allclose(got.values[4], scipy.stats.pearsonr(_vectors(1, 8, 2)[0], v[1, 1])[0])


def test_compare_errors():
    x = _activations(n=10)
    r = rsa.compute_rdm(x)
    other = r.assign_coords(stimulus=[f"t{i}" for i in range(10)], stimulus2=[f"t{i}" for i in range(10)])
    with pytest.raises(ShapeMismatchError, match="t0"):
        rsa.compare_rdms(r, other)
    with pytest.raises(ShapeMismatchError, match="10 vs 8"):
        rsa.compare_rdms(r, r.isel(stimulus=slice(8), stimulus2=slice(8)))
    asym = r.values.copy()
    asym[0, 1] += 0.5
    with pytest.raises(InvalidDataError, match="symmetric"):
        rsa.compare_rdms(asym, r.values)
    nan = r.values.copy()
    nan[2, 3] = nan[3, 2] = np.nan
    with pytest.raises(InvalidDataError, match="NaN"):
        rsa.compare_rdms(r, nan)
    with pytest.raises(UnknownNameError, match="spearman"):
        rsa.compare_rdms(r, r, method="spearmann")
    with pytest.raises(ShapeMismatchError, match="n\\*\\(n-1\\)/2"):
        rsa.compare_rdms(np.ones(7), np.ones(7))


# ------------------------------------------------------------- noise ceiling, bootstrap
@pytest.mark.parametrize("method", sorted(RSA_METHOD))
def test_noise_ceiling_matches_rsatoolbox(method):
    v = _vectors(5, 14, 11, ties=method == "spearman")
    nc = rsa.noise_ceiling(v, method=method)
    with pytest.warns(UserWarning) if method == "tau_a" else _nullcontext():
        ref = boot_noise_ceiling(rsa_rdm.RDMs(v), RSA_METHOD[method])
    np.testing.assert_allclose(nc.values, ref, atol=1e-12)
    assert list(nc.bound.values) == ["lower", "upper"]


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("method", ["spearman", "tau_a", "rho_a", "pearson", "cosine"])
def test_weighted_bootstrap_sample_equals_rsatoolbox_subsample(method):
    """One resampled data set, done by rsatoolbox explicitly, equals the pair weights."""
    models, data = _vectors(3, 16, 1), _vectors(4, 16, 2)
    idx = np.random.default_rng(5).integers(0, 16, 16)
    cnt = np.bincount(idx, minlength=16).astype(float)
    iu = np.triu_indices(16, 1)
    w = (cnt[iu[0]] * cnt[iu[1]])[None, None, :]
    sample = rsa_rdm.RDMs(data).subsample_pattern("index", idx)
    msample = rsa_rdm.RDMs(models).subsample_pattern("index", idx)
    ref = rsa_rdm.compare(msample, sample, RSA_METHOD[method])
    got = _kernels._compare_batched(models[None], data[None], method, w,
                               (_kernels._orders(models[None], method), _kernels._orders(data[None], method)))
    np.testing.assert_allclose(got[0], ref, atol=1e-12)
    lower, upper = _kernels._noise_ceiling_core(data[None], method, w, None, _kernels._orders(data[None], method))
    with pytest.warns(UserWarning) if method == "tau_a" else _nullcontext():
        nc_ref = boot_noise_ceiling(sample, RSA_METHOD[method])
    np.testing.assert_allclose([lower[0], upper[0]], nc_ref, atol=1e-12)


def test_bootstrap_reproducible_and_structured():
    models = {"l1": _vectors(1, 20, 1)[0], "l2": _vectors(1, 20, 2)[0] * 0.1 + _vectors(1, 20, 3)[0]}
    data = _vectors(4, 20, 1)
    kw = dict(n_bootstrap=200, seed=3, progress=False)
    ds = rsa.bootstrap_rdm_comparison(models, data, **kw)
    ds2 = rsa.bootstrap_rdm_comparison(models, data, **kw)
    xr.testing.assert_identical(ds, ds2)
    ds3 = rsa.bootstrap_rdm_comparison(models, data, **{**kw, "seed": 4})
    assert not np.allclose(ds3.evaluation.values, ds.evaluation.values)
    assert ds.evaluation.dims == ("layer", "sample") and list(ds.layer.values) == ["l1", "l2"]
    assert ds.p_layer_vs_layer.dims == ("layer", "layer2")
    assert ds.attrs["seed"] == 3 and ds.attrs["over"] == "stimuli"
    assert np.all((ds.ci_low <= ds["mean"]) & (ds["mean"] <= ds.ci_high))
    np.testing.assert_allclose(ds.observed, rsa.compare_rdms(models, data).mean("rdm"), atol=1e-12)
    np.testing.assert_allclose(ds.noise_ceiling, rsa.noise_ceiling(data), atol=1e-12)
    # l1 is the signal shared with the data, l2 mostly noise
    assert ds.p_layer_vs_layer.sel(layer="l1", layer2="l2") < 0.01
    assert 0 < ds.p_layer_vs_layer.sel(layer="l1", layer2="l1") <= 1.0
    for over in ("subjects", "both"):
        other = rsa.bootstrap_rdm_comparison(models, data, over=over, **kw)
        assert np.isfinite(other.sd).all()
        assert other.attrs["over"] == over


def test_bootstrap_distribution_like_rsatoolbox(recwarn):
    """rsatoolbox uses its own RNG: compare mean and SD loosely."""
    from rsatoolbox.inference import eval_bootstrap_pattern
    from rsatoolbox.model import ModelFixed

    models, data = _vectors(2, 24, 1), _vectors(4, 24, 1)
    ds = rsa.bootstrap_rdm_comparison(models, data, n_bootstrap=400, progress=False)
    np.random.seed(0)
    res = eval_bootstrap_pattern([ModelFixed(f"m{i}", rsa_rdm.RDMs(m[None])) for i, m in enumerate(models)],
                                 rsa_rdm.RDMs(data), method="spearman", N=400)
    ref = res.evaluations
    ref = ref[np.isfinite(ref[:, 0])]
    np.testing.assert_allclose(ds["mean"], ref.mean(0), atol=0.02)
    np.testing.assert_allclose(ds["sd"], ref.std(0, ddof=1), rtol=0.25)
    np.testing.assert_allclose(ds.noise_ceiling_mean, np.nanmean(res.noise_ceiling, 1), atol=0.02)


def test_bootstrap_errors():
    data = _vectors(3, 10, 1)
    with pytest.raises(UnknownNameError, match="subjects"):
        rsa.bootstrap_rdm_comparison(data[:1], data, over="subject", progress=False)
    with pytest.raises(InvalidDataError, match="over='subjects'"):
        rsa.bootstrap_rdm_comparison(data[:1], data, method="corr_cov", progress=False)
    with pytest.raises(ShapeMismatchError, match="2 subjects"):
        rsa.bootstrap_rdm_comparison(data[:1], data[:1], progress=False)
    with pytest.raises(InvalidDataError, match="n_bootstrap"):
        rsa.bootstrap_rdm_comparison(data[:1], data, n_bootstrap=0)
    with pytest.raises(InvalidDataError, match="ci"):
        rsa.bootstrap_rdm_comparison(data[:1], data, ci=1.5)
    ds = rsa.bootstrap_rdm_comparison(data[:1], data, method="corr_cov", over="subjects", n_bootstrap=20,
                                      progress=False)
    assert np.isfinite(ds.observed).all()


def test_bootstrap_result_netcdf_round_trip(tmp_path):
    ds = rsa.bootstrap_rdm_comparison(_vectors(2, 10, 1), _vectors(3, 10, 2), n_bootstrap=30,
                                      progress=False)
    ds.to_netcdf(tmp_path / "b.nc", engine="h5netcdf")
    back = xr.load_dataset(tmp_path / "b.nc", engine="h5netcdf")
    xr.testing.assert_allclose(back, ds)
    assert back.attrs == ds.attrs


# ------------------------------------------------------------------ loaders, interop
def test_92images_brain_rdms_and_noise_ceiling_vs_rsatoolbox():
    brain = datasets.load_92images_brain_rdms()
    assert brain.dims == ("rdm", "stimulus", "stimulus2") and brain.shape == (8, 92, 92)
    assert brain.stimulus.values[0] == "92img_000" and brain.stimulus.values[-1] == "92img_091"
    assert list(brain.session.values) == [1, 2] * 4
    assert len(set(brain.subject.values)) == 4
    raw = scipy.io.loadmat(datasets.fetch("data/92images/92_brainRDMs.mat"), squeeze_me=True,
                           struct_as_record=False)["RDMs"]
    np.testing.assert_array_equal(brain.values[3], raw[1, 1].RDM)
    for method in ("spearman", "pearson"):
        nc = rsa.noise_ceiling(brain, method=method)
        ref = boot_noise_ceiling(rsa_rdm.RDMs(brain.values), RSA_METHOD[method])
        np.testing.assert_allclose(nc.values, ref, atol=1e-12)
    per_subject = brain.groupby("subject").mean()
    assert rsa.noise_ceiling(per_subject).attrs["n_subjects"] == 4


def test_92images_reference_rdms():
    ref = datasets.load_92images_reference_rdms()
    assert ref.shape == (10, 92, 92)
    assert list(ref.source.values) == ["brain"] * 2 + ["model"] * 8
    assert ref.rdm.values[0].startswith("mIT") and "animacy" in ref.rdm.values
    # the monkey-IT model RDM correlates with the recorded monkey IT RDM
    assert float(rsa.compare_rdms(ref.isel(rdm=0), ref.sel(rdm="monkeyIT"))) > 0.3


def test_load_rdms_formats(tmp_path):
    stack = rsa.compute_rdm({"a": _activations(seed=1), "b": _activations(seed=2)}).values
    np.save(tmp_path / "r.npy", stack)
    np.savez(tmp_path / "r.npz", rdms=stack, other=np.arange(3))
    scipy.io.savemat(tmp_path / "r.mat", {"rdms": stack})
    for name in ("r.npy", "r.npz", "r.mat"):
        got = rsa.load_rdms(tmp_path / name, stimulus_ids=[f"s{i:02d}" for i in range(12)])
        np.testing.assert_allclose(got.values, stack)
        assert got.dims == ("rdm", "stimulus", "stimulus2")
    np.save(tmp_path / "one.npy", stack[0])
    assert rsa.load_rdms(tmp_path / "one.npy").shape == (1, 12, 12)
    with pytest.raises(MissingFileError):
        rsa.load_rdms(tmp_path / "nope.npy")
    np.savez(tmp_path / "two.npz", a=stack, b=stack)
    with pytest.raises(ShapeMismatchError, match="variable"):
        rsa.load_rdms(tmp_path / "two.npz")
    assert rsa.load_rdms(tmp_path / "two.npz", variable="b").shape == (2, 12, 12)
    asym = stack.copy()
    asym[0, 0, 1] = 7.0
    np.save(tmp_path / "asym.npy", asym)
    with pytest.raises(InvalidDataError, match="symmetric"):
        rsa.load_rdms(tmp_path / "asym.npy")
    np.save(tmp_path / "rect.npy", np.ones((3, 4)))
    with pytest.raises(ShapeMismatchError):
        rsa.load_rdms(tmp_path / "rect.npy")
    with pytest.raises(ShapeMismatchError, match="ids"):
        rsa.load_rdms(tmp_path / "r.npy", stimulus_ids=["x"])


def test_rsatoolbox_round_trip():
    stacked = rsa.compute_rdm({"conv1": _activations(seed=1), "fc": _activations(seed=2)})
    rs = rsa.to_rsatoolbox(stacked)
    assert rs.n_rdm == 2 and rs.dissimilarity_measure == "correlation"
    assert list(rs.pattern_descriptors["stimulus"]) == list(stacked.stimulus.values)
    assert list(rs.rdm_descriptors["layer"]) == ["conv1", "fc"]
    assert rs.descriptors["model"] == "tiny"
    back = rsa.from_rsatoolbox(rs)
    xr.testing.assert_allclose(back, stacked)
    assert back.attrs["model"] == "tiny" and list(back.category.values) == list(stacked.category.values)
    single = rsa.compute_rdm(_activations())
    back1 = rsa.from_rsatoolbox(rsa.to_rsatoolbox(single))
    assert back1.dims == ("stimulus", "stimulus2")
    np.testing.assert_allclose(back1.values, single.values, atol=1e-15)
    plain = rsa.from_rsatoolbox(rsa_rdm.RDMs(_vectors(3, 6, 0)))
    assert plain.dims == ("rdm", "stimulus", "stimulus2") and plain.stimulus.values[0] == "0"


@pytest.mark.filterwarnings("ignore:Couldn't detect a suitable IP address")
def test_bootstrap_on_dask_equals_local():
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(5)
    models, brains = rng.random((3, 190)), rng.random((4, 190))
    local = rsa.bootstrap_rdm_comparison(models, brains, n_bootstrap=300, over="both", seed=2, progress=False)
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
        remote = rsa.bootstrap_rdm_comparison(models, brains, n_bootstrap=300, over="both", seed=2,
                                              progress=False, client=client)
    np.testing.assert_array_equal(remote["evaluation"].values, local["evaluation"].values)
    np.testing.assert_array_equal(remote["noise_ceiling_samples"].values, local["noise_ceiling_samples"].values)


def test_the_0_1_module_name_still_imports_with_a_deprecation_warning():
    import importlib
    import sys

    sys.modules.pop("neurocnn.rdm", None)
    with pytest.warns(DeprecationWarning, match="neurocnn.rsa"):
        old = importlib.import_module("neurocnn.rdm")
    assert old.compare_rdms is rsa.compare_rdms
    assert old.load_92images_brain_rdms is datasets.load_92images_brain_rdms
