"""The whole smoke study for another language by one params change, in its own copy of the project.

Apart from ``test_pipeline.py`` so that the two smoke studies run on different xdist workers at once.
"""

import json
import subprocess

import pytest

from smoke import run_checked, smoke_copy

pytestmark = pytest.mark.slow


def test_switching_target_is_a_params_change(tmp_path_factory):
    """The whole study for Swedish by one params change: the report and the card say Swedish, never Bokmål.

    The committed params say nb-NO; ``dvc exp run -S shared.target_lang=sv-SE`` runs every stage for Swedish.
    The matrices are trimmed to one item each (the language is what is tested; ``test_pipeline.py`` runs the
    whole smoke study beside it, and every stage costs ~15 s of notebook start-up on one core).

    (Swedish, not Czech, on the smoke profile: with its seven chapters, the cs-CZ val split is empty after
    language ID, and the corpus stage rightly stops with that error.)"""
    dst, env = smoke_copy(tmp_path_factory)
    one = ["-S", "vocab_swap.methods=[fvt]", "-S", "context.methods=[yarn]", "-S", "compress.variants=[width_kd]"]
    one += [x for arm in ("replay-5", "replay-25", "anneal") for x in ("-S", f"~study.arms.{arm}")]  # focus's arms
    run_checked(["dvc", "exp", "run", "-S", "shared.target_lang=sv-SE", *one], dst, env)
    fert = json.loads((dst / "reports/tokenizer/fertility.json").read_text())
    assert "sv-SE" in fert["ratio_tokens_per_word"] and "nb-NO" not in fert["ratio_tokens_per_word"]
    assert (dst / "data/corpus/sv-SE/test.jsonl").exists()
    text = subprocess.run(
        ["pdftotext", str(dst / "reports/report.pdf"), "-"], capture_output=True, text=True, check=True
    ).stdout
    flat = " ".join(text.split())
    card = (dst / "reports/model_card/README.md").read_text()
    assert "from English to Swedish" in flat and "Swedish (sv-SE)" in card
    for word in ("Bokmål", "Norwegian", "nb-NO"):
        assert word not in flat and word not in card, word
