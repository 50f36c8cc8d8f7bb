"""The energy manager as the EMS interfaces see it: :class:`firmware.energy.ems_port.EmsPort`.

The MQTT client and the Modbus server (``ems_mqtt.py``, ``ems_modbus.py``) validate what the EMS sends
and call this bridge, which turns each command into a tagged input of the manager:

* site limit -> the site input ``ems`` (priority EMS, expiring: when the EMS goes silent the site falls
  back to ``ems_fallback_import_w``, seed R142);
* connector setpoint -> the connector input ``ems``: a charging setpoint is an upper bound (P_granted);
  a discharging one asks for exactly that power, which the connector's discharge authorisation (a
  safety input) still overrides: no V2G without authorisation;
* demand response -> :meth:`EnergyManager.demand_response`;
* site measurement -> the site meter reading (eq. 1.2.5.1), handed to the site controller once;
* user preferences -> the energy need and departure time the departure-aware split uses, and a
  session energy cap (``max_energy_wh``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from firmware.connector import Connector
from firmware.energy import bounds as prio
from firmware.energy.bounds import Bound
from firmware.energy.ems_port import ConnectorSnapshot, ConnectorState, EmsSnapshot, UserPreferences
from firmware.energy.manager import SITE_EMS, EnergyManager
from firmware.iec61851.pilot import CpState
from hal.clock import Clock

#: The connector input an EMS setpoint goes to, and the one a user's session energy cap goes to.
EMS_SETPOINT = "ems"
USER_CAP = "user"


@dataclass
class _Reading:
    power_w: float
    at: float


class EmsBridge:
    def __init__(
        self,
        manager: EnergyManager,
        connectors: dict[int, Connector],
        *,
        clock: Clock,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.manager = manager
        self.connectors = connectors
        self.clock = clock
        self.wall_clock = wall_clock
        self.preferences: dict[int, UserPreferences] = {}
        self.last_heartbeat: dict[str, float] = {}
        self._reading: _Reading | None = None
        self._last_site_w: float | None = None

    # ------------------------------------------------------------------------------ EmsPort
    def set_site_limit(
        self, *, import_max_w: float | None, export_max_w: float | None, expires_at: float | None, source: str
    ) -> None:
        if import_max_w is None and export_max_w is None:
            self.manager.clear_site_input(SITE_EMS)
            return
        self.manager.set_site_input(
            Bound(
                SITE_EMS,
                max_w=math.inf if import_max_w is None else import_max_w,
                min_w=-math.inf if export_max_w is None else -export_max_w,
                priority=prio.EMS,
                expires_at=expires_at,
                detail=f"setpoint from {source}",
            )
        )

    def set_connector_setpoint(
        self, connector: int, *, power_w: float | None, expires_at: float | None, source: str
    ) -> None:
        self._check(connector)
        if power_w is None:
            self.manager.clear_connector_input(connector, EMS_SETPOINT)
            return
        low = power_w if power_w < 0 else -math.inf  # a discharge setpoint asks for exactly that power
        bound = Bound(
            EMS_SETPOINT, max_w=power_w, min_w=low, priority=prio.EMS, expires_at=expires_at,
            detail=f"setpoint from {source}",
        )  # fmt: skip
        self.manager.set_connector_input(connector, bound)
        # An expired setpoint is not a permission: back to "no EMS bound" (the site budget still applies).
        self.manager.connector_inputs[connector].fallbacks[EMS_SETPOINT] = Bound(
            EMS_SETPOINT, priority=prio.EMS, detail=f"{source} setpoint expired"
        )

    def demand_response(self, *, reduce_by_w: float, until: float, source: str) -> None:
        now = self.clock.monotonic()
        if reduce_by_w <= 0:
            self.manager.clear_site_input("demand_response")
            return
        self.manager.demand_response(reduce_by_w=reduce_by_w, until=until, now=now, source="demand_response")

    def set_preferences(self, connector: int, prefs: UserPreferences) -> None:
        self._check(connector)
        self.preferences[connector] = prefs

    def heartbeat(self, source: str, now: float) -> None:
        self.last_heartbeat[source] = now

    def site_measurement(self, *, power_w: float, source: str, now: float) -> None:
        if not math.isfinite(power_w):
            raise ValueError(f"site power {power_w!r} from {source} is not a power")
        self._reading = _Reading(power_w, now)

    def snapshot(self) -> EmsSnapshot:
        last = self.manager.last
        connectors = []
        for n, connector in sorted(self.connectors.items()):
            result = last.connectors.get(n) if last is not None else None
            window = result.window if result is not None else None
            setpoint = self.manager.connector_inputs[n].get(EMS_SETPOINT)
            reading = connector.last_meter
            binding = window.max_by.bound.source if window is not None and window.max_by is not None else "none"
            connectors.append(
                ConnectorSnapshot(
                    connector=n,
                    state=_state(connector),
                    power_w=reading.total_power_w if reading is not None else 0.0,
                    energy_wh=_session_energy(connector),
                    limit_max_w=_finite(result.power_w) if result is not None else None,
                    limit_min_w=_finite(window.min_w) if window is not None else None,
                    limit_source=binding,
                    setpoint_w=_finite(setpoint.max_w) if setpoint is not None else None,
                    fallback=last is not None and last.fallback is not None,
                    faults=tuple(code.value for code in connector.supervisor.active),
                )
            )
        site = last.site_window if last is not None else None
        binding = site.max_by.bound.source if site is not None and site.max_by is not None else "grid"
        return EmsSnapshot(
            site_power_w=self._last_site_w,
            import_limit_w=_finite(site.max_w) if site is not None else None,
            export_limit_w=_finite(-site.min_w) if site is not None else None,
            limit_source=binding,
            fallback=last is not None and last.fallback is not None,
            connectors=tuple(connectors),
        )

    # ------------------------------------------------------------------------------ for the controller
    def take_site_reading(self) -> float | None:
        """The site power the EMS reported since the last call (each reading is used once, so that a
        silent EMS runs into the manager's meter timeout)."""
        reading, self._reading = self._reading, None
        if reading is None:
            return None
        self._last_site_w = reading.power_w
        return reading.power_w

    def needs(self, connector: int, now: float) -> tuple[float, float | None]:
        """(energy still needed in Wh, departure as monotonic time) from the user's preferences, and the
        session energy cap applied as a connector input."""
        prefs = self.preferences.get(connector)
        if prefs is None:
            return 0.0, None
        delivered = _session_energy(self.connectors[connector])
        if prefs.max_energy_wh is not None and delivered >= prefs.max_energy_wh:
            cap = Bound(USER_CAP, max_w=0.0, priority=prio.USER, detail="the user's maximum energy is delivered")
            self.manager.set_connector_input(connector, cap)
        else:
            self.manager.clear_connector_input(connector, USER_CAP)
        if prefs.departure_at is None or prefs.min_energy_wh is None:
            return 0.0, None
        deadline = now + (prefs.departure_at - self.wall_clock())
        return max(0.0, prefs.min_energy_wh - delivered), deadline

    def discharge_floor(self, connector: int) -> float | None:
        prefs = self.preferences.get(connector)
        return prefs.discharge_floor_soc_pct if prefs is not None else None

    def _check(self, connector: int) -> None:
        if connector not in self.connectors:
            raise ValueError(f"this charger has no connector {connector}")


def _state(connector: Connector) -> ConnectorState:
    if connector.supervisor.active:
        return ConnectorState.FAULTED
    pilot = connector.debouncer.state
    if pilot is CpState.A:
        return ConnectorState.AVAILABLE
    if connector.session_id is None:
        return ConnectorState.OCCUPIED
    reading = connector.last_meter
    power = reading.total_power_w if reading is not None else 0.0
    if power < -50:
        return ConnectorState.DISCHARGING
    return ConnectorState.CHARGING if power > 50 else ConnectorState.SUSPENDED


def _session_energy(connector: Connector) -> float:
    return connector.session_energy_wh or 0.0


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
