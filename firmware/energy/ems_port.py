"""What the local EMS interfaces (MQTT, Modbus TCP) need from the energy manager, and nothing more.

A site EMS / HEMS talks to the charger through :mod:`firmware.energy.ems_mqtt` and
:mod:`firmware.energy.ems_modbus`. Both adapters only parse, validate and translate; every decision
(arbitration, expiry, fallback when the EMS goes silent) belongs to the energy manager, which implements
:class:`EmsPort`. The adapters give the core values that are already checked: finite, in range, with an
expiry on the firmware's monotonic clock.

Signs follow the rest of the energy manager (ARCHITECTURE.md): connector power is positive when the EV
charges and negative when it discharges (V2G); site power is positive when the site imports from the grid.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Protocol

#: Plausibility bound for any power a peer sends or the core reports: 100 MW is far above any charging site
#: (13 x 20 kW is 260 kW; eight 350 kW HPC posts are 2.8 MW) and well inside a Modbus int32 in W. It bounds
#: site values too (limits, the site power at the connection point, both signs): a site with a charging
#: park is still a low- or medium-voltage connection, and even a large one is tens of MW at most.
MAX_POWER_W = 100_000_000.0
#: Plausibility bound for energies (session energy, user minimum and maximum): 10 MWh, ten times the largest
#: truck battery, inside a Modbus int32 in Wh.
MAX_ENERGY_WH = 10_000_000.0
#: Longest validity a command may carry: 65535 s (18.2 h), what one Modbus register holds. A limit meant to
#: last longer is configuration, not a command; and the EMS heartbeat fallback (seed R142) applies anyway.
MAX_VALID_S = 65535.0
#: Bound for a price per kWh (site tariff currency); prices may be negative (surplus hours). The Modbus map
#: scales it by 10^4 into an int32, which holds +-214748.
MAX_PRICE_PER_KWH = 1000.0
#: Departure times are wall-clock epoch seconds (UTC); 4102444800 is 2100-01-01, inside a Modbus uint32.
MAX_EPOCH_S = 4102444800.0
#: Connector numbers run from 1 (OCPP's EVSE/connector numbering); the Modbus map has room for 32.
MAX_CONNECTORS = 32


class EmsInputError(ValueError):
    """A value from the EMS (or in a snapshot) is wrong; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def check_number(field: str, value: Any, *, lo: float, hi: float) -> float:
    """``value`` as a float when it is a real number (not a bool), finite and within ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EmsInputError(field, f"must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise EmsInputError(field, f"must be finite, got {value!r}")
    if not lo <= number <= hi:
        raise EmsInputError(field, f"{value!r} is outside {lo:g} .. {hi:g}")
    return number


def check_optional(field: str, value: Any, *, lo: float, hi: float) -> float | None:
    """Like :func:`check_number`, with ``None`` meaning "not set"."""
    return None if value is None else check_number(field, value, lo=lo, hi=hi)


def check_connector(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONNECTORS:
        raise EmsInputError(field, f"must be a connector number 1 .. {MAX_CONNECTORS}, got {value!r}")
    return value


class ConnectorState(enum.IntEnum):
    """A connector as the EMS sees it. The values are the Modbus state codes (docs/ems.md)."""

    UNAVAILABLE = 0  # out of service, booting, or disabled by the operator
    AVAILABLE = 1  # no EV
    OCCUPIED = 2  # EV plugged in, no energy flowing, nothing holding it back
    CHARGING = 3
    DISCHARGING = 4  # V2G
    SUSPENDED = 5  # EV plugged in, paused by a limit, a schedule or the EV
    FAULTED = 6


@dataclass(frozen=True)
class UserPreferences:
    """The driver's wishes for one connector's session; ``None`` leaves a wish unset."""

    departure_at: float | None = None  # wall-clock epoch seconds (UTC)
    min_energy_wh: float | None = None  # the EV needs at least this much before departure
    max_energy_wh: float | None = None  # stop after this much in the session
    max_price_per_kwh: float | None = None  # in the site tariff's currency; may be negative
    discharge_floor_soc_pct: float | None = None  # V2G never discharges the battery below this SoC

    def __post_init__(self) -> None:
        check_optional("departure_at", self.departure_at, lo=0.0, hi=MAX_EPOCH_S)
        check_optional("min_energy_wh", self.min_energy_wh, lo=0.0, hi=MAX_ENERGY_WH)
        check_optional("max_energy_wh", self.max_energy_wh, lo=0.0, hi=MAX_ENERGY_WH)
        check_optional("max_price_per_kwh", self.max_price_per_kwh, lo=-MAX_PRICE_PER_KWH, hi=MAX_PRICE_PER_KWH)
        check_optional("discharge_floor_soc_pct", self.discharge_floor_soc_pct, lo=0.0, hi=100.0)
        if (
            self.min_energy_wh is not None
            and self.max_energy_wh is not None
            and self.min_energy_wh > self.max_energy_wh
        ):
            raise EmsInputError(
                "min_energy_wh", f"{self.min_energy_wh:g} Wh is above max_energy_wh {self.max_energy_wh:g} Wh"
            )


@dataclass(frozen=True)
class ConnectorSnapshot:
    """One connector in :class:`EmsSnapshot`."""

    connector: int
    state: ConnectorState
    power_w: float  # measured, signed: + charging, - discharging
    energy_wh: float  # net energy into the EV in the current session (0 without a session)
    limit_max_w: float | None  # upper end of the window in force (None: unbounded)
    limit_min_w: float | None  # lower end (0: no discharge; negative: discharge allowed; None: unbounded)
    limit_source: str  # the input that sets limit_max_w, e.g. "grid", "ems", "ocpp", "fallback"
    setpoint_w: float | None  # the EMS setpoint in force (None: none)
    fallback: bool  # a silent EMS/CSMS/meter put this connector on its static fallback limit (seed R142)
    faults: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_connector("connector", self.connector)
        where = f"connector {self.connector}"
        if not isinstance(self.state, ConnectorState):
            raise EmsInputError(f"{where} state", f"must be a ConnectorState, got {self.state!r}")
        check_number(f"{where} power_w", self.power_w, lo=-MAX_POWER_W, hi=MAX_POWER_W)
        check_number(f"{where} energy_wh", self.energy_wh, lo=-MAX_ENERGY_WH, hi=MAX_ENERGY_WH)
        check_optional(f"{where} limit_max_w", self.limit_max_w, lo=-MAX_POWER_W, hi=MAX_POWER_W)
        check_optional(f"{where} limit_min_w", self.limit_min_w, lo=-MAX_POWER_W, hi=MAX_POWER_W)
        check_optional(f"{where} setpoint_w", self.setpoint_w, lo=-MAX_POWER_W, hi=MAX_POWER_W)
        if self.limit_max_w is not None and self.limit_min_w is not None and self.limit_min_w > self.limit_max_w:
            raise EmsInputError(f"{where} limit_min_w", f"{self.limit_min_w:g} W is above limit_max_w")
        if not isinstance(self.limit_source, str):
            raise EmsInputError(f"{where} limit_source", f"must be a string, got {self.limit_source!r}")
        if not isinstance(self.faults, tuple) or not all(isinstance(f, str) and f for f in self.faults):
            raise EmsInputError(f"{where} faults", f"must be a tuple of fault names, got {self.faults!r}")


@dataclass(frozen=True)
class EmsSnapshot:
    """What the EMS interfaces publish: the site and every connector, as of one moment."""

    site_power_w: float | None  # at the grid connection point, + import; None without a site meter
    import_limit_w: float | None  # grid import limit in force (None: none)
    export_limit_w: float | None  # grid export limit in force, as a magnitude (None: none)
    limit_source: str  # why: the input that sets the import limit ("grid", "ems", "fallback", ...)
    fallback: bool  # the EMS went silent and the configured static limit applies (seed R142)
    connectors: tuple[ConnectorSnapshot, ...] = ()

    def __post_init__(self) -> None:
        check_optional("site_power_w", self.site_power_w, lo=-MAX_POWER_W, hi=MAX_POWER_W)
        check_optional("import_limit_w", self.import_limit_w, lo=0.0, hi=MAX_POWER_W)
        check_optional("export_limit_w", self.export_limit_w, lo=0.0, hi=MAX_POWER_W)
        if not isinstance(self.limit_source, str):
            raise EmsInputError("limit_source", f"must be a string, got {self.limit_source!r}")
        if not isinstance(self.connectors, tuple) or not all(isinstance(c, ConnectorSnapshot) for c in self.connectors):
            raise EmsInputError("connectors", "must be a tuple of ConnectorSnapshot")
        numbers = [c.connector for c in self.connectors]
        if numbers != sorted(set(numbers)):
            raise EmsInputError("connectors", f"numbers must be unique and ascending, got {numbers}")

    def connector(self, number: int) -> ConnectorSnapshot | None:
        return next((c for c in self.connectors if c.connector == number), None)


class EmsPort(Protocol):
    """Implemented by the energy manager; called by the EMS adapters.

    ``expires_at``, ``until`` and ``now`` are seconds of the firmware's monotonic clock (``hal.clock``).
    ``source`` names the interface ("ems:mqtt", "ems:modbus"). A method may raise ``ValueError`` to refuse a
    command it cannot take (the adapter reports it to the EMS); it must not block.
    """

    def set_site_limit(
        self, *, import_max_w: float | None, export_max_w: float | None, expires_at: float | None, source: str
    ) -> None:
        """The site's grid-connection setpoint from the EMS (P_granted, seed R62/R64); None: no limit."""
        ...

    def set_connector_setpoint(
        self, connector: int, *, power_w: float | None, expires_at: float | None, source: str
    ) -> None:
        """Signed W: + charge, - discharge (V2G); None clears the setpoint."""
        ...

    def demand_response(self, *, reduce_by_w: float, until: float, source: str) -> None:
        """Reduce the site's consumption by ``reduce_by_w`` until ``until`` (seed R56); 0 ends a request."""
        ...

    def set_preferences(self, connector: int, prefs: UserPreferences) -> None:
        """Replace the user preferences of a connector (all None: none)."""
        ...

    def snapshot(self) -> EmsSnapshot:
        """The values to publish, as of now."""
        ...

    def heartbeat(self, source: str, now: float) -> None:
        """The EMS showed it is alive (a valid message or a watchdog write); fallback detection is the core's."""
        ...

    def site_measurement(self, *, power_w: float, source: str, now: float) -> None:
        """The site's power at the grid connection point as the EMS's smart meter reads it (seed R64
        "EMS <- SM (P_max_grid, +-P_meter)"): W, signed, + import, - export (seed R60: "exported power reported
        negative"), within +-:data:`MAX_POWER_W`. ``now`` is when the adapter received it.

        The manager uses it for site load balancing (TF-EVC eq. 1.2.5.1; R60: dP = P_grid_max - P_meter) and
        falls back to its static limit when readings stop arriving for its meter timeout (seed R142).
        """
        ...
