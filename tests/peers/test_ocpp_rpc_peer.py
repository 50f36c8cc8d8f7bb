"""The strict ocpp-rpc CSMS harness: it boots stations of every protocol, relays CSMS-initiated calls, answers
schema-valid defaults, rejects (and reports) schema violations in both directions, and restarts on its port.

Stations here are throwaway clients: the `ocpp` package's ChargePoint where a well-formed peer is wanted, raw
frames over `websockets` where the test must send what `ocpp` would refuse to send."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest
import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v21 import ChargePoint as ChargePoint21
from ocpp.v21 import call as call21
from ocpp.v21 import datatypes as types21
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201 import datatypes as types201
from ocpp.v201.enums import Action as Action201
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from tests.peers.ocpp_csms import OcppPeerCallError, OcppPeerError, OcppRpcCsms

TEST_BUDGET_S = 30.0
NOW = "2024-01-01T10:00:00Z"


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(body(), TEST_BUDGET_S)

    asyncio.run(bounded())


@contextlib.asynccontextmanager
async def connect(csms: OcppRpcCsms, identity: str, protocol: str) -> AsyncIterator[ClientConnection]:
    async with websockets.connect(
        f"{csms.url}/{identity}", subprotocols=[Subprotocol(protocol)], open_timeout=5, close_timeout=2
    ) as ws:
        yield ws


@contextlib.asynccontextmanager
async def serving(station: Any) -> AsyncIterator[Any]:
    """Run an `ocpp` ChargePoint's receive loop for the duration of the block."""
    task = asyncio.create_task(station.start())
    try:
        yield station
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
            await task


_frame_ids = itertools.count(1)


async def raw_call(ws: ClientConnection, action: str, payload: dict[str, Any]) -> list[Any]:
    """Send a CALL frame exactly as given (no client-side validation) and return the answer frame."""
    message_id = f"raw-{next(_frame_ids)}"
    await ws.send(json.dumps([2, message_id, action, payload]))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if frame[1] == message_id:
            return list(frame)


def assert_clean(csms: OcppRpcCsms) -> None:
    assert csms.strict_errors() == []
    assert [e for e in csms.events if e["ev"] == "invalid_output"] == []


class Station16(ChargePoint16):
    remote_starts: list[str]

    @on(Action16.remote_start_transaction)
    def on_remote_start(self, id_tag: str, **_: Any) -> result16.RemoteStartTransaction:
        self.remote_starts.append(id_tag)
        return result16.RemoteStartTransaction(status="Accepted")


class Station201(ChargePoint201):
    remote_starts: list[dict[str, Any]]

    @on(Action201.request_start_transaction)
    def on_request_start(self, id_token: dict[str, Any], remote_start_id: int, **_: Any) -> Any:
        self.remote_starts.append({"id_token": id_token, "remote_start_id": remote_start_id})
        return result201.RequestStartTransaction(status="Accepted")


@pytest.mark.timeout(60)
def test_v16_boot_accepted_and_remote_start_reaches_station() -> None:
    async def body() -> None:
        async with await OcppRpcCsms.start(interval=42) as csms, connect(csms, "CP1", "ocpp1.6") as ws:
            station = Station16("CP1", ws, response_timeout=5)
            station.remote_starts = []
            async with serving(station):
                boot = await station.call(call16.BootNotification(charge_point_model="M", charge_point_vendor="V"))
                assert (boot.status, boot.interval) == ("Accepted", 42)
                datetime.fromisoformat(boot.current_time)  # an ISO 8601 timestamp the station can set its clock by

                result = await csms.call("CP1", "RemoteStartTransaction", {"idTag": "TAG1", "connectorId": 1})

                assert result == {"status": "Accepted"}
                assert station.remote_starts == ["TAG1"]
            connected = await csms.wait_for(lambda e: e["ev"] == "connected")
            assert (connected["identity"], connected["protocol"]) == ("CP1", "ocpp1.6")
            rx = await csms.wait_for(lambda e: e["ev"] == "call" and e["dir"] == "rx")
            assert (rx["action"], rx["payload"]) == (
                "BootNotification",
                {"chargePointModel": "M", "chargePointVendor": "V"},
            )
            assert_clean(csms)

    run(body)


@pytest.mark.timeout(60)
def test_v201_boot_accepted_and_request_start_reaches_station() -> None:
    async def body() -> None:
        async with await OcppRpcCsms.start() as csms, connect(csms, "CP1", "ocpp2.0.1") as ws:
            station = Station201("CP1", ws, response_timeout=5)
            station.remote_starts = []
            async with serving(station):
                boot = await station.call(
                    call201.BootNotification(
                        charging_station=types201.ChargingStationType(vendor_name="V", model="M"), reason="PowerUp"
                    )
                )
                assert (boot.status, boot.interval) == ("Accepted", 300)

                result = await csms.call(
                    "CP1",
                    "RequestStartTransaction",
                    {"idToken": {"idToken": "TAG1", "type": "ISO14443"}, "remoteStartId": 7},
                )

                assert result == {"status": "Accepted"}
                assert station.remote_starts == [
                    {"id_token": {"id_token": "TAG1", "type": "ISO14443"}, "remote_start_id": 7}
                ]
            assert_clean(csms)

    run(body)


@pytest.mark.timeout(60)
def test_v21_boot_accepted_through_rekeyed_schemas() -> None:
    # Without the re-keyed 2.1 schemas ocpp-rpc 2.2.1 answers every 2.1 CALL with ProtocolError.
    async def body() -> None:
        async with await OcppRpcCsms.start() as csms, connect(csms, "CP21", "ocpp2.1") as ws:
            station = ChargePoint21("CP21", ws, response_timeout=5)
            async with serving(station):
                boot = await station.call(
                    call21.BootNotification(
                        charging_station=types21.ChargingStationType(model="M", vendor_name="V"), reason="PowerUp"
                    )
                )
                assert boot.status == "Accepted"
                heartbeat = await station.call(call21.Heartbeat())
                datetime.fromisoformat(heartbeat.current_time)
            assert_clean(csms)

    run(body)


# (protocol, action, payload the station must get rejected, the same payload made valid)
STRICT_REJECTIONS = [
    (
        "ocpp1.6",
        "StatusNotification",
        {"connectorId": 1, "errorCode": "NoError", "status": "Available", "timestamp": "2024-01-01 10:00"},
        {"connectorId": 1, "errorCode": "NoError", "status": "Available", "timestamp": NOW},
    ),
    (
        "ocpp2.0.1",
        "StatusNotification",
        {"timestamp": "01/01/2024", "connectorStatus": "Available", "evseId": 1, "connectorId": 1},
        {"timestamp": NOW, "connectorStatus": "Available", "evseId": 1, "connectorId": 1},
    ),
    (
        "ocpp2.1",
        "BootNotification",
        {"chargingStation": {"model": "M", "vendorName": "V"}, "reason": "Bored"},
        {"chargingStation": {"model": "M", "vendorName": "V"}, "reason": "PowerUp"},
    ),
    (
        "ocpp1.6",
        "StartTransaction",
        {"connectorId": "1", "idTag": "T", "meterStart": 0, "timestamp": NOW},
        {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": NOW},
    ),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("protocol", "action", "bad", "good"), STRICT_REJECTIONS)
def test_strict_mode_rejects_what_the_schema_forbids(
    protocol: str, action: str, bad: dict[str, Any], good: dict[str, Any]
) -> None:
    async def body() -> None:
        async with await OcppRpcCsms.start() as csms, connect(csms, "CP1", protocol) as ws:
            rejected = await raw_call(ws, action, bad)
            accepted = await raw_call(ws, action, good)

            assert rejected[0] == 4, rejected  # CALLERROR
            assert rejected[2] in {"FormationViolation", "FormatViolation", "TypeConstraintViolation"}, rejected
            assert accepted[0] == 3, accepted  # the fix alone turns it into a CALLRESULT
            [strict] = csms.strict_errors()
            assert (strict["dir"], strict["kind"], strict["action"], strict["payload"]) == ("rx", "call", action, bad)

    run(body)


@pytest.mark.timeout(60)
def test_strict_mode_checks_csms_calls_and_station_results() -> None:
    async def body() -> None:
        async with await OcppRpcCsms.start() as csms, connect(csms, "CP1", "ocpp1.6") as ws:
            with pytest.raises(OcppPeerCallError) as outbound:
                await csms.call("CP1", "Reset", {"type": "Sideways"})
            assert outbound.value.code == "FormatViolation"

            pending = asyncio.create_task(csms.call("CP1", "Reset", {"type": "Soft"}))
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert frame[:3] == [2, frame[1], "Reset"]
            await ws.send(json.dumps([3, frame[1], {"status": "Maybe"}]))
            with pytest.raises(OcppPeerCallError):
                await pending

            assert [(e["dir"], e["kind"], e["action"]) for e in csms.strict_errors()] == [
                ("tx", "call", "Reset"),
                ("rx", "result", "Reset"),
            ]

    run(body)


# (protocol, action, payload, expected answer; a set = only the answer's keys are checked)
DEFAULT_ANSWERS: list[tuple[str, str, dict[str, Any], dict[str, Any] | set[str]]] = [
    ("ocpp1.6", "Heartbeat", {}, {"currentTime"}),
    ("ocpp1.6", "Authorize", {"idTag": "OK1"}, {"idTagInfo": {"status": "Accepted"}}),
    ("ocpp1.6", "Authorize", {"idTag": "STOLEN"}, {"idTagInfo": {"status": "Blocked"}}),
    ("ocpp1.6", "Authorize", {"idTag": "NOBODY"}, {"idTagInfo": {"status": "Invalid"}}),
    (
        "ocpp1.6",
        "StartTransaction",
        {"connectorId": 1, "idTag": "OK1", "meterStart": 0, "timestamp": NOW},
        {"transactionId": 1, "idTagInfo": {"status": "Accepted"}},
    ),
    (
        "ocpp1.6",
        "StartTransaction",
        {"connectorId": 2, "idTag": "STOLEN", "meterStart": 0, "timestamp": NOW},
        {"transactionId": 2, "idTagInfo": {"status": "Blocked"}},
    ),
    ("ocpp1.6", "StopTransaction", {"meterStop": 10, "timestamp": NOW, "transactionId": 1}, {}),
    (
        "ocpp1.6",
        "MeterValues",
        {"connectorId": 1, "meterValue": [{"timestamp": NOW, "sampledValue": [{"value": "1"}]}]},
        {},
    ),
    ("ocpp1.6", "DataTransfer", {"vendorId": "org.example"}, {"status": "Accepted"}),
    ("ocpp1.6", "FirmwareStatusNotification", {"status": "Idle"}, {}),
    ("ocpp1.6", "DiagnosticsStatusNotification", {"status": "Idle"}, {}),
    ("ocpp1.6", "SecurityEventNotification", {"type": "StartupOfTheDevice", "timestamp": NOW}, {}),
    ("ocpp1.6", "LogStatusNotification", {"status": "Idle"}, {}),
    ("ocpp2.0.1", "Heartbeat", {}, {"currentTime"}),
    (
        "ocpp2.0.1",
        "Authorize",
        {"idToken": {"idToken": "STOLEN", "type": "ISO14443"}},
        {"idTokenInfo": {"status": "Blocked"}},
    ),
    (
        "ocpp2.0.1",
        "TransactionEvent",
        {
            "eventType": "Started",
            "timestamp": NOW,
            "triggerReason": "Authorized",
            "seqNo": 0,
            "transactionInfo": {"transactionId": "T1"},
            "idToken": {"idToken": "OK1", "type": "ISO14443"},
        },
        {"idTokenInfo": {"status": "Accepted"}},
    ),
    (
        "ocpp2.0.1",
        "TransactionEvent",
        {
            "eventType": "Updated",
            "timestamp": NOW,
            "triggerReason": "MeterValuePeriodic",
            "seqNo": 1,
            "transactionInfo": {"transactionId": "T1"},
        },
        {},
    ),
    ("ocpp2.0.1", "NotifyReport", {"requestId": 1, "generatedAt": NOW, "seqNo": 0}, {}),
    (
        "ocpp2.0.1",
        "NotifyEvent",
        {
            "generatedAt": NOW,
            "seqNo": 0,
            "eventData": [
                {
                    "eventId": 1,
                    "timestamp": NOW,
                    "trigger": "Alerting",
                    "actualValue": "1",
                    "eventNotificationType": "HardWiredMonitor",
                    "component": {"name": "Connector"},
                    "variable": {"name": "Problem"},
                }
            ],
        },
        {},
    ),
    ("ocpp2.0.1", "FirmwareStatusNotification", {"status": "Idle"}, {}),
    ("ocpp2.0.1", "LogStatusNotification", {"status": "Idle"}, {}),
    ("ocpp2.0.1", "SecurityEventNotification", {"type": "StartupOfTheDevice", "timestamp": NOW}, {}),
    ("ocpp2.0.1", "DataTransfer", {"vendorId": "org.example"}, {"status": "Accepted"}),
    (
        "ocpp2.1",
        "Authorize",
        {"idToken": {"idToken": "NOBODY", "type": "ISO14443"}},
        {"idTokenInfo": {"status": "Invalid"}},
    ),
]


@pytest.mark.timeout(60)
def test_default_answers_are_schema_valid_and_follow_settings() -> None:
    async def body() -> None:
        async with await OcppRpcCsms.start() as csms:
            await csms.set(blocked=["STOLEN"], invalid=["NOBODY"])
            async with (
                connect(csms, "CP16", "ocpp1.6") as ws16,
                connect(csms, "CP201", "ocpp2.0.1") as ws201,
                connect(csms, "CP21", "ocpp2.1") as ws21,
            ):
                stations = {"ocpp1.6": ws16, "ocpp2.0.1": ws201, "ocpp2.1": ws21}
                for protocol, action, payload, expected in DEFAULT_ANSWERS:
                    frame = await raw_call(stations[protocol], action, payload)
                    assert frame[0] == 3, (protocol, action, frame)
                    answer = set(frame[2]) if isinstance(expected, set) else frame[2]
                    assert answer == expected, (protocol, action, frame)
                unknown = await raw_call(ws16, "SignCertificate", {"csr": "x"})
                assert unknown[2] == "NotImplemented"
            assert_clean(csms)

    run(body)


@pytest.mark.timeout(60)
def test_boot_status_and_interval_follow_set() -> None:
    async def body() -> None:
        async with await OcppRpcCsms.start() as csms, connect(csms, "CP1", "ocpp1.6") as ws:
            station = ChargePoint16("CP1", ws, response_timeout=5)
            boot = call16.BootNotification(charge_point_model="M", charge_point_vendor="V")
            async with serving(station):
                answers = []
                for status, interval in [("Pending", 5), ("Rejected", 7), ("Accepted", 60)]:
                    await csms.set(boot_status=status, interval=interval)
                    result = await station.call(boot)
                    answers.append((result.status, result.interval))
            assert answers == [("Pending", 5), ("Rejected", 7), ("Accepted", 60)]
            assert_clean(csms)

    run(body)


@pytest.mark.timeout(60)
def test_close_station_and_restart_on_same_port() -> None:
    async def body() -> None:
        first = await OcppRpcCsms.start()
        async with first:
            async with connect(first, "CP1", "ocpp1.6") as ws:
                await first.close_station("CP1")
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
            await first.wait_for(lambda e: e["ev"] == "disconnected" and e["identity"] == "CP1")
            async with connect(first, "CP1", "ocpp1.6") as ws:
                await first.stop()
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)

        async with await OcppRpcCsms.start(port=first.port) as second, connect(second, "CP1", "ocpp1.6") as ws:
            assert second.url == first.url
            station = ChargePoint16("CP1", ws, response_timeout=5)
            async with serving(station):
                boot = await station.call(call16.BootNotification(charge_point_model="M", charge_point_vendor="V"))
            assert boot.status == "Accepted"
            assert_clean(second)

    run(body)


@pytest.mark.timeout(60)
def test_harness_reports_misuse_clearly() -> None:
    async def body() -> None:
        async with await OcppRpcCsms.start() as csms:
            with pytest.raises(OcppPeerCallError) as absent:
                await csms.call("NOBODY", "Reset", {"type": "Soft"})
            assert absent.value.code == "NotConnected"
            with pytest.raises(OcppPeerError, match="boot_status"):
                await csms.set(boot_status="Maybe")
            with pytest.raises(OcppPeerError, match="colour"):
                await csms.set(colour="blue")
            with pytest.raises(InvalidStatus):
                async with connect(csms, "CP1", "ocpp1.5"):
                    pass
            rejected = await csms.wait_for(lambda e: e["ev"] == "rejected")
            assert rejected["identity"] == "CP1"
            with pytest.raises(TimeoutError, match="last events"):
                await csms.wait_for(lambda e: e["ev"] == "never", timeout=0.2)
        assert not csms.running
        with pytest.raises(OcppPeerError, match="exited"):
            await csms.wait_for(lambda e: e["ev"] == "never")

    run(body)


@pytest.mark.timeout(60)
def test_basic_auth_password_is_enforced_and_reported() -> None:
    # Security profile 1: HTTP Basic auth with the station identity as user name (OCPP 1.6 security whitepaper).
    async def body() -> None:
        async with await OcppRpcCsms.start() as csms:
            await csms.set(passwords={"CP1": "0123456789abcdef"})
            with pytest.raises(InvalidStatus) as refused:
                async with connect(csms, "CP1", "ocpp1.6"):
                    pass
            assert refused.value.response.status_code == 401
            url = csms.url.replace("ws://", "ws://CP1:0123456789abcdef@") + "/CP1"
            async with websockets.connect(url, subprotocols=[Subprotocol("ocpp1.6")], open_timeout=5):
                connected = await csms.wait_for(lambda e: e["ev"] == "connected")
            assert connected["password"] == "0123456789abcdef"
            assert connected["headers"]["authorization"].startswith("Basic ")

    run(body)
