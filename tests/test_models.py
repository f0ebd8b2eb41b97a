"""Model registry: specs, aliases, weights loading, the embedded EfficientNet-Lite0."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurocnn import models
from neurocnn.exceptions import IntegrityError, MissingFileError, UnknownNameError


def test_registry_lists_the_architectures():
    assert {"efficientnet_lite0", "alexnet", "vgg16", "resnet18", "squeezenet1_1"} <= set(models.list_models())


def test_unknown_model_suggests_closest():
    with pytest.raises(UnknownNameError, match="Did you mean 'alexnet'"):
        models.get_spec("alexnett")


def test_alexnet_aliases_point_to_the_right_modules():
    spec = models.get_spec("alexnet")
    model, _ = models.load_model(spec, weights=None)
    mods = dict(model.named_modules())
    expected = {
        "conv1": ("features.0", torch.nn.Conv2d), "conv2": ("features.3", torch.nn.Conv2d),
        "conv3": ("features.6", torch.nn.Conv2d), "conv4": ("features.8", torch.nn.Conv2d),
        "conv5": ("features.10", torch.nn.Conv2d), "relu3": ("features.7", torch.nn.ReLU),
        "pool1": ("features.2", torch.nn.MaxPool2d), "pool5": ("features.12", torch.nn.MaxPool2d),
        "fc6": ("classifier.1", torch.nn.Linear), "fc7": ("classifier.4", torch.nn.Linear),
        "fc8": ("classifier.6", torch.nn.Linear), "relu7": ("classifier.5", torch.nn.ReLU),
    }
    for alias, (dotted, kind) in expected.items():
        assert spec.aliases[alias] == dotted
        assert isinstance(mods[dotted], kind)


@pytest.mark.parametrize("name", ["vgg16", "resnet18", "squeezenet1_1", "efficientnet_lite0"])
def test_aliases_resolve_for_every_architecture(name):
    spec = models.get_spec(name)
    model, _ = models.load_model(spec, weights=None)
    mods = dict(model.named_modules())
    assert all(target in mods for target in spec.aliases.values())
    assert all(layer in spec.aliases for layer in spec.default_layers)


def test_random_init_is_seeded():
    spec = models.get_spec("alexnet")
    a, ida = models.load_model(spec, weights=None, seed=3)
    b, _ = models.load_model(spec, weights=None, seed=3)
    c, _ = models.load_model(spec, weights=None, seed=4)
    assert ida == "random-init-seed-3"
    assert torch.equal(a.features[0].weight, b.features[0].weight)
    assert not torch.equal(a.features[0].weight, c.features[0].weight)


def test_missing_torchvision_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROCNN_MIRROR", str(tmp_path))
    with pytest.raises(MissingFileError, match=r"weights/alexnet-owt-7be5be79\.pth"):
        models.load_model(models.get_spec("alexnet"))


def test_user_weights_file_is_loaded_and_hashed(tmp_path):
    spec = models.get_spec("squeezenet1_1")
    ref, _ = models.load_model(spec, weights=None, seed=1)
    path = tmp_path / "mine.pth"
    torch.save(ref.state_dict(), path)
    model, sha = models.load_model(spec, weights=path)
    assert len(sha) == 64
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ref.parameters()))


def test_weights_file_with_wrong_hash_in_name_is_refused(tmp_path):
    spec = models.get_spec("squeezenet1_1")
    ref, _ = models.load_model(spec, weights=None)
    path = tmp_path / "squeezenet1_1-b8a52dc0.pth"
    torch.save(ref.state_dict(), path)
    with pytest.raises(IntegrityError, match="b8a52dc0"):
        models.load_model(spec, weights=path)


def test_corrupt_weights_file_is_refused(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(IntegrityError, match="Cannot read"):
        models.load_model(models.get_spec("alexnet"), weights=path)


def test_weights_for_another_architecture_are_refused(tmp_path):
    other, _ = models.load_model(models.get_spec("squeezenet1_1"), weights=None)
    path = tmp_path / "other.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(IntegrityError, match="does not fit"):
        models.load_model(models.get_spec("alexnet"), weights=path)


def test_efficientnet_matches_reference_implementation():
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    model, sha = models.load_model(models.get_spec("efficientnet_lite0"))
    ref = reference.EfficientNet.from_name("efficientnet-lite0")
    assert set(ref.state_dict()) == set(model.state_dict())
    ref.load_state_dict(model.state_dict())
    ref.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), atol=1e-5)
    assert sha == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def test_preprocessing_resize_crop_normalize():
    pre = models.Preprocessing(resize=8, crop=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    img = torch.ones(3, 16, 32)
    out = pre(img)
    assert out.shape == (3, 4, 4)
    assert torch.allclose(out, torch.ones_like(out))
    assert "crop=4" in pre.describe()
    with pytest.raises(UnknownNameError):
        models.Preprocessing(interpolation="lanczos9")


def test_imagenet_categories():
    cats = models.imagenet_categories()
    assert len(cats) == 1000 and cats[285] == "Egyptian cat"
    assert np.unique(cats).size >= 998


REAL_NETWORKS = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2"]


@pytest.mark.parametrize(
    ("variant", "size", "sha"),
    [
        ("lite1", 240, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
        pytest.param("lite2", 260, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
                     marks=pytest.mark.slow),
    ],
)
def test_efficientnet_lite1_lite2_match_reference_implementation(variant, size, sha):
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    spec = models.get_spec(f"efficientnet_{variant}")
    model, found = models.load_model(spec)
    assert found == sha
    assert spec.preprocessing.resize == (size, size) and spec.preprocessing.crop is None
    ref = reference.EfficientNet.from_name(f"efficientnet-{variant}")
    assert ref.input_image_size == size
    assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    ref.load_state_dict(model.state_dict())
    ref.eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), atol=1e-5)


def test_efficientnet_stage_widths_follow_the_scaling_rules():
    from neurocnn._efficientnet import stages

    # Lite2: width 1.1 (rounded to multiples of 8), depth 1.2 (ceil), first/last stage depth fixed
    assert [s[-1] for s in stages("lite2")] == [16, 24, 48, 88, 120, 208, 352]
    assert [s[0] for s in stages("lite2")] == [1, 3, 3, 4, 4, 5, 1]
    assert stages("lite0")[0][4] == stages("lite2")[0][4] == 32  # stem not scaled


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2"])
def test_new_networks_aliases_resolve(name):
    spec = models.get_spec(name)
    model, _ = models.load_model(spec, weights=None)
    mods = dict(model.named_modules())
    assert all(target in mods for target in spec.aliases.values())
    assert all(layer in spec.aliases for layer in spec.default_layers)
    assert len(spec.categories) == 1000


def test_mobilenet_v2_has_torchvision_layer_names_and_relu():
    spec = models.get_spec("mobilenet_v2")
    model, _ = models.load_model(spec, weights=None)
    reference = dict(__import__("torchvision").models.mobilenet_v2(weights=None).named_modules())
    assert all(spec.aliases[a] in reference for a in spec.default_layers)
    assert spec.aliases["stage4"] == "features.10" and spec.aliases["head"] == "features.18"
    kinds = {type(m) for m in model.modules()}
    assert torch.nn.ReLU in kinds and torch.nn.ReLU6 not in kinds and torch.nn.BatchNorm2d not in kinds


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL_NETWORKS)
def test_real_networks_recognize_chelsea_and_coffee(name):
    skdata = pytest.importorskip("skimage.data")
    spec = models.get_spec(name)
    model, _ = models.load_model(spec)
    images = torch.stack([
        spec.preprocessing(torch.from_numpy(getattr(skdata, n)()).permute(2, 0, 1).float() / 255)
        for n in ("chelsea", "coffee")
    ])
    with torch.no_grad():
        top3 = model(images).topk(3).indices
    cat, coffee = ([spec.categories[i] for i in row] for row in top3.tolist())
    assert cat[0] == "Egyptian cat" and {"tabby", "tiger cat"} <= set(cat)
    assert coffee[0] == "espresso"
