"""The simulated safety co-processor (the RP2040 of docs/mcu-protocol.md) on the far end of a pty: the
co-processor's own firmware logic (``board/mcu/core.py``, the code the RP2040 runs under MicroPython)
over the simulated plant.

:meth:`CoprocessorSim.open_pty` creates an ``os.openpty()`` pair and returns the slave path; the
driver opens that path with pyserial (``hal.buses.open_serial``) exactly as it opens ``/dev/ttyAMA0``
on a board, so every byte of :mod:`hal.drivers.mcu_link` runs against the firmware's own code.
:class:`PlantHardware` is the firmware's hardware seam over the shared :class:`hal.sim.plant.Plant`:
the pilot generator (``plant.pilot``) and its plateaus, the contactor's coil (its mirror contact
follows unless the plant says the contacts are welded or stuck open), the lock and its feedback, the
RCD with its test winding.

The firmware's timers read an injected clock (in whole milliseconds, as on the RP2040), so a test can
hand it a :class:`hal.clock.VirtualClock` and move time by hand; the thread itself only polls the pty
every few milliseconds of real time.

Fault injection: on the line :meth:`corrupt_next_crc`, :attr:`silent` (its TX line is dead: it still
hears and acts, nothing it sends arrives), :meth:`garbage`, :meth:`drop_replies`; on the device
:meth:`reboot`, a wrong ``protocol_version``; in the hardware ``rcd_selftest_fails`` (the test winding
does not trip the RCD) and ``lock_jammed`` (the lock feedback stays where it was).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

from board.mcu import core
from board.mcu import protocol as P
from hal.clock import RealClock
from hal.drivers.mcu_frames import (
    PROTOCOL_VERSION,
    ErrorFlag,
    Frame,
    HelloInfo,
    McuStatus,
    PilotCode,
    ResetReason,
)
from hal.sim.plant import Plant
from hal.sim.pty import PtyPeer, open_raw_pty
from hal.types import PilotMode

log = logging.getLogger(__name__)

FIRMWARE_VERSION = core.FIRMWARE_VERSION
# mcu-protocol.md "Heartbeat and fail-safe" and "Events" (the firmware's own numbers).
HEARTBEAT_TIMEOUT_S = P.HEARTBEAT_TIMEOUT_MS / 1000
STATUS_PERIOD_S = P.STATUS_PERIOD_MS / 1000
# RCD thresholds: 6 mA DC for the RDC-DD (IEC 62955), 30 mA AC for a type A RCD (IEC 61008). The
# plant's residual current has no AC/DC split, so the stricter DC threshold applies by default.
RCD_DC_TRIP_MA = 6.0
RCD_AC_TRIP_MA = 30.0
# A partial frame after this much silence is abandoned (mcu-protocol.md "Resynchronisation").
IDLE_FLUSH_S = P.IDLE_ABANDON_MS / 1000
_POLL_S = 0.005


class _MonotonicClock(Protocol):
    def monotonic(self) -> float: ...


class PlantHardware:
    """The co-processor firmware's hardware seam (board/mcu/core.py) over the simulated plant."""

    def __init__(self, plant: Plant, *, residual_is_ac: bool = False) -> None:
        self.plant = plant
        self.residual_is_ac = residual_is_ac
        self.rcd_selftest_fails = False
        self.lock_jammed = False
        self.coil_on = False
        self.lock_commanded = False
        self.lock_state = False
        self.test_current = False
        self.writer: Callable[[bytes, bool], None] = lambda frame, is_reply: None

    def pilot(self, mode: int, duty_permille: int) -> None:
        self.plant.pilot.mode = PilotMode[PilotCode(mode).name]
        self.plant.pilot.duty = duty_permille / 1000.0

    def pilot_levels(self) -> tuple[int, int | None]:
        """The plateaus the pilot ADC reads in step with the PWM: in X1, F and E one steady level."""
        if self.plant.pilot.mode is PilotMode.PWM:
            high_v, low_v = self.plant.cp_plateaus()
            return round(high_v * 1000), round(low_v * 1000)
        if self.plant.pilot.mode is PilotMode.X1:
            return round(self.plant.cp_plateaus()[0] * 1000), None
        return round(self.plant.cp_voltage(0.0) * 1000), None

    def coil(self, on: bool) -> None:
        self.coil_on = on
        self.mirror()

    def mirror(self) -> bool:
        if self.plant.contactor_welded:
            closed = True
        elif self.plant.contactor_stuck_open:
            closed = False
        else:
            closed = self.coil_on
        self.plant.contacts_closed = closed
        return closed

    def lock(self, on: bool) -> None:
        self.lock_commanded = on

    def lock_feedback(self) -> bool:
        if not self.lock_jammed:
            self.lock_state = self.lock_commanded
        return self.lock_state

    def rcd_tripped(self) -> bool:
        threshold = RCD_AC_TRIP_MA if self.residual_is_ac else RCD_DC_TRIP_MA
        tested = self.test_current and not self.rcd_selftest_fails
        return tested or self.plant.residual_current_ma >= threshold

    def rcd_test(self, on: bool) -> None:
        self.test_current = on

    def pp_ohm(self) -> int:
        ohm = self.plant.pp_ohm
        return P.PP_OPEN if ohm is None or ohm >= P.PP_OPEN else round(ohm)

    def send(self, frame: bytes, is_reply: bool) -> None:
        self.writer(frame, is_reply)


class CoprocessorSim(PtyPeer):
    """The co-processor firmware (board/mcu/core.py) speaking the wire protocol on ``fd`` (a pty
    master), its hardware the simulated plant."""

    _thread_name = "coprocessor-sim"

    def __init__(
        self,
        fd: int,
        plant: Plant,
        *,
        clock: _MonotonicClock | None = None,
        protocol_version: int = PROTOCOL_VERSION,
        supports_state_e: bool = True,
        has_lock: bool = True,
        has_pp: bool = True,
        residual_is_ac: bool = False,
        heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S,
        status_period_s: float = STATUS_PERIOD_S,
        reset_reason: ResetReason = ResetReason.POWER_ON,
        keep_fd: int | None = None,
    ) -> None:
        super().__init__(fd, keep_fd)
        self.plant = plant
        self._clock = clock or RealClock()
        self._lock = threading.RLock()
        self.hw = PlantHardware(plant, residual_is_ac=residual_is_ac)
        self.hw.writer = self._transmit
        self.firmware = core.Coprocessor(
            self.hw,
            protocol_version=protocol_version,
            supports_state_e=supports_state_e,
            has_lock=has_lock,
            has_pp=has_pp,
            heartbeat_timeout_ms=round(heartbeat_timeout_s * 1000),
            status_period_ms=round(status_period_s * 1000),
        )
        self._last_rx_real = time.monotonic()
        # --- line faults
        self._silent = False
        self._corrupt_next = False
        self._garbage: list[bytes] = []
        self._drop_replies = 0
        self._booting = True  # the first EVENT_BOOT goes out when the thread starts
        # --- observations for tests
        self.received: list[Frame] = []  # every valid frame heard (retries included)
        self.executed: list[Frame] = []  # the requests acted on (not the retries answered from memory)
        self.firmware.on_execute = lambda seq, t, payload: self.executed.append(Frame(seq, t, payload))
        self._observer = P.Decoder()
        self.tx_dropped = 0
        self._pending: list[bytes] = []
        with self._lock:
            self.firmware.boot(int(reset_reason), self._now_ms())
        self._booting = False

    # ------------------------------------------------------------------ construction / lifecycle
    @classmethod
    def open_pty(cls, plant: Plant, **kwargs: object) -> tuple[CoprocessorSim, str]:
        """Create a pty pair, start a simulator on the master and return it with the slave path."""
        master, slave, path = open_raw_pty()
        sim = cls(master, plant, keep_fd=slave, **kwargs)  # type: ignore[arg-type]
        sim.start()
        return sim, path

    def _now_ms(self) -> int:
        return int(self._clock.monotonic() * 1000 + 0.5)

    # ------------------------------------------------------------------ fault injection
    @property
    def silent(self) -> bool:
        return self._silent

    @silent.setter
    def silent(self, value: bool) -> None:
        with self._lock:
            self._silent = value

    def corrupt_next_crc(self) -> None:
        """Flip bits in the CRC of the next frame sent (reply or event)."""
        with self._lock:
            self._corrupt_next = True

    def garbage(self, data: bytes) -> None:
        """Put raw bytes on the line before anything else is sent."""
        with self._lock:
            self._garbage.append(bytes(data))

    def drop_replies(self, count: int = 1) -> None:
        """Execute the next ``count`` requests but lose their replies (a noisy RX line on the Pi)."""
        with self._lock:
            self._drop_replies = count

    def reboot(self, reason: ResetReason = ResetReason.WATCHDOG) -> None:
        """A co-processor reset: session lost, outputs safe, EVENT_BOOT sent."""
        with self._lock:
            self.firmware.boot(int(reason), self._now_ms())

    @property
    def rcd_selftest_fails(self) -> bool:
        return self.hw.rcd_selftest_fails

    @rcd_selftest_fails.setter
    def rcd_selftest_fails(self, value: bool) -> None:
        self.hw.rcd_selftest_fails = value

    @property
    def lock_jammed(self) -> bool:
        return self.hw.lock_jammed

    @lock_jammed.setter
    def lock_jammed(self, value: bool) -> None:
        self.hw.lock_jammed = value

    # ------------------------------------------------------------------ observable state
    @property
    def protocol_version(self) -> int:
        return self.firmware.protocol_version

    @property
    def session_open(self) -> bool:
        return self.firmware.session

    @property
    def contactor_allowed(self) -> bool:
        return self.firmware.allowed

    @property
    def contactor_coil(self) -> bool:
        """Whether the co-processor energises the contactor coil."""
        return self.firmware.coil

    @property
    def contactor_mirror(self) -> bool:
        return self.hw.mirror()

    @property
    def lock_locked(self) -> bool:
        return self.hw.lock_feedback()

    @property
    def flags(self) -> ErrorFlag:
        with self._lock:
            return ErrorFlag(self.firmware.flags())

    @property
    def heartbeats_received(self) -> int:
        return self.firmware.heartbeats

    @property
    def ticks(self) -> int:
        return self.firmware.ticks

    def hello_info(self) -> HelloInfo:
        return HelloInfo.decode(self.firmware.hello_info())

    def status(self) -> McuStatus:
        with self._lock:
            return McuStatus.decode(self.firmware.status())

    # ------------------------------------------------------------------ transmit
    def _transmit(self, frame: bytes, is_reply: bool) -> None:
        if is_reply and self._drop_replies > 0:
            self._drop_replies -= 1
            return
        if self._booting:
            self._pending.append(frame)  # EVENT_BOOT of the power-on reset: sent once the line is up
            return
        if self._corrupt_next:
            self._corrupt_next = False
            frame = frame[:-2] + bytes((frame[-2] ^ 0xFF, frame[-1] ^ 0x5A))
        self._flush_garbage()
        self._raw_write(frame)

    def _flush_garbage(self) -> None:
        while self._garbage:
            self._raw_write(self._garbage.pop(0))

    def _raw_write(self, data: bytes) -> None:
        if self._silent:
            return
        try:
            written = os.write(self._fd, data)
        except (BlockingIOError, OSError):
            written = 0  # nobody reads the pty (port closed): the bytes are lost, as on a UART
        if written < len(data):
            self.tx_dropped += len(data) - written

    # ------------------------------------------------------------------ thread
    def _run(self) -> None:
        with self._lock:
            for frame in self._pending:
                self._transmit(frame, False)
            self._pending.clear()
        while not self._stop.is_set():
            data = self._receive(_POLL_S)
            if data is None:
                return
            with self._lock:
                now = self._now_ms()
                if data:
                    self._last_rx_real = time.monotonic()
                    self._record(data)
                    self.firmware.receive(data, now)
                elif self.firmware.decoder.n and time.monotonic() - self._last_rx_real >= IDLE_FLUSH_S:
                    self.firmware.idle(now)
                self._flush_garbage()
                self.firmware.tick(now)

    def _record(self, data: bytes) -> None:
        for seq, msg_type, payload in self._observer.feed(data):
            self.received.append(Frame(seq, msg_type, payload))
