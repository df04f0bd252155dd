"""``python -m warmstart.train``: train one run from its config, resume it, or export a checkpoint.

python -m warmstart.train --config run.yaml [--resume]
accelerate launch --config_file configs/accelerate/fsdp2_8gpu.yaml -m warmstart.train --config run.yaml
python -m warmstart.train --export data/runs/x/checkpoints/step0000500 --out data/models/x
"""

from __future__ import annotations

import argparse
import sys

from warmstart.train.checkpoint import export_checkpoint
from warmstart.train.loop import train


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m warmstart.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="run config (YAML, TrainConfig fields)")
    ap.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in out_dir")
    ap.add_argument("--export", metavar="CKPT", help="export a checkpoint dir as a HF model dir (with --out)")
    ap.add_argument("--out", help="output dir of --export")
    args = ap.parse_args(argv)
    if args.export:
        if not args.out:
            ap.error("--export needs --out")
        print(export_checkpoint(args.export, args.out))
        return 0
    if not args.config:
        ap.error("--config is required")
    result = train(args.config, resume=args.resume)
    if result.export_dir:
        print(f"final model: {result.export_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
