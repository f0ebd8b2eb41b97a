"""Figure: layer x time correlation curves with MEG RDMs and per-layer peak latencies.

Cichy et al. (2016)'s comparison of CNN layers with time-resolved MEG RDMs on the 92
images. With ``--meg FILE`` (a .mat/.npy stack stimulus x stimulus x time, optionally
with a leading subject axis; ``--times`` a .npy of sample times in s) the user's
data are used. No public MEG RDMs are available offline, so by default the MEG RDMs
are SIMULATED: each subject's RDM at time t is a mixture of the layer RDMs with
Gaussian time courses peaking later for deeper layers (planted peaks listed in the
output attrs), plus noise. The analysis must recover the planted latencies.

    python analyses/meg_curves.py --out out/meg_curves
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import figure, fmt_int, load_result, make_parser, make_subject, md_table, output_dir, write_headline  # noqa: E402

import neurocnn as nc  # noqa: E402
from neurocnn import rsa  # noqa: E402

TIMES = np.round(np.arange(-0.1, 0.5001, 0.01), 3)  # s, 10 ms steps as in Cichy et al.


def simulate_meg(layer_rdms: xr.DataArray, *, n_subjects: int = 8, noise: float = 1.0, seed: int = 0) -> xr.DataArray:
    """Simulated MEG RDMs (subject, stimulus, stimulus2, time): layers planted at increasing latencies."""
    rng = np.random.default_rng(seed)
    n_layers = layer_rdms.sizes["layer"]
    peaks = np.linspace(0.08, 0.30, n_layers)
    n = layer_rdms.sizes["stimulus"]
    iu = np.triu_indices(n, 1)
    vecs = layer_rdms.values[:, iu[0], iu[1]]
    vecs = (vecs - vecs.mean(1, keepdims=True)) / vecs.std(1, keepdims=True)
    weights = np.exp(-0.5 * ((TIMES[None, :] - peaks[:, None]) / 0.04) ** 2)  # (layer, time)
    signal = np.einsum("lt,lp->tp", weights, vecs)
    out = np.zeros((n_subjects, n, n, TIMES.size))
    for s in range(n_subjects):
        v = signal + noise * rng.standard_normal(signal.shape)
        v = v - v.min() + 1.0
        out[s][iu[0], iu[1], :] = v.T
        out[s][iu[1], iu[0], :] = v.T
    ids = layer_rdms["stimulus"].values
    return xr.DataArray(
        out, dims=("subject", "stimulus", "stimulus2", "time"),
        coords={"subject": np.arange(n_subjects), "stimulus": ids, "stimulus2": ids, "time": TIMES},
        attrs={"simulated": 1, "planted_peaks_s": [float(p) for p in peaks], "noise": noise, "seed": seed},
    )


def plot_curves(result: xr.Dataset):
    """Layer x time curves with CIs and the peak latency of each layer."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    colors = plt.cm.viridis(np.linspace(0, 0.9, result.sizes["layer"]))
    t_ms = result.time.values * 1000
    for color, layer in zip(colors, result.layer.values):
        r = result.sel(layer=layer)
        ax.plot(t_ms, r.correlation, color=color, label=f"{layer} ({1000 * float(r.peak_latency):.0f} ms)")
        ax.fill_between(t_ms, r.ci_low, r.ci_high, color=color, alpha=0.2, lw=0)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("time from stimulus onset (ms)")
    ax.set_ylabel(f"{result.attrs['method']} with MEG RDMs")
    ax.legend(fontsize=6, frameon=False, ncol=2)
    fig.tight_layout()
    return fig


def headline(folder: Path) -> dict[str, str]:
    """Peak latency of each layer's MEG correlation curve, with its bootstrap CI (ms)."""
    ds = load_result(folder, "meg_curves.nc")
    rows = [[str(layer), fmt_int(round(1000 * float(ds.peak_latency.sel(layer=layer)))),
             f"[{fmt_int(round(1000 * float(ds.peak_latency_ci_low.sel(layer=layer))))}, "
             f"{fmt_int(round(1000 * float(ds.peak_latency_ci_high.sel(layer=layer))))}]"]
            for layer in ds.layer.values]
    return {
        "meg_source": str(ds.attrs["meg_source"]),
        "meg_n_layers": fmt_int(ds.sizes["layer"]),
        "meg_table": md_table(["layer", "peak latency (ms)", "bootstrap CI (ms)"], rows),
        "fig_meg": figure(folder, "meg_curves.png"),
    }


def main(argv: list[str] | None = None) -> int:
    import matplotlib.pyplot as plt

    parser = make_parser("meg_curves", __doc__.splitlines()[0])
    parser.add_argument("--meg", type=Path, help="MEG RDM file (.mat/.npy): stimulus x stimulus x time")
    parser.add_argument("--times", type=Path, help=".npy of sample times (s) for --meg")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=1.0, help="noise of the simulation")
    args = parser.parse_args(argv)
    out = output_dir(args)
    for name in ("meg_curves.nc", "meg_curves.png"):
        nc.io.check_writable(out / name, overwrite=args.overwrite)

    subject = make_subject(args)
    layers = subject.default_layers[::2] if args.quick else subject.default_layers
    acts = subject.activations("92images", layers, progress=args.progress)
    layer_rdms = rsa.compute_rdm(acts, metric="correlation")
    if args.meg is not None:
        times = np.load(args.times) if args.times is not None else None
        meg = rsa.load_meg_rdms(args.meg, times=times, stimulus_ids=layer_rdms["stimulus"].values)
    else:
        meg = simulate_meg(layer_rdms, n_subjects=4 if args.quick else 8, noise=args.noise, seed=args.seed)
    result = rsa.meg_layer_time_correlation(
        layer_rdms, meg, method="spearman", n_bootstrap=50 if args.quick else args.n_bootstrap,
        seed=args.seed, progress=args.progress,
    )
    result.attrs.update(
        model=subject.name, weights_sha256=subject.weights_id,
        meg_source=str(args.meg) if args.meg is not None else "simulated",
        planted_peaks_s=meg.attrs.get("planted_peaks_s", []),
    )
    nc.io.save(result.drop_vars("peak_latency_samples", errors="ignore"), out / "meg_curves.nc", overwrite=args.overwrite)
    fig = plot_curves(result)
    nc.plotting.save_figure(fig, out / "meg_curves.png", overwrite=args.overwrite)
    plt.close(fig)
    for layer in result.layer.values:
        r = result.sel(layer=layer)
        print(f"{layer:>8}: peak {1000 * float(r.peak_latency):4.0f} ms "
              f"[{1000 * float(r.peak_latency_ci_low):.0f}, {1000 * float(r.peak_latency_ci_high):.0f}]")
    write_headline(out, headline)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
