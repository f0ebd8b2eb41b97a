"""Shared command-line plumbing of the analysis scripts (paths and the subject in one place)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from neurocnn import VirtualSubject, datasets
from neurocnn.exceptions import MissingFileError
from neurocnn.models import get_spec

logger = logging.getLogger("neurocnn.analyses")

#: Where analyses write by default: ``out/<analysis name>/``.
DEFAULT_OUT = Path("out")


def make_parser(name: str, description: str) -> argparse.ArgumentParser:
    """Return an argument parser with the options every analysis script shares.

    ``--out`` (output folder, default ``out/<name>``), ``--model`` (architecture;
    default: AlexNet when its weights are available, else the embedded
    EfficientNet-Lite0), ``--weights`` (a state-dict file), ``--seed``, ``--quick``
    (CI-sized run), ``--overwrite`` and ``--no-progress``.
    """
    parser = argparse.ArgumentParser(prog=f"analyses/{name}.py", description=description)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT / name, help="output folder")
    parser.add_argument("--model", default=None, help="architecture (default: alexnet if its weights are available, else efficientnet_lite0)")
    parser.add_argument("--weights", default="pretrained", help="state-dict file (default: the registered pretrained weights)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--quick", action="store_true", help="small, fast run (CI)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    return parser


def available_models() -> list[str]:
    """Registered architectures whose real (pretrained) weights are available locally, in registry order.

    A registry query (``neurocnn.models.list_models`` + the weights each spec names,
    looked up without touching the network), so networks another branch registers
    are picked up without changing the analyses.
    """
    from neurocnn.exceptions import NeurocnnError
    from neurocnn.models import list_models

    names = []
    for name in list_models():
        weights = get_spec(name).weights
        if not weights:
            continue
        try:
            datasets.fetch(weights, download=False)
        except (NeurocnnError, OSError):
            continue
        names.append(name)
    return names or ["efficientnet_lite0"]


def make_subject(args: argparse.Namespace) -> VirtualSubject:
    """Return the subject the arguments ask for (AlexNet first, when its weights are present locally)."""
    if args.model is not None:
        return VirtualSubject(args.model, weights=args.weights)
    try:
        if args.weights == "pretrained":
            datasets.fetch(get_spec("alexnet").weights, download=False)
        return VirtualSubject("alexnet", weights=args.weights)
    except MissingFileError:
        logger.info("AlexNet weights not available; using the embedded EfficientNet-Lite0")
        return VirtualSubject("efficientnet_lite0")


def output_dir(args: argparse.Namespace) -> Path:
    """Create and return the output folder."""
    args.out.mkdir(parents=True, exist_ok=True)
    return args.out
