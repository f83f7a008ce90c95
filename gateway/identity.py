"""Who a chat request is for and what it may do with memory, read from headers (or the body's
``user`` field as a fallback). Ids are validated before they reach any store or log line."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from starlette.datastructures import Headers

from gateway.errors import bad_request
from mnemo.durations import parse_duration
from mnemo.models import Scope

USER_HEADER = "x-mnemo-user-id"
AGENT_HEADER = "x-mnemo-agent-id"
SESSION_HEADER = "x-mnemo-session-id"
MEMORY_HEADER = "x-mnemo-memory"
EXTRACTION_HEADER = "x-mnemo-extraction"
EXPIRES_HEADER = "x-mnemo-expires-in"

MemoryMode = Literal["on", "read", "write", "off"]
MEMORY_MODES: tuple[MemoryMode, ...] = ("on", "read", "write", "off")
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,127}")


@dataclass(frozen=True)
class MemoryContext:
    request_id: str
    scope: Scope | None  # None: no user id, so the request is proxied with memory off
    mode: MemoryMode
    extraction_mode: Literal["raw", "llm"] | None
    # X-Mnemo-Expires-In: the memories this exchange creates expire this long after it (the
    # retention policy may cut it shorter, never longer; mnemo.retention).
    expires_in: timedelta | None = None

    @property
    def reads(self) -> bool:
        return self.scope is not None and self.mode in ("on", "read")

    @property
    def writes(self) -> bool:
        return self.scope is not None and self.mode in ("on", "write")


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


def validate_id(value: str, field: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        raise bad_request(
            f"{field} must be 1-128 characters of letters, digits and . _ : @ + - (starting with a letter or digit)",
            param=field,
            code="invalid_id",
        )
    return value


def _optional_id(headers: Headers, name: str) -> str | None:
    value = headers.get(name)
    return validate_id(value, name) if value not in (None, "") else None


def body_field(body: dict[str, Any], path: str) -> Any:
    """A field of the body by its dotted path (``metadata.user_id``); None when absent."""
    value: Any = body
    for name in path.split("."):
        value = value.get(name) if isinstance(value, dict) else None
    return value


def read_memory_context(
    headers: Headers, body: dict[str, Any], default_mode: MemoryMode, user_field: str = "user"
) -> MemoryContext:
    """``user_field``: the body's own user id field, the fallback when no user header is sent
    (``user`` for OpenAI's APIs, ``metadata.user_id`` for Anthropic's)."""
    user = headers.get(USER_HEADER)
    if user in (None, "") and isinstance(fallback := body_field(body, user_field), str) and fallback:
        user = fallback
    else:
        user_field = USER_HEADER
    mode = (headers.get(MEMORY_HEADER) or default_mode).strip().lower()
    if mode not in MEMORY_MODES:
        raise bad_request(f"{MEMORY_HEADER} must be one of on, read, write, off", param=MEMORY_HEADER)
    extraction = (headers.get(EXTRACTION_HEADER) or "").strip().lower() or None
    if extraction not in (None, "raw", "llm"):
        raise bad_request(f"{EXTRACTION_HEADER} must be raw or llm", param=EXTRACTION_HEADER)
    agent = _optional_id(headers, AGENT_HEADER)
    session = _optional_id(headers, SESSION_HEADER)
    expires_in = read_expires_in(headers)
    scope = None
    if user not in (None, ""):
        scope = Scope(user_id=validate_id(user, user_field), agent_id=agent, session_id=session)
    return MemoryContext(
        request_id=new_request_id(),
        scope=scope,
        mode=mode,
        extraction_mode=extraction,  # type: ignore[arg-type]
        expires_in=expires_in,
    )


def read_expires_in(headers: Headers) -> timedelta | None:
    value = headers.get(EXPIRES_HEADER)
    if value in (None, ""):
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise bad_request(f"{EXPIRES_HEADER}: {exc}", param=EXPIRES_HEADER, code="invalid_duration") from None
