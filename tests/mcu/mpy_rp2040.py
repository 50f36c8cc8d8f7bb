# Runs INSIDE MicroPython: the RP2040 seam (board/mcu/hw_rp2040.py) over tests/mcu/fake_machine.py and the
# main loop over it, as main.py wires them; prints one JSON line with what it measured. MicroPython subset.

import json
import struct

import fake_machine
import loop
import protocol as P
from fake_machine import BOARD
from hw_rp2040 import Rp2040Hardware


class Ticks:
    def ticks_ms(self):
        return BOARD.us // 1000

    def ticks_diff(self, a, b):
        return a - b


hw = Rp2040Hardware(fake_machine)
firmware = loop.Loop(hw, loop.Millis(Ticks()), fake_machine.WDT(loop.WATCHDOG_MS))
BOARD.uart_in += P.encode_frame(1, P.MSG_HELLO, bytes([P.PROTOCOL_VERSION]))
BOARD.uart_in += P.encode_frame(2, P.MSG_SET_PILOT, struct.pack(P.SET_PILOT_FORMAT, P.PILOT_PWM, 267))
BOARD.ev = "C"
for _ in range(5):
    firmware.step()
kinds = [kind for _, kind, _ in P.Decoder().feed(bytes(BOARD.uart_out))]
print(
    json.dumps(
        {
            "kinds": kinds,
            "cp_state": firmware.fw.cp_state,
            "high_mv": firmware.fw.high_mv,
            "low_mv": firmware.fw.low_mv,
            "fed": BOARD.fed,
        }
    )
)
