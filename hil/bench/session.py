"""Bench mode: a scenario run against a charger on the rig (docs/hil-bench.md).

``evse-hil run SCENARIO --bench RIG.toml --i-have-an-emergency-stop`` runs the scenario's board (a real
board file such as ``pi-ac`` on the bench; a simulated board in tests, see :mod:`hil.bench.sim_bench`)
with the real firmware, always in real time, and plays the scenario's EV with the rig instead of the
EV model (:class:`hil.models.ev.AcEv`):

* pilot and PP: the relay EV emulator, from the scenario's events: ``plug_in`` / ``unplug``,
  ``ev_state`` (``force_state``), the faults ``diode_short``, ``pilot_short``, ``pp_open``,
  ``pp_invalid`` and ``stuck_in_c`` (``force_state("C")`` while set; cleared, the state the scenario
  last asked for). Like the emulator, the bench does not read the pilot: the EV shows C only when the
  scenario says so (an ``ev_state`` event);
* current: the SCPI load. While the emulator shows C (or D), the connector's contactor is commanded
  closed and its pilot offers at least 6 A, the load draws min(the offer decoded from the pilot duty as
  an EV decodes it (IEC 61851-1 Table A.8), the EV's ``max_current_a``, what the rig file allows the
  load); input off otherwise. Stuck in C, it keeps its last current while the contactor is closed,
  offer or not; ``overcurrent`` draws its amps whatever the offer while the contactor is closed. The
  load follows within one step (:data:`hil.runner.MODEL_STEP_S`): no response delay, and no SoC (a
  bench has no battery: ``ev_soc_at_least`` is refused).
* no EV relay is ever switched while the load draws: input off first, then the relays (the order of
  the safe stop, applied to every EV action), then the load follows the rule above again.

The site energy manager (``site.energy_manager``, with its DER functions) is not run on a bench: such
a scenario is refused before anything is opened (:func:`check_scenario`).

The trace has the connector records as in simulation, plus:

* ``{"src": "<ev id>", "ev": "power", "W": 3680.0, "A": 16.0}``: the load's measurements, every
  :data:`MEASURE_PERIOD_S` and after each change of the load; written instead of ``soc`` records. The
  connector's ``power`` and the ``site_power`` come from the same measurement;
* ``ev_state`` (src = the EV id) after every relay change, as the EV model writes it;
* ``{"src": "rig", "ev": "abort", "reason": "E-stop: ..."}`` when the E-stop trips;
* the header carries ``"bench"``: the rig's name.

Safety (docs/hil-bench.md "Safety rules"): nothing is opened without the confirmation; the rig file,
the board's pins against the rig's and the scenario are checked before anything is switched; the
E-stop is watched from before the load is started until the end; a trip runs the safe stop at once,
aborts the run and fails every check (``aborted: E-stop ...``); any error runs the safe stop before it
propagates; a normal end runs it too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from board.loader import load_board, resolve, shipped_boards
from board.schema import Atm90e32Config, BoardConfig
from firmware.connector import ConnectorSettings
from firmware.iec61851.pilot import MIN_OFFER_A, current_for_duty
from firmware.simulation import SimulatedCharger
from hal.buses import gpio_pin_factory, open_serial
from hal.types import PilotMode
from hil.bench.estop import EStopMonitor
from hil.bench.ev_emulator import RelayEvEmulator
from hil.bench.rig import RigConfig, load_rig
from hil.bench.safety import LOAD_STEP_TIMEOUT_S, SafeStopError, require_confirmation, safe_stop
from hil.bench.scpi_load import READ_POLL_S, ScpiLoad
from hil.runner import MODEL_STEP_S, LineSink, RunResult, ScenarioRun, _action_fields, prepare_out_dir, write_outputs
from hil.scenario import EV_FAULTS, EventSpec, Scenario
from hil.trace import TRACE_FORMAT

log = logging.getLogger(__name__)

#: The load is measured this often (and after each change of its input or setpoint). Two SCPI queries,
#: each followed by ``SYST:ERR?``, take about 0.1 s at 9600 baud.
MEASURE_PERIOD_S = 1.0
#: Faults the rig plays with the EV emulator or the load; the others are injected into a simulated
#: board's plant and cannot be on a real board.
#: Raspberry Pi SPI pins (BCM), Raspberry Pi documentation "SPI": SPI0 MISO 9, MOSI 10, SCLK 11, CE0 8,
#: CE1 7; SPI1 MISO 19, MOSI 20, SCLK 21, CE0 18, CE1 17, CE2 16. Claimed by the kernel's spidev.
SPI_DATA_PINS: dict[int, tuple[int, ...]] = {0: (9, 10, 11), 1: (19, 20, 21)}
SPI_CE_PINS: dict[int, tuple[int, ...]] = {0: (8, 7), 1: (18, 17, 16)}
#: The Pi's primary UART (TXD 14, RXD 15) behind these device names.
UART_PORTS = ("/dev/serial0", "/dev/ttyAMA0", "/dev/ttyS0")
UART_PINS = (14, 15)

OnStarted = Callable[["BenchRun"], None]
T = TypeVar("T")


class BenchError(Exception):
    """The bench cannot run this scenario with this rig and board; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"bench: {p}" for p in problems))


# ----------------------------------------------------------------------------------- checks
def board_path(scenario: Scenario, base_dir: Path) -> Path:
    """The scenario's board file: a shipped board's name, or a path next to the scenario."""
    if scenario.board in shipped_boards():
        return resolve(scenario.board)
    return (base_dir / scenario.board).resolve()


def board_gpio_pins(board: BoardConfig) -> dict[int, str]:
    """Every GPIO the board claims, with what claims it: each function's ``*_pin`` field, the pins of
    the SPI buses a real board uses (spidev) and the UART of a co-processor on the Pi's serial port."""
    pins: dict[int, str] = {}
    for name, value in board:  # pydantic models iterate as (field, value)
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            if not isinstance(item, BaseModel):
                continue
            label = name if index is None else f"{name}[{index}]"
            for field_name, pin in item:
                if field_name.endswith("_pin") and isinstance(pin, int) and not isinstance(pin, bool):
                    pins.setdefault(pin, f"{label}.{field_name}")
    if board.buses.spi is not None and board.buses.spi.backend == "spidev":
        spi_meter = board.meter if isinstance(board.meter, Atm90e32Config) else None  # an SDM630 is on a UART
        for name, part in (("adc", board.adc), ("meter", spi_meter)):
            if part is None:
                continue
            for pin in SPI_DATA_PINS.get(part.spi_bus, ()):
                pins.setdefault(pin, f"{name} (SPI{part.spi_bus} MISO/MOSI/SCLK)")
            ce = SPI_CE_PINS.get(part.spi_bus, ())
            if part.spi_device < len(ce):
                pins.setdefault(ce[part.spi_device], f"{name} (SPI{part.spi_bus} CE{part.spi_device})")
    if board.buses.serial is not None and board.buses.serial.port in UART_PORTS:
        for pin in UART_PINS:
            pins.setdefault(pin, f"buses.serial ({board.buses.serial.port} TXD/RXD)")
    return pins


def check_pins(rig: RigConfig, board: BoardConfig) -> list[str]:
    """A rig GPIO the board also uses: the firmware and the rig would drive the same line. Only lines
    of one GPIO chip can clash: a rig on another chip (an I2C expander's /dev/gpiochipN) shares none."""
    if board.buses.gpio is None or board.buses.gpio.chip != rig.gpio.chip:
        return []
    used = board_gpio_pins(board)
    return [
        f"GPIO {pin} is used by the rig ({where}) and by the board {board.board.name} ({used[pin]})"
        for pin, where in sorted(rig.gpio_pins().items())
        if pin in used
    ]


def rig_current_cap_a(rig: RigConfig) -> float | None:
    """The highest current the rig file lets the load draw (current and power limits), or None
    without a load. Rounded down to 1 mA so a setpoint at the cap passes the driver's own check."""
    if rig.load is None:
        return None
    cap = min(rig.load.max_current_a, rig.load.max_power_w / rig.load.nominal_voltage_v)
    return math.floor(cap * 1000) / 1000


def check_scenario(scenario: Scenario, rig: RigConfig, board: BoardConfig) -> list[str]:
    """What in the scenario this rig and board cannot play, one line each (empty: it can run)."""
    problems: list[str] = []
    if len(scenario.evs) > 1:
        ids = ", ".join(ev.id for ev in scenario.evs)
        problems.append(f"the rig plays one EV (one emulator, one load); the scenario has {len(scenario.evs)}: {ids}")
    if scenario.connectors > 1:
        problems.append(f"the rig drives connector 1 only; the scenario uses connectors 1..{scenario.connectors}")
    for ev in scenario.evs:
        if rig.ev.pp_pin(ev.cable_a) is None:
            problems.append(f"EV {ev.id}: cable_a = {ev.cable_a} needs ev.pp_{ev.cable_a}a_pin in the rig file")
        if ev.protocol != "none":
            # The bench's EV emulator switches resistors only: it has no PLC modem to speak ISO 15118.
            problems.append(
                f"EV {ev.id}: protocol {ev.protocol} needs an ISO 15118 EV; the bench's emulator is a PWM EV only "
                "(run this scenario in simulation, without --bench)"
            )
    site = scenario.site
    if site is not None and site.energy_manager is not None:
        # The manager would read the simulation's site meter and grid models, not the bench's
        # instruments, and its checks would judge numbers the bench never measured.
        problems.append(
            "site.energy_manager: the bench does not run the site energy manager (nor its DER functions); "
            "run this scenario in simulation (without --bench)"
        )
    simulated = board.board.simulated
    cap = rig_current_cap_a(rig)
    for i, event in enumerate(scenario.events):
        where = f"events[{i}] ({event.action}{' ' + event.fault if event.fault else ''} at {event.at:g} s)"
        if event.action == "grid" and not simulated:
            problems.append(f"{where}: the bench cannot change the grid (only a simulated board's plant can)")
        if event.action not in ("fault", "clear") or event.fault is None:
            continue
        if event.fault not in EV_FAULTS:
            if not simulated:
                problems.append(
                    f"{where}: {event.fault} is injected into a simulated board; {board.board.name} is real"
                )
        elif event.fault == "pp_invalid" and event.action == "fault" and rig.ev.pp_invalid_pin is None:
            problems.append(f"{where}: an invalid PP coding needs ev.pp_invalid_pin in the rig file")
        elif event.fault == "overcurrent" and event.action == "fault":
            if cap is None:
                problems.append(f"{where}: the EV draws through the load: the rig file has no [load]")
            elif event.amps is not None and event.amps > cap:
                problems.append(f"{where}: {event.amps:g} A is above what the rig lets the load draw ({cap:g} A)")
    for i, check in enumerate(scenario.expect):
        if check.check == "ev_soc_at_least":
            problems.append(f"expect[{i}]: ev_soc_at_least cannot be checked on a bench: it has no battery (no SoC)")
    return problems


# ----------------------------------------------------------------------------------- the board
# ----------------------------------------------------------------------------------- the run
class BenchRun(ScenarioRun):
    """One bench run: the rig's instruments, the board and the scenario under the E-stop watch.

    ``pin_factory`` and ``load_port`` replace what the rig file names (tests: a ``MockFactory``, a pty
    to :class:`hil.bench.sim_scpi.ScpiLoadSim`); they stay the caller's. ``on_started(run)`` is called
    once the firmware has booted, before the first scenario event."""

    def __init__(
        self,
        scenario: Scenario,
        base_dir: Path,
        out_dir: Path,
        rig: RigConfig,
        *,
        pin_factory: Any = None,
        load_port: Any = None,
        on_line: LineSink | None = None,
        on_started: OnStarted | None = None,
    ) -> None:
        super().__init__(scenario, base_dir, out_dir, realtime=True, on_line=on_line)
        self.rig = rig
        self.ev_spec = scenario.evs[0] if scenario.evs else None
        self.ev_id = self.ev_spec.id if self.ev_spec is not None else "ev"
        self.pin_factory = pin_factory
        self._own_factory = pin_factory is None
        self._load_port = load_port
        self._own_port: Any = None
        self._on_started = on_started
        self._cap_a = rig_current_cap_a(rig)
        self.emulator: RelayEvEmulator | None = None
        self.load: ScpiLoad | None = None
        self.estop: EStopMonitor | None = None
        #: Why the run was aborted (the E-stop's reason), None while it was not.
        self.aborted: str | None = None
        self.aborted_at: float | None = None
        #: The failed steps of a safe stop that could not complete (after a trip: in the summary).
        self.safe_stop_errors: list[str] = []
        self._safe_stop_error: SafeStopError | None = None
        self._main: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one EV action or load change at a time
        self._stopping = False
        self._load_on = False
        self._setpoint_a: float | None = None
        self._last_draw_a = 0.0
        self._overcurrent_a: float | None = None
        self._stuck = False
        self._asked_state: str | None = None  # the last ev_state of the scenario
        self._ev_state = "A"
        self._measure_due = True
        self._inflight: set[asyncio.Future[Any]] = set()  # load exchanges under way

    # ------------------------------------------------------------------ the whole run
    async def execute(self) -> None:
        """Open the rig, watch the E-stop, start the load, boot the board, run the scenario; the safe stop
        at the end, on a trip (at once) and on any error (then the error propagates)."""
        self.t0 = self.clock.monotonic()
        header = {"format": TRACE_FORMAT, "scenario": self.scenario.name, "board": self.scenario.board}
        self._write("rig", "header", **header, time="realtime", bench=self.rig.rig.name)
        try:
            self._open_rig()
            assert self.estop is not None
            reason = self.estop.check()
            if reason is not None:
                raise BenchError([f"{reason}: release the E-stop before starting"])
            await self._run_watched(self.estop)
        except BaseException as exc:
            if self.aborted is None:
                await self._safe_stop()
                if self.safe_stop_errors:
                    exc.add_note(
                        "safe stop incomplete, make the bench safe with the emergency stop: "
                        + "; ".join(self.safe_stop_errors)
                    )
            raise
        else:
            if self.aborted is None:
                await self._safe_stop()
                if self._safe_stop_error is not None:
                    raise self._safe_stop_error
        finally:
            await self._close_all()

    def _open_rig(self) -> None:
        if self.pin_factory is None:
            self.pin_factory = gpio_pin_factory(self.rig.gpio.factory, self.rig.gpio.chip)
        # Monitor first: the E-stop is watched before anything can be switched on.
        self.estop = EStopMonitor.from_config(self.rig.estop, pin_factory=self.pin_factory, clock=self.clock)
        cable = self.ev_spec.cable_a if self.ev_spec is not None else None
        self.emulator = RelayEvEmulator(self.rig.ev, pin_factory=self.pin_factory, cable_a=cable)

    async def _run_watched(self, estop: EStopMonitor) -> None:
        main = self._main = asyncio.create_task(self._setup_and_run(), name="bench-run")
        watch = asyncio.create_task(estop.watch(self._on_trip), name="bench-estop")
        try:
            await asyncio.wait({main, watch}, return_when=asyncio.FIRST_COMPLETED)
            if watch.done() and not watch.cancelled() and watch.exception() is not None and self.aborted is None:
                # Default deny: a watch that died cannot see a press any more.
                await self._on_trip(f"the E-stop watch failed ({watch.exception()!r})")
            if self.aborted is not None:
                await asyncio.gather(main, watch, return_exceptions=True)
                return
            main.result()  # the run ended first: its error, if any, propagates
        finally:
            for task in (main, watch):
                task.cancel()
            await asyncio.gather(main, watch, return_exceptions=True)

    async def _on_trip(self, reason: str) -> None:
        if self.aborted is not None:
            return
        self.aborted, self.aborted_at = reason, self.now()
        self._stopping = True  # no load command after this one
        if self._main is not None:
            self._main.cancel()
        self._write("rig", "abort", reason=f"E-stop: {reason}")
        await self._safe_stop()

    async def _safe_stop(self) -> None:
        self._stopping = True
        if self._inflight:
            # A load command already under way (say INP ON) finishes before the INP OFF goes out, never
            # after it; the driver's own timeouts bound the wait.
            await asyncio.wait(set(self._inflight), timeout=LOAD_STEP_TIMEOUT_S)
        try:
            await safe_stop(self.emulator, self.load)
        except SafeStopError as exc:
            self._safe_stop_error = exc
            self.safe_stop_errors = exc.report.errors
            log.error("%s", exc)
        self._load_on = False
        self._trace_ev_state()

    async def _setup_and_run(self) -> None:
        if self.rig.load is not None:
            port = self._load_port
            if port is None:
                port = self._own_port = open_serial(self.rig.load.port, self.rig.load.baudrate, timeout=READ_POLL_S)
            self.load = ScpiLoad(port, self.rig.load)
            identity = await self.load.start()
            log.info("load: %s %s (serial %s, firmware %s)", *asdict(identity).values())
        await self.start()
        if self._on_started is not None:
            self._on_started(self)
        await self.run()

    async def _close_all(self) -> None:
        """Release everything, each step whatever happened to the one before (errors are logged)."""
        steps: list[tuple[str, Callable[[], Any]]] = [("board", self.close)]
        if self.load is not None:
            steps.append(("load", self.load.close))
        if self._own_port is not None:
            steps.append(("load port", self._own_port.close))
        if self.emulator is not None:
            steps.append(("EV emulator", self.emulator.close))
        if self.estop is not None:
            steps.append(("E-stop monitor", self.estop.close))
        if self._own_factory and self.pin_factory is not None:
            steps.append(("GPIO", self.pin_factory.close))
        for name, step in steps:
            try:
                result = step()
                if asyncio.iscoroutine(result):
                    await result
            except Exception as exc:
                log.error("closing the %s failed: %s", name, exc)

    # ------------------------------------------------------------------ board and scenario
    async def start(self) -> None:
        """Open the scenario's board and boot the firmware on it (connector 1)."""
        settings = self.scenario.settings
        charger = SimulatedCharger(
            self._board_path(),
            allow_real_board=True,
            journal_path=self.out_dir / "journal-1.db",
            settings=ConnectorSettings(free_charging=settings.free_charging, fallback_a=settings.fallback_a),
            on_event=self._sink(1),
            clock=self.clock,
            journal_wall_clock=self.now,
        )
        self.chargers[1] = charger
        hal = await charger.open_hal()
        if hal.sim is not None:  # a simulated board: its grid is the scenario's site
            plant = hal.sim.plant
            for i, voltage in enumerate(plant.grid_voltage_v):
                plant.grid_voltage_v[i] = self.site.voltage_v if voltage else voltage
            plant.grid_frequency_hz = self.site.frequency_hz
        await charger.boot()

    async def run(self) -> None:
        """The scenario's events on time, and the load loop next to them; an error in either ends both."""
        self._write("site", "grid", V=self.site.voltage_v, Hz=self.site.frequency_hz)
        script = asyncio.create_task(self._script(), name="bench-script")
        loop = asyncio.create_task(self._load_loop(), name="bench-load")
        try:
            done, _ = await asyncio.wait({script, loop}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in (script, loop):
                task.cancel()
            await asyncio.gather(script, loop, return_exceptions=True)

    async def _script(self) -> None:
        for t, _, event in self.schedule():
            await self.advance_to(t)
            await self.bench_act(event)
            await self.drive_load()
        await self.advance_to(self.scenario.duration)

    async def _load_loop(self) -> None:
        next_measure = 0.0
        while True:
            await self.drive_load()
            if self._measure_due or self.now() >= next_measure:
                self._measure_due = False
                await self.measure()
                next_measure = self.now() + MEASURE_PERIOD_S
            await self.clock.sleep(MODEL_STEP_S)

    # ------------------------------------------------------------------ the EV
    async def bench_act(self, event: EventSpec) -> None:
        """One scenario event: the EV's on the rig, the others as in simulation."""
        ev_event = event.action in ("plug_in", "unplug", "ev_state") or (
            event.action in ("fault", "clear") and event.fault in EV_FAULTS
        )
        if not ev_event:
            self.act(event)
            return
        self._write("rig", "action", **_action_fields(event))
        on = event.action == "fault"
        if event.fault == "overcurrent":
            self._overcurrent_a = event.amps if on else None
            return
        emulator = self.emulator
        assert emulator is not None
        async with self._lock:
            if self._stopping:
                return
            await self._input_off()  # never switch an EV relay under load
            match event.action, event.fault:
                case "plug_in", _:
                    if self._stuck:
                        emulator.force_state("C")  # applies at the plug-in: R3 stuck in
                    emulator.plug_in()
                case "unplug", _:
                    emulator.unplug()
                    self._asked_state, self._last_draw_a = None, 0.0
                case "ev_state", _:
                    self._asked_state = event.state
                    if not self._stuck:
                        emulator.force_state(event.state)
                case _, "stuck_in_c":
                    self._stuck = on
                    emulator.force_state("C" if on else self._asked_state)
                case _, "diode_short":
                    emulator.diode_short(on)
                case _, "pilot_short":
                    emulator.pilot_short(on)
                case _, "pp_open":
                    emulator.pp_open(on)
                case _, "pp_invalid":
                    emulator.pp_invalid(on)
            self._trace_ev_state()

    def _trace_ev_state(self) -> None:
        if self.emulator is not None and self.emulator.state != self._ev_state:
            self._ev_state = self.emulator.state
            self._write(self.ev_id, "ev_state", state=self._ev_state)

    # ------------------------------------------------------------------ the load
    def offer_a(self) -> float | None:
        """The current the connector's pilot offers, as an EV decodes the duty; None without an offer."""
        hal = self.chargers[1].hal if 1 in self.chargers else None
        if hal is None or hal.pilot.mode is not PilotMode.PWM:
            return None
        amps = current_for_duty(hal.pilot.duty_permille)
        return amps if amps >= MIN_OFFER_A else None

    def load_target_a(self) -> float | None:
        """What the load should draw now (amps), None for input off; see the module docstring."""
        charger = self.chargers.get(1)
        emulator = self.emulator
        if self._stopping or emulator is None or not emulator.plugged or charger is None or charger.hal is None:
            return None
        if not charger.hal.contactor.commanded_closed:
            return None
        if self._overcurrent_a is not None:
            return self._overcurrent_a
        if emulator.state not in ("C", "D"):
            return None
        offer = self.offer_a()
        if offer is None:
            return self._last_draw_a if self._stuck and self._last_draw_a > 0 else None
        amps = offer
        if self.ev_spec is not None:
            amps = min(amps, self.ev_spec.max_current_a)
        if self._cap_a is not None:
            amps = min(amps, self._cap_a)
        return round(amps, 3)

    async def drive_load(self) -> None:
        """Bring the load to :meth:`load_target_a`: setpoint first, then input on; or input off."""
        if self.load is None:
            return
        async with self._lock:
            if self._stopping:
                return
            target = self.load_target_a()
            if target is None or target <= 0:
                await self._input_off()
                return
            if self._setpoint_a is None or abs(target - self._setpoint_a) > 1e-6:
                await self._exchange(self.load.set_current(target))
                self._setpoint_a, self._measure_due = target, True
            if not self._load_on:
                self._load_on = self._measure_due = True  # on from here: a failed command is retried as off
                await self._exchange(self.load.set_input(True))
            self._last_draw_a = target

    async def _input_off(self) -> None:
        if self.load is not None and self._load_on:
            await self._exchange(self.load.set_input(False))
            self._load_on, self._measure_due = False, True

    async def _exchange(self, call: Coroutine[Any, Any, T]) -> T:
        """One load exchange of the run, shielded: a cancelled run does not abandon it half way (its
        serial I/O goes on in a worker thread), and the safe stop waits for it (:attr:`_inflight`)."""
        task = asyncio.ensure_future(call)
        self._inflight.add(task)
        task.add_done_callback(_settled)
        task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(task)

    async def measure(self) -> None:
        """Trace what the load measures: the EV's and the connector's power, and the site's."""
        if self.load is None:
            return
        amps = await self._exchange(self.load.measure_current())
        watts = await self._exchange(self.load.measure_power())
        if self.ev_spec is not None:
            self._write(self.ev_id, "power", W=round(watts, 3), A=round(amps, 3))
        self._write("connector1", "power", W=round(watts, 3))
        self._write("site", "site_power", **asdict(self.site.power(self.now(), watts)))


def _settled(task: asyncio.Future[Any]) -> None:
    """Mark a shielded exchange's outcome as seen (whoever awaited it may have been cancelled)."""
    if not task.cancelled():
        task.exception()


# ----------------------------------------------------------------------------------- entry point
async def run_bench(
    scenario: Scenario,
    base_dir: Path,
    out_dir: Path,
    rig: RigConfig | str | Path,
    *,
    confirmed: bool,
    on_line: LineSink | None = None,
    report: bool = True,
    pin_factory: Any = None,
    load_port: Any = None,
    on_started: OnStarted | None = None,
) -> RunResult:
    """Run ``scenario`` on the bench described by ``rig`` (a rig file or a parsed one).

    Refused before anything is opened: without ``confirmed`` (:class:`ConfirmationMissing`), a bad rig
    file (:class:`RigError`) or board file (:class:`BoardError`), a GPIO both use or a scenario the rig
    cannot play (:class:`BenchError`). An E-stop trip returns a failed result (``summary["aborted"]``);
    an error propagates after the safe stop."""
    require_confirmation(confirmed)
    config = rig if isinstance(rig, RigConfig) else load_rig(rig)
    board = load_board(board_path(scenario, base_dir))
    problems = check_pins(config, board) + check_scenario(scenario, config, board)
    if problems:
        raise BenchError(problems)
    prepare_out_dir(out_dir)
    wall = time.perf_counter()
    run = BenchRun(
        scenario,
        base_dir,
        out_dir,
        config,
        pin_factory=pin_factory,
        load_port=load_port,
        on_line=on_line,
        on_started=on_started,
    )
    await run.execute()
    abort = None
    if run.aborted is not None:
        abort = f"aborted: E-stop ({run.aborted}, at {run.aborted_at or 0.0:.2f} s)"
    extra: dict[str, Any] = {"bench": config.rig.name, "aborted": abort}
    if run.safe_stop_errors:
        extra["safe_stop_errors"] = run.safe_stop_errors
    return write_outputs(run, time.perf_counter() - wall, report=report, abort=abort, extra=extra)
