"""Site parameters in 2030.5 units, and the read-back: what was sent reads back clean, any change does not."""

from __future__ import annotations

from dataclasses import fields, replace

from hypothesis import given
from hypothesis import strategies as st

from firmware.energy.der_settings import DerSettings
from firmware.j3072.site_parameters import (
    CURVE_TYPES,
    MODE_BITS,
    PevSettings,
    SiteParameters,
    check_readback,
    modes_bitmap,
)


def _params(**der: object) -> SiteParameters:
    doc: dict[str, object] = {"f_nom_hz": 60, "v_nom_v": 240, "p_rated_w": 7600, **der}
    return SiteParameters(DerSettings.from_dict(doc), max_discharge_w=6000, max_charge_w=11500, max_current_a=48)


def _applied(params: SiteParameters, max_discharge_w: float = 6000) -> PevSettings:
    """DERSettings of a PEV that applied ``params`` exactly."""
    es = params.enter_service()
    return PevSettings(
        updated_time=0,
        set_max_w=max_discharge_w,
        set_grad_w=params.grad_w(),
        modes_enabled=modes_bitmap(params.required_modes()),
        set_es_delay=es["setESDelay"],
        set_es_high_freq=es["setESHighFreq"],
        set_es_high_volt=es["setESHighVolt"],
        set_es_low_freq=es["setESLowFreq"],
        set_es_low_volt=es["setESLowVolt"],
        set_es_ramp_tms=es["setESRampTms"],
        set_es_random_delay=es["setESRandomDelay"],
        set_max_discharge_rate_w=max_discharge_w,
        set_v_ref=params.der.v_nom_v,
    )


def test_ieee_1547_defaults_in_2030_5_units() -> None:
    params = _params()
    # IEEE 1547.1-2020 Table 11 enter service: 0.917-1.05 p.u., 59.5-60.1 Hz, 300 s delay, 300 s ramp.
    assert params.enter_service() == {
        "setESDelay": 30000,
        "setESHighFreq": 6010,
        "setESHighVolt": 10500,
        "setESLowFreq": 5950,
        "setESLowVolt": 9170,
        "setESRampTms": 30000,
        "setESRandomDelay": 0,
    }
    # 1547-2018 Table 24 droop: 0.036 Hz deadbands, 5 %, 5 s.
    assert params.freq_droop() == {"dBOF": 36, "dBUF": 36, "kOF": 50, "kUF": 50, "openLoopTms": 500}
    curves = {c.key: c for c in params.curves()}
    # Cat II voltage trip (Table 12): OV2 1.20 / 0.16 s, OV1 1.10 / 2 s; durations rise along x.
    hv = curves["opModHVRTMustTrip"]
    assert [(p.x, p.y) for p in hv.points] == [(16, 12000), (200, 11000)]
    assert hv.curve_type == CURVE_TYPES["opModHVRTMustTrip"] == 5
    lf = curves["opModLFRTMustTrip"]
    assert [(p.x, p.y) for p in lf.points] == [(16, 5650), (30000, 5850)]  # UF2 56.5 Hz, UF1 58.5 Hz


def test_the_limit_is_relative_to_the_pev_rating() -> None:
    params = _params()
    assert params.max_lim_w_pct(None) == 0  # no rating known: no export
    assert params.max_lim_w_pct(12000) == 5000
    assert params.max_lim_w_pct(3000) == 10000  # a small PEV: its whole rating


def test_a_faithful_pev_reads_back_clean() -> None:
    params = _params()
    assert check_readback(params, _applied(params)) == ()


_INT_FIELDS = [f.name for f in fields(PevSettings) if f.name.startswith("set_es_") or f.name == "set_grad_w"]


@given(st.sampled_from(_INT_FIELDS), st.integers(min_value=1, max_value=5000), st.booleans())
def test_any_changed_enter_service_or_ramp_value_is_a_mismatch(name: str, delta: int, down: bool) -> None:
    params = _params()
    applied = _applied(params)
    value = getattr(applied, name) + (-delta if down else delta)
    assert check_readback(params, replace(applied, **{name: value}))


@given(st.floats(min_value=6002, max_value=1e6))
def test_a_discharge_maximum_above_the_site_is_a_mismatch(watts: float) -> None:
    params = _params()
    problems = check_readback(params, _applied(params, max_discharge_w=watts))
    assert any("setMaxDischargeRateW" in p for p in problems)


@given(st.sampled_from(sorted(_params(functions={"volt_watt": True}).required_modes())))
def test_a_required_mode_left_off_is_a_mismatch(mode: str) -> None:
    params = _params(functions={"volt_watt": True})
    applied = _applied(params)
    off = replace(applied, modes_enabled=(applied.modes_enabled or 0) & ~(1 << MODE_BITS[mode]))
    assert any(mode in p for p in check_readback(params, off))


def test_a_wrong_nominal_voltage_is_a_mismatch() -> None:
    params = _params()
    assert check_readback(params, replace(_applied(params), set_v_ref=230))
    assert check_readback(params, replace(_applied(params), set_v_ref=None))
    assert check_readback(params, replace(_applied(params), set_v_ref=240.4)) == ()  # within 0.5 V
