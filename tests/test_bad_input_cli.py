"""Bad input to the command line: one-line errors with exit status 2, no tracebacks, checks first."""

from __future__ import annotations

import io as _io
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from neurocnn.cli import main


def _one_line_error(capsys, code: int, *words: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("neurocnn ") and ": error: " in lines[0], err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_extract_overwrite_refuses_a_users_folder(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "thesis.txt").write_text("mine")
    code = main(["extract", "--stimuli", "92images", "--layers", "stem", "--out", str(folder), "--overwrite"])
    _one_line_error(capsys, code, "neurocnn only ever replaces its own outputs")
    assert (folder / "thesis.txt").read_text() == "mine"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda(tmp_path: Path, capsys) -> None:
    code = main(["extract", "--stimuli", "92images", "--layers", "stem", "--out", str(tmp_path / "a.zarr"),
                 "--device", "cuda"])
    _one_line_error(capsys, code, "CUDA is not available", "--device cpu")


def test_rsa_checks_arguments_before_any_work(tmp_path: Path, capsys) -> None:
    start = time.perf_counter()
    code = main(["rsa", "--out", str(tmp_path / "o"), "--n-bootstrap", "0"])
    _one_line_error(capsys, code, "--n-bootstrap must be a positive integer, got 0")
    assert time.perf_counter() - start < 5  # no network loaded, no extraction
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("out", ["file_parent", "proc"])
def test_unwritable_out_is_one_line(tmp_path: Path, capsys, out: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    target = afile / "sub" if out == "file_parent" else Path("/proc/neurocnn-test-out")
    code = main(["rsa", "--out", str(target), "--n-bootstrap", "2", "--layers", "stem"])
    _one_line_error(capsys, code, str(target))


def test_bad_batch_size_and_extension(tmp_path: Path, capsys) -> None:
    code = main(["extract", "--stimuli", "92images", "--out", str(tmp_path / "a.zarr"), "--batch-size", "0"])
    _one_line_error(capsys, code, "--batch-size")
    folder = tmp_path / "stim"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    code = main(["attribute", "--stimuli", str(folder), "--class-name", "x", "--out", str(tmp_path / "a.txt")])
    _one_line_error(capsys, code, "file extension")


def test_broken_pipe_is_quiet(monkeypatch) -> None:
    class Closed(_io.StringIO):
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            return sys.__stderr__.fileno() if sys.__stderr__ else 2

    monkeypatch.setattr("neurocnn.cli._quiet_stdout", lambda: None)
    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["models"]) == 0
