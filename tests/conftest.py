from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
for folder in (TESTS, ROOT):  # test models, and the examples package
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


@pytest.fixture
def write_spec(tmp_path):
    """Write a spec file from TOML text into tmp_path and return its path."""

    def _write(text: str, name: str = "tsrepo.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return _write
