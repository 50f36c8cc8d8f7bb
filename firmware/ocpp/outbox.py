"""The persistent OCPP outbox: messages to the CSMS that must never be lost, kept in SQLite until the CSMS has
answered them, and the sender that drains it in order (ARCHITECTURE.md "Nothing lost"; seed requirement R48,
transaction buffering while offline; anchors.md §8: transaction ids lost offline in libocpp#495).

What goes in
------------
Every transaction-related message: OCPP 1.6 StartTransaction, StopTransaction and MeterValues that carry a
``transactionId``; OCPP 2.0.1 TransactionEvent. Non-transactional messages (a StatusNotification, say) may be
queued too, with ``transactional=False``; they are the first to go when the outbox is full. The three
transaction actions and a MeterValues with a ``transactionId`` are refused as non-transactional, so that
billing data can never be dropped to make room.

Guarantees
----------
* Nothing lost: :meth:`Outbox.put` commits (and syncs) before it returns, so an acknowledged put survives a
  crash and a power cut (same durability as the journal: WAL, ``synchronous=FULL``; see
  :mod:`firmware.journal`, "Durability").
* Nothing reordered: ``seq`` is an AUTOINCREMENT key, strictly increasing and never reused even after old rows
  are pruned; :meth:`Outbox.head` is always the oldest pending message and the sender never sends message
  n+1 before n is delivered or dropped.
* Nothing duplicated in the store: a delivered message is never pending again (SQL triggers make delivered
  and dropped rows final). On the wire delivery is at least once: when the link dies after the CSMS got a
  CALL but before its answer came back, the message is sent again (the CSMS must tolerate that; a retried
  CALL gets a new message id, standards-facts.md §4.6).
* A message that exhausted its attempts is *dropped*: logged as a warning and kept with ``state='dropped'``
  and the reason, visible through :meth:`Outbox.dropped`, not deleted. History is bounded: only the newest
  ``keep_delivered`` delivered and ``keep_dropped`` dropped rows are kept (pending rows are never deleted),
  so that a station that stays offline or keeps being refused does not fill its SD card.

Retries (:class:`OutboxSender`)
-------------------------------
OCPP 1.6 "transaction-related messages": up to TransactionMessageAttempts attempts, waiting
TransactionMessageRetryInterval × (number of attempts so far) between them; OCPP 2.0.1 E13 (E13.FR.01..04):
MessageAttempts / MessageAttemptInterval of OCPPCommCtrlr for TransactionEvent (standards-facts.md §4.6).
What counts as an attempt: a CALLERROR answer (:class:`OutboxCallError`) and a timeout. What does not: a
message that could not be sent because the link is down (``ConnectionError``); it waits for the link. A
non-transactional message gets ``non_transactional_attempts`` (default 1): OCPP defines retries for
transaction messages only, and a refused StatusNotification is superseded by the next one.

1.6 offline transactions
------------------------
A StartTransaction queued offline has no ``transactionId`` yet: the CSMS assigns it in StartTransaction.conf.
Later MeterValues and StopTransaction of the same session are put with the placeholder ``"$tx:<tx_ref>"`` as
their top-level ``transactionId`` (``tx_ref`` is our local session id). When the StartTransaction is
delivered, :meth:`Outbox.delivered` with its response binds the id and rewrites the pending payloads *in the
same transaction* (a crash between "delivered" and "bound" would otherwise strand the dependants);
:meth:`Outbox.bind_transaction` does the same explicitly. A placeholder whose ref is already bound is
substituted at ``put``. If the StartTransaction is dropped (or delivered without a usable id), its pending
dependants are dropped too, with a reason: they could never be sent. ``head()`` never returns a payload with an
unbound placeholder.

Full outbox
-----------
At ``max_messages`` pending messages a put first drops the OLDEST pending non-transactional message (a status
report that a newer one supersedes). When every pending message is transactional the put is refused with
:class:`OutboxFull`: the caller must see it (and, for instance, refuse new sessions) instead of the outbox
silently losing a StartTransaction or StopTransaction, which is billing data.

Storage
-------
The outbox lives in the journal's database file (tables ``ocpp_outbox``, ``ocpp_outbox_tx``,
``ocpp_outbox_count``, ``ocpp_outbox_schema``) with its own connection. Opening an outbox on a file first opens
the :class:`~firmware.journal.Journal` on it, so that the file is always a valid journal (the journal calls a
file with tables but no journal schema corrupt). Only one :class:`Outbox` may be open on a file at a time.
``path=None`` keeps everything in memory (tests). Every failure is an :class:`OutboxError` (a
:class:`~firmware.journal.JournalError`) naming the file; the caller never sees a raw ``sqlite3`` exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeGuard

from firmware.journal import BUSY_TIMEOUT_S, Journal, JournalError
from firmware.sqlite_file import SqliteFile
from hal.clock import Clock

log = logging.getLogger(__name__)

#: Schema version of the outbox tables (separate from the journal's own schema version).
OUTBOX_SCHEMA_VERSION: Final = 1

#: Placeholder for a 1.6 transactionId not known yet: ``"$tx:<tx_ref>"``.
PLACEHOLDER_PREFIX: Final = "$tx:"

#: The OCPP 1.6 message whose confirmation carries the transactionId (OCPP 1.6 StartTransaction.conf).
START_TRANSACTION: Final = "StartTransaction"

#: Actions that are always transaction-related (1.6 Start/StopTransaction, 2.0.1 TransactionEvent).
ALWAYS_TRANSACTIONAL: Final = frozenset({"StartTransaction", "StopTransaction", "TransactionEvent"})

#: Defaults when a configuration callable misbehaves: libocpp's 1.6 defaults (standards-facts.md §4.6).
DEFAULT_ATTEMPTS: Final = 3
DEFAULT_RETRY_INTERVAL_S: Final = 30.0

_MAX_NAME = 64  # action names and local transaction references are short identifiers
_MAX_ERROR_TEXT = 500  # stored error and drop reasons are for an engineer, not unbounded
_MEMORY = ":memory:"

MessageState = Literal["pending", "delivered", "dropped"]


# --------------------------------------------------------------------------------------------- errors
class OutboxError(JournalError):
    """The outbox refused a call or could not read or write its file. ``path`` names the file (``:memory:``
    for an in-memory outbox). A :class:`JournalError` because the outbox lives in the journal's file."""

    def __init__(self, path: str | Path, message: str) -> None:
        super().__init__(path, message)
        self.args = (f"outbox {path}: {message}",)


class OutboxFull(OutboxError):
    """``max_messages`` messages are pending and all of them are transactional: nothing may be dropped."""


class OutboxCallError(Exception):
    """The CSMS answered a CALL with a CALLERROR (OCPP-J, standards-facts.md §4.1). Raised by the ``send``
    callable of :class:`OutboxSender`; counts as an attempt."""

    def __init__(self, code: str, description: str = "") -> None:
        super().__init__(f"CALLERROR {code}: {description}" if description else f"CALLERROR {code}")
        self.code = code
        self.description = description


# -------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class QueuedMessage:
    """One message as stored. ``payload`` is a fresh copy: changing it changes nothing in the outbox."""

    seq: int  # strictly increasing, defines the order
    action: str  # OCPP action name, e.g. "StartTransaction"
    payload: dict[str, Any]  # camelCase JSON payload as it will go on the wire
    transactional: bool
    attempts: int
    created_at: float  # wall-clock seconds
    tx_ref: str | None  # local transaction reference (our session id)

    @property
    def placeholder_ref(self) -> str | None:
        """The tx_ref of an unbound ``"$tx:<ref>"`` transactionId in the payload, else ``None``."""
        return _placeholder_ref(self.payload)


@dataclass(frozen=True)
class Outgoing:
    """One message for :meth:`Outbox.put_many` (the arguments of :meth:`Outbox.put`)."""

    action: str
    payload: dict[str, Any]
    transactional: bool = True
    tx_ref: str | None = None


# ------------------------------------------------------------------------------------------ schema
def _create_v1(conn: sqlite3.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE ocpp_outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: never reused after pruning
            action TEXT NOT NULL CHECK (length(action) BETWEEN 1 AND 64),
            payload TEXT NOT NULL,
            transactional INTEGER NOT NULL CHECK (transactional IN (0, 1)),
            tx_ref TEXT,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dropped')),
            attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            created_at REAL NOT NULL,
            finished_at REAL,
            last_error TEXT,
            response TEXT,
            drop_reason TEXT,
            CHECK ((state = 'pending') = (finished_at IS NULL)),
            CHECK ((state = 'dropped') = (drop_reason IS NOT NULL))
        )
        """
    )
    conn.execute("CREATE INDEX ocpp_outbox_by_state ON ocpp_outbox (state, seq)")
    conn.execute("CREATE INDEX ocpp_outbox_pending_by_ref ON ocpp_outbox (tx_ref) WHERE state = 'pending'")
    conn.execute(
        """
        CREATE TRIGGER ocpp_outbox_final BEFORE UPDATE ON ocpp_outbox WHEN OLD.state != 'pending'
        BEGIN SELECT RAISE(ABORT, 'delivered and dropped messages never change'); END
        """
    )
    conn.execute(
        """
        CREATE TRIGGER ocpp_outbox_identity BEFORE UPDATE OF seq, action, transactional, tx_ref, created_at
        ON ocpp_outbox BEGIN SELECT RAISE(ABORT, 'the identity of a queued message never changes'); END
        """
    )
    conn.execute(
        """
        CREATE TRIGGER ocpp_outbox_keep_pending BEFORE DELETE ON ocpp_outbox WHEN OLD.state = 'pending'
        BEGIN SELECT RAISE(ABORT, 'pending messages are never deleted'); END
        """
    )
    # The pending count, kept by triggers so that the capacity check is one row read, not a scan per put.
    conn.execute(
        "CREATE TABLE ocpp_outbox_count (id INTEGER PRIMARY KEY CHECK (id = 1), pending INTEGER NOT NULL"
        " CHECK (pending >= 0))"
    )
    conn.execute("INSERT INTO ocpp_outbox_count (id, pending) VALUES (1, 0)")
    conn.execute(
        """
        CREATE TRIGGER ocpp_outbox_count_put AFTER INSERT ON ocpp_outbox WHEN NEW.state = 'pending'
        BEGIN UPDATE ocpp_outbox_count SET pending = pending + 1 WHERE id = 1; END
        """
    )
    conn.execute(
        """
        CREATE TRIGGER ocpp_outbox_count_done AFTER UPDATE OF state ON ocpp_outbox
        WHEN OLD.state = 'pending' AND NEW.state != 'pending'
        BEGIN UPDATE ocpp_outbox_count SET pending = pending - 1 WHERE id = 1; END
        """
    )
    conn.execute(
        """
        CREATE TABLE ocpp_outbox_tx (
            tx_ref TEXT PRIMARY KEY,
            start_seq INTEGER,
            transaction_id,  -- no declared type: an integer (1.6) stays an integer, a string (2.0.1) a string
            status TEXT NOT NULL CHECK (status IN ('waiting', 'bound', 'failed')),
            reason TEXT,
            updated_at REAL NOT NULL,
            CHECK ((status = 'bound') = (transaction_id IS NOT NULL))
        )
        """
    )
    conn.execute(
        """
        CREATE TRIGGER ocpp_outbox_tx_id_fixed BEFORE UPDATE OF transaction_id ON ocpp_outbox_tx
        WHEN OLD.transaction_id IS NOT NULL AND NEW.transaction_id IS NOT OLD.transaction_id
        BEGIN SELECT RAISE(ABORT, 'a bound transaction id never changes'); END
        """
    )


#: Forward migrations of the outbox tables, as in :data:`firmware.journal.MIGRATIONS`; never edit a released one.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _create_v1}

_COLUMNS = "seq, action, payload, transactional, attempts, created_at, tx_ref"


def _message_from_row(row: Sequence[Any]) -> QueuedMessage:
    return QueuedMessage(
        seq=row[0],
        action=row[1],
        payload=json.loads(row[2]),
        transactional=bool(row[3]),
        attempts=row[4],
        created_at=row[5],
        tx_ref=row[6],
    )


def _placeholder_ref(payload: dict[str, Any]) -> str | None:
    value = payload.get("transactionId")
    if isinstance(value, str) and value.startswith(PLACEHOLDER_PREFIX):
        return value[len(PLACEHOLDER_PREFIX) :]
    return None


def _dump(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class _Prepared:
    action: str
    payload: dict[str, Any]
    transactional: bool
    tx_ref: str | None
    placeholder: str | None


# --------------------------------------------------------------------------------------------- outbox
class Outbox(SqliteFile):
    """The persistent outbox on the journal's SQLite file (``None``: in memory). See the module docstring."""

    def __init__(
        self,
        path: str | Path | None,
        *,
        wall_clock: Callable[[], float] = time.time,
        max_messages: int = 10_000,
        keep_delivered: int = 1000,
        keep_dropped: int = 10_000,
    ) -> None:
        self._path: str | Path = _MEMORY if path is None else Path(path)
        self._wall_clock = wall_clock
        self._check_count("max_messages", max_messages, 1)
        self._check_count("keep_delivered", keep_delivered, 0)
        self._check_count("keep_dropped", keep_dropped, 0)
        self._max = max_messages
        self._keep_delivered = keep_delivered
        self._keep_dropped = keep_dropped
        self._conn: sqlite3.Connection | None = None
        if path is not None:
            # The file is the journal's: make sure it is one (and migrated) before adding our tables.
            Journal(path, wall_clock=wall_clock).close()
        with self._guard("cannot open"):
            conn = sqlite3.connect(str(self._path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            with self._guard("cannot open"):
                self._setup(conn, in_memory=path is None)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @property
    def path(self) -> str | Path:
        return self._path

    # ------------------------------------------------------------------------------------------- put
    def put(
        self, action: str, payload: dict[str, Any], *, transactional: bool = True, tx_ref: str | None = None
    ) -> QueuedMessage:
        """Queue one message; it is on the storage when this returns. A placeholder ``"$tx:<ref>"`` as the
        ``transactionId`` sets ``tx_ref`` (a different ``tx_ref`` is refused) and needs a StartTransaction put
        earlier with that ``tx_ref``; it is substituted at once when the ref is bound. When the ref's
        StartTransaction was dropped, the message is recorded as dropped at once (see :meth:`dropped`).
        Raises :class:`OutboxFull` (see the module docstring) and :class:`OutboxError` for a bad message."""
        return self.put_many([Outgoing(action, payload, transactional, tx_ref)])[0]

    def put_many(self, messages: Sequence[Outgoing]) -> list[QueuedMessage]:
        """Queue several messages in order in one transaction (one sync): all of them or, on an error, none."""
        prepared = [self._prepare(m) for m in messages]
        notes: list[str] = []
        result: list[QueuedMessage] = []
        with self._write("cannot queue a message") as conn:
            now = self._wall_clock()
            for item in prepared:
                result.append(self._insert(conn, item, now, notes))
        for note in notes:
            log.warning("%s", note)
        return result

    # ----------------------------------------------------------------------------------------- read
    def head(self) -> QueuedMessage | None:
        """The oldest pending message, or ``None``. Never one whose payload still has an unbound placeholder:
        such a head means its StartTransaction is no longer pending and nothing bound the id (delivered
        without a usable response, never through :meth:`delivered`); it is dropped with its dependants."""
        while True:
            with self._read("cannot read the outbox") as conn:
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM ocpp_outbox WHERE state = 'pending' ORDER BY seq LIMIT 1"
                ).fetchone()
            if row is None:
                return None
            message = _message_from_row(row)
            ref = message.placeholder_ref
            if ref is None:
                return message
            notes: list[str] = []
            reason = f"no transactionId was ever bound for tx_ref {ref!r}"
            with self._write("cannot drop an unsendable message") as conn:
                self._fail_ref(conn, ref, reason, notes)
                if self._row(conn, message.seq)[7] == "pending":  # a tx_ref edited by hand: drop it all the same
                    self._drop_row(conn, message, reason, notes)
            for note in notes:
                log.warning("%s", note)

    def pending(self, limit: int | None = None) -> list[QueuedMessage]:
        """Pending messages, oldest first, at most ``limit`` of them."""
        if limit is not None:
            self._check_count("limit", limit, 0)
        with self._read("cannot read the outbox") as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM ocpp_outbox WHERE state = 'pending' ORDER BY seq LIMIT ?",
                (-1 if limit is None else limit,),  # SQLite: a negative LIMIT means no limit
            ).fetchall()
        return [_message_from_row(row) for row in rows]

    def session_messages(self, tx_ref: str, action: str) -> list[QueuedMessage]:
        """Every kept message of one session with ``action`` (pending, delivered or dropped), oldest
        first: what a restarted station needs to continue the session where it left it (the 2.0.1
        seqNo). Delivered history is pruned oldest first, so the newest messages are always there."""
        with self._read("cannot read the outbox") as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM ocpp_outbox WHERE tx_ref = ? AND action = ? ORDER BY seq", (tx_ref, action)
            ).fetchall()
        return [_message_from_row(row) for row in rows]

    def __len__(self) -> int:
        """The number of pending messages."""
        with self._read("cannot read the outbox") as conn:
            return int(conn.execute("SELECT pending FROM ocpp_outbox_count WHERE id = 1").fetchone()[0])

    def state(self, seq: int) -> MessageState | None:
        """``"pending"``, ``"delivered"`` or ``"dropped"``; ``None`` for an unknown (or pruned) ``seq``."""
        self._check_seq(seq)
        with self._read("cannot read the outbox") as conn:
            row = conn.execute("SELECT state FROM ocpp_outbox WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            return None
        state: MessageState = row[0]
        return state

    def dropped(self) -> list[tuple[QueuedMessage, str]]:
        """Dropped messages kept for diagnosis, oldest first, with the reason each was dropped."""
        with self._read("cannot read the outbox") as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS}, drop_reason FROM ocpp_outbox WHERE state = 'dropped' ORDER BY seq"
            ).fetchall()
        return [(_message_from_row(row), row[7]) for row in rows]

    def transaction_id(self, tx_ref: str) -> int | str | None:
        """The transactionId bound to ``tx_ref``, or ``None``."""
        self._check_ref("tx_ref", tx_ref)
        with self._read("cannot read transaction ids") as conn:
            row = conn.execute("SELECT transaction_id FROM ocpp_outbox_tx WHERE tx_ref = ?", (tx_ref,)).fetchone()
        if row is None or row[0] is None:
            return None
        value: int | str = row[0]
        return value

    # --------------------------------------------------------------------------------------- outcome
    def delivered(self, seq: int, response: dict[str, Any] | None = None) -> None:
        """The CSMS answered message ``seq`` with the CALLRESULT payload ``response``. Idempotent for a
        delivered message; refused for a dropped one. For a StartTransaction with a ``tx_ref`` the response's
        ``transactionId`` is bound in the same transaction (a response without a usable one drops the
        dependants; ``None`` leaves the binding to :meth:`bind_transaction`)."""
        self._check_seq(seq)
        if response is not None and not isinstance(response, dict):
            raise OutboxError(self._path, f"message {seq}: response must be a dict or None, not {response!r}")
        # The response is the peer's; it is stored for diagnosis, so it must never make delivery fail.
        response_text = None if response is None else _response_text(response)
        notes: list[str] = []
        with self._write("cannot record a delivery") as conn:
            row = self._row(conn, seq)
            state, message = row[7], _message_from_row(row)
            if state == "delivered":
                return
            if state == "dropped":
                raise OutboxError(self._path, f"message {seq} ({message.action}) was dropped; it cannot be delivered")
            conn.execute(
                "UPDATE ocpp_outbox SET state = 'delivered', finished_at = ?, response = ? WHERE seq = ?",
                (self._wall_clock(), response_text, seq),
            )
            if message.action == START_TRANSACTION and message.tx_ref is not None and response is not None:
                tid = response.get("transactionId")
                if _valid_transaction_id(tid):
                    self._bind(conn, message.tx_ref, tid, notes)
                else:
                    self._fail_ref(
                        conn,
                        message.tx_ref,
                        f"StartTransaction.conf (seq {seq}) carried no usable transactionId ({tid!r})",
                        notes,
                    )
            self._prune(conn, "delivered", self._keep_delivered)
        for note in notes:
            log.warning("%s", note)

    def failed(self, seq: int, error: str) -> int:
        """Record a failed attempt of pending message ``seq`` (a CALLERROR or a timeout); returns the number
        of attempts so far. Dropping it after the last attempt is the caller's decision (:meth:`drop`)."""
        self._check_seq(seq)
        text = _clip(error)
        with self._write("cannot record a failed attempt") as conn:
            row = self._row(conn, seq)
            if row[7] != "pending":
                raise OutboxError(self._path, f"message {seq} is {row[7]}, not pending; it cannot fail")
            conn.execute("UPDATE ocpp_outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ?", (text, seq))
            return int(row[4]) + 1

    def drop(self, seq: int, reason: str) -> None:
        """Give up on pending message ``seq``: it is kept as dropped with ``reason`` and logged. A dropped
        StartTransaction whose id was never bound takes its pending dependants with it. Idempotent for a
        dropped message; refused for a delivered one."""
        self._check_seq(seq)
        if not isinstance(reason, str) or not reason:
            raise OutboxError(self._path, f"message {seq}: the drop reason must be a non-empty string, not {reason!r}")
        notes: list[str] = []
        with self._write("cannot drop a message") as conn:
            row = self._row(conn, seq)
            if row[7] == "dropped":
                return
            if row[7] == "delivered":
                raise OutboxError(self._path, f"message {seq} was delivered; it cannot be dropped")
            self._drop_row(conn, _message_from_row(row), reason, notes)
        for note in notes:
            log.warning("%s", note)

    def bind_transaction(self, tx_ref: str, transaction_id: int | str) -> int:
        """Bind ``tx_ref`` to the CSMS's ``transaction_id`` (persisted) and rewrite the pending payloads whose
        ``transactionId`` is ``"$tx:<tx_ref>"``, atomically; returns how many were rewritten. Binding the
        same id again is harmless; a different id for a bound ref is refused (billing would split)."""
        self._check_ref("tx_ref", tx_ref)
        if not _valid_transaction_id(transaction_id):
            raise OutboxError(
                self._path,
                f"tx_ref {tx_ref!r}: transaction_id must be an integer or a non-empty string (not a placeholder),"
                f" not {transaction_id!r}",
            )
        notes: list[str] = []
        with self._write("cannot bind a transaction id") as conn:
            count = self._bind(conn, tx_ref, transaction_id, notes, strict=True)
        for note in notes:
            log.warning("%s", note)
        return count

    # ------------------------------------------------------------------------------------ internals
    def _prepare(self, item: Outgoing) -> _Prepared:
        action = item.action
        if not (isinstance(action, str) and 0 < len(action) <= _MAX_NAME and action.isascii() and action.isalnum()):
            raise OutboxError(self._path, f"action must be an OCPP action name (letters and digits), not {action!r}")
        if not isinstance(item.payload, dict):
            raise OutboxError(self._path, f"{action}: payload must be a dict, not {type(item.payload).__name__}")
        try:
            text = _dump(item.payload)
        except (TypeError, ValueError) as exc:  # ValueError: NaN/inf or a circular reference
            raise OutboxError(self._path, f"{action}: payload is not JSON-serialisable: {exc}") from exc
        payload = json.loads(text)
        if payload != item.payload:
            raise OutboxError(
                self._path,
                f"{action}: payload changes in a JSON round trip (non-string keys or tuples?): {item.payload!r}",
            )
        if not isinstance(item.transactional, bool):
            raise OutboxError(self._path, f"{action}: transactional must be a bool, not {item.transactional!r}")
        if not item.transactional and (
            action in ALWAYS_TRANSACTIONAL or (action == "MeterValues" and "transactionId" in payload)
        ):
            raise OutboxError(
                self._path, f"{action}: a transaction-related message must be queued with transactional=True"
            )
        tx_ref = item.tx_ref
        if tx_ref is not None:
            self._check_ref(f"{action}: tx_ref", tx_ref)
        placeholder = _placeholder_ref(payload)
        if placeholder is not None:
            self._check_ref(f"{action}: the placeholder's tx_ref", placeholder)
            if tx_ref is None:
                tx_ref = placeholder
            elif tx_ref != placeholder:
                raise OutboxError(
                    self._path,
                    f"{action}: tx_ref {tx_ref!r} differs from the transactionId placeholder's {placeholder!r}",
                )
        return _Prepared(action, payload, item.transactional, tx_ref, placeholder)

    def _insert(self, conn: sqlite3.Connection, item: _Prepared, now: float, notes: list[str]) -> QueuedMessage:
        payload = item.payload
        drop_reason: str | None = None
        if item.placeholder is not None:
            ref_row = conn.execute(
                "SELECT transaction_id, status, reason FROM ocpp_outbox_tx WHERE tx_ref = ?", (item.placeholder,)
            ).fetchone()
            if ref_row is None:
                raise OutboxError(
                    self._path,
                    f"{item.action}: no StartTransaction with tx_ref {item.placeholder!r} was queued, so nothing can"
                    f" bind {PLACEHOLDER_PREFIX}{item.placeholder}",
                )
            if ref_row[1] == "bound":
                payload = {**payload, "transactionId": ref_row[0]}
            elif ref_row[1] == "failed":
                drop_reason = f"its transaction never got an id: {ref_row[2]}"
        if item.action == START_TRANSACTION and item.tx_ref is not None:
            if conn.execute("SELECT 1 FROM ocpp_outbox_tx WHERE tx_ref = ?", (item.tx_ref,)).fetchone():
                raise OutboxError(self._path, f"StartTransaction: tx_ref {item.tx_ref!r} was already started")
        if drop_reason is None:
            self._make_room(conn, item, notes)
        cursor = conn.execute(
            "INSERT INTO ocpp_outbox (action, payload, transactional, tx_ref, state, created_at, finished_at,"
            " drop_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                item.action,
                _dump(payload),
                int(item.transactional),
                item.tx_ref,
                "pending" if drop_reason is None else "dropped",
                now,
                None if drop_reason is None else now,
                drop_reason,
            ),
        )
        seq = cursor.lastrowid
        assert isinstance(seq, int)  # an INSERT into a rowid table always sets it
        if item.action == START_TRANSACTION and item.tx_ref is not None:
            conn.execute(
                "INSERT INTO ocpp_outbox_tx (tx_ref, start_seq, status, updated_at) VALUES (?, ?, 'waiting', ?)",
                (item.tx_ref, seq, now),
            )
        message = QueuedMessage(seq, item.action, payload, item.transactional, 0, now, item.tx_ref)
        if drop_reason is not None:
            notes.append(_drop_note(message, drop_reason))
            self._prune(conn, "dropped", self._keep_dropped)
        return message

    def _make_room(self, conn: sqlite3.Connection, item: _Prepared, notes: list[str]) -> None:
        pending = conn.execute("SELECT pending FROM ocpp_outbox_count WHERE id = 1").fetchone()[0]
        if pending < self._max:
            return
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM ocpp_outbox WHERE state = 'pending' AND transactional = 0 ORDER BY seq LIMIT 1"
        ).fetchone()
        if row is None:
            raise OutboxFull(
                self._path,
                f"{item.action}: {pending} messages are pending (max_messages={self._max}) and all are"
                " transactional; refusing rather than losing billing data",
            )
        self._drop_row(
            conn,
            _message_from_row(row),
            f"outbox full (max_messages={self._max}): oldest non-transactional message dropped for {item.action}",
            notes,
        )

    def _drop_row(self, conn: sqlite3.Connection, message: QueuedMessage, reason: str, notes: list[str]) -> None:
        reason = _clip(reason)
        conn.execute(
            "UPDATE ocpp_outbox SET state = 'dropped', drop_reason = ?, finished_at = ? WHERE seq = ?",
            (reason, self._wall_clock(), message.seq),
        )
        notes.append(_drop_note(message, reason))
        if message.action == START_TRANSACTION and message.tx_ref is not None:
            row = conn.execute(
                "SELECT status, start_seq FROM ocpp_outbox_tx WHERE tx_ref = ?", (message.tx_ref,)
            ).fetchone()
            if row is not None and row[0] == "waiting" and row[1] == message.seq:
                self._fail_ref(
                    conn, message.tx_ref, f"its StartTransaction (seq {message.seq}) was dropped: {reason}", notes
                )
        self._prune(conn, "dropped", self._keep_dropped)

    def _fail_ref(self, conn: sqlite3.Connection, tx_ref: str, reason: str, notes: list[str]) -> None:
        """Mark ``tx_ref`` as never getting an id and drop its pending placeholder dependants."""
        conn.execute(
            "INSERT INTO ocpp_outbox_tx (tx_ref, status, reason, updated_at) VALUES (?, 'failed', ?, ?)"
            " ON CONFLICT (tx_ref) DO UPDATE SET status = 'failed', reason = excluded.reason,"
            " updated_at = excluded.updated_at WHERE status != 'bound'",
            (tx_ref, _clip(reason), self._wall_clock()),
        )
        placeholder = PLACEHOLDER_PREFIX + tx_ref
        for row in conn.execute(
            f"SELECT {_COLUMNS} FROM ocpp_outbox WHERE state = 'pending' AND tx_ref = ? ORDER BY seq", (tx_ref,)
        ).fetchall():
            dependant = _message_from_row(row)
            if dependant.payload.get("transactionId") == placeholder:
                self._drop_row(conn, dependant, f"depends on tx_ref {tx_ref!r}: {reason}", notes)

    def _bind(
        self,
        conn: sqlite3.Connection,
        tx_ref: str,
        transaction_id: int | str,
        notes: list[str],
        *,
        strict: bool = False,
    ) -> int:
        row = conn.execute("SELECT transaction_id FROM ocpp_outbox_tx WHERE tx_ref = ?", (tx_ref,)).fetchone()
        if row is not None and row[0] is not None and row[0] != transaction_id:
            message = (
                f"tx_ref {tx_ref!r} is bound to transactionId {row[0]!r}; refusing to rebind it to {transaction_id!r}"
            )
            if strict:
                raise OutboxError(self._path, message)
            notes.append(message)  # from delivered(): the delivery itself must still be recorded
            return 0
        conn.execute(
            "INSERT INTO ocpp_outbox_tx (tx_ref, transaction_id, status, updated_at) VALUES (?, ?, 'bound', ?)"
            " ON CONFLICT (tx_ref) DO UPDATE SET transaction_id = excluded.transaction_id, status = 'bound',"
            " reason = NULL, updated_at = excluded.updated_at",
            (tx_ref, transaction_id, self._wall_clock()),
        )
        placeholder = PLACEHOLDER_PREFIX + tx_ref
        count = 0
        for seq, text in conn.execute(
            "SELECT seq, payload FROM ocpp_outbox WHERE state = 'pending' AND tx_ref = ? ORDER BY seq", (tx_ref,)
        ).fetchall():
            payload = json.loads(text)
            if payload.get("transactionId") == placeholder:
                payload["transactionId"] = transaction_id
                conn.execute("UPDATE ocpp_outbox SET payload = ? WHERE seq = ?", (_dump(payload), seq))
                count += 1
        return count

    def _prune(self, conn: sqlite3.Connection, state: str, keep: int) -> None:
        # Bounded history (module docstring, "Guarantees"); a NULL bound (fewer rows than ``keep``) deletes nothing.
        conn.execute(
            "DELETE FROM ocpp_outbox WHERE state = ? AND seq <= (SELECT seq FROM ocpp_outbox WHERE state = ?"
            " ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            (state, state, keep),
        )

    def _row(self, conn: sqlite3.Connection, seq: int) -> Sequence[Any]:
        row = conn.execute(f"SELECT {_COLUMNS}, state FROM ocpp_outbox WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise OutboxError(self._path, f"no message {seq} (unknown, or pruned from the history)")
        return tuple(row)

    def _setup(self, conn: sqlite3.Connection, *, in_memory: bool) -> None:
        if not in_memory:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(self._path, f"cannot use WAL mode (SQLite kept journal_mode={mode})")
            conn.execute("PRAGMA synchronous=FULL")  # why FULL: firmware.journal, "Durability"
        conn.execute("BEGIN IMMEDIATE")  # a second opener waits, then sees our version
        try:
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ocpp_outbox_schema'"
            ).fetchone()
            if exists is None:
                conn.execute("CREATE TABLE ocpp_outbox_schema (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
                version = 0
            else:
                found = conn.execute("SELECT MAX(version) FROM ocpp_outbox_schema").fetchone()[0]
                if not isinstance(found, int) or found < 1:
                    raise OutboxError(self._path, f"ocpp_outbox_schema holds no valid version ({found!r})")
                version = found
            if version > OUTBOX_SCHEMA_VERSION:
                raise OutboxError(
                    self._path,
                    f"outbox schema version {version} was written by a newer firmware; this one knows up to "
                    f"{OUTBOX_SCHEMA_VERSION} and does not downgrade",
                )
            for target in range(version + 1, OUTBOX_SCHEMA_VERSION + 1):
                MIGRATIONS[target](conn)
                conn.execute(
                    "INSERT INTO ocpp_outbox_schema (version, applied_at) VALUES (?, ?)", (target, self._wall_clock())
                )
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise OutboxError(self._path, f"{action}: {exc}") from exc
        except (TypeError, ValueError) as exc:  # a stored payload that is not JSON (edited by hand)
            raise OutboxError(self._path, f"{action}: unreadable stored data: {exc}") from exc

    def _closed_error(self) -> Exception:
        return OutboxError(self._path, "the outbox is closed")

    def _check_seq(self, seq: int) -> None:
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise OutboxError(self._path, f"seq must be an integer >= 1, not {seq!r}")

    def _check_count(self, name: str, value: int, low: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise OutboxError(self._path, f"{name} must be an integer >= {low}, not {value!r}")

    def _check_ref(self, name: str, value: str) -> None:
        if not isinstance(value, str) or not 0 < len(value) <= _MAX_NAME:
            raise OutboxError(
                self._path, f"{name} must be a non-empty string of at most {_MAX_NAME} characters, not {value!r}"
            )


def _valid_transaction_id(value: object) -> TypeGuard[int | str]:
    # 1.6: an integer (StartTransaction.conf transactionId); 2.0.1: a string of up to 36 characters.
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and 0 < len(value) <= _MAX_NAME and not value.startswith(PLACEHOLDER_PREFIX)


def _response_text(response: dict[str, Any]) -> str:
    try:
        return json.dumps(response, default=repr, separators=(",", ":"))
    except ValueError:  # a circular structure: keep what can be shown
        return _clip(repr(response))


def _clip(text: object) -> str:
    value = text if isinstance(text, str) else repr(text)
    return value if len(value) <= _MAX_ERROR_TEXT else value[: _MAX_ERROR_TEXT - 3] + "..."


def _drop_note(message: QueuedMessage, reason: str) -> str:
    ref = f", tx_ref {message.tx_ref}" if message.tx_ref else ""
    return f"OCPP outbox: dropped {message.action} seq {message.seq}{ref} after {message.attempts} attempt(s): {reason}"


# --------------------------------------------------------------------------------------------- sender
class OutboxSender:
    """Drains an :class:`Outbox` in order while the link is up.

    ``send`` puts one message on the wire and returns the CALLRESULT payload, or raises
    :class:`OutboxCallError` (a CALLERROR: an attempt), ``TimeoutError`` (no answer: an attempt) or
    ``ConnectionError`` (the link is gone: not an attempt; the sender waits for :meth:`link_up`). Any other
    exception from ``send`` is logged and counted as an attempt, so that a message that can never be sent
    ends dropped instead of blocking the queue for ever. ``attempts`` and ``retry_interval_s`` are read at
    every decision, so a ChangeConfiguration / SetVariables takes effect at once; a value out of range falls
    back to 1 attempt at least, 0 s at least, and a non-number to the defaults (with an error in the log).
    After the k-th failed attempt the sender waits ``retry_interval_s() * k`` (``backoff="linear"``, OCPP 1.6
    and E13) or ``retry_interval_s()`` (``"constant"``) on the injected clock. Storage failures are logged and
    retried after ``storage_retry_s``; :meth:`run` only ends when it is cancelled.
    """

    def __init__(
        self,
        outbox: Outbox,
        send: Callable[[QueuedMessage], Awaitable[dict[str, Any]]],
        *,
        clock: Clock,
        attempts: Callable[[], int],
        retry_interval_s: Callable[[], float],
        backoff: Literal["linear", "constant"] = "linear",
        non_transactional_attempts: int = 1,
        storage_retry_s: float = 5.0,
    ) -> None:
        if backoff not in ("linear", "constant"):
            raise ValueError(f"backoff must be 'linear' or 'constant', not {backoff!r}")
        if isinstance(non_transactional_attempts, bool) or not isinstance(non_transactional_attempts, int):
            raise ValueError(f"non_transactional_attempts must be an integer, not {non_transactional_attempts!r}")
        if non_transactional_attempts < 1:
            raise ValueError(f"non_transactional_attempts must be >= 1, not {non_transactional_attempts}")
        if not (isinstance(storage_retry_s, int | float) and math.isfinite(storage_retry_s) and storage_retry_s > 0):
            raise ValueError(f"storage_retry_s must be a finite number > 0, not {storage_retry_s!r}")
        self._outbox = outbox
        self._send = send
        self._clock = clock
        self._attempts = attempts
        self._retry_interval_s = retry_interval_s
        self._backoff = backoff
        self._non_tx_attempts = non_transactional_attempts
        self._storage_retry_s = float(storage_retry_s)
        self._up = False
        self._epoch = 0  # bumped by link_up: tells a ConnectionError of the old link from the new one
        self._changed = asyncio.Event()
        self.on_delivered: Callable[[QueuedMessage, dict[str, Any]], None] | None = None

    @property
    def is_up(self) -> bool:
        return self._up

    def link_up(self) -> None:
        """The link to the CSMS is up (and registered): start or resume draining."""
        self._up = True
        self._epoch += 1
        self._changed.set()

    def link_down(self) -> None:
        """The link is down: stop after the message in flight; nothing waiting for the link is an attempt."""
        self._up = False
        self._changed.set()

    def wake(self) -> None:
        """A message was put: send it if the sender is idle."""
        self._changed.set()

    async def run(self) -> None:
        """Drain the outbox in order until cancelled."""
        while True:
            self._changed.clear()  # before the checks, so a wake() during them is not lost
            if not self._up:
                await self._changed.wait()
                continue
            try:
                message = self._outbox.head()
            except JournalError as exc:
                log.error("OCPP outbox: cannot read the next message: %s", exc)
                await self._clock.sleep(self._storage_retry_s)
                continue
            if message is None:
                await self._changed.wait()
                continue
            await self._attempt(message)

    async def _attempt(self, message: QueuedMessage) -> None:
        limit = self._limit(message)
        if message.attempts >= limit:  # e.g. a crash between the last failed() and drop()
            self._give_up(message, f"{message.attempts} attempt(s) already made (limit {limit})")
            return
        epoch = self._epoch
        try:
            response = await self._send(message)
        except OutboxCallError as exc:
            await self._failed(message, str(exc), limit)
        except TimeoutError:  # asyncio.TimeoutError is the same class since Python 3.11
            await self._failed(message, "no response before the message timeout", limit)
        except ConnectionError as exc:
            # Not an attempt: the message waits for the link (OCPP 1.6 offline queueing, E13 counts answers).
            log.info("OCPP outbox: %s seq %d not sent, link lost: %s", message.action, message.seq, exc)
            if self._epoch == epoch:
                self._up = False
        except Exception as exc:
            log.exception("OCPP outbox: sending %s seq %d failed", message.action, message.seq)
            await self._failed(message, f"send raised {exc!r}", limit)
        else:
            if not isinstance(response, dict):
                await self._failed(message, f"send returned {type(response).__name__}, not a payload", limit)
                return
            try:
                self._outbox.delivered(message.seq, response)
            except JournalError as exc:
                log.error("OCPP outbox: cannot record the delivery of seq %d: %s", message.seq, exc)
                await self._clock.sleep(self._storage_retry_s)
                return
            callback = self.on_delivered
            if callback is not None:
                try:
                    callback(message, response)
                except Exception:
                    log.exception("OCPP outbox: on_delivered failed for %s seq %d", message.action, message.seq)

    async def _failed(self, message: QueuedMessage, error: str, limit: int) -> None:
        try:
            attempts = self._outbox.failed(message.seq, error)
        except JournalError as exc:
            log.error("OCPP outbox: cannot record a failed attempt of seq %d: %s", message.seq, exc)
            await self._clock.sleep(self._storage_retry_s)
            return
        if attempts >= limit:
            self._give_up(message, f"gave up after {attempts} attempt(s); last error: {error}")
            return
        interval = self._interval()
        await self._clock.sleep(interval * attempts if self._backoff == "linear" else interval)

    def _give_up(self, message: QueuedMessage, reason: str) -> None:
        try:
            self._outbox.drop(message.seq, reason)  # logs the drop
        except JournalError as exc:
            log.error("OCPP outbox: cannot drop seq %d: %s", message.seq, exc)

    def _limit(self, message: QueuedMessage) -> int:
        if not message.transactional:
            return self._non_tx_attempts
        try:
            value = self._attempts()
        except Exception:
            log.exception("OCPP outbox: reading the attempts setting failed; using %d", DEFAULT_ATTEMPTS)
            return DEFAULT_ATTEMPTS
        if isinstance(value, bool) or not isinstance(value, int):
            log.error("OCPP outbox: attempts setting %r is not an integer; using %d", value, DEFAULT_ATTEMPTS)
            return DEFAULT_ATTEMPTS
        return max(1, value)  # at least the first attempt is always made

    def _interval(self) -> float:
        try:
            value = self._retry_interval_s()
        except Exception:
            log.exception("OCPP outbox: reading the retry interval failed; using %g s", DEFAULT_RETRY_INTERVAL_S)
            return DEFAULT_RETRY_INTERVAL_S
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            log.error("OCPP outbox: retry interval %r is not a number; using %g s", value, DEFAULT_RETRY_INTERVAL_S)
            return DEFAULT_RETRY_INTERVAL_S
        return max(0.0, float(value))
