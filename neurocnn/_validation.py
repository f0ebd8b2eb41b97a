"""Input validation helpers shared by all modules (private)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import numpy as np

from .exceptions import IndexOutOfRangeError, InvalidDataError, UnknownNameError

__all__: list[str] = []


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
    valid = list(valid)
    if isinstance(value, str) and value in valid:
        return value
    close = difflib.get_close_matches(str(value), valid, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    shown = ", ".join(repr(v) for v in valid[:60])
    if len(valid) > 60:
        shown += f", ... ({len(valid)} in all)"
    raise UnknownNameError(f"Unknown {kind} {value!r}.{hint} Valid choices: {shown}.")


def check_fraction(name: str, value: float) -> float:
    """Return ``value`` as float if it lies in [0, 1]; raise ``InvalidDataError`` otherwise."""
    value = float(value)
    if not np.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidDataError(f"{name} must be a fraction in [0, 1], got {value}.")
    return value


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` as int if it is a positive integer; raise ``InvalidDataError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidDataError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


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
