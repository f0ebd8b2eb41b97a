"""Planted ground truth for encoding models: simulated targets built from one real layer."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from .._validation import check_positive_int, numpy_rng
from .._version import version
from ..exceptions import InvalidDataError
from . import _kernels
from ._data import as_layers
from .fit import DEFAULT_ALPHAS, Split

__all__ = ["expected_ridge_r2", "plant_responses"]


def plant_responses(activations: Any, *, n_targets: int = 50, n_components: int = 3, snr: float = 3.0,
                    n_repeats: int = 4, seed: int = 0, target_dim: str = "voxel") -> xr.Dataset:
    """Simulate targets as random mixtures of one layer's units plus noise at a known SNR.

    Each target's signal is a random Gaussian mixture of the layer's units along its
    ``n_components`` leading principal axes (the directions a population response
    shares most), a direction drawn uniformly and scaled to unit variance; each of ``n_repeats`` repeats
    adds independent Gaussian noise so that the noise of the mean over repeats has
    variance ``1 / snr``. The R^2 ceiling of the mean response is then
    ``snr / (1 + snr)``.

    Parameters
    ----------
    activations : xarray.DataArray or array, shape (stimulus, ...)
        The planted layer.
    n_targets, n_components, n_repeats : int
    snr : float
        Signal-to-noise variance ratio of the mean over repeats.
    seed : int
    target_dim : str
        Name of the target dim.

    Returns
    -------
    xarray.Dataset
        ``response`` (stimulus, repeat, target), ``signal`` (stimulus, target) and
        ``basis`` (stimulus, component: the unit-norm principal scores the signal mixes).
    """
    n_targets, n_components, n_repeats = (check_positive_int(k, v) for k, v in
                                          (("n_targets", n_targets), ("n_components", n_components), ("n_repeats", n_repeats)))
    if not np.isfinite(snr) or snr <= 0:
        raise InvalidDataError(f"snr must be a positive number; got {snr}.")
    layer = as_layers(activations)[0]
    n = layer.data.shape[0]
    if n_components >= n:
        raise InvalidDataError(f"n_components={n_components} must be below the number of stimuli ({n}).")
    K = _kernels.linear_kernel(layer.data)
    everyone = np.arange(n)
    Kc, _ = _kernels.center_train(K, everyone, everyone[:1])
    values, vectors = np.linalg.eigh(Kc)
    basis = vectors[:, np.argsort(values)[::-1][:n_components]]
    rng = numpy_rng(seed)
    mixture = rng.standard_normal((n_components, n_targets))
    signal = basis @ (mixture / np.linalg.norm(mixture, axis=0) * np.sqrt(n))
    noise = rng.standard_normal((n, n_repeats, n_targets)) * np.sqrt(n_repeats / snr)
    ids = layer.ids if layer.ids is not None else np.array([f"stimulus{i}" for i in range(n)])
    coords = {"stimulus": ids, "repeat": np.arange(n_repeats), target_dim: np.arange(n_targets),
              "component": np.arange(n_components)}
    return xr.Dataset(
        {"response": (("stimulus", "repeat", target_dim), signal[:, None, :] + noise),
         "signal": (("stimulus", target_dim), signal), "basis": (("stimulus", "component"), basis)},
        coords=coords,
        attrs={"planted_layer": layer.name, "snr": float(snr), "n_components": n_components, "n_repeats": n_repeats,
               "r2_ceiling": float(snr / (1 + snr)), "seed": int(seed), "neurocnn_version": version(),
               **{k: v for k, v in layer.attrs.items() if k in ("model", "weights_sha256", "layer")}},
    )


def expected_ridge_r2(activations: Any, basis: np.ndarray, *, snr: float, splits: list[Split],
                      alphas: np.ndarray | None = None) -> float:
    """Expected held-out R^2 of ridge on ``activations`` for targets from :func:`plant_responses`.

    For fixed stimuli the prediction of every fold is linear in the training responses,
    ``y_test_hat = B y_train``, so its expected squared error over the planted signal
    (isotropic mixtures of ``basis``) and noise is exact:
    ``(n/k) ||P_test - B P_train||^2 + (1/snr) (n_test + ||B||^2)``. The penalty of each fold
    is the best of the grid (an oracle choice), so cross-validated fits should come
    close to, and on average not above, this value.

    Returns
    -------
    float
        1 - E[SSE] / E[SST], pooled over folds.
    """
    layer = as_layers(activations)[0]
    K = _kernels.linear_kernel(layer.data)
    P = np.asarray(basis, dtype=np.float64)
    n, k = P.shape
    var_w, var_noise = n / k, 1.0 / snr
    sse = 0.0
    for train, test, _ in splits:
        Ktr, Kte = _kernels.center_train(K, train, test)
        scale = (np.trace(Ktr) / len(train)) if alphas is None else 1.0
        grid = DEFAULT_ALPHAS * scale if alphas is None else np.asarray(alphas)
        values, vectors = np.linalg.eigh(Ktr)
        center = np.eye(len(train)) - 1.0 / len(train)
        best = np.inf
        for alpha in grid:
            A = (Kte @ vectors / (values + alpha)) @ vectors.T
            B = 1.0 / len(train) + A @ center
            err = var_w * ((P[test] - B @ P[train]) ** 2).sum() + var_noise * (len(test) + (B**2).sum())
            best = min(best, err)
        sse += best
    sst = var_w * ((P - P.mean(axis=0)) ** 2).sum() + var_noise * (n - 1)
    return float(1.0 - sse / sst)
