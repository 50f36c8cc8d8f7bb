"""Inside a private network namespace (tests/netns.py): `evse run --secc` on secc0 against our EVCC
simulator on ev0, an ISO 15118-2 AC session end to end through the real firmware process. Prints one
JSON line with what happened; the test in test_iso15118_run.py judges it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from firmware.control import request
from hal.clock import RealClock
from hil.models.evcc import Evcc
from hil.models.evcc_config import EvccConfig, EvSpec
from hil.models.evcc_session import EvccHooks, PowerDraw
from tests.e2e.processes import stop

SECC_TOML = """
interface = "secc0"
evse_id = "DE*EVF*E0001*1"
protocols = ["iso2"]
"""


async def _wait_for(sock: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if sock.exists():
            try:
                if (await request(sock, {"cmd": "status"}, timeout_s=2.0))["ok"]:
                    return
            except (OSError, TimeoutError):
                pass
        await asyncio.sleep(0.1)
    raise TimeoutError("the firmware's control socket did not answer")


async def main_async(work: Path) -> dict[str, Any]:
    (work / "secc.toml").write_text(SECC_TOML)
    sock = work / "evse.sock"
    log = (work / "evse.log").open("wb")
    cmd = [
        sys.executable, "-m", "firmware.cli", "run", "--board", "sim-ac", "--free",
        "--secc", str(work / "secc.toml"), "--data-dir", str(work / "data"), "--control", str(sock),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    contactor_seen: list[tuple[float, bool]] = []
    try:
        await _wait_for(sock, time.monotonic() + 30.0)
        await request(sock, {"cmd": "sim", "ev_state": "B", "pp_ohm": 220.0})
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Task[Any]] = []

        def pilot(state: str) -> None:
            pending.append(loop.create_task(request(sock, {"cmd": "sim", "ev_state": state})))

        def power(draw: PowerDraw) -> None:
            pending.append(loop.create_task(request(sock, {"cmd": "sim", "current_a": max(0.0, draw.current_a)})))

        async def watch() -> None:
            while True:
                status = (await request(sock, {"cmd": "status"}))["result"]
                if not contactor_seen or contactor_seen[-1][1] != status["contactor_closed"]:
                    contactor_seen.append((time.monotonic(), status["contactor_closed"]))
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        config = EvccConfig(
            ev=EvSpec(soc=0.5, ac_max_current_a=16.0), protocols=("iso2",), energy="AC", max_charge_s=3.0
        )
        evcc = Evcc(config, clock=RealClock(), hooks=EvccHooks(pilot=pilot, power=power))
        async with asyncio.timeout(60):
            result = await evcc.run("ev0")
        await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.sleep(0.5)
        watcher.cancel()
        status = (await request(sock, {"cmd": "status"}))["result"]
        return {
            "ok": result.ok,
            "protocol": result.protocol,
            "stop_reason": result.stop_reason,
            "requests": [e.request for e in result.exchanges],
            "codes": sorted({e.code for e in result.exchanges if e.code}),
            "contactor": [closed for _, closed in contactor_seen],
            "pilot_after": status["pilot_mode"],
            "faults": status["faults"],
        }
    finally:
        stop(proc)
        log.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            summary = asyncio.run(main_async(Path(tmp)))
        except Exception as exc:  # report, with the firmware's log, instead of a bare traceback
            log = (Path(tmp) / "evse.log").read_text(errors="replace")[-4000:]
            summary = {"error": repr(exc), "log": log}
        print(json.dumps(summary))
