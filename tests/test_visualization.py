"""Tests of neurocnn.visualization: hand-weighted nets, scipy oracles, real lite0 weights."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
from torch import nn

import neurocnn as nc
from neurocnn import visualization as vis
from neurocnn.exceptions import InvalidDataError, ShapeMismatchError, StimulusError, UnknownNameError

IDENTITY = nc.Preprocessing(resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _red_minus_blue() -> nn.Module:
    """conv1 (1x1): ch0 = r - b, ch1 = b - r; conv2 (3x3, no padding): ch0 = sum of relu(ch0) over 3x3."""
    net = nn.Sequential(nn.Conv2d(3, 2, 1, bias=False), nn.ReLU(inplace=True), nn.Conv2d(2, 1, 3, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0, -1.0], [-1.0, 0.0, 1.0]])[:, :, None, None])
        net[2].weight.zero_()
        net[2].weight[0, 0] = 1.0
    return net


@pytest.fixture(autouse=True)
def _one_thread():
    """On the shared 2-core CPU, 2 intra-op threads make depthwise-conv backward ~50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def tiny():
    return nc.VirtualSubject(_red_minus_blue(), preprocessing=IDENTITY, name="tiny")


def _images(n: int = 4, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, 3)).astype(np.float32)


def test_activation_maps_hand_values(tiny):
    image = _images(1)[0]
    maps = vis.activation_maps(tiny, image, "0")
    assert maps.dims == ("channel", "y", "x") and maps.shape == (2, 8, 8)
    np.testing.assert_allclose(maps.sel(channel=0), image[..., 0] - image[..., 2], atol=1e-6)
    np.testing.assert_allclose(maps.sel(channel=1), image[..., 2] - image[..., 0], atol=1e-6)
    post = vis.activation_maps(tiny, image, "1", channels=[1])
    np.testing.assert_allclose(post.values[0], np.maximum(image[..., 2] - image[..., 0], 0), atol=1e-6)
    assert post.attrs["relu"] == "post-activation"
    with pytest.raises(UnknownNameError, match=r"0\.\.1"):
        vis.activation_maps(tiny, image, "0", channels=[2])
    with pytest.raises(StimulusError, match="one image"):
        vis.activation_maps(tiny, _images(2), "0")
    with pytest.raises(StimulusError, match=r"\[0, 1\]"):
        vis.activation_maps(tiny, image * 255, "0")


def test_plot_activation_maps_symmetric_gray(tiny):
    import matplotlib.pyplot as plt

    maps = vis.activation_maps(tiny, _images(1)[0], "0")
    fig = vis.plot_activation_maps(maps)
    im = fig.axes[0].get_images()[0]
    vmin, vmax = im.get_clim()
    assert vmin == -vmax == -float(np.abs(maps).max())
    assert im.get_cmap().name == "gray"
    plt.close(fig)


def test_first_layer_filters_minmax(tiny):
    tiles = vis.first_layer_filters(tiny)
    assert tiles.dims == ("channel", "y", "x", "rgb") and tiles.shape == (2, 1, 1, 3)
    np.testing.assert_allclose(tiles.values[:, 0, 0], [[1, 0.5, 0], [0, 0.5, 1]])
    assert tiles.attrs["layer"] == "0"
    alex = vis.first_layer_filters(nc.VirtualSubject("alexnet", weights=None, seed=0))
    assert alex.shape == (64, 11, 11, 3)
    flat = alex.values.reshape(64, -1)
    np.testing.assert_allclose(flat.min(1), 0, atol=1e-7)
    np.testing.assert_allclose(flat.max(1), 1, atol=1e-6)
    with pytest.raises(InvalidDataError, match="3 input channels"):
        vis.first_layer_filters(nc.VirtualSubject(nn.Sequential(nn.Linear(3, 2)), preprocessing=IDENTITY))


def test_top_and_bottom_examples_with_rf_crops(tiny):
    images = _images(6, size=10, seed=1)
    acts = np.stack([
        scipy.ndimage.uniform_filter(np.maximum(im[..., 0] - im[..., 2], 0), 3, mode="constant")[1:-1, 1:-1] * 9
        for im in images
    ])
    top = vis.top_examples(tiny, images, "2", 0, top_k=3, progress=False)
    expected = np.argsort(-acts.reshape(6, -1).max(1))[:3]
    np.testing.assert_array_equal(top["stimulus_index"], expected)
    np.testing.assert_allclose(top["activation"], acts.reshape(6, -1).max(1)[expected], rtol=1e-5)
    assert top["crop"].dims == ("rank", "y", "x", "rgb") and top["crop"].shape == (3, 3, 3, 3)
    for r in range(3):
        i, y, x = int(top["stimulus_index"][r]), int(top["unit_y"][r]), int(top["unit_x"][r])
        assert acts[i, y, x] == pytest.approx(float(top["activation"][r]), rel=1e-5)
        np.testing.assert_array_equal(top["box"][r], [y, y + 3, x, x + 3])  # 3x3 conv, no padding
        np.testing.assert_allclose(top["crop"][r], images[i, y:y + 3, x:x + 3], atol=1e-6)
    bottom = vis.top_examples(tiny, images, "0", 1, top_k=2, bottom=True, progress=False)
    mins = (images[..., 2] - images[..., 0]).reshape(6, -1).min(1)
    np.testing.assert_array_equal(bottom["stimulus_index"], np.argsort(mins)[:2])
    fixed = vis.top_examples(tiny, images, "2", 0, top_k=6, unit=(2, 5), progress=False)
    np.testing.assert_allclose(np.sort(fixed["activation"].values)[::-1], np.sort(acts[:, 2, 5])[::-1], rtol=1e-5)
    np.testing.assert_allclose(fixed["crop"][0], images[int(fixed["stimulus_index"][0]), 2:5, 5:8], atol=1e-6)
    precomputed = tiny.activations(images, "2", progress=False)
    reused = vis.top_examples(tiny, images, "2", 0, top_k=3, activations=precomputed, progress=False)
    np.testing.assert_array_equal(reused["crop"].values, top["crop"].values)
    with pytest.raises(ShapeMismatchError, match="layer '2'"):
        vis.top_examples(tiny, images, "2", 0, top_k=3, activations=tiny.activations(images, "0", progress=False))
    with pytest.raises(ShapeMismatchError, match="6 stimuli"):
        vis.top_examples(tiny, images, "2", 0, top_k=3, activations=precomputed.isel(stimulus=slice(0, 5)))
    with pytest.raises(InvalidDataError, match="larger than"):
        vis.top_examples(tiny, images, "2", 0, top_k=7, progress=False)
    with pytest.raises(UnknownNameError, match="channel"):
        vis.top_examples(tiny, images, "2", 1, progress=False, top_k=2)
    with pytest.raises(InvalidDataError, match="outside"):
        vis.top_examples(tiny, images, "2", 0, top_k=2, unit=(8, 0), progress=False)


def test_crop_pads_with_mean_colour_outside_image():
    image = torch.arange(3 * 4 * 4, dtype=torch.float32).reshape(3, 4, 4)
    fill = torch.tensor([0.1, 0.2, 0.3])
    crop = vis._crop(image, (-1, 2, 2, 5), fill)
    assert crop.shape == (3, 3, 3)
    torch.testing.assert_close(crop[:, 1:, :2], image[:, :2, 2:4])
    torch.testing.assert_close(crop[:, 0, 0], fill)
    torch.testing.assert_close(crop[:, 1, 2], fill)
    whole = vis._crop(image, (-10, 20, 1, 3), fill)  # taller than the image: whole height kept
    torch.testing.assert_close(whole, image[:, :, 1:3])


@pytest.mark.parametrize("parameterization", ["pixel", "fourier"])
def test_maximize_and_minimize_push_image_to_known_optimum(tiny, parameterization):
    kwargs = dict(steps=60, lr=0.2, jitter=1, size=8, parameterization=parameterization, decorrelate=False,
                  progress=False)
    up = vis.maximize_activation(tiny, "0", 0, **kwargs)  # mean(r - b): optimum r = 1, b = 0
    image = up["image"].values
    assert up["image"].dims == ("y", "x", "rgb") and 0 <= image.min() and image.max() <= 1
    assert image[..., 0].mean() > 0.9 and image[..., 2].mean() < 0.1
    assert up.attrs["final_activation"] > 0.8 > up.attrs["initial_activation"]
    assert up["objective"].values[-1] > up["objective"].values[0]
    down = vis.maximize_activation(tiny, "0", 0, minimize=True, **kwargs)
    assert down["image"].values[..., 0].mean() < 0.1 and down.attrs["final_activation"] < -0.8
    assert down.attrs["direction"] == "minimize"
    assert all(isinstance(v, (str, int, float, list)) for v in up.attrs.values())


def test_maximize_single_unit_changes_only_its_receptive_field(tiny):
    res = vis.maximize_activation(tiny, "2", 0, unit=(0, 0), steps=30, lr=0.2, jitter=0, size=8,
                                  parameterization="pixel", decorrelate=False, progress=False)
    image = res["image"].values
    outside = np.ones((8, 8), bool)
    outside[:3, :3] = False
    # pixels of the unit's 3x3 field with r > b at the start (live ReLU) are driven to r=1, b=0
    assert res.attrs["final_activation"] > res.attrs["initial_activation"] + 1.5
    # the seeded initial image is sigmoid(0.01 * noise) ~ 0.5; untouched pixels stay there
    np.testing.assert_allclose(image[outside], 0.5, atol=0.02)


def test_maximize_is_seeded_and_records_settings(tiny):
    kwargs = dict(steps=5, size=8, progress=False, jitter=2, blur_every=2, l2_decay=0.01, tv_weight=0.1)
    a = vis.maximize_activation(tiny, "2", 0, seed=3, **kwargs)
    b = vis.maximize_activation(tiny, "2", 0, seed=3, **kwargs)
    c = vis.maximize_activation(tiny, "2", 0, seed=4, **kwargs)
    np.testing.assert_array_equal(a["image"].values, b["image"].values)
    np.testing.assert_array_equal(a["objective"].values, b["objective"].values)
    assert not np.array_equal(a["image"].values, c["image"].values)
    for key, value in {"seed": 3, "steps": 5, "jitter": 2, "blur_every": 2, "l2_decay": 0.01, "tv_weight": 0.1,
                       "parameterization": "fourier", "decorrelate": 1, "objective": "mean"}.items():
        assert a.attrs[key] == value, key


def test_regularizers_do_their_job(tiny):
    base = dict(steps=40, lr=0.2, size=8, jitter=0, parameterization="pixel", progress=False)
    plain = vis.maximize_activation(tiny, "0", 0, unit=(4, 4), **base)  # one bright pixel: an edge
    smooth = vis.maximize_activation(tiny, "0", 0, unit=(4, 4), tv_weight=5.0, **base)
    tv = {k: float(vis._total_variation(torch.as_tensor(r["image"].values).permute(2, 0, 1)))
          for k, r in (("plain", plain), ("smooth", smooth))}
    assert tv["smooth"] < tv["plain"]
    decayed = vis.maximize_activation(tiny, "0", 0, unit=(4, 4), l2_decay=0.5, **base)
    assert decayed.attrs["final_activation"] < plain.attrs["final_activation"] - 0.5  # held near gray


@pytest.mark.parametrize("kind", ["pixel", "fourier"])
def test_blur_matches_scipy_gaussian(kind):
    gen = torch.Generator().manual_seed(0)
    param = vis._ImageParam(kind, (16, 16), False, gen, torch.device("cpu"), init_std=1.0)

    def pre_sigmoid() -> np.ndarray:
        return torch.logit(param.image()).detach().numpy()[0]

    before = pre_sigmoid()
    param.blur(1.0)
    after = pre_sigmoid()
    if kind == "pixel":
        expected = scipy.ndimage.gaussian_filter(before, (0, 1.0, 1.0), mode="mirror", truncate=3.0)
        np.testing.assert_allclose(after, expected, atol=1e-4)
    else:  # Gaussian transfer function on the periodic image
        expected = scipy.ndimage.gaussian_filter(before, (0, 1.0, 1.0), mode="wrap", truncate=6.0)
        np.testing.assert_allclose(after, expected, atol=5e-3 * np.abs(before).max())


def test_maximize_bad_input(tiny):
    with pytest.raises(InvalidDataError, match="steps"):
        vis.maximize_activation(tiny, "0", 0, steps=0, size=8, progress=False)
    with pytest.raises(UnknownNameError, match="fourier"):
        vis.maximize_activation(tiny, "0", 0, parameterization="fourrier", size=8, progress=False)
    with pytest.raises(UnknownNameError, match="Valid choices: '0'"):
        vis.maximize_activation(tiny, "O", 0, size=8, progress=False)
    with pytest.raises(UnknownNameError, match=r"0\.\.1"):
        vis.maximize_activation(tiny, "0", 5, size=8, progress=False)
    with pytest.raises(InvalidDataError, match="tv_weight"):
        vis.maximize_activation(tiny, "0", 0, tv_weight=-1, size=8, progress=False)
    with pytest.raises(InvalidDataError, match="jitter"):
        vis.maximize_activation(tiny, "0", 0, jitter=1.5, size=8, progress=False)
    with pytest.raises(InvalidDataError, match="layer"):
        vis.maximize_activation(tiny, size=8, progress=False)
    dead = nn.Sequential(nn.Conv2d(3, 1, 1), nn.ReLU())
    with torch.no_grad():
        dead[0].weight.fill_(1.0)
        dead[0].bias.fill_(-10.0)  # silent for every image in [0, 1]
    silent = nc.VirtualSubject(dead, preprocessing=IDENTITY, name="dead")
    with pytest.raises(InvalidDataError, match="zero gradient"):
        vis.maximize_activation(silent, "1", 0, size=8, progress=False)


def test_deep_dream_pyramid_on_tiny_net(tiny):
    start = _images(1, size=12, seed=2)[0]
    one = vis.deep_dream(tiny, "0", [0], stimuli=start, octaves=1, steps_per_octave=20, lr=0.05, progress=False)
    three = vis.deep_dream(tiny, "0", [0], stimuli=start, octaves=3, octave_scale=1.5, steps_per_octave=20,
                           lr=0.05, progress=False)
    for dream in (one, three):
        img = dream["image"].values
        assert img.shape == (12, 12, 3) and img.min() >= 0 and img.max() <= 1
        assert (img[..., 0] - img[..., 2]).mean() > (start[..., 0] - start[..., 2]).mean() + 0.3
    assert three.attrs["pyramid_sizes"] == [5, 8, 12]
    np.testing.assert_array_equal(np.unique(three["octave"]), [1, 2, 3])
    assert three.sizes["step"] == 60 and one.sizes["step"] == 20
    again = vis.deep_dream(tiny, "0", [0], stimuli=start, octaves=3, octave_scale=1.5, steps_per_octave=20,
                           lr=0.05, progress=False)
    np.testing.assert_array_equal(again["image"].values, three["image"].values)
    noise = vis.deep_dream(tiny, "0", octaves=1, steps_per_octave=2, seed=1, progress=False)
    assert noise.attrs["initial_image"] == "noise" and noise.attrs["channels"] == "all"


def test_deep_dream_bad_input(tiny):
    with pytest.raises(InvalidDataError, match="octaves"):
        vis.deep_dream(tiny, "0", octaves=0, progress=False)
    with pytest.raises(InvalidDataError, match="octave_scale"):
        vis.deep_dream(tiny, "0", octave_scale=1.0, progress=False)
    with pytest.raises(UnknownNameError, match="Channels"):
        vis.deep_dream(tiny, "0", [3], stimuli=_images(1)[0], progress=False)
    with pytest.raises(ShapeMismatchError, match="fewer octaves"):
        vis.deep_dream(tiny, "2", stimuli=_images(1, size=4)[0], octaves=3, octave_scale=2.0, progress=False)


# ------------------------------------------------------------- real weights
@pytest.fixture(scope="module")
def faces92(stimuli92):
    return stimuli92.subset(np.arange(0, 92, 3))


def test_lite0_maximization_beats_dataset_top_example(lite0, faces92, capsys):
    layer, channel = "stage4", 7
    top = vis.top_examples(lite0, faces92, layer, channel, top_k=1, progress=False)
    best_data = float(top["activation"][0])
    res = vis.maximize_activation(lite0, layer, channel, objective="max", steps=64, lr=0.1, progress=False, seed=0)
    synth = lite0.activations(res["image"].values[None], layer, progress=False)[0, channel]
    assert float(synth.max()) == pytest.approx(res.attrs["final_activation"], rel=1e-3)
    with capsys.disabled():
        print(f"\n[{layer} ch {channel}] dataset top example max = {best_data:.2f}; "
              f"maximized image max = {float(synth.max()):.2f} (start {res.attrs['initial_activation']:.2f})")
    assert float(synth.max()) > 2 * best_data > 0


@pytest.mark.slow
def test_lite0_class_maximization_is_classified_as_target(lite0, capsys):
    res = vis.maximize_activation(lite0, class_name="Siamese cat", steps=96, lr=0.05, progress=False, seed=0)
    pred = lite0.classify(res["image"].values[None], top_k=3)
    with capsys.disabled():
        top3 = [f"{c} ({p:.3f})" for c, p in zip(pred["class_name"].values[0], pred["probability"].values[0])]
        print(f"\nclass-max 'Siamese cat' image classified as: {', '.join(top3)}")
    assert pred["class_name"].values[0, 0] == "Siamese cat"


def test_lite0_class_name_errors(lite0):
    with pytest.raises(UnknownNameError, match="Did you mean 'Siamese cat'"):
        vis.maximize_activation(lite0, class_name="siamese cat", steps=1, progress=False)
    with pytest.raises(UnknownNameError, match="0..999"):
        vis.maximize_activation(lite0, class_index=1000, steps=1, progress=False)
    with pytest.raises(InvalidDataError, match="vector layer"):
        vis.maximize_activation(lite0, "stage4", 1, softmax=True, steps=1, progress=False)


def test_plots_return_figures(tiny):
    import matplotlib.pyplot as plt

    images = _images(4, size=10)
    figs = [
        vis.plot_filters(vis.first_layer_filters(tiny)),
        vis.plot_top_examples(vis.top_examples(tiny, images, "2", 0, top_k=4, progress=False)),
        vis.plot_images([vis.maximize_activation(tiny, "0", 0, steps=2, size=8, progress=False),
                         vis.deep_dream(tiny, "0", stimuli=images[0], octaves=1, steps_per_octave=2, progress=False)]),
    ]
    assert [sum(bool(ax.get_images()) for ax in f.axes) for f in figs] == [2, 4, 2]
    for f in figs:
        plt.close(f)


def test_regularizers_object_equals_the_options_one_by_one(tiny):
    kwargs = dict(steps=5, size=8, progress=False, seed=1)
    loose = vis.maximize_activation(tiny, "2", 0, jitter=2, blur_every=2, l2_decay=0.01, tv_weight=0.1, **kwargs)
    regs = vis.Regularizers(jitter=2, blur_every=2, l2_decay=0.01, tv_weight=0.1)
    grouped = vis.maximize_activation(tiny, "2", 0, regularizers=regs, **kwargs)
    np.testing.assert_array_equal(loose["image"].values, grouped["image"].values)
    assert loose.attrs == grouped.attrs
    with pytest.raises(InvalidDataError, match="jitter"):
        vis.Regularizers(jitter=-1)
    with pytest.raises(TypeError, match="jiter"):
        vis.maximize_activation(tiny, "2", 0, jiter=2, **kwargs)
