"""Cluster-level inference: TFCE and cluster measures equal nilearn's, group tests agree with
nilearn's permuted_ols, null family-wise error rates, planted clusters and onsets found."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
import scipy.stats
import xarray as xr
from scipy.ndimage import gaussian_filter, generate_binary_structure

import neurocnn as nc
from neurocnn import clusters as cl
from neurocnn import searchlight as sl
from neurocnn.exceptions import InvalidDataError, ShapeMismatchError, UnknownNameError

AFF = np.diag([2.0, 2.0, 2.0, 1.0])


def _group_maps(seed, shape=(9, 9, 6), S=10, effect=0.0, blob=(slice(3, 6), slice(3, 6), slice(2, 4)),
                smooth=1.0):
    rng = np.random.default_rng(seed)
    X = gaussian_filter(rng.standard_normal((S,) + shape), (0, smooth, smooth, smooth)) * 3
    X[(slice(None),) + blob] += effect
    return X


def _imgs(X, aff=AFF):
    return [nib.Nifti1Image(x.astype(np.float64), aff) for x in X]


# ----------------------------------------------------------------- kernels vs nilearn
@pytest.mark.parametrize("alternative", ["greater", "two-sided"])
@pytest.mark.parametrize("dh", ["auto", 0.07])
def test_tfce_equals_nilearn(alternative, dh):
    from nilearn.mass_univariate._utils import calculate_tfce  # the oracle (nilearn's own kernel)

    x = _group_maps(0, S=1)[0] * 2
    two = alternative == "two-sided"
    ref = calculate_tfce(x[..., None].copy(), generate_binary_structure(3, 1), dh=dh, two_sided_test=two)[..., 0]
    got = cl.tfce(x, alternative=alternative, dh=dh)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-9)
    assert np.abs(ref).max() > 1


def test_tfce_by_hand_1d():
    # 10 steps h = 0.1 .. 1.0, one cluster of 2 points at each: sum sqrt(2) h^2
    expected = np.sqrt(2) * sum((0.1 * k) ** 2 for k in range(1, 11))
    np.testing.assert_allclose(cl.tfce(np.array([0.0, 1.0, 1.0, 0.0]), dh=0.1), [0, expected, expected, 0])


@pytest.mark.parametrize("two_sided", [False, True])
def test_cluster_measures_equal_nilearn(two_sided):
    from nilearn.mass_univariate._utils import calculate_cluster_measures

    from neurocnn._clusters import _clusters, _max_per_map, _stack_structure

    y = _group_maps(3, S=6)
    struct = generate_binary_structure(3, 1)
    ref_size, ref_mass = calculate_cluster_measures(np.moveaxis(y, 0, -1).copy(), 1.0, struct, two_sided)
    _, size, mass, _, owner = _clusters(y, 1.0, _stack_structure(struct), two_sided)
    np.testing.assert_array_equal(_max_per_map(size, owner, 6), ref_size)
    np.testing.assert_allclose(_max_per_map(mass, owner, 6), ref_mass, rtol=1e-12)


def _nilearn_group(X, mimg, n):
    from nilearn.maskers import NiftiMasker
    from nilearn.mass_univariate import permuted_ols

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masker = NiftiMasker(mimg).fit()
        Y = masker.transform(_imgs(X))
        return permuted_ols(np.ones((len(X), 1)), Y, model_intercept=False, n_perm=n, two_sided_test=False,
                            masker=masker, tfce=True, threshold=0.01, random_state=0, output_type="dict")


def _mask_img(shape):
    mask = np.ones(shape, bool)
    mask[0] = False
    return nib.Nifti1Image(mask.astype(np.uint8), AFF)


def test_group_statistics_equal_nilearn_permuted_ols():
    X = _group_maps(1, effect=0.8)
    mimg = _mask_img(X.shape[1:])
    res = cl.group_searchlight_test(_imgs(X), mimg, n_permutations=20, cluster_p=0.01, progress=False,
                                    corrections=cl.CORRECTIONS)
    ref = _nilearn_group(X, mimg, 2)
    np.testing.assert_allclose(res["statistic"].values[0], ref["t"][0], rtol=1e-10)
    np.testing.assert_allclose(res["tfce"].values[0], ref["tfce"][0], rtol=1e-10)
    # the observed clusters are the same (nilearn's size/mass maps hold each voxel's cluster's value)
    lab = res["cluster_id"].values[0]
    mass = np.concatenate([[0.0], res["cluster_mass"].values])[lab]
    size = np.concatenate([[0.0], res["cluster_size"].values])[lab]
    np.testing.assert_allclose(mass, ref["mass"][0], rtol=1e-10)
    np.testing.assert_array_equal(size, ref["size"][0])
    assert res["cluster_size"].max() > 5


@pytest.mark.slow
def test_group_p_values_agree_with_nilearn_permuted_ols():
    X = _group_maps(1, effect=0.8)
    mimg = _mask_img(X.shape[1:])
    n = 400
    res = cl.group_searchlight_test(_imgs(X), mimg, n_permutations=n, cluster_p=0.01, progress=False,
                                    corrections=cl.CORRECTIONS)
    ref = _nilearn_group(X, mimg, n)
    # different random flips: equal within Monte Carlo error
    for ours, theirs in [("p_fwe", "logp_max_t"), ("p_fwe_tfce", "logp_max_tfce"),
                         ("p_fwe_cluster_mass", "logp_max_mass"), ("p_fwe_cluster_size", "logp_max_size")]:
        diff = np.abs(res[ours].values[0] - 10 ** -ref[theirs][0])
        assert diff.max() < 0.08, (ours, diff.max())
    for ours, theirs in [("voxel", "h0_max_t"), ("tfce", "h0_max_tfce"), ("cluster_mass", "h0_max_mass")]:
        q = [0.5, 0.95]
        a = np.quantile(res[f"null_max_{ours}"].values[0], q)
        b = np.quantile(ref[theirs][0], q)
        np.testing.assert_allclose(a, b, rtol=0.15, err_msg=ours)


# ----------------------------------------------------------------- error rates and power
def _reject_rates(sims):
    return {k: np.mean([s[k] for s in sims]) for k in sims[0]}


@pytest.mark.slow
def test_null_fwe_rate_over_time_within_binomial_ci():
    n_sims, rejected = 200, []
    for seed in range(n_sims):
        x = gaussian_filter(np.random.default_rng(seed).standard_normal((10, 40)), (0, 1.5))
        r = cl.time_cluster_test(x, n_permutations=100, seed=seed, progress=False)
        rejected.append({c: bool((r[v].values < 0.05).any()) for c, v in
                         [("voxel", "p_fwe"), ("cluster_mass", "p_fwe_cluster_mass"), ("tfce", "p_fwe_tfce")]})
    lo, hi = scipy.stats.binom.interval(0.99, n_sims, 0.05)
    for c, rate in _reject_rates(rejected).items():
        assert lo / n_sims <= rate <= hi / n_sims, (c, rate)


@pytest.mark.slow
def test_null_fwe_rate_volume_within_binomial_ci():
    n_sims, rejected = 100, []
    for seed in range(n_sims):
        X = _group_maps(seed + 100, shape=(6, 6, 4), S=8)
        r = cl.group_searchlight_test(_imgs(X), np.ones((6, 6, 4), bool), n_permutations=100, seed=seed,
                                      cluster_p=0.05, progress=False)
        rejected.append({c: bool((r[v].values < 0.05).any()) for c, v in
                         [("voxel", "p_fwe"), ("cluster_mass", "p_fwe_cluster_mass"), ("tfce", "p_fwe_tfce")]})
    lo, hi = scipy.stats.binom.interval(0.99, n_sims, 0.05)
    for c, rate in _reject_rates(rejected).items():
        assert lo / n_sims <= rate <= hi / n_sims, (c, rate)


def test_planted_cluster_detected_and_tabled():
    X = _group_maps(5, effect=0.9)
    # MNI-like affine: voxel (4, 4, 2) at (-40, -60, -10) mm (ventral occipitotemporal)
    aff = AFF.copy()
    aff[:3, 3] = [-48, -68, -14]
    res = cl.group_searchlight_test(_imgs(X, aff), np.ones(X.shape[1:], bool), n_permutations=300,
                                    cluster_p=0.01, progress=False)
    inside = np.zeros(X.shape[1:], bool)
    inside[3:6, 3:6, 2:4] = True
    ijk = np.stack([res[c].values for c in "ijk"], 1)
    in_blob = inside[tuple(ijk.T)]
    for var in ("p_fwe_cluster_mass", "p_fwe_tfce"):
        sig = res[var].values[0] < 0.05
        assert sig[in_blob].mean() > 0.5, var
        assert sig[~in_blob].mean() < 0.1, var
    tab = cl.cluster_table(res, correction="cluster_mass", significant_only=True)
    assert len(tab) >= 1
    top = tab.iloc[0]
    assert inside[int(top.peak_i), int(top.peak_j), int(top.peak_k)]
    assert top.volume_mm3 == pytest.approx(top["size"] * 8.0)
    labels, dist = cl.nearest_atlas_label([[top.peak_x, top.peak_y, top.peak_z]])
    assert top.atlas_label == labels[0] and top.atlas_distance_mm == pytest.approx(dist[0])


def test_single_subject_label_permutations():
    rng = np.random.default_rng(0)
    ids = np.array([f"s{i}" for i in range(12)])
    from scipy.spatial.distance import pdist, squareform

    R = np.stack([squareform(pdist(rng.standard_normal((12, 5)), "correlation")) for _ in range(2)])
    rdms = xr.DataArray(R, dims=("layer", "stimulus", "stimulus2"),
                        coords={"layer": ["a", "b"], "stimulus": ids, "stimulus2": ids})
    aff = np.diag([3.0, 3.0, 3.0, 1.0])
    aff[:3, 3] = -15
    mimg = nib.Nifti1Image(np.ones((11, 11, 8), np.uint8), aff)
    vol = sl.simulate_volume(rdms, [{"layer": "a", "center": (0, 0, 0), "radius": 7}], mask=mimg, seed=1)
    res = sl.searchlight(vol.img, rdms, mask=vol.mask, radius=4, min_voxels=5, stimulus_ids=vol.stimulus_ids,
                         n_permutations=100, return_null=True, progress=False)
    assert res["null_correlation"].dims == ("permutation", "layer", "voxel")
    np.testing.assert_allclose(np.nanmax(res["null_correlation"].values, -1), res["null_max"].values, atol=1e-6)
    out = cl.searchlight_cluster_test(res, cluster_p=0.01, progress=False)
    np.testing.assert_allclose(out["p_fwe"].values, res["p_fwe"].values)  # the searchlight's own FWE
    near = np.sqrt(res.x**2 + res.y**2 + res.z**2).values <= 7
    for var in ("p_fwe_cluster_mass", "p_fwe_tfce"):
        sig = out[var].sel(layer="a").values < 0.05
        assert sig[near].mean() > 0.5 and sig[~near].mean() < 0.1, var
        assert (out[var].sel(layer="b").values < 0.05).mean() < 0.1
    img = sl.to_nifti(out, "a", var="p_fwe_tfce", fill_value=1.0)
    assert img.shape == (11, 11, 8)


def test_time_clusters_find_planted_onset():
    rng = np.random.default_rng(2)
    x = gaussian_filter(rng.standard_normal((14, 2, 80)), (0, 0, 1.0))
    x[:, 0, 37:60] += 1.0
    times = np.arange(80) * 0.01 - 0.1
    da = xr.DataArray(x, dims=("subject", "layer", "time"), coords={"layer": ["conv1", "fc7"], "time": times})
    r = cl.time_cluster_test(da, n_permutations=300, progress=False)
    tab = cl.cluster_table(r, significant_only=True)
    assert set(tab.layer) == {"conv1"}
    assert tab.start.min() == pytest.approx(times[37], abs=0.0101)
    lat = cl.latency(da, n_bootstrap=100, n_permutations=200, progress=False)
    assert lat["onset"].sel(layer="conv1") == pytest.approx(times[37], abs=0.0101)
    assert lat["onset_ci_low"].sel(layer="conv1") <= lat["onset"].sel(layer="conv1") <= lat["onset_ci_high"].sel(layer="conv1")
    assert np.isnan(lat["onset"].sel(layer="fc7"))
    assert times[37] <= float(lat["peak"].sel(layer="conv1")) <= times[59]


def test_results_round_trip_netcdf(tmp_path):
    X = _group_maps(4, effect=0.8)
    res = cl.group_searchlight_test(_imgs(X), n_permutations=50, progress=False)
    nc.io.save(res, tmp_path / "g.nc")
    back = nc.io.load(tmp_path / "g.nc")
    xr.testing.assert_allclose(back.load(), res)
    x = np.random.default_rng(0).standard_normal((6, 30))
    r = cl.time_cluster_test(x, n_permutations=20, progress=False)
    nc.io.save(r, tmp_path / "t.nc")
    xr.testing.assert_allclose(nc.io.load(tmp_path / "t.nc").load(), r)


def test_plots(tmp_path):
    import matplotlib.pyplot as plt

    X = _group_maps(5, effect=0.9, shape=(20, 24, 18), S=8, blob=(slice(8, 12), slice(8, 12), slice(8, 11)))
    aff = AFF.copy()
    aff[:3, 3] = [-20, -60, -10]
    res = cl.group_searchlight_test(_imgs(X, aff), n_permutations=30, progress=False, corrections=("cluster_mass",))
    fig = cl.plot_clusters(res, 0, correction="cluster_mass", kind="glass_brain")
    assert fig.axes
    plt.close(fig)
    x = np.random.default_rng(0).standard_normal((6, 30))
    fig = cl.plot_clusters(cl.time_cluster_test(x, n_permutations=20, progress=False), correction="tfce")
    assert fig.axes[0].lines
    plt.close(fig)


# ----------------------------------------------------------------- bad input
def test_bad_input_errors():
    obs = np.zeros((5, 5))
    with pytest.raises(ShapeMismatchError, match="n_permutations"):
        cl.cluster_inference(obs, np.zeros((10, 5, 4)))
    with pytest.raises(InvalidDataError, match="connectivity"):
        cl.cluster_inference(obs, np.zeros((10, 5, 5)), threshold=1.0, connectivity=3)
    with pytest.raises(UnknownNameError, match="correction"):
        cl.cluster_inference(obs, np.zeros((10, 5, 5)), threshold=1.0, corrections=("tfec",))
    with pytest.raises(InvalidDataError, match="cluster_p"):
        cl.cluster_inference(obs, np.ones((10, 5, 5)), cluster_p=0.0)
    with pytest.raises(ShapeMismatchError, match="at least 2 subjects"):
        cl.time_cluster_test(np.zeros((1, 10)), progress=False)
    with pytest.raises(ShapeMismatchError, match="null_correlation"):
        cl.searchlight_cluster_test(xr.Dataset())
    with pytest.raises(ShapeMismatchError, match="another grid"):
        X = _group_maps(0, S=3)
        cl.group_searchlight_test(_imgs(X)[:2] + [nib.Nifti1Image(X[2], np.diag([3.0, 3, 3, 1]))], progress=False)
    x = np.random.default_rng(0).standard_normal((6, 30))
    r = cl.time_cluster_test(x, n_permutations=10, corrections=("voxel",), progress=False)
    with pytest.raises(ShapeMismatchError, match="not computed"):
        cl.cluster_table(r, correction="tfce")
    with pytest.raises(UnknownNameError, match="atlas"):
        cl.nearest_atlas_label([[0, 0, 0]], atlas="aal")
    rdms = nc.rsa.category_model_rdms(list("abcd"), {"m": {"a": 0, "b": 0, "c": 1, "d": 1}})
    with pytest.raises(InvalidDataError, match="return_null"):
        sl.searchlight(np.zeros((1,)), rdms, return_null=True)
