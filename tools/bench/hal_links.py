"""Benchmark: round-trip latency of the two HAL links that cross a bus, against the bare transport.

    .venv/bin/python -m tools.bench.hal_links [--n 300]

* co-processor link: ``McuLink.request(READ_STATUS)`` over a pty to the simulated co-processor,
  against a bare pty echo of a frame of the same size (the transport alone);
* converter: ``InfyBidiConverter.read_status()`` (four request/reply transactions) on a python-can
  ``virtual`` bus to the simulated module, against four bare request/reply frames on the same kind of
  bus answered by a trivial responder.

Prints median and p99 in milliseconds, and the ratio ours / reference.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
import time
import tty

import can

from hal.buses import open_can, open_serial
from hal.clock import RealClock
from hal.drivers.infy_can import InfyBidiConverter
from hal.drivers.mcu_frames import MsgType, encode_frame
from hal.drivers.mcu_link import McuLink
from hal.sim.coprocessor import CoprocessorSim
from hal.sim.infy_module import InfyModuleSim
from hal.sim.plant import Plant
from hal.types import ConverterCapabilities
from tools.bench.stats import median_p99_ms


async def bench_mcu(n: int) -> list[float]:
    sim, path = CoprocessorSim.open_pty(Plant())
    port = open_serial(path, 115200, timeout=0.05)
    link = McuLink(port, name="bench", clock=RealClock())
    await link.start()
    try:
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            await link.request(MsgType.READ_STATUS)
            samples.append(time.perf_counter() - t0)
        return samples
    finally:
        await link.stop()
        port.close()
        sim.close()


def bench_pty_echo(n: int, size: int) -> list[float]:
    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            data = os.read(master, 4096)
            os.write(master, data)

    threading.Thread(target=echo, daemon=True).start()
    frame = bytes(size)
    samples = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(slave, frame)
            got = 0
            while got < size:
                got += len(os.read(slave, 4096))
            samples.append(time.perf_counter() - t0)
    finally:
        stop.set()
        os.write(slave, b"\0")
        os.close(slave)
    return samples


async def bench_converter(n: int) -> list[float]:
    channel = "bench-conv"
    sim = InfyModuleSim(channel, clock=RealClock())
    bus = open_can("virtual", channel, 125000)
    caps = ConverterCapabilities(
        max_voltage_v=1000, min_voltage_v=150, max_current_a=50, max_power_w=20000, bidirectional=True
    )
    conv = InfyBidiConverter(bus, name="bench", module_address=0, capabilities=caps, clock=RealClock())
    try:
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            await conv.read_status()
            samples.append(time.perf_counter() - t0)
        return samples
    finally:
        await conv.stop()
        bus.shutdown()
        sim.close()


def bench_can_bare(n: int, transactions: int) -> list[float]:
    channel = "bench-bare"
    responder = can.Bus(interface="virtual", channel=channel)
    requester = can.Bus(interface="virtual", channel=channel)

    def answer(msg: can.Message) -> None:
        responder.send(can.Message(arbitration_id=msg.arbitration_id ^ 0xFF, data=msg.data, is_extended_id=True))

    notifier = can.Notifier(responder, [answer])
    request = can.Message(arbitration_id=0x02A300F0, data=bytes(8), is_extended_id=True)
    samples = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            for _ in range(transactions):
                requester.send(request)
                requester.recv(timeout=1.0)
            samples.append(time.perf_counter() - t0)
    finally:
        notifier.stop()
        responder.shutdown()
        requester.shutdown()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="round trips per measurement")
    args = parser.parse_args()
    status_frame_len = len(encode_frame(0, MsgType.READ_STATUS | 0x80, bytes(18)))
    rows = [
        (
            "co-processor READ_STATUS",
            asyncio.run(bench_mcu(args.n)),
            "bare pty echo",
            bench_pty_echo(args.n, status_frame_len),
        ),
        (
            "converter read_status (4 tx)",
            asyncio.run(bench_converter(args.n)),
            "bare virtual CAN x4",
            bench_can_bare(args.n, 4),
        ),
    ]
    print(
        f"{'link':<30} {'median ms':>10} {'p99 ms':>9}   {'reference':<20} {'median ms':>10} {'p99 ms':>9} {'ratio':>7}"
    )
    for name, ours, ref_name, ref in rows:
        om, op = median_p99_ms(ours)
        rm, rp = median_p99_ms(ref)
        print(f"{name:<30} {om:>10.3f} {op:>9.3f}   {ref_name:<20} {rm:>10.3f} {rp:>9.3f} {om / rm:>6.1f}x")


if __name__ == "__main__":
    main()
