"""The retrieval testbed across training seeds: ``reports/metrics/testbed_seeds.json``.

    python -m warmstart.context seeds [--seeds 1337 1338 1339 1340 1341]     (make testbed-seeds)

Length generalisation of small transformers is fragile: whether a model
trained at ``L`` still retrieves at ``4L`` depends on its random seed as much
as on the method (Zhou et al. 2024, "Transformers Can Achieve Length
Generalization But Not Robustly"). One testbed per study is what the
30-minute CPU budget allows, so its zero-shot numbers are one draw. This runs
the stage's testbed (``context.testbed``, the same configuration) once per
seed, into ``data/context/testbed_seeds/s<seed>`` (the study seed's is the
``context_testbed`` stage's own ``reports/context/testbed.json``, reused
when its configuration matches; so is a seed already measured), and writes::

    {"seeds", "fingerprint" (the testbed configuration, seed aside, and its code: :func:`fingerprint`),
     "task", "trained_len", "extended_len",
     "per_seed": {seed: {zero_shot_at_factor_L, zero_shot_at_L, finetuned_at_factor_L, finetuned_at_L: {method: acc},
                         best_zero_shot, best_zero_shot_ci, best_finetuned, targets: {name: bool}, seconds}},
     "across": {"zero_shot_at_factor_L" | "finetuned_at_factor_L": {method: {mean, min, max}}},
     "targets_met": {name: seeds meeting it}, "seconds", "hardware", "torch"}

Not a DVC output (a one-seed study never overwrites it) but a dep of the
``context`` stage, whose report section shows it when its fingerprint is the
current configuration's and code's, and its study-seed row is the stage's
current result (:func:`seeds_for`). A seed's own run is reused only when its
``fingerprint`` file matches.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from pathlib import Path
from typing import Any

TESTBED_SEEDS_FILE = ("metrics", "testbed_seeds.json")
# what does not change a testbed's result (the testbed's own test holds that for workers)
_NOT_RESULT = ("seed", "workers")


def testbed_config(params: Any, seed: int) -> Any:
    """The ``context_testbed`` stage's configuration with ``seed``."""
    from warmstart.context.testbed_config import TestbedConfig

    return TestbedConfig(**{**params.context.testbed, "seed": seed})


def _result_config(cfg: Any) -> dict[str, Any]:
    return {
        k: v for k, v in (cfg if isinstance(cfg, dict) else cfg.model_dump(mode="json")).items() if k not in _NOT_RESULT
    }


def code_hash() -> str:
    """16 hex digits of sha256 over the source of :mod:`warmstart.context.testbed`'s import closure (the trainer,
    the methods, the tasks...): a record measured by other code is not this code's."""
    from warmstart.closure import closure_files, lib_root

    lib = lib_root()
    files = closure_files("warmstart.context.testbed", lib)
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(lib)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def fingerprint(cfg: Any) -> str:
    """16 hex digits of sha256 over the testbed configuration's canonical JSON (the seed and workers left out) and
    :func:`code_hash`."""
    d = {"config": _result_config(cfg), "code": code_hash()}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _row(result: dict) -> dict[str, Any]:
    s = result["summary"]
    task, top = s["task"], str(s["extended_len"])
    best = s["best_zero_shot"]
    cell = result["zero_shot"][best][task][top] if best else None
    return {
        **{k: s[k] for k in ("zero_shot_at_factor_L", "zero_shot_at_L", "finetuned_at_factor_L", "finetuned_at_L")},
        "best_zero_shot": best,
        "best_zero_shot_ci": [cell["lo"], cell["hi"]] if cell else None,
        "best_finetuned": s["best_finetuned"],
        "targets": s["targets"],
        "seconds": round(result["seconds"]["total"], 1),
    }


def _across(rows: list[dict], key: str) -> dict[str, dict[str, float]]:
    methods = [m for m in rows[0][key] if all(m in r[key] for r in rows)]
    out = {}
    for m in methods:
        v = [r[key][m] for r in rows]
        out[m] = {"mean": statistics.fmean(v), "min": min(v), "max": max(v)}
    return out


def _reuse(cfg: Any, seed_dir: Path, stage_file: Path, fp: str) -> dict | None:
    """A result already measured for this configuration: the seed's own run when its fingerprint file says it
    was measured by this code, or the ``context_testbed`` stage's (DVC keeps that one current)."""
    want = _result_config(cfg)
    stamp = seed_dir / "fingerprint"
    own = [seed_dir / "testbed.json"] if stamp.is_file() and stamp.read_text().strip() == fp else []
    for path in [*own, stage_file]:
        if path.is_file():
            r = json.loads(path.read_text())
            if _result_config(r["config"]) == want and r["config"]["seed"] == cfg.seed:
                return r
    return None


def measure(params: Any, seeds: list[int]) -> dict[str, Any]:
    """Run (or reuse) the testbed for every seed; write and return the record (see the module doc)."""
    from warmstart.context.testbed import run_testbed
    from warmstart.fragments import provenance_record
    from warmstart.io import write_json
    from warmstart.train.launch import fresh_dir

    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: give distinct seeds, got {seeds}")
    cfgs = {s: testbed_config(params, s) for s in seeds}  # every configuration validated before anything runs
    cfg0 = cfgs[seeds[0]]
    if cfg0.finetune_len() not in cfg0.lengths():
        raise ValueError(
            f"context.testbed: eval_factors {cfg0.eval_factors} must include factor {cfg0.factor}: the "
            "testbed's targets are measured at factor x L"
        )
    fp = fingerprint(cfg0)
    t0 = time.perf_counter()
    rows, first = {}, None
    for s, cfg in cfgs.items():
        out = params.path("context", "testbed_seeds", f"s{s}")
        result = _reuse(cfg, out, params.report_path("context", "testbed.json"), fp)
        if result is None:
            print(f"testbed seed {s}: training and scoring into {out}", flush=True)
            result = run_testbed(cfg, fresh_dir(out))
            (out / "fingerprint").write_text(fp + "\n")
        else:
            print(f"testbed seed {s}: reused", flush=True)
        first = first or result["summary"]
        rows[str(s)] = _row(result)
    listed = list(rows.values())
    prov = provenance_record()
    record = {
        "seeds": list(seeds),
        "fingerprint": fp,
        "task": first["task"],
        "trained_len": first["trained_len"],
        "extended_len": first["extended_len"],
        "per_seed": rows,
        "across": {k: _across(listed, k) for k in ("zero_shot_at_factor_L", "finetuned_at_factor_L")},
        "targets_met": {t: sum(r["targets"][t] is True for r in listed) for t in listed[0]["targets"]},
        "seconds": round(time.perf_counter() - t0, 1),
        "hardware": f"{prov['cpu']} ({prov['cpu_count']} cores)",
        "torch": prov["packages"].get("torch"),
    }
    write_json(params.report_path(*TESTBED_SEEDS_FILE), record)
    return record


def seeds_for(params: Any) -> tuple[dict | None, str | None]:
    """``(record, None)`` when ``reports/metrics/testbed_seeds.json`` was measured for this testbed configuration;
    ``(None, why not)`` otherwise (absent, or another configuration)."""
    path = params.report_path(*TESTBED_SEEDS_FILE)
    if not path.is_file():
        return None, f"{path} is absent (make testbed-seeds measures it)"
    record = json.loads(path.read_text())
    want = fingerprint(testbed_config(params, params.shared.seed))
    if record.get("fingerprint") != want:
        return None, (
            f"the testbed across seeds in {path} was measured for another configuration or code (fingerprint "
            f"{record.get('fingerprint')}, this study's is {want}); it is not used"
        )
    stage = params.report_path("context", "testbed.json")
    row = record.get("per_seed", {}).get(str(params.shared.seed))
    if row and stage.is_file():
        now = json.loads(stage.read_text())["summary"].get("zero_shot_at_factor_L")
        if now != row["zero_shot_at_factor_L"]:
            return None, (
                f"its seed-{params.shared.seed} row differs from the context_testbed stage's result in {stage} "
                "(rerun make testbed-seeds); it is not used"
            )
    return record, None
