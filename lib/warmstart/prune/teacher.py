"""The compress stages' teacher: which model it is, its correction, its calibration text and the masking check.

The teacher is the study's adapted model (``compress.teacher``: the evaluation's best run, or a named run). With
``compress.teacher_correction.steps > 0`` it is first corrected (Minitron's later recipe, Sreenivas et al. 2024:
the teacher briefly fine-tuned on the distillation text, which helps when that text differs from the teacher's
own) into ``data/compress/prep/teacher/final``, and that corrected model is the teacher of everything after:
importance, pruning, distillation and the report's teacher numbers.

Also here: the activation-importance calibration batches, the masking check's metric, the record of the teacher
(``reports/compress/prep.json``) and the exhaustive head-mask bound on it (``python -m warmstart.prune bound``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from warmstart.data.tokenize import token_dir
from warmstart.runs import adapted_run
from warmstart.train.launch import bpb_table, launch, merge_logs, optim_fields, read_run, summarize_log


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


def train_config(params: Any, model_path: Path, out_dir: Path, optim: Any, **kw: Any) -> Any:
    """A run of ``model_path`` on the target training text (the students' and the correction's)."""
    from warmstart.train.config import TrainConfig

    return TrainConfig(
        model_path=str(model_path),
        train_files={"target": [str(token_dir(params, "target", "target"))]},
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
    test bits per byte; :func:`teacher_record` adds ``bpb_after``).
    """
    from warmstart.model import load_model

    tc = params.compress.teacher_correction
    if tc.steps == 0:
        return original, {"steps": 0, "corrected": False}
    t0 = time.perf_counter()
    out = corrected_dir(params)
    launch(train_config(params, original, out, tc))
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


def calibration_batches(params: Any, tok: Any) -> list:
    """``samples`` rows of ``seq_len`` target training tokens (the documents packed in order), in batches."""
    import torch

    from warmstart.data.corpus import iter_split_texts

    c = params.compress.calibration
    ids: list[int] = []
    for text in iter_split_texts(params, params.shared.target_lang, "train"):
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


def _plus(a: int | None, b: int) -> int | None:
    return a if a is None or not b else a + b


def teacher_record(
    params: Any,
    name: str,
    path: Path,
    model: Any,
    importance: Any,
    check: dict[str, Any],
    correction: dict[str, Any],
    teacher_bpb: dict[str, float],
) -> dict[str, Any]:
    """``reports/compress/prep.json`` without its ``seconds``: the teacher (its run, model dir, size, bytes and
    tokens: its run's plus the correction's, its bits per byte), the correction, the importance and the masking
    check. A corrected teacher's ``teacher_bpb`` is also its correction's ``bpb_after``."""
    from warmstart.prune.arch import count_params

    record = read_run(params, name)
    if correction["corrected"]:
        correction["bpb_after"] = teacher_bpb
    return {
        "teacher": name,
        "teacher_dir": str(path),
        "masking": check,
        "importance": importance.to_json(),
        "teacher_params": count_params(model),
        "teacher_bytes": _plus(record.get("bytes"), correction.get("bytes", 0)),
        "teacher_tokens": _plus(record.get("tokens"), correction.get("tokens", 0)),
        "teacher_phases": record.get("phases"),
        "teacher_init": record.get("init"),
        "teacher_correction": correction,
        "teacher_bpb": teacher_bpb,
    }


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
