"""``python -m warmstart.stages check|sync``: hold dvc.yaml to what the stage modules declare.

``check`` prints, per stage, the code deps and params keys that dvc.yaml lacks
or has in excess (exit 1 if any); ``sync`` rewrites them in place (comments
and every other entry kept): the ``lib/`` deps become the stage module's import
closure, the ``params`` its ``PARAMS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from warmstart.stages.contract import STAGES, code_deps, stage_keys


def expected(stage: str, root: Path) -> tuple[list[str], list[str]]:
    """(code deps, params keys) that ``stage`` of dvc.yaml must declare."""
    module = STAGES[stage]
    return code_deps(module, root), list(stage_keys(importlib.import_module(module), stage))


def body(entry: dict) -> dict:
    """The stage definition itself: a ``foreach`` stage's ``do`` block, else the entry."""
    return entry["do"] if "do" in entry else entry


def declared_in(entry: dict) -> tuple[list[str], list[str]]:
    entry = body(entry)
    deps = [d for d in entry.get("deps", []) if isinstance(d, str) and d.startswith("lib/")]
    params = [p for p in entry.get("params", []) if isinstance(p, str)]
    return deps, params


def diff(root: Path) -> dict[str, dict[str, list[str]]]:
    """Per stage: ``missing_deps``, ``extra_deps``, ``missing_params``, ``extra_params`` (only non-empty)."""
    import yaml

    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    out: dict[str, dict[str, list[str]]] = {}
    for name in STAGES:
        if name not in stages:
            out[name] = {"missing_stage": [name]}
            continue
        want_deps, want_params = expected(name, root)
        deps, params = declared_in(stages[name])
        d = {
            "missing_deps": sorted(set(want_deps) - set(deps)),
            "extra_deps": sorted(set(deps) - set(want_deps)),
            "missing_params": sorted(set(want_params) - set(params)),
            "extra_params": sorted(set(params) - set(want_params)),
        }
        d = {k: v for k, v in d.items() if v}
        if d:
            out[name] = d
    for name in set(stages) - set(STAGES):
        out[name] = {"unknown_stage": [name]}
    return out


def _flow(items: list) -> object:
    """A YAML sequence written in flow style (``[a, b, c]``, wrapped): a stage's deps and params read as one
    short paragraph instead of one line each."""
    from ruamel.yaml.comments import CommentedSeq

    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def sync(root: Path) -> list[str]:
    """Rewrite dvc.yaml's lib/ deps and params from the stage modules; the stages changed."""
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 118
    y.indent(mapping=2, sequence=4, offset=2)
    path = root / "dvc.yaml"
    doc = y.load(path.read_text())
    changed = []
    for name, entry in doc["stages"].items():
        if name not in STAGES:
            continue
        want_deps, want_params = expected(name, root)
        deps, params = declared_in(entry)
        if sorted(deps) == want_deps and params == want_params:
            continue
        entry = body(entry)
        keep = [d for d in entry.get("deps", []) if not (isinstance(d, str) and d.startswith("lib/"))]
        notebook = [d for d in keep if str(d).startswith("notebooks/")]
        other = [d for d in keep if d not in notebook]
        entry["deps"] = _flow([*notebook, *want_deps, *other])
        entry["params"] = _flow(want_params)
        changed.append(name)
    if changed:
        import io

        buf = io.StringIO()
        y.dump(doc, buf)
        # ruamel ends a wrapped flow sequence's lines with a space
        path.write_text("".join(line.rstrip() + "\n" for line in buf.getvalue().splitlines()))
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m warmstart.stages", description=__doc__.split("\n")[0])
    ap.add_argument("cmd", choices=["check", "sync"])
    ap.add_argument("--root", default=".", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "sync":
        for name in sync(args.root):
            print(f"dvc.yaml: stage {name} updated")
        return 0
    problems = diff(args.root)
    for name, d in problems.items():
        for kind, items in d.items():
            print(f"{name}: {kind.replace('_', ' ')}: {', '.join(items)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
