"""RDM files (.mat, .npy, .npz) and rsatoolbox interop."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from .._validation import check_option, default_ids
from ..exceptions import MissingFileError, ShapeMismatchError, foreign_errors
from ..io import read_mat
from ._stack import (
    _STACK,
    _as_stack,
    _clean_attrs,
    _meg_stack,
    _n_from_pairs,
    _rdm_array,
    _Stack,
    _stack_to_dataarray,
    _to_square,
)


# -------------------------------------------------------------------------- loaders
def _is_struct(v: Any) -> bool:
    return hasattr(v, "_fieldnames")


def _numeric(v: Any) -> np.ndarray | None:
    if isinstance(v, (str, bytes)) or _is_struct(v):
        return None
    arr = np.asarray(v)
    return arr.astype(np.float64) if arr.dtype.kind in "fiub" and arr.size > 1 else None


def _looks_like_rdms(arr: np.ndarray) -> bool:
    """Square (n, n), (k, n, n)/(n, n, k), or condensed (P,)/(k, P) with P = n(n-1)/2."""
    if arr.ndim >= 2 and arr.shape[-1] == arr.shape[-2]:
        return True
    if arr.ndim == 3 and arr.shape[0] == arr.shape[1]:
        return True
    try:
        _n_from_pairs(arr.shape[-1], "x")
    except ShapeMismatchError:
        return False
    return arr.ndim in (1, 2)


def _as_square_stack(arr: np.ndarray) -> np.ndarray:
    """(n, n) / (k, n, n) / condensed (P,) / (k, P) -> (k, n, n)."""
    if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[0] != arr.shape[1]):
        vec = np.atleast_2d(arr)
        return _to_square(vec, _n_from_pairs(vec.shape[1], "condensed RDM vector"))
    return arr[None] if arr.ndim == 2 else arr


def _struct_field(structs: list[Any], key: str, field: str | None) -> tuple[str, list[Any]]:
    """The field holding RDMs: ``field``, else ``RDM``, else the one RDM-shaped field."""
    names = list(structs[0]._fieldnames)
    if field is not None:
        check_option(f"field of struct {key!r}", field, names)
        return field, [getattr(s, field) for s in structs]
    if "RDM" in names:
        return "RDM", [s.RDM for s in structs]
    cands = [n for n in names
             if all((a := _numeric(getattr(s, n))) is not None and _looks_like_rdms(a) for s in structs)]
    if len(cands) == 1:
        return cands[0], [getattr(s, cands[0]) for s in structs]
    raise ShapeMismatchError(
        f"struct {key!r} has no 'RDM' field and {len(cands)} RDM-shaped fields "
        f"{cands if cands else names}; choose one with variable='{key}.<field>'."
    )


def _object_rdms(key: str, value: Any, field: str | None) -> np.ndarray | None:
    """Struct (array) or cell array of RDMs -> (k, n, n); None if it holds no RDMs."""
    items = [value] if _is_struct(value) else list(np.asarray(value, dtype=object).ravel())
    if not items:
        return None
    if all(_is_struct(v) for v in items):
        _, values = _struct_field(items, key, field)
    else:
        values = items
    arrays = [_numeric(v) for v in values]
    if any(a is None or not _looks_like_rdms(a) for a in arrays):
        return None
    mats = [_as_square_stack(a) for a in arrays]  # type: ignore[arg-type]
    if len({m.shape[1:] for m in mats}) != 1:
        raise ShapeMismatchError(
            f"{key!r} holds RDMs of different sizes {sorted({m.shape[-1] for m in mats})}; load "
            "them one by one (variable=) or select common stimuli."
        )
    return np.concatenate(mats)


def _mat_arrays(m: dict[str, Any], field: str | None = None) -> dict[str, np.ndarray]:
    """Numeric arrays of a read_mat dict; structs and cell arrays of RDMs are stacked.

    A struct (array) contributes its ``RDM`` field, else its only RDM-shaped field
    (``field`` chooses one); a cell array of RDMs is stacked along a new first axis.
    """
    out: dict[str, np.ndarray] = {}
    for key, value in m.items():
        if key.startswith("__"):
            continue
        if _is_struct(value) or (isinstance(value, np.ndarray) and value.dtype == object):
            stacked = _object_rdms(key, value, field)
            if stacked is not None:
                out[key] = stacked
            continue
        arr = _numeric(value)
        if arr is not None:
            out[key] = arr
    return out


def _read_array(path: pathlib.Path, variable: str | None, what: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    if not path.exists():
        raise MissingFileError(f"{what} file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    field = None
    if variable is not None and "." in variable:
        variable, field = variable.split(".", 1)
    if suffix == ".npy":
        with foreign_errors(f"{what}: reading {path}", mode="read"):
            return np.load(path, allow_pickle=False), {}
    if suffix == ".npz":
        with foreign_errors(f"{what}: reading {path}", mode="read"), np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    elif suffix == ".mat":
        raw = read_mat(path)
        if variable is not None:
            check_option("variable", variable, [k for k in raw if not k.startswith("__")])
            raw = {variable: raw[variable]}
        arrays = _mat_arrays(raw, field)
    else:
        raise ShapeMismatchError(f"{what}: unsupported file type {suffix!r}; use .mat, .npy or .npz.")
    if variable is not None:
        if variable not in arrays:
            raise ShapeMismatchError(
                f"{what}: variable {variable!r} of {str(path)!r} holds no numeric array or RDMs."
            )
        return arrays[variable], arrays
    big = {k: v for k, v in arrays.items() if v.ndim >= 2}
    if not big:  # a condensed 1 x P vector is squeezed to (P,) by read_mat
        big = {k: v for k, v in arrays.items() if v.ndim == 1 and _looks_like_rdms(v) and v.size >= 3}
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
        File with an ``(n, n)`` or ``(k, n, n)`` array, or condensed upper-triangle
        vectors ``(P,)``/``1 x P``/``(k, P)`` (``squareform`` order). ``.mat`` files may be
        v4-v7 or v7.3 (HDF5); a struct (array) with an ``RDM`` field (as RSA-toolbox
        MATLAB files have), a struct whose only RDM-shaped field is taken, and a cell
        array of RDMs also work.
    variable : str, optional
        Variable name in a .mat/.npz file holding several arrays; ``"name.field"``
        picks a field of a struct. A 3-D array ``n x n x k`` (MATLAB's stacking) is read
        as ``k`` RDMs.
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
    if arr.ndim in (1, 2) and _looks_like_rdms(arr):
        arr = _as_square_stack(arr)
    if arr.ndim == 3 and arr.shape[0] == arr.shape[1] != arr.shape[2]:
        arr = np.moveaxis(arr, -1, 0)  # MATLAB's n x n x k stacks
    if arr.ndim != 3 or arr.shape[-1] != arr.shape[-2]:
        raise ShapeMismatchError(
            f"load_rdms: {str(path)!r} holds an array of shape {arr.shape}; expected (n, n) "
            "or (k, n, n)."
        )
    n = arr.shape[-1]
    ids = default_ids(n) if stimulus_ids is None else np.asarray(stimulus_ids).astype(str)
    if len(ids) != n:
        raise ShapeMismatchError(f"load_rdms: {len(ids)} stimulus ids for {n} stimuli.")
    return _rdm_array(arr.astype(np.float64), ids, {}, {"source": str(path)})


def load_meg_rdms(
    path: str | pathlib.Path,
    *,
    times: Sequence[float] | np.ndarray | None = None,
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
        all_arrays = _mat_arrays(read_mat(path)) if path.suffix.lower() == ".mat" else dict(np.load(path))
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
    ids = default_ids(n) if stimulus_ids is None else np.asarray(stimulus_ids).astype(str)
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
    pattern = {"stimulus": list(st.ids if st.ids is not None else default_ids(st.n))}
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
