"""``python -m warmstart.context plan``: plan a real-scale context extension (see :mod:`warmstart.context.plan`).

``python -m warmstart.context seeds``: the study's retrieval testbed once per training seed
(:mod:`warmstart.context.testbed_seeds`, ``make testbed-seeds``), ``reports/metrics/testbed_seeds.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m warmstart.context", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan", help="rope parameters, run config, memory and time of an extension fine-tune")
    p.add_argument("--model", help="a Hugging Face model dir (only config.json is read)")
    p.add_argument("--method", default="yarn")
    p.add_argument("--factor", type=float, default=4.0)
    p.add_argument("--trained-len", type=int, required=True)
    p.add_argument("--processes", type=int, default=8)
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--attention", default="flash_attention_2", choices=["sdpa", "flash_attention_2", "eager"])
    p.add_argument("--gpu", default="H100")
    p.add_argument("--assumed-mfu", type=float, default=0.35)
    p.add_argument("--out", help="write the run config (YAML) here")
    p.add_argument("--dry-run", metavar="DIR", help="instead: extend a tiny model of --arch and train 2 steps on CPU")
    p.add_argument("--arch", default="mistral")
    sd = sub.add_parser(
        "seeds", help="the study's testbed once per training seed -> reports/metrics/testbed_seeds.json"
    )
    sd.add_argument("--seeds", type=int, nargs="+", default=[1337, 1338, 1339, 1340, 1341])
    sd.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    if args.cmd == "seeds":
        from warmstart.config import load_params
        from warmstart.context.testbed_seeds import measure

        rec = measure(load_params(args.params), args.seeds)
        zs = ", ".join(
            f"{s}: {b} {r['zero_shot_at_factor_L'][b]:.2f}" if (b := r["best_zero_shot"]) else f"{s}: none"
            for s, r in rec["per_seed"].items()
        )
        print(f"best zero-shot at {rec['extended_len']} per seed: {zs}")
        print("targets met (seeds of " + str(len(rec["seeds"])) + "): " + json.dumps(rec["targets_met"]))
        return 0
    from warmstart.context.plan import describe, dry_run, plan

    if args.dry_run:
        r = dry_run(args.arch, args.method, args.factor, args.trained_len, Path(args.dry_run))
        print(describe(r["plan"]))
        print(f"dry run: {r['steps']} steps at {r['plan']['length']} tokens on CPU, final loss {r['final_loss']:.4f}")
        return 0
    if not args.model:
        ap.error("--model is required (or --dry-run DIR)")
    pl = plan(
        args.model,
        args.method,
        args.factor,
        args.trained_len,
        processes=args.processes,
        micro_batch=args.micro_batch,
        steps=args.steps,
        attention=args.attention,
        gpu=args.gpu,
        assumed_mfu=args.assumed_mfu,
    )
    print(describe(pl))
    if args.out:
        import yaml

        Path(args.out).write_text(yaml.safe_dump(pl["run_config"], sort_keys=False))
        print(f"run config: {args.out}")
    else:
        print(json.dumps(pl["run_config"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
