"""The meter guard: every plausibility check refuses wrong energy (table), accepts the real thing
(wraps, catching up after an outage), and a property: whatever the meter answers, the totals the
guard hands out never go down and never grow faster than the board can deliver."""

from __future__ import annotations

import asyncio
import itertools
import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.metering.plausibility import STALE_ENERGY_WH, MeterGuard, PlausibilityLimits
from hal.clock import VirtualClock
from hal.errors import DeviceTimeout, HalError, ImplausibleReading
from hal.types import MeterReading

FULL_W = 11_000.0
LIMITS = PlausibilityLimits(max_power_w=FULL_W, resolution_wh=0.01)


@dataclass
class Answer:
    import_wh: float
    export_wh: float = 0.0
    power_w: float = 0.0
    error: HalError | None = None


class ScriptedMeter:
    """A Meter whose next answer the test sets."""

    phases = 1

    def __init__(self) -> None:
        self.answer = Answer(1000.0)

    async def read(self) -> MeterReading:
        if self.answer.error is not None:
            raise self.answer.error
        a = self.answer
        return MeterReading(
            voltage_v=(230.0,),
            current_a=(abs(a.power_w) / 230.0,),
            power_w=(a.power_w,),
            frequency_hz=50.0,
            import_wh=a.import_wh,
            export_wh=a.export_wh,
        )


def _run(steps: list[tuple[float, Answer]], limits: PlausibilityLimits = LIMITS) -> list[MeterReading | str]:
    """Feed ``(seconds later, answer)`` steps to a guard; each result is a reading or the error text."""

    async def go() -> list[MeterReading | str]:
        clock = VirtualClock()
        meter = ScriptedMeter()
        guard = MeterGuard(meter, limits, clock=clock)
        out: list[MeterReading | str] = []
        for delay, answer in steps:
            await clock.advance(delay)
            meter.answer = answer
            try:
                out.append(await guard.read())
            except ImplausibleReading as exc:
                out.append(f"implausible: {exc.message}")
            except HalError as exc:
                out.append(f"error: {exc.message}")
        return out

    return asyncio.run(go())


# (name, steps after a first reading of 1000 Wh import / 0 export at 0 W, expected text of the last step)
REFUSED = [
    ("import went backwards", [(1.0, Answer(990.0))], "import energy went backwards from 1000.000 to 990.000"),
    (
        "export went backwards",
        [(20.0, Answer(1000.0, 50.0, power_w=-9_000.0)), (1.0, Answer(1000.0, 40.0, power_w=-9_000.0))],
        "export energy went backwards from 50.000 to 40.000",
    ),
    ("NaN total", [(1.0, Answer(math.nan))], "import energy total nan Wh is not a meter value"),
    ("infinite total", [(1.0, Answer(math.inf))], "import energy total inf Wh is not a meter value"),
    ("negative export", [(1.0, Answer(1000.0, -5.0))], "export energy total -5.0 Wh is not a meter value"),
    # 11 kW for 10 s is 30.6 Wh; with 25 % headroom 38.2 Wh: 100 Wh is a jump.
    ("jump", [(10.0, Answer(1100.0, power_w=11_000.0))], "import energy jumped by 100.000 Wh in 10.0 s"),
    (
        "stuck while power flows",
        [(1.0, Answer(1000.0, power_w=7_200.0)), (10.0, Answer(1000.0, power_w=7_200.0))],
        "import energy stuck at 1000.000 Wh while the measured power delivered 21.0 Wh",
    ),
    (
        "export stuck while discharging",
        [(20.0, Answer(1000.0, 50.0, power_w=-9_000.0)), (10.0, Answer(1000.0, 50.0, power_w=-9_000.0))],
        "export energy stuck at 50.000 Wh",
    ),
]


@pytest.mark.parametrize(("name", "steps", "expected"), REFUSED, ids=[r[0] for r in REFUSED])
def test_each_plausibility_check_refuses_wrong_energy(
    name: str, steps: list[tuple[float, Answer]], expected: str
) -> None:
    results = _run([(0.0, Answer(1000.0)), *steps])
    assert all(isinstance(r, MeterReading) for r in results[:-1]), results  # only the last step is wrong
    last = results[-1]
    assert isinstance(last, str) and last.startswith("implausible: "), last
    assert expected in last


def test_a_refused_reading_does_not_move_the_baseline() -> None:
    """After a glitch (one corrupt value), the next good reading is judged against the last good one
    and accepted; a meter that stays reset keeps failing."""
    results = _run(
        [
            (0.0, Answer(1000.0)),
            (1.0, Answer(5_000_000.0)),  # glitch: jump
            (1.0, Answer(1000.5, power_w=900.0)),  # good again
            (1.0, Answer(0.0)),  # meter reset
            (60.0, Answer(0.1)),  # still below 1000.5: still refused
        ]
    )
    assert isinstance(results[1], str) and "jumped" in results[1]
    assert isinstance(results[2], MeterReading) and results[2].import_wh == 1000.5
    assert all(isinstance(r, str) and "backwards" in r for r in results[3:])


def test_a_register_that_wraps_is_unrolled_into_a_continuous_total() -> None:
    limits = PlausibilityLimits(max_power_w=FULL_W, resolution_wh=1.0, register_modulus_wh=100_000.0)
    results = _run(
        [
            (0.0, Answer(99_990.0, power_w=10_000.0)),
            (10.0, Answer(15.0, power_w=10_000.0)),  # 25 Wh across the wrap
            (10.0, Answer(42.0, power_w=10_000.0)),
        ],
        limits,
    )
    assert [r.import_wh for r in results if isinstance(r, MeterReading)] == [99_990.0, 100_015.0, 100_042.0]


def test_a_fall_smaller_than_half_the_modulus_is_not_a_wrap() -> None:
    limits = PlausibilityLimits(max_power_w=FULL_W, resolution_wh=1.0, register_modulus_wh=100_000.0)
    results = _run([(0.0, Answer(60_000.0)), (1.0, Answer(20_000.0))], limits)
    assert isinstance(results[1], str) and "backwards" in results[1]


def test_energy_caught_up_after_a_communication_outage_is_accepted() -> None:
    """The meter was silent for 60 s at 11 kW: the 183 Wh it counted meanwhile is plausible, because the
    interval runs from the last accepted reading."""
    results = _run(
        [
            (0.0, Answer(1000.0, power_w=11_000.0)),
            (1.0, Answer(0.0, error=DeviceTimeout("meter", "no answer"))),
            (59.0, Answer(1000.0 + 11_000.0 * 60 / 3600, power_w=11_000.0)),
        ]
    )
    assert results[1] == "error: no answer"
    assert isinstance(results[2], MeterReading)


def test_a_register_moving_in_small_steps_is_not_stale() -> None:
    """1.4 kW (6 A) with a 10 Wh register resolution: the register moves every ~26 s, and the guard
    waits for STALE_ENERGY_WH before it calls it stuck."""
    limits = PlausibilityLimits(max_power_w=FULL_W, resolution_wh=10.0)
    steps: list[tuple[float, Answer]] = [(0.0, Answer(1000.0, power_w=1_400.0))]
    energy = 1000.0
    for second in range(1, 200):
        exact = 1000.0 + 1_400.0 * second / 3600.0
        energy = 1000.0 + 10.0 * math.floor((exact - 1000.0) / 10.0)
        steps.append((1.0, Answer(energy, power_w=1_400.0)))
    results = _run(steps, limits)
    assert all(isinstance(r, MeterReading) for r in results), [r for r in results if isinstance(r, str)][:1]
    assert STALE_ENERGY_WH > 10.0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.1, max_value=120.0),
            st.one_of(st.floats(min_value=-1e6, max_value=1e7), st.sampled_from([math.nan, math.inf, -math.inf])),
            st.floats(min_value=-15_000.0, max_value=15_000.0),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_handed_out_totals_never_go_down_nor_outrun_the_board(steps: list[tuple[float, float, float]]) -> None:
    results = _run([(0.0, Answer(1000.0)), *[(dt, Answer(wh, power_w=p)) for dt, wh, p in steps]])
    times = [0.0]
    for dt, _, _ in steps:
        times.append(times[-1] + dt)
    accepted = [(t, r) for t, r in zip(times, results, strict=True) if isinstance(r, MeterReading)]
    for (t0, a), (t1, b) in itertools.pairwise(accepted):
        assert b.import_wh >= a.import_wh - LIMITS.resolution_wh
        assert b.import_wh - a.import_wh <= FULL_W * 1.25 * (t1 - t0) / 3600.0 + 2 * LIMITS.resolution_wh + 1e-9
