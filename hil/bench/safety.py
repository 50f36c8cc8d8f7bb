"""Bench-mode safety: the explicit confirmation, and the safe stop sequence.

Bench mode switches real relays on a real pilot and puts real current through a real load, so it
only runs when the person at the bench says, with a flag they must type, that they are standing at an
emergency stop (docs/hil-bench.md "Safety rules").

The safe stop (E-stop trip, end of a run, any error) takes the load off first and unplugs the EV
emulator second. In that order the EVSE's contactor opens, after the emulator shows state A, with no
current flowing: a contactor opened under load arcs and may weld. Each step is attempted whatever
happened to the one before; every failure is collected and reported at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

CONFIRM_FLAG = "--i-have-an-emergency-stop"
#: The load step of the safe stop gives up after this long (the driver's own timeouts are shorter;
#: this bounds a load object that hangs for another reason).
LOAD_STEP_TIMEOUT_S = 5.0


class ConfirmationMissing(Exception):
    """Bench mode was asked for without the emergency-stop confirmation."""


def require_confirmation(flag: bool) -> None:
    """Refuse to start bench mode unless ``flag`` (the command line's :data:`CONFIRM_FLAG`) is set."""
    if not flag:
        raise ConfirmationMissing(
            "bench mode switches real relays on the pilot and draws real current through the load; "
            f"run it only at the bench with the emergency stop within reach, and confirm with {CONFIRM_FLAG}"
        )


class LoadSwitch(Protocol):
    async def input_off(self) -> None: ...


class EvDisconnect(Protocol):
    def open_all(self) -> None: ...


@dataclass
class SafeStopReport:
    """What each step did: ``(step, error or None)`` in the order attempted."""

    steps: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(error is None for _, error in self.steps)

    @property
    def errors(self) -> list[str]:
        return [f"{step}: {error}" for step, error in self.steps if error is not None]


class SafeStopError(Exception):
    """At least one step of the safe stop failed; ``report`` says which and why. The bench must then
    be made safe by hand (the E-stop)."""

    def __init__(self, report: SafeStopReport) -> None:
        self.report = report
        super().__init__(
            "safe stop incomplete, make the bench safe with the emergency stop: " + "; ".join(report.errors)
        )


async def safe_stop(
    emulator: EvDisconnect | None,
    load: LoadSwitch | None,
    *,
    load_timeout_s: float = LOAD_STEP_TIMEOUT_S,
) -> SafeStopReport:
    """Load input off, then every EV emulator relay open (unplugged). Returns the report, or raises
    :class:`SafeStopError` with it when a step failed. The emulator step runs even if the load step
    failed, hung or was cancelled."""
    report = SafeStopReport()
    try:
        if load is not None:
            await _step(report, "load input off", lambda: load.input_off(), load_timeout_s)
    finally:
        if emulator is not None:
            try:
                emulator.open_all()
                report.steps.append(("EV emulator unplugged", None))
            except Exception as exc:
                report.steps.append(("EV emulator unplugged", _describe(exc)))
    if not report.ok:
        raise SafeStopError(report)
    return report


async def _step(report: SafeStopReport, name: str, call: Callable[[], Awaitable[None]], timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await call()
    except TimeoutError:
        report.steps.append((name, f"no result within {timeout_s:g} s"))
    except Exception as exc:
        report.steps.append((name, _describe(exc)))
    else:
        report.steps.append((name, None))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
