"""Simulated volumes with planted representational geometry, for validation and demos."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import nibabel as nib
import numpy as np

from .._validation import check_option, numpy_rng
from ..datasets import mni_brain_mask
from ..exceptions import InvalidDataError
from ..io import load_nifti
from ..rsa._stack import _to_square
from ._spheres import Volume, _model_stack


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
