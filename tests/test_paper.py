"""Tests of the manuscript build: template rules, filling from (fake) results, failures, PDF."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

import neurocnn as nc  # noqa: E402
from _scripts import load_script  # noqa: E402
from neurocnn.exceptions import AnalysisFailedError, MissingFileError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


paper = load_script(REPO / "paper" / "builder.py")
TEMPLATE = REPO / "paper" / "manuscript.md.in"
#: The analyses whose headline values the manuscript template uses.
TEMPLATE_ANALYSES = ("layers_vs_hit", "searchlight_demo", "haxby_searchlight", "receptive_fields", "virtual_tms",
                     "ko_sweeps", "feature_visualization")


def _headlines(out: Path, names=TEMPLATE_ANALYSES) -> Path:
    """Write each analysis' headline.json from its (fake) results, as the script does at its end."""
    common = load_script(REPO / "analyses" / "_common.py")
    for name in names:
        common.write_headline(out / name, load_script(REPO / "analyses" / f"{name}.py").headline)
    return out
LAYERS = ["stem", "stage4", "head"]


def _png(path: Path, aspect: float = 1.0) -> None:
    fig, ax = plt.subplots(figsize=(4, 4 * aspect))
    ax.set_title(f"{path.parent.name}/{path.name}")  # distinct images: the PDF embeds each once
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=30)
    plt.close(fig)


def _layers_vs_hit(folder: Path) -> None:
    obs = np.array([[0.05, 0.321, 0.2], [0.1, 0.4, 0.3]])  # (comparison, layer): best tau_a = stage4
    ds = xr.Dataset(
        {
            "observed": (("comparison", "layer"), obs),
            "ci_low": (("comparison", "layer"), obs - 0.04),
            "ci_high": (("comparison", "layer"), obs + 0.04),
            "p_layer_vs_lower_ceiling": (("comparison", "layer"), [[0.0001, 0.2, 0.01], [0.0, 0.3, 0.02]]),
            "noise_ceiling": (("comparison", "bound"), [[0.351, 0.432], [0.5, 0.6]]),
            "brain_rdm": (("subject", "stimulus", "stimulus2"), np.zeros((4, 5, 5))),
        },
        coords={"comparison": ["tau_a", "spearman"], "layer": LAYERS, "bound": ["lower", "upper"]},
        attrs={"model": "tinynet", "weights_sha256": "abcdef0123456789", "n_bootstrap": 77,
               "bootstrap_over": "both", "rdm_metric": "correlation"},
    )
    nc.io.save(ds, folder / "layers_vs_hit.nc")
    _png(folder / "layers_vs_hit_tau_a.png")
    _png(folder / "rdms.png", 0.3)


def _searchlight(n: int, layers: list[str]) -> xr.Dataset:
    corr = np.linspace(-0.1, 0.5, n * len(layers)).reshape(len(layers), n)
    return xr.Dataset(
        {"correlation": (("layer", "voxel"), corr),
         "p_fwe": (("layer", "voxel"), np.linspace(0.01, 1, n * len(layers)).reshape(len(layers), n))},
        coords={"layer": layers, "x": ("voxel", np.arange(n) * 2.0), "y": ("voxel", -np.arange(n) * 2.0),
                "z": ("voxel", np.zeros(n))},
        attrs={"n_centres": n, "radius_mm": 6.0, "n_stimuli": 8, "method": "spearman", "n_permutations": 33,
               "data": "simulated", "model": "tinynet", "lag_volumes": 2},
    )


def _fake_results(out: Path, extra: tuple[str, ...] = ()) -> Path:
    """A results folder with every analysis' files, shaped like the real scripts' outputs."""
    names = list(TEMPLATE_ANALYSES) + list(extra)
    for name in names:
        (out / name).mkdir(parents=True)
    _layers_vs_hit(out / "layers_vs_hit")
    nc.io.save(_searchlight(6, LAYERS[:2]), out / "searchlight_demo" / "searchlight.nc")
    _png(out / "searchlight_demo" / "searchlight_overview.png")
    nc.io.save(_searchlight(5, ["category", "animacy"]), out / "haxby_searchlight" / "haxby_searchlight.nc")
    p_maps = np.linspace(0.01, 1, 10).reshape(2, 5)
    nc.io.save(xr.Dataset({v: (("layer", "voxel"), p_maps) for v in ("p_fwe", "p_fwe_cluster_mass", "p_fwe_tfce")},
                          coords={"layer": ["category", "animacy"]}, attrs={"cluster_p": 0.01}),
               out / "haxby_searchlight" / "haxby_clusters.nc")
    _png(out / "haxby_searchlight" / "haxby_searchlight.png")

    rf = xr.Dataset(
        {"theoretical_size": ("layer", [3.0, 147.0, 851.0]), "empirical_mean": ("layer", [2.5, 60.0, 120.0]),
         "empirical_std": ("layer", [0.5, 10.0, 20.0]), "empirical_median": ("layer", [2.5, 58.0, 110.0]),
         "n_units": ("layer", [4, 4, 3])},
        coords={"layer": LAYERS},
        attrs={"window": 11, "stride": 3, "top_k": 10, "fill": "random", "threshold": 0.5},
    )
    nc.io.save(rf, out / "receptive_fields" / "rf_sizes.nc")
    _png(out / "receptive_fields" / "rf_sizes.png")
    _png(out / "receptive_fields" / "rfs_head.png")

    conds = ["intact", "face KO", "place KO", "sham KO", "face TMS", "place TMS"]
    acc = np.array([[0.9, 0.8], [0.6, 0.78], [0.88, 0.5], [0.9, 0.8], [0.7, 0.79], [0.89, 0.6]])
    tms = xr.Dataset(
        {"accuracy": (("condition", "category"), acc), "ci_low": (("condition", "category"), acc - 0.05),
         "ci_high": (("condition", "category"), acc + 0.05), "n_pairs": (("condition", "category"), np.full((6, 2), 12))},
        coords={"condition": conds, "category": ["face", "house"]},
        attrs={"lesion_alias": "stage4", "lesion_layer": "_blocks.7", "layer_choice": "by depth",
               "n_face_units": 28, "n_place_units": 17, "n_overlap": 0, "n_channels": 80, "selection": "fdr",
               "q": 0.05, "tms_amplitude": 2.0, "n_localizer_images": 432, "ci": 0.95},
    )
    nc.io.save(tms, out / "virtual_tms" / "virtual_tms.nc")
    inter = xr.Dataset(
        {"dod": ("manipulation", [0.0792, 0.0542]), "dod_ci_low": ("manipulation", [0.01, -0.02]),
         "dod_ci_high": ("manipulation", [0.15, 0.13]), "p_permutation": ("manipulation", [0.0442, 0.1758]),
         "p_logit": ("manipulation", [0.1393, np.nan])},
        coords={"manipulation": ["knockout", "tms"]}, attrs={"n_permutations": 999},
    )
    nc.io.save(inter, out / "virtual_tms" / "interaction.nc")
    _png(out / "virtual_tms" / "virtual_tms.png")

    fractions = [0.0, 0.5, 1.0]
    pair = xr.DataArray(np.array([[[[0.8], [0.7], [0.45]], [[0.8], [0.6], [0.55]]]] * 2),
                        dims=("kind", "layer", "fraction", "repeat"),
                        coords={"kind": ["node", "synapse"], "layer": ["stage3", "head"], "fraction": fractions,
                                "repeat": [0]}, attrs={"chance": 0.5})
    sweeps = xr.Dataset({"pair_accuracy": pair, "top1_agreement": pair * 0 + 0.9},
                        attrs={"n_train_pairs": 40, "n_test_pairs": 24})
    nc.io.save(sweeps, out / "ko_sweeps" / "ko_sweeps.nc")
    _png(out / "ko_sweeps" / "ko_sweeps.png")

    fv = out / "feature_visualization"
    image = xr.Dataset({"image": (("y", "x", "rgb"), np.zeros((4, 4, 3)))},
                       attrs={"target": "class 284 (Siamese cat) logit", "classified_as": "Siamese cat",
                              "initial_activation": -0.1, "final_activation": 2.345,
                              "classified_probability": 0.876, "steps": 8, "role": "face"})
    nc.io.save(image, fv / "maximize_class.nc")
    nc.io.save(image, fv / "maximize_stage4_ch3.nc")
    nc.io.save(xr.Dataset({"activation": ("rank", np.arange(9.0))}), fv / "top9_stage4_ch3.nc")
    for name in ("filters", "activation_maps_stage4", "top9_stage4_ch3", "maximize", "deepdream", "attributions"):
        _png(fv / f"{name}.png")
    for name in extra:
        _png(out / name / "panel.png")
        (out / name / "headline.json").write_text('{"analysis": "%s", "values": {"x_value": "1"}}' % name)

    zeros = np.zeros(len(names), dtype=np.int64)
    times = xr.Dataset({"wall_time_s": ("analysis", np.arange(1.0, len(names) + 1)), "returncode": ("analysis", zeros),
                        "quick": ("analysis", zeros + 1), "seed": ("analysis", zeros)},
                       coords={"analysis": names})
    nc.io.save(times, out / "run_times.nc")
    return _headlines(out)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return _fake_results(tmp_path / "out")


# ------------------------------------------------------------------ template rules
def test_template_has_no_typed_numbers() -> None:
    assert paper.template_numbers(TEMPLATE.read_text()) == []


def test_template_numbers_catches_a_typed_number() -> None:
    found = paper.template_numbers("tau_A was 0.42 in ${layer} (Kriegeskorte et al. 2008, top-9)")
    assert len(found) == 4 and "0.42" in found[0] and "top-9" in found[-1]


def test_fill_template_names_missing_fields() -> None:
    with pytest.raises(AnalysisFailedError, match=r"\['b', 'c'\]"):
        paper.fill_template("${a} ${b} ${c}", {"a": "x"})


def test_table_fields_are_numbered_in_order() -> None:
    text = paper.fill_template("Table ${tab_y}; ${x_table} ${y_table}", {"x_table": "X", "y_table": "Y"})
    assert text == "Table 2; X Y"


# ------------------------------------------------------------------ values from results
def test_every_field_is_filled_from_the_results(results: Path) -> None:
    values = paper.collect_values(results)
    text = paper.fill_template(TEMPLATE.read_text(), values)
    assert "${" not in text
    assert "The best layer was **stage4** with τ_A = 0.321" in text
    assert "noise ceiling of τ_A 0.351 (lower) to 0.432 (upper)" in text
    assert "| stem | 0.050 | [0.010, 0.090] | < 0.001 | 0.100 |" in text
    assert "28 face and 17 place channels of 80" in text
    assert "was 0.079 (CI [0.010, 0.150]; permutation p 0.044; logistic-regression p 0.139)" in text
    assert "logistic p n/a" in text  # NaN (separation) is reported, not hidden
    assert "Maximizing the class 284 (Siamese cat) logit for 8 steps raised it from -0.10 to 2.35" in text
    assert "classifies as \"Siamese cat\" (p = 0.876)" in text
    assert "| head | node | 0.80 / 0.90 | 0.60 / 0.90 | 0.55 / 0.90 |" in text
    assert "between 0.14 and 0.83 times the theoretical one, and smaller than it in 3 of 3 layers" in text
    assert "(Welch t, Benjamini-Hochberg FDR at q = 0.05)" in text
    assert "(Table 5)" in text  # virtual TMS is the fifth table
    assert "were not run in this build" in text
    assert "| animacy | TFCE | 0.560 | 0 |" in text and "at the 0.01 upper tail" in text


def test_failed_run_recorded_in_run_times_fails(results: Path) -> None:
    times = nc.io.load(results / "run_times.nc")
    times["returncode"].loc[{"analysis": "searchlight_demo"}] = 1
    nc.io.save(times, results / "run_times.nc", overwrite=True)
    with pytest.raises(AnalysisFailedError, match=r"\['searchlight_demo'\] failed.*--only searchlight_demo"):
        paper.collect_values(results)


def test_mixed_run_modes_are_reported(results: Path) -> None:
    times = nc.io.load(results / "run_times.nc")
    times["quick"].loc[{"analysis": "ko_sweeps"}] = 0
    nc.io.save(times, results / "run_times.nc", overwrite=True)
    values = paper.collect_values(results)
    assert values["run_mode"].startswith("mixed") and "| `analyses/ko_sweeps.py` | full | " in values["run_table"]


def test_missing_result_file_fails_naming_the_analysis(results: Path) -> None:
    (results / "ko_sweeps" / "ko_sweeps.nc").unlink()
    with pytest.raises(AnalysisFailedError, match=r"'ko_sweeps' left no ko_sweeps\.nc"):
        _headlines(results, ["ko_sweeps"])


def test_missing_figure_fails_naming_the_analysis(results: Path) -> None:
    (results / "virtual_tms" / "virtual_tms.png").unlink()
    with pytest.raises(AnalysisFailedError, match="'virtual_tms' left no figure virtual_tms.png"):
        _headlines(results, ["virtual_tms"])


def test_missing_headline_file_fails_naming_the_analysis(results: Path) -> None:
    (results / "ko_sweeps" / "headline.json").unlink()
    with pytest.raises(AnalysisFailedError, match=r"'ko_sweeps' left no headline\.json"):
        paper.collect_values(results)


def test_analysis_not_run_fails(results: Path) -> None:
    names = [n for n in TEMPLATE_ANALYSES if n != "feature_visualization"]
    with pytest.raises(AnalysisFailedError, match="fv_"):
        paper.fill_template(TEMPLATE.read_text(), paper.collect_values(results, names=names))


def test_unknown_analysis_figures_and_benchmarks_are_included(tmp_path: Path) -> None:
    out = _fake_results(tmp_path / "out", extra=("meg_curves",))
    (out / "benchmarks").mkdir()
    (out / "benchmarks" / "rsa.txt").write_text("case | neurocnn | rsatoolbox\nrdm | 0.10 s | 2.00 s\n")
    template = TEMPLATE.read_text()
    fields = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", template)
    text = paper.fill_template(template, paper.collect_values(out, fields=fields))
    assert "## Other analyses" in text and "(meg_curves/panel.png)" in text
    assert "```\ncase | neurocnn | rsatoolbox\nrdm | 0.10 s | 2.00 s\n```" in text


# ------------------------------------------------------------------ PDF and runner
def test_build_renders_a_pdf_with_all_figures(results: Path) -> None:
    pdf = paper.build_paper(results, skip_analyses=True)
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and len(re.findall(rb"/Type /Page\b", data)) >= 3
    assert (results / "manuscript.md").read_text().count("![") == 14
    assert len(set(re.findall(rb"/FormXob\.[0-9a-f]+", data))) == 14  # every figure is embedded


def test_pdf_refuses_a_missing_figure(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="nothere.png"):
        paper.markdown_to_pdf("# T\n\n![cap](nothere.png)\n", tmp_path / "x.pdf", base_dir=tmp_path)


def test_run_analyses_runs_all_and_names_the_failures(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "analyses").mkdir(parents=True)
    (repo / "analyses" / "_common.py").write_text("raise SystemExit(3)\n")
    (repo / "analyses" / "good.py").write_text(textwrap.dedent("""
        import sys, pathlib
        out = pathlib.Path(sys.argv[sys.argv.index("--out") + 1]); out.mkdir(parents=True, exist_ok=True)
        (out / "args.txt").write_text(" ".join(sys.argv[1:]))
    """))
    (repo / "analyses" / "bad.py").write_text("raise RuntimeError('the data are gone')\n")
    out = tmp_path / "out"
    with pytest.raises(AnalysisFailedError, match=r"(?s)1 analysis script\(s\) failed: bad\..*the data are gone"):
        paper.run_analyses(out, repo=repo, quick=True, seed=7, python=sys.executable)
    args = (out / "good" / "args.txt").read_text().split()
    assert {"--quick", "--overwrite", "--no-progress"} <= set(args) and args[args.index("--seed") + 1] == "7"
    times = nc.io.load(out / "run_times.nc")
    assert list(times["analysis"].values) == ["bad", "good"]
    assert list(times["returncode"].values) == [1, 0] and (times["wall_time_s"] >= 0).all()

    # re-running only the failed script replaces its row and keeps the other one
    (repo / "analyses" / "bad.py").write_text("")
    paper.run_analyses(out, repo=repo, names=["bad"], quick=False, seed=7, python=sys.executable)
    times = nc.io.load(out / "run_times.nc")
    assert list(times["analysis"].values) == ["bad", "good"]
    assert list(times["returncode"].values) == [0, 0] and list(times["quick"].values) == [0, 1]


def test_run_analyses_rejects_unknown_names(tmp_path: Path) -> None:
    (tmp_path / "analyses").mkdir()
    with pytest.raises(MissingFileError, match="nope"):
        paper.run_analyses(tmp_path / "out", repo=tmp_path, names=["nope"])
    with pytest.raises(MissingFileError, match="No analyses/ folder"):
        paper.list_analyses(tmp_path / "missing")


def test_result_without_a_needed_attribute_fails_naming_the_analysis(results: Path) -> None:
    path = results / "feature_visualization" / "maximize_class.nc"
    ds = nc.io.load(path)
    ds.attrs.pop("classified_as")
    nc.io.save(ds, path, overwrite=True)
    with pytest.raises(AnalysisFailedError, match="'feature_visualization'.*lack 'classified_as'"):
        _headlines(results, ["feature_visualization"])


def test_benchmark_tables_come_from_stdout_and_failures_name_the_script(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    (repo / "benchmarks" / "peer.py").write_text("import sys\nprint('case | ours | peer')\nprint('noise', file=sys.stderr)\n")
    tables = paper.run_benchmarks(tmp_path / "out", repo=repo, python=sys.executable)
    assert tables == {"peer": "case | ours | peer\n"}
    assert (tmp_path / "out" / "benchmarks" / "peer.log").read_text() == "noise\n"
    (repo / "benchmarks" / "slow.py").write_text("raise ValueError('peer missing')\n")
    with pytest.raises(AnalysisFailedError, match="(?s)benchmarks/slow.py exited with 1.*peer missing"):
        paper.run_benchmarks(tmp_path / "out", repo=repo, python=sys.executable)


def test_every_analysis_writes_its_headline_through_common() -> None:
    """The builder reads one headline format: every script writes it with _common.write_headline."""
    scripts = [p for p in (REPO / "analyses").glob("*.py") if not p.name.startswith("_")]
    assert scripts
    for path in scripts:
        text = path.read_text()
        assert "write_headline(" in text, f"{path.name} writes no headline.json"
        assert not re.search(r"headline\.json\"\)\.write_text|open\([^)]*headline\.json", text), path.name
