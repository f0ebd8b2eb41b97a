"""Empirical receptive fields by sliding-window occlusion (Zhou et al. 2015).

Each unit's top-K images are occluded by a sliding patch; the drop of the unit's
activation at its original argmax location is the discrepancy map; maps are re-centred
on the theoretical RF centre of the argmax unit and averaged. Occluded images are built
as tensors in large batches (no Python loop over window positions), the forward pass
stops at the requested layer, units whose top images coincide share forward passes,
occluders that miss the theoretical RF of a unit are not run, and each occluded image
is evaluated only on the crop covering the unit's theoretical RF where that crop is
exact (:func:`neurocnn.receptive_fields.rf_crop`), else on the full image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from .._validation import check_fraction, check_option, check_positive_int
from ..exceptions import InvalidDataError, ShapeMismatchError, StimulusError
from ..forward import model_on
from ..stimuli import load_stimuli
from ..subject import VirtualSubject
from ._geometry import _Geometry, _traces
from ._occlusion import (
    _FILLS,
    _MODES,
    Occlusion,
    _Occluders,
    _occlusion_maps,
    _positions,
    _Rows,
)

__all__ = ["empirical_rf", "empirical_rfs", "rf_size_summary"]

Fill = Literal["random", "mean"]


def _top_images(
    subject: VirtualSubject, stim: Any, channels: dict[str, np.ndarray], batch_size: int, progress: bool
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per layer and requested channel: max activation over space and its (y, x), for every stimulus.

    One pass over the stimuli serves every layer.
    """
    peaks: dict[str, list] = {layer: [] for layer in channels}
    where: dict[str, list] = {layer: [] for layer in channels}
    map_size: dict[str, tuple[int, int]] = {}
    for _, batch in tqdm(stim.batches(batch_size, subject.preprocessing), desc="top images", disable=not progress):
        with torch.inference_mode():
            outs = subject.forward_layers(batch.to(subject.device), list(channels))
        for layer, out in outs.items():
            if out.ndim != 4:
                raise ShapeMismatchError(f"Layer {layer!r} has output shape {tuple(out.shape)}; it is not spatial.")
            if channels[layer].max() >= out.shape[1]:
                raise InvalidDataError(
                    f"Channel {int(channels[layer].max())} is out of range: layer {layer!r} has "
                    f"{out.shape[1]} channels (valid 0..{out.shape[1] - 1})."
                )
            map_size[layer] = tuple(out.shape[-2:])
            flat = out[:, torch.as_tensor(channels[layer], device=out.device)].flatten(2).float()
            value, index = flat.max(dim=2)
            peaks[layer].append(value.cpu().numpy())
            where[layer].append(index.cpu().numpy())
    result = {}
    for layer in channels:
        index = np.concatenate(where[layer])
        result[layer] = (np.concatenate(peaks[layer]), index // map_size[layer][1], index % map_size[layer][1])
    return result


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
    occlusion: Occlusion = "auto",
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
    occlusion : {"auto", "crop", "full"}
        Where each occluded image is evaluated. ``"crop"``: only on the crop covering
        the unit's theoretical RF (:func:`neurocnn.receptive_fields.rf_crop`; the same
        values as the full image to float precision, at a fraction of the cost for all
        but the deepest layers); refused where no crop is certified exact. ``"full"``:
        on the whole image. ``"auto"``: crops where certified, else the whole image.
        Recorded in attrs ``occlusion_mode`` (``"crop"``, ``"full"`` or
        ``"crop+full"``) and ``occlusion_reason``.
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
        n_occluders, occlusion, occlusion_mode, occlusion_reason, n_crop_maps,
        n_full_maps, crop_area_fraction (mean crop area / image area).

    Raises
    ------
    InvalidDataError
        A channel index out of range, or bad numeric parameters.
    ShapeMismatchError
        ``window`` larger than the image, or a non-spatial layer.
    StimulusError
        ``top_k`` larger than the stimulus set.
    ShapeMismatchError
        Also with ``occlusion="crop"`` where no crop is exact (e.g. a global pooling
        before the layer).
    UnknownNameError
        Unknown layer, fill or occlusion.

    Examples
    --------
    >>> subject = VirtualSubject()  # doctest: +SKIP
    >>> rf = empirical_rf(subject, "stage4", [0, 1, 2], "92images", top_k=5)  # doctest: +SKIP
    >>> rf["size"].values  # doctest: +SKIP
    """
    return empirical_rfs(
        subject, {layer: channels}, stimuli, top_k=top_k, window=window, stride=stride, fill=fill,
        threshold=threshold, batch_size=batch_size, seed=seed, occlusion=occlusion, device=device, progress=progress,
    )[layer]


def empirical_rfs(
    subject: VirtualSubject,
    units: Mapping[str, int | Sequence[int]],
    stimuli: Any,
    *,
    top_k: int = 10,
    window: int = 11,
    stride: int = 3,
    fill: Fill = "random",
    threshold: float = 0.5,
    batch_size: int = 256,
    seed: int = 0,
    occlusion: Occlusion = "auto",
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, xr.Dataset]:
    """Empirical receptive fields of several layers at once, sharing forward passes.

    The same protocol and results as :func:`empirical_rf` for each layer (same values
    to float precision), cheaper: one pass over the stimuli finds every layer's top
    images, and where maps are evaluated on the whole image (deep layers, whose
    theoretical RF covers the image) one forward pass of each occluded image serves
    every layer and unit that needs that image.

    Parameters
    ----------
    subject : VirtualSubject
    units : mapping of str to int or sequence of int
        Layer (name or alias) -> channels whose RFs to map.
    stimuli, top_k, window, stride, fill, threshold, batch_size, seed, occlusion, device, progress
        As in :func:`empirical_rf`.

    Returns
    -------
    dict of str to xarray.Dataset
        Per layer (keys as given), the Dataset :func:`empirical_rf` returns; attrs also
        ``n_shared_full_maps`` (maps computed in whole-image passes shared with other
        layers) and ``occlusion_seconds`` (occlusion time of the layer; a shared pass's
        time split over its maps).

    Raises
    ------
    InvalidDataError, ShapeMismatchError, StimulusError, UnknownNameError
        As :func:`empirical_rf`; also for an empty ``units``.

    Examples
    --------
    >>> rfs = empirical_rfs(subject, {"stage5": [0, 1], "head": [3]}, "92images")  # doctest: +SKIP
    >>> rfs["head"]["size"].values  # doctest: +SKIP
    """
    check_option("fill", fill, _FILLS)
    check_option("occlusion", occlusion, _MODES)
    for name, value in (("top_k", top_k), ("window", window), ("stride", stride), ("batch_size", batch_size)):
        check_positive_int(name, value)
    check_fraction("threshold", threshold)
    if not isinstance(units, Mapping) or not units:
        raise InvalidDataError(f"units must map layer names to channels, e.g. {{'stage4': [0, 1]}}; got {units!r}.")
    channel_lists = {layer: _channel_list(channels) for layer, channels in units.items()}
    stim = load_stimuli(stimuli)
    if top_k > len(stim):
        raise StimulusError(f"top_k={top_k} is larger than the stimulus set ({len(stim)} images).")
    hw = tuple(subject.preprocessing.geometric(stim.load(0)).shape[-2:])
    if window > min(hw):
        raise ShapeMismatchError(f"The occluder ({window} px) is larger than the {hw[0]} x {hw[1]} image.")
    layers = list(channel_lists)
    with model_on(subject.model, device, subject.device) as run_device:
        traces = _traces(subject, layers, hw)
        tops = _top_images(subject, stim, channel_lists, batch_size, progress)
        ys, xs, occluders = _occluders(subject, hw, window, stride, fill, seed)
        picked, parts = {}, []
        for layer in layers:
            (peaks, uy, ux), channel_list = tops[layer], channel_lists[layer]
            order = np.argsort(-peaks, axis=0, kind="stable")[:top_k].T  # (unit, rank)
            cols = np.arange(len(channel_list))[:, None]
            picked[layer] = {"stimulus": np.asarray(stim.ids)[order], "activation": peaks[order, cols],
                             "unit_y": uy[order, cols], "unit_x": ux[order, cols], "order": order}
            parts.append((order.reshape(-1), np.full(order.size, layer, dtype=object), np.repeat(channel_list, top_k),
                          uy[order, cols].reshape(-1), ux[order, cols].reshape(-1), peaks[order, cols].reshape(-1)))
        rows = _Rows(*(np.concatenate(column) for column in zip(*parts)))
        maps, info = _occlusion_maps(subject, stim, rows, occluders, traces, hw, occlusion=occlusion,
                                     batch_size=batch_size, device=run_device, progress=progress)
    results = {}
    for layer in layers:
        mine = rows.layer == layer
        channel_list = channel_lists[layer]
        layer_maps = maps[mine].reshape(len(channel_list), top_k, len(ys), len(xs))
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
            "n_occluders": int(len(occluders.top)),
            "input_height": hw[0],
            "input_width": hw[1],
            **info[layer],
        }
        per_map = {k: v for k, v in picked[layer].items() if k != "order"}
        results[layer] = _assemble(layer_maps, per_map, channel_list, (ys, xs), traces[layer].geometry, attrs)
    return results


def _channel_list(channels: int | Sequence[int]) -> np.ndarray:
    channel_list = np.atleast_1d(np.asarray(channels))
    if channel_list.size == 0 or channel_list.dtype.kind not in "iu" or channel_list.min() < 0:
        raise InvalidDataError(f"channels must be non-negative integers, got {channels!r}.")
    return channel_list


def _occluders(
    subject: VirtualSubject, hw: tuple[int, int], window: int, stride: int, fill: str, seed: int
) -> tuple[torch.Tensor, torch.Tensor, _Occluders]:
    """Top-left corners on the ``stride`` grid (rows, columns) and the normalized patches, row-major."""
    ys, xs = _positions(hw[0], window, stride), _positions(hw[1], window, stride)
    top = ys[:, None].expand(len(ys), len(xs)).reshape(-1)
    left = xs[None, :].expand(len(ys), len(xs)).reshape(-1)
    patches = subject.preprocessing.normalize(_FILLS[fill](len(top), window, subject.preprocessing.mean, seed))
    return ys, xs, _Occluders(top, left, patches)


def _assemble(
    maps: np.ndarray, picked: dict[str, np.ndarray], channels: np.ndarray, grid: tuple[torch.Tensor, torch.Tensor],
    geometry: _Geometry, attrs: dict,
) -> xr.Dataset:
    """Re-centre and average the maps, measure the RFs, and build the result Dataset."""
    (gy, gx), (ys, xs) = geometry, grid
    window, stride, top_k = attrs["window"], attrs["stride"], attrs["top_k"]
    centre_y = gy.start + picked["unit_y"] * gy.jump + (gy.size - 1) / 2
    centre_x = gx.start + picked["unit_x"] * gx.jump + (gx.size - 1) / 2
    first = (window - 1) / 2
    rf, coverage, offsets = _recentre(maps, (first - centre_y) / stride, (first - centre_x) / stride)
    area, size, diameter = _rf_area(rf, attrs["threshold"], stride)
    attrs = {**attrs, "theoretical_size_y": gy.size, "theoretical_size_x": gx.size,
             "theoretical_stride_y": gy.jump, "theoretical_stride_x": gx.jump}
    per_map = {name: (("unit", "rank"), values) for name, values in picked.items()}
    return xr.Dataset(
        {
            "discrepancy": (("unit", "rank", "y", "x"), maps),
            "rf": (("unit", "dy", "dx"), rf),
            "coverage": (("unit", "dy", "dx"), coverage),
            **per_map,
            "centre_y": (("unit", "rank"), centre_y),
            "centre_x": (("unit", "rank"), centre_x),
            "area": ("unit", area),
            "size": ("unit", size),
            "diameter": ("unit", diameter),
        },
        coords={
            "unit": np.arange(len(channels)),
            "channel": ("unit", channels.astype(int)),
            "rank": np.arange(1, top_k + 1),
            "y": (ys.numpy() + first),
            "x": (xs.numpy() + first),
            "dy": offsets[0] * stride,
            "dx": offsets[1] * stride,
        },
        attrs=attrs,
    )



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

