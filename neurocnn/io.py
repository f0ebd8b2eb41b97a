"""Save and load results as netCDF or zarr, never overwriting unless asked."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ._validation import check_option
from .exceptions import (
    MissingFileError,
    NotWritableError,
    OverwriteError,
    ShapeMismatchError,
    foreign_errors,
)

__all__ = [
    "save", "load", "check_writable", "clean_attrs", "read_mat", "load_nifti", "OWNER_MARKER",
    "mark_owned", "is_owned", "output_format", "check_location", "make_output_dir", "remove_owned", "atomic_output", "write_text",
]

_FORMATS = {".nc": "netcdf", ".nc4": "netcdf", ".netcdf": "netcdf", ".zarr": "zarr"}


def _format(path: Path) -> str:
    return _FORMATS[check_option("file extension", path.suffix.lower(), _FORMATS)]


def output_format(path: str | os.PathLike) -> str:
    """``"netcdf"`` or ``"zarr"`` from a result path's extension (see :func:`save`).

    Raises
    ------
    UnknownNameError
        The extension is neither ``.nc``/``.nc4``/``.netcdf`` nor ``.zarr``.
    """
    return _format(Path(path))


#: Name of the ownership marker neurocnn keeps in every folder it writes into.
OWNER_MARKER = ".neurocnn-owned.json"
_TRASH = ".neurocnn-trash-"


def _marker_path(folder: Path) -> Path:
    return folder / OWNER_MARKER


def _read_marker(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads(_marker_path(folder).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("writer") == "neurocnn" else {}


def _write_marker(folder: Path, data: dict[str, Any]) -> None:
    data = {**data, "writer": "neurocnn"}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".neurocnn-marker-")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, sort_keys=True, indent=1)
    os.replace(tmp, _marker_path(folder))


class _Lock:
    """An advisory lock on a folder's marker (POSIX ``flock``; a no-op elsewhere)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".neurocnn-owned.lock"
        self.fh: Any = None

    def __enter__(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        self.fh = open(self.path, "a")
        fcntl.flock(self.fh, fcntl.LOCK_EX)

    def __exit__(self, *exc: Any) -> None:
        if self.fh is not None:
            self.fh.close()


def _file_sha256(path: Path) -> str:
    from .datasets import sha256sum

    return sha256sum(path)


def _is_zarr(path: Path) -> bool:
    return any((path / name).is_file() for name in (".zgroup", ".zarray", "zarr.json"))


def _zarr_owned(path: Path) -> bool:
    """A zarr store is ours if its root attrs carry neurocnn's marker (or an extraction fingerprint)."""
    try:
        import zarr

        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception:  # noqa: BLE001 - unreadable is "not ours"
        return False
    return isinstance(attrs.get("neurocnn_owned"), dict) or isinstance(attrs.get("neurocnn_extraction"), dict)


def mark_owned(path: str | os.PathLike, *, kind: str = "output") -> Path:
    """Record that neurocnn wrote ``path`` (a file or a folder), so it may later be replaced.

    A folder gets the marker file :data:`OWNER_MARKER` inside it (a zarr store: a
    ``neurocnn_owned`` root attribute instead, as zarr reads every file of a store); a
    file is listed, with its sha256, in the marker of its parent folder. Only marked outputs are ever
    replaced by ``overwrite=True`` (a file edited since neurocnn wrote it is not).

    Parameters
    ----------
    path : path
        An existing file or folder that neurocnn has just written.
    kind : str
        What it is (``"netcdf"``, ``"zarr"``, ``"extraction store"``, ``"figure"``, ...).

    Returns
    -------
    pathlib.Path
    """
    from ._version import version

    path = Path(path)
    if path.is_dir() and _is_zarr(path):
        import zarr

        with foreign_errors(f"marking {path}"):
            zarr.open_group(str(path), mode="r+").attrs["neurocnn_owned"] = {"kind": kind, "neurocnn_version": version()}
        return path
    if path.is_dir():
        with _Lock(path):
            data = _read_marker(path)
            data.update(owned_folder=kind, neurocnn_version=version())
            data.setdefault("files", {})
            _write_marker(path, data)
        return path
    with _Lock(path.parent):
        data = _read_marker(path.parent)
        files = data.setdefault("files", {})
        files[path.name] = {"kind": kind, "sha256": _file_sha256(path)}
        _write_marker(path.parent, data)
    return path


def is_owned(path: str | os.PathLike) -> bool:
    """Say whether ``path`` is an output neurocnn wrote (and, for a file, left unchanged).

    A folder is ours if neurocnn made it (marker :data:`OWNER_MARKER`) and everything in
    it is a neurocnn output (a file of yours put there makes the folder yours too); a
    zarr store if its root attrs carry the marker; a file if its parent's marker lists it
    with the sha256 it has now. Missing paths are not owned.
    """
    path = Path(path)
    if path.is_dir() and _is_zarr(path):
        return _zarr_owned(path)
    if path.is_dir():
        return _folder_owned(path)
    if not path.is_file():
        return False
    entry = _read_marker(path.parent).get("files", {}).get(path.name)
    return isinstance(entry, dict) and entry.get("sha256") == _file_sha256(path)


def _folder_owned(path: Path) -> bool:
    """A folder neurocnn made that holds nothing but neurocnn outputs (so it may be replaced)."""
    data = _read_marker(path)
    if not data.get("owned_folder"):
        return False
    files = data.get("files", {})
    for entry in path.iterdir():
        if entry.name.startswith((".neurocnn-", ".tmp-")):
            continue
        if entry.is_dir() and not entry.is_symlink():
            if not is_owned(entry):
                return False
        elif not (isinstance(files.get(entry.name), dict) and files[entry.name].get("sha256") == _file_sha256(entry)):
            return False
    return True


def _forget(path: Path) -> None:
    if not path.parent.is_dir():
        return
    with _Lock(path.parent):
        data = _read_marker(path.parent)
        if path.name in data.get("files", {}):
            del data["files"][path.name]
            _write_marker(path.parent, data)


def _not_ours(path: Path) -> OverwriteError:
    what = "folder" if path.is_dir() else "file"
    why = (
        "it has no neurocnn ownership marker (it was not written by neurocnn, or was changed "
        "since)"
    )
    return OverwriteError(
        f"{path} exists and overwrite=True was given, but the {what} was left untouched: {why}. "
        f"neurocnn only ever replaces its own outputs. Choose another path, or move/delete the "
        f"{what} yourself."
    )


def check_writable(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Return ``path`` if neurocnn may write it; raise :class:`OverwriteError` otherwise.

    A missing path may always be written. An existing one only with ``overwrite=True``
    *and* if it is an output neurocnn wrote (see :func:`is_owned`): a user's file or
    folder is never replaced. Also checked: the nearest existing parent is a writable
    folder.

    Raises
    ------
    OverwriteError
        ``path`` exists and ``overwrite`` is False, or it is not a neurocnn output.
    NotWritableError
        The parent is a file or not writable.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OverwriteError(
                f"{path} already exists and was left untouched. Choose another path, delete it, or "
                "pass overwrite=True (which replaces only outputs neurocnn wrote)."
            )
        if path.is_symlink() or not is_owned(path):
            raise _not_ours(path)
    check_location(path)
    return path


def check_location(path: str | os.PathLike) -> Path:
    """Raise :class:`NotWritableError` unless ``path`` could be created: its nearest
    existing ancestor must be a writable folder. Nothing is written.
    """
    path = Path(path)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise NotWritableError(f"Cannot write {path}: {parent} is a file, not a folder. Choose another path.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise NotWritableError(
            f"Cannot write {path}: the folder {parent} is not writable. Choose a folder you can "
            "write to or fix its permissions."
        )
    return path


def make_output_dir(path: str | os.PathLike, *, kind: str = "output folder") -> Path:
    """Create the output folder ``path`` (and parents) and mark it as neurocnn's if it is new.

    An existing folder is kept as it is (and not marked: files already in it stay the
    user's); writing into it goes through :func:`check_writable` per file.

    Raises
    ------
    NotWritableError
        ``path`` is a file, or cannot be created.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotWritableError(f"Output folder {path} is a file. Choose another --out / out= path.")
    if path.is_dir():
        if not any(path.iterdir()):
            mark_owned(path, kind=kind)
        return path
    check_writable(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NotWritableError(
            f"Cannot create the output folder {path} ({err.strerror or err}). Choose a folder "
            "you can write to (--out / out=)."
        ) from None
    mark_owned(path, kind=kind)
    return path


def remove_owned(path: str | os.PathLike) -> None:
    """Delete an output neurocnn wrote; refuse (:class:`OverwriteError`) anything else.

    A folder is first renamed to a hidden sibling and then deleted, so an interruption
    never leaves a half-deleted folder under its name.
    """
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_symlink() or not is_owned(path):
        raise _not_ours(path)
    if path.is_dir():
        trash = Path(tempfile.mkdtemp(dir=path.parent, prefix=_TRASH))
        os.replace(path, trash / path.name)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        path.unlink()
        _forget(path)


def _tmp_sibling(path: Path) -> Path:
    """A hidden, unused sibling name that keeps ``path``'s extensions (``.nii.gz``, ``.png``)."""
    import uuid

    return path.parent / f".tmp-{uuid.uuid4().hex[:12]}-{path.name}"


def _install(tmp: Path, path: Path, kind: str) -> None:
    """Move the finished ``tmp`` to ``path`` (replacing an owned output) and mark it."""
    if tmp.is_dir():
        mark_owned(tmp, kind=kind)
    if path.is_dir() and not path.is_symlink():
        trash = Path(tempfile.mkdtemp(dir=path.parent, prefix=_TRASH))
        os.replace(path, trash / path.name)
        os.replace(tmp, path)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        if path.exists() and tmp.is_dir():
            path.unlink()
        os.replace(tmp, path)
    if path.is_file():
        mark_owned(path, kind=kind)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, overwrite: bool = False, kind: str = "output") -> Iterator[Path]:
    """Write an output under a temporary name and move it into place when done.

    Yields a hidden sibling path (same extensions) to write to. When the block ends
    normally, the result replaces ``path`` (only if allowed, see :func:`check_writable`)
    and is marked as neurocnn's; when it raises, or the process dies, nothing appears
    under ``path`` and an existing output there is unchanged.

    Parameters
    ----------
    path : path
        The final file or folder.
    overwrite : bool
        Replace an existing neurocnn output.
    kind : str
        Recorded in the ownership marker.

    Raises
    ------
    OverwriteError, NotWritableError
        As :func:`check_writable` (checked before and again after writing).

    Examples
    --------
    >>> with atomic_output("fig.png", overwrite=True) as tmp:  # doctest: +SKIP
    ...     fig.savefig(tmp, format="png")
    """
    path = check_writable(path, overwrite=overwrite)
    with foreign_errors(f"writing {path}"):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        with foreign_errors(f"writing {path}"):
            yield tmp
            check_writable(path, overwrite=overwrite)
            _install(tmp, path, kind)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str, *, overwrite: bool = False, kind: str = "text") -> Path:
    """Write a text file atomically (see :func:`atomic_output`)."""
    with atomic_output(path, overwrite=overwrite, kind=kind) as tmp:
        tmp.write_text(text)
    return Path(path)


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
        Replace an existing file that neurocnn wrote.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    OverwriteError
        If ``path`` exists and ``overwrite`` is False, or it exists but is not an output
        neurocnn wrote (a user's file or folder is never replaced).
    UnknownNameError
        If the extension is neither netCDF nor zarr.
    """
    path = Path(path)
    fmt = _format(path)
    check_writable(path, overwrite=overwrite)
    ds = _clean(obj)
    ds.attrs["neurocnn_object"] = "DataArray" if isinstance(obj, xr.DataArray) else "Dataset"
    with atomic_output(path, overwrite=overwrite, kind=fmt) as tmp:
        if fmt == "netcdf":
            ds.to_netcdf(tmp, engine="h5netcdf")
        else:
            ds.to_zarr(tmp, mode="w", consolidated=False, zarr_format=2)
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
    fmt = _format(path)
    with foreign_errors(f"reading {path}", mode="read"):
        if fmt == "netcdf":
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
    """Read a MATLAB ``.mat`` file (v4 to v7 with scipy, v7.3/HDF5 with h5py) into a dict.

    Both layouts come back alike: structs become objects with attribute access
    (``s.RDM``; struct arrays become object arrays of them), cell arrays become object
    arrays, char arrays become ``str``, singleton dimensions are squeezed. Arrays keep
    MATLAB's axis order (v7.3 files store arrays transposed; they are transposed back),
    so a MATLAB ``92 x 92 x 4`` array is ``(92, 92, 4)`` here in both formats.

    Parameters
    ----------
    path : str or PathLike
        The file.

    Returns
    -------
    dict
        Variable name -> value (v4-v7: MATLAB's ``__header__`` entries included).

    Raises
    ------
    MissingFileError
        The file does not exist.
    UnreadableFileError
        The file is not a readable MATLAB file (corrupt, truncated, another format).
    """
    import scipy.io

    from ._matlab import is_hdf5, read_mat73

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{str(path)!r} does not exist.")
    with foreign_errors(f"reading MATLAB file {path}", mode="read"):
        if is_hdf5(path):
            return read_mat73(path)
        try:
            return scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
        except NotImplementedError:  # scipy's words for v7.3 without an HDF5 signature
            return read_mat73(path)


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
        with foreign_errors(f"{what}: reading NIfTI file {path}", mode="read"):
            return nib.load(path)
    if isinstance(image, nib.spatialimages.SpatialImage):
        return image
    raise ShapeMismatchError(
        f"{what} must be a NIfTI path or a nibabel image, got {type(image).__name__}."
    )
