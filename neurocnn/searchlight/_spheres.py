"""Sphere machinery of the searchlight: inputs, masks, per-sphere RDMs, comparisons, batches, permutations."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import nibabel as nib
import numpy as np
import scipy.stats
import torch
import xarray as xr

from ..datasets import mni_brain_mask
from ..exceptions import InvalidDataError, ShapeMismatchError
from ..io import load_nifti
from ..rsa import compare_rdms
from ..rsa._stack import _as_stack, _to_square
from ..scale import map_tasks

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


