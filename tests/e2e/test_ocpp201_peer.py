"""End to end with OCPP 2.0.1 and 2.1 against the independent strict CSMS (`ocpp-rpc`): the firmware on the
simulated board in real time, over a real websocket. Zero strict-validation failures are required."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from firmware.iec61851.pilot import duty_for_current
from firmware.ocpp.station import StationSettings
from firmware.ocpp.transport import Backoff, Security
from firmware.ocpp.uplink import build_station
from tests.e2e.test_ocpp16_peer import Bench, _charge
from tests.peers.ocpp_csms import OcppRpcCsms

STATION = "E2E-CP2"


async def _bench(tmp_path: Path, peer: OcppRpcCsms, version: str) -> Bench:
    from firmware.connector import ConnectorSettings
    from firmware.simulation import SimulatedCharger
    from hal.clock import RealClock

    clock = RealClock()
    sim = SimulatedCharger(
        "sim-ac", journal_path=tmp_path / "journal.db", settings=ConnectorSettings(free_charging=False), clock=clock
    )
    await sim.start()
    assert sim.connector is not None
    settings = StationSettings(
        STATION,
        version=version,  # type: ignore[arg-type]
        csms_url=peer.url,
        security=Security(profile=1, password="a-sixteen-char-password"),
        backoff=Backoff(minimum_s=0.2, random_range_s=0.2),
    )
    station = build_station(
        settings, {1: sim.connector}, clock=clock, data_dir=tmp_path / "data", journal_path=tmp_path / "journal.db"
    )
    station.adapter.device_model.set_variables(  # type: ignore[attr-defined]
        [{"component": {"name": "SampledDataCtrlr"}, "variable": {"name": "TxUpdatedInterval"}, "attributeValue": "1"}]
    )
    await station.start()
    return Bench(sim, station, peer)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
def test_a_full_session_against_the_strict_peer(tmp_path: Path, version: str) -> None:
    async def scenario() -> None:
        async with await OcppRpcCsms.start(interval=30) as peer:
            b = await _bench(tmp_path, peer, version)
            try:
                [boot] = await b.until("BootNotification")
                assert boot["payload"]["reason"] == "PowerUp"
                connected = [e for e in peer.events if e.get("ev") == "connected"]
                assert connected[-1]["protocol"] == f"ocpp{version}"
                await b.until("StatusNotification")
                await _charge(b, "TAG-201")
                events = await b.until("TransactionEvent", 3, timeout=15.0)
                started = events[0]["payload"]
                assert started["eventType"] == "Started" and started["seqNo"] == 0
                assert started["idToken"]["idToken"] == "TAG-201"
                tx_id = started["transactionInfo"]["transactionId"]

                profile = {
                    "id": 5,
                    "stackLevel": 0,
                    "chargingProfilePurpose": "TxDefaultProfile",
                    "chargingProfileKind": "Relative",
                    "chargingSchedule": [
                        {"id": 1, "chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10}]}
                    ],
                }
                answer = await peer.call(STATION, "SetChargingProfile", {"evseId": 1, "chargingProfile": profile})
                assert answer["status"] == "Accepted"
                await asyncio.sleep(0.5)
                assert b.sim.connector is not None
                assert b.sim.connector.status().duty_permille == duty_for_current(10.0)

                stop = await peer.call(STATION, "RequestStopTransaction", {"transactionId": tx_id})
                assert stop["status"] == "Accepted"
                await peer.wait_for(
                    lambda _: any(e["payload"]["eventType"] == "Ended" for e in b.calls("TransactionEvent")), 10.0
                )
                seq = [e["payload"]["seqNo"] for e in b.calls("TransactionEvent")]
                assert seq == list(range(len(seq))), "seqNo without gaps or repeats"
                ended = b.calls("TransactionEvent")[-1]["payload"]
                assert ended["transactionInfo"]["stoppedReason"] == "Remote"
                assert peer.strict_errors() == []
            finally:
                await asyncio.wait_for(b.station.stop(), 15.0)
                await asyncio.wait_for(b.sim.close(), 15.0)

    asyncio.run(scenario())
