"""Opening an import file as a byte stream (a ChatGPT or Claude export may be the zip it was
downloaded as) and telling its format from its first bytes."""

from __future__ import annotations

import contextlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

import ijson

from mnemo.import_formats.base import ImportFormatError

CONVERSATIONS_FILE = "conversations.json"
PEEK_EVENTS = 10_000  # JSON events read to recognise a format before giving up
# The keys of a list item that name its format.
FORMAT_KEYS = {"mapping": "chatgpt", "chat_messages": "claude", "conversation": "locomo", "qa": "locomo"}


@contextlib.contextmanager
def open_source(path: Path) -> Iterator[BinaryIO]:
    if not path.is_file():
        raise ImportFormatError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == CONVERSATIONS_FILE]
            if not names:
                raise ImportFormatError(f"{path}: a zip without a {CONVERSATIONS_FILE}")
            with archive.open(min(names, key=len)) as stream:
                yield cast(BinaryIO, stream)  # a ZipExtFile: read() and readline() as a file's
        return
    with path.open("rb") as stream:
        yield stream


def detect_format(path: Path) -> str:
    """chatgpt, claude or locomo for a JSON array (by its first item's keys), jsonl for lines of
    JSON objects; ImportFormatError when it is none of them."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return "jsonl"
    with open_source(path) as stream:
        head = stream.read(64 * 1024)
    start = head.lstrip()[:1]
    if start == b"{":
        first_line = head.lstrip().split(b"\n", 1)[0]
        with contextlib.suppress(ValueError):
            if isinstance(json.loads(first_line), dict):
                return "jsonl"
        raise ImportFormatError(f"{path}: a JSON object, not a list of conversations nor JSON lines")
    if start != b"[":
        raise ImportFormatError(f"{path}: neither a JSON array of conversations nor JSON lines")
    with open_source(path) as stream:
        return _array_format(path, stream)


def _array_format(path: Path, stream: BinaryIO) -> str:
    try:
        for count, (prefix, event, value) in enumerate(ijson.parse(stream)):
            if prefix == "item" and event == "map_key" and value in FORMAT_KEYS:
                return FORMAT_KEYS[value]
            if prefix == "" and event == "end_array" or count > PEEK_EVENTS:
                break
    except ijson.JSONError as exc:
        raise ImportFormatError(f"{path}: not valid JSON ({exc})") from None
    raise ImportFormatError(f"{path}: a JSON array, but not of ChatGPT, Claude or LOCOMO conversations")
