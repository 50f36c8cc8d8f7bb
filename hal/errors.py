"""Errors raised by HAL drivers.

Every error names the device it concerns so that a log line or a probe report says which peripheral
of which board failed, not only what went wrong.
"""

from __future__ import annotations


class HalError(Exception):
    """Base class of every HAL error."""

    def __init__(self, device: str, message: str) -> None:
        super().__init__(f"{device}: {message}")
        self.device = device
        self.message = message


class DeviceNotFound(HalError):
    """The bus device (``/dev/spidev0.0``, ``/dev/ttyAMA0``, ``can0``, a gpiochip) does not exist or
    cannot be opened."""


class DeviceTimeout(HalError):
    """The peripheral did not answer within its deadline (a silent converter or co-processor)."""


class ProtocolError(HalError):
    """The peripheral answered, but with bytes that do not make sense: a bad CRC, a wrong length, a
    register value outside what the chip can produce, an error code in a reply."""


class UnsupportedOperation(HalError):
    """The board cannot do this (for example pilot state E on a board whose pilot driver has no 0 V
    output)."""


class ImplausibleReading(ProtocolError):
    """A meter answered, but its energy cannot be trusted: totals that went backwards or jumped, a
    register stuck while power flows, a read-to-clear accumulator that may have overflowed. The
    firmware raises a fault and bills nothing from it (firmware.metering.plausibility)."""
