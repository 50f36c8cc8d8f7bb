"""Bring-up probe: exercise every peripheral a board file declares and report what each one did.

On a real board the probe only reads unless ``actuate`` is set (it then sweeps the pilot, cycles the
contactor, the lock and the self-tests: do this with no vehicle connected). On a simulated board it
always actuates, and it also turns the plant's knobs (an EV plugging in, a welded contactor is NOT
injected) to check that every driver reads back what the simulated world shows.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from board.build import BoardHal
from hal.errors import HalError, UnsupportedOperation
from hal.types import ConverterMode, Indication, PilotMode


@dataclass(frozen=True)
class ProbeResult:
    function: str
    ok: bool
    detail: str
    seconds: float


Check = Callable[[BoardHal, bool], Awaitable[str]]


class ProbeFailure(Exception):
    """A peripheral answered, but not as it should."""


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ProbeFailure(message)


# --------------------------------------------------------------------------------------- checks
async def _pilot(hal: BoardHal, actuate: bool) -> str:
    if not actuate:
        reading = await hal.pilot_sense.read()
        return f"mode {hal.pilot.mode.value}, high {reading.high_v:+.2f} V, low {_v(reading.low_v)}"
    plant = hal.sim.plant if hal.sim else None
    parts = []
    await hal.pilot.set_f()
    await hal.settle()
    f = await hal.pilot_sense.read()
    parts.append(f"F: {f.high_v:+.1f} V")
    _expect(f.high_v < -10.5, f"state F should read about -12 V, read {f.high_v:+.2f} V")
    await hal.pilot.set_x1()
    await hal.settle()
    a = await hal.pilot_sense.read()
    parts.append(f"X1: {a.high_v:+.1f} V")
    _expect(a.high_v > 10.5 or plant is None, f"X1 with no EV should read about +12 V, read {a.high_v:+.2f} V")
    await hal.pilot.set_pwm(533)  # 53.3 % = 32 A offer (IEC 61851-1 Table A.7: I = duty * 0.6)
    if plant is not None:
        plant.ev_state = "B"
    await hal.settle()
    b = await hal.pilot_sense.read()
    parts.append(f"PWM 53.3 %{' EV in B' if plant else ''}: {b.high_v:+.1f} / {_v(b.low_v)}")
    _expect(hal.pilot.mode is PilotMode.PWM and hal.pilot.duty_permille == 533, "pilot did not take the PWM duty")
    if plant is not None:
        _expect(8.0 < b.high_v < 10.0, f"EV in B should read about +9 V, read {b.high_v:+.2f} V")
        _expect(b.low_v is not None and b.low_v < -10.5, f"diode check: low level should be -12 V, read {_v(b.low_v)}")
        plant.ev_state = "C"
        await hal.settle()
        c = await hal.pilot_sense.read()
        parts.append(f"EV in C: {c.high_v:+.1f} V")
        _expect(5.0 < c.high_v < 7.0, f"EV in C should read about +6 V, read {c.high_v:+.2f} V")
        plant.ev_state = "A"
    try:
        await hal.pilot.set_e()
        parts.append("E: supported")
    except UnsupportedOperation:
        parts.append("E: not on this board")
    await hal.pilot.set_f()  # leave the pilot in "not available"
    return "; ".join(parts)


async def _proximity(hal: BoardHal, actuate: bool) -> str:
    plant = hal.sim.plant if hal.sim else None
    if plant is not None and hal.config.proximity.driver == "adc":
        plant.pp_ohm = 220.0  # a 32 A cable (IEC 61851-1 PP coding, standards-facts.md 1.8)
        await hal.settle()
    reading = await hal.proximity.read()
    if plant is not None and hal.config.proximity.driver == "adc":
        _expect(reading.ampacity_a == 32, f"a 220 ohm cable should read 32 A, read {reading}")
        plant.pp_ohm = None
    _expect(reading.fault is None, f"proximity fault: {reading.fault}")
    ohm = f"{reading.resistance_ohm:.0f} ohm, " if reading.resistance_ohm is not None else ""
    latch = f", latch {reading.latch.value}" if reading.latch else ""
    return f"{ohm}cable {reading.ampacity_a} A{latch}"


async def _contactor(hal: BoardHal, actuate: bool) -> str:
    before = await hal.contactor.feedback_closed()
    if not actuate:
        return f"open commanded, mirror {'absent' if before is None else ('closed' if before else 'open')}"
    _expect(before is not True, "mirror says closed while the contactor is commanded open (welded?)")
    # A co-processor energises the coil only while the EV asks for power (pilot PWM on, EV in C):
    # on a simulated board the plant plays that EV; on a bench an EV simulator must be in state C.
    plant = hal.sim.plant if hal.sim else None
    await hal.pilot.set_pwm(100)  # 10 % = 6 A, the lowest offer
    if plant is not None:
        plant.ev_state = "C"
    await hal.settle()
    try:
        await hal.contactor.close()
        await hal.settle(0.2)
        closed = await hal.contactor.feedback_closed()
        await hal.contactor.open()
        await hal.settle(0.2)
        opened = await hal.contactor.feedback_closed()
    finally:
        await hal.contactor.open()
        if plant is not None:
            plant.ev_state = "A"
        await hal.pilot.set_f()
    if closed is None:
        return "cycled; no mirror contact on this board"
    interlock = (
        " (a co-processor closes it only with an EV in state C)" if hal.config.contactor.driver == "coprocessor" else ""
    )
    _expect(closed is True, f"mirror did not close within 200 ms (failure to close){interlock}")
    _expect(opened is False, "mirror did not open within 200 ms (welded?)")
    return "closed and opened, mirror followed"


async def _lock(hal: BoardHal, actuate: bool) -> str:
    assert hal.lock is not None
    if not actuate:
        fb = await hal.lock.feedback_locked()
        return f"feedback {'absent' if fb is None else ('locked' if fb else 'unlocked')}"
    await hal.lock.lock()
    await hal.settle(0.1)
    locked = await hal.lock.feedback_locked()
    await hal.lock.unlock()
    await hal.settle(0.1)
    unlocked = await hal.lock.feedback_locked()
    if locked is None:
        return "cycled; no feedback on this board"
    _expect(locked is True and unlocked is False, f"feedback did not follow (locked={locked}, unlocked={unlocked})")
    return "locked and unlocked, feedback followed"


async def _rcd(hal: BoardHal, actuate: bool) -> str:
    tripped = await hal.rcd.tripped()
    _expect(not tripped, "RCD reports tripped with no load")
    if not actuate:
        return "not tripped"
    passed = await hal.rcd.self_test()
    _expect(passed, "self-test failed: the test current did not trip it in time, or it did not clear")
    return "not tripped; self-test passed"


async def _temperatures(hal: BoardHal, actuate: bool) -> str:
    readings = []
    for sensor in hal.temperatures:
        value = await sensor.read_c()
        _expect(-40.0 < value < 150.0, f"{sensor.name}: {value:.1f} °C is not plausible")
        readings.append(f"{sensor.name} {value:.1f} °C")
    return ", ".join(readings)


async def _meter(hal: BoardHal, actuate: bool) -> str:
    assert hal.meter is not None
    first = await hal.meter.read()
    volts = "/".join(f"{v:.1f}" for v in first.voltage_v)
    _expect(40.0 < first.frequency_hz < 70.0 or max(first.voltage_v) < 50.0, f"frequency {first.frequency_hz} Hz")
    text = f"{volts} V, {first.frequency_hz:.2f} Hz, {first.total_power_w:.0f} W"
    plant = hal.sim.plant if hal.sim else None
    if plant is None:
        return f"{text}, import {first.import_wh:.3f} Wh, export {first.export_wh:.3f} Wh"
    # Simulated board: draw 16 A per phase for one second and check power and energy end to end
    # (plant -> chip registers -> SPI bytes -> driver scaling -> host-side energy totals).
    plant.ev_current_a = [16.0] * plant.phases
    expected_w = sum(plant.power_w())
    before = await hal.meter.read()
    await hal.clock.sleep(1.0)
    after = await hal.meter.read()
    plant.ev_current_a = [0.0] * plant.phases
    _expect(
        abs(after.total_power_w - expected_w) < 0.02 * expected_w,
        f"power {after.total_power_w:.0f} W, plant {expected_w:.0f} W",
    )
    gained = after.import_wh - before.import_wh
    _expect(
        0.7 * expected_w / 3600 < gained < 1.5 * expected_w / 3600,
        f"energy grew {gained:.3f} Wh in 1 s at {expected_w:.0f} W",
    )
    return f"{text}; at 16 A/phase {after.total_power_w:.0f} W, +{gained:.2f} Wh in 1 s"


async def _converter(hal: BoardHal, actuate: bool) -> str:
    assert hal.converter is not None
    caps = hal.converter.capabilities
    status = await hal.converter.read_status()
    text = (
        f"{caps.min_voltage_v:.0f}-{caps.max_voltage_v:.0f} V, {caps.max_current_a:.0f} A, "
        f"{caps.max_power_w / 1000:.0f} kW{', bidirectional' if caps.bidirectional else ''}; "
        f"now {status.mode.value}, {status.voltage_v:.1f} V {status.current_a:+.1f} A"
    )
    _expect(not status.faults, f"module reports faults: {', '.join(sorted(status.faults))}")
    if actuate and hal.sim is not None:
        await hal.converter.set_setpoint(caps.min_voltage_v + 50.0, 1.0)
        await hal.converter.set_mode(ConverterMode.CHARGE)
        await hal.settle(1.5)
        on = await hal.converter.read_status()
        await hal.converter.set_mode(ConverterMode.OFF)
        _expect(on.output_on, "output did not turn on")
        text += f"; on at {on.voltage_v:.1f} V then off"
    return text


async def _imd(hal: BoardHal, actuate: bool) -> str:
    assert hal.imd is not None
    reading = await hal.imd.read()
    _expect(not reading.alarm, "insulation alarm with nothing connected")
    if not actuate:
        return "no alarm"
    passed = await hal.imd.self_test()
    _expect(passed, "self-test failed")
    return "no alarm; self-test passed"


async def _indicator(hal: BoardHal, actuate: bool) -> str:
    assert hal.indicator is not None
    shown = []
    for indication in (Indication.IDLE, Indication.CHARGING, Indication.FAULT, Indication.OFF) if actuate else ():
        await hal.indicator.show(indication)
        shown.append(indication.value)
    return "showed " + ", ".join(shown) if shown else "not actuated"


def _v(value: float | None) -> str:
    return "none" if value is None else f"{value:+.1f} V"


# --------------------------------------------------------------------------------------- runner
def checks_for(hal: BoardHal) -> list[tuple[str, Check]]:
    cfg = hal.config
    checks: list[tuple[str, Check]] = [
        (f"pilot ({cfg.pilot.driver}, sense {cfg.pilot_sense.driver})", _pilot),
        (f"proximity ({cfg.proximity.driver})", _proximity),
        (f"contactor ({cfg.contactor.driver})", _contactor),
    ]
    if hal.lock is not None and cfg.lock is not None:
        checks.append((f"lock ({cfg.lock.driver})", _lock))
    checks.append((f"rcd ({cfg.rcd.driver})", _rcd))
    if hal.temperatures:
        checks.append(("temperatures (ntc-adc)", _temperatures))
    if hal.meter is not None and cfg.meter is not None:
        checks.append((f"meter ({cfg.meter.driver})", _meter))
    if hal.converter is not None and cfg.converter is not None:
        checks.append((f"converter ({cfg.converter.driver})", _converter))
    if hal.imd is not None and cfg.imd is not None:
        checks.append((f"imd ({cfg.imd.driver})", _imd))
    if hal.indicator is not None and cfg.indicator is not None:
        checks.append((f"indicator ({cfg.indicator.driver})", _indicator))
    return checks


async def probe(hal: BoardHal, *, actuate: bool) -> list[ProbeResult]:
    """Run every check; one failing peripheral never stops the others from being probed."""
    results = []
    actuate = actuate or hal.sim is not None
    for name, check in checks_for(hal):
        started = time.monotonic()
        try:
            detail = await check(hal, actuate)
            ok = True
        except (HalError, ProbeFailure) as exc:
            detail, ok = str(exc), False
        results.append(ProbeResult(name, ok, detail, time.monotonic() - started))
    return results


def format_results(board_name: str, results: list[ProbeResult]) -> str:
    width = max(len(r.function) for r in results)
    lines = [f"board {board_name}"]
    for r in results:
        lines.append(f"  {r.function:<{width}}  {'PASS' if r.ok else 'FAIL'}  {r.detail}")
    passed = sum(r.ok for r in results)
    lines.append(f"  {passed} of {len(results)} peripherals passed")
    return "\n".join(lines)
