"""Helpers for the stage notebooks: find the project, merge parameters, style.

A notebook's ``parameters`` cell holds its params.yaml sections as dicts;
papermill (``-f params.yaml``) overrides them under ``dvc repro``, JupyterLab
uses them as written. :func:`stage_params` reads the rest of params.yaml,
overlays the notebook's sections and validates the whole.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .config import Params, load_params


def project_root(start: str | Path | None = None) -> Path:
    here = Path(start or os.getcwd()).resolve()
    for p in (here, *here.parents):
        if (p / "dvc.yaml").is_file() and (p / "params.yaml").is_file():
            return p
    raise FileNotFoundError(f"no warmstart project (dvc.yaml + params.yaml) at or above {here}")


def stage_params(**sections: Any) -> Params:
    """chdir to the project root and return validated params with ``sections`` overlaid."""
    root = project_root()
    os.chdir(root)
    params = load_params(root / "params.yaml", overrides=sections)
    style()
    return params


def style() -> None:
    """One look for every figure: readable when printed."""
    import matplotlib
    import pandas as pd
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    matplotlib.rcParams.update({"figure.dpi": 110, "savefig.dpi": 200, "savefig.bbox": "tight", "figure.figsize": (7, 3.6)})
    pd.set_option("display.float_format", lambda v: f"{v:,.3f}")
    pd.set_option("display.width", 140)
