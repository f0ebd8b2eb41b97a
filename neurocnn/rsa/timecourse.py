"""Time-resolved RSA: layer x time correlation curves with peak latencies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr

from .._validation import (
    check_fraction,
    check_option,
    check_positive_int,
    check_seed,
    numpy_rng,
)
from .._version import version
from ..exceptions import ShapeMismatchError
from ._kernels import (
    COMPARE_METHODS,
    CompareMethod,
    _compare_batched,
    _orders,
    _weights_unsupported,
)
from ._resampling import (
    _OVER,
    _chunks,
    _draw,
    _layer_names,
    _percentile_ci,
    _samples_per_chunk,
)
from ._stack import _align, _as_stack, _meg_stack


def meg_layer_time_correlation(
    layer_rdms: Any,
    meg_rdms: Any,
    *,
    method: CompareMethod = "spearman",
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
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
        ``ci_low``/``ci_high`` (layer, time); ``peak_latency`` (layer) with
        ``peak_latency_ci_low``/``_ci_high`` and ``peak_latency_samples`` (layer,
        sample); attrs method, over, seed, n_bootstrap, ci.

    Raises
    ------
    ShapeMismatchError
        Wrong dims/shapes or different stimuli.
    """
    check_option("method", method, COMPARE_METHODS)
    n_bootstrap = check_positive_int("n_bootstrap", n_bootstrap)
    ci = check_fraction("ci", ci)
    seed = check_seed(seed)
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
    samples = _draw(numpy_rng(seed), n_bootstrap, sm.n, k, over)
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
            "ci_low": (("layer", "time"), lo),
            "ci_high": (("layer", "time"), hi),
            "peak_latency": ("layer", t[np.argmax(observed, axis=1)].astype(np.float64)),
            "peak_latency_ci_low": ("layer", plo),
            "peak_latency_ci_high": ("layer", phi),
            "peak_latency_samples": (("layer", "sample"), peaks.T),
        },
        coords={"layer": layers, "time": t, "sample": np.arange(n_bootstrap)},
        attrs={"method": method, "over": over, "seed": int(seed), "n_bootstrap": int(n_bootstrap),
               "n_valid": int(valid.sum()), "ci": ci, "neurocnn_version": version()},
    )


