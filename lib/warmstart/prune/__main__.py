"""``python -m warmstart.prune bench``: the 1B-shape importance and slicing benchmark (see ``bench``).

``python -m warmstart.prune bound``: every head mask of the masking check's shape scored on the study's
teacher (needs ``compress_prep``'s outputs): the lowest least/random ratio any head ranking could reach.

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
    o = sub.add_parser("bound", help="score every head mask of the masking check's shape on the study's teacher")
    o.add_argument("--params", default="params.yaml")
    o.add_argument("--max-masks", type=int, default=4096)
    o.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    o.add_argument("--report", default=None, help="also write the Markdown record here")
    args = ap.parse_args(argv)

    import torch

    from warmstart.prune.bench import format_bound, format_report, run_bench

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cmd == "bound":
        from warmstart.config import load_params
        from warmstart.fragments import provenance_record
        from warmstart.prune.teacher import head_bound

        res = head_bound(load_params(args.params), args.max_masks)
        prov = provenance_record()
        commit = f"{prov['commit']}{' (uncommitted changes)' if prov['dirty'] else ''}" if prov["commit"] else None
        text = format_bound(res, "python -m warmstart.prune " + shlex.join(argv), commit)
    else:
        res = run_bench(args.shape, args.samples, args.seq_len, args.batch_size, args.seed)
        text = format_report(res, "python -m warmstart.prune " + shlex.join(argv))
    print(text)
    if args.report:
        from warmstart.io import write_text

        write_text(args.report, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
