"""Planted-layer recovery: do cross-validated encoding models find the layer that made the data?

Simulated targets are built from one real layer of the network on the 92 images (random
mixtures of its units along its 3 leading principal axes, plus noise at a known SNR,
4 repeats; :func:`neurocnn.encoding.plant_responses`). Each layer in turn is the
planted one; ``fit_encoding`` then fits every layer (5 outer x 5 inner folds, per-target
penalty). Reported: how often each layer is the best one per target (a planted x
recovered confusion matrix), held-out R^2 of the planted layer next to its exact
expected value (:func:`neurocnn.encoding.expected_ridge_r2`) and the ceiling
``snr / (1 + snr)``, banded ridge band weights, a shuffled-stimulus null (R^2 and
max-statistic FWE), and the layer x layer debiased linear CKA.

Writes ``recovery.nc``, ``cka.nc``, ``encoding_layers.png`` and ``headline.json`` into ``--out``.

Usage: ``python analyses/encoding_layers.py --out out/encoding_layers [--quick] [--model efficientnet_lite0]``
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

import neurocnn as nc
from neurocnn import encoding

NAME = "encoding_layers"
SETTINGS = {
    "full": {"layers": None, "snrs": [0.5, 1.0, 3.0], "n_targets": 60, "n_permutations": 1000, "n_iter": 60},
    "quick": {"layers": 4, "snrs": [3.0], "n_targets": 20, "n_permutations": 100, "n_iter": 15},
}
N_COMPONENTS, N_REPEATS = 3, 4
logger = logging.getLogger("neurocnn.analyses")


def _pick_layers(names: list[str], n: int | None) -> list[str]:
    if n is None or n >= len(names):
        return names
    return [names[i] for i in np.linspace(0, len(names) - 1, n).round().astype(int)]


def _recover(acts: dict, layers: list[str], settings: dict, seed: int, progress: bool) -> xr.Dataset:
    snrs = settings["snrs"]
    shape = (len(layers), len(snrs))
    mean_r2 = np.zeros((*shape, len(layers)))
    best = np.zeros((*shape, len(layers)))
    theory, ceiling_est = np.zeros(shape), np.zeros(shape)
    banded = np.zeros((len(layers), len(layers)))
    splits = encoding.encoding_splits(len(acts[layers[0]].stimulus), seed=seed)
    for p, planted in enumerate(layers):
        for s, snr in enumerate(snrs):
            sim = encoding.plant_responses(acts[planted], n_targets=settings["n_targets"], n_components=N_COMPONENTS,
                                           snr=snr, n_repeats=N_REPEATS, seed=seed + 100 * p + s)
            top = s == len(snrs) - 1
            result = encoding.fit_encoding(acts, sim.response, banded=top, n_iter=settings["n_iter"], seed=seed,
                                           progress=False)
            mean_r2[p, s] = result.r2.mean("voxel").values
            best[p, s] = [(result.best_layer == name).mean().item() for name in layers]
            theory[p, s] = encoding.expected_ridge_r2(acts[planted], sim.basis.values, snr=snr, splits=splits)
            ceiling_est[p, s] = float(result.noise_ceiling.mean())
            if top:
                banded[p] = result.banded_weight.mean("voxel").values
            logger.info("planted %s snr %.1f: R2 %.3f (expected %.3f), best-layer hit rate %.2f", planted, snr,
                        mean_r2[p, s, p], theory[p, s], best[p, s, p])
    return xr.Dataset(
        {
            "mean_r2": (("planted", "snr", "layer"), mean_r2),
            "fraction_best": (("planted", "snr", "layer"), best),
            "expected_r2": (("planted", "snr"), theory),
            "noise_ceiling": (("planted", "snr"), ceiling_est),
            "banded_weight": (("planted", "layer"), banded),
        },
        coords={"planted": layers, "layer": layers, "snr": snrs,
                "r2_ceiling": ("snr", [snr / (1 + snr) for snr in snrs])},
    )


def _null(acts: dict, layer: str, settings: dict, seed: int) -> xr.Dataset:
    snr = settings["snrs"][-1]
    sim = encoding.plant_responses(acts[layer], n_targets=settings["n_targets"], n_components=N_COMPONENTS, snr=snr,
                                   n_repeats=N_REPEATS, seed=seed)
    order = np.random.default_rng(seed).permutation(sim.sizes["stimulus"])
    shuffled = sim.response.copy(data=sim.response.values[order])
    return encoding.fit_encoding(acts, shuffled, n_permutations=settings["n_permutations"], seed=seed, progress=False)


def _figure(recovery: xr.Dataset, cka: xr.DataArray, model: str):
    layers = list(recovery.layer.values)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    top = recovery.isel(snr=-1)
    im = axes[0].imshow(top.fraction_best.values, cmap="magma", vmin=0, vmax=1)
    axes[0].set_xticks(range(len(layers)), layers, rotation=60, ha="right")
    axes[0].set_yticks(range(len(layers)), layers)
    axes[0].set_xlabel("best layer (held-out R$^2$)")
    axes[0].set_ylabel("planted layer")
    axes[0].set_title(f"fraction of targets, SNR {float(top.snr):g}")
    fig.colorbar(im, ax=axes[0], fraction=0.046)
    diag = np.array([recovery.mean_r2.sel(planted=p, layer=p).values for p in layers])
    for s, snr in enumerate(recovery.snr.values):
        axes[1].scatter(recovery.expected_r2.values[:, s], diag[:, s], label=f"SNR {snr:g}", s=25)
        axes[1].axhline(float(recovery.r2_ceiling[s]), color=f"C{s}", lw=0.8, ls=":")
    lim = [min(0.0, float(diag.min())), 1.0]
    axes[1].plot(lim, lim, color="0.5", lw=0.8)
    axes[1].set_xlabel("expected R$^2$ of ridge (exact)")
    axes[1].set_ylabel("cross-validated R$^2$, planted layer")
    axes[1].set_title("R$^2$ vs theory (dotted: ceiling snr/(1+snr))")
    axes[1].legend(fontsize=8)
    im = axes[2].imshow(cka.values, cmap="viridis", vmin=0, vmax=1)
    axes[2].set_xticks(range(len(layers)), layers, rotation=60, ha="right")
    axes[2].set_yticks(range(len(layers)), layers)
    axes[2].set_title("debiased linear CKA, 92 images")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    fig.suptitle(f"Planted-layer recovery with cross-validated ridge ({model})")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = _common.make_parser(NAME, __doc__.splitlines()[0])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    settings = SETTINGS["quick" if args.quick else "full"]
    out = _common.output_dir(args)
    for name in ("recovery.nc", "cka.nc", "encoding_layers.png", "headline.json"):
        nc.io.check_writable(out / name, overwrite=args.overwrite)
    subject = _common.make_subject(args)
    layers = _pick_layers(subject.default_layers, settings["layers"])
    acts = subject.activations("92images", layers, progress=args.progress)

    recovery = _recover(acts, layers, settings, args.seed, args.progress)
    null = _null(acts, layers[len(layers) // 2], settings, args.seed)
    cka = encoding.cka_matrix(acts, debiased=True, progress=False)
    provenance = {"model": subject.name, "weights_sha256": subject.weights_id, "seed": args.seed,
                  "quick": int(args.quick), "n_components": N_COMPONENTS, "n_repeats": N_REPEATS,
                  "n_targets": settings["n_targets"], "neurocnn_version": null.attrs["neurocnn_version"]}
    recovery.attrs.update({**provenance, "null_mean_r2": float(null.r2.mean()),
                           "null_fraction_p_fwe_below_05": float((null.p_fwe < 0.05).mean())})
    cka.attrs.update(provenance)
    nc.save(recovery, out / "recovery.nc", overwrite=args.overwrite)
    nc.save(cka, out / "cka.nc", overwrite=args.overwrite)
    fig = _figure(recovery, cka, subject.name)
    nc.plotting.save_figure(fig, out / "encoding_layers.png", overwrite=args.overwrite)
    plt.close(fig)

    diag_best = np.array([recovery.fraction_best.sel(planted=p, layer=p).values for p in layers])
    diag_r2 = np.array([recovery.mean_r2.sel(planted=p, layer=p).values for p in layers])
    winner = recovery.mean_r2.argmax("layer").values == np.arange(len(layers))[:, None]
    headline = {
        **provenance,
        "layers": layers,
        "snr": [float(s) for s in recovery.snr.values],
        "planted_layer_hit_rate_per_snr": diag_best.mean(axis=0).round(4).tolist(),
        "planted_layer_has_highest_mean_r2_fraction_per_snr": winner.mean(axis=0).round(4).tolist(),
        "planted_r2_minus_expected_mean_per_snr": (diag_r2 - recovery.expected_r2.values).mean(axis=0).round(4).tolist(),
        "planted_r2_minus_expected_max_abs": float(np.abs(diag_r2 - recovery.expected_r2.values).max().round(4)),
        "banded_weight_on_planted_mean": float(np.mean(np.diag(recovery.banded_weight.values)).round(4)),
        "null_mean_r2": round(float(null.r2.mean()), 4),
        "null_fraction_p_fwe_below_05": round(float((null.p_fwe < 0.05).mean()), 4),
    }
    values = _common.as_values("enc", headline)
    _common.write_headline(out, lambda folder: {**values, "fig_enc": _common.figure(folder, "encoding_layers.png")})
    logger.info("headline: %s", headline)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
