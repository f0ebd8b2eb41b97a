"""The installed neurocnn version, recorded in every result's provenance (private)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version

__all__ = ["version"]


def version() -> str:
    """Return the installed neurocnn version (``"0+unknown"`` when not installed)."""
    try:
        return _distribution_version("neurocnn")
    except PackageNotFoundError:
        return "0+unknown"
