"""The AC EV model driven directly on a Plant (no firmware): the test plays the EVSE by setting the pilot
and the main contacts by hand and moves virtual time in the runner's 0.1 s steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.iec61851.pilot import current_for_duty, duty_for_current
from hal.sim.plant import Plant
from hal.types import PilotMode
from hil.models.ev import CHARGE_EFFICIENCY, PP_INVALID_OHM, AcEv

TICK_S = 0.1


@dataclass
class Bench:
    """A plant, one EV on it, and virtual time counted in ticks (no float drift)."""

    ev: AcEv
    plant: Plant = field(default_factory=Plant)
    tick: int = 0

    @property
    def now(self) -> float:
        return self.tick * TICK_S

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / TICK_S)):
            self.tick += 1
            self.ev.step(self.now)

    def offer(self, amps: float) -> None:
        duty = duty_for_current(amps)
        assert duty is not None
        self.plant.pilot.mode, self.plant.pilot.duty = PilotMode.PWM, duty / 1000
        self.ev.step(self.now)  # the runner steps the EV right after any action

    def stop_offer(self, mode: PilotMode = PilotMode.X1) -> None:
        self.plant.pilot.mode, self.plant.pilot.duty = mode, 0.0
        self.ev.step(self.now)

    def close(self, closed: bool = True) -> None:
        self.plant.contacts_closed = closed
        self.ev.step(self.now)


def make_ev(**overrides: Any) -> AcEv:
    params: dict[str, Any] = {
        "ev_id": "ev1",
        "battery_kwh": 60.0,
        "soc": 0.3,
        "target_soc": 0.8,
        "max_current_a": 32.0,
        "phases": 3,
    }
    params.update(overrides)
    return AcEv(**params)


def bench(plant: Plant | None = None, **overrides: Any) -> Bench:
    b = Bench(ev=make_ev(**overrides), plant=plant or Plant())
    b.plant.pilot.mode = PilotMode.X1
    b.ev.attach(b.plant)
    return b


def charging(amps: float = 30.0, plant: Plant | None = None, **overrides: Any) -> Bench:
    """An EV plugged in, offered ``amps``, in C with the contacts closed and drawing (response passed)."""
    b = bench(plant, **overrides)
    b.ev.plug_in(b.now)
    b.offer(amps)
    b.run(b.ev.ready_delay_s)
    assert b.plant.ev_state == "C"
    b.close()
    b.run(max(b.ev.response_s, TICK_S))
    return b


# ------------------------------------------------------------------ plug-in / unplug


@pytest.mark.parametrize(("cable_a", "ohm"), [(13, 1500.0), (20, 680.0), (32, 220.0), (63, 100.0)])
def test_plug_in_sets_pp_for_the_cable_and_state_b(cable_a: int, ohm: float) -> None:
    b = bench(cable_a=cable_a)
    assert b.plant.ev_state == "A" and b.plant.pp_ohm is None and not b.ev.plugged
    b.ev.plug_in(0.0)
    assert b.ev.plugged and b.ev.state == "B"
    assert b.plant.ev_state == "B" and b.plant.pp_ohm == ohm and b.plant.ev_diode_ok


def test_unplug_leaves_state_a_no_pp_and_no_current() -> None:
    b = charging()
    assert b.plant.ev_current_a == [30.0, 30.0, 30.0]
    b.ev.unplug(b.now)
    assert not b.ev.plugged and b.ev.drawing_a == 0.0
    assert b.plant.ev_state == "A" and b.plant.pp_ohm is None and b.plant.ev_current_a == [0.0, 0.0, 0.0]
    soc = b.ev.soc
    b.run(10)  # an unplugged EV leaves the plant alone
    assert b.plant.ev_state == "A" and b.plant.ev_current_a == [0.0, 0.0, 0.0] and b.ev.soc == soc
    with pytest.raises(RuntimeError):
        b.ev.unplug(b.now)


def test_an_unplugged_ev_does_not_touch_the_plant() -> None:
    b = bench()
    b.plant.ev_state, b.plant.pp_ohm, b.plant.contacts_closed = "C", 680.0, True
    b.plant.ev_current_a = [5.0, 5.0, 5.0]
    b.offer(16)
    b.run(5)
    assert b.plant.ev_state == "C" and b.plant.pp_ohm == 680.0 and b.plant.ev_current_a == [5.0, 5.0, 5.0]


def test_plug_in_twice_and_step_unattached_are_refused() -> None:
    b = bench()
    b.ev.plug_in(0.0)
    with pytest.raises(RuntimeError, match="already plugged"):
        b.ev.plug_in(0.0)
    with pytest.raises(RuntimeError, match="attach"):
        make_ev().plug_in(0.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"battery_kwh": 0},
        {"soc": 1.2},
        {"target_soc": -0.1},
        {"max_current_a": 0},
        {"phases": 4},
        {"behaviour": "lazy"},
        {"cable_a": 16},
        {"response_s": -1},
        {"ready_delay_s": -1},
        {"taper_from_soc": 1.5},
    ],
)
def test_bad_parameters_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="ev1"):
        make_ev(**bad)


# ------------------------------------------------------------------ B -> C -> B


def test_goes_to_c_after_ready_delay_of_an_offer_in_b() -> None:
    b = bench(ready_delay_s=2.0)
    b.ev.plug_in(0.0)
    b.run(5)
    assert b.plant.ev_state == "B"  # X1: no offer, no reason to be ready
    b.offer(16)
    b.run(1.9)
    assert b.plant.ev_state == "B"
    b.run(0.1)
    assert b.plant.ev_state == "C" and b.ev.state == "C"
    assert b.ev.drawing_a == 0.0  # contacts still open


def test_an_offer_below_6_a_is_no_offer() -> None:
    b = bench()
    b.ev.plug_in(0.0)
    b.plant.pilot.mode, b.plant.pilot.duty = PilotMode.PWM, 0.05  # 5 %: digital communication only
    b.run(10)
    assert b.plant.ev_state == "B"


def test_a_full_ev_stays_in_b() -> None:
    b = bench(soc=0.8, target_soc=0.8)
    b.ev.plug_in(0.0)
    b.offer(16)
    b.run(10)
    assert b.plant.ev_state == "B"


@pytest.mark.parametrize("mode", [PilotMode.X1, PilotMode.F, PilotMode.E])
def test_offer_gone_stops_drawing_within_response_then_b(mode: PilotMode) -> None:
    b = charging(response_s=2.0)
    b.stop_offer(mode)
    b.run(1.9)
    assert b.ev.drawing_a == 30.0 and b.plant.ev_state == "C"
    b.run(0.1)
    assert b.ev.drawing_a == 0.0 and b.plant.ev_current_a == [0.0, 0.0, 0.0]
    assert b.plant.ev_state == "B"


def test_draws_only_while_the_contacts_are_closed() -> None:
    b = charging(18)
    assert b.plant.ev_current_a == [18.0, 18.0, 18.0]
    b.close(False)
    assert b.ev.drawing_a == 0.0 and b.plant.ev_current_a == [0.0, 0.0, 0.0]
    assert b.plant.ev_state == "C"
    b.close(True)
    assert b.ev.drawing_a == 18.0


# ------------------------------------------------------------------ behaviours


def test_follow_follows_reductions_and_raises_after_response() -> None:
    b = charging(30, response_s=1.5)
    assert b.ev.drawing_a == 30.0
    b.offer(18)
    b.run(1.4)
    assert b.ev.drawing_a == 30.0
    b.run(0.1)
    assert b.ev.drawing_a == 18.0 and b.plant.ev_current_a == [18.0, 18.0, 18.0]
    b.offer(24)
    b.run(1.4)
    assert b.ev.drawing_a == 18.0
    b.run(0.1)
    assert b.ev.drawing_a == 24.0


def test_follow_is_capped_by_the_onboard_charger() -> None:
    b = charging(30, max_current_a=16.0)
    assert b.ev.drawing_a == 16.0


def test_greedy_ignores_reductions() -> None:
    b = charging(18, behaviour="greedy")
    b.offer(30)
    b.run(1)
    assert b.ev.drawing_a == 30.0  # raises are followed
    b.offer(12)
    b.run(60)
    assert b.ev.drawing_a == 30.0  # over-current: 18 A above the offer
    b.stop_offer()
    b.run(1)
    assert b.ev.drawing_a == 0.0 and b.plant.ev_state == "B"  # even a greedy EV stops without an offer


def test_lower_only_follows_reductions_but_never_raises() -> None:
    b = charging(30, behaviour="lower-only")
    b.offer(18)
    b.run(1)
    assert b.ev.drawing_a == 18.0
    b.offer(30)
    b.run(60)
    assert b.ev.drawing_a == 18.0
    b.offer(12)
    b.run(1)
    assert b.ev.drawing_a == 12.0


# ------------------------------------------------------------------ battery


def test_taper_from_taper_soc_down_to_ten_percent() -> None:
    # A huge battery: the SoC barely moves during the few seconds of the test.
    big: dict[str, Any] = {"battery_kwh": 1e6, "target_soc": 1.0, "max_current_a": 30.0}
    assert charging(30, soc=0.8, **big).ev.drawing_a == pytest.approx(30.0)
    assert charging(30, soc=0.9, **big).ev.drawing_a == pytest.approx(30 * 0.55, abs=0.01)
    assert charging(30, soc=0.999, **big).ev.drawing_a == pytest.approx(30 * (1 - 0.9 * 0.995), abs=0.01)
    assert charging(30, soc=0.95, taper_from_soc=1.0, **big).ev.drawing_a == 30.0


def test_full_stops_drawing_and_goes_to_b() -> None:
    # 1 kWh from 0.79 to 0.80 at 3 x 32 A: 10 Wh / (22 kW * 0.92) = 1.8 s.
    b = charging(30, battery_kwh=1.0, soc=0.79, target_soc=0.8, taper_from_soc=1.0)
    b.run(5)
    assert b.ev.soc >= 0.8 and b.ev.soc < 0.81
    assert b.ev.drawing_a == 0.0 and b.plant.ev_state == "B" and b.plant.ev_current_a == [0.0, 0.0, 0.0]
    b.run(30)
    assert b.plant.ev_state == "B"  # the offer is still there, but the EV is done


def test_soc_integration_11_kw_for_an_hour() -> None:
    b = charging(16, soc=0.2, target_soc=1.0)  # 3 x 16 A x 230 V = 11.04 kW (15.96 A: duty rounds down)
    assert b.ev.drawing_a == pytest.approx(16.0, abs=0.05)
    soc0, energy0 = b.ev.soc, b.ev.energy_wh
    b.run(3600)
    added = b.ev.soc - soc0
    assert added == pytest.approx(11.04 * CHARGE_EFFICIENCY / 60, rel=0.01)
    assert b.ev.energy_wh - energy0 == pytest.approx(11040 * CHARGE_EFFICIENCY, rel=0.01)
    assert b.ev.stored_kwh == pytest.approx(60 * b.ev.soc)


def test_grid_voltage_sets_the_power() -> None:
    b = charging(18, soc=0.2, target_soc=1.0)
    b.plant.grid_voltage_v = [207.0, 207.0, 207.0]
    e0 = b.ev.energy_wh
    b.run(3600)
    assert b.ev.energy_wh - e0 == pytest.approx(3 * 207 * 18 * CHARGE_EFFICIENCY, rel=0.01)


def test_one_phase_ev_draws_on_l1_only() -> None:
    b = charging(18, phases=1, soc=0.2, target_soc=1.0)
    assert b.plant.ev_current_a == [18.0, 0.0, 0.0]
    e0 = b.ev.energy_wh
    b.run(3600)
    assert b.ev.energy_wh - e0 == pytest.approx(230 * 18 * CHARGE_EFFICIENCY, rel=0.01)


def test_three_phase_ev_on_a_one_phase_plant_draws_on_l1_only() -> None:
    plant = Plant(phases=1, grid_voltage_v=[230.0], ev_current_a=[0.0])
    b = charging(18, plant=plant)
    assert b.plant.ev_current_a == [18.0]


# ------------------------------------------------------------------ fault knobs


def test_diode_short() -> None:
    b = bench()
    b.ev.diode_short()
    b.ev.plug_in(0.0)
    assert b.plant.ev_diode_ok is False
    b.plant.pilot.mode = PilotMode.PWM
    assert b.plant.cp_plateaus()[1] > -12.0  # the negative plateau is loaded
    b.ev.diode_short(False)
    assert b.plant.ev_diode_ok is True
    b.ev.diode_short(True)
    b.ev.unplug(b.now)
    assert b.plant.ev_diode_ok is True  # the diode left with the EV


def test_pilot_short_shows_e_and_stops_drawing() -> None:
    b = charging(18)
    b.ev.pilot_short()
    b.ev.step(b.now)  # the runner steps the EV right after any action
    assert b.plant.ev_state == "E" and b.ev.state == "E"
    b.run(0.9)
    assert b.ev.drawing_a == 18.0  # the offer it perceives is still the one of response_s ago
    b.run(0.1)
    assert b.ev.drawing_a == 0.0 and b.plant.ev_state == "E"
    b.ev.pilot_short(False)
    b.ev.step(b.now)
    assert b.plant.ev_state == "B"  # it went back to B while it saw no offer
    b.run(1)
    assert b.plant.ev_state == "C"


def test_stuck_in_c_keeps_drawing_without_an_offer() -> None:
    b = charging(18)
    b.ev.stuck_in_c(True)
    b.stop_offer()
    b.run(30)
    assert b.plant.ev_state == "C" and b.ev.drawing_a == 18.0
    b.close(False)
    assert b.ev.drawing_a == 0.0  # no contacts, no current
    b.ev.stuck_in_c(False)
    b.run(TICK_S)
    assert b.plant.ev_state == "B"


def test_stuck_in_c_from_b_shows_c_at_once() -> None:
    b = bench()
    b.ev.plug_in(0.0)
    b.ev.stuck_in_c(True)
    assert b.plant.ev_state == "C"
    b.close()
    b.run(1)
    assert b.ev.drawing_a == 32.0  # never had an offer: draws what its charger can


def test_overcurrent_whatever_the_offer_while_contacts_closed() -> None:
    b = charging(18)
    b.ev.overcurrent(40.0)
    b.ev.step(b.now)
    assert b.ev.drawing_a == 40.0 and b.plant.ev_current_a == [40.0, 40.0, 40.0]
    b.stop_offer()
    b.run(5)
    assert b.ev.drawing_a == 40.0
    b.close(False)
    assert b.ev.drawing_a == 0.0
    b.close(True)
    b.ev.overcurrent(None)
    b.offer(18)
    b.run(2)
    assert b.ev.drawing_a == 18.0
    with pytest.raises(ValueError):
        b.ev.overcurrent(-1.0)


def test_pp_open_and_pp_invalid() -> None:
    b = bench()
    b.ev.plug_in(0.0)
    b.ev.pp_open()
    assert b.plant.pp_ohm is None and b.ev.plugged
    b.ev.pp_open(False)
    assert b.plant.pp_ohm == 220.0
    b.ev.pp_invalid()
    assert b.plant.pp_ohm == PP_INVALID_OHM == 40.0
    b.ev.pp_invalid(False)
    assert b.plant.pp_ohm == 220.0


def test_force_state_holds_b_or_c() -> None:
    b = charging(18)
    b.ev.force_state("B")
    assert b.plant.ev_state == "B"
    b.run(10)
    assert b.plant.ev_state == "B" and b.ev.drawing_a == 0.0  # the driver stopped from the car
    b.ev.force_state("C")
    b.run(1)
    assert b.plant.ev_state == "C" and b.ev.drawing_a == 18.0
    b.stop_offer()
    b.run(10)
    assert b.plant.ev_state == "C" and b.ev.drawing_a == 0.0  # held in C, but no offer: no current
    b.ev.force_state(None)
    b.run(TICK_S)
    assert b.plant.ev_state == "B"
    with pytest.raises(ValueError):
        b.ev.force_state("D")


# ------------------------------------------------------------------ trace and meter hook


def test_trace_events_on_change_and_every_minute() -> None:
    b = bench(soc=0.5)
    first = b.ev.trace_events(0.0)
    assert first == [{"src": "ev1", "ev": "soc", "soc": 0.5, "kwh": 30.0}]
    assert b.ev.trace_events(0.0) == []
    b.ev.plug_in(0.0)
    assert len(b.ev.trace_events(0.0)) == 1
    b.offer(16)
    b.run(1)
    assert len(b.ev.trace_events(b.now)) == 1  # went to C
    b.close()
    b.run(1)
    assert len(b.ev.trace_events(b.now)) == 1  # started drawing
    emitted: list[tuple[float, dict[str, Any]]] = []
    for _ in range(1200):
        b.run(TICK_S)
        emitted += [(b.now, e) for e in b.ev.trace_events(b.now)]
    assert [round(t, 1) for t, _ in emitted] == [62.0, 122.0]
    assert emitted[-1][1]["soc"] > 0.5 and emitted[-1][1]["kwh"] == pytest.approx(60 * emitted[-1][1]["soc"], abs=0.01)


def test_hook_runs_before_the_current_changes() -> None:
    seen: list[list[float]] = []
    b = bench()
    b.ev.attach(b.plant, before_current_change=lambda: seen.append(list(b.plant.ev_current_a)))
    b.ev.plug_in(0.0)
    b.offer(18)
    b.run(1)
    b.close()
    b.run(5)
    assert seen == [[0.0, 0.0, 0.0]]  # once, with the old current still on the plant
    b.close(False)
    assert seen == [[0.0, 0.0, 0.0], [18.0, 18.0, 18.0]]


# ------------------------------------------------------------------ property


segments = st.lists(
    st.tuples(st.integers(min_value=1, max_value=40), st.one_of(st.none(), st.integers(min_value=0, max_value=1000))),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(
    plan=segments,
    response_s=st.sampled_from([0.0, 0.3, 1.0, 2.5]),
    max_current_a=st.floats(min_value=6.0, max_value=80.0),
)
def test_follow_never_exceeds_the_settled_offer_nor_its_maximum(
    plan: list[tuple[int, int | None]], response_s: float, max_current_a: float
) -> None:
    b = bench(response_s=response_s, max_current_a=max_current_a, battery_kwh=1e6, target_soc=1.0)
    b.ev.plug_in(0.0)
    b.plant.contacts_closed = True
    offered, changed_tick = 0.0, 0
    for ticks, duty in plan:
        if duty is None:
            b.plant.pilot.mode, b.plant.pilot.duty = PilotMode.X1, 0.0
        else:
            b.plant.pilot.mode, b.plant.pilot.duty = PilotMode.PWM, duty / 1000
        amps = current_for_duty(duty) if duty is not None else 0.0
        amps = amps if amps >= 6.0 else 0.0
        if amps != offered:
            offered, changed_tick = amps, b.tick
        b.ev.step(b.now)
        for _ in range(ticks):
            assert b.ev.drawing_a <= max_current_a + 1e-9
            if (b.tick - changed_tick) * TICK_S >= response_s - 1e-9:
                assert b.ev.drawing_a <= offered + 1e-9
            b.run(TICK_S)
