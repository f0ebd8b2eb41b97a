"""Build the neurocnn manuscript: run every analyses/*.py script, fill the template, render the PDF.

    python paper/build.py --out out/paper [--quick] [--skip-analyses | --only NAME ...] [--benchmarks] [--seed 0]

Outputs in --out: one folder and one log per analysis, run_times.nc (wall times),
manuscript.md (filled template) and manuscript.pdf. Every number of the text is read
from the headline.json file each analysis writes (see paper/builder.py). Data files come from the
package's data manifests: set NEUROCNN_MIRROR to a local mirror (e.g. ../shared) when
offline.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from neurocnn.exceptions import NeurocnnError
from builder import build_paper

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paper/build.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "out" / "paper", help="build folder")
    parser.add_argument("--quick", action="store_true", help="CI-sized analyses (each script's --quick)")
    parser.add_argument("--skip-analyses", action="store_true", help="reuse the results already in --out")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these analyses (e.g. those that failed), reuse the others")
    parser.add_argument("--benchmarks", action="store_true", help="also run benchmarks/*.py (slow) and include their tables")
    parser.add_argument("--seed", type=int, default=0, help="seed given to every analysis")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        pdf = build_paper(args.out, repo=REPO, quick=args.quick, skip_analyses=args.skip_analyses,
                          only=args.only, benchmarks=args.benchmarks, seed=args.seed)
    except NeurocnnError as err:
        print(f"paper build failed: {err}", file=sys.stderr)
        return 1
    print(pdf)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
