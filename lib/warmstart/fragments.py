"""Report fragments: what each stage contributes to ``reports/report.pdf``.

Every stage notebook ends by writing one fragment,
``reports/fragments/<NN>_<stage>.json``; the report stage reads them all, in
order, and typesets them. A fragment is plain JSON so that it is a DVC output
of its stage and trivial to inspect::

    {
      "stage": "tokenizer", "order": 20, "title": "Tokenizers",
      "paragraphs": ["...", ...],                        # plain text, one paragraph each
      "tables": [{"caption": "...", "columns": [...], "rows": [[...], ...]}],
      "figures": [{"path": "reports/figures/fertility.png", "caption": "..."}],
      "numbers": {"ratio_tokens_per_word.nb-NO": 0.61, ...},  # headline values, for tests and the card
      "seconds": 12.3                                     # wall time of the stage
    }

Tables hold already formatted cells (strings or numbers); figure paths are
relative to the project root and must exist when the fragment is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from warmstart.io import write_json

FRAGMENT_DIR = ("fragments",)


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


def table(df_or_rows: Any, caption: str, columns: Sequence[str] | None = None, floatfmt: str = "{:,.3f}") -> dict:
    """A fragment table from a pandas DataFrame (or rows + ``columns``); floats formatted with ``floatfmt``."""
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
    return {"caption": caption, "columns": list(columns), "rows": out}


def fragment_path(reports_dir: str | Path, order: int, stage: str) -> Path:
    return Path(reports_dir, *FRAGMENT_DIR, f"{order:02d}_{stage}.json")


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
) -> Path:
    """Validate and write one stage's fragment; returns its path."""
    if not stage or not stage.replace("_", "").isalnum():
        raise FragmentError(f"stage name {stage!r} must be letters, digits and underscores")
    if not 0 <= order <= 99:
        raise FragmentError(f"order must be in 0..99, got {order}")
    for f in figures:
        if not Path(f["path"]).is_file():
            raise FragmentError(f"fragment {stage}: figure {f['path']} does not exist")
    for t in tables:
        if set(t) != {"caption", "columns", "rows"}:
            raise FragmentError(f"fragment {stage}: a table needs caption, columns, rows (use fragments.table)")
    frag = {
        "stage": stage,
        "order": order,
        "title": title,
        "paragraphs": [str(p) for p in paragraphs],
        "tables": list(tables),
        "figures": [{"path": str(f["path"]), "caption": str(f.get("caption", ""))} for f in figures],
        "numbers": {k: _cell(v) for k, v in (numbers or {}).items()},
        "seconds": None if seconds is None else round(float(seconds), 2),
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
