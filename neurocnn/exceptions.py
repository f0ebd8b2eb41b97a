"""Exceptions raised by neurocnn.

Every error a user can cause derives from :class:`NeurocnnError` and from the
built-in exception that fits (``ValueError``, ``FileNotFoundError``, ...), so
``except ValueError`` keeps working for callers that do not know neurocnn.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])

__all__ = [
    "NeurocnnError",
    "UnknownNameError",
    "StimulusError",
    "ShapeMismatchError",
    "InvalidDataError",
    "IndexOutOfRangeError",
    "IntegrityError",
    "MissingFileError",
    "OverwriteError",
    "NoSelectiveUnitsError",
    "AnalysisFailedError",
    "RegistrationError",
    "UnreadableFileError",
    "NotWritableError",
    "DeviceError",
    "foreign_errors",
    "LayerMismatchError",
]


_NUMPY_REPR = re.compile(r"\bnp\.(?:str_|bytes_|bool_?|u?int(?:8|16|32|64|c|p)?|float(?:16|32|64|128)?|"
                         r"longdouble|complex(?:64|128)?|datetime64|timedelta64)\(([^()]*)\)")


def _unnumpy(message: str) -> str:
    """``np.int64(1)`` -> ``1``, ``np.str_('s0')`` -> ``'s0'`` (numpy >= 2 scalar reprs)."""
    return _NUMPY_REPR.sub(r"\1", message)


class NeurocnnError(Exception):
    """Base class of all neurocnn errors.

    Messages never show numpy scalar reprs: ``np.int64(1)`` is shown as ``1`` and
    ``np.str_('s0')`` as ``'s0'``, whatever formatted the message.
    """

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], str):
            args = (_unnumpy(args[0]), *args[1:])
        super().__init__(*args)


class UnknownNameError(NeurocnnError, ValueError):
    """A name (model, layer, metric, method, stimulus set, ...) is not known."""


class StimulusError(NeurocnnError, ValueError):
    """Stimuli cannot be read or do not fit the request (empty folder, bad file, ...)."""


class ShapeMismatchError(NeurocnnError, ValueError):
    """Arrays, RDMs or images have incompatible shapes, sizes or stimulus ids."""


class InvalidDataError(NeurocnnError, ValueError):
    """Values are unusable: NaN/inf, constant patterns, non-symmetric RDMs, out of range."""


class IndexOutOfRangeError(UnknownNameError, InvalidDataError, IndexError):
    """An index (channel, unit, position, class) outside the valid range ``0..n-1``.

    Also an ``UnknownNameError`` (the index names no unit), an ``InvalidDataError`` and
    an ``IndexError``, so code that caught any of those keeps working.
    """


class IntegrityError(NeurocnnError, ValueError):
    """A file's sha256 does not match its manifest; the file is never used."""


class MissingFileError(NeurocnnError, FileNotFoundError):
    """A data or weight file is not available locally and cannot be downloaded."""


class OverwriteError(NeurocnnError, FileExistsError):
    """Writing would overwrite an existing file; pass ``overwrite=True`` to allow it."""


class NoSelectiveUnitsError(NeurocnnError, ValueError):
    """No unit passes the selectivity criterion at the chosen threshold."""


class AnalysisFailedError(NeurocnnError, RuntimeError):
    """An analysis script (``analyses/*.py``) failed or left no result the paper needs."""


class RegistrationError(NeurocnnError, ValueError):
    """A model cannot be registered: its name is taken or invalid, or its spec is malformed."""


class UnreadableFileError(NeurocnnError, ValueError):
    """A file exists but cannot be parsed (corrupt, truncated, or another format)."""


class NotWritableError(NeurocnnError, PermissionError):
    """An output path cannot be written (permissions, read-only disk, a file in the way)."""


class DeviceError(NeurocnnError, RuntimeError):
    """The requested compute device (e.g. ``"cuda"``) is not available on this machine."""


class LayerMismatchError(NeurocnnError, ValueError):
    """Units selected in one layer (or network, or level) are used for another."""


def _plain(text: object) -> str:
    """First line of a foreign error message, without torch's ``weights_only`` lecture."""
    line = str(text).strip().splitlines()[0] if str(text).strip() else type(text).__name__
    return line[:300]


def _translate(err: BaseException, what: str, mode: str = "write") -> NeurocnnError | None:
    """The neurocnn error for a foreign exception ``err`` raised while doing ``what``.

    ``mode="read"``: parsing a file, where any other failure means the file is unreadable.
    """
    if isinstance(err, BrokenPipeError):  # a closed pipe is not an error of the user's
        return None
    name = type(err).__name__
    module = type(err).__module__ or ""
    if name == "DecompressionBombError" or (name == "DecompressionBombWarning"):
        return StimulusError(
            f"{what}: the image is too large to open safely ({_plain(err)}). Downscale it (e.g. "
            "to at most a few thousand pixels per side) before using it as a stimulus; "
            "networks see 224 x 224 px anyway."
        )
    if isinstance(err, PermissionError):
        return NotWritableError(
            f"{what}: permission denied for {getattr(err, 'filename', None) or 'the path'}. "
            "Choose a folder you can write to (e.g. under your home directory) or fix its permissions."
        )
    if isinstance(err, FileNotFoundError):
        return MissingFileError(f"{what}: {getattr(err, 'filename', None) or _plain(err)} does not exist.")
    if isinstance(err, (IsADirectoryError, NotADirectoryError, FileExistsError)):
        return NotWritableError(
            f"{what}: {getattr(err, 'filename', None) or 'the path'} is in the way ({_plain(err)}). "
            "Choose another path."
        )
    if module.startswith("h5py") or name in ("UnpicklingError", "BadZipFile", "MatReadError", "EOFError"):
        return UnreadableFileError(
            f"{what}: the file is corrupt, truncated or not in the expected format ({_plain(err)})."
        )
    if mode == "read" and not isinstance(err, (MemoryError, RecursionError)):
        return UnreadableFileError(
            f"{what}: the file is corrupt, truncated or not in the expected format "
            f"({type(err).__name__}: {_plain(err)}). Re-create or re-download it."
        )
    if isinstance(err, OSError):
        return NotWritableError(f"{what}: the operating system refused it ({_plain(err)}).")
    return None


@contextlib.contextmanager
def _foreign_errors_cm(what: str, kinds: tuple[type[BaseException], ...], mode: str) -> Iterator[None]:
    try:
        yield
    except NeurocnnError:
        raise
    except kinds as err:
        new = _translate(err, what, mode)
        if new is None:
            raise
        raise new from err


class foreign_errors:  # noqa: N801 - used like a function (context manager and decorator)
    """Turn foreign exceptions (OS, PIL, h5py, torch unpickling) into neurocnn errors.

    The one place where errors of other libraries become :class:`NeurocnnError` with
    advice; used at neurocnn's I/O boundaries. Exceptions that are already neurocnn
    errors, and foreign exceptions with no known meaning, pass through unchanged.

    Parameters
    ----------
    what : str
        What was being done, e.g. ``"reading weights file w.pt"`` (starts the message).
    kinds : tuple of exception types
        The exceptions to translate (default: ``Exception``).
    mode : {"write", "read"}
        ``"read"`` where a file is parsed: any foreign failure then means the file is
        unreadable (:class:`UnreadableFileError`).

    Examples
    --------
    >>> with foreign_errors("writing results.nc"):  # doctest: +SKIP
    ...     ds.to_netcdf("results.nc")
    """

    def __init__(self, what: str, kinds: tuple[type[BaseException], ...] = (Exception,), *,
                 mode: str = "write") -> None:
        self.what, self.kinds, self.mode = what, kinds, mode
        self._cm: Any = None

    def __enter__(self) -> None:
        self._cm = _foreign_errors_cm(self.what, self.kinds, self.mode)
        self._cm.__enter__()

    def __exit__(self, *exc: Any) -> bool:
        return bool(self._cm.__exit__(*exc))

    def __call__(self, func: _F) -> _F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with foreign_errors(self.what, self.kinds, mode=self.mode):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]
