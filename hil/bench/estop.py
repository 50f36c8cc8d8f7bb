"""The rig's emergency-stop input.

The E-stop button (or the rig's safety chain) is wired to one GPIO input (docs/hil-bench.md
"E-stop"); the rig file states the level the input shows while the stop is *pressed*. Optionally a
second, antivalent contact of the same button goes to a second input: it always reads the opposite
level of the first, so a wire that breaks, a contact that welds or an input that sticks shows up as
both inputs reading the same level.

Default deny: the E-stop counts as tripped when the input is active, when the two channels agree
(a stuck or broken channel), and when an input cannot be read at all (the line was released, the
GPIO chip went away). A rig never keeps running because it could not tell.

:meth:`EStopMonitor.watch` polls on the injected :class:`hal.clock.Clock` every ``poll_s`` and calls
its ``on_trip`` exactly once, within one poll period of the input going active.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from hal.clock import Clock
from hal.drivers.gpio_io import InputLine, OutputLine, Pull, Releasable, build_lines, close_all
from hil.bench.rig import EStopConfig

log = logging.getLogger(__name__)

#: Default poll period: 10 ms, well inside the 100 ms the EVSE has to open its contactor once the
#: safe stop has unplugged the EV (standards-facts.md 1.6), so the E-stop never adds much to it.
POLL_S = 0.010

OnTrip = Callable[[str], Awaitable[None] | None]


class EStopMonitor(Releasable):
    """The E-stop input(s) on a gpiozero pin factory, polled on ``clock``."""

    def __init__(
        self,
        pin: int,
        *,
        active_high: bool,
        pin_factory: Any,
        clock: Clock,
        pull: Pull = None,
        antivalent_pin: int | None = None,
        poll_s: float = POLL_S,
        name: str = "e-stop",
    ) -> None:
        if not poll_s > 0:
            raise ValueError(f"{name}: poll_s must be > 0 s, got {poll_s!r}")
        self.name = name
        self.poll_s = poll_s
        self._clock = clock
        self._active_high = active_high
        self._antivalent: InputLine | None = None

        def build(lines: list[OutputLine | InputLine]) -> None:
            self._main = InputLine(
                name, "E-stop input", pin, active_high=active_high, pull=pull, pin_factory=pin_factory
            )
            lines.append(self._main)
            if antivalent_pin is not None:
                # Read as "active" = the raw level the main channel shows when pressed: then a healthy
                # pair always has exactly one of the two active.
                self._antivalent = InputLine(
                    name,
                    "E-stop antivalent input",
                    antivalent_pin,
                    active_high=active_high,
                    pull=pull,
                    pin_factory=pin_factory,
                )
                lines.append(self._antivalent)

        self._lines = build_lines(build)

    @classmethod
    def from_config(cls, config: EStopConfig, *, pin_factory: Any, clock: Clock) -> EStopMonitor:
        return cls(
            config.pin,
            active_high=config.active_high,
            pull=config.pull,
            antivalent_pin=config.antivalent_pin,
            poll_s=config.poll_ms / 1000.0,
            pin_factory=pin_factory,
            clock=clock,
        )

    # ------------------------------------------------------------------ reading
    def check(self) -> str | None:
        """Why the E-stop counts as tripped now, or None when the rig may run."""
        if self._released:
            return "E-stop monitor released: its input is no longer read"
        try:
            pressed = self._main.active
            other = self._antivalent.active if self._antivalent is not None else None
        except Exception as exc:  # default deny: whatever stops us reading the input trips the rig
            return f"E-stop input unreadable ({type(exc).__name__}: {exc})"
        level = "high" if pressed == self._active_high else "low"
        if pressed:
            return f"E-stop pressed (GPIO{self._main.pin_number} {level})"
        if other is not None and other == pressed:
            assert self._antivalent is not None
            return (
                f"E-stop channels disagree: GPIO{self._main.pin_number} and GPIO{self._antivalent.pin_number} both "
                f"read {level} (a stuck contact or a broken wire)"
            )
        return None

    @property
    def tripped(self) -> bool:
        return self.check() is not None

    # ------------------------------------------------------------------ watching
    async def watch(self, on_trip: OnTrip) -> str:
        """Poll until the E-stop trips, call ``on_trip(reason)`` once (awaiting it if it is a coroutine
        function) and return the reason. Checks at once, then every ``poll_s``."""
        while True:
            reason = self.check()
            if reason is not None:
                log.error("%s: %s", self.name, reason)
                result = on_trip(reason)
                if inspect.isawaitable(result):
                    await result
                return reason
            await self._clock.sleep(self.poll_s)

    def close(self) -> None:
        if not self._released:
            self._released = True
            close_all(self._lines)
