"""Trainer overhead: tokens/s of :class:`~warmstart.train.loop.Trainer` over a bare training loop, one process.

    python -m warmstart.train.bench --config run.yaml [--steps 40 --warmup 10]
    python -m warmstart.train.bench --signals [--config run.yaml] [--every 5 --blocks 12]

prints the JSON record; ``python -m warmstart.train.launch bench`` runs it on the
default study's base model. A ratio near 1 says the trainer adds no measurable
overhead (both loops run in the same process, on the same batches).

``--signals``: the cost of the instability signals (``signals_every``,
:mod:`warmstart.train.signals`) as a ratio of step times measured in one process
(:func:`benchmark_signals`); without ``--config`` on the default study's base
run (its recorded ``data/runs/base/train_config.json``: base.model of
params.yaml, seq 128, micro-batch 16).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from warmstart.train.config import TrainConfig
from warmstart.train.loop import Trainer


def _quiet(**over: Any) -> dict[str, Any]:
    """TrainConfig overrides for a benchmark's trainer: no checkpoints, tags, exported model, progress bar,
    TensorBoard or injected NaN steps; ``over`` on top."""
    return dict(
        checkpoint_every=0,
        tag_every=None,
        tag_steps=[],
        export_final=False,
        progress=False,
        tensorboard=False,
        inject_nan_steps=[],
        **over,
    )


def benchmark_overhead(cfg: TrainConfig, steps: int = 40, warmup: int = 10) -> dict:
    """Trainer tokens/s over a bare forward/backward/clip/step loop on the same batches (one process).

    Both start from the same initial weights. The trainer runs :meth:`Trainer.fit`
    with logging every ``warmup`` steps and no intermediate checkpoints; its
    rate is taken between the log records of steps ``warmup`` and ``steps``
    (so start-up and the final checkpoint are excluded). The bare loop gets
    pre-drawn batches and plain ``input_ids``/``labels`` (plus packed
    ``position_ids`` when ``doc_mask``), and is timed over the same steps.
    """
    if steps <= warmup or steps % warmup:
        raise ValueError("steps must be a multiple of warmup, and larger")
    with tempfile.TemporaryDirectory() as tmp:
        over = _quiet(steps=steps, log_every=warmup, batch_ramp=None, masked_share=0.0)
        tr = Trainer(cfg.model_copy(update=over | {"out_dir": str(Path(tmp) / "trainer")}))
        tr.fit()
        log = {r["step"]: r for r in map(json.loads, tr.log_path.read_text().splitlines())}
        trainer_tps = (log[steps]["tokens"] - log[warmup]["tokens"]) / (
            log[steps]["elapsed_s"] - log[warmup]["elapsed_s"]
        )
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
    return {
        "trainer_tokens_per_s": trainer_tps,
        "bare_tokens_per_s": bare_tps,
        "ratio": trainer_tps / bare_tps,
        "steps": steps,
        "warmup": warmup,
        "device": str(dev),
        "torch": torch.__version__,
    }


def benchmark_signals(cfg: TrainConfig, every: int = 5, blocks: int = 12, warmup_blocks: int = 1) -> dict:
    """Step time with ``signals_every=every`` over the same run without signals, interleaved in one process.

    Two trainers (same config, same initial weights, same batches) take turns
    step by step (:meth:`Trainer.train_step`, the order alternating), for
    ``warmup_blocks + blocks`` blocks of ``every`` steps; the first blocks are
    not counted. Every step is timed, by the wall clock and by this process's
    CPU time (which other processes on a shared machine disturb less). A block
    of the signals run holds exactly one signal step, so::

        ratio = median over blocks of (time of the block with signals / time of the same block without)

    The two runs' steps of a block are interleaved, so slow changes of the
    machine's load cancel in each block's ratio (``ratio_cpu``: CPU times).
    ``ratio_of_medians`` is ``(median(signal steps) + (every - 1) * median(its
    other steps)) / (every * median(plain steps))``, and ``ratio_within_run``
    ``1 + (median(signal steps) - median(other steps)) / (every * median(other
    steps))``: the signal step's extra time spread over its interval, from the
    signals run alone (no difference between two runs' timings in it). Not
    counted: writing the signal step's extra log record (one JSON line).
    """
    if every < 1 or blocks < 1:
        raise ValueError("every and blocks must be >= 1")
    n = every * (blocks + warmup_blocks)
    over = _quiet(steps=n, warmup_steps=min(cfg.warmup_steps, n), inject_bad_batches=[])
    clocks = {"wall": time.perf_counter, "cpu": time.process_time}
    times = {c: {"signal": [], "other": [], "plain": []} for c in clocks}
    block = {c: {"signals": [0.0] * blocks, "plain": [0.0] * blocks} for c in clocks}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            name: Trainer(
                cfg.model_copy(
                    update=over | {"signals_every": every if name == "signals" else 0, "out_dir": str(Path(tmp) / name)}
                )
            )
            for name in ("signals", "plain")
        }
        dev = trainers["plain"].acc.device
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        for k in range(1, n + 1):
            for name in ("signals", "plain") if k % 2 else ("plain", "signals"):
                sync()
                t0 = {c: f() for c, f in clocks.items()}
                trainers[name].train_step()
                sync()
                b = (k - 1) // every - warmup_blocks
                if b >= 0:
                    kind = "plain" if name == "plain" else "signal" if k % every == 0 else "other"
                    for c, f in clocks.items():
                        times[c][kind].append(f() - t0[c])
                        block[c][name][b] += times[c][kind][-1]
    med = {c: {kind: statistics.median(v) for kind, v in t.items()} for c, t in times.items()}
    of_medians = {c: (m["signal"] + (every - 1) * m["other"]) / (every * m["plain"]) for c, m in med.items()}
    paired = {c: statistics.median(a / b for a, b in zip(v["signals"], v["plain"])) for c, v in block.items()}
    within = {c: 1 + (m["signal"] - m["other"]) / (every * m["other"]) for c, m in med.items()}
    return {
        "ratio": paired["wall"],
        "ratio_cpu": paired["cpu"],
        "ratio_of_medians": of_medians["wall"],
        "ratio_of_medians_cpu": of_medians["cpu"],
        "ratio_within_run": within["wall"],
        "ratio_within_run_cpu": within["cpu"],
        "signals_every": every,
        "blocks": blocks,
        "median_step_s": med["wall"],
        "median_step_cpu_s": med["cpu"],
        "step_s": times["wall"],
        "block_s": block["wall"],
        "device": str(dev),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


DEFAULT_RUN = Path("data/runs/base/train_config.json")  # the default study's base run, as it ran (JSON is YAML)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m warmstart.train.bench", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--config",
        help=f"run config (YAML or JSON, TrainConfig fields); required without --signals (default {DEFAULT_RUN})",
    )
    ap.add_argument("--steps", type=int, default=40, help="measured + warm-up steps (a multiple of --warmup)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--signals", action="store_true", help="measure the signals' overhead instead (benchmark_signals)")
    ap.add_argument("--every", type=int, default=5, help="--signals: signals_every")
    ap.add_argument("--blocks", type=int, default=12, help="--signals: measured blocks of --every steps per variant")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.signals:
        if not (args.config or DEFAULT_RUN.is_file()):
            raise SystemExit(f"error: no {DEFAULT_RUN}: run `dvc repro base` first, or give --config")
        cfg = TrainConfig.from_yaml(args.config or DEFAULT_RUN)
        print(json.dumps(benchmark_signals(cfg, args.every, args.blocks), indent=1))
        return 0
    if not args.config:
        ap.error("--config is required (without --signals)")
    print(json.dumps(benchmark_overhead(TrainConfig.from_yaml(args.config), args.steps, args.warmup), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
