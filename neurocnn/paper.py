"""Build the neurocnn manuscript from the analyses' results.

:func:`build_paper` runs every ``analyses/*.py`` script into ``<out>/<name>/`` (one
subprocess each, wall time logged), reads their netCDF results with
:func:`neurocnn.io.load`, fills the manuscript template (``paper/manuscript.md.in``,
``${placeholder}`` fields only: every number of the text comes from the results) and
renders ``manuscript.md`` and ``manuscript.pdf`` (reportlab) into ``out``.

A script that fails, or a result file an analysis did not write, stops the build
with :class:`~neurocnn.exceptions.AnalysisFailedError` naming the analysis.
"""

from __future__ import annotations

import contextlib
import html
import logging
import re
import string
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from . import io
from .exceptions import AnalysisFailedError, MissingFileError

__all__ = [
    "REPO",
    "ALPHA",
    "EXTRACTORS",
    "BENCHMARK_ARGS",
    "list_analyses",
    "run_analyses",
    "run_benchmarks",
    "collect_values",
    "fill_template",
    "template_numbers",
    "markdown_to_pdf",
    "build_paper",
]

logger = logging.getLogger(__name__)

#: The repository root of an editable install (holds ``analyses/``, ``benchmarks/``, ``paper/``).
REPO = Path(__file__).resolve().parents[1]

#: Arguments given to each benchmark script in a ``quick`` build (full build: none).
BENCHMARK_ARGS: dict[str, tuple[str, ...]] = {
    "extraction": ("--quick",),
    "rsa": ("--quick",),
    "scale": ("--quick",),
    "searchlight": ("--whole-brain", "skip"),
    "receptive_fields": ("--stride", "11"),
    "visualization": ("--steps", "32", "--repeats", "1"),
}

_TAIL_LINES = 15
#: Significance level of the counts reported in the text (layers at the ceiling, FWE voxels).
ALPHA = 0.05


# ------------------------------------------------------------------ running scripts
def list_analyses(repo: str | Path = REPO) -> list[str]:
    """Names of the analysis scripts (``analyses/<name>.py``, private ``_*.py`` excluded).

    Raises
    ------
    MissingFileError
        If ``repo`` has no ``analyses/`` folder.

    Examples
    --------
    >>> list_analyses()  # doctest: +SKIP
    ['feature_visualization', 'haxby_searchlight', 'ko_sweeps', ...]
    """
    folder = Path(repo) / "analyses"
    if not folder.is_dir():
        raise MissingFileError(f"No analyses/ folder under {repo}; pass the neurocnn repository root as repo.")
    return sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))


def _tail(path: Path, n: int = _TAIL_LINES) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(lines[-n:])


def _run_script(cmd: list[str], cwd: Path, log: Path, errors: Path | None = None) -> tuple[int, float]:
    """Run ``cmd``; stdout to ``log``, stderr to ``errors`` (default: also ``log``)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(log, "w"))
        err = stack.enter_context(open(errors, "w")) if errors is not None else subprocess.STDOUT
        code = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=err, check=False).returncode
    return code, time.perf_counter() - t0


def run_analyses(
    out: str | Path,
    *,
    repo: str | Path = REPO,
    names: Sequence[str] | None = None,
    quick: bool = False,
    seed: int = 0,
    python: str = sys.executable,
) -> xr.Dataset:
    """Run analysis scripts into ``out/<name>/``, one subprocess each, and record wall times.

    Every script runs (with ``--overwrite --no-progress --seed`` and ``--quick`` when
    asked) even if an earlier one failed; its output goes to ``out/<name>.log``. The
    wall times are saved to ``out/run_times.nc``; when only some ``names`` run, their
    rows replace those of an existing ``run_times.nc`` (re-running a failed script).

    Parameters
    ----------
    out : str or Path
        Output folder of the build.
    repo : str or Path
        Repository root holding ``analyses/``.
    names : sequence of str, optional
        Scripts to run (default: all, see :func:`list_analyses`); the others keep their
        rows of an existing ``run_times.nc``.
    quick : bool
        Pass ``--quick`` (CI-sized runs).
    seed : int
        Seed given to every script.
    python : str
        Interpreter that runs the scripts.

    Returns
    -------
    xarray.Dataset
        ``wall_time_s``, ``returncode``, ``quick`` (0/1) and ``seed`` with dim ``analysis``.

    Raises
    ------
    AnalysisFailedError
        After all scripts ran, if any exited non-zero: names each one with the last
        lines of its log.
    MissingFileError
        If a name in ``names`` has no script.

    Examples
    --------
    >>> run_analyses("out/paper", names=["ko_sweeps"], quick=True)  # doctest: +SKIP
    """
    out, repo = Path(out), Path(repo)
    available = list_analyses(repo)
    partial = names is not None
    names = list(names) if partial else available
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise MissingFileError(f"No analysis script analyses/<name>.py for {unknown}; available: {available}.")
    times, codes = [], []
    for name in names:
        cmd = [python, str(repo / "analyses" / f"{name}.py"), "--out", str(out / name), "--seed", str(seed),
               "--overwrite", "--no-progress", *(["--quick"] if quick else [])]
        logger.info("running analyses/%s.py", name)
        code, seconds = _run_script(cmd, repo, out / f"{name}.log")
        logger.info("analyses/%s.py: exit %d after %.1f s", name, code, seconds)
        times.append(seconds)
        codes.append(code)
    result = xr.Dataset(
        {"wall_time_s": ("analysis", np.round(times, 1)), "returncode": ("analysis", np.asarray(codes, dtype=np.int64)),
         "quick": ("analysis", np.full(len(names), int(quick))), "seed": ("analysis", np.full(len(names), int(seed)))},
        coords={"analysis": names},
        attrs={"python": python},
    )
    if partial and (out / "run_times.nc").exists():
        previous = io.load(out / "run_times.nc")
        kept = [str(n) for n in previous["analysis"].values if str(n) not in names]
        result = xr.concat([previous.sel(analysis=kept), result], dim="analysis").sortby("analysis")
        result.attrs = {"python": python}
    io.save(result, out / "run_times.nc", overwrite=True)
    failed = [n for n, c in zip(names, codes) if c != 0]
    if failed:
        report = "\n\n".join(f"analyses/{n}.py exited with {c} (log {out / (n + '.log')}):\n{_tail(out / (n + '.log'))}"
                             for n, c in zip(names, codes) if c != 0)
        raise AnalysisFailedError(f"{len(failed)} analysis script(s) failed: {', '.join(failed)}.\n\n{report}")
    return result


def run_benchmarks(
    out: str | Path,
    *,
    repo: str | Path = REPO,
    quick: bool = False,
    python: str = sys.executable,
) -> dict[str, str]:
    """Run every ``benchmarks/*.py`` and keep its printed table in ``out/benchmarks/<name>.txt``.

    stdout (the table) goes to ``<name>.txt``, stderr (progress, warnings) to ``<name>.log``.

    In a ``quick`` build each script gets :data:`BENCHMARK_ARGS` (smaller sizes).

    Returns
    -------
    dict of str to str
        Benchmark name -> its stdout.

    Raises
    ------
    AnalysisFailedError
        If a benchmark exits non-zero (names it, with the end of its output).

    Examples
    --------
    >>> tables = run_benchmarks("out/paper", quick=True)  # doctest: +SKIP
    """
    out, repo = Path(out) / "benchmarks", Path(repo)
    outputs = {}
    for script in sorted((repo / "benchmarks").glob("*.py")):
        name = script.stem
        args = BENCHMARK_ARGS.get(name, ()) if quick else ()
        logger.info("running benchmarks/%s.py %s", name, " ".join(args))
        code, seconds = _run_script([python, str(script), *args], repo, out / f"{name}.txt", out / f"{name}.log")
        logger.info("benchmarks/%s.py: exit %d after %.1f s", name, code, seconds)
        if code != 0:
            raise AnalysisFailedError(f"benchmarks/{name}.py exited with {code}:\n{_tail(out / f'{name}.log')}")
        outputs[name] = (out / f"{name}.txt").read_text()
    return outputs


# ------------------------------------------------------------------ number formatting
def _f(x: float, digits: int = 3) -> str:
    x = float(x)
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}f}"


def _p(x: float) -> str:
    x = float(x)
    if not np.isfinite(x):
        return "n/a"
    return "< 0.001" if x < 0.001 else f"{x:.3f}"


def _int(x) -> str:
    return str(int(x))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _load(folder: Path, file: str) -> xr.Dataset:
    path = folder / file
    if not path.exists():
        raise AnalysisFailedError(
            f"Analysis {folder.name!r} left no {file} in {folder}; run analyses/{folder.name}.py "
            f"(see {folder.parent / (folder.name + '.log')} if the build ran it)."
        )
    data = io.load(path)
    return data.to_dataset(name=data.name or "value") if isinstance(data, xr.DataArray) else data


def _figure(folder: Path, file: str) -> str:
    if not (folder / file).is_file():
        raise AnalysisFailedError(f"Analysis {folder.name!r} left no figure {file} in {folder}.")
    return f"{folder.name}/{file}"


def _short_sha(attrs: dict) -> str:
    return str(attrs.get("weights_sha256", attrs.get("model_weights_sha256", "")))[:12] or "n/a"


# ------------------------------------------------------------------ per-analysis values
def _layers_vs_hit(folder: Path) -> dict[str, str]:
    ds = _load(folder, "layers_vs_hit.nc")
    tau = ds.sel(comparison="tau_a")
    rho = ds.sel(comparison="spearman")
    layers = [str(v) for v in ds["layer"].values]
    best = layers[int(np.nanargmax(tau["observed"].values))]
    rows = [[name, _f(tau["observed"].sel(layer=name)),
             f"[{_f(tau['ci_lower'].sel(layer=name))}, {_f(tau['ci_upper'].sel(layer=name))}]",
             _p(tau["p_layer_vs_lower_ceiling"].sel(layer=name)), _f(rho["observed"].sel(layer=name))]
            for name in layers]
    nc_tau = tau["noise_ceiling"]
    n_reach = int((tau["p_layer_vs_lower_ceiling"].values >= ALPHA).sum())
    ci_name = f"{_f(100 * float(ds.attrs['ci']), 0)}% CI" if "ci" in ds.attrs else "bootstrap CI"
    return {
        "hit_model": str(ds.attrs["model"]),
        "hit_weights": _short_sha(ds.attrs),
        "hit_n_stimuli": _int(ds.sizes["stimulus"]),
        "hit_n_subjects": _int(ds.sizes["subject"]),
        "hit_n_layers": _int(len(layers)),
        "hit_n_bootstrap": _int(ds.attrs["n_bootstrap"]),
        "hit_bootstrap_over": str(ds.attrs["bootstrap_over"]),
        "hit_rdm_metric": str(ds.attrs["rdm_metric"]),
        "hit_best_layer": best,
        "hit_best_tau": _f(tau["observed"].sel(layer=best)),
        "hit_best_ci": f"[{_f(tau['ci_lower'].sel(layer=best))}, {_f(tau['ci_upper'].sel(layer=best))}]",
        "hit_best_rho": _f(rho["observed"].sel(layer=best)),
        "hit_nc_lower": _f(nc_tau.sel(bound="lower")),
        "hit_nc_upper": _f(nc_tau.sel(bound="upper")),
        "hit_nc_rho_lower": _f(rho["noise_ceiling"].sel(bound="lower")),
        "hit_nc_rho_upper": _f(rho["noise_ceiling"].sel(bound="upper")),
        "hit_n_reach_ceiling": _int(n_reach),
        "hit_first_layer": layers[0],
        "hit_first_tau": _f(tau["observed"].sel(layer=layers[0])),
        "hit_table": _table(["layer", "τ_A", ci_name, "p (layer < lower ceiling)", "Spearman ρ"], rows),
        "fig_hit_tau": _figure(folder, "layers_vs_hit_tau_a.png"),
        "fig_hit_rdms": _figure(folder, "rdms.png"),
    }


def _peak(corr: xr.DataArray) -> tuple[float, tuple[float, float, float]]:
    v = int(np.nanargmax(corr.values))
    return float(corr.values[v]), (float(corr.x[v]), float(corr.y[v]), float(corr.z[v]))


def _searchlight_demo(folder: Path) -> dict[str, str]:
    ds = _load(folder, "searchlight.nc")
    rows = []
    for name in ds["layer"].values:
        c = ds["correlation"].sel(layer=name)
        rho, (x, y, z) = _peak(c)
        rows.append([str(name), _f(rho), f"({x:.0f}, {y:.0f}, {z:.0f})", _f(np.nanmean(c.values))])
    return {
        "sl_data": str(ds.attrs["data"]),
        "sl_model": str(ds.attrs.get("model", ds.attrs.get("model_model", ""))),
        "sl_n_centres": _int(ds.attrs["n_centres"]),
        "sl_radius": _f(ds.attrs["radius_mm"], 1),
        "sl_n_stimuli": _int(ds.attrs["n_stimuli"]),
        "sl_method": str(ds.attrs["method"]),
        "sl_n_layers": _int(ds.sizes["layer"]),
        "sl_table": _table(["layer", "peak ρ", "peak (MNI mm)", "mean ρ over mask"], rows),
        "fig_sl": _figure(folder, "searchlight_overview.png"),
    }


def _haxby_searchlight(folder: Path) -> dict[str, str]:
    ds = _load(folder, "haxby_searchlight.nc")
    rows = []
    for name in ds["layer"].values:
        c, p = ds["correlation"].sel(layer=name), ds["p_fwe"].sel(layer=name)
        rho, (x, y, _) = _peak(c)
        rows.append([str(name), _f(rho), f"({x:.1f}, {y:.1f})", _f(np.nanmean(c.values)),
                     _int((p.values < ALPHA).sum()), _p(np.nanmin(p.values))])
    return {
        "hx_data": str(ds.attrs["data"]),
        "hx_n_centres": _int(ds.attrs["n_centres"]),
        "hx_radius": _f(ds.attrs["radius_mm"], 1),
        "hx_n_categories": _int(ds.attrs["n_stimuli"]),
        "hx_n_permutations": _int(ds.attrs["n_permutations"]),
        "hx_lag": _int(ds.attrs["lag_volumes"]),
        "hx_table": _table(["model RDM", "peak ρ", "peak (mm)", "mean ρ", f"voxels p_FWE < {ALPHA}", "min p_FWE"], rows),
        "fig_hx": _figure(folder, "haxby_searchlight.png"),
    }


def _receptive_fields(folder: Path) -> dict[str, str]:
    ds = _load(folder, "rf_sizes.nc")
    rows = [[str(name), _f(ds["theoretical_size"].sel(layer=name), 0),
             f"{_f(ds['empirical_mean'].sel(layer=name), 1)} ± {_f(ds['empirical_std'].sel(layer=name), 1)}",
             _f(ds["empirical_median"].sel(layer=name), 1), _int(ds["n_units"].sel(layer=name))]
            for name in ds["layer"].values]
    ratio = ds["empirical_mean"] / ds["theoretical_size"]
    finite = np.isfinite(ratio.values)
    deepest = str(ds["layer"].values[-1])
    measured = np.isfinite(ds["empirical_mean"].values)
    return {
        "rf_n_layers": _int(ds.sizes["layer"]),
        "rf_window": _int(ds.attrs["window"]),
        "rf_stride": _int(ds.attrs["stride"]),
        "rf_top_k": _int(ds.attrs["top_k"]),
        "rf_fill": str(ds.attrs["fill"]),
        "rf_threshold": _f(ds.attrs["threshold"], 2),
        "rf_ratio_min": _f(np.min(ratio.values[finite]), 2) if finite.any() else "n/a",
        "rf_ratio_max": _f(np.max(ratio.values[finite]), 2) if finite.any() else "n/a",
        "rf_deepest": deepest,
        "rf_n_measured": _int(measured.sum()),
        "rf_n_smaller": _int((ds["empirical_mean"].values[measured] < ds["theoretical_size"].values[measured]).sum()),
        "rf_table": _table(["layer", "theoretical (px)", "empirical mean ± sd (px)", "median (px)", "units"], rows),
        "fig_rf_sizes": _figure(folder, "rf_sizes.png"),
        "fig_rf_maps": _figure(folder, f"rfs_{deepest}.png"),
    }


_SELECTIONS: dict[str, Callable[[dict], str]] = {
    "fdr": lambda attrs: f"Welch t, Benjamini-Hochberg FDR at q = {_f(attrs['q'], 2)}",
    "top_n": lambda attrs: "the top-n most selective channels per class; too few localizer images for FDR",
}


def _virtual_tms(folder: Path) -> dict[str, str]:
    ds = _load(folder, "virtual_tms.nc")
    inter = _load(folder, "interaction.nc")
    cats = [str(c) for c in ds["category"].values]
    rows = [[str(cond)] + [f"{_f(ds['accuracy'].sel(condition=cond, category=c))} "
                           f"[{_f(ds['ci_low'].sel(condition=cond, category=c))}, {_f(ds['ci_high'].sel(condition=cond, category=c))}]"
                           for c in cats] for cond in ds["condition"].values]
    values = {
        "tms_layer": str(ds.attrs["lesion_alias"] or ds.attrs["lesion_layer"]),
        "tms_layer_choice": str(ds.attrs["layer_choice"]),
        "tms_n_face": _int(ds.attrs["n_face_units"]),
        "tms_n_place": _int(ds.attrs["n_place_units"]),
        "tms_n_overlap": _int(ds.attrs["n_overlap"]),
        "tms_n_channels": _int(ds.attrs["n_channels"]),
        "tms_selection": _SELECTIONS[str(ds.attrs["selection"])](ds.attrs),
        "tms_amplitude": _f(ds.attrs["tms_amplitude"], 1),
        "tms_n_localizer": _int(ds.attrs["n_localizer_images"]),
        "tms_n_test": _int(ds["n_pairs"].sel(condition="intact").sum()),
        "tms_cat_a": cats[0],
        "tms_cat_b": cats[1],
        "tms_intact_a": _f(ds["accuracy"].sel(condition="intact", category=cats[0])),
        "tms_intact_b": _f(ds["accuracy"].sel(condition="intact", category=cats[1])),
        "tms_table": _table(["condition", *(f"{c} pairs: accuracy [CI]" for c in cats)], rows),
        "fig_tms": _figure(folder, "virtual_tms.png"),
    }
    for manipulation, key in (("knockout", "ko"), ("tms", "noise")):
        r = inter.sel(manipulation=manipulation)
        values.update({
            f"tms_{key}_dod": _f(r["dod"]),
            f"tms_{key}_dod_ci": f"[{_f(r['dod_ci_low'])}, {_f(r['dod_ci_high'])}]",
            f"tms_{key}_p_perm": _p(r["p_permutation"]),
            f"tms_{key}_p_logit": _p(r["p_logit"]),
        })
    values["tms_n_perm"] = _int(inter.attrs["n_perm"])
    values["tms_ci"] = _f(100 * float(ds.attrs["ci"]), 0)
    return values


def _ko_sweeps(folder: Path) -> dict[str, str]:
    ds = _load(folder, "ko_sweeps.nc").mean("repeat")
    fractions = [float(f) for f in ds["fraction"].values]
    rows = []
    for layer in ds["layer"].values:
        for kind in ds["kind"].values:
            pair = ds["pair_accuracy"].sel(layer=layer, kind=kind).values
            top1 = ds["top1_agreement"].sel(layer=layer, kind=kind).values
            rows.append([str(layer), str(kind), *(f"{_f(a, 2)} / {_f(b, 2)}" for a, b in zip(pair, top1))])
    full = ds.sel(fraction=max(fractions))
    node_full = full["pair_accuracy"].sel(kind="node")
    return {
        "ko_n_layers": _int(ds.sizes["layer"]),
        "ko_layers": ", ".join(str(v) for v in ds["layer"].values),
        "ko_fractions": ", ".join(_f(f, 2) for f in fractions),
        "ko_n_train": _int(ds.attrs["n_train_pairs"]),
        "ko_n_test": _int(ds.attrs["n_test_pairs"]),
        "ko_chance": _f(ds["pair_accuracy"].attrs["chance"], 2) if "chance" in ds["pair_accuracy"].attrs else "n/a",
        "ko_intact": _f(ds["pair_accuracy"].sel(fraction=min(fractions)).mean(), 3),
        "ko_full_node_min": _f(node_full.min(), 3),
        "ko_full_node_max": _f(node_full.max(), 3),
        "ko_table": _table(["layer", "KO", *(f"fraction {_f(f, 2)}" for f in fractions)], rows),
        "fig_ko": _figure(folder, "ko_sweeps.png"),
    }


def _feature_visualization(folder: Path) -> dict[str, str]:
    klass = _load(folder, "maximize_class.nc")
    maps = sorted(folder.glob("activation_maps_*.png"))
    tops = sorted(folder.glob("top9_*.png"))
    if not maps or not tops:
        raise AnalysisFailedError(f"Analysis 'feature_visualization' left no activation-map or top-9 figure in {folder}.")
    unit_files = sorted(folder.glob("maximize_*_ch*.nc"))
    roles = sorted({str(io.load(p).attrs["role"]) for p in unit_files})
    top = _load(folder, tops[0].with_suffix(".nc").name)
    return {
        "fv_mid_layer": maps[0].stem[len("activation_maps_"):],
        "fv_n_units": _int(len(unit_files)),
        "fv_roles": ", ".join(roles),
        "fv_class": str(klass.attrs["target"]),
        "fv_initial": _f(klass.attrs["initial_activation"], 2),
        "fv_final": _f(klass.attrs["final_activation"], 2),
        "fv_classified_as": str(klass.attrs["classified_as"]),
        "fv_classified_p": _f(klass.attrs["classified_probability"], 3),
        "fv_steps": _int(klass.attrs["steps"]),
        "fv_top_k": _int(top.sizes["rank"]),
        "fig_fv_filters": _figure(folder, "filters.png"),
        "fig_fv_maps": _figure(folder, maps[0].name),
        "fig_fv_top": _figure(folder, tops[0].name),
        "fig_fv_maximize": _figure(folder, "maximize.png"),
        "fig_fv_dream": _figure(folder, "deepdream.png"),
        "fig_fv_attr": _figure(folder, "attributions.png"),
    }


#: Analysis name -> function(folder) -> template values. An analysis script without an
#: entry here is still run, and its figures are listed under "Other analyses".
EXTRACTORS: dict[str, Callable[[Path], dict[str, str]]] = {
    "layers_vs_hit": _layers_vs_hit,
    "searchlight_demo": _searchlight_demo,
    "haxby_searchlight": _haxby_searchlight,
    "receptive_fields": _receptive_fields,
    "virtual_tms": _virtual_tms,
    "ko_sweeps": _ko_sweeps,
    "feature_visualization": _feature_visualization,
}


_RUN_MODES = {
    (1,): "quick (CI-sized: fewer layers, units, pairs, bootstrap samples and permutations)",
    (0,): "full",
    (0, 1): "mixed (some analyses in quick, CI-sized mode; see the wall-time table)",
}


def _run_values(out: Path) -> dict[str, str]:
    ds = _load(out, "run_times.nc")
    failed = [str(n) for n, c in zip(ds["analysis"].values, ds["returncode"].values) if c != 0]
    if failed:
        raise AnalysisFailedError(f"Analyses {failed} failed in the run recorded in {out / 'run_times.nc'} "
                                  f"(logs: {out}/<name>.log); re-run them, e.g. paper/build.py --only {' '.join(failed)}.")
    seeds = sorted({int(s) for s in ds["seed"].values})
    rows = [[f"`analyses/{n}.py`", "quick" if q else "full", _f(t, 1)]
            for n, q, t in zip(ds["analysis"].values, ds["quick"].values, ds["wall_time_s"].values)]
    return {
        "run_mode": _RUN_MODES[tuple(sorted({int(q) for q in ds["quick"].values}))],
        "run_seed": ", ".join(map(str, seeds)),
        "run_total_s": _f(float(ds["wall_time_s"].sum()), 0),
        "run_table": _table(["script", "mode", "wall time (s)"], rows),
    }


def _other_analyses(out: Path, names: Sequence[str]) -> str:
    parts = []
    for name in names:
        figures = sorted((out / name).glob("*.png"))
        if not figures:
            raise AnalysisFailedError(f"Analysis {name!r} left no figure in {out / name}.")
        parts.append(f"### `{name}`\n\n" + "\n\n".join(f"![`{name}`: {p.stem}]({name}/{p.name})" for p in figures))
    return "## Other analyses\n\n" + "\n\n".join(parts) if parts else ""


def _benchmark_values(out: Path) -> dict[str, str]:
    folder = out / "benchmarks"
    files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
    if not files:
        return {"benchmarks": "The benchmark scripts (`benchmarks/*.py`) were not run in this build; "
                              "`python paper/build.py --benchmarks` runs them and prints their tables here."}
    return {"benchmarks": "\n\n".join(f"### `benchmarks/{p.name[:-len('.txt')]}.py`\n\n```\n{p.read_text().rstrip()}\n```"
                                      for p in files)}


def collect_values(out: str | Path, names: Sequence[str] | None = None) -> dict[str, str]:
    """Read the analyses' netCDF results under ``out`` and return the template's values.

    Parameters
    ----------
    out : str or Path
        Build folder holding ``<name>/`` per analysis and ``run_times.nc``.
    names : sequence of str, optional
        Analyses to read (default: those in ``run_times.nc``).

    Returns
    -------
    dict of str to str
        Placeholder -> formatted text (numbers, markdown tables, figure paths).

    Raises
    ------
    AnalysisFailedError
        If an analysis's folder, result file or figure is missing, or the run recorded
        in ``run_times.nc`` failed (names the analysis).

    Examples
    --------
    >>> values = collect_values("out/paper")  # doctest: +SKIP
    >>> values["hit_best_layer"]  # doctest: +SKIP
    'stage6'
    """
    out = Path(out)
    values = {**_run_values(out), "alpha": _f(ALPHA, 2)}
    names = list(names) if names is not None else [str(n) for n in _load(out, "run_times.nc")["analysis"].values]
    missing = [n for n in EXTRACTORS if n not in names]
    if missing:
        raise AnalysisFailedError(f"The manuscript needs the analyses {missing}, which this build did not run.")
    for name in names:
        if not (out / name).is_dir():
            raise AnalysisFailedError(f"Analysis {name!r} has no output folder {out / name}.")
    for name, extract in EXTRACTORS.items():
        try:
            values.update(extract(out / name))
        except KeyError as err:
            raise AnalysisFailedError(f"The results of analysis {name!r} in {out / name} lack {err}; "
                                      f"re-run analyses/{name}.py with this version of neurocnn.") from err
    values["other_analyses"] = _other_analyses(out, [n for n in names if n not in EXTRACTORS])
    values.update(_benchmark_values(out))
    model = values["hit_model"]
    values["model"] = model
    values["weights"] = values["hit_weights"]
    return values


# ------------------------------------------------------------------ template
_YEAR = re.compile(r"\b(19|20)\d\d[a-z]?\b")


def template_numbers(template: str) -> list[str]:
    """Digits typed into ``template`` outside ``${placeholders}`` and four-digit citation years.

    The manuscript's rule is that every number comes from the results; a non-empty
    answer names the offending snippets.

    Parameters
    ----------
    template : str
        Template text.

    Returns
    -------
    list of str
        One snippet (the digit with some context) per typed digit.

    Examples
    --------
    >>> template_numbers("tau was ${tau} (Nili et al. 2014)")
    []
    >>> len(template_numbers("tau was 0.3"))
    2
    """
    text = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", "", template)
    text = _YEAR.sub("", text)
    return [text[max(0, m.start() - 20):m.end() + 20].replace("\n", " ") for m in re.finditer(r"\d", text)]


def _table_numbers(template: str) -> dict[str, str]:
    """``tab_<x>`` -> the number the renderer gives the table ``${<x>_table}`` (order of appearance)."""
    names = re.findall(r"\$\{([A-Za-z0-9_]+)_table\}", template)
    return {f"tab_{name}": str(i) for i, name in enumerate(names, 1)}


def fill_template(template: str, values: dict[str, str]) -> str:
    """Fill the ``${name}`` fields of ``template`` from ``values``.

    ``${tab_<x>}`` fields are the numbers of the tables ``${<x>_table}`` in order of
    appearance (the PDF renderer numbers tables the same way).

    Parameters
    ----------
    template : str
        Template text with ``${name}`` fields.
    values : dict of str to str
        Field values (see :func:`collect_values`).

    Returns
    -------
    str
        The filled text.

    Raises
    ------
    AnalysisFailedError
        If a field has no value (names the fields), so no hole is left silently.

    Examples
    --------
    >>> fill_template("${hit_table} best: ${layer} (Table ${tab_hit})", {"layer": "conv5", "hit_table": "|...|"})
    '|...| best: conv5 (Table 1)'
    """
    values = {**_table_numbers(template), **values}
    fields = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", template))
    missing = sorted(fields - set(values))
    if missing:
        raise AnalysisFailedError(f"The manuscript template needs values that no analysis provided: {missing}.")
    return string.Template(template).substitute(values)


def build_paper(
    out: str | Path,
    *,
    repo: str | Path = REPO,
    template: str | Path | None = None,
    quick: bool = False,
    skip_analyses: bool = False,
    only: Sequence[str] | None = None,
    benchmarks: bool = False,
    seed: int = 0,
) -> Path:
    """Run the analyses (and optionally the benchmarks) and build ``out/manuscript.pdf``.

    Parameters
    ----------
    out : str or Path
        Build folder: ``<name>/`` per analysis, logs, ``run_times.nc``,
        ``manuscript.md`` and ``manuscript.pdf``.
    repo : str or Path
        Repository root (``analyses/``, ``benchmarks/``, ``paper/``).
    template : str or Path, optional
        Manuscript template (default ``<repo>/paper/manuscript.md.in``).
    quick : bool
        CI-sized analyses (``--quick``) and benchmarks.
    skip_analyses : bool
        Reuse the results already in ``out`` instead of running the scripts.
    only : sequence of str, optional
        Run only these analyses (e.g. the ones that failed) and reuse the others' results.
    benchmarks : bool
        Also run ``benchmarks/*.py`` (slow) and include their printed tables.
    seed : int
        Seed given to every analysis.

    Returns
    -------
    Path
        The PDF.

    Raises
    ------
    AnalysisFailedError
        If an analysis fails or leaves a result or figure missing.
    MissingFileError
        If the template or ``analyses/`` is missing.

    Examples
    --------
    >>> from neurocnn.paper import build_paper  # doctest: +SKIP
    >>> build_paper("out/paper", quick=True)  # doctest: +SKIP
    """
    out, repo = Path(out), Path(repo)
    template = Path(template) if template is not None else repo / "paper" / "manuscript.md.in"
    if not template.is_file():
        raise MissingFileError(f"No manuscript template at {template}.")
    io.make_output_dir(out, kind="paper build")
    if not skip_analyses:
        run_analyses(out, repo=repo, names=only, quick=quick, seed=seed)
    if benchmarks:
        run_benchmarks(out, repo=repo, quick=quick)
    text = fill_template(template.read_text(), collect_values(out))
    # both written under temporary names and moved into place: a killed build leaves no
    # half-written manuscript (the previous one, if any, stays)
    io.write_text(out / "manuscript.md", text, overwrite=True, kind="manuscript")
    pdf = out / "manuscript.pdf"
    with io.atomic_output(pdf, overwrite=True, kind="manuscript") as tmp:
        markdown_to_pdf(text, tmp, base_dir=out, title="neurocnn")
    logger.info("wrote %s", pdf)
    return pdf


# ------------------------------------------------------------------ PDF (reportlab)
_IMAGE = re.compile(r"^!\[(?P<caption>.*)\]\((?P<path>[^)]+)\)\s*$")
_INLINE = (
    (re.compile(r"`([^`]+)`"), r'<font face="DejaVuSansMono">\1</font>'),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<b>\1</b>"),
    (re.compile(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])"), r"<i>\1</i>"),
    (re.compile(r"([\u0391-\u03c9])_([A-Za-z]+)"), r"\1<sub>\2</sub>"),  # τ_A -> τ with subscript A
)


def _register_fonts() -> None:
    import matplotlib
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if "DejaVuSans" in pdfmetrics.getRegisteredFontNames():
        return
    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    faces = {"DejaVuSans": "DejaVuSans.ttf", "DejaVuSans-Bold": "DejaVuSans-Bold.ttf",
             "DejaVuSans-Oblique": "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique": "DejaVuSans-BoldOblique.ttf",
             "DejaVuSansMono": "DejaVuSansMono.ttf"}
    for name, file in faces.items():
        pdfmetrics.registerFont(TTFont(name, str(ttf / file)))
    addMapping("DejaVuSans", 0, 0, "DejaVuSans")
    addMapping("DejaVuSans", 1, 0, "DejaVuSans-Bold")
    addMapping("DejaVuSans", 0, 1, "DejaVuSans-Oblique")
    addMapping("DejaVuSans", 1, 1, "DejaVuSans-BoldOblique")


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    for pattern, repl in _INLINE:
        out = pattern.sub(repl, out)
    return out


def _styles():
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet

    base = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=base["BodyText"], fontName="DejaVuSans", fontSize=9.5, leading=13,
                          spaceAfter=5)
    return {
        "body": body,
        "title": ParagraphStyle("title", parent=base["Title"], fontName="DejaVuSans-Bold", fontSize=16, leading=20),
        "h2": ParagraphStyle("h2", parent=base["Heading2"], fontName="DejaVuSans-Bold", fontSize=12.5, spaceBefore=10),
        "h3": ParagraphStyle("h3", parent=base["Heading3"], fontName="DejaVuSans-Bold", fontSize=10.5, spaceBefore=6),
        "bullet": ParagraphStyle("bullet", parent=body, leftIndent=12, bulletIndent=2),
        "caption": ParagraphStyle("caption", parent=body, fontSize=8.5, leading=11, spaceAfter=10),
        "cell": ParagraphStyle("cell", parent=body, fontSize=7.5, leading=9.5, spaceAfter=0),
        "code": ParagraphStyle("code", parent=body, fontName="DejaVuSansMono", fontSize=6.3, leading=7.6),
    }


def _pdf_table(rows: list[str], caption: str | None, number: int, styles, width: float) -> list:
    from reportlab.lib import colors
    from reportlab.platypus import KeepTogether, Paragraph, Table, TableStyle

    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
    cells = [r for r in cells if not all(re.fullmatch(r":?-{2,}:?", c) for c in r)]
    data = [[Paragraph(_inline(c), styles["cell"]) for c in r] for r in cells]
    table = Table(data, repeatRows=1, hAlign="LEFT", colWidths=None if len(cells[0]) > 2 else [width * 0.3, width * 0.7])
    table.setStyle(TableStyle([
        ("LINEABOVE", (0, 0), (-1, 0), 0.8, colors.black),
        ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
        ("LINEBELOW", (0, -1), (-1, -1), 0.8, colors.black),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
    ]))
    head = [Paragraph(f"<b>Table {number}.</b> {_inline(caption)}", styles["caption"])] if caption else []
    return [KeepTogether(head + [table]), Paragraph("", styles["caption"])]


def _pdf_code(lines: list[str], style, width: float):
    """Verbatim block, its font shrunk so that the longest line fits the frame width."""
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.pdfbase.pdfmetrics import stringWidth
    from reportlab.platypus import Preformatted

    longest = max((stringWidth(line, style.fontName, style.fontSize) for line in lines), default=0.0)
    scale = min(1.0, width / longest) if longest else 1.0
    fitted = ParagraphStyle("code_fitted", parent=style, fontSize=style.fontSize * scale, leading=style.leading * scale)
    return Preformatted("\n".join(lines), fitted)


def _pdf_figure(path: Path, caption: str, number: int, styles, width: float, max_height: float) -> list:
    from reportlab.lib.utils import ImageReader
    from reportlab.platypus import Image, KeepTogether, Paragraph

    w, h = ImageReader(str(path)).getSize()
    scale = min(0.9 * width / w, max_height / h)
    image = Image(str(path), width=w * scale, height=h * scale)
    return [KeepTogether([image, Paragraph(f"<b>Figure {number}.</b> {_inline(caption)}", styles["caption"])])]


def markdown_to_pdf(markdown: str, pdf: str | Path, *, base_dir: str | Path, title: str = "") -> Path:
    """Render ``markdown`` (the manuscript's subset) to ``pdf``; images resolve against ``base_dir``.

    Parameters
    ----------
    markdown : str
        The filled manuscript.
    pdf : str or Path
        Output PDF path (overwritten).
    base_dir : str or Path
        Folder that relative image paths are relative to.
    title : str
        PDF metadata title.

    Returns
    -------
    Path
        The written PDF.

    Raises
    ------
    MissingFileError
        If a figure file does not exist.

    Examples
    --------
    >>> markdown_to_pdf(open("out/paper/manuscript.md").read(), "x.pdf", base_dir="out/paper")  # doctest: +SKIP
    PosixPath('x.pdf')
    """
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import cm
    from reportlab.platypus import Paragraph, SimpleDocTemplate

    from .exceptions import MissingFileError

    _register_fonts()
    styles = _styles()
    pdf, base_dir = Path(pdf), Path(base_dir)
    doc = SimpleDocTemplate(str(pdf), pagesize=A4, leftMargin=2 * cm, rightMargin=2 * cm, topMargin=1.8 * cm,
                            bottomMargin=1.8 * cm, title=title, author="neurocnn")
    story: list = []
    counters = {"figure": 0, "table": 0}
    lines = markdown.splitlines()
    i, paragraph, caption = 0, [], None

    def flush() -> None:
        if paragraph:
            story.append(Paragraph(_inline(" ".join(paragraph)), styles["body"]))
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            story.append(_pdf_code(lines[i + 1:j], styles["code"], doc.width))
            i = j + 1
            continue
        if stripped.startswith("|"):
            flush()
            j = i
            while j < len(lines) and lines[j].strip().startswith("|"):
                j += 1
            counters["table"] += 1
            story.extend(_pdf_table(lines[i:j], caption, counters["table"], styles, doc.width))
            caption, i = None, j
            continue
        match = _IMAGE.match(stripped)
        if match:
            flush()
            path = base_dir / match["path"]
            if not path.is_file():
                raise MissingFileError(f"Figure {match['path']!r} of the manuscript does not exist under {base_dir}.")
            counters["figure"] += 1
            story.extend(_pdf_figure(path, match["caption"], counters["figure"], styles, doc.width, doc.height * 0.45))
        elif stripped.startswith("Table:"):
            flush()
            caption = stripped[len("Table:"):].strip()
        elif stripped.startswith("#"):
            flush()
            level = len(stripped) - len(stripped.lstrip("#"))
            style = {1: "title", 2: "h2"}.get(level, "h3")
            story.append(Paragraph(_inline(stripped[level:].strip()), styles[style]))
        elif stripped.startswith("- "):
            flush()
            story.append(Paragraph(_inline(stripped[2:]), styles["bullet"], bulletText="•"))
        elif not stripped:
            flush()
        else:
            paragraph.append(stripped)
        i += 1
    flush()
    doc.build(story)
    return pdf
