"""Noise ceilings (Nili et al. 2014) and seeded, vectorized bootstraps over stimuli and subjects."""

from __future__ import annotations

from dataclasses import dataclass
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
from ..scale import map_tasks
from ._kernels import (
    COMPARE_METHODS,
    CompareMethod,
    _compare_prepared,
    _noise_ceiling_core,
    _orders,
    _prepare,
    _weights_unsupported,
)
from ._resampling import (
    _OVER,
    _draw,
    _layer_names,
    _p_greater_equal,
    _percentile_ci,
    _Samples,
    _samples_per_chunk,
)
from ._stack import _align, _as_stack


# ------------------------------------------------------------ noise ceiling, bootstrap
def noise_ceiling(brain_rdms: Any, *, method: CompareMethod = "spearman") -> xr.DataArray:
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


def bootstrap_rdm_comparison(
    model_rdms: Any,
    brain_rdms: Any,
    *,
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
        sample): bootstrap distribution; ``mean``, ``sd``, ``ci_low``, ``ci_high``
        (layer); ``noise_ceiling`` (bound) observed and ``noise_ceiling_samples``
        (bound, sample) with ``noise_ceiling_mean``/``_sd``/``_ci_low``/``_ci_high``;
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
    seed = check_seed(seed)
    sm, sb = _as_stack(model_rdms, "model_rdms"), _as_stack(brain_rdms, "brain_rdms")
    if sb.vectors.shape[0] < 2:
        raise ShapeMismatchError("bootstrap_rdm_comparison needs RDMs of at least 2 subjects.")
    if method.endswith("_cov") and over != "subjects":
        _weights_unsupported(method)
    M, V = sm.vectors[None], _align(sm, sb)[None]
    job = _BootJob(M, V, _orders(M, method), _orders(V, method), method, sm.n, None)
    L = M.shape[1]
    observed, lo0, up0 = _boot_evaluate(job, None, None)
    job.samples = _draw(numpy_rng(seed), n_bootstrap, sm.n, V.shape[1], over)
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
            "ci_low": ("layer", lo),
            "ci_high": ("layer", hi),
            "noise_ceiling": ("bound", nc0),
            "noise_ceiling_samples": (("bound", "sample"), nc),
            "noise_ceiling_mean": ("bound", np.nanmean(nc, 1)),
            "noise_ceiling_sd": ("bound", np.nanstd(nc, 1, ddof=1)),
            "noise_ceiling_ci_low": ("bound", nlo),
            "noise_ceiling_ci_high": ("bound", nhi),
            "p_layer_vs_layer": (("layer", "layer2"), p_pair),
            "p_layer_vs_lower_ceiling": ("layer", p_ceiling),
        },
        coords={"layer": layers, "layer2": layers.copy(), "bound": bound,
                "sample": np.arange(evals.shape[1])},
        attrs={**attrs, "neurocnn_version": version()},
    )
    return ds


