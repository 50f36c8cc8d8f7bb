"""Turn a validated board file into live HAL objects.

:func:`open_board` opens each bus the board declares (:mod:`hal.buses`), builds one driver per
function and initialises the parts that need it (meter configuration, co-processor handshake,
converter keep-alive). A simulated board goes through the very same code: only the bus factories
differ (gpiozero ``MockFactory``, :class:`hal.sim.spi.SimSpiBus`, a python-can ``virtual`` channel,
a pty to :class:`hal.sim.coprocessor.CoprocessorSim` or to :class:`hal.sim.sdm630.Sdm630Sim`), and
:class:`SimWorld` holds the simulators and the plant they read.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from board.schema import (
    AdcPilotSense,
    AdcProximity,
    Atm90e32Config,
    BoardConfig,
    CoprocessorProximity,
    FixedCable,
    GpioContactor,
    GpioLock,
    GpioPwmPilot,
    GpioRcd,
    Sdm630Config,
)
from hal.buses import gpio_pin_factory, open_can, open_serial, open_spi
from hal.changes import ChangeSignal
from hal.clock import Clock, RealClock
from hal.drivers.adc_pilot import AdcPilotSense as AdcPilotSenseDriver
from hal.drivers.adc_proximity import AdcProximityPilot
from hal.drivers.atm90e32 import MAX_SPEED_HZ as ATM90E32_MAX_SPEED_HZ
from hal.drivers.atm90e32 import SPI_MODE as ATM90E32_SPI_MODE
from hal.drivers.atm90e32 import Atm90e32Calibration, Atm90e32Meter
from hal.drivers.fixed_cable import FixedCableProximity
from hal.drivers.gpio_imd import GpioInsulationMonitor
from hal.drivers.gpio_io import GpioConnectorLock, GpioIndicator, GpioResidualCurrentMonitor
from hal.drivers.gpio_io import GpioContactor as GpioContactorDriver
from hal.drivers.gpio_pilot import GpioPilotOutput
from hal.drivers.infy_can import InfyBidiConverter
from hal.drivers.mcp3x0x import Mcp3x0x
from hal.drivers.mcu_link import (
    McuConnectorLock,
    McuContactor,
    McuLink,
    McuPilotOutput,
    McuPilotSense,
    McuProximity,
    McuResidualCurrentMonitor,
)
from hal.drivers.ntc import NtcTemperature
from hal.drivers.phase_switch import GpioPhaseSwitch
from hal.drivers.rdm6300 import READ_TIMEOUT_S as RDM6300_READ_TIMEOUT_S
from hal.drivers.rdm6300 import Rdm6300Reader
from hal.drivers.sdm630 import Sdm630Meter, Sdm630Settings
from hal.errors import HalError
from hal.interfaces import (
    ConnectorLock,
    Contactor,
    IdReader,
    Indicator,
    InsulationMonitor,
    Meter,
    PhaseSwitch,
    PilotOutput,
    PilotSense,
    PowerConverter,
    ProximityPilot,
    ResidualCurrentMonitor,
    TemperatureSensor,
)
from hal.sim.plant import Plant
from hal.types import ConverterCapabilities, ConverterMode

log = logging.getLogger(__name__)

Closer = Callable[[], Awaitable[None] | None]
_sim_can_channels = itertools.count(1)


@dataclass
class SimWorld:
    """The simulators behind a simulated board, and the plant they read."""

    plant: Plant
    spi: Any = None  # hal.sim.spi.SimSpiBus
    wiring: Any = None  # hal.sim.gpio_wiring.GpioWiring
    coprocessor: Any = None  # hal.sim.coprocessor.CoprocessorSim
    converter: Any = None  # hal.sim.infy_module.InfyModuleSim
    rfid: Any = None  # hal.sim.rdm6300.Rdm6300Sim
    #: The meter's simulator, whatever its bus: hal.sim.atm90e32.Atm90e32Sim (also reachable through
    #: ``spi``) or hal.sim.sdm630.Sdm630Sim; both have ``sync()`` (count energy up to now).
    meter: Any = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


@dataclass
class BoardHal:
    """Every function of one board, as HAL interfaces."""

    config: BoardConfig
    clock: Clock
    pilot: PilotOutput
    pilot_sense: PilotSense
    proximity: ProximityPilot
    contactor: Contactor
    rcd: ResidualCurrentMonitor
    lock: ConnectorLock | None = None
    phase_switch: PhaseSwitch | None = None
    temperatures: list[TemperatureSensor] = field(default_factory=list)
    meter: Meter | None = None
    converter: PowerConverter | None = None
    imd: InsulationMonitor | None = None
    indicator: Indicator | None = None
    id_reader: IdReader | None = None
    mcu: McuLink | None = None
    sim: SimWorld | None = None
    #: Set on simulated boards whose every input reports its changes (hal.changes); None: poll.
    changes: ChangeSignal | None = None
    _closers: list[Closer] = field(default_factory=list, repr=False)

    async def settle(self, seconds: float = 0.05) -> None:
        """Give the hardware (or the simulated world) ``seconds`` to follow the last command."""
        await self.clock.sleep(seconds)
        if self.sim is not None and self.sim.wiring is not None:
            self.sim.wiring.update()

    async def close(self) -> None:
        """Leave every output safe (pilot F, contactor open) and release every bus, even after errors."""
        await _run_closers(self._closers, self.config.board.name)


async def _run_closers(closers: list[Closer], board: str) -> None:
    """Run ``closers`` last-opened first; one broken part must not keep the others open."""
    while closers:
        closer = closers.pop()
        try:
            result = closer()
            if result is not None:
                await result
        except Exception:
            log.exception("closing %s", board)


class _Builder:
    def __init__(self, cfg: BoardConfig, clock: Clock) -> None:
        self.cfg = cfg
        self.clock = clock
        self.closers: list[Closer] = []
        self.sim: SimWorld | None = None
        self.pin_factory: Any = None
        self.spi_factory: Any = None
        self.can_bus: Any = None
        self.mcu: McuLink | None = None
        self.adc: Mcp3x0x | None = None
        self.keep: list[Any] = []  # gpiozero holds pins by weak reference: keep every driver alive
        self.meter_totals_wh = (0.0, 0.0)

    # ------------------------------------------------------------------ buses
    async def open_buses(self) -> None:
        cfg, buses = self.cfg, self.cfg.buses
        if cfg.board.simulated:
            self.sim = SimWorld(plant=_plant_for(cfg))
        if buses.gpio is not None:
            self.pin_factory = gpio_pin_factory(buses.gpio.factory, buses.gpio.chip)
            pilot = cfg.pilot
            if isinstance(pilot, GpioPwmPilot) and pilot.pwm_chip is not None and pilot.pwm_channel is not None:
                # Real boards: the pilot pin comes from the SoC's hardware PWM block (docs/hardware-pwm.md).
                from hal.drivers.hw_pwm import HardwarePwmFactory

                self.pin_factory = HardwarePwmFactory(
                    self.pin_factory, pwm_channels={pilot.pwm_pin: (pilot.pwm_chip, pilot.pwm_channel)}
                )
            self.closers.append(self.pin_factory.close)
            if self.sim is not None:
                from hal.sim.gpio_pins import SignallingMockFactory
                from hal.sim.gpio_wiring import GpioWiring

                if isinstance(self.pin_factory, SignallingMockFactory):
                    self.pin_factory.changes = self.sim.plant.changes  # one signal for the whole board

                self.sim.wiring = GpioWiring(self.sim.plant, self.pin_factory, self.clock)
        if buses.spi is not None and self.sim is not None:
            from hal.sim.spi import SimSpiBus

            self.sim.spi = SimSpiBus()
            self.spi_factory = self.sim.spi.factory
        if buses.can is not None:
            channel = buses.can.channel
            if self.sim is not None:
                # Each simulated board gets its own virtual channel so that two boards open in one
                # process (tests, the demo) never hear each other's frames.
                channel = f"{channel}-{next(_sim_can_channels)}"
                self._attach_converter_sim(channel)
            self.can_bus = open_can(buses.can.interface, channel, buses.can.bitrate)
            self.closers.append(self.can_bus.shutdown)
        if buses.serial is not None:
            port = buses.serial.port
            if self.sim is not None:
                from hal.sim.coprocessor import CoprocessorSim

                self.sim.coprocessor, port = CoprocessorSim.open_pty(self.sim.plant)
                self.closers.append(self.sim.coprocessor.close)
            serial_port = open_serial(port, buses.serial.baudrate, timeout=0.05)
            self.closers.append(serial_port.close)
            self.mcu = McuLink(serial_port, name=f"co-processor on {buses.serial.port}", clock=self.clock)
            await self.mcu.start()
            self.closers.append(self.mcu.stop)

    def _attach_converter_sim(self, channel: str) -> None:
        from hal.sim.infy_module import InfyModuleSim

        conv = self.cfg.converter
        assert conv is not None and self.sim is not None
        self.sim.converter = InfyModuleSim(
            channel,
            clock=self.clock,
            address=conv.module_address,
            min_voltage_v=conv.min_voltage_v,
            max_voltage_v=conv.max_voltage_v,
            max_current_a=conv.max_current_a,
            rated_power_w=conv.max_power_w,
        )
        self.closers.append(self.sim.converter.close)

    # ------------------------------------------------------------------ ADC
    def _adc(self) -> Mcp3x0x:
        if self.adc is None:
            adc = self.cfg.adc
            assert adc is not None
            if self.sim is not None:
                from hal.sim.mcp3x0x import Mcp3x0xSim

                self.sim.spi.attach(
                    adc.spi_bus,
                    adc.spi_device,
                    Mcp3x0xSim(adc.chip, vref_v=adc.vref_v, changes=self.sim.plant.changes),
                )
            spi = open_spi(adc.spi_bus, adc.spi_device, max_speed_hz=adc.max_speed_hz, factory=self.spi_factory)
            self.closers.append(spi.close)
            self.adc = Mcp3x0x(
                spi, chip=adc.chip, vref_v=adc.vref_v, name=f"{adc.chip} on SPI{adc.spi_bus}.{adc.spi_device}"
            )
        return self.adc

    def _sim_channel(self, channel: int, source: Callable[[], float]) -> None:
        self._adc()  # attaches the simulated chip on first use
        if self.sim is not None:
            adc = self.cfg.adc
            assert adc is not None
            self.sim.spi.chip(adc.spi_bus, adc.spi_device).set_channel(channel, source)

    # ------------------------------------------------------------------ functions
    def pilot(self) -> tuple[PilotOutput, PilotSense]:
        cfg = self.cfg
        out: PilotOutput
        if isinstance(cfg.pilot, GpioPwmPilot):
            gpio_out = GpioPilotOutput(
                "pilot", pwm_pin=cfg.pilot.pwm_pin, e_pin=cfg.pilot.e_pin, pin_factory=self.pin_factory
            )
            self.closers.append(gpio_out.close)
            out = gpio_out
            if self.sim is not None:
                self.sim.wiring.pilot(pwm_pin=cfg.pilot.pwm_pin, e_pin=cfg.pilot.e_pin)
        else:
            assert self.mcu is not None
            mcu_out = McuPilotOutput(self.mcu)
            self.closers.append(mcu_out.set_f)
            out = mcu_out
        if isinstance(cfg.pilot_sense, AdcPilotSense):
            s = cfg.pilot_sense
            if self.sim is not None:
                from hal.sim.analog import cp_channel

                self._sim_channel(s.channel, cp_channel(self.sim.plant, gain=s.gain, offset_v=s.offset_v))
            sense: PilotSense = AdcPilotSenseDriver(
                self._adc(), s.channel, gain=s.gain, offset_v=s.offset_v, samples=s.samples
            )
        else:
            assert self.mcu is not None
            sense = McuPilotSense(self.mcu)
        return out, sense

    def proximity(self) -> ProximityPilot:
        pp = self.cfg.proximity
        if isinstance(pp, FixedCable):
            return FixedCableProximity(rating_a=pp.cable_rating_a)
        if isinstance(pp, CoprocessorProximity):
            assert self.mcu is not None
            return McuProximity(self.mcu, coding=pp.coding, single_phase=self.cfg.ratings.phases == 1)
        assert isinstance(pp, AdcProximity)
        adc = self._adc()
        if self.sim is not None:
            from hal.sim.analog import pp_channel

            self._sim_channel(
                pp.channel, pp_channel(self.sim.plant, pullup_ohm=pp.pullup_ohm, pullup_v=adc_vref(self.cfg))
            )
        return AdcProximityPilot(
            adc, pp.channel, pullup_ohm=pp.pullup_ohm, connector=pp.coding, single_phase=self.cfg.ratings.phases == 1
        )

    def contactor(self) -> Contactor:
        c = self.cfg.contactor
        if isinstance(c, GpioContactor):
            drv = GpioContactorDriver(
                "contactor",
                coil_pin=c.coil_pin,
                mirror_pin=c.mirror_pin,
                mirror_active_high=c.mirror_active_high,
                pin_factory=self.pin_factory,
            )
            self.closers.append(drv.release)
            self.closers.append(drv.open)  # runs before release: open first, then free the pins
            if self.sim is not None:
                self.sim.wiring.contactor(
                    coil_pin=c.coil_pin, mirror_pin=c.mirror_pin, mirror_active_high=c.mirror_active_high
                )
            return drv
        assert self.mcu is not None
        mcu_contactor = McuContactor(self.mcu)
        self.closers.append(mcu_contactor.open)
        return mcu_contactor

    def phase_switch(self) -> PhaseSwitch | None:
        ps = self.cfg.phase_switch
        if ps is None:
            return None
        drv = GpioPhaseSwitch(
            "phase switch",
            coil_pin=ps.coil_pin,
            mirror_pin=ps.mirror_pin,
            mirror_active_high=ps.mirror_active_high,
            pin_factory=self.pin_factory,
        )
        self.closers.append(drv.release)  # released = one phase, the state with no supply
        if self.sim is not None:
            self.sim.wiring.phase_switch(
                coil_pin=ps.coil_pin, mirror_pin=ps.mirror_pin, mirror_active_high=ps.mirror_active_high
            )
        return drv

    def lock(self) -> ConnectorLock | None:
        lk = self.cfg.lock
        if lk is None:
            return None
        if isinstance(lk, GpioLock):
            drv = GpioConnectorLock(
                "connector lock",
                lock_pin=lk.lock_pin,
                unlock_pin=lk.unlock_pin,
                pulse_s=lk.pulse_s,
                feedback_pin=lk.feedback_pin,
                feedback_active_high=lk.feedback_active_high,
                pin_factory=self.pin_factory,
                clock=self.clock,
            )
            self.closers.append(drv.release)
            if self.sim is not None:
                self.sim.wiring.lock(
                    lock_pin=lk.lock_pin,
                    unlock_pin=lk.unlock_pin,
                    feedback_pin=lk.feedback_pin,
                    feedback_active_high=lk.feedback_active_high,
                )
            return drv
        assert self.mcu is not None
        return McuConnectorLock(self.mcu)

    def rcd(self) -> ResidualCurrentMonitor:
        r = self.cfg.rcd
        if isinstance(r, GpioRcd):
            drv = GpioResidualCurrentMonitor(
                "rcd",
                trip_pin=r.trip_pin,
                trip_active_high=r.trip_active_high,
                test_pin=r.test_pin,
                trip_timeout_s=r.trip_timeout_s,
                clear_timeout_s=r.clear_timeout_s,
                pin_factory=self.pin_factory,
                clock=self.clock,
            )
            self.closers.append(drv.release)
            if self.sim is not None:
                self.sim.wiring.rcd(trip_pin=r.trip_pin, trip_active_high=r.trip_active_high, test_pin=r.test_pin)
            return drv
        assert self.mcu is not None
        return McuResidualCurrentMonitor(self.mcu)

    def temperatures(self) -> list[TemperatureSensor]:
        sensors: list[TemperatureSensor] = []
        for t in self.cfg.temperature:
            adc = self._adc()
            if self.sim is not None:
                from hal.sim.analog import ntc_channel

                self.sim.plant.temperatures_c.setdefault(t.name, 25.0)
                self._sim_channel(
                    t.channel,
                    ntc_channel(
                        self.sim.plant,
                        t.name,
                        r25_ohm=t.r25_ohm,
                        beta=t.beta,
                        pullup_ohm=t.pullup_ohm,
                        pullup_v=adc_vref(self.cfg),
                    ),
                )
            sensors.append(
                NtcTemperature(adc, t.channel, name=t.name, r25_ohm=t.r25_ohm, beta=t.beta, pullup_ohm=t.pullup_ohm)
            )
        return sensors

    async def meter(self) -> Meter | None:
        m = self.cfg.meter
        if m is None:
            return None
        if isinstance(m, Sdm630Config):
            return await self._sdm630_meter(m)
        return await self._atm90e32_meter(m)

    async def _atm90e32_meter(self, m: Atm90e32Config) -> Meter:
        calibration = Atm90e32Calibration(
            ugain=tuple(p.ugain for p in m.phases),
            igain=tuple(p.igain for p in m.phases),
            line_frequency_hz=self.cfg.ratings.grid_frequency_hz,
            pga_gain=m.pga_gain,
            pl_constant=m.pl_constant,
            three_wire=m.three_wire,
            max_voltage_v=m.max_voltage_v,
            max_current_a=m.max_current_a,
        )
        if self.sim is not None:
            from hal.sim.atm90e32 import Atm90e32Sim

            pad = 3 - len(m.phases)
            self.sim.meter = Atm90e32Sim(
                clock=self.clock,
                plant=self.sim.plant,
                ugain=[*calibration.ugain, *([calibration.ugain[0]] * pad)],
                igain=[*calibration.igain, *([calibration.igain[0]] * pad)],
                pga_gain=m.pga_gain,
            )
            self.sim.spi.attach(m.spi_bus, m.spi_device, self.sim.meter)
        spi = open_spi(
            m.spi_bus,
            m.spi_device,
            max_speed_hz=ATM90E32_MAX_SPEED_HZ,
            mode=ATM90E32_SPI_MODE,
            factory=self.spi_factory,
        )
        self.closers.append(spi.close)
        meter = Atm90e32Meter(
            spi,
            name=f"ATM90E32 on SPI{m.spi_bus}.{m.spi_device}",
            phases=self.cfg.ratings.phases,
            calibration=calibration,
            clock=self.clock,
            initial_import_wh=self.meter_totals_wh[0],
            initial_export_wh=self.meter_totals_wh[1],
        )
        await meter.init()
        return meter

    async def _sdm630_meter(self, m: Sdm630Config) -> Meter:
        port = m.port
        if self.sim is not None:
            from hal.sim.sdm630 import Sdm630Sim

            # Its own pty, as the RFID reader has: the driver opens the slave like /dev/ttyUSB0, through
            # pymodbus, and the simulator answers from the plant.
            self.sim.meter, port = Sdm630Sim.open_pty(clock=self.clock, plant=self.sim.plant, unit=m.unit)
            self.closers.append(self.sim.meter.close)
        meter = Sdm630Meter(
            port,
            name=f"SDM630 on {m.port}",
            phases=self.cfg.ratings.phases,
            settings=Sdm630Settings(
                baudrate=m.baudrate,
                parity=m.parity,
                stopbits=m.stopbits,
                unit=m.unit,
                timeout_s=m.timeout_s,
                reverse=m.reverse,
                max_voltage_v=m.max_voltage_v,
                max_current_a=m.max_current_a,
            ),
        )
        self.closers.append(meter.close)  # runs before the simulator closes; also after a failed init
        await meter.init()
        return meter

    async def converter(self) -> PowerConverter | None:
        c = self.cfg.converter
        if c is None:
            return None
        drv = InfyBidiConverter(
            self.can_bus,
            name=f"Infy module {c.module_address:#04x}",
            module_address=c.module_address,
            capabilities=ConverterCapabilities(
                max_voltage_v=c.max_voltage_v,
                min_voltage_v=c.min_voltage_v,
                max_current_a=c.max_current_a,
                max_power_w=c.max_power_w,
                bidirectional=c.bidirectional,
            ),
            clock=self.clock,
        )
        await drv.start()

        async def off_then_stop() -> None:
            # Output off before the keep-alive stops; if the module cannot be reached its own
            # 10 s watchdog switches it off (standards-facts.md 6.1).
            with contextlib.suppress(HalError):
                await drv.set_mode(ConverterMode.OFF)
            await drv.stop()

        self.closers.append(off_then_stop)
        return drv

    def imd(self) -> InsulationMonitor | None:
        i = self.cfg.imd
        if i is None:
            return None
        drv = GpioInsulationMonitor(
            "imd",
            alarm_pin=i.alarm_pin,
            alarm_active_high=i.alarm_active_high,
            prealarm_pin=i.prealarm_pin,
            test_pin=i.test_pin,
            alarm_timeout_s=i.self_test_timeout_s,
            pin_factory=self.pin_factory,
            clock=self.clock,
        )
        self.closers.append(drv.release)
        if self.sim is not None:
            self.sim.wiring.imd(
                alarm_pin=i.alarm_pin,
                alarm_active_high=i.alarm_active_high,
                prealarm_pin=i.prealarm_pin,
                test_pin=i.test_pin,
            )
        return drv

    def indicator(self) -> Indicator | None:
        ind = self.cfg.indicator
        if ind is None:
            return None
        drv = GpioIndicator.rgb(
            "indicator",
            red_pin=ind.red_pin,
            green_pin=ind.green_pin,
            blue_pin=ind.blue_pin,
            pin_factory=self.pin_factory,
        )
        self.closers.append(drv.release)
        return drv

    def id_reader(self) -> IdReader | None:
        r = self.cfg.rfid
        if r is None:
            return None
        port = r.port
        if self.sim is not None:
            from hal.sim.rdm6300 import Rdm6300Sim

            # Its own pty, as the co-processor has: the driver opens the slave like /dev/serial0.
            self.sim.rfid, port = Rdm6300Sim.open_pty(clock=self.clock)
            self.closers.append(self.sim.rfid.close)
        serial_port = open_serial(port, r.baudrate, timeout=RDM6300_READ_TIMEOUT_S)
        self.closers.append(serial_port.close)
        reader = Rdm6300Reader(
            serial_port, name=f"RDM6300 on {r.port}", clock=self.clock, repeat_after_s=r.repeat_after_s
        )
        self.closers.append(reader.close)  # runs before the port closes: the reader thread ends first
        return reader


def adc_vref(cfg: BoardConfig) -> float:
    assert cfg.adc is not None
    return cfg.adc.vref_v


def _plant_for(cfg: BoardConfig) -> Plant:
    phases = cfg.ratings.phases
    v = cfg.ratings.nominal_voltage_v if cfg.ratings.supply == "ac" else 230.0
    return Plant(
        phases=phases,
        grid_voltage_v=[v] * phases,
        grid_frequency_hz=float(cfg.ratings.grid_frequency_hz),
        ev_current_a=[0.0] * phases,
    )


async def open_board(
    cfg: BoardConfig, clock: Clock | None = None, *, meter_totals_wh: tuple[float, float] = (0.0, 0.0)
) -> BoardHal:
    """Open every bus and driver of ``cfg``. On failure, whatever was opened is closed again.

    ``meter_totals_wh`` (import, export) resumes the meter's host-side energy totals from the journal
    (ATM90E32, whose energy registers clear on read; a Modbus meter such as the SDM630 keeps its own).
    """
    b = _Builder(cfg, clock or RealClock())
    b.meter_totals_wh = meter_totals_wh
    try:
        await b.open_buses()
        pilot, sense = b.pilot()
        hal = BoardHal(
            config=cfg,
            clock=b.clock,
            pilot=pilot,
            pilot_sense=sense,
            proximity=b.proximity(),
            contactor=b.contactor(),
            rcd=b.rcd(),
            lock=b.lock(),
            phase_switch=b.phase_switch(),
            temperatures=b.temperatures(),
            meter=await b.meter(),
            converter=await b.converter(),
            imd=b.imd(),
            indicator=b.indicator(),
            id_reader=b.id_reader(),
            mcu=b.mcu,
            sim=b.sim,
            # A co-processor's readings arrive over its serial link, which tells nobody: poll those.
            changes=b.sim.plant.changes if b.sim is not None and b.sim.coprocessor is None else None,
            _closers=b.closers,
        )
    except BaseException:
        await _run_closers(b.closers, cfg.board.name)
        raise
    if b.sim is not None and b.sim.wiring is not None:
        b.sim.wiring.update()
        task = asyncio.create_task(b.sim.wiring.run(0.005, changes=b.sim.plant.changes))
        b.sim.tasks.append(task)

        async def cancel() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        b.closers.append(cancel)
    return hal
