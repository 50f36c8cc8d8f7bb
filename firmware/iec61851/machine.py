"""The IEC 61851-1 connector state machine: THE table of states, triggers and guards.

State names follow IEC 61851-1 Annex A: the letter is what the EV shows on the pilot (A no EV, B
connected, C ready, D ready with ventilation, E pilot at 0 V), the digit is what the EVSE drives
(1 = steady +12 V / no offer, 2 = 1 kHz PWM offer). ``F`` is the EVSE driving -12 V ("not
available", after a fault) and ``WAKEUP`` the E/F pulse that wakes an EV stuck in B2 (IEC 61851-1
A.5.3 legacy wake-up; ISO 15118-3 T_step_EF).

:class:`ConnectorMachine` is a pure, single-threaded transition function: the caller (the connector
runtime, or a test) sets its inputs, calls :meth:`ConnectorMachine.step` with the current time, and
gets back what the pilot, the contactor and the lock must do. It never does I/O and never reads a
clock itself, so every sequence can be tested table by table on virtual time (anchors.md 8.2).

The contactor follows the state: it may be closed only in C2 (and D2 where the site ventilates), and
in the bounded C1/D1 "power off under load" window right after the EVSE withdrew its offer: the EV
gets up to 6 s to stop drawing current before the contactor opens under load (sequence 10.2); if
the current is already below 1 A it opens at once. Any other state opens it in the same step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transitions import Machine

from firmware.iec61851.pilot import HLC_DUTY_PERMILLE, CpState, duty_for_current
from firmware.iec61851.timing import (
    I_OPEN_WITHOUT_WAIT_A,
    PILOT_DEBOUNCE_POWER_UP,
    PILOT_SAMPLE_PERIOD,
    T_LEGACY_WAKEUP,
    T_POWER_OFF_UNDER_LOAD_C1,
    T_PWM_MIN_UPDATE_INTERVAL,
    T_STATE_F_AFTER_FAULT,
    T_STAY_X1_AFTER_STEP_EF,
    T_STEP_EF,
)
from hal.types import PilotMode

#: After the F hold the EVSE drives X1 again and must re-read the EV before leaving F: the slowest
#: pilot debounce plus two samples.
T_REREAD_AFTER_F = PILOT_DEBOUNCE_POWER_UP + 2 * PILOT_SAMPLE_PERIOD
#: Timers compare ``now >= start + duration - EPS``, the same sum next_deadline() announces, so that
#: stepping exactly at an announced deadline always acts (no float rounding of ``now - start``).
EPS = 1e-9


def _due(start: float, duration: float, now: float) -> bool:
    return now >= start + duration - EPS


# ----------------------------------------------------------------------------------------- states
STATES: tuple[str, ...] = ("A1", "A2", "B1", "B2", "C1", "C2", "D1", "D2", "E", "F", "WAKEUP")

STATE_DESCRIPTIONS: dict[str, str] = {
    "A1": "no EV; +12 V, no offer",
    "A2": "no EV but PWM still on (the EV left while offered); withdrawn in the same step",
    "B1": "EV connected, no offer (not authorised, paused, switching phases, limit below 6 A, or after a fault)",
    "B2": "EV connected, PWM offer on; waiting for the EV to become ready",
    "C1": "EV ready but no offer; the contactor opens once the EV stops drawing current, at most 6 s",
    "C2": "EV ready and offered: charging, contactor closed",
    "D1": "EV ready with ventilation request, no offer (as C1)",
    "D2": "EV ready with ventilation request and offered: charging where the site ventilates",
    "E": "pilot at 0 V (shorted to PE): no power, X1",
    "F": "EVSE not available after a fault: no power; -12 V for at least 300 ms, then X1 to re-read the EV",
    "WAKEUP": "E/F wake-up pulse for an EV stuck in B2 (F for 4 s, then X1 for 750 ms)",
}

_LETTERS = ("A", "B", "C", "D")
_EV_TRIGGER = {CpState.A: "ev_a", CpState.B: "ev_b", CpState.C: "ev_c", CpState.D: "ev_d", CpState.E: "ev_e"}


def _transition_table() -> list[dict[str, Any]]:
    """Every transition, in the order the machine tries them (first match wins)."""
    table: list[dict[str, Any]] = []
    # The EV changes its pilot state; the EVSE keeps offering (x2) or not (x1) as it was.
    for digit in ("1", "2"):
        for src in _LETTERS:
            for dst in _LETTERS:
                if src != dst:
                    table.append({"trigger": f"ev_{dst.lower()}", "source": f"{src}{digit}", "dest": f"{dst}{digit}"})
    for src in (*(f"{x}{d}" for x in _LETTERS for d in "12"), "WAKEUP"):
        table.append({"trigger": "ev_e", "source": src, "dest": "E"})
    # The EV unplugs during the wake-up pulse.
    table.append({"trigger": "ev_a", "source": "WAKEUP", "dest": "A1"})
    # Leaving E when the pilot reads a valid state again (the short is gone).
    for letter in _LETTERS:
        table.append({"trigger": f"ev_{letter.lower()}", "source": "E", "dest": f"{letter}1"})
    # The EVSE offers or withdraws its PWM.
    for letter in ("B", "C", "D"):
        table.append({"trigger": "offer", "source": f"{letter}1", "dest": f"{letter}2", "conditions": "offer_allowed"})
        table.append({"trigger": "withdraw", "source": f"{letter}2", "dest": f"{letter}1"})
    table.append({"trigger": "withdraw", "source": "A2", "dest": "A1"})
    # Any emergency fault: state F from everywhere (F itself included: the hold time restarts).
    table.append({"trigger": "fault", "source": list(STATES), "dest": "F"})
    # Leaving F once the fault is gone, F was held 300 ms and the pilot was re-read in X1.
    for letter in _LETTERS:
        table.append(
            {"trigger": "leave_f", "source": "F", "dest": f"{letter}1", "conditions": f"ev_reads_{letter.lower()}"}
        )
    table.append({"trigger": "leave_f", "source": "F", "dest": "E", "conditions": "ev_reads_e"})
    # Legacy wake-up of an EV that sits in B2 without becoming ready.
    table.append({"trigger": "wake_up", "source": "B2", "dest": "WAKEUP"})
    table.append({"trigger": "wake_done", "source": "WAKEUP", "dest": "B1"})
    return table


TRANSITIONS: tuple[dict[str, Any], ...] = tuple(_transition_table())


def transition_rows() -> list[tuple[str, str, str, str]]:
    """(trigger, source, destination, guard) for every transition: the table `evse states` prints."""
    rows = []
    for t in TRANSITIONS:
        sources = t["source"] if isinstance(t["source"], list) else [t["source"]]
        for source in sources:
            rows.append((t["trigger"], source, t["dest"], t.get("conditions", "")))
    return rows


# ----------------------------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    """Everything the machine decides on. The runtime updates it, then calls :meth:`step`."""

    ev: CpState = CpState.A  # debounced pilot state (meaningless while the EVSE drives F)
    diode_ok: bool | None = None  # last judgement of the negative plateau while PWM ran
    authorized: bool = False
    paused: bool = False  # user / EMS / backend asked to suspend
    phase_switching: bool = False  # a 1/3-phase switch needs the EV idle (firmware.phase_switching)
    hlc: bool = False  # high-level communication required: offer 5 % instead of a current
    #: With HLC, the contactor closes only once the session asked for power (ISO 15118 / DIN 70121
    #: PowerDelivery with ChargeProgress Start / ReadyToChargeState true), not merely in C2.
    hlc_power: bool = False
    effective_a: float = 0.0  # the minimum of all limits (firmware.limits)
    emergency: bool = False  # an EMERGENCY fault is active: no offer, contactor open
    new_emergency: bool = False  # an EMERGENCY fault was raised since the last step: go to F
    stop: bool = False  # a STOP fault is active: no offer
    ventilation_available: bool = False
    lock_confirmed: bool = True  # the lock's feedback says locked (True on boards with no lock feedback)
    current_a: float = 0.0  # highest measured phase current


@dataclass(frozen=True)
class Outputs:
    pilot_mode: PilotMode
    duty_permille: int  # in PWM mode; 0 otherwise
    contactor_closed: bool
    locked: bool


@dataclass
class _Timers:
    entered: float = 0.0  # when the current state was entered
    withdrawn_at: float | None = None  # PWM withdrawn while the contactor was closed (C1/D1)
    duty_changed_at: float = -math.inf
    offered_in_b2_at: float | None = None
    wakeup_done: bool = False  # one legacy wake-up per plug-in
    f_entered: float | None = None


class ConnectorMachine:
    """One connector's IEC 61851-1 logic. ``state`` is the current state name (see STATES)."""

    # Set by transitions: the current state, and one method per trigger of the table.
    state: str
    ev_a: Callable[[], bool]
    ev_b: Callable[[], bool]
    ev_c: Callable[[], bool]
    ev_d: Callable[[], bool]
    ev_e: Callable[[], bool]
    offer: Callable[[], bool]
    withdraw: Callable[[], bool]
    fault: Callable[[], bool]
    leave_f: Callable[[], bool]
    wake_up: Callable[[], bool]
    wake_done: Callable[[], bool]

    def __init__(self, *, supports_state_e: bool = False) -> None:
        self.inputs = Inputs()
        self.supports_state_e = supports_state_e
        self._t = _Timers()
        self._now = 0.0
        self.duty_permille = 0
        self.contactor_closed = False
        self.history: list[tuple[float, str, str, str]] = []  # (time, trigger, from, to)
        self.machine = Machine(
            model=self,
            states=list(STATES),
            transitions=[dict(t) for t in TRANSITIONS],
            initial="A1",
            auto_transitions=False,
            ignore_invalid_triggers=True,
            after_state_change="_after_state_change",
            send_event=True,
        )

    # ------------------------------------------------------------------ guards
    def offer_allowed(self, _event: Any = None) -> bool:
        """Default deny: offer PWM only when every precondition is positive."""
        i = self.inputs
        if i.paused or i.phase_switching or i.emergency or i.stop:
            return False
        # Under HLC the 5 % duty asks the EV to talk, it offers no power: it starts at plug-in, before
        # authorisation, which the session itself does (EIM or Plug & Charge); the contactor still
        # waits for both (see _contactor).
        if not i.authorized and not i.hlc:
            return False
        if i.ev == CpState.D and not i.ventilation_available:
            return False
        return i.hlc or duty_for_current(i.effective_a) is not None

    def _reread(self, state: CpState) -> bool:
        """Leaving F: -12 V was held 300 ms, X1 has been driven long enough to re-read the EV."""
        f_entered = self._t.f_entered if self._t.f_entered is not None else self._now
        return _due(f_entered, T_STATE_F_AFTER_FAULT + T_REREAD_AFTER_F, self._now) and self.inputs.ev == state

    def ev_reads_a(self, _event: Any = None) -> bool:
        return self._reread(CpState.A)

    def ev_reads_b(self, _event: Any = None) -> bool:
        return self._reread(CpState.B)

    def ev_reads_c(self, _event: Any = None) -> bool:
        return self._reread(CpState.C)

    def ev_reads_d(self, _event: Any = None) -> bool:
        return self._reread(CpState.D)

    def ev_reads_e(self, _event: Any = None) -> bool:
        return self._reread(CpState.E)

    def _after_state_change(self, event: Any) -> None:
        source = event.transition.source
        self.history.append((self._now, event.event.name, source, self.state))
        self._t.entered = self._now
        if self.state == "F":
            self._t.f_entered = self._now
        if self.state in ("B2",) and source != "B2":
            self._t.offered_in_b2_at = self._now
        if self.state.endswith("2") and not source.endswith("2"):
            self._t.duty_changed_at = -math.inf  # a fresh offer is not rate-limited
        if self.state in ("C1", "D1") and source in ("C2", "D2") and self.contactor_closed:
            self._t.withdrawn_at = self._now
        if self.state == "A1":
            self._t.wakeup_done = False
            self._t.offered_in_b2_at = None

    # ------------------------------------------------------------------ the step function
    def step(self, now: float) -> Outputs:
        """Fire whatever triggers the inputs call for at ``now`` and return the outputs."""
        self._now = now
        if self.inputs.new_emergency:
            self.inputs.new_emergency = False
            self.fault()  # from any state, F included (the hold restarts)
        for _ in range(4):  # a trigger can enable the next one (WAKEUP -> B1 -> B2); settle
            before = self.state
            self._settle_once(now)
            if self.state == before:
                break
        return self._outputs(now)

    def _settle_once(self, now: float) -> None:
        i = self.inputs
        # The EV's pilot state (not while the EVSE itself drives F, nor during the wake-up pulse).
        if self.state == "F":
            self.leave_f()  # guarded: only after the hold and the re-read
        elif self.state != "WAKEUP" or i.ev in (CpState.A, CpState.E):
            if self._letter() != i.ev.value and i.ev in _EV_TRIGGER:
                getattr(self, _EV_TRIGGER[i.ev])()
        # The EVSE's offer.
        if self.state == "A2" or (self.state.endswith("2") and not self.offer_allowed()):
            self.withdraw()
        elif self.state.endswith("1") and self.state != "A1" and self.offer_allowed():
            self.offer()
        # Timers.
        # No legacy wake-up under HLC: the EV sits in B2 through SLAC and the session's setup, and an
        # E/F pulse would end its session (ISO 15118-3 uses E/F only to restart a failed one).
        if self.state == "B2" and not i.hlc and not self._t.wakeup_done and self._t.offered_in_b2_at is not None:
            if _due(self._t.offered_in_b2_at, T_LEGACY_WAKEUP, now):
                self._t.wakeup_done = True
                self.wake_up()
        if self.state == "WAKEUP" and _due(self._t.entered, T_STEP_EF + T_STAY_X1_AFTER_STEP_EF, now):
            self.wake_done()

    def next_deadline(self, now: float) -> float | None:
        """The next time at which :meth:`step` would act without any input changing."""
        deadlines = []
        if self.state == "F" and self._t.f_entered is not None:
            deadlines.append(self._t.f_entered + T_STATE_F_AFTER_FAULT)
            deadlines.append(self._t.f_entered + T_STATE_F_AFTER_FAULT + T_REREAD_AFTER_F)
        if self._t.withdrawn_at is not None and self.contactor_closed:
            deadlines.append(self._t.withdrawn_at + T_POWER_OFF_UNDER_LOAD_C1)
        if (
            self.state == "B2"
            and not self.inputs.hlc
            and not self._t.wakeup_done
            and self._t.offered_in_b2_at is not None
        ):
            deadlines.append(self._t.offered_in_b2_at + T_LEGACY_WAKEUP)
        if self.state == "WAKEUP":
            deadlines.append(self._t.entered + T_STEP_EF)
            deadlines.append(self._t.entered + T_STEP_EF + T_STAY_X1_AFTER_STEP_EF)
        if self.state.endswith("2") and self.duty_permille < self._target_duty():
            deadlines.append(self._t.duty_changed_at + T_PWM_MIN_UPDATE_INTERVAL)
        future = [d for d in deadlines if d > now]
        return min(future) if future else None

    # ------------------------------------------------------------------ outputs
    def _letter(self) -> str:
        return self.state[0] if self.state[0] in "ABCD" else self.state

    def _target_duty(self) -> int:
        if self.inputs.hlc:
            return HLC_DUTY_PERMILLE
        return duty_for_current(self.inputs.effective_a) or 0

    def _outputs(self, now: float) -> Outputs:
        state = self.state
        # Pilot.
        if state.endswith("2"):
            target = self._target_duty()
            rising = target > self.duty_permille
            # Reductions at once (safety); increases at most every 5 s (IEC 61851-1, EVerest
            # IEC_PWM_MAX_UPDATE_INTERVAL). A fresh offer starts at the target.
            if target != self.duty_permille and (
                not rising or _due(self._t.duty_changed_at, T_PWM_MIN_UPDATE_INTERVAL, now)
            ):
                self.duty_permille = target
                self._t.duty_changed_at = now
            mode = PilotMode.PWM
        elif state == "F":
            # -12 V for the hold, then X1 so that the EV's state can be re-read (CX -> F -> C1/B1).
            held = _due(self._t.f_entered if self._t.f_entered is not None else now, T_STATE_F_AFTER_FAULT, now)
            mode, self.duty_permille = (PilotMode.X1 if held else PilotMode.F), 0
        elif state == "WAKEUP":
            in_pulse = not _due(self._t.entered, T_STEP_EF, now)
            pulse = PilotMode.E if self.supports_state_e else PilotMode.F
            mode, self.duty_permille = (pulse if in_pulse else PilotMode.X1), 0
        else:
            mode, self.duty_permille = PilotMode.X1, 0
        # Contactor.
        self.contactor_closed = self._contactor(now)
        # Lock: held while power flows, and while an EV is connected (IEC 61851-1:2019 D.6.5: locked
        # in B too, as EVerest does) unless an emergency fault is active: then it is released as soon
        # as the contactor is open, so that the user can take the cable away.
        connected = state[0] in "BCD" or state == "WAKEUP"
        locked = self.contactor_closed or (connected and not self.inputs.emergency)
        return Outputs(pilot_mode=mode, duty_permille=self.duty_permille, contactor_closed=self.contactor_closed,
                       locked=locked)  # fmt: skip

    def _contactor(self, now: float) -> bool:
        i = self.inputs
        if i.emergency:
            return False
        if self.state == "C2" or (self.state == "D2" and i.ventilation_available):
            if i.hlc and not (i.hlc_power and i.authorized):
                # The session stopped power (PowerDelivery Stop) or never started it: as in C1, an EV
                # still drawing gets up to 6 s to stop before the contactor opens under load.
                return self._power_off_window(now)
            # Close only with a verified diode (IEC 61851-1 Table A.4: checked before closing) and a
            # connector confirmed locked (IEC 61851-1 D.6.5: no power on an unlocked socket).
            return i.diode_ok is True and i.lock_confirmed
        under_load_window = self.state == "C1" or (self.state == "D1" and i.ventilation_available)
        if under_load_window and self._t.withdrawn_at is not None:
            return self._power_off_window(now)
        self._t.withdrawn_at = None
        return False

    def _power_off_window(self, now: float) -> bool:
        """Sequence 10.2: a closed contactor stays closed while the EV still draws current, at most
        6 s from the withdrawal; then (or at once below 1 A) it opens."""
        if self.contactor_closed:
            if self._t.withdrawn_at is None:
                self._t.withdrawn_at = now
            window_open = not _due(self._t.withdrawn_at, T_POWER_OFF_UNDER_LOAD_C1, now)
            if self.inputs.current_a >= I_OPEN_WITHOUT_WAIT_A and window_open:
                return True
        self._t.withdrawn_at = None
        return False
