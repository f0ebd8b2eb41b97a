"""Figure: every layer of the network vs human IT on the 92 images (Kriegeskorte et al. 2008).

Kendall tau-a and Spearman correlation of each layer's RDM with the human IT fMRI
RDMs (4 subjects, sessions averaged), bootstrap CIs over stimuli and subjects, the
noise-ceiling band, and a layer-vs-lower-ceiling test (Khaligh-Razavi & Kriegeskorte
2014). AlexNet conv1..fc8 when its weights are available, else the embedded
EfficientNet-Lite0. Writes layers_vs_hit.nc and PNG figures into --out.

    python analyses/layers_vs_hit.py --out out/layers_vs_hit
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ALPHA, figure, fmt, fmt_int, fmt_p, load_result, make_parser, make_subject, md_table, output_dir, short_sha, write_headline  # noqa: E402

from neurocnn.experiments import run_layers_vs_hit  # noqa: E402


def headline(folder: Path) -> dict[str, str]:
    """The values the manuscript prints about this analysis, read back from its results."""
    ds = load_result(folder, "layers_vs_hit.nc")
    tau = ds.sel(comparison="tau_a")
    rho = ds.sel(comparison="spearman")
    layers = [str(v) for v in ds["layer"].values]
    best = layers[int(np.nanargmax(tau["observed"].values))]
    rows = [[name, fmt(tau["observed"].sel(layer=name)),
             f"[{fmt(tau['ci_low'].sel(layer=name))}, {fmt(tau['ci_high'].sel(layer=name))}]",
             fmt_p(tau["p_layer_vs_lower_ceiling"].sel(layer=name)), fmt(rho["observed"].sel(layer=name))]
            for name in layers]
    nc_tau = tau["noise_ceiling"]
    n_reach = int((tau["p_layer_vs_lower_ceiling"].values >= ALPHA).sum())
    ci_name = f"{fmt(100 * float(ds.attrs['ci']), 0)}% CI" if "ci" in ds.attrs else "bootstrap CI"
    return {
        "hit_model": str(ds.attrs["model"]),
        "hit_weights": short_sha(ds.attrs),
        "hit_n_stimuli": fmt_int(ds.sizes["stimulus"]),
        "hit_n_subjects": fmt_int(ds.sizes["subject"]),
        "hit_n_layers": fmt_int(len(layers)),
        "hit_n_bootstrap": fmt_int(ds.attrs["n_bootstrap"]),
        "hit_bootstrap_over": str(ds.attrs["bootstrap_over"]),
        "hit_rdm_metric": str(ds.attrs["rdm_metric"]),
        "hit_best_layer": best,
        "hit_best_tau": fmt(tau["observed"].sel(layer=best)),
        "hit_best_ci": f"[{fmt(tau['ci_low'].sel(layer=best))}, {fmt(tau['ci_high'].sel(layer=best))}]",
        "hit_best_rho": fmt(rho["observed"].sel(layer=best)),
        "hit_nc_lower": fmt(nc_tau.sel(bound="lower")),
        "hit_nc_upper": fmt(nc_tau.sel(bound="upper")),
        "hit_nc_rho_lower": fmt(rho["noise_ceiling"].sel(bound="lower")),
        "hit_nc_rho_upper": fmt(rho["noise_ceiling"].sel(bound="upper")),
        "hit_n_reach_ceiling": fmt_int(n_reach),
        "hit_first_layer": layers[0],
        "hit_first_tau": fmt(tau["observed"].sel(layer=layers[0])),
        "hit_table": md_table(["layer", "τ_A", ci_name, "p (layer < lower ceiling)", "Spearman ρ"], rows),
        "fig_hit_tau": figure(folder, "layers_vs_hit_tau_a.png"),
        "fig_hit_rdms": figure(folder, "rdms.png"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("layers_vs_hit", __doc__.splitlines()[0])
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)
    subject = make_subject(args)
    n_bootstrap = 50 if args.quick else args.n_bootstrap
    layers = list(dict.fromkeys(subject.default_layers[::3] + subject.default_layers[-1:])) if args.quick else None
    out = output_dir(args)
    run_layers_vs_hit(subject, out, n_bootstrap=n_bootstrap, seed=args.seed, layers=layers,
                      overwrite=args.overwrite, progress=args.progress)
    write_headline(out, headline)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
