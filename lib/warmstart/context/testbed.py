"""The retrieval testbed: where Alfred-40B-1023's ranking of extension methods is tested at small scale.

:func:`run_testbed` does, deterministically for one :class:`TestbedConfig`:

1. **data**: the word-level tokenizer and jsonl corpora of
   :mod:`warmstart.context.tasks` items (passkey and key-value retrieval,
   mixed): a length curriculum at ``L`` (by default items of ``L/8``,
   ``L/4``, ``L/2``, then ``L`` tokens; shorter items are packed several per
   row with document masking, so positions restart at 0 in each; a stage
   holds the tasks that fit in it) and fine-tune corpora at ``L``, ``2L``
   and ``factor x L`` packed into rows of ``factor x L``.
2. **train**: a fresh small Llama (``max_position_embeddings = L``) trained
   at ``seq_len = L`` through the project's trainer (:func:`warmstart.train.loop.train`),
   the curriculum as its ``corpus_schedule``.
3. **zero-shot**: every method of ``methods`` applied to it
   (:func:`~warmstart.context.rope_scaling.extend`) and scored at each length
   of ``eval_factors x L``.
4. **fine-tune**: each method of ``finetune_methods`` written as a model dir
   (:func:`~warmstart.context.rope_scaling.extend_dir`), trained
   ``finetune_steps`` more through the trainer on rows of ``factor x L``
   (``finetune_mix``: long items and packed short ones, as Alfred mixed long
   and short data, so that extending does not cost the trained length),
   reloaded from disk with plain ``from_pretrained`` and scored again.

Step 2 runs alone with ``train_threads`` torch threads; steps 3 and 4 are
one job per method, spread over ``workers`` spawned processes of ``threads``
torch threads each. The result does not depend on ``workers`` (a test holds
it); thread counts can change float reductions' order, so they are part of
the configuration (going from 1 to 2 training threads left the default
testbed's results unchanged).

Scoring is exact match of the whole answer, under teacher forcing: an item
counts as correct iff every answer token is the argmax given the prompt and
the answer tokens before it. That is exactly greedy decoding's exact match
(by induction: if greedy has produced the first ``j`` answer tokens, its next
token is the teacher-forced argmax at ``j``), and costs one forward per item.
The forward is the full item plus its EOS, ``length`` positions, so for
``dynamic`` (whose frequencies follow the longest position of a forward) the
scaling is the one for the cell's length; greedy decoding *with a KV cache*
would differ for ``dynamic`` (see :mod:`warmstart.context.traps`). Every
cell (method x length x task) gets ``items`` items with depths spread evenly,
reported with 95% Wilson intervals, overall and per depth bucket.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from warmstart.context import tasks as T
from warmstart.context.rope_scaling import extend, extend_dir
from warmstart.context.testbed_config import TestbedConfig
from warmstart.evaluate.intervals import accuracy_cell
from warmstart.pool import process_pool

# ---------------------------------------------------------------- scoring


@torch.no_grad()
def score_items(model: Any, items: list[T.Item], batch_size: int = 32) -> list[bool]:
    """Exact match of each item's answer under teacher forcing (all items of one length per call is fastest)."""
    was = model.training
    model.eval()
    out: list[bool] = []
    try:
        for b in range(0, len(items), batch_size):
            chunk = items[b : b + batch_size]
            lens = {it.length for it in chunk}
            groups = [chunk] if len(lens) == 1 else [[it] for it in chunk]
            for group in groups:
                ids = torch.tensor([it.ids() for it in group], dtype=torch.long)
                k = group[0].n_answer
                if any(it.n_answer != k for it in group):
                    for it in group:
                        out += score_items(model, [it], 1)
                    continue
                logits = model(input_ids=ids, use_cache=False, logits_to_keep=k + 2).logits
                pred = logits[:, :k].argmax(-1)  # positions -(k+2)..-3 predict the k answer tokens
                out += (pred == ids[:, -(k + 1) : -1]).all(dim=1).tolist()
    finally:
        model.train(was)
    return out


def summarise(items: list[T.Item], correct: list[bool], buckets: int) -> dict[str, Any]:
    """An accuracy cell with its Wilson interval, plus one per depth bucket."""
    by = [[0, 0] for _ in range(buckets)]
    for it, ok in zip(items, correct):
        b = T.depth_bucket(it.depth, buckets)
        by[b][0] += int(ok)
        by[b][1] += 1
    return {**accuracy_cell(sum(correct), len(correct)), "depth": [accuracy_cell(c, n) for c, n in by]}


def eval_items(cfg: TestbedConfig) -> dict[int, dict[str, list[T.Item]]]:
    """The evaluation items: ``{length: {task: items}}`` (the same for every method; seed offset 1000)."""
    return {
        n: {t: T.make_items(t, n, cfg.items, cfg.seed + 1000, True, cfg.n_digits, cfg.n_pairs) for t in cfg.tasks}
        for n in cfg.lengths()
    }


def score_model(
    model: Any, evals: dict[int, dict[str, list[T.Item]]], cfg: TestbedConfig, fresh: Any = None
) -> dict[str, dict[str, Any]]:
    """``{task: {str(length): cell}}``. ``fresh()``, if given, returns a new model object for each length
    (``dynamic`` keeps frequency state between forwards: each length starts from a fresh rotary state)."""
    res: dict[str, dict[str, Any]] = {t: {} for t in cfg.tasks}
    for n in sorted(evals):
        m = fresh() if fresh is not None else model
        for t, items in evals[n].items():
            res[t][str(n)] = summarise(items, score_items(m, items, cfg.eval_batch), cfg.depth_buckets)
    return res


# ---------------------------------------------------------------- data and training


def _write_jsonl(path: Path, items: list[T.Item]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": it.text}) + "\n" for it in items))
    return str(path)


def write_data(cfg: TestbedConfig, out_dir: Path) -> dict[str, Any]:
    """Tokenizer and corpora under ``out_dir``; returns paths and the corpus schedule."""
    tok_dir = T.save_tokenizer(out_dir / "tokenizer")
    kw = dict(n_digits=cfg.n_digits, n_pairs=cfg.n_pairs)
    files, schedule = {}, []
    for k, (share, frac) in enumerate(cfg.curriculum):
        n = cfg.item_len(frac)
        name = f"len{n}"
        per_row = cfg.trained_len // n
        items = T.mixed_items(cfg.stage_tasks(n), n, cfg.train_items * per_row, cfg.seed + 10 * k, **kw)
        files[name] = [_write_jsonl(out_dir / "data" / f"{name}.jsonl", items)]
        schedule.append((int(round(share * cfg.train_steps)), name))
    ft_files, ft_mix = {}, {}
    for k, (mult, w) in enumerate(cfg.finetune_mix):
        n = int(round(mult * cfg.trained_len))
        per_row = cfg.finetune_len() // n
        items = T.mixed_items(cfg.stage_tasks(n), n, cfg.finetune_items * per_row, cfg.seed + 500 + k, **kw)
        ft_files[f"ft{n}"] = [_write_jsonl(out_dir / "data" / f"finetune{n}.jsonl", items)]
        ft_mix[f"ft{n}"] = float(w)
    return {
        "tokenizer": str(tok_dir),
        "train_files": files,
        "schedule": schedule,
        "finetune_files": ft_files,
        "finetune_mix": ft_mix,
    }


def _train_common(cfg: TestbedConfig) -> dict[str, Any]:
    return dict(
        tensorboard=False,
        progress=False,
        update_cos=False,
        log_every=5,
        keep_last=1,
        shuffle=True,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=cfg.seed,
    )


def train_base(cfg: TestbedConfig, data: dict[str, Any], out_dir: Path) -> Path:
    """The small Llama trained at ``L`` through :func:`warmstart.train.loop.train`; returns its exported model dir."""
    from warmstart.model import ModelSpec
    from warmstart.train.loop import TrainConfig, train

    spec = ModelSpec(
        hidden=cfg.hidden,
        layers=cfg.layers,
        heads=cfg.heads,
        max_pos=cfg.trained_len,
        rope_theta=cfg.rope_theta,
        seed=cfg.seed,
    )
    tc = TrainConfig(
        model=spec,
        tokenizer_path=data["tokenizer"],
        train_files=data["train_files"],
        corpus_schedule=data["schedule"] if len(data["schedule"]) > 1 else [],
        doc_mask=True,
        seq_len=cfg.trained_len,
        micro_batch=cfg.micro_batch,
        steps=cfg.train_steps,
        lr=cfg.lr,
        warmup_steps=min(cfg.warmup_steps, cfg.train_steps),
        out_dir=str(out_dir),
        **_train_common(cfg),
    )
    return Path(train(tc).export_dir)


def finetune(cfg: TestbedConfig, method: str, base_dir: Path, data: dict[str, Any], out_dir: Path) -> Path:
    """``method`` applied to the trained model on disk, fine-tuned at ``factor x L``; returns the exported dir."""
    from warmstart.train.loop import TrainConfig, train

    ext = extend_dir(
        base_dir, out_dir / "extended", method, cfg.factor, cfg.trained_len, **cfg.method_opts.get(method, {})
    )
    tc = TrainConfig(
        model_path=str(ext),
        train_files=data["finetune_files"],
        seq_len=cfg.finetune_len(),
        doc_mask=True,
        mix=data["finetune_mix"] if len(data["finetune_mix"]) > 1 else None,
        micro_batch=cfg.finetune_micro_batch,
        steps=cfg.finetune_steps,
        lr=cfg.finetune_lr,
        warmup_steps=min(5, cfg.finetune_steps),
        lr_schedule="constant",
        out_dir=str(out_dir / "run"),
        **_train_common(cfg),
    )
    return Path(train(tc).export_dir)


def loss_curve(log_path: Path) -> list[list[float]]:
    """``[[step, loss], ...]`` of a trainer run's ``log.jsonl``."""
    recs = [json.loads(x) for x in Path(log_path).read_text().splitlines() if x.strip()]
    return [[r["step"], r["loss"]] for r in recs if r.get("loss") is not None]


@contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ---------------------------------------------------------------- the run


def run_testbed(cfg: TestbedConfig | dict | None = None, out_dir: str | Path = "testbed") -> dict[str, Any]:
    """Train, extend, fine-tune and score (see the module doc); writes under ``out_dir`` and returns the result.

    The result (also written to ``out_dir/testbed.json``) is JSON-serialisable:
    ``config``; ``lengths``; ``zero_shot`` and ``finetuned``:
    ``{method: {task: {length: {acc, lo, hi, n, correct, depth: [...]}}}}``;
    ``loss`` (``base`` and ``finetune/<method>`` curves, ``[[step, loss]]``);
    ``seconds`` per phase; ``summary`` (the issue's targets, measured).
    """
    cfg = cfg if isinstance(cfg, TestbedConfig) else TestbedConfig.model_validate(cfg or {})
    out_dir = Path(out_dir)
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    with _threads(cfg.threads):
        t = time.perf_counter()
        data = write_data(cfg, out_dir)
        seconds["data"] = time.perf_counter() - t

        t = time.perf_counter()
        with _threads(cfg.train_threads):
            base_dir = train_base(cfg, data, out_dir / "runs" / "base")
        seconds["train"] = time.perf_counter() - t
        loss = {"base": loss_curve(out_dir / "runs" / "base" / "log.jsonl")}

        # every method: zero-shot scoring, and for finetune_methods a fine-tune then scoring again; the
        # fine-tunes (the longest jobs) first, spread over `workers` processes
        t = time.perf_counter()
        jobs = [("finetune", m) for m in cfg.finetune_methods] + [("zero_shot", m) for m in cfg.methods]
        args = [(cfg.model_dump(mode="json"), kind, m, str(base_dir), data, str(out_dir)) for kind, m in jobs]
        with process_pool(_job, cfg.workers) as run_all:
            done = run_all(args)
        seconds["extend_wall"] = time.perf_counter() - t
        zero: dict[str, Any] = {}
        tuned: dict[str, Any] = {}
        seconds["zero_shot"] = seconds["finetune"] = seconds["finetuned_eval"] = 0.0  # summed over jobs
        for (kind, m), r in zip(jobs, done):
            (zero if kind == "zero_shot" else tuned)[m] = r["scores"]
            for k, v in r["seconds"].items():
                seconds[k] += v
            if kind == "finetune":
                loss[f"finetune/{m}"] = loss_curve(out_dir / "runs" / f"ft-{m}" / "run" / "log.jsonl")
        zero = {m: zero[m] for m in cfg.methods}  # the configured order
        tuned = {m: tuned[m] for m in cfg.finetune_methods}
    seconds["total"] = time.perf_counter() - t_all
    result = {
        "config": cfg.model_dump(mode="json"),
        "lengths": cfg.lengths(),
        "zero_shot": zero,
        "finetuned": tuned,
        "loss": loss,
        "seconds": seconds,
    }
    result["summary"] = summary(result, cfg)
    (out_dir / "testbed.json").write_text(json.dumps(result, indent=1))
    return result


def _job(args: tuple) -> dict[str, Any]:
    """One method's zero-shot scoring, or its fine-tune then scoring (a picklable unit of :func:`process_pool`)."""
    from warmstart.model import load_model

    cfg_json, kind, method, base_dir, data, out_dir = args
    cfg = TestbedConfig.model_validate(cfg_json)
    evals = eval_items(cfg)
    seconds: dict[str, float] = {}
    with _threads(cfg.threads):
        if kind == "zero_shot":
            t = time.perf_counter()
            base = load_model(base_dir)
            opts = cfg.method_opts.get(method, {})
            scores = score_model(
                None, evals, cfg, fresh=lambda: extend(base, method, cfg.factor, cfg.trained_len, **opts)
            )
            seconds["zero_shot"] = time.perf_counter() - t
        else:
            t = time.perf_counter()
            ft_dir = finetune(cfg, method, Path(base_dir), data, Path(out_dir) / "runs" / f"ft-{method}")
            seconds["finetune"] = time.perf_counter() - t
            t = time.perf_counter()
            scores = score_model(None, evals, cfg, fresh=lambda: load_model(ft_dir))
            seconds["finetuned_eval"] = time.perf_counter() - t
    return {"scores": scores, "seconds": seconds}


def _compare(a: dict, b: dict) -> str:
    """``"a>b"``/``"b>a"`` when the 95% intervals separate, else ``"overlap"``."""
    return "a>b" if a["lo"] > b["hi"] else "b>a" if b["lo"] > a["hi"] else "overlap"


def alfred_claims(result: dict[str, Any], task: str, length: str) -> dict[str, Any]:
    """Alfred-40B-1023's two claims on one task at one length, with intervals: reproduced, refuted or unresolved.

    1. YaRN is the best method zero-shot: reproduced if YaRN's interval lies
       above every other method's, refuted if another's lies above YaRN's.
    2. After fine-tuning the NTK family (ntk, ntk_margin, ntk_yarn) is at
       least as good as YaRN: reproduced if the family's best lies above
       YaRN, refuted if YaRN lies above it; overlapping intervals are
       unresolved (consistent with the claim, not shown).
    """
    out: dict[str, Any] = {"task": task, "length": int(length)}
    zs = {m: r[task][length] for m, r in result["zero_shot"].items() if task in r and length in r[task]}
    if "yarn" in zs and len(zs) > 1:
        others = {m: c for m, c in zs.items() if m != "yarn"}
        cmp = {m: _compare(zs["yarn"], c) for m, c in others.items()}
        verdict = (
            "reproduced"
            if all(v == "a>b" for v in cmp.values())
            else "refuted"
            if any(v == "b>a" for v in cmp.values())
            else "unresolved"
        )
        runner = max(others, key=lambda m: others[m]["acc"])
        out["yarn_best_zero_shot"] = {
            "verdict": verdict,
            "yarn": zs["yarn"]["acc"],
            "yarn_ci": [zs["yarn"]["lo"], zs["yarn"]["hi"]],
            "runner_up": runner,
            "runner_up_acc": others[runner]["acc"],
            "runner_up_ci": [others[runner]["lo"], others[runner]["hi"]],
        }
    ft = {m: r[task][length] for m, r in result["finetuned"].items() if task in r and length in r[task]}
    family = {m: c for m, c in ft.items() if m in ("ntk", "ntk_margin", "ntk_yarn")}
    if "yarn" in ft and family:
        best = max(family, key=lambda m: family[m]["acc"])
        v = _compare(family[best], ft["yarn"])
        out["ntk_family_ge_yarn_finetuned"] = {
            "verdict": {"a>b": "reproduced", "b>a": "refuted", "overlap": "unresolved"}[v],
            "best_ntk_family": best,
            "best_acc": family[best]["acc"],
            "best_ci": [family[best]["lo"], family[best]["hi"]],
            "yarn": ft["yarn"]["acc"],
            "yarn_ci": [ft["yarn"]["lo"], ft["yarn"]["hi"]],
        }
    if "ntk_yarn" in ft and "ntk_margin" in ft:
        out["ntk_yarn_vs_ntk_margin_finetuned"] = {
            "ntk_yarn": ft["ntk_yarn"]["acc"],
            "ntk_margin": ft["ntk_margin"]["acc"],
            "intervals": _compare(ft["ntk_yarn"], ft["ntk_margin"]),
        }
    return out


def summary(result: dict[str, Any], cfg: TestbedConfig) -> dict[str, Any]:
    """The issue's targets on the first task (passkey by default) at L and factor x L, measured, and Alfred's
    claims per task at factor x L (when factor x L is among the scored lengths)."""
    task, L, top = cfg.tasks[0], str(cfg.lengths()[0]), str(cfg.finetune_len())
    zs_all, ft_all = result["zero_shot"], result["finetuned"]
    out: dict[str, Any] = {
        "task": task,
        "trained_len": int(L),
        "extended_len": int(top),
        "zero_shot_at_L": {m: r[task][L]["acc"] for m, r in zs_all.items()},
    }
    if int(top) not in cfg.lengths():
        return out
    zs = {m: r[task][top]["acc"] for m, r in zs_all.items()}
    ft = {m: r[task][top]["acc"] for m, r in ft_all.items()}
    ft_L = {m: r[task][L]["acc"] for m, r in ft_all.items()}
    out.update(
        zero_shot_at_factor_L=zs,
        finetuned_at_factor_L=ft,
        finetuned_at_L=ft_L,
        best_zero_shot=max(zs, key=zs.get) if zs else None,
        best_finetuned=max(ft, key=ft.get) if ft else None,
    )
    best_ft = out["best_finetuned"]
    out["targets"] = {
        "none_at_L>=0.90": zs_all["none"][task][L]["acc"] >= 0.90 if "none" in zs_all else None,
        "none_zero_shot_at_factor_L<=0.10": zs["none"] <= 0.10 if "none" in zs else None,
        "best_zero_shot>=0.70": max(zs.values()) >= 0.70 if zs else None,
        "best_finetuned>=0.95": ft[best_ft] >= 0.95 if ft else None,
        "best_finetuned_within_2pt_of_its_L": ft[best_ft] >= ft_L[best_ft] - 0.02 if ft else None,
    }
    out["alfred"] = {t: alfred_claims(result, t, top) for t in cfg.tasks}
    return out
