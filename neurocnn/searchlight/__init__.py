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

Layout: ``core.py`` (:func:`searchlight`), ``maps.py`` (:func:`to_nifti`, :func:`save_maps`,
:func:`plot_searchlight`), ``simulate.py`` (:func:`simulate_volume`), ``_spheres.py`` (sphere
offsets, masks, per-sphere RDMs and the batch kernel, shared with
:func:`neurocnn.rsa.meg_fmri_fusion`).
"""

from __future__ import annotations

from ._spheres import SEARCHLIGHT_METRICS, Volume, sphere_offsets
from .core import searchlight
from .maps import plot_searchlight, save_maps, to_nifti
from .simulate import simulate_volume

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
