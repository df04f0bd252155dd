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
     "fingerprints": {run: the configuration that run was measured for (:func:`run_fingerprint`)},
     "train_seconds": the extra seeds' training (their run records), "seconds": the measurements' wall time,
     "hardware", "torch"}

Each run carries its own fingerprint: what decides *that* run's final bits per byte (the data, tokenizer and
base sections, the swap settings, its kind and starting method, its resolved phases and pretrain settings, the
evaluation's text and the shared seed and languages). Adding an arm, or changing one arm's overrides, leaves
every other run's spread valid. ``--runs`` measures some runs and merges them into the file
(:func:`merge_spread`): the other runs' entries stay while their fingerprints match and the seeds are the same.

The report uses a run's spread only when its fingerprint is that run's current one (:func:`spread_for`); it
says which runs have no spread for this configuration.
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

# the sections the evaluate stage declares whole for the seed spread (with evaluate and shared.*): what
# :func:`run_fingerprint` reads, key by key, lies within them
STUDY_KEYS = (
    "corpus",
    "tokenizer",
    "base",
    "vocab_swap",
    "pretrain",
    "study.arms",
)
# sections in every run's fingerprint, whole but for SKIP's fields
RUN_SECTIONS = ("corpus", "tokenizer", "base", "vocab_swap")
# fields that change no run's model: which swap methods exist (every other run is unaffected), the
# nearest-neighbour table, step 0's evaluation text, the fertility table's text
SKIP = {
    "vocab_swap": frozenset({"methods", "neighbours", "eval_bytes"}),
    "tokenizer": frozenset({"fertility_bytes"}),
}
# single keys in every run's fingerprint
RUN_KEYS = ("evaluate.eval_bytes", "shared.seed", "shared.source_lang", "shared.target_lang")


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):  # a section (or a stage's view of one: the key must be declared)
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _key(params: Any, key: str) -> Any:
    node: Any = params
    for part in key.split("."):
        node = getattr(node, part)
    return node


def run_fingerprint(params: Any, name: str) -> str:
    """A short hash (sha256 of canonical JSON, 16 hex digits) of what decides study run ``name``'s final bits
    per byte: :data:`RUN_SECTIONS` but :data:`SKIP`'s fields, the run's kind and method,
    its resolved phases (:func:`warmstart.train.study.run_phases`, its arm's overrides applied), every other
    ``pretrain`` setting (an arm's: ``params.pretrain_for(name)``) and :data:`RUN_KEYS`. Read key by key, so a
    stage reads only those keys (within :data:`STUDY_KEYS`, ``evaluate`` and ``shared``)."""
    from warmstart.config.sections import Pretrain
    from warmstart.runs import get_run
    from warmstart.train.study import run_phases

    r = get_run(params, name)
    pt = params.pretrain_for(name) if r.kind == "arm" else params.pretrain
    picked: dict[str, Any] = {key: _plain(_key(params, key)) for key in RUN_KEYS}
    for key in RUN_SECTIONS:
        section = _key(params, key)
        picked[key] = {
            f: _plain(getattr(section, f)) for f in section.__class__.model_fields if f not in SKIP.get(key, ())
        }
    picked["pretrain"] = {f: _plain(getattr(pt, f)) for f in Pretrain.model_fields if f != "phases"}
    picked["run"] = {"kind": r.kind, "method": r.method}
    picked["phases"] = run_phases(params, name)
    return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


def run_fingerprints(params: Any) -> dict[str, str]:
    """``{run: run_fingerprint}`` for every current study run, in the study's order."""
    from warmstart.runs import run_names

    return {n: run_fingerprint(params, n) for n in run_names(params)}


def spread_path(params: Any) -> Path:
    return params.report_path(*SEED_SPREAD_FILE)


def _measure_cmd(runs: list[str]) -> str:
    return f"python -m warmstart.evaluate.seed_spread --runs {' '.join(runs)}"


def spread_for(params: Any) -> tuple[dict[str, Any] | None, str]:
    """(the recorded seed spread restricted to the runs measured for their current configuration, why).

    ``why`` is ``""`` when every current study run is covered, else a sentence naming the runs without a
    spread for this configuration; the spread is None (and ``why`` says why) when no run is covered. The
    restricted spread's ``runs``, ``checkpoints`` and ``fingerprints`` hold only the covered runs."""
    from warmstart.evaluate.intervals import seed_spread

    path = spread_path(params)
    spread = seed_spread(params.shared.reports_dir)
    if spread is None:
        return None, f"no run-to-run spread is recorded ({path}: make seed-spread)"
    want = run_fingerprints(params)
    have = spread.get("fingerprints") or {}
    covered = [n for n, fp in want.items() if n in spread["runs"] and have.get(n) == fp]
    missing = [n for n in want if n not in covered]
    if not covered:
        if not have:
            return None, (
                f"the run-to-run spread in {path} records no per-run fingerprints (measured before they were "
                "recorded, for another configuration); it is not used (make seed-spread measures it again)"
            )
        return None, (
            f"the run-to-run spread in {path} was measured for another configuration of every study run (no "
            "recorded run fingerprint is the run's current one); it is not used (make seed-spread measures it again)"
        )
    keep = set(covered)
    out = spread | {
        "runs": {n: spread["runs"][n] for n in covered},
        "checkpoints": [c for c in spread.get("checkpoints") or [] if c.get("run") in keep],
        "fingerprints": {n: want[n] for n in covered},
    }
    if not missing:
        return out, ""
    some = "runs " + ", ".join(missing) if len(missing) > 1 else "run " + missing[0]
    return out, (
        f"the run-to-run spread in {path} has no spread for the {some} as configured now "
        f"({_measure_cmd(missing)} measures {'them' if len(missing) > 1 else 'it'})"
    )


def spread_section(params: Any) -> dict[str, Any] | None:
    """The report's run-to-run spread section (fragment-shaped), or None when no spread is recorded for this
    configuration (the summary's limitations then say why)."""
    spread, why = spread_for(params)
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
        f"{'Every study run' if not why else 'Each run below'} trained again with seeds "
        f"{', '.join(map(str, spread['seeds']))} ({spread['metric']}; "
        f"python -m warmstart.evaluate.seed_spread, {(spread.get('train_seconds') or spread['seconds'] or 0) / 60:.0f} min of "
        f"training on {spread['hardware'] or '?'}). The seed "
        "changes the order of the training batches (and scratch's initial weights); everything else is the "
        "study's configuration."
    ]
    paras.append(
        "This is the spread the summary's ranking uses: two runs whose difference is within twice "
        "the root sum of their seed variances are not told apart."
    )
    if why:
        paras.append(
            f"Not every run is covered: {why}. The ranking compares such a run with the median standard "
            "deviation of the measured runs."
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
    """The trained run's ``run.json`` for this seed and configuration (the run's fingerprint ``fp``), or None."""
    path = _record_path(params, name, seed)
    if not path.is_file():
        return None
    rec = json.loads(path.read_text(encoding="utf-8"))
    if seed != params.shared.seed and rec.get("fingerprint") != fp:
        return None  # trained for another configuration: train again
    return rec


def _check_seeds(old: dict[str, Any] | None, seeds: list[int], whole: bool, where: Any = SEED_SPREAD_FILE[-1]) -> None:
    """Some runs merge into an existing spread only with its seeds (every run of a spread has the same ones)."""
    if old is None or whole:
        return
    have = list(old.get("seeds") or [])
    if have != list(seeds):
        raise ValueError(
            f"{where} holds the spread over seeds {have}, not {list(seeds)}: measure these runs with "
            f"--seeds {' '.join(map(str, have))} to add them, or measure the whole study (no --runs) to replace it"
        )


def merge_spread(
    old: dict[str, Any] | None, new: dict[str, Any], current: dict[str, str], whole: bool = False
) -> dict[str, Any]:
    """The spread file after measuring ``new`` (a record of :func:`measure` for the runs it measured).

    ``old``: the file as it was (None: none); ``current``: ``{run: run_fingerprint}`` of every current study
    run (:func:`run_fingerprints`), in the study's order; ``whole``: every study run was measured. A whole
    measurement, or no old file, gives ``new`` as is. Otherwise the seeds must be the old file's (ValueError),
    and the old file's runs that were not measured again stay (their values and checkpoints) when their
    recorded fingerprint is still their current one; other old runs are dropped. ``train_seconds`` and
    ``seconds`` add up; ``hardware`` and ``torch`` list both when they differ."""
    if old is None or whole:
        return dict(new)
    _check_seeds(old, new["seeds"], whole)
    fps = old.get("fingerprints") or {}
    kept = [
        n
        for n in current
        if n not in new["runs"] and n in (old.get("runs") or {}) and fps.get(n) is not None and fps.get(n) == current[n]
    ]
    order = [n for n in current if n in kept or n in new["runs"]] + [n for n in new["runs"] if n not in current]
    runs = {n: (new["runs"][n] if n in new["runs"] else old["runs"][n]) for n in order}
    fingerprints = {n: (new["fingerprints"][n] if n in new["runs"] else fps[n]) for n in order}
    keep = set(kept)
    checkpoints = [c for c in old.get("checkpoints") or [] if c.get("run") in keep] + list(new.get("checkpoints") or [])

    def total(key: str) -> float | None:
        vals = [d.get(key) for d in (old, new) if d.get(key) is not None]
        return round(sum(vals), 1) if vals else None

    def both(key: str) -> Any:
        a, b = old.get(key), new.get(key)
        return b if a in (None, b) else a if b is None else f"{a}; {b}"

    return {
        **new,
        "runs": runs,
        "checkpoints": checkpoints,
        "fingerprints": fingerprints,
        "train_seconds": total("train_seconds"),
        "seconds": total("seconds"),
        "hardware": both("hardware"),
        "torch": both("torch"),
    }


def measure(params: Any, seeds: list[int], runs: list[str] | None = None, log: Any = print) -> dict[str, Any]:
    """Train what is missing, measure every (run, seed) of ``runs`` (default: every study run), merge them into
    the spread file (:func:`merge_spread`), write it and return the file's record."""
    import torch

    from warmstart.bpb import held_out_texts
    from warmstart.flops import device_name
    from warmstart.io import write_json
    from warmstart.runs import run_names
    from warmstart.train.study import train_run

    if len(seeds) < 2:
        raise ValueError(f"a seed spread needs at least two seeds, got {seeds} (study.seeds or --seeds)")
    names = list(dict.fromkeys(runs or run_names(params)))
    unknown = sorted(set(names) - set(run_names(params)))
    if unknown:
        raise ValueError(f"unknown runs {unknown}; the study's runs are {run_names(params)}")
    whole = set(names) == set(run_names(params))
    path = spread_path(params)
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    _check_seeds(old, seeds, whole, path)  # before any training
    t0 = time.perf_counter()
    current = run_fingerprints(params)
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
            rec = _record(params, name, seed, current[name])
            if rec is None:
                if seed == params.shared.seed:
                    raise FileNotFoundError(
                        f"run {name!r} of the DVC study (shared.seed {seed}) is not trained: run `dvc repro` first"
                    )
                log(f"seed {seed}: training {name}")
                rec = train_run(params, name, seed=seed).info | {"fingerprint": current[name]}
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
        "fingerprints": {n: current[n] for n in names},
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.perf_counter() - t0, 1),
        "hardware": device_name("cuda" if torch.cuda.is_available() else "cpu"),
        "torch": torch.__version__,
    }
    merged = merge_spread(old, record, current, whole)
    write_json(path, merged)
    return merged


def main(argv: list[str] | None = None) -> int:
    from warmstart.config import load_params

    ap = argparse.ArgumentParser(prog="python -m warmstart.evaluate.seed_spread", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", help="default: study.seeds of the params")
    ap.add_argument("--runs", nargs="+", help="default: every study run")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    rec = measure(params, args.seeds or list(params.study.seeds), args.runs)
    for name, r in rec["runs"].items():  # the file's runs: those measured now and those kept
        print(f"{name:12s} mean {r['mean']:.4f}  std {r['std']:.4f}  range {r['min']:.4f}-{r['max']:.4f}  (n {r['n']})")
    print(f"wrote {spread_path(params)} ({rec['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
