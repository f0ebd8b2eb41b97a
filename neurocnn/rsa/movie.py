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

from .._validation import check_option, check_positive_int
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
    if not np.isfinite(data).all():
        raise InvalidDataError("epochs hold NaN/inf samples; drop or interpolate those trials first.")
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
    """Binned/windowed data of a range of output times, as float64 (trial, sensor, time)."""

    def __init__(self, data: np.ndarray, groups: list[np.ndarray] | None):
        self.data, self.groups = data, groups

    def __call__(self, a: int, b: int) -> np.ndarray:
        if self.groups is None:
            return np.asarray(self.data[:, :, a:b], np.float64)
        return np.stack([np.asarray(self.data[:, :, g], np.float64).mean(-1) for g in self.groups[a:b]], -1)


def _condition_sums(X: torch.Tensor, codes: torch.Tensor, n_cond: int) -> torch.Tensor:
    """(trial, sensor, time) -> per-condition sums (time, cond, sensor)."""
    out = torch.zeros((n_cond,) + tuple(X.shape[1:]), dtype=X.dtype)
    out.index_add_(0, codes, X)
    return out.permute(2, 0, 1)


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


def _rdm_from_means(M: torch.Tensor, metric: str) -> torch.Tensor:
    """(time, cond, sensor) means -> (time, cond, cond) RDMs."""
    if metric == "correlation":
        M = M - M.mean(-1, keepdim=True)
    K = M @ M.transpose(1, 2)
    d = torch.diagonal(K, dim1=1, dim2=2)
    if metric in ("correlation", "cosine"):
        if (d <= 1e-12 * d.amax(1, keepdim=True).clamp_min(1e-300)).any():
            raise InvalidDataError(f"metric {metric!r}: a stimulus has a constant (all-equal) mean pattern at some time.")
        inv = d.rsqrt()
        return 1.0 - K * inv[:, :, None] * inv[:, None, :]
    D = (d[:, :, None] + d[:, None, :] - 2.0 * K).clamp_min(0.0)
    return D.sqrt() if metric == "euclidean" else D


def _crossnobis(X: torch.Tensor, codes: torch.Tensor, folds: np.ndarray, n_cond: int,
                W: torch.Tensor | None) -> torch.Tensor:
    """Leave-one-fold-out crossnobis as rsatoolbox (train: mean of the other folds' trials)."""
    total = _condition_sums(X, codes, n_cond)
    n_tot = torch.bincount(codes, minlength=n_cond).to(X.dtype)
    out = None
    n_f = int(folds.max()) + 1
    for f in range(n_f):
        sel = torch.from_numpy(np.flatnonzero(folds == f))
        fs = _condition_sums(X[sel], codes[sel], n_cond)
        nf = torch.bincount(codes[sel], minlength=n_cond).to(X.dtype)
        test = fs / nf[None, :, None]
        train = (total - fs) / (n_tot - nf)[None, :, None]
        if W is not None:
            test, train = _whiten(test, W), _whiten(train, W)
        K = train @ test.transpose(1, 2)
        dk = torch.diagonal(K, dim1=1, dim2=2)
        D = dk[:, :, None] + dk[:, None, :] - K - K.transpose(1, 2)
        out = D if out is None else out + D
    return out / (n_f * X.shape[1])


def _whiten(M: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    return M @ W if W.ndim == 2 else torch.bmm(M, W)


def _residual_sums(X: torch.Tensor, codes: torch.Tensor, n_cond: int, per_time: bool):
    """Residuals from the stimulus means -> X^T X (per time or pooled), sum ||r||^4, n."""
    sums = _condition_sums(X, codes, n_cond)  # (t, c, s)
    n = torch.bincount(codes, minlength=n_cond).to(X.dtype)
    means = (sums / n[None, :, None]).permute(1, 2, 0)  # (c, s, t)
    R = (X - means[codes]).permute(2, 0, 1)  # (t, trial, s)
    xx = R.transpose(1, 2) @ R  # (t, s, s)
    x4 = (R * R).sum(-1).pow(2).sum(-1)  # (t,)
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
        W = torch.from_numpy(_sqrt_psd(noise))
    n_out = len(t_out)
    if chunk_size is None:
        chunk_size = max(1, min(n_out, _CHUNK_BYTES // max(1, n_trials * n_sens * 8)))
    chunk_size = check_positive_int("chunk_size", chunk_size)
    get = _Chunker(ep.data, groups)
    codes_t = torch.from_numpy(codes.astype(np.int64))
    spans = [(a, min(n_out, a + chunk_size)) for a in range(0, n_out, chunk_size)]
    shrink = []
    if noise_normalization == "epoch":
        xx, x4 = 0.0, 0.0
        for a, b in tqdm(spans, desc="noise covariance", disable=not progress, leave=False):
            s_xx, s_x4 = _residual_sums(torch.from_numpy(get(a, b)), codes_t, n_cond, False)
            xx, x4 = xx + s_xx.numpy(), x4 + float(s_x4)
        cov, s = ledoit_wolf_covariance(xx, x4, n_trials * n_out)
        shrink.append(s)
        W = torch.from_numpy(_inv_sqrt(cov))
    out = np.empty((n_out, n_cond, n_cond))
    n = torch.bincount(codes_t, minlength=n_cond).to(torch.float64)
    for a, b in tqdm(spans, desc="RDM movie", disable=not progress, leave=False):
        X = torch.from_numpy(get(a, b))
        Wc = W
        if noise_normalization == "time":
            xx, x4 = _residual_sums(X, codes_t, n_cond, True)
            covs = [ledoit_wolf_covariance(xx[i].numpy(), float(x4[i]), n_trials) for i in range(len(xx))]
            shrink.extend(c[1] for c in covs)
            Wc = torch.from_numpy(_inv_sqrt(np.stack([c[0] for c in covs])))
        if metric == "crossnobis":
            D = _crossnobis(X, codes_t, folds, n_cond, Wc)
        else:
            M = _condition_sums(X, codes_t, n_cond) / n[None, :, None]
            if Wc is not None:
                M = _whiten(M, Wc)
            D = _rdm_from_means(M, metric)
        D = (D + D.transpose(1, 2)) / 2
        D.diagonal(dim1=1, dim2=2).zero_()
        out[a:b] = D.numpy()
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
    rng = np.random.default_rng(seed)
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
