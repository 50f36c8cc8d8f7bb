"""Autonomous DER grid-support functions of the energy manager (seed R81, R87-R91, R93).

The EV behind a bidirectional charger is a distributed energy resource: from the measured grid
voltage and frequency it must adjust its active and reactive power by itself, on curves set by the
configuration or the backend, without waiting for any remote command (R88, R93). :class:`DerController`
combines the functions and, each cycle, turns a measurement into

* a **power window** ``[p_min_w, p_max_w]`` (W, + = the EV charges, - = it discharges) that the energy
  manager intersects with its other bounds (site, OCPP, EMS, user), and
* a **reactive power setpoint** ``q_var`` (var, + = injecting),

with one human-readable reason per active function for ``evse why``.

Order of precedence inside the window (a later function is clipped into what the earlier ones left):
capability -> trip -> enter service -> volt-watt -> freq-watt -> FFR -> FCR-N -> reactive power priority.
Volt-watt ahead of freq-watt follows the IEEE 1547.1-2020 priority test (Tables 38/39: at 1.09 p.u. and
59.36 Hz the active power stays at the volt-watt limit). FFR and FCR-N are market products layered on
top of the mandatory functions.

The building blocks are importable from here too: curves and reactive functions
(:mod:`firmware.energy.der_curves`), frequency support (:mod:`firmware.energy.der_frequency`), trip and
enter service (:mod:`firmware.energy.der_trip`), settings (:mod:`firmware.energy.der_settings`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from firmware.energy.der_curves import (
    PF_MIN_ABSORBING,
    PF_MIN_INJECTING,
    VOLT_VAR_CAT_A,
    VOLT_VAR_CAT_B,
    VOLT_WATT_DEFAULT,
    VOLT_WATT_GENERATING_ONLY,
    WATT_VAR_CAT_A,
    WATT_VAR_CAT_B,
    DerError,
    PiecewiseCurve,
    PowerFactorError,
    ResponseFilter,
    finite,
    fixed_power_factor,
    volt_var,
    volt_watt_limit,
    watt_var,
)
from firmware.energy.der_frequency import (
    FFR_OPTIONS,
    FREQ_DROOP_DEFAULT,
    FastFrequencyResponse,
    FcrNSettings,
    FfrOption,
    FfrSettings,
    FreqDroop,
    FrequencyContainment,
    ffr_max_sample_period,
    freq_watt,
)
from firmware.energy.der_settings import DerConfigError, DerSettings, FixedPf
from firmware.energy.der_trip import (
    ENTER_SERVICE_DEFAULT,
    FREQUENCY_TRIP_DEFAULTS_60HZ,
    VOLTAGE_TRIP_DEFAULTS,
    EnterService,
    EnterServiceSettings,
    TripEvent,
    TripMonitor,
    TripSetting,
)

__all__ = [
    "ENTER_SERVICE_DEFAULT",
    "FFR_OPTIONS",
    "FREQUENCY_TRIP_DEFAULTS_60HZ",
    "FREQ_DROOP_DEFAULT",
    "PF_MIN_ABSORBING",
    "PF_MIN_INJECTING",
    "VOLTAGE_TRIP_DEFAULTS",
    "VOLT_VAR_CAT_A",
    "VOLT_VAR_CAT_B",
    "VOLT_WATT_DEFAULT",
    "VOLT_WATT_GENERATING_ONLY",
    "WATT_VAR_CAT_A",
    "WATT_VAR_CAT_B",
    "DerConfigError",
    "DerController",
    "DerError",
    "DerOutput",
    "DerSettings",
    "EnterService",
    "EnterServiceSettings",
    "FastFrequencyResponse",
    "FcrNSettings",
    "FfrOption",
    "FfrSettings",
    "FixedPf",
    "FreqDroop",
    "FrequencyContainment",
    "PiecewiseCurve",
    "PowerFactorError",
    "ResponseFilter",
    "TripEvent",
    "TripMonitor",
    "TripSetting",
    "ffr_max_sample_period",
    "fixed_power_factor",
    "freq_watt",
    "volt_var",
    "volt_watt_limit",
    "watt_var",
]


@dataclass(frozen=True)
class DerOutput:
    """One cycle's result: the power window, the reactive setpoint, a trip, and why."""

    p_max_w: float  # upper bound on P (+ = charging)
    p_min_w: float  # lower bound on P (- = discharging)
    q_var: float  # reactive power setpoint, + = injecting
    trip: str | None  # the element that tripped this cycle ("OV2", "UF1", ...), else None
    reasons: list[str] = field(default_factory=list)

    def explain(self) -> str:
        head = f"DER window {_power(self.p_min_w)} .. {_power(self.p_max_w)}, Q {self.q_var / 1000:+.2f} kvar"
        if self.trip:
            head += f", TRIPPED ({self.trip})"
        return "\n".join([head, *(f"  - {r}" for r in self.reasons)])


def _power(p_w: float) -> str:
    if p_w > 0:
        return f"charge {p_w / 1000:.2f} kW"
    if p_w < 0:
        return f"discharge {-p_w / 1000:.2f} kW"
    return "0 kW"


def _grid_sample_problem(v_pu: object, f_hz: object) -> str | None:
    for name, value in (("voltage", v_pu), ("frequency", f_hz)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"{name} is {value!r}"
    assert isinstance(v_pu, int | float) and isinstance(f_hz, int | float)
    if v_pu < 0 or f_hz <= 0:
        return f"implausible {v_pu:g} p.u., {f_hz:g} Hz"
    return None


class DerController:
    """All DER functions of one connector, stepped once per energy-manager cycle.

    ``in_service``: start as if the enter-service conditions had already been met (for a controller
    rebuilt while the EV was exchanging power); by default the EV starts out of service (default deny)
    and must see the enter-service window for its delay first.
    """

    def __init__(self, settings: DerSettings, *, in_service: bool = False) -> None:
        self.settings = settings
        s = settings
        self.trip_monitor = TripMonitor(s.voltage_trip, s.frequency_trip)
        self.enter_service = EnterService(s.enter_service, in_service=in_service or not s.enter_service_enabled)
        self.ffr = FastFrequencyResponse(s.ffr) if s.ffr is not None else None
        self.fcr_n = FrequencyContainment(s.fcr_n) if s.fcr_n is not None else None
        self._vw = ResponseFilter(s.volt_watt_curve.response_time_s)
        self._vv = ResponseFilter(s.volt_var_curve.response_time_s)
        self._wv = ResponseFilter(s.watt_var_curve.response_time_s)
        self._fw = ResponseFilter(s.freq_droop.response_time_s, initial=0.0)
        self._p_pre: float | None = None
        self._last: float | None = None
        self.last_trip: TripEvent | None = None

    def step(
        self,
        now: float,
        v_pu: float,
        f_hz: float,
        p_request_w: float,
        *,
        p_charge_max_w: float | None = None,
        p_discharge_max_w: float = 0.0,
    ) -> DerOutput:
        """One cycle. ``p_request_w`` is what the manager would like (the droop's pre-disturbance power
        and the watt-var/PF operating point); ``p_charge_max_w`` / ``p_discharge_max_w`` are what the EV
        and converter can do now (default: the charging rating, and no discharge - default deny).

        A measurement that is not a finite, plausible number yields the window [0, 0] (default deny)
        and leaves the state untouched; inputs from the manager itself that are wrong raise
        :class:`DerError`.
        """
        s = self.settings
        t = finite("now", now)
        if self._last is not None and t < self._last:
            raise DerError(f"time went backwards: {t:g} after {self._last:g}")
        p_req = finite("p_request_w", p_request_w)
        charge_max = s.p_rated_charge_w if p_charge_max_w is None else finite("p_charge_max_w", p_charge_max_w)
        discharge_max = finite("p_discharge_max_w", p_discharge_max_w)
        if charge_max < 0 or discharge_max < 0:
            raise DerError(f"capability must be >= 0, not charge {charge_max:g} W, discharge {discharge_max:g} W")
        charge_max = min(charge_max, s.p_rated_charge_w)
        discharge_max = min(discharge_max, s.p_rated_w)

        problem = _grid_sample_problem(v_pu, f_hz)
        if problem is not None:
            return DerOutput(0.0, 0.0, 0.0, None, [f"grid measurement unusable ({problem}): no power (default deny)"])
        self._last = t
        v, f = float(v_pu), float(f_hz)
        reasons: list[str] = []
        lo, hi = -discharge_max, charge_max

        if s.trip_enabled:
            event = self.trip_monitor.update(t, v, f)
            if event is not None:
                self._trip(event)
                return DerOutput(0.0, 0.0, 0.0, event.element, [f"{event.describe()}: cease to energise"])
            reasons += self.trip_monitor.riding_through(t)

        fraction = 1.0
        if s.enter_service_enabled:
            self.enter_service.update(t, v, f)
            fraction = self.enter_service.max_power_fraction(t)
            if fraction < 1.0:
                reasons.append(self.enter_service.describe(t))
                lo = max(lo, -fraction * s.p_rated_w)
                if s.enter_service_limits_charging:
                    hi = min(hi, fraction * s.p_rated_charge_w)

        if s.volt_watt_enabled:
            lo = self._volt_watt(t, v, lo, hi, reasons)
        if s.freq_watt_enabled:
            lo, hi = self._freq_watt(t, f, p_req, lo, hi, charge_max, discharge_max, reasons)
        if self.ffr is not None:
            hi = self._ffr(t, f, lo, hi, charge_max, discharge_max, reasons)
        if self.fcr_n is not None:
            delta = self.fcr_n.step(f)
            if delta > 0:
                lo = min(hi, max(lo, p_req + delta))
                reasons.append(self.fcr_n.describe(f))
            elif delta < 0:
                hi = max(lo, min(hi, p_req + delta))
                reasons.append(self.fcr_n.describe(f))

        q = self._reactive(t, v, min(hi, max(lo, p_req)), reasons)
        if fraction == 0.0:
            q = 0.0  # not energised: no reactive power either
        elif q != 0.0:
            lo, hi = self._reactive_priority(q, lo, hi, reasons)
        return DerOutput(p_max_w=hi, p_min_w=lo, q_var=q, trip=None, reasons=reasons)

    # --- the functions ----------------------------------------------------------------------------

    def _trip(self, event: TripEvent) -> None:
        self.last_trip = event
        if self.settings.enter_service_enabled:
            self.enter_service.cease()
        # Start the curve responses afresh when the EV comes back into service.
        self._p_pre = None
        for flt in (self._vw, self._vv, self._wv):
            flt.reset()
        self._fw.reset(0.0)

    def _volt_watt(self, t: float, v: float, lo: float, hi: float, reasons: list[str]) -> float:
        s = self.settings
        y = self._vw.step(t, s.volt_watt_curve(v))
        if y >= 1.0:
            return lo
        max_injection = y * (s.p_rated_w if y >= 0 else s.p_rated_charge_w)
        if max_injection >= 0:
            reasons.append(f"volt-watt: {v:.3f} p.u., discharge at most {max_injection / 1000:.2f} kW (IEEE 1547-2018)")
        else:
            reasons.append(f"volt-watt: {v:.3f} p.u., charge at least {-max_injection / 1000:.2f} kW (IEEE 1547-2018)")
        return min(hi, max(lo, -max_injection))

    def _freq_watt(
        self,
        t: float,
        f: float,
        p_req: float,
        lo: float,
        hi: float,
        charge_max: float,
        discharge_max: float,
        reasons: list[str],
    ) -> tuple[float, float]:
        s = self.settings
        droop = s.freq_droop
        outside = f > s.f_nom_hz + droop.db_of_hz or f < s.f_nom_hz - droop.db_uf_hz
        if outside and self._p_pre is None:
            # 1547's p_pre: the power before the excursion, i.e. what this cycle would allow without the droop.
            self._p_pre = min(hi, max(lo, p_req))
            self._fw.reset(0.0)
        if self._p_pre is None:
            return lo, hi
        target = freq_watt(
            f,
            self._p_pre,
            droop,
            f_nom_hz=s.f_nom_hz,
            p_rated_w=s.p_rated_w,
            p_charge_max_w=charge_max,
            p_discharge_max_w=discharge_max,
        )
        delta = self._fw.step(t, target - self._p_pre)
        bound = self._p_pre + delta
        detail = f"P_pre {_power(self._p_pre)}, droop {droop.k_of:.0%}/{droop.k_uf:.0%}, IEEE 1547-2018"
        if delta > 0:
            lo = min(hi, max(lo, bound))
            reasons.append(f"freq-watt: {f:.3f} Hz over-frequency, at least {_power(bound)} ({detail})")
        elif delta < 0:
            hi = max(lo, min(hi, bound))
            reasons.append(f"freq-watt: {f:.3f} Hz under-frequency, at most {_power(bound)} ({detail})")
        if not outside and abs(delta) < 1e-3 * s.p_rated_w:
            self._p_pre = None  # back in the deadband and the response has died away
        return lo, hi

    def _ffr(
        self, t: float, f: float, lo: float, hi: float, charge_max: float, discharge_max: float, reasons: list[str]
    ) -> float:
        assert self.ffr is not None
        status = self.ffr.step(t, f)
        if status.fraction <= 0.0:
            return hi
        full = 0.0 - min(self.ffr.settings.discharge_power_w, discharge_max)  # 0 when discharge is not allowed
        bound = full + (1.0 - status.fraction) * (charge_max - full)
        reasons.append(f"{status.reason}: at most {_power(bound)}")
        return max(lo, min(hi, bound))

    def _reactive(self, t: float, v: float, p_est: float, reasons: list[str]) -> float:
        s = self.settings
        mode = s.reactive_mode
        if mode == "volt_var":
            q = self._vv.step(t, volt_var(v, s.volt_var_curve, s.s_rated_va, v_ref_pu=s.volt_var_v_ref_pu))
            label = f"volt-var at {v:.3f} p.u."
        elif mode == "watt_var":
            q = self._wv.step(
                t, watt_var(p_est, s.watt_var_curve, s.p_rated_w, s.s_rated_va, p_rated_absorbing_w=s.p_rated_charge_w)
            )
            label = f"watt-var at {_power(p_est)}"
        elif mode == "fixed_pf":
            setting = s.fixed_pf_charging if p_est > 0 and s.fixed_pf_charging is not None else s.fixed_pf
            assert setting is not None  # DerSettings guarantees it in this mode
            q = fixed_power_factor(p_est, setting.pf, setting.excitation, category=s.normal_category)
            label = f"constant power factor {setting.pf:g} {setting.excitation} at {_power(p_est)}"
        else:
            return 0.0
        q = min(s.q_max_injecting_var, max(-s.q_max_absorbing_var, q))
        if q != 0.0:
            side = "injecting" if q > 0 else "absorbing"
            reasons.append(f"{label}: {abs(q) / 1000:.2f} kvar {side} (IEEE 1547-2018, Category {s.normal_category})")
        return q

    def _reactive_priority(self, q: float, lo: float, hi: float, reasons: list[str]) -> tuple[float, float]:
        """Keep |P| within the apparent power left after Q (reactive power priority, the CPUC Rule 21
        default since Res. E-4920, 2018). Active-power demands of the functions above win a conflict."""
        s = self.settings
        available = math.sqrt(max(0.0, s.s_rated_va**2 - q * q))
        new_lo, new_hi = max(lo, -available), min(hi, available)
        if new_lo > new_hi or (new_lo == lo and new_hi == hi):
            return lo, hi
        reasons.append(f"reactive power priority: |P| <= {available / 1000:.2f} kW of {s.s_rated_va / 1000:g} kVA")
        return new_lo, new_hi
