"""The 1-phase / 3-phase selector on GPIO: a second contactor ("C2") in the L2 and L3 lines.

Energised, C2 connects L2 and L3 to the socket (three phases); released, only L1 reaches it (one
phase). Released is the state with no supply on the Pi, so a board that loses power comes back on
one phase, the smaller load. The contactor is the same part as the main one, so the driver is a
:class:`hal.drivers.gpio_io.GpioContactor` with a different name; its mirror contact (if wired)
tells the phases actually connected.

The driver only moves the relay. When it may move (main contactor open, EV paused) is decided by
:mod:`firmware.phase_switching`: switching L2/L3 under load would arc the contacts and present the
onboard charger a phase change it may not accept.
"""

from __future__ import annotations

from typing import Any

from hal.drivers.gpio_io import GpioContactor


class GpioPhaseSwitch:
    def __init__(
        self,
        name: str,
        *,
        coil_pin: int,
        mirror_pin: int | None = None,
        mirror_active_high: bool = True,
        pin_factory: Any,
    ) -> None:
        self.name = name
        self._relay = GpioContactor(
            name,
            coil_pin=coil_pin,
            mirror_pin=mirror_pin,
            mirror_active_high=mirror_active_high,
            pin_factory=pin_factory,
        )

    @property
    def phases_commanded(self) -> int:
        return 3 if self._relay.commanded_closed else 1

    @property
    def has_feedback(self) -> bool:
        return self._relay.has_feedback

    async def set_phases(self, phases: int) -> None:
        if phases == 3:
            await self._relay.close()
        elif phases == 1:
            await self._relay.open()
        else:
            raise ValueError(f"{self.name}: phases must be 1 or 3, not {phases!r}")

    async def feedback_phases(self) -> int | None:
        closed = await self._relay.feedback_closed()
        if closed is None:
            return None
        return 3 if closed else 1

    def release(self) -> None:
        """Release the coil (one phase) and free the pins."""
        self._relay.release()
