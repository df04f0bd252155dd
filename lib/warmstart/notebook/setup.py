"""Helpers for the stage notebooks: find the project, read params.yaml with overrides, style.

A notebook's ``parameters`` cell holds only the stage's identity (``run``, ``method``, ``part``,
``variant``: what ``dvc.yaml`` passes with ``papermill -p``) and ``overrides = {}``, dotted params.yaml
keys for interactive use (``{"pretrain.phases.phase2.lr": 3e-3}``: a phase by its name). The next cell calls :func:`stage_params`,
which reads params.yaml itself; under ``dvc repro`` ``overrides`` stays empty, so the notebook runs on
exactly the params DVC tracks (the stage module reads them through its ``declared`` view).
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from warmstart.config import Params, ParamsError, deep_merge, load_params


def project_root(start: str | Path | None = None) -> Path:
    here = Path(start or os.getcwd()).resolve()
    for p in (here, *here.parents):
        if (p / "dvc.yaml").is_file() and (p / "params.yaml").is_file():
            return p
    raise FileNotFoundError(f"no warmstart project (dvc.yaml + params.yaml) at or above {here}")


def stage_params(overrides: Mapping[str, Any] | None = None) -> Params:
    """chdir to the project root, apply the figure style and return params.yaml, validated, with ``overrides``.

    ``overrides`` maps dotted keys to values, e.g. ``{"pretrain.phases.phase2.lr": 3e-3, "spikes.warmup": 50}``;
    a key that is not in the params schema raises :class:`~warmstart.config.ParamsError` naming it.
    """
    root = project_root()
    os.chdir(root)
    params = load_params(root / "params.yaml", overrides=nest_overrides(overrides or {}))
    style()
    return params


def nest_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b.c": v}`` -> ``{"a": {"b": {"c": v}}}``, every key checked against the params schema."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = check_key(key)
        for part in reversed(parts):
            value = {part: value}
        nested = deep_merge(nested, value)
    return nested


def check_key(key: str) -> list[str]:
    """The parts of dotted ``key``; :class:`ParamsError` naming it unless the params schema has it."""
    parts = key.split(".") if isinstance(key, str) else []
    if not parts or not all(parts):
        raise ParamsError(
            f"override key {key!r}: expected a dotted params.yaml key such as 'pretrain.phases.phase2.lr'"
        )
    node: Any = Params  # a model class, ("dict", value type), or None: free-form below this point
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "params.yaml"
        if node is None:
            break
        if isinstance(node, tuple):  # a dict field (study.arms, tokenizer.target_mix): any key, then its value type
            node = _node(node[1])
            continue
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(part)
            if field is None:
                if node.model_config.get("extra") == "allow":
                    node = None
                    continue
                raise ParamsError(
                    f"override {key!r}: {part!r} is not a key of {where} (it has: {', '.join(node.model_fields)})"
                )
            node = _node(field.annotation)
            continue
        raise ParamsError(f"override {key!r}: {where} is a value, not a section with keys")
    return parts


def _node(annotation: Any) -> Any:
    """What a dotted key may go on into below a field of this type (see :func:`check_key`)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _node(typing.get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if origin in (dict, Mapping):
        args = typing.get_args(annotation)
        return ("dict", args[1] if len(args) == 2 else Any)
    if origin is list:  # a list of named sections (pretrain.phases): addressed by name, like a dict
        (item,) = typing.get_args(annotation) or (Any,)
        if isinstance(item, type) and issubclass(item, BaseModel) and "name" in item.model_fields:
            return ("dict", item)
    if origin in (typing.Union, types.UnionType):
        nodes = [_node(a) for a in typing.get_args(annotation) if a is not type(None)]
        inner = [n for n in nodes if n != "leaf"]
        return inner[0] if len(inner) == 1 and len(nodes) == 1 else (None if inner else "leaf")
    if annotation is Any:
        return None
    return "leaf"


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
