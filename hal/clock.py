"""One clock for the whole firmware.

Every timer in the firmware and in the drivers reads an injected :class:`Clock`, so the same code runs
in real time on a board and in virtual time in simulation and in tests (ARCHITECTURE.md, "One event
loop, one clock").
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds`` of this clock's time."""
        ...


class RealClock:
    """Wall-clock time: ``time.monotonic`` and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class VirtualClock:
    """Time that only moves when the test or the simulation says so.

    ``advance(dt)`` moves time forward and wakes, in time order, every task whose ``sleep`` has
    expired, letting each run until it blocks again before time moves on. Code under test must be
    awaiting only this clock (not real I/O) for ``advance`` to be deterministic.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), fut))
        await fut

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running every timer that falls due on the way."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        target = self._now + seconds
        await _settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            due, _, fut = heapq.heappop(self._sleepers)
            if fut.cancelled():
                continue  # a timeout that lost its race (ChangeSignal.wait): no reason to stop here
            self._now = max(self._now, due)
            if not fut.done():
                fut.set_result(None)
            await _settle()
        self._now = target
        await _settle()


async def _settle(max_rounds: int = 200, min_rounds: int = 3) -> None:
    """Let ready tasks run until they block.

    CPython's event loop keeps its runnable callbacks in ``loop._ready``; when it is there, the loop
    is turned until nothing but this coroutine is runnable (a few rounds at least, so a callback that
    schedules another one is followed), which is both faster and more thorough than a fixed count.
    Elsewhere a fixed number of rounds is used.
    """
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)
    for i in range(max_rounds):
        await asyncio.sleep(0)
        if ready is None:
            if i >= 20:
                return
        elif i >= min_rounds and not ready:
            return
