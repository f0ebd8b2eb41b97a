"""Tests of neurocnn.tasks: pair task, readout, lesioned evaluation, interaction test, sweeps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

import neurocnn as nc
from neurocnn import lesions, tasks
from neurocnn.exceptions import InvalidDataError, ShapeMismatchError, StimulusError, UnknownNameError

IDENTITY = nc.Preprocessing(resize=None, crop=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(64, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flat(self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))))


@pytest.fixture(scope="module")
def small() -> nc.VirtualSubject:
    return nc.VirtualSubject(Small(), preprocessing=IDENTITY, name="small")


@pytest.fixture(scope="module")
def images() -> nc.StimulusSet:
    rng = np.random.default_rng(0)
    n = 16
    base = rng.uniform(0, 1, (2 * n, 4, 4))
    imgs = np.kron(base, np.ones((4, 4)))[..., None].repeat(3, -1)
    category = ["face"] * n + ["house"] * n
    return nc.StimulusSet(imgs.astype(np.float32), metadata={"category": category}, name="toy")


@pytest.fixture(scope="module")
def task(images) -> tasks.PairTask:
    return tasks.make_pair_task(images, ("face", "house"), n_train=80, n_test=40, view_size=16, seed=1)


@pytest.fixture(scope="module")
def readout(small, task) -> tasks.Readout:
    return tasks.fit_readout(small, task, "conv2", seed=0)


def _state(subject):
    return {k: v.detach().clone() for k, v in subject.model.state_dict().items()}


def test_pair_task_has_exact_counts_and_disjoint_images(task, images):
    pairs, views = task.pairs, task.views
    for split, n in (("train", 80), ("test", 40)):
        for cat in ("face", "house"):
            sel = (pairs["split"] == split) & (pairs["category"] == cat)
            assert int(sel.sum()) == n // 2
            assert int((sel & (pairs["same"] == 1)).sum()) == n // 4
    img_a = views["image"].values[pairs["view_a"].values]
    img_b = views["image"].values[pairs["view_b"].values]
    same = pairs["same"].values == 1
    assert np.all(img_a[same] == img_b[same]) and np.all(img_a[~same] != img_b[~same])
    assert np.all(pairs["view_a"].values != pairs["view_b"].values)
    train_imgs = set(img_a[pairs["split"].values == "train"]) | set(img_b[pairs["split"].values == "train"])
    test_imgs = set(img_a[pairs["split"].values == "test"]) | set(img_b[pairs["split"].values == "test"])
    assert not train_imgs & test_imgs
    keys = {tuple(sorted(p)) for p in zip(pairs["view_a"].values, pairs["view_b"].values)}
    assert len(keys) == pairs.sizes["pair"]  # no pair twice
    again = tasks.make_pair_task(images, ("face", "house"), n_train=80, n_test=40, view_size=16, seed=1)
    xr.testing.assert_identical(again.pairs, task.pairs)
    other = tasks.make_pair_task(images, ("face", "house"), n_train=80, n_test=40, view_size=16, seed=2)
    assert not other.pairs.equals(task.pairs)


def test_pair_task_bad_input(images):
    with pytest.raises(StimulusError, match="car"):
        tasks.make_pair_task(images, ("face", "car"), n_train=80, n_test=40)
    with pytest.raises(InvalidDataError, match="divisible"):
        tasks.make_pair_task(images, ("face", "house"), n_train=81, n_test=40)
    with pytest.raises(InvalidDataError, match="fraction"):
        tasks.make_pair_task(images, ("face", "house"), n_train=80, n_test=40, test_fraction=1.5)
    with pytest.raises(InvalidDataError, match="cannot make"):
        tasks.make_pair_task(images, ("face", "house"), n_train=40000, n_test=40)


def test_render_views_are_deterministic_augmentations(task):
    a = tasks.render_views(task, [0, 1, 2])
    assert a.shape == (3, 3, 16, 16) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, tasks.render_views(task, [0, 1, 2]))
    assert not torch.equal(a[0], a[1])


def test_readout_learns_the_toy_task_and_evaluate_reports_cis(small, task, readout):
    res = tasks.evaluate(small, task, readout, seed=3)
    assert res.sizes == {"category": 2, "pair": 40}
    assert res.attrs["overall_accuracy"] == pytest.approx(res["correct"].values.mean())
    assert np.all(res["ci_low"] <= res["accuracy"]) and np.all(res["accuracy"] <= res["ci_high"])
    assert res.attrs["lesion"] == "none" and res.attrs["seed"] == 3
    np.testing.assert_allclose(res["accuracy"].values, [res["correct"].values[res["pair_category"].values == c].mean() for c in ("face", "house")])
    assert res["ci_low"].equals(tasks.evaluate(small, task, readout, seed=3)["ci_low"])


@pytest.mark.parametrize(
    "make",
    [
        lambda s: lesions.knockout(s, "conv2", [0, 3, 5]),
        lambda s: lesions.knockout(s, "conv1", [1]),
        lambda s: lesions.synapse_knockout(s, "conv2", 0.5, seed=2),
        lambda s: lesions.knockout(s, "relu1", [0, 1, 2, 3, 4, 5, 6]),
    ],
)
def test_partial_recompute_equals_full_forward(small, task, readout, make):
    before = _state(small)
    engine = readout._engine
    with make(small):
        partial = engine.outputs(small)
        images = engine.images
        full = tasks._pool(small.forward_layers(images, ["conv2"])["conv2"])
    np.testing.assert_allclose(partial, full, rtol=1e-5, atol=1e-6)
    assert not np.allclose(partial, engine.intact)
    for k, v in small.model.state_dict().items():
        assert torch.equal(v, before[k])
    np.testing.assert_array_equal(engine.outputs(small), engine.intact)


def test_lesion_after_readout_layer_changes_nothing(small, task, readout):
    with lesions.knockout(small, "fc", [0]):
        np.testing.assert_array_equal(readout._engine.outputs(small), readout._engine.intact)


def test_evaluate_detects_foreign_weight_changes(small, task, readout):
    with torch.no_grad():
        small.model.fc.weight[0, 0] += 1
    try:
        with pytest.raises(InvalidDataError, match="weights changed"):
            tasks.evaluate(small, task, readout)
    finally:
        with torch.no_grad():
            small.model.fc.weight[0, 0] -= 1


def _fake(correct: np.ndarray, category: np.ndarray, name: str) -> xr.Dataset:
    cats = ["face", "house"]
    return xr.Dataset(
        {"correct": ("pair", correct), "accuracy": ("category", [correct[category == c].mean() for c in cats])},
        coords={"pair": np.arange(correct.size), "pair_category": ("pair", category), "category": cats},
        attrs={"lesion": name},
    )


def test_interaction_test_against_hand_computed_2x2():
    rng = np.random.default_rng(0)
    category = np.repeat(["face", "house"], 100)
    a = (rng.uniform(size=200) < np.where(category == "face", 0.6, 0.9)).astype(int)  # face KO
    b = (rng.uniform(size=200) < np.where(category == "face", 0.9, 0.6)).astype(int)  # place KO
    res = tasks.interaction_test(_fake(a, category, "face_ko"), _fake(b, category, "place_ko"), n_permutations=2000, seed=0)
    f = category == "face"
    dod = (b[f].mean() - a[f].mean()) - (b[~f].mean() - a[~f].mean())
    assert float(res["dod"]) == pytest.approx(dod)
    assert float(res["dod_ci_low"]) < dod < float(res["dod_ci_high"])
    assert float(res["p_permutation"]) < 0.01 and float(res["p_logit"]) < 0.01
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    cells = [(b, ~f), (b, f), (a, ~f), (a, f)]
    expected = logit(b[f].mean()) - logit(b[~f].mean()) - logit(a[f].mean()) + logit(a[~f].mean())
    se = np.sqrt(sum(1 / (m.sum() * c[m].mean() * (1 - c[m].mean())) for c, m in cells))
    assert float(res["logit_interaction"]) == pytest.approx(expected, rel=1e-6)
    assert float(res["logit_z"]) == pytest.approx(expected / se, rel=1e-6)
    null = tasks.interaction_test(_fake(a, category, "x"), _fake(a, category, "y"), n_permutations=500)
    assert float(null["dod"]) == 0 and float(null["p_permutation"]) == 1.0
    with pytest.raises(ShapeMismatchError):
        tasks.interaction_test(_fake(a, category, "x"), _fake(a, category[::-1], "y"))


def _draw(rng, category, p_face, p_house, name="sham"):
    return _fake((rng.uniform(size=category.size) < np.where(category == "face", p_face, p_house)).astype(int), category, name)


def test_sham_interaction_test_counts_every_pairing_by_hand():
    rng = np.random.default_rng(1)
    category = np.repeat(["face", "house"], 40)
    a, b = _draw(rng, category, 0.5, 0.9, "face_ko"), _draw(rng, category, 0.9, 0.6, "place_ko")
    shams_a = [_draw(rng, category, 0.8, 0.8) for _ in range(5)]
    shams_b = [_draw(rng, category, 0.8, 0.8) for _ in range(3)]
    res = tasks.sham_interaction_test(a, b, shams_a, shams_b)
    effect = lambda ev: float(ev["accuracy"][0] - ev["accuracy"][1])  # noqa: E731
    dod = [[effect(y) - effect(x) for y in [b, *shams_b]] for x in [a, *shams_a]]  # every (A draw, B draw) pairing
    observed = dod[0][0]
    assert float(res["dod"]) == pytest.approx(observed)
    assert float(res["dod"]) == pytest.approx(float(tasks.interaction_test(a, b, n_permutations=10)["dod"]))
    assert float(res["p_sham"]) == pytest.approx(sum(d >= observed - 1e-12 for row in dod for d in row) / 24)
    assert float(res["p_sham_floor"]) == pytest.approx(1 / 24)
    null = [d for row in dod[1:] for d in row[1:]]
    assert float(res["sham_dod_mean"]) == pytest.approx(np.mean(null))
    assert float(res["sham_dod_sd"]) == pytest.approx(np.std(null, ddof=1))
    assert res["effect_a"].values[0] == pytest.approx(effect(a)) and res["effect_b"].sizes["draw_b"] == 4


def test_sham_interaction_test_is_valid_under_the_null_and_reaches_its_floor():
    # lesions exchangeable with their shams: P(p <= alpha) <= alpha; a lesion beyond all shams reaches the floor
    rng = np.random.default_rng(2)
    category = np.repeat(["face", "house"], 30)
    ps = []
    for _ in range(400):
        a_draws = [_draw(rng, category, 0.7, 0.8) for _ in range(5)]
        b_draws = [_draw(rng, category, 0.8, 0.7) for _ in range(5)]
        ps.append(float(tasks.sham_interaction_test(a_draws[0], b_draws[0], a_draws[1:], b_draws[1:])["p_sham"]))
    ps = np.asarray(ps)
    for alpha in (0.1, 0.2, 0.5):
        assert np.mean(ps <= alpha) <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / ps.size)
    a, b = _draw(rng, category, 0.0, 1.0), _draw(rng, category, 1.0, 0.0)
    res = tasks.sham_interaction_test(a, b, [_draw(rng, category, 0.8, 0.8) for _ in range(20)],
                                      [_draw(rng, category, 0.8, 0.8) for _ in range(20)])
    assert float(res["p_sham"]) == pytest.approx(1 / 441) == pytest.approx(float(res["p_sham_floor"]))


@pytest.mark.parametrize("n_tests", [1, 2, 30, 32, 40, 100])
def test_n_sham_for_is_the_fewest_draws_whose_floor_passes_bh(n_tests):
    n = tasks.n_sham_for(n_tests)
    assert 1 / (n + 1) ** 2 <= 0.05 / n_tests
    if n > 1:
        assert 1 / n**2 > 0.05 / n_tests
    assert tasks.n_sham_for(40) == 28 and tasks.n_sham_for(40, alpha=0.1) == 19


def test_sham_interaction_test_bad_input():
    category = np.repeat(["face", "house"], 10)
    rng = np.random.default_rng(3)
    a = _draw(rng, category, 0.5, 0.5)
    with pytest.raises(InvalidDataError, match="at least one sham"):
        tasks.sham_interaction_test(a, a, [], [a])
    other = _fake(np.ones(12, int), np.repeat(["face", "house"], 6), "x")
    with pytest.raises(ShapeMismatchError, match="same test pairs"):
        tasks.sham_interaction_test(a, a, [a], [other])


def test_ko_sweep_classification_and_pairs(small, task, readout, images):
    before = _state(small)
    sweep = tasks.ko_sweep(small, images, ["conv1", "conv2"], [0.0, 0.5, 1.0], n_repeats=2, seed=0)
    assert sweep.dims == ("kind", "layer", "fraction", "repeat") and sweep.shape == (2, 2, 3, 2)
    np.testing.assert_array_equal(sweep.sel(fraction=0.0).values, 1.0)
    x = small.preprocess(images)
    with torch.no_grad():
        top1 = small.model(x).argmax(1)
        h = small.model.relu2(small.model.conv2(torch.zeros(x.shape[0], 8, 16, 16)))  # conv1 all knocked out
        dead = small.model.fc(small.model.flat(small.model.pool(h))).argmax(1)
    expected = float((dead == top1).float().mean())
    np.testing.assert_allclose(sweep.sel(kind="node", layer="conv1", fraction=1.0).values, expected)
    pairs = tasks.ko_sweep(small, task, ["conv2"], [0.0, 1.0], readout=readout, kinds=("synapse",))
    intact = tasks.evaluate(small, task, readout).attrs["overall_accuracy"]
    assert float(pairs.sel(fraction=0.0).item()) == pytest.approx(intact)
    for k, v in small.model.state_dict().items():
        assert torch.equal(v, before[k])
    fig = tasks.plot_sweep(sweep)
    assert len(fig.axes) == 2
    with pytest.raises(InvalidDataError, match=r"\[0, 1\]"):
        tasks.ko_sweep(small, images, ["conv1"], [1.5])
    with pytest.raises(UnknownNameError, match="node"):
        tasks.ko_sweep(small, images, ["conv1"], [0.5], kinds=("nodes",))
    with pytest.raises(InvalidDataError, match="readout"):
        tasks.ko_sweep(small, task, ["conv1"], [0.5])


@pytest.mark.slow
def test_readout_beats_chance_on_pretrained_lite0(lite0, mirror):
    floc = nc.load_stimuli("floc")
    task = tasks.make_pair_task(floc, ("face", "house"), n_train=160, n_test=80, seed=0)
    readout = tasks.fit_readout(lite0, task)
    res = tasks.evaluate(lite0, task, readout)
    assert res.attrs["overall_accuracy"] > 0.7


def test_interaction_logit_is_nan_under_separation():
    category = np.repeat(["face", "house"], 20)
    a = np.ones(40, int)
    b = np.r_[np.ones(20, int), np.zeros(10, int), np.ones(10, int)]
    res = tasks.interaction_test(_fake(a, category, "a"), _fake(b, category, "b"), n_permutations=200)
    assert np.isnan(float(res["p_logit"])) and float(res["dod"]) == pytest.approx(0.5)


# ------------------------------------------------------------------ BN recalibration, readout choices, d'
class SmallBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(16, 5)
        with torch.no_grad():
            for bn in (self.bn1, self.bn2):
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu1(self.bn1(self.conv1(x)))
        return self.fc(self.flat(self.pool(self.relu2(self.bn2(self.conv2(h))))))


@pytest.fixture(scope="module")
def bn_setup(task):
    subject = nc.VirtualSubject(SmallBN(), preprocessing=IDENTITY, name="smallbn")
    return subject, tasks.fit_readout(subject, task, "relu2", seed=0)


def test_recalibrated_lesion_partial_recompute_equals_full_forward(bn_setup, images):
    subject, readout = bn_setup
    before = _state(subject)
    recal = images.subset(range(0, 32, 2))
    engine = readout._engine
    for make in (lambda r: lesions.synapse_knockout(subject, "conv2", 0.5, seed=1, recalibrate=r),
                 lambda r: lesions.knockout(subject, "conv1", [0, 1, 2, 3], recalibrate=r)):
        with make(None):
            fixed = engine.outputs(subject)
        with make(recal) as les:
            partial = engine.outputs(subject)
            full = tasks._pool(subject.forward_layers(engine.images, ["relu2"])["relu2"])
            assert les.attrs()["lesion_recalibrate_n_images"] == 16
        np.testing.assert_allclose(partial, full, rtol=1e-5, atol=1e-6)
        assert not np.allclose(partial, fixed)  # recalibration changed the lesioned outputs
        for k, v in subject.model.state_dict().items():
            assert torch.equal(v, before[k]), k
    sweep = tasks.ko_sweep(subject, images, ["conv2"], [0.5], kinds=("synapse",), recalibrate=recal)
    assert sweep.attrs["recalibrate"] == "batchnorm statistics on 16 held-out images"
    assert tasks.ko_sweep(subject, images, ["conv2"], [0.5], kinds=("synapse",)).attrs["recalibrate"] == "none"


def test_retrained_readout_matches_sklearn_on_lesioned_features(small, task, readout):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    les = lesions.knockout(small, "conv2", list(range(8)))
    res = tasks.evaluate(small, task, readout, les, readout_training="retrained")
    assert res.attrs["readout_training"] == "retrained"
    assert tasks.evaluate(small, task, readout, les).attrs["readout_training"] == "intact"
    # oracle: sklearn fit on full-forward features of the lesioned network
    pairs = task.pairs
    train = pairs.isel(pair=np.flatnonzero(pairs["split"].values == "train"))
    test = pairs.isel(pair=np.flatnonzero(pairs["split"].values == "test"))

    def feats(split):
        views = np.unique(np.r_[split["view_a"].values, split["view_b"].values])
        with les:
            f = tasks._pool(small.forward_layers(small.preprocessing(tasks.render_views(task, views)), ["conv2"])["conv2"])
        a, b = np.searchsorted(views, split["view_a"].values), np.searchsorted(views, split["view_b"].values)
        return tasks._pair_features(f, a, b)

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=readout.C, max_iter=5000)).fit(feats(train), train["same"].values)
    expected = (clf.predict(feats(test)) == test["same"].values).astype(int)
    np.testing.assert_array_equal(res["correct"].values, expected)
    intact = tasks.evaluate(small, task, readout, readout_training="retrained")
    assert intact.attrs["overall_accuracy"] == tasks.evaluate(small, task, readout).attrs["overall_accuracy"]
    with pytest.raises(UnknownNameError, match="retrained"):
        tasks.evaluate(small, task, readout, readout_training="retrain")


def test_readout_d_prime_by_hand(small, task, readout):
    res = tasks.evaluate(small, task, readout)
    for cat in ("face", "house"):
        m = res["pair_category"].values == cat
        s = res["decision"].values[m & (res["same"].values == 1)]
        d = res["decision"].values[m & (res["same"].values == 0)]
        expected = (s.mean() - d.mean()) / np.sqrt((np.var(s, ddof=1) + np.var(d, ddof=1)) / 2)
        assert float(res["d_prime"].sel(category=cat)) == pytest.approx(expected, rel=1e-10)
    # decision > 0 is exactly the "same" prediction
    pred = (res["decision"].values > 0).astype(int)
    np.testing.assert_array_equal(pred == res["same"].values, res["correct"].values.astype(bool))
