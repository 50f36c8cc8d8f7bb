"""What an ISO 15118 / DIN 70121 session needs from the charger, and what it tells it.

The session state machines (:mod:`firmware.iso15118.session.din`, and the ISO 15118-2 / -20 ones
after it) are pure: they never touch hardware, a clock or the network. Everything they ask of the
charger goes through a :class:`DcEvsePort`: the connector's authorisation, the limits of the board,
the converter and the energy manager, the insulation monitor's cable check, the converter's
precharge and current demand, the contactor. The firmware implements the port over the real
connector and power stage; tests implement it with a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Authorisation(StrEnum):
    ACCEPTED = "accepted"
    PENDING = "pending"  # EVSEProcessing = Ongoing: RFID, OCPP Authorize or a remote start still to come
    REJECTED = "rejected"


class Isolation(StrEnum):
    """IEC 61851-23 insulation state as DIN 70121 / ISO 15118-2 isolationLevelType names it."""

    INVALID = "Invalid"  # not measured yet
    VALID = "Valid"
    WARNING = "Warning"
    FAULT = "Fault"


class EvseStatusCode(StrEnum):
    """DC_EVSEStatusCodeType (DIN 70121, ISO 15118-2)."""

    NOT_READY = "EVSE_NotReady"
    READY = "EVSE_Ready"
    SHUTDOWN = "EVSE_Shutdown"
    UTILITY_INTERRUPT = "EVSE_UtilityInterruptEvent"
    ISOLATION_ACTIVE = "EVSE_IsolationMonitoringActive"
    EMERGENCY = "EVSE_EmergencyShutdown"
    MALFUNCTION = "EVSE_Malfunction"


class Notification(StrEnum):
    """EVSENotificationType: what the EVSE wants the EV to do next."""

    NONE = "None"
    STOP = "StopCharging"
    RENEGOTIATE = "ReNegotiation"


@dataclass(frozen=True)
class DcEvseStatus:
    code: EvseStatusCode
    isolation: Isolation | None = None
    notification: Notification = Notification.NONE
    notification_max_delay_s: int = 0


@dataclass(frozen=True)
class DcLimits:
    """What the charger can give now: board and converter ratings, the connector's limit chain and
    the energy manager's grant, already combined by the port."""

    max_current_a: float
    max_power_w: float
    max_voltage_v: float
    min_current_a: float
    min_voltage_v: float
    peak_current_ripple_a: float
    current_regulation_tolerance_a: float | None = None
    energy_to_deliver_wh: float | None = None


@dataclass(frozen=True)
class EvDcStatus:
    ready: bool
    error: str  # DC_EVErrorCodeType, NO_ERROR when fine
    soc_pct: int


@dataclass(frozen=True)
class EvDcParameters:
    """The EV's ChargeParameterDiscovery: its limits and what it needs (for the energy manager)."""

    max_current_a: float
    max_voltage_v: float
    max_power_w: float | None
    energy_capacity_wh: float | None
    energy_request_wh: float | None
    full_soc_pct: int | None
    bulk_soc_pct: int | None
    status: EvDcStatus


@dataclass(frozen=True)
class DcTarget:
    """A CurrentDemand (or PreCharge) request."""

    voltage_v: float
    current_a: float
    max_voltage_v: float | None = None
    max_current_a: float | None = None
    max_power_w: float | None = None
    charging_complete: bool = False
    bulk_charging_complete: bool = False


@dataclass(frozen=True)
class DcOutput:
    """What the converter delivers now, and which of its limits hold it back."""

    voltage_v: float
    current_a: float
    current_limit_achieved: bool = False
    voltage_limit_achieved: bool = False
    power_limit_achieved: bool = False


class DcEvsePort(Protocol):
    """The charger as a DC session sees it. Every method returns at once (the session is driven by
    the EV's requests, answered within their time limits); long actions (cable check, precharge,
    closing the contactor) are started by one call and observed by the next ones."""

    @property
    def evse_id(self) -> str: ...

    def authorisation(self) -> Authorisation: ...

    def status(self) -> DcEvseStatus: ...

    def limits(self) -> DcLimits: ...

    def ev_parameters(self, params: EvDcParameters) -> None:
        """The EV's limits and energy needs (to the energy manager as the user's preferences)."""
        ...

    def ev_status(self, status: EvDcStatus) -> None: ...

    def cable_check(self) -> Isolation:
        """Start the cable check at the first call; ``VALID``/``WARNING`` once it passed, ``FAULT``
        when it failed, ``INVALID`` while it runs."""
        ...

    def precharge(self, target: DcTarget) -> DcOutput:
        """Drive the output towards the EV's battery voltage with the small precharge current."""
        ...

    def power_delivery(self, on: bool) -> bool:
        """Close (on) or open the DC contactors; False when closing is refused now (not precharged,
        a fault, authorisation withdrawn). Opening always succeeds: current is ramped to zero first."""
        ...

    def current_demand(self, target: DcTarget) -> DcOutput:
        """Follow the EV's target within the limits; report what is delivered."""
        ...

    def welding_detection(self) -> float:
        """The output voltage with the contactors commanded open (welding check)."""
        ...

    def session_stopped(self, reason: str) -> None: ...
