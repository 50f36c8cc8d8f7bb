"""The relay EV emulator on gpiozero mock pins: the relay pattern of every state and fault, the
break-before-make order as the pins saw it, the settle waits, failures and the default state."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPin
from hypothesis import given, settings
from hypothesis import strategies as st

from hal.errors import DeviceNotFound, HalError, UnsupportedOperation
from hil.bench.ev_emulator import CLOSE_ORDER, RelayEvEmulator
from hil.bench.rig import EvEmulatorConfig

PINS: dict[str, int] = {
    "pilot_short": 4,
    "diode_bypass": 5,
    "r2": 6,
    "r3_c": 7,
    "r3_d": 8,
    "pp_13a": 16,
    "pp_20a": 20,
    "pp_32a": 21,
    "pp_63a": 12,
    "pp_invalid": 25,
}
RELAY_OF_GPIO = {pin: relay for relay, pin in PINS.items()}
SETTLE_S = 0.01


class JournalPin(MockPin):
    """A mock pin that writes every change of an output level into its factory's journal, so a test
    sees the order of changes across pins; ``fail`` makes writes raise as a dead GPIO chip would."""

    fail = False

    def _set_state(self, value: Any) -> None:
        if self.fail:
            raise OSError(5, "Input/output error")
        super()._set_state(value)

    def _change_state(self, value: Any) -> bool:
        changed = bool(super()._change_state(value))
        if changed and self._function == "output":
            journal = getattr(self.factory, "journal", None)
            if journal is not None:
                journal.append((int(self.info.name.removeprefix("GPIO")), bool(value)))
        return changed


def _factory() -> Any:
    factory = MockFactory(pin_class=JournalPin)
    factory.journal = []
    return factory


@pytest.fixture
def factory() -> Iterator[Any]:
    f = _factory()
    yield f
    f.close()
    f.reset()


def _config(**overrides: Any) -> EvEmulatorConfig:
    fields: dict[str, Any] = {f"{relay}_pin": pin for relay, pin in PINS.items()}
    fields.update(relay_active_high=True, settle_ms=SETTLE_S * 1000, cable_a=32)
    fields.update(overrides)
    return EvEmulatorConfig(**fields)


class Sleeps:
    """Records the settle waits into the pin journal, where they fall between relay changes."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def __call__(self, seconds: float) -> None:
        self.factory.journal.append(("sleep", seconds))


def _emulator(factory: Any, config: EvEmulatorConfig | None = None, **kwargs: Any) -> RelayEvEmulator:
    ev = RelayEvEmulator(config or _config(), pin_factory=factory, sleep=Sleeps(factory), **kwargs)
    factory.journal.clear()  # claiming the pins sets their idle level; only later changes matter
    return ev


def _closed(factory: Any, active_high: bool = True) -> set[str]:
    """The relays whose coil is energised, read from the pin levels."""
    return {relay for relay, pin in PINS.items() if bool(factory.pin(pin).state) == active_high}


def _steps(factory: Any) -> list[tuple[str, bool | float]]:
    return [
        ("sleep", entry[1]) if entry[0] == "sleep" else (RELAY_OF_GPIO[entry[0]], entry[1]) for entry in factory.journal
    ]


# ----------------------------------------------------------------------------------- default
@pytest.mark.parametrize("active_high", [True, False])
def test_everything_open_by_default(factory: Any, active_high: bool) -> None:
    ev = _emulator(factory, _config(relay_active_high=active_high))
    assert _closed(factory, active_high) == set()
    for pin in PINS.values():
        assert factory.pin(pin).function == "output"
        assert factory.pin(pin).state == (not active_high)  # coil off: low on active-high, high on active-low
    assert ev.state == "A" and not ev.plugged
    assert ev.relays == dict.fromkeys(CLOSE_ORDER, False)
    assert ev.pins == PINS


# ----------------------------------------------------------------------------------- patterns
PLUGGED = {"pp_32a", "r2"}
PATTERNS: list[tuple[str, list[tuple[str, Any]], str, set[str]]] = [
    ("plugged", [("plug_in", None)], "B", PLUGGED),
    ("state C", [("plug_in", None), ("force_state", "C")], "C", PLUGGED | {"r3_c"}),
    ("state D", [("plug_in", None), ("force_state", "D")], "D", PLUGGED | {"r3_d"}),
    ("C then D", [("plug_in", None), ("force_state", "C"), ("force_state", "D")], "D", PLUGGED | {"r3_d"}),
    ("C released", [("plug_in", None), ("force_state", "C"), ("force_state", None)], "B", PLUGGED),
    ("C then B", [("plug_in", None), ("force_state", "C"), ("force_state", "B")], "B", PLUGGED),
    ("forced before plug-in", [("force_state", "C"), ("plug_in", None)], "C", PLUGGED | {"r3_c"}),
    ("diode short", [("plug_in", None), ("diode_short", True)], "B", PLUGGED | {"diode_bypass"}),
    ("diode short cleared", [("plug_in", None), ("diode_short", True), ("diode_short", False)], "B", PLUGGED),
    (
        "pilot short",
        [("plug_in", None), ("force_state", "C"), ("pilot_short", True)],
        "E",
        PLUGGED | {"r3_c", "pilot_short"},
    ),
    ("pp open", [("plug_in", None), ("pp_open", True)], "B", {"r2"}),
    ("pp invalid", [("plug_in", None), ("pp_invalid", True)], "B", {"r2", "pp_invalid"}),
    ("pp open wins", [("plug_in", None), ("pp_invalid", True), ("pp_open", True)], "B", {"r2"}),
    ("pp invalid cleared", [("plug_in", None), ("pp_invalid", True), ("pp_invalid", False)], "B", PLUGGED),
    (
        "unplugged with faults",
        [("plug_in", None), ("diode_short", True), ("pilot_short", True), ("unplug", None)],
        "A",
        set(),
    ),
    ("faults wait for plug-in", [("diode_short", True), ("pilot_short", True)], "A", set()),
    (
        "faults kept across plug-ins",
        [("diode_short", True), ("plug_in", None), ("unplug", None), ("plug_in", None)],
        "B",
        PLUGGED | {"diode_bypass"},
    ),
    ("unplug releases C", [("plug_in", None), ("force_state", "C"), ("unplug", None), ("plug_in", None)], "B", PLUGGED),
]


@pytest.mark.parametrize(("label", "actions", "state", "closed"), PATTERNS, ids=[p[0] for p in PATTERNS])
@pytest.mark.parametrize("active_high", [True, False])
def test_relay_pattern(
    factory: Any, label: str, actions: list[tuple[str, Any]], state: str, closed: set[str], active_high: bool
) -> None:
    ev = _emulator(factory, _config(relay_active_high=active_high))
    for method, argument in actions:
        getattr(ev, method)(argument)
    assert ev.state == state
    assert _closed(factory, active_high) == closed
    assert {relay for relay, on in ev.relays.items() if on} == closed


@pytest.mark.parametrize(("cable_a", "relay"), [(13, "pp_13a"), (20, "pp_20a"), (32, "pp_32a"), (63, "pp_63a")])
def test_the_cable_selects_its_pp_resistor(factory: Any, cable_a: int, relay: str) -> None:
    ev = _emulator(factory, cable_a=cable_a)
    ev.plug_in(0.0)
    assert _closed(factory) == {"r2", relay}


def test_a_rig_without_pp_coding_leaves_pp_open(factory: Any) -> None:
    ev = _emulator(factory, _config(cable_a=None))
    ev.plug_in()
    assert _closed(factory) == {"r2"}


# ----------------------------------------------------------------------------------- order
ORDERS: list[tuple[str, list[tuple[str, Any]], list[tuple[str, Any]], list[tuple[str, bool | float]]]] = [
    (
        "plug in straight to C",
        [("force_state", "C")],
        [("plug_in", None)],
        [("pp_32a", True), ("sleep", SETTLE_S), ("r2", True), ("sleep", SETTLE_S), ("r3_c", True)],
    ),
    (
        "C to D passes through B",
        [("plug_in", None), ("force_state", "C")],
        [("force_state", "D")],
        [("r3_c", False), ("sleep", SETTLE_S), ("r3_d", True)],
    ),
    (
        "D to C passes through B",
        [("plug_in", None), ("force_state", "D")],
        [("force_state", "C")],
        [("r3_d", False), ("sleep", SETTLE_S), ("r3_c", True)],
    ),
    (
        "unplug from C passes through B",
        [("plug_in", None), ("force_state", "C")],
        [("unplug", None)],
        [("r3_c", False), ("sleep", SETTLE_S), ("r2", False), ("sleep", SETTLE_S), ("pp_32a", False)],
    ),
    (
        "cable to invalid coding passes through no cable",
        [("plug_in", None)],
        [("pp_invalid", True)],
        [("pp_32a", False), ("sleep", SETTLE_S), ("pp_invalid", True)],
    ),
    (
        "faulty EV appears faulty at once",
        [("diode_short", True), ("pilot_short", True)],
        [("plug_in", None)],
        [
            ("pp_32a", True),
            ("sleep", SETTLE_S),
            ("pilot_short", True),
            ("sleep", SETTLE_S),
            ("diode_bypass", True),
            ("sleep", SETTLE_S),
            ("r2", True),
        ],
    ),
    (
        "shorted EV leaves shorted",
        [("plug_in", None), ("force_state", "C"), ("diode_short", True), ("pilot_short", True)],
        [("unplug", None)],
        [
            ("r3_c", False),
            ("sleep", SETTLE_S),
            ("r2", False),
            ("sleep", SETTLE_S),
            ("diode_bypass", False),
            ("sleep", SETTLE_S),
            ("pilot_short", False),
            ("sleep", SETTLE_S),
            ("pp_32a", False),
        ],
    ),
    ("one change, no wait", [("plug_in", None)], [("force_state", "C")], [("r3_c", True)]),
    ("no change, nothing written", [("plug_in", None)], [("force_state", "B")], []),
]


@pytest.mark.parametrize(("label", "before", "actions", "expected"), ORDERS, ids=[o[0] for o in ORDERS])
def test_break_before_make_order_on_the_pins(
    factory: Any,
    label: str,
    before: list[tuple[str, Any]],
    actions: list[tuple[str, Any]],
    expected: list[tuple[str, bool | float]],
) -> None:
    ev = _emulator(factory)
    for method, argument in before:
        getattr(ev, method)(argument)
    factory.journal.clear()
    for method, argument in actions:
        getattr(ev, method)(argument)
    assert _steps(factory) == expected


def _defined(closed: set[str]) -> bool:
    """A relay pattern the standard defines: R3 only with R2, never both R3s, at most one PP resistor."""
    r3 = closed & {"r3_c", "r3_d"}
    pp = {relay for relay in closed if relay.startswith("pp_")}
    return (not r3 or "r2" in closed) and len(r3) <= 1 and len(pp) <= 1


ACTIONS = st.sampled_from(
    [
        ("plug_in", None),
        ("unplug", None),
        ("force_state", "B"),
        ("force_state", "C"),
        ("force_state", "D"),
        ("force_state", None),
        ("diode_short", True),
        ("diode_short", False),
        ("pilot_short", True),
        ("pilot_short", False),
        ("pp_open", True),
        ("pp_open", False),
        ("pp_invalid", True),
        ("pp_invalid", False),
        ("open_all", None),
    ]
)


@settings(max_examples=150, deadline=None)
@given(actions=st.lists(ACTIONS, max_size=25), cable_a=st.sampled_from([13, 20, 32, 63]))
def test_every_intermediate_pattern_is_defined(actions: list[tuple[str, Any]], cable_a: int) -> None:
    factory = _factory()
    try:
        ev = _emulator(factory, cable_a=cable_a)
        closed: set[str] = set()
        for method, argument in actions:
            if method in ("plug_in", "unplug") and (method == "plug_in") == ev.plugged:
                with pytest.raises(RuntimeError):
                    getattr(ev, method)(argument)
                continue
            if method == "open_all":
                ev.open_all()
            else:
                getattr(ev, method)(argument)
            for relay_pin, level in factory.journal:
                if relay_pin == "sleep":
                    continue
                relay = RELAY_OF_GPIO[relay_pin]
                closed = closed | {relay} if level else closed - {relay}
                assert _defined(closed), f"{method}({argument}) passed through {sorted(closed)}"
            factory.journal.clear()
            assert closed == _closed(factory)
            if not ev.plugged:
                assert closed == set()
            else:
                assert "r2" in closed
                assert ("pilot_short" in closed) == (ev.state == "E")
    finally:
        factory.close()
        factory.reset()


# ----------------------------------------------------------------------------------- errors
def test_misuse_is_refused(factory: Any) -> None:
    ev = _emulator(factory)
    with pytest.raises(RuntimeError, match="not plugged in"):
        ev.unplug()
    ev.plug_in()
    with pytest.raises(RuntimeError, match="already plugged in"):
        ev.plug_in()
    with pytest.raises(ValueError, match="B, C or D, got 'A'"):
        ev.force_state("A")
    assert _closed(factory) == PLUGGED


def test_relays_the_rig_lacks(factory: Any) -> None:
    ev = _emulator(factory, _config(r3_d_pin=None, pp_invalid_pin=None))
    ev.plug_in()
    with pytest.raises(UnsupportedOperation, match=re.escape("ev.r3_d_pin")):
        ev.force_state("D")
    with pytest.raises(UnsupportedOperation, match=re.escape("ev.pp_invalid_pin")):
        ev.pp_invalid(True)
    assert ev.state == "B" and _closed(factory) == PLUGGED
    ev.pp_invalid(False)  # clearing what was never set is harmless


def test_a_cable_without_its_relay_is_refused(factory: Any) -> None:
    with pytest.raises(UnsupportedOperation, match=re.escape("20 A cable needs ev.pp_20a_pin")):
        RelayEvEmulator(_config(pp_20a_pin=None), pin_factory=factory, cable_a=20)
    with pytest.raises(ValueError, match="cable_a must be one of 13, 20, 32, 63, got 16"):
        RelayEvEmulator(_config(), pin_factory=factory, cable_a=16)


def test_a_pin_already_claimed_names_the_relay_and_frees_the_others(factory: Any) -> None:
    from gpiozero import DigitalOutputDevice

    squatter = DigitalOutputDevice(PINS["r3_c"], pin_factory=factory)
    with pytest.raises(DeviceNotFound, match=r"GPIO7 for the R3 1.3 kohm \(state C\) relay"):
        RelayEvEmulator(_config(), pin_factory=factory)
    squatter.close()
    ev = RelayEvEmulator(_config(), pin_factory=factory)  # nothing stayed claimed
    ev.plug_in()
    assert _closed(factory) == PLUGGED


def test_a_relay_that_cannot_be_switched_names_itself(factory: Any) -> None:
    ev = _emulator(factory)
    ev.plug_in()
    factory.pin(PINS["r3_c"]).fail = True
    with pytest.raises(DeviceNotFound, match=r"cannot close the R3 1.3 kohm \(state C\) relay on GPIO7"):
        ev.force_state("C")


# ----------------------------------------------------------------------------------- safe state
def test_open_all_returns_to_the_default(factory: Any) -> None:
    ev = _emulator(factory)
    ev.plug_in()
    ev.force_state("C")
    ev.diode_short(True)
    ev.pilot_short(True)
    factory.journal.clear()
    ev.open_all()
    assert _closed(factory) == set() and ev.state == "A"
    relays = [step for step in _steps(factory) if step[0] != "sleep"]
    assert relays == [
        ("r3_c", False),
        ("r2", False),
        ("diode_bypass", False),
        ("pilot_short", False),
        ("pp_32a", False),
    ]
    ev.plug_in()  # the faults were cleared with it
    assert _closed(factory) == PLUGGED and ev.state == "B"


def test_open_all_tries_every_relay_and_reports_the_failures(factory: Any) -> None:
    ev = _emulator(factory)
    ev.plug_in()
    ev.force_state("C")
    factory.pin(PINS["r3_c"]).fail = True
    with pytest.raises(HalError) as info:
        ev.open_all()
    assert "R3 1.3 kohm (state C) relay on GPIO7" in str(info.value)
    assert _closed(factory) == {"r3_c"}  # everything else opened despite the failure


def test_close_opens_everything_and_releases_the_pins(factory: Any) -> None:
    ev = _emulator(factory)
    ev.plug_in()
    ev.force_state("C")
    ev.close()
    assert _closed(factory) == set()
    assert all(factory.pin(pin).function == "input" for pin in PINS.values())
    with pytest.raises(DeviceNotFound, match="released"):
        ev.plug_in()
    ev.close()  # twice is harmless
