"""The board file format (``format = 1``): which driver serves which function, with which pins,
buses, ratings and calibration.

A board is one TOML file. Every table is validated here; cross-field rules (pin clashes, a driver
whose bus is missing, a real board without an external hardware trip) are checked by
:class:`BoardConfig`'s validators so that a wrong file is rejected at load time with a message that
names the field, the value and what is allowed, never at the first charging session.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidatorFunctionWrapHandler, field_validator, model_validator
from pydantic_core import PydanticCustomError

# Raspberry Pi hardware PWM channels are on BCM 12/18 (PWM0) and 13/19 (PWM1); a software PWM
# pilot would jitter far beyond the 980-1020 Hz window of IEC 61851-1 (standards-facts.md 1.3).
HARDWARE_PWM_PINS = (12, 13, 18, 19)
BCM_PINS = range(0, 28)
# IEC 61851-1 / SAE J1772: 6 A is the lowest current a PWM duty can offer, 80 A the highest
# (standards-facts.md 1.4).
AC_MIN_CURRENT_A = 6.0
AC_MAX_CURRENT_A = 80.0

Pin = Annotated[int, Field(ge=min(BCM_PINS), le=max(BCM_PINS), description="BCM GPIO number")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- board, ratings, safety
class BoardInfo(_Model):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str
    simulated: bool


class Ratings(_Model):
    supply: Literal["ac", "dc"]
    max_current_a: float = Field(gt=0)
    phases: Literal[1, 3]
    connector: Literal["type2-socket", "type2-cable", "type1-cable", "ccs2", "ccs1"]
    nominal_voltage_v: float = Field(gt=0, le=1000)
    grid_frequency_hz: Literal[50, 60]
    max_power_w: float | None = Field(default=None, gt=0)


class Safety(_Model):
    realtime: Literal["pi-gpio", "coprocessor"] = Field(
        description="who drives the pilot PWM and the contactor: Pi GPIO directly, or the co-processor"
    )
    external_hardware_trip: bool = Field(
        description="a hardware circuit opens the contactor on RCD trip / overcurrent without software"
    )
    ventilation_available: bool = Field(
        default=False,
        description="the site ventilates charging (indoor, for EVs that ask with pilot state D, IEC 61851-1)",
    )


# ----------------------------------------------------------------------------- buses
class GpioBus(_Model):
    factory: Literal["lgpio", "mock"]
    chip: int = Field(default=0, ge=0, le=16)


class SpiBus(_Model):
    backend: Literal["spidev", "sim"]


class CanBus(_Model):
    interface: Literal["socketcan", "virtual"]
    channel: str = Field(min_length=1)
    bitrate: Literal[125000, 250000, 500000]


class SerialLink(_Model):
    port: str = Field(min_length=1, description="device path, or 'sim' for the simulated co-processor")
    baudrate: Literal[57600, 115200, 230400, 460800, 921600] = 115200


class Buses(_Model):
    gpio: GpioBus | None = None
    spi: SpiBus | None = None
    can: CanBus | None = None
    serial: SerialLink | None = None


# ----------------------------------------------------------------------------- ADC
class Adc(_Model):
    chip: Literal["mcp3202", "mcp3008"]
    spi_bus: int = Field(ge=0, le=6)
    spi_device: int = Field(ge=0, le=3)
    vref_v: float = Field(gt=0, le=5.5)
    max_speed_hz: int = Field(default=1_000_000, ge=10_000, le=3_600_000)

    @property
    def channels(self) -> int:
        return 2 if self.chip == "mcp3202" else 8


# ----------------------------------------------------------------------------- functions
class GpioPwmPilot(_Model):
    driver: Literal["gpio-pwm"]
    pwm_pin: Pin
    # The SoC's hardware PWM block behind pwm_pin, as /sys/class/pwm/pwmchip<pwm_chip>/pwm<pwm_channel>
    # (docs/hardware-pwm.md). Required on real boards: lgpio's own PWM is software-timed with 1 %
    # steps, too coarse and jittery for the pilot (0.1 % = 0.06 A, IEC 61851-1 Table A.7).
    pwm_chip: int | None = Field(default=None, ge=0, le=16)
    pwm_channel: int | None = Field(default=None, ge=0, le=3)
    e_pin: Pin | None = None

    @field_validator("pwm_pin")
    @classmethod
    def _hardware_pwm(cls, pin: int) -> int:
        if pin not in HARDWARE_PWM_PINS:
            raise ValueError(f"this pin has no hardware PWM; allowed: {', '.join(map(str, HARDWARE_PWM_PINS))}")
        return pin


class CoprocessorFunction(_Model):
    driver: Literal["coprocessor"]


class AdcPilotSense(_Model):
    driver: Literal["adc"]
    channel: int = Field(ge=0, le=7)
    gain: float = Field(gt=0, description="pilot volts per ADC volt")
    offset_v: float = Field(description="pilot volts at 0 V on the ADC pin")
    samples: int = Field(default=100, ge=10, le=1000)


class AdcProximity(_Model):
    driver: Literal["adc"]
    channel: int = Field(ge=0, le=7)
    pullup_ohm: float = Field(gt=0)
    coding: Literal["type2", "type1"]


class CoprocessorProximity(_Model):
    """PP read by the safety co-processor (its capability PP), decoded by the Pi."""

    driver: Literal["coprocessor"]
    coding: Literal["type2", "type1"]


class FixedCable(_Model):
    driver: Literal["fixed-cable"]
    cable_rating_a: float = Field(gt=0)


class GpioContactor(_Model):
    driver: Literal["gpio"]
    coil_pin: Pin
    mirror_pin: Pin | None = None
    mirror_active_high: bool = True


class GpioPhaseSwitch(_Model):
    """A second contactor ("C2") in L2 and L3: energised = three phases, released = L1 only."""

    driver: Literal["gpio"]
    coil_pin: Pin
    mirror_pin: Pin | None = None
    mirror_active_high: bool = True
    # How long the EV is kept paused after the switch before power is offered again: its onboard
    # charger must see the new phase set with no current flowing (EVerest's EvseManager has the same
    # kind of delay, switch_3ph1ph_delay_s; SmartEVSE waits as well before re-enabling the pilot).
    settle_s: float = Field(default=10.0, ge=1.0, le=60.0)


class GpioLock(_Model):
    driver: Literal["gpio"]
    kind: Literal["motor", "solenoid"]
    lock_pin: Pin
    unlock_pin: Pin | None = None
    feedback_pin: Pin | None = None
    feedback_active_high: bool = True
    pulse_s: float = Field(default=0.5, gt=0, le=4.0)  # lock actuators need 0.4-0.6 s pulses

    @model_validator(mode="after")
    def _motor_needs_two_pins(self) -> GpioLock:
        if self.kind == "motor" and self.unlock_pin is None:
            raise ValueError("a motor lock needs unlock_pin (it is driven in both directions)")
        if self.kind == "solenoid" and self.unlock_pin is not None:
            raise ValueError("a solenoid lock has one coil: remove unlock_pin")
        return self


class GpioRcd(_Model):
    driver: Literal["gpio"]
    trip_pin: Pin
    test_pin: Pin
    trip_active_high: bool = True
    # Defaults from the RDC-DD timing in hal.drivers.gpio_io (6 mA DC sensor: trips about 0.74 s
    # after the test pulse, clears about 2.1 s later).
    trip_timeout_s: float = Field(default=1.0, gt=0, le=5)
    clear_timeout_s: float = Field(default=2.5, gt=0, le=10)


class NtcTemperature(_Model):
    name: str = Field(pattern=r"^[a-z0-9_-]+$")
    driver: Literal["ntc-adc"]
    channel: int = Field(ge=0, le=7)
    r25_ohm: float = Field(gt=0)
    beta: float = Field(gt=1000, lt=10000)
    pullup_ohm: float = Field(gt=0)
    # Staged derating (OpenEVSE, anchors.md 3): half current from derate_from_c, a quarter half-way
    # to trip_c, stop at trip_c.
    derate_from_c: float = Field(default=65.0)
    trip_c: float = Field(default=71.0)

    @model_validator(mode="after")
    def _order(self) -> NtcTemperature:
        if self.trip_c <= self.derate_from_c:
            raise ValueError(f"trip_c ({self.trip_c}) must be above derate_from_c ({self.derate_from_c})")
        return self


class Atm90e32Phase(_Model):
    ugain: int = Field(ge=1, le=0xFFFF)
    igain: int = Field(ge=1, le=0xFFFF)


class Atm90e32Config(_Model):
    driver: Literal["atm90e32"]
    spi_bus: int = Field(ge=0, le=6)
    spi_device: int = Field(ge=0, le=3)
    pga_gain: Literal[1, 2, 4] = Field(default=2, description="current-channel PGA, written to MMode1")
    pl_constant: int = Field(default=140625000, gt=0, le=0xFFFFFFFF)
    three_wire: bool = False
    # Highest RMS values the board's divider and CTs can present; above them a reading is garbage.
    max_voltage_v: float = Field(default=600.0, gt=0, le=655.35)
    max_current_a: float = Field(default=65.0, gt=0, le=65.535)
    phases: list[Atm90e32Phase] = Field(min_length=1, max_length=3)


class Sdm630Config(_Model):
    """An Eastron SDM630-class Modbus RTU meter on a serial line (RS-485), hal/drivers/sdm630.py."""

    driver: Literal["sdm630"]
    port: str = Field(min_length=1, description="serial device path (an RS-485 adapter), or 'sim' for the simulator")
    # The meter's own settings must match: 9600 Bd, no parity, 1 stop bit and unit 1 as delivered
    # (SDM630 holding registers "baud rate", "parity/stop", "address"; see the driver).
    baudrate: Literal[2400, 4800, 9600, 19200, 38400] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    unit: int = Field(default=1, ge=1, le=247, description="Modbus slave address of the meter")
    timeout_s: float = Field(default=0.5, gt=0, le=5, description="answer deadline per request")
    reverse: bool = Field(default=False, description="meter mounted the other way round: its import is from the EV")
    # Highest values the installation can see (a direct SDM630 is rated 100 A); above them a reading is garbage.
    max_voltage_v: float = Field(default=300.0, gt=0, le=1000)
    max_current_a: float = Field(default=100.0, gt=0, le=10000)


#: Meter drivers by their ``driver`` value.
METER_DRIVERS: dict[str, type[BaseModel]] = {"atm90e32": Atm90e32Config, "sdm630": Sdm630Config}
MeterConfig = Atm90e32Config | Sdm630Config


class InfyConverter(_Model):
    driver: Literal["infy-beg1k075g"]
    module_address: int = Field(ge=0, le=0x3E)
    max_voltage_v: float = Field(gt=0, le=1000)
    min_voltage_v: float = Field(ge=0)
    max_current_a: float = Field(gt=0, le=500)
    max_power_w: float = Field(gt=0)
    bidirectional: bool

    @model_validator(mode="after")
    def _voltage_order(self) -> InfyConverter:
        if self.min_voltage_v >= self.max_voltage_v:
            raise ValueError(f"min_voltage_v ({self.min_voltage_v}) must be below max_voltage_v ({self.max_voltage_v})")
        return self


class GpioImd(_Model):
    driver: Literal["gpio-contacts"]
    alarm_pin: Pin
    prealarm_pin: Pin | None = None
    test_pin: Pin
    alarm_active_high: bool = True
    self_test_timeout_s: float = Field(default=25.0, gt=0, le=120)


class GpioIndicator(_Model):
    driver: Literal["gpio-rgb"]
    red_pin: Pin
    green_pin: Pin
    blue_pin: Pin


class Rdm6300Rfid(_Model):
    driver: Literal["rdm6300"]
    port: str = Field(min_length=1, description="UART device path, or 'sim' for the simulated reader")
    baudrate: Literal[9600] = Field(default=9600, description="the RDM6300 / RDM630 sends at 9600 Bd only")
    rx_pin: Pin | None = Field(
        default=None, description="BCM GPIO of the UART's RXD the reader's TX is wired to (checked for clashes)"
    )
    connector: int = Field(default=1, ge=1, description="the connector a card presented here authorises")
    # Modules repeat a held card's frame every 50-100 ms; a card away this long is a new swipe.
    repeat_after_s: float = Field(default=2.0, ge=0, le=60)


PilotConfig = Annotated[GpioPwmPilot | CoprocessorFunction, Field(discriminator="driver")]
PilotSenseConfig = Annotated[AdcPilotSense | CoprocessorFunction, Field(discriminator="driver")]
ProximityConfig = Annotated[AdcProximity | FixedCable | CoprocessorProximity, Field(discriminator="driver")]
ContactorConfig = Annotated[GpioContactor | CoprocessorFunction, Field(discriminator="driver")]
LockConfig = Annotated[GpioLock | CoprocessorFunction, Field(discriminator="driver")]
RcdConfig = Annotated[GpioRcd | CoprocessorFunction, Field(discriminator="driver")]


# ----------------------------------------------------------------------------- the whole board
class BoardConfig(_Model):
    format: Literal[1]
    board: BoardInfo
    ratings: Ratings
    safety: Safety
    buses: Buses
    adc: Adc | None = None
    pilot: PilotConfig
    pilot_sense: PilotSenseConfig
    proximity: ProximityConfig
    contactor: ContactorConfig
    lock: LockConfig | None = None
    phase_switch: GpioPhaseSwitch | None = None
    rcd: RcdConfig
    temperature: list[NtcTemperature] = Field(default_factory=list)
    meter: MeterConfig | None = None
    converter: InfyConverter | None = None
    imd: GpioImd | None = None
    indicator: GpioIndicator | None = None
    rfid: Rdm6300Rfid | None = None

    @field_validator("meter", mode="wrap")
    @classmethod
    def _meter_by_driver(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Pick the meter model by ``driver``, as ``Field(discriminator="driver")`` would, but keep the
        driver name out of error paths (``meter.spi_device``, not ``meter.atm90e32.spi_device``: the
        loader strips only the tags it knows from a path)."""
        if isinstance(value, dict):
            if "driver" not in value:
                raise PydanticCustomError(
                    "union_tag_not_found",
                    "Unable to extract tag using discriminator 'driver'",
                    {"discriminator": "'driver'"},
                )
            model = METER_DRIVERS.get(value["driver"]) if isinstance(value["driver"], str) else None
            if model is None:
                expected = ", ".join(repr(k) for k in METER_DRIVERS)
                raise PydanticCustomError(
                    "union_tag_invalid",
                    "Input tag {tag} found using 'driver' does not match any of the expected tags: {expected_tags}",
                    {"discriminator": "'driver'", "tag": value["driver"], "expected_tags": expected},
                )
            return model.model_validate(value)
        if value is None or isinstance(value, Atm90e32Config | Sdm630Config):
            return handler(value)
        raise PydanticCustomError("model_type", "must be a table with driver = 'atm90e32' or 'sdm630'")

    # ------------------------------------------------------------------ cross-field rules
    @model_validator(mode="after")
    def _cross_checks(self) -> BoardConfig:
        self._check_realtime()
        self._check_buses()
        self._check_supply()
        self._check_pins()
        self._check_adc_channels()
        self._check_spi_devices()
        self._check_rfid()
        self._check_serial_ports()
        return self

    def _functions(self) -> dict[str, BaseModel]:
        named: dict[str, BaseModel | None] = {
            "pilot": self.pilot,
            "pilot_sense": self.pilot_sense,
            "proximity": self.proximity,
            "contactor": self.contactor,
            "lock": self.lock,
            "phase_switch": self.phase_switch,
            "rcd": self.rcd,
            "meter": self.meter,
            "converter": self.converter,
            "imd": self.imd,
            "indicator": self.indicator,
            "rfid": self.rfid,
        }
        for i, t in enumerate(self.temperature):
            named[f"temperature[{i}]"] = t
        return {k: v for k, v in named.items() if v is not None}

    def _check_buses(self) -> None:
        needs: dict[str, str] = {}
        for fname, cfg in self._functions().items():
            driver = getattr(cfg, "driver", "")
            if driver in ("gpio", "gpio-pwm", "gpio-contacts", "gpio-rgb"):
                needs.setdefault("gpio", fname)
            elif driver == "coprocessor":
                needs.setdefault("serial", fname)
            elif driver in ("adc", "ntc-adc"):
                needs.setdefault("spi", fname)
                if self.adc is None:
                    raise ValueError(f"{fname}.driver = {driver!r} needs an [adc] table")
            elif driver == "atm90e32":
                needs.setdefault("spi", fname)
            elif driver == "infy-beg1k075g":
                needs.setdefault("can", fname)
        for bus, fname in needs.items():
            if getattr(self.buses, bus) is None:
                raise ValueError(f"{fname} uses a {bus} driver but [buses.{bus}] is missing")
        sim_backends = {
            "gpio": ("factory", "mock"),
            "spi": ("backend", "sim"),
            "can": ("interface", "virtual"),
            "serial": ("port", "sim"),
        }
        for bus, (field, sim_value) in sim_backends.items():
            cfg = getattr(self.buses, bus)
            if cfg is None:
                continue
            is_sim = getattr(cfg, field) == sim_value
            if self.board.simulated and not is_sim:
                raise ValueError(
                    f"board.simulated = true but buses.{bus}.{field} = {getattr(cfg, field)!r}; "
                    f"a simulated board must use {sim_value!r}"
                )
            if not self.board.simulated and is_sim:
                raise ValueError(f"buses.{bus}.{field} = {sim_value!r} is only allowed with board.simulated = true")

    def _check_realtime(self) -> None:
        on_mcu = self.pilot.driver == "coprocessor"
        if on_mcu != (self.contactor.driver == "coprocessor"):
            raise ValueError(
                "pilot and contactor must be driven by the same part (both 'coprocessor' or neither): "
                "the co-processor can only enforce the pilot/contactor interlock if it owns both"
            )
        expected = "coprocessor" if on_mcu else "pi-gpio"
        if self.safety.realtime != expected:
            raise ValueError(
                f"safety.realtime = {self.safety.realtime!r} but pilot.driver = {self.pilot.driver!r}; "
                f"it must be {expected!r}"
            )
        if (
            isinstance(self.pilot, GpioPwmPilot)
            and not self.board.simulated
            and (self.pilot.pwm_chip is None or self.pilot.pwm_channel is None)
        ):
            raise ValueError(
                "pilot.pwm_chip and pilot.pwm_channel are required on a real board: the pilot must come "
                "from the hardware PWM block (software PWM has 1 % steps and jitter); see docs/hardware-pwm.md"
            )
        if expected == "pi-gpio" and not self.board.simulated and not self.safety.external_hardware_trip:
            raise ValueError(
                "safety.external_hardware_trip must be true on a real board whose pilot and contactor "
                "are driven from Pi GPIO: Linux cannot guarantee the contactor opens in time on an RCD "
                "trip, so a hardware circuit must do it"
            )

    def _check_supply(self) -> None:
        r = self.ratings
        if r.supply == "ac":
            if not AC_MIN_CURRENT_A <= r.max_current_a <= AC_MAX_CURRENT_A:
                raise ValueError(
                    f"ratings.max_current_a = {r.max_current_a} is outside "
                    f"{AC_MIN_CURRENT_A:g}..{AC_MAX_CURRENT_A:g} A, the range a PWM duty can offer (IEC 61851-1)"
                )
            if r.connector in ("ccs1", "ccs2"):
                raise ValueError(f"ratings.connector = {r.connector!r} is a DC connector; AC boards use type1/type2")
            if self.converter is not None:
                raise ValueError("[converter] is for DC boards (ratings.supply = 'dc')")
            if self.meter is None:
                raise ValueError("an AC board needs a [meter] (energy must be measured for billing)")
            if self.phase_switch is not None and r.phases != 3:
                raise ValueError("[phase_switch] selects between 1 and 3 phases: it needs ratings.phases = 3")
            if isinstance(self.meter, Atm90e32Config) and len(self.meter.phases) != r.phases:
                raise ValueError(
                    f"meter.phases has {len(self.meter.phases)} calibration entries but ratings.phases = {r.phases}"
                )
        else:
            if r.connector not in ("ccs1", "ccs2"):
                raise ValueError(f"ratings.connector = {r.connector!r} is not a DC connector; allowed: 'ccs1', 'ccs2'")
            if self.converter is None:
                raise ValueError("a DC board (ratings.supply = 'dc') needs a [converter]")
            if self.phase_switch is not None:
                raise ValueError("[phase_switch] is for AC boards (ratings.supply = 'ac')")
            if self.imd is None:
                raise ValueError("a DC board needs an insulation monitor [imd] (IEC 61851-23 cable check)")
            if r.max_current_a > self.converter.max_current_a:
                raise ValueError(
                    f"ratings.max_current_a = {r.max_current_a} exceeds converter.max_current_a = "
                    f"{self.converter.max_current_a}"
                )

    def _check_pins(self) -> None:
        owner: dict[int, str] = {}
        for fname, cfg in self._functions().items():
            for field_name, value in cfg:  # pydantic models iterate as (name, value)
                if not field_name.endswith("_pin") or value is None:
                    continue
                where = f"{fname}.{field_name}"
                if value in owner:
                    raise ValueError(f"GPIO {value} is used twice: {owner[value]} and {where}")
                owner[value] = where

    def _check_adc_channels(self) -> None:
        if self.adc is None:
            return
        owner: dict[int, str] = {}
        for fname, cfg in self._functions().items():
            if getattr(cfg, "driver", None) not in ("adc", "ntc-adc"):
                continue
            ch = cfg.channel  # type: ignore[attr-defined]
            if ch >= self.adc.channels:
                raise ValueError(
                    f"{fname}.channel = {ch} but adc.chip = {self.adc.chip!r} has channels 0..{self.adc.channels - 1}"
                )
            if ch in owner:
                raise ValueError(f"ADC channel {ch} is used twice: {owner[ch]} and {fname}")
            owner[ch] = fname

    def _check_spi_devices(self) -> None:
        seen: dict[tuple[int, int], str] = {}
        meter = self.meter if isinstance(self.meter, Atm90e32Config) else None
        for fname, cfg in (("adc", self.adc), ("meter", meter)):
            if cfg is None:
                continue
            key = (cfg.spi_bus, cfg.spi_device)
            if key in seen:
                raise ValueError(f"SPI bus {key[0]} device {key[1]} is used twice: {seen[key]} and {fname}")
            seen[key] = fname

    def _check_rfid(self) -> None:
        r = self.rfid
        if r is None:
            return
        is_sim = r.port == "sim"
        if self.board.simulated and not is_sim:
            raise ValueError(f"board.simulated = true but rfid.port = {r.port!r}; a simulated board must use 'sim'")
        if not self.board.simulated and is_sim:
            raise ValueError("rfid.port = 'sim' is only allowed with board.simulated = true")

    def _check_serial_ports(self) -> None:
        meter = self.meter if isinstance(self.meter, Sdm630Config) else None
        if meter is not None:
            is_sim = meter.port == "sim"
            if self.board.simulated and not is_sim:
                raise ValueError(
                    f"board.simulated = true but meter.port = {meter.port!r}; a simulated board must use 'sim'"
                )
            if not self.board.simulated and is_sim:
                raise ValueError("meter.port = 'sim' is only allowed with board.simulated = true")
        # One UART serves one device: the co-processor link, the RFID reader and the Modbus meter each
        # need a port of their own (every 'sim' port is a pty of its own).
        owner: dict[str, str] = {}
        for where, port in (
            ("buses.serial.port", self.buses.serial.port if self.buses.serial is not None else None),
            ("rfid.port", self.rfid.port if self.rfid is not None else None),
            ("meter.port", meter.port if meter is not None else None),
        ):
            if port is None or port == "sim":
                continue
            if port in owner:
                raise ValueError(f"serial port {port} is used twice: {owner[port]} and {where}")
            owner[port] = where
