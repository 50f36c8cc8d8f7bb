"""1-phase / 3-phase switching of an AC connector: the safe order of a switch.

The energy manager decides *when* a connector changes its phase count (firmware/energy/phases.py);
this module decides *how*, one order for every switch:

1. withdraw the offer: the machine's ``phase_switching`` input makes the pilot steady +12 V (X1), so
   the EV stops drawing and goes from C to B (IEC 61851-1 Table A.6 sequence 10.1);
2. wait until the main contactor is open: the machine opens it when the EV stops drawing, or after
   the 6 s "power off under load" window (sequence 10.2); where the contactor has a mirror contact,
   open means the mirror says so, never only that the coil was released;
3. move the phase contactor C2 (no current flows through it: no arcing, no phase change under load);
4. keep the offer withdrawn for ``settle_s``: the EV's onboard charger must see the new phase set
   with the pilot idle, or some refuse to restart on it (EVerest's EvseManager pauses the same way,
   ``switch_3ph1ph_delay_s``);
5. offer again. From ``T_MIRROR_SETTLE`` after the move on (C2 is a contactor like the main one), the
   connector checks C2's mirror contact against the command: fault ``phase_switch_failed`` when they
   disagree.

With no EV drawing, steps 1 and 2 are already true and the switch starts at once; with no EV on
the pilot at all (state A) there is nothing to settle either, so step 4 is skipped. A request that
changes again while the sequence waits for the contactor is simply followed (no move at all when it
returns to the phases C2 already has); a move always settles completely before the next.

:class:`PhaseSequencer` is pure: no I/O and no clock of its own. The connector calls :meth:`step`
with the time and the contactor's state and carries out the :class:`PhaseAction` it returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from firmware.iec61851.timing import T_MIRROR_SETTLE

#: Comparisons of "now" against a deadline allow float rounding of the sum (as firmware.iec61851).
EPS = 1e-9


class Stage(StrEnum):
    IDLE = "idle"
    WAIT_OPEN = "offer withdrawn, waiting for the contactor to open"
    SETTLING = "phase contactor moved, EV settling"


@dataclass(frozen=True)
class PhaseAction:
    hold_offer: bool  # keep the pilot from offering power (the machine's phase_switching input)
    move_to: int | None = None  # move the phase contactor to this many phases now


class PhaseSequencer:
    def __init__(self, *, commanded: int, target: int, settle_s: float) -> None:
        for name, value in (("commanded", commanded), ("target", target)):
            if value not in (1, 3):
                raise ValueError(f"{name} phases must be 1 or 3, not {value!r}")
        if not (math.isfinite(settle_s) and settle_s >= 0):
            raise ValueError(f"settle_s must be a finite time >= 0, not {settle_s!r}")
        #: What the phase contactor is commanded to now (the phases that reach the socket).
        self.commanded = commanded
        #: What was last asked for.
        self.target = target
        self.settle_s = settle_s
        self.stage = Stage.IDLE
        self.moved_at = -math.inf
        self.switches = 0

    def request(self, phases: int) -> None:
        if phases not in (1, 3):
            raise ValueError(f"phases must be 1 or 3, not {phases!r}")
        self.target = phases

    @property
    def holding(self) -> bool:
        """The offer is withdrawn for a switch (waiting for the contactor, or settling)."""
        return self.stage is not Stage.IDLE

    @property
    def pending(self) -> bool:
        """A switch is asked for and has not moved yet."""
        return self.target != self.commanded

    def step(self, now: float, *, contactor_open: bool, ev_connected: bool = True) -> PhaseAction:
        """``contactor_open``: the main contactor is open (proven by its mirror where it has one);
        ``ev_connected``: an EV is on the pilot (with none there is nothing to settle)."""
        if self.stage is Stage.SETTLING:
            if now < self.moved_at + self.settle_s - EPS:
                return PhaseAction(hold_offer=True)
            self.stage = Stage.IDLE
        if self.target == self.commanded:
            self.stage = Stage.IDLE
            return PhaseAction(hold_offer=False)
        if not contactor_open:
            self.stage = Stage.WAIT_OPEN
            return PhaseAction(hold_offer=True)
        self.commanded = self.target
        self.moved_at = now
        self.switches += 1
        self.stage = Stage.SETTLING if ev_connected else Stage.IDLE
        return PhaseAction(hold_offer=ev_connected, move_to=self.target)

    def undo_move(self, previous: int) -> None:
        """The phase contactor could not be driven: it is still at ``previous``; the next step retries."""
        self.commanded = previous
        self.stage = Stage.IDLE
        self.switches -= 1

    def next_deadline(self) -> float | None:
        """When :meth:`step` would act with nothing changing: the end of the settling time."""
        return self.moved_at + self.settle_s if self.stage is Stage.SETTLING else None

    def mirror_due(self, now: float) -> bool:
        """The phase contactor has had time to follow its last command: its mirror can be judged."""
        return now >= self.moved_at + T_MIRROR_SETTLE - EPS

    def describe(self) -> str:
        if self.stage is Stage.IDLE:
            return f"{self.commanded} phase{'s' if self.commanded > 1 else ''}"
        return f"switching to {self.target} phase{'s' if self.target > 1 else ''}: {self.stage.value}"
