"""Build the neurocnn manuscript from the analyses' results (lives with the paper, in a checkout).

:func:`build_paper` runs every ``analyses/*.py`` script into ``<out>/<name>/`` (one
subprocess each, wall time logged), reads the headline values each analysis wrote
(``<out>/<name>/headline.json``: ``{"analysis": name, "values": {field: text}}``), fills
the manuscript template (``paper/manuscript.md.in``, ``${field}`` placeholders only:
every number of the text comes from the results) and renders ``manuscript.md`` and
``manuscript.pdf`` into ``out``. The PDF needs reportlab (``pip install "neurocnn[paper]"``).
The builder knows no analysis by name: a new analysis script is run, and its fields
fill the template or, unused, its figures are listed under "Other analyses".

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
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from neurocnn import io
from neurocnn.exceptions import AnalysisFailedError, MissingFileError

__all__ = [
    "REPO",
    "ALPHA",
    "HEADLINE",
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
    "receptive_fields": ("--quick",),
    "visualization": ("--steps", "32", "--repeats", "1"),
}

_TAIL_LINES = 15
#: Significance level printed in the text (the analyses count significant results at it).
ALPHA = 0.05
#: The file of headline values each analysis writes into its output folder.
HEADLINE = "headline.json"


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


# ------------------------------------------------------------------ values
def _f(x: float, digits: int = 3) -> str:
    return f"{float(x):.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _load(folder: Path, file: str) -> xr.Dataset:
    path = folder / file
    if not path.exists():
        raise AnalysisFailedError(f"No {file} in {folder}; run the analyses first (paper/build.py without --skip-analyses).")
    return io.load(path)


def _headline(folder: Path) -> dict[str, str]:
    path = folder / HEADLINE
    if not path.is_file():
        raise AnalysisFailedError(
            f"Analysis {folder.name!r} left no {HEADLINE} in {folder}; run analyses/{folder.name}.py "
            f"with this version of neurocnn (see {folder.parent / (folder.name + '.log')} if the build ran it)."
        )
    try:
        values = json.loads(path.read_text())["values"]
    except (ValueError, KeyError, TypeError) as err:
        raise AnalysisFailedError(f"{path} is not a headline file ({err}); re-run analyses/{folder.name}.py.") from err
    return {str(k): str(v) for k, v in values.items()}


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


def collect_values(out: str | Path, names: Sequence[str] | None = None, *, fields: Sequence[str] = ()) -> dict[str, str]:
    """Read the analyses' headline values under ``out`` and return the template's values.

    Parameters
    ----------
    out : str or Path
        Build folder holding ``<name>/headline.json`` per analysis and ``run_times.nc``.
    names : sequence of str, optional
        Analyses to read (default: those in ``run_times.nc``).
    fields : sequence of str
        The template's fields: analyses none of whose values is one of them are listed,
        with their figures, under ``other_analyses``.

    Returns
    -------
    dict of str to str
        Placeholder -> formatted text (numbers, markdown tables, figure paths).

    Raises
    ------
    AnalysisFailedError
        If an analysis's folder or headline file is missing, two analyses give the same
        field, or the run recorded in ``run_times.nc`` failed (names the analysis).

    Examples
    --------
    >>> values = collect_values("out/paper")  # doctest: +SKIP
    >>> values["hit_best_layer"]  # doctest: +SKIP
    'stage6'
    """
    out = Path(out)
    values = {**_run_values(out), "alpha": _f(ALPHA, 2)}
    names = list(names) if names is not None else [str(n) for n in _load(out, "run_times.nc")["analysis"].values]
    owner: dict[str, str] = {}
    others = []
    for name in names:
        if not (out / name).is_dir():
            raise AnalysisFailedError(f"Analysis {name!r} has no output folder {out / name}.")
        found = _headline(out / name)
        twice = sorted(k for k in found if k in owner)
        if twice:
            raise AnalysisFailedError(f"Analyses {name!r} and {owner[twice[0]]!r} both give the fields {twice}.")
        owner.update(dict.fromkeys(found, name))
        values.update(found)
        if fields and not set(found) & set(fields):
            others.append(name)
    values["other_analyses"] = _other_analyses(out, others)
    values.update(_benchmark_values(out))
    values.setdefault("model", values.get("hit_model", "n/a"))
    values.setdefault("weights", values.get("hit_weights", "n/a"))
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
    >>> from builder import build_paper  # doctest: +SKIP
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
    text = template.read_text()
    fields = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)
    text = fill_template(text, collect_values(out, fields=fields))
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
    try:
        from reportlab.lib.pagesizes import A4
        from reportlab.lib.units import cm
        from reportlab.platypus import Paragraph, SimpleDocTemplate
    except ImportError as err:
        raise MissingFileError(
            "The manuscript PDF needs reportlab: pip install 'neurocnn[paper]' (manuscript.md is written "
            "without it)."
        ) from err

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
