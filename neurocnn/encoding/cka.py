"""Centered kernel alignment (CKA) between layers, and between layers and brain ROIs.

CKA (Kornblith et al. 2019) compares two representations of the same stimuli through
their stimulus x stimulus kernels: ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``. The
biased HSIC is ``tr(K H L H)``; the debiased one is Song et al.'s (2012) unbiased
estimator (as in Nguyen et al. 2021), which removes the upward bias of CKA between
high-dimensional representations of few stimuli.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from .._validation import check_option
from .._version import version
from ..exceptions import InvalidDataError, ShapeMismatchError
from . import _kernels
from ._data import as_layers

__all__ = ["cka", "cka_matrix"]

_KERNELS = ("linear", "rbf")


def _rbf_from_gram(G: np.ndarray, sigma: float) -> np.ndarray:
    sq = np.diag(G)
    d2 = np.clip(sq[:, None] + sq[None, :] - 2 * G, 0.0, None)
    off = d2[~np.eye(len(G), dtype=bool)]
    median = np.median(np.sqrt(off)) if off.size else 0.0
    if median <= 0:
        raise InvalidDataError("RBF CKA: all stimuli have the same representation (median distance 0).")
    return np.exp(-d2 / (2 * (sigma * median) ** 2))


def _prepare_biased(K: np.ndarray) -> np.ndarray:
    mean = K.mean(axis=0)
    return K - mean[None, :] - mean[:, None] + mean.mean()


def _prepare_debiased(K: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    Kt = K.copy()
    np.fill_diagonal(Kt, 0.0)
    rows = Kt.sum(axis=1)
    return Kt, rows, float(rows.sum())


def _hsic_biased(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum())


def _hsic_debiased(a: tuple, b: tuple) -> float:
    Kt, rk, sk = a
    Lt, rl, sl = b
    n = len(Kt)
    return float(((Kt * Lt).sum() + sk * sl / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * rk @ rl) / (n * (n - 3)))


_ESTIMATORS = {False: (_prepare_biased, _hsic_biased), True: (_prepare_debiased, _hsic_debiased)}


def _kernel(gram: np.ndarray, kernel: str, sigma: float) -> np.ndarray:
    return {"linear": lambda G: G, "rbf": lambda G: _rbf_from_gram(G, sigma)}[kernel](gram)


def _check(n: int, debiased: bool) -> None:
    if n < (4 if debiased else 2):
        raise InvalidDataError(f"CKA needs at least {4 if debiased else 2} stimuli{' (debiased)' if debiased else ''}; got {n}.")


def _similarity(prepared: list, others: list, hsic, progress: bool) -> np.ndarray:
    self_a = np.array([hsic(p, p) for p in prepared])
    self_b = np.array([hsic(p, p) for p in others])
    out = np.empty((len(prepared), len(others)))
    for i in tqdm(range(len(prepared)), desc="CKA", disable=not progress):
        for j in range(len(others)):
            denom = np.sqrt(self_a[i] * self_b[j]) if self_a[i] > 0 and self_b[j] > 0 else np.nan
            out[i, j] = hsic(prepared[i], others[j]) / denom
    return out


def cka(x: Any, y: Any, *, kernel: Literal["linear", "rbf"] = "linear", debiased: bool = False,
        sigma: float = 1.0) -> float:
    """CKA between two representations of the same stimuli (rows).

    Parameters
    ----------
    x, y : array or xarray.DataArray, shape (stimulus, ...)
        Trailing dims are flattened into features; both need the same stimuli.
    kernel : {"linear", "rbf"}
        Linear kernel, or Gaussian RBF with bandwidth ``sigma`` times the median
        distance between stimuli.
    debiased : bool
        Use the unbiased HSIC estimator (Song et al. 2012).
    sigma : float
        RBF bandwidth as a fraction of the median distance.

    Returns
    -------
    float
        1 for identical inputs; invariant to orthogonal transforms and isotropic
        scaling of either input.

    Raises
    ------
    ShapeMismatchError
        Different numbers of stimuli.
    """
    return float(cka_matrix({"x": x}, {"y": y}, kernel=kernel, debiased=debiased, sigma=sigma, progress=False)[0, 0])


def _grams(features: Any, block_bytes: int) -> tuple[list[str], list[np.ndarray], np.ndarray | None]:
    layers = as_layers(features)
    return ([layer.name for layer in layers],
            [_kernels.linear_kernel(layer.data, block_bytes=block_bytes) for layer in layers], layers[0].ids)


def cka_matrix(features: Any, others: Any = None, *, kernel: Literal["linear", "rbf"] = "linear",
               debiased: bool = False, sigma: float = 1.0, block_bytes: int = 2**28,
               progress: bool = True) -> xr.DataArray:
    """CKA between every pair of layers, or between layers and brain ROIs.

    Each representation's stimulus x stimulus kernel is built once (in memory-bounded
    blocks, so zarr/dask layers work) and every pair then costs O(n_stimuli^2).

    Parameters
    ----------
    features : DataArray, array, or dict of name -> activations
        Layers as :meth:`VirtualSubject.activations` returns them.
    others : dict of name -> (stimulus x ...) array/DataArray, optional
        E.g. ROI responses (``{"V1": ..., "IT": ...}``). Default: ``features`` again
        (a layer x layer matrix).
    kernel, debiased, sigma
        See :func:`cka`.
    block_bytes : int
        Memory bound of one feature block.
    progress : bool
        Show a progress bar.

    Returns
    -------
    xarray.DataArray
        Dims ``("layer", "layer_b")`` (layer x layer) or ``("layer", "roi")``.

    Raises
    ------
    ShapeMismatchError
        Different stimuli (count, or ids when both sides have ids).
    """
    kernel = check_option("kernel", kernel, _KERNELS)
    names, grams, ids = _grams(features, block_bytes)
    second = "layer_b" if others is None else "roi"
    if others is None:
        other_names, other_grams, other_ids = names, grams, ids
    else:
        if not isinstance(others, Mapping):
            others = {getattr(others, "name", None) or "roi": others}
        other_names, other_grams, other_ids = _grams(others, block_bytes)
    n = len(grams[0])
    if len(other_grams[0]) != n:
        raise ShapeMismatchError(f"features have {n} stimuli, others {len(other_grams[0])}; CKA needs the same stimuli.")
    if ids is not None and other_ids is not None and not np.array_equal(ids, other_ids):
        raise ShapeMismatchError("features and others list different stimulus ids (or orders); align them first.")
    _check(n, debiased)
    prepare, hsic = _ESTIMATORS[bool(debiased)]
    prepared = [prepare(_kernel(G, kernel, sigma)) for G in grams]
    other_prepared = prepared if others is None else [prepare(_kernel(G, kernel, sigma)) for G in other_grams]
    values = _similarity(prepared, other_prepared, hsic, progress)
    return xr.DataArray(
        values, dims=("layer", second), coords={"layer": names, second: other_names}, name="cka",
        attrs={"kernel": kernel, "debiased": int(bool(debiased)), "sigma": float(sigma) if kernel == "rbf" else 0.0,
               "n_stimuli": int(n), "neurocnn_version": version()},
    )
