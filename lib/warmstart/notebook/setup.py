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

from warmstart.config import Params, load_params


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
    matplotlib.rcParams.update(
        {"figure.dpi": 110, "savefig.dpi": 200, "savefig.bbox": "tight", "figure.figsize": (7, 3.6)}
    )
    pd.set_option("display.float_format", lambda v: f"{v:,.3f}")
    pd.set_option("display.width", 140)


# ---------------------------------------------------------------- parameters cells


def parameters_source(sections: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    """The source of a ``parameters`` cell: ``extra`` (matrix items such as ``run``) then the sections."""
    import pprint

    lines = ["# parameters: mirrors params.yaml (papermill -f params.yaml overrides them under dvc repro)"]
    for name, value in (extra or {}).items():
        lines.append(f"{name} = {value!r}  # the DVC matrix item (papermill -p {name} ...)")
    for name, value in sections.items():
        lines.append(f"{name} = {pprint.pformat(value, sort_dicts=False, width=110)}")
    return "\n".join(lines)


def sync_parameters(notebook: str | Path, params_path: str | Path = "params.yaml") -> bool:
    """Rewrite a notebook's ``parameters`` cell from params.yaml; True if it changed.

    The sections are the ones the cell already names; other variables in the
    cell (matrix items) keep their values.
    """
    import ast
    import json

    from warmstart.config import read_yaml

    path = Path(notebook)
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    cell = cells[0]
    ns: dict[str, Any] = {}
    exec(compile(ast.parse("".join(cell["source"])), str(path), "exec"), {}, ns)
    raw = read_yaml(params_path)
    sections = {k: raw[k] for k in ns if k in raw}
    extra = {k: v for k, v in ns.items() if k not in raw}
    src = parameters_source(sections, extra)
    if "".join(cell["source"]) == src:
        return False
    cell["source"] = src.splitlines(keepends=True)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m warmstart.notebook.setup",
        description="Keep notebooks' parameters cells in sync with params.yaml.",
    )
    ap.add_argument("cmd", choices=["sync"])
    ap.add_argument("notebooks", nargs="*", help="default: notebooks/*.ipynb")
    args = ap.parse_args(argv)
    paths = args.notebooks or sorted(str(p) for p in Path("notebooks").glob("*.ipynb"))
    for p in paths:
        if sync_parameters(p):
            print(f"{p}: parameters cell updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
