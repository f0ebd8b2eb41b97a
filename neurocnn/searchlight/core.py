"""The searchlight itself: every voxel's sphere RDM against each model layer's RDM."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import nibabel as nib
import numpy as np
import xarray as xr

from .._validation import check_option, check_positive_int, check_seed, numpy_rng
from .._version import version
from ..exceptions import InvalidDataError, ShapeMismatchError
from ..io import clean_attrs
from ..rsa import COMPARE_METHODS
from ._spheres import (
    _BATCH_BYTES,
    _PREP,
    SEARCHLIGHT_METRICS,
    NanPolicy,
    SearchlightMetric,
    _brain_matrix,
    _Job,
    _mask_array,
    _model_stack,
    _p_values,
    _permuted_models,
    _resolve_ids,
    _run_all,
    _sign_flip,
    _subject_volume,
    sphere_offsets,
)

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

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
        from ..io import check_writable, output_format

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
        from ..io import save

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


