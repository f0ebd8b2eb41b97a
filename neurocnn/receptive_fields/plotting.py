"""Figures of receptive-field results: discrepancy maps, averaged RFs, sizes per layer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from .._validation import check_index

__all__ = ["plot_discrepancy_maps", "plot_rfs", "plot_rf_sizes"]


def plot_discrepancy_maps(result: xr.Dataset, unit: int = 0, *, ncols: int = 5):
    """Plot the K discrepancy maps of one unit (titles: stimulus id and activation).

    Raises
    ------
    InvalidDataError
        If ``unit`` is out of range.
    """
    import matplotlib.pyplot as plt

    check_index("unit", unit, result.sizes["unit"])
    maps = result["discrepancy"].isel(unit=unit)
    k = maps.sizes["rank"]
    ncols = max(1, min(ncols, k))
    nrows = -(-k // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2 * ncols, 2 * nrows), squeeze=False)
    extent = _extent(result["x"].values, result["y"].values)
    lim = float(np.abs(maps.values).max()) or 1.0
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < k:
            ax.imshow(maps.values[i], cmap="RdBu_r", vmin=-lim, vmax=lim, extent=extent)
            ax.plot(result["centre_x"].values[unit, i], result["centre_y"].values[unit, i], "k+")
            ax.set_title(f"{result['stimulus'].values[unit, i]}\n{result['activation'].values[unit, i]:.2f}", fontsize=7)
    fig.suptitle(f"{result.attrs['requested_as']} channel {int(result['channel'].values[unit])}: discrepancy maps")
    fig.tight_layout()
    return fig


def plot_rfs(result: xr.Dataset, units: Sequence[int] | None = None, *, ncols: int = 6):
    """Plot the averaged empirical RFs of units, with the theoretical RF box overlaid.

    Raises
    ------
    InvalidDataError
        If a unit index is out of range.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    units = list(range(result.sizes["unit"])) if units is None else list(units)
    for u in units:
        check_index("unit", u, result.sizes["unit"])
    ncols = max(1, min(ncols, len(units)))
    nrows = -(-len(units) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2 * ncols, 2 * nrows), squeeze=False)
    extent = _extent(result["dx"].values, result["dy"].values)
    sy, sx = result.attrs["theoretical_size_y"], result.attrs["theoretical_size_x"]
    for ax in axes.flat:
        ax.axis("off")
    for ax, u in zip(axes.flat, units):
        ax.imshow(result["rf"].values[u], cmap="magma", extent=extent)
        ax.add_patch(Rectangle((-sx / 2, -sy / 2), sx, sy, fill=False, ec="cyan", lw=0.8))
        ax.set_title(f"ch {int(result['channel'].values[u])}: {result['size'].values[u]:.0f} px", fontsize=7)
    fig.suptitle(f"{result.attrs['requested_as']}: empirical RFs (box: theoretical)")
    fig.tight_layout()
    return fig


def plot_rf_sizes(summary: xr.Dataset):
    """Plot theoretical vs empirical RF size per layer (output of :func:`rf_size_summary`)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    x = np.arange(summary.sizes["layer"])
    ax.plot(x, summary["theoretical_size"], "o-", label="theoretical")
    ax.errorbar(x, summary["empirical_mean"], yerr=summary["empirical_std"], fmt="s-", capsize=3,
                label="empirical (mean ± sd over units)")
    ax.set_xticks(x, [str(v) for v in summary["layer"].values], rotation=45, ha="right")
    ax.set_ylabel("RF size (px)")
    ax.set_title(f"{summary.attrs.get('model', '')}: receptive field size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _extent(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    dx = (x[1] - x[0]) / 2 if len(x) > 1 else 0.5
    dy = (y[1] - y[0]) / 2 if len(y) > 1 else 0.5
    return (float(x[0] - dx), float(x[-1] + dx), float(y[-1] + dy), float(y[0] - dy))
