"""Unit tests of the session journal (firmware/journal.py): lifecycle, invariants (also in SQL), meter
totals, actuators, the boot reconciliation policy, corrupt files, schema migration, and a hypothesis
state machine that runs random sequences of calls against a model."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import firmware.journal as journal_module
from firmware.journal import (
    MIGRATIONS,
    REASON_EV_DISCONNECTED,
    REASON_POWER_LOSS,
    SCHEMA_VERSION,
    HardwareSnapshot,
    Journal,
    JournalCorrupt,
    JournalError,
    SessionConflict,
    SessionRecord,
    SessionStopped,
    UnknownSession,
)
from firmware.metering.billing import Tariff, billing_record

T0 = 1_750_000_000.0  # 2025-06-15, a plausible wall-clock time


class FakeWallClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeWallClock:
    return FakeWallClock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def journal(db: Path, clock: FakeWallClock) -> Iterator[Journal]:
    j = Journal(db, wall_clock=clock)
    yield j
    j.close()


def _stopped(model: SessionRecord, **stop: object) -> SessionRecord:
    """What the journal must store for ``model`` stopped with ``stop`` (stopped_at, meter_stop_wh,
    stop_reason): the export stop defaults to the last checkpoint's, and the billing record comes with it."""
    fields: dict[str, object] = {"export_stop_wh": model.last_export_wh, **stop}
    stopped = dataclasses.replace(model, **fields)  # type: ignore[arg-type]
    return dataclasses.replace(stopped, billing=billing_record(stopped))


@contextlib.contextmanager
def _raw(db: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection, as another writer (or a curious engineer) would open the file."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------ lifecycle
def test_session_lifecycle_and_persistence(journal: Journal, clock: FakeWallClock, db: Path) -> None:
    s = journal.start_session(1, id_tag="RFID-42", meter_start_wh=1000.0)
    assert len(s.session_id) == 32 and int(s.session_id, 16) >= 0  # uuid4 hex
    assert (s.connector, s.id_tag, s.started_at, s.meter_start_wh) == (1, "RFID-42", T0, 1000.0)
    assert (s.last_meter_wh, s.last_checkpoint_at, s.is_open, s.energy_wh) == (1000.0, T0, True, 0.0)
    assert journal.open_session(1) == s

    clock.now += 5
    journal.update_session(s.session_id, meter_wh=1010.0)
    journal.set_session_state(s.session_id, "C2")
    journal.update_session(s.session_id, meter_wh=1025.5, at=T0 + 7)
    running = journal.session(s.session_id)
    assert running is not None
    assert (running.last_meter_wh, running.last_checkpoint_at, running.state) == (1025.5, T0 + 7, "C2")
    assert running.energy_wh == pytest.approx(25.5)

    clock.now = T0 + 60
    done = journal.stop_session(s.session_id, reason="Local", meter_stop_wh=1030.0)
    assert (done.stopped_at, done.meter_stop_wh, done.stop_reason, done.is_open) == (T0 + 60, 1030.0, "Local", False)
    assert done.energy_wh == pytest.approx(30.0)
    assert journal.open_session(1) is None

    second = journal.start_session(1, id_tag=None, meter_start_wh=1030.0, started_at=T0 + 100)
    other = journal.start_session(2, id_tag="x", meter_start_wh=0.0)
    assert [r.session_id for r in journal.sessions()] == [other.session_id, second.session_id, s.session_id]
    assert [r.session_id for r in journal.sessions(1)] == [second.session_id, s.session_id]
    assert [r.session_id for r in journal.sessions(limit=1)] == [other.session_id]
    assert journal.sessions(3) == []
    assert journal.session("no-such-id") is None

    journal.close()
    with Journal(db) as reopened:  # everything was committed
        assert reopened.session(s.session_id) == done
        assert reopened.open_session(1) == second
        assert len(reopened.sessions()) == 3


def test_file_is_wal_with_full_sync(journal: Journal, db: Path) -> None:
    conn = journal._conn
    assert conn is not None
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # 2 = FULL
    with _raw(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = raw.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)] and sorted(MIGRATIONS) == [1, 2, 3]


def test_one_open_session_per_connector(journal: Journal) -> None:
    first = journal.start_session(1, id_tag=None, meter_start_wh=0.0)
    with pytest.raises(SessionConflict, match=f"connector 1 already has an open session \\({first.session_id}\\)"):
        journal.start_session(1, id_tag=None, meter_start_wh=5.0)
    journal.start_session(2, id_tag=None, meter_start_wh=0.0)  # another connector is independent
    journal.stop_session(first.session_id, reason="Local", meter_stop_wh=0.0)
    assert journal.start_session(1, id_tag=None, meter_start_wh=0.0).session_id != first.session_id
    assert len(journal.sessions(1)) == 2


def test_sql_enforces_the_invariants_too(journal: Journal, db: Path) -> None:
    s = journal.start_session(1, id_tag=None, meter_start_wh=10.0)
    with _raw(db) as raw:
        # A writer that skips the Python check still meets the partial unique index.
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            raw.execute(
                "INSERT INTO sessions (session_id, connector, started_at, meter_start_wh, last_meter_wh,"
                " last_checkpoint_at) VALUES ('other', 1, 0, 0, 0, 0)"
            )
        with pytest.raises(sqlite3.IntegrityError, match="identity"):
            raw.execute("UPDATE sessions SET meter_start_wh = 0")
        with pytest.raises(sqlite3.IntegrityError, match="never go down"):
            raw.execute("UPDATE sessions SET stopped_at = 1, meter_stop_wh = 5, stop_reason = 'x'")
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):  # a stop without its billing record
            raw.execute("UPDATE sessions SET stopped_at = 1, meter_stop_wh = 15, stop_reason = 'x', export_stop_wh = 0")
    journal.stop_session(s.session_id, reason="Local", meter_stop_wh=12.0)
    with _raw(db) as raw:
        with pytest.raises(sqlite3.IntegrityError, match="stopped sessions never change"):
            raw.execute("UPDATE sessions SET stop_reason = 'Remote'")
        with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
            raw.execute("DELETE FROM sessions")
    assert journal.session(s.session_id) == _stopped(s, stopped_at=T0, meter_stop_wh=12.0, stop_reason="Local")


def test_two_journals_on_one_file_racing_for_a_connector(db: Path) -> None:
    Journal(db).close()  # create the schema first, so both threads only race for the session
    rounds = 20
    outcomes: list[list[str]] = [[] for _ in range(rounds)]
    barrier = threading.Barrier(2, timeout=5)

    def worker() -> None:
        with Journal(db) as j:  # a connection per thread, as the sqlite3 module wants
            for n in range(rounds):
                barrier.wait()
                try:
                    s = j.start_session(1, id_tag=None, meter_start_wh=float(n))
                except SessionConflict:
                    outcomes[n].append("conflict")
                else:
                    outcomes[n].append("started")
                    barrier.wait()  # the loser has tried; now close the round
                    j.stop_session(s.session_id, reason="Local", meter_stop_wh=float(n))
                    barrier.wait()
                    continue
                barrier.wait()
                barrier.wait()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
        assert not t.is_alive()
    assert all(sorted(o) == ["conflict", "started"] for o in outcomes), outcomes
    with Journal(db) as j:
        assert len(j.sessions(1)) == rounds and j.open_session(1) is None


def test_second_journal_object_sees_the_first_ones_session(db: Path) -> None:
    with Journal(db) as a, Journal(db) as b:
        assert a.open_session(1) is None and b.open_session(1) is None
        s = b.start_session(1, id_tag=None, meter_start_wh=0.0)
        with pytest.raises(SessionConflict):
            a.start_session(1, id_tag=None, meter_start_wh=0.0)
        assert a.open_session(1) == s


def test_stop_is_idempotent(journal: Journal, clock: FakeWallClock) -> None:
    s = journal.start_session(1, id_tag="t", meter_start_wh=100.0)
    first = journal.stop_session(s.session_id, reason="Remote", meter_stop_wh=150.0)
    clock.now += 100
    again = journal.stop_session(s.session_id, reason="EVDisconnected", meter_stop_wh=999.0, stopped_at=T0 + 500)
    assert again == first == journal.session(s.session_id)
    assert (again.stop_reason, again.meter_stop_wh, again.stopped_at) == ("Remote", 150.0, T0)
    with pytest.raises(SessionStopped, match="stopped sessions never change"):
        journal.update_session(s.session_id, meter_wh=200.0)
    with pytest.raises(SessionStopped):
        journal.set_session_state(s.session_id, "A")
    assert journal.session(s.session_id) == first


def test_unknown_sessions_are_refused(journal: Journal) -> None:
    for call in (
        lambda: journal.update_session("nope", meter_wh=1.0),
        lambda: journal.stop_session("nope", reason="Local", meter_stop_wh=1.0),
        lambda: journal.set_session_state("nope", "B1"),
    ):
        with pytest.raises(UnknownSession, match="no session 'nope'"):
            call()


def test_session_meter_never_goes_down(journal: Journal) -> None:
    s = journal.start_session(1, id_tag=None, meter_start_wh=500.0)
    journal.update_session(s.session_id, meter_wh=520.0)
    journal.update_session(s.session_id, meter_wh=520.0)  # equal is fine (no energy flowed)
    with pytest.raises(JournalError, match=r"below the last checkpoint 520\.0 Wh"):
        journal.update_session(s.session_id, meter_wh=519.0)
    with pytest.raises(JournalError, match="below the last checkpoint"):
        journal.stop_session(s.session_id, reason="Local", meter_stop_wh=510.0)
    record = journal.session(s.session_id)
    assert record is not None and record.is_open and record.last_meter_wh == 520.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda j: j.start_session(0, id_tag=None, meter_start_wh=0.0), "connector must be an integer >= 1"),
        (lambda j: j.start_session(True, id_tag=None, meter_start_wh=0.0), "connector must be"),
        (lambda j: j.start_session(1, id_tag=None, meter_start_wh=-1.0), "meter_start_wh must be a finite energy"),
        (lambda j: j.start_session(1, id_tag=None, meter_start_wh=math.nan), "finite energy"),
        (lambda j: j.start_session(1, id_tag=7, meter_start_wh=0.0), "id_tag must be a string"),
        (lambda j: j.start_session(1, id_tag=None, meter_start_wh=0.0, started_at=math.inf), "started_at must be"),
        (lambda j: j.record_meter(1, import_wh=math.inf, export_wh=0.0), "import_wh must be a finite energy"),
        (
            lambda j: j.record_actuators(1, contactor_closed=True, pilot_mode="pwm", duty_permille=1001, locked=True),
            "duty_permille must be an integer 0..1000",
        ),
        (
            lambda j: j.record_actuators(1, contactor_closed=True, pilot_mode="on", duty_permille=0, locked=True),
            "pilot_mode must be one of",
        ),
        (
            lambda j: j.record_actuators(1, contactor_closed=1, pilot_mode="x1", duty_permille=0, locked=True),
            "contactor_closed must be a bool",
        ),
        (lambda j: j.sessions(limit=-1), "limit must be an integer >= 0"),
        (lambda j: j.reconcile(1, HardwareSnapshot("X")), "ev_state must be one of A..F"),
        (lambda j: j.reconcile(1, HardwareSnapshot("B"), resume_within_s=-1), "resume_within_s"),
    ],
)
def test_bad_arguments_are_journal_errors_naming_the_file(
    journal: Journal, db: Path, call: object, message: str
) -> None:
    assert callable(call)
    with pytest.raises(JournalError, match=message) as info:
        call(journal)
    assert str(db) in str(info.value)
    assert journal.sessions() == []


def test_stop_reason_must_be_a_short_name(journal: Journal) -> None:
    s = journal.start_session(1, id_tag=None, meter_start_wh=0.0)
    for bad in ("", "x" * 65):
        with pytest.raises(JournalError, match="reason must be a non-empty string"):
            journal.stop_session(s.session_id, reason=bad, meter_stop_wh=0.0)
    assert journal.open_session(1) is not None


def test_closed_journal_refuses_calls(journal: Journal) -> None:
    journal.close()
    journal.close()  # idempotent
    with pytest.raises(JournalError, match="the journal is closed"):
        journal.open_session(1)


# ----------------------------------------------------------------------------- meter and actuators
def _rows(db: Path, table: str) -> int:
    with _raw(db) as raw:
        count = raw.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        assert isinstance(count, int)
        return count


def test_meter_totals_are_kept_latest_only_and_never_go_down(journal: Journal, db: Path, clock: FakeWallClock) -> None:
    assert journal.last_meter(1) is None
    journal.record_meter(1, import_wh=100.0, export_wh=5.0)
    clock.now += 10
    journal.record_meter(1, import_wh=150.0, export_wh=5.0)
    journal.record_meter(2, import_wh=7.0, export_wh=0.0, at=T0 + 3)
    last = journal.last_meter(1)
    assert last is not None and (last.import_wh, last.export_wh, last.at) == (150.0, 5.0, T0 + 10)
    assert _rows(db, "meter_totals") == 2  # one row per connector, not a growing log

    with pytest.raises(JournalError, match="energy registers never go down"):
        journal.record_meter(1, import_wh=149.0, export_wh=5.0)
    with pytest.raises(JournalError, match="energy registers never go down"):
        journal.record_meter(1, import_wh=200.0, export_wh=4.0)
    assert journal.last_meter(1) == last

    journal.record_meter(1, import_wh=0.0, export_wh=0.0, reset=True)  # a replaced meter
    reset = journal.last_meter(1)
    assert reset is not None and (reset.import_wh, reset.export_wh) == (0.0, 0.0)
    journal.close()
    with Journal(db) as reopened:  # what the meter driver resumes from after a reboot
        assert reopened.last_meter(1) == reset
        assert reopened.last_meter(2) is not None


def test_actuators_are_kept_latest_only(journal: Journal, db: Path, clock: FakeWallClock) -> None:
    assert journal.last_actuators(1) is None
    journal.record_actuators(1, contactor_closed=False, pilot_mode="x1", duty_permille=0, locked=False)
    clock.now += 1
    journal.record_actuators(1, contactor_closed=True, pilot_mode="pwm", duty_permille=533, locked=True)
    last = journal.last_actuators(1)
    assert last is not None
    assert (last.contactor_closed, last.pilot_mode, last.duty_permille, last.locked, last.at) == (
        True,
        "pwm",
        533,
        True,
        T0 + 1,
    )
    assert _rows(db, "actuators") == 1


# --------------------------------------------------------------------------------- reconciliation
def _running_session(journal: Journal, clock: FakeWallClock, connector: int = 1) -> SessionRecord:
    """A session started at T0 with its last checkpoint at T0 + 20 s, 1234.5 Wh."""
    s = journal.start_session(connector, id_tag="tag", meter_start_wh=1200.0)
    journal.update_session(s.session_id, meter_wh=1234.5, at=T0 + 20)
    journal.set_session_state(s.session_id, "C2")
    clock.now = T0 + 20
    record = journal.session(s.session_id)
    assert record is not None
    return record


@pytest.mark.parametrize(("contactor", "mismatch"), [(None, False), (False, False), (True, True)])
def test_reconcile_without_open_session(journal: Journal, contactor: bool | None, mismatch: bool) -> None:
    done = journal.start_session(1, id_tag=None, meter_start_wh=0.0)
    stopped = journal.stop_session(done.session_id, reason="Local", meter_stop_wh=1.0)
    result = journal.reconcile(1, HardwareSnapshot("C", contactor, 5.0))
    assert (result.action, result.session, result.contactor_mismatch) == ("none", None, mismatch)
    assert ("CLOSED" in result.detail) == mismatch
    assert journal.session(done.session_id) == stopped  # stopped sessions are not touched


@pytest.mark.parametrize("ev_state", ["B", "C", "D"])
def test_reconcile_resumes_when_plugged_and_recent(journal: Journal, clock: FakeWallClock, ev_state: str) -> None:
    before = _running_session(journal, clock)
    result = journal.reconcile(1, HardwareSnapshot(ev_state, True, 9999.0), now=T0 + 80)
    assert result.action == "resumed" and not result.contactor_mismatch  # a session runs: closed is allowed
    assert result.session == dataclasses.replace(before, resume_count=1, last_resumed_at=T0 + 80)
    assert journal.open_session(1) == result.session
    # Only the resume note is written: the checkpoint and the meter stay as they were.
    again = journal.reconcile(1, HardwareSnapshot(ev_state), now=T0 + 90)
    assert again.session == dataclasses.replace(before, resume_count=2, last_resumed_at=T0 + 90)


def test_reconcile_closes_as_power_loss_when_the_checkpoint_is_stale(journal: Journal, clock: FakeWallClock) -> None:
    before = _running_session(journal, clock)
    result = journal.reconcile(1, HardwareSnapshot("C", False, None), now=T0 + 20 + 300.0)  # exactly the limit
    assert result.action == "closed" and not result.contactor_mismatch
    assert result.session == _stopped(before, stopped_at=T0 + 20, meter_stop_wh=1234.5, stop_reason=REASON_POWER_LOSS)
    assert journal.open_session(1) is None
    assert journal.reconcile(1, HardwareSnapshot("C"), now=T0 + 400).action == "none"  # and it stays closed


def test_reconcile_with_a_checkpoint_just_inside_the_window_resumes(journal: Journal, clock: FakeWallClock) -> None:
    _running_session(journal, clock)
    assert journal.reconcile(1, HardwareSnapshot("B"), now=T0 + 20 + 299.9).action == "resumed"


def test_reconcile_closes_as_ev_disconnected_when_unplugged(journal: Journal, clock: FakeWallClock) -> None:
    before = _running_session(journal, clock)
    result = journal.reconcile(1, HardwareSnapshot("A", None, 1240.0), now=T0 + 25)  # recent, but no EV
    assert result.action == "closed"
    assert result.session == _stopped(
        before, stopped_at=T0 + 20, meter_stop_wh=1240.0, stop_reason=REASON_EV_DISCONNECTED
    )
    assert "1240.0 Wh from the hardware" in result.detail


@pytest.mark.parametrize("ev_state", ["E", "F"])
def test_reconcile_closes_when_the_pilot_cannot_tell(journal: Journal, clock: FakeWallClock, ev_state: str) -> None:
    _running_session(journal, clock)
    result = journal.reconcile(1, HardwareSnapshot(ev_state), now=T0 + 25)
    assert result.action == "closed" and result.session is not None
    assert result.session.stop_reason == REASON_POWER_LOSS


def test_reconcile_never_resumes_a_checkpoint_from_the_future(journal: Journal, clock: FakeWallClock) -> None:
    _running_session(journal, clock)
    result = journal.reconcile(1, HardwareSnapshot("C"), now=T0 - 3600)  # a Pi without RTC before NTP
    assert result.action == "closed" and "wall clock went back" in result.detail
    assert result.session is not None and result.session.stopped_at == T0 + 20


@pytest.mark.parametrize("hw_meter", [1234.0, 0.0, math.nan, math.inf, None])
def test_reconcile_ignores_an_implausible_hardware_meter(
    journal: Journal, clock: FakeWallClock, hw_meter: float | None
) -> None:
    _running_session(journal, clock)
    result = journal.reconcile(1, HardwareSnapshot("A", False, hw_meter), now=T0 + 30)
    assert result.session is not None and result.session.meter_stop_wh == 1234.5  # the checkpoint


@pytest.mark.parametrize("ev_state", ["A", "C"])
def test_reconcile_reports_a_closed_contactor_without_a_session(
    journal: Journal, clock: FakeWallClock, ev_state: str
) -> None:
    _running_session(journal, clock)
    result = journal.reconcile(1, HardwareSnapshot(ev_state, True), now=T0 + 10_000)
    assert result.action == "closed" and result.contactor_mismatch
    assert "contactor mirror reads CLOSED" in result.detail


def test_reconcile_is_per_connector(journal: Journal, clock: FakeWallClock) -> None:
    one = _running_session(journal, clock, connector=1)
    two = _running_session(journal, clock, connector=2)
    assert journal.reconcile(1, HardwareSnapshot("A"), now=T0 + 30).action == "closed"
    assert journal.open_session(2) == two
    assert journal.session(one.session_id) is not None
    assert journal.reconcile(2, HardwareSnapshot("C"), now=T0 + 30).action == "resumed"


# --------------------------------------------------------------------------------- corrupt files
def _journal_with_data(db: Path) -> None:
    with Journal(db, wall_clock=FakeWallClock()) as j:
        for n in range(30):
            s = j.start_session(1, id_tag=f"tag-{n}", meter_start_wh=float(n))
            j.stop_session(s.session_id, reason="Local", meter_stop_wh=float(n))


def _clobber(db: Path, offset: int, length: int) -> bytes:
    garbage = bytes((n * 151 + 89) % 256 for n in range(length))  # deterministic, not a valid header
    with db.open("r+b") as f:
        f.seek(offset)
        f.write(garbage)
    return db.read_bytes()


def test_a_garbage_file_is_a_journal_corrupt_error_naming_the_file(db: Path) -> None:
    db.write_bytes(b"\x00garbage, not SQLite\xff" * 500)
    with pytest.raises(JournalCorrupt, match="not a database") as info:
        Journal(db)
    assert str(db) in str(info.value) and info.value.path == db
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


@pytest.mark.parametrize("where", ["header", "page 3"])
def test_a_damaged_journal_is_a_journal_corrupt_error(db: Path, where: str) -> None:
    _journal_with_data(db)
    page = 4096  # SQLite's default page size
    _clobber(db, 0 if where == "header" else 2 * page, page)
    with pytest.raises(JournalCorrupt, match=r"journal .*journal\.db: "):
        Journal(db)


def test_some_other_sqlite_database_is_not_a_journal(db: Path) -> None:
    with _raw(db) as raw:
        raw.execute("CREATE TABLE recipes (name TEXT)")
    with pytest.raises(JournalCorrupt, match=r"not a session journal: tables \['recipes'\]"):
        Journal(db)


def test_open_or_recover_moves_a_corrupt_file_aside(db: Path) -> None:
    _journal_with_data(db)
    bad = _clobber(db, 0, 100)
    clock = FakeWallClock(T0)  # 2025-06-15T15:06:40Z
    journal, moved = Journal.open_or_recover(db, wall_clock=clock)
    with journal:
        assert moved == db.with_name("journal.db.corrupt-20250615T150640Z")
        assert moved.read_bytes() == bad  # kept for diagnosis, not deleted
        assert journal.sessions() == []  # a fresh journal
        journal.start_session(1, id_tag=None, meter_start_wh=0.0)
    # A second bad file in the same second does not overwrite the first one.
    db.unlink()
    for companion in ("journal.db-wal", "journal.db-shm"):
        (db.parent / companion).unlink(missing_ok=True)
    db.write_bytes(b"junk" * 1000)
    journal2, moved2 = Journal.open_or_recover(db, wall_clock=clock)
    journal2.close()
    assert moved2 == db.with_name("journal.db.corrupt-20250615T150640Z-1")
    assert moved.read_bytes() == bad and moved2.read_bytes() == b"junk" * 1000


def test_open_or_recover_keeps_a_good_journal(db: Path) -> None:
    _journal_with_data(db)
    journal, moved = Journal.open_or_recover(db)
    with journal:
        assert moved is None and len(journal.sessions()) == 30
    assert sorted(p.name for p in db.parent.iterdir() if "corrupt" in p.name) == []


def test_a_journal_from_a_newer_firmware_is_refused_not_moved(db: Path) -> None:
    Journal(db).close()
    with _raw(db) as raw:
        raw.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(JournalError, match="written by a newer firmware") as info:
        Journal.open_or_recover(db)
    assert not isinstance(info.value, JournalCorrupt)
    assert [p.name for p in db.parent.iterdir() if "corrupt" in p.name] == []


def test_an_unopenable_path_is_a_journal_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="unable to open") as info:
        Journal(tmp_path / "no-such-dir" / "journal.db")
    assert not isinstance(info.value, JournalCorrupt)


def test_forward_migration_hook(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _journal_with_data(db)

    def add_notes(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE sessions ADD COLUMN note TEXT")

    future = SCHEMA_VERSION + 1  # a migration after the current ones
    monkeypatch.setattr(journal_module, "SCHEMA_VERSION", future)
    monkeypatch.setitem(journal_module.MIGRATIONS, future, add_notes)
    with Journal(db, wall_clock=FakeWallClock(T0 + 5)) as j:
        assert len(j.sessions()) == 30  # the history survives the migration
    with _raw(db) as raw:
        assert raw.execute("SELECT version, applied_at FROM schema_version ORDER BY version").fetchall() == [
            *((v, T0) for v in range(1, future)),
            (future, T0 + 5),
        ]
        assert "note" in [row[1] for row in raw.execute("PRAGMA table_info(sessions)")]
    Journal(db).close()  # opening again migrates nothing
    with _raw(db) as raw:
        assert raw.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == future


# ----------------------------------------------------------------------- random call sequences
CONNECTORS = (1, 2)
REASONS = ("Local", "Remote", "EVDisconnected")
TARIFFS = (None, Tariff("EUR", Decimal("0.39"), Decimal("1.2"), Decimal("0.1")), Tariff("JPY", Decimal("31")))
EXPORT_DELTAS = st.none() | st.integers(-20, 500)


class JournalMachine(RuleBasedStateMachine):
    """Random start/update/stop/state/meter-error/reconcile/reopen calls (import and export readings, with
    and without a tariff), checked against a model after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="journal-sm-"))
        self.clock = FakeWallClock()
        self.journal = Journal(self.dir / "j.db", wall_clock=self.clock)
        self.started: list[str] = []
        self.open: dict[int, SessionRecord] = {}  # the model: connector -> open session as it must be stored
        self.stopped: dict[str, SessionRecord] = {}  # stopped sessions as first stored, never to change

    def teardown(self) -> None:
        self.journal.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _pick(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(self.started))

    @rule(
        connector=st.sampled_from(CONNECTORS),
        meter=st.integers(0, 10_000),
        export=st.integers(0, 1000),
        tariff=st.sampled_from(TARIFFS),
        dt=st.integers(0, 400),
    )
    def start(self, connector: int, meter: int, export: int, tariff: Tariff | None, dt: int) -> None:
        self.clock.now += dt
        if connector in self.open:
            with pytest.raises(SessionConflict):
                self.journal.start_session(connector, id_tag=None, meter_start_wh=meter)
            return
        record = self.journal.start_session(
            connector, id_tag="t", meter_start_wh=meter, meter_start_export_wh=export, tariff=tariff
        )
        assert (record.export_start_wh, record.last_export_wh, record.tariff) == (export, export, tariff)
        self.started.append(record.session_id)
        self.open[connector] = record

    @precondition(lambda self: self.started)
    @rule(data=st.data(), delta=st.integers(-20, 500), export_delta=EXPORT_DELTAS, dt=st.integers(0, 400))
    def update(self, data: st.DataObject, delta: int, export_delta: int | None, dt: int) -> None:
        session_id = self._pick(data)
        self.clock.now += dt
        model = next((r for r in self.open.values() if r.session_id == session_id), None)
        if model is None:
            with pytest.raises(SessionStopped):
                self.journal.update_session(session_id, meter_wh=1e6)
            return
        meter = max(0.0, model.last_meter_wh + delta)
        export = None if export_delta is None else max(0.0, model.last_export_wh + export_delta)
        if meter < model.last_meter_wh or (export is not None and export < model.last_export_wh):
            with pytest.raises(JournalError, match="never go down"):
                self.journal.update_session(session_id, meter_wh=meter, export_wh=export)
            return
        self.journal.update_session(session_id, meter_wh=meter, export_wh=export)
        self.open[model.connector] = dataclasses.replace(
            model,
            last_meter_wh=meter,
            last_export_wh=model.last_export_wh if export is None else export,
            last_checkpoint_at=self.clock.now,
        )

    @precondition(lambda self: self.started)
    @rule(data=st.data(), detail=st.sampled_from(["voltage out of range", "register went backwards"]))
    def flag_meter_error(self, data: st.DataObject, detail: str) -> None:
        session_id = self._pick(data)
        model = next((r for r in self.open.values() if r.session_id == session_id), None)
        if model is None:
            with pytest.raises(SessionStopped):
                self.journal.flag_meter_error(session_id, detail)
            return
        self.journal.flag_meter_error(session_id, detail)
        if model.meter_error is None:  # the first one is kept
            self.open[model.connector] = dataclasses.replace(model, meter_error=detail)

    @precondition(lambda self: self.started)
    @rule(data=st.data(), state=st.sampled_from(["B1", "B2", "C2", "D2"]))
    def set_state(self, data: st.DataObject, state: str) -> None:
        session_id = self._pick(data)
        model = next((r for r in self.open.values() if r.session_id == session_id), None)
        if model is None:
            with pytest.raises(SessionStopped):
                self.journal.set_session_state(session_id, state)
            return
        self.journal.set_session_state(session_id, state)
        self.open[model.connector] = dataclasses.replace(model, state=state)

    @precondition(lambda self: self.started)
    @rule(
        data=st.data(),
        reason=st.sampled_from(REASONS),
        delta=st.integers(-20, 500),
        export_delta=EXPORT_DELTAS,
        dt=st.integers(0, 400),
    )
    def stop(self, data: st.DataObject, reason: str, delta: int, export_delta: int | None, dt: int) -> None:
        session_id = self._pick(data)
        self.clock.now += dt
        if session_id in self.stopped:
            assert self.journal.stop_session(session_id, reason=reason, meter_stop_wh=1e6) == self.stopped[session_id]
            return
        model = next(r for r in self.open.values() if r.session_id == session_id)
        meter = max(0.0, model.last_meter_wh + delta)
        export = None if export_delta is None else max(0.0, model.last_export_wh + export_delta)
        if meter < model.last_meter_wh or (export is not None and export < model.last_export_wh):
            with pytest.raises(JournalError, match="never go down"):
                self.journal.stop_session(session_id, reason=reason, meter_stop_wh=meter, meter_stop_export_wh=export)
            return
        record = self.journal.stop_session(session_id, reason=reason, meter_stop_wh=meter, meter_stop_export_wh=export)
        stop_export = model.last_export_wh if export is None else export
        assert record == _stopped(
            model, stopped_at=self.clock.now, meter_stop_wh=meter, stop_reason=reason, export_stop_wh=stop_export
        )
        del self.open[model.connector]
        self.stopped[session_id] = record

    @rule(
        connector=st.sampled_from(CONNECTORS),
        ev_state=st.sampled_from("ABCDEF"),
        dt=st.integers(-50, 700),
        hw_delta=st.none() | st.integers(-100, 100),
        contactor=st.none() | st.booleans(),
    )
    def reconcile(self, connector: int, ev_state: str, dt: int, hw_delta: int | None, contactor: bool | None) -> None:
        model = self.open.get(connector)
        base = model.last_checkpoint_at if model else self.clock.now
        now = base + dt
        hw_meter = None if hw_delta is None or model is None else max(0.0, model.last_meter_wh + hw_delta)
        result = self.journal.reconcile(connector, HardwareSnapshot(ev_state, contactor, hw_meter), now=now)
        if model is None:
            assert result.action == "none" and result.contactor_mismatch is (contactor is True)
            return
        if ev_state in "BCD" and 0 <= dt < 300:
            assert result.action == "resumed" and not result.contactor_mismatch
            self.open[connector] = dataclasses.replace(model, resume_count=model.resume_count + 1, last_resumed_at=now)
            assert result.session == self.open[connector]
            return
        expected_meter = model.last_meter_wh if hw_meter is None else max(model.last_meter_wh, hw_meter)
        expected_reason = REASON_EV_DISCONNECTED if ev_state == "A" else REASON_POWER_LOSS
        assert result.action == "closed" and result.contactor_mismatch is (contactor is True)
        assert result.session == _stopped(
            model, stopped_at=model.last_checkpoint_at, meter_stop_wh=expected_meter, stop_reason=expected_reason
        )
        del self.open[connector]
        self.stopped[model.session_id] = result.session

    @rule()
    def reopen(self) -> None:
        self.journal.close()
        self.journal = Journal(self.dir / "j.db", wall_clock=self.clock)

    @invariant()
    def journal_matches_the_model(self) -> None:
        stored = self.journal.sessions()
        ids = [r.session_id for r in stored]
        assert len(ids) == len(set(ids)) == len(self.started)  # unique, none lost, none invented
        assert ids == self.started[::-1]  # newest first
        for connector in CONNECTORS:
            open_now = [r for r in stored if r.connector == connector and r.is_open]
            assert len(open_now) <= 1
            assert (open_now[0] if open_now else None) == self.open.get(connector)
        for record in stored:
            if not record.is_open:
                assert record == self.stopped[record.session_id]  # stopped sessions never change
                assert record.meter_stop_wh is not None and record.meter_stop_wh >= record.meter_start_wh
                assert record.billing is not None and record.billing == billing_record(record)
            else:
                assert record.billing is None and record.export_stop_wh is None
            assert record.last_meter_wh >= record.meter_start_wh and record.last_export_wh >= record.export_start_wh


TestJournalSequences = JournalMachine.TestCase
TestJournalSequences.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_write_calls_are_quick(journal: Journal) -> None:
    """Each call is a few statements and one fsync: far below what would stall the event loop."""
    s = journal.start_session(1, id_tag=None, meter_start_wh=0.0)
    began = time.perf_counter()
    for n in range(50):
        journal.update_session(s.session_id, meter_wh=float(n))
    per_call = (time.perf_counter() - began) / 50
    assert per_call < 0.05, f"{per_call * 1000:.1f} ms per checkpoint"
