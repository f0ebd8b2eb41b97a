"""Theoretical and empirical (occlusion) receptive fields of CNN units.

- :mod:`.theoretical`: :func:`theoretical_rf` (size, stride, start per layer) and
  :func:`rf_box` (one unit's input-pixel box), read from the autograd graph; TF-"SAME"
  padding, branches and functional ops included; unmodelled ops are refused.
- :mod:`.occlusion`: :func:`occlude` (occluded copies, optionally straight into a crop)
  and :func:`rf_crop`, the stride-aligned crop on which a unit's value is exactly its
  value on the full image (the network's border padding reproduced where the field
  touches the image border), certified op by op.
- :mod:`.empirical`: :func:`empirical_rf` (Zhou et al. 2015 sliding-window occlusion,
  evaluated on exact crops where possible), :func:`empirical_rfs` (several layers
  sharing forward passes) and :func:`rf_size_summary`.
- :mod:`.plotting`: discrepancy maps, averaged RFs, sizes per layer.
"""

from .empirical import empirical_rf, empirical_rfs, rf_size_summary
from .occlusion import RFCrop, occlude, rf_crop
from .plotting import plot_discrepancy_maps, plot_rf_sizes, plot_rfs
from .theoretical import RFBox, rf_box, theoretical_rf

__all__ = [
    "RFBox",
    "RFCrop",
    "theoretical_rf",
    "occlude",
    "rf_box",
    "rf_crop",
    "empirical_rf",
    "empirical_rfs",
    "rf_size_summary",
    "plot_discrepancy_maps",
    "plot_rfs",
    "plot_rf_sizes",
]
