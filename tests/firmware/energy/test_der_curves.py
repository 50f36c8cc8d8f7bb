"""Curves, reactive-power functions and the response filter against the IEEE 1547 default points."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.energy.der_curves import (
    PF_MIN_ABSORBING,
    PF_MIN_INJECTING,
    VOLT_VAR_CAT_A,
    VOLT_VAR_CAT_B,
    VOLT_WATT_1547_1_CHAR2_ABSORBING,
    VOLT_WATT_DEFAULT,
    VOLT_WATT_GENERATING_ONLY,
    WATT_VAR_CAT_A,
    WATT_VAR_CAT_B,
    DerError,
    PiecewiseCurve,
    PowerFactorError,
    ResponseFilter,
    fixed_power_factor,
    volt_var,
    volt_watt_limit,
    watt_var,
)

# --- PiecewiseCurve ------------------------------------------------------------------------------------


def test_curve_interpolates_and_is_flat_outside() -> None:
    curve = PiecewiseCurve((1.0, 2.0, 4.0), (10.0, 20.0, 0.0))
    assert curve(0.0) == 10.0
    assert curve(1.0) == 10.0
    assert curve(1.5) == pytest.approx(15.0)
    assert curve(2.0) == 20.0
    assert curve(3.0) == pytest.approx(10.0)
    assert curve(4.0) == 0.0
    assert curve(99.0) == 0.0


def test_curve_with_a_repeated_point_is_continuous_there() -> None:
    curve = PiecewiseCurve((0.0, 1.0, 1.0, 2.0), (1.0, 0.0, 0.0, -1.0))
    assert curve(1.0) == 0.0
    assert curve(0.999) == pytest.approx(0.001)
    assert curve(1.001) == pytest.approx(-0.001)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        ((1.0,), (1.0,), "at least 2 points"),
        ((1.0, 2.0), (1.0,), "2 x points but 1 y points"),
        ((2.0, 1.0), (0.0, 0.0), "must ascend"),
        ((1.0, 1.0, 2.0), (0.0, 1.0, 1.0), "vertical step"),
        ((1.0, 1.0), (0.0, 0.0), "all x points are equal"),
        ((1.0, math.nan), (0.0, 0.0), "x[1] must be finite"),
        ((1.0, 2.0), (0.0, math.inf), "y[1] must be finite"),
        ((1.0, True), (0.0, 0.0), "must be a number"),
        (tuple(range(40)), tuple(range(40)), "at most 32 points"),
    ],
)
def test_curve_rejects_bad_points_with_a_clear_error(x: tuple[float, ...], y: tuple[float, ...], message: str) -> None:
    with pytest.raises(DerError, match=message.replace("[", r"\[").replace("]", r"\]")):
        PiecewiseCurve(x, y, name="test curve")


def test_curve_rejects_negative_response_time_and_nan_input() -> None:
    with pytest.raises(DerError, match="response_time_s must be >= 0"):
        PiecewiseCurve((0.0, 1.0), (0.0, 1.0), response_time_s=-1.0)
    with pytest.raises(DerError, match="input must be finite"):
        VOLT_VAR_CAT_B(math.nan)


# --- Default curves at their published points and between them ----------------------------------------

# (curve, x, expected y): the published points (IEEE 1547.1-2020 Tables 25-33, as in standards-facts 3.3),
# midpoints between them, and points outside the curve.
DEFAULT_CURVE_POINTS = [
    # Volt-var Cat A: 0.90/+0.25, 1.00/0, 1.00/0, 1.10/-0.25
    (VOLT_VAR_CAT_A, 0.85, 0.25),
    (VOLT_VAR_CAT_A, 0.90, 0.25),
    (VOLT_VAR_CAT_A, 0.95, 0.125),
    (VOLT_VAR_CAT_A, 1.00, 0.0),
    (VOLT_VAR_CAT_A, 1.05, -0.125),
    (VOLT_VAR_CAT_A, 1.10, -0.25),
    (VOLT_VAR_CAT_A, 1.20, -0.25),
    # Volt-var Cat B: 0.92/+0.44, 0.98/0, 1.02/0, 1.08/-0.44
    (VOLT_VAR_CAT_B, 0.80, 0.44),
    (VOLT_VAR_CAT_B, 0.92, 0.44),
    (VOLT_VAR_CAT_B, 0.95, 0.22),
    (VOLT_VAR_CAT_B, 0.98, 0.0),
    (VOLT_VAR_CAT_B, 1.00, 0.0),
    (VOLT_VAR_CAT_B, 1.02, 0.0),
    (VOLT_VAR_CAT_B, 1.05, -0.22),
    (VOLT_VAR_CAT_B, 1.08, -0.44),
    (VOLT_VAR_CAT_B, 1.15, -0.44),
    # Volt-watt, absorbing-capable DER (P'2 = 0): 1.06/1.0, 1.10/0
    (VOLT_WATT_DEFAULT, 1.00, 1.0),
    (VOLT_WATT_DEFAULT, 1.06, 1.0),
    (VOLT_WATT_DEFAULT, 1.08, 0.5),
    (VOLT_WATT_DEFAULT, 1.10, 0.0),
    (VOLT_WATT_DEFAULT, 1.15, 0.0),
    # Volt-watt, generating-only DER (P2 = 0.2): 1.06/1.0, 1.10/0.2
    (VOLT_WATT_GENERATING_ONLY, 1.06, 1.0),
    (VOLT_WATT_GENERATING_ONLY, 1.08, 0.6),
    (VOLT_WATT_GENERATING_ONLY, 1.09, 0.4),
    (VOLT_WATT_GENERATING_ONLY, 1.10, 0.2),
    # Watt-var Cat A: -1.0/+0.44, -0.5/0, -0.2/0, 0.2/0, 0.5/0, 1.0/-0.25
    (WATT_VAR_CAT_A, -1.0, 0.44),
    (WATT_VAR_CAT_A, -0.75, 0.22),
    (WATT_VAR_CAT_A, -0.5, 0.0),
    (WATT_VAR_CAT_A, 0.0, 0.0),
    (WATT_VAR_CAT_A, 0.5, 0.0),
    (WATT_VAR_CAT_A, 0.75, -0.125),
    (WATT_VAR_CAT_A, 1.0, -0.25),
    # Watt-var Cat B: ... 1.0/-0.44
    (WATT_VAR_CAT_B, -1.0, 0.44),
    (WATT_VAR_CAT_B, 0.2, 0.0),
    (WATT_VAR_CAT_B, 0.75, -0.22),
    (WATT_VAR_CAT_B, 1.0, -0.44),
]


@pytest.mark.parametrize(("curve", "x", "expected"), DEFAULT_CURVE_POINTS)
def test_default_curves_at_and_between_published_points(curve: PiecewiseCurve, x: float, expected: float) -> None:
    assert curve(x) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("curve", "response_time_s"),
    [(VOLT_VAR_CAT_A, 10.0), (VOLT_VAR_CAT_B, 5.0), (VOLT_WATT_DEFAULT, 10.0), (VOLT_WATT_GENERATING_ONLY, 10.0)],
)
def test_default_open_loop_response_times(curve: PiecewiseCurve, response_time_s: float) -> None:
    assert curve.response_time_s == response_time_s


# --- volt-var / volt-watt / watt-var in watts and vars -------------------------------------------------


def test_volt_var_scales_by_the_rating_and_shifts_with_vref() -> None:
    assert volt_var(0.95, VOLT_VAR_CAT_B, 10_000) == pytest.approx(2200.0)
    assert volt_var(1.05, VOLT_VAR_CAT_B, 10_000) == pytest.approx(-2200.0)
    # VRef 1.02 moves the whole curve up by 0.02 p.u.: 1.07 then acts like 1.05.
    assert volt_var(1.07, VOLT_VAR_CAT_B, 10_000, v_ref_pu=1.02) == pytest.approx(-2200.0)
    with pytest.raises(DerError, match="q_rated_var must be >= 0"):
        volt_var(1.0, VOLT_VAR_CAT_B, -1.0)


@pytest.mark.parametrize(
    ("v_pu", "curve", "expected_w"),
    [
        (1.00, VOLT_WATT_DEFAULT, 10_000.0),  # no limit below V1
        (1.08, VOLT_WATT_DEFAULT, 5_000.0),
        (1.10, VOLT_WATT_DEFAULT, 0.0),  # P'2 = 0: no injection, absorption not demanded
        (1.09, VOLT_WATT_GENERATING_ONLY, 4_000.0),
        # 1547.1 characteristic 2 goes on to P'2 = -1: absorption demanded, scaled by the charging rating
        (1.075, VOLT_WATT_1547_1_CHAR2_ABSORBING, 0.0),
        (1.10, VOLT_WATT_1547_1_CHAR2_ABSORBING, -7_000.0),
        (1.0875, VOLT_WATT_1547_1_CHAR2_ABSORBING, -3_500.0),
    ],
)
def test_volt_watt_limit_both_directions(v_pu: float, curve: PiecewiseCurve, expected_w: float) -> None:
    assert volt_watt_limit(v_pu, curve, 10_000, p_rated_absorbing_w=7_000) == pytest.approx(expected_w, abs=1e-6)


def test_watt_var_maps_the_managers_sign_to_1547_output() -> None:
    # Discharging 7.5 kW of 10 kW = output 0.75 p.u. -> Q -0.22 p.u. of 10 kVA (Cat B).
    assert watt_var(-7_500, WATT_VAR_CAT_B, 10_000, 10_000) == pytest.approx(-2_200.0)
    # Charging 7.5 kW of a 10 kW charging rating = output -0.75 p.u. -> Q +0.22 p.u.
    assert watt_var(7_500, WATT_VAR_CAT_B, 10_000, 10_000) == pytest.approx(2_200.0)
    # A separate charging rating: 3.75 kW of 5 kW is also -0.75 p.u.
    assert watt_var(3_750, WATT_VAR_CAT_B, 10_000, 10_000, p_rated_absorbing_w=5_000) == pytest.approx(2_200.0)
    with pytest.raises(DerError, match="positive ratings"):
        watt_var(0.0, WATT_VAR_CAT_B, 0.0, 10_000)


# --- Constant power factor ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "excitation", "minimum"),
    [("A", "injecting", 0.90), ("B", "injecting", 0.90), ("A", "absorbing", 0.97), ("B", "absorbing", 0.90)],
)
def test_pf_limits_per_category(category: str, excitation: str, minimum: float) -> None:
    table = PF_MIN_INJECTING if excitation == "injecting" else PF_MIN_ABSORBING
    assert table[category] == minimum
    # At the limit: accepted, |Q| = |P| tan(acos(pf)).
    q = fixed_power_factor(-10_000, minimum, excitation, category=category)  # type: ignore[arg-type]
    expected = 10_000 * math.tan(math.acos(minimum))
    assert abs(q) == pytest.approx(expected)
    assert (q > 0) == (excitation == "injecting")
    # Just below the limit: rejected with the limit named.
    with pytest.raises(PowerFactorError, match=f"outside {minimum:g}..1 for Category {category}"):
        fixed_power_factor(-10_000, minimum - 0.001, excitation, category=category)  # type: ignore[arg-type]


def test_fixed_pf_values_and_direction_independence() -> None:
    # pf 0.9: tan(acos 0.9) = 0.4843
    assert fixed_power_factor(-10_000, 0.9, "injecting") == pytest.approx(4843.22, abs=0.01)
    assert fixed_power_factor(10_000, 0.9, "injecting") == pytest.approx(4843.22, abs=0.01)
    assert fixed_power_factor(10_000, 0.95, "absorbing") == pytest.approx(-3286.84, abs=0.01)
    assert fixed_power_factor(5_000, 1.0, "absorbing") == 0.0
    with pytest.raises(PowerFactorError):
        fixed_power_factor(5_000, 1.01, "injecting")
    with pytest.raises(DerError, match="excitation must be"):
        fixed_power_factor(5_000, 0.95, "leading")  # type: ignore[arg-type]
    with pytest.raises(DerError, match="category must be"):
        fixed_power_factor(5_000, 0.95, "injecting", category="C")  # type: ignore[arg-type]


# --- Response filter ------------------------------------------------------------------------------------


@pytest.mark.parametrize("response_time_s", [0.5, 5.0, 10.0])
@pytest.mark.parametrize("dt", [0.01, 0.1, 0.25])
def test_response_filter_reaches_90_percent_at_the_response_time(response_time_s: float, dt: float) -> None:
    flt = ResponseFilter(response_time_s, initial=0.0)
    flt.step(0.0, 0.0)
    n = round(response_time_s / dt)
    value = 0.0
    for k in range(1, n + 1):
        value = flt.step(k * dt, 100.0)
    assert value == pytest.approx(90.0, abs=1e-6)


def test_response_filter_first_step_and_zero_time() -> None:
    flt = ResponseFilter(5.0)
    assert flt.value is None
    assert flt.step(10.0, 42.0) == 42.0  # no history: starts at the target
    assert ResponseFilter(0.0, initial=0.0).step(1.0, 7.0) == 7.0  # Tr 0: immediate
    with pytest.raises(DerError, match="time went backwards"):
        flt.step(9.0, 1.0)
    with pytest.raises(DerError, match="response_time_s must be >= 0"):
        ResponseFilter(-1.0)


@given(
    target=st.floats(-1e4, 1e4),
    start=st.floats(-1e4, 1e4),
    steps=st.lists(st.floats(0.0, 30.0), min_size=1, max_size=20),
)
def test_response_filter_never_overshoots(target: float, start: float, steps: list[float]) -> None:
    flt = ResponseFilter(5.0, initial=start)
    t = 0.0
    flt.step(t, target)
    previous = start
    for dt in steps:
        t += dt
        value = flt.step(t, target)
        lo, hi = min(start, target), max(start, target)
        assert lo - 1e-9 <= value <= hi + 1e-9
        assert abs(value - target) <= abs(previous - target) + 1e-9
        previous = value


# --- Properties of the default curves ---------------------------------------------------------------------

voltages = st.floats(0.0, 2.0, allow_nan=False)


@pytest.mark.parametrize("curve", [VOLT_VAR_CAT_A, VOLT_VAR_CAT_B])
@given(v1=voltages, v2=voltages, q_rated=st.floats(0.0, 1e6))
def test_volt_var_within_rating_and_non_increasing(curve: PiecewiseCurve, v1: float, v2: float, q_rated: float) -> None:
    lo, hi = sorted((v1, v2))
    q_lo, q_hi = volt_var(lo, curve, q_rated), volt_var(hi, curve, q_rated)
    assert abs(q_lo) <= q_rated + 1e-9
    assert abs(q_hi) <= q_rated + 1e-9
    assert q_hi <= q_lo + 1e-9


@pytest.mark.parametrize("curve", [VOLT_WATT_DEFAULT, VOLT_WATT_GENERATING_ONLY])
@given(v1=voltages, v2=voltages)
def test_default_volt_watt_never_demands_absorption_and_never_rises(
    curve: PiecewiseCurve, v1: float, v2: float
) -> None:
    lo, hi = sorted((v1, v2))
    limit_lo = volt_watt_limit(lo, curve, 10_000)
    limit_hi = volt_watt_limit(hi, curve, 10_000)
    assert 0.0 <= limit_hi <= limit_lo <= 10_000.0


@given(x=st.floats(-10.0, 10.0), points=st.lists(st.tuples(st.floats(-5, 5), st.floats(-5, 5)), min_size=2, max_size=8))
def test_any_valid_curve_stays_within_its_y_range(x: float, points: list[tuple[float, float]]) -> None:
    xs = sorted({round(p[0], 3) for p in points})
    if len(xs) < 2:
        return
    ys = [p[1] for p in points[: len(xs)]]
    curve = PiecewiseCurve(tuple(xs), tuple(ys))
    assert curve.y_min - 1e-9 <= curve(x) <= curve.y_max + 1e-9
    for px, py in curve.points():
        assert curve(px) == pytest.approx(py)
