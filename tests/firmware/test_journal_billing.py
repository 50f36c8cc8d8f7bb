"""The journal's schema 2 (firmware/journal.py): export readings per session, the tariff fixed at the start,
the meter error flag, the billing record written with the stop (also by reconciliation), the SQL guards of
the new columns, the v1 -> v2 migration of an existing file, and the read-only opening."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

import firmware.journal as journal_module
from firmware.journal import (
    REASON_EV_DISCONNECTED,
    SCHEMA_VERSION,
    HardwareSnapshot,
    Journal,
    JournalCorrupt,
    JournalError,
    SessionStopped,
    UnknownSession,
)
from firmware.metering.billing import BillingError, Tariff, billing_record
from tests.firmware.test_journal import T0, FakeWallClock

TARIFF = Tariff("EUR", Decimal("0.39"), Decimal("1.20"), Decimal("0.10"), "0.39 EUR/kWh, 1.20 EUR/h")


@pytest.fixture
def clock() -> FakeWallClock:
    return FakeWallClock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def journal(db: Path, clock: FakeWallClock) -> Iterator[Journal]:
    with Journal(db, wall_clock=clock) as j:
        yield j


@contextlib.contextmanager
def _raw(db: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


# ------------------------------------------------------------------------------------ export and billing
def test_export_accounting_and_billing_record_at_stop(journal: Journal, clock: FakeWallClock) -> None:
    s = journal.start_session(1, id_tag="RFID-7", meter_start_wh=1000.0, meter_start_export_wh=500.0, tariff=TARIFF)
    assert (s.export_start_wh, s.last_export_wh, s.export_stop_wh, s.tariff) == (500.0, 500.0, None, TARIFF)
    assert (s.import_wh, s.export_wh, s.duration_s, s.billing, s.meter_error) == (0.0, 0.0, None, None, None)

    journal.update_session(s.session_id, meter_wh=4000.0, export_wh=500.0, at=T0 + 600)
    journal.update_session(s.session_id, meter_wh=6000.0, at=T0 + 1200)  # export None: unchanged
    running = journal.session(s.session_id)
    assert running is not None and running.last_export_wh == 500.0 and running.import_wh == 5000.0
    journal.update_session(s.session_id, meter_wh=6000.0, export_wh=2500.0, at=T0 + 1800)  # V2G: the EV gives back
    running = journal.session(s.session_id)
    assert running is not None and (running.import_wh, running.export_wh) == (5000.0, 2000.0)

    clock.now = T0 + 3600
    done = journal.stop_session(s.session_id, reason="Local", meter_stop_wh=11_000.0, meter_stop_export_wh=3000.0)
    assert (done.meter_stop_wh, done.export_stop_wh, done.import_wh, done.export_wh) == (
        11_000.0,
        3000.0,
        10_000.0,
        2500.0,
    )
    assert done.duration_s == 3600.0
    assert done.billing == billing_record(done)
    bill = done.billing
    assert bill is not None and bill.price is not None
    assert (bill.import_wh, bill.export_wh, bill.duration_s, bill.stop_reason) == (10_000.0, 2500.0, 3600.0, "Local")
    assert (bill.meter_export_start_wh, bill.meter_export_stop_wh, bill.tariff) == (500.0, 3000.0, TARIFF)
    # 10 kWh * 0.39 + 1 h * 1.20 - 2.5 kWh * 0.10
    assert (str(bill.price.energy), str(bill.price.time), str(bill.price.export_credit)) == ("3.90", "1.20", "0.25")
    assert str(bill.price.total) == "4.85"
    assert journal.session(s.session_id) == done


def test_stop_without_export_takes_the_last_checkpoint(journal: Journal) -> None:
    s = journal.start_session(1, id_tag=None, meter_start_wh=0.0, meter_start_export_wh=10.0)
    journal.update_session(s.session_id, meter_wh=100.0, export_wh=40.0)
    done = journal.stop_session(s.session_id, reason="Remote", meter_stop_wh=120.0)
    assert done.export_stop_wh == 40.0 and done.export_wh == 30.0
    assert done.billing is not None and done.billing.tariff is None and done.billing.price is None


def test_existing_callers_keep_working_with_import_only(journal: Journal) -> None:
    s = journal.start_session(2, id_tag="t", meter_start_wh=50.0)
    journal.update_session(s.session_id, meter_wh=75.0)
    done = journal.stop_session(s.session_id, reason="Local", meter_stop_wh=80.0)
    assert (done.export_start_wh, done.last_export_wh, done.export_stop_wh, done.export_wh) == (0.0, 0.0, 0.0, 0.0)
    assert done.energy_wh == done.import_wh == 30.0
    assert done.billing is not None and done.billing.import_wh == 30.0


def test_export_never_goes_down(journal: Journal) -> None:
    s = journal.start_session(1, id_tag=None, meter_start_wh=0.0, meter_start_export_wh=100.0)
    journal.update_session(s.session_id, meter_wh=10.0, export_wh=150.0)
    journal.update_session(s.session_id, meter_wh=10.0, export_wh=150.0)  # equal: nothing flowed
    with pytest.raises(
        JournalError, match=r"export meter reading 149\.0 Wh is below the last checkpoint's export 150\.0"
    ):
        journal.update_session(s.session_id, meter_wh=20.0, export_wh=149.0)
    with pytest.raises(JournalError, match=r"export stop reading 120\.0 Wh is below .* never go down"):
        journal.stop_session(s.session_id, reason="Local", meter_stop_wh=20.0, meter_stop_export_wh=120.0)
    record = journal.session(s.session_id)
    assert record is not None and record.is_open and (record.last_meter_wh, record.last_export_wh) == (10.0, 150.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda j: j.start_session(1, id_tag=None, meter_start_wh=0, meter_start_export_wh=-1), "start_export_wh"),
        (lambda j: j.start_session(1, id_tag=None, meter_start_wh=2e12), "meter_start_wh must be a finite energy"),
        (lambda j: j.start_session(1, id_tag=None, meter_start_wh=0, tariff={"currency": "EUR"}), "must be a Tariff"),
        (lambda j: j.start_session(1, id_tag=None, meter_start_wh=0, started_at=1e12), r"started_at must be .*9999"),
        (lambda j: j.start_session(1, id_tag=None, meter_start_wh=0, started_at=-1.0), "started_at must be"),
    ],
)  # fmt: skip
def test_bad_start_arguments_are_refused(journal: Journal, db: Path, call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(JournalError, match=message) as info:
        call(journal)
    assert str(db) in str(info.value) and journal.sessions() == []


def test_the_sql_guards_the_new_columns_too(journal: Journal, db: Path) -> None:
    s = journal.start_session(1, id_tag=None, meter_start_wh=10.0, meter_start_export_wh=5.0, tariff=TARIFF)
    journal.update_session(s.session_id, meter_wh=20.0, export_wh=8.0)
    with _raw(db) as raw:
        for column, value in (("tariff", "'{}'"), ("tariff", "NULL"), ("export_start_wh", "0")):
            with pytest.raises(sqlite3.IntegrityError, match="identity of a session never changes"):
                raw.execute(f"UPDATE sessions SET {column} = {value}")
        with pytest.raises(sqlite3.IntegrityError, match="never go down"):
            raw.execute("UPDATE sessions SET last_export_wh = 7")  # below the last checkpoint
        with pytest.raises(sqlite3.IntegrityError, match="never go down"):
            raw.execute("UPDATE sessions SET last_meter_wh = 19")
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):  # a stop without its billing record
            raw.execute("UPDATE sessions SET stopped_at = 1, meter_stop_wh = 20, stop_reason = 'x', export_stop_wh = 8")
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):  # a billing record on an open session
            raw.execute("UPDATE sessions SET billing = '{}'")
        raw.execute("UPDATE sessions SET meter_error = 'first'")
        with pytest.raises(sqlite3.IntegrityError, match="first meter error of a session is kept"):
            raw.execute("UPDATE sessions SET meter_error = 'second'")
    done = journal.stop_session(s.session_id, reason="Local", meter_stop_wh=20.0)
    with _raw(db) as raw:
        with pytest.raises(sqlite3.IntegrityError, match="stopped sessions never change"):
            raw.execute("UPDATE sessions SET billing = NULL")
        stored = raw.execute("SELECT billing FROM sessions").fetchone()[0]
    assert done.billing is not None and json.loads(stored) == done.billing.to_json()


def test_billing_is_written_in_the_same_transaction_as_the_stop(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = journal.start_session(1, id_tag=None, meter_start_wh=0.0)

    def broken(session: object) -> object:
        raise BillingError("simulated failure while making the billing record")

    monkeypatch.setattr(journal_module, "billing_record", broken)
    with pytest.raises(JournalError, match="cannot make its billing record: simulated failure") as info:
        journal.stop_session(s.session_id, reason="Local", meter_stop_wh=5.0)
    assert not isinstance(info.value, JournalCorrupt)  # the file is fine
    still = journal.open_session(1)
    assert still is not None and still.session_id == s.session_id and still.billing is None  # no half stop
    monkeypatch.undo()
    done = journal.stop_session(s.session_id, reason="Local", meter_stop_wh=5.0)
    assert done.billing == billing_record(done)


def test_idempotent_stop_keeps_the_first_billing_record(journal: Journal, clock: FakeWallClock) -> None:
    s = journal.start_session(1, id_tag=None, meter_start_wh=0.0, tariff=TARIFF)
    first = journal.stop_session(s.session_id, reason="Local", meter_stop_wh=1000.0, meter_stop_export_wh=0.0)
    clock.now += 100
    again = journal.stop_session(s.session_id, reason="Remote", meter_stop_wh=9999.0, meter_stop_export_wh=50.0)
    assert again == first and again.billing is not None and again.billing.import_wh == 1000.0


def test_the_tariff_is_fixed_at_the_start(journal: Journal) -> None:
    a = journal.start_session(1, id_tag=None, meter_start_wh=0.0, tariff=TARIFF)
    b = journal.start_session(2, id_tag=None, meter_start_wh=0.0)  # no tariff configured
    assert journal.session(a.session_id) is not None and journal.open_session(1) == a
    done_a = journal.stop_session(a.session_id, reason="Local", meter_stop_wh=1000.0)
    done_b = journal.stop_session(b.session_id, reason="Local", meter_stop_wh=1000.0)
    assert done_a.tariff == TARIFF and done_a.billing is not None and done_a.billing.price_text == "0.39 EUR"
    assert done_b.tariff is None and done_b.billing is not None and done_b.billing.price_text == "no tariff configured"


# ---------------------------------------------------------------------------------------- meter errors
def test_flag_meter_error_keeps_the_first(journal: Journal) -> None:
    s = journal.start_session(1, id_tag=None, meter_start_wh=0.0)
    journal.flag_meter_error(s.session_id, "  import register went backwards by 12 Wh ")
    journal.flag_meter_error(s.session_id, "a later, different problem")
    record = journal.session(s.session_id)
    assert record is not None and record.meter_error == "import register went backwards by 12 Wh"
    done = journal.stop_session(s.session_id, reason="Local", meter_stop_wh=10.0)
    assert done.meter_error == "import register went backwards by 12 Wh"
    assert done.billing is not None and done.billing.meter_error == done.meter_error
    with pytest.raises(SessionStopped, match="stopped sessions never change"):
        journal.flag_meter_error(s.session_id, "too late")
    with pytest.raises(UnknownSession, match="no session 'nope'"):
        journal.flag_meter_error("nope", "x")


def test_flag_meter_error_bounds_its_detail(journal: Journal) -> None:
    s = journal.start_session(1, id_tag=None, meter_start_wh=0.0)
    for bad in ("", "   ", None):
        with pytest.raises(JournalError, match="detail must be a non-empty string"):
            journal.flag_meter_error(s.session_id, bad)  # type: ignore[arg-type]
    journal.flag_meter_error(s.session_id, "x" * 1000)  # cut, never refused: the flag matters more than the text
    record = journal.session(s.session_id)
    assert record is not None and record.meter_error is not None
    assert len(record.meter_error) == 200 and record.meter_error.endswith("…")


# ------------------------------------------------------------------------------------- reconciliation
def test_reconcile_closing_a_session_writes_its_billing_record(journal: Journal) -> None:
    s = journal.start_session(1, id_tag="t", meter_start_wh=100.0, meter_start_export_wh=20.0, tariff=TARIFF)
    journal.update_session(s.session_id, meter_wh=2100.0, export_wh=70.0, at=T0 + 1800)
    journal.flag_meter_error(s.session_id, "voltage out of range")
    result = journal.reconcile(1, HardwareSnapshot("A", None, 2500.0), now=T0 + 4000)
    assert result.action == "closed" and result.session is not None
    closed = result.session
    assert (closed.stop_reason, closed.stopped_at, closed.meter_stop_wh) == (REASON_EV_DISCONNECTED, T0 + 1800, 2500.0)
    assert closed.export_stop_wh == 70.0  # the last checkpoint's export
    bill = closed.billing
    assert bill is not None and bill == billing_record(closed)
    assert (bill.import_wh, bill.export_wh, bill.duration_s, bill.meter_error) == (
        2400.0,
        50.0,
        1800.0,
        "voltage out of range",
    )
    assert bill.price is not None and str(bill.price.total) == "1.53"  # 0.94 + 0.60 - 0.01 (0.936, 0.6, 0.005)
    assert journal.session(s.session_id) == closed


def test_resume_meter_totals_include_the_open_sessions_export(journal: Journal) -> None:
    journal.record_meter(1, import_wh=100.0, export_wh=30.0)
    s = journal.start_session(1, id_tag=None, meter_start_wh=100.0, meter_start_export_wh=30.0)
    journal.update_session(s.session_id, meter_wh=150.0, export_wh=45.0)
    assert journal.resume_meter_totals(1) == (150.0, 45.0)


# --------------------------------------------------------------------------------------- migration v1
V1_SESSION_COLUMNS = (
    "seq, session_id, connector, id_tag, started_at, meter_start_wh, last_meter_wh, last_checkpoint_at, state,"
    " stopped_at, meter_stop_wh, stop_reason, resume_count, last_resumed_at"
)
V1_ROWS = [
    (1, "aaaa", 1, "RFID-1", T0, 1000.0, 1500.0, T0 + 900, "C2", T0 + 1000, 1600.5, "Local", 0, None),
    (2, "bbbb", 2, None, T0 + 50, 0.0, 10.0, T0 + 60, None, T0 + 60, 10.0, "PowerLoss", 1, T0 + 55),
    (3, "cccc", 1, "RFID-3", T0 + 2000, 1600.5, 1700.0, T0 + 2500, "C2", None, None, None, 0, None),
]


def _v1_journal(db: Path) -> None:
    """A journal file exactly as the version 1 firmware left it: the frozen v1 schema and its rows."""
    with _raw(db) as raw:
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("BEGIN")
        raw.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
        journal_module._create_v1(raw)
        raw.execute("INSERT INTO schema_version VALUES (1, ?)", (T0 - 100,))
        raw.executemany(f"INSERT INTO sessions ({V1_SESSION_COLUMNS}) VALUES ({', '.join('?' * 14)})", V1_ROWS)
        raw.execute("INSERT INTO meter_totals VALUES (1, 1700.0, 0.0, ?)", (T0 + 2500,))
        raw.execute("INSERT INTO actuators VALUES (1, 1, 'pwm', 267, 1, ?)", (T0 + 2500,))
        raw.execute("COMMIT")


def test_a_v1_journal_is_migrated_keeping_every_session(db: Path) -> None:
    _v1_journal(db)
    with Journal(db, wall_clock=FakeWallClock(T0 + 9000)) as j:
        stored = j.sessions()
        assert [r.session_id for r in stored] == ["cccc", "bbbb", "aaaa"]  # the order (seq) is kept
        open_now, power_loss, local = stored
        for record, row in zip(stored, reversed(V1_ROWS), strict=True):
            assert (record.session_id, record.connector, record.id_tag, record.started_at) == row[1:5]
            assert (record.meter_start_wh, record.last_meter_wh, record.state, record.stop_reason) == (
                row[5],
                row[6],
                row[8],
                row[11],
            )
            assert (record.export_start_wh, record.last_export_wh, record.tariff, record.meter_error) == (
                0,
                0,
                None,
                None,
            )
            assert (record.resume_count, record.last_resumed_at) == row[12:14]
        assert open_now.is_open and open_now.billing is None and open_now.export_stop_wh is None
        for old in (power_loss, local):
            assert old.export_stop_wh == 0.0 and old.billing == billing_record(old)
            assert old.billing is not None and old.billing.tariff is None and old.billing.price is None
        assert local.billing is not None and (local.billing.import_wh, local.billing.duration_s) == (600.5, 1000.0)
        last_meter, last_actuators = j.last_meter(1), j.last_actuators(1)
        assert last_meter is not None and last_meter.import_wh == 1700.0
        assert last_actuators is not None and last_actuators.duty_permille == 267
        # The migrated open session carries on under the new schema and stops with a billing record.
        j.update_session("cccc", meter_wh=1800.0, export_wh=5.0, at=T0 + 2600)
        done = j.stop_session("cccc", reason="EVDisconnected", meter_stop_wh=1850.0, stopped_at=T0 + 2700)
        assert done.billing is not None and (done.billing.import_wh, done.billing.export_wh) == (249.5, 5.0)
    with _raw(db) as raw:
        assert raw.execute("SELECT version, applied_at FROM schema_version ORDER BY version").fetchall() == [
            (1, T0 - 100),
            (2, T0 + 9000),
            (3, T0 + 9000),  # the later migrations run in the same opening
        ]
        names = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
        assert "sessions_v1" not in names
        assert {"one_open_session_per_connector", "stopped_sessions_are_final", "session_identity_is_fixed"} <= names
        with pytest.raises(sqlite3.IntegrityError, match="stopped sessions never change"):
            raw.execute("UPDATE sessions SET billing = NULL WHERE session_id = 'aaaa'")
        with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
            raw.execute("DELETE FROM sessions")
    assert SCHEMA_VERSION >= 2


def test_a_failed_migration_leaves_the_v1_journal_as_it_was(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _v1_journal(db)

    def broken(session: object) -> object:
        raise BillingError("simulated failure during the migration")

    monkeypatch.setattr(journal_module, "billing_record", broken)
    with pytest.raises(JournalCorrupt, match="simulated failure during the migration"):
        Journal(db)
    with _raw(db) as raw:
        assert raw.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 1
        assert raw.execute(f"SELECT {V1_SESSION_COLUMNS} FROM sessions ORDER BY seq").fetchall() == V1_ROWS
    monkeypatch.undo()
    with Journal(db) as j:  # the next attempt migrates
        assert len(j.sessions()) == 3


def test_an_unreadable_stored_billing_record_is_journal_corrupt_naming_the_session(journal: Journal, db: Path) -> None:
    s = journal.start_session(1, id_tag=None, meter_start_wh=0.0)
    journal.stop_session(s.session_id, reason="Local", meter_stop_wh=1.0)
    with _raw(db) as raw:  # someone edits the file behind the firmware's back
        raw.execute("DROP TRIGGER stopped_sessions_are_final")
        raw.execute("UPDATE sessions SET billing = '{\"format\": 1}'")
    with pytest.raises(
        JournalCorrupt, match=f"session {s.session_id}: the stored tariff or billing record is unreadable"
    ):
        journal.sessions()


# -------------------------------------------------------------------------------------------- read-only
def test_read_only_journal_reads_while_the_writer_is_open(journal: Journal, db: Path) -> None:
    s = journal.start_session(1, id_tag="x", meter_start_wh=0.0, tariff=TARIFF)
    with Journal.open_read_only(db) as reader:
        assert reader.sessions() == [s]
        journal.update_session(s.session_id, meter_wh=50.0)  # the writer carries on while the reader is open
        assert reader.open_session(1) == journal.open_session(1)
        with pytest.raises(JournalError, match="readonly"):
            reader.start_session(2, id_tag=None, meter_start_wh=0.0)
        with pytest.raises(JournalError, match="readonly"):
            reader.flag_meter_error(s.session_id, "x")
    assert journal.session(s.session_id) is not None


def test_read_only_never_creates_or_migrates(tmp_path: Path, db: Path) -> None:
    missing = tmp_path / "nowhere.db"
    with pytest.raises(JournalError, match="no such journal file"):
        Journal.open_read_only(missing)
    assert not missing.exists()
    _v1_journal(db)
    with pytest.raises(JournalError, match=r"schema version 1 is older .* start the firmware"):
        Journal.open_read_only(db)
    with _raw(db) as raw:
        assert raw.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 1
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(JournalCorrupt, match="not a session journal"):
        Journal.open_read_only(empty)


def test_record_equality_survives_the_round_trip(journal: Journal, db: Path) -> None:
    """What start/stop return is exactly what a later read (another process) gets back."""
    s = journal.start_session(3, id_tag="é-tag", meter_start_wh=0.1, meter_start_export_wh=0.2, tariff=TARIFF)
    journal.flag_meter_error(s.session_id, "frequency 43 Hz")
    done = journal.stop_session(s.session_id, reason="Local", meter_stop_wh=0.3, meter_stop_export_wh=0.7)
    journal.close()
    with Journal.open_read_only(db) as reader:
        assert reader.session(s.session_id) == done
    assert done.billing is not None and (done.billing.import_wh, done.billing.export_wh) == (0.2, 0.5)
    assert dataclasses.replace(done, billing=None) != done
