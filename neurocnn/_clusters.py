"""Kernels shared by :mod:`neurocnn.clusters` and the time-resolved RSA: N-D cluster
labelling of stacks of permutation maps, TFCE, FWE p-values, sign-flip nulls, voxel grids."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.ndimage
import scipy.stats
import xarray as xr

from ._validation import check_fraction, check_option, check_positive_int, numpy_rng
from ._version import version
from .exceptions import InvalidDataError, ShapeMismatchError

CORRECTIONS: tuple[str, ...] = ("voxel", "cluster_mass", "cluster_size", "tfce")
DEFAULT_CORRECTIONS = ("voxel", "cluster_mass", "tfce")
_CHUNK_ELEMENTS = 2**23  # elements of one stack of permutation maps
_P_VAR = {"voxel": "p_fwe", "cluster_mass": "p_fwe_cluster_mass",
          "cluster_size": "p_fwe_cluster_size", "tfce": "p_fwe_tfce"}


# ------------------------------------------------------------------ N-D kernels
def _structure(ndim: int, connectivity: int) -> np.ndarray:
    if isinstance(connectivity, bool) or not isinstance(connectivity, (int, np.integer)) \
            or not 1 <= connectivity <= ndim:
        raise InvalidDataError(
            f"connectivity must be an integer in 1..{ndim} for {ndim}-D maps (1: faces, as "
            f"nilearn; {ndim}: faces, edges and corners), got {connectivity!r}."
        )
    return scipy.ndimage.generate_binary_structure(ndim, int(connectivity))


def _stack_structure(struct: np.ndarray) -> np.ndarray:
    """Structuring element for a stack of maps along a new first axis: maps not connected."""
    out = np.zeros((3,) + struct.shape, bool)
    out[1] = struct
    return out


def _owner(lab: np.ndarray, n: int) -> np.ndarray:
    """Map (first-axis) index of each label 0..n of a labelled stack."""
    flat = lab.reshape(lab.shape[0], -1)
    owner = np.zeros(n + 1, np.int64)
    rows, cols = np.nonzero(flat)
    owner[flat[rows, cols]] = rows
    return owner


def _max_per_map(values: np.ndarray, owner: np.ndarray, n_maps: int) -> np.ndarray:
    out = np.zeros(n_maps)
    np.maximum.at(out, owner[1:], values[1:])
    return out


def _tails(S: np.ndarray, two_sided: bool) -> list[tuple[float, np.ndarray]]:
    return [(1.0, S), (-1.0, -S)] if two_sided else [(1.0, S)]


def _clusters(S: np.ndarray, thr: float, sstruct: np.ndarray, two_sided: bool):
    """Label clusters of a stack (n, *space): labels, their size, mass, sign and owner map."""
    labels = None
    size, mass, sign = [np.zeros(1)], [np.zeros(1)], [np.zeros(1)]
    total = 0
    for sgn, X in _tails(S, two_sided):
        lab, n = scipy.ndimage.label(X > thr, sstruct)
        if labels is None:
            labels = lab
        elif n:
            labels = np.where(lab > 0, lab + total, labels)
        if n == 0:
            continue
        flat = lab.ravel()
        size.append(np.bincount(flat, minlength=n + 1)[1:].astype(float))
        mass.append(np.bincount(flat, weights=X.ravel(), minlength=n + 1)[1:] - thr * size[-1])
        sign.append(np.full(n, sgn))
        total += n
    size_a, mass_a, sign_a = (np.concatenate(v) for v in (size, mass, sign))
    return labels, size_a, mass_a, sign_a, _owner(labels, total)


def _tfce_stack(S: np.ndarray, sstruct: np.ndarray, two_sided: bool, E: float, H: float,
                dh: float | str) -> np.ndarray:
    """TFCE of every map of a stack (n, *space), nilearn's ``calculate_tfce`` convention."""
    n = S.shape[0]
    flat = S.reshape(n, -1)
    top = (np.abs(flat) if two_sided else flat).max(1) if flat.size else np.zeros(n)
    if dh == "auto":
        steps = np.full(n, 100)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            steps = np.clip(np.round(np.nan_to_num(top / float(dh))), 10, 1000).astype(int)
    out = np.zeros(flat.shape)
    for sgn, X in _tails(flat, two_sided):
        for k in range(1, int(steps.max()) + 1):
            active = (k <= steps) & (top > 0)
            h = np.where(k == steps, top, (top / steps) * k)
            B = (X >= h[:, None]) & active[:, None]
            lab, nl = scipy.ndimage.label(B.reshape(S.shape), sstruct)
            if nl == 0:
                if not (active & (k < steps)).any():
                    break
                continue
            lab = lab.reshape(n, -1)
            size = np.bincount(lab.ravel(), minlength=nl + 1).astype(float)
            val = size**E * h[_owner(lab, nl)] ** H
            val[0] = 0.0
            out += sgn * val[lab]
    return out.reshape(S.shape)


def _check_tfce_params(E: float, H: float, dh: float | str) -> None:
    for name, v in (("E", E), ("H", H)):
        if not np.isfinite(v) or v <= 0:
            raise InvalidDataError(f"TFCE exponent {name} must be a positive number, got {v!r}.")
    if dh != "auto" and not (isinstance(dh, (int, float)) and np.isfinite(dh) and dh > 0):
        raise InvalidDataError(f"dh must be 'auto' or a positive step, got {dh!r}.")


def _p_from_max(obs: np.ndarray, null_max: np.ndarray) -> np.ndarray:
    """(1 + #{null max >= obs}) / (1 + n): the observed map counts as one permutation."""
    srt = np.sort(null_max)
    below = np.searchsorted(srt, np.asarray(obs) - 1e-12 * np.maximum(1.0, np.abs(obs)), side="left")
    return (1.0 + len(srt) - below) / (1.0 + len(srt))


def _infer(obs: np.ndarray, null_chunks: Iterable[np.ndarray], *, threshold: float,
           two_sided: bool, struct: np.ndarray, corrections: Sequence[str], E: float, H: float,
           dh: float | str) -> dict[str, Any]:
    """Core: observed map (*space) and chunks of null maps (n, *space) -> p maps, clusters."""
    sstruct = _stack_structure(struct)
    valid = np.isfinite(obs)
    o = np.where(valid, obs, 0.0)
    oa = np.abs(o) if two_sided else o
    want_clusters = {"cluster_mass", "cluster_size"} & set(corrections)
    maxes: dict[str, list[np.ndarray]] = {c: [] for c in corrections}
    exceed = np.zeros(o.shape)
    n_perm = 0
    for chunk in null_chunks:
        chunk = np.where(np.isfinite(chunk) & valid, chunk, 0.0)
        n_perm += chunk.shape[0]
        a = np.abs(chunk) if two_sided else chunk
        exceed += (a >= oa - 1e-12 * np.maximum(1.0, np.abs(oa))).sum(0)
        if "voxel" in maxes:
            maxes["voxel"].append(a.reshape(len(a), -1).max(1))
        if want_clusters:
            _, size, mass, _, owner = _clusters(chunk, threshold, sstruct, two_sided)
            for c, v in (("cluster_mass", mass), ("cluster_size", size)):
                if c in maxes:
                    maxes[c].append(_max_per_map(v, owner, len(chunk)))
        if "tfce" in maxes:
            t = np.abs(_tfce_stack(chunk, sstruct, two_sided, E, H, dh))
            maxes["tfce"].append(t.reshape(len(t), -1).max(1))
    null_max = {c: np.concatenate(v) for c, v in maxes.items()}
    res: dict[str, Any] = {"statistic": np.where(valid, obs, np.nan), "null_max": null_max,
                           "n_permutations": n_perm}
    res["p_uncorrected"] = np.where(valid, (1.0 + exceed) / (1.0 + n_perm), np.nan)
    if "voxel" in null_max:
        res["p_fwe"] = np.where(valid, _p_from_max(oa, null_max["voxel"]), np.nan)
    labels, size, mass, sign, _ = _clusters(o[None], threshold, sstruct, two_sided)
    res.update(cluster_id=labels[0], cluster_size=size[1:], cluster_mass=mass[1:], cluster_sign=sign[1:])
    for c, v in (("cluster_mass", mass), ("cluster_size", size)):
        if c in null_max:
            p = np.concatenate([[1.0], _p_from_max(v[1:], null_max[c])])
            res[f"cluster_{_P_VAR[c]}"] = p[1:]
            res[_P_VAR[c]] = np.where(valid, p[labels[0]], np.nan)
    if "tfce" in null_max:
        t = _tfce_stack(o[None], sstruct, two_sided, E, H, dh)[0]
        res["tfce"] = np.where(valid, t, np.nan)
        res["p_fwe_tfce"] = np.where(valid, _p_from_max(np.abs(t), null_max["tfce"]), np.nan)
    return res


def _check_corrections(corrections: Any) -> tuple[str, ...]:
    if isinstance(corrections, str):
        corrections = (corrections,)
    out = tuple(check_option("correction", c, CORRECTIONS) for c in corrections)
    if not out:
        raise InvalidDataError(f"corrections is empty; choose from {list(CORRECTIONS)}.")
    return out


def _chunks(null: np.ndarray, n_space: int) -> Iterable[np.ndarray]:
    step = max(1, _CHUNK_ELEMENTS // max(1, n_space))
    for a in range(0, null.shape[0], step):
        yield np.asarray(null[a : a + step], np.float64)


def _pooled_threshold(null: np.ndarray, cluster_p: float, two_sided: bool) -> float:
    vals = np.asarray(null, np.float64)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        raise InvalidDataError("the permutation null has no finite value.")
    vals = np.abs(vals) if two_sided else vals
    return float(np.quantile(vals, 1.0 - cluster_p))


def _check_cluster_p(cluster_p: float) -> float:
    cluster_p = check_fraction("cluster_p", cluster_p)
    if not 0 < cluster_p < 1:
        raise InvalidDataError(f"cluster_p must lie strictly between 0 and 1, got {cluster_p}.")
    return cluster_p


def _common_attrs(corrections, alternative, connectivity, n_perm, E, H, dh) -> dict[str, Any]:
    return {"corrections": list(corrections), "alternative": alternative,
            "connectivity": int(connectivity), "n_permutations": int(n_perm),
            "tfce_E": float(E), "tfce_H": float(H), "tfce_dh": str(dh),
            "neurocnn_version": version(),
            "reference": "Smith & Nichols 2009, NeuroImage (TFCE); nilearn permuted_ols"}


def _to_dataset(results: Sequence[dict[str, Any]], layers: Sequence[str], dims: tuple[str, ...],
                coords: dict[str, Any]) -> xr.Dataset:
    """Per-layer results of :func:`_infer` -> one Dataset (maps over layer x dims, clusters)."""
    map_vars = [k for k in ("statistic", "p_uncorrected", "p_fwe", "p_fwe_cluster_mass",
                            "p_fwe_cluster_size", "tfce", "p_fwe_tfce", "cluster_id") if k in results[0]]
    data_vars: dict[str, Any] = {}
    for k in map_vars:
        arr = np.stack([r[k] for r in results])
        if k.startswith("p_fwe_cluster"):
            arr = np.where(np.isnan(arr) & np.isfinite(np.stack([r["statistic"] for r in results])), 1.0, arr)
        data_vars[k] = (("layer",) + dims, arr)
    cl_vars = [k for k in ("cluster_size", "cluster_mass", "cluster_sign", "cluster_p_fwe_cluster_mass",
                           "cluster_p_fwe_cluster_size") if k in results[0]]
    cl_layer = np.concatenate([np.full(len(r["cluster_size"]), str(name)) for r, name in zip(results, layers)])
    cl_id = np.concatenate([np.arange(1, len(r["cluster_size"]) + 1) for r in results]).astype(np.int64)
    for k in cl_vars:
        data_vars[k] = ("cluster", np.concatenate([r[k] for r in results]).astype(np.float64))
    for c, v in results[0]["null_max"].items():
        data_vars[f"null_max_{c}"] = (("layer", "permutation"), np.stack([r["null_max"][c] for r in results]))
    coords = dict(coords)
    coords.update(layer=np.asarray(layers).astype(str), cluster_layer=("cluster", cl_layer.astype(str)),
                  cluster_label=("cluster", cl_id))
    return xr.Dataset(data_vars, coords=coords)


# ------------------------------------------------------------------ voxel grids
class _Grid:
    """Scatter (n, V) voxel vectors into the bounding box of their (i, j, k) and back."""

    def __init__(self, ijk: np.ndarray):
        self.lo = ijk.min(0)
        self.shape = tuple(int(s) for s in ijk.max(0) - self.lo + 1)
        self.idx = np.ravel_multi_index(tuple((ijk - self.lo).T), self.shape)
        self.size = int(np.prod(self.shape))

    def scatter(self, values: np.ndarray) -> np.ndarray:
        out = np.zeros((values.shape[0], self.size))
        out[:, self.idx] = values
        return out.reshape((values.shape[0],) + self.shape)

    def gather(self, maps: np.ndarray) -> np.ndarray:
        return maps.reshape(maps.shape[0], -1)[:, self.idx]

    def chunks(self, vectors: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
        for v in vectors:
            yield self.scatter(v)


def _gather_result(res: dict[str, Any], grid: _Grid) -> dict[str, Any]:
    out = dict(res)
    for k, v in res.items():
        if isinstance(v, np.ndarray) and v.shape == grid.shape:
            out[k] = grid.gather(v[None])[0]
    return out


def _volume_coords(ds: xr.Dataset) -> dict[str, Any]:
    return {c: ("voxel", ds[c].values) for c in ("i", "j", "k", "x", "y", "z") if c in ds.coords}


def _volume_attrs(ds: xr.Dataset) -> dict[str, Any]:
    keep = ("shape", "affine", "voxel_size_mm", "radius_mm", "metric", "method", "mask_source",
            "n_stimuli", "model_model", "model_weights_sha256")
    return {k: ds.attrs[k] for k in keep if k in ds.attrs}


# ------------------------------------------------------------------ sign flips
def _t_flips(X: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """One-sample t of sign-flipped data: X (S, V), signs (n, S) -> (n, V)."""
    S = X.shape[0]
    mean = signs @ X / S
    ss = (X * X).sum(0)
    var = np.maximum(ss - S * mean**2, 0.0) / (S - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / np.sqrt(var / S)
    return np.where(var > 1e-300 * np.maximum(ss, 1e-300), t, np.nan)


def _mean_flips(X: np.ndarray, signs: np.ndarray) -> np.ndarray:
    return signs @ X / X.shape[0]


_STATISTICS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {"t": _t_flips, "mean": _mean_flips}


def _sign_flip_chunks(X: np.ndarray, signs: np.ndarray, stat: str, per_chunk: int, progress: bool,
                      desc: str) -> Iterable[np.ndarray]:
    from tqdm.auto import tqdm

    for a in tqdm(range(0, len(signs), per_chunk), desc=desc, disable=not progress, leave=False):
        yield _STATISTICS[stat](X, signs[a : a + per_chunk])


def _flip_signs(n_subjects: int, n_permutations: int, seed: int) -> np.ndarray:
    rng = numpy_rng(seed)
    return rng.choice(np.array([-1.0, 1.0]), size=(n_permutations, n_subjects))


def _group_threshold(threshold, cluster_p, statistic, two_sided, n_subjects) -> float | None:
    if threshold is not None:
        return float(threshold)
    cluster_p = _check_cluster_p(cluster_p)
    if statistic == "t":
        return float(scipy.stats.t.isf(cluster_p / 2 if two_sided else cluster_p, df=n_subjects - 1))
    return None


def _check_group_args(n_permutations, statistic, alternative, corrections, seed):
    n_permutations = check_positive_int("n_permutations", n_permutations)
    check_option("statistic", statistic, _STATISTICS)
    check_option("alternative", alternative, ("greater", "two-sided"))
    return n_permutations, _check_corrections(corrections), int(seed)






# ------------------------------------------------------------------ group inputs
def _load_map(x: Any, what: str):
    import nibabel as nib

    from .exceptions import MissingFileError

    if isinstance(x, (str, os.PathLike)):
        if not os.path.exists(x):
            raise MissingFileError(f"{what}: file {str(x)!r} does not exist.")
        return nib.load(x)
    if isinstance(x, nib.spatialimages.SpatialImage):
        return x
    raise ShapeMismatchError(f"{what} must be a NIfTI path or image, got {type(x).__name__}.")


def _nifti_maps(layers: Mapping[str, Sequence[Any]], mask: Any):
    import nibabel as nib

    names = [str(k) for k in layers]
    counts = {len(v) for v in layers.values()}
    if len(counts) != 1:
        raise ShapeMismatchError(f"every layer needs one map per subject; got counts {sorted(counts)}.")
    vols, ref = [], None
    for name, imgs in layers.items():
        if isinstance(imgs, (str, os.PathLike)) or not isinstance(imgs, Sequence):
            raise ShapeMismatchError(f"layer {name!r}: give a list of subject maps, got {type(imgs).__name__}.")
        per = []
        for s, x in enumerate(imgs):
            img = _load_map(x, f"maps[{name!r}][{s}]")
            data = np.asarray(img.dataobj, np.float64)
            if data.ndim == 4 and data.shape[3] == 1:
                data = data[..., 0]
            if data.ndim != 3:
                raise ShapeMismatchError(f"maps[{name!r}][{s}] has shape {data.shape}; expected a 3-D map.")
            if ref is None:
                ref = (data.shape, np.asarray(img.affine, np.float64))
            elif data.shape != ref[0] or not np.allclose(img.affine, ref[1], atol=1e-4):
                raise ShapeMismatchError(
                    f"maps[{name!r}][{s}] is on another grid ({data.shape}) than the first map "
                    f"({ref[0]}); resample all maps to one grid (nilearn.image.resample_to_img)."
                )
            per.append(data)
        vols.append(np.stack(per))
    vol = np.stack(vols, 1)  # (S, L, x, y, z)
    shape, affine = ref
    if mask is None:
        m = (np.isfinite(vol) & (vol != 0)).all((0, 1))
        source = "voxels finite and non-zero in every map"
    elif isinstance(mask, np.ndarray):
        m, source = mask != 0, "array"
    else:
        img = _load_map(mask, "mask")
        m, source = np.asarray(img.dataobj).reshape(img.shape[:3]) != 0, str(mask) if isinstance(mask, (str, os.PathLike)) else "image"
        if not np.allclose(img.affine, affine, atol=1e-3):
            raise ShapeMismatchError("mask and maps have different affines; resample the mask to the maps.")
    if m.shape != shape:
        raise ShapeMismatchError(f"mask has shape {m.shape}, the maps {shape}.")
    if not m.any():
        raise InvalidDataError("no voxel to test: the mask is empty (or no voxel is non-zero in every map).")
    ijk = np.argwhere(m)
    world = nib.affines.apply_affine(affine, ijk)
    coords = {"i": ("voxel", ijk[:, 0]), "j": ("voxel", ijk[:, 1]), "k": ("voxel", ijk[:, 2]),
              "x": ("voxel", world[:, 0]), "y": ("voxel", world[:, 1]), "z": ("voxel", world[:, 2])}
    attrs = {"shape": [int(v) for v in shape], "affine": [float(a) for a in affine.ravel()],
             "voxel_size_mm": [float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(0))], "mask_source": source}
    return vol[..., m], names, coords, attrs, ijk


def _dataset_maps(results: Sequence[xr.Dataset]):
    ref = results[0]
    for n, r in enumerate(results):
        if not isinstance(r, xr.Dataset) or "correlation" not in r:
            raise ShapeMismatchError(f"maps[{n}] is not a searchlight result (an xr.Dataset with correlation).")
        if r.sizes.get("voxel") != ref.sizes.get("voxel") or any(
                not np.array_equal(r[c].values, ref[c].values) for c in ("i", "j", "k")):
            raise ShapeMismatchError(
                f"maps[{n}] has other centres than maps[0]: run every subject's searchlight with "
                "the same mask on one grid."
            )
        if list(r["layer"].values) != list(ref["layer"].values):
            raise ShapeMismatchError(f"maps[{n}] has layers {list(r['layer'].values)}, maps[0] {list(ref['layer'].values)}.")
    stack = np.stack([r["correlation"].transpose("layer", "voxel").values for r in results])
    return stack, ref


def group_maps(maps: Any, mask: Any = None):
    """Parse group input -> (subject, layer, voxel) array, layers, voxel coords, attrs, ijk."""
    if isinstance(maps, xr.Dataset):
        if "subject_correlation" not in maps:
            raise ShapeMismatchError(
                "a single searchlight Dataset must hold several subjects (subject_correlation): run "
                "searchlight({subject: brain, ...}, ...) or pass a list of single-subject results."
            )
        stack, ref = maps["subject_correlation"].transpose("subject", "layer", "voxel").values, maps
    elif isinstance(maps, Mapping):
        return _nifti_maps(maps, mask)
    elif isinstance(maps, Sequence) and not isinstance(maps, (str, bytes)) and len(maps) > 0:
        if all(isinstance(m, xr.Dataset) for m in maps):
            stack, ref = _dataset_maps(maps)
        else:
            return _nifti_maps({"map": list(maps)}, mask)
    else:
        raise ShapeMismatchError(
            f"maps must be a searchlight Dataset, a list of them, a list of NIfTI maps or "
            f"{{layer: list of NIfTI maps}}; got {type(maps).__name__}."
        )
    coords = _volume_coords(ref)
    ijk = np.stack([ref[c].values for c in ("i", "j", "k")], 1)
    return np.asarray(stack, np.float64), [str(v) for v in ref["layer"].values], coords, _volume_attrs(ref), ijk
