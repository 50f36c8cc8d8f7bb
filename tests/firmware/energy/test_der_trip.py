"""Must-trip timing, ride-through and enter service (IEEE 1547-2018 Tables 11-13, 18; 1547.1-2020 Table 11)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.energy.der_curves import DerError
from firmware.energy.der_trip import (
    ENTER_SERVICE_DEFAULT,
    FREQUENCY_TRIP_DEFAULTS_60HZ,
    VOLTAGE_TRIP_DEFAULTS,
    EnterService,
    EnterServiceSettings,
    TripMonitor,
    TripSetting,
    check_trip_ranges,
    frequency_trip_defaults,
)

# --- The tables -------------------------------------------------------------------------------------------

# (category, element, threshold p.u., clearing time s): IEEE 1547-2018 Tables 11, 12, 13.
VOLTAGE_TABLE = [
    ("I", "OV2", 1.20, 0.16),
    ("I", "OV1", 1.10, 2.0),
    ("I", "UV1", 0.70, 2.0),
    ("I", "UV2", 0.45, 0.16),
    ("II", "OV2", 1.20, 0.16),
    ("II", "OV1", 1.10, 2.0),
    ("II", "UV1", 0.70, 10.0),
    ("II", "UV2", 0.45, 0.16),
    ("III", "OV2", 1.20, 0.16),
    ("III", "OV1", 1.10, 13.0),
    ("III", "UV1", 0.88, 21.0),
    ("III", "UV2", 0.50, 2.0),
]
# (element, threshold Hz, clearing time s) at 60 Hz: IEEE 1547-2018 Table 18, all categories.
FREQUENCY_TABLE = [("OF2", 62.0, 0.16), ("OF1", 61.2, 300.0), ("UF1", 58.5, 300.0), ("UF2", 56.5, 0.16)]


@pytest.mark.parametrize(("category", "element", "threshold", "clearing"), VOLTAGE_TABLE)
def test_voltage_defaults_match_the_tables(category: str, element: str, threshold: float, clearing: float) -> None:
    setting = {s.element: s for s in VOLTAGE_TRIP_DEFAULTS[category]}[element]
    assert (setting.threshold, setting.clearing_time_s) == (threshold, clearing)


@pytest.mark.parametrize(("element", "threshold", "clearing"), FREQUENCY_TABLE)
def test_frequency_defaults_match_table_18(element: str, threshold: float, clearing: float) -> None:
    setting = {s.element: s for s in FREQUENCY_TRIP_DEFAULTS_60HZ}[element]
    assert (setting.threshold, setting.clearing_time_s) == (threshold, clearing)


def test_frequency_defaults_scale_to_50_hz() -> None:
    scaled = {s.element: s.threshold for s in frequency_trip_defaults(50.0)}
    assert scaled == pytest.approx({"OF2": 51.6667, "OF1": 51.0, "UF1": 48.75, "UF2": 47.0833}, abs=1e-4)


# --- Trip timing: exactly at and just below the clearing time ----------------------------------------------


def _beyond(element: str, threshold: float) -> float:
    """A value 0.01 beyond the threshold (p.u. or Hz) on the tripping side."""
    return threshold + 0.01 if element[0] == "O" else threshold - 0.01


def _assert_trips_at_clearing_time(
    monitor: TripMonitor, element: str, clearing: float, v: float, f: float, f_nom: float, t0: float = 100.0
) -> None:
    assert monitor.update(t0 - 1.0, 1.0, f_nom) is None
    assert monitor.update(t0, v, f) is None
    assert monitor.update(t0 + clearing - 0.001, v, f) is None  # just below: rides through
    event = monitor.update(t0 + clearing, v, f)  # exactly at: trips
    assert event is not None
    assert event.element == element
    assert event.duration_s == pytest.approx(clearing)
    assert event.clearing_time_s == clearing
    assert event.at == t0 + clearing
    assert element in event.describe()


@pytest.mark.parametrize(("category", "element", "threshold", "clearing"), VOLTAGE_TABLE)
def test_voltage_trip_exactly_at_not_before_clearing_time(
    category: str, element: str, threshold: float, clearing: float
) -> None:
    monitor = TripMonitor.ieee1547(category, 60.0)  # type: ignore[arg-type]
    _assert_trips_at_clearing_time(monitor, element, clearing, _beyond(element, threshold), 60.0, 60.0)


@pytest.mark.parametrize("f_nom", [60.0, 50.0])
@pytest.mark.parametrize(("element", "threshold", "clearing"), FREQUENCY_TABLE)
def test_frequency_trip_exactly_at_not_before_clearing_time(
    f_nom: float, element: str, threshold: float, clearing: float
) -> None:
    monitor = TripMonitor.ieee1547("II", f_nom)
    scaled = threshold * f_nom / 60.0
    _assert_trips_at_clearing_time(monitor, element, clearing, 1.0, _beyond(element, scaled), f_nom)


@pytest.mark.parametrize(("category", "element", "threshold", "clearing"), VOLTAGE_TABLE)
def test_values_at_the_threshold_are_inside(category: str, element: str, threshold: float, clearing: float) -> None:
    monitor = TripMonitor.ieee1547(category, 60.0)  # type: ignore[arg-type]
    for t in (0.0, clearing, 10 * clearing):
        assert monitor.update(t, threshold, 60.0) is None


# --- Ride-through -------------------------------------------------------------------------------------------


def _feed(monitor: TripMonitor, start: float, duration: float, v: float, f: float = 60.0, dt: float = 0.01):
    """Samples every ``dt`` from ``start`` for ``duration``; returns the first trip event, if any."""
    n = round(duration / dt)
    for k in range(n):
        event = monitor.update(start + k * dt, v, f)
        if event is not None:
            return event
    return None


def test_short_deep_dip_rides_through() -> None:
    monitor = TripMonitor.ieee1547("II", 60.0)
    assert _feed(monitor, 0.0, 1.0, 1.0) is None
    assert _feed(monitor, 1.0, 0.15, 0.40) is None  # 150 ms below UV2 (0.45 p.u., 0.16 s)
    assert _feed(monitor, 1.15, 20.0, 1.0) is None
    assert monitor.riding_through(21.15) == []


def test_long_shallow_dip_rides_through_cat_ii_but_trips_cat_i() -> None:
    cat_ii = TripMonitor.ieee1547("II", 60.0)
    assert _feed(cat_ii, 0.0, 9.9, 0.60) is None  # UV1 Cat II: 10 s
    assert any("UV1" in line for line in cat_ii.riding_through(9.9))
    assert _feed(cat_ii, 9.9, 5.0, 1.0) is None
    cat_i = TripMonitor.ieee1547("I", 60.0)
    event = _feed(cat_i, 0.0, 9.9, 0.60)  # UV1 Cat I: 2 s
    assert event is not None and event.element == "UV1"
    assert event.duration_s == pytest.approx(2.0)


def test_one_good_sample_restarts_the_clearing_time() -> None:
    monitor = TripMonitor.ieee1547("II", 60.0)
    assert monitor.update(0.0, 1.15, 60.0) is None
    assert monitor.update(1.9, 1.15, 60.0) is None
    assert monitor.update(1.95, 1.05, 60.0) is None  # back inside
    assert monitor.update(2.0, 1.15, 60.0) is None
    assert monitor.update(3.99, 1.15, 60.0) is None
    event = monitor.update(4.0, 1.15, 60.0)
    assert event is not None and event.element == "OV1" and event.duration_s == pytest.approx(2.0)


def test_the_fastest_element_is_reported() -> None:
    monitor = TripMonitor.ieee1547("II", 60.0)
    monitor.update(0.0, 0.30, 60.0)  # below UV2 and UV1
    event = monitor.update(0.16, 0.30, 60.0)
    assert event is not None and event.element == "UV2"


@given(
    dip=st.floats(0.0, 0.44),
    length_ms=st.integers(1, 150),
)
def test_any_dip_shorter_than_uv2_rides_through(dip: float, length_ms: int) -> None:
    monitor = TripMonitor.ieee1547("II", 60.0)
    monitor.update(0.0, 1.0, 60.0)
    for k in range(length_ms + 1):
        assert monitor.update(1.0 + k / 1000, dip, 60.0) is None
    assert monitor.update(1.2, 1.0, 60.0) is None


def test_monitor_rejects_bad_samples_and_settings() -> None:
    monitor = TripMonitor.ieee1547("II", 60.0)
    monitor.update(1.0, 1.0, 60.0)
    with pytest.raises(DerError, match="time went backwards"):
        monitor.update(0.5, 1.0, 60.0)
    with pytest.raises(DerError, match="v_pu must be finite"):
        monitor.update(2.0, float("nan"), 60.0)
    with pytest.raises(DerError, match="appears twice"):
        TripMonitor([TripSetting("OV1", 1.1, 2.0), TripSetting("OV1", 1.2, 1.0)], [])
    with pytest.raises(DerError, match="slower than OV1"):
        TripMonitor([TripSetting("OV1", 1.1, 2.0), TripSetting("OV2", 1.2, 3.0)], [])
    with pytest.raises(DerError, match="is a frequency element"):
        TripMonitor([TripSetting("OF1", 61.2, 300.0)], [])
    with pytest.raises(DerError, match="must start with OV, UV, OF or UF"):
        TripSetting("XX1", 1.0, 1.0)
    with pytest.raises(DerError, match="clearing_time_s must be > 0"):
        TripSetting("OV1", 1.1, 0.0)
    with pytest.raises(DerError, match="category must be I, II or III"):
        TripMonitor.ieee1547("IV")  # type: ignore[arg-type]


def test_ranges_of_adjustability() -> None:
    check_trip_ranges(VOLTAGE_TRIP_DEFAULTS["III"], FREQUENCY_TRIP_DEFAULTS_60HZ, "III", 60.0)
    with pytest.raises(DerError, match=r"UV1: clearing time 10 s is outside 21..50 s"):
        check_trip_ranges([TripSetting("UV1", 0.88, 10.0)], [], "III", 60.0)
    with pytest.raises(DerError, match=re.escape("OV2: threshold 1.15 p.u. is outside 1.2..1.2")):
        check_trip_ranges([TripSetting("OV2", 1.15, 0.16)], [], "II", 60.0)
    with pytest.raises(DerError, match=re.escape("OF1: clearing time 60 s is outside 180..1000 s")):
        check_trip_ranges([], [TripSetting("OF1", 61.2, 60.0)], "II", 60.0)
    check_trip_ranges([], frequency_trip_defaults(50.0), "II", 50.0)


# --- Enter service ------------------------------------------------------------------------------------------


def test_enter_service_defaults() -> None:
    # IEEE 1547.1-2020 Table 11 default row.
    s = ENTER_SERVICE_DEFAULT
    assert (s.v_min_pu, s.v_max_pu, s.f_min_hz, s.f_max_hz, s.delay_s, s.ramp_s) == (0.917, 1.05, 59.5, 60.1, 300, 300)
    fifty = s.for_nominal(50.0)
    assert (fifty.f_min_hz, fifty.f_max_hz) == pytest.approx((49.5833, 50.0833), abs=1e-4)


# IEEE 1547.1-2020 Table 11 cases: (delay, ramp, v_hi, v_lo, f_hi, f_lo, initial v, final v, initial f, final f).
ES_CASES = [
    (300, 300, 1.05, 0.917, 60.1, 59.5, 0.897, 0.937, 60.0, 60.0),  # 1, default
    (0, 300, 1.05, 0.917, 60.1, 59.5, 1.0, 1.0, 59.48, 59.52),  # 2 (ramp instead of the random delay)
    (600, 1000, 1.06, 0.95, 61.0, 59.9, 1.08, 1.04, 60.0, 60.0),  # 3, maxima
    (0, 1000, 1.06, 0.95, 61.0, 59.9, 1.0, 1.0, 61.02, 60.98),  # 4
    (0, 1, 1.05, 0.88, 60.1, 59.0, 0.86, 0.90, 60.0, 60.0),  # 5, minima
    (0, 1, 1.05, 0.88, 60.1, 59.0, 1.0, 1.0, 58.98, 59.92),  # 6
]


@pytest.mark.parametrize(("delay", "ramp", "v_hi", "v_lo", "f_hi", "f_lo", "v0", "v1", "f0", "f1"), ES_CASES)
def test_enter_service_table_11(
    delay: float,
    ramp: float,
    v_hi: float,
    v_lo: float,
    f_hi: float,
    f_lo: float,
    v0: float,
    v1: float,
    f0: float,
    f1: float,
) -> None:
    es = EnterService(EnterServiceSettings(v_lo, v_hi, f_lo, f_hi, delay, ramp))
    # Initial conditions outside the window: never enters service however long they last.
    for t in range(0, 2 * int(delay) + 61, 10):
        es.update(float(t), v0, f0)
        assert es.max_power_fraction(float(t)) == 0.0
    start = 2 * delay + 100.0
    es.update(start, v1, f1)
    if delay > 0:
        es.update(start + delay - 0.01, v1, f1)
        assert es.max_power_fraction(start + delay - 0.01) == 0.0  # not before the delay
    es.update(start + delay, v1, f1)
    assert es.max_power_fraction(start + delay) == 0.0  # the ramp starts from zero
    assert es.max_power_fraction(start + delay + ramp / 2) == pytest.approx(0.5)
    assert es.max_power_fraction(start + delay + ramp * 0.985) < 1.0  # 1547.1: not rated before 98.5 %
    assert es.max_power_fraction(start + delay + ramp) == 1.0
    assert es.in_service


def test_an_excursion_during_the_delay_restarts_it() -> None:
    # 1547.1-2020 5.6.2 i): inside for 25 % of the delay, out for 0.05 s, then back: the delay restarts.
    es = EnterService(ENTER_SERVICE_DEFAULT)
    es.update(0.0, 0.937, 60.0)
    es.update(75.0, 0.937, 60.0)
    es.update(75.0 + 0.01, 0.897, 60.0)  # out
    es.update(75.05, 0.937, 60.0)  # back
    es.update(300.0, 0.937, 60.0)
    assert es.max_power_fraction(300.0) == 0.0
    es.update(375.0, 0.937, 60.0)
    assert es.max_power_fraction(375.0) == 0.0
    es.update(375.06, 0.937, 60.0)
    assert es.max_power_fraction(375.05 + 150.0) == pytest.approx(0.5)


def test_cease_takes_the_ev_out_of_service_and_in_service_ignores_the_window() -> None:
    es = EnterService(ENTER_SERVICE_DEFAULT, in_service=True)
    assert es.max_power_fraction(0.0) == 1.0
    es.update(1.0, 1.08, 60.0)  # outside the window but in service: stays
    assert es.max_power_fraction(1.0) == 1.0
    es.cease()
    assert es.max_power_fraction(2.0) == 0.0
    assert "waiting" in es.describe(2.0)


def test_enter_service_settings_are_validated() -> None:
    with pytest.raises(DerError, match=re.escape("v_min_pu 1.1 must be below v_max_pu 1.05")):
        EnterServiceSettings(v_min_pu=1.1)
    with pytest.raises(DerError, match="nominal 50 Hz is outside the window"):
        EnterServiceSettings(f_nom_hz=50.0)
    with pytest.raises(DerError, match="delay_s must be >= 0"):
        EnterServiceSettings(delay_s=-1.0)
