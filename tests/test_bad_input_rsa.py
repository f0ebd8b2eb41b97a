"""Bad input to neurocnn.rsa: one RDM validation for every entry point, whitened correlation, RDM files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.linalg
import xarray as xr
from scipy.spatial.distance import pdist, squareform

from neurocnn import rsa, searchlight
from neurocnn.exceptions import InvalidDataError, ShapeMismatchError, UnreadableFileError

from test_bad_input_io import write_mat73


def _rdm(n: int = 6, seed: int = 0) -> np.ndarray:
    return squareform(pdist(np.random.default_rng(seed).normal(size=(n, 10)), "correlation"))


def _sim(n: int = 6, seed: int = 0) -> np.ndarray:
    return np.corrcoef(np.random.default_rng(seed).normal(size=(n, 10)))


def _stack(f, k=3):
    return np.stack([f(seed=i) for i in range(k)])


def _da(mats: np.ndarray) -> xr.DataArray:
    ids = [f"s{i}" for i in range(mats.shape[-1])]
    return xr.DataArray(mats, dims=("layer", "stimulus", "stimulus2"),
                        coords={"layer": [f"l{i}" for i in range(len(mats))], "stimulus": ids, "stimulus2": ids})


# every entry point that takes RDMs, called with `bad` in the RDM slot
ENTRY_POINTS = {
    "compare_rdms": lambda bad: rsa.compare_rdms(bad, _rdm(seed=9)),
    "compare_rdms_b": lambda bad: rsa.compare_rdms(_rdm(seed=9), bad),
    "noise_ceiling": lambda bad: rsa.noise_ceiling(np.stack([bad, _rdm(seed=1), _rdm(seed=2)])),
    "bootstrap": lambda bad: rsa.bootstrap_rdm_comparison(bad[None], _stack(_rdm), n_bootstrap=3, progress=False),
    "bootstrap_brain": lambda bad: rsa.bootstrap_rdm_comparison(_rdm()[None], np.stack([bad, _rdm(seed=1)]),
                                                                n_bootstrap=3, progress=False),
    "searchlight_models": lambda bad: searchlight.searchlight(None, _da(bad[None]), progress=False),
    "timecourse_meg": lambda bad: rsa.meg_layer_time_correlation(_rdm()[None], np.stack([bad, _rdm(seed=1)], -1),
                                                                 n_bootstrap=3, progress=False),
    "timecourse_layers": lambda bad: rsa.meg_layer_time_correlation(bad[None], np.stack([_rdm(), _rdm(seed=1)], -1),
                                                                    n_bootstrap=3, progress=False),
    "to_rsatoolbox": lambda bad: rsa.to_rsatoolbox(bad),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_similarity_matrices_are_refused_everywhere(entry: str) -> None:
    with pytest.raises(InvalidDataError, match=r"similarity matrix.*1 - S"):
        ENTRY_POINTS[entry](_sim())


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_non_zero_diagonals_are_refused_everywhere(entry: str) -> None:
    with pytest.raises(InvalidDataError, match=r"non-zero diagonal.*\(2, 2\) is 0.25"):
        bad = _rdm()
        bad[2, 2] = 0.25
        ENTRY_POINTS[entry](bad)


SMALL_ENTRY_POINTS = {
    "compare_rdms": lambda bad: rsa.compare_rdms(bad, bad),
    "noise_ceiling": lambda bad: rsa.noise_ceiling(np.stack([bad, bad, bad])),
    "bootstrap": lambda bad: rsa.bootstrap_rdm_comparison(bad[None], np.stack([bad, bad]), n_bootstrap=3,
                                                          progress=False),
    "timecourse": lambda bad: rsa.meg_layer_time_correlation(bad[None], np.stack([bad, bad], -1), n_bootstrap=3,
                                                             progress=False),
    "to_rsatoolbox": lambda bad: rsa.to_rsatoolbox(bad),
}


@pytest.mark.parametrize("entry", SMALL_ENTRY_POINTS)
@pytest.mark.parametrize("n", [1, 2])
def test_fewer_than_three_stimuli_are_refused(entry: str, n: int) -> None:
    with pytest.raises(ShapeMismatchError, match="at least 3 stimuli"):
        SMALL_ENTRY_POINTS[entry](np.zeros((n, n)) + (1 - np.eye(n)))


def test_condensed_and_dataarray_inputs_are_checked_too() -> None:
    with pytest.raises(ShapeMismatchError, match="at least 3 stimuli"):
        rsa.compare_rdms(np.array([0.5]), np.array([0.7]))
    r = rsa.compute_rdm(np.random.default_rng(0).normal(size=(5, 8)))
    with pytest.raises(InvalidDataError, match="similarity"):
        rsa.compare_rdms(r.copy(data=1 - r.values), r)
    with pytest.raises(ShapeMismatchError, match="numeric RDMs"):
        rsa.compare_rdms([["a", "b", "c"]] * 3, r)


def test_duplicate_ids_and_complex_values_are_refused() -> None:
    r = rsa.compute_rdm(np.random.default_rng(0).normal(size=(4, 8)), stimulus_ids=list("abcd"))
    dup = r.assign_coords(stimulus=list("abca"), stimulus2=list("abca"))
    with pytest.raises(ShapeMismatchError, match="unique"):
        rsa.compare_rdms(dup, r)
    with pytest.raises(ShapeMismatchError, match="complex"):
        rsa.compare_rdms(r.values + 0j, r)


def test_valid_rdms_still_compare_and_tiny_numeric_diagonals_pass() -> None:
    a = _rdm()
    a[np.diag_indices(6)] = 1e-12
    assert float(rsa.compare_rdms(a, a, method="spearman")) == pytest.approx(1.0)


def test_load_rdms_validates_files(tmp_path: Path) -> None:
    np.save(tmp_path / "sim.npy", _sim())
    with pytest.raises(InvalidDataError, match="similarity"):
        rsa.load_rdms(tmp_path / "sim.npy")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(UnreadableFileError):
        rsa.load_rdms(tmp_path / "bad.npy")


# ------------------------------------------------------------------ compute_rdm with noise
@pytest.mark.parametrize("metric", ["correlation", "euclidean", "cosine", "sqeuclidean"])
def test_noise_whitened_metrics_match_pdist_of_whitened_patterns(metric: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 9))
    a = rng.normal(size=(9, 9))
    precision = a @ a.T + np.eye(9)
    y = x @ np.real(scipy.linalg.sqrtm(precision))
    np.testing.assert_allclose(rsa.compute_rdm(x, metric=metric, noise=precision).values,
                               squareform(pdist(y, metric)), atol=1e-10)
    d = rng.random(9) + 0.1
    np.testing.assert_allclose(rsa.compute_rdm(x, metric=metric, noise=d, chunk_size=4).values,
                               squareform(pdist(x * np.sqrt(d), metric)), atol=1e-10)


def test_bad_noise_precisions_are_refused() -> None:
    x = np.random.default_rng(0).normal(size=(5, 4))
    with pytest.raises(InvalidDataError, match="positive semi-definite"):
        rsa.compute_rdm(x, metric="correlation", noise=-np.eye(4))
    with pytest.raises(InvalidDataError, match="symmetric"):
        rsa.compute_rdm(x, metric="correlation", noise=np.triu(np.ones((4, 4))))
    with pytest.raises(InvalidDataError, match="negative"):
        rsa.compute_rdm(x, metric="euclidean", noise=-np.ones(4))


# ------------------------------------------------------------------ RDM files
def test_load_rdms_reads_v73_stacks_in_matlab_order(tmp_path: Path) -> None:
    mats = np.stack([_rdm(seed=i) for i in range(3)], -1)  # MATLAB n x n x k
    write_mat73(tmp_path / "s.mat", {"RDMs": mats})
    r = rsa.load_rdms(tmp_path / "s.mat")
    assert r.shape == (3, 6, 6)
    np.testing.assert_allclose(r.values[1], _rdm(seed=1))


@pytest.mark.parametrize("layout", ["struct_array", "cell", "struct_other_field"])
def test_load_rdms_reads_v73_structs_and_cells(tmp_path: Path, layout: str) -> None:
    rdms = [_rdm(seed=i) for i in range(3)]
    value = {
        "struct_array": tuple({"RDM": r, "name": f"subject{i}"} for i, r in enumerate(rdms)),
        "cell": list(rdms),
        "struct_other_field": tuple({"dissim": r, "name": "IT"} for r in rdms),
    }[layout]
    write_mat73(tmp_path / "r.mat", {"rdms": value})
    r = rsa.load_rdms(tmp_path / "r.mat")
    np.testing.assert_allclose(r.values, np.stack(rdms))


def test_load_rdms_reads_v5_cells_structs_and_condensed_vectors(tmp_path: Path) -> None:
    cell = np.empty((1, 3), dtype=object)
    for i in range(3):
        cell[0, i] = _rdm(seed=i)
    scipy.io.savemat(tmp_path / "cell.mat", {"c": cell})
    np.testing.assert_allclose(rsa.load_rdms(tmp_path / "cell.mat").values[2], _rdm(seed=2))
    scipy.io.savemat(tmp_path / "nofield.mat", {"s": {"dissim": _rdm(), "label": "IT"}})
    np.testing.assert_allclose(rsa.load_rdms(tmp_path / "nofield.mat").values[0], _rdm())
    v = _rdm()[np.triu_indices(6, 1)]
    scipy.io.savemat(tmp_path / "vec.mat", {"v": v[None, :]})
    np.testing.assert_allclose(rsa.load_rdms(tmp_path / "vec.mat").values[0], _rdm())


def test_ambiguous_struct_fields_ask_for_variable(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "two.mat", {"s": {"a": _rdm(), "b": _rdm(seed=1)}})
    with pytest.raises(ShapeMismatchError, match=r"variable='s.<field>'"):
        rsa.load_rdms(tmp_path / "two.mat")
    np.testing.assert_allclose(rsa.load_rdms(tmp_path / "two.mat", variable="s.b").values[0], _rdm(seed=1))


def test_corrupt_mat_gives_a_neurocnn_error(tmp_path: Path) -> None:
    (tmp_path / "c.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(range(200)))
    with pytest.raises(UnreadableFileError, match="c.mat"):
        rsa.load_rdms(tmp_path / "c.mat")
