"""Theoretical and empirical (occlusion) receptive fields of CNN units.

Theoretical RFs are read from the network itself: one forward pass of a probe image
with autograd on, then a walk of the autograd graph from the requested layer back to
the input. Every convolution, pooling and padding op on the way (including the
TensorFlow-"SAME" ``F.pad`` inside EfficientNet's convolutions, and any functional op
written in a ``forward``) updates the per-axis geometry ``start + i * stride`` /
``size``; where branches meet (ResNet shortcuts, SqueezeNet fire modules) the union of
their boxes is taken. Ops that change the spatial size in ways not modelled here are
detected (the output shape of every op is recorded) and refused.

Empirical RFs follow Zhou et al. (2015, "Object detectors emerge in deep scene CNNs"):
each unit's top-K images are occluded by a sliding patch; the drop of the unit's
activation at its original argmax location is the discrepancy map; maps are
re-centred on the theoretical RF centre of the argmax unit and averaged. Occluded
images are built as tensors in large batches (no Python loop over window positions),
the forward pass stops at the requested layer, units whose top images coincide share
forward passes, and occluders that miss the theoretical RF of every unit asked of an
image are not run (their discrepancy is exactly 0 by construction of the RF).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import xarray as xr
from torch.overrides import TorchFunctionMode
from tqdm.auto import tqdm

from ._validation import check_device, check_fraction, check_option, check_positive_int, torch_generator
from .exceptions import InvalidDataError, ShapeMismatchError, StimulusError, UnknownNameError
from .stimuli import load_stimuli
from .subject import VirtualSubject, version

__all__ = [
    "RFBox",
    "theoretical_rf",
    "occlude",
    "rf_box",
    "empirical_rf",
    "rf_size_summary",
    "plot_discrepancy_maps",
    "plot_rfs",
    "plot_rf_sizes",
]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

Fill = Literal["random", "mean"]


# ----------------------------------------------------------------- geometry
@dataclass(frozen=True)
class _Axis:
    """RF geometry along one axis: unit i sees input pixels [start + i*jump, +size)."""

    start: int
    jump: int
    size: int


_IDENTITY = _Axis(0, 1, 1)
_Geometry = tuple[_Axis, _Axis]  # (y, x)


def _window(axis: _Axis, kernel: int, stride: int, padding: int, dilation: int = 1) -> _Axis:
    return _Axis(
        start=axis.start - padding * axis.jump,
        jump=axis.jump * stride,
        size=axis.size + (kernel - 1) * dilation * axis.jump,
    )


def _pair(value: Any) -> tuple[int, int]:
    value = tuple(int(v) for v in (value if isinstance(value, (tuple, list)) else (value,)))
    return (value[0], value[0]) if len(value) == 1 else (value[-2], value[-1])


def _conv(node: Any, geom: _Geometry, _shapes: tuple) -> _Geometry:
    if node._saved_transposed:
        raise ShapeMismatchError("Transposed convolutions have no theoretical RF in this model of geometry.")
    kernel = tuple(node._saved_weight.shape[-2:])
    stride, padding, dilation = (_pair(node._saved_stride), _pair(node._saved_padding), _pair(node._saved_dilation))
    return tuple(_window(a, k, s, p, d) for a, k, s, p, d in zip(geom, kernel, stride, padding, dilation))


def _max_pool(node: Any, geom: _Geometry, _shapes: tuple) -> _Geometry:
    kernel, stride = _pair(node._saved_kernel_size), _pair(node._saved_stride or node._saved_kernel_size)
    padding, dilation = _pair(node._saved_padding), _pair(node._saved_dilation)
    return tuple(_window(a, k, s, p, d) for a, k, s, p, d in zip(geom, kernel, stride, padding, dilation))


def _avg_pool(node: Any, geom: _Geometry, _shapes: tuple) -> _Geometry:
    kernel, stride = _pair(node._saved_kernel_size), _pair(node._saved_stride or node._saved_kernel_size)
    padding = _pair(node._saved_padding)
    return tuple(_window(a, k, s, p) for a, k, s, p in zip(geom, kernel, stride, padding))


def _pad(node: Any, geom: _Geometry, _shapes: tuple) -> _Geometry:
    pads = list(node._saved_pad) + [0, 0, 0, 0]
    left, top = pads[0], pads[2]  # F.pad order: last dim (x) first
    y, x = geom
    return (_Axis(y.start - top * y.jump, y.jump, y.size), _Axis(x.start - left * x.jump, x.jump, x.size))


def _adaptive_pool(node: Any, geom: _Geometry, shapes: tuple) -> _Geometry:
    n_in, n_out = shapes
    if n_in is None or n_out is None:
        raise ShapeMismatchError("Cannot read the sizes around an adaptive pooling op.")
    axes = []
    for a, i, o in zip(geom, n_in[-2:], n_out[-2:]):
        if i % o:
            raise ShapeMismatchError(
                f"Adaptive pooling from {i} to {o} positions has unequal windows; the RF of its "
                "units is not a single size/stride. Request a layer before it."
            )
        axes.append(_window(a, i // o, i // o, 0))
    return tuple(axes)


def _mean(node: Any, geom: _Geometry, shapes: tuple) -> _Geometry:
    n_in = shapes[0] or tuple(node._saved_self_sym_sizes)
    dims = {d % len(n_in) for d in node._saved_dim}
    axes = []
    for a, dim in zip(geom, (len(n_in) - 2, len(n_in) - 1)):
        size = int(n_in[dim])
        axes.append(_window(a, size, size, 0) if dim in dims else a)
    return tuple(axes)


#: autograd node name -> geometry update (all other nodes must keep the spatial size).
_OPS: dict[str, Callable[[Any, _Geometry, tuple], _Geometry]] = {
    "ConvolutionBackward0": _conv,
    "MaxPool2DWithIndicesBackward0": _max_pool,
    "AvgPool2DBackward0": _avg_pool,
    "ConstantPadNdBackward0": _pad,
    "AdaptiveAvgPool2DBackward0": _adaptive_pool,
    "AdaptiveMaxPool2DBackward0": _adaptive_pool,
    "MeanBackward1": _mean,
}
#: nodes whose first input alone carries the image (the others are weights).
_FIRST_INPUT_ONLY = {"ConvolutionBackward0"}


class _ShapeRecorder(TorchFunctionMode):
    """Record the output shape of every autograd node created during a forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: dict[Any, tuple[int, ...]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for out in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(out, torch.Tensor) and out.grad_fn is not None:
                self.shapes.setdefault(out.grad_fn, tuple(out.shape))
        return result


def _spatial(shape: tuple[int, ...] | None) -> tuple[int, int] | None:
    return None if shape is None or len(shape) < 3 else tuple(shape[-2:])


def _walk(root: Any, probe: torch.Tensor, shapes: Mapping[Any, tuple[int, ...]]) -> _Geometry:
    """Geometry of ``root``'s output, computed from the inputs up (iterative post-order)."""
    geoms: dict[Any, _Geometry | None] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if node in geoms:
            continue
        name = type(node).__name__
        if name == "AccumulateGrad":
            geoms[node] = (_IDENTITY, _IDENTITY) if node.variable is probe else None
            continue
        parents = [fn for fn, _ in node.next_functions if fn is not None]
        if name in _FIRST_INPUT_ONLY:
            parents = parents[:1] if node.next_functions[0][0] is not None else []
        if not expanded:
            stack.append((node, True))
            stack.extend((p, False) for p in parents if p not in geoms)
            continue
        inputs = [(geoms[p], shapes.get(p)) for p in parents if geoms[p] is not None]
        if not inputs:
            geoms[node] = None
            continue
        out_shape = shapes.get(node)
        if name in _OPS:
            geom, in_shape = inputs[0]
            geoms[node] = _OPS[name](node, geom, (in_shape, out_shape))
            continue
        geoms[node] = _merge(name, inputs, out_shape)
    result = geoms[root]
    if result is None:
        raise ShapeMismatchError("The requested layer does not depend on the input image.")
    return result


def _merge(name: str, inputs: list[tuple[_Geometry, tuple | None]], out_shape: tuple | None) -> _Geometry:
    """A size-preserving op (pointwise, add, concat): union of its inputs' boxes."""
    out_hw = _spatial(out_shape)
    for _, shape in inputs:
        in_hw = _spatial(shape)
        if out_hw is not None and in_hw is not None and in_hw != out_hw:
            raise ShapeMismatchError(
                f"Op {name} maps a {in_hw} map to {out_hw}; its effect on receptive fields is "
                "not modelled (upsampling, broadcasting of pooled maps, reshapes). Request a "
                "layer before it."
            )
    axes = []
    for dim in range(2):
        parts = [geom[dim] for geom, _ in inputs]
        if len({p.jump for p in parts}) > 1:
            raise ShapeMismatchError(f"Branches with different strides meet at {name}.")
        start = min(p.start for p in parts)
        end = max(p.start + p.size for p in parts)
        axes.append(_Axis(start, parts[0].jump, end - start))
    return tuple(axes)


def _input_hw(subject: VirtualSubject, input_size: int | tuple[int, int] | None) -> tuple[int, int]:
    if input_size is not None:
        return _pair(input_size)
    pre = subject.preprocessing
    if pre.crop is not None:
        return (pre.crop, pre.crop)
    if isinstance(pre.resize, tuple):
        return tuple(pre.resize)
    raise ShapeMismatchError(
        "The subject's preprocessing keeps the image size, so the input size is unknown: pass "
        "input_size=(height, width)."
    )


def _geometries(
    subject: VirtualSubject, layers: Sequence[str], hw: tuple[int, int], *, skip_flat: bool = False
) -> dict[str, tuple[_Geometry, tuple[int, int]]]:
    """Geometry and output map size of each layer, from one probe forward pass.

    With ``skip_flat``, layers without a spatial output are left out instead of refused.
    """
    param = next(subject.model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    probe = torch.zeros(1, 3, *hw, device=subject.device, dtype=dtype, requires_grad=True)
    recorder = _ShapeRecorder()
    with recorder:
        outputs = subject.forward_layers(probe, layers, grad=True)
    result = {}
    for layer, out in outputs.items():
        if out.ndim != 4 and skip_flat:
            continue
        if out.ndim != 4:
            raise ShapeMismatchError(
                f"Layer {layer!r} has output shape {tuple(out.shape)}; receptive fields need a "
                "spatial (N, C, H, W) layer."
            )
        if out.grad_fn is None:
            raise ShapeMismatchError(f"Layer {layer!r} does not depend on the input image.")
        result[layer] = (_walk(out.grad_fn, probe, recorder.shapes), tuple(out.shape[-2:]))
    return result


def theoretical_rf(
    subject: VirtualSubject,
    layers: str | Sequence[str] | None = None,
    *,
    input_size: int | tuple[int, int] | None = None,
) -> xr.Dataset:
    """Theoretical receptive field size, stride and start of the units of conv/pool layers.

    Unit ``(y, x)`` of a layer sees input pixels ``start + y * stride`` to
    ``start + y * stride + size - 1`` (rows; columns alike), before clipping to the
    image. ``start`` is negative where padding adds pixels outside the image.

    Parameters
    ----------
    subject : VirtualSubject
        The network.
    layers : str or sequence of str, optional
        Layer names or aliases; default: the subject's default layers that have a
        spatial output.
    input_size : int or (int, int), optional
        Input image size; default: the size the subject's preprocessing produces (for
        TF-"SAME" padding the start offsets depend on it).

    Returns
    -------
    xarray.Dataset
        Variables ``size``, ``stride``, ``start`` (pixels) and ``map_size`` (units),
        dims ``("layer", "axis")`` with ``axis = ["y", "x"]``; coords ``dotted``
        (module names); attrs model, weights_sha256, input_height, input_width,
        preprocessing, neurocnn_version.

    Raises
    ------
    UnknownNameError
        Unknown layer.
    ShapeMismatchError
        A layer is not spatial or its graph holds an op whose RF is not modelled.

    Examples
    --------
    >>> subject = VirtualSubject("alexnet", weights=None)  # doctest: +SKIP
    >>> theoretical_rf(subject, ["conv1", "pool5"])["size"].sel(axis="y").values  # doctest: +SKIP
    array([ 11, 195])
    """
    hw = _input_hw(subject, input_size)
    names = [layers] if isinstance(layers, str) else list(layers or subject.default_layers)
    if not names:
        raise UnknownNameError("Give at least one spatial layer.")
    geoms = _geometries(subject, names, hw, skip_flat=layers is None)
    names = [name for name in names if name in geoms]
    fields = {
        "size": lambda a, n: a.size,
        "stride": lambda a, n: a.jump,
        "start": lambda a, n: a.start,
        "map_size": lambda a, n: n,
    }
    data = {
        var: (("layer", "axis"), np.array([[f(a, n) for a, n in zip(geoms[l][0], geoms[l][1])] for l in names]))
        for var, f in fields.items()
    }
    provenance = subject.provenance(names[0])
    return xr.Dataset(
        data,
        coords={"layer": names, "axis": ["y", "x"], "dotted": ("layer", [subject.resolve_layer(l) for l in names])},
        attrs={
            "model": subject.name,
            "weights_sha256": subject.weights_id,
            "input_height": hw[0],
            "input_width": hw[1],
            "preprocessing": provenance["preprocessing"],
            "neurocnn_version": version(),
        },
    )


class RFBox(NamedTuple):
    """An input-pixel box, half-open: rows ``y0 <= y < y1``, columns ``x0 <= x < x1``."""

    y0: int
    y1: int
    x0: int
    x1: int


def rf_box(
    subject: VirtualSubject,
    layer: str,
    y: int,
    x: int,
    *,
    clip: bool = False,
    input_size: int | tuple[int, int] | None = None,
) -> RFBox:
    """The input-pixel box of the theoretical receptive field of unit ``(y, x)`` of a layer.

    Parameters
    ----------
    subject : VirtualSubject
        The network.
    layer : str
        Layer name or alias (spatial).
    y, x : int
        Unit position in the layer's map.
    clip : bool
        Clip the box to the image (padding pixels removed).
    input_size : int or (int, int), optional
        Input image size (default: from the preprocessing).

    Returns
    -------
    RFBox
        Half-open pixel bounds ``(y0, y1, x0, x1)``, usable as ``image[..., y0:y1, x0:x1]``
        when clipped.

    Raises
    ------
    InvalidDataError
        If ``(y, x)`` is outside the layer's map.

    Examples
    --------
    >>> rf_box(VirtualSubject("alexnet", weights=None), "conv1", 0, 0)  # doctest: +SKIP
    RFBox(y0=-2, y1=9, x0=-2, x1=9)
    """
    hw = _input_hw(subject, input_size)
    (gy, gx), (ny, nx) = _geometries(subject, [layer], hw)[layer]
    _check_unit(layer, y, x, (ny, nx))
    y0, x0 = gy.start + y * gy.jump, gx.start + x * gx.jump
    box = RFBox(y0, y0 + gy.size, x0, x0 + gx.size)
    if clip:
        box = RFBox(max(box.y0, 0), min(box.y1, hw[0]), max(box.x0, 0), min(box.x1, hw[1]))
    return box


def _check_unit(layer: str, y: int, x: int, map_size: tuple[int, int]) -> None:
    for name, value, n in (("y", y, map_size[0]), ("x", x, map_size[1])):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < n:
            raise InvalidDataError(
                f"Unit {name}={value!r} is outside layer {layer!r}, whose map is "
                f"{map_size[0]} x {map_size[1]}; valid {name}: 0..{n - 1}."
            )


# -------------------------------------------------------------- empirical RF
def _random_patches(n: int, window: int, mean: tuple[float, ...], seed: int) -> torch.Tensor:
    generator = torch_generator(seed)
    return torch.rand(n, 3, window, window, generator=generator)


def _mean_patches(n: int, window: int, mean: tuple[float, ...], seed: int) -> torch.Tensor:
    return torch.as_tensor(mean, dtype=torch.float32)[None, :, None, None].expand(n, 3, window, window)


#: fill name -> (number of positions, window, preprocessing mean, seed) -> patches in [0, 1].
_FILLS: dict[str, Callable[[int, int, tuple[float, ...], int], torch.Tensor]] = {
    "random": _random_patches,
    "mean": _mean_patches,
}


def _positions(size: int, window: int, stride: int) -> torch.Tensor:
    return torch.arange(0, size - window + 1, stride)


def occlude(image: torch.Tensor, patches: torch.Tensor, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Return copies of ``image`` with ``patches[i]`` pasted at ``(top[i], left[i])``.

    One tensor operation for the whole batch (advanced indexing), no loop over positions.

    Parameters
    ----------
    image : torch.Tensor
        One image (3, H, W).
    patches : torch.Tensor
        Occluders (N, 3, w, w), in the same value space as ``image``.
    top, left : torch.Tensor
        Integer (N,) pixel positions of the patches' top-left corners.

    Returns
    -------
    torch.Tensor
        (N, 3, H, W); ``image`` is not modified.

    Examples
    --------
    >>> out = occlude(torch.ones(3, 8, 8), torch.zeros(2, 3, 2, 2), torch.tensor([0, 4]), torch.tensor([0, 6]))
    >>> out.shape
    torch.Size([2, 3, 8, 8])
    """
    n, _, window, _ = patches.shape
    out = image.expand(n, *image.shape).clone()
    offsets = torch.arange(window, device=image.device)
    rows = (top.to(image.device)[:, None] + offsets)[:, :, None]
    cols = (left.to(image.device)[:, None] + offsets)[:, None, :]
    batch = torch.arange(n, device=image.device)[:, None, None]
    out.permute(0, 2, 3, 1)[batch, rows, cols] = patches.to(image).permute(0, 2, 3, 1)
    return out


def _top_images(
    subject: VirtualSubject, stim: Any, layer: str, channels: np.ndarray, batch_size: int, progress: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per requested channel: max activation over space and its (y, x), for every stimulus."""
    peaks, where = [], []
    map_size = None
    for _, batch in tqdm(stim.batches(batch_size, subject.preprocessing), desc="top images", disable=not progress):
        with torch.inference_mode():
            out = subject.forward_layers(batch.to(subject.device), [layer])[layer]
        if out.ndim != 4:
            raise ShapeMismatchError(f"Layer {layer!r} has output shape {tuple(out.shape)}; it is not spatial.")
        if channels.max() >= out.shape[1]:
            raise InvalidDataError(
                f"Channel {int(channels.max())} is out of range: layer {layer!r} has "
                f"{out.shape[1]} channels (valid 0..{out.shape[1] - 1})."
            )
        map_size = tuple(out.shape[-2:])
        flat = out[:, torch.as_tensor(channels, device=out.device)].flatten(2).float()
        value, index = flat.max(dim=2)
        peaks.append(value.cpu().numpy())
        where.append(index.cpu().numpy())
    index = np.concatenate(where)
    return np.concatenate(peaks), index // map_size[1], index % map_size[1]


def empirical_rf(
    subject: VirtualSubject,
    layer: str,
    channels: int | Sequence[int],
    stimuli: Any,
    *,
    top_k: int = 10,
    window: int = 11,
    stride: int = 3,
    fill: Fill = "random",
    threshold: float = 0.5,
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> xr.Dataset:
    """Empirical receptive fields by sliding-window occlusion (Zhou et al. 2015).

    For each channel (unit) of ``layer``: its top-K stimuli by the channel's maximum
    over space; each preprocessed image occluded by a ``window`` x ``window`` patch at
    every ``stride`` pixels; the discrepancy map is the drop of the channel's activation
    at the location of its original maximum; maps are re-centred on the theoretical RF
    centre of that location and averaged over the K images.

    Parameters
    ----------
    subject : VirtualSubject
        The network.
    layer : str
        A spatial layer (name or alias).
    channels : int or sequence of int
        Channels whose RFs to map (one "unit" each, at its argmax location per image).
    stimuli : StimulusSet, str, path, list or array
        Candidate images (anything :func:`neurocnn.stimuli.load_stimuli` accepts).
    top_k : int
        Images per unit.
    window, stride : int
        Occluder side and step in pixels of the preprocessed image (Zhou: 11 and 3,
        i.e. 72 x 72 = 5184 occluded copies of a 224 x 224 image).
    fill : {"random", "mean"}
        ``"random"``: uniform random pixel patches (seeded, as in the paper; the same
        patch per position for every image); ``"mean"``: the preprocessing mean colour.
    threshold : float
        Fraction of a unit's RF maximum above which RF cells count toward its area.
    batch_size : int
        Occluded images per forward pass.
    seed : int
        Seed of the random patches.
    device : str or torch.device, optional
        Device of this call (default: the subject's).
    progress : bool
        Show progress bars.

    Returns
    -------
    xarray.Dataset
        ``discrepancy`` (unit, rank, y, x): activation drop with the occluder centred on
        pixel (y, x); ``rf`` (unit, dy, dx): re-centred average, ``dy``/``dx`` in pixels
        from the RF centre; ``coverage`` (unit, dy, dx): images measured at each offset;
        ``stimulus``, ``activation``, ``unit_y``, ``unit_x``, ``centre_y``, ``centre_x``
        (unit, rank); ``area`` (px^2), ``size`` (side of the equal-area square, px,
        comparable to the theoretical size), ``diameter`` (equal-area circle, px)
        (unit). Coord ``channel`` (unit). Attrs: provenance of the layer, window,
        stride, fill, seed, top_k, threshold, stimulus_set, theoretical_size_y/x,
        n_occluders.

    Raises
    ------
    InvalidDataError
        A channel index out of range, or bad numeric parameters.
    ShapeMismatchError
        ``window`` larger than the image, or a non-spatial layer.
    StimulusError
        ``top_k`` larger than the stimulus set.
    UnknownNameError
        Unknown layer or fill.

    Examples
    --------
    >>> subject = VirtualSubject()  # doctest: +SKIP
    >>> rf = empirical_rf(subject, "stage4", [0, 1, 2], "92images", top_k=5)  # doctest: +SKIP
    >>> rf["size"].values  # doctest: +SKIP
    """
    check_option("fill", fill, _FILLS)
    for name, value in (("top_k", top_k), ("window", window), ("stride", stride), ("batch_size", batch_size)):
        check_positive_int(name, value)
    check_fraction("threshold", threshold)
    channel_list = np.atleast_1d(np.asarray(channels))
    if channel_list.size == 0 or channel_list.dtype.kind not in "iu" or channel_list.min() < 0:
        raise InvalidDataError(f"channels must be non-negative integers, got {channels!r}.")
    stim = load_stimuli(stimuli)
    if top_k > len(stim):
        raise StimulusError(f"top_k={top_k} is larger than the stimulus set ({len(stim)} images).")
    hw = tuple(subject.preprocessing.geometric(stim.load(0)).shape[-2:])
    if window > min(hw):
        raise ShapeMismatchError(f"The occluder ({window} px) is larger than the {hw[0]} x {hw[1]} image.")
    (gy, gx), _ = _geometries(subject, [layer], hw)[layer]
    run_device = check_device(device) if device is not None else subject.device
    subject.model.to(run_device)
    try:
        peaks, uy, ux = _top_images(subject, stim, layer, channel_list, batch_size, progress)
        order = np.argsort(-peaks, axis=0, kind="stable")[:top_k].T  # (unit, rank)
        units = np.arange(len(channel_list))[:, None]
        ys, xs = _positions(hw[0], window, stride), _positions(hw[1], window, stride)
        top = ys[:, None].expand(len(ys), len(xs)).reshape(-1)
        left = xs[None, :].expand(len(ys), len(xs)).reshape(-1)
        patches = subject.preprocessing.normalize(_FILLS[fill](len(top), window, subject.preprocessing.mean, seed))
        maps = _occlusion_maps(
            subject, stim, layer, channel_list, order, uy[order, units], ux[order, units],
            peaks[order, units], (top, left, patches), (gy, gx), batch_size, run_device, progress,
        )
    finally:
        subject.model.to(subject.device)
    maps = maps.reshape(len(channel_list), top_k, len(ys), len(xs))
    centre_y = gy.start + uy[order, units] * gy.jump + (gy.size - 1) / 2
    centre_x = gx.start + ux[order, units] * gx.jump + (gx.size - 1) / 2
    first = (window - 1) / 2
    rf, coverage, offsets = _recentre(maps, (first - centre_y) / stride, (first - centre_x) / stride)
    area, size, diameter = _rf_area(rf, threshold, stride)
    attrs = {
        **subject.provenance(layer),
        "requested_as": layer,
        "window": window,
        "stride": stride,
        "fill": fill,
        "seed": seed,
        "top_k": top_k,
        "threshold": threshold,
        "stimulus_set": stim.name,
        "theoretical_size_y": gy.size,
        "theoretical_size_x": gx.size,
        "theoretical_stride_y": gy.jump,
        "theoretical_stride_x": gx.jump,
        "n_occluders": int(len(top)),
        "input_height": hw[0],
        "input_width": hw[1],
    }
    return xr.Dataset(
        {
            "discrepancy": (("unit", "rank", "y", "x"), maps),
            "rf": (("unit", "dy", "dx"), rf),
            "coverage": (("unit", "dy", "dx"), coverage),
            "stimulus": (("unit", "rank"), np.asarray(stim.ids)[order]),
            "activation": (("unit", "rank"), peaks[order, units]),
            "unit_y": (("unit", "rank"), uy[order, units]),
            "unit_x": (("unit", "rank"), ux[order, units]),
            "centre_y": (("unit", "rank"), centre_y),
            "centre_x": (("unit", "rank"), centre_x),
            "area": ("unit", area),
            "size": ("unit", size),
            "diameter": ("unit", diameter),
        },
        coords={
            "unit": np.arange(len(channel_list)),
            "channel": ("unit", channel_list.astype(int)),
            "rank": np.arange(1, top_k + 1),
            "y": (ys.numpy() + first),
            "x": (xs.numpy() + first),
            "dy": offsets[0] * stride,
            "dx": offsets[1] * stride,
        },
        attrs=attrs,
    )


def _occlusion_maps(
    subject: VirtualSubject,
    stim: Any,
    layer: str,
    channels: np.ndarray,
    order: np.ndarray,
    uy: np.ndarray,
    ux: np.ndarray,
    peaks: np.ndarray,
    occluders: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    geometry: _Geometry,
    batch_size: int,
    device: torch.device,
    progress: bool,
) -> np.ndarray:
    """Discrepancy maps (unit * rank, positions); units sharing an image share its passes.

    Occluders that miss the theoretical RF of every unit asked of an image cannot change
    those units (exactly 0, by construction of the RF) and are not run.
    """
    top, left, patches = occluders
    window = patches.shape[-1]
    gy, gx = geometry
    n_units, top_k = order.shape
    maps = np.zeros((n_units * top_k, len(top)), dtype=np.float32)
    requests: dict[int, list[int]] = {}
    for flat, image_index in enumerate(order.reshape(-1)):
        requests.setdefault(int(image_index), []).append(flat)
    patches = patches.to(device)
    for image_index, flats in tqdm(requests.items(), desc=f"occluding ({layer})", disable=not progress):
        image = subject.preprocessing(stim.load(image_index)).to(device)
        unit_index = np.asarray(flats) // top_k
        rank_index = np.asarray(flats) % top_k
        ch = torch.as_tensor(channels[unit_index], device=device)
        yy = torch.as_tensor(uy[unit_index, rank_index], device=device)
        xx = torch.as_tensor(ux[unit_index, rank_index], device=device)
        y0 = torch.as_tensor(gy.start + uy[unit_index, rank_index] * gy.jump)[:, None]
        x0 = torch.as_tensor(gx.start + ux[unit_index, rank_index] * gx.jump)[:, None]
        hits = ((top[None] < y0 + gy.size) & (top[None] + window > y0)
                & (left[None] < x0 + gx.size) & (left[None] + window > x0))  # (requests, positions)
        needed = torch.nonzero(hits.any(0)).flatten()
        for start in range(0, len(needed), batch_size):
            index = needed[start : start + batch_size]
            batch = occlude(image, patches[index.to(device)], top[index], left[index])
            with torch.inference_mode():
                out = subject.forward_layers(batch, [layer])[layer]
            values = out[:, ch, yy, xx].float().cpu().numpy().T  # (requests, batch)
            drop = peaks[unit_index, rank_index][:, None] - values
            maps[np.asarray(flats)[:, None], index.numpy()[None]] = np.where(hits[:, index].numpy(), drop, 0.0)
    return maps


def _recentre(
    maps: np.ndarray, shift_y: np.ndarray, shift_x: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Place each (unit, rank) map on a canvas of offsets from its RF centre and average."""
    n_units, top_k, ny, nx = maps.shape
    sy, sx = np.rint(shift_y).astype(int), np.rint(shift_x).astype(int)
    my = int(max(np.abs(sy).max(), np.abs(sy + ny - 1).max()))
    mx = int(max(np.abs(sx).max(), np.abs(sx + nx - 1).max()))
    total = np.zeros((n_units, 2 * my + 1, 2 * mx + 1))
    coverage = np.zeros(total.shape, dtype=np.int32)
    for u in range(n_units):
        for k in range(top_k):
            y0, x0 = sy[u, k] + my, sx[u, k] + mx
            total[u, y0 : y0 + ny, x0 : x0 + nx] += maps[u, k]
            coverage[u, y0 : y0 + ny, x0 : x0 + nx] += 1
    rf = np.divide(total, coverage, out=np.zeros_like(total), where=coverage > 0)
    return rf.astype(np.float32), coverage, (np.arange(-my, my + 1), np.arange(-mx, mx + 1))


def _rf_area(rf: np.ndarray, threshold: float, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    peak = rf.reshape(len(rf), -1).max(axis=1)
    cells = (rf > threshold * peak[:, None, None]).reshape(len(rf), -1).sum(axis=1)
    area = np.where(peak > 0, cells * float(stride) ** 2, np.nan)
    return area, np.sqrt(area), 2 * np.sqrt(area / math.pi)


def rf_size_summary(results: Sequence[xr.Dataset], theoretical: xr.Dataset | None = None) -> xr.Dataset:
    """Per-layer summary of empirical RF sizes, next to the theoretical ones.

    Parameters
    ----------
    results : sequence of xarray.Dataset
        Outputs of :func:`empirical_rf`, one per layer.
    theoretical : xarray.Dataset, optional
        Output of :func:`theoretical_rf`; default: the theoretical sizes stored in each
        result's attrs.

    Returns
    -------
    xarray.Dataset
        Dim ``layer``; variables ``empirical_mean``, ``empirical_median``,
        ``empirical_std`` (of ``size``, px, over units with a nonzero RF),
        ``n_units`` and ``theoretical_size`` (side of the equal-area square, px).

    Raises
    ------
    InvalidDataError
        If ``results`` is empty.
    """
    if not results:
        raise InvalidDataError("Give at least one empirical_rf result.")
    names = [r.attrs["requested_as"] for r in results]
    sizes = [r["size"].values[np.isfinite(r["size"].values)] for r in results]
    if theoretical is not None:
        sq = theoretical["size"].sel(layer=names)
        theory = np.sqrt(sq.sel(axis="y").values * sq.sel(axis="x").values)
    else:
        theory = np.array([math.sqrt(r.attrs["theoretical_size_y"] * r.attrs["theoretical_size_x"]) for r in results])

    def stat(f: Callable[[np.ndarray], float]) -> np.ndarray:
        return np.array([f(s) if s.size else np.nan for s in sizes])

    first = results[0].attrs
    return xr.Dataset(
        {
            "empirical_mean": ("layer", stat(np.mean)),
            "empirical_median": ("layer", stat(np.median)),
            "empirical_std": ("layer", stat(np.std)),
            "n_units": ("layer", np.array([s.size for s in sizes])),
            "theoretical_size": ("layer", theory.astype(float)),
        },
        coords={"layer": names},
        attrs={k: first[k] for k in ("model", "weights_sha256", "window", "stride", "fill", "seed", "top_k",
                                     "threshold", "stimulus_set", "neurocnn_version") if k in first},
    )


# ------------------------------------------------------------------ plotting
def plot_discrepancy_maps(result: xr.Dataset, unit: int = 0, *, ncols: int = 5):
    """Plot the K discrepancy maps of one unit (titles: stimulus id and activation).

    Raises
    ------
    InvalidDataError
        If ``unit`` is out of range.
    """
    import matplotlib.pyplot as plt

    _check_index("unit", unit, result.sizes["unit"])
    maps = result["discrepancy"].isel(unit=unit)
    k = maps.sizes["rank"]
    ncols = max(1, min(ncols, k))
    nrows = -(-k // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2 * ncols, 2 * nrows), squeeze=False)
    extent = _extent(result["x"].values, result["y"].values)
    lim = float(np.abs(maps.values).max()) or 1.0
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < k:
            ax.imshow(maps.values[i], cmap="RdBu_r", vmin=-lim, vmax=lim, extent=extent)
            ax.plot(result["centre_x"].values[unit, i], result["centre_y"].values[unit, i], "k+")
            ax.set_title(f"{result['stimulus'].values[unit, i]}\n{result['activation'].values[unit, i]:.2f}", fontsize=7)
    fig.suptitle(f"{result.attrs['requested_as']} channel {int(result['channel'].values[unit])}: discrepancy maps")
    fig.tight_layout()
    return fig


def plot_rfs(result: xr.Dataset, units: Sequence[int] | None = None, *, ncols: int = 6):
    """Plot the averaged empirical RFs of units, with the theoretical RF box overlaid.

    Raises
    ------
    InvalidDataError
        If a unit index is out of range.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    units = list(range(result.sizes["unit"])) if units is None else list(units)
    for u in units:
        _check_index("unit", u, result.sizes["unit"])
    ncols = max(1, min(ncols, len(units)))
    nrows = -(-len(units) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2 * ncols, 2 * nrows), squeeze=False)
    extent = _extent(result["dx"].values, result["dy"].values)
    sy, sx = result.attrs["theoretical_size_y"], result.attrs["theoretical_size_x"]
    for ax in axes.flat:
        ax.axis("off")
    for ax, u in zip(axes.flat, units):
        ax.imshow(result["rf"].values[u], cmap="magma", extent=extent)
        ax.add_patch(Rectangle((-sx / 2, -sy / 2), sx, sy, fill=False, ec="cyan", lw=0.8))
        ax.set_title(f"ch {int(result['channel'].values[u])}: {result['size'].values[u]:.0f} px", fontsize=7)
    fig.suptitle(f"{result.attrs['requested_as']}: empirical RFs (box: theoretical)")
    fig.tight_layout()
    return fig


def plot_rf_sizes(summary: xr.Dataset):
    """Plot theoretical vs empirical RF size per layer (output of :func:`rf_size_summary`)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    x = np.arange(summary.sizes["layer"])
    ax.plot(x, summary["theoretical_size"], "o-", label="theoretical")
    ax.errorbar(x, summary["empirical_mean"], yerr=summary["empirical_std"], fmt="s-", capsize=3,
                label="empirical (mean ± sd over units)")
    ax.set_xticks(x, [str(v) for v in summary["layer"].values], rotation=45, ha="right")
    ax.set_ylabel("RF size (px)")
    ax.set_title(f"{summary.attrs.get('model', '')}: receptive field size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _extent(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    dx = (x[1] - x[0]) / 2 if len(x) > 1 else 0.5
    dy = (y[1] - y[0]) / 2 if len(y) > 1 else 0.5
    return (float(x[0] - dx), float(x[-1] + dx), float(y[-1] + dy), float(y[0] - dy))


def _check_index(name: str, value: int, n: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < n:
        raise InvalidDataError(f"{name}={value!r} is out of range; valid: 0..{n - 1}.")
