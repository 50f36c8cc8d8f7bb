"""What an AC (and bidirectional) ISO 15118 session needs from the charger, and what it tells it.

The DC side is :mod:`firmware.iso15118.session.port`; the two share :class:`Authorisation`,
:class:`Notification` and the pure-session principle: every method returns at once, the session is
driven by the EV's requests. Powers are signed where a session may discharge (ISO 15118-20 BPT):
positive charges the EV, negative discharges it, as everywhere in the firmware (ARCHITECTURE.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from firmware.iso15118.session.port import Authorisation, Notification


@dataclass(frozen=True)
class AcLimits:
    """What the charger allows now: board rating, cable, the connector's limit chain and the energy
    manager's grant, already combined by the port. Discharge is allowed only when the energy manager
    authorised it (``max_discharge_power_w`` > 0); it is 0 otherwise (default deny)."""

    nominal_voltage_v: float
    max_current_a: float  # per phase
    min_current_a: float  # per phase (6 A: the least a PWM pilot offers, IEC 61851-1 Table A.8)
    phases: int
    nominal_frequency_hz: float = 50.0
    max_power_w: float | None = None
    max_discharge_power_w: float = 0.0
    min_discharge_power_w: float = 0.0


@dataclass(frozen=True)
class EvAcParameters:
    """The EV's AC ChargeParameterDiscovery and ScheduleExchange: its limits and its needs, for the
    energy manager as the user's preferences (departure time, energy)."""

    max_current_a: float | None = None
    min_current_a: float | None = None
    max_voltage_v: float | None = None
    max_power_w: float | None = None
    min_power_w: float | None = None
    max_discharge_power_w: float | None = None
    min_discharge_power_w: float | None = None
    energy_request_wh: float | None = None  # ISO-2 EAmount, -20 EVTargetEnergyRequest
    max_energy_wh: float | None = None  # -20 EVMaximumEnergyRequest
    min_energy_wh: float | None = None  # -20 EVMinimumEnergyRequest
    departure_in_s: int | None = None  # seconds from now
    target_soc_pct: int | None = None
    min_soc_pct: int | None = None


@dataclass(frozen=True)
class PowerEntry:
    start_s: int  # from the schedule's start
    max_power_w: float  # signed: a negative maximum asks for discharge (BPT)


@dataclass(frozen=True)
class PriceEntry:
    start_s: int
    price_per_kwh: float  # in the tariff's currency
    level: int | None = None  # -2 ePriceLevel / -20 price level, when the tariff has levels


@dataclass(frozen=True)
class Schedule:
    """One offer to the EV: the power it may take over time, and what it costs (SalesTariff in -2,
    price schedules in -20), so that a foreign EV can plan its own charging against them."""

    schedule_id: int
    duration_s: int
    power: tuple[PowerEntry, ...]
    prices: tuple[PriceEntry, ...] = ()
    currency: str = "EUR"
    price_levels: int | None = None


@dataclass(frozen=True)
class MeterInfo:
    meter_id: str
    import_wh: float
    export_wh: float = 0.0
    signed: bytes | None = None  # a signed reading (OCMF) when the meter has one


@dataclass(frozen=True)
class AcStatus:
    notification: Notification = Notification.NONE
    notification_max_delay_s: int = 0
    rcd_tripped: bool = False


@dataclass(frozen=True)
class AcSetpoint:
    """The charge loop's answer: the power the EV should take now (signed; dynamic control mode) and
    what is measured."""

    target_power_w: float | None
    present_power_w: float
    present_current_a: tuple[float, ...] = field(default_factory=tuple)


class AcEvsePort(Protocol):
    @property
    def evse_id(self) -> str: ...

    def authorisation(self) -> Authorisation: ...

    def status(self) -> AcStatus: ...

    def limits(self) -> AcLimits: ...

    def ev_parameters(self, params: EvAcParameters) -> None: ...

    def schedules(self) -> list[Schedule]:
        """The offers for the EV now (at least one, covering at least 24 h)."""
        ...

    def power_delivery(self, start: bool, schedule_id: int | None) -> bool:
        """Start (the connector may close its contactor once the EV is in state C) or stop; False
        when starting is refused now."""
        ...

    def charge_loop(self, ev_present_power_w: float | None) -> AcSetpoint:
        """One charge loop step: what the EV reports it takes, the setpoint for it."""
        ...

    def meter(self) -> MeterInfo | None: ...

    def session_stopped(self, reason: str) -> None: ...
