"""The report stage: ``reports/report.pdf`` from the stage fragments, and a model card.

Toolchain: **Typst**, through the ``typst`` package on PyPI (one wheel, a
self-contained compiler with its fonts embedded: no TeX Live, no browser, no
root). The fragments and the provenance are written as ``data.json`` next to a
fixed template (:data:`TEMPLATE`) that reads them with Typst's ``json()``;
text therefore never passes through Typst markup and needs no escaping.
Figures are copied into the build directory, so the PDF does not depend on
where the project lives.

Sections, in order: title, an overview of the run (:func:`overview_section`:
languages, base model, training text and its licence), provenance
(:func:`provenance_section`: the report's environment; per stage the commit,
dirty flag, time, wall time and hardware it recorded in its fragment; package
versions and the stages that ran with other ones), then every fragment
``reports/fragments/NN_<stage>.json`` in ``(order, stage)`` order: its title,
paragraphs, tables, figures and headline numbers. A stage's section exists
exactly when its fragment does.

Nothing here knows which study ran: the title (unless ``report.title`` is
set), language names (English names of the BCP-47 codes, from Babel's CLDR
data), the base model (architecture from its ``config.json``, parameter count
from the base stage's metrics or the model files, trained here or loaded) and
the training text with its licence (the corpus stage's metrics and
``corpus.sources``) all come from the run. The model card
(``reports/model_card/README.md``) is :mod:`warmstart.model_card`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
from warmstart.fragments import PACKAGES, provenance_record

# The params keys the report stage reads (its stage module declares exactly these).
PARAMS = ("shared.source_lang", "shared.target_lang", "shared.data_dir", "shared.reports_dir", "report",
          "base.source", "base.model_id", "base.samples", "corpus.sources", "tokenizer.kind", "pretrain")  # fmt: skip

TEMPLATE = r"""
#let data = json("data.json")
#set document(title: data.title, author: data.author)
#set page(paper: "a4", margin: (x: 1.8cm, top: 2cm, bottom: 2cm), numbering: "1 / 1",
  header: context { if here().page() > 1 { align(right, text(8pt, fill: luma(90), data.title)) } })
#set text(size: 10pt)
#set par(justify: true)
#set heading(numbering: "1.")
#show heading.where(level: 1): it => { v(0.8em); it; v(0.4em) }
#show figure: set block(breakable: true)
#show figure.where(kind: table): set figure.caption(position: top)
#show figure.caption: set text(size: 9pt)

#let mktable(t) = figure(kind: table, caption: t.caption, text(size: 7.5pt, table(
  columns: t.columns.len(),
  align: (x, y) => if x == 0 { left } else { right },
  stroke: none,
  inset: (x: 4pt, y: 2.5pt),
  table.hline(),
  table.header(..t.columns.map(c => text(weight: "bold", c))),
  table.hline(stroke: 0.5pt),
  ..t.rows.flatten(),
  table.hline(),
)))

#align(center)[
  #text(18pt, weight: "bold", data.title)
  #v(0.2em)
  #text(11pt, data.author + " · " + data.date)
]
#v(1em)
#outline(depth: 1)

#for sec in data.sections {
  heading(level: 1, sec.title)
  for p in sec.paragraphs { par(p) }
  for t in sec.tables { mktable(t) }
  for f in sec.figures { figure(image(f.path, width: 100%), caption: f.caption) }
  if sec.numbers.len() > 0 {
    mktable((caption: "Headline numbers of this stage.", columns: ("key", "value"), rows: sec.numbers))
  }
  if sec.seconds != none { text(8pt, fill: luma(90), "Stage wall time: " + sec.seconds) }
}
"""


def _header(c: str) -> str:
    return str(c).replace("_", " ")


def overview_section(params: Any, base: ModelInfo | None = None, sources: Sequence[CorpusSource] | None = None) -> dict:
    """The run in a paragraph and two tables (a fragment-shaped section, first in the PDF)."""
    base = base or base_model(params)
    sources = corpus_sources(params) if sources is None else sources
    src, tgt = language(params.shared.source_lang), language(params.shared.target_lang)
    paras = [f"The study adapts {base.describe(src)}, from {src} to {tgt}: its vocabulary is swapped for a "
             f"{tgt.name} tokenizer under several initialisations of the new embeddings, and training continues on "
             f"{tgt.name} text; the baselines are a model trained from scratch and the base model with its own "
             f"tokenizer. Training text: {join_words([s.text for s in sources])}."]  # fmt: skip
    run = [["source language", str(src)], ["target language", str(tgt)],
           ["base model", base.name or "trained here"],
           ["architecture", base.architecture or base.arch], ["parameters", base.params]]  # fmt: skip
    return {
        "stage": "overview", "order": 0, "title": "Overview", "paragraphs": paras,
        "tables": [{"caption": "The run.", "columns": ["", "value"], "rows": run},
                   {"caption": "Training text and its licence.", "columns": ["source", "licence"],
                    "rows": [[s.text, s.licence] for s in sources]}],
        "figures": [], "numbers": {}, "seconds": None,
    }  # fmt: skip


# ---------------------------------------------------------------- provenance


def provenance(root: str | Path = ".", fragments: Sequence[Mapping] = (), packages: Sequence[str] = PACKAGES) -> dict:
    """The report's own :func:`~warmstart.fragments.provenance_record`, its ``date``, and under ``stages``
    the record each fragment's stage wrote (``{"stage", "seconds"}`` only, for a fragment without one)."""
    prov = provenance_record(root, packages=packages)
    prov["date"] = _when(prov["timestamp"])
    prov["stages"] = [{"stage": f["stage"], "seconds": f.get("seconds"), **(f.get("provenance") or {})} for f in fragments]
    return prov


def _when(timestamp: str | None) -> str:
    if not timestamp:
        return "–"
    return dt.datetime.fromisoformat(timestamp).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _commit(c: str | None, short: bool = False) -> str:
    return "unknown (not a git checkout)" if not c else c[:12] if short else c


def _dirty(rec: Mapping) -> str:
    d = rec.get("dirty")
    if d is None:
        return "unknown"
    files = list(rec.get("dirty_files") or [])
    return "no" if not d else "yes: " + ", ".join(files[:3]) + (", …" if len(files) > 3 else "")


def _hardware(rec: Mapping) -> str:
    gpus = Counter(rec.get("gpus") or [])
    gpu = ", ".join(f"{n} × {g}" if n > 1 else g for g, n in gpus.items()) or "no GPU"
    return f"{rec.get('cpu') or '?'} ({rec.get('cpu_count')} cores), {gpu}"


def provenance_section(prov: Mapping) -> dict:
    """The provenance as a fragment-shaped section (order 1, after the overview)."""
    env = [["git commit", _commit(prov["commit"])], ["working tree dirty", _dirty(prov)], ["date", prov["date"]],
           ["python", prov["python"]], ["platform", prov["platform"]], ["hardware", _hardware(prov)],
           ["memory", fmt(prov.get("memory_gib")) + " GiB"]]  # fmt: skip
    stages = prov.get("stages", [])
    recorded = [s for s in stages if "timestamp" in s]
    rows = [[s["stage"], _commit(s.get("commit"), short=True), _dirty(s), _when(s.get("timestamp")),
             duration(s.get("seconds")) or "–", _hardware(s)] if "timestamp" in s
            else [s["stage"], "–", "–", "–", duration(s.get("seconds")) or "–", "not recorded"] for s in stages]  # fmt: skip
    pk = [[k, v, ", ".join(f"{s['stage']}: {s['packages'][k]}" for s in recorded
                           if s.get("packages", {}).get(k, v) != v) or "–"] for k, v in prov["packages"].items()]  # fmt: skip
    paras = ["Where, when and with what this report was built, and what each stage recorded in its fragment when "
             "it ran: commit, working tree, time, wall time and hardware."]  # fmt: skip
    commits = sorted({_commit(s.get("commit"), short=True) for s in recorded})
    if len(commits) > 1:
        paras.append(f"The stages ran at {len(commits)} different commits: {', '.join(commits)}.")
    elif commits and recorded[0].get("commit"):
        same = " (the report's)" if recorded[0]["commit"] == prov["commit"] else ""
        paras.append(f"Every stage that recorded its provenance ran at commit {commits[0]}{same}.")
    elif commits:
        paras.append("The stages ran outside a git checkout: no commit recorded.")
    if len(recorded) < len(stages):
        missing = [s["stage"] for s in stages if "timestamp" not in s]
        paras.append(f"No provenance recorded by: {', '.join(missing)} (fragments written before stages recorded it).")
    return {
        "stage": "provenance", "order": 1, "title": "Provenance", "paragraphs": paras,
        "tables": [{"caption": "Environment of the report stage.", "columns": ["item", "value"], "rows": env},
                   {"caption": "Provenance each stage recorded in its fragment.",
                    "columns": ["stage", "commit", "dirty", "finished", "wall time", "hardware"], "rows": rows},
                   {"caption": "Package versions (report stage), and the stages that ran with another version.",
                    "columns": ["package", "version", "other versions"], "rows": pk}],
        "figures": [], "numbers": {}, "seconds": None,
    }  # fmt: skip


# ---------------------------------------------------------------- the PDF


def _check_fragment(f: Mapping) -> None:
    for k in ("stage", "order", "title"):
        if k not in f:
            raise ReportError(f"fragment {f.get('stage', '?')!r} lacks {k!r}")
    for t in f.get("tables", []):
        if not {"caption", "columns", "rows"} <= set(t):
            raise ReportError(f"fragment {f['stage']!r}: a table needs caption, columns and rows")
        for r in t["rows"]:
            if len(r) != len(t["columns"]):
                raise ReportError(f"fragment {f['stage']!r}, table {t['caption']!r}: a row has {len(r)} cells, "
                                  f"expected {len(t['columns'])}")  # fmt: skip
    for fig in f.get("figures", []):
        if not Path(fig["path"]).is_file():
            raise ReportError(f"fragment {f['stage']!r}: figure {fig['path']} does not exist")


def document_data(fragments: Sequence[Mapping], title: str, author: str, prov: Mapping | None, build_dir: Path) -> dict:
    """The template's ``data.json``: every cell a string, every figure copied into ``build_dir``."""
    for f in fragments:
        _check_fragment(f)
    sections = sorted([*fragments, *([provenance_section(prov)] if prov else [])], key=lambda f: (f["order"], f["stage"]))
    out, n_fig = [], 0
    for f in sections:
        figs = []
        for fig in f.get("figures", []):
            dst = f"fig{n_fig:03d}{Path(fig['path']).suffix}"
            shutil.copyfile(fig["path"], build_dir / dst)
            figs.append({"path": dst, "caption": str(fig.get("caption", ""))})
            n_fig += 1
        out.append({
            "title": str(f["title"]),
            "paragraphs": [str(p) for p in f.get("paragraphs", [])],
            "tables": [{"caption": str(t["caption"]), "columns": [_header(c) for c in t["columns"]],
                        "rows": [[fmt(c) for c in r] for r in t["rows"]]} for t in f.get("tables", [])],
            "figures": figs,
            "numbers": [[str(k), fmt(v)] for k, v in (f.get("numbers") or {}).items()],
            "seconds": duration(f.get("seconds")),
        })  # fmt: skip
    date = (prov or {}).get("date") or dt.date.today().isoformat()
    return {"title": title, "author": author, "date": date, "sections": out}


def render_pdf(fragments: Sequence[Mapping], out_path: str | Path, title: str, author: str,
               prov: Mapping | None = None) -> Path:  # fmt: skip
    """Typeset the fragments (and the provenance) into ``out_path``; written atomically."""
    import typst

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        build = Path(tmp)
        data = document_data(fragments, title, author, prov, build)
        (build / "data.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        (build / "main.typ").write_text(TEMPLATE, encoding="utf-8")
        try:
            pdf = typst.compile(str(build / "main.typ"), root=str(build))
        except Exception as err:  # typst raises its own error types; keep the message
            raise ReportError(f"typst could not compile the report: {err}") from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out_path.with_name(f".{out_path.name}.tmp")
    tmp_out.write_bytes(pdf)
    os.replace(tmp_out, out_path)
    return out_path
