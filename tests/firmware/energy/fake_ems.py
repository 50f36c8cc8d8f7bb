"""A recording fake of the energy manager's EMS port, shared by the MQTT and Modbus adapter tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firmware.energy.ems_port import EmsSnapshot, UserPreferences


@dataclass
class FakeEms:
    """Records every call; the snapshot is whatever the test sets."""

    snapshot_factory: Callable[[], EmsSnapshot]
    snap: EmsSnapshot = field(init=False)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refuse: bool = False

    def __post_init__(self) -> None:
        self.snap = self.snapshot_factory()

    def commands(self) -> list[tuple[str, dict[str, Any]]]:
        return [c for c in self.calls if c[0] != "heartbeat"]

    def set_site_limit(
        self, *, import_max_w: float | None, export_max_w: float | None, expires_at: float | None, source: str
    ) -> None:
        if self.refuse:
            raise ValueError("import_max_w: refused by the energy manager")
        self.calls.append(
            (
                "set_site_limit",
                dict(import_max_w=import_max_w, export_max_w=export_max_w, expires_at=expires_at, source=source),
            )
        )

    def set_connector_setpoint(
        self, connector: int, *, power_w: float | None, expires_at: float | None, source: str
    ) -> None:
        self.calls.append(
            ("set_connector_setpoint", dict(connector=connector, power_w=power_w, expires_at=expires_at, source=source))
        )

    def demand_response(self, *, reduce_by_w: float, until: float, source: str) -> None:
        self.calls.append(("demand_response", dict(reduce_by_w=reduce_by_w, until=until, source=source)))

    def set_preferences(self, connector: int, prefs: UserPreferences) -> None:
        self.calls.append(("set_preferences", dict(connector=connector, prefs=prefs)))

    def snapshot(self) -> EmsSnapshot:
        return self.snap

    def heartbeat(self, source: str, now: float) -> None:
        self.calls.append(("heartbeat", dict(source=source, now=now)))

    def site_measurement(self, *, power_w: float, source: str, now: float) -> None:
        self.calls.append(("site_measurement", dict(power_w=power_w, source=source, now=now)))
