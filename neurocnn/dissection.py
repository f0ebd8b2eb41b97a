"""Unit semantics: what each unit of a layer detects, and how reliably.

Two methods, both batched and streaming (no layer is ever held whole in memory):

- :func:`annotate_units`: image-level annotation (Zhou et al. 2015, "Object detectors
  emerge in deep scene CNNs"). A unit's response to an image is its spatial maximum
  (a channel of a conv layer) or its value (a fully connected unit). Its top-K images
  in a labelled probe set vote: label = the most frequent label among them, type =
  the label's group, precision = the fraction of the top K carrying the label, tested
  against the label's base rate (hypergeometric tail, Bonferroni over the labels,
  Benjamini-Hochberg FDR over units).
- :func:`dissect`: pixel-level Network Dissection (Bau et al. 2017). Per channel, the
  threshold T at the top ``quantile`` (0.005) of all its activation-map values over the
  probe set (streamed: exact, or a bounded-memory histogram), each map upsampled
  (bilinear) into the frame of the concept masks and thresholded (> T), and
  IoU(unit, concept) = sum over images of |M ∩ L| / sum of |M ∪ L|, where, as in
  NetDissect, a unit's area enters a concept's union only on images that annotate the
  concept's category. Label = the concept of best IoU, a detector when it exceeds
  ``iou_threshold`` (0.04).

:func:`detector_summary` counts detectors per layer and category,
:func:`plot_detector_counts` draws the Network Dissection bar chart and
:func:`plot_unit_cards` a unit's top images with the thresholded map outlined.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import scipy.stats
import torch
import torch.nn.functional as F
import xarray as xr
from tqdm.auto import tqdm

from ._validation import check_fraction, check_option, check_positive_int, numpy_rng
from ._version import version
from .concepts import ConceptProbe, concepts_from_stimuli
from .datasets import FLOC_DOMAINS
from .exceptions import InvalidDataError, ShapeMismatchError, StimulusError
from .stimuli import StimulusSet, load_stimuli
from .subject import VirtualSubject

__all__ = [
    "GROUPS_92IMAGES",
    "TopQuantile",
    "unit_responses",
    "annotate_units",
    "dissect",
    "detector_summary",
    "plot_detector_counts",
    "plot_unit_cards",
]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

QuantileMethod = Literal["exact", "histogram"]

#: Default type (group) of each of the 12 category labels of the 92 images.
GROUPS_92IMAGES = {
    "animate": "animacy", "inanim": "animacy",
    "human": "animate", "nonhumani": "animate", "body": "animate", "face": "animate", "monkeyape": "animate",
    "natObj": "inanimate", "artiObj": "inanimate",
    "rand24": "control", "rand48": "control", "other48": "control",
}

_ELEMENT_BUDGET = 1 << 24  # floats per upsampled chunk (64 MB)


# ------------------------------------------------------------------ streaming quantiles
class TopQuantile:
    """Per-unit threshold at a top quantile, computed over batches of values.

    ``result()`` equals ``numpy.quantile(values, 1 - quantile)`` (linear
    interpolation) of all values each unit saw, for ``method="exact"``: only the
    ``ceil(quantile * n) + 1`` largest values per unit are kept, ``n`` being the total
    count given up front. ``method="histogram"`` keeps ``n_bins`` counts per unit whose
    range doubles upward when a larger value arrives (values below the first batch's
    minimum share the lowest bin): bounded memory for any ``n``. Its result lies within
    one bin width (``bin_width()``) of the interval between the two order statistics
    that ``numpy.quantile`` interpolates between (for continuous data: within about one
    bin width of the exact value), as long as the quantile lies above that minimum.

    Parameters
    ----------
    n_units : int
        Number of units.
    n_values : int
        Total number of values each unit will see.
    quantile : float
        Top fraction, e.g. 0.005.
    method : {"exact", "histogram"}
    n_bins : int
        Histogram bins (``method="histogram"``).
    """

    def __init__(self, n_units: int, n_values: int, quantile: float, *, method: QuantileMethod = "exact",
                 n_bins: int = 4096) -> None:
        check_option("quantile method", method, ("exact", "histogram"))
        if not 0.0 < quantile < 1.0:
            raise InvalidDataError(f"quantile must lie strictly between 0 and 1, got {quantile}.")
        self.n_units, self.n, self.quantile, self.method = n_units, int(n_values), float(quantile), method
        self.seen = 0
        self.pos = (self.n - 1) * (1.0 - self.quantile)
        self.m = self.n - int(np.floor(self.pos))
        self.top = torch.full((n_units, 0), -torch.inf, dtype=torch.float64)
        self.n_bins = int(n_bins)
        self.hist: torch.Tensor | None = None
        self.lo = self.width = None

    def update(self, values: torch.Tensor) -> None:
        """Add values ``(n_units, m)`` (or ``(batch, n_units, ...)``) of every unit."""
        v = torch.as_tensor(values, dtype=torch.float64)
        if v.ndim > 2 or (v.ndim == 2 and v.shape[0] != self.n_units):
            v = v.transpose(0, 1).reshape(self.n_units, -1) if v.ndim > 2 else v.T
        self.seen += v.shape[1]
        if self.seen > self.n:
            raise ShapeMismatchError(f"TopQuantile got {self.seen} values per unit, more than the {self.n} announced.")
        if self.method == "exact":
            both = torch.cat([self.top, v], 1)
            self.top = both.topk(min(self.m, both.shape[1]), dim=1, sorted=False).values
        else:
            self._update_histogram(v)

    def _update_histogram(self, v: torch.Tensor) -> None:
        vmax = v.max(1).values
        if self.hist is None:
            self.lo = v.min(1).values
            self.width = torch.clamp(vmax - self.lo, min=1e-12) * (1 + 1e-9)
            self.hist = torch.zeros(self.n_units, self.n_bins, dtype=torch.float64)
        need = vmax >= self.lo + self.width
        if need.any():
            factor = torch.ceil(torch.log2((vmax - self.lo) / self.width * (1 + 1e-9))).clamp(min=1)
            factor = torch.where(need, factor, torch.zeros_like(factor)).long().clamp(max=int(np.log2(self.n_bins)))
            for k in factor.unique().tolist():
                if k == 0:
                    continue
                rows = factor == k
                merged = self.hist[rows].reshape(int(rows.sum()), self.n_bins >> k, 1 << k).sum(-1)
                self.hist[rows] = F.pad(merged, (0, self.n_bins - merged.shape[1]))
                self.width[rows] = self.width[rows] * (1 << k)
            over = vmax >= self.lo + self.width
            self.width[over] = (vmax[over] - self.lo[over]) * (1 + 1e-9)  # more than n_bins doublings
        idx = ((v - self.lo[:, None]) / self.width[:, None] * self.n_bins).floor().clamp(0, self.n_bins - 1).long()
        self.hist.scatter_add_(1, idx, torch.ones_like(v))

    def bin_width(self) -> np.ndarray:
        """Histogram bin width per unit (0 for the exact method)."""
        if self.method == "exact" or self.width is None:
            return np.zeros(self.n_units)
        return (self.width / self.n_bins).numpy()

    def result(self) -> np.ndarray:
        """The per-unit thresholds (float64)."""
        if self.seen != self.n:
            raise ShapeMismatchError(f"TopQuantile saw {self.seen} values per unit, {self.n} were announced.")
        frac = self.pos - np.floor(self.pos)
        if self.method == "exact":
            top = self.top.sort(dim=1, descending=True).values
            lower = top[:, self.m - 1]
            upper = top[:, max(self.m - 2, 0)] if frac > 0 else lower
            return (lower + frac * (upper - lower)).numpy()
        # rank from the top of the (pos)-th value: cumulative counts from the highest bin
        target = self.n - self.pos - 0.5  # values above the threshold (mid-rank convention)
        from_top = self.hist.flip(1).cumsum(1)
        b = (from_top < target).sum(1).clamp(max=self.n_bins - 1)
        above = torch.where(b > 0, from_top.gather(1, (b - 1).clamp(min=0)[:, None])[:, 0], torch.zeros(b.shape, dtype=torch.float64))
        count = self.hist.flip(1).gather(1, b[:, None])[:, 0].clamp(min=1)
        bin_index = self.n_bins - 1 - b
        inside = ((target - above) / count).clamp(0, 1)
        edge = self.lo + (bin_index + 1).double() * self.width / self.n_bins
        return (edge - inside * self.width / self.n_bins).numpy()


# ------------------------------------------------------------------ batch streams
def _check_activations(acts: xr.DataArray, subject: VirtualSubject, stim: StimulusSet, layer: str) -> None:
    same_ids = acts.sizes.get("stimulus") == len(stim) and np.array_equal(acts["stimulus"].values, stim.ids)
    if not same_ids or acts.attrs.get("layer") != subject.resolve_layer(layer):
        raise ShapeMismatchError(
            f"The activations given are of layer {acts.attrs.get('layer')!r} for {acts.sizes.get('stimulus')} "
            f"stimuli; this needs layer {subject.resolve_layer(layer)!r} for the {len(stim)} probe stimuli, in order."
        )


def _stream(subject: VirtualSubject, stim: StimulusSet, layers: Sequence[str], *, batch_size: int,
            activations: Mapping[str, xr.DataArray] | None, device: Any, progress: bool, desc: str,
            frames: bool = False) -> Iterator[tuple[int, dict[str, torch.Tensor], list]]:
    """Yield ``(start, {layer: batch outputs}, [(image, frame), ...])`` over the stimuli.

    From ``activations`` (numpy or zarr/dask-backed, read one batch of stimuli at a
    time) or from forward passes; ``frames`` also returns each image as loaded and after
    the subject's resize/crop (the frame the concept masks live in).
    """
    prep = subject.preprocessing
    run_device = torch.device(device) if device is not None else subject.device
    for start in tqdm(range(0, len(stim), batch_size), desc=desc, disable=not progress):
        stop = min(start + batch_size, len(stim))
        images = [stim.load(i) for i in range(start, stop)] if (frames or activations is None) else []
        geometric = [prep.geometric(im) for im in images]
        if activations is not None:
            outputs = {layer: torch.as_tensor(_rows(activations[layer], start, stop)) for layer in layers}
        else:
            batch = prep.normalize(torch.stack(geometric)).to(run_device)
            with torch.inference_mode():
                outputs = {k: v.float().cpu() for k, v in subject.forward_layers(batch, list(layers)).items()}
        yield start, outputs, list(zip(images, geometric)) if frames else []


def _rows(acts: xr.DataArray | np.ndarray, start: int, stop: int) -> np.ndarray:
    """Stimuli ``start:stop`` of in-memory maps or of a (lazy, zarr-backed) DataArray."""
    if isinstance(acts, np.ndarray):
        return acts[start:stop]
    return np.asarray(acts.isel(stimulus=slice(start, stop)).values, dtype=np.float32)


def _prepare_activations(subject, stim, layers, activations, store, batch_size, device, progress):
    if activations is not None and store is not None:
        raise InvalidDataError("Give activations= or store=, not both.")
    if store is not None:
        out = subject.activations(stim, list(layers), batch_size=batch_size, device=device, store=store, progress=progress)
        return out
    if activations is None:
        return None
    acts = {layers[0]: activations} if isinstance(activations, xr.DataArray) else dict(activations)
    for layer in layers:
        if layer not in acts:
            raise InvalidDataError(f"activations has no entry for layer {layer!r} (it has {sorted(acts)}).")
        _check_activations(acts[layer], subject, stim, layer)
    return acts


def unit_responses(
    subject: VirtualSubject,
    stimuli: Any,
    layers: str | Sequence[str],
    *,
    batch_size: int = 32,
    activations: xr.DataArray | Mapping[str, xr.DataArray] | None = None,
    store: str | None = None,
    device: str | None = None,
    progress: bool = True,
) -> xr.DataArray | dict[str, xr.DataArray]:
    """Per-unit responses (stimulus, channel|unit): spatial max of each channel, or the unit's value.

    Streamed batch by batch: only the (stimulus, unit) table is kept.

    Parameters
    ----------
    subject : VirtualSubject
    stimuli : StimulusSet, str, path or array
    layers : str or sequence of str
    batch_size : int
    activations : xarray.DataArray or dict, optional
        Precomputed (possibly zarr-backed) activations of the layer(s), read batch by batch.
    store : path, optional
        Extract into this zarr store first (:meth:`VirtualSubject.activations`), then read it.
    device : str, optional
    progress : bool

    Returns
    -------
    xarray.DataArray or dict of them
        Dims ``("stimulus", "channel")`` for conv layers, ``("stimulus", "unit")`` for
        vector layers; provenance attrs and ``response``.
    """
    check_positive_int("batch_size", batch_size)
    single = isinstance(layers, str)
    names = [layers] if single else list(layers)
    for layer in names:
        subject.resolve_layer(layer)
    stim = load_stimuli(stimuli)
    acts = _prepare_activations(subject, stim, names, activations, store, batch_size, device, progress)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    spatial: dict[str, bool] = {}
    for _, outputs, _ in _stream(subject, stim, names, batch_size=batch_size, activations=acts, device=device,
                                 progress=progress, desc=f"{subject.name} responses"):
        for layer, out in outputs.items():
            spatial[layer] = out.ndim > 2
            parts[layer].append(out.flatten(2).amax(2).numpy() if out.ndim > 2 else out.reshape(out.shape[0], -1).numpy())
    result = {}
    for layer in names:
        values = np.concatenate(parts[layer]).astype(np.float64)
        dim = "channel" if spatial[layer] else "unit"
        result[layer] = xr.DataArray(
            values, dims=("stimulus", dim), coords={**stim.coords(), dim: np.arange(values.shape[1])},
            attrs={**subject.provenance(layer), "stimulus_set": stim.name,
                   "response": "spatial max of the channel's map" if spatial[layer] else "unit activation"},
            name="response",
        )
    return result[names[0]] if single else result


# ------------------------------------------------------------------ image-level annotation
def _label_matrix(stim: StimulusSet, labels: str | Sequence[str] | None) -> tuple[np.ndarray, list[str], str]:
    """(stimulus, label) 0/1 matrix, label names, and a description of where they came from."""
    meta = stim.metadata
    if labels is None:
        labels = "label_*" if any(k.startswith("label_") for k in meta) else (
            "label" if "label" in meta else "category")
    if isinstance(labels, str) and "*" not in labels:
        if labels not in meta:
            raise StimulusError(
                f"Stimulus set {stim.name!r} has no metadata field {labels!r} (it has {sorted(meta)}); "
                "give labels= a field holding one label per stimulus, or indicator columns like 'label_*'."
            )
        values = meta[labels].astype(str)
        names = sorted(set(values.tolist()))
        return (values[:, None] == np.asarray(names)[None]).astype(np.int64), names, labels
    fields = fnmatch.filter(list(meta), labels) if isinstance(labels, str) else list(labels)
    if not fields:
        raise StimulusError(f"No metadata field of {stim.name!r} matches {labels!r} (fields: {sorted(meta)}).")
    for f in fields:
        check_option("metadata field", f, list(meta))
        if not set(np.unique(meta[f]).tolist()) <= {0, 1}:
            raise InvalidDataError(f"Indicator column {f!r} must hold 0/1 values; got {np.unique(meta[f])[:5]}.")
    prefix = labels.split("*")[0] if isinstance(labels, str) else ""
    names = [f[len(prefix):] if prefix and f.startswith(prefix) else f for f in fields]
    return np.stack([meta[f].astype(np.int64) for f in fields], 1), names, ",".join(fields)


def _label_groups(stim: StimulusSet, names: list[str], source: str, groups: str | Mapping[str, str] | None) -> list[str]:
    if isinstance(groups, Mapping):
        missing = [n for n in names if n not in groups]
        if missing:
            raise InvalidDataError(f"groups has no entry for label(s) {missing}; give a group for every label.")
        return [str(groups[n]) for n in names]
    if groups is None:
        if "group" in stim.metadata:
            groups = "group"
        elif source == "category" and "domain" in stim.metadata:
            groups = "domain"
        elif set(names) <= set(GROUPS_92IMAGES):
            return [GROUPS_92IMAGES[n] for n in names]
        elif set(names) <= set(FLOC_DOMAINS):
            return [FLOC_DOMAINS[n] for n in names]
        else:
            return list(names)
    if groups not in stim.metadata or source not in stim.metadata:
        raise StimulusError(f"groups={groups!r} needs metadata fields {groups!r} and {source!r} in {stim.name!r}.")
    out = []
    for n in names:
        values = set(stim.metadata[groups][stim.metadata[source].astype(str) == n].astype(str).tolist())
        if len(values) != 1:
            raise InvalidDataError(f"Label {n!r} has {len(values)} values of {groups!r} ({sorted(values)}); need one.")
        out.append(values.pop())
    return out


def _annotate(resp: np.ndarray, matrix: np.ndarray, k: int, seed: int) -> dict[str, np.ndarray]:
    n, n_units = resp.shape
    # ties (saturating units such as ReLU6) are broken at random, never by stimulus order
    key = numpy_rng(seed).random(resp.shape)
    order = np.lexsort((key, -resp), axis=0)[:k].T  # (unit, rank)
    kth = resp[order[:, -1], np.arange(n_units)]
    n_tied = np.where((resp >= kth).sum(0) > k, (resp == kth).sum(0), 0)
    counts = matrix[order].sum(1)  # (unit, label)
    base = matrix.sum(0)
    chance = base / n
    best = counts.max(1)
    # ties: the rarer label (the more surprising), then the first
    tie_key = np.where(counts == best[:, None], -chance[None] + 2.0, 0.0)
    label = tie_key.argmax(1)
    count = counts[np.arange(n_units), label]
    p_label = scipy.stats.hypergeom.sf(count - 1, n, base[label], k)
    dead = np.ptp(resp, axis=0) == 0
    p_value = np.where(dead, 1.0, np.minimum(1.0, p_label * matrix.shape[1]))
    return {"order": order, "counts": counts, "chance": chance, "label": label, "count": count,
            "p_value": p_value, "dead": dead, "n_tied": n_tied}


def annotate_units(
    subject: VirtualSubject,
    stimuli: Any,
    layers: str | Sequence[str],
    *,
    labels: str | Sequence[str] | None = None,
    groups: str | Mapping[str, str] | None = None,
    top_k: int = 10,
    min_precision: float = 0.75,
    q: float = 0.05,
    seed: int = 0,
    batch_size: int = 32,
    activations: xr.DataArray | Mapping[str, xr.DataArray] | None = None,
    store: str | None = None,
    device: str | None = None,
    progress: bool = True,
) -> xr.Dataset | dict[str, xr.Dataset]:
    """Image-level annotation of every unit of a layer (Zhou et al. 2015).

    Parameters
    ----------
    subject : VirtualSubject
        The network.
    stimuli : StimulusSet, str, path or array
        A labelled probe set: ``"floc"`` (labels ``category``, types = domains),
        ``"92images"`` (its 12 ``label_*`` columns, types :data:`GROUPS_92IMAGES`), or
        :func:`neurocnn.concepts.labelled_stimuli` of the user's images.
    layers : str or sequence of str
        Layer name(s) or alias(es); one forward pass serves them all.
    labels : str or sequence of str, optional
        A metadata field with one label per stimulus (``"category"``), a glob of 0/1
        indicator columns (``"label_*"``), or a list of indicator columns. Default:
        ``label_*`` columns if any, else ``label``, else ``category``.
    groups : str or mapping, optional
        The type of each label: a metadata field (``"domain"``) or a mapping label ->
        group. Default: ``group``/``domain`` metadata, the 92-image or fLoc hierarchy,
        else the label itself.
    top_k : int
        Top images per unit.
    min_precision : float
        A unit detects its label when its precision is at least this and ``p_fdr < q``.
    q : float
        FDR level.
    seed : int
        Seed of the random order among stimuli with equal responses (a saturating unit
        ties many images at its maximum); ``n_tied`` says how many tie at the K-th place.
    batch_size, activations, store, device, progress
        As in :func:`unit_responses` (``activations`` or ``store`` stream a zarr store).

    Returns
    -------
    xarray.Dataset or dict of them
        Dims ``channel`` (conv) or ``unit`` (vector), ``label``, ``rank``: ``score``
        (unit x label: fraction of the top K with each label), ``label_name``,
        ``label_type``, ``precision``, ``chance`` (the label's base rate, per unit and
        per label), ``p_value`` (hypergeometric P(X >= count) for the chosen label,
        Bonferroni over the labels), ``p_fdr`` (Benjamini-Hochberg over units),
        ``detector``, ``n_tied``, ``top_stimulus``/``top_index``/``top_response`` (unit,
        rank). Attrs: provenance, k, min_precision, q, seed, fraction_detectors.

    Raises
    ------
    UnknownNameError
        Unknown layer (before any forward pass).
    StimulusError, InvalidDataError
        Missing label fields, bad indicator columns, ``top_k`` larger than the probe set.
    """
    check_positive_int("k", top_k)
    check_fraction("min_precision", min_precision)
    check_fraction("q", q)
    single = isinstance(layers, str)
    names = [layers] if single else list(layers)
    for layer in names:
        subject.resolve_layer(layer)
    stim = load_stimuli(stimuli)
    if top_k > len(stim):
        raise InvalidDataError(f"top_k={top_k} is larger than the {len(stim)} probe stimuli; choose top_k < {len(stim)}.")
    matrix, label_names, source = _label_matrix(stim, labels)
    types = _label_groups(stim, label_names, source, groups)
    resp = unit_responses(subject, stim, names, batch_size=batch_size, activations=activations, store=store,
                          device=device, progress=progress)
    out = {}
    for layer in names:
        r = resp[layer]
        res = _annotate(r.values, matrix, top_k, seed)
        dim = r.dims[1]
        n_units = r.sizes[dim]
        p_fdr = scipy.stats.false_discovery_control(res["p_value"], method="bh")
        precision = res["count"] / top_k
        detector = (precision >= min_precision) & (p_fdr < q) & ~res["dead"]
        label = np.asarray(label_names)[res["label"]]
        ds = xr.Dataset(
            {
                "score": ((dim, "label"), res["counts"] / top_k),
                "label_name": (dim, np.where(res["dead"], "", label)),
                "label_type": (dim, np.where(res["dead"], "", np.asarray(types)[res["label"]])),
                "precision": (dim, precision),
                "chance": (dim, res["chance"][res["label"]]),
                "label_chance": ("label", res["chance"]),
                "p_value": (dim, res["p_value"]),
                "p_fdr": (dim, p_fdr),
                "detector": (dim, detector),
                "n_tied": (dim, res["n_tied"]),
                "top_index": ((dim, "rank"), res["order"]),
                "top_stimulus": ((dim, "rank"), stim.ids[res["order"]]),
                "top_response": ((dim, "rank"), np.take_along_axis(r.values.T, res["order"], 1)),
            },
            coords={dim: np.arange(n_units), "label": label_names, "type": ("label", types), "rank": np.arange(1, top_k + 1)},
            attrs={
                **{a: v for a, v in r.attrs.items()},
                "method": "image-level annotation (Zhou et al. 2015)",
                "labels": source, "k": int(top_k), "min_precision": float(min_precision), "q": float(q), "seed": int(seed),
                "test": "hypergeometric P(X >= count), Bonferroni over labels; BH FDR over units",
                "n_stimuli": len(stim), "n_detectors": int(detector.sum()),
                "fraction_detectors": float(detector.mean()), "neurocnn_version": version(),
            },
        )
        out[layer] = ds
    return out[names[0]] if single else out


# ------------------------------------------------------------------ pixel-level dissection
def _probe_of(probe: Any) -> ConceptProbe:
    return probe if isinstance(probe, ConceptProbe) else concepts_from_stimuli(probe)


def _thresholds(subject, probe, layer, acts, *, quantile, method, cache_mb, batch_size, device, progress):
    """Pass 1: per-channel top-quantile threshold of the raw maps, per-image maxima, and the maps
    themselves when they come from forward passes and fit in ``cache_mb``."""
    stim = probe.stimuli
    tracker: TopQuantile | None = None
    maxima, cache, lowest = [], [], None
    for _, outputs, _ in _stream(subject, stim, [layer], batch_size=batch_size, activations=acts, device=device,
                                 progress=progress, desc=f"{subject.name} {layer} thresholds"):
        out = outputs[layer]
        if out.ndim != 4:
            raise InvalidDataError(
                f"Layer {layer!r} has outputs of shape {tuple(out.shape[1:])}; pixel-level dissection needs a "
                "conv layer with (channel, y, x) maps. Use annotate_units for fully connected layers."
            )
        if tracker is None:
            tracker = TopQuantile(out.shape[1], len(stim) * out.shape[2] * out.shape[3], quantile, method=method)
            keep = acts is None and len(stim) * out[0].numel() * 4 <= cache_mb * 2**20
        tracker.update(out)
        maxima.append(out.flatten(2).amax(2).numpy())
        low = out.flatten(2).amin(2).amin(0).numpy().astype(np.float64)
        lowest = low if lowest is None else np.minimum(lowest, low)
        if keep:
            cache.append(out.numpy())
    cached = {layer: np.concatenate(cache)} if keep else None
    return tracker.result(), tracker.bin_width(), np.concatenate(maxima).astype(np.float64), lowest, cached


def _inclusive(threshold: np.ndarray, maxima: np.ndarray, lowest: np.ndarray) -> np.ndarray:
    """Channels whose threshold is their maximum (values tie at the top, e.g. a saturated ReLU6),
    constant channels excepted (a dead channel is active nowhere)."""
    top = maxima.max(0)
    return (threshold >= top) & (top > lowest)


def _tally(subject, probe, layer, acts, threshold, inclusive, *, size, batch_size, device, progress):
    """Pass 2: intersections (unit, concept), concept areas, unit areas per annotated category."""
    n_units, n_concepts, n_cats = threshold.size, probe.concepts.size, len(probe.categories)
    both = torch.zeros(n_units, n_concepts, dtype=torch.float64)
    label_area = torch.zeros(n_concepts, dtype=torch.float64)
    unit_area = torch.zeros(n_units, n_cats, dtype=torch.float64)
    image_area = torch.zeros(len(probe), n_units, dtype=torch.float64)
    # float32 maps: x > t (float64)  <=>  x > the largest float32 <= t; and x >= t  <=>  x > the float32
    # just below it. One comparison serves both rules.
    t32 = threshold.astype(np.float32)
    t32 = np.where(t32.astype(np.float64) > threshold, np.nextafter(t32, np.float32(-np.inf)), t32)
    t32 = np.where(inclusive, np.nextafter(t32, np.float32(-np.inf)), t32)
    t = torch.from_numpy(t32.astype(np.float32))[:, None, None]
    prep = subject.preprocessing
    for start, outputs, frames in _stream(subject, probe.stimuli, [layer], batch_size=batch_size, activations=acts,
                                          device=device, progress=progress, desc=f"{subject.name} {layer} IoU",
                                          frames=True):
        maps = outputs[layer]
        for i, (image, frame) in enumerate(frames):
            label_maps = probe.label_maps(start + i, image, frame, prep, size=size)
            hw = tuple(size) if size is not None else tuple(frame.shape[-2:])
            for _, m in label_maps:
                if tuple(m.shape) != hw:
                    raise ShapeMismatchError(f"A concept map of {probe.stimuli.ids[start + i]!r} is {tuple(m.shape)}, expected {hw}.")
            flat = [(c, m.reshape(-1)) for c, m in label_maps]
            cats = sorted({c for c, _ in flat})
            onehots = []
            for _, m in flat:
                valid = m >= 0
                ids = torch.unique(m[valid])
                label_area.index_add_(0, m[valid], torch.ones(int(valid.sum()), dtype=torch.float64))
                if ids.numel():
                    onehots.append((ids, (m[:, None] == ids[None]).float()))
            chunk = max(1, _ELEMENT_BUDGET // (hw[0] * hw[1]))
            for u0 in range(0, n_units, chunk):
                up = F.interpolate(maps[i:i + 1, u0:u0 + chunk], size=hw, mode="bilinear", align_corners=False)[0]
                active = (up > t[u0:u0 + chunk]).reshape(up.shape[0], -1).to(torch.float32)
                area = active.sum(1).double()
                image_area[start + i, u0:u0 + chunk] = area
                for c in cats:
                    unit_area[u0:u0 + chunk, c] += area
                for ids, onehot in onehots:
                    both[u0:u0 + chunk].index_add_(1, ids, (active @ onehot).double())
    return both, label_area, unit_area, image_area.numpy()


def dissect(
    subject: VirtualSubject,
    probe: Any,
    layer: str,
    *,
    quantile: float = 0.005,
    iou_threshold: float = 0.04,
    quantile_method: QuantileMethod = "exact",
    size: tuple[int, int] | None = None,
    cache_mb: float = 256.0,
    batch_size: int = 4,
    activations: xr.DataArray | None = None,
    store: str | None = None,
    device: str | None = None,
    progress: bool = True,
) -> xr.Dataset:
    """Pixel-level Network Dissection of a conv layer (Bau et al. 2017).

    Parameters
    ----------
    subject : VirtualSubject
        The network.
    probe : ConceptProbe or stimuli
        A :func:`neurocnn.concepts.load_broden` probe set, or any stimuli (then the
        concepts are the eleven colours of the pixels, :func:`neurocnn.concepts.color_names`).
    layer : str
        A conv layer (name or alias).
    quantile : float
        Top fraction of each channel's activation-map values (over all positions and
        probe images) above which the channel counts as active (0.005 in the paper):
        a pixel is active when its upsampled value exceeds the threshold, or equals it
        for channels whose threshold is their maximum (saturating units, e.g. ReLU6,
        tie at the top; ``threshold_inclusive``; never for constant channels).
    iou_threshold : float
        A channel detects its best concept when IoU exceeds this (0.04 in the paper).
    quantile_method : {"exact", "histogram"}
        See :class:`TopQuantile`.
    size : (int, int), optional
        Frame (H, W) where IoU is computed; default the network-input frame (after the
        subject's resize/crop). Masks are resampled nearest-neighbour, maps bilinearly.
    cache_mb : float
        Without ``activations``/``store``, the layer's maps are kept in memory between
        the two passes when they fit in this many MB (else the forward passes run twice,
        so memory stays bounded by one batch); 0 never keeps them.
    batch_size : int
        Images per forward pass (small batches are fastest on a CPU; raise it on a GPU).
    activations : xarray.DataArray, optional
        The layer's activations for the probe stimuli (may be zarr-backed; read one
        batch at a time, used for both passes).
    store : path, optional
        Extract the layer into this zarr store once (resumable), then read it twice.
    device : str, optional
    progress : bool

    Returns
    -------
    xarray.Dataset
        Dims ``channel``, ``concept``, ``category``: ``iou`` (channel x concept),
        ``label_name``, ``label_category``, ``label_iou``, ``detector``,
        ``iou_by_category`` (best IoU within each category), ``threshold``,
        ``threshold_error`` (bound of a histogram threshold; 0 when exact),
        ``threshold_inclusive``,
        ``concept_area``, ``top_index``/``top_stimulus`` (channel, rank: the 8 images of
        largest map maximum, ties broken by the larger active area). Attrs: provenance, quantile, iou_threshold, quantile_method,
        fraction_detectors.

    Raises
    ------
    UnknownNameError
        Unknown layer (checked before any forward pass).
    InvalidDataError
        A vector layer, a quantile outside (0, 1), both activations and store.
    ShapeMismatchError
        A mask whose size disagrees with index.csv; activations of other stimuli.
    """
    dotted = subject.resolve_layer(layer)
    if not 0.0 < float(quantile) < 1.0:
        raise InvalidDataError(f"quantile must lie strictly between 0 and 1, got {quantile}.")
    check_fraction("iou_threshold", iou_threshold)
    check_option("quantile method", quantile_method, ("exact", "histogram"))
    check_positive_int("batch_size", batch_size)
    if size is not None:
        size = tuple(check_positive_int("size", int(s)) for s in size)
    probe = _probe_of(probe)
    acts = _prepare_activations(subject, probe.stimuli, [layer], activations, store, batch_size, device, progress)
    threshold, error, maxima, lowest, cached = _thresholds(subject, probe, layer, acts, quantile=quantile,
                                                   method=quantile_method, cache_mb=cache_mb, batch_size=batch_size,
                                                   device=device, progress=progress)
    acts = cached if cached is not None else acts
    inclusive = _inclusive(threshold, maxima, lowest)
    both, label_area, unit_area, image_area = _tally(subject, probe, layer, acts, threshold, inclusive, size=size,
                                         batch_size=batch_size, device=device, progress=progress)
    cat_of = np.array([probe.categories.index(c) for c in probe.concept_category], dtype=np.int64)
    union = unit_area[:, cat_of] + label_area[None] - both
    iou = torch.where(union > 0, both / union.clamp(min=1e-12), torch.zeros_like(both)).numpy()
    n_units = threshold.size
    has = iou.shape[1] > 0
    best = iou.argmax(1) if has else np.zeros(n_units, dtype=int)
    best_iou = iou[np.arange(n_units), best] if has else np.zeros(n_units)
    detector = best_iou > iou_threshold
    by_cat = np.stack([iou[:, cat_of == c].max(1) if (cat_of == c).any() else np.zeros(n_units)
                       for c in range(len(probe.categories))], 1) if probe.categories else np.zeros((n_units, 0))
    n_top = min(8, len(probe))
    top = np.lexsort((-image_area, -maxima), axis=0)[:n_top].T  # ties at the maximum: larger active area first
    return xr.Dataset(
        {
            "iou": (("channel", "concept"), iou),
            "label_name": ("channel", probe.concepts[best] if has else np.full(n_units, "")),
            "label_category": ("channel", probe.concept_category[best] if has else np.full(n_units, "")),
            "label_iou": ("channel", best_iou),
            "detector": ("channel", detector),
            "iou_by_category": (("channel", "category"), by_cat),
            "threshold": ("channel", threshold),
            "threshold_error": ("channel", error),
            "threshold_inclusive": ("channel", inclusive),
            "concept_area": ("concept", label_area.numpy()),
            "top_index": (("channel", "rank"), top),
            "top_stimulus": (("channel", "rank"), probe.stimuli.ids[top]),
        },
        coords={
            "channel": np.arange(n_units), "concept": probe.concepts, "concept_category": ("concept", probe.concept_category),
            "category": list(probe.categories), "rank": np.arange(1, n_top + 1),
        },
        attrs={
            **subject.provenance(dotted), "requested_as": layer, "stimulus_set": probe.name,
            "method": "pixel-level network dissection (Bau et al. 2017)",
            "quantile": float(quantile), "iou_threshold": float(iou_threshold), "quantile_method": quantile_method,
            "maps": "kept in memory between passes" if cached is not None else ("read from activations" if acts is not None else "forward passes twice"),
            "upsampling": "bilinear, align_corners=False", "frame": "x".join(map(str, size)) if size else "network input",
            "n_stimuli": len(probe), "n_detectors": int(detector.sum()), "fraction_detectors": float(detector.mean()),
            "neurocnn_version": version(),
        },
    )


# ------------------------------------------------------------------ summaries and figures
def _unit_dim(result: xr.Dataset) -> str:
    return "channel" if "channel" in result.dims else "unit"


def _kind_of(result: xr.Dataset) -> str:
    return "label_category" if "label_category" in result else "label_type"


def detector_summary(results: Mapping[str, xr.Dataset] | Sequence[xr.Dataset]) -> xr.Dataset:
    """Count detectors per layer and category (type) across :func:`dissect` / :func:`annotate_units` results.

    Parameters
    ----------
    results : mapping layer -> Dataset, or sequence of Datasets (layer from attrs)

    Returns
    -------
    xarray.Dataset
        ``n_detectors`` (layer, category), ``n_units`` and ``fraction_detectors``
        (layer), ``n_unique`` (layer: distinct labels detected).
    """
    items = list(results.items()) if isinstance(results, Mapping) else [
        (r.attrs.get("requested_as") or r.attrs.get("alias") or r.attrs.get("layer", str(i)), r) for i, r in enumerate(results)]
    if not items:
        raise InvalidDataError("detector_summary needs at least one result.")
    kinds = {_kind_of(r) for _, r in items}
    if len(kinds) > 1:
        raise InvalidDataError("Mix of dissect and annotate_units results; summarize each kind separately.")
    kind = kinds.pop()
    categories: list[str] = []
    for _, r in items:
        names = r["category"].values.tolist() if kind == "label_category" else r["type"].values.tolist()
        categories = list(dict.fromkeys([*categories, *names]))
    counts = np.zeros((len(items), len(categories)), dtype=np.int64)
    n_units, unique = [], []
    for i, (_, r) in enumerate(items):
        det = r["detector"].values.astype(bool)
        cats = r[kind].values[det]
        for j, c in enumerate(categories):
            counts[i, j] = int((cats == c).sum())
        n_units.append(det.size)
        unique.append(len(set(r["label_name"].values[det].tolist())))
    return xr.Dataset(
        {
            "n_detectors": (("layer", "category"), counts),
            "n_units": ("layer", np.asarray(n_units)),
            "fraction_detectors": ("layer", counts.sum(1) / np.asarray(n_units)),
            "n_unique": ("layer", np.asarray(unique)),
        },
        coords={"layer": [name for name, _ in items], "category": categories},
        attrs={"model": items[0][1].attrs.get("model", ""), "method": items[0][1].attrs.get("method", ""),
               "stimulus_set": items[0][1].attrs.get("stimulus_set", ""), "neurocnn_version": version()},
    )


def plot_detector_counts(summary: xr.Dataset, *, fraction: bool = False, ax=None):
    """The Network Dissection bar chart: detectors per layer, stacked by category.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    fig, ax = (plt.subplots(figsize=(1.0 + 0.6 * summary.sizes["layer"], 3.0)) if ax is None else (ax.figure, ax))
    values = summary["n_detectors"].values.astype(float)
    if fraction:
        values = values / summary["n_units"].values[:, None]
    bottom = np.zeros(values.shape[0])
    x = np.arange(values.shape[0])
    colors = plt.get_cmap("tab10")
    for j, cat in enumerate(summary["category"].values):
        ax.bar(x, values[:, j], bottom=bottom, label=str(cat), color=colors(j % 10), width=0.75)
        bottom += values[:, j]
    ax.set_xticks(x, [str(v) for v in summary["layer"].values], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("fraction of units" if fraction else "detector units", fontsize=8)
    ax.set_title(f"{summary.attrs.get('model', '')} on {summary.attrs.get('stimulus_set', '')}", fontsize=8)
    ax.legend(fontsize=6, frameon=False, ncol=2)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def plot_unit_cards(subject: VirtualSubject, probe: Any, result: xr.Dataset, units: Sequence[int], *,
                    n_images: int = 4, size: float = 1.3):
    """Unit cards: each unit's top images, with its thresholded map outlined (pixel-level results).

    For :func:`annotate_units` results of a conv layer the cards outline the theoretical
    receptive field (:func:`neurocnn.receptive_fields.rf_box`) of the channel's maximum.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from .receptive_fields import rf_box

    stim = probe.stimuli if isinstance(probe, ConceptProbe) else load_stimuli(probe)
    dim = _unit_dim(result)
    units = [int(u) for u in units]
    for u in units:
        if not 0 <= u < result.sizes[dim]:
            raise InvalidDataError(f"unit {u} out of range: the result has {result.sizes[dim]} {dim}s.")
    n_images = min(n_images, result.sizes["rank"])
    layer = result.attrs.get("requested_as") or result.attrs["layer"]
    fig, axes = plt.subplots(len(units), n_images, figsize=(size * n_images, size * len(units) + 0.3), squeeze=False)
    prep = subject.preprocessing
    pixel = "threshold" in result
    for row, u in enumerate(units):
        index = result["top_index"].values[u, :n_images]
        frames = torch.stack([prep.geometric(stim.load(int(i))) for i in index])
        with torch.inference_mode():
            maps = subject.forward_layers(prep.normalize(frames).to(subject.device), [layer])[layer][:, u:u + 1].float().cpu()
        if pixel:
            up = F.interpolate(maps, size=frames.shape[-2:], mode="bilinear", align_corners=False)[:, 0].numpy()
        for col, ax in enumerate(axes[row]):
            ax.imshow(frames[col].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if pixel:
                t = float(result["threshold"][u])
                active = up[col] >= t if bool(result["threshold_inclusive"][u]) else up[col] > t
                if active.any():  # padded, so a map active everywhere is outlined along the border
                    h, w = active.shape
                    ax.contour(np.arange(-1, w + 1), np.arange(-1, h + 1), np.pad(active, 1).astype(float),
                               levels=[0.5], colors="yellow", linewidths=1.0)
                    ax.set_xlim(-0.5, w - 0.5)
                    ax.set_ylim(h - 0.5, -0.5)
            elif maps.ndim == 4:  # image-level result of a conv channel: the receptive field of its maximum
                y, x = np.unravel_index(int(maps[col, 0].argmax()), tuple(maps.shape[-2:]))
                box = rf_box(subject, layer, int(y), int(x), clip=True, input_size=tuple(frames.shape[-2:]))
                ax.add_patch(Rectangle((box.x0 - 0.5, box.y0 - 0.5), box.x1 - box.x0, box.y1 - box.y0, fill=False,
                                       edgecolor="yellow", linewidth=1.0))
        if pixel:
            title = f"{layer} unit {u}: {result['label_name'].values[u]} ({result['label_category'].values[u]}) IoU {float(result['label_iou'][u]):.2f}"
        else:
            title = (f"{layer} unit {u}: {result['label_name'].values[u]} ({result['label_type'].values[u]}), "
                     f"precision {float(result['precision'][u]):.0%}")
        axes[row, 0].set_title(title, fontsize=7, loc="left")
    fig.tight_layout()
    return fig
