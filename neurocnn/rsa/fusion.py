"""Layer x time curves from epochs, time x time generalization, and MEG-fMRI fusion.

MEG-fMRI fusion (Cichy et al. 2014, 2016): every time point's MEG RDM is correlated with
every searchlight sphere's fMRI RDM, giving a 4-D movie (x, y, z, time) of where in the
brain the representation of that moment lives. Done by the searchlight itself
(:func:`neurocnn.searchlight.searchlight`, its sphere Gram machinery and its one matrix
product of all centres x all model RDMs) with the MEG time points as the "model" RDMs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from .._validation import check_option
from .._version import version
from ..exceptions import ShapeMismatchError
from ._kernels import COMPARE_METHODS, CompareMethod
from .compare import compare_rdms
from .movie import compute_rdm_movie

__all__ = ["layer_time_curves", "rdm_time_generalization", "meg_fmri_fusion", "fusion_to_nifti"]


def _subject_epochs(epochs: Any) -> dict[str, Any]:
    if isinstance(epochs, Mapping):
        if not epochs:
            raise ShapeMismatchError("epochs is an empty dict of subjects.")
        return {str(k): v for k, v in epochs.items()}
    if isinstance(epochs, (list, tuple)):
        return {str(i): v for i, v in enumerate(epochs)}
    return {"0": epochs}


def _check_movies(movies: Mapping[str, xr.DataArray]) -> None:
    ref_name, ref = next(iter(movies.items()))
    for name, m in movies.items():
        if m.sizes["time"] != ref.sizes["time"] or not np.allclose(m["time"].values, ref["time"].values):
            raise ShapeMismatchError(
                f"subject {name!r} has other time points ({m.sizes['time']}, from {float(m['time'][0]):g}) than "
                f"subject {ref_name!r} ({ref.sizes['time']}, from {float(ref['time'][0]):g}); crop or resample "
                "the epochs to one time axis."
            )
        if set(m["stimulus"].values) != set(ref["stimulus"].values):
            raise ShapeMismatchError(
                f"subject {name!r} has other stimuli than subject {ref_name!r}; give every subject the same "
                "stimulus ids."
            )
        if m.attrs.get("n_sensors") != ref.attrs.get("n_sensors"):
            raise ShapeMismatchError(
                f"subject {name!r} has {m.attrs.get('n_sensors')} sensors, subject {ref_name!r} "
                f"{ref.attrs.get('n_sensors')}: RDMs are per subject, but the same sensor set is expected; "
                "pick the same channels (epochs.pick) for every subject."
            )


def layer_time_curves(
    layer_rdms: Any,
    epochs: Any,
    *,
    metric: str = "correlation",
    method: CompareMethod = "spearman",
    stimulus_ids: Any = None,
    test: bool = False,
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    cluster_p: float = 0.05,
    seed: int = 0,
    progress: bool = True,
    **movie_kwargs: Any,
) -> xr.Dataset:
    """Layer x time correlation curves straight from each subject's epochs.

    Parameters
    ----------
    layer_rdms : xr.DataArray or dict
        Layer RDMs (dims ``layer, stimulus, stimulus2``) with stimulus ids.
    epochs : epochs, list of epochs or dict ``{subject: epochs}``
        Each as :func:`neurocnn.rsa.compute_rdm_movie` takes them (``mne.Epochs``,
        DataArray or array).
    metric : str
        RDM metric of the movies (see :func:`compute_rdm_movie`).
    method : str
        RDM comparison (see :func:`neurocnn.rsa.compare_rdms`).
    stimulus_ids : sequence or dict, optional
        Stimulus of each trial (the same for every subject), see :func:`compute_rdm_movie`.
    test : bool
        With several subjects, also a one-sample sign-flip cluster test over time per
        layer (:func:`neurocnn.clusters.time_cluster_test`, cluster mass + TFCE) and onset
        and peak latencies with bootstrap CIs over subjects (:func:`neurocnn.clusters.latency`).
    n_permutations, n_bootstrap, cluster_p, seed
        Of the test.
    progress : bool
        Show progress bars.
    **movie_kwargs
        Passed to :func:`compute_rdm_movie` (runs, cv, noise_normalization, window, ...).

    Returns
    -------
    xr.Dataset
        ``subject_correlation`` (subject, layer, time), ``correlation`` (layer, time,
        the subject mean); with ``test``: ``p_fwe_cluster_mass``, ``p_fwe_tfce``
        (layer, time), ``onset``, ``onset_ci_low``, ``onset_ci_high``, ``peak``,
        ``peak_ci_low``, ``peak_ci_high`` (layer).

    Raises
    ------
    ShapeMismatchError
        Subjects with other time axes, sensors or stimuli; stimuli differing from the
        layer RDMs'.

    Examples
    --------
    >>> curves = layer_time_curves(layer_rdms, {"s1": epochs1, "s2": epochs2}, test=True)  # doctest: +SKIP
    """
    check_option("method", method, COMPARE_METHODS)
    subjects = _subject_epochs(epochs)
    movies = {name: compute_rdm_movie(e, metric, stimulus_ids=stimulus_ids, progress=progress, **movie_kwargs)
              for name, e in subjects.items()}
    _check_movies(movies)
    ref = next(iter(movies.values()))
    curves = []
    for m in movies.values():
        c = compare_rdms(layer_rdms, m, method=method)
        if "layer" not in c.dims:
            c = c.expand_dims(layer=[str(c.attrs.get("layer", "layer"))])
        curves.append(c.transpose("layer", "time").values)
    layer_names = compare_rdms(layer_rdms, ref.isel(time=0), method=method)
    layers = ([str(v) for v in layer_names["layer"].values] if "layer" in layer_names.dims
              else [str(layer_names.attrs.get("layer", "layer"))])
    arr = np.stack(curves)
    t = ref["time"].values
    ds = xr.Dataset({"subject_correlation": (("subject", "layer", "time"), arr),
                     "correlation": (("layer", "time"), arr.mean(0))},
                    coords={"subject": list(movies), "layer": layers, "time": t})
    ds.attrs.update(analysis="layer_time_curves", metric=metric, method=method, n_subjects=len(movies),
                    n_sensors=int(ref.attrs["n_sensors"]), seed=int(seed), neurocnn_version=version(),
                    reference="Cichy et al. 2016, Sci. Rep.")
    if test:
        from ..clusters import latency, time_cluster_test

        da = ds["subject_correlation"]
        res = time_cluster_test(da, n_permutations=n_permutations, cluster_p=cluster_p,
                                corrections=("cluster_mass", "tfce"), seed=seed, progress=progress)
        lat = latency(da, n_bootstrap=n_bootstrap, n_permutations=n_permutations, cluster_p=cluster_p,
                      seed=seed, progress=progress)
        for v in ("p_fwe_cluster_mass", "p_fwe_tfce", "statistic"):
            ds[v] = res[v]
        for v in lat.data_vars:
            ds[v] = lat[v]
        ds.attrs.update(n_permutations=int(n_permutations), n_bootstrap=int(n_bootstrap), cluster_p=float(cluster_p))
    return ds


def rdm_time_generalization(movie: xr.DataArray, other: xr.DataArray | None = None, *,
                            method: CompareMethod = "spearman") -> xr.DataArray:
    """Time x time generalization: every time's RDM compared with every (other) time's RDM.

    Parameters
    ----------
    movie : xr.DataArray
        RDM movie (time, stimulus, stimulus2), e.g. from :func:`compute_rdm_movie`, or a
        subject stack (subject, time, stimulus, stimulus2), averaged over subjects.
    other : xr.DataArray, optional
        A second movie (default: ``movie`` itself), e.g. another subject or condition.
    method : str
        RDM comparison.

    Returns
    -------
    xr.DataArray
        Dims ``(time, time2)``.

    Raises
    ------
    ShapeMismatchError
        No time dim.

    Examples
    --------
    >>> gen = rdm_time_generalization(movie)  # doctest: +SKIP
    """
    check_option("method", method, COMPARE_METHODS)
    out = []
    a_list = _per_subject(movie)
    b_list = _per_subject(other) if other is not None else a_list
    if len(b_list) != len(a_list):
        raise ShapeMismatchError(f"movie has {len(a_list)} subjects, other {len(b_list)}.")
    for a, b in zip(a_list, b_list):
        c = compare_rdms(a, b.rename(time="time2"), method=method)
        out.append(c.transpose("time", "time2").values)
    return xr.DataArray(np.mean(out, 0), dims=("time", "time2"),
                        coords={"time": a_list[0]["time"].values, "time2": b_list[0]["time"].values},
                        attrs={"method": method, "n_subjects": len(a_list), "neurocnn_version": version()})


def _per_subject(movie: xr.DataArray) -> list[xr.DataArray]:
    if not isinstance(movie, xr.DataArray) or "time" not in movie.dims:
        raise ShapeMismatchError("a movie must be an xr.DataArray with dims (time, stimulus, stimulus2) "
                                 "(and optionally subject).")
    if "subject" in movie.dims:
        return [movie.isel(subject=i, drop=True) for i in range(movie.sizes["subject"])]
    return [movie]


def meg_fmri_fusion(meg_rdms: xr.DataArray, brain: Any, *, mask: Any = None, radius: float = 6.0,
                    min_voxels: int = 10, metric: str = "correlation", method: str = "spearman",
                    stimulus_ids: Sequence[str] | np.ndarray | None = None, batch_size: int | None = None,
                    client: Any = None, progress: bool = True) -> xr.Dataset:
    """MEG-fMRI fusion: each MEG time point's RDM against each searchlight sphere's RDM.

    Parameters
    ----------
    meg_rdms : xr.DataArray
        MEG RDM movie (time, stimulus, stimulus2) (e.g. :func:`compute_rdm_movie`, or a
        subject mean); a ``subject`` dim is averaged first.
    brain : path, image, list of images
        One subject's fMRI response patterns (as :func:`neurocnn.searchlight.searchlight`).
    mask, radius, min_voxels, metric, method, stimulus_ids, batch_size, client, progress
        As :func:`neurocnn.searchlight.searchlight` (``metric`` is the fMRI RDM's).

    Returns
    -------
    xr.Dataset
        ``fusion`` (time, voxel): the correlation of the sphere's fMRI RDM with the MEG
        RDM at each time; voxel coords ``i, j, k, x, y, z``; grid attrs; ``peak_time``
        (voxel), the time of each voxel's maximum. :func:`fusion_to_nifti` makes the 4-D
        movie.

    Raises
    ------
    ShapeMismatchError
        No time dim, stimuli differing from the fMRI data's.

    Examples
    --------
    >>> fus = meg_fmri_fusion(movie, "bold.nii.gz", mask=mask, stimulus_ids=ids)  # doctest: +SKIP
    >>> fusion_to_nifti(fus).to_filename("fusion.nii.gz")  # doctest: +SKIP
    """
    from ..searchlight import searchlight

    if not isinstance(meg_rdms, xr.DataArray) or "time" not in meg_rdms.dims:
        raise ShapeMismatchError("meg_rdms must be an xr.DataArray with dims (time, stimulus, stimulus2).")
    if "subject" in meg_rdms.dims:
        meg_rdms = meg_rdms.mean("subject", keep_attrs=True)
    t = np.asarray(meg_rdms["time"].values, np.float64)
    models = meg_rdms.transpose("time", "stimulus", "stimulus2").rename(time="layer")
    models = models.assign_coords(layer=[f"{v:.6g}" for v in t])
    res = searchlight(brain, models, mask=mask, radius=radius, min_voxels=min_voxels, metric=metric, method=method,
                      stimulus_ids=stimulus_ids, batch_size=batch_size, client=client, progress=progress)
    fus = res["correlation"].values  # (time, voxel)
    best = np.nanargmax(np.where(np.isfinite(fus), fus, -np.inf), 0)
    ds = xr.Dataset({"fusion": (("time", "voxel"), fus), "peak_time": ("voxel", t[best]),
                     "n_voxels": res["n_voxels"]},
                    coords={"time": t, **{c: res[c] for c in ("i", "j", "k", "x", "y", "z")}})
    ds.attrs.update({k: v for k, v in res.attrs.items() if k not in ("analysis", "n_permutations", "test")})
    ds.attrs.update(analysis="meg_fmri_fusion", meg_metric=str(meg_rdms.attrs.get("metric", "")),
                    reference="Cichy et al. 2014, Nat. Neurosci.; 2016, Cereb. Cortex")
    return ds


def fusion_to_nifti(result: xr.Dataset, var: str = "fusion", fill_value: float = 0.0):
    """A fusion result as a 4-D NIfTI movie (x, y, z, time) on the fMRI grid.

    Parameters
    ----------
    result : xr.Dataset
        Output of :func:`meg_fmri_fusion`.
    var : str
        Variable with dims (time, voxel).
    fill_value : float
        Value outside the mask and where undefined.

    Returns
    -------
    nibabel.Nifti1Image
        float32, 4-D; the header's time unit is seconds and ``pixdim[4]`` the sampling
        interval (when the times are regular).

    Raises
    ------
    UnknownNameError
        ``var`` is not a (time, voxel) variable.

    Examples
    --------
    >>> fusion_to_nifti(fus).shape  # doctest: +SKIP
    (40, 20, 1, 60)
    """
    import nibabel as nib

    check_option("variable", var, [v for v in result.data_vars if result[v].dims == ("time", "voxel")])
    shape = tuple(int(s) for s in np.ravel(result.attrs["shape"]))
    affine = np.asarray(result.attrs["affine"], np.float64).reshape(4, 4)
    t = result["time"].values
    vol = np.full(shape + (len(t),), fill_value, np.float32)
    vals = result[var].values.T
    vol[result["i"].values, result["j"].values, result["k"].values] = np.where(np.isfinite(vals), vals, fill_value)
    img = nib.Nifti1Image(vol, affine)
    img.header.set_xyzt_units(xyz="mm", t="sec")
    if len(t) > 1 and np.allclose(np.diff(t), np.diff(t)[0]):
        img.header["pixdim"][4] = float(np.diff(t)[0])
    img.header["toffset"] = float(t[0]) if len(t) else 0.0
    return img
