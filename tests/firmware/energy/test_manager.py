"""The energy manager's cycle: the site never exceeds its grid limit for random load profiles (beyond
the measurement-to-actuation delay), fallbacks when the site meter or the EMS go silent, demand
response, the local battery, board limits, discharge only when authorised, anti-chatter, and the
explanation of every result."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.energy import bounds as prio
from firmware.energy.bounds import Bound
from firmware.energy.manager import (
    SITE_EMS,
    ConnectorInput,
    ConnectorSpec,
    EnergyManager,
    EssConfig,
    SiteConfig,
)

V = 230.0
FULL_22KW = 32 * V * 3  # 22 080 W


def site(n: int, grid_kw: float, **kwargs: object) -> EnergyManager:
    cfg = SiteConfig(grid_import_max_w=grid_kw * 1000, **kwargs)  # type: ignore[arg-type]
    return EnergyManager(cfg, {k: ConnectorSpec(k, "board1", 3, V) for k in range(1, n + 1)})


def wanting(measured: dict[int, float], *, hw: float = FULL_22KW) -> dict[int, ConnectorInput]:
    return {k: ConnectorInput(measured_w=p, wants_power=True, hardware_max_w=hw) for k, p in measured.items()}


def simulate(
    manager: EnergyManager, building: list[float], ev_want: dict[int, float], delay_cycles: int = 1
) -> list[tuple[float, float, float]]:
    """One cycle per second: the site meter sees the building plus what the EVs draw; each EV draws
    ``min(its want, the setpoint it got delay_cycles ago)``. Returns (t, site power, building)."""
    setpoints: list[dict[int, float]] = [dict.fromkeys(ev_want, 0.0)] * delay_cycles
    out = []
    for t, load in enumerate(building):
        draw = {k: min(ev_want[k], max(0.0, setpoints[-delay_cycles][k])) for k in ev_want}
        site_w = load + sum(draw.values())
        out.append((float(t), site_w, load))
        manager.site_meter(site_w, float(t))
        result = manager.cycle(float(t), wanting(draw))
        setpoints.append({k: r.power_w for k, r in result.connectors.items()})
    return out


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 8),
    grid_kw=st.floats(20, 200),
    loads=st.lists(st.tuples(st.integers(1, 120), st.floats(0, 1)), min_size=1, max_size=8),
    wants=st.lists(st.floats(0, FULL_22KW), min_size=8, max_size=8),
    strategy=st.sampled_from(["equal", "priority", "departure"]),
)
def test_the_site_never_exceeds_its_grid_limit_beyond_the_actuation_delay(
    n: int, grid_kw: float, loads: list[tuple[int, float]], wants: list[float], strategy: str
) -> None:
    manager = site(n, grid_kw, strategy=strategy, hold_s=0.0, min_pause_s=0.0)
    building: list[float] = []
    for seconds, share in loads:  # a step profile of the other loads, up to the grid limit
        building += [share * grid_kw * 1000] * seconds
    history = simulate(manager, building, {k: wants[k - 1] for k in range(1, n + 1)})
    limit = grid_kw * 1000
    for i, (_, site_w, _load) in enumerate(history):
        # The EVs act on the setpoint of the previous cycle, which was computed from the reading
        # before that: a rise of the other loads can show for the two cycles it takes to react.
        rose = any(history[j][2] > history[j - 1][2] for j in range(max(1, i - 1), i + 1))
        if not rose:
            assert site_w <= limit + 1e-6, f"t={i}: {site_w:.0f} W > {limit:.0f} W"


def test_the_budget_follows_eq_1_2_5_1_and_is_explained() -> None:
    manager = site(2, 30)
    manager.site_meter(20_000, 0.0)  # 8 kW building + 12 kW EVs
    result = manager.cycle(0.0, wanting({1: 6_000, 2: 6_000}))
    assert result.budget_w == pytest.approx(22_000)
    assert [r.power_w for r in result.connectors.values()] == pytest.approx([11_000, 11_000])
    text = result.explain()
    assert "eq. 1.2.5.1" in text and "grid connection" in text and "connector 2: 11.00 kW" in text


def test_a_silent_site_meter_falls_back_to_the_static_total_and_recovers() -> None:
    manager = site(2, 30, fallback_ev_total_w=9_000, meter_timeout_s=10)
    manager.site_meter(10_000, 0.0)
    assert manager.cycle(0.0, wanting({1: 0, 2: 0})).fallback is None
    late = manager.cycle(11.0, wanting({1: 0, 2: 0}))
    assert late.fallback is not None and "site meter silent" in late.fallback
    assert late.budget_w == 9_000
    assert sum(r.power_w for r in late.connectors.values()) <= 9_000
    manager.site_meter(10_000, 12.0)
    assert manager.cycle(12.0, wanting({1: 0, 2: 0})).fallback is None


def test_an_expired_ems_setpoint_is_replaced_by_the_configured_static_limit() -> None:
    manager = site(1, 30, ems_fallback_import_w=8_000)
    manager.set_site_input(Bound(SITE_EMS, max_w=20_000, priority=prio.EMS, expires_at=60.0, detail="HEMS"))
    manager.site_meter(0.0, 0.0)
    assert manager.cycle(0.0, wanting({1: 0})).site_window.max_w == 20_000
    manager.site_meter(0.0, 61.0)
    late = manager.cycle(61.0, wanting({1: 0}))
    assert late.site_window.max_w == 8_000 and late.fallback == "ems expired"
    assert "EMS silent: static limit" in late.explain()


def test_demand_response_reduces_the_site_by_n_kw_until_its_end() -> None:
    manager = site(2, 50, hold_s=0.0)
    manager.site_meter(30_000, 0.0)  # 10 kW building + 2 x 10 kW
    manager.demand_response(reduce_by_w=10_000, until=900.0, now=0.0)
    result = manager.cycle(0.0, wanting({1: 10_000, 2: 10_000}))
    assert result.site_window.max_w == 20_000
    assert sum(r.power_w for r in result.connectors.values()) == pytest.approx(10_000)
    manager.site_meter(20_000, 901.0)
    after = manager.cycle(901.0, wanting({1: 5_000, 2: 5_000}))
    assert after.site_window.max_w == 50_000


def test_the_local_battery_keeps_every_ev_at_its_minimum() -> None:
    """Four EVs need 4 x 4.14 kW; the grid leaves 10 kW: the battery gives the missing 6.56 kW."""
    manager = site(4, 20, ess=EssConfig(max_discharge_w=50_000, min_energy_wh=10_000))
    manager.ess_state(50_000)
    manager.site_meter(10_000, 0.0)  # building 10 kW, EVs not yet drawing
    result = manager.cycle(0.0, wanting({1: 0, 2: 0, 3: 0, 4: 0}))
    assert result.ess_w == pytest.approx(4 * 4_140 - 10_000)
    assert all(r.power_w >= 4_140 - 1e-6 for r in result.connectors.values())
    manager.ess_state(10_000)  # at its reserve: no help, one EV pauses
    assert manager.cycle(1.0, wanting({1: 0, 2: 0, 3: 0, 4: 0})).ess_w == 0


def test_a_board_limit_holds_its_connectors_and_frees_the_rest_for_others() -> None:
    specs = {1: ConnectorSpec(1, "a", 3, V), 2: ConnectorSpec(2, "a", 3, V), 3: ConnectorSpec(3, "b", 3, V)}
    manager = EnergyManager(SiteConfig(grid_import_max_w=60_000), specs, board_limits={"a": 16_000})
    manager.site_meter(0.0, 0.0)
    powers = {k: r.power_w for k, r in manager.cycle(0.0, wanting({1: 0, 2: 0, 3: 0})).connectors.items()}
    assert powers[1] + powers[2] == pytest.approx(16_000)
    assert powers[3] == pytest.approx(FULL_22KW)


def test_no_discharge_unless_authorised() -> None:
    specs = {1: ConnectorSpec(1, "a", 3, V, bidirectional=True)}
    manager = EnergyManager(SiteConfig(grid_import_max_w=10_000, grid_export_max_w=10_000), specs)
    manager.site_meter(16_000, 0.0)  # the building alone is 6 kW over the limit
    inputs = wanting({1: 0})
    assert manager.cycle(0.0, inputs).connectors[1].power_w == 0, "default deny: no discharge"
    manager.authorise_discharge(1, 11_000, source="iso15118-20")
    assert manager.cycle(1.0, inputs).connectors[1].power_w == pytest.approx(-6_000), "V2B covers the peak"
    manager.authorise_discharge(1, None)
    assert manager.cycle(2.0, inputs).connectors[1].power_w == 0


def test_increases_wait_for_the_hold_time_decreases_do_not() -> None:
    manager = site(1, 30, hold_s=10.0, step_w=1_000.0)
    manager.site_meter(20_000, 0.0)  # 20 kW of other loads
    first = manager.cycle(0.0, wanting({1: 0})).connectors[1].power_w
    assert first == pytest.approx(10_000)
    manager.site_meter(19_500 + first, 1.0)  # the EV draws it; the others fell by 500 W: small, too soon
    assert manager.cycle(1.0, wanting({1: first})).connectors[1].power_w == first
    manager.site_meter(19_500 + first, 12.0)  # after the hold time the small increase is taken
    assert manager.cycle(12.0, wanting({1: first})).connectors[1].power_w == pytest.approx(first + 500)
    manager.site_meter(23_000 + first + 500, 13.0)  # the others rose by 3.5 kW: down at once
    assert manager.cycle(13.0, wanting({1: first + 500})).connectors[1].power_w == pytest.approx(first - 3_000)


def test_a_paused_connector_resumes_only_after_the_minimum_pause() -> None:
    manager = site(1, 30, min_pause_s=60.0, hold_s=0.0)
    manager.site_meter(5_000, 0.0)
    running = manager.cycle(0.0, wanting({1: 0})).connectors[1].power_w
    assert running == pytest.approx(FULL_22KW)
    manager.site_meter(29_000 + running, 1.0)  # a 24 kW load starts: 1 kW left is below 6 A
    assert manager.cycle(1.0, wanting({1: running})).connectors[1].paused
    manager.site_meter(5_000, 2.0)  # the load is gone at once, the EV is paused
    held = manager.cycle(2.0, wanting({1: 0})).connectors[1]
    assert held.power_w == 0 and any("resumes at least 60 s" in r for r in held.reasons)
    manager.site_meter(5_000, 61.0)
    assert manager.cycle(61.0, wanting({1: 0})).connectors[1].power_w == pytest.approx(FULL_22KW)


def test_site_config_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="strategy must be one of"):
        SiteConfig(grid_import_max_w=1, strategy="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grid_import_max_w"):
        SiteConfig(grid_import_max_w=math.nan)
    manager = site(1, 10)
    with pytest.raises(KeyError, match="no connector 7"):
        manager.set_connector_input(7, Bound("ems", max_w=1))
    with pytest.raises(ValueError, match="cannot be removed"):
        manager.clear_site_input("grid")


def test_a_meter_at_the_connection_point_does_not_count_the_battery_twice() -> None:
    """The meter sees the battery's discharge as less import: the manager adds its own setpoint back,
    so the battery's help stays steady instead of alternating between full and nothing."""
    manager = site(4, 20, ess=EssConfig(max_discharge_w=50_000, min_energy_wh=0))
    manager.ess_state(100_000)
    building, draws, history = 10_000.0, dict.fromkeys(range(1, 5), 0.0), []
    for t in range(10):
        ess = manager.last.ess_w if manager.last is not None else 0.0
        manager.site_meter(building + sum(draws.values()) - ess, float(t))
        result = manager.cycle(float(t), wanting(draws))
        draws = {k: r.power_w for k, r in result.connectors.items()}
        history.append(result.ess_w)
    assert max(history[2:]) - min(history[2:]) < 1.0, history
    assert history[-1] == pytest.approx(4 * 4_140 - 10_000)


def test_a_demand_response_that_ended_is_not_a_fallback() -> None:
    manager = site(1, 50)
    manager.site_meter(20_000, 0.0)
    manager.demand_response(reduce_by_w=5_000, until=60.0, now=0.0)
    assert manager.cycle(0.0, wanting({1: 0})).fallback is None
    manager.site_meter(20_000, 61.0)
    after = manager.cycle(61.0, wanting({1: 0}))
    assert after.fallback is None and after.site_window.max_w == 50_000


@pytest.mark.parametrize(
    ("soc", "floor", "needed_wh", "deadline", "discharges"),
    [
        (80.0, 30.0, 0.0, None, True),  # above the floor: V2B may use it
        (25.0, 30.0, 0.0, None, False),  # at or below the floor: never
        (None, 30.0, 0.0, None, False),  # SoC unknown with a floor set: default deny
        (80.0, None, 10_000.0, 7_200.0, True),  # 2 h x 22 kW can recharge 10 kWh: it may give
        (80.0, None, 50_000.0, 7_200.0, False),  # 50 kWh needed in 2 h: every Wh stays
    ],
)
def test_discharge_respects_the_floor_and_the_departure(
    soc: float | None, floor: float | None, needed_wh: float, deadline: float | None, discharges: bool
) -> None:
    specs = {1: ConnectorSpec(1, "a", 3, V, bidirectional=True)}
    manager = EnergyManager(SiteConfig(grid_import_max_w=10_000, grid_export_max_w=10_000), specs)
    manager.authorise_discharge(1, 11_000, source="iso15118-20")
    manager.site_meter(16_000, 0.0)  # 6 kW over the limit without the EV
    ci = ConnectorInput(
        wants_power=True, hardware_max_w=FULL_22KW, soc_pct=soc, discharge_floor_pct=floor,
        needed_wh=needed_wh, deadline=deadline,
    )  # fmt: skip
    result = manager.cycle(0.0, {1: ci}).connectors[1]
    assert (result.power_w < 0) is discharges, result.window.explain()
