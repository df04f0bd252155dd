"""``python -m warmstart.prune bench``: the 1B-shape importance and slicing benchmark (see ``bench``).

Minitron: Muralidharan et al. 2024, "Compact Language Models via Pruning and
Knowledge Distillation"; Sreenivas et al. 2024, Llama-3.1-Minitron.
"""

from __future__ import annotations

import argparse
import shlex
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m warmstart.prune", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="importance + half-width slicing of a Llama-3.2-1B-shaped bf16 model on CPU")
    b.add_argument("--shape", default="llama-3.2-1b", choices=["llama-3.2-1b", "tiny"])
    b.add_argument("--samples", type=int, default=16)
    b.add_argument("--seq-len", type=int, default=256)
    b.add_argument("--batch-size", type=int, default=4)
    b.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--report", default=None, help="also write the Markdown record here")
    args = ap.parse_args(argv)

    import torch

    from warmstart.prune.bench import format_report, run_bench

    if args.threads:
        torch.set_num_threads(args.threads)
    res = run_bench(args.shape, args.samples, args.seq_len, args.batch_size, args.seed)
    text = format_report(res, "python -m warmstart.prune " + shlex.join(argv))
    print(text)
    if args.report:
        from warmstart.io import write_text

        write_text(args.report, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
