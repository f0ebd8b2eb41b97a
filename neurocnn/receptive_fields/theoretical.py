"""Theoretical receptive fields: size, stride and start of the units of conv/pool layers.

Read from the network itself (one probe forward pass with autograd on, then a walk of
the autograd graph from the layer back to the input; see :mod:`._geometry`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import xarray as xr

from ..exceptions import UnknownNameError
from ..subject import VirtualSubject, version
from ._geometry import _check_unit, _geometries, _input_hw

__all__ = ["RFBox", "theoretical_rf", "rf_box"]


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

