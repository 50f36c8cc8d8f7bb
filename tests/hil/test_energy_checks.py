"""The energy manager's checks (hil.expect) on hand-written traces: each passes on the trace that
shows what it states and fails, with the evidence, on one that does not."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from hil.expect import RunFacts, evaluate
from hil.scenario import CheckSpec, Scenario, parse_scenario

SCENARIO = """\
format: 1
name: checks
duration: 30min
site:
  grid_limit_kw: 50
  energy_manager: {}
  battery: {capacity_kwh: 10, soc: 0.5, max_discharge_kw: 20, reserve_kwh: 2}
evs:
  - {id: a, connector: 1, battery_kwh: 50, soc: 0.5, max_current_a: 32}
  - {id: b, connector: 2, battery_kwh: 50, soc: 0.5, max_current_a: 16, phases: 1}
events:
  - {at: 100s, action: demand_response, reduce_kw: 10, for: 100s}
expect:
  - {check: sessions, count: 0}
"""


def _scenario() -> Scenario:
    return parse_scenario(SCENARIO, "checks.yaml")


def _check(records: list[dict[str, Any]], **params: Any) -> tuple[bool, str]:
    spec = CheckSpec.model_validate(params)
    result = evaluate(spec, RunFacts(scenario=_scenario(), records=records))
    return result.passed, result.evidence


def _cycle(t: float, fallback: str | None = None) -> dict[str, Any]:
    return {"t": t, "src": "energy", "ev": "cycle", "budget_W": 1.0, "fallback": fallback, "ess_W": 0.0}


def _power(t: float, connector: int, watts: float) -> dict[str, Any]:
    return {"t": t, "src": f"connector{connector}", "ev": "power", "W": watts}


def _site(t: float, watts: float) -> dict[str, Any]:
    return {"t": t, "src": "site", "ev": "site_power", "W": watts, "limit_W": 50000.0}


def _battery(t: float, soc: float, watts: float) -> dict[str, Any]:
    return {"t": t, "src": "site", "ev": "battery", "soc": soc, "W": watts, "kwh": soc * 10}


# ------------------------------------------------------------------------------------------ energy_fallback
FALLBACK_TRACE = [_cycle(1.0), _cycle(50.0, "site meter silent"), _cycle(80.0)]


@pytest.mark.parametrize(
    ("params", "passed", "fragment"),
    [
        ({"active": False, "to_s": 49}, True, "not active throughout t=1..49"),
        ({"active": True, "from_s": 50, "to_s": 79}, True, "site meter silent"),
        ({"active": True, "from_s": 60, "to_s": 70}, True, "active throughout"),  # in force from 50
        ({"active": False, "from_s": 81}, True, "not active"),
        ({"active": False}, False, "active (site meter silent) at t=50.000"),
        ({"active": True, "from_s": 50, "to_s": 90}, False, "not active at t=80.000"),
        ({"active": True, "from_s": 40, "to_s": 60}, False, "not active at t=40.000"),
        ({"active": False, "from_s": 0.5}, False, "had not cycled yet"),
    ],
)
def test_energy_fallback(params: dict[str, Any], passed: bool, fragment: str) -> None:
    ok, evidence = _check(FALLBACK_TRACE, check="energy_fallback", **params)
    assert ok is passed and fragment in evidence, evidence


def test_energy_fallback_needs_cycles() -> None:
    assert _check([], check="energy_fallback", active=False) == (False, "no energy manager cycle in the trace")


# ------------------------------------------------------------------------------------------ the battery
BATTERY_TRACE = [_battery(0.0, 0.5, 0.0), _battery(100.0, 0.5, 18000.0), _battery(200.0, 0.0, 0.0)]


@pytest.mark.parametrize(
    ("params", "passed", "fragment"),
    [
        ({"soc": 0.5, "by": 150}, True, "lowest battery SoC up to t=150 s: 0.5000"),
        ({"soc": 0.1}, False, "0.0000 at t=200.000"),
    ],
)
def test_ess_soc_at_least(params: dict[str, Any], passed: bool, fragment: str) -> None:
    ok, evidence = _check(BATTERY_TRACE, check="ess_soc_at_least", **params)
    assert ok is passed and fragment in evidence, evidence


@pytest.mark.parametrize(
    ("params", "kwh", "passed"),
    [
        ({"min_kwh": 0.5}, 0.5, True),  # 18 kW for 100 s
        ({"min_kwh": 0.2, "max_kwh": 0.3, "from_s": 150}, 0.25, True),  # half of it
        ({"min_kwh": 0, "max_kwh": 0.01, "to_s": 100}, 0.0, True),
        ({"min_kwh": 0.6}, 0.5, False),
        ({"min_kwh": 0, "max_kwh": 0.1, "from_s": 120, "to_s": 130}, 0.05, True),
    ],
)
def test_ess_discharged_integrates_the_held_power(params: dict[str, Any], kwh: float, passed: bool) -> None:
    ok, evidence = _check(BATTERY_TRACE, check="ess_discharged", **params)
    assert ok is passed and f"{kwh:.3f} kWh discharged" in evidence, evidence


@given(st.lists(st.tuples(st.floats(1, 100), st.floats(0, 50000)), min_size=1, max_size=20))
def test_ess_discharged_adds_up_over_split_windows(steps: list[tuple[float, float]]) -> None:
    records, t = [], 0.0
    for dt, watts in steps:
        records.append(_battery(t, 0.5, watts))
        t += dt
    records.append(_battery(t, 0.5, 0.0))
    middle = t / 3

    def kwh(**window: float) -> float:
        _, evidence = _check(records, check="ess_discharged", min_kwh=0, **window)
        return float(evidence.split(" kWh")[0])

    whole = sum(dt * watts for dt, watts in steps) / 3.6e6
    assert kwh() == pytest.approx(whole, abs=2e-3)
    assert kwh(to_s=middle) + kwh(from_s=middle) == pytest.approx(whole, abs=3e-3)


def test_battery_checks_need_records() -> None:
    assert _check([], check="ess_soc_at_least", soc=0.2) == (False, "no battery record")
    assert _check([], check="ess_discharged", min_kwh=0) == (False, "no battery record")


# ------------------------------------------------------------------------------------------ chargers
# Connector 1: a three-phase EV (6 A = 4140 W at 230 V); connector 2: a one-phase EV (6 A = 1380 W).
CHARGING_TRACE = [
    _power(0.0, 1, 0.0),
    _power(0.0, 2, 0.0),
    _power(10.0, 1, 11040.0),
    _power(10.0, 2, 1380.0),
    _power(50.0, 1, 4140.0),
    _power(60.0, 2, 0.0),
    _power(70.0, 2, 2000.0),
]


@pytest.mark.parametrize(
    ("params", "passed", "fragment"),
    [
        ({"connectors": [1, 2], "from_s": 10, "to_s": 59}, True, "lowest 6.00 A-equivalent"),
        ({"connectors": [1], "from_s": 10}, True, "all 1 drew at least 6 A"),
        ({"connectors": [1, 2], "from_s": 10}, False, "connector 2: 0.00 A-equivalent at t=60.000"),
        ({"connectors": [1, 2], "from_s": 5, "to_s": 20}, False, "2 of 2 below 6 A"),  # in force at 5 s: 0 W
        ({"connectors": [3], "from_s": 10}, False, "no EV on connector(s) [3]"),
    ],
)
def test_all_charging(params: dict[str, Any], passed: bool, fragment: str) -> None:
    ok, evidence = _check(CHARGING_TRACE, check="all_charging", **params)
    assert ok is passed and fragment in evidence, evidence


def test_all_charging_follows_the_grid_voltage() -> None:
    low_grid = [{"t": 0.0, "src": "site", "ev": "grid", "V": 207.0, "Hz": 50.0}, _power(1.0, 1, 3726.0)]
    assert _check(low_grid, check="all_charging", connectors=[1], from_s=1)[0]  # 6 A at 207 V
    assert not _check(low_grid[1:], check="all_charging", connectors=[1], from_s=1)[0]  # 5.4 A at 230 V


@pytest.mark.parametrize(
    ("params", "passed", "fragment"),
    [
        ({"min_kw": 12, "max_kw": 12.5, "from_s": 10, "to_s": 49}, True, "12.42..12.42 kW"),
        ({"max_kw": 12.5, "from_s": 10}, True, "4.14..12.42 kW"),
        ({"min_kw": 5, "from_s": 10}, False, "4.14 kW at t=60.000"),
        ({"max_kw": 10, "from_s": 20, "to_s": 40}, False, "12.42 kW at t=20.000"),  # in force when it opens
        ({"max_kw": 0}, False, "12.42 kW at t=10.000"),
    ],
)
def test_chargers_power(params: dict[str, Any], passed: bool, fragment: str) -> None:
    ok, evidence = _check(CHARGING_TRACE, check="chargers_power", **params)
    assert ok is passed and fragment in evidence, evidence


def test_chargers_power_takes_the_total_after_each_instant() -> None:
    # At t=10 one connector goes down and the other up: the total never really doubled.
    swap = [_power(0.0, 1, 10000.0), _power(0.0, 2, 0.0), _power(10.0, 1, 0.0), _power(10.0, 2, 10000.0)]
    swap.insert(2, _power(10.0, 2, 10000.0))
    assert _check(swap, check="chargers_power", max_kw=10)[0]


# ------------------------------------------------------------------------------------------ the site
SITE_TRACE = [_site(0.0, 40000.0), _site(100.0, 48000.0), _site(101.5, 38000.0), _site(300.0, 47000.0)]
DR_ACTION = {"t": 100.0, "src": "rig", "ev": "action", "action": "demand_response", "reduce_kw": 10.0, "for": 100.0}


@pytest.mark.parametrize(
    ("params", "passed", "fragment"),
    [
        ({"max_kw": 48, "from_s": 0}, True, "site 38.00..48.00 kW"),
        ({"min_kw": 38, "max_kw": 40, "from_s": 102, "to_s": 299}, True, "38.00..38.00 kW"),
        ({"max_kw": 45, "from_s": 50, "to_s": 200}, False, "48.00 kW at t=100.000"),
        ({"min_kw": 39, "from_s": 150, "to_s": 250}, False, "38.00 kW at t=150.000"),
    ],
)
def test_site_power(params: dict[str, Any], passed: bool, fragment: str) -> None:
    ok, evidence = _check(SITE_TRACE, check="site_power", **params)
    assert ok is passed and fragment in evidence, evidence


def _dr_trace(during: float, after: float) -> list[dict[str, Any]]:
    return [
        _site(0.0, 50000.0),
        DR_ACTION,
        _site(100.0, 50000.0),
        _site(102.0, during),
        _site(150.0, during + 5000.0),  # a step of the load, followed 1 s later
        _site(151.0, during),
        _site(200.5, after),
        _site(400.0, after),
    ]


@pytest.mark.parametrize(
    ("during", "after", "params", "passed", "fragment"),
    [
        (40000.0, 50000.0, {"within_s": 3, "tolerance_s": 1.5}, True, "50.00 kW before, reduce 10 kW -> at most 40.00"),
        (40000.0, 50000.0, {"within_s": 3}, False, "above for 1.0 s, tolerance 0 s"),
        (40000.0, 50000.0, {"within_s": 0.1, "tolerance_s": 1.5}, False, "above for 1.9 s"),  # down at 102 s
        (45000.0, 50000.0, {"within_s": 3, "tolerance_s": 1.5}, False, "above for 97.0 s"),  # 5 kW less only
        (40000.0, 40000.0, {"within_s": 3, "tolerance_s": 1.5}, False, "never back above 40.50 kW"),
        (40300.0, 50000.0, {"within_s": 3, "tolerance_s": 1.5}, True, "peak 45.30 kW"),  # within 1 % of 50 kW
    ],
)
def test_demand_response_met(during: float, after: float, params: dict[str, Any], passed: bool, fragment: str) -> None:
    ok, evidence = _check(_dr_trace(during, after), check="demand_response_met", **params)
    assert ok is passed and fragment in evidence, evidence


def test_demand_response_met_needs_the_end_of_the_request() -> None:
    cut = [r for r in _dr_trace(40000.0, 50000.0) if r["t"] < 200]
    ok, evidence = _check(cut, check="demand_response_met", within_s=3, tolerance_s=1.5)
    assert not ok and "the run ended before the request did" in evidence


# ------------------------------------------------------------------------------------------ phase switching
def _pilot(t: float, pwm: bool, connector: int = 1) -> dict[str, Any]:
    return {"t": t, "src": f"connector{connector}", "ev": "pilot", "state": "C", "pwm": pwm, "duty_pct": 20.0}


def _contactor(t: float, closed: bool, connector: int = 1) -> dict[str, Any]:
    return {"t": t, "src": f"connector{connector}", "ev": "contactor", "closed": closed, "commanded": True}


def _move(t: float, old: int, new: int, connector: int = 1) -> dict[str, Any]:
    return {"t": t, "src": f"connector{connector}", "ev": "phases", "phases": new, "from": old}


# Connector 1 switches down at 181.9 s and up at 391.9 s, each time in the safe order (offer withdrawn,
# contactor open, C2 moves, offer again after 10 s); connector 2 charges throughout on its phases.
PHASE_TRACE = [
    _pilot(5.0, True),
    _pilot(5.0, True, 2),
    _contactor(6.0, True),
    _contactor(6.0, True, 2),
    _pilot(180.5, False),
    _contactor(181.7, False),
    _move(181.9, 3, 1),
    _pilot(191.9, True),
    _contactor(193.2, True),
    _pilot(390.5, False),
    _contactor(391.7, False),
    _move(391.9, 1, 3),
    _pilot(401.9, True),
    _contactor(403.2, True),
]


@pytest.mark.parametrize(
    ("params", "passed", "fragment"),
    [
        (
            {"sequence": [[3, 1], [1, 3]]},
            True,
            "moves 3->1 at t=181.900, offered again +10.000 s; 1->3 at t=391.900, offered again +10.000 s; "
            "expected 3->1, 1->3",
        ),
        ({"sequence": [[3, 1]], "from_s": 180, "to_s": 188}, True, "in t=180..188: moves 3->1 at t=181.900"),
        ({"sequence": [], "from_s": 188, "to_s": 390}, True, "moves none; expected none"),
        ({"sequence": [[1, 3]], "from_s": 391.9, "to_s": 391.9}, True, "1->3 at t=391.900"),  # bounds included
        ({"sequence": [[1, 3]], "from_s": 390, "to_s": 391}, False, "moves none; expected 1->3"),  # too late
        ({"sequence": [], "from_s": 188}, False, "moves 1->3 at t=391.900"),
        ({"sequence": [[3, 1]]}, False, "; expected 3->1"),  # one move more than stated
        ({"sequence": [[1, 3], [3, 1]]}, False, "expected 1->3, 3->1"),  # the wrong order
        ({"sequence": [[3, 1], [1, 3], [3, 1]]}, False, "expected 3->1, 1->3, 3->1"),  # one move missing
        ({"sequence": [], "connector": 2}, True, "connector 2 in t=0..inf: moves none"),
        ({"sequence": [[3, 1]], "connector": 2}, False, "connector 2 in t=0..inf: moves none; expected 3->1"),
    ],
)
def test_phase_switches(params: dict[str, Any], passed: bool, fragment: str) -> None:
    ok, evidence = _check(PHASE_TRACE, check="phase_switches", **params)
    assert ok is passed and fragment in evidence, evidence


@pytest.mark.parametrize(
    ("before", "fragment"),
    [
        # The main contactor still closed: C2 would break (or make) the EV's current.
        ([_pilot(5.0, False), _contactor(6.0, True)], "C2 moved under load at t=20.000 (contactor closed)"),
        # The contactor open but the offer still on: the EV may close it again while the phases change.
        ([_pilot(5.0, True), _contactor(6.0, False)], "C2 moved under load at t=20.000 (offer on)"),
        ([_pilot(5.0, True), _contactor(6.0, True)], "(contactor closed and offer on)"),
        # Withdrawn and opened in the same instant, but traced after the move: it came too late.
        ([_pilot(5.0, True), _contactor(6.0, True), _move(20.0, 3, 1), _pilot(20.0, False)], "(contactor closed and"),
    ],
)
def test_phase_switches_fails_a_move_under_load(before: list[dict[str, Any]], fragment: str) -> None:
    trace = before if any(r["ev"] == "phases" for r in before) else [*before, _move(20.0, 3, 1)]
    ok, evidence = _check(trace, check="phase_switches", sequence=[[3, 1]])
    assert not ok and fragment in evidence, evidence


def test_phase_switches_takes_the_order_of_one_instant() -> None:
    # Offer withdrawn and contactor open in the same instant as the move, traced before it: safe.
    trace = [_pilot(5.0, True), _contactor(6.0, True), _pilot(20.0, False), _contactor(20.0, False)]
    assert _check([*trace, _move(20.0, 3, 1)], check="phase_switches", sequence=[[3, 1]])[0]
    # With no EV and nothing traced before it (the move at boot), nothing was under load.
    assert _check([_move(0.5, 1, 3)], check="phase_switches", sequence=[[1, 3]])[0]


@given(st.lists(st.floats(1, 1000), min_size=0, max_size=8), st.integers(0, 7))
def test_phase_switches_passes_exactly_the_moves_made(gaps: list[float], drop: int) -> None:
    records: list[dict[str, Any]] = []
    moves: list[list[int]] = []
    t, phases = 0.0, 3
    for gap in gaps:
        t += gap
        new = 4 - phases  # 3 -> 1 -> 3 ...
        records.append(_move(t, phases, new))
        moves.append([phases, new])
        phases = new
    assert _check(records, check="phase_switches", sequence=moves)[0]
    if moves:
        fewer = moves[: drop % len(moves)] + moves[drop % len(moves) + 1 :]
        assert not _check(records, check="phase_switches", sequence=fewer)[0]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "check 'phase_switches' needs sequence"),
        ({"sequence": [[3, 3]]}, "each move is [3, 1] or [1, 3]"),
        ({"sequence": [[3, 2]]}, "Input should be 1 or 3"),
        ({"sequence": [[3, 1]], "from_s": 20, "to_s": 10}, "to_s (10 s) comes before from_s (20 s)"),
    ],
)
def test_phase_switches_parameters_are_checked(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        CheckSpec.model_validate({"check": "phase_switches", **params})
