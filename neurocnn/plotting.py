"""Shared plotting utilities (each capability module has its own ``plot_*`` helpers)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .io import atomic_output

__all__ = ["save_figure", "image_grid"]


def save_figure(fig, path: str | os.PathLike, *, overwrite: bool = False, dpi: int = 150) -> Path:
    """Save a matplotlib figure (format from the extension), never overwriting unless asked.

    Written under a temporary name and moved into place (an interrupted save leaves no
    partial figure); ``overwrite`` replaces only a figure neurocnn wrote.

    Raises
    ------
    OverwriteError
        If ``path`` exists and ``overwrite`` is False, or it is not neurocnn's.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or None
    with atomic_output(path, overwrite=overwrite, kind="figure") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt)
    return path


def image_grid(images: np.ndarray, *, titles=None, ncols: int = 8, cmap: str | None = None,
               vmin: float | None = None, vmax: float | None = None, size: float = 1.5):
    """Plot images (N, H, W) or (N, H, W, 3) in a grid; returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    n = images.shape[0]
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], cmap=cmap, vmin=vmin, vmax=vmax)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=7)
    fig.tight_layout()
    return fig
