"""What the embedded CSMS keeps: its event log, its authorisation policy and its transaction ledger."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

AuthStatus = Literal["Accepted", "Blocked", "Invalid"]

#: The measurand a sampled value has when it names none (OCPP 1.6 SampledValue.measurand and
#: 2.0.1 SampledValueType.measurand default).
ENERGY_REGISTER = "Energy.Active.Import.Register"

_WH_PER_UNIT = {"Wh": 1.0, "kWh": 1000.0}


@dataclass
class CsmsEvent:
    """One thing that happened on a station's connection, in the order it happened."""

    t: float  # the injected clock's monotonic()
    station: str
    dir: Literal["rx", "tx"]  # rx = station -> CSMS
    kind: Literal["call", "result", "error", "connected", "disconnected"]
    action: str | None
    payload: dict[str, Any]
    message_id: str | None


@dataclass
class CsmsPolicy:
    """How the CSMS answers: boot status, heartbeat interval and which id tags it accepts."""

    boot_status: Literal["Accepted", "Pending", "Rejected"] = "Accepted"
    heartbeat_interval_s: int = 300
    accepted_ids: set[str] | None = None  # None = every id accepted
    blocked_ids: set[str] = field(default_factory=set)

    def id_status(self, id_token: str) -> AuthStatus:
        """Blocked beats accepted: a blocked id stays blocked whatever the accepted list says."""
        if id_token in self.blocked_ids:
            return "Blocked"
        if self.accepted_ids is not None and id_token not in self.accepted_ids:
            return "Invalid"
        return "Accepted"


class CsmsError(Exception):
    """A CSMS-initiated call could not be made or did not get a usable answer."""


class CsmsCallError(CsmsError):
    """The station answered a CSMS-initiated call with a CALLERROR."""

    def __init__(self, code: str, description: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.details = details or {}


def energy_register_wh(sampled: dict[str, Any]) -> float | None:
    """The reading in Wh if ``sampled`` is a total active-import energy register value, else None.

    Handles both shapes: 1.6 (value is a string, ``unit`` beside it, default Wh; OCPP 1.6 SampledValue) and
    2.x (value is a number, ``unitOfMeasure.unit`` default Wh, times 10^``multiplier``; 2.0.1
    UnitOfMeasureType). Per-phase values are skipped: the ledger wants the meter total.
    """
    if sampled.get("measurand", ENERGY_REGISTER) != ENERGY_REGISTER or "phase" in sampled:
        return None
    if sampled.get("format") == "SignedData":
        return None
    unit_of_measure = sampled.get("unitOfMeasure")
    if isinstance(unit_of_measure, dict):
        unit = unit_of_measure.get("unit", "Wh")
        multiplier = unit_of_measure.get("multiplier", 0)
    else:
        unit = sampled.get("unit", "Wh")
        multiplier = 0
    scale = _WH_PER_UNIT.get(unit) if isinstance(unit, str) else None
    if scale is None or not isinstance(multiplier, int):
        return None
    try:
        value = float(sampled.get("value"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    return value * scale * 10.0**multiplier


def register_readings(meter_values: list[Any], context: str | None = None) -> list[float]:
    """Every total energy register reading in ``meter_values`` (in order), optionally of one context."""
    readings: list[float] = []
    for entry in meter_values:
        if not isinstance(entry, dict):
            continue
        for sampled in entry.get("sampledValue", []):
            if not isinstance(sampled, dict):
                continue
            if context is not None and sampled.get("context", "Sample.Periodic") != context:
                continue
            wh = energy_register_wh(sampled)
            if wh is not None:
                readings.append(wh)
    return readings


class TransactionLedger:
    """Transactions by id as the CSMS learnt them, one dict each (see :meth:`open` for the keys).

    Station-chosen ids (2.0.1/2.1) could clash between stations; the second station's record is then
    filed under ``"<station>:<id>"`` so that neither overwrites the other.
    """

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def find(self, station: str, transaction_id: str) -> dict[str, Any] | None:
        record = self.records.get(transaction_id)
        if record is not None and record["station"] == station:
            return record
        return self.records.get(f"{station}:{transaction_id}")

    def open(self, station: str, transaction_id: str, protocol: str, t: float) -> dict[str, Any]:
        """The record of ``transaction_id`` on ``station``, created empty if new."""
        found = self.find(station, transaction_id)
        if found is not None:
            return found
        key = transaction_id if transaction_id not in self.records else f"{station}:{transaction_id}"
        record: dict[str, Any] = {
            "transaction_id": transaction_id,
            "station": station,
            "protocol": protocol,
            "evse_id": None,
            "connector_id": None,
            "id_tag": None,
            "id_tag_status": None,
            "meter_start_wh": None,
            "meter_stop_wh": None,
            "energy_wh": None,
            "started_at": None,  # the station's timestamps, as sent
            "stopped_at": None,
            "t_started": t,  # the CSMS clock when first heard of
            "t_stopped": None,
            "stop_reason": None,
            "active": True,
            "meter_values": [],  # every meterValue entry received, as sent (camelCase)
            "events": [],  # {"eventType", "triggerReason", "seqNo", "timestamp", "offline"} per message
        }
        self.records[key] = record
        return record

    @staticmethod
    def add_meter_values(record: dict[str, Any], meter_values: list[Any]) -> None:
        """Keep ``meter_values`` and update the running energy from their register readings."""
        entries = [entry for entry in meter_values if isinstance(entry, dict)]
        record["meter_values"].extend(entries)
        readings = register_readings(entries)
        if not readings:
            return
        if record["meter_start_wh"] is None:
            record["meter_start_wh"] = readings[0]
        if record["active"]:
            record["energy_wh"] = readings[-1] - record["meter_start_wh"]

    @staticmethod
    def stop(record: dict[str, Any], meter_stop_wh: float | None, t: float) -> None:
        record["active"] = False
        record["t_stopped"] = t
        if meter_stop_wh is not None:
            record["meter_stop_wh"] = meter_stop_wh
        if record["meter_stop_wh"] is not None and record["meter_start_wh"] is not None:
            record["energy_wh"] = record["meter_stop_wh"] - record["meter_start_wh"]
