"""Tests of neurocnn.searchlight: planted regions, scipy oracle, bad input, outputs, real data."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import scipy.stats
import xarray as xr
from scipy.spatial.distance import pdist, squareform

from neurocnn import datasets, rsa
from neurocnn import searchlight as sl
from neurocnn.exceptions import InvalidDataError, ShapeMismatchError, UnknownNameError

N_STIM = 16
IDS = np.array([f"s{i:02d}" for i in range(N_STIM)])
BOX = ((-40, 40), (-100, -50), (-20, 16))  # occipito-temporal crop of the MNI 2 mm grid
REGIONS = [
    {"layer": "early", "center": (-24.0, -86.0, 0.0), "radius": 8.0},
    {"layer": "late", "center": (26.0, -64.0, -8.0), "radius": 8.0},
]
IU = np.triu_indices(N_STIM, 1)


def _random_rdms(seed: int, names: list[str]) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    mats = [squareform(pdist(rng.standard_normal((N_STIM, 40)), "correlation")) for _ in names]
    return xr.DataArray(np.stack(mats), dims=("layer", "stimulus", "stimulus2"),
                        coords={"layer": names, "stimulus": IDS, "stimulus2": IDS.copy()})


@pytest.fixture(scope="module")
def rdms() -> xr.DataArray:
    return _random_rdms(3, ["early", "late", "null"])  # model-model |rho| < 0.1


@pytest.fixture(scope="module")
def volume(rdms):
    return sl.simulate_volume(rdms, REGIONS, noise=1.0, signal=1.0, box=BOX, seed=3)


@pytest.fixture(scope="module")
def small_mask(volume):
    """The brain mask cut to a 12 x 12 x 10 voxel box around the first region."""
    m = np.asarray(volume.mask.dataobj) > 0
    box = np.zeros_like(m)
    c = np.round(nib.affines.apply_affine(np.linalg.inv(volume.img.affine), REGIONS[0]["center"])).astype(int)
    box[c[0] - 6 : c[0] + 6, c[1] - 6 : c[1] + 6, c[2] - 5 : c[2] + 5] = True
    return nib.Nifti1Image((m & box).astype(np.uint8), volume.mask.affine)


@pytest.fixture(scope="module")
def result(volume, rdms):
    return sl.searchlight(volume.img, rdms, mask=volume.mask, radius=6.0,
                          stimulus_ids=volume.stimulus_ids, progress=False)


def _sphere_oracle(img, mask, centre_ijk, radius):
    """Sphere voxels by brute force over all mask voxels' mm coordinates."""
    m = np.asarray(mask.dataobj) > 0
    ijk = np.argwhere(m)
    world = nib.affines.apply_affine(img.affine, ijk)
    c = nib.affines.apply_affine(img.affine, centre_ijk)
    return ijk[np.sqrt(((world - c) ** 2).sum(1)) <= radius + 1e-9]


def _loop_oracle(img, mask, rdms, centre_ijk, radius, metric, compare):
    data = np.asarray(img.dataobj, dtype=np.float64)
    sel = _sphere_oracle(img, mask, centre_ijk, radius)
    patterns = data[sel[:, 0], sel[:, 1], sel[:, 2]].T  # (stimulus, voxel)
    d = pdist(patterns, metric)
    return np.array([compare(d, m[IU]) for m in rdms.values]), len(sel)


# ------------------------------------------------------------------ planted regions
def test_each_layer_peaks_in_its_own_region(result):
    for region in REGIONS:
        c = result["correlation"].sel(layer=region["layer"])
        peak = int(np.nanargmax(c.values))
        xyz = np.array([float(c.x[peak]), float(c.y[peak]), float(c.z[peak])])
        assert np.linalg.norm(xyz - np.array(region["center"])) <= region["radius"]
        assert float(c[peak]) > 0.5


def test_layer_map_is_specific_to_its_region(result):
    xyz = np.stack([result.x.values, result.y.values, result.z.values], 1)
    inside = {r["layer"]: np.linalg.norm(xyz - np.array(r["center"]), axis=1) <= 4.0 for r in REGIONS}
    early = result["correlation"].sel(layer="early").values
    late = result["correlation"].sel(layer="late").values
    assert early[inside["early"]].mean() > 0.5 and early[inside["late"]].mean() < 0.2
    assert late[inside["late"]].mean() > 0.5 and late[inside["early"]].mean() < 0.2


def test_null_map_is_near_zero(result):
    null = result["correlation"].sel(layer="null").values
    assert abs(np.nanmean(null)) < 0.03
    assert np.nanpercentile(np.abs(null), 99) < 0.3


def test_simulated_region_reproduces_its_rdm(rdms):
    vol = sl.simulate_volume(rdms, REGIONS[:1], noise=0.0, box=((-40, -8), (-100, -72), (-12, 12)), seed=1)
    data = np.asarray(vol.img.dataobj, dtype=np.float64)
    planted = np.abs(data).sum(-1) > 0
    world = nib.affines.apply_affine(vol.img.affine, np.argwhere(planted))
    assert np.linalg.norm(world - REGIONS[0]["center"], axis=1).max() <= REGIONS[0]["radius"]
    np.testing.assert_allclose(data[planted].std(1), 1.0, rtol=1e-5)  # signal sd per voxel
    d = pdist(data[planted].T, "correlation")
    for layer, low, high in (("early", 0.8, 1.0), ("late", -0.2, 0.2)):
        rho = scipy.stats.spearmanr(d, rdms.sel(layer=layer).values[IU]).statistic
        assert low < rho < high


# ------------------------------------------------------------------ oracle
@pytest.mark.parametrize(
    ("metric", "method", "compare"),
    [
        ("correlation", "spearman", lambda a, b: scipy.stats.spearmanr(a, b).statistic),
        ("euclidean", "pearson", lambda a, b: scipy.stats.pearsonr(a, b).statistic),
        ("cosine", "tau_a", lambda a, b: scipy.stats.kendalltau(a, b).statistic),  # no ties: tau-a = tau-b
    ],
)
def test_matches_one_centre_at_a_time_loop(volume, rdms, small_mask, metric, method, compare):
    res = sl.searchlight(volume.img, rdms, mask=small_mask, radius=5.0, metric=metric, method=method,
                         stimulus_ids=volume.stimulus_ids, progress=False, batch_size=97)
    rng = np.random.default_rng(0)
    edge = int(np.argmin(res["n_voxels"].values))  # a centre on the mask's edge
    for v in [*rng.choice(res.sizes["voxel"], 6, replace=False), edge]:
        ijk = np.array([int(res.i[v]), int(res.j[v]), int(res.k[v])])
        expected, n_vox = _loop_oracle(volume.img, small_mask, rdms, ijk, 5.0, metric, compare)
        assert int(res["n_voxels"][v]) == n_vox
        if n_vox >= 10:
            np.testing.assert_allclose(res["correlation"].values[:, v], expected, atol=1e-9)
        else:
            assert np.isnan(res["correlation"].values[:, v]).all()


def test_batch_size_does_not_change_the_result_and_zarr_output(volume, rdms, small_mask, tmp_path):
    import neurocnn as nc

    kw = dict(radius=6.0, stimulus_ids=volume.stimulus_ids, progress=False)
    one = sl.searchlight(volume.img, rdms, mask=small_mask, batch_size=5000, out=tmp_path / "sl.zarr", **kw)
    many = sl.searchlight(volume.img, rdms, mask=small_mask, batch_size=37, **kw)
    xr.testing.assert_allclose(many["correlation"], one["correlation"], atol=1e-12)
    np.testing.assert_array_equal(nc.io.load(tmp_path / "sl.zarr")["correlation"].values, one["correlation"].values)


def test_list_of_3d_images_and_shuffled_ids_give_the_same_map(volume, rdms, result):
    data = np.asarray(volume.img.dataobj)
    order = np.random.default_rng(1).permutation(N_STIM)
    imgs = [nib.Nifti1Image(data[..., p], volume.img.affine) for p in order]
    other = sl.searchlight(imgs, rdms, mask=volume.mask, radius=6.0, stimulus_ids=IDS[order], progress=False)
    np.testing.assert_allclose(other["correlation"].values, result["correlation"].values, atol=1e-12)


def test_sphere_offsets_on_paper():
    # integer points with x^2 + y^2 + z^2 <= 9: 123 (radius 3 voxels of 2 mm)
    assert len(sl.sphere_offsets(np.diag([2.0, 2.0, 2.0, 1.0]), 6.0)) == 123
    # Haxby's 3.1 x 3.75 mm in-slice voxels, radius 6 mm: the 3 x 3 disc (4.87 mm diagonal)
    off = sl.sphere_offsets(np.diag([3.1, 3.75, 3.75, 1.0]), 6.0)
    assert len(off[off[:, 2] == 0]) == 9
    assert sorted(map(tuple, off[off[:, 2] == 0])) == [(a, b, 0) for a in (-1, 0, 1) for b in (-1, 0, 1)]


def test_neighbourhoods_match_rsatoolbox(volume):
    from rsatoolbox.util.searchlight import _get_searchlight_neighbors

    mask = np.asarray(volume.mask.dataobj) > 0
    off = sl.sphere_offsets(volume.img.affine, 5.9)  # < 3 voxels: rsatoolbox's strict radius 3
    for c in np.argwhere(mask)[::997]:
        theirs = set(zip(*_get_searchlight_neighbors(mask, c, radius=3, truncate_at_boundary=True)))
        pts = c + off
        ok = ((pts >= 0) & (pts < mask.shape)).all(1)
        ours = {tuple(p) for p in pts[ok] if mask[tuple(p)]}
        assert ours == theirs


# ------------------------------------------------------------------ significance
def test_stimulus_permutation_fwe(volume, rdms):
    res = sl.searchlight(volume.img, rdms, mask=volume.mask, radius=6.0, stimulus_ids=volume.stimulus_ids,
                         progress=False, n_permutations=99, seed=5)
    assert res.attrs["test"] == "stimulus_permutation" and res.attrs["seed"] == 5
    for region in REGIONS:
        assert float(res["p_fwe"].sel(layer=region["layer"]).min()) == pytest.approx(0.01)
    assert float(res["p_fwe"].sel(layer="null").min()) > 0.05
    assert (res["p_fwe"] >= res["p_uncorrected"] - 1e-12).all()
    again = sl.searchlight(volume.img, rdms, mask=volume.mask, radius=6.0, stimulus_ids=volume.stimulus_ids,
                           progress=False, n_permutations=99, seed=5)
    xr.testing.assert_identical(res, again)


def test_sign_flip_over_subjects(rdms):
    box = ((-40, -8), (-100, -72), (-12, 12))
    subjects = {f"sub{i}": sl.simulate_volume(rdms, REGIONS[:1], noise=2.0, box=box, seed=10 + i)
                for i in range(8)}
    mask = subjects["sub0"].mask
    res = sl.searchlight({k: v.img for k, v in subjects.items()}, rdms, mask=mask, radius=6.0,
                         stimulus_ids=IDS, progress=False, n_permutations=200, seed=0)
    assert res["subject_correlation"].dims == ("subject", "layer", "voxel")
    np.testing.assert_allclose(res["correlation"], res["subject_correlation"].mean("subject"))
    xyz = np.stack([res.x.values, res.y.values, res.z.values], 1)
    inside = np.linalg.norm(xyz - np.array(REGIONS[0]["center"]), axis=1) <= 4.0
    p_early = res["p_fwe"].sel(layer="early").values
    assert p_early[inside].min() < 0.01 and np.median(p_early[inside]) < 0.05
    assert float(res["p_fwe"].sel(layer="null").min()) > 0.05


# ------------------------------------------------------------------ bad input
def test_mask_shape_and_affine_mismatch(volume, rdms):
    m = np.asarray(volume.mask.dataobj)
    with pytest.raises(ShapeMismatchError, match="shape"):
        sl.searchlight(volume.img, rdms, mask=nib.Nifti1Image(m[:-1], volume.mask.affine), progress=False)
    shifted = volume.mask.affine.copy()
    shifted[0, 3] += 2.0
    with pytest.raises(ShapeMismatchError, match="affine"):
        sl.searchlight(volume.img, rdms, mask=nib.Nifti1Image(m, shifted), progress=False)


def test_nan_voxels_dropped_and_counted(volume, rdms, result):
    data = np.asarray(volume.img.dataobj).copy()
    mask = np.asarray(volume.mask.dataobj) > 0
    bad = np.argwhere(mask)[[10, 500, 900]]
    data[bad[0][0], bad[0][1], bad[0][2], 3] = np.nan
    data[bad[1][0], bad[1][1], bad[1][2], :] = np.nan
    data[bad[2][0], bad[2][1], bad[2][2], 0] = np.inf
    img = nib.Nifti1Image(data, volume.img.affine)
    res = sl.searchlight(img, rdms, mask=volume.mask, radius=6.0, stimulus_ids=IDS, progress=False)
    assert res.attrs["n_nan_voxels"] == 3
    assert res.sizes["voxel"] == result.sizes["voxel"] - 3
    assert np.isfinite(res["correlation"].sel(layer="early")).sum() > 0
    with pytest.raises(InvalidDataError, match="3 of"):
        sl.searchlight(img, rdms, mask=volume.mask, stimulus_ids=IDS, nan_policy="raise", progress=False)


def test_fewer_volumes_than_stimuli(volume, rdms):
    data = np.asarray(volume.img.dataobj)[..., :10]
    with pytest.raises(ShapeMismatchError, match="10 volumes"):
        sl.searchlight(nib.Nifti1Image(data, volume.img.affine), rdms, mask=volume.mask, progress=False)


def test_radius_smaller_than_a_voxel(volume, rdms):
    with pytest.raises(InvalidDataError, match="smaller than a voxel"):
        sl.searchlight(volume.img, rdms, mask=volume.mask, radius=1.5, stimulus_ids=IDS, progress=False)


def test_stimulus_id_mismatch(volume, rdms):
    ids = IDS.copy()
    ids[0] = "other"
    with pytest.raises(ShapeMismatchError, match="differ"):
        sl.searchlight(volume.img, rdms, mask=volume.mask, stimulus_ids=ids, progress=False)


def test_unknown_options_and_too_small_spheres(volume, rdms):
    with pytest.raises(UnknownNameError, match="correlation"):
        sl.searchlight(volume.img, rdms, mask=volume.mask, metric="corelation", progress=False)
    with pytest.raises(UnknownNameError):
        sl.searchlight(volume.img, rdms, mask=volume.mask, method="spearmann", progress=False)
    with pytest.raises(InvalidDataError, match="min_voxels"):
        sl.searchlight(volume.img, rdms, mask=volume.mask, radius=2.0, min_voxels=50, progress=False)
    with pytest.raises(InvalidDataError, match="2 subjects"):
        sl.searchlight({"only": volume.img}, rdms, mask=volume.mask, n_permutations=10, progress=False)


def test_default_mni_mask_used_for_mni_data(volume, rdms):
    res = sl.searchlight(volume.img, rdms, mask=None, radius=6.0, progress=False)
    assert "MNI152" in res.attrs["mask_source"]
    assert res.sizes["voxel"] == int((np.asarray(volume.mask.dataobj) > 0).sum())


# ------------------------------------------------------------------ outputs
def test_to_nifti_and_save_maps(result, tmp_path):
    img = sl.to_nifti(result, "late")
    v = int(np.nanargmax(result["correlation"].sel(layer="late").values))
    ijk = (int(result.i[v]), int(result.j[v]), int(result.k[v]))
    assert np.asarray(img.dataobj)[ijk] == pytest.approx(float(result["correlation"].sel(layer="late")[v]), abs=1e-6)
    paths = sl.save_maps(result, tmp_path)
    assert [p.name for p in paths] == [f"searchlight_correlation_{n}.nii.gz" for n in ("early", "late", "null")]
    back = nib.load(paths[1])
    np.testing.assert_allclose(back.affine, img.affine)
    np.testing.assert_allclose(np.asarray(back.dataobj), np.asarray(img.dataobj))


def test_result_round_trips_netcdf(result, tmp_path):
    import neurocnn as nc

    path = nc.io.save(result, tmp_path / "sl.nc")
    back = nc.io.load(path)
    np.testing.assert_allclose(back["correlation"].values, result["correlation"].values)
    assert list(np.ravel(back.attrs["shape"])) == list(result.attrs["shape"])


@pytest.mark.parametrize("kind", ["stat_map", "glass_brain", "slices"])
def test_plot_writes_png(result, tmp_path, kind):
    import matplotlib.pyplot as plt

    from neurocnn.plotting import save_figure

    fig = sl.plot_searchlight(result, "early", kind=kind, threshold=0.2)
    path = save_figure(fig, tmp_path / f"{kind}.png")
    plt.close(fig)
    assert path.stat().st_size > 10_000


# distributed probes 8.8.8.8 for its own IP address; the test suite's network guard refuses
@pytest.mark.filterwarnings("ignore:Couldn't detect a suitable IP address:RuntimeWarning")
def test_dask_client_gives_the_same_result(volume, rdms, small_mask):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        res = sl.searchlight(volume.img, rdms, mask=small_mask, radius=6.0, stimulus_ids=IDS,
                             client=client, batch_size=100, progress=False)
    serial = sl.searchlight(volume.img, rdms, mask=small_mask, radius=6.0, stimulus_ids=IDS, progress=False)
    np.testing.assert_allclose(res["correlation"].values, serial["correlation"].values, atol=1e-12)


# ------------------------------------------------------------------ real data
def test_haxby_single_slice_category_structure(mirror):
    vol = datasets.haxby_category_patterns(mirror / "data" / "haxby2001")
    assert vol.img.shape == (40, 20, 1, 96)  # 12 runs x 8 categories
    cats = ["face", "house", "shoe", "cat", "scissors", "scrambledpix", "bottle", "chair"]
    groups = {"face": "face", "cat": "animal", "house": "house", "scrambledpix": "scrambled",
              **{c: "object" for c in ("shoe", "scissors", "bottle", "chair")}}
    model = rsa.category_model_rdms(cats, {"category": groups})
    res = sl.searchlight(vol.img, model, mask=vol.mask, radius=6.0, min_voxels=5,
                         stimulus_ids=vol.stimulus_ids, progress=False)
    assert res.sizes["voxel"] == 530
    assert int(res["n_voxels"].max()) == 9  # the in-slice 3 x 3 disc
    c = res["correlation"].sel(layer="category").values
    assert np.nanmean(c) > 0.05 and np.nanmax(c) > 0.5


def test_an_out_of_range_layer_index_raises_the_one_index_error_everywhere():
    from neurocnn._validation import layer_index
    from neurocnn.exceptions import IndexOutOfRangeError

    result = xr.Dataset({"correlation": (("layer", "voxel"), np.zeros((2, 3)))},
                        coords={"layer": ["a", "b"]})
    with pytest.raises(IndexOutOfRangeError, match="layer=2 is out of range"):
        sl.to_nifti(result, 2)
    with pytest.raises(UnknownNameError, match="'c'"):
        layer_index(result["layer"].values, "c")
    assert layer_index(result["layer"].values, np.int64(1)) == 1
