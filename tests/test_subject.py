"""VirtualSubject: batched extraction, hooks, pre/post ReLU, streaming to zarr."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from neurocnn import Preprocessing, VirtualSubject, io, load_stimuli
from neurocnn.exceptions import InvalidDataError, OverwriteError, UnknownNameError

IDENTITY = Preprocessing(resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class Recorder(nn.Module):
    """Identity that counts its calls and raises on a bright batch."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.fail_on_value = None

    def forward(self, x):
        self.calls += 1
        if x.mean() > 0.9:
            raise RuntimeError("boom")
        if self.fail_on_value is not None and torch.isclose(x.mean(), torch.tensor(self.fail_on_value)):
            raise KeyboardInterrupt
        return x


class Tiny(nn.Module):
    """conv (channel 0 = +mean of the 3x3x3 patch, channel 1 = -mean) -> in-place ReLU -> pool -> fc."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight[0] = 1 / 27
            self.conv.weight[1] = -1 / 27
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(2, 2)
        self.recorder = Recorder()

    def forward(self, x):
        x = self.relu(self.conv(self.recorder(x)))
        return self.fc(self.flat(self.pool(x)))


def _images(values):
    return np.stack([np.full((6, 6, 3), v, dtype=np.float32) for v in values])


@pytest.fixture()
def tiny():
    return VirtualSubject(Tiny(), preprocessing=IDENTITY, name="tiny")


def test_conv_layer_is_pre_relu_even_with_inplace_relu(tiny):
    acts = tiny.activations(_images([0.5, 0.25]), ["conv", "relu"], progress=False)
    conv, relu = acts["conv"], acts["relu"]
    assert conv.dims == ("stimulus", "channel", "y", "x")
    # interior pixels see the full 3x3 patch: +0.5 and -0.5
    assert conv.values[0, 0, 2, 2] == pytest.approx(0.5)
    assert conv.values[0, 1, 2, 2] == pytest.approx(-0.5)
    assert relu.values[0, 1].max() == 0.0
    assert conv.attrs["relu"] == "pre-activation" and relu.attrs["relu"] == "post-activation"


def test_vector_layer_dims_and_provenance(tiny):
    fc = tiny.activations(_images([0.5]), "fc", progress=False)
    assert fc.dims == ("stimulus", "unit") and fc.shape == (1, 2)
    for key in ("model", "weights_sha256", "layer", "alias", "relu", "preprocessing", "neurocnn_version"):
        assert isinstance(fc.attrs[key], str)
    assert fc.attrs["model"] == "tiny" and len(fc.attrs["weights_sha256"]) == 64


def test_forward_stops_after_last_requested_layer(tiny):
    tiny.activations(_images([0.5]), "recorder", progress=False)
    tiny.model.recorder.calls = 0
    probe = tiny.model.fc
    called = []
    handle = probe.register_forward_hook(lambda *a: called.append(1))
    try:
        tiny.activations(_images([0.5, 0.5]), "conv", batch_size=1, progress=False)
    finally:
        handle.remove()
    assert tiny.model.recorder.calls == 2 and called == []


def test_hooks_removed_after_exception_mid_batch(tiny):
    with pytest.raises(RuntimeError, match="boom"):
        tiny.activations(_images([0.1, 1.0]), ["conv", "fc"], batch_size=1, progress=False)
    for module in tiny.model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_unknown_layer_suggests_alias():
    subject = VirtualSubject("alexnet", weights=None)
    with pytest.raises(UnknownNameError, match="Did you mean 'conv3'"):
        subject.resolve_layer("conv_3")
    assert subject.resolve_layer("conv3") == "features.6"
    assert subject.alias_of("features.6") == "conv3"


def test_shared_module_is_refused():
    subject = VirtualSubject("resnet18", weights=None)
    with pytest.raises(UnknownNameError, match="runs 2 times"):
        subject.forward_layers(torch.zeros(1, 3, 64, 64), ["layer1.0.relu"])
    assert subject.forward_layers(torch.zeros(1, 3, 64, 64), ["block1"])["block1"].shape == (1, 64, 16, 16)


def test_alexnet_shapes_with_random_weights():
    subject = VirtualSubject("alexnet", weights=None, seed=0)
    acts = subject.activations(np.zeros((2, 224, 224, 3), dtype=np.uint8), ["conv1", "pool5", "fc7"], progress=False)
    assert acts["conv1"].shape == (2, 64, 55, 55)
    assert acts["pool5"].shape == (2, 256, 6, 6)
    assert acts["fc7"].shape == (2, 4096)
    assert acts["fc7"].attrs["weights_sha256"] == "random-init-seed-0"


def test_store_streams_to_zarr_and_matches_memory(tiny, tmp_path):
    images = _images([0.1, 0.2, 0.3, 0.4, 0.5])
    mem = tiny.activations(images, ["conv", "fc"], batch_size=2, progress=False)
    disk = tiny.activations(images, ["conv", "fc"], batch_size=2, store=tmp_path / "a.zarr", progress=False)
    for name in ("conv", "fc"):
        assert disk[name].chunks is not None  # lazy, dask-backed
        np.testing.assert_array_equal(disk[name].values, mem[name].values)
        assert list(disk[name].stimulus.values) == list(mem[name].stimulus.values)
    with pytest.raises(OverwriteError, match="different extraction.*stimulus_ids_sha256"):
        tiny.activations(images[:3], ["conv", "fc"], batch_size=2, store=tmp_path / "a.zarr", progress=False)
    with pytest.raises(OverwriteError, match="batch_size"):
        tiny.activations(images, ["conv", "fc"], batch_size=3, store=tmp_path / "a.zarr", progress=False)
    replaced = tiny.activations(images[:3], "conv", store=tmp_path / "a.zarr", overwrite=True, progress=False)
    assert replaced.sizes["stimulus"] == 3


def test_killed_extraction_resumes_bit_for_bit(tiny, tmp_path):
    images = _images([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    full = tiny.activations(images, ["conv", "fc"], batch_size=2, progress=False)
    recorder = tiny.model.recorder
    recorder.fail_on_value = 0.55  # the batch holding stimuli 4 and 5
    with pytest.raises(KeyboardInterrupt):
        tiny.activations(images, ["conv", "fc"], batch_size=2, store=tmp_path / "r.zarr", progress=False)
    recorder.fail_on_value = None
    recorder.calls = 0
    resumed = tiny.activations(images, ["conv", "fc"], batch_size=2, store=tmp_path / "r.zarr", progress=False)
    assert recorder.calls == 2  # only the two batches that were not written
    for name in ("conv", "fc"):
        np.testing.assert_array_equal(resumed[name].values, full[name].values)
    recorder.calls = 0
    tiny.activations(images, ["conv", "fc"], batch_size=2, store=tmp_path / "r.zarr", progress=False)
    assert recorder.calls == 0  # complete: nothing recomputed


def test_pretrained_lite0_matches_hand_written_hook_oracle(lite0, stimuli92):
    layers = ["stage4", "head", "logits"]
    acts = lite0.activations(stimuli92, layers, batch_size=23, progress=False)
    stored = {}
    modules = {name: lite0.module(name) for name in layers}
    handles = [m.register_forward_hook(lambda _m, _i, o, n=n: stored.__setitem__(n, o.detach().clone()))
               for n, m in modules.items()]
    try:
        x = torch.stack([lite0.preprocessing(stimuli92.load(i)) for i in range(len(stimuli92))])
        with torch.no_grad():
            lite0.model(x)
    finally:
        for h in handles:
            h.remove()
    for name in layers:
        diff = np.abs(acts[name].values - stored[name].numpy()).max()
        assert diff < 1e-4, (name, diff)
    assert acts["stage4"].shape == (92, 80, 14, 14) and acts["head"].shape == (92, 1280, 7, 7)
    assert acts["logits"].shape == (92, 1000)
    assert list(acts["head"].coords["category"].values[:1]) == ["human bodypart"]


def test_pretrained_lite0_classifies_skimage_cat(lite0):
    skdata = pytest.importorskip("skimage.data")
    result = lite0.classify(skdata.chelsea()[None], top_k=3)
    assert result.class_name.values[0, 0] == "Egyptian cat"
    assert result.probability.values[0, 0] > 0.5
    coffee = lite0.classify(skdata.coffee()[None], top_k=3)
    assert coffee.class_name.values[0, 0] == "espresso"


def test_netcdf_round_trip_of_activations(tiny, tmp_path):
    acts = tiny.activations(load_stimuli(_images([0.3, 0.6]), metadata={"cond": ["a", "b"]}), "conv", progress=False)
    io.save(acts, tmp_path / "acts.nc")
    back = io.load(tmp_path / "acts.nc")
    assert isinstance(back, xr.DataArray)
    xr.testing.assert_identical(back, acts)


@pytest.mark.filterwarnings("ignore:Couldn't detect a suitable IP address")
def test_dask_workers_write_the_store(tiny, tmp_path):
    distributed = pytest.importorskip("distributed")
    images = _images([0.1, 0.2, 0.3, 0.4, 0.5])
    mem = tiny.activations(images, ["conv", "fc"], batch_size=2, progress=False)
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
        disk = tiny.activations(images, ["conv", "fc"], batch_size=2, store=tmp_path / "d.zarr",
                                client=client, progress=False)
    for name in ("conv", "fc"):
        np.testing.assert_array_equal(disk[name].values, mem[name].values)
    with pytest.raises(InvalidDataError, match="store="):
        tiny.activations(images, "conv", client="local", progress=False)
