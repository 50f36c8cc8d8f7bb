# The co-processor's main loop, one iteration at a time (main.py runs it forever; the tests step it).
#
# Safe-state budget: every hard fault the co-processor watches (RCD trip, pilot leaving C/D, heartbeat
# past its timeout, mirror or lock feedback past its settle time, a latched flag) is acted on in the
# iteration that first sees it: the coil is released and, where the fault asks for it, the pilot driven
# to F before the iteration ends. SAFE_STATE_ITERATIONS is that budget; tests hold every fault to it
# on CPython and on MicroPython. An iteration takes about one PWM period (the plateau sampling waits
# for the counter), so the budget is about 1 ms on top of the fault's own time limit (1000 ms without a
# heartbeat, 200 ms of feedback disagreement). A hung loop is caught by the RP2040's watchdog.

try:
    from board.mcu import core
    from board.mcu import protocol as P
except ImportError:  # on the co-processor the files sit side by side at the root
    import core  # type: ignore[import-not-found,no-redef]
    import protocol as P  # type: ignore[import-not-found,no-redef]

SAFE_STATE_ITERATIONS = 1
#: The RP2040 watchdog (machine.WDT): a loop stuck this long resets the co-processor, which boots with
#: the coil released and the pilot in F (reset reason WATCHDOG in its EVENT_BOOT).
WATCHDOG_MS = 200


class Millis:
    """A millisecond count that never wraps, from MicroPython's wrapping ``time.ticks_ms``."""

    def __init__(self, time_module) -> None:
        self.time = time_module
        self.last = time_module.ticks_ms()
        self.total = 0

    def now(self) -> int:
        t = self.time.ticks_ms()
        self.total += self.time.ticks_diff(t, self.last)
        self.last = t
        return self.total


class Loop:
    """The firmware over its hardware: ``step()`` is one iteration of the main loop."""

    def __init__(self, hw, clock, watchdog=None, reset_reason: int = P.RESET_POWER_ON) -> None:
        self.hw = hw
        self.clock = clock
        self.watchdog = watchdog
        self.fw = core.Coprocessor(hw, supports_state_e=hw.supports_state_e, has_lock=hw.has_lock, has_pp=hw.has_pp)
        now = clock.now()
        self.last_rx = now
        self.iterations = 0
        self.fw.boot(reset_reason, now)

    def step(self) -> None:
        self.hw.sample()
        data = self.hw.read()
        now = self.clock.now()
        if data:
            self.last_rx = now
            self.fw.receive(data, now)
        elif self.fw.decoder.n and now - self.last_rx >= P.IDLE_ABANDON_MS:
            self.fw.idle(now)
        self.fw.tick(now)
        self.iterations += 1
        if self.watchdog is not None:
            self.watchdog.feed()
