"""Opening buses: a missing or forbidden device gives a DeviceNotFound that says what to do."""

from __future__ import annotations

import pytest

from hal.buses import gpio_pin_factory, open_can, open_serial, open_spi
from hal.errors import DeviceNotFound
from hal.sim.spi import SimSpiBus


class _Refusing:
    """An spidev-like object whose open fails the way the kernel does."""

    def __init__(self, exc: OSError) -> None:
        self.exc = exc
        self.mode = 0
        self.max_speed_hz = 0

    def open(self, bus: int, device: int) -> None:
        raise self.exc

    def xfer2(self, data: list[int]) -> list[int]:
        raise AssertionError("never opened")

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("exc", "fragment"),
    [
        (FileNotFoundError(2, "No such file"), "enable SPI (dtparam=spi=on)"),
        (PermissionError(13, "Permission denied"), "add the user to the 'spi' group"),
        (OSError(16, "Device or resource busy"), "cannot open"),
    ],
)
def test_open_spi_errors_name_the_device_and_the_fix(exc: OSError, fragment: str) -> None:
    with pytest.raises(DeviceNotFound) as info:
        open_spi(1, 2, max_speed_hz=100_000, factory=lambda: _Refusing(exc))
    assert "/dev/spidev1.2" in str(info.value)
    assert fragment in str(info.value)


def test_open_spi_configures_mode_and_speed() -> None:
    bus = SimSpiBus()
    bus.attach(0, 1, _EchoChip())
    dev = open_spi(0, 1, max_speed_hz=123_456, mode=3, factory=bus.factory)
    assert (dev.mode, dev.max_speed_hz) == (3, 123_456)
    assert dev.xfer2([1, 2, 3]) == [1, 2, 3]


class _EchoChip:
    def transfer(self, tx: bytes, *, mode: int, speed_hz: int) -> bytes:
        return tx


def test_open_serial_missing_port() -> None:
    with pytest.raises(DeviceNotFound, match="/dev/ttyNOPE9: cannot open serial port"):
        open_serial("/dev/ttyNOPE9", 115200, timeout=0.1)


def test_open_serial_loop_url_works() -> None:
    port = open_serial("loop://", 115200, timeout=0.1)
    port.write(b"\xa5\x01")
    assert port.read(2) == b"\xa5\x01"
    port.close()


def test_open_can_missing_interface() -> None:
    with pytest.raises(DeviceNotFound) as info:
        open_can("socketcan", "nosuchcan7", 125000)
    assert "CAN socketcan:nosuchcan7" in str(info.value)
    assert "ip link set nosuchcan7 up type can bitrate 125000" in str(info.value)


def test_gpio_factory_kinds() -> None:
    from gpiozero.pins.mock import MockFactory

    factory = gpio_pin_factory("mock")
    assert isinstance(factory, MockFactory)
    factory.close()
    with pytest.raises(ValueError, match="allowed: 'lgpio', 'mock'"):
        gpio_pin_factory("rpigpio")
