"""Manifests and verified fetching (offline: mirror, package, cache)."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from neurocnn import datasets
from neurocnn.exceptions import IntegrityError, MissingFileError, UnknownNameError


def test_every_manifest_entry_has_provenance():
    for name in datasets.list_datasets():
        for entry in datasets.list_files(name):
            assert entry.url.startswith("https://")
            assert entry.license and entry.citation and entry.path
            assert len(entry.sha256) == 64 or len(entry.sha256_prefix) >= 8


def test_manifests_cover_the_shared_data(mirror):
    listed = {e.path for d in datasets.list_datasets() for e in datasets.list_files(d)}
    on_disk = {
        str(p.relative_to(mirror))
        for p in (mirror / "data").rglob("*")
        if p.is_file() and p.name not in ("MANIFEST.md", "SHA256SUMS", "LICENSE-rsatoolbox", "README-fLoc.md")
    }
    assert on_disk <= listed


def test_fetch_from_mirror_is_verified(mirror):
    path = datasets.fetch("data/92images/92_brainRDMs.mat")
    assert path == mirror / "data/92images/92_brainRDMs.mat"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == datasets.get_entry(str(path.relative_to(mirror))).sha256


def test_fetch_by_file_name_and_embedded_weights():
    path = datasets.fetch("efficientnet-lite0-57934424.pth")
    assert path.name == "efficientnet-lite0-57934424.pth" and path.stat().st_size > 10_000_000


def test_corrupt_mirror_file_is_refused(tmp_path, monkeypatch, mirror):
    target = tmp_path / "data/92images/92_modelRDMs.mat"
    target.parent.mkdir(parents=True)
    data = bytearray((mirror / "data/92images/92_modelRDMs.mat").read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    monkeypatch.setenv("NEUROCNN_MIRROR", str(tmp_path))
    with pytest.raises(IntegrityError, match="expected sha256 e1d2b58b"):
        datasets.fetch("data/92images/92_modelRDMs.mat")


def test_missing_file_without_network_names_the_places(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROCNN_MIRROR", str(tmp_path / "empty"))
    with pytest.raises(MissingFileError, match="could not be downloaded") as err:
        datasets.fetch("data/92images/92_brainRDMs.mat")
    assert "data/92images/92_brainRDMs.mat" in str(err.value)
    with pytest.raises(MissingFileError):
        datasets.fetch("data/92images/92_brainRDMs.mat", download=False)


def test_cache_copy_is_used_when_no_mirror(tmp_path, monkeypatch, mirror):
    cache = tmp_path / "cache"
    (cache / "data/92images").mkdir(parents=True)
    shutil.copy(mirror / "data/92images/92_brainRDMs.mat", cache / "data/92images/92_brainRDMs.mat")
    monkeypatch.delenv("NEUROCNN_MIRROR")
    monkeypatch.setenv("NEUROCNN_CACHE", str(cache))
    assert datasets.fetch("data/92images/92_brainRDMs.mat") == cache / "data/92images/92_brainRDMs.mat"


def test_unknown_file_suggests_closest():
    with pytest.raises(UnknownNameError, match="92_brainRDMs"):
        datasets.fetch("data/92images/92_brainRDM.mat")


def test_fetch_dataset_returns_root(mirror):
    assert datasets.fetch_dataset("haxby2001") == mirror / "data/haxby2001"
