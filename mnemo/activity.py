"""Chats in flight in this process, so the worker sharing the process under ``mnemo up`` can
yield to them: background memory writes fill the gateway's idle time instead of its latency."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class ChatActivity:
    def __init__(self) -> None:
        self.in_flight = 0

    @contextmanager
    def chat(self) -> Iterator[None]:
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    @property
    def busy(self) -> bool:
        return self.in_flight > 0
