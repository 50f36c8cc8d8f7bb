"""1/3-phase decisions of the energy manager: down at once below 6 A on three phases, up only after
the hysteresis, few switches, a one-phase connector capped at what one phase carries (the rest goes
to the others), and the site limit held with switching connectors for random load profiles."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.energy.bounds import Bound
from firmware.energy.manager import GRID, ConnectorInput, ConnectorSpec, EnergyManager, SiteConfig
from firmware.energy.phases import PhasePolicy, PhaseTrack, decide

V = 230.0
MIN_3PH = 6 * V * 3  # 4140 W: the least a three-phase PWM offer carries (IEC 61851-1 Table A.8)
MIN_1PH = 6 * V  # 1380 W
FULL_22KW = 32 * V * 3
POLICY = PhasePolicy()  # 500 W margin, 30 s, 120 s between switches, 10 switches per session


# ------------------------------------------------------------------------------------------ decide()
# (phases now, share W, seconds the share has lasted, seconds since the last switch, switches so far,
#  expected phases)
DECISIONS = [
    pytest.param(3, 11_000, 0, 999, 0, 3, id="plenty-stays-3"),
    pytest.param(3, MIN_3PH, 0, 999, 0, 3, id="exactly-6A-3ph-stays-3"),
    pytest.param(3, MIN_3PH - 1, 0, 0, 0, 1, id="below-6A-3ph-down-at-once-even-right-after-a-switch"),
    pytest.param(3, MIN_1PH, 0, 999, 0, 1, id="6A-1ph-down"),
    pytest.param(3, MIN_1PH - 1, 0, 999, 0, 3, id="too-little-for-either-stays-paused"),
    pytest.param(3, 3000, 0, 999, 10, 3, id="switches-used-up-stays"),
    pytest.param(1, MIN_3PH + 499, 999, 999, 0, 1, id="inside-the-margin-stays-1"),
    pytest.param(1, MIN_3PH + 500, 29, 999, 0, 1, id="not-yet-30s-stays-1"),
    pytest.param(1, MIN_3PH + 500, 30, 999, 0, 3, id="30s-of-enough-up"),
    pytest.param(1, 11_000, 30, 119, 1, 1, id="too-soon-after-the-last-switch"),
    pytest.param(1, 11_000, 30, 120, 1, 3, id="120s-after-the-last-switch-up"),
    pytest.param(1, 11_000, 30, 999, 10, 1, id="switches-used-up-stays-1"),
]


@pytest.mark.parametrize(("now_phases", "share", "lasted", "since_switch", "switches", "expected"), DECISIONS)
def test_phase_decisions(
    now_phases: int, share: float, lasted: float, since_switch: float, switches: int, expected: int
) -> None:
    now = 1000.0
    track = PhaseTrack(phases=now_phases, switched_at=now - since_switch, switches=switches)
    if lasted:  # the share has been there since now - lasted: one cycle then, one now
        decide(POLICY, track, share_w=share, wants_power=True, max_phases=3, voltage_v=V, now=now - lasted)
        track.switched_at, track.phases, track.switches = now - since_switch, now_phases, switches
    decision = decide(POLICY, track, share_w=share, wants_power=True, max_phases=3, voltage_v=V, now=now)
    assert decision.phases == expected
    assert track.switches == switches + (expected != now_phases)
    if expected != now_phases or switches >= POLICY.max_switches_per_session:
        assert decision.reason  # a switch, or one held back, is explained


def test_a_dip_restarts_the_hysteresis() -> None:
    track = PhaseTrack(phases=1)
    kw = {"wants_power": True, "max_phases": 3, "voltage_v": V}
    for t in range(0, 20):
        decide(POLICY, track, share_w=8000, now=float(t), **kw)  # type: ignore[arg-type]
    decide(POLICY, track, share_w=3000, now=20.0, **kw)  # type: ignore[arg-type]
    assert [decide(POLICY, track, share_w=8000, now=float(t), **kw).phases for t in range(21, 51)] == [1] * 30  # type: ignore[arg-type]
    assert decide(POLICY, track, share_w=8000, now=51.0, **kw).phases == 3  # type: ignore[arg-type]


def test_an_idle_connector_goes_back_to_all_phases_and_its_session_count_restarts() -> None:
    track = PhaseTrack(phases=1, switches=10)
    decision = decide(POLICY, track, share_w=0.0, wants_power=False, max_phases=3, voltage_v=V, now=5.0)
    assert decision.phases == 3 and track.switches == 0


@pytest.mark.parametrize("bad", [{"up_margin_w": -1.0}, {"up_after_s": float("nan")}, {"min_interval_s": float("inf")}])
def test_policy_errors_are_clear(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="phase switching"):
        PhasePolicy(**bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ the manager
def _site(grid_kw: float, switching: list[bool], **kwargs: object) -> EnergyManager:
    cfg = SiteConfig(grid_import_max_w=grid_kw * 1000, has_site_meter=False, hold_s=0.0, min_pause_s=0.0, **kwargs)  # type: ignore[arg-type]
    specs = {k: ConnectorSpec(k, "b", 3, V, phase_switching=s) for k, s in enumerate(switching, start=1)}
    return EnergyManager(cfg, specs)


def _wanting(keys: range, hw: float = FULL_22KW) -> dict[int, ConnectorInput]:
    return {k: ConnectorInput(wants_power=True, hardware_max_w=hw) for k in keys}


def test_below_6_a_on_three_phases_a_switching_connector_charges_on_one_where_another_pauses() -> None:
    manager = _site(3.0, [True, False])
    result = manager.cycle(0.0, {1: ConnectorInput(wants_power=True, hardware_max_w=FULL_22KW)})
    one = result.connectors[1]
    assert (one.phases, one.power_w) == (1, 3000.0)
    assert "below 6 A on 3 phases: one phase" in result.explain(1)
    fixed = _site(3.0, [False]).cycle(0.0, {1: ConnectorInput(wants_power=True, hardware_max_w=FULL_22KW)})
    assert fixed.connectors[1].paused and fixed.connectors[1].phases == 3


def test_a_one_phase_connector_is_capped_at_one_phase_and_the_rest_goes_to_the_others() -> None:
    # 12 kW for two: equal shares would be 6 kW each; connector 1 is held on one phase (it switched
    # down a moment ago and may not go up yet) and can take only 16 A x 230 V = 3.68 kW there.
    manager = _site(2.0, [True, False])
    first = manager.cycle(0.0, {1: ConnectorInput(wants_power=True, hardware_max_w=16 * V * 3)})
    assert first.connectors[1].phases == 1
    manager.set_site_input(Bound(GRID, max_w=12_000.0))  # the site grows
    inputs = {
        1: ConnectorInput(wants_power=True, hardware_max_w=16 * V * 3),
        2: ConnectorInput(wants_power=True, hardware_max_w=FULL_22KW),
    }
    result = manager.cycle(1.0, inputs)
    assert result.connectors[1].phases == 1
    assert result.connectors[1].power_w == pytest.approx(16 * V)
    assert result.connectors[2].power_w == pytest.approx(12_000 - 16 * V)


def test_held_on_three_phases_below_6_a_a_connector_pauses_and_frees_its_share() -> None:
    manager = _site(3.0, [True, False], phase_policy=PhasePolicy(max_switches_per_session=0))
    result = manager.cycle(0.0, _wanting(range(1, 2)))
    assert (result.connectors[1].phases, result.connectors[1].power_w, result.connectors[1].paused) == (3, 0.0, True)
    assert "switches of this session are used up: paused" in result.explain(1)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 6),
    switching=st.lists(st.booleans(), min_size=6, max_size=6),
    budgets=st.lists(st.tuples(st.integers(1, 90), st.floats(0.5, 40.0)), min_size=1, max_size=8),
)
def test_with_switching_connectors_the_chargers_never_exceed_the_site(
    n: int, switching: list[bool], budgets: list[tuple[int, float]]
) -> None:
    """Every cycle: the shares sum to at most the site limit, a share on N phases is 0 or at least 6 A
    on those N phases, and a one-phase share fits one phase of the connector's own limit."""
    manager = _site(22.0, switching[:n])
    t = 0.0
    for seconds, kw in budgets:
        manager.set_site_input(Bound(GRID, max_w=kw * 1000))
        for _ in range(seconds):
            result = manager.cycle(t, _wanting(range(1, n + 1)))
            assert sum(r.power_w for r in result.connectors.values()) <= kw * 1000 + 1e-6
            for r in result.connectors.values():
                assert r.power_w == 0 or r.power_w >= 6 * V * r.phases - 1e-6
                if r.phases == 1:
                    assert r.power_w <= FULL_22KW / 3 + 1e-6
            t += 1.0
