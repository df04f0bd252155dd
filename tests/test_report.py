"""The report stage: a PDF from handmade fragments (text, numbers, pages, figures) and a runnable model card."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from warmstart.fragments import table, write_fragment
from warmstart.report import (
    ReportError,
    example_from_card,
    fmt,
    provenance,
    render_pdf,
)


def _figure(path: Path, seed: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    x = np.linspace(0, 1, 50)
    ax.plot(x * 1.5, 3 - 2 * x + 0.1 * seed, label=f"run {seed}")
    ax.set(xlabel="training text seen (MB of UTF-8)", ylabel="bits per byte")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


@pytest.fixture
def fragments(tmp_path, monkeypatch):
    """Three handmade fragments (corpus, tokenizer, spikes) with tables, numbers and two figures."""
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    rep = Path("reports")
    f1 = _figure(rep / "figures" / "corpus.png", 1)
    f2 = _figure(rep / "figures" / "fertility.png", 2)
    write_fragment(rep, "corpus", 10, "Corpus", ["Paragraphs kept per language."],
                   [table(pd.DataFrame({"lang": ["en-US", "nb-NO"], "bytes": [123457, 98765]}), "Corpus size.")],
                   [{"path": str(f1), "caption": "Corpus size per split."}], {"docs.nb-NO": 37}, seconds=12.5)  # fmt: skip
    write_fragment(rep, "tokenizer", 20, "Tokenizers", ["Fertility of the two tokenizers."],
                   [table([["source", 1.79], ["target", 1.22]], "Tokens per word.", columns=["tokenizer", "nb-NO"])],
                   [{"path": str(f2), "caption": "Fertility."}], {"ratio_tokens_per_word.nb-NO": 0.6816}, seconds=3.25)  # fmt: skip
    write_fragment(rep, "spikes", 70, "Loss spikes", ["Two spikes, both recovered."],
                   [table([[120, 4.5678, "yes"]], "Detected spikes.", columns=["step", "loss", "recovered"])],
                   numbers={"spikes.scratch": 2}, seconds=1.0)  # fmt: skip
    from warmstart.fragments import read_fragments

    return read_fragments(rep)


def _pdftext(pdf: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def test_fmt_cells():
    assert [fmt(None), fmt(float("nan")), fmt(float("inf")), fmt(True)] == ["–", "–", "∞", "yes"]
    assert [fmt(7), fmt(123457), fmt(1.23456), fmt(4.5678e-5), fmt(2.5e12), fmt("x")] == [
        "7", "123,457", "1.235", "4.568e-05", "2.500e+12", "x"]  # fmt: skip


def test_pdf_has_every_section_and_number(fragments, tmp_path):
    prov = provenance(tmp_path, fragments)
    pdf = render_pdf(fragments, tmp_path / "reports" / "report.pdf", "A tiny study", "tester", prov)
    text = _pdftext(pdf)
    flat = " ".join(text.split())
    for title in ("Provenance", "Corpus", "Tokenizers", "Loss spikes"):
        assert title in text, title
    assert flat.index("Corpus") < flat.index("Tokenizers") < flat.index("Loss spikes")
    # numbers from the fragments' tables and headline numbers
    for n in ("123,457", "98,765", "1.79", "1.22", "4.568", "0.6816", "37", "docs.nb-NO", "ratio_tokens_per_word.nb-NO"):
        assert n in text, n
    # provenance: packages, stage wall times
    assert "transformers" in text and "12.5 s" in text and "3.2 s" in text
    assert "A tiny study" in text and "tester" in text


def test_every_page_renders_and_no_figure_is_blank(fragments, tmp_path):
    from PIL import Image

    pdf = render_pdf(fragments, tmp_path / "r.pdf", "A tiny study", "tester")
    out = tmp_path / "pages"
    out.mkdir()
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(out / "p")], check=True)
    pages = sorted(out.glob("p*.png"))
    n_pages = int(next(line.split()[-1] for line in subprocess.run(["pdfinfo", str(pdf)], capture_output=True,
                       text=True, check=True).stdout.splitlines() if line.startswith("Pages:")))  # fmt: skip
    assert pages and len(pages) == n_pages
    for p in pages:
        assert np.asarray(Image.open(p).convert("L")).std() > 1, f"{p.name} is blank"
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    subprocess.run(["pdfimages", "-png", str(pdf), str(imgs / "i")], check=True)
    listing = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
    kinds = [line.split()[2] for line in listing.splitlines()[2:] if line.strip()]  # image or smask (alpha)
    figs = [f for f, k in zip(sorted(imgs.glob("i*.png")), kinds) if k == "image"]
    assert len(figs) == 2, "both figures are embedded"
    for f in figs:
        a = np.asarray(Image.open(f).convert("L"), dtype=float)
        assert a.std() > 5 and (a < 128).mean() > 0.002, f"{f.name} looks blank"


def test_report_bad_input_messages(fragments, tmp_path):
    bad = [dict(fragments[0], tables=[{"caption": "t", "columns": ["a", "b"], "rows": [[1]]}])]
    with pytest.raises(ReportError, match="a row has 1 cells, expected 2"):
        render_pdf(bad, tmp_path / "x.pdf", "t", "a")
    gone = [dict(fragments[0], figures=[{"path": "reports/figures/none.png", "caption": ""}])]
    with pytest.raises(ReportError, match="does not exist"):
        render_pdf(gone, tmp_path / "x.pdf", "t", "a")
    with pytest.raises(ReportError, match="lacks 'title'"):
        render_pdf([{"stage": "x", "order": 1}], tmp_path / "x.pdf", "t", "a")
    assert not (tmp_path / "x.pdf").exists()


def test_text_with_markup_characters_is_typeset_verbatim(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frag = {"stage": "odd", "order": 5, "title": "Odd #title $x$", "paragraphs": ["a *b* _c_ #let x = 1 [d] @e <f> \\ ]"],
            "tables": [], "figures": [], "numbers": {"k#": "v$"}, "seconds": None}  # fmt: skip
    text = _pdftext(render_pdf([frag], tmp_path / "o.pdf", "T", "A"))
    assert "Odd #title $x$" in text and "a *b* _c_ #let x = 1 [d] @e <f> \\ ]" in text and "v$" in text


def test_stage_writes_pdf_and_a_model_card_whose_example_runs(tmp_path, root, monkeypatch):
    """Evaluate a tiny study, then build the report and run the card's example against the saved model."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_evaluate import make_study

    from warmstart.config import load_params
    from warmstart.evaluate import run_stage as evaluate
    from warmstart.report import run_stage

    params = load_params(root / "params.yaml", overrides=make_study(tmp_path))
    import torch

    torch.set_num_threads(1)
    evaluate(params, progress=False)
    out = run_stage(params, root=tmp_path)
    assert out["fragments"] == ["evaluate"] and out["best"] in ("scratch", "random")
    text = _pdftext(out["pdf"])
    for t in ("Provenance", "Evaluation", "Initialisation methods", "Theoretical training FLOPs"):
        assert t in text, t
    card = Path(out["card"]).read_text()
    assert card.startswith("---\nlicense: apache-2.0\nlanguage:\n  - nb\n  - en\n")
    for h in ("## Model details", "## Training details", "## Tokenizer", "## Evaluation", "## Example usage"):
        assert h in card
    ev = json.loads((tmp_path / "reports/metrics/eval.json").read_text())
    assert fmt(ev["runs"][out["best"]]["bpb_target"]) in card
    code = example_from_card(card)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]


def test_stage_needs_fragments(tmp_path, root):
    from warmstart.config import load_params
    from warmstart.report import run_stage

    params = load_params(root / "params.yaml", overrides={"shared": {"reports_dir": str(tmp_path / "r")}})
    with pytest.raises(ReportError, match="no fragments"):
        run_stage(params, root=tmp_path)
