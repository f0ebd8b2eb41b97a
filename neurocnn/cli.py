"""Command-line interface: ``neurocnn <command> ...``.

Each command is one function registered in ``_COMMANDS`` with its own argument
parser; ``neurocnn <command> --help`` documents it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import get_spec, list_models

    for name in list_models():
        spec = get_spec(name)
        sys.stdout.write(f"{name:20s} {spec.description}\n")
    return 0


def _cmd_layers(args: argparse.Namespace) -> int:
    from .models import get_spec, load_model

    spec = get_spec(args.model)
    model, _ = load_model(spec, weights=None)
    by_target = {target: alias for alias, target in spec.aliases.items()}
    for name, module in model.named_modules():
        if not name:
            continue
        alias = by_target.get(name, "")
        default = "*" if alias in spec.default_layers else " "
        sys.stdout.write(f"{default} {name:32s} {alias:12s} {type(module).__name__}\n")
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from . import io
    from .subject import VirtualSubject

    _check_common(args)
    if args.out.exists() and args.overwrite and not io.is_owned(args.out):
        io.check_writable(args.out, overwrite=True)  # a user's folder: refused, never deleted
    subject = VirtualSubject(args.model, weights=args.weights, device=args.device)
    layers = args.layers or None
    subject.activations(
        args.stimuli, layers, batch_size=args.batch_size, store=args.out,
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    sys.stdout.write(f"wrote {args.out}\n")
    return 0


def _cmd_rsa(args: argparse.Namespace) -> int:
    from ._validation import check_positive_int, check_seed

    # everything is checked before the heavy imports and before the network is loaded
    check_positive_int("--n-bootstrap", args.n_bootstrap)
    check_seed(args.seed, "--seed")
    _check_common(args)
    from .experiments import run_layers_vs_hit
    from .subject import VirtualSubject

    subject = VirtualSubject(args.model, weights=args.weights, device=args.device)
    result = run_layers_vs_hit(
        subject, args.out, n_bootstrap=args.n_bootstrap, seed=args.seed, layers=args.layers or None,
        overwrite=args.overwrite, progress=not args.no_progress,
    )
    r = result.sel(comparison="tau_a")
    lower, upper = (float(r.noise_ceiling.sel(bound=b)) for b in ("lower", "upper"))
    sys.stdout.write(f"Kendall tau-a with human IT (noise ceiling {lower:.3f} - {upper:.3f})\n")
    for layer in r.layer.values:
        row = r.sel(layer=layer)
        sys.stdout.write(
            f"  {layer:10s} {float(row.observed):6.3f}  [{float(row.ci_low):6.3f}, {float(row.ci_high):6.3f}]"
            f"  p(below lower ceiling) = {float(row.p_layer_vs_lower_ceiling):.3f}\n"
        )
    sys.stdout.write(f"wrote {args.out}\n")
    return 0


def _cmd_rf(args: argparse.Namespace) -> int:
    from .receptive_fields import theoretical_rf
    from .subject import VirtualSubject

    subject = VirtualSubject(args.model, weights=None)
    table = theoretical_rf(subject, args.layers or None)
    sys.stdout.write(f"theoretical receptive fields of {args.model} (px of the network input)\n")
    sys.stdout.write(table.to_dataframe().to_string() + "\n")
    return 0


def _cmd_maximize(args: argparse.Namespace) -> int:
    import matplotlib.pyplot as plt

    from . import io
    from .plotting import save_figure
    from .subject import VirtualSubject
    from .visualization import maximize_activation, plot_images

    _check_common(args)
    out = Path(args.out)
    for path in (out.with_suffix(".nc"), out.with_suffix(".png")):
        io.check_writable(path, overwrite=args.overwrite)
    _check_common(args)
    subject = VirtualSubject(args.model, weights=args.weights, device=args.device)
    result = maximize_activation(
        subject, args.layer, args.channel, class_name=args.class_name, minimize=args.minimize,
        steps=args.steps, seed=args.seed, progress=not args.no_progress,
    )
    io.save(result, out.with_suffix(".nc"), overwrite=args.overwrite)
    fig = plot_images(result)
    save_figure(fig, out.with_suffix(".png"), overwrite=args.overwrite)
    plt.close(fig)
    sys.stdout.write(f"wrote {out.with_suffix('.nc')} and {out.with_suffix('.png')}\n")
    return 0


def _cmd_attribute(args: argparse.Namespace) -> int:
    import matplotlib.pyplot as plt

    from . import io
    from .attribution import attribute
    from .subject import VirtualSubject

    out = Path(args.out)
    _check_common(args)
    io.output_format(out)
    io.check_writable(out, overwrite=args.overwrite)
    subject = VirtualSubject(args.model, weights=args.weights, device=args.device)
    target = {"class_name": args.class_name} if args.class_name else {"layer": args.layer, "channel": args.channel}
    result = attribute(subject, args.stimuli, args.method, **target)
    io.save(result, out, overwrite=args.overwrite)
    sys.stdout.write(f"wrote {out}\n")
    plt.close("all")
    return 0


def _load_responses(args: argparse.Namespace):
    import numpy as np
    import xarray as xr

    from .encoding import responses_from_nifti
    from .exceptions import ShapeMismatchError

    path = Path(args.responses)
    if path.name.endswith((".nii", ".nii.gz")):
        if args.mask is None or args.stimulus_ids is None:
            raise ShapeMismatchError("A NIfTI --responses needs --mask and --stimulus-ids (a text file, one id per volume).")
        ids = [line.strip() for line in Path(args.stimulus_ids).read_text().splitlines() if line.strip()]
        return responses_from_nifti(path, args.mask, stimulus_ids=ids)
    data = xr.load_dataset(path)
    names = [args.var] if args.var else list(data.data_vars)
    if len(names) != 1 or names[0] not in data:
        raise ShapeMismatchError(f"{path} holds variables {list(data.data_vars)}; choose one with --var.")
    return data[names[0]].astype(np.float64)


def _cmd_encode(args: argparse.Namespace) -> int:
    import matplotlib.pyplot as plt
    import numpy as np

    from . import io
    from .encoding import fit_encoding, plot_layer_roi, roi_summary
    from .plotting import save_figure
    from .subject import VirtualSubject

    _check_common(args)
    out = Path(args.out)
    for path in (out.with_suffix(".nc"), out.with_suffix(".png")):
        io.check_writable(path, overwrite=args.overwrite)
    responses = _load_responses(args)
    subject = VirtualSubject(args.model, weights=args.weights, device=args.device)
    acts = subject.activations(args.stimuli, args.layers or None, store=args.store, progress=not args.no_progress)
    result = fit_encoding(
        acts, responses, n_folds=args.n_folds, n_inner_folds=args.n_inner_folds, reduce=args.reduce,
        n_components=args.n_components, banded=args.banded, n_permutations=args.n_permutations,
        device=None if args.device == "cpu" else args.device, seed=args.seed, progress=not args.no_progress,
    )
    io.save(result, out.with_suffix(".nc"), overwrite=args.overwrite)
    dim = result.attrs["target_dim"]
    everything = {f"all {dim}s": np.ones(result.sizes[dim], dtype=bool)}
    table = roi_summary(result, args.rois) if args.rois else roi_summary(result, everything)
    fig = plot_layer_roi(table)
    save_figure(fig, out.with_suffix(".png"), overwrite=args.overwrite)
    plt.close(fig)
    var = table.attrs["variable"]
    sys.stdout.write(f"{var} on held-out stimuli ({result.attrs['n_folds']}-fold), mean over {dim}s:\n")
    best = result.best_layer.to_series().value_counts()
    for layer in result.layer.values:
        sys.stdout.write(f"  {layer:10s} {float(result[var].sel(layer=layer).mean()):7.3f}  best for {int(best.get(layer, 0))}\n")
    sys.stdout.write(f"wrote {out.with_suffix('.nc')} and {out.with_suffix('.png')}\n")
    return 0


def _checkout() -> Path:
    """The source checkout that holds ``analyses/`` and ``paper/`` (from the working directory up, else beside the package)."""
    from .exceptions import MissingFileError

    here = Path.cwd().resolve()
    for root in (here, *here.parents, Path(__file__).resolve().parents[1]):
        if (root / "analyses").is_dir() and (root / "paper" / "build.py").is_file():
            return root
    raise MissingFileError(
        "analyses/ and paper/ live in a source checkout of neurocnn, not in the installed package; "
        "run this command inside a clone of the repository (git clone ...; pip install -e .)."
    )


def _run_script(script: Path, argv: list[str]) -> int:
    import runpy

    saved = sys.argv, list(sys.path)
    sys.argv = [str(script), *argv]
    sys.path.insert(0, str(script.parent))
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        sys.argv, sys.path[:] = saved
    return 0


def _cmd_analysis(args: argparse.Namespace) -> int:
    from ._validation import check_option

    root = _checkout()
    names = sorted(p.stem for p in (root / "analyses").glob("*.py") if not p.name.startswith("_"))
    name = check_option("analysis", args.name, names)
    return _run_script(root / "analyses" / f"{name}.py", list(args.args))


def _cmd_paper(args: argparse.Namespace) -> int:
    _check_common(args)
    argv = ["--out", str(args.out), "--seed", str(args.seed)]
    argv += ["--quick"] * args.quick + ["--skip-analyses"] * args.skip_analyses + ["--benchmarks"] * args.benchmarks
    argv += ["--only", *args.only] if args.only else []
    return _run_script(_checkout() / "paper" / "build.py", argv)


def _cmd_dissect(args: argparse.Namespace) -> int:
    import matplotlib.pyplot as plt

    from . import io
    from .concepts import concepts_from_stimuli, labelled_stimuli, load_broden
    from .dissection import (
        annotate_units,
        detector_summary,
        dissect,
        plot_detector_counts,
    )
    from .plotting import save_figure
    from .stimuli import list_stimulus_sets
    from .subject import VirtualSubject

    _check_common(args)
    out = Path(args.out)
    subject = VirtualSubject(args.model, weights=args.weights, device=args.device)
    layers = args.layers or subject.default_layers
    for layer in layers:
        subject.resolve_layer(layer)
    paths = [out / f"{args.method}_{layer}.nc" for layer in layers] + [out / f"{args.method}_detectors.png"]
    for path in paths:
        io.check_writable(path, overwrite=args.overwrite)
    progress = not args.no_progress
    if args.method == "annotate":
        stim = args.stimuli if args.stimuli in list_stimulus_sets() else labelled_stimuli(args.stimuli)
        results = annotate_units(subject, stim, layers, labels=args.labels, top_k=args.top_k, min_precision=args.min_precision,
                                 seed=args.seed, batch_size=args.batch_size, progress=progress)
    else:
        probe = load_broden(args.broden, max_images=args.max_images) if args.broden else concepts_from_stimuli(args.stimuli)
        size = (args.size, args.size) if args.size else None
        results = {layer: dissect(subject, probe, layer, quantile=args.quantile, iou_threshold=args.iou_threshold,
                                  size=size, batch_size=args.batch_size, progress=progress) for layer in layers}
    io.make_output_dir(out, kind="dissection output")
    for layer, path in zip(layers, paths):
        io.save(results[layer], path, overwrite=args.overwrite)
    summary = detector_summary(results)
    fig = plot_detector_counts(summary)
    save_figure(fig, paths[-1], overwrite=args.overwrite)
    plt.close(fig)
    for layer in layers:
        row = summary.sel(layer=layer)
        parts = ", ".join(f"{c} {int(n)}" for c, n in zip(summary["category"].values, row["n_detectors"].values) if n)
        sys.stdout.write(f"  {layer:10s} {int(row.n_detectors.sum()):5d} / {int(row.n_units):5d} detectors  {parts}\n")
    sys.stdout.write(f"wrote {len(layers)} netCDF files and {paths[-1]}\n")
    return 0


def _check_common(args: argparse.Namespace) -> None:
    """Checks every command shares, before any expensive work: device, batch size, --out."""
    from . import io
    from ._validation import check_device, check_positive_int

    if getattr(args, "device", None) is not None:
        check_device(args.device)
    if getattr(args, "batch_size", None) is not None:
        check_positive_int("--batch-size", args.batch_size)
    out = getattr(args, "out", None)
    if out is not None:
        out = Path(out)
        if out.exists() and not out.is_dir() and args.command in ("rsa", "demo", "paper"):
            io.make_output_dir(out)  # raises: a file where a folder is wanted
        io.check_location(out / "x" if out.is_dir() else out)


def _add_subject_args(parser: argparse.ArgumentParser, default_model: str = "efficientnet_lite0") -> None:
    parser.add_argument("--model", default=default_model, help="architecture (see `neurocnn models`)")
    parser.add_argument("--weights", default="pretrained", help="state-dict file (default: registered weights)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _import_models(source: str) -> None:
    """Import a module name or a ``.py`` file (which registers models as a side effect)."""
    import importlib
    import importlib.util

    from .exceptions import MissingFileError

    if source.endswith(".py"):
        path = Path(source).expanduser()
        if not path.is_file():
            raise MissingFileError(f"--import {source}: no such file.")
        module_spec = importlib.util.spec_from_file_location(f"neurocnn_user_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return
    try:
        importlib.import_module(source)
    except ModuleNotFoundError as err:
        raise MissingFileError(f"--import {source}: {err}. Give an importable module or a .py file.") from err


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neurocnn", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE",
        help="import a module or .py file first (e.g. one that calls neurocnn.register_model); repeatable",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("models", help="list registered architectures")

    p = sub.add_parser("layers", help="list a model's layers (dotted name, alias, type; * = default)")
    p.add_argument("model")

    p = sub.add_parser("extract", help="extract activations to a zarr store")
    _add_subject_args(p)
    p.add_argument("--stimuli", required=True, help="92images, floc, a folder or an image file")
    p.add_argument("--layers", nargs="*", help="layer names or aliases (default: the model's default layers)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", type=Path, required=True, help="output .zarr directory")

    for name, help_text in (
        ("rsa", "layer RDMs vs human IT fMRI RDMs on the 92 images (tau-a, Spearman, noise ceiling)"),
        ("demo", "the main demo: `rsa` with the embedded pretrained EfficientNet-Lite0"),
    ):
        p = sub.add_parser(name, help=help_text)
        _add_subject_args(p)
        p.add_argument("--layers", nargs="*", help="layer names or aliases (default: the model's default layers)")
        p.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap samples (stimuli and subjects)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", type=Path, default=Path("out") / name, help="output folder")

    p = sub.add_parser("rf", help="theoretical receptive-field size, stride and start per layer")
    p.add_argument("model")
    p.add_argument("--layers", nargs="*", help="layers (default: the model's default layers)")

    p = sub.add_parser("maximize", help="activation maximization of a channel or a class")
    _add_subject_args(p)
    p.add_argument("--layer", help="layer name or alias (with --channel)")
    p.add_argument("--channel", type=int)
    p.add_argument("--class-name", help="ImageNet class name, e.g. 'Siamese cat'")
    p.add_argument("--minimize", action="store_true")
    p.add_argument("--steps", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="output path without extension (.nc and .png written)")

    p = sub.add_parser("attribute", help="saliency / guided backprop / deconvnet maps for stimuli")
    _add_subject_args(p)
    p.add_argument("--stimuli", required=True, help="92images, floc, a folder or an image file")
    p.add_argument("--method", default="guided_backprop", help="saliency, guided_backprop or deconvnet")
    p.add_argument("--class-name", help="target class (default: use --layer/--channel)")
    p.add_argument("--layer")
    p.add_argument("--channel", type=int)
    p.add_argument("--out", type=Path, required=True, help="output .nc file")

    p = sub.add_parser("encode", help="cross-validated ridge encoding models of layers for brain responses")
    _add_subject_args(p)
    p.add_argument("--stimuli", required=True, help="92images, floc, a folder or an image file")
    p.add_argument("--responses", required=True, help="netCDF (stimulus x voxel/neuron/sensor [x repeat]) or 4D NIfTI")
    p.add_argument("--var", help="variable of a netCDF --responses holding several")
    p.add_argument("--mask", help="brain/ROI mask of a NIfTI --responses")
    p.add_argument("--stimulus-ids", help="text file: the stimulus id of each NIfTI volume, one per line")
    p.add_argument("--layers", nargs="*", help="layer names or aliases (default: the model's default layers)")
    p.add_argument("--store", help="zarr directory to stream activations to (big layers)")
    p.add_argument("--n-folds", type=int, default=5)
    p.add_argument("--n-inner-folds", type=int, default=5)
    p.add_argument("--reduce", choices=["none", "pca", "srp"], default="none")
    p.add_argument("--n-components", type=int)
    p.add_argument("--banded", action="store_true", help="also fit banded ridge across layers")
    p.add_argument("--n-permutations", type=int, default=0)
    p.add_argument("--rois", help="coordinate of the responses' targets holding ROI labels (layer x ROI table)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="output path without extension (.nc and .png written)")
    p = sub.add_parser("dissect", help="unit semantics: image-level annotation or pixel-level network dissection")
    _add_subject_args(p)
    p.add_argument("--method", choices=["annotate", "pixel"], default="annotate",
                   help="annotate: top-K label vote (Zhou 2015); pixel: IoU with concept masks (Bau 2017)")
    p.add_argument("--stimuli", default="floc", help="floc, 92images, a folder per label, a file,label CSV, or images")
    p.add_argument("--broden", help="a Broden-layout folder (pixel method; default: colour concepts of --stimuli)")
    p.add_argument("--layers", nargs="*", help="layer names or aliases (default: the model's default layers)")
    p.add_argument("--labels", help="metadata field or 'label_*' indicator columns (annotate)")
    p.add_argument("--top-k", type=int, default=10, help="top images per unit (annotate)")
    p.add_argument("--min-precision", type=float, default=0.75, help="precision of a detector (annotate)")
    p.add_argument("--quantile", type=float, default=0.005, help="top activation quantile (pixel)")
    p.add_argument("--iou-threshold", type=float, default=0.04, help="IoU of a detector (pixel)")
    p.add_argument("--size", type=int, help="side of the frame where IoU is computed (pixel; default input size)")
    p.add_argument("--max-images", type=int, help="first N rows of the Broden index (pixel)")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass (raise it on a GPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("out") / "dissect", help="output folder")

    p = sub.add_parser("analysis", help="run an analyses/ script of a source checkout (e.g. virtual_tms)")
    p.add_argument("name", help="script name without .py")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script (--out, --quick, ...)")

    p = sub.add_parser("paper", help="run every analysis and build the manuscript PDF (source checkout; needs neurocnn[paper])")
    p.add_argument("--out", type=Path, default=Path("out") / "paper")
    p.add_argument("--quick", action="store_true", help="small, fast analyses")
    p.add_argument("--skip-analyses", action="store_true", help="reuse the analyses' outputs in --out")
    p.add_argument("--only", nargs="*", help="re-run only these analyses, reuse the others' outputs")
    p.add_argument("--benchmarks", action="store_true", help="also run the benchmarks (slow)")
    p.add_argument("--seed", type=int, default=0)
    return parser


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "models": _cmd_models,
    "layers": _cmd_layers,
    "extract": _cmd_extract,
    "rsa": _cmd_rsa,
    "demo": _cmd_rsa,
    "rf": _cmd_rf,
    "maximize": _cmd_maximize,
    "attribute": _cmd_attribute,
    "encode": _cmd_encode,
    "dissect": _cmd_dissect,
    "analysis": _cmd_analysis,
    "paper": _cmd_paper,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``neurocnn`` command line; returns the exit status.

    Every error a user can cause (all of :mod:`neurocnn.exceptions`, and OS errors such
    as a non-writable ``--out``, translated by :class:`~neurocnn.exceptions.foreign_errors`)
    is printed as one line ``neurocnn <command>: error: ...`` with exit status 2, without
    a traceback (``-v`` shows it). A closed output pipe (``neurocnn models | head``) ends
    the command quietly.
    """
    from .exceptions import NeurocnnError, foreign_errors

    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        for source in args.imports:
            _import_models(source)
        with foreign_errors(f"neurocnn {args.command}", (OSError,)):
            code = _COMMANDS[args.command](args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except NeurocnnError as err:
        if args.verbose:
            logger.exception("neurocnn %s failed", args.command)
        message = " ".join(str(err).split())
        sys.stderr.write(f"neurocnn {args.command}: error: {message}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"neurocnn {args.command}: interrupted (outputs written so far are complete; "
                         "extraction stores resume when run again)\n")
        return 130
    except Exception as err:  # noqa: BLE001 - a bug, not the user's fault: one line, -v for details
        if args.verbose:
            raise
        message = " ".join(str(err).split())[:500]
        sys.stderr.write(f"neurocnn {args.command}: unexpected error: {type(err).__name__}: {message} "
                         "(a bug in neurocnn: please report it; -v shows the traceback)\n")
        return 1


def _quiet_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the interpreter's final flush stays silent."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
