"""DerSettings.from_dict and the DerController that combines the DER functions into a power window."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.energy.der import (
    VOLT_VAR_CAT_A,
    VOLT_VAR_CAT_B,
    VOLT_WATT_DEFAULT,
    WATT_VAR_CAT_A,
    WATT_VAR_CAT_B,
    DerConfigError,
    DerController,
    DerSettings,
)

# --- Settings ---------------------------------------------------------------------------------------------


def test_defaults_follow_the_categories_and_the_nominal_frequency() -> None:
    a = DerSettings.defaults(p_rated_w=10_000, normal_category="A", abnormal_category="I", f_nom_hz=60.0)
    assert a.volt_var_curve is VOLT_VAR_CAT_A
    assert a.watt_var_curve is WATT_VAR_CAT_A
    assert a.volt_watt_curve is VOLT_WATT_DEFAULT
    assert {s.element: s.clearing_time_s for s in a.voltage_trip}["UV1"] == 2.0
    assert a.freq_droop.db_of_hz == 0.036
    assert (a.q_max_injecting_var, a.q_max_absorbing_var) == pytest.approx((4_400, 2_500))
    b = DerSettings.defaults(p_rated_w=10_000)
    assert b.volt_var_curve is VOLT_VAR_CAT_B
    assert b.watt_var_curve is WATT_VAR_CAT_B
    assert b.f_nom_hz == 50.0
    assert b.freq_droop.db_of_hz == pytest.approx(0.030)
    assert b.enter_service.f_min_hz == pytest.approx(49.5833, abs=1e-4)
    assert {s.element: s.threshold for s in b.frequency_trip}["UF1"] == pytest.approx(48.75)
    assert (b.q_max_injecting_var, b.q_max_absorbing_var) == pytest.approx((4_400, 4_400))
    assert b.reactive_mode == "off" and not b.volt_watt_enabled and b.freq_watt_enabled
    assert b.ffr is None and b.fcr_n is None


FULL_CONFIG: dict[str, Any] = {
    "normal_category": "B",
    "abnormal_category": "III",
    "v_nom_v": 230,
    "f_nom_hz": 50,
    "p_rated_w": 11_000,
    "p_rated_charge_w": 11_000,
    "s_rated_va": 11_000,
    "functions": {
        "reactive": "volt_var",
        "volt_watt": True,
        "freq_watt": True,
        "trip": True,
        "enter_service": True,
        "ffr": True,
        "fcr_n": False,
    },
    "volt_var": {"v_pu": [0.92, 0.98, 1.02, 1.08], "q_pu": [0.44, 0, 0, -0.44], "v_ref_pu": 1.0, "response_time_s": 5},
    "volt_watt": {"v_pu": [1.06, 1.1], "p_pu": [1.0, 0.0], "response_time_s": 10},
    "fixed_pf": {"pf": 0.95, "excitation": "absorbing", "charging": {"pf": 0.98, "excitation": "injecting"}},
    "freq_droop": {"db_of_hz": 0.03, "db_uf_hz": 0.03, "k_of": 0.05, "k_uf": 0.05, "response_time_s": 5},
    "voltage_trip": {"OV1": {"pu": 1.15, "clearing_time_s": 5}},
    "frequency_trip": {"UF1": {"hz": 48.5, "clearing_time_s": 300}},
    "enter_service": {"delay_s": 60, "ramp_s": 120, "limits_charging": True},
    "ffr": {"activation_hz": 49.6, "discharge_power_w": 5000, "sample_period_s": 0.1},
}


def test_a_full_configuration_loads() -> None:
    s = DerSettings.from_dict(FULL_CONFIG)
    assert s.abnormal_category == "III"
    assert s.reactive_mode == "volt_var"
    assert s.volt_var_curve(0.95) == pytest.approx(0.22)
    assert {t.element: (t.threshold, t.clearing_time_s) for t in s.voltage_trip}["OV1"] == (1.15, 5.0)
    assert {t.element: t.threshold for t in s.frequency_trip}["UF1"] == 48.5
    assert s.enter_service.delay_s == 60 and s.enter_service.ramp_s == 120
    assert s.ffr is not None and s.ffr.option.threshold_hz == 49.6 and s.ffr.discharge_power_w == 5000
    assert s.fixed_pf is not None and s.fixed_pf.pf == 0.95
    assert s.fixed_pf_charging is not None and s.fixed_pf_charging.excitation == "injecting"
    assert s.fcr_n is None


def _with(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(FULL_CONFIG)
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return data


_DELETE = object()

BAD_CONFIGS = [
    ("colour", "blue", r"der: unknown key\(s\) colour"),
    ("functions.volt_wat", True, r"der.functions: unknown key\(s\) volt_wat"),
    ("p_rated_w", _DELETE, "der.p_rated_w: required"),
    ("p_rated_w", "11 kW", "der.p_rated_w: must be a finite number"),
    ("p_rated_w", True, "der.p_rated_w: must be a finite number"),
    ("p_rated_w", math.nan, "der.p_rated_w: must be a finite number"),
    ("p_rated_w", 0, "der.p_rated_w: must be >= 1"),
    ("normal_category", "C", "der.normal_category: must be one of A, B"),
    ("functions.reactive", "constant_var", "der.functions.reactive: must be one of"),
    ("functions.trip", "yes", "der.functions.trip: must be true or false"),
    ("volt_var.q_pu", [0.44, 0, 0], "der.volt_var: volt-var: 4 x points but 3 y points"),
    ("volt_var.q_pu", [0.44, 0, 0.1, -0.44], r"der.volt_var.q_pu\[2\]: 0.1 rises above 0"),
    ("volt_var.q_pu", [1.5, 0, 0, -0.44], r"der.volt_var.q_pu\[0\]: 1.5 per unit is beyond"),
    ("volt_var.v_pu", [0.92, 0.98, 0.97, 1.08], "x points must ascend"),
    ("volt_var.v_pu", [0.92, "x", 1.02, 1.08], r"der.volt_var.v_pu\[1\]: must be a finite number"),
    ("volt_var.v_ref_pu", 1.2, "der.volt_var.v_ref_pu: must be <= 1.05"),
    ("volt_watt.p_pu", _DELETE, "give both v_pu and p_pu"),
    ("volt_watt.p_pu", [0.5, 1.0], "rises above"),
    ("fixed_pf.pf", 0.85, r"der.fixed_pf.pf: 0.85 absorbing is outside 0.9..1"),
    ("fixed_pf.excitation", "leading", "der.fixed_pf.excitation: must be one of injecting, absorbing"),
    ("freq_droop.k_of", 0.5, "der.freq_droop.k_of: must be <= 0.1"),
    ("voltage_trip.OV3", {"pu": 1.3}, r"der.voltage_trip: unknown key\(s\) OV3"),
    ("voltage_trip.OV1", {"pu": 1.15, "clearing_time_s": 30}, "OV1: clearing time 30 s is outside 1..13 s"),
    ("voltage_trip.OV1", {"volts": 260}, r"der.voltage_trip.OV1: unknown key\(s\) volts"),
    ("frequency_trip.UF1", {"hz": 49.9}, "UF1: threshold 49.9 Hz is outside"),
    ("enter_service.v_min_pu", 1.2, "v_min_pu 1.2 must be below v_max_pu"),
    ("ffr.activation_hz", 49.8, "der.ffr.activation_hz: must be one of 49.7, 49.6, 49.5"),
    ("ffr.sample_period_s", 0.7, "misses the 1 s deadline"),
    ("ffr.discharge_power_w", 20_000, "exceeds p_rated_w"),
    ("fcr_n", {"capacity_w": 1000, "deadband_hz": 0.1}, "deadband_hz must be within"),
    ("volt_var", [1, 2], "der.volt_var: must be a mapping"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD_CONFIGS)
def test_bad_configurations_are_rejected_with_the_key_named(path: str, value: Any, message: str) -> None:
    with pytest.raises(DerConfigError, match=message):
        DerSettings.from_dict(_with(path, value))


def test_trip_ranges_can_be_unchecked_for_non_1547_grid_codes() -> None:
    data = _with("voltage_trip.OV2", {"pu": 1.15, "clearing_time_s": 0.1})
    with pytest.raises(DerConfigError, match="set check_1547_ranges false"):
        DerSettings.from_dict(data)
    data["check_1547_ranges"] = False
    s = DerSettings.from_dict(data)
    assert {t.element: t.threshold for t in s.voltage_trip}["OV2"] == 1.15


def test_fixed_pf_mode_needs_a_power_factor() -> None:
    data = _with("functions.reactive", "fixed_pf")
    del data["fixed_pf"]
    with pytest.raises(DerConfigError, match="no power factor is set"):
        DerSettings.from_dict(data)


# --- Controller: IEEE 1547.1-2020 priority test (Tables 38/39) -------------------------------------------

# (voltage p.u., frequency Hz, expected active power output p.u., expected watt-var Q p.u. Cat A, Cat B):
# IEEE 1547.1-2020 Tables 38 (Cat A) and 39 (Cat B), as encoded in ua-kxie/UL1741SB RespPri. The EUT
# outputs 0.5 p.u.; volt-watt is 1.06/1.0 - 1.10/0.2, freq-droop the default, watt-var characteristic 1.
PRIORITY_STEPS = [
    (1.00, 60.00, 0.5, 0.0, 0.0),
    (1.09, 60.00, 0.4, 0.0, 0.0),  # volt-watt limits to 0.4
    (1.09, 60.33, 0.3, 0.0, 0.0),  # over-frequency droop from the volt-watt-limited 0.4
    (1.09, 60.00, 0.4, 0.0, 0.0),
    (1.09, 59.36, 0.4, 0.0, 0.0),  # under-frequency would raise output, volt-watt keeps it at 0.4
    (1.00, 59.36, 0.6, -0.05, -0.09),  # volt-watt released: p_pre 0.4 + 0.2
    (1.00, 60.00, 0.5, 0.0, 0.0),
    (1.00, 59.36, 0.7, -0.10, -0.18),
]


@pytest.mark.parametrize("category", ["A", "B"])
def test_priority_of_volt_watt_and_frequency_droop(category: str) -> None:
    settings = DerSettings.from_dict(
        {
            "normal_category": category,
            "f_nom_hz": 60,
            "v_nom_v": 240,
            "p_rated_w": 10_000,
            "functions": {"reactive": "watt_var", "volt_watt": True, "enter_service": False},
            "volt_watt": {"v_pu": [1.06, 1.10], "p_pu": [1.0, 0.2]},
        }
    )
    der = DerController(settings)
    t = 0.0
    for v, f, p_out, q_a, q_b in PRIORITY_STEPS:
        for _ in range(100):  # long enough for every open-loop response to settle
            t += 1.0
            out = der.step(t, v, f, -5_000, p_discharge_max_w=10_000)
        p = min(out.p_max_w, max(out.p_min_w, -5_000))
        assert -p / 10_000 == pytest.approx(p_out, abs=0.005), (v, f)
        assert out.q_var / 10_000 == pytest.approx(q_a if category == "A" else q_b, abs=0.005), (v, f)
        assert out.trip is None


# --- Controller: trip, enter service, default deny --------------------------------------------------------


def _controller(**overrides: Any) -> DerController:
    data: dict[str, Any] = {"p_rated_w": 10_000, "f_nom_hz": 50}
    data.update(overrides)
    return DerController(DerSettings.from_dict(data))


def test_starts_out_of_service_then_ramps_in() -> None:
    der = _controller()
    out = der.step(0.0, 1.0, 50.0, 7_000)
    assert (out.p_min_w, out.p_max_w) == (0.0, 0.0)
    assert any("enter service" in r for r in out.reasons)
    for t in range(1, 300):
        der.step(float(t), 1.0, 50.0, 7_000)
    assert der.step(300.0, 1.0, 50.0, 7_000).p_max_w == 0.0
    assert der.step(450.0, 1.0, 50.0, 7_000).p_max_w == pytest.approx(5_000)
    out = der.step(600.0, 1.0, 50.0, 7_000, p_discharge_max_w=3_000)
    assert (out.p_min_w, out.p_max_w) == (-3_000.0, 10_000.0)
    assert out.reasons == []


def test_trip_ceases_power_and_reenters_after_delay_and_ramp() -> None:
    der = DerController(DerSettings.defaults(p_rated_w=10_000), in_service=True)
    assert der.step(0.0, 1.0, 50.0, 7_000).p_max_w == 10_000
    out = der.step(0.1, 0.40, 50.0, 7_000)  # deep dip: rides through for now
    assert out.p_max_w == 10_000 and any("riding through UV2" in r for r in out.reasons)
    out = der.step(0.26, 0.40, 50.0, 7_000)
    assert out.trip == "UV2"
    assert (out.p_min_w, out.p_max_w, out.q_var) == (0.0, 0.0, 0.0)
    assert der.last_trip is not None and der.last_trip.duration_s == pytest.approx(0.16)
    # Grid back to normal: 300 s enter-service delay, then a 300 s ramp (IEEE 1547-2018 defaults).
    assert der.step(1.0, 1.0, 50.0, 7_000).p_max_w == 0.0
    assert der.step(300.9, 1.0, 50.0, 7_000).p_max_w == 0.0
    assert der.step(451.0, 1.0, 50.0, 7_000).p_max_w == pytest.approx(5_000)
    assert der.step(601.0, 1.0, 50.0, 7_000).p_max_w == 10_000


def test_enter_service_can_leave_charging_alone() -> None:
    der = _controller(enter_service={"limits_charging": False})
    out = der.step(0.0, 1.0, 50.0, 7_000, p_discharge_max_w=5_000)
    assert (out.p_min_w, out.p_max_w) == (0.0, 10_000.0)


@pytest.mark.parametrize(("v", "f"), [(math.nan, 50.0), (1.0, math.inf), (-0.1, 50.0), (1.0, 0.0), ("1.0", 50.0)])
def test_unusable_measurement_is_default_deny(v: Any, f: Any) -> None:
    der = DerController(DerSettings.defaults(p_rated_w=10_000), in_service=True)
    out = der.step(0.0, v, f, 7_000)
    assert (out.p_min_w, out.p_max_w, out.q_var, out.trip) == (0.0, 0.0, 0.0, None)
    assert "default deny" in out.reasons[0]
    assert der.step(0.1, 1.0, 50.0, 7_000).p_max_w == 10_000  # the state was not disturbed


def test_wrong_inputs_from_the_manager_raise() -> None:
    der = DerController(DerSettings.defaults(p_rated_w=10_000), in_service=True)
    der.step(1.0, 1.0, 50.0, 0.0)
    with pytest.raises(ValueError, match="time went backwards"):
        der.step(0.5, 1.0, 50.0, 0.0)
    with pytest.raises(ValueError, match="p_request_w must be finite"):
        der.step(2.0, 1.0, 50.0, math.nan)
    with pytest.raises(ValueError, match="capability must be >= 0"):
        der.step(2.0, 1.0, 50.0, 0.0, p_discharge_max_w=-1.0)


# --- Controller: frequency functions ----------------------------------------------------------------------


def _immediate_droop() -> DerController:
    settings = DerSettings.from_dict({"p_rated_w": 10_000, "freq_droop": {"response_time_s": 0}})
    return DerController(settings, in_service=True)


@pytest.mark.parametrize(
    ("f_hz", "expected_max_w"),
    [
        (49.72, 6_000.0),  # 0.25 Hz beyond the 0.03 Hz deadband / (50 Hz x 5 %) = 0.1 p.u. less charging
        (49.22, 4_000.0),  # 0.3 p.u.
        (48.47, 1_000.0),  # 0.6 p.u.
    ],
)
def test_under_frequency_reduces_charging(f_hz: float, expected_max_w: float) -> None:
    der = _immediate_droop()
    der.step(0.0, 1.0, 50.0, 7_000)
    out = der.step(1.0, 1.0, f_hz, 7_000)
    assert out.p_max_w == pytest.approx(expected_max_w)
    assert out.p_min_w == 0.0
    assert any("under-frequency" in r for r in out.reasons)


def test_under_frequency_goes_into_discharge_only_when_allowed() -> None:
    der = _immediate_droop()
    der.step(0.0, 1.0, 50.0, 2_000)
    out = der.step(1.0, 1.0, 49.47, 2_000)  # 0.2 p.u. = 2 kW: charging stops exactly
    assert out.p_max_w == pytest.approx(0.0, abs=1e-6)
    out = der.step(2.0, 1.0, 49.22, 2_000)  # 0.3 p.u.: would discharge 1 kW, not allowed
    assert out.p_max_w == pytest.approx(0.0, abs=1e-6) and out.p_min_w == 0.0
    out = der.step(3.0, 1.0, 49.22, 2_000, p_discharge_max_w=5_000)  # allowed: p_pre stays 2 kW
    assert out.p_max_w == pytest.approx(-1_000)
    # Back in the deadband the droop releases the window.
    assert der.step(4.0, 1.0, 50.0, 2_000, p_discharge_max_w=5_000).p_max_w == 10_000


def test_freq_watt_follows_its_open_loop_response_time() -> None:
    der = DerController(DerSettings.defaults(p_rated_w=10_000), in_service=True)
    der.step(0.0, 1.0, 50.0, 0.0)
    out = None
    for k in range(1, 51):  # 5 s at 0.1 s after an over-frequency step to 50.28 Hz (target +1 kW)
        out = der.step(k / 10, 1.0, 50.28, 0.0)
    assert out is not None
    # The first sample latches p_pre, so the 5 s response is counted from the second one.
    expected = 1_000 * (1 - 10 ** (-(5.0 - 0.1) / 5.0))
    assert out.p_min_w == pytest.approx(expected, rel=1e-6)
    assert any("over-frequency" in r for r in out.reasons)


@pytest.mark.parametrize(("threshold", "f_below"), [("49.7", 49.69), ("49.6", 49.59), ("49.5", 49.49)])
@pytest.mark.parametrize("discharge_allowed", [0.0, 8_000.0])
def test_ffr_through_the_controller_acts_on_the_first_sample(
    threshold: str, f_below: float, discharge_allowed: float
) -> None:
    der = DerController(
        DerSettings.from_dict(
            {
                "p_rated_w": 10_000,
                "functions": {"ffr": True, "freq_watt": False},
                "ffr": {"activation_hz": threshold, "discharge_power_w": 5_000},
            }
        ),
        in_service=True,
    )
    t = 0.0
    for _ in range(10):
        out = der.step(t, 1.0, 50.0, 7_000, p_discharge_max_w=discharge_allowed)
        assert out.p_max_w == 10_000
        t += 0.1
    out = der.step(t, 1.0, f_below, 7_000, p_discharge_max_w=discharge_allowed)
    expected = -5_000.0 if discharge_allowed else 0.0
    assert out.p_max_w == expected
    assert any("FFR active" in r for r in out.reasons)


def test_fcr_n_shifts_the_request() -> None:
    der = DerController(
        DerSettings.from_dict(
            {"p_rated_w": 10_000, "functions": {"fcr_n": True, "freq_watt": False}, "fcr_n": {"capacity_w": 2_000}}
        ),
        in_service=True,
    )
    out = der.step(0.0, 1.0, 49.95, 5_000)
    assert out.p_max_w == pytest.approx(4_000)
    out = der.step(1.0, 1.0, 50.1, 5_000)
    assert out.p_min_w == pytest.approx(7_000)


# --- Controller: voltage functions -------------------------------------------------------------------------


def test_volt_var_through_the_controller_with_its_response_time() -> None:
    der = DerController(
        DerSettings.from_dict({"p_rated_w": 10_000, "functions": {"reactive": "volt_var"}}), in_service=True
    )
    assert der.step(0.0, 1.0, 50.0, 0.0).q_var == 0.0
    out = None
    for k in range(1, 51):  # Cat B, Tr 5 s: 90 % of -0.22 p.u. of 10 kVA after 5 s
        out = der.step(k / 10, 1.05, 50.0, 0.0)
    assert out is not None
    assert out.q_var == pytest.approx(-2_200 * 0.9, rel=1e-6)
    assert any("volt-var" in r and "absorbing" in r for r in out.reasons)


def test_volt_watt_limits_discharge_and_an_absorbing_curve_demands_charging() -> None:
    der = DerController(
        DerSettings.from_dict(
            {"p_rated_w": 10_000, "functions": {"volt_watt": True}, "volt_watt": {"response_time_s": 0}}
        ),
        in_service=True,
    )
    out = der.step(0.0, 1.08, 50.0, -8_000, p_discharge_max_w=10_000)
    assert (out.p_min_w, out.p_max_w) == (pytest.approx(-5_000), 10_000)
    out = der.step(1.0, 1.10, 50.0, -8_000, p_discharge_max_w=10_000)
    assert out.p_min_w == pytest.approx(0.0, abs=1e-9)  # P'2 = 0: charging allowed, not demanded
    absorbing = DerController(
        DerSettings.from_dict(
            {
                "p_rated_w": 10_000,
                "functions": {"volt_watt": True},
                "volt_watt": {"v_pu": [1.05, 1.10], "p_pu": [1.0, -1.0], "response_time_s": 0},
            }
        ),
        in_service=True,
    )
    out = absorbing.step(0.0, 1.0875, 50.0, 0.0)
    assert out.p_min_w == pytest.approx(5_000)  # must charge at least half the rating
    out = absorbing.step(1.0, 1.0875, 50.0, 0.0, p_charge_max_w=2_000)  # the EV cannot: capability wins
    assert (out.p_min_w, out.p_max_w) == (2_000, 2_000)


def test_fixed_power_factor_and_reactive_priority() -> None:
    der = DerController(
        DerSettings.from_dict(
            {
                "p_rated_w": 10_000,
                "functions": {"reactive": "fixed_pf"},
                "fixed_pf": {"pf": 0.9, "excitation": "injecting", "charging": {"pf": 0.95, "excitation": "absorbing"}},
            }
        ),
        in_service=True,
    )
    out = der.step(0.0, 1.0, 50.0, -8_000, p_discharge_max_w=10_000)
    q = 8_000 * math.tan(math.acos(0.9))
    assert out.q_var == pytest.approx(min(q, 4_400))  # capped at the Cat B injection capability
    available = math.sqrt(10_000**2 - out.q_var**2)
    assert out.p_min_w == pytest.approx(-available)
    assert any("reactive power priority" in r for r in out.reasons)
    out = der.step(1.0, 1.0, 50.0, 6_000)
    assert out.q_var == pytest.approx(-6_000 * math.tan(math.acos(0.95)))


# --- Property: the window is always sane -------------------------------------------------------------------

_PROPERTY_SETTINGS = DerSettings.from_dict(
    {
        "p_rated_w": 10_000,
        "functions": {"reactive": "volt_var", "volt_watt": True, "ffr": True, "fcr_n": True},
        "enter_service": {"delay_s": 1.0, "ramp_s": 2.0},
        "ffr": {"discharge_power_w": 5_000},
        "fcr_n": {"capacity_w": 2_000},
        "volt_watt": {"v_pu": [1.05, 1.10], "p_pu": [1.0, -1.0], "response_time_s": 1.0},
    }
)

samples = st.tuples(
    st.floats(0.0, 2.0),  # dt
    st.floats(0.0, 1.4),  # v
    st.floats(45.0, 55.0),  # f
    st.floats(-15_000, 15_000),  # request
    st.floats(0.0, 12_000),  # charge capability
    st.floats(0.0, 12_000),  # discharge capability
)


@settings(max_examples=60, deadline=None)
@given(st.lists(samples, min_size=1, max_size=60))
def test_window_is_never_empty_and_stays_within_capability(steps: list[tuple[float, ...]]) -> None:
    der = DerController(_PROPERTY_SETTINGS)
    s = _PROPERTY_SETTINGS
    t = 0.0
    for dt, v, f, request, charge, discharge in steps:
        t += dt
        out = der.step(t, v, f, request, p_charge_max_w=charge, p_discharge_max_w=discharge)
        assert out.p_min_w <= out.p_max_w
        assert out.p_min_w >= -min(discharge, s.p_rated_w) - 1e-6
        assert out.p_max_w <= min(charge, s.p_rated_charge_w) + 1e-6
        assert -s.q_max_absorbing_var - 1e-6 <= out.q_var <= s.q_max_injecting_var + 1e-6
        if out.trip is not None:
            assert (out.p_min_w, out.p_max_w, out.q_var) == (0.0, 0.0, 0.0)
        assert out.explain()


def test_the_configuration_example_in_the_docs_loads() -> None:
    text = (Path(__file__).resolve().parents[3] / "docs" / "der.md").read_text(encoding="utf-8")
    match = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert match is not None
    settings = DerSettings.from_dict(yaml.safe_load(match.group(1)))
    assert settings.reactive_mode == "volt_var" and settings.volt_watt_enabled
    assert settings.q_max_injecting_var == 4_840
