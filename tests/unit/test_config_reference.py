"""docs/configuration.md's reference is generated from the settings model: it must equal the
output of scripts/config_reference.py (run it with --write after changing mnemo/config.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mnemo.config import Settings

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def rendered() -> str:
    command = [sys.executable, str(ROOT / "scripts" / "config_reference.py")]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout


def test_the_documented_reference_is_the_generated_one() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    block = page.split(START, 1)[1].split(END, 1)[0]
    assert block == "\n" + rendered(), "docs/configuration.md is stale: run scripts/config_reference.py --write"


def test_every_section_and_field_is_in_the_reference() -> None:
    text = rendered()
    for name, field in Settings.model_fields.items():
        assert f"`{name}`" in text
        section = getattr(field.annotation, "model_fields", {})
        for child in section:
            assert f"`MNEMO_{name.upper()}__{child.upper()}`" in text
