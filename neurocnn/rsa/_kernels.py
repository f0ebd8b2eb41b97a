"""Comparison kernels on batched condensed vectors with optional pair weights.

Ranks, weighted moments and Kendall tau-a machinery (see :mod:`neurocnn.rsa` for the
exact bootstrap weighting); pooling and noise-ceiling cores shared by compare and inference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.io
import scipy.stats
import torch

from ..exceptions import InvalidDataError
from ._stack import _n_from_pairs, _tensor, _to_square

_TAU_PLAN_MAX_PAIRS = 20_000
_TAU_BLOCK_ELEMENTS = 2**22
_TAU_GRID_CELLS = 2**16


CompareMethod = Literal[
    "spearman", "tau_a", "rho_a", "pearson", "corr", "cosine", "corr_cov", "cosine_cov"
]


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
    if w is None:
        return _rank_rows(x)
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


def _rank_rows(x: np.ndarray) -> np.ndarray:
    """Unweighted average ranks along the last axis, one row at a time.

    Each RDM is ranked once (one argsort); 1-D gathers and scatters per row are ~2x
    faster than ``take_along_axis``/``put_along_axis`` over a stack.
    """
    x = np.asarray(x)
    rows = x.reshape(-1, x.shape[-1])
    out = np.empty(rows.shape)
    arange = np.arange(1.0, rows.shape[-1] + 1.0)
    for row, dest in zip(rows, out):
        order = np.argsort(row)
        xs = row[order]
        same = xs[1:] == xs[:-1]
        if not same.any():
            dest[order] = arange
            continue
        new = np.r_[True, ~same]  # first of each tie group
        last = np.r_[~same, True]
        before = np.maximum.accumulate(np.where(new, arange - 1.0, -np.inf))
        after = np.minimum.accumulate(np.where(last, arange, np.inf)[::-1])[::-1]
        dest[order] = (before + after + 1.0) / 2.0
    return out.reshape(x.shape)


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


