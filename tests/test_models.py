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
