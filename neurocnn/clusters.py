"""Cluster-level inference over voxels and over time: voxel-level, cluster-mass and TFCE FWE.

One N-D implementation serves brain maps (3-D, face connectivity as nilearn) and layer x
time curves (1-D): a statistic map, a permutation null (sign flips of subjects' maps, or
stimulus-label permutations of the model RDM for one subject), and family-wise error
correction by the maximum over the map of

- ``voxel``: the statistic itself (as :func:`neurocnn.searchlight.searchlight`),
- ``cluster_mass``: the mass of the clusters above a cluster-forming threshold,
  ``sum(|statistic| - threshold)`` over a cluster (as nilearn's ``permuted_ols``),
- ``cluster_size``: their size in voxels (time points),
- ``tfce``: threshold-free cluster enhancement (Smith & Nichols 2009), computed as
  ``nilearn.mass_univariate.permuted_ols(tfce=True)`` does (E = 0.5, H = 2, 100 steps
  from 0 to the map's maximum, the sum not multiplied by dh, as fslmaths).

Every permutation's map is labelled in one ``scipy.ndimage.label`` call over a stack of
maps (the structuring element does not connect maps), so the permutations of a chunk are
processed together. The group test on searchlight maps agrees with nilearn's
``permuted_ols`` (same t maps and TFCE maps; p-values within Monte Carlo error); the
within-subject test (stimulus-label permutations) and the time-course test extend it.

Also here: :func:`cluster_table` (peak coordinate, size in voxels and mm^3, mass, p and the
nearest label of a nilearn-shipped coordinate atlas), :func:`latency` (onset and peak with
bootstrap CIs over subjects), :func:`plot_clusters`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import scipy.ndimage
import scipy.stats
import xarray as xr

from ._clusters import (  # noqa: F401  (kernels shared with the time-resolved RSA)
    _CHUNK_ELEMENTS,
    _STATISTICS,
    CORRECTIONS,
    _check_cluster_p,
    _check_corrections,
    _check_group_args,
    _check_tfce_params,
    _chunks,
    _clusters,
    _common_attrs,
    _flip_signs,
    _gather_result,
    _Grid,
    _group_threshold,
    _infer,
    _max_per_map,
    _pooled_threshold,
    _sign_flip_chunks,
    _stack_structure,
    _structure,
    _tfce_stack,
    _to_dataset,
    _volume_attrs,
    _volume_coords,
)
from ._clusters import (
    DEFAULT_CORRECTIONS as _DEFAULT_CORRECTIONS,
)
from ._clusters import (
    group_maps as _group_maps,
)
from ._validation import check_fraction, check_option, check_positive_int, check_seed
from ._version import version
from .exceptions import ShapeMismatchError

__all__ = [
    "CORRECTIONS",
    "ATLASES",
    "tfce",
    "cluster_inference",
    "group_searchlight_test",
    "searchlight_cluster_test",
    "time_cluster_test",
    "latency",
    "cluster_table",
    "nearest_atlas_label",
    "plot_clusters",
]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

Correction = Literal["voxel", "cluster_mass", "cluster_size", "tfce"]
Alternative = Literal["greater", "two-sided"]



# ------------------------------------------------------------------ arrays
def tfce(stat: np.ndarray, *, alternative: Alternative = "greater", connectivity: int = 1,
         E: float = 0.5, H: float = 2.0, dh: float | str = "auto") -> np.ndarray:
    """Threshold-free cluster enhancement of an N-D statistic map.

    ``TFCE(v) = sum_h e(v, h)^E h^H`` over thresholds ``h`` from 0 to the map's maximum,
    ``e(v, h)`` the size of the cluster holding ``v`` at threshold ``h`` (Smith & Nichols
    2009), computed as nilearn's ``permuted_ols(tfce=True)``: 100 steps (or
    ``round(max / dh)``, 10..1000), the sum not multiplied by the step (as fslmaths).

    Parameters
    ----------
    stat : ndarray
        Statistic map, any number of dims (a 1-D time course, a 3-D volume); NaN counts
        as 0.
    alternative : {"greater", "two-sided"}
        Positive clusters only, or positive and negative ones (negative TFCE values).
    connectivity : int
        Neighbourhood, ``1`` (faces, nilearn's choice) to ``stat.ndim`` (with corners).
    E, H : float
        Extent and height exponents.
    dh : "auto" or float
        Step between thresholds.

    Returns
    -------
    ndarray
        TFCE map, same shape.

    Raises
    ------
    InvalidDataError
        Bad connectivity, exponents or step.

    Examples
    --------
    >>> tfce(np.array([0.0, 1.0, 1.0, 0.0]), dh=0.1).round(2).tolist()
    [0.0, 5.44, 5.44, 0.0]
    """
    check_option("alternative", alternative, ("greater", "two-sided"))
    stat = np.nan_to_num(np.asarray(stat, np.float64), nan=0.0)
    _check_tfce_params(E, H, dh)
    sstruct = _stack_structure(_structure(stat.ndim, connectivity))
    return _tfce_stack(stat[None], sstruct, alternative == "two-sided", E, H, dh)[0]


def cluster_inference(observed: np.ndarray, null: np.ndarray, *, threshold: float | None = None,
                      cluster_p: float = 0.001, alternative: Alternative = "greater",
                      corrections: Sequence[Correction] = _DEFAULT_CORRECTIONS,
                      connectivity: int = 1, E: float = 0.5, H: float = 2.0,
                      dh: float | str = "auto") -> xr.Dataset:
    """Permutation FWE inference on an N-D statistic map given its permutation null maps.

    Parameters
    ----------
    observed : ndarray (*space)
        Statistic map (NaN: not tested).
    null : ndarray (n_permutations, *space)
        The statistic under each permutation (the observed map is counted as one more).
    threshold : float, optional
        Cluster-forming threshold on the statistic (``|statistic|`` when two-sided).
    cluster_p : float
        Without ``threshold``: the threshold is the ``1 - cluster_p`` quantile of the
        pooled null values (all permutations and positions).
    alternative : {"greater", "two-sided"}
        Positive effects only, or both signs.
    corrections : sequence of {"voxel", "cluster_mass", "cluster_size", "tfce"}
        FWE corrections to compute.
    connectivity : int
        Neighbourhood (1: faces, as nilearn).
    E, H, dh
        TFCE parameters (see :func:`tfce`).

    Returns
    -------
    xr.Dataset
        Maps over dims ``dim_0...``: ``statistic``, ``p_uncorrected``, ``p_fwe`` (voxel
        level), ``p_fwe_cluster_mass``/``p_fwe_cluster_size`` (each position its
        cluster's p, 1 outside clusters), ``tfce``, ``p_fwe_tfce``, ``cluster_id`` (label,
        0 outside, matching ``cluster_label``); per cluster (dim ``cluster``): ``cluster_size``, ``cluster_mass``,
        ``cluster_sign``, ``cluster_p_fwe_cluster_mass``...; per permutation the null
        maxima ``null_max_<correction>``.

    Raises
    ------
    ShapeMismatchError
        ``null`` not ``(n_permutations, *observed.shape)``.
    InvalidDataError
        Bad ``cluster_p``, connectivity, TFCE parameters.
    UnknownNameError
        Unknown correction or alternative.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> res = cluster_inference(rng.standard_normal(50), rng.standard_normal((99, 50)), threshold=2.0)
    >>> float(res["p_fwe"].min()) > 0.01
    True
    """
    observed = np.asarray(observed, np.float64)
    null = np.asarray(null)
    if null.ndim != observed.ndim + 1 or null.shape[1:] != observed.shape:
        raise ShapeMismatchError(
            f"null has shape {null.shape}; expected (n_permutations, *{observed.shape}) for "
            f"an observed map of shape {observed.shape}."
        )
    corrections = _check_corrections(corrections)
    check_option("alternative", alternative, ("greater", "two-sided"))
    _check_tfce_params(E, H, dh)
    two = alternative == "two-sided"
    if threshold is None:
        threshold = _pooled_threshold(null, _check_cluster_p(cluster_p), two)
    res = _infer(observed, _chunks(null, observed.size), threshold=float(threshold), two_sided=two,
                 struct=_structure(observed.ndim, connectivity), corrections=corrections, E=E, H=H, dh=dh)
    dims = tuple(f"dim_{i}" for i in range(observed.ndim))
    ds = _to_dataset([res], ["map"], dims, {})
    ds.attrs.update(_common_attrs(corrections, alternative, connectivity, res["n_permutations"], E, H, dh))
    ds.attrs["cluster_threshold"] = float(threshold)
    return ds.isel(layer=0, drop=True)



# ------------------------------------------------------------------ searchlight maps
def group_searchlight_test(
    maps: Any,
    mask: Any = None,
    *,
    n_permutations: int = 1000,
    statistic: Literal["t", "mean"] = "t",
    threshold: float | None = None,
    cluster_p: float = 0.001,
    alternative: Alternative = "greater",
    corrections: Sequence[Correction] = _DEFAULT_CORRECTIONS,
    connectivity: int = 1,
    E: float = 0.5,
    H: float = 2.0,
    dh: float | str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> xr.Dataset:
    """Group searchlight maps: one-sample sign-flip test with voxel, cluster and TFCE FWE.

    Each permutation flips the sign of a random subset of subjects' maps (the null of a
    zero group mean, symmetric subject effects), as nilearn's ``permuted_ols`` with an
    intercept-only design.

    Parameters
    ----------
    maps : xr.Dataset, sequence of xr.Dataset, sequence of NIfTI, or dict of them
        A multi-subject :func:`neurocnn.searchlight.searchlight` result (its
        ``subject_correlation``), a list of single-subject results (one map per layer
        each, same centres), a list of NIfTI maps (paths or images, one per subject, one
        layer), or ``{layer: list of NIfTI maps}``.
    mask : path, image or bool ndarray, optional
        For NIfTI input: voxels to test (default: voxels finite and non-zero in every map).
    n_permutations : int
        Number of sign flips.
    statistic : {"t", "mean"}
        One-sample t (as nilearn) or the mean over subjects (as the searchlight's test).
    threshold : float, optional
        Cluster-forming threshold on the statistic.
    cluster_p : float
        Without ``threshold``: ``t`` is thresholded at the one-sided (two-sided: two-sided)
        uncorrected p ``cluster_p`` of Student's t with n_subjects - 1 df (as nilearn's
        ``threshold``); ``mean`` at the ``1 - cluster_p`` quantile of the pooled null.
    alternative : {"greater", "two-sided"}
    corrections : sequence of {"voxel", "cluster_mass", "cluster_size", "tfce"}
    connectivity : int
        1: faces (nilearn), 2: + edges, 3: + corners.
    E, H, dh
        TFCE parameters (see :func:`tfce`).
    seed : int
        Seed of the sign flips (recorded in attrs; the same flips for every layer).
    progress : bool
        Show progress bars.

    Returns
    -------
    xr.Dataset
        Dims ``layer``, ``voxel`` (coords ``i, j, k, x, y, z``), ``cluster``,
        ``permutation``; the variables of :func:`cluster_inference`, plus
        ``cluster_threshold`` (layer). Grid ``shape``/``affine`` attrs, so
        :func:`neurocnn.searchlight.to_nifti` writes any map.

    Raises
    ------
    ShapeMismatchError
        Maps on different grids or centres, fewer than 2 subjects.
    InvalidDataError
        Bad n_permutations, cluster_p, connectivity.
    UnknownNameError
        Unknown statistic, alternative or correction.

    Examples
    --------
    >>> res = group_searchlight_test(multi_subject_result, n_permutations=1000)  # doctest: +SKIP
    >>> cluster_table(res, correction="tfce")  # doctest: +SKIP
    """
    n_permutations, corrections, seed = _check_group_args(n_permutations, statistic, alternative,
                                                          corrections, seed)
    _check_tfce_params(E, H, dh)
    stack, layers, coords, attrs, ijk = _group_maps(maps, mask)
    S = stack.shape[0]
    if S < 2:
        raise ShapeMismatchError(f"a sign-flip test needs at least 2 subjects, got {S}.")
    two = alternative == "two-sided"
    grid = _Grid(ijk)
    struct = _structure(3, connectivity)
    signs = _flip_signs(S, n_permutations, seed)
    per_chunk = max(1, _CHUNK_ELEMENTS // grid.size)
    results, thresholds = [], []
    for li, name in enumerate(layers):
        X = stack[:, li]
        ok = np.isfinite(X).all(0)
        X0 = np.where(ok, X, 0.0)
        obs = np.where(ok, _STATISTICS[statistic](X0, np.ones((1, S)))[0], np.nan)
        thr = _group_threshold(threshold, cluster_p, statistic, two, S)
        if thr is None:
            thr = _pooled_threshold(np.concatenate(list(_sign_flip_chunks(
                X0, signs, statistic, per_chunk, False, ""))), cluster_p, two)
        nulls = (np.where(ok, v, np.nan) for v in _sign_flip_chunks(
            X0, signs, statistic, per_chunk, progress, f"sign flips {name}"))
        res = _infer(grid.scatter(np.where(ok, obs, np.nan)[None])[0], grid.chunks(nulls),
                     threshold=thr, two_sided=two, struct=struct, corrections=corrections, E=E, H=H, dh=dh)
        # positions outside the voxel set were zeros: take the voxels back
        res = _gather_result(res, grid)
        res["statistic"] = obs
        for k in ("p_uncorrected", "p_fwe", "p_fwe_tfce", "tfce", "p_fwe_cluster_mass", "p_fwe_cluster_size"):
            if k in res:
                res[k] = np.where(ok, res[k], np.nan)
        results.append(res)
        thresholds.append(thr)
    ds = _to_dataset(results, layers, ("voxel",), coords)
    ds["cluster_threshold"] = ("layer", np.asarray(thresholds, np.float64))
    ds.attrs.update(attrs)
    ds.attrs.update(_common_attrs(corrections, alternative, connectivity, n_permutations, E, H, dh))
    ds.attrs.update(analysis="group_searchlight_test", test="sign_flip", statistic=statistic,
                    n_subjects=int(S), seed=seed, cluster_p=float(cluster_p), domain="volume")
    return ds


def searchlight_cluster_test(
    result: xr.Dataset,
    *,
    threshold: float | None = None,
    cluster_p: float = 0.001,
    alternative: Alternative = "greater",
    corrections: Sequence[Correction] = _DEFAULT_CORRECTIONS,
    connectivity: int = 1,
    E: float = 0.5,
    H: float = 2.0,
    dh: float | str = "auto",
    progress: bool = True,
) -> xr.Dataset:
    """One subject: voxel, cluster and TFCE FWE from stimulus-label permutations.

    The null maps are the searchlight maps of the model RDMs with permuted stimulus
    labels (the same permutation for all layers, as the searchlight's own voxel-level
    test), returned by :func:`neurocnn.searchlight.searchlight` with ``return_null=True``.

    Parameters
    ----------
    result : xr.Dataset
        ``searchlight(brain, model_rdms, ..., n_permutations=n, return_null=True)``.
    threshold : float, optional
        Cluster-forming threshold on the correlation.
    cluster_p : float
        Without ``threshold``: the ``1 - cluster_p`` quantile of the layer's null
        correlations pooled over permutations and centres.
    alternative, corrections, connectivity, E, H, dh, progress
        As :func:`group_searchlight_test`.

    Returns
    -------
    xr.Dataset
        As :func:`group_searchlight_test` (``statistic`` is the correlation); its
        ``p_fwe`` equals the searchlight's own ``p_fwe`` for ``alternative="greater"``.

    Raises
    ------
    ShapeMismatchError
        ``result`` has no ``null_correlation``.

    Examples
    --------
    >>> res = searchlight(img, rdms, mask, n_permutations=1000, return_null=True)  # doctest: +SKIP
    >>> clusters = searchlight_cluster_test(res)  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    if not isinstance(result, xr.Dataset) or "null_correlation" not in result:
        raise ShapeMismatchError(
            "result must be a searchlight Dataset with null_correlation: run "
            "neurocnn.searchlight.searchlight(..., n_permutations=n, return_null=True) on one subject."
        )
    corrections = _check_corrections(corrections)
    check_option("alternative", alternative, ("greater", "two-sided"))
    _check_tfce_params(E, H, dh)
    two = alternative == "two-sided"
    ijk = np.stack([result[c].values for c in ("i", "j", "k")], 1)
    grid = _Grid(ijk)
    struct = _structure(3, connectivity)
    null_all = result["null_correlation"].transpose("permutation", "layer", "voxel").values
    per_chunk = max(1, _CHUNK_ELEMENTS // grid.size)
    results, thresholds = [], []
    layers = [str(v) for v in result["layer"].values]
    for li, name in enumerate(tqdm(layers, desc="cluster inference", disable=not progress, leave=False)):
        obs = result["correlation"].values[li].astype(np.float64)
        null = null_all[:, li]
        thr = float(threshold) if threshold is not None else _pooled_threshold(null, _check_cluster_p(cluster_p), two)
        chunks = (null[a : a + per_chunk] for a in range(0, len(null), per_chunk))
        res = _gather_result(_infer(grid.scatter(obs[None])[0], grid.chunks(chunks), threshold=thr,
                                    two_sided=two, struct=struct, corrections=corrections, E=E, H=H, dh=dh), grid)
        ok = np.isfinite(obs)
        for k in ("statistic", "p_uncorrected", "p_fwe", "p_fwe_tfce", "tfce", "p_fwe_cluster_mass",
                  "p_fwe_cluster_size"):
            if k in res:
                res[k] = np.where(ok, res[k], np.nan)
        results.append(res)
        thresholds.append(thr)
    ds = _to_dataset(results, layers, ("voxel",), _volume_coords(result))
    ds["cluster_threshold"] = ("layer", np.asarray(thresholds, np.float64))
    ds.attrs.update(_volume_attrs(result))
    ds.attrs.update(_common_attrs(corrections, alternative, connectivity, result.sizes["permutation"], E, H, dh))
    ds.attrs.update(analysis="searchlight_cluster_test", test="stimulus_permutation", statistic="correlation",
                    n_subjects=1, seed=int(result.attrs.get("seed", 0)),
                    cluster_p=float(cluster_p), domain="volume")
    return ds


# ------------------------------------------------------------------ time courses
def _curves(curves: Any, times: Any) -> tuple[np.ndarray, list[str], np.ndarray, dict[str, Any]]:
    """-> (subject, layer, time) array, layer names, time values, attrs."""
    if isinstance(curves, xr.DataArray):
        missing = [d for d in ("subject", "time") if d not in curves.dims]
        extra = [d for d in curves.dims if d not in ("subject", "layer", "time")]
        if missing or extra:
            raise ShapeMismatchError(
                f"curves have dims {curves.dims}; expected (subject, [layer,] time): missing "
                f"{missing}, unexpected {extra}."
            )
        da = curves if "layer" in curves.dims else curves.expand_dims(layer=["curve"])
        da = da.transpose("subject", "layer", "time")
        t = np.asarray(da["time"].values if "time" in da.coords else np.arange(da.sizes["time"]), np.float64)
        layers = [str(v) for v in da["layer"].values] if "layer" in da.coords else [str(i) for i in range(da.sizes["layer"])]
        return np.asarray(da.values, np.float64), layers, t, dict(curves.attrs)
    arr = np.asarray(curves, np.float64)
    if arr.ndim == 2:
        arr = arr[:, None]
    if arr.ndim != 3:
        raise ShapeMismatchError(f"curves have shape {arr.shape}; expected (subject, time) or (subject, layer, time).")
    t = np.arange(arr.shape[-1], dtype=np.float64) if times is None else np.asarray(times, np.float64)
    if t.shape != (arr.shape[-1],):
        raise ShapeMismatchError(f"times has {t.size} values for {arr.shape[-1]} time points.")
    return arr, [str(i) for i in range(arr.shape[1])], t, {}


def time_cluster_test(
    curves: Any,
    *,
    times: Sequence[float] | None = None,
    n_permutations: int = 1000,
    statistic: Literal["t", "mean"] = "t",
    threshold: float | None = None,
    cluster_p: float = 0.05,
    alternative: Alternative = "greater",
    corrections: Sequence[Correction] = _DEFAULT_CORRECTIONS,
    E: float = 0.5,
    H: float = 2.0,
    dh: float | str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> xr.Dataset:
    """Subjects' layer x time curves: one-sample sign-flip test with time-cluster FWE.

    The machinery of :func:`group_searchlight_test` with 1-D clusters (neighbouring time
    points): clusters of time points above a threshold, their mass against the maximum
    mass of each sign flip (Maris & Oostenveld 2007), TFCE and voxel-level max-statistic.

    Parameters
    ----------
    curves : xr.DataArray or ndarray
        Dims ``(subject, [layer,] time)`` (e.g. per-subject
        ``neurocnn.rsa.meg_layer_time_correlation`` curves), or an array
        ``(subject, time)`` / ``(subject, layer, time)``.
    times : sequence of float, optional
        Time of each sample for array input (default: sample index).
    n_permutations, statistic, threshold, alternative, corrections, E, H, dh, seed, progress
        As :func:`group_searchlight_test`.
    cluster_p : float
        Cluster-forming uncorrected p (one-sided t with n_subjects - 1 df by default).

    Returns
    -------
    xr.Dataset
        Maps over ``(layer, time)``, clusters over ``cluster`` with ``cluster_start``,
        ``cluster_stop`` (times of the first and last sample), as :func:`cluster_inference`.

    Raises
    ------
    ShapeMismatchError
        Curves without subject/time dims, fewer than 2 subjects, times of the wrong length.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((12, 60)); x[:, 30:45] += 1.0
    >>> res = time_cluster_test(x, n_permutations=200, progress=False)
    >>> int(res["time"][res["p_fwe_cluster_mass"][0] < 0.05].min())
    30
    """
    n_permutations, corrections, seed = _check_group_args(n_permutations, statistic, alternative,
                                                          corrections, seed)
    _check_tfce_params(E, H, dh)
    arr, layers, t, in_attrs = _curves(curves, times)
    S = arr.shape[0]
    if S < 2:
        raise ShapeMismatchError(f"a sign-flip test over subjects needs at least 2 subjects, got {S}.")
    two = alternative == "two-sided"
    signs = _flip_signs(S, n_permutations, seed)
    per_chunk = max(1, _CHUNK_ELEMENTS // arr.shape[-1])
    struct = _structure(1, 1)
    results, thresholds = [], []
    for li, name in enumerate(layers):
        X = arr[:, li]
        ok = np.isfinite(X).all(0)
        X0 = np.where(ok, X, 0.0)
        obs = np.where(ok, _STATISTICS[statistic](X0, np.ones((1, S)))[0], np.nan)
        thr = _group_threshold(threshold, cluster_p, statistic, two, S)
        if thr is None:
            thr = _pooled_threshold(np.concatenate(list(_sign_flip_chunks(X0, signs, statistic, per_chunk,
                                                                          False, ""))), cluster_p, two)
        nulls = (np.where(ok, v, np.nan) for v in _sign_flip_chunks(X0, signs, statistic, per_chunk,
                                                                    progress, f"sign flips {name}"))
        res = _infer(obs, nulls, threshold=thr, two_sided=two, struct=struct, corrections=corrections,
                     E=E, H=H, dh=dh)
        lab = res["cluster_id"]
        n = len(res["cluster_size"])
        res["cluster_start"] = np.array([t[lab == c].min() for c in range(1, n + 1)], np.float64)
        res["cluster_stop"] = np.array([t[lab == c].max() for c in range(1, n + 1)], np.float64)
        results.append(res)
        thresholds.append(thr)
    ds = _to_dataset(results, layers, ("time",), {"time": t})
    for k in ("cluster_start", "cluster_stop"):
        ds[k] = ("cluster", np.concatenate([r[k] for r in results]))
    ds["cluster_threshold"] = ("layer", np.asarray(thresholds, np.float64))
    ds.attrs.update({k: v for k, v in in_attrs.items() if isinstance(v, (str, int, float))})
    ds.attrs.update(_common_attrs(corrections, alternative, 1, n_permutations, E, H, dh))
    ds.attrs.update(analysis="time_cluster_test", test="sign_flip", statistic=statistic, n_subjects=int(S),
                    seed=seed, cluster_p=float(cluster_p), domain="time",
                    reference="Maris & Oostenveld 2007 (cluster mass); Smith & Nichols 2009 (TFCE)")
    return ds


def _first_significant(stat: np.ndarray, thr: float, null_max: np.ndarray, alpha: float,
                       within: np.ndarray | None = None) -> np.ndarray:
    """(n, T) statistic curves -> index of the first sample of the earliest positive cluster
    whose mass is significant against ``null_max`` and that overlaps ``within`` (T,) if
    given (NaN where none)."""
    n, T = stat.shape
    s0 = np.nan_to_num(stat)
    lab, nl = scipy.ndimage.label(s0 > thr, _stack_structure(_structure(1, 1)))
    out = np.full(n, np.inf)
    if nl:
        flat = lab.ravel()
        mass = np.bincount(flat, weights=(s0 - thr).ravel(), minlength=nl + 1)
        sig = np.concatenate([[False], _p_value(mass[1:], null_max) < alpha])
        if within is not None:
            sig &= np.bincount(flat, weights=np.tile(within.astype(float), n), minlength=nl + 1) > 0
        pos = np.flatnonzero(sig[flat])
        np.minimum.at(out, pos // T, (pos % T).astype(float))
    return np.where(np.isfinite(out), out, np.nan)


def _p_value(values: np.ndarray, null_max: np.ndarray) -> np.ndarray:
    srt = np.sort(null_max)
    below = np.searchsorted(srt, values - 1e-12 * np.maximum(1.0, np.abs(values)), side="left")
    return (1.0 + len(srt) - below) / (1.0 + len(srt))


def latency(
    curves: Any,
    *,
    times: Sequence[float] | None = None,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    alpha: float = 0.05,
    n_permutations: int = 1000,
    threshold: float | None = None,
    cluster_p: float = 0.05,
    seed: int = 0,
    progress: bool = True,
) -> xr.Dataset:
    """Onset and peak latency of layer x time curves, with bootstrap CIs over subjects.

    Onset: the first sample of the earliest positive time cluster significant by cluster
    mass (one-sample t, sign flips, FWE ``alpha``; :func:`time_cluster_test`). Peak: the
    sample of the maximum subject-mean curve. Bootstrap: subjects resampled with
    replacement; each sample's onset is the first sample of its earliest cluster (same
    cluster-forming threshold) whose mass is significant against that sample's own
    sign-flip null of maximum cluster masses (the same flips for every sample; as Cichy
    et al. 2014, who test every bootstrap sample) and that overlaps a significant cluster
    of the observed data (so a noise cluster elsewhere, whose t resampling inflates, is
    not taken for the onset); its peak the maximum of its mean curve. CIs are percentile intervals over
    the samples that have an onset.

    Parameters
    ----------
    curves : xr.DataArray or ndarray
        As :func:`time_cluster_test`.
    times : sequence of float, optional
        Sample times for array input.
    n_bootstrap : int
        Bootstrap samples of subjects.
    ci : float
        Confidence level.
    alpha : float
        FWE level of the onset cluster.
    n_permutations, threshold, cluster_p
        As :func:`time_cluster_test`.
    seed : int
        Seed of flips and resampling.
    progress : bool
        Progress bars.

    Returns
    -------
    xr.Dataset
        Dim ``layer``: ``onset``, ``onset_ci_low``, ``onset_ci_high``, ``peak``,
        ``peak_ci_low``, ``peak_ci_high`` (times; onset NaN without a significant
        cluster), ``onset_fraction`` (share of bootstrap samples with an onset).

    Raises
    ------
    InvalidDataError
        Bad n_bootstrap, ci or alpha.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> x = rng.standard_normal((12, 60)); x[:, 30:45] += 1.5
    >>> lat = latency(x, n_bootstrap=200, n_permutations=200, progress=False)
    >>> float(lat["onset"][0])
    30.0
    """
    from tqdm.auto import tqdm

    n_bootstrap = check_positive_int("n_bootstrap", n_bootstrap)
    ci = check_fraction("ci", ci)
    alpha = check_fraction("alpha", alpha)
    test = time_cluster_test(curves, times=times, n_permutations=n_permutations, threshold=threshold,
                             cluster_p=cluster_p, corrections=("cluster_mass",), seed=seed, progress=progress)
    arr, layers, t, _ = _curves(curves, times)
    S, T = arr.shape[0], arr.shape[-1]
    rng = np.random.default_rng([check_seed(seed), 1])
    idx = rng.integers(0, S, (n_bootstrap, S))
    per_flip = max(1, _CHUNK_ELEMENTS // T)
    out = {k: [] for k in ("onset", "onset_ci_low", "onset_ci_high", "peak", "peak_ci_low", "peak_ci_high",
                           "onset_fraction")}
    q = [(1 - ci) / 2, (1 + ci) / 2]
    for li, name in enumerate(layers):
        X = arr[:, li]
        thr = float(test["cluster_threshold"].values[li])
        null_max = test["null_max_cluster_mass"].values[li]
        t_obs = test["statistic"].values[li][None]
        on0 = _first_significant(t_obs, thr, null_max, alpha)[0]
        labels = test["cluster_id"].values[li]
        sel = test["cluster_layer"].values == name
        sig_labels = test["cluster_label"].values[sel][test["cluster_p_fwe_cluster_mass"].values[sel] < alpha]
        within = np.isin(labels, sig_labels) & (labels > 0)
        onsets, peaks = [], []
        signs = _flip_signs(S, n_permutations, seed)
        sstruct = _stack_structure(_structure(1, 1))
        for b in tqdm(range(n_bootstrap), desc=f"bootstrap {name}", disable=not progress, leave=False):
            Xb = X[idx[b]]
            mean = Xb.mean(0)
            # the bootstrap sample's own sign-flip null (duplicated subjects inflate t alike)
            null = np.concatenate([np.nan_to_num(_STATISTICS["t"](Xb, signs[a : a + per_flip]))
                                   for a in range(0, n_permutations, per_flip)])
            _, _, mass, _, owner = _clusters(null, thr, sstruct, False)
            null_b = _max_per_map(mass, owner, len(null))
            onsets.append(_first_significant(_STATISTICS["t"](Xb, np.ones((1, S))), thr, null_b, alpha, within))
            peaks.append(np.nanargmax(np.where(np.isfinite(mean), mean, -np.inf))[None])
        ob, pb = np.concatenate(onsets), np.concatenate(peaks)
        found = np.isfinite(ob)
        on_t = t[ob[found].astype(int)]
        out["onset"].append(t[int(on0)] if np.isfinite(on0) else np.nan)
        lo, hi = np.quantile(on_t, q) if found.any() else (np.nan, np.nan)
        out["onset_ci_low"].append(lo)
        out["onset_ci_high"].append(hi)
        out["onset_fraction"].append(float(found.mean()))
        out["peak"].append(t[int(np.nanargmax(np.nan_to_num(X.mean(0), nan=-np.inf)))])
        lo, hi = np.quantile(t[pb], q)
        out["peak_ci_low"].append(lo)
        out["peak_ci_high"].append(hi)
    ds = xr.Dataset({k: ("layer", np.asarray(v, np.float64)) for k, v in out.items()}, coords={"layer": layers})
    ds.attrs.update(analysis="latency", n_bootstrap=int(n_bootstrap), ci=float(ci), alpha=float(alpha),
                    n_permutations=int(n_permutations), cluster_p=float(cluster_p), seed=int(seed),
                    n_subjects=int(S), neurocnn_version=version(),
                    onset="first sample of the earliest significant cluster-mass time cluster",
                    reference="Cichy et al. 2014, Nat. Neurosci. (bootstrap of subjects)")
    return ds


from ._cluster_report import ATLASES, cluster_table, nearest_atlas_label, plot_clusters  # noqa: E402
