"""How the chat data path grows with its corpus: ``python -m warmstart.chat.bench --scales 1,10,30``.

Builds the items and role shards (:func:`warmstart.chat.run.build_items`, :func:`~warmstart.chat.run.
build_shards`) from the study's corpus repeated ``k`` times (each copy's pages renamed, so alignment and
items grow ``k``-fold), each scale in a fresh process, and prints the seconds and peak RSS per scale. Needs
the study's corpus (``data/corpus``) and the chat stage's start model (``data/chat/init``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _repeat(src: Path, dst: Path, k: int) -> int:
    """``src`` (a corpus split) written ``k`` times to ``dst`` with page and id suffixes; returns its bytes."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "w", encoding="utf-8") as out:
        for copy in range(k):
            with open(src, encoding="utf-8") as fh:
                for line in fh:
                    r = json.loads(line)
                    r["page"], r["id"] = f"{r.get('page') or r['doc']}~{copy}", f"{r['id']}~{copy}"
                    out.write(json.dumps(r, ensure_ascii=False) + "\n")
    return dst.stat().st_size


def one(scale: int, work: Path) -> dict:
    """Build the data at ``scale`` under ``work`` in this process; seconds and peak RSS."""
    from transformers import AutoTokenizer

    from warmstart.chat import run as cr
    from warmstart.config import load_params

    params = load_params("params.yaml", {"shared": {"data_dir": str(work)}})
    size = 0
    for lang in (params.shared.target_lang, params.shared.source_lang):
        for split in ("train", "test"):
            size += _repeat(
                Path("data/corpus", lang, f"{split}.jsonl"), work / "corpus" / lang / f"{split}.jsonl", scale
            )
    tok = AutoTokenizer.from_pretrained("data/chat/init")
    t0 = time.perf_counter()
    counts = cr.build_items(params, tok, work / "items")
    stats = cr.build_shards(params, tok, work / "items" / "train.jsonl", work / "shards")["stats"]
    return {
        "scale": scale,
        "corpus_mb": round(size / 1e6, 2),
        "items": sum(counts["train"].values()) + sum(counts["test"].values()),
        "tokens": sum(s["tokens"] for s in stats.values()),
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="1,10,30")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps(one(a.one, Path(d))))
        return 0
    for k in (int(x) for x in a.scales.split(",")):
        res = subprocess.run(
            [sys.executable, "-m", "warmstart.chat.bench", "--one", str(k)], capture_output=True, text=True, check=True
        )
        print(res.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
