"""Encoding models and CKA: sklearn oracle, hand formulas, planted ground truth, bad inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import xarray as xr
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV
from sklearn.random_projection import SparseRandomProjection

from neurocnn import encoding
from neurocnn.exceptions import InvalidDataError, ShapeMismatchError, UnknownNameError

ALPHAS = np.logspace(-2, 4, 7)


def _ids(n):
    return [f"s{i:03d}" for i in range(n)]


def _data(n=60, p=40, t=3, seed=0, offset=3.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    Y = X @ rng.standard_normal((p, t)) / np.sqrt(p) + rng.standard_normal((n, t)) + offset
    feat = xr.DataArray(X, dims=("stimulus", "unit"), coords={"stimulus": _ids(n)})
    resp = xr.DataArray(Y, dims=("stimulus", "voxel"), coords={"stimulus": _ids(n)})
    return X, Y, feat, resp


def _sklearn_predictions(X, Y, splits, transform=None):
    pred = np.zeros_like(Y)
    for train, test, inner in splits:
        Xtr, Xte = X[train], X[test]
        if transform is not None:
            Xtr, Xte = transform(Xtr, Xte)
        for t in range(Y.shape[1]):
            model = RidgeCV(alphas=ALPHAS, cv=list(inner), scoring="neg_mean_squared_error").fit(Xtr, Y[train, t])
            pred[test, t] = model.predict(Xte)
    return pred


@pytest.mark.parametrize("p", [20, 150])
def test_predictions_equal_sklearn_ridgecv(p):
    X, Y, feat, resp = _data(p=p)
    result = encoding.fit_encoding({"a": feat}, resp, alphas=ALPHAS, keep_predictions=True, seed=4, progress=False)
    expected = _sklearn_predictions(X, Y, encoding.encoding_splits(len(X), seed=4))
    np.testing.assert_allclose(result.prediction.sel(layer="a").values, expected, rtol=1e-7, atol=1e-8)
    r2 = 1 - ((Y - expected) ** 2).sum(0) / ((Y - Y.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(result.r2.sel(layer="a").values, r2, atol=1e-8)
    r = [np.corrcoef(Y[:, t], expected[:, t])[0, 1] for t in range(Y.shape[1])]
    np.testing.assert_allclose(result.correlation.sel(layer="a").values, r, atol=1e-8)


def test_grouped_folds_equal_sklearn_and_never_split_a_run():
    X, Y, feat, resp = _data(n=60)
    runs = np.repeat(np.arange(6), 10)
    resp = resp.assign_coords(run=("stimulus", runs))
    result = encoding.fit_encoding(feat, resp, alphas=ALPHAS, n_folds=3, n_inner_folds=2, keep_predictions=True,
                                   progress=False)
    assert result.attrs["grouped_by"] == "run"
    splits = encoding.encoding_splits(60, n_folds=3, n_inner_folds=2, groups=runs)
    for train, test, inner in splits:
        assert not set(runs[train]) & set(runs[test])
        for a, b in inner:
            assert not set(runs[train][a]) & set(runs[train][b])
    np.testing.assert_allclose(result.prediction[0].values, _sklearn_predictions(X, Y, splits), rtol=1e-7, atol=1e-8)


def test_train_fold_pca_equals_sklearn_pca_fitted_on_training_stimuli():
    X, Y, feat, resp = _data(p=80)

    def pca(Xtr, Xte):
        model = PCA(n_components=8, svd_solver="full").fit(Xtr)
        return model.transform(Xtr), model.transform(Xte)

    result = encoding.fit_encoding(feat, resp, alphas=ALPHAS, reduce="pca", n_components=8, keep_predictions=True,
                                   progress=False)
    expected = _sklearn_predictions(X, Y, encoding.encoding_splits(60), transform=pca)
    np.testing.assert_allclose(result.prediction[0].values, expected, rtol=1e-6, atol=1e-7)


def test_sparse_random_projection_equals_sklearn_and_streams_dask():
    da = pytest.importorskip("dask.array")
    X, Y, feat, resp = _data(p=300)
    srp = SparseRandomProjection(n_components=30, random_state=7).fit(X)
    Z = srp.transform(X)
    lazy = feat.copy(data=da.from_array(X, chunks=(7, 300)))
    result = encoding.fit_encoding(lazy, resp, alphas=ALPHAS, reduce="srp", n_components=30, seed=7,
                                   keep_predictions=True, block_bytes=4000, progress=False)
    expected = _sklearn_predictions(Z, Y, encoding.encoding_splits(60, seed=7))
    np.testing.assert_allclose(result.prediction[0].values, expected, rtol=1e-6, atol=1e-7)


def test_lazy_features_in_small_blocks_equal_in_memory():
    da = pytest.importorskip("dask.array")
    X, _, feat, resp = _data(p=90)
    eager = encoding.fit_encoding(feat, resp, alphas=ALPHAS, progress=False)
    lazy = encoding.fit_encoding(feat.copy(data=da.from_array(X, chunks=(8, 90))), resp, alphas=ALPHAS,
                                 block_bytes=3000, progress=False)
    np.testing.assert_allclose(lazy.r2.values, eager.r2.values, atol=1e-10)


def test_big_lazy_layer_is_never_materialized():
    import tracemalloc

    da = pytest.importorskip("dask.array")
    n, p = 100, 200_000  # float64 whole: 160 MB; blocks of 5 rows: 8 MB
    X = da.random.RandomState(0).standard_normal((n, p), chunks=(5, p)).astype(np.float32)
    Y = np.random.default_rng(0).standard_normal((n, 3))
    tracemalloc.start()
    try:
        result = encoding.fit_encoding(X, Y, reduce="srp", n_components=64, block_bytes=2**23, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.attrs["reduce"] == "srp" and result.attrs["kernel_bytes"] == n * n * 8
    assert peak < 0.3 * n * p * 8  # a few blocks, whatever the number of stimuli


def test_torch_backend_equals_numpy():
    pytest.importorskip("torch")
    _, _, feat, resp = _data()
    a = encoding.fit_encoding(feat, resp, alphas=ALPHAS, progress=False)
    b = encoding.fit_encoding(feat, resp, alphas=ALPHAS, backend="torch", progress=False)
    assert b.attrs["backend"] == "torch"
    np.testing.assert_allclose(a.r2.values, b.r2.values, atol=1e-6)


@pytest.mark.gpu
def test_torch_cuda_backend_equals_numpy():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _, _, feat, resp = _data()
    a = encoding.fit_encoding(feat, resp, alphas=ALPHAS, progress=False)
    b = encoding.fit_encoding(feat, resp, alphas=ALPHAS, device="cuda", progress=False)
    assert b.attrs["backend"] == "torch_cuda"
    np.testing.assert_allclose(a.r2.values, b.r2.values, atol=1e-5)


def _planted_layers(n=80, seed=0, snr=4.0):
    rng = np.random.default_rng(seed)
    layers = {name: rng.standard_normal((n, 30)) for name in ("early", "middle", "late")}
    signal = layers["middle"] @ rng.standard_normal((30, 12))
    signal /= signal.std(0)
    reps = signal[:, None, :] + rng.standard_normal((n, 4, 12)) * np.sqrt(4 / snr)
    feats = {k: xr.DataArray(v, dims=("stimulus", "unit"), coords={"stimulus": _ids(n)}) for k, v in layers.items()}
    resp = xr.DataArray(reps, dims=("stimulus", "repeat", "neuron"), coords={"stimulus": _ids(n)})
    return feats, resp, signal


def test_planted_synthetic_layer_wins_ceiling_permutations_and_banded(tmp_path):
    feats, resp, _ = _planted_layers()
    result = encoding.fit_encoding(feats, resp, banded=True, n_iter=20, n_permutations=99, progress=False)
    assert (result.best_layer == "middle").all()
    assert (result.banded_best_layer == "middle").all()
    assert (result.banded_weight.sel(layer="middle") > 0.5).mean() > 0.8
    assert float(result.p_fwe.sel(layer="middle").max()) <= 0.02
    assert (result.p_fwe >= result.p_value - 1e-12).all()
    assert abs(float(result.noise_ceiling.mean()) - 0.8) < 0.1  # snr / (1 + snr)
    assert 0.6 < float(result.r2_normalized.sel(layer="middle").mean()) < 1.1
    np.testing.assert_allclose(result.r2_normalized.values, result.r2.values / result.noise_ceiling.values)
    result.to_netcdf(tmp_path / "r.nc")
    back = xr.open_dataset(tmp_path / "r.nc")
    xr.testing.assert_allclose(back.load(), result)


def test_shuffled_responses_score_zero():
    feats, resp, _ = _planted_layers(snr=2.0)
    shuffled = resp.copy(data=np.random.default_rng(3).permutation(resp.values, axis=0))
    result = encoding.fit_encoding(feats, shuffled, n_permutations=99, progress=False)
    assert abs(float(result.r2.mean())) < 0.08
    assert float(result.r2.max()) < 0.15
    assert float((result.p_fwe < 0.05).mean()) < 0.1


def test_user_given_ceiling_and_roi_summary():
    _, _, feat, resp = _data(t=6)
    resp = resp.assign_coords(roi=("voxel", ["V1", "V1", "IT", "IT", "IT", "V4"]))
    ceiling = np.linspace(0.3, 0.8, 6)
    result = encoding.fit_encoding({"a": feat, "b": feat * 2.0}, resp, noise_ceiling=ceiling, progress=False)
    np.testing.assert_allclose(result.r2_normalized.values, result.r2.values / ceiling)
    np.testing.assert_allclose(result.correlation_normalized.values, result.correlation.values / np.sqrt(ceiling))
    table = encoding.roi_summary(result, "roi")
    assert table.dims == ("layer", "roi") and list(table.roi.values) == ["V1", "IT", "V4"]
    np.testing.assert_allclose(table.sel(layer="a", roi="IT"), result.r2_normalized.sel(layer="a")[2:5].mean())
    by_mask = encoding.roi_summary(result, {"front": [0, 1]}, var="r2", statistic="median")
    np.testing.assert_allclose(by_mask.sel(roi="front"), np.median(result.r2.values[:, :2], axis=1))
    fig = encoding.plot_layer_roi(table)
    assert len(fig.axes) == 2


def test_split_half_reliability_recovers_known_reliability():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((400, 1, 3))
    reps = signal + rng.standard_normal((400, 6, 3)) * np.sqrt(6 / np.array([0.5, 1.0, 4.0]))
    rel = encoding.split_half_reliability(reps, n_splits=20)
    np.testing.assert_allclose(rel, [1 / 3, 1 / 2, 4 / 5], atol=0.06)


def test_realigned_stimulus_order_gives_same_result():
    _, _, feat, resp = _data()
    order = np.random.default_rng(1).permutation(60)
    a = encoding.fit_encoding(feat, resp, alphas=ALPHAS, progress=False)
    b = encoding.fit_encoding(feat, resp.isel(stimulus=order), alphas=ALPHAS, progress=False)
    np.testing.assert_allclose(a.r2.values, b.r2.values, atol=1e-10)
    assert list(b.stimulus.values) == _ids(60)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda f, r: (f, r.assign_coords(stimulus=["x" + s for s in r.stimulus.values])), ShapeMismatchError, "not among"),
        (lambda f, r: (f, r.where(r.voxel != 2)), InvalidDataError, "NaN"),
        (lambda f, r: (f, r.where(r.voxel != 1, 5.0)), InvalidDataError, "constant"),
        (lambda f, r: (f.isel(stimulus=slice(0, 12)), r.isel(stimulus=slice(0, 12))), InvalidDataError, "per fold"),
        (lambda f, r: (f.drop_vars("stimulus").isel(stimulus=slice(1, None)), r), ShapeMismatchError, "no stimulus ids"),
        (lambda f, r: (f, r.expand_dims(sensor=2).transpose("stimulus", ...)), ShapeMismatchError, "one target dim"),
        (lambda f, r: (f, r.assign_coords(run=("stimulus", np.arange(60) % 3))), InvalidDataError, "groups"),
        (lambda f, r: (f, xr.concat([r, r.isel(stimulus=[0])], "stimulus")), ShapeMismatchError, "more than once"),
    ],
)
def test_bad_inputs_raise_clear_errors(change, error, match):
    _, _, feat, resp = _data()
    feat, resp = change(feat, resp)
    with pytest.raises(error, match=match):
        encoding.fit_encoding(feat, resp, progress=False)


def test_bad_options_raise():
    _, _, feat, resp = _data()
    with pytest.raises(UnknownNameError, match="Did you mean 'pca'"):
        encoding.fit_encoding(feat, resp, reduce="pcaa", n_components=3, progress=False)
    with pytest.raises(InvalidDataError, match="alphas"):
        encoding.fit_encoding(feat, resp, alphas=[1.0, -1.0], progress=False)
    with pytest.raises(InvalidDataError, match="repeated"):
        encoding.fit_encoding(feat, resp, noise_ceiling="split_half", progress=False)
    with pytest.raises(InvalidDataError, match="one finite"):
        encoding.fit_encoding(feat, resp, noise_ceiling=np.ones(4), progress=False)
    with pytest.raises(UnknownNameError):
        encoding.fit_encoding(feat, resp, backend="jax", progress=False)


def test_nifti_round_trip_and_map(tmp_path):
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(0)
    n = 40
    mask = np.zeros((4, 4, 3), dtype=np.uint8)
    mask[1:3, 1:4, :2] = 1
    X = rng.standard_normal((n, 10))
    vols = rng.standard_normal((4, 4, 3, n)) + 1.0
    inside = np.argwhere(mask)
    for v, (i, j, k) in enumerate(inside):
        vols[i, j, k] += X @ rng.standard_normal(10)
    img, mask_img = nib.Nifti1Image(vols, np.eye(4)), nib.Nifti1Image(mask, np.eye(4))
    resp = encoding.responses_from_nifti(img, mask_img, stimulus_ids=_ids(n), runs=np.arange(n) % 5)
    assert resp.dims == ("stimulus", "voxel") and resp.sizes["voxel"] == mask.sum()
    feat = xr.DataArray(X, dims=("stimulus", "unit"), coords={"stimulus": _ids(n)})
    result = encoding.fit_encoding(feat, resp, n_inner_folds=4, progress=False)
    assert result.attrs["grouped_by"] == "run"
    back = encoding.to_nifti(result, mask_img, var="r2")
    data = np.asarray(back.get_fdata())
    np.testing.assert_allclose(data[tuple(inside.T)], result.r2[0].values)
    assert float(result.r2.mean()) > 0.3
    direct = encoding.fit_encoding(feat, img, mask=mask_img, progress=False)  # volumes in the features' order
    assert direct.sizes["voxel"] == mask.sum() and float(direct.r2.mean()) > 0.3
    fig = encoding.plot_encoding_map(result, mask_img, var="r2")
    assert fig.axes
    with pytest.raises(UnknownNameError):
        encoding.to_nifti(result, mask_img, var="fold_of_stimulus")


# ---------------------------------------------------------------- CKA


def _hand_linear_cka(X, Y):
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    return np.linalg.norm(Yc.T @ Xc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))


def _hsic_u_statistic(K, L):
    """Song et al. (2012): HSIC as a U-statistic over ordered 4-tuples of distinct stimuli."""
    n = len(K)
    total = 0.0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2 * K[i, j] * L[i, q]
    return total / (n * (n - 1) * (n - 2) * (n - 3))


def _rbf(X, sigma):
    d2 = ((X[:, None] - X[None]) ** 2).sum(-1)
    med = np.median(np.sqrt(d2[~np.eye(len(X), dtype=bool)]))
    return np.exp(-d2 / (2 * (sigma * med) ** 2))


def test_linear_cka_equals_hand_formula_and_is_one_for_identical():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((30, 12)), rng.standard_normal((30, 7))
    Y[:, :3] += X[:, :3]
    assert encoding.cka(X, Y) == pytest.approx(_hand_linear_cka(X, Y), rel=1e-10)
    assert encoding.cka(X, X) == pytest.approx(1.0, rel=1e-12)
    assert encoding.cka(X, X, debiased=True) == pytest.approx(1.0, rel=1e-12)
    assert encoding.cka(X, X, kernel="rbf") == pytest.approx(1.0, rel=1e-12)


def test_debiased_cka_equals_u_statistic():
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((7, 4)), rng.standard_normal((7, 3))
    Y[:, 0] += X[:, 0]
    for kernel, make in (("linear", lambda A: A @ A.T), ("rbf", lambda A: _rbf(A, 0.8))):
        K, L = make(X), make(Y)
        expected = _hsic_u_statistic(K, L) / np.sqrt(_hsic_u_statistic(K, K) * _hsic_u_statistic(L, L))
        got = encoding.cka(X, Y, kernel=kernel, debiased=True, sigma=0.8)
        assert got == pytest.approx(expected, rel=1e-9)


def test_rbf_cka_equals_hand_formula():
    rng = np.random.default_rng(2)
    X, Y = rng.standard_normal((20, 5)), rng.standard_normal((20, 6))
    H = np.eye(20) - 1 / 20
    K, L = H @ _rbf(X, 0.5) @ H, H @ _rbf(Y, 0.5) @ H
    expected = (K * L).sum() / np.sqrt((K * K).sum() * (L * L).sum())
    assert encoding.cka(X, Y, kernel="rbf", sigma=0.5) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True])
def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling(kernel, debiased):
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((25, 10)), rng.standard_normal((25, 10))
    Y += 0.7 * X
    Q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    base = encoding.cka(X, Y, kernel=kernel, debiased=debiased)
    assert encoding.cka(X @ Q * 3.7, Y, kernel=kernel, debiased=debiased) == pytest.approx(base, rel=1e-9)
    assert encoding.cka(X, 0.01 * Y @ Q.T, kernel=kernel, debiased=debiased) == pytest.approx(base, rel=1e-9)
    assert 0 < base < 1


def test_cka_matrices_layer_by_layer_and_by_roi(tmp_path):
    rng = np.random.default_rng(4)
    acts = {f"l{i}": xr.DataArray(rng.standard_normal((20, 3, 2, 2)), dims=("stimulus", "channel", "y", "x"),
                                  coords={"stimulus": _ids(20)}) for i in range(3)}
    matrix = encoding.cka_matrix(acts, debiased=True, progress=False)
    assert matrix.dims == ("layer", "layer_b") and matrix.shape == (3, 3)
    np.testing.assert_allclose(matrix.values, matrix.values.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(matrix.values), 1.0)
    flat = acts["l1"].values.reshape(20, -1)
    assert float(matrix.sel(layer="l0", layer_b="l1")) == pytest.approx(
        encoding.cka(acts["l0"].values.reshape(20, -1), flat, debiased=True))
    rois = {"V1": xr.DataArray(flat[:, :5], dims=("stimulus", "voxel"), coords={"stimulus": _ids(20)})}
    table = encoding.cka_matrix(acts, rois, progress=False)
    assert table.dims == ("layer", "roi")
    assert float(table.sel(layer="l1", roi="V1")) == pytest.approx(_hand_linear_cka(flat, flat[:, :5]))
    table.to_netcdf(tmp_path / "cka.nc")
    with pytest.raises(ShapeMismatchError, match="same stimuli"):
        encoding.cka_matrix(acts, {"V1": flat[:10]}, progress=False)
    with pytest.raises(UnknownNameError):
        encoding.cka(flat, flat, kernel="poly")


# ---------------------------------------------------------------- the real network


@pytest.mark.slow
def test_planted_layer_of_pretrained_lite0_wins_at_theoretical_r2(lite0):
    layers = ["stage3", "stage4", "stage5"]
    acts = lite0.activations("92images", layers, progress=False)
    sim = encoding.plant_responses(acts["stage4"], n_targets=40, n_components=3, snr=3.0, seed=1)
    result = encoding.fit_encoding(acts, sim.response, seed=0, progress=False)
    theory = encoding.expected_ridge_r2(acts["stage4"], sim.basis.values, snr=3.0,
                                        splits=encoding.encoding_splits(92, seed=0))
    r2 = result.r2.mean("voxel")
    assert str(r2.idxmax().item()) == "stage4"
    assert float((result.best_layer == "stage4").mean()) > 0.7
    assert theory - 0.06 < float(r2.sel(layer="stage4")) < theory + 0.02
    assert abs(float(result.noise_ceiling.mean()) - 0.75) < 0.05
    assert result.attrs["model"] == "efficientnet_lite0"
    shuffled = sim.response.copy(data=np.random.default_rng(2).permutation(sim.response.values, axis=0))
    null = encoding.fit_encoding(acts, shuffled, seed=0, n_permutations=99, progress=False)
    assert abs(float(null.r2.mean())) < 0.06
    assert float((null.p_fwe < 0.05).mean()) < 0.1


def test_cli_encode_refuses_nifti_without_mask(tmp_path, capsys):
    from neurocnn.cli import main

    code = main(["encode", "--stimuli", "92images", "--responses", str(tmp_path / "betas.nii.gz"), "--out", str(tmp_path / "e")])
    assert code == 2 and "--mask" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_encode(tmp_path, capsys):
    from PIL import Image

    from neurocnn.cli import main

    rng = np.random.default_rng(0)
    folder = tmp_path / "stimuli"
    folder.mkdir()
    for i in range(20):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"img{i:02d}.png")
    ids = [f"img{i:02d}" for i in range(20)][::-1]  # another order: realigned by id
    resp = xr.DataArray(rng.standard_normal((20, 2, 4)), dims=("stimulus", "repeat", "voxel"),
                        coords={"stimulus": ids, "roi": ("voxel", ["a", "a", "b", "b"])}, name="betas")
    resp.to_netcdf(tmp_path / "resp.nc")
    args = ["encode", "--stimuli", str(folder), "--responses", str(tmp_path / "resp.nc"), "--layers", "stem",
            "stage1", "--rois", "roi", "--out", str(tmp_path / "enc"), "--no-progress"]
    assert main(args) == 0
    result = xr.open_dataset(tmp_path / "enc.nc")
    assert list(result.layer.values) == ["stem", "stage1"] and result.sizes["voxel"] == 4
    assert (tmp_path / "enc.png").stat().st_size > 0
    assert "r2_normalized" in capsys.readouterr().out
    assert main(args) == 2  # outputs exist and --overwrite was not given
