"""An EV emulator made of resistors and relays: the bench stand-in for :class:`hil.models.ev.AcEv`.

The emulator offers the runner the same state and fault methods as the simulated EV (``plug_in``,
``unplug``, ``force_state``, ``diode_short``, ``pilot_short``, ``pp_open``, ``pp_invalid``) and
implements them by switching gpiozero :class:`~gpiozero.DigitalOutputDevice` relays (through
:class:`hal.drivers.gpio_io.OutputLine`, so the relay board's active level is explicit). The circuit,
IEC 61851-1 Annex A as in standards-facts.md 1.1 (docs/hil-bench.md draws it)::

    CP ──┬── K_E ─────────────────────────────── PE    pilot short: state E
         └── D1 (anode at CP, K_DS across it) ──┬── K_B ── R2 2.74 kΩ ── PE   state B (EV present)
                                                ├── K_C ── R3 1.3 kΩ ─── PE   + state C
                                                └── K_D ── 270 Ω ─────── PE   + state D
    PP ──┬── K_13 ── 1.5 kΩ ── PE     ... K_20 680 Ω, K_32 220 Ω, K_63 100 Ω (standards-facts.md 1.8)
         └── K_INV ── < 75 Ω ── PE    a coding no cable has

The emulator has no behaviour of its own: it does not read the pilot, so it shows B when plugged in
and C or D only when told (``force_state``), where the simulated EV decides by itself.

**Default: every relay open = unplugged**, with every fault cleared: at construction, after
:meth:`RelayEvEmulator.open_all` and after :meth:`RelayEvEmulator.close`. Normally open contacts
make a dead controller or a pulled relay-board cable look like an unplugged EV too.

**Break before make.** A change of state is done one relay at a time: first every relay that opens,
then every relay that closes, with ``settle_ms`` between two changes so that the previous contact has
physically moved. Within the opens and the closes a fixed order keeps every intermediate pattern a
state the standard defines (:data:`CLOSE_ORDER`): R3 (C or D) is only ever in circuit together with
R2, R3 1.3 kΩ and 270 Ω are never in circuit together, no two PP resistors are ever selected
together, and a shorted diode or pilot is in place before the EV shows up and leaves after it. So
C -> D passes through B, a 32 A cable -> an invalid coding passes through "no cable", and unplugging
from C passes through B: every one of them a state the EVSE may see during a real plug-in. The
emulator blocks its caller for the settle times (at most ``(changes - 1) x settle_ms``, typically
10-40 ms).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from gpiozero.exc import GPIOZeroError

from hal.drivers.gpio_io import InputLine, OutputLine, Releasable, build_lines
from hal.errors import DeviceNotFound, HalError, UnsupportedOperation
from hil.bench.rig import CABLE_RATINGS_A, EvEmulatorConfig

log = logging.getLogger(__name__)

#: Relay name -> what it switches (for errors and docs).
RELAY_ROLES: dict[str, str] = {
    "pp_13a": "PP 1.5 kohm (13 A cable)",
    "pp_20a": "PP 680 ohm (20 A cable)",
    "pp_32a": "PP 220 ohm (32 A cable)",
    "pp_63a": "PP 100 ohm (63 A cable)",
    "pp_invalid": "PP invalid coding",
    "pilot_short": "pilot-to-PE short (state E)",
    "diode_bypass": "diode bypass (diode short)",
    "r2": "R2 2.74 kohm (state B)",
    "r3_c": "R3 1.3 kohm (state C)",
    "r3_d": "R3 270 ohm (state D)",
}
#: The order relays close in, outermost first; they open in the reverse order. The PP coding is in
#: place before the pilot shows B and leaves after it shows A (as the simulated EV sets it); the
#: pilot short and the diode bypass are in place before R2 connects and leave after it disconnects;
#: R2 connects before R3 and disconnects after it.
CLOSE_ORDER: tuple[str, ...] = (
    "pp_13a",
    "pp_20a",
    "pp_32a",
    "pp_63a",
    "pp_invalid",
    "pilot_short",
    "diode_bypass",
    "r2",
    "r3_c",
    "r3_d",
)
OPEN_ORDER: tuple[str, ...] = tuple(reversed(CLOSE_ORDER))

Sleep = Callable[[float], None]


class RelayEvEmulator(Releasable):
    """The EV emulator's relays on one pin factory (``lgpio`` on the rig, ``MockFactory`` in tests).

    ``cable_a`` overrides the rig file's ``ev.cable_a`` (the scenario's cable); its PP relay must be
    wired. ``sleep`` waits between relay changes (``time.sleep``; tests pass a recorder)."""

    def __init__(
        self,
        config: EvEmulatorConfig,
        *,
        pin_factory: Any,
        name: str = "ev-emulator",
        cable_a: int | None = None,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.name = name
        self.config = config
        self._sleep = sleep
        self._settle_s = config.settle_ms / 1000.0
        cable = cable_a if cable_a is not None else config.cable_a
        if cable is not None:
            if cable not in CABLE_RATINGS_A:
                raise ValueError(f"{name}: cable_a must be one of 13, 20, 32, 63, got {cable!r}")
            if config.pp_pin(cable) is None:
                raise UnsupportedOperation(name, f"a {cable} A cable needs ev.pp_{cable}a_pin in the rig file")
        self.cable_a: int | None = cable
        pins = {relay: getattr(config, f"{relay}_pin") for relay in CLOSE_ORDER}
        self._relays: dict[str, OutputLine] = {}

        def build(lines: list[OutputLine | InputLine]) -> None:
            for relay in CLOSE_ORDER:
                pin = pins[relay]
                if pin is None:
                    continue
                line = OutputLine(
                    name,
                    f"{RELAY_ROLES[relay]} relay",
                    pin,
                    active_high=config.relay_active_high,
                    pin_factory=pin_factory,
                )
                lines.append(line)
                self._relays[relay] = line

        build_lines(build)
        self._reset_knobs()

    def _reset_knobs(self) -> None:
        self._plugged = False
        self._forced: str | None = None
        self._diode_shorted = False
        self._pilot_shorted = False
        self._pp_open = False
        self._pp_invalid = False

    # ------------------------------------------------------------------ state
    @property
    def plugged(self) -> bool:
        return self._plugged

    @property
    def state(self) -> str:
        """The pilot state the emulator shows: A, B, C, D, or E while the pilot is shorted."""
        if not self._plugged:
            return "A"
        if self._pilot_shorted:
            return "E"
        return self._forced or "B"

    @property
    def relays(self) -> dict[str, bool]:
        """Each wired relay and whether it is closed now (as commanded)."""
        return {relay: line.active for relay, line in self._relays.items()}

    @property
    def pins(self) -> dict[str, int]:
        """Each wired relay's GPIO."""
        return {relay: line.pin_number for relay, line in self._relays.items()}

    # ------------------------------------------------------------------ the simulated EV's actions
    def plug_in(self, now: float | None = None) -> None:
        """Connect the EV: the PP coding, then R2 (state B; C or D right after if forced)."""
        self._check_open()
        if self._plugged:
            raise RuntimeError(f"{self.name} is already plugged in")
        self._plugged = True
        self._apply()

    def unplug(self, now: float | None = None) -> None:
        """Disconnect: R3, R2, then the PP coding. Fault knobs stay set for the next plug-in, as they
        do on the simulated EV; a forced state is released."""
        self._check_open()
        if not self._plugged:
            raise RuntimeError(f"{self.name} is not plugged in")
        self._plugged = False
        self._forced = None
        self._apply()

    def force_state(self, state: str | None) -> None:
        """Show ``'B'``, ``'C'`` or ``'D'`` (if the rig has the 270 ohm relay) until released with
        ``None`` (back to B) or unplugged. Set while unplugged, it applies at the next plug-in."""
        self._check_open()
        if state not in ("B", "C", "D", None):
            raise ValueError(f"{self.name}: the EV emulator can show B, C or D, got {state!r}")
        if state == "D" and "r3_d" not in self._relays:
            raise UnsupportedOperation(self.name, "state D needs ev.r3_d_pin (the 270 ohm relay) in the rig file")
        self._forced = None if state == "B" else state
        self._apply()

    def diode_short(self, active: bool = True) -> None:
        """Bypass the pilot diode: the negative plateau is loaded (IEC 61851-1 diode check)."""
        self._check_open()
        self._diode_shorted = active
        self._apply()

    def pilot_short(self, active: bool = True) -> None:
        """Short the pilot to PE: state E while plugged in."""
        self._check_open()
        self._pilot_shorted = active
        self._apply()

    def pp_open(self, active: bool = True) -> None:
        """No PP resistor while plugged in (a broken PP wire)."""
        self._check_open()
        self._pp_open = active
        self._apply()

    def pp_invalid(self, active: bool = True) -> None:
        """A PP resistance that codes no cable rating (below 75 ohm, standards-facts.md 1.8)."""
        self._check_open()
        if active and "pp_invalid" not in self._relays:
            raise UnsupportedOperation(self.name, "an invalid PP coding needs ev.pp_invalid_pin in the rig file")
        self._pp_invalid = active
        self._apply()

    # ------------------------------------------------------------------ safe state
    def open_all(self) -> None:
        """Back to the default: every relay open (unplugged) and every fault knob cleared. Every relay
        is attempted even if one fails; the failures are raised together afterwards."""
        self._reset_knobs()
        errors: list[str] = []
        changed_before = False
        for relay in OPEN_ORDER:
            line = self._relays.get(relay)
            if line is None:
                continue
            try:
                if not line.active:
                    line.set(False)  # re-assert: cheap, and a relay read back wrongly is opened anyway
                    continue
                if changed_before:
                    self._sleep(self._settle_s)
                line.set(False)
                changed_before = True
            except (GPIOZeroError, OSError) as exc:
                errors.append(f"{RELAY_ROLES[relay]} relay on GPIO{line.pin_number}: {exc}")
        if errors:
            raise HalError(self.name, "could not open every relay: " + "; ".join(errors))

    def close(self) -> None:
        """Open every relay, then release the GPIO lines (the pins fall back to inputs; see the note on
        boot pulls in docs/hil-bench.md)."""
        if self._released:
            return
        try:
            self.open_all()
        finally:
            self._released = True
            for line in self._relays.values():
                line.close()

    # ------------------------------------------------------------------ internals
    def _target(self) -> dict[str, bool]:
        target = dict.fromkeys(self._relays, False)
        if not self._plugged:
            return target
        target["r2"] = True
        if self._forced == "C":
            target["r3_c"] = True
        elif self._forced == "D":
            target["r3_d"] = True
        target["diode_bypass"] = self._diode_shorted
        target["pilot_short"] = self._pilot_shorted
        if not self._pp_open:
            if self._pp_invalid:
                target["pp_invalid"] = True
            elif self.cable_a is not None:
                target[f"pp_{self.cable_a}a"] = True
        return target

    def _apply(self) -> None:
        """Move the relays to the pattern of the current knobs: opens first, then closes, each in its
        fixed order, one relay at a time."""
        target = self._target()
        closed = self.relays
        steps = [(r, False) for r in OPEN_ORDER if closed.get(r) and not target[r]]
        steps += [(r, True) for r in CLOSE_ORDER if r in closed and not closed[r] and target[r]]
        for index, (relay, close) in enumerate(steps):
            if index:
                self._sleep(self._settle_s)
            line = self._relays[relay]
            try:
                line.set(close)
            except (GPIOZeroError, OSError) as exc:
                raise DeviceNotFound(
                    self.name,
                    f"cannot {'close' if close else 'open'} the {RELAY_ROLES[relay]} relay on GPIO{line.pin_number}: "
                    f"{exc}",
                ) from exc
        if steps:
            log.debug("%s: state %s, relays %s", self.name, self.state, "".join(f"{r}={int(c)} " for r, c in steps))
