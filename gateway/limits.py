"""A memory budget for request bodies in flight: every JSON body is charged what it is estimated
to cost once parsed, from its first byte until its response has ended (streams included), and a
request that does not fit is answered 429 ``server_busy`` with ``Retry-After``.

Why an estimate of the parsed size rather than the bytes: a body of many tiny messages grows
~20x once it is Python objects, copied into the forwarded request and recorded for the worker;
measured on ``mnemo serve`` with memory on (RSS of four concurrent 10 MB bodies, per body):

    300k messages {"role":"user","content":"hi"}    ~21x its bytes
    3.3M empty objects or arrays in an extra field   ~15x
    10 messages of 1 MB                              ~7x
    18k messages of 500 characters                   ~4x

Bytes alone cannot bound that, so the charge is ``BYTES_FACTOR`` per body byte (reserved as the
body arrives, before a byte of it is kept) plus ``VALUE_COST`` per JSON value, counted on the raw
body before it is parsed (commas and opening brackets: ~14 ms for 10 MB, a tenth of parsing it).
Both are set so the charge covers every shape above; common shapes (long messages) pay ~2x.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import GatewayError

logger = logging.getLogger(__name__)

BYTES_FACTOR = 8
VALUE_COST = 160
RETRY_AFTER_S = 1
STATE_KEY = "body_budget"


def bytes_cost(size: int) -> int:
    """The charge for ``size`` body bytes: the raw body, its chunks and its parsed strings' copies."""
    return BYTES_FACTOR * size


def values_cost(raw: bytes) -> int:
    """The charge for the objects a body parses into: one per value, by a scan of the raw bytes
    (commas inside strings count too: an over-charge, never an under-charge)."""
    return VALUE_COST * (raw.count(b",") + raw.count(b"{") + raw.count(b"["))


def server_busy() -> GatewayError:
    return GatewayError(
        429,
        "the gateway is busy with other large requests; retry shortly",
        type="server_error",
        code="server_busy",
    )


class BodyBudget:
    """The bytes in flight, shared by every request of one gateway (one event loop: no lock)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_flight = 0

    def share(self) -> BodyShare:
        return BodyShare(self)


class BodyShare:
    """One request's part of the budget, held until its response has ended."""

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.held = 0
        self.refused = False

    def charge(self, amount: int) -> None:
        """Take ``amount`` more, or raise 429 server_busy. One request is never charged more than
        the whole budget, so a body larger than it still runs, alone."""
        budget = self._budget
        amount = min(self.held + amount, budget.capacity) - self.held
        if amount <= 0:
            return
        if budget.in_flight + amount > budget.capacity:
            self.refused = True
            logger.warning(
                "body budget full (%d of %d bytes in flight): refusing a request wanting %d more",
                budget.in_flight,
                budget.capacity,
                amount,
            )
            raise server_busy()
        budget.in_flight += amount
        self.held += amount

    def release(self) -> None:
        self._budget.in_flight -= self.held
        self.held = 0


class _Unmetered(BodyShare):
    """For an app built without :class:`BodyBudgetMiddleware` (nothing to charge against)."""

    def __init__(self) -> None:
        super().__init__(BodyBudget(0))

    def charge(self, amount: int) -> None:
        return None


def share_of(request: Request) -> BodyShare:
    share = request.scope.get("state", {}).get(STATE_KEY)
    return share if isinstance(share, BodyShare) else _Unmetered()


class BodyBudgetMiddleware:
    """Gives each HTTP request its share of the budget and releases it when the app returns,
    which for a streaming response is once the stream has ended or the client has gone. A pure
    ASGI middleware, so that release waits for the stream; it adds ``Retry-After`` to the 429 of
    a refused request whichever error shape its route answers in."""

    def __init__(self, app: ASGIApp, budget: BodyBudget) -> None:
        self.app = app
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        share = self.budget.share()
        scope.setdefault("state", {})[STATE_KEY] = share

        async def send_with_retry_after(message: Message) -> None:
            if message["type"] == "http.response.start" and share.refused and message["status"] == 429:
                headers: list[Any] = list(message.get("headers", []))
                headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_retry_after)
        finally:
            share.release()
