"""Opening the buses a board uses, with errors that say what is missing and how to fix it.

Drivers never open buses themselves: the board builder opens each bus here and hands the open object
to the driver. A simulated board passes the simulators' factories instead of the real ones, so the
same opening code (and the same driver code) runs in tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from hal.errors import DeviceNotFound


class SpiDevice(Protocol):
    """The subset of ``spidev.SpiDev`` the drivers use."""

    max_speed_hz: int
    mode: int

    def open(self, bus: int, device: int) -> None: ...

    def xfer2(self, data: list[int]) -> list[int]: ...

    def close(self) -> None: ...


def _real_spidev() -> SpiDevice:
    try:
        import spidev  # imported late: the module only exists where the C extension built
    except ImportError as exc:
        raise DeviceNotFound("spidev", f"the spidev Python module is not installed ({exc})") from exc
    return spidev.SpiDev()


def open_spi(
    bus: int,
    device: int,
    *,
    max_speed_hz: int,
    mode: int = 0,
    factory: Callable[[], SpiDevice] | None = None,
) -> SpiDevice:
    """Open ``/dev/spidev<bus>.<device>`` (or the simulated equivalent) and configure it."""
    dev = (factory or _real_spidev)()
    name = f"/dev/spidev{bus}.{device}"
    try:
        dev.open(bus, device)
    except FileNotFoundError as exc:
        raise DeviceNotFound(
            name, "no such SPI device; enable SPI (dtparam=spi=on) and check the bus/device numbers"
        ) from exc
    except PermissionError as exc:
        raise DeviceNotFound(name, "permission denied; add the user to the 'spi' group") from exc
    except OSError as exc:
        raise DeviceNotFound(name, f"cannot open: {exc}") from exc
    dev.mode = mode
    dev.max_speed_hz = max_speed_hz
    return dev


def gpio_pin_factory(kind: str, chip: int = 0) -> Any:
    """A gpiozero pin factory: ``lgpio`` on a Pi (any model, including the Pi 5's RP1), ``mock`` for
    simulation (gpiozero's own ``MockFactory`` with PWM-capable pins that report level changes,
    :mod:`hal.sim.gpio_pins`)."""
    if kind == "mock":
        from hal.sim.gpio_pins import SignallingMockFactory

        return SignallingMockFactory()
    if kind == "lgpio":
        try:
            from gpiozero.pins.lgpio import LGPIOFactory

            return LGPIOFactory(chip=chip)
        except Exception as exc:  # lgpio raises its own error type when /dev/gpiochipN is absent
            raise DeviceNotFound(f"/dev/gpiochip{chip}", f"cannot open GPIO chip: {exc}") from exc
    raise ValueError(f"unknown GPIO pin factory {kind!r}; allowed: 'lgpio', 'mock'")


def open_can(interface: str, channel: str, bitrate: int) -> Any:
    """A python-can bus: ``socketcan`` on a board, ``virtual`` in simulation."""
    import can

    try:
        return can.Bus(interface=interface, channel=channel, bitrate=bitrate)
    except (OSError, can.CanError) as exc:
        raise DeviceNotFound(
            f"CAN {interface}:{channel}",
            f"cannot open: {exc}; on a board run 'ip link set {channel} up type can bitrate {bitrate}'",
        ) from exc


def open_serial(port: str, baudrate: int, timeout: float) -> Any:
    """A pyserial port: a device path on a board, a pty or ``loop://`` in simulation."""
    import serial

    try:
        return serial.serial_for_url(port, baudrate=baudrate, timeout=timeout)
    except (OSError, serial.SerialException) as exc:
        raise DeviceNotFound(port, f"cannot open serial port: {exc}") from exc
