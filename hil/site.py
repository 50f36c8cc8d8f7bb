"""The site around the chargers: building load and PV profiles, the grid limit at the connection
point, grid voltage and frequency, a local battery (ESS), and the site meter that adds it all up."""

from __future__ import annotations

import bisect
import csv
from dataclasses import dataclass
from pathlib import Path

from hil.scenario import BatterySpec, Profile, SiteSpec


class ProfileSeries:
    """A step profile: each value holds from its time until the next one (0 before the first)."""

    def __init__(self, points: list[tuple[float, float]]) -> None:
        self.points = sorted(points)
        self._times = [t for t, _ in self.points]

    @classmethod
    def from_spec(cls, spec: Profile, base_dir: Path) -> ProfileSeries:
        if spec.steps is not None:
            return cls([(float(t), float(v)) for t, v in spec.steps])
        assert spec.csv is not None
        path = base_dir / spec.csv
        points = []
        try:
            with path.open(newline="") as handle:
                for n, row in enumerate(csv.reader(handle), start=1):
                    if not row or row[0].strip().startswith("#") or (n == 1 and not _is_number(row[0])):
                        continue  # blank, comment or header line
                    if len(row) < 2 or not _is_number(row[0]) or not _is_number(row[1]):
                        raise ValueError(f"{path}:{n}: expected 'time_s,value', got {','.join(row)!r}")
                    points.append((float(row[0]), float(row[1])))
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the profile: {exc}") from exc
        if not points:
            raise ValueError(f"{path}: the profile has no rows")
        return cls(points)

    def at(self, t: float) -> float:
        i = bisect.bisect_right(self._times, t) - 1
        return self.points[i][1] if i >= 0 else 0.0

    def next_change(self, t: float) -> float | None:
        """The first step after ``t``, None after the last one."""
        i = bisect.bisect_right(self._times, t)
        return self._times[i] if i < len(self._times) else None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class SiteBattery:
    """A local battery (ESS) behind the connection point. The energy manager sets its discharge power
    each cycle; the power holds until the next setting and is integrated into the stored energy. It
    gives nothing once empty; losses are not modelled (the rig checks the manager, not the inverter)."""

    def __init__(self, spec: BatterySpec, now: float) -> None:
        self.capacity_wh = spec.capacity_kwh * 1000
        self.reserve_wh = spec.reserve_kwh * 1000
        self.max_discharge_w = spec.max_discharge_kw * 1000
        self.stored_wh = spec.soc * self.capacity_wh
        self.power_w = 0.0  # discharge (+); this model never charges
        self._at = now

    @property
    def soc(self) -> float:
        return self.stored_wh / self.capacity_wh

    def advance(self, now: float) -> None:
        """Integrate the present power up to ``now``."""
        dt = now - self._at
        if dt > 0:
            self.stored_wh = max(0.0, self.stored_wh - self.power_w * dt / 3600.0)
            if self.stored_wh <= 0:
                self.power_w = 0.0
        self._at = max(self._at, now)

    def set_power(self, watts: float, now: float) -> None:
        """Discharge at ``watts`` from ``now`` on, within what the battery can give."""
        self.advance(now)
        watts = min(max(0.0, watts), self.max_discharge_w)
        self.power_w = watts if self.stored_wh > 0 else 0.0


@dataclass(frozen=True)
class SitePower:
    W: float  # import at the connection point (+) or export (-)
    limit_W: float | None
    building_W: float
    pv_W: float


class Site:
    """The connection point: ``power()`` is the import there (the building, minus the PV, plus the
    chargers, minus what the battery gives)."""

    def __init__(self, spec: SiteSpec | None, base_dir: Path) -> None:
        spec = spec or SiteSpec()
        self.grid_limit_w = spec.grid_limit_kw * 1000 if spec.grid_limit_kw is not None else None
        self.voltage_v = spec.voltage_v
        self.frequency_hz = spec.frequency_hz
        self.building = ProfileSeries.from_spec(spec.building_load_kw, base_dir) if spec.building_load_kw else None
        self.pv = ProfileSeries.from_spec(spec.pv_kw, base_dir) if spec.pv_kw else None
        self.battery = SiteBattery(spec.battery, 0.0) if spec.battery is not None else None

    def next_change(self, now: float) -> float | None:
        """When the building load or the PV output steps next (scenario time)."""
        times = [t for p in (self.building, self.pv) if p is not None and (t := p.next_change(now)) is not None]
        return min(times) if times else None

    def power(self, now: float, chargers_w: float) -> SitePower:
        building = self.building.at(now) * 1000 if self.building else 0.0
        pv = self.pv.at(now) * 1000 if self.pv else 0.0
        battery = self.battery.power_w if self.battery is not None else 0.0
        return SitePower(
            W=building - pv + chargers_w - battery, limit_W=self.grid_limit_w, building_W=building, pv_W=pv
        )
