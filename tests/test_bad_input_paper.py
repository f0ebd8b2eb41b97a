"""Fault injection in the paper build: never a partial manuscript under its final name."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from neurocnn import io
from neurocnn.exceptions import OverwriteError

from test_paper import REPO, _fake_results, paper


def test_failure_while_writing_the_pdf_leaves_no_partial_pdf(tmp_path: Path, monkeypatch) -> None:
    out = _fake_results(tmp_path / "out")

    def boom(text, pdf, **kwargs):
        Path(pdf).write_bytes(b"%PDF-1.4 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(paper, "markdown_to_pdf", boom)
    with pytest.raises(KeyboardInterrupt):
        paper.build_paper(out, skip_analyses=True)
    assert not (out / "manuscript.pdf").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    monkeypatch.undo()
    pdf = paper.build_paper(out, skip_analyses=True)  # the build resumes from the same folder
    assert pdf.read_bytes()[:5] == b"%PDF-" and io.is_owned(pdf)
    first = pdf.read_bytes()
    paper.build_paper(out, skip_analyses=True)  # and replaces its own manuscript
    assert pdf.read_bytes()[:5] == b"%PDF-" and len(first) > 1000


def test_a_users_manuscript_is_never_replaced(tmp_path: Path) -> None:
    out = _fake_results(tmp_path / "out")
    (out / "manuscript.md").write_text("my own draft")
    with pytest.raises(OverwriteError):
        paper.build_paper(out, skip_analyses=True)
    assert (out / "manuscript.md").read_text() == "my own draft"


@pytest.mark.slow
def test_kill_while_writing_the_pdf(tmp_path: Path) -> None:
    out = _fake_results(tmp_path / "out")
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO / "paper")!r})
        import builder as P
        def boom(text, pdf, **k):
            open(pdf, "wb").write(b"%PDF-partial")
            os._exit(9)
        P.markdown_to_pdf = boom
        P.build_paper({str(out)!r}, skip_analyses=True)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ))
    assert result.returncode == 9, result.stderr
    assert not (out / "manuscript.pdf").exists()
