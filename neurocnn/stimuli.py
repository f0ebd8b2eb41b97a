"""Stimulus sets: images plus per-stimulus metadata.

A :class:`StimulusSet` holds stimulus ids, per-stimulus metadata (which become
xarray coordinates on the ``stimulus`` dim of every result) and the images, loaded
lazily from files or held as an array. Images are returned as float tensors in
[0, 1] with shape (3, H, W); grayscale images are replicated to three channels.
Images with transparency (RGBA, LA, palette images with a transparent colour) are
composited onto a white background (:data:`ALPHA_BACKGROUND`), as a viewer shows
them; the alpha channel is never just dropped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import xarray as xr
from PIL import Image, UnidentifiedImageError

from ._validation import check_option, default_ids
from .exceptions import ShapeMismatchError, StimulusError, foreign_errors

__all__ = [
    "StimulusSet", "load_stimuli", "list_stimulus_sets", "synthetic_stimuli", "IMAGE_EXTENSIONS",
    "image_files", "natural_key", "ALPHA_BACKGROUND",
]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

#: RGB background (0-255) onto which transparent images are composited.
ALPHA_BACKGROUND = (255, 255, 255)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm")
MixedSizes = Literal["error", "allow"]


class StimulusSet:
    """An ordered set of images with ids and metadata.

    Parameters
    ----------
    images : sequence of path, or numpy.ndarray / torch.Tensor
        Image files, or an array of shape (N, H, W), (N, H, W, 3) (uint8 or float in
        [0, 1]) or (N, 3, H, W) (float in [0, 1]).
    ids : sequence of str, optional
        Unique stimulus ids; default: file stems, or positions ``"0"``, ``"1"`` ... for arrays
    metadata : mapping of str to sequence, optional
        Per-stimulus metadata (category, face, ...), one value per stimulus.
    name : str
        Name of the set (provenance).

    Raises
    ------
    StimulusError
        If there are no images, ids are not unique, or an array has the wrong shape.
    ShapeMismatchError
        If metadata or ids do not have one value per stimulus.
    """

    def __init__(
        self,
        images: Sequence[str | os.PathLike] | np.ndarray | torch.Tensor,
        *,
        ids: Sequence[str] | None = None,
        metadata: Mapping[str, Sequence] | None = None,
        name: str = "stimuli",
    ) -> None:
        if isinstance(images, (np.ndarray, torch.Tensor)):
            self._array: torch.Tensor | None = _array_to_tensor(images)
            self._paths: list[Path] = []
            n = self._array.shape[0]
            fallback = list(default_ids(n))
        else:
            self._array = None
            self._paths = [Path(p) for p in images]
            n = len(self._paths)
            fallback = [p.stem for p in self._paths]
            if len(set(fallback)) < n:
                fallback = [f"{p.parent.name}/{p.stem}" for p in self._paths]
            if len(set(fallback)) < n:
                fallback = [str(p) for p in self._paths]
        if n == 0:
            raise StimulusError("The stimulus set is empty: give at least one image.")
        self.ids = np.asarray(list(ids) if ids is not None else fallback, dtype=str)
        if self.ids.shape != (n,):
            raise ShapeMismatchError(f"Got {self.ids.size} ids for {n} stimuli; give one id each.")
        if len(set(self.ids.tolist())) != n:
            dup = sorted({i for i in self.ids.tolist() if (self.ids == i).sum() > 1})
            raise StimulusError(f"Stimulus ids must be unique; repeated: {dup[:5]}.")
        self.metadata: dict[str, np.ndarray] = {}
        for key, values in (metadata or {}).items():
            arr = np.asarray(values)
            if arr.shape != (n,):
                raise ShapeMismatchError(
                    f"Metadata {key!r} has shape {arr.shape}; it needs one value per stimulus ({n},)."
                )
            self.metadata[key] = arr
        self.name = name

    def __len__(self) -> int:
        return int(self.ids.size)

    def content_sha256(self) -> str:
        """sha256 of what the images are: file contents (not names or dates) or array bytes.

        Used to fingerprint extraction stores, so images edited in place under the same
        file names never return old activations. File hashes are cached per process on
        keys that change whenever a file's content can have changed (see
        :func:`neurocnn.datasets.sha256sum`).
        """
        from .datasets import sha256sum

        h = hashlib.sha256()
        if self._array is not None:
            arr = np.ascontiguousarray(self._array.numpy())
            h.update(f"array{arr.shape}{arr.dtype}".encode())
            h.update(arr.tobytes())
        else:
            for path in self._paths:
                with foreign_errors(f"reading image file {path}", mode="read"):
                    h.update(sha256sum(path).encode())
        return h.hexdigest()

    def __repr__(self) -> str:
        meta = ", ".join(self.metadata) or "none"
        return f"<StimulusSet {self.name!r}: {len(self)} stimuli; metadata: {meta}>"

    @property
    def paths(self) -> list[Path]:
        """Image files (empty for array-backed sets)."""
        return list(self._paths)

    def coords(self) -> dict[str, tuple[str, np.ndarray]]:
        """Return xarray coordinates for the ``stimulus`` dim (ids and metadata)."""
        out = {"stimulus": ("stimulus", self.ids)}
        out.update({k: ("stimulus", v) for k, v in self.metadata.items()})
        return out

    def subset(self, index: Sequence[int] | np.ndarray) -> StimulusSet:
        """Return a new set with the stimuli at ``index`` (integers or a boolean mask)."""
        index = np.asarray(index)
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise ShapeMismatchError(f"Boolean mask has shape {index.shape}, expected ({len(self)},).")
            index = np.flatnonzero(index)
        if index.size and (index.min() < -len(self) or index.max() >= len(self)):
            raise StimulusError(f"Stimulus index out of range for a set of {len(self)} stimuli.")
        images = self._array[index] if self._array is not None else [self._paths[i] for i in index]
        return StimulusSet(
            images,
            ids=self.ids[index],
            metadata={k: v[index] for k, v in self.metadata.items()},
            name=self.name,
        )

    def where(self, **conditions: object) -> StimulusSet:
        """Return the stimuli whose metadata equal the given values, e.g. ``where(category="face")``.

        A value may be a list, meaning "any of these".
        """
        mask = np.ones(len(self), dtype=bool)
        for key, value in conditions.items():
            check_option("metadata field", key, self.metadata)
            values = value if isinstance(value, (list, tuple, set)) else [value]
            mask &= np.isin(self.metadata[key], list(values))
        if not mask.any():
            raise StimulusError(f"No stimulus in {self.name!r} matches {conditions}.")
        return self.subset(mask)

    def load(self, index: int) -> torch.Tensor:
        """Return image ``index`` as a float tensor (3, H, W) in [0, 1]."""
        if self._array is not None:
            return self._array[index]
        return _read_image(self._paths[index])

    def batches(
        self,
        batch_size: int,
        transform: Callable[[torch.Tensor], torch.Tensor],
        *,
        starts: Sequence[int] | None = None,
    ) -> "BatchIterator":
        """Iterate over ``(start, batch)`` with ``transform`` applied to each image.

        ``transform`` maps one (3, H, W) image to a fixed-size tensor (e.g. a
        :class:`~neurocnn.models.Preprocessing`), so images of any size can be batched.
        ``starts`` restricts the iteration to the batches beginning at those indices.
        """
        return BatchIterator(self, batch_size, transform, starts)

    def images(self, size: int | None = None) -> xr.DataArray:
        """Return all images as uint8 xarray (stimulus, y, x, rgb), resized to ``size`` if given.

        Raises
        ------
        ShapeMismatchError
            If images differ in size and ``size`` is None.
        """
        imgs = []
        for i in range(len(self)):
            img = self.load(i)
            if size is not None:
                img = torch.nn.functional.interpolate(
                    img[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
                )[0]
            imgs.append(img)
        shapes = {tuple(im.shape) for im in imgs}
        if len(shapes) > 1:
            raise ShapeMismatchError(f"Images differ in size {sorted(shapes)[:3]}; pass size=.")
        data = (torch.stack(imgs).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        return xr.DataArray(
            data.numpy(),
            dims=("stimulus", "y", "x", "rgb"),
            coords={**self.coords(), "rgb": ["r", "g", "b"]},
            attrs={"stimulus_set": self.name},
        )

    def check_sizes(self) -> tuple[int, int]:
        """Return the common (H, W) of all images; raise naming the first file that differs."""
        if self._array is not None:
            return int(self._array.shape[-2]), int(self._array.shape[-1])
        first = None
        for i in range(len(self)):
            with _open(self._paths[i]) as im:
                hw = (im.height, im.width)
            if first is None:
                first = hw
            elif hw != first:
                raise ShapeMismatchError(
                    f"{self._paths[i]} is {hw[1]}x{hw[0]} px but {self._paths[0]} is "
                    f"{first[1]}x{first[0]} px. Resize the images to one size, or load them with "
                    "mixed_sizes='allow' to let the model's preprocessing resize each image."
                )
        assert first is not None
        return first


class BatchIterator:
    """Iterator over preprocessed batches of a :class:`StimulusSet` (see ``StimulusSet.batches``)."""

    def __init__(
        self,
        stimuli: StimulusSet,
        batch_size: int,
        transform: Callable[[torch.Tensor], torch.Tensor],
        starts: Sequence[int] | None = None,
    ) -> None:
        self.stimuli, self.batch_size, self.transform = stimuli, batch_size, transform
        self.starts = list(range(0, len(stimuli), batch_size) if starts is None else starts)

    def __len__(self) -> int:
        return len(self.starts)

    def __iter__(self):
        n = len(self.stimuli)
        for start in self.starts:
            stop = min(start + self.batch_size, n)
            yield start, torch.stack([self.transform(self.stimuli.load(i)) for i in range(start, stop)])


def _array_to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    # Channel-last unless only channel-first fits; when both fit, numpy arrays are read
    # channel-last (image convention) and torch tensors channel-first (torch convention).
    channel_last_default = isinstance(images, np.ndarray)
    if isinstance(images, np.ndarray) and images.dtype.kind not in "biuf":
        raise StimulusError(
            f"Image array has dtype {images.dtype} ({'strings' if images.dtype.kind in 'US' else 'non-numeric values'}); "
            "pass numeric images (uint8 0-255 or float in [0, 1]), or file paths as a list of "
            "str, not as an array."
        )
    if images.ndim == 4 and 4 in (images.shape[1], images.shape[-1]) and not (
        images.shape[-1] in (1, 3) or images.shape[1] in (1, 3)
    ):
        raise StimulusError(
            f"Image array has shape {tuple(images.shape)}: 4 channels (RGBA?). Composite the alpha "
            "channel onto a background first (rgb * a + background * (1 - a)) and pass RGB."
        )
    t = torch.as_tensor(np.asarray(images) if isinstance(images, np.ndarray) else images)
    if t.ndim == 3:
        t = t[:, None].expand(-1, 3, -1, -1)
    elif t.ndim == 4 and t.shape[-1] in (1, 3) and (t.shape[1] not in (1, 3) or channel_last_default):
        t = t.permute(0, 3, 1, 2)
    if t.ndim != 4 or t.shape[1] not in (1, 3):
        raise StimulusError(
            f"Image array has shape {tuple(images.shape)}; expected (N, H, W), (N, H, W, 3) or (N, 3, H, W)."
        )
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    if t.dtype == torch.uint8:
        return t.float().div(255.0).contiguous()
    t = t.float()
    if not torch.isfinite(t).all():
        raise StimulusError("Image array contains NaN or inf values.")
    if t.min() < 0 or t.max() > 1:
        raise StimulusError(
            f"Float images must lie in [0, 1] (got range [{float(t.min()):.3g}, {float(t.max()):.3g}]); "
            "pass uint8 images or divide by 255. Do not pass normalized images: the model's "
            "preprocessing normalizes them."
        )
    return t.contiguous()


def _open(path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with foreign_errors(f"opening image {path}", (Image.DecompressionBombError, Image.DecompressionBombWarning)):
                return Image.open(path)
    except FileNotFoundError as err:
        raise StimulusError(f"Image file {path} does not exist.") from err
    except (UnidentifiedImageError, OSError) as err:
        raise StimulusError(f"{path} is not a readable image file ({err}). Remove it or fix it.") from err


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info)


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB of an image; transparent pixels are composited onto :data:`ALPHA_BACKGROUND`."""
    if not _has_alpha(im):
        return im.convert("RGB")
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _read_image(path: Path) -> torch.Tensor:
    with _open(path) as im:
        try:
            with foreign_errors(f"decoding image {path}", (Image.DecompressionBombError,)):
                rgb = np.asarray(_to_rgb(im))
        except OSError as err:
            raise StimulusError(f"{path} is truncated or corrupt ({err}).") from err
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div(255.0)


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, hidden files skipped), sorted.

    Raises
    ------
    StimulusError
        The folder has no files, or no image files.
    """
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise StimulusError(f"Folder {folder} contains no files; point to a folder of images.")
    bad = [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not images:
        raise StimulusError(
            f"Folder {folder} contains no image files (looked for {', '.join(IMAGE_EXTENSIONS)}); "
            f"found e.g. {bad[0].name}."
        )
    if bad:
        logger.info("ignoring %d non-image files in %s, e.g. %s", len(bad), folder, bad[0].name)
    return images


def natural_key(path: Path) -> tuple:
    """Sort key that orders ``img2`` before ``img10``."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path)))


def _from_folder(folder: Path, mixed_sizes: MixedSizes) -> StimulusSet:
    files = sorted(image_files(folder), key=natural_key)
    parents = [p.parent.relative_to(folder) for p in files]
    metadata = {}
    if any(str(p) != "." for p in parents):
        metadata["category"] = np.array([p.parts[0] if p.parts else "" for p in parents])
    stim = StimulusSet(files, metadata=metadata, name=folder.name)
    for path in files:
        _open(path).close()
    if mixed_sizes == "error":
        stim.check_sizes()
    return stim


class _SyntheticStimuli(StimulusSet):
    """Seeded noise images made on demand (nothing held in memory)."""

    def __init__(self, index: np.ndarray, size: int, seed: int) -> None:  # noqa: D107
        self._array, self._paths, self.name = None, [], "synthetic"
        self.ids = np.array([f"synth_{i:07d}" for i in index])
        self.metadata = {"seed": np.full(index.size, seed)}
        self._index, self._size, self._seed = index, size, seed

    def check_sizes(self) -> tuple[int, int]:  # noqa: D102
        return self._size, self._size

    def content_sha256(self) -> str:  # noqa: D102
        h = hashlib.sha256(f"synthetic:{self._seed}:{self._size}".encode())
        h.update(np.ascontiguousarray(self._index, dtype=np.int64).tobytes())
        return h.hexdigest()

    def load(self, index: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self._seed * 1_000_003 + int(self._index[index]))
        return torch.rand(3, self._size, self._size, generator=gen)

    def subset(self, index: Sequence[int] | np.ndarray) -> StimulusSet:
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        return _SyntheticStimuli(self._index[index], self._size, self._seed)


def synthetic_stimuli(n: int, *, size: int = 64, seed: int = 0) -> StimulusSet:
    """Return ``n`` seeded uniform-noise RGB images, generated when loaded.

    For benchmarks and scale tests: any number of stimuli at no memory cost; image
    ``i`` is the same on every machine for the same ``seed``.
    """
    from ._validation import check_positive_int, check_seed

    check_positive_int("n", n)
    check_positive_int("size", size)
    return _SyntheticStimuli(np.arange(n), size, check_seed(seed))


def _named_set(name: str) -> StimulusSet:
    from . import datasets

    return {"92images": datasets.load_92images_stimuli, "floc": datasets.load_floc_stimuli}[name]()


_NAMED_SETS = ("92images", "floc")


def list_stimulus_sets() -> list[str]:
    """Return the names of the built-in stimulus sets."""
    return list(_NAMED_SETS)


def load_stimuli(
    source: str | os.PathLike | Sequence[str | os.PathLike] | np.ndarray | torch.Tensor | StimulusSet,
    *,
    ids: Sequence[str] | None = None,
    metadata: Mapping[str, Sequence] | None = None,
    mixed_sizes: MixedSizes = "error",
) -> StimulusSet:
    """Load a stimulus set from a name, a folder, a list of files or an array.

    Parameters
    ----------
    source : str, path, list of paths, array, tensor or StimulusSet
        ``"92images"`` (Kriegeskorte et al. 2008; metadata: category, human, face,
        animal, natural and the 12 ``label_*`` category vectors) or ``"floc"``
        (fLoc faces/places/objects; metadata: category, domain, exemplar); a folder of
        images (searched recursively, natural sort order; first-level subfolder names
        become the ``category`` metadata); a list of image files; an image array.
    ids, metadata : optional
        Stimulus ids and per-stimulus metadata (not for named sets).
    mixed_sizes : {"error", "allow"}
        For folders: raise if images differ in size (default), or allow it and let the
        model's preprocessing resize each image.

    Returns
    -------
    StimulusSet

    Raises
    ------
    StimulusError
        Empty folder, no image files, an unreadable image (named), a bad array.
    ShapeMismatchError
        Images of different sizes with ``mixed_sizes="error"`` (both files named).
    UnknownNameError
        A string that is neither a named set nor an existing path.

    Examples
    --------
    >>> stim = load_stimuli("92images")  # doctest: +SKIP
    >>> stim.where(face=1)  # doctest: +SKIP
    """
    check_option("mixed_sizes policy", mixed_sizes, ("error", "allow"))
    if isinstance(source, StimulusSet):
        return source
    if isinstance(source, str) and source in _NAMED_SETS:
        if ids is not None or metadata is not None:
            raise StimulusError(f"{source!r} is a named set with its own ids and metadata.")
        return _named_set(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            stim = _from_folder(path, mixed_sizes)
            if ids is None and metadata is None:
                return stim
            return StimulusSet(stim.paths, ids=ids, metadata={**stim.metadata, **(metadata or {})}, name=stim.name)
        if path.is_file():
            source = [path]
        else:
            check_option("stimulus set or path", str(source), list(_NAMED_SETS))
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return StimulusSet(source, ids=ids, metadata=metadata, name="array")
    try:
        items = list(source)  # type: ignore[arg-type]
    except TypeError:
        raise StimulusError(
            f"Cannot load stimuli from a {type(source).__name__}; give a stimulus set name "
            f"({', '.join(_NAMED_SETS)}), a folder, a list of image files or an image array."
        ) from None
    odd = [p for p in items if not isinstance(p, (str, os.PathLike))]
    if odd or not items:
        raise StimulusError(
            f"A list of stimuli must hold image file paths (str or Path); got "
            f"{'an empty list' if not items else type(odd[0]).__name__ + ' ' + repr(odd[0])[:60]}. "
            "Pass an image array as one numpy array (N, H, W[, 3]), not a list."
        )
    files = [Path(p) for p in items]
    for p in files:
        _open(p).close()
    stim = StimulusSet(files, ids=ids, metadata=metadata, name="files")
    if mixed_sizes == "error":
        stim.check_sizes()
    return stim
