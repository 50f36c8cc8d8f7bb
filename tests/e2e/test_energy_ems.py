"""The firmware process with the site energy manager and a site EMS over MQTT, end to end: `evse run
--energy FILE` on the simulated board, a real mosquitto broker (installed and started by
tests/peers/mosquitto.py), and an EMS client that reports the site power and sets the site limit.
The connector's offer follows, `evse why` explains it with the site's chain, the retained status
shows the limit in force, and when the EMS goes silent the static fallback takes over."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from firmware.control import request
from tests.peers.mosquitto import INSTALL_TIMEOUT_S, MosquittoBroker

USERS = {"evse": "station-password-1", "ems": "ems-password-2"}
PREFIX = "evse/E2E"
WAIT_S = 20.0


def _ctl(sock: Path, cmd: str) -> Any:
    answer = asyncio.run(request(sock, {"cmd": cmd}, timeout_s=5.0))
    assert answer["ok"], answer
    return answer["result"]


def _until(what: str, predicate: Any, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, TimeoutError, KeyError):
            last = None
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


async def _publish(broker: MosquittoBroker, topic: str, payload: dict[str, Any]) -> None:
    async with aiomqtt.Client(broker.host, broker.port, username="ems", password=USERS["ems"], timeout=10) as c:
        await c.publish(f"{PREFIX}/{topic}", json.dumps(payload), qos=1)


async def _status(broker: MosquittoBroker) -> dict[str, Any]:
    async with aiomqtt.Client(broker.host, broker.port, username="ems", password=USERS["ems"], timeout=10) as c:
        await c.subscribe(f"{PREFIX}/status", qos=1)
        async with asyncio.timeout(10):
            async for message in c.messages:
                return dict(json.loads(bytes(message.payload)))  # type: ignore[arg-type]
    raise AssertionError("no retained status")


@pytest.mark.timeout(INSTALL_TIMEOUT_S + 120)
def test_evse_run_with_an_mqtt_ems_balances_and_falls_back(tmp_path: Path) -> None:
    (tmp_path / "mqtt-password").write_text(USERS["evse"])
    energy = tmp_path / "energy.toml"
    energy.write_text(
        "[site]\n"
        "grid_import_max_kw = 30\n"
        'site_meter = "ems"\n'
        "meter_timeout_s = 5\n"
        "fallback_ev_total_kw = 4.8\n"
        "hold_s = 0\n"
        "min_pause_s = 0\n"
        "[ems.mqtt]\n"
        'host = "127.0.0.1"\n'
        "port = {port}\n"
        'username = "evse"\n'
        f'password_file = "{tmp_path / "mqtt-password"}"\n'
        f'topic_prefix = "{PREFIX}"\n'
    )
    with MosquittoBroker(USERS) as broker:
        energy.write_text(energy.read_text().replace("{port}", str(broker.port)))
        sock = tmp_path / "evse.sock"
        cmd = [
            sys.executable, "-m", "firmware.cli", "run", "--board", "sim-ac", "--free", "--sim-ev", "C",
            "--energy", str(energy), "--data-dir", str(tmp_path / "data"), "--control", str(sock),
        ]  # fmt: skip
        log = (tmp_path / "evse.log").open("wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            _until("the firmware answers", lambda: sock.exists() and _ctl(sock, "status"))

            def feed(limit_kw: float, building_kw: float) -> None:
                asyncio.run(
                    _publish(
                        broker, "site/limit/set", {"import_max_w": limit_kw * 1000, "export_max_w": None, "valid_s": 60}
                    )
                )
                asyncio.run(_publish(broker, "site/measurement/set", {"power_w": building_kw * 1000}))

            # 12 kW at the connection point, 5 kW of it other loads, the EV draws nothing yet: 7 kW, 10.1 A.
            def offer_near(amps: float) -> bool:
                feed(12, 5)
                status = _ctl(sock, "status")
                return status["pilot_mode"] == "pwm" and abs(status["effective_a"] - amps) < 0.3

            _until("the offer follows the EMS", lambda: offer_near(10.1))
            why = _ctl(sock, "why")
            assert "site: " in why and "site energy manager share" in why and "eq. 1.2.5.1" in why, why

            # The status is published on its own period: the retained one may still predate the setpoint.
            def status_with_setpoint() -> dict[str, Any] | None:
                status = asyncio.run(_status(broker))
                return status if status is not None and status["site"]["import_limit_w"] == 12_000 else None

            _until("the retained status shows the EMS setpoint", status_with_setpoint)

            # The EMS goes silent: no site reading for 5 s, the static 4.8 kW total (R142): 6.9 A.
            _until(
                "the fallback",
                lambda: abs(_ctl(sock, "status")["effective_a"] - 6.9) < 0.2 and "FALLBACK" in _ctl(sock, "why"),
            )
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(15.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
            log.close()
        assert code == 0, (tmp_path / "evse.log").read_text()[-3000:]
