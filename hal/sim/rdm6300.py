"""A simulated RDM6300 125 kHz RFID reader module: card frames on the far end of a serial line.

:meth:`Rdm6300Sim.open_pty` runs the simulator on the master side of a pty and returns the slave
path, which the driver opens with pyserial exactly as it opens ``/dev/serial0`` on a board.
:meth:`Rdm6300Sim.on_port` writes into a pyserial ``loop://`` port instead (what is written to such a
port is read back from it), so the driver reads the frames from that same port object. Either way
:mod:`hal.drivers.rdm6300` runs unchanged.

:meth:`present` holds a card in the field for ``hold_s``: the module sends the card's frame at once
and again every ``frame_period_s`` while the card stays, as the repeating ("special design") modules
do. Time is an injected clock (a :class:`hal.clock.VirtualClock` in tests); the thread polls it every
few milliseconds of real time while a card is held and sleeps otherwise.

Fault injection, each acting on the next frame sent: :meth:`corrupt_next_checksum`,
:meth:`truncate_next` (the frame stops after some characters, no ETX), and :meth:`garbage` (raw
bytes on the line before it, or at once when no card is held).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol, Self

from hal.clock import RealClock
from hal.drivers.rdm6300 import DATA_BYTES, FRAME_CHARS, checksum, encode_frame
from hal.sim.pty import open_raw_pty

#: Repeat period of a card held in the field (modules repeat every 50-100 ms).
FRAME_PERIOD_S = 0.1
_POLL_S = 0.005
_EPS = 1e-9


class _MonotonicClock(Protocol):
    def monotonic(self) -> float: ...


class Rdm6300Sim:
    """The module's transmitter: frames go out through ``write`` (a pty master, a loop:// port)."""

    def __init__(
        self,
        write: Callable[[bytes], object],
        *,
        clock: _MonotonicClock | None = None,
        frame_period_s: float = FRAME_PERIOD_S,
        fds: tuple[int, ...] = (),
    ) -> None:
        if frame_period_s <= 0:
            raise ValueError("frame_period_s must be > 0")
        self._write = write
        self._clock = clock or RealClock()
        self.frame_period_s = frame_period_s
        self._fds = fds  # closed with the simulator (the pty pair)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # --- the card in the field: frames go out in slots t0, t0 + period, ... up to last_slot
        self._card: bytes | None = None  # None once its last frame has gone out
        self._t0 = 0.0
        self._in_field_until = -math.inf
        self._next_slot = 0
        self._last_slot = 0
        # --- fault knobs
        self._outbox: list[bytes] = []
        self._corrupt_next = False
        self._truncate_next: int | None = None
        # --- observations for tests
        self.frames_sent = 0
        self.bytes_lost = 0

    @classmethod
    def open_pty(cls, **kwargs: Any) -> tuple[Rdm6300Sim, str]:
        """A started simulator on a new pty, and the slave path for the driver to open."""
        master, slave, path = open_raw_pty()

        def write(data: bytes) -> object:
            return os.write(master, data)

        sim = cls(write, fds=(master, slave), **kwargs)  # the slave stays open so the pty stays up
        sim.start()
        return sim, path

    @classmethod
    def on_port(cls, port: Any, **kwargs: Any) -> Rdm6300Sim:
        """A started simulator writing into a pyserial ``loop://`` port the driver reads."""
        sim = cls(port.write, **kwargs)
        sim.start()
        return sim

    # ------------------------------------------------------------------ the card
    def present(self, card_hex: str, hold_s: float = 0.5) -> None:
        """Hold the card ``card_hex`` (10 hex digits: version byte + 4-byte number) in the field for
        ``hold_s``; one frame at once, then one per period while it stays."""
        try:
            data = bytes.fromhex(card_hex)
        except ValueError:
            data = b""
        if len(data) != DATA_BYTES:
            raise ValueError(f"a card id is {2 * DATA_BYTES} hex digits, got {card_hex!r}")
        if hold_s < 0:
            raise ValueError("hold_s must be >= 0")
        with self._lock:
            self._card = data
            self._t0 = self._clock.monotonic()
            self._in_field_until = self._t0 + hold_s
            self._next_slot = 0
            self._last_slot = max(0, math.ceil((hold_s - _EPS) / self.frame_period_s) - 1)
        self._wake.set()

    def remove(self) -> None:
        """Take the card out of the field now."""
        with self._lock:
            self._card = None
            self._in_field_until = -math.inf

    @property
    def held(self) -> bool:
        """A card is in the field."""
        with self._lock:
            return self._clock.monotonic() < self._in_field_until + _EPS

    # ------------------------------------------------------------------ fault injection
    def corrupt_next_checksum(self) -> None:
        with self._lock:
            self._corrupt_next = True

    def truncate_next(self, chars: int = FRAME_CHARS // 2) -> None:
        """The next frame stops after STX and ``chars`` characters (the card left mid-frame)."""
        if not 0 <= chars < FRAME_CHARS:
            raise ValueError(f"chars must be within 0..{FRAME_CHARS - 1}")
        with self._lock:
            self._truncate_next = chars

    def garbage(self, data: bytes) -> None:
        """Put raw bytes on the line before the next frame (at once when no card is held)."""
        with self._lock:
            self._outbox.append(bytes(data))
        self._wake.set()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rdm6300-sim", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        fds, self._fds = self._fds, ()
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the module's loop
    def _run(self) -> None:
        while True:
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._lock:
                out = self._due_bytes()
                holding = self._card is not None
            if out:
                self._send(out)
            # An idle module sleeps until told; a held card needs the clock watched.
            self._wake.wait(_POLL_S if holding else None)

    def _due_bytes(self) -> bytes:
        out = b"".join(self._outbox)
        self._outbox.clear()
        card = self._card
        if card is None:
            return out
        # The latest slot due now; slots missed while the clock jumped are skipped, as a module
        # that is read late does not queue frames up.
        slot = min(int((self._clock.monotonic() - self._t0 + _EPS) // self.frame_period_s), self._last_slot)
        if slot >= self._next_slot:
            out += self._frame(card)
            self._next_slot = slot + 1
        if self._next_slot > self._last_slot:
            self._card = None  # its last frame went out: nothing more to send for this card
        return out

    def _frame(self, card: bytes) -> bytes:
        override = checksum(card) ^ 0x5A if self._corrupt_next else None
        frame = encode_frame(card, checksum_override=override)
        if self._truncate_next is not None:
            frame = frame[: 1 + self._truncate_next]
        self._corrupt_next = False
        self._truncate_next = None
        self.frames_sent += 1
        return frame

    def _send(self, data: bytes) -> None:
        try:
            written = self._write(data)
        except OSError:  # nobody drains the line (a pty whose buffer is full): the bytes are lost
            written = 0
        if isinstance(written, int) and written < len(data):
            self.bytes_lost += len(data) - written
