"""Run a piece of the test suite inside a private network namespace with a veth pair.

SDP multicast, SLAC raw Ethernet and the interop sessions need a real link. ``unshare -rn`` gives a
rootless user + network namespace that sees nothing of the host's network; inside it this helper
brings ``lo`` up, creates the veth pair ``secc0`` <-> ``ev0``, brings both ends up and waits
(bounded) until both carry a non-tentative ``fe80::`` address, then runs the payload:

* :func:`run_in_netns` imports ``module`` and calls ``function(*args)`` (a coroutine function is
  run with ``asyncio.run``); an exception makes the child exit 1 with the traceback on stderr.
* :func:`run_command_in_netns` runs any command (a script, another venv's Python, ...).

Both return the ``CompletedProcess`` (text output). The child runs in its own process group, which
is killed as a whole when ``timeout`` expires, so nothing it started outlives the test; the timeout
then raises ``subprocess.TimeoutExpired`` carrying what the child printed so far.

Duplicate address detection is switched off in the namespace by default (``dad=False``): with it
the addresses stay tentative for 1-2 s per run, and nothing tested here depends on it.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECC_IF = "secc0"
EV_IF = "ev0"
SETUP_TIMEOUT_S = 10.0
_IFA_F_TENTATIVE = 0x40
_IFA_F_DADFAILED = 0x08


def run_in_netns(
    module: str, function: str, *args: str, timeout: float, dad: bool = False
) -> subprocess.CompletedProcess[str]:
    """Call ``module.function(*args)`` in a fresh namespace; see the module docstring."""
    return _run([sys.executable, "-m", "tests.netns", _flag(dad), "call", module, function, *args], timeout)


def run_command_in_netns(
    argv: Sequence[str], *, timeout: float, dad: bool = False, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in a fresh namespace once the veth pair is ready."""
    cmd = [sys.executable, "-m", "tests.netns", _flag(dad), "exec", str(cwd or ROOT), *argv]
    return _run(cmd, timeout)


def _flag(dad: bool) -> str:
    return "--dad" if dad else "--no-dad"


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen(
        ["unshare", "-rn", *cmd],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(proc.args, timeout, output=out, stderr=err) from None
    finally:
        # Whatever the payload left behind in its group goes with it.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# --- inside the namespace ----------------------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=5)


def _ready_link_locals() -> set[str]:
    ready = set()
    for line in Path("/proc/net/if_inet6").read_text().splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[0].startswith("fe80"):
            if not int(fields[4], 16) & (_IFA_F_TENTATIVE | _IFA_F_DADFAILED):
                ready.add(fields[5])
    return ready


def _set_up_link(dad: bool) -> None:
    if not dad:
        # Must precede the interfaces: they copy the "default" settings when created.
        for conf in ("default", "all"):
            Path(f"/proc/sys/net/ipv6/conf/{conf}/accept_dad").write_text("0")
    _ip("link", "set", "lo", "up")
    _ip("link", "add", "name", SECC_IF, "type", "veth", "peer", "name", EV_IF)
    _ip("link", "set", SECC_IF, "up")
    _ip("link", "set", EV_IF, "up")
    deadline = time.monotonic() + SETUP_TIMEOUT_S
    while not {SECC_IF, EV_IF} <= _ready_link_locals():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{SECC_IF}/{EV_IF} got no usable link-local address in {SETUP_TIMEOUT_S} s")
        time.sleep(0.01)


def _main(argv: list[str]) -> int:
    flag, mode, *rest = argv
    _set_up_link(dad=flag == "--dad")
    if mode == "exec":
        cwd, *command = rest
        return subprocess.run(command, cwd=cwd, check=False).returncode
    module, function, *args = rest
    target = getattr(importlib.import_module(module), function)
    if inspect.iscoroutinefunction(target):
        asyncio.run(target(*args))
    else:
        target(*args)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
