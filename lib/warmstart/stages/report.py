"""Stage ``report``: ``reports/report.pdf`` from every stage's fragment, and the lowest run's model card.

Reads the fragments, the metrics files and the stages' small records
(``reports/{corpus,base,evaluate,spikes}``, ``reports/metrics/seed_spread.json``
when it exists) and the runs' records and step logs (``data/logs``); never a
checkpoint. Measures the device's peak FLOP/s (:func:`warmstart.flops.peak_record`:
a GPU's datasheet, or a robust CPU matmul measurement recorded in the
provenance) for the throughput section. Typesetting: :mod:`warmstart.report.build`;
the summary: :mod:`warmstart.report.findings`; the card: :mod:`warmstart.report.model_card`;
the words for the run: :mod:`warmstart.describe`; labels: :mod:`warmstart.report.labels`.
After writing the PDF it renders every page and checks the invariants
(:func:`warmstart.report.check.check_pages`; skipped, and said so, without ``pdftoppm``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from warmstart.describe import ReportError, base_model, corpus_sources, report_title, stage_record
from warmstart.evaluate.runs import best_run, load_run
from warmstart.evaluate.seed_spread import spread_section
from warmstart.fragments import read_fragments
from warmstart.io import write_text
from warmstart.report.build import PARAMS, overview_section, render_pdf, run_logs
from warmstart.report.check import check_pages
from warmstart.report.findings import study_summary
from warmstart.report.labels import Labels
from warmstart.report.model_card import model_card
from warmstart.report.provenance import provenance, reproduce_box
from warmstart.report.throughput import throughput_analysis, throughput_section
from warmstart.stages.contract import declared

__all__ = ["PARAMS", "run"]


def _peak() -> dict | None:
    import torch

    from warmstart.flops import peak_record

    return peak_record("cuda" if torch.cuda.is_available() else "cpu")


def _with_heatmap(frags: list[dict], params: Any, tmp: Path) -> list[dict]:
    """An evaluate fragment written before the stage drew its per-checkpoint heatmap gets one, drawn here from
    ``reports/evaluate/checkpoints.csv`` (into ``tmp``); the long table goes to the appendix either way."""
    ck_path = params.report_path("evaluate", "checkpoints.csv")
    out = []
    for f in frags:
        if (
            f.get("stage") == "evaluate"
            and ck_path.is_file()
            and not any(Path(g["path"]).name == "bpb_heatmap.png" for g in f.get("figures", []))
        ):
            import pandas as pd

            from warmstart.evaluate.tables import plot_bpb_heatmap

            sh = params.shared
            fig = plot_bpb_heatmap(pd.read_csv(ck_path), tmp / "bpb_heatmap.png", sh.source_lang, sh.target_lang)
            f = {
                **f,
                "figures": [
                    *f.get("figures", []),
                    {
                        "path": str(fig),
                        "caption": (
                            "Bits per byte at every evaluated checkpoint (lower is better): one row per run, one column per "
                            "checkpoint, labelled by the MB of training text seen; the colours span the trained checkpoints. "
                            "Drawn by the report stage from reports/evaluate/checkpoints.csv; the full table is in the appendix."
                        ),
                    },
                ],
            }
        out.append(f)
    return out


def run(params: Any, root: str | Path = ".") -> dict[str, Any]:
    """Write ``reports/report.pdf`` and ``reports/model_card/README.md``; return paths, title, the summary, the
    throughput analysis and the page check."""
    with tempfile.TemporaryDirectory(prefix="report-figures-") as tmp:
        return _run(params, root, Path(tmp))


def _run(params: Any, root: str | Path, tmp: Path) -> dict[str, Any]:
    params = declared(params, "report", PARAMS)
    t0 = time.perf_counter()
    frags = read_fragments(params.shared.reports_dir)
    if not frags:
        raise ReportError(f"no fragments under {params.report_path('fragments')} (run the earlier stages)")
    prov = provenance(root, frags)
    prov["peak"] = _peak()
    base, sources = base_model(params), corpus_sources(params)
    title = report_title(params, base)
    logs = run_logs(params)
    tp = throughput_analysis(logs, prov["peak"])
    summary = study_summary(params, frags, prov, base, tp)
    nb_dir = params.report_path("notebooks")
    notebooks = sorted(p.as_posix() for p in nb_dir.glob("*.ipynb")) if nb_dir.is_dir() else []
    labels = Labels(params.shared.source_lang, params.shared.target_lang)
    sections = [
        overview_section(params, base, sources, runs=list(logs) or summary.ranking["order"]),
        *_with_heatmap(frags, params, tmp),
    ]
    seeds = spread_section(params)  # after the evaluation: the run-to-run spread its comparisons lack
    if seeds:
        at = next((i + 1 for i, f in enumerate(sections) if f.get("stage") == "evaluate"), len(sections))
        sections.insert(at, seeds)
    if logs:
        sections.append(throughput_section(tp, logs))
    pdf = render_pdf(
        sections,
        params.report_path("report.pdf"),
        title,
        params.report.author,
        prov,
        summary=summary.as_dict(),
        reproduce=reproduce_box(params, prov, root, notebooks),
        labels=labels,
        notebooks=notebooks,
    )
    out: dict[str, Any] = {
        "pdf": pdf,
        "title": title,
        "fragments": [f["stage"] for f in frags],
        "provenance": prov,
        "summary": summary,
        "throughput": tp,
        "unlabelled": sorted(labels.unknown),
    }
    out["pages"] = check_pages(pdf) if shutil.which("pdftoppm") and shutil.which("pdftotext") else None
    ev = stage_record(params, "evaluate", "eval.json")
    if ev.get("runs"):
        best = best_run(ev)
        card = model_card(
            params,
            load_run(params.path("logs", best)),
            ev,
            frags,
            base=base,
            sources=sources,
            ranking=summary.ranking,
            throughput=tp["runs"].get(best),
        )
        write_text(params.report_path("model_card", "README.md"), card)
        out.update(best=best, card=params.report_path("model_card", "README.md"))
    out["seconds"] = time.perf_counter() - t0
    return out
