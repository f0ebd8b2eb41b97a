"""Cross-validated ridge encoding models of layers, solved with himalaya in kernel form."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from .._validation import check_option, check_positive_int
from .._version import version
from ..exceptions import InvalidDataError
from . import _kernels
from ._data import Responses, align, as_layers, as_responses
from .scores import permutation_null, pooled_scores, split_half_reliability

__all__ = ["DEFAULT_ALPHAS", "encoding_splits", "fit_encoding"]

logger = logging.getLogger(__name__)

#: Default ridge penalties, relative to the mean eigenvalue of each training-fold kernel.
DEFAULT_ALPHAS = np.logspace(-3, 4, 15)

_BACKENDS = ("numpy", "torch", "torch_cuda")
_REDUCE = ("none", "pca", "srp")
Split = tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]


def encoding_splits(
    n_stimuli: int, *, n_folds: int = 5, n_inner_folds: int = 5, groups: Any = None, seed: int = 0,
) -> list[Split]:
    """Return the outer folds and, within each training set, the inner folds ``fit_encoding`` uses.

    Without ``groups``: shuffled ``KFold`` (outer seeded by ``seed``, inner by
    ``seed + 1 + fold``). With ``groups`` (run or session per stimulus): ``GroupKFold``
    outside and inside, so no run is split between training and test.

    Returns
    -------
    list of (train, test, inner)
        Index arrays into the stimuli; ``inner`` lists (train, validation) pairs
        indexing ``train``'s positions.

    Raises
    ------
    InvalidDataError
        Fewer than 3 test stimuli per outer fold or 2 per inner fold, or fewer groups
        than folds.
    """
    from sklearn.model_selection import GroupKFold, KFold

    n_folds, n_inner_folds = check_positive_int("n_folds", n_folds), check_positive_int("n_inner_folds", n_inner_folds)
    if n_folds < 2 or n_inner_folds < 2:
        raise InvalidDataError(f"n_folds and n_inner_folds must be at least 2; got {n_folds} and {n_inner_folds}.")
    if n_stimuli // n_folds < 3:
        raise InvalidDataError(
            f"{n_stimuli} stimuli in {n_folds} outer folds leaves {n_stimuli // n_folds} test stimuli per fold; "
            "at least 3 are needed for a held-out correlation. Use fewer folds or more stimuli."
        )
    min_train = n_stimuli - -(-n_stimuli // n_folds)
    if min_train // n_inner_folds < 2:
        raise InvalidDataError(
            f"Training folds of {min_train} stimuli in {n_inner_folds} inner folds leave fewer than 2 per "
            "validation fold; use fewer inner folds or more stimuli."
        )
    index = np.arange(n_stimuli)
    if groups is None:
        outer = KFold(n_folds, shuffle=True, random_state=seed).split(index)
        inner_of = lambda fold, train: list(KFold(n_inner_folds, shuffle=True, random_state=seed + 1 + fold).split(train))
    else:
        groups = np.asarray(groups)
        n_groups = len(np.unique(groups))
        if n_groups < n_folds:
            raise InvalidDataError(
                f"Outer folds are grouped by run/session, but there are {n_groups} groups for {n_folds} folds; "
                "use n_folds <= the number of runs."
            )
        outer = GroupKFold(n_folds).split(index, groups=groups)

        def inner_of(fold: int, train: np.ndarray) -> list:
            g = groups[train]
            if len(np.unique(g)) < n_inner_folds:
                raise InvalidDataError(
                    f"A training fold holds {len(np.unique(g))} runs/sessions, fewer than n_inner_folds="
                    f"{n_inner_folds}; use fewer inner folds or more runs."
                )
            return list(GroupKFold(n_inner_folds).split(train, groups=g))

    return [(train, test, inner_of(fold, train)) for fold, (train, test) in enumerate(outer)]


@contextlib.contextmanager
def _himalaya_backend(backend: str) -> Iterator[Any]:
    from himalaya.backend import get_backend, set_backend

    previous = get_backend().name
    try:
        yield set_backend(backend, on_error="raise")
    finally:
        set_backend(previous, on_error="raise")


def _resolve_backend(backend: str | None, device: str | None) -> str:
    if backend is None:
        backend = "numpy" if device is None or str(device) == "cpu" else "torch_cuda"
    backend = check_option("himalaya backend", backend, _BACKENDS)
    if device is not None and str(device).startswith("cuda") and backend != "torch_cuda":
        raise InvalidDataError(f"device={device!r} needs backend='torch_cuda' (got {backend!r}).")
    return backend


def _scaled_alphas(alphas: np.ndarray | None, Ktr: np.ndarray) -> np.ndarray:
    if alphas is not None:
        return alphas
    n = Ktr.shape[0]
    trace = np.trace(Ktr) - Ktr.sum() / n  # trace of the centered kernel
    return DEFAULT_ALPHAS * max(trace / n, np.finfo(float).tiny)


def _fit_ridge(B: Any, Ktr: np.ndarray, Kte: np.ndarray, Ytr: np.ndarray, alphas: np.ndarray,
               inner: list, targets_batch: int) -> tuple[np.ndarray, np.ndarray]:
    from himalaya.kernel_ridge import KernelRidgeCV

    model = KernelRidgeCV(alphas=alphas, kernel="precomputed", fit_intercept=True, cv=inner,
                          solver_params={"n_targets_batch": targets_batch, "n_targets_batch_refit": targets_batch})
    model.fit(B.asarray(Ktr), B.asarray(Ytr))
    prediction = B.to_numpy(model.predict(B.asarray(Kte)))
    return np.asarray(prediction, dtype=np.float64), np.asarray(B.to_numpy(model.best_alphas_), dtype=np.float64)


def _fit_banded(B: Any, Ktrs: list[np.ndarray], Ktes: list[np.ndarray], Ytr: np.ndarray, alphas: np.ndarray,
                inner: list, n_iter: int, seed: int, targets_batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Banded ridge (one band per layer) on train-centered, trace-normalized kernels."""
    from himalaya.kernel_ridge import MultipleKernelRidgeCV

    mean = Ytr.mean(axis=0)
    model = MultipleKernelRidgeCV(
        kernels="precomputed", solver="random_search", fit_intercept=False, cv=inner, random_state=seed,
        solver_params={"n_iter": n_iter, "alphas": alphas, "progress_bar": False,
                       "n_targets_batch": targets_batch, "n_targets_batch_refit": targets_batch},
    )
    model.fit(B.asarray(np.stack(Ktrs)), B.asarray(Ytr - mean))
    split = np.asarray(B.to_numpy(model.predict(B.asarray(np.stack(Ktes)), split=True)), dtype=np.float64)
    deltas = np.asarray(B.to_numpy(model.deltas_), dtype=np.float64)
    weights = np.exp(deltas)
    return split, weights / weights.sum(axis=0, keepdims=True)


def _layer_kernels(layers: list, rows: np.ndarray, reduce: str, n_components: int | None, seed: int,
                   block_bytes: int, progress: bool) -> list[np.ndarray]:
    kernels = []
    for layer in tqdm(layers, desc="layer kernels", disable=not progress):
        data = layer.data if np.array_equal(rows, np.arange(layer.data.shape[0])) else layer.data[rows]
        if reduce == "srp" and n_components < layer.n_features:
            Z = _kernels.sparse_projection(data, n_components, seed=seed, block_bytes=block_bytes)
            kernels.append(Z @ Z.T)
        else:
            kernels.append(_kernels.linear_kernel(data, block_bytes=block_bytes))
    return kernels


def _fold_kernels(K: np.ndarray, train: np.ndarray, test: np.ndarray, reduce: str,
                  n_components: int | None, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    if reduce == "pca":
        Ktr, Kte = _kernels.pca_kernels(K, train, test, n_components)
    elif normalize:
        Ktr, Kte = _kernels.center_train(K, train, test)
    else:
        return K[np.ix_(train, train)], K[np.ix_(test, train)]
    if normalize:
        scale = max(np.trace(Ktr) / Ktr.shape[0], np.finfo(float).tiny)
        Ktr, Kte = Ktr / scale, Kte / scale
    return Ktr, Kte


def _check_alphas(alphas: Any) -> np.ndarray | None:
    if alphas is None:
        return None
    alphas = np.sort(np.atleast_1d(np.asarray(alphas, dtype=np.float64)))
    if alphas.ndim != 1 or not alphas.size or not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
        raise InvalidDataError(f"alphas must be positive finite numbers; got {alphas.tolist()}.")
    return alphas


def _ceiling(noise_ceiling: Any, resp: Responses, rows: np.ndarray, seed: int) -> tuple[np.ndarray | None, str]:
    if noise_ceiling is None:
        if resp.repeats is None:
            return None, "none"
        noise_ceiling = "split_half"
    if isinstance(noise_ceiling, str):
        check_option("noise_ceiling", noise_ceiling, ("split_half",))
        if resp.repeats is None:
            raise InvalidDataError(
                "noise_ceiling='split_half' needs repeated measurements: responses with a 'repeat' (or 'run') dim."
            )
        return split_half_reliability(resp.repeats[rows], seed=seed), "split_half_spearman_brown"
    values = np.asarray(getattr(noise_ceiling, "values", noise_ceiling), dtype=np.float64).ravel()
    if values.shape != (resp.data.shape[1],) or not np.all(np.isfinite(values)):
        raise InvalidDataError(
            f"noise_ceiling must hold one finite reliability (R^2 ceiling) per target ({resp.data.shape[1]}); "
            f"got shape {values.shape}."
        )
    return values, "given"


def _cross_validate(kernels: list[np.ndarray], Y: np.ndarray, splits: list[Split], alphas: np.ndarray | None,
                    reduce: str, n_components: int | None, backend: str, block_bytes: int,
                    progress: bool) -> tuple[np.ndarray, np.ndarray]:
    n, T = Y.shape
    n_alphas = len(alphas) if alphas is not None else len(DEFAULT_ALPHAS)
    batch = int(max(1, min(T, block_bytes // (8 * n_alphas * n))))
    prediction = np.zeros((len(kernels), n, T))
    chosen = np.zeros((len(kernels), len(splits), T))
    with _himalaya_backend(backend) as B:
        bar = tqdm(total=len(kernels) * len(splits), desc="encoding folds", disable=not progress)
        for f, (train, test, inner) in enumerate(splits):
            for i, K in enumerate(kernels):
                Ktr, Kte = _fold_kernels(K, train, test, reduce, n_components, normalize=False)
                prediction[i, test], chosen[i, f] = _fit_ridge(
                    B, Ktr, Kte, Y[train], _scaled_alphas(alphas, Ktr), inner, batch)
                bar.update()
        bar.close()
    return prediction, chosen


def _cross_validate_banded(kernels: list[np.ndarray], Y: np.ndarray, splits: list[Split], alphas: np.ndarray | None,
                           reduce: str, n_components: int | None, backend: str, n_iter: int, seed: int,
                           block_bytes: int, progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, T = Y.shape
    grid = alphas if alphas is not None else DEFAULT_ALPHAS
    batch = int(max(1, min(T, block_bytes // (8 * len(grid) * n))))
    split = np.zeros((len(kernels), n, T))
    residual = np.zeros((n, T))
    weights = np.zeros((len(kernels), len(splits), T))
    with _himalaya_backend(backend) as B:
        for f, (train, test, inner) in enumerate(tqdm(splits, desc="banded ridge folds", disable=not progress)):
            pairs = [_fold_kernels(K, train, test, reduce, n_components, normalize=True) for K in kernels]
            split[:, test], weights[:, f] = _fit_banded(
                B, [p[0] for p in pairs], [p[1] for p in pairs], Y[train], grid, inner, n_iter, seed + f, batch)
            residual[test] = Y[test] - Y[train].mean(axis=0)
    return split, residual, weights


def fit_encoding(
    features: Any,
    responses: Any,
    *,
    alphas: Sequence[float] | np.ndarray | None = None,
    n_folds: int = 5,
    n_inner_folds: int = 5,
    groups: str | Sequence | np.ndarray | None = None,
    reduce: Literal["none", "pca", "srp"] | None = None,
    n_components: int | None = None,
    banded: bool = False,
    n_iter: int = 100,
    noise_ceiling: Literal["split_half"] | np.ndarray | xr.DataArray | None = None,
    n_permutations: int = 0,
    keep_predictions: bool = False,
    backend: Literal["numpy", "torch", "torch_cuda"] | None = None,
    device: str | None = None,
    mask: Any = None,
    stimulus_ids: Sequence[str] | None = None,
    block_bytes: int = 2**28,
    seed: int = 0,
    progress: bool = True,
) -> xr.Dataset:
    """Cross-validated ridge encoding models: predict each target from each layer's features.

    For every layer and outer fold, a ridge regression with an intercept is fitted on
    the training stimuli (penalty chosen per target by inner cross-validation on the
    training stimuli only) and predicts the held-out stimuli; scores are computed on
    the held-out predictions pooled over folds. The solver is himalaya's kernel ridge
    on each layer's linear kernel ``X @ X.T``, identical to primal ridge on ``X`` but
    built once per layer, streamed in blocks of ``block_bytes`` (zarr/dask layers are
    never loaded whole).

    Parameters
    ----------
    features : xarray.DataArray, array, or dict of them
        Layer activations as :meth:`VirtualSubject.activations` returns them (in memory
        or zarr/dask-backed), stimuli first; trailing dims are flattened into features.
    responses : xarray.DataArray or array
        ``stimulus`` x one target dim (``voxel``, ``neuron``, ``sensor``, ...), optionally
        with a ``repeat`` (or ``run``) dim of repeated measurements (averaged for the
        fit, used for the noise ceiling). Stimuli are matched to the features by id and
        reordered; unknown ids are refused. Or a 4D NIfTI (path or image) with ``mask``
        (see :func:`responses_from_nifti`).
    alphas : sequence of float, optional
        Ridge penalties. Default: :data:`DEFAULT_ALPHAS` times the mean eigenvalue of
        each training fold's centered kernel (scale-free).
    n_folds, n_inner_folds : int
        Outer folds (scored) and inner folds (penalty choice).
    groups : str or array, optional
        Run/session of each stimulus (a coordinate name of ``responses`` or labels):
        folds never split a group. Default: the ``run`` or ``session`` coordinate
        along ``stimulus`` when present.
    reduce : {"none", "pca", "srp"}, optional
        Dimensionality reduction to ``n_components``: PCA fitted on each training fold
        only (test stimuli projected with the training axes), or a sparse random
        projection (data-independent, streamed).
    n_components : int, optional
        Components kept by ``reduce``.
    banded : bool
        Also fit banded ridge across the layers (one band per layer, himalaya's
        ``MultipleKernelRidgeCV`` with random search over ``n_iter`` band weightings),
        to ask which layer explains which target.
    n_iter : int
        Random-search samples of band weights (``banded`` only).
    noise_ceiling : "split_half", array or DataArray, optional
        Per-target ceiling of R^2 (reliability). Default: split-half with
        Spearman-Brown when ``responses`` has repeats, else none.
    n_permutations : int
        Permutations of the held-out stimulus pairing (within folds) for ``p_value``
        and max-statistic ``p_fwe``; 0 skips them.
    keep_predictions : bool
        Keep the held-out predictions (variable ``prediction``).
    backend : {"numpy", "torch", "torch_cuda"}, optional
        himalaya backend (default numpy; ``torch_cuda`` when ``device`` is CUDA).
    device : str, optional
        ``"cpu"`` or ``"cuda"``.
    mask : path or Nifti1Image, optional
        With a 4D NIfTI ``responses``: the voxels to fit (targets).
    stimulus_ids : sequence of str, optional
        With a 4D NIfTI ``responses``: the stimulus of each volume (default: the
        features' stimuli, in order).
    block_bytes : int
        Memory bound of one feature block while building kernels.
    seed : int
        Seed of folds, random projection, band search and permutations.
    progress : bool
        Show progress bars.

    Returns
    -------
    xarray.Dataset
        Dims ``layer``, the target dim, ``stimulus``, ``fold``. Variables ``correlation``
        and ``r2`` (layer, target), ``alpha`` (layer, fold, target), ``best_layer`` and
        ``best_r2`` (target), ``fold_of_stimulus`` (stimulus); with a ceiling
        ``noise_ceiling``, ``correlation_normalized`` (r / sqrt(ceiling)) and
        ``r2_normalized`` (R^2 / ceiling); with permutations ``p_value``, ``p_fwe``; with
        ``banded`` ``banded_r2`` (target), ``banded_r2_split`` and ``banded_weight``
        (layer, target), ``banded_best_layer``. Provenance in attrs.

    Raises
    ------
    ShapeMismatchError
        Stimulus ids that do not match, bad dims.
    InvalidDataError
        NaN/inf responses, constant targets, too few stimuli per fold or groups per
        fold, bad penalties or ceiling.
    UnknownNameError
        Unknown ``reduce`` or ``backend``.

    Examples
    --------
    >>> acts = subject.activations("92images", ["stage3", "stage5"])  # doctest: +SKIP
    >>> result = fit_encoding(acts, responses, noise_ceiling="split_half")  # doctest: +SKIP
    >>> result.best_layer.to_series().value_counts()  # doctest: +SKIP
    """
    reduce = check_option("reduce", reduce or "none", _REDUCE)
    if reduce != "none":
        n_components = check_positive_int("n_components", n_components)
    backend = _resolve_backend(backend, device)
    alphas = _check_alphas(alphas)
    n_iter = check_positive_int("n_iter", n_iter)
    layers = as_layers(features)
    if mask is not None:
        from .maps import responses_from_nifti

        ids = stimulus_ids if stimulus_ids is not None else layers[0].ids
        if ids is None:
            ids = [f"stimulus{i}" for i in range(layers[0].data.shape[0])]
        responses = responses_from_nifti(responses, mask, stimulus_ids=ids)
    resp = as_responses(responses, groups=groups)
    frows, rrows = align(layers, resp)
    Y = resp.data[rrows]
    group_values = resp.groups[rrows] if resp.groups is not None else None
    splits = encoding_splits(len(frows), n_folds=n_folds, n_inner_folds=n_inner_folds, groups=group_values, seed=seed)
    if reduce == "pca" and n_components > min(len(t) for t, _, _ in splits):
        raise InvalidDataError(f"n_components={n_components} exceeds the smallest training fold; PCA keeps at most that many.")
    ceiling, ceiling_method = _ceiling(noise_ceiling, resp, rrows, seed)
    kernels = _layer_kernels(layers, frows, reduce, n_components, seed, block_bytes, progress)
    prediction, chosen = _cross_validate(kernels, Y, splits, alphas, reduce, n_components, backend, block_bytes, progress)
    folds = np.zeros(len(frows), dtype=np.int64)
    for f, (_, test, _) in enumerate(splits):
        folds[test] = f
    from ._result import build_result

    result = build_result(layers, resp, frows, Y, prediction, chosen, folds, ceiling, keep_predictions)
    if n_permutations:
        p_value, p_fwe = permutation_null(Y, prediction, folds, n_permutations=n_permutations, seed=seed, progress=progress)
        result["p_value"] = (("layer", resp.target_dim), p_value)
        result["p_fwe"] = (("layer", resp.target_dim), p_fwe)
    if banded:
        from himalaya.scoring import r2_score_split

        split, residual, weights = _cross_validate_banded(
            kernels, Y, splits, alphas, reduce, n_components, backend, n_iter, seed, block_bytes, progress)
        full = split.sum(axis=0) + (Y - residual)
        _, banded_r2 = pooled_scores(Y, full)
        r2_split = np.asarray(r2_score_split(residual - residual.mean(axis=0), split - split.mean(axis=1, keepdims=True)))
        result["banded_r2"] = ((resp.target_dim,), banded_r2)
        result["banded_r2_split"] = (("layer", resp.target_dim), r2_split)
        result["banded_weight"] = (("layer", resp.target_dim), weights.mean(axis=1))
        result["banded_best_layer"] = ((resp.target_dim,), result.layer.values[np.argmax(r2_split, axis=0)])
    result.attrs.update({
        "method": "ridge_kernel_himalaya", "backend": backend, "n_folds": int(n_folds),
        "n_inner_folds": int(n_inner_folds), "grouped_by": resp.group_name or "none",
        "alphas": [float(a) for a in alphas] if alphas is not None else "relative",
        "alphas_relative": [float(a) for a in DEFAULT_ALPHAS] if alphas is None else "none",
        "reduce": reduce, "n_components": int(n_components or 0), "banded": int(bool(banded)),
        "n_iter": int(n_iter) if banded else 0, "noise_ceiling": ceiling_method,
        "n_permutations": int(n_permutations), "seed": int(seed), "target_dim": resp.target_dim,
        "kernel_bytes": int(sum(K.nbytes for K in kernels)), "block_bytes": int(block_bytes),
        "neurocnn_version": version(),
    })
    return result
