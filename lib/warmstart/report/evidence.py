"""The summary's evidence: numbers that know where they come from, and the ranking of the runs they support.

Every number the summary (:mod:`warmstart.report.findings`) prints is a :class:`Number` that remembers its file,
its key and how it was formatted, so a test can read the file again and check the page (:func:`resolve`,
:meth:`Summary.numbers`). :func:`ranking` orders the runs by final target bits per byte and calls the lowest
``best`` only when it is distinguishable from every other run (the model card uses it too).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warmstart.describe import join_words
from warmstart.evaluate import intervals as stats

# ---------------------------------------------------------------- numbers that know where they come from


def format_value(value: Any, spec: str) -> str:
    """How the summary prints a number: ``f3`` 1.844, ``+f3`` +0.012 (signed), ``f2`` 0.52, ``x2`` 2.64×,
    ``int`` 2,823,296, ``mb`` 1.89 MB, ``pct`` 48%, ``str`` as is."""
    if spec == "str":
        return str(value)
    v = float(value)
    if spec.startswith("+f"):
        return f"{v:+.{int(spec[2:])}f}"
    if spec.startswith("f"):
        return f"{v:.{int(spec[1:])}f}"
    if spec == "x2":
        return "∞×" if math.isinf(v) else f"{v:.2f}×"
    if spec == "int":
        return f"{int(round(v)):,}"
    if spec == "mb":
        return f"{v / 1e6:.2f} MB"
    if spec == "pct":
        return f"{100 * v:.0f}%"
    raise ValueError(f"unknown format {spec!r}")


@dataclass(frozen=True)
class Number:
    """A printed number and its origin: ``source`` is a path under the reports dir, ``key`` a dotted path in
    that JSON file (or ``run=<run>;step=<step>;column=<col>`` in a CSV file)."""

    value: Any
    spec: str
    source: str
    key: str

    @property
    def text(self) -> str:
        return format_value(self.value, self.spec)


def resolve(reports_dir: str | Path, source: str, key: str) -> Any:
    """The value at ``key`` of ``reports_dir/source`` (see :class:`Number`)."""
    path = Path(reports_dir, source)
    if path.suffix == ".csv":
        want = dict(part.split("=", 1) for part in key.split(";"))
        with open(path, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                if row["run"] == want["run"] and int(row["step"]) == int(want["step"]):
                    return float(row[want["column"]])
        raise KeyError(f"{path}: no row {key}")
    d: Any = json.loads(path.read_text(encoding="utf-8"))
    for part in _split_key(key):
        d = d[int(part)] if isinstance(d, list) else d[part]
    return d


def _split_key(key: str) -> list[str]:
    """Dotted path with ``[...]`` quoting for parts that contain dots: ``runs.[nb-NO].x``."""
    out, cur, quoted = [], "", False
    for ch in key:
        if ch == "[" and not cur:
            quoted = True
        elif ch == "]" and quoted:
            quoted = False
        elif ch == "." and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


@dataclass
class Finding:
    """One paragraph of the summary: a heading, the sentence(s), the numbers in them."""

    heading: str
    text: str
    numbers: list[Number] = field(default_factory=list)
    stage: str | None = None
    status: str | None = None  # goals: met | missed | unknown


@dataclass
class Summary:
    question: str
    setup: Finding
    results: list[Finding]
    goals: list[Finding]
    limitations: list[str]
    ranking: dict[str, Any]

    def numbers(self) -> list[tuple[Finding, Number]]:
        return [(f, n) for f in (self.setup, *self.results, *self.goals) for n in f.numbers]

    def as_dict(self) -> dict[str, Any]:
        def fd(f: Finding) -> dict:
            return {
                "heading": f.heading,
                "text": f.text,
                "stage": f.stage,
                "status": f.status,
                "numbers": [{"value": n.value, "text": n.text, "source": n.source, "key": n.key} for n in f.numbers],
            }

        return {
            "question": self.question,
            "setup": fd(self.setup),
            "results": [fd(f) for f in self.results],
            "goals": [fd(f) for f in self.goals],
            "limitations": list(self.limitations),
            "ranking": self.ranking,
        }


class _Records:
    """The reports dir's records, read once; missing files are {}."""

    def __init__(self, reports_dir: str | Path) -> None:
        self.root = Path(reports_dir)
        self._cache: dict[str, Any] = {}

    def get(self, rel: str) -> dict:
        if rel not in self._cache:
            p = self.root / rel
            try:
                self._cache[rel] = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}
            except json.JSONDecodeError:
                self._cache[rel] = {}
        return self._cache[rel]

    def num(self, rel: str, key: str, spec: str) -> Number | None:
        try:
            v = resolve(self.root, rel, key)
        except (KeyError, IndexError, ValueError, OSError, TypeError):
            return None
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        return Number(v, spec, rel, key)


# ---------------------------------------------------------------- ranking: "best" only when distinguishable


def ranking(
    final: Mapping[str, float], eval_json: Mapping | None = None, spread: Mapping | None = None
) -> dict[str, Any]:
    """Runs ordered by final target bits per byte, and which of them the lowest is distinguishable from.

    Two checks, each used when its record exists: evaluation-text noise (``eval_json["vs_lowest"]``, a paired
    bootstrap over the same held-out texts) and run-to-run noise (``spread``, :func:`warmstart.evaluate.intervals.seed_spread`).
    A run is *tied* with the lowest when either check cannot separate them. ``best`` is the lowest run only
    when it is distinguishable from every other run by the seed spread (and by the test text where measured);
    without a seed spread ``best`` is None: one seed cannot show it.
    """
    order = sorted((r for r in final if final[r] is not None), key=lambda r: final[r])
    if not order:
        return {
            "order": [],
            "lowest": None,
            "best": None,
            "tied": [],
            "by_text": {},
            "by_seed": {},
            "seed_measured": False,
        }
    low = order[0]
    vs = (eval_json or {}).get("vs_lowest") or {}
    by_text = {r: d for r, d in (vs.get("runs") or {}).items()} if vs.get("reference") == low else {}
    by_seed = {r: stats.within_seed_noise(r, low, final[r], final[low], spread) for r in order[1:]} if spread else {}
    tied = [
        r
        for r in order[1:]
        if (by_text.get(r) or {}).get("distinguishable") is False or (by_seed.get(r) or {}).get("within")
    ]
    best = low if spread and not tied else None
    return {
        "order": order,
        "lowest": low,
        "best": best,
        "tied": tied,
        "by_text": by_text,
        "by_seed": by_seed,
        "seed_measured": bool(spread),
    }


def ranking_sentence(rk: Mapping[str, Any], tgt: str, spread: Mapping | None, seed_file: str) -> str:
    """What the ranking supports, in one or two sentences."""
    low, tied = rk["lowest"], rk["tied"]
    if not low:
        return ""
    if rk["seed_measured"]:
        n = len(spread["seeds"]) if spread and spread.get("seeds") else "several"
        if tied:  # say which check ties each run: the seed spread, or (beyond it) the test text
            by_seed = [r for r in tied if (rk["by_seed"].get(r) or {}).get("within")]
            by_text = [r for r in tied if r not in by_seed]
            parts = []
            if by_seed:
                parts.append(
                    f"{join_words(by_seed)} {'is' if len(by_seed) == 1 else 'are'} within run-to-run noise of "
                    f"{low} (seed spread of {n} seeds, {seed_file})"
                )
            if by_text:
                parts.append(
                    f"{join_words(by_text)} {'is' if len(by_text) == 1 else 'are'} beyond run-to-run noise but "
                    f"cannot be told from {low} on this test text (paired bootstrap)"
                )
            return "; ".join(parts) + ": their order is not established."
        return f"{low} is distinguishable from every other run beyond run-to-run noise ({n} seeds, {seed_file})."
    text_tied = [r for r in rk["order"][1:] if (rk["by_text"].get(r) or {}).get("distinguishable") is False]
    out = f"Run-to-run (seed) spread not available ({seed_file}): with one seed per run, no run is shown to be best."
    if text_tied:
        out += f" Even on this test text, {join_words(text_tied)} cannot be told from {low} (paired bootstrap)."
    return out
