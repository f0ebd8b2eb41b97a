"""Shared fixtures: offline guard, data mirror, tiny hand-weighted networks."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("NEUROCNN_MIRROR", str(SHARED))
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never touch the network, and never write to the real user cache."""

    def guard(*_args, **_kwargs):
        raise OSError("network access is disabled in the neurocnn test suite")

    monkeypatch.setattr(socket.socket, "connect", guard)
    monkeypatch.setattr(socket, "create_connection", guard)
    monkeypatch.setenv("NEUROCNN_CACHE", str(tmp_path_factory.getbasetemp() / "neurocnn-cache"))
    nilearn_dir = tmp_path_factory.getbasetemp() / "nilearn-data"
    monkeypatch.setenv("NILEARN_DATA", os.environ.get("NILEARN_DATA", str(nilearn_dir)))


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The data mirror (``../shared``); tests needing real data skip without it."""
    path = Path(os.environ["NEUROCNN_MIRROR"])
    if not (path / "data").is_dir():
        pytest.skip(f"data mirror {path} not available")
    return path


@pytest.fixture(scope="session")
def lite0():
    """The embedded pretrained EfficientNet-Lite0 subject (real ImageNet weights)."""
    from neurocnn import VirtualSubject

    return VirtualSubject("efficientnet_lite0")


@pytest.fixture(scope="session")
def stimuli92():
    from neurocnn import load_stimuli

    return load_stimuli("92images")
