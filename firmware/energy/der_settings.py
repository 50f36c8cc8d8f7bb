"""DER settings: one frozen value with every number the grid-support functions use.

:meth:`DerSettings.from_dict` reads the plain dict that the configuration file or the backend provides
(see docs/der.md for the schema). Unknown keys and bad values are rejected with a :class:`DerConfigError`
that names the key path (``der.volt_var.v_pu[2]``); missing keys take the IEEE 1547-2018 defaults for
the configured categories and nominal frequency.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from firmware.energy.der_curves import (
    PF_MIN_ABSORBING,
    PF_MIN_INJECTING,
    Q_CAPABILITY_ABSORBING_PU,
    Q_CAPABILITY_INJECTING_PU,
    VOLT_VAR_CAT_A,
    VOLT_VAR_CAT_B,
    VOLT_WATT_DEFAULT,
    WATT_VAR_CAT_A,
    WATT_VAR_CAT_B,
    DerError,
    Excitation,
    NormalCategory,
    PiecewiseCurve,
)
from firmware.energy.der_frequency import (
    FFR_OPTIONS,
    FREQ_DROOP_DEFAULT,
    FcrNSettings,
    FfrSettings,
    FreqDroop,
)
from firmware.energy.der_trip import (
    ENTER_SERVICE_DEFAULT,
    VOLTAGE_TRIP_DEFAULTS,
    AbnormalCategory,
    EnterServiceSettings,
    TripSetting,
    check_trip_ranges,
    frequency_trip_defaults,
)

__all__ = ["DerConfigError", "DerSettings", "FixedPf", "ReactiveMode"]

ReactiveMode = Literal["off", "volt_var", "watt_var", "fixed_pf"]
_REACTIVE_MODES = ("off", "volt_var", "watt_var", "fixed_pf")


class DerConfigError(DerError):
    """A DER configuration value that cannot be used; the message starts with its key path."""


@dataclass(frozen=True)
class FixedPf:
    """A constant power factor setting (checked against the category's limits by the settings)."""

    pf: float
    excitation: Excitation


@dataclass(frozen=True)
class DerSettings:
    """Everything the DER functions need. Build it with :meth:`from_dict` or :meth:`defaults`.

    Ratings: ``p_rated_w`` is the discharge (injection) rating, 1547's P_rated; ``p_rated_charge_w``
    the charging rating, P'_rated; ``s_rated_va`` the apparent power the curves' reactive per-unit refers
    to; ``q_max_injecting_var`` / ``q_max_absorbing_var`` the reactive capability (magnitudes).

    Only one reactive mode runs at a time (``reactive_mode``), as in 1547.
    """

    normal_category: NormalCategory
    abnormal_category: AbnormalCategory
    v_nom_v: float
    f_nom_hz: float
    p_rated_w: float
    p_rated_charge_w: float
    s_rated_va: float
    q_max_injecting_var: float
    q_max_absorbing_var: float
    reactive_mode: ReactiveMode
    volt_watt_enabled: bool
    freq_watt_enabled: bool
    trip_enabled: bool
    enter_service_enabled: bool
    volt_var_curve: PiecewiseCurve
    volt_var_v_ref_pu: float
    volt_watt_curve: PiecewiseCurve
    watt_var_curve: PiecewiseCurve
    fixed_pf: FixedPf | None
    fixed_pf_charging: FixedPf | None  # None: the same as ``fixed_pf`` while charging
    freq_droop: FreqDroop
    voltage_trip: tuple[TripSetting, ...]
    frequency_trip: tuple[TripSetting, ...]
    check_1547_ranges: bool
    enter_service: EnterServiceSettings
    enter_service_limits_charging: bool
    ffr: FfrSettings | None  # None: FFR off
    fcr_n: FcrNSettings | None  # None: FCR-N off

    def __post_init__(self) -> None:
        if self.normal_category not in ("A", "B"):
            raise DerConfigError(f"der.normal_category: must be 'A' or 'B', not {self.normal_category!r}")
        if self.abnormal_category not in ("I", "II", "III"):
            raise DerConfigError(f"der.abnormal_category: must be 'I', 'II' or 'III', not {self.abnormal_category!r}")
        for name in ("v_nom_v", "f_nom_hz", "p_rated_w", "p_rated_charge_w", "s_rated_va"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value <= 0:
                raise DerConfigError(f"der.{name}: must be a finite number > 0, not {value!r}")
        for name in ("q_max_injecting_var", "q_max_absorbing_var"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                raise DerConfigError(f"der.{name}: must be a finite number >= 0, not {value!r}")
        if self.reactive_mode not in _REACTIVE_MODES:
            raise DerConfigError(
                f"der.functions.reactive: must be one of {_REACTIVE_MODES}, not {self.reactive_mode!r}"
            )
        if self.reactive_mode == "fixed_pf" and self.fixed_pf is None:
            raise DerConfigError("der.fixed_pf: the reactive mode is fixed_pf but no power factor is set")
        for key, setting in (("fixed_pf", self.fixed_pf), ("fixed_pf.charging", self.fixed_pf_charging)):
            if setting is not None:
                _check_pf(f"der.{key}", setting, self.normal_category)
        if self.ffr is not None and self.ffr.discharge_power_w > self.p_rated_w:
            raise DerConfigError(
                f"der.ffr.discharge_power_w: {self.ffr.discharge_power_w:g} W exceeds p_rated_w {self.p_rated_w:g} W"
            )
        if self.check_1547_ranges:
            try:
                check_trip_ranges(self.voltage_trip, self.frequency_trip, self.abnormal_category, self.f_nom_hz)
            except DerError as exc:
                raise DerConfigError(f"der trip settings: {exc} (set check_1547_ranges false to allow)") from exc
        if not math.isclose(self.freq_droop.f_nom_hz, self.f_nom_hz):
            raise DerConfigError(
                f"der.freq_droop: written for {self.freq_droop.f_nom_hz:g} Hz, the grid is {self.f_nom_hz:g} Hz"
            )

    # --- construction -----------------------------------------------------------------------------

    @classmethod
    def defaults(
        cls,
        *,
        p_rated_w: float,
        normal_category: NormalCategory = "B",
        abnormal_category: AbnormalCategory = "II",
        f_nom_hz: float = 50.0,
        v_nom_v: float = 230.0,
    ) -> DerSettings:
        """The 1547-2018 defaults for the categories, with 60 Hz numbers scaled to ``f_nom_hz``."""
        return cls.from_dict(
            {
                "normal_category": normal_category,
                "abnormal_category": abnormal_category,
                "f_nom_hz": f_nom_hz,
                "v_nom_v": v_nom_v,
                "p_rated_w": p_rated_w,
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DerSettings:
        """Read a plain dict (configuration file or backend). See docs/der.md for the keys."""
        root = _Reader(data, "der")
        normal = cast(NormalCategory, root.choice("normal_category", ("A", "B"), "B"))
        abnormal = cast(AbnormalCategory, root.choice("abnormal_category", ("I", "II", "III"), "II"))
        v_nom = root.number("v_nom_v", 230.0, minimum=1.0)
        f_nom = root.number("f_nom_hz", 50.0, minimum=1.0)
        p_rated = root.number("p_rated_w", None, minimum=1.0)
        p_charge = root.number("p_rated_charge_w", p_rated, minimum=1.0)
        s_rated = root.number("s_rated_va", max(p_rated, p_charge), minimum=1.0)
        q_inj = root.number("q_max_injecting_var", Q_CAPABILITY_INJECTING_PU[normal] * s_rated, minimum=0.0)
        q_abs = root.number("q_max_absorbing_var", Q_CAPABILITY_ABSORBING_PU[normal] * s_rated, minimum=0.0)
        check_ranges = root.boolean("check_1547_ranges", True)

        functions = root.section("functions")
        reactive = cast(ReactiveMode, functions.choice("reactive", _REACTIVE_MODES, "off"))
        volt_watt_on = functions.boolean("volt_watt", False)
        freq_watt_on = functions.boolean("freq_watt", True)
        trip_on = functions.boolean("trip", True)
        enter_service_on = functions.boolean("enter_service", True)
        ffr_on = functions.boolean("ffr", False)
        fcr_n_on = functions.boolean("fcr_n", False)
        functions.done()

        vv = root.section("volt_var")
        default_vv = VOLT_VAR_CAT_A if normal == "A" else VOLT_VAR_CAT_B
        vv_curve = vv.curve("v_pu", "q_pu", default_vv, "volt-var", y_limit=1.0)
        vv_ref = vv.number("v_ref_pu", 1.0, minimum=0.95, maximum=1.05)  # 1547-2018 VRef range 0.95-1.05
        vv.done()

        vw = root.section("volt_watt")
        vw_curve = vw.curve("v_pu", "p_pu", VOLT_WATT_DEFAULT, "volt-watt", y_limit=1.0)
        vw.done()

        wv = root.section("watt_var")
        default_wv = WATT_VAR_CAT_A if normal == "A" else WATT_VAR_CAT_B
        wv_curve = wv.curve("p_pu", "q_pu", default_wv, "watt-var", y_limit=1.0)
        wv.done()

        pf_section = root.section("fixed_pf")
        fixed_pf = pf_section.fixed_pf() if pf_section.present else None
        charging_section = pf_section.section("charging")
        fixed_pf_charging = charging_section.fixed_pf() if charging_section.present else None
        charging_section.done()
        pf_section.done()

        # Sanity bounds only (deadband up to 1 Hz at 60 Hz, droop 1-10 %, response up to 60 s): the
        # utility's values are taken as given inside them.
        fd = root.section("freq_droop")
        droop_default = FREQ_DROOP_DEFAULT.for_nominal(f_nom)
        droop = FreqDroop(
            db_of_hz=fd.number("db_of_hz", droop_default.db_of_hz, minimum=0.0, maximum=1.0 * f_nom / 60.0),
            db_uf_hz=fd.number("db_uf_hz", droop_default.db_uf_hz, minimum=0.0, maximum=1.0 * f_nom / 60.0),
            k_of=fd.number("k_of", droop_default.k_of, minimum=0.01, maximum=0.10),
            k_uf=fd.number("k_uf", droop_default.k_uf, minimum=0.01, maximum=0.10),
            response_time_s=fd.number("response_time_s", droop_default.response_time_s, minimum=0.0, maximum=60.0),
            f_nom_hz=f_nom,
        )
        fd.done()

        voltage_trip = root.section("voltage_trip").trip_settings(VOLTAGE_TRIP_DEFAULTS[abnormal], "pu")
        frequency_trip = root.section("frequency_trip").trip_settings(frequency_trip_defaults(f_nom), "hz")

        es = root.section("enter_service")
        es_default = ENTER_SERVICE_DEFAULT.for_nominal(f_nom)
        enter_service = es.build(
            EnterServiceSettings,
            v_min_pu=es.number("v_min_pu", es_default.v_min_pu, minimum=0.0, maximum=2.0),
            v_max_pu=es.number("v_max_pu", es_default.v_max_pu, minimum=0.0, maximum=2.0),
            f_min_hz=es.number("f_min_hz", es_default.f_min_hz, minimum=0.0),
            f_max_hz=es.number("f_max_hz", es_default.f_max_hz, minimum=0.0),
            delay_s=es.number("delay_s", es_default.delay_s, minimum=0.0, maximum=3600.0),
            ramp_s=es.number("ramp_s", es_default.ramp_s, minimum=0.0, maximum=3600.0),
            f_nom_hz=f_nom,
        )
        es_limits_charging = es.boolean("limits_charging", True)
        es.done()

        ffr_section = root.section("ffr")
        ffr: FfrSettings | None = None
        if ffr_on or ffr_section.present:
            threshold = ffr_section.choice("activation_hz", tuple(FFR_OPTIONS), "49.7", coerce=_hz_key)
            default_ffr = FfrSettings()
            candidate = ffr_section.build(
                FfrSettings,
                option=FFR_OPTIONS[threshold],
                discharge_power_w=ffr_section.number("discharge_power_w", 0.0, minimum=0.0),
                recovery_hz=ffr_section.number("recovery_hz", default_ffr.recovery_hz, minimum=0.0),
                hold_s=ffr_section.number("hold_s", default_ffr.hold_s, minimum=0.0),
                min_support_s=ffr_section.number("min_support_s", default_ffr.min_support_s, minimum=0.0),
                deactivation_rate_per_s=ffr_section.number(
                    "deactivation_rate_per_s", default_ffr.deactivation_rate_per_s, minimum=0.001, maximum=1000.0
                ),
                sample_period_s=ffr_section.number("sample_period_s", default_ffr.sample_period_s, minimum=0.001),
                measurement_delay_s=ffr_section.number(
                    "measurement_delay_s", default_ffr.measurement_delay_s, minimum=0.0
                ),
                actuation_delay_s=ffr_section.number("actuation_delay_s", default_ffr.actuation_delay_s, minimum=0.0),
            )
            ffr = candidate if ffr_on else None
        ffr_section.done()

        fcr_section = root.section("fcr_n")
        fcr_n: FcrNSettings | None = None
        if fcr_n_on or fcr_section.present:
            candidate_fcr = fcr_section.build(
                FcrNSettings,
                capacity_w=fcr_section.number("capacity_w", None, minimum=0.0),
                f_nom_hz=f_nom,
                band_hz=fcr_section.number("band_hz", 0.1, minimum=0.001),
                deadband_hz=fcr_section.number("deadband_hz", 0.0, minimum=0.0),
            )
            fcr_n = candidate_fcr if fcr_n_on else None
        fcr_section.done()
        root.done()

        try:
            return cls(
                normal_category=normal,
                abnormal_category=abnormal,
                v_nom_v=v_nom,
                f_nom_hz=f_nom,
                p_rated_w=p_rated,
                p_rated_charge_w=p_charge,
                s_rated_va=s_rated,
                q_max_injecting_var=q_inj,
                q_max_absorbing_var=q_abs,
                reactive_mode=reactive,
                volt_watt_enabled=volt_watt_on,
                freq_watt_enabled=freq_watt_on,
                trip_enabled=trip_on,
                enter_service_enabled=enter_service_on,
                volt_var_curve=vv_curve,
                volt_var_v_ref_pu=vv_ref,
                volt_watt_curve=vw_curve,
                watt_var_curve=wv_curve,
                fixed_pf=fixed_pf,
                fixed_pf_charging=fixed_pf_charging,
                freq_droop=droop,
                voltage_trip=voltage_trip,
                frequency_trip=frequency_trip,
                check_1547_ranges=check_ranges,
                enter_service=enter_service,
                enter_service_limits_charging=es_limits_charging,
                ffr=ffr,
                fcr_n=fcr_n,
            )
        except DerConfigError:
            raise
        except DerError as exc:
            raise DerConfigError(f"der: {exc}") from exc


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _hz_key(value: object) -> object:
    """Accept 49.7 as well as "49.7" for the FFR activation frequency."""
    return f"{value:g}" if _is_number(value) else value


def _check_pf(path: str, setting: FixedPf, category: NormalCategory) -> None:
    limits = PF_MIN_INJECTING if setting.excitation == "injecting" else PF_MIN_ABSORBING
    if not _is_number(setting.pf) or not limits[category] <= setting.pf <= 1.0:
        raise DerConfigError(
            f"{path}.pf: {setting.pf!r} {setting.excitation} is outside {limits[category]:g}..1 for Category "
            f"{category} (IEEE 1547.1-2020 5.14.3.2)"
        )


class _Reader:
    """Reads one mapping of the configuration, remembering which keys it used to reject the others."""

    def __init__(self, data: object, path: str, *, present: bool = True) -> None:
        if not isinstance(data, Mapping):
            raise DerConfigError(f"{path}: must be a mapping (a table of keys), not {type(data).__name__}")
        for key in data:
            if not isinstance(key, str):
                raise DerConfigError(f"{path}: keys must be strings, not {key!r}")
        self.data: Mapping[str, Any] = data
        self.path = path
        self.present = present
        self.used: set[str] = set()

    def _get(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key)

    def number(
        self, key: str, default: float | None, *, minimum: float | None = None, maximum: float | None = None
    ) -> float:
        value = self._get(key)
        where = f"{self.path}.{key}"
        if value is None:
            if default is None:
                raise DerConfigError(f"{where}: required")
            return float(default)
        if not _is_number(value) or not math.isfinite(value):
            raise DerConfigError(f"{where}: must be a finite number, not {value!r}")
        if minimum is not None and value < minimum:
            raise DerConfigError(f"{where}: must be >= {minimum:g}, not {value:g}")
        if maximum is not None and value > maximum:
            raise DerConfigError(f"{where}: must be <= {maximum:g}, not {value:g}")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise DerConfigError(f"{self.path}.{key}: must be true or false, not {value!r}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str, *, coerce: Any = None) -> str:
        value = self._get(key)
        if value is None:
            return default
        if coerce is not None:
            value = coerce(value)
        if value not in choices:
            raise DerConfigError(f"{self.path}.{key}: must be one of {', '.join(choices)}, not {value!r}")
        return cast(str, value)

    def section(self, key: str) -> _Reader:
        value = self._get(key)
        if value is None:
            return _Reader({}, f"{self.path}.{key}", present=False)
        return _Reader(value, f"{self.path}.{key}")

    def curve(self, x_key: str, y_key: str, default: PiecewiseCurve, label: str, *, y_limit: float) -> PiecewiseCurve:
        """A curve from two lists. Every grid-support curve must not rise: more voltage (or more output)
        never asks for more injection, which is what keeps many DERs on one feeder from hunting."""
        xs, ys = self._get(x_key), self._get(y_key)
        response = self.number("response_time_s", default.response_time_s, minimum=0.0, maximum=600.0)
        if xs is None and ys is None:
            if response == default.response_time_s:
                return default
            return PiecewiseCurve(default.x, default.y, response, default.name)
        if xs is None or ys is None:
            raise DerConfigError(f"{self.path}: give both {x_key} and {y_key}, or neither for the default curve")
        for key, values in ((x_key, xs), (y_key, ys)):
            if not isinstance(values, list | tuple):
                raise DerConfigError(f"{self.path}.{key}: must be a list of numbers, not {values!r}")
            for i, v in enumerate(values):
                if not _is_number(v) or not math.isfinite(v):
                    raise DerConfigError(f"{self.path}.{key}[{i}]: must be a finite number, not {v!r}")
        for i, y in enumerate(ys):
            if abs(y) > y_limit:
                raise DerConfigError(f"{self.path}.{y_key}[{i}]: {y:g} per unit is beyond +-{y_limit:g}")
        for i in range(1, len(ys)):
            if ys[i] > ys[i - 1]:
                raise DerConfigError(
                    f"{self.path}.{y_key}[{i}]: {ys[i]:g} rises above {ys[i - 1]:g}; the curve must not rise"
                )
        try:
            return PiecewiseCurve(tuple(xs), tuple(ys), response, label)
        except DerError as exc:
            raise DerConfigError(f"{self.path}: {exc}") from exc

    def fixed_pf(self) -> FixedPf:
        pf = self.number("pf", None, minimum=0.0, maximum=1.0)
        excitation = cast(Excitation, self.choice("excitation", ("injecting", "absorbing"), "absorbing"))
        return FixedPf(pf=pf, excitation=excitation)

    def trip_settings(self, defaults: tuple[TripSetting, ...], threshold_key: str) -> tuple[TripSetting, ...]:
        by_name = {s.element: s for s in defaults}
        out = []
        for name, default in by_name.items():
            element = self.section(name)
            try:
                out.append(
                    TripSetting(
                        name,
                        element.number(threshold_key, default.threshold, minimum=0.0),
                        element.number("clearing_time_s", default.clearing_time_s, minimum=0.0),
                    )
                )
            except DerConfigError:
                raise
            except DerError as exc:
                raise DerConfigError(f"{element.path}: {exc}") from exc
            element.done()
        self.done()
        return tuple(out)

    def build(self, factory: Any, **kwargs: Any) -> Any:
        try:
            return factory(**kwargs)
        except DerError as exc:
            raise DerConfigError(f"{self.path}: {exc}") from exc

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise DerConfigError(f"{self.path}: unknown key(s) {', '.join(unknown)}")
