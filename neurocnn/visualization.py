"""Seeing what units respond to: activation maps, filters, top examples, activation
maximization and DeepDream.

* :func:`activation_maps` — one image's feature maps in a layer (MATLAB's
  ``activations`` + montage; white strong positive, black strong negative).
* :func:`first_layer_filters` — the first convolution's kernels as RGB tiles.
* :func:`top_examples` — a unit's top-K (or bottom-K) dataset images with the input
  crop under the unit's receptive field (Zeiler & Fergus 2014).
* :func:`maximize_activation` — gradient ascent (or descent) on the input image for a
  unit, a channel, a whole layer or a class (Erhan et al. 2009; Yosinski et al. 2015),
  with jitter, periodic blur, L2 decay, total variation and an optional Fourier /
  decorrelated-colour parameterization (Olah et al. 2017).
* :func:`deep_dream` — DeepDream over an image pyramid, as MATLAB's
  ``deepDreamImage(net, layer, channels, 'PyramidLevels', n)``.

Images are xarray with dims ``(y, x, rgb)`` and values in [0, 1]; gradients are taken
with respect to the [0, 1] image, normalized by the subject's preprocessing inside
the loop, so every image is a valid stimulus.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn
from tqdm.auto import tqdm

from ._image_param import ImageParam as _ImageParam
from ._image_param import jitter as _jitter
from ._image_param import shift as _shift
from ._image_param import total_variation as _total_variation
from ._validation import (
    check_device,
    check_finite,
    check_option,
    check_positive_int,
    torch_generator,
)
from .attribution import OBJECTIVES, Target, as_stimuli, resolve_target
from .exceptions import (
    InvalidDataError,
    ShapeMismatchError,
    StimulusError,
    UnknownNameError,
)
from .forward import model_on
from .plotting import image_grid
from .stimuli import load_stimuli
from .subject import VirtualSubject

__all__ = [
    "activation_maps",
    "plot_activation_maps",
    "first_layer_filters",
    "plot_filters",
    "top_examples",
    "plot_top_examples",
    "maximize_activation",
    "Regularizers",
    "deep_dream",
    "plot_images",
]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

Objective = Literal["mean", "max", "sum", "l2"]
Parameterization = Literal["pixel", "fourier"]

# ----------------------------------------------------------- activation maps
def _one_image(image: Any) -> tuple[torch.Tensor, str]:
    """One image as (3, H, W) in [0, 1] and its id; accepts arrays, tensors, files, sets of one."""
    stim, _ = as_stimuli(image)
    if len(stim) != 1:
        raise StimulusError(f"Expected one image, got {len(stim)}; select one, e.g. stimuli.subset([0]).")
    return stim.load(0), str(stim.ids[0])


def activation_maps(
    subject: VirtualSubject, stimuli: Any, layer: str, channels: Sequence[int] | None = None
) -> xr.DataArray:
    """Feature maps of one image in one layer.

    Parameters
    ----------
    subject : VirtualSubject
        The network.
    stimuli : array, tensor, path or StimulusSet of one image
        (3, H, W) or (H, W, 3) in [0, 1] or uint8; preprocessed like every stimulus.
    layer : str
        Spatial layer (name or alias).
    channels : sequence of int, optional
        Channels to return (default all).

    Returns
    -------
    xarray.DataArray
        Dims ``("channel", "y", "x")`` with provenance attrs and the stimulus id.

    Raises
    ------
    UnknownNameError
        Unknown layer or channel out of range.
    ShapeMismatchError
        The layer has no spatial map.
    StimulusError
        Not exactly one readable image in [0, 1].

    Examples
    --------
    >>> maps = activation_maps(subject, stim.subset([0]), "conv3")  # doctest: +SKIP
    """
    img, stim_id = _one_image(stimuli)
    x = subject.preprocessing(img)[None].to(subject.device)
    out = subject.forward_layers(x, [layer])[layer][0]
    if out.ndim != 3:
        raise ShapeMismatchError(f"Layer {layer!r} has output shape {tuple(out.shape)}; it has no spatial map.")
    index = np.arange(out.shape[0]) if channels is None else _check_channels(channels, out.shape[0], layer)
    values = out[torch.as_tensor(index)].float().cpu().numpy()
    return xr.DataArray(
        values,
        dims=("channel", "y", "x"),
        coords={"channel": index, "y": np.arange(values.shape[1]), "x": np.arange(values.shape[2])},
        attrs={**subject.provenance(layer), "stimulus": stim_id},
        name="activation",
    )


def _check_channels(channels: Sequence[int], n: int, layer: str) -> np.ndarray:
    index = np.asarray(list(channels))
    if index.size == 0 or index.dtype.kind not in "iu" or index.min() < 0 or index.max() >= n:
        raise UnknownNameError(f"Channels {list(channels)} are not valid for layer {layer!r}: use 0..{n - 1}.")
    return index


def plot_activation_maps(maps: xr.DataArray, *, ncols: int = 8, vmax: float | None = None, size: float = 1.2):
    """Plot feature maps in a grid: white strong positive, black strong negative, gray zero.

    The gray colormap is symmetric around zero with one range for all channels
    (``vmax`` = largest absolute activation unless given), so channels are comparable.

    Parameters
    ----------
    maps : xarray.DataArray
        Result of :func:`activation_maps`.
    ncols : int
        Panels per row.
    vmax : float, optional
        Activation shown as pure white (its negative as black).
    size : float
        Inches per panel.

    Returns
    -------
    matplotlib.figure.Figure
    """
    values = np.asarray(maps)
    limit = float(vmax) if vmax is not None else float(np.abs(values).max()) or 1.0
    titles = [f"ch {int(c)}" for c in maps["channel"].values]
    fig = image_grid(values, titles=titles, ncols=ncols, cmap="gray", vmin=-limit, vmax=limit, size=size)
    fig.suptitle(f"{maps.attrs.get('alias') or maps.attrs.get('layer', '')} — {maps.attrs.get('stimulus', '')}", y=1.01)
    return fig


def first_layer_filters(subject: VirtualSubject) -> xr.DataArray:
    """The kernels of the first convolution on the RGB input, as RGB tiles.

    Each filter is min-max scaled to [0, 1] on its own (all three colour channels
    together), as in Krizhevsky et al. (2012), Fig. 3.

    Returns
    -------
    xarray.DataArray
        Dims ``("channel", "y", "x", "rgb")``; attrs name the layer.

    Raises
    ------
    InvalidDataError
        The model has no 2-D convolution with 3 input channels.

    Examples
    --------
    >>> tiles = first_layer_filters(VirtualSubject())  # doctest: +SKIP
    """
    found = next(
        ((name, m) for name, m in subject.model.named_modules()
         if isinstance(m, nn.Conv2d) and m.in_channels == 3 and m.groups == 1),
        None,
    )
    if found is None:
        raise InvalidDataError(f"Model {subject.name!r} has no Conv2d with 3 input channels (RGB) to show.")
    name, conv = found
    w = conv.weight.detach().float().cpu().numpy().transpose(0, 2, 3, 1)
    lo = w.min(axis=(1, 2, 3), keepdims=True)
    hi = w.max(axis=(1, 2, 3), keepdims=True)
    tiles = (w - lo) / np.where(hi > lo, hi - lo, 1.0)
    return xr.DataArray(
        tiles,
        dims=("channel", "y", "x", "rgb"),
        coords={"channel": np.arange(w.shape[0]), "rgb": ["r", "g", "b"]},
        attrs={**subject.provenance(name), "scaling": "min-max per filter"},
        name="filters",
    )


def plot_filters(filters: xr.DataArray, *, ncols: int = 8, size: float = 0.8):
    """Plot first-layer filters (from :func:`first_layer_filters`) as an RGB grid.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = image_grid(np.asarray(filters), ncols=ncols, size=size)
    for ax in fig.axes:
        for im in ax.get_images():
            im.set_interpolation("nearest")
    fig.suptitle(f"{filters.attrs.get('model', '')} {filters.attrs.get('layer', '')} filters", y=1.01)
    return fig


# -------------------------------------------------------------- top examples
def _box_function(subject: VirtualSubject, layer: str, hw: tuple[int, int], map_hw: tuple[int, int]):
    """Return (y, x) -> unclipped RF box (y0, y1, x0, x1) in input pixels.

    Uses the theoretical receptive fields of :mod:`neurocnn.receptive_fields`; the box
    is affine in the unit position, so two probes give it for every unit.
    """
    from .receptive_fields import rf_box

    first = rf_box(subject, layer, 0, 0, input_size=hw)
    second = rf_box(subject, layer, min(1, map_hw[0] - 1), min(1, map_hw[1] - 1), input_size=hw)
    jump_y, jump_x = second.y0 - first.y0, second.x0 - first.x0

    def box(y: int, x: int) -> tuple[int, int, int, int]:
        return (first.y0 + y * jump_y, first.y1 + y * jump_y, first.x0 + x * jump_x, first.x1 + x * jump_x)

    return box


def _crop(image: torch.Tensor, box: tuple[int, int, int, int], fill: torch.Tensor) -> torch.Tensor:
    """Crop (3, H, W) to a box; outside the image the ``fill`` colour (what zero padding means).

    Along an axis where the box is larger than the image the whole image is kept.
    """
    _, h, w = image.shape
    y0, y1, x0, x1 = box
    if y1 - y0 >= h:
        y0, y1 = 0, h
    if x1 - x0 >= w:
        x0, x1 = 0, w
    out = fill[:, None, None].expand(3, y1 - y0, x1 - x0).clone()
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    out[:, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[:, sy0:sy1, sx0:sx1]
    return out


def top_examples(
    subject: VirtualSubject,
    stimuli: Any,
    layer: str,
    channel: int,
    *,
    top_k: int = 9,
    bottom: bool = False,
    unit: tuple[int, int] | None = None,
    activations: xr.DataArray | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> xr.Dataset:
    """The dataset images that drive a unit most (or least), with the crop under its receptive field.

    Zeiler & Fergus (2014) top-9 crops: a channel's score for an image is its maximum
    over space (``bottom=True``: its minimum, the most negative response, ranked
    ascending) at the position where that occurs; with ``unit=(y, x)`` the score is that
    one unit's activation. The crop is the input (after the subject's resize/crop) under
    the theoretical receptive field of the winning unit
    (:func:`neurocnn.receptive_fields.rf_box`), with the preprocessing's mean colour
    where the field extends past the image (the zero padding the network sees); where the
    field is larger than the image the whole image is kept along that axis.

    Parameters
    ----------
    subject : VirtualSubject
        The network.
    stimuli : StimulusSet, str, path or array
        The dataset (anything :func:`neurocnn.stimuli.load_stimuli` accepts).
    layer : str
        Layer name or alias (spatial, or a vector layer: then the crop is the whole image).
    channel : int
        Channel (or unit of a vector layer).
    top_k : int
        Number of examples (at most the number of stimuli).
    bottom : bool
        Return the K most negative examples instead.
    unit : (int, int), optional
        A fixed position (y, x) in the channel's map.
    activations : xarray.DataArray, optional
        The layer's activations for ``stimuli`` from :meth:`VirtualSubject.activations`
        (reused instead of a new forward pass when ranking many units).
    batch_size : int
        Images per forward pass.
    progress : bool
        Show a progress bar.

    Returns
    -------
    xarray.Dataset
        Coordinate ``rank`` (1..K) with ``stimulus`` (ids), ``activation``,
        ``unit_y``/``unit_x`` (winning position), ``box`` (rank, edge: y0, y1, x0, x1;
        unclipped) and ``crop`` (rank, y, x, rgb; [0, 1]); provenance attrs.

    Raises
    ------
    UnknownNameError
        Unknown layer, channel out of range.
    InvalidDataError
        ``top_k`` not a positive integer, or larger than the number of stimuli; a unit
        outside the map or on a vector layer.
    ShapeMismatchError
        ``activations`` are not those of ``layer`` for ``stimuli``.

    Examples
    --------
    >>> top = top_examples(subject, "92images", "conv5", 12, top_k=9)  # doctest: +SKIP
    """
    check_positive_int("k", top_k)
    check_positive_int("batch_size", batch_size)
    stim = load_stimuli(stimuli)
    if top_k > len(stim):
        raise InvalidDataError(f"top_k={top_k} is larger than the {len(stim)} stimuli.")
    if activations is None:
        acts = subject.activations(stim, layer, batch_size=batch_size, progress=progress)
    else:
        acts = activations
        same_ids = acts.sizes.get("stimulus") == len(stim) and np.array_equal(acts["stimulus"].values, stim.ids)
        if not same_ids or acts.attrs.get("layer") != subject.resolve_layer(layer):
            raise ShapeMismatchError(
                f"The activations given are of layer {acts.attrs.get('layer')!r} for "
                f"{acts.sizes.get('stimulus')} stimuli; top_examples needs layer "
                f"{subject.resolve_layer(layer)!r} for the {len(stim)} stimuli given, in the same order."
            )
    n_channels = acts.sizes[acts.dims[1]]
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not 0 <= channel < n_channels:
        raise UnknownNameError(f"channel {channel!r} does not exist in layer {layer!r}: valid are 0..{n_channels - 1}.")
    values = np.asarray(acts.values[:, channel], dtype=np.float64)
    spatial = values.ndim == 3
    if unit is not None:
        if not spatial:
            raise InvalidDataError(f"Layer {layer!r} has no spatial map; give no unit.")
        uy, ux = (int(v) for v in unit)
        if not (0 <= uy < values.shape[1] and 0 <= ux < values.shape[2]):
            raise InvalidDataError(f"unit {unit} is outside the {values.shape[1]}x{values.shape[2]} map of {layer!r}.")
        flat_pos = np.full(len(stim), uy * values.shape[2] + ux)
    elif spatial:
        flat = values.reshape(len(stim), -1)
        flat_pos = flat.argmin(1) if bottom else flat.argmax(1)
    else:
        flat_pos = np.zeros(len(stim), dtype=int)
    score = values.reshape(len(stim), -1)[np.arange(len(stim)), flat_pos]
    order = np.argsort(score if bottom else -score, kind="stable")[:top_k]
    hw = subject.input_size(stim)
    if spatial:
        map_hw = values.shape[1:]
        pos_y, pos_x = np.unravel_index(flat_pos[order], map_hw)
        box_of = _box_function(subject, layer, hw, map_hw)
        boxes = np.array([box_of(int(y), int(x)) for y, x in zip(pos_y, pos_x)])
    else:
        pos_y = pos_x = np.full(top_k, -1)
        boxes = np.tile([0, hw[0], 0, hw[1]], (top_k, 1))
    fill = torch.as_tensor(subject.preprocessing.mean, dtype=torch.float32)
    crops = torch.stack([
        _crop(subject.preprocessing.geometric(stim.load(int(i))), tuple(b), fill) for i, b in zip(order, boxes)
    ])
    return xr.Dataset(
        {
            "activation": ("rank", score[order].astype(np.float32)),
            "unit_y": ("rank", pos_y.astype(int)),
            "unit_x": ("rank", pos_x.astype(int)),
            "box": (("rank", "edge"), boxes.astype(int)),
            "crop": (("rank", "y", "x", "rgb"), crops.permute(0, 2, 3, 1).numpy()),
        },
        coords={
            "rank": np.arange(1, top_k + 1),
            "stimulus": ("rank", stim.ids[order]),
            "stimulus_index": ("rank", order.astype(int)),
            "edge": ["y0", "y1", "x0", "x1"],
            "rgb": ["r", "g", "b"],
        },
        attrs={
            **subject.provenance(layer),
            "channel": int(channel),
            "direction": "bottom" if bottom else "top",
            "score": "unit" if unit is not None else ("channel min over space" if bottom else "channel max over space"),
            "unit": list(unit) if unit is not None else "argmax",
            "stimulus_set": stim.name,
            "rf": "theoretical (neurocnn.receptive_fields.rf_box)",
        },
    )


def plot_top_examples(result: xr.Dataset, *, ncols: int = 3, size: float = 1.6):
    """Plot the crops of :func:`top_examples` with stimulus ids and activations.

    Returns
    -------
    matplotlib.figure.Figure
    """
    titles = [f"{s}\n{a:.3g}" for s, a in zip(result["stimulus"].values, result["activation"].values)]
    fig = image_grid(np.clip(result["crop"].values, 0, 1), titles=titles, ncols=ncols, size=size)
    fig.suptitle(
        f"{result.attrs.get('alias') or result.attrs.get('layer')} ch {result.attrs.get('channel')} "
        f"({result.attrs.get('direction')})", fontsize=9, y=1.01,
    )
    return fig


# ------------------------------------------------- activation maximization
def _check_nonnegative(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise InvalidDataError(f"{name} must be a finite number >= 0, got {value}.")
    return value


def _on_device(subject: VirtualSubject, device: str | torch.device | None) -> torch.device:
    return check_device(device) if device is not None else subject.device


def _value(subject: VirtualSubject, target: Target, img: torch.Tensor) -> torch.Tensor:
    """Target value (N,) of images in [0, 1]."""
    try:
        return target(subject, subject.preprocessing.normalize(img))
    except RuntimeError as err:
        raise ShapeMismatchError(
            f"The network cannot process an image of shape {tuple(img.shape)} ({err})."
        ) from err


_PARAMETERIZATIONS = ("pixel", "fourier")


@dataclass(frozen=True)
class Regularizers:
    """Image regularizers of :func:`maximize_activation`, validated on creation.

    Parameters
    ----------
    jitter : int
        Maximum random roll (pixels) per step; 0 disables.
    blur_every : int
        Blur every ``blur_every`` steps (0: never).
    blur_sigma : float
        Gaussian blur sigma (pixels).
    l2_decay : float
        Fraction by which the parameters shrink each step.
    tv_weight : float
        Weight of the total-variation penalty.

    Raises
    ------
    InvalidDataError
        Negative or non-integer values.
    """

    jitter: int = 8
    blur_every: int = 0
    blur_sigma: float = 0.5
    l2_decay: float = 0.0
    tv_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("l2_decay", "tv_weight", "blur_sigma"):
            object.__setattr__(self, name, _check_nonnegative(name, getattr(self, name)))
        jitter, blur_every = self.jitter, self.blur_every
        if isinstance(jitter, bool) or not isinstance(jitter, (int, np.integer)) or jitter < 0:
            raise InvalidDataError(f"jitter must be an integer number of pixels >= 0, got {jitter!r}.")
        if isinstance(blur_every, bool) or not isinstance(blur_every, (int, np.integer)) or blur_every < 0:
            raise InvalidDataError(f"blur_every must be an integer >= 0 (0: never), got {blur_every!r}.")
        object.__setattr__(self, "jitter", int(jitter))
        object.__setattr__(self, "blur_every", int(blur_every))

    def attrs(self) -> dict[str, Any]:
        """The settings for result attrs."""
        return {"jitter": self.jitter, "blur_every": self.blur_every, "l2_decay": self.l2_decay,
                "tv_weight": self.tv_weight, "blur_sigma": self.blur_sigma}


def maximize_activation(
    subject: VirtualSubject,
    layer: str | None = None,
    channel: int | None = None,
    *,
    unit: tuple[int, int] | None = None,
    objective: Objective = "mean",
    class_index: int | None = None,
    class_name: str | None = None,
    softmax: bool = False,
    minimize: bool = False,
    steps: int = 256,
    lr: float = 0.05,
    regularizers: Regularizers | None = None,
    parameterization: Parameterization = "fourier",
    decorrelate: bool = True,
    size: int | tuple[int, int] | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    **regularizer_options: Any,
) -> xr.Dataset:
    """Synthesize the image that maximizes (or minimizes) a unit, channel, layer or class.

    Gradient ascent with Adam on an image parameterized as
    ``sigmoid(colour(spatial(p)))`` (values always in [0, 1]); each step the image is
    jittered by a random roll, passed through the subject's normalization and network
    (stopping at ``layer``), and the loss ``-/+ objective + tv_weight * TV(image)`` is
    minimized; every ``blur_every`` steps the image basis is Gaussian-blurred
    (Yosinski et al. 2015), and each step the parameters decay by ``l2_decay`` towards
    mid-gray.

    Parameters
    ----------
    subject : VirtualSubject
        The network.
    layer : str, optional
        Layer name or alias; with no ``channel`` the whole layer is the target.
        Leave None for a class target.
    channel : int, optional
        Channel (or unit of a vector layer).
    unit : (int, int), optional
        A position (y, x) within ``channel``'s map (a single unit).
    objective : {"mean", "max", "sum", "l2"}
        Reduction over the channel's map (or the whole layer); "l2" is the mean square
        (the DeepDream objective).
    class_index, class_name : optional
        Maximize a class logit of the model output (``class_name`` as in
        ``subject.spec.categories``, closest match suggested when wrong).
    softmax : bool
        For a class: maximize its log-probability instead of the logit (so other
        classes are pushed down).
    minimize : bool
        Minimize instead of maximize.
    steps : int
        Optimization steps.
    lr : float
        Adam learning rate.
    regularizers : Regularizers, optional
        Jitter, blur, L2 decay and total-variation weight in one object (default
        ``Regularizers()``); see :class:`Regularizers`.
    **regularizer_options
        ``jitter``, ``blur_every``, ``blur_sigma``, ``l2_decay``, ``tv_weight`` given one
        by one (override the fields of ``regularizers``).
    parameterization : {"pixel", "fourier"}
        Spatial basis of the image (Fourier: 1/f-scaled spectrum, Olah et al. 2017).
    decorrelate : bool
        Optimize in decorrelated (ImageNet colour PCA) colour space.
    size : int or (int, int), optional
        Image size (default: the network's input size from its preprocessing).
    seed : int
        Seed of the initial image and the jitter.
    device : str, optional
        Device of this run (default: the subject's).
    progress : bool
        Show a progress bar.

    Returns
    -------
    xarray.Dataset
        ``image`` (y, x, rgb) in [0, 1]; ``objective`` (step): the target value at each
        step (of the jittered image, before the update, sign as the target's);
        attrs: every setting, the target, ``final_activation`` (target value of the final
        image without jitter), ``initial_activation`` and provenance.

    Raises
    ------
    UnknownNameError
        Unknown layer, class name (closest match suggested), objective or
        parameterization; channel/unit out of range.
    InvalidDataError
        ``steps`` < 1, negative regularization weights, contradictory target; a target
        with zero gradient at the start image (a silent unit behind a rectifier).

    Examples
    --------
    >>> res = maximize_activation(subject, "stage6", 10, steps=256)  # doctest: +SKIP
    >>> cat = maximize_activation(subject, class_name="Siamese cat")  # doctest: +SKIP
    """
    check_positive_int("steps", steps)
    check_option("parameterization", parameterization, _PARAMETERIZATIONS)
    check_option("objective", objective, OBJECTIVES)
    lr = _check_nonnegative("lr", lr)
    regs = _regularizers(regularizers, regularizer_options)
    side = subject.input_size()[0] if size is None else size
    hw = (side, side) if isinstance(side, (int, np.integer)) else tuple(int(s) for s in side)
    uy, ux = (None, None) if unit is None else (int(unit[0]), int(unit[1]))
    target = resolve_target(
        subject, layer=layer, channel=channel, y=uy, x=ux, class_index=class_index, class_name=class_name,
        reduce=objective, log_softmax=softmax, allow_whole_layer=True, size=hw,
    )
    run_device = _on_device(subject, device)
    generator = torch_generator(seed)
    image = _ImageParam(parameterization, hw, decorrelate, generator, run_device)
    with model_on(subject.model, run_device, subject.device):
        trace, values, final_img = _ascend(subject, target, image, regs, steps=steps, lr=lr,
                                           sign=-1.0 if minimize else 1.0, generator=generator, progress=progress)
    check_finite("objective trace", trace)
    attrs = {
        **subject.provenance(target.layer or subject.layers[-1]),
        **target.attrs(),
        "method": "activation maximization",
        "direction": "minimize" if minimize else "maximize",
        "objective": objective,
        "softmax": int(softmax),
        "steps": int(steps),
        "lr": lr,
        "optimizer": "Adam",
        **regs.attrs(),
        "parameterization": parameterization,
        "decorrelate": int(decorrelate),
        "seed": int(seed),
        "initial_activation": values[0],
        "final_activation": values[1],
    }
    return xr.Dataset(
        {
            "image": (("y", "x", "rgb"), final_img[0].permute(1, 2, 0).detach().cpu().numpy()),
            "objective": ("step", trace),
        },
        coords={"step": np.arange(1, steps + 1), "rgb": ["r", "g", "b"]},
        attrs=attrs,
    )


_REGULARIZER_FIELDS = ("jitter", "blur_every", "blur_sigma", "l2_decay", "tv_weight")


def _regularizers(regularizers: Regularizers | None, options: dict[str, Any]) -> Regularizers:
    """``regularizers`` with the fields given one by one replaced (unknown names: TypeError)."""
    unknown = sorted(set(options) - set(_REGULARIZER_FIELDS))
    if unknown:
        raise TypeError(f"maximize_activation() got unexpected keyword argument(s) {unknown}; "
                        f"regularizer options are {list(_REGULARIZER_FIELDS)}.")
    base = regularizers if regularizers is not None else Regularizers()
    return dataclasses.replace(base, **options) if options else base


def _ascend(subject: VirtualSubject, target: Target, image: _ImageParam, regs: Regularizers, *, steps: int,
            lr: float, sign: float, generator: torch.Generator, progress: bool
            ) -> tuple[np.ndarray, tuple[float, float], torch.Tensor]:
    """Gradient ascent (Adam) on ``image``: the objective trace, (initial, final) target values, final image."""
    optimizer = torch.optim.Adam([image.param], lr=lr)
    trace = np.empty(steps, dtype=np.float64)
    with torch.no_grad():
        initial = float(_value(subject, target, image.image())[0])
    for step in tqdm(range(steps), desc="maximize activation", disable=not progress):
        optimizer.zero_grad()
        img = image.image()
        value = _value(subject, target, _jitter(img, regs.jitter, generator))[0]
        loss = -sign * value + regs.tv_weight * _total_variation(img)
        loss.backward()
        if step == 0 and not image.param.grad.any():
            raise InvalidDataError(
                f"The target ({target.description}) has zero gradient at the seeded start image, so "
                "the optimization cannot move: the unit is silent there (e.g. behind a ReLU). Target "
                "the pre-activation layer instead (e.g. 'conv5' rather than 'relu5'), or another seed."
            )
        optimizer.step()
        trace[step] = float(value.detach())
        if regs.l2_decay > 0:
            image.decay(regs.l2_decay)
        if regs.blur_every and (step + 1) % regs.blur_every == 0 and regs.blur_sigma > 0:
            image.blur(regs.blur_sigma)
    with torch.no_grad():
        final_img = image.image()
        final = float(_value(subject, target, final_img)[0])
    return trace, (initial, final), final_img


# ----------------------------------------------------------------- DeepDream
def _resize(img: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(img, size=hw, mode="bilinear", align_corners=False, antialias=True)


def deep_dream(
    subject: VirtualSubject,
    layer: str,
    channels: Sequence[int] | None = None,
    *,
    stimuli: Any = None,
    octaves: int = 3,
    octave_scale: float = 1.4,
    steps_per_octave: int = 10,
    lr: float = 0.02,
    jitter: int = 4,
    objective: Objective = "mean",
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> xr.Dataset:
    """DeepDream over an image pyramid, as MATLAB's ``deepDreamImage(net, layer, channels, 'PyramidLevels', n)``.

    The image (noise if none is given) is shrunk to ``octaves`` pyramid levels, each
    ``octave_scale`` times smaller than the next. From the smallest level up, the
    level's image plus the detail found so far (upsampled) is improved by
    ``steps_per_octave`` steps of normalized gradient ascent (``img += lr * g /
    mean|g|``, with a random roll of up to ``jitter`` pixels and clipping to [0, 1]); the
    detail (dreamed image minus the level's image) is carried up to the next level.

    Parameters
    ----------
    subject : VirtualSubject
        The network.
    layer : str
        Layer name or alias.
    channels : sequence of int, optional
        Channels whose activations are maximized (default: all of the layer).
    stimuli : array, tensor, path or StimulusSet of one image, optional
        Starting image ((3, H, W) / (H, W, 3) in [0, 1] or uint8), resized/cropped by the
        subject's preprocessing. Default: seeded noise of the network's input size.
    octaves : int
        Number of pyramid levels (MATLAB's ``PyramidLevels``); 1 = no pyramid.
    octave_scale : float
        Size ratio between levels (MATLAB's ``PyramidScale``), > 1.
    steps_per_octave : int
        Gradient steps per level (MATLAB's ``NumIterations``).
    lr : float
        Step size in image units (after gradient normalization).
    jitter : int
        Maximum random roll (pixels) per step.
    objective : {"mean", "max", "sum", "l2"}
        Reduction over the chosen channels' activations.
    seed : int
        Seed of the noise image and the jitter.
    device : str, optional
        Device of this run.
    progress : bool
        Show a progress bar.

    Returns
    -------
    xarray.Dataset
        ``image`` (y, x, rgb) in [0, 1]; ``objective`` (step) with coordinate ``octave``;
        attrs: settings, seed, the pyramid sizes, provenance.

    Raises
    ------
    UnknownNameError
        Unknown layer or channels out of range.
    InvalidDataError
        ``octaves``/``steps_per_octave`` < 1, ``octave_scale`` <= 1, negative ``lr``.
    ShapeMismatchError
        The smallest pyramid level is too small for the network (use fewer octaves).
    StimulusError
        A bad starting image.

    Examples
    --------
    >>> dream = deep_dream(subject, "conv5", [3, 7], octaves=3)  # doctest: +SKIP
    """
    check_positive_int("octaves", octaves)
    check_positive_int("steps_per_octave", steps_per_octave)
    check_option("objective", objective, OBJECTIVES)
    lr = _check_nonnegative("lr", lr)
    if not math.isfinite(octave_scale) or octave_scale <= 1:
        raise InvalidDataError(f"octave_scale must be > 1, got {octave_scale}.")
    if isinstance(jitter, bool) or not isinstance(jitter, (int, np.integer)) or jitter < 0:
        raise InvalidDataError(f"jitter must be an integer number of pixels >= 0, got {jitter!r}.")
    generator = torch_generator(seed)
    if stimuli is None:
        side = subject.input_size()[0]
        base = (0.5 + 0.1 * torch.randn((1, 3, side, side), generator=generator)).clamp(0, 1)
        source = "noise"
    else:
        img, source = _one_image(stimuli)
        base = subject.preprocessing.geometric(img)[None]
    hw = tuple(base.shape[-2:])
    shape = subject.output_shape(layer, hw)
    index = slice(None) if channels is None else torch.as_tensor(_check_channels(channels, shape[0], layer))
    dotted = subject.resolve_layer(layer)

    def value(img: torch.Tensor) -> torch.Tensor:
        out = subject.forward_layers(subject.preprocessing.normalize(img), [dotted], grad=True)[dotted]
        return OBJECTIVES[objective](out[:, index]).sum()

    run_device = _on_device(subject, device)
    sizes = [
        (max(1, round(hw[0] / octave_scale**i)), max(1, round(hw[1] / octave_scale**i)))
        for i in reversed(range(octaves))
    ]
    base = base.to(run_device)
    detail = torch.zeros(1, 3, *sizes[0], device=run_device)
    trace, trace_octave = [], []
    with model_on(subject.model, run_device, subject.device), tqdm(total=octaves * steps_per_octave, desc="deep dream", disable=not progress) as bar:
        for level, level_hw in enumerate(sizes):
            level_base = _resize(base, level_hw) if level_hw != hw else base
            img = (level_base + _resize(detail, level_hw)).clamp(0, 1)
            for _ in range(steps_per_octave):
                dy, dx = _shift(jitter, generator)
                shifted = torch.roll(img, (dy, dx), (-2, -1)).requires_grad_(True)
                try:
                    val = value(shifted)
                except RuntimeError as err:
                    raise ShapeMismatchError(
                        f"Pyramid level {level_hw} is too small for layer {layer!r} ({err}); use fewer "
                        "octaves or a smaller octave_scale."
                    ) from err
                (grad,) = torch.autograd.grad(val, shifted)
                grad = torch.roll(grad, (-dy, -dx), (-2, -1))
                img = (img + lr * grad / (grad.abs().mean() + 1e-12)).clamp(0, 1).detach()
                trace.append(float(val.detach()))
                trace_octave.append(level + 1)
                bar.update()
            detail = img - level_base
    attrs = {
        **subject.provenance(layer),
        "method": "deep dream",
        "channels": [int(c) for c in channels] if channels is not None else "all",
        "objective": objective,
        "octaves": int(octaves),
        "octave_scale": float(octave_scale),
        "steps_per_octave": int(steps_per_octave),
        "lr": lr,
        "jitter": int(jitter),
        "pyramid_sizes": [int(s[0]) for s in sizes],
        "initial_image": source,
        "seed": int(seed),
    }
    return xr.Dataset(
        {
            "image": (("y", "x", "rgb"), img[0].permute(1, 2, 0).cpu().numpy()),
            "objective": ("step", np.asarray(trace)),
        },
        coords={"step": np.arange(1, len(trace) + 1), "octave": ("step", np.asarray(trace_octave)), "rgb": ["r", "g", "b"]},
        attrs=attrs,
    )


def plot_images(results: xr.Dataset | Sequence[xr.Dataset], *, titles: Sequence[str] | None = None,
                ncols: int = 4, size: float = 2.2):
    """Plot the images of :func:`maximize_activation` / :func:`deep_dream` results in a grid.

    Titles default to each result's target (or layer and channels).

    Returns
    -------
    matplotlib.figure.Figure
    """
    items = [results] if isinstance(results, xr.Dataset) else list(results)
    if not items:
        raise InvalidDataError("Give at least one result to plot.")
    default = [str(r.attrs.get("target") or f"{r.attrs.get('alias') or r.attrs.get('layer')} {r.attrs.get('channels', '')}")
               for r in items]
    import matplotlib.pyplot as plt

    names = list(titles) if titles is not None else default
    ncols = max(1, min(ncols, len(items)))
    nrows = -(-len(items) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(items):  # images may differ in size, so each gets its own panel
            ax.imshow(np.clip(items[i]["image"].values, 0, 1))
            ax.set_title(names[i], fontsize=7)
    fig.tight_layout()
    return fig
