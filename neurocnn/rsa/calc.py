"""RDMs from activations: Gram matrices accumulated chunk by chunk over features."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr

from .._validation import check_device, check_option, check_positive_int, default_ids
from .._version import version
from ..exceptions import InvalidDataError, ShapeMismatchError
from ._stack import _PROVENANCE_KEYS, _clean_attrs, _stack_layers, _tensor

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

_DEFAULT_CHUNK_BYTES = 256 * 2**20


Metric = Literal["correlation", "euclidean", "sqeuclidean", "cosine", "crossnobis"]


# --------------------------------------------------------------------- compute_rdm
@dataclass
class _Activations:
    n_rows: int
    row_ids: np.ndarray
    runs: np.ndarray | None
    n_features: int
    blocks: Callable[[int], Any]  # chunk_size -> iterator of (n_rows, f) arrays
    pattern_coords: dict[str, np.ndarray]
    attrs: dict[str, Any]


def _activations(x: Any, runs: Any, stimulus_ids: Any) -> _Activations:
    if isinstance(x, xr.DataArray):
        if "stimulus" not in x.dims:
            raise ShapeMismatchError(
                f"activations need a 'stimulus' dim, got dims {x.dims}. Rename the stimulus "
                "axis (da.rename({'old': 'stimulus'})) or pass a numpy array."
            )
        lead = ["stimulus"] + (["run"] if "run" in x.dims else [])
        feat = [d for d in x.dims if d not in lead]
        if not feat:
            raise ShapeMismatchError("activations have no feature dims after 'stimulus'.")
        x = x.transpose(*lead, *feat)
        n_stim = x.sizes["stimulus"]
        ids = (
            np.asarray(x["stimulus"].values).astype(str)
            if "stimulus" in x.coords
            else default_ids(n_stim)
        )
        pattern_coords = {
            str(k): np.asarray(c.values)
            for k, c in x.coords.items()
            if c.dims == ("stimulus",) and k != "stimulus"
        }
        if "run" in x.dims:
            if runs is not None:
                raise ShapeMismatchError("pass runs either as a 'run' dim or as runs=, not both.")
            n_run = x.sizes["run"]
            run_values = np.asarray(x["run"].values) if "run" in x.coords else np.arange(n_run)
            row_ids, runs = np.repeat(ids, n_run), np.tile(run_values, n_stim)
            pattern_coords = {k: np.repeat(v, n_run) for k, v in pattern_coords.items()}
        else:
            row_ids = ids
        n_rows = len(row_ids)
        d0 = feat[0]
        per_d0 = int(np.prod([x.sizes[d] for d in feat[1:]], dtype=np.int64))
        n_features = per_d0 * x.sizes[d0]

        def blocks(chunk: int, x=x, d0=d0, per_d0=per_d0, n_rows=n_rows):
            step = max(1, chunk // per_d0)
            for start in range(0, x.sizes[d0], step):
                part = x.isel({d0: slice(start, start + step)}).values
                yield np.asarray(part).reshape(n_rows, -1)

        return _Activations(n_rows, row_ids, None if runs is None else np.asarray(runs),
                            n_features, blocks, pattern_coords, dict(x.attrs))
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim < 2:
        raise ShapeMismatchError(
            f"activations must be (n_stimuli, n_features), got shape {arr.shape}."
        )
    arr = arr.reshape(arr.shape[0], -1)
    n_rows = arr.shape[0]
    row_ids = (
        default_ids(n_rows)
        if stimulus_ids is None
        else np.asarray(stimulus_ids).astype(str)
    )
    if len(row_ids) != n_rows:
        raise ShapeMismatchError(f"{len(row_ids)} stimulus ids for {n_rows} rows of activations.")

    def blocks(chunk: int, arr=arr):
        for start in range(0, arr.shape[1], chunk):
            yield arr[:, start : start + chunk]

    return _Activations(n_rows, row_ids, None if runs is None else np.asarray(runs),
                        arr.shape[1], blocks, {}, {})


_SYRK = {torch.float64: "dsyrk", torch.float32: "ssyrk"}


def _syrk_accumulate(G: np.ndarray, block: np.ndarray, dtype: torch.dtype) -> None:
    """G += block @ block.T on the upper triangle with BLAS syrk (half the flops of a GEMM)."""
    import scipy.linalg.blas as blas

    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    a = np.asarray(block, dtype=np_dtype, order="C").T  # (f, n) Fortran order, no copy
    syrk = getattr(blas, _SYRK[dtype])
    if np_dtype is np.float64:
        syrk(1.0, a, beta=1.0, c=G, trans=1, lower=0, overwrite_c=1)
    else:
        G += syrk(1.0, a, trans=1, lower=0)


def _gram(act: _Activations, noise: np.ndarray | None, device: str, chunk_size: int | None,
          dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Accumulate G = Y Y^T and the row sums of Y for the whitened patterns Y = X W.

    ``noise`` is the whitening matrix W = N^(1/2) (symmetric square root of the noise
    precision N; a vector for a diagonal N), identity if None, so G = X N X^T.

    On CPU without noise weighting, BLAS syrk fills the upper triangle (half the work
    of a matrix product); otherwise torch matmuls run on ``device``.
    """
    dev = check_device(device)
    use_syrk = dev.type == "cpu" and noise is None and dtype in _SYRK
    G = torch.zeros((act.n_rows, act.n_rows), dtype=torch.float64, device=dev)
    G_np = np.zeros((act.n_rows, act.n_rows), order="F") if use_syrk else None
    s = torch.zeros(act.n_rows, dtype=torch.float64, device=dev)
    if noise is not None and noise.ndim == 2:
        chunk = act.n_features  # a full precision matrix couples all features
    else:
        chunk = chunk_size or max(1, _DEFAULT_CHUNK_BYTES // (8 * max(act.n_rows, 1)))
    offset = 0
    for block in act.blocks(chunk):
        f = block.shape[1]
        finite = np.isfinite(block)
        if not finite.all():
            row = int(np.argwhere(~finite)[0][0])
            raise InvalidDataError(
                f"activations of stimulus {act.row_ids[row]!r} contain NaN/inf. Drop that "
                "stimulus or fix the extraction before computing RDMs."
            )
        offset += f
        if use_syrk:
            _syrk_accumulate(G_np, block, dtype)
            s += torch.from_numpy(np.asarray(block).sum(1, dtype=np.float64))
            continue
        t = _tensor(block).to(device=dev, dtype=dtype)
        if noise is None:
            tw = t
        elif noise.ndim == 1:
            tw = t * torch.from_numpy(noise[offset - f : offset]).to(device=dev, dtype=dtype)
        else:
            tw = t @ torch.from_numpy(noise).to(device=dev, dtype=dtype)
        G += (tw @ tw.T).to(torch.float64)
        s += tw.sum(1, dtype=torch.float64) if dtype == torch.float64 else tw.sum(1).to(torch.float64)
    if use_syrk:
        upper = np.triu(G_np)
        return upper + np.triu(upper, 1).T, s.numpy()
    return G.cpu().numpy(), s.cpu().numpy()


def _diag_check(d: np.ndarray, scale: np.ndarray, ids: np.ndarray, why: str) -> None:
    bad = np.flatnonzero(d <= 1e-12 * np.maximum(scale, 1e-300))
    if bad.size:
        more = f" and {bad.size - 1} more" if bad.size > 1 else ""
        raise InvalidDataError(
            f"stimulus {ids[bad[0]]!r}{more} has {why}; its {why.split()[-2]} dissimilarity "
            "is undefined for this metric. Drop it or use metric='euclidean'."
        )


def _rdm_correlation(G, s, F, ids):
    C = G - np.outer(s, s) / F
    d = np.diag(C)
    _diag_check(d, np.diag(G), ids, "a constant activation pattern")
    return 1.0 - C / np.sqrt(np.outer(d, d))


def _rdm_cosine(G, s, F, ids):
    d = np.diag(G)
    _diag_check(d, np.full_like(d, d.max()), ids, "an all-zero activation pattern")
    return 1.0 - G / np.sqrt(np.outer(d, d))


def _rdm_sqeuclidean(G, s, F, ids):
    d = np.diag(G)
    return np.maximum(d[:, None] + d[None, :] - 2.0 * G, 0.0)


def _rdm_euclidean(G, s, F, ids):
    return np.sqrt(_rdm_sqeuclidean(G, s, F, ids))


_METRICS: dict[str, Callable[..., np.ndarray]] = {
    "correlation": _rdm_correlation,
    "euclidean": _rdm_euclidean,
    "sqeuclidean": _rdm_sqeuclidean,
    "cosine": _rdm_cosine,
}
METRICS: tuple[str, ...] = (*_METRICS, "crossnobis")


def _averaging_matrix(labels: np.ndarray, mask: np.ndarray, groups: np.ndarray) -> np.ndarray:
    A = (labels[None, :] == groups[:, None]) & mask[None, :]
    counts = A.sum(1, keepdims=True)
    return A / np.maximum(counts, 1)


def _crossnobis(G: np.ndarray, act: _Activations, conds: np.ndarray) -> np.ndarray:
    """Leave-one-run-out crossnobis as rsatoolbox.rdm.calc_rdm_crossnobis (divided by F)."""
    if act.runs is None:
        raise ShapeMismatchError(
            "metric 'crossnobis' needs repeated measurements: pass runs= (one label per row) "
            "or activations with a 'run' dim."
        )
    runs = act.runs
    if len(runs) != act.n_rows:
        raise ShapeMismatchError(f"{len(runs)} run labels for {act.n_rows} rows of activations.")
    folds = np.unique(runs)
    if len(folds) < 2:
        raise ShapeMismatchError("metric 'crossnobis' needs at least 2 runs.")
    Gn = G
    out = np.zeros((len(conds), len(conds)))
    for fold in folds:
        test = runs == fold
        missing = [c for c in conds if not np.any(test & (act.row_ids == c))]
        if missing:
            raise ShapeMismatchError(
                f"crossnobis: run {fold!r} has no measurement of stimulus {missing[0]!r}; "
                "every stimulus must be measured in every run."
            )
        At = _averaging_matrix(act.row_ids, test, conds)
        Ar = _averaging_matrix(act.row_ids, ~test, conds)
        K = Ar @ Gn @ At.T
        dk = np.diag(K)
        out += dk[:, None] + dk[None, :] - K - K.T
    out /= len(folds) * act.n_features
    np.fill_diagonal(out, 0.0)
    return out


def _whitening(precision: np.ndarray) -> np.ndarray:
    """W = N^(1/2), the symmetric square root of a noise precision N (elementwise for a diagonal).

    Raises InvalidDataError for NaN/inf, an asymmetric or a non-positive-semidefinite N.
    """
    if not np.all(np.isfinite(precision)):
        raise InvalidDataError("noise contains NaN/inf values; pass a finite noise precision.")
    if precision.ndim == 1:
        if (precision < 0).any():
            raise InvalidDataError(
                f"noise (a diagonal precision) has {int((precision < 0).sum())} negative value(s); "
                "precisions (1 / variance) must be >= 0."
            )
        return np.sqrt(precision)
    scale = max(float(np.abs(precision).max(initial=0.0)), 1e-300)
    if np.abs(precision - precision.T).max(initial=0.0) > 1e-8 * scale:
        raise InvalidDataError(
            "noise must be a symmetric precision matrix (the inverse of a noise covariance); "
            "symmetrize it with (N + N.T) / 2 if the asymmetry is numerical."
        )
    vals, vecs = np.linalg.eigh((precision + precision.T) / 2.0)
    if vals.min(initial=0.0) < -1e-8 * scale:
        raise InvalidDataError(
            f"noise is not positive semi-definite (smallest eigenvalue {vals.min():.3g}); pass a "
            "precision matrix, e.g. np.linalg.inv of a (shrunk) noise covariance."
        )
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def _unique_in_order(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique values in order of first appearance, and the index of that appearance."""
    _, first = np.unique(values, return_index=True)
    first = np.sort(first)
    return values[first], first


def _compute_one(act: _Activations, metric: str, noise, device, chunk_size, dtype) -> xr.DataArray:
    if noise is not None:
        noise = np.asarray(noise, dtype=np.float64)
        if noise.ndim == 2 and noise.shape != (act.n_features, act.n_features) or (
            noise.ndim == 1 and noise.shape[0] != act.n_features
        ) or noise.ndim not in (1, 2):
            raise ShapeMismatchError(
                f"noise must be a ({act.n_features}, {act.n_features}) precision matrix or a "
                f"length-{act.n_features} diagonal, got shape {noise.shape}."
            )
        noise = _whitening(noise)
    G, s = _gram(act, noise, device, chunk_size, dtype)
    conds, first = _unique_in_order(act.row_ids)
    if metric == "crossnobis":
        D = _crossnobis(G, act, conds)
    else:
        if len(conds) != act.n_rows:  # repeated measurements: average patterns first
            A = _averaging_matrix(act.row_ids, np.ones(act.n_rows, bool), conds)
            G, s = A @ G @ A.T, A @ s
        D = _METRICS[metric](G, s, float(act.n_features), conds)
        D = (D + D.T) / 2.0
        np.fill_diagonal(D, 0.0)
    coords: dict[str, Any] = {"stimulus": conds, "stimulus2": conds.copy()}
    for name, values in act.pattern_coords.items():
        coords[name] = ("stimulus", values[first])
        coords[f"{name}2"] = ("stimulus2", values[first])
    attrs = _clean_attrs({k: act.attrs[k] for k in _PROVENANCE_KEYS if k in act.attrs})
    attrs.update(metric=metric, n_features=int(act.n_features), neurocnn_version=version())
    if metric == "crossnobis":
        attrs["n_runs"] = int(len(np.unique(act.runs)))
    return xr.DataArray(D, dims=("stimulus", "stimulus2"), coords=coords, attrs=attrs)


def compute_rdm(
    activations: xr.DataArray | np.ndarray | torch.Tensor | Mapping[str, Any],
    *,
    metric: Metric = "correlation",
    runs: Sequence[Any] | np.ndarray | None = None,
    noise: np.ndarray | None = None,
    stimulus_ids: Sequence[str] | None = None,
    device: str = "cpu",
    chunk_size: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> xr.DataArray:
    """Compute a representational dissimilarity matrix from activations.

    All metrics are computed from the Gram matrix ``X X^T`` (and row sums), which is
    accumulated over chunks of features in float64 with torch (BLAS on CPU, cuBLAS on
    CUDA). A zarr- or dask-backed DataArray is read one chunk of features at a time, so
    layers larger than memory work.

    Parameters
    ----------
    activations : xr.DataArray, ndarray, torch.Tensor or dict of them
        DataArray with a ``stimulus`` dim (coords = stimulus ids, other coords on that
        dim are kept as metadata) and feature dims (``channel, y, x`` or ``unit``,
        flattened); an optional ``run`` dim holds repeated measurements. An array is
        ``(n_rows, n_features, ...)``. A dict maps layer names to such inputs and
        gives a stack with a ``layer`` dim.
    metric : {"correlation", "euclidean", "sqeuclidean", "cosine", "crossnobis"}
        ``correlation`` = 1 - Pearson r, ``euclidean``/``sqeuclidean``/``cosine`` as
        in ``scipy.spatial.distance.pdist``. ``crossnobis`` is the leave-one-run-out
        cross-validated Mahalanobis distance divided by the number of features, as
        ``rsatoolbox.rdm.calc_rdm(method="crossnobis")``.
    runs : sequence, optional
        Run label of each row (rows with the same stimulus id are repeated
        measurements). Needed for ``crossnobis`` unless there is a ``run`` dim. With
        other metrics, repeated measurements are averaged per stimulus.
    noise : ndarray, optional
        Noise precision matrix ``N`` ``(n_features, n_features)`` (symmetric positive
        semi-definite) or its diagonal ``(n_features,)``; identity if None. Every metric
        is then computed on the whitened patterns ``Y = X N^(1/2)`` (``N^(1/2)`` the
        symmetric square root; ``sqrt(N)`` elementwise for a diagonal): ``euclidean``
        is the Mahalanobis distance, ``crossnobis`` as rsatoolbox's, and
        ``correlation`` is exactly ``pdist(Y, "correlation")`` (rsatoolbox ignores the
        noise for correlation). A full matrix needs all features in memory at once.
    stimulus_ids : sequence of str, optional
        Ids of the rows of an array input (default ``"0"``, ``"1"``, ...).
    device : str
        torch device, e.g. ``"cpu"`` or ``"cuda"``.
    chunk_size : int, optional
        Number of features per chunk (default: about 256 MiB of float64 per chunk).
    dtype : torch.dtype
        dtype of the chunk products; they are always accumulated in float64.

    Returns
    -------
    xr.DataArray
        Dims ``("stimulus", "stimulus2")`` (``("layer", "stimulus", "stimulus2")`` for a
        dict), stimulus ids on both axes, metadata coords (``category`` on
        ``stimulus``, ``category2`` on ``stimulus2``), attrs ``metric``, ``n_features``,
        ``neurocnn_version`` and the input's ``model``, ``weights_sha256``, ``layer``...

    Raises
    ------
    UnknownNameError
        Unknown metric.
    InvalidDataError
        NaN/inf activations, or a constant (correlation) / all-zero (cosine) pattern;
        the message names the stimulus.
    ShapeMismatchError
        No ``stimulus`` dim, wrong id/run/noise lengths, crossnobis without runs.

    Examples
    --------
    >>> rdm = compute_rdm(np.random.default_rng(0).normal(size=(5, 20)))
    >>> rdm.dims
    ('stimulus', 'stimulus2')
    """
    check_option("metric", metric, METRICS)
    if isinstance(activations, Mapping):
        return _stack_layers({
            str(k): compute_rdm(v, metric=metric, runs=runs, noise=noise, stimulus_ids=stimulus_ids,
                                device=device, chunk_size=chunk_size, dtype=dtype)
            for k, v in activations.items()
        })
    if chunk_size is not None:
        check_positive_int("chunk_size", chunk_size)
    act = _activations(activations, runs, stimulus_ids)
    logger.debug("compute_rdm: %d rows x %d features, metric %s", act.n_rows, act.n_features, metric)
    return _compute_one(act, metric, noise, device, chunk_size, dtype)


def category_model_rdms(categories: Sequence[str], groupings: Mapping[str, Mapping[str, str]]) -> xr.DataArray:
    """Binary model RDMs from category groupings (0 within a group, 1 between).

    Parameters
    ----------
    categories : sequence of str
        Stimulus ids (e.g. the Haxby categories).
    groupings : dict
        ``{model name: {category: group}}``.

    Returns
    -------
    xr.DataArray
        Dims ``("layer", "stimulus", "stimulus2")``, one RDM per grouping.

    Raises
    ------
    ShapeMismatchError
        A grouping misses a category.

    Examples
    --------
    >>> rdms = category_model_rdms(["a", "b", "c"], {"m": {"a": "x", "b": "x", "c": "y"}})
    >>> float(rdms.sel(layer="m", stimulus="a", stimulus2="c"))
    1.0
    """
    cats = np.asarray(categories).astype(str)
    mats = []
    for name, g in groupings.items():
        missing = [c for c in cats if c not in g]
        if missing:
            raise ShapeMismatchError(f"grouping {name!r} has no group for {missing}.")
        lab = np.array([g[c] for c in cats])
        mats.append((lab[:, None] != lab[None, :]).astype(np.float64))
    return xr.DataArray(np.stack(mats), dims=("layer", "stimulus", "stimulus2"),
                        coords={"layer": list(groupings), "stimulus": cats, "stimulus2": cats.copy()},
                        attrs={"metric": "category"})
