"""Cluster tables, atlas labels and plots of :mod:`neurocnn.clusters` results."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.ndimage
import xarray as xr

from ._clusters import _P_VAR, CORRECTIONS, _Grid, _structure
from ._validation import check_fraction, check_option, layer_index
from .exceptions import ShapeMismatchError

__all__ = ["ATLASES", "cluster_table", "nearest_atlas_label", "plot_clusters"]


def _dosenbach() -> tuple[np.ndarray, list[str]]:
    from nilearn import datasets

    d = datasets.fetch_coords_dosenbach_2010()
    xyz = np.asarray(d["rois"][["x", "y", "z"]], np.float64)
    return xyz, [f"{lab} ({net})" for lab, net in zip(d["labels"], np.asarray(d["networks"]))]


def _seitzman() -> tuple[np.ndarray, list[str]]:
    from nilearn import datasets

    d = datasets.fetch_coords_seitzman_2018()
    xyz = np.asarray(d["rois"][["x", "y", "z"]], np.float64)
    return xyz, [f"{reg} ({net})" for reg, net in zip(np.asarray(d["regions"]), np.asarray(d["networks"]))]


# Coordinate atlases shipped inside nilearn (load offline): ROI centres in MNI mm + labels.
_ATLAS_LOADERS: dict[str, Callable[[], tuple[np.ndarray, list[str]]]] = {
    "dosenbach_2010": _dosenbach,
    "seitzman_2018": _seitzman,
}
ATLASES: tuple[str, ...] = tuple(_ATLAS_LOADERS)


@functools.lru_cache(maxsize=4)
def _atlas(name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nilearn deprecation notes about legacy_format
        xyz, labels = _ATLAS_LOADERS[name]()
    return xyz, tuple(labels)


def nearest_atlas_label(coords_mm: Any, atlas: str = "dosenbach_2010") -> tuple[list[str], np.ndarray]:
    """Label of the nearest ROI centre of a nilearn-shipped coordinate atlas (MNI mm).

    Parameters
    ----------
    coords_mm : array (n, 3) or (3,)
        MNI coordinates in mm.
    atlas : {"dosenbach_2010", "seitzman_2018"}
        Dosenbach et al. 2010 (160 ROIs, region (network)) or Seitzman et al. 2018 (300
        ROIs, anatomical class (network)); both ship inside nilearn and load offline.

    Returns
    -------
    labels : list of str
    distance_mm : ndarray (n,)
        Distance to that ROI's centre (a label far away means "nearest of the atlas",
        not "inside").

    Raises
    ------
    UnknownNameError
        Unknown atlas.
    ShapeMismatchError
        Coordinates not (n, 3).

    Examples
    --------
    >>> labels, d = nearest_atlas_label([[6, 64, 3]])
    >>> labels[0], float(d[0])
    ('vmPFC 1 (default)', 0.0)
    """
    check_option("atlas", atlas, ATLASES)
    xyz = np.atleast_2d(np.asarray(coords_mm, np.float64))
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ShapeMismatchError(f"coords_mm must be (n, 3) mm coordinates, got shape {xyz.shape}.")
    centres, labels = _atlas(atlas)
    d = np.sqrt(((xyz[:, None, :] - centres[None]) ** 2).sum(-1))
    best = d.argmin(1)
    return [labels[b] for b in best], d[np.arange(len(xyz)), best]


def _components(mask: np.ndarray, result: xr.Dataset) -> np.ndarray:
    """Connected components of a boolean map over the result's positions (voxels or time)."""
    conn = int(result.attrs.get("connectivity", 1))
    if result.attrs.get("domain") == "time":
        lab, _ = scipy.ndimage.label(mask, _structure(1, 1))
        return lab
    ijk = np.stack([result[c].values for c in ("i", "j", "k")], 1)
    grid = _Grid(ijk)
    lab, _ = scipy.ndimage.label(grid.scatter(mask[None].astype(float))[0] > 0, _structure(3, conn))
    return grid.gather(lab[None].astype(float))[0].astype(int)


def _rows(result: xr.Dataset, li: int, correction: str, alpha: float) -> list[dict[str, Any]]:
    name = str(result["layer"].values[li])
    stat = result["statistic"].values[li]
    rows = []
    if correction in ("cluster_mass", "cluster_size"):
        sel = np.flatnonzero(result["cluster_layer"].values == name)
        labels = result["cluster_id"].values[li]
        for c in sel:
            lab = int(result["cluster_label"].values[c])
            rows.append((labels == lab, float(result[f"cluster_{_P_VAR[correction]}"].values[c]),
                         float(result["cluster_mass"].values[c])))
    else:
        p = result[_P_VAR[correction]].values[li]
        comp = _components(np.nan_to_num(p, nan=1.0) < alpha, result)
        for lab in range(1, int(comp.max()) + 1 if comp.size else 1):
            members = comp == lab
            if members.any():
                rows.append((members, float(np.nanmin(p[members])), float(np.nansum(stat[members]))))
    out = []
    for members, p, mass in rows:
        v = np.flatnonzero(members)
        peak = v[np.nanargmax(np.abs(stat[v]))]
        out.append({"layer": name, "correction": correction, "size": int(len(v)), "mass": mass,
                    "p_fwe": p, "significant": bool(p < alpha), "peak_statistic": float(stat[peak]),
                    "_peak": int(peak), "_members": v})
    return out


def cluster_table(result: xr.Dataset, *, correction: str = "cluster_mass", alpha: float = 0.05,
                  atlas: str | None = "dosenbach_2010", significant_only: bool = False):
    """Table of clusters of a :mod:`neurocnn.clusters` result under one correction.

    ``cluster_mass``/``cluster_size``: every cluster above the cluster-forming threshold
    with its cluster-level p (mass: ``sum(|statistic| - threshold)``). ``voxel``/``tfce``:
    connected components of the positions with p_FWE < ``alpha`` (p: their smallest
    p_FWE; mass: the sum of the statistic over them).

    Parameters
    ----------
    result : xr.Dataset
        Output of :func:`group_searchlight_test`, :func:`searchlight_cluster_test` or
        :func:`time_cluster_test`.
    correction : {"voxel", "cluster_mass", "cluster_size", "tfce"}
        Which correction's clusters.
    alpha : float
        FWE level (``significant`` column; components for voxel/tfce).
    atlas : str or None
        Nearest-label atlas for volume results (see :func:`nearest_atlas_label`); the
        coordinates must be MNI. None: no label columns.
    significant_only : bool
        Keep only rows with p_fwe < alpha.

    Returns
    -------
    pandas.DataFrame
        Sorted by layer and p. Volume: ``size`` (voxels), ``volume_mm3``, ``mass``,
        ``p_fwe``, ``significant``, ``peak_statistic``, ``peak_x/y/z`` (mm),
        ``peak_i/j/k``, ``atlas_label``, ``atlas_distance_mm``. Time: ``start``,
        ``stop``, ``peak_time`` instead of coordinates.

    Raises
    ------
    UnknownNameError
        Unknown correction or atlas.
    ShapeMismatchError
        The correction was not computed.

    Examples
    --------
    >>> cluster_table(res, correction="tfce")  # doctest: +SKIP
    """
    import pandas as pd

    check_option("correction", correction, CORRECTIONS)
    alpha = check_fraction("alpha", alpha)
    if correction not in result.attrs.get("corrections", []):
        raise ShapeMismatchError(
            f"correction {correction!r} was not computed (the result has {result.attrs.get('corrections')}); "
            "rerun the test with corrections=(..., {correction!r})."
        )
    if atlas is not None:
        check_option("atlas", atlas, ATLASES)
    rows = [r for li in range(result.sizes["layer"]) for r in _rows(result, li, correction, alpha)]
    if significant_only:
        rows = [r for r in rows if r["significant"]]
    time = result.attrs.get("domain") == "time"
    for r in rows:
        v, members = r.pop("_peak"), r.pop("_members")
        if time:
            t = result["time"].values
            r["start"], r["stop"], r["peak_time"] = float(t[members].min()), float(t[members].max()), float(t[v])
        else:
            for c in ("x", "y", "z", "i", "j", "k"):
                r[f"peak_{c}"] = float(result[c].values[v]) if c in "xyz" else int(result[c].values[v])
    if not time:
        aff = np.asarray(result.attrs.get("affine", np.eye(4).ravel()), np.float64).reshape(4, 4)
        vox_mm3 = float(abs(np.linalg.det(aff[:3, :3])))
        for r in rows:
            r["volume_mm3"] = r["size"] * vox_mm3
        if atlas is not None and rows:
            labels, dist = nearest_atlas_label([[r["peak_x"], r["peak_y"], r["peak_z"]] for r in rows], atlas)
            for r, lab, d in zip(rows, labels, dist):
                r["atlas_label"], r["atlas_distance_mm"] = lab, float(d)
    base = ["layer", "correction", "size", "mass", "p_fwe", "significant", "peak_statistic"]
    extra = (["start", "stop", "peak_time"] if time else
             ["peak_x", "peak_y", "peak_z", "peak_i", "peak_j", "peak_k", "volume_mm3"]
             + (["atlas_label", "atlas_distance_mm"] if atlas is not None else []))
    df = pd.DataFrame(rows, columns=base + extra)
    if len(df):
        df = df.sort_values(["layer", "p_fwe", "size"], ascending=[True, True, False]).reset_index(drop=True)
    return df


def _significance(result: xr.Dataset, li: int, correction: str, alpha: float) -> np.ndarray:
    if correction not in result.attrs.get("corrections", []):
        raise ShapeMismatchError(f"correction {correction!r} was not computed (the result has "
                                 f"{result.attrs.get('corrections')}).")
    return np.nan_to_num(result[_P_VAR[correction]].values[li], nan=1.0) < alpha


def _plot_time(result, li, correction, alpha, fig, title, **kwargs):
    ax = fig.add_subplot(1, 1, 1)
    t = result["time"].values
    stat = result["statistic"].values[li]
    ax.plot(t, stat, color=kwargs.get("color", "C0"), lw=1.5)
    ax.axhline(float(result["cluster_threshold"].values[li]), color="0.5", ls="--", lw=0.8,
               label="cluster-forming threshold")
    sig = _significance(result, li, correction, alpha)
    lab, n = scipy.ndimage.label(sig)
    for c in range(1, n + 1):
        tt = t[lab == c]
        ax.axvspan(tt.min(), tt.max(), color="C1", alpha=0.3, lw=0)
    ax.set_xlabel("time")
    ax.set_ylabel(str(result.attrs.get("statistic", "statistic")))
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8, frameon=False)


def _plot_volume(result, li, correction, alpha, fig, title, kind="stat_map", **kwargs):
    import nibabel as nib
    from nilearn import datasets, plotting

    from .searchlight import to_nifti

    img = to_nifti(result, li, var="statistic")
    sig = _significance(result, li, correction, alpha)
    tmp = result[["statistic"]].copy()
    tmp["statistic"] = (("layer", "voxel"), np.zeros(result["statistic"].shape))
    tmp["statistic"].values[li] = sig.astype(float)
    mask_img = to_nifti(tmp, li, var="statistic")
    vmax = float(max(np.nanmax(np.abs(result["statistic"].values[li])), 1e-6))
    if kind == "glass_brain":
        display = plotting.plot_glass_brain(img, figure=fig, title=title, plot_abs=False, colorbar=True,
                                            vmax=vmax, **kwargs)
    else:
        display = plotting.plot_stat_map(img, bg_img=datasets.load_mni152_template(resolution=2), figure=fig,
                                         title=title, vmax=vmax, **kwargs)
    if sig.any():
        display.add_contours(nib.Nifti1Image(np.asarray(mask_img.dataobj), mask_img.affine), levels=[0.5],
                             colors="k", linewidths=1.0)


def plot_clusters(result: xr.Dataset, layer: str | int = 0, *, correction: str = "cluster_mass",
                  alpha: float = 0.05, kind: str = "stat_map", title: str | None = None,
                  figsize: tuple[float, float] = (9.0, 3.5), **kwargs: Any):
    """Plot a statistic map (nilearn, significant clusters outlined) or time course.

    Parameters
    ----------
    result : xr.Dataset
        Output of a :mod:`neurocnn.clusters` test.
    layer : str or int
        Layer name or position.
    correction : str
        Whose significant positions to outline (p_FWE < ``alpha``).
    alpha : float
        FWE level.
    kind : {"stat_map", "glass_brain"}
        Volume results: ``nilearn.plotting.plot_stat_map`` (MNI template) or
        ``plot_glass_brain``, with ``add_contours`` around significant voxels. Time
        results: ignored (a curve with significant spans shaded).
    title : str, optional
    figsize : (float, float)
    **kwargs
        Passed to the nilearn function.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    UnknownNameError
        Unknown layer, correction or kind.

    Examples
    --------
    >>> fig = plot_clusters(res, "stage4", correction="tfce")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    check_option("correction", correction, CORRECTIONS)
    check_option("kind", kind, ("stat_map", "glass_brain"))
    alpha = check_fraction("alpha", alpha)
    names = [str(v) for v in result["layer"].values]
    li = layer_index(names, layer)
    title = title if title is not None else f"{names[li]}: {correction} p_FWE < {alpha:g}"
    fig = plt.figure(figsize=figsize)
    if result.attrs.get("domain") == "time":
        _plot_time(result, li, correction, alpha, fig, title, **kwargs)
    else:
        _plot_volume(result, li, correction, alpha, fig, title, kind=kind, **kwargs)
    return fig
