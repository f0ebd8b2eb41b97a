"""Held-out prediction scores, noise ceilings, permutation nulls and ROI summaries of encoding models."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import xarray as xr

from .._validation import check_option, check_positive_int, numpy_rng
from ..exceptions import ShapeMismatchError

__all__ = ["fold_scores", "permutation_null", "pooled_scores", "roi_summary", "split_half_reliability"]


def _zscore(a: np.ndarray, axis: int) -> np.ndarray:
    centered = a - a.mean(axis=axis, keepdims=True)
    norm = np.sqrt((centered**2).sum(axis=axis, keepdims=True))
    return np.divide(centered, norm, out=np.zeros_like(centered), where=norm > 0)


def pooled_scores(Y: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson r and R^2 (1 - SSE/SST) of held-out predictions pooled over folds.

    Parameters
    ----------
    Y : ndarray, shape (stimulus, target)
    prediction : ndarray, shape (..., stimulus, target)

    Returns
    -------
    correlation, r2 : ndarray, shape (..., target)
    """
    r = (_zscore(Y, 0) * _zscore(prediction, -2)).sum(axis=-2)
    sst = ((Y - Y.mean(axis=0)) ** 2).sum(axis=0)
    sse = ((prediction - Y) ** 2).sum(axis=-2)
    return r, 1.0 - sse / sst


def fold_scores(Y: np.ndarray, prediction: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-fold Pearson r and R^2, shape (..., fold, target)."""
    rs, r2s = [], []
    for fold in np.unique(folds):
        rows = folds == fold
        r, r2 = pooled_scores(Y[rows], prediction[..., rows, :])
        rs.append(r)
        r2s.append(r2)
    return np.stack(rs, axis=-2), np.stack(r2s, axis=-2)


def split_half_reliability(repeats: Any, *, n_splits: int = 100, seed: int = 0) -> np.ndarray:
    """Spearman-Brown-corrected split-half reliability of each target's mean response.

    Repeats are split at random into two halves ``n_splits`` times; each split's
    correlation over stimuli between the half means is corrected to the full number of
    repeats with Spearman-Brown, ``2 r / (1 + r)``, and the corrections are averaged.
    The result estimates the fraction of the mean response's variance that is
    stimulus-driven: the ceiling of a model's R^2 (its square root is the ceiling of
    the prediction correlation).

    Parameters
    ----------
    repeats : ndarray or xarray.DataArray, shape (stimulus, repeat, target)
        A DataArray may order its dims freely (``stimulus``, ``repeat`` or ``run``, a target dim).
    n_splits : int
        Random split halves to average.
    seed : int
        Seed of the splits.

    Returns
    -------
    ndarray, shape (target,)

    Raises
    ------
    ShapeMismatchError
        Not 3-D, or fewer than 2 repeats.
    """
    if isinstance(repeats, xr.DataArray):
        rep = [d for d in repeats.dims if d in ("repeat", "run")]
        if "stimulus" not in repeats.dims or len(rep) != 1 or repeats.ndim != 3:
            raise ShapeMismatchError(f"repeats need dims stimulus, repeat (or run) and one target dim; got {repeats.dims}.")
        repeats = repeats.transpose("stimulus", rep[0], ...).values
    repeats = np.asarray(repeats, dtype=np.float64)
    n_splits = check_positive_int("n_splits", n_splits)
    if repeats.ndim != 3 or repeats.shape[1] < 2:
        raise ShapeMismatchError(
            f"split-half reliability needs (stimulus, repeat, target) data with at least 2 repeats; got shape {repeats.shape}."
        )
    rng = numpy_rng(seed)
    n_rep = repeats.shape[1]
    total = np.zeros(repeats.shape[2])
    for _ in range(n_splits):
        order = rng.permutation(n_rep)
        a = repeats[:, order[: n_rep // 2]].mean(axis=1)
        b = repeats[:, order[n_rep // 2 :]].mean(axis=1)
        r = (_zscore(a, 0) * _zscore(b, 0)).sum(axis=0)
        total += 2 * r / (1 + r)
    return total / n_splits


def _within_fold_permutation(folds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    perm = np.arange(len(folds))
    for fold in np.unique(folds):
        rows = np.flatnonzero(folds == fold)
        perm[rows] = rows[rng.permutation(len(rows))]
    return perm


def permutation_null(Y: np.ndarray, prediction: np.ndarray, folds: np.ndarray, *, n_permutations: int,
                     seed: int = 0, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Permutation p-values of held-out prediction correlations, uncorrected and max-statistic FWE.

    Responses are permuted across stimuli within each outer test fold (the predictions
    stay fixed), so a permutation breaks only the stimulus pairing the model was scored
    on. ``p_fwe`` compares each target with the maximum over targets of each
    permutation (family: all targets of one layer). p = (1 + #exceedances) / (1 + n).

    Returns
    -------
    p_value, p_fwe : ndarray, shape (layer, target)
    """
    from tqdm.auto import tqdm

    n_permutations = check_positive_int("n_permutations", n_permutations)
    rng = numpy_rng(seed)
    zY, zP = _zscore(Y, 0), _zscore(prediction, -2)
    observed = (zY * zP).sum(axis=-2)
    exceed = np.zeros_like(observed)
    exceed_max = np.zeros_like(observed)
    for _ in tqdm(range(n_permutations), desc="permutations", disable=not progress):
        null = np.einsum("st,lst->lt", zY[_within_fold_permutation(folds, rng)], zP)
        exceed += null >= observed - 1e-12
        exceed_max += null.max(axis=-1, keepdims=True) >= observed - 1e-12
    return (1 + exceed) / (1 + n_permutations), (1 + exceed_max) / (1 + n_permutations)


def _roi_masks(result: xr.Dataset, rois: Any, dim: str) -> dict[str, np.ndarray]:
    n = result.sizes[dim]
    if isinstance(rois, str):
        if rois not in result.coords or result[rois].dims != (dim,):
            valid = [k for k, c in result.coords.items() if c.dims == (dim,)]
            raise ShapeMismatchError(f"rois={rois!r} is not a coordinate along {dim!r}; those are {valid}.")
        labels = np.asarray(result[rois].values).astype(str)
        return {label: labels == label for label in dict.fromkeys(labels)}
    if isinstance(rois, Mapping):
        masks = {}
        for name, sel in rois.items():
            sel = np.asarray(sel)
            mask = sel if sel.dtype == bool else np.isin(np.arange(n), sel)
            if mask.shape != (n,) or not mask.any():
                raise ShapeMismatchError(f"ROI {name!r} must select some of the {n} targets (boolean mask or indices).")
            masks[str(name)] = mask
        return masks
    raise ShapeMismatchError(f"rois must be a coordinate name or a dict of ROI name -> mask; got {type(rois).__name__}.")


def roi_summary(result: xr.Dataset, rois: Any, *, var: str | None = None,
                statistic: Literal["mean", "median"] = "mean") -> xr.DataArray:
    """Summarize a per-target encoding score over ROIs: a (layer, roi) table.

    Parameters
    ----------
    result : xarray.Dataset
        From :func:`fit_encoding`.
    rois : str or dict
        A coordinate along the target dim holding each target's ROI label, or a dict
        of ROI name to a boolean mask / indices of targets.
    var : str, optional
        Score to summarize (default ``"r2_normalized"`` when the result has a noise
        ceiling, else ``"r2"``).
    statistic : {"mean", "median"}

    Returns
    -------
    xarray.DataArray
        Dims (layer, roi), with ``n_targets`` per ROI as a coordinate.
    """
    dim = str(result.attrs["target_dim"])
    var = var or ("r2_normalized" if "r2_normalized" in result else "r2")
    if var not in result or result[var].dims != ("layer", dim):
        valid = [k for k, v in result.data_vars.items() if v.dims == ("layer", dim)]
        check_option("score variable", var, valid)
    reducer = {"mean": np.nanmean, "median": np.nanmedian}[check_option("statistic", statistic, ("mean", "median"))]
    masks = _roi_masks(result, rois, dim)
    values = np.asarray(result[var].values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an ROI whose targets all lack a ceiling stays NaN
        table = np.stack([reducer(values[:, mask], axis=1) for mask in masks.values()], axis=1)
    return xr.DataArray(
        table, dims=("layer", "roi"),
        coords={"layer": result.layer.values, "roi": list(masks), "n_targets": ("roi", [int(m.sum()) for m in masks.values()])},
        name=var, attrs={**result.attrs, "variable": var, "statistic": statistic},
    )
