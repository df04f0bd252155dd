"""The study's source model, ``data/models/base``: pretrained here or loaded, then its details record, the
report's table rows and its training figure (the pieces of the ``base`` stage, :mod:`warmstart.stages.base`).

``base.source: tiny`` pretrains the tiny Llama of ``base.model`` through the project's trainer; ``base.source:
hf`` loads ``base.model_id`` (safetensors only, ``trust_remote_code`` only when params say so).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from warmstart.flops import flops_per_token
from warmstart.io import read_jsonl, write_json, write_jsonl
from warmstart.model import count_params, load_model
from warmstart.outputs import save_figure
from warmstart.runs import BASE
from warmstart.train.checkpoint import export_checkpoint, list_checkpoints
from warmstart.train.launch import base_train_config, fresh_dir, launch, summarize_log


def build_base(params: Any, out: Path, model_dir: Path) -> tuple[Any, Any, list[dict]]:
    """The base model and tokenizer, saved to ``model_dir``, and the step log (empty for a loaded model).

    ``out`` is the base run's dir (``data/runs/base``). A loaded model leaves its ``run.json`` there and in the
    run's record dir; a trained one copies its step log to the record dir (``data/logs/base/log.jsonl``, what
    the spike stage reads)."""
    from transformers import AutoTokenizer

    b = params.base
    if b.source == "hf":
        from warmstart.model import save_model

        model = load_model(b.model_id, trust_remote_code=b.trust_remote_code)
        tok = AutoTokenizer.from_pretrained(b.tokenizer_id or b.model_id, trust_remote_code=b.trust_remote_code)
        save_model(model, tok, model_dir)
        write_json(out / "run.json", {"name": "base", "kind": "hf", "model_id": b.model_id})
        shutil.copytree(out, fresh_dir(BASE.record_dir(params)), dirs_exist_ok=True)
        return model, tok, []
    launch(base_train_config(params, out))
    export_checkpoint(list_checkpoints(out / "checkpoints")[-1], model_dir)
    log = read_jsonl(out / "log.jsonl")
    write_jsonl(fresh_dir(BASE.record_dir(params)) / "log.jsonl", log)
    return load_model(model_dir), AutoTokenizer.from_pretrained(model_dir), log


def base_details(
    model: Any, tok: Any, model_dir: Path, source: str, seq_len: int, bpb: dict, log: list[dict], t0: float
) -> dict[str, Any]:
    """The base model's details (``reports/base/base.json``): size, FLOPs per token at ``seq_len``, val bits
    per byte ``bpb`` by language, the training log's summary, and the seconds since ``t0``."""
    return {
        "source": source,
        "model": str(model_dir),
        "model_type": model.config.model_type,
        "architectures": model.config.architectures,
        "params": count_params(model),
        "vocab_size": len(tok),
        "flops_per_token": flops_per_token(model.config, seq_len),
        "val_bits_per_byte": bpb,
        "steps": len(log) and log[-1]["step"],
        "tokens": len(log) and log[-1]["tokens"],
        **summarize_log(log),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def base_rows(description: str, details: dict[str, Any], src: str, tgt: str) -> list[list[str]]:
    """The report's table of the base model (quantity, value) from :func:`base_details`."""
    bpb = details["val_bits_per_byte"]
    return [
        ["model", description],
        ["parameters", f"{details['params']:,}"],
        ["vocabulary", f"{details['vocab_size']:,}"],
        ["training tokens", f"{details['tokens']:,}"],
        [f"val bits/byte {src}", f"{bpb[src]:.3f}"],
        [f"val bits/byte {tgt}", f"{bpb[tgt]:.3f}"],
    ]


def plot_training(log: list[dict], path: str | Path, model_id: str | None) -> None:
    """Loss and learning rate against training tokens; for a loaded model (no log), a note that says so."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    if log:
        df = pd.DataFrame(log).assign(ktokens=lambda d: d["tokens"] / 1e3)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
        sns.lineplot(data=df, x="ktokens", y="loss", ax=axes[0])
        axes[0].set(title="Training loss", xlabel="training tokens (thousands)", ylabel="cross-entropy (nats/token)")
        sns.lineplot(data=df, x="ktokens", y="lr", ax=axes[1])
        axes[1].set(title="Learning rate", xlabel="training tokens (thousands)", ylabel="learning rate")
        for ax in axes:
            ax.xaxis.set_major_locator(plt.MaxNLocator(6))
        fig.tight_layout()
    else:  # a loaded HF model: no training log
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, f"loaded {model_id}: not trained here", ha="center", va="center")
        ax.set_axis_off()
    save_figure(fig, path)
