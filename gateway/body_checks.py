"""The body checks the three model APIs share: a model name, a list of role-tagged messages and
a boolean ``stream``, each failing as a 400 that names the field."""

from __future__ import annotations

from typing import Any

from gateway.errors import bad_request


def require_model(body: dict[str, Any]) -> None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise bad_request("`model` is required and must be a non-empty string", param="model")


def require_messages(body: dict[str, Any], *, content_required: bool) -> None:
    """A non-empty ``messages`` array of objects with a string ``role`` and a string or array
    ``content`` (which Chat Completions lets a message leave out: ``content_required=False``)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("`messages` is required and must be a non-empty array", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request(f"messages[{index}] must be an object with a string `role`", param=f"messages[{index}]")
        content = message.get("content")
        if (content is not None or content_required) and not isinstance(content, str | list):
            raise bad_request(f"messages[{index}].content must be a string or an array", param=f"messages[{index}]")


def check_stream_flag(body: dict[str, Any]) -> None:
    if "stream" in body and not isinstance(body["stream"], bool):
        raise bad_request("`stream` must be a boolean", param="stream")
