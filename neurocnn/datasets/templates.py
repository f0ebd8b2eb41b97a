"""Brain templates and masks that ship with nilearn (no download)."""

from __future__ import annotations

import nibabel as nib
import numpy as np

__all__ = ["mni_brain_mask"]


def mni_brain_mask(reference: nib.spatialimages.SpatialImage | None = None) -> nib.Nifti1Image:
    """nilearn's MNI152 brain mask (2 mm), resampled to ``reference``'s grid if given.

    Parameters
    ----------
    reference : nibabel image, optional
        Image whose grid (first three dims and affine) the mask is resampled to
        (nearest neighbour).

    Returns
    -------
    nibabel.Nifti1Image
        Binary mask (uint8).

    Examples
    --------
    >>> mask = mni_brain_mask()  # doctest: +SKIP
    >>> mask.shape
    (99, 117, 95)
    """
    from nilearn import datasets, image

    mask = datasets.load_mni152_brain_mask(resolution=2)
    if reference is not None:
        target = nib.Nifti1Image(np.zeros(reference.shape[:3], np.uint8), reference.affine)
        mask = image.resample_to_img(mask, target, interpolation="nearest",
                                     force_resample=True, copy_header=True)
    data = (np.asarray(mask.dataobj) > 0).astype(np.uint8)
    return nib.Nifti1Image(data, mask.affine)
