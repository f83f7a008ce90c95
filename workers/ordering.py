"""Per-user order: exchange N of a user is applied only after exchange N-1.

The gateway numbers a user's exchanges as Redis accepts them (mnemo.queue.SEQUENCE_KEY), so
the numbers follow completion order. A job waits for its predecessor before taking the
user's lock, giving its worker slot back while it waits. A number can be lost (Redis accepted
the increment but not the job, or the job was erased), so the wait is bounded: past
``ORDER_WAIT_S`` the job goes ahead and says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from arq import Retry

from mnemo.queue import APPLIED_SEQUENCE_KEY, Exchange

logger = logging.getLogger(__name__)

ORDER_WAIT_S = 30.0
POLL_S = 0.05
TURN_POLL_S = 0.5  # waited inside the worker slot before giving the slot back
ORDER_RECHECK_S = 0.25
# Deferrals while waiting for a turn or a user's lock are not failures: arq counts them as
# tries, so the job's max_tries allows this many on top of worker.max_tries.
MAX_DEFERRALS = 1000
# Set applied-seq to max(current, N) atomically, so a replayed old job never moves it back.
ADVANCE_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) end
return current
"""


async def applied_sequence(redis: Any, user_id: str) -> int:
    value = await redis.get(APPLIED_SEQUENCE_KEY.format(user_id=user_id))
    return int(value or 0)


async def wait_for_turn(redis: Any, exchange: Exchange, wait_s: float = ORDER_WAIT_S) -> bool:
    """True when every earlier exchange of the user is applied; False if the wait ran out."""
    if exchange.sequence is None:
        return True
    deadline = time.monotonic() + wait_s
    while await applied_sequence(redis, exchange.scope.user_id) < exchange.sequence - 1:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True


async def take_turn(redis: Any, exchange: Exchange, waited_s: float, wait_s: float = ORDER_WAIT_S) -> None:
    """Return once it is the exchange's turn, or once it has waited ``wait_s`` in all (then it
    goes ahead and says so). Meanwhile it gives its worker slot back (arq ``Retry``): jobs that
    hold slots while they wait would starve the very predecessor they wait for."""
    if await wait_for_turn(redis, exchange, min(TURN_POLL_S, wait_s)):
        return
    if waited_s < wait_s:
        raise Retry(defer=ORDER_RECHECK_S)
    logger.warning(
        "exchange %s (#%d of its user) waited %.0fs for #%d; applying it now",
        exchange.request_id,
        exchange.sequence,
        waited_s,
        (exchange.sequence or 1) - 1,
    )


async def mark_applied(redis: Any, exchange: Exchange) -> None:
    if exchange.sequence is not None:
        key = APPLIED_SEQUENCE_KEY.format(user_id=exchange.scope.user_id)
        await redis.eval(ADVANCE_SCRIPT, 1, key, exchange.sequence)
