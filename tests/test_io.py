"""Saving and loading results: formats, attrs, never overwriting."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from neurocnn import io
from neurocnn.exceptions import MissingFileError, OverwriteError, UnknownNameError


def _result():
    return xr.DataArray(
        np.arange(6.0).reshape(2, 3), dims=("layer", "time"),
        coords={"layer": ["conv1", "conv2"], "time": [0.0, 0.1, 0.2]},
        attrs={"metric": "correlation", "seed": 3, "flag": True, "missing": None, "meta": {"a": 1}},
        name="r",
    )


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_round_trip(tmp_path, suffix):
    original = _result()
    path = io.save(original, tmp_path / f"r{suffix}")
    back = io.load(path)
    np.testing.assert_array_equal(back.values, original.values)
    assert back.attrs["flag"] == 1 and back.attrs["missing"] == "" and back.attrs["meta"] == '{"a": 1}'
    assert original.attrs["flag"] is True  # input untouched


def test_never_overwrites_unless_asked(tmp_path):
    path = io.save(_result(), tmp_path / "r.nc")
    before = path.read_bytes()
    with pytest.raises(OverwriteError, match=r"overwrite=True"):
        io.save(_result() * 2, path)
    assert path.read_bytes() == before
    io.save(_result() * 2, path, overwrite=True)
    assert float(io.load(path).sum()) == 30.0


def test_dataset_round_trip(tmp_path):
    ds = xr.Dataset({"a": _result(), "b": ("layer", [1, 2])})
    back = io.load(io.save(ds, tmp_path / "d.nc"))
    assert isinstance(back, xr.Dataset) and set(back.data_vars) == {"a", "b"}


def test_bad_paths(tmp_path):
    with pytest.raises(UnknownNameError, match="extension"):
        io.save(_result(), tmp_path / "r.csv")
    with pytest.raises(MissingFileError):
        io.load(tmp_path / "nope.nc")
