"""The embedded CSMS against throwaway stations built from the ``ocpp`` package's client side: over a
real websocket on 127.0.0.1 (1.6) and over a MemoryLink on the virtual clock (2.0.1, 2.1). Boot,
authorisation policy, the transaction ledger, CSMS-initiated calls and their errors, malformed frames,
outages, and a valid answer to every message a station may send in each version."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ocpp.exceptions import PropertyConstraintViolationError
from ocpp.routing import on
from ocpp.v16 import ChargePoint as Station16
from ocpp.v16 import call as call16
from ocpp.v21 import ChargePoint as Station21
from ocpp.v21 import call as call21
from ocpp.v201 import ChargePoint as Station201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from firmware.ocpp.link import MemoryLink, memory_link_pair
from hal.clock import RealClock, VirtualClock
from hil.csms import CsmsCallError, CsmsError, CsmsEvent, CsmsPolicy, EmbeddedCsms

T = TypeVar("T")

WALL = datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
WALL_TEXT = "2025-03-04T05:06:07.890Z"
TS = "2025-03-04T05:00:00Z"


def run(factory: Callable[[], Awaitable[T]], timeout: float = 8.0) -> T:
    """Run one test body with a hard bound, so that nothing here can hang."""

    async def bounded() -> T:
        return await asyncio.wait_for(factory(), timeout)

    return asyncio.run(bounded())


def events_of(csms: EmbeddedCsms, station: str, kind: str | None = None) -> list[CsmsEvent]:
    return [e for e in csms.events if e.station == station and (kind is None or e.kind == kind)]


async def recv_json(link: MemoryLink, timeout: float = 2.0) -> Any:
    return json.loads(await asyncio.wait_for(link.recv(), timeout))


# ------------------------------------------------------------------------ throwaway stations


class Station201Under(Station201):  # type: ignore[misc]
    """A 2.0.1 station that accepts remote starts and has no connector 9."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.remote_starts: list[dict[str, Any]] = []

    @on("RequestStartTransaction")
    def on_request_start(self, id_token: dict[str, Any], remote_start_id: int, **kwargs: Any) -> Any:
        self.remote_starts.append({"id_token": id_token, "remote_start_id": remote_start_id, **kwargs})
        return result201.RequestStartTransaction(status="Accepted", transaction_id="tx-remote")

    @on("UnlockConnector")
    def on_unlock(self, evse_id: int, connector_id: int, **_: Any) -> Any:
        raise PropertyConstraintViolationError(description=f"no connector {connector_id} on EVSE {evse_id}")


async def ws_station(csms: EmbeddedCsms, station_id: str) -> tuple[ClientConnection, Station16, asyncio.Task[Any]]:
    ws = await connect(f"{csms.url}/{station_id}", subprotocols=[Subprotocol("ocpp1.6")])
    assert ws.subprotocol == "ocpp1.6"
    station = Station16(station_id, ws)
    return ws, station, asyncio.create_task(station.start())


async def stop_task(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def meter_16(wh: float, *, context: str = "Sample.Periodic", unit: str = "Wh") -> dict[str, Any]:
    sampled = {"value": f"{wh:g}", "context": context, "measurand": "Energy.Active.Import.Register", "unit": unit}
    return {"timestamp": TS, "sampledValue": [sampled]}


def meter_2x(value: float, context: str, unit: str = "Wh", multiplier: int = 0) -> dict[str, Any]:
    sampled = {"value": value, "context": context, "unitOfMeasure": {"unit": unit, "multiplier": multiplier}}
    return {"timestamp": TS, "sampledValue": [sampled]}


# ------------------------------------------------------------------- (a) 1.6 over a websocket


def test_16_over_websocket_boot_authorize_and_a_recorded_transaction() -> None:
    policy = CsmsPolicy(heartbeat_interval_s=120, blocked_ids={"STOLEN"}, accepted_ids={"GOOD", "STOLEN"})

    async def body() -> None:
        csms = EmbeddedCsms(clock=RealClock(), policy=policy, wall_clock=lambda: WALL)
        port = await csms.serve()
        assert port > 0 and csms.url == f"ws://127.0.0.1:{port}"
        ws, station, task = await ws_station(csms, "CP%7C1")  # percent-encoded identity "CP|1"
        try:
            boot = await station.call(call16.BootNotification(charge_point_model="M", charge_point_vendor="V"))
            assert (boot.status, boot.interval, boot.current_time) == ("Accepted", 120, WALL_TEXT)
            assert csms.stations() == ["CP|1"] and csms.is_connected("CP|1")

            statuses = {}
            for tag in ("GOOD", "STOLEN", "UNKNOWN"):
                answer = await station.call(call16.Authorize(id_tag=tag))
                statuses[tag] = answer.id_tag_info["status"]
            assert statuses == {"GOOD": "Accepted", "STOLEN": "Blocked", "UNKNOWN": "Invalid"}

            start = await station.call(
                call16.StartTransaction(connector_id=1, id_tag="GOOD", meter_start=10_000, timestamp=TS)
            )
            assert start.id_tag_info == {"status": "Accepted"}
            tx = str(start.transaction_id)
            second = await station.call(
                call16.StartTransaction(connector_id=2, id_tag="UNKNOWN", meter_start=0, timestamp=TS)
            )
            assert second.transaction_id == start.transaction_id + 1  # the CSMS assigns increasing ids
            assert second.id_tag_info == {"status": "Invalid"}

            await station.call(
                call16.MeterValues(connector_id=1, transaction_id=int(tx), meter_value=[meter_16(10_400)])
            )
            assert csms.transactions[tx]["energy_wh"] == 400  # running while active
            await station.call(
                call16.MeterValues(connector_id=1, transaction_id=int(tx), meter_value=[meter_16(10.9, unit="kWh")])
            )
            assert csms.transactions[tx]["energy_wh"] == pytest.approx(900)
            stop = await station.call(
                call16.StopTransaction(
                    meter_stop=11_250,
                    timestamp="2025-03-04T06:00:00Z",
                    transaction_id=int(tx),
                    id_tag="GOOD",
                    reason="EVDisconnected",
                    transaction_data=[meter_16(11_250, context="Transaction.End")],
                )
            )
            assert stop.id_tag_info == {"status": "Accepted"}
        finally:
            await ws.close()
            await stop_task(task)
            await csms.stop()

        record = csms.transactions[tx]
        assert {k: record[k] for k in ("station", "protocol", "connector_id", "id_tag", "id_tag_status")} == {
            "station": "CP|1",
            "protocol": "ocpp1.6",
            "connector_id": 1,
            "id_tag": "GOOD",
            "id_tag_status": "Accepted",
        }
        assert (record["meter_start_wh"], record["meter_stop_wh"], record["energy_wh"]) == (10_000, 11_250, 1_250)
        assert (record["started_at"], record["stopped_at"]) == (TS, "2025-03-04T06:00:00Z")
        assert record["stop_reason"] == "EVDisconnected" and record["active"] is False
        assert len(record["meter_values"]) == 3
        assert [e["eventType"] for e in record["events"]] == ["Started", "Updated", "Updated", "Ended"]

        rx_calls = [e.action for e in events_of(csms, "CP|1", "call") if e.dir == "rx"]
        assert rx_calls[:2] == ["BootNotification", "Authorize"]
        tx_results = [e for e in events_of(csms, "CP|1", "result") if e.dir == "tx"]
        assert [e.action for e in tx_results] == rx_calls  # every call answered, action known on the result
        assert tx_results[0].payload == {"currentTime": WALL_TEXT, "interval": 120, "status": "Accepted"}
        assert events_of(csms, "CP|1")[-1].kind == "disconnected"

    run(body)


def test_websocket_survives_a_malformed_frame_and_close_station_drops_it() -> None:
    async def body() -> None:
        csms = EmbeddedCsms(clock=RealClock())
        await csms.serve()
        ws, station, task = await ws_station(csms, "CP2")
        try:
            await ws.send('[2, "x"')
            await ws.send('[9,"a","b",{}]')
            beat = await station.call(call16.Heartbeat())
            assert beat.current_time.endswith("Z")
            malformed = [e for e in events_of(csms, "CP2", "error") if e.dir == "rx"]
            assert [e.payload["malformed"] for e in malformed] == ['[2, "x"', '[9,"a","b",{}]']

            await csms.close_station("CP2")
            assert not csms.is_connected("CP2")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 3)
            last = events_of(csms, "CP2")[-1]
            assert (last.kind, last.payload) == ("disconnected", {"reason": "closed by the CSMS"})
            with pytest.raises(CsmsError, match="not connected"):
                await csms.call("CP2", "ClearCache", {})

            # The station comes back: same identity, one entry in stations().
            ws2, station2, task2 = await ws_station(csms, "CP2")
            await station2.call(call16.Heartbeat())
            assert csms.is_connected("CP2") and csms.stations() == ["CP2"]
            await ws2.close()
            await stop_task(task2)
        finally:
            await stop_task(task)
            await csms.stop()
        assert [e.kind for e in csms.events].count("connected") == 2

    run(body)


@pytest.mark.parametrize(
    ("path", "offered", "outcome"),
    [
        ("/", ["ocpp1.6"], 404),  # no identity in the path
        ("/" + "x" * 49, ["ocpp1.6"], 404),  # longer than 48 characters
        ("/a:b", ["ocpp1.6"], 404),  # ':' would break Basic auth
        ("/CP3", ["ocpp1.5"], 1002),  # no common subprotocol: handshake without one, then close
    ],
)
def test_websocket_handshake_refusals(path: str, offered: list[str], outcome: int) -> None:
    async def body() -> None:
        csms = EmbeddedCsms(clock=RealClock())
        await csms.serve()
        try:
            if outcome == 404:
                with pytest.raises(InvalidStatus) as refused:
                    await connect(csms.url + path, subprotocols=[Subprotocol(p) for p in offered])
                assert refused.value.response.status_code == 404
            else:
                async with connect(csms.url + path, subprotocols=[Subprotocol(p) for p in offered]) as ws:
                    assert ws.subprotocol is None
                    with pytest.raises(ConnectionClosed) as closed:
                        await asyncio.wait_for(ws.recv(), 3)
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == outcome
        finally:
            await csms.stop()
        assert csms.stations() == []

    run(body)


def test_client_preference_picks_the_subprotocol() -> None:
    async def body() -> None:
        csms = EmbeddedCsms(clock=RealClock())
        await csms.serve()
        try:
            offered = [Subprotocol("ocpp2.1"), Subprotocol("ocpp1.6")]
            async with connect(csms.url + "/CP4", subprotocols=offered) as ws:
                assert ws.subprotocol == "ocpp2.1"
        finally:
            await csms.stop()
        assert csms.events[0].payload == {"protocol": "ocpp2.1", "transport": "websocket"}

    run(body)


# ------------------------------------------------------- (b) 2.0.1 over a MemoryLink, virtual time


async def attached_201(csms: EmbeddedCsms, station_id: str) -> tuple[Station201Under, asyncio.Task[Any]]:
    station_end, csms_end = memory_link_pair()
    await csms.attach(station_id, csms_end, "ocpp2.0.1")
    station = Station201Under(station_id, station_end)
    return station, asyncio.create_task(station.start())


def test_201_boot_and_transaction_events_are_recorded() -> None:
    async def body() -> None:
        clock = VirtualClock(start=100.0)
        csms = EmbeddedCsms(clock=clock, wall_clock=lambda: WALL, policy=CsmsPolicy(accepted_ids={"TAG"}))
        station, task = await attached_201(csms, "CS201")
        assert csms.is_connected("CS201")
        boot = await station.call(
            call201.BootNotification(charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp")
        )
        assert (boot.status, boot.interval, boot.current_time) == ("Accepted", 300, WALL_TEXT)

        evse = {"id": 1, "connector_id": 2}
        started = await station.call(
            call201.TransactionEvent(
                event_type="Started",
                timestamp=TS,
                trigger_reason="Authorized",
                seq_no=0,
                transaction_info={"transaction_id": "tx-1"},
                evse=evse,
                id_token={"id_token": "TAG", "type": "ISO14443"},
                meter_value=[meter_2x(1000, "Transaction.Begin")],
            )
        )
        assert started.id_token_info == {"status": "Accepted"}
        await clock.advance(60)
        updated = await station.call(
            call201.TransactionEvent(
                event_type="Updated",
                timestamp=TS,
                trigger_reason="MeterValuePeriodic",
                seq_no=1,
                transaction_info={"transaction_id": "tx-1", "charging_state": "Charging"},
                meter_value=[meter_2x(1.5, "Sample.Periodic", unit="kWh")],
            )
        )
        assert updated.id_token_info is None  # idTokenInfo only when an idToken was sent
        assert csms.transactions["tx-1"]["energy_wh"] == 500
        await clock.advance(60)
        await station.call(
            call201.TransactionEvent(
                event_type="Ended",
                timestamp="2025-03-04T05:02:00Z",
                trigger_reason="EVCommunicationLost",
                seq_no=2,
                offline=True,
                transaction_info={"transaction_id": "tx-1", "stopped_reason": "EVDisconnected"},
                meter_value=[meter_2x(25, "Transaction.End", multiplier=2)],
            )
        )
        await stop_task(task)
        await csms.stop()

        record = csms.transactions["tx-1"]
        assert (record["evse_id"], record["connector_id"], record["id_tag"]) == (1, 2, "TAG")
        assert (record["meter_start_wh"], record["meter_stop_wh"], record["energy_wh"]) == (1000, 2500, 1500)
        assert (record["t_started"], record["t_stopped"]) == (100.0, 220.0)
        assert (record["stop_reason"], record["active"]) == ("EVDisconnected", False)
        assert [(e["eventType"], e["seqNo"], e["offline"]) for e in record["events"]] == [
            ("Started", 0, False),
            ("Updated", 1, False),
            ("Ended", 2, True),
        ]
        assert len(record["meter_values"]) == 3
        assert [e.t for e in events_of(csms, "CS201", "call")] == [100.0, 100.0, 160.0, 220.0]

    run(body)


def test_csms_initiated_call_reaches_the_station_and_errors_come_back() -> None:
    async def body() -> None:
        csms = EmbeddedCsms(clock=VirtualClock())
        station, task = await attached_201(csms, "CS201")
        try:
            answer = await csms.call(
                "CS201",
                "RequestStartTransaction",
                {"idToken": {"idToken": "TAG", "type": "Central"}, "remoteStartId": 7, "evseId": 1},
            )
            assert answer == {"status": "Accepted", "transactionId": "tx-remote"}
            assert station.remote_starts == [
                {"id_token": {"id_token": "TAG", "type": "Central"}, "remote_start_id": 7, "evse_id": 1}
            ]
            sent, received = [e for e in csms.events if e.kind in ("call", "result")][-2:]
            assert (sent.dir, sent.kind, sent.action) == ("tx", "call", "RequestStartTransaction")
            assert (received.dir, received.kind, received.action) == ("rx", "result", "RequestStartTransaction")
            assert sent.message_id == received.message_id

            with pytest.raises(CsmsCallError) as failed:
                await csms.call("CS201", "UnlockConnector", {"evseId": 1, "connectorId": 9})
            assert failed.value.code == "PropertyConstraintViolation"
            assert failed.value.description == "no connector 9 on EVSE 1"
            error = csms.events[-1]
            assert (error.dir, error.kind, error.action) == ("rx", "error", "UnlockConnector")

            with pytest.raises(CsmsCallError) as unhandled:
                await csms.call("CS201", "ClearCache", {})
            assert unhandled.value.code in ("NotImplemented", "NotSupported")
        finally:
            await stop_task(task)
            await csms.stop()

    run(body)


@pytest.mark.parametrize(
    ("action", "payload", "complaint"),
    [
        ("BootNotification", {}, "sent by a charging station"),  # station -> CSMS only
        ("RemoteStartTransaction", {"idTag": "A"}, "not an OCPP 2.0.1 action"),  # a 1.6 name
        ("Reset", {"type": "Sometime"}, "invalid Reset payload"),  # not in the enum
        ("Reset", {"type": "Immediate", "bogus": 1}, "invalid Reset payload"),  # additional property
        ("Reset", "Immediate", "must be a dict"),
    ],
)
def test_call_refuses_what_the_version_does_not_define(action: str, payload: Any, complaint: str) -> None:
    async def body() -> None:
        csms = EmbeddedCsms(clock=VirtualClock())
        _station_end, csms_end = memory_link_pair()
        await csms.attach("CS", csms_end, "ocpp2.0.1")
        with pytest.raises(ValueError, match=complaint):
            await csms.call("CS", action, payload)
        await csms.stop()
        assert not [e for e in csms.events if e.dir == "tx"]  # nothing went out

    run(body)


def test_call_times_out_on_the_injected_clock_and_a_late_answer_is_dropped() -> None:
    async def body() -> None:
        clock = VirtualClock()
        csms = EmbeddedCsms(clock=clock)
        station_end, csms_end = memory_link_pair()
        await csms.attach("CS", csms_end, "ocpp2.0.1")
        pending = asyncio.create_task(csms.call("CS", "ClearCache", {}, timeout=5.0))
        request = await recv_json(station_end)
        assert request[0] == 2 and request[2:] == ["ClearCache", {}]
        await clock.advance(4.9)
        assert not pending.done()
        await clock.advance(0.2)
        with pytest.raises(TimeoutError, match="ClearCache"):
            await pending

        await station_end.send(json.dumps([3, request[1], {"status": "Accepted"}]))  # too late
        await station_end.send('[2,"hb","Heartbeat",{}]')
        reply = await recv_json(station_end)
        assert reply[:2] == [3, "hb"]  # still serving
        late = [e for e in csms.events if e.message_id == request[1] and e.dir == "rx"]
        assert [(e.kind, e.action) for e in late] == [("result", None)]

        # A lost connection ends a pending call at once, not at its timeout.
        pending = asyncio.create_task(csms.call("CS", "ClearCache", {}, timeout=30.0))
        await recv_json(station_end)
        await station_end.close()
        with pytest.raises(CsmsError, match="connection closed"):
            await pending
        assert clock.monotonic() == pytest.approx(5.1)
        assert events_of(csms, "CS")[-1].payload == {"reason": "closed by the station"}
        await csms.stop()

    run(body)


def test_invalid_answer_from_the_station_is_reported() -> None:
    async def body() -> None:
        csms = EmbeddedCsms(clock=VirtualClock())
        station_end, csms_end = memory_link_pair()
        await csms.attach("CS", csms_end, "ocpp2.0.1")
        pending = asyncio.create_task(csms.call("CS", "ClearCache", {}))
        request = await recv_json(station_end)
        await station_end.send(json.dumps([3, request[1], {"status": "Maybe"}]))
        with pytest.raises(CsmsError, match="invalid response"):
            await pending
        await csms.stop()

    run(body)


# ------------------------------------------------------------------------ (c) boot policy


@pytest.mark.parametrize("status", ["Pending", "Rejected"])
def test_boot_policy_status_and_interval(status: str) -> None:
    async def body() -> None:
        policy = CsmsPolicy(boot_status=status, heartbeat_interval_s=45)  # type: ignore[arg-type]
        csms = EmbeddedCsms(clock=VirtualClock(), policy=policy)
        station, task = await attached_201(csms, "CS")
        boot = await station.call(
            call201.BootNotification(charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp")
        )
        await stop_task(task)
        await csms.stop()
        assert (boot.status, boot.interval) == (status, 45)

    run(body)


# ----------------------------------------------------------------- (d) malformed frames


@pytest.mark.parametrize(
    ("protocol", "frame", "reply"),
    [
        ("ocpp1.6", '[2, "x"', None),  # no readable id: 1.6 has nothing to answer with
        ("ocpp1.6", '[9,"a","b",{}]', None),
        ("ocpp1.6", '"a string"', None),
        ("ocpp1.6", '[2,"m1","Heartbeat"]', ["m1", "FormationViolation"]),
        ("ocpp1.6", '[2,"m2","BootNotification",{}]', ["m2", "ProtocolError"]),
        ("ocpp1.6", '[2,"m3","Authorize",{"idTag":5}]', ["m3", "TypeConstraintViolation"]),
        ("ocpp1.6", '[2,"m4","RemoteStartTransaction",{"idTag":"A"}]', ["m4", "NotSupported"]),
        ("ocpp1.6", '[2,"m5","Teleport",{}]', ["m5", "NotImplemented"]),
        ("ocpp2.0.1", '[2, "x"', ["-1", "RpcFrameworkError"]),
        ("ocpp2.0.1", "{}", ["-1", "RpcFrameworkError"]),
        ("ocpp2.0.1", '[9,"a","b",{}]', ["a", "MessageTypeNotSupported"]),
        ("ocpp2.0.1", '[2,"m6","Heartbeat",[]]', ["m6", "RpcFrameworkError"]),
        ("ocpp2.0.1", '[2,"m7","Heartbeat",{"bogus":1}]', ["m7", "FormatViolation"]),
        ("ocpp2.0.1", '[2,"m8","Authorize",{}]', ["m8", "OccurenceConstraintViolation"]),
        (
            "ocpp2.0.1",
            '[2,"m9","StatusNotification",{"timestamp":"2025-03-04 05:00:00","connectorStatus":"Available",'
            '"evseId":1,"connectorId":1}]',
            ["m9", "PropertyConstraintViolation"],  # not an RFC 3339 date-time
        ),
        ("ocpp2.0.1", '[3,"nobody-asked",{}]', None),  # a result for no call is dropped
        ("ocpp2.1", '[9,"a","b",{}]', None),  # 2.1 ignores unknown message types
        ("ocpp2.1", '[6,"s1","NotifyPeriodicEventStream",{"id":1,"pending":0,"data":[]}]', None),  # SEND
        ("ocpp2.1", '[2,"m10","Authorize",{}]', ["m10", "OccurrenceConstraintViolation"]),
    ],
)
def test_malformed_frames_are_answered_per_version_and_serving_goes_on(
    protocol: str, frame: str, reply: list[str] | None
) -> None:
    async def body() -> None:
        csms = EmbeddedCsms(clock=VirtualClock())
        station_end, csms_end = memory_link_pair()
        await csms.attach("CS", csms_end, protocol)  # type: ignore[arg-type]
        await station_end.send(frame)
        await station_end.send('[2,"hb","Heartbeat",{}]')
        first = await recv_json(station_end)
        if reply is not None:
            assert [first[0], *first[1:3]] == [4, *reply]
            assert len(first) == 5 and isinstance(first[3], str) and isinstance(first[4], dict)
            first = await recv_json(station_end)
        assert first[:2] == [3, "hb"] and first[2]["currentTime"].endswith("Z")
        assert csms.is_connected("CS")
        assert csms.events[1].dir == "rx"
        await csms.stop()

    run(body)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frame=st.one_of(
        st.text(max_size=60),
        st.lists(
            st.one_of(
                st.integers(-3, 9), st.text(max_size=8), st.none(), st.dictionaries(st.text(max_size=5), st.integers())
            ),
            max_size=6,
        ).map(json.dumps),
    ),
    protocol=st.sampled_from(["ocpp1.6", "ocpp2.0.1", "ocpp2.1"]),
)
def test_no_frame_stops_the_csms(frame: str, protocol: str) -> None:
    """Whatever text a station sends, the next Heartbeat is still answered."""

    async def body() -> None:
        csms = EmbeddedCsms(clock=VirtualClock())
        station_end, csms_end = memory_link_pair()
        await csms.attach("CS", csms_end, protocol)  # type: ignore[arg-type]
        await station_end.send(frame)
        await station_end.send('[2,"heartbeat-probe","Heartbeat",{}]')
        while True:
            reply = await recv_json(station_end)
            if reply[1] == "heartbeat-probe":
                break
        assert reply[0] == 3 and csms.is_connected("CS")
        await csms.stop()

    run(body, timeout=5.0)


# ------------------------------------------------------------------------ (e) outages


def test_close_station_over_a_memory_link_and_reattach() -> None:
    async def body() -> None:
        clock = VirtualClock(start=7.0)
        seen: list[CsmsEvent] = []
        csms = EmbeddedCsms(clock=clock, on_event=seen.append)
        station, task = await attached_201(csms, "CS")
        await station.call(call201.Heartbeat())
        await csms.close_station("CS")
        assert not csms.is_connected("CS")
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 2)  # the station saw the close
        await csms.close_station("CS")  # closing twice is harmless
        assert [e.kind for e in seen] == ["connected", "call", "result", "disconnected"]
        assert seen[-1].payload == {"reason": "closed by the CSMS"} and seen[-1].t == 7.0

        station, task = await attached_201(csms, "CS")
        await station.call(call201.Heartbeat())
        assert csms.is_connected("CS") and csms.stations() == ["CS"]
        await stop_task(task)
        await csms.stop()
        assert not csms.is_connected("CS") and seen[-1].payload == {"reason": "CSMS stopped"}

    run(body)


def test_a_new_connection_replaces_the_old_one() -> None:
    async def body() -> None:
        csms = EmbeddedCsms(clock=VirtualClock())
        _old_station, old_csms = memory_link_pair()
        await csms.attach("CS", old_csms, "ocpp1.6")
        new_station, new_csms = memory_link_pair()
        await csms.attach("CS", new_csms, "ocpp1.6")
        assert old_csms.closed
        await new_station.send('[2,"hb","Heartbeat",{}]')
        assert (await recv_json(new_station))[:2] == [3, "hb"]
        assert [(e.kind, e.payload.get("reason")) for e in csms.events] == [
            ("connected", None),
            ("disconnected", "replaced by a new connection"),
            ("connected", None),
            ("call", None),
            ("result", None),
        ]
        await csms.stop()

    run(body)


def test_attach_refuses_bad_arguments() -> None:
    async def body() -> None:
        csms = EmbeddedCsms(clock=VirtualClock())
        _, link = memory_link_pair()
        with pytest.raises(ValueError, match="protocol"):
            await csms.attach("CS", link, "ocpp1.5")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="identity"):
            await csms.attach("", link, "ocpp1.6")
        with pytest.raises(RuntimeError, match="serve"):
            _ = csms.url
        assert csms.stations() == []

    run(body)


def test_an_observer_that_raises_does_not_break_the_csms() -> None:
    def broken(_: CsmsEvent) -> None:
        raise RuntimeError("observer bug")

    async def body() -> None:
        csms = EmbeddedCsms(clock=VirtualClock(), on_event=broken)
        station, task = await attached_201(csms, "CS")
        beat = await station.call(call201.Heartbeat())
        assert beat.current_time.endswith("Z")
        await stop_task(task)
        await csms.stop()

    run(body)


# ------------------------------------------------------------------------ (f) 2.1


def test_21_boot_and_a_21_only_message_over_a_memory_link() -> None:
    async def body() -> None:
        csms = EmbeddedCsms(clock=VirtualClock(), wall_clock=lambda: WALL)
        station_end, csms_end = memory_link_pair()
        await csms.attach("CS21", csms_end, "ocpp2.1")
        station = Station21("CS21", station_end)
        task = asyncio.create_task(station.start())
        boot = await station.call(
            call21.BootNotification(charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp")
        )
        assert (boot.status, boot.current_time) == ("Accepted", WALL_TEXT)
        alarm = await station.call(call21.NotifyDERAlarm(control_type="FreqDroop", timestamp=TS))
        assert alarm is not None
        vat = await station.call(call21.VatNumberValidation(vat_number="NL123", evse_id=1))
        assert (vat.status, vat.vat_number, vat.evse_id) == ("Rejected", "NL123", 1)
        await stop_task(task)
        await csms.stop()
        assert csms.events[0].payload == {"protocol": "ocpp2.1", "transport": "memory"}

    run(body)


# ------------------------------------------------- every station message gets a valid answer

STATION_ACTIONS_16 = {
    "Authorize",
    "BootNotification",
    "DataTransfer",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "LogStatusNotification",
    "MeterValues",
    "SecurityEventNotification",
    "SignCertificate",
    "SignedFirmwareStatusNotification",
    "StartTransaction",
    "StatusNotification",
    "StopTransaction",
}
STATION_ACTIONS_201 = {
    "Authorize",
    "BootNotification",
    "ClearedChargingLimit",
    "DataTransfer",
    "FirmwareStatusNotification",
    "Get15118EVCertificate",
    "GetCertificateStatus",
    "Heartbeat",
    "LogStatusNotification",
    "MeterValues",
    "NotifyChargingLimit",
    "NotifyCustomerInformation",
    "NotifyDisplayMessages",
    "NotifyEVChargingNeeds",
    "NotifyEVChargingSchedule",
    "NotifyEvent",
    "NotifyMonitoringReport",
    "NotifyReport",
    "PublishFirmwareStatusNotification",
    "ReportChargingProfiles",
    "ReservationStatusUpdate",
    "SecurityEventNotification",
    "SignCertificate",
    "StatusNotification",
    "TransactionEvent",
}
STATION_ACTIONS_21 = STATION_ACTIONS_201 | {
    "BatterySwap",
    "ClosePeriodicEventStream",
    "GetCertificateChainStatus",
    "NotifyDERAlarm",
    "NotifyDERStartStop",
    "NotifyPriorityCharging",
    "NotifySettlement",
    "OpenPeriodicEventStream",
    "PullDynamicScheduleUpdate",
    "ReportDERControl",
    "VatNumberValidation",
}
SCHEMA_DIRS = {"ocpp1.6": "v16", "ocpp2.0.1": "v201", "ocpp2.1": "v21"}


def _schema(protocol: str, name: str) -> dict[str, Any] | None:
    path = resources.files("ocpp").joinpath(SCHEMA_DIRS[protocol], "schemas", name)
    if not path.is_file():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8-sig"))
    return loaded


def _minimal(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """The smallest instance of ``schema``: required fields only, first enum values."""
    if "$ref" in schema:
        return _minimal(root["definitions"][schema["$ref"].rsplit("/", 1)[-1]], root)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {key: _minimal(schema["properties"][key], root) for key in schema.get("required", [])}
    if kind == "array":
        return [_minimal(schema["items"], root) for _ in range(max(1, schema.get("minItems", 1)))]
    if kind == "string":
        return TS if schema.get("format") == "date-time" else "x"
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1))
    if kind == "boolean":
        return False
    raise AssertionError(f"unexpected schema {schema}")


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [("ocpp1.6", STATION_ACTIONS_16), ("ocpp2.0.1", STATION_ACTIONS_201), ("ocpp2.1", STATION_ACTIONS_21)],
)
def test_every_station_message_gets_a_schema_valid_answer(protocol: str, expected: set[str]) -> None:
    """A minimal valid request for every action of the version: the station-initiated ones get a
    CALLRESULT (which the CSMS checks against the response schema before sending, or it would be an
    InternalError), all others NotSupported."""
    actions = sorted(
        re.sub(r"(Request)?\.json$", "", p.name)
        for p in resources.files("ocpp").joinpath(SCHEMA_DIRS[protocol], "schemas").iterdir()
        if p.name.endswith(".json") and not p.name.endswith("Response.json")
    )

    async def body() -> dict[str, Any]:
        csms = EmbeddedCsms(clock=VirtualClock())
        station_end, csms_end = memory_link_pair()
        await csms.attach("CS", csms_end, protocol)  # type: ignore[arg-type]
        answers: dict[str, Any] = {}
        for number, action in enumerate(actions):
            request_name = f"{action}.json" if protocol == "ocpp1.6" else f"{action}Request.json"
            schema = _schema(protocol, request_name)
            if schema is None:  # a SEND message (2.1 NotifyPeriodicEventStream) has no request schema
                continue
            await station_end.send(json.dumps([2, f"m{number}", action, _minimal(schema, schema)]))
            answers[action] = await recv_json(station_end)
        await csms.stop()
        return answers

    answers = run(body)
    answered = {action for action, reply in answers.items() if reply[0] == 3}
    assert answered == expected
    refused = {reply[2] for action, reply in answers.items() if reply[0] == 4}
    assert refused == {"NotSupported"}
