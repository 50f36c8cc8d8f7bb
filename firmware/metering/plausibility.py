"""Plausibility of meter readings: wrong energy must become a fault, never a bill.

Every reading of a connector's meter passes :class:`MeterGuard` before the firmware uses it. The
guard compares it with the last reading it accepted and raises :class:`hal.errors.ImplausibleReading`
instead of returning anything doubtful:

========================  =====================================================================
check                     what is refused
========================  =====================================================================
garbage                   an energy total that is NaN, infinite or negative
monotonic                 an energy total below the last accepted one (registers only grow),
                          unless the meter declares a register modulus and the step is a wrap
wrap-around               a total that fell by about the register modulus is accepted as a wrap
                          and the continuous total grows by the modulus (one wrap per interval at
                          most; anything else is "went backwards")
implausible jump          more energy in one interval than the board's full power could deliver
                          in that time (plus the register resolution)
stale (stuck register)    a total that does not move while the measured power says it should
                          have grown by at least ``STALE_ENERGY_WH`` (a frozen meter, a stuck
                          co-processor cache, a Modbus gateway answering from its cache)
========================  =====================================================================

Read-to-clear accumulators (the ATM90E32) are checked by their driver, which alone sees the raw
register: an accumulator that may have run past its width raises ``ImplausibleReading`` there.
Communication loss is the driver's other errors (no answer, bad CRC): the connector raises
``METER_COMM_LOST`` when they last ``METER_COMM_TIMEOUT``.

A refused reading leaves the baseline unchanged: the next reading is judged against the last good
one, so a single glitch (one corrupt value) costs one fault and a stuck or reset meter keeps
failing until it measures plausibly again or is serviced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from hal.clock import Clock
from hal.errors import ImplausibleReading
from hal.interfaces import Meter
from hal.types import MeterReading

#: Headroom over the board's full power before an energy step is called a jump: meters are accurate
#: to a few per cent (MID class B: 1 %), mains voltage may be 10 % high (EN 50160).
JUMP_TOLERANCE = 0.25
#: Energy the measured power must have delivered before an unmoving register is called stuck. 20 Wh
#: is 3.3 s at 22 kW and 50 s at 1.4 kW (6 A, one phase): well above the 0.01 kWh display resolution
#: of a Modbus meter (two resolution steps), well below what a customer would notice on a bill.
STALE_ENERGY_WH = 20.0
#: A wrap is recognised when the fall is at least this share of the register modulus.
WRAP_MIN_SHARE = 0.5


@dataclass(frozen=True)
class PlausibilityLimits:
    """What the board can physically do. ``max_power_w`` is the highest power in either direction
    (ratings: phases x max current x highest voltage); ``resolution_wh`` is the smallest step of the
    meter's energy registers; ``register_modulus_wh`` the value at which they wrap to zero (None: they
    never wrap within the meter's life)."""

    max_power_w: float
    resolution_wh: float = 0.01
    register_modulus_wh: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_power_w) and self.max_power_w > 0):
            raise ValueError(f"max_power_w must be a positive power, not {self.max_power_w}")
        if not (math.isfinite(self.resolution_wh) and self.resolution_wh >= 0):
            raise ValueError(f"resolution_wh must be >= 0, not {self.resolution_wh}")
        if self.register_modulus_wh is not None and not self.register_modulus_wh > 0:
            raise ValueError(f"register_modulus_wh must be positive, not {self.register_modulus_wh}")


@dataclass
class _Direction:
    """One energy register (import or export): raw baseline, wraps seen, energy the power promised."""

    name: str
    raw: float
    wraps: int = 0
    expected_wh: float = 0.0  # energy the measured power should have added since the register moved


class MeterGuard:
    """A :class:`hal.interfaces.Meter` that checks the readings of another one. The totals it
    returns are continuous (wraps unrolled) and never go down."""

    def __init__(self, meter: Meter, limits: PlausibilityLimits, *, clock: Clock, name: str = "meter") -> None:
        self._meter = meter
        self._limits = limits
        self._clock = clock
        self._name = name
        self._at: float | None = None
        self._power_w = 0.0
        self._import: _Direction | None = None
        self._export: _Direction | None = None

    @property
    def phases(self) -> int:
        return self._meter.phases

    @property
    def inner(self) -> Meter:
        """The driver being guarded (its serial number and model identify signed records)."""
        return self._meter

    def baseline(self, import_wh: float, export_wh: float) -> None:
        """Judge the next reading against these totals (a session resumed after a restart: a meter
        that was reset or exchanged while the station was off must not go unnoticed)."""
        self._import = _Direction("import", import_wh)
        self._export = _Direction("export", export_wh)
        self._at = None

    async def read(self) -> MeterReading:
        reading = await self._meter.read()  # communication errors propagate unchanged
        now = self._clock.monotonic()
        for label, value in (("import", reading.import_wh), ("export", reading.export_wh)):
            if not (math.isfinite(value) and value >= 0):
                raise self._fail(f"{label} energy total {value!r} Wh is not a meter value")
        if self._import is None or self._export is None:
            self._import = _Direction("import", reading.import_wh)
            self._export = _Direction("export", reading.export_wh)
            self._at, self._power_w = now, reading.total_power_w
            return reading
        elapsed = max(0.0, now - self._at) if self._at is not None else None
        power = reading.total_power_w
        # Energy the average measured power delivered in this interval, per direction.
        mean_w = (self._power_w + power) / 2 if elapsed is not None else 0.0
        span = elapsed or 0.0
        imp = self._judge(self._import, reading.import_wh, elapsed, max(mean_w, 0.0) * span / 3600.0)
        exp = self._judge(self._export, reading.export_wh, elapsed, max(-mean_w, 0.0) * span / 3600.0)
        # Every check passed: commit both directions together.
        for direction, (raw, wraps, expected) in ((self._import, imp), (self._export, exp)):
            direction.raw, direction.wraps, direction.expected_wh = raw, wraps, expected
        self._at, self._power_w = now, power
        return replace(reading, import_wh=self._total(self._import), export_wh=self._total(self._export))

    # ------------------------------------------------------------------------------- internals
    def _total(self, direction: _Direction) -> float:
        modulus = self._limits.register_modulus_wh or 0.0
        return direction.raw + direction.wraps * modulus

    def _judge(
        self, direction: _Direction, raw: float, elapsed: float | None, expected_wh: float
    ) -> tuple[float, int, float]:
        """(raw, wraps, expected energy pending) after this reading, or ImplausibleReading."""
        limits = self._limits
        step = raw - direction.raw
        wraps = direction.wraps
        if step < -limits.resolution_wh:
            modulus = limits.register_modulus_wh
            if modulus is not None and -step >= modulus * WRAP_MIN_SHARE:
                step += modulus  # the register passed its modulus: the energy is the way round
                wraps += 1
            else:
                raise self._fail(
                    f"{direction.name} energy went backwards from {direction.raw:.3f} to {raw:.3f} Wh "
                    "(registers only grow: meter reset, exchanged or corrupt)"
                )
        step = max(step, 0.0)
        if elapsed is not None:
            possible = limits.max_power_w * (1 + JUMP_TOLERANCE) * elapsed / 3600.0 + 2 * limits.resolution_wh
            if step > possible:
                raise self._fail(
                    f"{direction.name} energy jumped by {step:.3f} Wh in {elapsed:.1f} s; the board's "
                    f"{limits.max_power_w:.0f} W can deliver at most {possible:.3f} Wh"
                )
        pending = direction.expected_wh + expected_wh
        if step > limits.resolution_wh / 2:
            pending = 0.0  # the register moved: what the power promised has arrived
        elif pending >= max(STALE_ENERGY_WH, 3 * limits.resolution_wh):
            raise self._fail(
                f"{direction.name} energy stuck at {raw:.3f} Wh while the measured power delivered "
                f"{pending:.1f} Wh (frozen meter or stale cached values)"
            )
        return raw, wraps, pending

    def _fail(self, why: str) -> ImplausibleReading:
        return ImplausibleReading(self._name, why)
