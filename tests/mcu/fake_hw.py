"""A pure-Python hardware seam for board/mcu/core.py and loop.py: the pilot as the EV sets it, the
contactor with welded / stuck-open faults, the lock with a jam, the RCD with residual current and a
test winding, the UART as byte buffers, a millisecond clock the test moves by hand.

It runs on MicroPython too (tests/mcu/mpy_scenarios.py loads it there): no __future__ import, and the
annotations are never evaluated by MicroPython."""

try:
    from board.mcu import protocol as P
except ImportError:  # MicroPython: the firmware's files sit side by side at the root
    import protocol as P  # type: ignore[import-not-found,no-redef]

#: The pilot's positive plateau per EV state (IEC 61851-1 Table A.4, 12/9/6/3 V); F drives -12 V.
PLATEAU_MV = {"A": 12_000, "B": 9_000, "C": 6_000, "D": 3_000, "E": 0}


class FakeClock:
    def __init__(self) -> None:
        self.ms = 0

    def now(self) -> int:
        return self.ms


class FakeHw:
    supports_state_e = True
    has_lock = True
    has_pp = True

    def __init__(self) -> None:
        self.ev = "A"  # the EV's pilot state (its resistors): A, B, C, D, or E (pilot shorted)
        self.diode_ok = True
        self.mode = P.PILOT_F
        self.duty = 0
        self.coil_on = False
        self.welded = False
        self.stuck_open = False
        self.lock_on = False
        self.lock_state = False
        self.lock_jammed = False
        self.residual_ma = 0.0
        self.test_current = False
        self.rcd_test_works = True
        self.pp = P.PP_OPEN  # no cable
        self.rx = bytearray()  # bytes from the Pi, waiting to be read
        self.tx: list[tuple[bytes, bool]] = []  # frames sent, (frame, is_reply)

    # the seam
    def pilot(self, mode: int, duty_permille: int) -> None:
        self.mode, self.duty = mode, duty_permille

    def pilot_levels(self) -> tuple[int, int | None]:
        if self.mode == P.PILOT_F:
            return -12_000, None
        if self.ev == "E":
            return 0, None
        high = PLATEAU_MV[self.ev]
        if self.mode == P.PILOT_PWM:
            return high, -12_000 if self.diode_ok or self.ev == "A" else -high
        return high, None

    def coil(self, on: bool) -> None:
        self.coil_on = on

    def mirror(self) -> bool:
        return True if self.welded else False if self.stuck_open else self.coil_on

    def lock(self, on: bool) -> None:
        self.lock_on = on

    def lock_feedback(self) -> bool:
        if not self.lock_jammed:
            self.lock_state = self.lock_on
        return self.lock_state

    def rcd_tripped(self) -> bool:
        return (self.test_current and self.rcd_test_works) or self.residual_ma >= 6.0

    def rcd_test(self, on: bool) -> None:
        self.test_current = on

    def pp_ohm(self) -> int:
        return self.pp

    def send(self, frame: bytes, is_reply: bool) -> None:
        self.tx.append((frame, is_reply))

    # what loop.Loop also needs
    def sample(self) -> None:
        pass

    def read(self) -> bytes | None:
        data, self.rx = bytes(self.rx), bytearray()
        return data or None

    # for the tests
    def safe(self) -> bool:
        """Coil released and the pilot not offering power (F, or X1 after the fail-safe's F hold)."""
        return not self.coil_on and self.mode in (P.PILOT_F, P.PILOT_X1)
