"""Frequency droop (1547 freq-watt), fast frequency reserve (Fingrid FFR, R88) and FCR-N."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.energy.der_curves import DerError
from firmware.energy.der_frequency import (
    FFR_OPTIONS,
    FREQ_DROOP_1547_1_CHAR2,
    FREQ_DROOP_DEFAULT,
    FastFrequencyResponse,
    FcrNSettings,
    FfrOption,
    FfrSettings,
    FreqDroop,
    FrequencyContainment,
    fcr_n_delta,
    ffr_max_sample_period,
    freq_watt,
)

P_RATED = 10_000.0

# --- Droop --------------------------------------------------------------------------------------------


def test_default_droop_constants() -> None:
    # IEEE 1547-2018 Table 24 / 1547.1-2020 characteristic 1: 0.036 Hz, 5 %, 5 s
    assert (FREQ_DROOP_DEFAULT.db_of_hz, FREQ_DROOP_DEFAULT.db_uf_hz) == (0.036, 0.036)
    assert (FREQ_DROOP_DEFAULT.k_of, FREQ_DROOP_DEFAULT.k_uf) == (0.05, 0.05)
    assert FREQ_DROOP_DEFAULT.response_time_s == 5.0
    assert FREQ_DROOP_DEFAULT.f_nom_hz == 60.0


def test_droop_scaled_to_50_hz_keeps_k_and_scales_deadband() -> None:
    droop = FREQ_DROOP_DEFAULT.for_nominal(50.0)
    assert droop.db_of_hz == pytest.approx(0.030)
    assert droop.db_uf_hz == pytest.approx(0.030)
    assert droop.k_of == 0.05
    assert droop.f_nom_hz == 50.0


# (f_hz, p_pre in p.u. of P_rated, + = charging, expected p.u.) at 60 Hz, default droop, capability +-1 p.u.
# 1547: over-frequency p_out = p_pre - (f - 60.036)/3; under-frequency p_out = p_pre + (59.964 - f)/3.
DROOP_60HZ = [
    (60.000, -0.5, -0.5),  # nominal
    (60.030, -0.5, -0.5),  # inside the deadband
    (60.036, -0.5, -0.5),  # at the deadband edge
    (59.964, -0.5, -0.5),
    (60.336, -0.5, -0.4),  # 0.3 Hz beyond the deadband = 0.1 p.u. less output
    (61.536, -0.5, 0.0),  # 0.5 p.u.: injection stopped
    (62.036, -0.5, 0.5 / 3),  # goes on into charging (storage can absorb)
    (65.000, -0.5, 1.0),  # capped at the charging capability
    (59.664, -0.5, -0.6),  # 0.1 p.u. more output
    (58.464, -0.5, -1.0),
    (57.000, -0.5, -1.0),  # capped at the discharging capability
    (59.664, 0.5, 0.4),  # a charging EV charges less first
    (58.464, 0.5, 0.0),
    (57.864, 0.5, -0.2),  # then discharges (allowed here)
    (60.336, 0.5, 0.6),  # over-frequency: charges more
]


@pytest.mark.parametrize(("f_hz", "p_pre_pu", "expected_pu"), DROOP_60HZ)
def test_droop_formula_60hz(f_hz: float, p_pre_pu: float, expected_pu: float) -> None:
    target = freq_watt(
        f_hz,
        p_pre_pu * P_RATED,
        FREQ_DROOP_DEFAULT,
        f_nom_hz=60.0,
        p_rated_w=P_RATED,
        p_charge_max_w=P_RATED,
        p_discharge_max_w=P_RATED,
    )
    assert target == pytest.approx(expected_pu * P_RATED, abs=1e-6)


@pytest.mark.parametrize(
    ("f_hz", "expected_pu"),
    [
        (50.00, 0.0),
        (50.03, 0.0),
        (50.28, 0.1),  # (50.28 - 50.03) / (50 * 0.05)
        (49.72, -0.1),
        (49.47, -0.2),
        (51.28, 0.5),
    ],
)
def test_droop_formula_50hz(f_hz: float, expected_pu: float) -> None:
    droop = FREQ_DROOP_DEFAULT.for_nominal(50.0)
    target = freq_watt(
        f_hz, 0.0, droop, f_nom_hz=50.0, p_rated_w=P_RATED, p_charge_max_w=P_RATED, p_discharge_max_w=P_RATED
    )
    assert target == pytest.approx(expected_pu * P_RATED, abs=1e-6)


def test_under_frequency_stops_at_zero_when_discharge_is_not_allowed() -> None:
    kwargs = {"f_nom_hz": 60.0, "p_rated_w": P_RATED, "p_charge_max_w": P_RATED, "p_discharge_max_w": 0.0}
    assert freq_watt(59.664, 5_000, FREQ_DROOP_DEFAULT, **kwargs) == pytest.approx(4_000)
    assert freq_watt(57.0, 5_000, FREQ_DROOP_DEFAULT, **kwargs) == 0.0
    kwargs["p_discharge_max_w"] = 3_000.0
    assert freq_watt(57.0, 5_000, FREQ_DROOP_DEFAULT, **kwargs) == -3_000.0


def test_tighter_1547_1_characteristic() -> None:
    # 0.017 Hz, 3 %: 0.197 Hz beyond nominal is 0.18 Hz beyond the deadband = 0.1 p.u.
    target = freq_watt(
        60.197,
        0.0,
        FREQ_DROOP_1547_1_CHAR2,
        f_nom_hz=60.0,
        p_rated_w=P_RATED,
        p_charge_max_w=P_RATED,
        p_discharge_max_w=P_RATED,
    )
    assert target == pytest.approx(1_000.0)


def test_droop_rejects_bad_inputs() -> None:
    with pytest.raises(DerError, match="k_of must be > 0"):
        FreqDroop(0.036, 0.036, 0.0, 0.05, 5.0)
    with pytest.raises(DerError, match="capability bounds must be >= 0"):
        freq_watt(60, 0, FREQ_DROOP_DEFAULT, f_nom_hz=60, p_rated_w=P_RATED, p_charge_max_w=-1, p_discharge_max_w=0)
    with pytest.raises(DerError, match="f_hz must be finite"):
        freq_watt(
            float("nan"),
            0,
            FREQ_DROOP_DEFAULT,
            f_nom_hz=60,
            p_rated_w=P_RATED,
            p_charge_max_w=1,
            p_discharge_max_w=0,
        )


@given(
    f=st.floats(40.0, 80.0),
    p_pre=st.floats(-2e4, 2e4),
    charge=st.floats(0.0, 2e4),
    discharge=st.floats(0.0, 2e4),
)
def test_freq_watt_stays_within_capability_and_never_moves_against_frequency(
    f: float, p_pre: float, charge: float, discharge: float
) -> None:
    target = freq_watt(
        f,
        p_pre,
        FREQ_DROOP_DEFAULT,
        f_nom_hz=60.0,
        p_rated_w=P_RATED,
        p_charge_max_w=charge,
        p_discharge_max_w=discharge,
    )
    assert -discharge - 1e-9 <= target <= charge + 1e-9
    clamped_pre = min(charge, max(-discharge, p_pre))
    if f > 60.0:
        assert target >= clamped_pre - 1e-9
    elif f < 60.0:
        assert target <= clamped_pre + 1e-9


# --- Fast frequency reserve ------------------------------------------------------------------------------


def test_ffr_options_and_budgets() -> None:
    # Fingrid FFR / R88: 49.7 Hz within 1.3 s, 49.6 Hz within 1.0 s, 49.5 Hz within 0.7 s.
    assert FFR_OPTIONS["49.7"] == FfrOption(49.7, 1.3)
    assert FFR_OPTIONS["49.6"] == FfrOption(49.6, 1.0)
    assert FFR_OPTIONS["49.5"] == FfrOption(49.5, 0.7)
    budgets = {
        key: ffr_max_sample_period(opt, measurement_delay_s=0.1, actuation_delay_s=0.3)
        for key, opt in FFR_OPTIONS.items()
    }
    assert budgets == pytest.approx({"49.7": 0.9, "49.6": 0.6, "49.5": 0.3})


def test_ffr_settings_reject_a_sample_period_that_misses_the_deadline() -> None:
    with pytest.raises(DerError, match=r"misses the 0.7 s deadline at 49.5 Hz.*must be <= 0.3 s"):
        FfrSettings(option=FFR_OPTIONS["49.5"], sample_period_s=0.35)
    with pytest.raises(DerError, match=re.escape("recovery_hz 49.6 must be above the activation threshold 49.7")):
        FfrSettings(recovery_hz=49.6)
    FfrSettings(option=FFR_OPTIONS["49.5"], sample_period_s=0.3)  # exactly at the budget is fine


def _run_ffr_ramp(
    option: FfrOption, *, sample_period: float, phase: float, rocof: float, meas_delay: float = 0.1
) -> tuple[float, float]:
    """Frequency falls linearly from 50 Hz at ``rocof`` Hz/s; the meter reports it ``meas_delay`` late.

    Returns (true crossing time, time of the sample on which the controller demanded full response).
    """
    settings = FfrSettings(option=option, sample_period_s=sample_period, measurement_delay_s=meas_delay)
    ffr = FastFrequencyResponse(settings)
    crossing = (50.0 - option.threshold_hz) / rocof
    k = 0
    while True:
        t = phase + k * sample_period
        measured = 50.0 - rocof * max(0.0, t - meas_delay)
        status = ffr.step(t, measured)
        if status.fraction == 1.0:
            return crossing, t
        assert t < crossing + 10.0, "FFR never activated"
        k += 1


@pytest.mark.parametrize("key", ["49.7", "49.6", "49.5"])
@pytest.mark.parametrize("phase_fraction", [0.0, 0.01, 0.5, 0.99])
def test_ffr_activation_meets_the_deadline_at_the_budget_sample_period(key: str, phase_fraction: float) -> None:
    option = FFR_OPTIONS[key]
    period = ffr_max_sample_period(option, measurement_delay_s=0.1, actuation_delay_s=0.3)
    crossing, acted = _run_ffr_ramp(option, sample_period=period, phase=phase_fraction * period, rocof=0.5)
    activation_time = acted - crossing + 0.3  # plus the converter's actuation delay
    assert activation_time <= option.activation_time_s + 1e-9
    # The controller acts on the first sample that sees the crossing: never later than one period after it.
    assert acted - (crossing + 0.1) < period + 1e-9


@pytest.mark.parametrize("key", ["49.7", "49.6", "49.5"])
@settings(max_examples=40, deadline=None)
@given(phase=st.floats(0.0, 1.0, exclude_max=True), rocof=st.floats(0.05, 5.0))
def test_ffr_deadline_holds_for_any_sampling_phase_and_rocof(key: str, phase: float, rocof: float) -> None:
    option = FFR_OPTIONS[key]
    period = 0.1  # the energy manager's DER cycle
    crossing, acted = _run_ffr_ramp(option, sample_period=period, phase=phase * period, rocof=rocof)
    assert acted - crossing + 0.3 <= option.activation_time_s


def test_ffr_step_change_activates_on_the_first_sample_and_estimates_the_crossing() -> None:
    ffr = FastFrequencyResponse(FfrSettings(option=FFR_OPTIONS["49.6"]))
    assert ffr.step(0.0, 50.0).fraction == 0.0
    assert ffr.step(0.1, 49.8).fraction == 0.0
    status = ffr.step(0.2, 49.4)
    assert status.fraction == 1.0 and status.active
    assert status.activated_at == 0.2
    assert status.crossed_at == pytest.approx(0.15)  # 49.8 -> 49.4 crosses 49.6 half way
    assert ffr.activations == 1


def test_ffr_holds_then_deactivates_at_20_percent_per_second() -> None:
    ffr = FastFrequencyResponse(FfrSettings(option=FFR_OPTIONS["49.7"], hold_s=5.0, min_support_s=5.0))
    t = 0.0
    ffr.step(t, 50.0)
    t = 1.0
    assert ffr.step(t, 49.65).fraction == 1.0
    # Frequency recovers at t = 2; hold 5 s -> ramp starts at t = 7, 0.2/s -> zero at t = 12.
    samples = {}
    for k in range(20, 141):
        samples[k / 10] = ffr.step(k / 10, 49.95).fraction
    assert samples[6.9] == 1.0
    assert samples[7.0] == 1.0
    assert samples[9.5] == pytest.approx(0.5)
    assert samples[12.0] == pytest.approx(0.0, abs=1e-9)
    assert not ffr.step(14.1, 49.95).active


def test_ffr_minimum_support_duration_even_when_frequency_recovers_at_once() -> None:
    ffr = FastFrequencyResponse(FfrSettings(hold_s=0.0, min_support_s=5.0))
    ffr.step(0.0, 49.6)
    assert ffr.step(0.1, 50.0).fraction == 1.0
    assert ffr.step(4.9, 50.0).fraction == 1.0
    assert ffr.step(5.0, 50.0).fraction == 1.0  # ramp starts here
    assert ffr.step(6.0, 50.0).fraction == pytest.approx(0.8)


def test_ffr_reactivates_during_the_ramp_down() -> None:
    ffr = FastFrequencyResponse(FfrSettings(hold_s=0.0, min_support_s=0.0))
    ffr.step(0.0, 49.6)
    ffr.step(0.1, 50.0)
    assert ffr.step(1.1, 50.0).fraction == pytest.approx(0.8)
    status = ffr.step(1.2, 49.65)
    assert status.fraction == 1.0
    assert status.activated_at == 1.2
    assert ffr.activations == 2


def test_ffr_counts_late_samples() -> None:
    ffr = FastFrequencyResponse(FfrSettings(sample_period_s=0.1))
    ffr.step(0.0, 50.0)
    ffr.step(0.1, 50.0)
    ffr.step(0.5, 50.0)
    assert ffr.late_samples == 1
    with pytest.raises(DerError, match="time went backwards"):
        ffr.step(0.4, 50.0)


# --- FCR-N ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("f_hz", "expected_w"),
    [(50.0, 0.0), (50.05, 500.0), (50.1, 1000.0), (50.3, 1000.0), (49.95, -500.0), (49.9, -1000.0), (49.0, -1000.0)],
)
def test_fcr_n_is_proportional_over_the_band(f_hz: float, expected_w: float) -> None:
    fcr = FrequencyContainment(FcrNSettings(capacity_w=1000.0))
    assert fcr.step(f_hz) == pytest.approx(expected_w)


def test_fcr_n_deadband_and_limits() -> None:
    settings = FcrNSettings(capacity_w=1000.0, deadband_hz=0.01)
    assert fcr_n_delta(50.009, settings) == 0.0
    assert fcr_n_delta(49.95, settings) == pytest.approx(-500.0)
    with pytest.raises(DerError, match=re.escape("deadband_hz must be within 0..0.01")):
        FcrNSettings(capacity_w=1000.0, deadband_hz=0.05)
