"""The TF-EVC formulas (golden values) and the splitting strategies (tables and properties)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.energy.balancing import (
    Demand,
    ess_support_w,
    ev_budget_w,
    ev_headroom_bems_w,
    ev_headroom_w,
    granted_w,
    split,
)

MIN_3PH = 6 * 230 * 3  # 4140 W: 6 A on three phases


# ------------------------------------------------------------------------------------------ formulas
@pytest.mark.parametrize(
    ("grid_max", "meter", "ev_now", "budget"),
    [
        (11_000, 9_000, 4_000, 6_000),  # 2 kW headroom: the chargers may add 2 kW
        (11_000, 13_000, 4_000, 2_000),  # 2 kW over: the chargers must shed 2 kW
        (11_000, -3_000, 0, 14_000),  # PV exports 3 kW: the chargers may take it on top
        (20_000, 20_000, 20_000, 20_000),  # all the load is the chargers, at the limit
    ],
)
def test_eq_1_2_5_1_chargers_budget(grid_max: float, meter: float, ev_now: float, budget: float) -> None:
    assert ev_budget_w(grid_max, meter, ev_now) == budget


def test_r60_headroom_from_a_smart_meter_and_from_a_bems() -> None:
    assert ev_headroom_w(11_000, 9_000) == 2_000
    assert ev_headroom_w(11_000, -2_000) == 13_000  # export reported negative
    assert ev_headroom_bems_w(11_000, 3_000, 9_000) == 5_000  # P_max + P_prod - P_cons


@pytest.mark.parametrize(
    ("used", "gen", "needed", "wished", "grid_max", "granted"),
    [
        (8_000, 2_000, 3_000, 7_000, 10_000, 4_000),  # grid-bound: 10 - (8 - 2)
        (4_000, 2_000, 3_000, 7_000, 10_000, 7_000),  # wish-bound
        (12_000, 0, 3_000, 7_000, 11_000, None),  # even P_needed does not fit: infeasible
        (0, 15_000, 0, 7_000, 10_000, 7_000),  # generation: |used - gen + granted| <= max allows the wish
        (0, 25_000, 20_000, 30_000, 10_000, 30_000),  # export side: granting must absorb at least 15 kW
    ],
)
def test_eq_3_2_6_1_2_granted_power(
    used: float, gen: float, needed: float, wished: float, grid_max: float, granted: float | None
) -> None:
    assert granted_w(used, gen, needed, wished, grid_max) == granted
    if granted is not None:
        assert abs(used - gen + granted) <= grid_max
        assert needed <= granted <= wished


@pytest.mark.parametrize(
    ("stored_wh", "ess_max", "expected"),
    [
        (10_000, 5_000, 4_000),  # 4 kW missing, the battery can give it
        (10_000, 2_500, 2_500),  # limited by its power
        (9_050, 5_000, 3_000),  # 50 Wh above the reserve over 60 s: 3 kW
        (9_000, 5_000, 0),  # at the reserve: nothing
    ],
)
def test_eq_3_2_6_3_4_ess_support(stored_wh: float, ess_max: float, expected: float) -> None:
    got = ess_support_w(
        p_used_w=12_000,
        p_gen_w=0,
        p_needed_w=3_000,
        p_grid_max_w=11_000,
        p_ess_max_w=ess_max,
        e_stored_wh=stored_wh,
        e_min_wh=9_000,
        dt_s=60,
    )
    assert got == pytest.approx(expected)


def test_ess_gives_nothing_when_the_need_fits() -> None:
    kwargs = {"p_gen_w": 0, "p_grid_max_w": 11_000, "p_ess_max_w": 5_000, "e_stored_wh": 1e4, "e_min_wh": 0}
    assert ess_support_w(p_used_w=5_000, p_needed_w=3_000, dt_s=1, **kwargs) == 0
    with pytest.raises(ValueError, match="recalculation period"):
        ess_support_w(p_used_w=5_000, p_needed_w=3_000, dt_s=0, **kwargs)


# ------------------------------------------------------------------------------------------ splitting
def d(key: int, max_w: float = 22_000, *, min_w: float = 0.0, needed: float = 0.0, deadline: float | None = None,
      priority: int = 0) -> Demand:  # fmt: skip
    return Demand(key, min_w, max_w, MIN_3PH, needed, deadline, priority)


SPLITS = [
    # (name, budget, demands, strategy, expected)
    ("equal shares", 30_000, [d(1), d(2), d(3)], "equal", {1: 10_000, 2: 10_000, 3: 10_000}),
    ("a small EV leaves more for others", 30_000, [d(1, 5_000), d(2), d(3)], "equal", {1: 5_000, 2: 12_500, 3: 12_500}),
    ("all fit", 100_000, [d(1), d(2)], "equal", {1: 22_000, 2: 22_000}),
    # 10 kW for three: 3.33 kW each is below 4.14 kW: the last one pauses, two get 5 kW.
    ("pause instead of below 6 A", 10_000, [d(1), d(2), d(3)], "equal", {1: 5_000, 2: 5_000, 3: 0}),
    ("nothing for anyone", 3_000, [d(1), d(2)], "equal", {1: 0, 2: 0}),
    ("priority first", 30_000, [d(1), d(2, priority=5), d(3)], "priority", {2: 22_000, 1: 8_000, 3: 0}),
    # Priority: the remainder 2 kW for connector 3 is below its minimum: paused.
    ("priority remainder below minimum", 46_000, [d(1), d(2), d(3)], "priority", {1: 22_000, 2: 22_000, 3: 0}),
    (
        "earliest departure gets its need",
        20_000,
        [d(1, needed=4_500, deadline=7_200), d(2, needed=12_000, deadline=3_600), d(3)],
        "departure",
        {2: 13_750, 1: 6_250, 3: 0},  # needs 12 + 4.5 kW, the other 3.5 kW equally; 3 would get < 6 A
    ),
    ("discharge covers a deficit", -6_000, [d(1, min_w=-10_000), d(2, min_w=-2_000), d(3)], "equal",
     {1: -4_000, 2: -2_000, 3: 0}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "budget", "demands", "strategy", "expected"), SPLITS, ids=[s[0] for s in SPLITS])
def test_split_table(
    name: str, budget: float, demands: list[Demand], strategy: str, expected: dict[int, float]
) -> None:
    got = split(budget, demands, strategy)  # type: ignore[arg-type]
    assert got == pytest.approx(expected)


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown splitting strategy 'fastest'"):
        split(10_000, [d(1)], "fastest")  # type: ignore[arg-type]


demands_strategy = st.lists(
    st.builds(
        lambda k, mx, mn, need, dl, pr: Demand(k, -mn, mx, MIN_3PH, need, dl, pr),
        st.integers(0, 10**6),
        st.floats(0, 50_000),
        st.floats(0, 20_000),
        st.floats(0, 30_000),
        st.one_of(st.none(), st.floats(0, 86_400)),
        st.integers(0, 3),
    ),
    max_size=30,
    unique_by=lambda dem: dem.key,
)


@settings(max_examples=300, deadline=None)
@given(st.floats(-100_000, 300_000), demands_strategy, st.sampled_from(["equal", "priority", "departure"]))
def test_split_invariants(budget: float, demands: list[Demand], strategy: str) -> None:
    got = split(budget, demands, strategy)  # type: ignore[arg-type]
    assert set(got) == {dem.key for dem in demands}
    forced = sum(min(dem.max_w, max(dem.min_w, 0.0)) for dem in demands)
    for dem in demands:
        p = got[dem.key]
        assert dem.min_w - 1e-6 <= p <= dem.max_w + 1e-6, "inside its window"
        assert p <= 1e-6 or p >= dem.min_active_w - 1e-6, "charging at least at 6 A, or paused"
    total = sum(got.values())
    assert total <= max(budget, forced) + 1e-6 * max(1.0, abs(budget)), "never above the budget"
    if budget >= 0 and all(dem.min_w >= 0 for dem in demands):
        assert total >= 0


@settings(max_examples=100, deadline=None)
@given(st.floats(0, 300_000), st.integers(1, 40))
def test_equal_split_is_equitable(budget: float, n: int) -> None:
    """Identical EVs: the running ones get the same power, the paused ones none, and one more could not run."""
    got = split(budget, [d(k) for k in range(n)], "equal")
    running = [p for p in got.values() if p > 0]
    assert all(math.isclose(p, running[0]) for p in running)
    if len(running) < n:
        assert budget / (len(running) + 1) < MIN_3PH
