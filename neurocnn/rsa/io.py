"""RDM files (.mat, .npy, .npz) and rsatoolbox interop."""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from .._validation import check_option, default_ids
from ..exceptions import MissingFileError, ShapeMismatchError
from ..io import read_mat
from ._stack import (
    _STACK,
    _as_stack,
    _clean_attrs,
    _meg_stack,
    _rdm_array,
    _square,
    _Stack,
    _stack_to_dataarray,
)


# -------------------------------------------------------------------------- loaders
def _mat_arrays(m: dict[str, Any]) -> dict[str, np.ndarray]:
    """Numeric arrays of a loadmat dict; struct arrays with an RDM field are stacked."""
    out: dict[str, np.ndarray] = {}
    for key, value in m.items():
        if key.startswith("__"):
            continue
        arr = np.asarray(value)
        if arr.dtype == object:
            flat = [v for v in arr.ravel() if hasattr(v, "RDM")]
            if flat and len(flat) == arr.size:
                out[key] = np.stack([_square(v.RDM) for v in flat])
        elif arr.dtype.kind in "fiu":
            out[key] = arr.astype(np.float64)
    return out


def _read_array(path: pathlib.Path, variable: str | None, what: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    if not path.exists():
        raise MissingFileError(f"{what} file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False), {}
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    elif suffix == ".mat":
        arrays = _mat_arrays(read_mat(path))
    else:
        raise ShapeMismatchError(f"{what}: unsupported file type {suffix!r}; use .mat, .npy or .npz.")
    if variable is not None:
        check_option("variable", variable, list(arrays))
        return arrays[variable], arrays
    big = {k: v for k, v in arrays.items() if v.ndim >= 2}
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
        File with an ``(n, n)`` or ``(k, n, n)`` array (a .mat struct array with an
        ``RDM`` field, as rsatoolbox/RSA-toolbox MATLAB files have, also works).
    variable : str, optional
        Variable name in a .mat/.npz file holding several arrays.
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
    if arr.ndim == 2:
        arr = arr[None]
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
