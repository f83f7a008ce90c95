"""A fast scripted OpenAI-compatible upstream: a bare ASGI app (no framework) answering
``POST /v1/chat/completions``, streaming or not, with a configurable first-chunk delay,
chunk count and chunk spacing. Run as its own process so its CPU is not the gateway's:

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


class Upstream:
    def __init__(self, script: Script) -> None:
        self.script = script

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
        if request.get("stream"):
            await self.stream(send, model)
        else:
            # A model takes as long to write a reply whole as to stream it.
            if generation_s := self.script.first_chunk_s + self.script.chunk_s * (self.script.chunks - 1):
                await asyncio.sleep(generation_s)
            await self.respond(send, 200, completion(model))

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
