"""analyses/model_comparison.py: joint bootstrap of several networks, best layers, pairwise tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from scipy.stats import false_discovery_control
from torch import nn

from _scripts import load_script
from neurocnn import models, rsa

SCRIPT = Path(__file__).resolve().parents[1] / "analyses" / "model_comparison.py"


@pytest.fixture(scope="module")
def mc():
    return load_script(SCRIPT, "model_comparison")


def _rdm_stack(vectors, n, names):
    mats = np.zeros((len(vectors), n, n))
    iu = np.triu_indices(n, 1)
    for m, v in zip(mats, vectors):
        m[iu] = v
        m += m.T
    ids = [f"s{i}" for i in range(n)]
    return xr.DataArray(mats, dims=("layer", "stimulus", "stimulus2"),
                        coords={"layer": names, "stimulus": ids, "stimulus2": ids})


def test_compare_networks_against_direct_computation(mc):
    rng = np.random.default_rng(0)
    n, pairs = 14, 14 * 13 // 2
    truth = rng.random(pairs)
    brain = _rdm_stack([truth + 0.6 * rng.random(pairs) for _ in range(4)], n, [f"b{i}" for i in range(4)])
    brain = brain.rename(layer="rdm").assign_coords(subject=("rdm", ["1", "2", "3", "4"]))
    good = [truth + 0.3 * rng.random(pairs), truth + 2.0 * rng.random(pairs)]
    bad = [rng.random(pairs), rng.random(pairs), rng.random(pairs)]
    layers = _rdm_stack(good + bad, n, ["good/a", "good/b", "bad/a", "bad/b", "bad/c"]).assign_coords(
        network=("layer", ["good"] * 2 + ["bad"] * 3), alias=("layer", ["a", "b", "a", "b", "c"]),
        relative_depth=("layer", [0.0, 1.0, 0.0, 0.5, 1.0]))
    result = mc.compare_networks(layers, brain, n_bootstrap=200, seed=3, progress=False)
    direct = rsa.compare_rdms(layers.drop_vars(["network", "alias", "relative_depth"]), brain, method="tau_a")
    per_layer = direct.mean(direct.dims[1]).values  # mean over subjects, as the bootstrap evaluates
    np.testing.assert_allclose(result.observed.values, per_layer, rtol=1e-10)
    assert result.best_layer.sel(network="good").item() == "a"
    np.testing.assert_allclose(result.score.values, [per_layer[:2].max(), per_layer[2:].max()], rtol=1e-10)
    # the per-sample best layer is the max over that network's layers in the *same* samples
    np.testing.assert_allclose(result.score_samples.sel(network="bad").values,
                               result.evaluation.values[2:].max(0))
    assert result.p_network_vs_network.sel(network="good", network2="bad") < 0.02
    p = result.p_network_vs_network.values[0, 1]
    assert result.q_network_vs_network.values[0, 1] == pytest.approx(false_discovery_control([p]))
    lower = float(result.noise_ceiling.sel(bound="lower"))
    assert result.ceiling_normalized.sel(network="good") == pytest.approx(result.score.sel(network="good") / lower)
    again = mc.compare_networks(layers, brain, n_bootstrap=200, seed=3, progress=False)
    xr.testing.assert_identical(result, again)


def test_script_runs_registered_models_on_a_user_rdm_set(mc, tmp_path, mirror):
    def make(width):
        return lambda: nn.Sequential(nn.Conv2d(3, width, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                                     nn.Flatten(), nn.Linear(16 * width, 10))

    rng = np.random.default_rng(0)
    names = [f"mc_tiny{width}" for width in (3, 6)]
    for name, width in zip(names, (3, 6)):
        torch.manual_seed(width)
        torch.save(make(width)().state_dict(), tmp_path / f"{name}.pth")
        models.register_model(name, builder=make(width), aliases={"conv": "0", "relu": "1", "fc": "4"},
                              default_layers=["conv", "relu", "fc"], weights=tmp_path / f"{name}.pth",
                              preprocessing=models.Preprocessing(resize=(32, 32), crop=None))
    user = rng.random((3, 92, 92))
    user = user + user.transpose(0, 2, 1)
    user[:, np.arange(92), np.arange(92)] = 0
    np.save(tmp_path / "user.npy", user)
    out = tmp_path / "out"
    try:
        with pytest.raises(SystemExit):  # --weights needs exactly one network
            mc.main(["--models", *names, "--weights", str(tmp_path / "x.pth"), "--out", str(out)])
        assert mc.main(["--models", *names, "--brain-rdms", str(tmp_path / "user.npy"), "--quick",
                        "--out", str(out), "--no-progress", "--seed", "5"]) == 0
    finally:
        for name in names:
            models.unregister_model(name)
    result = xr.open_dataset(out / "model_comparison.nc")
    assert list(result.attrs["models"]) == names
    assert result.attrs["n_stimuli"] == 46 and result.attrs["seed"] == 5
    assert result.sizes["layer"] == 2 * 2  # --quick: every second layer and the last
    assert result.layer_rdm.shape == (4, 46, 46) and result.brain_rdm.sizes["subject"] == 3
    assert str(tmp_path / "user.npy") in result.attrs["brain_rdms"]
    headline = json.loads((out / "headline.json").read_text())["values"]
    table = list(csv.DictReader((out / "table.csv").read_text().splitlines()))
    assert [int(row["rank"]) for row in table] == [1, 2]
    assert {row["network"] for row in table} == set(names)
    assert headline["mc_models"] == ", ".join(names) and headline["fig_mc"] == "out/model_comparison.png"
    assert (out / "model_comparison.png").stat().st_size > 10_000
    assert "pairwise" in (out / "table.md").read_text()


def test_default_is_every_real_network(mc, tmp_path, monkeypatch):
    seen = []

    def stop(names, *args, **kwargs):
        seen.extend(names)
        raise KeyboardInterrupt

    monkeypatch.setattr(mc, "network_rdms", stop)
    with pytest.raises(KeyboardInterrupt):
        mc.main(["--quick", "--out", str(tmp_path / "o"), "--no-progress"])
    assert seen[:4] == list(mc.REAL_NETWORKS)
    seen.clear()
    with pytest.raises(KeyboardInterrupt):
        mc.main(["--model", "mobilenet_v2", "--quick", "--out", str(tmp_path / "o"), "--no-progress"])
    assert seen == ["mobilenet_v2"]
