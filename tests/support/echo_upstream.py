"""An OpenAI-shaped upstream for pass-through tests: it records exactly what it received (method,
raw path, raw query, headers, body bytes or their hash) and answers each endpoint with what the
openai SDK expects; a test may script any path's answer instead. Plus the client side's record of
what the SDK sent (:class:`RecordingTransport`), so the two can be compared byte for byte."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

KEEP_BYTES = 4 * 1024 * 1024  # bodies up to this size are kept whole; larger ones only hashed
SPEECH_PARTS = (b"ID3-first-part;", b"second-part;", b"last-part")


@dataclass
class Captured:
    method: str
    path: str  # as it came on the request line, still percent-encoded
    query: bytes
    headers: list[tuple[str, str]]
    body: bytes = b""  # empty when larger than KEEP_BYTES
    size: int = 0
    sha256: str = ""
    complete: bool = False  # the whole body arrived (False: the sender broke off)

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key == name]
        return values[0] if values else None

    @property
    def header_names(self) -> set[str]:
        return {key for key, _ in self.headers}

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Scripted:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    delay_s: float = 0.0  # before answering: a slow upstream


@dataclass
class EchoUpstream:
    requests: list[Captured] = field(default_factory=list)
    scripted: dict[str, Scripted] = field(default_factory=dict)  # by raw path
    read_delay_s: float = 0.0  # a pause per received chunk: a slow reader, so an upload takes a while
    speech_gate: threading.Event = field(default_factory=threading.Event)  # the client got the first part
    speech_gate_timeout_s: float = 30.0
    speech_gate_was_opened: bool | None = None

    def reset(self) -> None:
        self.requests.clear()
        self.scripted.clear()
        self.read_delay_s = 0.0
        self.speech_gate = threading.Event()
        self.speech_gate_was_opened = None

    def app(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
        return Starlette(routes=[Route("/{path:path}", self.handle, methods=methods)])

    async def handle(self, request: Request) -> Response:
        raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
        captured = Captured(
            request.method,
            raw_path.decode("latin-1"),
            request.scope["query_string"],
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]],
        )
        self.requests.append(captured)
        digest, kept = hashlib.sha256(), bytearray()
        try:
            async for chunk in request.stream():
                digest.update(chunk)
                captured.size += len(chunk)
                if captured.size <= KEEP_BYTES:
                    kept += chunk
                if self.read_delay_s and chunk:
                    await asyncio.sleep(self.read_delay_s)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody reads it: the sender is gone
        captured.body = bytes(kept) if captured.size <= KEEP_BYTES else b""
        captured.sha256, captured.complete = digest.hexdigest(), True
        if (scripted := self.scripted.get(captured.path)) is not None:
            await asyncio.sleep(scripted.delay_s)
            response = Response(scripted.body, status_code=scripted.status)
            response.raw_headers = [(b"content-length", str(len(scripted.body)).encode())] + [
                (k.encode(), v.encode()) for k, v in scripted.headers
            ]
            return response
        return self.answer(captured)

    def answer(self, captured: Captured) -> Response:
        path = captured.path
        if path.endswith("/embeddings"):
            return JSONResponse(embeddings(captured.json()))
        if path.endswith("/moderations"):
            body = {"id": "modr-echo", "model": "omni-moderation-latest", "results": [moderation()]}
            return JSONResponse(body)
        if "/models/" in path:
            return JSONResponse({"id": path.rsplit("/", 1)[-1], "object": "model", "created": 0, "owned_by": "echo"})
        if path.endswith("/files") and captured.method == "POST":
            return JSONResponse(file_object(captured))
        if path.endswith("/audio/transcriptions"):
            return JSONResponse({"text": f"heard {captured.size} bytes"})
        if path.endswith("/audio/speech"):
            return StreamingResponse(self.speech(), media_type="audio/mpeg")
        return JSONResponse({"method": captured.method, "path": path, "query": captured.query.decode()})

    async def speech(self) -> AsyncIterator[bytes]:
        """The first part, then the rest only once the client says it has the first (or after a
        long timeout, which the test then reports): proof the relay does not wait for the end."""
        yield SPEECH_PARTS[0]
        gate = self.speech_gate
        opened = await asyncio.get_running_loop().run_in_executor(None, gate.wait, self.speech_gate_timeout_s)
        self.speech_gate_was_opened = opened
        for part in SPEECH_PARTS[1:]:
            yield part


def embeddings(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    data = []
    for index, _ in enumerate(inputs):
        vector = [float(index), 0.5, -1.0]
        encoded: Any = vector
        if body.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    usage = {"prompt_tokens": 1, "total_tokens": 1}
    return {"object": "list", "data": data, "model": body.get("model"), "usage": usage}


def moderation() -> dict[str, Any]:
    return {"flagged": False, "categories": {}, "category_scores": {}, "category_applied_input_types": {}}


def file_object(captured: Captured) -> dict[str, Any]:
    return {
        "id": "file-echo",
        "object": "file",
        "bytes": captured.size,
        "created_at": 0,
        "filename": "upload",
        "purpose": "batch",
        "status": "processed",
    }


class RecordingTransport(httpx.HTTPTransport):
    """The SDK's transport, keeping the hash and (when small) the bytes of every body it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Sent] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        content = request.read()
        kept = content if len(content) <= KEEP_BYTES else b""
        sent = Sent(request.url.raw_path.decode(), dict(request.headers), kept, hashlib.sha256(content).hexdigest())
        self.sent.append(sent)
        return super().handle_request(request)


@dataclass
class Sent:
    target: str  # path and query
    headers: dict[str, str]
    body: bytes  # empty when larger than KEEP_BYTES
    sha256: str
