"""The README and docs/ name files, tests, settings and `mnemo` commands: each must exist, so the docs
cannot drift from the code unnoticed. Checked: every relative link (and its #anchor), every repository
path and test name in inline code, every `section.field` setting and MNEMO_* variable, and every
`mnemo ...` command shown, which must parse with the CLI's own parser."""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import re
import shlex
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from pydantic import BaseModel

from mnemo.config import Settings
from mnemo_cli.main import parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "deploy" / "README.md",
    ROOT / "bench" / "README.md",
]
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
TEST_NAME = re.compile(r"\btest_\w+")
ENV_VAR = re.compile(r"\bMNEMO_([A-Z0-9_]+?)__([A-Z0-9_]+)\b")
SETTING = re.compile(r"^([a-z_]+)(?:\[\])?\.([a-z_]+)(?:\[\])?(?:\.([a-z_]+))?$")
CHECKED_EXTENSIONS = (".py", ".md", ".yaml", ".yml", ".png", ".toml", ".txt", ".json", ".js", ".css", ".html")


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def prose(text: str) -> str:
    """The page without its fenced code blocks (examples there name the reader's files, not ours)."""
    return FENCE.sub("", text)


def fenced(text: str) -> list[str]:
    return [match.group(0) for match in FENCE.finditer(text)]


def read(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def spans(text: str) -> Iterator[str]:
    yield from SPAN.findall(prose(text))


@cache
def repository_files() -> frozenset[str]:
    """Files a fresh clone has (tracked, or new and not ignored): generated and ignored paths do not count."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return frozenset(name for name in listed.split("\0") if name and (ROOT / name).exists())


def ignored_by_git(relative: str) -> bool:
    """A path .gitignore declares (bench/.venvs/, tests/artifacts/): generated, so named on purpose."""
    check = subprocess.run(["git", "check-ignore", "-q", relative], cwd=ROOT, capture_output=True, timeout=60)
    return check.returncode == 0


def exists_in_repository(relative: str) -> bool:
    relative = relative.rstrip("/")
    files = repository_files()
    if any(ch in relative for ch in "*?"):
        return any(Path(name).match(relative) for name in files) or bool(glob.glob(str(ROOT / relative)))
    return relative in files or any(name.startswith(relative + "/") for name in files)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose(text).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def link_problems(page: Path, text: str) -> list[str]:
    problems = []
    for target in LINK.findall(prose(text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path_part, _, anchor = target.partition("#")
        if not path_part:
            if anchor not in anchors(text):
                problems.append(f"{page_id(page)}: link to a missing heading: {target}")
            continue
        resolved = (page.parent / path_part).resolve()
        if not resolved.is_relative_to(ROOT) or not exists_in_repository(str(resolved.relative_to(ROOT))):
            problems.append(f"{page_id(page)}: link to a missing file: {target}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(read(resolved)):
            problems.append(f"{page_id(page)}: link to a missing heading: {target}")
    return problems


def candidate_paths(page: Path, span: str) -> Iterator[str]:
    """Repository paths named in an inline code span, relative to the root (a span may be a path with a
    `::test` suffix or a `{json,md}` list); other spans (URLs, keys, modules) yield nothing."""
    token = span.split("::", 1)[0].split(" ", 1)[0].rstrip(".,:;")
    if not token or any(ch in token for ch in "<>$=:'\"()") or token.startswith(("/", "-", "~", ".")):
        return
    if "{" in token:
        match = re.match(r"^(.*)\{([^}]*)\}(.*)$", token)
        if not match:
            return
        for choice in match.group(2).split(","):
            yield from candidate_paths(page, match.group(1) + choice + match.group(3))
        return
    first = token.split("/", 1)[0]
    if "/" in token:
        if (ROOT / first).exists():
            yield token
        elif page.parent != ROOT and (page.parent / first).exists():
            yield str((page.parent / token).relative_to(ROOT))
    elif re.fullmatch(r"test_\w+\.py", token):
        yield f"tests/**/{token}"
    elif token.endswith(".md"):
        yield f"**/{token}"


def path_problems(page: Path, text: str) -> list[str]:
    problems = []
    for span in spans(text):
        for path in candidate_paths(page, span):
            if path.endswith(CHECKED_EXTENSIONS) or path.endswith("/") or "." not in Path(path).name:
                if not exists_in_repository(path) and not ignored_by_git(path):
                    problems.append(f"{page_id(page)}: names a missing path: {span}")
    return problems


@cache
def defined_tests() -> dict[str, frozenset[str]]:
    """Every test function under tests/, by file (relative to the root)."""
    found = {}
    for file in sorted(ROOT.glob("tests/**/test_*.py")):
        relative = str(file.relative_to(ROOT))
        if relative in repository_files():
            found[relative] = frozenset(
                re.findall(r"^\s*(?:async\s+)?def\s+(test_\w+)", file.read_text(), re.MULTILINE)
            )
    return found


def named_test_problems(page: Path, text: str) -> list[str]:
    problems = []
    every = frozenset().union(*defined_tests().values())
    for span in spans(text):
        file_part, _, function_part = span.partition("::")
        names = TEST_NAME.findall(function_part) if function_part else TEST_NAME.findall(span)
        for name in names:
            if name.endswith("_") or f"{name}.py" in span.split("/")[-1]:
                continue  # a file name, or a prefix like test_faults_*
            if function_part:
                files = [f for f in defined_tests() if f.endswith(file_part.split("/")[-1])]
                if not any(name in defined_tests()[f] for f in files):
                    problems.append(f"{page_id(page)}: no test {name} in {file_part}")
            elif name not in every:
                problems.append(f"{page_id(page)}: no test function {name} under tests/")
    return problems


def section_fields(name: str) -> set[str] | None:
    """The fields of a settings section (or of a list section's items); None if `name` is no section."""
    field = Settings.model_fields.get(name)
    if field is None:
        return None
    annotation = field.annotation
    args = getattr(annotation, "__args__", ())
    model = args[0] if args and isinstance(args[0], type) and issubclass(args[0], BaseModel) else annotation
    if isinstance(model, type) and issubclass(model, BaseModel):
        return set(model.model_fields)
    return None


def nested_fields(section: str, field: str) -> set[str] | None:
    outer = Settings.model_fields[section].annotation
    inner = getattr(outer, "model_fields", {}).get(field)
    if inner is None:
        return None
    args = getattr(inner.annotation, "__args__", ())
    model = args[0] if args and isinstance(args[0], type) and issubclass(args[0], BaseModel) else inner.annotation
    return set(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else None


def setting_problems(page: Path, text: str) -> list[str]:
    problems = []
    for span in spans(text):
        dotted = SETTING.match(re.split(r"[:= ]", span, maxsplit=1)[0])
        is_file = span.endswith(CHECKED_EXTENSIONS)  # worker.md is a results page, not worker's md field
        if dotted and not is_file and (fields := section_fields(dotted.group(1))) is not None:
            section, field, leaf = dotted.groups()
            if field not in fields:
                problems.append(f"{page_id(page)}: no setting {section}.{field}")
            elif leaf and leaf not in (nested_fields(section, field) or set()):
                problems.append(f"{page_id(page)}: no setting {section}.{field}.{leaf}")
    for section, field in ENV_VAR.findall(text):
        fields = section_fields(section.lower())
        if fields is None or field.lower() not in fields:
            problems.append(f"{page_id(page)}: no setting for MNEMO_{section}__{field}")
    return problems


def commands(text: str) -> Iterator[str]:
    for block in fenced(text):
        for line in block.splitlines():
            match = re.match(r"^\s*(?:\$\s+)?(mnemo\s.*)$", line)
            if match:
                yield match.group(1)
    for span in spans(text):
        if re.match(r"^mnemo\s", span):
            yield span


def argv_of(command: str) -> list[str]:
    """The command's arguments: `[--optional X]` groups and comments dropped, placeholders kept."""
    without_options = re.sub(r"\s*\[[^\]]*\]", "", command)
    return shlex.split(without_options, comments=True)[1:]


def subcommand_path(argv: list[str]) -> list[str]:
    """The subcommands argv names (`memories list`), skipping options and their values before them."""
    path: list[str] = []
    current = parser()
    for word in argv:
        choices = {
            name: sub
            for action in current._actions
            if isinstance(action, argparse._SubParsersAction)
            for name, sub in action.choices.items()
        }
        if word in choices:
            path.append(word)
            current = choices[word]
        elif path and not word.startswith("-"):
            break
    return path


def parse_problem(argv: list[str]) -> str | None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            parser().parse_args(argv)
        except SystemExit as stop:
            return None if stop.code == 0 else err.getvalue().strip().splitlines()[-1]
    return None


def command_problems(page: Path, text: str) -> list[str]:
    problems = []
    for command in commands(text):
        argv = argv_of(command)
        path = subcommand_path(argv)
        if not path or parse_problem([*path, "--help"]) is not None:
            problems.append(f"{page_id(page)}: `mnemo {' '.join(path) or argv[:1]} --help` fails: {command}")
        elif argv != path and (problem := parse_problem(argv)) is not None:  # a bare `mnemo import` names it
            problems.append(f"{page_id(page)}: `{command}` does not parse: {problem}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    assert link_problems(page, read(page)) == []


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_path_named_in_code_exists(page: Path) -> None:
    assert path_problems(page, read(page)) == []


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_test_named_exists(page: Path) -> None:
    assert named_test_problems(page, read(page)) == []


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_setting_named_exists(page: Path) -> None:
    assert setting_problems(page, read(page)) == []


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_mnemo_command_shown_parses(page: Path) -> None:
    assert command_problems(page, read(page)) == []


def test_the_checks_catch_what_they_are_for() -> None:
    """A page naming a missing file, heading, test, setting or command is caught by each check."""
    page = ROOT / "docs" / "probe.md"
    text = (
        "# Probe\n\n[gone](missing.md) [here](#nowhere) [there](api.md#nowhere) [fine](#probe) "
        "`gateway/not_a_module.py` `test_that_does_not_exist` `test_faults_redis.py::test_nothing_here` "
        "`memory.top_kk` `MNEMO_MEMORY__TOP_KK` `mnemo memories frobnicate` `mnemo users export alice --frobnicate` "
        "`mnemo users export`\n"
    )
    assert len(link_problems(page, text)) == 3
    assert path_problems(page, text) == ["docs/probe.md: names a missing path: gateway/not_a_module.py"]
    assert len(named_test_problems(page, text)) == 2
    assert len(setting_problems(page, text)) == 2
    assert len(command_problems(page, text)) == 2
