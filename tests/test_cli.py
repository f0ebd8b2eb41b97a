"""The neurocnn command line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from neurocnn import io
from neurocnn.cli import main
from neurocnn.models import get_spec, load_model


def test_models_and_layers(capsys):
    assert main(["models"]) == 0
    assert "efficientnet_lite0" in capsys.readouterr().out
    assert main(["layers", "alexnet"]) == 0
    out = capsys.readouterr().out
    assert "features.6" in out and "conv3" in out


def test_extract_writes_zarr_and_refuses_overwrite(tmp_path, capsys):
    folder = tmp_path / "stim"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 40 * i, dtype=np.uint8)).save(folder / f"s{i}.png")
    weights = tmp_path / "squeeze.pth"
    torch.save(load_model(get_spec("squeezenet1_1"), weights=None)[0].state_dict(), weights)
    args = ["extract", "--model", "squeezenet1_1", "--weights", str(weights), "--stimuli", str(folder),
            "--layers", "conv1", "fire3", "--out", str(tmp_path / "a.zarr"), "--no-progress"]
    assert main(args) == 0
    import xarray as xr

    fire3 = xr.open_zarr(tmp_path / "a.zarr", group="fire3", consolidated=False)["activation"]
    assert fire3.sizes["stimulus"] == 3 and fire3.attrs["alias"] == "fire3"
    assert main(args) == 0  # same run again: the complete store is resumed, nothing recomputed
    other = [a if a != "fire3" else "fire5" for a in args]
    assert main(other) == 2
    assert "different extraction" in capsys.readouterr().err


def test_unknown_model_is_a_clean_error(capsys):
    assert main(["extract", "--model", "alexnett", "--stimuli", "92images", "--out", "x.zarr"]) == 2
    assert "Did you mean 'alexnet'" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_writes_netcdf_and_figures(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n-bootstrap", "20", "--no-progress"]) == 0
    assert (out / "layers_vs_hit.nc").is_file() and (out / "layers_vs_hit_tau_a.png").is_file()
    result = io.load(out / "layers_vs_hit.nc")
    assert result.sizes["layer"] == 10 and "tau-a" in capsys.readouterr().out


def test_rf_table_and_unknown_analysis(capsys):
    assert main(["rf", "alexnet", "--layers", "conv1", "conv3"]) == 0
    out = capsys.readouterr().out
    assert "conv3" in out and " 99 " in out
    assert main(["analysis", "layers_vs_hitt"]) == 2
    assert "Did you mean 'layers_vs_hit'" in capsys.readouterr().err


def test_attribute_writes_netcdf(tmp_path):
    stim = tmp_path / "img.png"
    Image.fromarray(np.full((40, 40, 3), 120, dtype=np.uint8)).save(stim)
    weights = tmp_path / "squeeze.pth"
    torch.save(load_model(get_spec("squeezenet1_1"), weights=None)[0].state_dict(), weights)
    out = tmp_path / "att.nc"
    args = ["attribute", "--model", "squeezenet1_1", "--weights", str(weights), "--stimuli", str(stim),
            "--method", "saliency", "--layer", "fire3", "--channel", "2", "--out", str(out)]
    assert main(args) == 0
    result = io.load(out)
    assert result.dims[-1] == "rgb" and np.isfinite(result.values).all()
