"""Encoding models and CKA: the field's other two ways of comparing a network with a brain.

- :func:`fit_encoding`: cross-validated (per-target) ridge from each layer's features to
  voxels/neurons/sensors, banded ridge across layers, noise-ceiling normalization,
  permutation FWE; solved with himalaya (numpy on CPU, torch/CUDA selectable).
- :func:`roi_summary`, :func:`to_nifti`, :func:`plot_encoding_map`, :func:`plot_layer_roi`.
- :func:`cka`, :func:`cka_matrix`: linear/RBF, biased/debiased CKA.

Examples
--------
>>> from neurocnn import encoding  # doctest: +SKIP
>>> result = encoding.fit_encoding(acts, responses)  # doctest: +SKIP
>>> encoding.cka_matrix(acts, kernel="linear", debiased=True)  # doctest: +SKIP
"""

from __future__ import annotations

from .cka import cka, cka_matrix
from .fit import DEFAULT_ALPHAS, encoding_splits, fit_encoding
from .maps import plot_encoding_map, plot_layer_roi, responses_from_nifti, to_nifti
from .scores import permutation_null, pooled_scores, roi_summary, split_half_reliability
from .simulate import expected_ridge_r2, plant_responses

__all__ = [
    "DEFAULT_ALPHAS",
    "cka",
    "cka_matrix",
    "encoding_splits",
    "expected_ridge_r2",
    "fit_encoding",
    "permutation_null",
    "plant_responses",
    "plot_encoding_map",
    "plot_layer_roi",
    "pooled_scores",
    "responses_from_nifti",
    "roi_summary",
    "split_half_reliability",
    "to_nifti",
]
