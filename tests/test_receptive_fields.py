"""Receptive fields: hand-weighted nets with RFs known on paper, AlexNet sizes, real weights."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

import neurocnn as nc
from neurocnn.exceptions import InvalidDataError, ShapeMismatchError, StimulusError, UnknownNameError
from neurocnn.receptive_fields import (
    RFBox,
    empirical_rf,
    empirical_rfs,
    occlude,
    plot_discrepancy_maps,
    plot_rf_sizes,
    plot_rfs,
    rf_box,
    rf_size_summary,
    theoretical_rf,
)

IDENTITY = nc.Preprocessing(resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _tiny_subject(padding: int = 0) -> nc.VirtualSubject:
    """conv 3x3 stride 1 -> ReLU -> conv 3x3 stride 2 -> ReLU, all weights 1, no bias.

    On paper: unit (y, x) of layer "2" sees input rows 2y - 2p .. 2y - 2p + 4 (5 px,
    stride 2, start -p - p * 1 = -2p for padding p in both convs).
    """
    net = nn.Sequential(
        nn.Conv2d(3, 1, 3, padding=padding, bias=False), nn.ReLU(),
        nn.Conv2d(1, 1, 3, stride=2, padding=padding, bias=False), nn.ReLU(),
    )
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0)
    return nc.VirtualSubject(net, preprocessing=IDENTITY, name="tiny")


def _positive_images(n: int = 4, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 1.0, (n, size, size, 3)).astype(np.float32)


# ---------------------------------------------------------------- theoretical
@pytest.mark.parametrize("padding", [0, 1])
def test_tiny_theoretical_rf_matches_paper(padding):
    rf = theoretical_rf(_tiny_subject(padding), ["0", "2"], input_size=16)
    assert rf["size"].sel(layer="0").values.tolist() == [3, 3]
    assert rf["size"].sel(layer="2").values.tolist() == [5, 5]
    assert rf["stride"].sel(layer="2").values.tolist() == [2, 2]
    assert rf["start"].sel(layer="2").values.tolist() == [-2 * padding] * 2
    box = rf_box(_tiny_subject(padding), "2", 3, 1, input_size=16)
    assert box == RFBox(6 - 2 * padding, 11 - 2 * padding, 2 - 2 * padding, 7 - 2 * padding)


def test_alexnet_theoretical_sizes():
    subject = nc.VirtualSubject("alexnet", weights=None, seed=0)
    layers = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"]
    rf = theoretical_rf(subject, layers)
    assert rf["size"].sel(axis="y").values.tolist() == [11, 19, 51, 67, 99, 131, 163, 195]
    assert rf["stride"].sel(axis="x").values.tolist() == [4, 8, 8, 16, 16, 16, 16, 32]
    assert rf["start"].sel(axis="y", layer="conv1").item() == -2
    assert rf["dotted"].sel(layer="conv3").item() == "features.6"
    assert rf.attrs["input_height"] == 224 and rf.attrs["model"] == "alexnet"
    # default: the spatial default layers only (conv1..conv5, not fc6..fc8)
    assert list(theoretical_rf(subject)["layer"].values) == [f"conv{i}" for i in range(1, 6)]


def _positive_surrogate(subject: nc.VirtualSubject) -> nn.Module:
    """Same geometry, but linear and positive: every in-RF pixel has a nonzero gradient."""
    model = copy.deepcopy(subject.model).double()
    names = dict(model.named_modules())
    for name, module in names.items():
        parent, _, child = name.rpartition(".")
        owner = names[parent] if parent else model
        if isinstance(module, (nn.ReLU, nn.ReLU6)):
            setattr(owner, child, nn.Identity())
        elif isinstance(module, nn.MaxPool2d):
            setattr(owner, child, nn.AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
                module.running_var.fill_(1.0 - module.eps)
    return model


@pytest.mark.parametrize(
    ("model", "layer", "unit"),
    [("resnet18", "block2", (14, 9)), ("efficientnet_lite0", "stage3", (13, 27)), ("alexnet", "pool2", (6, 0))],
)
def test_theoretical_box_equals_gradient_support(model, layer, unit, lite0):
    """Oracle: the support of d unit / d input in a positive linear surrogate is the RF box."""
    subject = lite0 if model == lite0.name else nc.VirtualSubject(model, weights=None, seed=0)
    surrogate = _positive_surrogate(subject)
    captured = []

    def stop(_module, _inputs, output):
        captured.append(output)
        raise StopIteration

    module = dict(surrogate.named_modules())[subject.resolve_layer(layer)]
    handle = module.register_forward_hook(stop)
    image = torch.ones(1, 3, 224, 224, dtype=torch.float64, requires_grad=True)
    try:
        surrogate(image)
    except StopIteration:
        pass
    finally:
        handle.remove()
    captured[0][0, :, unit[0], unit[1]].sum().backward()
    rows, cols = np.nonzero(image.grad[0].abs().sum(0).numpy() > 0)
    box = rf_box(subject, layer, *unit, clip=True)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == tuple(box)
    assert len(rows) == (box.y1 - box.y0) * (box.x1 - box.x0)


def test_efficientnet_sizes_sane(lite0):
    rf = theoretical_rf(lite0)
    sizes = rf["size"].sel(axis="y").values
    assert rf["layer"].values[0] == "stem" and sizes[0] == 3
    assert np.all(np.diff(sizes) >= 0) and sizes[-1] > 224
    # TF "SAME" padding of a stride-2 conv on an even map pads only bottom/right
    assert rf["start"].sel(layer="stem").values.tolist() == [0, 0]
    assert "logits" not in rf["layer"].values


def test_theoretical_bad_input():
    subject = _tiny_subject()
    with pytest.raises(UnknownNameError, match="Did you mean '2'"):
        theoretical_rf(subject, ["22"], input_size=16)
    with pytest.raises(InvalidDataError, match="valid x: 0..5"):
        rf_box(subject, "2", 0, 6, input_size=16)
    with pytest.raises(ShapeMismatchError, match="input_size"):
        theoretical_rf(subject, ["2"])
    flat = nc.VirtualSubject(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten()), preprocessing=IDENTITY)
    with pytest.raises(ShapeMismatchError, match="spatial"):
        theoretical_rf(flat, ["1"], input_size=8)
    upsample = nc.VirtualSubject(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Upsample(scale_factor=2)), preprocessing=IDENTITY)
    with pytest.raises(ShapeMismatchError, match="not modelled"):
        theoretical_rf(upsample, ["1"], input_size=8)


# ------------------------------------------------------------------ empirical
def test_occlude_pastes_patches_without_touching_input():
    image = torch.ones(3, 6, 6)
    out = occlude(image, torch.zeros(2, 3, 2, 2), torch.tensor([0, 3]), torch.tensor([1, 4]))
    expected = torch.ones(2, 3, 6, 6)
    expected[0, :, 0:2, 1:3] = 0
    expected[1, :, 3:5, 4:6] = 0
    assert torch.equal(out, expected)
    assert torch.equal(image, torch.ones(3, 6, 6))


def test_tiny_empirical_rf_is_exactly_the_theoretical_box():
    subject = _tiny_subject()
    result = empirical_rf(subject, "2", [0], _positive_images(), top_k=3, window=1, stride=1,
                          fill="mean", threshold=0.0, progress=False)
    for k in range(3):
        y, x = int(result["unit_y"][0, k]), int(result["unit_x"][0, k])
        box = rf_box(subject, "2", y, x, clip=True, input_size=16)
        inside = np.zeros((16, 16), bool)
        inside[box.y0:box.y1, box.x0:box.x1] = True
        d = result["discrepancy"].values[0, k]
        assert np.all(d[inside] > 0)
        np.testing.assert_allclose(d[~inside], 0.0, atol=1e-5)  # occluding outside changes nothing
    rf = result["rf"].isel(unit=0)
    support = rf.where(rf > 1e-5, drop=True)
    assert support["dy"].values.tolist() == [-2, -1, 0, 1, 2]
    assert support["dx"].values.tolist() == [-2, -1, 0, 1, 2]
    assert result["size"].item() == pytest.approx(5.0)  # threshold 0: the full 5 x 5 box
    assert result.attrs["theoretical_size_y"] == 5 and result.attrs["fill"] == "mean"


def test_tiny_empirical_window_dilates_support_by_window():
    subject = _tiny_subject()
    result = empirical_rf(subject, "2", [0], _positive_images(), top_k=1, window=3, stride=1,
                          fill="mean", threshold=0.0, progress=False)
    y, x = int(result["unit_y"][0, 0]), int(result["unit_x"][0, 0])
    box = rf_box(subject, "2", y, x, input_size=16)
    d = result["discrepancy"].isel(unit=0, rank=0)
    # occluder centred at c covers c-1..c+1: it overlaps the box iff y0-1 <= c <= y1
    overlap = ((d["y"] >= box.y0 - 1) & (d["y"] <= box.y1)) & ((d["x"] >= box.x0 - 1) & (d["x"] <= box.x1))
    assert np.all(d.where(overlap, drop=True).values > 0)
    np.testing.assert_allclose(d.where(~overlap).fillna(0).values, 0.0, atol=1e-5)


def test_empirical_equals_brute_force_occlusion_everywhere():
    """Skipped occluders (outside the RF) really change nothing: compare with every position run."""
    subject = _tiny_subject(padding=1)
    images = _positive_images(n=2)
    result = empirical_rf(subject, "2", [0], images, top_k=1, window=3, stride=2, fill="mean", progress=False)
    image = torch.as_tensor(images[int(result["stimulus"].item())]).permute(2, 0, 1)
    y, x = int(result["unit_y"].item()), int(result["unit_x"].item())
    copies = []
    for top in range(0, 14, 2):
        for left in range(0, 14, 2):
            copy_ = image.clone()
            copy_[:, top:top + 3, left:left + 3] = 0.0
            copies.append(copy_)
    with torch.inference_mode():
        acts = subject.forward_layers(torch.stack([image, *copies]), ["2"])["2"][:, 0, y, x].numpy()
    brute = (acts[0] - acts[1:]).reshape(7, 7)
    np.testing.assert_allclose(result["discrepancy"].values[0, 0], brute, atol=1e-5)
    assert (brute == 0).any() and (brute > 0).any()


def test_empirical_top_images_and_sharing():
    subject = _tiny_subject()
    images = _positive_images(n=5)
    result = empirical_rf(subject, "2", [0, 0], images, top_k=2, window=2, stride=2, fill="random",
                          seed=3, progress=False)
    with torch.inference_mode():
        acts = subject.forward_layers(torch.as_tensor(images).permute(0, 3, 1, 2), ["2"])["2"]
    peaks = acts.flatten(1).max(1).values.numpy()
    expected = [str(i) for i in np.argsort(-peaks)[:2]]
    assert result["stimulus"].values[0].tolist() == expected
    np.testing.assert_allclose(result["activation"].values[0], np.sort(peaks)[::-1][:2], rtol=1e-5)
    # the same channel twice gets identical maps; the random fill is seeded
    np.testing.assert_array_equal(result["discrepancy"].values[0], result["discrepancy"].values[1])
    again = empirical_rf(subject, "2", [0], images, top_k=2, window=2, stride=2, fill="random",
                         seed=3, batch_size=7, progress=False)
    np.testing.assert_allclose(again["discrepancy"].values[0], result["discrepancy"].values[0], rtol=1e-4, atol=1e-4)
    other = empirical_rf(subject, "2", [0], images, top_k=2, window=2, stride=2, fill="random",
                         seed=4, progress=False)
    assert not np.allclose(other["discrepancy"].values[0], result["discrepancy"].values[0])
    assert result.attrs["seed"] == 3 and result.attrs["n_occluders"] == 64


def test_empirical_roundtrip_and_plots(tmp_path):
    subject = _tiny_subject()
    result = empirical_rf(subject, "2", [0], _positive_images(), top_k=2, window=1, stride=1,
                          fill="mean", progress=False)
    path = nc.save(result, tmp_path / "rf.nc")
    back = nc.load(path)
    xr.testing.assert_allclose(back["rf"], result["rf"])
    summary = rf_size_summary([result], theoretical_rf(subject, ["2"], input_size=16))
    assert summary["theoretical_size"].item() == 5.0 and summary["n_units"].item() == 1
    for fig in (plot_discrepancy_maps(result, 0), plot_rfs(result), plot_rf_sizes(summary)):
        assert fig.axes


def test_empirical_bad_input():
    subject = _tiny_subject()
    images = _positive_images(n=3)
    with pytest.raises(InvalidDataError, match="1 channels"):
        empirical_rf(subject, "2", [1], images, top_k=1, progress=False)
    with pytest.raises(InvalidDataError, match="non-negative"):
        empirical_rf(subject, "2", [-1], images, top_k=1, progress=False)
    with pytest.raises(StimulusError, match="top_k=4"):
        empirical_rf(subject, "2", [0], images, top_k=4, progress=False)
    with pytest.raises(ShapeMismatchError, match="larger than the 16 x 16"):
        empirical_rf(subject, "2", [0], images, top_k=1, window=17, progress=False)
    with pytest.raises(UnknownNameError, match="Did you mean 'mean'"):
        empirical_rf(subject, "2", [0], images, top_k=1, fill="meen", progress=False)
    with pytest.raises(InvalidDataError, match="unit=3"):
        plot_rfs(empirical_rf(subject, "2", [0], images, top_k=1, stride=4, progress=False), [3])


def _deep_tiny_subject() -> nc.VirtualSubject:
    """Four seeded 3x3 convs (stride 1, 2, 2, 2, padding 1): layer "6" (RF 17 px) sees all of a 12 px image."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, stride=2, padding=1),
                        nn.ReLU())
    return nc.VirtualSubject(net.eval(), preprocessing=IDENTITY, name="deep_tiny")


def test_empirical_rfs_share_whole_image_passes_and_equal_one_layer_runs():
    """Several layers at once give each layer's empirical_rf result; whole-image maps share passes."""
    subject = _deep_tiny_subject()
    images = _positive_images(n=6, size=12)
    kwargs = {"top_k": 3, "window": 3, "stride": 1, "fill": "random", "seed": 2, "progress": False}
    units = {"0": [1, 3], "2": [0], "6": [0, 2], "7": [1]}
    together = empirical_rfs(subject, units, images, **kwargs)
    assert list(together) == list(units)
    for layer, channels in units.items():
        alone = empirical_rf(subject, layer, channels, images, **kwargs)
        xr.testing.assert_allclose(together[layer][["discrepancy", "rf", "size"]], alone[["discrepancy", "rf", "size"]],
                                   rtol=1e-5, atol=1e-6)
        assert together[layer]["stimulus"].values.tolist() == alone["stimulus"].values.tolist()
    # layer "0" (3 px RFs) runs on crops; "6" and "7" (RF 17 px > 12 px image) on shared whole images
    assert together["0"].attrs["occlusion_mode"] == "crop" and together["0"].attrs["n_shared_full_maps"] == 0
    for layer in ("6", "7"):
        attrs = together[layer].attrs
        assert attrs["occlusion_mode"] == "full" and "whole image" in attrs["occlusion_reason"]
        assert attrs["n_shared_full_maps"] > 0 and attrs["occlusion_seconds"] > 0
    assert empirical_rf(subject, "6", [0], images, **kwargs).attrs["n_shared_full_maps"] == 0


def _cut_subject(skip: bool) -> nc.VirtualSubject:
    """Six seeded 3x3 convs (strides 1, 1, 2, 2, 2, 2; padding 1): conv "c6" (RF 35 px) sees all of 32 px.

    With ``skip`` a shortcut adds the first ReLU's output to the second ReLU's, so no cut
    between them is clean (that value is read again after the cut).
    """

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.c1, self.r1 = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()
            self.c2, self.r2 = nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()
            self.c3 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
            self.c4 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
            self.c5 = nn.Conv2d(4, 3, 3, stride=2, padding=1)
            self.c6 = nn.Conv2d(3, 3, 3, stride=2, padding=1)

        def forward(self, x):
            a = self.r1(self.c1(x))
            b = self.r2(self.c2(a))
            b = b + a if skip else b
            return self.c6(torch.relu(self.c5(torch.relu(self.c4(torch.relu(self.c3(b)))))))

    return nc.VirtualSubject(Net().eval(), preprocessing=IDENTITY, name="cut_skip" if skip else "cut")


@pytest.mark.parametrize("skip", [False, True])
def test_whole_image_maps_from_a_frontier_equal_plain_whole_image_passes(skip):
    """Deep units (RF > image) evaluated from an early layer's output, recomputed only where each occluder
    reaches, equal plain whole-image passes; a shortcut across the cut rules that layer out."""
    subject = _cut_subject(skip)
    images = _positive_images(n=4, size=32)
    kwargs = {"top_k": 2, "window": 3, "stride": 2, "fill": "random", "seed": 1, "progress": False}
    units = {"c6": [0, 2]}
    auto = empirical_rfs(subject, units, images, **kwargs)
    full = empirical_rfs(subject, units, images, occlusion="full", **kwargs)
    for layer in units:
        assert auto[layer].attrs["occlusion_mode"] == "full"
        assert full[layer].attrs["occlusion_frontier"] == ""
        np.testing.assert_allclose(auto[layer]["discrepancy"].values, full[layer]["discrepancy"].values,
                                   rtol=1e-5, atol=1e-5)
        assert np.abs(full[layer]["discrepancy"].values).max() > 0
    # r2 (5 px RFs, stride 1): an occluder changes a 7 x 7 block of its map (an 11 x 11 px crop, 12% of the
    # image); the shortcut reads r1's output after r2, so only a cut right after r1 is clean
    assert auto["c6"].attrs["occlusion_frontier"] == ("r1" if skip else "r2")


def test_large_crops_run_as_whole_images_in_auto_mode():
    """A crop over half the image costs about a whole image: "auto" runs it as one (same values)."""
    subject = _deep_tiny_subject()
    images = _positive_images(n=3, size=12)
    kwargs = {"top_k": 2, "window": 3, "stride": 1, "fill": "mean", "progress": False}
    auto = empirical_rf(subject, "4", [0, 1, 2], images, **kwargs)  # 9 px RFs, stride 4, on 12 px
    crop = empirical_rf(subject, "4", [0, 1, 2], images, occlusion="crop", **kwargs)
    assert crop.attrs["occlusion_mode"] == "crop"
    assert auto.attrs["n_full_maps"] > 0 and "over 50% of the image" in auto.attrs["occlusion_reason"]
    np.testing.assert_allclose(auto["discrepancy"].values, crop["discrepancy"].values, rtol=1e-5, atol=1e-6)


def test_empirical_rfs_bad_input():
    subject = _deep_tiny_subject()
    images = _positive_images(n=3, size=12)
    with pytest.raises(InvalidDataError, match="map layer names to channels"):
        empirical_rfs(subject, {}, images, top_k=1, progress=False)
    with pytest.raises(InvalidDataError, match="map layer names to channels"):
        empirical_rfs(subject, ["6"], images, top_k=1, progress=False)
    with pytest.raises(InvalidDataError, match="Channel 7 is out of range: layer '6' has 3 channels"):
        empirical_rfs(subject, {"0": [0], "6": [7]}, images, top_k=1, progress=False)
    with pytest.raises(UnknownNameError):
        empirical_rfs(subject, {"0": [0], "conv9": [0]}, images, top_k=1, progress=False)


# ------------------------------------------------------------- real weights
@pytest.mark.slow
def test_pretrained_lite0_empirical_rfs_smaller_than_theoretical(lite0, stimuli92, mirror):
    stim = stimuli92.subset(range(12))
    results = [
        empirical_rf(lite0, layer, [0], stim, top_k=2, window=11, stride=16, progress=False)
        for layer in ("stage2", "stage5")
    ]
    summary = rf_size_summary(results)
    for result in results:
        assert np.all(result["rf"].max(("dy", "dx")).values > 0)
    # deep layer: the empirical RF is far smaller than its 339 px theoretical RF (Zhou et al.)
    assert summary["empirical_mean"].sel(layer="stage5").item() < summary["theoretical_size"].sel(layer="stage5").item()


def test_pretrained_lite0_unit_has_nonzero_rf_inside_image(lite0, stimuli92, mirror):
    result = empirical_rf(lite0, "stage2", [3], stimuli92.subset(range(4)), top_k=1, window=11,
                          stride=28, progress=False)
    d = result["discrepancy"].isel(unit=0, rank=0)
    assert float(abs(d).max()) > 0
    # stage2 RFs are 19 px: occluders far from the unit leave it unchanged
    cy, cx = float(result["centre_y"][0, 0]), float(result["centre_x"][0, 0])
    far = (abs(d["y"] - cy) > 19) | (abs(d["x"] - cx) > 19)
    np.testing.assert_allclose(d.where(far).fillna(0).values, 0.0, atol=1e-4)


def test_pretrained_lite0_deep_maps_from_the_frontier_equal_whole_image_passes(lite0, stimuli92, mirror):
    """EfficientNet-Lite0 stage6 (787 px RF): occluded images evaluated from stage2 on (TF-"SAME" padding on
    the crops) give the whole-image passes' values."""
    kwargs = {"top_k": 1, "window": 11, "stride": 32, "progress": False}
    stim = stimuli92.subset(range(2))
    auto = empirical_rf(lite0, "stage6", [5], stim, **kwargs)
    full = empirical_rf(lite0, "stage6", [5], stim, occlusion="full", **kwargs)
    assert auto.attrs["occlusion_frontier"] == lite0.resolve_layer("stage2")
    np.testing.assert_allclose(auto["discrepancy"].values, full["discrepancy"].values, rtol=1e-5, atol=1e-5)
    assert np.abs(full["discrepancy"].values).max() > 0
