"""Data safety of neurocnn.io: ownership markers, overwrite, atomic writes, fault injection, .mat files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import xarray as xr

from neurocnn import io
from neurocnn.exceptions import (
    MissingFileError,
    NeurocnnError,
    NotWritableError,
    OverwriteError,
    UnreadableFileError,
    foreign_errors,
)

h5py = pytest.importorskip("h5py")


def _result(value: float = 1.0) -> xr.DataArray:
    return xr.DataArray(np.full((3, 2), value), dims=("stimulus", "unit"), name="x", attrs={"seed": 0})


def _user_folder(path: Path) -> Path:
    path.mkdir()
    (path / "notes.txt").write_text("my notes")
    (path / "table.csv").write_text("1,2")
    return path


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONHASHSEED": "0"})


# ------------------------------------------------------------------ ownership / overwrite
@pytest.mark.parametrize("name", ["user.nc", "user.zarr"])
def test_overwrite_never_replaces_a_users_file_or_folder(tmp_path: Path, name: str) -> None:
    target = tmp_path / name
    if name.endswith(".zarr"):
        _user_folder(target)
    else:
        target.write_bytes(b"mine")
    with pytest.raises(OverwriteError, match="neurocnn only ever replaces its own outputs"):
        io.save(_result(), target, overwrite=True)
    if name.endswith(".zarr"):
        assert sorted(p.name for p in target.iterdir()) == ["notes.txt", "table.csv"]
    else:
        assert target.read_bytes() == b"mine"


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_own_outputs_are_marked_and_replaced(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"r{suffix}"
    io.save(_result(1.0), path)
    assert io.is_owned(path)
    io.save(_result(2.0), path, overwrite=True)
    np.testing.assert_array_equal(io.load(path).values, 2.0)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".tmp-", ".neurocnn-trash-"))]


def test_an_own_file_edited_by_the_user_is_no_longer_replaced(tmp_path: Path) -> None:
    path = tmp_path / "r.nc"
    io.save(_result(), path)
    with open(path, "ab") as fh:
        fh.write(b"user edit")
    assert not io.is_owned(path)
    with pytest.raises(OverwriteError, match="no neurocnn ownership marker"):
        io.save(_result(), path, overwrite=True)


def test_remove_owned_refuses_user_folders(tmp_path: Path) -> None:
    folder = _user_folder(tmp_path / "results")
    with pytest.raises(OverwriteError):
        io.remove_owned(folder)
    assert (folder / "notes.txt").exists()
    mine = io.make_output_dir(tmp_path / "mine")
    io.write_text(mine / "x.txt", "x")
    io.save(_result(), mine / "sub.zarr")
    io.remove_owned(mine)
    assert not mine.exists()


def test_a_neurocnn_folder_with_a_users_file_in_it_is_not_replaced(tmp_path: Path) -> None:
    folder = io.make_output_dir(tmp_path / "maps.zarr")
    io.save(_result(), folder / "a.nc")
    assert io.is_owned(folder)
    (folder / "my_notes.txt").write_text("mine")
    assert not io.is_owned(folder)
    with pytest.raises(OverwriteError):
        io.save(_result(), folder, overwrite=True)
    assert (folder / "my_notes.txt").read_text() == "mine"


def test_make_output_dir_keeps_user_folders_unmarked(tmp_path: Path) -> None:
    folder = _user_folder(tmp_path / "results")
    io.make_output_dir(folder)
    assert not io.is_owned(folder)
    new = io.make_output_dir(tmp_path / "new" / "deeper")
    assert io.is_owned(new)
    with pytest.raises(NotWritableError, match="is a file"):
        io.make_output_dir(folder / "notes.txt")


def test_figure_and_text_writes_are_atomic_and_owned(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from neurocnn.plotting import save_figure

    fig = plt.figure()
    path = save_figure(fig, tmp_path / "f.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and io.is_owned(path)
    save_figure(fig, path, overwrite=True)
    (tmp_path / "user.png").write_bytes(b"user")
    with pytest.raises(OverwriteError):
        save_figure(fig, tmp_path / "user.png", overwrite=True)
    plt.close(fig)
    assert (tmp_path / "user.png").read_bytes() == b"user"
    io.write_text(tmp_path / "m.md", "a")
    with pytest.raises(OverwriteError):
        io.write_text(tmp_path / "m.md", "b")
    io.write_text(tmp_path / "m.md", "b", overwrite=True)
    assert (tmp_path / "m.md").read_text() == "b"


def test_unwritable_locations_give_neurocnn_errors(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(NotWritableError, match="is a file, not a folder"):
        io.save(_result(), afile / "x.nc")
    with pytest.raises(MissingFileError):
        io.load(tmp_path / "missing.nc")


def test_atomic_output_leaves_nothing_after_an_exception(tmp_path: Path) -> None:
    path = tmp_path / "out.nc"
    io.save(_result(1.0), path)
    with pytest.raises(RuntimeError, match="boom"):
        with io.atomic_output(path, overwrite=True) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    np.testing.assert_array_equal(io.load(path).values, 1.0)  # the old output is intact
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".neurocnn-owned")) == ["out.nc"]


# ------------------------------------------------------------------ fault injection (kills)
@pytest.mark.parametrize("suffix", [".nc", pytest.param(".zarr", marks=pytest.mark.slow)])
def test_kill_during_save_leaves_no_partial_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"killed{suffix}"
    method = "to_netcdf" if suffix == ".nc" else "to_zarr"
    result = _run(f"""
        import os, numpy as np, xarray as xr
        from neurocnn import io
        def boom(self, target, *a, **k):
            os.makedirs(target, exist_ok=True) if {suffix!r} == ".zarr" else open(target, "wb").write(b"part")
            os._exit(9)
        xr.Dataset.{method} = boom
        io.save(xr.DataArray(np.zeros(3), dims="x", name="v"), {str(path)!r})
    """)
    assert result.returncode == 9, result.stderr
    assert not path.exists()
    io.save(_result(), path)  # and the name is free to use afterwards
    assert io.load(path).shape == (3, 2)


@pytest.mark.slow
def test_kill_during_overwrite_keeps_the_old_result(tmp_path: Path) -> None:
    path = tmp_path / "r.nc"
    io.save(_result(1.0), path)
    result = _run(f"""
        import os, numpy as np, xarray as xr
        from neurocnn import io
        def boom(self, target, *a, **k):
            open(target, "wb").write(b"part")
            os._exit(9)
        xr.Dataset.to_netcdf = boom
        io.save(xr.DataArray(np.zeros(3), dims="x", name="v"), {str(path)!r}, overwrite=True)
    """)
    assert result.returncode == 9
    np.testing.assert_array_equal(io.load(path).values, 1.0)


# ------------------------------------------------------------------ foreign errors
def test_foreign_errors_translates_os_errors_and_passes_others() -> None:
    with pytest.raises(NotWritableError, match="writing x: permission denied"):
        with foreign_errors("writing x"):
            raise PermissionError(13, "Permission denied", "x")
    with pytest.raises(KeyError):
        with foreign_errors("writing x"):
            raise KeyError("not an I/O error")
    with pytest.raises(UnreadableFileError, match="reading y: the file is corrupt"):
        with foreign_errors("reading y", mode="read"):
            raise ValueError("bad magic")

    @foreign_errors("loading z", mode="read")
    def load() -> None:
        raise OSError("truncated")

    with pytest.raises(UnreadableFileError):
        load()
    with pytest.raises(BrokenPipeError):
        with foreign_errors("printing"):
            raise BrokenPipeError(32, "Broken pipe")


def test_corrupt_files_give_unreadable_file_errors(tmp_path: Path) -> None:
    for name in ("bad.nc", "bad.mat", "bad.nii.gz"):
        (tmp_path / name).write_bytes(b"garbage" * 40)
    with pytest.raises(UnreadableFileError, match="bad.nc"):
        io.load(tmp_path / "bad.nc")
    with pytest.raises(UnreadableFileError, match="bad.mat"):
        io.read_mat(tmp_path / "bad.mat")
    with pytest.raises(UnreadableFileError, match="bad.nii.gz"):
        io.load_nifti(tmp_path / "bad.nii.gz")


# ------------------------------------------------------------------ MATLAB v7.3 (HDF5)
def write_mat73(path: Path, variables: dict) -> None:
    """A v7.3 file laid out as MATLAB writes it: 512-byte user block, transposed arrays,
    MATLAB_class attributes, cells and struct-array fields as references into #refs#."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        counter = [0]

        def put(group, name, value):
            if isinstance(value, str):
                ds = group.create_dataset(name, data=np.array([ord(c) for c in value], np.uint16)[:, None])
                ds.attrs["MATLAB_class"] = np.bytes_("char")
                return ds
            if isinstance(value, list):  # a cell array (column)
                r = []
                for v in value:
                    counter[0] += 1
                    r.append(put(refs, f"r{counter[0]}", v).ref)
                ds = group.create_dataset(name, data=np.array(r, dtype=h5py.ref_dtype)[:, None], dtype=h5py.ref_dtype)
                ds.attrs["MATLAB_class"] = np.bytes_("cell")
                return ds
            if isinstance(value, dict):  # a scalar struct
                g = group.create_group(name)
                g.attrs["MATLAB_class"] = np.bytes_("struct")
                for k, v in value.items():
                    put(g, k, v)
                return g
            if isinstance(value, tuple):  # a struct array: tuple of dicts with the same fields
                g = group.create_group(name)
                g.attrs["MATLAB_class"] = np.bytes_("struct")
                for k in value[0]:
                    r = []
                    for element in value:
                        counter[0] += 1
                        r.append(put(refs, f"r{counter[0]}", element[k]).ref)
                    g.create_dataset(k, data=np.array(r, dtype=h5py.ref_dtype)[:, None], dtype=h5py.ref_dtype)
                return g
            ds = group.create_dataset(name, data=np.asarray(value, np.float64).T)
            ds.attrs["MATLAB_class"] = np.bytes_("double")
            return ds

        for name, value in variables.items():
            put(f, name, value)
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Tue Dec  1 2026 HDF5 schema 1.00 .")


def _rdm(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).random((n, n))
    d = x + x.T
    np.fill_diagonal(d, 0)
    return d


def test_read_mat_v73_matches_matlab_axis_order_and_types(tmp_path: Path) -> None:
    a = np.arange(24.0).reshape(2, 3, 4)
    path = tmp_path / "v73.mat"
    write_mat73(path, {"A": a, "label": "hIT", "c": [np.eye(2), "x"], "s": {"RDM": _rdm(4, 0), "name": "IT"}})
    m = io.read_mat(path)
    np.testing.assert_array_equal(m["A"], a)
    assert m["label"] == "hIT"
    np.testing.assert_array_equal(m["c"][0], np.eye(2))
    assert m["c"][1] == "x"
    np.testing.assert_array_equal(m["s"].RDM, _rdm(4, 0))
    assert m["s"].name == "IT"


def test_read_mat_v73_struct_array_like_scipy_v7(tmp_path: Path) -> None:
    rdms = [_rdm(5, i) for i in range(3)]
    p73 = tmp_path / "v73.mat"
    write_mat73(p73, {"rdms": tuple({"RDM": r, "name": f"s{i}"} for i, r in enumerate(rdms))})
    m = io.read_mat(p73)
    assert [s.name for s in m["rdms"]] == ["s0", "s1", "s2"]
    for got, want in zip(m["rdms"], rdms):
        np.testing.assert_array_equal(got.RDM, want)


def test_truncated_v73_file_is_unreadable_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "t.mat"
    write_mat73(path, {"A": np.ones((50, 50))})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(UnreadableFileError):
        io.read_mat(path)


def test_v5_files_still_read_with_scipy(tmp_path: Path) -> None:
    path = tmp_path / "v5.mat"
    scipy.io.savemat(path, {"A": np.arange(6.0).reshape(2, 3)})
    np.testing.assert_array_equal(io.read_mat(path)["A"], np.arange(6.0).reshape(2, 3))


def test_errors_are_neurocnn_errors() -> None:
    assert issubclass(UnreadableFileError, NeurocnnError) and issubclass(UnreadableFileError, ValueError)
    assert issubclass(NotWritableError, PermissionError)
