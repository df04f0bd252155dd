"""Run-to-run spread: every study run trained again per seed, recorded in ``reports/metrics/seed_spread.json``.

    python -m warmstart.evaluate.seed_spread [--seeds 1337 1338 1339] [--runs fvt scratch ...]     (make seed-spread)

One seed per study is what the 30-minute CPU budget allows; which of the
study's differences are run-to-run noise then needs the spread measured once
for the same configuration. For every seed of ``study.seeds`` (or
``--seeds``) and every study run (scratch, original, the swap methods, the
arms), this trains the run with that seed (:func:`warmstart.train.study.train_run`
with ``seed``, into ``data/seeds/s<seed>``; ``shared.seed``'s runs are the DVC
study's own, in ``data/runs``) and measures its final target bits per byte on
the evaluation's text (the first ``evaluate.eval_bytes`` of the test split),
exactly as the evaluate stage does. A seed's run that is already trained for
the same configuration is reused, so an interrupted spread resumes.

The file (read by :func:`warmstart.evaluate.intervals.seed_spread` and the report, a dep of
the report stage; not a DVC output, so a one-seed study never overwrites it)::

    {"metric", "seeds", "runs": {run: {mean, std (ddof 1), min, max, n, values}},
     "checkpoints": [{run, seed, step, bytes, bpb_target, bpb_source}, ...]   (every checkpoint of every
                    (run, seed): the evaluation's curves and tables show their mean and spread),
     "fingerprint": the configuration it was measured for (:func:`fingerprint`),
     "train_seconds": the extra seeds' training (their run records), "seconds": this measurement's wall time,
     "hardware", "torch"}

The report uses it only when its fingerprint is the current configuration's
(:func:`spread_for`); otherwise it says the spread is for another one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from pathlib import Path
from typing import Any

from warmstart.evaluate.intervals import SEED_SPREAD_FILE

# the sections (and the arms) that define the study's runs; the evaluate stage declares them whole for the fingerprint
STUDY_KEYS = (
    "corpus",
    "tokenizer",
    "base",
    "vocab_swap",
    "pretrain",
    "study.arms",
)
# the params that decide a study run's final bits per byte (the data dirs and the later stages do not)
FINGERPRINT_KEYS = (
    *STUDY_KEYS,
    "evaluate.eval_bytes",
    "shared.seed",
    "shared.source_lang",
    "shared.target_lang",
)


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):  # a section (or a stage's view of one: the key must be declared)
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def fingerprint(params: Any) -> str:
    """A short hash of :data:`FINGERPRINT_KEYS` (sha256 of their canonical JSON, 16 hex digits); read key by
    key, so a stage reads only those keys."""
    picked = {}
    for key in FINGERPRINT_KEYS:
        node: Any = params
        for part in key.split("."):
            node = getattr(node, part)
        picked[key] = _plain(node)
    return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


def spread_path(params: Any) -> Path:
    return params.report_path(*SEED_SPREAD_FILE)


def spread_for(params: Any) -> tuple[dict[str, Any] | None, str]:
    """(the recorded seed spread, '') when it was measured for this configuration; else (None, why not)."""
    from warmstart.evaluate.intervals import seed_spread

    path = spread_path(params)
    spread = seed_spread(params.shared.reports_dir)
    if spread is None:
        return None, f"no run-to-run spread is recorded ({path}: make seed-spread)"
    want = fingerprint(params)
    if spread["fingerprint"] != want:
        return None, (
            f"the run-to-run spread in {path} was measured for another configuration (fingerprint "
            f"{spread['fingerprint']}, this study's is {want}); it is not used"
        )
    return spread, ""


def spread_section(params: Any) -> dict[str, Any] | None:
    """The report's run-to-run spread section (fragment-shaped), or None when no spread is recorded for this
    configuration (the summary's limitations then say why)."""
    spread, _ = spread_for(params)
    if spread is None:
        return None
    rows = [
        [
            name,
            ", ".join(f"{v:.3f}" for v in r.get("values", [])),
            f"{r['mean']:.3f}",
            f"{r['std']:.4f}",
            f"{r['min']:.3f}–{r['max']:.3f}",
        ]
        for name, r in spread["runs"].items()
    ]
    paras = [
        f"Every study run trained again with seeds {', '.join(map(str, spread['seeds']))} ({spread['metric']}; "
        f"python -m warmstart.evaluate.seed_spread, {(spread.get('train_seconds') or spread['seconds'] or 0) / 60:.0f} min of "
        f"training on {spread['hardware'] or '?'}). The seed "
        "changes the order of the training batches (and scratch's initial weights); everything else is the "
        "study's configuration."
    ]
    paras.append(
        "This is the spread the summary's ranking uses: two runs whose difference is within twice "
        "the root sum of their seed variances are not told apart."
    )
    table = {
        "caption": "Final bits per byte per seed, mean, standard deviation (n - 1) and range.",
        "columns": ["run", "per seed", "mean", "std", "range"],
        "rows": rows,
    }
    return {
        "stage": "seeds",
        "order": 61,
        "title": "Run-to-run spread",
        "paragraphs": paras,
        "tables": [table],
        "figures": [],
        "numbers": {},
        "seconds": None,
    }


def _bpb(params: Any, tok: Any, model_dir: str, texts: list[str]) -> float:
    from warmstart.bpb import bits_per_byte
    from warmstart.model import load_model

    model = load_model(model_dir, trust_remote_code=params.base.trust_remote_code).eval()
    return float(
        bits_per_byte(model, tok, texts, seq_len=params.pretrain.seq_len, batch_size=params.evaluate.batch_size)[
            "bits_per_byte"
        ]
    )


def final_bpb(params: Any, record: dict[str, Any], texts: list[str]) -> float:
    """A run's final target bits per byte on ``texts``, the evaluation's text (as :mod:`warmstart.evaluate.runs`
    measures it)."""
    from transformers import AutoTokenizer

    return _bpb(params, AutoTokenizer.from_pretrained(record["tokenizer"]), record["final"], texts)


def checkpoint_bpb(params: Any, record: dict[str, Any], texts: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Target and source bits per byte at every checkpoint of a run's record (step 0 included), as the evaluate
    stage measures them: ``[{step, bytes, bpb_target, bpb_source}]``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(record["tokenizer"])
    return [
        {
            "step": int(c["step"]),
            "bytes": int(c["bytes"]),
            **{f"bpb_{role}": _bpb(params, tok, c["path"], t) for role, t in texts.items()},
        }
        for c in sorted(record["checkpoints"], key=lambda c: c["step"])
    ]


def seed_checkpoints(spread: dict[str, Any] | None) -> Any:
    """The spread's per-seed checkpoint table (``run, seed, step, bytes, bpb_target, bpb_source``) as a
    DataFrame, or None when the spread has none (measured before curves were recorded)."""
    import pandas as pd

    rows = (spread or {}).get("checkpoints") or []
    return pd.DataFrame(rows) if rows else None


def _record_path(params: Any, name: str, seed: int) -> Path:
    """``run.json`` of ``name`` at ``seed``: the DVC study's own for shared.seed, else the seed-spread run's."""
    from warmstart.runs import get_run

    r = get_run(params, name)
    return (r if seed == params.shared.seed else r.at_seed(seed)).record(params)


def _record(params: Any, name: str, seed: int, fp: str) -> dict[str, Any] | None:
    """The trained run's ``run.json`` for this seed and configuration (fingerprint ``fp``), or None."""
    path = _record_path(params, name, seed)
    if not path.is_file():
        return None
    rec = json.loads(path.read_text(encoding="utf-8"))
    if seed != params.shared.seed and rec.get("fingerprint") != fp:
        return None  # trained for another configuration: train again
    return rec


def measure(params: Any, seeds: list[int], runs: list[str] | None = None, log: Any = print) -> dict[str, Any]:
    """Train what is missing, measure every (run, seed), write and return the spread record."""
    import torch

    from warmstart.bpb import held_out_texts
    from warmstart.flops import device_name
    from warmstart.io import write_json
    from warmstart.runs import run_names
    from warmstart.train.study import train_run

    if len(seeds) < 2:
        raise ValueError(f"a seed spread needs at least two seeds, got {seeds} (study.seeds or --seeds)")
    names = runs or run_names(params)
    unknown = sorted(set(names) - set(run_names(params)))
    if unknown:
        raise ValueError(f"unknown runs {unknown}; the study's runs are {run_names(params)}")
    t0 = time.perf_counter()
    fp = fingerprint(params)
    texts = held_out_texts(params, params.shared.target_lang, "test", params.evaluate.eval_bytes)
    both = {
        "target": texts,
        "source": held_out_texts(params, params.shared.source_lang, "test", params.evaluate.eval_bytes),
    }
    values: dict[str, list[float]] = {n: [] for n in names}
    curves: list[dict[str, Any]] = []
    train_seconds = 0.0
    for seed in seeds:
        for name in names:
            rec = _record(params, name, seed, fp)
            if rec is None:
                if seed == params.shared.seed:
                    raise FileNotFoundError(
                        f"run {name!r} of the DVC study (shared.seed {seed}) is not trained: run `dvc repro` first"
                    )
                log(f"seed {seed}: training {name}")
                rec = train_run(params, name, seed=seed).info | {"fingerprint": fp}
                write_json(_record_path(params, name, seed), rec)
            if seed != params.shared.seed:
                train_seconds += float(rec.get("seconds") or 0)
            values[name].append(final_bpb(params, rec, texts))
            curves += [{"run": name, "seed": seed, **c} for c in checkpoint_bpb(params, rec, both)]
            log(f"seed {seed}: {name} final {params.shared.target_lang} bits per byte {values[name][-1]:.4f}")
    out_runs = {
        n: {
            "mean": statistics.mean(v),
            "std": statistics.stdev(v),
            "min": min(v),
            "max": max(v),
            "n": len(v),
            "values": v,
        }
        for n, v in values.items()
    }
    record = {
        "metric": f"final {params.shared.target_lang} bits per byte (first {params.evaluate.eval_bytes:,} test bytes)",
        "seeds": list(seeds),
        "runs": out_runs,
        "checkpoints": curves,
        "fingerprint": fp,
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.perf_counter() - t0, 1),
        "hardware": device_name("cuda" if torch.cuda.is_available() else "cpu"),
        "torch": torch.__version__,
    }
    write_json(spread_path(params), record)
    return record


def main(argv: list[str] | None = None) -> int:
    from warmstart.config import load_params

    ap = argparse.ArgumentParser(prog="python -m warmstart.evaluate.seed_spread", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", help="default: study.seeds of the params")
    ap.add_argument("--runs", nargs="+", help="default: every study run")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    rec = measure(params, args.seeds or list(params.study.seeds), args.runs)
    for name, r in rec["runs"].items():
        print(f"{name:12s} mean {r['mean']:.4f}  std {r['std']:.4f}  range {r['min']:.4f}-{r['max']:.4f}  (n {r['n']})")
    print(f"wrote {spread_path(params)} ({rec['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
