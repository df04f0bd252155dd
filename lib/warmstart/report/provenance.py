"""The report's provenance and how to reproduce it.

:func:`provenance` gathers where, when and with what the report was built, and what each stage recorded in its
fragment; :func:`provenance_section` prints it in the appendix. :func:`reproduce_box` states the commands that
rebuild the report: the commit, and the params that differ from the commit's ``params.yaml``
(:func:`params_diff`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from warmstart.config import Params
from warmstart.describe import duration, fmt, join_words
from warmstart.fragments import PACKAGES, _git, provenance_record
from warmstart.report.throughput import peak_text


def provenance(root: str | Path = ".", fragments: Sequence[Mapping] = (), packages: Sequence[str] = PACKAGES) -> dict:
    """The report's own :func:`~warmstart.fragments.provenance_record`, its ``date``, and under ``stages``
    the record each fragment's stage wrote (``{"stage", "seconds"}`` only, for a fragment without one)."""
    prov = provenance_record(root, packages=packages)
    prov["date"] = _when(prov["timestamp"])
    prov["stages"] = [
        {"stage": f["stage"], "seconds": f.get("seconds"), **(f.get("provenance") or {})} for f in fragments
    ]
    return prov


def _when(timestamp: str | None) -> str:
    if not timestamp:
        return "–"
    return dt.datetime.fromisoformat(timestamp).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _commit(c: str | None, short: bool = False) -> str:
    return "unknown (not a git checkout)" if not c else c[:12] if short else c


def _dirty(rec: Mapping) -> str:
    d = rec.get("dirty")
    if d is None:
        return "unknown"
    files = list(rec.get("dirty_files") or [])
    return "no" if not d else "yes: " + ", ".join(files[:3]) + (", …" if len(files) > 3 else "")


def _hardware(rec: Mapping) -> str:
    gpus = Counter(rec.get("gpus") or [])
    gpu = ", ".join(f"{n} × {g}" if n > 1 else g for g, n in gpus.items()) or "no GPU"
    return f"{rec.get('cpu') or '?'} ({rec.get('cpu_count')} cores), {gpu}"


def provenance_section(prov: Mapping) -> dict:
    """The provenance as a fragment-shaped section (in the appendix)."""
    env = [
        ["git commit", _commit(prov["commit"])],
        ["working tree dirty", _dirty(prov)],
        ["date", prov["date"]],
        ["python", prov["python"]],
        ["platform", prov["platform"]],
        ["hardware", _hardware(prov)],
        ["memory", fmt(prov.get("memory_gib")) + " GiB"],
    ]
    if prov.get("peak"):
        env.append(["peak FLOP/s for MFU", peak_text(prov["peak"])])
    stages = prov.get("stages", [])
    recorded = [s for s in stages if "timestamp" in s]
    rows = [
        [
            s["stage"],
            _commit(s.get("commit"), short=True),
            _dirty(s),
            _when(s.get("timestamp")),
            duration(s.get("seconds")) or "–",
            _hardware(s),
        ]
        if "timestamp" in s
        else [s["stage"], "–", "–", "–", duration(s.get("seconds")) or "–", "not recorded"]
        for s in stages
    ]
    pk = [
        [
            k,
            v,
            ", ".join(f"{s['stage']}: {s['packages'][k]}" for s in recorded if s.get("packages", {}).get(k, v) != v)
            or "–",
        ]
        for k, v in prov["packages"].items()
    ]
    paras = [
        "Where, when and with what this report was built, and what each stage recorded in its fragment when "
        "it ran: commit, working tree, time, wall time and hardware."
    ]
    commits = sorted({_commit(s.get("commit"), short=True) for s in recorded})
    if len(commits) > 1:
        paras.append(f"The stages ran at {len(commits)} different commits: {', '.join(commits)}.")
    elif commits and recorded[0].get("commit"):
        same = " (the report's)" if recorded[0]["commit"] == prov["commit"] else ""
        paras.append(f"Every stage that recorded its provenance ran at commit {commits[0]}{same}.")
    elif commits:
        paras.append("The stages ran outside a git checkout: no commit recorded.")
    if len(recorded) < len(stages):
        missing = [s["stage"] for s in stages if "timestamp" not in s]
        paras.append(f"No provenance recorded by: {', '.join(missing)} (fragments written before stages recorded it).")
    return {
        "stage": "provenance",
        "order": 1,
        "title": "Provenance",
        "paragraphs": paras,
        "tables": [
            {"caption": "Environment of the report stage.", "columns": ["item", "value"], "rows": env},
            {
                "caption": "Provenance each stage recorded in its fragment.",
                "columns": ["stage", "commit", "dirty", "finished", "wall time", "hardware"],
                "rows": rows,
            },
            {
                "caption": "Package versions (report stage), and the stages that ran with another version.",
                "columns": ["package", "version", "other versions"],
                "rows": pk,
            },
        ],
        "figures": [],
        "numbers": {},
        "seconds": None,
    }


# ---------------------------------------------------------------- reproducing the report


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, Mapping):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def params_dump(params: Any) -> dict[str, Any]:
    """Every section of the params (through a view that declares them all) as plain data."""
    return {sec: getattr(params, sec).model_dump(mode="json") for sec in Params.model_fields}


def params_diff(params: Any, root: str | Path, commit: str | None) -> list[str] | None:
    """``key=value`` for every param that differs from the commit's ``params.yaml`` (None: no commit to compare)."""
    import yaml

    from warmstart.config import validate

    if not commit:
        return None
    text = _git(Path(root), "show", f"{commit}:params.yaml")
    if text is None:
        return None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    try:
        committed, common_only = validate(raw, f"{commit[:12]}:params.yaml").model_dump(mode="json"), False
    except Exception:  # the commit's params predate this code's schema: compare the keys both have
        committed, common_only = raw, True
    now, then = _flatten(params_dump(params)), _flatten(committed)
    keys = (set(now) & set(then)) if common_only else (set(now) | set(then))
    out = []
    for k in sorted(keys):
        if now.get(k) != then.get(k):
            v = now.get(k)
            out.append(f"{k}={v if isinstance(v, str) else json.dumps(v)}")
    return out


def reproduce_box(params: Any, prov: Mapping, root: str | Path = ".", notebooks: Sequence[str] = ()) -> dict:
    """The commands that rebuild this report: the commit, ``make repro`` or ``dvc exp run -S ...`` with the params
    that differ from that commit's ``params.yaml``, and where the executed notebooks are."""
    commit = prov.get("commit")
    diff = params_diff(params, root, commit)
    paras = []
    if commit:
        paras.append(
            f"Commit {commit}"
            + (
                ""
                if not prov.get("dirty")
                else f" with uncommitted changes ({', '.join(prov.get('dirty_files') or [])[:200]}): they are not "
                "in the commit, so the commands below rebuild the committed state"
            )
            + "."
        )
        cmds = [f"git checkout {commit[:12]}"]
    else:
        paras.append("Built outside a git checkout: no commit to check out.")
        cmds = []
    if diff:
        cmds.append("make env && " + "dvc exp run " + " ".join(f"-S '{d}'" for d in diff))
        after = [f"Params that differ from params.yaml at that commit: {', '.join(diff)}."]
    elif diff is None and commit:
        cmds.append("make repro")
        after = ["The commit's params.yaml could not be read; make repro runs the committed params."]
    else:
        cmds.append("make repro")
        after = ["Params: exactly the commit's params.yaml (no difference)."]
    cmds.append("dvc metrics show   # the headline numbers; dvc metrics diff compares with the committed ones")
    if notebooks:
        where = sorted({Path(n).parent.as_posix() for n in notebooks})
        after.append(
            f"Every stage's executed notebook, with its full output, is in {join_words(where)} "
            f"({len(notebooks)} notebooks, listed in the appendix)."
        )
    return {"paragraphs": paras, "commands": "\n".join(cmds), "after": after, "diff": diff or []}
