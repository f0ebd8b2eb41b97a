"""Occlusion engine (private): discrepancy maps of many (unit, image) pairs, on exact crops.

Each requested map is one unit (a channel at its argmax position) and one image. Maps
whose units share an image and an evaluation box (the whole image, or the unit's
:func:`~._geometry._crop_box`) share forward passes; occluders that miss the
theoretical RF of every unit of a group are not run (their discrepancy is exactly 0 by
construction of the RF). A crop is used only where it is certified exact
(:class:`~._geometry._CropChecker`), and the unoccluded crop's activation is checked
against the full image's at run time; anything else is evaluated on the full image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from .._validation import torch_generator
from ..exceptions import ShapeMismatchError
from ..subject import VirtualSubject
from ._geometry import _crop_box, _CropChecker, _Trace
from .occlusion import occlude

__all__: list[str] = []

Occlusion = Literal["auto", "crop", "full"]
#: a crop's unoccluded activation must match the full image's within this relative error.
_CHECK_RTOL = 1e-4


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

#: occlusion choice -> may crops be used at all?
_MODES: dict[str, bool] = {"auto": True, "crop": True, "full": False}


def _positions(size: int, window: int, stride: int) -> torch.Tensor:
    return torch.arange(0, size - window + 1, stride)


@dataclass(frozen=True)
class _Occluders:
    """Occluder ``i``: ``patches[i]`` (normalized) with its top-left corner at ``(top[i], left[i])``."""

    top: torch.Tensor
    left: torch.Tensor
    patches: torch.Tensor


@dataclass(frozen=True)
class _Rows:
    """The requested maps, one row each: image index, channel, argmax position, activation."""

    image: np.ndarray
    channel: np.ndarray
    unit_y: np.ndarray
    unit_x: np.ndarray
    peak: np.ndarray


@dataclass(frozen=True)
class _Group:
    """Rows evaluated together: one image, one box (None: the whole image), the units' positions in it."""

    image: int
    rows: np.ndarray
    box: tuple[int, int, int, int] | None
    unit_y: np.ndarray
    unit_x: np.ndarray


def _full_groups(rows: _Rows, which: np.ndarray) -> list[_Group]:
    groups = []
    for image in np.unique(rows.image[which]):
        members = which[rows.image[which] == image]
        groups.append(_Group(int(image), members, None, rows.unit_y[members], rows.unit_x[members]))
    return groups


def _crop_groups(rows: _Rows, trace: _Trace, hw: tuple[int, int], checker: _CropChecker) -> tuple[list[_Group], dict]:
    """Groups on exact crops, plus the rows whose crop size failed the check (and why)."""
    buckets: dict[tuple, list[int]] = {}
    shifted: dict[int, tuple[int, int]] = {}
    for row in range(len(rows.image)):
        box, unit = _crop_box(trace.geometry, (int(rows.unit_y[row]), int(rows.unit_x[row])), hw)
        buckets.setdefault((int(rows.image[row]), box), []).append(row)
        shifted[row] = unit
    groups, failed = [], {}
    for (image, box), members in buckets.items():
        reason = checker((box[1] - box[0], box[3] - box[2]))
        if reason:
            failed.update(dict.fromkeys(members, f"{box[1] - box[0]} x {box[3] - box[2]} crops: {reason}"))
            continue
        members = np.asarray(members)
        groups.append(_Group(image, members, box, np.array([shifted[r][0] for r in members]),
                             np.array([shifted[r][1] for r in members])))
    return groups, failed


def _run_group(
    subject: VirtualSubject, layer: str, image: torch.Tensor, group: _Group, rows: _Rows, occluders: _Occluders,
    geometry: Any, batch_size: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """(needed occluder indices, discrepancies (rows, needed)); None if a crop failed its run-time check."""
    gy, gx = geometry
    window = occluders.patches.shape[-1]
    device = image.device
    y0 = torch.as_tensor(gy.start + rows.unit_y[group.rows] * gy.jump)[:, None]
    x0 = torch.as_tensor(gx.start + rows.unit_x[group.rows] * gx.jump)[:, None]
    top, left = occluders.top[None], occluders.left[None]
    hits = (top < y0 + gy.size) & (top + window > y0) & (left < x0 + gx.size) & (left + window > x0)
    needed = torch.nonzero(hits.any(0)).flatten()
    ch = torch.as_tensor(rows.channel[group.rows], device=device)
    yy, xx = torch.as_tensor(group.unit_y, device=device), torch.as_tensor(group.unit_x, device=device)
    peak = rows.peak[group.rows]
    values = np.empty((len(group.rows), len(needed)), dtype=np.float32)
    starts = list(range(0, len(needed), batch_size)) or ([0] if group.box is not None else [])
    for start in starts:
        index = needed[start : start + batch_size]
        batch = occlude(image, occluders.patches[index.to(device)], occluders.top[index], occluders.left[index],
                        box=group.box)
        check = group.box is not None and start == 0
        if check:
            y_0, y_1, x_0, x_1 = group.box
            batch = torch.cat([image[None, :, y_0:y_1, x_0:x_1], batch])
        with torch.inference_mode():
            out = subject.forward_layers(batch, [layer])[layer][:, ch, yy, xx].float().cpu().numpy().T
        if check:
            if np.any(np.abs(out[:, 0] - peak) > _CHECK_RTOL * np.maximum(1.0, np.abs(peak))):
                return None
            out = out[:, 1:]
        values[:, start : start + len(index)] = out
    drop = np.where(hits[:, needed].numpy(), peak[:, None] - values, 0.0)
    return needed.numpy(), drop


def _occlusion_maps(
    subject: VirtualSubject, stim: Any, layer: str, rows: _Rows, occluders: _Occluders, trace: _Trace,
    hw: tuple[int, int], *, occlusion: Occlusion, batch_size: int, device: torch.device, progress: bool,
) -> tuple[np.ndarray, dict[str, str | int | float]]:
    """Discrepancy maps (rows, occluders) and how they were evaluated (attrs)."""
    n_rows = len(rows.image)
    everything = np.arange(n_rows)
    failed: dict[int, str] = {}
    if _MODES[occlusion] and not trace.unsafe:
        groups, failed = _crop_groups(rows, trace, hw, _CropChecker(subject, layer, hw, trace))
        groups += _full_groups(rows, np.asarray(sorted(failed), dtype=int))
        reason = "; ".join(sorted(set(failed.values())))
    elif occlusion == "crop":
        raise ShapeMismatchError(f"No exact crop for layer {layer!r}: {trace.unsafe}. Use occlusion='auto' or 'full'.")
    else:
        groups = _full_groups(rows, everything)
        reason = trace.unsafe if _MODES[occlusion] else "occlusion='full' requested"
    maps = np.zeros((n_rows, len(occluders.top)), dtype=np.float32)
    patches = _Occluders(occluders.top, occluders.left, occluders.patches.to(device))
    groups.sort(key=lambda g: g.image)
    cached: tuple[int, torch.Tensor] | None = None
    on_crop, crop_area, retried = np.zeros(n_rows, bool), np.zeros(n_rows), []
    queue = list(groups)
    bar = tqdm(total=len(queue), desc=f"occluding ({layer})", disable=not progress)
    while queue:
        group = queue.pop(0)
        if cached is None or cached[0] != group.image:
            cached = (group.image, subject.preprocessing(stim.load(group.image)).to(device))
        result = _run_group(subject, layer, cached[1], group, rows, patches, trace.geometry, batch_size)
        if result is None:  # the run-time check failed: redo these maps on the full image
            retried.extend(group.rows.tolist())
            queue.insert(0, _Group(group.image, group.rows, None, rows.unit_y[group.rows], rows.unit_x[group.rows]))
            continue
        needed, drop = result
        maps[group.rows[:, None], needed[None]] = drop
        if group.box is not None:
            on_crop[group.rows] = True
            crop_area[group.rows] = (group.box[1] - group.box[0]) * (group.box[3] - group.box[2]) / (hw[0] * hw[1])
        bar.update()
    bar.close()
    if retried:
        reason = "; ".join(filter(None, [reason, f"{len(retried)} crop(s) failed the run-time check"]))
    n_crop = int(on_crop.sum())
    mode = "crop" if n_crop == n_rows else "full" if n_crop == 0 else "crop+full"
    info = {
        "occlusion": occlusion,
        "occlusion_mode": mode,
        "occlusion_reason": reason or "every map evaluated on exact crops",
        "n_crop_maps": n_crop,
        "n_full_maps": n_rows - n_crop,
        "crop_area_fraction": float(crop_area[on_crop].mean()) if n_crop else 1.0,
    }
    return maps, info
