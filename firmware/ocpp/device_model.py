"""The OCPP 2.0.1 device model: components, variables, attributes and characteristics of this station.

What it holds (OCPP 2.0.1 part 1 §4 "Device model", part 2 appendix "Standardized components"; variable
names and the libocpp defaults of standards-facts.md 4.6): the controllers the station uses --
OCPPCommCtrlr, SampledDataCtrlr, AlignedDataCtrlr, TxCtrlr, AuthCtrlr, AuthCacheCtrlr, LocalAuthListCtrlr,
SmartChargingCtrlr, ReservationCtrlr, SecurityCtrlr, DeviceDataCtrlr -- and the physical tree:
ChargingStation, one EVSE per ``evses`` and connector 1 of each EVSE.

Each variable has one or more attributes (Actual, Target, MinSet, MaxSet), each with a mutability
(ReadOnly, WriteOnly, ReadWrite), and characteristics: a data type (string, decimal, integer, dateTime,
boolean, OptionList, SequenceList, MemberList), an optional unit, minLimit/maxLimit (for a string: its
length) and a valuesList for the list types.

The OCPP side (use cases B05 SetVariables, B06 GetVariables, B07 GetBaseReport) takes and returns the
message fields as on the wire, camelCase; snake_case keys (what the ``ocpp`` package hands a handler) are
accepted too. Every request entry gets a result, whatever is wrong with it:

* a component this station does not have -> UnknownComponent; a variable the component does not have ->
  UnknownVariable; an attribute type the variable does not have -> NotSupportedAttributeType;
* GetVariables of a WriteOnly attribute -> Rejected (reasonCode WriteOnly): its value never leaves the
  station, neither in GetVariables nor in a report;
* SetVariables of a ReadOnly attribute -> Rejected (ReadOnly); a value that does not fit the data type,
  the limits or the values list -> Rejected (InvalidValue, ValueTooLow, ValueTooHigh, TooLargeElement),
  with ``statusInfo.additionalInfo`` saying why;
* more entries than DeviceDataCtrlr.ItemsPerMessage[GetVariables|SetVariables] raises
  :class:`TooManyItemsError`, which an ``ocpp`` handler turns into CALLERROR OccurenceConstraintViolation.

Reason codes are those of the OCPP 2.1 reason code appendix (2.0.1 leaves reasonCode free text).

Persistence: the values accepted by SetVariables are kept in one JSON file written atomically (see
:func:`firmware.ocpp.configuration.write_json_atomic`); values the station sets itself
(:meth:`DeviceModel.update_actual`: AvailabilityState, Entries, Power...) are state, not configuration,
and are not saved.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from ocpp.exceptions import OccurenceConstraintViolationError
from ocpp.v201.enums import ConnectorEnumType, MeasurandEnumType

from firmware.ocpp.configuration import FILE_FORMAT, StoreError, load_json_store, split_csl, write_json_atomic
from firmware.ocpp.measurands import SUPPORTED as METER_MEASURANDS
from firmware.ocpp.smart_charging import CHARGE_PROFILE_MAX_STACK_LEVEL, CHARGING_SCHEDULE_MAX_PERIODS
from firmware.ocpp.timestamps import TimestampError, parse_utc, utc_iso

log = logging.getLogger(__name__)

AttributeType = Literal["Actual", "Target", "MinSet", "MaxSet"]
Mutability = Literal["ReadOnly", "WriteOnly", "ReadWrite"]
DataType = Literal["string", "decimal", "integer", "dateTime", "boolean", "OptionList", "SequenceList", "MemberList"]
ReportBase = Literal["FullInventory", "ConfigurationInventory", "SummaryInventory"]

ATTRIBUTE_TYPES: tuple[str, ...] = ("Actual", "Target", "MinSet", "MaxSet")
VALUE_MAX_LENGTH = 1000  # SetVariableDataType.attributeValue maxLength (2.0.1 schema)
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
SUMMARY_VARIABLES = frozenset({"AvailabilityState", "Available", "Problem"})  # B07 SummaryInventory
LIST_TYPES = ("OptionList", "SequenceList", "MemberList")

#: 2.0.1 MeasurandEnumType members this firmware's meter can report.
MEASURANDS_201: tuple[str, ...] = tuple(
    sorted(frozenset(m.value for m in MeasurandEnumType) & frozenset(METER_MEASURANDS))
)
AVAILABILITY_STATES = ("Available", "Occupied", "Reserved", "Unavailable", "Faulted")
#: TxStartPoint / TxStopPoint values (2.0.1 E01/E06) this station can detect: no parking bay sensor and no
#: signed meter data, so neither ParkingBayOccupancy nor DataSigned.
TX_POINTS = ("EVConnected", "Authorized", "PowerPathClosed", "EnergyTransfer")


class DeviceModelError(StoreError):
    """The device model file cannot be read, is corrupt, or cannot be written."""


class TooManyItemsError(OccurenceConstraintViolationError):
    """A GetVariables / SetVariables request has more entries than DeviceDataCtrlr.ItemsPerMessage allows."""


@dataclass(frozen=True)
class AttributeSpec:
    type: AttributeType
    mutability: Mutability
    default: str | None = None  # None: the attribute has no value yet
    persistent: bool = True
    constant: bool = False


@dataclass(frozen=True)
class VariableSpec:
    """One variable of one component (component identified by name and, for the physical tree, EVSE and
    connector ids)."""

    component: str
    variable: str
    data_type: DataType
    attributes: tuple[AttributeSpec, ...]
    instance: str | None = None
    evse: int | None = None
    connector: int | None = None
    unit: str | None = None
    min_limit: float | None = None
    max_limit: float | None = None
    values_list: tuple[str, ...] | None = None
    allow_empty: bool = True  # for the list types: may the list be empty
    supports_monitoring: bool = False
    reboot_required: bool = False

    @property
    def key(self) -> VariableKey:
        return VariableKey(self.component, self.variable, self.instance, self.evse, self.connector)

    def attribute(self, attribute_type: str) -> AttributeSpec | None:
        for attribute in self.attributes:
            if attribute.type == attribute_type:
                return attribute
        return None


@dataclass(frozen=True)
class VariableKey:
    component: str
    variable: str
    instance: str | None = None
    evse: int | None = None
    connector: int | None = None

    def __str__(self) -> str:
        where = self.component
        if self.evse is not None:
            where += f"[evse {self.evse}" + (f", connector {self.connector}]" if self.connector is not None else "]")
        return f"{where}.{self.variable}" + (f"[{self.instance}]" if self.instance else "")


@dataclass(frozen=True)
class AttributeRef:
    """What :attr:`DeviceModel.on_change` is told changed."""

    key: VariableKey
    attribute: str = "Actual"


# ====================================================================== the station's variables


def _var(
    component: str,
    variable: str,
    data_type: DataType,
    default: str | None,
    mutability: Mutability = "ReadWrite",
    **extra: Any,
) -> VariableSpec:
    return VariableSpec(component, variable, data_type, (AttributeSpec("Actual", mutability, default),), **extra)


def _ro(component: str, variable: str, data_type: DataType, default: str | None, **extra: Any) -> VariableSpec:
    return _var(component, variable, data_type, default, "ReadOnly", **extra)


def _measurand_list(component: str, variable: str, default: str) -> VariableSpec:
    return _var(component, variable, "MemberList", default, values_list=MEASURANDS_201)


def _interval(component: str, variable: str, default: int, instance: str | None = None) -> VariableSpec:
    return _var(component, variable, "integer", str(default), instance=instance, unit="s", min_limit=0)


def standard_variables(
    evses: int = 1, *, max_power_w: float = 22080.0, connector_type: str = "cType2", supply_phases: int = 3
) -> list[VariableSpec]:
    """The variables of this station: controllers first, then the physical tree."""
    if evses < 1:
        raise ValueError(f"a station has at least one EVSE, got {evses}")
    if connector_type not in {c.value for c in ConnectorEnumType}:
        raise ValueError(f"connector type {connector_type!r} is not a 2.0.1 ConnectorEnumType value")
    if not max_power_w > 0:
        raise ValueError(f"max_power_w must be positive, got {max_power_w}")
    if supply_phases not in (1, 2, 3):
        raise ValueError(f"supply_phases must be 1, 2 or 3, got {supply_phases}")
    comm, sampled, aligned, tx = "OCPPCommCtrlr", "SampledDataCtrlr", "AlignedDataCtrlr", "TxCtrlr"
    specs = [
        # OCPPCommCtrlr (2.0.1 B01/B04, libocpp defaults: standards-facts.md 4.6)
        _interval(comm, "HeartbeatInterval", 300),
        _var(comm, "MessageTimeout", "integer", "60", instance="Default", unit="s", min_limit=1),
        _var(comm, "MessageAttempts", "integer", "5", instance="TransactionEvent", min_limit=0),
        _interval(comm, "MessageAttemptInterval", 10, instance="TransactionEvent"),
        _interval(comm, "OfflineThreshold", 60),
        _var(comm, "ResetRetries", "integer", "3", min_limit=0),
        _interval(comm, "WebSocketPingInterval", 10),  # 0 disables the pings
        # Which signed meter values carry the public key (2.0.1 OCPPCommCtrlr; firmware.ocpp.signed_meter)
        _var(
            comm,
            "PublicKeyWithSignedMeterValue",
            "OptionList",
            "OncePerTransaction",
            values_list=("Never", "OncePerTransaction", "EveryMeterValue"),
        ),
        _var(comm, "NetworkProfileConnectionAttempts", "integer", "3", min_limit=1),
        _var(comm, "QueueAllMessages", "boolean", "false"),
        # SampledDataCtrlr (J02)
        _var(sampled, "Enabled", "boolean", "true"),
        _measurand_list(
            sampled, "TxUpdatedMeasurands", "Energy.Active.Import.Register,Power.Active.Import,Current.Import,Voltage"
        ),
        _interval(sampled, "TxUpdatedInterval", 60),
        _measurand_list(sampled, "TxEndedMeasurands", "Energy.Active.Import.Register"),
        _interval(sampled, "TxEndedInterval", 60),
        _measurand_list(sampled, "TxStartedMeasurands", "Energy.Active.Import.Register"),
        _var(sampled, "SignReadings", "boolean", "false"),  # signed periodic values (J02)
        # AlignedDataCtrlr (J01)
        _var(aligned, "Enabled", "boolean", "true"),
        _measurand_list(aligned, "Measurands", "Energy.Active.Import.Register"),
        _interval(aligned, "Interval", 900),
        _measurand_list(aligned, "TxEndedMeasurands", "Energy.Active.Import.Register"),
        _interval(aligned, "TxEndedInterval", 900),
        _var(aligned, "SignReadings", "boolean", "false"),  # signed clock-aligned values (J01)
        # TxCtrlr (E01..E07)
        _var(tx, "TxStartPoint", "MemberList", "PowerPathClosed", values_list=TX_POINTS, allow_empty=False),
        _var(tx, "TxStopPoint", "MemberList", "EVConnected,Authorized", values_list=TX_POINTS, allow_empty=False),
        _interval(tx, "EVConnectionTimeOut", 60),
        _var(tx, "StopTxOnInvalidId", "boolean", "true"),
        _var(tx, "StopTxOnEVSideDisconnect", "boolean", "true"),
        _var(tx, "MaxEnergyOnInvalidId", "integer", "0", unit="Wh", min_limit=0),
        # AuthCtrlr (C01..C15)
        _var("AuthCtrlr", "Enabled", "boolean", "true"),
        _var("AuthCtrlr", "AuthorizeRemoteStart", "boolean", "false"),
        _var("AuthCtrlr", "LocalAuthorizeOffline", "boolean", "true"),
        _var("AuthCtrlr", "LocalPreAuthorize", "boolean", "false"),
        _var("AuthCtrlr", "OfflineTxForUnknownIdEnabled", "boolean", "false"),
        # AuthCacheCtrlr (C10/C11); the cache evicts the least recently used entry
        _var("AuthCacheCtrlr", "Enabled", "boolean", "true"),
        _var("AuthCacheCtrlr", "LifeTime", "integer", "86400", unit="s", min_limit=1),
        _ro("AuthCacheCtrlr", "Storage", "integer", "0", unit="B"),
        _var("AuthCacheCtrlr", "Policy", "OptionList", "LRU", values_list=("LRU",)),
        # LocalAuthListCtrlr (D01/D02)
        _var("LocalAuthListCtrlr", "Enabled", "boolean", "true"),
        _ro("LocalAuthListCtrlr", "Entries", "integer", "0"),
        _ro("LocalAuthListCtrlr", "ItemsPerMessage", "integer", "250"),
        _ro("LocalAuthListCtrlr", "BytesPerMessage", "integer", "4096"),
        # SmartChargingCtrlr (K01), the values the smart charging store enforces
        _var("SmartChargingCtrlr", "Enabled", "boolean", "true"),
        _ro("SmartChargingCtrlr", "RateUnit", "MemberList", "A,W", values_list=("A", "W")),
        _ro("SmartChargingCtrlr", "PeriodsPerSchedule", "integer", str(CHARGING_SCHEDULE_MAX_PERIODS)),
        _ro("SmartChargingCtrlr", "ProfileStackLevel", "integer", str(CHARGE_PROFILE_MAX_STACK_LEVEL)),
        _var("SmartChargingCtrlr", "LimitChangeSignificance", "decimal", "10", unit="Percent", min_limit=0),
        _ro("SmartChargingCtrlr", "Entries", "integer", "0", instance="ChargingProfiles"),
        # ReservationCtrlr (H01)
        _var("ReservationCtrlr", "Enabled", "boolean", "true"),
        # SecurityCtrlr (A00); BasicAuthPassword 16-40 characters (libocpp SecurityCtrlr.json)
        _ro("SecurityCtrlr", "SecurityProfile", "integer", "1", min_limit=1, max_limit=3),
        _var("SecurityCtrlr", "BasicAuthPassword", "string", None, "WriteOnly", min_limit=16, max_limit=40),
        _ro("SecurityCtrlr", "Identity", "string", "", max_limit=48),
        _var("SecurityCtrlr", "OrganizationName", "string", "", max_limit=50),
        # DeviceDataCtrlr (B06/B07): request sizes this station accepts
        _ro("DeviceDataCtrlr", "ItemsPerMessage", "integer", "50", instance="GetVariables"),
        _ro("DeviceDataCtrlr", "ItemsPerMessage", "integer", "50", instance="SetVariables"),
        _ro("DeviceDataCtrlr", "ItemsPerMessage", "integer", "100", instance="GetReport"),
        _ro("DeviceDataCtrlr", "BytesPerMessage", "integer", "65000", instance="GetVariables"),
        _ro("DeviceDataCtrlr", "BytesPerMessage", "integer", "65000", instance="SetVariables"),
        _ro("DeviceDataCtrlr", "BytesPerMessage", "integer", "65000", instance="GetReport"),
        # The physical tree (G01..G04)
        _ro("ChargingStation", "AvailabilityState", "OptionList", "Available", values_list=AVAILABILITY_STATES),
        _ro("ChargingStation", "Available", "boolean", "true"),
        _ro("ChargingStation", "SupplyPhases", "integer", str(supply_phases), min_limit=0, max_limit=3),
    ]
    connector_types = tuple(c.value for c in ConnectorEnumType)
    power = f"{max_power_w:g}"
    for evse in range(1, evses + 1):
        specs += [
            _ro("EVSE", "AvailabilityState", "OptionList", "Available", values_list=AVAILABILITY_STATES, evse=evse),
            _ro("EVSE", "Available", "boolean", "true", evse=evse),
            VariableSpec(
                "EVSE",
                "Power",
                "decimal",
                (
                    AttributeSpec("Actual", "ReadOnly", "0", persistent=False),
                    AttributeSpec("MaxSet", "ReadOnly", power),
                ),
                evse=evse,
                unit="W",
                min_limit=0,
                max_limit=max_power_w,
            ),
            _ro(
                "Connector",
                "AvailabilityState",
                "OptionList",
                "Available",
                values_list=AVAILABILITY_STATES,
                evse=evse,
                connector=1,
            ),
            _ro(
                "Connector",
                "ConnectorType",
                "OptionList",
                connector_type,
                values_list=connector_types,
                evse=evse,
                connector=1,
            ),
        ]
    return specs


# ====================================================================== value checks


@dataclass
class _Verdict:
    value: str | None  # the normalised value, None when refused
    reason_code: str = ""
    info: str = ""


def _refuse(code: str, info: str) -> _Verdict:
    return _Verdict(None, code, info)


def _normalise_decimal(number: Decimal) -> str:
    if number == 0:
        return "0"
    return format(number.normalize(), "f")


def check_value(spec: VariableSpec, value: str) -> _Verdict:
    """Does ``value`` fit the variable's data type and characteristics? The verdict carries the normalised
    value or a reason code and explanation."""
    if not isinstance(value, str):
        return _refuse("InvalidValue", "the value must be a string")
    if len(value) > VALUE_MAX_LENGTH:
        return _refuse("TooLargeElement", f"longer than {VALUE_MAX_LENGTH} characters")
    kind = spec.data_type
    if kind in ("integer", "decimal"):
        return _check_number(spec, value)
    if kind == "boolean":
        lowered = value.strip().lower()
        if lowered not in ("true", "false"):
            return _refuse("InvalidValue", "not 'true' or 'false'")
        return _Verdict(lowered)
    if kind == "dateTime":
        try:
            return _Verdict(utc_iso(parse_utc(value.strip())))
        except TimestampError as exc:
            return _refuse("InvalidValue", str(exc))
    if kind == "string":
        if spec.min_limit is not None and len(value) < spec.min_limit:
            return _refuse("ValueTooLow", f"shorter than {spec.min_limit:g} characters")
        if spec.max_limit is not None and len(value) > spec.max_limit:
            return _refuse("ValueTooHigh", f"longer than {spec.max_limit:g} characters")
        return _Verdict(value)
    allowed = spec.values_list or ()
    if kind == "OptionList":
        if value.strip() not in allowed:
            return _refuse("InvalidValue", f"{value!r} is not one of {','.join(allowed)}")
        return _Verdict(value.strip())
    members = split_csl(value)
    if not members and not spec.allow_empty:
        return _refuse("InvalidValue", "the list may not be empty")
    if any(member == "" for member in members):
        return _refuse("InvalidValue", "empty member in the list")
    if len(set(members)) != len(members):
        return _refuse("InvalidValue", "a member is listed twice")
    unknown = [member for member in members if member not in allowed]
    if unknown:
        return _refuse("InvalidValue", f"not supported: {', '.join(unknown)} (allowed: {','.join(allowed)})")
    return _Verdict(",".join(members))


def _check_number(spec: VariableSpec, value: str) -> _Verdict:
    text = value.strip()
    pattern = (
        r"[+-]?[0-9]{1,19}" if spec.data_type == "integer" else r"[+-]?([0-9]{1,30}(\.[0-9]{0,30})?|\.[0-9]{1,30})"
    )
    if not re.fullmatch(pattern, text):
        return _refuse("InvalidValue", f"not an {spec.data_type}" if spec.data_type == "integer" else "not a decimal")
    try:
        number = Decimal(text)
    except InvalidOperation:
        return _refuse("InvalidValue", "not a decimal")
    low = spec.min_limit if spec.min_limit is not None else (INT32_MIN if spec.data_type == "integer" else None)
    high = spec.max_limit if spec.max_limit is not None else (INT32_MAX if spec.data_type == "integer" else None)
    if low is not None and number < Decimal(str(low)):
        return _refuse("ValueTooLow", f"below the minimum {low:g}")
    if high is not None and number > Decimal(str(high)):
        return _refuse("ValueTooHigh", f"above the maximum {high:g}")
    return _Verdict(str(int(number)) if spec.data_type == "integer" else _normalise_decimal(number))


# ====================================================================== request parsing

_SNAKE = {
    "attribute_type": "attributeType",
    "attribute_value": "attributeValue",
    "connector_id": "connectorId",
}


def _field(data: dict[str, Any], name: str) -> Any:
    """A field by its wire (camelCase) name, or the snake_case name the ``ocpp`` package hands a handler."""
    if name in data:
        return data[name]
    for snake, camel in _SNAKE.items():
        if camel == name and snake in data:
            return data[snake]
    return None


@dataclass
class _Request:
    component: dict[str, Any]  # echoed in the result
    variable: dict[str, Any]
    attribute_type: str
    key: VariableKey | None  # None when the component or variable reference is malformed
    component_instance: str | None = None
    problem: str = ""


def _echo_component(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return {"name": ""}
    echo: dict[str, Any] = {"name": str(raw.get("name", ""))[:50]}
    if isinstance(raw.get("instance"), str):
        echo["instance"] = raw["instance"][:50]
    evse = raw.get("evse")
    if isinstance(evse, dict) and isinstance(evse.get("id"), int):
        echo["evse"] = {"id": evse["id"]}
        connector = _field(evse, "connectorId")
        if isinstance(connector, int):
            echo["evse"]["connectorId"] = connector
    return echo


def _echo_variable(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return {"name": ""}
    echo: dict[str, Any] = {"name": str(raw.get("name", ""))[:50]}
    if isinstance(raw.get("instance"), str):
        echo["instance"] = raw["instance"][:50]
    return echo


def _parse_request(data: Any) -> _Request:
    if not isinstance(data, dict):
        return _Request({"name": ""}, {"name": ""}, "Actual", None, problem="the entry is not an object")
    component, variable = _echo_component(data.get("component")), _echo_variable(data.get("variable"))
    attribute_type = _field(data, "attributeType") or "Actual"
    request = _Request(component, variable, str(attribute_type), None, component.get("instance"))
    if not component["name"]:
        request.problem = "component.name is missing"
        return request
    if not variable["name"]:
        request.problem = "variable.name is missing"
        return request
    evse = component.get("evse", {})
    request.key = VariableKey(
        component["name"], variable["name"], variable.get("instance"), evse.get("id"), evse.get("connectorId")
    )
    return request


# ====================================================================== the model


class DeviceModel:
    """The station's OCPP 2.0.1 device model.

    ``path`` None keeps it in memory only. ``recover`` lets a corrupt file fall back to the defaults (logged,
    the file moved aside) instead of raising :class:`DeviceModelError`. ``extra_variables`` adds variables
    (vendor components, tests) to :func:`standard_variables`.

    ``on_change(ref, value)`` is called after each accepted and saved SetVariables value; an exception from
    it is logged, never raised into the OCPP handler.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        evses: int = 1,
        recover: bool = False,
        max_power_w: float = 22080.0,
        connector_type: str = "cType2",
        supply_phases: int = 3,
        extra_variables: Iterable[VariableSpec] = (),
    ) -> None:
        self.path = path
        self.on_change: Callable[[AttributeRef, str], None] | None = None
        self._specs: dict[VariableKey, VariableSpec] = {}
        specs = standard_variables(
            evses, max_power_w=max_power_w, connector_type=connector_type, supply_phases=supply_phases
        )
        for spec in [*specs, *extra_variables]:
            if spec.key in self._specs:
                raise ValueError(f"variable {spec.key} is defined twice")
            for attribute in spec.attributes:
                if attribute.default is not None and check_value(spec, attribute.default).value != attribute.default:
                    raise ValueError(f"{spec.key} {attribute.type}: default {attribute.default!r} does not fit")
            self._specs[spec.key] = spec
        self._components = {(k.component, k.evse, k.connector) for k in self._specs}
        self._values: dict[tuple[VariableKey, str], str] = {
            (spec.key, a.type): a.default
            for spec in self._specs.values()
            for a in spec.attributes
            if a.default is not None
        }
        self._saved: dict[tuple[VariableKey, str], str] = {}
        stored = load_json_store(path, error=DeviceModelError, recover=recover, what="device model", parse=self._parse)
        if stored:
            self._values.update(stored)
            self._saved.update(stored)

    # ------------------------------------------------------------------ file
    def _parse(self, doc: dict[str, Any]) -> dict[tuple[VariableKey, str], str]:
        entries = doc.get("values")
        if not isinstance(entries, list):
            raise ValueError("'values' is missing or not a list")
        loaded: dict[tuple[VariableKey, str], str] = {}
        for entry in entries:
            if not isinstance(entry, dict):
                raise ValueError(f"entry {entry!r} is not an object")
            key = VariableKey(
                entry["component"], entry["variable"], entry.get("instance"), entry.get("evse"), entry.get("connector")
            )
            attribute_type, value = entry.get("attribute", "Actual"), entry["value"]
            spec = self._specs.get(key)
            attribute = spec.attribute(attribute_type) if spec else None
            if spec is None or attribute is None:
                log.warning("%s: ignoring %s %s, which this station does not have", self.path, key, attribute_type)
                continue
            if attribute.mutability == "ReadOnly":
                log.warning("%s: ignoring read-only %s (the station sets it)", self.path, key)
                continue
            verdict = check_value(spec, value)
            if verdict.value is None:
                raise ValueError(f"{key} {attribute_type}={value!r}: {verdict.info}")
            loaded[(key, attribute_type)] = verdict.value
        return loaded

    def save(self) -> None:
        """Write the values SetVariables changed (a no-op without a path). Raises DeviceModelError."""
        if self.path is None:
            return
        entries = [
            {
                "component": key.component,
                "evse": key.evse,
                "connector": key.connector,
                "variable": key.variable,
                "instance": key.instance,
                "attribute": attribute_type,
                "value": value,
            }
            for (key, attribute_type), value in self._saved.items()
        ]
        try:
            write_json_atomic(self.path, {"format": FILE_FORMAT, "values": entries})
        except OSError as exc:
            raise DeviceModelError(self.path, f"cannot write the device model file: {exc.strerror or exc}") from exc

    # ------------------------------------------------------------------ resolving a request
    def _resolve(self, request: _Request) -> tuple[str, VariableSpec | None, str]:
        """(status, spec, info): "" status when the reference resolves to an attribute of a variable."""
        key = request.key
        if key is None:
            status = "UnknownVariable" if request.problem.startswith("variable") else "UnknownComponent"
            return status, None, request.problem
        if request.component_instance is not None or (key.component, key.evse, key.connector) not in self._components:
            return "UnknownComponent", None, ""
        spec = self._specs.get(key)
        if spec is None:
            return "UnknownVariable", None, ""
        if request.attribute_type not in ATTRIBUTE_TYPES or spec.attribute(request.attribute_type) is None:
            return "NotSupportedAttributeType", spec, ""
        return "", spec, ""

    def _check_items(self, count: int, instance: str) -> None:
        limit = self.get_int("DeviceDataCtrlr", "ItemsPerMessage", instance=instance)
        if count > limit:
            raise TooManyItemsError(f"{count} entries, DeviceDataCtrlr.ItemsPerMessage[{instance}] is {limit}")

    # ------------------------------------------------------------------ OCPP messages
    def get_variables(self, get_variable_data: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """GetVariablesResponse.getVariableResult for GetVariablesRequest.getVariableData (2.0.1 B06)."""
        self._check_items(len(get_variable_data), "GetVariables")
        results = []
        for data in get_variable_data:
            request = _parse_request(data)
            status, spec, info = self._resolve(request)
            result = _result_head(status, request, info)
            if not status and spec is not None:
                attribute = spec.attribute(request.attribute_type)
                assert attribute is not None
                if attribute.mutability == "WriteOnly":
                    result["attributeStatus"] = "Rejected"
                    result["attributeStatusInfo"] = {"reasonCode": "WriteOnly"}
                else:
                    value = self._values.get((spec.key, attribute.type))
                    result["attributeValue"] = value if value is not None else ""
            results.append(result)
        return results

    def set_variables(self, set_variable_data: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """SetVariablesResponse.setVariableResult for SetVariablesRequest.setVariableData (2.0.1 B05).

        The accepted values are applied together and saved once; if the save fails they are undone and
        reported Rejected (reasonCode InternalError)."""
        self._check_items(len(set_variable_data), "SetVariables")
        results: list[dict[str, Any]] = []
        accepted: list[tuple[int, AttributeRef, str]] = []
        previous: dict[tuple[VariableKey, str], tuple[str | None, str | None]] = {}
        for data in set_variable_data:
            request = _parse_request(data)
            status, spec, info = self._resolve(request)
            result = _result_head(status, request, info)
            if not status and spec is not None:
                self._set_one(spec, request, _field(data, "attributeValue"), result, previous, accepted, len(results))
            results.append(result)
        if accepted:
            try:
                self.save()
            except DeviceModelError as exc:
                log.error("SetVariables: %s; the accepted values are undone", exc)
                self._undo(previous)
                for index, _, _ in accepted:
                    results[index]["attributeStatus"] = "Rejected"
                    results[index]["attributeStatusInfo"] = {"reasonCode": "InternalError", "additionalInfo": "storage"}
                return results
            for _, ref, value in accepted:
                self._notify(ref, value)
        return results

    def _set_one(
        self,
        spec: VariableSpec,
        request: _Request,
        raw_value: Any,
        result: dict[str, Any],
        previous: dict[tuple[VariableKey, str], tuple[str | None, str | None]],
        accepted: list[tuple[int, AttributeRef, str]],
        index: int,
    ) -> None:
        attribute = spec.attribute(request.attribute_type)
        assert attribute is not None
        if attribute.mutability == "ReadOnly":
            result["attributeStatus"] = "Rejected"
            result["attributeStatusInfo"] = {"reasonCode": "ReadOnly"}
            return
        verdict = check_value(spec, raw_value)
        if verdict.value is None:
            log.info("SetVariables %s %s refused: %s", spec.key, attribute.type, verdict.info)
            result["attributeStatus"] = "Rejected"
            result["attributeStatusInfo"] = {"reasonCode": verdict.reason_code, "additionalInfo": verdict.info[:512]}
            return
        slot = (spec.key, attribute.type)
        previous.setdefault(slot, (self._values.get(slot), self._saved.get(slot)))
        self._values[slot] = verdict.value
        self._saved[slot] = verdict.value
        if spec.reboot_required:
            result["attributeStatus"] = "RebootRequired"
        accepted.append((index, AttributeRef(spec.key, attribute.type), verdict.value))

    def _undo(self, previous: dict[tuple[VariableKey, str], tuple[str | None, str | None]]) -> None:
        for slot, (value, saved) in previous.items():
            if value is None:
                self._values.pop(slot, None)
            else:
                self._values[slot] = value
            if saved is None:
                self._saved.pop(slot, None)
            else:
                self._saved[slot] = saved

    def _notify(self, ref: AttributeRef, value: str) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(ref, value)
        except Exception:
            log.exception("on_change listener failed for %s", ref.key)

    def base_report(self, report_base: ReportBase) -> list[dict[str, Any]]:
        """NotifyReportRequest.reportData entries for a GetBaseReport (2.0.1 B07).

        FullInventory: every variable. ConfigurationInventory: the variables the CSMS can set (an attribute
        ReadWrite or WriteOnly). SummaryInventory: availability and problem variables. A WriteOnly attribute
        is listed without its value. Another ``report_base`` is a ValueError."""
        if report_base == "FullInventory":
            specs = list(self._specs.values())
        elif report_base == "ConfigurationInventory":
            specs = [s for s in self._specs.values() if any(a.mutability != "ReadOnly" for a in s.attributes)]
        elif report_base == "SummaryInventory":
            specs = [s for s in self._specs.values() if s.variable in SUMMARY_VARIABLES]
        else:
            raise ValueError(f"unknown report base {report_base!r}")
        return [self._report_data(spec) for spec in specs]

    def _report_data(self, spec: VariableSpec) -> dict[str, Any]:
        component: dict[str, Any] = {"name": spec.component}
        if spec.evse is not None:
            component["evse"] = {"id": spec.evse}
            if spec.connector is not None:
                component["evse"]["connectorId"] = spec.connector
        variable: dict[str, Any] = {"name": spec.variable}
        if spec.instance is not None:
            variable["instance"] = spec.instance
        attributes = []
        for attribute in spec.attributes:
            entry: dict[str, Any] = {
                "type": attribute.type,
                "mutability": attribute.mutability,
                "persistent": attribute.persistent,
                "constant": attribute.constant,
            }
            value = self._values.get((spec.key, attribute.type))
            if attribute.mutability != "WriteOnly" and value is not None:
                entry["value"] = value
            attributes.append(entry)
        characteristics: dict[str, Any] = {
            "dataType": spec.data_type,
            "supportsMonitoring": spec.supports_monitoring,
        }
        if spec.unit is not None:
            characteristics["unit"] = spec.unit
        if spec.min_limit is not None:
            characteristics["minLimit"] = spec.min_limit
        if spec.max_limit is not None:
            characteristics["maxLimit"] = spec.max_limit
        if spec.values_list is not None:
            characteristics["valuesList"] = ",".join(spec.values_list)
        return {
            "component": component,
            "variable": variable,
            "variableAttribute": attributes,
            "variableCharacteristics": characteristics,
        }

    # ------------------------------------------------------------------ the firmware's side
    def spec(
        self,
        component: str,
        variable: str,
        instance: str | None = None,
        evse: int | None = None,
        connector: int | None = None,
    ) -> VariableSpec:
        """The variable's definition; KeyError for one this station does not have."""
        key = VariableKey(component, variable, instance, evse, connector)
        spec = self._specs.get(key)
        if spec is None:
            raise KeyError(f"no variable {key}")
        return spec

    def get(
        self,
        component: str,
        variable: str,
        instance: str | None = None,
        evse: int | None = None,
        connector: int | None = None,
        *,
        attribute: AttributeType = "Actual",
    ) -> str | None:
        """The attribute's value (WriteOnly ones too: the station needs its own password); None if unset.
        KeyError for a variable or attribute this station does not have."""
        spec = self.spec(component, variable, instance, evse, connector)
        if spec.attribute(attribute) is None:
            raise KeyError(f"{spec.key} has no {attribute} attribute")
        return self._values.get((spec.key, attribute))

    def _required(self, *args: Any, **kwargs: Any) -> str:
        value = self.get(*args, **kwargs)
        if value is None:
            raise KeyError(f"{VariableKey(*args)} has no value")
        return value

    def get_int(
        self,
        component: str,
        variable: str,
        instance: str | None = None,
        evse: int | None = None,
        connector: int | None = None,
    ) -> int:
        return int(Decimal(self._required(component, variable, instance, evse, connector)))

    def get_float(
        self,
        component: str,
        variable: str,
        instance: str | None = None,
        evse: int | None = None,
        connector: int | None = None,
    ) -> float:
        return float(self._required(component, variable, instance, evse, connector))

    def get_bool(
        self,
        component: str,
        variable: str,
        instance: str | None = None,
        evse: int | None = None,
        connector: int | None = None,
    ) -> bool:
        return self._required(component, variable, instance, evse, connector) == "true"

    def get_list(
        self,
        component: str,
        variable: str,
        instance: str | None = None,
        evse: int | None = None,
        connector: int | None = None,
    ) -> list[str]:
        return split_csl(self._required(component, variable, instance, evse, connector))

    def update_actual(
        self,
        component: str,
        variable: str,
        value: str,
        *,
        instance: str | None = None,
        evse: int | None = None,
        connector: int | None = None,
        attribute: AttributeType = "Actual",
    ) -> None:
        """The station sets one of its own values (AvailabilityState, Entries, Power, Identity...), whatever
        the mutability; not saved, no ``on_change``. A value that does not fit is a ValueError."""
        spec = self.spec(component, variable, instance, evse, connector)
        if spec.attribute(attribute) is None:
            raise KeyError(f"{spec.key} has no {attribute} attribute")
        verdict = check_value(spec, value)
        if verdict.value is None:
            raise ValueError(f"{spec.key} {attribute}={value!r}: {verdict.info}")
        self._values[(spec.key, attribute)] = verdict.value

    def variables(self) -> list[VariableKey]:
        return list(self._specs)


def _result_head(status: str | None, request: Any, info: str | None) -> dict[str, Any]:
    """The part of a Get/SetVariableResult every outcome has (2.0.1 B05/B06)."""
    result: dict[str, Any] = {
        "attributeStatus": status or "Accepted",
        "attributeType": request.attribute_type if request.attribute_type in ATTRIBUTE_TYPES else "Actual",
        "component": request.component,
        "variable": request.variable,
    }
    if info:
        result["attributeStatusInfo"] = {"reasonCode": "InvalidValue", "additionalInfo": info}
    return result
