"""The report stage: a PDF from handmade fragments (text, numbers, pages, figures) and a runnable model card."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_LLAMA, model_for
from warmstart.describe import (
    CorpusSource,
    Language,
    ReportError,
    article,
    base_model,
    corpus_sources,
    fmt,
    language,
    report_title,
    size_label,
)
from warmstart.fragments import table, write_fragment
from warmstart.report.build import render_pdf
from warmstart.report.model_card import example_from_card, model_card
from warmstart.report.provenance import provenance, provenance_section
from warmstart.stages.report import run as run_stage


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
    write_fragment(
        rep,
        "corpus",
        10,
        "Corpus",
        ["Paragraphs kept per language."],
        [table(pd.DataFrame({"lang": ["en-US", "nb-NO"], "bytes": [123457, 98765]}), "Corpus size.")],
        [{"path": str(f1), "caption": "Corpus size per split."}],
        {"bytes.nb-NO.train": 37},
        seconds=12.5,
    )
    write_fragment(
        rep,
        "tokenizer",
        20,
        "Tokenizers",
        ["Fertility of the two tokenizers."],
        [table([["source", 1.79], ["target", 1.22]], "Tokens per word.", columns=["tokenizer", "nb-NO"])],
        [{"path": str(f2), "caption": "Fertility."}],
        {"ratio_tokens_per_word.nb-NO": 0.6816},
        seconds=3.25,
    )
    write_fragment(
        rep,
        "spikes",
        70,
        "Loss spikes",
        ["Two spikes, both recovered."],
        [table([[120, 4.5678, "yes"]], "Detected spikes.", columns=["step", "loss", "recovered"])],
        numbers={"spikes.scratch": 2},
        seconds=1.0,
    )
    from warmstart.fragments import read_fragments

    return read_fragments(rep)


def _pdftext(pdf: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def test_fmt_cells():
    assert [fmt(None), fmt(float("nan")), fmt(float("inf")), fmt(True)] == ["–", "–", "∞", "yes"]
    assert [fmt(7), fmt(123457), fmt(1.23456), fmt(4.5678e-5), fmt(2.5e12), fmt("x")] == [
        "7",
        "123,457",
        "1.235",
        "4.568e-05",
        "2.500e+12",
        "x",
    ]


def test_pdf_has_every_section_and_number(fragments, tmp_path):
    prov = provenance(tmp_path, fragments)
    pdf = render_pdf(fragments, tmp_path / "reports" / "report.pdf", "A tiny study", "tester", prov)
    text = _pdftext(pdf)
    flat = " ".join(text.split())
    for title in ("Provenance", "Corpus", "Tokenizers", "Loss spikes"):
        assert title in text, title
    assert flat.index("Corpus") < flat.index("Tokenizers") < flat.index("Loss spikes")
    # numbers from the fragments' tables and headline numbers, under human labels (never the raw keys)
    for n in ("123,457", "98,765", "1.79", "1.22", "4.568", "0.6816", "37"):
        assert n in text, n
    for label in (
        "train text nb-NO (bytes) 37",
        "tokens per word, target ÷ source tokenizer, nb-NO 0.6816",
        "loss spikes, scratch 2",
        "bytes (UTF-8)",
    ):
        assert label in flat, label
    for raw in ("bytes.nb-NO.train", "ratio_tokens_per_word", "spikes.scratch"):
        assert raw not in text, raw
    # provenance: packages, stage wall times
    assert "transformers" in text and "12.5 s" in text and "3.2 s" in text
    assert "Provenance each stage recorded in its fragment" in text and "not a git checkout" in text
    assert "A tiny study" in text and "tester" in text
    assert (
        flat.index("Loss spikes") < flat.index("Appendix") < flat.index("Headline numbers") < flat.rindex("Provenance")
    )


def test_every_page_renders_and_no_figure_is_blank(fragments, tmp_path):
    from PIL import Image

    pdf = render_pdf(fragments, tmp_path / "r.pdf", "A tiny study", "tester")
    out = tmp_path / "pages"
    out.mkdir()
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(out / "p")], check=True)
    pages = sorted(out.glob("p*.png"))
    n_pages = int(
        next(
            line.split()[-1]
            for line in subprocess.run(
                ["pdfinfo", str(pdf)], capture_output=True, text=True, check=True
            ).stdout.splitlines()
            if line.startswith("Pages:")
        )
    )
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
    frag = {
        "stage": "odd",
        "order": 5,
        "title": "Odd #title $x$",
        "paragraphs": ["a *b* _c_ #let x = 1 [d] @e <f> \\ ]"],
        "tables": [],
        "figures": [],
        "numbers": {"k#": "v$"},
        "seconds": None,
    }
    text = _pdftext(render_pdf([frag], tmp_path / "o.pdf", "T", "A"))
    assert "Odd #title $x$" in text and "a *b* _c_ #let x = 1 [d] @e <f> \\ ]" in text and "v$" in text


def test_stage_needs_fragments(tmp_path, root):
    from warmstart.config import load_params

    params = load_params(root / "params.yaml", overrides={"shared": {"reports_dir": str(tmp_path / "r")}})
    with pytest.raises(ReportError, match="no fragments"):
        run_stage(params, root=tmp_path)


# ---------------------------------------------------------------- what the report and card say comes from the run

HANDBOOK = {
    "package": "debian-handbook",
    "version": "12.0.3",
    "sha256": "0123456789abcdef" * 4,
    "file": "debian-handbook_12.0.3_all.deb",
}
HANDBOOK_TEXT = "the Debian Administrator's Handbook (Debian package debian-handbook 12.0.3, sha256 0123456789ab…)"
NEMO = "mistralai/Mistral-Nemo-Base-2407"
RUN_WORDS = ("Bokmål", "Norwegian", "nb-NO", "tiny")  # what a Czech study from a base trained here must not say


def _word_tokenizer(path: Path) -> Path:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", "to", "install", "a", "package"])}
    tk = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    ).save_pretrained(path)
    return path


def _llama_config(arch: str, vocab: int) -> dict:
    return {
        "architectures": [f"{arch}ForCausalLM"],
        "model_type": arch.lower(),
        "num_hidden_layers": 4,
        "hidden_size": 128,
        "intermediate_size": 344,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": vocab,
        "max_position_embeddings": 1024,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    }


def _study(
    tmp: Path,
    root: Path,
    target: str = "cs-CZ",
    hf: bool = False,
    title: str | None = None,
    real_model: bool = False,
    **extra,
):
    """Params and the small files the report reads: base and corpus records, one evaluated run (``real_model``:
    with weights, for running the card's example)."""
    from warmstart.config import load_params
    from warmstart.io import write_json
    from warmstart.model import save_model

    data, reports = tmp / "data", tmp / "reports"
    overrides = {
        "shared": {"target_lang": target, "data_dir": str(data), "reports_dir": str(reports)},
        "report": {"title": title},
        **extra,
    }
    if hf:
        overrides["base"] = {"source": "hf", "model_id": NEMO}
    params = load_params(root / "params.yaml", overrides=overrides)
    base_cfg = _llama_config("Mistral" if hf else "Llama", 8192)
    write_json(
        reports / "base" / "base.json",
        {
            "source": "hf" if hf else "tiny",
            "model": str(data / "models" / "base"),
            "model_type": base_cfg["model_type"],
            "architectures": base_cfg["architectures"],
            "params": 12_247_782_400 if hf else 2_826_752,
        },
    )
    write_json(reports / "corpus" / "corpus.json", {"sources": {"handbook": HANDBOOK, "skipped_files": []}})
    tok = _word_tokenizer(tmp / "tok")
    final = data / "runs" / "fvt" / "phase2" / "final"
    final_cfg = _llama_config("Mistral" if hf else "Llama", 8256)  # what the pretrain stage records in run.json
    if real_model:
        from transformers import AutoTokenizer

        t = AutoTokenizer.from_pretrained(tok)
        model = model_for(t, **TINY_LLAMA, max_pos=256)
        save_model(model, t, final)
        final_cfg = model.config.to_dict()
    write_json(
        data / "logs" / "fvt" / "run.json",
        {
            "name": "fvt",
            "kind": "swap",
            "method": "fvt",
            "tokenizer": str(tok),
            "final": str(final),
            "checkpoints": [
                {"step": 0, "bytes": 0, "tokens": 0, "path": "x"},
                {"step": 200, "bytes": 1_500_000, "tokens": 409_600, "path": str(final)},
            ],
            "params_count": 2_834_944,
            "seq_len": 128,
            "seconds": 95.0,
            "vocab_size": 8,
            "model_config": final_cfg,
        },
    )
    ev = {"runs": {"fvt": {"bpb_target": 1.2345, "bpb_source": 2.5}, "scratch": {"bpb_target": 1.5}}, "best": "fvt"}
    write_json(reports / "evaluate" / "eval.json", ev)
    (reports / "evaluate" / "translations.csv").write_text(
        "run,source,reference\nfvt,To install a package use apt.,x\n"
    )
    return params, ev


def test_language_names_come_from_babel():
    assert language("cs-CZ") == Language("cs-CZ", "cs", "Czech")
    assert language("nb-NO") == Language("nb-NO", "nb", "Norwegian Bokmål")
    assert language("en-US") == Language("en-US", "en", "English") and str(language("sv-SE")) == "Swedish (sv-SE)"
    assert language("xx-XX") == Language("xx-XX", "xx", "xx-XX")  # unknown: the code itself


def test_sizes_and_articles():
    assert [size_label(n) for n in (999, 3_000_000, 2_826_752, 124_439_808, 8_030_261_248, 12_247_782_400)] == [
        "999",
        "3M",
        "2.8M",
        "124M",
        "8B",
        "12.2B",
    ]
    assert [
        article(w) for w in ("2.8M-parameter", "8B-parameter", "11M-parameter", "180M-parameter", "Llama", "OLMo")
    ] == ["a", "an", "an", "a", "a", "an"]


@pytest.mark.parametrize("target, name", [("cs-CZ", "Czech"), ("nb-NO", "Norwegian Bokmål")])
def test_title_names_the_model_and_the_languages(tmp_path, root, target, name):
    params, _ = _study(tmp_path, root, target)
    assert report_title(params) == f"Warm-starting a 2.8M-parameter Llama from English to {name}"


def test_explicit_title_is_used_verbatim(tmp_path, root):
    params, _ = _study(tmp_path, root, title="Warm-starting a tiny Llama in Norwegian Bokmål")
    assert report_title(params) == "Warm-starting a tiny Llama in Norwegian Bokmål"


def test_loaded_base_model_is_named_by_its_id(tmp_path, root):
    params, _ = _study(tmp_path, root, hf=True)
    base = base_model(params)
    assert (base.source, base.arch, base.architecture) == ("hf", "Mistral", "MistralForCausalLM")
    assert base.params == 12_247_782_400
    assert report_title(params) == f"Warm-starting {NEMO} (12.2B-parameter Mistral) from English to Czech"
    assert base.describe(language("en-US")) == f"{NEMO}, a 12.2B-parameter Mistral loaded from the Hugging Face Hub"


def test_corpus_sources_and_licences(tmp_path, root):
    params, _ = _study(tmp_path, root)
    assert corpus_sources(params) == [CorpusSource("handbook", HANDBOOK_TEXT, "GPL-2+ or CC-BY-SA-3.0")]
    other = [
        {"kind": "local", "lang": "target", "paths": ["texts/*.txt"]},
        {"kind": "hf", "lang": "source", "dataset": "HuggingFaceFW/fineweb", "name": "sample-10BT"},
    ]
    params, _ = _study(tmp_path / "other", root, corpus={"sources": other})
    assert corpus_sources(params) == [
        CorpusSource("local", "local Czech files (texts/*.txt)", "see the dataset"),
        CorpusSource(
            "hf",
            "the dataset HuggingFaceFW/fineweb (configuration sample-10BT), split train, for English",
            "see the dataset",
            "HuggingFaceFW/fineweb",
        ),
    ]


def test_model_card_of_a_czech_study(tmp_path, root):
    params, ev = _study(tmp_path, root)
    from warmstart.evaluate.runs import load_run

    card = model_card(params, load_run(tmp_path / "data" / "logs" / "fvt"), ev)
    assert card.startswith("---\nlicense: apache-2.0\nlanguage:\n  - cs\n  - en\nlibrary_name: transformers\n")
    assert "\n# warmstart-cs-fvt\n" in card
    assert (
        "warmstart-cs-fvt is a 2.8M-parameter Llama causal language model for Czech (cs-CZ), adapted from "
        "English (en-US) by the warmstart study; it has the lowest held-out Czech bits per byte of the study's runs "
        "(1.234); with one seed per run and no measured run-to-run spread, it is not shown to be the best. It starts from a 2.8M-parameter Llama pretrained here, from random weights, on the English text "
        "of the corpus, with the vocabulary swapped for a Czech tokenizer (`fvt` initialisation of the new "
        f"embeddings), and was then trained on 1.50 MB of the Czech text of {HANDBOOK_TEXT}."
    ) in card
    assert "| run | bpb cs-CZ | bpb en-US |" in card and "To install a package use apt." in example_from_card(card)
    licence = f"## License\n\nApache-2.0 for the weights. Training text: {HANDBOOK_TEXT}: GPL-2+ or CC-BY-SA-3.0.\n"
    assert card.endswith(licence)
    for word in RUN_WORDS:
        assert word not in card, word


def test_model_card_of_the_scratch_baseline(tmp_path, root):
    params, ev = _study(tmp_path, root)
    from warmstart.evaluate.runs import load_run

    run = dict(load_run(tmp_path / "data" / "logs" / "fvt"), name="scratch", kind="scratch", method=None)
    card = model_card(params, run, ev)
    assert (
        "warmstart-cs-scratch is a 2.8M-parameter Llama causal language model for Czech (cs-CZ), trained from "
        "scratch by the warmstart study; its held-out Czech bits per byte is 1.500. It is "
        "the study's baseline, not a warm start: the base architecture with a Czech tokenizer and random weights, "
        f"trained on 1.50 MB of the Czech text of {HANDBOOK_TEXT}."
    ) in card
    assert "| phase phase1 (full model) | 40 steps, lr 0.003, constant, warm-up 4, min lr ratio 1;" in card  # scratch
    assert "| phase phase2 (full model) | 120 steps, lr 0.002, cosine, warm-up 12, min lr ratio 0.1;" in card


def test_model_card_of_a_loaded_base(tmp_path, root):
    params, ev = _study(tmp_path, root, hf=True)
    from warmstart.evaluate.runs import load_run

    card = model_card(params, load_run(tmp_path / "data" / "logs" / "fvt"), ev)
    assert card.startswith(
        f"---\nlicense: other\nlicense_name: base-model-license\n"
        f"license_link: https://huggingface.co/{NEMO}\n"
        f"language:\n  - cs\n  - en\nbase_model:\n  - {NEMO}\n"
    )
    assert (
        f"It starts from {NEMO}, a 12.2B-parameter Mistral loaded from the Hugging Face Hub, with the vocabulary"
        in card
    )
    assert f"| base model | {NEMO} |" in card and f"The weights derive from {NEMO}: its licence applies." in card
    assert "tiny" not in card and "trained here" not in card


@pytest.mark.parametrize(
    "target, absent, present",
    [
        ("cs-CZ", RUN_WORDS, ("Czech (cs-CZ)", "from English to Czech")),
        ("nb-NO", ("Czech", "cs-CZ", "tiny"), ("Norwegian Bokmål (nb-NO)", "from English to Norwegian Bokmål")),
    ],
)
def test_stage_says_the_target_language_everywhere(tmp_path, root, monkeypatch, target, absent, present):
    monkeypatch.chdir(tmp_path)
    params, _ = _study(tmp_path, root, target)
    write_fragment(params.shared.reports_dir, "evaluate", 60, "Evaluation", [f"Held-out {target} text."], seconds=2.0)
    out = run_stage(params, root=tmp_path)
    text = " ".join(_pdftext(out["pdf"]).split())
    card = Path(out["card"]).read_text()
    assert out["title"] == f"Warm-starting a 2.8M-parameter Llama {present[1]}" and out["title"] in text
    for s in (*present, HANDBOOK_TEXT, "GPL-2+ or CC-BY-SA-3.0", "Overview", "Provenance"):
        assert s in text, s
    assert present[0] in card
    for word in absent:
        assert word not in text and word not in card, word


def test_provenance_section_has_a_row_per_stage():
    stage = {
        "stage": "corpus",
        "seconds": 12.5,
        "commit": "0123456789abcdef" * 2 + "01234567",
        "dirty": True,
        "dirty_files": ["params.yaml"],
        "timestamp": "2025-01-02T03:04:05+00:00",
        "cpu": "AMD EPYC",
        "cpu_count": 2,
        "gpus": ["NVIDIA H200", "NVIDIA H200"],
        "packages": {"torch": "2.8.0", "typst": "0.15.2"},
    }
    prov = {
        "commit": "f" * 40,
        "dirty": False,
        "dirty_files": [],
        "date": "2025-01-02 04:00 UTC",
        "python": "3.11.7",
        "platform": "Linux",
        "cpu": "AMD EPYC",
        "cpu_count": 2,
        "memory_gib": 7.8,
        "gpus": [],
        "packages": {"torch": "2.9.1", "typst": "0.15.2"},
        "stages": [stage, {"stage": "legacy", "seconds": 3.25}],
    }
    sec = provenance_section(prov)
    env, stages, packages = (t["rows"] for t in sec["tables"])
    assert ["hardware", "AMD EPYC (2 cores), no GPU"] in env and ["working tree dirty", "no"] in env
    assert stages == [
        [
            "corpus",
            "0123456789ab",
            "yes: params.yaml",
            "2025-01-02 03:04 UTC",
            "12.5 s",
            "AMD EPYC (2 cores), 2 × NVIDIA H200",
        ],
        ["legacy", "–", "–", "–", "3.2 s", "not recorded"],
    ]
    assert packages == [["torch", "2.9.1", "corpus: 2.8.0"], ["typst", "0.15.2", "–"]]
    assert sec["paragraphs"][1:] == [
        "Every stage that recorded its provenance ran at commit 0123456789ab.",
        "No provenance recorded by: legacy (fragments written before stages recorded it).",
    ]
    later = dict(stage, stage="report", commit="f" * 40)
    assert provenance_section(dict(prov, stages=[stage, later]))["paragraphs"][1] == (
        "The stages ran at 2 different commits: 0123456789ab, ffffffffffff."
    )


def test_report_provenance_collects_the_stages_records(fragments, tmp_path):
    prov = provenance(tmp_path, fragments)
    assert [s["stage"] for s in prov["stages"]] == ["corpus", "tokenizer", "spikes"]
    assert [s["seconds"] for s in prov["stages"]] == [12.5, 3.25, 1.0]
    assert all(s["commit"] is None and s["packages"] == prov["packages"] for s in prov["stages"])  # tmp: no git
    assert provenance_section(prov)["paragraphs"][1] == "The stages ran outside a git checkout: no commit recorded."


def test_stage_writes_pdf_and_a_model_card_whose_example_runs(tmp_path, root, monkeypatch):
    """The card's usage example runs, from the project root, against the saved model."""
    monkeypatch.chdir(tmp_path)
    params, ev = _study(tmp_path, root, "nb-NO", real_model=True)
    write_fragment(params.shared.reports_dir, "evaluate", 60, "Evaluation", ["Held-out text."], seconds=2.0)
    out = run_stage(params, root=tmp_path)
    assert out["fragments"] == ["evaluate"] and out["best"] == "fvt"
    card = Path(out["card"]).read_text()
    assert card.startswith("---\nlicense: apache-2.0\nlanguage:\n  - nb\n  - en\n")
    for h in ("## Model details", "## Training details", "## Tokenizer", "## Evaluation", "## Example usage"):
        assert h in card
    assert fmt(ev["runs"]["fvt"]["bpb_target"]) in card
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    r = subprocess.run(
        [sys.executable, "-c", example_from_card(card)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]


# ---------------------------------------------------------------- findings first: the summary from the metrics files

REFERENCE = ("metrics", "fragments")  # what the repository commits of the reference study


def _reference_study(tmp: Path, root: Path, figures: bool = False):
    """The committed reference study's metrics and fragments under ``tmp/reports`` (the fragments' figures drawn
    as placeholders when ``figures``), with params pointing there."""
    from warmstart.config import load_params

    reports = tmp / "reports"
    for d in REFERENCE:
        shutil.copytree(root / "reports" / d, reports / d)
    params = load_params(
        root / "params.yaml",
        overrides={
            "shared": {
                "reports_dir": str(reports),
                "data_dir": str(tmp / "data"),
                "source_lang": "en-US",
                "target_lang": "nb-NO",
            }
        },
    )
    from warmstart.io import write_json

    write_json(
        reports / "base" / "base.json",
        {
            "source": "tiny",
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "params": json.loads((reports / "metrics/base.json").read_text())["params"],
        },
    )
    if figures:
        for frag in json.loads(
            "[" + ",".join(p.read_text() for p in sorted((reports / "fragments").glob("*.json"))) + "]"
        ):
            for i, fig in enumerate(frag["figures"]):
                _figure(tmp / fig["path"], i)
    return params


def _numbers_hold(summary, reports: Path) -> int:
    from warmstart.report.evidence import format_value, resolve

    n = 0
    for finding, num in summary.numbers():
        assert resolve(reports, num.source, num.key) == num.value, (num.source, num.key)
        assert format_value(num.value, num.spec) == num.text and num.text in finding.text, (num.text, finding.text)
        n += 1
    return n


def test_summary_numbers_equal_the_committed_metrics(tmp_path, root):
    """Every number on the summary page is read from a metrics file, and printed as that file's value."""
    from warmstart.fragments import read_fragments
    from warmstart.report.findings import study_summary

    params = _reference_study(tmp_path, root)
    reports = tmp_path / "reports"
    (reports / "metrics/seed_spread.json").unlink(missing_ok=True)  # the one-seed case (the spread: the next test)
    s = study_summary(params, read_fragments(reports))
    assert _numbers_hold(s, reports) >= 15
    metrics = {p.relative_to(reports).as_posix(): json.loads(p.read_text()) for p in reports.glob("metrics/**/*.json")}
    ev, tok = metrics["metrics/evaluate.json"], metrics["metrics/tokenizer.json"]
    by_heading = {f.heading: f for f in s.results}
    fert = by_heading["Fertility"].text
    for key in (
        "tokens_per_word_nb-NO_source_tokenizer",
        "tokens_per_word_nb-NO_target_tokenizer",
        "fertility_ratio_nb-NO",
    ):
        assert f"{tok[key]:.3f}" in fert, key
    final = by_heading["Final bits per byte"].text
    mb = metrics[f"metrics/pretrain/{ev['best_run']}.json"]["training_bytes"] / 1e6  # the committed study's bytes
    assert final.startswith(
        f"Lowest final nb-NO bits per byte after {mb:.2f} MB: {ev['best_run']} {ev['final_bpb_' + ev['best_run']]:.3f}"
    )
    for run in ("scratch", "original", "random", "exact", "fvt", "focus", "omp"):
        assert f"{run} {ev['final_bpb_' + run]:.3f}" in final, run
    assert f"{ev['best_speedup_vs_scratch']:.2f}×" in by_heading["Speed-up over scratch"].text
    # one seed and no seed spread: nobody is called best, and the page says why
    assert s.ranking["best"] is None and s.ranking["lowest"] == ev["best_run"]
    assert "no run-to-run spread is recorded" in final and "no run is shown to be best" in final
    assert any(lim.startswith("Seeds: one seed per run") for lim in s.limitations)
    # without the evaluate stage's details: no interval is made up, and the page says so
    assert "CI" not in final and any("No bits-per-byte interval" in lim for lim in s.limitations)


@pytest.mark.parametrize("std", [0.004, 0.0001])
def test_the_seed_spread_decides_what_is_within_noise(tmp_path, root, std):
    """Runs within 2 sqrt(sd_a^2 + sd_b^2) of the lowest are tied with it; a run's spread measured for another
    configuration (its fingerprint) is not used, and the limitations name the runs without one."""
    from warmstart.evaluate.intervals import SEED_K
    from warmstart.evaluate.seed_spread import run_fingerprints
    from warmstart.io import write_json
    from warmstart.report.findings import study_summary

    params = _reference_study(tmp_path, root)
    ev = json.loads((tmp_path / "reports/metrics/evaluate.json").read_text())
    final = {k.removeprefix("final_bpb_"): v for k, v in ev.items() if k.startswith("final_bpb_")}
    low = min(final, key=final.get)
    tied = sorted(
        (r for r in final if r != low and final[r] - final[low] <= SEED_K * (2 * std * std) ** 0.5), key=final.get
    )
    fps = run_fingerprints(params)  # every current study run (the arms the reference has not evaluated too)
    runs = {r: {"mean": v, "std": std, "min": v - std, "max": v + std, "n": 3} for r, v in final.items()}
    runs |= {r: {"mean": 9.0, "std": std, "min": 9.0 - std, "max": 9.0 + std, "n": 3} for r in fps if r not in runs}
    record = {"seeds": [1, 2, 3], "runs": runs, "fingerprints": fps}
    write_json(tmp_path / "reports/metrics/seed_spread.json", record)
    s = study_summary(params)
    assert s.ranking["tied"] == tied and s.ranking["best"] == (None if tied else low) and s.ranking["seed_measured"]
    text = next(f for f in s.results if f.heading == "Final bits per byte").text
    if std == 0.004:
        assert len(tied) >= 2  # the reference: fvt, focus, omp and the replay arms are a few thousandths apart
    if tied:  # at 0.0001 too: replay-5 (lowest) and focus are 0.0002 apart
        assert f"within run-to-run noise of {low} (seed spread of 3 seeds" in text
    else:
        assert f"{low} is distinguishable from every other run beyond run-to-run noise (3 seeds" in text
    assert not any(lim.startswith("Seeds:") for lim in s.limitations)
    # one run measured for another configuration: the others' spread still ranks, the limitations name it
    other = next(r for r in final if r != low)
    write_json(tmp_path / "reports/metrics/seed_spread.json", record | {"fingerprints": fps | {other: "another"}})
    s = study_summary(params)
    assert s.ranking["seed_measured"] and other in s.ranking["by_seed"]
    (lim,) = [lim for lim in s.limitations if lim.startswith("Seeds:")]
    assert f"no spread for the run {other} as configured now" in lim
    assert f"python -m warmstart.evaluate.seed_spread --runs {other} measures it" in lim
    write_json(tmp_path / "reports/metrics/seed_spread.json", record | {"fingerprints": dict.fromkeys(fps, "another")})
    s = study_summary(params)
    assert not s.ranking["seed_measured"] and s.ranking["best"] is None
    assert any("measured for another configuration" in lim for lim in s.limitations)


def test_reference_report_reads_findings_first_and_every_page_holds(tmp_path, root, monkeypatch):
    """The committed reference study typeset (placeholder figures): page 1 is the summary, no raw metric key or
    logged MFU is printed, long tables are in the appendix, every page renders, and Typst does not warn."""
    from warmstart.fragments import read_fragments
    from warmstart.report.check import check_pages, page_text

    monkeypatch.chdir(tmp_path)
    params = _reference_study(tmp_path, root, figures=True)
    from warmstart.fragments import write_fragment

    write_fragment(
        params.shared.reports_dir,
        "context",
        80,
        "Long context",
        ["A later stage."],
        findings=["Position interpolation keeps 0.12 bits per byte at four times the context."],
    )
    out = run_stage(params, root=tmp_path)
    pdf = out["pdf"]
    pages = check_pages(pdf, tmp_path / "pages")  # the page invariants, PNGs kept to look at
    assert out["pages"]["pages"] == pages["pages"] and len(pages["pngs"]) == pages["pages"]
    assert out["unlabelled"] == []  # every key of the reference fragments has a human label
    first = " ".join(page_text(pdf, 1, 1).split())
    speedup = json.loads((tmp_path / "reports/metrics/evaluate.json").read_text())["best_speedup_vs_scratch"]
    for s in (
        "Summary",
        "Question.",
        "Setup.",
        "Key results",
        "Study goals",
        "Limitations",
        "Fertility.",
        "3.157",
        "1.656",
        f"{speedup:.2f}×",
        "Long context. Position interpolation keeps 0.12 bits per byte",
    ):
        assert s in first, s
    nums = out["summary"].numbers()
    assert len(nums) >= 15 and all(n.text in first for _, n in nums)  # every summary number is on page 1
    flat = " ".join(page_text(pdf).split())
    for raw in ("bpb_target.", "ratio_tokens_per_word", "final_bpb_", "bytes.en-US", "spikes.base", "score_loss_%"):
        assert raw not in flat, raw
    assert not any(
        "mfu" in str(c).lower()
        for f in read_fragments(params.shared.reports_dir)
        for t in f["tables"]
        for c in t["columns"]
    )  # no fragment table carries a logged MFU column
    assert flat.index("Appendix") < flat.index("Evaluation: Bits per byte at every evaluated checkpoint")
    assert "Reproduce this report" in flat and "make repro" in flat


def test_page_check_names_what_fails(fragments, tmp_path):
    from warmstart.report.check import check_pages

    pdf = render_pdf(fragments, tmp_path / "r.pdf", "A tiny study", "tester")
    with pytest.raises(ReportError, match="pages, expected 10–40"):
        check_pages(pdf, bounds=(10, 40), summary=False)
    with pytest.raises(ReportError, match="page 1 is not the summary"):
        check_pages(pdf, bounds=(1, 40))


def test_reproduce_box_states_the_params_diff_from_the_commit(tmp_path, root):
    from warmstart.config import load_params
    from warmstart.report.provenance import reproduce_box

    env = dict(
        os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t"
    )
    shutil.copy(root / "params.yaml", tmp_path / "params.yaml")
    for cmd in (["init", "-q"], ["add", "params.yaml"], ["commit", "-qm", "p"]):
        subprocess.run(["git", *cmd], cwd=tmp_path, env=env, check=True, capture_output=True)
    same = load_params(tmp_path / "params.yaml")
    box = reproduce_box(same, provenance(tmp_path), tmp_path, ["reports/notebooks/06_evaluate.ipynb"])
    assert box["commands"].splitlines()[1] == "make repro" and box["diff"] == []
    assert "reports/notebooks (1 notebooks" in " ".join(box["after"])
    other = load_params(
        tmp_path / "params.yaml",
        overrides={"evaluate": {"eval_bytes": 1000}, "vocab_swap": {"methods": ["fvt", "focus"]}},
    )
    box = reproduce_box(other, provenance(tmp_path), tmp_path)
    assert box["diff"] == ["evaluate.eval_bytes=1000", 'vocab_swap.methods=["fvt", "focus"]']
    assert "dvc exp run -S 'evaluate.eval_bytes=1000' -S 'vocab_swap.methods=[\"fvt\", \"focus\"]'" in box["commands"]


def test_model_card_calls_a_run_best_only_when_the_seed_spread_shows_it(tmp_path, root):
    params, ev = _study(tmp_path, root)
    from warmstart.evaluate.runs import load_run
    from warmstart.io import write_json

    run = load_run(tmp_path / "data" / "logs" / "fvt")
    card = model_card(params, run, ev)
    assert "it is the study's best run" not in card and "not shown to be the best" in card
    assert "| MFU | not stated: " in card and "%" not in card.split("| MFU |")[1].split("\n")[0]
    from warmstart.evaluate.seed_spread import run_fingerprint

    # a run's spread counts only for the configuration it was measured for
    fps = {r: run_fingerprint(params, r) for r in ("fvt", "scratch")}
    write_json(
        tmp_path / "reports/metrics/seed_spread.json",
        {"runs": {"fvt": {"mean": 1.2345, "std": 0.01}, "scratch": {"mean": 1.5, "std": 0.01}}, "fingerprints": fps},
    )
    card = model_card(params, run, ev)
    assert "it is the study's best run by held-out Czech bits per byte (1.234), beyond run-to-run noise" in card
    write_json(
        tmp_path / "reports/metrics/seed_spread.json",
        {"runs": {"fvt": {"mean": 1.2345, "std": 0.2}, "scratch": {"mean": 1.5, "std": 0.2}}, "fingerprints": fps},
    )
    assert "but scratch is within noise of it" in model_card(params, run, ev)
    write_json(
        tmp_path / "reports/metrics/seed_spread.json",
        {
            "runs": {"fvt": {"mean": 1.2345, "std": 0.01}, "scratch": {"mean": 1.5, "std": 0.01}},
            "fingerprints": {"fvt": "x", "scratch": "x"},
        },
    )
    assert "not shown to be the best" in model_card(params, run, ev)


def test_committed_seed_spread_is_for_the_committed_params(root):
    """The reference study's report uses its 3-seed spread: every run it covers measured for that run's
    configuration in params.yaml as committed (a change to what a run trains on needs that run measured again,
    `python -m warmstart.evaluate.seed_spread --runs <run>`, or the report says it has no spread), and every
    current study run covered."""
    from warmstart.config import load_params
    from warmstart.evaluate.intervals import seed_spread
    from warmstart.evaluate.seed_spread import run_fingerprint, spread_for
    from warmstart.runs import run_names

    params = load_params(root / "params.yaml", overrides={"shared": {"reports_dir": str(root / "reports")}})
    recorded = seed_spread(root / "reports")
    assert recorded is not None and set(recorded["fingerprints"]) == set(recorded["runs"])
    for run, fp in recorded["fingerprints"].items():  # every run the file holds is this configuration's
        assert fp == run_fingerprint(params, run), run
    spread, why = spread_for(params)
    assert spread is not None, why
    pre_existing = ["scratch", "original", "random", "exact", "fvt", "focus", "omp", "hf-default", "tokdistil"]
    assert set(pre_existing + ["fvt-hybrid"]) <= set(spread["runs"]) and len(spread["seeds"]) >= 3
    assert all(r["n"] == len(spread["seeds"]) and r["min"] <= r["mean"] <= r["max"] for r in spread["runs"].values())
    ev = json.loads((root / "reports/metrics/evaluate.json").read_text())  # shared.seed's values are the study's
    i = spread["seeds"].index(params.shared.seed)
    for run, r in spread["runs"].items():
        if f"final_bpb_{run}" in ev:
            assert r["values"][i] == pytest.approx(ev[f"final_bpb_{run}"], abs=1e-9), run
    # every current study run covered: fails until the runs it names are measured (the why says how)
    uncovered = [n for n in run_names(params) if n not in spread["runs"]]
    assert not uncovered and why == "", why
