"""Haxby et al. (2001), subject 1 as packaged by PyMVPA: per-run category patterns."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from .._validation import check_option
from ..exceptions import MissingFileError, ShapeMismatchError
from ..io import load_nifti
from ._fetch import fetch_dataset

if TYPE_CHECKING:
    from ..searchlight import Volume

__all__ = ["HAXBY_LABELS", "haxby_category_patterns"]

#: PyMVPA's label codes (``attributes.txt``): index = code.
HAXBY_LABELS = ("rest", "face", "house", "shoe", "cat", "scissors", "scrambledpix", "bottle", "chair")


def haxby_category_patterns(root: str | os.PathLike | None = None, *, lag: int = 2,
                            categories: Sequence[str] | None = None) -> Volume:
    """Per-run category response patterns of Haxby et al. (2001), PyMVPA's single slice.

    For every run (chunk) and category, the mean of the volumes labelled with that
    category, the labels shifted by ``lag`` volumes (haemodynamic delay, TR 2.5 s)
    within the run, minus the run's mean volume (per voxel).

    Parameters
    ----------
    root : path, optional
        Folder with ``bold.nii.gz``, ``attributes.txt``, ``mask.nii.gz`` (default:
        ``neurocnn.datasets.fetch_dataset("haxby2001")``).
    lag : int
        Label shift in volumes.
    categories : sequence of str, optional
        Categories to keep (default: the 8 non-rest categories).

    Returns
    -------
    neurocnn.searchlight.Volume
        ``img`` 4-D image ``(40, 20, 1, n_runs * n_categories)``, the PyMVPA ``mask``,
        ``stimulus_ids`` (the category of each volume; runs repeat the ids, which
        :func:`neurocnn.searchlight.searchlight` averages).

    Raises
    ------
    MissingFileError
        The data are not available.
    UnknownNameError
        Unknown category.

    Examples
    --------
    >>> vol = haxby_category_patterns()  # doctest: +SKIP
    """
    from ..searchlight import Volume

    if root is None:
        root = fetch_dataset("haxby2001")
    root = pathlib.Path(root)
    cats = list(HAXBY_LABELS[1:]) if categories is None else [check_option("category", c, HAXBY_LABELS[1:]) for c in categories]
    bold = load_nifti(root / "bold.nii.gz", "bold")
    attr_path = root / "attributes.txt"
    if not attr_path.exists():
        raise MissingFileError(f"{str(attr_path)!r} does not exist.")
    attrs = np.loadtxt(attr_path, dtype=int)
    labels, runs = attrs[:, 0], attrs[:, 1]
    data = np.asarray(bold.dataobj, dtype=np.float64)
    if data.shape[-1] != len(labels):
        raise ShapeMismatchError(f"{data.shape[-1]} volumes but {len(labels)} label rows.")
    shifted = np.full_like(labels, -1)
    for run in np.unique(runs):
        idx = np.flatnonzero(runs == run)
        shifted[idx[lag:]] = labels[idx[: len(idx) - lag]] if lag else labels[idx]
    vols, ids = [], []
    for run in np.unique(runs):
        in_run = runs == run
        base = data[..., in_run].mean(-1)
        for c in cats:
            sel = in_run & (shifted == HAXBY_LABELS.index(c))
            if sel.any():
                vols.append(data[..., sel].mean(-1) - base)
                ids.append(c)
    img = nib.Nifti1Image(np.stack(vols, -1).astype(np.float32), bold.affine)
    return Volume(img, load_nifti(root / "mask.nii.gz", "mask"), np.array(ids))
