"""The chat stage's numbers with intervals, its report fragment and the chat model's card."""

from __future__ import annotations

import json
import math
from typing import Any

from warmstart.chat import measure as cm
from warmstart.evaluate.intervals import accuracy_cell, bpb_interval, paired_difference

LN2 = math.log(2)


def bpb(nll: list[float], nbytes: list[int]) -> dict[str, Any]:
    ci = bpb_interval(nll, nbytes)
    return {"bpb": sum(nll) / sum(nbytes) / LN2, "ci": list(ci) if ci else None}


def run_numbers(m: dict, before: dict, zero_shot_chrf: list[float], refs: list[str], src: dict, src0: dict) -> dict:
    """One chat-format model's measures against the model before chat tuning (same items)."""
    chrf = cm.chrf(m["translations"], refs) if refs else []
    return {
        "response": bpb(m["response_nll"], m["response_bytes"]),
        "response_vs_before": paired_difference(m["response_nll"], before["response_nll"], m["response_bytes"]),
        "adherence": accuracy_cell(sum(m["adherent"]), len(m["adherent"])),
        "ended": sum(m["ended"]) / max(1, len(m["ended"])),
        "chrf": cm.mean_interval(chrf) if chrf else None,
        "chrf_vs_zero_shot": cm.paired_mean_difference(chrf, zero_shot_chrf) if chrf else None,
        "source_bpb": src["bits_per_byte"],
        "forgetting": paired_difference(src["doc_nll_nats"], src0["doc_nll_nats"], src["doc_bytes"]),
        "examples": m["examples"],
    }


def _ci(d: dict | None, key: str = "ci", fmt: str = "{:+.3f}") -> str:
    if not d or not d.get(key):
        return "n/a"
    lo, hi = d[key]
    return f"[{fmt.format(lo)}, {fmt.format(hi)}]"


def rows(runs: dict[str, dict], before: dict) -> list[list[Any]]:
    out = [
        [
            "before tuning",
            f"{before['response']['bpb']:.3f}",
            "—",
            f"{before['adherence']['acc']:.2f} [{before['adherence']['lo']:.2f}, {before['adherence']['hi']:.2f}]",
            f"{before['chrf']['mean']:.1f} (zero-shot)" if before.get("chrf") else "n/a",
            "—",
        ]
    ]
    for name, r in runs.items():
        a = r["adherence"]
        out.append(
            [
                f"{name} (prompt weight {r['prompt_weight']:g})",
                f"{r['response']['bpb']:.3f}",
                f"{r['response_vs_before']['diff']:+.3f} {_ci(r['response_vs_before'])}",
                f"{a['acc']:.2f} [{a['lo']:.2f}, {a['hi']:.2f}]",
                f"{r['chrf']['mean']:.1f} {_ci(r['chrf_vs_zero_shot'], fmt='{:+.1f}')}" if r.get("chrf") else "n/a",
                f"{r['forgetting']['diff']:+.4f} {_ci(r['forgetting'], fmt='{:+.4f}')}",
            ]
        )
    return out


GOALS = {
    "adherence_at_least_0p9": "template adherence at least 0.90",
    "adherence_before_at_most_0p05": "template adherence before tuning at most 0.05",
    "response_bpb_better": "held-out response bits per byte better than before (paired interval below 0)",
}
LABELS = {
    "adherence": "template adherence of the chat model (held-out turns)",
    "adherence_before": "template adherence before chat tuning",
    "response_bpb": "held-out response bits per byte, chat model",
    "response_bpb_before": "held-out response bits per byte before chat tuning",
    "response_bpb_diff_hi": "upper end of the paired 95% interval of response bits per byte, chat minus before",
    "chrf": "chrF on held-out translation instructions, chat model",
    "chrf_zero_shot": "chrF of the adapted model's zero-shot translations (NorMistral's prompt)",
    "source_bpb_change": "source-language bits per byte, chat model minus adapted model",
}


def labels(head: dict[str, Any]) -> dict[str, str]:
    """Human labels of the headline's keys, its goals and its ablation entries."""
    out = {**LABELS, **{f"goals.{k}": f"goal met: {v}" for k, v in GOALS.items()}}
    for key in head:
        if key.startswith("response_bpb_pw"):
            w = key[len("response_bpb_pw") : -len("_vs_main")].replace("p", ".")
            out[key] = f"response bits per byte, prompt-loss weight {w} minus the chat run's"
    return out


COLUMNS = [
    "model",
    "response bits/byte",
    "vs before [95% CI]",
    "adherence [95% CI]",
    "chrF (vs zero-shot) [CI]",
    "source bits/byte change [CI]",
]


def ablation_paragraph(runs: dict[str, dict], main: str) -> str:
    """The prompt-loss ablation against the main run, with paired intervals, and what the literature says."""
    m = runs[main]
    parts = []
    for name, r in runs.items():
        if name == main:
            continue
        d = r["vs_main"]
        verdict = (
            "indistinguishable from" if not d["distinguishable"] else ("worse than" if d["diff"] > 0 else "better than")
        )
        parts.append(
            f"prompt weight {r['prompt_weight']:g}: response bits per byte {d['diff']:+.4f} {_ci(d, fmt='{:+.4f}')} "
            f"against weight {m['prompt_weight']:g}, {verdict} it"
        )
    return (
        "Prompt-loss ablation (paired over the same held-out responses): " + "; ".join(parts) + ". Alfred kept the "
        "language-modelling loss on a part of its long-context prompts only; Shi et al. (NeurIPS 2024, 'Instruction "
        "tuning with loss over instructions') found prompt loss helps most when the instruction data are small "
        "and responses short, which this study's data are."
    )


def card(params: Any, info: dict, main: dict, tokens: dict[str, str], example: list[dict], mix: dict) -> str:
    """The chat model's card: the format with an example conversation, the data mix, the evaluation."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(info["final"])
    rendered = tok.apply_chat_template(example[:-1], tokenize=False, add_generation_prompt=True)
    a = main["adherence"]
    lines = [
        f"# {info['source_run']} chat ({params.shared.target_lang}), Alfred-40B-1023 format",
        "",
        f"The study's adapted model `{info['source_run']}` fine-tuned for chat: {info['steps']} steps of "
        f"{info['tokens']:,} tokens, prompt-loss weight {main['prompt_weight']:g}.",
        "",
        "## Chat format",
        "",
        "Special tokens " + ", ".join(f"`{t}`" for t in tokens.values()) + f"; generation stops at `{tokens['end']}`. "
        "The format is the tokenizer's chat template (`tokenizer.apply_chat_template`), with `{% generation %}` "
        "marks around assistant turns (`return_assistant_tokens_mask=True` gives the training mask).",
        "",
        "```",
        rendered,
        "```",
        "",
        "## Data",
        "",
        "Built from the corpus' train chapters, no network: translation instructions from aligned parallel "
        "paragraphs (both directions), 'continue this text' from consecutive paragraphs, and long-context "
        "retrieval tasks, mixed by rows with replay text: "
        + ", ".join(f"{k} {v:.0%}" for k, v in mix.items())
        + " (Alfred: 50 % short, 45 % long, 5 % web). Items counted: "
        + json.dumps(info["items"]["train"])
        + ".",
        "",
        "## Evaluation (held-out chapters)",
        "",
        f"- template adherence: {a['acc']:.2f} [{a['lo']:.2f}, {a['hi']:.2f}] of {a['n']} turns",
        f"- response bits per byte: {main['response']['bpb']:.3f}, "
        f"{main['response_vs_before']['diff']:+.3f} {_ci(main['response_vs_before'])} against the model before",
        *(
            [
                f"- chrF on translation instructions: {main['chrf']['mean']:.1f}, "
                f"{main['chrf_vs_zero_shot']['diff']:+.1f} {_ci(main['chrf_vs_zero_shot'], fmt='{:+.1f}')} against "
                "the adapted model's zero-shot NorMistral-format prompts"
            ]
            if main.get("chrf")
            else []
        ),
        f"- source-language bits per byte: {main['forgetting']['diff']:+.4f} "
        f"{_ci(main['forgetting'], fmt='{:+.4f}')} against the adapted model",
        "",
        f'Load: `AutoModelForCausalLM.from_pretrained("{info["final"]}")` and `AutoTokenizer` (plain transformers, '
        "safetensors).",
        "",
        "Limitations: a research artefact of a tiny study (one seed, CPU scale); not for use beyond it.",
    ]
    return "\n".join(lines) + "\n"
