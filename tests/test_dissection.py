"""Unit semantics: image-level annotation and pixel-level network dissection.

Oracles: IoUs worked out on paper for a hand-weighted network (comments give the
arithmetic), numpy.quantile, scipy's hypergeometric distribution, skimage's rgb2lab.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import xarray as xr
from PIL import Image
from torch import nn

import neurocnn as nc
from neurocnn import concepts, dissection
from neurocnn.exceptions import InvalidDataError, MissingFileError, ShapeMismatchError, StimulusError, UnknownNameError
from neurocnn.models import Preprocessing

RED, BLUE, GREY = (255, 0, 0), (0, 0, 255), (128, 128, 128)
IDENTITY = Preprocessing(resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _colour_net() -> nc.VirtualSubject:
    """conv 2x2 stride 2 (mean over the window) + ReLU: channel 0 = R - G - B, channel 1 = B - R - G."""
    conv = nn.Conv2d(3, 2, kernel_size=2, stride=2, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0] = torch.tensor([1.0, -1.0, -1.0])[:, None, None] / 4
        conv.weight[1] = torch.tensor([-1.0, -1.0, 1.0])[:, None, None] / 4
    return nc.VirtualSubject(nn.Sequential(conv, nn.ReLU()), preprocessing=IDENTITY, name="colour_net")


def _squares() -> np.ndarray:
    """Two 8x8 images on grey: a red square at rows/cols 2..5, and a blue one at the same place."""
    images = np.full((2, 8, 8, 3), GREY, dtype=np.uint8)
    images[0, 2:6, 2:6] = RED
    images[1, 2:6, 2:6] = BLUE
    return images


# ---------------------------------------------------------------- colour names
def test_rgb_to_lab_matches_skimage():
    skimage_color = pytest.importorskip("skimage.color")
    rgb = np.random.default_rng(0).random((50, 3))
    np.testing.assert_allclose(concepts.rgb_to_lab(rgb).numpy(), skimage_color.rgb2lab(rgb[None])[0], atol=1e-3)


def test_color_names_of_prototypes_and_near_colours():
    protos = torch.tensor([concepts.COLOR_PROTOTYPES[n] for n in concepts.COLOR_NAMES]).float().T[:, None] / 255
    assert concepts.color_names(protos)[0].tolist() == list(range(11))
    near = torch.tensor([[230, 20, 30], [20, 40, 200], [250, 250, 240], [10, 10, 10]]).float().T[:, None] / 255
    names = [concepts.COLOR_NAMES[i] for i in concepts.color_names(near)[0].tolist()]
    assert names == ["red", "blue", "white", "black"]


# ---------------------------------------------------------------- streaming quantile
@pytest.mark.parametrize("n_batches", [1, 5])
def test_top_quantile_exact_equals_numpy(n_batches):
    rng = np.random.default_rng(1)
    values = rng.standard_normal((3, 1000)) * np.array([[1.0], [5.0], [0.1]])
    tracker = dissection.TopQuantile(3, 1000, 0.005)
    for chunk in np.array_split(values, n_batches, axis=1):
        tracker.update(torch.from_numpy(chunk))
    np.testing.assert_allclose(tracker.result(), np.quantile(values, 0.995, axis=1), rtol=0, atol=1e-12)


def test_top_quantile_histogram_within_one_bin():
    rng = np.random.default_rng(2)
    # growing range: later batches hold larger values, so the histogram must re-bin
    values = np.concatenate([rng.random((4, 2000)) * s for s in (1.0, 3.0, 10.0)], axis=1)
    tracker = dissection.TopQuantile(4, values.shape[1], 0.01, method="histogram", n_bins=1024)
    for chunk in np.split(values, 3, axis=1):
        tracker.update(torch.from_numpy(chunk))
    exact = np.quantile(values, 0.99, axis=1)
    assert np.all(np.abs(tracker.result() - exact) <= tracker.bin_width() + 1e-9)
    assert np.all(tracker.bin_width() > 0)


def test_top_quantile_counts_checked():
    tracker = dissection.TopQuantile(2, 10, 0.1)
    tracker.update(torch.zeros(2, 4))
    with pytest.raises(ShapeMismatchError, match="4 values per unit, 10 were announced"):
        tracker.result()


# ---------------------------------------------------------------- pixel-level, hand-weighted
def test_red_unit_is_labelled_red_with_iou_on_paper():
    subject = _colour_net()
    res = dissection.dissect(subject, _squares(), "1", quantile=0.125, progress=False)
    # Raw 4x4 maps: channel 0 is 1 on cells (1..2, 1..2) of image 0, 0 elsewhere: 4 ones among
    # 32 values. np.quantile(., 0.875): position 31 * 0.875 = 27.125 between a 0 and a 1 -> T = 0.125.
    np.testing.assert_allclose(res["threshold"].values, [0.125, 0.125])
    # Bilinear x2 upsampling (align_corners=False) of the profile [0, 1, 1, 0] gives
    # [0, .25, .75, 1, 1, .75, .25, 0]; the 2-D map is the outer product. Pixels > 0.125: the
    # 6x6 block 1..6 minus its 4 corners (.25 * .25) = 32 pixels, containing the 16 red pixels.
    iou = res["iou"].sel(channel=0)
    assert float(iou.sel(concept="red")) == pytest.approx(16 / 32)
    # grey: 48 pixels per image (96 in all); on image 0 the active region holds 16 grey pixels.
    assert float(iou.sel(concept="grey")) == pytest.approx(16 / (32 + 96 - 16))
    assert float(iou.sel(concept="blue")) == 0.0
    assert res["label_name"].values.tolist() == ["red", "blue"]
    assert res["label_category"].values.tolist() == ["color", "color"]
    np.testing.assert_allclose(res["label_iou"].values, [0.5, 0.5])
    assert res["detector"].values.all()
    assert res.attrs["layer"] == "1" and res.attrs["quantile"] == 0.125
    assert res["top_stimulus"].values[0, 0] == "0"


def test_dissect_histogram_and_store_agree_with_exact(tmp_path):
    subject = _colour_net()
    stim = nc.load_stimuli(_squares())
    exact = dissection.dissect(subject, stim, "1", quantile=0.125, progress=False)
    stored = dissection.dissect(subject, stim, "1", quantile=0.125, store=tmp_path / "acts.zarr", batch_size=1,
                                progress=False)
    xr.testing.assert_allclose(exact["iou"], stored["iou"])
    hist = dissection.dissect(subject, stim, "1", quantile=0.125, quantile_method="histogram", progress=False)
    # the two order statistics np.quantile interpolates between are 0 and 1 (see the red test)
    err = hist["threshold_error"].values
    assert np.all((hist["threshold"].values >= -err) & (hist["threshold"].values <= 1 + err)) and np.all(err > 0)


def test_dissect_result_round_trips_netcdf(tmp_path):
    res = dissection.dissect(_colour_net(), _squares(), "1", quantile=0.125, progress=False)
    nc.save(res, tmp_path / "d.nc")
    back = nc.load(tmp_path / "d.nc")
    np.testing.assert_allclose(back["iou"].values, res["iou"].values)
    assert back["label_name"].values.tolist() == ["red", "blue"]


# ---------------------------------------------------------------- Broden layout
def _write_broden(root, *, mask_size=(8, 8), drop_label_column=None):
    (root / "images").mkdir(parents=True)
    images = _squares()
    rows = []
    for i, img in enumerate(images):
        Image.fromarray(img).save(root / "images" / f"img{i}.png")
        seg = np.zeros((*mask_size, 3), dtype=np.uint8)
        number = 300  # R + 256 G = 44 + 256 * 1: tests the G byte
        if i == 0:
            seg[2:4, 2:6] = (44, 1, 0)  # hand-drawn "box": the top half (2 rows x 4) of the red square
        else:
            seg[6:8, 0:8] = (7, 0, 0)  # "floor" (label 7): the bottom two rows
        Image.fromarray(seg).save(root / "images" / f"img{i}_object.png")
        rows.append({"image": f"img{i}.png", "split": "train", "ih": 8, "iw": 8, "sh": 8, "sw": 8,
                     "object": f"img{i}_object.png", "scene": "12" if i == 0 else ""})
    with open(root / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    labels = [{"number": 7, "name": "floor", "category": "object(1)"},
              {"number": 12, "name": "kitchen", "category": "scene(1)"},
              {"number": number, "name": "box", "category": "object(1);part(0)"}]
    fields = ["number", "name", "category"]
    if drop_label_column:
        fields.remove(drop_label_column)
    with open(root / "label.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(labels)


def test_broden_folder_gives_iou_on_paper(tmp_path):
    _write_broden(tmp_path)
    probe = concepts.load_broden(tmp_path)
    assert probe.concepts.tolist() == ["floor", "kitchen", "box"]
    assert probe.categories == ("object", "scene")
    res = dissection.dissect(_colour_net(), probe, "1", quantile=0.125, progress=False)
    iou = res["iou"].sel(channel=0)
    # channel 0 is active on 32 pixels of image 0 (see the red test), both images annotate object:
    # box = 8 pixels, all inside -> 8 / 32.  floor: 16 pixels on image 1 where channel 0 is off -> 0.
    assert float(iou.sel(concept="box")) == pytest.approx(8 / 32)
    assert float(iou.sel(concept="floor")) == 0.0
    # kitchen: image 0 as a whole (64 px); only image 0 annotates scene -> 32 / 64.
    assert float(iou.sel(concept="kitchen")) == pytest.approx(32 / 64)
    assert res["label_name"].values[0] == "kitchen" and res["label_category"].values[0] == "scene"
    # channel 1 (blue) is active on 32 px of image 1; floor (rows 6..7, 16 px) meets them in row 6
    # (row profile .25) at cols 2..5 (.25 * .75 and .25 * 1 > .125; cols 1 and 6 give .0625):
    # 4 pixels, IoU = 4 / (32 + 16 - 4) = 4 / 44.
    assert float(res["iou"].sel(channel=1, concept="floor")) == pytest.approx(4 / 44)
    np.testing.assert_allclose(res["iou_by_category"].sel(channel=0).values, [0.25, 0.5])


def test_broden_with_pixel_colours(tmp_path):
    _write_broden(tmp_path)
    probe = concepts.load_broden(tmp_path, colors="pixels")
    assert "color" in probe.categories and "red" in probe.concepts
    res = dissection.dissect(_colour_net(), probe, "1", quantile=0.125, progress=False)
    assert float(res["iou"].sel(channel=0, concept="red")) == pytest.approx(0.5)


def test_broden_bad_inputs(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        concepts.load_broden(tmp_path / "nope")
    _write_broden(tmp_path / "a", drop_label_column="number")
    with pytest.raises(InvalidDataError, match=r"lacks column\(s\) \['number'\]"):
        concepts.load_broden(tmp_path / "a")
    _write_broden(tmp_path / "b", mask_size=(4, 4))
    probe = concepts.load_broden(tmp_path / "b")
    with pytest.raises(ShapeMismatchError, match="index.csv gives sw x sh = 8x8"):
        dissection.dissect(_colour_net(), probe, "1", quantile=0.125, progress=False)
    _write_broden(tmp_path / "c")
    with pytest.raises(UnknownNameError, match="Unknown layer 'conv9'"):
        dissection.dissect(_colour_net(), concepts.load_broden(tmp_path / "c"), "conv9", progress=False)


def test_dissect_bad_arguments():
    subject = _colour_net()
    with pytest.raises(InvalidDataError, match="strictly between 0 and 1"):
        dissection.dissect(subject, _squares(), "1", quantile=1.5, progress=False)
    flat = nc.VirtualSubject(nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 4)), preprocessing=IDENTITY,
                            name="fc")
    with pytest.raises(InvalidDataError, match="needs a conv layer"):
        dissection.dissect(flat, _squares(), "2", progress=False)


# ---------------------------------------------------------------- image-level annotation
def _redness_probe(n_red=6, n_other=10):
    """n_red red images (label 'red', group 'warm') and n_other blue/grey ones."""
    images = np.full((n_red + n_other, 8, 8, 3), GREY, dtype=np.uint8)
    images[:n_red, 2:6, 2:6] = RED
    images[n_red:n_red + n_other // 2, 2:6, 2:6] = BLUE
    labels = ["red"] * n_red + ["blue"] * (n_other // 2) + ["grey"] * (n_other - n_other // 2)
    return nc.load_stimuli(images, metadata={"label": labels})


def test_annotation_labels_units_with_hypergeometric_test():
    stim = _redness_probe()
    res = dissection.annotate_units(_colour_net(), stim, "1", top_k=5, groups={"red": "warm", "blue": "cold", "grey": "neutral"},
                                    progress=False)
    assert res["label_name"].values.tolist() == ["red", "blue"]
    assert res["label_type"].values.tolist() == ["warm", "cold"]
    np.testing.assert_allclose(res["precision"].values, [1.0, 1.0])
    np.testing.assert_allclose(res["chance"].values, [6 / 16, 5 / 16])
    # P(X >= 5), X ~ hypergeom(16 images, 6 red, 5 drawn), times 3 labels (Bonferroni)
    from scipy.stats import hypergeom
    assert float(res["p_value"][0]) == pytest.approx(3 * hypergeom.pmf(5, 16, 6, 5))
    assert res["detector"].values.tolist() == [True, True]
    assert res["score"].sel(label="grey").values.tolist() == [0.0, 0.0]
    assert res.attrs["fraction_detectors"] == 1.0


def test_annotation_with_precomputed_zarr_activations(tmp_path):
    subject, stim = _colour_net(), _redness_probe()
    acts = subject.activations(stim, "1", store=tmp_path / "a.zarr", batch_size=4, progress=False)
    a = dissection.annotate_units(subject, stim, "1", top_k=5, activations=acts, progress=False)
    b = dissection.annotate_units(subject, stim, "1", top_k=5, progress=False)
    xr.testing.assert_equal(a["score"], b["score"])


def test_annotation_bad_inputs(tmp_path):
    subject, stim = _colour_net(), _redness_probe()
    with pytest.raises(StimulusError, match="no metadata field 'kind'"):
        dissection.annotate_units(subject, stim, "1", labels="kind", progress=False)
    with pytest.raises(InvalidDataError, match="k=50 is larger than the 16"):
        dissection.annotate_units(subject, stim, "1", top_k=50, progress=False)
    with pytest.raises(UnknownNameError, match="Unknown layer"):
        dissection.annotate_units(subject, stim, "fc9", progress=False)
    with pytest.raises(InvalidDataError, match="no entry for label"):
        dissection.annotate_units(subject, stim, "1", groups={"red": "warm"}, progress=False)


def test_labelled_stimuli_from_folder_and_table(tmp_path):
    for label, colour in (("red", RED), ("blue", BLUE)):
        (tmp_path / "f" / label).mkdir(parents=True)
        for j in range(3):
            Image.fromarray(np.full((8, 8, 3), colour, dtype=np.uint8)).save(tmp_path / "f" / label / f"{label}{j}.png")
    stim = concepts.labelled_stimuli(tmp_path / "f", groups={"red": "warm", "blue": "cold"})
    assert sorted(set(stim.metadata["label"].tolist())) == ["blue", "red"]
    assert set(stim.metadata["group"].tolist()) == {"warm", "cold"}
    table = tmp_path / "f" / "labels.csv"
    table.write_text("file,label,group\nred/red0.png,red,warm\nblue/blue0.png,blue;sky,cold\n")
    multi = concepts.labelled_stimuli(table)
    assert multi.metadata["label_blue"].tolist() == [0, 1] and multi.metadata["label_sky"].tolist() == [0, 1]
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nx.png,red\n")
    with pytest.raises(InvalidDataError, match=r"lacks column\(s\) \['file'\]"):
        concepts.labelled_stimuli(bad)


def test_summary_and_figures(tmp_path):
    subject = _colour_net()
    res = dissection.dissect(subject, _squares(), "1", quantile=0.125, progress=False)
    summary = dissection.detector_summary({"relu": res})
    assert summary["n_detectors"].sel(layer="relu", category="color").item() == 2
    assert summary["n_unique"].item() == 2
    fig = dissection.plot_detector_counts(summary)
    nc.plotting.save_figure(fig, tmp_path / "bars.png")
    cards = dissection.plot_unit_cards(subject, _squares(), res, [0, 1], n_images=2)
    assert len(cards.axes) == 4 and "red" in cards.axes[0].get_title(loc="left")
    ann = dissection.annotate_units(subject, _redness_probe(), "1", top_k=5, progress=False)
    cards = dissection.plot_unit_cards(subject, _redness_probe(), ann, [0], n_images=3)
    # the red unit's maximum sits on a cell of the square; its 2x2 receptive field lies inside rows/cols 2..5
    box = cards.axes[0].patches[0]
    assert box.get_width() == 2 and 1.5 <= box.get_x() <= 3.5
    import matplotlib.pyplot as plt

    plt.close("all")


# ---------------------------------------------------------------- real network
@pytest.mark.slow
def test_lite0_colour_detectors_early_category_detectors_late(lite0, stimuli92, mirror, tmp_path):
    # one forward pass of the 92 images into a zarr store serves all three analyses
    acts = lite0.activations(stimuli92, ["stem", "stage7", "head"], store=tmp_path / "a.zarr", progress=False)
    # colours of the 92 images' pixels: the stem is mostly colour detectors, stage7 few
    early = dissection.dissect(lite0, stimuli92, "stem", size=(112, 112), activations=acts["stem"], progress=False)
    late = dissection.dissect(lite0, stimuli92, "stage7", size=(56, 56), activations=acts["stage7"], progress=False)
    assert early.attrs["fraction_detectors"] > 0.5
    assert np.median(early["label_iou"].values) > 5 * np.median(late["label_iou"].values)
    # fLoc categories: the head has face, place and object detectors, the stem none
    floc = nc.load_stimuli("floc")
    floc = floc.subset(np.concatenate([np.arange(c * 144, c * 144 + 15) for c in range(6)]))
    ann = dissection.annotate_units(lite0, floc, ["stem", "head"], top_k=10, progress=False)
    head = ann["head"]
    assert head.attrs["fraction_detectors"] > 0.05 > ann["stem"].attrs["fraction_detectors"]
    assert set(head["label_type"].values[head["detector"].values].tolist()) == {"face", "place", "object"}
    ann92 = dissection.annotate_units(lite0, stimuli92, "head", top_k=10, activations=acts["head"], progress=False)
    assert ann92.attrs["n_detectors"] >= 1


def _saturating_net() -> nc.VirtualSubject:
    """The colour net with weights x 100 and ReLU6: red cells saturate at exactly 6."""
    net = _colour_net().model
    with torch.no_grad():
        net[0].weight.mul_(100)
    return nc.VirtualSubject(nn.Sequential(net[0], nn.ReLU6()), preprocessing=IDENTITY, name="saturating")


def test_saturated_threshold_is_inclusive():
    res = dissection.dissect(_saturating_net(), _squares(), "1", quantile=0.05, progress=False)
    # 4 values of 6 among 32: position 31 * 0.95 = 29.45 lies among the 6s -> T = 6 = the maximum.
    # Upsampled profile 6 * [0, .25, .75, 1, 1, .75, .25, 0]: >= 6 at pixels 3..4 -> 4 px of 16 red.
    assert res["threshold_inclusive"].values.tolist() == [True, True]
    assert float(res["iou"].sel(channel=0, concept="red")) == pytest.approx(4 / 16)


def test_annotation_ties_are_not_broken_by_stimulus_order():
    images = np.full((12, 8, 8, 3), GREY, dtype=np.uint8)
    images[:8, 2:6, 2:6] = RED  # 8 red images: channel 0 ties at 6 on all of them
    labels = ["x"] * 4 + ["y"] * 4 + ["z"] * 4
    stim = nc.load_stimuli(images, metadata={"label": labels})
    res = dissection.annotate_units(_saturating_net(), stim, "1", top_k=4, progress=False)
    assert int(res["n_tied"][0]) == 8
    tops = {tuple(sorted(dissection.annotate_units(_saturating_net(), stim, "1", top_k=4, seed=s, progress=False)
                         ["top_index"].values[0])) for s in range(4)}
    assert len(tops) > 1 and all(max(t) < 8 for t in tops)


def test_cli_dissect_annotate_and_pixel(tmp_path, capsys):
    from neurocnn.cli import main

    for label, colour in (("red", RED), ("blue", BLUE)):
        (tmp_path / "probe" / label).mkdir(parents=True)
        for j in range(3):
            img = np.full((64, 64, 3), GREY, dtype=np.uint8)
            img[8 * j:8 * j + 30, 10:40] = colour
            Image.fromarray(img).save(tmp_path / "probe" / label / f"{label}{j}.png")
    from neurocnn.models import get_spec, load_model

    weights = tmp_path / "squeeze.pth"
    torch.save(load_model(get_spec("squeezenet1_1"), weights=None)[0].state_dict(), weights)
    common = ["--model", "squeezenet1_1", "--weights", str(weights), "--layers", "pool1", "--no-progress",
              "--stimuli", str(tmp_path / "probe")]
    assert main(["dissect", *common, "--method", "annotate", "--top-k", "3", "--out", str(tmp_path / "a")]) == 0
    ann = nc.load(tmp_path / "a" / "annotate_pool1.nc")
    assert set(ann["label"].values.tolist()) == {"red", "blue"} and ann.attrs["k"] == 3
    assert main(["dissect", *common, "--method", "pixel", "--size", "28", "--out", str(tmp_path / "p")]) == 0
    pix = nc.load(tmp_path / "p" / "pixel_pool1.nc")
    assert pix.sizes["concept"] == 11 and (tmp_path / "p" / "pixel_detectors.png").is_file()
    assert "detectors" in capsys.readouterr().out
    assert main(["dissect", *common, "--out", str(tmp_path / "a"), "--top-k", "3"]) == 2  # exists, no --overwrite
    assert main(["dissect", *common[:4], "--layers", "pool11", "--out", str(tmp_path / "x")]) == 2
    assert "Unknown layer 'pool11'" in capsys.readouterr().err


def test_unit_responses_are_spatial_maxima():
    subject = _colour_net()
    stim = _redness_probe()
    acts = subject.activations(stim, "1", progress=False)
    resp = dissection.unit_responses(subject, stim, "1", batch_size=3, progress=False)
    np.testing.assert_allclose(resp.values, acts.max(("y", "x")).values)
    assert resp.dims == ("stimulus", "channel") and resp.attrs["layer"] == "1"


def test_dissect_matches_an_independent_loop_on_random_broden(tmp_path):
    """Random net, images and masks; some images lack a category: the NetDissect-Lite tally, in numpy."""
    rng = np.random.default_rng(3)
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 5, 3, stride=2, padding=1), nn.ReLU())
    subject = nc.VirtualSubject(net, preprocessing=IDENTITY, name="random")
    (tmp_path / "images").mkdir()
    rows, n = [], 6
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "images" / f"i{i}.png")
        seg = np.zeros((12, 12, 3), dtype=np.uint8)
        seg[..., 0] = rng.choice([0, 1, 2, 3], size=(12, 12))
        Image.fromarray(seg).save(tmp_path / "images" / f"i{i}_obj.png")
        rows.append({"image": f"i{i}.png", "object": f"i{i}_obj.png" if i % 3 else "", "scene": str(4 + i % 2) if i < 4 else ""})
    with open(tmp_path / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "label.csv").write_text("number,name,category\n1,a,object(1)\n2,b,object(1)\n3,c,object(1)\n"
                                        "4,s1,scene(1)\n5,s2,scene(1)\n")
    res = dissection.dissect(subject, concepts.load_broden(tmp_path), "1", quantile=0.1, progress=False)

    x = torch.stack([torch.from_numpy(np.array(Image.open(tmp_path / "images" / f"i{i}.png"))).permute(2, 0, 1)
                     for i in range(n)]).float() / 255
    with torch.no_grad():
        feats = net(x).numpy()
    t = np.quantile(feats.astype(np.float64).transpose(1, 0, 2, 3).reshape(5, -1), 0.9, axis=1)
    up = F_interp(feats, 12)
    active = up > t[None, :, None, None]
    both, units_cat, labels = np.zeros((5, 5)), np.zeros((5, 2)), np.zeros(5)
    for i, r in enumerate(rows):
        if r["object"]:
            seg = np.asarray(Image.open(tmp_path / "images" / r["object"]))[..., 0].astype(int)
            units_cat[:, 0] += active[i].sum((1, 2))
            for c in (1, 2, 3):
                labels[c - 1] += (seg == c).sum()
                both[:, c - 1] += (active[i] & (seg == c)).sum((1, 2))
        if r["scene"]:
            c = int(r["scene"])
            units_cat[:, 1] += active[i].sum((1, 2))
            labels[c - 1] += 144
            both[:, c - 1] += active[i].sum((1, 2))
    union = units_cat[:, [0, 0, 0, 1, 1]] + labels - both
    np.testing.assert_allclose(res["threshold"].values, t, rtol=1e-12)
    np.testing.assert_allclose(res["iou"].values, both / union, rtol=1e-10)
    np.testing.assert_allclose(res["concept_area"].values, labels)


def F_interp(feats: np.ndarray, side: int) -> np.ndarray:
    import torch.nn.functional as F

    return F.interpolate(torch.from_numpy(feats), size=(side, side), mode="bilinear", align_corners=False).numpy()
