"""Saying exactly what is wrong with a configuration and where: the field path, the problem,
the value given (never for secrets), and its origin: a line of the YAML file or the
``MNEMO_*`` variable that set it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

FieldPath = tuple[str | int, ...]
SECRET_HINTS = ("key", "secret", "password", "token")
MESSAGES = {"extra_forbidden": "unknown field (not a Mnemo setting; check the spelling and the section)"}


def yaml_key_lines(path: Path) -> dict[FieldPath, int]:
    """The 1-based line of every key and list item in a YAML file, by field path."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    lines: dict[FieldPath, int] = {}
    _walk(root, (), lines)
    return lines


def _walk(node: Any, at: FieldPath, lines: dict[FieldPath, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*at, str(key.value))
            lines[child] = key.start_mark.line + 1
            _walk(value, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*at, index)] = item.start_mark.line + 1
            _walk(item, (*at, index), lines)


def origin(loc: FieldPath, env_vars: Mapping[FieldPath, str], lines: Mapping[FieldPath, int]) -> str | None:
    for end in range(len(loc), 0, -1):
        if loc[:end] in env_vars:
            return f"set by {env_vars[loc[:end]]}"
        if loc[:end] in lines:
            return f"line {lines[loc[:end]]}"
    return None


def shown_value(loc: FieldPath, value: Any) -> str | None:
    if isinstance(value, dict | list) or any(hint in str(part).lower() for part in loc for hint in SECRET_HINTS):
        return None
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def describe_errors(
    exc: ValidationError,
    source: str,
    env_vars: Mapping[FieldPath, str] | None = None,
    lines: Mapping[FieldPath, int] | None = None,
) -> str:
    described = [f"invalid configuration in {source}:"]
    for error in exc.errors():
        loc: FieldPath = tuple(error["loc"])
        where = ".".join(str(part) for part in loc) or "(top level)"
        details = [MESSAGES.get(error["type"], error["msg"])]
        if (value := shown_value(loc, error.get("input"))) is not None and error["type"] != "missing":
            details.append(f"got {value}")
        if place := origin(loc, env_vars or {}, lines or {}):
            details.append(place)
        described.append(f"  {where}: " + "; ".join(details))
    return "\n".join(described)
