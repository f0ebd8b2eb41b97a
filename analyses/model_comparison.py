"""Figure: every real-weights network x its default layers vs human IT on the 92 images.

The model comparison of Khaligh-Razavi & Kriegeskorte (2014), Brain-Score style: each
network's default layers are compared with the human IT fMRI RDMs of Kriegeskorte et
al. (2008) (4 subjects, sessions averaged; or any user RDM set, ``--brain-rdms``) by
Kendall tau-a. All layers of all networks enter one
:func:`neurocnn.rsa.bootstrap_rdm_comparison` call (stimuli and subjects resampled,
``over="both"``), so every network is evaluated on the same bootstrap samples. A
network's score is its best layer; the layer is re-selected in every bootstrap sample,
so the confidence interval includes the selection. Pairwise network differences are
tested on those same samples (two-sided bootstrap p, Benjamini-Hochberg FDR over all
pairs), each network against the lower noise ceiling (one-sided); the ceiling-normalized
score is the best-layer tau-a over the lower noise ceiling. ``--quick``: every second
stimulus, every second layer, 50 bootstrap samples. Writes
model_comparison.nc, model_comparison.png, table.csv / table.md and headline.json.

    python analyses/model_comparison.py --out out/model_comparison
    python analyses/model_comparison.py --models efficientnet_lite0 mobilenet_v2 --brain-rdms my_rdms.npy
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import xarray as xr
from scipy.stats import false_discovery_control

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import figure, fmt_int, make_parser, output_dir, write_headline  # noqa: E402

from neurocnn import VirtualSubject, datasets, io, load_stimuli, rsa  # noqa: E402
from neurocnn._version import version  # noqa: E402
from neurocnn.exceptions import InvalidDataError, MissingFileError  # noqa: E402
from neurocnn.models import get_spec, list_models  # noqa: E402
from neurocnn.plotting import save_figure  # noqa: E402

logger = logging.getLogger("neurocnn.analyses.model_comparison")

#: Networks with real ImageNet weights available offline (shipped packages or the data mirror).
REAL_NETWORKS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2")
#: torchvision networks, included by default when their weights are present locally.
OPTIONAL_NETWORKS = ("alexnet", "vgg16", "resnet18", "squeezenet1_1")
METHOD = "tau_a"
OUTPUTS = ("model_comparison.nc", "model_comparison.png", "table.csv", "table.md", "headline.json")


def _available(name: str) -> bool:
    try:
        datasets.fetch(get_spec(name).weights, download=False)
    except MissingFileError:
        return False
    return True


def choose_networks(requested: list[str] | None) -> tuple[list[str], list[str]]:
    """Return (networks to run, default networks left out because their weights are absent)."""
    if requested:
        for name in requested:
            get_spec(name)  # unknown names fail here, before any work
        return list(dict.fromkeys(requested)), []
    optional = [n for n in OPTIONAL_NETWORKS if n in list_models()]
    present = [n for n in optional if _available(n)]
    return [*REAL_NETWORKS, *present], [n for n in optional if n not in present]


def load_brain_rdms(path: Path | None, stimuli, *, variable: str | None = None) -> xr.DataArray:
    """The human IT RDMs (default) or a user's RDM stack, one RDM per subject, on ``stimuli``'s ids."""
    if path is None:
        return datasets.load_92images_brain_rdms()
    rdms = rsa.load_rdms(path, variable=variable, stimulus_ids=list(stimuli.ids))
    if rdms.sizes["rdm"] < 2:
        raise InvalidDataError(
            f"--brain-rdms {path}: holds {rdms.sizes['rdm']} RDM; the bootstrap over subjects and "
            "the noise ceiling need one RDM per subject (at least 2), stacked as (subject, n, n)."
        )
    return rdms.assign_coords(subject=("rdm", [f"rdm{i + 1}" for i in range(rdms.sizes["rdm"])]))


def network_rdms(names, stimuli, *, weights: str, quick: bool, progress: bool):
    """Layer RDMs of every network, stacked on one ``layer`` dim named ``network/alias``."""
    stacks, info = [], {}
    for name in names:
        subject = VirtualSubject(name, weights=weights)
        layers = list(subject.default_layers)
        if quick:  # every other layer and the last: a CI-sized run with the same code path
            layers = list(dict.fromkeys(layers[::2] + layers[-1:]))
        acts = subject.activations(stimuli, layers, progress=progress)
        rdms = rsa.compute_rdm(acts, metric="correlation")
        rdms = rdms.drop_vars([c for c in rdms.coords if c not in rdms.dims])
        depth = np.linspace(0.0, 1.0, len(layers)) if len(layers) > 1 else np.ones(1)
        stacks.append(rdms.assign_coords(
            layer=[f"{name}/{x}" for x in layers], network=("layer", [name] * len(layers)),
            alias=("layer", layers), relative_depth=("layer", depth),
        ))
        info[name] = {"weights_sha256": subject.weights_id, "preprocessing": subject.preprocessing.describe()}
        del acts
    return xr.concat(stacks, dim="layer"), info


def compare_networks(layer_rdms: xr.DataArray, brain_rdms: xr.DataArray, *, n_bootstrap: int, seed: int,
                     progress: bool) -> xr.Dataset:
    """Bootstrap all layers jointly; best layer per network (re-selected per sample), pairwise tests."""
    subject_rdms = brain_rdms.groupby("subject").mean()
    boot = rsa.bootstrap_rdm_comparison(layer_rdms, subject_rdms, method=METHOD, n_bootstrap=n_bootstrap,
                                        over="both", seed=seed, progress=progress)
    boot = boot.assign_coords(layer_network=("layer", layer_rdms.network.values),
                              alias=("layer", layer_rdms.alias.values),
                              relative_depth=("layer", layer_rdms.relative_depth.values))
    networks = list(dict.fromkeys(layer_rdms.network.values.tolist()))
    evaluation, observed = boot.evaluation.values, boot.observed.values
    scores, best, best_samples = [], [], []
    for name in networks:
        rows = np.flatnonzero(layer_rdms.network.values == name)
        best.append(str(layer_rdms.alias.values[rows[np.argmax(observed[rows])]]))
        scores.append(float(observed[rows].max()))
        best_samples.append(np.max(evaluation[rows], axis=0))  # NaN samples stay NaN
    samples = np.stack(best_samples)  # (network, sample)
    alpha = (1.0 - boot.attrs["ci"]) / 2.0
    diff = samples[:, None, :] - samples[None, :, :]
    finite = np.isfinite(diff).sum(-1)
    p_pair = np.minimum(1.0, 2.0 * np.minimum(1 + (diff <= 0).sum(-1), 1 + (diff >= 0).sum(-1)) / (1 + finite))
    np.fill_diagonal(p_pair, 1.0)
    iu = np.triu_indices(len(networks), 1)
    q_pair = np.ones_like(p_pair)
    if len(iu[0]):
        q_pair[iu] = false_discovery_control(p_pair[iu], method="bh")
        q_pair[iu[::-1]] = q_pair[iu]
    lower = boot.noise_ceiling.sel(bound="lower").values
    lower_samples = boot.noise_ceiling_samples.sel(bound="lower").values
    p_ceiling = (1 + (lower_samples[None] - samples <= 0).sum(-1)) / (1 + np.isfinite(samples).sum(-1))
    table = xr.Dataset(
        {
            "score": ("network", np.array(scores)),
            "best_layer": ("network", np.array(best)),
            "score_samples": (("network", "sample"), samples),
            "score_ci_low": ("network", np.nanquantile(samples, alpha, axis=1)),
            "score_ci_high": ("network", np.nanquantile(samples, 1 - alpha, axis=1)),
            "ceiling_normalized": ("network", np.array(scores) / lower),
            "p_network_vs_network": (("network", "network2"), p_pair),
            "q_network_vs_network": (("network", "network2"), q_pair),
            "p_network_vs_lower_ceiling": ("network", p_ceiling),
        },
        coords={"network": networks, "network2": networks, "sample": boot.sample.values},
    )
    plain = {
        "layer_rdm": layer_rdms.drop_vars([c for c in layer_rdms.coords if c not in layer_rdms.dims]),
        "brain_rdm": subject_rdms.drop_vars([c for c in subject_rdms.coords if c not in subject_rdms.dims]),
    }
    return xr.merge([boot.drop_vars(["noise_ceiling_samples"]), table], combine_attrs="override").assign(plain)


def table_rows(result: xr.Dataset) -> list[dict]:
    """One row per network, best first (Brain-Score-style leaderboard)."""
    order = np.argsort(-result.score.values)
    lower, upper = (float(result.noise_ceiling.sel(bound=b)) for b in ("lower", "upper"))
    rows = []
    for rank, i in enumerate(order, start=1):
        rows.append({
            "rank": rank, "network": str(result.network.values[i]), "best_layer": str(result.best_layer.values[i]),
            "tau_a": round(float(result.score.values[i]), 4),
            "ci_low": round(float(result.score_ci_low.values[i]), 4),
            "ci_high": round(float(result.score_ci_high.values[i]), 4),
            "ceiling_normalized": round(float(result.ceiling_normalized.values[i]), 3),
            "p_vs_lower_ceiling": round(float(result.p_network_vs_lower_ceiling.values[i]), 4),
            "noise_ceiling_lower": round(lower, 4), "noise_ceiling_upper": round(upper, 4),
        })
    return rows


def write_tables(rows: list[dict], result: xr.Dataset, out: Path, *, overwrite: bool) -> None:
    keys = list(rows[0])
    csv = "\n".join([",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in rows]) + "\n"
    md = ["| " + " | ".join(keys[:8]) + " |", "|" + "---|" * 8]
    md += ["| " + " | ".join(str(r[k]) for k in keys[:8]) + " |" for r in rows]
    names = [str(n) for n in result.network.values]
    md += ["", f"noise ceiling (tau-a): {rows[0]['noise_ceiling_lower']} - {rows[0]['noise_ceiling_upper']}", "",
           "pairwise differences of the best-layer scores (FDR q, Benjamini-Hochberg over all pairs):", "",
           "| | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    q = result.q_network_vs_network.values
    md += [f"| {a} | " + " | ".join("" if i == j else f"{q[i, j]:.3g}" for j in range(len(names))) + " |"
           for i, a in enumerate(names)]
    for name, text in (("table.csv", csv), ("table.md", "\n".join(md) + "\n")):
        io.write_text(out / name, text, overwrite=overwrite, kind="model comparison table")


def plot(result: xr.Dataset):
    """(a) best-layer score per network with CIs and the noise ceiling; (b) layer profiles; (c) FDR q."""
    import matplotlib.pyplot as plt

    names = [str(n) for n in result.network.values]
    lower, upper = (float(result.noise_ceiling.sel(bound=b)) for b in ("lower", "upper"))
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.8), gridspec_kw={"width_ratios": [1.1, 1.3, 1]})
    x = np.arange(len(names))
    for ax in (a, b):
        ax.axhspan(lower, upper, color="0.85", zorder=0, label="noise ceiling")
        ax.axhline(0, color="k", lw=0.5)
    err = np.vstack([result.score - result.score_ci_low, result.score_ci_high - result.score])
    a.bar(x, result.score.values, yerr=err, capsize=3, color="#08519c", zorder=2)
    labels = [f"{n}\n({layer})" for n, layer in zip(names, result.best_layer.values)]
    a.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    a.set_ylabel("Kendall $\\tau_A$ with human IT (best layer)")
    a.set_title("best layer per network, 95% CI (stimuli x subjects)", fontsize=8)
    for name in names:
        r = result[["observed", "ci_low", "ci_high"]].isel(layer=result.layer_network.values == name)
        b.errorbar(r.relative_depth.values, r.observed.values, yerr=np.vstack([r.observed - r.ci_low,
                   r.ci_high - r.observed]), marker="o", ms=3, capsize=2, lw=1, label=name)
    b.set_xlabel("relative depth (first to last default layer)")
    b.set_ylabel("Kendall $\\tau_A$")
    b.set_title("default layers", fontsize=8)
    b.legend(fontsize=6, frameon=False, loc="upper left")
    q = np.where(np.eye(len(names), dtype=bool), np.nan, result.q_network_vs_network.values)
    im = c.imshow(-np.log10(q), cmap="magma_r", vmin=0, vmax=3)
    for i in range(len(names)):
        for j in range(len(names)):
            if i != j:
                c.text(j, i, f"{q[i, j]:.2g}", ha="center", va="center", fontsize=6,
                       color="w" if q[i, j] < 0.01 else "k")
    c.set_xticks(x, names, rotation=45, ha="right", fontsize=7)
    c.set_yticks(x, names, fontsize=7)
    c.set_title("pairwise difference, FDR q", fontsize=8)
    fig.colorbar(im, ax=c, label="$-\\log_{10} q$", shrink=0.8)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    import matplotlib.pyplot as plt

    parser = make_parser("model_comparison", __doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None,
                        help="networks (default: every real-weights network available offline)")
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--brain-rdms", type=Path, default=None,
                        help="a user RDM stack (.npy/.npz/.mat, one RDM per subject) on the stimuli's order")
    parser.add_argument("--brain-variable", default=None, help="variable of --brain-rdms holding the RDMs")
    parser.add_argument("--stimuli", default="92images", help="stimuli shown to the networks (default 92images)")
    parser.set_defaults(model=None)  # here the default is every real-weights network, not one
    args = parser.parse_args(argv)
    requested = args.models or ([args.model] if args.model else None)
    if args.weights != "pretrained" and (requested is None or len(requested) != 1):
        parser.error("--weights needs exactly one network (--models NAME)")
    out = output_dir(args)
    for name in OUTPUTS:
        io.check_writable(out / name, overwrite=args.overwrite)
    networks, left_out = choose_networks(requested)
    if left_out:
        logger.info("weights not available locally, left out: %s", ", ".join(left_out))
    stimuli = load_stimuli(args.stimuli)
    brain = load_brain_rdms(args.brain_rdms, stimuli, variable=args.brain_variable)
    if args.quick:  # every second stimulus: a CI-sized run through the same code path
        stimuli = stimuli.subset(np.arange(0, len(stimuli), 2))
        ids = list(stimuli.ids)
        brain = brain.sel(stimulus=ids, stimulus2=ids)
    n_bootstrap = 50 if args.quick else args.n_bootstrap
    layer_rdms, info = network_rdms(networks, stimuli, weights=args.weights, quick=args.quick, progress=args.progress)
    result = compare_networks(layer_rdms, brain, n_bootstrap=n_bootstrap, seed=args.seed, progress=args.progress)
    result.attrs = {
        "analysis": "model_comparison", "models": networks, "models_left_out": left_out or [""],
        "weights_sha256": [info[n]["weights_sha256"] for n in networks],
        "preprocessing": [info[n]["preprocessing"] for n in networks],
        "stimulus_set": str(args.stimuli), "brain_rdms": str(args.brain_rdms or brain.attrs.get("source", "")),
        "rdm_metric": "correlation", "method": METHOD, "bootstrap_over": "both", "n_bootstrap": int(n_bootstrap),
        "n_valid": int(result.attrs.get("n_valid", n_bootstrap)), "ci": float(result.attrs.get("ci", 0.95)),
        "best_layer_selection": "argmax of the layers' tau-a, re-selected in every bootstrap sample",
        "p_values": "two-sided bootstrap p of equal best-layer scores; q: Benjamini-Hochberg over all pairs; "
                    "p_network_vs_lower_ceiling: one-sided, small = significantly below the lower ceiling",
        "ceiling_normalized": "best-layer tau-a / lower noise ceiling",
        "n_stimuli": int(len(stimuli)), "quick": int(args.quick), "seed": int(args.seed), "neurocnn_version": version(),
    }
    io.save(result, out / OUTPUTS[0], overwrite=args.overwrite)
    fig = plot(result)
    save_figure(fig, out / OUTPUTS[1], overwrite=args.overwrite)
    plt.close(fig)
    rows = table_rows(result)
    write_tables(rows, result, out, overwrite=args.overwrite)
    write_headline(out, lambda folder: {
        "mc_models": ", ".join(networks), "mc_method": METHOD, "mc_n_bootstrap": fmt_int(n_bootstrap),
        "mc_nc_lower": str(rows[0]["noise_ceiling_lower"]), "mc_nc_upper": str(rows[0]["noise_ceiling_upper"]),
        "mc_table": (folder / "table.md").read_text().strip(), "fig_mc": figure(folder, OUTPUTS[1]),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
