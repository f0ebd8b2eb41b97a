"""Shared RDM containers and checks: condensed stacks, squares, attrs, alignment."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr

from .._validation import check_finite, default_ids
from ..exceptions import InvalidDataError, ShapeMismatchError

_STACK = "rdm"
_PROVENANCE_KEYS = ("model", "weights_sha256", "layer", "alias", "relu", "preprocessing")
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


_MIN_STIMULI = 3


def _check_n(n: int, what: str) -> int:
    """RDMs need at least 3 stimuli: with 2 there is one pair and nothing to correlate."""
    if n < _MIN_STIMULI:
        raise ShapeMismatchError(
            f"{what} has {n} stimulus/stimuli ({n * (n - 1) // 2} pair(s)); comparing RDMs needs at "
            f"least {_MIN_STIMULI} stimuli (a correlation of {max(n * (n - 1) // 2, 0)} value(s) is "
            "meaningless). Use more stimuli."
        )
    return n


def _check_diagonal(mats: np.ndarray, what: str) -> None:
    """A dissimilarity matrix has a zero diagonal; a similarity matrix (diagonal 1) is refused."""
    diag = np.diagonal(mats, axis1=-2, axis2=-1)
    n = mats.shape[-1]
    off = mats[..., ~np.eye(n, dtype=bool)]
    scale = max(float(np.abs(off).max(initial=0.0)), 1e-300)
    bad = np.abs(diag) > max(_SYMMETRY_RTOL * scale, 1e-12)
    if not bad.any():
        return
    k, i = (int(v) for v in np.argwhere(bad)[0]) if diag.ndim == 2 else (0, int(np.flatnonzero(bad)[0]))
    d = diag.reshape(-1, n)[k]
    where = f" (RDM {k})" if mats.ndim == 3 and mats.shape[0] > 1 else ""
    if np.allclose(d, d[0]) and d[0] > 0 and d[0] >= off.reshape(-1, n * (n - 1))[k].max() - 1e-12:
        raise InvalidDataError(
            f"{what}{where} looks like a similarity matrix, not an RDM: its diagonal is "
            f"{float(d[0]):.6g} everywhere and no off-diagonal entry exceeds it. RDMs hold "
            "dissimilarities with a zero diagonal: pass 1 - S for correlation similarities "
            "(or S.max() - S), then compare."
        )
    raise InvalidDataError(
        f"{what}{where} has a non-zero diagonal (entry ({i}, {i}) is {float(d[i]):.6g}); an RDM's "
        "diagonal (each stimulus vs itself) must be 0. If the values are dissimilarities, set "
        "the diagonal to 0 (np.fill_diagonal(D, 0)); if they are similarities, pass 1 - S."
    )


def _from_square(mats: np.ndarray, what: str, ids: Sequence[str] | None = None) -> np.ndarray:
    """(k, n, n) -> (k, P) after checking finiteness, symmetry, the diagonal and size."""
    n = mats.shape[-1]
    if mats.ndim < 2 or mats.shape[-2] != n:
        raise ShapeMismatchError(f"{what} must be square, got shape {mats.shape}.")
    _check_n(n, what)
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
    _check_diagonal(mats, what)
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
        if ids is not None and len(set(ids.tolist())) != len(ids):
            dup = sorted({i for i in ids.tolist() if (ids == i).sum() > 1})
            raise ShapeMismatchError(f"{what}: stimulus ids must be unique; repeated: {dup[:5]}.")
        mats = _float_array(da.values, what)
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
        n = _check_n(_n_from_pairs(vectors.shape[1], what), what)
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
        from .io import from_rsatoolbox

        return _stack_dataarray(from_rsatoolbox(x), what)
    arr = _float_array(x, what)
    if arr.ndim == 1:
        check_finite(what, arr)
        return _Stack(arr[None, :].copy(), _check_n(_n_from_pairs(arr.size, what), what), None, None)
    if arr.ndim == 2 and arr.shape[0] == arr.shape[1]:
        return _Stack(_from_square(arr[None], what), arr.shape[0], None, None)
    if arr.ndim == 2:
        check_finite(what, arr)
        return _Stack(arr.copy(), _check_n(_n_from_pairs(arr.shape[1], what), what), None, _STACK)
    if arr.ndim == 3:
        return _Stack(_from_square(arr, what), arr.shape[-1], None, _STACK)
    raise ShapeMismatchError(
        f"{what} has shape {arr.shape}; expected (n, n), (k, n, n), a condensed vector "
        "(n*(n-1)/2,) or a stack of them (k, n*(n-1)/2)."
    )


def _float_array(x: Any, what: str) -> np.ndarray:
    """``x`` as a float64 array, or a ShapeMismatchError naming what was given."""
    if np.iscomplexobj(x):
        raise ShapeMismatchError(f"{what} is complex; RDMs hold real dissimilarities.")
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ShapeMismatchError(
            f"{what} must be numeric RDMs (an array, DataArray or rsatoolbox RDMs), got "
            f"{type(x).__name__} that cannot be read as numbers ({err})."
        ) from None
    if arr.ndim == 0:
        raise ShapeMismatchError(f"{what} is a scalar; pass RDMs.")
    if arr.size == 0:
        raise ShapeMismatchError(f"{what} is empty; pass RDMs.")
    return arr


def _as_dataarray(x: Any, what: str) -> xr.DataArray:
    if isinstance(x, xr.DataArray):
        return x
    return _stack_to_dataarray(_as_stack(x, what))


def _stack_to_dataarray(st: _Stack) -> xr.DataArray:
    ids = st.ids if st.ids is not None else default_ids(st.n)
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


def _stack_layers(rdms: Mapping[str, xr.DataArray], dim: str = "layer") -> xr.DataArray:
    names = list(rdms)
    stacked = xr.concat([rdms[k] for k in names], dim=dim, coords="minimal", compat="override",
                        combine_attrs="drop_conflicts")
    stacked = stacked.assign_coords({dim: np.asarray(names).astype(str)})
    stacked.attrs = _clean_attrs({k: v for k, v in stacked.attrs.items() if k != "layer"})
    return stacked


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
    arr = _float_array(meg_rdms, "meg_rdms")
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
