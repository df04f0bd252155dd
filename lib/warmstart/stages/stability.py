"""Stage ``stability``: learning-rate sensitivity of warm start against scratch, with its mitigations.

CSMPT7b saw loss spikes only in continued pretraining, depending on the
learning rate; Wortsman et al. (2023) reproduce attention-logit growth and
output-logit divergence in small models at high learning rates, mitigated by
qk-layernorm and z-loss. :mod:`warmstart.stability` runs the sweep (warm start
and scratch; baseline, qk-norm through a native Qwen3 architecture, z-loss),
the instability signals the trainer logs, the spike detector on every run, and
an induced spike with rollback-and-skip. Details: ``reports/stability/``
(``stability.json``, figures under ``reports/figures/stability/``); the runs in
``data/stability``; headline: ``reports/metrics/stability.json``; its fragment
follows the loss-spike section of the report.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from warmstart.fragments import table, write_fragment
from warmstart.io import write_json
from warmstart.outputs import write_headline
from warmstart.stages.contract import declared

PARAMS = ("shared.seed", "shared.data_dir", "shared.reports_dir", "spikes", "stability")


def run(params: Any, show: bool = False) -> dict[str, Any]:
    """Run the study; write details, figures, fragment and headline; return the headline."""
    from warmstart.stability import StabilityConfig, findings, plots, run_study, table_rows
    from warmstart.train.launch import fresh_dir

    params = declared(params, "stability", PARAMS)
    sp = params.spikes
    cfg = StabilityConfig(
        **{
            "seed": params.shared.seed,
            "detector_method": sp.method,
            "detector_params": dict(sp.params),
            **params.stability.model_dump(),
        }
    )
    out = fresh_dir(params.path("stability"))
    result = run_study(cfg, out)
    write_json(params.report_path("stability", "stability.json"), result)
    figs = plots(result, params.report_path("figures", "stability"))
    rows = table_rows(result)
    tables = (
        [table(pd.DataFrame(rows), "Learning-rate sweep: final held-out loss, divergence and spikes per run")]
        if rows
        else []
    )
    paras = findings(result)
    head = result["headline"]
    write_fragment(
        params.shared.reports_dir,
        "stability",
        72,
        "Training stability",
        paras,
        tables,
        figs,
        dict(head),
        findings=summary(head),
        labels=LABELS,
    )
    return write_headline(params, "stability", head)


LABELS = {
    "qk_norm_sensitivity_reduction_pct": "LR sensitivity lowered by qk-norm (mean over warm start and scratch, %)",
    "spiking_runs": "sweep runs the spike detector flagged",
    "diverged_runs": "sweep runs that diverged",
    "signal_moved_before_loss": "an instability signal moved before the loss",
    "induced_final_loss_unmitigated": "induced spike: final held-out loss without mitigation (nats)",
    "induced_final_loss_mitigated": "induced spike: final held-out loss with rollback-and-skip (nats)",
    **{
        f"lr_sensitivity_{v}_{i}": f"LR sensitivity, {v.replace('_', '-')}, {i} (nats)"
        for v in ("baseline", "qk_norm", "z_loss")
        for i in ("warm", "scratch")
    },
}


def summary(head: dict[str, Any]) -> list[str]:
    """At most four short sentences for the report's first page, from the headline numbers."""
    out = []
    bw, bs = head.get("lr_sensitivity_baseline_warm"), head.get("lr_sensitivity_baseline_scratch")
    if bw is not None and bs is not None:
        rel = 100 * (bw / bs - 1)
        verdict = (
            "about equal, one seed: CSMPT7b's warm-start sensitivity is not shown"
            if abs(rel) < 5
            else "warm start more sensitive, as CSMPT7b found"
            if rel > 0
            else "warm start less sensitive, unlike CSMPT7b"
        )
        out.append(
            f"LR sensitivity (Wortsman et al.) of the baseline: warm start {bw:.3f} against scratch {bs:.3f} nats "
            f"({rel:+.1f}%: {verdict})."
        )
    cut = {
        i: 100 * (1 - head[f"lr_sensitivity_qk_norm_{i}"] / head[f"lr_sensitivity_baseline_{i}"])
        for i in ("warm", "scratch")
        if head.get(f"lr_sensitivity_qk_norm_{i}") and head.get(f"lr_sensitivity_baseline_{i}")
    }
    if cut:
        out.append(
            "qk-norm lowers LR sensitivity by "
            + ", ".join(f"{v:.1f}% ({i})" for i, v in cut.items())
            + f" (goal at least 30%: {', '.join(f'{i} ' + ('met' if v >= 30 else 'missed') for i, v in cut.items())})."
        )
    out.append(
        f"{head.get('spiking_runs', 0)} sweep runs flagged by the spike detector, {head.get('diverged_runs', 0)} diverged; "
        f"an instability signal moved before the loss: {'yes' if head.get('signal_moved_before_loss') else 'no'}."
    )
    u, m = head.get("induced_final_loss_unmitigated"), head.get("induced_final_loss_mitigated")
    if u is not None and m is not None:
        out.append(
            f"Induced bad-data spike: final held-out loss {u:.3f} without mitigation, {m:.3f} with rollback-and-skip."
        )
    return out
