"""A fast scripted OpenAI-compatible upstream: a bare ASGI app (no framework) answering
``POST /v1/chat/completions``, ``POST /v1/responses`` (OpenAI's Responses API) and ``POST
/v1/messages`` (Anthropic's Messages API), streaming or not, with a configurable first-chunk delay,
chunk count and chunk spacing. The Responses and Messages bodies and typed events are the test
suite's (tests/support/api_replies.py), so the bench's upstream speaks those APIs as the tests'
does. Run as its own process so its CPU is not the gateway's:

    .venv/bin/python -m bench.overhead.upstream --port 9100 --chunks 8 --first-chunk-ms 0 --chunk-ms 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import uvicorn

from tests.support import api_replies

Scope = dict[str, Any]
Message = dict[str, Any]

REPLY = "Sure - here is a short, scripted answer from the benchmark upstream, long enough to split."


@dataclass(frozen=True)
class Script:
    chunks: int = 8
    first_chunk_s: float = 0.0
    chunk_s: float = 0.0


def completion(model: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 20, "total_tokens": 40},
        }
    ).encode()


def event(model: str, delta: dict[str, str], finish: str | None) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def reply_pieces(chunks: int) -> list[str]:
    size = -(-len(REPLY) // chunks)
    return [REPLY[i : i + size] for i in range(0, len(REPLY), size)]


# The typed events that carry the reply's text: the timing model paces these as it paces chat chunks.
TEXT_DELTAS = (b"event: response.output_text.delta\n", b"event: content_block_delta\n")


def paced(events: list[bytes]) -> list[bytes]:
    """Typed events grouped into the sends a chat stream makes: everything up to the first text
    delta, each later delta alone, then everything after the last (the terminal events), so a
    Responses or Messages stream has the chat stream's first-byte time and spacing."""
    deltas = [index for index, event in enumerate(events) if event.startswith(TEXT_DELTAS)]
    first, last = deltas[0], deltas[-1]
    return [b"".join(events[: first + 1]), *events[first + 1 : last + 1], b"".join(events[last + 1 :])]


class Upstream:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.responses = 0  # Response ids are unique, as the real API's are

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"].endswith("/models"):
            await self.respond(send, 200, b'{"object":"list","data":[{"id":"bench","object":"model"}]}')
            return
        request = json.loads(body or b"{}")
        model = request.get("model", "bench")
        api = "responses" if scope["path"].endswith("/responses") else "chat"
        api = "messages" if scope["path"].endswith("/messages") else api
        if request.get("stream") and api == "chat":
            await self.stream(send, model)
        elif request.get("stream"):
            await self.stream_events(send, self.events(api, request))
        else:
            # A model takes as long to write a reply whole as to stream it.
            if generation_s := self.script.first_chunk_s + self.script.chunk_s * (self.script.chunks - 1):
                await asyncio.sleep(generation_s)
            await self.respond(send, 200, self.whole(api, request, model))

    def response_id(self) -> str:
        self.responses += 1
        return f"resp_bench{self.responses}"

    def whole(self, api: str, request: dict[str, Any], model: str) -> bytes:
        if api == "responses":
            return json.dumps(api_replies.response_object(request, self.response_id(), REPLY)).encode()
        if api == "messages":
            return json.dumps(api_replies.anthropic_message(request, REPLY)).encode()
        return completion(model)

    def events(self, api: str, request: dict[str, Any]) -> list[bytes]:
        text = reply_pieces(self.script.chunks)
        if api == "responses":
            return paced(api_replies.responses_events(request, self.response_id(), text))
        return paced(api_replies.anthropic_events(request, text))

    async def stream_events(self, send: Any, sends: list[bytes]) -> None:
        """A Responses or Messages stream, on the chat stream's clock: the first send after the
        first-chunk delay, one text delta per send ``chunk_s`` apart, the terminal events at once."""
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if self.script.first_chunk_s:
            await asyncio.sleep(self.script.first_chunk_s)
        for index, payload in enumerate(sends[:-1]):
            if self.script.chunk_s and index > 0:
                await asyncio.sleep(self.script.chunk_s)
            await send({"type": "http.response.body", "body": payload, "more_body": True})
        await send({"type": "http.response.body", "body": sends[-1], "more_body": False})

    async def respond(self, send: Any, status: int, payload: bytes) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def stream(self, send: Any, model: str) -> None:
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if self.script.first_chunk_s:
            await asyncio.sleep(self.script.first_chunk_s)
        size = -(-len(REPLY) // self.script.chunks)
        pieces = [REPLY[i : i + size] for i in range(0, len(REPLY), size)]
        for index, piece in enumerate(pieces):
            delta = {"role": "assistant", "content": piece} if index == 0 else {"content": piece}
            await send({"type": "http.response.body", "body": event(model, delta, None), "more_body": True})
            if self.script.chunk_s and index < len(pieces) - 1:
                await asyncio.sleep(self.script.chunk_s)
        tail = event(model, {}, "stop") + b"data: [DONE]\n\n"
        await send({"type": "http.response.body", "body": tail, "more_body": False})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--first-chunk-ms", type=float, default=0.0)
    parser.add_argument("--chunk-ms", type=float, default=0.0)
    args = parser.parse_args()
    script = Script(max(1, args.chunks), args.first_chunk_ms / 1000, args.chunk_ms / 1000)
    uvicorn.run(
        Upstream(script), host="127.0.0.1", port=args.port, log_level="warning", access_log=False, lifespan="off"
    )


if __name__ == "__main__":
    main()
