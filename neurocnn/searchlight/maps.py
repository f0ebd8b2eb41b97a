"""Searchlight results as NIfTI maps, saved folders and nilearn plots."""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Callable
from typing import Any

import nibabel as nib
import numpy as np
import xarray as xr

from .._validation import check_option, layer_index


# ------------------------------------------------------------------- output
def to_nifti(result: xr.Dataset, layer: str | int = 0, *, var: str = "correlation",
             fill_value: float = 0.0) -> nib.Nifti1Image:
    """One layer's searchlight map as a 3-D NIfTI image on the data's grid.

    Parameters
    ----------
    result : xr.Dataset
        Output of :func:`searchlight`.
    layer : str or int
        Layer name or position.
    var : str
        Variable with dims (layer, voxel): ``correlation``, ``p_fwe``...
    fill_value : float
        Value outside the mask and at centres without a value (NaN).

    Returns
    -------
    nibabel.Nifti1Image
        float32 image, same shape and affine as the searchlight's data.

    Raises
    ------
    UnknownNameError
        Unknown layer or variable.

    Examples
    --------
    >>> img = to_nifti(res, "stage4")  # doctest: +SKIP
    """
    check_option("variable", var, [v for v in result.data_vars if result[v].dims == ("layer", "voxel")])
    li = layer_index(result["layer"].values, layer)
    shape = tuple(int(s) for s in np.ravel(result.attrs["shape"]))
    affine = np.asarray(result.attrs["affine"], dtype=np.float64).reshape(4, 4)
    vol = np.full(shape, fill_value, np.float32)
    values = np.asarray(result[var].values[li], np.float64)
    values = np.where(np.isfinite(values), values, fill_value)
    vol[result["i"].values, result["j"].values, result["k"].values] = values
    img = nib.Nifti1Image(vol, affine)
    img.header["descrip"] = f"neurocnn searchlight {var} {result['layer'].values[li]}"[:79].encode()
    return img


def save_maps(result: xr.Dataset, out: str | os.PathLike, *, var: str = "correlation",
              overwrite: bool = False) -> list[pathlib.Path]:
    """Write one NIfTI per layer (``searchlight_<var>_<layer>.nii.gz``) into ``out``.

    Parameters
    ----------
    result : xr.Dataset
        Output of :func:`searchlight`.
    out : path
        Folder (created if needed).
    var : str
        Variable to write (see :func:`to_nifti`).
    overwrite : bool
        Replace existing map files that neurocnn wrote (never a user's file).

    Returns
    -------
    list of Path

    Raises
    ------
    OverwriteError
        A file exists and ``overwrite`` is False, or it is not neurocnn's (all files are
        checked before any is written; each is written atomically).

    Examples
    --------
    >>> save_maps(res, "maps")  # doctest: +SKIP
    """
    from ..io import atomic_output, check_writable, make_output_dir

    out = pathlib.Path(out)
    names = ["".join(c if c.isalnum() or c in "-_." else "_" for c in str(n)) for n in result["layer"].values]
    paths = [out / f"searchlight_{var}_{safe}.nii.gz" for safe in names]
    for path in paths:  # all checked before anything is written
        check_writable(path, overwrite=overwrite)
    make_output_dir(out, kind="searchlight maps")
    for li, path in enumerate(paths):
        image = to_nifti(result, li, var=var)
        with atomic_output(path, overwrite=overwrite, kind="nifti") as tmp:
            image.to_filename(tmp)
    return paths


def _plot_stat_map(img, fig, title, threshold, vmax, bg_img, **kwargs):
    from nilearn import plotting

    plotting.plot_stat_map(img, bg_img=bg_img, figure=fig, title=title, threshold=threshold,
                           vmax=vmax, display_mode=kwargs.pop("display_mode", "ortho"),
                           cut_coords=kwargs.pop("cut_coords", None), **kwargs)


def _plot_glass_brain(img, fig, title, threshold, vmax, bg_img, **kwargs):
    from nilearn import plotting

    plotting.plot_glass_brain(img, figure=fig, title=title, threshold=threshold, vmax=vmax,
                              colorbar=kwargs.pop("colorbar", True), plot_abs=False,
                              display_mode=kwargs.pop("display_mode", "lyrz"), **kwargs)


def _plot_slices(img, fig, title, threshold, vmax, bg_img, **kwargs):
    vol = np.asarray(img.dataobj, np.float64)
    ks = np.flatnonzero(np.abs(vol).sum((0, 1)) > 0)
    ks = ks if len(ks) <= 12 else ks[np.linspace(0, len(ks) - 1, 12).astype(int)]
    ncols = min(4, len(ks))
    nrows = math.ceil(len(ks) / ncols)
    thr = 0.0 if threshold is None else float(threshold)
    for n, k in enumerate(ks):
        ax = fig.add_subplot(nrows, ncols, n + 1)
        sl = np.where(np.abs(vol[:, :, k]) > thr, vol[:, :, k], np.nan)
        im = ax.imshow(sl.T, origin="lower", cmap=kwargs.get("cmap", "RdBu_r"), vmin=-vmax, vmax=vmax)
        ax.set_title(f"k={k}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=fig.axes, shrink=0.8)
    fig.suptitle(title)


_PLOTS: dict[str, Callable[..., None]] = {
    "stat_map": _plot_stat_map,
    "glass_brain": _plot_glass_brain,
    "slices": _plot_slices,
}


def plot_searchlight(result: xr.Dataset, layer: str | int = 0, *, kind: str = "stat_map",
                     var: str = "correlation", threshold: float | None = None,
                     vmax: float | None = None, bg_img: Any = None, title: str | None = None,
                     figsize: tuple[float, float] = (9.0, 3.5), **kwargs: Any):
    """Plot one layer's searchlight map with nilearn (on the MNI152 template).

    Parameters
    ----------
    result : xr.Dataset
        Output of :func:`searchlight`.
    layer : str or int
        Layer name or position.
    kind : {"stat_map", "glass_brain", "slices"}
        ``nilearn.plotting.plot_stat_map`` on ``bg_img``, ``plot_glass_brain``, or a
        matplotlib montage of axial slices in voxel space (for data not in MNI space,
        e.g. a single slice).
    var : str
        Variable to show (see :func:`to_nifti`).
    threshold : float, optional
        Hide values with smaller magnitude.
    vmax : float, optional
        Colour scale limit (default: the largest magnitude).
    bg_img : image, optional
        Background for ``stat_map`` (default: nilearn's MNI152 template, 2 mm).
    title : str, optional
        Default: ``"<layer> (<var>)"``.
    figsize : (float, float)
        Figure size in inches.
    **kwargs
        Passed to the nilearn function.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    UnknownNameError
        Unknown kind, layer or variable.

    Examples
    --------
    >>> fig = plot_searchlight(res, "stage4", kind="glass_brain")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    check_option("kind", kind, _PLOTS)
    img = to_nifti(result, layer, var=var)
    li = layer_index(result["layer"].values, layer)
    values = np.abs(np.asarray(img.dataobj))
    vmax = float(vmax) if vmax is not None else float(max(values.max(), 1e-6))
    if kind == "stat_map" and bg_img is None:
        from nilearn import datasets

        bg_img = datasets.load_mni152_template(resolution=2)
    title = title if title is not None else f"{result['layer'].values[li]} ({var})"
    fig = plt.figure(figsize=figsize)
    _PLOTS[kind](img, fig, title, threshold, vmax, bg_img, **kwargs)
    return fig


