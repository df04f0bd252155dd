"""Stage ``report``: ``reports/report.pdf`` from every stage's fragment, and the best run's model card.

Reads the fragments, the stages' small records (``reports/{corpus,base,evaluate}``)
and the best run's record (``data/logs/<run>/run.json``); never a checkpoint.
Typesetting: :mod:`warmstart.report`; the card: :mod:`warmstart.model_card`;
the words for the run: :mod:`warmstart.describe`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from warmstart.describe import ReportError, base_model, corpus_sources, report_title, stage_record
from warmstart.evaluate import best_run, load_run
from warmstart.fragments import read_fragments
from warmstart.io import write_text
from warmstart.model_card import model_card
from warmstart.report import PARAMS, overview_section, provenance, render_pdf
from warmstart.stages import declared

__all__ = ["PARAMS", "run"]


def run(params: Any, root: str | Path = ".") -> dict[str, Any]:
    """Write ``reports/report.pdf`` and ``reports/model_card/README.md``; return paths, title and the best run."""
    params = declared(params, "report", PARAMS)
    t0 = time.perf_counter()
    frags = read_fragments(params.shared.reports_dir)
    if not frags:
        raise ReportError(f"no fragments under {params.report_path('fragments')} (run the earlier stages)")
    prov = provenance(root, frags)
    base, sources = base_model(params), corpus_sources(params)
    title = report_title(params, base)
    pdf = render_pdf([overview_section(params, base, sources), *frags], params.report_path("report.pdf"), title,
                     params.report.author, prov)  # fmt: skip
    out: dict[str, Any] = {"pdf": pdf, "title": title, "fragments": [f["stage"] for f in frags], "provenance": prov}
    ev = stage_record(params, "evaluate", "eval.json")
    if ev.get("runs"):
        best = best_run(ev)
        card = model_card(params, load_run(params.path("logs", best)), ev, frags, base=base, sources=sources)
        write_text(params.report_path("model_card", "README.md"), card)
        out.update(best=best, card=params.report_path("model_card", "README.md"))
    out["seconds"] = time.perf_counter() - t0
    return out
