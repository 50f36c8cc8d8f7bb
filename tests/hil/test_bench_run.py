"""Bench mode end to end, in real time: the sim-ac board with the real firmware, the rig's relays on a
gpiozero MockFactory wired to the board's plant by SimBench, the SCPI load simulator on a pty. A short
charge passes; an E-stop press mid-charge aborts with the safe stop in order (load input off before
any relay opens) and a failed verdict; no confirmation, a pin clash or a scenario the rig cannot play
is refused before anything is switched."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from board.loader import load_board, resolve
from hal.buses import open_serial
from hal.sim.plant import Plant
from hil.bench.ev_emulator import RelayEvEmulator
from hil.bench.rig import RigConfig, parse_rig
from hil.bench.safety import ConfirmationMissing
from hil.bench.scpi_load import ScpiInstrumentError
from hil.bench.session import BenchError, BenchRun, board_gpio_pins, check_pins, check_scenario, run_bench
from hil.bench.sim_bench import SimBench
from hil.bench.sim_scpi import ScpiLoadSim
from hil.cli import main
from hil.runner import RunResult
from hil.scenario import Scenario, parse_scenario

ESTOP = 25
RELAY_PINS: dict[str, int] = {
    "pilot_short_pin": 4,
    "diode_bypass_pin": 8,
    "r2_pin": 9,
    "r3_c_pin": 10,
    "r3_d_pin": 11,
    "pp_13a_pin": 12,
    "pp_32a_pin": 15,
    "pp_invalid_pin": 21,
}
RELAY_GPIOS = set(RELAY_PINS.values())

CHARGE = """
format: 1
name: bench-charge
board: sim-ac
duration: 11s
settings: {free_charging: true}
evs:
  - {id: car, battery_kwh: 60, soc: 0.5, max_current_a: 16, phases: 1, cable_a: 32, plug_in: 1s, unplug: 8s}
events:
  - {at: 2.5s, action: ev_state, ev: car, state: C}
expect:
  - {check: state_reached, state: C2, after_s: 2.5, within_s: 2}
  - {check: duty_at_most, amps: 32}
  - {check: contactor_opens_within, after: unplug, within_ms: 500}
  - {check: session_energy, ev: car, min_kwh: 0.0035, max_kwh: 0.0065}
  - {check: sessions, count: 1}
  - {check: fault_not_raised, code: rcd_tripped}
"""


def _rig(**ev: Any) -> RigConfig:
    return parse_rig(
        {
            "format": 1,
            "rig": {"name": "test-bench"},
            "gpio": {"factory": "mock"},
            "ev": {"relay_active_high": False, "settle_ms": 10, "cable_a": 32, **RELAY_PINS, **ev},
            # A NO contact to GND with a pull-up: reads high while released, so a fresh mock pin starts released.
            "estop": {"pin": ESTOP, "active_high": False, "pull": "up", "poll_ms": 10},
            "load": {
                "port": "/dev/ttyUSB0",
                "baudrate": 9600,
                "timeout_s": 0.2,
                "max_current_a": 32,
                "max_power_w": 7400,
            },
        }
    )


def _scenario(text: str = CHARGE, **replace: str) -> Scenario:
    for old, new in replace.items():
        text = text.replace(old, new)
    return parse_scenario(text)


@dataclass
class Journal:
    """Relay changes and load commands in the order they happened, across threads."""

    entries: list[tuple[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, what: Any) -> None:
        with self.lock:
            self.entries.append((kind, what))


class JournalPin(MockPin):
    """Records every change of an output into its factory's journal."""

    def _change_state(self, value: Any) -> bool:
        changed = bool(super()._change_state(value))
        journal = getattr(self.factory, "journal", None)
        if changed and self._function == "output" and journal is not None:
            journal.add("gpio", (int(self.info.name.removeprefix("GPIO")), bool(value)))
        return changed


class JournalLoad(ScpiLoadSim):
    """The load simulator, recording each command line into the shared journal."""

    journal: Journal | None = None

    def handle(self, line: str) -> str | None:
        if self.journal is not None and not line.startswith("SYST:ERR"):
            self.journal.add("scpi", line.strip())
        return super().handle(line)


@dataclass
class Bench:
    rig: RigConfig
    factory: Any
    load: JournalLoad
    port: Any
    journal: Journal
    sims: list[SimBench] = field(default_factory=list)

    def attach(self, run: BenchRun) -> None:
        self.sims.append(SimBench.attach(run.chargers[1], self.rig.ev, self.factory, self.load))

    def run(self, scenario: Scenario, out: Path, **kwargs: Any) -> RunResult:
        coro = run_bench(
            scenario,
            Path("."),
            out,
            self.rig,
            confirmed=kwargs.pop("confirmed", True),
            pin_factory=self.factory,
            load_port=self.port,
            on_started=self.attach,
            report=False,
            **kwargs,
        )
        return asyncio.run(coro)

    def relays_closed(self) -> list[int]:
        level = self.rig.ev.relay_active_high
        return [
            n for n in RELAY_GPIOS if self.factory.pin(n).function == "output" and self.factory.pin(n).state == level
        ]


@pytest.fixture
def bench() -> Iterator[Bench]:
    journal = Journal()
    factory = MockFactory(pin_class=JournalPin)
    factory.journal = journal  # type: ignore[attr-defined]
    load, path = JournalLoad.open_pty()
    assert isinstance(load, JournalLoad)
    load.journal = journal
    port = open_serial(path, 9600, timeout=0.01)
    try:
        yield Bench(_rig(), factory, load, port, journal)
    finally:
        port.close()
        load.close()
        factory.close()
        factory.reset()


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------------- a charge
@pytest.mark.timeout(40)
def test_a_short_charge_passes_on_the_simulated_bench(bench: Bench, tmp_path: Path) -> None:
    started = time.monotonic()
    result = bench.run(_scenario(), tmp_path)
    elapsed = time.monotonic() - started
    assert result.passed, [f"{c.check}: {c.evidence}" for c in result.checks if not c.passed]
    assert elapsed >= 11.0  # real time, whatever the scenario says
    records = _records(tmp_path)
    header = records[0]
    assert header["ev"] == "header" and header["time"] == "realtime" and header["bench"] == "test-bench"
    # The EV drew min(offer 32 A, its own 16 A) through the load, measured and traced as the EV's power.
    drawn = [r for r in records if r["src"] == "car" and r["ev"] == "power"]
    assert max(r["A"] for r in drawn) == pytest.approx(16.0)
    assert max(r["W"] for r in drawn) == pytest.approx(16.0 * 230.0)
    assert not [r for r in records if r["ev"] == "soc"]
    assert [r["state"] for r in records if r["src"] == "car" and r["ev"] == "ev_state"] == ["B", "C", "A"]
    commands = [line for kind, line in bench.journal.entries if kind == "scpi"]
    assert commands[:5] == ["*CLS", "*IDN?", "*RST", "SYST:REM", "INP OFF"]
    assert "CURR 16.000" in commands and "INP ON" in commands
    # Unplugging from C: the load input off before the first relay opens.
    on = max(i for i, e in enumerate(bench.journal.entries) if e == ("scpi", "INP ON"))
    rest = bench.journal.entries[on:]
    first_open = next(i for i, (kind, what) in enumerate(rest) if kind == "gpio" and what[1] is True)
    assert ("scpi", "INP OFF") in rest[:first_open]
    # The end: safe stop done, everything released.
    assert not bench.load.input_on and bench.relays_closed() == []
    assert result.summary["aborted"] is None and result.summary["bench"] == "test-bench"
    assert (tmp_path / "summary.json").is_file() and (tmp_path / "junit.xml").is_file()


# ----------------------------------------------------------------------------------- the E-stop
@pytest.mark.timeout(40)
def test_an_estop_press_mid_charge_aborts_with_load_off_before_the_relays_open(bench: Bench, tmp_path: Path) -> None:
    pressed_at: list[float] = []

    def on_line(record: dict[str, Any]) -> None:
        # Press the E-stop 1 s after the load first draws current.
        if record["src"] == "car" and record["ev"] == "power" and record["A"] > 0 and not pressed_at:
            pressed_at.append(record["t"])
            asyncio.get_running_loop().call_later(1.0, press)

    def press() -> None:
        bench.journal.add("estop", "pressed")
        bench.factory.pin(ESTOP).drive_low()

    started = time.monotonic()
    result = bench.run(_scenario(), tmp_path, on_line=on_line)
    elapsed = time.monotonic() - started

    assert pressed_at and elapsed < 9.0  # aborted, not run to its 11 s
    assert not result.passed
    assert result.summary["aborted"].startswith("aborted: E-stop (E-stop pressed (GPIO25 low)")
    assert all(not c.passed and c.evidence == result.summary["aborted"] for c in result.checks)
    assert len(result.checks) == 6
    records = _records(tmp_path)
    aborts = [r for r in records if r["ev"] == "abort"]
    assert len(aborts) == 1 and aborts[0]["reason"].startswith("E-stop: E-stop pressed")
    assert [r["state"] for r in records if r["src"] == "car" and r["ev"] == "ev_state"][-1] == "A"
    # Safe stop order after the press: load input off, then the relays open; nothing switched on again.
    entries = bench.journal.entries
    after = entries[entries.index(("estop", "pressed")) :]
    off = after.index(("scpi", "INP OFF"))
    opens = [i for i, (kind, what) in enumerate(after) if kind == "gpio" and what[1] is True]
    assert opens and off < min(opens)
    assert {what[0] for kind, what in after if kind == "gpio"} >= {9, 10, 15}  # R3, R2 and the PP relay opened
    assert ("scpi", "INP ON") not in after
    assert not [e for e in after if e[0] == "gpio" and e[1][1] is False]  # no relay energised after the trip
    assert not bench.load.input_on and bench.relays_closed() == []
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"] is False and summary["aborted"] == result.summary["aborted"]


@pytest.mark.timeout(40)
def test_an_error_mid_charge_goes_through_the_safe_stop_then_propagates(bench: Bench, tmp_path: Path) -> None:
    def on_line(record: dict[str, Any]) -> None:
        # Once the load draws, it refuses the next command: the run cannot go on.
        drawing = record["src"] == "car" and record["ev"] == "power" and record["A"] > 0
        if drawing and ("error", "pushed") not in bench.journal.entries:
            bench.journal.add("error", "pushed")
            bench.load.push_error(-222, "Data out of range")

    with pytest.raises(ScpiInstrumentError, match="Data out of range"):
        bench.run(_scenario(), tmp_path, on_line=on_line)
    after = bench.journal.entries[bench.journal.entries.index(("error", "pushed")) :]
    off = after.index(("scpi", "INP OFF"))
    opens = [i for i, (kind, what) in enumerate(after) if kind == "gpio" and what[1] is True]
    assert opens and off < min(opens)
    assert not bench.load.input_on and bench.relays_closed() == []


# ----------------------------------------------------------------------------------- refusals
def _nothing_touched(bench: Bench) -> None:
    assert bench.journal.entries == []
    assert bench.load.received == []


def test_bench_mode_refuses_to_start_without_the_confirmation(bench: Bench, tmp_path: Path) -> None:
    with pytest.raises(ConfirmationMissing, match="--i-have-an-emergency-stop"):
        bench.run(_scenario(), tmp_path, confirmed=False)
    _nothing_touched(bench)
    assert not (tmp_path / "trace.jsonl").exists()


def test_a_rig_pin_the_board_uses_is_refused(bench: Bench, tmp_path: Path) -> None:
    bench.rig = _rig(r2_pin=23)  # sim-ac: contactor.coil_pin
    with pytest.raises(BenchError, match=r"GPIO 23 is used by the rig \(ev.r2_pin\) and by the board sim-ac "):
        bench.run(_scenario(), tmp_path)
    _nothing_touched(bench)


def test_a_pressed_estop_refuses_the_start_and_leaves_everything_open(bench: Bench, tmp_path: Path) -> None:
    class PressedPin(JournalPin):
        def _set_pull(self, value: Any) -> None:
            super()._set_pull(value)
            if self.info.name == f"GPIO{ESTOP}":
                self.drive_low()  # held pressed

    bench.factory.pin_class = PressedPin
    with pytest.raises(BenchError, match=r"E-stop pressed .*release the E-stop before starting"):
        bench.run(_scenario(), tmp_path)
    assert bench.load.received == [] and bench.relays_closed() == []


def test_what_the_rig_or_a_real_board_cannot_play_is_refused() -> None:
    rig = _rig(pp_invalid_pin=None)
    scenario = _scenario(
        CHARGE.replace(
            "events:\n",
            "events:\n  - {at: 3s, action: fault, fault: pp_invalid, ev: car}\n"
            "  - {at: 4s, action: fault, fault: rcd_trip}\n"
            "  - {at: 5s, action: fault, fault: overcurrent, ev: car, amps: 40}\n",
        ).replace("expect:\n", "expect:\n  - {check: ev_soc_at_least, ev: car, soc: 0.6}\n")
    )
    problems = check_scenario(scenario, rig, load_board(resolve("pi-ac")))
    assert any("pp_invalid" in p and "ev.pp_invalid_pin" in p for p in problems)
    assert any("rcd_trip" in p and "pi-ac is real" in p for p in problems)
    assert any("40 A is above what the rig lets the load draw (32 A)" in p for p in problems)
    assert any("ev_soc_at_least" in p and "no battery" in p for p in problems)
    # On a simulated board the plant faults can be injected.
    assert not any("rcd_trip" in p for p in check_scenario(scenario, rig, load_board(resolve("sim-ac"))))


def test_a_real_board_claims_its_spi_pins_too() -> None:
    pins = board_gpio_pins(load_board(resolve("pi-ac")))
    assert pins[23] == "contactor.coil_pin" and pins[18] == "pilot.pwm_pin"
    assert {7, 8, 9, 10, 11} <= set(pins)  # SPI0 for the MCP3008 (CE0) and the ATM90E32 (CE1)
    assert not {7, 8, 9, 10, 11} & set(board_gpio_pins(load_board(resolve("sim-ac"))))  # simulated SPI
    clashes = check_pins(_rig(), load_board(resolve("pi-ac")))
    assert any(c.startswith("GPIO 8 is used by the rig (ev.diode_bypass_pin)") and "SPI0 CE0" in c for c in clashes)


# ----------------------------------------------------------------------------------- the CLI
def _write_rig(path: Path, **ev: int) -> Path:
    pins = {**RELAY_PINS, **ev}
    lines = [
        "format = 1",
        '[rig]\nname = "cli-bench"',
        '[gpio]\nfactory = "mock"',
        "[ev]\nrelay_active_high = false\ncable_a = 32\n" + "\n".join(f"{k} = {v}" for k, v in pins.items()),
        f'[estop]\npin = {ESTOP}\nactive_high = false\npull = "up"',
    ]
    path.write_text("\n\n".join(lines) + "\n")
    return path


def test_cli_refusals_exit_2_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "bench-charge.yaml"
    scenario.write_text(CHARGE)
    rig = _write_rig(tmp_path / "rig.toml")
    assert main(["run", str(scenario), "--bench", str(rig), "--out", str(tmp_path / "out")]) == 2
    assert "--i-have-an-emergency-stop" in capsys.readouterr().err
    clash = _write_rig(tmp_path / "clash.toml", r3_c_pin=24)
    assert main(["run", str(scenario), "--bench", str(clash), "--i-have-an-emergency-stop"]) == 2
    assert "GPIO 24 is used by the rig (ev.r3_c_pin) and by the board sim-ac (contactor.mirror_pin)" in (
        capsys.readouterr().err
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("format = 1\n[rig]\nname = 'x'\n")
    assert main(["run", str(scenario), "--bench", str(bad), "--i-have-an-emergency-stop"]) == 2
    assert "bad.toml: gpio: missing (required)" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- the sim bench
def test_sim_bench_turns_the_emulator_relays_into_plant_states() -> None:
    factory = MockFactory()
    try:
        rig = _rig()
        emulator = RelayEvEmulator(rig.ev, pin_factory=factory, sleep=lambda s: None)
        plant = Plant(phases=3)
        sim = SimBench(rig.ev, factory, plant)

        def seen() -> tuple[str, bool, float | None]:
            sim.update()
            return plant.ev_state, plant.ev_diode_ok, plant.pp_ohm

        assert seen() == ("A", True, None)
        emulator.plug_in()
        assert seen() == ("B", True, 220.0)
        emulator.force_state("C")
        assert seen() == ("C", True, 220.0)
        emulator.force_state("D")
        assert seen() == ("D", True, 220.0)
        emulator.diode_short(True)
        assert seen() == ("D", False, 220.0)
        emulator.pilot_short(True)
        assert seen()[0] == "E"
        emulator.pp_invalid(True)
        assert seen()[2] == 47.0
        emulator.open_all()
        assert seen() == ("A", True, None)
    finally:
        factory.close()
        factory.reset()


def test_sim_bench_passes_the_load_current_only_through_closed_contacts() -> None:
    factory = MockFactory()
    load, _ = ScpiLoadSim.open_pty()
    try:
        plant = Plant(phases=3)
        syncs: list[float] = []
        sim = SimBench(_rig().ev, factory, plant, load, before_current_change=lambda: syncs.append(1.0))
        load.input_on, load.current_setpoint_a = True, 10.0
        sim.update()
        assert plant.ev_current_a == [0.0, 0.0, 0.0] and load.voltage_v == 0.0
        plant.contacts_closed = True
        sim.update()
        assert plant.ev_current_a == [10.0, 0.0, 0.0] and load.voltage_v == 230.0 and syncs == [1.0]
        load.input_on = False
        sim.update()
        assert plant.ev_current_a == [0.0, 0.0, 0.0] and len(syncs) == 2
    finally:
        load.close()
        factory.close()
        factory.reset()


def test_an_iso15118_ev_is_refused_on_the_bench() -> None:
    """The bench's EV emulator switches resistors only: an ISO 15118 EV would silently run as a PWM EV."""
    rig = _rig()
    plain = check_scenario(_scenario(), rig, load_board(resolve("sim-ac")))
    assert not any("protocol" in p for p in plain)
    hlc = _scenario(CHARGE.replace("{id: car, ", "{id: car, protocol: iso2, "))
    problems = check_scenario(hlc, rig, load_board(resolve("sim-ac")))
    assert any("EV car: protocol iso2 needs an ISO 15118 EV" in p for p in problems)
