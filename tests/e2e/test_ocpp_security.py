"""Security profile 1 end to end: the firmware station, in real time over a real websocket, presents its
Basic-auth password (standards-facts.md 4.7) to the independent strict `ocpp-rpc` CSMS
(tests/peers/ocpp_csms.py), which checks it per identity and answers a wrong one with HTTP 401."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from firmware.connector import ConnectorSettings
from firmware.ocpp.station import OcppStation, StationSettings
from firmware.ocpp.transport import Backoff, Security
from firmware.ocpp.uplink import build_station
from firmware.simulation import SimulatedCharger
from hal.clock import RealClock
from tests.peers.ocpp_csms import OcppRpcCsms

STATION = "CP-SEC"
PASSWORD = "s3cret-basic-auth-key"  # 21 characters: inside the 16-40 range of BasicAuthPassword
#: Short waits, so that a station that kept retrying after a refusal would do so many times in the test.
FAST_BACKOFF = Backoff(minimum_s=0.2, random_range_s=0.1)


@asynccontextmanager
async def station_on(
    tmp_path: Path, peer: OcppRpcCsms, password: str, events: list[dict[str, Any]]
) -> AsyncIterator[OcppStation]:
    clock = RealClock()
    sim = SimulatedCharger(
        "sim-ac", journal_path=tmp_path / "journal.db", settings=ConnectorSettings(free_charging=False), clock=clock
    )
    await sim.start()
    assert sim.connector is not None
    station = build_station(
        StationSettings(
            STATION,
            csms_url=peer.url,
            security=Security(profile=1, password=password),
            backoff=FAST_BACKOFF,
        ),
        {1: sim.connector},
        clock=clock,
        data_dir=tmp_path / "data",
        journal_path=tmp_path / "journal.db",
        on_ocpp=events.append,
        config_defaults={"HeartbeatInterval": "30"},
    )
    await station.start()
    try:
        yield station
    finally:
        await station.stop()
        await sim.close()


def _calls(peer: OcppRpcCsms, action: str) -> list[dict[str, Any]]:
    return [e for e in peer.events if e.get("ev") == "call" and e.get("dir") == "rx" and e.get("action") == action]


@pytest.mark.timeout(60)
def test_profile_1_station_boots_with_the_right_password(tmp_path: Path) -> None:
    async def scenario() -> None:
        events: list[dict[str, Any]] = []
        async with await OcppRpcCsms.start(interval=30) as peer:
            await peer.set(passwords={STATION: PASSWORD})
            async with station_on(tmp_path, peer, PASSWORD, events) as station:
                connected = await peer.wait_for(lambda e: e["ev"] == "connected", 15.0)
                assert connected["identity"] == STATION and connected["protocol"] == "ocpp1.6"
                assert connected["password"] == PASSWORD
                token = base64.b64encode(f"{STATION}:{PASSWORD}".encode()).decode()
                assert connected["headers"]["authorization"] == f"Basic {token}"
                await peer.wait_for(lambda _: bool(_calls(peer, "BootNotification")), 15.0)
                await peer.wait_for(lambda _: station.online, 10.0)
                assert station.boot_accepted
                assert not [e for e in peer.events if e["ev"] == "rejected"]
                assert peer.strict_errors() == []

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_profile_1_station_with_a_wrong_password_stops_and_never_boots(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        events: list[dict[str, Any]] = []
        async with await OcppRpcCsms.start(interval=30) as peer:
            await peer.set(passwords={STATION: PASSWORD})
            async with station_on(tmp_path, peer, "not-the-right-password", events) as station:
                rejected = await peer.wait_for(lambda e: e["ev"] == "rejected", 15.0)
                assert rejected["identity"] == STATION and rejected["reason"] == "bad password"
                # The station reports the refusal as a TransportError and waits CONFIG_RETRY_S (300 s) to retry.
                for _ in range(100):
                    if any(e["action"] == "error" for e in events):
                        break
                    await asyncio.sleep(0.05)
                [error] = [e for e in events if e["action"] == "error"]
                assert "HTTP 401" in error["payload"]["error"]
                # Fifteen back-off periods: a station that retried would have knocked again by now.
                await asyncio.sleep(15 * FAST_BACKOFF.minimum_s)
                assert [e["ev"] for e in peer.events if e["ev"] in ("rejected", "connected")] == ["rejected"]
                assert _calls(peer, "BootNotification") == []
                assert not station.online and not station.boot_accepted
                assert not any(e["action"] == "connected" for e in events)

    with caplog.at_level(logging.ERROR, logger="firmware.ocpp.station"):
        asyncio.run(scenario())
    assert any("OCPP uplink disabled" in r.getMessage() and "HTTP 401" in r.getMessage() for r in caplog.records)
