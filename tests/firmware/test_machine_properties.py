"""Safety invariants of the connector machine under random input sequences (anchors.md 8.2).

Hypothesis generates sequences of EV pilot changes, diode judgements, authorisation, pause, limits, HLC,
ventilation, emergency and STOP faults, current draw and waits. ``MachineDriver`` plays them on virtual
time (a step at every change, every announced deadline and every 10 ms) and each test checks one
invariant over every recorded step.

IEC 61851-1 sequence 10.2 requires the EVSE to give the EV up to 6 s to stop drawing current after the
EVSE withdrew its offer, so "contactor closed only in C2 / D2" holds except in that bounded window.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.iec61851.pilot import HLC_DUTY_PERMILLE, CpState, duty_for_current
from firmware.iec61851.timing import (
    I_OPEN_WITHOUT_WAIT_A,
    T_POWER_OFF_UNDER_LOAD_C1,
    T_PWM_MIN_UPDATE_INTERVAL,
    T_STATE_F_AFTER_FAULT,
)
from hal.types import PilotMode
from tests.firmware.machine_driver import MachineDriver, Sample

Action = tuple[str, Any]

_WAIT = st.sampled_from([0.005, 0.01, 0.02, 0.1, 0.25, 0.3, 0.57, 1.0, 2.5, 5.0, 6.0]) | st.floats(0.001, 7.0)
_ACTION = st.one_of(
    st.tuples(st.just("ev"), st.sampled_from([CpState.A, CpState.B, CpState.C, CpState.D, CpState.E])),
    st.tuples(st.just("ev"), st.sampled_from([CpState.B, CpState.C])),  # more time plugged in
    st.tuples(st.just("diode_ok"), st.sampled_from([None, True, False])),
    st.tuples(st.just("authorized"), st.booleans()),
    st.tuples(st.just("paused"), st.booleans()),
    st.tuples(st.just("stop"), st.booleans()),
    st.tuples(st.just("hlc"), st.booleans()),
    st.tuples(st.just("hlc_power"), st.booleans()),
    st.tuples(st.just("ventilation_available"), st.booleans()),
    st.tuples(st.just("lock_confirmed"), st.booleans()),
    st.tuples(
        st.just("effective_a"),
        st.sampled_from([0.0, 3.0, 5.9, 6.0, 10.0, 16.0, 32.0, 51.5, 63.0, 80.0, 90.0]) | st.floats(0.0, 90.0),
    ),
    st.tuples(st.just("current_a"), st.sampled_from([0.0, 0.5, 0.99, 1.0, 16.0, 16.0])),
    st.tuples(st.just("emergency"), st.booleans()),  # True raises a new one; False clears
    st.tuples(st.just("emergency"), st.just(True)),
    st.tuples(st.just("emergency_twice"), st.floats(0.001, 0.6)),  # a second fault while the first holds F
    st.tuples(st.just("ready"), st.just(True)),  # authorised, 16 A, diode verified, no fault, no pause
    st.tuples(st.just("wait"), _WAIT),
    st.tuples(st.just("wait"), _WAIT),
)
#: Float tolerance of time comparisons: the machine's timers compare with a 1e-9 s margin, so it may act
#: that much before the exact sum of a start time and a duration.
_EARLY = 1e-6
_READY = {"authorized": True, "effective_a": 16.0, "diode_ok": True, "emergency": False, "stop": False, "paused": False}
#: Where a script starts, so that every state is reached often: idle, plugged in, charging (C or D with
#: ventilation, drawing 16 A), and sitting in B2 until the legacy wake-up.
_PRELUDES: list[list[Action]] = [
    [],
    [("ready", True), ("ev", CpState.B)],
    [("ready", True), ("ev", CpState.C), ("current_a", 16.0), ("wait", 1.0)],
    [("ready", True), ("ventilation_available", True), ("ev", CpState.D), ("current_a", 16.0), ("wait", 1.0)],
    [("ready", True), ("ev", CpState.B), ("wait", 30.0)],
]
_SCRIPTS = st.builds(
    lambda prelude, rest: [*prelude, *rest], st.sampled_from(_PRELUDES), st.lists(_ACTION, max_size=30)
)
_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def play(actions: Sequence[Action]) -> list[Sample]:
    drv = MachineDriver()
    for kind, value in actions:
        if kind == "wait":
            drv.advance(value)
        elif kind == "emergency":
            drv.set(emergency=True, new_emergency=True) if value else drv.set(emergency=False)
        elif kind == "emergency_twice":
            drv.set(emergency=True, new_emergency=True)
            drv.advance(value)
            drv.set(new_emergency=True)
        elif kind == "ready":
            drv.set(**_READY)
        else:
            drv.set(**{kind: value})
    drv.advance(T_POWER_OFF_UNDER_LOAD_C1 + 1)  # let every pending timer run out
    return drv.samples


def check(actions: Sequence[Action], invariant: Callable[[list[Sample]], list[str]]) -> None:
    problems = invariant(play(actions))
    assert not problems, "\n".join(problems[:5])


def _describe(s: Sample) -> str:
    return f"t={s.t:.3f} {s.state} {s.out} {s.inputs}"


def _windows(samples: list[Sample]) -> list[float | None]:
    """For each step: when the 10.2 window it is in started (PWM withdrawn while the contactor was closed
    in C2/D2, contactor still closed in C1/D1), or None."""
    starts: list[float | None] = [None]
    for prev, s in itertools.pairwise(samples):
        start = starts[-1]
        if s.out.contactor_closed and s.state in ("C1", "D1"):
            if prev.out.contactor_closed and prev.state in ("C2", "D2"):
                start = s.t
        else:
            start = None
        starts.append(start)
    return starts


# ---------------------------------------------------------------------------- (1) where it may be closed
def closed_only_in_c2_d2_or_the_10_2_window(samples: list[Sample]) -> list[str]:
    problems = []
    for s, start in zip(samples, _windows(samples), strict=True):
        if not s.out.contactor_closed:
            continue
        vent = s.inputs.ventilation_available
        if s.state == "C2" or (s.state == "D2" and vent):
            continue
        in_window = (s.state == "C1" or (s.state == "D1" and vent)) and start is not None
        if in_window and start is not None and s.t - start < T_POWER_OFF_UNDER_LOAD_C1:
            if s.inputs.current_a >= I_OPEN_WITHOUT_WAIT_A:
                continue
        problems.append(f"closed outside C2/D2 and the 10.2 window: {_describe(s)}")
    return problems


@_SETTINGS
@given(_SCRIPTS)
def test_contactor_closed_only_in_c2_d2_with_ventilation_or_the_10_2_window(actions: list[Action]) -> None:
    check(actions, closed_only_in_c2_d2_or_the_10_2_window)


def hlc_closes_only_on_power_delivery(samples: list[Sample]) -> list[str]:
    """Under HLC the contactor closes only once the session asked for power and the EV is authorised."""
    problems = []
    for prev, s in itertools.pairwise(samples):
        closing = s.out.contactor_closed and not prev.out.contactor_closed
        if closing and s.inputs.hlc and not (s.inputs.hlc_power and s.inputs.authorized):
            problems.append(f"closed under HLC without PowerDelivery and authorisation: {_describe(s)}")
    return problems


@_SETTINGS
@given(_SCRIPTS)
def test_under_hlc_the_contactor_closes_only_after_power_delivery_and_authorisation(actions: list[Action]) -> None:
    check(actions, hlc_closes_only_on_power_delivery)


# ---------------------------------------------------------------------------- (2) closing needs the diode
def closes_only_with_a_verified_diode(samples: list[Sample]) -> list[str]:
    problems = []
    for prev, s in itertools.pairwise(samples):
        if not s.out.contactor_closed:
            continue
        i = s.inputs
        if not prev.out.contactor_closed and (i.diode_ok is not True or s.state not in ("C2", "D2") or i.emergency):
            problems.append(f"closed without a verified diode, or outside C2/D2: {_describe(s)}")
        # In C2 / D2 both are re-checked at every step (the 10.2 window only ever keeps a closed contactor).
        if s.state in ("C2", "D2") and (i.diode_ok is not True or not i.lock_confirmed):
            problems.append(f"closed in {s.state} without a verified diode and a confirmed lock: {_describe(s)}")
    return problems


@_SETTINGS
@given(_SCRIPTS)
def test_contactor_never_closes_without_a_verified_diode_and_a_locked_connector(actions: list[Action]) -> None:
    check(actions, closes_only_with_a_verified_diode)


# ---------------------------------------------------------------------------- (3) opening in time
_ONE_STEP = 0.010


def opens_in_time(samples: list[Sample]) -> list[str]:
    problems = []
    for s, start in zip(samples, _windows(samples), strict=True):
        if not s.out.contactor_closed:
            continue
        if s.inputs.ev in (CpState.A, CpState.B, CpState.E):
            problems.append(f"closed in the step that saw the EV in {s.inputs.ev.value}: {_describe(s)}")
        if s.inputs.emergency or s.inputs.new_emergency:
            problems.append(f"closed in a step with an emergency: {_describe(s)}")
        if start is not None and s.t >= start + T_POWER_OFF_UNDER_LOAD_C1 + _ONE_STEP:
            problems.append(f"still closed {s.t - start:.3f} s after the withdrawal: {_describe(s)}")
    return problems


@_SETTINGS
@given(_SCRIPTS)
def test_contactor_opens_at_once_on_b_a_e_or_emergency_and_within_6_s_of_a_withdrawal(actions: list[Action]) -> None:
    check(actions, opens_in_time)


# ---------------------------------------------------------------------------- (4) the duty cycle
def duty_follows_the_limit(samples: list[Sample]) -> list[str]:
    problems = []
    last_change = -math.inf
    prev = samples[0]
    for s in samples:
        pwm = s.out.pilot_mode == PilotMode.PWM
        if pwm and (prev.out.pilot_mode != PilotMode.PWM or s.out.duty_permille != prev.out.duty_permille):
            last_change = s.t
        prev = s
        if not pwm:
            continue
        if s.inputs.hlc:
            if s.out.duty_permille != HLC_DUTY_PERMILLE:
                problems.append(f"HLC but not 5 %: {_describe(s)}")
            continue
        target = duty_for_current(s.inputs.effective_a)
        if target is None:
            problems.append(f"PWM with a limit below 6 A: {_describe(s)}")
        elif s.out.duty_permille > target:
            problems.append(f"duty above the limit's {target}: {_describe(s)}")
        elif s.t - last_change >= T_PWM_MIN_UPDATE_INTERVAL and s.out.duty_permille != target:
            problems.append(f"duty not at {target} {s.t - last_change:.3f} s after its last change: {_describe(s)}")
    return problems


@_SETTINGS
@given(_SCRIPTS)
def test_duty_never_above_the_limit_and_at_it_5_s_after_the_last_change(actions: list[Action]) -> None:
    check(actions, duty_follows_the_limit)


# ---------------------------------------------------------------------------- (5) F after an emergency
def f_held_after_every_emergency(samples: list[Sample]) -> list[str]:
    problems = []
    for i, e in enumerate(samples):
        if not e.inputs.new_emergency:
            continue
        for s in samples[i:]:
            if s.t >= e.t + T_STATE_F_AFTER_FAULT - _EARLY:
                break
            if s.out.pilot_mode != PilotMode.F:
                problems.append(f"pilot not F {s.t - e.t:.3f} s after the emergency at {e.t:.3f}: {_describe(s)}")
                break
    return problems


@_SETTINGS
@given(_SCRIPTS)
def test_pilot_f_for_300_ms_after_every_emergency(actions: list[Action]) -> None:
    # Regression: found a second emergency raised in F that got less than 300 ms of F (see
    # test_machine_table.py::test_a_new_emergency_in_f_restarts_the_300_ms_hold).
    check(actions, f_held_after_every_emergency)


# ---------------------------------------------------------------------------- (6) default deny
def no_offer_unless_allowed(samples: list[Sample]) -> list[str]:
    problems = []
    for s in samples:
        i = s.inputs
        pwm = s.out.pilot_mode == PilotMode.PWM
        # Unauthorised, the only PWM allowed is HLC's 5 %: it asks the EV to talk and offers no power.
        hlc_call = i.hlc and s.out.duty_permille == HLC_DUTY_PERMILLE
        if pwm and ((not i.authorized and not hlc_call) or i.paused or i.emergency or i.new_emergency or i.stop):
            problems.append(f"offer while not allowed: {_describe(s)}")
        if pwm and i.ev == CpState.D and not i.ventilation_available:
            problems.append(f"offer to an EV in D without ventilation: {_describe(s)}")
        if pwm != s.state.endswith("2"):
            problems.append(f"PWM does not match the state digit: {_describe(s)}")
        if s.state == "A2":
            problems.append(f"A2 left standing: {_describe(s)}")
    return problems


@_SETTINGS
@given(_SCRIPTS)
def test_no_offer_while_not_authorised_paused_stopped_or_in_emergency(actions: list[Action]) -> None:
    check(actions, no_offer_unless_allowed)


# ---------------------------------------------------------------------------- the lock
def lock_follows_connection_and_power(samples: list[Sample]) -> list[str]:
    problems = []
    for s in samples:
        locked = s.out.locked
        if s.out.contactor_closed and not locked:
            problems.append(f"unlocked under power: {_describe(s)}")
        if locked and s.state in ("A1", "E", "F"):
            problems.append(f"locked with no EV, in E or in F: {_describe(s)}")
        if locked and s.inputs.emergency and not s.out.contactor_closed:
            problems.append(f"locked during an emergency with the contactor open: {_describe(s)}")
        if s.state[0] in "BCD" and not s.inputs.emergency and not locked:
            problems.append(f"EV connected but not locked: {_describe(s)}")
    return problems


@_SETTINGS
@given(_SCRIPTS)
def test_lock_held_while_connected_released_without_ev_or_on_emergency(actions: list[Action]) -> None:
    check(actions, lock_follows_connection_and_power)


# ---------------------------------------------------------------------------- announced deadlines
def every_timed_action_was_announced(samples: list[Sample]) -> list[str]:
    """A runtime may sleep until next_deadline(): whatever the machine does without an input change must
    happen at a time it announced (the driver steps at every announced time, so a late action shows as
    an action the previous step did not announce)."""
    problems = []
    for prev, s in itertools.pairwise(samples):
        if s.inputs != prev.inputs or prev.inputs.new_emergency:
            continue  # an input changed: not a timed action
        if (s.state, s.out) == (prev.state, prev.out):
            continue
        if prev.deadline is None or prev.deadline - _EARLY > s.t:
            problems.append(f"acted at t={s.t!r} but announced {prev.deadline!r} at t={prev.t!r}: {_describe(s)}")
    return problems


@_SETTINGS
@given(_SCRIPTS)
def test_every_timed_action_happens_at_an_announced_deadline(actions: list[Action]) -> None:
    # Regression: found stepping exactly at next_deadline() doing nothing through floating-point rounding
    # (see test_machine_table.py::test_stepping_at_the_announced_deadline_performs_the_action).
    check(actions, every_timed_action_was_announced)
