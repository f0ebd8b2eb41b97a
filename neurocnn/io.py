"""Save and load results as netCDF or zarr, never overwriting unless asked."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ._validation import check_option
from .exceptions import MissingFileError, OverwriteError, ShapeMismatchError

__all__ = ["save", "load", "check_writable", "clean_attrs", "read_mat", "load_nifti"]

_FORMATS = {".nc": "netcdf", ".nc4": "netcdf", ".netcdf": "netcdf", ".zarr": "zarr"}


def _format(path: Path) -> str:
    return _FORMATS[check_option("file extension", path.suffix.lower(), _FORMATS)]


def check_writable(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Raise :class:`OverwriteError` if ``path`` exists and ``overwrite`` is False."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OverwriteError(
            f"{path} already exists and was left untouched. Choose another path, delete it, or "
            "pass overwrite=True."
        )
    return path


def clean_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Return attrs made of str, int, float and lists of them (netCDF/zarr safe).

    None becomes ``""``, bools become ints, dicts become JSON strings, numpy scalars
    become Python numbers. The input is not modified.
    """
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if value is None:
            value = ""
        elif isinstance(value, (bool, np.bool_)):
            value = int(value)
        elif isinstance(value, dict):
            value = json.dumps(value, sort_keys=True, default=str)
        elif isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, (list, tuple, np.ndarray)):
            value = [v.item() if isinstance(v, np.generic) else v for v in np.asarray(value).tolist()]
            value = [int(v) if isinstance(v, bool) else v for v in value]
        elif not isinstance(value, (str, int, float)):
            value = str(value)
        out[key] = value
    return out


def _clean(obj: xr.DataArray | xr.Dataset) -> xr.Dataset:
    ds = obj.to_dataset(name=obj.name or "data", promote_attrs=True) if isinstance(obj, xr.DataArray) else obj.copy()
    ds.attrs = clean_attrs(ds.attrs)
    for var in ds.variables.values():
        var.attrs = clean_attrs(var.attrs)
    return ds


def save(obj: xr.DataArray | xr.Dataset, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Save a result as netCDF (``.nc``) or zarr (``.zarr``).

    The file is written to a temporary sibling first and moved into place, so an
    interrupted save never leaves a half-written file where a good one was.

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
        The result. Attrs are made netCDF-safe on a copy (see :func:`clean_attrs`).
    path : path
        Target file; the extension picks the format.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    OverwriteError
        If ``path`` exists and ``overwrite`` is False.
    UnknownNameError
        If the extension is neither netCDF nor zarr.
    """
    path = check_writable(path, overwrite=overwrite)
    fmt = _format(path)
    ds = _clean(obj)
    ds.attrs["neurocnn_object"] = "DataArray" if isinstance(obj, xr.DataArray) else "Dataset"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    target = tmp / path.name
    try:
        if fmt == "netcdf":
            ds.to_netcdf(target, engine="h5netcdf")
        else:
            ds.to_zarr(target, mode="w", consolidated=False, zarr_format=2)
        if path.exists():
            (shutil.rmtree if path.is_dir() else os.remove)(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load(path: str | os.PathLike, *, lazy: bool = False) -> xr.DataArray | xr.Dataset:
    """Load a result saved by :func:`save` (a DataArray comes back as a DataArray).

    Parameters
    ----------
    path : path
        A ``.nc`` or ``.zarr`` file.
    lazy : bool
        Keep the data on disk (dask-backed) instead of loading it into memory.

    Raises
    ------
    MissingFileError
        If ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path} does not exist.")
    if _format(path) == "netcdf":
        ds = xr.open_dataset(path, engine="h5netcdf")
    else:
        ds = xr.open_zarr(path, consolidated=False)
    if not lazy:
        ds = ds.load()
        ds.close()
    kind = ds.attrs.pop("neurocnn_object", "Dataset")
    if kind == "DataArray" and len(ds.data_vars) == 1:
        name = next(iter(ds.data_vars))
        da = ds[name]
        da.attrs = dict(ds.attrs)
        return da
    return ds


def read_mat(path: str | os.PathLike) -> dict[str, Any]:
    """Read a MATLAB ``.mat`` file into a dict of variables.

    Structs become objects with attribute access (``s.RDM``), singleton dimensions are
    squeezed (``scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)``).

    Parameters
    ----------
    path : str or PathLike
        The file.

    Returns
    -------
    dict
        Variable name -> value (MATLAB's ``__header__`` entries included).

    Raises
    ------
    MissingFileError
        The file does not exist.
    """
    import scipy.io

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{str(path)!r} does not exist.")
    return scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)


def load_nifti(image: Any, what: str = "image") -> Any:
    """A NIfTI path or a nibabel image -> the nibabel image.

    Parameters
    ----------
    image : str, PathLike or nibabel image
        What to load.
    what : str
        The argument's name, for error messages.

    Returns
    -------
    nibabel.spatialimages.SpatialImage

    Raises
    ------
    MissingFileError
        The file does not exist.
    ShapeMismatchError
        ``image`` is neither a path nor a nibabel image.
    """
    import nibabel as nib

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            raise MissingFileError(f"{what}: file {str(path)!r} does not exist.")
        return nib.load(path)
    if isinstance(image, nib.spatialimages.SpatialImage):
        return image
    raise ShapeMismatchError(
        f"{what} must be a NIfTI path or a nibabel image, got {type(image).__name__}."
    )
