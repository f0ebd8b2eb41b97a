"""analyses/dissociation_map.py: FDR, candidate cells for shams, significance of cells."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import xarray as xr
from _scripts import REPO, load_script


@pytest.fixture(scope="module")
def dm():
    return load_script(REPO / "analyses" / "dissociation_map.py")


def test_fdr_marks_cells_significant_only_under_both_nulls_and_positive_dod(dm):
    p_perm = np.array([[1e-4, 1e-4, 0.5], [1e-4, 0.03, 0.9]])
    p_sham = np.array([[1e-4, 0.5, 1e-4], [1e-4, 1e-4, 1e-4]])
    dod = np.array([[0.2, 0.2, 0.2], [-0.2, 0.1, 0.1]])
    ds = xr.Dataset({"p_permutation": (("layer", "size"), p_perm), "p_sham": (("layer", "size"), p_sham),
                     "dod": (("layer", "size"), dod)})
    out = dm._fdr(ds)
    np.testing.assert_allclose(out["p_fdr_permutation"].values.ravel(), scipy.stats.false_discovery_control(p_perm.ravel()))
    np.testing.assert_array_equal(out["significant"].values, [[1, 0, 0], [0, 1, 0]])


def test_fdr_counts_untested_sham_cells_as_p_one(dm):
    p_perm = np.array([[1e-4, 1e-4, 0.9]])
    p_sham = np.array([[1e-3, np.nan, np.nan]])  # shams drawn for the first cell only
    ds = xr.Dataset({"p_permutation": (("layer", "size"), p_perm), "p_sham": (("layer", "size"), p_sham),
                     "dod": (("layer", "size"), np.array([[0.2, 0.2, 0.1]]))})
    out = dm._fdr(ds)
    np.testing.assert_allclose(out["p_fdr_sham"].values.ravel(), scipy.stats.false_discovery_control([1e-3, 1, 1]))
    np.testing.assert_array_equal(out["significant"].values, [[1, 0, 0]])


def test_candidates_are_the_cells_passing_the_permutation_criteria(dm):
    first = {(layer, size): (None, {"p_permutation": p, "dod": d})
             for (layer, size), p, d in zip([("a", 0), ("a", 1), ("b", 0), ("b", 1)], [1e-4, 1e-4, 0.04, 0.5], [0.2, -0.2, 0.1, 0.3])}
    # BH over 4 cells: q = 2e-4, 2e-4, 0.053, 0.5; only positive DoD with q <= 0.05
    assert dm._candidates(first, "candidates") == [("a", 0)]
    assert dm._candidates(first, "all") == list(first)
