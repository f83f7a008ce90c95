"""The recording scripted LLM for bench/worker, as its own process: tests/support's
ScriptedUpstream (deterministic extraction and decision JSON for Mnemo's prompts) plus answers
in the shape Mem0's prompts ask for, and a record of every request and reply, read (and
cleared) at ``GET /bench/recorded``.

    .venv/bin/python -m bench.worker.upstream --port 9200
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.upstream import Recorded, ScriptedUpstream, clause_facts, completion


def mem0_answer(recorded: Recorded) -> str:
    """Mem0 2.2.1's single extraction call asks for {"memory": [{"text": ...}]}; the facts are the same
    clauses the Mnemo side extracts from the new user message, so both store the same things."""
    prompt = str(recorded.body.get("messages", [{}])[-1].get("content", ""))
    new = prompt.split("## New Messages", 1)[-1]
    said = [line[len("user: ") :] for line in new.splitlines() if line.startswith("user: ")]
    facts = [fact for line in said for fact in clause_facts(line)]
    return json.dumps({"memory": [{"id": str(n), "text": fact} for n, fact in enumerate(facts)]})


@dataclass
class RecordingUpstream(ScriptedUpstream):
    exchanges: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        app = super().app()
        app.router.routes.append(Route("/bench/recorded", self.recorded, methods=["GET"]))
        return app

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        recorded = Recorded(request.url.path, dict(request.headers), body)
        if recorded.task == "chat" and "[mnemo:" not in recorded.system_prompt:
            text = mem0_answer(recorded)
            reply: Response = JSONResponse(completion(body, text))
        else:
            reply = await super().chat(request)
            text = json.loads(bytes(reply.body))["choices"][0]["message"]["content"]
        self.requests.clear()  # ScriptedUpstream's own record; ours below keeps the reply too
        self.exchanges.append({"task": recorded.task, "messages": body.get("messages", []), "reply": text})
        return reply

    async def recorded(self, request: Request) -> JSONResponse:
        records, self.exchanges = self.exchanges, []
        return JSONResponse(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(RecordingUpstream().app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
