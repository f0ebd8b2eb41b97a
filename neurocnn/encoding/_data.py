"""Encoding inputs: layer activations to feature blocks, responses to a target matrix (private)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from ..exceptions import InvalidDataError, ShapeMismatchError

__all__: list[str] = []

#: Dims of a responses DataArray that are not targets.
STIMULUS, REPEAT_DIMS, GROUP_COORDS = "stimulus", ("repeat", "run"), ("run", "session")


@dataclass
class Layer:
    """One layer's features as a 2-D (stimulus x feature) numpy or dask array."""

    name: str
    data: Any
    ids: np.ndarray | None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.data.shape[1])


@dataclass
class Responses:
    """Responses averaged over repeats (stimulus x target), with repeats kept for the ceiling."""

    data: np.ndarray
    repeats: np.ndarray | None
    ids: np.ndarray | None
    target_dim: str
    target_coords: dict[str, tuple[str, np.ndarray]]
    groups: np.ndarray | None
    group_name: str


def _as_2d(name: str, value: Any) -> tuple[Any, np.ndarray | None, dict]:
    attrs: dict = {}
    ids = None
    if isinstance(value, xr.DataArray):
        if STIMULUS not in value.dims:
            raise ShapeMismatchError(
                f"Activations of layer {name!r} have dims {value.dims} and no 'stimulus' dim; "
                "pass what VirtualSubject.activations returns, or an array with stimuli first."
            )
        value = value.transpose(STIMULUS, ...)
        if STIMULUS in value.coords:
            ids = np.asarray(value[STIMULUS].values).astype(str)
        attrs = {k: v for k, v in value.attrs.items() if isinstance(v, (str, int, float))}
        value = value.data
    if not hasattr(value, "shape") or not hasattr(value, "reshape"):
        value = np.asarray(value)
    if len(value.shape) < 2:
        raise ShapeMismatchError(
            f"Activations of layer {name!r} have shape {tuple(value.shape)}; need (stimulus, feature, ...)."
        )
    n = value.shape[0]
    return value.reshape(n, -1), ids, attrs


def as_layers(features: Any) -> list[Layer]:
    """Return the layers in ``features`` (a DataArray, array, or a mapping/sequence of them)."""
    if isinstance(features, xr.DataArray) or hasattr(features, "shape"):
        name = str(features.attrs.get("requested_as", features.attrs.get("layer", "features"))) \
            if isinstance(features, xr.DataArray) else "features"
        items = [(name, features)]
    elif isinstance(features, Mapping):
        items = [(str(k), v) for k, v in features.items()]
    elif isinstance(features, xr.Dataset):
        items = [(str(k), features[k]) for k in features.data_vars]
    elif isinstance(features, Sequence) and not isinstance(features, str):
        items = [(str(getattr(v, "attrs", {}).get("requested_as", f"layer{i}")), v) for i, v in enumerate(features)]
    else:
        raise ShapeMismatchError(
            f"features must be a DataArray, an array, or a dict of them (layer name -> activations); "
            f"got {type(features).__name__}."
        )
    if not items:
        raise ShapeMismatchError("features is empty; give at least one layer.")
    layers = [Layer(name, *_as_2d(name, value)) for name, value in items]
    if len({layer.name for layer in layers}) != len(layers):
        raise ShapeMismatchError(f"Layer names repeat: {[layer.name for layer in layers]}.")
    n = {layer.data.shape[0] for layer in layers}
    if len(n) > 1:
        raise ShapeMismatchError(f"Layers have different numbers of stimuli: { {l.name: l.data.shape[0] for l in layers} }.")
    ids = [layer.ids for layer in layers if layer.ids is not None]
    if any(not np.array_equal(ids[0], other) for other in ids[1:]):
        raise ShapeMismatchError("Layers list different stimulus ids (or orders); extract them from one stimulus set.")
    return layers


def as_responses(responses: Any, *, groups: Any = None) -> Responses:
    """Validate ``responses`` (stimulus x target DataArray, optional run/repeat dim) into a ``Responses``."""
    if not isinstance(responses, xr.DataArray):
        arr = np.asarray(responses)
        if arr.ndim != 2:
            raise ShapeMismatchError(
                f"responses as an array must be 2-D (stimulus, target); got shape {arr.shape}. "
                "Use an xarray.DataArray with a 'repeat' dim for repeated measurements."
            )
        responses = xr.DataArray(arr, dims=(STIMULUS, "target"))
    if STIMULUS not in responses.dims:
        raise ShapeMismatchError(f"responses need a 'stimulus' dim; got dims {responses.dims}.")
    repeat = [d for d in responses.dims if d in REPEAT_DIMS]
    targets = [d for d in responses.dims if d != STIMULUS and d not in REPEAT_DIMS]
    if len(repeat) > 1 or len(targets) != 1:
        raise ShapeMismatchError(
            f"responses have dims {responses.dims}; expected 'stimulus', one target dim (voxel, neuron, "
            "sensor, ...) and optionally one of 'repeat'/'run' (repeated measurements of each stimulus)."
        )
    target_dim = targets[0]
    order = (STIMULUS, *repeat, target_dim)
    values = np.asarray(responses.transpose(*order).values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        bad = np.argwhere(~np.isfinite(values))
        raise InvalidDataError(
            f"responses contain {len(bad)} NaN/inf value(s), first at {dict(zip(order, bad[0].tolist()))}. "
            "Drop those targets or stimuli (or impute them) before fitting."
        )
    mean = values.mean(axis=1) if repeat else values
    ids = np.asarray(responses[STIMULUS].values).astype(str) if STIMULUS in responses.coords else None
    if ids is not None and len(np.unique(ids)) != len(ids):
        raise ShapeMismatchError(
            "responses list some stimulus ids more than once; average the repeats, or put them on a "
            "'repeat' dim (stimulus x repeat x target)."
        )
    std = mean.std(axis=0)
    const = np.flatnonzero(std <= 1e-12 * np.maximum(1.0, np.abs(mean).max(axis=0)))
    if const.size:
        names = responses[target_dim].values[const[:5]].tolist() if target_dim in responses.coords else const[:5].tolist()
        raise InvalidDataError(
            f"{const.size} target(s) along {target_dim!r} are constant over stimuli (first: {names}); "
            "their prediction accuracy is undefined. Drop them (e.g. voxels outside the brain) before fitting."
        )
    coords = {
        name: (target_dim, np.asarray(c.values))
        for name, c in responses.coords.items() if c.dims == (target_dim,)
    }
    group_values, group_name = _groups(responses, groups)
    return Responses(mean, values if repeat else None, ids, target_dim, coords, group_values, group_name)


def _groups(responses: xr.DataArray, groups: Any) -> tuple[np.ndarray | None, str]:
    if groups is None:
        for name in GROUP_COORDS:
            if name in responses.coords and responses[name].dims == (STIMULUS,):
                return np.asarray(responses[name].values), name
        return None, ""
    if isinstance(groups, str):
        if groups not in responses.coords or responses[groups].dims != (STIMULUS,):
            valid = [k for k, c in responses.coords.items() if c.dims == (STIMULUS,)]
            raise ShapeMismatchError(
                f"groups={groups!r} is not a coordinate along 'stimulus' of responses; those are {valid}."
            )
        return np.asarray(responses[groups].values), groups
    arr = np.asarray(groups)
    if arr.shape != (responses.sizes[STIMULUS],):
        raise ShapeMismatchError(
            f"groups has shape {arr.shape}; need one run/session label per stimulus ({responses.sizes[STIMULUS]},)."
        )
    return arr, "groups"


def align(layers: list[Layer], responses: Responses) -> tuple[np.ndarray, np.ndarray]:
    """Return (feature row index, response row index) pairing the same stimuli, or raise.

    Stimuli are matched by id when both sides have ids (responses may list them in any
    order or a subset); without ids on one side the counts must agree and order is trusted.
    """
    feature_ids = layers[0].ids
    n_features, n_responses = layers[0].data.shape[0], responses.data.shape[0]
    if feature_ids is None or responses.ids is None:
        if n_features != n_responses:
            raise ShapeMismatchError(
                f"features have {n_features} stimuli and responses {n_responses}, and at least one side has "
                "no stimulus ids to match them by. Give both a 'stimulus' coordinate of ids."
            )
        return np.arange(n_features), np.arange(n_responses)
    position = {sid: i for i, sid in enumerate(feature_ids)}
    missing = [sid for sid in responses.ids if sid not in position]
    if missing:
        raise ShapeMismatchError(
            f"{len(missing)} of the responses' {n_responses} stimulus ids are not among the features' "
            f"(first: {missing[:5]}; features have e.g. {feature_ids[:3].tolist()}). Extract activations "
            "for the same stimulus set, or select the matching stimuli."
        )
    rows = np.array([position[sid] for sid in responses.ids])
    order = np.argsort(rows, kind="stable")
    return rows[order], order
