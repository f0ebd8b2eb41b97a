"""Encoding responses from and results back to NIfTI (via nilearn maskers), and figures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from .._validation import check_option
from ..exceptions import ShapeMismatchError

__all__ = ["plot_encoding_map", "plot_layer_roi", "responses_from_nifti", "to_nifti"]


def _masker(mask: Any):
    from nilearn.maskers import NiftiMasker

    return NiftiMasker(mask_img=mask, standardize=None).fit()


def responses_from_nifti(img: Any, mask: Any, *, stimulus_ids: Sequence[str], runs: Sequence | None = None,
                         repeat: Sequence | None = None) -> xr.DataArray:
    """Turn a 4D NIfTI (one volume per stimulus or per stimulus repeat) into encoding responses.

    Parameters
    ----------
    img : path or Nifti1Image
        4D image, one volume per entry of ``stimulus_ids`` (e.g. GLM betas).
    mask : path or Nifti1Image
        3D brain/ROI mask; its voxels become the targets (dim ``voxel``, with ``i``,
        ``j``, ``k`` voxel coordinates).
    stimulus_ids : sequence of str
        The stimulus of each volume.
    runs : sequence, optional
        Run/session of each volume, kept as a ``run`` coordinate (folds are grouped by it).
    repeat : sequence of int, optional
        Repeat index of each volume: volumes of the same stimulus become a ``repeat``
        dim (each stimulus needs the same number of repeats).

    Returns
    -------
    xarray.DataArray
        (stimulus, voxel) or (stimulus, repeat, voxel).

    Raises
    ------
    ShapeMismatchError
        Number of ids/runs differs from the number of volumes, or unequal repeats.
    """
    import nibabel as nib
    from nilearn.image import load_img

    img = load_img(img)
    if img.ndim != 4:
        raise ShapeMismatchError(f"img must be 4D (one volume per stimulus); got {img.ndim}D with shape {img.shape}.")
    masker = _masker(mask)
    values = masker.transform(img)
    ids = np.asarray(stimulus_ids).astype(str)
    if ids.shape != (values.shape[0],):
        raise ShapeMismatchError(f"img has {values.shape[0]} volumes but {ids.size} stimulus ids were given.")
    mask_data = np.asarray(nib.load(masker.mask_img_.get_filename()).dataobj) if isinstance(mask, str) else \
        np.asarray(masker.mask_img_.get_fdata())
    ijk = np.argwhere(mask_data > 0)
    coords = {"i": ("voxel", ijk[:, 0]), "j": ("voxel", ijk[:, 1]), "k": ("voxel", ijk[:, 2]),
              "voxel": np.arange(values.shape[1])}
    if repeat is None:
        arr = xr.DataArray(values, dims=("stimulus", "voxel"), coords={"stimulus": ids, **coords})
        if runs is not None:
            runs = np.asarray(runs)
            if runs.shape != ids.shape:
                raise ShapeMismatchError(f"runs has {runs.size} entries for {ids.size} volumes.")
            arr = arr.assign_coords(run=("stimulus", runs))
        return arr
    rep = np.asarray(repeat)
    unique = list(dict.fromkeys(ids))
    counts = {sid: int((ids == sid).sum()) for sid in unique}
    if rep.shape != ids.shape or len(set(counts.values())) != 1:
        raise ShapeMismatchError(f"Every stimulus needs the same number of repeats; got counts {dict(list(counts.items())[:5])}.")
    n_rep = next(iter(counts.values()))
    out = np.empty((len(unique), n_rep, values.shape[1]))
    for s, sid in enumerate(unique):
        rows = np.flatnonzero(ids == sid)
        out[s] = values[rows[np.argsort(rep[rows], kind="stable")]]
    return xr.DataArray(out, dims=("stimulus", "repeat", "voxel"),
                        coords={"stimulus": unique, "repeat": np.arange(n_rep), **coords})


def to_nifti(result: xr.Dataset, mask: Any, *, var: str = "r2", layer: str | None = None) -> Any:
    """Map a per-voxel encoding variable back into a NIfTI image through ``mask``.

    Parameters
    ----------
    result : xarray.Dataset
        From :func:`fit_encoding` on responses from :func:`responses_from_nifti` with the same mask.
    mask : path or Nifti1Image
    var : str
        A per-target variable (``r2``, ``correlation``, ``r2_normalized``, ``p_fwe``,
        ``best_r2``, ``banded_r2``, ...). ``best_layer`` maps to the layer's index.
    layer : str, optional
        Layer of a (layer, voxel) variable (default: the first).

    Returns
    -------
    nibabel.Nifti1Image
    """
    dim = str(result.attrs["target_dim"])
    valid = [k for k, v in result.data_vars.items() if dim in v.dims and set(v.dims) <= {"layer", dim}]
    check_option("variable", var, valid)
    values = result[var]
    if "layer" in values.dims:
        check_option("layer", layer or str(result.layer.values[0]), [str(v) for v in result.layer.values])
        values = values.sel(layer=layer or result.layer.values[0])
    values = np.asarray(values.values)
    if values.dtype.kind in "US":
        lookup = {str(name): i for i, name in enumerate(result.layer.values)}
        values = np.array([lookup[str(v)] for v in values], dtype=np.float64)
    masker = _masker(mask)
    n_mask = int(np.asarray(masker.mask_img_.get_fdata()).astype(bool).sum())
    if n_mask != values.size:
        raise ShapeMismatchError(f"mask has {n_mask} voxels but the result has {values.size} targets; use the fitting mask.")
    from nilearn.image import index_img

    img = masker.inverse_transform(values.astype(np.float64)[None, :])
    return index_img(img, 0) if len(img.shape) == 4 else img


def plot_encoding_map(result: xr.Dataset, mask: Any, *, var: str = "r2", layer: str | None = None,
                      threshold: float | None = None, bg_img: Any = None, title: str | None = None, **kwargs: Any):
    """Plot a per-voxel encoding map with nilearn's ``plot_stat_map``; returns the matplotlib figure.

    ``bg_img`` is the anatomical background (default none, e.g. pass nilearn's
    ``load_mni152_template()`` for MNI-space data); other keywords go to ``plot_stat_map``.
    """
    import matplotlib.pyplot as plt
    from nilearn import plotting

    img = to_nifti(result, mask, var=var, layer=layer)
    fig = plt.figure(figsize=(9, 3))
    kwargs.setdefault("display_mode", "ortho")
    plotting.plot_stat_map(img, figure=fig, threshold=threshold, title=title or f"{var} {layer or ''}".strip(),
                           bg_img=bg_img, **kwargs)
    return fig


def plot_layer_roi(table: xr.DataArray, *, ax: Any = None, cmap: str = "viridis", title: str | None = None):
    """Heatmap of a (layer, roi) table from :func:`roi_summary` (or a CKA matrix); returns the figure."""
    import matplotlib.pyplot as plt

    if table.ndim != 2:
        raise ShapeMismatchError(f"Expected a 2-D (layer, roi) table; got dims {table.dims}.")
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.2 + 0.7 * table.shape[1], 1.0 + 0.45 * table.shape[0]))
    else:
        fig = ax.figure
    values = np.asarray(table.values, dtype=float)
    image = ax.imshow(values, cmap=cmap, aspect="auto")
    ax.set_yticks(range(table.shape[0]), [str(v) for v in table[table.dims[0]].values])
    ax.set_xticks(range(table.shape[1]), [str(v) for v in table[table.dims[1]].values], rotation=45, ha="right")
    ax.set_ylabel(table.dims[0])
    ax.set_xlabel(table.dims[1])
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < np.nanmean(values) else "k")
    fig.colorbar(image, ax=ax, label=str(table.name or table.attrs.get("variable", "")))
    ax.set_title(title or str(table.attrs.get("variable", table.name or "")))
    fig.tight_layout()
    return fig
