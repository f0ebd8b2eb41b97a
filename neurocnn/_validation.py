"""Input validation helpers shared by all modules (private)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import numpy as np

from .exceptions import IndexOutOfRangeError, InvalidDataError, UnknownNameError

__all__: list[str] = []


def plain(value: Any) -> Any:
    """``value`` with numpy scalars/arrays turned into Python objects (for messages).

    ``np.int64(1)`` -> ``1``, ``np.str_('s0')`` -> ``'s0'``, arrays -> lists, recursively
    inside lists, tuples and dicts, so no message shows a numpy repr.
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    return value


def show(value: Any) -> str:
    """``repr`` of ``value`` without numpy reprs (see :func:`plain`)."""
    return repr(plain(value))


def check_seed(seed: Any, name: str = "seed") -> int:
    """Return ``seed`` as a Python int if it is a non-negative integer; raise otherwise.

    ``None`` is refused (it would make results irreproducible): every neurocnn function
    that draws random numbers needs an explicit integer seed.

    Raises
    ------
    InvalidDataError
        ``seed`` is None, not an integer, or negative.
    """
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        why = " (None would make the result irreproducible)" if seed is None else ""
        raise InvalidDataError(
            f"{name} must be a non-negative integer{why}, got {show(seed)} of type "
            f"{type(seed).__name__}. Pass e.g. {name}=0 and record it."
        )
    return int(seed)


def check_device(device: Any) -> Any:
    """Return ``device`` as a ``torch.device`` that exists on this machine.

    Raises
    ------
    UnknownNameError
        Not a device name (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``...).
    DeviceError
        A CUDA/MPS device on a machine without one (the message says what there is).
    """
    import torch

    from .exceptions import DeviceError

    if isinstance(device, torch.device):
        dev = device
    else:
        try:
            dev = torch.device(plain(device))
        except (RuntimeError, TypeError, ValueError):
            raise UnknownNameError(
                f"Unknown device {show(device)}. Valid: 'cpu', 'cuda', 'cuda:<index>', 'mps'."
            ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {str(dev)!r} was requested but CUDA is not available on this machine "
                "(no NVIDIA GPU, driver, or a CPU-only torch build). Use device='cpu' "
                "(CLI: --device cpu)."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {str(dev)!r} was requested but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 ... cuda:"
                f"{torch.cuda.device_count() - 1}). Choose one of them."
            )
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise DeviceError("device 'mps' was requested but Apple MPS is not available here. Use device='cpu'.")
    return dev


def numpy_rng(seed: Any, name: str = "seed") -> np.random.Generator:
    """``numpy.random.default_rng`` of a checked seed (see :func:`check_seed`)."""
    return np.random.default_rng(check_seed(seed, name))


def torch_generator(seed: Any, device: Any = None, name: str = "seed") -> Any:
    """A seeded ``torch.Generator`` (on ``device``) of a checked seed (see :func:`check_seed`)."""
    import torch

    gen = torch.Generator() if device is None else torch.Generator(device=device)
    return gen.manual_seed(check_seed(seed, name))


def check_option(kind: str, value: Any, valid: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``valid``; otherwise raise with the closest match.

    Parameters
    ----------
    kind : str
        What is being chosen, e.g. ``"layer"`` or ``"metric"`` (used in the message).
    value : str
        The name the user gave.
    valid : iterable of str
        The accepted names.

    Raises
    ------
    UnknownNameError
        If ``value`` is not in ``valid``. The message lists the valid names and the
        closest match.
    """
    valid = [plain(v) for v in valid]
    value = plain(value)
    if isinstance(value, str) and value in valid:
        return value
    close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    shown = ", ".join(repr(v) for v in valid[:60])
    if len(valid) > 60:
        shown += f", ... ({len(valid)} in all)"
    raise UnknownNameError(f"Unknown {kind} {value!r}.{hint} Valid choices: {shown}.")


def check_fraction(name: str, value: float) -> float:
    """Return ``value`` as float if it lies in [0, 1]; raise ``InvalidDataError`` otherwise."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InvalidDataError(f"{name} must be a fraction in [0, 1], got {show(value)}.") from None
    if not np.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidDataError(f"{name} must be a fraction in [0, 1], got {value}.")
    return value


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` as int if it is a positive integer; raise ``InvalidDataError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidDataError(f"{name} must be a positive integer, got {show(value)}.")
    return int(value)


def layer_index(names: Iterable[str], layer: Any) -> int:
    """Position of ``layer`` (a name, or an integer index) among a result's layer ``names``.

    Raises
    ------
    IndexOutOfRangeError
        An integer index outside ``0..len(names) - 1``.
    UnknownNameError
        An unknown name (with the closest match).
    """
    names = [str(n) for n in names]
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        return check_index("layer", layer, len(names))
    return names.index(check_option("layer", str(layer), names))


def check_integer(name: str, value: Any) -> int:
    """Return ``value`` as int if it is an integer (not a bool); raise ``InvalidDataError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidDataError(f"{name} must be an integer, got {value!r} ({type(value).__name__}).")
    return int(value)


def check_index(name: str, value: Any, size: int, where: str = "") -> int:
    """Return ``value`` as int if it is an integer index in ``0..size - 1``.

    Parameters
    ----------
    name : str
        What the index selects (``"channel"``, ``"unit"``, ``"class index"``, ...).
    value : int
        The index the user gave.
    size : int
        Number of valid indices.
    where : str
        What holds them, for the message (e.g. ``"layer 'conv3' (output shape (384, 13, 13))"``).

    Raises
    ------
    IndexOutOfRangeError
        If ``value`` is not an integer or lies outside ``0..size - 1`` (one exception for
        every out-of-range index in neurocnn).
    """
    inside = f" of {where}" if where else ""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < size:
        raise IndexOutOfRangeError(
            f"{name}={value!r} is out of range{inside}: valid {name}s are 0..{size - 1}."
        )
    return int(value)


def check_finite(name: str, array: np.ndarray) -> np.ndarray:
    """Raise ``InvalidDataError`` naming the first bad index if ``array`` has NaN or inf."""
    array = np.asarray(array)
    if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))
        raise InvalidDataError(
            f"{name} contains {len(bad)} NaN/inf value(s), first at index {tuple(bad[0])}. "
            "Remove or impute them before calling this function."
        )
    return array


def default_ids(n: int) -> np.ndarray:
    """The one default-id rule: stimuli without ids are named by position, ``"0"``, ``"1"`` ...

    Parameters
    ----------
    n : int
        Number of stimuli.

    Returns
    -------
    ndarray of str
    """
    return np.arange(n).astype(str)
