"""`mnemo config check FILE`: says what is wrong, the value given and where it came from (a line
of the file or an environment variable), never a secret's value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mnemo_cli.main import main

BAD = """\
server:
  port: 99999
memory:
  top_kk: 3
models:
  - name: gpt
    provider: openai
    api_key: 12
    base_url: [not, a, string]
"""


def check(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str, str]:
    code = main(["config", "check", str(path)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_valid_file_is_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mnemo.yaml"
    path.write_text("memory: {top_k: 3}\n")
    assert check(capsys, path) == (0, f"{path}: OK (store=edge, models=0)\n", "")


def test_each_problem_names_the_field_the_value_and_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [key for key in os.environ if key.startswith("MNEMO_")]:
        monkeypatch.delenv(name)
    path = tmp_path / "mnemo.yaml"
    path.write_text(BAD)
    code, out, err = check(capsys, path)
    assert (code, out) == (2, "")
    lines = err.splitlines()
    assert lines[0] == f"mnemo: invalid configuration in {path}:"
    assert "  server.port: Input should be less than or equal to 65535; got 99999; line 2" in lines
    assert (
        "  memory.top_kk: unknown field (not a Mnemo setting; check the spelling and the section); got 3; line 4"
        in lines
    )
    assert any(line.startswith("  models.0.base_url: Input should be a valid string; line 9") for line in lines)
    (secret,) = [line for line in lines if line.startswith("  models.0.api_key:")]
    assert "12" not in secret and secret.endswith("line 8")


def test_a_bad_environment_override_names_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mnemo.yaml"
    path.write_text("memory: {top_k: 3}\n")
    monkeypatch.setenv("MNEMO_MEMORY__TOP_K", "many")
    code, _, err = check(capsys, path)
    assert code == 2
    assert (
        "  memory.top_k: Input should be a valid integer, unable to parse string as an integer; got 'many'; "
        "set by MNEMO_MEMORY__TOP_K" in err.splitlines()
    )


def test_invalid_yaml_says_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mnemo.yaml"
    path.write_text("server:\n  port: [unclosed\n")
    code, _, err = check(capsys, path)
    assert code == 2 and "not valid YAML" in err and "line 3" in err
