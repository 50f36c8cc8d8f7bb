"""Kill the real firmware process (``evse run`` on the simulated board) at random points of charging
sessions, restart it, and check the journal: no session lost, none duplicated, none left open that
should not be, energy never going down.

Real time with bounded waits: every wait has a deadline, and every child is killed at the end.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from firmware.control import request

ROUNDS = 8
BOOT_TIMEOUT_S = 20.0


def _evse(*args: str) -> list[str]:
    return [sys.executable, "-m", "firmware.cli", *args]


def _ctl(sock: Path, cmd: str, **params: Any) -> Any:
    """One request to the running firmware over its control socket (bounded by the client timeout)."""
    answer = asyncio.run(request(sock, {"cmd": cmd, **params}, timeout_s=5.0))
    if not answer["ok"]:
        raise RuntimeError(answer["error"])
    return answer["result"]


def _start(journal: Path, sock: Path, ev: str, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        _evse("run", "--board", "sim-ac", "--journal", str(journal), "--control", str(sock), "--free", "--sim-ev", ev),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"firmware exited with {proc.returncode}: {log.read_text()[-2000:]}")
        if sock.exists():
            try:
                _ctl(sock, "status")
                return proc
            except (OSError, TimeoutError, RuntimeError):
                pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("firmware did not come up in time")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _sessions(journal: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(journal) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM sessions").fetchall()
    return [dict(r) for r in rows]


@pytest.mark.timeout(240)
def test_killing_the_firmware_never_loses_or_duplicates_a_session(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    journal, sock, log = tmp_path / "journal.db", tmp_path / "evse.sock", tmp_path / "firmware.log"
    seen_sessions: set[str] = set()
    plugged = False
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(ROUNDS):
            proc = _start(journal, sock, "C" if plugged else "A", log)
            procs.append(proc)
            status = _ctl(sock, "status")
            if plugged:
                # The EV stayed plugged through the crash: the session must have been resumed.
                open_ids = [s["session_id"] for s in _sessions(journal) if s["stopped_at"] is None]
                assert status["session_id"] in open_ids
            if not plugged or rng.random() < 0.3:
                _ctl(sock, "sim", ev_state="C", pp_ohm=220, current_a=16)
                plugged = True
            deadline = time.monotonic() + rng.uniform(0.3, 2.5)
            while time.monotonic() < deadline:
                sid = _ctl(sock, "status").get("session_id")
                if sid:
                    seen_sessions.add(sid)
                time.sleep(0.1)
            if rng.random() < 0.35:
                _ctl(sock, "sim", ev_state="A", current_a=0)  # unplug, and crash right after
                plugged = False
                time.sleep(rng.uniform(0.0, 0.3))
            _kill(proc)
        # Final boot with the EV gone: everything must be closed.
        proc = _start(journal, sock, "A", log)
        procs.append(proc)
        _ctl(sock, "status")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)

    sessions = _sessions(journal)
    ids = [s["session_id"] for s in sessions]
    assert len(ids) == len(set(ids)), "a session was duplicated"
    assert seen_sessions <= set(ids), f"sessions lost: {seen_sessions - set(ids)}"
    assert all(s["stopped_at"] is not None for s in sessions), "a session stayed open with no EV"
    for s in sessions:
        assert s["meter_stop_wh"] >= s["meter_start_wh"]
        assert s["stop_reason"] in ("EVDisconnected", "PowerLoss", "DeAuthorized")
    # Energy never goes down across sessions (meter totals survive every crash).
    ordered = sorted(sessions, key=lambda s: s["started_at"])
    for before, after in itertools.pairwise(ordered):
        assert after["meter_start_wh"] >= before["meter_stop_wh"] - 1e-6
    assert len(sessions) >= 2
