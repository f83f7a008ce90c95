"""The model APIs the overhead bench sends: Chat Completions (the main rows), OpenAI's Responses
API and Anthropic's Messages API. Each names its path under a target's /v1, the body a client
sends (one new user question, nothing else), and how a complete reply reads, so a 200 whose
stream ended in an error event or without its terminal event counts as an error, not a fast
request."""

from __future__ import annotations

import json
from dataclasses import dataclass

from bench.overhead import targets

ANTHROPIC_VERSION = {"anthropic-version": "2023-06-01"}  # what every Anthropic SDK sends


@dataclass(frozen=True)
class Api:
    name: str
    path: str  # appended to the target's base URL, which ends in /v1
    model: str
    terminal: bytes  # in every complete stream
    whole_key: str  # a key every complete non-streaming reply has

    def body(self, content: str, stream: bool) -> dict[str, object]:
        if self.name == "responses":
            return {"model": self.model, "input": content, "stream": stream}
        message = {"role": "user", "content": content}
        if self.name == "messages":
            return {"model": self.model, "max_tokens": 256, "messages": [message], "stream": stream}
        return {"model": self.model, "messages": [message], "stream": stream}

    def complete(self, content: bytes, stream: bool) -> bool:
        """Whether a 200 carried a whole reply: a stream with its terminal event and no error
        event, or a JSON body of this API's shape (checked after the request is timed)."""
        if stream:
            return self.terminal in content and b"event: error" not in content
        try:
            reply = json.loads(content)
        except ValueError:
            return False
        return isinstance(reply, dict) and self.whole_key in reply and "error" not in reply.get("type", "")


CHAT = Api("chat", "/chat/completions", targets.MODEL, b"data: [DONE]", "choices")
RESPONSES = Api("responses", "/responses", targets.MODEL, b"response.completed", "output")
MESSAGES = Api("messages", "/messages", targets.ANTHROPIC_MODEL, b"message_stop", "content")
BY_NAME = {api.name: api for api in (CHAT, RESPONSES, MESSAGES)}
