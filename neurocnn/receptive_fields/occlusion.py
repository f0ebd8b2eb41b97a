"""Occluded copies of an image, and the exact crop a unit can be occluded on.

A unit's value depends only on the input pixels inside its theoretical receptive
field, so an occluded image only needs to be evaluated on the crop that covers that
field: :func:`rf_crop` gives that crop, aligned to the layer's stride grid (the pixels
removed on each side are whole multiples of the layer's stride, so the unit lands on an
integer position and every padding the network computes, TF "SAME" included, comes out
as on the full image), and certifies it op by op; :func:`occlude` pastes occluders into
the image or straight into such a crop.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..exceptions import ShapeMismatchError
from ..subject import VirtualSubject
from ._geometry import _check_unit, _crop_box, _CropChecker, _input_hw, _traces

__all__ = ["RFCrop", "occlude", "rf_crop"]


class RFCrop(NamedTuple):
    """The image crop a unit is evaluated on and the unit's position in the crop's map.

    Rows ``y0 <= y < y1``, columns ``x0 <= x < x1`` of the (preprocessed) image, half-open;
    the unit is at ``(unit_y, unit_x)`` of the layer's output on ``image[..., y0:y1, x0:x1]``.
    """

    y0: int
    y1: int
    x0: int
    x1: int
    unit_y: int
    unit_x: int


def rf_crop(
    subject: VirtualSubject,
    layer: str,
    y: int,
    x: int,
    *,
    input_size: int | tuple[int, int] | None = None,
) -> RFCrop:
    """The smallest stride-aligned image crop on which unit ``(y, x)`` of a layer is exact.

    The layer's output on ``image[..., y0:y1, x0:x1]`` at ``(unit_y, unit_x)`` equals its
    output on the whole image at ``(y, x)``, to float precision: the crop holds the
    unit's theoretical receptive field (clipped to the image); the pixels it removes
    before and after the field are whole multiples of the layer's stride, so each map of
    the network on the crop is the full map minus whole positions at its ends; where the
    field reaches the image border the crop ends at the border, so the network pads (in
    every layer, in feature space) exactly where it pads on the full image; where the
    crop ends inside the image, the values its padding corrupts lie outside the unit's
    receptive field. Each premise is checked op by op on a probe pass of the crop.

    Parameters
    ----------
    subject : VirtualSubject
        The network.
    layer : str
        Layer name or alias (spatial).
    y, x : int
        Unit position in the layer's map.
    input_size : int or (int, int), optional
        Input image size (default: from the preprocessing).

    Returns
    -------
    RFCrop
        ``(y0, y1, x0, x1, unit_y, unit_x)``.

    Raises
    ------
    InvalidDataError
        If ``(y, x)`` is outside the layer's map.
    ShapeMismatchError
        If no crop is exact for this layer: an op before it is not translation-equivariant
        and local (global or adaptive pooling, attention, batch statistics, ...) or the
        network's graph changes with the input size; the message says which.

    Examples
    --------
    >>> rf_crop(VirtualSubject("alexnet", weights=None), "conv2", 13, 13)  # doctest: +SKIP
    RFCrop(y0=80, y1=136, x0=80, x1=136, unit_y=3, unit_x=3)
    """
    hw = _input_hw(subject, input_size)
    trace = _traces(subject, [layer], hw)[layer]
    _check_unit(layer, y, x, trace.map_size)
    box, unit = _crop_box(trace.geometry, (y, x), hw)
    reason = trace.unsafe or _CropChecker(subject, layer, hw, trace)((box[1] - box[0], box[3] - box[2]))
    if reason:
        raise ShapeMismatchError(
            f"No exact crop for layer {layer!r}: {reason}. Occlude the full image instead "
            "(empirical_rf(..., occlusion='full'))."
        )
    return RFCrop(*box, *unit)


def occlude(
    image: torch.Tensor,
    patches: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    *,
    box: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """Return copies of ``image`` with ``patches[i]`` pasted at ``(top[i], left[i])``.

    One tensor operation for the whole batch (advanced indexing), no loop over positions.

    Parameters
    ----------
    image : torch.Tensor
        One image (3, H, W).
    patches : torch.Tensor
        Occluders (N, 3, w, w), in the same value space as ``image``.
    top, left : torch.Tensor
        Integer (N,) pixel positions of the patches' top-left corners, in image pixels.
    box : (int, int, int, int), optional
        Return only the crop ``image[:, y0:y1, x0:x1]`` of each copy (e.g. an
        :class:`RFCrop`'s first four fields); patches may then overlap the crop's edge
        (their part outside it is dropped) but must lie within ``w`` pixels of it.

    Returns
    -------
    torch.Tensor
        (N, 3, H, W), or (N, 3, y1 - y0, x1 - x0) with ``box``; ``image`` is not modified.

    Examples
    --------
    >>> out = occlude(torch.ones(3, 8, 8), torch.zeros(2, 3, 2, 2), torch.tensor([0, 4]), torch.tensor([0, 6]))
    >>> out.shape
    torch.Size([2, 3, 8, 8])
    >>> occlude(torch.ones(3, 8, 8), torch.zeros(1, 3, 2, 2), torch.tensor([3]), torch.tensor([3]),
    ...         box=(4, 8, 0, 8)).shape
    torch.Size([1, 3, 4, 8])
    """
    if box is None:
        return _paste(image, patches, top, left)
    y0, y1, x0, x1 = box
    window = patches.shape[-1]
    canvas = F.pad(image[:, y0:y1, x0:x1], (window, window, window, window))
    out = _paste(canvas, patches, top.to(image.device) - y0 + window, left.to(image.device) - x0 + window)
    return out[:, :, window : window + y1 - y0, window : window + x1 - x0].contiguous()


def _paste(image: torch.Tensor, patches: torch.Tensor, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    n, _, window, _ = patches.shape
    out = image.expand(n, *image.shape).clone()
    offsets = torch.arange(window, device=image.device)
    rows = (top.to(image.device)[:, None] + offsets)[:, :, None]
    cols = (left.to(image.device)[:, None] + offsets)[:, None, :]
    batch = torch.arange(n, device=image.device)[:, None, None]
    out.permute(0, 2, 3, 1)[batch, rows, cols] = patches.to(image).permute(0, 2, 3, 1)
    return out
