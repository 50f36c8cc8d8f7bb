"""A signal that an input may have changed, so polling loops can sleep while a simulated world is
still.

On a real board every input is polled at its period (the pilot every 10 ms, supervision every
100 ms): nothing tells the firmware that a pin moved. A simulated board knows: every knob of the
plant, every GPIO level and every wiring delay goes through it. It hands the firmware a
:class:`ChangeSignal` (``BoardHal.changes``), and the firmware's loops, once nothing is pending
(no debounce running, no timer due), wait for the signal or their next deadline instead of
sampling unchanged inputs every few milliseconds. That is what lets the HIL rig run a 10-hour
session in seconds; a loop that sees ``changes is None`` polls as on hardware.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hal.clock import Clock


class ChangeSignal:
    """A counter of changes plus a way to wait for the next one (or a timeout on a clock).

    A waiter reads :attr:`count` *before* sampling its inputs and passes it to :meth:`wait`, so a
    change that happened while it was sampling wakes it at once instead of being lost.
    """

    def __init__(self) -> None:
        self.count = 0
        # insertion-ordered, so waiters wake in a deterministic order (a set would follow ids)
        self._waiters: dict[asyncio.Future[None], None] = {}

    def notify(self) -> None:
        self.count += 1
        waiters, self._waiters = self._waiters, {}
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait(self, seen: int, clock: Clock, timeout: float | None) -> bool:
        """Wait until :attr:`count` differs from ``seen`` (True) or ``timeout`` seconds of ``clock``
        passed (False). ``timeout=None`` waits for a change only."""
        return await wait_any([(self, seen)], clock, timeout)


async def wait_any(watched: Sequence[tuple[ChangeSignal, int]], clock: Clock, timeout: float | None) -> bool:
    """:meth:`ChangeSignal.wait` over several signals (one per simulated board): True as soon as any
    of them counted past its ``seen`` value, False after ``timeout``."""
    if any(signal.count != seen for signal, seen in watched):
        return True
    if timeout is not None and timeout <= 0:
        return False
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    for signal, _ in watched:
        signal._waiters[fut] = None
    timer: asyncio.Future[None] | None = None
    if timeout is not None:
        timer = asyncio.ensure_future(clock.sleep(timeout))
        timer.add_done_callback(lambda _: _wake(fut))
    try:
        await fut
    finally:
        for signal, _ in watched:
            signal._waiters.pop(fut, None)
        if timer is not None and not timer.done():
            timer.cancel()
    return any(signal.count != seen for signal, seen in watched)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
