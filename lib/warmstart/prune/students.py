"""The compress stages' students: the variants, their starting models, their curves and their records.

``width_kd`` (width-pruned, distilled), ``depth_kd`` (depth-pruned to the same non-embedding size, distilled),
``width_ce`` (width-pruned, cross entropy only), ``random_kd`` (width-pruned by random importance, distilled),
``scratch`` (the width-pruned shape, random init, cross entropy). Every variant lands near
``compress.non_embedding_ratio`` of the teacher's *non-embedding* parameters (:mod:`warmstart.prune.teacher`
says which model the teacher is).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from warmstart.prune.teacher import teacher_dir
from warmstart.train.launch import bpb_table, summarize_log

VARIANTS = {  # variant -> (axis, importance, distilled)
    "width_kd": ("width", "activation", True),
    "depth_kd": ("depth", "activation", True),
    "width_ce": ("width", "activation", False),
    "random_kd": ("width", "random", True),
    "scratch": ("width", None, False),
}


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"compress.variants: unknown variant {variant!r}; known: {', '.join(VARIANTS)}")


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


def distillation(params: Any, variant: str, teacher: Path) -> dict[str, Any]:
    """The trainer's distillation fields for a distilled variant (teacher frozen, forward KL); ``{}`` otherwise."""
    if not VARIANTS[variant][2]:
        return {}
    kd = params.compress.kd
    return dict(teacher_path=str(teacher), kd_temperature=kd.temperature, kd_ce_share=kd.ce_share, kd_top_k=kd.top_k)


def student_curve(params: Any, init: Path, train_dir: Path, log: list[dict], tok: Any) -> list[dict[str, Any]]:
    """Bits per byte of the starting model (step 0) and of every step-tagged checkpoint, with the bytes and
    tokens seen: the bytes-to-reach curve."""
    from warmstart.model import load_model
    from warmstart.train.checkpoint import list_checkpoints

    by_step = {rec["step"]: rec for rec in log}
    curve = []
    for ck in [None, *list_checkpoints(train_dir / "checkpoints")]:
        step = 0 if ck is None else int(ck.name[4:])
        model = load_model(init if ck is None else ck)
        bpb = bpb_table(model, tok, params, params.pretrain.seq_len, params.compress.eval_bytes)
        rec = by_step.get(step, {})
        curve.append(
            {
                "step": step,
                "bytes": rec.get("bytes", 0),
                "tokens": rec.get("tokens", 0),
                **{f"bpb_{k}": v for k, v in bpb.items()},
            }
        )
    return curve


def student_record(
    params: Any, run: Any, variant: str, teacher: tuple[str, Path], init: Path, final: Path, tok: Any, log: list[dict]
) -> dict[str, Any]:
    """The variant's ``run.json`` without its ``seconds``: teacher, starting and final model, sizes, the final
    model's config, bytes and tokens trained, the log's summary."""
    from warmstart.model import count_params as n_params
    from warmstart.model import load_model
    from warmstart.prune import count_params

    model = load_model(final)
    return {
        "name": run.name,
        "kind": run.kind,
        "method": variant,
        "teacher": teacher[0],
        "teacher_dir": str(teacher[1]),
        "distilled": VARIANTS[variant][2],
        "init": str(init),
        "final": str(final),
        "log": str(run.log(params)),
        "params_count": n_params(model),
        "params": count_params(model),
        "vocab_size": len(tok),
        "model_config": json.loads(model.config.to_json_string()),
        "tokens": log[-1]["tokens"] if log else 0,
        "bytes": log[-1]["bytes"] if log else 0,
        **summarize_log(log),
    }
