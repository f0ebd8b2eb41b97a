"""Shared command-line plumbing of the analysis scripts (paths and the subject in one place)."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from neurocnn import VirtualSubject
from neurocnn import io as nio
from neurocnn.exceptions import AnalysisFailedError

logger = logging.getLogger("neurocnn.analyses")

#: Where analyses write by default: ``out/<analysis name>/``.
DEFAULT_OUT = Path("out")
#: The file of headline values every analysis writes into its output folder.
HEADLINE = "headline.json"


def make_parser(name: str, description: str) -> argparse.ArgumentParser:
    """Return an argument parser with the options every analysis script shares.

    ``--out`` (output folder, default ``out/<name>``), ``--model`` (a registered
    architecture, default the embedded EfficientNet-Lite0; never switched silently),
    ``--weights`` (a state-dict file), ``--seed``, ``--quick``
    (CI-sized run), ``--overwrite`` and ``--no-progress``.
    """
    parser = argparse.ArgumentParser(prog=f"analyses/{name}.py", description=description)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT / name, help="output folder")
    parser.add_argument("--model", default="efficientnet_lite0",
                        help="registered architecture (default: efficientnet_lite0, real ImageNet weights)")
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
    from neurocnn import datasets
    from neurocnn.exceptions import NeurocnnError
    from neurocnn.models import get_spec, list_models

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
    """Return the subject ``--model``/``--weights`` ask for (recorded in every result's attrs)."""
    return VirtualSubject(args.model, weights=args.weights)


def output_dir(args: argparse.Namespace) -> Path:
    """Create (and mark as neurocnn's) and return the output folder.

    Files in it are written atomically and only replaced with ``--overwrite`` when
    neurocnn wrote them (see :func:`neurocnn.io.check_writable`); a user's files in an
    existing folder are never touched.
    """
    from neurocnn import io

    return io.make_output_dir(args.out, kind=f"analysis output ({Path(__file__).stem})")


# ------------------------------------------------------------------ headline values
#: Significance level of the counts reported in the headline values.
ALPHA = 0.05


def fmt(x: float, digits: int = 3) -> str:
    """A number as the manuscript prints it (``"n/a"`` for NaN/inf)."""
    x = float(x)
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}f}"


def fmt_p(x: float) -> str:
    """A p-value as the manuscript prints it (``"< 0.001"`` below 0.001)."""
    x = float(x)
    if not np.isfinite(x):
        return "n/a"
    return "< 0.001" if x < 0.001 else f"{x:.3f}"


def fmt_int(x) -> str:
    """An integer count."""
    return str(int(x))


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def load_result(folder: Path, file: str) -> xr.Dataset:
    """An analysis result file as a Dataset; a missing file names the analysis."""
    path = folder / file
    if not path.exists():
        raise AnalysisFailedError(f"Analysis {folder.name!r} left no {file} in {folder}.")
    data = nio.load(path)
    return data.to_dataset(name=data.name or "value") if isinstance(data, xr.DataArray) else data


def figure(folder: Path, file: str) -> str:
    """A figure's path relative to the build folder (``<analysis>/<file>``); it must exist."""
    if not (folder / file).is_file():
        raise AnalysisFailedError(f"Analysis {folder.name!r} left no figure {file} in {folder}.")
    return f"{folder.name}/{file}"


def short_sha(attrs: dict) -> str:
    """The first 12 hex digits of the weights hash in ``attrs``."""
    return str(attrs.get("weights_sha256", attrs.get("model_weights_sha256", "")))[:12] or "n/a"


def peak(corr: xr.DataArray) -> tuple[float, tuple[float, float, float]]:
    """Peak value of a searchlight map and its (x, y, z) in mm."""
    v = int(np.nanargmax(corr.values))
    return float(corr.values[v]), (float(corr.x[v]), float(corr.y[v]), float(corr.z[v]))


def as_values(prefix: str, numbers: dict) -> dict[str, str]:
    """Headline values from a dict of numbers: ``{prefix}_{key}`` -> text (lists joined, dicts as JSON)."""
    def text(v) -> str:
        if isinstance(v, dict):
            return json.dumps(v, ensure_ascii=False)
        if isinstance(v, (list, tuple)):
            return ", ".join(map(str, v))
        return str(v)

    return {f"{prefix}_{k}": text(v) for k, v in numbers.items()}


def write_headline(out: Path, headline: Callable[[Path], dict[str, str]]) -> Path:
    """Write an analysis' headline values to ``out/headline.json`` (read by the paper).

    ``headline(out)`` reads the analysis' results back and returns every number the
    manuscript prints about it, already formatted, plus markdown tables (``*_table``) and
    figure paths (``fig_*``, relative to the build folder). The file is
    ``{"analysis": <folder name>, "values": {name: text}}``, written atomically.

    Raises
    ------
    AnalysisFailedError
        A result file, figure or attribute that ``headline`` needs is missing.
    """
    try:
        values = headline(out)
    except KeyError as err:
        raise AnalysisFailedError(f"The results of analysis {out.name!r} in {out} lack {err}; "
                                  f"re-run analyses/{out.name}.py with this version of neurocnn.") from err
    text = json.dumps({"analysis": out.name, "values": values}, indent=1, ensure_ascii=False) + "\n"
    return nio.write_text(out / HEADLINE, text, overwrite=True, kind="headline values")
