"""The chat stage's work: prepare the start model and data, train one run per prompt-loss weight, measure
them all on the held-out items (:func:`run_study`); then the headline, fragment and card (:func:`collect`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def run_study(params: Any) -> dict[str, Any]:
    """Prepare, train every prompt-loss weight and measure; writes and returns ``reports/chat/chat.json``."""
    from transformers import AutoTokenizer

    from warmstart.chat import run as cr
    from warmstart.chat import summary as cs
    from warmstart.io import read_jsonl, write_json
    from warmstart.model import load_model
    from warmstart.runs import adapted_run
    from warmstart.train.launch import fresh_dir, launch, read_run, summarize_log

    t0 = time.perf_counter()
    c = params.chat
    src_run = adapted_run(params, c.run)
    src = Path(read_run(params, src_run.name)["final"])
    root = fresh_dir(params.path("chat"))
    init = root / "init"
    info = {"source_run": src_run.name, "source_model": str(src), "init": str(init)}
    info["tokens_added"] = cr.prepare(src, init, params)
    tok = AutoTokenizer.from_pretrained(init)
    info["items"] = cr.build_items(params, tok, root / "items")
    info["shards"] = cr.build_shards(params, tok, root / "items" / "train.jsonl", root / "shards")
    ev = cr.eval_items(params, root / "items" / "test.jsonl")
    refs = [it["reference"] for it in ev["translate"]]

    adapted = load_model(src)
    adapted_tok = AutoTokenizer.from_pretrained(src)
    zs = cr.zero_shot(adapted, adapted_tok, params, ev)
    zs_chrf = cr.cm.chrf(zs, refs) if refs else []
    src0 = cr.source_bpb(adapted, adapted_tok, params)
    del adapted
    before_m = cr.measure_chat(load_model(init), tok, params, ev)
    before = cs.run_numbers(before_m, before_m, zs_chrf, [], src0, src0)
    before["chrf"] = cr.cm.mean_interval(zs_chrf) if zs_chrf else None
    before["zero_shot_examples"] = zs[:3]

    runs: dict[str, dict] = {}
    raw: dict[str, dict] = {}
    corpora = cr.train_corpora(params, tok, info["shards"]["parts"])
    for w in [c.prompt_loss_weight, *c.ablation]:
        name = cr.run_name(w)
        out = root / "runs" / name
        launch(cr.train_config(params, init, corpora, w, out, root / "tokens"))
        model = load_model(out / "final")
        m = cr.measure_chat(model, tok, params, ev)
        src_after = cr.source_bpb(model, tok, params)
        del model
        log = read_jsonl(out / "log.jsonl")
        runs[name] = {
            "prompt_weight": w,
            "final": str(out / "final"),
            "steps": c.train.steps,
            "tokens": log[-1]["tokens"] if log else 0,
            **summarize_log(log),
            **cs.run_numbers(m, before_m, zs_chrf, refs, src_after, src0),
        }
        raw[name] = m
    main = cr.run_name(c.prompt_loss_weight)
    for name in runs:
        runs[name]["vs_main"] = cs.paired_difference(
            raw[name]["response_nll"], raw[main]["response_nll"], raw[name]["response_bytes"]
        )
    info |= {"final": runs[main]["final"], "steps": c.train.steps, "tokens": runs[main]["tokens"]}
    seconds = time.perf_counter() - t0
    detail = {
        **info,
        "before": before,
        "runs": runs,
        "main": main,
        "seconds": round(seconds, 1),
        "eval": {"turns": len(ev["turns"]), "translations": len(ev["translate"])},
        "example": ev["turns"][0]["messages"],
    }
    write_json(params.report_path("chat", "chat.json"), detail)
    return detail


def collect(params: Any, detail: dict[str, Any]) -> dict[str, Any]:
    """The headline (``reports/metrics/chat.json``), the report fragment and the chat model's card."""
    from warmstart.chat import run as cr
    from warmstart.chat import summary as cs
    from warmstart.fragments import table, write_fragment
    from warmstart.io import write_text
    from warmstart.outputs import write_headline

    c, runs, main, before = params.chat, detail["runs"], detail["main"], detail["before"]
    src_name, seconds = detail["source_run"], detail["seconds"]
    r = runs[main]
    head = {
        "adherence": r["adherence"]["acc"],
        "adherence_before": before["adherence"]["acc"],
        "response_bpb": r["response"]["bpb"],
        "response_bpb_before": before["response"]["bpb"],
        "response_bpb_diff_hi": (r["response_vs_before"]["ci"] or [None, None])[1],
        "chrf": r["chrf"]["mean"] if r.get("chrf") else None,
        "chrf_zero_shot": before["chrf"]["mean"] if before.get("chrf") else None,
        "source_bpb_change": r["forgetting"]["diff"],
    }
    for name, x in runs.items():
        if name != main:
            head[f"response_bpb_pw{x['prompt_weight']:g}_vs_main".replace(".", "p")] = x["vs_main"]["diff"]
    goals = {
        "adherence_at_least_0p9": bool(r["adherence"]["acc"] >= 0.90),
        "adherence_before_at_most_0p05": bool(before["adherence"]["acc"] <= 0.05),
        "response_bpb_better": bool(r["response_vs_before"]["ci"] is not None and r["response_vs_before"]["ci"][1] < 0),
    }
    paras = [
        f"The adapted model `{src_name}` with Alfred-40B-1023's chat tokens ({c.token_init}-initialised rows) "
        f"fine-tuned for {c.train.steps} steps of {c.micro_batch * c.grad_accum} rows of {c.seq_len} tokens on "
        + ", ".join(f"{k} {v:.0%}" for k, v in c.mix.items())
        + f" (Alfred: 50/45/5). Held out: {detail['eval']['turns']} turns of the test chapters and "
        f"{detail['eval']['translations']} translation instructions.",
        f"Template adherence {r['adherence']['acc']:.2f} [{r['adherence']['lo']:.2f}, {r['adherence']['hi']:.2f}] "
        f"against {before['adherence']['acc']:.2f} before tuning; response bits per byte "
        f"{r['response']['bpb']:.3f} against {before['response']['bpb']:.3f} "
        f"(paired {r['response_vs_before']['diff']:+.3f} {cs._ci(r['response_vs_before'])}).",
        cs.ablation_paragraph(runs, main),
        "Goals: " + "; ".join(f"{cs.GOALS[k]}: {'met' if v else 'missed'}" for k, v in goals.items()) + ".",
    ]
    findings = [
        f"Chat tuning: template adherence {r['adherence']['acc']:.2f} (before {before['adherence']['acc']:.2f}); "
        f"held-out response bits per byte {r['response_vs_before']['diff']:+.3f} {cs._ci(r['response_vs_before'])}.",
    ]
    write_fragment(
        params.shared.reports_dir,
        "chat",
        88,
        "Chat fine-tuning (Alfred-40B-1023)",
        paras,
        [table(cs.rows(runs, before), "Chat models on held-out items (95% intervals)", cs.COLUMNS)],
        [],
        {"goals": goals, **head},
        seconds,
        findings=findings,
        labels=cs.labels(head),
    )
    card_dir = params.report_path("cards", "chat")
    card_dir.mkdir(parents=True, exist_ok=True)
    example = detail["example"]
    write_text(card_dir / "MODEL_CARD.md", cs.card(params, detail, r, cr.tokens_of(params), example, dict(c.mix)))
    return write_headline(params, "chat", head)
