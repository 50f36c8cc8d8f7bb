"""The OCPP 1.6 station against our embedded CSMS, in virtual time: boot, status, authorisation,
transactions, meter values, remote control, availability, smart charging, offline queueing."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.ocpp.maintenance import TransferError
from firmware.ocpp.station import CONFIG_RETRY_S
from firmware.ocpp.timestamps import is_utc_rfc3339
from hil.csms import CsmsCallError, CsmsPolicy
from tests.firmware.ocpp.station_rig import T0, StationRig, station_rig

FAST_METER = {"MeterValueSampleInterval": "10", "ClockAlignedDataInterval": "0"}


async def _charge(rig: StationRig, tag: str = "TAG1", amps: float = 16.0) -> None:
    await rig.plug("B")
    await rig.advance(1.0)
    assert await rig.run(rig.station.present_id(1, tag)) == "Accepted"
    await rig.advance(1.0)
    rig.sim.plant.ev_state = "C"
    await rig.advance(2.0)
    assert rig.sim.plant.contacts_closed, rig.connector.why()
    await rig.draw(amps)


@pytest.mark.timeout(60)
def test_boot_then_status_of_every_connector(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path) as rig:
            [boot] = rig.calls("BootNotification")
            assert boot.payload["chargePointVendor"] == "evse-firmware"
            assert rig.station.registration == "Accepted"
            statuses = rig.calls("StatusNotification")
            assert [(e.payload["connectorId"], e.payload["status"]) for e in statuses] == [(1, "Available")]
            assert is_utc_rfc3339(statuses[0].payload["timestamp"])

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_pending_boot_is_retried_after_the_interval_and_nothing_else_is_sent(tmp_path: Path) -> None:
    async def scenario() -> None:
        policy = CsmsPolicy(boot_status="Pending", heartbeat_interval_s=30)
        async with station_rig(tmp_path, policy=policy) as rig:
            await rig.advance(65.0)
            boots = rig.calls("BootNotification")
            assert len(boots) == 3  # t = 0, 30, 60
            assert rig.calls() == boots, "only BootNotification before Accepted (1.6 §4.2)"
            policy.boot_status = "Accepted"
            await rig.advance(31.0)
            assert rig.station.registration == "Accepted"
            assert rig.calls("StatusNotification")

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_heartbeat_at_the_interval_the_csms_gave(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, policy=CsmsPolicy(heartbeat_interval_s=120)) as rig:
            await rig.advance(370.0)
            beats = [e.t for e in rig.calls("Heartbeat")]
            assert len(beats) == 3 and beats[1] - beats[0] == pytest.approx(120.0)

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_charging_session_is_one_transaction_with_meter_values(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, config=FAST_METER) as rig:
            t = rig.now
            await _charge(rig, amps=16.0)
            await rig.advance(60.0)
            await rig.unplug()
            await rig.advance(5.0)
            statuses = rig.statuses(t)
            # B2 offered before the EV is ready is SuspendedEV (1.6 §4.9); unplugged it is Available again.
            assert statuses[:3] == ["Preparing", "SuspendedEV", "Charging"] and statuses[-1] == "Available", statuses
            assert "Faulted" not in statuses
            [start] = rig.calls("StartTransaction")
            assert start.payload["idTag"] == "TAG1" and start.payload["connectorId"] == 1
            [tx] = rig.csms.transactions.values()
            assert not tx["active"] and tx["stop_reason"] == "EVDisconnected"
            samples = rig.calls("MeterValues")
            assert len(samples) >= 5
            assert all(s.payload["transactionId"] == int(tx["transaction_id"]) for s in samples)
            # 16 A on 3 x 230 V for about a minute: 11 kW x 60 s = 184 Wh.
            assert 150 <= tx["energy_wh"] <= 200, tx
            [stop] = rig.calls("StopTransaction")
            assert stop.payload["meterStop"] - start.payload["meterStart"] == pytest.approx(tx["energy_wh"], abs=1)

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_blocked_id_does_not_charge(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, policy=CsmsPolicy(blocked_ids={"BAD"})) as rig:
            await rig.plug("B")
            await rig.advance(1.0)
            assert await rig.run(rig.station.present_id(1, "BAD")) == "Blocked"
            rig.sim.plant.ev_state = "C"
            await rig.advance(5.0)
            assert not rig.sim.plant.contacts_closed and rig.calls("StartTransaction") == []

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_remote_start_and_remote_stop(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, config={"AuthorizeRemoteTxRequests": "true"}) as rig:
            await rig.plug("B")
            await rig.advance(1.0)
            assert (await rig.call("RemoteStartTransaction", {"idTag": "APP", "connectorId": 1}))[
                "status"
            ] == "Accepted"
            await rig.advance(2.0)
            [start] = rig.calls("StartTransaction")
            assert start.payload["idTag"] == "APP"
            assert [e.action for e in rig.calls("Authorize")] == ["Authorize"]  # AuthorizeRemoteTxRequests
            [tx_id] = rig.csms.transactions
            assert (await rig.call("RemoteStopTransaction", {"transactionId": int(tx_id)}))["status"] == "Accepted"
            await rig.advance(2.0)
            [stop] = rig.calls("StopTransaction")
            assert stop.payload["reason"] == "Remote"
            assert (await rig.call("RemoteStopTransaction", {"transactionId": 999}))["status"] == "Rejected"

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_transactions_survive_an_outage_in_order_without_loss(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path, config=FAST_METER) as rig:
            await _charge(rig)
            await rig.advance(15.0)
            await rig.outage()
            await rig.advance(120.0)  # offline: meter values pile up, the session ends
            await rig.unplug()
            await rig.advance(5.0)
            offline = len(rig.station.outbox)
            assert offline >= 10
            rig.restore()
            await rig.advance(60.0)
            assert len(rig.station.outbox) == 0
            [tx] = rig.csms.transactions.values()
            assert not tx["active"] and tx["stop_reason"] == "EVDisconnected"
            stamps = [e.payload["meterValue"][0]["timestamp"] for e in rig.calls("MeterValues")]
            assert stamps == sorted(stamps) and len(stamps) == len(set(stamps)), "no reordering, no duplicates"
            assert len(rig.calls("StopTransaction")) == 1

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_session_started_offline_gets_its_transaction_id_later(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = {**FAST_METER, "LocalAuthorizeOffline": "true", "AllowOfflineTxForUnknownId": "true"}
        async with station_rig(tmp_path, config=config) as rig:
            await rig.outage()
            await rig.advance(5.0)
            await _charge(rig, tag="OFFLINE")
            await rig.advance(40.0)
            await rig.unplug()
            await rig.advance(2.0)
            rig.restore()
            await rig.advance(60.0)
            [tx] = rig.csms.transactions.values()
            tx_id = int(tx["transaction_id"])
            assert all(e.payload["transactionId"] == tx_id for e in rig.calls("MeterValues"))
            assert rig.calls("StopTransaction")[0].payload["transactionId"] == tx_id

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_charging_profile_sets_the_offer_and_the_composite_schedule(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path) as rig:
            await _charge(rig, amps=8.0)  # below every offer of the test: no over-current
            profile: dict[str, Any] = {
                "chargingProfileId": 7,
                "stackLevel": 0,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Relative",
                "chargingSchedule": {
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.0}, {"startPeriod": 600, "limit": 20.0}],
                },
            }
            answer = await rig.call("SetChargingProfile", {"connectorId": 1, "csChargingProfiles": profile})
            assert answer["status"] == "Accepted"
            await rig.advance(1.0)
            status = rig.connector.status()
            assert status.offered_a == pytest.approx(10.0, abs=0.1) and "ocpp" in status.why
            schedule = await rig.call("GetCompositeSchedule", {"connectorId": 1, "duration": 3600})
            assert schedule["status"] == "Accepted"
            periods = schedule["chargingSchedule"]["chargingSchedulePeriod"]
            assert periods[0]["limit"] == 10.0
            await rig.advance(620.0)
            assert rig.connector.status().offered_a == pytest.approx(20.0, abs=0.1)
            cleared = await rig.call("ClearChargingProfile", {"id": 7})
            assert cleared["status"] == "Accepted"
            await rig.advance(6.0)
            assert rig.connector.status().offered_a == pytest.approx(32.0, abs=0.1)

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_availability_configuration_trigger_and_unknown_calls(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path) as rig:
            t = rig.now
            answer = await rig.call("ChangeAvailability", {"connectorId": 1, "type": "Inoperative"})
            assert answer["status"] == "Accepted"
            await rig.advance(1.0)
            assert rig.statuses(t)[-1] == "Unavailable"
            await rig.plug("B")
            await rig.advance(1.0)
            assert await rig.run(rig.station.present_id(1, "TAG1")) == "Blocked"
            await rig.call("ChangeAvailability", {"connectorId": 1, "type": "Operative"})
            await rig.advance(1.0)
            assert rig.statuses(t)[-1] == "Preparing"

            keys = await rig.call("GetConfiguration", {"key": ["HeartbeatInterval", "NoSuchKey"]})
            assert keys["unknownKey"] == ["NoSuchKey"] and keys["configurationKey"][0]["key"] == "HeartbeatInterval"
            assert (await rig.call("ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "5"}))[
                "status"
            ] == "Accepted"
            assert (await rig.call("ChangeConfiguration", {"key": "NumberOfConnectors", "value": "3"}))[
                "status"
            ] == "Rejected"
            t = rig.now
            assert (await rig.call("TriggerMessage", {"requestedMessage": "StatusNotification"}))[
                "status"
            ] == "Accepted"
            await rig.advance(1.0)
            assert rig.calls("StatusNotification", t)
            assert (await rig.call("DataTransfer", {"vendorId": "acme"}))["status"] == "UnknownVendorId"
            rig.station.data_transfer["acme"] = lambda message_id, data: ("Rejected", f"{message_id}: no")
            answer = await rig.call("DataTransfer", {"vendorId": "acme", "messageId": "X", "data": "1"})
            assert answer == {"status": "Rejected", "data": "X: no"}
            with pytest.raises(CsmsCallError):  # the security extension is not implemented: a CALLERROR, no crash
                await rig.call("GetInstalledCertificateIds", {"certificateType": "CentralSystemRootCertificate"})

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_reset_stops_the_transaction_then_calls_the_board_hook(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path) as rig:
            await _charge(rig)
            await rig.advance(5.0)
            assert (await rig.call("Reset", {"type": "Soft"}))["status"] == "Accepted"
            await rig.advance(3.0)
            [stop] = rig.calls("StopTransaction")
            assert stop.payload["reason"] == "SoftReset"
            assert rig.resets == ["Soft"]

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_malformed_frames_from_the_csms_never_stop_the_station(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path) as rig:
            link = rig.links[-1]
            for raw in (
                '[2, "m1"',
                "[2, 5]",
                '[2, "m2", "NoSuchAction", {}]',
                '[2, "m3", "Reset", {"type": 7}]',
                "x" * 5000,
            ):
                await link._peer.send(raw)  # type: ignore[union-attr]  # the CSMS end of the link
            await rig.advance(1.0)
            await _charge(rig)
            await rig.advance(2.0)
            assert rig.calls("StartTransaction"), "the station still works"
            errors = [e for e in rig.csms.events if e.dir == "rx" and e.kind == "error"]
            assert len(errors) >= 2  # NoSuchAction and the bad Reset were answered with CALLERRORs

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_update_firmware_downloads_installs_through_the_board_hook_and_reports_each_step(tmp_path: Path) -> None:
    installed: list[bytes] = []

    async def install(path: Path) -> bool:
        installed.append(path.read_bytes())
        return True

    def fetch(url: str, target: Path) -> None:
        target.write_bytes(b"firmware image for " + url.encode())

    def setup(rig: StationRig) -> None:
        rig.station.maintenance.install_hook = install
        rig.station.maintenance.fetch = fetch

    async def scenario() -> None:
        async with station_rig(tmp_path, before_start=setup) as rig:
            retrieve = (T0 + timedelta(seconds=rig.now + 30)).strftime("%Y-%m-%dT%H:%M:%SZ")
            answer = await rig.call(
                "UpdateFirmware", {"location": "http://127.0.0.1/fw-2.bin", "retrieveDate": retrieve}
            )
            assert answer == {}
            await rig.advance(10.0)
            assert rig.calls("FirmwareStatusNotification") == [], "nothing before the retrieve date"
            for _ in range(200):
                await rig.advance(0.5)
                if len(rig.calls("FirmwareStatusNotification")) >= 4:
                    break
                await asyncio.sleep(0.001)  # the download runs in a worker thread
            statuses = [e.payload["status"] for e in rig.calls("FirmwareStatusNotification")]
            assert statuses == ["Downloading", "Downloaded", "Installing", "Installed"]
            assert installed == [b"firmware image for http://127.0.0.1/fw-2.bin"]

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_failed_download_is_retried_then_reported(tmp_path: Path) -> None:
    attempts: list[float] = []

    def setup(rig: StationRig) -> None:
        def fetch(url: str, target: Path) -> None:
            attempts.append(rig.now)
            raise TransferError(f"{url}: connection refused")

        rig.station.maintenance.fetch = fetch

    async def scenario() -> None:
        async with station_rig(tmp_path, before_start=setup) as rig:
            payload = {"location": "http://127.0.0.1/x.bin", "retrieveDate": "2020-01-01T00:00:00Z", "retries": 2,
                       "retryInterval": 30}  # fmt: skip
            await rig.call("UpdateFirmware", payload)
            for _ in range(400):
                await rig.advance(0.5)
                if "DownloadFailed" in [e.payload["status"] for e in rig.calls("FirmwareStatusNotification")]:
                    break
                await asyncio.sleep(0.001)
            statuses = [e.payload["status"] for e in rig.calls("FirmwareStatusNotification")]
            assert statuses == ["Downloading", "Downloading", "Downloading", "DownloadFailed"]
            # The worker thread's attempt is seen at the next 0.5 s step of the test's clock.
            assert len(attempts) == 3 and 30.0 <= attempts[1] - attempts[0] <= 31.6

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_get_diagnostics_names_the_file_and_uploads_the_logs(tmp_path: Path) -> None:
    uploads: list[tuple[str, str, bytes]] = []
    log_file = tmp_path / "firmware.log"
    log_file.write_text("boot ok\n")

    def setup(rig: StationRig) -> None:
        rig.station.maintenance.log_files = (log_file,)
        rig.station.maintenance.upload = lambda url, name, content: uploads.append((url, name, content))

    async def scenario() -> None:
        async with station_rig(tmp_path, before_start=setup) as rig:
            answer = await rig.call("GetDiagnostics", {"location": "http://127.0.0.1/upload/"})
            assert answer["fileName"].startswith("CP1-logs-") and answer["fileName"].endswith(".tar.gz")
            for _ in range(200):
                await rig.advance(0.5)
                if len(rig.calls("DiagnosticsStatusNotification")) >= 2:
                    break
                await asyncio.sleep(0.001)
            assert [e.payload["status"] for e in rig.calls("DiagnosticsStatusNotification")] == [
                "Uploading",
                "Uploaded",
            ]
            [(url, name, content)] = uploads
            assert url == "http://127.0.0.1/upload/" and name == answer["fileName"]
            with tarfile.open(fileobj=io.BytesIO(content)) as tar:
                assert tar.getnames() == ["firmware.log"]
            bad = await rig.call("GetDiagnostics", {"location": "file:///etc/passwd"})
            assert "fileName" not in bad

    asyncio.run(scenario())


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
_ACTIONS = st.sampled_from(
    ["RemoteStartTransaction", "RemoteStopTransaction", "Reset", "ChangeAvailability", "SetChargingProfile",
     "GetCompositeSchedule", "TriggerMessage", "ChangeConfiguration", "UnlockConnector", "SendLocalList",
     "ReserveNow", "UpdateFirmware", "NoSuchAction"]
)  # fmt: skip
_FRAMES = st.one_of(
    st.builds(lambda i, a, p: json.dumps([2, i, a, p]), st.text(max_size=8), _ACTIONS, _JSON),
    st.builds(lambda t, i, p: json.dumps([t, i, p]), st.integers(0, 9), st.text(max_size=8), _JSON),
    _JSON.map(json.dumps),
    st.text(max_size=200),
    st.just("[" * 5000),
)


@pytest.mark.timeout(120)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(_FRAMES, min_size=1, max_size=12))
def test_whatever_the_csms_sends_the_station_and_the_connector_keep_working(tmp_path: Path, frames: list[str]) -> None:
    async def scenario() -> None:
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        async with station_rig(folder) as rig:
            csms_end = rig.links[-1]._peer
            assert csms_end is not None
            for frame in frames:
                await csms_end.send(frame)
            await rig.advance(2.0)
            before = len(rig.calls("Heartbeat"))
            await rig.run(rig.station.heartbeat())
            assert len(rig.calls("Heartbeat")) == before + 1, "the link still answers"
            await rig.plug("B")
            await rig.advance(1.0)
            assert rig.connector.machine.state.startswith("B"), "the connector still follows the pilot"

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_refused_station_tries_again_rarely_not_every_few_seconds(tmp_path: Path) -> None:
    async def scenario() -> None:
        def refuse(rig: StationRig) -> None:
            rig.refused = True

        async with station_rig(tmp_path, before_start=refuse) as rig:
            await rig.advance(CONFIG_RETRY_S - 10)
            assert rig.calls() == [] and not rig.station.online
            errors = [e for e in rig.ocpp_events if e["action"] == "error"]
            assert len(errors) == 1 and "401" in errors[0]["payload"]["error"]
            rig.refused = False  # fixed at the CSMS
            await rig.advance(20.0)
            assert rig.station.registration == "Accepted"

    asyncio.run(scenario())


def _utc(rig: StationRig, seconds_from_now: float) -> str:
    """A 1.6 dateTime `seconds_from_now` on the rig's wall clock."""
    return (T0 + timedelta(seconds=rig.now + seconds_from_now)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _reserve(rig: StationRig, reservation_id: int, id_tag: str = "RES", expires_in_s: float = 600.0) -> str:
    expiry = _utc(rig, expires_in_s)
    answer = await rig.call(
        "ReserveNow", {"connectorId": 1, "expiryDate": expiry, "idTag": id_tag, "reservationId": reservation_id}
    )
    return str(answer["status"])


@pytest.mark.timeout(60)
def test_a_reservation_holds_the_connector_for_its_id_and_the_transaction_names_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path) as rig:
            t = rig.now
            assert await _reserve(rig, 41) == "Accepted"
            await rig.advance(1.0)
            assert rig.statuses(t)[-1] == "Reserved"  # 1.6 §5.13
            await rig.plug("B")
            await rig.advance(1.0)
            assert await rig.run(rig.station.present_id(1, "SOMEONE-ELSE")) == "Blocked"
            assert rig.calls("Authorize") == [], "a refused id is not even asked about"
            assert not rig.sim.plant.contacts_closed
            await _charge(rig, tag="RES")
            await rig.advance(2.0)
            [start] = rig.calls("StartTransaction")
            assert start.payload["idTag"] == "RES" and start.payload["reservationId"] == 41
            # The reservation is used up: cancelling it now finds nothing.
            assert (await rig.call("CancelReservation", {"reservationId": 41}))["status"] == "Rejected"

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_reservation_ends_at_its_expiry_date_or_when_cancelled(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path) as rig:
            t = rig.now
            # The expiryDate has whole seconds: it falls 59-60 s from now.
            assert await _reserve(rig, 7, expires_in_s=60.0) == "Accepted"
            await rig.advance(58.0)
            assert rig.statuses(t)[-1] == "Reserved"
            await rig.advance(4.0)  # just past the expiryDate, nothing else happening on the connector
            assert rig.statuses(t)[-1] == "Available", rig.statuses(t)
            await rig.plug("B")
            await rig.advance(1.0)
            assert await rig.run(rig.station.present_id(1, "ANYONE")) == "Accepted", "the expired hold is gone"
            await rig.unplug()
            await rig.advance(5.0)

            t = rig.now
            assert await _reserve(rig, 8) == "Accepted"
            await rig.advance(1.0)
            assert rig.statuses(t)[-1] == "Reserved"
            assert (await rig.call("CancelReservation", {"reservationId": 999}))["status"] == "Rejected"
            await rig.advance(1.0)
            assert rig.statuses(t)[-1] == "Reserved", "an unknown id cancels nothing"
            assert (await rig.call("CancelReservation", {"reservationId": 8}))["status"] == "Accepted"
            await rig.advance(1.0)
            assert rig.statuses(t)[-1] == "Available"

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_reserve_now_on_an_occupied_or_faulted_connector_is_refused_with_the_reason(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with station_rig(tmp_path) as rig:
            await rig.plug("B")
            await rig.advance(1.0)
            assert await _reserve(rig, 1) == "Occupied"  # 1.6 §7.37 ReservationStatus
            await rig.unplug()
            await rig.advance(2.0)
            rig.sim.plant.residual_current_ma = 40.0  # above the RCD's trip threshold: a fault that stops power
            await rig.advance(2.0)
            assert rig.statuses()[-1] == "Faulted"
            assert await _reserve(rig, 2) == "Faulted"
            assert (await rig.call("CancelReservation", {"reservationId": 2}))["status"] == "Rejected"

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_lowered_clock_aligned_interval_applies_within_seconds(tmp_path: Path) -> None:
    """ClockAlignedDataInterval 900 -> 60 s by ChangeConfiguration: the next aligned value comes at the
    next minute boundary (within INTERVAL_RECHECK_S of it), not after the old 15 minutes."""

    async def scenario() -> None:
        async with station_rig(tmp_path, config={"ClockAlignedDataInterval": "900"}) as rig:
            answer = await rig.call("ChangeConfiguration", {"key": "ClockAlignedDataInterval", "value": "60"})
            assert answer["status"] == "Accepted"
            t_change = rig.now
            await rig.advance(75.0)
            aligned = [
                c
                for c in rig.calls("MeterValues", since=t_change)
                if c.payload["meterValue"][0]["sampledValue"][0]["context"] == "Sample.Clock"
            ]
            assert aligned, "an aligned value within 75 s of lowering the interval to 60 s"
            stamp = aligned[0].payload["meterValue"][0]["timestamp"]
            assert stamp.endswith(":00Z") or stamp.endswith(":00.000Z"), stamp  # on a minute boundary

    asyncio.run(scenario())
