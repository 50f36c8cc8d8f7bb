"""The contract between the firmware and a charger board: one Protocol per board function.

Every method that touches a bus is ``async`` so that the single-threaded firmware loop never blocks
on a slow peripheral, and every such method returns or raises a :class:`hal.errors.HalError` within a
bounded time (drivers own their timeouts). Properties return cached state and never do I/O.

The shape follows EVerest's ``evse_board_support`` / ``power_supply_DC`` / ``isolation_monitor``
interfaces (anchors.md 1.3, 1.8): pilot PWM/X1/F/E, contactor with mirror feedback, PP ampacity, a
converter with Off/charge/discharge modes, an IMD with self-test.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from hal.types import (
    ConverterCapabilities,
    ConverterMode,
    ConverterStatus,
    Indication,
    InsulationReading,
    MeterReading,
    PilotMode,
    PilotReading,
    ProximityReading,
)


@runtime_checkable
class PilotOutput(Protocol):
    """Control pilot generator."""

    @property
    def mode(self) -> PilotMode: ...

    @property
    def duty_permille(self) -> int:
        """Current PWM duty in 0.1 % steps (meaningful in ``PilotMode.PWM``)."""
        ...

    @property
    def supports_state_e(self) -> bool: ...

    async def set_pwm(self, duty_permille: int) -> None:
        """1 kHz PWM with ``duty_permille`` / 10 percent duty, 0 < duty < 1000."""
        ...

    async def set_x1(self) -> None:
        """Steady +12 V."""
        ...

    async def set_f(self) -> None:
        """Steady -12 V."""
        ...

    async def set_e(self) -> None:
        """0 V; raises ``UnsupportedOperation`` where the board cannot do it."""
        ...


@runtime_checkable
class PilotSense(Protocol):
    async def read(self) -> PilotReading:
        """High and low level of the pilot over at least one PWM period."""
        ...


@runtime_checkable
class ProximityPilot(Protocol):
    async def read(self) -> ProximityReading: ...


@runtime_checkable
class Contactor(Protocol):
    """Main supply switching device, with an optional mirror (auxiliary) contact."""

    @property
    def commanded_closed(self) -> bool: ...

    @property
    def has_feedback(self) -> bool: ...

    async def close(self) -> None: ...

    async def open(self) -> None: ...

    async def feedback_closed(self) -> bool | None:
        """What the mirror contact says; ``None`` when the board has none. Welding and
        failure-to-close are judged by the caller, which knows how long to wait."""
        ...


@runtime_checkable
class PhaseSwitch(Protocol):
    """The 1-phase / 3-phase selector of an AC board: a second contactor that connects L2 and L3
    (SmartEVSE's "C2", anchors.md 5). It must only move while the main contactor is open; the caller
    (firmware.phase_switching) owns that sequence and judges the feedback."""

    @property
    def phases_commanded(self) -> int: ...

    @property
    def has_feedback(self) -> bool: ...

    async def set_phases(self, phases: int) -> None:
        """Select 1 or 3 phases; anything else raises ValueError."""
        ...

    async def feedback_phases(self) -> int | None:
        """What the mirror contact says (1 or 3); ``None`` when the board has none."""
        ...


@runtime_checkable
class ConnectorLock(Protocol):
    @property
    def commanded_locked(self) -> bool: ...

    async def lock(self) -> None: ...

    async def unlock(self) -> None: ...

    async def feedback_locked(self) -> bool | None: ...


@runtime_checkable
class ResidualCurrentMonitor(Protocol):
    """RCD / RDC-DD (6 mA DC detection) input with a test winding."""

    async def tripped(self) -> bool: ...

    async def self_test(self) -> bool:
        """Inject the test current and report whether the device tripped in time; the device is
        left untripped (test released) on return."""
        ...


@runtime_checkable
class TemperatureSensor(Protocol):
    @property
    def name(self) -> str: ...

    async def read_c(self) -> float: ...


@runtime_checkable
class Meter(Protocol):
    @property
    def phases(self) -> int: ...

    async def read(self) -> MeterReading: ...


@runtime_checkable
class PowerConverter(Protocol):
    """Bidirectional (or charge-only) DC power stage.

    The driver keeps the module's keep-alive going from ``start()`` until ``stop()`` so that the
    module never drops out on its own watchdog.
    """

    @property
    def capabilities(self) -> ConverterCapabilities: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def set_mode(self, mode: ConverterMode) -> None: ...

    @property
    def online(self) -> bool:
        """False while the module's keep-alive / heartbeat has been lost."""
        ...

    async def set_setpoint(self, voltage_v: float, current_a: float, power_w: float | None = None) -> None:
        """Target voltage, current limit and optional power limit; magnitudes, the direction comes
        from the mode. With ``power_w`` the current commanded is ``min(current_a, power_w / voltage_v)``."""
        ...

    async def read_status(self) -> ConverterStatus: ...


@runtime_checkable
class InsulationMonitor(Protocol):
    async def read(self) -> InsulationReading: ...

    async def self_test(self) -> bool: ...


@runtime_checkable
class Indicator(Protocol):
    async def show(self, indication: Indication) -> None: ...


@runtime_checkable
class IdReader(Protocol):
    """An identification reader (RFID card, key fob): yields the id of each card presented.

    ``read_id`` waits for the next card for as long as it takes (no card may come for hours); the
    caller bounds the wait by cancelling it, and a cancelled wait loses no card. A card held on the
    reader is reported once, not once per frame the reader repeats. Bad frames on the line are the
    driver's business (logged, dropped); a failed bus raises a :class:`hal.errors.HalError`.
    """

    @property
    def name(self) -> str: ...

    async def read_id(self) -> str:
        """The id of the next card presented, as the reader's driver spells it (upper-case hex)."""
        ...

    async def close(self) -> None:
        """Stop reading; a later ``read_id`` starts again. The bus itself belongs to whoever opened it."""
        ...
