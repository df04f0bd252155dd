"""Trainer overhead: tokens/s of :class:`~warmstart.train.Trainer` over a bare training loop, one process.

    python -m warmstart.bench_trainer --config run.yaml [--steps 40 --warmup 10]

prints the JSON record; ``python -m warmstart.study bench`` runs it on the
default study's base model. A ratio near 1 says the trainer adds no measurable
overhead (both loops run in the same process, on the same batches).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from warmstart.train import TrainConfig, Trainer


def benchmark_overhead(cfg: TrainConfig, steps: int = 40, warmup: int = 10) -> dict:
    """Trainer tokens/s over a bare forward/backward/clip/step loop on the same batches (one process).

    Both start from the same initial weights. The trainer runs :meth:`Trainer.fit`
    with logging every ``warmup`` steps and no intermediate checkpoints; its
    rate is taken between the log records of steps ``warmup`` and ``steps``
    (so start-up and the final checkpoint are excluded). The bare loop gets
    pre-drawn batches and plain ``input_ids``/``labels`` (plus packed
    ``position_ids`` when ``doc_mask``), and is timed over the same steps.
    """
    import tempfile

    if steps <= warmup or steps % warmup:
        raise ValueError("steps must be a multiple of warmup, and larger")
    with tempfile.TemporaryDirectory() as tmp:
        over = dict(steps=steps, log_every=warmup, checkpoint_every=0, tag_every=None, tag_steps=[], export_final=False,
                    progress=False, tensorboard=False, inject_nan_steps=[], batch_ramp=None, masked_share=0.0)  # fmt: skip
        tr = Trainer(cfg.model_copy(update=over | {"out_dir": str(Path(tmp) / "trainer")}))
        tr.fit()
        log = {r["step"]: r for r in map(json.loads, tr.log_path.read_text().splitlines())}
        trainer_tps = (log[steps]["tokens"] - log[warmup]["tokens"]) / (log[steps]["elapsed_s"] - log[warmup]["elapsed_s"])
        del tr
        bare = Trainer(cfg.model_copy(update=over | {"out_dir": str(Path(tmp) / "bare")}))
        rows, mb = bare.batch_rows(), cfg.micro_batch
        batches = [bare.data.next_rows(rows, k) for k in range(1, steps + 1)]
        model, opt, dev = bare.model, bare.optimizer, bare.acc.device
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        model.train()
        for k, b in enumerate(batches, 1):
            if k == warmup + 1:
                sync()
                t0 = time.perf_counter()
            for a in range(rows // mb):
                x = b.input_ids[a * mb : (a + 1) * mb].to(dev)
                kw = {"position_ids": b.position_ids[a * mb : (a + 1) * mb].to(dev)} if cfg.doc_mask else {}
                loss = model(input_ids=x, labels=x, use_cache=False, **kw).loss
                (loss / (rows // mb)).backward()
            torch.nn.utils.clip_grad_norm_(bare.params, cfg.max_grad_norm or float("inf"))
            opt.step()
            opt.zero_grad(set_to_none=True)
        sync()
        bare_tps = (steps - warmup) * rows * cfg.seq_len / (time.perf_counter() - t0)
    return {"trainer_tokens_per_s": trainer_tps, "bare_tokens_per_s": bare_tps, "ratio": trainer_tps / bare_tps,
            "steps": steps, "warmup": warmup, "device": str(dev), "torch": torch.__version__}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m warmstart.bench_trainer", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="run config (YAML, TrainConfig fields)")
    ap.add_argument("--steps", type=int, default=40, help="measured + warm-up steps (a multiple of --warmup)")
    ap.add_argument("--warmup", type=int, default=10)
    args = ap.parse_args(argv)
    print(json.dumps(benchmark_overhead(TrainConfig.from_yaml(args.config), args.steps, args.warmup), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
