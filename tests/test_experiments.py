"""The layers-vs-human-IT experiment on the real pretrained network and real fMRI RDMs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from neurocnn import io
from neurocnn.experiments import layers_vs_brain, run_layers_vs_hit
from neurocnn.exceptions import OverwriteError


@pytest.fixture(scope="module")
def result(lite0):
    return layers_vs_brain(lite0, layers=["stage2", "head"], methods=("spearman",), n_bootstrap=30, progress=False)


def test_observed_equals_hand_computed_spearman(result):
    iu = np.triu_indices(92, 1)
    for layer in ("stage2", "head"):
        model = result.layer_rdm.sel(layer=layer).values[iu]
        per_subject = [spearmanr(model, result.brain_rdm.sel(subject=s).values[iu])[0] for s in result.subject.values]
        assert float(result.observed.sel(comparison="spearman", layer=layer)) == pytest.approx(np.mean(per_subject), abs=1e-10)


def test_result_structure_and_provenance(result):
    assert result.brain_rdm.sizes["subject"] == 4
    assert list(result.noise_ceiling.bound.values) == ["lower", "upper"]
    lower, upper = result.noise_ceiling.sel(comparison="spearman").values
    assert 0 < lower < upper < 1
    assert (result.ci_low <= result.observed).all() and (result.observed <= result.ci_high).all()
    assert result.attrs["model"] == "efficientnet_lite0" and result.attrs["n_bootstrap"] == 30
    # deep layers resemble human IT more than early ones (Khaligh-Razavi & Kriegeskorte 2014)
    observed = result.observed.sel(comparison="spearman")
    assert float(observed.sel(layer="head")) > float(observed.sel(layer="stage2"))


def test_run_writes_outputs_and_never_overwrites(lite0, tmp_path):
    run_layers_vs_hit(lite0, tmp_path, n_bootstrap=10, layers=["stage4", "head"], progress=False)
    saved = io.load(tmp_path / "layers_vs_hit.nc")
    assert set(saved.comparison.values) == {"tau_a", "spearman"}
    assert (tmp_path / "rdms.png").stat().st_size > 1000
    with pytest.raises(OverwriteError):
        run_layers_vs_hit(lite0, tmp_path, n_bootstrap=10, layers=["stage4", "head"], progress=False)
