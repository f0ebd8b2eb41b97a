"""Assemble the xarray result of fit_encoding (private)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from ._data import Layer, Responses
from .scores import pooled_scores

__all__: list[str] = []

_PROVENANCE = ("model", "weights_sha256", "stimulus_set", "preprocessing")


def _common_attrs(layers: list[Layer]) -> dict:
    attrs: dict = {}
    for key in _PROVENANCE:
        values = {str(layer.attrs[key]) for layer in layers if key in layer.attrs}
        if len(values) == 1:
            attrs[key] = values.pop()
    attrs["layers"] = [layer.name for layer in layers]
    attrs["layer_modules"] = [str(layer.attrs.get("layer", layer.name)) for layer in layers]
    attrs["n_features"] = [layer.n_features for layer in layers]
    return attrs


def build_result(layers: list[Layer], resp: Responses, frows: np.ndarray, Y: np.ndarray, prediction: np.ndarray,
                 chosen: np.ndarray, folds: np.ndarray, ceiling: np.ndarray | None,
                 keep_predictions: bool) -> xr.Dataset:
    """Return the Dataset of scores (and optionally predictions) with flat coords."""
    dim = resp.target_dim
    correlation, r2 = pooled_scores(Y, prediction)
    names = np.array([layer.name for layer in layers])
    ids = layers[0].ids[frows] if layers[0].ids is not None else (
        resp.ids if resp.ids is not None else np.arange(len(frows)).astype(str))
    coords = {
        "layer": names, "stimulus": np.asarray(ids).astype(str), "fold": np.arange(chosen.shape[1]),
        dim: np.arange(Y.shape[1]), **resp.target_coords,
    }
    best = np.argmax(r2, axis=0)
    data = {
        "correlation": (("layer", dim), correlation),
        "r2": (("layer", dim), r2),
        "alpha": (("layer", "fold", dim), chosen),
        "best_layer": ((dim,), names[best]),
        "best_r2": ((dim,), r2[best, np.arange(r2.shape[1])]),
        "fold_of_stimulus": (("stimulus",), folds),
    }
    if ceiling is not None:
        positive = ceiling > 0
        safe = np.where(positive, ceiling, 1.0)
        data["noise_ceiling"] = ((dim,), ceiling)
        data["correlation_normalized"] = (("layer", dim), np.where(positive, correlation / np.sqrt(safe), np.nan))
        data["r2_normalized"] = (("layer", dim), np.where(positive, r2 / safe, np.nan))
    if keep_predictions:
        data["prediction"] = (("layer", "stimulus", dim), prediction)
        data["response"] = (("stimulus", dim), Y)
    return xr.Dataset(data, coords=coords, attrs=_common_attrs(layers))
