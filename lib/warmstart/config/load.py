"""Reading params: a YAML file validated into :class:`~warmstart.config.params.Params` (errors that name the key),
overlays (:func:`deep_merge`) and the named profiles of ``lib/warmstart/profiles``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from warmstart.config.params import Params
from warmstart.config.sections import _loc

PROFILES_DIR = Path(__file__).parent.with_name("profiles")


class ParamsError(ValueError):
    """A params file that is missing, unreadable or invalid."""


def _format_errors(err: ValidationError, raw: dict[str, Any]) -> str:
    lines = []
    for e in err.errors():
        loc = _loc(e["loc"], raw)
        msg = e["msg"]
        if e["type"] == "missing":
            lines.append(f"  {loc}: missing key (required)")
        elif e["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key (check the spelling against params.yaml)")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"  # a whole section: the msg says it
            lines.append(f"  {loc or 'params'}: {msg}{shown}")
    return "\n".join(lines)


def validate(raw: dict[str, Any], origin: str = "params") -> Params:
    if not isinstance(raw, dict):
        raise ParamsError(f"{origin}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(f"{origin} is invalid:\n{_format_errors(err, raw)}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from None
    return data or {}


def load_params(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Params:
    """Read, overlay and validate a params file."""
    raw = read_yaml(path)
    if overrides:
        raw = deep_merge(raw, overrides)
    return validate(raw, str(path))


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``base``: dicts merge key by key, other values (lists too) replace. A list of named
    dicts (``pretrain.phases``) merges with a dict keyed by those names (``{phase2: {lr: 0.001}}`` changes one
    phase; a new name appends a phase)."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        elif isinstance(value, dict) and _named_list(out.get(key)):
            items = {item["name"]: item for item in out[key]}
            for name, fields in value.items():
                if not isinstance(fields, dict):
                    raise ParamsError(f"{key}.{name}: a mapping of the fields to change, got {fields!r}")
                items[name] = deep_merge(items.get(name, {}), {**fields, "name": name})
            out[key] = list(items.values())
        else:
            out[key] = copy.deepcopy(value)
    return out


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and "name" in v for v in value)


def profile(name: str) -> dict[str, Any]:
    """A packaged profile by name (``smoke``), or any overlay file by path (``configs/corpus/slurm.yaml``)."""
    if name.endswith((".yaml", ".yml")):
        if not Path(name).is_file():
            raise ParamsError(f"no overlay file {name!r}")
        return read_yaml(name)
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise ParamsError(f"unknown profile {name!r}; available: {', '.join(known)}")
    return read_yaml(path)


def apply_profile(name: str, params_path: str | Path = "params.yaml") -> Params:
    """Overlay a named profile onto a params file in place (validated first)."""
    merged = deep_merge(read_yaml(params_path), profile(name))
    arms = (merged.get("study") or {}).get("arms")
    if isinstance(arms, dict):  # `<arm>: null` drops the arm from the file (dvc.yaml's foreach needs each arm's init)
        merged["study"]["arms"] = {k: v for k, v in arms.items() if v is not None}
    params = validate(merged, f"{params_path} + profile {name}")
    Path(params_path).write_text(yaml.safe_dump(merged, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return params
