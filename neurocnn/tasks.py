"""Readout tasks run on an intact or lesioned subject.

The seed task (Korotaev; after Pitcher et al. 2009 and Dilks et al. 2013): pairs of
face images and pairs of house images, "same" (two different augmented views of one
image) or "different" (views of two different images). A logistic-regression readout
on pair features of a late layer is trained on the intact network; its accuracy per
pair type is then measured under lesions (:mod:`neurocnn.lesions`), and the double
dissociation is tested with :func:`interaction_test`. :func:`ko_sweep` runs
Cheney-style knockout sweeps (accuracy vs fraction knocked out, per layer, node vs
synapse KO) for the pair task or for ImageNet classification.

Speed: intact features of the test images are cached, and under a lesion only the
part of the network from the earliest lesioned layer on is recomputed (the network
is split with ``torch.fx``; a model that cannot be traced falls back to full forward
passes with the lesion hooks, which gives the same numbers more slowly); both live in
:mod:`neurocnn.forward`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.stats
import torch
import torchvision.transforms.v2.functional as TF
import xarray as xr
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from ._validation import check_fraction, check_option, check_positive_int, numpy_rng
from .exceptions import InvalidDataError, ShapeMismatchError, StimulusError
from .forward import CachedOutputs as _Engine
from .forward import pool_features as _pool  # noqa: F401 - the pooling of readout features
from .lesions import (
    Lesion,
    active_lesions,
    knockout,
    layer_size,
    random_units,
    synapse_knockout,
)
from .stimuli import StimulusSet, load_stimuli
from .subject import VirtualSubject

__all__ = [
    "PairTask",
    "Readout",
    "make_pair_task",
    "render_views",
    "fit_readout",
    "evaluate",
    "interaction_test",
    "sham_interaction_test",
    "n_sham_for",
    "classification_agreement",
    "ko_sweep",
    "plot_sweep",
    "plot_accuracy",
]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

_CATEGORY_FIELDS = ("category", "domain")
_MAX_VIEWS = 20


# ------------------------------------------------------------------ the pair task
@dataclass(frozen=True)
class PairTask:
    """Same/different image pairs built by :func:`make_pair_task`.

    Attributes
    ----------
    stimuli : StimulusSet
        The images the pairs are made of.
    views : xarray.Dataset
        One row per augmented view (dim ``view``): ``image`` (index into ``stimuli``),
        ``top``, ``left``, ``size`` (crop, as fractions of the image side), ``flip``,
        ``brightness``, ``contrast``, ``split``.
    pairs : xarray.Dataset
        One row per pair (dim ``pair``): ``view_a``, ``view_b``, ``same`` (1/0),
        ``category``, ``split`` ("train"/"test").
    view_size : int
        Side of the rendered views in pixels.
    seed : int
    """

    stimuli: StimulusSet
    views: xr.Dataset
    pairs: xr.Dataset
    view_size: int
    seed: int

    @property
    def categories(self) -> list[str]:
        """The pair categories, in the order given to :func:`make_pair_task`."""
        return list(self.pairs.attrs["categories"])

    def attrs(self) -> dict[str, Any]:
        """Task description for result attrs."""
        return {
            "task": "same/different pairs",
            "task_categories": self.categories,
            "task_seed": self.seed,
            "task_n_train": int((self.pairs["split"] == "train").sum()),
            "task_n_test": int((self.pairs["split"] == "test").sum()),
            "task_stimulus_set": self.stimuli.name,
        }


def _category_mask(stim: StimulusSet, name: str) -> np.ndarray:
    for key in _CATEGORY_FIELDS:
        if key in stim.metadata and (np.asarray(stim.metadata[key]).astype(str) == name).any():
            return np.asarray(stim.metadata[key]).astype(str) == name
    values = {k: sorted(set(np.asarray(stim.metadata[k]).astype(str).tolist())) for k in _CATEGORY_FIELDS if k in stim.metadata}
    raise StimulusError(
        f"No image of {stim.name!r} has category or domain {name!r} (available: {values or 'no category metadata'}). "
        "Use e.g. nc.load_stimuli('floc') with categories=('face', 'house')."
    )


def _views_needed(n_images: int, n_same: int, n_diff: int) -> int:
    for v in range(2, _MAX_VIEWS + 1):
        if n_images * math.comb(v, 2) >= n_same and math.comb(n_images, 2) * v * v >= n_diff:
            return v
    raise InvalidDataError(
        f"{n_images} images cannot make {n_same} distinct same pairs and {n_diff} distinct different pairs "
        f"with up to {_MAX_VIEWS} views each; use fewer pairs or more images."
    )


def make_pair_task(
    stimuli: Any,
    categories: Sequence[str] = ("face", "house"),
    *,
    n_train: int = 2400,
    n_test: int = 480,
    test_fraction: float = 0.25,
    view_size: int = 224,
    min_scale: float = 0.6,
    seed: int = 0,
) -> PairTask:
    """Build a same/different identity task from pairs of augmented image views.

    Each category's images are split into train and test images (disjoint). Every
    image gets ``v`` random views (crop of side ``U(min_scale, 1)`` of the image at a
    random position, horizontal flip with p = 0.5, brightness and contrast factors
    ``U(0.75, 1.25)``), with ``v`` the smallest number (>= 2) that gives enough distinct
    pairs. A "same" pair is two different views of one image; a "different" pair is a
    view each of two different images. Pairs are split equally over categories and
    over same/different, and no pair occurs twice.

    Parameters
    ----------
    stimuli : StimulusSet or str
        Images with ``category`` or ``domain`` metadata (e.g. fLoc).
    categories : sequence of str
        Values of ``category`` (looked up first) or ``domain``; fLoc: ``"face"``
        (adult and child faces) and ``"house"``.
    n_train, n_test : int
        Numbers of pairs; each must be divisible by ``2 * len(categories)``.
    test_fraction : float
        Fraction of each category's images used for test pairs.
    view_size : int
        Side of rendered views (the subject's preprocessing is applied after).
    min_scale : float
        Smallest crop side as a fraction of the image side.
    seed : int

    Returns
    -------
    PairTask

    Raises
    ------
    StimulusError
        A category has no images, or fewer than 2 train or test images.
    InvalidDataError
        Counts not divisible, fractions out of range, too few images for the pairs.

    Examples
    --------
    >>> task = make_pair_task(nc.load_stimuli("floc"), ("face", "house"), n_train=400, n_test=160)  # doctest: +SKIP
    """
    stim = load_stimuli(stimuli)
    categories = [categories] if isinstance(categories, str) else list(categories)
    n_train, n_test = check_positive_int("n_train", n_train), check_positive_int("n_test", n_test)
    per = 2 * len(categories)
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if n % per:
            raise InvalidDataError(f"{name}={n} must be divisible by 2 x {len(categories)} categories = {per}.")
    test_fraction = check_fraction("test_fraction", test_fraction)
    min_scale = check_fraction("min_scale", min_scale)
    check_positive_int("view_size", view_size)
    rng = numpy_rng(seed)
    masks = {c: _category_mask(stim, c) for c in categories}
    used = np.flatnonzero(np.any(list(masks.values()), axis=0))
    sub = stim.subset(used)
    views: dict[str, list] = {k: [] for k in ("image", "top", "left", "size", "flip", "brightness", "contrast", "split")}
    pairs: dict[str, list] = {k: [] for k in ("view_a", "view_b", "same", "category", "split")}
    for cat in categories:
        images = rng.permutation(np.flatnonzero(masks[cat][used]))
        k_test = int(round(test_fraction * images.size))
        for split, imgs, n in (("train", images[k_test:], n_train), ("test", images[:k_test], n_test)):
            if imgs.size < 2:
                raise StimulusError(
                    f"Category {cat!r} has {imgs.size} {split} image(s); need at least 2 "
                    f"(it has {images.size} images; adjust test_fraction)."
                )
            n_same = n_diff = n // per
            v = _views_needed(imgs.size, n_same, n_diff)
            first = len(views["image"])
            size = rng.uniform(min_scale, 1.0, imgs.size * v)
            views["image"] += np.repeat(imgs, v).tolist()
            views["size"] += size.tolist()
            views["top"] += (rng.uniform(0, 1, size.size) * (1 - size)).tolist()
            views["left"] += (rng.uniform(0, 1, size.size) * (1 - size)).tolist()
            views["flip"] += rng.integers(0, 2, size.size).tolist()
            views["brightness"] += rng.uniform(0.75, 1.25, size.size).tolist()
            views["contrast"] += rng.uniform(0.75, 1.25, size.size).tolist()
            views["split"] += [split] * size.size
            iu = np.triu_indices(v, 1)
            same = rng.choice(imgs.size * iu[0].size, n_same, replace=False)
            img_i, comb = np.divmod(same, iu[0].size)
            a_same = first + img_i * v + iu[0][comb]
            b_same = first + img_i * v + iu[1][comb]
            ip = np.triu_indices(imgs.size, 1)
            diff = rng.choice(ip[0].size * v * v, n_diff, replace=False)
            pair_i, rest = np.divmod(diff, v * v)
            va, vb = np.divmod(rest, v)
            a_diff = first + ip[0][pair_i] * v + va
            b_diff = first + ip[1][pair_i] * v + vb
            order = rng.permutation(n_same + n_diff)
            pairs["view_a"] += np.concatenate([a_same, a_diff])[order].tolist()
            pairs["view_b"] += np.concatenate([b_same, b_diff])[order].tolist()
            pairs["same"] += np.r_[np.ones(n_same, int), np.zeros(n_diff, int)][order].tolist()
            pairs["category"] += [cat] * (n_same + n_diff)
            pairs["split"] += [split] * (n_same + n_diff)
    view_ds = xr.Dataset({k: ("view", np.asarray(v)) for k, v in views.items()}, coords={"view": np.arange(len(views["image"]))})
    view_ds["image_id"] = ("view", sub.ids[view_ds["image"].values])
    pair_ds = xr.Dataset(
        {k: ("pair", np.asarray(v)) for k, v in pairs.items()},
        coords={"pair": np.arange(len(pairs["same"]))},
        attrs={"categories": categories, "seed": seed, "min_scale": min_scale, "test_fraction": test_fraction},
    )
    return PairTask(stimuli=sub, views=view_ds, pairs=pair_ds, view_size=int(view_size), seed=int(seed))


def render_views(task: PairTask, views: Sequence[int] | np.ndarray) -> torch.Tensor:
    """Render augmented views as float images (N, 3, view_size, view_size) in [0, 1].

    Each source image is read once per call; the augmentation is deterministic given
    the task (its parameters were drawn by :func:`make_pair_task`).
    """
    idx = np.asarray(views, dtype=np.int64)
    table = task.views.isel(view=idx)
    out = torch.empty(idx.size, 3, task.view_size, task.view_size)
    images = table["image"].values
    for image in np.unique(images):
        img = task.stimuli.load(int(image))
        h, w = img.shape[-2:]
        for row in np.flatnonzero(images == image):
            v = table.isel(view=int(row))
            side = float(v["size"])
            crop = TF.resized_crop(
                img, int(round(float(v["top"]) * h)), int(round(float(v["left"]) * w)),
                max(1, int(round(side * h))), max(1, int(round(side * w))),
                [task.view_size, task.view_size], antialias=True,
            )
            if int(v["flip"]):
                crop = crop.flip(-1)
            mean = crop.mean()
            crop = (crop - mean) * float(v["contrast"]) + mean
            out[row] = (crop * float(v["brightness"])).clamp(0.0, 1.0)
    return out


# ------------------------------------------------------------------ readout
def _pair_features(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    return np.concatenate([np.abs(f[a] - f[b]), f[a] * f[b]], axis=1)


@dataclass
class Readout:
    """A same/different classifier on a layer's features, fit on the intact subject.

    Attributes
    ----------
    layer : str
        The readout layer (dotted name).
    classifier : sklearn estimator
        Standardization + logistic regression on ``[|f(a) - f(b)|, f(a) * f(b)]`` of
        L2-normalized, spatially averaged layer outputs.
    train_accuracy : float
    C : float
        The inverse regularization strength chosen by 5-fold CV on the training pairs.
    """

    layer: str
    classifier: Any
    train_accuracy: float
    C: float
    seed: int
    _engine: _Engine = field(repr=False)
    _test_views: np.ndarray = field(repr=False)
    _train_engine: _Engine | None = field(default=None, repr=False)
    _train_pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def attrs(self) -> dict[str, Any]:
        """Readout description for result attrs."""
        return {"readout_layer": self.layer, "readout_C": self.C, "readout_train_accuracy": self.train_accuracy,
                "readout_features": "|f(a)-f(b)|, f(a)*f(b) of L2-normalized spatial means", "readout_seed": self.seed}

    def retrained(self, subject: VirtualSubject) -> Any:
        """A classifier with the same C fit again on the training pairs under the lesions active on ``subject``.

        Models compensation (relearning after the lesion) rather than a fixed readout.
        """
        if self._train_engine is None or self._train_pairs is None:
            raise InvalidDataError("This readout does not keep its training features; fit it again with fit_readout().")
        a, b, y = self._train_pairs
        return _classifier(self.C).fit(_pair_features(self._train_engine.outputs(subject), a, b), y)


def _readout_layer(subject: VirtualSubject) -> str:
    layers = subject.default_layers
    return layers[-2] if len(layers) >= 2 else layers[-1]


def _preprocessed_views(subject: VirtualSubject, task: PairTask, views: np.ndarray, batch_size: int, progress: bool) -> torch.Tensor:
    chunks = []
    for i in tqdm(range(0, views.size, batch_size), desc="render views", disable=not progress, leave=False):
        chunks.append(subject.preprocessing(render_views(task, views[i : i + batch_size])))
    return torch.cat(chunks)


def _classifier(c: float) -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))


def fit_readout(
    subject: VirtualSubject,
    task: PairTask,
    layer: str | None = None,
    *,
    Cs: Sequence[float] = (0.01, 0.1, 1.0),
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = False,
) -> Readout:
    """Train the same/different readout on the intact subject's training pairs.

    Parameters
    ----------
    subject : VirtualSubject
    task : PairTask
    layer : str, optional
        Readout layer; default the penultimate default layer (AlexNet ``fc7``,
        EfficientNet-Lite0 ``head``). Maps are averaged over space.
    Cs : sequence of float
        Candidate inverse L2 strengths, chosen by 5-fold CV on training pairs.
    batch_size, seed, progress

    Returns
    -------
    Readout
        Also caches the intact test-view features used by :func:`evaluate`.
    """
    layer = subject.resolve_layer(layer or _readout_layer(subject))
    pairs = task.pairs
    train = pairs.isel(pair=np.flatnonzero(pairs["split"].values == "train"))
    test = pairs.isel(pair=np.flatnonzero(pairs["split"].values == "test"))
    train_views = np.unique(np.r_[train["view_a"].values, train["view_b"].values])
    test_views = np.unique(np.r_[test["view_a"].values, test["view_b"].values])
    train_engine = _Engine(subject, _preprocessed_views(subject, task, train_views, batch_size, progress), layer, batch_size, progress)
    f = train_engine.intact
    lookup = np.searchsorted(train_views, train["view_a"].values), np.searchsorted(train_views, train["view_b"].values)
    x = _pair_features(f, *lookup)
    y = train["same"].values
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    scores = [cross_val_score(_classifier(c), x, y, cv=folds).mean() for c in Cs]
    best = float(Cs[int(np.argmax(scores))])
    clf = _classifier(best).fit(x, y)
    engine = _Engine(subject, _preprocessed_views(subject, task, test_views, batch_size, progress), layer, batch_size, progress)
    return Readout(
        layer=layer, classifier=clf, train_accuracy=float(clf.score(x, y)), C=best, seed=int(seed),
        _engine=engine, _test_views=test_views, _train_engine=train_engine, _train_pairs=(*lookup, y),
    )


def _bootstrap_ci(correct: np.ndarray, n_bootstrap: int, ci: float, rng: np.random.Generator) -> tuple[float, float]:
    draws = rng.integers(0, correct.size, (n_bootstrap, correct.size))
    means = correct[draws].mean(1)
    return float(np.quantile(means, (1 - ci) / 2)), float(np.quantile(means, 1 - (1 - ci) / 2))


def evaluate(
    subject: VirtualSubject,
    task: PairTask,
    readout: Readout,
    lesion: Lesion | None = None,
    *,
    n_bootstrap: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    readout_training: Literal["intact", "retrained"] = "intact",
) -> xr.Dataset:
    """Accuracy of the readout on the test pairs, under ``lesion`` and any lesion already active.

    Parameters
    ----------
    subject : VirtualSubject
    task : PairTask
    readout : Readout
        From :func:`fit_readout` on the intact subject.
    lesion : Lesion, optional
        Entered for this evaluation (``evaluate(s, t, r, knockout(s, "conv3", units))``);
        lesions entered around the call with ``with`` count too.
    n_bootstrap : int
        Bootstrap resamples of test pairs (within category) for the CIs.
    ci : float
        Confidence level.
    seed : int
        Bootstrap seed.
    readout_training : {"intact", "retrained"}
        ``"intact"`` (default): the readout fit on the intact network; ``"retrained"``:
        fit again (same C) on the training pairs under the lesion (compensation).

    Returns
    -------
    xarray.Dataset
        ``accuracy``, ``ci_low``, ``ci_high``, ``n_pairs`` and readout ``d_prime``
        (decision values of same vs different pairs: (m_same - m_diff) / sqrt of the
        mean of their variances) over ``category``; per test pair ``correct``, ``same``
        and ``decision`` with a ``pair_category`` coord; attrs: lesion, readout
        (``readout_training``), task, seed, overall accuracy.

    Raises
    ------
    InvalidDataError
        The subject's weights changed outside neurocnn lesions since the readout was fit.
    """
    n_bootstrap = check_positive_int("n_bootstrap", n_bootstrap)
    ci = check_fraction("ci", ci)
    check_option("readout_training", readout_training, _READOUT_TRAINING)
    if lesion is not None:
        with lesion:
            return evaluate(subject, task, readout, n_bootstrap=n_bootstrap, ci=ci, seed=seed, readout_training=readout_training)
    lesions = active_lesions(subject)
    f = readout._engine.outputs(subject)
    test = task.pairs.isel(pair=np.flatnonzero(task.pairs["split"].values == "test"))
    a = np.searchsorted(readout._test_views, test["view_a"].values)
    b = np.searchsorted(readout._test_views, test["view_b"].values)
    classifier = _READOUT_TRAINING[readout_training](readout, subject, lesions)
    x = _pair_features(f, a, b)
    pred = classifier.predict(x)
    decision = classifier.decision_function(x)
    correct = (pred == test["same"].values).astype(np.int64)
    rng = numpy_rng(seed)
    cats = task.categories
    category = test["category"].values
    acc, lo, hi, n, dprime = [], [], [], [], []
    same = test["same"].values.astype(bool)
    for cat in cats:
        c = correct[category == cat]
        dprime.append(_d_prime(decision[(category == cat) & same], decision[(category == cat) & ~same]))
        acc.append(float(c.mean()))
        low, high = _bootstrap_ci(c, n_bootstrap, ci, rng)
        lo.append(low)
        hi.append(high)
        n.append(int(c.size))
    lesion_attrs: dict[str, Any] = {"lesion": "none"}
    for i, les in enumerate(lesions):
        lesion_attrs.update({k if i == 0 else f"{k}_{i}": v for k, v in les.attrs().items()})
    return xr.Dataset(
        {
            "accuracy": ("category", acc), "ci_low": ("category", lo), "ci_high": ("category", hi),
            "n_pairs": ("category", n), "d_prime": ("category", dprime),
            "correct": ("pair", correct), "same": ("pair", test["same"].values), "decision": ("pair", decision),
        },
        coords={"category": cats, "pair": test["pair"].values, "pair_category": ("pair", category)},
        attrs={
            **{k: v for k, v in subject.provenance(readout.layer).items() if k in ("model", "weights_sha256", "preprocessing", "neurocnn_version")},
            **readout.attrs(), **task.attrs(), **lesion_attrs, "readout_training": readout_training,
            "overall_accuracy": float(correct.mean()), "seed": int(seed), "n_bootstrap": n_bootstrap, "ci": ci,
        },
    )


def _d_prime(same: np.ndarray, diff: np.ndarray) -> float:
    """(mean_same - mean_diff) / sqrt((var_same + var_diff) / 2); NaN when undefined."""
    if same.size < 2 or diff.size < 2:
        return float("nan")
    pooled = np.sqrt((same.var(ddof=1) + diff.var(ddof=1)) / 2)
    return float((same.mean() - diff.mean()) / pooled) if pooled > 0 else float("nan")


def _intact_classifier(readout: Readout, subject: VirtualSubject, lesions: list[Lesion]) -> Any:
    return readout.classifier


def _retrained_classifier(readout: Readout, subject: VirtualSubject, lesions: list[Lesion]) -> Any:
    return readout.retrained(subject) if lesions else readout.classifier


_READOUT_TRAINING = {"intact": _intact_classifier, "retrained": _retrained_classifier}


def _logit_fit(x: np.ndarray, y: np.ndarray, n_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Unpenalized logistic regression by IRLS: coefficients and their standard errors."""
    beta = np.zeros(x.shape[1])
    for _ in range(n_iter):
        p = 1 / (1 + np.exp(-(x @ beta)))
        w = np.clip(p * (1 - p), 1e-10, None)
        hessian = x.T @ (x * w[:, None])
        step = np.linalg.solve(hessian, x.T @ (y - p))
        beta += step
        if np.max(np.abs(step)) < 1e-10:
            break
    p = 1 / (1 + np.exp(-(x @ beta)))
    cov = np.linalg.inv(x.T @ (x * np.clip(p * (1 - p), 1e-10, None)[:, None]))
    return beta, np.sqrt(np.diag(cov))


def _two_categories(a: xr.Dataset, *others: xr.Dataset) -> list[str]:
    """The 2 pair categories of evaluations that must share their test pairs (for the interaction tests)."""
    cats = [str(c) for c in a["category"].values]
    for ev in others:
        if (not np.array_equal(ev["pair"].values, a["pair"].values)
                or not np.array_equal(ev["pair_category"].values, a["pair_category"].values)
                or [str(c) for c in ev["category"].values] != cats):
            raise ShapeMismatchError("The evaluations must be of the same test pairs and categories (same task and readout).")
    if len(cats) != 2:
        raise ShapeMismatchError(f"The interaction test needs exactly 2 pair categories, got {cats}.")
    return cats


def interaction_test(
    a: xr.Dataset,
    b: xr.Dataset,
    *,
    n_permutations: int = 10000,
    n_bootstrap: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> xr.Dataset:
    """Test the double dissociation: lesion type x pair category on the same test pairs.

    With ``a`` the evaluation under lesion A (e.g. face-unit KO) and ``b`` under lesion
    B (e.g. place-unit KO), and categories (c1, c2) = ``a.category`` (e.g. face,
    house), the difference of differences is
    ``DoD = [acc_B(c1) - acc_A(c1)] - [acc_B(c2) - acc_A(c2)]``; a double dissociation
    in the predicted direction (A hurts c1, B hurts c2) makes it positive.

    - Permutation test: per pair ``d = correct_B - correct_A``; the category labels of
      ``d`` are shuffled ``n_permutations`` times (two-sided p, with the +1 correction).
    - Bootstrap CI of DoD resampling pairs within category.
    - Logistic regression ``correct ~ lesion * category`` on all 2 x n trials (IRLS,
      Wald z of the interaction; it ignores the pairing of trials, so it is the
      less exact of the two). NaN when a (lesion, category) cell is at 0% or 100%
      correct, where the logistic MLE does not exist.

    Returns
    -------
    xarray.Dataset
        ``accuracy`` (lesion, category) and scalars ``dod``, ``dod_ci_low``,
        ``dod_ci_high``, ``p_permutation``, ``logit_interaction``, ``logit_z``, ``p_logit``.

    Raises
    ------
    ShapeMismatchError
        If ``a`` and ``b`` were not evaluated on the same pairs, or there are not 2 categories.
    """
    cats = _two_categories(a, b)
    n_permutations, n_bootstrap = check_positive_int("n_permutations", n_permutations), check_positive_int("n_bootstrap", n_bootstrap)
    ci = check_fraction("ci", ci)
    rng = numpy_rng(seed)
    d = (b["correct"].values - a["correct"].values).astype(np.float64)
    is1 = a["pair_category"].values == cats[0]
    dod = d[is1].mean() - d[~is1].mean()
    n1 = int(is1.sum())
    perm = np.array([d[idx[:n1]].mean() - d[idx[n1:]].mean() for idx in (rng.permutation(d.size) for _ in range(n_permutations))])
    p_perm = (1 + np.sum(np.abs(perm) >= abs(dod) - 1e-12)) / (1 + n_permutations)
    d1, d2 = d[is1], d[~is1]
    boot = d1[rng.integers(0, d1.size, (n_bootstrap, d1.size))].mean(1) - d2[rng.integers(0, d2.size, (n_bootstrap, d2.size))].mean(1)
    y = np.r_[a["correct"].values, b["correct"].values].astype(np.float64)
    lesion_b = np.r_[np.zeros(d.size), np.ones(d.size)]
    cat2 = np.r_[~is1, ~is1].astype(np.float64)
    x = np.column_stack([np.ones_like(y), lesion_b, cat2, lesion_b * cat2])
    cells = [y[(lesion_b == i) & (cat2 == j)].mean() for i in (0, 1) for j in (0, 1)]
    if all(0 < c < 1 for c in cells):
        beta, se = _logit_fit(x, y)
        z = beta[3] / se[3]
    else:  # a cell at 0% or 100%: the logistic MLE does not exist (separation)
        beta, z = np.full(4, np.nan), np.nan
    acc = np.array([[a["accuracy"].sel(category=c).item() for c in cats], [b["accuracy"].sel(category=c).item() for c in cats]])
    names = [a.attrs.get("lesion_name", a.attrs.get("lesion", "A")), b.attrs.get("lesion_name", b.attrs.get("lesion", "B"))]
    if names[0] == names[1]:
        names = [f"A:{names[0]}", f"B:{names[1]}"]
    return xr.Dataset(
        {
            "accuracy": (("lesion", "category"), acc),
            "dod": dod, "dod_ci_low": float(np.quantile(boot, (1 - ci) / 2)), "dod_ci_high": float(np.quantile(boot, 1 - (1 - ci) / 2)),
            "p_permutation": float(p_perm), "logit_interaction": float(-beta[3]), "logit_z": float(-z),
            "p_logit": float(2 * scipy.stats.norm.sf(abs(z))) if np.isfinite(z) else np.nan,
        },
        coords={"lesion": names, "category": cats},
        attrs={"seed": int(seed), "n_permutations": n_permutations, "n_bootstrap": n_bootstrap, "ci": ci,
               "definition": "DoD = [acc_B(c1) - acc_A(c1)] - [acc_B(c2) - acc_A(c2)]; positive = predicted double dissociation",
               "logit_sign": "logit_interaction and logit_z are signed like DoD (log-odds)"},
    )


def _category_effect(ev: xr.Dataset, cats: list[str]) -> float:
    acc = ev["accuracy"]
    return float(acc.sel(category=cats[0]) - acc.sel(category=cats[1]))


def sham_interaction_test(
    a: xr.Dataset,
    b: xr.Dataset,
    shams_a: Sequence[xr.Dataset],
    shams_b: Sequence[xr.Dataset],
) -> xr.Dataset:
    """Test the double dissociation of lesions A and B against random lesions matched to each.

    Under the null hypothesis that lesion A's units are no different from random units
    matched to them (and B's likewise), ``a`` is exchangeable with the ``shams_a`` draws
    and ``b`` with the ``shams_b`` draws. The DoD of :func:`interaction_test` depends
    on one A evaluation and one B evaluation, ``DoD(i, j) = e_B[j] - e_A[i]`` with
    ``e = acc(c1) - acc(c2)``, so every pairing of an A evaluation (the lesion or one of
    its ``n_a`` shams) with a B evaluation is a draw from the null distribution. The
    p-value counts all ``(n_a + 1)(n_b + 1)`` pairings, the observed one included
    (a group-invariance test over permutations of the A and of the B draws: exact, one
    sided, valid for any draw distribution). Its floor is ``1 / ((n_a + 1)(n_b + 1))``,
    not ``1 / (n + 1)`` as with one DoD per pair of draws: 20 draws each reach 1/441.

    Parameters
    ----------
    a, b : xarray.Dataset
        :func:`evaluate` under lesion A and lesion B (same test pairs).
    shams_a, shams_b : sequence of xarray.Dataset
        :func:`evaluate` under random lesions matched to A and to B (at least one each).

    Returns
    -------
    xarray.Dataset
        Scalars ``dod``, ``p_sham`` (one sided: sham DoD >= observed), ``p_sham_floor``
        and the null's ``sham_dod_mean`` and ``sham_dod_sd`` (over sham-sham pairings);
        per draw ``effect_a`` over ``draw_a`` and ``effect_b`` over ``draw_b``
        (``acc(c1) - acc(c2)``; draw 0 = the lesion itself).

    Raises
    ------
    ShapeMismatchError
        If the evaluations are not of the same test pairs, or there are not 2 categories.
    InvalidDataError
        If either list of shams is empty.
    """
    shams_a, shams_b = list(shams_a), list(shams_b)
    if not shams_a or not shams_b:
        raise InvalidDataError("sham_interaction_test needs at least one sham evaluation for each lesion.")
    cats = _two_categories(a, b, *shams_a, *shams_b)
    e_a = np.array([_category_effect(ev, cats) for ev in (a, *shams_a)])
    e_b = np.array([_category_effect(ev, cats) for ev in (b, *shams_b)])
    dod_all = e_b[None, :] - e_a[:, None]  # rows: A draws, columns: B draws
    dod = dod_all[0, 0]
    null = dod_all[1:, 1:]
    n_pairings = dod_all.size
    return xr.Dataset(
        {
            "dod": float(dod), "p_sham": float(np.sum(dod_all >= dod - 1e-12) / n_pairings),
            "p_sham_floor": 1 / n_pairings, "sham_dod_mean": float(null.mean()),
            "sham_dod_sd": float(null.std(ddof=1)) if null.size > 1 else np.nan,
            "effect_a": ("draw_a", e_a), "effect_b": ("draw_b", e_b),
        },
        coords={"draw_a": np.arange(e_a.size), "draw_b": np.arange(e_b.size), "category": cats},
        attrs={"n_shams_a": len(shams_a), "n_shams_b": len(shams_b),
               "definition": "p = #{(i, j): e_B[j] - e_A[i] >= DoD} / ((n_a + 1)(n_b + 1)), draw 0 = the lesion; "
                             "e = acc(c1) - acc(c2)"},
    )


def n_sham_for(n_tests: int, alpha: float = 0.05) -> int:
    """Fewest sham draws per lesion with which one test alone can pass BH over ``n_tests`` tests.

    The p-value of :func:`sham_interaction_test` with ``n`` draws per lesion is at
    least ``1 / (n + 1)**2``, and the smallest Benjamini-Hochberg threshold over ``m``
    tests is ``alpha / m``; this returns the smallest ``n`` with
    ``1 / (n + 1)**2 <= alpha / m`` (28 for 40 tests at alpha 0.05).

    Parameters
    ----------
    n_tests : int
        Number of tests corrected together (e.g. the cells of a dissociation map).
    alpha : float
        FDR level.

    Returns
    -------
    int
    """
    n_tests = check_positive_int("n_tests", n_tests)
    alpha = check_fraction("alpha", alpha)
    return max(1, math.ceil(math.sqrt(n_tests / alpha)) - 1)


# ------------------------------------------------------------------ classification and sweeps
class _Classification:
    """Agreement of the (lesioned) network's top-1 with the intact network's top-1."""

    def __init__(self, subject: VirtualSubject, stimuli: Any, batch_size: int, progress: bool) -> None:
        stim = load_stimuli(stimuli)
        self.stimuli = stim
        images = torch.stack([subject.preprocessing(stim.load(i)) for i in range(len(stim))])
        self.engine = _Engine(subject, images, None, batch_size, progress)
        self.intact_top1 = self.engine.intact.argmax(1)

    def score(self, subject: VirtualSubject) -> float:
        return float((self.engine.outputs(subject).argmax(1) == self.intact_top1).mean())


def classification_agreement(subject: VirtualSubject, stimuli: Any, lesion: Lesion, *, batch_size: int = 32) -> float:
    """Fraction of ``stimuli`` whose top-1 class under ``lesion`` equals the intact network's top-1.

    Used as the classification measure where ground-truth ImageNet labels are not
    available (e.g. the 92-image set): intact agreement is 1 by definition.
    """
    task = _Classification(subject, stimuli, batch_size, False)
    with lesion:
        return task.score(subject)


def _node_lesion(subject: VirtualSubject, layer: str, fraction: float, seed: int, level: str, recalibrate: Any) -> Lesion:
    size = layer_size(subject, layer, level)  # type: ignore[arg-type]
    units = random_units(round(fraction * size), size, seed=seed)
    return knockout(subject, layer, units, level=level, recalibrate=recalibrate)  # type: ignore[arg-type]


def _synapse_lesion(subject: VirtualSubject, layer: str, fraction: float, seed: int, level: str, recalibrate: Any) -> Lesion:
    return synapse_knockout(subject, layer, fraction, seed=seed, recalibrate=recalibrate)


_SWEEP_KINDS = {"node": _node_lesion, "synapse": _synapse_lesion}


def ko_sweep(
    subject: VirtualSubject,
    task: PairTask | StimulusSet | str,
    layers: Sequence[str],
    fractions: Sequence[float],
    *,
    readout: Readout | None = None,
    kinds: Sequence[str] = ("node", "synapse"),
    level: Literal["channel", "unit"] = "channel",
    seed: int = 0,
    n_repeats: int = 1,
    batch_size: int = 32,
    progress: bool = False,
    recalibrate: Any = None,
    readout_training: Literal["intact", "retrained"] = "intact",
) -> xr.DataArray:
    """Cheney-style knockout sweep: accuracy vs fraction knocked out, per layer and kind.

    Parameters
    ----------
    subject : VirtualSubject
    task : PairTask or stimuli
        A pair task (needs ``readout``; measure = test-pair accuracy), or stimuli
        (measure = agreement of the top-1 class with the intact network's top-1).
    layers : sequence of str
    fractions : sequence of float
        Fractions in [0, 1] of channels (node KO: ``round(f * n_channels)`` random
        channels) or of weights into the layer (synapse KO).
    readout : Readout, optional
    kinds : sequence of {"node", "synapse"}
    level : {"channel", "unit"}
        Node-KO granularity.
    seed : int
        Repeat ``r`` uses seed ``seed + r`` for the random units / weights.
    n_repeats : int
    batch_size, progress
    recalibrate : stimuli or torch.Tensor, optional
        Held-out images on which BatchNorm statistics after each lesion are
        re-estimated (see :func:`neurocnn.lesions.knockout`); default off.
    readout_training : {"intact", "retrained"}
        Pair task only: see :func:`evaluate`.

    Returns
    -------
    xarray.DataArray
        ``accuracy`` with dims (kind, layer, fraction, repeat); attrs: measure, chance, seed.

    Raises
    ------
    InvalidDataError
        A fraction outside [0, 1]; a pair task without readout.
    """
    kinds = [check_option("knockout kind", k, _SWEEP_KINDS) for k in kinds]
    fractions = [check_fraction("fraction", f) for f in fractions]
    n_repeats = check_positive_int("n_repeats", n_repeats)
    dotted = [subject.resolve_layer(layer) for layer in layers]
    if isinstance(task, PairTask):
        if readout is None:
            raise InvalidDataError("A pair-task sweep needs the readout fit on the intact subject (readout=...).")
        measure, chance = "pair-task accuracy (test pairs)", 0.5

        def score() -> float:
            return float(evaluate(subject, task, readout, n_bootstrap=1, readout_training=readout_training).attrs["overall_accuracy"])
        extra = {**readout.attrs(), **task.attrs(), "readout_training": readout_training}
    else:
        clf = _Classification(subject, task, batch_size, progress)
        measure, chance = "top-1 agreement with the intact network", 1.0 / len(subject.spec.categories or [0])
        score = lambda: clf.score(subject)  # noqa: E731
        extra = {"stimulus_set": clf.stimuli.name}
    if recalibrate is not None and not isinstance(recalibrate, torch.Tensor):
        recalibrate = subject.preprocess(recalibrate)  # once, not per lesion
    values = np.empty((len(kinds), len(dotted), len(fractions), n_repeats))
    total = values.size
    with tqdm(total=total, desc="ko sweep", disable=not progress) as bar:
        for i, kind in enumerate(kinds):
            for j, layer in enumerate(dotted):
                for k, fraction in enumerate(fractions):
                    for r in range(n_repeats):
                        with _SWEEP_KINDS[kind](subject, layer, fraction, seed + r, level, recalibrate):
                            values[i, j, k, r] = score()
                        bar.update()
    return xr.DataArray(
        values,
        dims=("kind", "layer", "fraction", "repeat"),
        coords={"kind": kinds, "layer": [subject.alias_of(d) or d for d in dotted], "fraction": fractions,
                "repeat": np.arange(n_repeats), "layer_dotted": ("layer", dotted)},
        name="accuracy",
        attrs={**{k: v for k, v in subject.provenance(dotted[0]).items() if k in ("model", "weights_sha256", "neurocnn_version")},
               **extra, "measure": measure, "chance": chance, "seed": int(seed), "level": level,
               "recalibrate": "none" if recalibrate is None else f"batchnorm statistics on {int(recalibrate.shape[0])} held-out images",
               "seeds": "repeat r uses seed + r"},
    )


def plot_sweep(sweep: xr.DataArray | xr.Dataset, *, title: str = ""):
    """Plot a :func:`ko_sweep` result: one panel per (measure, kind), a line per layer.

    ``sweep`` may be a Dataset of several sweeps (one variable per measure).
    Lines are means over repeats, with min-max bands; a dashed line marks chance.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    arrays = [sweep] if isinstance(sweep, xr.DataArray) else [sweep[v] for v in sweep.data_vars]
    kinds = list(arrays[0]["kind"].values)
    fig, axes = plt.subplots(len(arrays), len(kinds), figsize=(4 * len(kinds), 3.2 * len(arrays)), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for row, da in enumerate(arrays):
        for col, kind in enumerate(kinds):
            ax = axes[row, col]
            layers = list(da["layer"].values)
            for i, layer in enumerate(layers):
                sub = da.sel(kind=kind, layer=layer)
                color = cmap(i / max(1, len(layers) - 1))
                ax.plot(sub["fraction"], sub.mean("repeat"), "-o", ms=3, color=color, label=str(layer))
                ax.fill_between(sub["fraction"], sub.min("repeat"), sub.max("repeat"), color=color, alpha=0.2)
            ax.axhline(float(da.attrs.get("chance", 0)), ls="--", color="gray", lw=1)
            ax.set_xlabel(f"fraction knocked out ({kind} KO)")
            ax.set_ylabel(str(da.attrs.get("measure", da.name)))
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{kind} knockout")
    axes[0, -1].legend(fontsize=7, title="layer")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_accuracy(results: xr.Dataset, *, title: str = "", chance: float = 0.5):
    """Bar plot of accuracy per (condition, category) with CI error bars.

    ``results`` has ``accuracy``, ``ci_low``, ``ci_high`` with dims (condition, category)
    (e.g. :func:`evaluate` outputs concatenated along ``condition``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    conds = list(results["condition"].values)
    cats = list(results["category"].values)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(conds), 3.4))
    width = 0.8 / len(cats)
    for j, cat in enumerate(cats):
        acc = results["accuracy"].sel(category=cat).values
        err = np.vstack([acc - results["ci_low"].sel(category=cat).values, results["ci_high"].sel(category=cat).values - acc])
        ax.bar(np.arange(len(conds)) + (j - (len(cats) - 1) / 2) * width, acc, width, yerr=err, capsize=3, label=f"{cat} pairs")
    ax.axhline(chance, ls="--", color="gray", lw=1)
    ax.set_xticks(np.arange(len(conds)), conds, rotation=30, ha="right")
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
