"""OCPP 2.0.1 device model: GetVariables / SetVariables / GetBaseReport, accessors, persistence."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.ocpp.device_model import (
    MEASURANDS_201,
    AttributeRef,
    AttributeSpec,
    DeviceModel,
    DeviceModelError,
    TooManyItemsError,
    VariableKey,
    VariableSpec,
    standard_variables,
)


def _schema(name: str) -> dict[str, Any]:
    text = resources.files("ocpp").joinpath("v201", "schemas", name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _ref(
    component: str,
    variable: str,
    instance: str | None = None,
    evse: int | None = None,
    connector: int | None = None,
    attribute: str | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"component": {"name": component}, "variable": {"name": variable}}
    if instance is not None:
        data["variable"]["instance"] = instance
    if evse is not None:
        data["component"]["evse"] = {"id": evse}
        if connector is not None:
            data["component"]["evse"]["connectorId"] = connector
    if attribute is not None:
        data["attributeType"] = attribute
    return data


def _set(model: DeviceModel, value: str, *ref: Any, **kw: Any) -> dict[str, Any]:
    data = _ref(*ref, **kw)
    data["attributeValue"] = value
    [result] = model.set_variables([data])
    jsonschema.validate({"setVariableResult": [result]}, _schema("SetVariablesResponse.json"))
    return result


def _get(model: DeviceModel, *ref: Any, **kw: Any) -> dict[str, Any]:
    [result] = model.get_variables([_ref(*ref, **kw)])
    jsonschema.validate({"getVariableResult": [result]}, _schema("GetVariablesResponse.json"))
    return result


# ---------------------------------------------------------------------- what the station has

REQUIRED = [
    ("OCPPCommCtrlr", "HeartbeatInterval", None, "300"),
    ("OCPPCommCtrlr", "MessageTimeout", "Default", "60"),
    ("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent", "5"),
    ("OCPPCommCtrlr", "MessageAttemptInterval", "TransactionEvent", "10"),
    ("OCPPCommCtrlr", "OfflineThreshold", None, "60"),
    ("OCPPCommCtrlr", "ResetRetries", None, "3"),
    ("OCPPCommCtrlr", "WebSocketPingInterval", None, "10"),
    ("OCPPCommCtrlr", "NetworkProfileConnectionAttempts", None, "3"),
    ("OCPPCommCtrlr", "QueueAllMessages", None, "false"),
    ("SampledDataCtrlr", "Enabled", None, "true"),
    ("SampledDataCtrlr", "TxUpdatedMeasurands", None, None),
    ("SampledDataCtrlr", "TxUpdatedInterval", None, "60"),
    ("SampledDataCtrlr", "TxEndedMeasurands", None, None),
    ("SampledDataCtrlr", "TxEndedInterval", None, "60"),
    ("SampledDataCtrlr", "TxStartedMeasurands", None, None),
    ("AlignedDataCtrlr", "Enabled", None, "true"),
    ("AlignedDataCtrlr", "Measurands", None, None),
    ("AlignedDataCtrlr", "Interval", None, "900"),
    ("AlignedDataCtrlr", "TxEndedMeasurands", None, None),
    ("AlignedDataCtrlr", "TxEndedInterval", None, "900"),
    ("TxCtrlr", "TxStartPoint", None, "PowerPathClosed"),
    ("TxCtrlr", "TxStopPoint", None, "EVConnected,Authorized"),
    ("TxCtrlr", "EVConnectionTimeOut", None, "60"),
    ("TxCtrlr", "StopTxOnInvalidId", None, "true"),
    ("TxCtrlr", "StopTxOnEVSideDisconnect", None, "true"),
    ("TxCtrlr", "MaxEnergyOnInvalidId", None, "0"),
    ("AuthCtrlr", "Enabled", None, "true"),
    ("AuthCtrlr", "AuthorizeRemoteStart", None, None),
    ("AuthCtrlr", "LocalAuthorizeOffline", None, "true"),
    ("AuthCtrlr", "LocalPreAuthorize", None, "false"),
    ("AuthCtrlr", "OfflineTxForUnknownIdEnabled", None, "false"),
    ("AuthCacheCtrlr", "Enabled", None, "true"),
    ("AuthCacheCtrlr", "LifeTime", None, None),
    ("AuthCacheCtrlr", "Storage", None, None),
    ("AuthCacheCtrlr", "Policy", None, "LRU"),
    ("LocalAuthListCtrlr", "Enabled", None, "true"),
    ("LocalAuthListCtrlr", "Entries", None, "0"),
    ("LocalAuthListCtrlr", "ItemsPerMessage", None, None),
    ("LocalAuthListCtrlr", "BytesPerMessage", None, None),
    ("SmartChargingCtrlr", "Enabled", None, "true"),
    ("SmartChargingCtrlr", "RateUnit", None, "A,W"),
    ("SmartChargingCtrlr", "PeriodsPerSchedule", None, "1440"),
    ("SmartChargingCtrlr", "ProfileStackLevel", None, None),
    ("SmartChargingCtrlr", "LimitChangeSignificance", None, None),
    ("SmartChargingCtrlr", "Entries", "ChargingProfiles", "0"),
    ("ReservationCtrlr", "Enabled", None, "true"),
    ("SecurityCtrlr", "SecurityProfile", None, None),
    ("SecurityCtrlr", "Identity", None, None),
    ("SecurityCtrlr", "OrganizationName", None, None),
    ("DeviceDataCtrlr", "ItemsPerMessage", "GetVariables", None),
    ("DeviceDataCtrlr", "ItemsPerMessage", "SetVariables", None),
    ("DeviceDataCtrlr", "BytesPerMessage", "GetVariables", None),
    ("ChargingStation", "AvailabilityState", None, "Available"),
    ("ChargingStation", "Available", None, "true"),
    ("ChargingStation", "SupplyPhases", None, "3"),
]


@pytest.mark.parametrize(("component", "variable", "instance", "default"), REQUIRED)
def test_the_station_has_the_controller_variables(
    component: str, variable: str, instance: str | None, default: str | None
) -> None:
    result = _get(DeviceModel(None), component, variable, instance)
    assert result["attributeStatus"] == "Accepted"
    assert result["attributeType"] == "Actual"
    if default is not None:
        assert result["attributeValue"] == default


def test_the_physical_tree_follows_the_evse_count() -> None:
    model = DeviceModel(None, evses=2, max_power_w=11000, connector_type="sType2")
    for evse in (1, 2):
        assert _get(model, "EVSE", "AvailabilityState", evse=evse)["attributeValue"] == "Available"
        assert _get(model, "EVSE", "Power", evse=evse, attribute="MaxSet")["attributeValue"] == "11000"
        assert _get(model, "Connector", "ConnectorType", evse=evse, connector=1)["attributeValue"] == "sType2"
        assert _get(model, "Connector", "AvailabilityState", evse=evse, connector=1)["attributeStatus"] == "Accepted"
    assert _get(model, "EVSE", "Power", evse=3)["attributeStatus"] == "UnknownComponent"
    assert _get(model, "Connector", "ConnectorType", evse=1, connector=2)["attributeStatus"] == "UnknownComponent"
    assert _get(model, "EVSE", "Power")["attributeStatus"] == "UnknownComponent"  # an EVSE needs its id


@pytest.mark.parametrize(
    "kwargs",
    [{"evses": 0}, {"connector_type": "Type2"}, {"max_power_w": 0.0}, {"supply_phases": 4}],
)
def test_bad_station_parameters_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        DeviceModel(None, **kwargs)


# ---------------------------------------------------------------------- GetVariables

GETS: list[tuple[dict[str, Any], str, str | None]] = [
    (_ref("OCPPCommCtrlr", "HeartbeatInterval"), "Accepted", None),
    (_ref("OCPPCommCtrlr", "HeartbeatInterval", attribute="Actual"), "Accepted", None),
    (_ref("OCPPCommCtrlr", "HeartbeatInterval", attribute="Target"), "NotSupportedAttributeType", None),
    (_ref("OCPPCommCtrlr", "HeartbeatInterval", attribute="Bogus"), "NotSupportedAttributeType", None),
    (_ref("OCPPCommCtrlr", "NoSuchVariable"), "UnknownVariable", None),
    (_ref("OCPPCommCtrlr", "MessageAttempts"), "UnknownVariable", None),  # the instance is part of the name
    (_ref("OCPPCommCtrlr", "MessageAttempts", "Authorize"), "UnknownVariable", None),
    (_ref("NoSuchCtrlr", "Enabled"), "UnknownComponent", None),
    ({"component": {"name": "AuthCtrlr", "instance": "x"}, "variable": {"name": "Enabled"}}, "UnknownComponent", None),
    (_ref("SecurityCtrlr", "BasicAuthPassword"), "Rejected", "WriteOnly"),
    ({"component": {}, "variable": {"name": "Enabled"}}, "UnknownComponent", "InvalidValue"),
    ({"component": {"name": "AuthCtrlr"}}, "UnknownVariable", "InvalidValue"),
]


@pytest.mark.parametrize(("data", "status", "reason"), GETS)
def test_get_variables(data: dict[str, Any], status: str, reason: str | None) -> None:
    [result] = DeviceModel(None).get_variables([data])
    jsonschema.validate({"getVariableResult": [result]}, _schema("GetVariablesResponse.json"))
    assert result["attributeStatus"] == status
    assert ("attributeValue" in result) == (status == "Accepted")
    assert result.get("attributeStatusInfo", {}).get("reasonCode") == reason


def test_get_variables_echoes_every_entry_in_order() -> None:
    model = DeviceModel(None)
    request = [_ref("AuthCtrlr", "Enabled"), _ref("Nope", "Enabled"), _ref("TxCtrlr", "TxStopPoint")]
    results = model.get_variables(request)
    assert [r["component"] for r in results] == [r["component"] for r in request]
    assert [r["attributeStatus"] for r in results] == ["Accepted", "UnknownComponent", "Accepted"]


def test_get_variables_reads_the_snake_case_the_ocpp_package_hands_a_handler() -> None:
    data = {
        "component": {"name": "Connector", "evse": {"id": 1, "connector_id": 1}},
        "variable": {"name": "ConnectorType"},
        "attribute_type": "Actual",
    }
    [result] = DeviceModel(None).get_variables([data])
    assert result["attributeStatus"] == "Accepted"
    assert result["component"] == {"name": "Connector", "evse": {"id": 1, "connectorId": 1}}


def test_write_only_values_never_leave_the_station() -> None:
    model = DeviceModel(None)
    assert _set(model, "correct-horse-battery", "SecurityCtrlr", "BasicAuthPassword")["attributeStatus"] == "Accepted"
    assert "correct-horse" not in json.dumps(model.get_variables([_ref("SecurityCtrlr", "BasicAuthPassword")]))
    for base in ("FullInventory", "ConfigurationInventory"):
        report = model.base_report(base)  # type: ignore[arg-type]
        assert "correct-horse" not in json.dumps(report)
        [entry] = [e for e in report if e["variable"]["name"] == "BasicAuthPassword"]
        assert entry["variableAttribute"] == [
            {"type": "Actual", "mutability": "WriteOnly", "persistent": True, "constant": False}
        ]
    assert model.get("SecurityCtrlr", "BasicAuthPassword") == "correct-horse-battery"


def test_too_many_items_is_an_occurrence_constraint_violation() -> None:
    model = DeviceModel(None)
    limit = model.get_int("DeviceDataCtrlr", "ItemsPerMessage", "GetVariables")
    assert len(model.get_variables([_ref("AuthCtrlr", "Enabled")] * limit)) == limit
    with pytest.raises(TooManyItemsError) as caught:
        model.get_variables([_ref("AuthCtrlr", "Enabled")] * (limit + 1))
    assert caught.value.code == "OccurenceConstraintViolation"
    limit = model.get_int("DeviceDataCtrlr", "ItemsPerMessage", "SetVariables")
    with pytest.raises(TooManyItemsError):
        model.set_variables([{**_ref("AuthCtrlr", "Enabled"), "attributeValue": "true"}] * (limit + 1))


# ---------------------------------------------------------------------- SetVariables

SETS: list[tuple[tuple[Any, ...], str, str, str | None, str | None]] = [
    # (reference, value, status, reason code, value read back when accepted)
    (("OCPPCommCtrlr", "HeartbeatInterval"), "120", "Accepted", None, "120"),
    (("OCPPCommCtrlr", "HeartbeatInterval"), " 0090", "Accepted", None, "90"),
    (("OCPPCommCtrlr", "HeartbeatInterval"), "-1", "Rejected", "ValueTooLow", None),
    (("OCPPCommCtrlr", "HeartbeatInterval"), "1.5", "Rejected", "InvalidValue", None),
    (("OCPPCommCtrlr", "HeartbeatInterval"), "ten", "Rejected", "InvalidValue", None),
    (("OCPPCommCtrlr", "HeartbeatInterval"), "2147483648", "Rejected", "ValueTooHigh", None),
    (("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent"), "7", "Accepted", None, "7"),
    (("OCPPCommCtrlr", "MessageTimeout", "Default"), "0", "Rejected", "ValueTooLow", None),
    (("OCPPCommCtrlr", "QueueAllMessages"), "TRUE", "Accepted", None, "true"),
    (("OCPPCommCtrlr", "QueueAllMessages"), "1", "Rejected", "InvalidValue", None),
    (
        ("SampledDataCtrlr", "TxUpdatedMeasurands"),
        "Voltage , Current.Import",
        "Accepted",
        None,
        "Voltage,Current.Import",
    ),
    (("SampledDataCtrlr", "TxUpdatedMeasurands"), "", "Accepted", None, ""),
    (("SampledDataCtrlr", "TxUpdatedMeasurands"), "Voltage,Voltage", "Rejected", "InvalidValue", None),
    (("SampledDataCtrlr", "TxUpdatedMeasurands"), "SoC", "Rejected", "InvalidValue", None),
    (("AlignedDataCtrlr", "Measurands"), "Energy.Active.Export.Register", "Accepted", None, None),
    (("TxCtrlr", "TxStartPoint"), "EVConnected,Authorized", "Accepted", None, "EVConnected,Authorized"),
    (("TxCtrlr", "TxStartPoint"), "", "Rejected", "InvalidValue", None),
    (("TxCtrlr", "TxStartPoint"), "ParkingBayOccupancy", "Rejected", "InvalidValue", None),
    (("AuthCacheCtrlr", "Policy"), "LRU", "Accepted", None, "LRU"),
    (("AuthCacheCtrlr", "Policy"), "LFU", "Rejected", "InvalidValue", None),
    (("AuthCacheCtrlr", "Policy"), "LRU,LFU", "Rejected", "InvalidValue", None),
    (("SmartChargingCtrlr", "LimitChangeSignificance"), "2.50", "Accepted", None, "2.5"),
    (("SmartChargingCtrlr", "LimitChangeSignificance"), "100", "Accepted", None, "100"),
    (("SmartChargingCtrlr", "LimitChangeSignificance"), ".5", "Accepted", None, "0.5"),
    (("SmartChargingCtrlr", "LimitChangeSignificance"), "-0.1", "Rejected", "ValueTooLow", None),
    (("SmartChargingCtrlr", "LimitChangeSignificance"), "NaN", "Rejected", "InvalidValue", None),
    (("SmartChargingCtrlr", "LimitChangeSignificance"), "1e2", "Rejected", "InvalidValue", None),
    (("SecurityCtrlr", "BasicAuthPassword"), "x" * 15, "Rejected", "ValueTooLow", None),
    (("SecurityCtrlr", "BasicAuthPassword"), "x" * 41, "Rejected", "ValueTooHigh", None),
    (("SecurityCtrlr", "OrganizationName"), "Example CPO", "Accepted", None, "Example CPO"),
    (("SecurityCtrlr", "SecurityProfile"), "2", "Rejected", "ReadOnly", None),
    (("SecurityCtrlr", "Identity"), "cp-2", "Rejected", "ReadOnly", None),
    (("LocalAuthListCtrlr", "Entries"), "5", "Rejected", "ReadOnly", None),
    (("ChargingStation", "AvailabilityState"), "Unavailable", "Rejected", "ReadOnly", None),
    (("DeviceDataCtrlr", "ItemsPerMessage", "GetVariables"), "1000", "Rejected", "ReadOnly", None),
    (("OCPPCommCtrlr", "HeartbeatInterval"), "9" * 1001, "Rejected", "TooLargeElement", None),
    (("OCPPCommCtrlr", "Nope"), "1", "UnknownVariable", None, None),
    (("NopeCtrlr", "Enabled"), "1", "UnknownComponent", None, None),
]


@pytest.mark.parametrize(("ref", "value", "status", "reason", "reads_back"), SETS)
def test_set_variables(
    ref: tuple[Any, ...], value: str, status: str, reason: str | None, reads_back: str | None
) -> None:
    model = DeviceModel(None)
    before = model.base_report("FullInventory")
    result = _set(model, value, *ref)
    assert result["attributeStatus"] == status
    assert result.get("attributeStatusInfo", {}).get("reasonCode") == reason
    if status == "Accepted":
        expected = reads_back if reads_back is not None else value
        assert _get(model, *ref)["attributeValue"] == expected
    else:
        assert model.base_report("FullInventory") == before


def test_set_of_an_attribute_the_variable_lacks() -> None:
    model = DeviceModel(None)
    result = _set(model, "5", "OCPPCommCtrlr", "HeartbeatInterval", attribute="MaxSet")
    assert result["attributeStatus"] == "NotSupportedAttributeType"
    result = _set(model, "5", "EVSE", "Power", evse=1, attribute="MaxSet")
    assert result["attributeStatus"] == "Rejected"  # MaxSet exists, but is the installer's, read-only


def test_set_without_a_value_is_rejected() -> None:
    [result] = DeviceModel(None).set_variables([_ref("OCPPCommCtrlr", "HeartbeatInterval")])
    assert result["attributeStatus"] == "Rejected"
    assert result["attributeStatusInfo"]["reasonCode"] == "InvalidValue"


def test_reboot_required_variable() -> None:
    vendor = VariableSpec("VendorCtrlr", "Mode", "OptionList", (AttributeSpec("Actual", "ReadWrite", "a"),),
                          values_list=("a", "b"), reboot_required=True)  # fmt: skip
    model = DeviceModel(None, extra_variables=[vendor])
    assert _set(model, "b", "VendorCtrlr", "Mode")["attributeStatus"] == "RebootRequired"
    assert model.get("VendorCtrlr", "Mode") == "b"


def test_date_time_variables_are_normalised_to_utc() -> None:
    vendor = VariableSpec("VendorCtrlr", "Since", "dateTime", (AttributeSpec("Actual", "ReadWrite"),))
    model = DeviceModel(None, extra_variables=[vendor])
    assert _get(model, "VendorCtrlr", "Since")["attributeValue"] == ""  # no value yet
    assert _set(model, "2024-05-01T14:00:00+02:00", "VendorCtrlr", "Since")["attributeStatus"] == "Accepted"
    assert model.get("VendorCtrlr", "Since") == "2024-05-01T12:00:00.000Z"
    result = _set(model, "2024-05-01 12:00", "VendorCtrlr", "Since")
    assert result["attributeStatusInfo"]["reasonCode"] == "InvalidValue"


def test_on_change_hears_accepted_values() -> None:
    model = DeviceModel(None)
    heard: list[tuple[AttributeRef, str]] = []
    model.on_change = lambda ref, value: heard.append((ref, value))
    model.set_variables(
        [
            {**_ref("OCPPCommCtrlr", "HeartbeatInterval"), "attributeValue": "0100"},
            {**_ref("OCPPCommCtrlr", "OfflineThreshold"), "attributeValue": "-3"},
            {**_ref("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent"), "attributeValue": "2"},
        ]
    )
    assert heard == [
        (AttributeRef(VariableKey("OCPPCommCtrlr", "HeartbeatInterval")), "100"),
        (AttributeRef(VariableKey("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent")), "2"),
    ]


def test_a_failing_listener_does_not_fail_the_set(caplog: pytest.LogCaptureFixture) -> None:
    model = DeviceModel(None)

    def broken(ref: AttributeRef, value: str) -> None:
        raise RuntimeError("listener bug")

    model.on_change = broken
    assert _set(model, "5", "OCPPCommCtrlr", "ResetRetries")["attributeStatus"] == "Accepted"
    assert model.get_int("OCPPCommCtrlr", "ResetRetries") == 5
    assert "on_change listener failed" in caplog.text


# ---------------------------------------------------------------------- base reports


def _names(report: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(e["component"]["name"], e["variable"]["name"]) for e in report}


@pytest.mark.parametrize("base", ["FullInventory", "ConfigurationInventory", "SummaryInventory"])
def test_base_reports_match_the_notify_report_schema(base: str) -> None:
    report = DeviceModel(None, evses=2).base_report(base)  # type: ignore[arg-type]
    assert report
    request = {"requestId": 1, "generatedAt": "2024-05-01T12:00:00.000Z", "seqNo": 0, "reportData": report}
    jsonschema.validate(request, _schema("NotifyReportRequest.json"))


def test_full_inventory_lists_every_variable_with_its_characteristics() -> None:
    model = DeviceModel(None, evses=2)
    report = model.base_report("FullInventory")
    assert len(report) == len(model.variables())
    [tx_start] = [e for e in report if e["variable"]["name"] == "TxStartPoint"]
    assert tx_start["variableCharacteristics"] == {
        "dataType": "MemberList",
        "supportsMonitoring": False,
        "valuesList": "EVConnected,Authorized,PowerPathClosed,EnergyTransfer",
    }
    assert tx_start["variableAttribute"] == [
        {"type": "Actual", "mutability": "ReadWrite", "persistent": True, "constant": False, "value": "PowerPathClosed"}
    ]
    [power] = [e for e in report if e["variable"]["name"] == "Power" and e["component"]["evse"]["id"] == 2]
    assert power["variableCharacteristics"]["maxLimit"] == 22080.0
    assert power["variableCharacteristics"]["unit"] == "W"
    assert [a["type"] for a in power["variableAttribute"]] == ["Actual", "MaxSet"]
    [attempts] = [e for e in report if e["variable"] == {"name": "MessageAttempts", "instance": "TransactionEvent"}]
    assert attempts["component"] == {"name": "OCPPCommCtrlr"}


def test_configuration_inventory_lists_what_the_csms_can_set() -> None:
    report = DeviceModel(None).base_report("ConfigurationInventory")
    names = _names(report)
    assert ("OCPPCommCtrlr", "HeartbeatInterval") in names
    assert ("SecurityCtrlr", "BasicAuthPassword") in names
    assert ("SecurityCtrlr", "Identity") not in names
    assert ("ChargingStation", "AvailabilityState") not in names
    for entry in report:
        assert any(a["mutability"] != "ReadOnly" for a in entry["variableAttribute"])


def test_summary_inventory_is_about_availability() -> None:
    model = DeviceModel(None, evses=2)
    model.update_actual("EVSE", "AvailabilityState", "Occupied", evse=2)
    report = model.base_report("SummaryInventory")
    assert _names(report) == {
        ("ChargingStation", "AvailabilityState"),
        ("ChargingStation", "Available"),
        ("EVSE", "AvailabilityState"),
        ("EVSE", "Available"),
        ("Connector", "AvailabilityState"),
    }
    states = {
        (e["component"].get("evse", {}).get("id"), e["component"]["name"]): e["variableAttribute"][0]["value"]
        for e in report
        if e["variable"]["name"] == "AvailabilityState"
    }
    assert states[(2, "EVSE")] == "Occupied"
    assert states[(1, "EVSE")] == "Available"


def test_unknown_report_base() -> None:
    with pytest.raises(ValueError, match="report base"):
        DeviceModel(None).base_report("Everything")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the station's accessors


def test_typed_accessors() -> None:
    model = DeviceModel(None)
    assert model.get_int("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent") == 5
    assert model.get_bool("AuthCtrlr", "LocalAuthorizeOffline") is True
    assert model.get_list("TxCtrlr", "TxStopPoint") == ["EVConnected", "Authorized"]
    assert model.get_list("SampledDataCtrlr", "TxUpdatedMeasurands") == [
        "Energy.Active.Import.Register",
        "Power.Active.Import",
        "Current.Import",
        "Voltage",
    ]
    assert model.get_float("EVSE", "Power", evse=1) == 0.0
    assert model.get("EVSE", "Power", evse=1, attribute="MaxSet") == "22080"
    assert model.get("SecurityCtrlr", "BasicAuthPassword") is None
    with pytest.raises(KeyError, match="no variable"):
        model.get("OCPPCommCtrlr", "MessageAttempts")
    with pytest.raises(KeyError, match="has no value"):
        model.get_int("SecurityCtrlr", "BasicAuthPassword")
    with pytest.raises(KeyError, match="no Target"):
        model.get("AuthCtrlr", "Enabled", attribute="Target")


def test_update_actual_sets_read_only_state_and_checks_it() -> None:
    model = DeviceModel(None)
    model.update_actual("LocalAuthListCtrlr", "Entries", "12")
    model.update_actual("SecurityCtrlr", "Identity", "cp-0001")
    model.update_actual("EVSE", "Power", "7360.50", evse=1)
    assert _get(model, "LocalAuthListCtrlr", "Entries")["attributeValue"] == "12"
    assert _get(model, "SecurityCtrlr", "Identity")["attributeValue"] == "cp-0001"
    assert model.get_float("EVSE", "Power", evse=1) == 7360.5
    with pytest.raises(ValueError, match="above the maximum"):
        model.update_actual("EVSE", "Power", "30000", evse=1)
    with pytest.raises(ValueError, match="not one of"):
        model.update_actual("ChargingStation", "AvailabilityState", "Sleeping")


# ---------------------------------------------------------------------- persistence


def test_set_values_survive_a_reopen_and_station_state_does_not(tmp_path: Path) -> None:
    path = tmp_path / "device-model.json"
    model = DeviceModel(path, evses=2)
    results = model.set_variables(
        [
            {**_ref("OCPPCommCtrlr", "HeartbeatInterval"), "attributeValue": "42"},
            {**_ref("OCPPCommCtrlr", "MessageAttemptInterval", "TransactionEvent"), "attributeValue": "20"},
            {**_ref("SecurityCtrlr", "BasicAuthPassword"), "attributeValue": "0123456789abcdef"},
            {**_ref("TxCtrlr", "TxStartPoint"), "attributeValue": "Authorized"},
        ]
    )
    assert [r["attributeStatus"] for r in results] == ["Accepted"] * 4
    model.update_actual("EVSE", "AvailabilityState", "Faulted", evse=2)
    reopened = DeviceModel(path, evses=2)
    assert reopened.get_int("OCPPCommCtrlr", "HeartbeatInterval") == 42
    assert reopened.get_int("OCPPCommCtrlr", "MessageAttemptInterval", "TransactionEvent") == 20
    assert reopened.get("SecurityCtrlr", "BasicAuthPassword") == "0123456789abcdef"
    assert reopened.get_list("TxCtrlr", "TxStartPoint") == ["Authorized"]
    assert reopened.get("EVSE", "AvailabilityState", evse=2) == "Available"
    assert path.stat().st_mode & 0o077 == 0


def test_values_of_variables_the_station_no_longer_has_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "device-model.json"
    model = DeviceModel(
        path, evses=2, extra_variables=[VariableSpec("V", "X", "integer", (AttributeSpec("Actual", "ReadWrite", "1"),))]
    )
    assert _set(model, "3", "V", "X")["attributeStatus"] == "Accepted"
    assert _set(model, "30", "OCPPCommCtrlr", "OfflineThreshold")["attributeStatus"] == "Accepted"
    reopened = DeviceModel(path, evses=1)
    assert reopened.get_int("OCPPCommCtrlr", "OfflineThreshold") == 30


CORRUPT_FILES = [
    pytest.param(b'{"format": 1, "values": [{"component": "OCPPCommCtrlr", "vari', id="torn"),
    pytest.param(b"", id="empty"),
    pytest.param(b'{"format": 2, "values": []}', id="newer-format"),
    pytest.param(b'{"format": 1, "values": {}}', id="values-not-list"),
    pytest.param(b'{"format": 1, "values": [17]}', id="entry-not-object"),
    pytest.param(b'{"format": 1, "values": [{"component": "OCPPCommCtrlr"}]}', id="entry-incomplete"),
    pytest.param(
        b'{"format": 1, "values": [{"component": "OCPPCommCtrlr", "variable": "HeartbeatInterval", "value": "x"}]}',
        id="invalid-value",
    ),
]


@pytest.mark.parametrize("content", CORRUPT_FILES)
def test_a_corrupt_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "device-model.json"
    path.write_bytes(content)
    with pytest.raises(DeviceModelError) as caught:
        DeviceModel(path)
    assert caught.value.path == path and str(path) in str(caught.value)


@pytest.mark.parametrize("content", CORRUPT_FILES)
def test_recover_falls_back_to_defaults(tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "device-model.json"
    path.write_bytes(content)
    model = DeviceModel(path, recover=True)
    assert model.get_int("OCPPCommCtrlr", "HeartbeatInterval") == 300
    assert "starting from defaults" in caplog.text
    assert (tmp_path / "device-model.json.corrupt").read_bytes() == content


def test_a_failed_write_rejects_and_undoes_the_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "device-model.json"
    model = DeviceModel(path)
    assert _set(model, "42", "OCPPCommCtrlr", "HeartbeatInterval")["attributeStatus"] == "Accepted"
    before = path.read_bytes()
    heard: list[str] = []
    model.on_change = lambda ref, value: heard.append(value)

    def power_cut(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", power_cut)
    results = model.set_variables(
        [
            {**_ref("OCPPCommCtrlr", "HeartbeatInterval"), "attributeValue": "43"},
            {**_ref("OCPPCommCtrlr", "OfflineThreshold"), "attributeValue": "99"},
            {**_ref("OCPPCommCtrlr", "ResetRetries"), "attributeValue": "-1"},
        ]
    )
    monkeypatch.undo()
    assert [r["attributeStatus"] for r in results] == ["Rejected"] * 3
    assert [r["attributeStatusInfo"]["reasonCode"] for r in results] == [
        "InternalError",
        "InternalError",
        "ValueTooLow",
    ]
    assert model.get_int("OCPPCommCtrlr", "HeartbeatInterval") == 42
    assert model.get_int("OCPPCommCtrlr", "OfflineThreshold") == 60
    assert heard == []
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["device-model.json"]


# ---------------------------------------------------------------------- property: accepted values read back normalised

_WRITABLE = [
    s
    for s in standard_variables(1)
    if any(a.mutability != "ReadOnly" for a in s.attributes) and s.data_type != "string"
]


@st.composite
def accepted_set(draw: st.DrawFn) -> tuple[VariableSpec, str, str]:
    spec = draw(st.sampled_from(_WRITABLE))
    if spec.data_type == "integer":
        low = int(spec.min_limit) if spec.min_limit is not None else -(2**31)
        number = draw(st.integers(min_value=low, max_value=2**31 - 1))
        return spec, "0" * draw(st.integers(0, 2)) + str(number) if number >= 0 else str(number), str(number)
    if spec.data_type == "decimal":
        whole = draw(st.integers(min_value=0, max_value=10**6))
        frac = draw(st.integers(min_value=0, max_value=999))
        trailing = "0" * draw(st.integers(0, 2))
        text = f"{whole}.{frac:03d}{trailing}"
        normal = f"{whole}.{frac:03d}".rstrip("0").rstrip(".")
        return spec, text, normal
    if spec.data_type == "boolean":
        flag = draw(st.sampled_from(["true", "false"]))
        return spec, "".join(c.upper() if draw(st.booleans()) else c for c in flag), flag
    if spec.data_type == "OptionList":
        option = draw(st.sampled_from(list(spec.values_list or ())))
        return spec, option, option
    members = draw(
        st.lists(st.sampled_from(list(spec.values_list or ())), unique=True, min_size=0 if spec.allow_empty else 1)
    )
    sent = ", ".join(members) if draw(st.booleans()) else ",".join(members)
    return spec, sent, ",".join(members)


@settings(max_examples=300, deadline=None)
@given(accepted_set())
def test_an_accepted_value_reads_back_normalised(case: tuple[VariableSpec, str, str]) -> None:
    spec, sent, normalised = case
    model = DeviceModel(None)
    ref = (spec.component, spec.variable, spec.instance, spec.evse, spec.connector)
    assert _set(model, sent, *ref)["attributeStatus"] == "Accepted"
    assert _get(model, *ref)["attributeValue"] == normalised
    assert model.get(*ref) == normalised


def test_measurand_values_are_what_the_meter_reports() -> None:
    assert "Energy.Active.Import.Register" in MEASURANDS_201
    assert "SoC" not in MEASURANDS_201
