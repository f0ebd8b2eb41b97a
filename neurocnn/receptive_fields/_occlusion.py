"""Occlusion engine (private): discrepancy maps of many (unit, image) pairs, on exact crops.

Each requested map is one unit (a channel at its argmax position, of any layer) and one
image. Maps whose units share an image and an evaluation box (the whole image, or the
unit's :func:`~._geometry._crop_box`) share forward passes (on the whole image, across
layers: one pass to the deepest layer serves them all); occluders that miss the
theoretical RF of every unit of a group are not run (their discrepancy is exactly 0 by
construction of the RF). A crop is used only where it is certified exact
(:class:`~._geometry._CropChecker`), and the unoccluded crop's activation is checked
against the full image's at run time; anything else is evaluated on the full image.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from .._validation import torch_generator
from ..exceptions import ShapeMismatchError
from ..forward import split_after, tapped
from ..subject import VirtualSubject
from ._geometry import _crop_axis, _crop_box, _CropChecker, _Trace, _traces
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
    """The requested maps, one row each: image index, layer, channel, argmax position, activation."""

    image: np.ndarray
    layer: np.ndarray
    channel: np.ndarray
    unit_y: np.ndarray
    unit_x: np.ndarray
    peak: np.ndarray


@dataclass(frozen=True)
class _Group:
    """Rows evaluated together: one image, one box (None: the whole image), the units' positions in it.

    A crop group holds one layer's rows; a whole-image group holds the rows of every
    layer that needs that image (one forward pass serves them all).
    """

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


def _crop_groups(
    rows: _Rows, which: np.ndarray, traces: dict[str, _Trace], hw: tuple[int, int], checkers: dict[str, _CropChecker],
    max_area: float,
) -> tuple[list[_Group], dict[int, str]]:
    """Groups on exact crops, plus the rows evaluated on the whole image instead (and why).

    Crops larger than ``max_area`` of the image go to the whole image too, where one
    pass serves every layer and a frontier recomputes only what each occluder reaches.
    """
    buckets: dict[tuple, list[int]] = {}
    shifted: dict[int, tuple[int, int]] = {}
    for row in which:
        layer = str(rows.layer[row])
        box, unit = _crop_box(traces[layer].geometry, (int(rows.unit_y[row]), int(rows.unit_x[row])), hw)
        buckets.setdefault((int(rows.image[row]), layer, box), []).append(int(row))
        shifted[int(row)] = unit
    groups, failed = [], {}
    for (image, layer, box), members in buckets.items():
        crop_hw = (box[1] - box[0], box[3] - box[2])
        if crop_hw == hw:
            reason = "the theoretical RF covers the whole image"
        elif crop_hw[0] * crop_hw[1] > max_area * hw[0] * hw[1]:
            reason = f"crops over {max_area:.0%} of the image run as whole images (shared passes, frontier)"
        else:
            reason = checkers[layer](crop_hw)
            reason = reason and f"{crop_hw[0]} x {crop_hw[1]} crops: {reason}"
        if reason:
            failed.update(dict.fromkeys(members, reason))
            continue
        members = np.asarray(members)
        groups.append(_Group(image, members, box, np.array([shifted[r][0] for r in members]),
                             np.array([shifted[r][1] for r in members])))
    return groups, failed


def _hits(rows: _Rows, members: np.ndarray, occluders: _Occluders, traces: dict[str, _Trace]) -> torch.Tensor:
    """(rows, occluders): does the occluder overlap the theoretical RF of the row's unit?"""
    geometry = [traces[str(layer)].geometry for layer in rows.layer[members]]
    y0 = torch.as_tensor([gy.start + y * gy.jump for (gy, _), y in zip(geometry, rows.unit_y[members])])[:, None]
    x0 = torch.as_tensor([gx.start + x * gx.jump for (_, gx), x in zip(geometry, rows.unit_x[members])])[:, None]
    size_y = torch.as_tensor([gy.size for gy, _ in geometry])[:, None]
    size_x = torch.as_tensor([gx.size for _, gx in geometry])[:, None]
    window = occluders.patches.shape[-1]
    top, left = occluders.top[None], occluders.left[None]
    return (top < y0 + size_y) & (top + window > y0) & (left < x0 + size_x) & (left + window > x0)


class _Units:
    """Where each row of a group reads its unit: per layer (as requested), the rows and (channel, y, x) indices."""

    def __init__(self, rows: _Rows, group: _Group, device: torch.device) -> None:
        layer_of = rows.layer[group.rows]
        self.layers = list(dict.fromkeys(str(x) for x in layer_of))
        self.n_rows = len(group.rows)
        self.picks = [(np.flatnonzero(layer_of == layer), layer) for layer in self.layers]
        self.index = {layer: (torch.as_tensor(rows.channel[group.rows][m], device=device),
                              torch.as_tensor(group.unit_y[m], device=device),
                              torch.as_tensor(group.unit_x[m], device=device)) for m, layer in self.picks}

    def values(self, outs: dict[str, torch.Tensor]) -> np.ndarray:
        """(rows, images) unit values from layer outputs keyed by the requested layer names."""
        n = next(iter(outs.values())).shape[0]
        out = np.empty((self.n_rows, n), dtype=np.float32)
        for m, layer in self.picks:
            ch, yy, xx = self.index[layer]
            out[m] = outs[layer][:, ch, yy, xx].float().cpu().numpy().T
        return out


def _run_group(
    subject: VirtualSubject, image: torch.Tensor, group: _Group, rows: _Rows, occluders: _Occluders,
    traces: dict[str, _Trace], batch_size: int, frontier: _Frontier | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """(needed occluder indices, discrepancies (rows, needed)); None if a crop failed its run-time check.

    Whole-image groups go through ``frontier`` when one is given and every crop it needs
    is certified; else (or if its run-time check fails) through plain whole-image passes.
    """
    device = image.device
    hits = _hits(rows, group.rows, occluders, traces)
    needed = torch.nonzero(hits.any(0)).flatten()
    if group.box is None and frontier is not None:
        values = _frontier_values(subject, image, group, rows, occluders, needed, frontier, batch_size)
        if values is not None:
            return needed.numpy(), np.where(hits[:, needed].numpy(), rows.peak[group.rows][:, None] - values, 0.0)
    units = _Units(rows, group, device)
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
            out = units.values(subject.forward_layers(batch, units.layers))
        if check:
            if np.any(np.abs(out[:, 0] - peak) > _CHECK_RTOL * np.maximum(1.0, np.abs(peak))):
                return None
            out = out[:, 1:]
        values[:, start : start + len(index)] = out
    drop = np.where(hits[:, needed].numpy(), peak[:, None] - values, 0.0)
    return needed.numpy(), drop


#: with occlusion="auto", a crop larger than this fraction of the image runs as the whole image.
_MAX_CROP_AREA = 0.5
#: a frontier layer is used when the crop an occluder changes is at most this fraction of the image.
_FRONTIER_AREA = 1 / 8


@dataclass(frozen=True)
class _Frontier:
    """Whole-image maps evaluated from a frontier layer on.

    An occluded image differs from the intact one only inside the occluder, so the
    frontier layer's output differs only at the positions whose theoretical RF overlaps
    it. Those are recomputed on the exact stride-aligned crop holding their RFs (the
    crop argument of :func:`~._geometry._crop_box`, for a block of units; certified by
    ``checker`` per crop size); every other position is the intact image's value; the
    rest of the network (``tail``, :func:`neurocnn.forward.split_after`) runs from there.
    """

    layer: str
    trace: _Trace
    tail: Any
    checker: _CropChecker


def _block_box(axis: Any, lo: int, n_map: int, n: int, window: int) -> tuple[int, int, int, int]:
    """(first, last + 1) frontier positions an occluder at pixels [lo, lo + window) can change; their crop [c0, c1)."""
    first = max(0, -(-(lo - axis.size + 1 - axis.start) // axis.jump))
    last = min(n_map - 1, (lo + window - 1 - axis.start) // axis.jump)
    return first, last + 1, _crop_axis(axis, first, n)[0], _crop_axis(axis, last, n)[1]


def _frontier_plan(subject: VirtualSubject, layers: list[str], hw: tuple[int, int], window: int) -> _Frontier | None:
    """The deepest default layer before ``layers`` that makes a clean cut and whose occluder crops are small."""
    ends = [subject.resolve_layer(layer) for layer in layers]
    for candidate in reversed(subject.default_layers):
        name = subject.resolve_layer(candidate)
        if name in ends:
            continue
        tail = split_after(subject.model, name, ends)
        if tail is None:
            continue
        try:
            trace = _traces(subject, [name], hw)[name]
        except ShapeMismatchError:
            continue
        if trace.unsafe:
            continue
        (ay, ax), (ny, nx) = trace.geometry, trace.map_size
        y = _block_box(ay, (hw[0] - window) // 2, ny, hw[0], window)
        x = _block_box(ax, (hw[1] - window) // 2, nx, hw[1], window)
        if (y[3] - y[2]) * (x[3] - x[2]) <= _FRONTIER_AREA * hw[0] * hw[1]:
            return _Frontier(name, trace, tail, _CropChecker(subject, name, hw, trace))
    return None


def _frontier_values(
    subject: VirtualSubject, image: torch.Tensor, group: _Group, rows: _Rows, occluders: _Occluders,
    needed: torch.Tensor, plan: _Frontier, batch_size: int,
) -> np.ndarray | None:
    """Unit values (rows, needed) of occluded whole images via the frontier; None where a crop is not certified."""
    hw = tuple(image.shape[-2:])
    window = occluders.patches.shape[-1]
    (ay, ax), (ny, nx) = plan.trace.geometry, plan.trace.map_size
    with torch.inference_mode():
        intact = subject.forward_layers(image[None], [plan.layer])[plan.layer]
    device = image.device
    units = _Units(rows, group, device)
    modules = {layer: subject.module(layer) for layer in units.layers}
    peak = rows.peak[group.rows]
    check = units.values(tapped(plan.tail, (intact,), modules))[:, 0]
    if np.any(np.abs(check - peak) > _CHECK_RTOL * np.maximum(1.0, np.abs(peak))):
        return None
    values = np.empty((len(group.rows), len(needed)), dtype=np.float32)
    for start in range(0, len(needed), batch_size):
        index = needed[start : start + batch_size]
        tops, lefts = occluders.top[index].tolist(), occluders.left[index].tolist()
        copies = occlude(image, occluders.patches[index.to(device)], occluders.top[index], occluders.left[index])
        boxes = [(_block_box(ay, t, ny, hw[0], window), _block_box(ax, lf, nx, hw[1], window))
                 for t, lf in zip(tops, lefts)]
        frontier = intact.expand(len(index), *intact.shape[1:]).clone()
        by_size: dict[tuple[int, int], list[int]] = {}
        for k, (by, bx) in enumerate(boxes):
            by_size.setdefault((by[3] - by[2], bx[3] - bx[2]), []).append(k)
        for size, members in by_size.items():
            if plan.checker(size):
                return None
            crops = torch.stack([copies[k, :, boxes[k][0][2] : boxes[k][0][3], boxes[k][1][2] : boxes[k][1][3]]
                                 for k in members])
            with torch.inference_mode():
                block = subject.forward_layers(crops, [plan.layer])[plan.layer]
            for j, k in enumerate(members):
                (f0, f1, c0, _), (g0, g1, d0, _) = boxes[k]
                oy, ox = c0 // ay.jump, d0 // ax.jump
                frontier[k, :, f0:f1, g0:g1] = block[j, :, f0 - oy : f1 - oy, g0 - ox : g1 - ox]
        values[:, start : start + len(index)] = units.values(tapped(plan.tail, (frontier,), modules))
    return values


def _plan(
    subject: VirtualSubject, rows: _Rows, traces: dict[str, _Trace], hw: tuple[int, int], occlusion: Occlusion
) -> tuple[list[_Group], dict[int, str]]:
    """Crop groups where certified exact, whole-image groups (shared across layers) for the rest, and why."""
    everything = np.arange(len(rows.image))
    reasons: dict[int, str] = {}
    crop_rows = []
    checkers: dict[str, _CropChecker] = {}
    for layer in dict.fromkeys(str(x) for x in rows.layer):
        members = everything[rows.layer == layer]
        trace = traces[layer]
        if _MODES[occlusion] and not trace.unsafe:
            checkers[layer] = _CropChecker(subject, layer, hw, trace)
            crop_rows.append(members)
        elif occlusion == "crop":
            raise ShapeMismatchError(f"No exact crop for layer {layer!r}: {trace.unsafe}. Use occlusion='auto' or 'full'.")
        else:
            reasons.update(dict.fromkeys(members.tolist(), trace.unsafe if _MODES[occlusion] else "occlusion='full' requested"))
    groups, failed = _crop_groups(rows, np.concatenate(crop_rows) if crop_rows else everything[:0], traces, hw, checkers,
                                  _MAX_CROP_AREA if occlusion == "auto" else 1.0)
    reasons.update(failed)
    return groups + _full_groups(rows, np.asarray(sorted(reasons), dtype=int)), reasons


def _occlusion_maps(
    subject: VirtualSubject, stim: Any, rows: _Rows, occluders: _Occluders, traces: dict[str, _Trace],
    hw: tuple[int, int], *, occlusion: Occlusion, batch_size: int, device: torch.device, progress: bool,
) -> tuple[np.ndarray, dict[str, dict[str, str | int | float]]]:
    """Discrepancy maps (rows, occluders) and, per layer, how they were evaluated (attrs).

    Whole-image groups serve every layer that needs the image with one forward pass;
    their time is split over the layers in proportion to the maps each layer has there.
    """
    n_rows = len(rows.image)
    groups, reasons = _plan(subject, rows, traces, hw, occlusion)
    maps = np.zeros((n_rows, len(occluders.top)), dtype=np.float32)
    patches = _Occluders(occluders.top, occluders.left, occluders.patches.to(device))
    groups.sort(key=lambda g: g.image)
    whole = [str(x) for x in dict.fromkeys(rows.layer[sorted(reasons)])]
    frontier = _frontier_plan(subject, whole, hw, occluders.patches.shape[-1]) if whole and occlusion == "auto" else None
    cached: tuple[int, torch.Tensor] | None = None
    on_crop, crop_area, shared, retried = np.zeros(n_rows, bool), np.zeros(n_rows), np.zeros(n_rows, bool), []
    seconds = np.zeros(n_rows)
    queue = list(groups)
    bar = tqdm(total=len(queue), desc="occluding", disable=not progress)
    while queue:
        group = queue.pop(0)
        start = time.perf_counter()
        if cached is None or cached[0] != group.image:
            cached = (group.image, subject.preprocessing(stim.load(group.image)).to(device))
        result = _run_group(subject, cached[1], group, rows, patches, traces, batch_size, frontier)
        if result is None:  # the run-time check failed: redo these maps on the full image
            retried.extend(group.rows.tolist())
            queue.insert(0, _Group(group.image, group.rows, None, rows.unit_y[group.rows], rows.unit_x[group.rows]))
            continue
        needed, drop = result
        maps[group.rows[:, None], needed[None]] = drop
        seconds[group.rows] += (time.perf_counter() - start) / len(group.rows)
        if group.box is not None:
            on_crop[group.rows] = True
            crop_area[group.rows] = (group.box[1] - group.box[0]) * (group.box[3] - group.box[2]) / (hw[0] * hw[1])
        elif len(set(rows.layer[group.rows].tolist())) > 1:
            shared[group.rows] = True
        bar.update()
    bar.close()
    info = {}
    for layer in dict.fromkeys(str(x) for x in rows.layer):
        mine = rows.layer == layer
        n_crop, n_mine = int(on_crop[mine].sum()), int(mine.sum())
        why = sorted({reasons[r] for r in np.flatnonzero(mine) if r in reasons})
        n_retried = int(np.isin(np.flatnonzero(mine), retried).sum())
        if n_retried:
            why.append(f"{n_retried} crop(s) failed the run-time check")
        info[layer] = {
            "occlusion": occlusion,
            "occlusion_mode": "crop" if n_crop == n_mine else "full" if n_crop == 0 else "crop+full",
            "occlusion_reason": "; ".join(why) or "every map evaluated on exact crops",
            "n_crop_maps": n_crop,
            "n_full_maps": n_mine - n_crop,
            "n_shared_full_maps": int(shared[mine].sum()),
            "crop_area_fraction": float(crop_area[mine & on_crop].mean()) if n_crop else 1.0,
            "occlusion_frontier": frontier.layer if frontier is not None and n_crop < n_mine else "",
            "occlusion_seconds": float(seconds[mine].sum()),
        }
    return maps, info
