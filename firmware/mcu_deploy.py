"""``evse mcu deploy``: copy the safety co-processor's MicroPython firmware (``board/mcu/``) onto an
RP2040 with ``mpremote`` and report its memory use on the target.

    evse mcu deploy [--port /dev/ttyACM0] [--dry-run]

One ``mpremote`` run (its ``+``-chained commands): every firmware file to the board's root, then, on the
board, the firmware's modules imported and the heap measured (``gc.mem_alloc`` / ``gc.mem_free`` after
a collection, the figure that matters on a 264 KiB part), then a soft reset so ``main.py`` starts. The
co-processor boots safe (coil released, pilot F) whatever it was doing, so deploying is safe at any
time; the Pi sees its EVENT_BOOT and opens the link again.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import board.mcu

#: The firmware files, in the order they are copied (main.py last: a board that resets mid-copy never
#: starts a main.py whose modules are missing).
FILES = ("protocol.py", "core.py", "loop.py", "pins.py", "hw_rp2040.py", "main.py")
#: What the board runs to report its memory: the firmware's modules loaded, as main.py loads them.
MEMORY_PROBE = (
    "import gc, protocol, core, loop, pins, hw_rp2040; gc.collect(); print('MEM', gc.mem_alloc(), gc.mem_free())"
)
DEFAULT_PORT = "auto"  # mpremote's own choice: the first USB serial port with a MicroPython board
#: Copying six small files and the probe takes a few seconds over USB; a stuck board must not hang us.
TIMEOUT_S = 120.0
_MEM = re.compile(r"^MEM (\d+) (\d+)$", re.MULTILINE)


class DeployError(RuntimeError):
    """mpremote is missing, the board did not answer, or the firmware did not load there."""


def firmware_dir() -> Path:
    return Path(board.mcu.__file__).resolve().parent


def command(port: str, mpremote: str = "mpremote") -> list[str]:
    """The mpremote command line that deploys the firmware on ``port``."""
    argv = [mpremote, "connect", port]
    for name in FILES:
        argv += ["fs", "cp", str(firmware_dir() / name), f":{name}", "+"]
    return [*argv, "exec", MEMORY_PROBE, "+", "soft-reset"]


def deploy(port: str) -> tuple[int, int]:
    """Deploy and return (bytes of heap in use, bytes free) with the firmware loaded on the board."""
    for name in FILES:
        if not (firmware_dir() / name).is_file():
            raise DeployError(f"the firmware file {firmware_dir() / name} is missing")
    beside = Path(sys.executable).parent / "mpremote"  # the venv's own, when it is not on PATH
    mpremote = shutil.which("mpremote") or (str(beside) if beside.is_file() else None)
    if mpremote is None:
        raise DeployError("mpremote is not installed (pip install mpremote)")
    try:
        done = subprocess.run(command(port, mpremote), capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise DeployError(f"mpremote on {port} did not finish within {TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0:
        raise DeployError(f"mpremote on {port} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    found = _MEM.search(done.stdout)
    if found is None:
        raise DeployError(f"the firmware did not load on the board: {done.stdout.strip()[-2000:]}")
    return int(found.group(1)), int(found.group(2))


def _cmd_deploy(args: argparse.Namespace) -> int:
    if args.dry_run:
        print(" ".join(command(args.port)))
        return 0
    try:
        used, free = deploy(args.port)
    except DeployError as exc:
        print(f"evse mcu deploy: {exc}", file=sys.stderr)
        return 1
    print(f"deployed {len(FILES)} files to {args.port}; memory on the target with the firmware loaded:")
    print(f"  heap in use {used} bytes, free {free} bytes ({100 * used / (used + free):.0f} % used)")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mcu`` and its commands to the ``evse`` parser."""
    mcu = sub.add_parser("mcu", help="the RP2040 safety co-processor's MicroPython firmware")
    commands = mcu.add_subparsers(dest="mcu_command", required=True)
    p = commands.add_parser("deploy", help="copy board/mcu/ onto the co-processor with mpremote, report memory")
    p.add_argument("--port", default=DEFAULT_PORT, help="the board's serial port (default: mpremote's auto)")
    p.add_argument("--dry-run", action="store_true", help="print the mpremote command instead of running it")
    p.set_defaults(func=_cmd_deploy)
