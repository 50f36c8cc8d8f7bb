"""A simulated safety co-processor (the RP2040 of docs/mcu-protocol.md) on the far end of a pty.

:meth:`CoprocessorSim.open_pty` creates an ``os.openpty()`` pair and returns the slave path; the
driver opens that path with pyserial (``hal.buses.open_serial``) exactly as it opens ``/dev/ttyAMA0``
on a board, so every byte of :mod:`hal.drivers.mcu_link` runs against it. The simulator answers
with the frames the real co-processor sends and drives the shared :class:`hal.sim.plant.Plant`:
the pilot generator (``plant.pilot``), the contactor's coil (its mirror contact follows unless the
plant says the contacts are welded or stuck open), the RCD and the heartbeat fail-safe.

Its timers (heartbeat supervision, the F hold, feedback settle times, periodic status) read an
injected clock, so a test can hand it a :class:`hal.clock.VirtualClock` and move time by hand; the
thread itself only polls the pty every few milliseconds of real time.

Fault injection: :meth:`corrupt_next_crc`, :attr:`silent` (its TX line is dead: it still hears and
acts, nothing it sends arrives), :meth:`garbage`, :meth:`drop_replies`, :meth:`reboot`, a wrong
``protocol_version``, ``rcd_selftest_fails`` and ``lock_jammed``.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from typing import Protocol

from hal.clock import RealClock
from hal.drivers.mcu_frames import (
    INTERLOCK_FLAGS,
    LATCHED_FLAGS,
    PROTOCOL_VERSION,
    Capability,
    CpState,
    ErrorFlag,
    Frame,
    FrameDecoder,
    HelloInfo,
    McuStatus,
    MsgType,
    Nack,
    NackCode,
    Output,
    PayloadError,
    PilotCode,
    ResetReason,
    SelftestState,
    decode_bool,
    decode_flags,
    decode_hello_request,
    decode_set_pilot,
    encode_frame,
    reply_type,
)
from hal.sim.plant import Plant
from hal.sim.pty import PtyPeer, open_raw_pty
from hal.types import PilotMode

log = logging.getLogger(__name__)

FIRMWARE_VERSION = (0, 1, 0)

# mcu-protocol.md "Heartbeat and fail-safe": 1 s without a heartbeat -> contactor open + pilot F,
# F held 300 ms (EVerest state_F_after_fault_ms, IEC 61851-1:2017 Table A.5 minimum), then X1.
HEARTBEAT_TIMEOUT_S = 1.0
F_HOLD_S = 0.300
# mcu-protocol.md "Events": periodic STATUS every 50 ms, plus at once on any change.
STATUS_PERIOD_S = 0.050
# Relay on 110 ms / off 100 ms (EVerest YetiSimulator timing, anchors.md 1.3) with margin: a mirror
# or lock feedback that still disagrees after this long is a fault.
FEEDBACK_SETTLE_S = 0.200
# RCD thresholds: 6 mA DC for the RDC-DD (IEC 62955), 30 mA AC for a type A RCD (IEC 61008). The
# plant's residual current has no AC/DC split, so the stricter DC threshold applies by default.
RCD_DC_TRIP_MA = 6.0
RCD_AC_TRIP_MA = 30.0
# Pilot windows: +/-1.1 V around 12/9/6/3/0 V (EVerest YetiSimulator, standards-facts.md 1.2); a
# negative plateau above -10.9 V while PWM runs and an EV is present is a diode fault (1.5).
CP_WINDOW_MV = 1100
CP_STATE_CENTRES_MV = ((CpState.A, 12000), (CpState.B, 9000), (CpState.C, 6000), (CpState.D, 3000), (CpState.E, 0))
DIODE_FAULT_ABOVE_MV = -12000 + CP_WINDOW_MV
# Requests whose replies are remembered for retried duplicates (mcu-protocol.md "Retries").
REPLY_CACHE_SIZE = 4
# A partial frame after this much silence is abandoned (mcu-protocol.md "Resynchronisation").
IDLE_FLUSH_S = 0.050
_POLL_S = 0.005


class _MonotonicClock(Protocol):
    def monotonic(self) -> float: ...


def classify_pilot(high_mv: int) -> CpState:
    for state, centre in CP_STATE_CENTRES_MV:
        if abs(high_mv - centre) <= CP_WINDOW_MV:
            return state
    return CpState.UNKNOWN


class CoprocessorSim(PtyPeer):
    _thread_name = "coprocessor-sim"

    """The co-processor firmware's behaviour, speaking the wire protocol on ``fd`` (a pty master)."""

    def __init__(
        self,
        fd: int,
        plant: Plant,
        *,
        clock: _MonotonicClock | None = None,
        protocol_version: int = PROTOCOL_VERSION,
        supports_state_e: bool = True,
        has_lock: bool = True,
        residual_is_ac: bool = False,
        heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S,
        status_period_s: float = STATUS_PERIOD_S,
        reset_reason: ResetReason = ResetReason.POWER_ON,
        keep_fd: int | None = None,
    ) -> None:
        super().__init__(fd, keep_fd)
        self.plant = plant
        self._clock = clock or RealClock()
        self.protocol_version = protocol_version
        self.supports_state_e = supports_state_e
        self.has_lock = has_lock
        self.residual_is_ac = residual_is_ac
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.status_period_s = status_period_s
        self._lock = threading.RLock()
        self._decoder = FrameDecoder()
        self._last_rx_real = time.monotonic()
        # --- fault knobs
        self._silent = False
        self._corrupt_next = False
        self._garbage: list[bytes] = []
        self._drop_replies = 0
        self.rcd_selftest_fails = False
        self.lock_jammed = False
        # --- observations for tests
        self.received: list[Frame] = []
        self.executed: list[Frame] = []
        self.heartbeats_received = 0
        self.ticks = 0
        self.tx_dropped = 0
        self._boot(reset_reason)

    # ------------------------------------------------------------------ construction / lifecycle
    @classmethod
    def open_pty(cls, plant: Plant, **kwargs: object) -> tuple[CoprocessorSim, str]:
        """Create a pty pair, start a simulator on the master and return it with the slave path."""
        master, slave, path = open_raw_pty()
        sim = cls(master, plant, keep_fd=slave, **kwargs)  # type: ignore[arg-type]
        sim.start()
        return sim, path

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
            self._boot(reason)
            self._send_event(MsgType.EVENT_BOOT, self.hello_info().encode())

    # ------------------------------------------------------------------ observable state
    @property
    def session_open(self) -> bool:
        return self._session

    @property
    def contactor_allowed(self) -> bool:
        return self._allowed

    @property
    def contactor_coil(self) -> bool:
        """Whether the simulated co-processor energises the contactor coil."""
        return self._coil

    @property
    def contactor_mirror(self) -> bool:
        return self._mirror()

    @property
    def lock_locked(self) -> bool:
        return self._lock_feedback

    @property
    def flags(self) -> ErrorFlag:
        with self._lock:
            return self._flags(self._levels())

    def hello_info(self) -> HelloInfo:
        caps = Capability.CONTACTOR_MIRROR | Capability.RCD
        if self.supports_state_e:
            caps |= Capability.STATE_E
        if self.has_lock:
            caps |= Capability.LOCK | Capability.LOCK_FEEDBACK
        return HelloInfo(
            protocol_version=self.protocol_version,
            firmware=FIRMWARE_VERSION,
            capabilities=caps,
            reset_reason=self._reset_reason,
            heartbeat_timeout_ms=round(self.heartbeat_timeout_s * 1000),
            status_period_ms=round(self.status_period_s * 1000),
        )

    def status(self) -> McuStatus:
        with self._lock:
            return self._status()

    # ------------------------------------------------------------------ firmware state
    def _boot(self, reason: ResetReason) -> None:
        now = self._clock.monotonic()
        self._reset_reason = reason
        self._boot_time = now
        self._session = False
        self._allowed = False
        self._coil = False
        self._lock_commanded = False
        self._lock_feedback = False
        self._latched = ErrorFlag(0)
        self._selftest = SelftestState.IDLE
        self._last_heartbeat = now
        self._heartbeat_expired = False
        self._f_hold_until: float | None = None
        self._coil_mismatch_since: float | None = None
        self._lock_mismatch_since: float | None = None
        self._reply_cache: collections.OrderedDict[tuple[int, int, bytes], bytes] = collections.OrderedDict()
        self._event_seq = 0
        self._last_push: float | None = None
        self._last_key: tuple[object, ...] | None = None
        # A co-processor boots with the pilot in F ("EVSE not available") until the Pi says otherwise.
        self._set_pilot(PilotCode.F, 0)

    def _set_pilot(self, mode: PilotCode, duty_permille: int) -> None:
        self._duty_permille = duty_permille if mode is PilotCode.PWM else 0
        self.plant.pilot.mode = PilotMode[PilotCode(mode).name]
        self.plant.pilot.duty = self._duty_permille / 1000.0

    def _pilot_mode(self) -> PilotCode:
        return PilotCode[self.plant.pilot.mode.name]

    def _levels(self) -> tuple[int, int | None, CpState]:
        """(high mV, low mV or None, state) as the co-processor's pilot ADC would measure them."""
        mode = self._pilot_mode()
        high_v, low_v = self.plant.cp_plateaus()
        if mode is PilotCode.PWM:
            high, low = round(high_v * 1000), round(low_v * 1000)
        elif mode is PilotCode.X1:
            high, low = round(high_v * 1000), None
        else:  # F and E: one steady level, no high phase to read the EV from
            level = round(self.plant.cp_voltage(0.0) * 1000)
            return level, level, CpState.F if mode is PilotCode.F else CpState.E
        return high, low, classify_pilot(high)

    def _rcd_tripping(self) -> bool:
        threshold = RCD_AC_TRIP_MA if self.residual_is_ac else RCD_DC_TRIP_MA
        return self.plant.residual_current_ma >= threshold

    def _mirror(self) -> bool:
        if self.plant.contactor_welded:
            closed = True
        elif self.plant.contactor_stuck_open:
            closed = False
        else:
            closed = self._coil
        self.plant.contacts_closed = closed
        return closed

    def _flags(self, levels: tuple[int, int | None, CpState]) -> ErrorFlag:
        """Latched flags plus the live ones judged from the pilot ``levels`` (see :meth:`_levels`)."""
        flags = self._latched
        _, low, cp_state = levels
        if cp_state is CpState.UNKNOWN:
            flags |= ErrorFlag.CP_SIGNAL_FAULT
        if (
            self._pilot_mode() is PilotCode.PWM
            and cp_state in (CpState.B, CpState.C, CpState.D)
            and low is not None
            and low > DIODE_FAULT_ABOVE_MV
        ):
            flags |= ErrorFlag.DIODE_FAULT
        return flags

    def _update_outputs(self, now: float) -> None:
        levels = self._levels()
        cp_state = levels[2]
        flags = self._flags(levels)
        # The coil is energised only while the Pi allows it, the EV asks for power (C or D) and
        # nothing interlocks: C->B or unplug opens it here, below the Pi's jitter (IEC 61851-1
        # Table A.6 seq. 7/8.1: open within 100 ms; standards-facts.md 1.6).
        self._coil = self._allowed and cp_state in (CpState.C, CpState.D) and not flags & INTERLOCK_FLAGS
        if self._mirror() != self._coil:
            if self._coil_mismatch_since is None:
                self._coil_mismatch_since = now
            elif now - self._coil_mismatch_since >= FEEDBACK_SETTLE_S:
                self._latched |= ErrorFlag.COIL_FEEDBACK_DIVERGES
                self._allowed = False
                self._coil = False
        else:
            self._coil_mismatch_since = None
        if not self.lock_jammed:
            self._lock_feedback = self._lock_commanded
        if self.has_lock and self._lock_feedback != self._lock_commanded:
            if self._lock_mismatch_since is None:
                self._lock_mismatch_since = now
            elif now - self._lock_mismatch_since >= FEEDBACK_SETTLE_S:
                self._latched |= ErrorFlag.CONNECTOR_LOCK_FAILED
        else:
            self._lock_mismatch_since = None

    def _status(self) -> McuStatus:
        now = self._clock.monotonic()
        levels = self._levels()
        high, low, cp_state = levels
        outputs = Output(0)
        if self._allowed:
            outputs |= Output.CONTACTOR_ALLOWED
        if self._coil:
            outputs |= Output.CONTACTOR_COIL
        if self._mirror():
            outputs |= Output.CONTACTOR_MIRROR
        if self._lock_commanded:
            outputs |= Output.LOCK_COMMANDED
        if self._lock_feedback:
            outputs |= Output.LOCK_FEEDBACK
        if low is not None:
            outputs |= Output.CP_LOW_VALID
        if self._session:
            outputs |= Output.SESSION_OPEN
        return McuStatus(
            uptime_ms=round((now - self._boot_time) * 1000),
            pilot_mode=self._pilot_mode(),
            duty_permille=self._duty_permille,
            cp_high_mv=high,
            cp_low_mv=low if low is not None else 0,
            # One reading per PWM period (1 kHz) over the status window.
            cp_periods=max(1, round(self.status_period_s * 1000)),
            cp_state=cp_state,
            outputs=outputs,
            flags=self._flags(levels),
            selftest=self._selftest,
        )

    def _tick(self) -> None:
        now = self._clock.monotonic()
        self.ticks += 1
        if self._rcd_tripping() and not self._latched & ErrorFlag.RCD_TRIGGERED:
            # RCD trip: contactor open at once, pilot F so the EV stops drawing (OpenEVSE GFCI fault
            # handling, anchors.md 3); stays latched until CLEAR_ERRORS with the current gone.
            self._latched |= ErrorFlag.RCD_TRIGGERED
            self._allowed = False
            self._f_hold_until = None
            self._set_pilot(PilotCode.F, 0)
        if self._session and not self._heartbeat_expired and now - self._last_heartbeat > self.heartbeat_timeout_s:
            self._heartbeat_expired = True
            self._latched |= ErrorFlag.HEARTBEAT_TIMEOUT
            self._allowed = False
            self._set_pilot(PilotCode.F, 0)
            self._f_hold_until = now + F_HOLD_S
        if self._f_hold_until is not None and now >= self._f_hold_until:
            self._f_hold_until = None
            self._set_pilot(PilotCode.X1, 0)
        if self._selftest is SelftestState.RUNNING:
            if self.rcd_selftest_fails:
                self._selftest = SelftestState.FAILED
                self._latched |= ErrorFlag.RCD_SELFTEST_FAILED
            else:
                self._selftest = SelftestState.PASSED
                self._latched &= ~ErrorFlag.RCD_SELFTEST_FAILED
        self._update_outputs(now)
        status = self._status()
        key = (status.pilot_mode, status.duty_permille, status.cp_state, status.outputs, status.flags, status.selftest)
        periodic_due = self._last_push is None or now - self._last_push >= self.status_period_s
        if key != self._last_key or periodic_due:
            self._last_key = key
            self._last_push = now
            self._send_event(MsgType.EVENT_STATUS, status.encode())

    # ------------------------------------------------------------------ requests
    def _handle(self, frame: Frame) -> None:
        self.received.append(frame)
        if not 0x01 <= frame.msg_type <= 0x3F:
            log.debug("co-processor sim: ignoring non-request frame type 0x%02X", frame.msg_type)
            return
        key = (frame.seq, frame.msg_type, frame.payload)
        cached = self._reply_cache.get(key)
        if cached is not None:  # a retry of a request already executed: answer, do not act again
            self._send_reply(cached)
            return
        self.executed.append(frame)
        msg_type, payload = self._execute(frame)
        encoded = encode_frame(frame.seq, msg_type, payload)
        self._reply_cache[key] = encoded
        while len(self._reply_cache) > REPLY_CACHE_SIZE:
            self._reply_cache.popitem(last=False)
        self._send_reply(encoded)

    def _execute(self, frame: Frame) -> tuple[int, bytes]:
        t = frame.msg_type
        now = self._clock.monotonic()
        try:
            known = MsgType(t)
        except ValueError:
            return self._nack(t, NackCode.UNKNOWN_TYPE)
        try:
            if known is MsgType.HELLO:
                version = decode_hello_request(frame.payload)
                self._reply_cache.clear()
                if version == self.protocol_version:
                    self._session = True
                    self._last_heartbeat = now
                    self._heartbeat_expired = False
                return reply_type(t), self.hello_info().encode()
            if not self._session and known is not MsgType.READ_STATUS:
                return self._nack(t, NackCode.NO_SESSION)
            if known is MsgType.HEARTBEAT:
                if frame.payload:
                    raise PayloadError("HEARTBEAT carries no payload")
                self.heartbeats_received += 1
                self._last_heartbeat = now
                self._heartbeat_expired = False
            elif known is MsgType.SET_PILOT:
                mode_code, duty = decode_set_pilot(frame.payload)
                try:
                    mode = PilotCode(mode_code)
                except ValueError:
                    return self._nack(t, NackCode.BAD_VALUE)
                if mode is PilotCode.PWM and not 0 < duty < 1000:
                    return self._nack(t, NackCode.BAD_VALUE)
                if mode is PilotCode.E and not self.supports_state_e:
                    return self._nack(t, NackCode.UNSUPPORTED)
                self._f_hold_until = None
                self._set_pilot(mode, duty)
            elif known is MsgType.SET_CONTACTOR:
                allow = decode_bool(frame.payload, "SET_CONTACTOR")
                if allow and self._flags(self._levels()) & INTERLOCK_FLAGS:
                    return self._nack(t, NackCode.INTERLOCK)
                self._allowed = allow
            elif known is MsgType.SET_LOCK:
                locked = decode_bool(frame.payload, "SET_LOCK")
                if not self.has_lock:
                    return self._nack(t, NackCode.UNSUPPORTED)
                self._lock_commanded = locked
            elif known is MsgType.RCD_SELFTEST:
                if frame.payload:
                    raise PayloadError("RCD_SELFTEST carries no payload")
                if self._selftest is SelftestState.RUNNING:
                    return self._nack(t, NackCode.BUSY)
                self._selftest = SelftestState.RUNNING  # result on the next tick, pushed as STATUS
            elif known is MsgType.CLEAR_ERRORS:
                self._clear(decode_flags(frame.payload))
            elif known is MsgType.READ_STATUS:
                if frame.payload:
                    raise PayloadError("READ_STATUS carries no payload")
            else:  # EVENT_* and NACK are not requests
                return self._nack(t, NackCode.UNKNOWN_TYPE)
        except PayloadError:
            return self._nack(t, NackCode.BAD_LENGTH)
        self._update_outputs(now)
        return reply_type(t), self._status().encode()

    def _clear(self, mask: int) -> None:
        """Clear the requested latched flags whose cause is gone (mcu-protocol.md CLEAR_ERRORS)."""
        gone = ErrorFlag(0)
        if not self._rcd_tripping():
            gone |= ErrorFlag.RCD_TRIGGERED
        if not self._heartbeat_expired:
            gone |= ErrorFlag.HEARTBEAT_TIMEOUT
        if self._mirror() == self._coil:
            gone |= ErrorFlag.COIL_FEEDBACK_DIVERGES
        if self._lock_feedback == self._lock_commanded:
            gone |= ErrorFlag.CONNECTOR_LOCK_FAILED
        # RCD_SELFTEST_FAILED is cleared only by a passing self-test.
        self._latched &= ~(ErrorFlag(mask) & LATCHED_FLAGS & gone)

    @staticmethod
    def _nack(msg_type: int, code: NackCode) -> tuple[int, bytes]:
        return MsgType.NACK, Nack(msg_type, code).encode()

    # ------------------------------------------------------------------ transmit
    def _send_reply(self, encoded: bytes) -> None:
        if self._drop_replies > 0:
            self._drop_replies -= 1
            return
        self._write(encoded)

    def _send_event(self, msg_type: MsgType, payload: bytes) -> None:
        self._event_seq = (self._event_seq + 1) & 0xFF
        self._write(encode_frame(self._event_seq, msg_type, payload))

    def _write(self, frame: bytes) -> None:
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
            self._send_event(MsgType.EVENT_BOOT, self.hello_info().encode())
        while not self._stop.is_set():
            data = self._receive(_POLL_S)
            if data is None:
                return
            with self._lock:
                if data:
                    self._last_rx_real = time.monotonic()
                    frames = self._decoder.feed(data)
                elif self._decoder.pending and time.monotonic() - self._last_rx_real >= IDLE_FLUSH_S:
                    frames = self._decoder.flush()
                else:
                    frames = []
                for frame in frames:
                    self._handle(frame)
                self._flush_garbage()
                self._tick()
