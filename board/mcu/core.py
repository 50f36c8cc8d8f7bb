# The safety co-processor's firmware logic (docs/mcu-protocol.md): pilot generator and reading,
# contactor gating with its mirror check, connector lock, RCD supervision and self-test, heartbeat
# fail-safe, and the serial protocol's request / reply / event rules.
#
# It is pure logic over a hardware seam (``hw``) and a millisecond clock passed in by the caller, so the
# same code runs on the RP2040 under MicroPython (hw_rp2040.py over ``machine``, main.py's loop), on the
# official MicroPython WebAssembly port in the tests, and on CPython as the simulated co-processor
# (hal/sim/coprocessor.py over the simulated plant). MicroPython subset only: no typing, dataclasses,
# enum; integers only.
#
# The hardware seam ``hw`` has:
#   pilot(mode, duty_permille)   drive the generator (protocol.PILOT_*; duty 0 outside PWM)
#   pilot_levels()               (high_mv, low_mv or None): the plateaus measured in step with the PWM
#                                since the last call (low None without a negative plateau: X1, F, E)
#   coil(on)                     energise / release the contactor coil
#   mirror()                     True when the auxiliary (mirror) contact reads closed
#   lock(on), lock_feedback()    the connector lock actuator and its feedback switch (has_lock only)
#   rcd_tripped()                True while the RCD / RDC-DD signals residual current above its limit
#   rcd_test(on)                 drive the RCD's test winding
#   pp_ohm()                     the PP-PE resistance in ohms (protocol.PP_OPEN: open); boards with has_pp
#   send(frame, is_reply)        write one encoded frame on the UART

import struct

try:
    from typing import Any  # annotations only; MicroPython has no typing module
except ImportError:
    Any = object  # type: ignore[misc,assignment]

try:  # CPython: the package; on the co-processor the files sit side by side at the root
    from board.mcu import protocol as P
except ImportError:
    import protocol as P  # type: ignore[import-not-found,no-redef]

FIRMWARE_VERSION = (0, 2, 0)

# Pilot windows: +/-1.1 V around 12/9/6/3/0 V (EVerest YetiSimulator, standards-facts.md 1.2); a
# negative plateau above -10.9 V while PWM runs and an EV is present is a diode fault (1.5).
CP_WINDOW_MV = 1100
CP_CENTRES_MV = ((P.CP_A, 12000), (P.CP_B, 9000), (P.CP_C, 6000), (P.CP_D, 3000), (P.CP_E, 0))
DIODE_FAULT_ABOVE_MV = -12000 + CP_WINDOW_MV
#: RCD self-test: the test current must trip the RCD within this time (IEC 62955 / IEC 61008 devices
#: trip within 300 ms at their rated residual current; the co-processor reports within 500 ms).
RCD_TEST_TRIP_WITHIN_MS = 300
#: After the test current is removed the RCD must release within this time, or the test fails.
RCD_TEST_RELEASE_WITHIN_MS = 100


def classify_pilot(high_mv: int) -> int:
    """The IEC 61851-1 state of a positive plateau, CP_UNKNOWN outside every window."""
    for state, centre in CP_CENTRES_MV:
        if centre - CP_WINDOW_MV <= high_mv <= centre + CP_WINDOW_MV:
            return state
    return P.CP_UNKNOWN


class Coprocessor:
    """One co-processor. Call :meth:`boot` once, then :meth:`receive` with UART bytes as they come,
    :meth:`idle` when the line has been silent for protocol.IDLE_ABANDON_MS, and :meth:`tick` at
    least every millisecond or two (main.py's loop); every call takes the current time in ms."""

    def __init__(
        self,
        hw,
        protocol_version: int = P.PROTOCOL_VERSION,
        supports_state_e: bool = True,
        has_lock: bool = True,
        has_pp: bool = False,
        heartbeat_timeout_ms: int = P.HEARTBEAT_TIMEOUT_MS,
        status_period_ms: int = P.STATUS_PERIOD_MS,
    ) -> None:
        self.hw = hw
        self.protocol_version = protocol_version
        self.supports_state_e = supports_state_e
        self.has_lock = has_lock
        self.has_pp = has_pp
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self.status_period_ms = status_period_ms
        self.decoder = P.Decoder()
        # diagnostics
        self.requests = 0
        self.heartbeats = 0
        self.ticks = 0
        self.boots = 0
        self.on_execute: Any = None  # optional diagnostic hook (seq, type, payload) for each executed request
        self.reset_reason = P.RESET_POWER_ON
        self._state_reset(0)

    # ------------------------------------------------------------------ boot
    def _state_reset(self, now_ms: int) -> None:
        self.boot_ms = now_ms
        self.now_ms = now_ms
        self.session = False
        self.allowed = False
        self.coil = False
        self.lock_commanded = False
        self.latched = 0
        self.selftest = P.SELFTEST_IDLE
        self.last_heartbeat_ms = now_ms
        self.heartbeat_expired = False
        self.f_hold_until = -1  # -1: no F->X1 step pending
        self.coil_mismatch_since = -1
        self.lock_mismatch_since = -1
        self.test_started = -1
        self.test_released = -1
        self.memory: list = []  # the last REPLY_MEMORY (seq, type, payload, reply) for at-most-once
        self.event_seq = 0
        self.last_push_ms = -1
        self.last_key: tuple | None = None
        self.mode = P.PILOT_F
        self.duty = 0
        self.high_mv = 0
        self.low_mv = None
        self.cp_state = P.CP_F
        self.cp_periods = 0

    def boot(self, reason: int, now_ms: int) -> None:
        """A reset: coil released, pilot F ("EVSE not available"), no session; EVENT_BOOT sent."""
        self.boots += 1
        self.reset_reason = reason
        self._state_reset(now_ms)
        self.hw.coil(False)
        self.hw.rcd_test(False)
        self._set_pilot(P.PILOT_F, 0)
        self._measure()
        self._event(P.MSG_EVENT_BOOT, self.hello_info())

    # ------------------------------------------------------------------ what the Pi sees
    def capabilities(self) -> int:
        caps = P.CAP_CONTACTOR_MIRROR | P.CAP_RCD
        if self.supports_state_e:
            caps |= P.CAP_STATE_E
        if self.has_lock:
            caps |= P.CAP_LOCK | P.CAP_LOCK_FEEDBACK
        if self.has_pp:
            caps |= P.CAP_PP
        return caps

    def hello_info(self) -> bytes:
        major, minor, patch = FIRMWARE_VERSION
        return struct.pack(
            P.HELLO_INFO_FORMAT,
            self.protocol_version,
            major,
            minor,
            patch,
            self.capabilities(),
            self.reset_reason,
            self.heartbeat_timeout_ms,
            self.status_period_ms,
        )

    def flags(self) -> int:
        """Latched flags plus the live ones judged from the last pilot reading."""
        flags = self.latched
        if self.cp_state == P.CP_UNKNOWN:
            flags |= P.FLAG_CP_SIGNAL_FAULT
        if (
            self.mode == P.PILOT_PWM
            and self.cp_state in (P.CP_B, P.CP_C, P.CP_D)
            and self.low_mv is not None
            and self.low_mv > DIODE_FAULT_ABOVE_MV
        ):
            flags |= P.FLAG_DIODE_FAULT
        return flags

    def outputs(self) -> int:
        out = 0
        if self.allowed:
            out |= P.OUT_CONTACTOR_ALLOWED
        if self.coil:
            out |= P.OUT_CONTACTOR_COIL
        if self.hw.mirror():
            out |= P.OUT_CONTACTOR_MIRROR
        if self.lock_commanded:
            out |= P.OUT_LOCK_COMMANDED
        if self.has_lock and self.hw.lock_feedback():
            out |= P.OUT_LOCK_FEEDBACK
        if self.low_mv is not None:
            out |= P.OUT_CP_LOW_VALID
        if self.session:
            out |= P.OUT_SESSION_OPEN
        return out

    def status(self) -> bytes:
        return struct.pack(
            P.STATUS_FORMAT,
            (self.now_ms - self.boot_ms) & 0xFFFFFFFF,
            self.mode,
            self.duty,
            self.high_mv,
            self.low_mv if self.low_mv is not None else 0,
            self.cp_periods,
            self.cp_state,
            self.outputs(),
            self.flags(),
            self.selftest,
        )

    # ------------------------------------------------------------------ the pilot
    def _set_pilot(self, mode: int, duty: int) -> None:
        self.mode = mode
        self.duty = duty if mode == P.PILOT_PWM else 0
        self.hw.pilot(self.mode, self.duty)

    def _measure(self) -> None:
        high, low = self.hw.pilot_levels()
        if self.mode == P.PILOT_F or self.mode == P.PILOT_E:
            # One steady level the generator drives: the EV's resistor cannot be read.
            self.high_mv = high
            self.low_mv = high
            self.cp_state = P.CP_F if self.mode == P.PILOT_F else P.CP_E
        else:
            self.high_mv = high
            self.low_mv = low if self.mode == P.PILOT_PWM else None
            self.cp_state = classify_pilot(high)
        # One reading per PWM period (1 kHz) over the status window.
        self.cp_periods = max(1, self.status_period_ms)

    # ------------------------------------------------------------------ outputs and supervision
    def _update_outputs(self, now: int) -> None:
        # The feedback checks come first, so a fault they latch releases the coil in this same pass.
        if self.hw.mirror() != self.coil:
            if self.coil_mismatch_since < 0:
                self.coil_mismatch_since = now
            elif now - self.coil_mismatch_since >= P.FEEDBACK_SETTLE_MS:
                # Welded or stuck open: withdraw the allowance (the coil is released below).
                self.latched |= P.FLAG_COIL_FEEDBACK_DIVERGES
                self.allowed = False
        else:
            self.coil_mismatch_since = -1
        if self.has_lock and self.hw.lock_feedback() != self.lock_commanded:
            if self.lock_mismatch_since < 0:
                self.lock_mismatch_since = now
            elif now - self.lock_mismatch_since >= P.FEEDBACK_SETTLE_MS:
                self.latched |= P.FLAG_CONNECTOR_LOCK_FAILED
        else:
            self.lock_mismatch_since = -1
        # Energised only while the Pi allows it, the EV asks for power (C or D) and nothing interlocks:
        # C->B or unplug opens it here, below the Pi's jitter (IEC 61851-1 Table A.6 seq. 7/8.1: open
        # within 100 ms; standards-facts.md 1.6).
        coil = self.allowed and self.cp_state in (P.CP_C, P.CP_D) and not self.flags() & P.INTERLOCK_FLAGS
        if coil != self.coil:
            self.coil = coil
            self.hw.coil(coil)
            if self.hw.mirror() == coil:
                self.coil_mismatch_since = -1
            elif self.coil_mismatch_since < 0:
                self.coil_mismatch_since = now  # the relay gets its settle time from this change

    def _rcd(self, now: int) -> None:
        if self.selftest == P.SELFTEST_RUNNING:
            self._selftest_step(now)
            return
        if self.hw.rcd_tripped() and not self.latched & P.FLAG_RCD_TRIGGERED:
            # Contactor open at once, pilot F so the EV stops drawing (OpenEVSE GFCI handling, anchors.md
            # 3); latched until CLEAR_ERRORS with the residual current gone.
            self.latched |= P.FLAG_RCD_TRIGGERED
            self.allowed = False
            self.f_hold_until = -1
            self._set_pilot(P.PILOT_F, 0)

    def _selftest_step(self, now: int) -> None:
        """Test current on -> the RCD trips within RCD_TEST_TRIP_WITHIN_MS -> current off -> it releases
        within RCD_TEST_RELEASE_WITHIN_MS. A trip caused by the test is not a residual-current trip."""
        if self.test_released < 0:
            if self.hw.rcd_tripped():
                self.hw.rcd_test(False)
                self.test_released = now
            elif now - self.test_started >= RCD_TEST_TRIP_WITHIN_MS:
                self._selftest_done(False)
        elif not self.hw.rcd_tripped():
            self._selftest_done(True)
        elif now - self.test_released >= RCD_TEST_RELEASE_WITHIN_MS:
            self._selftest_done(False)

    def _selftest_done(self, passed: bool) -> None:
        self.hw.rcd_test(False)
        self.test_started = -1
        self.test_released = -1
        if passed:
            self.selftest = P.SELFTEST_PASSED
            self.latched &= ~P.FLAG_RCD_SELFTEST_FAILED
        else:
            self.selftest = P.SELFTEST_FAILED
            self.latched |= P.FLAG_RCD_SELFTEST_FAILED

    def _heartbeat(self, now: int) -> None:
        if self.session and not self.heartbeat_expired and now - self.last_heartbeat_ms > self.heartbeat_timeout_ms:
            # mcu-protocol.md section 6: contactor open and pilot F at once, X1 after F_HOLD_MS.
            self.heartbeat_expired = True
            self.latched |= P.FLAG_HEARTBEAT_TIMEOUT
            self.allowed = False
            self._set_pilot(P.PILOT_F, 0)
            self.f_hold_until = now + P.F_HOLD_MS
        if self.f_hold_until >= 0 and now >= self.f_hold_until:
            self.f_hold_until = -1
            self._set_pilot(P.PILOT_X1, 0)

    def tick(self, now_ms: int) -> None:
        """Timers, supervision, outputs and the STATUS push (periodic, and at once on a change)."""
        self.now_ms = now_ms
        self.ticks += 1
        self._measure()
        self._rcd(now_ms)
        self._heartbeat(now_ms)
        self._update_outputs(now_ms)
        key = (self.mode, self.duty, self.cp_state, self.outputs(), self.flags(), self.selftest)
        due = self.last_push_ms < 0 or now_ms - self.last_push_ms >= self.status_period_ms
        if key != self.last_key or due:
            self.last_key = key
            self.last_push_ms = now_ms
            self._event(P.MSG_EVENT_STATUS, self.status())

    # ------------------------------------------------------------------ receive
    def receive(self, data, now_ms: int) -> None:
        self.now_ms = now_ms
        for seq, msg_type, payload in self.decoder.feed(data):
            self._handle(seq, msg_type, payload)

    def idle(self, now_ms: int) -> None:
        self.now_ms = now_ms
        for seq, msg_type, payload in self.decoder.idle():
            self._handle(seq, msg_type, payload)

    def _handle(self, seq: int, msg_type: int, payload: bytes) -> None:
        if not 0x01 <= msg_type <= 0x3F:
            return  # not a request (an echo, a stray reply): never acted on
        for entry in self.memory:
            if entry[0] == seq and entry[1] == msg_type and entry[2] == payload:
                # A retry of a request already executed (its reply was lost): answer, do not act again.
                self.hw.send(entry[3], True)
                return
        self.requests += 1
        if self.on_execute is not None:
            self.on_execute(seq, msg_type, payload)
        reply_type, reply_payload = self._execute(msg_type, payload)
        reply = P.encode_frame(seq, reply_type, reply_payload)
        self.memory.append((seq, msg_type, payload, reply))
        if len(self.memory) > P.REPLY_MEMORY:
            self.memory.pop(0)
        self.hw.send(reply, True)

    def _execute(self, t: int, payload: bytes):
        now = self.now_ms
        expected = P.REQUEST_LENGTHS.get(t)
        if expected is None:
            return self._nack(t, P.NACK_UNKNOWN_TYPE)
        if len(payload) != expected:
            return self._nack(t, P.NACK_BAD_LENGTH)
        if t == P.MSG_HELLO:
            self.memory = []
            if payload[0] == self.protocol_version:
                self.session = True
                self.last_heartbeat_ms = now
                self.heartbeat_expired = False
            return t | P.REPLY_BIT, self.hello_info()
        if not self.session and t != P.MSG_READ_STATUS:
            return self._nack(t, P.NACK_NO_SESSION)
        if t == P.MSG_READ_PP:
            if not self.has_pp:
                return self._nack(t, P.NACK_UNSUPPORTED)
            ohm = self.hw.pp_ohm()
            return t | P.REPLY_BIT, struct.pack(P.PP_FORMAT, min(max(0, ohm), P.PP_OPEN))
        if t == P.MSG_HEARTBEAT:
            self.heartbeats += 1
            self.last_heartbeat_ms = now
            self.heartbeat_expired = False
        elif t == P.MSG_SET_PILOT:
            mode, duty = struct.unpack(P.SET_PILOT_FORMAT, payload)
            if mode > P.PILOT_E or (mode == P.PILOT_PWM and not P.DUTY_MIN_PERMILLE <= duty <= P.DUTY_MAX_PERMILLE):
                return self._nack(t, P.NACK_BAD_VALUE)
            if mode == P.PILOT_E and not self.supports_state_e:
                return self._nack(t, P.NACK_UNSUPPORTED)
            self.f_hold_until = -1
            self._set_pilot(mode, duty)
            self._measure()
        elif t == P.MSG_SET_CONTACTOR:
            allow = payload[0] != 0
            if allow and self.flags() & P.INTERLOCK_FLAGS:
                return self._nack(t, P.NACK_INTERLOCK)
            self.allowed = allow
        elif t == P.MSG_SET_LOCK:
            if not self.has_lock:
                return self._nack(t, P.NACK_UNSUPPORTED)
            self.lock_commanded = payload[0] != 0
            self.hw.lock(self.lock_commanded)
        elif t == P.MSG_RCD_SELFTEST:
            if self.selftest == P.SELFTEST_RUNNING:
                return self._nack(t, P.NACK_BUSY)
            self.selftest = P.SELFTEST_RUNNING
            self.test_started = now
            self.test_released = -1
            self.hw.rcd_test(True)
        elif t == P.MSG_CLEAR_ERRORS:
            self._clear(struct.unpack(P.FLAGS_FORMAT, payload)[0])
        self._update_outputs(now)
        return t | P.REPLY_BIT, self.status()

    def _clear(self, mask: int) -> None:
        """Clear the requested latched flags whose cause is gone (section 5, CLEAR_ERRORS)."""
        gone = 0
        if not self.hw.rcd_tripped():
            gone |= P.FLAG_RCD_TRIGGERED
        if not self.heartbeat_expired:
            gone |= P.FLAG_HEARTBEAT_TIMEOUT
        if self.hw.mirror() == self.coil:
            gone |= P.FLAG_COIL_FEEDBACK_DIVERGES
        if not self.has_lock or self.hw.lock_feedback() == self.lock_commanded:
            gone |= P.FLAG_CONNECTOR_LOCK_FAILED
        # RCD_SELFTEST_FAILED is cleared only by a passing self-test.
        self.latched &= ~(mask & P.LATCHED_FLAGS & gone)

    @staticmethod
    def _nack(t: int, code: int):
        return P.MSG_NACK, struct.pack(P.NACK_PAYLOAD_FORMAT, t, code)

    def _event(self, msg_type: int, payload: bytes) -> None:
        self.event_seq = (self.event_seq + 1) & 0xFF
        self.hw.send(P.encode_frame(self.event_seq, msg_type, payload), False)
