"""What the scripted upstream answers on OpenAI's Responses API and Anthropic's Messages API: the
JSON bodies and the typed SSE events, shaped as the real APIs (and their SDKs' parsers) have them."""

from __future__ import annotations

import json
import time
from typing import Any

# --- the Responses API ---------------------------------------------------------------------


def responses_input_text(body: dict[str, Any]) -> str:
    """The text of the request's last user input (a string input is one)."""
    items = body.get("input")
    if isinstance(items, str):
        return items
    users = [item for item in items or [] if isinstance(item, dict) and item.get("role") == "user"]
    content = users[-1].get("content") if users else ""
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


def response_object(
    body: dict[str, Any], response_id: str, text: str | None, status: str = "completed"
) -> dict[str, Any]:
    output = [] if text is None else [output_message(response_id, text, "completed")]
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "model": body.get("model", "scripted"),
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "store": body.get("store", True),
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": body.get("tools", []),
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None if text is None else responses_usage(10, max(1, len(text) // 4)),
        "metadata": body.get("metadata", {}),
    }


def output_message(response_id: str, text: str, status: str) -> dict[str, Any]:
    content = (
        [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status == "completed" else []
    )
    return {"id": message_id(response_id), "type": "message", "status": status, "role": "assistant", "content": content}


def message_id(response_id: str) -> str:
    return response_id.replace("resp_", "msg_", 1)


def responses_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def typed_event(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def responses_events(body: dict[str, Any], response_id: str, pieces: list[str]) -> list[bytes]:
    """A streamed Response as OpenAI sends it: created, in_progress, the message item and its text
    part opened, one delta per piece, everything closed, then response.completed."""
    text, item_id = "".join(pieces), message_id(response_id)
    started = response_object(body, response_id, None, status="in_progress")
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": output_message(response_id, "", "in_progress"),
        },
        {"type": "response.content_part.added", **where, "part": part},
        *({"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []} for piece in pieces),
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": {**part, "text": text}},
        {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": output_message(response_id, text, "completed"),
        },
        {"type": "response.completed", "response": response_object(body, response_id, text)},
    ]
    return [typed_event({**event, "sequence_number": number}) for number, event in enumerate(events)]


# The event types a client sees for one streamed Responses reply of the scripted upstream's
# default 4 chunks, in order.
SCRIPTED_RESPONSE_EVENT_TYPES = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * 4,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def responses_error(status: int) -> str:
    return json.dumps({"error": {"message": f"scripted {status}", "type": "scripted", "param": None, "code": None}})


# --- Anthropic's Messages API --------------------------------------------------------------

THOUGHT = "The user states a fact; echo it."


def anthropic_user_text(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages", []) if isinstance(m, dict) and m.get("role") == "user"]
    content = users[-1].get("content") if users else ""
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return str(content or "")


def anthropic_blocks(body: dict[str, Any], text: str) -> list[dict[str, Any]]:
    """The reply's content: a thinking block when thinking is enabled, the text, and a call of the
    first tool when the request offers tools."""
    blocks: list[dict[str, Any]] = []
    if (body.get("thinking") or {}).get("type") == "enabled":
        blocks.append({"type": "thinking", "thinking": THOUGHT, "signature": "sig-scripted"})
    blocks.append({"type": "text", "text": text})
    if body.get("tools"):
        name = body["tools"][0].get("name", "tool")
        blocks.append({"type": "tool_use", "id": "toolu_scripted", "name": name, "input": {"query": text}})
    return blocks


def anthropic_message(body: dict[str, Any], text: str) -> dict[str, Any]:
    blocks = anthropic_blocks(body, text)
    return {
        "id": "msg_scripted",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "scripted"),
        "content": blocks,
        "stop_reason": "tool_use" if body.get("tools") else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": max(1, len(text) // 4)},
    }


def anthropic_events(body: dict[str, Any], pieces: list[str]) -> list[bytes]:
    """A streamed Message as Anthropic sends it: message_start, each block started, its deltas
    (text in ``pieces``, thinking and its signature, tool input as partial JSON), stopped, then
    message_delta (stop reason, usage) and message_stop."""
    message = anthropic_message(body, "".join(pieces))
    head = {**message, "content": [], "stop_reason": None, "usage": {"input_tokens": 10, "output_tokens": 1}}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": head}, {"type": "ping"}]
    for index, block in enumerate(message["content"]):
        events += block_events(index, block, pieces)
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    events += [{"type": "message_delta", "delta": delta, "usage": message["usage"]}, {"type": "message_stop"}]
    return [typed_event(event) for event in events]


def block_events(index: int, block: dict[str, Any], pieces: list[str]) -> list[dict[str, Any]]:
    kind = block["type"]
    start: dict[str, Any]
    deltas: list[dict[str, Any]]
    if kind == "text":
        start, deltas = {"type": "text", "text": ""}, [{"type": "text_delta", "text": piece} for piece in pieces]
    elif kind == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [
            {"type": "thinking_delta", "thinking": block["thinking"]},
            {"type": "signature_delta", "signature": block["signature"]},
        ]
    else:
        start = {**block, "input": {}}
        arguments = json.dumps(block["input"])
        half = len(arguments) // 2
        deltas = [{"type": "input_json_delta", "partial_json": part} for part in (arguments[:half], arguments[half:])]
    return [
        {"type": "content_block_start", "index": index, "content_block": start},
        *({"type": "content_block_delta", "index": index, "delta": delta} for delta in deltas),
        {"type": "content_block_stop", "index": index},
    ]


def anthropic_error(status: int) -> str:
    kind = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error"}.get(status)
    kind = kind or ("overloaded_error" if status == 529 else "api_error")
    return json.dumps({"type": "error", "error": {"type": kind, "message": f"scripted {status}"}})
