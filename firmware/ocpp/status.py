"""What the CSMS is told about a connector: its OCPP status and error code, from the IEC 61851 state,
the session, the active faults and the availability.

OCPP 1.6 §4.9 / §7.7 ChargePointStatus and §7.6 ChargePointErrorCode; OCPP 2.0.1 ConnectorStatusEnumType
(G01). One table here so the mapping can be read, reviewed and tested in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from firmware.safety.faults import CATALOGUE, FaultCode, Reaction

Status16 = Literal[
    "Available",
    "Preparing",
    "Charging",
    "SuspendedEVSE",
    "SuspendedEV",
    "Finishing",
    "Reserved",
    "Unavailable",
    "Faulted",
]
Status201 = Literal["Available", "Occupied", "Reserved", "Unavailable", "Faulted"]

#: 1.6 §7.6 ChargePointErrorCode of each fault; our fault code goes in vendorErrorCode.
ERROR_CODE_16: dict[FaultCode, str] = {
    FaultCode.RCD_TRIPPED: "GroundFailure",
    FaultCode.RCD_SELFTEST_FAILED: "GroundFailure",
    FaultCode.CONTACTOR_WELDED: "PowerSwitchFailure",
    FaultCode.CONTACTOR_FAILED_TO_CLOSE: "PowerSwitchFailure",
    FaultCode.DIODE_MISSING: "EVCommunicationError",
    FaultCode.PILOT_SHORT: "EVCommunicationError",
    FaultCode.PILOT_INVALID: "EVCommunicationError",
    FaultCode.PROXIMITY_INVALID: "OtherError",
    FaultCode.VENTILATION_NOT_AVAILABLE: "OtherError",
    FaultCode.OVERCURRENT_SOFT: "OverCurrentFailure",
    FaultCode.OVERCURRENT_HARD: "OverCurrentFailure",
    FaultCode.OVERTEMPERATURE_DERATE: "HighTemperature",
    FaultCode.OVERTEMPERATURE_STOP: "HighTemperature",
    FaultCode.TEMPERATURE_SENSOR: "OtherError",
    FaultCode.METER_COMM_LOST: "PowerMeterFailure",
    FaultCode.METER_IMPLAUSIBLE: "PowerMeterFailure",
    FaultCode.COPROCESSOR_COMM_LOST: "InternalError",
    FaultCode.CONVERTER_COMM_LOST: "InternalError",
    FaultCode.HEARTBEAT_LOST: "InternalError",
    FaultCode.LOCK_FAILED: "ConnectorLockFailure",
    FaultCode.PHASE_SWITCH_FAILED: "PowerSwitchFailure",
}

#: Faults ranked for the one error code a StatusNotification can carry: the one that stops power
#: first (an emergency over a stop over a derating), then the catalogue's order.
_RANK = {Reaction.EMERGENCY: 0, Reaction.STOP: 1, Reaction.DERATE: 2}


@dataclass(frozen=True)
class ConnectorView:
    """The facts the status depends on."""

    state: str  # IEC 61851 machine state (A1 .. F, WAKEUP)
    ev_connected: bool  # the debounced pilot is not A
    faults: tuple[FaultCode, ...] = ()
    in_transaction: bool = False
    available: bool = True  # ChangeAvailability: Operative / Inoperative
    reserved: bool = False
    authorized_waiting: bool = False  # an id was presented, waiting for the EV (1.6 "Preparing")
    finishing: bool = False  # a transaction ended and the EV is still plugged in
    current_a: float = 0.0  # measured


@dataclass(frozen=True)
class Status:
    status16: Status16
    status201: Status201
    error_code: str  # 1.6 ChargePointErrorCode ("NoError" without a fault)
    vendor_error: str | None  # our fault code


def _worst(faults: tuple[FaultCode, ...]) -> FaultCode | None:
    order = list(CATALOGUE)
    ranked = sorted(faults, key=lambda f: (_RANK[CATALOGUE[f].reaction], order.index(f)))
    return ranked[0] if ranked else None


#: Below this a "charging" connector is not drawing: the EV suspended (1.6 SuspendedEV).
DRAWING_A = 1.0


def connector_status(view: ConnectorView) -> Status:
    worst = _worst(view.faults)
    error = ERROR_CODE_16[worst] if worst is not None else "NoError"
    vendor = worst.value if worst is not None else None
    # A fault that stops power makes the connector Faulted; a derating is reported as a warning on
    # the status the connector otherwise has (1.6 §4.9: an error code with a non-Faulted status).
    faulted = worst is not None and CATALOGUE[worst].reaction is not Reaction.DERATE
    s16: Status16
    if faulted:
        s16 = "Faulted"
    elif not view.available and not view.in_transaction:
        s16 = "Unavailable"  # an Inoperative connector with a transaction stays as it is until it ends
    elif view.in_transaction:
        letter = view.state[0]
        offering = view.state in ("B2", "C2", "D2")
        if letter in "CD" and offering:
            s16 = "Charging" if view.current_a >= DRAWING_A else "SuspendedEV"
        elif offering:
            s16 = "SuspendedEV"  # offered, the EV does not take it (B2: not ready)
        else:
            s16 = "SuspendedEVSE"  # B1/C1/D1, F, WAKEUP: we are not offering
    elif view.ev_connected:
        # No transaction with an EV plugged: before one starts Preparing, after one ended Finishing
        # until the EV is unplugged (1.6 §4.9).
        s16 = "Finishing" if view.finishing else "Preparing"
    elif view.reserved:
        s16 = "Reserved"
    elif view.authorized_waiting:
        s16 = "Preparing"
    else:
        s16 = "Available"
    s201: Status201
    if s16 == "Faulted":
        s201 = "Faulted"
    elif s16 == "Unavailable":
        s201 = "Unavailable"
    elif view.ev_connected:
        s201 = "Occupied"  # 2.0.1 G01: Occupied as soon as a cable or EV is connected
    elif s16 == "Reserved":
        s201 = "Reserved"
    else:
        s201 = "Available"
    return Status(s16, s201, error, vendor)
