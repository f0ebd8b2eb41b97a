"""Representational similarity analysis: RDMs, comparisons, noise ceilings, resampling, time courses.

Model-brain RSA for a CNN "virtual subject":

* :func:`compute_rdm` turns activations (``xr.DataArray`` with a first dim ``stimulus``,
  a dict of them, or a plain array) into RDMs via Gram matrices accumulated chunk by
  chunk over features (torch/BLAS, CPU or CUDA, float64 accumulation), so zarr/dask
  backed layers larger than memory work.
* :func:`compare_rdms` compares stacks of RDMs many-vs-many with the methods of
  ``rsatoolbox.rdm.compare`` and the same numbers.
* :func:`noise_ceiling` and :func:`bootstrap_rdm_comparison` give Nili et al. (2014)
  noise ceilings and seeded, vectorized bootstraps over stimuli and/or subjects.
* :func:`meg_layer_time_correlation` gives layer x time curves with peak latencies;
  :func:`compute_rdm_movie` makes the RDM movies from MNE epochs or arrays (``movie.py``),
  :func:`layer_time_curves` the curves straight from epochs with cluster tests and
  latencies, :func:`meg_fmri_fusion` the MEG-fMRI fusion movie (``fusion.py``).
* :func:`load_rdms`, :func:`load_meg_rdms` read user RDM files; :func:`to_rsatoolbox`
  and :func:`from_rsatoolbox` convert. The 92-image brain RDMs are in
  :mod:`neurocnn.datasets`.

RDM arrays are ``xr.DataArray`` with dims ``("stimulus", "stimulus2")`` and optional
leading stack dims (``"layer"``, ``"rdm"``, ``"time"``, ...). Stimulus ids are the
coordinates of both axes.

Bootstrap resampling of stimuli follows rsatoolbox (``bootstrap_sample_pattern`` +
``RDMs.subsample_pattern``): a stimulus drawn ``c`` times enters ``c`` times, pairs of a
stimulus with its own copies are dropped. Here this is done exactly without building
the resampled matrices: the dissimilarity of stimuli ``i < j`` enters with weight
``c_i * c_j`` (weighted ranks, weighted moments), which is what makes the bootstrap
vectorized over samples. Kendall's tau-a with such weights is counted exactly in
O(P sqrt(P)) per sample for fixed RDMs (value bins plus a bin-grid histogram, see
``neurocnn.rsa._kernels``) and with scipy's O(P log P) count on the repeated entries for
RDMs pooled per sample (noise ceilings).

Layout (one file per idea): ``calc.py`` (:func:`compute_rdm`, :func:`category_model_rdms`),
``compare.py`` (:func:`compare_rdms`), ``inference.py`` (:func:`noise_ceiling`,
:func:`bootstrap_rdm_comparison`), ``timecourse.py`` (:func:`meg_layer_time_correlation`),
``io.py`` (files, rsatoolbox); private kernels in ``_stack.py`` (condensed stacks and
checks), ``_kernels.py`` (comparison kernels, ranks, tau-a), ``_resampling.py``
(bootstrap draws).
"""

from __future__ import annotations

from ._kernels import COMPARE_METHODS, CompareMethod
from .calc import METRICS, Metric, category_model_rdms, compute_rdm
from .compare import compare_rdms
from .fusion import (
    fusion_to_nifti,
    layer_time_curves,
    meg_fmri_fusion,
    rdm_time_generalization,
)
from .inference import bootstrap_rdm_comparison, noise_ceiling
from .io import from_rsatoolbox, load_meg_rdms, load_rdms, to_rsatoolbox
from .movie import MOVIE_METRICS, compute_rdm_movie, epochs_array, simulate_epochs
from .timecourse import meg_layer_time_correlation

__all__ = [
    "METRICS",
    "COMPARE_METHODS",
    "Metric",
    "CompareMethod",
    "compute_rdm",
    "category_model_rdms",
    "compare_rdms",
    "noise_ceiling",
    "bootstrap_rdm_comparison",
    "meg_layer_time_correlation",
    "MOVIE_METRICS",
    "compute_rdm_movie",
    "epochs_array",
    "simulate_epochs",
    "layer_time_curves",
    "rdm_time_generalization",
    "meg_fmri_fusion",
    "fusion_to_nifti",
    "load_rdms",
    "load_meg_rdms",
    "to_rsatoolbox",
    "from_rsatoolbox",
]
