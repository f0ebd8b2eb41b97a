"""Volumetric fMRI searchlight: model-layer RDMs against the RDM of every voxel's sphere.

The algorithm of Cichy et al. (2016, Sci. Rep.) "algorithm-specific fMRI searchlight":
for every voxel of a brain mask, take the response patterns of the voxels within a
sphere of ``radius`` mm, compute the RDM of the stimuli over those voxels, and correlate
it with each model layer's RDM; the correlations form one brain map per layer.

Vectorized over centres: the sphere is one set of integer voxel offsets (from the
affine, so anisotropic voxels get ellipsoids in voxel space and spheres in mm), every
centre's neighbours are a gather into an index volume, each batch of centres gets its
per-sphere Gram matrices from one batched matrix product (``X_S^T X_S`` for all
spheres at once, torch/BLAS), the RDMs of the whole batch follow from the Gram matrices
(correlation, cosine, Euclidean), and all centres x all layers are compared in one
matrix product of rank-transformed, z-scored vectors (other comparison methods go
through :func:`neurocnn.rsa.compare_rdms`'s implementation). Batches can be spread over
a dask cluster (``client=``).

Significance: with several subjects a one-sample sign-flip test of the subject maps (their
mean), with one subject a permutation of the model RDMs' stimulus labels; FWE
correction by the maximum statistic over voxels, per layer.

Also here: :func:`simulate_volume` (plant RDMs into spheres on the MNI 2 mm grid),
NIfTI output (:func:`to_nifti`, :func:`save_maps`) and nilearn plots
(:func:`plot_searchlight`).
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import nibabel as nib
import numpy as np
import scipy.stats
import torch
import xarray as xr

from ._validation import check_option, check_positive_int, check_seed, numpy_rng
from ._version import version
from .datasets import mni_brain_mask
from .exceptions import InvalidDataError, ShapeMismatchError
from .io import clean_attrs, load_nifti
from .rsa import COMPARE_METHODS, compare_rdms
from .rsa._stack import _as_stack, _to_square
from .scale import map_tasks

__all__ = [
    "SEARCHLIGHT_METRICS",
    "Volume",
    "searchlight",
    "sphere_offsets",
    "to_nifti",
    "save_maps",
    "plot_searchlight",
    "simulate_volume",
]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

SearchlightMetric = Literal["correlation", "cosine", "euclidean", "sqeuclidean"]
NanPolicy = Literal["drop", "raise"]

_BATCH_BYTES = 64 * 2**20  # float64 gathered sphere data per batch
_TAU_SUBBATCH_ELEMENTS = 2**25


class Volume(NamedTuple):
    """A simulated data set: 4-D responses, its brain mask and the stimulus ids."""

    img: nib.Nifti1Image
    mask: nib.Nifti1Image
    stimulus_ids: np.ndarray


# ------------------------------------------------------------------------ input
def _subject_volume(brain: Any, what: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """A 4-D image or a list of 3-D images -> (data (x, y, z, n) float32, affine, shape)."""
    if isinstance(brain, (list, tuple)):
        imgs = [load_nifti(b, f"{what}[{i}]") for i, b in enumerate(brain)]
        if not imgs:
            raise ShapeMismatchError(f"{what} is an empty list of images.")
        ref = imgs[0]
        for i, img in enumerate(imgs):
            if img.ndim != 3 and not (img.ndim == 4 and img.shape[3] == 1):
                raise ShapeMismatchError(
                    f"{what}[{i}] has shape {img.shape}; a list must hold one 3-D image per "
                    "stimulus (pass a dict {subject: images} for several subjects)."
                )
            if img.shape[:3] != ref.shape[:3] or not np.allclose(img.affine, ref.affine, atol=1e-4):
                raise ShapeMismatchError(
                    f"{what}[{i}] has shape {img.shape[:3]} / affine differing from {what}[0] "
                    f"{ref.shape[:3]}; resample all images to one grid first "
                    "(nilearn.image.resample_to_img)."
                )
        data = np.stack([np.asarray(img.dataobj, dtype=np.float32).reshape(img.shape[:3]) for img in imgs], -1)
        return data, np.asarray(ref.affine, dtype=np.float64), tuple(ref.shape[:3])
    img = load_nifti(brain, what)
    if img.ndim != 4:
        raise ShapeMismatchError(
            f"{what} has shape {img.shape}; expected a 4-D image (x, y, z, stimulus) or a list "
            "of 3-D images, one per stimulus."
        )
    data = np.asarray(img.dataobj, dtype=np.float32)
    return data, np.asarray(img.affine, dtype=np.float64), tuple(img.shape[:3])


def _mask_array(mask: Any, shape: tuple[int, int, int], affine: np.ndarray) -> tuple[np.ndarray, str]:
    if mask is None:
        ref = nib.Nifti1Image(np.zeros(shape, np.uint8), affine)
        arr = np.asarray(mni_brain_mask(ref).dataobj) > 0
        if not arr.any():
            raise ShapeMismatchError(
                "the MNI152 brain mask does not overlap the data's grid (is the data in MNI "
                "space?); pass mask= explicitly."
            )
        return arr, "nilearn MNI152 brain mask (2 mm), resampled to the data"
    if isinstance(mask, np.ndarray):
        arr, source = mask, "array"
        if arr.shape != shape:
            raise ShapeMismatchError(f"mask has shape {arr.shape}, data {shape}.")
    else:
        img = load_nifti(mask, "mask")
        source = str(mask) if isinstance(mask, (str, os.PathLike)) else "image"
        if tuple(img.shape[:3]) != shape or (img.ndim == 4 and img.shape[3] != 1) or img.ndim > 4:
            raise ShapeMismatchError(
                f"mask has shape {img.shape}, the data {shape}; resample the mask to the data "
                "(nilearn.image.resample_to_img(mask, data, interpolation='nearest'))."
            )
        if not np.allclose(img.affine, affine, atol=1e-3):
            raise ShapeMismatchError(
                "mask and data have different affines:\n"
                f"mask:\n{np.round(img.affine, 3)}\ndata:\n{np.round(affine, 3)}\n"
                "Resample the mask to the data (nilearn.image.resample_to_img, nearest)."
            )
        arr = np.asarray(img.dataobj).reshape(shape)
    arr = np.asarray(arr) != 0
    if not arr.any():
        raise InvalidDataError("the brain mask is empty (no non-zero voxel).")
    return arr, source


def sphere_offsets(affine: np.ndarray, radius: float) -> np.ndarray:
    """Integer voxel offsets within ``radius`` mm of a voxel, for a grid with ``affine``.

    Parameters
    ----------
    affine : ndarray (4, 4)
        Voxel-to-world affine; its linear part gives the mm distance of an offset.
    radius : float
        Radius in mm (a voxel at exactly ``radius`` is inside).

    Returns
    -------
    ndarray (K, 3) of int
        Offsets ``(di, dj, dk)``, the centre ``(0, 0, 0)`` first, sorted by distance.

    Raises
    ------
    InvalidDataError
        ``radius`` not positive, or smaller than the smallest voxel side (the sphere
        would be the centre voxel alone).

    Examples
    --------
    >>> len(sphere_offsets(np.diag([2.0, 2.0, 2.0, 1.0]), 2.0))
    7
    """
    radius = float(radius)
    lin = np.asarray(affine, dtype=np.float64)[:3, :3]
    sizes = np.sqrt((lin**2).sum(0))
    if not np.isfinite(radius) or radius <= 0:
        raise InvalidDataError(f"radius must be a positive number of mm, got {radius}.")
    if radius < sizes.min():
        raise InvalidDataError(
            f"radius {radius} mm is smaller than a voxel (voxel sizes "
            f"{np.round(sizes, 3).tolist()} mm): every sphere would be its centre voxel "
            f"alone. Use a radius of at least {sizes.min():.3g} mm (typically 2-3 voxels)."
        )
    reach = np.floor(radius / sizes + 1e-9).astype(int)
    grids = np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij")
    off = np.stack([g.ravel() for g in grids], 1)
    dist = np.sqrt(((off @ lin.T) ** 2).sum(1))
    keep = dist <= radius * (1 + 1e-9)
    off, dist = off[keep], dist[keep]
    order = np.lexsort((off[:, 2], off[:, 1], off[:, 0], dist))
    return off[order]


# ------------------------------------------------------------------- per-sphere RDMs
# Each metric turns a batch of per-sphere Gram matrices G = X_S^T X_S (c, n, n), IN
# PLACE, into RDMs, given the column sums s (c, n) and voxel counts cnt (c,) of the
# spheres; it returns the valid flags (c,) (False where a pattern is constant/zero).
def _normalize(G: torch.Tensor) -> torch.Tensor:
    d = torch.diagonal(G, dim1=1, dim2=2).clone()
    ok = (d > 1e-10 * d.amax(1, keepdim=True).clamp_min(1e-300)).all(1)
    inv = d.clamp_min(1e-300).rsqrt()
    G.mul_(inv[:, :, None]).mul_(inv[:, None, :]).neg_().add_(1.0)
    return ok


def _metric_correlation(G: torch.Tensor, s: torch.Tensor, cnt: torch.Tensor) -> torch.Tensor:
    sc = s / cnt.sqrt()[:, None]
    G.baddbmm_(sc[:, :, None], sc[:, None, :], alpha=-1.0)  # centre over the sphere's voxels
    return _normalize(G)


def _metric_cosine(G: torch.Tensor, s: torch.Tensor, cnt: torch.Tensor) -> torch.Tensor:
    return _normalize(G)


def _metric_sqeuclidean(G: torch.Tensor, s: torch.Tensor, cnt: torch.Tensor) -> torch.Tensor:
    d = torch.diagonal(G, dim1=1, dim2=2).clone()
    G.mul_(-2.0).add_(d[:, :, None]).add_(d[:, None, :]).clamp_(min=0.0)
    return torch.ones(G.shape[0], dtype=torch.bool)


def _metric_euclidean(G: torch.Tensor, s: torch.Tensor, cnt: torch.Tensor) -> torch.Tensor:
    ok = _metric_sqeuclidean(G, s, cnt)
    G.sqrt_()
    return ok


_SL_METRICS: dict[str, Callable[..., torch.Tensor]] = {
    "correlation": _metric_correlation,
    "cosine": _metric_cosine,
    "euclidean": _metric_euclidean,
    "sqeuclidean": _metric_sqeuclidean,
}
SEARCHLIGHT_METRICS: tuple[str, ...] = tuple(_SL_METRICS)


# ------------------------------------------------------------------- comparison
def _unit_rows(V: np.ndarray) -> np.ndarray:
    """Centre and scale rows to unit norm (zero rows stay zero)."""
    V = V - V.mean(-1, keepdims=True)
    norm = np.sqrt((V * V).sum(-1, keepdims=True))
    return np.divide(V, norm, out=np.zeros_like(V), where=norm > 0)


def _rank_rows(V: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (``scipy.stats.rankdata``); argsort when tie-free."""
    order = np.argsort(V, axis=-1)
    xs = np.take_along_axis(V, order, -1)
    if (xs[..., 1:] == xs[..., :-1]).any():
        return scipy.stats.rankdata(V, axis=-1)
    ranks = np.empty(V.shape)
    np.put_along_axis(ranks, order, np.arange(1.0, V.shape[-1] + 1.0), -1)
    return ranks


def _prep_spearman(V: np.ndarray) -> np.ndarray:
    return _unit_rows(_rank_rows(V))


def _prep_pearson(V: np.ndarray) -> np.ndarray:
    return _unit_rows(V)


def _prep_cosine(V: np.ndarray) -> np.ndarray:
    norm = np.sqrt((V * V).sum(-1, keepdims=True))
    return np.divide(V, norm, out=np.zeros_like(V), where=norm > 0)


# Methods whose comparison is a dot product of transformed vectors: transform once.
_PREP: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "spearman": _prep_spearman,
    "pearson": _prep_pearson,
    "corr": _prep_pearson,
    "cosine": _prep_cosine,
}


def _compare(A: np.ndarray, B: np.ndarray, Bprep: np.ndarray | None, method: str) -> np.ndarray:
    """(c, P) centre RDM vectors vs (k, P) model vectors -> (c, k)."""
    if Bprep is not None:
        return _PREP[method](A) @ Bprep.T
    step = A.shape[0]
    if method == "tau_a":  # sign matrices of size c x chunk x P: keep them bounded
        step = max(1, _TAU_SUBBATCH_ELEMENTS // (A.shape[1] ** 2))
    Bd = xr.DataArray(B, dims=("model", "pair"))
    return np.concatenate([
        compare_rdms(xr.DataArray(A[i : i + step], dims=("centre", "pair")), Bd, method=method).values
        for i in range(0, A.shape[0], step)
    ])


# ------------------------------------------------------------------- batch kernel
@dataclass
class _Job:
    """Everything one batch needs (shipped once to dask workers)."""

    X: np.ndarray  # (n_vox + 1, n_stim) float64, last row zeros (padding)
    index: np.ndarray  # (x, y, z) int64 voxel row in X, -1 outside the usable mask
    centres: np.ndarray  # (n_centres, 3) int
    offsets: np.ndarray  # (K, 3) int
    B: np.ndarray  # (L, P) model RDM vectors
    Bprep: np.ndarray | None  # (L, P) transformed for dot-product methods
    Bperm: np.ndarray | None  # (n_perm * L, P) permuted model vectors (prepared if possible)
    metric: str
    method: str
    min_voxels: int
    keep_null: bool = False  # also return every permutation's map (c, perm, L)


def _neighbours(job: _Job, start: int, stop: int) -> np.ndarray:
    ijk = job.centres[start:stop, None, :] + job.offsets[None, :, :]  # (c, K, 3)
    shape = np.array(job.index.shape)
    inside = ((ijk >= 0) & (ijk < shape)).all(-1)
    ijk = np.where(inside[..., None], ijk, 0)
    idx = job.index[ijk[..., 0], ijk[..., 1], ijk[..., 2]]
    return np.where(inside & (idx >= 0), idx, -1)


def _centre_rdms(job: _Job, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Condensed RDM vectors (c, P), sphere sizes (c,), valid flags (c,) for centres."""
    nb = _neighbours(job, start, stop)
    count = (nb >= 0).sum(1)
    pad = job.X.shape[0] - 1
    X = torch.from_numpy(job.X)
    Xg = X[torch.from_numpy(np.where(nb >= 0, nb, pad))]  # (c, K, n)
    G = torch.bmm(Xg.transpose(1, 2), Xg)  # per-sphere Gram matrices (c, n, n)
    cnt = torch.from_numpy(count.astype(np.float64)).clamp_min(1.0)
    ok = _SL_METRICS[job.metric](G, Xg.sum(1), cnt)
    n_stim = job.X.shape[1]
    i, j = np.triu_indices(n_stim, 1)
    vec = G.reshape(len(nb), -1)[:, torch.from_numpy(i * n_stim + j)].numpy()
    valid = ok.numpy() & (count >= job.min_voxels)
    return vec, count, valid


def _run_batch(job: _Job, start: int, stop: int) -> dict[str, np.ndarray]:
    vec, count, valid = _centre_rdms(job, start, stop)
    L = job.B.shape[0]
    out = np.full((stop - start, L), np.nan)
    result = {"count": count, "score": out}
    if valid.any():
        A = vec[valid]
        out[valid] = _compare(A, job.B, job.Bprep, job.method)
        if job.Bperm is not None:
            null = _compare(A, job.Bperm, job.Bperm if job.Bprep is not None else None, job.method)
            null = null.reshape(A.shape[0], -1, L)  # (c, perm, L)
            result["null_max"] = null.max(0)  # (perm, L)
            exceed = np.zeros((stop - start, L))
            exceed[valid] = (null >= out[valid][:, None, :] - 1e-12).sum(1)
            result["exceed"] = exceed
            if job.keep_null:
                full = np.full((stop - start,) + null.shape[1:], np.nan)
                full[valid] = null
                result["null"] = full
    if job.Bperm is not None and "null_max" not in result:
        result["null_max"] = np.full((job.Bperm.shape[0] // L, L), -np.inf)
        result["exceed"] = np.zeros((stop - start, L))
        if job.keep_null:
            result["null"] = np.full((stop - start, job.Bperm.shape[0] // L, L), np.nan)
    return result


# ------------------------------------------------------------------- driver
def _model_stack(model_rdms: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    st = _as_stack(model_rdms, "model_rdms")
    if st.ids is None:
        raise ShapeMismatchError(
            "model_rdms need stimulus ids: pass a DataArray with dims (layer, stimulus, "
            "stimulus2) and stimulus coords, e.g. from neurocnn.rsa.compute_rdm."
        )
    if st.dim is None:
        names = np.array([str(st.attrs.get("layer", st.attrs.get("alias", "model")))])
    else:
        key = st.dim if st.dim in st.coords else None
        names = (np.asarray(st.coords[key]).astype(str) if key
                 else np.array([str(i) for i in range(st.vectors.shape[0])]))
    return st.vectors, st.ids, names, st.attrs


def _brain_matrix(data: np.ndarray, mask: np.ndarray, brain_ids: np.ndarray,
                  model_ids: np.ndarray) -> np.ndarray:
    """(x, y, z, n_vol) -> (n_mask_voxels, n_model_stimuli): averaged per id, model order."""
    n_vol = data.shape[-1]
    if len(brain_ids) != n_vol:
        raise ShapeMismatchError(
            f"{len(brain_ids)} stimulus ids for {n_vol} volumes; give one id per volume."
        )
    X = data[mask].astype(np.float64)  # (n_vox, n_vol)
    uniq = set(brain_ids.tolist())
    missing = [m for m in model_ids if m not in uniq]
    extra = sorted(uniq - set(model_ids.tolist()))
    if missing or extra:
        raise ShapeMismatchError(
            f"stimulus ids of the brain data and of model_rdms differ: {len(missing)} model "
            f"stimuli have no volume (e.g. {missing[:5]}), {len(extra)} brain ids are not in "
            f"the model (e.g. {extra[:5]}). Select the common stimuli first."
        )
    A = (brain_ids[None, :] == model_ids[:, None]).astype(np.float64)
    A /= A.sum(1, keepdims=True)
    return X @ A.T


def _resolve_ids(stimulus_ids: Any, n_vol: int, model_ids: np.ndarray) -> np.ndarray:
    if stimulus_ids is not None:
        return np.asarray(stimulus_ids).astype(str)
    if n_vol < len(model_ids):
        raise ShapeMismatchError(
            f"the brain data have {n_vol} volumes but model_rdms have {len(model_ids)} "
            "stimuli: every stimulus needs at least one volume (a response pattern)."
        )
    if n_vol != len(model_ids):
        raise ShapeMismatchError(
            f"the brain data have {n_vol} volumes and model_rdms {len(model_ids)} stimuli; "
            "pass stimulus_ids= (one id per volume, repeated ids are averaged)."
        )
    logger.info("searchlight: no stimulus_ids given; volumes taken in model_rdms' order")
    return model_ids.copy()


def _run_bounds(job: _Job, bounds: tuple[int, int]) -> dict[str, np.ndarray]:
    return _run_batch(job, *bounds)


def _run_all(job: _Job, batch: int, client: Any, progress: bool, desc: str) -> dict[str, np.ndarray]:
    n = job.centres.shape[0]
    bounds = [(a, min(n, a + batch)) for a in range(0, n, batch)]
    done = dict(map_tasks(_run_bounds, job, bounds, client, progress=progress, desc=desc))
    parts = [done[i] for i in range(len(bounds))]
    out = {k: np.concatenate([p[k] for p in parts]) for k in ("count", "score")}
    if job.Bperm is not None:
        out["null_max"] = np.max(np.stack([p["null_max"] for p in parts]), 0)
        out["exceed"] = np.concatenate([p["exceed"] for p in parts])
        if job.keep_null:
            out["null"] = np.concatenate([p["null"] for p in parts])
    return out


def _permuted_models(B: np.ndarray, n_stim: int, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """(L, P) -> (n_perm * L, P): each permutation relabels the stimuli of all layers."""
    iu = np.triu_indices(n_stim, 1)
    sq = _to_square(B, n_stim)  # (L, n, n)
    out = np.empty((n_perm, B.shape[0], B.shape[1]))
    for p in range(n_perm):
        perm = rng.permutation(n_stim)
        out[p] = sq[:, perm][:, :, perm][:, iu[0], iu[1]]
    return out.reshape(n_perm * B.shape[0], B.shape[1])


def _sign_flip(maps: np.ndarray, n_perm: int, rng: np.random.Generator, progress: bool):
    """One-sample sign-flip test of (S, L, V) subject maps on the mean across subjects.

    Returns the number of flips whose mean reaches the observed one per voxel (L, V) and
    each flip's maximum over voxels (n_perm, L).
    """
    from tqdm.auto import tqdm

    S = maps.shape[0]
    ok = np.isfinite(maps).all(0)
    flat = np.where(ok, maps, 0.0).reshape(S, -1)
    obs = flat.mean(0)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n_perm, S))
    null_max = np.empty((n_perm, maps.shape[1]))
    exceed = np.zeros(obs.shape)
    chunk = max(1, 2**24 // max(1, flat.shape[1]))
    for a in tqdm(range(0, n_perm, chunk), desc="sign flips", disable=not progress, leave=False):
        null = signs[a : a + chunk] @ flat / S  # (p, L * V)
        exceed += (null >= obs - 1e-12).sum(0)
        null = np.where(ok.reshape(-1), null, -np.inf).reshape(len(null), *maps.shape[1:])
        null_max[a : a + chunk] = null.max(-1)
    return exceed.reshape(maps.shape[1:]), null_max


def _p_values(obs: np.ndarray, exceed: np.ndarray, null_max: np.ndarray, n_perm: int):
    p_unc = (1.0 + exceed) / (n_perm + 1.0)
    # FWE: fraction of permutations whose map maximum reaches the voxel's value
    srt = np.sort(null_max, 0)  # (perm, L)
    p_fwe = np.empty_like(obs)
    for layer in range(obs.shape[0]):
        below = np.searchsorted(srt[:, layer], obs[layer] - 1e-12, side="left")
        p_fwe[layer] = (1.0 + n_perm - below) / (n_perm + 1.0)
    bad = ~np.isfinite(obs)
    return np.where(bad, np.nan, p_unc), np.where(bad, np.nan, p_fwe)


def searchlight(
    brain: Any,
    model_rdms: Any,
    *,
    mask: Any = None,
    radius: float = 6.0,
    min_voxels: int = 10,
    metric: SearchlightMetric = "correlation",
    method: str = "spearman",
    stimulus_ids: Sequence[str] | np.ndarray | None = None,
    batch_size: int | None = None,
    client: Any = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    nan_policy: NanPolicy = "drop",
    progress: bool = True,
    n_permutations: int = 0,
    seed: int = 0,
    return_null: bool = False,
) -> xr.Dataset:
    """Searchlight RSA: correlate every voxel's sphere RDM with each model layer's RDM.

    Parameters
    ----------
    brain : path, nibabel image, list of them, or dict of them
        One subject's response patterns: a 4-D NIfTI ``(x, y, z, volume)`` or a list of
        3-D NIfTIs (one per volume). A dict ``{subject: that}`` gives several subjects
        on one grid (a map each, averaged, and a sign-flip test with ``n_permutations``).
    model_rdms : xr.DataArray
        Layer RDMs, dims ``(layer, stimulus, stimulus2)`` (a single RDM also works)
        with stimulus ids, e.g. ``neurocnn.rsa.compute_rdm(acts_dict)``.
    mask : path, nibabel image or bool ndarray, optional
        Brain mask on the data's grid (same shape and affine). Default: nilearn's
        MNI152 brain mask resampled to the data (the data must be in MNI space).
        Spheres are cut at the mask's edge; every mask voxel is a centre.
    radius : float
        Sphere radius in mm (distances from the affine; a voxel at exactly ``radius`` is
        inside). On a single-slice volume the sphere is the in-slice disc.
    min_voxels : int
        Centres whose sphere holds fewer mask voxels get NaN.
    metric : {"correlation", "cosine", "euclidean", "sqeuclidean"}
        Dissimilarity of two stimuli's patterns over the sphere's voxels (as
        ``scipy.spatial.distance.pdist``).
    method : str
        RDM comparison, any of :data:`neurocnn.rsa.COMPARE_METHODS` (``spearman``,
        ``pearson``, ``tau_a``, ...); values as :func:`neurocnn.rsa.compare_rdms`.
    stimulus_ids : sequence of str, optional
        Id of each volume (repeated ids, e.g. runs, are averaged). Default: the
        volumes are the model's stimuli in the model's order (counts must match).
    batch_size : int, optional
        Centres per batch (default: about 64 MiB of gathered sphere data).
    client : distributed.Client, str, optional
        Spread batches over dask workers: a Client, a scheduler address, or
        ``"local"`` for a new ``LocalCluster`` (closed afterwards).
    out : path, optional
        Also save the result (``.zarr`` or ``.nc``) with :func:`neurocnn.io.save`.
    overwrite : bool
        Replace an existing ``out``.
    nan_policy : {"drop", "raise"}
        Mask voxels with NaN/inf in any volume: dropped from the mask (the count is
        logged and stored in attrs ``n_nan_voxels``), or an ``InvalidDataError``.
    progress : bool
        Show progress bars.
    n_permutations : int
        0: no test. Otherwise, several subjects: sign flips of the subject maps (the
        statistic is the mean correlation); one subject: permutations of the model RDMs' stimulus labels.
        Adds ``p_uncorrected`` and ``p_fwe`` (max statistic over voxels, per layer).
    seed : int
        Seed of the permutations (recorded in attrs).
    return_null : bool
        One subject with ``n_permutations``: also return every permutation's map as
        ``null_correlation`` (permutation, layer, voxel), float64, for cluster-level
        inference (:func:`neurocnn.clusters.searchlight_cluster_test`). Memory:
        ``8 * n_permutations * n_layers * n_centres`` bytes.

    Returns
    -------
    xr.Dataset
        Dims ``layer``, ``voxel`` (every mask centre; ``subject`` too with several
        subjects). Vars ``correlation`` (layer, voxel) (the subject mean with several
        subjects, plus ``subject_correlation``), ``n_voxels`` (voxel),
        ``p_uncorrected``/``p_fwe`` with permutations. Coords ``i, j, k`` (voxel
        indices), ``x, y, z`` (mm). Attrs: radius, metric, method, grid shape and
        affine, mask source, model provenance, seed.

    Raises
    ------
    ShapeMismatchError
        Mask/data shape or affine mismatch, fewer volumes than stimuli, stimulus ids
        differing from the model's, subjects on different grids.
    InvalidDataError
        Radius smaller than a voxel, empty mask, NaN voxels with ``nan_policy="raise"``,
        no centre with ``min_voxels`` voxels, fewer than 3 stimuli.
    UnknownNameError
        Unknown metric, method or nan_policy.

    Examples
    --------
    >>> vol = simulate_volume(layer_rdms, regions=[...])  # doctest: +SKIP
    >>> res = searchlight(vol.img, layer_rdms, mask=vol.mask, stimulus_ids=vol.stimulus_ids)  # doctest: +SKIP
    >>> to_nifti(res, "stage4").to_filename("stage4.nii.gz")  # doctest: +SKIP
    """
    check_option("metric", metric, SEARCHLIGHT_METRICS)
    check_option("method", method, COMPARE_METHODS)
    check_option("nan_policy", nan_policy, ("drop", "raise"))
    min_voxels = check_positive_int("min_voxels", min_voxels)
    if n_permutations != 0:
        n_permutations = check_positive_int("n_permutations", n_permutations)
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
    if return_null and (not n_permutations or isinstance(brain, Mapping)):
        raise InvalidDataError(
            "return_null=True needs one subject (not a dict) and n_permutations > 0: it returns "
            "the stimulus-label permutation maps (for several subjects, the sign-flip null "
            "comes from subject_correlation, see neurocnn.clusters.group_searchlight_test)."
        )
    seed = check_seed(seed)
    if out is not None:  # before the whole computation, not after it
        from .io import check_writable, output_format

        output_format(out)
        check_writable(out, overwrite=overwrite)
    B, model_ids, layers, model_attrs = _model_stack(model_rdms)
    n_stim = len(model_ids)
    if n_stim < 3:
        raise InvalidDataError(f"a searchlight needs at least 3 stimuli, model_rdms have {n_stim}.")
    volumes, affine, shape, multi = _load_subjects(brain)
    if n_permutations and multi and len(volumes) < 2:
        raise InvalidDataError("a sign-flip test needs at least 2 subjects; pass one subject "
                               "(not a dict) for a stimulus-label permutation test.")
    offsets = sphere_offsets(affine, radius)
    mask_arr, mask_source = _mask_array(mask, shape, affine)
    usable, n_nan = _usable_voxels(volumes, mask_arr, nan_policy)

    index = np.full(shape, -1, np.int64)
    index[usable] = np.arange(int(usable.sum()))
    centres = np.argwhere(usable)
    prep = _PREP.get(method)
    Bprep = None if prep is None else prep(B)
    rng = numpy_rng(seed)
    Bperm = None
    if n_permutations and not multi:
        Bperm = _permuted_models(B, n_stim, n_permutations, rng)
        if prep is not None:
            Bperm = prep(Bperm)
    if batch_size is None:
        per_centre = len(offsets) * n_stim * 8 + n_stim * n_stim * 8 * 3
        batch_size = int(max(16, min(20000, _BATCH_BYTES // per_centre)))

    scores, count, null_parts = [], None, None
    for name, data in volumes.items():
        ids = _resolve_ids(stimulus_ids, data.shape[-1], model_ids)
        X = _brain_matrix(data, usable, ids, model_ids)
        Xp = np.concatenate([X, np.zeros((1, n_stim))], 0)
        job = _Job(Xp, index, centres, offsets, B, Bprep, Bperm, metric, method, min_voxels,
                   keep_null=return_null)
        res = _run_all(job, batch_size, client, progress, f"searchlight {name}" if multi else "searchlight")
        scores.append(res["score"].T)  # (L, V)
        count = res["count"]
        if Bperm is not None:
            null_parts = (res["exceed"].T, res["null_max"])
        if return_null:
            null_maps = res["null"].transpose(1, 2, 0)  # (perm, L, V)
    if not np.isfinite(scores[0]).any():
        raise InvalidDataError(
            f"no centre has a usable sphere: spheres of radius {radius} mm hold at most "
            f"{int(count.max())} mask voxels, min_voxels is {min_voxels} (or all patterns "
            "are constant). Increase radius or lower min_voxels."
        )
    data_vars, coords = _result_maps(scores, list(volumes), multi, n_permutations, null_parts, rng, progress)
    world = nib.affines.apply_affine(affine, centres)
    coords.update({
        "layer": layers,
        "i": ("voxel", centres[:, 0]), "j": ("voxel", centres[:, 1]), "k": ("voxel", centres[:, 2]),
        "x": ("voxel", world[:, 0]), "y": ("voxel", world[:, 1]), "z": ("voxel", world[:, 2]),
    })
    data_vars["n_voxels"] = ("voxel", count.astype(np.int64))
    if return_null:
        data_vars["null_correlation"] = (("permutation", "layer", "voxel"), null_maps)
    attrs: dict[str, Any] = {
        f"model_{k}": v for k, v in clean_attrs(model_attrs).items()
        if k in ("model", "weights_sha256", "metric", "preprocessing", "neurocnn_version")
    }
    vox = np.sqrt((affine[:3, :3] ** 2).sum(0))
    attrs.update(
        analysis="searchlight", radius_mm=float(radius), min_voxels=int(min_voxels),
        metric=metric, method=method, n_stimuli=int(n_stim), n_subjects=int(len(volumes)),
        n_centres=int(len(centres)), n_sphere_offsets=int(len(offsets)),
        shape=[int(s) for s in shape], affine=[float(a) for a in affine.ravel()],
        voxel_size_mm=[float(v) for v in vox], mask_source=mask_source, n_nan_voxels=n_nan,
        n_permutations=int(n_permutations), seed=int(seed),
        test=("sign_flip" if multi else "stimulus_permutation") if n_permutations else "none",
        neurocnn_version=version(), reference="Cichy et al. 2016, Sci. Rep.",
    )
    result = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    if out is not None:
        from .io import save

        save(result, out, overwrite=overwrite)
    return result


def _load_subjects(brain: Any) -> tuple[dict[str, np.ndarray], np.ndarray, tuple[int, int, int], bool]:
    """One subject or a dict of subjects -> {name: data}, the common affine and shape, multi."""
    subjects = dict(brain) if isinstance(brain, Mapping) else {"0": brain}
    multi = isinstance(brain, Mapping)
    if multi and not subjects:
        raise ShapeMismatchError("brain is an empty dict of subjects.")
    volumes = {}
    grid = None
    for name, value in subjects.items():
        data, affine, shape = _subject_volume(value, f"brain[{name!r}]" if multi else "brain")
        if grid is not None and (shape != grid[1] or not np.allclose(affine, grid[0], atol=1e-4)):
            raise ShapeMismatchError(
                f"subject {name!r} is on another grid ({shape}) than the first subject "
                f"({grid[1]}); resample all subjects to one grid (e.g. MNI 2 mm)."
            )
        grid = (affine, shape)
        volumes[str(name)] = data
    return volumes, grid[0], grid[1], multi


def _usable_voxels(volumes: Mapping[str, np.ndarray], mask_arr: np.ndarray, nan_policy: str) -> tuple[np.ndarray, int]:
    """Mask voxels finite in every volume of every subject, and how many were dropped."""
    bad = np.zeros(mask_arr.shape, bool)
    for data in volumes.values():
        bad |= ~np.isfinite(data).all(-1)
    n_nan = int((bad & mask_arr).sum())
    if n_nan:
        if nan_policy == "raise":
            raise InvalidDataError(
                f"{n_nan} of {int(mask_arr.sum())} mask voxels have NaN/inf in at least one "
                "volume; pass nan_policy='drop' to leave them out, or fix the mask."
            )
        logger.warning("searchlight: dropping %d mask voxels with NaN/inf values", n_nan)
    usable = mask_arr & ~bad
    if not usable.any():
        raise InvalidDataError("no usable voxel: every mask voxel has NaN/inf values.")
    return usable, n_nan


def _result_maps(scores, subjects, multi, n_permutations, null_parts, rng, progress) -> tuple[dict, dict]:
    """Correlation maps (subject mean with several subjects) and permutation p-values."""
    coords: dict[str, Any] = {}
    data_vars: dict[str, Any] = {}
    if multi:
        maps = np.stack(scores)
        coords["subject"] = np.array(subjects)
        data_vars["subject_correlation"] = (("subject", "layer", "voxel"), maps)
        with np.errstate(invalid="ignore"):
            data_vars["correlation"] = (("layer", "voxel"), maps.mean(0))
    else:
        data_vars["correlation"] = (("layer", "voxel"), scores[0])
    if n_permutations:
        if multi:
            exceed, null_max = _sign_flip(np.stack(scores), n_permutations, rng, progress)
            stat = data_vars["correlation"][1]
        else:
            stat = scores[0]
            exceed, null_max = null_parts
        p_unc, p_fwe = _p_values(stat, exceed, null_max, n_permutations)
        data_vars["p_uncorrected"] = (("layer", "voxel"), p_unc)
        data_vars["p_fwe"] = (("layer", "voxel"), p_fwe)
        coords["permutation"] = np.arange(n_permutations)
        data_vars["null_max"] = (("permutation", "layer"), null_max)
    return data_vars, coords


# ------------------------------------------------------------------- output
def _layer_index(result: xr.Dataset, layer: str | int) -> int:
    names = [str(v) for v in result["layer"].values]
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        if not 0 <= layer < len(names):
            raise ShapeMismatchError(f"layer index {layer} out of range (0..{len(names) - 1}).")
        return int(layer)
    return names.index(check_option("layer", str(layer), names))


def to_nifti(result: xr.Dataset, layer: str | int = 0, var: str = "correlation",
             fill_value: float = 0.0) -> nib.Nifti1Image:
    """One layer's searchlight map as a 3-D NIfTI image on the data's grid.

    Parameters
    ----------
    result : xr.Dataset
        Output of :func:`searchlight`.
    layer : str or int
        Layer name or position.
    var : str
        Variable with dims (layer, voxel): ``correlation``, ``p_fwe``...
    fill_value : float
        Value outside the mask and at centres without a value (NaN).

    Returns
    -------
    nibabel.Nifti1Image
        float32 image, same shape and affine as the searchlight's data.

    Raises
    ------
    UnknownNameError
        Unknown layer or variable.

    Examples
    --------
    >>> img = to_nifti(res, "stage4")  # doctest: +SKIP
    """
    check_option("variable", var, [v for v in result.data_vars if result[v].dims == ("layer", "voxel")])
    li = _layer_index(result, layer)
    shape = tuple(int(s) for s in np.ravel(result.attrs["shape"]))
    affine = np.asarray(result.attrs["affine"], dtype=np.float64).reshape(4, 4)
    vol = np.full(shape, fill_value, np.float32)
    values = np.asarray(result[var].values[li], np.float64)
    values = np.where(np.isfinite(values), values, fill_value)
    vol[result["i"].values, result["j"].values, result["k"].values] = values
    img = nib.Nifti1Image(vol, affine)
    img.header["descrip"] = f"neurocnn searchlight {var} {result['layer'].values[li]}"[:79].encode()
    return img


def save_maps(result: xr.Dataset, out_dir: str | os.PathLike, var: str = "correlation", *,
              overwrite: bool = False) -> list[pathlib.Path]:
    """Write one NIfTI per layer (``searchlight_<var>_<layer>.nii.gz``) into ``out_dir``.

    Parameters
    ----------
    result : xr.Dataset
        Output of :func:`searchlight`.
    out_dir : path
        Folder (created if needed).
    var : str
        Variable to write (see :func:`to_nifti`).
    overwrite : bool
        Replace existing map files that neurocnn wrote (never a user's file).

    Returns
    -------
    list of Path

    Raises
    ------
    OverwriteError
        A file exists and ``overwrite`` is False, or it is not neurocnn's (all files are
        checked before any is written; each is written atomically).

    Examples
    --------
    >>> save_maps(res, "maps")  # doctest: +SKIP
    """
    from .io import atomic_output, check_writable, make_output_dir

    out_dir = pathlib.Path(out_dir)
    names = ["".join(c if c.isalnum() or c in "-_." else "_" for c in str(n)) for n in result["layer"].values]
    paths = [out_dir / f"searchlight_{var}_{safe}.nii.gz" for safe in names]
    for path in paths:  # all checked before anything is written
        check_writable(path, overwrite=overwrite)
    make_output_dir(out_dir, kind="searchlight maps")
    for li, path in enumerate(paths):
        image = to_nifti(result, li, var)
        with atomic_output(path, overwrite=overwrite, kind="nifti") as tmp:
            image.to_filename(tmp)
    return paths


def _plot_stat_map(img, fig, title, threshold, vmax, bg_img, **kwargs):
    from nilearn import plotting

    plotting.plot_stat_map(img, bg_img=bg_img, figure=fig, title=title, threshold=threshold,
                           vmax=vmax, display_mode=kwargs.pop("display_mode", "ortho"),
                           cut_coords=kwargs.pop("cut_coords", None), **kwargs)


def _plot_glass_brain(img, fig, title, threshold, vmax, bg_img, **kwargs):
    from nilearn import plotting

    plotting.plot_glass_brain(img, figure=fig, title=title, threshold=threshold, vmax=vmax,
                              colorbar=kwargs.pop("colorbar", True), plot_abs=False,
                              display_mode=kwargs.pop("display_mode", "lyrz"), **kwargs)


def _plot_slices(img, fig, title, threshold, vmax, bg_img, **kwargs):
    vol = np.asarray(img.dataobj, np.float64)
    ks = np.flatnonzero(np.abs(vol).sum((0, 1)) > 0)
    ks = ks if len(ks) <= 12 else ks[np.linspace(0, len(ks) - 1, 12).astype(int)]
    ncols = min(4, len(ks))
    nrows = math.ceil(len(ks) / ncols)
    thr = 0.0 if threshold is None else float(threshold)
    for n, k in enumerate(ks):
        ax = fig.add_subplot(nrows, ncols, n + 1)
        sl = np.where(np.abs(vol[:, :, k]) > thr, vol[:, :, k], np.nan)
        im = ax.imshow(sl.T, origin="lower", cmap=kwargs.get("cmap", "RdBu_r"), vmin=-vmax, vmax=vmax)
        ax.set_title(f"k={k}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=fig.axes, shrink=0.8)
    fig.suptitle(title)


_PLOTS: dict[str, Callable[..., None]] = {
    "stat_map": _plot_stat_map,
    "glass_brain": _plot_glass_brain,
    "slices": _plot_slices,
}


def plot_searchlight(result: xr.Dataset, layer: str | int = 0, kind: str = "stat_map", *,
                     var: str = "correlation", threshold: float | None = None,
                     vmax: float | None = None, bg_img: Any = None, title: str | None = None,
                     figsize: tuple[float, float] = (9.0, 3.5), **kwargs: Any):
    """Plot one layer's searchlight map with nilearn (on the MNI152 template).

    Parameters
    ----------
    result : xr.Dataset
        Output of :func:`searchlight`.
    layer : str or int
        Layer name or position.
    kind : {"stat_map", "glass_brain", "slices"}
        ``nilearn.plotting.plot_stat_map`` on ``bg_img``, ``plot_glass_brain``, or a
        matplotlib montage of axial slices in voxel space (for data not in MNI space,
        e.g. a single slice).
    var : str
        Variable to show (see :func:`to_nifti`).
    threshold : float, optional
        Hide values with smaller magnitude.
    vmax : float, optional
        Colour scale limit (default: the largest magnitude).
    bg_img : image, optional
        Background for ``stat_map`` (default: nilearn's MNI152 template, 2 mm).
    title : str, optional
        Default: ``"<layer> (<var>)"``.
    figsize : (float, float)
        Figure size in inches.
    **kwargs
        Passed to the nilearn function.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    UnknownNameError
        Unknown kind, layer or variable.

    Examples
    --------
    >>> fig = plot_searchlight(res, "stage4", kind="glass_brain")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    check_option("kind", kind, _PLOTS)
    img = to_nifti(result, layer, var)
    li = _layer_index(result, layer)
    values = np.abs(np.asarray(img.dataobj))
    vmax = float(vmax) if vmax is not None else float(max(values.max(), 1e-6))
    if kind == "stat_map" and bg_img is None:
        from nilearn import datasets

        bg_img = datasets.load_mni152_template(resolution=2)
    title = title if title is not None else f"{result['layer'].values[li]} ({var})"
    fig = plt.figure(figsize=figsize)
    _PLOTS[kind](img, fig, title, threshold, vmax, bg_img, **kwargs)
    return fig


# ------------------------------------------------------------------- simulation
def _embedding(D: np.ndarray) -> np.ndarray:
    """Classical MDS: stimulus coordinates whose Gram is -1/2 J D J (PSD part)."""
    n = D.shape[0]
    J = np.eye(n) - 1.0 / n
    K = -0.5 * J @ D @ J
    w, V = np.linalg.eigh((K + K.T) / 2)
    keep = w > 1e-10 * max(w.max(), 1e-300)
    return V[:, keep] * np.sqrt(w[keep])


def simulate_volume(
    layer_rdms: Any,
    regions: Sequence[Mapping[str, Any]],
    *,
    noise: float = 1.0,
    signal: float = 1.0,
    mask: Any = None,
    box: Sequence[Sequence[float]] | None = None,
    seed: int = 0,
) -> Volume:
    """Simulate a 4-D volume with spheres whose pattern RDMs follow given RDMs.

    Each region's voxel patterns are ``Y @ W``: ``Y`` the classical-MDS embedding of its
    RDM (``-1/2 J D J``, so a correlation-distance RDM is reproduced by the patterns'
    correlation distance up to sampling of ``W``), ``W`` Gaussian weights per voxel,
    scaled to unit variance per voxel times ``signal``. Gaussian noise (sd ``noise``)
    is added everywhere.

    Parameters
    ----------
    layer_rdms : xr.DataArray
        RDMs with dims ``(layer, stimulus, stimulus2)``.
    regions : sequence of dict
        ``{"layer": name, "center": (x, y, z) mm, "radius": mm}`` per planted region.
    noise, signal : float
        Noise sd and signal sd per voxel.
    mask : image, optional
        Grid and brain mask (default: nilearn's MNI152 2 mm brain mask).
    box : ((xmin, xmax), (ymin, ymax), (zmin, zmax)), optional
        Crop the grid to this box in mm (for speed).
    seed : int
        Random seed.

    Returns
    -------
    Volume
        ``img`` 4-D float32 image (one volume per stimulus, in the RDMs' stimulus
        order), ``mask`` (on the same, possibly cropped, grid), ``stimulus_ids``.

    Raises
    ------
    UnknownNameError
        A region names an unknown layer.
    InvalidDataError
        A region outside the mask, a crop box without mask voxels.

    Examples
    --------
    >>> vol = simulate_volume(rdms, [{"layer": "conv1", "center": (0, -90, 0), "radius": 10}])  # doctest: +SKIP
    """
    B, ids, layers, _ = _model_stack(layer_rdms)
    n = len(ids)
    rng = numpy_rng(seed)
    mimg = mni_brain_mask() if mask is None else load_nifti(mask, "mask")
    marr = np.asarray(mimg.dataobj).reshape(mimg.shape[:3]) != 0
    affine = np.asarray(mimg.affine, dtype=np.float64)
    if box is not None:
        inv = np.linalg.inv(affine)
        corners = np.array([[x, y, z] for x in box[0] for y in box[1] for z in box[2]], float)
        vox = nib.affines.apply_affine(inv, corners)
        lo = np.clip(np.floor(vox.min(0)).astype(int), 0, None)
        hi = np.minimum(np.ceil(vox.max(0)).astype(int) + 1, marr.shape)
        marr = marr[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        affine = affine.copy()
        affine[:3, 3] = nib.affines.apply_affine(affine, lo)
        if not marr.any():
            raise InvalidDataError(f"the crop box {box} holds no mask voxel.")
    shape = marr.shape
    data = (rng.standard_normal(shape + (n,)) * noise).astype(np.float32)
    ijk = np.argwhere(np.ones(shape, bool))
    world = nib.affines.apply_affine(affine, ijk).reshape(shape + (3,))
    squares = _to_square(B, n)
    for r in regions:
        li = list(layers).index(check_option("layer", str(r["layer"]), list(layers)))
        dist = np.sqrt(((world - np.asarray(r["center"], float)) ** 2).sum(-1))
        inside = (dist <= float(r["radius"])) & marr
        if not inside.any():
            raise InvalidDataError(f"region {dict(r)} holds no mask voxel of the grid.")
        Y = _embedding(squares[li])
        W = rng.standard_normal((Y.shape[1], int(inside.sum())))
        P = Y @ W
        P = P / P.std(0, keepdims=True).clip(1e-12) * signal
        data[inside] += P.T.astype(np.float32)
    hdr_img = nib.Nifti1Image(data, affine)
    return Volume(hdr_img, nib.Nifti1Image(marr.astype(np.uint8), affine), ids.copy())
