"""Run every benchmark in tools/bench, one after the other.

    .venv/bin/python -m tools.bench [NAME ...]

Each benchmark runs in its own interpreter (``python -m tools.bench.NAME``), so that one cannot
warm up, slow down or leave tasks behind for the next. The exit status is that of the first
benchmark that failed (a benchmark fails when it misses its goal or cannot run), else 0.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

#: Every benchmark module of this package, in the order they run.
BENCHMARKS = ("hal_links", "reaction", "hil_speed", "ocpp_uplink", "metering", "energy", "exi", "secc")
#: The repository root: ``tools.bench.NAME`` imports from there whatever the caller's directory.
ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"run only these of {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"no benchmark {', '.join(unknown)}; there are {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    status = 0
    for name in names:
        print(f"=== {name}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, "-m", f"tools.bench.{name}"], cwd=ROOT, check=False).returncode
        print(
            f"=== {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.perf_counter() - t0:.1f} s\n",
            flush=True,
        )
        if rc != 0 and status == 0:
            status = rc
    return status


if __name__ == "__main__":
    sys.exit(main())
