# The co-processor firmware's hardware seam (core.py) on an RP2040 under MicroPython: the 1 kHz pilot
# on a hardware PWM slice, pilot sampling in step with that PWM (the slice's counter read from its
# registers, so each plateau is sampled away from the edges), the contactor coil and its mirror, the
# lock and its feedback, the RCD trip input and test winding, the UART to the Pi.
#
# ``machine`` is passed in (the real module on the board, a shim in the tests), so this file imports
# nothing board-specific at module level.

try:
    from board.mcu import pins
    from board.mcu import protocol as P
except ImportError:  # on the co-processor the files sit side by side at the root
    import pins  # type: ignore[import-not-found,no-redef]
    import protocol as P  # type: ignore[import-not-found,no-redef]

# RP2040 datasheet 4.5.3: PWM registers at 0x40050000, 0x14 bytes per slice; CTR at +0x08, CC at +0x0C
# (channel A in bits 0..15, B in 16..31), TOP at +0x10. The counter counts 0..TOP and the output is
# high while CTR < CC.
PWM_BASE = 0x40050000
PWM_SLICE_STRIDE = 0x14
PWM_CTR = 0x08
PWM_CC = 0x0C
PWM_TOP = 0x10
#: Samples per plateau and call of :meth:`Rp2040Hardware.sample`: one PWM period each.
SAMPLES_PER_CALL = 1
#: Longest wait for a plateau window, in counter polls (a period is ~1 ms; a poll takes a few us).
MAX_POLLS = 2000


class Rp2040Hardware:
    """The ``hw`` of core.Coprocessor on the RP2040."""

    def __init__(self, machine) -> None:
        self.machine = machine
        Pin = machine.Pin
        self.uart = machine.UART(pins.UART_ID, baudrate=pins.UART_BAUD, tx=Pin(pins.UART_TX), rx=Pin(pins.UART_RX))
        self.cp = machine.PWM(Pin(pins.CP_PWM))
        self.cp.freq(pins.CP_FREQ_HZ)
        self.cp.duty_u16(0)  # -12 V (F) until the firmware says otherwise
        self.cp_e = Pin(pins.CP_E, Pin.OUT, value=0) if pins.CP_E >= 0 else None
        self.adc = machine.ADC(pins.CP_ADC)
        self.coil_pin = Pin(pins.COIL, Pin.OUT, value=0)
        self.mirror_pin = Pin(pins.MIRROR, Pin.IN, Pin.PULL_UP)
        self.lock_pin = Pin(pins.LOCK, Pin.OUT, value=0) if pins.LOCK >= 0 else None
        self.lock_fb = Pin(pins.LOCK_FEEDBACK, Pin.IN, Pin.PULL_UP) if pins.LOCK >= 0 else None
        self.rcd_in = Pin(pins.RCD_TRIP, Pin.IN, Pin.PULL_DOWN)
        self.rcd_test_pin = Pin(pins.RCD_TEST, Pin.OUT, value=0)
        self.pp_adc = machine.ADC(pins.PP_ADC) if pins.PP_ADC >= 0 else None
        slice_ = (pins.CP_PWM >> 1) & 7
        self.channel_b = pins.CP_PWM & 1
        self.reg = PWM_BASE + slice_ * PWM_SLICE_STRIDE
        self.mode = P.PILOT_F
        # plateau accumulators since the last pilot_levels()
        self.high_sum = 0
        self.high_n = 0
        self.low_sum = 0
        self.low_n = 0
        self.steady_mv = 0

    @property
    def supports_state_e(self) -> bool:
        return self.cp_e is not None

    @property
    def has_lock(self) -> bool:
        return self.lock_pin is not None

    @property
    def has_pp(self) -> bool:
        return self.pp_adc is not None

    # ------------------------------------------------------------------ pilot
    def pilot(self, mode: int, duty_permille: int) -> None:
        self.mode = mode
        if self.cp_e is not None:
            self.cp_e.value(1 if mode == P.PILOT_E else 0)
        if mode == P.PILOT_PWM:
            self.cp.duty_u16(duty_permille * 65535 // 1000)
        elif mode == P.PILOT_X1:
            self.cp.duty_u16(65535)  # steady +12 V
        else:  # F (and E, clamped by the E switch): steady -12 V from the generator
            self.cp.duty_u16(0)
        self.high_sum = self.high_n = self.low_sum = self.low_n = 0

    def _mv(self) -> int:
        adc_mv = self.adc.read_u16() * pins.ADC_VREF_MV // 65535
        return (adc_mv - pins.CP_OFFSET_MV) * pins.CP_GAIN

    def _wait_counter(self, lo: int, hi: int) -> bool:
        """Poll the slice counter until it is in [lo, hi); False if it never got there."""
        mem32 = self.machine.mem32
        ctr = self.reg + PWM_CTR
        for _ in range(MAX_POLLS):
            value = mem32[ctr] & 0xFFFF
            if lo <= value < hi:
                return True
        return False

    def sample(self) -> None:
        """Take this period's plateau samples (main.py calls it every loop iteration)."""
        if self.mode != P.PILOT_PWM:
            self.steady_mv = self._mv()
            return
        mem32 = self.machine.mem32
        top = mem32[self.reg + PWM_TOP] & 0xFFFF
        cc = (mem32[self.reg + PWM_CC] >> (16 if self.channel_b else 0)) & 0xFFFF
        counts_per_us = (top + 1) * pins.CP_FREQ_HZ // 1000000 or 1
        guard = pins.CP_EDGE_GUARD_US * counts_per_us
        for _ in range(SAMPLES_PER_CALL):
            if cc - guard > guard and self._wait_counter(guard, cc - guard):
                self.high_sum += self._mv()
                self.high_n += 1
            if top - guard > cc + guard and self._wait_counter(cc + guard, top - guard):
                self.low_sum += self._mv()
                self.low_n += 1

    def pilot_levels(self):
        if self.mode != P.PILOT_PWM:
            high = self.steady_mv if self.mode != P.PILOT_E else 0
            return high, None
        if not self.high_n:
            self.sample()
        high = self.high_sum // self.high_n if self.high_n else self.steady_mv
        low = self.low_sum // self.low_n if self.low_n else None
        self.high_sum = self.high_n = self.low_sum = self.low_n = 0
        return high, low

    # ------------------------------------------------------------------ contactor, lock, RCD, UART
    def coil(self, on: bool) -> None:
        self.coil_pin.value(1 if on else 0)

    def mirror(self) -> bool:
        return self.mirror_pin.value() == 0

    def lock(self, on: bool) -> None:
        if self.lock_pin is not None:
            self.lock_pin.value(1 if on else 0)

    def lock_feedback(self) -> bool:
        return self.lock_fb is not None and self.lock_fb.value() == 0

    def rcd_tripped(self) -> bool:
        return self.rcd_in.value() == 1

    def rcd_test(self, on: bool) -> None:
        self.rcd_test_pin.value(1 if on else 0)

    def pp_ohm(self) -> int:
        """Rc from the divider Rc / (Rc + pull-up); PP_OPEN when the input sits at the reference (no cable)."""
        if self.pp_adc is None:
            return P.PP_OPEN
        raw = self.pp_adc.read_u16()
        if raw >= 65535 * 98 // 100:  # within 2 % of the rail: open (a coding resistor is at most 2.7 kOhm)
            return P.PP_OPEN
        return pins.PP_PULLUP_OHM * raw // (65535 - raw)

    def send(self, frame: bytes, is_reply: bool) -> None:
        self.uart.write(frame)

    def read(self):
        """What the UART received since the last call (None or b"" when nothing)."""
        if self.uart.any():
            return self.uart.read()
        return None
