"""The OCPP 2.0.1 (and 2.1) station against our embedded CSMS, in virtual time: provisioning, authorisation,
transactions (TransactionEvent), remote control, availability, reservations, meter values, smart charging,
offline queueing; and the adapter's pure mappings."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.ocpp.charging_profiles import profile_from_v201
from firmware.ocpp.device_model import AttributeSpec, DeviceModel, VariableSpec
from firmware.ocpp.status import Status
from firmware.ocpp.timestamps import is_utc_rfc3339
from firmware.ocpp.v201 import V201Adapter, charging_state, stop_reason
from firmware.ocpp.v201_handlers import profile_to_v201
from hil.csms import CsmsCallError, CsmsPolicy
from tests.firmware.ocpp.station_rig import StationRig, station_rig

V201 = "ocpp2.0.1"
V21 = "ocpp2.1"


# ---------------------------------------------------------------------------------------------- helpers
def _adapter(rig: StationRig) -> V201Adapter:
    adapter = rig.station.adapter
    assert isinstance(adapter, V201Adapter)
    return adapter


def _payloads(rig: StationRig, action: str, since: float = -1.0) -> list[dict[str, Any]]:
    return [e.payload for e in rig.calls(action, since)]


def _events(rig: StationRig, since: float = -1.0) -> list[dict[str, Any]]:
    return _payloads(rig, "TransactionEvent", since)


def _connector_statuses(rig: StationRig, since: float = -1.0) -> list[str]:
    return [str(p["connectorStatus"]) for p in _payloads(rig, "StatusNotification", since)]


def _variable(
    component: str, variable: str, value: str | None = None, instance: str | None = None, evse: int | None = None
) -> dict[str, Any]:
    entry: dict[str, Any] = {"component": {"name": component}, "variable": {"name": variable}}
    if evse is not None:
        entry["component"]["evse"] = {"id": evse}
    if instance is not None:
        entry["variable"]["instance"] = instance
    if value is not None:
        entry["attributeValue"] = value
    return entry


async def _set(rig: StationRig, *entries: dict[str, Any]) -> list[str]:
    result = await rig.call("SetVariables", {"setVariableData": list(entries)})
    return [r["attributeStatus"] for r in result["setVariableResult"]]


async def _get(
    rig: StationRig, component: str, variable: str, instance: str | None = None, evse: int | None = None
) -> str | None:
    data = [_variable(component, variable, instance=instance, evse=evse)]
    result = await rig.call("GetVariables", {"getVariableData": data})
    [entry] = result["getVariableResult"]
    value = entry.get("attributeValue")
    return None if value is None else str(value)


async def _charge(rig: StationRig, tag: str | None = "TAG1", amps: float = 16.0) -> None:
    await rig.plug("B")
    await rig.advance(1.0)
    if tag is not None:
        assert await rig.run(rig.station.present_id(1, tag)) == "Accepted"
    await rig.advance(1.0)
    rig.sim.plant.ev_state = "C"
    await rig.advance(2.0)
    assert rig.sim.plant.contacts_closed, rig.connector.why()
    await rig.draw(amps)
    await rig.advance(1.0)


def _transaction_id(rig: StationRig) -> str:
    tx = rig.station.transaction_of(1)
    assert tx is not None and isinstance(tx.transaction_id, str)
    return tx.transaction_id


def _tx_default(limit: float, profile_id: int = 7) -> dict[str, Any]:
    return {
        "id": profile_id,
        "stackLevel": 0,
        "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Relative",
        "chargingSchedule": [
            {"id": 1, "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}
        ],
    }


# ============================================================================================ B Provisioning
@pytest.mark.timeout(60)
def test_boot_accepted_sets_the_heartbeat_interval_and_reports_every_connector(tmp_path: Path) -> None:
    async def scenario() -> None:
        policy = CsmsPolicy(heartbeat_interval_s=120)
        async with station_rig(tmp_path, protocol=V201, policy=policy) as rig:
            [boot] = _payloads(rig, "BootNotification")
            assert boot["reason"] == "PowerUp"
            assert boot["chargingStation"] == {
                "model": "evse",
                "vendorName": "evse-firmware",
                "firmwareVersion": "0.1.0",
            }
            assert rig.station.registration == "Accepted"
            assert _adapter(rig).heartbeat_interval_s() == 120.0
            assert await _get(rig, "OCPPCommCtrlr", "HeartbeatInterval") == "120"
            [status] = _payloads(rig, "StatusNotification")
            assert (status["evseId"], status["connectorId"], status["connectorStatus"]) == (1, 1, "Available")
            assert is_utc_rfc3339(status["timestamp"])
            start = rig.now
            await rig.advance(245.0)
            assert len(rig.calls("Heartbeat", since=start)) == 2  # every 120 s

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_pending_boot_is_retried_and_can_be_triggered_then_accepted(tmp_path: Path) -> None:
    async def scenario() -> None:
        policy = CsmsPolicy(boot_status="Pending", heartbeat_interval_s=30)
        async with station_rig(tmp_path, protocol=V201, policy=policy) as rig:
            await rig.advance(35.0)
            assert len(rig.calls("BootNotification")) == 2  # t = 0 and 30
            assert rig.calls() == rig.calls("BootNotification"), "only BootNotification before Accepted (B02)"
            policy.boot_status = "Accepted"
            trigger = await rig.call("TriggerMessage", {"requestedMessage": "BootNotification"})
            assert trigger["status"] == "Accepted"
            await rig.advance(1.0)  # long before the next retry at t = 60
            boots = _payloads(rig, "BootNotification")
            assert len(boots) == 3 and boots[-1]["reason"] == "Triggered"
            assert rig.station.registration == "Accepted"
            assert _connector_statuses(rig) == ["Available"]
            # F06.FR.17: once accepted, a BootNotification can no longer be triggered.
            again = await rig.call("TriggerMessage", {"requestedMessage": "BootNotification"})
            assert again["status"] == "Rejected"

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_set_and_get_variables_round_trip_and_refusals(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, protocol=V201) as rig:
            statuses = await _set(
                rig,
                _variable("SampledDataCtrlr", "TxUpdatedInterval", "15"),
                _variable("LocalAuthListCtrlr", "Entries", "3"),  # ReadOnly
                _variable("SampledDataCtrlr", "TxUpdatedInterval", "soon"),  # not an integer
                _variable("NoSuchCtrlr", "Enabled", "true"),
                _variable("AuthCtrlr", "NoSuchVariable", "true"),
            )
            assert statuses == ["Accepted", "Rejected", "Rejected", "UnknownComponent", "UnknownVariable"]
            assert await _get(rig, "SampledDataCtrlr", "TxUpdatedInterval") == "15"
            assert _adapter(rig).sample_interval_s() == 15.0
            saved = json.loads((tmp_path / "data" / "ocpp-device-model.json").read_text())
            assert {"variable": "TxUpdatedInterval", "value": "15"}.items() <= saved["values"][0].items()
            # B06: more entries than DeviceDataCtrlr.ItemsPerMessage[GetVariables] is a CALLERROR.
            limit = int(await _get(rig, "DeviceDataCtrlr", "ItemsPerMessage", "GetVariables") or 0)
            many = [_variable("AuthCtrlr", "Enabled")] * (limit + 1)
            with pytest.raises(CsmsCallError) as refused:
                await rig.call("GetVariables", {"getVariableData": many})
            assert refused.value.code == "OccurenceConstraintViolation"

    asyncio.run(scenario())


#: Vendor variables for a model with a reboot-required setting and a report longer than one message.
_VENDOR = [
    VariableSpec(
        "VendorCtrlr",
        "Mode",
        "OptionList",
        (AttributeSpec("Actual", "ReadWrite", "eco"),),
        values_list=("eco", "fast"),
        reboot_required=True,
    ),
    *(
        VariableSpec("VendorCtrlr", f"Slot{i}", "integer", (AttributeSpec("Actual", "ReadOnly", str(i)),))
        for i in range(150)
    ),
]


def _vendor_model(rig: StationRig) -> None:
    _adapter(rig).device_model = DeviceModel(None, extra_variables=_VENDOR)


@pytest.mark.timeout(60)
def test_reboot_required_variable_and_base_report_in_chunks(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, protocol=V201, before_start=_vendor_model) as rig:
            assert await _set(rig, _variable("VendorCtrlr", "Mode", "fast")) == ["RebootRequired"]
            assert await _get(rig, "VendorCtrlr", "Mode") == "fast"
            answer = await rig.call("GetBaseReport", {"requestId": 17, "reportBase": "FullInventory"})
            assert answer["status"] == "Accepted"
            await rig.advance(1.0)
            reports = _payloads(rig, "NotifyReport")
            assert len(reports) >= 2  # more variables than ItemsPerMessage[GetReport]
            assert [r["seqNo"] for r in reports] == list(range(len(reports)))
            assert [r.get("tbc", False) for r in reports] == [True] * (len(reports) - 1) + [False]
            assert {r["requestId"] for r in reports} == {17}
            assert all(len(r["reportData"]) <= 100 for r in reports)
            entries = [entry for r in reports for entry in r["reportData"]]
            assert len(entries) == len(_adapter(rig).device_model.base_report("FullInventory"))
            [mode] = [e for e in entries if e["variable"]["name"] == "Mode"]
            assert mode["variableAttribute"][0]["value"] == "fast"
            assert mode["variableCharacteristics"]["valuesList"] == "eco,fast"

    asyncio.run(scenario())


# ====================================================================================== E Transactions
@pytest.mark.timeout(60)
def test_local_transaction_started_updated_and_ended_on_unplug(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, protocol=V201) as rig:
            await _charge(rig)
            [authorize] = _payloads(rig, "Authorize")
            assert authorize == {"idToken": {"idToken": "TAG1", "type": "ISO14443"}}
            await rig.advance(130.0)  # TxUpdatedInterval is 60 s
            await rig.unplug()
            await rig.advance(2.0)
            events = _events(rig)
            assert [e["seqNo"] for e in events] == list(range(len(events)))
            assert len({e["transactionInfo"]["transactionId"] for e in events}) == 1
            started, ended = events[0], events[-1]
            assert (started["eventType"], started["triggerReason"]) == ("Started", "Authorized")
            assert started["idToken"] == {"idToken": "TAG1", "type": "ISO14443"}
            assert started["evse"] == {"id": 1, "connectorId": 1}
            assert started["meterValue"][0]["sampledValue"][0]["context"] == "Transaction.Begin"
            updated = [e for e in events if e["eventType"] == "Updated"]
            assert "Charging" in [e["transactionInfo"]["chargingState"] for e in updated]
            periodic = [e for e in updated if e["triggerReason"] == "MeterValuePeriodic"]
            assert len(periodic) == 2
            registers = [
                s["value"]
                for e in periodic
                for s in e["meterValue"][0]["sampledValue"]
                if s["measurand"] == "Energy.Active.Import.Register"
            ]
            assert registers == sorted(registers) and registers[-1] > 0
            assert ended["eventType"] == "Ended"
            assert ended["triggerReason"] == "EVCommunicationLost"
            assert ended["transactionInfo"]["stoppedReason"] == "EVDisconnected"
            assert ended["meterValue"][0]["sampledValue"][0]["context"] == "Transaction.End"
            assert not any(e.get("offline") for e in events)
            [record] = rig.csms.transactions.values()
            assert not record["active"] and record["energy_wh"] > 0
            assert rig.station.transaction_of(1) is None

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_free_charging_starts_with_no_authorization_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, protocol=V201, free_charging=True) as rig:
            await _charge(rig, tag=None)
            [started] = _events(rig)[:1]
            assert started["triggerReason"] == "CablePluggedIn"
            assert started["idToken"] == {"idToken": "", "type": "NoAuthorization"}
            assert not rig.calls("Authorize")

    asyncio.run(scenario())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("authorize_first", [False, True])
def test_request_start_and_stop_transaction(tmp_path: Path, authorize_first: bool) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, protocol=V201) as rig:
            assert await _set(rig, _variable("AuthCtrlr", "AuthorizeRemoteStart", str(authorize_first).lower())) == [
                "Accepted"
            ]
            await rig.plug("B")
            await rig.advance(1.0)
            request = {"idToken": {"idToken": "APP-42", "type": "Central"}, "remoteStartId": 42, "evseId": 1}
            assert (await rig.call("RequestStartTransaction", request))["status"] == "Accepted"
            await rig.advance(2.0)
            authorizes = _payloads(rig, "Authorize")
            assert authorizes == ([{"idToken": {"idToken": "APP-42", "type": "Central"}}] if authorize_first else [])
            [started] = _events(rig)
            assert (started["triggerReason"], started["transactionInfo"]["remoteStartId"]) == ("RemoteStart", 42)
            assert started["idToken"] == {"idToken": "APP-42", "type": "Central"}
            status = await rig.call("GetTransactionStatus", {"transactionId": _transaction_id(rig)})
            assert status == {"ongoingIndicator": True, "messagesInQueue": False}
            unknown = await rig.call("RequestStopTransaction", {"transactionId": "not-a-transaction"})
            assert unknown["status"] == "Rejected"  # F03.FR.08
            stop = await rig.call("RequestStopTransaction", {"transactionId": _transaction_id(rig)})
            assert stop["status"] == "Accepted"
            await rig.advance(2.0)
            ended = _events(rig)[-1]
            assert (ended["eventType"], ended["triggerReason"]) == ("Ended", "RemoteStop")
            assert ended["transactionInfo"]["stoppedReason"] == "Remote"
            # No second transaction on a busy EVSE... and none on one that does not exist.
            again = await rig.call("RequestStartTransaction", {**request, "remoteStartId": 43, "evseId": 2})
            assert again["status"] == "Rejected"

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_offline_events_are_queued_and_delivered_in_order_without_gaps(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, protocol=V201) as rig:
            await _charge(rig)
            await rig.advance(65.0)
            await rig.outage()
            await rig.advance(3.0)
            assert not rig.station.online
            sent_before = len(_events(rig))
            await rig.unplug()
            await rig.advance(3.0)
            # A second session while offline: TAG1 is in the authorisation cache (C12 LocalAuthorizeOffline).
            await _charge(rig)
            await rig.unplug()
            await rig.advance(3.0)
            assert len(_events(rig)) == sent_before, "nothing reaches a CSMS that cannot be reached"
            rig.restore()
            await rig.advance(30.0)
            assert rig.station.online
            first, second = rig.csms.transactions.values()
            for record in (first, second):
                seq_nos = [e["seqNo"] for e in record["events"]]
                assert seq_nos == list(range(len(seq_nos))), record["events"]
                assert not record["active"]
            assert first["events"][-1]["eventType"] == "Ended" and first["events"][-1]["offline"] is True
            assert not any(e["offline"] for e in first["events"][:-1])
            assert first["stop_reason"] == "EVDisconnected"
            assert all(e["offline"] for e in second["events"])
            assert (second["events"][0]["eventType"], second["events"][-1]["eventType"]) == ("Started", "Ended")
            status = await rig.call("GetTransactionStatus", {"transactionId": second["transaction_id"]})
            assert status == {"ongoingIndicator": False, "messagesInQueue": False}  # E14
            # Delivered in the order they happened: the first transaction's end before the second's start.
            order = [(e["transactionInfo"]["transactionId"], e["seqNo"]) for e in _events(rig)]
            assert order.index((first["transaction_id"], len(first["events"]) - 1)) < order.index(
                (second["transaction_id"], 0)
            )

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_invalid_id_in_the_started_answer_stops_the_transaction(tmp_path: Path) -> None:
    async def scenario() -> None:
        policy = CsmsPolicy(blocked_ids={"CARD9"})
        async with station_rig(tmp_path, protocol=V201, policy=policy) as rig:
            assert await _set(rig, _variable("AuthCtrlr", "LocalPreAuthorize", "true")) == ["Accepted"]
            entry = {"idToken": {"idToken": "CARD9", "type": "ISO14443"}, "idTokenInfo": {"status": "Accepted"}}
            sent = await rig.call(
                "SendLocalList", {"versionNumber": 3, "updateType": "Full", "localAuthorizationList": [entry]}
            )
            assert sent["status"] == "Accepted"
            assert (await rig.call("GetLocalListVersion", {}))["versionNumber"] == 3
            assert await _get(rig, "LocalAuthListCtrlr", "Entries") == "1"
            await rig.plug("B")
            await rig.advance(1.0)
            # The local list accepts it at once (C13 LocalPreAuthorize), without asking the CSMS.
            assert await rig.run(rig.station.present_id(1, "CARD9")) == "Accepted"
            await rig.advance(3.0)
            assert not rig.calls("Authorize")
            assert rig.station.transaction_of(1) is None
            # E05 StopTxOnInvalidId: the CSMS says Blocked in the Started answer.
            ended = _events(rig)[-1]
            assert ended["eventType"] == "Ended"
            assert (ended["triggerReason"], ended["transactionInfo"]["stoppedReason"]) == (
                "Deauthorized",
                "DeAuthorized",
            )
            assert (await rig.call("ClearCache", {}))["status"] == "Accepted"

    asyncio.run(scenario())


# ========================================================================= F remote control, G availability
@pytest.mark.timeout(60)
def test_trigger_message(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, protocol=V201) as rig:
            cases: list[tuple[dict[str, Any], str]] = [
                ({"requestedMessage": "StatusNotification", "evse": {"id": 1, "connectorId": 1}}, "Accepted"),
                ({"requestedMessage": "StatusNotification", "evse": {"id": 1}}, "Rejected"),  # F06.FR.12
                ({"requestedMessage": "StatusNotification", "evse": {"id": 5, "connectorId": 1}}, "Rejected"),
                ({"requestedMessage": "Heartbeat"}, "Accepted"),
                ({"requestedMessage": "MeterValues", "evse": {"id": 1}}, "Accepted"),
                ({"requestedMessage": "TransactionEvent"}, "Rejected"),  # no transaction
                ({"requestedMessage": "LogStatusNotification"}, "NotImplemented"),
            ]
            for request, expected in cases:
                start = rig.now
                assert (await rig.call("TriggerMessage", request))["status"] == expected, request
                await rig.advance(1.0)
                if request == cases[0][0]:
                    # Sent although nothing changed (F06).
                    assert _connector_statuses(rig, since=start) == ["Available"]
            assert len(rig.calls("Heartbeat")) == 1
            [meter] = _payloads(rig, "MeterValues")
            assert meter["evseId"] == 1
            assert meter["meterValue"][0]["sampledValue"][0]["context"] == "Trigger"
            await _charge(rig)
            start = rig.now
            assert (await rig.call("TriggerMessage", {"requestedMessage": "TransactionEvent"}))["status"] == "Accepted"
            await rig.advance(1.0)
            [triggered] = _events(rig, since=start)
            assert (triggered["eventType"], triggered["triggerReason"]) == ("Updated", "Trigger")

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_unlock_connector(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, protocol=V201) as rig:
            assert (await rig.call("UnlockConnector", {"evseId": 3, "connectorId": 1}))["status"] == "UnknownConnector"
            assert (await rig.call("UnlockConnector", {"evseId": 1, "connectorId": 2}))["status"] == "UnknownConnector"
            assert (await rig.call("UnlockConnector", {"evseId": 1, "connectorId": 1}))["status"] == "Unlocked"
            await _charge(rig)
            busy = await rig.call("UnlockConnector", {"evseId": 1, "connectorId": 1})
            assert busy["status"] == "OngoingAuthorizedTransaction"  # F05.FR.02
            assert rig.station.transaction_of(1) is not None

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_change_availability(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, protocol=V201) as rig:
            answer = await rig.call("ChangeAvailability", {"operationalStatus": "Inoperative"})
            assert answer["status"] == "Accepted"
            await rig.advance(1.0)
            assert _connector_statuses(rig)[-1] == "Unavailable"
            assert await _get(rig, "EVSE", "AvailabilityState", evse=1) == "Unavailable"
            unknown = await rig.call("ChangeAvailability", {"operationalStatus": "Operative", "evse": {"id": 4}})
            assert unknown["status"] == "Rejected"
            back = await rig.call("ChangeAvailability", {"operationalStatus": "Operative", "evse": {"id": 1}})
            assert back["status"] == "Accepted"
            await rig.advance(1.0)
            assert _connector_statuses(rig)[-1] == "Available"
            await _charge(rig)
            later = await rig.call("ChangeAvailability", {"operationalStatus": "Inoperative", "evse": {"id": 1}})
            assert later["status"] == "Scheduled"  # G03: after the transaction
            await rig.unplug()
            await rig.advance(2.0)
            assert _connector_statuses(rig)[-1] == "Unavailable"

    asyncio.run(scenario())


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("kind", "expected"), [("Immediate", "Accepted"), ("OnIdle", "Scheduled")])
def test_reset_during_a_transaction(tmp_path: Path, kind: str, expected: str) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, protocol=V201) as rig:
            per_evse = await rig.call("Reset", {"type": "Immediate", "evseId": 1})
            assert per_evse["status"] == "Rejected"
            await _charge(rig)
            assert (await rig.call("Reset", {"type": kind}))["status"] == expected
            await rig.advance(5.0)
            if kind == "OnIdle":
                assert rig.resets == [] and rig.station.transaction_of(1) is not None
                await rig.unplug()
                await rig.advance(5.0)
                assert _events(rig)[-1]["transactionInfo"]["stoppedReason"] == "EVDisconnected"
            else:
                ended = _events(rig)[-1]
                assert (ended["triggerReason"], ended["transactionInfo"]["stoppedReason"]) == (
                    "ResetCommand",
                    "ImmediateReset",
                )
            assert rig.resets == [kind]

    asyncio.run(scenario())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("protocol", [V201, V21])
def test_data_transfer_reaches_a_registered_vendor_only(tmp_path: Path, protocol: str) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, protocol=protocol) as rig:
            answer = await rig.call("DataTransfer", {"vendorId": "com.example", "messageId": "hello"})
            assert answer["status"] == "UnknownVendorId"
            got: list[tuple[str | None, object]] = []

            def handler(message_id: str | None, data: object) -> tuple[str, str]:
                got.append((message_id, data))
                return ("Accepted", "") if message_id == "J3072V2X" else ("Rejected", "bad data")

            rig.station.data_transfer["org.evse-firmware"] = handler
            ok = await rig.call("DataTransfer", {"vendorId": "org.evse-firmware", "messageId": "J3072V2X", "data": "x"})
            assert ok["status"] == "Accepted" and got == [("J3072V2X", "x")]
            refused = await rig.call("DataTransfer", {"vendorId": "org.evse-firmware", "messageId": "Other"})
            assert refused["status"] == "Rejected" and refused["statusInfo"]["additionalInfo"] == "bad data"

    asyncio.run(scenario())


# ============================================================================================ H Reservation
@pytest.mark.timeout(60)
def test_reservation_is_used_by_its_token_only(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, protocol=V201) as rig:
            expiry = (datetime(2026, 3, 2, 9, 0, tzinfo=UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
            token = {"idToken": "RES1", "type": "ISO14443"}
            reserve = {"id": 5, "expiryDateTime": expiry, "idToken": token, "evseId": 1}
            assert (await rig.call("ReserveNow", reserve))["status"] == "Accepted"
            await rig.advance(1.0)
            assert _connector_statuses(rig)[-1] == "Reserved"
            assert (await rig.call("CancelReservation", {"reservationId": 99}))["status"] == "Rejected"
            await rig.plug("B")
            await rig.advance(1.0)
            assert await rig.run(rig.station.present_id(1, "OTHER")) == "Blocked"
            await _charge(rig, tag="RES1")
            [started] = _events(rig)[:1]
            assert started["reservationId"] == 5
            assert (await rig.call("CancelReservation", {"reservationId": 5}))["status"] == "Rejected"  # used up

    asyncio.run(scenario())


# ========================================================================================= K Smart charging
@pytest.mark.timeout(60)
def test_charging_profiles_limit_the_connector_and_make_the_composite_schedule(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, protocol=V201) as rig:
            # K01.FR.09: a TxProfile needs a running transaction.
            tx_profile = {**_tx_default(6.0, profile_id=8), "chargingProfilePurpose": "TxProfile", "stackLevel": 1}
            early = await rig.call(
                "SetChargingProfile", {"evseId": 1, "chargingProfile": {**tx_profile, "transactionId": "x"}}
            )
            assert early["status"] == "Rejected"
            await _charge(rig, amps=8.0)
            answer = await rig.call("SetChargingProfile", {"evseId": 1, "chargingProfile": _tx_default(10.0)})
            assert answer["status"] == "Accepted"
            await rig.advance(2.0)
            why = rig.connector.why()
            assert "set by ocpp" in why and "10 A (charging profile(s) 7)" in why, why
            composite = await rig.call("GetCompositeSchedule", {"evseId": 1, "duration": 600})
            assert composite["status"] == "Accepted"
            schedule = composite["schedule"]
            assert (schedule["evseId"], schedule["duration"], schedule["chargingRateUnit"]) == (1, 600, "A")
            assert schedule["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 10.0}]
            ratings = rig.connector.hal.config.ratings
            watts = await rig.call("GetCompositeSchedule", {"evseId": 1, "duration": 60, "chargingRateUnit": "W"})
            expected_w = 10.0 * float(ratings.nominal_voltage_v or 230.0) * ratings.phases
            assert watts["schedule"]["chargingSchedulePeriod"][0]["limit"] == pytest.approx(expected_w, abs=0.1)
            week = await rig.call("GetCompositeSchedule", {"evseId": 0, "duration": 30 * 86_400})
            assert week["schedule"]["duration"] == 7 * 86_400  # capped
            assert (await rig.call("GetCompositeSchedule", {"evseId": 9, "duration": 60}))["status"] == "Rejected"
            # The running transaction's TxProfile: only with its own transactionId (K01.FR.33).
            wrong = await rig.call(
                "SetChargingProfile", {"evseId": 1, "chargingProfile": {**tx_profile, "transactionId": "x"}}
            )
            assert wrong["status"] == "Rejected"
            right = {**tx_profile, "transactionId": _transaction_id(rig)}
            assert (await rig.call("SetChargingProfile", {"evseId": 1, "chargingProfile": right}))[
                "status"
            ] == "Accepted"
            await rig.advance(2.0)
            assert "6 A (charging profile(s) 8)" in rig.connector.why()
            listed = await rig.call("GetChargingProfiles", {"requestId": 4, "chargingProfile": {}})
            assert listed["status"] == "Accepted"
            await rig.advance(1.0)
            [report] = _payloads(rig, "ReportChargingProfiles")
            assert (report["requestId"], report["evseId"], report["chargingLimitSource"]) == (4, 1, "CSO")
            assert sorted(p["id"] for p in report["chargingProfile"]) == [7, 8]
            none = await rig.call("GetChargingProfiles", {"requestId": 5, "chargingProfile": {"stackLevel": 9}})
            assert none["status"] == "NoProfiles"
            cleared = await rig.call("ClearChargingProfile", {"chargingProfileId": 8})
            assert cleared["status"] == "Accepted"
            await rig.advance(2.0)
            assert "10 A (charging profile(s) 7)" in rig.connector.why()
            criteria = {"chargingProfileCriteria": {"chargingProfilePurpose": "TxDefaultProfile"}}
            assert (await rig.call("ClearChargingProfile", criteria))["status"] == "Accepted"
            assert (await rig.call("ClearChargingProfile", criteria))["status"] == "Unknown"
            await rig.advance(2.0)
            assert "charging profile" not in rig.connector.why()

    asyncio.run(scenario())


# ================================================================================================ OCPP 2.1
@pytest.mark.timeout(60)
def test_ocpp21_boot_and_a_transaction(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, protocol=V21) as rig:
            assert rig.station.registration == "Accepted"
            assert rig.station.adapter.version == "2.1"
            await _charge(rig)
            await rig.advance(65.0)
            await rig.unplug()
            await rig.advance(2.0)
            [record] = rig.csms.transactions.values()
            assert record["protocol"] == V21
            assert [e["seqNo"] for e in record["events"]] == list(range(len(record["events"])))
            assert record["stop_reason"] == "EVDisconnected" and record["energy_wh"] > 0
            der = {"isDefault": False, "controlId": "c1", "controlType": "FixedPFAbsorb"}
            assert (await rig.call("SetDERControl", der))["status"] == "NotSupported"
            with pytest.raises(CsmsCallError) as unhandled:
                await rig.call("GetTariffs", {"evseId": 1})
            assert unhandled.value.code == "NotImplemented"
            # 2.1 spells this error code correctly (2.0.1: OccurenceConstraintViolation).
            with pytest.raises(CsmsCallError) as too_many:
                await rig.call("GetVariables", {"getVariableData": [_variable("AuthCtrlr", "Enabled")] * 51})
            assert too_many.value.code == "OccurrenceConstraintViolation"

    asyncio.run(scenario())


# =========================================================================================== pure mappings
@pytest.mark.parametrize(
    ("status16", "status201", "in_transaction", "expected"),
    [
        ("Charging", "Occupied", True, "Charging"),
        ("SuspendedEV", "Occupied", True, "SuspendedEV"),
        ("SuspendedEVSE", "Occupied", True, "SuspendedEVSE"),
        ("Faulted", "Faulted", True, "SuspendedEVSE"),
        ("Faulted", "Faulted", False, "Idle"),
        ("Preparing", "Occupied", False, "EVConnected"),
        ("Finishing", "Occupied", False, "EVConnected"),
        ("Preparing", "Available", False, "Idle"),  # authorised, no EV yet
        ("Available", "Available", False, "Idle"),
    ],
)
def test_charging_state(status16: str, status201: str, in_transaction: bool, expected: str) -> None:
    status = Status(status16, status201, "NoError", None)  # type: ignore[arg-type]
    assert charging_state(status, in_transaction) == expected


@pytest.mark.parametrize(
    ("reason", "stopped", "trigger"),
    [
        ("Local", "Local", "StopAuthorized"),
        ("Remote", "Remote", "RemoteStop"),
        ("EVDisconnected", "EVDisconnected", "EVCommunicationLost"),
        ("DeAuthorized", "DeAuthorized", "Deauthorized"),
        ("SoftReset", "ImmediateReset", "ResetCommand"),
        ("HardReset", "ImmediateReset", "ResetCommand"),
        ("UnlockCommand", "Other", "UnlockCommand"),
        ("PowerLoss", "PowerLoss", "AbnormalCondition"),
        ("Whatever", "Other", "AbnormalCondition"),
    ],
)
def test_stop_reason(reason: str, stopped: str, trigger: str) -> None:
    assert stop_reason(reason) == (stopped, trigger)


_T0 = datetime(2026, 1, 1, tzinfo=UTC)


@st.composite
def _wire_profiles(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    purpose = draw(st.sampled_from(["ChargingStationMaxProfile", "TxDefaultProfile", "TxProfile"]))
    evse = 0 if purpose == "ChargingStationMaxProfile" else draw(st.integers(1, 4))
    kinds = (
        ["Absolute", "Recurring"] if purpose == "ChargingStationMaxProfile" else ["Absolute", "Recurring", "Relative"]
    )
    kind = draw(st.sampled_from(kinds))
    starts = sorted(draw(st.sets(st.integers(1, 86_399), max_size=4)))
    periods = []
    for start in [0, *starts]:
        period: dict[str, Any] = {"startPeriod": start, "limit": draw(st.integers(0, 800)) / 10}
        phases = draw(st.none() | st.integers(1, 3))
        if phases is not None:
            period["numberPhases"] = phases
        periods.append(period)
    schedule: dict[str, Any] = {
        "id": draw(st.integers(0, 99)),
        "chargingRateUnit": draw(st.sampled_from(["A", "W"])),
        "chargingSchedulePeriod": periods,
    }
    moment = st.integers(0, 10**7).map(lambda s: (_T0 + timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    if kind != "Relative":
        schedule["startSchedule"] = draw(moment)
    duration = draw(st.none() | st.integers(0, 10**6))
    if duration is not None:
        schedule["duration"] = duration
    wire: dict[str, Any] = {
        "id": draw(st.integers(0, 10**6)),
        "stackLevel": draw(st.integers(0, 10)),
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": [schedule],
    }
    if kind == "Recurring":
        wire["recurrencyKind"] = draw(st.sampled_from(["Daily", "Weekly"]))
    if purpose == "TxProfile":
        wire["transactionId"] = draw(st.text("abcdef0123456789", min_size=1, max_size=36))
    if draw(st.booleans()):
        wire["validTo"] = draw(moment)
    return wire, evse


@settings(max_examples=200, deadline=None)
@given(_wire_profiles())
def test_reported_profiles_parse_back_to_the_installed_profile(case: tuple[dict[str, Any], int]) -> None:
    wire, evse = case
    profile = profile_from_v201(wire, evse)
    assert profile_from_v201(profile_to_v201(profile), evse) == profile


@pytest.mark.timeout(60)
def test_update_firmware_and_get_log_report_their_steps_with_the_request_id(tmp_path: Path) -> None:
    uploads: list[str] = []

    def setup(rig: StationRig) -> None:
        async def install(path: Path) -> bool:
            return path.read_bytes() == b"image"

        rig.station.maintenance.install_hook = install
        rig.station.maintenance.fetch = lambda url, target: target.write_bytes(b"image")
        rig.station.maintenance.upload = lambda url, name, content: uploads.append(name)

    async def pump(rig: StationRig, action: str, count: int) -> list[dict[str, Any]]:
        for _ in range(200):
            await rig.advance(0.5)
            if len(_payloads(rig, action)) >= count:
                break
            await asyncio.sleep(0.001)  # transfers run in a worker thread
        return _payloads(rig, action)

    async def scenario() -> None:
        async with station_rig(tmp_path, protocol=V201, before_start=setup) as rig:
            firmware = {"location": "https://127.0.0.1/fw.bin", "retrieveDateTime": "2020-01-01T00:00:00Z"}
            answer = await rig.call("UpdateFirmware", {"requestId": 42, "firmware": firmware})
            assert answer["status"] == "Accepted"
            statuses = await pump(rig, "FirmwareStatusNotification", 4)
            assert [(p["status"], p["requestId"]) for p in statuses] == [
                ("Downloading", 42), ("Downloaded", 42), ("Installing", 42), ("Installed", 42)
            ]  # fmt: skip
            bad = await rig.call("UpdateFirmware", {"requestId": 43, "firmware": {**firmware, "location": "file:///x"}})
            assert bad["status"] == "Rejected"

            log_answer = await rig.call(
                "GetLog", {"requestId": 7, "logType": "DiagnosticsLog", "log": {"remoteLocation": "ftp://127.0.0.1/l"}}
            )
            assert log_answer["status"] == "Accepted"
            statuses = await pump(rig, "LogStatusNotification", 2)
            assert [(p["status"], p["requestId"]) for p in statuses] == [("Uploading", 7), ("Uploaded", 7)]
            assert uploads == [log_answer["filename"]]

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_transaction_resumed_after_a_restart_never_repeats_a_seqno(tmp_path: Path) -> None:
    """Power loss mid-transaction with every event delivered: after the restart the session resumes (the
    journal) and its TransactionEvents continue the seqNo instead of starting at 0 again."""

    async def scenario() -> None:
        async with station_rig(tmp_path, protocol=V201) as rig:
            await _charge(rig)
            await rig.advance(30.0)
            before = [p for p in _payloads(rig, "TransactionEvent")]
            assert before and len(rig.station.outbox) == 0, "everything delivered before the power loss"
            last_seq = max(p["seqNo"] for p in before)
            tx_id = before[0]["transactionInfo"]["transactionId"]
        async with station_rig(tmp_path, protocol=V201, ev_at_boot="C") as rig:
            await rig.draw(16.0)
            await rig.advance(90.0)  # past a TxUpdatedInterval
            after = [p for p in _payloads(rig, "TransactionEvent") if p["transactionInfo"]["transactionId"] == tx_id]
            assert after, "the resumed transaction keeps reporting under its id"
            assert min(p["seqNo"] for p in after) == last_seq + 1

    asyncio.run(scenario())
