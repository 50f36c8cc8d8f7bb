"""Crash test of the session journal: a child process runs sessions against the journal and is killed with
SIGKILL at random points, several times; after each kill the journal must still hold every fact the child
reported as committed, and each restart must reconcile what was left open.

SIGKILL tests what a crash of the firmware process can do (a commit cut half-way, a lost print); the
journal's answer to a power cut (the OS losing its write cache) is ``synchronous=FULL``, which a test in
one running kernel cannot cut.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from firmware.journal import REASON_EV_DISCONNECTED, REASON_POWER_LOSS, Journal, SessionRecord

from .journal_crash_child import CONNECTORS, STOP_REASONS

ROOT = Path(__file__).resolve().parents[2]
LINE_TIMEOUT_S = 5.0  # a child that prints nothing for this long is stuck: fail instead of hanging
TEST_BUDGET_S = 15.0  # all rounds together (plus the final check) stay well under 20 s
ROUNDS = 10


@dataclass
class Round:
    plugged: bool
    stale: bool
    lines: list[list[str]] = field(default_factory=list)
    open_before: dict[int, str | None] = field(default_factory=dict)  # what the journal held when it began


class ChildOutput:
    """Reads the child's stdout line by line with a deadline per line (a stuck child fails the test)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._fd, selectors.EVENT_READ)
        self._buf = b""
        self.eof = False

    def _fill(self, timeout: float) -> None:
        if not self._sel.select(timeout):
            raise AssertionError(f"the child printed nothing for {timeout} s")
        chunk = os.read(self._fd, 65536)
        if chunk:
            self._buf += chunk
        else:
            self.eof = True

    def line(self) -> list[str] | None:
        """The next complete line, or None at the end of the output."""
        while b"\n" not in self._buf and not self.eof:
            self._fill(LINE_TIMEOUT_S)
        if b"\n" not in self._buf:
            return None  # a partial last line (the kill cut the print) is not a report
        raw, self._buf = self._buf.split(b"\n", 1)
        return raw.decode().split()

    def rest(self) -> list[list[str]]:
        """Every complete line left (the child is dead, so the output ends)."""
        lines = []
        while (item := self.line()) is not None:
            lines.append(item)
        return lines

    def close(self) -> None:
        self._sel.close()


def _spawn(db: Path, seed: int, plugged: bool, stale: bool, stderr_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    args = [db, seed, int(plugged), int(stale), *extra]
    with stderr_path.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.firmware.journal_crash_child", *map(str, args)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )


def _open_sessions(db: Path) -> dict[int, str | None]:
    """The open session of each connector, checking at most one is open per connector."""
    with Journal(db) as journal:  # opening runs quick_check: the file survived the kill undamaged
        result: dict[int, str | None] = {}
        for connector in CONNECTORS:
            open_now = [s for s in journal.sessions(connector) if s.is_open]
            assert len(open_now) <= 1, f"connector {connector}: {len(open_now)} open sessions"
            result[connector] = open_now[0].session_id if open_now else None
        return result


def _run_round(db: Path, tmp_path: Path, rng: random.Random, rnd: Round, *, finish: bool) -> None:
    stderr_path = tmp_path / "child.stderr"
    extra = ("--finish",) if finish else ()
    proc = _spawn(db, rng.randrange(1 << 30), rnd.plugged, rnd.stale, stderr_path, *extra)
    out = ChildOutput(proc)
    try:
        if finish:
            rnd.lines = out.rest()
            assert proc.wait(timeout=LINE_TIMEOUT_S) == 0, stderr_path.read_text()
            assert rnd.lines[-1] == ["DONE"]
            return
        wanted = rng.randint(1, 60)
        for _ in range(wanted):
            item = out.line()
            assert item is not None, f"the child ended early: {stderr_path.read_text()}"
            rnd.lines.append(item)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=LINE_TIMEOUT_S) == -signal.SIGKILL, stderr_path.read_text()
        rnd.lines.extend(out.rest())  # lines printed before the kill landed are reports too
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=LINE_TIMEOUT_S)
        out.close()
        if proc.stdout is not None:
            proc.stdout.close()


def _check_reconcile_lines(rnd: Round) -> set[str]:
    """The RECONCILE lines of a round follow the policy; returns the ids closed by reconciliation."""
    closed: set[str] = set()
    for item in rnd.lines:
        if item[0] != "RECONCILE":
            continue
        connector, action, session_id, reason = int(item[1]), item[2], item[3], item[4]
        expected_id = rnd.open_before[connector]
        if expected_id is None:
            assert (action, session_id) == ("none", "-"), item
        elif rnd.plugged and not rnd.stale:
            assert (action, session_id) == ("resumed", expected_id), item
        else:
            assert (action, session_id) == ("closed", expected_id), item
            assert reason == (REASON_POWER_LOSS if rnd.plugged else REASON_EV_DISCONNECTED), item
            closed.add(session_id)
    return closed


@pytest.mark.timeout(60)
def test_sessions_survive_sigkill_at_random_points(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    rng = random.Random(20240611)
    began = time.monotonic()
    rounds: list[Round] = []
    for index in range(ROUNDS + 1):
        finish = index == ROUNDS
        # The finish round unplugs every EV, so the journal ends with no open session.
        rnd = Round(plugged=not finish and rng.random() < 0.6, stale=not finish and rng.random() < 0.25)
        rnd.open_before = _open_sessions(db) if db.exists() else dict.fromkeys(CONNECTORS)
        _run_round(db, tmp_path, rng, rnd, finish=finish)
        rounds.append(rnd)
        assert time.monotonic() - began < TEST_BUDGET_S, "the crash test is too slow"

    started: dict[str, tuple[int, float]] = {}
    updated: dict[str, float] = {}
    stopped: dict[str, tuple[str, float]] = {}
    reconciled_closed: set[str] = set()
    for rnd in rounds:
        reconciled_closed |= _check_reconcile_lines(rnd)
        for item in rnd.lines:
            kind = item[0]
            if kind == "START":
                assert item[1] not in started, f"session id {item[1]} reported started twice"
                started[item[1]] = (int(item[2]), float(item[3]))
            elif kind == "UPDATE":
                updated[item[1]] = max(updated.get(item[1], 0.0), float(item[2]))
            elif kind == "STOP":
                stopped[item[1]] = (item[2], float(item[3]))
    assert started and stopped and updated, "the rounds were too short to test anything"

    with Journal(db) as journal:
        stored: dict[str, SessionRecord] = {}
        for record in journal.sessions():
            assert record.session_id not in stored, f"session {record.session_id} duplicated"
            stored[record.session_id] = record
        # No session lost: every reported start is in the journal, as reported.
        for session_id, (connector, meter_start) in started.items():
            assert session_id in stored, f"session {session_id} was reported started and is lost"
            assert (stored[session_id].connector, stored[session_id].meter_start_wh) == (connector, meter_start)
        # A start can commit and be killed before its line is printed: at most one per killed round.
        assert len(set(stored) - set(started)) <= ROUNDS
        for session_id, meter in updated.items():
            record = stored[session_id]
            assert record.last_meter_wh >= meter, f"session {session_id} lost a checkpoint"
        for session_id, (reason, meter_stop) in stopped.items():
            record = stored[session_id]
            assert (record.stop_reason, record.meter_stop_wh) == (reason, meter_stop), record
        # The finish round closed everything; every stopped session is consistent.
        assert all(journal.open_session(c) is None for c in CONNECTORS)
        for record in stored.values():
            assert record.stopped_at is not None and record.meter_stop_wh is not None, record
            assert record.meter_stop_wh >= record.last_meter_wh >= record.meter_start_wh, record
            if record.stop_reason in (REASON_POWER_LOSS, REASON_EV_DISCONNECTED):
                assert record.stopped_at == record.last_checkpoint_at, record  # never "now"
            else:
                assert record.stop_reason in STOP_REASONS, record
        assert reconciled_closed <= {s for s, r in stored.items() if r.stop_reason not in STOP_REASONS}
