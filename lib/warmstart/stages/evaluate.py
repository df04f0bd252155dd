"""Stage ``evaluate``: every run of the study at every step-tagged checkpoint (:mod:`warmstart.evaluate`).

Details: ``reports/evaluate/`` (``eval.json``, ``swap_study.json``, per-checkpoint
and final tables, figures); headline: ``reports/metrics/evaluate.json`` (final
target bits per byte per run, the best run and its speed-up over scratch).
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from warmstart.evaluate import (
    fmt_speedup,
    evaluate_runs,
    flops_table,
    init_table,
    load_runs,
    metrics_json,
    plot_bpb_curves,
    plot_loss,
    read_log,
    swap_study,
)
from warmstart.fragments import table, write_fragment
from warmstart.io import write_json
from warmstart.stages import declared, write_headline

PARAMS = (
    "shared.seed", "shared.source_lang", "shared.target_lang", "shared.data_dir", "shared.reports_dir",
    "base.trust_remote_code", "vocab_swap.methods", "pretrain.seq_len", "evaluate",
)  # fmt: skip


def run(params: Any, progress: bool = True) -> dict[str, Any]:
    """Evaluate every run that exists; write reports/evaluate/*, the headline metrics and the report fragment."""
    params = declared(params, "evaluate", PARAMS)
    t0 = time.perf_counter()
    runs = load_runs(params)
    res = evaluate_runs(params, runs, progress=progress)
    out = params.report_path("evaluate")
    out.mkdir(parents=True, exist_ok=True)
    ck, fin = res["checkpoints"], res["final"]
    ck.to_csv(out / "checkpoints.csv", index=False)
    fin.to_csv(out / "final.csv", index=False)
    pd.DataFrame(res["translations"]).to_csv(out / "translations.csv", index=False)
    init = init_table(runs, ck, params)
    init.to_csv(out / "init.csv", index=False)
    flops = flops_table(runs)
    flops.to_csv(out / "flops.csv", index=False)
    logs = pd.concat([read_log(r) for r in runs], ignore_index=True) if runs else pd.DataFrame()
    sh = params.shared
    figs = [{"path": str(plot_bpb_curves(ck, out / "bpb_curves.png", sh.source_lang, sh.target_lang)),
             "caption": "Held-out bits per byte against UTF-8 bytes of training text seen, one curve per run "
                        "(markers: evaluated checkpoints; step 0 is the initialised model). Bytes, not tokens, so "
                        "runs with different tokenizers share the x axis. Right: source language (forgetting)."}]  # fmt: skip
    lp = plot_loss(logs, out / "loss.png")
    if lp:
        figs.append({"path": str(lp), "caption": "Training loss per logged step (nats per token of each run's own "
                     "tokenizer, so levels are comparable only between runs with the same tokenizer). Dotted: "
                     "phase 1 (embeddings only) → phase 2 (full model); dashed red: corpus hot-swaps."})  # fmt: skip
    metrics = metrics_json(res, init)
    write_json(out / "eval.json", metrics)
    study = swap_study(init)
    write_json(out / "swap_study.json", study)

    counts = {c: [f"{int(v):,}" if pd.notna(v) else "–" for v in init[c]] for c in ("aligned", "decomposed", "random", "new_vocab") if c in init}
    init_fmt = init.assign(speedup=[fmt_speedup(v) for v in init["speedup"]], **counts)
    cols = ["run", "step", "phase", "bytes", "bpb_target", "bpb_source"]
    per_ck = ck[cols].assign(bytes=(ck["bytes"] / 1e6).round(3)).rename(columns={"bytes": "MB seen"})
    probe_cols = [c for c in ("bpb_target", "bpb_source", "cloze_acc_target", "cloze_acc_norm_target",
                              "cloze_acc_source", "cloze_acc_norm_source", "chrf", "masked_acc") if c in fin]  # fmt: skip
    flops_fmt = flops.assign(train_flops=[f"{v:.3g}" if v else "" for v in flops["train_flops"]],
                             mfu=[f"{100 * v:.2f}%" if v is not None and pd.notna(v) else "" for v in flops["mfu"]])  # fmt: skip
    best = metrics.get("best")
    paras = [
        f"Every run of the study evaluated on held-out test chapters ({sh.target_lang} target, {sh.source_lang} "
        f"source); bits per byte on the first {params.evaluate.eval_bytes:,} bytes of each language at "
        f"{'every tagged checkpoint' if params.evaluate.checkpoints == 'tagged' else 'the final checkpoint'}; "
        f"cloze, translation and masked-token probes at "
        f"{'every tagged checkpoint' if params.evaluate.probe_checkpoints == 'tagged' else 'the final checkpoint'}.",
        f"Cloze: {res['cloze_items'].get('target', 0)} items per language, the true continuation of a held-out "
        "paragraph against three endings from other held-out documents (chance 25%), scored by lm-evaluation-harness "
        "(acc: summed log-likelihood, acc_norm: log-likelihood per character). Translation: "
        f"{res['pairs']} aligned paragraph pairs (same chapter and page, same paragraph count), NorMistral's "
        f"prompt, greedy decoding, chrF. Speed-up: training bytes scratch needs for its final target bpb, divided "
        "by the bytes a run needs to reach it (linear interpolation between checkpoints).",
    ]  # fmt: skip
    if best:
        paras.append(f"Best run by final target bits per byte: {best} ({metrics['runs'][best]['bpb_target']:.3f}).")
    tables = [
        table(init_fmt, "Initialisation methods: aligned/decomposed/random rows of the new embedding matrix, target "
              "bits per byte at step 0 and after training, speed-up against scratch."),
        table(fin[["run", *probe_cols]], "Final checkpoints: bits per byte and probes (cloze accuracy, chrF, "
              "masked-token accuracy where the hybrid objective was used)."),
        table(per_ck, "Bits per byte at every evaluated checkpoint."),
        table(flops_fmt, "Theoretical training FLOPs (flops per token × tokens, 6N + 12LHQT) and MFU per run."),
    ]  # fmt: skip
    numbers = {f"bpb_target.{k}": v.get("bpb_target") for k, v in metrics["runs"].items()}
    numbers.update({f"bpb_source.{k}": v.get("bpb_source") for k, v in metrics["runs"].items()})
    if best:
        numbers["best"] = best
    write_fragment(params.shared.reports_dir, "evaluate", 60, "Evaluation", paras, tables, figs, numbers,
                   seconds=time.perf_counter() - t0)  # fmt: skip
    head = {f"final_bpb_{k}": v.get("bpb_target") for k, v in metrics["runs"].items()}
    if best:
        head |= {"best_run": best, "best_speedup_vs_scratch": metrics["runs"][best].get("speedup_vs_scratch")}
    return write_headline(params, "evaluate", head)
