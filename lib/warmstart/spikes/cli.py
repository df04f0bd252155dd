"""Command line: ``python -m warmstart.spikes detect LOG ...`` and
``python -m warmstart.spikes bench ...``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from warmstart.spikes.analysis import format_events
from warmstart.spikes.bench import bench_markdown, benchmark
from warmstart.spikes.detectors import detect, spike_score
from warmstart.spikes.logs import load_log
from warmstart.spikes.params import METHODS, SpikeLogError

__all__ = ["main"]


def _warmup_arg(v: str) -> int | str:
    if v == "auto":
        return v
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--warmup must be 'auto' or a number of steps, got {v!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"--warmup must be >= 0, got {n}")
    return n


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m warmstart.spikes", description="Loss-spike detection.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("detect", help="detect spikes in a JSONL step log or a TensorBoard log dir")
    d.add_argument("log", help="JSONL file, TensorBoard event file or log directory")
    d.add_argument("--method", choices=METHODS, default="robust")
    d.add_argument("--json", action="store_true", help="print a JSON list of events")
    d.add_argument(
        "--hotswap",
        type=int,
        nargs="+",
        action="extend",
        default=[],
        metavar="STEP",
        help="hot-swap steps (in addition to changes of the log's `corpus` field)",
    )
    d.add_argument(
        "--warmup",
        type=_warmup_arg,
        default="auto",
        help="'auto' (end of the lr ramp, default) or a number of steps to ignore",
    )
    d.add_argument("--score", action="store_true", help="also print the OLMo 2 spike score (stderr)")
    b = sub.add_parser("bench", help="run the synthetic benchmark")
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--n-runs", type=int, default=98)
    b.add_argument("--n-steps", type=int, default=4000)
    b.add_argument("--methods", nargs="*", choices=METHODS, default=list(METHODS))
    b.add_argument(
        "--mad",
        choices=("scaled", "raw"),
        default="scaled",
        help="unit of injected spike height: 1.4826 x MAD (= sigma) or raw MAD",
    )
    b.add_argument("--noise", choices=("gauss", "t5"), default="gauss")
    b.add_argument("--out", help="write the markdown table here")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "detect":
            df = load_log(args.log)
            events = detect(df, args.method, hotswaps=args.hotswap, warmup=args.warmup)
            if args.json:
                print(json.dumps([e.to_dict() for e in events], indent=2))
            else:
                print(format_events(events))
            if args.score:
                print(f"OLMo 2 spike score (%): {json.dumps(spike_score(df))}", file=sys.stderr)
            return 0
        table = benchmark(
            seed=args.seed,
            n_runs=args.n_runs,
            n_steps=args.n_steps,
            methods=args.methods,
            mad=args.mad,
            noise=args.noise,
        )
        md = bench_markdown(table)
        print(md)
        if args.out:
            from warmstart.io import write_text

            write_text(args.out, md)
        return 0
    except (SpikeLogError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
