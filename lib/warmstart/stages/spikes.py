"""Stage ``spikes``: loss-spike detection on every study run's log (:mod:`warmstart.spikes`).

Reads only the runs' logs (``data/runs/<name>/log.jsonl``), never their
checkpoints. Details: ``reports/spikes/`` (``spikes.json``, per-run and event
tables, figures); headline: ``reports/metrics/spikes.json``.
"""

from __future__ import annotations

from typing import Any

from warmstart.outputs import write_headline
from warmstart.report.labels import COLUMNS
from warmstart.spikes.analysis import run_stage
from warmstart.stages.contract import declared

PARAMS = ("shared.data_dir", "shared.reports_dir", "vocab_swap.methods", "study.arms", "spikes")


def run(params: Any, show: bool = False) -> dict[str, Any]:
    """Detect spikes in every run; write details, figures, fragment and headline; return the headline."""
    params = declared(params, "spikes", PARAMS)
    res = run_stage(params, show=show, labels=COLUMNS)  # column names in the report's words, with units
    rows = res["metrics"]["runs"]
    score = [r.get("score_loss_%") for r in rows.values() if r.get("score_loss_%") is not None]
    return write_headline(
        params,
        "spikes",
        {
            "method": params.spikes.method,
            "runs_analysed": len(rows),
            "total_spikes": res["metrics"]["total_spikes"],
            "runs_with_spikes": sum(1 for r in rows.values() if r["spikes"]),
            "max_spike_score_loss_pct": max(score) if score else None,
        },
    )
