"""Data manifests -> verified local files.

Every data and weight file neurocnn uses is described in a JSON manifest in
``data_manifests/`` (name, public URL, sha256, license, citation). :func:`fetch`
turns a manifest entry into a local path:

1. the directory in the environment variable ``NEUROCNN_MIRROR`` (files at their
   manifest path relative to it, e.g. ``data/92images/92_brainRDMs.mat``);
2. a file shipped inside an installed Python package (the embedded weights);
3. the user cache (``NEUROCNN_CACHE``, default: the OS cache dir ``neurocnn``);
4. a download with pooch into the user cache.

The sha256 (or, for torchvision weights, the hash prefix in the file name, as
``torch.hub`` checks it) is always verified; a file that does not match raises
:class:`~neurocnn.exceptions.IntegrityError` and is never used.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import importlib.util
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .._validation import check_option
from ..exceptions import IntegrityError, MissingFileError

__all__ = [
    "FileEntry",
    "list_datasets",
    "list_files",
    "get_entry",
    "fetch",
    "fetch_dataset",
    "cache_dir",
    "sha256sum",
]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class FileEntry:
    """One file of a manifest.

    Attributes
    ----------
    dataset : str
        Manifest (data set) name, e.g. ``"92images"``.
    name : str
        File name.
    path : str
        Path relative to the mirror and to the cache, e.g. ``data/92images/92_brainRDMs.mat``.
    url : str
        Public URL of the file.
    sha256 : str
        Full sha256 hex digest, or ``""`` when only ``sha256_prefix`` is known.
    sha256_prefix : str
        Leading hex digits of the sha256 (torchvision weight files carry them in their name).
    license : str
        License of the file.
    citation : str
        What to cite when using the file.
    package : str
        ``"module:relative/path"`` of a copy shipped inside a Python package, or ``""``.
    """

    dataset: str
    name: str
    path: str
    url: str
    sha256: str
    sha256_prefix: str
    license: str
    citation: str
    package: str = ""


@functools.lru_cache(maxsize=None)
def _manifests() -> dict[str, dict[str, FileEntry]]:
    root = importlib.resources.files("neurocnn.data_manifests")
    out: dict[str, dict[str, FileEntry]] = {}
    for item in sorted(root.iterdir(), key=lambda p: p.name):
        if not item.name.endswith(".json"):
            continue
        manifest = json.loads(item.read_text())
        entries = {}
        for f in manifest["files"]:
            entry = FileEntry(
                dataset=manifest["name"],
                name=f["name"],
                path=f["path"],
                url=f["url"],
                sha256=f.get("sha256", ""),
                sha256_prefix=f.get("sha256_prefix", f.get("sha256", "")[:8]),
                license=f.get("license", manifest["license"]),
                citation=f.get("citation", manifest["citation"]),
                package=f.get("package", ""),
            )
            entries[entry.path] = entry
        out[manifest["name"]] = entries
    return out


def list_datasets() -> list[str]:
    """Return the names of all manifests (data sets and weight families)."""
    return list(_manifests())


def list_files(dataset: str) -> list[FileEntry]:
    """Return all file entries of one manifest.

    Parameters
    ----------
    dataset : str
        Manifest name, one of :func:`list_datasets`.

    Raises
    ------
    UnknownNameError
        If the manifest does not exist.
    """
    check_option("dataset", dataset, _manifests())
    return list(_manifests()[dataset].values())


def get_entry(key: str) -> FileEntry:
    """Return the manifest entry for ``key``.

    Parameters
    ----------
    key : str
        The file's path relative to the mirror (``data/92images/92_brainRDMs.mat``) or,
        when unique, its file name (``alexnet-owt-7be5be79.pth``).

    Raises
    ------
    UnknownNameError
        If no manifest describes such a file.
    """
    by_path = {p: e for entries in _manifests().values() for p, e in entries.items()}
    if key in by_path:
        return by_path[key]
    by_name: dict[str, list[FileEntry]] = {}
    for e in by_path.values():
        by_name.setdefault(e.name, []).append(e)
    if len(by_name.get(key, [])) == 1:
        return by_name[key][0]
    check_option("data file", key, by_path)
    raise AssertionError("unreachable")  # pragma: no cover


def cache_dir() -> Path:
    """Return the user cache directory (``$NEUROCNN_CACHE`` or the OS cache dir)."""
    env = os.environ.get("NEUROCNN_CACHE")
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("neurocnn"))


def sha256sum(path: str | os.PathLike) -> str:
    """Return the sha256 hex digest of a file's content.

    Cached per process on the file's identity and change times (device, inode, size,
    mtime, ctime), and only for files last changed more than
    ``_RACY_SECONDS`` before they were hashed (git's "racy" rule): any later write,
    replacement, or ``os.utime`` restoring the old mtime sets the ctime to a newer
    value, so an edited or corrupted file is always hashed again, even within one
    timestamp tick.
    """
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _HASH_LOCK:
        cached = _HASHES.get(key)
    if cached is not None:
        return cached
    started = time.time_ns()
    digest = _sha256_file(key[0])
    if max(st.st_mtime_ns, st.st_ctime_ns) < started - int(_RACY_SECONDS * 1e9):
        with _HASH_LOCK:
            if len(_HASHES) > 8192:
                _HASHES.clear()
            _HASHES[key] = digest
    return digest


_RACY_SECONDS = 2.0
_HASHES: dict[tuple, str] = {}
_HASH_LOCK = threading.Lock()


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify(entry: FileEntry, path: Path) -> Path:
    found = sha256sum(path)
    ok = found == entry.sha256 if entry.sha256 else found.startswith(entry.sha256_prefix)
    if not ok:
        expected = entry.sha256 or f"{entry.sha256_prefix}..."
        raise IntegrityError(
            f"{path} does not match its manifest entry {entry.path!r}: expected sha256 "
            f"{expected}, found {found}. The file is corrupt or a different version; it was "
            f"not used. Delete it and fetch it again from {entry.url}."
        )
    return path


def _package_copy(entry: FileEntry) -> Path | None:
    if not entry.package:
        return None
    module, rel = entry.package.split(":", 1)
    if importlib.util.find_spec(module) is None:
        return None
    candidate = Path(str(importlib.resources.files(module).joinpath(rel)))
    return candidate if candidate.is_file() else None


def _candidates(entry: FileEntry) -> list[Path]:
    found = []
    mirror = os.environ.get("NEUROCNN_MIRROR")
    if mirror:
        found.append(Path(mirror).expanduser() / entry.path)
    package = _package_copy(entry)
    if package is not None:
        found.append(package)
    found.append(cache_dir() / entry.path)
    return found


def fetch(key: str, *, download: bool = True) -> Path:
    """Return a verified local path for a manifest file, downloading it if needed.

    Parameters
    ----------
    key : str
        Path relative to the mirror (``data/92images/92_brainRDMs.mat``) or unique file name.
    download : bool
        If False, never touch the network; a missing file raises.

    Returns
    -------
    pathlib.Path
        A local file whose sha256 matches the manifest.

    Raises
    ------
    UnknownNameError
        If no manifest describes ``key``.
    IntegrityError
        If a local copy exists but its hash does not match.
    MissingFileError
        If the file is nowhere local and cannot be downloaded.

    Examples
    --------
    >>> path = fetch("data/92images/92_brainRDMs.mat")  # doctest: +SKIP
    """
    entry = get_entry(key)
    candidates = _candidates(entry)
    for path in candidates:
        if path.is_file():
            logger.debug("using %s for %s", path, entry.path)
            return _verify(entry, path)
    target = candidates[-1]
    if download:
        try:
            _download(entry, target)
        except Exception as err:  # noqa: BLE001 - any download failure gets one clear message
            logger.debug("download of %s failed: %r", entry.url, err)
        else:
            return _verify(entry, target)
    where = " or ".join(str(p) for p in candidates)
    raise MissingFileError(
        f"{entry.name} ({entry.dataset}) is not available locally and could not be "
        f"downloaded from {entry.url}. Put the file at {where} (or set NEUROCNN_MIRROR to a "
        f"directory holding {entry.path})."
    )


def _download(entry: FileEntry, target: Path) -> None:
    import pooch

    known = f"sha256:{entry.sha256}" if entry.sha256 else None
    target.parent.mkdir(parents=True, exist_ok=True)
    pooch.retrieve(
        entry.url, known_hash=known, fname=target.name, path=target.parent, progressbar=False
    )


def fetch_dataset(dataset: str, *, download: bool = True) -> Path:
    """Fetch and verify every file of a data set; return its root directory.

    Parameters
    ----------
    dataset : str
        Manifest name, e.g. ``"floc"`` or ``"haxby2001"``.
    download : bool
        If False, never touch the network.

    Returns
    -------
    pathlib.Path
        The directory ``<root>/data/<dataset>`` that holds the verified files.

    Raises
    ------
    UnknownNameError, IntegrityError, MissingFileError
        As :func:`fetch`.
    """
    entries = list_files(dataset)
    paths = [fetch(e.path, download=download) for e in entries]
    root = paths[0]
    for _ in Path(entries[0].path).parts[2:]:  # climb back to data/<dataset>
        root = root.parent
    return root
