"""Loss-spike ablations at toy scale (CSMPT's "Loss" section), one opt-in command.

CSMPT (GPT-2 small ablations) reports that loss spikes (a) grow with the
learning rate, up to divergence, and (b) appeared only for continued
pretraining (warm start), not from scratch; and that resuming from before a
spike with the optimizer state reinitialised did not remove it. This module
reproduces the three ablations with the project's trainer on tiny models::

    python -m warmstart.stability.ablations --out reports/ablations [--reports-dir reports] \
        [--lrs 1e-3 3e-3 1e-2 3e-2] [--steps 300] [--base-steps 300] [--threads 1]

1. A base model is pretrained on a source "language" (``--base-steps``).
2. Learning-rate sweep: for every rate, a warm start from the base and a
   from-scratch model train on the target language (same data, same
   schedule: linear warm-up, cosine to 10 %). Every log goes through
   ``warmstart.spikes.detect`` (robust, windows sized for short runs) and the
   OLMo 2 spike score.
3. Resume: the warm run with the most spikes (at the highest rate if tied) is
   resumed from the checkpoint before its first spike, (a) with the optimizer
   state kept (a bit-exact replay: a sanity check), (b) with the optimizer
   state reset (CSMPT), (c) state kept but the batches of the original run
   from there skipped (new data, PaLM-style).

Data: by default a synthetic pair of languages (``toy_corpora``): the same
random bigram "grammar" over two disjoint made-up vocabularies, so a warm
start has structure to transfer. ``--source-files/--target-files/--tokenizer``
run it on real jsonl corpora instead. Outputs under ``--out``:
``ablations.json``, ``ablations.png``, ``ablations.md``, the runs in
``runs/``; plus the report fragment ``<reports-dir>/fragments/75_ablations.json``
(the figure, table, conclusions and fragment: :mod:`warmstart.stability.ablations_report`).
Not part of ``dvc repro`` (it does not fit the default study's budget).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from warmstart.stability.ablations_report import conclusions, write_outputs

DETECT = {"level_window": 10, "min_level": 5, "window": 100, "min_scale": 30}
SPEC = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 128, "max_pos": 128, "seed": 0}


# ---------------------------------------------------------------- data


def toy_corpora(seed: int = 0, n_docs: int = 600, n_words: int = 150) -> dict[str, list[str]]:
    """Two made-up languages sharing one random bigram grammar over disjoint vocabularies."""
    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "si", "da", "pe", "gu", "zo", "fi", "ha", "be", "jo"]

    def vocab(tag: str) -> list[str]:
        words: set[str] = set()
        while len(words) < n_words:
            words.add(tag + "".join(rng.choice(syll) for _ in range(rng.randint(1, 3))))
        return sorted(words)

    va, vb = vocab("a"), vocab("o")
    nxt = [[rng.randrange(n_words) for _ in range(4)] for _ in range(n_words)]  # 4 successors per word
    zipf = [1 / (i + 1) for i in range(n_words)]
    out: dict[str, list[str]] = {"source": [], "target": []}
    for lang, v in (("source", va), ("target", vb)):
        for _ in range(n_docs):
            w = rng.choices(range(n_words), zipf)[0]
            words = []
            for _ in range(rng.randint(8, 60)):
                words.append(v[w])
                w = rng.choice(nxt[w]) if rng.random() < 0.9 else rng.choices(range(n_words), zipf)[0]
            out[lang].append(" ".join(words) + ".")
    return out


def make_assets(root: Path, seed: int = 0, vocab_size: int = 512) -> dict[str, Any]:
    """Toy corpora as jsonl and a byte-level BPE tokenizer trained on both."""
    from warmstart.vocab_swap.tokens import train_byte_bpe

    root.mkdir(parents=True, exist_ok=True)
    texts = toy_corpora(seed)
    files = {}
    for lang, docs in texts.items():
        p = root / f"{lang}.jsonl"
        p.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
        files[lang] = [str(p)]
    train_byte_bpe(texts["source"] + texts["target"], vocab_size, root / "tok", unk_token="<unk>")
    return {"files": files, "tokenizer": str(root / "tok")}


# ---------------------------------------------------------------- runs


def _cfg(
    out_dir: Path,
    assets: dict,
    lang: str,
    steps: int,
    lr: float,
    seed: int,
    model_path: str | None,
    seq_len: int,
    micro_batch: int,
    every: int,
    spec: dict,
) -> dict:
    cfg = dict(
        tokenizer_path=assets["tokenizer"],
        train_files={lang: assets["files"][lang]},
        seq_len=seq_len,
        micro_batch=micro_batch,
        steps=steps,
        lr=lr,
        warmup_steps=max(1, steps // 10),
        lr_schedule="cosine",
        min_lr_ratio=0.1,
        out_dir=str(out_dir),
        token_cache=str(Path(out_dir).parent / ".tokens"),  # one tokenization of each corpus, shared (locked)
        log_every=1,
        checkpoint_every=every,
        tag_every=every,
        progress=False,
        tensorboard=False,
        export_final=True,
        peak_flops=1e11,
        seed=seed,
        max_grad_norm=1.0,
    )
    if model_path:
        cfg["model_path"] = model_path
    else:
        cfg["model"] = spec
    return cfg


def _read(out_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (Path(out_dir) / "log.jsonl").read_text().splitlines() if x.strip()]


def analyse_run(out_dir: Path, detect_params: dict | None = None, history: tuple[Path, int] | None = None) -> dict:
    """Spikes (robust, short-run windows), OLMo 2 score and loss summary of one trainer run.

    ``history=(run_dir, step)``: the run was resumed from ``run_dir``'s checkpoint at ``step``; its
    records up to ``step`` are put in front, so the detector is armed as in the uninterrupted run
    (a resumed log alone starts cold and would miss a spike right after the resume point).
    """
    from warmstart.spikes import api as S

    log = _read(out_dir)
    if history is not None:
        log = [r for r in _read(history[0]) if r["step"] <= history[1]] + [r for r in log if r["step"] > history[1]]
        path = Path(out_dir) / "log_with_history.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in log))
    else:
        path = Path(out_dir) / "log.jsonl"
    losses = [r["loss"] for r in log]
    n_bad = sum(1 for v in losses if v is None)
    finite = [v for v in losses if v is not None and math.isfinite(v)]
    df = S.load_log(path)
    events = S.detect(df, **(detect_params or DETECT))
    score = S.spike_score(df, window=100, min_periods=30)
    tail = finite[-max(1, len(finite) // 10) :]
    diverged = n_bad > 0 or (bool(tail) and np.mean(tail) > 0.9 * np.mean(finite[:5]))
    return {
        "events": [e.to_dict() for e in events],
        "n_spikes": len(events),
        "max_z": max((e.magnitude or 0 for e in events), default=None),
        "spike_score_loss": score["loss"],
        "spike_score_grad": score["grad_norm"],
        "final_loss": float(np.mean(tail)) if tail else None,
        "min_loss": min(finite) if finite else None,
        "nonfinite_steps": n_bad,
        "diverged": bool(diverged),
        "steps": [r["step"] for r in log],
        "loss": losses,
        "grad_norm": [r["grad_norm"] for r in log],
    }


def _eval_loss(model_dir: Path, files: list[str], tokenizer: str, seq_len: int, n: int = 64) -> float:
    import torch
    from transformers import AutoTokenizer

    from warmstart.model import load_model

    tok = AutoTokenizer.from_pretrained(tokenizer)
    texts = [json.loads(x)["text"] for x in Path(files[0]).read_text().splitlines()[-4 * n :]]
    ids = [x[:seq_len] for x in tok(texts)["input_ids"] if len(x) >= seq_len][:n]
    model = load_model(model_dir).eval()
    with torch.no_grad():
        x = torch.tensor(ids)
        return float(model(input_ids=x, labels=x).loss)


def _resume(src_ckpt: Path, out_dir: Path, cfg: dict, reset_optimizer: bool, skip_rows: int) -> None:
    """Resume ``cfg`` from a copy of ``src_ckpt`` (optionally with a fresh optimizer state / further data)."""
    import torch

    from warmstart.train.loop import train

    shutil.rmtree(out_dir, ignore_errors=True)
    dst = out_dir / "checkpoints" / src_ckpt.name
    shutil.copytree(src_ckpt, dst)
    if reset_optimizer:  # AdamW state (moments, step counts) dropped: reinitialised lazily at the next step
        opt = torch.load(dst / "optimizer.pt", weights_only=True)
        opt["state"] = {}
        torch.save(opt, dst / "optimizer.pt")
    if skip_rows:
        _train_skipping(cfg, out_dir, skip_rows)
    else:
        train(cfg | {"out_dir": str(out_dir)}, resume=True)


def _train_skipping(cfg: dict, out_dir: Path, skip_rows: int) -> None:
    """Resume, discarding ``skip_rows`` rows of the stream first (other data from the same point on)."""
    from warmstart.train.checkpoint import latest_checkpoint
    from warmstart.train.config import TrainConfig
    from warmstart.train.loop import Trainer

    tr = Trainer(TrainConfig.model_validate(cfg | {"out_dir": str(out_dir)}))
    ckpt = latest_checkpoint(tr.ckpt_root)
    tr.load_checkpoint(ckpt)
    tr.data.next_rows(skip_rows, tr.step + 1)
    tr.save_checkpoint()  # same step, the new stream position
    tr.fit(resume=True)


def run_ablations(
    out: Path,
    *,
    lrs: list[float],
    steps: int = 300,
    base_steps: int = 300,
    seed: int = 0,
    seq_len: int = 64,
    micro_batch: int = 8,
    every: int = 10,
    spec: dict | None = None,
    assets: dict | None = None,
    induce_spike: int | None = None,
    log=print,
) -> dict:
    """Run the three ablations; returns the JSON-able results (also written to ``out/ablations.json``)."""
    from warmstart.train.loop import train

    t0 = time.perf_counter()
    spec = spec or SPEC
    out = Path(out)
    runs = out / "runs"
    if runs.exists():
        shutil.rmtree(runs)
    assets = assets or make_assets(out / "assets", seed)
    kw = dict(seq_len=seq_len, micro_batch=micro_batch, every=every, spec=spec, seed=seed)
    log(f"base: {base_steps} steps on the source language")
    base = train(
        _cfg(runs / "base", assets, "source", base_steps, 3e-3, model_path=None, **kw)
        | {"tag_every": None, "checkpoint_every": 0}
    )
    sweep = []
    for lr in lrs:
        for init in ("warm", "scratch"):
            name = f"{init}-lr{lr:g}"
            log(f"sweep: {name}")
            d = runs / name
            train(
                _cfg(d, assets, "target", steps, lr, model_path=str(base.export_dir) if init == "warm" else None, **kw)
            )
            a = analyse_run(d)
            a.update(
                name=name,
                init=init,
                lr=lr,
                eval_loss=_eval_loss(d / "final", assets["files"]["target"], assets["tokenizer"], seq_len),
            )
            sweep.append(a)
    # resume ablation on the spikiest warm run (highest lr on ties)
    warm = [r for r in sweep if r["init"] == "warm"]
    pick = max(warm, key=lambda r: (r["n_spikes"] > 0 and not r["diverged"], r["n_spikes"], r["lr"]))
    induced: dict[str, Any] = {}
    if not pick["n_spikes"] and induce_spike:
        # no natural spike at this scale: corrupt batches induce_spike..+4 of a warm run (random tokens, the
        # trainer's inject_bad_batches) and run the resume ablation on that spike; the resumed runs replay the
        # same corrupted data unless they skip it ("kept, new data")
        induced = {"inject_bad_batches": list(range(induce_spike, induce_spike + 5))}
        lr = pick["lr"]
        name = f"warm-lr{lr:g}-induced"
        log(f"sweep: {name} (batches {induce_spike}..{induce_spike + 4} corrupted)")
        d = runs / name
        train(_cfg(d, assets, "target", steps, lr, model_path=str(base.export_dir), **kw) | induced)
        pick = analyse_run(d)
        pick.update(
            name=name,
            init="warm",
            lr=lr,
            eval_loss=_eval_loss(d / "final", assets["files"]["target"], assets["tokenizer"], seq_len),
        )
    resume: dict[str, Any] = {"run": pick["name"], "lr": pick["lr"], "variants": [], "induced": induced or None}
    if pick["n_spikes"]:
        first = pick["events"][0]["start_step"]
        ckpt_step = ((first - 1) // every) * every
        src = runs / pick["name"] / "checkpoints" / f"step{ckpt_step:07d}"
        resume.update(first_spike=first, from_step=ckpt_step)
        if ckpt_step > 0 and src.is_dir():
            cfg = _cfg(runs / "x", assets, "target", steps, pick["lr"], model_path=str(base.export_dir), **kw) | induced
            for vname, reset, skip in (
                ("kept", False, 0),
                ("reset", True, 0),
                ("kept, new data", False, (first - ckpt_step + 50) * micro_batch),
            ):
                d = runs / f"resume-{vname.replace(', ', '-').replace(' ', '-')}"
                log(f"resume: {vname} from step {ckpt_step}")
                # the induced corruption is keyed on the step; "new data" skips past it, so it goes too
                vcfg = {k: v for k, v in cfg.items() if not (skip and k == "inject_bad_batches")}
                _resume(src, d, vcfg, reset, skip)
                a = analyse_run(d, history=(runs / pick["name"], ckpt_step))
                after = [e for e in a["events"] if e["start_step"] > ckpt_step]
                orig = [v for s, v in zip(pick["steps"], pick["loss"]) if s > ckpt_step]
                mine = [v for s, v in zip(a["steps"], a["loss"]) if s > ckpt_step]
                a.update(
                    variant=vname,
                    spikes_after=len(after),
                    same_first_spike=bool(after and after[0]["start_step"] == first),
                    identical_to_original=orig == mine,
                    eval_loss=_eval_loss(d / "final", assets["files"]["target"], assets["tokenizer"], seq_len),
                )
                resume["variants"].append(a)
        else:
            resume["note"] = "first spike before the first checkpoint: nothing to resume from"
    else:
        resume["note"] = "no warm run spiked: resume ablation not run"
    result = {
        "config": {
            "lrs": lrs,
            "steps": steps,
            "base_steps": base_steps,
            "seed": seed,
            "seq_len": seq_len,
            "micro_batch": micro_batch,
            "spec": spec,
            "detect": DETECT,
            "checkpoint_every": every,
        },
        "sweep": sweep,
        "resume": resume,
        "seconds": time.perf_counter() - t0,
    }
    from warmstart.io import write_json

    write_json(out / "ablations.json", result)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m warmstart.stability.ablations", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="reports/ablations")
    ap.add_argument("--reports-dir", default="reports", help="where fragments/75_ablations.json goes ('' for none)")
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2, 3e-2])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--base-steps", type=int, default=300)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--checkpoint-every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--induce-spike",
        type=int,
        metavar="STEP",
        help="if no warm run spikes by itself, corrupt batches STEP..STEP+4 of one (random tokens) "
        "and run the resume ablation on that induced spike",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for tiny models)")
    ap.add_argument("--source-files", nargs="+", help="real source-language jsonl (with --target-files, --tokenizer)")
    ap.add_argument("--target-files", nargs="+")
    ap.add_argument("--tokenizer")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    assets = None
    if args.source_files or args.target_files or args.tokenizer:
        if not (args.source_files and args.target_files and args.tokenizer):
            ap.error("--source-files, --target-files and --tokenizer go together")
        assets = {"files": {"source": args.source_files, "target": args.target_files}, "tokenizer": args.tokenizer}
    result = run_ablations(
        Path(args.out),
        lrs=args.lrs,
        steps=args.steps,
        base_steps=args.base_steps,
        seed=args.seed,
        seq_len=args.seq_len,
        micro_batch=args.micro_batch,
        every=args.checkpoint_every,
        assets=assets,
        induce_spike=args.induce_spike,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    paths = write_outputs(result, Path(args.out), Path(args.reports_dir) if args.reports_dir else None)
    print("\n".join(conclusions(result)))
    for k, p in paths.items():
        print(f"{k}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
