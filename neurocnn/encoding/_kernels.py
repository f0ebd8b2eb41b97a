"""Linear kernels of big layers, computed in memory-bounded blocks (private).

A layer enters every fit only through its stimulus x stimulus linear kernel
``X @ X.T``: ridge regression, train-fold PCA and CKA all follow from it, so a
10k x 1M layer costs a 10k x 10k kernel, never the full matrix in float64.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..exceptions import InvalidDataError

__all__: list[str] = []


def _is_lazy(data: Any) -> bool:
    return not isinstance(data, np.ndarray) and hasattr(data, "compute")


def _load(block: Any) -> np.ndarray:
    block = block.compute() if _is_lazy(block) else block
    block = np.asarray(block, dtype=np.float64)
    if not np.all(np.isfinite(block)):
        raise InvalidDataError("Activations contain NaN/inf values; check the layer (or the stored zarr).")
    return block


def row_blocks(data: Any, block_bytes: int) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (rows, float64 block) over stimulus rows, each block at most ``block_bytes``."""
    for rows in _row_slices(data, block_bytes):
        yield rows, _load(data[rows])


def linear_kernel(data: Any, *, rows: np.ndarray | None = None, block_bytes: int = 2**28) -> np.ndarray:
    """Return ``X @ X.T`` (float64) of a numpy or dask (stimulus x feature) array, block by block.

    In-memory arrays are read in feature blocks (one pass); lazy arrays (zarr/dask,
    usually chunked along stimuli) in pairs of stimulus blocks, so at most two blocks of
    ``block_bytes`` are in memory at once.
    """
    if rows is not None:
        data = data[rows]
    n, p = data.shape
    K = np.zeros((n, n))
    if not _is_lazy(data):
        step = max(1, int(block_bytes // max(1, 8 * n)))
        for start in range(0, p, step):
            block = _load(data[:, start : start + step])
            K += block @ block.T
        return K
    blocks = list(_row_slices(data, block_bytes // 2))
    for i, rows_i in enumerate(blocks):
        Xi = _load(data[rows_i])
        K[rows_i, rows_i] = Xi @ Xi.T
        for rows_j in blocks[i + 1 :]:
            Kij = Xi @ _load(data[rows_j]).T
            K[rows_i, rows_j] = Kij
            K[rows_j, rows_i] = Kij.T
    return K


def _row_slices(data: Any, block_bytes: int) -> list[slice]:
    """Stimulus-row slices of at most ``block_bytes`` (float64), aligned to the array's chunks."""
    n, p = data.shape
    step = max(1, int(block_bytes // max(1, 8 * p)))
    chunks = getattr(data, "chunks", None)
    chunk = int(chunks[0][0]) if chunks and not isinstance(data, np.ndarray) else 1
    if step >= chunk:
        step -= step % chunk
    return [slice(start, min(n, start + step)) for start in range(0, n, step)]


def sparse_projection(data: Any, n_components: int, *, seed: int, block_bytes: int = 2**28) -> np.ndarray:
    """Project features on a sparse random matrix (Li et al. 2006; sklearn's default density), block by block.

    The projection does not depend on the data, so applying it to all stimuli leaks
    nothing from test folds into training.
    """
    from sklearn.random_projection import SparseRandomProjection

    n, p = data.shape
    srp = SparseRandomProjection(n_components=n_components, random_state=seed, dense_output=True)
    srp.fit(np.zeros((1, p), dtype=np.float32))
    out = np.empty((n, n_components))
    for rows, block in row_blocks(data, block_bytes):
        out[rows] = srp.transform(block)
    return out


def center_train(K: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the train-centered kernel blocks (train x train, test x train): features centered on train means."""
    Ktr = K[np.ix_(train, train)]
    Kte = K[np.ix_(test, train)]
    col = Ktr.mean(axis=0)
    total = col.mean()
    Ktr_c = Ktr - col[None, :] - col[:, None] + total
    Kte_c = Kte - Kte.mean(axis=1, keepdims=True) - col[None, :] + total
    return Ktr_c, Kte_c


def pca_kernels(K: np.ndarray, train: np.ndarray, test: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Kernels of the top ``n_components`` principal components fitted on the training stimuli only.

    PCA of the train-centered features is the eigendecomposition of the train-centered
    kernel; test stimuli are projected with the training means and axes, so nothing of
    the test stimuli enters the fit. Returns (train x train, test x train) kernels of the
    component scores.
    """
    Ktr, Kte = center_train(K, train, test)
    values, vectors = np.linalg.eigh(Ktr)
    top = np.argsort(values)[::-1][:n_components]
    values, vectors = np.clip(values[top], 0.0, None), vectors[:, top]
    keep = values > values.max() * 1e-12 if values.size and values.max() > 0 else np.zeros(len(values), bool)
    values, vectors = values[keep], vectors[:, keep]
    scale = np.sqrt(values)
    Ztr = vectors * scale
    Zte = Kte @ vectors / scale
    return Ztr @ Ztr.T, Zte @ Ztr.T
