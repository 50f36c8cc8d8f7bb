"""Frequency support: IEEE 1547 frequency droop (freq-watt), fast frequency reserve (FFR), FCR-N.

Sign convention: P in W, positive = the EV charges, negative = it discharges (injects). Frequency
support raises P (more charging, less injection) at over-frequency and lowers it at under-frequency.

* :func:`freq_watt`: the 1547-2018 droop with deadband, both directions, bounded by what the EV can do.
* :class:`FastFrequencyResponse`: the Nordic FFR product (seed R88): full response within 1.3 / 1.0 /
  0.7 s of the frequency falling to 49.7 / 49.6 / 49.5 Hz, on local measurement only.
* :class:`FrequencyContainment`: an FCR-N style proportional response over 49.9-50.1 Hz (seed R88).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from firmware.energy.der_curves import DerError, finite

__all__ = [
    "FCR_N_BAND_HZ",
    "FFR_OPTIONS",
    "FREQ_DROOP_1547_1_CHAR2",
    "FREQ_DROOP_1547_1_CHAR2_CAT_III",
    "FREQ_DROOP_DEFAULT",
    "FastFrequencyResponse",
    "FcrNSettings",
    "FfrOption",
    "FfrSettings",
    "FfrStatus",
    "FreqDroop",
    "FrequencyContainment",
    "fcr_n_delta",
    "ffr_max_sample_period",
    "freq_watt",
]


@dataclass(frozen=True)
class FreqDroop:
    """Frequency-droop (freq-watt) parameters of IEEE 1547-2018 6.5.2.

    ``db_of_hz`` / ``db_uf_hz``: deadbands above / below nominal. ``k_of`` / ``k_uf``: per-unit droop
    (0.05 = full rated power for a 5 % frequency deviation). ``response_time_s``: open-loop response
    time. ``f_nom_hz``: the nominal frequency the deadbands are written for (the 1547 numbers are for
    60 Hz; :meth:`for_nominal` rescales them).
    """

    db_of_hz: float
    db_uf_hz: float
    k_of: float
    k_uf: float
    response_time_s: float
    f_nom_hz: float = 60.0

    def __post_init__(self) -> None:
        for name in ("db_of_hz", "db_uf_hz", "response_time_s"):
            if finite(f"freq droop {name}", getattr(self, name)) < 0:
                raise DerError(f"freq droop {name} must be >= 0, not {getattr(self, name):g}")
        for name in ("k_of", "k_uf", "f_nom_hz"):
            if finite(f"freq droop {name}", getattr(self, name)) <= 0:
                raise DerError(f"freq droop {name} must be > 0, not {getattr(self, name):g}")

    def for_nominal(self, f_nom_hz: float) -> FreqDroop:
        """The same droop for another nominal frequency: deadbands scaled as fractions of nominal.

        The droop k is already per unit of nominal and stays. 0.036 Hz at 60 Hz becomes 0.030 Hz at 50 Hz.
        """
        f_nom = finite("f_nom_hz", f_nom_hz)
        if f_nom <= 0:
            raise DerError(f"f_nom_hz must be > 0, not {f_nom:g}")
        scale = f_nom / self.f_nom_hz
        return replace(self, db_of_hz=self.db_of_hz * scale, db_uf_hz=self.db_uf_hz * scale, f_nom_hz=f_nom)


# IEEE 1547-2018 Table 24 default (= IEEE 1547.1-2020 5.15 characteristic 1 for categories I, II and III,
# ua-kxie/UL1741SB FreqSupp): dbOF = dbUF = 0.036 Hz, kOF = kUF = 0.05, open-loop response time 5 s.
FREQ_DROOP_DEFAULT = FreqDroop(db_of_hz=0.036, db_uf_hz=0.036, k_of=0.05, k_uf=0.05, response_time_s=5.0)
# IEEE 1547.1-2020 characteristic 2 (the tightest settings), Cat I/II: 0.017 Hz, 3 %, 1 s; Cat III: 2 %, 0.2 s.
FREQ_DROOP_1547_1_CHAR2 = FreqDroop(db_of_hz=0.017, db_uf_hz=0.017, k_of=0.03, k_uf=0.03, response_time_s=1.0)
FREQ_DROOP_1547_1_CHAR2_CAT_III = FreqDroop(db_of_hz=0.017, db_uf_hz=0.017, k_of=0.02, k_uf=0.02, response_time_s=0.2)


def freq_watt(
    f_hz: float,
    p_pre_w: float,
    droop: FreqDroop,
    *,
    f_nom_hz: float,
    p_rated_w: float,
    p_charge_max_w: float,
    p_discharge_max_w: float,
) -> float:
    """Steady-state active power target of the frequency droop, in W (+ = charging).

    IEEE 1547-2018 6.5.2, written in the DER's output convention (p.u. of P_rated)::

        over-frequency  f > fN + dbOF:  p = max(p_pre - (f - (fN + dbOF)) / (fN * kOF), p_min)
        under-frequency f < fN - dbUF:  p = min(p_pre + ((fN - dbUF) - f) / (fN * kUF), p_avl)

    The manager's P is the negated output, so over-frequency *raises* P (less injection, then more
    charging) and under-frequency *lowers* it: a charging EV first charges less, and only goes on into
    discharge when ``p_discharge_max_w`` > 0 (discharge allowed). The result always lies within
    ``[-p_discharge_max_w, p_charge_max_w]``, and never moves against the frequency: at over-frequency it
    is >= p_pre, at under-frequency <= p_pre (p_pre first clamped into the capability). ``droop`` is used
    as given: rescale it with :meth:`FreqDroop.for_nominal` when ``f_nom_hz`` differs.
    """
    f = finite("f_hz", f_hz)
    f_nom = finite("f_nom_hz", f_nom_hz)
    rated = finite("p_rated_w", p_rated_w)
    hi = finite("p_charge_max_w", p_charge_max_w)
    dis = finite("p_discharge_max_w", p_discharge_max_w)
    if f_nom <= 0 or rated <= 0:
        raise DerError(f"freq-watt needs f_nom_hz > 0 and p_rated_w > 0, not {f_nom:g} Hz, {rated:g} W")
    if hi < 0 or dis < 0:
        raise DerError(f"capability bounds must be >= 0, not charge {hi:g} W, discharge {dis:g} W")
    lo = -dis
    p_pre = min(hi, max(lo, finite("p_pre_w", p_pre_w)))
    upper_edge = f_nom + droop.db_of_hz
    lower_edge = f_nom - droop.db_uf_hz
    if f > upper_edge:
        return min(hi, p_pre + (f - upper_edge) / (f_nom * droop.k_of) * rated)
    if f < lower_edge:
        return max(lo, p_pre - (lower_edge - f) / (f_nom * droop.k_uf) * rated)
    return p_pre


# Float noise allowance when comparing elapsed times with hold times (see der_trip).
_TIME_EPS_S = 1e-9

# --- Fast frequency reserve ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FfrOption:
    """One FFR activation option: full response within ``activation_time_s`` of f <= ``threshold_hz``."""

    threshold_hz: float
    activation_time_s: float


# Fingrid FFR technical requirements (fingrid.fi "Fast Frequency Reserve", developers.fingrid.fi FFR
# business context; seed R88): the provider picks one option - 49.7 Hz / 1.3 s, 49.6 Hz / 1.0 s,
# 49.5 Hz / 0.7 s. Activation is on local frequency measurement only, no TSO signal.
FFR_OPTIONS: dict[str, FfrOption] = {
    "49.7": FfrOption(threshold_hz=49.7, activation_time_s=1.3),
    "49.6": FfrOption(threshold_hz=49.6, activation_time_s=1.0),
    "49.5": FfrOption(threshold_hz=49.5, activation_time_s=0.7),
}

# Fingrid FFR: "the minimum duration of activation is 5 seconds, if the power deactivation rate is no
# more than 20 % of the FFR capacity per second" (otherwise 30 s).
FFR_MIN_SUPPORT_S = 5.0
FFR_DEACTIVATION_RATE_PER_S = 0.20
# IEEE 1547-2018 Table 3: transient frequency measurements use a 5-cycle window: 0.1 s at 50 Hz. Used as
# the default measurement latency in the FFR time budget.
FFR_DEFAULT_MEASUREMENT_DELAY_S = 0.1
# Time from the power command to full power at the converter. Not a standard value: an assumption to be
# replaced by what the bench measures for the actual converter and EV.
FFR_DEFAULT_ACTUATION_DELAY_S = 0.3


def ffr_max_sample_period(option: FfrOption, *, measurement_delay_s: float, actuation_delay_s: float) -> float:
    """The longest sample period that still meets the option's activation deadline.

    Counted from the moment the true frequency crosses the threshold: the frequency measurement lags
    by ``measurement_delay_s``; the first sample that sees the crossing comes at most one sample period
    later; the controller acts on that very sample (no added delay); the converter then needs
    ``actuation_delay_s`` to reach full power. So::

        sample_period + measurement_delay + actuation_delay <= activation_time

    With the defaults (0.1 s measurement, 0.3 s actuation) the budgets are 0.9 s (49.7 Hz / 1.3 s),
    0.6 s (49.6 Hz / 1.0 s) and 0.3 s (49.5 Hz / 0.7 s).
    """
    meas = finite("measurement_delay_s", measurement_delay_s)
    act = finite("actuation_delay_s", actuation_delay_s)
    if meas < 0 or act < 0:
        raise DerError(f"delays must be >= 0, not measurement {meas:g} s, actuation {act:g} s")
    return option.activation_time_s - meas - act


@dataclass(frozen=True)
class FfrSettings:
    """How the EV provides FFR.

    ``discharge_power_w``: how far to discharge at full response when discharge is allowed (0: only
    stop charging). Deactivation: once the frequency has stayed at or above ``recovery_hz`` for
    ``hold_s`` and the response has lasted ``min_support_s``, it ramps down at ``deactivation_rate_per_s``
    (fraction of the response per second). Should the frequency fall below ``recovery_hz`` again during
    the ramp, the full response is held again (conservative: the event is not over). ``sample_period_s``
    is the period the controller is stepped at; it must fit the deadline budget
    (:func:`ffr_max_sample_period`).
    """

    option: FfrOption = FFR_OPTIONS["49.7"]
    discharge_power_w: float = 0.0
    recovery_hz: float = 49.9  # the lower edge of the normal band 49.9-50.1 Hz (FCR-N band, seed R88)
    hold_s: float = 5.0  # project choice; configurable
    min_support_s: float = FFR_MIN_SUPPORT_S
    deactivation_rate_per_s: float = FFR_DEACTIVATION_RATE_PER_S
    sample_period_s: float = 0.1
    measurement_delay_s: float = FFR_DEFAULT_MEASUREMENT_DELAY_S
    actuation_delay_s: float = FFR_DEFAULT_ACTUATION_DELAY_S

    def __post_init__(self) -> None:
        for name in ("discharge_power_w", "hold_s", "min_support_s", "measurement_delay_s", "actuation_delay_s"):
            if finite(f"ffr {name}", getattr(self, name)) < 0:
                raise DerError(f"ffr {name} must be >= 0, not {getattr(self, name):g}")
        for name in ("deactivation_rate_per_s", "sample_period_s"):
            if finite(f"ffr {name}", getattr(self, name)) <= 0:
                raise DerError(f"ffr {name} must be > 0, not {getattr(self, name):g}")
        finite("ffr threshold_hz", self.option.threshold_hz)
        finite("ffr activation_time_s", self.option.activation_time_s)
        if finite("ffr recovery_hz", self.recovery_hz) <= self.option.threshold_hz:
            raise DerError(
                f"ffr recovery_hz {self.recovery_hz:g} must be above the activation threshold "
                f"{self.option.threshold_hz:g} Hz"
            )
        budget = self.max_sample_period_s
        if self.sample_period_s > budget + 1e-12:
            raise DerError(
                f"ffr sample_period_s {self.sample_period_s:g} s misses the {self.option.activation_time_s:g} s "
                f"deadline at {self.option.threshold_hz:g} Hz: with {self.measurement_delay_s:g} s measurement "
                f"and {self.actuation_delay_s:g} s actuation delay the period must be <= {budget:.3g} s"
            )

    @property
    def max_sample_period_s(self) -> float:
        return ffr_max_sample_period(
            self.option, measurement_delay_s=self.measurement_delay_s, actuation_delay_s=self.actuation_delay_s
        )


@dataclass(frozen=True)
class FfrStatus:
    """What the FFR controller demands now. ``fraction``: 1 = full response, 0 = none."""

    fraction: float
    active: bool
    crossed_at: float | None  # estimated time the frequency crossed the threshold (interpolated)
    activated_at: float | None  # the sample the controller acted on
    reason: str


class FastFrequencyResponse:
    """FFR controller: feed it ``(now, f_hz)`` every sample period; it demands the full response on the
    *first* sample at or below the threshold, so the activation time is bounded by one sample period
    plus the measurement and actuation delays (see :func:`ffr_max_sample_period`).

    Samples arriving further apart than the configured period are counted in :attr:`late_samples`: the
    deadline guarantee needs the caller to keep the period.
    """

    def __init__(self, settings: FfrSettings) -> None:
        self.settings = settings
        self._last_t: float | None = None
        self._last_f: float | None = None
        self._activated_at: float | None = None
        self._crossed_at: float | None = None
        self._recovered_since: float | None = None
        self._ramp_from: float | None = None  # time the deactivation ramp started
        self._fraction = 0.0
        self.late_samples = 0
        self.activations = 0

    @property
    def fraction(self) -> float:
        return self._fraction

    def step(self, now: float, f_hz: float) -> FfrStatus:
        s = self.settings
        t = finite("now", now)
        f = finite("f_hz", f_hz)
        if f <= 0:
            raise DerError(f"frequency must be > 0, not {f:g} Hz")
        if self._last_t is not None:
            if t < self._last_t:
                raise DerError(f"time went backwards: {t:g} after {self._last_t:g}")
            if t - self._last_t > s.sample_period_s * 1.5:
                self.late_samples += 1
        threshold = s.option.threshold_hz
        if f <= threshold:
            if self._activated_at is None or self._ramp_from is not None:
                # Act on this very sample: a new activation, or a new event during the ramp-down.
                self.activations += 1
                self._crossed_at = self._crossing_time(t, f)
                self._activated_at = t
                self._ramp_from = None
            self._fraction = 1.0
            self._recovered_since = None
        elif self._activated_at is not None:
            self._follow_recovery(t, f)
        self._last_t, self._last_f = t, f
        return self._status(f)

    def _crossing_time(self, t: float, f: float) -> float:
        """Linear interpolation between the previous sample (above the threshold) and this one."""
        threshold = self.settings.option.threshold_hz
        if self._last_t is None or self._last_f is None or self._last_f <= threshold or self._last_f == f:
            return t
        return self._last_t + (t - self._last_t) * (self._last_f - threshold) / (self._last_f - f)

    def _follow_recovery(self, t: float, f: float) -> None:
        s = self.settings
        assert self._activated_at is not None
        if f >= s.recovery_hz:
            if self._recovered_since is None:
                self._recovered_since = t
        else:
            self._recovered_since = None
            if self._ramp_from is not None:
                # Frequency fell back out of the recovery band during the ramp: hold the response again.
                self._ramp_from = None
                self._fraction = 1.0
        if self._ramp_from is None:
            held = self._recovered_since is not None and t - self._recovered_since >= s.hold_s - _TIME_EPS_S
            supported = t - self._activated_at >= s.min_support_s - _TIME_EPS_S
            if held and supported:
                self._ramp_from = t
        if self._ramp_from is not None:
            self._fraction = max(0.0, 1.0 - (t - self._ramp_from) * s.deactivation_rate_per_s)
            if self._fraction == 0.0:
                self._activated_at = None
                self._crossed_at = None
                self._ramp_from = None
                self._recovered_since = None

    def _status(self, f: float) -> FfrStatus:
        s = self.settings
        opt = s.option
        if self._activated_at is None:
            reason = f"FFR armed: {f:.3f} Hz above {opt.threshold_hz:g} Hz"
        elif self._ramp_from is not None:
            reason = (
                f"FFR deactivating: {self._fraction:.0%} of the response, frequency {f:.3f} Hz back above "
                f"{s.recovery_hz:g} Hz"
            )
        else:
            reason = (
                f"FFR active since t={self._activated_at:g}: frequency fell to {opt.threshold_hz:g} Hz "
                f"(full response due within {opt.activation_time_s:g} s, Fingrid FFR)"
            )
        return FfrStatus(
            fraction=self._fraction,
            active=self._activated_at is not None,
            crossed_at=self._crossed_at,
            activated_at=self._activated_at,
            reason=reason,
        )


# --- Frequency containment (FCR-N style) --------------------------------------------------------------

# FCR-N keeps the frequency within 49.9-50.1 Hz (seed R88; Fingrid "Frequency containment reserves"):
# full response at +-0.1 Hz from 50 Hz, deadband at most +-0.01 Hz.
FCR_N_BAND_HZ = 0.1
FCR_N_MAX_DEADBAND_HZ = 0.01


@dataclass(frozen=True)
class FcrNSettings:
    """Proportional response: ``capacity_w`` at +-``band_hz`` from nominal, linear in between."""

    capacity_w: float
    f_nom_hz: float = 50.0
    band_hz: float = FCR_N_BAND_HZ
    deadband_hz: float = 0.0

    def __post_init__(self) -> None:
        if finite("fcr_n capacity_w", self.capacity_w) < 0:
            raise DerError(f"fcr_n capacity_w must be >= 0, not {self.capacity_w:g}")
        if finite("fcr_n f_nom_hz", self.f_nom_hz) <= 0:
            raise DerError(f"fcr_n f_nom_hz must be > 0, not {self.f_nom_hz:g}")
        if finite("fcr_n band_hz", self.band_hz) <= 0:
            raise DerError(f"fcr_n band_hz must be > 0, not {self.band_hz:g}")
        dead = finite("fcr_n deadband_hz", self.deadband_hz)
        if not 0 <= dead <= FCR_N_MAX_DEADBAND_HZ:
            raise DerError(f"fcr_n deadband_hz must be within 0..{FCR_N_MAX_DEADBAND_HZ:g} Hz (Fingrid), not {dead:g}")


def fcr_n_delta(f_hz: float, settings: FcrNSettings) -> float:
    """Change of P in W (+ = charge more) for a frequency: +capacity at f_nom + band, -capacity at f_nom - band."""
    f = finite("f_hz", f_hz)
    deviation = f - settings.f_nom_hz
    if abs(deviation) <= settings.deadband_hz:
        return 0.0
    ratio = max(-1.0, min(1.0, deviation / settings.band_hz))
    return ratio * settings.capacity_w


class FrequencyContainment:
    """FCR-N: each sample, the change of active power from the scheduled value (stateless, proportional)."""

    def __init__(self, settings: FcrNSettings) -> None:
        self.settings = settings

    def step(self, f_hz: float) -> float:
        return fcr_n_delta(f_hz, self.settings)

    def describe(self, f_hz: float) -> str:
        delta = self.step(f_hz)
        return f"FCR-N: {f_hz:.3f} Hz -> {delta / 1000:+.2f} kW of {self.settings.capacity_w / 1000:g} kW capacity"
