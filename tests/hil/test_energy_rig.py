"""The HIL rig with the site energy manager: the scenario format's energy parts, the site battery
model, and short runs of the real manager against simulated chargers, read through the trace."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hal.clock import VirtualClock
from hil.runner import RunResult, ScenarioRun, run_scenario
from hil.scenario import BatterySpec, ScenarioError, parse_scenario
from hil.site import SiteBattery

# ------------------------------------------------------------------------------------------ the format
BASE = """\
format: 1
name: energy
duration: 2min
settings: {free_charging: true}
site:
  grid_limit_kw: 30
  energy_manager: {period_s: 1}
  battery: {capacity_kwh: 10, soc: 0.5, max_discharge_kw: 20, reserve_kwh: 2}
evs:
  - {id: a, connector: 1, battery_kwh: 50, soc: 0.5, max_current_a: 32, plug_in: 5s}
events:
  - {at: 10s, action: ems_setpoint, import_max_kw: 20, valid: 1min}
  - {at: 20s, action: demand_response, reduce_kw: 5, for: 30s}
  - {at: 30s, action: site_meter_outage}
expect:
  - {check: ess_soc_at_least, soc: 0.2}
"""


def test_the_energy_parts_load() -> None:
    scenario = parse_scenario(BASE, "energy.yaml")
    assert scenario.site is not None and scenario.site.energy_manager is not None
    assert scenario.site.energy_manager.strategy == "equal" and scenario.site.energy_manager.meter_timeout_s == 10
    assert scenario.site.battery == BatterySpec(capacity_kwh=10, soc=0.5, max_discharge_kw=20, reserve_kwh=2)
    assert scenario.events[0].valid == 60 and scenario.events[1].for_ == 30 and scenario.events[1].reduce_kw == 5


# (replace this, with that, expected fragments of the message): each names the file, the line and the field
BROKEN = [
    ("  grid_limit_kw: 30\n", "", ["energy.yaml:5: site", "an energy_manager needs grid_limit_kw"]),
    ("  energy_manager: {period_s: 1}\n", "",
     ["energy.yaml:5: site", "a battery needs an energy_manager"]),
    ("reserve_kwh: 2", "reserve_kwh: 10", ["energy.yaml:8: site.battery", "must be below capacity_kwh"]),
    ("{period_s: 1}", "{strategy: earliest}", ["energy.yaml:7: site.energy_manager.strategy", "'departure'"]),
    ("plug_in: 5s}", "plug_in: 5s, departure: 1h}", ["energy.yaml:10: evs[0]", "departure and energy_need_kwh go"]),
    ("plug_in: 5s}", "plug_in: 5s, departure: 2s, energy_need_kwh: 5}",
     ["evs[0]", "departure (2 s) must come after plug_in (5 s)"]),
    ("{period_s: 1}", "{period_s: 0}", ["energy.yaml:7: site.energy_manager.period_s", "greater than 0"]),
    (", valid: 1min}", "}", ["energy.yaml:12: events[0]", "action 'ems_setpoint' needs valid"]),
    (", valid: 1min}", ", valid: 0}", ["events[0]", "needs a positive validity"]),
    (", for: 30s}", "}", ["energy.yaml:13: events[1]", "action 'demand_response' needs for"]),
    ("reduce_kw: 5", "reduce_kw: -5", ["energy.yaml:13: events[1].reduce_kw", "greater than 0"]),
    ("{check: ess_soc_at_least, soc: 0.2}", "{check: chargers_power}",
     ["energy.yaml:16: expect[0]", "needs min_kw and/or max_kw"]),
    ("{check: ess_soc_at_least, soc: 0.2}", "{check: site_power, max_kw: 3, from_s: 20, to_s: 10}",
     ["expect[0]", "to_s (10 s) comes before from_s (20 s)"]),
    ("{check: ess_soc_at_least, soc: 0.2}", "{check: all_charging, from_s: 1}",
     ["expect[0]", "needs connectors"]),
    ("{check: ess_soc_at_least, soc: 0.2}", "{check: demand_response_met}", ["expect[0]", "needs within_s"]),
    ("{check: ess_soc_at_least, soc: 0.2}", "{check: energy_fallback}", ["expect[0]", "needs active"]),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "fragments"), BROKEN)
def test_broken_energy_parts_name_the_line_and_the_field(old: str, new: str, fragments: list[str]) -> None:
    assert old in BASE
    with pytest.raises(ScenarioError) as info:
        parse_scenario(BASE.replace(old, new, 1), "energy.yaml")
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message


WITHOUT_MANAGER = """\
format: 1
name: plain
duration: 2min
site: {grid_limit_kw: 30}
events: EVENTS
expect: [CHECK]
"""


@pytest.mark.parametrize(
    ("events", "check", "fragment"),
    [
        ("[{at: 10s, action: ems_setpoint, import_max_kw: 20, valid: 1min}]", "{check: sessions, count: 0}",
         "events[0]: action 'ems_setpoint' needs site.energy_manager"),
        ("[{at: 10s, action: demand_response, reduce_kw: 5, for: 1min}]", "{check: sessions, count: 0}",
         "events[0]: action 'demand_response' needs site.energy_manager"),
        ("[{at: 10s, action: site_meter_outage}]", "{check: sessions, count: 0}",
         "events[0]: action 'site_meter_outage' needs site.energy_manager"),
        ("[]", "{check: energy_fallback, active: true}",
         "expect[0]: check 'energy_fallback' needs site.energy_manager"),
        ("[]", "{check: ess_discharged, min_kwh: 1}", "expect[0]: check 'ess_discharged' needs site.energy_manager"),
    ],
)  # fmt: skip
def test_energy_events_and_checks_need_the_manager(events: str, check: str, fragment: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(WITHOUT_MANAGER.replace("EVENTS", events).replace("CHECK", check), "plain.yaml")
    assert fragment in str(info.value), str(info.value)


def test_the_chargers_and_site_checks_need_no_manager() -> None:
    text = WITHOUT_MANAGER.replace("EVENTS", "[]").replace("CHECK", "{check: site_power, max_kw: 30}")
    assert parse_scenario(text, "plain.yaml").expect[0].check == "site_power"


def test_battery_checks_need_a_battery_and_demand_response_met_a_request() -> None:
    no_battery = BASE.replace("  battery: {capacity_kwh: 10, soc: 0.5, max_discharge_kw: 20, reserve_kwh: 2}\n", "")
    with pytest.raises(ScenarioError, match=r"check 'ess_soc_at_least' needs site\.battery"):
        parse_scenario(no_battery, "energy.yaml")
    no_request = BASE.replace("  - {at: 20s, action: demand_response, reduce_kw: 5, for: 30s}\n", "").replace(
        "{check: ess_soc_at_least, soc: 0.2}", "{check: demand_response_met, within_s: 3}"
    )
    with pytest.raises(ScenarioError, match="'demand_response_met' needs a demand_response event"):
        parse_scenario(no_request, "energy.yaml")


def test_all_charging_connectors_count_as_the_sites_connectors() -> None:
    text = BASE.replace("{check: ess_soc_at_least, soc: 0.2}", "{check: all_charging, connectors: [1, 4], from_s: 1}")
    assert parse_scenario(text, "energy.yaml").connectors == 4


# ------------------------------------------------------------------------------------------ the battery model
def _battery(**changes: float) -> SiteBattery:
    spec = {"capacity_kwh": 10.0, "soc": 0.5, "max_discharge_kw": 20.0, "reserve_kwh": 2.0, **changes}
    return SiteBattery(BatterySpec.model_validate(spec), 0.0)


def test_the_battery_integrates_its_power() -> None:
    battery = _battery()
    battery.set_power(18000.0, 100.0)
    battery.advance(200.0)
    assert battery.stored_wh == pytest.approx(5000.0 - 500.0) and battery.soc == pytest.approx(0.45)
    battery.set_power(50000.0, 200.0)  # above what its inverter gives
    assert battery.power_w == 20000.0
    battery.set_power(-5000.0, 200.0)  # this model never charges
    assert battery.power_w == 0.0


def test_an_empty_battery_gives_nothing() -> None:
    battery = _battery(soc=0.01)  # 100 Wh
    battery.set_power(20000.0, 0.0)
    battery.advance(3600.0)
    assert battery.stored_wh == 0.0 and battery.power_w == 0.0
    battery.set_power(1000.0, 3600.0)
    assert battery.power_w == 0.0


@given(st.lists(st.tuples(st.floats(0, 600), st.floats(0, 30000)), max_size=30))
def test_the_battery_never_goes_below_empty_nor_gains_energy(settings: list[tuple[float, float]]) -> None:
    battery = _battery()
    t, before = 0.0, battery.stored_wh
    for dt, watts in settings:
        t += dt
        battery.set_power(watts, t)
        assert 0.0 <= battery.stored_wh <= before + 1e-9
        assert 0.0 <= battery.power_w <= battery.max_discharge_w
        before = battery.stored_wh


# ------------------------------------------------------------------------------------------ runs
def _run(text: str, tmp_path: Path) -> RunResult:
    scenario = parse_scenario(text, tmp_path / "scenario.yaml")
    return asyncio.run(run_scenario(scenario, tmp_path, tmp_path / "out", report=False))


def _records(result: RunResult, ev: str, src: str | None = None) -> list[dict[str, Any]]:
    lines = (result.out_dir / "trace.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [r for r in records if r["ev"] == ev and (src is None or r["src"] == src)]


TWO_EVS = """\
format: 1
name: two-evs
duration: 1min
settings: {free_charging: true}
site:
  grid_limit_kw: 30
  building_load_kw: {steps: [[0, 2]]}
  energy_manager: {strategy: STRATEGY, period_s: 1}
evs:
  - {id: low, connector: 1, battery_kwh: 50, soc: 0.5, max_current_a: 32, plug_in: 2s}
  - {id: high, connector: 2, battery_kwh: 50, soc: 0.5, max_current_a: 32, plug_in: 2s, priority: 5}
expect:
  - {check: site_power_below_grid_limit, tolerance_s: 0}
  - {check: energy_fallback, active: false}
"""


@pytest.mark.parametrize(("strategy", "low_kw", "high_kw"), [("equal", 14.0, 14.0), ("priority", 5.92, 22.08)])
def test_the_strategy_and_the_ev_priority_reach_the_manager(
    strategy: str, low_kw: float, high_kw: float, tmp_path: Path
) -> None:
    result = _run(TWO_EVS.replace("STRATEGY", strategy), tmp_path)
    assert result.passed, [c.evidence for c in result.checks if not c.passed]
    last = _records(result, "cycle", "energy")[-1]
    assert last["shares"] == {"1": pytest.approx(low_kw * 1000, abs=1), "2": pytest.approx(high_kw * 1000, abs=1)}
    assert last["budget_W"] == pytest.approx(28000, abs=1) and last["fallback"] is None and last["paused"] == []
    drawn = {r["src"]: r["W"] for r in _records(result, "power")}
    # What the EVs draw: the share rounded down to 0.1 A, then to the pilot's duty steps (0.06 A), on
    # three phases at 230 V; never above the share.
    for connector, kw in (("connector1", low_kw), ("connector2", high_kw)):
        assert kw * 1000 - 0.2 * 690 <= drawn[connector] <= kw * 1000 + 1e-6
    assert result.summary["energy_cycles"] >= 55 and result.summary["energy_fallbacks"] == 0


def test_energy_records_are_written_on_changes_only(tmp_path: Path) -> None:
    result = _run(TWO_EVS.replace("STRATEGY", "equal"), tmp_path)
    cycles = _records(result, "cycle", "energy")
    assert 2 <= len(cycles) < result.summary["energy_cycles"] / 4  # steady after the plug-in
    assert all(set(r) == {"t", "src", "ev", "budget_W", "fallback", "ess_W", "shares", "paused"} for r in cycles)
    assert not _records(result, "battery")  # no battery in this site
    assert all("battery_W" not in r for r in _records(result, "site_power"))


PEAK = """\
format: 1
name: peak
duration: 3min
settings: {free_charging: true}
site:
  grid_limit_kw: 20
  building_load_kw: {steps: [[0, 5], [1min, 15], [2min, 5]]}
  energy_manager: {period_s: 1}
  battery: {capacity_kwh: 5, soc: 0.5, max_discharge_kw: 10, reserve_kwh: 1}
evs:
  - {id: a, connector: 1, battery_kwh: 50, soc: 0.5, max_current_a: 32, plug_in: 2s}
  - {id: b, connector: 2, battery_kwh: 50, soc: 0.5, max_current_a: 32, plug_in: 2s}
expect:
  - {check: site_power_below_grid_limit, tolerance_s: 2.5}
  - {check: all_charging, connectors: [1, 2], from_s: 10s}
  - {check: ess_discharged, min_kwh: 0.05, max_kwh: 0.06, from_s: 1min, to_s: 2min}
  - {check: ess_soc_at_least, soc: 0.48}
"""


def test_the_battery_fills_the_gap_steadily_and_the_site_stays_at_its_limit(tmp_path: Path) -> None:
    """The building leaves 5 kW; two EVs at 6 A need 8.28 kW: the battery gives 3.28 kW, held (not
    asked twice every other cycle), and the connection point stays at its limit."""
    result = _run(PEAK, tmp_path)
    assert result.passed, [c.evidence for c in result.checks if not c.passed]
    # A battery record on every change of its power: one on at the peak's first cycle, one off after it.
    assert [r["W"] for r in _records(result, "battery") if 59 < r["t"] < 122] == [pytest.approx(3280.0), 0.0]
    assert [r["ess_W"] for r in _records(result, "cycle", "energy") if 59 < r["t"] < 122] == [
        pytest.approx(3280.0),
        0.0,
    ]
    site = [r for r in _records(result, "site_power") if 62 <= r["t"] <= 119]
    assert all(r["W"] == pytest.approx(20000.0, abs=70) and r["battery_W"] > 0 for r in site)
    soc = [r["soc"] for r in _records(result, "battery")]
    assert soc == sorted(soc, reverse=True)  # it only discharges
    assert result.summary["battery_soc_end"] == pytest.approx(soc[-1], abs=1e-4)


def test_ems_setpoints_and_the_meter_outage_drive_the_manager(tmp_path: Path) -> None:
    text = """\
format: 1
name: ems
duration: 2min
settings: {free_charging: true}
site:
  grid_limit_kw: 30
  energy_manager: {period_s: 1, meter_timeout_s: 5, fallback_ev_total_kw: 8, ems_fallback_kw: 12}
evs:
  - {id: a, connector: 1, battery_kwh: 50, soc: 0.5, max_current_a: 32, plug_in: 2s}
events:
  - {at: 10s, action: ems_setpoint, import_max_kw: 16, valid: 20s}
  - {at: 60s, action: site_meter_outage}
  - {at: 90s, action: site_meter_restore}
expect:
  - {check: site_power, min_kw: 22, from_s: 5s, to_s: 10s}
  - {check: site_power, min_kw: 15.5, max_kw: 16, from_s: 13s, to_s: 30s}
  - {check: energy_fallback, active: true, from_s: 31.5s, to_s: 60s}
  - {check: site_power, min_kw: 11.5, max_kw: 12, from_s: 33s, to_s: 60s}
  - {check: chargers_power, min_kw: 7.5, max_kw: 8, from_s: 68s, to_s: 90s}
  - {check: site_power, min_kw: 11.5, max_kw: 12, from_s: 93s}
"""
    result = _run(text, tmp_path)
    assert result.passed, [c.evidence for c in result.checks if not c.passed]
    actions = [r for r in _records(result, "action", "rig") if r["action"] == "ems_setpoint"]
    assert actions == [
        {"t": 10.0, "src": "rig", "ev": "action", "action": "ems_setpoint", "connector": 1,
         "import_max_kw": 16.0, "valid": 20.0}
    ]  # fmt: skip
    fallbacks = {r["fallback"] for r in _records(result, "cycle", "energy") if r["fallback"]}
    assert any("ems expired" in f for f in fallbacks) and any("site meter silent" in f for f in fallbacks)


def test_the_manager_cycles_on_the_runs_clock_and_stops_with_it(tmp_path: Path) -> None:
    text = TWO_EVS.replace("STRATEGY", "equal").replace("period_s: 1", "period_s: 2")
    scenario = parse_scenario(text, "two.yaml")

    async def go() -> tuple[int, int]:
        run = ScenarioRun(scenario, tmp_path, tmp_path)
        await run.start()
        try:
            await run.run()
            cycles = run.energy_cycles
            assert run.now() == pytest.approx(60.0) and isinstance(run.clock, VirtualClock)
            await run.clock.advance(30.0)  # after the run: no cycle any more
            return cycles, run.energy_cycles
        finally:
            await run.close()

    during, after = asyncio.run(go())
    assert 28 <= during <= 31 and after == during


DEPARTURES = """\
format: 1
name: departures
duration: 1min
settings: {free_charging: true}
site:
  grid_limit_kw: 24
  energy_manager: {strategy: STRATEGY, period_s: 1}
evs:
  - {id: leaves, connector: 1, battery_kwh: 50, soc: 0.5, max_current_a: 32, plug_in: 2s,
     departure: 20min, energy_need_kwh: 4}
  - {id: stays, connector: 2, battery_kwh: 50, soc: 0.5, max_current_a: 32, plug_in: 2s}
expect:
  - {check: all_charging, connectors: [1, 2], from_s: 10s}
"""


@pytest.mark.parametrize(("strategy", "leaves_kw", "stays_kw"), [("equal", 12.0, 12.0), ("departure", 17.8, 6.2)])
def test_departures_and_energy_needs_reach_the_manager(
    strategy: str, leaves_kw: float, stays_kw: float, tmp_path: Path
) -> None:
    """4 kWh in 20 min need 12 kW: the departure strategy gives that first (less as the need shrinks), and
    the 12 kW left equally on top; the equal strategy ignores the departure."""
    result = _run(DEPARTURES.replace("STRATEGY", strategy), tmp_path)
    assert result.passed, [c.evidence for c in result.checks if not c.passed]
    shares = _records(result, "cycle", "energy")[-1]["shares"]
    assert shares["1"] == pytest.approx(leaves_kw * 1000, abs=250)
    assert shares["2"] == pytest.approx(stays_kw * 1000, abs=250)
