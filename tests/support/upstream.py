"""A scripted OpenAI-compatible upstream for tests: deterministic replies, deterministic JSON
for extraction and decision prompts, scripted failures, and a record of every request. It also
serves OpenAI's Responses API (/v1/responses) and Anthropic's Messages API (/v1/messages), JSON
and streamed, echoing the last user input the same way (bodies in tests/support/api_replies.py)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from mnemo.prompts import DECISION_TASK_MARKER, EXTRACTION_TASK_MARKER
from tests.support import api_replies

Decide = Callable[[list[dict[str, Any]], list[dict[str, Any]]], list[dict[str, Any]]]
JSON_HOLD_TIMEOUT_S = 10.0  # a held call answers anyway then, so a test that sees no overlap fails


@dataclass
class Failure:
    """What to do instead of answering normally: a status, a cut or malformed stream, a hang."""

    status: int | None = None
    cut_after_chunks: int | None = None
    malformed: bool = False
    delay_s: float = 0.0
    body: str | None = None


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def system_prompt(self) -> str:
        """The system text the model saw: ``instructions`` on the Responses API, ``system`` on
        Anthropic's (blocks as JSON), the leading system message on Chat Completions."""
        if self.path.endswith("/responses"):
            return str(self.body.get("instructions") or "")
        if self.path.endswith("/messages"):
            system = self.body.get("system") or ""
            return system if isinstance(system, str) else json.dumps(system)
        first = self.body.get("messages", [{}])[0]
        content = first.get("content") if first.get("role") == "system" else ""
        return content if isinstance(content, str) else json.dumps(content)

    @property
    def task(self) -> str:
        prompt = self.system_prompt
        if EXTRACTION_TASK_MARKER in prompt:
            return "extract"
        if DECISION_TASK_MARKER in prompt:
            return "decide"
        return "chat"


def clause_facts(user_text: str) -> list[str]:
    """Deterministic 'extraction': each clause the user states about themselves."""
    clauses = re.split(r"\s*(?:,|\.|;| and )\s*", user_text)
    return [c.strip() for c in clauses if re.match(r"(?i)^(i|my|i'm|i've)\b", c.strip())]


def keep_new(facts: list[dict[str, Any]], existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    known = {m["text"].lower(): m["id"] for m in existing}
    decisions = []
    for fact in facts:
        if fact["text"].lower() in known:
            decisions.append(
                {"fact": fact["index"], "action": "NONE", "id": known[fact["text"].lower()], "reason": "known"}
            )
        else:
            decisions.append({"fact": fact["index"], "action": "ADD", "text": fact["text"], "reason": "new"})
    return decisions


@dataclass
class ScriptedUpstream:
    chunks: int = 4
    chunk_delay_s: float = 0.0
    first_chunk_delay_s: float = 0.0
    # Streams stop before this chunk (0: before the first) until ``release`` is set: a test can
    # see what the gateway relays while the upstream is provably still generating.
    hold_at_chunk: int | None = None
    release: threading.Event = field(default_factory=threading.Event)
    decide: Decide = keep_new
    extract: Callable[[str], list[str]] = clause_facts
    requests: list[Recorded] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    malformed_llm_answers: int = 0
    open_streams: int = 0
    json_delay_s: float = 0.0  # extraction and decision answers wait this long (slow jobs)
    json_in_flight: int = 0
    json_peak: int = 0  # the most extraction and decision calls answered at once
    # Extraction and decision answers wait until this many calls were in flight at once (or
    # JSON_HOLD_TIMEOUT_S passed): overlap proven by the calls themselves, not by timing.
    json_hold_until_peak: int = 0
    set_cookie: str | None = None  # a Set-Cookie header on every chat reply
    response_ids: list[str] = field(default_factory=list)  # Responses this upstream has answered

    def reset(self) -> None:
        self.requests.clear()
        self.failures.clear()
        self.decide = keep_new
        self.extract = clause_facts
        self.malformed_llm_answers = 0
        self.json_delay_s = 0.0
        self.json_in_flight = self.json_peak = self.json_hold_until_peak = 0
        self.set_cookie = None
        self.chunks, self.chunk_delay_s, self.first_chunk_delay_s = 4, 0.0, 0.0
        self.hold_at_chunk = None
        self.release.set()  # a stream still held by the last test ends
        self.release = threading.Event()
        self.response_ids.clear()

    def of_task(self, task: str) -> list[Recorded]:
        return [r for r in self.requests if r.task == task]

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
                Route("/v1/responses", self.responses, methods=["POST"]),
                Route("/v1/messages", self.messages, methods=["POST"]),
            ]
        )

    async def embeddings(self, request: Request) -> JSONResponse:
        """Deterministic bag-of-words vectors (EMBEDDING_DIMENSION wide), one per input."""
        body = await request.json()
        self.requests.append(Recorded(request.url.path, dict(request.headers), body))
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": bag_of_words(text)} for i, text in enumerate(inputs)]
        return JSONResponse({"object": "list", "data": data, "model": body.get("model")})

    async def models(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "scripted", "object": "model"}]})

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        recorded = Recorded(request.url.path, dict(request.headers), body)
        self.requests.append(recorded)
        failure = self.failures.pop(0) if self.failures and recorded.task == "chat" else None
        if failure and failure.delay_s:
            await asyncio.sleep(failure.delay_s)
        if failure and failure.status:
            error = failure.body or json.dumps({"error": {"message": f"scripted {failure.status}", "type": "scripted"}})
            return Response(error, status_code=failure.status, media_type="application/json")
        if recorded.task != "chat":
            self.json_in_flight += 1
            self.json_peak = max(self.json_peak, self.json_in_flight)
            try:
                await self.json_hold()
                if self.json_delay_s:
                    await asyncio.sleep(self.json_delay_s)
            finally:
                self.json_in_flight -= 1
            return self.json_answer(recorded)
        text = self.reply_for(body)
        if (body.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
            text = json.dumps({"reply": text})  # JSON mode: the same echo, as an object
        if body.get("stream") and body.get("tools"):
            return StreamingResponse(tool_call_stream(body, self.chunks), media_type="text/event-stream")
        cookie = {"set-cookie": self.set_cookie} if self.set_cookie else None
        if body.get("stream"):
            return StreamingResponse(self.stream(body, text, failure), media_type="text/event-stream", headers=cookie)
        return JSONResponse(completion(body, text), headers=cookie)

    async def json_hold(self) -> None:
        deadline = time.monotonic() + JSON_HOLD_TIMEOUT_S
        while self.json_peak < self.json_hold_until_peak:  # noqa: ASYNC110  # a counter, not an event
            if time.monotonic() > deadline:
                self.json_hold_until_peak = 0  # no overlap came: answer this call and the later ones
                return
            await asyncio.sleep(0.01)

    async def scripted(
        self, request: Request, error_body: Callable[[int], str]
    ) -> tuple[dict[str, Any], Failure | None, Response | None]:
        """Record a Responses or Messages request and take its scripted failure: an error answer
        (in that API's shape unless the failure has a body), or what the stream should do."""
        body = await request.json()
        self.requests.append(Recorded(request.url.path, dict(request.headers), body))
        failure = self.failures.pop(0) if self.failures else None
        if failure and failure.delay_s:
            await asyncio.sleep(failure.delay_s)
        if failure and failure.status:
            error = failure.body or error_body(failure.status)
            return body, failure, Response(error, status_code=failure.status, media_type="application/json")
        return body, failure, None

    async def responses(self, request: Request) -> Response:
        body, failure, error = await self.scripted(request, api_replies.responses_error)
        if error is not None:
            return error
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.response_ids:
            message = f"Previous response with id '{previous}' not found."
            return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=404)
        response_id = f"resp_scripted{len(self.response_ids)}"
        self.response_ids.append(response_id)
        text = f"Echo: {api_replies.responses_input_text(body)}"
        if body.get("stream"):
            events = api_replies.responses_events(body, response_id, split(text, self.chunks))
            return StreamingResponse(self.event_stream(events, failure), media_type="text/event-stream")
        return JSONResponse(api_replies.response_object(body, response_id, text))

    async def messages(self, request: Request) -> Response:
        body, failure, error = await self.scripted(request, api_replies.anthropic_error)
        if error is not None:
            return error
        text = f"Echo: {api_replies.anthropic_user_text(body)}"
        if body.get("stream"):
            events = api_replies.anthropic_events(body, split(text, self.chunks))
            return StreamingResponse(self.event_stream(events, failure), media_type="text/event-stream")
        return JSONResponse(api_replies.anthropic_message(body, text))

    async def event_stream(self, events: list[bytes], failure: Failure | None) -> AsyncIterator[bytes]:
        """Typed SSE events (Responses, Anthropic) with the chat stream's pacing and scripted faults."""
        self.open_streams += 1
        try:
            if self.first_chunk_delay_s:
                await asyncio.sleep(self.first_chunk_delay_s)
            hold, gate = self.hold_at_chunk, self.release
            for index, event in enumerate(events):
                if index == hold:
                    await held(gate)
                if failure and failure.cut_after_chunks is not None and index == failure.cut_after_chunks:
                    raise ConnectionResetError("scripted cut")
                if failure and failure.malformed and index == 1:
                    yield b"data: {not json\n\n"
                yield event
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
        finally:
            self.open_streams -= 1

    def reply_for(self, body: dict[str, Any]) -> str:
        users = [m for m in body.get("messages", []) if m.get("role") == "user"]
        last = users[-1].get("content") if users else ""
        if isinstance(last, list):
            last = " ".join(p.get("text", "") for p in last if isinstance(p, dict))
        return f"Echo: {last}"

    def json_answer(self, recorded: Recorded) -> JSONResponse:
        if self.malformed_llm_answers > 0:
            self.malformed_llm_answers -= 1
            return JSONResponse(completion(recorded.body, "this is not json"))
        user = recorded.body["messages"][-1]["content"]
        if recorded.task == "extract":
            lines = re.findall(r'^user: (".*")$', user, flags=re.MULTILINE)
            latest = json.loads(lines[-1]) if lines else ""
            answer: dict[str, Any] = {"facts": self.extract(latest)}
        else:
            data = json.loads(user)
            answer = {"decisions": self.decide(data["new_facts"], data["existing_memories"])}
        return JSONResponse(completion(recorded.body, json.dumps(answer), prompt_tokens=len(user) // 4))

    async def stream(self, body: dict[str, Any], text: str, failure: Failure | None) -> AsyncIterator[bytes]:
        self.open_streams += 1
        try:
            if self.first_chunk_delay_s:
                await asyncio.sleep(self.first_chunk_delay_s)
            pieces = split(text, self.chunks)
            hold, gate = self.hold_at_chunk, self.release
            for index, piece in enumerate(pieces):
                if index == hold:
                    await held(gate)
                if failure and failure.cut_after_chunks is not None and index == failure.cut_after_chunks:
                    raise ConnectionResetError("scripted cut")  # uvicorn drops the connection mid-body
                if failure and failure.malformed and index == 1:
                    yield b"data: {not json\n\n"
                yield sse(chunk(body, {"content": piece}, None))
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
            yield sse(chunk(body, {}, "stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                yield sse({**chunk(body, {}, None), "choices": [], "usage": usage(10, len(pieces))})
            yield b"data: [DONE]\n\n"
        finally:
            self.open_streams -= 1


async def held(gate: threading.Event) -> None:
    """Until a test sets ``gate`` (the upstream runs on its own thread): or until the gateway
    goes away, which cancels the stream."""
    while not gate.is_set():  # noqa: ASYNC110  # set from the test's thread, not this loop
        await asyncio.sleep(0.01)


async def tool_call_stream(body: dict[str, Any], parts: int) -> AsyncIterator[bytes]:
    """A streamed call of the request's first tool, as OpenAI sends one: the id and name first,
    then the JSON arguments in pieces, then finish_reason "tool_calls"."""
    name = body["tools"][0].get("function", {}).get("name", "tool")
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    arguments = json.dumps({"query": users[-1].get("content") if users else ""})
    head = {"index": 0, "id": "call_scripted", "type": "function", "function": {"name": name, "arguments": ""}}
    yield sse(chunk(body, {"role": "assistant", "content": None, "tool_calls": [head]}, None))
    for piece in split(arguments, parts):
        yield sse(chunk(body, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, None))
    yield sse(chunk(body, {}, "tool_calls"))
    if (body.get("stream_options") or {}).get("include_usage"):
        yield sse({**chunk(body, {}, None), "choices": [], "usage": usage(10, parts)})
    yield b"data: [DONE]\n\n"


EMBEDDING_DIMENSION = 32


def bag_of_words(text: str) -> list[float]:
    vector = [0.0] * EMBEDDING_DIMENSION
    for word in re.findall(r"\w+", text.lower()):
        vector[sum(map(ord, word)) % EMBEDDING_DIMENSION] += 1.0
    return vector if any(vector) else [1.0] + [0.0] * (EMBEDDING_DIMENSION - 1)


def split(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, parts)))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def sse(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def usage(prompt: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def chunk(body: dict[str, Any], delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", "scripted"),
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def completion(body: dict[str, Any], text: str, prompt_tokens: int = 10) -> dict[str, Any]:
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "scripted"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": usage(prompt_tokens, max(1, len(text) // 4)),
    }
