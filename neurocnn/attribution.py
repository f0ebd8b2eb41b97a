"""Attribution: vanilla gradient (saliency), guided backprop, deconvnet.

Each method answers "which input pixels drive this output" for a class logit (or
log-probability) or for any unit of any layer (``layer, channel[, y, x]``), as the
gradient of that target with respect to the network's *normalized* input (the
tensor the network sees, after :attr:`VirtualSubject.preprocessing`).

The methods differ only in the backward rule of the rectifiers:

==================  =====================================  =====================================
method              ``nn.ReLU`` (forward mask ``x > 0``)    ``nn.ReLU6`` (mask ``0 < x < 6``)
==================  =====================================  =====================================
``saliency``        ``g * mask`` (plain autograd)           ``g * mask`` (plain autograd)
``guided_backprop`` ``max(g, 0) * mask`` (Springenberg)     ``max(g, 0) * mask``
``deconvnet``       ``max(g, 0)`` (Zeiler & Fergus)         ``max(g, 0)`` (forward mask ignored)
==================  =====================================  =====================================

The rules are installed with a forward pre-hook (which hands in-place rectifiers a
copy of their input, so the pre-activation survives) and a forward hook (which
replaces the module's output by the same values computed through an
``autograd.Function`` carrying the rule). Hooks are removed in ``finally``. For
``nn.ReLU`` the results equal captum's ``Saliency(abs=False)``, ``GuidedBackprop``
and ``Deconvolution``; captum does not override ``nn.ReLU6``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from torch import nn

from ._validation import check_index, check_option, check_positive_int
from .exceptions import (
    InvalidDataError,
    ShapeMismatchError,
    StimulusError,
    UnknownNameError,
)
from .stimuli import StimulusSet, load_stimuli
from .subject import VirtualSubject

__all__ = [
    "saliency",
    "guided_backprop",
    "deconvnet",
    "attribute",
    "deconvnet_reconstruction",
    "plot_attributions",
    "relu_rule",
    "METHODS",
    "OBJECTIVES",
    "Target",
    "resolve_target",
    "class_target_index",
    "as_stimuli",
]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

Method = Literal["saliency", "guided_backprop", "deconvnet"]
Reduce = Literal["mean", "max", "sum", "l2"]

#: Reductions of a channel map (or a whole layer) to one number per image.
OBJECTIVES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": lambda t: t.flatten(1).mean(1),
    "max": lambda t: t.flatten(1).amax(1),
    "sum": lambda t: t.flatten(1).sum(1),
    "l2": lambda t: t.flatten(1).pow(2).mean(1),
}


# ---------------------------------------------------------------- rectifier rules
class _GuidedRectifier(torch.autograd.Function):
    """Clamp to [0, upper]; backward passes positive gradients where 0 < x < upper."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, upper: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.upper = upper
        return x.clamp(min=0.0, max=upper)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        mask = (x > 0) & (x < ctx.upper)
        return grad.clamp(min=0.0) * mask, None


class _DeconvRectifier(torch.autograd.Function):
    """Clamp to [0, upper]; backward rectifies the gradient and ignores the forward mask."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, upper: float) -> torch.Tensor:
        return x.clamp(min=0.0, max=upper)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.clamp(min=0.0), None


_RULES: dict[str, type[torch.autograd.Function]] = {
    "guided": _GuidedRectifier,
    "deconvnet": _DeconvRectifier,
}
#: Rectifier modules the rules override, with the upper clip of each.
_RECTIFIERS: dict[type[nn.Module], float] = {nn.ReLU: math.inf, nn.ReLU6: 6.0}


@contextmanager
def relu_rule(model: nn.Module, rule: Literal["guided", "deconvnet"]) -> Iterator[nn.Module]:
    """Temporarily give every ``nn.ReLU``/``nn.ReLU6`` of ``model`` a modified backward rule.

    Forward values are unchanged. In-place rectifiers work (they receive a copy of
    their input). All hooks are removed when the block exits, even on error.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    rule : {"guided", "deconvnet"}
        ``"guided"``: gradient ``max(g, 0)`` where the forward input was in (0, upper);
        ``"deconvnet"``: ``max(g, 0)`` everywhere.

    Yields
    ------
    torch.nn.Module
        ``model`` itself.

    Raises
    ------
    UnknownNameError
        Unknown rule.

    Examples
    --------
    >>> with relu_rule(subject.model, "guided"):  # doctest: +SKIP
    ...     subject.model(x)[0, 281].backward()
    """
    function = _RULES[check_option("rule", rule, _RULES)]
    saved: dict[int, list[torch.Tensor]] = {}

    def pre_hook(module: nn.Module, args: tuple[torch.Tensor, ...]):
        saved.setdefault(id(module), []).append(args[0])
        return (args[0].clone(),) if getattr(module, "inplace", False) else None

    def post_hook(module: nn.Module, _args: tuple[torch.Tensor, ...], _output: torch.Tensor):
        return function.apply(saved[id(module)].pop(), _RECTIFIERS[type(module)])

    handles = []
    try:
        for module in model.modules():
            if type(module) in _RECTIFIERS:
                handles.append(module.register_forward_pre_hook(pre_hook))
                handles.append(module.register_forward_hook(post_hook))
        yield model
    finally:
        for handle in handles:
            handle.remove()
        saved.clear()


@contextmanager
def _plain_gradient(model: nn.Module) -> Iterator[nn.Module]:
    yield model


_METHOD_CONTEXT: dict[str, Callable[[nn.Module], Any]] = {
    "saliency": _plain_gradient,
    "guided_backprop": lambda model: relu_rule(model, "guided"),
    "deconvnet": lambda model: relu_rule(model, "deconvnet"),
}
METHODS = tuple(_METHOD_CONTEXT)


# ---------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Target:
    """A scalar per image to explain or maximize (private helper shared with visualization).

    ``layer`` None means the model's output; ``index`` is ``()`` (whole layer),
    ``(c,)`` (channel, reduced over space by ``reduce``; or a unit of a vector layer)
    or ``(c, y, x)``.
    """

    layer: str | None
    index: tuple[int, ...]
    reduce: str = "max"
    log_softmax: bool = False
    description: str = ""

    def output(self, subject: VirtualSubject, images: torch.Tensor) -> torch.Tensor:
        """The target layer's output (N, ...) for normalized ``images``, with autograd graph."""
        if self.layer is None:
            out = subject.model(images)
        else:
            out = subject.forward_layers(images, [self.layer], grad=True)[self.layer]
        return out.log_softmax(1) if self.log_softmax else out

    def select(self, out: torch.Tensor) -> torch.Tensor:
        """Reduce a layer output (N, ...) to the target value (N,)."""
        if not self.index:
            return OBJECTIVES[self.reduce](out)
        picked = out[(slice(None), *self.index)]
        return picked if picked.ndim == 1 else OBJECTIVES[self.reduce](picked)

    def __call__(self, subject: VirtualSubject, images: torch.Tensor) -> torch.Tensor:
        return self.select(self.output(subject, images))

    def attrs(self) -> dict[str, Any]:
        return {
            "target": self.description,
            "target_layer": self.layer or "output",
            "target_index": list(self.index) if self.index else "all",
            "target_reduce": self.reduce,
            "target_log_softmax": int(self.log_softmax),
        }


def class_target_index(
    subject: VirtualSubject, class_index: int | None, class_name: str | None, size: tuple[int, int] | None = None
) -> int:
    """Return the output index of a class given by index or ImageNet-style name."""
    n_out = subject.output_shape(None, size)[0]
    if class_name is not None:
        if class_index is not None:
            raise InvalidDataError("Give class_index or class_name, not both.")
        categories = list(subject.spec.categories)
        if not categories:
            raise UnknownNameError(
                f"Model {subject.name!r} has no class names; give class_index (0..{n_out - 1}) instead."
            )
        return categories.index(check_option("class name", class_name, categories))
    return check_index("class index", class_index, n_out, f"the {n_out} outputs of {subject.name!r}")


def resolve_target(
    subject: VirtualSubject,
    *,
    layer: str | None = None,
    channel: int | None = None,
    y: int | None = None,
    x: int | None = None,
    class_index: int | None = None,
    class_name: str | None = None,
    reduce: str = "max",
    log_softmax: bool = False,
    allow_whole_layer: bool = False,
    size: tuple[int, int] | None = None,
) -> Target:
    """Validate a target description and return a :class:`Target` (shared with visualization).

    Raises
    ------
    UnknownNameError
        Unknown layer, class name (closest match suggested) or out-of-range unit.
    InvalidDataError
        Contradictory or incomplete target (e.g. a class and a layer, y without x).
    """
    check_option("reduction", reduce, OBJECTIVES)
    if class_index is not None or class_name is not None:
        if layer is not None or channel is not None or y is not None or x is not None:
            raise InvalidDataError("A class target is the model output: do not also give layer/channel/y/x.")
        index = class_target_index(subject, class_index, class_name, size)
        name = subject.spec.categories[index] if subject.spec.categories else str(index)
        kind = "log-probability" if log_softmax else "logit"
        return Target(None, (index,), reduce, log_softmax, f"class {index} ({name}) {kind}")
    if layer is None:
        raise InvalidDataError("Give a layer (and channel) or a class (class_index or class_name).")
    dotted = subject.resolve_layer(layer)
    shape = subject.output_shape(layer, size)
    if (y is None) != (x is None):
        raise InvalidDataError("Give both y and x of a unit, or neither.")
    if log_softmax and len(shape) != 1:
        raise InvalidDataError(f"log_softmax needs a vector layer; {layer!r} has output shape {shape}.")
    where = f"layer {layer!r} (output shape {shape})"
    if channel is None:
        if y is not None or not allow_whole_layer:
            raise InvalidDataError(f"Give a channel of {where}.")
        return Target(dotted, (), reduce, log_softmax, f"{layer} all units ({reduce})")
    index = [check_index("channel", channel, shape[0], where)]
    if y is not None:
        if len(shape) != 3:
            raise InvalidDataError(f"{where} has no spatial positions; give only channel (the unit index).")
        index += [check_index("y", y, shape[1], where), check_index("x", x, shape[2], where)]
    description = f"{layer} channel {index[0]}" + (f" at y={y}, x={x}" if y is not None else "")
    if len(index) == 1 and len(shape) == 3:
        description += f" ({reduce} over space)"
    return Target(dotted, tuple(index), reduce, log_softmax, description)


# ----------------------------------------------------------------------- inputs
def as_stimuli(images: Any) -> tuple[StimulusSet, bool]:
    """Load stimuli; a single 3-D image (3, H, W) or (H, W, 3) is one stimulus.

    Returns the set and whether a single image was given.
    """
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 3:
        if images.shape[0] != 3 and images.shape[-1] != 3:
            raise StimulusError(
                f"A single image must have shape (3, H, W) or (H, W, 3); got {tuple(images.shape)}. "
                "Pass grayscale images as a StimulusSet or a 4-D batch."
            )
        image = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images)
        if image.shape[0] != 3:
            image = image.permute(2, 0, 1)
        return load_stimuli(image[None]), True
    return load_stimuli(images), False


def _gradients(
    subject: VirtualSubject, stim: StimulusSet, target: Target, method: str, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient of the target w.r.t. the normalized input: (N, H, W, 3), and target values (N,)."""
    grads, values = [], []
    for _, batch in stim.batches(batch_size, subject.preprocessing):
        inputs = batch.to(subject.device).requires_grad_(True)
        with _METHOD_CONTEXT[method](subject.model):
            value = _forward(target, subject, inputs)
            (grad,) = torch.autograd.grad(value.sum(), inputs)
        grads.append(grad.permute(0, 2, 3, 1).detach().cpu().numpy())
        values.append(value.detach().cpu().numpy())
    return np.concatenate(grads), np.concatenate(values)


def _forward(
    function: Callable[[VirtualSubject, torch.Tensor], torch.Tensor], subject: VirtualSubject, inputs: torch.Tensor
) -> torch.Tensor:
    """Run ``function(subject, inputs)``, turning shape errors into an actionable message."""
    try:
        return function(subject, inputs)
    except RuntimeError as err:
        raise ShapeMismatchError(
            f"The network cannot process inputs of shape {tuple(inputs.shape)} ({err}). Check the "
            "image size against the subject's preprocessing (resize/crop)."
        ) from err


def attribute(
    subject: VirtualSubject,
    stimuli: Any,
    method: Method = "saliency",
    *,
    layer: str | None = None,
    channel: int | None = None,
    y: int | None = None,
    x: int | None = None,
    class_index: int | None = None,
    class_name: str | None = None,
    reduce: Reduce = "max",
    batch_size: int = 16,
) -> xr.DataArray:
    """Attribute a class logit or a unit's activation to the input pixels.

    Parameters
    ----------
    subject : VirtualSubject
        The network.
    stimuli : StimulusSet, str, path, array or tensor
        Anything :func:`neurocnn.stimuli.load_stimuli` accepts, or one image of shape
        (3, H, W) / (H, W, 3) in [0, 1] (or uint8).
    method : {"saliency", "guided_backprop", "deconvnet"}
        Backward rule of the rectifiers (see the module docstring).
    layer, channel, y, x : optional
        A unit target: ``channel`` of ``layer`` (reduced over space by ``reduce``
        unless ``y, x`` pick one position; for a vector layer ``channel`` is the unit).
    class_index, class_name : optional
        A class target: that logit of the model output (``class_name`` as in
        ``subject.spec.categories``; a wrong name suggests the closest one).
    reduce : {"max", "mean", "sum", "l2"}
        Reduction of a channel map over space.
    batch_size : int
        Images per backward pass.

    Returns
    -------
    xarray.DataArray
        Gradient w.r.t. the normalized input, dims ``("stimulus", "y", "x", "rgb")``
        (``("y", "x", "rgb")`` for a single image), with coordinate ``target_value``
        (the target per stimulus) and provenance attrs (method, target, model, ...).

    Raises
    ------
    UnknownNameError
        Unknown method, layer, class name or out-of-range unit.
    InvalidDataError
        Incomplete or contradictory target.
    StimulusError, ShapeMismatchError
        Unreadable images or images the network cannot process.

    Examples
    --------
    >>> grad = attribute(subject, "92images", "guided_backprop", class_name="tabby")  # doctest: +SKIP
    """
    check_option("method", method, _METHOD_CONTEXT)
    check_positive_int("batch_size", batch_size)
    stim, single = as_stimuli(stimuli)
    target = resolve_target(
        subject, layer=layer, channel=channel, y=y, x=x, class_index=class_index,
        class_name=class_name, reduce=reduce, size=subject.input_size(stim),
    )
    grads, values = _gradients(subject, stim, target, method, batch_size)
    attrs = {
        **subject.provenance(target.layer or subject.layers[-1]),
        **target.attrs(),
        "method": method,
        "wrt": "normalized input",
        "stimulus_set": stim.name,
    }
    result = xr.DataArray(
        grads,
        dims=("stimulus", "y", "x", "rgb"),
        coords={**stim.coords(), "rgb": ["r", "g", "b"], "target_value": ("stimulus", values)},
        attrs=attrs,
        name=method,
    )
    return result.isel(stimulus=0) if single else result


def saliency(subject: VirtualSubject, stimuli: Any, **target: Any) -> xr.DataArray:
    """Vanilla gradient of a target w.r.t. the input (Simonyan et al. 2014), signed.

    Same parameters, returns and errors as :func:`attribute` (``method="saliency"``).
    Equals captum's ``Saliency(...).attribute(..., abs=False)``.

    Examples
    --------
    >>> grad = saliency(subject, image, layer="conv5", channel=3)  # doctest: +SKIP
    """
    return attribute(subject, stimuli, "saliency", **target)


def guided_backprop(subject: VirtualSubject, stimuli: Any, **target: Any) -> xr.DataArray:
    """Guided backpropagation (Springenberg et al. 2015).

    Same parameters, returns and errors as :func:`attribute`
    (``method="guided_backprop"``). Equals captum's ``GuidedBackprop`` on ReLU nets.

    Examples
    --------
    >>> gb = guided_backprop(subject, image, class_name="Siamese cat")  # doctest: +SKIP
    """
    return attribute(subject, stimuli, "guided_backprop", **target)


def deconvnet(subject: VirtualSubject, stimuli: Any, **target: Any) -> xr.DataArray:
    """Deconvnet attribution (Zeiler & Fergus 2014): rectified gradients, forward mask ignored.

    Same parameters, returns and errors as :func:`attribute` (``method="deconvnet"``).
    Equals captum's ``Deconvolution`` on ReLU nets.

    Examples
    --------
    >>> dc = deconvnet(subject, image, layer="conv5", channel=3)  # doctest: +SKIP
    """
    return attribute(subject, stimuli, "deconvnet", **target)


_KEEP = ("max", "channel")


def deconvnet_reconstruction(
    subject: VirtualSubject,
    stimuli: Any,
    layer: str,
    channel: int,
    *,
    keep: Literal["max", "channel"] = "max",
) -> xr.DataArray:
    """Project one channel's activation down to pixel space with a deconvnet (Zeiler & Fergus 2014).

    All other activations of ``layer`` are set to zero; ``keep="max"`` keeps only the
    channel's strongest activation, ``keep="channel"`` its whole map. The kept
    activations are then passed down through the network with the deconvnet rule:
    transposed convolutions (the gradient of the convolutions), max-pool switches
    (the gradient of max-pooling) and rectification of the signal at each ReLU.

    Parameters
    ----------
    subject : VirtualSubject
        The network.
    stimuli : array, tensor, StimulusSet of one image
        One image (3, H, W) / (H, W, 3) in [0, 1] (or uint8), or a one-stimulus set.
    layer : str
        Layer name or alias (a conv feature map, or a vector layer).
    channel : int
        Channel (or unit) to reconstruct.
    keep : {"max", "channel"}
        Keep only the maximum activation or the whole channel.

    Returns
    -------
    xarray.DataArray
        Reconstruction, dims ``("y", "x", "rgb")``; attrs include the kept position
        (``max_y``, ``max_x``) and activation.

    Raises
    ------
    UnknownNameError
        Unknown layer, channel out of range, or unknown ``keep``.
    StimulusError
        Not exactly one image.

    Examples
    --------
    >>> rec = deconvnet_reconstruction(subject, image, "conv5", 12)  # doctest: +SKIP
    """
    check_option("keep", keep, _KEEP)
    stim, _ = as_stimuli(stimuli)
    if len(stim) != 1:
        raise StimulusError(f"deconvnet_reconstruction takes one image; got {len(stim)}.")
    target = resolve_target(subject, layer=layer, channel=channel, size=subject.input_size(stim))
    inputs = subject.preprocess(stim).requires_grad_(True)
    with relu_rule(subject.model, "deconvnet"):
        out = _forward(target.output, subject, inputs)
        fmap = out[0, target.index[0]]
        flat = int(fmap.detach().flatten().argmax())
        seed = torch.zeros_like(out)
        if keep == "max":
            seed[0, target.index[0]].view(-1)[flat] = fmap.detach().flatten()[flat]
        else:
            seed[0, target.index[0]] = fmap.detach()
        (grad,) = torch.autograd.grad(out, inputs, grad_outputs=seed)
    position = np.unravel_index(flat, tuple(fmap.shape)) if fmap.ndim else ()
    attrs = {
        **subject.provenance(layer),
        "method": "deconvnet_reconstruction",
        "channel": int(channel),
        "keep": keep,
        "max_activation": float(fmap.detach().flatten()[flat]),
        "max_y": int(position[0]) if len(position) == 2 else -1,
        "max_x": int(position[1]) if len(position) == 2 else -1,
        "stimulus": str(stim.ids[0]),
        "wrt": "normalized input",
    }
    return xr.DataArray(
        grad[0].permute(1, 2, 0).cpu().numpy(),
        dims=("y", "x", "rgb"),
        coords={"rgb": ["r", "g", "b"]},
        attrs=attrs,
        name="reconstruction",
    )


def to_rgb(attribution: np.ndarray | xr.DataArray) -> np.ndarray:
    """Map a signed attribution (..., H, W, 3) to displayable RGB in [0, 1] (0 -> gray).

    Each image is scaled by its own maximum absolute value: ``0.5 + a / (2 max|a|)``.
    """
    a = np.asarray(attribution, dtype=np.float64)
    scale = np.abs(a).reshape(*a.shape[:-3], -1).max(-1)[..., None, None, None]
    return 0.5 + a / (2 * np.where(scale > 0, scale, 1.0))


def plot_attributions(
    attributions: Mapping[str, xr.DataArray] | Sequence[xr.DataArray],
    *,
    images: xr.DataArray | np.ndarray | None = None,
    size: float = 2.0,
):
    """Plot attributions side by side: one column per method, one row per stimulus.

    Parameters
    ----------
    attributions : mapping of title to DataArray, or sequence of DataArrays
        Results of :func:`saliency`, :func:`guided_backprop`, :func:`deconvnet` or
        :func:`deconvnet_reconstruction`, all for the same stimuli (dims ``(stimulus,
        y, x, rgb)`` or ``(y, x, rgb)``). A sequence is titled by each ``.name``.
    images : array (stimulus, y, x, rgb) or (y, x, rgb), optional
        The input images (values in [0, 1] or uint8), shown in a first column.
    size : float
        Inches per panel.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ShapeMismatchError
        Attributions of different shapes.
    """
    import matplotlib.pyplot as plt

    items = dict(attributions) if isinstance(attributions, Mapping) else {str(a.name): a for a in attributions}
    if not items:
        raise InvalidDataError("Give at least one attribution to plot.")
    arrays = {k: np.asarray(v) for k, v in items.items()}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1:
        raise ShapeMismatchError(f"Attributions differ in shape: {sorted(shapes)}.")
    arrays = {k: a[None] if a.ndim == 3 else a for k, a in arrays.items()}
    columns = {k: to_rgb(a) for k, a in arrays.items()}
    if images is not None:
        img = np.asarray(images)
        img = img[None] if img.ndim == 3 else img
        columns = {"image": img / 255.0 if img.dtype == np.uint8 else img, **columns}
    n_rows = next(iter(arrays.values())).shape[0]
    fig, axes = plt.subplots(n_rows, len(columns), figsize=(size * len(columns), size * n_rows), squeeze=False)
    for j, (title, column) in enumerate(columns.items()):
        for i in range(n_rows):
            axes[i, j].imshow(np.clip(column[i], 0, 1))
            axes[i, j].axis("off")
        axes[0, j].set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
