"""IEC 61851-1 Table A.6 sequences through the pure connector machine, one table row per sequence.

Each row is a script of input changes on a virtual time line (``tests/firmware/machine_driver.py`` steps
the machine at every change, every announced deadline and every 10 ms), the exact trail of states the
machine must go through, and what the pilot, the contactor and the lock must show at given times.
Timings are asserted to the step: "opens at once" means in the step that saw the change.

Scripted events sit at whole or half seconds; that the machine acts exactly at the deadline it announces
for arbitrary times (a floating-point bug found by these tests) is checked at the end of this file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from firmware.iec61851.machine import STATE_DESCRIPTIONS, STATES, T_REREAD_AFTER_F, ConnectorMachine, transition_rows
from firmware.iec61851.pilot import CpState
from firmware.iec61851.timing import (
    T_CLOSE_MAX,
    T_LEGACY_WAKEUP,
    T_POWER_OFF_UNDER_LOAD_C1,
    T_PWM_MIN_UPDATE_INTERVAL,
    T_STATE_F_AFTER_FAULT,
    T_STAY_X1_AFTER_STEP_EF,
    T_STEP_EF,
)
from hal.types import PilotMode
from tests.firmware.machine_driver import Event, MachineDriver

A, B, C, D, E = CpState.A, CpState.B, CpState.C, CpState.D, CpState.E
X1, PWM, F = PilotMode.X1, PilotMode.PWM, PilotMode.F
#: From raising an emergency to the X1 state of the EV: the F hold plus the re-read in X1.
T_F_TOTAL = T_STATE_F_AFTER_FAULT + T_REREAD_AFTER_F
#: One millisecond before a deadline.
MS = 0.001

#: Authorised, 16 A available, diode verified: everything an offer and a close need.
READY: dict[str, Any] = {"authorized": True, "effective_a": 16.0, "diode_ok": True}
EMERGENCY: dict[str, Any] = {"emergency": True, "new_emergency": True}


def ready(**overrides: Any) -> dict[str, Any]:
    return {**READY, **overrides}


@dataclass(frozen=True)
class At:
    """What must hold at time ``t`` (after every step at or before ``t``); ``None`` = not checked."""

    t: float
    state: str | None = None
    mode: PilotMode | None = None
    duty: int | None = None
    closed: bool | None = None
    locked: bool | None = None


@dataclass(frozen=True)
class Seq:
    id: str
    script: tuple[Event, ...]
    until: float
    trail: tuple[str, ...]
    checks: tuple[At, ...]
    supports_state_e: bool = False
    no_pwm: tuple[tuple[float, float], ...] = ()  # intervals with no PWM at all


def _ev(t: float, **changes: Any) -> Event:
    return (t, changes)


def play(seq: Seq) -> MachineDriver:
    return MachineDriver(ConnectorMachine(supports_state_e=seq.supports_state_e)).run(seq.script, until=seq.until)


def mismatches(drv: MachineDriver, checks: tuple[At, ...]) -> list[str]:
    problems = []
    for check in checks:
        s = drv.at(check.t)
        got: Mapping[str, Any] = {
            "state": s.state,
            "mode": s.out.pilot_mode,
            "duty": s.out.duty_permille,
            "closed": s.out.contactor_closed,
            "locked": s.out.locked,
        }
        for name, value in got.items():
            want = getattr(check, name)
            if want is not None and want != value:
                problems.append(f"t={check.t}: {name} is {value}, expected {want} (state {s.state})")
    return problems


def assert_sequence(seq: Seq) -> MachineDriver:
    drv = play(seq)
    assert drv.trail() == list(seq.trail), "state trail"
    problems = mismatches(drv, seq.checks)
    for start, end in seq.no_pwm:
        problems += [f"t={s.t}: PWM in {s.state}" for s in drv.between(start, end) if s.out.pilot_mode == PWM]
    assert not problems, "\n".join(problems)
    return drv


# A charging session used as the start of many rows: plug-in at 1 s, EV ready at 2 s drawing 16 A.
CHARGING = (_ev(0, **READY), _ev(1, ev=B), _ev(2, ev=C, current_a=16.0))
CHARGING_TRAIL = ("A1", "B1", "B2", "C2")

SEQUENCES = [
    Seq(
        "1.1 plug-in, not authorised: B1, no offer, locked",
        (_ev(1, ev=B),),
        5,
        ("A1", "B1"),
        (
            At(0.99, state="A1", mode=X1, closed=False, locked=False),
            At(1, state="B1", mode=X1, duty=0, closed=False, locked=True),
            At(5, state="B1", mode=X1),
        ),
    ),
    Seq(
        "1.1 plug-in, authorised: B2 offers 16 A (26.6 %) at once",
        (_ev(0, **READY), _ev(1, ev=B)),
        5,
        ("A1", "B1", "B2"),
        (At(1, state="B2", mode=PWM, duty=266, closed=False, locked=True),),
    ),
    Seq(
        "B1 -> B2: the offer follows the authorisation",
        (_ev(0, ev=B, effective_a=16.0, diode_ok=True), _ev(2, authorized=True)),
        5,
        ("A1", "B1", "B2"),
        (At(1.99, state="B1", mode=X1), At(2, state="B2", mode=PWM, duty=266)),
    ),
    Seq(
        "no limit at all: authorised but 0 A means no offer (default deny)",
        (_ev(0, authorized=True, diode_ok=True), _ev(1, ev=B)),
        5,
        ("A1", "B1"),
        (At(5, state="B1", mode=X1),),
    ),
    Seq(
        "4: B2 -> C2 closes with the diode verified, in the same step (well within 3 s)",
        CHARGING,
        5,
        CHARGING_TRAIL,
        (
            At(1.99, state="B2", closed=False),
            At(2, state="C2", mode=PWM, duty=266, closed=True, locked=True),
            At(2 + T_CLOSE_MAX, state="C2", closed=True),
        ),
    ),
    Seq(
        "4: B2 -> C2 without a diode judgement yet: offer on, contactor open until the diode is verified",
        (_ev(0, authorized=True, effective_a=16.0), _ev(1, ev=B), _ev(2, ev=C), _ev(2.5, diode_ok=True)),
        5,
        ("A1", "B1", "B2", "C2"),
        (
            At(2, state="C2", mode=PWM, closed=False),
            At(2.49, closed=False),
            At(2.5, state="C2", closed=True),
        ),
    ),
    Seq(
        "4: B2 -> C2 with a failed diode check never closes",
        (_ev(0, authorized=True, effective_a=16.0, diode_ok=False), _ev(1, ev=B), _ev(2, ev=C)),
        10,
        ("A1", "B1", "B2", "C2"),
        (At(2, state="C2", closed=False), At(10, closed=False)),
    ),
    Seq(
        "4: the diode judgement turning bad in C2 opens at once",
        (*CHARGING, _ev(5, diode_ok=False)),
        6,
        CHARGING_TRAIL,
        (At(4.99, closed=True), At(5, state="C2", closed=False)),
    ),
    Seq(
        "4: B2 -> C2 with the lock not yet confirmed: offer on, contactor open until the lock confirms",
        (_ev(0, **ready(lock_confirmed=False)), _ev(1, ev=B), _ev(2, ev=C), _ev(2.5, lock_confirmed=True)),
        5,
        ("A1", "B1", "B2", "C2"),
        (
            At(1, state="B2", locked=True),  # the lock is commanded on plug-in
            At(2, state="C2", mode=PWM, closed=False, locked=True),
            At(2.49, closed=False),
            At(2.5, state="C2", closed=True),
        ),
    ),
    Seq(
        "1.2 direct A -> C (simplified mode): offer first, diode checked with PWM on, then close",
        (_ev(0, authorized=True, effective_a=16.0), _ev(1, ev=C), _ev(1.5, diode_ok=True)),
        3,
        ("A1", "C1", "C2"),
        (
            At(1, state="C2", mode=PWM, duty=266, closed=False, locked=True),
            At(1.49, closed=False),
            At(1.5, state="C2", closed=True),
        ),
    ),
    Seq(
        "1.2 direct A -> C, not authorised: C1, no offer, never closes",
        (_ev(0, effective_a=16.0, diode_ok=True), _ev(1, ev=C, current_a=16.0)),
        10,
        ("A1", "C1"),
        (At(1, state="C1", mode=X1, closed=False, locked=True), At(10, closed=False)),
    ),
    Seq(
        "7 / 8.2: C2 -> B2 (EV stops) opens in the same step, offer stays",
        (*CHARGING, _ev(5, ev=B)),
        8,
        (*CHARGING_TRAIL, "B2"),
        (At(4.99, closed=True), At(5, state="B2", mode=PWM, duty=266, closed=False, locked=True)),
    ),
    Seq(
        "7 / 8.2 then 4 again: B2 -> C2 closes again",
        (*CHARGING, _ev(5, ev=B), _ev(6, ev=C)),
        8,
        (*CHARGING_TRAIL, "B2", "C2"),
        (At(5.5, closed=False), At(6, state="C2", closed=True)),
    ),
    Seq(
        "10.2 pause under load: C1, contactor kept for 6 s, then opened under load",
        (*CHARGING, _ev(10, paused=True)),
        20,
        (*CHARGING_TRAIL, "C1"),
        (
            At(10, state="C1", mode=X1, duty=0, closed=True, locked=True),
            At(10 + T_POWER_OFF_UNDER_LOAD_C1 - MS, closed=True),
            At(10 + T_POWER_OFF_UNDER_LOAD_C1, state="C1", closed=False, locked=True),
        ),
    ),
    Seq(
        "10.2 pause with the EV drawing < 1 A: opens at once",
        (*CHARGING, _ev(9, current_a=0.5), _ev(10, paused=True)),
        12,
        (*CHARGING_TRAIL, "C1"),
        (
            At(9.99, closed=True),
            At(10, state="C1", mode=X1, closed=False),
        ),
    ),
    Seq(
        "10.2 pause, then the EV's current drops below 1 A: opens then",
        (*CHARGING, _ev(10, paused=True), _ev(12.5, current_a=0.9)),
        20,
        (*CHARGING_TRAIL, "C1"),
        (At(12.49, closed=True), At(12.5, state="C1", closed=False), At(20, closed=False)),
    ),
    Seq(
        "10.2 pause, then the EV goes to B inside the window: opens at once",
        (*CHARGING, _ev(10, paused=True), _ev(11, ev=B)),
        20,
        (*CHARGING_TRAIL, "C1", "B1"),
        (At(10.99, closed=True), At(11, state="B1", mode=X1, closed=False, locked=True)),
    ),
    Seq(
        "resume after a pause: C1 -> C2, closes again",
        (*CHARGING, _ev(10, paused=True, current_a=0.0), _ev(20, paused=False)),
        25,
        (*CHARGING_TRAIL, "C1", "C2"),
        (
            At(10, state="C1", closed=False),
            At(19.99, state="C1", mode=X1),
            At(20, state="C2", mode=PWM, duty=266, closed=True),
        ),
        no_pwm=((10, 20),),
    ),
    Seq(
        "resume inside the 10.2 window: the contactor never opens",
        (*CHARGING, _ev(10, paused=True), _ev(13, paused=False)),
        25,
        (*CHARGING_TRAIL, "C1", "C2"),
        (At(12.99, state="C1", closed=True), At(13, state="C2", closed=True), At(25, closed=True)),
    ),
    Seq(
        "STOP fault: withdraws like a pause (10.2 window), offers again when it clears",
        (*CHARGING, _ev(10, stop=True), _ev(20, stop=False)),
        25,
        (*CHARGING_TRAIL, "C1", "C2"),
        (
            At(10, state="C1", mode=X1, closed=True),
            At(16 - MS, closed=True),
            At(16, closed=False, locked=True),
            At(20, state="C2", mode=PWM, closed=True),
        ),
        no_pwm=((10, 20),),
    ),
    Seq(
        "limit below 6 A withdraws (10.2 window), back above resumes at the new limit",
        (*CHARGING, _ev(10, effective_a=5.9), _ev(20, effective_a=10.0)),
        25,
        (*CHARGING_TRAIL, "C1", "C2"),
        (
            At(10, state="C1", mode=X1, closed=True),
            At(16, closed=False),
            At(20, state="C2", mode=PWM, duty=166, closed=True),
        ),
        no_pwm=((10, 20),),
    ),
    Seq(
        "limit reductions apply at once",
        (
            _ev(0, **ready(effective_a=32.0)),
            _ev(1, ev=B),
            _ev(2, ev=C),
            _ev(3, effective_a=16.0),
            _ev(4, effective_a=6),
        ),
        5,
        (*CHARGING_TRAIL,),
        (At(2.99, duty=533), At(3, duty=266), At(3.5, duty=266), At(4, duty=100, closed=True)),
    ),
    Seq(
        "limit increases wait 5 s after the last duty change",
        (
            *CHARGING,  # offered at 1 s: 266
            _ev(3, effective_a=32.0),  # 2 s after the last change: waits until 6 s
            _ev(20, effective_a=40.0),  # 14 s after: at once
            _ev(21, effective_a=10.0),  # reduction: at once
            _ev(22, effective_a=32.0),  # 1 s after: waits until 26 s
        ),
        30,
        CHARGING_TRAIL,
        (
            At(3, duty=266),
            At(1 + T_PWM_MIN_UPDATE_INTERVAL - MS, duty=266),
            At(1 + T_PWM_MIN_UPDATE_INTERVAL, duty=533),
            At(20, duty=666),
            At(21, duty=166),
            At(25.99, duty=166),
            At(26, duty=533, closed=True),
        ),
    ),
    Seq(
        "a fresh offer is not rate-limited: withdraw and offer again at a higher limit",
        (*CHARGING, _ev(3, effective_a=0.0, current_a=0.0), _ev(4, effective_a=32.0)),
        5,
        (*CHARGING_TRAIL, "C1", "C2"),
        (At(3, state="C1", mode=X1), At(4, state="C2", duty=533, closed=True)),
    ),
    Seq(
        "HLC: 5 % whatever the limit, even below 6 A",
        (
            _ev(0, **ready(hlc=True, hlc_power=True, effective_a=32.0)),
            _ev(1, ev=B),
            _ev(3, effective_a=3.0),
            _ev(4, ev=C),
        ),
        6,
        (*CHARGING_TRAIL,),
        (At(1, state="B2", mode=PWM, duty=50), At(3, state="B2", duty=50), At(4, state="C2", duty=50, closed=True)),
    ),
    Seq(
        "HLC switched on while charging: 5 % at once",
        (_ev(0, **ready(effective_a=32.0)), _ev(1, ev=B), _ev(2, ev=C), _ev(10, hlc=True, hlc_power=True)),
        12,
        CHARGING_TRAIL,
        (At(9.99, duty=533), At(10, state="C2", mode=PWM, duty=50, closed=True)),
    ),
    Seq(
        "HLC: in C2 the contactor waits for the session's PowerDelivery",
        (_ev(0, **ready(hlc=True)), _ev(1, ev=B), _ev(2, ev=C), _ev(5, hlc_power=True)),
        6,
        CHARGING_TRAIL,
        (At(2, state="C2", duty=50, closed=False), At(4.99, closed=False), At(5, state="C2", closed=True)),
    ),
    Seq(
        "HLC: PowerDelivery Stop with the EV still drawing: open after 6 s at the latest",
        (
            _ev(0, **ready(hlc=True, hlc_power=True)),
            _ev(1, ev=B),
            _ev(2, ev=C, current_a=16.0),
            _ev(10, hlc_power=False),
        ),
        20,
        CHARGING_TRAIL,
        (At(10, state="C2", closed=True), At(16 - MS, closed=True), At(16, state="C2", closed=False)),
    ),
    Seq(
        "HLC: PowerDelivery Stop below 1 A: open at once",
        (
            _ev(0, **ready(hlc=True, hlc_power=True)),
            _ev(1, ev=B),
            _ev(2, ev=C, current_a=0.5),
            _ev(10, hlc_power=False),
        ),
        12,
        CHARGING_TRAIL,
        (At(9.99, closed=True), At(10, state="C2", closed=False)),
    ),
    Seq(
        "HLC: 5 % from plug-in before authorisation; the contactor waits for it and for PowerDelivery",
        (
            _ev(0, hlc=True, effective_a=16.0, diode_ok=True),
            _ev(1, ev=B),
            _ev(2, ev=C, hlc_power=True),
            _ev(5, authorized=True),
        ),
        6,
        CHARGING_TRAIL,
        (At(1, state="B2", mode=PWM, duty=50), At(4.99, state="C2", closed=False), At(5, closed=True)),
    ),
    Seq(
        "HLC: no legacy wake-up of an EV that stays in B2 (its session is still being set up)",
        (_ev(0, **ready(hlc=True)), _ev(1, ev=B)),
        T_LEGACY_WAKEUP + 10,
        ("A1", "B1", "B2"),
        (At(T_LEGACY_WAKEUP + 9, state="B2", mode=PWM, duty=50),),
    ),
    Seq(
        "D with ventilation: D2 charges",
        (_ev(0, **ready(ventilation_available=True)), _ev(1, ev=B), _ev(2, ev=D)),
        5,
        ("A1", "B1", "B2", "D2"),
        (At(2, state="D2", mode=PWM, duty=266, closed=True, locked=True),),
    ),
    Seq(
        "D without ventilation: the offer is withdrawn, never closes",
        (_ev(0, **READY), _ev(1, ev=B), _ev(2, ev=D, current_a=16.0)),
        10,
        ("A1", "B1", "B2", "D2", "D1"),
        (At(2, state="D1", mode=X1, closed=False, locked=True), At(10, state="D1", mode=X1, closed=False)),
        no_pwm=((2, 10),),
    ),
    Seq(
        "D without ventilation, plugged straight into D: never offers",
        (_ev(0, **READY), _ev(1, ev=D)),
        5,
        ("A1", "D1"),
        (At(5, state="D1", mode=X1, closed=False),),
        no_pwm=((0, 5),),
    ),
    Seq(
        "C2 -> D without ventilation: opens at once, no 10.2 window",
        (*CHARGING, _ev(5, ev=D)),
        8,
        (*CHARGING_TRAIL, "D2", "D1"),
        (At(4.99, closed=True), At(5, state="D1", mode=X1, closed=False)),
    ),
    Seq(
        "ventilation lost in D2: opens at once",
        (
            _ev(0, **ready(ventilation_available=True)),
            _ev(1, ev=B),
            _ev(2, ev=D, current_a=16.0),
            _ev(5, ventilation_available=False),
        ),
        8,
        ("A1", "B1", "B2", "D2", "D1"),
        (At(4.99, closed=True), At(5, state="D1", mode=X1, closed=False)),
    ),
    Seq(
        "emergency while charging: F at once, open, unlocked; F 300 ms, X1, re-read C1; offer after it clears",
        (*CHARGING, _ev(10, **EMERGENCY), _ev(15, emergency=False)),
        20,
        (*CHARGING_TRAIL, "F", "C1", "C2"),
        (
            At(10, state="F", mode=F, duty=0, closed=False, locked=False),
            At(10 + T_STATE_F_AFTER_FAULT - MS, state="F", mode=F),
            At(10 + T_STATE_F_AFTER_FAULT, state="F", mode=X1),
            At(10 + T_F_TOTAL - MS, state="F", mode=X1),
            At(10 + T_F_TOTAL, state="C1", mode=X1, closed=False, locked=False),
            At(14.99, state="C1", mode=X1, closed=False, locked=False),
            At(15, state="C2", mode=PWM, duty=266, closed=True, locked=True),
        ),
        no_pwm=((10, 15),),
    ),
    Seq(
        "emergency, then the EV goes to B during F: re-read as B1",
        (*CHARGING, _ev(10, **EMERGENCY), _ev(10.1, ev=B), _ev(15, emergency=False)),
        20,
        (*CHARGING_TRAIL, "F", "B1", "B2"),
        (At(10 + T_F_TOTAL, state="B1", mode=X1), At(15, state="B2", mode=PWM)),
    ),
    Seq(
        "legacy wake-up: B2 for 30 s, F pulse 4 s, X1 750 ms, offer again; only once per plug-in",
        (_ev(0, **READY), _ev(1, ev=B), _ev(100, ev=A), _ev(101, ev=B)),
        140,
        ("A1", "B1", "B2", "WAKEUP", "B1", "B2", "A2", "A1", "B1", "B2", "WAKEUP", "B1", "B2"),
        (
            At(1 + T_LEGACY_WAKEUP - MS, state="B2", mode=PWM),
            At(31, state="WAKEUP", mode=F, closed=False, locked=True),
            At(31 + T_STEP_EF - MS, state="WAKEUP", mode=F),
            At(31 + T_STEP_EF, state="WAKEUP", mode=X1),
            At(31 + T_STEP_EF + T_STAY_X1_AFTER_STEP_EF - MS, state="WAKEUP", mode=X1),
            At(31 + T_STEP_EF + T_STAY_X1_AFTER_STEP_EF, state="B2", mode=PWM, duty=266),
            At(99.99, state="B2"),  # no second wake-up in the same plug-in
            At(131, state="WAKEUP", mode=F),  # re-armed by the new plug-in at 101 s
        ),
    ),
    Seq(
        "legacy wake-up with a board that drives E: the pulse is E",
        (_ev(0, **READY), _ev(1, ev=B)),
        40,
        ("A1", "B1", "B2", "WAKEUP", "B1", "B2"),
        (At(31, state="WAKEUP", mode=PilotMode.E), At(35, state="WAKEUP", mode=X1), At(35.75, state="B2")),
        supports_state_e=True,
    ),
    Seq(
        "legacy wake-up: the EV wakes up and goes to C during X1, charges once the pulse is over",
        (_ev(0, **READY), _ev(1, ev=B), _ev(35.5, ev=C)),
        40,
        ("A1", "B1", "B2", "WAKEUP", "B1", "C1", "C2"),
        (At(35.5, state="WAKEUP", closed=False), At(35.75, state="C2", mode=PWM, closed=True)),
    ),
    Seq(
        "legacy wake-up: an EV that becomes ready before 30 s is not woken",
        (_ev(0, **READY), _ev(1, ev=B), _ev(20, ev=C), _ev(40, ev=B)),
        60,
        ("A1", "B1", "B2", "C2", "B2"),
        (At(50, state="B2", mode=PWM),),
    ),
]


@pytest.mark.parametrize("seq", [pytest.param(s, id=s.id) for s in SEQUENCES])
def test_sequence(seq: Seq) -> None:
    assert_sequence(seq)


# ------------------------------------------------------------------------ every state x an event
#: The event (unplug, pilot short, emergency) is raised at this time in every state.
T_EVENT = 31.5
CHARGING_VENT = (_ev(0, **ready(ventilation_available=True)), _ev(1, ev=B), _ev(2, ev=D, current_a=16.0))
#: Scripts that leave the machine in each state at T_EVENT.
REACH: dict[str, tuple[Event, ...]] = {
    "A1": (),
    "B1": (_ev(1, ev=B),),  # not authorised
    "B2": (_ev(0, **READY), _ev(29, ev=B)),
    "C1": (*CHARGING, _ev(30, paused=True)),  # inside the 10.2 window: still closed under load
    "C2": CHARGING,
    "D1": (*CHARGING_VENT, _ev(30, paused=True)),  # inside the 10.2 window: still closed under load
    "D2": CHARGING_VENT,
    "E": (_ev(0, **READY), _ev(1, ev=B), _ev(2, ev=E)),
    "F": (*CHARGING, _ev(31, **EMERGENCY)),  # F entered at 31 s: re-reading in X1 at T_EVENT
    "WAKEUP": (_ev(0, **READY), _ev(1, ev=B)),  # wake-up pulse from 31 s to 35 s
}
#: What the contactor shows just before T_EVENT in each state.
CLOSED_BEFORE = {"C1", "C2", "D1", "D2"}


def test_the_reach_scripts_reach_their_states() -> None:
    assert set(REACH) == set(STATES) - {"A2"}  # A2 is transient: withdrawn in the step that enters it
    for name, script in REACH.items():
        before = MachineDriver().run(script, until=T_EVENT).last
        assert before.state == name
        assert before.out.contactor_closed == (name in CLOSED_BEFORE)


@pytest.mark.parametrize("name", list(REACH))
def test_unplug_from_every_state_opens_at_once_and_ends_in_a1(name: str) -> None:
    drv = MachineDriver().run((*REACH[name], _ev(T_EVENT, ev=A)), until=T_EVENT + 2)
    now = drv.at(T_EVENT)
    assert not now.out.contactor_closed
    assert not now.out.locked
    assert now.out.pilot_mode != PWM
    # F is left only after its hold and the re-read: then it reads A.
    assert now.state == ("F" if name == "F" else "A1")
    end = drv.at(T_EVENT + 2)
    assert (end.state, end.out.pilot_mode, end.out.contactor_closed, end.out.locked) == ("A1", X1, False, False)
    if name == "F":
        assert drv.at(31 + T_F_TOTAL - MS).state == "F"
        assert drv.at(31 + T_F_TOTAL).state == "A1"


#: After E clears to B, the machine offers again where the reach script allows it.
_OFFER_AFTER_E = {"A1": False, "B1": False, "C1": False, "D1": False, "F": False}


@pytest.mark.parametrize("name", list(REACH))
def test_pilot_short_e_from_every_state_opens_and_returns_to_x1_when_valid(name: str) -> None:
    drv = MachineDriver().run((*REACH[name], _ev(T_EVENT, ev=E), _ev(T_EVENT + 1, ev=B)), until=T_EVENT + 2)
    now = drv.at(T_EVENT)
    assert not now.out.contactor_closed
    assert not now.out.locked
    assert now.out.pilot_mode != PWM
    if name == "F":  # the re-read finds E
        assert now.state == "F"
        assert drv.at(31 + T_F_TOTAL).state == "E"
    else:
        assert now.state == "E"
        assert now.out.pilot_mode == X1
    assert drv.at(T_EVENT + 1 - MS).state == "E"
    back = drv.at(T_EVENT + 1)
    offer = _OFFER_AFTER_E.get(name, True)
    assert back.state == ("B2" if offer else "B1")
    assert back.out.pilot_mode == (PWM if offer else X1)
    assert back.out.locked == (name != "F")  # after F the emergency is still active: lock released
    assert not back.out.contactor_closed
    assert drv.trail()[-3 if offer else -2 :] == ["E", "B1", "B2"][: 3 if offer else 2]


#: The X1 state the machine re-reads after F, and the state once the emergency has cleared.
_AFTER_F = {
    "A1": ("A1", "A1"),
    "B1": ("B1", "B1"),  # not authorised
    "B2": ("B1", "B2"),
    "C1": ("C1", "C1"),  # still paused
    "C2": ("C1", "C2"),
    "D1": ("D1", "D1"),  # still paused
    "D2": ("D1", "D2"),
    "E": ("E", "E"),
    "WAKEUP": ("B1", "B2"),
}


@pytest.mark.parametrize("name", list(_AFTER_F))
def test_emergency_in_every_state_f_300_ms_then_x1_then_the_ev_state(name: str) -> None:
    t = T_EVENT
    reread, cleared = _AFTER_F[name]
    drv = MachineDriver().run((*REACH[name], _ev(t, **EMERGENCY), _ev(t + 2, emergency=False)), until=t + 3)
    assert (
        mismatches(
            drv,
            (
                At(t, state="F", mode=F, duty=0, closed=False, locked=False),
                At(t + T_STATE_F_AFTER_FAULT - MS, state="F", mode=F, closed=False),
                At(t + T_STATE_F_AFTER_FAULT, state="F", mode=X1, closed=False, locked=False),
                At(t + T_F_TOTAL - MS, state="F"),
                At(t + T_F_TOTAL, state=reread, mode=X1, closed=False, locked=False),
                At(t + 2 - MS, state=reread, mode=X1, closed=False, locked=False),
                At(t + 2, state=cleared),
            ),
        )
        == []
    )
    assert not [s for s in drv.between(t, t + 2) if s.out.pilot_mode == PWM or s.out.contactor_closed]
    end = drv.at(t + 2)
    assert end.out.contactor_closed == (cleared in ("C2", "D2"))
    assert end.out.pilot_mode == (PWM if cleared.endswith("2") else X1)
    assert end.out.locked == (cleared[0] in "BCD")


def test_lock_follows_the_connection() -> None:
    drv = MachineDriver().run((*CHARGING, _ev(5, ev=B), _ev(6, ev=A)), until=7)
    assert [drv.at(t).out.locked for t in (0.5, 1, 2, 5, 6)] == [False, True, True, True, False]


# ------------------------------------------------------------------------ the table itself
def test_every_state_is_described_and_every_transition_uses_known_states() -> None:
    assert set(STATE_DESCRIPTIONS) == set(STATES)
    rows = transition_rows()
    assert rows
    for _trigger, source, dest, _guard in rows:
        assert source in STATES and dest in STATES
    # The EVSE can only offer from x1 states with a guard; the guard is the default-deny check.
    offers = {(s, d, g) for t, s, d, g in rows if t == "offer"}
    assert {(s, d) for s, d, _g in offers} == {("B1", "B2"), ("C1", "C2"), ("D1", "D2")}
    assert all(g and callable(getattr(ConnectorMachine, g, None)) for _s, _d, g in offers)
    # Every state can be left by a fault.
    assert {s for t, s, _d, _g in rows if t == "fault"} | {"F"} == set(STATES)


# ------------------------------------------------------------------------ bugs found by these tests
def test_a_new_emergency_in_f_restarts_the_300_ms_hold() -> None:
    # Regression (bug found in machine.py as committed in e05f377 / bface7c): the table said "F itself
    # included: the hold time restarts", but the "fault" transition listed every state except F, and
    # transitions ignores the trigger in F (ignore_invalid_triggers=True). A second emergency raised while
    # F already drove X1 for the re-read (here 0.4 s after the first) got no F at all, and one raised
    # during the hold got less than 300 ms. Fixed by making F a source of "fault" too (the reflexive
    # transition runs after_state_change, which restarts f_entered).
    drv = MachineDriver().run((_ev(1, ev=B), _ev(10, **EMERGENCY), _ev(10.4, new_emergency=True)), until=12)
    assert drv.at(10.4).out.pilot_mode == F
    assert drv.at(10.4 + T_STATE_F_AFTER_FAULT - MS).out.pilot_mode == F
    assert drv.at(10.4 + T_F_TOTAL - MS).state == "F"


def _follow_deadlines(m: ConnectorMachine, now: float, until: float) -> float:
    """Step only at the times the machine announces, as a runtime that sleeps until then would."""
    while (deadline := m.next_deadline(now)) is not None and deadline <= until:
        now = deadline
        m.step(now)
    return now


def _emergency_at(t: float) -> ConnectorMachine:
    m = ConnectorMachine()
    m.inputs.ev = B
    m.step(0.0)
    m.inputs.emergency, m.inputs.new_emergency = True, True
    m.step(t)
    m.inputs.emergency = False
    return m


def _paused_under_load_at(t: float) -> ConnectorMachine:
    m = ConnectorMachine()
    for name, value in {**READY, "ev": C, "current_a": 16.0}.items():
        setattr(m.inputs, name, value)
    m.step(0.0)
    m.inputs.paused = True
    m.step(t)
    return m


def _raised_limit_at(t: float) -> ConnectorMachine:
    m = ConnectorMachine()
    for name, value in {**READY, "ev": C, "effective_a": 10.0}.items():
        setattr(m.inputs, name, value)
    m.step(t)  # fresh offer at 166 per mille
    m.inputs.effective_a = 32.0  # rising: allowed 5 s after the offer
    m.step(t)
    return m


@pytest.mark.parametrize(
    ("make", "t", "done"),
    [
        # Minimal failing inputs (the first 10 ms multiple for which each goes wrong).
        pytest.param(_emergency_at, 0.03, lambda m: m.state == "B1", id="F left at f+0.57 (emergency at 0.03 s)"),
        pytest.param(_emergency_at, 2.0, lambda m: m.state == "B1", id="F left at f+0.57 (emergency at 2 s)"),
        pytest.param(
            _paused_under_load_at, 2.04, lambda m: not m.contactor_closed, id="10.2 window ends (paused at 2.04 s)"
        ),
        pytest.param(_raised_limit_at, 3.04, lambda m: m.duty_permille == 533, id="duty rises (offered at 3.04 s)"),
    ],
)
def test_stepping_at_the_announced_deadline_performs_the_action(
    make: Callable[[float], ConnectorMachine], t: float, done: Callable[[ConnectorMachine], bool]
) -> None:
    # Regression (bug found in machine.py as committed in e05f377 / bface7c): next_deadline() announced
    # start + T (e.g. (f_entered + 0.3) + 0.27) but the guards tested now - start >= T; in floating point
    # (t + T) - t can be one ulp below T (2.0 + 0.3 + 0.27 - 2.0 = 0.5699999999999998 <
    # 0.5700000000000001). Stepping exactly at the announced deadline then did nothing, and
    # next_deadline() returned None (it lists only deadlines > now): a runtime sleeping until the deadline
    # stalled until some other step. It hit the F hold and re-read, the 10.2 window and the 5 s duty rate
    # limit. Fixed by comparing against the same sum the machine announces (_due()).
    m = make(t)
    _follow_deadlines(m, t, t + 10)
    assert done(m), f"state {m.state}, contactor {m.contactor_closed}, duty {m.duty_permille}"
