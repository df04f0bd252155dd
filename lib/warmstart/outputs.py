"""What a stage writes for the report besides its fragment: headline metrics, figures, and matrix records.

``reports/metrics/<stage>.json`` is a small flat file of headline numbers per stage (``dvc metrics show`` is
the study's summary); figures land under ``reports/figures``; a DVC matrix writes one record per item under
``reports/<section>/<name>.json``, which its collecting stage reads back.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from warmstart.io import write_json


def read_records(params: Any, section: str, names: Any, stage: str) -> dict[str, dict]:
    """``reports/<section>/<name>.json`` of each item of a DVC matrix, by name; a missing one names the
    stage that writes it (``<stage>@<name>``)."""
    out = {}
    for name in names:
        path = params.report_path(section, f"{name}.json")
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run the {stage}@{name} stage first")
        out[name] = json.loads(path.read_text())
    return out


def save_figure(fig: Any, path: Path) -> Path:
    """Write a report figure (its folder made) and free it: stages run headless, many figures per process."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_headline(params: Any, stage: str, metrics: dict[str, Any], max_keys: int = 12) -> dict[str, Any]:
    """Write ``reports/metrics/<stage>.json``: a flat dict of at most ``max_keys`` numbers/strings."""
    bad = {k: type(v).__name__ for k, v in metrics.items() if not isinstance(v, (int, float, str, bool, type(None)))}
    if bad:
        raise TypeError(f"headline metrics of {stage!r} must be flat scalars; not: {bad}")
    odd = sorted(k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v))
    if odd:  # json would write Infinity / NaN, which strict JSON readers (jq, JavaScript, DVC's plots) reject
        raise ValueError(f"headline metrics of {stage!r} must be finite numbers (or null); not finite: {odd}")
    if len(metrics) > max_keys:
        raise ValueError(
            f"headline metrics of {stage!r} have {len(metrics)} keys (at most {max_keys}): {sorted(metrics)}"
        )
    write_json(params.report_path("metrics", f"{stage}.json"), metrics)
    return metrics
