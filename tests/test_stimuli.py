"""Stimulus sets from names, folders, files and arrays; clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from neurocnn import load_stimuli
from neurocnn.exceptions import ShapeMismatchError, StimulusError, UnknownNameError


def _write(path, size=(20, 16), value=128, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, value // 2, 0)).save(path)


def test_92images_set(stimuli92):
    assert len(stimuli92) == 92
    assert stimuli92.ids[0] == "92img_000" and stimuli92.ids[-1] == "92img_091"
    assert stimuli92.load(0).shape == (3, 175, 175)
    assert int(np.sum(stimuli92.metadata["label_animate"])) == 48
    assert int(np.sum(stimuli92.metadata["label_face"])) == 24
    assert set(stimuli92.metadata["category"]) >= {"human face", "artificial inanimate"}
    faces = stimuli92.where(label_face=1)
    assert len(faces) == 24 and faces.ids[0].startswith("92img_")


def test_floc_set():
    stim = load_stimuli("floc")
    assert len(stim) == 864
    counts = {c: int((stim.metadata["category"] == c).sum()) for c in np.unique(stim.metadata["category"])}
    assert counts == {c: 144 for c in ("adult", "car", "child", "corridor", "house", "instrument")}
    assert int((stim.metadata["domain"] == "face").sum()) == 288
    img = stim.load(0)
    assert img.shape == (3, 1024, 1024) and torch.equal(img[0], img[1])


def test_folder_with_categories(tmp_path):
    for cat in ("faces", "houses"):
        for i in (1, 2, 10):
            _write(tmp_path / cat / f"{cat}-{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    stim = load_stimuli(tmp_path)
    assert len(stim) == 6
    assert list(stim.metadata["category"]) == ["faces"] * 3 + ["houses"] * 3
    assert list(stim.ids[:3]) == ["faces-1", "faces-2", "faces-10"]


def test_empty_folder(tmp_path):
    with pytest.raises(StimulusError, match="contains no files"):
        load_stimuli(tmp_path)


def test_folder_without_images(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(StimulusError, match="no image files"):
        load_stimuli(tmp_path)


def test_unreadable_image_is_named(tmp_path):
    _write(tmp_path / "good.png")
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    with pytest.raises(StimulusError, match="bad.jpg"):
        load_stimuli(tmp_path)


def test_mixed_sizes_error_names_files_and_allow_policy(tmp_path):
    _write(tmp_path / "a.png", size=(20, 16))
    _write(tmp_path / "b.png", size=(30, 16))
    with pytest.raises(ShapeMismatchError, match="b.png.*a.png|mixed_sizes"):
        load_stimuli(tmp_path)
    assert len(load_stimuli(tmp_path, mixed_sizes="allow")) == 2


def test_grayscale_files_become_rgb(tmp_path):
    _write(tmp_path / "g.png", mode="L", value=51)
    img = load_stimuli([tmp_path / "g.png"]).load(0)
    assert img.shape == (3, 16, 20) and torch.allclose(img, torch.full_like(img, 0.2))


def test_arrays_of_every_layout():
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8)
    a = load_stimuli(hwc, metadata={"cond": ["a", "b", "a", "b"]})
    b = load_stimuli(torch.from_numpy(hwc).permute(0, 3, 1, 2).float() / 255)
    assert torch.allclose(a.load(2), b.load(2))
    assert load_stimuli(hwc[..., 0]).load(0).shape == (3, 8, 8)
    assert a.coords()["cond"][1].tolist() == ["a", "b", "a", "b"]


def test_ambiguous_layouts_follow_the_library_convention():
    hwc = np.zeros((2, 3, 5, 3), dtype=np.uint8)  # 3 rows of 5 pixels, RGB
    hwc[:, :, :, 0] = 255
    img = load_stimuli(hwc).load(0)
    assert img.shape == (3, 3, 5) and float(img[0].min()) == 1.0 and float(img[1].max()) == 0.0
    chw = torch.zeros(2, 3, 3, 3)
    chw[:, 0] = 1.0
    assert float(load_stimuli(chw).load(0)[0].min()) == 1.0


def test_bad_arrays():
    with pytest.raises(StimulusError, match=r"\[0, 1\]"):
        load_stimuli(np.full((2, 3, 4, 4), 2.0, dtype=np.float32))
    with pytest.raises(StimulusError, match="expected"):
        load_stimuli(np.zeros((2, 5, 4, 4, 4)))
    with pytest.raises(StimulusError, match="NaN"):
        load_stimuli(np.full((1, 3, 4, 4), np.nan, dtype=np.float32))


def test_metadata_and_ids_validated():
    arr = np.zeros((3, 4, 4, 3), dtype=np.uint8)
    with pytest.raises(ShapeMismatchError, match="one value per stimulus"):
        load_stimuli(arr, metadata={"cond": [1, 2]})
    with pytest.raises(StimulusError, match="unique"):
        load_stimuli(arr, ids=["a", "a", "b"])


def test_unknown_name():
    with pytest.raises(UnknownNameError, match="92images"):
        load_stimuli("92image")


def test_images_xarray(stimuli92):
    imgs = stimuli92.subset([0, 1]).images()
    assert imgs.dims == ("stimulus", "y", "x", "rgb") and imgs.dtype == np.uint8
    assert list(imgs.stimulus.values) == ["92img_000", "92img_001"]


def test_synthetic_stimuli_are_seeded_and_lazy():
    from neurocnn.stimuli import synthetic_stimuli

    a, b = synthetic_stimuli(1000, size=8, seed=1), synthetic_stimuli(1000, size=8, seed=1)
    assert len(a) == 1000 and a.ids[999] == "synth_0000999"
    assert torch.equal(a.load(500), b.load(500))
    assert not torch.equal(a.load(500), synthetic_stimuli(1000, size=8, seed=2).load(500))
    sub = a.subset([500, 7])
    assert torch.equal(sub.load(0), a.load(500)) and list(sub.ids) == ["synth_0000500", "synth_0000007"]
    assert a.check_sizes() == (8, 8)
