"""MATLAB v7.3 (HDF5) ``.mat`` files read with h5py, laid out as ``scipy.io.loadmat`` does (private).

v7.3 files store every array transposed (HDF5 is row-major, MATLAB column-major),
char arrays as uint16 code points, cell arrays as object references into ``#refs#``,
structs as groups (struct arrays: one reference per element in each field). The
reader undoes all of that, so callers see the same values as for a v7 file read with
``scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__: list[str] = []

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_INTS = {"int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"}


def is_hdf5(path: Path) -> bool:
    """Whether ``path`` is an HDF5 file (MATLAB v7.3 puts the signature at byte 512)."""
    with open(path, "rb") as fh:
        head = fh.read(520)
    return head[:8] == _HDF5_SIGNATURE or head[512:520] == _HDF5_SIGNATURE


def _matlab_class(obj: Any) -> str:
    value = obj.attrs.get("MATLAB_class", b"")
    return value.decode() if isinstance(value, bytes) else str(value)


def _squeeze(arr: np.ndarray) -> Any:
    arr = np.squeeze(arr)
    if arr.ndim == 0:
        return arr[()] if arr.dtype != object else arr.item()
    return arr


def _struct(fields: dict[str, Any]) -> Any:
    from scipy.io.matlab import mat_struct

    s = mat_struct()
    s._fieldnames = list(fields)
    for key, value in fields.items():
        setattr(s, key, value)
    return s


def _read_dataset(ds: Any, f: Any) -> Any:
    import h5py

    cls = _matlab_class(ds)
    if ds.attrs.get("MATLAB_empty", 0):
        if cls == "char":
            return ""
        if cls == "cell":
            return np.empty((0,), dtype=object)
        return np.empty((0,), dtype=np.float64)
    data = ds[()]
    if ds.dtype == h5py.ref_dtype or (ds.dtype.kind == "O"):
        refs = np.asarray(data).T
        out = np.empty(refs.shape, dtype=object)
        for idx in np.ndindex(refs.shape):
            out[idx] = _read(f[refs[idx]], f)
        return _squeeze(out)
    arr = np.asarray(data)
    if arr.dtype.names and {"real", "imag"} <= set(arr.dtype.names):
        arr = arr["real"] + 1j * arr["imag"]
    arr = arr.T
    if cls == "char":
        codes = np.atleast_2d(arr).astype(np.uint32)
        rows = ["".join(chr(c) for c in row).rstrip("\x00") for row in codes]
        return rows[0] if len(rows) == 1 else np.asarray(rows)
    if cls == "logical":
        arr = arr.astype(bool)
    elif cls in ("double", "single") or cls in _INTS:
        arr = arr.astype(np.dtype("float32" if cls == "single" else cls if cls in _INTS else "float64"))
    return _squeeze(arr)


def _read_group(group: Any, f: Any) -> Any:
    import h5py

    names = [k for k in group.keys() if not k.startswith("#")]
    field_order = group.attrs.get("MATLAB_fields")
    if field_order is not None:
        ordered = ["".join(ch.decode() if isinstance(ch, bytes) else str(ch) for ch in np.ravel(name))
                   for name in field_order]
        names = [n for n in ordered if n in group] + [n for n in names if n not in ordered]
    element_refs = {
        n: group[n] for n in names
        if isinstance(group[n], h5py.Dataset) and group[n].dtype == h5py.ref_dtype
        and _matlab_class(group[n]) not in ("cell",)
    }
    if element_refs and len(element_refs) == len(names):  # a struct array
        shape = np.asarray(next(iter(element_refs.values()))[()]).T.shape
        out = np.empty(shape, dtype=object)
        refs = {n: np.asarray(ds[()]).T for n, ds in element_refs.items()}
        for idx in np.ndindex(shape):
            out[idx] = _struct({n: _read(f[r[idx]], f) for n, r in refs.items()})
        return _squeeze(out)
    return _struct({n: _read(group[n], f) for n in names})


def _read(obj: Any, f: Any) -> Any:
    import h5py

    if isinstance(obj, h5py.Group):
        return _read_group(obj, f)
    return _read_dataset(obj, f)


def read_mat73(path: Path) -> dict[str, Any]:
    """Read every variable of a v7.3 ``.mat`` file (see the module docstring)."""
    import h5py

    with h5py.File(path, "r") as f:
        return {name: _read(f[name], f) for name in f.keys() if not name.startswith("#")}
