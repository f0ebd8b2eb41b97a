"""Bootstrap draws (stimulus and subject multiplicities), chunking and percentile CIs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._stack import _Stack

_OVER = ("stimuli", "subjects", "both")


@dataclass
class _Samples:
    """Bootstrap multiplicities: stimuli (B, n) and subjects (B, k), None = not resampled."""

    stim: np.ndarray | None
    subj: np.ndarray | None

    def pair_weights(self, sl: slice, n: int) -> np.ndarray | None:
        if self.stim is None:
            return None
        iu = np.triu_indices(n, 1)
        c = self.stim[sl].astype(np.float64)
        return (c[:, iu[0]] * c[:, iu[1]])[:, None, :]

    def valid(self) -> np.ndarray:
        ok = np.ones(len(self.stim if self.stim is not None else self.subj), bool)
        if self.stim is not None:  # rsatoolbox: at least 3 distinct stimuli
            ok &= (self.stim > 0).sum(1) >= 3
        return ok


def _draw(rng: np.random.Generator, n_bootstrap: int, n: int, k: int, over: str) -> _Samples:
    def counts(size: int) -> np.ndarray:
        idx = rng.integers(0, size, size=(n_bootstrap, size))
        out = np.zeros((n_bootstrap, size), np.int64)
        np.add.at(out, (np.arange(n_bootstrap)[:, None], idx), 1)
        return out

    stim = counts(n) if over in ("stimuli", "both") else None
    subj = counts(k) if over in ("subjects", "both") else None
    return _Samples(stim, subj)


def _chunks(n_total: int, per: int, progress: bool, desc: str):
    from tqdm.auto import tqdm

    with tqdm(total=n_total, desc=desc, disable=not progress, leave=False) as bar:
        for start in range(0, n_total, per):
            stop = min(n_total, start + per)
            yield slice(start, stop)
            bar.update(stop - start)


# Elements of (samples x vectors x pairs) per bootstrap chunk. tau-a's planned path
# rebuilds its bin matrices per chunk, so larger chunks amortize them.
_CHUNK_ELEMENTS: dict[str, int] = {"tau_a": 2**24}


def _samples_per_chunk(n_vectors: int, n_pairs: int, method: str) -> int:
    budget = _CHUNK_ELEMENTS.get(method, 2**21)
    return int(max(1, min(256, budget // max(1, n_vectors * n_pairs))))


def _percentile_ci(x: np.ndarray, ci: float, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - ci) / 2.0
    return np.nanquantile(x, alpha, axis=axis), np.nanquantile(x, 1.0 - alpha, axis=axis)


def _p_greater_equal(diff: np.ndarray, axis: int = -1) -> np.ndarray:
    """One-sided bootstrap p-value of H0 'diff <= 0': (1 + #(diff <= 0)) / (1 + B)."""
    b = np.isfinite(diff).sum(axis)
    return (1.0 + (diff <= 0).sum(axis)) / (1.0 + b)


def _layer_names(st: _Stack, L: int) -> np.ndarray:
    if st.dim is not None and st.dim in st.coords:
        return np.asarray(st.coords[st.dim]).astype(str)
    return np.array([str(i) for i in range(L)])

