"""The seed recipes, ``configs/recipes/*.yaml``: each an overlay on params.yaml that
``python -m warmstart.config apply-profile configs/recipes/<name>.yaml`` applies (every file of the folder is
checked, so a new recipe is covered).

Each one, through that command's own code (:func:`warmstart.config.apply_profile` on a copy of params.yaml):
validates, passes ``check`` (the sources offer its languages), changes the study's training phases (or, for a
recipe whose card says nothing about them, the section it is about), trains no more steps and rows per step than
the default, sets only keys whose value it changes, and says in its header which card it follows and how to
apply it. An overlay with an unknown key is refused by the key's name, and nothing is written.

With the smoke profile: smoke first, then the recipe. Smoke shrinks the models, the corpus and the other stages;
the recipe then sets the training shape, and wins wherever both speak. The other order would drop the recipe:
smoke's ``pretrain.phases`` list would replace the recipe's (lists replace wholesale).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from test_phases import project as _project  # noqa: F401  (test_phases' tiny project, as a fixture)
from warmstart.config import ParamsError, apply_profile, deep_merge, load_params, profile, read_yaml, validate
from warmstart.config.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
RECIPES_DIR = ROOT / "configs" / "recipes"
RECIPES = sorted(RECIPES_DIR.glob("*.yaml"))
SEEDS = {"normistral", "csmpt", "lucie", "minitron", "alfred"}  # one per model card in ../shared/seeds
# recipes whose card says nothing about the study's training phases -> the params section they change instead
ELSEWHERE = {"minitron": "compress"}


def _leaves(tree: dict[str, Any], path: tuple[str, ...] = ()):
    """(path, value) of every non-mapping value of an overlay (a list is one value: lists replace)."""
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*path, key))
        else:
            yield (*path, key), value


def _at(tree: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path``; a list of named mappings (``pretrain.phases``) is indexed by name; None if absent."""
    node = tree
    for key in path:
        if isinstance(node, list) and all(isinstance(v, dict) and "name" in v for v in node):
            node = {v["name"]: v for v in node}
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


@pytest.fixture
def params_copy(tmp_path: Path, root: Path) -> Path:
    dst = tmp_path / "params.yaml"
    shutil.copyfile(root / "params.yaml", dst)
    return dst


def test_every_seed_card_has_a_recipe():
    assert SEEDS <= {p.stem for p in RECIPES}
    assert set(ELSEWHERE) <= {p.stem for p in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_applies_validates_and_changes_the_training(recipe, params_copy, params_dict, capsys):
    default = validate(params_dict)
    assert main(["apply-profile", str(recipe), str(params_copy)]) == 0
    assert capsys.readouterr().out == f"{params_copy}: applied profile {recipe}\n"
    # the file written is params.yaml with the overlay merged, and it loads and passes `check`
    assert read_yaml(params_copy) == deep_merge(params_dict, read_yaml(recipe))
    p = load_params(params_copy)
    assert main(["check", str(params_copy)]) == 0
    assert capsys.readouterr().out == f"{params_copy}: ok\n"

    section = ELSEWHERE.get(recipe.stem)
    if section is None:
        assert p.pretrain.phases != default.pretrain.phases
    else:
        assert p.pretrain.phases == default.pretrain.phases
        assert getattr(p, section) != getattr(default, section)

    # no longer than the default: steps over all phases, rows and tokens per step
    assert sum(ph.steps for ph in p.pretrain.phases) <= sum(ph.steps for ph in default.pretrain.phases)
    rows = p.pretrain.micro_batch * p.pretrain.grad_accum
    assert rows <= default.pretrain.micro_batch * default.pretrain.grad_accum
    assert p.pretrain.seq_len <= default.pretrain.seq_len
    # a batch ramp the trainer accepts (it checks this at the first step, the schema does not): start and
    # increment in whole micro-batches of every process, starting below the full batch
    unit = p.pretrain.micro_batch * p.pretrain.num_processes
    for ph in p.pretrain.phases:
        if ph.batch_ramp is not None:
            assert ph.batch_ramp.start % unit == 0 and ph.batch_ramp.increment % unit == 0, ph.name
            assert ph.batch_ramp.start < rows, ph.name


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_sets_only_what_it_changes(recipe, params_dict):
    """Every value a recipe sets differs from the default's (schema defaults included): no no-op keys."""
    default = validate(params_dict).model_dump(mode="json")
    same = [".".join(path) for path, value in _leaves(read_yaml(recipe)) if _at(default, path) == value]
    assert same == []


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_header_names_card_and_command(recipe):
    header = []
    for line in recipe.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert re.search(r"^# Seed recipe: .+ \(card: \.\./shared/seeds/[\w.-]+\.md\)", text, re.M), text[:200]
    assert f"python -m warmstart.config apply-profile configs/recipes/{recipe.name}" in text
    assert "# Reproduced:" in text and "# Scaled:" in text


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_smoke_then_recipe(recipe, params_copy):
    apply_profile("smoke", params_copy)
    smoke = read_yaml(params_copy)
    p = apply_profile(str(recipe), params_copy)
    assert load_params(params_copy) == p
    merged = read_yaml(params_copy)
    overlay = [path for path, _ in _leaves(read_yaml(recipe))]
    # the recipe wins wherever it speaks ...
    for path, value in _leaves(read_yaml(recipe)):
        assert _at(merged, path) == value, ".".join(path)
    # ... and the smoke profile everywhere else (its small models, corpus and stages)
    for path, value in _leaves(profile("smoke")):
        if not any(path[: len(o)] == o or o[: len(path)] == path for o in overlay):
            assert _at(merged, path) == value == _at(smoke, path), ".".join(path)
    assert p.base.model.hidden == profile("smoke")["base"]["model"]["hidden"]


def test_unknown_key_is_refused_by_name(tmp_path, params_copy, params_dict, capsys):
    before = params_copy.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain:\n  warmup_ratio: 0.1\n", encoding="utf-8")
    with pytest.raises(ParamsError, match=r"pretrain\.warmup_ratio: unknown key"):
        apply_profile(str(bad), params_copy)
    assert params_copy.read_text() == before  # refused before anything is written

    # inside a phase of a recipe-style phases list, through the command: named by the phase's name
    phases = [dict(ph) for ph in params_dict["pretrain"]["phases"]]
    phases[-1]["lr_floor"] = 0.1
    bad.write_text(yaml.safe_dump({"pretrain": {"phases": phases}}), encoding="utf-8")
    assert main(["apply-profile", str(bad), str(params_copy)]) == 2
    err = capsys.readouterr().err
    assert f"pretrain.phases[{phases[-1]['name']}].lr_floor: unknown key" in err
    assert params_copy.read_text() == before


def test_the_lucie_recipe_trains_end_to_end_on_the_smoke_profile(_project):  # noqa: F811 (the fixture)
    """A shipped recipe runs, not just parses: smoke, then Lucie's recipe, on the tiny project's data; a warm start
    (its one phase: the target/source mix, Adam eps 1e-5, the batch ramp) and scratch (RoPE theta 500k, init
    range 0.009) train through :func:`warmstart.train.study.train_run`."""
    import json

    from transformers import AutoConfig

    from warmstart.train.study import train_run

    project = _project
    data = project / "data"
    shutil.copytree(data / "models/swap-focus", data / "models/base")
    shutil.copytree(data / "models/swap-focus", data / "tokenizer/target")
    merged = deep_merge(
        deep_merge(read_yaml(ROOT / "params.yaml"), profile("smoke")), read_yaml(RECIPES_DIR / "lucie.yaml")
    )
    tiny = {"shared": {"data_dir": str(data), "reports_dir": str(project / "reports")},
            "pretrain": {"seq_len": 16, "signals_every": 0, "phases": {"phase2": {"steps": 12}}}}  # fmt: skip
    params = validate(deep_merge(merged, tiny), "smoke + lucie")
    warm = train_run(params, "focus").info
    assert [p["name"] for p in warm["plan"]] == ["phase2"] and warm["plan"][0]["mix"] == {
        "target": 32.4,
        "source": 33.2,
    }
    log = [json.loads(x) for x in Path(warm["log"]).read_text().splitlines()]
    rows = [r["batch_rows"] for r in log]
    assert rows[0] == 4 and rows == sorted(rows) and rows[-1] == 16  # the ramp from a quarter, then the full batch
    assert all(r["corpus"] == "mix" for r in log) and log[-1]["step"] == 12
    cfg = json.loads((data / "runs/focus/phase2/train_config.json").read_text())
    assert cfg["eps"] == 1e-5 and cfg["mix"] == {"target": 32.4, "source": 33.2}
    scratch = train_run(params, "scratch").info
    config = AutoConfig.from_pretrained(scratch["init"])
    theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", getattr(config, "rope_theta", None))
    assert config.initializer_range == 0.009 and theta == 500000.0


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_trains_a_warm_start_on_the_smoke_profile(recipe, _project):  # noqa: F811 (the fixture)
    """Every shipped recipe runs, not just parses: smoke, then the recipe, on the tiny project (each phase cut to
    at most 6 steps, the recipe's shape otherwise kept); the focus warm start trains through every phase, reading
    each corpus its mixes name (an extra language gets shards of its own, as the tokenize stage would write)."""
    import json

    from transformers import AutoTokenizer

    from warmstart.data.shards import tokenize_files
    from warmstart.train.study import train_run

    data = _project / "data"
    merged = deep_merge(deep_merge(read_yaml(ROOT / "params.yaml"), profile("smoke")), read_yaml(recipe))
    short = {}
    for ph in merged["pretrain"]["phases"]:
        steps, warmup = min(6, ph["steps"]), min(1, ph["warmup_steps"])
        wsd = ph.get("lr_schedule") == "wsd"
        short[ph["name"]] = {"steps": steps, "warmup_steps": warmup,
                             "decay_steps": max(1, min(ph.get("decay_steps", 0), steps - warmup)) if wsd else 0}  # fmt: skip
    tiny = {"shared": {"data_dir": str(data), "reports_dir": str(_project / "reports")},
            "pretrain": {"seq_len": 16, "signals_every": 0, "phases": short}}  # fmt: skip
    params = validate(deep_merge(merged, tiny), f"smoke + {recipe.stem}")
    tok = AutoTokenizer.from_pretrained(data / "models/swap-focus")
    for lang in params.corpus.extra_languages:  # e.g. NorMistral's Swedish: the target's text under its code
        shutil.copytree(data / "corpus/nb-NO", data / "corpus" / lang)
        tokenize_files([str(data / "corpus" / lang / "train.jsonl")], data / "tokens/target" / lang / "train", tok)
    info = train_run(params, "focus").info
    want = [ph.name for ph in params.pretrain.phases]
    assert [p["name"] for p in info["plan"]] == want
    log = [json.loads(x) for x in Path(info["log"]).read_text().splitlines()]
    assert [p["name"] for p in info["phases"]] == want and log[-1]["step"] == sum(p["steps"] for p in info["plan"])
    for ph in info["plan"]:
        cfg = json.loads((data / "runs/focus" / ph["name"] / "train_config.json").read_text())
        assert cfg["optimizer"] == ph["optimizer"] and cfg["eps"] == ph["eps"] and cfg["lr"] == ph["lr"]
        assert sorted(cfg["train_files"]) == sorted(ph["mix"]), ph["name"]
