"""The HIL rig with the DER grid-support functions (site.energy_manager.der): the format, the settings
the rig builds from it, the ``der`` trace records of short runs against the real firmware, the
``offer_stopped_within`` check on hand-written traces, and the bench's refusal of the energy manager."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from board.loader import load_board, resolve
from hil.bench.rig import parse_rig
from hil.bench.session import check_scenario
from hil.expect import RunFacts, evaluate
from hil.runner import RunResult, run_scenario
from hil.scenario import CheckSpec, Scenario, ScenarioError, der_settings, parse_scenario

#: sim-ac: 32 A x 3 phases x 230 V (board/sim-ac.toml), the rating p_rated_w defaults to.
SIM_AC_RATING_W = 32 * 3 * 230.0

# ------------------------------------------------------------------------------------------ the format
BASE = """\
format: 1
name: der
duration: 40s
settings: {free_charging: true}
site:
  grid_limit_kw: 50
  energy_manager:
    der: {functions: {ffr: true}, ffr: {activation_hz: 49.5}}
evs:
  - {id: car, connector: 1, battery_kwh: 60, soc: 0.3, max_current_a: 32, plug_in: 2s}
events:
  - {at: 20s, action: grid, frequency_hz: 49.45}
expect:
  - {check: offer_stopped_within, event: 0, within_s: 0.7, connectors: [1]}
"""


def test_the_der_parts_load() -> None:
    scenario = parse_scenario(BASE, "der.yaml")
    assert scenario.site is not None and scenario.site.energy_manager is not None
    manager = scenario.site.energy_manager
    assert manager.der == {"functions": {"ffr": True}, "ffr": {"activation_hz": 49.5}}
    assert manager.der_in_service is True
    check = scenario.expect[0]
    assert (check.check, check.event, check.at_s, check.within_s, check.connectors) == (
        "offer_stopped_within",
        0,
        None,
        0.7,
        [1],
    )
    at = parse_scenario(BASE.replace("event: 0,", "at_s: 20s,"), "der.yaml").expect[0]
    assert (at.event, at.at_s) == (None, 20.0)


# (replace this, with that, expected fragments of the message): each names the file, the line and the field
BROKEN = [
    ("activation_hz: 49.5", "activation_hz: 49.4",
     ["der.yaml:8: site.energy_manager.der", "ffr.activation_hz: must be one of 49.7, 49.6, 49.5"]),
    ("{functions: {ffr: true},", "{bogus: 1, functions: {ffr: true},",
     ["der.yaml:8: site.energy_manager.der", "unknown key(s) bogus"]),
    ("{ffr: true}", "{ffr: maybe}", ["site.energy_manager.der", "functions.ffr: must be true or false"]),
    ("activation_hz: 49.5}", "activation_hz: 49.5, sample_period_s: 0.5}",
     ["site.energy_manager.der", "misses the 0.7 s deadline at 49.5 Hz"]),
    ("    der: {functions: {ffr: true}, ffr: {activation_hz: 49.5}}\n", "    der: 5\n",
     ["der.yaml:8: site.energy_manager.der", "valid dictionary"]),
    ("    der: {functions: {ffr: true}, ffr: {activation_hz: 49.5}}\n", "    der_in_service: false\n",
     ["der.yaml:7: site.energy_manager", "der_in_service is for the DER functions: give der as well"]),
    ("within_s: 0.7, ", "", ["der.yaml:14: expect[0]", "check 'offer_stopped_within' needs within_s"]),
    (", connectors: [1]", "", ["expect[0]", "needs connectors"]),
    ("event: 0,", "", ["expect[0]", "needs either event (an index in events) or at_s"]),
    ("event: 0,", "event: 0, at_s: 20,", ["expect[0]", "needs either event (an index in events) or at_s"]),
    ("event: 0,", "event: 1,", ["expect[0]: event 1 is not an index of events (0..0)"]),
    ("event: 0,", "event: -1,", ["expect[0].event", "greater than or equal to 0"]),
    ("event: 0,", "at_s: 1min,", ["expect[0]: at_s = 60 s is after the end (40 s)"]),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "fragments"), BROKEN)
def test_broken_der_parts_name_the_line_and_the_field(old: str, new: str, fragments: list[str]) -> None:
    assert old in BASE
    with pytest.raises(ScenarioError) as info:
        parse_scenario(BASE.replace(old, new, 1), "der.yaml")
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert isinstance(info.value, ValueError)  # bad input: a ValueError subclass


def test_the_settings_take_the_boards_ratings_where_the_mapping_has_none() -> None:
    built = der_settings({"functions": {"ffr": True}}, p_rated_w=7400.0, v_nom_v=230.0, f_nom_hz=60.0)
    assert (built.p_rated_w, built.p_rated_charge_w, built.s_rated_va) == (7400.0, 7400.0, 7400.0)
    assert (built.v_nom_v, built.f_nom_hz) == (230.0, 60.0)
    assert built.ffr is not None and built.ffr.option.threshold_hz == 49.7  # FFR's own 50 Hz default option
    own = der_settings(
        {"p_rated_w": 5000, "v_nom_v": 240, "f_nom_hz": 50}, p_rated_w=7400.0, v_nom_v=230.0, f_nom_hz=60.0
    )
    assert (own.p_rated_w, own.v_nom_v, own.f_nom_hz) == (5000.0, 240.0, 50.0)
    with pytest.raises(ValueError, match=r"^ffr\.discharge_power_w: 9000 W exceeds p_rated_w 7400 W"):
        der_settings(
            {"functions": {"ffr": True}, "ffr": {"discharge_power_w": 9000}},
            p_rated_w=7400.0,
            v_nom_v=230.0,
            f_nom_hz=50.0,
        )


# ------------------------------------------------------------------------------------------ short runs
def _run(text: str, out: Path) -> tuple[RunResult, list[dict[str, Any]]]:
    result = asyncio.run(run_scenario(parse_scenario(text, "der.yaml"), out, out, report=False))
    records = [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]
    return result, records


def _der(records: list[dict[str, Any]], connector: int = 1) -> list[dict[str, Any]]:
    return [r for r in records if r["src"] == "energy" and r["ev"] == "der" and r["connector"] == connector]


@pytest.mark.timeout(60)
def test_a_frequency_drop_is_traced_at_the_grid_check_that_saw_it(tmp_path: Path) -> None:
    result, records = _run(BASE, tmp_path)
    assert result.passed, [c.evidence for c in result.checks]
    der = _der(records)
    first = der[0]
    cycles = [r for r in records if r["src"] == "energy" and r["ev"] == "cycle"]
    assert first["t"] == cycles[0]["t"]  # the controller's first grid check, right before its first cycle
    assert first["trip"] is None and first["reasons"] == []
    assert (first["p_max_W"], first["p_min_W"]) == (SIM_AC_RATING_W, 0.0)  # the board's rating, no discharge
    ffr = next(r for r in der if r["t"] >= 20.0)
    assert 20.0 <= ffr["t"] <= 20.1 + 1e-6  # the first 0.1 s grid check after the drop
    assert (ffr["p_max_W"], ffr["p_min_W"]) == (0.0, 0.0)
    assert any("FFR active" in reason for reason in ffr["reasons"])
    # One record per change: no two in a row with the same window and trip.
    keys = [(r["p_max_W"], r["p_min_W"], r["trip"]) for r in der]
    assert all(a != b for a, b in itertools.pairwise(keys))
    withdrawn = next(r for r in records if r["src"] == "connector1" and r["ev"] == "pilot" and r["t"] >= 20.0)
    assert withdrawn["pwm"] is False and withdrawn["t"] == ffr["t"]
    assert result.summary["ffr_activations"] == {"1": 1} and result.summary["ffr_late_samples"] == 0


@pytest.mark.timeout(60)
def test_out_of_service_at_the_start_no_offer_before_the_enter_service_delay(tmp_path: Path) -> None:
    text = BASE.replace(
        "der: {functions: {ffr: true}, ffr: {activation_hz: 49.5}}",
        "der: {enter_service: {delay_s: 8, ramp_s: 0}}\n    der_in_service: false",
    ).replace("  - {at: 20s, action: grid, frequency_hz: 49.45}\n", "  - {at: 20s, action: grid, frequency_hz: 50}\n")
    text = text.replace(
        "{check: offer_stopped_within, event: 0, within_s: 0.7, connectors: [1]}", "{check: sessions, count: 1}"
    )
    result, records = _run(text, tmp_path)
    assert result.passed, [c.evidence for c in result.checks]
    der = _der(records)
    assert (der[0]["p_max_W"], der[0]["p_min_W"]) == (0.0, 0.0)
    assert any("enter service: grid inside the window" in reason for reason in der[0]["reasons"])
    opened = next(r for r in der if r["p_max_W"] > 0)
    assert 8.0 <= opened["t"] - der[0]["t"] <= 8.1 + 1e-6 and opened["p_max_W"] == SIM_AC_RATING_W
    offers = [r["t"] for r in records if r["src"] == "connector1" and r["ev"] == "pilot" and r["pwm"]]
    assert offers and offers[0] >= opened["t"]  # default deny until the DER functions are in service


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("mapping", "tripped"),
    [
        # 280 V over the board's 230 V is 1.217 p.u., above OV2 (1.20 p.u. for 0.16 s, IEEE 1547-2018 Table 12).
        ("{}", "OV2"),
        # The scenario's own nominal voltage: 280 V is 1.0 p.u. of it.
        ("{v_nom_v: 280}", None),
    ],
)
def test_the_grid_voltage_is_measured_against_the_der_nominal_voltage(
    mapping: str, tripped: str | None, tmp_path: Path
) -> None:
    text = BASE.replace("der: {functions: {ffr: true}, ffr: {activation_hz: 49.5}}", f"der: {mapping}")
    text = text.replace("action: grid, frequency_hz: 49.45}", "action: grid, voltage_v: 280}")
    text = text.replace(
        "{check: offer_stopped_within, event: 0, within_s: 0.7, connectors: [1]}", "{check: sessions, count: 1}"
    )
    _, records = _run(text, tmp_path)
    trips = [r for r in _der(records) if r["trip"] is not None]
    if tripped is None:
        assert trips == []
        return
    assert trips and trips[0]["trip"] == tripped and (trips[0]["p_max_W"], trips[0]["p_min_W"]) == (0.0, 0.0)
    assert 20.16 - 1e-6 <= trips[0]["t"] <= 20.3  # its clearing time, then the next 0.1 s grid check
    assert any(reason.startswith("trip OV2: voltage 1.217 p.u.") for reason in trips[0]["reasons"])


@pytest.mark.timeout(60)
def test_a_setting_that_fails_only_against_the_boards_rating_stops_the_run_before_it_starts(tmp_path: Path) -> None:
    text = BASE.replace("ffr: {activation_hz: 49.5}", "ffr: {activation_hz: 49.5, discharge_power_w: 30000}")
    scenario = parse_scenario(text, "der.yaml")  # the rating is not known when the scenario is loaded
    with pytest.raises(ScenarioError) as info:
        asyncio.run(run_scenario(scenario, tmp_path, tmp_path, report=False))
    message = str(info.value)
    assert "site.energy_manager.der on connector 1 (board sim-ac, rating 22080 W)" in message, message
    assert "ffr.discharge_power_w: 30000 W exceeds p_rated_w 22080 W" in message, message


# ------------------------------------------------------------------------------------------ offer_stopped_within
CHECKS = """\
format: 1
name: checks
duration: 10min
site: {grid_limit_kw: 50}
evs:
  - {id: a, connector: 1, battery_kwh: 50, soc: 0.5, max_current_a: 32}
  - {id: b, connector: 2, battery_kwh: 50, soc: 0.5, max_current_a: 32}
events:
  - {at: 100s, action: grid, frequency_hz: 49.45}
  - {at: 200s, action: grid, frequency_hz: 49.45}
expect:
  - {check: sessions, count: 0}
"""


def _scenario() -> Scenario:
    return parse_scenario(CHECKS, "checks.yaml")


def _pilot(t: float, connector: int, amps: float | None) -> dict[str, Any]:
    """A pilot record: a PWM offer of ``amps`` (duty = amps / 0.6 %, IEC 61851-1 Table A.8), or none."""
    pwm = amps is not None
    duty = round(amps / 0.6, 1) if amps is not None else 0.0
    return {"t": t, "src": f"connector{connector}", "ev": "pilot", "state": "C", "pwm": pwm, "duty_pct": duty}


def _grid(t: float) -> dict[str, Any]:
    return {"t": t, "src": "rig", "ev": "action", "action": "grid", "connector": 1, "frequency_hz": 49.45}


def _limit(t: float, connector: int, amps: float, source: str = "site") -> dict[str, Any]:
    return {"t": t, "src": f"connector{connector}", "ev": "limit", "source": source, "value": amps, "unit": "A"}


def _check(records: list[dict[str, Any]], **params: Any) -> tuple[bool, str]:
    spec = CheckSpec.model_validate({"check": "offer_stopped_within", "within_s": 0.7, "connectors": [1, 2], **params})
    result = evaluate(spec, RunFacts(scenario=_scenario(), records=records))
    return result.passed, result.evidence


OFFERING = [_pilot(10.0, 1, 16.0), _pilot(12.0, 2, 16.0)]
ON_TIME = [*OFFERING, _grid(100.0), _limit(100.1, 1, 0.0), _pilot(100.1, 1, None), _pilot(100.2, 2, None)]


@pytest.mark.parametrize(
    ("records", "params", "passed", "fragments"),
    [
        (ON_TIME, {"event": 0}, True,
         ["after events[0] (grid at t=100.000): every offer withdrawn within 0.7 s",
          "connector 1: 16.0 A withdrawn after 0.100 s (site limit 0 A at +0.100 s)",
          "connector 2: 16.0 A withdrawn after 0.200 s"]),
        (ON_TIME, {"at_s": 100}, True, ["after t=100: every offer withdrawn"]),
        (ON_TIME, {"event": 0, "within_s": 0.15}, False,
         ["not all offers withdrawn within 0.15 s", "connector 2: 16.0 A withdrawn after 0.200 s (too late)"]),
        ([*OFFERING, _grid(100.0), _pilot(100.1, 1, None), _pilot(101.0, 2, None)], {"event": 0}, False,
         ["connector 2: 16.0 A withdrawn after 1.000 s (too late)"]),
        # Lowered to 6 A is still an offer: the EV may go on drawing.
        ([*OFFERING, _grid(100.0), _limit(100.1, 2, 6.0), _pilot(100.1, 1, None), _pilot(100.1, 2, 6.0)],
         {"event": 0}, False, ["connector 2: 16.0 A offered, never withdrawn"]),
        # A limit of 0 A alone is not enough: the pilot must follow.
        ([*OFFERING, _grid(100.0), _limit(100.1, 1, 0.0), _pilot(100.1, 2, None)], {"event": 0}, False,
         ["connector 1: 16.0 A offered, never withdrawn (site limit 0 A at +0.100 s)"]),
        ([_pilot(10.0, 1, 16.0), _grid(100.0), _pilot(100.1, 1, None)], {"event": 0}, False,
         ["connector 2: no offer at t=100.000, nothing to withdraw"]),
        # The second event: the withdrawal after the first one does not count for it.
        ([*ON_TIME, _pilot(150.0, 1, 16.0), _pilot(150.0, 2, 16.0), _grid(200.0), _pilot(200.5, 1, None),
          _pilot(200.6, 2, None)], {"event": 1}, True,
         ["after events[1] (grid at t=200.000)", "connector 1: 16.0 A withdrawn after 0.500 s"]),
        ([*ON_TIME, _pilot(150.0, 1, 16.0), _pilot(150.0, 2, 16.0), _grid(200.0), _pilot(200.5, 1, None)],
         {"event": 1}, False, ["connector 2: 16.0 A offered, never withdrawn"]),
        (OFFERING, {"event": 0}, False, ["events[0] (grid at 100 s) is not in the trace"]),
        # Records of the trigger's instant: those written before the action were in force, those after it
        # are the response.
        ([*OFFERING, _pilot(100.0, 2, 20.0), _grid(100.0), _pilot(100.0, 1, None), _pilot(100.0, 2, None)],
         {"event": 0}, True, ["connector 1: 16.0 A withdrawn after 0.000 s", "connector 2: 20.0 A withdrawn"]),
    ],
)  # fmt: skip
def test_offer_stopped_within(
    records: list[dict[str, Any]], params: dict[str, Any], passed: bool, fragments: list[str]
) -> None:
    ok, evidence = _check(records, **params)
    assert ok is passed, evidence
    for fragment in fragments:
        assert fragment in evidence, evidence


@settings(max_examples=60, deadline=None)
@given(
    latencies_ms=st.lists(st.one_of(st.none(), st.integers(0, 3000)), min_size=1, max_size=4),
    within_ms=st.integers(1, 2000),
)
def test_offer_stopped_within_passes_exactly_when_every_offer_goes_in_time(
    latencies_ms: list[int | None], within_ms: int
) -> None:
    t0 = 100.0
    connectors = list(range(1, len(latencies_ms) + 1))
    records = [_pilot(10.0, n, 16.0) for n in connectors] + [_grid(t0)]
    withdrawals = [(t0 + ms / 1000, n) for n, ms in zip(connectors, latencies_ms, strict=True) if ms is not None]
    records += [_pilot(t, n, None) for t, n in sorted(withdrawals)]
    # The within is half a millisecond off the latencies' grid: no float tie decides the outcome.
    ok, evidence = _check(records, event=0, connectors=connectors, within_s=(within_ms + 0.5) / 1000)
    assert ok is all(ms is not None and ms <= within_ms for ms in latencies_ms), evidence


# ------------------------------------------------------------------------------------------ the bench
def test_the_bench_refuses_a_scenario_with_the_energy_manager() -> None:
    rig = parse_rig(
        {
            "format": 1,
            "rig": {"name": "test-bench"},
            "gpio": {"factory": "mock"},
            "ev": {"relay_active_high": False, "cable_a": 32, "pilot_short_pin": 4, "diode_bypass_pin": 8,
                   "r2_pin": 9, "r3_c_pin": 10, "r3_d_pin": 11, "pp_13a_pin": 12, "pp_32a_pin": 15},
            "estop": {"pin": 25, "active_high": False, "pull": "up"},
        }
    )  # fmt: skip
    plain = BASE.replace("  energy_manager:\n    der: {functions: {ffr: true}, ffr: {activation_hz: 49.5}}\n", "")
    plain = plain.replace("  - {at: 20s, action: grid, frequency_hz: 49.45}\n", "")
    plain = plain.replace(
        "{check: offer_stopped_within, event: 0, within_s: 0.7, connectors: [1]}", "{check: sessions, count: 1}"
    )
    plain = plain.replace("events:\n", "events: []\n")
    for board in ("sim-ac", "pi-ac"):
        assert check_scenario(parse_scenario(plain, "der.yaml"), rig, load_board(resolve(board))) == []
        problems = check_scenario(parse_scenario(BASE, "der.yaml"), rig, load_board(resolve(board)))
        assert any(
            p.startswith("site.energy_manager: the bench does not run the site energy manager")
            and "run this scenario in simulation (without --bench)" in p
            for p in problems
        ), problems
