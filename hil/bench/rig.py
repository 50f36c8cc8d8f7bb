"""The rig file (``RIG.toml``, ``format = 1``): which GPIO relays emulate the EV, where the E-stop is
wired, which serial port the electronic load is on and what the rig may ask of it.

A wrong rig file is rejected at load time with one line per problem naming the file, the field, what
is wrong and the value, as board files are (board/loader.py)::

    rig.toml: ev.r3_c_pin: Input should be less than or equal to 27 (got 40)
    rig.toml: GPIO 5 is used twice: ev.r2_pin and estop.pin

The wiring behind every field is described in docs/hil-bench.md.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from board.loader import read_toml

RIG_FORMAT = 1
#: BCM numbers of the 40-pin header's GPIOs (the same range board files accept).
BCM_PINS = range(0, 28)
#: Cable ratings a Type 2 PP coding resistor can state (IEC 61851-1, standards-facts.md 1.8).
CABLE_RATINGS_A = (13, 20, 32, 63)

Pin = Annotated[int, Field(ge=min(BCM_PINS), le=max(BCM_PINS), description="BCM GPIO number")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RigInfo(_Model):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""


class RigGpio(_Model):
    factory: Literal["lgpio", "mock"]
    chip: int = Field(default=0, ge=0, le=16)


class EvEmulatorConfig(_Model):
    """The relays of the EV emulator (docs/hil-bench.md "EV emulator"). Every relay closes a normally
    open contact when its coil is energised; ``relay_active_high`` is the GPIO level that energises a
    coil (most opto-isolated relay boards energise on a *low* input: false)."""

    relay_active_high: bool
    # Signal relays release in 2-5 ms and operate in 5-10 ms (typical datasheet values), so 10 ms
    # between two relay changes guarantees the first contact has moved before the second one does.
    settle_ms: float = Field(default=10.0, ge=0, le=200)
    r2_pin: Pin = Field(description="R2 2.74 kohm to PE behind the diode: state B (the EV is present)")
    r3_c_pin: Pin = Field(description="R3 1.3 kohm in parallel with R2: state C")
    r3_d_pin: Pin | None = Field(default=None, description="270 ohm in parallel with R2: state D")
    diode_bypass_pin: Pin = Field(description="shorts the EV's pilot diode (diode fault)")
    pilot_short_pin: Pin = Field(description="shorts the pilot to PE ahead of the diode: state E")
    pp_13a_pin: Pin | None = Field(default=None, description="PP coding 1.5 kohm: a 13 A cable")
    pp_20a_pin: Pin | None = Field(default=None, description="PP coding 680 ohm: a 20 A cable")
    pp_32a_pin: Pin | None = Field(default=None, description="PP coding 220 ohm: a 32 A cable")
    pp_63a_pin: Pin | None = Field(default=None, description="PP coding 100 ohm: a 63 A cable")
    pp_invalid_pin: Pin | None = Field(default=None, description="a PP resistance below 75 ohm: no valid coding")
    cable_a: Literal[13, 20, 32, 63] | None = Field(
        default=None, description="the cable the emulator plugs in by default; none = PP stays open"
    )

    @model_validator(mode="after")
    def _cable_needs_its_relay(self) -> EvEmulatorConfig:
        if self.cable_a is not None and self.pp_pin(self.cable_a) is None:
            raise ValueError(f"ev.cable_a = {self.cable_a} needs ev.pp_{self.cable_a}a_pin (the relay that selects it)")
        return self

    def pp_pin(self, cable_a: int) -> int | None:
        pin: int | None = getattr(self, f"pp_{cable_a}a_pin", None)
        return pin


class EStopConfig(_Model):
    """The emergency-stop input. ``active_high`` is the level the input shows when the E-stop is
    *pressed* (or its chain is open); it is required because guessing it wrong would hide a press."""

    pin: Pin
    active_high: bool
    pull: Literal["up", "down"] | None = None
    antivalent_pin: Pin | None = Field(
        default=None,
        description="a second contact of the same button reading the opposite level; equal levels = a fault",
    )
    poll_ms: float = Field(default=10.0, gt=0, le=100)


class LoadConfig(_Model):
    """A SCPI electronic load (or source) on a serial port, and what the rig may ask of it."""

    port: str = Field(min_length=1, description="serial device, e.g. /dev/ttyUSB0")
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200]
    timeout_s: float = Field(default=0.5, gt=0, le=5)
    max_current_a: float = Field(gt=0, le=500, description="highest current setpoint, per phase")
    max_power_w: float = Field(gt=0, le=100_000, description="highest power the rig may draw")
    nominal_voltage_v: float = Field(default=230.0, gt=0, le=1000, description="to check setpoints against max_power_w")
    max_voltage_v: float = Field(default=300.0, gt=0, le=1000, description="highest voltage the load can see")

    @model_validator(mode="after")
    def _nominal_within_max(self) -> LoadConfig:
        if self.nominal_voltage_v > self.max_voltage_v:
            raise ValueError(
                f"load.nominal_voltage_v = {self.nominal_voltage_v} is above load.max_voltage_v = {self.max_voltage_v}"
            )
        return self


class RigCan(_Model):
    interface: Literal["socketcan", "pcan", "kvaser", "slcan", "virtual"]
    channel: str = Field(min_length=1)
    bitrate: Literal[125000, 250000, 500000, 1000000]


class RigConfig(_Model):
    format: Literal[1]
    rig: RigInfo
    gpio: RigGpio
    ev: EvEmulatorConfig
    estop: EStopConfig
    load: LoadConfig | None = None
    can: RigCan | None = None

    @model_validator(mode="after")
    def _pins_used_once(self) -> RigConfig:
        self.gpio_pins()
        return self

    def gpio_pins(self) -> dict[int, str]:
        """Every GPIO the rig claims, with the field that names it (to check against a board file)."""
        owner: dict[int, str] = {}
        for section, cfg in (("ev", self.ev), ("estop", self.estop)):
            for field_name, value in cfg:  # pydantic models iterate as (name, value)
                if not (field_name == "pin" or field_name.endswith("_pin")) or value is None:
                    continue
                where = f"{section}.{field_name}"
                if value in owner:
                    raise ValueError(f"GPIO {value} is used twice: {owner[value]} and {where}")
                owner[value] = where
        return owner


# --------------------------------------------------------------------------- loading
class RigError(Exception):
    """A rig file that cannot be used. ``problems`` holds one line per problem."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__("\n".join(f"{self.path}: {p}" for p in problems))


def load_rig(path: str | Path) -> RigConfig:
    path = Path(path)
    return parse_rig(read_toml(path, RigError), path)


def parse_rig(data: dict[str, Any], path: Path | str = "<rig>") -> RigConfig:
    if "format" not in data:
        raise RigError(path, [f"format: missing; this rig reads rig files with format = {RIG_FORMAT}"])
    if data["format"] != RIG_FORMAT:
        raise RigError(path, [f"format: got {data['format']!r}; this rig reads format = {RIG_FORMAT}"])
    try:
        return RigConfig.model_validate(data)
    except ValidationError as exc:
        raise RigError(path, [_describe(err) for err in exc.errors()]) from exc


def _describe(err: Any) -> str:
    loc = ".".join(str(part) for part in err["loc"]) or "(rig)"
    kind = err["type"]
    if kind == "missing":
        return f"{loc}: missing (required)"
    if kind == "extra_forbidden":
        allowed = _allowed_fields(err["loc"][:-1])
        return f"{loc}: unknown field; allowed here: {', '.join(allowed)}"
    message = str(err["msg"]).removeprefix("Value error, ")
    if not err["loc"]:
        return message  # a cross-field rule: the message names its own fields
    value = err.get("input")
    if message.startswith(f"{loc}."):
        return message  # a rule of this table that names its own fields
    if isinstance(value, dict):
        return f"{loc}: {message}"
    return f"{loc}: {message} (got {value!r})"


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = RigConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        inner = _model_in(field.annotation)
        if inner is None:
            return []
        model = inner
    return sorted(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):  # ``Model | None``
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
