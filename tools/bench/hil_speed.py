"""Benchmark: how much faster than real time the HIL rig runs a long single-connector session.

    .venv/bin/python -m tools.bench.hil_speed [--hours 10] [--segment-s 60]

A 100 kWh EV charges from 10 % on sim-ac with 1 s metering (the firmware's own meter period) for
``--hours`` of virtual time; the run is timed per segment of simulated time. Prints the median and p99
of the speed-up over segments (simulated seconds per wall second) and the overall ratio, side by side
with the goal of issue 4 (1000x).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from hil.runner import ScenarioRun
from hil.scenario import parse_scenario

GOAL = 1000.0

SCENARIO = """
format: 1
name: bench-long-session
board: sim-ac
duration: {duration}
settings: {{free_charging: true}}
evs:
  - {{id: car, battery_kwh: 100, soc: 0.1, target_soc: 1.0, max_current_a: 32, plug_in: 5s}}
expect:
  - {{check: sessions, count: 1}}
"""


async def measure(hours: float, segment_s: float) -> tuple[list[float], float, float]:
    duration = hours * 3600
    scenario = parse_scenario(SCENARIO.format(duration=duration))
    with tempfile.TemporaryDirectory() as tmp:
        run = ScenarioRun(scenario, Path(tmp), Path(tmp))
        await run.start()
        task = asyncio.create_task(run.model_loop())
        speedups = []
        wall_start = time.perf_counter()
        try:
            for _, _, event in run.schedule():
                await run.advance_to(event.at)
                run.act(event)
            t = run.now()
            while t < duration:
                nxt = min(duration, t + segment_s)
                started = time.perf_counter()
                await run.advance_to(nxt)
                speedups.append((nxt - t) / (time.perf_counter() - started))
                t = nxt
        finally:
            task.cancel()
            wall = time.perf_counter() - wall_start
            await run.close()
    return speedups, duration, wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=10.0, help="simulated hours")
    parser.add_argument("--segment-s", type=float, default=60.0, help="simulated seconds per timed segment")
    args = parser.parse_args()
    speedups, duration, wall = asyncio.run(measure(args.hours, args.segment_s))
    ordered = sorted(speedups)
    p01 = ordered[max(0, round(0.01 * (len(ordered) - 1)))]  # the slowest 1 %: "p99" of the wall time
    print(f"{args.hours:g} h simulated in {wall:.1f} s wall, {len(speedups)} segments of {args.segment_s:g} s")
    print(f"{'':<28} {'median':>9} {'p99 (slow)':>11}   {'goal':>7} {'ratio to goal':>14}")
    median = statistics.median(ordered)
    print(f"{'speed-up (sim s / wall s)':<28} {median:>8.1f}x {p01:>10.1f}x   {GOAL:>6.0f}x {median / GOAL:>13.3f}")
    passed = duration / wall >= GOAL
    print(f"overall: {duration / wall:.1f}x real time ({'PASS' if passed else 'FAIL'} against {GOAL:g}x)")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
