"""Stages ``compress_prep``, ``compress@<variant>`` and ``compress``: Minitron's prune and distil.

Minitron-8B came from Nemotron-4 15B by pruning embedding channels, attention
heads and MLP width ranked by activation importance on a small calibration
set, then logit distillation from the teacher on under 3% of its data. Here
the teacher is the study's adapted model (``compress.teacher``: the
evaluation's best run, or a named run), optionally teacher-corrected
(``compress.teacher_correction``), and every variant lands near
``compress.non_embedding_ratio`` of its *non-embedding* parameters (the tiny
default's 8,192-row embeddings and head are most of the model; both counts are
reported):

``compress_prep``
    Teacher correction, when ``compress.teacher_correction.steps > 0`` (Minitron's later recipe, Sreenivas
    et al. 2024: the teacher briefly fine-tuned on the distillation text, which helps when that text differs
    from the teacher's own): the adapted model trained by the project's trainer on the students' target
    training text into ``data/compress/prep/teacher/final``, its bits per byte recorded before and after.
    That corrected model is then *the teacher* of everything below: importance is measured on it, the
    variants are pruned from it and distilled from it, and the report's teacher numbers are its own.
    With ``steps: 0`` (the default study: its students train on the teacher's own phase-2 text) the
    adapted model is the teacher, and ``prep.json`` records that correction was off.
    Activation importance on ``compress.calibration`` samples of target
    training text (and a random ranking, the ablation), and the masking check:
    target bits per byte with the 25% least important MLP neurons (then heads)
    zeroed against a random 25% (:mod:`warmstart.prune`).
``compress@<variant>``
    ``width_kd`` (width-pruned, distilled), ``depth_kd`` (depth-pruned to the
    same non-embedding size, distilled), ``width_ce`` (width-pruned, cross
    entropy only), ``random_kd`` (width-pruned by random importance,
    distilled), ``scratch`` (the width-pruned shape, random init, cross
    entropy). Each trains on the same target text, on no more bytes than the
    teacher's phase 2, through the project's trainer (teacher frozen; forward
    KL). Bits per byte at step-tagged checkpoints give bytes-to-reach curves.
``compress``
    ``reports/metrics/compress.json``, the report fragment and the card of the
    compressed model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from warmstart.io import write_json, write_jsonl
from warmstart.outputs import write_headline
from warmstart.runs import adapted_run, derived_run
from warmstart.stages.contract import declared
from warmstart.train.launch import (
    bpb_table,
    corpus_file,
    fresh_dir,
    launch,
    merge_logs,
    optim_fields,
    read_run,
    summarize_log,
)

_COMMON = (
    "shared.seed",
    "shared.source_lang",
    "shared.target_lang",
    "shared.data_dir",
    "shared.reports_dir",
    "vocab_swap.methods",
    "study.arms",
    "base.trust_remote_code",
    "compress.teacher",
)
PARAMS = {
    "compress_prep": (
        *_COMMON,
        "pretrain.seq_len",
        "pretrain.micro_batch",
        "compress.teacher_correction",
        "compress.calibration",
        "compress.masking_fraction",
        "compress.masking_draws",
        "compress.eval_bytes",
    ),
    "compress_run": (
        *_COMMON,
        "pretrain.seq_len",
        "pretrain.micro_batch",
        "compress.teacher_correction.steps",
        "compress.non_embedding_ratio",
        "compress.train",
        "compress.kd",
        "compress.tag_every",
        "compress.eval_bytes",
    ),
    "compress": (*_COMMON, "compress.variants", "compress.non_embedding_ratio"),
}
VARIANTS = {  # variant -> (axis, importance, distilled)
    "width_kd": ("width", "activation", True),
    "depth_kd": ("depth", "activation", True),
    "width_ce": ("width", "activation", False),
    "random_kd": ("width", "random", True),
    "scratch": ("width", None, False),
}


def adapted_teacher(params: Any) -> tuple[str, Path]:
    """The adapted run the teacher is (before any correction): its name and final model dir."""
    run = adapted_run(params, params.compress.teacher)
    return run.name, Path(read_run(params, run.name)["final"])


def corrected_dir(params: Any) -> Path:
    """Where ``compress_prep`` trains the corrected teacher (the trainer's out dir; the model is its ``final``)."""
    return params.path("compress", "prep", "teacher")


def teacher_dir(params: Any) -> tuple[str, Path]:
    """The teacher's run name and the model dir the variants are pruned and distilled from: the adapted run's
    final model, or its corrected copy when ``compress.teacher_correction.steps > 0``."""
    name, path = adapted_teacher(params)
    steps = params.compress.teacher_correction.steps
    if steps == 0:
        return name, path
    final = corrected_dir(params) / "final"
    if not (final / "config.json").is_file():
        raise FileNotFoundError(
            f"{final} is missing: compress.teacher_correction.steps is {steps}, so the corrected "
            "teacher comes from the compress_prep stage: run it first"
        )
    return name, final


def _train_config(params: Any, model_path: Path, out_dir: Path, optim: Any, **kw: Any) -> Any:
    """A run of ``model_path`` on the target training text (the students' and the correction's)."""
    from warmstart.train.loop import TrainConfig

    return TrainConfig(
        model_path=str(model_path),
        train_files={"target": [corpus_file(params, params.shared.target_lang)]},
        seq_len=params.pretrain.seq_len,
        micro_batch=params.pretrain.micro_batch,
        **optim_fields(optim),
        out_dir=str(out_dir),
        log_every=5,
        seed=params.shared.seed,
        keep_last=1,
        trust_remote_code=params.base.trust_remote_code,
        **kw,
    )


def correct_teacher(params: Any, original: Path, tok: Any) -> tuple[Path, dict[str, Any]]:
    """Minitron's teacher correction: the teacher's model dir to use, and the record for ``prep.json``.

    ``steps: 0``: ``original``, and a record saying correction was off. Otherwise ``original`` fine-tuned
    for ``steps`` on the target training text into :func:`corrected_dir` (``bpb_before``: the original's
    test bits per byte; the stage adds ``bpb_after``).
    """
    from warmstart.model import load_model

    tc = params.compress.teacher_correction
    if tc.steps == 0:
        return original, {"steps": 0, "corrected": False}
    t0 = time.perf_counter()
    out = corrected_dir(params)
    launch(_train_config(params, original, out, tc))
    log, _ = merge_logs([("correction", out)])
    before = bpb_table(load_model(original), tok, params, params.pretrain.seq_len, params.compress.eval_bytes)
    return out / "final", {
        "steps": tc.steps,
        "corrected": True,
        "lr": tc.lr,
        "from": str(original),
        "dir": str(out / "final"),
        "bytes": log[-1]["bytes"] if log else 0,
        "tokens": log[-1]["tokens"] if log else 0,
        "final_loss": summarize_log(log)["final_loss"],
        "bpb_before": before,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _calibration(params: Any, tok: Any) -> list:
    """``samples`` rows of ``seq_len`` target training tokens (the documents packed in order)."""
    import torch

    from warmstart.data.corpus import load_texts

    c = params.compress.calibration
    ids: list[int] = []
    for text in load_texts(params, params.shared.target_lang, "train"):
        ids += tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        if len(ids) >= c.samples * c.seq_len:
            break
    rows = torch.tensor(ids[: (len(ids) // c.seq_len) * c.seq_len]).view(-1, c.seq_len)[: c.samples]
    if len(rows) < c.samples:
        raise ValueError(
            f"compress.calibration.samples: the target training text gives only {len(rows)} rows of "
            f"{c.seq_len} tokens, {c.samples} asked for"
        )
    return list(rows.split(c.batch_size))


def masking_metric(params: Any, tok: Any) -> Any:
    """The masking check's metric: ``model -> target bits per byte`` on ``compress.eval_bytes`` of held-out text."""
    from warmstart.bpb import bits_per_byte, held_out_texts

    texts = held_out_texts(params, params.shared.target_lang, "val", params.compress.eval_bytes)
    return lambda m: bits_per_byte(m, tok, texts, params.pretrain.seq_len)["bits_per_byte"]


def head_bound(params: Any, max_masks: int = 4096) -> dict[str, Any]:
    """:func:`warmstart.prune.masking.head_mask_bound` on the study's teacher, with ``compress_prep``'s importance
    (``data/compress/prep/importance.json``) and the masking check's metric and fraction."""
    from transformers import AutoTokenizer

    from warmstart.model import load_model
    from warmstart.prune.importance import Importance
    from warmstart.prune.masking import head_mask_bound

    name, path = teacher_dir(params)
    imp_file = params.path("compress", "prep") / "importance.json"
    prep_file = params.report_path("compress", "prep.json")
    if not imp_file.is_file() or not prep_file.is_file():
        raise FileNotFoundError(
            f"{imp_file} or {prep_file} is missing: run the compress_prep stage first (dvc repro compress_prep)"
        )
    prep = json.loads(prep_file.read_text())
    if prep.get("teacher_dir") != str(path) or prep["masking"].get("fraction") != params.compress.masking_fraction:
        raise ValueError(
            f"{prep_file} is for teacher {prep.get('teacher_dir')} and masking fraction "
            f"{prep['masking'].get('fraction')}, the params now give {path} and "
            f"{params.compress.masking_fraction}: rerun compress_prep (dvc repro compress_prep)"
        )
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(path)
    res = head_mask_bound(
        load_model(path),
        Importance.from_json(imp_file.read_text()),
        masking_metric(params, tok),
        params.compress.masking_fraction,
        max_masks=max_masks,
    )
    return {"teacher": name, "teacher_dir": str(path), **res, "seconds": round(time.perf_counter() - t0, 1)}


def run_prep(params: Any) -> dict[str, Any]:
    """Importance (activation and random) and the masking check; ``data/compress/``, ``reports/compress/prep.json``."""
    from transformers import AutoTokenizer

    from warmstart.model import load_model
    from warmstart.prune import count_params, estimate_importance, masking_check, random_importance

    params = declared(params, "compress_prep", PARAMS["compress_prep"])
    t0 = time.perf_counter()
    c = params.compress
    name, original = adapted_teacher(params)
    tok = AutoTokenizer.from_pretrained(original)
    out = fresh_dir(params.path("compress", "prep"))
    path, correction = correct_teacher(params, original, tok)
    model = load_model(path)
    imp = estimate_importance(
        model, _calibration(params, tok), seq_agg=c.calibration.seq_agg, batch_agg=c.calibration.batch_agg
    )
    rnd = random_importance(model, params.shared.seed)
    write_json(out / "importance.json", imp.to_json())
    write_json(out / "random_importance.json", rnd.to_json())
    seq = params.pretrain.seq_len
    eval_fn = masking_metric(params, tok)
    check = masking_check(
        model,
        None,
        imp,
        fraction=c.masking_fraction,
        seed=params.shared.seed,
        eval_fn=eval_fn,
        n_random=c.masking_draws,
    )
    record = read_run(params, name)
    teacher_bpb = bpb_table(model, tok, params, seq, c.eval_bytes)
    if correction["corrected"]:
        correction["bpb_after"] = teacher_bpb
    detail = {  # the teacher's bytes and tokens: its run's, plus the correction's
        "teacher": name,
        "teacher_dir": str(path),
        "masking": check,
        "importance": imp.to_json(),
        "teacher_params": count_params(model),
        "teacher_bytes": _plus(record.get("bytes"), correction.get("bytes", 0)),
        "teacher_tokens": _plus(record.get("tokens"), correction.get("tokens", 0)),
        "teacher_phases": record.get("phases"),
        "teacher_init": record.get("init"),
        "teacher_correction": correction,
        "teacher_bpb": teacher_bpb,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(params.report_path("compress", "prep.json"), detail)
    return check


def _plus(a: int | None, b: int) -> int | None:
    return a if a is None or not b else a + b


def _target(params: Any, model: Any, axis: str) -> Any:
    from warmstart.prune import count_params, target_for_budget

    budget = round(count_params(model)["non_embedding"] * params.compress.non_embedding_ratio)
    return target_for_budget(model.config, budget, axis=axis)


def build_student(params: Any, variant: str, out: Path) -> Path:
    """The variant's starting model in ``out``: the pruned teacher, or the pruned shape at random init."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from warmstart.model import load_model, save_model
    from warmstart.prune import Importance, prune_model, save_pruned

    axis, ranking, _ = VARIANTS[variant]
    _, path = teacher_dir(params)
    teacher = load_model(path)
    tok = AutoTokenizer.from_pretrained(path)
    src = params.path("compress", "prep", "random_importance.json" if ranking == "random" else "importance.json")
    imp = Importance.from_json(json.loads(src.read_text()))
    pruned = prune_model(teacher, imp, _target(params, teacher, axis))
    if ranking is not None:
        return save_pruned(pruned, tok, out)
    torch.manual_seed(params.shared.seed)
    return save_model(AutoModelForCausalLM.from_config(pruned.config), tok, out)


def run_variant(params: Any, variant: str) -> dict[str, Any]:
    """Build and train one variant; ``data/runs/compress-<variant>``, ``reports/compress/<variant>.json``."""
    from transformers import AutoTokenizer

    from warmstart.model import count_params as n_params
    from warmstart.model import load_model
    from warmstart.prune import count_params
    from warmstart.train.loop import list_checkpoints

    params = declared(params, "compress_run", PARAMS["compress_run"])
    if variant not in VARIANTS:
        raise ValueError(f"compress.variants: unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    t0 = time.perf_counter()
    c = params.compress
    teacher_name, teacher = teacher_dir(params)
    r = derived_run("compress", variant)
    out = fresh_dir(r.dir(params))
    init = build_student(params, variant, r.init_dir(params))
    _, _, distil = VARIANTS[variant]
    kd = (
        dict(teacher_path=str(teacher), kd_temperature=c.kd.temperature, kd_ce_share=c.kd.ce_share, kd_top_k=c.kd.top_k)
        if distil
        else {}
    )
    launch(_train_config(params, init, out / "train", c.train, tag_every=c.tag_every, **kd))
    log, _ = merge_logs([("train", out / "train")])
    fresh_dir(r.record_dir(params))
    write_jsonl(r.log(params), log)
    tok = AutoTokenizer.from_pretrained(init)
    final = out / "train" / "final"
    by_step = {rec["step"]: rec for rec in log}
    curve = []
    for ck in [None, *list_checkpoints(out / "train" / "checkpoints")]:
        step = 0 if ck is None else int(ck.name[4:])
        model = load_model(init if ck is None else ck)
        bpb = bpb_table(model, tok, params, params.pretrain.seq_len, c.eval_bytes)
        rec = by_step.get(step, {})
        curve.append(
            {
                "step": step,
                "bytes": rec.get("bytes", 0),
                "tokens": rec.get("tokens", 0),
                **{f"bpb_{k}": v for k, v in bpb.items()},
            }
        )
    model = load_model(final)
    counts = count_params(model)
    info = {
        "name": r.name,
        "kind": r.kind,
        "method": variant,
        "teacher": teacher_name,
        "teacher_dir": str(teacher),
        "distilled": distil,
        "init": str(init),
        "final": str(final),
        "log": str(r.log(params)),
        "params_count": n_params(model),
        "params": counts,
        "vocab_size": len(tok),
        "model_config": json.loads(model.config.to_json_string()),
        "tokens": log[-1]["tokens"] if log else 0,
        "bytes": log[-1]["bytes"] if log else 0,
        **summarize_log(log),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(r.record(params), info)
    write_json(params.report_path("compress", f"{variant}.json"), {**info, "curve": curve})
    tgt, src = params.shared.target_lang, params.shared.source_lang
    return write_headline(
        params,
        f"compress/{variant}",
        {
            "non_embedding_params": counts["non_embedding"],
            "total_params": counts["total"],
            "training_bytes": info["bytes"],
            f"final_bpb_{tgt}": curve[-1][f"bpb_{tgt}"],
            f"final_bpb_{src}": curve[-1][f"bpb_{src}"],
            f"init_bpb_{tgt}": curve[0][f"bpb_{tgt}"],
        },
    )


def run(params: Any, show: bool = False) -> dict[str, Any]:
    """Collect every variant against the teacher and scratch: metrics, figures, fragment and card."""
    from warmstart.prune.summary import collect

    params = declared(params, "compress", PARAMS["compress"])
    return collect(params, show=show)
