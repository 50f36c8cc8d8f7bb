"""Benchmark: the OCPP uplink's start-up and its offline queue.

    .venv/bin/python -m tools.bench.ocpp_uplink [--boots 10] [--messages 10000]

1. **Process start to BootNotification accepted.** ``evse run --board sim-ac --csms URL`` is started
   as a new process against our embedded CSMS on loopback (a real websocket), and the time from
   ``exec`` to the CSMS answering the BootNotification is taken, ``--boots`` times. Reference: the
   same interpreter importing the firmware's packages and exiting, the floor any Python firmware
   pays before it can say anything.
2. **Replay of queued messages.** ``--messages`` MeterValues are queued in the persistent outbox
   (SQLite, the journal's file) while the CSMS is unreachable, then the link comes up and the outbox
   drains them in order, one call and one acknowledgement at a time as OCPP requires. Reference:
   the same number of the same calls made directly on the same websocket, without the outbox.

Prints median and p99 of each, and the ratio to the reference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from firmware.ocpp.outbox import Outbox, OutboxSender, QueuedMessage
from firmware.ocpp.transport import Security, open_link
from firmware.ocpp.v16 import ChargePoint16
from hal.clock import RealClock
from hil.csms import EmbeddedCsms

ROOT = Path(__file__).resolve().parents[2]
BOOT_TIMEOUT_S = 60.0
IMPORTS = "import firmware.app, firmware.ocpp.v16, firmware.ocpp.uplink, board.build"


def _quantiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


async def _boot_once(csms: EmbeddedCsms, data: Path, n: int) -> float:
    before = len(csms.events)
    station = f"BENCH-{n}"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "firmware.cli", "run", "--board", "sim-ac", "--csms", csms.url, "--id", station,
        "--data-dir", str(data / station), "--control", str(data / f"{station}.sock"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        deadline = started + BOOT_TIMEOUT_S
        while time.perf_counter() < deadline:
            for event in csms.events[before:]:
                if event.station == station and event.action == "BootNotification" and event.dir == "tx":
                    if event.kind == "result" and event.payload.get("status") == "Accepted":
                        return time.perf_counter() - started
            await asyncio.sleep(0.002)
        raise TimeoutError(f"{station}: no accepted BootNotification within {BOOT_TIMEOUT_S:g} s")
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 10.0)
        if proc.returncode is None:
            proc.kill()


async def _imports_once() -> float:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", IMPORTS, cwd=ROOT)
    await proc.wait()
    return time.perf_counter() - started


class _Station:
    """Just enough of an OcppStation for ChargePoint16 to run on its own (message events ignored)."""

    def __init__(self, station_id: str) -> None:
        from firmware.ocpp.station import StationSettings

        self.settings = StationSettings(station_id)

    def message_event(self, *args: Any) -> None:
        return None


def _meter_values(i: int) -> dict[str, Any]:
    return {
        "connectorId": 1,
        "meterValue": [
            {
                "timestamp": f"2026-01-05T08:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
                "sampledValue": [
                    {"value": str(1000 + i), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                    {"value": "7400", "measurand": "Power.Active.Import", "unit": "W"},
                ],
            }
        ],
    }


async def _replay(csms: EmbeddedCsms, data: Path, messages: int, *, via_outbox: bool) -> list[float]:
    """Per-message latencies (s) of draining ``messages`` MeterValues."""
    from ocpp.v16 import call

    link = await open_link(csms.url, "REPLAY", "ocpp1.6", Security())
    cp = ChargePoint16(_Station("REPLAY"), None, link)  # type: ignore[arg-type]
    reader = asyncio.create_task(cp.start())
    latencies: list[float] = []
    try:
        await cp.call(call.BootNotification(charge_point_model="bench", charge_point_vendor="evse"), suppress=False)
        if not via_outbox:
            for i in range(messages):
                t = time.perf_counter()
                payload = _meter_values(i)
                await cp.call(
                    call.MeterValues(connector_id=1, meter_value=_snake(payload["meterValue"])), suppress=False
                )
                latencies.append(time.perf_counter() - t)
            return latencies
        outbox = Outbox(data / "replay-journal.db")
        for start in range(0, messages, 500):  # the outage: messages pile up in the journal
            for i in range(start, min(messages, start + 500)):
                outbox.put("MeterValues", _meter_values(i), transactional=False)
        last = time.perf_counter()
        done = asyncio.Event()

        async def send(message: QueuedMessage) -> dict[str, Any]:
            payload = message.payload
            await cp.call(call.MeterValues(connector_id=1, meter_value=_snake(payload["meterValue"])), suppress=False)
            return {}

        def delivered(message: QueuedMessage, response: dict[str, Any]) -> None:
            nonlocal last
            now = time.perf_counter()
            latencies.append(now - last)
            last = now
            if len(latencies) == messages:
                done.set()

        sender = OutboxSender(outbox, send, clock=RealClock(), attempts=lambda: 3, retry_interval_s=lambda: 1.0)
        sender.on_delivered = delivered
        last = time.perf_counter()
        sender.link_up()
        task = asyncio.create_task(sender.run())
        await asyncio.wait_for(done.wait(), 600.0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        outbox.close()
        return latencies
    finally:
        reader.cancel()
        await link.close()


def _snake(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from ocpp.charge_point import camel_to_snake_case

    converted: list[dict[str, Any]] = camel_to_snake_case(values)
    return converted


async def measure(boots: int, messages: int) -> None:
    clock = RealClock()
    csms = EmbeddedCsms(clock=clock)
    await csms.serve()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        boot_times = [await _boot_once(csms, data, n) for n in range(boots)]
        import_times = [await _imports_once() for _ in range(boots)]
        direct = await _replay(csms, data, messages, via_outbox=False)
        queued = await _replay(csms, data, messages, via_outbox=True)
    await csms.stop()

    print(f"{'':<44} {'median':>10} {'p99':>10}   {'reference':<28} {'median':>10} {'p99':>10}  {'ratio':>6}")
    b_med, b_p99 = _quantiles(boot_times)
    i_med, i_p99 = _quantiles(import_times)
    print(
        f"{'process start -> BootNotification Accepted':<44} {b_med * 1000:>8.0f}ms {b_p99 * 1000:>8.0f}ms   "
        f"{'import the firmware, exit':<28} {i_med * 1000:>8.0f}ms {i_p99 * 1000:>8.0f}ms  {b_med / i_med:>5.2f}x"
    )
    q_med, q_p99 = _quantiles(queued)
    d_med, d_p99 = _quantiles(direct)
    print(
        f"{'queued message replay, per message':<44} {q_med * 1e3:>8.2f}ms {q_p99 * 1e3:>8.2f}ms   "
        f"{'direct calls, no outbox':<28} {d_med * 1e3:>8.2f}ms {d_p99 * 1e3:>8.2f}ms  {q_med / d_med:>5.2f}x"
    )
    print(
        f"{messages} queued messages replayed in {sum(queued):.1f} s "
        f"({messages / sum(queued):.0f} msg/s; direct: {sum(direct):.1f} s); {boots} boots"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--boots", type=int, default=10, help="process starts to time")
    parser.add_argument("--messages", type=int, default=10_000, help="queued messages to replay")
    args = parser.parse_args()
    asyncio.run(measure(args.boots, args.messages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
