"""The evaluate stage: every run of the study, every step-tagged checkpoint.

What is measured (:mod:`warmstart.stages.evaluate` runs it; the notebook only shows it):

* **bits per byte** (:func:`warmstart.bpb.bits_per_byte`) on the first
  ``evaluate.eval_bytes`` of held-out *target* text and of held-out *source*
  text, at every checkpoint of ``run.json`` (step 0 = the initialised model).
  Source bpb going up is forgetting.
* the probes of :mod:`warmstart.evaluate.probes` (cloze, translation, masked token).
* **intervals** (:mod:`warmstart.evaluate.intervals`): every bits-per-byte number is a
  ratio of sums over the held-out texts (paragraphs), and the stage keeps each
  text's NLL at every evaluated checkpoint (``doc_nll.json``), so it
  bootstraps over texts: the final bits per byte of each run, the speed-up
  over scratch (whole curves resampled together) and each run's difference to
  the lowest run (paired: the same texts). Probe accuracies get 95% Wilson
  intervals and their chance level; chrF a bootstrap over the pairs. These
  intervals are evaluation-text noise only: run-to-run (seed) noise needs
  repeated training (``reports/metrics/seed_spread.json``, read by the report).

The probes run on the final checkpoint of each run by default
(``evaluate.probe_checkpoints: final``) to stay within the CPU budget; bits
per byte runs at every tagged checkpoint (``evaluate.checkpoints: tagged``).

Tables, figures and speed-ups from these measurements: :mod:`warmstart.evaluate.tables`; the stage's report
fragment: :mod:`warmstart.evaluate.fragment`.

Outputs: ``reports/evaluate/`` (``eval.json`` with intervals, ``swap_study.json``,
``checkpoints.csv`` long table for ``dvc plots``, ``final.csv``, ``doc_nll.json``,
figures, the cloze tasks), ``reports/metrics/evaluate.json`` (headline),
``reports/fragments/60_evaluate.json``.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from warmstart.bpb import bits_per_byte, first_bytes, held_out_texts
from warmstart.evaluate import intervals as stats
from warmstart.evaluate.harness import checked_registry, run_tasks
from warmstart.evaluate.probes import (
    EvalError,
    build_cloze_items,
    cloze_accuracy,
    masked_token_accuracy,
    translation_pairs,
    translation_probe,
    write_cloze_task,
)
from warmstart.runs import run_names

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- runs


def load_run(run_dir: str | Path) -> dict:
    """``data/logs/<name>/run.json``, checked for the fields the evaluation needs."""
    path = Path(run_dir, "run.json")
    if not path.is_file():
        raise EvalError(f"no run.json in {run_dir} (run the pretrain stage for this run)")
    run = json.loads(path.read_text(encoding="utf-8"))
    missing = [k for k in ("name", "kind", "tokenizer", "checkpoints", "final") if k not in run]
    if missing:
        raise EvalError(f"{path}: missing keys {missing}")
    if not run["checkpoints"]:
        raise EvalError(f"{path}: 'checkpoints' is empty (expected step 0 and the tagged checkpoints)")
    for c in run["checkpoints"]:
        for k in ("step", "bytes", "path"):
            if k not in c:
                raise EvalError(f"{path}: a checkpoint lacks {k!r}: {c}")
    return run


def load_runs(params: Any, names: Sequence[str] | None = None) -> list[dict]:
    """The runs that exist under ``data/runs`` (at least one, else an error naming what is missing)."""
    names = list(names or run_names(params))
    runs = [load_run(params.path("logs", n)) for n in names if params.path("logs", n, "run.json").is_file()]
    if not runs:
        raise EvalError(f"no run.json under {params.path('logs')} for any of {names} (run the pretrain stages)")
    return runs


def select_checkpoints(run: dict, mode: str) -> list[dict]:
    """Every checkpoint (``tagged``) or the last one only (``final``), in step order."""
    ckpts = sorted(run["checkpoints"], key=lambda c: c["step"])
    if mode == "tagged":
        return ckpts
    if mode == "final":
        return ckpts[-1:]
    raise EvalError(f"checkpoints mode must be 'tagged' or 'final', got {mode!r}")


# ---------------------------------------------------------------- measuring every checkpoint


def _load(path: str, trust_remote_code: bool = False):
    from warmstart.model import load_model

    return load_model(path, trust_remote_code=trust_remote_code)


def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def evaluate_runs(params: Any, runs: Sequence[dict], progress: bool = True) -> dict:
    """Evaluate every run; returns ``{"checkpoints": DataFrame, "final": DataFrame, "translations": [...], ...}``."""
    from tqdm.auto import tqdm

    from warmstart.data.corpus import head_records, iter_split

    ev, sh = params.evaluate, params.shared
    src_lang, tgt_lang = sh.source_lang, sh.target_lang
    texts = {
        "target": held_out_texts(params, tgt_lang, "test", ev.eval_bytes),
        "source": held_out_texts(params, src_lang, "test", ev.eval_bytes),
    }

    # probe items come from every held-out chapter (test, then val; at most probe_bytes of them, streamed):
    # neither is trained on in any language, and cloze distractors need several documents. Bits per byte uses
    # the test split alone.
    test_recs = {lang: head_records(params, lang, ["test", "val"], ev.probe_bytes) for lang in (src_lang, tgt_lang)}
    # the chapter each bits-per-byte text comes from (held_out_texts keeps the leading non-blank test texts)
    docs = {}
    for role, lang in (("target", tgt_lang), ("source", src_lang)):
        nonblank = (r for r in iter_split(params, lang, "test") if r["text"].strip())
        recs = list(itertools.islice(nonblank, len(texts[role])))
        docs[role] = [r.get("doc") for r in recs] if [r["text"] for r in recs] == texts[role] else []
    cloze_items = {}
    if ev.cloze_items:
        for role, lang in (("target", tgt_lang), ("source", src_lang)):
            cloze_items[role] = build_cloze_items(
                test_recs[lang], ev.cloze_items, ev.cloze_context_chars, ev.cloze_ending_chars, sh.seed
            )
            write_cloze_task(
                cloze_items[role], params.report_path("evaluate", "cloze"), f"cloze_{lang.replace('-', '_')}"
            )
    pairs = translation_pairs(test_recs[src_lang], test_recs[tgt_lang], ev.translation_pairs, ev.translation_max_chars)
    masked_texts = first_bytes([t for t in texts["target"]], ev.eval_bytes)
    seq_len = params.pretrain.seq_len

    rows, finals, translations = [], [], []
    doc_rows: list[dict] = []
    doc_bytes: dict[str, list[int]] = {}
    probe_ci: dict[str, dict] = {}
    # the masked-token probe on the runs that train with the hybrid objective and on the runs the study
    # compares them with (an arm's reference, study.arms): what the objective buys. Not on the others (it
    # costs ~7 s a run on 2 CPU cores and answers no question of the study).
    hybrid = {r["name"] for r in runs if r.get("masked_share", 0)}
    masked_runs = hybrid | {a.init for n, a in params.study.arms.items() if n in hybrid}
    # lm-evaluation-harness tasks by name (evaluate.lm_eval_tasks, its default registry on): bad names fail here
    # (the cloze probe would otherwise switch the hub off for the process: its task is a local file)
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE") if ev.lm_eval_tasks else ():
        os.environ.setdefault(var, "0")  # a user's own offline setting (a cluster's cache) stands
    registry = checked_registry(ev.lm_eval_tasks, ev.lm_eval_include) if ev.lm_eval_tasks else None
    harness: list[dict] = []
    jobs = [(run, c) for run in runs for c in select_checkpoints(run, ev.checkpoints)]
    final_paths = {run["name"]: sorted(run["checkpoints"], key=lambda c: c["step"])[-1]["path"] for run in runs}
    bar = tqdm(jobs, desc="evaluate", disable=not progress)
    tokenizers: dict[str, Any] = {}
    for run, ck in bar:
        bar.set_postfix_str(f"{run['name']}@{ck['step']}")
        tok = tokenizers.setdefault(run["tokenizer"], _tokenizer(run["tokenizer"]))
        model = _load(ck["path"], trust_remote_code=params.base.trust_remote_code)
        t0 = time.perf_counter()
        row = {
            "run": run["name"],
            "kind": run.get("kind"),
            "method": run.get("method"),
            "step": int(ck["step"]),
            "phase": ck.get("phase"),
            "tokens": int(ck.get("tokens", 0)),
            "bytes": int(ck["bytes"]),
        }
        doc_row = {"run": run["name"], "step": int(ck["step"]), "bytes": int(ck["bytes"])}
        for role in ("target", "source"):
            r = bits_per_byte(model, tok, texts[role], seq_len=seq_len, batch_size=ev.batch_size)
            row[f"bpb_{role}"] = r["bits_per_byte"]
            row[f"tokens_per_byte_{role}"] = r["tokens_per_byte"]
            doc_row[role] = r["doc_nll_nats"]
            doc_bytes.setdefault(role, r["doc_bytes"])
        doc_rows.append(doc_row)
        is_final = ck["path"] == final_paths[run["name"]]
        ci: dict[str, Any] = {}
        if ev.probe_checkpoints == "tagged" or is_final:
            for role, items in cloze_items.items():
                c = cloze_accuracy(model, tok, items, batch_size=ev.batch_size)
                row[f"cloze_acc_{role}"], row[f"cloze_acc_norm_{role}"] = c["acc"], c["acc_norm"]
                ci[f"cloze_acc_{role}_ci"], ci[f"cloze_acc_norm_{role}_ci"] = c["acc_ci"], c["acc_norm_ci"]
            if pairs:
                t = translation_probe(
                    model,
                    tok,
                    pairs,
                    src_lang,
                    tgt_lang,
                    ev.translation_max_new_tokens,
                    n_boot=stats.N_BOOT if is_final else 0,
                    seed=sh.seed,
                )
                row["chrf"] = t["chrf"]
                ci["chrf_ci"] = t["chrf_ci"]
                if is_final:
                    translations += [{"run": run["name"], **e} for e in t["examples"]]
            if registry is not None:
                h = run_tasks(model, tok, ev.lm_eval_tasks, limit=ev.lm_eval_limit, num_fewshot=ev.lm_eval_num_fewshot,
                              batch_size=ev.batch_size, seed=sh.seed, registry=registry)  # fmt: skip
                harness.append({"run": run["name"], "step": int(ck["step"]), **h})
            if ev.masked_items and run["name"] in masked_runs and tok.mask_token_id is not None:
                m = masked_token_accuracy(model, tok, masked_texts, ev.masked_items, seq_len, seed=sh.seed)
                row["masked_acc"] = m["masked_acc"]
                ci["masked_acc_ci"], ci["masked_tokens"] = m["masked_acc_ci"], m["masked_tokens"]
        if is_final:
            probe_ci[run["name"]] = {k: v for k, v in ci.items() if v is not None}
        row["eval_seconds"] = time.perf_counter() - t0
        rows.append(row)
        if is_final:
            finals.append(row)
        del model
    ck = pd.DataFrame(rows)
    doc_nll = {
        "unit": "paragraph",
        "bytes": doc_bytes,
        "docs": docs,
        "checkpoints": doc_rows,
        "languages": {"target": tgt_lang, "source": src_lang},
    }
    return {
        "checkpoints": ck,
        "final": pd.DataFrame(finals),
        "translations": translations,
        "cloze_items": {k: len(v) for k, v in cloze_items.items()},
        "pairs": len(pairs),
        "doc_nll": doc_nll,
        "probe_ci": probe_ci,
        "harness": harness,
        "cloze_chance": (1 / len(next(iter(cloze_items.values()))[0]["endings"])) if cloze_items else None,
    }


# ---------------------------------------------------------------- intervals


def _curve_matrix(doc_nll: dict, run: str, role: str = "target") -> tuple[np.ndarray, np.ndarray]:
    """``(bytes seen per checkpoint, NLL matrix (checkpoints, texts))`` of one run, in step order."""
    rows = sorted((r for r in doc_nll["checkpoints"] if r["run"] == run), key=lambda r: r["step"])
    return np.array([r["bytes"] for r in rows], dtype=float), np.array([r[role] for r in rows], dtype=float)


def _reach(b: np.ndarray, y: np.ndarray, target: float) -> float | None:
    """:func:`bytes_to_reach` on arrays sorted by bytes."""
    if y[0] <= target:
        return 0.0
    hit = np.nonzero(y <= target)[0]
    if not len(hit):
        return None
    i = int(hit[0])
    return float(b[i - 1] + (y[i - 1] - target) / (y[i - 1] - y[i]) * (b[i] - b[i - 1]))


def speedup_samples(doc_nll: dict, run: str, weights: np.ndarray, scratch: str = "scratch") -> np.ndarray:
    """Bootstrap replicates of :func:`speedup` (run vs scratch): every checkpoint of both curves recomputed on
    the same resampled texts; ``inf`` where the run starts below scratch's final, NaN where it never reaches it."""
    nbytes = np.asarray(doc_nll["bytes"]["target"], dtype=float)
    rb, rm = _curve_matrix(doc_nll, run)
    sb, sm = _curve_matrix(doc_nll, scratch)
    ry, sy = stats.bpb_samples(rm, nbytes, weights), stats.bpb_samples(sm, nbytes, weights)
    out = np.empty(len(weights))
    for k in range(len(weights)):
        need = _reach(rb, ry[k], float(sy[k, -1]))
        out[k] = np.nan if need is None else (np.inf if need == 0 else sb[-1] / need)
    return out


def intervals(
    doc_nll: dict | None,
    finals: pd.DataFrame,
    seed: int = 0,
    n_boot: int = stats.N_BOOT,
    pairs: dict[str, str] | None = None,
    step0_pairs: list[tuple[str, str]] | None = None,
) -> dict:
    """Evaluation-text intervals of the final numbers, from the per-text NLL (:mod:`warmstart.evaluate.intervals`).

    ``{"runs": {run: {"bpb_target_ci", "bpb_source_ci", "speedup_vs_scratch_ci"}}, "vs_lowest": {"reference":
    run, "runs": {run: {"diff", "ci", "distinguishable"}}}, "pairs": {run: {"reference", "target": {...},
    "source": {...}}}, "method": {...}}``; ``{}`` without per-text NLL. ``pairs`` maps a run to the run it is
    compared with (an arm to its init): the paired difference in target and source bits per byte.
    ``step0_pairs``: (run, reference) pairs compared at step 0 in target bits per byte (``"step0"``: a vocabulary
    transfer method against the heuristic it starts from and against the best one, before any training).
    """
    if not doc_nll or not doc_nll.get("checkpoints") or finals.empty:
        return {}
    by_final = {(r["run"], r["step"]): r for r in doc_nll["checkpoints"]}
    final = {r["run"]: by_final.get((r["run"], int(r["step"]))) for _, r in finals.iterrows()}
    final = {k: v for k, v in final.items() if v}
    out_runs: dict[str, dict] = {}
    n_texts = {role: len(doc_nll["bytes"].get(role, [])) for role in ("target", "source")}
    weights = {role: stats.bootstrap_weights(n, n_boot, seed) for role, n in n_texts.items() if n > 1}
    for name, row in final.items():
        d = out_runs.setdefault(name, {})
        for role, w in weights.items():
            ci = stats.percentile_interval(stats.bpb_samples(row[role], doc_nll["bytes"][role], w))
            d[f"bpb_{role}_ci"] = list(ci) if ci else None
        if "scratch" in final and "target" in weights and name != "scratch":
            sp = speedup_samples(doc_nll, name, weights["target"])
            finite = np.where(np.isinf(sp), np.nan, sp)
            ci = stats.percentile_interval(finite)
            d["speedup_vs_scratch_ci"] = list(ci) if ci else None
            d["speedup_never_reached_share"] = float(np.isnan(sp).mean())
    lowest = str(finals.sort_values("bpb_target")["run"].iloc[0])
    comp = {}
    if lowest in final and "target" in weights:
        for name, row in final.items():
            if name != lowest:
                comp[name] = stats.paired_difference(
                    row["target"], final[lowest]["target"], doc_nll["bytes"]["target"], n_boot=n_boot, seed=seed
                )
    paired = {}
    for name, ref in (pairs or {}).items():
        if name in final and ref in final:
            paired[name] = {"reference": ref} | {
                role: stats.paired_difference(
                    final[name][role], final[ref][role], doc_nll["bytes"][role], n_boot=n_boot, seed=seed
                )
                for role in weights
            }
    at0 = {r["run"]: r for r in doc_nll["checkpoints"] if int(r["step"]) == 0}
    step0 = {}
    for a, b in step0_pairs or []:
        if a in at0 and b in at0 and "target" in weights:
            step0[f"{a} vs {b}"] = {"run": a, "reference": b} | stats.paired_difference(
                at0[a]["target"], at0[b]["target"], doc_nll["bytes"]["target"], n_boot=n_boot, seed=seed
            )
    docs = doc_nll.get("docs") or {}
    return {
        "runs": out_runs,
        "vs_lowest": {"reference": lowest, "runs": comp},
        "pairs": paired,
        "step0": step0,
        "method": {
            "level": stats.LEVEL,
            "bootstrap_samples": n_boot,
            "seed": seed,
            "unit": doc_nll.get("unit", "text"),
            "texts": n_texts,
            "chapters": {k: len(set(v)) for k, v in docs.items() if v},
            "note": "evaluation-text noise only (resampled held-out texts); not run-to-run (seed) noise",
        },
    }


# ---------------------------------------------------------------- training logs


def read_log_records(run: dict) -> list[dict]:
    p = Path(run.get("log") or "")
    if not p.is_file():
        return []
    from warmstart.io import read_jsonl

    return list(read_jsonl(p))


def read_log(run: dict) -> pd.DataFrame:
    p = Path(run.get("log") or "")
    if not p.is_file():
        return pd.DataFrame()
    from warmstart.io import read_jsonl

    df = pd.DataFrame(read_jsonl(p))
    df["run"] = run["name"]
    return df


# ---------------------------------------------------------------- eval.json


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def metrics_json(res: dict, init: pd.DataFrame, ints: dict | None = None) -> dict:
    """``eval.json``: per run, the final probes and bpb with their intervals (``<key>_ci``: ``[low, high]``),
    step-0 bpb and the speed-up; the best (lowest final target bpb) run; the evaluation-text comparison of every
    run with it (``vs_lowest``), the chance level of the cloze probe and how the intervals were made."""
    out: dict[str, Any] = {"runs": {}}
    fin = res["final"]
    for _, r in fin.iterrows():
        d = {k: r[k] for k in fin.columns if k not in ("run", "kind", "method", "phase") and pd.notna(r[k])}
        out["runs"][r["run"]] = d
    for _, r in init.iterrows():
        d = out["runs"].setdefault(r["run"], {})
        if pd.notna(r["bpb_step0"]):
            d["bpb_target_step0"] = r["bpb_step0"]
        if r.get("bpb_source_step0") is not None and pd.notna(r.get("bpb_source_step0")):
            d["bpb_source_step0"] = r["bpb_source_step0"]
        if r["speedup"] is not None and pd.notna(r["speedup"]):
            d["speedup_vs_scratch"] = r["speedup"]
    for name, ci in (res.get("probe_ci") or {}).items():
        out["runs"].setdefault(name, {}).update(ci)
    ints = ints or {}
    for name, ci in (ints.get("runs") or {}).items():
        out["runs"].setdefault(name, {}).update({k: v for k, v in ci.items() if v is not None})
    if not fin.empty:
        out["best"] = str(fin.sort_values("bpb_target")["run"].iloc[0])
    out["cloze_items"] = res["cloze_items"]
    out["translation_pairs"] = res["pairs"]
    if res.get("cloze_chance") is not None:
        out["chance"] = {"cloze": res["cloze_chance"]}
    if ints.get("vs_lowest"):
        out["vs_lowest"] = ints["vs_lowest"]
        out["intervals"] = ints["method"]
    if ints.get("pairs"):
        out["arms"] = ints["pairs"]
    if ints.get("step0"):
        out["step0_pairs"] = ints["step0"]
    return _clean(out)


HEURISTICS = ("random", "exact", "fvt", "focus", "omp")  # initialisations computed from other rows only


def step0_pairs(methods: list[str], tokdistil_start: str, init: pd.DataFrame) -> list[tuple[str, str]]:
    """What the step-0 comparison asks of the learned and the default initialisations: ``tokdistil`` against
    the heuristic it starts from and the best heuristic at step 0, ``hf-default`` against the best heuristic."""
    s0 = {r["run"]: r["bpb_step0"] for _, r in init.iterrows() if pd.notna(r["bpb_step0"])}
    heur = [m for m in methods if m in HEURISTICS and m in s0]
    best = min(heur, key=s0.get) if heur else None
    out = []
    if "tokdistil" in methods:
        out += [("tokdistil", ref) for ref in dict.fromkeys([tokdistil_start, best]) if ref]
    if "hf-default" in methods and best:
        out.append(("hf-default", best))
    return out


def best_run(eval_json: dict) -> str:
    """The run with the lowest final target bits per byte."""
    runs = eval_json.get("runs") or {}
    scored = {n: d["bpb_target"] for n, d in runs.items() if d.get("bpb_target") is not None}
    if not scored:
        raise EvalError("eval.json has no run with a final bpb_target")
    return min(scored, key=scored.get)
