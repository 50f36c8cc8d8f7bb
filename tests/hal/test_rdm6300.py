"""The RDM6300 RFID reader driver (hal.drivers.rdm6300) against the simulated module on a real pty
(and on a pyserial ``loop://`` port), opened through ``hal.buses.open_serial`` like ``/dev/serial0``.

The driver's debounce and the simulator's hold/repeat timing share one VirtualClock that only moves
when a test says so; the only real-time waits are for bytes to cross the line, bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import serial
from hypothesis import given
from hypothesis import strategies as st

from hal.buses import open_serial
from hal.clock import VirtualClock
from hal.drivers.rdm6300 import (
    BAUDRATE,
    ETX,
    READ_TIMEOUT_S,
    STX,
    WARN_EVERY_S,
    FrameError,
    FrameParser,
    ParserStats,
    Rdm6300Reader,
    card_id,
    decode_frame,
    encode_frame,
)
from hal.errors import DeviceNotFound
from hal.interfaces import IdReader
from hal.sim.rdm6300 import Rdm6300Sim

pytestmark = pytest.mark.timeout(30)

CARD_A = "62E3086CED"  # the RDM630 data sheet's example card
CARD_B = "1000860F44"
WAIT_S = 3.0  # bound on bytes crossing the pty and the reader thread


@dataclass
class Rig:
    clock: VirtualClock
    sim: Rdm6300Sim
    reader: Rdm6300Reader
    ids: list[str] = field(default_factory=list)

    @property
    def stats(self) -> ParserStats:
        return self.reader.parser_stats

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        """Wait (real time, bounded) for bytes sent by the simulator to have been handled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}; parser {self.stats}, reader {self.reader.stats}")
            await asyncio.sleep(0.002)

    async def frames_handled(self, count: int) -> None:
        await self.until(lambda: self.stats.frames >= count, f"{count} good frames")


@contextlib.asynccontextmanager
async def rig(*, transport: str = "pty", repeat_after_s: float = 2.0, collect: bool = True) -> AsyncIterator[Rig]:
    clock = VirtualClock()
    port: Any
    if transport == "pty":
        sim, path = Rdm6300Sim.open_pty(clock=clock)
        port = open_serial(path, BAUDRATE, READ_TIMEOUT_S)
    else:
        port = serial.serial_for_url("loop://", baudrate=BAUDRATE, timeout=READ_TIMEOUT_S)
        sim = Rdm6300Sim.on_port(port, clock=clock)
    reader = Rdm6300Reader(port, name="rfid", clock=clock, repeat_after_s=repeat_after_s)
    r = Rig(clock, sim, reader)
    task: asyncio.Task[None] | None = None
    if collect:

        async def collector() -> None:
            while True:
                r.ids.append(await reader.read_id())

        task = asyncio.create_task(collector())
        await asyncio.sleep(0)  # the reader thread is up (and the stale input flushed) before anything is sent
    try:
        yield r
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await reader.close()
        port.close()
        sim.close()


# ------------------------------------------------------------------------------------------- frames
@pytest.mark.parametrize(
    ("card", "frame"),
    [
        # RDM630 data sheet: card 62E3086CED, checksum 62^E3^08^6C^ED = 08.
        ("62E3086CED", b"\x0262E3086CED08\x03"),
        # Hobby Components forum capture: 10 00 86 F4 44, checksum 26.
        ("100086F444", b"\x02100086F44426\x03"),
        ("0000000000", b"\x02000000000000\x03"),
        ("FFFFFFFFFF", b"\x02FFFFFFFFFFFF\x03"),
    ],
)
def test_published_frames_encode_and_decode(card: str, frame: bytes) -> None:
    assert encode_frame(bytes.fromhex(card)) == frame
    assert card_id(decode_frame(frame)) == card


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"\x0262E3086CED09\x03", "checksum 0x09 does not match 0x08"),
        (b"\x0262E3086CEZ08\x03", "character 0x5A at position 9 is not a hex digit"),
        (b"\x0262E3086CED0\x03", "not a 14-byte STX..ETX frame"),
        (b"\x0362E3086CED08\x02", "not a 14-byte STX..ETX frame"),
    ],
)
def test_bad_frames_say_what_is_wrong(frame: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        decode_frame(frame)


@given(st.binary(min_size=5, max_size=5))
def test_any_id_round_trips_through_a_frame(data: bytes) -> None:
    frame = encode_frame(data)
    assert len(frame) == 14 and frame[0] == STX and frame[-1] == ETX
    assert decode_frame(frame) == data
    ident = card_id(data)
    assert len(ident) == 10 and ident == ident.upper() and bytes.fromhex(ident) == data  # fits CiString20


@given(
    st.binary(min_size=5, max_size=5),
    st.binary(max_size=40).map(lambda b: b.replace(bytes([STX]), b"")),
    st.lists(st.integers(min_value=0, max_value=14), max_size=4),
)
def test_parser_finds_the_frame_after_any_noise_in_any_chunks(data: bytes, noise: bytes, cuts: list[int]) -> None:
    stream = noise + encode_frame(data)
    points = sorted({len(noise) + c for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    parser = FrameParser()
    found = [frame for chunk in chunks for frame in parser.feed(chunk)]
    assert found == [data]
    assert parser.stats.garbage_bytes == len(noise)


@given(st.binary(min_size=5, max_size=5), st.integers(min_value=0, max_value=13), st.integers(0, 255))
def test_a_corrupted_byte_never_yields_another_card(data: bytes, position: int, value: int) -> None:
    frame = bytearray(encode_frame(data))
    frame[position] = value
    parser = FrameParser()
    found = parser.feed(bytes(frame))
    parser.flush()
    # The XOR checksum catches any one changed digit; only a digit spelled in the other case reads the same.
    assert found in ([], [data])


# -------------------------------------------------------------------------------- over the line
@pytest.mark.parametrize("transport", ["pty", "loop"])
def test_a_card_is_read(transport: str) -> None:
    async def main() -> None:
        async with rig(transport=transport, collect=False) as r:
            assert isinstance(r.reader, IdReader)
            read = asyncio.create_task(r.reader.read_id())
            await asyncio.sleep(0)
            r.sim.present(CARD_A, hold_s=0)
            assert await asyncio.wait_for(read, WAIT_S) == CARD_A
            assert r.reader.stats.reads == 1

    asyncio.run(main())


def _corrupt_checksum(sim: Rdm6300Sim) -> None:
    sim.corrupt_next_checksum()
    sim.present(CARD_A, hold_s=0)


def _non_hex(sim: Rdm6300Sim) -> None:
    sim.garbage(b"\x0262E3086CEZ08\x03")


def _too_long(sim: Rdm6300Sim) -> None:
    sim.garbage(b"\x02" + b"0" * 13 + b"\x03")


def _too_short(sim: Rdm6300Sim) -> None:
    sim.garbage(b"\x0262E3086CED0\x03")


def _truncated_then_silence(sim: Rdm6300Sim) -> None:
    sim.truncate_next(6)
    sim.present(CARD_A, hold_s=0)


def _noise(sim: Rdm6300Sim) -> None:
    sim.garbage(b"\x00\xff\x0312AB\x03junk")


# (fault, parser counter it must raise, by how much) -- afterwards a good card must still be read
LINE_FAULTS: list[tuple[str, Callable[[Rdm6300Sim], None], str, int]] = [
    ("bad checksum", _corrupt_checksum, "bad_checksum", 1),
    ("non-hex digit", _non_hex, "malformed", 1),
    ("no ETX after 12 digits", _too_long, "malformed", 1),
    ("ETX after 11 digits", _too_short, "malformed", 1),
    ("truncated, then the line goes silent", _truncated_then_silence, "truncated", 1),
    ("noise between frames", _noise, "garbage_bytes", 12),
]


@pytest.mark.parametrize(("fault", "inject", "counter", "count"), LINE_FAULTS, ids=[f[0] for f in LINE_FAULTS])
def test_a_bad_frame_is_dropped_and_the_next_card_read(
    fault: str, inject: Callable[[Rdm6300Sim], None], counter: str, count: int
) -> None:
    async def main() -> None:
        async with rig() as r:
            inject(r.sim)
            await r.until(lambda: getattr(r.stats, counter) >= count, f"{fault} to be counted")
            assert r.ids == []
            r.sim.present(CARD_B, hold_s=0)
            await r.until(lambda: r.ids != [], "the good card")
            assert r.ids == [CARD_B]
            assert getattr(r.stats, counter) == count

    asyncio.run(main())


def test_a_frame_cut_short_resynchronises_on_the_next_stx() -> None:
    async def main() -> None:
        async with rig() as r:
            r.sim.truncate_next(8)
            r.sim.present(CARD_A, hold_s=0.15)  # frames at 0 (cut short) and 0.1 s
            await r.until(lambda: r.stats.truncated == 1, "the cut frame to be dropped")
            await r.clock.advance(0.1)
            await r.frames_handled(1)
            await r.until(lambda: r.ids != [], "the card")
            assert r.ids == [CARD_A]
            assert r.stats.malformed == 0 and r.stats.bad_checksum == 0

    asyncio.run(main())


def test_a_card_held_on_the_reader_is_reported_once() -> None:
    async def main() -> None:
        async with rig() as r:
            r.sim.present(CARD_A, hold_s=1.0)  # the module repeats the frame every 100 ms
            await r.frames_handled(1)
            for k in range(2, 11):
                await r.clock.advance(0.1)
                await r.frames_handled(k)
            assert r.stats.frames == 10
            assert r.ids == [CARD_A]
            assert r.reader.stats.repeats_suppressed == 9

    asyncio.run(main())


@pytest.mark.parametrize(
    ("away_s", "reported_again"),
    [(0.5, False), (1.99, False), (2.0, True), (30.0, True)],
)
def test_the_same_card_counts_again_only_after_repeat_after_s_away(away_s: float, reported_again: bool) -> None:
    async def main() -> None:
        async with rig(repeat_after_s=2.0) as r:
            r.sim.present(CARD_A, hold_s=0)
            await r.frames_handled(1)
            await r.clock.advance(away_s)
            r.sim.present(CARD_A, hold_s=0)
            await r.frames_handled(2)
            await r.until(lambda: len(r.ids) + r.reader.stats.repeats_suppressed == 2, "the second read handled")
            assert r.ids == ([CARD_A, CARD_A] if reported_again else [CARD_A])

    asyncio.run(main())


def test_a_different_card_is_reported_at_once() -> None:
    async def main() -> None:
        async with rig() as r:
            r.sim.present(CARD_A, hold_s=0)
            await r.frames_handled(1)
            r.sim.present(CARD_B, hold_s=0)
            await r.until(lambda: len(r.ids) == 2, "both cards")
            assert r.ids == [CARD_A, CARD_B]

    asyncio.run(main())


def test_a_cancelled_read_loses_no_card() -> None:
    async def main() -> None:
        async with rig(collect=False) as r:
            first = asyncio.create_task(r.reader.read_id())
            await asyncio.sleep(0)
            first.cancel()  # the caller's deadline ran out before any card came
            with contextlib.suppress(asyncio.CancelledError):
                await first
            r.sim.present(CARD_A, hold_s=0)
            await r.frames_handled(1)
            assert await asyncio.wait_for(r.reader.read_id(), WAIT_S) == CARD_A

    asyncio.run(main())


class _DyingPort:
    """A UART whose device went away (a USB adapter unplugged): every read fails."""

    timeout = READ_TIMEOUT_S
    in_waiting = 0

    def __init__(self) -> None:
        self.reads = 0

    def reset_input_buffer(self) -> None:
        pass

    def read(self, size: int) -> bytes:
        self.reads += 1
        raise serial.SerialException("device reports readiness to read but returned no data")


def test_a_failed_port_raises_a_hal_error_and_is_tried_again() -> None:
    async def main() -> None:
        port = _DyingPort()
        reader = Rdm6300Reader(port, name="RDM6300 on /dev/ttyUSB0", clock=VirtualClock())
        try:
            for attempt in (1, 2):
                with pytest.raises(DeviceNotFound, match=r"RDM6300 on /dev/ttyUSB0: serial port failed"):
                    await asyncio.wait_for(reader.read_id(), WAIT_S)
                assert port.reads == attempt  # each read_id after a failure starts a fresh reader
        finally:
            await reader.close()

    asyncio.run(main())


def test_dropped_frames_are_logged_without_flooding_the_log(caplog: pytest.LogCaptureFixture) -> None:
    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    async def main() -> None:
        async with rig() as r:
            r.sim.corrupt_next_checksum()
            r.sim.present(CARD_A, hold_s=0)
            await r.until(lambda: r.stats.bad_checksum == 1, "the first bad frame")
            r.sim.corrupt_next_checksum()
            r.sim.present(CARD_B, hold_s=0)
            await r.until(lambda: r.stats.bad_checksum == 2, "the second bad frame")
            assert len(warnings()) == 1  # a misreading card repeats 10 times a second: one warning
            await r.clock.advance(WARN_EVERY_S)
            r.sim.truncate_next(3)
            r.sim.present(CARD_A, hold_s=0)
            await r.until(lambda: r.stats.truncated == 1, "the cut frame")

    with caplog.at_level(logging.DEBUG, logger="hal.drivers.rdm6300"):
        asyncio.run(main())
    assert warnings() == [
        f"rfid: frame dropped (bad-checksum): checksum 0x{0x08 ^ 0x5A:02X} does not match 0x08 computed over {CARD_A}",
        "rfid: frame dropped (truncated): line silent after 3 of 12 characters",
    ]
