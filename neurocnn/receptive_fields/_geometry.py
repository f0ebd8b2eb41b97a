"""Receptive-field geometry read from the autograd graph (private, shared by the subpackage).

One forward pass of a probe image with autograd on, then a walk of the graph from a
layer back to the input. Every convolution, pooling and padding op on the way
(including the TensorFlow-"SAME" ``F.pad`` inside EfficientNet's convolutions, and any
functional op written in a ``forward``) updates the per-axis geometry
``start + i * stride`` / ``size``; where branches meet (ResNet shortcuts, SqueezeNet
fire modules) the union of their boxes is taken. Ops that change the spatial size in
ways not modelled here are detected (the output shape of every op is recorded) and
refused.

The same walk records, per op of the layer's cone, its name, geometry and output map
size (a :class:`_Trace`); comparing the trace of the full image with the trace of a
crop is what makes crop-based occlusion provably exact (see :func:`_crop_box`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from ..exceptions import InvalidDataError, ShapeMismatchError
from ..subject import VirtualSubject

__all__: list[str] = []


# ----------------------------------------------------------------- geometry
@dataclass(frozen=True)
class _Axis:
    """RF geometry along one axis: unit i sees input pixels [start + i*jump, +size)."""

    start: int
    jump: int
    size: int


_IDENTITY = _Axis(0, 1, 1)
_Geometry = tuple[_Axis, _Axis]  # (y, x)


@dataclass(frozen=True)
class _Trace:
    """What one probe pass tells about a layer.

    ``geometry`` of its units, its ``map_size``, its ``cone`` (every op the layer depends
    on, post-order: name, geometry, output map size) and ``unsafe``: why crops cannot be
    exact for this layer ("" when every op of the cone is translation-equivariant and
    local).
    """

    geometry: _Geometry
    map_size: tuple[int, int]
    cone: tuple[tuple[str, _Geometry, tuple[int, int] | None], ...]
    unsafe: str


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


def _always(_node: Any) -> bool:
    return True


def _never(_node: Any) -> bool:
    return False


def _not_training(node: Any) -> bool:
    """Batch norm with running statistics (eval mode) is pointwise; with batch statistics it is not."""
    return not bool(getattr(node, "_saved_training", True))


#: autograd node name -> is this node translation-equivariant and local (its value at a
#: position depends only on a fixed window of its inputs, whatever the map size)? Ops not
#: listed (global/adaptive pooling, means, norms over space, reshapes, attention, ...)
#: make crop-based occlusion fall back to full images.
_CROP_SAFE: dict[str, Callable[[Any], bool]] = {
    **dict.fromkeys(
        [
            "ConvolutionBackward0", "MaxPool2DWithIndicesBackward0", "AvgPool2DBackward0",
            "ConstantPadNdBackward0", "CloneBackward0", "CatBackward0",
            "ReluBackward0", "HardtanhBackward0", "LeakyReluBackward0", "EluBackward0", "GeluBackward0",
            "SiluBackward0", "SigmoidBackward0", "TanhBackward0", "HardswishBackward0",
            "HardsigmoidBackward0", "SoftplusBackward0", "ClampBackward1", "ClampMinBackward0",
            "ThresholdBackward0", "NegBackward0", "AddBackward0", "AddBackward1", "SubBackward0",
            "SubBackward1", "MulBackward0", "MulBackward1", "DivBackward0", "DivBackward1",
        ],
        _always,
    ),
    "NativeBatchNormBackward0": _not_training,
    "CudnnBatchNormBackward0": _not_training,
    "MiopenBatchNormBackward0": _not_training,
}


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


def _walk(root: Any, probe: torch.Tensor, shapes: Mapping[Any, tuple[int, ...]]) -> _Trace:
    """Geometry of ``root``'s output, computed from the inputs up (iterative post-order).

    Also records, in post-order, every op of the cone (the ops that depend on the probe)
    with its geometry and output map size, and the first op that is not known to be
    translation-equivariant and local (see :data:`_CROP_SAFE`).
    """
    geoms: dict[Any, _Geometry | None] = {}
    cone: list[tuple[str, _Geometry, tuple[int, int] | None]] = []
    unsafe = ""
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
        else:
            geoms[node] = _merge(name, inputs, out_shape)
        cone.append((name, geoms[node], _spatial(out_shape)))
        if not unsafe and not _CROP_SAFE.get(name, _never)(node):
            unsafe = f"op {name} is not known to be translation-equivariant and local"
    result = geoms[root]
    if result is None:
        raise ShapeMismatchError("The requested layer does not depend on the input image.")
    return _Trace(result, (0, 0), tuple(cone), unsafe)


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
    if pre.crop is not None or isinstance(pre.resize, tuple):
        return subject.input_size()
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
    traces = _traces(subject, layers, hw, skip_flat=skip_flat)
    return {layer: (trace.geometry, trace.map_size) for layer, trace in traces.items()}


def _traces(
    subject: VirtualSubject, layers: Sequence[str], hw: tuple[int, int], *, skip_flat: bool = False
) -> dict[str, _Trace]:
    """:class:`_Trace` of each layer for a ``hw`` input, from one probe forward pass."""
    param = next(subject.model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else subject.device
    probe = torch.zeros(1, 3, *hw, device=device, dtype=dtype, requires_grad=True)
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
        trace = _walk(out.grad_fn, probe, recorder.shapes)
        result[layer] = _Trace(trace.geometry, tuple(out.shape[-2:]), trace.cone, trace.unsafe)
    return result



def _check_unit(layer: str, y: int, x: int, map_size: tuple[int, int]) -> None:
    for name, value, n in (("y", y, map_size[0]), ("x", x, map_size[1])):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < n:
            raise InvalidDataError(
                f"Unit {name}={value!r} is outside layer {layer!r}, whose map is "
                f"{map_size[0]} x {map_size[1]}; valid {name}: 0..{n - 1}."
            )



# --------------------------------------------------------------------- crops
def _crop_axis(axis: _Axis, unit: int, n: int) -> tuple[int, int]:
    """Crop ``[lo, hi)`` of an ``n``-pixel axis for one unit (see :func:`_crop_box`)."""
    first = axis.start + unit * axis.jump
    last = first + axis.size
    lo = max(0, (first // axis.jump) * axis.jump)
    hi = n if last >= n else n - ((n - last) // axis.jump) * axis.jump
    return lo, hi


def _crop_box(
    geometry: _Geometry, unit: tuple[int, int], hw: tuple[int, int]
) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """The image crop ``(y0, y1, x0, x1)`` a unit is evaluated on, and the unit's position in it.

    Per axis, the crop covers the unit's theoretical RF clipped to the image, widened so
    that the pixels removed before it (``y0``) and after it (``H - y1``) are whole
    multiples of the layer's stride ``J``. Then every map of the network on the crop is
    the full image's map with whole positions removed at both ends (``y0 / j`` and
    ``(H - y1) / j`` for an op of stride ``j``, which divides ``J``), so every padding the
    network computes from the input size (TF "SAME") and every floor/ceil of a map size
    comes out the same, and the unit lands on position ``y - y0 / J``. Where the crop
    ends at the image border the network pads exactly where it pads on the full image;
    where it ends inside the image, the values the network's padding corrupts lie
    outside the unit's RF (by induction over the ops: an op output is wrong only if its
    window reaches a padded or wrong input, i.e. only if its own RF leaves the crop), so
    the unit's value is exact. :func:`_cone_mismatch` checks the premises per crop size.
    """
    (ay, ax), (uy, ux) = geometry, unit
    (y0, y1), (x0, x1) = _crop_axis(ay, uy, hw[0]), _crop_axis(ax, ux, hw[1])
    return (y0, y1, x0, x1), (uy - y0 // ay.jump, ux - x0 // ax.jump)


def _cone_mismatch(full: _Trace, crop: _Trace, removed: tuple[int, int]) -> str:
    """Why a crop (``removed`` pixels fewer per axis) is not the full network shifted ("" if it is)."""
    if len(full.cone) != len(crop.cone):
        return "the network's graph on the crop differs from its graph on the full image"
    for (name, geom, hw), (crop_name, crop_geom, crop_hw) in zip(full.cone, crop.cone):
        if name != crop_name:
            return f"op {name} of the full image's graph is {crop_name} on the crop"
        if geom != crop_geom:
            return f"op {name} has another geometry on the crop (padding that depends on the input size)"
        if hw is None or crop_hw is None:
            return f"the output size of op {name} is unknown"
        for n, m, r, axis in zip(hw, crop_hw, removed, geom):
            if r % axis.jump or n - m != r // axis.jump:
                return f"op {name} maps the crop to {crop_hw} positions, not the full {hw} minus whole positions"
    return ""


class _CropChecker:
    """Per crop size: "" if crops of that size are exact for a layer, else why not (cached).

    One autograd probe pass per distinct crop size; its :class:`_Trace` must equal the
    full image's op for op (names, geometries) with every map shorter by whole positions.
    """

    def __init__(self, subject: VirtualSubject, layer: str, hw: tuple[int, int], full: _Trace) -> None:
        self.subject, self.layer, self.hw, self.full = subject, layer, hw, full
        self.reasons: dict[tuple[int, int], str] = {hw: ""}

    def __call__(self, crop_hw: tuple[int, int]) -> str:
        if crop_hw not in self.reasons:
            try:
                crop = _traces(self.subject, [self.layer], crop_hw)[self.layer]
            except (RuntimeError, ShapeMismatchError) as err:
                self.reasons[crop_hw] = f"the network cannot run on a {crop_hw[0]} x {crop_hw[1]} crop ({err})"
            else:
                removed = (self.hw[0] - crop_hw[0], self.hw[1] - crop_hw[1])
                self.reasons[crop_hw] = crop.unsafe or _cone_mismatch(self.full, crop, removed)
        return self.reasons[crop_hw]
