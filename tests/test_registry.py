"""The open model registry: register_model as a call, a decorator and from the command line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import neurocnn as nc
from neurocnn import models
from neurocnn.cli import main
from neurocnn.exceptions import IntegrityError, MissingFileError, RegistrationError, UnknownNameError


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


@pytest.fixture
def cleanup():
    before = set(models.list_models())
    yield
    for name in set(models.list_models()) - before:
        models.unregister_model(name)


def test_decorator_registers_and_the_model_works_like_a_builtin(cleanup, tmp_path):
    @nc.register_model("tiny_net", aliases={"conv": "0", "relu": "1", "logits": "4"},
                       default_layers=["conv", "logits"], categories=["cat", "dog"],
                       preprocessing=models.Preprocessing(resize=(8, 8), crop=None))
    def tiny_net():
        return _tiny()

    assert tiny_net().__class__ is nn.Sequential  # the decorator returns the builder unchanged
    assert "tiny_net" in models.list_models()
    ref, _ = models.load_model(models.get_spec("tiny_net"), weights=None, seed=2)
    path = tmp_path / "tiny.pth"
    torch.save(ref.state_dict(), path)
    subject = nc.VirtualSubject("tiny_net", weights=path)
    assert subject.default_layers == ["conv", "logits"]
    acts = subject.activations(nc.stimuli.synthetic_stimuli(3, size=16), ["conv", "relu"], progress=False)
    assert acts["conv"].sizes["channel"] == 4 and acts["conv"].attrs["model"] == "tiny_net"
    x = models.get_spec("tiny_net").preprocessing(nc.stimuli.synthetic_stimuli(3, size=16).load(0))[None]
    with torch.no_grad():
        expected = ref[0](x)[0].numpy()
    np.testing.assert_allclose(acts["conv"].isel(stimulus=0).values, expected, rtol=1e-5, atol=1e-6)
    assert float(acts["relu"].min()) >= 0


def test_bare_decorator_and_call_forms(cleanup, tmp_path):
    @models.register_model
    def bare_net():
        return _tiny()

    assert models.get_spec("bare_net").builder is bare_net
    path = tmp_path / "w.pth"
    torch.save(_tiny().state_dict(), path)
    spec = models.register_model("called_net", builder=_tiny, weights=path, categories="imagenet")
    assert spec.categories[285] == "Egyptian cat"
    model, sha = models.load_model(spec)  # "pretrained" is the registered file
    assert sha == nc.datasets.sha256sum(path)
    again = models.register_model(models.ModelSpec(name="spec_net", builder=_tiny))
    assert models.get_spec("spec_net") is again


def test_registered_weights_are_hash_checked(cleanup, tmp_path):
    path = tmp_path / "w.pth"
    torch.save(_tiny().state_dict(), path)
    models.register_model("hashed_net", builder=_tiny, weights=path, weights_sha256="0" * 64)
    with pytest.raises(IntegrityError, match="weights_sha256"):
        nc.VirtualSubject("hashed_net")
    path.unlink()
    with pytest.raises(MissingFileError, match="does not exist"):
        nc.VirtualSubject("hashed_net")


def test_duplicates_and_bad_specs_are_refused(cleanup, tmp_path):
    models.register_model("dup_net", builder=_tiny)
    with pytest.raises(RegistrationError, match="already registered.*replace=True"):
        models.register_model("dup_net", builder=_tiny)
    models.register_model("dup_net", builder=_tiny, description="second", replace=True)
    assert models.get_spec("dup_net").description == "second"
    with pytest.raises(RegistrationError, match="built-in"):
        models.register_model("alexnet", builder=_tiny, replace=True)
    with pytest.raises(RegistrationError, match="built-in"):
        models.unregister_model("alexnet")
    bad = {
        "must start with a letter": dict(name_or_spec="9net", builder=_tiny),
        "builder must be callable": dict(name_or_spec=models.ModelSpec(name="x_net", builder=3)),
        "neither a data-manifest key nor an existing file": dict(name_or_spec="w_net", builder=_tiny,
                                                                  weights=tmp_path / "missing.pth"),
        r"alias 'conv' -> '7'.*Its modules are: 0, 1": dict(name_or_spec="a_net", builder=_tiny, aliases={"conv": "7"}),
        "default layer 'fc9'": dict(name_or_spec="d_net", builder=_tiny, default_layers=["fc9"]),
        "not a torch.nn.Module": dict(name_or_spec="m_net", builder=lambda: 42),
        "builder failed": dict(name_or_spec="f_net", builder=lambda: 1 / 0),
        "categories='imagenet1k'": dict(name_or_spec="c_net", builder=_tiny, categories="imagenet1k"),
        "sequence of str": dict(name_or_spec="s_net", builder=_tiny, default_layers=[1, 2]),
        "64 hex digits": dict(name_or_spec="h_net", builder=_tiny, weights_sha256="abc"),
    }
    for message, kwargs in bad.items():
        with pytest.raises(RegistrationError, match=message):
            models.register_model(kwargs.pop("name_or_spec"), **kwargs)
    assert not {"x_net", "w_net", "a_net", "d_net", "m_net", "f_net"} & set(models.list_models())
    with pytest.raises(UnknownNameError, match="Did you mean 'dup_net'"):
        models.unregister_model("dup_nett")


def test_cli_imports_a_users_models_file(cleanup, tmp_path, capsys):
    script = tmp_path / "mymodels.py"
    script.write_text(
        "from torch import nn\n"
        "import neurocnn as nc\n\n"
        "@nc.register_model('cli_net', aliases={'conv': '0'}, default_layers=['conv'],\n"
        "                   description='my two-layer net')\n"
        "def cli_net():\n"
        "    return nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU())\n"
    )
    assert main(["--import", str(script), "models"]) == 0
    assert "my two-layer net" in capsys.readouterr().out
    models.unregister_model("cli_net")  # each CLI run is a fresh process; here it is one process
    assert main(["--import", str(script), "layers", "cli_net"]) == 0
    assert "* 0" in capsys.readouterr().out
    models.unregister_model("cli_net")
    folder = tmp_path / "stim"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 60 * i, dtype=np.uint8)).save(folder / f"s{i}.png")
    weights = tmp_path / "w.pth"
    torch.save(nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU()).state_dict(), weights)
    args = ["--import", str(script), "extract", "--model", "cli_net", "--weights", str(weights),
            "--stimuli", str(folder), "--out", str(tmp_path / "a.zarr"), "--no-progress"]
    assert main(args) == 0
    import xarray as xr

    conv = xr.open_zarr(tmp_path / "a.zarr", group="conv", consolidated=False)["activation"]
    assert conv.sizes["stimulus"] == 2 and conv.attrs["model"] == "cli_net"
    assert main(["--import", str(tmp_path / "nope.py"), "models"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["--import", "no_such_module_xyz", "models"]) == 2


def test_entry_point_plugins_are_registered_on_first_use(cleanup, monkeypatch):
    import importlib.metadata
    import sys
    import types

    plugin = types.ModuleType("neurocnn_fake_plugin")
    plugin.specs = lambda: [models.ModelSpec(name="plugin_net", builder=_tiny, description="from a plugin")]
    monkeypatch.setitem(sys.modules, "neurocnn_fake_plugin", plugin)
    good = importlib.metadata.EntryPoint(name="fake", value="neurocnn_fake_plugin:specs", group="neurocnn.models")
    monkeypatch.setattr(models.importlib.metadata, "entry_points", lambda group: [good])
    monkeypatch.setattr(models, "_plugins_loaded", False)
    assert models.get_spec("plugin_net").description == "from a plugin"
    missing = importlib.metadata.EntryPoint(name="gone", value="no_such_plugin_xyz:specs", group="neurocnn.models")
    monkeypatch.setattr(models.importlib.metadata, "entry_points", lambda group: [missing])
    monkeypatch.setattr(models, "_plugins_loaded", False)
    with pytest.raises(RegistrationError, match="'gone'.*failed to load"):
        models.list_models()
