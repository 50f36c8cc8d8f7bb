"""Voltage and frequency trip (with ride-through) and the enter-service conditions of IEEE 1547-2018.

Seed R81: a grid-connected V2G unit must disconnect when irregular grid conditions *persist*, and ride
through short irregularities so that units do not drop out together. :class:`TripMonitor` trips when
a must-trip condition has lasted its clearing time - never before - and forgets a condition as soon as
a sample is back inside. :class:`EnterService` decides when the EV may exchange power again: voltage and
frequency inside the enter-service window for the whole delay, then a linear ramp of the allowed power.

Time is the caller's ``now`` (seconds, monotonic). A condition is timed from the first sample that
shows it: the true start lies between that sample and the previous one, so the measured duration
never exceeds the true one. Sample at least every cycle (20 ms at 50 Hz) for the 0.16 s elements:
the trip is reported up to one sample period after the clearing time, and the contactor's opening
time comes on top; lower the clearing-time settings by both when a utility counts them in.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from firmware.energy.der_curves import DerError, finite

__all__ = [
    "ENTER_SERVICE_DEFAULT",
    "FREQUENCY_TRIP_DEFAULTS_60HZ",
    "FREQUENCY_TRIP_RANGES_60HZ",
    "VOLTAGE_TRIP_DEFAULTS",
    "VOLTAGE_TRIP_RANGES",
    "AbnormalCategory",
    "EnterService",
    "EnterServiceSettings",
    "TripEvent",
    "TripMonitor",
    "TripRange",
    "TripSetting",
    "check_trip_ranges",
    "frequency_trip_defaults",
]

AbnormalCategory = Literal["I", "II", "III"]
Quantity = Literal["voltage", "frequency"]

# Float noise allowance when comparing an elapsed time with a clearing time (100.16 - 100.0 is
# 0.15999999999999659 in binary floating point). 1 ns is far below the 2-cycle time accuracy that
# IEEE 1547-2018 Table 3 asks of transient measurements.
_TIME_EPS_S = 1e-9


@dataclass(frozen=True)
class TripSetting:
    """One must-trip element: trip when the quantity is beyond ``threshold`` for ``clearing_time_s``.

    Over-elements (OV, OF) trip above the threshold, under-elements (UV, UF) below it; the threshold
    itself is still inside the continuous region (1547-2018 ride-through tables: e.g. 0.88 <= V <= 1.10
    continuous for Cat II).
    """

    element: str  # "OV2", "OV1", "UV1", "UV2", "OF2", "OF1", "UF1", "UF2"
    threshold: float  # p.u. of nominal voltage, or Hz
    clearing_time_s: float

    def __post_init__(self) -> None:
        if self.element[:2] not in ("OV", "UV", "OF", "UF"):
            raise DerError(f"trip element {self.element!r}: name must start with OV, UV, OF or UF")
        if finite(f"{self.element} threshold", self.threshold) <= 0:
            raise DerError(f"{self.element}: threshold must be > 0, not {self.threshold:g}")
        if finite(f"{self.element} clearing_time_s", self.clearing_time_s) <= 0:
            raise DerError(f"{self.element}: clearing_time_s must be > 0, not {self.clearing_time_s:g}")

    @property
    def over(self) -> bool:
        return self.element[0] == "O"

    @property
    def quantity(self) -> Quantity:
        return "voltage" if self.element[1] == "V" else "frequency"

    @property
    def unit(self) -> str:
        return "p.u." if self.quantity == "voltage" else "Hz"

    def violated(self, value: float) -> bool:
        return value > self.threshold if self.over else value < self.threshold


@dataclass(frozen=True)
class TripRange:
    """The range of adjustability of one element (IEEE 1547-2018 Tables 11-13 and 18)."""

    threshold_min: float
    threshold_max: float
    clearing_min_s: float
    clearing_max_s: float


def _vset(
    ov2: tuple[float, float], ov1: tuple[float, float], uv1: tuple[float, float], uv2: tuple[float, float]
) -> tuple[TripSetting, ...]:
    return (
        TripSetting("OV2", *ov2),
        TripSetting("OV1", *ov1),
        TripSetting("UV1", *uv1),
        TripSetting("UV2", *uv2),
    )


# Voltage must-trip defaults, (p.u., clearing time s): IEEE 1547-2018 Table 11 (Cat I), Table 12
# (Cat II), Table 13 (Cat III), as encoded in ua-kxie/UL1741SB eut.py.
VOLTAGE_TRIP_DEFAULTS: dict[str, tuple[TripSetting, ...]] = {
    "I": _vset(ov2=(1.20, 0.16), ov1=(1.10, 2.0), uv1=(0.70, 2.0), uv2=(0.45, 0.16)),
    "II": _vset(ov2=(1.20, 0.16), ov1=(1.10, 2.0), uv1=(0.70, 10.0), uv2=(0.45, 0.16)),
    "III": _vset(ov2=(1.20, 0.16), ov1=(1.10, 13.0), uv1=(0.88, 21.0), uv2=(0.50, 2.0)),
}
# Ranges of adjustability from the same tables. OV2 is fixed at 1.20 p.u. / 0.16 s in all categories.
_CAT_I_II_RANGES = {
    "OV2": TripRange(1.20, 1.20, 0.16, 0.16),
    "OV1": TripRange(1.10, 1.20, 1.0, 13.0),
    "UV1": TripRange(0.0, 0.88, 2.0, 21.0),
    "UV2": TripRange(0.0, 0.50, 0.16, 2.0),
}
VOLTAGE_TRIP_RANGES: dict[str, dict[str, TripRange]] = {
    "I": _CAT_I_II_RANGES,
    "II": _CAT_I_II_RANGES,
    "III": {
        "OV2": TripRange(1.20, 1.20, 0.16, 0.16),
        "OV1": TripRange(1.10, 1.20, 1.0, 13.0),
        "UV1": TripRange(0.0, 0.88, 21.0, 50.0),
        "UV2": TripRange(0.0, 0.50, 2.0, 21.0),
    },
}

# Frequency must-trip defaults for a 60 Hz system, all categories: IEEE 1547-2018 Table 18
# (ua-kxie/UL1741SB eut.py FreqShallTripTable): OF2 62.0 Hz / 0.16 s, OF1 61.2 Hz / 300 s,
# UF1 58.5 Hz / 300 s, UF2 56.5 Hz / 0.16 s.
FREQUENCY_TRIP_DEFAULTS_60HZ: tuple[TripSetting, ...] = (
    TripSetting("OF2", 62.0, 0.16),
    TripSetting("OF1", 61.2, 300.0),
    TripSetting("UF1", 58.5, 300.0),
    TripSetting("UF2", 56.5, 0.16),
)
FREQUENCY_TRIP_RANGES_60HZ: dict[str, TripRange] = {
    "OF2": TripRange(61.8, 66.0, 0.16, 1000.0),
    "OF1": TripRange(61.0, 66.0, 180.0, 1000.0),
    "UF1": TripRange(50.0, 59.0, 180.0, 1000.0),
    "UF2": TripRange(50.0, 57.0, 0.16, 1000.0),
}


def frequency_trip_defaults(f_nom_hz: float) -> tuple[TripSetting, ...]:
    """Table 18 defaults for a nominal frequency: thresholds scaled as fractions of nominal.

    1547 is written for 60 Hz; on a 50 Hz grid this gives OF2 51.67, OF1 51.0, UF1 48.75, UF2 47.08 Hz.
    Utilities on 50 Hz grids usually publish their own values: configure them instead.
    """
    scale = finite("f_nom_hz", f_nom_hz) / 60.0
    if scale <= 0:
        raise DerError(f"f_nom_hz must be > 0, not {f_nom_hz:g}")
    return tuple(replace(s, threshold=round(s.threshold * scale, 6)) for s in FREQUENCY_TRIP_DEFAULTS_60HZ)


def check_trip_ranges(
    voltage: Iterable[TripSetting], frequency: Iterable[TripSetting], category: AbnormalCategory, f_nom_hz: float
) -> None:
    """Raise :class:`DerError` when a setting is outside the 1547-2018 range of adjustability.

    Frequency ranges are the 60 Hz ones scaled to ``f_nom_hz`` as fractions of nominal.
    """
    if category not in VOLTAGE_TRIP_RANGES:
        raise DerError(f"abnormal performance category must be I, II or III, not {category!r}")
    scale = f_nom_hz / 60.0
    checks: list[tuple[TripSetting, TripRange | None, str]] = []
    checks += [(s, VOLTAGE_TRIP_RANGES[category].get(s.element), f"Table 11-13 Cat {category}") for s in voltage]
    for s in frequency:
        r = FREQUENCY_TRIP_RANGES_60HZ.get(s.element)
        scaled = (
            None
            if r is None
            else replace(r, threshold_min=r.threshold_min * scale, threshold_max=r.threshold_max * scale)
        )
        checks.append((s, scaled, "Table 18"))
    for setting, rng, table in checks:
        if rng is None:
            raise DerError(f"{setting.element}: not an IEEE 1547-2018 {setting.quantity} trip element")
        eps = 1e-9
        if not rng.threshold_min - eps <= setting.threshold <= rng.threshold_max + eps:
            raise DerError(
                f"{setting.element}: threshold {setting.threshold:g} {setting.unit} is outside "
                f"{rng.threshold_min:g}..{rng.threshold_max:g} (IEEE 1547-2018 {table})"
            )
        if not rng.clearing_min_s - eps <= setting.clearing_time_s <= rng.clearing_max_s + eps:
            raise DerError(
                f"{setting.element}: clearing time {setting.clearing_time_s:g} s is outside "
                f"{rng.clearing_min_s:g}..{rng.clearing_max_s:g} s (IEEE 1547-2018 {table})"
            )


def _check_set(settings: Sequence[TripSetting], quantity: Quantity) -> tuple[TripSetting, ...]:
    names = [s.element for s in settings]
    if len(set(names)) != len(names):
        raise DerError(f"{quantity} trip: an element appears twice in {names}")
    for s in settings:
        if s.quantity != quantity:
            raise DerError(f"{s.element} is a {s.quantity} element, given as a {quantity} trip setting")
    # A more severe element (OV2 above OV1, UV2 below UV1) must not be slower than the milder one:
    # otherwise the milder element always trips first and the severe one is dead code.
    for side in ("O", "U"):
        group = sorted((s for s in settings if s.element[0] == side), key=lambda s: s.threshold, reverse=side == "U")
        for milder, severe in itertools.pairwise(group):
            if severe.clearing_time_s > milder.clearing_time_s:
                raise DerError(
                    f"{severe.element} ({severe.threshold:g} {severe.unit}) clears in {severe.clearing_time_s:g} s, "
                    f"slower than {milder.element} ({milder.threshold:g} {milder.unit}, {milder.clearing_time_s:g} s)"
                )
    return tuple(settings)


@dataclass(frozen=True)
class TripEvent:
    """A must-trip condition that lasted its clearing time."""

    element: str
    quantity: Quantity
    threshold: float
    value: float  # the sample that completed the clearing time
    duration_s: float  # from the first sample beyond the threshold to this one
    clearing_time_s: float
    at: float

    def describe(self) -> str:
        unit = "p.u." if self.quantity == "voltage" else "Hz"
        side = ">" if self.element[0] == "O" else "<"
        return (
            f"trip {self.element}: {self.quantity} {self.value:.3f} {unit} {side} {self.threshold:g} {unit} "
            f"for {self.duration_s:.3f} s (clearing time {self.clearing_time_s:g} s, IEEE 1547-2018)"
        )


class TripMonitor:
    """Times every must-trip element on the samples it is fed and reports the trip.

    :meth:`update` returns a :class:`TripEvent` on every sample for which some element's condition has
    lasted its clearing time (the fastest such element), and None otherwise. It does not latch: what
    happens after a trip (cease to energise, the enter-service delay) is the caller's business.
    """

    def __init__(self, voltage: Sequence[TripSetting], frequency: Sequence[TripSetting]) -> None:
        self.voltage = _check_set(voltage, "voltage")
        self.frequency = _check_set(frequency, "frequency")
        self._since: dict[str, float] = {}
        self._last: float | None = None

    @classmethod
    def ieee1547(cls, category: AbnormalCategory = "II", f_nom_hz: float = 60.0) -> TripMonitor:
        if category not in VOLTAGE_TRIP_DEFAULTS:
            raise DerError(f"abnormal performance category must be I, II or III, not {category!r}")
        return cls(VOLTAGE_TRIP_DEFAULTS[category], frequency_trip_defaults(f_nom_hz))

    def update(self, now: float, v_pu: float, f_hz: float) -> TripEvent | None:
        t = finite("now", now)
        v = finite("v_pu", v_pu)
        f = finite("f_hz", f_hz)
        if v < 0 or f <= 0:
            raise DerError(f"implausible grid sample: {v:g} p.u., {f:g} Hz")
        if self._last is not None and t < self._last:
            raise DerError(f"time went backwards: {t:g} after {self._last:g}")
        self._last = t
        tripped: list[TripEvent] = []
        for setting, value in [(s, v) for s in self.voltage] + [(s, f) for s in self.frequency]:
            if not setting.violated(value):
                self._since.pop(setting.element, None)
                continue
            since = self._since.setdefault(setting.element, t)
            elapsed = t - since
            if elapsed >= setting.clearing_time_s - _TIME_EPS_S:
                tripped.append(
                    TripEvent(
                        element=setting.element,
                        quantity=setting.quantity,
                        threshold=setting.threshold,
                        value=value,
                        duration_s=elapsed,
                        clearing_time_s=setting.clearing_time_s,
                        at=t,
                    )
                )
        if not tripped:
            return None
        return min(tripped, key=lambda e: e.clearing_time_s)

    def riding_through(self, now: float) -> list[str]:
        """The elements whose condition is present but has not yet lasted its clearing time, described."""
        out = []
        for s in self.voltage + self.frequency:
            since = self._since.get(s.element)
            if since is not None:
                out.append(
                    f"riding through {s.element}: {s.quantity} beyond {s.threshold:g} {s.unit} for "
                    f"{now - since:.2f} s of {s.clearing_time_s:g} s"
                )
        return out

    def reset(self) -> None:
        self._since.clear()


# --- Enter service ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnterServiceSettings:
    """Enter-service window, delay and ramp (IEEE 1547-2018 4.10).

    Default row of IEEE 1547.1-2020 Table 11 (ua-kxie/UL1741SB EnterService): 0.917-1.05 p.u.,
    59.5-60.1 Hz, delay 300 s, ramp (ES period) 300 s; the frequency window is for 60 Hz and
    :meth:`for_nominal` rescales it. Bounds are inclusive.
    """

    v_min_pu: float = 0.917
    v_max_pu: float = 1.05
    f_min_hz: float = 59.5
    f_max_hz: float = 60.1
    delay_s: float = 300.0
    ramp_s: float = 300.0
    f_nom_hz: float = 60.0

    def __post_init__(self) -> None:
        for name in ("v_min_pu", "v_max_pu", "f_min_hz", "f_max_hz", "delay_s", "ramp_s", "f_nom_hz"):
            if finite(f"enter_service {name}", getattr(self, name)) < 0:
                raise DerError(f"enter_service {name} must be >= 0, not {getattr(self, name):g}")
        if self.v_min_pu >= self.v_max_pu:
            raise DerError(f"enter_service: v_min_pu {self.v_min_pu:g} must be below v_max_pu {self.v_max_pu:g}")
        if self.f_min_hz >= self.f_max_hz:
            raise DerError(f"enter_service: f_min_hz {self.f_min_hz:g} must be below f_max_hz {self.f_max_hz:g}")
        if not self.f_min_hz <= self.f_nom_hz <= self.f_max_hz:
            raise DerError(
                f"enter_service: nominal {self.f_nom_hz:g} Hz is outside the window "
                f"{self.f_min_hz:g}..{self.f_max_hz:g} Hz"
            )

    def for_nominal(self, f_nom_hz: float) -> EnterServiceSettings:
        """The same window for another nominal frequency, scaled as fractions of nominal (50 Hz: 49.58-50.08)."""
        scale = finite("f_nom_hz", f_nom_hz) / self.f_nom_hz
        return replace(
            self,
            f_min_hz=round(self.f_min_hz * scale, 6),
            f_max_hz=round(self.f_max_hz * scale, 6),
            f_nom_hz=f_nom_hz,
        )

    def inside(self, v_pu: float, f_hz: float) -> bool:
        return self.v_min_pu <= v_pu <= self.v_max_pu and self.f_min_hz <= f_hz <= self.f_max_hz


ENTER_SERVICE_DEFAULT = EnterServiceSettings()


class EnterService:
    """Whether, and how much of its rating, the EV may exchange with the grid after a trip or at start.

    Starts out of service (default deny) unless ``in_service``. While out of service, the grid must stay
    inside the window for ``delay_s`` without interruption (any sample outside restarts the delay); then
    the allowed power ramps linearly from 0 to 1 over ``ramp_s``. Once in service (ramping or full), the
    window no longer matters: the trip settings govern until :meth:`cease` (a trip, or permit-service
    withdrawn) takes the EV out of service again.
    """

    def __init__(self, settings: EnterServiceSettings = ENTER_SERVICE_DEFAULT, *, in_service: bool = False) -> None:
        self.settings = settings
        self._inside_since: float | None = None
        self._ramp_start: float | None = -float("inf") if in_service else None
        self._last: float | None = None

    def update(self, now: float, v_pu: float, f_hz: float) -> None:
        t = finite("now", now)
        v = finite("v_pu", v_pu)
        f = finite("f_hz", f_hz)
        if self._last is not None and t < self._last:
            raise DerError(f"time went backwards: {t:g} after {self._last:g}")
        self._last = t
        if self._ramp_start is not None:
            return
        if not self.settings.inside(v, f):
            self._inside_since = None
            return
        if self._inside_since is None:
            self._inside_since = t
        if t - self._inside_since >= self.settings.delay_s - _TIME_EPS_S:
            self._ramp_start = self._inside_since + self.settings.delay_s

    def cease(self) -> None:
        """Out of service: a trip happened (or permit service was withdrawn)."""
        self._ramp_start = None
        self._inside_since = None

    @property
    def in_service(self) -> bool:
        return self._ramp_start is not None

    def max_power_fraction(self, now: float) -> float:
        """0 while out of service, then the linear ramp up to 1."""
        t = finite("now", now)
        if self._ramp_start is None or t < self._ramp_start:
            return 0.0
        if self.settings.ramp_s <= 0:
            return 1.0
        return min(1.0, (t - self._ramp_start) / self.settings.ramp_s)

    def describe(self, now: float) -> str:
        s = self.settings
        fraction = self.max_power_fraction(now)
        if self._ramp_start is None:
            if self._inside_since is None:
                return (
                    f"enter service: waiting for the grid to return within {s.v_min_pu:g}-{s.v_max_pu:g} p.u., "
                    f"{s.f_min_hz:g}-{s.f_max_hz:g} Hz (IEEE 1547-2018 4.10)"
                )
            return f"enter service: grid inside the window for {now - self._inside_since:.0f} s of {s.delay_s:g} s"
        if fraction < 1.0:
            return f"enter service: ramping, {fraction:.0%} of rated power allowed ({s.ramp_s:g} s ramp)"
        return "in service"
