from __future__ import annotations

from typing import Any

import pytest
from starlette.datastructures import Headers

from gateway.errors import GatewayError
from gateway.identity import (
    AGENT_HEADER,
    EXTRACTION_HEADER,
    MEMORY_HEADER,
    SESSION_HEADER,
    USER_HEADER,
    MemoryContext,
    MemoryMode,
    new_request_id,
    read_memory_context,
    validate_id,
)
from mnemo.models import Scope


def read(
    headers: dict[str, str] | None = None, body: dict[str, Any] | None = None, default: MemoryMode = "on"
) -> MemoryContext:
    return read_memory_context(Headers(headers=headers or {}), body or {}, default)


def read_raw(name: str, value: bytes, body: dict[str, Any] | None = None) -> MemoryContext:
    return read_memory_context(Headers(raw=[(name.encode(), value)]), body or {}, "on")


def rejected(headers: dict[str, str] | None = None, body: dict[str, Any] | None = None) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        read(headers, body)
    assert caught.value.status == 400
    assert caught.value.type == "invalid_request_error"
    return caught.value


# --- who -----------------------------------------------------------------------------------


def test_user_agent_and_session_come_from_the_mnemo_headers() -> None:
    context = read({"X-Mnemo-User-Id": "alice", "X-Mnemo-Agent-Id": "support-bot", "X-Mnemo-Session-Id": "s:42"})
    assert context.scope == Scope(user_id="alice", agent_id="support-bot", session_id="s:42")


def test_the_body_user_field_is_the_fallback_when_there_is_no_user_header() -> None:
    assert read(body={"user": "bob@example.com"}).scope == Scope(user_id="bob@example.com")


def test_an_empty_user_header_falls_back_to_the_body_user_field() -> None:
    assert read({USER_HEADER: ""}, {"user": "bob"}).scope == Scope(user_id="bob")


def test_the_user_header_wins_over_the_body_user_field() -> None:
    assert read({USER_HEADER: "alice"}, {"user": "bob"}).scope == Scope(user_id="alice")


@pytest.mark.parametrize("user", [None, "", 42, ["alice"], {"id": "alice"}])
def test_a_missing_empty_or_non_string_body_user_means_no_scope(user: Any) -> None:
    context = read(body={"user": user})
    assert context.scope is None
    assert not context.reads and not context.writes


def test_agent_and_session_headers_without_a_user_give_no_scope() -> None:
    assert read({AGENT_HEADER: "bot", SESSION_HEADER: "s1"}).scope is None


def test_empty_agent_and_session_headers_are_treated_as_absent() -> None:
    assert read({USER_HEADER: "alice", AGENT_HEADER: "", SESSION_HEADER: ""}).scope == Scope(user_id="alice")


@pytest.mark.parametrize(
    "value",
    ["a", "A1", "0", "user_1", "u.s-e+r:x@y", "a" * 128, "550e8400-e29b-41d4-a716-446655440000"],
)
def test_validate_id_accepts_ids_of_allowed_characters_up_to_128_long(value: str) -> None:
    assert validate_id(value, "field") == value


INVALID_IDS = [
    "a" * 129,
    "has space",
    " alice",
    "alice ",
    "tab\there",
    "new\nline",
    "trailing\n",
    "nul\x00",
    "del\x7f",
    "josé",
    "用户",
    "ａｌｉｃｅ",  # fullwidth letters
    "١٢٣",  # Arabic-Indic digits
    "-leading-dash",
    ".hidden",
    "_underscore",
    "@at",
    "a/b",
    "../etc/passwd",
    "a*b",
    'quote"d',
    "semi;colon",
    " ",
    "\t",
]


@pytest.mark.parametrize("value", INVALID_IDS)
def test_validate_id_rejects_anything_else_naming_the_field(value: str) -> None:
    with pytest.raises(GatewayError) as caught:
        validate_id(value, "some-field")
    error = caught.value
    assert (error.status, error.param, error.code) == (400, "some-field", "invalid_id")
    assert "some-field" in error.message


@pytest.mark.parametrize("value", [v for v in INVALID_IDS if "\n" not in v and "\x00" not in v and v.isascii()])
def test_an_invalid_user_header_is_a_400_naming_the_header(value: str) -> None:
    assert rejected({USER_HEADER: value}).param == USER_HEADER


@pytest.mark.parametrize("value", ["josé".encode(), "用户".encode(), b"a\x00b", b"a\xffb", b" "])
def test_an_invalid_user_header_with_non_ascii_or_control_bytes_is_rejected(value: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        read_raw(USER_HEADER, value)
    assert caught.value.param == USER_HEADER


@pytest.mark.parametrize("value", INVALID_IDS)
def test_an_invalid_body_user_is_a_400_naming_the_user_field(value: str) -> None:
    assert rejected(body={"user": value}).param == "user"


@pytest.mark.parametrize("header", [AGENT_HEADER, SESSION_HEADER])
@pytest.mark.parametrize("value", ["a" * 129, "has space", "-x", "a/b"])
def test_invalid_agent_or_session_headers_are_rejected_naming_the_header(header: str, value: str) -> None:
    assert rejected({USER_HEADER: "alice", header: value}).param == header


def test_an_invalid_agent_header_is_rejected_even_without_a_user() -> None:
    assert rejected({AGENT_HEADER: "not valid"}).param == AGENT_HEADER


# --- what it may do ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "reads", "writes"),
    [("on", True, True), ("read", True, False), ("write", False, True), ("off", False, False)],
)
def test_each_memory_mode_decides_reads_and_writes_for_a_known_user(
    mode: MemoryMode, reads: bool, writes: bool
) -> None:
    context = read({USER_HEADER: "alice", MEMORY_HEADER: mode})
    assert context.mode == mode
    assert (context.reads, context.writes) == (reads, writes)


@pytest.mark.parametrize("mode", ["on", "read", "write", "off"])
def test_no_memory_mode_reads_or_writes_without_a_user(mode: MemoryMode) -> None:
    context = read({MEMORY_HEADER: mode})
    assert context.mode == mode
    assert not context.reads and not context.writes


@pytest.mark.parametrize(("raw", "mode"), [("ON", "on"), (" Read ", "read"), ("WRITE", "write"), ("Off\t", "off")])
def test_the_memory_header_is_case_and_whitespace_insensitive(raw: str, mode: str) -> None:
    assert read({USER_HEADER: "alice", MEMORY_HEADER: raw}).mode == mode


@pytest.mark.parametrize("default", ["on", "read", "write", "off"])
def test_the_default_mode_applies_when_the_memory_header_is_absent_or_empty(default: MemoryMode) -> None:
    assert read({USER_HEADER: "alice"}, default=default).mode == default
    assert read({USER_HEADER: "alice", MEMORY_HEADER: ""}, default=default).mode == default


@pytest.mark.parametrize("raw", ["yes", "true", "1", "readwrite", "o n"])
def test_an_unknown_memory_mode_is_a_400_naming_the_memory_header(raw: str) -> None:
    assert rejected({USER_HEADER: "alice", MEMORY_HEADER: raw}).param == MEMORY_HEADER


@pytest.mark.parametrize(("raw", "mode"), [("raw", "raw"), ("LLM", "llm"), (" Raw ", "raw"), ("", None)])
def test_the_extraction_header_selects_raw_or_llm_case_insensitively(raw: str, mode: str | None) -> None:
    assert read({USER_HEADER: "alice", EXTRACTION_HEADER: raw}).extraction_mode == mode


def test_the_extraction_mode_is_none_without_the_header() -> None:
    assert read({USER_HEADER: "alice"}).extraction_mode is None


@pytest.mark.parametrize("raw", ["auto", "both", "regex"])
def test_an_unknown_extraction_mode_is_a_400_naming_the_extraction_header(raw: str) -> None:
    assert rejected({USER_HEADER: "alice", EXTRACTION_HEADER: raw}).param == EXTRACTION_HEADER


def test_every_context_gets_a_fresh_request_id() -> None:
    first, second = read({USER_HEADER: "alice"}), read({USER_HEADER: "alice"})
    assert first.request_id.startswith("req_") and second.request_id.startswith("req_")
    assert first.request_id != second.request_id
    assert len(new_request_id()) == len("req_") + 32
