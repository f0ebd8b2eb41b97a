"""Tests of neurocnn.attribution: hand-computed gradients, captum oracle, hook hygiene."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import neurocnn as nc
from neurocnn import attribution as attr
from neurocnn.exceptions import InvalidDataError, StimulusError, UnknownNameError

IDENTITY = nc.Preprocessing(resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.fixture(autouse=True)
def _one_thread():
    """On the shared 2-core CPU, 2 intra-op threads make backward passes many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny(activation: nn.Module, scale: float = 1.0) -> nn.Module:
    """1x1 convs: h0 = act(s(r - b)), h1 = act(s(b - r)); z = h0 - 2 h1 (per pixel)."""
    net = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False), activation, nn.Conv2d(2, 1, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(scale * torch.tensor([[1.0, 0.0, -1.0], [-1.0, 0.0, 1.0]])[:, :, None, None])
        net[2].weight.copy_(torch.tensor([[1.0, -2.0]])[:, :, None, None])
    return net


def _subject(net: nn.Module) -> nc.VirtualSubject:
    return nc.VirtualSubject(net, preprocessing=IDENTITY, name="tiny")


def _image(*pixels: tuple[float, float, float]) -> np.ndarray:
    """A 1 x P image (H, W, 3) with the given RGB pixels."""
    return np.asarray(pixels, dtype=np.float32)[None]


# pixel A: r - b = +0.6 (h0 active); pixel B: r - b = -0.6 (h1 active, its gradient -2 is negative)
RELU_IMAGE = _image((0.8, 0.3, 0.2), (0.2, 0.3, 0.8))
RELU_EXPECTED = {
    "saliency": [[1, 0, -1], [2, 0, -2]],
    "guided_backprop": [[1, 0, -1], [0, 0, 0]],  # negative gradient into h1 is zeroed
    "deconvnet": [[1, 0, -1], [1, 0, -1]],  # forward mask ignored, gradient rectified
}


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("method", list(RELU_EXPECTED))
def test_relu_rules_match_hand_computed_gradients(method, inplace):
    subject = _subject(_tiny(nn.ReLU(inplace=inplace)))
    result = attr.attribute(subject, RELU_IMAGE, method, layer="2", channel=0, reduce="sum")
    assert result.dims == ("y", "x", "rgb")
    np.testing.assert_allclose(result.values[0], RELU_EXPECTED[method], atol=1e-6)
    assert result.attrs["method"] == method
    np.testing.assert_allclose(float(result.target_value), 0.6 - 2 * 0.6, atol=1e-6)


def test_relu6_rules_by_hand():
    # pre-activations h0 = 10 (r - b): A = 7 (clipped at 6), B = 3 (linear), C = -3 (h1 = 3 active)
    image = _image((0.9, 0.3, 0.2), (0.5, 0.3, 0.2), (0.2, 0.3, 0.5))
    subject = _subject(_tiny(nn.ReLU6(), scale=10.0))
    expected = {
        "saliency": [[0, 0, 0], [10, 0, -10], [20, 0, -20]],
        "guided_backprop": [[0, 0, 0], [10, 0, -10], [0, 0, 0]],
        "deconvnet": [[10, 0, -10], [10, 0, -10], [10, 0, -10]],
    }
    for method, values in expected.items():
        result = attr.attribute(subject, image, method, layer="2", channel=0, reduce="sum")
        np.testing.assert_allclose(result.values[0], values, atol=1e-5, err_msg=method)


def test_single_unit_target_only_touches_its_pixel():
    subject = _subject(_tiny(nn.ReLU()))
    result = attr.saliency(subject, RELU_IMAGE, layer="2", channel=0, y=0, x=1)
    np.testing.assert_allclose(result.values[0], [[0, 0, 0], [2, 0, -2]], atol=1e-6)


def test_deconvnet_reconstruction_keeps_max_or_whole_channel():
    image = _image((0.8, 0.3, 0.2), (0.2, 0.3, 0.8), (0.5, 0.3, 0.2))  # relu(r - b): 0.6, 0, 0.3
    subject = _subject(_tiny(nn.ReLU(inplace=True)))
    rec = attr.deconvnet_reconstruction(subject, image, "1", 0)
    np.testing.assert_allclose(rec.values[0], [[0.6, 0, -0.6], [0, 0, 0], [0, 0, 0]], atol=1e-6)
    assert (rec.attrs["max_y"], rec.attrs["max_x"]) == (0, 0)
    np.testing.assert_allclose(rec.attrs["max_activation"], 0.6, atol=1e-6)
    whole = attr.deconvnet_reconstruction(subject, image, "1", 0, keep="channel")
    np.testing.assert_allclose(whole.values[0], [[0.6, 0, -0.6], [0, 0, 0], [0.3, 0, -0.3]], atol=1e-6)


@pytest.fixture(scope="module")
def random_alexnet():
    return nc.VirtualSubject(
        "alexnet", weights=None, seed=0, preprocessing=nc.Preprocessing(resize=(96, 96), crop=None)
    )


@pytest.fixture(scope="module")
def random_images():
    return np.random.default_rng(0).random((3, 96, 96, 3)).astype(np.float32)


class _UnitOutput(nn.Module):
    """captum needs an nn.Module forward function: the subject's target as (N,) output."""

    def __init__(self, subject: nc.VirtualSubject, target: attr.Target) -> None:
        super().__init__()
        self.net, self.subject, self.target = subject.model, subject, target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.target(self.subject, x)


@pytest.mark.parametrize(
    "target",
    [{"class_index": 7}, {"layer": "conv3", "channel": 5}, {"layer": "fc6", "channel": 11}],
    ids=["class", "conv-channel-max", "fc-unit"],
)
def test_agrees_with_captum_on_random_alexnet(random_alexnet, random_images, target):
    from captum.attr import Deconvolution, GuidedBackprop, Saliency

    subject = random_alexnet
    x = subject.preprocess(random_images)
    resolved = attr.resolve_target(subject, **target)
    forward = _UnitOutput(subject, resolved)
    captum_target = target.get("class_index")
    oracle_forward = subject.model if captum_target is not None else forward
    ours = {m: attr.attribute(subject, random_images, m, **target).values for m in attr.METHODS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum warns that it sets hooks on ReLUs
        theirs = {
            "saliency": Saliency(oracle_forward).attribute(x.clone(), target=captum_target, abs=False),
            "guided_backprop": GuidedBackprop(oracle_forward).attribute(x.clone(), target=captum_target),
            "deconvnet": Deconvolution(oracle_forward).attribute(x.clone(), target=captum_target),
        }
    for method in attr.METHODS:
        expected = theirs[method].permute(0, 2, 3, 1).detach().numpy()
        scale = np.abs(expected).max()
        assert scale > 0
        np.testing.assert_allclose(ours[method], expected, atol=1e-5 * scale, rtol=1e-4, err_msg=method)
    # the three methods really differ on this net
    assert not np.allclose(ours["saliency"], ours["guided_backprop"])
    assert not np.allclose(ours["guided_backprop"], ours["deconvnet"])


def _hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        + len(getattr(m, "_backward_pre_hooks", {}))
        for m in model.modules()
    )


def test_hooks_removed_and_model_unchanged(random_alexnet, random_images):
    subject = random_alexnet
    x = subject.preprocess(random_images)

    def plain_gradient():
        inp = x.clone().requires_grad_(True)
        out = subject.model(inp)
        return out.detach(), torch.autograd.grad(out[:, 3].sum(), inp)[0]

    out_before, grad_before = plain_gradient()
    for method in attr.METHODS:
        attr.attribute(subject, random_images, method, class_index=3)
    attr.deconvnet_reconstruction(subject, random_images[0], "conv2", 1)
    assert _hook_count(subject.model) == 0
    out_after, grad_after = plain_gradient()
    torch.testing.assert_close(out_after, out_before, rtol=0, atol=0)
    torch.testing.assert_close(grad_after, grad_before, rtol=0, atol=0)


def test_hooks_removed_when_forward_fails():
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(2 * 6 * 6, 4))
    subject = _subject(net)
    bad = np.random.default_rng(0).random((1, 10, 10, 3)).astype(np.float32)  # Linear expects 8x8 input
    with pytest.raises(nc.exceptions.ShapeMismatchError, match="cannot process"):
        attr.guided_backprop(subject, bad, class_index=0)
    assert _hook_count(net) == 0


def test_relu_rule_removes_hooks_on_error():
    net = _tiny(nn.ReLU())
    with pytest.raises(RuntimeError, match="boom"), attr.relu_rule(net, "guided"):
        assert _hook_count(net) == 2
        raise RuntimeError("boom")
    assert _hook_count(net) == 0


def test_bad_targets_raise_specific_errors(random_alexnet, random_images):
    subject = random_alexnet
    image = random_images[0]
    with pytest.raises(UnknownNameError, match="Siamese cat"):
        attr.saliency(subject, image, class_name="Siamese")
    with pytest.raises(UnknownNameError, match="0..999"):
        attr.saliency(subject, image, class_index=1000)
    with pytest.raises(UnknownNameError, match="channel"):
        attr.saliency(subject, image, layer="conv3", channel=384)
    with pytest.raises(UnknownNameError, match="conv3"):
        attr.saliency(subject, image, layer="conv33", channel=1)
    with pytest.raises(InvalidDataError, match="both y and x"):
        attr.saliency(subject, image, layer="conv3", channel=1, y=2)
    with pytest.raises(InvalidDataError, match="not also"):
        attr.saliency(subject, image, layer="conv3", class_index=1)
    with pytest.raises(InvalidDataError, match="channel"):
        attr.saliency(subject, image, layer="conv3")
    with pytest.raises(UnknownNameError, match="guided_backprop"):
        attr.attribute(subject, image, "guided", class_index=1)
    with pytest.raises(StimulusError, match=r"\[0, 1\]"):
        attr.saliency(subject, image * 255, class_index=1)
    with pytest.raises(StimulusError, match="single image"):
        attr.saliency(subject, image[..., :2], class_index=1)


def test_inputs_not_mutated_and_batch_dims(random_alexnet, random_images):
    images = random_images.copy()
    result = attr.guided_backprop(random_alexnet, images, layer="conv5", channel=2, y=1, x=1)
    np.testing.assert_array_equal(images, random_images)
    assert result.dims == ("stimulus", "y", "x", "rgb")
    assert result.shape == (3, 96, 96, 3)
    assert all(isinstance(v, (str, int, float, list)) for v in result.attrs.values())


def test_plot_attributions(random_alexnet, random_images):
    import matplotlib.pyplot as plt

    results = {m: attr.attribute(random_alexnet, random_images[:2], m, class_index=1) for m in attr.METHODS}
    fig = attr.plot_attributions(results, images=random_images[:2])
    assert len(fig.axes) == 2 * 4
    plt.close(fig)
    rgb = attr.to_rgb(results["saliency"])
    assert rgb.min() >= 0 and rgb.max() <= 1
    np.testing.assert_allclose(np.abs(rgb - 0.5).reshape(2, -1).max(1), 0.5)
