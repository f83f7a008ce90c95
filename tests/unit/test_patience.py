"""mnemo.patience: a wait goes on while its dependency shows signs of life, ends as stalled once
it shows none for stall_s, and never blames the dependency for the event loop's own pauses."""

from __future__ import annotations

import asyncio
import time

import pytest

from mnemo.patience import Patience

STALL_S = 0.05


class Ticking:
    """A dependency that shows a sign of life every ``every_s`` and answers after ``times`` of them."""

    def __init__(self, every_s: float, times: int) -> None:
        self.every_s, self.times = every_s, times
        self.last: float | None = None

    def progress(self) -> float | None:
        return self.last

    async def answer(self) -> str:
        for _ in range(self.times):
            await asyncio.sleep(self.every_s)
            self.last = time.monotonic()
        return "answer"


def test_a_dependency_showing_signs_of_life_is_waited_for_beyond_the_stall_budget() -> None:
    async def scenario() -> tuple[str, bool]:
        dependency = Ticking(STALL_S / 2, times=12)  # answers after 6 stall budgets
        async with Patience(STALL_S, ceiling_s=60) as patience:
            patience.waiting_on(dependency.progress)
            answer = await dependency.answer()
        return answer, patience.stalled

    assert asyncio.run(scenario()) == ("answer", False)


def test_a_dependency_silent_for_the_stall_budget_ends_the_wait_as_stalled() -> None:
    async def scenario() -> Patience:
        patience = Patience(STALL_S, ceiling_s=60)
        with pytest.raises(TimeoutError):
            async with patience:
                patience.waiting_on(lambda: None)
                await asyncio.Event().wait()  # never answers
        return patience

    assert asyncio.run(scenario()).stalled


def test_the_ceiling_ends_a_wait_on_a_dependency_that_keeps_showing_signs_of_life() -> None:
    async def scenario() -> Patience:
        patience = Patience(STALL_S, ceiling_s=STALL_S * 4)
        with pytest.raises(TimeoutError):
            async with patience:
                dependency = Ticking(STALL_S / 2, times=10_000)
                patience.waiting_on(dependency.progress)
                await dependency.answer()
        return patience

    assert not asyncio.run(scenario()).stalled


def hold_up_the_loop(seconds: float) -> None:
    """Block the running event loop, as a long garbage collection or a starved process does."""
    time.sleep(seconds)


def test_an_event_loop_held_up_past_the_stall_budget_is_not_blamed_on_the_dependency() -> None:
    async def scenario() -> bool:
        async with Patience(STALL_S, ceiling_s=60) as patience:
            patience.waiting_on(lambda: None)  # shows no sign of life of its own
            hold_up_the_loop(STALL_S * 4)
            await asyncio.sleep(STALL_S / 5)  # the dependency answers soon after the loop is back
        return patience.stalled

    assert asyncio.run(scenario()) is False
