"""Tests of neurocnn.lesions: selectivity, FDR selection, node/synapse KO, TMS, sham."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from torch import nn

import neurocnn as nc
from neurocnn import lesions
from neurocnn.exceptions import InvalidDataError, LayerMismatchError, NoSelectiveUnitsError, StimulusError, UnknownNameError

IDENTITY = nc.Preprocessing(resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class Tiny(nn.Module):
    """conv1 channel 0 = top-minus-bottom luminance edge ("face"), channel 1 = its negative
    ("place"), channel 2 = luminance; then ReLU, a 1x1 mixing conv, global pooling, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, kernel_size=(2, 1))
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(3, 2, kernel_size=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            w = torch.zeros(3, 3, 2, 1)
            w[0, :, 0, 0], w[0, :, 1, 0] = 1 / 3, -1 / 3
            w[1] = -w[0]
            w[2, :, :, 0] = 1 / 6
            self.conv1.weight.copy_(w)
            self.conv1.bias.zero_()
            self.conv2.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 1.0]])[:, :, None, None])
            self.conv2.bias.copy_(torch.tensor([0.1, -0.2]))
            self.fc.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flat(self.pool(self.conv2(self.relu(self.conv1(x))))))


def _localizer(n: int = 24, size: int = 8, seed: int = 0) -> nc.StimulusSet:
    """Faces: bright top half; places: bright bottom half; objects: uniform; same mean luminance."""
    rng = np.random.default_rng(seed)
    images, domain = [], []
    for kind in ("face", "place", "object"):
        for _ in range(n):
            img = np.full((size, size), 0.5)
            contrast = rng.uniform(0.2, 0.4)
            if kind == "face":
                img[: size // 2] += contrast
                img[size // 2 :] -= contrast
            elif kind == "place":
                img[: size // 2] -= contrast
                img[size // 2 :] += contrast
            img = img + rng.normal(0, 0.01, img.shape)
            images.append(np.repeat(img.clip(0, 1)[..., None], 3, axis=-1))
            domain.append(kind)
    return nc.StimulusSet(np.stack(images).astype(np.float32), metadata={"domain": domain, "category": domain}, name="toy")


@pytest.fixture()
def tiny() -> nc.VirtualSubject:
    return nc.VirtualSubject(Tiny(), preprocessing=IDENTITY, name="tiny")


@pytest.fixture(scope="module")
def toy() -> nc.StimulusSet:
    return _localizer()


def _state(subject: nc.VirtualSubject) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in subject.model.state_dict().items()}


def _assert_identical(subject: nc.VirtualSubject, before: dict[str, torch.Tensor]) -> None:
    after = subject.model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    for name, p in subject.model.named_parameters():
        assert torch.equal(p, before[name])
    for name, b in subject.model.named_buffers():
        assert torch.equal(b, before[name])


# ------------------------------------------------------------------ selectivity
def test_selectivity_finds_the_face_and_place_channels(tiny, toy):
    face = lesions.selectivity(tiny, toy, "conv1", target="face")
    assert face.sizes == {"channel": 3}
    assert lesions.select_units(face).values.tolist() == [0]
    place = lesions.selectivity(tiny, toy, "conv1", target="place")
    assert lesions.select_units(place).values.tolist() == [1]
    assert face.attrs["n_target"] == 24 and face.attrs["n_against"] == 48
    assert face["selectivity_index"].values[0] > 0.9
    # oracle: Welch t of the spatial-mean responses
    acts = tiny.activations(toy, "conv1", progress=False).values.astype(np.float64).mean((2, 3))
    is_face = np.asarray(toy.metadata["domain"]) == "face"
    ref = scipy.stats.ttest_ind(acts[is_face], acts[~is_face], equal_var=False, alternative="greater")
    np.testing.assert_allclose(face["t"].values[:2], ref.statistic[:2], rtol=1e-6)
    np.testing.assert_allclose(face["p_value"].values[:2], ref.pvalue[:2], rtol=1e-6, atol=1e-300)
    np.testing.assert_array_equal(face["p"].values, face["p_value"].values)  # the deprecated 0.1 name
    assert "p_value" in face["p"].attrs["deprecated"]


def test_unit_level_selectivity_has_unit_coords(tiny, toy):
    sel = lesions.selectivity(tiny, toy, "conv1", target="face", level="unit")
    assert sel.sizes["unit"] == 3 * 7 * 8
    chosen = lesions.select_units(sel).values
    c, y = sel["unit_channel"].values[chosen], sel["unit_y"].values[chosen]
    # position-specific: the edge units on the boundary row, and luminance units in the top half
    true = {(0, 3), (2, 0), (2, 1), (2, 2)}
    hits = [(ci, yi) in true for ci, yi in zip(c.tolist(), y.tolist())]
    assert sum(hits) == 4 * 8  # all of them found
    assert len(hits) - sum(hits) <= 0.1 * len(hits)  # noise-only units pass at most at the FDR rate


@pytest.mark.parametrize("name", ["p_value", "p"])  # "p": selectivity saved by neurocnn 0.1
def test_fdr_matches_scipy(name):
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(0, 1e-4, 20), rng.uniform(0, 1, 200)])
    np.testing.assert_allclose(lesions._bh_adjust(p), scipy.stats.false_discovery_control(p), rtol=1e-12)
    import xarray as xr

    sel = xr.Dataset({name: ("channel", p), "t": ("channel", np.ones_like(p))}, attrs={"target": "face", "layer": "x"})
    chosen = lesions.select_units(sel, q=0.05)
    expected = np.flatnonzero(scipy.stats.false_discovery_control(p) <= 0.05)
    assert sorted(chosen.values.tolist()) == expected.tolist()
    assert chosen.attrs["n_selected"] == expected.size and chosen.attrs["n_total"] == p.size


def test_top_n_and_no_selective_units(tiny, toy):
    import xarray as xr

    flat = xr.Dataset({"p": ("channel", np.full(5, 0.5)), "t": ("channel", np.zeros(5))}, attrs={"target": "object", "layer": "x"})
    with pytest.raises(NoSelectiveUnitsError, match="object-selective.*0.5"):
        lesions.select_units(flat)
    face = lesions.selectivity(tiny, toy, "conv1", target="face")
    assert lesions.select_units(face, method="top_n", n=1).values.tolist() == [0]
    with pytest.raises(InvalidDataError):
        lesions.select_units(face, method="top_n")
    with pytest.raises(UnknownNameError, match="fdr"):
        lesions.select_units(face, method="fdrr")


def test_missing_categories_raise(tiny, toy):
    with pytest.raises(StimulusError, match="house"):
        lesions.selectivity(tiny, toy, "conv1", target="house")
    with pytest.raises(StimulusError, match="no metadata field"):
        lesions.selectivity(tiny, toy, "conv1", by="genre")


def test_split_localizer_is_stratified_disjoint_and_seeded(toy):
    a, b = lesions.split_localizer(toy, 0.5, seed=1)
    assert not set(a.ids) & set(b.ids) and len(a) + len(b) == len(toy)
    assert all((np.asarray(a.metadata["category"]) == c).sum() == 12 for c in ("face", "place", "object"))
    a2, _ = lesions.split_localizer(toy, 0.5, seed=1)
    a3, _ = lesions.split_localizer(toy, 0.5, seed=2)
    assert a.ids.tolist() == a2.ids.tolist() != a3.ids.tolist()
    with pytest.raises(InvalidDataError):
        lesions.split_localizer(toy, 1.5)


# ------------------------------------------------------------------ node knockout
def test_knockout_zeroes_output_and_downstream_by_hand(tiny, toy):
    x = tiny.preprocess(toy.subset([0, 30]))
    before = _state(tiny)
    intact = tiny.forward_layers(x, ["conv1"])["conv1"]
    with lesions.knockout(tiny, "conv1", [0]) as les:
        out = tiny.forward_layers(x, ["conv1", "conv2"])
        assert lesions.active_lesions(tiny) == [les]
    assert torch.all(out["conv1"][:, 0] == 0)
    assert torch.equal(out["conv1"][:, 1:], intact[:, 1:])
    h = torch.relu(intact).clone()
    h[:, 0] = 0
    w, b = tiny.model.conv2.weight[:, :, 0, 0], tiny.model.conv2.bias
    by_hand = torch.einsum("oc,nchw->nohw", w, h) + b[None, :, None, None]
    torch.testing.assert_close(out["conv2"], by_hand)
    assert not lesions.active_lesions(tiny)
    assert not tiny.module("conv1")._forward_hooks
    _assert_identical(tiny, before)
    assert torch.equal(tiny.forward_layers(x, ["conv1"])["conv1"], intact)


def test_unit_knockout_and_nesting(tiny, toy):
    x = tiny.preprocess(toy.subset([0]))
    before = _state(tiny)
    with lesions.knockout(tiny, "conv1", [5], level="unit"):
        with lesions.knockout(tiny, "conv1", [2]):
            out = tiny.forward_layers(x, ["conv1"])["conv1"]
            assert len(lesions.active_lesions(tiny)) == 2
        inner_gone = tiny.forward_layers(x, ["conv1"])["conv1"]
    assert out.flatten()[5] == 0 and torch.all(out[:, 2] == 0)
    assert inner_gone.flatten()[5] == 0 and torch.any(inner_gone[:, 2] != 0)
    _assert_identical(tiny, before)


def test_bad_units_and_fractions(tiny):
    with pytest.raises(InvalidDataError, match="out of range"):
        lesions.knockout(tiny, "conv1", [3])
    with pytest.raises(InvalidDataError, match="out of range"):
        lesions.knockout(tiny, "conv1", [-1])
    with pytest.raises(InvalidDataError, match="repeated"):
        lesions.knockout(tiny, "conv1", [1, 1])
    with pytest.raises(InvalidDataError, match=r"\[0, 1\]"):
        lesions.synapse_knockout(tiny, "conv1", 1.2)
    with pytest.raises(InvalidDataError, match="out of range"):
        lesions.synapse_knockout(tiny, "conv2", 0.5, units=[2])
    with pytest.raises(InvalidDataError, match="no convolution"):
        lesions.synapse_knockout(tiny, "relu", 0.5)
    with pytest.raises(UnknownNameError):
        lesions.knockout(tiny, "conv9", [0])


# ------------------------------------------------------------------ synapse knockout
@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.5, 1.0])
def test_synapse_knockout_zeroes_exact_count_and_restores(fraction):
    subject = nc.VirtualSubject("alexnet", weights=None, seed=0)
    before = _state(subject)
    weight = subject.module("conv3").weight
    n = weight.numel()
    with lesions.synapse_knockout(subject, "conv3", fraction, seed=4) as les:
        zeroed = before["features.6.weight"].ne(0) & weight.eq(0)
        assert int(zeroed.sum()) == round(fraction * n) == les.attrs()["lesion_n_zeroed"]
        assert torch.equal(subject.module("conv3").bias, before["features.6.bias"])
        assert torch.equal(subject.module("conv4").weight, before["features.8.weight"])
        pattern = weight.eq(0).clone()
    with lesions.synapse_knockout(subject, "conv3", fraction, seed=4):
        assert torch.equal(weight.eq(0), pattern)
    _assert_identical(subject, before)


def test_synapse_knockout_units_bias_seed_and_exception():
    subject = nc.VirtualSubject(Tiny(), preprocessing=IDENTITY, name="tiny")
    before = _state(subject)
    with pytest.raises(RuntimeError, match="boom"):
        with lesions.synapse_knockout(subject, "conv2", 1.0, units=[1], include_bias=True):
            w = subject.module("conv2").weight
            assert torch.all(w[1] == 0) and torch.equal(w[0], before["conv2.weight"][0])
            assert subject.module("conv2").bias[1] == 0
            raise RuntimeError("boom")
    _assert_identical(subject, before)
    big = nc.VirtualSubject("alexnet", weights=None, seed=0)
    masks = []
    for seed in (0, 1):
        with lesions.synapse_knockout(big, "conv3", 0.5, seed=seed):
            masks.append(big.module("conv3").weight.eq(0).clone())
    assert not torch.equal(masks[0], masks[1])


@pytest.mark.slow
def test_synapse_knockout_of_a_block_pools_its_convolutions(lite0):
    before = _state(lite0)
    block = lite0.module("stage4")
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    total = sum(m.weight.numel() for m in convs)
    with lesions.synapse_knockout(lite0, "stage4", 0.25, seed=0) as les:
        zero = sum(int(m.weight.eq(0).sum()) for m in convs)
        assert les.attrs()["lesion_n_weights"] == total
        assert zero >= round(0.25 * total)
    _assert_identical(lite0, before)


# ------------------------------------------------------------------ TMS and sham
def test_tms_noise_sd_matches_amplitude(tiny, toy):
    before = _state(tiny)
    acts = tiny.activations(toy, "conv1", progress=False).values
    sd = acts.transpose(1, 0, 2, 3).reshape(3, -1).std(1, ddof=1)
    x = tiny.preprocess(toy)
    intact = tiny.forward_layers(x, ["conv1"])["conv1"]
    les = lesions.tms(tiny, "conv1", [0, 2], amplitude=2.0, stimuli=toy, seed=5)
    np.testing.assert_allclose(les.sd, sd, rtol=1e-5)
    with les:
        noisy = tiny.forward_layers(x, ["conv1"])["conv1"]
    diff = (noisy - intact).transpose(0, 1).reshape(3, -1)
    assert torch.all(diff[1] == 0)
    for c in (0, 2):
        assert float(diff[c].std()) == pytest.approx(2.0 * sd[c], rel=0.05)
    with les:
        again = tiny.forward_layers(x, ["conv1"])["conv1"]
    assert torch.equal(again, noisy)  # reseeded on entry
    with lesions.tms(tiny, "conv1", [0, 2], amplitude=2.0, sd=sd, seed=6):
        other = tiny.forward_layers(x, ["conv1"])["conv1"]
    assert not torch.equal(other, noisy)
    _assert_identical(tiny, before)
    with pytest.raises(InvalidDataError, match="exactly one"):
        lesions.tms(tiny, "conv1", [0])
    with pytest.raises(InvalidDataError, match="amplitude"):
        lesions.tms(tiny, "conv1", [0], amplitude=-1, sd=sd)


def test_sham_and_random_units_exclude_selected(tiny):
    units = lesions.random_units(40, 100, exclude=range(50), seed=0)
    assert units.size == 40 and units.min() >= 50 and np.unique(units).size == 40
    assert np.array_equal(units, lesions.random_units(40, 100, exclude=range(50), seed=0))
    with pytest.raises(InvalidDataError, match="left"):
        lesions.random_units(60, 100, exclude=range(50))
    les = lesions.sham(tiny, "conv1", 2, exclude=[0], seed=3)
    assert les.units.tolist() == [1, 2] and les.attrs()["lesion"] == "sham_knockout"


def test_lesioned_copy_leaves_original_untouched(tiny, toy):
    before = _state(tiny)
    x = tiny.preprocess(toy.subset([0]))
    copy_ = lesions.lesioned_copy(tiny, "synapse_knockout", "conv2", 1.0)
    assert torch.all(copy_.module("conv2").weight == 0)
    assert copy_.weights_id != tiny.weights_id
    ko = lesions.lesioned_copy(tiny, "knockout", "conv1", [0])
    assert torch.all(ko.forward_layers(x, ["conv1"])["conv1"][:, 0] == 0)
    assert torch.any(tiny.forward_layers(x, ["conv1"])["conv1"][:, 0] != 0)
    _assert_identical(tiny, before)


@pytest.mark.slow
def test_layer_at_resolution_picks_conv3_depth(lite0):
    assert lesions.layer_at_resolution(lite0) == "stage4"
    alex = nc.VirtualSubject("alexnet", weights=None, seed=0)
    assert lesions.layer_at_resolution(alex) == "conv3"


@pytest.mark.slow
def test_real_model_face_channels_are_found(lite0, mirror):
    floc = nc.load_stimuli("floc")
    sel_set, _ = lesions.split_localizer(floc, 0.06, seed=0)
    sel = lesions.selectivity(lite0, sel_set, "stage6", target="face")
    chosen = lesions.select_units(sel, q=0.05)
    assert 0 < chosen.attrs["n_selected"] < sel.sizes["channel"]
    assert np.all(sel["t"].values[chosen.values] > 0)


# ------------------------------------------------------------------ exit order, layer checks, recalibration
def _weights_under(subject, before, masks):
    """Expected conv1 weight: the pristine weight with the union of ``masks`` zeroed."""
    expected = before["conv1.weight"].clone()
    for m in masks:
        expected[m] = 0
    return expected


@pytest.mark.parametrize("order", [(0, 1, 2), (0, 2, 1), (1, 0, 2), (2, 1, 0)])
def test_overlapping_synapse_knockouts_can_exit_in_any_order(tiny, order):
    before = _state(tiny)
    weight = tiny.module("conv1").weight
    lesion_list = [lesions.synapse_knockout(tiny, "conv1", f, seed=s) for f, s in ((0.5, 0), (0.5, 1), (0.3, 2))]
    pristine_nonzero = before["conv1.weight"].ne(0)
    for les in lesion_list:
        les.__enter__()
    remaining = list(range(3))
    for i in order:
        lesion_list[i].__exit__(None, None, None)
        remaining.remove(i)
        fresh = nc.VirtualSubject(Tiny(), preprocessing=IDENTITY, name="tiny")
        alone = []
        for j in remaining:
            with lesions.synapse_knockout(fresh, "conv1", lesion_list[j].fraction, seed=lesion_list[j].seed):
                alone.append(fresh.module("conv1").weight.eq(0) & pristine_nonzero)
        assert torch.equal(weight, _weights_under(tiny, before, alone)), f"after exiting {i}, remaining {remaining}"
    _assert_identical(tiny, before)  # the reported bug left weights at zero here


def test_hook_and_synapse_lesions_on_one_layer_exit_out_of_order(tiny, toy):
    x = tiny.preprocess(toy.subset([0, 30]))
    before = _state(tiny)
    intact = tiny.model(x)
    ko = lesions.knockout(tiny, "conv1", [0]).__enter__()
    syn = lesions.synapse_knockout(tiny, "conv1", 0.5, seed=3).__enter__()
    ko.__exit__(None, None, None)  # the outer one leaves first
    assert lesions.active_lesions(tiny) == [syn]
    syn.__exit__(None, None, None)
    _assert_identical(tiny, before)
    assert torch.equal(tiny.model(x), intact)


def test_units_selected_in_one_layer_are_refused_for_another(tiny, toy):
    sel = lesions.selectivity(tiny, toy, "conv1", target="face")
    units = lesions.select_units(sel, method="top_n", n=1)
    assert units.attrs["layer"] == "conv1" and units.attrs["level"] == "channel" and units.attrs["n_total"] == 3
    with pytest.raises(LayerMismatchError, match=r"selected in layer 'conv1' but the lesion is in layer 'conv2'"):
        lesions.knockout(tiny, "conv2", units)
    with pytest.raises(LayerMismatchError, match="layer 'conv1'"):
        lesions.tms(tiny, "conv2", units, sd=np.ones(2))
    with pytest.raises(LayerMismatchError, match="layer 'conv1'"):
        lesions.synapse_knockout(tiny, "conv2", 0.5, units=units)
    with pytest.raises(LayerMismatchError, match="level"):
        lesions.knockout(tiny, "conv1", units, level="unit")
    with pytest.raises(LayerMismatchError, match="layer 'conv1'"):
        lesions.sham(tiny, "conv2", 1, exclude=units)
    unit_sel = lesions.select_units(lesions.selectivity(tiny, toy, "conv1", target="face", level="unit"), method="top_n", n=2)
    with pytest.raises(LayerMismatchError, match="level"):
        lesions.knockout(tiny, "conv1", unit_sel)
    assert isinstance(LayerMismatchError("x"), ValueError)
    with lesions.knockout(tiny, "conv1", units) as les:  # the right layer works, plain indices too
        assert les.units.tolist() == [0]
    with lesions.knockout(tiny, "conv2", [0]):
        pass


def test_matched_random_units_follow_the_lesions_mean_activation():
    mean = np.linspace(0, 10, 200)
    target = np.arange(190, 200)  # the 10 most active
    sham = lesions.matched_random_units(target, mean, exclude=np.arange(0, 5), seed=0, n_neighbours=3)
    assert sham.size == 10 and not np.intersect1d(sham, target).size
    assert abs(mean[sham].mean() - mean[target].mean()) < 1.0  # unmatched random units: ~4.8 lower
    assert np.array_equal(sham, lesions.matched_random_units(target, mean, exclude=np.arange(0, 5), seed=0, n_neighbours=3))
    with pytest.raises(InvalidDataError, match="pool"):
        lesions.matched_random_units(np.arange(150), mean, exclude=np.arange(150, 200))


def _matched_by_full_sort(units, mean, seed, k):
    """The matching written out: for each unit (in the seeded random order) sort every free pool unit by distance."""
    target = np.sort(np.asarray(units))
    pool = np.setdiff1d(np.arange(mean.size), target)
    rng = np.random.default_rng(seed)
    free = np.ones(pool.size, bool)
    chosen = []
    for u in rng.permutation(target):
        cand = np.flatnonzero(free)
        near = cand[np.argsort(np.abs(mean[pool[cand]] - mean[u]), kind="stable")[:k]]
        near = near[np.argsort(mean[pool[near]], kind="stable")]  # numbered in activation order
        pick = near[rng.integers(near.size)]
        free[pick] = False
        chosen.append(pool[pick])
    return np.sort(chosen)


def test_matched_random_units_draw_among_the_k_nearest_free_units():
    rng = np.random.default_rng(0)
    for trial in range(100):
        n = int(rng.integers(5, 300))
        mean = rng.normal(size=n)
        units = rng.choice(n, int(rng.integers(1, n // 3 + 2)), replace=False)
        # k = 1: the nearest free unit, no choice left, so the result is the written-out matching's
        np.testing.assert_array_equal(lesions.matched_random_units(units, mean, seed=trial, n_neighbours=1),
                                      _matched_by_full_sort(units, mean, trial, 1))
    # k > 1, continuous activations: the same random stream over the same k nearest, so the same draws
    mean = rng.normal(size=500)
    units = rng.choice(500, 60, replace=False)
    for k in (2, 7, 25):
        np.testing.assert_array_equal(lesions.matched_random_units(units, mean, seed=3, n_neighbours=k),
                                      _matched_by_full_sort(units, mean, 3, k))


def test_matched_random_units_with_ties_and_a_large_layer():
    rng = np.random.default_rng(1)
    mean = np.maximum(rng.normal(size=20_000), 0)  # ReLU: half the units tie at 0
    units = rng.choice(20_000, 4_000, replace=False)
    sham = lesions.matched_random_units(units, mean, seed=0)
    assert sham.size == 4_000 and np.unique(sham).size == 4_000 and not np.intersect1d(sham, units).size
    assert abs(mean[sham].mean() - mean[units].mean()) < 0.05 * mean.std()
    assert (mean[sham] == 0).sum() == pytest.approx((mean[units] == 0).sum(), rel=0.05)


class WithBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv0 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(4)
        self.conv1 = nn.Conv2d(4, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 5, 1)
        self.bn2 = nn.BatchNorm2d(5)
        with torch.no_grad():
            for bn in (self.bn0, self.bn1, self.bn2):
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(self.bn0(self.conv0(x)))))))


def test_recalibrate_reestimates_bn_after_the_lesion_and_restores(toy):
    subject = nc.VirtualSubject(WithBN(), preprocessing=IDENTITY, name="bn")
    before = _state(subject)
    recal = toy.subset(range(0, 72, 3))
    x = subject.preprocess(recal)
    with lesions.knockout(subject, "conv1", [1, 4], recalibrate=recal, batch_size=64) as les:
        m = subject.model
        assert les.attrs()["lesion_recalibrate_n_images"] == 24
        # oracle: batch statistics of the lesioned conv1 output (unbiased variance, as torch keeps)
        with torch.no_grad():
            h = m.conv1(m.bn0(m.conv0(x)))
            h[:, [1, 4]] = 0
        np.testing.assert_allclose(m.bn1.running_mean, h.mean((0, 2, 3)), atol=1e-5)
        np.testing.assert_allclose(m.bn1.running_var, h.var((0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-6)
        assert torch.equal(m.bn0.running_mean, before["bn0.running_mean"])  # before the lesion: untouched
        assert not torch.equal(m.bn2.running_mean, before["bn2.running_mean"])
        assert m.bn1.momentum == 0.1 and not m.bn1.training
    _assert_identical(subject, before)
    with lesions.synapse_knockout(subject, "conv0", 0.5, recalibrate=recal):
        assert not torch.equal(subject.model.bn0.running_mean, before["bn0.running_mean"])
    _assert_identical(subject, before)
    with lesions.knockout(subject, "conv1", [0]):
        assert torch.equal(subject.model.bn1.running_mean, before["bn1.running_mean"])  # off by default
    with pytest.raises(InvalidDataError, match="on which images"):
        lesions.knockout(subject, "conv1", [0], recalibrate=True)


def test_two_recalibrating_lesions_exit_out_of_order(toy):
    subject = nc.VirtualSubject(WithBN(), preprocessing=IDENTITY, name="bn")
    before = _state(subject)
    recal = subject.preprocess(toy.subset(range(0, 72, 3)))
    a = lesions.knockout(subject, "conv1", [1], recalibrate=recal).__enter__()
    b = lesions.synapse_knockout(subject, "conv2", 0.5, seed=1, recalibrate=recal).__enter__()
    a.__exit__(None, None, None)
    remaining = _state(subject)
    reference = nc.VirtualSubject(WithBN(), preprocessing=IDENTITY, name="bn")
    with lesions.synapse_knockout(reference, "conv2", 0.5, seed=1, recalibrate=recal):
        expected = _state(reference)
    for key in expected:
        torch.testing.assert_close(remaining[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)
    b.__exit__(None, None, None)
    _assert_identical(subject, before)


def test_matched_sham_lesion(tiny):
    mean = np.array([5.0, 1.0, 4.9])
    les = lesions.sham(tiny, "conv1", 1, matched_to=[0], mean_activation=mean, exclude=[], seed=0)
    assert les.units.tolist() in ([1], [2]) and les.matched and les.kind == "sham_knockout"
    assert lesions.sham(tiny, "conv1", 1, matched_to=[0], mean_activation=mean, seed=0, exclude=[1]).units.tolist() == [2]
    with pytest.raises(InvalidDataError, match="as many units"):
        lesions.sham(tiny, "conv1", 2, matched_to=[0], mean_activation=mean)
    with pytest.raises(InvalidDataError, match="mean_activation"):
        lesions.sham(tiny, "conv1", 1, matched_to=[0])
