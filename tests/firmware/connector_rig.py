"""Shared rig for the connector sequence and fault tests: the real firmware on a simulated board in
virtual time, observed where the hardware is.

:func:`charger` opens a :class:`firmware.simulation.SimulatedCharger` (sim-ac unless told otherwise)
with a journal in the test's temporary directory and gives back a :class:`Rig` that

* records every level change of the board's GPIO pins (pilot PWM pin, contactor coil and mirror,
  lock motor and feedback, RCD trip) with the virtual time it happened at, by wrapping the mock
  pins themselves: what the tests check is what the wires carry, not what the firmware believes;
* records the connector's events (``on_event``);
* adds a simulated EV load to the wiring (:class:`EvLoad`): the EV draws its demand only while the
  main contacts are closed (and, when it obeys the pilot, no more than the duty offers), closes the
  meter chip's integration interval before every change and integrates the plant's power itself, so
  that the journal's energy can be compared with an independent integration.

The helpers (:func:`plug`, :func:`wait_state`, :func:`wait_until`, ...) move virtual time in small
steps until something happens, and fail with the state trail when it does not.
"""

from __future__ import annotations

import contextlib
import math
import tomllib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from board.schema import AdcPilotSense, BoardConfig, GpioContactor, GpioLock, GpioPwmPilot, GpioRcd
from firmware.connector import Connector, ConnectorSettings
from firmware.iec61851.pilot import current_for_duty
from firmware.journal import Journal, SessionRecord
from firmware.simulation import SimulatedCharger
from hal.sim.analog import cp_channel, ntc_channel
from hal.sim.atm90e32 import Atm90e32Sim
from hal.sim.gpio_wiring import ContactorWiring, LockWiring, RcdWiring
from hal.sim.mcp3x0x import Mcp3x0xSim
from hal.sim.plant import Plant
from hal.types import PILOT_DUTY_MAX_PERMILLE, PilotMode

BOARDS = Path(__file__).resolve().parents[2] / "board"

#: Type 2 cable coding resistors (IEC 61851-1 via hal/proximity.py): ohms -> rated current.
CABLE_OHM = {13: 1500.0, 20: 680.0, 32: 220.0, 63: 100.0}

PartT = TypeVar("PartT")

#: Step in which the helpers move virtual time while they wait for something: one pilot sample.
STEP_S = 0.010


# ------------------------------------------------------------------------------------------ pins
@dataclass(frozen=True)
class PinChange:
    t: float
    role: str
    value: float


class PinRecorder:
    """Logs every level change of the named mock pins with the virtual time of the change."""

    def __init__(self, clock: Any, factory: Any, pins: dict[str, int]) -> None:
        self.clock = clock
        self.log: list[PinChange] = []
        self.pins: dict[str, Any] = {}
        self.initial: dict[str, float] = {}
        for role, number in pins.items():
            pin = factory.pin(number)
            self.pins[role] = pin
            self.initial[role] = float(pin.state)
            self._wrap(role, pin)

    def _wrap(self, role: str, pin: Any) -> None:
        original = pin._change_state  # gpiozero MockPin: every output write and input drive ends here

        def change_state(value: Any) -> bool:
            changed = bool(original(value))
            if changed:
                self.log.append(PinChange(self.clock.monotonic(), role, float(value)))
            return changed

        pin._change_state = change_state

    def level(self, role: str) -> float:
        return float(self.pins[role].state)

    def level_at(self, role: str, t: float) -> float:
        """The level of ``role`` at time ``t`` (after every change made at ``t``)."""
        level = self.initial[role]
        for change in self.log:
            if change.role == role and change.t <= t:
                level = change.value
        return level

    def changes(self, role: str, since: float = -math.inf) -> list[PinChange]:
        return [c for c in self.log if c.role == role and c.t >= since]

    def first(self, role: str, value: float | Callable[[float], bool], since: float = -math.inf) -> float | None:
        """Time of the first change of ``role`` to ``value`` (or matching a predicate) at/after ``since``."""
        test = value if callable(value) else (lambda v: v == value)
        for change in self.changes(role, since):
            if test(change.value):
                return change.t
        return None


def pilot_of(level: float) -> tuple[PilotMode, int]:
    """The pilot the ±12 V stage makes of the PWM pin's level (hal/drivers/gpio_pilot.py)."""
    if level <= 0.0:
        return PilotMode.F, 0
    if level >= 1.0:
        return PilotMode.X1, 0
    return PilotMode.PWM, round(level * PILOT_DUTY_MAX_PERMILLE)


# ------------------------------------------------------------------------------------------- EV load
class EvLoad:
    """The EV's charger as a wiring part: draws ``demand_a`` on every phase while the main contacts
    are closed; with ``obeys_offer`` it never draws more than the pilot offers and nothing without a
    PWM offer (it reacts at once; the tests that need a misbehaving EV switch this off)."""

    def __init__(self, plant: Plant, contactor: ContactorWiring, meter: Atm90e32Sim | None, now: float) -> None:
        self.plant = plant
        self.contactor = contactor
        self.meter = meter
        self.demand_a = 0.0
        self.obeys_offer = True
        self.energy_wh = 0.0  # the plant's own integration of the delivered power
        self._last = now

    def drawing(self) -> float:
        if not self.contactor.contacts_closed:
            return 0.0
        amps = self.demand_a
        if self.obeys_offer:
            pilot = self.plant.pilot
            if pilot.mode is not PilotMode.PWM:
                return 0.0
            amps = min(amps, current_for_duty(round(pilot.duty * PILOT_DUTY_MAX_PERMILLE)))
        return amps

    def update(self, now: float) -> None:
        self.energy_wh += sum(self.plant.power_w()) * max(0.0, now - self._last) / 3600.0
        self._last = now
        live = self.plant.live_phases  # L1 alone while a 1/3-phase board's C2 is open
        target = [self.drawing()] * live + [0.0] * (3 - live)
        if target != self.plant.ev_current_a:
            if self.meter is not None:
                self.meter.sync()  # the chip integrates the old current up to now
            self.plant.ev_current_a = target


# ------------------------------------------------------------------------------------------- the rig
@dataclass
class Rig:
    sim: SimulatedCharger
    journal_path: Path
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    pins: PinRecorder | None = None
    ev: EvLoad | None = None

    # --------------------------------------------------------------- access
    @property
    def connector(self) -> Connector:
        assert self.sim.connector is not None
        return self.sim.connector

    @property
    def plant(self) -> Plant:
        return self.sim.plant

    @property
    def now(self) -> float:
        return self.sim.clock.monotonic()

    @property
    def journal(self) -> Journal:
        assert self.sim.journal is not None
        return self.sim.journal

    @property
    def state(self) -> str:
        return self.connector.machine.state

    @property
    def load(self) -> EvLoad:
        assert self.ev is not None
        return self.ev

    @property
    def pin_log(self) -> PinRecorder:
        assert self.pins is not None
        return self.pins

    def part(self, kind: type[PartT]) -> PartT:
        hal = self.sim.hal
        assert hal is not None and hal.sim is not None
        for part in hal.sim.wiring.parts:
            if isinstance(part, kind):
                return part
        raise LookupError(f"no {kind.__name__} in the simulated wiring")

    @property
    def lock_wiring(self) -> LockWiring:
        return self.part(LockWiring)

    @property
    def rcd_wiring(self) -> RcdWiring:
        return self.part(RcdWiring)

    @property
    def contactor_wiring(self) -> ContactorWiring:
        return self.part(ContactorWiring)

    @property
    def adc(self) -> Mcp3x0xSim:
        hal = self.sim.hal
        assert hal is not None and hal.sim is not None and self.sim.config.adc is not None
        chip = hal.sim.spi.chip(self.sim.config.adc.spi_bus, self.sim.config.adc.spi_device)
        assert isinstance(chip, Mcp3x0xSim)
        return chip

    @property
    def meter_chip(self) -> Atm90e32Sim:
        hal = self.sim.hal
        assert hal is not None and hal.sim is not None and self.sim.config.meter is not None
        chip = hal.sim.spi.chip(self.sim.config.meter.spi_bus, self.sim.config.meter.spi_device)
        assert isinstance(chip, Atm90e32Sim)
        return chip

    def import_wh(self) -> float:
        """The meter's import total as the connector last read it."""
        meter = self.connector.status().meter
        assert meter is not None, "the meter has not been read yet"
        return float(meter["import_wh"])

    # --------------------------------------------------------------- hardware as the pins show it
    def pilot(self) -> tuple[PilotMode, int]:
        return pilot_of(self.pin_log.level("pilot"))

    def coil(self) -> bool:
        return self.pin_log.level("coil") >= 1.0

    def contacts(self) -> bool:
        return self.contactor_wiring.contacts_closed

    def locked(self) -> bool:
        return self.lock_wiring.locked

    def pilot_at(self, t: float) -> tuple[PilotMode, int]:
        return pilot_of(self.pin_log.level_at("pilot", t))

    def coil_at(self, t: float) -> bool:
        return self.pin_log.level_at("coil", t) >= 1.0

    def offers_between(self, start: float, end: float = math.inf) -> list[tuple[float, int]]:
        """(time, duty) of every change of the pin to PWM in [start, end)."""
        return [(t, duty) for t, mode, duty in self.pilot_changes(start) if mode is PilotMode.PWM and t < end]

    def pilot_changes(self, since: float = -math.inf) -> list[tuple[float, PilotMode, int]]:
        return [(c.t, *pilot_of(c.value)) for c in self.pin_log.changes("pilot", since)]

    def duties(self, since: float = -math.inf) -> list[int]:
        """Every PWM duty the pin carried since ``since`` (in order)."""
        return [duty for _, mode, duty in self.pilot_changes(since) if mode is PilotMode.PWM]

    def coil_changes(self, since: float = -math.inf) -> list[tuple[float, bool]]:
        return [(c.t, c.value >= 1.0) for c in self.pin_log.changes("coil", since)]

    def coil_opened_at(self, since: float) -> float | None:
        return self.pin_log.first("coil", 0.0, since)

    def coil_closed_at(self, since: float) -> float | None:
        return self.pin_log.first("coil", 1.0, since)

    # --------------------------------------------------------------- events
    def trail(self, since: float = -math.inf) -> list[str]:
        """The states entered since ``since``, in order."""
        return [d["to"] for k, d in self.events if k == "state" and d["t"] >= since]

    def fault_events(self, since: float = -math.inf) -> list[tuple[float, str, bool]]:
        return [(d["t"], d["code"], d["raised"]) for k, d in self.events if k == "fault" and d["t"] >= since]

    def raised_at(self, code: str, since: float = -math.inf) -> float | None:
        for t, c, raised in self.fault_events(since):
            if c == code and raised:
                return t
        return None

    def cleared_at(self, code: str, since: float = -math.inf) -> float | None:
        for t, c, raised in self.fault_events(since):
            if c == code and not raised:
                return t
        return None

    def session_events(self, since: float = -math.inf) -> list[dict[str, Any]]:
        return [d for k, d in self.events if k == "session" and d["t"] >= since]

    def meter_events(self, since: float = -math.inf) -> list[dict[str, Any]]:
        return [d for k, d in self.events if k == "meter" and d["t"] >= since]

    def sessions(self) -> list[SessionRecord]:
        return self.journal.sessions(self.connector.settings.connector_id)

    # --------------------------------------------------------------- time
    async def advance(self, seconds: float) -> None:
        await self.sim.advance(seconds)

    async def advance_to(self, t: float) -> None:
        if t > self.now:
            await self.sim.advance(t - self.now)

    def describe(self) -> str:
        mode, duty = self.pilot()
        return (
            f"t={self.now:.3f} state={self.state} pilot={mode.value}/{duty} coil={self.coil()} "
            f"faults={sorted(c.value for c in self.connector.supervisor.active)} trail={self.trail()}"
        )

    # --------------------------------------------------------------- signal sources on the simulated ADC
    def set_cp_volts(self, pilot_v: float | None) -> None:
        """Make the pilot sense channel read a constant pilot voltage (``None``: the plant again)."""
        s = self.sim.config.pilot_sense
        assert isinstance(s, AdcPilotSense)
        if pilot_v is None:
            self.adc.set_channel(s.channel, cp_channel(self.plant, gain=s.gain, offset_v=s.offset_v))
        else:
            self.adc.set_channel_v(s.channel, (pilot_v - s.offset_v) / s.gain)

    def set_ntc_volts(self, name: str, adc_v: float | None) -> None:
        """Make a temperature channel read a constant voltage (``None``: the plant's NTC again)."""
        sensor = next(t for t in self.sim.config.temperature if t.name == name)
        if adc_v is None:
            assert self.sim.config.adc is not None
            vref = self.sim.config.adc.vref_v
            source = ntc_channel(
                self.plant, name, r25_ohm=sensor.r25_ohm, beta=sensor.beta, pullup_ohm=sensor.pullup_ohm, pullup_v=vref
            )
            self.adc.set_channel(sensor.channel, source)
        else:
            self.adc.set_channel_v(sensor.channel, adc_v)


def board_variant(tmp_path: Path, name: str, **sections: dict[str, Any]) -> Path:
    """A copy of ``board/<name>.toml`` with some keys replaced, e.g. ``safety={"ventilation_available": True}``."""
    text = (BOARDS / f"{name}.toml").read_text()
    data = tomllib.loads(text)
    lines = text.splitlines()
    out: list[str] = []
    section = ""
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):  # a table or an array of tables: keys below belong to it
            section = stripped.strip("[]")
        key = stripped.split("=", 1)[0].strip() if "=" in stripped else ""
        if section in sections and key in sections[section]:
            continue
        out.append(line)
        if stripped == f"[{section}]" and section in sections:  # the new values go right under the header
            for k, v in sections[section].items():
                out.append(f"{k} = {_toml(v)}")
    for section_name in sections:
        if section_name not in data:
            raise KeyError(f"board {name} has no [{section_name}] section")
    path = tmp_path / f"{name}-variant.toml"
    path.write_text("\n".join(out) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def gpio_pins(cfg: BoardConfig) -> dict[str, int]:
    """The GPIO pins of a Pi-GPIO board the recorder watches, by role."""
    if not (
        isinstance(cfg.pilot, GpioPwmPilot)
        and isinstance(cfg.contactor, GpioContactor)
        and isinstance(cfg.rcd, GpioRcd)
        and isinstance(cfg.lock, GpioLock)
    ):
        raise ValueError(f"{cfg.board.name}: the rig watches a board whose pilot, contactor, RCD and lock are on GPIO")
    pins = {"pilot": cfg.pilot.pwm_pin, "coil": cfg.contactor.coil_pin, "lock": cfg.lock.lock_pin}
    optional = {
        "mirror": cfg.contactor.mirror_pin,
        "unlock": cfg.lock.unlock_pin,
        "lock_feedback": cfg.lock.feedback_pin,
        "rcd_trip": cfg.rcd.trip_pin,
        "rcd_test": cfg.rcd.test_pin,
    }
    if cfg.phase_switch is not None:
        optional["phase_coil"] = cfg.phase_switch.coil_pin
        optional["phase_mirror"] = cfg.phase_switch.mirror_pin
    pins.update({role: pin for role, pin in optional.items() if pin is not None})
    return pins


@contextlib.asynccontextmanager
async def charger(
    tmp_path: Path,
    *,
    board: str | Path = "sim-ac",
    free_charging: bool = True,
    settings: ConnectorSettings | None = None,
    journal_name: str = "journal.db",
    setup: Callable[[Rig], None] | None = None,
) -> AsyncIterator[Rig]:
    """A started rig; ``setup`` runs after the board is open and before the firmware boots (an EV
    already plugged, a fault knob set, ...)."""
    settings = settings or ConnectorSettings(free_charging=free_charging)
    journal_path = tmp_path / journal_name
    rig: Rig | None = None

    def before_start(plant: Plant) -> None:
        assert rig is not None
        hal = rig.sim.hal
        assert hal is not None and hal.sim is not None and hal.sim.wiring is not None
        pins = gpio_pins(rig.sim.config)
        rig.pins = PinRecorder(rig.sim.clock, hal.sim.wiring.factory, pins)
        rig.ev = EvLoad(plant, rig.contactor_wiring, rig.meter_chip, rig.now)
        hal.sim.wiring.add(rig.ev)
        if setup is not None:
            setup(rig)

    sim = SimulatedCharger(
        board,
        journal_path=journal_path,
        settings=settings,
        on_event=lambda kind, data: rig.events.append((kind, data)) if rig is not None else None,
        before_start=before_start,
    )
    rig = Rig(sim=sim, journal_path=journal_path)
    await sim.start()
    try:
        yield rig
    finally:
        await sim.close()


# ------------------------------------------------------------------------------------------ actions
async def plug(rig: Rig, state: str = "B", *, cable_a: int | None = 32) -> float:
    """The EV connects: the cable's PP coding and the EV's pilot state appear together (a cable
    fixed to the EV, plugged into the socket). Returns the time of the plug-in."""
    rig.plant.pp_ohm = None if cable_a is None else CABLE_OHM[cable_a]
    rig.plant.ev_state = state
    return rig.now


async def unplug(rig: Rig) -> float:
    rig.plant.ev_state = "A"
    rig.plant.pp_ohm = None
    rig.load.demand_a = 0.0
    return rig.now


async def wait_until(rig: Rig, predicate: Callable[[], bool], within_s: float, what: str) -> float:
    """Advance in pilot-sample steps until ``predicate`` holds; the time it first held."""
    deadline = rig.now + within_s
    while not predicate():
        if rig.now >= deadline - 1e-9:
            raise AssertionError(f"not within {within_s} s: {what}; {rig.describe()}")
        await rig.advance(min(STEP_S, deadline - rig.now))
    return rig.now


async def wait_state(rig: Rig, name: str, within_s: float) -> float:
    return await wait_until(rig, lambda: rig.state == name, within_s, f"state {name}")


async def charge(rig: Rig, *, amps: float = 16.0, cable_a: int = 32) -> float:
    """Plug in, get the offer, go to C and draw ``amps``: returns the time the contacts closed."""
    await plug(rig, "B", cable_a=cable_a)
    await wait_state(rig, "B2", 1.0)
    rig.load.demand_a = amps
    rig.plant.ev_state = "C"
    await wait_state(rig, "C2", 1.0)
    return await wait_until(rig, rig.contacts, 1.0, "contacts closed")
