#!/usr/bin/env python3
"""Render the configuration reference (every section, field, type, default and description of
mnemo.config.Settings) as Markdown, so docs/configuration.md's reference is generated, never hand-kept.

    .venv/bin/python scripts/config_reference.py           print it
    .venv/bin/python scripts/config_reference.py --write   replace docs/configuration.md's block in place

tests/unit/test_config_reference.py fails when that block differs from this output.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mnemo.config import ENV_PREFIX, Settings  # noqa: E402

REFERENCE = ROOT / "docs" / "configuration.md"
START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{arg}`" for arg in args)
    if origin in (types.UnionType, typing.Union):
        return " \\| ".join(type_name(arg) for arg in args).replace("NoneType", "null")
    if origin is list:
        return f"list of {type_name(args[0])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object (fields below)"
    return getattr(annotation, "__name__", str(annotation)).replace("SecretStr", "secret")


def bounds(field: FieldInfo) -> str:
    found = [
        f"{BOUNDS[name]} {getattr(item, name)}" for item in field.metadata for name in BOUNDS if hasattr(item, name)
    ]
    return f" ({', '.join(found)})" if found else ""


def default_of(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    if value is None:
        return "null"
    if value == []:
        return "`[]`"
    return f"`{value}`"


def rows(fields: dict[str, FieldInfo], env_prefix: str | None) -> list[str]:
    lines = ["| field | type | default | env var | description |", "| --- | --- | --- | --- | --- |"]
    for name, field in fields.items():
        env = f"`{env_prefix}{name.upper()}`" if env_prefix else "—"
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        kind = type_name(field.annotation) + bounds(field)
        lines.append(f"| `{name}` | {kind} | {default_of(field)} | {env} | {description} |")
    return lines


def is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def list_items(model: type[BaseModel], path: str) -> list[tuple[str, type[BaseModel]]]:
    """Models that appear as list items (the model table, auth tenants), with their field path."""
    found = []
    for name, field in model.model_fields.items():
        args = typing.get_args(field.annotation)
        if typing.get_origin(field.annotation) is list and args and is_model(args[0]):
            found.append((f"{path}{name}", args[0]))
    return found


def section(title: str, intro: str, table: list[str]) -> list[str]:
    return [f"#### {title}", "", intro, "", *table, ""] if intro else [f"#### {title}", "", *table, ""]


def render() -> str:
    fields = Settings.model_fields
    top = {name: field for name, field in fields.items() if not is_model(field.annotation)}
    out = section("top level", "", rows(top, ENV_PREFIX))
    items = list_items(Settings, "")
    for name, field in fields.items():
        if is_model(field.annotation):
            model: type[BaseModel] = field.annotation  # type: ignore[assignment]
            intro = (model.__doc__ or "").strip().replace("\n", " ") if model.__doc__ != BaseModel.__doc__ else ""
            out += section(f"`{name}`", intro, rows(model.model_fields, f"{ENV_PREFIX}{name.upper()}__"))
            items += list_items(model, f"{name}.")
    for path, model in items:
        intro = f"Each item of `{path}` (set the whole list from the environment as JSON)."
        out += section(f"`{path}[]`", intro, rows(model.model_fields, None))
    return "\n".join(out).rstrip() + "\n"


def replace_block(text: str, block: str) -> str:
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{block}{END}{after}"


def main(argv: list[str]) -> int:
    block = render()
    if argv[1:] == ["--write"]:
        REFERENCE.write_text(replace_block(REFERENCE.read_text(encoding="utf-8"), block), encoding="utf-8")
        return 0
    sys.stdout.write(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
