"""The session journal: charging sessions, meter totals and the last actuator commands, kept in SQLite so
that they survive a crash or a power loss (ARCHITECTURE.md, "Nothing lost"; anchors.md §2 "Power-loss/reboot
recovery" and §8 point 9: sessions lost on reboot in EVerest#2681/#1515, transaction ids lost offline in
libocpp#495, a station reporting Available while it was charging after a reboot).

What it keeps
-------------
* ``sessions``: one row per charging session, never deleted. A session is *open* until it is stopped;
  while open it carries the last checkpoint (the meter's import and export readings and the wall-clock time
  they were taken) and, optionally, the IEC 61851 connector state. Each session keeps both energy registers
  (import: energy to the EV; export: energy the EV discharged, V2G), the tariff fixed at its start
  (:class:`~firmware.metering.billing.Tariff`, ``None`` when none is configured), the first meter
  plausibility problem seen while it ran (:meth:`Journal.flag_meter_error`) and, once stopped, its billing
  record (:class:`~firmware.metering.billing.BillingRecord`), written by the same statement that stops it,
  so a stopped session always has one. Invariants, enforced in SQL as well as here: at most one open
  session per connector (a partial unique index), a stopped session never changes (a trigger), the
  identity of a session (id, connector, id tag, start time, start readings of import and export, tariff)
  never changes (a trigger), readings never go down: every checkpoint and stop reading ``>=`` the start
  reading (CHECK constraints) and ``>=`` the previous checkpoint (a trigger), for import and export alike;
  a stopped session has its stop values and billing record, an open one has none (CHECK constraints); a
  recorded meter error is never replaced (a trigger).
* ``meter_totals``: the latest import/export energy totals per connector (one row per connector, replaced
  in place). The ATM90E32 energy registers are read-to-clear, so the meter driver keeps the totals on the
  host; at boot the firmware resumes the driver from :meth:`Journal.last_meter`. Totals never go down
  unless the caller says the meter was reset.
* ``actuators``: the latest commanded contactor, pilot and lock state per connector (one row each).

Durability
----------
The file is in WAL mode with ``synchronous=FULL``. In WAL mode ``NORMAL`` only syncs the WAL at
checkpoints: a commit survives a crash of the process but the last commits can be rolled back by a power
loss or a kernel crash. ``FULL`` syncs the WAL on every commit, so once a write method has returned (all
of them commit before returning) the session stop, the checkpoint or the meter total is on the storage and
survives a power cut. The price is one fsync per write (about a millisecond on an SSD, a few to tens of
milliseconds on a slow SD card); the firmware writes at most a few times per second per connector.

Reconciliation at boot (public behaviour)
-----------------------------------------
Call :meth:`Journal.reconcile` once per connector at boot, before the connector state machine starts, with
a :class:`HardwareSnapshot` of what the hardware says now. Read the pilot with +12 V applied (state X1) so
that A, B, C and D can be told apart, and do it once the wall clock is trustworthy (RTC or NTP): the
policy compares wall-clock times.

* No open session on the connector: action ``"none"``.
* An open session, the EV still plugged in (pilot B, C or D) and the last checkpoint younger than
  ``resume_within_s`` (default 300 s): action ``"resumed"``. The same session id continues; the only
  write is a resume counter and time on the session. The firmware carries on with that session (and must
  not start a new one, which would lose the open transaction as in libocpp#495).
* Otherwise: action ``"closed"``. The session is stopped with

  - ``stopped_at`` = the time of the last checkpoint, the last moment the session is known to have been
    alive, never "now" (a station that was off for an hour did not deliver energy for that hour);
  - ``meter_stop_wh`` = the larger of the last checkpoint and the hardware meter reading when that is
    present and plausible (finite and not below the checkpoint; a lower reading is ignored because
    energy totals never go down, so it comes from a reset or replaced meter);
  - ``reason`` = ``"EVDisconnected"`` when the pilot now reads A, else ``"PowerLoss"`` (OCPP 1.6
    ``Reason`` values). Why: at boot the journal cannot know whether the firmware stopped because of a
    power cut, a watchdog reset or a crash, but it knows whether the EV is still there. When it is gone
    (A), the session could not have continued in any case, the driver ended it by leaving, and a new
    plug-in starts a new session: ``EVDisconnected`` is what the CSMS and the driver expect, and
    ``stopped_at`` still says when energy stopped. When the EV is still plugged (checkpoint too old) or
    the pilot does not tell (E, F), the outage is the only reason the session ended: ``PowerLoss``.
  - ``export_stop_wh`` = the last checkpoint's export reading; the billing record is written in the same
    transaction, as for any stop.
  - A checkpoint dated *after* "now" (the wall clock went back, e.g. a Pi without an RTC before NTP) does
    not prove the session is recent, so such a session is closed, never resumed.

Whatever the action, ``contactor_mismatch`` in the result is true when the contactor mirror contact reads
closed although no session is running on the connector (action ``"none"`` or ``"closed"``); the caller
raises a fault and opens the contactor (the station must never report Available while power flows).

Schema versions
---------------
Version 1: sessions (import only), meter totals, actuators. Version 2 adds to each session the export
readings, the tariff, the meter error and the billing record; a version 1 journal is migrated when the
firmware opens it (the sessions table is rebuilt in one transaction, keeping every row and its order): its
sessions get export 0 and, when stopped, a billing record computed then without a tariff.

Reading while the firmware runs
-------------------------------
``Journal.open_read_only(path)`` (``evse sessions``) opens an existing journal for reading only: it never
creates the file, never migrates it (a journal of another schema version is a :class:`JournalError` telling
what to do) and refuses every write. WAL lets it read while the firmware writes.

Errors
------
Every refusal and every SQLite failure is a :class:`JournalError` naming the file; the firmware never sees
a raw ``sqlite3`` exception. :class:`JournalCorrupt` means the file is not a readable journal (not a
database, a damaged page, a database of something else). What the firmware should do then is its decision;
the suggested one is :meth:`Journal.open_or_recover`: move the bad file aside with a timestamp suffix (it
is kept for diagnosis, not deleted), start a new journal and report the event. A journal written by a newer
firmware (schema version higher than :data:`SCHEMA_VERSION`) is a plain :class:`JournalError` and is not
moved aside: it is readable, only not by this version, and a downgrade must not split the history.

Timing: every call is a few small statements on a local file plus, for writes, one fsync; all calls are
synchronous and meant to be called from the firmware's event loop thread (the connection is bound to the
thread that opened it). Times are wall-clock seconds since the epoch (floats) from the injected
``wall_clock``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from firmware.metering.billing import QUANTITY_MAX, BillingError, BillingRecord, Tariff, billing_record
from firmware.sqlite_file import SqliteFile
from hal.types import PILOT_DUTY_MAX_PERMILLE, PilotMode

#: Schema version this firmware writes. Bump it together with a new entry in ``MIGRATIONS``.
SCHEMA_VERSION: Final = 3

#: OCPP 1.6 StopTransaction ``Reason`` values used by :meth:`Journal.reconcile` (OCPP 1.6 §7.47 Reason).
REASON_POWER_LOSS: Final = "PowerLoss"
REASON_EV_DISCONNECTED: Final = "EVDisconnected"

#: Pilot states (IEC 61851-1 Table A.3) in which a vehicle is connected.
EV_PLUGGED_STATES: Final = frozenset("BCD")
EV_STATES: Final = frozenset("ABCDEF")

#: How long a write waits for another connection that holds the write lock. Only another process (or a
#: second Journal object) writing the same file can hold it; the firmware itself is the only writer.
BUSY_TIMEOUT_S: Final = 0.5

_MAX_TEXT = 64  # reason and state names are short identifiers, not free text
_MAX_METER_ERROR = 200  # a meter error is one diagnostic sentence; a longer one is cut, never refused
# Wall-clock times must be representable as a date (billing records carry them as UTC dates): 1970..9999.
_TIME_MAX = 253_402_300_800.0  # 10000-01-01T00:00:00Z in seconds since the epoch

# SQLite primary result codes (sqlite.org/rescode.html): the file is damaged or is not a database.
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

ReconcileAction = Literal["none", "resumed", "closed"]


# --------------------------------------------------------------------------------------------- errors
class JournalError(Exception):
    """The journal refused a call or could not read or write its file. ``path`` names the file."""

    def __init__(self, path: str | Path, message: str) -> None:
        super().__init__(f"journal {path}: {message}")
        self.path = Path(path)
        self.message = message


class JournalCorrupt(JournalError):
    """The file is not a readable session journal (damaged, not a database, or some other database)."""


class SessionConflict(JournalError):
    """The connector already has an open session (one open session per connector)."""


class UnknownSession(JournalError):
    """No session has this id."""


class SessionStopped(JournalError):
    """The session is stopped; a stopped session never changes."""


# -------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class SessionRecord:
    """One charging session as stored. ``stopped_at``, ``meter_stop_wh`` and ``stop_reason`` are all
    ``None`` while the session is open and all set once it is stopped."""

    session_id: str
    connector: int
    id_tag: str | None
    started_at: float
    meter_start_wh: float
    last_meter_wh: float
    last_checkpoint_at: float
    state: str | None
    stopped_at: float | None
    meter_stop_wh: float | None
    stop_reason: str | None
    resume_count: int
    last_resumed_at: float | None
    #: Export register (energy from the EV, V2G): start, last checkpoint and stop readings, as for import.
    export_start_wh: float = 0.0
    last_export_wh: float = 0.0
    export_stop_wh: float | None = None
    #: The tariff fixed at the start (``None``: no tariff configured, no price).
    tariff: Tariff | None = None
    #: The first meter plausibility problem seen during the session; kept once set.
    meter_error: str | None = None
    #: The billing record, present exactly when the session is stopped.
    billing: BillingRecord | None = None

    @property
    def is_open(self) -> bool:
        return self.stopped_at is None

    @property
    def energy_wh(self) -> float:
        """Energy delivered so far (open) or in total (stopped)."""
        end = self.meter_stop_wh if self.meter_stop_wh is not None else self.last_meter_wh
        return end - self.meter_start_wh

    @property
    def import_wh(self) -> float:
        """Energy imported by the EV so far (open) or in total (stopped); the same as ``energy_wh``."""
        return self.energy_wh

    @property
    def export_wh(self) -> float:
        """Energy the EV discharged so far (open) or in total (stopped)."""
        end = self.export_stop_wh if self.export_stop_wh is not None else self.last_export_wh
        return end - self.export_start_wh

    @property
    def duration_s(self) -> float | None:
        """``stopped_at - started_at`` (0 if the wall clock went back); ``None`` while open."""
        return None if self.stopped_at is None else max(0.0, self.stopped_at - self.started_at)


@dataclass(frozen=True)
class ActuatorRecord:
    """The last actuator command recorded for a connector. ``pilot_mode`` is a :class:`PilotMode` value."""

    connector: int
    contactor_closed: bool
    pilot_mode: str
    duty_permille: int
    locked: bool
    at: float


@dataclass(frozen=True)
class MeterRecord:
    """The latest host-kept energy totals of a connector's meter."""

    connector: int
    import_wh: float
    export_wh: float
    at: float


@dataclass(frozen=True)
class HardwareSnapshot:
    """What the hardware says at boot: the pilot state as read now ('A'..'F', IEC 61851-1), the contactor
    mirror contact (``None`` when the board has none) and the meter's import total (``None`` if unknown)."""

    ev_state: str
    contactor_closed: bool | None = None
    meter_import_wh: float | None = None


@dataclass(frozen=True)
class Reconciliation:
    """The outcome of :meth:`Journal.reconcile`. ``session`` is the resumed or closed session (as stored
    after the call), ``None`` for action ``"none"``; ``detail`` explains the decision for the log."""

    connector: int
    action: ReconcileAction
    session: SessionRecord | None
    contactor_mismatch: bool
    detail: str


@dataclass(frozen=True)
class J3072Decision:
    """One J3072 discharge decision: a row of the audit log (:meth:`Journal.record_j3072`), the trace's
    ``j3072`` event and the backend's report (firmware/j3072/session.py)."""

    connector: int
    at: float  # wall-clock time (Unix seconds)
    authorised: bool
    reason: str  # "authorised" or the gate's denial reason (firmware.j3072.gatekeeper.REASONS)
    detail: str
    ism: str | None
    lfdi: str | None
    parameters_version: int
    max_discharge_w: float

    def as_dict(self) -> dict[str, object]:
        return {
            "connector": self.connector,
            "at": self.at,
            "decision": "authorised" if self.authorised else "denied",
            "reason": self.reason,
            "detail": self.detail,
            "ism": self.ism,
            "lfdi": self.lfdi,
            "parameters_version": self.parameters_version,
            "max_discharge_w": self.max_discharge_w,
        }


# ------------------------------------------------------------------------------------------ schema
def _create_v1(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE sessions (
            seq INTEGER PRIMARY KEY,  -- creation order ("newest first" must not trust the wall clock)
            session_id TEXT NOT NULL UNIQUE,
            connector INTEGER NOT NULL CHECK (connector >= 1),
            id_tag TEXT,
            started_at REAL NOT NULL,
            meter_start_wh REAL NOT NULL CHECK (meter_start_wh >= 0),
            last_meter_wh REAL NOT NULL CHECK (last_meter_wh >= meter_start_wh),
            last_checkpoint_at REAL NOT NULL,
            state TEXT,
            stopped_at REAL,
            meter_stop_wh REAL CHECK (meter_stop_wh >= meter_start_wh),
            stop_reason TEXT,
            resume_count INTEGER NOT NULL DEFAULT 0 CHECK (resume_count >= 0),
            last_resumed_at REAL,
            CHECK ((stopped_at IS NULL) = (meter_stop_wh IS NULL)),
            CHECK ((stopped_at IS NULL) = (stop_reason IS NULL))
        )
        """
    )
    conn.execute("CREATE UNIQUE INDEX one_open_session_per_connector ON sessions (connector) WHERE stopped_at IS NULL")
    conn.execute("CREATE INDEX sessions_by_connector ON sessions (connector, seq)")
    conn.execute(
        """
        CREATE TRIGGER stopped_sessions_are_final BEFORE UPDATE ON sessions
        WHEN OLD.stopped_at IS NOT NULL
        BEGIN SELECT RAISE(ABORT, 'stopped sessions never change'); END
        """
    )
    conn.execute(
        """
        CREATE TRIGGER session_identity_is_fixed
        BEFORE UPDATE OF seq, session_id, connector, id_tag, started_at, meter_start_wh ON sessions
        BEGIN SELECT RAISE(ABORT, 'the identity of a session never changes'); END
        """
    )
    conn.execute(
        """
        CREATE TRIGGER sessions_are_kept BEFORE DELETE ON sessions
        BEGIN SELECT RAISE(ABORT, 'sessions are never deleted'); END
        """
    )
    conn.execute(
        """
        CREATE TABLE meter_totals (
            connector INTEGER PRIMARY KEY CHECK (connector >= 1),
            import_wh REAL NOT NULL CHECK (import_wh >= 0),
            export_wh REAL NOT NULL CHECK (export_wh >= 0),
            at REAL NOT NULL
        )
        """
    )
    conn.execute(
        """
        CREATE TABLE actuators (
            connector INTEGER PRIMARY KEY CHECK (connector >= 1),
            contactor_closed INTEGER NOT NULL CHECK (contactor_closed IN (0, 1)),
            pilot_mode TEXT NOT NULL,
            duty_permille INTEGER NOT NULL CHECK (duty_permille BETWEEN 0 AND 1000),
            locked INTEGER NOT NULL CHECK (locked IN (0, 1)),
            at REAL NOT NULL
        )
        """
    )


# The session columns of schema 1, in SessionRecord field order.
_V1_SESSION_COLUMNS = (
    "session_id, connector, id_tag, started_at, meter_start_wh, last_meter_wh, last_checkpoint_at, state, "
    "stopped_at, meter_stop_wh, stop_reason, resume_count, last_resumed_at"
)


def _migrate_v2(conn: sqlite3.Connection) -> None:
    """Schema 2: export readings, tariff, meter error and billing record per session.

    SQLite cannot add table CHECK constraints to an existing table, so the sessions table is rebuilt:
    renamed aside, created anew, every row copied with its ``seq`` (the order), the old table dropped (its
    indexes and triggers with it), indexes and triggers created for the new one. All in the migration's
    transaction: a crash half-way leaves the version 1 journal as it was."""
    conn.execute("ALTER TABLE sessions RENAME TO sessions_v1")
    conn.execute(
        """
        CREATE TABLE sessions (
            seq INTEGER PRIMARY KEY,  -- creation order ("newest first" must not trust the wall clock)
            session_id TEXT NOT NULL UNIQUE,
            connector INTEGER NOT NULL CHECK (connector >= 1),
            id_tag TEXT,
            started_at REAL NOT NULL,
            meter_start_wh REAL NOT NULL CHECK (meter_start_wh >= 0),
            last_meter_wh REAL NOT NULL CHECK (last_meter_wh >= meter_start_wh),
            last_checkpoint_at REAL NOT NULL,
            state TEXT,
            stopped_at REAL,
            meter_stop_wh REAL CHECK (meter_stop_wh >= meter_start_wh),
            stop_reason TEXT,
            resume_count INTEGER NOT NULL DEFAULT 0 CHECK (resume_count >= 0),
            last_resumed_at REAL,
            export_start_wh REAL NOT NULL DEFAULT 0 CHECK (export_start_wh >= 0),
            last_export_wh REAL NOT NULL DEFAULT 0 CHECK (last_export_wh >= export_start_wh),
            export_stop_wh REAL CHECK (export_stop_wh >= export_start_wh),
            tariff TEXT,  -- Tariff.to_json() fixed at the start; NULL: no tariff configured
            meter_error TEXT,  -- the first meter plausibility problem of the session
            billing TEXT,  -- BillingRecord.to_json(), written by the statement that stops the session
            CHECK ((stopped_at IS NULL) = (meter_stop_wh IS NULL)),
            CHECK ((stopped_at IS NULL) = (stop_reason IS NULL)),
            CHECK ((stopped_at IS NULL) = (export_stop_wh IS NULL)),
            CHECK ((stopped_at IS NULL) = (billing IS NULL))
        )
        """
    )
    rows = conn.execute(f"SELECT seq, {_V1_SESSION_COLUMNS} FROM sessions_v1 ORDER BY seq").fetchall()
    for seq, *values in rows:
        old = SessionRecord(*values)
        stopped = not old.is_open
        record = dataclasses.replace(old, export_stop_wh=0.0 if stopped else None)
        try:
            billing = _billing_json(record) if stopped else None
        except BillingError as exc:  # a stored value the v1 firmware accepted but no date can hold
            raise _BadStoredValue(f"session {record.session_id}: no billing record can be made: {exc}") from exc
        conn.execute(
            f"INSERT INTO sessions (seq, {_V1_SESSION_COLUMNS}, export_stop_wh, billing)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, *values, record.export_stop_wh, billing),
        )
    conn.execute("DROP TABLE sessions_v1")
    conn.execute("CREATE UNIQUE INDEX one_open_session_per_connector ON sessions (connector) WHERE stopped_at IS NULL")
    conn.execute("CREATE INDEX sessions_by_connector ON sessions (connector, seq)")
    conn.execute(
        """
        CREATE TRIGGER stopped_sessions_are_final BEFORE UPDATE ON sessions
        WHEN OLD.stopped_at IS NOT NULL
        BEGIN SELECT RAISE(ABORT, 'stopped sessions never change'); END
        """
    )
    conn.execute(
        """
        CREATE TRIGGER session_identity_is_fixed
        BEFORE UPDATE OF seq, session_id, connector, id_tag, started_at, meter_start_wh, export_start_wh, tariff
        ON sessions
        BEGIN SELECT RAISE(ABORT, 'the identity of a session never changes'); END
        """
    )
    conn.execute(
        """
        CREATE TRIGGER sessions_are_kept BEFORE DELETE ON sessions
        BEGIN SELECT RAISE(ABORT, 'sessions are never deleted'); END
        """
    )
    # Checked on writes only (unlike a CHECK, a trigger does not re-judge the rows copied above).
    conn.execute(
        """
        CREATE TRIGGER session_readings_never_go_down
        BEFORE UPDATE OF last_meter_wh, last_export_wh, meter_stop_wh, export_stop_wh ON sessions
        WHEN NEW.last_meter_wh < OLD.last_meter_wh OR NEW.last_export_wh < OLD.last_export_wh
            OR NEW.meter_stop_wh < NEW.last_meter_wh OR NEW.export_stop_wh < NEW.last_export_wh
        BEGIN SELECT RAISE(ABORT, 'session meter readings never go down'); END
        """
    )
    conn.execute(
        """
        CREATE TRIGGER first_meter_error_is_kept BEFORE UPDATE OF meter_error ON sessions
        WHEN OLD.meter_error IS NOT NULL AND NEW.meter_error IS NOT OLD.meter_error
        BEGIN SELECT RAISE(ABORT, 'the first meter error of a session is kept'); END
        """
    )


def _migrate_v3(conn: sqlite3.Connection) -> None:
    """Schema 3: the SAE J3072 discharge decisions, an append-only audit log (issue 9, seed 003 R110).

    Every decision of the gate (authorised or denied, with its reason) is kept with the PEV's ISM number
    and LFDI, the site parameter version it was taken on, and the power it granted: what a utility asks
    for when a PEV discharged at a site. Rows are never changed or deleted (triggers)."""
    conn.execute(
        """
        CREATE TABLE j3072_decisions (
            seq INTEGER PRIMARY KEY,
            connector INTEGER NOT NULL CHECK (connector >= 1),
            at REAL NOT NULL,
            authorised INTEGER NOT NULL CHECK (authorised IN (0, 1)),
            reason TEXT NOT NULL,
            detail TEXT NOT NULL,
            ism TEXT,
            lfdi TEXT,
            parameters_version INTEGER NOT NULL CHECK (parameters_version >= 0),
            max_discharge_w REAL NOT NULL CHECK (max_discharge_w >= 0),
            CHECK (authorised = 0 OR reason = 'authorised')
        )
        """
    )
    conn.execute(
        """
        CREATE TRIGGER j3072_decisions_are_final BEFORE UPDATE ON j3072_decisions
        BEGIN SELECT RAISE(ABORT, 'J3072 decisions are an audit log: never changed'); END
        """
    )
    conn.execute(
        """
        CREATE TRIGGER j3072_decisions_are_kept BEFORE DELETE ON j3072_decisions
        BEGIN SELECT RAISE(ABORT, 'J3072 decisions are an audit log: never deleted'); END
        """
    )


#: Forward migrations: ``MIGRATIONS[n]`` brings a journal from schema version n-1 to n, inside the same
#: transaction that records version n. To change the schema, add a function and bump ``SCHEMA_VERSION``;
#: never edit a released migration (journals in the field were built by it).
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _create_v1, 2: _migrate_v2, 3: _migrate_v3}

_SESSION_COLUMNS = (
    f"{_V1_SESSION_COLUMNS}, export_start_wh, last_export_wh, export_stop_wh, tariff, meter_error, billing"
)


class _BadStoredValue(Exception):
    """A stored tariff or billing record that cannot be read back (turned into JournalCorrupt)."""


def _billing_json(record: SessionRecord) -> str:
    """The stored form of ``record``'s billing record (:class:`BillingError` if it cannot be made)."""
    return json.dumps(billing_record(record).to_json(), separators=(",", ":"), allow_nan=False)


def _session_from_row(row: Sequence[Any]) -> SessionRecord:
    # The column order of _SESSION_COLUMNS is the field order; the last three are stored as JSON or text.
    *plain, tariff_text, meter_error, billing_text = row
    try:
        tariff = None if tariff_text is None else Tariff.from_json(json.loads(tariff_text))
        billing = None if billing_text is None else BillingRecord.from_json(json.loads(billing_text))
    except (ValueError, TypeError) as exc:  # json.JSONDecodeError and BillingError are ValueErrors
        raise _BadStoredValue(f"session {plain[0]}: the stored tariff or billing record is unreadable: {exc}") from exc
    return dataclasses.replace(SessionRecord(*plain), tariff=tariff, meter_error=meter_error, billing=billing)


# -------------------------------------------------------------------------------------------- journal
class Journal(SqliteFile):
    """The session journal on one SQLite file (created if missing). See the module docstring for the
    durability guarantees, the reconciliation policy and the errors."""

    def __init__(self, path: str | Path, *, wall_clock: Callable[[], float] = time.time) -> None:
        self._open(Path(path), wall_clock, read_only=False)

    @classmethod
    def open_read_only(cls, path: str | Path) -> Journal:
        """Open an existing journal for reading only (module docstring, "Reading while the firmware runs"):
        a missing file, a file of another schema version and every write are :class:`JournalError`."""
        journal = cls.__new__(cls)
        journal._open(Path(path), time.time, read_only=True)
        return journal

    def _open(self, path: Path, wall_clock: Callable[[], float], *, read_only: bool) -> None:
        self._path = path
        self._wall_clock = wall_clock
        self._conn: sqlite3.Connection | None = None
        if read_only and not self._path.is_file():
            # Never create a journal just to read it: a wrong path must not look like an empty history.
            raise JournalError(self._path, "no such journal file")
        with self._guard("cannot open"):
            if read_only:
                uri = f"{self._path.resolve().as_uri()}?mode=ro"
                conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            else:
                conn = sqlite3.connect(str(self._path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            with self._guard("cannot open"):
                if read_only:
                    self._setup_read_only(conn)
                else:
                    self._setup(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @classmethod
    def open_or_recover(
        cls, path: str | Path, *, wall_clock: Callable[[], float] = time.time
    ) -> tuple[Journal, Path | None]:
        """Open the journal; if the file is corrupt (:class:`JournalCorrupt`), move it and its ``-wal``
        and ``-shm`` companions aside as ``<name>.corrupt-<UTC timestamp>`` and start a new journal.
        Returns the journal and the path the bad file was moved to (``None`` when nothing was wrong).
        Other errors (permissions, a journal from a newer firmware) are raised unchanged."""
        path = Path(path)
        try:
            return cls(path, wall_clock=wall_clock), None
        except JournalCorrupt:
            moved_to = _move_aside(path, wall_clock())
        return cls(path, wall_clock=wall_clock), moved_to

    @property
    def path(self) -> Path:
        return self._path

    # ------------------------------------------------------------------------------------ sessions
    def start_session(
        self,
        connector: int,
        *,
        id_tag: str | None,
        meter_start_wh: float,
        meter_start_export_wh: float = 0.0,
        tariff: Tariff | None = None,
        started_at: float | None = None,
    ) -> SessionRecord:
        """Open a new session on ``connector`` with a new unique id, the meter's import and export readings
        at the start and the tariff fixed for the whole session (``None``: no price). Raises
        :class:`SessionConflict` if the connector already has an open session."""
        _check_connector(self._path, connector)
        if id_tag is not None and not isinstance(id_tag, str):
            raise JournalError(self._path, f"id_tag must be a string or None, not {id_tag!r}")
        if tariff is not None and not isinstance(tariff, Tariff):
            raise JournalError(self._path, f"tariff must be a Tariff or None, not {tariff!r}")
        meter = _energy(self._path, "meter_start_wh", meter_start_wh)
        export = _energy(self._path, "meter_start_export_wh", meter_start_export_wh)
        at = self._time("started_at", started_at)
        tariff_text = None if tariff is None else json.dumps(tariff.to_json(), separators=(",", ":"))
        session_id = uuid.uuid4().hex
        with self._write("cannot start a session") as conn:
            open_now = self._open_session(conn, connector)
            if open_now is not None:
                raise self._conflict(connector, open_now.session_id)
            try:
                conn.execute(
                    "INSERT INTO sessions (session_id, connector, id_tag, started_at, meter_start_wh, last_meter_wh,"
                    " last_checkpoint_at, export_start_wh, last_export_wh, tariff)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (session_id, connector, id_tag, at, meter, meter, at, export, export, tariff_text),
                )
            except sqlite3.IntegrityError as exc:
                # The partial unique index caught what the check above could not see (another writer).
                raise self._conflict(connector, None) from exc
            started = self._session(conn, session_id)
            assert started is not None  # same transaction, the row was just inserted
        return started

    def update_session(
        self, session_id: str, *, meter_wh: float, export_wh: float | None = None, at: float | None = None
    ) -> None:
        """Checkpoint an open session: the meter's import reading ``meter_wh`` and export reading
        ``export_wh`` (``None``: unchanged) at ``at``. A reading below the last checkpoint is refused
        (energy totals never go down)."""
        meter = _energy(self._path, "meter_wh", meter_wh)
        export = None if export_wh is None else _energy(self._path, "export_wh", export_wh)
        when = self._time("at", at)
        with self._write("cannot checkpoint a session") as conn:
            record = self._require_open_session(conn, session_id)
            self._check_not_below(record, "meter reading", meter, export)
            conn.execute(
                "UPDATE sessions SET last_meter_wh = ?, last_export_wh = ?, last_checkpoint_at = ?"
                " WHERE session_id = ?",
                (meter, record.last_export_wh if export is None else export, when, session_id),
            )

    def set_session_state(self, session_id: str, state: str) -> None:
        """Record the IEC 61851 connector state name of an open session (for reconciliation and reports)."""
        _check_name(self._path, "state", state)
        with self._write("cannot record the session state") as conn:
            self._require_open_session(conn, session_id)
            conn.execute("UPDATE sessions SET state = ? WHERE session_id = ?", (state, session_id))

    def flag_meter_error(self, session_id: str, detail: str) -> None:
        """Record a meter plausibility problem on an open session; it goes into the billing record. Only the
        first one is kept (later calls change nothing: the first error is what makes the energies suspect).
        A detail longer than 200 characters is cut. A stopped session raises :class:`SessionStopped`."""
        if not isinstance(detail, str) or not detail.strip():
            raise JournalError(self._path, f"detail must be a non-empty string, not {detail!r}")
        text = detail.strip()
        if len(text) > _MAX_METER_ERROR:
            text = text[: _MAX_METER_ERROR - 1] + "…"
        with self._write("cannot flag a meter error") as conn:
            record = self._require_open_session(conn, session_id)
            if record.meter_error is None:
                conn.execute("UPDATE sessions SET meter_error = ? WHERE session_id = ?", (text, session_id))

    def stop_session(
        self,
        session_id: str,
        *,
        reason: str,
        meter_stop_wh: float,
        meter_stop_export_wh: float | None = None,
        stopped_at: float | None = None,
    ) -> SessionRecord:
        """Stop a session, write its billing record in the same transaction, and return it as stored.
        ``meter_stop_export_wh`` ``None`` takes the last checkpoint's export reading. Idempotent: stopping a
        stopped session returns the stored record unchanged, whatever the arguments (never a second stop,
        never a changed reason). A stop reading below the last checkpoint is refused (energy totals never go
        down)."""
        _check_name(self._path, "reason", reason)
        meter = _energy(self._path, "meter_stop_wh", meter_stop_wh)
        export = (
            None if meter_stop_export_wh is None else _energy(self._path, "meter_stop_export_wh", meter_stop_export_wh)
        )
        when = self._time("stopped_at", stopped_at)
        with self._write("cannot stop a session") as conn:
            record = self._session(conn, session_id)
            if record is None:
                raise UnknownSession(self._path, f"no session {session_id!r}")
            if not record.is_open:
                return record
            self._check_not_below(record, "stop reading", meter, export)
            return self._stop(
                conn,
                record,
                reason=reason,
                meter_stop_wh=meter,
                export_stop_wh=record.last_export_wh if export is None else export,
                stopped_at=when,
            )

    def open_session(self, connector: int) -> SessionRecord | None:
        """The open session on ``connector``, if any."""
        _check_connector(self._path, connector)
        with self._read("cannot read sessions") as conn:
            return self._open_session(conn, connector)

    def session(self, session_id: str) -> SessionRecord | None:
        """The session with this id, or ``None``."""
        with self._read("cannot read sessions") as conn:
            return self._session(conn, session_id)

    def sessions(self, connector: int | None = None, limit: int | None = None) -> list[SessionRecord]:
        """Sessions, newest (most recently started) first, optionally of one connector and at most
        ``limit`` of them."""
        if connector is not None:
            _check_connector(self._path, connector)
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            raise JournalError(self._path, f"limit must be an integer >= 0 or None, not {limit!r}")
        sql_limit = -1 if limit is None else limit  # SQLite: a negative LIMIT means no limit
        with self._read("cannot read sessions") as conn:
            if connector is None:
                rows = conn.execute(
                    f"SELECT {_SESSION_COLUMNS} FROM sessions ORDER BY seq DESC LIMIT ?", (sql_limit,)
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE connector = ? ORDER BY seq DESC LIMIT ?",
                    (connector, sql_limit),
                ).fetchall()
            return [_session_from_row(row) for row in rows]  # inside the guard: a bad row is JournalCorrupt

    # ------------------------------------------------------------------------- actuators and meter
    def record_actuators(
        self,
        connector: int,
        *,
        contactor_closed: bool,
        pilot_mode: str,
        duty_permille: int,
        locked: bool,
        at: float | None = None,
    ) -> None:
        """Record the latest actuator command of ``connector`` (replaces the previous one)."""
        _check_connector(self._path, connector)
        modes = {m.value for m in PilotMode}
        if pilot_mode not in modes:
            raise JournalError(self._path, f"pilot_mode must be one of {sorted(modes)}, not {pilot_mode!r}")
        if (
            not isinstance(duty_permille, int)
            or isinstance(duty_permille, bool)
            or not 0 <= duty_permille <= PILOT_DUTY_MAX_PERMILLE
        ):
            raise JournalError(
                self._path, f"duty_permille must be an integer 0..{PILOT_DUTY_MAX_PERMILLE}, not {duty_permille!r}"
            )
        for name, flag in (("contactor_closed", contactor_closed), ("locked", locked)):
            if not isinstance(flag, bool):
                raise JournalError(self._path, f"{name} must be a bool, not {flag!r}")
        when = self._time("at", at)
        with self._write("cannot record actuators") as conn:
            conn.execute(
                "INSERT INTO actuators (connector, contactor_closed, pilot_mode, duty_permille, locked, at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (connector) DO UPDATE SET"
                " contactor_closed = excluded.contactor_closed, pilot_mode = excluded.pilot_mode,"
                " duty_permille = excluded.duty_permille, locked = excluded.locked, at = excluded.at",
                (connector, int(contactor_closed), pilot_mode, duty_permille, int(locked), when),
            )

    def last_actuators(self, connector: int) -> ActuatorRecord | None:
        _check_connector(self._path, connector)
        with self._read("cannot read actuators") as conn:
            row = conn.execute(
                "SELECT connector, contactor_closed, pilot_mode, duty_permille, locked, at FROM actuators"
                " WHERE connector = ?",
                (connector,),
            ).fetchone()
        if row is None:
            return None
        return ActuatorRecord(row[0], bool(row[1]), row[2], row[3], bool(row[4]), row[5])

    def record_j3072(self, decision: J3072Decision) -> None:
        """Append one J3072 discharge decision to the audit log (firmware/j3072/session.py)."""
        d = decision
        _check_connector(self._path, d.connector)
        if not isinstance(d.authorised, bool) or not isinstance(d.reason, str) or not d.reason:
            raise JournalError(self._path, f"a J3072 decision needs authorised (bool) and a reason, not {d.reason!r}")
        if d.authorised != (d.reason == "authorised"):
            raise JournalError(
                self._path, f"a J3072 decision authorised={d.authorised} cannot carry the reason {d.reason!r}"
            )
        if not (math.isfinite(d.max_discharge_w) and d.max_discharge_w >= 0):
            raise JournalError(self._path, f"max_discharge_w must be a finite power >= 0, not {d.max_discharge_w!r}")
        when = self._time("at", d.at)
        row = (d.connector, when, int(d.authorised), d.reason, d.detail[:500], d.ism, d.lfdi, d.parameters_version)
        with self._write("cannot record a J3072 decision") as conn:
            conn.execute(
                "INSERT INTO j3072_decisions (connector, at, authorised, reason, detail, ism, lfdi,"
                " parameters_version, max_discharge_w) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*row, d.max_discharge_w),
            )

    def j3072_decisions(self, connector: int | None = None, limit: int | None = None) -> list[J3072Decision]:
        """The J3072 decisions, newest first."""
        query = (
            "SELECT connector, at, authorised, reason, detail, ism, lfdi, parameters_version, max_discharge_w"
            " FROM j3072_decisions"
        )
        args: list[object] = []
        if connector is not None:
            _check_connector(self._path, connector)
            query += " WHERE connector = ?"
            args.append(connector)
        query += " ORDER BY seq DESC"
        if limit is not None:
            query += " LIMIT ?"
            args.append(int(limit))
        with self._read("cannot read J3072 decisions") as conn:
            rows = conn.execute(query, args).fetchall()
        return [J3072Decision(r[0], r[1], bool(r[2]), r[3], r[4], r[5], r[6], r[7], r[8]) for r in rows]

    def record_meter(
        self, connector: int, *, import_wh: float, export_wh: float, at: float | None = None, reset: bool = False
    ) -> None:
        """Record the latest energy totals of ``connector``'s meter (replaces the previous ones). A total
        below the stored one is refused unless ``reset=True`` (the meter was replaced or reset)."""
        _check_connector(self._path, connector)
        imp = _energy(self._path, "import_wh", import_wh)
        exp = _energy(self._path, "export_wh", export_wh)
        when = self._time("at", at)
        with self._write("cannot record meter totals") as conn:
            row = conn.execute(
                "SELECT import_wh, export_wh FROM meter_totals WHERE connector = ?", (connector,)
            ).fetchone()
            if row is not None and not reset and (imp < row[0] or exp < row[1]):
                raise JournalError(
                    self._path,
                    f"connector {connector}: meter totals import {imp} Wh / export {exp} Wh are below the stored "
                    f"{row[0]} Wh / {row[1]} Wh; energy registers never go down (pass reset=True after a meter reset)",
                )
            conn.execute(
                "INSERT INTO meter_totals (connector, import_wh, export_wh, at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (connector) DO UPDATE SET"
                " import_wh = excluded.import_wh, export_wh = excluded.export_wh, at = excluded.at",
                (connector, imp, exp, when),
            )

    def last_meter(self, connector: int) -> MeterRecord | None:
        _check_connector(self._path, connector)
        with self._read("cannot read meter totals") as conn:
            row = conn.execute(
                "SELECT connector, import_wh, export_wh, at FROM meter_totals WHERE connector = ?", (connector,)
            ).fetchone()
        return None if row is None else MeterRecord(*row)

    def resume_meter_totals(self, connector: int) -> tuple[float, float]:
        """(import, export) Wh to resume the meter driver from after a restart: the stored totals, or
        the open session's last checkpoint if that is higher (a checkpoint can be newer than the last
        ``record_meter``), so that no later reading is refused as going down."""
        last = self.last_meter(connector)
        import_wh, export_wh = (last.import_wh, last.export_wh) if last is not None else (0.0, 0.0)
        session = self.open_session(connector)
        if session is not None:
            import_wh = max(import_wh, session.last_meter_wh)
            export_wh = max(export_wh, session.last_export_wh)
        return import_wh, export_wh

    # ------------------------------------------------------------------------------- reconciliation
    def reconcile(
        self, connector: int, hw: HardwareSnapshot, *, now: float | None = None, resume_within_s: float = 300.0
    ) -> Reconciliation:
        """Reconcile ``connector``'s open session with the hardware at boot; the policy is in the module
        docstring."""
        _check_connector(self._path, connector)
        if hw.ev_state not in EV_STATES:
            raise JournalError(self._path, f"ev_state must be one of A..F, not {hw.ev_state!r}")
        if hw.contactor_closed is not None and not isinstance(hw.contactor_closed, bool):
            raise JournalError(self._path, f"contactor_closed must be a bool or None, not {hw.contactor_closed!r}")
        if not (isinstance(resume_within_s, int | float) and math.isfinite(resume_within_s) and resume_within_s >= 0):
            raise JournalError(self._path, f"resume_within_s must be a finite number >= 0, not {resume_within_s!r}")
        when = self._time("now", now)
        contactor_closed = hw.contactor_closed is True
        with self._write("cannot reconcile") as conn:
            record = self._open_session(conn, connector)
            if record is None:
                return Reconciliation(
                    connector,
                    "none",
                    None,
                    contactor_closed,
                    f"connector {connector}: no open session" + _mismatch_note(contactor_closed),
                )
            age = when - record.last_checkpoint_at
            plugged = hw.ev_state in EV_PLUGGED_STATES
            if plugged and 0 <= age < resume_within_s:
                conn.execute(
                    "UPDATE sessions SET resume_count = resume_count + 1, last_resumed_at = ? WHERE session_id = ?",
                    (when, record.session_id),
                )
                resumed = self._session(conn, record.session_id)
                assert resumed is not None  # same transaction, the row was just updated
                return Reconciliation(
                    connector,
                    "resumed",
                    resumed,
                    False,
                    f"connector {connector}: session {record.session_id} resumed: EV still plugged "
                    f"(pilot {hw.ev_state}), last checkpoint {age:.1f} s ago (< {resume_within_s:g} s)",
                )
            reason = REASON_EV_DISCONNECTED if hw.ev_state == "A" else REASON_POWER_LOSS
            meter_stop = record.last_meter_wh
            hw_meter = hw.meter_import_wh
            hw_note = ""
            if hw_meter is not None:
                if (
                    isinstance(hw_meter, int | float)
                    and not isinstance(hw_meter, bool)
                    and math.isfinite(hw_meter)
                    and meter_stop <= hw_meter <= QUANTITY_MAX
                ):
                    meter_stop = float(hw_meter)
                    hw_note = f", meter {meter_stop} Wh from the hardware"
                else:
                    hw_note = f", hardware meter {hw_meter!r} Wh ignored (below the checkpoint or not a number)"
            if plugged:
                why = (
                    f"last checkpoint {age:.1f} s ago, not < {resume_within_s:g} s"
                    if age >= 0
                    else f"last checkpoint {-age:.1f} s in the future (the wall clock went back)"
                )
            else:
                why = f"pilot {hw.ev_state}, no EV seen"
            closed = self._stop(
                conn,
                record,
                reason=reason,
                meter_stop_wh=meter_stop,
                export_stop_wh=record.last_export_wh,
                stopped_at=record.last_checkpoint_at,
            )
            return Reconciliation(
                connector,
                "closed",
                closed,
                contactor_closed,
                f"connector {connector}: session {record.session_id} closed as {reason} ({why}{hw_note})"
                + _mismatch_note(contactor_closed),
            )

    # ------------------------------------------------------------------------------------ internals
    def _setup(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(self._path, f"cannot use WAL mode (SQLite kept journal_mode={mode})")
        conn.execute("PRAGMA synchronous=FULL")  # why FULL: module docstring, "Durability"
        check = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
        if check != ["ok"]:
            raise JournalCorrupt(self._path, "database is damaged: " + "; ".join(str(c) for c in check[:5]))
        self._migrate(conn)

    def _setup_read_only(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA query_only=1")  # belt and braces: the connection is read-only already
        check = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
        if check != ["ok"]:
            raise JournalCorrupt(self._path, "database is damaged: " + "; ".join(str(c) for c in check[:5]))
        version = self._schema_version(conn)
        if version == 0:
            raise JournalCorrupt(self._path, "not a session journal: the file holds no tables")
        if version > SCHEMA_VERSION:
            raise JournalError(
                self._path,
                f"schema version {version} was written by a newer firmware; this one reads up to {SCHEMA_VERSION}",
            )
        if version < SCHEMA_VERSION:
            raise JournalError(
                self._path,
                f"schema version {version} is older than this firmware's {SCHEMA_VERSION}; start the firmware "
                "(evse run) once to migrate it, then read it again",
            )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")  # a second Journal opening the same file waits, then sees our version
        try:
            version = self._schema_version(conn)
            if version > SCHEMA_VERSION:
                raise JournalError(
                    self._path,
                    f"schema version {version} was written by a newer firmware; this one knows up to "
                    f"{SCHEMA_VERSION} and does not downgrade journals",
                )
            if version == 0:
                conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[target](conn)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (target, self._wall_clock())
                )
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")

    def _schema_version(self, conn: sqlite3.Connection) -> int:
        tables = {
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        }
        if "schema_version" not in tables:
            if tables:
                raise JournalCorrupt(
                    self._path, f"not a session journal: tables {sorted(tables)} but no schema_version table"
                )
            return 0
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        if not isinstance(version, int) or version < 1:
            raise JournalCorrupt(self._path, f"schema_version table holds no valid version ({version!r})")
        return version

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Turn SQLite errors into JournalError naming the file (JournalCorrupt for a damaged file)."""
        try:
            yield
        except _BadStoredValue as exc:
            raise JournalCorrupt(self._path, f"{action}: {exc}") from exc
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if isinstance(code, int) and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
                raise JournalCorrupt(self._path, f"{action}: the file is damaged or not a database ({exc})") from exc
            raise JournalError(self._path, f"{action}: {exc}") from exc

    def _closed_error(self) -> Exception:
        return JournalError(self._path, "the journal is closed")

    def _time(self, name: str, value: float | None) -> float:
        if value is None:
            value = self._wall_clock()
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 <= value < _TIME_MAX
        ):
            raise JournalError(
                self._path, f"{name} must be a finite time in seconds since the epoch (1970..9999), not {value!r}"
            )
        return float(value)

    def _conflict(self, connector: int, open_id: str | None) -> SessionConflict:
        which = f" ({open_id})" if open_id else ""
        return SessionConflict(
            self._path, f"connector {connector} already has an open session{which}; stop it before starting one"
        )

    def _session(self, conn: sqlite3.Connection, session_id: str) -> SessionRecord | None:
        if not isinstance(session_id, str):
            raise JournalError(self._path, f"session_id must be a string, not {session_id!r}")
        row = conn.execute(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
        return None if row is None else _session_from_row(row)

    def _open_session(self, conn: sqlite3.Connection, connector: int) -> SessionRecord | None:
        row = conn.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE connector = ? AND stopped_at IS NULL", (connector,)
        ).fetchone()
        return None if row is None else _session_from_row(row)

    def _require_open_session(self, conn: sqlite3.Connection, session_id: str) -> SessionRecord:
        record = self._session(conn, session_id)
        if record is None:
            raise UnknownSession(self._path, f"no session {session_id!r}")
        if not record.is_open:
            raise SessionStopped(
                self._path, f"session {session_id} was stopped ({record.stop_reason}); stopped sessions never change"
            )
        return record

    def _check_not_below(self, record: SessionRecord, what: str, meter: float, export: float | None) -> None:
        if meter < record.last_meter_wh:
            raise JournalError(
                self._path,
                f"session {record.session_id}: {what} {meter} Wh is below the last checkpoint "
                f"{record.last_meter_wh} Wh; energy totals never go down",
            )
        if export is not None and export < record.last_export_wh:
            raise JournalError(
                self._path,
                f"session {record.session_id}: export {what} {export} Wh is below the last checkpoint's export "
                f"{record.last_export_wh} Wh; energy totals never go down",
            )

    def _stop(
        self,
        conn: sqlite3.Connection,
        record: SessionRecord,
        *,
        reason: str,
        meter_stop_wh: float,
        export_stop_wh: float,
        stopped_at: float,
    ) -> SessionRecord:
        """Stop ``record`` with its billing record, in one UPDATE (a stopped session always has one)."""
        stopped = dataclasses.replace(
            record,
            stopped_at=stopped_at,
            meter_stop_wh=meter_stop_wh,
            stop_reason=reason,
            export_stop_wh=export_stop_wh,
        )
        try:
            billing = _billing_json(stopped)
        except BillingError as exc:  # cannot happen with the bounded times and energies the journal accepts
            raise JournalError(
                self._path, f"session {record.session_id}: cannot make its billing record: {exc}"
            ) from exc
        conn.execute(
            "UPDATE sessions SET stopped_at = ?, meter_stop_wh = ?, stop_reason = ?, export_stop_wh = ?, billing = ?"
            " WHERE session_id = ?",
            (stopped_at, meter_stop_wh, reason, export_stop_wh, billing, record.session_id),
        )
        stored = self._session(conn, record.session_id)
        assert stored is not None  # same transaction, the row was just updated
        return stored


# ------------------------------------------------------------------------------------------- helpers
def _check_connector(path: Path, connector: int) -> None:
    # Connectors are numbered from 1 as in OCPP; 0 is the whole station and never has a session.
    if isinstance(connector, bool) or not isinstance(connector, int) or connector < 1:
        raise JournalError(path, f"connector must be an integer >= 1, not {connector!r}")


def _check_name(path: Path, name: str, value: str) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT:
        raise JournalError(path, f"{name} must be a non-empty string of at most {_MAX_TEXT} characters, not {value!r}")


def _energy(path: Path, name: str, value: float) -> float:
    # Bounded so that every session can be priced (billing.QUANTITY_MAX, 1 TWh: far above any meter register):
    # a stop must never fail because its billing record cannot be made.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and 0 <= value <= QUANTITY_MAX)
    ):
        raise JournalError(path, f"{name} must be a finite energy >= 0 and <= {QUANTITY_MAX:g} Wh, not {value!r}")
    return float(value)


def _mismatch_note(contactor_closed: bool) -> str:
    return "; contactor mirror reads CLOSED with no session running" if contactor_closed else ""


def _move_aside(path: Path, now: float) -> Path:
    """Rename ``path`` (and its ``-wal``/``-shm`` files) to ``<name>.corrupt-<UTC timestamp>[-n]`` and
    return the new path of the main file."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    try:
        os.replace(path, target)
        for suffix in ("-wal", "-shm"):
            companion = Path(f"{path}{suffix}")
            if companion.exists():
                os.replace(companion, Path(f"{target}{suffix}"))
    except OSError as exc:
        raise JournalError(path, f"the journal is corrupt and could not be moved aside: {exc}") from exc
    # Make the renames themselves durable, so a power cut now does not bring the bad file back.
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return target
