"""Bookkeeping that makes lesions safe in any exit order (private, shared by lesions and tasks).

Two kinds of state are changed in place by lesions:

- **weights** (synapse knockout): every lesioned parameter gets one pristine copy,
  taken when the first lesion touches it, and a ledger of the index sets that the
  active lesions zero. Entering or leaving any lesion recomputes the parameter from
  the pristine copy and the lesions still active, so contexts can be left in any
  order and nest freely; when the last one leaves, the pristine copy is written back
  bit-identically and dropped.
- **BatchNorm running statistics** (``recalibrate=``): the pristine buffers of the
  BN modules are saved when the first recalibrating lesion enters; after every
  enter/exit of a recalibrating lesion they are restored and, while recalibrating
  lesions remain, re-estimated under all lesions then active (BN modules that run
  after the earliest such lesion; images of the most recent one).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
import xarray as xr
from torch import nn

from .exceptions import InvalidDataError, LayerMismatchError
from .stimuli import load_stimuli

__all__: list[str] = []


# ------------------------------------------------------------------ weights
@dataclass
class _Entry:
    param: weakref.ref
    pristine: torch.Tensor
    zeroed: dict[int, torch.Tensor] = field(default_factory=dict)


_LEDGER: dict[int, _Entry] = {}


def _entry(param: torch.Tensor) -> _Entry:
    entry = _LEDGER.get(id(param))
    if entry is None or entry.param() is not param:
        entry = _Entry(weakref.ref(param), param.detach().clone())
        _LEDGER[id(param)] = entry
    return entry


def _recompute(param: torch.Tensor, entry: _Entry) -> None:
    with torch.no_grad():
        param.copy_(entry.pristine)
        flat = param.view(-1)
        for idx in entry.zeroed.values():
            flat[idx.to(param.device)] = 0


def zero_weights(param: torch.Tensor, owner: object, idx: torch.Tensor) -> None:
    """Record that ``owner`` zeroes flat indices ``idx`` of ``param`` and apply all active zeroings."""
    entry = _entry(param)
    entry.zeroed[id(owner)] = idx
    _recompute(param, entry)


def release_weights(param: torch.Tensor, owner: object) -> None:
    """Undo ``owner``'s zeroing of ``param``; the others' stay. The last one restores the pristine copy."""
    entry = _LEDGER.get(id(param))
    if entry is None or entry.param() is not param:
        return
    entry.zeroed.pop(id(owner), None)
    _recompute(param, entry)
    if not entry.zeroed:
        del _LEDGER[id(param)]


def pristine_weights(param: torch.Tensor) -> torch.Tensor:
    """The parameter's value without any lesion (itself when no lesion touches it)."""
    entry = _LEDGER.get(id(param))
    return entry.pristine if entry is not None and entry.param() is param else param.detach()


# ------------------------------------------------------------------ BatchNorm statistics
_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
_BN_SAVED: weakref.WeakKeyDictionary[nn.Module, dict[nn.Module, dict[str, torch.Tensor]]] = weakref.WeakKeyDictionary()


def batchnorm_modules(model: nn.Module) -> list[nn.Module]:
    """BatchNorm modules of ``model`` that track running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def modules_after(model: nn.Module, anchor: nn.Module, candidates: list[nn.Module], probe: torch.Tensor) -> list[nn.Module]:
    """Those ``candidates`` that run after ``anchor`` has produced its output (one probe forward pass)."""
    order: list[object] = []
    handles = [anchor.register_forward_hook(lambda *_: order.append(anchor))]
    for m in candidates:
        handles.append(m.register_forward_pre_hook(lambda mod, _inp: order.append(mod)))
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for h in handles:
            h.remove()
    if anchor not in order:
        return []
    first = order.index(anchor)
    seen: list[nn.Module] = []
    for mod in order[first + 1 :]:
        if mod is not anchor and mod not in seen:
            seen.append(mod)  # type: ignore[arg-type]
    return seen


def save_batchnorm(model: nn.Module) -> None:
    """Keep the pristine BN buffers of ``model`` (once, while any recalibrating lesion is active)."""
    if model not in _BN_SAVED:
        _BN_SAVED[model] = {m: {b: getattr(m, b).detach().clone() for b in _BN_BUFFERS if getattr(m, b, None) is not None}
                            for m in batchnorm_modules(model)}


def restore_batchnorm(model: nn.Module, *, forget: bool) -> None:
    """Write the pristine BN buffers back (in place); ``forget`` drops the saved copy."""
    saved = _BN_SAVED.get(model)
    if saved is None:
        return
    with torch.no_grad():
        for m, buffers in saved.items():
            for name, value in buffers.items():
                getattr(m, name).copy_(value)
    if forget:
        del _BN_SAVED[model]


def recalibrate_batchnorm(model: nn.Module, modules: list[nn.Module], images: torch.Tensor, batch_size: int) -> None:
    """Re-estimate the running statistics of ``modules`` on ``images`` (cumulative average over batches).

    Only those BN modules are put in training mode (the rest of the model stays in
    eval mode, so dropout etc. are unaffected); modes and momenta are restored after.
    """
    if not modules:
        return
    states = [(m, m.training, m.momentum) for m in modules]
    try:
        for m in modules:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every image counts equally
            m.train()
        with torch.no_grad():
            for i in range(0, images.shape[0], batch_size):
                model(images[i : i + batch_size])
    finally:
        for m, training, momentum in states:
            m.train(training)
            m.momentum = momentum


# ------------------------------------------------------------------ lesion arguments
def check_selection(units: Any, subject: Any, layer: str, level: str, size: int) -> None:
    """Refuse a :func:`select_units` selection made in another network, layer or level."""
    if not isinstance(units, xr.DataArray):
        return
    attrs = units.attrs
    made_in = attrs.get("layer")
    if made_in is not None and made_in != layer:
        try:
            same = subject.resolve_layer(str(made_in)) == layer
        except Exception:  # noqa: BLE001 - an unknown name is a mismatch too
            same = False
        if not same:
            raise LayerMismatchError(
                f"These units were selected in layer {made_in!r} but the lesion is in layer {layer!r} "
                f"({subject.alias_of(layer) or layer}). Indices of one layer mean other units in another; "
                "run selectivity() and select_units() on the lesioned layer."
            )
    if "model" in attrs and attrs["model"] != subject.name:
        raise LayerMismatchError(
            f"These units were selected in network {attrs['model']!r}; the subject is {subject.name!r}. "
            "Select units on the subject you lesion."
        )
    if "level" in attrs and attrs["level"] != level:
        raise LayerMismatchError(
            f"These are {attrs['level']}-level indices but the lesion has level={level!r}; "
            f"pass level={attrs['level']!r} or select at level={level!r}."
        )
    if "n_total" in attrs and int(attrs["n_total"]) != size:
        raise LayerMismatchError(
            f"The selection was made among {int(attrs['n_total'])} {level}s; layer {layer!r} has {size} "
            "(another input size or network?). Select units on this subject and layer."
        )


def recalibration_images(subject: Any, recalibrate: Any) -> tuple[torch.Tensor | None, str]:
    """``recalibrate`` -> (preprocessed images or None, description)."""
    if recalibrate is None or recalibrate is False:
        return None, "none"
    if recalibrate is True:
        raise InvalidDataError(
            "recalibrate=True does not say on which images; pass held-out images (a StimulusSet, a stimulus "
            "set name, or a tensor of preprocessed network inputs) that are not the test images."
        )
    if isinstance(recalibrate, torch.Tensor):
        if recalibrate.ndim != 4:
            raise InvalidDataError(f"recalibrate as a tensor must be preprocessed images (N, C, H, W), got shape {tuple(recalibrate.shape)}.")
        images, name = recalibrate.to(subject.device), "preprocessed tensor"
    else:
        stim = load_stimuli(recalibrate)
        images, name = subject.preprocess(stim), stim.name
    if images.shape[0] < 2:
        raise InvalidDataError(f"recalibrate needs at least 2 images to estimate BatchNorm statistics, got {images.shape[0]}.")
    return images, name


def refresh_batchnorm(model: nn.Module, recal: list[Any]) -> None:
    """Put the BN statistics in the state the active recalibrating lesions ``recal`` ask for (entry order)."""
    if not recal:
        restore_batchnorm(model, forget=True)
        return
    save_batchnorm(model)
    restore_batchnorm(model, forget=False)
    candidates = batchnorm_modules(model)
    images = recal[-1].recalibration_images
    after: list[nn.Module] = []
    for les in recal:
        for m in modules_after(model, les._anchor(), candidates, images[:1]):
            if m not in after:
                after.append(m)
    recalibrate_batchnorm(model, after, images, recal[-1].batch_size)
