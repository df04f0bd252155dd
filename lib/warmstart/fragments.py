"""Report fragments: what each stage contributes to ``reports/report.pdf``.

Every stage notebook ends by writing one fragment,
``reports/fragments/<NN>_<stage>.json``; the report stage reads them all, in
order, and typesets them. A fragment is plain JSON so that it is a DVC output
of its stage and trivial to inspect::

    {
      "stage": "tokenizer", "order": 20, "title": "Tokenizers",
      "paragraphs": ["...", ...],                        # plain text, one paragraph each
      "tables": [{"caption": "...", "columns": [...], "rows": [[...], ...],
                  "appendix": true}],                     # optional: typeset in the appendix (long tables)
      "figures": [{"path": "reports/figures/fertility.png", "caption": "..."}],
      "numbers": {"ratio_tokens_per_word.nb-NO": 0.61, ...},  # headline values, for tests and the card
      "labels": {"ratio_tokens_per_word.nb-NO": "tokens per word, target / source tokenizer"},  # optional
      "findings": ["The target tokenizer needs 0.52 times the tokens per word of the source one.", ...],
      "seconds": 12.3,                                    # wall time of the stage
      "provenance": {"commit": "4f1c...", "dirty": false, "dirty_files": [], "timestamp": "2025-...+00:00",
                     "seconds": 12.3, "python": "3.12.3", "platform": "...", "cpu": "AMD EPYC 7B13",
                     "cpu_count": 2, "memory_gib": 7.8, "gpus": [], "packages": {"torch": "2.9.1", ...}}
    }

Tables hold already formatted cells (strings or numbers), with human column
labels and units; figure paths are relative to the project root and must exist
(and be non-empty) when the fragment is written.

``findings`` (optional, at most :data:`MAX_FINDINGS`) are the stage's headline
results as whole sentences with their numbers (and intervals where there are
any), written for a reader of the report's first page: the report's summary
collects every fragment's findings under the stage's title, so a new stage
adds its headline there by writing them. ``labels`` (optional) give the human
label of a key of ``numbers`` (the report labels the keys it knows itself,
:mod:`warmstart.report.labels`).

The provenance is what the stage ran with, recorded when it writes its
fragment (:func:`provenance_record`, which the report stage also calls for its
own environment): git commit and dirty flag (tracked files that differ from
the commit; DVC's own bookkeeping, ``dvc.lock`` and ``.gitignore`` files,
does not count), package versions, hardware, the stage's wall time and the
time of writing.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import json
import math
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from warmstart.hardware import cpu_model, usable_cores
from warmstart.io import write_json

FRAGMENT_DIR = ("fragments",)
PACKAGES = (
    "warmstart",
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "datasets",
    "lm_eval",
    "sacrebleu",
    "dvc",
    "papermill",
    "pandas",
    "seaborn",
    "matplotlib",
    "typst",
    "babel",
)
BOOKKEEPING = ("dvc.lock", ".gitignore")  # files DVC rewrites during a run: not a dirty working tree
MAX_FINDINGS = 4  # sentences per stage on the summary page
MAX_FINDING_CHARS = 400
TABLE_KEYS = {"caption", "columns", "rows"}
TABLE_OPTIONAL = {"appendix"}


class FragmentError(ValueError):
    """A fragment that is malformed or points at a missing figure."""


def _cell(v: Any) -> Any:
    if hasattr(v, "item"):  # numpy / torch scalars
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def table(
    df_or_rows: Any,
    caption: str,
    columns: Sequence[str] | None = None,
    floatfmt: str = "{:,.3f}",
    appendix: bool = False,
) -> dict:
    """A fragment table from a pandas DataFrame (or rows + ``columns``); floats formatted with ``floatfmt``;
    ``appendix``: typeset in the report's appendix (long tables; a figure shows the numbers in the body)."""
    if hasattr(df_or_rows, "to_dict"):
        columns = [str(c) for c in df_or_rows.columns]
        rows = df_or_rows.values.tolist()
    else:
        if columns is None:
            raise FragmentError("table(): give columns with plain rows")
        rows = [list(r) for r in df_or_rows]
    out = []
    for r in rows:
        if len(r) != len(columns):
            raise FragmentError(f"table {caption!r}: a row has {len(r)} cells, expected {len(columns)}")
        out.append([floatfmt.format(c) if isinstance(_cell(c), float) else _cell(c) for c in r])
    t = {"caption": caption, "columns": list(columns), "rows": out}
    return {**t, "appendix": True} if appendix else t


def check_findings(stage: str, findings: Any) -> list[str]:
    """``findings`` validated: a list of at most :data:`MAX_FINDINGS` non-empty sentences."""
    if findings is None:
        return []
    if isinstance(findings, str) or not isinstance(findings, Sequence):
        raise FragmentError(f"fragment {stage}: findings must be a list of sentences, got {type(findings).__name__}")
    out = []
    for f in findings:
        if not isinstance(f, str) or not f.strip():
            raise FragmentError(f"fragment {stage}: every finding must be a non-empty string, got {f!r}")
        if len(f) > MAX_FINDING_CHARS:
            raise FragmentError(f"fragment {stage}: a finding has {len(f)} characters (at most {MAX_FINDING_CHARS})")
        out.append(" ".join(f.split()))
    if len(out) > MAX_FINDINGS:
        raise FragmentError(f"fragment {stage}: {len(out)} findings (at most {MAX_FINDINGS}: the summary is one page)")
    return out


def check_table(stage: str, t: Mapping) -> None:
    if not TABLE_KEYS <= set(t) or set(t) - TABLE_KEYS - TABLE_OPTIONAL:
        raise FragmentError(
            f"fragment {stage}: a table needs caption, columns, rows and may have appendix (use fragments.table)"
        )
    if "appendix" in t and not isinstance(t["appendix"], bool):
        raise FragmentError(f"fragment {stage}: a table's appendix flag must be true or false")


# ---------------------------------------------------------------- provenance


def _git(root: Path, *args: str) -> str | None:
    """``git``'s stdout (not stripped), or None outside a checkout or without git."""
    try:
        r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def _changed_files(porcelain_z: str) -> list[str]:
    """Paths of ``git status --porcelain -z`` (the new name of a rename), DVC bookkeeping left out."""
    entries, paths = porcelain_z.split("\0"), []
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":  # a rename or copy: the next entry is the original path
            i += 1
    return [p for p in paths if Path(p).name not in BOOKKEEPING]


def _gpus() -> list[str]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def provenance_record(root: str | Path = ".", seconds: float | None = None, packages: Sequence[str] = PACKAGES) -> dict:
    """What a stage ran with: git commit and dirty flag, package versions, hardware, wall time, timestamp.

    ``root`` is any directory of the git checkout (the commit is ``None`` outside one); ``seconds`` is the
    stage's wall time. Every key is always present.
    """
    root = Path(root)
    commit = (_git(root, "rev-parse", "HEAD") or "").strip() or None
    status = _git(root, "status", "--porcelain", "-z", "--untracked-files=no") if commit else None
    changed = None if status is None else _changed_files(status)
    versions = {}
    for p in packages:
        try:
            versions[p] = md.version(p.replace("_", "-"))
        except md.PackageNotFoundError:
            versions[p] = "not installed"
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem = None
    usable = usable_cores()
    return {
        "commit": commit,
        "dirty": None if changed is None else bool(changed),
        "dirty_files": (changed or [])[:20],
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds": None if seconds is None else round(float(seconds), 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": usable,
        "memory_gib": None if mem is None else round(mem, 1),
        "gpus": _gpus(),
        "packages": versions,
    }


# ---------------------------------------------------------------- fragments


def fragment_path(reports_dir: str | Path, order: int, stage: str) -> Path:
    return Path(reports_dir, *FRAGMENT_DIR, f"{order:02d}_{stage}.json")


def flat_numbers(numbers: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``numbers`` with nested mappings spread into dotted keys (``{"goals": {"a": True}}`` -> ``{"goals.a": True}``):
    a fragment's numbers are flat scalars, each with its own label and cell in the report."""
    out: dict[str, Any] = {}
    for k, v in numbers.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            if not v:
                continue
            out.update(flat_numbers(v, f"{key}."))
        else:
            out[key] = v
    return out


def write_fragment(
    reports_dir: str | Path,
    stage: str,
    order: int,
    title: str,
    paragraphs: Sequence[str] = (),
    tables: Sequence[Mapping] = (),
    figures: Sequence[Mapping] = (),
    numbers: Mapping[str, Any] | None = None,
    seconds: float | None = None,
    *,
    findings: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    root: str | Path = ".",
) -> Path:
    """Validate and write one stage's fragment, with its provenance (git checkout at ``root``); returns its path.

    ``findings``: the stage's headline sentences for the report's summary page; ``labels``: human labels of
    keys of ``numbers`` (see the module docstring)."""
    if not stage or not stage.replace("_", "").isalnum():
        raise FragmentError(f"stage name {stage!r} must be letters, digits and underscores")
    if not 0 <= order <= 99:
        raise FragmentError(f"order must be in 0..99, got {order}")
    for f in figures:
        if not Path(f["path"]).is_file():
            raise FragmentError(f"fragment {stage}: figure {f['path']} does not exist")
        if Path(f["path"]).stat().st_size == 0:
            raise FragmentError(f"fragment {stage}: figure {f['path']} is empty")
    for t in tables:
        check_table(stage, t)
    found = check_findings(stage, findings)
    if labels is not None and (not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values())):
        raise FragmentError(f"fragment {stage}: labels must map number keys to strings")
    frag = {
        "stage": stage,
        "order": order,
        "title": title,
        "paragraphs": [str(p) for p in paragraphs],
        "tables": list(tables),
        "figures": [{"path": str(f["path"]), "caption": str(f.get("caption", ""))} for f in figures],
        "numbers": {k: _cell(v) for k, v in flat_numbers(numbers or {}).items()},
        **({"labels": {str(k): v for k, v in labels.items()}} if labels else {}),
        **({"findings": found} if found else {}),
        "seconds": None if seconds is None else round(float(seconds), 2),
        "provenance": provenance_record(root, seconds),
    }
    path = fragment_path(reports_dir, order, stage)
    write_json(path, frag)
    return path


def read_fragments(reports_dir: str | Path) -> list[dict]:
    """All fragments, sorted by (order, stage)."""
    root = Path(reports_dir, *FRAGMENT_DIR)
    frags = []
    for p in sorted(root.glob("*.json")):
        try:
            frags.append(json.loads(p.read_text(encoding="utf-8")))
        except json.JSONDecodeError as err:
            raise FragmentError(f"{p}: not valid JSON ({err.msg})") from None
    return sorted(frags, key=lambda f: (f["order"], f["stage"]))
