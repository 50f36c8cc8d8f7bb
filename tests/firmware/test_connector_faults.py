"""Every fault of the catalogue in each state where it can strike, on the simulated sim-ac board in virtual
time: the fault is provoked through the simulated hardware (plant knobs, wiring fault knobs, the ADC's and
the meter chip's inputs), and the reaction and the recovery are checked on the pins against what
firmware/safety/faults.py promises:

* EMERGENCY: the coil drops in the step that raises the fault, the pilot pin goes to F in that step and
  stays there >= 300 ms, then X1; no offer while the fault is active; the lock lets go;
* STOP: the PWM offer is withdrawn in the step that raises the fault (X1, never F); the contactor opens
  once the EV stops drawing (or after the 6 s power-off-under-load window);
* DERATE: only the duty goes down;
* AUTO: the offer comes back once the condition is gone; UNPLUG: only after the condition is gone and the
  EV was unplugged; SERVICE: only after ``service_clear``; and never before.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import firmware.connector
from firmware.connector import (
    LOCK_RETRY_PERIOD,
    METER_COMM_TIMEOUT,
    METER_PERIOD,
    METER_PLAUSIBLE_RECOVERY_S,
    SUPERVISION_PERIOD,
    T_LOCK_SETTLE,
)
from firmware.iec61851.pilot import duty_for_current
from firmware.iec61851.timing import (
    PILOT_DEBOUNCE_POWER_UP,
    PILOT_INVALID_FAULT_AFTER,
    PILOT_SAMPLE_PERIOD,
    T_CLOSE_MAX,
    T_MIRROR_SETTLE,
    T_POWER_OFF_UNDER_LOAD_C1,
    T_PWM_MIN_UPDATE_INTERVAL,
    T_STATE_F_AFTER_FAULT,
)
from firmware.limits import Limit
from firmware.safety.faults import FaultCode, Reaction, Recovery, spec
from firmware.safety.supervisor import SOFT_OVERCURRENT_TIME_S, UnauthorisedDischargeCheck
from hal.drivers.atm90e32 import REG_AP_ENERGY
from hal.sim.atm90e32 import Atm90e32Fault
from hal.types import PilotMode
from tests.firmware.connector_rig import Rig, charge, charger, plug, unplug, wait_state, wait_until

NEXT_SAMPLE = PILOT_SAMPLE_PERIOD + 1e-6
#: RCD self-test retry period used in the boot self-test test (300 s in the firmware).
RETRY_PERIOD_S = 5.0
NEXT_SUPERVISION = SUPERVISION_PERIOD + PILOT_SAMPLE_PERIOD + 1e-6
NEXT_METER_READING = METER_PERIOD + SUPERVISION_PERIOD + 2 * PILOT_SAMPLE_PERIOD
#: F is held T_STATE_F_AFTER_FAULT, then the pilot loop (10 ms) drives X1.
F_HOLD_MAX = T_STATE_F_AFTER_FAULT + NEXT_SAMPLE
#: After the hold the EVSE re-reads the EV in X1 (slow debounce) before it may offer again.
REREAD_AFTER_F = T_STATE_F_AFTER_FAULT + PILOT_DEBOUNCE_POWER_UP + 5 * PILOT_SAMPLE_PERIOD
#: An observation window long enough for any reaction to settle, in which nothing may be offered.
HOLD_S = 1.5


# ------------------------------------------------------------------------------------------ knobs
def plant_knob(**values: object) -> Callable[[Rig], None]:
    def apply(rig: Rig) -> None:
        for name, value in values.items():
            setattr(rig.plant, name, value)

    return apply


def ev_state(letter: str, **values: object) -> Callable[[Rig], None]:
    return plant_knob(ev_state=letter, **values)


def cp_volts(volts: float | None) -> Callable[[Rig], None]:
    return lambda rig: rig.set_cp_volts(volts)


def ntc_volts(adc_v: float | None) -> Callable[[Rig], None]:
    return lambda rig: rig.set_ntc_volts("socket", adc_v)


def temperature(celsius: float) -> Callable[[Rig], None]:
    def apply(rig: Rig) -> None:
        rig.plant.temperatures_c["socket"] = celsius

    return apply


def meter_fault(fault: Atm90e32Fault) -> Callable[[Rig], None]:
    def apply(rig: Rig) -> None:
        rig.meter_chip.fault = fault

    return apply


def energy_register(value: int | None) -> Callable[[Rig], None]:
    """The chip's phase A forward energy accumulator reads ``value`` (0xFFFF: a corrupted or overrun
    read-to-clear register); None: it counts again."""

    def apply(rig: Rig) -> None:
        rig.meter_chip.force_register(REG_AP_ENERGY[0], value)

    return apply


def demand(amps: float, *, obeys_offer: bool) -> Callable[[Rig], None]:
    def apply(rig: Rig) -> None:
        rig.load.obeys_offer = obeys_offer
        rig.load.demand_a = amps

    return apply


def jam_lock_and_plug(rig: Rig) -> None:
    rig.lock_wiring.jammed = True
    rig.plant.pp_ohm, rig.plant.ev_state = 220.0, "B"


def unjam_lock(rig: Rig) -> None:
    rig.lock_wiring.jammed = False


def stuck_open_and_ready(rig: Rig) -> None:
    rig.plant.contactor_stuck_open = True
    rig.load.demand_a = 16.0
    rig.plant.ev_state = "C"


def ems_16_a(rig: Rig) -> None:
    rig.connector.set_limit(Limit("ems", 16.0))


# ------------------------------------------------------------------------------------------ the table
@dataclass(frozen=True)
class FaultCase:
    start: str  # A1, B2 or C2: the state the connector is in when the fault is provoked
    code: FaultCode
    inject: Callable[[Rig], None]
    restore: Callable[[Rig], None]
    detect_within_s: float = NEXT_SUPERVISION + 2 * PILOT_SAMPLE_PERIOD
    #: The fault may not be raised earlier than this after the injection (debounce / timeout rules).
    not_before_s: float = 0.0
    cable_a: int = 32
    setup: Callable[[Rig], None] | None = None  # after reaching ``start``, before the injection
    #: STOP in C2: the contactor opens once the EV's current is seen below 1 A at a meter reading.
    stop_opens_within_s: float = NEXT_METER_READING
    #: UNPLUG: the EV leaves while the condition still holds, and the condition goes afterwards.
    unplug_before_restore: bool = False
    #: How long after the restore the fault may take to clear (a jammed lock is seen at its next retry).
    recover_within_s: float = HOLD_S


def rows() -> list[object]:
    out: list[object] = []

    def add(case_id: str, case: FaultCase) -> None:
        out.append(pytest.param(case, id=case_id))

    trip, untrip = plant_knob(residual_current_ma=30.0), plant_knob(residual_current_ma=0.0)
    for s in ("A1", "B2", "C2"):
        add(f"rcd-trip-{s}", FaultCase(s, FaultCode.RCD_TRIPPED, trip, untrip))
    add(
        "rcd-trip-B2-ev-leaves-while-tripped",
        FaultCase("B2", FaultCode.RCD_TRIPPED, trip, untrip, unplug_before_restore=True),
    )
    add(
        "contactor-welded-A1",
        FaultCase(
            "A1",
            FaultCode.CONTACTOR_WELDED,
            plant_knob(contactor_welded=True),
            plant_knob(contactor_welded=False),
            detect_within_s=NEXT_SUPERVISION + 0.05,
        ),
    )
    add(
        "contactor-welded-C2-ev-to-B",
        FaultCase(
            "C2",
            FaultCode.CONTACTOR_WELDED,
            ev_state("B", contactor_welded=True),
            plant_knob(contactor_welded=False),
            detect_within_s=T_MIRROR_SETTLE + NEXT_SUPERVISION + 0.05,
            not_before_s=T_MIRROR_SETTLE,
        ),
    )
    add(
        "contactor-failed-to-close-B2-ev-to-C",
        FaultCase(
            "B2",
            FaultCode.CONTACTOR_FAILED_TO_CLOSE,
            stuck_open_and_ready,
            plant_knob(contactor_stuck_open=False),
            detect_within_s=PILOT_DEBOUNCE_POWER_UP + T_MIRROR_SETTLE + NEXT_SUPERVISION + 0.05,
            not_before_s=PILOT_DEBOUNCE_POWER_UP + T_MIRROR_SETTLE,
        ),
    )
    for s in ("B2", "C2"):
        add(
            f"diode-missing-{s}",
            FaultCase(s, FaultCode.DIODE_MISSING, plant_knob(ev_diode_ok=False), plant_knob(ev_diode_ok=True)),
        )
    for s in ("A1", "B2", "C2"):
        add(f"pilot-short-{s}", FaultCase(s, FaultCode.PILOT_SHORT, ev_state("E"), ev_state(s[0])))
    for s in ("A1", "B2", "C2"):
        add(
            f"pilot-invalid-{s}",
            FaultCase(
                s,
                FaultCode.PILOT_INVALID,
                cp_volts(7.5),  # between the C (6 V) and B (9 V) windows
                cp_volts(None),
                detect_within_s=PILOT_INVALID_FAULT_AFTER + 2 * PILOT_SAMPLE_PERIOD,
                not_before_s=PILOT_INVALID_FAULT_AFTER,
            ),
        )
    for s in ("A1", "B2", "C2"):
        add(
            f"proximity-invalid-{s}",
            FaultCase(s, FaultCode.PROXIMITY_INVALID, plant_knob(pp_ohm=40.0), plant_knob(pp_ohm=220.0)),
        )
    add(
        "ventilation-not-available-B2-ev-to-D",
        FaultCase(
            "B2",
            FaultCode.VENTILATION_NOT_AVAILABLE,
            ev_state("D"),
            ev_state("B"),
            detect_within_s=PILOT_DEBOUNCE_POWER_UP + 2 * PILOT_SAMPLE_PERIOD,
        ),
    )
    for s in ("A1", "B2", "C2"):
        add(
            f"temperature-sensor-open-{s}",
            FaultCase(s, FaultCode.TEMPERATURE_SENSOR, ntc_volts(3.3), ntc_volts(None)),
        )
    for s in ("B2", "C2"):
        add(
            f"overtemperature-trip-{s}",
            FaultCase(s, FaultCode.OVERTEMPERATURE_STOP, temperature(72.0), temperature(40.0)),
        )
    add(
        "meter-comm-lost-B2",
        FaultCase(
            "B2",
            FaultCode.METER_COMM_LOST,
            meter_fault(Atm90e32Fault.GARBAGE),
            meter_fault(Atm90e32Fault.NONE),
            detect_within_s=METER_COMM_TIMEOUT + NEXT_METER_READING,
            not_before_s=METER_COMM_TIMEOUT - NEXT_METER_READING,
        ),
    )
    for s, opens_within in (("B2", NEXT_METER_READING), ("C2", T_POWER_OFF_UNDER_LOAD_C1 + NEXT_METER_READING)):
        # A full accumulator in one second is more energy than the board can deliver: the reading is
        # refused at once (no 5 s grace as for silence: the meter answers, and what it says is wrong).
        # It clears after 10 s of plausible readings (one more is refused after the restore: the
        # accumulator still holds what the forced reads left in it).
        add(
            f"meter-implausible-{s}",
            FaultCase(
                s,
                FaultCode.METER_IMPLAUSIBLE,
                energy_register(0xFFFF),
                energy_register(None),
                detect_within_s=NEXT_METER_READING,
                stop_opens_within_s=opens_within,
                recover_within_s=METER_PLAUSIBLE_RECOVERY_S + 3 * NEXT_METER_READING,
            ),
        )
    add(
        "lock-jammed-B2",
        FaultCase(
            "A1",
            FaultCode.LOCK_FAILED,
            jam_lock_and_plug,
            unjam_lock,
            detect_within_s=2.0,
            not_before_s=1.0,
            recover_within_s=2 * LOCK_RETRY_PERIOD + T_LOCK_SETTLE + 0.5,
        ),
    )
    add(
        "overcurrent-hard-C2-board-rating",
        FaultCase(
            "C2",
            FaultCode.OVERCURRENT_HARD,
            demand(36.0, obeys_offer=False),  # > 32 A x 1.1 + 0.5 A
            demand(16.0, obeys_offer=True),
            detect_within_s=NEXT_METER_READING,
        ),
    )
    add(
        "overcurrent-hard-C2-20A-cable",
        FaultCase(
            "C2",
            FaultCode.OVERCURRENT_HARD,
            demand(23.0, obeys_offer=False),  # > 20 A x 1.1 + 0.5 A: the cable's rating binds
            demand(16.0, obeys_offer=True),
            cable_a=20,
            detect_within_s=NEXT_METER_READING,
        ),
    )
    add(
        "overcurrent-soft-C2",
        FaultCase(
            "C2",
            FaultCode.OVERCURRENT_SOFT,
            demand(20.0, obeys_offer=False),  # > 16 A offer x 1.1 + 0.5 A, < the hard limit
            demand(16.0, obeys_offer=True),
            setup=ems_16_a,
            detect_within_s=SOFT_OVERCURRENT_TIME_S + 2 * NEXT_METER_READING,
            not_before_s=SOFT_OVERCURRENT_TIME_S - 0.1,
        ),
    )
    return out


async def enter(rig: Rig, state: str, cable_a: int) -> None:
    if state == "B2":
        await plug(rig, "B", cable_a=cable_a)
        await wait_state(rig, "B2", 0.5)
    elif state == "C2":
        await charge(rig, amps=16.0, cable_a=cable_a)
    await rig.advance(1.2)  # the lock has moved, the meter has been read
    assert rig.state == state, rig.describe()


@pytest.mark.parametrize("case", rows())
def test_fault(tmp_path: Path, case: FaultCase) -> None:
    reaction, recovery = spec(case.code).reaction, spec(case.code).recovery
    code = case.code.value

    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            await enter(rig, case.start, case.cable_a)
            if case.setup is not None:
                case.setup(rig)
                await rig.advance(1.0)
            t_inject = rig.now
            case.inject(rig)
            await wait_until(rig, lambda: rig.raised_at(code, t_inject) is not None, case.detect_within_s, code)
            t_raise = rig.raised_at(code, t_inject)
            assert t_raise is not None and t_raise - t_inject >= case.not_before_s - 1e-9
            await check_reaction(rig, case, reaction, t_raise)
            if case.unplug_before_restore:
                await unplug(rig)
                await rig.advance(1.0)
            await rig.advance(HOLD_S)
            assert rig.offers_between(t_raise) == [], f"offer while {code} is active: {rig.describe()}"
            assert not rig.coil()
            assert [c for _, c, raised in rig.fault_events(t_inject) if raised] == [code], "one fault, once"
            actuators = rig.journal.last_actuators(1)
            assert actuators is not None and not actuators.contactor_closed and actuators.pilot_mode != "pwm"

            t_restore = rig.now
            case.restore(rig)
            await check_recovery(rig, case, recovery, t_raise, t_restore)

    asyncio.run(scenario())


async def check_reaction(rig: Rig, case: FaultCase, reaction: Reaction, t_raise: float) -> None:
    before = t_raise - 1e-9
    coil_before = rig.coil_at(before)
    if reaction is Reaction.EMERGENCY:
        # Contactor first, pilot F, both in the step that raised the fault.
        assert not rig.coil_at(t_raise), "EMERGENCY: the coil must drop in the fault's step"
        if coil_before:
            assert rig.coil_opened_at(before) == t_raise
        assert rig.pilot_at(t_raise)[0] is PilotMode.F and rig.pin_log.first("pilot", 0.0, before) == t_raise
        assert "F" in [d["to"] for k, d in rig.events if k == "state" and d["t"] == t_raise]
        await rig.advance_to(t_raise + F_HOLD_MAX)
        t_x1 = rig.pin_log.first("pilot", 1.0, t_raise)
        held = None if t_x1 is None else t_x1 - t_raise
        assert held is not None and T_STATE_F_AFTER_FAULT - 1e-6 <= held <= F_HOLD_MAX, (t_raise, t_x1)
        await rig.advance(1.0)
        if rig.plant.ev_state != "A":
            assert not rig.locked(), "EMERGENCY: the lock lets go once the contactor is open"
    elif reaction is Reaction.STOP:
        if rig.pilot_at(before)[0] is PilotMode.PWM:
            assert rig.pilot_at(t_raise) == (PilotMode.X1, 0), "STOP: the offer goes in the fault's step"
        if coil_before:
            t_open = await wait_until(rig, lambda: not rig.coil(), case.stop_opens_within_s, "coil off after STOP")
            assert t_open > t_raise
        assert rig.pin_log.first("pilot", 0.0, before) is None, "STOP never drives F"
    else:
        raise AssertionError(f"{case.code}: DERATE faults are tested by test_thermal_derating_steps")


async def check_recovery(rig: Rig, case: FaultCase, recovery: Recovery, t_raise: float, t_restore: float) -> None:
    code = case.code.value
    plugged = rig.plant.ev_state != "A"
    await rig.advance(case.recover_within_s)
    if recovery is Recovery.AUTO:
        cleared = rig.cleared_at(code, t_raise)
        assert cleared is not None and cleared >= t_restore, "AUTO: clears once the condition is gone"
        assert all(t >= cleared for t, _ in rig.offers_between(t_raise))
        if plugged:
            await wait_until(rig, lambda: rig.pilot()[0] is PilotMode.PWM, REREAD_AFTER_F, "offer again")
            if rig.plant.ev_state == "C":
                await wait_until(rig, rig.coil, T_CLOSE_MAX, "power again")
    elif recovery is Recovery.UNPLUG:
        if plugged:
            assert rig.cleared_at(code, t_raise) is None, "UNPLUG: not cleared while the EV stays"
            assert rig.offers_between(t_raise) == []
            t_unplug = await unplug(rig)
            await wait_state(rig, "A1", REREAD_AFTER_F)
            await rig.advance(0.2)
            cleared = rig.cleared_at(code, t_raise)
            assert cleared is not None and cleared >= t_unplug, "UNPLUG: cleared by the unplug"
            assert rig.sessions()[0].stop_reason == "EVDisconnected"
        else:
            # No EV there (none all along, or it left before the condition went): nothing to protect.
            cleared = rig.cleared_at(code, t_raise)
            assert cleared is not None and cleared >= t_restore, "UNPLUG with no EV: cleared when the condition goes"
    else:  # SERVICE
        if plugged:
            await unplug(rig)
            await rig.advance(1.0)
        assert rig.cleared_at(code, t_raise) is None, "SERVICE: neither the condition going nor an unplug clears"
    # A (new) EV: offered exactly when the rule allows.
    if rig.plant.ev_state == "A":
        t_plug = await plug(rig, "B")
        await rig.advance(1.0)
        if recovery is Recovery.SERVICE:
            assert rig.state == "B1" and rig.offers_between(t_raise) == [], "SERVICE: no offer before the clear"
            t_clear = rig.now
            assert rig.connector.service_clear(case.code)
            await wait_until(rig, lambda: rig.pilot()[0] is PilotMode.PWM, NEXT_SUPERVISION, "offer after clear")
            assert rig.cleared_at(code, t_clear) is not None
        else:
            await wait_until(rig, lambda: rig.pilot()[0] is PilotMode.PWM, NEXT_SUPERVISION, "offer to the new EV")
            assert all(t >= t_plug for t, _ in rig.offers_between(t_raise))
    assert case.code not in rig.connector.supervisor.active


# ------------------------------------------------------------------------------------------ boot faults
def test_rcd_self_test_failure_at_boot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RCD self-test fails at boot: EMERGENCY (F, then X1), no offer; the catalogue's AUTO recovery is a
    later self-test that passes (retried every RCD_SELFTEST_RETRY_PERIOD while no EV is connected, the
    period shortened here), so neither repairing the module nor an unplug clears it by itself."""
    monkeypatch.setattr(firmware.connector, "RCD_SELFTEST_RETRY_PERIOD", RETRY_PERIOD_S)

    def broken_winding(rig: Rig) -> None:
        rig.rcd_wiring.test_winding_broken = True

    async def scenario() -> None:
        async with charger(tmp_path, setup=broken_winding) as rig:
            t_raise = rig.raised_at(FaultCode.RCD_SELFTEST_FAILED.value)
            assert t_raise is not None and rig.state == "F" and not rig.coil()
            t_f = rig.pin_log.first("pilot", 0.0, t_raise)
            assert t_f is not None
            await rig.advance(1.0)
            t_x1 = rig.pin_log.first("pilot", 1.0, t_f)
            assert t_x1 is not None and T_STATE_F_AFTER_FAULT <= t_x1 - t_f <= F_HOLD_MAX
            t_plug = await plug(rig, "B")
            await rig.advance(1.5)
            assert rig.state == "B1" and rig.offers_between(t_raise) == []
            rig.rcd_wiring.test_winding_broken = False
            await unplug(rig)
            await rig.advance(0.5)
            await plug(rig, "B")
            await rig.advance(1.5)
            assert rig.offers_between(t_plug) == [] and "rcd_selftest_failed" in rig.connector.status().faults
            assert rig.cleared_at("rcd_selftest_failed") is None
            # No retry while an EV is connected; with the EV gone the next retry passes.
            await rig.advance(RETRY_PERIOD_S)
            assert rig.cleared_at("rcd_selftest_failed") is None
            t_unplug = await unplug(rig)
            await wait_until(rig, lambda: rig.cleared_at("rcd_selftest_failed") is not None, 2.0, "retry passes")
            assert rig.offers_between(t_raise) == []
            tests = rig.pin_log.changes("rcd_test", t_unplug)
            assert tests and tests[0].value == 1.0, "the clear comes from a self-test run after the unplug"
            t_plug = await plug(rig, "B")
            await wait_until(rig, lambda: rig.pilot() == (PilotMode.PWM, 533), 0.5, "offer after the retry")

    asyncio.run(scenario())


def test_welded_contactor_at_boot_needs_service(tmp_path: Path) -> None:
    """The mirror reads closed at boot with no session running (journal reconciliation): EMERGENCY,
    SERVICE recovery."""

    def welded(rig: Rig) -> None:
        rig.plant.contactor_welded = True

    async def scenario() -> None:
        async with charger(tmp_path, setup=welded) as rig:
            t_raise = rig.raised_at(FaultCode.CONTACTOR_WELDED.value)
            assert t_raise is not None and rig.pilot_at(t_raise)[0] is PilotMode.F and not rig.coil()
            rig.plant.contactor_welded = False
            t_plug = await plug(rig, "B")
            await rig.advance(1.5)
            await unplug(rig)
            await rig.advance(0.5)
            await plug(rig, "B")
            await rig.advance(1.5)
            assert rig.state == "B1" and rig.offers_between(t_plug) == []
            assert rig.connector.service_clear(FaultCode.CONTACTOR_WELDED)
            await wait_until(rig, lambda: rig.pilot() == (PilotMode.PWM, 533), NEXT_SUPERVISION, "offer")

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------------ over-current timing
@pytest.mark.parametrize(
    ("over_s", "trips"),
    [
        pytest.param(6.9, False, id="6.9s-above-soft-limit-no-trip"),
        pytest.param(None, True, id="sustained-trips-at-7s"),
    ],
)
def test_soft_overcurrent_timing(tmp_path: Path, over_s: float | None, trips: bool) -> None:
    """Above offer x 1.1 + 0.5 A for 7 s trips (EMERGENCY), 6.9 s does not. The current is judged at
    the meter readings (every METER_PERIOD), so the trip comes at most one reading after 7 s.

    Regression: the meter readings once slipped to a 1.1 s grid (``now + 1.0`` against 100 ms ticks),
    and the 7th reading missed the 7 s mark by float rounding, so the trip came after 8.7-9 s.
    """

    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            rig.connector.set_limit(Limit("ems", 16.0))
            await charge(rig, amps=16.0)
            await rig.advance(1.5)
            rig.load.obeys_offer = False
            readings = len(rig.meter_events())
            await wait_until(rig, lambda: len(rig.meter_events()) > readings, NEXT_METER_READING, "a reading")
            t_on = rig.now  # just after a meter reading: the worst case for detection
            rig.load.demand_a = 20.0  # 15.96 A offered: soft limit 18.06 A, hard limit 35.7 A
            if over_s is not None:
                await rig.advance(over_s)
                rig.load.demand_a = 15.0
                await rig.advance(3.0)
                assert rig.raised_at("overcurrent_soft") is None and rig.coil() and rig.state == "C2"
                return
            await wait_until(rig, lambda: rig.raised_at("overcurrent_soft") is not None, 10.0, "soft trip")
            t_raise = rig.raised_at("overcurrent_soft")
            assert t_raise is not None
            assert t_raise - t_on >= SOFT_OVERCURRENT_TIME_S - 0.1, "tripped before 6.9 s"
            assert rig.coil_opened_at(t_on) == t_raise and rig.pilot_at(t_raise)[0] is PilotMode.F
            assert t_raise - t_on <= SOFT_OVERCURRENT_TIME_S + NEXT_METER_READING, (
                f"tripped {t_raise - t_on:.2f} s after the over-current began"
            )

    asyncio.run(scenario())


def test_hard_overcurrent_trips_at_the_first_reading(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            await charge(rig, amps=16.0)
            await rig.advance(1.5)
            rig.load.obeys_offer = False
            rig.load.demand_a = 35.5  # just under 32 A x 1.1 + 0.5 A: soft territory, not hard
            await rig.advance(3.0)
            assert rig.raised_at("overcurrent_hard") is None and rig.coil()
            t_on = rig.now
            rig.load.demand_a = 36.0
            await wait_until(rig, lambda: rig.raised_at("overcurrent_hard") is not None, NEXT_METER_READING, "trip")
            first_reading = next(m for m in rig.meter_events(t_on) if m["power_w"] > 3 * 230 * 35.9)
            assert rig.raised_at("overcurrent_hard") == first_reading["t"] == rig.coil_opened_at(t_on)

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------------ meter loss timing
def test_meter_loss_while_charging_stops_after_5_s_and_opens_under_load_after_6_s(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            await charge(rig, amps=16.0)
            await rig.advance(1.5)
            readings = len(rig.meter_events())
            await wait_until(rig, lambda: len(rig.meter_events()) > readings, NEXT_METER_READING, "a reading")
            last_good = rig.meter_events()[-1]["t"]
            rig.meter_chip.fault = Atm90e32Fault.GARBAGE
            await wait_until(rig, lambda: rig.raised_at("meter_comm_lost") is not None, 7.0, "meter loss")
            t_raise = rig.raised_at("meter_comm_lost")
            assert t_raise is not None
            assert METER_COMM_TIMEOUT <= t_raise - last_good <= METER_COMM_TIMEOUT + NEXT_METER_READING
            assert rig.pilot_at(t_raise) == (PilotMode.X1, 0) and rig.coil()
            # The current cannot be measured: the contactor waits the whole window, then opens.
            t_open = await wait_until(rig, lambda: not rig.coil(), T_POWER_OFF_UNDER_LOAD_C1 + 0.1, "coil off")
            assert t_open - t_raise == pytest.approx(T_POWER_OFF_UNDER_LOAD_C1, abs=NEXT_SAMPLE)
            t_restore = rig.now
            rig.meter_chip.fault = Atm90e32Fault.NONE
            await wait_until(rig, rig.coil, NEXT_METER_READING + T_CLOSE_MAX, "power again")
            cleared = rig.cleared_at("meter_comm_lost")
            assert cleared is not None and cleared > t_restore and rig.state == "C2"

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------------ thermal derating
def test_thermal_derating_steps(tmp_path: Path) -> None:
    """65 °C: half the rating; the middle step (68 °C): a quarter; 71 °C: stop. Reductions at once,
    each step left only 3 °C below its threshold, increases no faster than every 5 s."""
    half, quarter, full = (duty_for_current(amps) or 0 for amps in (16.0, 8.0, 32.0))
    assert (half, quarter, full) == (266, 133, 533)

    async def step(rig: Rig, celsius: float) -> float:
        rig.plant.temperatures_c["socket"] = celsius
        t = rig.now
        await rig.advance(NEXT_SUPERVISION)
        return t

    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            await charge(rig, amps=32.0)
            await rig.advance(1.0)
            assert rig.pilot() == (PilotMode.PWM, full)
            t = await step(rig, 65.0)
            assert rig.pilot() == (PilotMode.PWM, half) and rig.coil(), "DERATE only lowers the duty"
            assert rig.raised_at("overtemperature_derate", t) is not None
            assert "set by thermal" in rig.connector.why()
            await step(rig, 68.0)
            assert rig.pilot() == (PilotMode.PWM, quarter) and rig.coil()
            t = await step(rig, 71.0)
            assert rig.pilot() == (PilotMode.X1, 0), "the trip withdraws the offer (STOP)"
            assert rig.raised_at("overtemperature_stop", t) is not None
            await wait_until(rig, lambda: not rig.coil(), NEXT_METER_READING, "coil off once the EV stops")
            t = await step(rig, 69.0)  # within 3 °C of the trip: still stopped
            await rig.advance(1.0)
            assert rig.offers_between(t) == [] and rig.cleared_at("overtemperature_stop", t) is None
            t = await step(rig, 67.5)  # 3.5 °C below the trip: charging resumes, derated
            await rig.advance(0.2)
            assert rig.cleared_at("overtemperature_stop", t) is not None
            assert rig.pilot()[0] is PilotMode.PWM and rig.pilot()[1] in (quarter, half)
            await wait_until(rig, rig.coil, T_CLOSE_MAX, "power again")
            t_last_change = rig.pilot_changes()[-1][0]
            t = await step(rig, 63.0)  # within 3 °C of the half step: still half at most
            await rig.advance(max(0.0, t_last_change + T_PWM_MIN_UPDATE_INTERVAL - rig.now) + 0.2)
            assert rig.pilot()[1] <= half
            t = await step(rig, 61.5)  # 3.5 °C below the first step: full current again
            await wait_until(rig, lambda: rig.pilot()[1] == full, T_PWM_MIN_UPDATE_INTERVAL + 0.2, "full again")
            assert rig.cleared_at("overtemperature_derate", t) is not None
            # Every increase of a running offer came at least 5 s after the previous duty change (a fresh
            # offer after X1 starts at its target).
            changes = rig.pilot_changes()
            for (t0, m0, d0), (t1, m1, d1) in itertools.pairwise(changes):
                if m0 is PilotMode.PWM and m1 is PilotMode.PWM and d1 > d0:
                    assert t1 - t0 >= T_PWM_MIN_UPDATE_INTERVAL - 1e-6, (changes, t0, t1)

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------------ lock
def test_jammed_lock_never_lets_the_contactor_close_on_an_unlocked_connector(tmp_path: Path) -> None:
    """The lock is jammed open and the EV asks for power 0.4 s after plugging in.

    The contactor is interlocked on the lock's feedback (machine input ``lock_confirmed``): it never
    closes while the feedback reads unlocked, and LOCK_FAILED is raised after T_LOCK_SETTLE.
    """

    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            rig.lock_wiring.jammed = True
            rig.load.demand_a = 16.0
            t_plug = await plug(rig, "B")
            await rig.advance(0.4)
            rig.plant.ev_state = "C"
            await rig.advance(3.0)
            assert rig.raised_at("lock_failed") is not None
            assert rig.pin_log.first("lock_feedback", 1.0, t_plug) is None  # never locked
            assert rig.coil_changes(t_plug) == [], "the contactor closed on an unlocked connector"

    asyncio.run(scenario())


def test_lock_that_fails_to_unlock_is_a_fault(tmp_path: Path) -> None:
    """The lock jams while locked; after charging the EV is unplugged and the unlock does not move.

    A failed unlock is a fault as much as a failed lock: the cable would stay locked in the socket
    while the connector shows itself available.
    """

    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            await charge(rig, amps=16.0)
            await rig.advance(1.0)
            rig.lock_wiring.jammed = True
            rig.plant.ev_state = "B"
            await rig.advance(0.5)
            t_unplug = await unplug(rig)
            await rig.advance(3.0)
            assert rig.pin_log.first("unlock", 1.0, t_unplug) is not None  # the unlock was tried
            assert rig.locked()  # and the actuator did not move
            assert rig.raised_at("lock_failed", t_unplug) is not None

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------------ meter plausibility
def test_an_implausible_reading_marks_the_session_and_its_bill(tmp_path: Path) -> None:
    """Charging, the meter's energy register turns implausible for a moment: the session is marked
    with the first meter error, the refused energy is never added, and the billing record at the end
    carries the mark."""

    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            await charge(rig, amps=16.0)
            await rig.advance(3.0)
            before = rig.connector.last_meter
            assert before is not None
            energy_register(0xFFFF)(rig)
            await wait_until(rig, lambda: rig.raised_at("meter_implausible") is not None, NEXT_METER_READING, "fault")
            assert rig.connector.last_meter == before, "the refused reading is not used"
            energy_register(None)(rig)
            await rig.advance(METER_PLAUSIBLE_RECOVERY_S + 3 * NEXT_METER_READING)
            assert FaultCode.METER_IMPLAUSIBLE not in rig.connector.supervisor.active
            await unplug(rig)
            await rig.advance(1.0)
            [session] = rig.sessions()
            assert session.meter_error is not None and "more than" in session.meter_error
            assert session.billing is not None and session.billing.meter_error == session.meter_error
            # Counted energy stays what the plant delivered in the accepted intervals (never 204 Wh per s).
            assert session.import_wh < 16.0 * 3 * 230.0 * rig.now / 3600.0

    asyncio.run(scenario())


def test_a_meter_that_hangs_does_not_hold_up_supervision(tmp_path: Path) -> None:
    """A Modbus meter takes its whole timeout to fail; meanwhile the 100 ms supervision still runs: an
    over-temperature during a 3 s hanging read stops the offer within one supervision period."""

    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            await charge(rig, amps=16.0)
            meter = rig.connector.meter
            assert meter is not None
            inner = meter.inner
            original = inner.read
            hanging = 0

            async def hang() -> Any:
                nonlocal hanging
                hanging += 1
                await rig.sim.clock.sleep(3.0)
                return await original()

            inner.read = hang  # type: ignore[method-assign]
            await rig.advance(NEXT_METER_READING)
            assert hanging == 1, "a reading is in flight"
            t_hot = rig.now
            temperature(72.0)(rig)
            await wait_until(rig, lambda: rig.raised_at("overtemperature_stop") is not None, NEXT_SUPERVISION, "trip")
            assert rig.now - t_hot <= NEXT_SUPERVISION
            await rig.advance(3.0)
            assert hanging <= 2, "one read at a time: ticks during a hanging read are skipped, not queued"

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------------ unauthorised discharge
@pytest.mark.parametrize(
    ("permitted", "export_s", "trips"),
    [
        pytest.param(False, None, True, id="sustained-export-without-authorisation-trips"),
        pytest.param(False, 4.0, False, id="4s-export-after-withdrawal-is-tolerated"),
        pytest.param(True, None, False, id="authorised-export-is-fine"),
    ],
)
def test_unauthorised_discharge(tmp_path: Path, permitted: bool, export_s: float | None, trips: bool) -> None:
    """R152: on a gated connector (J3072) an EV that exports without authorisation for 5 s is a fault:
    the contactor opens under EMERGENCY and only an unplug clears it. A PEV still exporting for a few
    seconds after its authorisation ended (it learns at its next poll) is not."""

    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            allowed = [permitted]
            rig.connector.discharge_permitted = lambda: allowed[0]
            await charge(rig, amps=16.0)
            await rig.advance(1.5)
            t_on = rig.now
            rig.load.demand_a = -10.0  # the PEV's inverter exports 10 A
            if export_s is not None:
                await rig.advance(export_s)
                rig.load.demand_a = 8.0
                await rig.advance(6.0)
            else:
                await rig.advance(UnauthorisedDischargeCheck.TIME_S + 2 * NEXT_METER_READING)
            raised = rig.raised_at("unauthorised_discharge")
            if not trips:
                assert raised is None and rig.coil()
                return
            assert raised is not None and rig.coil_opened_at(t_on) == raised
            assert (
                UnauthorisedDischargeCheck.TIME_S
                <= raised - t_on
                <= UnauthorisedDischargeCheck.TIME_S + 2 * NEXT_METER_READING
            )
            assert spec(FaultCode.UNAUTHORISED_DISCHARGE).recovery is Recovery.UNPLUG

    asyncio.run(scenario())
