"""The virtual clock: time moves only on advance(), and timers fire in time order."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hal.clock import RealClock, VirtualClock


def test_sleepers_wake_in_time_order_at_their_due_time() -> None:
    async def run() -> list[tuple[str, float]]:
        clock = VirtualClock()
        woke: list[tuple[str, float]] = []

        async def sleeper(name: str, delay: float) -> None:
            await clock.sleep(delay)
            woke.append((name, clock.monotonic()))

        tasks = [asyncio.create_task(sleeper(n, d)) for n, d in (("c", 3.0), ("a", 1.0), ("b", 2.0))]
        await clock.advance(1.5)
        assert woke == [("a", 1.0)]
        assert clock.monotonic() == 1.5
        await clock.advance(10.0)
        await asyncio.gather(*tasks)
        return woke

    assert asyncio.run(run()) == [("a", 1.0), ("b", 2.0), ("c", 3.0)]


def test_a_periodic_task_runs_once_per_period() -> None:
    async def run() -> int:
        clock = VirtualClock()
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await clock.sleep(0.25)
                ticks += 1

        task = asyncio.create_task(tick())
        await clock.advance(10.0)
        task.cancel()
        return ticks

    assert asyncio.run(run()) == 40


def test_time_cannot_go_backwards() -> None:
    async def run() -> None:
        await VirtualClock().advance(-0.1)

    with pytest.raises(ValueError, match="backwards"):
        asyncio.run(run())


@given(st.lists(st.floats(min_value=0.0, max_value=100.0), max_size=20))
def test_monotonic_never_decreases(steps: list[float]) -> None:
    async def run() -> list[float]:
        clock = VirtualClock()
        seen = [clock.monotonic()]
        for step in steps:
            await clock.advance(step)
            seen.append(clock.monotonic())
        return seen

    seen = asyncio.run(run())
    assert seen == sorted(seen)
    assert seen[-1] == pytest.approx(sum(steps))


def test_real_clock_sleeps_for_real() -> None:
    clock = RealClock()
    start = clock.monotonic()
    asyncio.run(clock.sleep(0.01))
    assert clock.monotonic() - start >= 0.009
