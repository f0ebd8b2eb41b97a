"""Representational dissimilarity matrices: computation, comparison, noise ceilings, resampling.

Model-brain RSA for a CNN "virtual subject":

* :func:`compute_rdm` turns activations (``xr.DataArray`` with a first dim ``stimulus``,
  a dict of them, or a plain array) into RDMs via Gram matrices accumulated chunk by
  chunk over features (torch/BLAS, CPU or CUDA, float64 accumulation), so zarr/dask
  backed layers larger than memory work.
* :func:`compare_rdms` compares stacks of RDMs many-vs-many with the methods of
  ``rsatoolbox.rdm.compare`` and the same numbers.
* :func:`noise_ceiling` and :func:`bootstrap_rdm_comparison` give Nili et al. (2014)
  noise ceilings and seeded, vectorized bootstraps over stimuli and/or subjects.
* :func:`meg_layer_time_correlation` gives layer x time curves with peak latencies.
* Loaders for the 92-image data, user RDM files, and rsatoolbox conversion.

RDM arrays are ``xr.DataArray`` with dims ``("stimulus", "stimulus2")`` and optional
leading stack dims (``"layer"``, ``"rdm"``, ``"time"``, ...). Stimulus ids are the
coordinates of both axes.

Bootstrap resampling of stimuli follows rsatoolbox (``bootstrap_sample_pattern`` +
``RDMs.subsample_pattern``): a stimulus drawn ``c`` times enters ``c`` times, pairs of a
stimulus with its own copies are dropped. Here this is done exactly without building
the resampled matrices: the dissimilarity of stimuli ``i < j`` enters with weight
``c_i * c_j`` (weighted ranks, weighted moments), which is what makes the bootstrap
vectorized over samples. Kendall's tau-a with such weights is counted exactly in
O(P sqrt(P)) per sample for fixed RDMs (value bins plus a bin-grid histogram, see
:func:`_tau_cd_planned`) and with scipy's O(P log P) count on the repeated entries for
RDMs pooled per sample (noise ceilings).
"""

from __future__ import annotations

import logging
import math
import pathlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.io
import scipy.stats
import torch
import xarray as xr

from ._version import version
from ._validation import check_finite, check_fraction, check_option, check_positive_int
from .scale import map_tasks
from .exceptions import InvalidDataError, MissingFileError, ShapeMismatchError

__all__ = [
    "METRICS",
    "COMPARE_METHODS",
    "compute_rdm",
    "compare_rdms",
    "noise_ceiling",
    "bootstrap_rdm_comparison",
    "meg_layer_time_correlation",
    "load_92images_brain_rdms",
    "load_92images_reference_rdms",
    "load_rdms",
    "load_meg_rdms",
    "to_rsatoolbox",
    "from_rsatoolbox",
]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

Metric = Literal["correlation", "euclidean", "sqeuclidean", "cosine", "crossnobis"]
CompareMethod = Literal[
    "spearman", "tau_a", "rho_a", "pearson", "corr", "cosine", "corr_cov", "cosine_cov"
]

_STACK = "rdm"
_PROVENANCE_KEYS = ("model", "weights_sha256", "layer", "alias", "relu", "preprocessing")
_DEFAULT_CHUNK_BYTES = 256 * 2**20
_TAU_PLAN_MAX_PAIRS = 20_000
_TAU_BLOCK_ELEMENTS = 2**22
_TAU_GRID_CELLS = 2**16
_SYMMETRY_RTOL = 1e-6


# ----------------------------------------------------------------------------- helpers
def _tensor(x: np.ndarray) -> torch.Tensor:
    """Zero-copy torch view of x where possible (copies read-only or strided arrays)."""
    a = np.ascontiguousarray(x)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _clean_attrs(attrs: Mapping[str, Any]) -> dict[str, str | int | float]:
    """Keep netCDF-safe attrs: str/int/float (bool -> int); drop None, dicts, others."""
    out: dict[str, str | int | float] = {}
    for key, value in attrs.items():
        if isinstance(value, (bool, np.bool_)):
            out[key] = int(value)
        elif isinstance(value, (str, int, float, np.integer, np.floating)):
            out[key] = value.item() if isinstance(value, np.generic) else value
    return out


def _n_from_pairs(n_pairs: int, what: str) -> int:
    n = int(round((1 + math.sqrt(1 + 8 * n_pairs)) / 2))
    if n * (n - 1) // 2 != n_pairs or n < 2:
        raise ShapeMismatchError(
            f"{what} has {n_pairs} entries, which is not n*(n-1)/2 for any n; pass square "
            "RDMs or condensed upper-triangle vectors (scipy.spatial.distance.squareform order)."
        )
    return n


def _to_square(vectors: np.ndarray, n: int) -> np.ndarray:
    """(k, P) condensed vectors -> (k, n, n) symmetric matrices with zero diagonal."""
    iu = np.triu_indices(n, 1)
    out = np.zeros((vectors.shape[0], n, n))
    out[:, iu[0], iu[1]] = vectors
    out[:, iu[1], iu[0]] = vectors
    return out


def _from_square(mats: np.ndarray, what: str, ids: Sequence[str] | None = None) -> np.ndarray:
    """(k, n, n) -> (k, P) after checking finiteness and symmetry."""
    n = mats.shape[-1]
    if mats.shape[-2] != n:
        raise ShapeMismatchError(f"{what} must be square, got shape {mats.shape}.")
    bad = ~np.isfinite(mats)
    if bad.any():
        i = np.argwhere(bad)[0][-2:]
        name = f" (stimulus {ids[i[0]]!r} vs {ids[i[1]]!r})" if ids is not None else ""
        raise InvalidDataError(
            f"{what} contains {int(bad.sum())} NaN/inf value(s), first at {tuple(i)}{name}. "
            "Remove those stimuli or impute the values before comparing."
        )
    scale = max(float(np.abs(mats).max(initial=0.0)), 1e-300)
    asym = np.abs(mats - np.swapaxes(mats, -1, -2))
    if (asym > _SYMMETRY_RTOL * scale).any():
        i = np.argwhere(asym > _SYMMETRY_RTOL * scale)[0][-2:]
        raise InvalidDataError(
            f"{what} is not symmetric (entry {tuple(i)} differs from its transpose by "
            f"{asym.max():.3g}). Pass dissimilarity matrices; symmetrize with (D + D.T) / 2 "
            "if the asymmetry is numerical noise."
        )
    iu = np.triu_indices(n, 1)
    return np.ascontiguousarray(mats[..., iu[0], iu[1]].reshape(-1, iu[0].size))


@dataclass
class _Stack:
    """RDMs as condensed vectors plus what is needed to label results."""

    vectors: np.ndarray  # (k, P) float64
    n: int
    ids: np.ndarray | None  # (n,) str
    dim: str | None  # stack dim name; None for a single RDM
    coords: dict[str, np.ndarray] = field(default_factory=dict)  # on the stack dim
    attrs: dict[str, Any] = field(default_factory=dict)
    pattern_coords: dict[str, np.ndarray] = field(default_factory=dict)


def _stack_dataarray(da: xr.DataArray, what: str) -> _Stack:
    if "stimulus" in da.dims and "stimulus2" in da.dims:
        lead = [d for d in da.dims if d not in ("stimulus", "stimulus2")]
        da = da.transpose(*lead, "stimulus", "stimulus2")
        ids = np.asarray(da["stimulus"].values).astype(str) if "stimulus" in da.coords else None
        ids2 = np.asarray(da["stimulus2"].values).astype(str) if "stimulus2" in da.coords else None
        mats = np.asarray(da.values, dtype=np.float64)
        if ids is not None and ids2 is not None and not np.array_equal(ids, ids2):
            order = _permutation(ids2, ids, what)
            mats = mats[..., order]
        n = mats.shape[-1]
        vectors = _from_square(mats.reshape(-1, n, n), what, ids)
        pattern_coords = {
            name: np.asarray(c.values)
            for name, c in da.coords.items()
            if c.dims == ("stimulus",) and name != "stimulus"
        }
    else:
        if da.ndim == 0:
            raise ShapeMismatchError(f"{what} is a scalar; pass RDMs.")
        lead = list(da.dims[:-1])
        vectors = np.asarray(da.values, dtype=np.float64).reshape(-1, da.shape[-1])
        check_finite(what, vectors)
        n = _n_from_pairs(vectors.shape[1], what)
        ids, pattern_coords = None, {}
    coords: dict[str, np.ndarray] = {}
    if not lead:
        dim = None
    elif len(lead) == 1:
        dim = str(lead[0])
        for name, c in da.coords.items():
            if c.dims == (dim,):
                coords[str(name)] = np.asarray(c.values)
    else:
        dim = _STACK
        grids = np.meshgrid(*[np.arange(da.sizes[d]) for d in lead], indexing="ij")
        for d, g in zip(lead, grids):
            values = np.asarray(da[d].values) if d in da.coords else np.arange(da.sizes[d])
            coords[str(d)] = values[g.ravel()]
    return _Stack(vectors, n, ids, dim, coords, dict(da.attrs), pattern_coords)


def _as_stack(x: Any, what: str) -> _Stack:
    """Normalize any accepted RDM input to a :class:`_Stack`."""
    if isinstance(x, _Stack):
        return x
    if isinstance(x, xr.DataArray):
        return _stack_dataarray(x, what)
    if isinstance(x, Mapping):
        return _stack_dataarray(_stack_layers({k: _as_dataarray(v, what) for k, v in x.items()}), what)
    if hasattr(x, "get_vectors") and hasattr(x, "pattern_descriptors"):
        return _stack_dataarray(from_rsatoolbox(x), what)
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        check_finite(what, arr)
        return _Stack(arr[None, :].copy(), _n_from_pairs(arr.size, what), None, None)
    if arr.ndim == 2 and arr.shape[0] == arr.shape[1]:
        return _Stack(_from_square(arr[None], what), arr.shape[0], None, None)
    if arr.ndim == 2:
        check_finite(what, arr)
        return _Stack(arr.copy(), _n_from_pairs(arr.shape[1], what), None, _STACK)
    if arr.ndim == 3:
        return _Stack(_from_square(arr, what), arr.shape[-1], None, _STACK)
    raise ShapeMismatchError(
        f"{what} has shape {arr.shape}; expected (n, n), (k, n, n), a condensed vector "
        "(n*(n-1)/2,) or a stack of them (k, n*(n-1)/2)."
    )


def _as_dataarray(x: Any, what: str) -> xr.DataArray:
    if isinstance(x, xr.DataArray):
        return x
    return _stack_to_dataarray(_as_stack(x, what))


def _stack_to_dataarray(st: _Stack) -> xr.DataArray:
    ids = st.ids if st.ids is not None else np.array([f"{i}" for i in range(st.n)])
    mats = _to_square(st.vectors, st.n)
    coords: dict[str, Any] = {"stimulus": ids, "stimulus2": ids.copy()}
    for name, values in st.pattern_coords.items():
        coords[name] = ("stimulus", values)
        coords[f"{name}2"] = ("stimulus2", values)
    if st.dim is None:
        return xr.DataArray(mats[0], dims=("stimulus", "stimulus2"), coords=coords,
                            attrs=_clean_attrs(st.attrs))
    for name, values in st.coords.items():
        coords[name] = (st.dim, values)
    return xr.DataArray(
        mats, dims=(st.dim, "stimulus", "stimulus2"), coords=coords, attrs=_clean_attrs(st.attrs)
    )


def _permutation(have: np.ndarray, want: np.ndarray, what: str) -> np.ndarray:
    """Indices p such that have[p] == want; ShapeMismatchError naming differing ids."""
    have, want = np.asarray(have).astype(str), np.asarray(want).astype(str)
    if len(np.unique(want)) != len(want) or len(np.unique(have)) != len(have):
        raise ShapeMismatchError(f"{what}: stimulus ids must be unique.")
    only_have = sorted(set(have) - set(want))
    only_want = sorted(set(want) - set(have))
    if only_have or only_want:
        raise ShapeMismatchError(
            f"{what}: stimulus ids differ ({len(have)} vs {len(want)} stimuli). Only in one: "
            f"{only_want[:5]}{' ...' if len(only_want) > 5 else ''}; only in the other: "
            f"{only_have[:5]}{' ...' if len(only_have) > 5 else ''}. Select the common "
            "stimuli (e.g. rdm.sel(stimulus=ids, stimulus2=ids)) before comparing."
        )
    index = {s: i for i, s in enumerate(have)}
    return np.array([index[s] for s in want])


def _align(a: _Stack, b: _Stack) -> np.ndarray:
    """b's vectors reordered to a's stimulus order."""
    if a.n != b.n:
        raise ShapeMismatchError(
            f"RDMs have different numbers of stimuli: {a.n} vs {b.n}. Select the common "
            "stimuli before comparing."
        )
    if a.ids is None or b.ids is None or np.array_equal(a.ids, b.ids):
        return b.vectors
    p = _permutation(b.ids, a.ids, "compare_rdms")
    iu = np.triu_indices(a.n, 1)
    i, j = np.minimum(p[iu[0]], p[iu[1]]), np.maximum(p[iu[0]], p[iu[1]])
    pos = i * a.n - i * (i + 1) // 2 + (j - i - 1)
    return b.vectors[:, pos]


# ------------------------------------------------------------------ weighted statistics
# Every comparison works on batched condensed vectors A (S|1, ka, P), B (S|1, kb, P)
# with optional pair weights w (S, 1, P) (bootstrap multiplicities) -> (S, ka, kb).
def _wsum(x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """Weighted sum over the last axis: x (S|1, k, P), w (S, 1, P) -> (S, k)."""
    if w is None:
        return x.sum(-1)
    if x.ndim == 3 and x.shape[0] == 1:
        return w[:, 0, :] @ x[0].T
    return np.matmul(x, np.swapaxes(w, -1, -2))[..., 0]


def _wcount(x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    return np.full(x.shape[:-1], float(x.shape[-1])) if w is None else np.broadcast_to(
        w.sum(-1), np.broadcast_shapes(x.shape[:-1], w.shape[:-1])
    )


def _wcenter(x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    return x - (_wsum(x, w) / _wcount(x, w))[..., None]


@dataclass
class _RankPlan:
    """Sort order and tie groups of fixed vectors (k, P), so that weighted ranks for
    any weights need no sorting: rank = (weight before the group) + (group weight + 1) / 2."""

    order: np.ndarray  # (k, P) argsort
    group: np.ndarray  # (k, P) group index of each entry, offset by row (k*G flat)
    starts: np.ndarray  # flat start positions of groups in the sorted (k*P) layout

    @classmethod
    def of(cls, V: np.ndarray) -> _RankPlan:
        V2 = V.reshape(-1, V.shape[-1])
        order = np.argsort(V2, axis=-1)
        xs = np.take_along_axis(V2, order, -1)
        new = np.ones(xs.shape, bool)
        new[:, 1:] = xs[:, 1:] != xs[:, :-1]
        gid_sorted = np.cumsum(new.ravel()) - 1  # global group ids over rows
        group = np.empty(V2.shape, np.int64)
        np.put_along_axis(group, order, gid_sorted.reshape(V2.shape), -1)
        return cls(order, group, np.flatnonzero(new.ravel()))

    def ranks(self, w: np.ndarray | None) -> np.ndarray:
        k, P = self.order.shape
        if w is None:
            w = np.ones((1, 1, P))
        ws = w[:, 0, :][:, self.order].reshape(w.shape[0], k * P)  # (S, k*P) sorted
        Wg = np.add.reduceat(ws, self.starts, axis=1)  # (S, G)
        cum = np.cumsum(Wg.reshape(w.shape[0], -1), axis=1)
        row_start = np.searchsorted(self.starts, np.arange(k) * P)  # first group per row
        base = np.concatenate([np.zeros((w.shape[0], 1)), cum], axis=1)[:, row_start]
        R = cum - (Wg - 1.0) / 2.0 - np.repeat(base, np.diff(np.r_[row_start, len(self.starts)]), axis=1)
        return R[:, self.group]  # (S, k, P)


def _wrank(x: np.ndarray, w: np.ndarray | None = None, order: Any = None) -> np.ndarray:
    """Average ranks of x along the last axis, each entry counted w times.

    Equals ``scipy.stats.rankdata`` of the vector in which entry p is repeated w_p times
    (a zero weight removes the entry), evaluated at the entries' positions. ``order``
    may be a :class:`_RankPlan` of x (fixed vectors: no sorting).
    """
    if isinstance(order, _RankPlan):
        return order.ranks(w)
    shape = np.broadcast_shapes(x.shape, x.shape if w is None else w.shape)
    xb = np.broadcast_to(x, shape)
    ob = np.argsort(xb, axis=-1)  # SIMD quicksort; tie order is irrelevant for average ranks
    xs = np.take_along_axis(xb, ob, -1)
    out = np.empty(shape)
    same = xs[..., 1:] == xs[..., :-1]
    if w is None and not same.any():
        np.put_along_axis(out, ob, np.broadcast_to(np.arange(1.0, shape[-1] + 1.0), shape), -1)
        return out
    ws = np.ones(shape) if w is None else np.take_along_axis(np.broadcast_to(w, shape), ob, -1)
    cs = np.cumsum(ws, -1)
    if not same.any():  # no ties: only copies of one entry tie
        np.put_along_axis(out, ob, cs - (ws - 1.0) / 2.0, -1)
        return out
    new = np.ones(shape, bool)
    new[..., 1:] = ~same
    last = np.ones(shape, bool)
    last[..., :-1] = ~same
    before = np.maximum.accumulate(np.where(new, cs - ws, -np.inf), -1)
    after = np.minimum.accumulate(np.where(last, cs, np.inf)[..., ::-1], -1)[..., ::-1]
    np.put_along_axis(out, ob, (before + after + 1.0) / 2.0, -1)
    return out


def _cmp_cosine(A, B, w=None):
    Aw = A if w is None else A * w
    num = np.matmul(Aw, np.swapaxes(B, -1, -2))
    na = np.sqrt(np.einsum("...p,...p->...", Aw, A))
    nb = np.sqrt(_wsum(B * B, w))
    den = na[..., :, None] * nb[..., None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    return np.where(den > 0, out, 0.0)  # rsatoolbox: zero-norm vectors compare as 0


def _cmp_pearson(A, B, w=None):
    """Weighted Pearson r from moments (one pass per input; inputs are RDM values or
    ranks, whose mean is not large against their spread, so float64 moments are exact
    to ~1e-13)."""
    if w is None:
        return _cmp_cosine(_wcenter(A, None), _wcenter(B, None))
    Aw, Bw = A * w, B * w
    n = w.sum(-1)[..., None]  # (S, 1, 1)
    sa, sb = Aw.sum(-1), Bw.sum(-1)  # (S, ka), (S, kb)
    num = np.matmul(Aw, np.swapaxes(B, -1, -2)) - sa[..., :, None] * sb[..., None, :] / n
    va = np.einsum("...p,...p->...", Aw, A) - sa**2 / n[..., 0]
    vb = np.einsum("...p,...p->...", Bw, B) - sb**2 / n[..., 0]
    den = np.sqrt(np.clip(va, 0.0, None))[..., :, None] * np.sqrt(np.clip(vb, 0.0, None))[..., None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    return np.where(den > 0, out, 0.0)


def _prep_none(x, w=None, order=None):
    return x


def _prep_rank(x, w=None, order=None):
    return _wrank(x, w, order)


def _cmp_rho_a(ra, rb, w=None):
    """rsatoolbox rho-a on (weighted) ranks: 12 * sum(ra_c * rb_c) / (n^3 - n)."""
    ra, rb = _wcenter(ra, w), _wcenter(rb, w)
    n = _wcount(ra[..., :1, :], w)[..., None]  # (S, 1, 1)
    return np.matmul(ra if w is None else ra * w, np.swapaxes(rb, -1, -2)) * 12.0 / (n**3 - n)


def _tie_pairs(x: np.ndarray) -> int:
    _, counts = np.unique(x, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def _tau_cd_scipy(x: np.ndarray, y: np.ndarray, tx: int, ty: int) -> int:
    """Exact concordant minus discordant pair count from scipy's O(n log n) tau-b.

    ``tau_b * sqrt((n0 - tx) * (n0 - ty))`` is the integer C - D up to rounding errors
    of ~1e-16 relative, so rounding recovers it exactly.
    """
    n0 = x.size * (x.size - 1) // 2
    if tx == n0 or ty == n0:  # a constant vector: every pair is tied
        return 0
    tau_b = scipy.stats.kendalltau(x, y).statistic
    return int(round(tau_b * math.sqrt(n0 - tx) * math.sqrt(n0 - ty)))


def _tau_block_size(n_pairs: int) -> int:
    """Bin size ~ sqrt(P): balances within-bin pairs (P * size) against the bin grid."""
    return max(4, 2 ** round(math.log2(math.sqrt(max(n_pairs, 1)))))


@dataclass
class _TauPlan:
    """Dense ranks and value bins of fixed vectors (k, P), for weighted tau-a.

    Entries are cut, in sorted order, into bins of consecutive values holding at most
    ``size`` entries, never splitting a tie group (a tie group larger than ``size``
    fills a bin of its own). Column P of ``rank``/``bins`` pads ``blocks``.
    """

    rank: np.ndarray  # (k, P + 1) float32 dense ranks (exact below 2**24)
    bins: np.ndarray  # (k, P + 1) int64 bin of each entry, increasing with the value
    n_bins: list[int]
    blocks: list[np.ndarray]  # per row (G, size) entries of the bins with >1 value, pad P
    size: int

    @classmethod
    def of(cls, V: np.ndarray) -> _TauPlan:
        V2 = V.reshape(-1, V.shape[-1])
        k, P = V2.shape
        size = _tau_block_size(P)
        rank = np.zeros((k, P + 1), np.float32)
        bins = np.zeros((k, P + 1), np.int64)
        n_bins, blocks = [], []
        for r, v in enumerate(V2):
            order = np.argsort(v, kind="stable")
            xs = v[order]
            new = np.r_[True, xs[1:] != xs[:-1]]
            rank[r, order] = np.cumsum(new) - 1
            starts = np.flatnonzero(new)
            lengths = np.diff(np.r_[starts, P])
            group_bin, spans = _pack_groups(starts, lengths, size)
            bins[r, order] = np.repeat(group_bin, lengths)
            n_bins.append(int(group_bin[-1]) + 1)
            idx = np.full((len(spans), size), P, np.int64)
            for g, (a, b) in enumerate(spans):
                idx[g, : b - a] = order[a:b]
            blocks.append(idx)
        return cls(rank, bins, n_bins, blocks, size)


def _pack_groups(starts: np.ndarray, lengths: np.ndarray, size: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Greedy bins of consecutive tie groups: bin of each group, and the sorted-position
    spans of the bins holding more than one value (the others have no untied pairs)."""
    if lengths.max() == 1:  # no ties: plain consecutive bins
        group_bin = np.arange(len(starts)) // size
        P = len(starts)
        return group_bin, [(a, min(a + size, P)) for a in range(0, P, size)]
    group_bin = np.empty(len(starts), np.int64)
    spans: list[tuple[int, int]] = []
    b, fill, first, n_groups = -1, size, 0, 0
    for g, (start, length) in enumerate(zip(starts.tolist(), lengths.tolist())):
        if fill + length > size or length > size:
            if n_groups > 1:
                spans.append((first, start))
            b, fill, first, n_groups = b + 1, 0, start, 0
        group_bin[g] = b
        fill += length
        n_groups += 1
    if n_groups > 1:
        spans.append((first, int(starts[-1] + lengths[-1])))
    return group_bin, spans


@dataclass
class _Planned:
    """Fixed vectors (1, k, P) with their :class:`_TauPlan` (tau-a's prepared form)."""

    values: np.ndarray
    plan: _TauPlan


def _prep_tau(x, w=None, order=None):
    return _Planned(x, order) if isinstance(order, _TauPlan) else x


def _block_forms(w: np.ndarray, blocks: np.ndarray, mask_keys: np.ndarray,
                 sign_keys: np.ndarray, dtype: type) -> np.ndarray:
    """sum over blocks and pairs p, q of a block of w_p w_q [m_p < m_q] sign(s_q - s_p).

    w (S, P + 1) with a zero pad column; blocks (G, size); mask_keys / sign_keys
    (r|1, P + 1), one of them with one row. Returns (S, r) in float64. Exact: the
    block sums are integers below 2**24 for float32 (checked by the caller). The
    matrices are built with numpy, the contractions are two torch batched matmuls.
    """
    G, size = blocks.shape
    S = w.shape[0]
    r = max(mask_keys.shape[0], sign_keys.shape[0])
    out = np.zeros((S, r))
    per = size * max(size, S)  # elements of X and of the product per block and row
    gstep = max(1, min(G, _TAU_BLOCK_ELEMENTS // per))
    rstep = max(1, _TAU_BLOCK_ELEMENTS // (gstep * per))
    for g0 in range(0, G, gstep):
        blk = blocks[g0 : g0 + gstep]
        g = blk.shape[0]
        wb = _tensor(w[:, blk].astype(dtype).transpose(1, 0, 2))  # (g, S, size)
        mk, sk = mask_keys[:, blk], sign_keys[:, blk]  # (r|1, g, size)
        for r0 in range(0, r, rstep):
            c = min(r, r0 + rstep) - r0
            m = mk if mk.shape[0] == 1 else mk[r0 : r0 + c]
            s = sk if sk.shape[0] == 1 else sk[r0 : r0 + c]
            X = np.where(m[..., :, None] < m[..., None, :], np.sign(s[..., None, :] - s[..., :, None]), 0)
            X = np.broadcast_to(X.astype(dtype), (c, g, size, size)).transpose(1, 2, 0, 3)
            T = torch.bmm(wb, _tensor(X).reshape(g, size, c * size))
            v = torch.bmm(T.view(g * S, c, size), wb.reshape(g * S, size, 1)).view(g, S, c)
            out[:, r0 : r0 + c] += v.to(torch.float64).sum(0).numpy()
    return out


def _grid_forms(w: np.ndarray, abins: np.ndarray, na: int, bbins: np.ndarray, nb: int) -> np.ndarray:
    """Pairs in different a-bins and different b-bins: sum of w_p w_q sign(b_q - b_p)
    over abin_p < abin_q, from the (a-bin, b-bin) weight histogram H of each sample:
    sum over cells of H * (weight in lower a-bins and lower b-bins - lower a-bins and
    higher b-bins). w (S, P) integer-valued, abins (P,), bbins (r, P) -> (S, r).

    Exact (integers in float64), in sample sub-chunks that stay in cache; numpy, as
    many small multithreaded ops stall on a busy machine.
    """
    S, P = w.shape
    r = bbins.shape[0]
    cells = abins[None, :] * nb + bbins  # (r, P)
    out = np.empty((S, r))
    sub = max(1, _TAU_GRID_CELLS // (na * nb))
    for s0 in range(0, S, sub):
        ws = w[s0 : s0 + sub]
        n = ws.shape[0]
        offsets = np.arange(n)[:, None] * (na * nb)
        for j in range(r):
            H = np.bincount((offsets + cells[j]).ravel(), weights=ws.ravel(),
                            minlength=n * na * nb).reshape(n, na, nb)
            low = np.zeros_like(H)  # weight in lower a-bins, per b-bin
            np.cumsum(H[:, :-1], 1, out=low[:, 1:])
            cum = np.cumsum(low, 2)  # ... and b-bins up to this one
            # lower b-bins - higher b-bins = (cum - low) - (row total - cum)
            out[s0 : s0 + n, j] = (2.0 * np.einsum("sab,sab->s", H, cum) - np.einsum("sab,sab->s", H, low)
                                   - np.einsum("sa,sa->s", cum[:, :, -1], H.sum(2)))
    return out


def _tau_cd_planned(pa: _TauPlan, pb: _TauPlan, w: np.ndarray) -> np.ndarray:
    """Weighted C - D of all pairs of fixed planned vectors, O(P sqrt(P)) per sample.

    C - D = sum over entries p, q of w_p w_q [a_p < a_q] sign(b_q - b_p), split into
    pairs in one bin of a, pairs in one bin of b (and different bins of a), and pairs in
    different bins of both (a weight histogram over the bin grid). w (S, P) -> (S, ka, kb).
    """
    S, P = w.shape
    ka, kb = pa.rank.shape[0], pb.rank.shape[0]
    wp = np.concatenate([w, np.zeros((S, 1))], 1)  # pad column P
    block_max = max(pa.size, pb.size) * float(w.max(initial=0.0))
    exact32 = block_max * block_max < 2**24 and P < 2**24  # block sums and ranks
    dtype = np.float32 if exact32 else np.float64
    ranka, rankb = pa.rank.astype(dtype), pb.rank.astype(dtype)
    out = np.zeros((S, ka, kb))
    for i in range(ka):
        out[:, i, :] += _block_forms(wp, pa.blocks[i], ranka[i : i + 1], rankb, dtype)
        out[:, i, :] += _grid_forms(w, pa.bins[i, :P], pa.n_bins[i], pb.bins[:, :P], max(pb.n_bins))
    binsa = pa.bins.astype(dtype)
    for j in range(kb):
        out[:, :, j] += _block_forms(wp, pb.blocks[j], binsa, rankb[j : j + 1], dtype)
    return out


def _tau_cd_expanded(A: np.ndarray, B: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted C - D of vectors that change with the sample: per sample, scipy's
    O(n log n) count on the vectors with entry p repeated w_p times (integer w).
    A (S|1, ka, P), B (S|1, kb, P), w (S, 1, P) -> (S, ka, kb)."""
    S = max(A.shape[0], B.shape[0], w.shape[0])
    out = np.zeros((S, A.shape[-2], B.shape[-2]))
    for s in range(S):
        reps = np.rint(w[s if w.shape[0] > 1 else 0, 0]).astype(np.int64)
        xs = [np.repeat(x, reps) for x in A[s if A.shape[0] > 1 else 0]]
        ys = [np.repeat(y, reps) for y in B[s if B.shape[0] > 1 else 0]]
        ty = [_tie_pairs(y) for y in ys]
        for i, x in enumerate(xs):
            tx = _tie_pairs(x)
            for j, y in enumerate(ys):
                out[s, i, j] = _tau_cd_scipy(x, y, tx, ty[j])
    return out


def _cmp_tau_a(A, B, w=None):
    """Kendall tau-a: (concordant - discordant pairs of entries) / number of pairs.

    With pair weights w (bootstrap multiplicities, integers) entry p counts w_p times,
    as in the resampled RDM. Exact integer counts on every path: fixed vectors (all
    unweighted comparisons up to ``_TAU_PLAN_MAX_PAIRS`` entries; weighted model and
    subject RDMs, planned once) -> :func:`_tau_cd_planned`, vectorized over samples;
    vectors that change with the sample (pooled noise-ceiling RDMs) and larger
    unweighted ones -> scipy's O(P log P) count, :func:`_tau_cd_expanded`.
    """
    plans = [x.plan if isinstance(x, _Planned) else None for x in (A, B)]
    A, B = (x.values if isinstance(x, _Planned) else x for x in (A, B))
    P = A.shape[-1]
    w = np.ones((1, 1, P)) if w is None else w
    fixed = A.shape[0] == 1 and B.shape[0] == 1
    if fixed and (P <= _TAU_PLAN_MAX_PAIRS or plans[0] is not None):
        cd = _tau_cd_planned(plans[0] or _TauPlan.of(A), plans[1] or _TauPlan.of(B), w[:, 0, :])
    else:
        cd = _tau_cd_expanded(A, B, w)
    n = w.sum(-1)[..., None]  # (S, 1, 1)
    return np.clip(2.0 * cd / (n * (n - 1)), -1.0, 1.0)


def _double_centered(V: np.ndarray) -> np.ndarray:
    """Condensed RDMs (S, k, P) -> flattened H(-D/2)H, i.e. rsatoolbox's _cov_weighting."""
    n = _n_from_pairs(V.shape[-1], "RDM")
    lead = V.shape[:-1]
    G = -0.5 * _to_square(V.reshape(-1, V.shape[-1]), n)
    G = G - G.mean(1, keepdims=True) - G.mean(2, keepdims=True) + G.mean((1, 2), keepdims=True)
    return G.reshape(*lead, n * n)


def _weights_unsupported(method: str) -> None:
    raise InvalidDataError(
        f"method {method!r} (whitened) cannot be bootstrapped over stimuli: resampled RDMs "
        "with repeated stimuli need rsatoolbox's missing-value whitening. Use over='subjects' "
        "or an unwhitened method ('pearson', 'cosine', 'spearman', 'rho_a', 'tau_a')."
    )


def _cmp_cosine_cov(A, B, w=None):
    if w is not None:
        _weights_unsupported("cosine_cov")
    return _cmp_cosine(_double_centered(A), _double_centered(B))


def _cmp_corr_cov(A, B, w=None):
    if w is not None:
        _weights_unsupported("corr_cov")
    return _cmp_cosine_cov(_wcenter(A, None), _wcenter(B, None))


# method -> (preparation of each RDM, comparison of prepared RDMs). Preparations
# (ranks) are computed once per RDM and reused by the bootstrap and noise ceilings.
_COMPARE: dict[str, tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]] = {
    "spearman": (_prep_rank, _cmp_pearson),
    "tau_a": (_prep_tau, _cmp_tau_a),
    "rho_a": (_prep_rank, _cmp_rho_a),
    "pearson": (_prep_none, _cmp_pearson),
    "corr": (_prep_none, _cmp_pearson),
    "cosine": (_prep_none, _cmp_cosine),
    "corr_cov": (_prep_none, _cmp_corr_cov),
    "cosine_cov": (_prep_none, _cmp_cosine_cov),
}
COMPARE_METHODS: tuple[str, ...] = tuple(_COMPARE)
_PREPARED_IS_RANK = frozenset({"spearman", "rho_a"})


# Pooling for noise ceilings (rsatoolbox.util.inference_util.pool_rdm): transform each
# RDM, then average. Shifts that cannot change the comparison are left out.
def _pool_scale(V, w, orders=None):
    return V / np.sqrt(_wsum(V * V, w) / _wcount(V, w))[..., None]


def _pool_zscore(V, w, orders=None):
    Vc = _wcenter(V, w)
    return Vc / np.sqrt(_wsum(Vc * Vc, w) / _wcount(V, w))[..., None]


def _pool_rank(V, w, orders=None):
    return _wrank(V, w, orders)


_POOL: dict[str, Callable[..., np.ndarray]] = {
    "spearman": _pool_rank,
    "tau_a": _pool_rank,
    "rho_a": _pool_rank,
    "pearson": _pool_zscore,
    "corr": _pool_zscore,
    "cosine": _pool_scale,
    "corr_cov": _pool_zscore,
    "cosine_cov": _pool_scale,
}


# Sort information of fixed RDMs (models, subjects), computed once per bootstrap.
_ORDERS: dict[str, Callable[[np.ndarray], Any]] = {
    "spearman": _RankPlan.of,
    "rho_a": _RankPlan.of,
    "tau_a": _TauPlan.of,
}


def _orders(V: np.ndarray, method: str) -> _RankPlan | _TauPlan | None:
    of = _ORDERS.get(method)
    return None if of is None else of(V)


def _prepare(V, method, w=None, order=None) -> np.ndarray:
    return _COMPARE[method][0](V, w, order)


def _compare_prepared(PA, PB, method, w=None) -> np.ndarray:
    return _COMPARE[method][1](PA, PB, w)


def _paired_diagonal(PA, PB, method, w=None) -> np.ndarray:
    return np.diagonal(_compare_prepared(PA, PB, method, w), axis1=1, axis2=2)


def _paired_tau_a(PA, PB, method, w=None) -> np.ndarray:
    PB = PB.values if isinstance(PB, _Planned) else PB
    return np.stack([_cmp_tau_a(PA[:, i : i + 1], PB[:, i : i + 1], w)[:, 0, 0]
                     for i in range(PA.shape[1])], axis=1)


# tau-a's cost is per comparison (not a matmul), so paired comparisons skip the others.
_PAIRED: dict[str, Callable[..., np.ndarray]] = {"tau_a": _paired_tau_a}


def _compare_paired(PA, PB, method, w=None) -> np.ndarray:
    """Row i of PA (S, k, P) vs row i of PB (1, k, P) -> (S, k)."""
    return _PAIRED.get(method, _paired_diagonal)(PA, PB, method, w)


def _compare_batched(A, B, method, w=None, orders=(None, None)) -> np.ndarray:
    return _compare_prepared(_prepare(A, method, w, orders[0]), _prepare(B, method, w, orders[1]), method, w)


def _noise_ceiling_core(V, method, w=None, c=None, order=None, PV=None) -> tuple[np.ndarray, np.ndarray]:
    """Lower/upper noise ceiling, batched over samples.

    V (1, k, P) subject RDMs; w (S, 1, P) pair weights; c (S, k) subject multiplicities;
    PV: V already prepared for ``method`` with ``w``. Returns lower, upper of shape (S,),
    lower NaN where fewer than 2 distinct subjects are present.
    """
    k = V.shape[-2]
    c = np.ones((1, k)) if c is None else c
    PV = _prepare(V, method, w, order) if PV is None else PV
    T = PV if method in _PREPARED_IS_RANK else _POOL[method](V, w, order)  # (S|1, k, P)
    S = max(T.shape[0], c.shape[0])
    total = np.einsum("sk,skp->sp", c, np.broadcast_to(T, (S,) + T.shape[1:]))
    C = c.sum(1)
    upper_pool = (total / C[:, None])[:, None, :]
    rest = C[:, None] - c  # (S, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        loo = (total[:, None, :] - c[..., None] * T) / rest[..., None]  # (S, k, P)
    loo = np.where((rest > 0)[..., None], loo, 0.0)
    upper = _compare_prepared(_prepare(upper_pool, method, w), PV, method, w)[:, 0, :]  # (S, k)
    lower_k = _compare_paired(_prepare(loo, method, w), PV, method, w)  # (S, k)
    present = c > 0
    n_present = present.sum(1)
    upper = (upper * present).sum(1) / n_present
    lower = (lower_k * present).sum(1) / n_present
    lower = np.where(n_present >= 2, lower, np.nan)  # leave-one-out needs 2 subjects
    return lower, upper


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
            else np.array([str(i) for i in range(n_stim)])
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
        np.array([str(i) for i in range(n_rows)])
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
    """Accumulate G = X N X^T (N = noise precision, identity if None) and row sums of X.

    On CPU without noise weighting, BLAS syrk fills the upper triangle (half the work
    of a matrix product); otherwise torch matmuls run on ``device``.
    """
    dev = torch.device(device)
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
        G += (tw @ t.T).to(torch.float64)
        s += t.sum(1, dtype=torch.float64) if dtype == torch.float64 else t.sum(1).to(torch.float64)
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


def _stack_layers(rdms: Mapping[str, xr.DataArray], dim: str = "layer") -> xr.DataArray:
    names = list(rdms)
    stacked = xr.concat([rdms[k] for k in names], dim=dim, coords="minimal", compat="override",
                        combine_attrs="drop_conflicts")
    stacked = stacked.assign_coords({dim: np.asarray(names).astype(str)})
    stacked.attrs = _clean_attrs({k: v for k, v in stacked.attrs.items() if k != "layer"})
    return stacked


def compute_rdm(
    activations: xr.DataArray | np.ndarray | torch.Tensor | Mapping[str, Any],
    metric: Metric = "correlation",
    *,
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
        Noise precision matrix ``(n_features, n_features)`` or its diagonal
        ``(n_features,)`` for ``crossnobis``; identity if None. A full matrix needs all
        features in memory at once.
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
            str(k): compute_rdm(v, metric, runs=runs, noise=noise, stimulus_ids=stimulus_ids,
                                device=device, chunk_size=chunk_size, dtype=dtype)
            for k, v in activations.items()
        })
    if chunk_size is not None:
        check_positive_int("chunk_size", chunk_size)
    act = _activations(activations, runs, stimulus_ids)
    logger.debug("compute_rdm: %d rows x %d features, metric %s", act.n_rows, act.n_features, metric)
    return _compute_one(act, metric, noise, device, chunk_size, dtype)


# --------------------------------------------------------------------- compare_rdms
def _result_dims(a: _Stack, b: _Stack) -> tuple[str, str]:
    da = a.dim or "_single_a"  # dims of single RDMs are dropped from the result
    db = b.dim or "_single_b"
    if db == da:
        db = f"{db}2"
    return da, db


def compare_rdms(
    a: Any,
    b: Any,
    method: CompareMethod = "spearman",
) -> xr.DataArray:
    """Compare RDMs many-vs-many, numerically as ``rsatoolbox.rdm.compare``.

    Parameters
    ----------
    a, b : xr.DataArray, ndarray, rsatoolbox.rdm.RDMs or dict of layer RDMs
        One RDM or a stack. DataArrays: square with dims ``stimulus, stimulus2`` and
        any leading stack dims (several are flattened to one ``rdm`` dim with one coord
        per original dim), or condensed vectors along the last dim. Arrays: ``(n, n)``,
        ``(k, n, n)``, condensed ``(P,)`` or ``(k, P)`` in ``squareform`` order (a 2-D
        square array is always read as one RDM).
    method : {"spearman", "tau_a", "rho_a", "pearson", "corr", "cosine", "corr_cov", \
"cosine_cov"}
        ``pearson`` and ``corr`` are the same; ``*_cov`` are the whitened variants
        (rsatoolbox ``corr_cov``/``cosine_cov`` with ``sigma_k=None``); ``tau_a`` is
        Kendall's tau-a (rsatoolbox ``tau-a``), ``rho_a`` rsatoolbox ``rho-a``.

    Returns
    -------
    xr.DataArray
        Dims (a's stack dim, b's stack dim); a dim is left out where its input was a
        single RDM (so single vs single is 0-d). Equal names get ``2`` appended to b's.

    Raises
    ------
    ShapeMismatchError
        Different numbers of stimuli or different stimulus ids (the message lists them);
        the same ids in another order are reordered to a's order.
    InvalidDataError
        NaN/inf or non-symmetric matrices.
    UnknownNameError
        Unknown method.

    Examples
    --------
    >>> x = np.random.default_rng(0).random(10)
    >>> round(float(compare_rdms(x, x, "spearman")), 6)
    1.0
    """
    check_option("method", method, COMPARE_METHODS)
    sa, sb = _as_stack(a, "a"), _as_stack(b, "b")
    vb = _align(sa, sb)
    sim = _compare_batched(sa.vectors[None], vb[None], method)[0]
    da, db = _result_dims(sa, sb)
    coords: dict[str, Any] = {}
    for st, d in ((sa, da), (sb, db)):
        for name, values in st.coords.items():
            coords[name if d == st.dim else f"{name}2"] = (d, values)
    out = xr.DataArray(sim, dims=(da, db), coords=coords, attrs={"method": method})
    squeeze = [d for st, d in ((sa, da), (sb, db)) if st.dim is None]
    return out.isel({d: 0 for d in squeeze}, drop=True) if squeeze else out


# ------------------------------------------------------------ noise ceiling, bootstrap
def noise_ceiling(brain_rdms: Any, method: CompareMethod = "spearman") -> xr.DataArray:
    """Lower and upper noise ceiling of a set of subject RDMs (Nili et al. 2014).

    Lower bound: mean over subjects of the comparison of each subject's RDM with the
    pooled RDM of all other subjects (leave one subject out). Upper bound: the same with
    the pooled RDM of all subjects. Pooling depends on the method as in rsatoolbox
    (``pool_rdm``: average ranks for rank methods, z-scores for correlations, RMS
    scaling for cosines); values equal ``rsatoolbox.inference.boot_noise_ceiling``.

    Parameters
    ----------
    brain_rdms : xr.DataArray, ndarray or rsatoolbox.rdm.RDMs
        Stack of at least two subject RDMs (the stack dim is the subject dim; several
        stack dims are flattened). Average sessions first if subjects should count
        once, e.g. ``rdms.groupby("subject").mean()``.
    method : str
        Comparison method, see :func:`compare_rdms`.

    Returns
    -------
    xr.DataArray
        Dim ``bound`` with coords ``["lower", "upper"]``; attrs ``method``,
        ``n_subjects``.

    Raises
    ------
    ShapeMismatchError
        Fewer than two RDMs.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> nc = noise_ceiling(rng.random((4, 45)))
    >>> nc.bound.values.tolist()
    ['lower', 'upper']
    """
    check_option("method", method, COMPARE_METHODS)
    st = _as_stack(brain_rdms, "brain_rdms")
    if st.vectors.shape[0] < 2:
        raise ShapeMismatchError("noise_ceiling needs RDMs of at least 2 subjects.")
    V = st.vectors[None]
    lower, upper = _noise_ceiling_core(V, method, order=_orders(V, method))
    return xr.DataArray(
        np.array([lower[0], upper[0]]), dims=("bound",), coords={"bound": ["lower", "upper"]},
        attrs={"method": method, "n_subjects": int(st.vectors.shape[0])},
    )


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


def _draw(rng: np.random.Generator, n_boot: int, n: int, k: int, over: str) -> _Samples:
    def counts(size: int) -> np.ndarray:
        idx = rng.integers(0, size, size=(n_boot, size))
        out = np.zeros((n_boot, size), np.int64)
        np.add.at(out, (np.arange(n_boot)[:, None], idx), 1)
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


def bootstrap_rdm_comparison(
    model_rdms: Any,
    brain_rdms: Any,
    method: CompareMethod = "spearman",
    n_bootstrap: int = 1000,
    over: Literal["stimuli", "subjects", "both"] = "stimuli",
    seed: int = 0,
    ci: float = 0.95,
    progress: bool = True,
    client: Any = None,
) -> xr.Dataset:
    """Bootstrap model (layer) vs brain RDM comparisons with noise ceilings and tests.

    Each bootstrap sample resamples stimuli and/or subjects with replacement (seeded
    ``numpy.random.default_rng(seed)``). A layer's evaluation is the mean over subjects
    of its comparison with each subject's RDM (rsatoolbox ``eval_bootstrap_pattern`` /
    ``eval_bootstrap_rdm`` / ``eval_dual_bootstrap``); the noise ceiling is
    recomputed in every sample. Stimulus resampling follows rsatoolbox: a stimulus drawn
    c times enters c times and pairs of copies of one stimulus are dropped (done
    exactly with pair weights, vectorized over samples). Samples with fewer than 3
    distinct stimuli, or fewer than 2 distinct subjects for the lower bound, are NaN
    and left out of the summaries.

    Parameters
    ----------
    model_rdms : dict, xr.DataArray, ndarray or rsatoolbox.rdm.RDMs
        Layer RDMs (a dict of layer -> RDM, or a stack; its stack dim becomes ``layer``).
    brain_rdms : xr.DataArray, ndarray or rsatoolbox.rdm.RDMs
        Subject RDMs (at least 2), same stimuli (reordered to the models' order).
    method : str
        Comparison method, see :func:`compare_rdms`. Whitened methods only with
        ``over="subjects"``.
    n_bootstrap : int
        Number of bootstrap samples.
    over : {"stimuli", "subjects", "both"}
        What is resampled.
    seed : int
        Seed; the same seed gives the same numbers.
    ci : float
        Coverage of the percentile confidence intervals.
    progress : bool
        Show a tqdm progress bar.
    client : distributed.Client or str, optional
        Spread chunks of samples over dask workers (see :mod:`neurocnn.scale`); the
        samples are drawn here, so the numbers equal those of a local run.

    Returns
    -------
    xr.Dataset
        ``observed`` (layer): comparison on the full data; ``evaluation`` (layer,
        sample): bootstrap distribution; ``mean``, ``sd``, ``ci_lower``, ``ci_upper``
        (layer); ``noise_ceiling`` (bound) observed and ``noise_ceiling_samples``
        (bound, sample) with ``noise_ceiling_mean``/``_sd``/``_ci_lower``/``_ci_upper``;
        ``p_layer_vs_layer`` (layer, layer2): two-sided bootstrap p-value of equal
        performance; ``p_layer_vs_lower_ceiling`` (layer): one-sided p-value of H0
        "the layer reaches the lower noise ceiling", i.e. small values mean the layer is
        significantly below it. attrs: method, over, seed, n_bootstrap, n_valid, ci.

    Raises
    ------
    UnknownNameError
        Unknown method or ``over``.
    ShapeMismatchError
        Stimuli differ between models and brain RDMs.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> ds = bootstrap_rdm_comparison(rng.random((2, 45)), rng.random((3, 45)),
    ...                               n_bootstrap=20, progress=False)
    >>> ds["evaluation"].dims
    ('layer', 'sample')
    """
    check_option("method", method, COMPARE_METHODS)
    check_option("over", over, _OVER)
    n_bootstrap = check_positive_int("n_bootstrap", n_bootstrap)
    ci = check_fraction("ci", ci)
    sm, sb = _as_stack(model_rdms, "model_rdms"), _as_stack(brain_rdms, "brain_rdms")
    if sb.vectors.shape[0] < 2:
        raise ShapeMismatchError("bootstrap_rdm_comparison needs RDMs of at least 2 subjects.")
    if method.endswith("_cov") and over != "subjects":
        _weights_unsupported(method)
    M, V = sm.vectors[None], _align(sm, sb)[None]
    job = _BootJob(M, V, _orders(M, method), _orders(V, method), method, sm.n, None)
    L = M.shape[1]
    observed, lo0, up0 = _boot_evaluate(job, None, None)
    job.samples = _draw(np.random.default_rng(seed), n_bootstrap, sm.n, V.shape[1], over)
    evals = np.full((n_bootstrap, L), np.nan)
    nc = np.full((2, n_bootstrap), np.nan)
    per = _samples_per_chunk(L + 2 * V.shape[1], M.shape[-1], method)
    slices = [slice(a, min(n_bootstrap, a + per)) for a in range(0, n_bootstrap, per)]
    for i, (e, lo, up) in map_tasks(_boot_chunk, job, slices, client, progress=progress, desc="bootstrap"):
        evals[slices[i]], nc[0, slices[i]], nc[1, slices[i]] = e, lo, up
    samples = job.samples
    valid = samples.valid()
    evals[~valid] = np.nan
    nc[:, ~valid] = np.nan
    return _bootstrap_dataset(sm, observed[0], evals.T, np.array([lo0[0], up0[0]]), nc, ci,
                              dict(method=method, over=over, seed=int(seed),
                                   n_bootstrap=int(n_bootstrap), n_valid=int(valid.sum()), ci=ci))


@dataclass
class _BootJob:
    """Fixed inputs of a bootstrap (sent once to each dask worker) and its drawn samples."""

    M: np.ndarray
    V: np.ndarray
    om: Any
    ov: Any
    method: str
    n: int
    samples: _Samples | None


def _boot_evaluate(job: _BootJob, w: np.ndarray | None, c: np.ndarray | None):
    """Layer evaluations (S, L) and noise-ceiling bounds (S,) under pair weights ``w``, subject counts ``c``."""
    k = job.V.shape[1]
    PV = _prepare(job.V, job.method, w, job.ov)
    sims = _compare_prepared(_prepare(job.M, job.method, w, job.om), PV, job.method, w)  # (S, L, k)
    cc = np.ones((1, k)) if c is None else c
    evals = np.einsum("slk,sk->sl", sims, cc) / cc.sum(1)[:, None]
    lower, upper = _noise_ceiling_core(job.V, job.method, w, c, job.ov, PV)
    return evals, lower, upper


def _boot_chunk(job: _BootJob, sl: slice):
    w = job.samples.pair_weights(sl, job.n)
    c = None if job.samples.subj is None else job.samples.subj[sl].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _boot_evaluate(job, w, c)


def _layer_names(st: _Stack, L: int) -> np.ndarray:
    if st.dim is not None and st.dim in st.coords:
        return np.asarray(st.coords[st.dim]).astype(str)
    return np.array([str(i) for i in range(L)])


def _bootstrap_dataset(sm, observed, evals, nc0, nc, ci, attrs) -> xr.Dataset:
    L = evals.shape[0]
    layers = _layer_names(sm, L)
    lo, hi = _percentile_ci(evals, ci)
    nlo, nhi = _percentile_ci(nc, ci)
    diff = evals[:, None, :] - evals[None, :, :]
    p_pair = np.minimum(1.0, 2.0 * np.minimum(_p_greater_equal(diff), _p_greater_equal(-diff)))
    with np.errstate(invalid="ignore"):
        p_ceiling = _p_greater_equal(nc[0][None, :] - evals)
    bound = ["lower", "upper"]
    ds = xr.Dataset(
        {
            "observed": ("layer", observed),
            "evaluation": (("layer", "sample"), evals),
            "mean": ("layer", np.nanmean(evals, 1)),
            "sd": ("layer", np.nanstd(evals, 1, ddof=1)),
            "ci_lower": ("layer", lo),
            "ci_upper": ("layer", hi),
            "noise_ceiling": ("bound", nc0),
            "noise_ceiling_samples": (("bound", "sample"), nc),
            "noise_ceiling_mean": ("bound", np.nanmean(nc, 1)),
            "noise_ceiling_sd": ("bound", np.nanstd(nc, 1, ddof=1)),
            "noise_ceiling_ci_lower": ("bound", nlo),
            "noise_ceiling_ci_upper": ("bound", nhi),
            "p_layer_vs_layer": (("layer", "layer2"), p_pair),
            "p_layer_vs_lower_ceiling": ("layer", p_ceiling),
        },
        coords={"layer": layers, "layer2": layers.copy(), "bound": bound,
                "sample": np.arange(evals.shape[1])},
        attrs={**attrs, "neurocnn_version": version()},
    )
    return ds


# ------------------------------------------------------------------------------ MEG
def _meg_stack(meg_rdms: Any, times: Any) -> tuple[_Stack, np.ndarray, int]:
    """MEG RDMs -> stack of (subject x time) RDMs, times, number of subjects (0 = none)."""
    if isinstance(meg_rdms, xr.DataArray):
        if "time" not in meg_rdms.dims or "stimulus" not in meg_rdms.dims:
            raise ShapeMismatchError(
                f"MEG RDMs need dims ('stimulus', 'stimulus2', 'time'[, 'subject']), got "
                f"{meg_rdms.dims}."
            )
        extra = [d for d in meg_rdms.dims if d not in ("stimulus", "stimulus2", "time", "subject")]
        if extra:
            raise ShapeMismatchError(f"MEG RDMs have unexpected dims {extra}.")
        has_subject = "subject" in meg_rdms.dims
        lead = (["subject"] if has_subject else []) + ["time"]
        da = meg_rdms.transpose(*lead, "stimulus", "stimulus2")
        t = np.asarray(da["time"].values) if "time" in da.coords else np.arange(da.sizes["time"])
        n_subj = da.sizes["subject"] if has_subject else 0
        st = _stack_dataarray(da.drop_vars([c for c in ("time", "subject") if c in da.coords]), "meg_rdms")
        return st, t, n_subj
    arr = np.asarray(meg_rdms, dtype=np.float64)
    if arr.ndim not in (3, 4) or arr.shape[-3] != arr.shape[-2]:
        raise ShapeMismatchError(
            f"MEG RDMs must be (stimulus, stimulus, time) or (subject, stimulus, stimulus, "
            f"time), got shape {arr.shape}."
        )
    n_t = arr.shape[-1]
    t = np.arange(n_t) if times is None else np.asarray(times)
    if len(t) != n_t:
        raise ShapeMismatchError(f"{len(t)} times for {n_t} MEG time points.")
    n_subj = arr.shape[0] if arr.ndim == 4 else 0
    mats = np.moveaxis(arr, -1, -3).reshape(-1, arr.shape[-2], arr.shape[-2])
    return _Stack(_from_square(mats, "meg_rdms"), arr.shape[-2], None, _STACK), t, n_subj


def meg_layer_time_correlation(
    layer_rdms: Any,
    meg_rdms: Any,
    method: CompareMethod = "spearman",
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    *,
    times: Sequence[float] | np.ndarray | None = None,
    over: Literal["stimuli", "subjects", "both"] | None = None,
    progress: bool = True,
) -> xr.Dataset:
    """Correlate layer RDMs with time-resolved MEG RDMs (Cichy et al. 2016).

    Parameters
    ----------
    layer_rdms : dict, xr.DataArray, ndarray or rsatoolbox.rdm.RDMs
        Layer RDMs (stack dim becomes ``layer``).
    meg_rdms : xr.DataArray or ndarray
        DataArray with dims ``stimulus, stimulus2, time`` and optionally ``subject``,
        or an array ``(n, n, T)`` / ``(n_subjects, n, n, T)`` with ``times``.
    method : str
        Comparison method, see :func:`compare_rdms`.
    n_bootstrap : int
        Number of bootstrap samples.
    seed : int
        Seed of the bootstrap.
    ci : float
        Coverage of the percentile confidence intervals.
    times : array-like, optional
        Time of each MEG sample for array input (default: sample index).
    over : {"stimuli", "subjects", "both"}, optional
        What the bootstrap resamples; default subjects if there is a subject dim, else
        stimuli.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    xr.Dataset
        ``correlation`` (layer, time): mean over subjects of the comparison;
        ``ci_lower``/``ci_upper`` (layer, time); ``peak_latency`` (layer) with
        ``peak_latency_ci_lower``/``_ci_upper`` and ``peak_latency_samples`` (layer,
        sample); attrs method, over, seed, n_bootstrap, ci.

    Raises
    ------
    ShapeMismatchError
        Wrong dims/shapes or different stimuli.
    """
    check_option("method", method, COMPARE_METHODS)
    n_bootstrap = check_positive_int("n_bootstrap", n_bootstrap)
    ci = check_fraction("ci", ci)
    sm = _as_stack(layer_rdms, "layer_rdms")
    st, t, n_subj = _meg_stack(meg_rdms, times)
    over = over or ("subjects" if n_subj else "stimuli")
    check_option("over", over, _OVER)
    if over != "stimuli" and not n_subj:
        raise ShapeMismatchError(f"over={over!r} needs a 'subject' dim in the MEG RDMs.")
    if method.endswith("_cov") and over != "subjects":
        _weights_unsupported(method)
    M, V = sm.vectors[None], _align(sm, st)[None]
    om, ov = _orders(M, method), _orders(V, method)
    L, n_t, k = M.shape[1], len(t), max(n_subj, 1)

    def curves(w, c):
        sims = _compare_batched(M, V, method, w, (om, ov)).reshape(-1, L, k, n_t)
        cc = np.ones((1, k)) if c is None else c
        return np.einsum("slkt,sk->slt", sims, cc) / cc.sum(1)[:, None, None]

    observed = curves(None, None)[0]
    samples = _draw(np.random.default_rng(seed), n_bootstrap, sm.n, k, over)
    boot = np.full((n_bootstrap, L, n_t), np.nan)
    for sl in _chunks(n_bootstrap, _samples_per_chunk(L + k * n_t, M.shape[-1], method), progress, "MEG bootstrap"):
        c = None if samples.subj is None else samples.subj[sl].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot[sl] = curves(samples.pair_weights(sl, sm.n), c)
    valid = samples.valid()
    boot[~valid] = np.nan
    lo, hi = _percentile_ci(boot, ci, axis=0)
    peaks = t[np.argmax(np.where(np.isfinite(boot), boot, -np.inf), axis=2)].astype(np.float64)
    peaks[~valid] = np.nan
    plo, phi = _percentile_ci(peaks, ci, axis=0)
    layers = _layer_names(sm, L)
    return xr.Dataset(
        {
            "correlation": (("layer", "time"), observed),
            "ci_lower": (("layer", "time"), lo),
            "ci_upper": (("layer", "time"), hi),
            "peak_latency": ("layer", t[np.argmax(observed, axis=1)].astype(np.float64)),
            "peak_latency_ci_lower": ("layer", plo),
            "peak_latency_ci_upper": ("layer", phi),
            "peak_latency_samples": (("layer", "sample"), peaks.T),
        },
        coords={"layer": layers, "time": t, "sample": np.arange(n_bootstrap)},
        attrs={"method": method, "over": over, "seed": int(seed), "n_bootstrap": int(n_bootstrap),
               "n_valid": int(valid.sum()), "ci": ci, "neurocnn_version": version()},
    )


# -------------------------------------------------------------------------- loaders
_IDS_92 = np.array([f"92img_{i:03d}" for i in range(92)])


def _fetch(key: str) -> pathlib.Path:
    from . import datasets

    return datasets.fetch(key)


def _loadmat(path: pathlib.Path) -> dict[str, Any]:
    return scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)


def _square(rdm: Any) -> np.ndarray:
    rdm = np.asarray(rdm, dtype=np.float64)
    if rdm.ndim == 1:
        n = _n_from_pairs(rdm.size, "RDM")
        return _to_square(rdm[None], n)[0]
    return rdm


def _rdm_array(mats: np.ndarray, ids: np.ndarray, coords: dict[str, Any], attrs: dict[str, Any]) -> xr.DataArray:
    _from_square(mats, "RDMs", ids)  # validates finiteness and symmetry
    return xr.DataArray(
        mats, dims=(_STACK, "stimulus", "stimulus2"),
        coords={"stimulus": ids, "stimulus2": ids.copy(), **coords}, attrs=_clean_attrs(attrs),
    )


def load_92images_brain_rdms() -> xr.DataArray:
    """Human IT fMRI RDMs of the 92-object set (4 subjects x 2 sessions).

    Kriegeskorte et al. (2008), as shipped with rsatoolbox (``92_brainRDMs.mat``), read
    through :func:`neurocnn.datasets.fetch` (sha256 verified).

    Returns
    -------
    xr.DataArray
        Dims ``("rdm", "stimulus", "stimulus2")`` with 8 RDMs in the .mat's order
        (subject-major: subject 1 session 1, subject 1 session 2, ...); coords
        ``subject`` (str), ``session`` (int) and ``name`` on ``rdm``; stimulus ids
        ``"92img_000"`` ... ``"92img_091"``. A flat ``rdm`` dim keeps the result a
        plain stack for :func:`compare_rdms`; per-subject averages are
        ``rdms.groupby("subject").mean()``.

    Raises
    ------
    MissingFileError, IntegrityError
        From :func:`neurocnn.datasets.fetch`.
    """
    structs = _loadmat(_fetch("data/92images/92_brainRDMs.mat"))["RDMs"]  # (subject, session)
    mats, names, subjects, sessions = [], [], [], []
    for i_subj in range(structs.shape[0]):
        for i_sess in range(structs.shape[1]):
            s = structs[i_subj, i_sess]
            mats.append(_square(s.RDM))
            names.append(str(s.name))
            parts = [p.strip() for p in str(s.name).split("|")]
            subjects.append(parts[1] if len(parts) > 1 else str(i_subj + 1))
            sessions.append(i_sess + 1)
    return _rdm_array(
        np.stack(mats), _IDS_92,
        {"subject": (_STACK, np.array(subjects)), "session": (_STACK, np.array(sessions)),
         "name": (_STACK, np.array(names))},
        {"source": "data/92images/92_brainRDMs.mat", "region": "human IT",
         "reference": "Kriegeskorte et al. 2008, Neuron"},
    )


def load_92images_reference_rdms() -> xr.DataArray:
    """Group RDMs of the 92-object set: monkey IT, human IT and the 8 model RDMs.

    Returns
    -------
    xr.DataArray
        Dims ``("rdm", "stimulus", "stimulus2")``: first the two ``RDMs_mIT_hIT_fig1``
        of ``Kriegeskorte_Neuron2008_supplementalData.mat`` (monkey IT, 674 neurons;
        human IT group), then the 8 RDMs of ``92_modelRDMs.mat`` (animacy,
        FaceBodyManmadeNatobj, monkeyIT, EVA, HMAX, V1, Silhouette, RADON). Coords
        ``rdm`` (names) and ``source`` (``"brain"``/``"model"``).
    """
    sup = _loadmat(_fetch("data/92images/Kriegeskorte_Neuron2008_supplementalData.mat"))
    models = _loadmat(_fetch("data/92images/92_modelRDMs.mat"))["Models"]
    entries = [(str(s.name), _square(s.RDM), "brain") for s in np.atleast_1d(sup["RDMs_mIT_hIT_fig1"])]
    entries += [(str(s.name), _square(s.RDM), "model") for s in np.atleast_1d(models)]
    return _rdm_array(
        np.stack([e[1] for e in entries]), _IDS_92,
        {_STACK: np.array([e[0] for e in entries]), "source": (_STACK, np.array([e[2] for e in entries]))},
        {"reference": "Kriegeskorte et al. 2008, Neuron"},
    )


def _mat_arrays(m: dict[str, Any]) -> dict[str, np.ndarray]:
    """Numeric arrays of a loadmat dict; struct arrays with an RDM field are stacked."""
    out: dict[str, np.ndarray] = {}
    for key, value in m.items():
        if key.startswith("__"):
            continue
        arr = np.asarray(value)
        if arr.dtype == object:
            flat = [v for v in arr.ravel() if hasattr(v, "RDM")]
            if flat and len(flat) == arr.size:
                out[key] = np.stack([_square(v.RDM) for v in flat])
        elif arr.dtype.kind in "fiu":
            out[key] = arr.astype(np.float64)
    return out


def _read_array(path: pathlib.Path, variable: str | None, what: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    if not path.exists():
        raise MissingFileError(f"{what} file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False), {}
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    elif suffix == ".mat":
        arrays = _mat_arrays(_loadmat(path))
    else:
        raise ShapeMismatchError(f"{what}: unsupported file type {suffix!r}; use .mat, .npy or .npz.")
    if variable is not None:
        check_option("variable", variable, list(arrays))
        return arrays[variable], arrays
    big = {k: v for k, v in arrays.items() if v.ndim >= 2}
    if len(big) != 1:
        raise ShapeMismatchError(
            f"{what}: {str(path)!r} holds {len(big)} candidate arrays {sorted(big)}; choose one "
            "with variable=."
        )
    return next(iter(big.values())), arrays


def load_rdms(
    path: str | pathlib.Path,
    *,
    variable: str | None = None,
    stimulus_ids: Sequence[str] | None = None,
) -> xr.DataArray:
    """Load an RDM or a stack of RDMs from a .mat, .npy or .npz file.

    Parameters
    ----------
    path : str or Path
        File with an ``(n, n)`` or ``(k, n, n)`` array (a .mat struct array with an
        ``RDM`` field, as rsatoolbox/RSA-toolbox MATLAB files have, also works).
    variable : str, optional
        Variable name in a .mat/.npz file holding several arrays.
    stimulus_ids : sequence of str, optional
        Stimulus ids (default ``"0"``, ``"1"``, ...).

    Returns
    -------
    xr.DataArray
        Dims ``("rdm", "stimulus", "stimulus2")``.

    Raises
    ------
    MissingFileError
        The file does not exist.
    ShapeMismatchError
        Not square, ambiguous variables, wrong number of ids.
    InvalidDataError
        NaN/inf or non-symmetric matrices.
    """
    path = pathlib.Path(path)
    arr, _ = _read_array(path, variable, "load_rdms")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[-1] != arr.shape[-2]:
        raise ShapeMismatchError(
            f"load_rdms: {str(path)!r} holds an array of shape {arr.shape}; expected (n, n) "
            "or (k, n, n)."
        )
    n = arr.shape[-1]
    ids = np.array([str(i) for i in range(n)]) if stimulus_ids is None else np.asarray(stimulus_ids).astype(str)
    if len(ids) != n:
        raise ShapeMismatchError(f"load_rdms: {len(ids)} stimulus ids for {n} stimuli.")
    return _rdm_array(arr.astype(np.float64), ids, {}, {"source": str(path)})


def load_meg_rdms(
    path: str | pathlib.Path,
    times: Sequence[float] | np.ndarray | None = None,
    *,
    variable: str | None = None,
    stimulus_ids: Sequence[str] | None = None,
) -> xr.DataArray:
    """Load time-resolved MEG RDMs from a .mat, .npy or .npz file.

    Parameters
    ----------
    path : str or Path
        File with an array ``(n, n, T)`` or ``(n_subjects, n, n, T)``.
    times : array-like, optional
        Time of each sample (e.g. seconds); default a ``times`` variable of the file if
        present, else the sample index.
    variable : str, optional
        Variable holding the RDMs when the file has several arrays.
    stimulus_ids : sequence of str, optional
        Stimulus ids (default ``"0"``, ``"1"``, ...).

    Returns
    -------
    xr.DataArray
        Dims ``([subject,] stimulus, stimulus2, time)``.

    Raises
    ------
    MissingFileError, ShapeMismatchError, InvalidDataError
        Missing file, wrong shapes, NaN or asymmetric RDMs.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise MissingFileError(f"load_meg_rdms: file {str(path)!r} does not exist.")
    if variable is None and path.suffix.lower() in (".mat", ".npz"):
        all_arrays = _mat_arrays(_loadmat(path)) if path.suffix.lower() == ".mat" else dict(np.load(path))
        cands = [k for k, v in all_arrays.items() if v.ndim in (3, 4)]
        if len(cands) != 1:
            raise ShapeMismatchError(
                f"load_meg_rdms: {str(path)!r} holds {len(cands)} 3-D/4-D arrays {cands}; "
                "choose one with variable=."
            )
        arr = all_arrays[cands[0]]
        if times is None and "times" in all_arrays:
            times = np.ravel(all_arrays["times"])
    else:
        arr, _ = _read_array(path, variable, "load_meg_rdms")
    st, t, n_subj = _meg_stack(arr, times)
    n = st.n
    ids = np.array([str(i) for i in range(n)]) if stimulus_ids is None else np.asarray(stimulus_ids).astype(str)
    if len(ids) != n:
        raise ShapeMismatchError(f"load_meg_rdms: {len(ids)} stimulus ids for {n} stimuli.")
    dims = (("subject",) if n_subj else ()) + ("stimulus", "stimulus2", "time")
    coords: dict[str, Any] = {"stimulus": ids, "stimulus2": ids.copy(), "time": t}
    if n_subj:
        coords["subject"] = np.arange(n_subj)
    return xr.DataArray(np.asarray(arr, dtype=np.float64), dims=dims, coords=coords,
                        attrs={"source": str(path)})


# ---------------------------------------------------------------------- rsatoolbox
def to_rsatoolbox(rdms: Any) -> Any:
    """Convert RDMs to ``rsatoolbox.rdm.RDMs``.

    Parameters
    ----------
    rdms : xr.DataArray, ndarray or dict
        One RDM or a stack (see :func:`compare_rdms`).

    Returns
    -------
    rsatoolbox.rdm.RDMs
        ``dissimilarity_measure`` from attrs ``metric``; ``descriptors`` = attrs (plus
        ``neurocnn_stack_dim``); ``pattern_descriptors`` ``stimulus`` (ids) and the
        metadata coords; ``rdm_descriptors`` the stack coords.
    """
    from rsatoolbox.rdm import RDMs

    st = _as_stack(rdms, "rdms")
    descriptors = dict(_clean_attrs(st.attrs))
    descriptors["neurocnn_stack_dim"] = st.dim or ""
    pattern = {"stimulus": list(st.ids if st.ids is not None else [str(i) for i in range(st.n)])}
    pattern.update({k: list(v) for k, v in st.pattern_coords.items()})
    rdm_desc = {k: list(v) for k, v in st.coords.items()}
    return RDMs(st.vectors.copy(), dissimilarity_measure=descriptors.get("metric"),
                descriptors=descriptors, rdm_descriptors=rdm_desc, pattern_descriptors=pattern)


def from_rsatoolbox(rdms: Any) -> xr.DataArray:
    """Convert ``rsatoolbox.rdm.RDMs`` to an RDM DataArray (inverse of :func:`to_rsatoolbox`).

    Parameters
    ----------
    rdms : rsatoolbox.rdm.RDMs

    Returns
    -------
    xr.DataArray
        Dims ``(stack, "stimulus", "stimulus2")`` where ``stack`` is the dim recorded
        by :func:`to_rsatoolbox` (default ``"rdm"``; a single RDM converted from a 2-D
        DataArray comes back 2-D). Stimulus ids from the ``stimulus`` pattern
        descriptor (else ``index``); other pattern/rdm descriptors become coords;
        scalar descriptors and ``dissimilarity_measure`` (as ``metric``) become attrs.
    """
    vectors = np.asarray(rdms.get_vectors(), dtype=np.float64)
    pdesc = dict(rdms.pattern_descriptors)
    ids_src = pdesc.get("stimulus", pdesc.get("index", range(rdms.n_cond)))
    ids = np.asarray([str(i) for i in ids_src])
    attrs = _clean_attrs(rdms.descriptors)
    stack_dim = str(attrs.pop("neurocnn_stack_dim", _STACK))
    if rdms.dissimilarity_measure is not None:
        attrs["metric"] = str(rdms.dissimilarity_measure)
    pattern_coords = {k: np.asarray(v) for k, v in pdesc.items() if k not in ("stimulus", "index")}
    if stack_dim == "" and vectors.shape[0] == 1:
        st = _Stack(vectors, rdms.n_cond, ids, None, {}, attrs, pattern_coords)
    else:
        stack_dim = stack_dim or _STACK
        coords = {k: np.asarray(v) for k, v in rdms.rdm_descriptors.items()
                  if k != "index" or stack_dim == "index"}
        st = _Stack(vectors, rdms.n_cond, ids, stack_dim, coords, attrs, pattern_coords)
    return _stack_to_dataarray(st)
