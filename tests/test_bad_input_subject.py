"""Bad input and stale results: stimuli (alpha, bombs, strings), seeds, devices, extraction stores."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import neurocnn as nc
from neurocnn import lesions, rsa
from neurocnn._validation import check_option, check_positive_int, check_seed
from neurocnn.datasets import sha256sum
from neurocnn.exceptions import (
    DeviceError,
    InvalidDataError,
    IntegrityError,
    OverwriteError,
    StimulusError,
    UnknownNameError,
)
from neurocnn.models import Preprocessing
from neurocnn.stimuli import ALPHA_BACKGROUND, load_stimuli, synthetic_stimuli


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


def _subject() -> nc.VirtualSubject:
    return nc.VirtualSubject(Tiny(), preprocessing=Preprocessing(resize=16, crop=16))


def _images(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, 16, 16, 3), dtype=np.uint8)


# ------------------------------------------------------------------ stimuli
def test_transparent_pixels_are_composited_onto_the_documented_background(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 0  # top half transparent
    rgba[2:, :, 3] = 255  # bottom half opaque red
    rgba[3, 3, 3] = 128  # half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = load_stimuli([tmp_path / "a.png"]).load(0).numpy() * 255
    np.testing.assert_allclose(img[:, 0, 0], ALPHA_BACKGROUND, atol=0.5)
    np.testing.assert_allclose(img[:, 2, 0], [200, 0, 0], atol=0.5)
    want = 200 * 128 / 255 + 255 * 127 / 255, 255 * 127 / 255, 255 * 127 / 255
    np.testing.assert_allclose(img[:, 3, 3], want, atol=1.5)


def test_palette_and_gray_alpha_images_are_composited(tmp_path: Path) -> None:
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    pal.save(tmp_path / "p.png", transparency=1)
    Image.new("LA", (4, 4), (30, 0)).save(tmp_path / "la.png")
    for name in ("p.png", "la.png"):
        img = load_stimuli([tmp_path / name]).load(0).numpy() * 255
        np.testing.assert_allclose(img[:, 0, 0], ALPHA_BACKGROUND, atol=0.5)


def test_rgba_arrays_are_refused_with_advice() -> None:
    with pytest.raises(StimulusError, match="4 channels.*Composite"):
        load_stimuli(np.zeros((2, 8, 8, 4), np.uint8))


def test_decompression_bombs_become_stimulus_errors(tmp_path: Path, monkeypatch) -> None:
    Image.new("L", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(StimulusError, match="too large.*Downscale"):
        load_stimuli([tmp_path / "big.png"])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # between 1x and 2x: PIL only warns
    with pytest.raises(StimulusError, match="too large"):
        load_stimuli([tmp_path / "big.png"])


@pytest.mark.parametrize("bad", [np.array(["a.png", "b.png"]), np.array([object(), object()], dtype=object),
                                 [1, 2], [], 3.5])
def test_non_image_inputs_are_refused(bad) -> None:
    with pytest.raises(StimulusError):
        load_stimuli(bad)


# ------------------------------------------------------------------ seeds and messages
@pytest.mark.parametrize("seed", [None, -1, 1.5, "0", True])
def test_bad_seeds_are_refused_everywhere(seed) -> None:
    with pytest.raises(InvalidDataError, match="seed must be a non-negative integer"):
        check_seed(seed)
    with pytest.raises(InvalidDataError, match="seed"):
        synthetic_stimuli(2, seed=seed)
    with pytest.raises(InvalidDataError, match="seed"):
        lesions.random_units(2, 10, seed=seed)
    b = np.stack([rsa.compute_rdm(np.random.default_rng(i).normal(size=(5, 6))).values for i in range(3)])
    with pytest.raises(InvalidDataError, match="seed"):
        rsa.bootstrap_rdm_comparison(b[:1], b, n_bootstrap=3, seed=seed, progress=False)
    with pytest.raises(InvalidDataError, match="seed"):
        nc.VirtualSubject("efficientnet_lite0", weights=None, seed=seed)


def test_numpy_integers_are_valid_seeds() -> None:
    assert check_seed(np.int64(3)) == 3 and type(check_seed(np.int64(3))) is int


def test_messages_never_show_numpy_reprs() -> None:
    with pytest.raises(UnknownNameError) as err:
        check_option("layer", np.str_("cnv"), [np.str_("conv")])
    assert "np.str_" not in str(err.value) and "'cnv'" in str(err.value)
    with pytest.raises(InvalidDataError) as err:
        check_positive_int("batch_size", np.int64(0))
    assert "np.int64" not in str(err.value)
    with pytest.raises(InvalidDataError) as err:
        rsa.compute_rdm(np.ones((4, 3)), stimulus_ids=np.array(["s0", "s1", "s2", "s3"]))
    assert "np.str_" not in str(err.value) and "'s0'" in str(err.value)
    assert str(InvalidDataError(f"{np.float64(0.5)!r} {np.int32(2)!r}")) == "0.5 2"


# ------------------------------------------------------------------ devices and weights
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(DeviceError, match="CUDA is not available.*device='cpu'"):
        nc.VirtualSubject(Tiny(), device="cuda")
    with pytest.raises(DeviceError):
        _subject().activations(_images(), "conv", device="cuda:0", progress=False)
    with pytest.raises(DeviceError):
        rsa.compute_rdm(np.random.default_rng(0).normal(size=(4, 5)), device="cuda")


def test_unknown_device_names_are_refused() -> None:
    with pytest.raises(UnknownNameError, match="Unknown device 'gpu0'"):
        nc.VirtualSubject(Tiny(), device="gpu0")


def test_corrupt_weights_file_gives_advice_not_torch_internals(tmp_path: Path) -> None:
    (tmp_path / "w.pt").write_bytes(b"not a state dict" * 8)
    with pytest.raises(IntegrityError, match="not a readable PyTorch state-dict") as err:
        nc.VirtualSubject("efficientnet_lite0", weights=tmp_path / "w.pt")
    assert "weights_only" not in str(err.value)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(IntegrityError, match="not a state dict"):
        nc.VirtualSubject("efficientnet_lite0", weights=tmp_path / "list.pt")


# ------------------------------------------------------------------ file hashes
def test_sha256_cache_never_returns_the_hash_of_old_content(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 4096)
    old = os.stat(path)
    first = sha256sum(path)
    path.write_bytes(b"b" * 4096)  # same size, and the old mtime restored
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert sha256sum(path) != first
    past = 1_000_000_000 * 10**9  # an old file is cached, and a later edit is still seen
    os.utime(path, ns=(past, past))
    second = sha256sum(path)
    path.write_bytes(b"c" * 4096)
    os.utime(path, ns=(past, past))
    assert sha256sum(path) != second


# ------------------------------------------------------------------ extraction stores
def test_store_is_not_reused_after_images_are_edited_in_place(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(_images(1, i)[0]).save(folder / f"im{i}.bmp")
    subject = _subject()
    subject.activations(str(folder), "conv", store=tmp_path / "s.zarr", progress=False)
    Image.fromarray(_images(1, 99)[0]).save(folder / "im0.bmp")  # same name, same size
    with pytest.raises(OverwriteError, match="stimulus_content_sha256"):
        subject.activations(str(folder), "conv", store=tmp_path / "s.zarr", progress=False)
    fresh = subject.activations(str(folder), "conv", store=tmp_path / "s.zarr", overwrite=True, progress=False)
    np.testing.assert_allclose(fresh.values, subject.activations(str(folder), "conv", progress=False).values)


def test_store_is_not_reused_under_a_lesion_or_edited_weights(tmp_path: Path) -> None:
    subject = _subject()
    store = tmp_path / "s.zarr"
    subject.activations(_images(), "relu", store=store, progress=False)
    with lesions.knockout(subject, "conv", [0, 1]):
        with pytest.raises(OverwriteError, match="different extraction"):
            subject.activations(_images(), "relu", store=store, progress=False)
    again = subject.activations(_images(), "relu", store=store, progress=False)  # intact again: reused
    assert again.shape[0] == 4
    with torch.no_grad():
        subject.model.conv.weight[0] = 0
    with pytest.raises(OverwriteError, match="weights_sha256_now"):
        subject.activations(_images(), "relu", store=store, progress=False)
    with pytest.raises(OverwriteError, match="stimulus_content_sha256"):
        _subject().activations(_images(seed=5), "relu", store=store, progress=False)


def test_store_is_not_reused_with_edited_metadata(tmp_path: Path) -> None:
    from neurocnn.stimuli import StimulusSet

    subject = _subject()
    store = tmp_path / "s.zarr"
    subject.activations(StimulusSet(_images(), metadata={"category": list("aabb")}), "conv", store=store,
                        progress=False)
    with pytest.raises(OverwriteError, match="stimulus_metadata_sha256"):
        subject.activations(StimulusSet(_images(), metadata={"category": list("abab")}), "conv", store=store,
                            progress=False)


def test_store_overwrite_never_deletes_a_users_folder(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(OverwriteError):
            _subject().activations(_images(), "conv", store=folder, overwrite=overwrite, progress=False)
    assert (folder / "notes.txt").read_text() == "mine"


def test_interrupted_store_creation_and_batches_resume(tmp_path: Path, monkeypatch) -> None:
    import zarr

    import neurocnn.subject as subject_module

    store = tmp_path / "s.zarr"
    original = zarr.Group.create_array

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(zarr.Group, "create_array", fail)
    with pytest.raises(KeyboardInterrupt):
        _subject().activations(_images(6), "conv", batch_size=2, store=store, progress=False)
    assert not store.exists()  # built under a temporary name: nothing half-made under the final one
    monkeypatch.setattr(zarr.Group, "create_array", original)
    calls = []
    write = subject_module._write_region

    def fail_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return write(*args, **kwargs)

    monkeypatch.setattr(subject_module, "_write_region", fail_second)
    with pytest.raises(KeyboardInterrupt):
        _subject().activations(_images(6), "conv", batch_size=2, store=store, progress=False)
    monkeypatch.setattr(subject_module, "_write_region", write)
    resumed = _subject().activations(_images(6), "conv", batch_size=2, store=store, progress=False)
    np.testing.assert_allclose(resumed.values, _subject().activations(_images(6), "conv", progress=False).values)
