"""gpiozero's mock pins, reporting every level change to a :class:`hal.changes.ChangeSignal`.

gpiozero's ``MockFactory`` takes the pin class to create (``pin_class=``); this one is its own
``MockPWMPin`` plus a notification whenever a pin's level or function changes, whether a driver set
an output or the simulated wiring drove an input. The wiring and the firmware's loops wait on that
signal instead of re-reading unchanged pins every few milliseconds (see :mod:`hal.changes`).
"""

from __future__ import annotations

from typing import Any

from gpiozero.pins.mock import MockFactory, MockPWMPin

from hal.changes import ChangeSignal


class SignallingMockPin(MockPWMPin):  # type: ignore[misc]  # gpiozero has no type hints
    def _notify(self) -> None:
        changes = getattr(self._factory, "changes", None)
        if changes is not None:
            changes.notify()

    def _change_state(self, value: Any) -> bool:
        changed = bool(super()._change_state(value))
        if changed:
            self._notify()
        return changed

    def _set_function(self, value: str) -> None:
        before = self._function
        super()._set_function(value)
        if value != before:
            self._notify()

    def _set_frequency(self, value: float | None) -> None:
        before = self._frequency
        super()._set_frequency(value)
        if value != before:
            self._notify()


class SignallingMockFactory(MockFactory):  # type: ignore[misc]
    """``MockFactory(pin_class=SignallingMockPin)`` with the signal its pins notify."""

    def __init__(self, changes: ChangeSignal | None = None) -> None:
        super().__init__(pin_class=SignallingMockPin)
        self.changes = changes if changes is not None else ChangeSignal()
