"""The co-processor firmware (board/mcu/core.py, loop.py) on CPython over a fake hardware seam, in
milliseconds the test moves by hand: every frame type, the boot and session rules, each hard fault
reaching the safe state within loop.SAFE_STATE_ITERATIONS, corrupted frames, at-most-once replies and
the status pushes. The same code runs under MicroPython in tests/mcu/test_micropython.py."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from board.mcu import loop
from board.mcu import protocol as P
from tests.mcu import pi_side


class Pi(pi_side.Pi):
    """The shared Pi side, with the checks a pytest run makes on every step."""

    def request(self, msg_type: int, payload: bytes = b"", seq: int | None = None) -> tuple[int, bytes]:
        reply = super().request(msg_type, payload, -1 if seq is None else seq)
        assert reply[0] is not None, "no reply"
        return reply  # type: ignore[return-value]

    def open(self) -> None:
        assert self.request(P.MSG_HELLO, bytes([P.PROTOCOL_VERSION]))[0] == P.MSG_HELLO | P.REPLY_BIT

    def charging(self) -> None:
        super().charging()
        assert self.hw.coil_on


def nack(reply: tuple[int, bytes]) -> int:
    assert reply[0] == P.MSG_NACK, reply
    return reply[1][1]


# ------------------------------------------------------------------------------------------ boot and session
def test_it_boots_safe_and_says_so() -> None:
    pi = Pi()
    [(_, kind, payload)] = pi.frames()
    assert kind == P.MSG_EVENT_BOOT
    version, *_, caps, reason, timeout_ms, period_ms = struct.unpack(P.HELLO_INFO_FORMAT, payload)
    assert (version, reason, timeout_ms, period_ms) == (P.PROTOCOL_VERSION, P.RESET_POWER_ON, 1000, 50)
    assert caps & P.CAP_RCD and caps & P.CAP_CONTACTOR_MIRROR
    assert pi.hw.mode == P.PILOT_F and not pi.hw.coil_on


@pytest.mark.parametrize(
    ("msg_type", "payload"),
    [
        (P.MSG_HEARTBEAT, b""),
        (P.MSG_SET_PILOT, struct.pack(P.SET_PILOT_FORMAT, P.PILOT_X1, 0)),
        (P.MSG_SET_CONTACTOR, b"\x00"),
        (P.MSG_SET_LOCK, b"\x01"),
        (P.MSG_RCD_SELFTEST, b""),
        (P.MSG_CLEAR_ERRORS, b"\xff\xff"),
    ],
)
def test_before_hello_only_status_and_hello_are_answered(msg_type: int, payload: bytes) -> None:
    pi = Pi()
    assert nack(pi.request(msg_type, payload)) == P.NACK_NO_SESSION
    assert pi.request(P.MSG_READ_STATUS)[0] == P.MSG_READ_STATUS | P.REPLY_BIT


def test_a_hello_with_another_version_opens_no_session() -> None:
    pi = Pi()
    kind, info = pi.request(P.MSG_HELLO, bytes([P.PROTOCOL_VERSION + 1]))
    assert kind == P.MSG_HELLO | P.REPLY_BIT and info[0] == P.PROTOCOL_VERSION
    assert nack(pi.request(P.MSG_HEARTBEAT)) == P.NACK_NO_SESSION


# ------------------------------------------------------------------------------------------ every frame type
@pytest.mark.parametrize(
    ("msg_type", "payload", "check"),
    [
        (P.MSG_HEARTBEAT, b"", lambda pi, st: pi.loop.fw.heartbeats == 1),
        (P.MSG_READ_STATUS, b"", lambda pi, st: st[7] & P.OUT_SESSION_OPEN),
        (P.MSG_SET_PILOT, struct.pack(P.SET_PILOT_FORMAT, P.PILOT_PWM, 533), lambda pi, st: st[1:3] == (1, 533)),
        (P.MSG_SET_PILOT, struct.pack(P.SET_PILOT_FORMAT, P.PILOT_X1, 0), lambda pi, st: pi.hw.mode == P.PILOT_X1),
        (P.MSG_SET_PILOT, struct.pack(P.SET_PILOT_FORMAT, P.PILOT_E, 0), lambda pi, st: st[6] == P.CP_E),
        (P.MSG_SET_CONTACTOR, b"\x01", lambda pi, st: st[7] & P.OUT_CONTACTOR_ALLOWED and not pi.hw.coil_on),
        (P.MSG_SET_LOCK, b"\x01", lambda pi, st: pi.hw.lock_on and st[7] & P.OUT_LOCK_COMMANDED),
        (P.MSG_RCD_SELFTEST, b"", lambda pi, st: st[9] == P.SELFTEST_RUNNING),
        (P.MSG_CLEAR_ERRORS, b"\x00\x00", lambda pi, st: st[8] == 0),
    ],
)  # fmt: skip
def test_every_request_is_acknowledged_with_the_status_after_it(
    msg_type: int, payload: bytes, check: Callable[[Pi, tuple[int, ...]], object]
) -> None:
    pi = Pi()
    pi.open()
    kind, reply = pi.request(msg_type, payload)
    assert kind == msg_type | P.REPLY_BIT
    uptime, *rest = pi.status(reply)
    assert check(pi, (uptime, *rest))


@pytest.mark.parametrize(
    ("msg_type", "payload", "code"),
    [
        (0x3E, b"", P.NACK_UNKNOWN_TYPE),
        (P.MSG_HEARTBEAT, b"\x00", P.NACK_BAD_LENGTH),
        (P.MSG_SET_PILOT, b"\x01", P.NACK_BAD_LENGTH),
        (P.MSG_SET_PILOT, struct.pack(P.SET_PILOT_FORMAT, P.PILOT_PWM, 0), P.NACK_BAD_VALUE),
        (P.MSG_SET_PILOT, struct.pack(P.SET_PILOT_FORMAT, P.PILOT_PWM, 1000), P.NACK_BAD_VALUE),
        (P.MSG_SET_PILOT, struct.pack(P.SET_PILOT_FORMAT, 4, 0), P.NACK_BAD_VALUE),
    ],
)
def test_wrong_requests_are_refused_with_their_code(msg_type: int, payload: bytes, code: int) -> None:
    pi = Pi()
    pi.open()
    assert nack(pi.request(msg_type, payload)) == code


@pytest.mark.parametrize(("ohm", "wire"), [(220, 220), (P.PP_OPEN, P.PP_OPEN), (70_000, P.PP_OPEN), (-1, 0)])
def test_read_pp_reports_the_resistance(ohm: int, wire: int) -> None:
    pi = Pi()
    pi.open()
    pi.hw.pp = ohm
    kind, payload = pi.request(P.MSG_READ_PP)
    assert kind == P.MSG_READ_PP | P.REPLY_BIT and struct.unpack(P.PP_FORMAT, payload) == (wire,)


def test_read_pp_without_the_capability_is_unsupported() -> None:
    pi = Pi()
    pi.loop.fw.has_pp = False
    pi.open()
    assert nack(pi.request(P.MSG_READ_PP)) == P.NACK_UNSUPPORTED
    assert not pi.loop.fw.capabilities() & P.CAP_PP


def test_a_second_self_test_while_one_runs_is_busy_and_the_result_follows() -> None:
    pi = Pi()
    pi.open()
    pi.request(P.MSG_RCD_SELFTEST)
    assert nack(pi.request(P.MSG_RCD_SELFTEST)) == P.NACK_BUSY
    pi.step(times=3)
    assert pi.loop.fw.selftest == P.SELFTEST_PASSED and not pi.hw.test_current
    pi.hw.rcd_test_works = False  # the test winding does not trip the RCD
    pi.request(P.MSG_RCD_SELFTEST)
    pi.step(ms=10, times=31)
    assert pi.loop.fw.selftest == P.SELFTEST_FAILED and pi.loop.fw.flags() & P.FLAG_RCD_SELFTEST_FAILED
    assert nack(pi.request(P.MSG_SET_CONTACTOR, b"\x01")) == P.NACK_INTERLOCK


# ------------------------------------------------------------------------------------------ hard faults
def _rcd(pi: Pi) -> None:
    pi.hw.residual_ma = 8.0


def _unplug(pi: Pi) -> None:
    pi.hw.ev = "A"


def _c_to_b(pi: Pi) -> None:
    pi.hw.ev = "B"


def _pilot_short(pi: Pi) -> None:
    pi.hw.ev = "E"


def _diode(pi: Pi) -> None:
    pi.hw.diode_ok = False


def _stuck_open(pi: Pi) -> None:
    pi.hw.stuck_open = True
    pi.step()  # the mirror disagrees from here on
    pi.step(ms=P.FEEDBACK_SETTLE_MS - 1)  # its settle time is not over yet; the budget step ends it


def _lock_jam(pi: Pi) -> None:
    pi.request(P.MSG_SET_LOCK, b"\x00")
    pi.hw.lock_jammed = True
    pi.request(P.MSG_SET_LOCK, b"\x01")  # the feedback disagrees from here on
    pi.step(ms=P.FEEDBACK_SETTLE_MS - 1)


def _heartbeat_lost(pi: Pi) -> None:
    since = pi.clock.ms - pi.loop.fw.last_heartbeat_ms
    pi.step(ms=P.HEARTBEAT_TIMEOUT_MS - since)  # the last heartbeat is exactly the timeout old: not yet


@pytest.mark.parametrize(
    ("fault", "pilot", "flag"),
    [
        (_rcd, P.PILOT_F, P.FLAG_RCD_TRIGGERED),
        (_unplug, P.PILOT_PWM, 0),
        (_c_to_b, P.PILOT_PWM, 0),
        (_pilot_short, P.PILOT_PWM, 0),
        (_diode, P.PILOT_PWM, P.FLAG_DIODE_FAULT),
        (_stuck_open, P.PILOT_PWM, P.FLAG_COIL_FEEDBACK_DIVERGES),
        (_lock_jam, P.PILOT_PWM, P.FLAG_CONNECTOR_LOCK_FAILED),
        (_heartbeat_lost, P.PILOT_F, P.FLAG_HEARTBEAT_TIMEOUT),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)).strip("_"),
)
def test_each_hard_fault_reaches_the_safe_state_within_the_budget(
    fault: Callable[[Pi], None], pilot: int, flag: int
) -> None:
    pi = Pi()
    pi.charging()
    fault(pi)
    assert pi.hw.coil_on, "the fault was acted on before its time"
    pi.step(times=loop.SAFE_STATE_ITERATIONS)
    assert not pi.hw.coil_on, "the coil is still energised"
    assert pi.hw.mode == pilot
    assert pi.loop.fw.flags() & flag == flag
    if flag & P.INTERLOCK_FLAGS:  # latched: power stays off until the cause is gone and cleared
        assert nack(pi.request(P.MSG_SET_CONTACTOR, b"\x01")) == P.NACK_INTERLOCK


def test_after_a_lost_heartbeat_f_then_x1_and_power_only_after_clearing() -> None:
    pi = Pi()
    pi.charging()
    pi.step(ms=P.HEARTBEAT_TIMEOUT_MS + 1)
    assert pi.hw.mode == P.PILOT_F and not pi.hw.coil_on
    pi.step(ms=P.F_HOLD_MS - 1)
    assert pi.hw.mode == P.PILOT_F
    pi.step()
    assert pi.hw.mode == P.PILOT_X1
    assert nack(pi.request(P.MSG_SET_CONTACTOR, b"\x01")) == P.NACK_INTERLOCK
    pi.request(P.MSG_HEARTBEAT)
    pi.request(P.MSG_CLEAR_ERRORS, struct.pack(P.FLAGS_FORMAT, P.FLAG_HEARTBEAT_TIMEOUT))
    assert pi.request(P.MSG_SET_CONTACTOR, b"\x01")[0] == P.MSG_SET_CONTACTOR | P.REPLY_BIT


def test_a_welded_contactor_withdraws_the_allowance() -> None:
    pi = Pi()
    pi.charging()
    pi.hw.welded = True
    pi.request(P.MSG_SET_CONTACTOR, b"\x00")
    pi.step(ms=P.FEEDBACK_SETTLE_MS, times=2)
    fw = pi.loop.fw
    assert fw.flags() & P.FLAG_COIL_FEEDBACK_DIVERGES and not fw.allowed and not pi.hw.coil_on


# ------------------------------------------------------------------------------------------ the line
def test_at_most_once_a_retry_gets_the_same_reply_without_acting_again() -> None:
    pi = Pi()
    pi.open()
    first = pi.request(P.MSG_RCD_SELFTEST, seq=77)
    pi.step(times=3)  # the self-test ran and passed
    again = pi.request(P.MSG_RCD_SELFTEST, seq=77)
    assert again == first and pi.loop.fw.selftest == P.SELFTEST_PASSED


def test_status_is_pushed_every_period_and_at_once_on_a_change() -> None:
    pi = Pi()
    pi.open()
    pi.request(P.MSG_SET_PILOT, struct.pack(P.SET_PILOT_FORMAT, P.PILOT_X1, 0))
    pi.step()
    pi.frames()
    pi.step(ms=10, times=20)  # 200 ms
    pushes = [t for _, t, _ in pi.frames() if t == P.MSG_EVENT_STATUS]
    assert len(pushes) == 200 // P.STATUS_PERIOD_MS
    pi.hw.ev = "B"
    pi.step()
    assert [t for _, t, _ in pi.frames()] == [P.MSG_EVENT_STATUS]


@settings(max_examples=150, deadline=None)
@given(noise=st.binary(max_size=200), flip=st.integers(0, 10_000))
def test_corrupted_frames_are_never_acted_on_and_the_next_good_one_is(noise: bytes, flip: int) -> None:
    pi = Pi()
    pi.open()
    pi.frames()
    bad = bytearray(P.encode_frame(9, P.MSG_SET_LOCK, b"\x01"))
    bad[5 + flip % 3] ^= 0x40  # a bit error in the payload or the CRC
    pi.hw.rx += noise + bytes(bad)
    pi.step(ms=P.IDLE_ABANDON_MS)  # the line goes idle: a partial frame is abandoned
    pi.step()
    assert not pi.hw.lock_on
    assert not [t for _, t, _ in pi.frames() if t == P.MSG_SET_LOCK | P.REPLY_BIT]
    assert pi.request(P.MSG_SET_LOCK, b"\x01")[0] == P.MSG_SET_LOCK | P.REPLY_BIT
    assert pi.hw.lock_on
