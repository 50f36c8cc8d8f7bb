"""The Pi's side of the wire, by hand, for the co-processor firmware tests: frames in, replies and events
out, a millisecond clock moved by the test. Used by tests/mcu/test_core.py on CPython and by
tests/mcu/mpy_scenarios.py on MicroPython (no __future__ import; annotations are never evaluated there)."""

import struct

try:
    from board.mcu import loop
    from board.mcu import protocol as P
    from tests.mcu.fake_hw import FakeClock, FakeHw
except ImportError:  # MicroPython: the files sit side by side at the root
    import loop  # type: ignore[import-not-found,no-redef]
    import protocol as P  # type: ignore[import-not-found,no-redef]
    from fake_hw import FakeClock, FakeHw  # type: ignore[import-not-found,no-redef]


class Pi:
    def __init__(self) -> None:
        self.hw = FakeHw()
        self.clock = FakeClock()
        self.loop = loop.Loop(self.hw, self.clock)
        self.seq = 0
        self.decoder = P.Decoder()

    def step(self, ms: int = 1, times: int = 1) -> None:
        for _ in range(times):
            self.clock.ms += ms
            self.loop.step()

    def frames(self) -> list:
        out: list = []
        for frame, _ in self.hw.tx:
            out += self.decoder.feed(frame)
        self.hw.tx = []
        return out

    def request(self, msg_type: int, payload: bytes = b"", seq: int = -1) -> tuple:
        """Send one request, run one loop iteration, return the reply (type, payload); (None, b"") if none."""
        if seq < 0:
            self.seq = (self.seq + 1) & 0xFF
            seq = self.seq
        self.frames()  # drop what came before
        self.hw.rx += P.encode_frame(seq, msg_type, payload)
        self.step()
        replies = [(t, p) for s, t, p in self.frames() if s == seq and not P.MSG_EVENT_STATUS <= t < P.MSG_NACK]
        return replies[0] if len(replies) == 1 else (None, b"")

    def status(self, payload: bytes) -> tuple:
        return struct.unpack(P.STATUS_FORMAT, payload)

    def open(self) -> None:
        self.request(P.MSG_HELLO, bytes([P.PROTOCOL_VERSION]))

    def charging(self) -> None:
        """Session open, PWM 16 A (26.7 %), EV in C, contactor allowed and closed."""
        self.open()
        self.request(P.MSG_SET_PILOT, struct.pack(P.SET_PILOT_FORMAT, P.PILOT_PWM, 267))
        self.hw.ev = "C"
        self.step()
        self.request(P.MSG_SET_CONTACTOR, b"\x01")
