"""A fake of MicroPython's ``machine`` module for board/mcu/hw_rp2040.py: pins, the pilot's PWM slice with
its registers (``mem32``: the counter runs with a virtual microsecond clock that each register read
advances, so a wait for a counter window always ends), the pilot ADC reading the instantaneous pilot
voltage the EV's resistors give at the counter's phase, a UART with byte buffers, the watchdog.

It runs on MicroPython as well (no __future__ import; annotations are never evaluated there)."""

try:
    from board.mcu import hw_rp2040 as H
    from board.mcu import pins
except ImportError:  # MicroPython: the firmware's files sit side by side at the root
    import hw_rp2040 as H  # type: ignore[import-not-found,no-redef]
    import pins  # type: ignore[import-not-found,no-redef]

#: The pilot's positive plateau per EV state (IEC 61851-1 Table A.4).
PLATEAU_MV = {"A": 12_000, "B": 9_000, "C": 6_000, "D": 3_000}
TOP = 999  # 1 kHz with a 1 MHz counter: one count per microsecond
POLL_US = 3  # what one register read costs on the RP2040 under MicroPython, roughly

PWRON_RESET = 1
WDT_RESET = 3


class Board:
    """The world around the RP2040: the EV and the wiring, and the virtual microsecond clock."""

    def __init__(self):
        self.us = 0
        self.ev = "A"
        self.levels = {}  # pin -> level the outside drives (inputs)
        self.outputs = {}  # pin -> level the firmware drives
        self.duty_u16 = 0
        self.freq = 0
        self.uart_in = bytearray()
        self.uart_out = bytearray()
        self.fed = 0
        self.pp_ohm = None  # the cable's coding resistor, None: no cable

    def cp_mv(self) -> int:
        """The pilot now: +plateau while the PWM output is high, -12 V while it is low."""
        if pins.CP_E >= 0 and self.outputs.get(pins.CP_E):
            return 0
        cc = self.duty_u16 * (TOP + 1) // 65536
        high = (self.us % (TOP + 1)) < cc or self.duty_u16 == 65535
        return PLATEAU_MV[self.ev] if high else -12_000


BOARD = Board()


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, pin, mode=-1, pull=-1, value=None):
        self.pin = pin
        if value is not None:
            BOARD.outputs[pin] = value

    def value(self, v=None):
        if v is None:
            if self.pin in BOARD.outputs:
                return BOARD.outputs[self.pin]
            return BOARD.levels.get(self.pin, 0)
        BOARD.outputs[self.pin] = v
        return None


class PWM:
    def __init__(self, pin):
        self.pin = pin

    def freq(self, f):
        BOARD.freq = f

    def duty_u16(self, d):
        BOARD.duty_u16 = d


class ADC:
    def __init__(self, channel):
        self.channel = channel

    def read_u16(self) -> int:
        if self.channel == pins.PP_ADC:  # the pull-up divider over the coding resistor
            if BOARD.pp_ohm is None:
                return 65535
            return 65535 * BOARD.pp_ohm // (BOARD.pp_ohm + pins.PP_PULLUP_OHM)
        adc_mv = BOARD.cp_mv() // pins.CP_GAIN + pins.CP_OFFSET_MV
        return max(0, min(65535, adc_mv * 65535 // pins.ADC_VREF_MV))


class UART:
    def __init__(self, uart_id, baudrate=0, tx=None, rx=None):
        self.baudrate = baudrate

    def any(self) -> int:
        return len(BOARD.uart_in)

    def read(self):
        data = bytes(BOARD.uart_in)
        BOARD.uart_in = bytearray()
        return data

    def write(self, data):
        BOARD.uart_out += data
        return len(data)


class _Mem32:
    def __getitem__(self, address: int) -> int:
        BOARD.us += POLL_US
        offset = (address - H.PWM_BASE) % H.PWM_SLICE_STRIDE
        if offset == H.PWM_CTR:
            return BOARD.us % (TOP + 1)
        if offset == H.PWM_TOP:
            return TOP
        if offset == H.PWM_CC:
            cc = BOARD.duty_u16 * (TOP + 1) // 65536
            return cc | (cc << 16)
        return 0


mem32 = _Mem32()


class WDT:
    def __init__(self, timeout=0):
        self.timeout = timeout

    def feed(self):
        BOARD.fed += 1


def reset_cause() -> int:
    return PWRON_RESET
