"""A simulated SPI bus that stands in for ``/dev/spidev*``.

:class:`SimSpiBus` holds one chip simulator per (bus, chip-select). Its :meth:`SimSpiBus.factory`
returns objects with the ``spidev.SpiDev`` API, so :func:`hal.buses.open_spi` and every SPI driver run
unchanged: they send the same bytes and get back what the real chip would clock out.
"""

from __future__ import annotations

from typing import Protocol


class SpiChipSim(Protocol):
    """A register-level chip model: one full-duplex transfer in, the bytes on MISO out."""

    def transfer(self, tx: bytes, *, mode: int, speed_hz: int) -> bytes: ...


class SimSpiBus:
    def __init__(self) -> None:
        self._chips: dict[tuple[int, int], SpiChipSim] = {}
        self.transfers: list[tuple[tuple[int, int], bytes, bytes]] = []  # ((bus, cs), tx, rx) log
        self.log_transfers = False

    def attach(self, bus: int, device: int, chip: SpiChipSim) -> None:
        self._chips[(bus, device)] = chip

    def detach(self, bus: int, device: int) -> None:
        self._chips.pop((bus, device), None)

    def chip(self, bus: int, device: int) -> SpiChipSim:
        return self._chips[(bus, device)]

    def factory(self) -> SimSpiDev:
        """Same role as the ``spidev.SpiDev`` constructor."""
        return SimSpiDev(self)


class SimSpiDev:
    """Behaves like an ``spidev.SpiDev``: ``open`` fails with FileNotFoundError when no chip is
    attached at that address, exactly as the kernel does for a missing ``/dev/spidevB.D``."""

    def __init__(self, bus: SimSpiBus) -> None:
        self._bus = bus
        self._addr: tuple[int, int] | None = None
        self.mode = 0
        self.max_speed_hz = 500_000

    def open(self, bus: int, device: int) -> None:
        if (bus, device) not in self._bus._chips:
            raise FileNotFoundError(2, "No such file or directory", f"/dev/spidev{bus}.{device}")
        self._addr = (bus, device)

    def close(self) -> None:
        self._addr = None

    def xfer2(self, data: list[int]) -> list[int]:
        if self._addr is None:
            raise OSError(9, "Bad file descriptor")
        tx = bytes(data)
        chip = self._bus._chips.get(self._addr)
        if chip is None:  # detached while open: the bus floats high
            rx = b"\xff" * len(tx)
        else:
            rx = chip.transfer(tx, mode=self.mode, speed_hz=self.max_speed_hz)
            if len(rx) != len(tx):
                raise AssertionError("a chip simulator must return exactly as many bytes as it got")
        if self._bus.log_transfers:
            self._bus.transfers.append((self._addr, tx, rx))
        return list(rx)

    # spidev also offers xfer/xfer3/readbytes/writebytes; the drivers only use xfer2.
