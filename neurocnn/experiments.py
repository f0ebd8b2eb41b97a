"""End-to-end experiments shared by the command line and the ``analyses/`` scripts.

:func:`layers_vs_brain` is the classic model–brain RSA of Khaligh-Razavi &
Kriegeskorte (2014): every layer's RDM on the 92 images against the human IT fMRI
RDMs of Kriegeskorte et al. (2008), with bootstrap CIs, the noise ceiling, and
layer-vs-ceiling tests.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from . import datasets, io, rsa
from ._validation import check_option, check_positive_int, check_seed
from .plotting import save_figure
from .subject import VirtualSubject, version

__all__ = ["layers_vs_brain", "plot_layers_vs_brain", "plot_rdm_panels", "run_layers_vs_hit"]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())


def layers_vs_brain(
    subject: VirtualSubject,
    *,
    stimuli: Any = "92images",
    brain_rdms: xr.DataArray | None = None,
    layers: Sequence[str] | None = None,
    methods: Sequence[str] = ("tau_a", "spearman"),
    metric: str = "correlation",
    n_bootstrap: int = 1000,
    over: str = "both",
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
) -> xr.Dataset:
    """Compare every layer's RDM with subject brain RDMs, with CIs and noise ceiling.

    Parameters
    ----------
    subject : VirtualSubject
        The network.
    stimuli : str or StimulusSet
        Stimuli shown to the network (ids must match the brain RDMs'); default the
        92-object set.
    brain_rdms : xr.DataArray, optional
        Brain RDMs with a ``subject`` coord on the stack dim; sessions of one subject
        are averaged. Default: the human IT fMRI RDMs (4 subjects x 2 sessions).
    layers : sequence of str, optional
        Layers (default: the subject's default layers).
    methods : sequence of str
        RDM comparison methods (see :func:`neurocnn.rsa.compare_rdms`).
    metric : str
        RDM dissimilarity of the layers.
    n_bootstrap : int
        Bootstrap samples.
    over : {"stimuli", "subjects", "both"}
        What the bootstrap resamples.
    seed : int
        Seed of the bootstrap.
    batch_size : int
        Images per forward pass.
    progress : bool
        Show progress bars.

    Returns
    -------
    xarray.Dataset
        ``layer_rdm`` (layer, stimulus, stimulus2), ``brain_rdm`` (subject, stimulus,
        stimulus2) and, with a ``comparison`` dim (the comparison methods), the bootstrap summaries of
        :func:`neurocnn.rsa.bootstrap_rdm_comparison` (``observed``, ``mean``, ``sd``,
        ``ci_low``, ``ci_high``, ``noise_ceiling``, ``p_layer_vs_lower_ceiling``,
        ``p_layer_vs_layer``, ...). attrs: provenance of the network and the analysis.
    """
    # everything checked before the (expensive) extraction
    check_positive_int("n_bootstrap", n_bootstrap)
    check_positive_int("batch_size", batch_size)
    check_seed(seed)
    check_option("over", over, ("stimuli", "subjects", "both"))
    check_option("metric", metric, rsa.METRICS)
    for method in methods:
        check_option("method", method, rsa.COMPARE_METHODS)
    layers = list(layers or subject.default_layers)
    for layer in layers:
        subject.resolve_layer(layer)
    acts = subject.activations(stimuli, layers, batch_size=batch_size, progress=progress)
    layer_rdms = rsa.compute_rdm(acts, metric=metric)
    if brain_rdms is None:
        brain_rdms = datasets.load_92images_brain_rdms()
    subject_rdms = brain_rdms.groupby("subject").mean()
    results = []
    for method in methods:
        boot = rsa.bootstrap_rdm_comparison(
            layer_rdms, subject_rdms, method=method, n_bootstrap=n_bootstrap, over=over,
            seed=seed, progress=progress,
        )
        results.append(boot.drop_vars(["evaluation", "noise_ceiling_samples"], errors="ignore"))
    stats = xr.concat(results, dim=xr.DataArray(list(methods), dims="comparison", name="comparison"))
    out = stats.assign(
        layer_rdm=layer_rdms.drop_vars([c for c in layer_rdms.coords if c not in layer_rdms.dims], errors="ignore"),
        brain_rdm=subject_rdms.drop_vars([c for c in subject_rdms.coords if c not in subject_rdms.dims], errors="ignore"),
    )
    first = acts[layers[0]]
    out.attrs = {
        "analysis": "layers_vs_brain",
        "model": subject.name,
        "weights_sha256": subject.weights_id,
        "preprocessing": first.attrs["preprocessing"],
        "stimulus_set": first.attrs["stimulus_set"],
        "layers": [str(x) for x in layers],
        "rdm_metric": metric,
        "methods": [str(m) for m in methods],
        "bootstrap_over": over,
        "n_bootstrap": int(n_bootstrap),
        "ci": float(results[0].attrs["ci"]),
        "seed": int(seed),
        "neurocnn_version": version(),
    }
    return out


def plot_layers_vs_brain(result: xr.Dataset, method: str = "tau_a", *, ax=None):
    """Bar plot of layer–brain correlation with bootstrap CIs and the noise-ceiling band.

    Bars whose layer is significantly below the lower noise ceiling (p < 0.05,
    one-sided bootstrap test) are drawn lighter; the gray band spans the lower to
    the upper noise ceiling.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    r = result.sel(comparison=method)
    layers = [str(v) for v in r.layer.values]
    x = np.arange(len(layers))
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.6 * len(layers), 3.4))
    lower, upper = (float(r.noise_ceiling.sel(bound=b)) for b in ("lower", "upper"))
    ax.axhspan(lower, upper, color="0.85", zorder=0)
    below = r.p_layer_vs_lower_ceiling.values < 0.05
    colors = np.where(below, "#9ecae1", "#08519c")
    err = np.vstack([r.observed - r.ci_low, r.ci_high - r.observed])
    ax.bar(x, r.observed.values, yerr=err, color=colors, capsize=2, zorder=2)
    ax.set_xticks(x, layers, rotation=45, ha="right")
    label = {"tau_a": "Kendall $\\tau_A$", "spearman": "Spearman $\\rho$"}.get(method, method)
    ax.set_ylabel(f"{label} with human IT")
    ax.set_title(f"{result.attrs.get('model', '')} vs human IT ({result.attrs.get('stimulus_set', '')})", fontsize=9)
    ax.axhline(0, color="k", lw=0.5)
    from matplotlib.patches import Patch

    handles = [Patch(color="0.85", label="noise ceiling (lower-upper)"),
               Patch(color="#08519c", label="not below lower ceiling"),
               Patch(color="#9ecae1", label="below lower ceiling (p < 0.05)")]
    ax.legend(handles=handles, frameon=False, fontsize=7, loc="upper left")
    ax.figure.tight_layout()
    return ax.figure


def plot_rdm_panels(result: xr.Dataset, layers: Sequence[str] | None = None):
    """Show the mean brain RDM next to layer RDMs (each as percentiles of its dissimilarities).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from scipy.stats import rankdata

    layers = list(layers or [str(v) for v in result.layer.values])
    panels = [("human IT (mean)", result.brain_rdm.mean("subject").values)]
    panels += [(name, result.layer_rdm.sel(layer=name).values) for name in layers]
    fig, axes = plt.subplots(1, len(panels), figsize=(1.8 * len(panels), 2.1), squeeze=False)
    iu = np.triu_indices(panels[0][1].shape[0], 1)
    for ax, (title, mat) in zip(axes[0], panels):
        pct = np.zeros_like(mat)
        pct[iu] = rankdata(mat[iu]) / len(iu[0]) * 100
        pct = pct + pct.T
        ax.imshow(pct, cmap="jet", vmin=0, vmax=100, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


def run_layers_vs_hit(
    subject: VirtualSubject,
    out: str | Path,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    layers: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> xr.Dataset:
    """Run :func:`layers_vs_brain` on the 92 images and write netCDF + figures into ``out``.

    Writes ``layers_vs_hit.nc``, ``layers_vs_hit_tau_a.png``,
    ``layers_vs_hit_spearman.png`` and ``rdms.png``.

    Raises
    ------
    OverwriteError
        If an output exists and ``overwrite`` is False (checked before any work).
    """
    import matplotlib.pyplot as plt

    check_positive_int("n_bootstrap", n_bootstrap)
    check_seed(seed)
    out = io.make_output_dir(out) if not Path(out).exists() else Path(out)
    paths = [out / name for name in ("layers_vs_hit.nc", "layers_vs_hit_tau_a.png", "layers_vs_hit_spearman.png", "rdms.png")]
    for path in paths:
        io.check_writable(path, overwrite=overwrite)
    result = layers_vs_brain(subject, layers=layers, n_bootstrap=n_bootstrap, seed=seed, progress=progress)
    io.save(result, paths[0], overwrite=overwrite)
    for method, path in zip(("tau_a", "spearman"), paths[1:3]):
        fig = plot_layers_vs_brain(result, method)
        save_figure(fig, path, overwrite=overwrite)
        plt.close(fig)
    names = [str(v) for v in result.layer.values]
    fig = plot_rdm_panels(result, list(dict.fromkeys([names[0], names[len(names) // 2], names[-2], names[-1]])))
    save_figure(fig, paths[3], overwrite=overwrite)
    plt.close(fig)
    return result
