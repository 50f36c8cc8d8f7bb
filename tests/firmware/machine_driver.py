"""Drive a :class:`ConnectorMachine` through a scripted sequence on a virtual time line.

The machine is a pure transition function (anchors.md 8.2): it acts only when :meth:`step` is called.
The driver calls it the way a runtime would, but on exact virtual time:

* at every input change (``set``), in the same instant;
* at every time the machine announces with ``next_deadline``;
* on a fine grid (10 ms by default, the pilot sample period), so that a missed or wrong deadline shows up
  as a late action instead of a silent one.

Every step is recorded as a :class:`Sample` (time, state, outputs and the inputs the step saw), and the
queries below answer "what did the connector do at t" for timing assertions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from firmware.iec61851.machine import ConnectorMachine, Inputs, Outputs
from firmware.iec61851.timing import PILOT_SAMPLE_PERIOD

#: One scripted event: at time ``t`` set these inputs (names of :class:`Inputs` fields).
Event = tuple[float, Mapping[str, Any]]

_INPUT_FIELDS = frozenset(f.name for f in dataclasses.fields(Inputs))


@dataclass(frozen=True)
class Sample:
    """One call of ``step``: when, what the machine saw, and what it decided."""

    t: float
    inputs: Inputs  # a copy, taken before the step (so ``new_emergency`` is still visible)
    state: str  # the state after the step
    out: Outputs
    deadline: float | None  # what next_deadline() announced after the step


class MachineDriver:
    """Steps one machine on virtual time and records every step."""

    def __init__(
        self, machine: ConnectorMachine | None = None, *, grid: float = PILOT_SAMPLE_PERIOD, start: float = 0.0
    ) -> None:
        if grid <= 0:
            raise ValueError("the grid period must be positive")
        self.m = machine if machine is not None else ConnectorMachine()
        self.grid = grid
        self.now = start
        self.samples: list[Sample] = []
        self._seen: Inputs | None = None  # the last copy of the inputs; shared while they do not change
        self._step()

    # ------------------------------------------------------------------ driving
    def set(self, **changes: Any) -> Outputs:
        """Change inputs at the current time and step once, in the same instant."""
        unknown = set(changes) - _INPUT_FIELDS
        if unknown:
            raise TypeError(f"not machine inputs: {sorted(unknown)}")
        for name, value in changes.items():
            setattr(self.m.inputs, name, value)
        self._seen = None
        return self._step()

    def advance_to(self, end: float) -> Outputs:
        """Step at every grid point and every announced deadline in (now, end], and at ``end``."""
        if end < self.now:
            raise ValueError(f"time cannot go backwards: {end} < {self.now}")
        out = self.samples[-1].out
        while self.now < end:
            candidates = [self._next_grid_point(), end]
            deadline = self.m.next_deadline(self.now)
            if deadline is not None:
                candidates.append(deadline)
            self.now = min(candidates)
            out = self._step()
        return out

    def advance(self, duration: float) -> Outputs:
        return self.advance_to(self.now + duration)

    def run(self, script: Iterable[Event], until: float | None = None) -> MachineDriver:
        """Play ``(t, {input: value})`` events in time order, then keep stepping until ``until``."""
        for t, changes in sorted(script, key=lambda event: event[0]):
            self.advance_to(t)
            self.set(**changes)
        if until is not None:
            self.advance_to(until)
        return self

    def _next_grid_point(self) -> float:
        # Grid points are computed from an integer index, so that they do not drift.
        k = math.floor(self.now / self.grid + 1e-9) + 1
        return round(k * self.grid, 9)

    def _step(self) -> Outputs:
        # Copying the inputs at every 10 ms step is what costs most; they change only through set() and
        # when the machine consumes ``new_emergency``.
        if self._seen is None or self._seen != self.m.inputs:
            self._seen = dataclasses.replace(self.m.inputs)
        seen = self._seen
        out = self.m.step(self.now)
        self.samples.append(Sample(self.now, seen, self.m.state, out, self.m.next_deadline(self.now)))
        return out

    # ------------------------------------------------------------------ queries
    @property
    def last(self) -> Sample:
        return self.samples[-1]

    def at(self, t: float) -> Sample:
        """The last step taken at or before ``t``: what the outputs were at ``t``."""
        found = None
        for sample in self.samples:
            if sample.t > t:
                break
            found = sample
        if found is None:
            raise ValueError(f"no step at or before t={t}")
        return found

    def trail(self) -> list[str]:
        """Every state the machine went through, the initial one first (from its history)."""
        return ["A1", *(to for _t, _trigger, _from, to in self.m.history)]

    def first(self, predicate: Callable[[Sample], bool], *, after: float = -math.inf) -> Sample | None:
        """The first step at or after ``after`` for which ``predicate`` holds."""
        return next((s for s in self.samples if s.t >= after and predicate(s)), None)

    def between(self, start: float, end: float) -> Sequence[Sample]:
        """Every step whose outputs were in force during [start, end): the one in force at ``start``
        (after the changes made at ``start``), then every step with ``start < t < end``."""
        return [self.at(start), *(s for s in self.samples if start < s.t < end)]
