"""Crop-based occlusion is exact: a unit's value on its stride-aligned RF crop equals its value
on the full image, for every unit (border units included) of hand-weighted nets with static
and TF-"SAME" padding, ceil-mode pooling, branches and biases, and of every registry network;
where no crop is certified exact the full image is used, and the attrs say so."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import neurocnn as nc
from neurocnn.exceptions import ShapeMismatchError, UnknownNameError
from neurocnn.receptive_fields import RFCrop, empirical_rf, occlude, rf_box, rf_crop
from neurocnn.receptive_fields._geometry import _crop_box, _CropChecker, _traces

IDENTITY = nc.Preprocessing(resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class SameConv(nn.Conv2d):
    """TensorFlow "SAME" padding from the input size (written here, independent of neurocnn)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for n, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, 1, self.groups)


class Residual(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Fire(nn.Module):
    """Two branches (1x1 and 3x3 pad 1) concatenated along channels, as in SqueezeNet."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(c_in, c_out, 1), nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(torch.cat([self.a(x), self.b(x)], 1))


def _randomize(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and biases, batch norms with random running statistics (eval mode)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                scale = math.sqrt(module.weight[0].numel())
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / scale)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=gen))
            elif isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen))
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.weight.copy_(torch.randn(module.num_features, generator=gen))
                module.bias.copy_(torch.randn(module.num_features, generator=gen))
    return net.eval()


def _same_subject() -> nc.VirtualSubject:
    """TF-"SAME" padding (asymmetric, input-size dependent), stride 2 and 3, even kernels, BN, bias."""
    net = nn.Sequential(
        SameConv(3, 4, 3, stride=2, bias=False), nn.BatchNorm2d(4), nn.ReLU6(),
        SameConv(4, 4, 5, stride=2, groups=4), nn.ReLU6(),
        Residual(nn.Sequential(SameConv(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU())),
        SameConv(4, 3, 4, stride=3), nn.Hardswish(),
    )
    return nc.VirtualSubject(_randomize(net), preprocessing=IDENTITY, name="same")


def _static_subject() -> nc.VirtualSubject:
    """Static padding, ceil-mode max pooling, padded average pooling, dilation, branches, bias."""
    net = nn.Sequential(
        nn.Conv2d(3, 4, 5, padding=2), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        Fire(4, 3),
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        nn.Conv2d(6, 3, 3, padding=2, dilation=2), nn.ReLU(),
    )
    return nc.VirtualSubject(_randomize(net, seed=1), preprocessing=IDENTITY, name="static")


@pytest.fixture(autouse=True)
def _one_thread():
    """These nets are tiny: threads only add scheduling overhead (and stalls on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


HAND = {"same": _same_subject, "static": _static_subject}
HAND_LAYERS = {"same": ["2", "4", "5", "7"], "static": ["2", "3", "4", "5", "7"]}


def _image(hw: tuple[int, int], seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(seed)) * 2 - 0.5


def _crop_value(subject: nc.VirtualSubject, layer: str, image: torch.Tensor, crop: RFCrop) -> torch.Tensor:
    with torch.inference_mode():
        out = subject.forward_layers(image[:, :, crop.y0:crop.y1, crop.x0:crop.x1].contiguous(), [layer])[layer]
    return out[0, :, crop.unit_y, crop.unit_x]


# ------------------------------------------------------------- hand-weighted nets
def _all_crops_exact(subject: nc.VirtualSubject, layer: str, image: torch.Tensor, full: torch.Tensor) -> int:
    """Every unit of a layer on its crop (crops of one size in one batch); returns how many crops are smaller."""
    hw = tuple(image.shape[-2:])
    trace = _traces(subject, [layer], hw)[layer]
    checker = _CropChecker(subject, layer, hw, trace)
    (gy, gx), (ny, nx) = trace.geometry, full.shape[-2:]
    by_size: dict[tuple[int, int], list] = {}
    for y in range(ny):
        for x in range(nx):
            box, unit = _crop_box(trace.geometry, (y, x), hw)
            y0, x0 = gy.start + y * gy.jump, gx.start + x * gx.jump  # the theoretical RF, clipped
            assert box[0] <= max(y0, 0) and box[1] >= min(y0 + gy.size, hw[0])
            assert box[2] <= max(x0, 0) and box[3] >= min(x0 + gx.size, hw[1])
            by_size.setdefault((box[1] - box[0], box[3] - box[2]), []).append((box, unit, (y, x)))
    for size, items in by_size.items():
        assert checker(size) == ""
        batch = torch.cat([image[:, :, b[0]:b[1], b[2]:b[3]] for b, _, _ in items])
        with torch.inference_mode():
            out = subject.forward_layers(batch, [layer])[layer]
        got = torch.stack([out[i, :, u[0], u[1]] for i, (_, u, _) in enumerate(items)])
        expected = torch.stack([full[0, :, y, x] for _, _, (y, x) in items])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    return sum(len(items) for size, items in by_size.items() if size[0] * size[1] < hw[0] * hw[1])


@pytest.mark.parametrize("net", list(HAND))
@pytest.mark.parametrize("hw", [(37, 50), (48, 48), (61, 29)])
def test_every_unit_of_hand_nets_is_exact_on_its_crop(net, hw):
    """Every unit, borders included, on odd/even/non-square images (TF-SAME splits change with parity)."""
    subject = HAND[net]()
    image = _image(hw)
    with torch.inference_mode():
        full = subject.forward_layers(image, HAND_LAYERS[net])
    smaller = [_all_crops_exact(subject, layer, image, full[layer]) for layer in HAND_LAYERS[net]]
    assert all(n > 0 for n in smaller)  # crops really are smaller than the image
    # the public rf_crop gives the same crops, and its values are exact
    layer = HAND_LAYERS[net][-1]
    ny, nx = full[layer].shape[-2:]
    for y, x in [(0, 0), (ny - 1, nx - 1), (ny // 2, 0)]:
        crop = rf_crop(subject, layer, y, x, input_size=hw)
        torch.testing.assert_close(_crop_value(subject, layer, image, crop), full[layer][0, :, y, x],
                                   atol=1e-5, rtol=1e-5)


def test_naive_crops_are_not_exact():
    """The oracle can fail: the RF box itself as crop (off the stride grid) matches no unit."""
    subject = _same_subject()
    hw, layer = (37, 50), "7"
    image = _image(hw)
    with torch.inference_mode():
        full = subject.forward_layers(image, [layer])[layer]
    ny, nx = full.shape[-2:]
    tried = wrong = 0
    for y in range(ny):
        for x in range(nx):
            box = rf_box(subject, layer, y, x, input_size=hw, clip=True)
            crop = rf_crop(subject, layer, y, x, input_size=hw)
            if (box.y0, box.x0) == (crop.y0, crop.x0):
                continue  # the RF box is on the grid here
            torch.testing.assert_close(_crop_value(subject, layer, image, crop), full[0, :, y, x])
            with torch.inference_mode():
                naive = subject.forward_layers(image[:, :, box.y0:box.y1, box.x0:box.x1], [layer])[layer][0]
            distance = (naive - full[0, :, y, x, None, None]).abs().amax(0)
            wrong += bool(distance.min() > 1e-3)  # no position of the naive crop carries the unit's value
            tried += 1
    assert tried > 0 and wrong >= tried / 2


def test_occlude_into_a_box_equals_occlude_then_crop():
    image = torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(0))
    patches = torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    top, left = torch.tensor([0, 3, 9, 14, 16]), torch.tensor([0, 20, 7, 2, 12])
    box = (4, 17, 3, 21)
    expected = occlude(image, patches, top, left)[:, :, 4:17, 3:21]
    torch.testing.assert_close(occlude(image, patches, top, left, box=box), expected, rtol=0, atol=0)
    assert torch.equal(image, torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(0)))


def _corner_images(size: int = 16) -> np.ndarray:
    """Positive images, each with a bright blob at another border, so argmax units sit at borders."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0.1, 0.3, (4, size, size, 3)).astype(np.float32)
    for image, (y, x) in zip(images, [(0, 0), (size - 3, size - 3), (0, size - 3), (size // 2, 0)]):
        image[y:y + 3, x:x + 3] = 1.0
    return images


@pytest.mark.parametrize("net", ["tiny_pad", "same"])
def test_empirical_crop_maps_equal_full_maps_at_borders(net):
    if net == "same":
        subject, images = _same_subject(), np.clip(_corner_images(64), 0, 1)
    else:
        conv = nn.Sequential(nn.Conv2d(3, 1, 3, padding=1, bias=False), nn.ReLU(),
                             nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False), nn.ReLU())
        with torch.no_grad():
            for m in conv:
                if isinstance(m, nn.Conv2d):
                    m.weight.fill_(1.0)
        subject, images = nc.VirtualSubject(conv, preprocessing=IDENTITY), _corner_images()
    layer = "5" if net == "same" else "2"
    kwargs = dict(top_k=4, window=3, stride=1, fill="random", seed=2, progress=False)
    crop = empirical_rf(subject, layer, [0, 1] if net == "same" else [0], images, occlusion="crop", **kwargs)
    full = empirical_rf(subject, layer, [0, 1] if net == "same" else [0], images, occlusion="full", **kwargs)
    np.testing.assert_allclose(crop["discrepancy"].values, full["discrepancy"].values, atol=1e-5, rtol=0)
    np.testing.assert_allclose(crop["rf"].values, full["rf"].values, atol=1e-5, rtol=0)
    assert crop.attrs["occlusion_mode"] == "crop" and full.attrs["occlusion_mode"] == "full"
    assert crop.attrs["crop_area_fraction"] < 1.0 and crop.attrs["n_crop_maps"] == crop["unit_y"].size
    if net == "tiny_pad":  # the blobs put the argmax units on the map's borders
        last = subject.output_shape("2", (16, 16))[-1] - 1
        assert {0, last} & set(crop["unit_y"].values.ravel().tolist()) | set(crop["unit_x"].values.ravel().tolist())
    assert np.abs(full["discrepancy"].values).max() > 0


# ------------------------------------------------------------------- fallbacks
class SizeScaled(nn.Module):
    """Multiplies by the map width: translation-equivariant ops, yet not crop-exact."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (x.shape[-1] / 16.0)


class PadToMultiple(nn.Module):
    """Pads bottom/right to a multiple of 8: the amount depends on the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, (-x.shape[-1]) % 8, 0, (-x.shape[-2]) % 8))


def _fallback_subject(kind: str) -> nc.VirtualSubject:
    middle = {
        "pooled": nn.AdaptiveAvgPool2d(4),
        "scaled": SizeScaled(),
        "padded": PadToMultiple(),
    }[kind]
    net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), middle, nn.Conv2d(2, 2, 3, padding=1))
    return nc.VirtualSubject(_randomize(net, seed=3), preprocessing=IDENTITY, name=kind)


@pytest.mark.parametrize(
    ("kind", "mode", "reason"),
    [("pooled", "full", "AdaptiveAvgPool2DBackward0"), ("scaled", "full", "run-time check"),
     ("padded", "crop+full", "crops:")],
)
def test_fallback_to_full_images_is_recorded_and_exact(kind, mode, reason):
    subject = _fallback_subject(kind)
    images = np.random.default_rng(0).uniform(0, 1, (3, 16, 16, 3)).astype(np.float32)
    kwargs = dict(top_k=3, window=2, stride=2, fill="mean", progress=False)
    auto = empirical_rf(subject, "3", [0, 1], images, **kwargs)
    full = empirical_rf(subject, "3", [0, 1], images, occlusion="full", **kwargs)
    assert reason in auto.attrs["occlusion_reason"]
    assert auto.attrs["occlusion_mode"] in ({mode, "full"} if kind == "padded" else {mode})
    assert auto.attrs["n_full_maps"] > 0 and full.attrs["occlusion_reason"] == "occlusion='full' requested"
    np.testing.assert_allclose(auto["discrepancy"].values, full["discrepancy"].values, atol=1e-5, rtol=0)


def test_crop_refused_where_not_exact():
    subject = _fallback_subject("pooled")
    images = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    with pytest.raises(ShapeMismatchError, match="AdaptiveAvgPool2DBackward0"):
        empirical_rf(subject, "3", [0], images, top_k=1, occlusion="crop", progress=False)
    with pytest.raises(ShapeMismatchError, match="occlusion='full'"):
        rf_crop(subject, "3", 0, 0, input_size=16)
    with pytest.raises(UnknownNameError, match="Did you mean 'crop'"):
        empirical_rf(subject, "3", [0], images, top_k=1, occlusion="crops", progress=False)


# -------------------------------------------------------------- registry networks
def _registry_subject(model: str, lite0: nc.VirtualSubject) -> nc.VirtualSubject:
    return lite0 if model == lite0.name else nc.VirtualSubject(model, weights=None, seed=0)


def _check_registry(subject: nc.VirtualSubject) -> None:
    """Every spatial default layer: corner, edge, centre and random units, crop == full image."""
    from neurocnn.receptive_fields.theoretical import theoretical_rf

    theory = theoretical_rf(subject)
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    layers = list(theory["layer"].values)
    with torch.inference_mode():
        full = subject.forward_layers(image, layers)
    rng = np.random.default_rng(0)
    for layer in layers:
        ny, nx = full[layer].shape[-2:]
        units = {(0, 0), (0, nx - 1), (ny - 1, 0), (ny - 1, nx - 1), (ny // 2, nx // 2), (0, nx // 2),
                 (int(rng.integers(ny)), int(rng.integers(nx)))}
        try:
            crops = {unit: rf_crop(subject, layer, *unit) for unit in units}
        except ShapeMismatchError as err:  # global pooling before the layer: refused, with the op named
            assert "MeanBackward1" in str(err) or "Adaptive" in str(err)
            assert ny == nx == 1
            continue
        for (y, x), crop in crops.items():
            expected = full[layer][0, :, y, x]
            scale = max(1.0, float(expected.abs().max()))
            torch.testing.assert_close(_crop_value(subject, layer, image, crop), expected, atol=1e-5 * scale, rtol=0)


@pytest.mark.parametrize("model", ["efficientnet_lite0", "alexnet", "resnet18", "squeezenet1_1"])
def test_registry_networks_exact_on_crops(model, lite0):
    _check_registry(_registry_subject(model, lite0))


@pytest.mark.slow
def test_vgg16_exact_on_crops(lite0):
    _check_registry(_registry_subject("vgg16", lite0))


def test_lite0_empirical_crop_equals_full(lite0, stimuli92, mirror):
    """Real weights, TF-SAME padding: crop-based maps equal full-image maps (float32)."""
    stim = stimuli92.subset(range(3))
    for layer, stride in (("stem", 24), ("stage3", 16)):
        kwargs = dict(top_k=2, window=11, stride=stride, fill="random", seed=1, progress=False)
        crop = empirical_rf(lite0, layer, [0, 5], stim, **kwargs)
        full = empirical_rf(lite0, layer, [0, 5], stim, occlusion="full", **kwargs)
        assert crop.attrs["occlusion_mode"] == "crop" and crop.attrs["crop_area_fraction"] < 0.2
        np.testing.assert_allclose(crop["discrepancy"].values, full["discrepancy"].values, atol=1e-5, rtol=0)
        assert np.abs(full["discrepancy"].values).max() > 1e-2


def test_global_pooling_layer_falls_back(stimuli92, mirror):
    subject = nc.VirtualSubject("resnet18", weights=None, seed=0)
    result = empirical_rf(subject, "avgpool", [0], stimuli92.subset(range(2)), top_k=1, window=56, stride=56,
                          progress=False)
    assert result.attrs["occlusion_mode"] == "full" and "MeanBackward1" in result.attrs["occlusion_reason"]
