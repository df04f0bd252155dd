import copy

import pytest
import yaml

from warmstart.config import PROFILES_DIR, ParamsError, apply_profile, deep_merge, load_params, profile, validate


def test_shipped_params_and_profiles_validate(root, params_dict):
    """litgpt's habit: every shipped config is checked against the schema."""
    p = load_params(root / "params.yaml")
    assert p.languages == ["en-US", "nb-NO"]
    for prof in PROFILES_DIR.glob("*.yaml"):
        validate(deep_merge(params_dict, profile(prof.stem)), prof.name)


def test_missing_key_is_named(params_dict):
    raw = copy.deepcopy(params_dict)
    del raw["corpus"]["min_chars"]
    with pytest.raises(ParamsError, match=r"corpus\.min_chars: missing key"):
        validate(raw)


def test_out_of_range_names_key_and_range(params_dict):
    raw = copy.deepcopy(params_dict)
    raw["corpus"]["langid"]["threshold"] = 1.5
    with pytest.raises(
        ParamsError, match=r"corpus\.langid\.threshold: Input should be less than or equal to 1 \(got 1\.5\)"
    ):
        validate(raw)


def test_unknown_key_is_a_typo(params_dict):
    raw = copy.deepcopy(params_dict)
    raw["tokenizer"]["vocab_sise"] = 10
    with pytest.raises(ParamsError, match=r"tokenizer\.vocab_sise: unknown key"):
        validate(raw)


def test_bad_language_code_and_same_languages(params_dict):
    raw = copy.deepcopy(params_dict)
    raw["shared"]["target_lang"] = "norsk"
    with pytest.raises(ParamsError, match=r"shared\.target_lang"):
        validate(raw)
    raw["shared"]["target_lang"] = "en-US"
    with pytest.raises(ParamsError, match="must differ"):
        validate(raw)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("shared: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_apply_profile_rewrites_in_place(tmp_path, root):
    dst = tmp_path / "params.yaml"
    dst.write_text((root / "params.yaml").read_text())
    p = apply_profile("smoke", dst)
    assert p.tokenizer.vocab_size == yaml.safe_load(dst.read_text())["tokenizer"]["vocab_size"] == 1024
    with pytest.raises(ParamsError, match="unknown profile 'nope'; available: smoke"):
        apply_profile("nope", dst)


def test_target_switch_is_params_only(params_dict):
    for lang in ["cs-CZ", "da-DK", "sv-SE", "fr-FR"]:
        p = validate(deep_merge(params_dict, {"shared": {"target_lang": lang}}))
        assert p.languages == ["en-US", lang]
        assert p.resolve_lang("target") == lang


def test_config_check_names_the_languages_the_sources_offer(params_dict, tmp_path, capsys):
    """`python -m warmstart.config check` refuses a language no source has, before any stage runs."""
    from warmstart.config.__main__ import main

    raw = copy.deepcopy(params_dict)
    raw["shared"]["target_lang"] = "xx-XX"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "'xx-XX' (shared.target_lang) is offered by no configured corpus source" in err
    assert "handbook offers ar-MA, ca-ES, cs-CZ" in err and "nb-NO" in err and "{kind: local, lang: <code>" in err
    # the same language through a local source of its own is fine
    raw["corpus"]["sources"].append({"kind": "local", "lang": "target", "paths": [str(tmp_path)]})
    path.write_text(yaml.safe_dump(raw))
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().out.strip().endswith(": ok")


def test_handbook_language_list_matches_the_package(params_dict):
    """The static list config check uses is what the cached debian-handbook .deb really holds."""
    from warmstart.data import handbook

    debs = sorted(handbook.cache_dir().glob(f"{handbook.PACKAGE}_11.20220922_all.deb"))
    if not debs:
        pytest.skip("debian-handbook 11.20220922 is not cached (the pipeline test fetches it)")
    assert tuple(handbook.available_languages(debs[-1])) == handbook.LANGUAGES


def test_schema_defaults_agree_with_params_yaml(params_dict):
    """A key left out of params.yaml means what the shipped file says (sections used once in the schema;
    the optimiser section serves three phases with different values, so it has no defaults to agree on)."""
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    from warmstart.config import Optim, Params

    diffs = []

    def walk(model, data, prefix):
        for name, field in model.model_fields.items():
            sub = field.annotation
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                if sub is not Optim:
                    walk(sub, data.get(name) or {}, f"{prefix}{name}.")
            elif field.default is not PydanticUndefined and name in data and data[name] != field.default:
                diffs.append((f"{prefix}{name}", field.default, data[name]))

    walk(Params, params_dict, "")
    assert diffs == []
