"""IEC 61851-1 state sequences of the connector runtime, run on the simulated sim-ac board in virtual time
and checked where the hardware sees them: the pilot PWM pin (mode and duty), the contactor coil and the
main contacts, the lock actuator, and the session journal.

Sequences: normal charge (cable codings, free charging or authorisation), an EV that plugs in already
ready, unplug in every state, pause/resume with the 6 s power-off-under-load window, limits (EMS, the 5 s
rate limit on increases, below 6 A, expiry and fallback), authorisation, the legacy wake-up, and the
journal across restarts.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from firmware.connector import CHECKPOINT_PERIOD, METER_PERIOD, SUPERVISION_PERIOD, ConnectorSettings
from firmware.iec61851.pilot import duty_for_current
from firmware.iec61851.timing import (
    PILOT_DEBOUNCE_POWER_UP,
    PILOT_SAMPLE_PERIOD,
    T_CLOSE_MAX,
    T_LEGACY_WAKEUP,
    T_OPEN_MAX,
    T_POWER_OFF_UNDER_LOAD_C1,
    T_PWM_MIN_UPDATE_INTERVAL,
    T_STATE_F_AFTER_FAULT,
    T_STAY_X1_AFTER_STEP_EF,
    T_STEP_EF,
)
from firmware.limits import Limit
from hal.types import PilotMode
from tests.firmware.connector_rig import (
    Rig,
    board_variant,
    charge,
    charger,
    plug,
    unplug,
    wait_state,
    wait_until,
)

#: A change the pilot loop makes "at once" lands on the next pilot sample; one the supervision loop
#: makes (API calls, limits, temperatures) on its next 100 ms step.
NEXT_SAMPLE = PILOT_SAMPLE_PERIOD + 1e-6
NEXT_SUPERVISION = SUPERVISION_PERIOD + PILOT_SAMPLE_PERIOD + 1e-6
#: The meter is read once a second on a supervision step: the next reading comes within this.
NEXT_METER_READING = METER_PERIOD + SUPERVISION_PERIOD + 2 * PILOT_SAMPLE_PERIOD


# ---------------------------------------------------------------------------------------- normal charge
@dataclass(frozen=True)
class ChargeRow:
    cable_a: int
    free_charging: bool
    duty_permille: int  # the offer IEC 61851-1 Table A.7 gives for min(board 32 A, cable)


NORMAL_CHARGE = [
    pytest.param(ChargeRow(32, True, 533), id="cable-32A-free-charging"),
    pytest.param(ChargeRow(20, False, 333), id="cable-20A-authorised"),
    pytest.param(ChargeRow(13, True, 216), id="cable-13A-free-charging"),
]


@pytest.mark.parametrize("row", NORMAL_CHARGE)
def test_normal_charge(tmp_path: Path, row: ChargeRow) -> None:
    async def scenario() -> None:
        async with charger(tmp_path, free_charging=row.free_charging) as rig:
            assert rig.state == "A1" and rig.pilot() == (PilotMode.X1, 0) and not rig.coil()
            t_plug = await plug(rig, "B", cable_a=row.cable_a)
            if not row.free_charging:
                await rig.advance(1.0)
                assert rig.state == "B1" and rig.offers_between(t_plug) == [], rig.describe()
                assert rig.session_events() == []
                rig.connector.authorize("TAG-20A")
            t_ready = rig.now
            await wait_state(rig, "B2", NEXT_SUPERVISION + 2 * PILOT_SAMPLE_PERIOD)
            await rig.advance(2 * SUPERVISION_PERIOD)  # the cable coding has been read
            assert rig.pilot() == (PilotMode.PWM, row.duty_permille)
            assert rig.connector.status().offered_a == pytest.approx(row.duty_permille * 0.06)
            await wait_until(rig, rig.locked, 1.0, "connector locked in B2")
            [started] = rig.session_events()
            assert started["action"] == "started" and started["t"] >= t_ready
            assert started["id_tag"] == (None if row.free_charging else "TAG-20A")

            # EV ready: B2 -> C2; the contacts close within T_CLOSE_MAX, after the slow debounce.
            rig.load.demand_a = float(row.cable_a)
            t_c = rig.now
            rig.plant.ev_state = "C"
            t_closed = await wait_until(rig, rig.coil, T_CLOSE_MAX, "contactor coil on")
            assert PILOT_DEBOUNCE_POWER_UP - 1e-9 <= t_closed - t_c <= T_CLOSE_MAX
            assert rig.pilot_at(t_closed) == (PilotMode.PWM, row.duty_permille)  # the offer was on first
            await wait_until(rig, rig.contacts, 0.1, "main contacts closed")
            await rig.advance(10.0)
            status = rig.connector.status()
            assert status.state == "C2" and status.contactor_closed and status.locked
            assert status.meter is not None and status.meter["power_w"] == pytest.approx(
                3 * 230.0 * row.cable_a, rel=0.01
            )
            open_session = rig.journal.open_session(1)
            assert open_session is not None and open_session.session_id == started["id"]
            assert open_session.last_meter_wh > open_session.meter_start_wh, "a checkpoint with energy"
            assert status.energy_wh is not None and status.energy_wh > 0

            # EV stops: C2 -> B2; the coil drops within T_OPEN_MAX of the plant change.
            t_b = rig.now
            rig.plant.ev_state = "B"
            t_open = await wait_until(rig, lambda: not rig.coil(), T_OPEN_MAX, "coil off after C->B")
            assert t_open - t_b <= T_OPEN_MAX
            assert rig.state == "B2" and rig.pilot() == (PilotMode.PWM, row.duty_permille)
            await rig.advance(NEXT_METER_READING)  # the meter has seen the EV stop drawing

            # Unplug: the session ends with EVDisconnected and the plant's energy.
            t_unplug = await unplug(rig)
            await wait_state(rig, "A1", T_OPEN_MAX)
            await wait_until(rig, lambda: not rig.locked(), 1.0, "lock released")
            assert rig.pilot() == (PilotMode.X1, 0)
            stopped = rig.session_events(t_unplug)
            assert [(s["action"], s["id"], s["reason"]) for s in stopped] == [
                ("stopped", started["id"], "EVDisconnected")
            ]
            [record] = rig.sessions()
            assert record.stop_reason == "EVDisconnected" and not record.is_open
            assert record.energy_wh == pytest.approx(rig.load.energy_wh, rel=0.01)
            assert rig.load.energy_wh > 0.95 * 3 * 230.0 * row.cable_a * 10.0 / 3600.0
            actuators = rig.journal.last_actuators(1)
            assert actuators is not None and not actuators.contactor_closed and actuators.pilot_mode == "x1"
            # The unplug is seen either by the pilot first (B2 -> A2 -> A1) or by the proximity pilot, whose
        # "no cable" withdraws the offer a few ms earlier (B2 -> B1 -> A1): both are correct.
        assert rig.trail() in (["B1", "B2", "C2", "B2", "A2", "A1"], ["B1", "B2", "C2", "B2", "B1", "A1"])

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("before", "cable_a"),
    [
        pytest.param(None, 13, id="first-plug-13A-cable"),
        pytest.param(None, 20, id="first-plug-20A-cable"),
        pytest.param(32, 13, id="13A-cable-after-a-32A-cable"),
    ],
)
def test_first_offer_respects_the_cable_rating(tmp_path: Path, before: int | None, cable_a: int) -> None:
    """The PWM duty on the pin must never offer more than the plugged cable is coded for.

    The cable limit is 0 A until the proximity pilot has been read (default deny), the PP is read in
    the pilot step that sees the EV arrive, and "no cable" sets the cable limit to 0 A.
    """

    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            if before is not None:
                await plug(rig, "B", cable_a=before)
                await wait_state(rig, "B2", 1.0)
                await rig.advance(0.5)
                await unplug(rig)
                await wait_state(rig, "A1", 0.5)
                await rig.advance(1.0)
            t_plug = await plug(rig, "B", cable_a=cable_a)
            await rig.advance(1.0)
            allowed = duty_for_current(float(cable_a))
            assert rig.pilot() == (PilotMode.PWM, allowed)
            assert [d for _, d in rig.offers_between(t_plug)] == [allowed]

    asyncio.run(scenario())


def test_ev_plugging_in_ready_gets_power_only_on_a_locked_connector(tmp_path: Path) -> None:
    """An EV that shows C at once (A -> C): the connector offers, then closes within T_CLOSE_MAX, and
    the lock (motor pulse, 0.1 s travel) has reached its end position before the coil is energised.

    The contacts close only once the lock feedback reports locked (IEC 61851-1 D.6.5).
    """

    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            rig.load.demand_a = 16.0
            t_plug = await plug(rig, "C")
            t_closed = await wait_until(rig, rig.coil, T_CLOSE_MAX, "coil on")
            assert t_closed - t_plug <= T_CLOSE_MAX
            assert rig.trail() == ["C1", "C2"]
            await rig.advance(1.0)
            assert rig.locked()
            locked_at = rig.pin_log.first("lock_feedback", 1.0, t_plug)
            assert locked_at is not None and locked_at <= t_closed, (
                f"coil on at {t_closed:.3f}, lock feedback locked at {locked_at}"
            )

    asyncio.run(scenario())


# ---------------------------------------------------------------------------------------- unplug
async def _reach_b1(rig: Rig) -> None:
    await plug(rig, "B")
    await wait_state(rig, "B1", 0.5)
    await rig.advance(0.5)


async def _reach_b2(rig: Rig) -> None:
    await plug(rig, "B")
    await wait_state(rig, "B2", 0.5)
    await rig.advance(0.5)


async def _reach_c1_under_load(rig: Rig) -> None:
    await charge(rig, amps=16.0)
    await rig.advance(1.5)
    rig.load.obeys_offer = False  # keeps drawing after the offer goes: the 6 s window holds the coil
    rig.connector.pause()
    await wait_state(rig, "C1", NEXT_SUPERVISION)
    await rig.advance(1.0)
    assert rig.coil(), "the coil is held while the EV still draws current (sequence 10.2)"


async def _reach_c2(rig: Rig) -> None:
    await charge(rig, amps=16.0)
    await rig.advance(1.5)


async def _reach_d2(rig: Rig) -> None:
    await plug(rig, "B")
    await wait_state(rig, "B2", 0.5)
    rig.load.demand_a = 16.0
    rig.plant.ev_state = "D"
    await wait_state(rig, "D2", 1.0)
    await wait_until(rig, rig.coil, T_CLOSE_MAX, "coil on in D2 (the site ventilates)")
    await rig.advance(1.0)


async def _reach_e(rig: Rig) -> None:
    await _reach_b2(rig)
    rig.plant.ev_state = "E"
    await wait_state(rig, "E", 1.0)
    await rig.advance(0.5)


async def _reach_f(rig: Rig) -> None:
    await _reach_c2(rig)
    rig.plant.residual_current_ma = 30.0
    await wait_state(rig, "F", 0.5)
    rig.plant.residual_current_ma = 0.0


async def _reach_wakeup(rig: Rig) -> None:
    await plug(rig, "B")
    await wait_state(rig, "WAKEUP", T_LEGACY_WAKEUP + 1.0)
    await rig.advance(1.0)


@dataclass(frozen=True)
class UnplugRow:
    state: str
    reach: Callable[[Rig], Awaitable[None]] | None
    #: How long the connector may need to see A: it cannot while it drives -12 V itself (F, the
    #: wake-up pulse): with the EV's diode blocking, A and B both read -12 V.
    detect_within_s: float = 2 * PILOT_SAMPLE_PERIOD + NEXT_SAMPLE
    free_charging: bool = True
    ventilation: bool = False
    session: bool = True


UNPLUG = [
    pytest.param(UnplugRow("A1", None, session=False), id="A1-no-op"),
    pytest.param(UnplugRow("B1", _reach_b1, free_charging=False, session=False), id="B1"),
    pytest.param(UnplugRow("B2", _reach_b2), id="B2"),
    pytest.param(UnplugRow("C1", _reach_c1_under_load), id="C1-under-load"),
    pytest.param(UnplugRow("C2", _reach_c2), id="C2"),
    pytest.param(UnplugRow("D2", _reach_d2, ventilation=True), id="D2-ventilated"),
    pytest.param(UnplugRow("E", _reach_e), id="E"),
    pytest.param(
        UnplugRow("F", _reach_f, detect_within_s=T_STATE_F_AFTER_FAULT + PILOT_DEBOUNCE_POWER_UP + 0.05), id="F"
    ),
    pytest.param(UnplugRow("WAKEUP", _reach_wakeup, detect_within_s=T_STEP_EF + 0.1), id="WAKEUP"),
]


@pytest.mark.parametrize("row", UNPLUG)
def test_unplug_in_each_state(tmp_path: Path, row: UnplugRow) -> None:
    board = board_variant(tmp_path, "sim-ac", safety={"ventilation_available": True}) if row.ventilation else "sim-ac"

    async def scenario() -> None:
        async with charger(tmp_path, board=board, free_charging=row.free_charging) as rig:
            if row.reach is not None:
                await row.reach(rig)
            assert rig.state == row.state, rig.describe()
            coil_was_on = rig.coil()
            events_before = len(rig.events)
            t_unplug = await unplug(rig)
            if row.reach is None:  # A1: nothing is plugged, nothing may happen
                await rig.advance(1.0)
                assert rig.events[events_before:] == [e for e in rig.events[events_before:] if e[0] == "meter"]
                assert rig.pin_log.changes("pilot", t_unplug) == [] and rig.pin_log.changes("coil", t_unplug) == []
                assert rig.state == "A1" and rig.sessions() == []
                return
            if coil_was_on:
                t_open = await wait_until(rig, lambda: not rig.coil(), T_OPEN_MAX, "coil off after unplug")
                assert t_open - t_unplug <= T_OPEN_MAX
            t_a1 = await wait_state(rig, "A1", row.detect_within_s)
            await wait_until(rig, lambda: not rig.contacts(), T_OPEN_MAX, "main contacts open")
            assert rig.pilot() == (PilotMode.X1, 0)
            await wait_until(rig, lambda: not rig.locked(), 1.0, "lock released")
            await rig.advance(1.0)
            assert rig.pilot() == (PilotMode.X1, 0) and rig.offers_between(t_a1) == [] and not rig.coil()
            assert rig.journal.open_session(1) is None
            if row.session:
                [record] = rig.sessions()
                assert record.stop_reason == "EVDisconnected"
                assert [s["reason"] for s in rig.session_events(t_unplug)] == ["EVDisconnected"]
            else:
                assert rig.sessions() == []

    asyncio.run(scenario())


# ---------------------------------------------------------------------------------------- pause / resume
@pytest.mark.parametrize(
    "ev",
    [
        pytest.param("keeps-drawing", id="ev-keeps-drawing-opens-after-6s"),
        pytest.param("drops-below-1A", id="ev-drops-below-1A-after-2s"),
        pytest.param("follows-the-pilot", id="ev-stops-with-the-offer"),
    ],
)
def test_pause_and_resume(tmp_path: Path, ev: str) -> None:
    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            await charge(rig, amps=16.0)
            await rig.advance(1.5)
            [started] = rig.session_events()
            rig.load.obeys_offer = ev == "follows-the-pilot"
            t_pause = rig.now
            rig.connector.pause()
            t_x1 = await wait_until(rig, lambda: rig.pilot()[0] is PilotMode.X1, NEXT_SUPERVISION, "PWM withdrawn")
            assert rig.state == "C1" and rig.trail(t_pause) == ["C1"]
            assert rig.coil_at(t_x1), "the contacts must not open in the step that withdraws the offer under load"
            if ev == "keeps-drawing":
                await rig.advance_to(t_x1 + T_POWER_OFF_UNDER_LOAD_C1 - 0.1)
                assert rig.coil(), "opened before the 6 s power-off-under-load window ended"
                t_open = await wait_until(rig, lambda: not rig.coil(), 0.2, "coil off after 6 s under load")
                assert t_open - t_x1 == pytest.approx(T_POWER_OFF_UNDER_LOAD_C1, abs=NEXT_SAMPLE)
            elif ev == "drops-below-1A":
                await rig.advance(2.0)
                assert rig.coil()
                t_drop = rig.now
                rig.load.demand_a = 0.5
                t_open = await wait_until(rig, lambda: not rig.coil(), NEXT_METER_READING, "coil off below 1 A")
                assert t_open > t_drop
            else:
                t_open = await wait_until(rig, lambda: not rig.coil(), NEXT_METER_READING, "coil off at 0 A")
            assert rig.state == "C1" and rig.connector.why().endswith("not offering because: paused")

            await rig.advance(1.0)
            rig.load.obeys_offer, rig.load.demand_a = True, 16.0
            t_resume = rig.now
            rig.connector.resume()
            t_pwm = await wait_until(rig, lambda: rig.pilot()[0] is PilotMode.PWM, NEXT_SUPERVISION, "offer again")
            assert rig.pilot() == (PilotMode.PWM, 533)
            t_closed = await wait_until(rig, rig.coil, T_CLOSE_MAX, "coil on after resume")
            assert t_closed >= t_pwm and rig.state == "C2" and rig.trail(t_resume) == ["C2"]
            assert [s["action"] for s in rig.session_events()] == ["started"]  # one session throughout
            record = rig.journal.open_session(1)
            assert record is not None and record.session_id == started["id"]

    asyncio.run(scenario())


# ---------------------------------------------------------------------------------------- limits
def test_ems_limit_lowers_at_once_and_raises_only_after_5_s(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            await charge(rig, amps=32.0)
            await rig.advance(1.0)
            assert rig.pilot() == (PilotMode.PWM, 533)
            t_set = rig.now
            rig.connector.set_limit(Limit("ems", 16.0, detail="site load"))
            t_down = await wait_until(rig, lambda: rig.pilot()[1] == 266, NEXT_SUPERVISION, "duty 26.6 %")
            assert "16 A, set by ems" in rig.connector.why() and t_down - t_set <= NEXT_SUPERVISION
            await rig.advance(2.0)
            rig.connector.set_limit(Limit("ems", 32.0))
            await rig.advance_to(t_down + T_PWM_MIN_UPDATE_INTERVAL - 0.1)
            assert rig.pilot() == (PilotMode.PWM, 266), "an increase within 5 s of the last change"
            t_up = await wait_until(rig, lambda: rig.pilot()[1] == 533, 0.2, "duty back to 53.3 %")
            assert t_up - t_down == pytest.approx(T_PWM_MIN_UPDATE_INTERVAL, abs=NEXT_SAMPLE)
            assert rig.coil() and rig.state == "C2"
            assert [d for _, d in rig.offers_between(t_set)] == [266, 533]

    asyncio.run(scenario())


def test_limit_below_6_a_pauses_and_a_new_offer_is_not_rate_limited(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            await charge(rig, amps=16.0)
            await rig.advance(1.0)
            t_set = rig.now
            rig.connector.set_limit(Limit("ems", 5.0))
            await wait_until(rig, lambda: rig.pilot()[0] is PilotMode.X1, NEXT_SUPERVISION, "offer withdrawn")
            assert rig.state == "C1"
            assert "limit below 6 A" in rig.connector.why()
            await wait_until(rig, lambda: not rig.coil(), NEXT_METER_READING, "coil off once the EV stops")
            await rig.advance(1.0)
            t_again = rig.now
            rig.connector.set_limit(Limit("ems", 10.0))
            await wait_until(rig, lambda: rig.pilot() == (PilotMode.PWM, 166), NEXT_SUPERVISION, "offer of 10 A")
            await wait_until(rig, rig.coil, T_CLOSE_MAX, "coil on again")
            assert rig.trail(t_set) == ["C1", "C2"] and rig.now - t_again < T_PWM_MIN_UPDATE_INTERVAL

    asyncio.run(scenario())


def test_expiring_ems_limit_falls_back_to_the_configured_current(tmp_path: Path) -> None:
    settings = ConnectorSettings(free_charging=True, fallback_a=10.0)

    async def scenario() -> None:
        async with charger(tmp_path, settings=settings) as rig:
            await charge(rig, amps=32.0)
            await rig.advance(1.0)
            expires = rig.now + 2.0
            rig.connector.set_limit(Limit("ems", 20.0, expires_at=expires))
            await wait_until(rig, lambda: rig.pilot()[1] == 333, NEXT_SUPERVISION, "20 A offered")
            await rig.advance_to(expires - 0.05)
            assert rig.pilot()[1] == 333
            t_fallback = await wait_until(rig, lambda: rig.pilot()[1] == 166, 0.2, "fallback 10 A offered")
            assert t_fallback - expires <= NEXT_SAMPLE
            why = rig.connector.why()
            assert "10 A, set by ems" in why and "fallback" in why and "expired" in why
            assert rig.coil() and rig.state == "C2"

    asyncio.run(scenario())


# ---------------------------------------------------------------------------------------- authorisation
def test_authorisation_gates_the_offer_and_ends_with_the_unplug(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with charger(tmp_path, free_charging=False) as rig:
            t_plug = await plug(rig, "B")
            await rig.advance(2.0)
            assert rig.state == "B1" and rig.offers_between(t_plug) == [] and rig.pilot() == (PilotMode.X1, 0)
            assert "not authorised" in rig.connector.why() and rig.sessions() == []
            t_auth = rig.now
            rig.connector.authorize("RFID-1")
            await wait_until(rig, lambda: rig.pilot() == (PilotMode.PWM, 533), NEXT_SUPERVISION, "offer")
            [record] = rig.sessions()
            assert record.id_tag == "RFID-1" and record.is_open and rig.trail(t_auth) == ["B2"]
            t_unplug = await unplug(rig)
            await wait_state(rig, "A1", 0.1)
            await rig.advance(0.5)
            assert rig.sessions()[0].stop_reason == "EVDisconnected"
            t_next = await plug(rig, "B")
            await rig.advance(2.0)
            assert rig.state == "B1" and rig.offers_between(t_unplug) == [], "the next EV needs its own"
            assert "not authorised" in rig.connector.why() and len(rig.sessions()) == 1
            rig.connector.authorize("RFID-2")
            await wait_state(rig, "B2", NEXT_SUPERVISION)
            assert [s.id_tag for s in rig.sessions()] == ["RFID-2", "RFID-1"]
            second, first = rig.sessions()
            assert first.stopped_at is not None and second.started_at >= first.stopped_at
            assert t_next > t_unplug

    asyncio.run(scenario())


def test_deauthorize_while_charging_ends_the_session(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with charger(tmp_path, free_charging=False) as rig:
            await plug(rig, "B")
            await rig.advance(0.5)
            rig.connector.authorize("RFID-1")
            await wait_state(rig, "B2", NEXT_SUPERVISION)
            rig.load.demand_a = 16.0
            rig.plant.ev_state = "C"
            await wait_until(rig, rig.coil, T_CLOSE_MAX, "coil on")
            await rig.advance(2.0)
            t_stop = rig.now
            rig.connector.deauthorize()
            await wait_until(rig, lambda: rig.pilot()[0] is PilotMode.X1, NEXT_SUPERVISION, "offer withdrawn")
            await wait_until(rig, lambda: not rig.coil(), NEXT_METER_READING, "coil off")
            [record] = rig.sessions()
            assert record.stop_reason == "DeAuthorized" and record.energy_wh > 0
            await rig.advance(1.0)
            assert rig.state == "C1" and rig.offers_between(t_stop) == []

    asyncio.run(scenario())


# ---------------------------------------------------------------------------------------- legacy wake-up
def test_legacy_wakeup_after_30_s_in_b2(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            await plug(rig, "B")
            t_offer = await wait_until(rig, lambda: rig.pilot()[0] is PilotMode.PWM, 0.5, "offer")
            await rig.advance_to(t_offer + T_LEGACY_WAKEUP - 0.1)
            assert rig.state == "B2"
            t_f = await wait_until(rig, lambda: rig.pilot()[0] is PilotMode.F, 0.2, "wake-up pulse (F)")
            assert t_f - t_offer == pytest.approx(T_LEGACY_WAKEUP, abs=NEXT_SAMPLE) and rig.state == "WAKEUP"
            t_x1 = await wait_until(rig, lambda: rig.pilot()[0] is PilotMode.X1, T_STEP_EF + 0.1, "X1 after F")
            assert t_x1 - t_f == pytest.approx(T_STEP_EF, abs=NEXT_SAMPLE)
            t_pwm = await wait_until(rig, lambda: rig.pilot()[0] is PilotMode.PWM, 1.0, "offer again")
            assert t_pwm - t_x1 == pytest.approx(T_STAY_X1_AFTER_STEP_EF, abs=NEXT_SAMPLE)
            assert rig.pilot() == (PilotMode.PWM, 533) and not rig.coil()
            assert rig.trail() == ["B1", "B2", "WAKEUP", "B1", "B2"]
            assert [s["action"] for s in rig.session_events()] == ["started"]
            # The woken EV now asks for power.
            rig.load.demand_a = 16.0
            rig.plant.ev_state = "C"
            await wait_until(rig, rig.coil, T_CLOSE_MAX, "coil on after the wake-up")

    asyncio.run(scenario())


# ---------------------------------------------------------------------------------------- journal and restart
def test_restart_while_charging_resumes_and_restart_unplugged_closes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            await charge(rig, amps=16.0)
            await rig.advance(12.0)
            [started] = rig.session_events()
            first_energy = rig.connector.status().energy_wh
            first_import = rig.import_wh()
            assert first_energy is not None and first_energy > 30.0

        def ev_still_charging(rig: Rig) -> None:
            rig.plant.pp_ohm, rig.plant.ev_state = 220.0, "C"
            rig.load.demand_a = 16.0

        async with charger(tmp_path, setup=ev_still_charging) as rig:
            assert [(s["action"], s["id"]) for s in rig.session_events()] == [("resumed", started["id"])]
            assert rig.import_wh() >= first_import
            await wait_until(rig, rig.coil, T_CLOSE_MAX, "coil on after the restart")
            await rig.advance(5.0)
            [record] = rig.sessions()
            assert record.session_id == started["id"] and record.is_open and record.resume_count == 1
            status = rig.connector.status()
            assert status.session_id == started["id"]
            assert status.energy_wh is not None and status.energy_wh > first_energy + 10.0
            second_import = rig.import_wh()

        async with charger(tmp_path) as rig:  # the EV left while the charger was off
            assert [(s["action"], s["id"], s["reason"]) for s in rig.session_events()] == [
                ("closed", started["id"], "EVDisconnected")
            ]
            await rig.advance(1.0)
            [record] = rig.sessions()  # closed, not duplicated, no new session
            assert not record.is_open and record.stop_reason == "EVDisconnected"
            assert record.stopped_at == record.last_checkpoint_at
            assert record.meter_stop_wh == pytest.approx(second_import, abs=0.01)
            assert rig.import_wh() >= second_import
            assert rig.connector.session_id is None and rig.state == "A1"

    asyncio.run(scenario())


def test_restart_with_a_stale_checkpoint_closes_as_power_loss_and_starts_anew(tmp_path: Path) -> None:
    """The old session is closed as PowerLoss; the EV still plugged gets a new session that starts at
    the meter's total.

    The meter is read at boot before the first step, so a session started at boot begins at the
    meter's total.
    """

    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            await charge(rig, amps=16.0)
            await rig.advance(3.0)
            [started] = rig.session_events()

        def ev_still_plugged(rig: Rig) -> None:
            rig.plant.pp_ohm, rig.plant.ev_state = 220.0, "B"

        settings = ConnectorSettings(free_charging=True, resume_within_s=0.0)
        async with charger(tmp_path, setup=ev_still_plugged, settings=settings) as rig:
            await rig.advance(1.0)
            events = [(s["action"], s["id"]) for s in rig.session_events()]
            assert events[0] == ("closed", started["id"])
            new, old = rig.sessions()
            assert old.session_id == started["id"] and old.stop_reason == "PowerLoss"
            assert new.session_id != old.session_id and new.is_open
            assert events[1:] == [("started", new.session_id)]
            assert old.meter_stop_wh is not None and new.meter_start_wh >= old.meter_stop_wh
            assert rig.state == "B2"

    asyncio.run(scenario())


def test_meter_totals_continue_from_the_journal(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            await charge(rig, amps=32.0)
            await rig.advance(CHECKPOINT_PERIOD + METER_PERIOD)  # totals are journalled at the checkpoint
            total = rig.journal.last_meter(1)
            assert total is not None and total.import_wh > 0
        async with charger(tmp_path) as rig:
            assert rig.import_wh() >= total.import_wh
            await rig.advance(1.5)
            stored = rig.journal.last_meter(1)
            assert stored is not None and math.isclose(stored.import_wh, rig.import_wh())

    asyncio.run(scenario())
