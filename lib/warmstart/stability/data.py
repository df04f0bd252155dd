"""The study's data: the toy language pair or real files, and the target's held-out rows and loss."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from warmstart.stability.config import StabilityConfig

DATA_KEYS = ("source_train", "target_train", "target_val", "source_tokenizer", "target_tokenizer")


def toy_data(root: Path, cfg: StabilityConfig) -> dict[str, Any]:
    """The synthetic language pair of :mod:`warmstart.stability.ablations` (one BPE tokenizer over both languages), the
    target's last ``val_docs`` documents held out."""
    from warmstart.stability.ablations import make_assets

    assets = make_assets(Path(root), cfg.seed, cfg.toy_vocab_size)
    lines = Path(assets["files"]["target"][0]).read_text().splitlines()
    if len(lines) <= cfg.val_docs:
        raise ValueError(f"val_docs ({cfg.val_docs}) leaves no target training document (of {len(lines)})")
    train, val = Path(root) / "target_train.jsonl", Path(root) / "target_val.jsonl"
    train.write_text("".join(x + "\n" for x in lines[: -cfg.val_docs]))
    val.write_text("".join(x + "\n" for x in lines[-cfg.val_docs :]))
    return {
        "source_train": assets["files"]["source"],
        "target_train": [str(train)],
        "target_val": [str(val)],
        "source_tokenizer": assets["tokenizer"],
        "target_tokenizer": assets["tokenizer"],
        "kind": "toy",
    }


def check_data(data: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in DATA_KEYS if not data.get(k)]
    if missing:
        raise ValueError(f"data is missing {missing} (needs {', '.join(DATA_KEYS)})")
    out = dict(data)
    for k in ("source_train", "target_train", "target_val"):
        out[k] = [str(x) for x in ([out[k]] if isinstance(out[k], (str, Path)) else out[k])]
    out["source_tokenizer"], out["target_tokenizer"] = str(out["source_tokenizer"]), str(out["target_tokenizer"])
    out.setdefault("kind", "files")
    return out


def eval_rows(files: list[str], tokenizer_dir: str, seq_len: int, n: int):
    """The first ``n`` rows of ``seq_len`` tokens of the held-out documents, packed (EOS after each)."""
    import torch
    from transformers import AutoTokenizer

    from warmstart.data.jsonl import batches, iter_texts
    from warmstart.data.stream import expand

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids: list[int] = []
    # streamed in batches: only as much of the held-out files is read and tokenized as the n rows need
    for texts in batches(iter_texts(expand(files), "text"), 64):
        for x in tok(texts, add_special_tokens=False)["input_ids"]:
            ids += [*x, tok.eos_token_id]
        if len(ids) >= n * seq_len:
            break
    rows = len(ids) // seq_len
    if not rows:
        raise ValueError(f"the held-out files {files} hold fewer than seq_len ({seq_len}) tokens")
    return torch.tensor(ids[: min(rows, n) * seq_len]).view(-1, seq_len), len(tok)


def held_out_loss(model, rows, batch: int = 16) -> float | None:
    """Mean next-token cross-entropy (nats) of ``model`` on the held-out rows; None if not finite."""
    import torch

    was = model.training
    model.eval()
    tot = 0.0
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            x = rows[i : i + batch].to(next(model.parameters()).device)
            tot += float(model(input_ids=x, labels=x).loss) * len(x)
    model.train(was)
    v = tot / len(rows)
    return v if math.isfinite(v) else None
