"""End to end against an independent CSMS: the firmware on the simulated board, in real time, over a
real websocket to the strict `ocpp-rpc` server (npm, installed by tests/peers/ocpp_csms.py with
`npm ci`). The peer validates every message we send against the official OCPP 1.6 schemas including
date-time formats; the suite requires zero strict-validation failures.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from firmware.connector import ConnectorSettings
from firmware.iec61851.pilot import duty_for_current
from firmware.ocpp.station import OcppStation, StationSettings
from firmware.ocpp.transport import Backoff
from firmware.ocpp.uplink import build_station
from firmware.simulation import SimulatedCharger
from hal.clock import RealClock
from tests.peers.ocpp_csms import OcppRpcCsms

STATION = "E2E-CP1"
CONFIG = {"MeterValueSampleInterval": "1", "ClockAlignedDataInterval": "0", "HeartbeatInterval": "30"}


@dataclass
class Bench:
    sim: SimulatedCharger
    station: OcppStation
    peer: OcppRpcCsms

    def calls(self, action: str) -> list[dict[str, Any]]:
        return [
            e for e in self.peer.events if e.get("ev") == "call" and e.get("dir") == "rx" and e.get("action") == action
        ]

    async def until(self, action: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        await self.peer.wait_for(lambda _: len(self.calls(action)) >= count, timeout)
        return self.calls(action)


@asynccontextmanager
async def bench(tmp_path: Path, peer: OcppRpcCsms) -> AsyncIterator[Bench]:
    clock = RealClock()
    sim = SimulatedCharger(
        "sim-ac", journal_path=tmp_path / "journal.db", settings=ConnectorSettings(free_charging=False), clock=clock
    )
    await sim.start()
    assert sim.connector is not None
    station = build_station(
        StationSettings(STATION, csms_url=peer.url, backoff=Backoff(minimum_s=0.2, random_range_s=0.2)),
        {1: sim.connector},
        clock=clock,
        data_dir=tmp_path / "data",
        journal_path=tmp_path / "journal.db",
        config_defaults=CONFIG,
    )
    await station.start()
    try:
        yield Bench(sim, station, peer)
    finally:
        await station.stop()
        await sim.close()


async def _charge(b: Bench, tag: str) -> None:
    plant = b.sim.plant
    plant.pp_ohm, plant.ev_state = 220.0, "B"
    await asyncio.sleep(0.3)
    assert await b.station.present_id(1, tag) == "Accepted"
    await asyncio.sleep(0.3)
    plant.ev_state = "C"
    for _ in range(50):
        if plant.contacts_closed:
            break
        await asyncio.sleep(0.05)
    assert plant.contacts_closed
    plant.ev_current_a = [8.0, 8.0, 8.0]


@pytest.mark.timeout(90)
def test_a_full_session_against_the_strict_peer(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with await OcppRpcCsms.start(interval=30) as peer, bench(tmp_path, peer) as b:
            [boot] = await b.until("BootNotification")
            assert boot["payload"]["chargePointVendor"] == "evse-firmware"
            await b.until("StatusNotification")
            await _charge(b, "TAG-E2E")
            [start] = await b.until("StartTransaction")
            assert start["payload"]["idTag"] == "TAG-E2E"
            assert b.calls("Authorize")
            await b.until("MeterValues", 3)

            # A TxDefault profile from the CSMS lowers the pilot duty to the 10 A offer (IEC 61851-1 Table A.8,
            # rounded down so the offer never exceeds the limit).
            profile = {
                "chargingProfileId": 1,
                "stackLevel": 0,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Relative",
                "chargingSchedule": {
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10}],
                },
            }
            answer = await peer.call(STATION, "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": profile})
            assert answer["status"] == "Accepted"
            await asyncio.sleep(0.5)
            assert b.sim.connector is not None
            assert b.sim.connector.status().duty_permille == duty_for_current(10.0)
            composite = await peer.call(STATION, "GetCompositeSchedule", {"connectorId": 1, "duration": 600})
            assert composite["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 10

            # The CSMS restarts mid-transaction: the station reconnects, boots again, carries on.
            port = peer.port
            await peer.stop()
            await asyncio.sleep(2.0)
            async with await OcppRpcCsms.start(port=port, interval=30) as peer2:
                b.peer = peer2
                await b.until("BootNotification", timeout=15.0)
                await b.until("MeterValues", 2, timeout=15.0)
                tx_id = b.calls("MeterValues")[-1]["payload"]["transactionId"]
                stop = await peer2.call(STATION, "RemoteStopTransaction", {"transactionId": tx_id})
                assert stop["status"] == "Accepted"
                [stopped] = await b.until("StopTransaction")
                assert stopped["payload"]["reason"] == "Remote" and stopped["payload"]["transactionId"] == tx_id
                assert peer2.strict_errors() == []
            assert peer.strict_errors() == []

    asyncio.run(scenario())


@pytest.mark.timeout(90)
def test_two_hundred_queued_messages_are_replayed_in_order_after_an_outage(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with await OcppRpcCsms.start(interval=30) as peer, bench(tmp_path, peer) as b:
            await b.until("BootNotification")
            await _charge(b, "TAG-Q")
            await b.until("StartTransaction")
            port = peer.port
            await peer.stop()
            await asyncio.sleep(0.5)
            assert not b.station.online
            for _ in range(200):
                b.station.send_meter_values("Trigger", transactions_only=True)
            queued = len(b.station.outbox)
            assert queued >= 200
            async with await OcppRpcCsms.start(port=port, interval=30) as peer2:
                b.peer = peer2
                # The peer re-evaluates a condition on its own events only: poll the station's outbox.
                for _ in range(450):
                    if len(b.station.outbox) == 0:
                        break
                    await asyncio.sleep(0.1)
                assert len(b.station.outbox) == 0, "the outbox drained within 45 s"
                values = b.calls("MeterValues")
                triggered = [
                    v for v in values if v["payload"]["meterValue"][0]["sampledValue"][0]["context"] == "Trigger"
                ]
                assert len(triggered) == 200, "none lost, none duplicated"
                stamps = [v["payload"]["meterValue"][0]["timestamp"] for v in values]
                assert stamps == sorted(stamps), "in the order they were taken"
                assert peer2.strict_errors() == []

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_evse_run_with_a_csms_url_reports_to_it(tmp_path: Path) -> None:
    """The firmware process as a board runs it: `evse run --csms URL` boots, reports its status and, with
    an EV already connected on a free-charging board, a transaction; SIGTERM ends it cleanly."""

    async def scenario() -> None:
        async with await OcppRpcCsms.start(interval=30) as peer:
            cmd = [
                sys.executable, "-m", "firmware.cli", "run", "--board", "sim-ac", "--free", "--sim-ev", "B",
                "--csms", peer.url, "--id", "CLI-CP", "--data-dir", str(tmp_path / "data"),
                "--control", str(tmp_path / "evse.sock"),
            ]  # fmt: skip
            log = (tmp_path / "evse.log").open("wb")
            proc = await asyncio.create_subprocess_exec(*cmd, stdout=log, stderr=subprocess.STDOUT)
            try:
                boot = await peer.wait_for(lambda e: e.get("action") == "BootNotification", 20.0)
                assert boot["identity"] == "CLI-CP"
                start = await peer.wait_for(lambda e: e.get("action") == "StartTransaction", 20.0)
                assert start["payload"]["idTag"] == "FREE"
                assert peer.strict_errors() == []
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                try:
                    code = await asyncio.wait_for(proc.wait(), 15.0)
                except TimeoutError:
                    proc.kill()
                    raise
                log.close()
            assert code == 0, (tmp_path / "evse.log").read_text()[-2000:]
            assert (tmp_path / "data" / "journal.db").is_file() and (tmp_path / "data" / "ocpp").is_dir()

    asyncio.run(scenario())
