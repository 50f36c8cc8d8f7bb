# The co-processor's entry point on the RP2040 (MicroPython runs main.py at boot; `evse mcu deploy`
# copies this directory onto the board).

import time

import hw_rp2040
import loop
import machine
import protocol as P


def reset_reason() -> int:
    cause = machine.reset_cause()
    if cause == machine.WDT_RESET:
        return P.RESET_WATCHDOG
    if cause == machine.PWRON_RESET:
        return P.RESET_POWER_ON
    return P.RESET_SOFT


def main() -> None:
    hw = hw_rp2040.Rp2040Hardware(machine)
    watchdog = machine.WDT(timeout=loop.WATCHDOG_MS)
    firmware = loop.Loop(hw, loop.Millis(time), watchdog, reset_reason())
    while True:
        firmware.step()


main()
