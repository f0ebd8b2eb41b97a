"""Exceptions raised by neurocnn.

Every error a user can cause derives from :class:`NeurocnnError` and from the
built-in exception that fits (``ValueError``, ``FileNotFoundError``, ...), so
``except ValueError`` keeps working for callers that do not know neurocnn.
"""

from __future__ import annotations

__all__ = [
    "NeurocnnError",
    "UnknownNameError",
    "StimulusError",
    "ShapeMismatchError",
    "InvalidDataError",
    "IntegrityError",
    "MissingFileError",
    "OverwriteError",
    "NoSelectiveUnitsError",
    "AnalysisFailedError",
    "LayerMismatchError",
]


class NeurocnnError(Exception):
    """Base class of all neurocnn errors."""


class UnknownNameError(NeurocnnError, ValueError):
    """A name (model, layer, metric, method, stimulus set, ...) is not known."""


class StimulusError(NeurocnnError, ValueError):
    """Stimuli cannot be read or do not fit the request (empty folder, bad file, ...)."""


class ShapeMismatchError(NeurocnnError, ValueError):
    """Arrays, RDMs or images have incompatible shapes, sizes or stimulus ids."""


class InvalidDataError(NeurocnnError, ValueError):
    """Values are unusable: NaN/inf, constant patterns, non-symmetric RDMs, out of range."""


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


class LayerMismatchError(NeurocnnError, ValueError):
    """Units selected in one layer (or network, or level) are used for another."""
