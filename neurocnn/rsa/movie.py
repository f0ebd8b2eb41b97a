"""Time-resolved RDMs ("RDM movies") straight from MEG/EEG epochs.

Per output time (a sample, a sliding window or a bin of samples), the trials of each
stimulus are averaged, optionally whitened (multivariate noise normalization from the
epochs' residuals, Guggenmos et al. 2018, or a given precision matrix), and turned into
an RDM: correlation, cosine, (squared) Euclidean, or the cross-validated squared
Euclidean / Mahalanobis distance (crossnobis; leave-one-run-out or split-half). All
time points of a chunk go through one batched matrix product (torch), the chunk size
bounding memory; numerically as ``rsatoolbox.rdm.calc_rdm_movie``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr

from .._validation import check_option, check_positive_int, numpy_rng
from .._version import version
from ..exceptions import InvalidDataError, ShapeMismatchError

__all__ = ["MOVIE_METRICS", "compute_rdm_movie", "epochs_array", "ledoit_wolf_covariance", "simulate_epochs"]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

MovieMetric = Literal["correlation", "cosine", "euclidean", "sqeuclidean", "crossnobis"]
MOVIE_METRICS: tuple[str, ...] = ("correlation", "cosine", "euclidean", "sqeuclidean", "crossnobis")
_CHUNK_BYTES = 256 * 2**20


@dataclass
class Epochs:
    """Epochs as arrays: data (trial, sensor, time), per-trial ids and runs, sample times."""

    data: np.ndarray
    stimulus_ids: np.ndarray
    times: np.ndarray
    runs: np.ndarray | None
    sensors: np.ndarray
    attrs: dict[str, Any]


def _mne_epochs(epochs: Any, stimulus_ids: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    codes = np.asarray(epochs.events)[:, 2]
    names = {int(v): str(k) for k, v in epochs.event_id.items()}
    labels = np.array([names.get(int(c), str(int(c))) for c in codes])
    if isinstance(stimulus_ids, Mapping):
        stimulus_ids = {str(k): v for k, v in stimulus_ids.items()}
        unknown = sorted(set(labels) - set(stimulus_ids))
        if unknown:
            raise ShapeMismatchError(
                f"stimulus_ids maps event names to stimulus ids but misses events {unknown[:5]}; "
                f"give an id for every event name of epochs.event_id ({sorted(names.values())[:5]}...)."
            )
        labels = np.array([str(stimulus_ids[k]) for k in labels])
    elif stimulus_ids is not None:
        labels = np.asarray(stimulus_ids).astype(str)
    data = np.asarray(epochs.get_data(copy=False) if _accepts_copy(epochs) else epochs.get_data())
    return data, labels, np.asarray(epochs.times, np.float64), np.asarray(epochs.ch_names)


def _accepts_copy(epochs: Any) -> bool:
    import inspect

    try:
        return "copy" in inspect.signature(epochs.get_data).parameters
    except (TypeError, ValueError):
        return False


def epochs_array(epochs: Any, *, stimulus_ids: Any = None, times: Any = None, runs: Any = None) -> Epochs:
    """Read epochs: an MNE ``Epochs``, a DataArray ``(trial, sensor, time)`` or an array.

    Parameters
    ----------
    epochs : mne.Epochs, xr.DataArray or ndarray
        ``mne.Epochs`` (event ids -> stimulus ids through ``event_id``'s names), a
        DataArray with dims ``(trial, sensor, time)`` (coords ``stimulus`` and ``run``
        on ``trial`` are used), or an array ``(trial, sensor, time)``.
    stimulus_ids : sequence or dict, optional
        One stimulus id per trial; for ``mne.Epochs`` also a dict ``{event name: id}``.
    times : sequence of float, optional
        Sample times for array input (default: index).
    runs : sequence, optional
        Run (session, block) of each trial, for leave-one-run-out cross-validation.

    Returns
    -------
    Epochs

    Raises
    ------
    ShapeMismatchError
        Wrong dims, ids, runs or times of the wrong length.
    InvalidDataError
        NaN/inf samples.
    """
    attrs: dict[str, Any] = {}
    if hasattr(epochs, "get_data") and hasattr(epochs, "events") and hasattr(epochs, "event_id"):
        data, ids, t, sensors = _mne_epochs(epochs, stimulus_ids)
        attrs["source"] = "mne.Epochs"
    elif isinstance(epochs, xr.DataArray):
        need = ("trial", "sensor", "time")
        if set(epochs.dims) != set(need):
            raise ShapeMismatchError(f"epochs have dims {epochs.dims}; expected {need}.")
        da = epochs.transpose(*need)
        data = da.values
        ids = (np.asarray(da["stimulus"].values).astype(str) if stimulus_ids is None and "stimulus" in da.coords
               else None if stimulus_ids is None else np.asarray(stimulus_ids).astype(str))
        if runs is None and "run" in da.coords:
            runs = da["run"].values
        t = np.asarray(da["time"].values if "time" in da.coords else np.arange(da.sizes["time"]), np.float64)
        sensors = np.asarray(da["sensor"].values if "sensor" in da.coords else np.arange(da.sizes["sensor"])).astype(str)
        attrs.update({k: v for k, v in da.attrs.items() if isinstance(v, (str, int, float))})
    else:
        data = np.asarray(epochs)
        if data.ndim != 3:
            raise ShapeMismatchError(
                f"epochs have shape {data.shape}; expected (trial, sensor, time) (or an mne.Epochs)."
            )
        ids = None if stimulus_ids is None else np.asarray(stimulus_ids).astype(str)
        t = np.arange(data.shape[2], dtype=np.float64) if times is None else np.asarray(times, np.float64)
        sensors = np.arange(data.shape[1]).astype(str)
    n_trials, _, n_t = data.shape
    if ids is None:
        raise ShapeMismatchError("stimulus_ids are needed: one stimulus id per trial (repeats are averaged).")
    if ids.shape != (n_trials,):
        raise ShapeMismatchError(f"{ids.size} stimulus ids for {n_trials} trials; give one id per trial.")
    if t.shape != (n_t,):
        raise ShapeMismatchError(f"{t.size} times for {n_t} samples per epoch.")
    if runs is not None:
        runs = np.asarray(runs)
        if runs.shape != (n_trials,):
            raise ShapeMismatchError(f"{runs.size} run labels for {n_trials} trials.")
    if not np.issubdtype(data.dtype, np.floating):
        data = data.astype(np.float64)
    step = max(1, 2**24 // max(1, data[0].size))
    for a in range(0, n_trials, step):  # in blocks: no full-size boolean copy
        if not np.isfinite(data[a : a + step]).all():
            bad = a + int(np.flatnonzero(~np.isfinite(data[a : a + step]).all((1, 2)))[0])
            raise InvalidDataError(f"epochs hold NaN/inf samples (first in trial {bad}); drop or interpolate "
                                   "those trials first.")
    return Epochs(data, ids, t, runs, sensors, attrs)


def _time_groups(t: np.ndarray, window: int | None, step: int, bins: Sequence[Any] | None):
    """Output times -> list of sample-index groups (None: every sample alone) and their times."""
    if bins is not None and window is not None:
        raise InvalidDataError("give window= or bins=, not both.")
    if bins is not None:
        groups = []
        for b, vals in enumerate(bins):
            idx = np.flatnonzero(np.isin(t, np.asarray(vals, np.float64)))
            if idx.size == 0:
                raise ShapeMismatchError(f"bin {b} holds no sample time of the epochs ({np.asarray(vals)[:3]}...).")
            groups.append(idx)
        return groups, np.array([t[g].mean() for g in groups])
    if window is None:
        return None, t.copy()
    window = check_positive_int("window", window)
    step = check_positive_int("step", step)
    if window > len(t):
        raise InvalidDataError(f"window of {window} samples is longer than the epochs ({len(t)} samples).")
    starts = np.arange(0, len(t) - window + 1, step)
    groups = [np.arange(s, s + window) for s in starts]
    return groups, np.array([t[g].mean() for g in groups])


def ledoit_wolf_covariance(sum_xx: np.ndarray, sum_x4: float, n: int) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance from accumulated sums (as ``sklearn.covariance.ledoit_wolf``
    with ``assume_centered=True``): ``sum_xx = X^T X``, ``sum_x4 = sum_k ||x_k||^4``, ``n`` rows.

    Returns
    -------
    covariance : ndarray (p, p)
    shrinkage : float

    Examples
    --------
    >>> X = np.random.default_rng(0).standard_normal((50, 4))
    >>> cov, s = ledoit_wolf_covariance(X.T @ X, float(((X**2).sum(1) ** 2).sum()), 50)
    >>> import sklearn.covariance
    >>> bool(np.allclose(cov, sklearn.covariance.ledoit_wolf(X, assume_centered=True)[0]))
    True
    """
    p = sum_xx.shape[0]
    S = sum_xx / n
    mu = np.trace(S) / p
    delta_ = (S**2).sum()
    beta = (sum_x4 / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * np.trace(S) + p * mu**2) / p
    beta = min(beta, delta)
    shrinkage = 0.0 if beta == 0 else beta / delta
    cov = (1.0 - shrinkage) * S
    cov.flat[:: p + 1] += shrinkage * mu
    return cov, float(shrinkage)


def _inv_sqrt(C: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh((C + np.swapaxes(C, -1, -2)) / 2)
    if (w <= 0).any():
        raise InvalidDataError("the noise covariance is not positive definite; use more trials or a shrinkage estimate.")
    return (V / np.sqrt(w)[..., None, :]) @ np.swapaxes(V, -1, -2)


def _sqrt_psd(P: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh((P + P.T) / 2)
    if (w < -1e-10 * max(abs(w).max(), 1e-300)).any():
        raise InvalidDataError("noise must be a positive semi-definite precision matrix.")
    return (V * np.sqrt(np.clip(w, 0, None))) @ V.T


class _Chunker:
    """A range of output times as (trial, sensor, time), trials sorted by (fold, stimulus),
    in the epochs' dtype (windows and bins averaged)."""

    def __init__(self, data: np.ndarray, groups: list[np.ndarray] | None, order: np.ndarray):
        self.data, self.groups, self.order = data, groups, order

    def __call__(self, a: int, b: int) -> np.ndarray:
        if self.groups is None:
            return self.data[self.order, :, a:b]
        groups = self.groups[a:b]
        lo, hi = min(int(g.min()) for g in groups), max(int(g.max()) for g in groups) + 1
        block = self.data[self.order, :, lo:hi]
        return np.stack([block[:, :, g - lo].mean(-1, dtype=np.float64) for g in groups], -1)


def _segment_sums(Xs: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sorted (trial, sensor, time) -> sums of each (fold, stimulus) segment, (time, segment,
    sensor), float64 accumulation; one pass (contiguous block sums, faster than reduceat)."""
    ends = np.append(starts[1:], Xs.shape[0])
    out = np.empty((len(starts),) + Xs.shape[1:])
    for k, (a, b) in enumerate(zip(starts, ends)):
        Xs[a:b].sum(0, dtype=np.float64, out=out[k])
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def _folds(ep: Epochs, codes: np.ndarray, n_cond: int, cv: str) -> np.ndarray:
    if cv == "leave_one_run_out":
        if ep.runs is None:
            raise ShapeMismatchError(
                "cv='leave_one_run_out' needs runs= (the run of each trial) or a 'run' coord; or use "
                "cv='split_half' (first vs second half of each stimulus's trials)."
            )
        _, folds = np.unique(ep.runs, return_inverse=True)
    else:
        folds = np.zeros(len(codes), np.int64)
        for c in range(n_cond):
            idx = np.flatnonzero(codes == c)
            folds[idx[len(idx) // 2:]] = 1
    n_f = int(folds.max()) + 1
    if n_f < 2:
        raise ShapeMismatchError("cross-validated distances need at least 2 folds (runs).")
    have = np.zeros((n_f, n_cond), bool)
    have[folds, codes] = True
    if not have.all():
        f, c = np.argwhere(~have)[0]
        raise ShapeMismatchError(
            f"fold {int(f)} has no trial of a stimulus (index {int(c)}): every stimulus needs a trial in every "
            "run/half for cross-validated distances."
        )
    return folds


def _gram(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Batched A @ B^T over time: (t, c, s) x (t, c, s) -> (t, c, c) (torch bmm, BLAS)."""
    return torch.bmm(torch.from_numpy(A), torch.from_numpy(B).transpose(1, 2)).numpy()


def _rdm_from_means(M: np.ndarray, metric: str) -> np.ndarray:
    """(time, cond, sensor) means -> (time, cond, cond) RDMs."""
    if metric == "correlation":
        M = M - M.mean(-1, keepdims=True)
    K = _gram(M, M)
    d = np.diagonal(K, axis1=1, axis2=2)
    if metric in ("correlation", "cosine"):
        if (d <= 1e-12 * np.maximum(d.max(1, keepdims=True), 1e-300)).any():
            raise InvalidDataError(f"metric {metric!r}: a stimulus has a constant (all-equal) mean pattern at some time.")
        inv = 1.0 / np.sqrt(d)
        return 1.0 - K * inv[:, :, None] * inv[:, None, :]
    D = np.maximum(d[:, :, None] + d[:, None, :] - 2.0 * K, 0.0)
    return np.sqrt(D) if metric == "euclidean" else D


def _crossnobis(sums: np.ndarray, counts: np.ndarray, n_sensors: int, W: np.ndarray | None) -> np.ndarray:
    """Leave-one-fold-out crossnobis as rsatoolbox (train: mean of the other folds' trials).

    ``sums`` (time, fold, stimulus, sensor), ``counts`` (fold, stimulus)."""
    total, n_tot = sums.sum(1), counts.sum(0)
    out = None
    n_f = sums.shape[1]
    for f in range(n_f):
        test = sums[:, f] / counts[f][None, :, None]
        train = (total - sums[:, f]) / (n_tot - counts[f])[None, :, None]
        if W is not None:
            test, train = _whiten(test, W), _whiten(train, W)
        K = _gram(train, test)
        dk = np.diagonal(K, axis1=1, axis2=2)
        D = dk[:, :, None] + dk[:, None, :] - K - K.transpose(0, 2, 1)
        out = D if out is None else out + D
    return out / (n_f * n_sensors)


def _whiten(M: np.ndarray, W: np.ndarray) -> np.ndarray:
    return M @ W if W.ndim == 2 else np.matmul(M, W)


def _residual_sums(Xs: np.ndarray, sums: np.ndarray, counts: np.ndarray, seg: np.ndarray, per_time: bool):
    """Residuals from the stimulus means -> X^T X (per time or pooled), sum ||r||^4.

    ``Xs`` sorted trials, ``sums``/``counts`` per segment, ``seg`` each trial's segment."""
    means = sums / counts.reshape(-1)[None, :, None]  # (t, seg, s); fold segments: pool below
    R = np.ascontiguousarray((Xs - means.transpose(1, 2, 0)[seg]).transpose(2, 0, 1))  # (t, trial, s)
    xx = torch.bmm(torch.from_numpy(R).transpose(1, 2), torch.from_numpy(R)).numpy()  # (t, s, s)
    x4 = ((R * R).sum(-1) ** 2).sum(-1)  # (t,)
    return (xx, x4) if per_time else (xx.sum(0), x4.sum())


def compute_rdm_movie(
    epochs: Any,
    metric: MovieMetric = "correlation",
    *,
    stimulus_ids: Any = None,
    times: Sequence[float] | None = None,
    runs: Sequence[Any] | None = None,
    cv: Literal["leave_one_run_out", "split_half"] = "leave_one_run_out",
    noise: np.ndarray | None = None,
    noise_normalization: Literal["epoch", "time"] | None = None,
    window: int | None = None,
    step: int = 1,
    bins: Sequence[Sequence[float]] | None = None,
    chunk_size: int | None = None,
    progress: bool = True,
) -> xr.DataArray:
    """RDM of the stimuli at every time point (or window, or bin) of MEG/EEG epochs.

    Parameters
    ----------
    epochs : mne.Epochs, xr.DataArray or ndarray
        Trials x sensors x time (see :func:`epochs_array`).
    metric : {"correlation", "cosine", "euclidean", "sqeuclidean", "crossnobis"}
        As :func:`neurocnn.rsa.compute_rdm` (``sqeuclidean`` is not divided by the
        number of sensors; ``crossnobis`` is, as rsatoolbox). rsatoolbox's
        ``euclidean``/``mahalanobis`` equal ``sqeuclidean`` / n_sensors.
    stimulus_ids : sequence or dict, optional
        Stimulus of each trial (trials of a stimulus are averaged); ``mne.Epochs``: the
        event names by default, or ``{event name: stimulus id}``.
    times : sequence of float, optional
        Sample times for array input.
    runs : sequence, optional
        Run of each trial (``cv="leave_one_run_out"``).
    cv : {"leave_one_run_out", "split_half"}
        Folds of ``crossnobis``: runs, or the first and second half of each stimulus's
        trials.
    noise : ndarray (sensor, sensor), optional
        Noise precision matrix (as rsatoolbox's ``noise``): patterns are whitened by its
        square root before any metric.
    noise_normalization : {"epoch", "time"}, optional
        Multivariate noise normalization (Guggenmos et al. 2018): the covariance of the
        residuals (trials minus their stimulus's mean), Ledoit-Wolf shrunk, pooled over
        all output times (``"epoch"``) or per time (``"time"``); patterns are whitened by
        its inverse square root.
    window : int, optional
        Sliding window of this many samples (mean over the window), moved by ``step``.
    step : int
        Samples between windows.
    bins : sequence of sequences of float, optional
        Bins of sample times, averaged (rsatoolbox ``bins``).
    chunk_size : int, optional
        Output times per batch (default: about 256 MiB of float64 epochs).
    progress : bool
        Show a progress bar.

    Returns
    -------
    xr.DataArray
        Dims ``(time, stimulus, stimulus2)``; ``time`` the (mean) time of each output
        sample; stimulus ids in order of first appearance. Attrs: metric, cv,
        noise_normalization, window, n_trials, n_sensors, neurocnn_version.

    Raises
    ------
    ShapeMismatchError
        Ids/runs/times of the wrong length, noise of the wrong shape, a stimulus missing
        from a fold.
    InvalidDataError
        Fewer than 3 stimuli, NaN samples, constant patterns (correlation), bad window.
    UnknownNameError
        Unknown metric, cv or noise_normalization.

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((40, 8, 5))
    >>> movie = compute_rdm_movie(x, "sqeuclidean", stimulus_ids=np.repeat(list("abcd"), 10), progress=False)
    >>> movie.dims, movie.shape
    (('time', 'stimulus', 'stimulus2'), (5, 4, 4))
    """
    from tqdm.auto import tqdm

    check_option("metric", metric, MOVIE_METRICS)
    check_option("cv", cv, ("leave_one_run_out", "split_half"))
    if noise_normalization is not None:
        check_option("noise_normalization", noise_normalization, ("epoch", "time"))
    if noise is not None and noise_normalization is not None:
        raise InvalidDataError("give noise= (a precision matrix) or noise_normalization=, not both.")
    ep = epochs_array(epochs, stimulus_ids=stimulus_ids, times=times, runs=runs)
    n_trials, n_sens, _ = ep.data.shape
    conds, first, codes = np.unique(ep.stimulus_ids, return_index=True, return_inverse=True)
    order = np.argsort(first)  # stimuli in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    conds, codes = conds[order], rank[codes]
    n_cond = len(conds)
    if n_cond < 3:
        raise InvalidDataError(f"an RDM movie needs at least 3 stimuli, the epochs have {n_cond}.")
    folds = _folds(ep, codes, n_cond, cv) if metric == "crossnobis" else None
    groups, t_out = _time_groups(ep.times, window, step, bins)
    W = None
    if noise is not None:
        noise = np.asarray(noise, np.float64)
        if noise.shape != (n_sens, n_sens):
            raise ShapeMismatchError(f"noise must be ({n_sens}, {n_sens}) for {n_sens} sensors, got {noise.shape}.")
        W = _sqrt_psd(noise)
    n_out = len(t_out)
    if chunk_size is None:
        chunk_size = max(1, min(n_out, _CHUNK_BYTES // max(1, n_trials * n_sens * 8)))
    chunk_size = check_positive_int("chunk_size", chunk_size)
    f_lab = folds if folds is not None else np.zeros(n_trials, np.int64)
    n_f = int(f_lab.max()) + 1
    order = np.lexsort((codes, f_lab))
    seg = (f_lab * n_cond + codes)[order]  # segment of each sorted trial
    starts = np.searchsorted(seg, np.arange(n_f * n_cond))
    counts = np.bincount(seg, minlength=n_f * n_cond).astype(np.float64).reshape(n_f, n_cond)
    get = _Chunker(ep.data, groups, order)
    spans = [(a, min(n_out, a + chunk_size)) for a in range(0, n_out, chunk_size)]

    def stimulus_sums(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fold segments pooled per stimulus (for means and MNN residuals)."""
        if n_f == 1:
            return sums, counts[0]
        return sums.reshape(sums.shape[0], n_f, n_cond, -1).sum(1), counts.sum(0)

    def residuals(Xs: np.ndarray, sums: np.ndarray, per_time: bool):
        ssum, scount = stimulus_sums(sums)
        return _residual_sums(Xs, ssum, scount, codes[order], per_time)

    shrink = []
    if noise_normalization == "epoch":
        xx, x4 = 0.0, 0.0
        for a, b in tqdm(spans, desc="noise covariance", disable=not progress, leave=False):
            Xs = get(a, b)
            s_xx, s_x4 = residuals(Xs, _segment_sums(Xs, starts), False)
            xx, x4 = xx + s_xx, x4 + float(s_x4)
        cov, shr = ledoit_wolf_covariance(xx, x4, n_trials * n_out)
        shrink.append(shr)
        W = _inv_sqrt(cov)
    out = np.empty((n_out, n_cond, n_cond))
    for a, b in tqdm(spans, desc="RDM movie", disable=not progress, leave=False):
        Xs = get(a, b)
        sums = _segment_sums(Xs, starts)
        Wc = W
        if noise_normalization == "time":
            xx, x4 = residuals(Xs, sums, True)
            covs = [ledoit_wolf_covariance(xx[i], float(x4[i]), n_trials) for i in range(len(xx))]
            shrink.extend(c[1] for c in covs)
            Wc = _inv_sqrt(np.stack([c[0] for c in covs]))
        if metric == "crossnobis":
            D = _crossnobis(sums.reshape(sums.shape[0], n_f, n_cond, n_sens), counts, n_sens, Wc)
        else:
            ssum, scount = stimulus_sums(sums)
            M = ssum / scount[None, :, None]
            if Wc is not None:
                M = _whiten(M, Wc)
            D = _rdm_from_means(M, metric)
        D = (D + D.transpose(0, 2, 1)) / 2
        out[a:b] = D
        out[a:b, np.arange(n_cond), np.arange(n_cond)] = 0.0
    attrs: dict[str, Any] = {k: v for k, v in ep.attrs.items()}
    attrs.update(metric=metric, n_trials=int(n_trials), n_sensors=int(n_sens), neurocnn_version=version(),
                 noise_normalization=noise_normalization or "none", noise="given" if noise is not None else "none",
                 window=int(window) if window else 0, step=int(step), binned=int(bins is not None))
    if metric == "crossnobis":
        attrs.update(cv=cv, n_folds=int(folds.max()) + 1)
    if shrink:
        attrs["ledoit_wolf_shrinkage_mean"] = float(np.mean(shrink))
    return xr.DataArray(out, dims=("time", "stimulus", "stimulus2"),
                        coords={"time": t_out, "stimulus": conds, "stimulus2": conds.copy()}, attrs=attrs)


def _embedding(D: np.ndarray) -> np.ndarray:
    """Classical MDS: stimulus coordinates whose Gram is -1/2 J D J (PSD part)."""
    n = D.shape[0]
    J = np.eye(n) - 1.0 / n
    w, V = np.linalg.eigh(-0.5 * J @ D @ J)
    keep = w > 1e-10 * max(w.max(), 1e-300)
    return V[:, keep] * np.sqrt(w[keep])


def simulate_epochs(layer_rdms: xr.DataArray, onsets: Mapping[str, float], *, offsets: Mapping[str, float] | None = None,
                    n_trials: int = 10, n_sensors: int = 32, times: Sequence[float] | None = None,
                    signal: float = 1.0, noise: float = 1.0, n_runs: int = 2, seed: int = 0) -> xr.DataArray:
    """Simulate MEG epochs whose stimulus patterns follow given RDMs from planted onsets.

    From ``onsets[layer]`` (to ``offsets[layer]``, default the end) the sensors carry
    ``Y @ W`` (``Y`` the classical-MDS embedding of that layer's RDM, ``W`` Gaussian
    sensor weights, scaled to ``signal`` sd per sensor); Gaussian noise (sd ``noise``)
    is added to every trial and sample.

    Parameters
    ----------
    layer_rdms : xr.DataArray
        Dims ``(layer, stimulus, stimulus2)``.
    onsets : dict
        ``{layer: onset time}`` of the planted representations.
    offsets : dict, optional
        ``{layer: offset time}`` (exclusive).
    n_trials : int
        Trials per stimulus (spread evenly over ``n_runs`` runs).
    n_sensors : int
        Sensors.
    times : sequence of float, optional
        Sample times (default: -0.1 to 0.5 s at 100 Hz).
    signal, noise : float
        Signal and noise sd.
    n_runs : int
        Runs (coord ``run``), for cross-validated distances.
    seed : int
        Random seed.

    Returns
    -------
    xr.DataArray
        Dims ``(trial, sensor, time)``, coords ``stimulus`` and ``run`` on ``trial``.

    Raises
    ------
    UnknownNameError
        An onset names an unknown layer.

    Examples
    --------
    >>> ep = simulate_epochs(rdms, {"conv1": 0.08, "fc7": 0.15})  # doctest: +SKIP
    """
    rng = numpy_rng(seed)
    n_trials = check_positive_int("n_trials", n_trials)
    n_sensors = check_positive_int("n_sensors", n_sensors)
    t = np.round(np.arange(-0.1, 0.5, 0.01), 6) if times is None else np.asarray(times, np.float64)
    da = layer_rdms.transpose("layer", "stimulus", "stimulus2")
    names = [str(v) for v in da["layer"].values]
    ids = np.asarray(da["stimulus"].values).astype(str)
    n = len(ids)
    data = rng.standard_normal((n * n_trials, n_sensors, len(t))) * noise
    stim = np.tile(ids, n_trials)
    runs = np.repeat(np.arange(n_trials) * n_runs // n_trials, n)
    for layer, onset in onsets.items():
        li = names.index(check_option("layer", str(layer), names))
        Y = _embedding(da.values[li])
        P = Y @ rng.standard_normal((Y.shape[1], n_sensors))
        P = P / P.std(0, keepdims=True).clip(1e-12) * signal
        stop = np.inf if offsets is None or layer not in offsets else float(offsets[layer])
        on = (t >= float(onset) - 1e-9) & (t < stop - 1e-9)
        data[:, :, on] += np.tile(P, (n_trials, 1))[:, :, None]
    return xr.DataArray(data, dims=("trial", "sensor", "time"),
                        coords={"time": t, "sensor": [f"MEG{i:03d}" for i in range(n_sensors)],
                                "stimulus": ("trial", stim), "run": ("trial", runs)},
                        attrs={"simulated": "neurocnn.rsa.simulate_epochs", "seed": int(seed)})
