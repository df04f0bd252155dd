"""``python -m warmstart.data bench``: the data path at scale; ``readers``: the corpus-split readers
(:mod:`warmstart.data.bench`)."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":  # one measurement, in its own process
        from warmstart.data.bench import CHILDREN

        print(json.dumps(CHILDREN[argv[1]](*argv[2:])))
        return
    ap = argparse.ArgumentParser(prog="python -m warmstart.data")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="tokenizing, trainer and corpus-stage scaling on synthetic corpora")
    b.add_argument("--sizes", default="10,100,1000", help="corpus sizes in MB for tokenizing, trainer and reader")
    b.add_argument("--corpus-sizes", default="100,1000", help="corpus sizes in MB for the corpus stage")
    b.add_argument("--work", default=None, help="scratch folder (default: a temporary one beside data/)")
    b.add_argument("--out", default=None, help="the record, JSON (default reports/bench/data-path_cpu_<date>.json)")
    r = sub.add_parser("readers", help="the corpus-split readers (documents view, held-out texts) at two sizes")
    r.add_argument("--sizes", default="20,200", help="split sizes in MB")
    r.add_argument("--tokenizer", default="data/tokenizer/target", help="a tokenizer dir (the study's target)")
    r.add_argument("--out", default=None, help="the record, JSON (default reports/bench/data-readers_cpu_<date>.json)")
    args = ap.parse_args(argv)
    if args.cmd == "readers":
        from warmstart.data.bench import readers_report, run_readers

        out = Path(args.out or f"reports/bench/data-readers_cpu_{datetime.date.today().isoformat()}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        Path("data").mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".bench-", dir="data") as work:
            record = run_readers([int(x) for x in args.sizes.split(",") if x], Path(args.tokenizer), Path(work))
        out.write_text(json.dumps(record, indent=2) + "\n")
        out.with_suffix(".md").write_text(readers_report(record))
        print(out.with_suffix(".md").read_text())
        return
    from warmstart.data.bench import run_bench
    from warmstart.data.bench_report import write_report

    sizes = [int(x) for x in args.sizes.split(",") if x]
    corpus = [int(x) for x in args.corpus_sizes.split(",") if x]
    out = Path(args.out or f"reports/bench/data-path_cpu_{datetime.date.today().isoformat()}.json")
    Path("data").mkdir(exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bench-", dir=args.work or "data") as work:
        record = run_bench(sizes, corpus, Path(work), partial=out.with_suffix(".partial.json"))
    out.write_text(json.dumps(record, indent=2) + "\n")
    out.with_suffix(".partial.json").unlink(missing_ok=True)
    write_report(record, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
