"""Driver for the RDM6300 / RDM630 125 kHz RFID reader modules (EM4100-compatible cards) on a UART.

Wire format (RDM630 data sheet, "TTL interface RS232 data output format"; Seeed Studio wiki "125Khz
RFID module - UART"; a decoded capture in the Hobby Components forum thread "RDM6300 125KHz (ID) RFID
reader module"): 9600 Bd, 8N1, and the module only ever transmits. One frame per read::

    0x02 (STX) | 10 ASCII hex characters: 5 data bytes | 2 ASCII hex characters: checksum | 0x03 (ETX)

The first data byte is a version / vendor byte, the other four the card number (the number printed on
a card is usually those four in decimal). The checksum is the XOR of the 5 data bytes: the data
sheet's example card ``62E3086CED`` has checksum ``08``. A module of the "special design" repeats the
frame every 50-100 ms while the card stays in the field; a "standard design" one sends it once.

STX and ETX are never hex digits, so they delimit frames unambiguously: the parser drops everything
outside STX..ETX (noise while a card enters the field, a reader powered up mid-frame) and starts over
at every STX. A frame with a bad checksum, a non-hex character or the wrong length is logged, counted
and dropped, never reported and never raised. A frame left unfinished for :data:`READ_TIMEOUT_S` of
line silence is dropped as truncated (14 bytes take 15 ms at 9600 Bd).

The id reported is the upper-case hex of the 5 data bytes: 10 characters, within OCPP 1.6's idTag
(IdToken, CiString20Type) and 2.0.1's IdTokenType.idToken (string[0..36]).

:class:`Rdm6300Reader` (a :class:`hal.interfaces.IdReader`) reads the port in a thread of its own, as
:class:`hal.drivers.mcu_link.McuLink` does, so the event loop never blocks on the UART and a
cancelled ``read_id`` loses no card; a card held on the reader is reported once, and again only after
it has been away for ``repeat_after_s`` of the injected clock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import serial

from hal.clock import Clock
from hal.errors import DeviceNotFound, HalError

log = logging.getLogger(__name__)

STX = 0x02
ETX = 0x03
BAUDRATE = 9600  # fixed on the module (data sheet: 9600 bps, N, 8, 1)
DATA_BYTES = 5
#: ASCII characters between STX and ETX: 5 data bytes and the checksum byte, two hex digits each.
FRAME_CHARS = 2 * (DATA_BYTES + 1)
FRAME_BYTES = FRAME_CHARS + 2
#: Port read timeout: how long the reader thread blocks at most (hence how fast it notices ``close``)
#: and how much line silence ends an unfinished frame; a frame lasts 15 ms at 9600 Bd.
READ_TIMEOUT_S = 0.05
#: A card must be away this long (injected clock) before the same card is reported again.
REPEAT_AFTER_S = 2.0
#: Ids read but not yet taken by ``read_id``; beyond this the oldest is dropped (a stale swipe is
#: worth less than a fresh one).
QUEUE_DEPTH = 4
#: A card held at the edge of the field can misread every frame (10 a second): one warning per this
#: long (injected clock), the rest at debug level; the counts are in :attr:`Rdm6300Reader.parser_stats`.
WARN_EVERY_S = 5.0

_HEX_DIGITS = frozenset(b"0123456789ABCDEFabcdef")


class FrameError(ValueError):
    """A frame that cannot be a card read; the message says what is wrong with it."""


class ChecksumError(FrameError):
    """A well-formed frame whose checksum does not match its data (a misread card)."""


def checksum(data: bytes) -> int:
    """XOR of the data bytes (RDM630 data sheet)."""
    result = 0
    for byte in data:
        result ^= byte
    return result


def encode_frame(data: bytes, *, checksum_override: int | None = None) -> bytes:
    """The 14-byte frame a module sends for the 5 ``data`` bytes; ``checksum_override`` puts another
    checksum in (simulators and tests use it to make bad frames)."""
    if len(data) != DATA_BYTES:
        raise ValueError(f"an RDM6300 frame carries {DATA_BYTES} data bytes, got {len(data)}")
    check = checksum(data) if checksum_override is None else checksum_override
    if not 0 <= check <= 0xFF:
        raise ValueError(f"checksum {check} does not fit a byte")
    return bytes([STX]) + (data.hex() + f"{check:02x}").upper().encode("ascii") + bytes([ETX])


def decode_chars(chars: bytes) -> bytes:
    """The 5 data bytes of the ``FRAME_CHARS`` characters between STX and ETX, checksum verified."""
    if len(chars) != FRAME_CHARS:
        raise FrameError(f"{len(chars)} characters between STX and ETX, expected {FRAME_CHARS}")
    for position, char in enumerate(chars):
        if char not in _HEX_DIGITS:
            raise FrameError(f"character 0x{char:02X} at position {position} is not a hex digit")
    raw = bytes.fromhex(chars.decode("ascii"))
    data, received = raw[:DATA_BYTES], raw[DATA_BYTES]
    computed = checksum(data)
    if received != computed:
        raise ChecksumError(
            f"checksum 0x{received:02X} does not match 0x{computed:02X} computed over {data.hex().upper()}"
        )
    return data


def decode_frame(frame: bytes) -> bytes:
    """The 5 data bytes of one complete frame (STX ... ETX)."""
    if len(frame) != FRAME_BYTES or frame[0] != STX or frame[-1] != ETX:
        raise FrameError(f"not a {FRAME_BYTES}-byte STX..ETX frame: {frame.hex(' ')}")
    return decode_chars(frame[1:-1])


def card_id(data: bytes) -> str:
    """The id of a card as the firmware spells it: upper-case hex of the 5 data bytes."""
    return data.hex().upper()


@dataclass
class ParserStats:
    frames: int = 0
    bad_checksum: int = 0
    malformed: int = 0
    truncated: int = 0
    garbage_bytes: int = 0


class FrameParser:
    """Turns the byte stream from the module into data bytes of good frames.

    ``on_error(kind, detail)`` hears of every dropped frame (``kind``: ``bad-checksum``,
    ``malformed``, ``truncated``) and every run of bytes outside a frame (``garbage``).
    """

    def __init__(self, on_error: Callable[[str, str], None] | None = None) -> None:
        self._on_error = on_error
        self._chars: bytearray | None = None  # None: between frames, looking for STX
        self._garbage = 0
        self.stats = ParserStats()

    @property
    def pending(self) -> bool:
        """A frame has started and not ended."""
        return self._chars is not None

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        for byte in data:
            if byte == STX:
                self._end_garbage()
                if self._chars is not None:
                    self._drop("truncated", f"frame cut short by a new STX after {len(self._chars)} characters")
                self._chars = bytearray()
            elif self._chars is None:
                self._garbage += 1
                self.stats.garbage_bytes += 1
            elif byte == ETX:
                chars, self._chars = bytes(self._chars), None
                try:
                    frames.append(decode_chars(chars))
                except ChecksumError as exc:
                    self._drop("bad-checksum", str(exc))
                except FrameError as exc:
                    self._drop("malformed", str(exc))
                else:
                    self.stats.frames += 1
            else:
                self._chars.append(byte)
                if len(self._chars) > FRAME_CHARS:
                    self._chars = None
                    self._drop("malformed", f"no ETX after {FRAME_CHARS} characters")
        return frames

    def flush(self) -> None:
        """The line went silent: an unfinished frame will not be finished."""
        self._end_garbage()
        if self._chars is not None:
            count, self._chars = len(self._chars), None
            self._drop("truncated", f"line silent after {count} of {FRAME_CHARS} characters")

    def _end_garbage(self) -> None:
        if self._garbage and self._on_error is not None:
            self._on_error("garbage", f"{self._garbage} bytes outside a frame skipped")
        self._garbage = 0

    def _drop(self, kind: str, detail: str) -> None:
        if kind == "bad-checksum":
            self.stats.bad_checksum += 1
        elif kind == "truncated":
            self.stats.truncated += 1
        else:
            self.stats.malformed += 1
        if self._on_error is not None:
            self._on_error(kind, detail)


@dataclass
class ReaderStats:
    reads: int = 0
    #: Good frames of a card still held (or back too soon) that were not reported again.
    repeats_suppressed: int = 0
    #: Ids dropped because nobody took them (queue full).
    dropped: int = 0


class Rdm6300Reader:
    """:class:`hal.interfaces.IdReader` for an RDM6300 on an open pyserial(-like) ``port``.

    The reader thread starts with the first ``read_id`` and runs until :meth:`close`; the port's
    read timeout is lowered to :data:`READ_TIMEOUT_S`. The port is not closed here (whoever opened
    it closes it). A port that fails ends the reader thread and makes ``read_id`` raise
    :class:`DeviceNotFound` once; the next ``read_id`` starts a new thread on the same port.
    """

    def __init__(self, port: Any, *, name: str, clock: Clock, repeat_after_s: float = REPEAT_AFTER_S) -> None:
        if repeat_after_s < 0:
            raise ValueError(f"repeat_after_s must be >= 0, got {repeat_after_s}")
        self._port = port
        self._name = name
        self._clock = clock
        self._repeat_after_s = repeat_after_s
        self._parser = FrameParser(on_error=self._on_frame_error)
        self.stats = ReaderStats()
        self._ids: asyncio.Queue[str | HalError] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._thread_stop = threading.Event()
        self._last_id: str | None = None
        self._last_seen = 0.0
        self._last_warning: float | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def parser_stats(self) -> ParserStats:
        """Good frames, bad checksums, malformed and truncated frames and garbage bytes seen."""
        return self._parser.stats

    async def read_id(self) -> str:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            await self.close()  # a thread left from another (finished) event loop has nobody to tell
            self._ids = asyncio.Queue()
            self._loop = loop
        assert self._ids is not None
        if self._thread is None or not self._thread.is_alive():
            self._start(loop)
        item = await self._ids.get()
        if isinstance(item, HalError):
            raise item
        return item

    async def close(self) -> None:
        self._thread_stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, READ_TIMEOUT_S * 20)

    # ------------------------------------------------------------------ reader thread
    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        timeout = getattr(self._port, "timeout", None)
        if timeout is None or timeout > READ_TIMEOUT_S:
            self._port.timeout = READ_TIMEOUT_S
        try:
            self._port.reset_input_buffer()  # frames from before anyone listened are stale swipes
        except (AttributeError, OSError, serial.SerialException):
            pass
        self._thread_stop = threading.Event()
        self._thread = threading.Thread(
            target=self._read_loop, args=(loop, self._thread_stop), name=f"rdm6300-{self._name}", daemon=True
        )
        self._thread.start()

    def _read_loop(self, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        """Blocking reads with a short timeout; parsing and debouncing happen on the event loop."""
        port = self._port
        while not stop.is_set():
            try:
                data = port.read(max(1, port.in_waiting))
            except Exception as exc:  # pyserial raises several types when a port dies; all end the reader
                if not stop.is_set():
                    self._call(loop, self._on_port_error, (exc, stop))
                return
            if not self._call(loop, self._on_bytes if data else self._on_idle, bytes(data)):
                return

    @staticmethod
    def _call(loop: asyncio.AbstractEventLoop, callback: Callable[[Any], None], arg: Any) -> bool:
        try:
            loop.call_soon_threadsafe(callback, arg)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            return False
        return True

    # ------------------------------------------------------------------ on the event loop
    def _on_port_error(self, failure: tuple[BaseException, threading.Event]) -> None:
        exc, stop = failure
        if stop is self._thread_stop:
            self._thread = None  # that thread is ending: the next read_id starts another at once
        log.error("%s: serial port failed, reader stopped: %s", self._name, exc)
        self._put(DeviceNotFound(self._name, f"serial port failed: {exc}"))

    def _on_idle(self, _: bytes) -> None:
        self._parser.flush()

    def _on_bytes(self, data: bytes) -> None:
        for frame in self._parser.feed(data):
            self._on_card(card_id(frame))

    def _on_card(self, id_tag: str) -> None:
        now = self._clock.monotonic()
        # A held card repeats its frame every 50-100 ms: only a card away for repeat_after_s is a new
        # swipe. The time it was last seen moves on with every frame, so holding it never re-reports.
        repeat = id_tag == self._last_id and now - self._last_seen < self._repeat_after_s
        self._last_id, self._last_seen = id_tag, now
        if repeat:
            self.stats.repeats_suppressed += 1
            return
        self.stats.reads += 1
        log.info("%s: card %s", self._name, id_tag)
        self._put(id_tag)

    def _put(self, item: str | HalError) -> None:
        queue = self._ids
        if queue is None:
            return
        if isinstance(item, str) and queue.qsize() >= QUEUE_DEPTH:
            stale = queue.get_nowait()
            self.stats.dropped += 1
            log.warning("%s: %s was never taken, dropped for a newer read", self._name, stale)
        queue.put_nowait(item)

    def _on_frame_error(self, kind: str, detail: str) -> None:
        if kind == "garbage":  # a reader powered up mid-frame, noise on the line
            log.debug("%s: %s", self._name, detail)
            return
        now = self._clock.monotonic()
        if self._last_warning is not None and now - self._last_warning < WARN_EVERY_S:
            log.debug("%s: frame dropped (%s): %s", self._name, kind, detail)
            return
        self._last_warning = now
        log.warning("%s: frame dropped (%s): %s", self._name, kind, detail)
