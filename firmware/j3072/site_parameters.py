"""The site parameters a PEV's onboard inverter must use here, in IEEE 2030.5 units, and their read-back.

R106: the inverter roams and the EVSE is fixed, so at every connection the EVSE transfers the site's
parameters to the PEV and verifies that it applied them. The parameters are the site's interconnection
settings (:class:`firmware.energy.der_settings.DerSettings`: nominal voltage and frequency, IEEE 1547
categories, trip and ride-through settings, volt-var / volt-watt / freq-watt, enter service) plus the
interconnection agreement's maximum discharge power and current.

Our J3072 profile (docs/j3072.md) carries them in the J3072 DERProgram's DefaultDERControl (enter
service, ramp rates, frequency droop, maximum active power) and its DERCurves (volt-var, volt-watt and
the eight must-trip curves); the PEV answers with its DERSettings, which :func:`check_readback` compares
field by field. Units are the 2030.5 schema's (sep.xsd annotations): hundredths of a percent of setVRef
for voltages, hundredths of Hz, hundredths of a second, thousandths for the droop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from firmware.energy.der_curves import PiecewiseCurve
from firmware.energy.der_settings import DerSettings
from firmware.energy.der_trip import TripSetting

__all__ = ["CurveData", "DerCurve", "PevSettings", "SiteParameters", "check_readback", "modes_bitmap"]

#: DERControlType bit positions (IEEE 2030.5 sep.xsd, DERControlType).
MODE_BITS = {
    "charge": 0,
    "discharge": 1,
    "opModConnect": 2,
    "opModEnergize": 3,
    "opModFixedW": 7,
    "opModFreqDroop": 8,
    "opModFreqWatt": 9,
    "opModHFRTMustTrip": 11,
    "opModHVRTMustTrip": 14,
    "opModLFRTMustTrip": 16,
    "opModLVRTMustTrip": 19,
    "opModMaxLimW": 20,
    "opModTargetW": 22,
    "opModVoltVar": 23,
    "opModVoltWatt": 24,
    "opModWattVar": 26,
}
#: DERCurveType values (sep.xsd DERCurveType).
CURVE_TYPES = {
    "opModFreqWatt": 0,
    "opModHFRTMustTrip": 2,
    "opModHVRTMustTrip": 5,
    "opModLFRTMustTrip": 7,
    "opModLVRTMustTrip": 10,
    "opModVoltVar": 11,
    "opModVoltWatt": 12,
    "opModWattVar": 14,
}
#: DERUnitRefType (sep.xsd): what a curve's percent y values refer to.
Y_REF_NONE, Y_REF_MAX_W, Y_REF_MAX_VAR = 0, 1, 2
#: A trip curve's x is a duration in seconds (sep.xsd opModHVRTMustTrip); with multiplier -2 the values
#: are hundredths of a second, the resolution of every other 2030.5 time.
TIME_MULTIPLIER = -2
#: Voltages are effective percent of setVRef; multiplier -2: hundredths of a percent.
PERCENT_MULTIPLIER = -2
#: Frequencies in Hz; multiplier -2: hundredths of Hz.
HZ_MULTIPLIER = -2
#: A read-back value may differ by the rounding of one unit of its resolution.
POWER_TOLERANCE_W = 1.0
VOLTAGE_TOLERANCE_V = 0.5
CURRENT_TOLERANCE_A = 0.1


@dataclass(frozen=True)
class CurveData:
    x: int
    y: int


@dataclass(frozen=True)
class DerCurve:
    """One DERCurve resource (sep.xsd order: mRID ... CurveData, curveType, openLoopTms, ...)."""

    key: str  # the DERControlBase element that links it, e.g. opModVoltVar
    points: tuple[CurveData, ...]
    x_multiplier: int
    y_multiplier: int
    y_ref_type: int
    open_loop_tms: int | None = None

    @property
    def curve_type(self) -> int:
        return CURVE_TYPES[self.key]


@dataclass(frozen=True)
class PevSettings:
    """The PEV's DERSettings as it PUT them (only the fields the read-back looks at; None = absent)."""

    updated_time: int
    set_max_w: float
    set_grad_w: int
    modes_enabled: int | None = None
    set_es_delay: int | None = None
    set_es_high_freq: int | None = None
    set_es_high_volt: int | None = None
    set_es_low_freq: int | None = None
    set_es_low_volt: int | None = None
    set_es_ramp_tms: int | None = None
    set_es_random_delay: int | None = None
    set_soft_grad_w: int | None = None
    set_max_a: float | None = None
    set_max_charge_rate_w: float | None = None
    set_max_discharge_rate_w: float | None = None
    set_v_ref: float | None = None


def modes_bitmap(names: list[str] | tuple[str, ...]) -> int:
    bits = 0
    for name in names:
        bits |= 1 << MODE_BITS[name]
    return bits


def _hundredths(value: float) -> int:
    return round(value * 100)


@dataclass(frozen=True)
class SiteParameters:
    """The parameters of this site, with a version that changes whenever one of them does."""

    der: DerSettings
    max_discharge_w: float
    max_charge_w: float
    max_current_a: float
    #: The default ramp rate (2030.5 setGradW) in % of setMaxW per second; 0 = no limit.
    grad_w_pct_per_s: float = 0.0
    version: int = 1

    def __post_init__(self) -> None:
        for name in ("max_discharge_w", "max_charge_w", "max_current_a", "grad_w_pct_per_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"j3072.{name}: must be a finite number >= 0, not {value!r}")
        if self.version < 1:
            raise ValueError(f"site parameter version must be >= 1, not {self.version}")

    # ------------------------------------------------------------------ what the EVSE sends
    def required_modes(self) -> tuple[str, ...]:
        """The functions the PEV must report enabled (modesEnabled) for the site's settings."""
        der = self.der
        modes = ["charge", "discharge", "opModConnect", "opModTargetW", "opModMaxLimW"]
        if der.trip_enabled:
            modes += ["opModHVRTMustTrip", "opModLVRTMustTrip", "opModHFRTMustTrip", "opModLFRTMustTrip"]
        if der.reactive_mode == "volt_var":
            modes.append("opModVoltVar")
        elif der.reactive_mode == "watt_var":
            modes.append("opModWattVar")
        if der.volt_watt_enabled:
            modes.append("opModVoltWatt")
        if der.freq_watt_enabled:
            modes.append("opModFreqDroop")
        return tuple(modes)

    def enter_service(self) -> dict[str, int]:
        """DefaultDERControl setES* (sep.xsd: delay and ramp in 1/100 s, voltage in 1/100 % of setVRef,
        frequency in 1/100 Hz)."""
        es = self.der.enter_service
        return {
            "setESDelay": _hundredths(es.delay_s),
            "setESHighFreq": _hundredths(es.f_max_hz),
            "setESHighVolt": round(es.v_max_pu * 10000),
            "setESLowFreq": _hundredths(es.f_min_hz),
            "setESLowVolt": round(es.v_min_pu * 10000),
            "setESRampTms": _hundredths(es.ramp_s),
            # No randomised delay: the site has one EVSE per connection point (1547-2018 4.10.3 allows 0).
            "setESRandomDelay": 0,
        }

    def grad_w(self) -> int:
        """setGradW / setSoftGradW: hundredths of a percent of setMaxW per second."""
        return round(self.grad_w_pct_per_s * 100)

    def freq_droop(self) -> dict[str, int]:
        """opModFreqDroop (sep.xsd FreqDroopType: deadbands in 1/1000 Hz, k in 1/1000, Tr in 1/100 s)."""
        d = self.der.freq_droop
        return {
            "dBOF": round(d.db_of_hz * 1000),
            "dBUF": round(d.db_uf_hz * 1000),
            "kOF": round(d.k_of * 1000),
            "kUF": round(d.k_uf * 1000),
            "openLoopTms": _hundredths(d.response_time_s),
        }

    @property
    def discharge_limit_w(self) -> float:
        """The agreement's maximum export of one PEV: its power, and its current at nominal voltage (a
        J3072 EVSE is a single-phase Level 2 connection, seed 003)."""
        return min(self.max_discharge_w, self.max_current_a * self.der.v_nom_v)

    def max_lim_w_pct(self, pev_max_w: float | None) -> int:
        """opModMaxLimW (hundredths of a percent of the PEV's setMaxW) that holds the PEV's output to the
        site's maximum: 2030.5 has no absolute export limit in a control, so the site's watts are given
        relative to the rating the PEV declared in its DERCapability. Before the PEV has declared one,
        0: no export (default deny)."""
        if pev_max_w is None or not pev_max_w > 0:
            return 0
        return max(0, min(10000, math.floor(self.discharge_limit_w / pev_max_w * 10000)))

    def curves(self) -> tuple[DerCurve, ...]:
        der = self.der
        curves: list[DerCurve] = []
        if der.trip_enabled:
            for key, elements in (
                ("opModHVRTMustTrip", _trip(der.voltage_trip, "OV")),
                ("opModLVRTMustTrip", _trip(der.voltage_trip, "UV")),
                ("opModHFRTMustTrip", _trip(der.frequency_trip, "OF")),
                ("opModLFRTMustTrip", _trip(der.frequency_trip, "UF")),
            ):
                if elements:
                    volt = key in ("opModHVRTMustTrip", "opModLVRTMustTrip")
                    points = tuple(
                        CurveData(
                            x=_hundredths(t.clearing_time_s),
                            y=round(t.threshold * 10000) if volt else _hundredths(t.threshold),
                        )
                        for t in elements
                    )
                    curves.append(
                        DerCurve(key, points, TIME_MULTIPLIER, PERCENT_MULTIPLIER if volt else HZ_MULTIPLIER, 0)
                    )
        if der.reactive_mode == "volt_var":
            # x: percent of setVRef; y: percent of setMaxVar (DERUnitRefType 2), signed, + = injecting.
            curves.append(_percent_curve("opModVoltVar", der.volt_var_curve, Y_REF_MAX_VAR))
        if der.volt_watt_enabled:
            # x: percent of setVRef; y: percent of setMaxW (DERUnitRefType 1).
            curves.append(_percent_curve("opModVoltWatt", der.volt_watt_curve, Y_REF_MAX_W))
        return tuple(curves)


def _percent_curve(key: str, curve: PiecewiseCurve, y_ref_type: int) -> DerCurve:
    """A per-unit curve as a 2030.5 DERCurve in hundredths of a percent, with its open-loop response time."""
    points = tuple(CurveData(round(x * 10000), round(y * 10000)) for x, y in zip(curve.x, curve.y, strict=True))
    return DerCurve(key, points, PERCENT_MULTIPLIER, PERCENT_MULTIPLIER, y_ref_type, _hundredths(curve.response_time_s))


def _trip(settings: tuple[TripSetting, ...], prefix: str) -> list[TripSetting]:
    """The elements of one side (over or under, voltage or frequency), longest clearing time first, so
    the curve's durations rise: 2030.5 curves are interpolated along x."""
    chosen = [t for t in settings if t.element.startswith(prefix)]
    return sorted(chosen, key=lambda t: t.clearing_time_s)


# ------------------------------------------------------------------ what the EVSE reads back
def check_readback(params: SiteParameters, got: PevSettings) -> tuple[str, ...]:
    """Every way the PEV's DERSettings differ from the site parameters (empty: applied as sent)."""
    problems: list[str] = []
    for name, want in params.enter_service().items():
        have = getattr(got, _FIELD_OF[name])
        if have != want:
            problems.append(f"{name} is {have}, the site sent {want}")
    if got.set_grad_w != params.grad_w():
        problems.append(f"setGradW is {got.set_grad_w}, the site sent {params.grad_w()}")
    v_nom = params.der.v_nom_v
    if got.set_v_ref is None or abs(got.set_v_ref - v_nom) > VOLTAGE_TOLERANCE_V:
        problems.append(f"setVRef is {_fmt(got.set_v_ref, 'V')}, the site's nominal voltage is {v_nom:g} V")
    if got.set_max_discharge_rate_w is None:
        problems.append("setMaxDischargeRateW is missing")
    elif got.set_max_discharge_rate_w > params.discharge_limit_w + POWER_TOLERANCE_W:
        problems.append(
            f"setMaxDischargeRateW is {got.set_max_discharge_rate_w:g} W, "
            f"above the site's maximum {params.discharge_limit_w:g} W"
        )
    if got.set_max_w > params.discharge_limit_w + POWER_TOLERANCE_W:
        problems.append(f"setMaxW is {got.set_max_w:g} W, above the site's maximum {params.discharge_limit_w:g} W")
    if got.set_max_a is not None and got.set_max_a > params.max_current_a + CURRENT_TOLERANCE_A:
        problems.append(f"setMaxA is {got.set_max_a:g} A, above the site's {params.max_current_a:g} A")
    required = modes_bitmap(params.required_modes())
    have_modes = got.modes_enabled or 0
    missing = [n for n in params.required_modes() if not have_modes & (1 << MODE_BITS[n])]
    if have_modes & required != required:
        problems.append(f"modesEnabled lacks {', '.join(missing)}")
    return tuple(problems)


_FIELD_OF = {
    "setESDelay": "set_es_delay",
    "setESHighFreq": "set_es_high_freq",
    "setESHighVolt": "set_es_high_volt",
    "setESLowFreq": "set_es_low_freq",
    "setESLowVolt": "set_es_low_volt",
    "setESRampTms": "set_es_ramp_tms",
    "setESRandomDelay": "set_es_random_delay",
}


def _fmt(value: float | None, unit: str) -> str:
    return "missing" if value is None else f"{value:g} {unit}"
