"""Concept probe sets for unit semantics: colour names, the Broden layout, labelled images.

Three kinds of probe set feed :mod:`neurocnn.dissection`:

- :func:`labelled_stimuli`: images with one label each (a folder per label) or with
  labels from a table (``file,label[,group]``), for image-level annotation.
- :func:`load_broden`: a folder in the Broden layout (Bau et al. 2017) with per-image
  segmentation masks, for pixel-level dissection.
- :func:`concepts_from_stimuli`: any images, with the eleven basic colour concepts
  computed from their pixels (:func:`color_names`), so pixel-level dissection runs
  without downloaded masks.

Colour rule
-----------
A pixel is named by its nearest prototype in CIELAB (D65 white, Euclidean distance,
i.e. CIE76 Delta E). The prototypes are the CSS Color Module Level 3 keyword colours
of the eleven Berlin & Kay basic colour terms (``brown`` = CSS ``saddlebrown``,
``grey`` = CSS ``gray``): see :data:`COLOR_PROTOTYPES`. This is a fixed, documented
stand-in for the learned van de Weijer et al. (2009) colour-name model Broden uses; it
agrees with it on saturated colours and greys, and differs on borderline hues.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image

from .exceptions import (
    InvalidDataError,
    MissingFileError,
    ShapeMismatchError,
    StimulusError,
)
from .models import Preprocessing
from .stimuli import IMAGE_EXTENSIONS, StimulusSet, load_stimuli

__all__ = [
    "COLOR_NAMES",
    "COLOR_PROTOTYPES",
    "rgb_to_lab",
    "color_names",
    "ConceptProbe",
    "concepts_from_stimuli",
    "load_broden",
    "labelled_stimuli",
    "decode_segmentation",
]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

#: The eleven basic colour terms (Berlin & Kay 1969), as Broden labels colour.
COLOR_NAMES = ("black", "blue", "brown", "grey", "green", "orange", "pink", "purple", "red", "white", "yellow")

#: sRGB (0-255) prototype of each colour name: CSS Level 3 keyword colours.
COLOR_PROTOTYPES: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "blue": (0, 0, 255),
    "brown": (139, 69, 19),
    "grey": (128, 128, 128),
    "green": (0, 128, 0),
    "orange": (255, 165, 0),
    "pink": (255, 192, 203),
    "purple": (128, 0, 128),
    "red": (255, 0, 0),
    "white": (255, 255, 255),
    "yellow": (255, 255, 0),
}

_SRGB_TO_XYZ = torch.tensor([
    [0.412453, 0.357580, 0.180423],
    [0.212671, 0.715160, 0.072169],
    [0.019334, 0.119193, 0.950227],
], dtype=torch.float64)
_D65 = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
_BRODEN_FIXED = ("image", "split", "ih", "iw", "sh", "sw")
_IMAGE_LEVEL = ("scene", "texture")


def rgb_to_lab(rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Convert sRGB in [0, 1] (channels last, ``(..., 3)``) to CIELAB (D65).

    The standard sRGB transfer function and matrix (IEC 61966-2-1) and the CIE 1976
    L*a*b* formulas; identical to ``skimage.color.rgb2lab``.
    """
    c = torch.as_tensor(rgb, dtype=torch.float64)
    if c.shape[-1] != 3:
        raise ShapeMismatchError(f"rgb_to_lab needs channels last (..., 3); got shape {tuple(c.shape)}.")
    linear = torch.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = (linear @ _SRGB_TO_XYZ.T) / _D65
    delta = 6 / 29
    f = torch.where(xyz > delta**3, xyz.clamp(min=0) ** (1 / 3), xyz / (3 * delta**2) + 4 / 29)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


_PROTOTYPES_LAB = None


def color_names(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Name every pixel with one of the eleven basic colours (index into :data:`COLOR_NAMES`).

    Parameters
    ----------
    images : array or tensor
        Float RGB in [0, 1], channels first: ``(3, H, W)`` or ``(N, 3, H, W)``.

    Returns
    -------
    torch.Tensor
        Integer colour index per pixel, shape ``(H, W)`` or ``(N, H, W)``: the nearest
        prototype of :data:`COLOR_PROTOTYPES` in CIELAB (see the module docstring).
    """
    global _PROTOTYPES_LAB
    if _PROTOTYPES_LAB is None:
        _PROTOTYPES_LAB = rgb_to_lab(torch.tensor([COLOR_PROTOTYPES[n] for n in COLOR_NAMES]) / 255.0)
    x = torch.as_tensor(images)
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ShapeMismatchError(f"color_names needs (3, H, W) or (N, 3, H, W) RGB images; got {tuple(x.shape)}.")
    lab = rgb_to_lab(x.movedim(-3, -1).clamp(0, 1))
    # squared distance up to the per-pixel constant |lab|^2: |p|^2 - 2 lab . p
    dist = (_PROTOTYPES_LAB**2).sum(-1) - 2 * lab @ _PROTOTYPES_LAB.T
    return dist.argmin(-1)


def decode_segmentation(path: str | os.PathLike) -> np.ndarray:
    """Read a Broden segmentation PNG: label number = R + 256 * G per pixel (0 = unlabelled)."""
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.int64)
    except FileNotFoundError as err:
        raise MissingFileError(f"Segmentation mask {path} does not exist (named in index.csv).") from err
    except OSError as err:
        raise StimulusError(f"Segmentation mask {path} is not a readable PNG ({err}).") from err
    return rgb[..., 0] + 256 * rgb[..., 1]


def _labels_to_frame(labels: torch.Tensor, image_hw: tuple[int, int], prep: Preprocessing) -> torch.Tensor:
    """Bring an integer label map into the network-input frame (nearest neighbour, never blended)."""
    x = labels[None].float()
    if tuple(x.shape[-2:]) != tuple(image_hw):
        x = TF.resize(x, list(image_hw), interpolation=TF.InterpolationMode.NEAREST)
    if prep.resize is not None:
        size = list(prep.resize) if isinstance(prep.resize, tuple) else prep.resize
        x = TF.resize(x, size, interpolation=TF.InterpolationMode.NEAREST)
    if prep.crop is not None:
        x = TF.center_crop(x, [prep.crop, prep.crop])
    return x[0].round().long()


@dataclass
class ConceptProbe:
    """A probe set for pixel-level dissection: stimuli and, per stimulus, concept annotations.

    Parameters
    ----------
    stimuli : StimulusSet
        The images.
    concepts : sequence of str
        Concept names; a concept's index is its position.
    concept_category : sequence of str
        The category of each concept (``color``, ``object``, ``part``, ``material``,
        ``scene``, ``texture``, ...).
    numbers : sequence of int
        The label number of each concept in the segmentation PNGs (Broden numbers).
    annotations : list of list of (str, path or int)
        Per stimulus: ``(category, source)`` pairs; a path is a segmentation PNG (label
        number = R + 256 G), an int a whole-image label number (scene, texture).
    pixel_colors : bool
        Add the eleven colour concepts computed from each image's pixels.
    mask_sizes : list of (int, int) or None
        The segmentation size each stimulus's PNGs must have (index.csv ``sh``, ``sw``).
    name : str
        Provenance.
    """

    stimuli: StimulusSet
    concepts: np.ndarray
    concept_category: np.ndarray
    numbers: np.ndarray
    annotations: list = field(default_factory=list)
    pixel_colors: bool = False
    mask_sizes: list | None = None
    name: str = "probe"

    def __post_init__(self) -> None:
        self.concepts = np.asarray(self.concepts, dtype=str)
        self.concept_category = np.asarray(self.concept_category, dtype=str)
        self.numbers = np.asarray(self.numbers, dtype=np.int64)
        if not (self.concepts.shape == self.concept_category.shape == self.numbers.shape):
            raise ShapeMismatchError("concepts, concept_category and numbers need one entry per concept.")
        if not self.annotations:
            self.annotations = [[] for _ in range(len(self.stimuli))]
        if len(self.annotations) != len(self.stimuli):
            raise ShapeMismatchError(f"{len(self.annotations)} annotation lists for {len(self.stimuli)} stimuli.")
        if self.pixel_colors:
            self._add_colors()
        self.categories = tuple(dict.fromkeys(self.concept_category.tolist()))
        lookup = np.full(int(self.numbers.max(initial=0)) + 1, -1, dtype=np.int64)
        valid = self.numbers >= 0
        lookup[self.numbers[valid]] = np.flatnonzero(valid)
        self._lookup = torch.from_numpy(lookup)

    def _add_colors(self) -> None:
        known = {(n, c): i for i, (n, c) in enumerate(zip(self.concepts, self.concept_category))}
        index = []
        for color in COLOR_NAMES:
            if (color, "color") not in known:
                self.concepts = np.append(self.concepts, color)
                self.concept_category = np.append(self.concept_category, "color")
                self.numbers = np.append(self.numbers, -1)
                known[(color, "color")] = self.concepts.size - 1
            index.append(known[(color, "color")])
        self._color_index = torch.tensor(index)

    def __len__(self) -> int:
        return len(self.stimuli)

    def __repr__(self) -> str:
        return f"<ConceptProbe {self.name!r}: {len(self)} stimuli, {self.concepts.size} concepts in {list(self.categories)}>"

    def label_maps(self, index: int, image: torch.Tensor, frame: torch.Tensor, prep: Preprocessing,
                   size: tuple[int, int] | None = None) -> list[tuple[int, torch.Tensor]]:
        """Return ``(category index, concept-index map)`` pairs of one stimulus in the input frame.

        ``image`` is the stimulus as loaded, ``frame`` the same image after the subject's
        resize/crop (in [0, 1]); maps hold concept indices and -1 where unlabelled. With
        ``size`` (H, W) every map is resampled there (nearest neighbour; colours are named
        on the nearest-resampled pixels, the same pixels a resampled colour map would keep).
        """
        if size is not None and tuple(size) != tuple(frame.shape[-2:]):
            frame_at = F.interpolate(frame[None], size=tuple(size), mode="nearest")[0]

            def resample(m: torch.Tensor) -> torch.Tensor:
                return F.interpolate(m[None, None].float(), size=tuple(size), mode="nearest")[0, 0].long()
        else:
            frame_at = frame

            def resample(m: torch.Tensor) -> torch.Tensor:
                return m
        out: list[tuple[int, torch.Tensor]] = []
        cat_index = {c: i for i, c in enumerate(self.categories)}
        expected = self.mask_sizes[index] if self.mask_sizes is not None else None
        for category, source in self.annotations[index]:
            if isinstance(source, (int, np.integer)):
                number = int(source)
                concept = int(self._lookup[number]) if 0 <= number < self._lookup.numel() else -1
                if concept < 0:
                    raise InvalidDataError(f"Stimulus {self.stimuli.ids[index]!r}: {category} label {number} is not in label.csv.")
                out.append((cat_index[category], torch.full(tuple(frame_at.shape[-2:]), concept, dtype=torch.long)))
                continue
            raw = decode_segmentation(source)
            if expected is not None and tuple(raw.shape) != tuple(expected):
                raise ShapeMismatchError(
                    f"Mask {source} is {raw.shape[1]}x{raw.shape[0]} px, but index.csv gives sw x sh = "
                    f"{expected[1]}x{expected[0]} for {self.stimuli.ids[index]!r}. Regenerate the mask or fix index.csv."
                )
            numbers = torch.from_numpy(raw)
            numbers = torch.where(numbers < self._lookup.numel(), numbers, torch.zeros_like(numbers))
            concepts = torch.where(numbers > 0, self._lookup[numbers], torch.full_like(numbers, -1))
            out.append((cat_index[category], resample(_labels_to_frame(concepts, tuple(image.shape[-2:]), prep))))
        if self.pixel_colors:
            out.append((cat_index["color"], self._color_index[color_names(frame_at)]))
        return out


def concepts_from_stimuli(stimuli: Any) -> ConceptProbe:
    """A probe set of any images whose concepts are the eleven colours of their pixels.

    Parameters
    ----------
    stimuli : StimulusSet, str, path or array
        Anything :func:`neurocnn.stimuli.load_stimuli` accepts.

    Returns
    -------
    ConceptProbe
        Concepts :data:`COLOR_NAMES`, category ``color``.
    """
    stim = load_stimuli(stimuli)
    empty = np.array([], dtype=str)
    return ConceptProbe(stim, empty, empty, np.array([], dtype=np.int64), pixel_colors=True, name=stim.name)


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist; a Broden folder needs index.csv and label.csv.")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        missing = [c for c in required if c not in columns]
        if missing:
            raise InvalidDataError(
                f"{path} lacks column(s) {missing}; it has {columns}. The Broden layout needs {list(required)}."
            )
        return list(reader)


def _primary_category(text: str) -> str:
    """``"object(12);part(3)"`` -> ``"object"`` (the category the label is annotated in most)."""
    best, count = "", -1
    for item in filter(None, text.split(";")):
        name, _, rest = item.partition("(")
        n = int(rest.rstrip(")") or 0) if rest else 0
        if n > count:
            best, count = name.strip(), n
    return best


def _label_table(root: Path, categories: Sequence[str]) -> tuple[list[int], list[str], list[str]]:
    rows = _read_csv(root / "label.csv", ("number", "name"))
    numbers = [int(r["number"]) for r in rows]
    names = [r["name"] for r in rows]
    if rows and "category" in rows[0] and any(r["category"] for r in rows):
        cats = [_primary_category(r["category"]) for r in rows]
    else:
        by_number: dict[int, str] = {}
        for category in categories:
            path = root / f"c_{category}.csv"
            if path.is_file():
                for r in _read_csv(path, ("number",)):
                    by_number.setdefault(int(r["number"]), category)
        if not by_number:
            raise InvalidDataError(
                f"{root / 'label.csv'} has no 'category' column and there are no c_<category>.csv files; "
                "give either, so each concept has a category."
            )
        cats = [by_number.get(n, "") for n in numbers]
    return numbers, names, cats


def load_broden(
    folder: str | os.PathLike,
    *,
    categories: Sequence[str] | None = None,
    split: str | None = None,
    colors: str = "broden",
    max_images: int | None = None,
) -> ConceptProbe:
    """Read a probe set in the Broden layout (Bau et al. 2017) from a folder.

    Layout: ``index.csv`` (columns ``image`` [path under ``images/``], optionally
    ``split``, ``ih``, ``iw``, ``sh``, ``sw``, then one column per category whose cells
    list ``;``-separated segmentation PNGs, or for ``scene``/``texture`` whole-image
    label numbers), ``label.csv`` (``number``, ``name``, ``category`` like
    ``object(12);part(3)``; the concept's category is the one it is annotated in most),
    optional ``c_<category>.csv`` (``code``, ``number``, ...) used when ``label.csv``
    has no category column, and ``images/`` with the images and masks. A mask pixel's
    label number is R + 256 G; 0 means unlabelled.

    Parameters
    ----------
    folder : path
        The Broden root folder.
    categories : sequence of str, optional
        Categories to keep (default all index columns).
    split : str, optional
        Keep only rows of this split (``train``/``val``).
    colors : {"broden", "pixels"}
        Use Broden's colour masks, or compute the eleven colour concepts from the pixels
        (:func:`color_names`) in place of a ``color`` column.
    max_images : int, optional
        Keep the first ``max_images`` rows.

    Returns
    -------
    ConceptProbe

    Raises
    ------
    MissingFileError
        No index.csv/label.csv, or an image named in index.csv is missing.
    InvalidDataError
        Missing columns, an unknown category, a label number not in label.csv.
    """
    from ._validation import check_option

    root = Path(folder)
    if not root.is_dir():
        raise MissingFileError(f"Broden folder {root} does not exist.")
    check_option("colors", colors, ("broden", "pixels"))
    rows = _read_csv(root / "index.csv", ("image",))
    columns = [c for c in rows[0] if c not in _BRODEN_FIXED] if rows else []
    if categories is not None:
        for c in categories:
            check_option("Broden category", c, columns + (["color"] if colors == "pixels" else []))
        columns = [c for c in columns if c in categories]
    if colors == "pixels":
        columns = [c for c in columns if c != "color"]
    if split is not None:
        if rows and "split" not in rows[0]:
            raise InvalidDataError(f"split={split!r} given but {root / 'index.csv'} has no 'split' column.")
        rows = [r for r in rows if r["split"] == split]
    rows = rows[:max_images] if max_images is not None else rows
    if not rows:
        raise StimulusError(f"{root / 'index.csv'} has no rows (after split={split!r}).")
    numbers, names, cats = _label_table(root, columns)
    images = [root / "images" / r["image"] for r in rows]
    missing = [p for p in images if not p.is_file()]
    if missing:
        raise MissingFileError(f"{len(missing)} image(s) named in index.csv are missing, e.g. {missing[0]}.")
    annotations, sizes = [], []
    for r in rows:
        entries: list[tuple[str, Any]] = []
        for c in columns:
            for item in filter(None, (r.get(c) or "").split(";")):
                if c in _IMAGE_LEVEL or item.strip().isdigit():
                    entries.append((c, int(item)))
                else:
                    entries.append((c, root / "images" / item.strip()))
        annotations.append(entries)
        sizes.append((int(r["sh"]), int(r["sw"])) if r.get("sh") and r.get("sw") else None)
    used = {c for entry in annotations for c, _ in entry}
    keep = [i for i, c in enumerate(cats) if c in used]
    stim = StimulusSet(images, ids=[Path(r["image"]).stem for r in rows], metadata={
        "split": [r.get("split", "") for r in rows]}, name=root.name)
    probe = ConceptProbe(
        stim, np.asarray(names)[keep], np.asarray(cats)[keep], np.asarray(numbers)[keep],
        annotations=annotations, pixel_colors=colors == "pixels",
        mask_sizes=sizes if any(s is not None for s in sizes) else None, name=root.name,
    )
    return probe


def labelled_stimuli(
    source: str | os.PathLike | StimulusSet,
    *,
    groups: Mapping[str, str] | None = None,
) -> StimulusSet:
    """A labelled probe set for image-level annotation from a folder per label or a table.

    Parameters
    ----------
    source : path or StimulusSet
        A folder whose first-level subfolders are the labels, or a CSV file with columns
        ``file`` (path relative to the table's folder) and ``label`` (several labels
        separated by ``;``), optionally ``group`` (the label's type).
    groups : mapping, optional
        Label -> group (type), added as metadata ``group``.

    Returns
    -------
    StimulusSet
        Metadata ``label`` (and ``group``); with several labels per image, one 0/1
        column ``label_<name>`` per label instead.

    Raises
    ------
    InvalidDataError
        A table without ``file``/``label`` columns, or a label missing from ``groups``.
    StimulusError
        A folder without label subfolders.
    """
    if isinstance(source, StimulusSet):
        stim = source
        if "label" not in stim.metadata and "category" in stim.metadata:
            stim = StimulusSet(stim.paths or _array_of(stim), ids=stim.ids, metadata={**stim.metadata, "label": stim.metadata["category"]}, name=stim.name)
        return _with_groups(stim, groups)
    path = Path(source)
    if path.is_dir():
        stim = load_stimuli(path, mixed_sizes="allow")
        if "category" not in stim.metadata:
            raise StimulusError(f"{path} has no subfolders; put each label's images in a subfolder named after the label.")
        stim = StimulusSet(stim.paths, ids=stim.ids, metadata={"label": stim.metadata["category"]}, name=path.name)
        return _with_groups(stim, groups)
    rows = _read_csv(path, ("file", "label"))
    if not rows:
        raise StimulusError(f"{path} has no rows.")
    files = [(path.parent / r["file"]) for r in rows]
    for f in files:
        if f.suffix.lower() not in IMAGE_EXTENSIONS or not f.is_file():
            raise StimulusError(f"{f} (row of {path}) is not an existing image file.")
    label_lists = [[s.strip() for s in r["label"].split(";") if s.strip()] for r in rows]
    metadata: dict[str, Any] = {}
    if all(len(ls) == 1 for ls in label_lists):
        metadata["label"] = [ls[0] for ls in label_lists]
    else:
        names = sorted({x for ls in label_lists for x in ls})
        for name in names:
            metadata[f"label_{name}"] = [int(name in ls) for ls in label_lists]
    table_groups = {ls[0]: r["group"] for ls, r in zip(label_lists, rows) if r.get("group")}
    stim = StimulusSet(files, metadata=metadata, name=path.stem)
    return _with_groups(stim, {**table_groups, **(groups or {})} or None)


def _array_of(stim: StimulusSet) -> torch.Tensor:
    return torch.stack([stim.load(i) for i in range(len(stim))])


def _with_groups(stim: StimulusSet, groups: Mapping[str, str] | None) -> StimulusSet:
    if not groups or "label" not in stim.metadata:
        return stim
    labels = stim.metadata["label"].astype(str)
    missing = sorted(set(labels.tolist()) - set(groups))
    if missing:
        raise InvalidDataError(f"groups has no entry for label(s) {missing}; give a group for every label.")
    images = stim.paths or _array_of(stim)
    return StimulusSet(images, ids=stim.ids, metadata={**stim.metadata, "group": [groups[x] for x in labels]}, name=stim.name)
