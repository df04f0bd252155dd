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

import time
from typing import Any

from warmstart.io import write_json, write_jsonl
from warmstart.outputs import write_headline
from warmstart.prune.students import build_student, check_variant, distillation, student_curve, student_record
from warmstart.prune.teacher import (
    adapted_teacher,
    calibration_batches,
    correct_teacher,
    masking_metric,
    teacher_dir,
    teacher_record,
    train_config,
)
from warmstart.runs import derived_run
from warmstart.stages.contract import SHARED, declared
from warmstart.train.launch import bpb_table, fresh_dir, launch, merge_logs

_COMMON = (
    *SHARED,
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


def run_prep(params: Any) -> dict[str, Any]:
    """Importance (activation and random) and the masking check; ``data/compress/``, ``reports/compress/prep.json``."""
    from transformers import AutoTokenizer

    from warmstart.model import load_model
    from warmstart.prune import estimate_importance, masking_check, random_importance

    params = declared(params, "compress_prep", PARAMS["compress_prep"])
    t0 = time.perf_counter()
    c = params.compress
    name, original = adapted_teacher(params)
    tok = AutoTokenizer.from_pretrained(original)
    out = fresh_dir(params.path("compress", "prep"))
    path, correction = correct_teacher(params, original, tok)
    model = load_model(path)
    imp = estimate_importance(
        model, calibration_batches(params, tok), seq_agg=c.calibration.seq_agg, batch_agg=c.calibration.batch_agg
    )
    rnd = random_importance(model, params.shared.seed)
    write_json(out / "importance.json", imp.to_json())
    write_json(out / "random_importance.json", rnd.to_json())
    check = masking_check(
        model,
        None,
        imp,
        fraction=c.masking_fraction,
        seed=params.shared.seed,
        eval_fn=masking_metric(params, tok),
        n_random=c.masking_draws,
    )
    teacher_bpb = bpb_table(model, tok, params, params.pretrain.seq_len, c.eval_bytes)
    detail = teacher_record(params, name, path, model, imp, check, correction, teacher_bpb)
    write_json(params.report_path("compress", "prep.json"), detail | {"seconds": round(time.perf_counter() - t0, 1)})
    return check


def run_variant(params: Any, variant: str) -> dict[str, Any]:
    """Build and train one variant; ``data/runs/compress-<variant>``, ``reports/compress/<variant>.json``."""
    from transformers import AutoTokenizer

    params = declared(params, "compress_run", PARAMS["compress_run"])
    check_variant(variant)
    t0 = time.perf_counter()
    c = params.compress
    teacher = teacher_dir(params)
    r = derived_run("compress", variant)
    out = fresh_dir(r.dir(params))
    init = build_student(params, variant, r.init_dir(params))
    kd = distillation(params, variant, teacher[1])
    launch(train_config(params, init, out / "train", c.train, tag_every=c.tag_every, **kd))
    log, _ = merge_logs([("train", out / "train")])
    fresh_dir(r.record_dir(params))
    write_jsonl(r.log(params), log)
    tok = AutoTokenizer.from_pretrained(init)
    curve = student_curve(params, init, out / "train", log, tok)
    info = student_record(params, r, variant, teacher, init, out / "train" / "final", tok, log)
    info["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(r.record(params), info)
    write_json(params.report_path("compress", f"{variant}.json"), {**info, "curve": curve})
    tgt, src = params.shared.target_lang, params.shared.source_lang
    return write_headline(
        params,
        f"compress/{variant}",
        {
            "non_embedding_params": info["params"]["non_embedding"],
            "total_params": info["params"]["total"],
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
