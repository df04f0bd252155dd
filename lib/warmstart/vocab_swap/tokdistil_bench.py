"""``python -m warmstart.vocab_swap.bench --methods tokdistil``: Token Distillation's cost per token at
Mistral-Nemo width on this CPU, and its projection to the full model on one GPU (see :mod:`.bench`)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _jsonl_texts(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)["text"]


def tokdistil_worker(args: argparse.Namespace, old_tok: Any, new_tok: Any, embed: Any, head: Any) -> dict[str, Any]:
    """tokdistil's cost per token on this CPU and its projections (the module docstring)."""
    from transformers import MistralConfig, MistralForCausalLM

    from warmstart import vocab_swap as vs
    from warmstart.flops import GPU_PEAK_BF16
    from warmstart.vocab_swap.tokdistil import Frozen, forward_flops

    n_layers = args.tokdistil_model_layers
    cfg = MistralConfig(
        vocab_size=8,  # the rows come from the bench's matrices (inputs_embeds), not from the model
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=n_layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        head_dim=args.hidden // args.heads,
        max_position_embeddings=4096,
    )
    torch.manual_seed(args.seed)
    model = MistralForCausalLM(cfg).eval().requires_grad_(False)
    t0 = time.perf_counter()
    res = vs.swap_embeddings(embed, head, old_tok, new_tok, "fvt", seed=args.seed, pad_multiple=64)
    start_s = time.perf_counter() - t0
    rest = sorted(res.plan.combo.rows.tolist() + res.plan.random_rows.tolist())
    rng = np.random.default_rng(args.seed)
    tokens = sorted(rng.choice(rest, size=min(args.tokdistil_tokens, len(rest)), replace=False).tolist())
    opts = vs.TokDistilOptions(start="fvt", layers=[n_layers], lr=args.tokdistil_lr, output="start")
    info = vs.distil(
        model,
        vs.tokenizer_view(old_tok),
        vs.tokenizer_view(new_tok),
        tokens,
        res.embed,
        res.head,
        embed,
        head,
        None,
        None,
        _jsonl_texts(Path(args.prepared) / "focus_texts.jsonl"),
        opts,
        args.seed,
    )
    n = max(info["distilled"], 1)
    work_s = info["seconds_teacher"] + info["seconds_train"]
    rate = info["flops"] / work_s if work_s > 0 else float("nan")
    target = args.tokdistil_target_layer
    per_layer = Frozen(model).matmul_params(1)
    f_full = forward_flops(per_layer * target, target, args.hidden, opts.snippet_len)
    full = (info["positions_teacher"] + info["positions_student"] * (2 * opts.steps + 1)) * f_full / n
    peak = GPU_PEAK_BF16["H100"]
    gpu_s = {"at_peak": full / peak, f"at_mfu_{args.tokdistil_mfu}": full / (peak * args.tokdistil_mfu)}
    return {
        "options": opts.to_dict(),
        "model_layers_built": n_layers,
        "tokens_asked": len(tokens),
        "distilled": info["distilled"],
        "without_snippet": info["without_snippet"],
        "new_tokens_of_this_swap": len(rest),
        "start_fvt_seconds": round(start_s, 2),
        "snippet_seconds": info["seconds_snippets"],  # one pass over the text: a fixed cost, not per token
        "cpu_seconds_per_token": round(work_s / n, 3),
        "flops_per_token": info["flops_per_token"],
        "cpu_flop_rate": rate,
        "objective": info["objective"],
        "projection": {
            "full_layers": args.tokdistil_full_layers,
            "target_layer": target,
            "flops_per_token": full,
            "cpu_seconds_per_token": full / rate,
            "gpu": "H100 SXM, bf16 dense peak 989 TFLOP/s",
            "gpu_peak_flops": peak,
            "gpu_seconds_per_token": gpu_s,
            "gpu_hours_131072_tokens": {k: v * 131072 / 3600 for k, v in gpu_s.items()},
            "gpu_hours_this_swap": {k: v * len(rest) / 3600 for k, v in gpu_s.items()},
        },
    }
