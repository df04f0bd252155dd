"""The report stage: ``reports/report.pdf`` from the stage fragments, and a model card.

Toolchain: **Typst**, through the ``typst`` package on PyPI (one wheel, a
self-contained compiler with its fonts embedded: no TeX Live, no browser, no
root). The fragments and the provenance are written as ``data.json`` next to a
fixed template (:data:`TEMPLATE`) that reads them with Typst's ``json()``;
text therefore never passes through Typst markup and needs no escaping.
Figures are copied into the build directory, so the PDF does not depend on
where the project lives. Any Typst warning fails the build (``strict``).

The PDF reads like a paper, findings first:

1. **Summary** (page 1, :mod:`warmstart.report.findings`): the question, the setup
   in one paragraph, the key results with their numbers and 95% intervals,
   the study goals met or missed, the limitations that follow from the scale.
   Every number comes from the metrics files; the summary is shrunk (font
   size) until it fits the first page.
2. Contents and a **reproduce box** (:func:`~warmstart.report.provenance.reproduce_box`: the commit, the
   exact ``make``/``dvc`` commands, the params that differ from the commit's
   ``params.yaml``, the executed notebooks).
3. The **sections**: an overview of the run (:func:`overview_section`), then
   every fragment ``reports/fragments/NN_<stage>.json`` in ``(order, stage)``
   order, with human labels and units for every column (:mod:`warmstart.report.labels`),
   and the report's own throughput section (:func:`~warmstart.report.throughput.throughput_section`: tokens/s
   and achieved FLOP/s always, MFU only against a stated, reliable peak).
4. The **appendix**: long tables (a fragment's tables flagged ``appendix``, or
   longer than :data:`LONG_TABLE`), every stage's headline numbers (labelled),
   the provenance (:func:`~warmstart.report.provenance.provenance_section`) and the executed notebooks.

:func:`warmstart.report.check.check_pages` renders every page to PNG (``pdftoppm``) and checks the
invariants: page count within bounds, no blank page, the summary on page 1.

Nothing here knows which study ran: the title (unless ``report.title`` is
set), language names (English names of the BCP-47 codes, from Babel's CLDR
data), the base model (architecture from its ``config.json``, parameter count
from the base stage's metrics or the model files, trained here or loaded) and
the training text with its licence (the corpus stage's metrics and
``corpus.sources``) all come from the run. The model card
(``reports/model_card/README.md``) is :mod:`warmstart.report.model_card`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from warmstart.config import Params
from warmstart.describe import (
    CorpusSource,
    ModelInfo,
    ReportError,
    base_model,
    corpus_sources,
    duration,
    fmt,
    join_words,
    language,
)
from warmstart.fragments import check_findings
from warmstart.report.labels import RUNS, Labels, arm_legend
from warmstart.report.provenance import provenance_section
from warmstart.report.template import TEMPLATE

# The params keys the report stage reads: every section, because the reproduce box states the params that differ
# from the commit's params.yaml (the stage module declares exactly these).
PARAMS = tuple(Params.model_fields)
LONG_TABLE = 16  # rows: longer fragment tables go to the appendix
SUMMARY_SIZES = (9.5, 9.0, 8.5, 8.0, 7.5)  # pt: the summary's font, shrunk until it fits page 1


def _header(c: str) -> str:
    return str(c).replace("_", " ")


def overview_section(
    params: Any, base: ModelInfo | None = None, sources: Sequence[CorpusSource] | None = None, runs: Sequence[str] = ()
) -> dict:
    """The run in a paragraph and tables: the run, its training text and licence, and what each of its runs is
    (``runs``: the study's run names; a fragment-shaped section, first in the body)."""
    base = base or base_model(params)
    sources = corpus_sources(params) if sources is None else sources
    src, tgt = language(params.shared.source_lang), language(params.shared.target_lang)
    paras = [
        f"The study adapts {base.describe(src)}, from {src} to {tgt}: its vocabulary is swapped for a "
        f"{tgt.name} tokenizer under several initialisations of the new embeddings, and training continues on "
        f"{tgt.name} text; the baselines are a model trained from scratch and the base model with its own "
        f"tokenizer. Training text: {join_words([s.text for s in sources])}."
    ]
    run = [
        ["source language", str(src)],
        ["target language", str(tgt)],
        ["base model", base.name or "trained here"],
        ["architecture", base.architecture or base.arch],
        ["parameters", base.params],
    ]
    tables = [
        {"caption": "The run.", "columns": ["", "value"], "rows": run},
        {
            "caption": "Training text and its licence.",
            "columns": ["source", "licence"],
            "rows": [[s.text, s.licence] for s in sources],
        },
    ]
    arms = {n: arm_legend(a) for n, a in params.study.arms.items()}
    legend = [[r, RUNS.get(r) or arms[r]] for r in runs if r in RUNS or r in arms]
    if legend:
        tables.append(
            {
                "caption": "The study's runs (their names in every table and figure).",
                "columns": ["run", "what it is"],
                "rows": legend,
            }
        )
    return {
        "stage": "overview",
        "order": 0,
        "title": "Overview",
        "paragraphs": paras,
        "tables": tables,
        "figures": [],
        "numbers": {},
        "seconds": None,
    }


# ---------------------------------------------------------------- the runs' step logs, for the throughput section


def run_logs(params: Any) -> dict[str, dict]:
    """Every run's step log and FLOPs per token: the base model's (``reports/base/base.json``) and the study's
    (``data/logs/<run>/run.json``); ``{name: {"log", "flops_per_token", "seconds", "tokens", "peak"}}``."""
    from warmstart.io import read_jsonl
    from warmstart.runs import run_names

    out = {}
    base = _read_json(params.report_path("base", "base.json"))
    names = ["base", *run_names(params)]
    for name in names:
        log_path = params.path("logs", name, "log.jsonl")
        if not log_path.is_file():
            continue
        rec = base if name == "base" else _read_json(params.path("logs", name, "run.json"))
        out[name] = {
            "log": list(read_jsonl(log_path)),
            "flops_per_token": rec.get("flops_per_token"),
            "seconds": rec.get("seconds"),
            "tokens": rec.get("tokens"),
            "peak": rec.get("peak"),
        }
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


# ---------------------------------------------------------------- the PDF


def _check_fragment(f: Mapping) -> None:
    from warmstart.fragments import FragmentError, check_table

    for k in ("stage", "order", "title"):
        if k not in f:
            raise ReportError(f"fragment {f.get('stage', '?')!r} lacks {k!r}")
    try:
        for t in f.get("tables", []):
            check_table(f["stage"], t)
        check_findings(f["stage"], f.get("findings"))
    except FragmentError as err:
        raise ReportError(str(err)) from None
    for t in f.get("tables", []):
        for r in t["rows"]:
            if len(r) != len(t["columns"]):
                raise ReportError(
                    f"fragment {f['stage']!r}, table {t['caption']!r}: a row has {len(r)} cells, "
                    f"expected {len(t['columns'])}"
                )
    for fig in f.get("figures", []):
        p = Path(fig["path"])
        if not p.is_file():
            raise ReportError(f"fragment {f['stage']!r}: figure {fig['path']} does not exist")
        if p.stat().st_size == 0:
            raise ReportError(f"fragment {f['stage']!r}: figure {fig['path']} is empty")


def _drop_mfu(t: Mapping) -> tuple[Mapping, str | None]:
    """A table without an ``mfu`` column (MFU from logs that divide by a peak measured once on a possibly
    shared machine is never printed as a fact); the note that says so."""
    cols = list(t["columns"])
    if "mfu" not in cols:
        return t, None
    i = cols.index("mfu")
    t = {**t, "columns": cols[:i] + cols[i + 1 :], "rows": [list(r[:i]) + list(r[i + 1 :]) for r in t["rows"]]}
    return t, (
        f"An MFU column was removed from “{t['caption'][:60]}…”: it divided by a peak measured once per run; "
        "see the Throughput section."
    )


def _numeric(cell: str) -> bool:
    """A cell that reads as a number ('1,234', '1.844 [1.80, 1.89]', '2.64×', '44%', '4.68 TFLOP', '–')."""
    c = cell.strip()
    return c in ("", "–", "-", "∞") or (c[:1].isdigit() or c[:1] in "+-−.") and any(ch.isdigit() for ch in c[:3])


def _table(t: Mapping, labels: Labels) -> dict:
    rows = [[fmt(c) for c in r] for r in t["rows"]]
    align = ["left" if i == 0 or not all(_numeric(r[i]) for r in rows) else "right" for i in range(len(t["columns"]))]
    return {
        "caption": str(t["caption"]),
        "columns": [labels.column(c) for c in t["columns"]],
        "rows": rows,
        "align": align,
    }


def _notebook_for(stage: str, notebooks: Sequence[str]) -> str | None:
    hits = [n for n in notebooks if Path(n).stem.split("_", 1)[-1].split("-")[0] == stage]
    return hits[0] if len(hits) == 1 else (Path(hits[0]).parent.as_posix() + f"/*_{stage}-*.ipynb" if hits else None)


def document_data(
    fragments: Sequence[Mapping],
    title: str,
    author: str,
    prov: Mapping | None,
    build_dir: Path,
    summary: Mapping | None = None,
    reproduce: Mapping | None = None,
    labels: Labels | None = None,
    notebooks: Sequence[str] = (),
    summary_size: float = SUMMARY_SIZES[0],
) -> dict:
    """The template's ``data.json``: every cell a string, every figure copied into ``build_dir``; long tables,
    headline numbers and the provenance in the appendix."""
    for f in fragments:
        _check_fragment(f)
    labels = labels or Labels("source", "target")
    body, appendix, n_fig = [], [], 0
    long_tables, number_tables = [], []
    for f in sorted(fragments, key=lambda f: (f["order"], f["stage"])):
        flab = Labels(labels.src, labels.tgt, {**labels.extra, **(f.get("labels") or {})})
        figs = []
        for fig in f.get("figures", []):
            dst = f"fig{n_fig:03d}{Path(fig['path']).suffix}"
            shutil.copyfile(fig["path"], build_dir / dst)
            figs.append({"path": dst, "caption": str(fig.get("caption", ""))})
            n_fig += 1
        tables, notes = [], []
        for t in f.get("tables", []):
            t, note = _drop_mfu(t)
            if note:
                notes.append(note)
            if t.get("appendix") or len(t["rows"]) > LONG_TABLE:
                long_tables.append(_table({**t, "caption": f"{f['title']}: {t['caption']}"}, flab))
                notes.append(f"Table “{t['caption'][:70]}” ({len(t['rows'])} rows) is in the appendix.")
            else:
                tables.append(_table(t, flab))
        nb = _notebook_for(f["stage"], notebooks)
        if nb:
            notes.append(f"Details: the executed notebook {nb}.")
        nums = f.get("numbers") or {}
        if nums:
            number_tables.append(
                _table(
                    {
                        "caption": f"{f['title']}: headline numbers of the stage.",
                        "columns": ["quantity", "value"],
                        "rows": [[flab.number(k), fmt(v)] for k, v in nums.items()],
                    },
                    flab,
                )
            )
        labels.unknown |= flab.unknown
        body.append(
            {
                "title": str(f["title"]),
                "paragraphs": [str(p) for p in f.get("paragraphs", [])],
                "tables": tables,
                "figures": figs,
                "notes": notes,
                "seconds": duration(f.get("seconds")),
            }
        )
    if long_tables:
        appendix.append(
            {
                "title": "Long tables",
                "paragraphs": ["The full tables behind the sections' figures."],
                "tables": long_tables,
                "figures": [],
                "notes": [],
                "seconds": None,
            }
        )
    if number_tables:
        appendix.append(
            {
                "title": "Headline numbers",
                "paragraphs": [
                    "Each stage's headline numbers as it recorded them in its fragment (the flat files in reports/metrics "
                    "are what `dvc metrics show` prints)."
                ],
                "tables": number_tables,
                "figures": [],
                "notes": [],
                "seconds": None,
            }
        )
    if prov:
        ps = provenance_section(prov)
        appendix.append(
            {
                "title": ps["title"],
                "paragraphs": ps["paragraphs"],
                "tables": [_table(t, labels) for t in ps["tables"]],
                "figures": [],
                "notes": [],
                "seconds": None,
            }
        )
    if notebooks:
        appendix.append(
            {
                "title": "Executed notebooks",
                "paragraphs": [
                    "Every stage runs a thin notebook through papermill; the executed copies hold the stage's full "
                    "output (tables, figures, logs)."
                ],
                "tables": [
                    _table(
                        {"caption": "Executed notebooks.", "columns": ["notebook"], "rows": [[n] for n in notebooks]},
                        labels,
                    )
                ],
                "figures": [],
                "notes": [],
                "seconds": None,
            }
        )
    date = (prov or {}).get("date") or dt.date.today().isoformat()
    summ = None
    if summary:
        summ = {
            "size": summary_size,
            "question": summary["question"],
            "setup": summary["setup"]["text"],
            "results": [{"heading": r["heading"], "text": r["text"]} for r in summary["results"]],
            "goals": [{"status": (g["status"] or "unknown").capitalize(), "text": g["text"]} for g in summary["goals"]],
            "limitations": [dict(zip(("heading", "text"), _lead(lim))) for lim in summary["limitations"]],
        }
    return {
        "title": title,
        "author": author,
        "date": date,
        "summary": summ,
        "reproduce": reproduce,
        "sections": body,
        "appendix": appendix,
    }


def _lead(sentence: str) -> tuple[str, str]:
    """'Scale: a 2.8M-parameter model ...' -> ('Scale', 'a 2.8M-parameter model ...'); no lead: ('', sentence)."""
    head, sep, rest = sentence.partition(": ")
    if sep and len(head) <= 24 and head[:1].isupper():
        return head, rest[:1].upper() + rest[1:]
    return "", sentence


def render_pdf(
    fragments: Sequence[Mapping],
    out_path: str | Path,
    title: str,
    author: str,
    prov: Mapping | None = None,
    *,
    summary: Mapping | None = None,
    reproduce: Mapping | None = None,
    labels: Labels | None = None,
    notebooks: Sequence[str] = (),
    strict: bool = True,
) -> Path:
    """Typeset the fragments (with the summary page, the reproduce box and the appendix) into ``out_path``,
    written atomically. ``strict``: a Typst warning is an error. The summary's font is shrunk
    (:data:`SUMMARY_SIZES`) until it fits the first page."""
    import typst

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        build = Path(tmp)
        (build / "main.typ").write_text(TEMPLATE, encoding="utf-8")
        for size in SUMMARY_SIZES if summary else SUMMARY_SIZES[:1]:
            data = document_data(fragments, title, author, prov, build, summary, reproduce, labels, notebooks, size)
            (build / "data.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
            try:
                pdf, warnings = typst.compile_with_warnings(str(build / "main.typ"), root=str(build))
            except Exception as err:  # typst raises its own error types; keep the message
                raise ReportError(f"typst could not compile the report: {err}") from None
            if strict and warnings:
                raise ReportError("typst warned: " + "; ".join(str(w) for w in warnings))
            if not summary or _summary_page(build) == 1:
                break
        else:
            raise ReportError(
                f"the summary does not fit on page 1 even at {SUMMARY_SIZES[-1]} pt: shorten it "
                "(fewer findings per stage)"
            )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out_path.with_name(f".{out_path.name}.tmp")
    tmp_out.write_bytes(pdf)
    os.replace(tmp_out, out_path)
    return out_path


def _summary_page(build: Path) -> int:
    import typst

    pages = json.loads(typst.query(str(build / "main.typ"), "<summary-end>", field="value", root=str(build)))
    return int(pages[0]) if pages else 0


# ---------------------------------------------------------------- looking at the pages
