"""Unit selectivity, node/synapse knockout and noise injection (virtual TMS).

Selectivity is measured on localizer stimuli (e.g. fLoc faces, places, objects):
per channel (its response to an image is the *spatial mean* of the channel's
activation map) or per unit (every element of the layer's output). Units are chosen
with Benjamini-Hochberg FDR control or as the top N, on images held out from the
ones used to test the lesion (:func:`split_localizer`).

Lesions (Cheney, Schrimpf & Kreiman 2017) are reversible context managers:

- :func:`knockout` (node KO): the chosen channels/units output 0 (forward hook);
- :func:`synapse_knockout`: a random fraction of the weights into a layer is set
  to 0 and restored bit-identically from a saved clone on exit;
- :func:`tms`: Gaussian noise added to chosen units, its SD ``amplitude`` times the
  units' activation SD (a model of TMS interference, Pitcher et al. 2009);
- :func:`sham`: a knockout of as many random units of the same layer (optionally
  matched on the lesioned units' mean activation, :func:`matched_random_units`).

``with`` blocks nest and may be left in any order: each lesion undoes only its own
change (weights are recomputed from one pristine copy and the lesions still active).
Hooks are removed in ``finally``; :func:`lesioned_copy` returns a new subject with the
lesion applied permanently instead.

BatchNorm-aware lesions: ``recalibrate=images`` re-estimates the running statistics
of the BatchNorm modules that run after the lesion on those (held-out) images, while
the lesion is active; leaving restores the original statistics bit-identically.
A selection from :func:`select_units` carries its network, layer, level and layer
size; a lesion refuses it for another layer (:class:`~neurocnn.exceptions.LayerMismatchError`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import scipy.stats
import torch
import xarray as xr
from torch import nn

from . import _lesion_state as _state
from ._validation import (
    check_finite,
    check_fraction,
    check_option,
    check_positive_int,
    check_seed,
    numpy_rng,
    torch_generator,
)
from .exceptions import InvalidDataError, NoSelectiveUnitsError, StimulusError
from .models import state_dict_sha256
from .stimuli import StimulusSet, load_stimuli
from .subject import VirtualSubject

__all__ = [
    "selectivity",
    "select_units",
    "split_localizer",
    "layer_size",
    "random_units",
    "matched_random_units",
    "Lesion",
    "knockout",
    "synapse_knockout",
    "tms",
    "activation_sd",
    "sham",
    "lesioned_copy",
    "active_lesions",
    "layer_at_resolution",
]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

Level = Literal["channel", "unit"]
_LEVELS = ("channel", "unit")


# ------------------------------------------------------------------ layer geometry
#: the note on selectivity's ``p``, the 0.1 name of ``p_value``.
_P_ALIAS = "alias of p_value (the name of neurocnn 0.1); it will be removed in neurocnn 0.3"


def layer_size(subject: VirtualSubject, layer: str, level: Level = "channel") -> int:
    """Return the number of channels (``level="channel"``) or units of ``layer``."""
    check_option("level", level, _LEVELS)
    shape = subject.output_shape(layer)
    return int(shape[0]) if level == "channel" else int(np.prod(shape))


def layer_at_resolution(subject: VirtualSubject, fraction: float = 13 / 224) -> str:
    """Return the first default layer whose output grid side is closest to ``fraction`` of the input.

    The default ``13/224`` is AlexNet conv3's 13x13 grid on a 224 px input, so this
    picks a layer "at the depth of AlexNet conv3" in any architecture from data (for
    AlexNet: ``conv3``; for EfficientNet-Lite0: ``stage4``, the first 14x14 stage).
    Layers without a spatial grid are skipped.

    Raises
    ------
    InvalidDataError
        If no default layer has a spatial output.
    """
    size = subject.input_size()[0]
    best, best_err = "", np.inf
    for name in subject.default_layers:
        shape = subject.output_shape(name)
        if len(shape) != 3:
            continue
        err = abs(np.log(shape[1] / size) - np.log(fraction))
        if err < best_err - 1e-12:
            best, best_err = name, err
    if not best:
        raise InvalidDataError(f"No default layer of {subject.name!r} has a spatial (channel, y, x) output.")
    return best


def _check_units(units: Any, size: int, what: str) -> np.ndarray:
    idx = np.asarray(units if not isinstance(units, xr.DataArray) else units.values)
    if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise InvalidDataError(f"{what} must be a 1-D sequence of integer indices, got {idx.dtype} of shape {idx.shape}.")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        bad = idx[(idx < 0) | (idx >= size)]
        raise InvalidDataError(f"{what} {bad[:5].tolist()} out of range: the layer has {size} of them (valid 0..{size - 1}).")
    if np.unique(idx).size != idx.size:
        raise InvalidDataError(f"{what} contain repeated indices.")
    return np.sort(idx)


# ------------------------------------------------------------------ selectivity
def _responses(act: xr.DataArray, level: Level) -> tuple[np.ndarray, dict[str, Any]]:
    """(stimulus, unit) responses and the coords of the unit dim."""
    values = np.asarray(act.values, dtype=np.float64)
    if level == "channel" and values.ndim > 2:
        return values.reshape(values.shape[0], values.shape[1], -1).mean(-1), {"channel": np.arange(values.shape[1])}
    if level == "channel":
        return values, {"channel": np.arange(values.shape[1])}
    grid = np.indices(values.shape[1:]).reshape(values.ndim - 1, -1)
    coords: dict[str, Any] = {"unit": np.arange(grid.shape[1])}
    for dim, row in zip(act.dims[1:], grid):
        if dim != "unit":
            coords[f"unit_{dim}"] = ("unit", row)
    return values.reshape(values.shape[0], -1), coords


def selectivity(
    subject: VirtualSubject,
    stimuli: Any,
    layer: str,
    *,
    target: str = "face",
    against: Sequence[str] = ("place", "object"),
    by: str = "domain",
    level: Level = "channel",
    batch_size: int = 32,
    progress: bool = False,
    activations: xr.DataArray | None = None,
) -> xr.Dataset:
    """Measure how selective each channel (or unit) of a layer is for one stimulus class.

    The response of a channel to an image is the spatial mean of its activation map
    (``level="channel"``); with ``level="unit"`` every element of the layer output is
    a unit. ``target`` images are contrasted with all ``against`` images pooled.

    Parameters
    ----------
    subject : VirtualSubject
    stimuli : StimulusSet or str
        Localizer stimuli with a metadata field ``by`` (e.g. ``nc.load_stimuli("floc")``).
    layer : str
        Layer name or alias.
    target : str
        Value of ``by`` of the preferred class.
    against : sequence of str
        Values of ``by`` of the contrast classes (pooled).
    by : str
        Metadata field holding the classes (fLoc: ``"domain"`` or ``"category"``).
    level : {"channel", "unit"}
    batch_size : int
    progress : bool
    activations : xarray.DataArray, optional
        The layer's activations for ``stimuli`` (same order), if already computed;
        saves the forward passes when several contrasts use one localizer.

    Returns
    -------
    xarray.Dataset
        Over dim ``channel`` (or ``unit``): ``mean_target``, ``mean_against``,
        ``sd_target``, ``sd_against``, ``d_prime`` = (mt - ma) / sqrt((st² + sa²) / 2),
        ``t`` and ``p_value`` (Welch's t-test, one-sided target > against; units
        constant across all images get t = 0, p = 1; ``p`` is a deprecated alias),
        ``selectivity_index`` = (mt - ma) / (|mt| + |ma|) in [-1, 1] (0 where both
        means are 0). Attrs: provenance,
        target, against, by, level, n_target, n_against, response.

    Raises
    ------
    StimulusError
        If ``by`` is not a metadata field or a class has no images.
    UnknownNameError
        Unknown layer or level.

    Examples
    --------
    >>> floc = nc.load_stimuli("floc")  # doctest: +SKIP
    >>> sel = selectivity(subject, floc, "stage4", target="face")  # doctest: +SKIP
    """
    check_option("level", level, _LEVELS)
    stim = load_stimuli(stimuli)
    against = [against] if isinstance(against, str) else list(against)
    labels = _labels(stim, by, [target, *against])
    is_target = labels == target
    is_against = np.isin(labels, against)
    keep = np.flatnonzero(is_target | is_against)
    if activations is None:
        act = subject.activations(stim.subset(keep), layer, batch_size=batch_size, progress=progress)
    else:
        if activations.sizes["stimulus"] != len(stim):
            raise StimulusError(f"activations have {activations.sizes['stimulus']} stimuli; the stimulus set has {len(stim)}.")
        act = activations.isel(stimulus=keep)
    resp, unit_coords = _responses(act, level)
    tmask = is_target[is_target | is_against]
    a, b = resp[tmask], resp[~tmask]
    mt, ma = a.mean(0), b.mean(0)
    st, sa = a.std(0, ddof=1), b.std(0, ddof=1)
    constant = (st == 0) & (sa == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        d_prime = np.where(constant, 0.0, (mt - ma) / np.sqrt((st**2 + sa**2) / 2))
        denom = np.abs(mt) + np.abs(ma)
        index = np.where(denom > 0, (mt - ma) / np.where(denom > 0, denom, 1.0), 0.0)
    t = np.zeros(resp.shape[1])
    p = np.ones(resp.shape[1])
    ok = ~constant
    if ok.any():
        res = scipy.stats.ttest_ind(a[:, ok], b[:, ok], equal_var=False, alternative="greater")
        t[ok], p[ok] = res.statistic, res.pvalue
    dim = "channel" if level == "channel" else "unit"
    data = {
        "mean_target": mt, "mean_against": ma, "sd_target": st, "sd_against": sa,
        "d_prime": d_prime, "t": t, "p_value": p, "selectivity_index": index,
    }
    attrs = {
        **{k: v for k, v in act.attrs.items() if k != "requested_as"},
        "target": target,
        "against": list(against),
        "by": by,
        "level": level,
        "n_target": int(tmask.sum()),
        "n_against": int((~tmask).sum()),
        "response": "spatial mean of the channel's activation map" if level == "channel" else "unit activation",
        "test": "Welch t-test, one-sided (target > against)",
    }
    ds = xr.Dataset({k: (dim, v) for k, v in data.items()}, coords=unit_coords, attrs=attrs)
    ds["p"] = ds["p_value"].assign_attrs(deprecated=_P_ALIAS)
    return ds


def _labels(stim: StimulusSet, by: str, needed: Sequence[str]) -> np.ndarray:
    if by not in stim.metadata:
        raise StimulusError(
            f"Stimulus set {stim.name!r} has no metadata field {by!r} (it has {sorted(stim.metadata)}); "
            "use localizer stimuli labelled by class, e.g. nc.load_stimuli('floc') with by='domain'."
        )
    labels = np.asarray(stim.metadata[by]).astype(str)
    missing = [c for c in needed if not (labels == c).any()]
    if missing:
        raise StimulusError(
            f"Stimulus set {stim.name!r} has no images with {by} in {missing}; "
            f"its {by} values are {sorted(set(labels.tolist()))}."
        )
    return labels


def _bh_adjust(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values."""
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.clip(adjusted, 0.0, 1.0)
    return out


def _p_values(sel: xr.Dataset) -> np.ndarray:
    """The selectivity p-values; results saved by neurocnn 0.1 name them ``p``."""
    return sel["p_value" if "p_value" in sel else "p"].values


def _select_fdr(sel: xr.Dataset, stat: str, q: float, n: int | None) -> tuple[np.ndarray, dict[str, Any]]:
    q = check_fraction("q", q)
    adjusted = _bh_adjust(_p_values(sel))
    chosen = np.flatnonzero((adjusted <= q) & (sel[stat].values > 0))
    return chosen, {"q": q, "min_adjusted_p": float(adjusted.min())}


def _select_top_n(sel: xr.Dataset, stat: str, q: float, n: int | None) -> tuple[np.ndarray, dict[str, Any]]:
    if n is None:
        raise InvalidDataError("method='top_n' needs n, the number of units to select.")
    n = check_positive_int("n", n)
    total = sel.sizes[_unit_dim(sel)]
    if n > total:
        raise InvalidDataError(f"n={n} exceeds the {total} units of the layer.")
    values = sel[stat].values
    chosen = np.argsort(-values, kind="stable")[:n]
    return chosen[values[chosen] > 0], {"n_requested": n}


_SELECTORS: dict[str, Callable[[xr.Dataset, str, float, int | None], tuple[np.ndarray, dict[str, Any]]]] = {
    "fdr": _select_fdr,
    "top_n": _select_top_n,
}


def _unit_dim(sel: xr.Dataset) -> str:
    return "channel" if "channel" in sel.dims else "unit"


def select_units(
    sel: xr.Dataset,
    *,
    method: Literal["fdr", "top_n"] = "fdr",
    q: float = 0.05,
    n: int | None = None,
    stat: str = "t",
) -> xr.DataArray:
    """Choose the selective channels/units of a :func:`selectivity` result.

    Parameters
    ----------
    sel : xarray.Dataset
        Output of :func:`selectivity`.
    method : {"fdr", "top_n"}
        ``"fdr"``: Benjamini-Hochberg on the one-sided p-values, keeping units with
        adjusted p <= ``q`` (and ``stat`` > 0); ``"top_n"``: the ``n`` units with the
        largest ``stat`` among those with ``stat`` > 0.
    q : float
        FDR level.
    n : int, optional
        Number of units for ``"top_n"``.
    stat : str
        Variable of ``sel`` that orders units (``"t"``, ``"d_prime"``, ``"selectivity_index"``).

    Returns
    -------
    xarray.DataArray
        Integer indices (dim ``selected``), ordered from most to least selective; attrs
        ``n_selected``, ``n_total``, ``method``, ``stat`` and the selectivity attrs.
        Pass it as ``units`` to a lesion.

    Raises
    ------
    NoSelectiveUnitsError
        If no unit passes (the message gives the smallest adjusted p).
    UnknownNameError
        Unknown method or stat.
    """
    check_option("selection method", method, _SELECTORS)
    check_option("statistic", stat, [v for v in sel.data_vars if v not in ("p", "p_value")])
    chosen, extra = _SELECTORS[method](sel, stat, q, n)
    dim = _unit_dim(sel)
    total = sel.sizes[dim]
    if chosen.size == 0:
        detail = f" (smallest BH-adjusted p = {extra['min_adjusted_p']:.3g})" if "min_adjusted_p" in extra else ""
        raise NoSelectiveUnitsError(
            f"No {dim} of layer {sel.attrs.get('layer', '?')!r} is {sel.attrs.get('target', '?')}-selective "
            f"({sel.attrs.get('target')} > {sel.attrs.get('against')}) with method={method!r}, q={q}{detail}, "
            f"out of {total}. Use more localizer images, a larger q, method='top_n', or another layer."
        )
    chosen = chosen[np.argsort(-sel[stat].values[chosen], kind="stable")]
    attrs = {**sel.attrs, **extra, "method": method, "stat": stat, "n_selected": int(chosen.size), "n_total": int(total)}
    return xr.DataArray(chosen.astype(np.int64), dims="selected", name=f"{sel.attrs.get('target', 'selected')}_units", attrs=attrs)


def split_localizer(
    stimuli: Any, fraction: float = 0.5, *, seed: int = 0, by: str = "category"
) -> tuple[StimulusSet, StimulusSet]:
    """Split stimuli into a selection half and a held-out half, stratified by ``by``.

    Within each class ``round(fraction * n)`` images go to the selection set (at least
    one, and at least one is held out when the class has two or more images).

    Returns
    -------
    (StimulusSet, StimulusSet)
        Selection images, held-out images (each in the original order).

    Raises
    ------
    StimulusError
        If ``by`` is not a metadata field.
    InvalidDataError
        If ``fraction`` is not in (0, 1).
    """
    fraction = check_fraction("fraction", fraction)
    if fraction in (0.0, 1.0):
        raise InvalidDataError("fraction must lie strictly between 0 and 1 so both halves get images.")
    stim = load_stimuli(stimuli)
    labels = _labels(stim, by, [])
    rng = numpy_rng(seed)
    chosen = []
    for value in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == value)
        k = int(np.clip(round(fraction * idx.size), 1, max(idx.size - 1, 1)))
        chosen.append(rng.choice(idx, size=k, replace=False))
    mask = np.zeros(len(stim), dtype=bool)
    mask[np.concatenate(chosen)] = True
    return stim.subset(np.flatnonzero(mask)), stim.subset(np.flatnonzero(~mask))


def random_units(n: int, layer_size: int, *, exclude: Any = (), seed: int = 0) -> np.ndarray:
    """Return ``n`` distinct random unit indices in ``[0, layer_size)`` not in ``exclude`` (sorted).

    Raises
    ------
    InvalidDataError
        If fewer than ``n`` units remain after the exclusion.
    """
    n = int(n)
    if n < 0:
        raise InvalidDataError(f"n must be >= 0, got {n}.")
    excluded = _check_units(np.unique(np.asarray(exclude, dtype=np.int64)), layer_size, "excluded units")
    pool = np.setdiff1d(np.arange(layer_size), excluded)
    if n > pool.size:
        raise InvalidDataError(
            f"Cannot draw {n} random units from a layer of {layer_size} with {excluded.size} excluded "
            f"({pool.size} left)."
        )
    return np.sort(numpy_rng(seed).choice(pool, size=n, replace=False))


# ------------------------------------------------------------------ lesions
class Lesion:
    """Base class of reversible lesions (context managers).

    Entering applies the lesion to ``subject``; leaving removes it, also after an
    exception. A lesion object can be entered again after it was left.
    """

    kind = "lesion"

    def __init__(self, subject: VirtualSubject, layer: str, seed: int = 0, recalibrate: Any = None,
                 batch_size: int = 32) -> None:
        self.subject = subject
        self.layer = subject.resolve_layer(layer)
        self.seed = check_seed(seed)
        self._active = False
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.recalibration_images, self._recalibration_name = _state.recalibration_images(subject, recalibrate)

    def attrs(self) -> dict[str, Any]:
        """Description of the lesion for result attrs (str/int/float values only)."""
        recal = self.recalibration_images
        return {
            "lesion": self.kind, "lesion_layer": self.layer, "lesion_seed": self.seed,
            "lesion_recalibrate": "none" if recal is None else "batchnorm statistics after the lesion",
            "lesion_recalibrate_n_images": 0 if recal is None else int(recal.shape[0]),
            "lesion_recalibrate_stimuli": self._recalibration_name,
        }

    def _anchor(self) -> nn.Module:
        """The module after whose output the lesion takes effect (BN modules after it are recalibrated)."""
        return self.subject.module(self.layer)

    def _apply(self) -> None:
        raise NotImplementedError

    def _remove(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Lesion:
        if self._active:
            raise InvalidDataError(f"This {self.kind} lesion is already active; create a new one to nest.")
        self._apply()
        self._active = True
        self.subject.lesions.append(self)  # the subject's record of its active lesions (provenance)
        if self.recalibration_images is not None:
            try:
                _state.refresh_batchnorm(self.subject.model, [les for les in self.subject.lesions if les.recalibration_images is not None])
            except BaseException:
                self.__exit__(None, None, None)
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._remove()
        finally:
            self._active = False
            if self in self.subject.lesions:
                self.subject.lesions.remove(self)
            if self.recalibration_images is not None:
                _state.refresh_batchnorm(self.subject.model, [les for les in self.subject.lesions if les.recalibration_images is not None])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.layer!r} active={self._active}>"


class _HookLesion(Lesion):
    """A lesion acting on a layer's output through a forward hook."""

    def __init__(self, subject: VirtualSubject, layer: str, units: Any, level: Level, seed: int,
                 recalibrate: Any = None, batch_size: int = 32) -> None:
        super().__init__(subject, layer, seed, recalibrate, batch_size)
        check_option("level", level, _LEVELS)
        self.level = level
        size = layer_size(subject, layer, level)
        _state.check_selection(units, subject, self.layer, level, size)
        self.units = _check_units(units, size, "units" if level == "unit" else "channels")
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def attrs(self) -> dict[str, Any]:
        return {**super().attrs(), "lesion_level": self.level, "lesion_n_units": int(self.units.size)}

    def _modify(self, flat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _hook(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        out = output.clone()
        idx = torch.as_tensor(self.units, device=out.device)
        if self.level == "channel":
            moved = out.movedim(1, 0)
            moved[idx] = self._modify(moved[idx], idx)
            return out
        flat = out.reshape(out.shape[0], -1)
        flat[:, idx] = self._modify(flat[:, idx], idx)
        return flat.reshape(out.shape)

    def _apply(self) -> None:
        self._handle = self.subject.module(self.layer).register_forward_hook(self._hook)

    def _remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class _Knockout(_HookLesion):
    kind = "knockout"

    def _modify(self, values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(values)


class _Sham(_Knockout):
    kind = "sham_knockout"


class _TMS(_HookLesion):
    kind = "tms"

    def __init__(self, subject, layer, units, level, seed, amplitude: float, sd: np.ndarray, recalibrate: Any = None,
                 batch_size: int = 32) -> None:
        super().__init__(subject, layer, units, level, seed, recalibrate, batch_size)
        self.amplitude = amplitude
        self.sd = sd
        self._generator: torch.Generator | None = None

    def attrs(self) -> dict[str, Any]:
        return {**super().attrs(), "lesion_amplitude": self.amplitude, "lesion_mean_sd": float(self.sd[self.units].mean()) if self.units.size else 0.0}

    def _apply(self) -> None:
        self._generator = torch.Generator(device=self.subject.device).manual_seed(self.seed)
        super()._apply()

    def _modify(self, values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        scale = torch.as_tensor(self.amplitude * self.sd, dtype=values.dtype, device=values.device)[idx]
        scale = scale.reshape(-1, *([1] * (values.ndim - 1))) if self.level == "channel" else scale
        noise = torch.randn(values.shape, generator=self._generator, device=values.device, dtype=values.dtype)
        return values + noise * scale


def knockout(subject: VirtualSubject, layer: str, units: Any, *, level: Level = "channel", recalibrate: Any = None,
             batch_size: int = 32) -> Lesion:
    """Node knockout: force the output of chosen channels (or units) of ``layer`` to 0.

    Parameters
    ----------
    subject : VirtualSubject
    layer : str
        Layer name or alias; its module's output is modified by a forward hook.
    units : sequence of int or xarray.DataArray
        Channel indices (``level="channel"``) or flat unit indices (``level="unit"``,
        C-order over the layer output without the batch dim), e.g. from :func:`select_units`.
    level : {"channel", "unit"}
    recalibrate : StimulusSet, str, torch.Tensor or None
        Held-out images on which the running statistics of the BatchNorm modules that
        run after the lesion are re-estimated while it is active (a tensor is taken as
        preprocessed network input). ``None`` (default): BN keeps the intact statistics.
        Recorded in :meth:`Lesion.attrs`.
    batch_size : int
        Batch size of the recalibration passes.

    Returns
    -------
    Lesion
        A context manager; inside ``with`` the units are silenced.

    Raises
    ------
    InvalidDataError
        Indices out of range, repeated or not integers.
    LayerMismatchError
        ``units`` from :func:`select_units` on another layer, network or level.

    Examples
    --------
    >>> with knockout(subject, "conv3", [3, 17]):  # doctest: +SKIP
    ...     acts = subject.activations(stim, "fc7")
    """
    return _Knockout(subject, layer, units, level, 0, recalibrate, batch_size)


def sham(
    subject: VirtualSubject, layer: str, n: int, *, exclude: Any = (), level: Level = "channel", seed: int = 0,
    matched_to: Any = None, mean_activation: Any = None, recalibrate: Any = None, batch_size: int = 32,
) -> Lesion:
    """Sham control: knock out ``n`` random channels/units of ``layer`` not in ``exclude``.

    Use the same ``n`` as the real lesion and exclude its units (:func:`random_units`).
    With ``matched_to`` (the real lesion's units) and ``mean_activation`` (every
    unit's mean activation on the localizer), the random units are matched on mean
    activation (:func:`matched_random_units`) and ``n`` must equal their number.
    """
    size = layer_size(subject, layer, level)
    _state.check_selection(exclude, subject, subject.resolve_layer(layer), level, size)
    if matched_to is None:
        units = random_units(n, size, exclude=exclude, seed=seed)
    else:
        _state.check_selection(matched_to, subject, subject.resolve_layer(layer), level, size)
        target = _check_units(matched_to, size, "matched_to units")
        if int(n) != target.size:
            raise InvalidDataError(f"n={n} but matched_to has {target.size} units; a matched sham has as many units as the lesion.")
        if mean_activation is None:
            raise InvalidDataError("matched_to needs mean_activation (the mean activation of every unit of the layer).")
        units = matched_random_units(target, mean_activation, exclude=exclude, seed=seed)
    les = _Sham(subject, layer, units, level, seed, recalibrate, batch_size)
    les.matched = matched_to is not None
    return les


def matched_random_units(
    units: Any, mean_activation: Any, *, exclude: Any = (), seed: int = 0, n_neighbours: int | None = None
) -> np.ndarray:
    """Random units matched one-to-one on mean activation to ``units`` (a sham null that is not only count-matched).

    The pool is every unit not in ``units`` or ``exclude``. For each unit of ``units``
    (in random order) one pool unit is drawn uniformly among the ``n_neighbours`` still
    unused pool units closest to it in mean activation (ties between equally close
    units go to the lower activation, then the lower index), so the sham set's activation
    distribution follows the lesion's. Each draw costs O(log pool) plus the removal of
    the drawn unit (a sham of 15,000 of 75,000 units: about 1 s).

    Parameters
    ----------
    units : sequence of int
        The real lesion's units.
    mean_activation : array, shape (layer_size,)
        Mean activation of every unit (e.g. ``mean_target``/``mean_against`` average
        of :func:`selectivity`, or the mean over localizer images).
    exclude : sequence of int
        Units never drawn (e.g. the other selective set).
    seed : int
    n_neighbours : int, optional
        Candidates per unit; default ``max(3, 5% of the pool)``.

    Returns
    -------
    numpy.ndarray
        Sorted indices, as many as ``units``.

    Raises
    ------
    InvalidDataError
        Non-finite activations, a wrong length, or a pool smaller than ``units``.
    """
    mean = check_finite("mean_activation", np.asarray(mean_activation, dtype=np.float64).ravel())
    target = _check_units(units, mean.size, "units")
    excluded = _check_units(np.unique(np.asarray(exclude, dtype=np.int64)), mean.size, "excluded units")
    pool = np.setdiff1d(np.arange(mean.size), np.union1d(target, excluded))
    if pool.size < target.size:
        raise InvalidDataError(f"Cannot match {target.size} units from a pool of {pool.size} (layer of {mean.size}, {excluded.size} excluded).")
    k = check_positive_int("n_neighbours", n_neighbours) if n_neighbours is not None else max(3, round(0.05 * pool.size))
    rng = np.random.default_rng(seed)
    order = np.argsort(mean[pool], kind="stable")  # the free pool by mean activation, ties by unit index
    values, free = mean[pool][order], pool[order]
    chosen = []
    for u in rng.permutation(target):
        window = min(k, values.size)
        place = _nearest_window(values, mean[u], window) + int(rng.integers(window))
        chosen.append(free[place])
        values, free = np.delete(values, place), np.delete(free, place)
    return np.sort(np.asarray(chosen, dtype=np.int64))


def _nearest_window(values: np.ndarray, target: float, k: int) -> int:
    """Start of the ``k`` consecutive entries of ascending ``values`` nearest to ``target``.

    The ``k`` values nearest to a point of a sorted array are consecutive; binary search
    over the window's start (a tie between the two ends goes to the lower value).
    """
    i = int(np.searchsorted(values, target))
    lo, hi = max(0, i - k), min(i, values.size - k)
    while lo < hi:
        mid = (lo + hi) // 2
        if target - values[mid] > values[mid + k] - target:
            lo = mid + 1
        else:
            hi = mid
    return lo


def tms(
    subject: VirtualSubject,
    layer: str,
    units: Any,
    *,
    amplitude: float = 1.0,
    sd: Any = None,
    stimuli: Any = None,
    level: Level = "channel",
    seed: int = 0,
    batch_size: int = 32,
    recalibrate: Any = None,
) -> Lesion:
    """Virtual TMS: add Gaussian noise to chosen units' activations.

    Each chosen unit gets noise ~ N(0, (amplitude * sd_unit)^2), drawn independently
    for every image and (for channels) every spatial position, from a generator seeded
    with ``seed`` each time the context is entered.

    Parameters
    ----------
    subject, layer, units, level
        As in :func:`knockout`.
    amplitude : float
        Noise SD relative to the units' activation SD (>= 0).
    sd : array, optional
        Activation SD of every channel/unit of the layer (length ``layer_size``).
    stimuli : optional
        Images on which the SD is estimated when ``sd`` is not given (per channel: SD
        over images and positions; per unit: over images).
    seed : int
    batch_size : int
    recalibrate : optional
        As in :func:`knockout` (BatchNorm statistics re-estimated on held-out images).

    Raises
    ------
    InvalidDataError
        Negative/non-finite amplitude, neither or both of ``sd`` and ``stimuli``, bad ``sd`` length.
    LayerMismatchError
        ``units`` from :func:`select_units` on another layer, network or level.
    """
    amplitude = float(amplitude)
    if not np.isfinite(amplitude) or amplitude < 0:
        raise InvalidDataError(f"amplitude must be a finite number >= 0, got {amplitude}.")
    check_option("level", level, _LEVELS)
    size = layer_size(subject, layer, level)
    _state.check_selection(units, subject, subject.resolve_layer(layer), level, size)
    if (sd is None) == (stimuli is None):
        raise InvalidDataError("Give exactly one of sd (activation SD per unit) or stimuli (to estimate it).")
    if sd is None:
        sd = activation_sd(subject.activations(stimuli, layer, batch_size=batch_size, progress=False), level)
    sd = check_finite("sd", np.asarray(sd, dtype=np.float64))
    if sd.shape != (size,):
        raise InvalidDataError(f"sd has shape {sd.shape}; the layer has {size} {level}s.")
    return _TMS(subject, layer, units, level, seed, amplitude, sd, recalibrate, batch_size)


def activation_sd(activations: xr.DataArray, level: Level = "channel") -> np.ndarray:
    """SD of each channel (over images and positions) or unit (over images) of a layer's activations.

    The ``sd`` argument of :func:`tms`.
    """
    check_option("level", level, _LEVELS)
    act = np.asarray(activations.values, dtype=np.float64)
    values = np.moveaxis(act, 1, 0).reshape(act.shape[1], -1) if level == "channel" else act.reshape(act.shape[0], -1).T
    return values.std(axis=1, ddof=1)


class _SynapseKnockout(Lesion):
    kind = "synapse_knockout"

    def __init__(self, subject, layer, fraction: float, units: Any, include_bias: bool, seed: int,
                 recalibrate: Any = None, batch_size: int = 32) -> None:
        super().__init__(subject, layer, seed, recalibrate, batch_size)
        self.fraction = check_fraction("fraction", fraction)
        self.include_bias = bool(include_bias)
        module = subject.module(layer)
        targets = [m for m in module.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
        if not targets:
            raise InvalidDataError(f"Layer {self.layer!r} ({type(module).__name__}) has no convolution or linear weights to knock out.")
        rows: np.ndarray | None = None
        if units is not None:
            targets = targets[-1:]
            _state.check_selection(units, subject, self.layer, "channel", targets[0].weight.shape[0])
            rows = _check_units(units, targets[0].weight.shape[0], "output channels")
        self._targets = targets
        self.units = rows
        self.params: list[torch.Tensor] = []
        for m in targets:
            self.params.append(m.weight)
            if self.include_bias and m.bias is not None:
                self.params.append(m.bias)
        self._candidates = [self._rows(p, rows) for p in self.params]
        self.n_candidates = int(sum(c.numel() for c in self._candidates))
        self.n_zeroed = int(round(self.fraction * self.n_candidates))

    @staticmethod
    def _rows(param: torch.Tensor, rows: np.ndarray | None) -> torch.Tensor:
        per_row = int(np.prod(param.shape[1:])) if param.ndim > 1 else 1
        if rows is None:
            return torch.arange(param.numel())
        r = torch.as_tensor(rows)
        return (r[:, None] * per_row + torch.arange(per_row)[None]).reshape(-1)

    def attrs(self) -> dict[str, Any]:
        return {
            **super().attrs(), "lesion_fraction": self.fraction, "lesion_n_weights": self.n_candidates,
            "lesion_n_zeroed": self.n_zeroed, "lesion_include_bias": int(self.include_bias),
            "lesion_units": "all" if self.units is None else ",".join(map(str, self.units.tolist())),
        }

    def _anchor(self) -> nn.Module:
        return self._targets[0]

    def _apply(self) -> None:
        generator = torch_generator(self.seed)
        chosen = torch.randperm(self.n_candidates, generator=generator)[: self.n_zeroed]
        mask = torch.zeros(self.n_candidates, dtype=torch.bool)
        mask[chosen] = True
        try:
            start = 0
            for param, cand in zip(self.params, self._candidates):
                _state.zero_weights(param, self, cand[mask[start : start + cand.numel()]])
                start += cand.numel()
        except BaseException:
            self._remove()
            raise

    def _remove(self) -> None:
        # Each parameter is recomputed from its pristine copy and the lesions still
        # active, so contexts on the same weights can be left in any order.
        for param in self.params:
            _state.release_weights(param, self)


def synapse_knockout(
    subject: VirtualSubject,
    layer: str,
    fraction: float,
    *,
    units: Any = None,
    include_bias: bool = False,
    seed: int = 0,
    recalibrate: Any = None,
    batch_size: int = 32,
) -> Lesion:
    """Synapse knockout: set a random fraction of the weights into ``layer`` to 0.

    The weights are those of the layer's module if it is a convolution/linear layer,
    otherwise of every convolution/linear module inside it (e.g. all convolutions of a
    block), pooled. With ``units``, only the weights into those output channels of the
    last such module (the one writing the layer's channels) are candidates. Exactly
    ``round(fraction * n_candidates)`` weights, drawn uniformly with a generator seeded
    by ``seed``, are zeroed on entry. On exit each parameter is recomputed from its
    pristine copy and the synapse knockouts still active (so overlapping knockouts may
    be left in any order); when none is left it is bit-identical to the original (also
    after an exception).

    Parameters
    ----------
    subject : VirtualSubject
    layer : str
    fraction : float
        In [0, 1].
    units : sequence of int, optional
        Output channels whose incoming weights are candidates.
    include_bias : bool
        Also make the biases (of the same rows) candidates.
    seed : int
    recalibrate : optional
        As in :func:`knockout` (BatchNorm statistics re-estimated on held-out images).
        For a synapse knockout, the BN modules after the first knocked-out convolution
        (e.g. the BN right after it inside a block) are recalibrated.
    batch_size : int
        Batch size of the recalibration passes.

    Raises
    ------
    InvalidDataError
        Fraction outside [0, 1], units out of range, a layer without weights.
    LayerMismatchError
        ``units`` from :func:`select_units` on another layer, network or level.
    """
    return _SynapseKnockout(subject, layer, fraction, units, include_bias, seed, recalibrate, batch_size)


def _tms_copy(subject: VirtualSubject, layer: str, units: Any, **kwargs: Any) -> Lesion:
    return tms(subject, layer, units, **kwargs)


_LESIONS: dict[str, Callable[..., Lesion]] = {
    "knockout": knockout,
    "synapse_knockout": synapse_knockout,
    "tms": _tms_copy,
    "sham": sham,
}


def lesioned_copy(subject: VirtualSubject, kind: str, layer: str, *args: Any, **kwargs: Any) -> VirtualSubject:
    """Return a new subject (deep copy) with a lesion applied permanently; ``subject`` is untouched.

    Parameters
    ----------
    subject : VirtualSubject
    kind : {"knockout", "synapse_knockout", "tms", "sham"}
    layer : str
    *args, **kwargs
        The lesion function's remaining arguments (e.g. ``units``, ``fraction``).

    Returns
    -------
    VirtualSubject
        The copy; for a synapse knockout its ``weights_id`` is the sha256 of the lesioned weights.

    Examples
    --------
    >>> lesioned = lesioned_copy(subject, "knockout", "conv3", [1, 2])  # doctest: +SKIP
    """
    check_option("lesion kind", kind, _LESIONS)
    new = copy.deepcopy(subject)
    lesion = _LESIONS[kind](new, layer, *args, **kwargs)
    lesion.__enter__()
    new.weights_id = state_dict_sha256(new.model)
    new.lesion = lesion.attrs()
    return new


def active_lesions(subject: VirtualSubject) -> list[Lesion]:
    """Return the neurocnn lesions currently entered on ``subject`` (outermost first).

    The same as ``list(subject.lesions)``: the subject keeps its active lesions.
    """
    return list(subject.lesions)
