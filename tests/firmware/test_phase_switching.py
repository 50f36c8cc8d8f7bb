"""1/3-phase switching on the sim-ac-1p3p board: the real connector firmware, the real GPIO drivers on
mock pins, judged by what the wires carry (the main contactor coil, the phase contactor C2's coil,
the pilot) on virtual time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from firmware.connector import SUPERVISION_PERIOD
from firmware.iec61851.timing import PILOT_SAMPLE_PERIOD, T_MIRROR_SETTLE, T_POWER_OFF_UNDER_LOAD_C1
from firmware.phase_switching import PhaseSequencer, Stage
from hal.types import PilotMode
from tests.firmware.connector_rig import Rig, charge, charger, plug, wait_until

BOARD = "sim-ac-1p3p"
SETTLE_S = 10.0  # board/sim-ac-1p3p.toml [phase_switch] settle_s
NEXT_SUPERVISION = SUPERVISION_PERIOD + PILOT_SAMPLE_PERIOD + 1e-6


def _phase_coil(rig: Rig) -> bool:
    return rig.pin_log.level("phase_coil") == 1.0


def _live_currents(rig: Rig) -> list[float]:
    return [round(a, 1) for a in rig.plant.ev_current_a]


# ------------------------------------------------------------------------------------------ the order
@pytest.mark.parametrize(
    ("start", "to", "ev_follows_pilot"),
    [
        pytest.param(3, 1, True, id="3-to-1"),
        pytest.param(3, 1, False, id="3-to-1-ev-keeps-drawing"),
        pytest.param(1, 3, True, id="1-to-3"),
    ],
)
def test_a_switch_while_charging_keeps_the_safe_order(
    tmp_path: Path, start: int, to: int, ev_follows_pilot: bool
) -> None:
    """Offer withdrawn -> main contactor open -> C2 moves -> settle_s with no offer -> offer again."""

    async def scenario() -> None:
        async with charger(tmp_path, board=BOARD) as rig:
            await wait_until(rig, lambda: _phase_coil(rig), 1.0, "C2 closed at boot (no EV: no settling)")
            if start == 1:
                rig.connector.request_phases(1)
                await wait_until(rig, lambda: not _phase_coil(rig), 1.0, "C2 open with no EV")
            await charge(rig, amps=16.0)
            await rig.advance(2.0)
            assert _live_currents(rig) == ([16.0] * 3 if start == 3 else [16.0, 0.0, 0.0])
            rig.load.obeys_offer = ev_follows_pilot
            t_request = rig.now
            rig.connector.request_phases(to)
            t_x1 = await wait_until(rig, lambda: rig.pilot()[0] is PilotMode.X1, NEXT_SUPERVISION, "offer withdrawn")
            assert rig.connector.why().endswith("offer withdrawn, waiting for the contactor to open")
            wait = T_POWER_OFF_UNDER_LOAD_C1 + 0.5 if not ev_follows_pilot else 2.0
            await wait_until(rig, lambda: not rig.coil(), wait, "main contactor open")
            t_open = rig.coil_opened_at(t_request)
            assert t_open is not None
            if not ev_follows_pilot:
                assert t_open - t_x1 == pytest.approx(T_POWER_OFF_UNDER_LOAD_C1, abs=0.05)
            rig.load.obeys_offer = True
            await wait_until(rig, lambda: _phase_coil(rig) == (to == 3), 1.0, "C2 moved")
            [moved] = rig.pin_log.changes("phase_coil", since=t_request)
            assert moved.value == (1.0 if to == 3 else 0.0)
            # C2 never moves before the main contactor's mirror has had time to prove it open.
            assert moved.t >= t_open + T_MIRROR_SETTLE - 1e-6
            assert not rig.contacts()
            t_pwm = await wait_until(rig, lambda: rig.pilot()[0] is PilotMode.PWM, SETTLE_S + 1.0, "offer again")
            assert t_pwm - moved.t == pytest.approx(SETTLE_S, abs=NEXT_SUPERVISION)
            assert all(mode is not PilotMode.PWM for _, mode, _ in rig.pilot_changes(t_x1) if _ < t_pwm)
            await wait_until(rig, rig.contacts, 1.0, "contacts closed again")
            await rig.advance(1.0)
            assert _live_currents(rig) == ([16.0] * 3 if to == 3 else [16.0, 0.0, 0.0])
            assert rig.connector.phases_active == to and rig.connector.status().phases == to
            assert [s["action"] for s in rig.session_events()] == ["started"]  # one session throughout
            assert [(d["from"], d["phases"]) for k, d in rig.events if k == "phases" and d["t"] >= t_request] == [
                (start, to)
            ]

    asyncio.run(scenario())


def test_an_ev_that_is_plugged_in_but_not_charging_settles_before_the_offer(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with charger(tmp_path, board=BOARD) as rig:
            await wait_until(rig, lambda: _phase_coil(rig), 1.0, "C2 closed at boot")
            await plug(rig, "B")
            await wait_until(rig, lambda: rig.pilot()[0] is PilotMode.PWM, 1.0, "offer in B2")
            rig.connector.request_phases(1)
            t_moved = await wait_until(rig, lambda: not _phase_coil(rig), 1.0, "C2 opens at once: nothing drawing")
            assert rig.pilot()[0] is PilotMode.X1
            assert "switching to 1 phase: phase contactor moved, EV settling" in rig.connector.why()
            t_pwm = await wait_until(rig, lambda: rig.pilot()[0] is PilotMode.PWM, SETTLE_S + 1.0, "offer again")
            assert t_pwm - t_moved == pytest.approx(SETTLE_S, abs=NEXT_SUPERVISION)

    asyncio.run(scenario())


def test_with_no_ev_a_switch_is_immediate_and_never_holds_the_pilot(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with charger(tmp_path, board=BOARD) as rig:
            await wait_until(rig, lambda: _phase_coil(rig), 1.0, "C2 closed at boot")
            await rig.advance(1.0)  # the main contactor's mirror has long proven it open
            rig.connector.request_phases(1)
            await wait_until(rig, lambda: not _phase_coil(rig), NEXT_SUPERVISION, "C2 open")
            assert rig.connector.phases is not None and rig.connector.phases.stage is Stage.IDLE
            await rig.advance(1.0)
            assert rig.plant.live_phases == 1
            assert "switching" not in rig.connector.why()

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------------ faults
def test_a_welded_main_contactor_never_lets_the_phase_contactor_move(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with charger(tmp_path, board=BOARD) as rig:
            await wait_until(rig, lambda: _phase_coil(rig), 1.0, "C2 closed at boot")
            await charge(rig, amps=16.0)
            rig.plant.contactor_welded = True
            t_request = rig.now
            rig.connector.request_phases(1)
            await wait_until(rig, lambda: not rig.coil(), 2.0, "main coil released")
            await rig.advance(30.0)
            assert rig.raised_at("contactor_welded", t_request) is not None
            assert rig.pin_log.changes("phase_coil", since=t_request) == []
            assert rig.connector.phases_active == 3

    asyncio.run(scenario())


def test_a_stuck_phase_contactor_stops_the_offer_until_its_mirror_follows(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with charger(tmp_path, board=BOARD) as rig:
            await wait_until(rig, lambda: _phase_coil(rig), 1.0, "C2 closed at boot")
            await plug(rig, "B")
            await rig.advance(1.0)  # C2's contacts have followed its coil
            assert rig.plant.live_phases == 3
            rig.plant.phase_switch_stuck = True
            t_request = rig.now
            rig.connector.request_phases(1)
            await wait_until(rig, lambda: not _phase_coil(rig), 1.0, "C2 coil released")
            raised = await wait_until(
                rig, lambda: rig.raised_at("phase_switch_failed", t_request) is not None, 1.0, "fault raised"
            )
            assert raised - t_request <= T_MIRROR_SETTLE + 2 * NEXT_SUPERVISION
            assert rig.plant.live_phases == 3  # still on three phases: what the manager must not count on
            await rig.advance(SETTLE_S + 5.0)
            assert rig.pilot()[0] is not PilotMode.PWM, "a STOP fault: no offer on the wrong phases"
            rig.plant.phase_switch_stuck = False
            await wait_until(
                rig, lambda: rig.cleared_at("phase_switch_failed", t_request) is not None, 1.0, "fault cleared"
            )
            await wait_until(rig, lambda: rig.pilot()[0] is PilotMode.PWM, 1.0, "offer again on one phase")
            assert rig.plant.live_phases == 1

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------------ the sequencer
def test_the_sequencer_follows_a_request_that_changes_back_before_the_move() -> None:
    seq = PhaseSequencer(commanded=3, target=3, settle_s=10.0)
    seq.request(1)
    assert seq.step(0.0, contactor_open=False).hold_offer
    seq.request(3)  # changed its mind while the contactor was still closed: nothing moves
    action = seq.step(0.5, contactor_open=False)
    assert (action.hold_offer, action.move_to, seq.switches) == (False, None, 0)


def test_the_sequencer_settles_a_move_completely_before_the_next() -> None:
    seq = PhaseSequencer(commanded=3, target=1, settle_s=10.0)
    assert seq.step(0.0, contactor_open=True).move_to == 1
    seq.request(3)
    assert [seq.step(t, contactor_open=True).move_to for t in (1.0, 5.0, 9.9)] == [None, None, None]
    assert seq.next_deadline() == 10.0
    action = seq.step(10.0, contactor_open=True)
    assert (action.move_to, action.hold_offer, seq.switches) == (3, True, 2)


@pytest.mark.parametrize("bad", [0, 2, 4])
def test_the_sequencer_takes_one_or_three_phases_only(bad: int) -> None:
    seq = PhaseSequencer(commanded=3, target=3, settle_s=10.0)
    with pytest.raises(ValueError, match="1 or 3"):
        seq.request(bad)


def test_a_board_without_a_phase_switch_refuses_a_request(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with charger(tmp_path) as rig:
            assert rig.connector.phases_active == 3
            with pytest.raises(ValueError, match="no phase switch"):
                rig.connector.request_phases(1)

    asyncio.run(scenario())
