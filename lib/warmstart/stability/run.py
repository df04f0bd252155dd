"""Running the study: base models, the sweep, the induced spike (:func:`run_study`); its data: :mod:`.data`."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from warmstart.pool import process_pool
from warmstart.stability import analysis as A
from warmstart.stability.config import VARIANTS, StabilityConfig
from warmstart.stability.data import DATA_KEYS, check_data, eval_rows, held_out_loss, toy_data

# ---------------------------------------------------------------- runs


def _spec(cfg: StabilityConfig, arch: str) -> dict:
    m = cfg.model
    return dict(
        arch=arch,
        hidden=m.hidden,
        layers=m.layers,
        heads=m.heads,
        kv_heads=m.kv_heads,
        intermediate=m.intermediate,
        max_pos=cfg.seq_len,
        tie_embeddings=m.tie_embeddings,
        seed=cfg.seed,
    )


def _train_cfg(cfg: StabilityConfig, out_dir: Path, **kw: Any) -> dict:
    base = dict(
        seq_len=cfg.seq_len,
        micro_batch=cfg.micro_batch,
        steps=cfg.steps,
        warmup_steps=cfg.warmup_steps,
        lr_schedule=cfg.lr_schedule,
        min_lr_ratio=cfg.min_lr_ratio,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        out_dir=str(out_dir),
        token_cache=str(Path(out_dir).parent / ".tokens"),  # one tokenization of each corpus, shared (locked)
        log_every=1,
        checkpoint_every=0,
        keep_last=1,
        progress=False,
        tensorboard=False,
        export_final=False,
        update_cos=False,
        peak_flops=1e11,
        seed=cfg.seed,
        max_bad_steps=10**9,  # a diverging run skips its non-finite steps; it never rolls back
    )
    return base | kw


def _read_log(path: Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def detect_events(log_path: Path, records: list[dict], cfg: StabilityConfig) -> tuple[list[dict], int | None]:
    """The spikes stage's detector on a run's log (its cross-entropy when the loss has a z-loss term)."""
    import pandas as pd

    from warmstart.spikes import api as S

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-finite losses dropped: divergence is judged separately
        try:
            df = S.load_log(log_path)
        except S.SpikeLogError:
            return [], None
        if any("ce_loss" in r for r in records):
            ce = {int(r["step"]): r.get("ce_loss") for r in records}
            df["loss"] = pd.to_numeric(df["step"].map(ce), errors="coerce")
            df = df[df["loss"].notna() & (df["loss"] > 0)].reset_index(drop=True)
        if len(df) < 2:
            return [], None
        ev = S.detect(df, cfg.detector_method, warmup=cfg.detector_warmup, **dict(cfg.detector_params))
    return [e.to_dict() for e in ev], ev.armed_from


def _run(cfg: StabilityConfig, tc: dict, rows) -> tuple[Any, float | None, float | None, list[dict], float, float]:
    """Train one run in this process; (result, held-out loss before, after, log records, seconds, CPU seconds)."""
    from warmstart.train.config import TrainConfig
    from warmstart.train.loop import Trainer

    t0, c0 = time.perf_counter(), time.process_time()
    shutil.rmtree(tc["out_dir"], ignore_errors=True)
    tr = Trainer(TrainConfig.model_validate(tc))
    before = held_out_loss(tr.unwrapped, rows)
    res = tr.fit()
    after = held_out_loss(tr.unwrapped, rows)
    records = _read_log(Path(tc["out_dir"]) / "log.jsonl")
    if not cfg.keep_checkpoints and not tc.get("export_final"):
        shutil.rmtree(Path(tc["out_dir"]) / "checkpoints", ignore_errors=True)
    return res, before, after, records, time.perf_counter() - t0, time.process_time() - c0


def train_base(cfg: StabilityConfig, data: dict, arch: str, out: Path) -> dict:
    """Pretrain the ``arch`` base on the source language; swap its vocabulary to the target tokenizer if the
    two differ. Returns the warm start's model dir and the base's record."""
    from warmstart.train.loop import train

    t0, c0 = time.perf_counter(), time.process_time()
    d = out / f"base-{arch}"
    shutil.rmtree(d, ignore_errors=True)
    tc = _train_cfg(
        cfg,
        d,
        tokenizer_path=data["source_tokenizer"],
        train_files={"source": data["source_train"]},
        model=_spec(cfg, arch),
        steps=cfg.base_steps,
        lr=cfg.base_lr,
        warmup_steps=cfg.base_warmup_steps,
        export_final=True,
        signals_every=0,
    )
    res = train(tc)
    shutil.rmtree(d / "checkpoints", ignore_errors=True)
    model_dir = res.export_dir
    swap = None
    if Path(data["source_tokenizer"]).resolve() != Path(data["target_tokenizer"]).resolve():
        from warmstart.vocab_swap.surgery import swap_model_dir

        model_dir, swap = out / f"base-{arch}-swapped", cfg.swap_method
        swap_model_dir(
            res.export_dir,
            data["target_tokenizer"],
            model_dir,
            swap,
            old_tokenizer_dir=data["source_tokenizer"],
            seed=cfg.seed,
        )
    recs = _read_log(d / "log.jsonl")
    tail = [r["loss"] for r in recs[-max(1, len(recs) // 10) :] if A.finite(r.get("loss"))]
    return {
        "arch": arch,
        "model_dir": str(model_dir),
        "steps": cfg.base_steps,
        "swap": swap,
        "final_train_loss": sum(tail) / len(tail) if tail else None,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
    }


def sweep_run(
    cfg: StabilityConfig,
    data: dict,
    variant: str,
    init: str,
    lr: float,
    out: Path,
    bases: dict,
    rows,
    uniform: float,
    extra: dict | None = None,
    name: str | None = None,
) -> dict:
    """One run of the sweep (or, with ``extra`` trainer fields, of the induced-spike experiment), analysed."""
    v = VARIANTS[variant]
    name = name or f"{variant}-{init}-lr{lr:g}"
    d = out / name
    model = {"model_path": bases[v["arch"]]["model_dir"]} if init == "warm" else {"model": _spec(cfg, v["arch"])}
    tc = _train_cfg(
        cfg,
        d,
        tokenizer_path=data["target_tokenizer"],
        train_files={"target": data["target_train"]},
        lr=lr,
        signals_every=cfg.signals_every,
        z_loss=cfg.z_loss_coef if v["z_loss"] else 0.0,
        **model,
        **(extra or {}),
    )
    res, before, after, records, secs, cpu = _run(cfg, tc, rows)
    traj = A.trajectory(records)
    events, armed = detect_events(d / "log.jsonl", records, cfg)
    n_bad = sum(1 for r in records if r.get("skipped") or not A.finite(r.get("loss")))
    tail = [x for x in traj["loss"][-max(1, len(traj["loss"]) // 10) :] if A.finite(x)]
    init_loss = before if before is not None else uniform
    div = A.diverged(after, init_loss, uniform, n_bad)
    m = cfg.moved
    rule = dict(window=m.window, k=m.k, min_history=m.min_history, rel_floor=m.rel_floor)
    moved = None
    if events or div:
        onset, source = A.loss_onset(traj, events, **rule)
        if onset is not None:
            moved = A.moved_first(
                traj,
                onset,
                lookback=m.lookback,
                attn_logit_threshold=m.attn_logit_threshold,
                log_z_threshold=m.log_z_threshold,
                **rule,
            ) | {"onset_source": source}
    return {
        "name": name,
        "variant": variant,
        "init": init,
        "lr": lr,
        "arch": v["arch"],
        "z_loss": cfg.z_loss_coef if v["z_loss"] else 0.0,
        "init_loss": before,
        "final_loss": after,
        "final_train_loss": sum(tail) / len(tail) if tail else None,
        "nonfinite_steps": n_bad,
        "diverged": div,
        "n_spikes": len(events),
        "events": events,
        "armed_from": armed,
        "spiked": bool(events),
        "moved": moved,
        **A.summarise_signals(traj),
        "trajectory": A.rounded(traj),
        "seconds": secs,
        "cpu_seconds": cpu,
        "_result": res,
        "_records": records,
    }


def induced_tasks(cfg: StabilityConfig) -> list[tuple[str, dict]]:
    """The induced-spike runs: (name, extra trainer fields), without and with rollback-and-skip."""
    ind = cfg.induced
    det = {"method": cfg.detector_method if cfg.detector_method != "mad" else "robust", **cfg.detector_params}
    out = []
    for key, mitigate in (("unmitigated", False), ("mitigated", True)):
        extra = {
            "inject_bad_batches": list(ind.bad_batches),
            "checkpoint_every": ind.checkpoint_every,
            "keep_last": 10**6,
            "spike_mitigation": mitigate,
        }
        if mitigate:
            extra |= {"spike_skip_batches": ind.skip_batches, "spike_detector": det}
        out.append((f"induced-{key}", extra))
    return out


def induced_result(cfg: StabilityConfig, runs: dict[str, dict], sweep: list[dict]) -> dict:
    """The induced-spike experiment's record from its two runs (:func:`induced_tasks`) and the clean control,
    the sweep's run of the same setting (``runs["induced-control"]`` when the sweep lacks it)."""
    ind = cfg.induced
    ctrl = next((r for r in sweep if (r["variant"], r["init"], r["lr"]) == (ind.variant, ind.init, ind.lr)), None)
    ctrl = ctrl or runs["induced-control"]
    out: dict[str, Any] = {
        "variant": ind.variant,
        "init": ind.init,
        "lr": ind.lr,
        "bad_batches": list(ind.bad_batches),
        "checkpoint_every": ind.checkpoint_every,
        "skip_batches": ind.skip_batches,
        "detector": induced_tasks(cfg)[1][1]["spike_detector"],
        "control": {k: ctrl[k] for k in ("name", "final_loss", "n_spikes", "events", "trajectory")},
    }
    for key in ("unmitigated", "mitigated"):
        r = dict(runs[f"induced-{key}"])
        res, recs = r.pop("_result"), r.pop("_records")
        r["rollbacks"] = [
            {k: x.get(k) for k in ("step", "spike_start", "rollback_to", "skipped_batches")}
            for x in recs
            if x.get("spike_start") is not None
        ]
        r["spike_rollbacks"], r["skipped_batches"] = res.spike_rollbacks, res.skipped_batches
        # the log as written (a rollback sends the step back): for the figure
        r["log_steps"] = [int(x["step"]) for x in recs]
        r["log_loss"] = [x["loss"] if A.finite(x.get("loss")) else None for x in recs]
        out[key] = r
    return out


def _task(job: tuple) -> dict:
    """One run in a worker process (or in this one): ("base", cfg, data, arch, out) or ("run", cfg, ...)."""
    kind, cfg = job[0], job[1]
    with _quiet(cfg.threads):
        if kind == "base":
            return train_base(cfg, *job[2:])
        return sweep_run(cfg, *job[2:])


# ---------------------------------------------------------------- the study


@contextlib.contextmanager
def _quiet(threads: int):
    import torch
    import transformers

    n = torch.get_num_threads()
    bar = transformers.utils.logging.is_progress_bar_enabled()
    torch.set_num_threads(threads)
    transformers.utils.logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.set_num_threads(n)
        if bar:
            transformers.utils.logging.enable_progress_bar()


def _f(x: Any) -> str:
    return f"{x:.3f}" if A.finite(x) else "n/a"


def run_study(
    cfg: StabilityConfig | None = None, out_dir: Path | str = "data/stability", data: dict | None = None, log=None
) -> dict:
    """Run the whole study under ``out_dir``; returns the JSON-serialisable result (see the package docstring).

    ``data``: real corpora instead of the toy pair: ``source_train``, ``target_train``, ``target_val`` (jsonl
    files) and ``source_tokenizer``, ``target_tokenizer`` (dirs; if they differ, the warm bases' vocabulary
    is swapped with ``cfg.swap_method``). ``log``: a callable for progress lines (default: none).
    """
    from warmstart.stability.report import headline

    cfg = cfg or StabilityConfig()
    say = log or (lambda m: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    secs: dict[str, float] = {}
    with _quiet(cfg.threads):
        t0 = time.perf_counter()
        data = check_data(data) if data is not None else toy_data(out / "assets", cfg)
        rows, vocab = eval_rows(data["target_val"], data["target_tokenizer"], cfg.seq_len, cfg.eval_rows)
        uniform = math.log(vocab)
        secs["data"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        archs = sorted(
            {VARIANTS[v]["arch"] for v in cfg.variants if "warm" in cfg.inits}
            | ({VARIANTS[cfg.induced.variant]["arch"]} if cfg.induced.enabled and cfg.induced.init == "warm" else set())
        )
        jobs = [(v, i, lr, None, None) for v in cfg.variants for i in cfg.inits for lr in cfg.sorted_lrs()]
        if cfg.induced.enabled:
            ind = cfg.induced
            if (ind.variant, ind.init, ind.lr) not in {j[:3] for j in jobs}:
                jobs.append((ind.variant, ind.init, ind.lr, None, "induced-control"))
            jobs += [(ind.variant, ind.init, ind.lr, extra, name) for name, extra in induced_tasks(cfg)]
        say(f"{len(archs)} base(s) ({', '.join(archs)}), {len(jobs)} runs, {cfg.workers} worker process(es)")
        with process_pool(_task, cfg.workers) as run_all:
            bases = dict(zip(archs, run_all([("base", cfg, data, a, out / "bases") for a in archs])))
            secs["bases"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            done = run_all(
                [
                    ("run", cfg, data, v, i, lr, out / "runs", bases, rows, uniform, extra, name)
                    for v, i, lr, extra, name in jobs
                ]
            )
        secs["runs"] = time.perf_counter() - t0  # the sweep and the induced spike, over the workers
        secs["sweep_run_sum"] = sum(r["seconds"] for r in done if not r["name"].startswith("induced-"))
        secs["induced_run_sum"] = sum(r["seconds"] for r in done if r["name"].startswith("induced-"))
        # CPU time of the trainings (in whichever process ran them): what an idle machine's wall time follows
        secs["cpu_sum"] = sum(r["cpu_seconds"] for r in done) + sum(b["cpu_seconds"] for b in bases.values())
        sweep, extra_runs = [], {}
        for r in done:
            if r["name"].startswith("induced-"):
                extra_runs[r["name"]] = r
                continue
            r.pop("_result"), r.pop("_records")
            say(
                f"sweep: {r['name']}: held-out loss {_f(r['init_loss'])} -> {_f(r['final_loss'])}, "
                f"{r['n_spikes']} spike(s){', diverged' if r['diverged'] else ''} ({r['seconds']:.1f} s)"
            )
            sweep.append(r)
        sens = sensitivities(sweep, uniform)
        shared = A.shared_events(sweep)
        for r in sweep:
            r["shared_with"] = shared[r["name"]]
        m = cfg.moved
        stable = [r["trajectory"] for r in sweep if not r["spiked"] and not r["diverged"]]
        rates = {
            n: A.move_rate(stable, n, window=m.window, k=m.k, min_history=m.min_history, rel_floor=m.rel_floor)
            for n in (*A.SIGNALS, "loss")
        }
        induced = induced_result(cfg, extra_runs, sweep) if cfg.induced.enabled else None
        if cfg.trajectories == "unstable":
            top = max(cfg.lrs)
            for r in sweep:
                if not (r["spiked"] or r["diverged"] or r["lr"] == top):
                    r["trajectory"] = None
    secs["total"] = time.perf_counter() - t_all
    result = {
        "config": cfg.model_dump(),
        "data": {k: data[k] for k in (*DATA_KEYS, "kind")},
        "vocab_size": vocab,
        "uniform_loss": uniform,
        "eval_rows": int(len(rows)),
        "loss_kind": "held-out",
        "bases": bases,
        "sweep": sweep,
        "sensitivity": sens,
        "move_rates": rates,
        "induced": induced,
        "seconds": secs,
    }
    result["headline"] = headline(result)
    return result


def sensitivities(sweep: list[dict], uniform: float) -> list[dict]:
    """LR sensitivity per (variant, init): with the runs' own initial held-out loss as the clip (Wortsman), and
    with the uniform-guess loss ln|V| as a clip common to warm and scratch."""
    out = []
    keys = list(dict.fromkeys((r["variant"], r["init"]) for r in sweep))
    for variant, init in keys:
        rs = [r for r in sweep if (r["variant"], r["init"]) == (variant, init)]
        finals = {r["lr"]: r["final_loss"] for r in rs}
        init_loss = next((r["init_loss"] for r in rs if A.finite(r["init_loss"])), uniform)
        ok = {lr: v for lr, v in finals.items() if A.finite(v)}
        best_lr = min(ok, key=ok.get) if ok else None
        out.append(
            {
                "variant": variant,
                "init": init,
                "init_loss": init_loss,
                "best_loss": ok[best_lr] if best_lr is not None else None,
                "best_lr": best_lr,
                "lr_sensitivity": A.lr_sensitivity(finals, init_loss),
                "lr_sensitivity_uniform_cap": A.lr_sensitivity(finals, uniform),
                "diverged": sum(r["diverged"] for r in rs),
                "spiked": sum(r["spiked"] for r in rs),
            }
        )
    return out
