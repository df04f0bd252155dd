import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def params_dict():
    from warmstart.config import read_yaml

    return read_yaml(ROOT / "params.yaml")
