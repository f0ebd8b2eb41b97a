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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import make_parser, make_subject, output_dir  # noqa: E402

from neurocnn.experiments import run_layers_vs_hit  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("layers_vs_hit", __doc__.splitlines()[0])
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)
    subject = make_subject(args)
    n_bootstrap = 50 if args.quick else args.n_bootstrap
    layers = list(dict.fromkeys(subject.default_layers[::3] + subject.default_layers[-1:])) if args.quick else None
    run_layers_vs_hit(subject, output_dir(args), n_bootstrap=n_bootstrap, seed=args.seed, layers=layers,
                      overwrite=args.overwrite, progress=args.progress)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
