"""Benchmark: one energy-manager cycle for 1, 100 and 1000 connectors.

    .venv/bin/python -m tools.bench.energy [--cycles 200]

Each cycle resolves the site's inputs, computes the chargers' budget from the site meter
(eq. 1.2.5.1), resolves every connector's window, splits the budget (equal shares, EVs pausing below
6 A, board limits) and applies anti-chatter; the site and connector inputs change every cycle, as
they would with live metering. Reference: the same number of connectors arbitrated the simple way,
each connector's own limit chain alone (``firmware.limits.LimitSet.effective``, what the firmware did
before the site manager). Goal: a cycle under 10 ms at 1000 connectors on a desktop.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from firmware.energy.manager import ConnectorInput, ConnectorSpec, EnergyManager, SiteConfig
from firmware.limits import Limit, LimitSet
from tools.bench.stats import median_p99_ms

GOAL_MS = 10.0
SIZES = (1, 100, 1000)


def bench_manager(n: int, cycles: int, rng: random.Random) -> list[float]:
    specs = {k: ConnectorSpec(k, f"board{k // 20}", 3, 230.0) for k in range(n)}
    boards = {f"board{b}": 20 * 11_000.0 for b in range(n // 20 + 1)}
    manager = EnergyManager(
        SiteConfig(grid_import_max_w=n * 7_000.0 + 20_000.0, hold_s=0.0, min_pause_s=0.0), specs, board_limits=boards
    )
    samples = []
    draw = dict.fromkeys(specs, 0.0)
    for cycle in range(cycles):
        now = float(cycle)
        inputs = {
            k: ConnectorInput(measured_w=draw[k], wants_power=rng.random() > 0.1, hardware_max_w=22_080.0)
            for k in specs
        }
        manager.site_meter(rng.uniform(0, 20_000) + sum(draw.values()), now)
        t0 = time.perf_counter()
        result = manager.cycle(now, inputs)
        samples.append(time.perf_counter() - t0)
        draw = {k: max(0.0, r.power_w) for k, r in result.connectors.items()}
    return samples


def bench_reference(n: int, cycles: int, rng: random.Random) -> list[float]:
    sets = []
    for _ in range(n):
        limits = LimitSet(fallback_a=6.0)
        limits.set(Limit("board", 32.0))
        limits.set(Limit("cable", 32.0))
        sets.append(limits)
    samples = []
    for cycle in range(cycles):
        for limits in sets:
            limits.set(Limit("ems", rng.uniform(6, 32), expires_at=cycle + 10.0))
        t0 = time.perf_counter()
        for limits in sets:
            limits.effective(float(cycle))
        samples.append(time.perf_counter() - t0)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200)
    args = parser.parse_args(argv)
    rng = random.Random(7)
    print(f"{'connectors':>10} {'cycle median ms':>16} {'p99 ms':>9} {'per-connector LimitSet ms':>26} {'ratio':>7}")
    worst = 0.0
    for n in SIZES:
        ours = median_p99_ms(bench_manager(n, args.cycles, rng))
        ref = median_p99_ms(bench_reference(n, args.cycles, rng))
        print(f"{n:>10} {ours[0]:>16.3f} {ours[1]:>9.3f} {ref[0]:>26.3f} {ours[0] / ref[0]:>7.1f}")
        if n == SIZES[-1]:
            worst = ours[1]
    verdict = "met" if worst < GOAL_MS else "MISSED"
    print(f"\ngoal: a cycle under {GOAL_MS:.0f} ms at {SIZES[-1]} connectors: p99 {worst:.2f} ms, {verdict}")
    return 0 if worst < GOAL_MS else 1


if __name__ == "__main__":
    sys.exit(main())
