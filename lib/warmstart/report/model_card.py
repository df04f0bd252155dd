"""The model card (``reports/model_card/README.md``) of the study's best run.

It describes the run with the lowest final target bits per byte
(``reports/evaluate/eval.json``), in the style of the seeds' cards: metadata
header, architecture, training details and hyperparameters, tokenizer,
evaluation, and a usage example that runs against the saved model. Every
run-specific word comes from the run: language names and codes
(:func:`warmstart.report.build.language`), the base model and training text with
its licence (:func:`~warmstart.report.build.base_model`,
:func:`~warmstart.report.build.corpus_sources`), the final model's config and run
record, and the example sentence (the first held-out pair of the translation
probe, ``reports/evaluate/translations.csv``, else ``base.samples``).

The card follows the report's rules: numbers with their 95% intervals where
the evaluation made them; the run is called the study's *best* only when
:func:`warmstart.report.evidence.ranking` finds it distinguishable from every other
run (which needs the measured run-to-run spread), otherwise it is "the lowest"
and the card names the runs within noise of it; no MFU unless it can be stated
against a stated, reliable peak (:func:`warmstart.flops.throughput`), only
tokens/s and achieved FLOP/s.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from typing import Any

from warmstart.describe import (
    CorpusSource,
    ModelInfo,
    ReportError,
    article,
    base_model,
    corpus_sources,
    duration,
    fmt,
    fmt_ci,
    fmt_flops,
    join_words,
    language,
    model_info,
)
from warmstart.report.labels import Labels


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def example_code(model_path: str, tokenizer_path: str, prompt: str, max_new_tokens: int = 32) -> str:
    """The card's usage example (runs from the project root against the saved model)."""
    return f"""import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({tokenizer_path!r})
model = AutoModelForCausalLM.from_pretrained({model_path!r}, use_safetensors=True).eval()

# NorMistral-style zero-shot translation prompt; documents start after an EOS token, as in training
prompt = {prompt!r}
ids = [tokenizer.eos_token_id] + tokenizer(prompt, add_special_tokens=False).input_ids
with torch.no_grad():
    out = model.generate(torch.tensor([ids]), max_new_tokens={max_new_tokens}, do_sample=False,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
print(tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).split("\\n")[0].strip())
"""


def example_from_card(card: str) -> str:
    """The python block of a model card (for running the example)."""
    start = card.index("```python\n") + len("```python\n")
    return card[start : card.index("```", start)]


def example_text(params: Any) -> str:
    """A source-language sentence for the example: the translation probe's first held-out pair, else a base sample."""
    path = params.report_path("evaluate", "translations.csv")
    if path.is_file():
        with open(path, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                if (row.get("source") or "").strip():
                    return row["source"].strip()
    samples = params.base.samples
    return samples[0] if samples else "Hello."


def _header(params: Any, run: Mapping, base: ModelInfo, sources: Sequence[CorpusSource]) -> str:
    sh = params.shared
    isos = list(dict.fromkeys([language(sh.target_lang).iso, language(sh.source_lang).iso]))
    if base.name:  # the weights derive from a loaded model: its licence applies
        lines = ["---", "license: other", "license_name: base-model-license"]
        if base.name == base.model_id:
            lines.append(f"license_link: https://huggingface.co/{base.model_id}")
    else:
        lines = ["---", "license: apache-2.0"]
    lines += ["language:", *(f"  - {i}" for i in isos)]
    if base.name:
        lines += ["base_model:", f"  - {base.model_id}"]
    datasets = [s.dataset for s in sources if s.dataset]
    if datasets:
        lines += ["datasets:", *(f"  - {d}" for d in datasets)]
    kind_tag = "vocabulary-swap" if run["kind"] == "swap" else run["kind"]
    lines += [
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags:",
        "  - warmstart",
        f"  - {run.get('method') or run['kind']}",
        f"  - {kind_tag}",
        "---",
    ]
    return "\n".join(lines)


def _standing(run: str, rk: Mapping, tgt_name: str, ev: Mapping) -> str:
    """Where the run stands: 'the study's best run by ...' only when the ranking shows it."""
    value = fmt_ci(ev.get("bpb_target"), ev.get("bpb_target_ci"))
    if rk.get("best") == run:
        return f"it is the study's best run by held-out {tgt_name} bits per byte ({value}), beyond run-to-run noise"
    head = f"it has the lowest held-out {tgt_name} bits per byte of the study's runs ({value})"
    if rk.get("lowest") != run:
        return f"its held-out {tgt_name} bits per byte is {value}"
    if rk.get("tied"):
        return head + f", but {join_words(rk['tied'])} {'is' if len(rk['tied']) == 1 else 'are'} within noise of it"
    if not rk.get("seed_measured"):
        return head + "; with one seed per run and no measured run-to-run spread, it is not shown to be the best"
    return head


def _intro(
    params: Any,
    name: str,
    run: Mapping,
    ev: Mapping,
    final: ModelInfo,
    base: ModelInfo,
    corpus: str,
    rk: Mapping | None = None,
) -> str:
    src, tgt = language(params.shared.source_lang), language(params.shared.target_lang)
    last = sorted(run["checkpoints"], key=lambda c: c["step"])[-1]
    trained = f"trained on {last['bytes'] / 1e6:.2f} MB of the {tgt.name} text of {corpus}"
    start = {
        "swap": f"It starts from {base.describe(src)}, with the vocabulary swapped for a {tgt.name} tokenizer "
        f"(`{run.get('method')}` initialisation of the new embeddings), and was then {trained}.",
        "original": f"It starts from {base.describe(src)} and keeps its {src.name} tokenizer; it was then {trained}.",
        "scratch": f"It is the study's baseline, not a warm start: the base architecture with a {tgt.name} tokenizer "
        f"and random weights, {trained}.",
    }.get(run["kind"], f"It was {trained}.")
    adapted = f"adapted from {src}" if run["kind"] != "scratch" else "trained from scratch"
    standing = _standing(run["name"], rk or {"best": run["name"]}, tgt.name, ev)
    return (
        f"{name} is {article(final.noun)} {final.noun} causal language model for {tgt}, {adapted} by the "
        f"warmstart study; {standing}. {start}"
    )


def _throughput_rows(run: Mapping, throughput: Mapping | None) -> list[list[Any]]:
    """Tokens/s and achieved FLOP/s; MFU only when it can be stated (else why not)."""
    if throughput is None:
        from warmstart.evaluate.runs import read_log_records
        from warmstart.flops import throughput as measure

        throughput = measure(read_log_records(dict(run)), run.get("flops_per_token"), run.get("peak"))
    t = throughput
    rows = [
        [
            "throughput",
            f"{t['tokens_per_s']:,.0f} tokens/s (median of the step log), {fmt_flops(t['achieved_flops'])} achieved"
            if t.get("tokens_per_s")
            else "–",
        ]
    ]
    if t.get("mfu_stated") is not None:
        peak = t.get("peak") or {}
        rows.append(
            [
                "MFU",
                f"{100 * t['mfu_stated']:.1f}% of {fmt_flops(peak.get('flops'))} "
                f"({peak.get('source')} peak, {peak.get('dtype')})",
            ]
        )
    else:
        rows.append(["MFU", "not stated: " + ("; ".join(t.get("reasons") or []) or "no stated peak")])
    return rows


def model_card(
    params: Any,
    run: Mapping,
    eval_json: Mapping,
    fragments: Sequence[Mapping] = (),
    base: ModelInfo | None = None,
    sources: Sequence[CorpusSource] | None = None,
    ranking: Mapping | None = None,
    throughput: Mapping | None = None,
) -> str:
    """The README.md of the lowest run's final model (``base``/``sources``: as described for the report;
    ``ranking``: :func:`warmstart.report.evidence.ranking`, computed from ``eval_json`` and the seed spread when not
    given; ``throughput``: the run's :func:`warmstart.flops.throughput`, from its log when not given)."""
    from warmstart.evaluate.probes import translation_prompt
    from warmstart.evaluate.seed_spread import spread_for
    from warmstart.report.evidence import ranking as rank_runs

    sh = params.shared
    src, tgt = language(sh.source_lang), language(sh.target_lang)
    base = base or base_model(params)
    sources = corpus_sources(params) if sources is None else sources
    final = run["final"]
    cfg = run.get("model_config")  # the pretrain stage records it: the report reads no model dir
    if not cfg:
        raise ReportError(f"the run record of {run['name']!r} has no model_config (rerun its pretrain stage)")
    ev = eval_json["runs"][run["name"]]
    last = sorted(run["checkpoints"], key=lambda c: c["step"])[-1]
    corpus = join_words([s.text for s in sources])
    name = f"warmstart-{tgt.iso}-{run['name']}"
    arch = [
        ["architecture", (cfg.get("architectures") or [cfg.get("model_type")])[0]],
        ["layers", cfg.get("num_hidden_layers")],
        ["hidden dimension", cfg.get("hidden_size")],
        ["intermediate dimension", cfg.get("intermediate_size")],
        ["query heads / key-value heads", f"{cfg.get('num_attention_heads')} / {cfg.get('num_key_value_heads')}"],
        ["vocabulary size", cfg.get("vocab_size")],
        ["max positions", cfg.get("max_position_embeddings")],
        ["RoPE theta", cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta")],
        ["tied embeddings", bool(cfg.get("tie_word_embeddings"))],
        ["parameters", run.get("params_count")],
    ]
    pt = params.pretrain
    train = [
        ["base model", base.name or f"{article(base.noun)} {base.noun} trained here on {src.name} text"],
        ["initialisation", f"{run['kind']}" + (f" ({run['method']})" if run.get("method") else "")],
        ["training text", f"{tgt.name}: {corpus}"],
        ["training tokens", last.get("tokens")],
        ["training bytes", f"{last['bytes'] / 1e6:.2f} MB (UTF-8)"],
        ["steps", last["step"]],
        ["sequence length", run.get("seq_len", pt.seq_len)],
        ["batch", f"{pt.micro_batch * pt.grad_accum} × {pt.seq_len} tokens (sequences × length)"],
        *(
            [
                f"phase {ph['name']} ({', '.join(ph['train']) if ph['train'] else 'full model'})",
                f"{ph['steps']} steps, lr {ph['lr']:g}, {ph['lr_schedule']}, warm-up {ph['warmup_steps']}, "
                f"min lr ratio {ph['min_lr_ratio']:g}; {ph['optimizer']} (betas {', '.join(map(str, ph['betas']))}, "
                f"eps {ph['eps']:g}), weight decay {ph['weight_decay']:g}, clip {ph['max_grad_norm']}; rows "
                + " + ".join(f"{c} {w:g}" for c, w in ph["mix"].items()),
            ]
            for ph in run.get("plan")  # the run's own phases; else params' (scratch trains everything in each)
            or [p.model_dump(mode="json") | ({"train": []} if run["kind"] == "scratch" else {}) for p in pt.phases]
        ),
        ["masked share (hybrid objective)", run.get("masked_share", pt.masked_share)],
        [
            "theoretical compute",
            fmt_flops(float(run["flops_per_token"]) * last["tokens"], per_s=False)
            if run.get("flops_per_token") and last.get("tokens")
            else "–",
        ],
        ["wall time", duration(run.get("seconds")) or "–"],
        *_throughput_rows(run, throughput),
    ]
    toknums = next((f.get("numbers") or {} for f in fragments if f.get("stage") == "tokenizer"), {})
    tok_rows = [["kind", params.tokenizer.kind], ["vocabulary", run.get("vocab_size")], ["path", run["tokenizer"]]]
    tok_labels = Labels(
        sh.source_lang,
        sh.target_lang,
        next((f.get("labels") or {} for f in fragments if f.get("stage") == "tokenizer"), {}),
    )
    tok_rows += [[tok_labels.number(k), v] for k, v in toknums.items()]
    if ranking is None:
        final = {rn: d.get("bpb_target") for rn, d in eval_json["runs"].items()}
        ranking = rank_runs(final, eval_json, spread_for(params)[0])
    ev_rows = []
    for rn, d in eval_json["runs"].items():
        ev_rows.append(
            [
                ("**" + rn + "**") if rn == run["name"] else rn,
                fmt_ci(d.get("bpb_target"), d.get("bpb_target_ci")),
                fmt_ci(d.get("bpb_source"), d.get("bpb_source_ci")),
                fmt_ci(d.get("cloze_acc_target"), d.get("cloze_acc_target_ci")),
                fmt_ci(d.get("cloze_acc_norm_target"), d.get("cloze_acc_norm_target_ci")),
                fmt_ci(d.get("chrf"), d.get("chrf_ci"), 1),
                fmt_ci(d.get("masked_acc"), d.get("masked_acc_ci")),
            ]
        )
    chance = (eval_json.get("chance") or {}).get("cloze", 0.25)
    n_items = (eval_json.get("cloze_items") or {}).get("target")
    if any(d.get("bpb_target_ci") for d in eval_json["runs"].values()):
        noise = (
            "Brackets: 95% intervals of evaluation-text noise (bootstrap over the held-out paragraphs; Wilson "
            "intervals for accuracies)"
        )
    else:
        noise = (
            "Accuracies are on few items and bits per byte has no interval here (the evaluation predates "
            "per-text losses)"
        )
    seed_note = (
        "; run-to-run spread from reports/metrics/seed_spread.json"
        if ranking.get("seed_measured")
        else "; run-to-run (seed) spread not measured: differences of a few hundredths may be noise"
    )
    prompt = translation_prompt(example_text(params), sh.source_lang, sh.target_lang)
    code = example_code(final, run["tokenizer"], prompt)
    weights = (
        f"The weights derive from {base.model_id}: its licence applies." if base.name else "Apache-2.0 for the weights."
    )
    text_licences = "; ".join(f"{s.text}: {s.licence}" for s in sources)
    final_info = model_info(cfg, run.get("params_count"))
    parts = [
        _header(params, run, base, sources),
        f"# {name}",
        _intro(params, name, run, ev, final_info, base, corpus, ranking),
        f"*Disclaimer*: a research artefact, trained on {last['bytes'] / 1e6:.2f} MB of text and not finetuned to "
        "follow instructions.",
        "## Model details\n\n" + _md_table(["", "value"], arch),
        "## Training details\n\n" + _md_table(["", "value"], train),
        "## Tokenizer\n\n" + _md_table(["", "value"], tok_rows),
        "## Evaluation\n\nHeld-out test documents (never trained on, in any language). Bits per byte (lower is "
        f"better) on {tgt.name} and {src.name} text; cloze: HellaSwag-style accuracy (chance {chance:.2f}"
        + (f", {n_items} items" if n_items else "")
        + f"); chrF (0–100) of the zero-shot {src.name}-to-{tgt.name} "
        f"translation probe; masked-token accuracy for the hybrid objective. {noise}{seed_note}.\n\n"
        + _md_table(
            [
                "run",
                f"bpb {tgt.code}",
                f"bpb {src.code}",
                f"cloze acc. {tgt.code}",
                f"cloze acc./char {tgt.code}",
                "chrF",
                "masked-token acc.",
            ],
            ev_rows,
        ),
        "## Example usage\n\nRun from the project root (the paths are the study's outputs):\n\n```python\n"
        + code
        + "```",
        f"## License\n\n{weights} Training text: {text_licences}.",
    ]
    return "\n\n".join(parts) + "\n"
