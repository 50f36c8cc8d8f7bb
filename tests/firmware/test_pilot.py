"""The control pilot: duty <-> current (IEC 61851-1 Tables A.7 / A.8), voltage windows, diode judgement and
the debouncer (standards-facts.md 1.2, 1.4, 1.5; anchors.md 8.5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.iec61851.pilot import (
    HLC_DUTY_PERMILLE,
    CpState,
    PilotDebouncer,
    classify,
    current_for_duty,
    duty_for_current,
)
from firmware.iec61851.timing import PILOT_DEBOUNCE_POWER_DOWN, PILOT_DEBOUNCE_POWER_UP
from hal.types import PilotReading

# ------------------------------------------------------------------------------ duty <-> current


@pytest.mark.parametrize(
    ("amps", "permille"),
    [
        # standards-facts.md 1.4, "Example values" (EVerest bring-up doc; Table A.7).
        (6.0, 100),
        (10.0, 166),
        (16.0, 266),
        (32.0, 533),
        (51.0, 850),
        (63.0, 892),
        (80.0, 960),
    ],
    ids=lambda v: f"{v}",
)
def test_duty_for_current_matches_the_table_a7_examples(amps: float, permille: int) -> None:
    assert duty_for_current(amps) == permille


@pytest.mark.parametrize("amps", [0.0, 1.0, 5.0, 5.99, 5.9999999, -1.0, float("nan"), float("-inf")])
def test_below_6_amps_there_is_no_offer(amps: float) -> None:
    assert duty_for_current(amps) is None


@pytest.mark.parametrize("amps", [80.0, 80.01, 81.0, 100.0, 1e6])
def test_above_80_amps_the_offer_is_capped_at_96_percent(amps: float) -> None:
    assert duty_for_current(amps) == 960


def test_a_non_finite_limit_is_not_trusted() -> None:
    # Default deny: an infinite value is a broken computation upstream, not permission to offer 80 A.
    assert duty_for_current(float("inf")) is None


@pytest.mark.parametrize("amps", [51.0, 51.01, 51.5, 52.0, 52.5, 52.74])
def test_the_51_to_52_75_amp_gap_is_offered_as_51_amps(amps: float) -> None:
    # 85.0 % decodes as 51 A and 85.1 % as 52.75 A: nothing in between can be encoded.
    assert duty_for_current(amps) == 850
    assert current_for_duty(850) == pytest.approx(51.0)


def test_52_75_amps_is_the_lowest_current_of_the_high_band() -> None:
    assert duty_for_current(52.75) == 851
    assert current_for_duty(851) == pytest.approx(52.75)


def test_hlc_duty_is_5_percent_and_decodes_as_no_current() -> None:
    assert HLC_DUTY_PERMILLE == 50
    assert current_for_duty(HLC_DUTY_PERMILLE) == 0.0


def _resolution(amps: float) -> float:
    """What one 0.1 % duty step is worth in the band of ``amps``: 0.06 A (low band), 0.25 A (high band)."""
    return 0.06 if amps <= 51.0 else 0.25


@given(st.floats(min_value=6.0, max_value=80.0, allow_nan=False))
def test_an_offer_never_exceeds_the_limit_and_loses_at_most_one_step(amps: float) -> None:
    duty = duty_for_current(amps)
    assert duty is not None
    decoded = current_for_duty(duty)
    assert decoded <= amps + 1e-9, "the EV must never read more than the limit"
    if 51.0 < amps < 52.75:
        assert decoded == pytest.approx(51.0)  # the gap of the norm
    else:
        assert decoded >= amps - _resolution(amps) - 1e-9


@given(
    st.floats(min_value=0.0, max_value=100.0, allow_nan=False),
    st.floats(min_value=0.0, max_value=100.0, allow_nan=False),
)
def test_encoding_is_monotonic(a: float, b: float) -> None:
    low, high = sorted((a, b))
    d_low, d_high = duty_for_current(low), duty_for_current(high)
    if d_low is not None:
        assert d_high is not None
        assert d_low <= d_high


@given(st.integers(min_value=100, max_value=960))
def test_decoding_then_encoding_gives_the_same_duty(duty: int) -> None:
    # Every duty of the two bands is reachable: the encoder is the exact inverse on the grid.
    assert duty_for_current(current_for_duty(duty)) == duty


@pytest.mark.parametrize(
    ("permille", "amps"),
    [
        # Table A.8 bands (standards-facts.md 1.4), each edge and its neighbour.
        (0, 0.0),
        (30, 0.0),  # 3 %: digital communication
        (50, 0.0),  # 5 %
        (79, 0.0),  # 7.9 %: below 8 %
        (80, 6.0),  # 8 %: 6 A
        (99, 6.0),  # 9.9 %
        (100, 6.0),  # 10 %: d * 0.6
        (101, 6.06),
        (500, 30.0),
        (850, 51.0),  # 85 %: still the low band
        (851, 52.75),  # 85.1 %: the high band
        (900, 65.0),
        (960, 80.0),  # 96 %: (96 - 64) * 2.5
        (961, 80.0),  # 96.1 %: 80 A
        (970, 80.0),  # 97 %: still 80 A
        (971, 0.0),  # above 97 %: not allowed
        (1000, 0.0),
    ],
    ids=lambda v: f"{v}",
)
def test_current_for_duty_bands(permille: int, amps: float) -> None:
    assert current_for_duty(permille) == pytest.approx(amps)


# ------------------------------------------------------------------------------ voltage windows

_NOMINAL = [
    (CpState.A, 12.0),
    (CpState.B, 9.0),
    (CpState.C, 6.0),
    (CpState.D, 3.0),
    (CpState.E, 0.0),
    (CpState.F, -12.0),
]


@pytest.mark.parametrize(("state", "volts"), _NOMINAL, ids=lambda v: f"{v}")
def test_each_nominal_level_classifies_as_its_state(state: CpState, volts: float) -> None:
    assert classify(PilotReading(high_v=volts, low_v=None)).state == state


_EPS = 1e-6


@pytest.mark.parametrize(("state", "volts"), _NOMINAL, ids=lambda v: f"{v}")
def test_windows_are_plus_minus_1_1_volt(state: CpState, volts: float) -> None:
    for edge in (volts - 1.1, volts + 1.1):
        inside = edge + _EPS if edge < volts else edge - _EPS
        outside = edge - _EPS if edge < volts else edge + _EPS
        assert classify(PilotReading(high_v=inside, low_v=None)).state == state, inside
        assert classify(PilotReading(high_v=outside, low_v=None)).state != state, outside


@pytest.mark.parametrize(("state", "volts"), _NOMINAL[:5], ids=lambda v: f"{v}")
def test_the_exact_edges_of_a_to_e_belong_to_the_window(state: CpState, volts: float) -> None:
    assert classify(PilotReading(high_v=volts - 1.1, low_v=None)).state == state
    assert classify(PilotReading(high_v=volts + 1.1, low_v=None)).state == state


def test_a_reading_that_is_not_a_number_is_invalid() -> None:
    assert classify(PilotReading(high_v=float("nan"), low_v=-12.0)).state == CpState.INVALID


@pytest.mark.parametrize("volts", [-10.9, -13.1])
def test_the_exact_edges_of_f_are_inside_its_window_like_every_other(volts: float) -> None:
    assert classify(PilotReading(high_v=volts, low_v=None)).state == CpState.F


@pytest.mark.parametrize(
    "volts",
    [
        13.2,  # above A
        10.5,  # between A (10.9) and B (10.1)
        7.5,  # between B (7.9) and C (7.1)
        4.5,  # between C (4.9) and D (4.1)
        1.5,  # between D (1.9) and E (1.1)
        -5.0,  # between E (-1.1) and F (-10.9)
        -1.2,
        -10.8,
        -13.2,  # below F
    ],
)
def test_levels_between_windows_are_invalid(volts: float) -> None:
    sample = classify(PilotReading(high_v=volts, low_v=-12.0))
    assert sample.state == CpState.INVALID
    assert sample.diode_ok is None


@pytest.mark.parametrize("state_v", [9.0, 6.0, 3.0], ids=["B", "C", "D"])
def test_the_diode_is_judged_on_the_low_plateau_in_b_c_d(state_v: float) -> None:
    assert classify(PilotReading(high_v=state_v, low_v=-12.0)).diode_ok is True
    assert classify(PilotReading(high_v=state_v, low_v=-10.9)).diode_ok is True  # the window edge
    assert classify(PilotReading(high_v=state_v, low_v=-10.9 + _EPS)).diode_ok is False
    assert classify(PilotReading(high_v=state_v, low_v=-6.0)).diode_ok is False
    assert classify(PilotReading(high_v=state_v, low_v=0.0)).diode_ok is False  # diode shorted / missing
    assert classify(PilotReading(high_v=state_v, low_v=-state_v)).diode_ok is False


@pytest.mark.parametrize("state_v", [9.0, 6.0, 3.0], ids=["B", "C", "D"])
def test_no_low_plateau_means_no_diode_judgement(state_v: float) -> None:
    assert classify(PilotReading(high_v=state_v, low_v=None)).diode_ok is None


@pytest.mark.parametrize("state_v", [12.0, 0.0, -12.0], ids=["A", "E", "F"])
def test_the_diode_is_not_judged_outside_b_c_d(state_v: float) -> None:
    assert classify(PilotReading(high_v=state_v, low_v=-12.0)).diode_ok is None
    assert classify(PilotReading(high_v=state_v, low_v=0.0)).diode_ok is None


def test_the_sample_keeps_the_raw_levels() -> None:
    sample = classify(PilotReading(high_v=8.7, low_v=-11.8))
    assert (sample.state, sample.diode_ok, sample.high_v, sample.low_v) == (CpState.B, True, 8.7, -11.8)


# ------------------------------------------------------------------------------ debouncer

_TICK = 0.010  # pilot sample period (timing.PILOT_SAMPLE_PERIOD)


def _debouncer(initial: CpState = CpState.A) -> PilotDebouncer:
    return PilotDebouncer(up_s=PILOT_DEBOUNCE_POWER_UP, down_s=PILOT_DEBOUNCE_POWER_DOWN, initial=initial)


def _feed_for(deb: PilotDebouncer, state: CpState, start_tick: int, ticks: int) -> list[tuple[float, CpState]]:
    """Feed ``state`` at ticks start..start+ticks-1; return the (time, state) acceptances."""
    accepted = []
    for k in range(start_tick, start_tick + ticks):
        t = round(k * _TICK, 9)
        result = deb.feed(state, t)
        if result is not None:
            accepted.append((t, result))
    return accepted


@pytest.mark.parametrize(("before", "after"), [(CpState.B, CpState.C), (CpState.B, CpState.D), (CpState.A, CpState.C)])
def test_power_up_transitions_need_250_ms(before: CpState, after: CpState) -> None:
    deb = _debouncer(before)
    assert _feed_for(deb, after, 0, 25) == []  # 0 .. 240 ms
    assert deb.pending == after
    assert deb.state == before
    assert deb.feed(after, 0.250) == after
    assert deb.state == after and deb.pending is None


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (CpState.C, CpState.B),
        (CpState.C, CpState.A),
        (CpState.D, CpState.B),
        (CpState.C, CpState.E),
        (CpState.C, CpState.INVALID),
        (CpState.B, CpState.A),
        (CpState.A, CpState.B),
        (CpState.C, CpState.D),
    ],
)
def test_other_transitions_are_confirmed_after_20_ms(before: CpState, after: CpState) -> None:
    deb = _debouncer(before)
    assert _feed_for(deb, after, 100, 2) == []  # 1.00 s and 1.01 s
    assert deb.feed(after, 1.020) == after


def test_a_flicker_restarts_the_timer() -> None:
    deb = _debouncer(CpState.B)
    assert _feed_for(deb, CpState.C, 0, 20) == []  # 0 .. 190 ms of C
    assert deb.feed(CpState.B, 0.200) is None  # one sample back at B: C's run is over
    assert deb.pending is None
    assert _feed_for(deb, CpState.C, 21, 25) == []  # 210 .. 450 ms: 240 ms of C again, not yet
    assert deb.feed(CpState.C, 0.460) == CpState.C  # 250 ms after the restart


def test_a_different_candidate_restarts_the_timer() -> None:
    deb = _debouncer(CpState.B)
    assert _feed_for(deb, CpState.C, 0, 20) == []
    assert deb.feed(CpState.D, 0.200) is None
    assert deb.pending == CpState.D
    assert deb.feed(CpState.D, 0.440) is None
    assert deb.feed(CpState.D, 0.450) == CpState.D


def test_feeding_the_accepted_state_changes_nothing() -> None:
    deb = _debouncer(CpState.A)
    assert all(deb.feed(CpState.A, k * _TICK) is None for k in range(100))
    assert deb.state == CpState.A and deb.pending is None


def _hold(accepted: CpState, candidate: CpState) -> float:
    powered = (CpState.C, CpState.D)
    if candidate in powered and accepted not in powered:
        return PILOT_DEBOUNCE_POWER_UP
    return PILOT_DEBOUNCE_POWER_DOWN


_ANY_READING = st.sampled_from([CpState.A, CpState.B, CpState.C, CpState.D, CpState.E, CpState.F, CpState.INVALID])


@given(st.lists(st.tuples(_ANY_READING, st.integers(min_value=1, max_value=40)), min_size=1, max_size=80))
def test_a_state_is_accepted_exactly_when_it_was_fed_for_its_debounce_time(
    feeds: list[tuple[CpState, int]],
) -> None:
    """Safety: the accepted state only changes to a state fed continuously for its debounce time.
    Liveness: it does change at the first sample where that is true."""
    deb = _debouncer(CpState.A)
    accepted = CpState.A
    run_state: CpState | None = None
    run_start = 0.0
    tick = 0
    for state, gap_ms in feeds:
        tick += gap_ms
        t = tick / 1000
        if state != run_state:
            run_state, run_start = state, t
        result = deb.feed(state, t)
        due = state != accepted and t - run_start + 1e-9 >= _hold(accepted, state)
        if due:
            assert result == state, f"{state} fed since {run_start} was not accepted at {t}"
            accepted = state
        else:
            assert result is None, f"{state} accepted at {t} after only {t - run_start:.3f} s"
        assert deb.state == accepted
