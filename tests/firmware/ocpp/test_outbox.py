"""Tests of the persistent OCPP outbox and its sender (firmware/ocpp/outbox.py): order and persistence across
reopen and a SIGKILL, retry timing on the virtual clock, link loss that costs no attempt, dropping (with the
dependants of a dropped StartTransaction), 1.6 transactionId placeholders, the full-outbox policy, bad input,
a 10,000-message run and a hypothesis property over random interleavings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.journal import Journal, JournalError
from firmware.ocpp.outbox import (
    Outbox,
    OutboxCallError,
    OutboxError,
    OutboxFull,
    OutboxSender,
    Outgoing,
    QueuedMessage,
)
from hal.clock import VirtualClock

from .outbox_crash_child import KEEP_ALL

T0 = 1_750_000_000.0  # 2025-06-15, a plausible wall-clock time
ROOT = Path(__file__).resolve().parents[3]


class FakeWallClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "station.db"


@pytest.fixture
def outbox(db: Path) -> Iterator[Outbox]:
    box = Outbox(db, wall_clock=FakeWallClock())
    yield box
    box.close()


def _mv(n: int, tx: int | str = 7) -> dict[str, Any]:
    return {"connectorId": 1, "transactionId": tx, "meterValue": [{"timestamp": f"t{n}", "sampledValue": []}]}


# ------------------------------------------------------------------------------------------- the sender rig
class FakeCsms:
    """The ``send`` callable: records (seq, virtual time) of every call and plays scripted outcomes in order
    (a dict is the CALLRESULT, an exception is raised); once the script is used up every call succeeds."""

    def __init__(self, clock: VirtualClock, script: list[object] | None = None) -> None:
        self.clock = clock
        self.script = list(script or [])
        self.calls: list[tuple[int, float]] = []
        self.payloads: list[dict[str, Any]] = []

    async def __call__(self, message: QueuedMessage) -> dict[str, Any]:
        self.calls.append((message.seq, self.clock.monotonic()))
        self.payloads.append(message.payload)
        outcome = self.script.pop(0) if self.script else {}
        if isinstance(outcome, BaseException):
            raise outcome
        assert isinstance(outcome, dict)
        return outcome


def _sender(
    outbox: Outbox,
    csms: FakeCsms,
    *,
    attempts: int = 3,
    interval: float = 10.0,
    backoff: Literal["linear", "constant"] = "linear",
) -> OutboxSender:
    return OutboxSender(
        outbox, csms, clock=csms.clock, attempts=lambda: attempts, retry_interval_s=lambda: interval, backoff=backoff
    )


@contextlib.asynccontextmanager
async def running(sender: OutboxSender) -> AsyncIterator[asyncio.Task[None]]:
    """Run the sender as a task; cancelling it at the end re-raises anything it died of."""
    task = asyncio.create_task(sender.run())
    await asyncio.sleep(0)
    try:
        yield task
    finally:
        assert not task.done(), "the sender ended on its own"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ------------------------------------------------------------------------------------------ persistence
def test_put_head_pending_and_order_survive_reopen(db: Path) -> None:
    wall = FakeWallClock()
    box = Outbox(db, wall_clock=wall)
    first = box.put(
        "StartTransaction", {"connectorId": 1, "idTag": "A", "meterStart": 0, "timestamp": "t"}, tx_ref="s1"
    )
    assert (first.seq, first.action, first.attempts, first.created_at, first.tx_ref) == (
        1,
        "StartTransaction",
        0,
        T0,
        "s1",
    )
    seqs = [first.seq] + [box.put("MeterValues", _mv(i)).seq for i in range(5)]
    box.put("StatusNotification", {"connectorId": 1, "status": "Charging"}, transactional=False)
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    box.delivered(seqs[0], {"transactionId": 7})
    box.close()

    box = Outbox(db, wall_clock=wall)
    pending = box.pending()
    assert [m.seq for m in pending] == [*seqs[1:], seqs[-1] + 1]
    assert [m.payload for m in pending[:5]] == [_mv(i) for i in range(5)]
    assert pending[-1].transactional is False and pending[0].transactional is True
    assert box.head() == pending[0]
    assert len(box) == 6 and [m.seq for m in box.pending(limit=2)] == seqs[1:3]
    assert box.state(seqs[0]) == "delivered" and box.state(seqs[1]) == "pending" and box.state(999) is None
    assert box.transaction_id("s1") == 7
    # A new message after the reopen still goes to the end.
    assert box.put("MeterValues", _mv(9)).seq > pending[-1].seq
    box.close()


def test_the_payload_returned_is_a_copy(outbox: Outbox) -> None:
    payload = _mv(1)
    message = outbox.put("MeterValues", payload)
    payload["connectorId"] = 2
    message.payload["connectorId"] = 3
    head = outbox.head()
    assert head is not None and head.payload == _mv(1)


def test_outbox_and_journal_share_one_file_in_either_order(tmp_path: Path) -> None:
    for first in ("outbox", "journal"):
        db = tmp_path / f"{first}-first.db"
        if first == "journal":
            Journal(db).close()
        box = Outbox(db)
        box.put("MeterValues", _mv(1))
        with Journal(db) as journal:  # the file is still a valid journal
            session = journal.start_session(1, id_tag="A", meter_start_wh=0.0)
            box.put("MeterValues", _mv(2))
            journal.update_session(session.session_id, meter_wh=10.0)
        box.close()
        with Outbox(db) as again, Journal(db) as journal:
            assert [m.payload for m in again.pending()] == [_mv(1), _mv(2)]
            assert journal.open_session(1) is not None


def test_in_memory_outbox_works_and_forgets() -> None:
    box = Outbox(None)
    box.put("MeterValues", _mv(1))
    assert len(box) == 1 and str(box.path) == ":memory:"
    box.close()
    assert len(Outbox(None)) == 0


def test_a_newer_outbox_schema_is_refused(db: Path) -> None:
    Outbox(db).close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("INSERT INTO ocpp_outbox_schema (version, applied_at) VALUES (2, 0)")
    conn.close()
    with pytest.raises(OutboxError, match="newer firmware"):
        Outbox(db)


def test_delivered_and_dropped_rows_are_final_in_sql(db: Path, outbox: Outbox) -> None:
    seq = outbox.put("MeterValues", _mv(1)).seq
    outbox.delivered(seq, {})
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="never change"):
            conn.execute("UPDATE ocpp_outbox SET state = 'pending', finished_at = NULL WHERE seq = ?", (seq,))
        pending = outbox.put("MeterValues", _mv(2)).seq
        with pytest.raises(sqlite3.IntegrityError, match="never deleted"):
            conn.execute("DELETE FROM ocpp_outbox WHERE seq = ?", (pending,))
    finally:
        conn.close()


def test_history_is_bounded_and_seq_is_never_reused(db: Path) -> None:
    box = Outbox(db, keep_delivered=2, keep_dropped=1)
    seqs = [box.put("MeterValues", _mv(i)).seq for i in range(7)]
    for seq in seqs[:5]:
        box.delivered(seq, {})
    assert [box.state(s) for s in seqs[:5]] == [None, None, None, "delivered", "delivered"]
    box.drop(seqs[5], "first")
    box.drop(seqs[6], "second")
    assert [(m.seq, reason) for m, reason in box.dropped()] == [(seqs[6], "second")]
    box.close()
    with Outbox(db) as again:
        assert again.put("MeterValues", _mv(8)).seq == seqs[-1] + 1  # AUTOINCREMENT: not reused after pruning


# ------------------------------------------------------------------------------------------ outcomes
def test_outcomes_of_messages(outbox: Outbox, caplog: pytest.LogCaptureFixture) -> None:
    a, b, c = (outbox.put("MeterValues", _mv(i)).seq for i in range(3))
    assert outbox.failed(a, "CALLERROR InternalError") == 1
    assert outbox.failed(a, "timeout") == 2
    head = outbox.head()
    assert head is not None and (head.seq, head.attempts) == (a, 2)
    outbox.delivered(a, {"status": "ok"})
    outbox.delivered(a, {"status": "ok"})  # idempotent
    with caplog.at_level(logging.WARNING, logger="firmware.ocpp.outbox"):
        outbox.drop(b, "an engineer said so")
    outbox.drop(b, "again")  # idempotent: the first reason stays
    assert any(
        "dropped MeterValues seq 2" in r.getMessage() and "an engineer" in r.getMessage() for r in caplog.records
    )
    dropped = outbox.dropped()
    assert [(m.seq, reason) for m, reason in dropped] == [(b, "an engineer said so")]
    assert [m.seq for m in outbox.pending()] == [c]
    assert len(outbox) == 1


def _deliver_after_drop(box: Outbox, delivered: int, pending: int) -> None:
    box.drop(pending, "gone")
    box.delivered(pending, {})


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda box, d, p: box.delivered(999, {}), "no message 999"),
        (lambda box, d, p: box.failed(d, "x"), "delivered, not pending"),
        (lambda box, d, p: box.drop(d, "x"), "was delivered"),
        (_deliver_after_drop, "was dropped"),
        (lambda box, d, p: box.delivered(0), "seq must be an integer"),
        (lambda box, d, p: box.delivered(p, "yes"), "response must be a dict"),
        (lambda box, d, p: box.drop(p, ""), "reason must be a non-empty string"),
        (lambda box, d, p: box.pending(limit=-1), "limit must be an integer"),
        (lambda box, d, p: box.transaction_id(""), "tx_ref must be"),
    ],
)
def test_refused_calls_name_the_file(db: Path, outbox: Outbox, call: Any, match: str) -> None:
    delivered = outbox.put("MeterValues", _mv(1)).seq
    outbox.delivered(delivered, {})
    pending = outbox.put("MeterValues", _mv(2)).seq
    with pytest.raises(OutboxError, match=match) as info:
        call(outbox, delivered, pending)
    assert isinstance(info.value, JournalError) and info.value.path == db and str(db) in str(info.value)


def test_a_closed_outbox_refuses_calls(outbox: Outbox) -> None:
    outbox.close()
    outbox.close()
    with pytest.raises(OutboxError, match="closed"):
        outbox.put("MeterValues", _mv(1))
    with pytest.raises(OutboxError, match="closed"):
        outbox.head()


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("action", "payload", "kwargs", "match"),
    [
        ("MeterValues", {"v": object()}, {}, "not JSON-serialisable"),
        ("MeterValues", {"v": float("nan")}, {}, "not JSON-serialisable"),
        ("MeterValues", {"v": float("inf")}, {}, "not JSON-serialisable"),
        ("MeterValues", {1: "a"}, {}, "round trip"),
        ("MeterValues", {"v": (1, 2)}, {}, "round trip"),
        ("MeterValues", ["a"], {}, "payload must be a dict"),
        ("", {}, {}, "action must be"),
        ("Start Transaction", {}, {}, "action must be"),
        (5, {}, {}, "action must be"),
        ("StopTransaction", {"transactionId": 1}, {"transactional": False}, "transaction-related"),
        ("TransactionEvent", {"eventType": "Started"}, {"transactional": False}, "transaction-related"),
        ("MeterValues", {"transactionId": 1}, {"transactional": False}, "transaction-related"),
        ("MeterValues", {}, {"transactional": "yes"}, "transactional must be a bool"),
        ("MeterValues", {}, {"tx_ref": ""}, "tx_ref must be"),
        ("MeterValues", {"transactionId": "$tx:"}, {}, "placeholder's tx_ref must be"),
        ("MeterValues", {"transactionId": "$tx:nobody"}, {}, "no StartTransaction with tx_ref 'nobody'"),
    ],
)
def test_bad_messages_are_refused_clearly(outbox: Outbox, action: Any, payload: Any, kwargs: Any, match: str) -> None:
    with pytest.raises(OutboxError, match=match):
        outbox.put(action, payload, **kwargs)
    assert len(outbox) == 0 and outbox.pending() == []


def test_put_many_is_all_or_nothing(outbox: Outbox) -> None:
    with pytest.raises(OutboxError, match="not JSON-serialisable"):
        outbox.put_many([Outgoing("MeterValues", _mv(1)), Outgoing("MeterValues", {"v": {1, 2}})])
    assert len(outbox) == 0
    messages = outbox.put_many([Outgoing("MeterValues", _mv(i)) for i in range(3)])
    assert [m.seq for m in outbox.pending()] == [m.seq for m in messages]


# ------------------------------------------------------------------------------------ placeholders (1.6)
def _start(box: Outbox, ref: str) -> QueuedMessage:
    return box.put("StartTransaction", {"connectorId": 1, "idTag": "A", "meterStart": 0}, tx_ref=ref)


def test_bind_after_put_rewrites_pending_payloads_and_persists(db: Path, outbox: Outbox) -> None:
    start = _start(outbox, "s1")
    mv = outbox.put("MeterValues", _mv(1, "$tx:s1"))
    other = outbox.put("MeterValues", _mv(2, 99))
    stop = outbox.put("StopTransaction", {"transactionId": "$tx:s1", "meterStop": 10}, tx_ref="s1")
    assert mv.tx_ref == "s1" and mv.payload["transactionId"] == "$tx:s1"
    assert outbox.transaction_id("s1") is None
    outbox.delivered(start.seq)  # no response: binding is left to bind_transaction
    assert outbox.bind_transaction("s1", 42) == 2
    assert outbox.bind_transaction("s1", 42) == 0  # the same id again: harmless
    with pytest.raises(OutboxError, match="refusing to rebind"):
        outbox.bind_transaction("s1", 43)
    outbox.close()
    with Outbox(db) as again:
        assert [m.payload["transactionId"] for m in again.pending()] == [42, 99, 42]
        assert [m.seq for m in again.pending()] == [mv.seq, other.seq, stop.seq]
        assert again.transaction_id("s1") == 42


def test_bind_before_put_substitutes_at_once_and_keeps_the_id_type(db: Path, outbox: Outbox) -> None:
    _start(outbox, "s1")
    _start(outbox, "s2")
    outbox.bind_transaction("s1", 5)
    outbox.bind_transaction("s2", "a1b2-c3")  # a 2.0.1-style string id stays a string
    assert outbox.put("MeterValues", _mv(1, "$tx:s1")).payload["transactionId"] == 5
    assert outbox.put("MeterValues", _mv(1, "$tx:s2")).payload["transactionId"] == "a1b2-c3"
    outbox.close()
    with Outbox(db) as again:
        assert again.transaction_id("s1") == 5 and again.transaction_id("s2") == "a1b2-c3"


@pytest.mark.parametrize("bad", [True, None, "", "$tx:s1", 1.5])
def test_bind_refuses_a_bad_transaction_id(outbox: Outbox, bad: Any) -> None:
    _start(outbox, "s1")
    with pytest.raises(OutboxError, match="transaction_id must be"):
        outbox.bind_transaction("s1", bad)
    assert outbox.transaction_id("s1") is None


def test_placeholder_rules(outbox: Outbox) -> None:
    _start(outbox, "s1")
    with pytest.raises(OutboxError, match="differs from the transactionId placeholder"):
        outbox.put("MeterValues", _mv(1, "$tx:s1"), tx_ref="s2")
    with pytest.raises(OutboxError, match="already started"):
        _start(outbox, "s1")


def test_delivering_the_start_binds_in_the_same_transaction(outbox: Outbox) -> None:
    start = _start(outbox, "s1")
    outbox.put("MeterValues", _mv(1, "$tx:s1"))
    outbox.delivered(start.seq, {"transactionId": 314, "idTagInfo": {"status": "Accepted"}})
    head = outbox.head()
    assert head is not None and head.payload["transactionId"] == 314
    assert outbox.transaction_id("s1") == 314


@pytest.mark.parametrize("response", [None, {"idTagInfo": {"status": "Accepted"}}, {"transactionId": "$tx:s1"}])
def test_head_never_returns_an_unbound_placeholder(outbox: Outbox, response: dict[str, Any] | None) -> None:
    """The StartTransaction is delivered but no id gets bound: its dependants can never be sent, so they are
    dropped with a reason instead of reaching the wire with "$tx:..." in them; other messages carry on."""
    start = _start(outbox, "s1")
    mv = outbox.put("MeterValues", _mv(1, "$tx:s1"))
    stop = outbox.put("StopTransaction", {"transactionId": "$tx:s1", "meterStop": 3})
    status = outbox.put("StatusNotification", {"connectorId": 1, "status": "Available"}, transactional=False)
    outbox.delivered(start.seq, response)
    head = outbox.head()
    assert head is not None and head.seq == status.seq
    dropped = {m.seq: reason for m, reason in outbox.dropped()}
    assert set(dropped) == {mv.seq, stop.seq}
    assert all("tx_ref 's1'" in reason for reason in dropped.values())


def test_a_placeholder_put_after_its_start_was_dropped_is_recorded_as_dropped(outbox: Outbox) -> None:
    start = _start(outbox, "s1")
    outbox.drop(start.seq, "refused")
    late = outbox.put("StopTransaction", {"transactionId": "$tx:s1", "meterStop": 3})
    assert outbox.state(late.seq) == "dropped" and len(outbox) == 0
    assert "never got an id" in outbox.dropped()[-1][1]


# ------------------------------------------------------------------------------------------ full outbox
def test_full_outbox_drops_the_oldest_non_transactional_first_then_refuses(
    outbox: Outbox, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox.close()
    box = Outbox(db, max_messages=3)
    a = box.put("MeterValues", _mv(1))
    s1 = box.put("StatusNotification", {"connectorId": 1, "status": "Charging"}, transactional=False)
    b = box.put("MeterValues", _mv(2))
    with caplog.at_level(logging.WARNING, logger="firmware.ocpp.outbox"):
        c = box.put("StopTransaction", {"transactionId": 7, "meterStop": 10})
    assert [m.seq for m in box.pending()] == [a.seq, b.seq, c.seq]
    assert box.dropped()[0][0].seq == s1.seq and "outbox full" in box.dropped()[0][1]
    assert any("outbox full" in r.getMessage() for r in caplog.records)
    status = {"connectorId": 1, "status": "Available"}
    with pytest.raises(OutboxFull, match="all are transactional"):  # nothing non-transactional left to give way
        box.put("MeterValues", _mv(3))
    with pytest.raises(OutboxFull, match="all are transactional"):  # not even for a non-transactional one
        box.put("StatusNotification", status, transactional=False)
    assert [m.seq for m in box.pending()] == [a.seq, b.seq, c.seq]
    box.delivered(a.seq, {})
    assert box.put("MeterValues", _mv(4)).seq > c.seq
    box.close()


# ------------------------------------------------------------------------------------------ the sender
def test_retry_waits_attempt_times_interval_then_drops(outbox: Outbox, caplog: pytest.LogCaptureFixture) -> None:
    """Attempt k+1 comes k × interval after attempt k (OCPP 1.6 TransactionMessageRetryInterval, E13);
    after the last attempt the message is dropped and the next one goes at once."""

    async def main() -> None:
        clock = VirtualClock()
        csms = FakeCsms(clock, [OutboxCallError("InternalError", "busy")] * 4)
        a = outbox.put("MeterValues", _mv(1))
        b = outbox.put("MeterValues", _mv(2))
        sender = _sender(outbox, csms, attempts=4, interval=10.0)
        async with running(sender):
            sender.link_up()
            await clock.advance(59.0)
            assert csms.calls == [(a.seq, 0.0), (a.seq, 10.0), (a.seq, 30.0)]
            await clock.advance(1.0)
            assert csms.calls[3:] == [(a.seq, 60.0), (b.seq, 60.0)]
        (dropped, reason), *_ = outbox.dropped()
        assert dropped.seq == a.seq and "gave up after 4 attempt(s)" in reason and "InternalError" in reason
        assert outbox.state(b.seq) == "delivered"

    with caplog.at_level(logging.WARNING, logger="firmware.ocpp.outbox"):
        asyncio.run(main())
    assert any("dropped MeterValues seq 1" in r.getMessage() for r in caplog.records)


def test_constant_backoff_and_a_timeout_counts_as_an_attempt(outbox: Outbox) -> None:
    async def main() -> None:
        clock = VirtualClock()
        csms = FakeCsms(
            clock, [TimeoutError(), TimeoutError(), OutboxCallError("GenericError")]
        )  # asyncio.TimeoutError is TimeoutError (3.11)
        a = outbox.put("MeterValues", _mv(1))
        sender = _sender(outbox, csms, attempts=5, interval=7.0, backoff="constant")
        async with running(sender):
            sender.link_up()
            await clock.advance(100.0)
        assert csms.calls == [(a.seq, 0.0), (a.seq, 7.0), (a.seq, 14.0), (a.seq, 21.0)]
        assert outbox.state(a.seq) == "delivered"

    asyncio.run(main())


def test_a_down_link_costs_no_attempt(outbox: Outbox) -> None:
    async def main() -> None:
        clock = VirtualClock()
        csms = FakeCsms(clock, [OutboxCallError("InternalError"), ConnectionError("gone")])
        a = outbox.put("MeterValues", _mv(1))
        sender = _sender(outbox, csms, attempts=2, interval=10.0)
        async with running(sender):
            await clock.advance(1000.0)  # never up: nothing sent, nothing counted
            assert csms.calls == [] and outbox.pending()[0].attempts == 0
            sender.link_up()
            await clock.advance(10.0)  # CALLERROR at 1000 (attempt 1), then the link is lost at 1010
            assert csms.calls == [(a.seq, 1000.0), (a.seq, 1010.0)]
            assert not sender.is_up and outbox.pending()[0].attempts == 1
            await clock.advance(5000.0)  # waiting for the link: no sending, no attempts, not dropped
            assert len(csms.calls) == 2 and outbox.pending()[0].attempts == 1
            sender.link_up()
            await clock.advance(0.0)
            assert csms.calls[2:] == [(a.seq, 6010.0)]
            assert outbox.state(a.seq) == "delivered"

    asyncio.run(main())


def test_link_down_during_a_retry_wait_holds_the_retry_until_link_up(outbox: Outbox) -> None:
    async def main() -> None:
        clock = VirtualClock()
        csms = FakeCsms(clock, [OutboxCallError("InternalError")])
        a = outbox.put("MeterValues", _mv(1))
        sender = _sender(outbox, csms, attempts=3, interval=10.0)
        async with running(sender):
            sender.link_up()
            await clock.advance(5.0)
            sender.link_down()
            await clock.advance(100.0)
            assert csms.calls == [(a.seq, 0.0)]
            sender.link_up()
            await clock.advance(0.0)
            assert csms.calls == [(a.seq, 0.0), (a.seq, 105.0)]

    asyncio.run(main())


def test_a_connection_error_from_the_old_link_after_a_reconnect_keeps_sending(outbox: Outbox) -> None:
    async def main() -> None:
        clock = VirtualClock()
        sender: OutboxSender | None = None

        class Bouncing(FakeCsms):
            async def __call__(self, message: QueuedMessage) -> dict[str, Any]:
                if not self.calls:
                    assert sender is not None
                    sender.link_down()
                    sender.link_up()  # reconnected while the first send was still failing
                    self.calls.append((message.seq, self.clock.monotonic()))
                    raise ConnectionError("old link")
                return await super().__call__(message)

        csms = Bouncing(clock)
        a = outbox.put("MeterValues", _mv(1))
        sender = _sender(outbox, csms)
        async with running(sender):
            sender.link_up()
            await clock.advance(0.0)
        assert csms.calls == [(a.seq, 0.0), (a.seq, 0.0)] and outbox.state(a.seq) == "delivered"

    asyncio.run(main())


def test_strict_order_message_n_plus_1_waits_for_n(outbox: Outbox) -> None:
    async def main() -> None:
        clock = VirtualClock()
        rng = random.Random(7)
        script: list[object] = []
        for _ in range(40):
            script.append(rng.choice([{}, {}, OutboxCallError("InternalError"), TimeoutError()]))
        csms = FakeCsms(clock, script)
        seqs = [outbox.put("MeterValues", _mv(i)).seq for i in range(12)]
        sender = _sender(outbox, csms, attempts=2, interval=1.0)
        async with running(sender):
            sender.link_up()
            await clock.advance(500.0)
        order = [seq for seq, _ in csms.calls]
        assert order == sorted(order)  # never back to an earlier message, never ahead of a pending one
        for seq in seqs:
            state = outbox.state(seq)
            tries = order.count(seq)
            assert state in ("delivered", "dropped")
            assert 1 <= tries <= 2 and (state == "delivered" or tries == 2)
        assert len(outbox) == 0

    asyncio.run(main())


def test_dropped_start_takes_its_dependants_and_the_rest_flows(outbox: Outbox) -> None:
    async def main() -> None:
        clock = VirtualClock()
        csms = FakeCsms(clock, [OutboxCallError("InternalError"), OutboxCallError("InternalError")])
        start = _start(outbox, "s1")
        mv = outbox.put("MeterValues", _mv(1, "$tx:s1"))
        other = outbox.put("MeterValues", _mv(2, 99))
        stop = outbox.put("StopTransaction", {"transactionId": "$tx:s1", "meterStop": 4})
        status = outbox.put("StatusNotification", {"connectorId": 1, "status": "Available"}, transactional=False)
        sender = _sender(outbox, csms, attempts=2, interval=10.0)
        async with running(sender):
            sender.link_up()
            await clock.advance(20.0)
        assert [seq for seq, _ in csms.calls] == [start.seq, start.seq, other.seq, status.seq]
        dropped = {m.seq: reason for m, reason in outbox.dropped()}
        assert set(dropped) == {start.seq, mv.seq, stop.seq}
        assert "gave up after 2" in dropped[start.seq]
        assert "StartTransaction (seq 1) was dropped" in dropped[mv.seq] and "tx_ref 's1'" in dropped[stop.seq]
        assert all("$tx:" not in json.dumps(p) for p in csms.payloads)

    asyncio.run(main())


def test_start_response_binds_before_the_dependants_are_sent(outbox: Outbox) -> None:
    async def main() -> None:
        clock = VirtualClock()
        csms = FakeCsms(clock, [{"transactionId": 77, "idTagInfo": {"status": "Accepted"}}])
        seen: list[tuple[int, dict[str, Any]]] = []
        start = _start(outbox, "s1")
        outbox.put("MeterValues", _mv(1, "$tx:s1"))
        sender = _sender(outbox, csms)
        sender.on_delivered = lambda message, response: seen.append((message.seq, response))
        async with running(sender):
            sender.link_up()
            await clock.advance(0.0)
            outbox.put("StopTransaction", {"transactionId": "$tx:s1", "meterStop": 9})  # bound: substituted at put
            sender.wake()
            await clock.advance(0.0)
        assert [p.get("transactionId") for p in csms.payloads] == [None, 77, 77]
        assert seen[0] == (start.seq, {"transactionId": 77, "idTagInfo": {"status": "Accepted"}}) and len(seen) == 3

    asyncio.run(main())


def test_wake_sends_a_new_message_to_an_idle_sender(outbox: Outbox) -> None:
    async def main() -> None:
        clock = VirtualClock()
        csms = FakeCsms(clock)
        sender = _sender(outbox, csms)
        async with running(sender):
            sender.link_up()
            await clock.advance(5.0)
            a = outbox.put("MeterValues", _mv(1))
            await clock.advance(5.0)
            assert csms.calls == []  # idle until told
            sender.wake()
            await clock.advance(0.0)
            assert csms.calls == [(a.seq, 10.0)]

    asyncio.run(main())


def test_non_transactional_messages_get_one_attempt(outbox: Outbox) -> None:
    async def main() -> None:
        clock = VirtualClock()
        csms = FakeCsms(clock, [OutboxCallError("NotSupported")])
        s = outbox.put("StatusNotification", {"connectorId": 1, "status": "Available"}, transactional=False)
        m = outbox.put("MeterValues", _mv(1))
        sender = _sender(outbox, csms, attempts=5)
        async with running(sender):
            sender.link_up()
            await clock.advance(0.0)
        assert csms.calls == [(s.seq, 0.0), (m.seq, 0.0)] and outbox.state(s.seq) == "dropped"

    asyncio.run(main())


def test_a_message_already_out_of_attempts_is_dropped_unsent(outbox: Outbox) -> None:
    """A crash between the last failed() and drop(): at the restart the message is dropped, not sent again."""

    async def main() -> None:
        clock = VirtualClock()
        csms = FakeCsms(clock)
        a = outbox.put("MeterValues", _mv(1))
        b = outbox.put("MeterValues", _mv(2))
        for _ in range(3):
            outbox.failed(a.seq, "CALLERROR InternalError")
        sender = _sender(outbox, csms, attempts=3)
        async with running(sender):
            sender.link_up()
            await clock.advance(0.0)
        assert csms.calls == [(b.seq, 0.0)] and "already made" in outbox.dropped()[0][1]

    asyncio.run(main())


def test_the_sender_survives_faults_of_its_collaborators(outbox: Outbox) -> None:
    async def main() -> None:
        clock = VirtualClock()
        csms = FakeCsms(clock, [RuntimeError("bug in the encoder"), {}])

        def attempts() -> int:
            raise KeyError("TransactionMessageAttempts")

        def boom(message: QueuedMessage, response: dict[str, Any]) -> None:
            raise RuntimeError("callback bug")

        a = outbox.put("MeterValues", _mv(1))
        b = outbox.put("MeterValues", _mv(2))
        sender = OutboxSender(outbox, csms, clock=clock, attempts=attempts, retry_interval_s=lambda: float("nan"))
        sender.on_delivered = boom
        async with running(sender):
            sender.link_up()
            await clock.advance(100.0)
        # The unexpected exception was an attempt; the bad settings fell back to 3 attempts and 30 s.
        assert csms.calls == [(a.seq, 0.0), (a.seq, 30.0), (b.seq, 30.0)]
        assert outbox.state(a.seq) == outbox.state(b.seq) == "delivered"

    asyncio.run(main())


def test_sender_refuses_bad_settings(outbox: Outbox) -> None:
    clock = VirtualClock()
    with pytest.raises(ValueError, match="backoff"):
        OutboxSender(
            outbox,
            FakeCsms(clock),
            clock=clock,
            attempts=lambda: 3,
            retry_interval_s=lambda: 1.0,
            backoff="x",  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError, match="non_transactional_attempts"):
        OutboxSender(
            outbox,
            FakeCsms(clock),
            clock=clock,
            attempts=lambda: 3,
            retry_interval_s=lambda: 1.0,
            non_transactional_attempts=0,
        )


# ------------------------------------------------------------------------------------------ performance
def test_ten_thousand_messages_put_and_drained(db: Path) -> None:
    """Algorithmic sanity (no per-put scan, no quadratic drain): 10,000 single puts and a full drain through
    the sender in memory, and 10,000 puts in batches on a file (each batch is one synced transaction)."""

    async def drain(box: Outbox) -> list[int]:
        clock = VirtualClock()
        csms = FakeCsms(clock)
        sender = _sender(box, csms)
        async with running(sender):
            sender.link_up()
            await clock.advance(0.0)
        return [seq for seq, _ in csms.calls]

    started = time.perf_counter()
    box = Outbox(None)
    seqs = [box.put("MeterValues", _mv(i)).seq for i in range(10_000)]
    assert len(box) == 10_000
    assert asyncio.run(drain(box)) == seqs and len(box) == 0
    box.close()
    in_memory_s = time.perf_counter() - started

    started = time.perf_counter()
    with Outbox(db) as on_file:
        for batch in range(20):
            on_file.put_many([Outgoing("MeterValues", _mv(batch * 500 + i)) for i in range(500)])
    with Outbox(db) as on_file:
        pending = on_file.pending()
        assert len(pending) == 10_000 and [m.payload for m in pending[:2]] == [_mv(0), _mv(1)]
        assert [m.seq for m in pending] == sorted(m.seq for m in pending)
    on_file_s = time.perf_counter() - started
    assert in_memory_s < 8.0 and on_file_s < 4.0, (in_memory_s, on_file_s)


# ------------------------------------------------------------------------------------------ property
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.booleans()),
        st.tuples(st.just("deliver"), st.just(False)),
        st.tuples(st.just("fail"), st.just(False)),
        st.tuples(st.just("drop"), st.just(False)),
        st.tuples(st.just("reopen"), st.just(False)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_any_interleaving_keeps_order_and_never_returns_a_finished_message(ops: list[tuple[str, bool]]) -> None:
    """Against a model: the pending seqs are exactly the model's, in put order; a delivered or dropped message
    never comes back; a full outbox drops the oldest non-transactional message or refuses."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "station.db"
        box = Outbox(db, max_messages=5)
        model: list[tuple[int, bool]] = []  # (seq, transactional) pending, in order
        finished: set[int] = set()
        last_seq = 0
        try:
            for op, transactional in ops:
                if op == "put":
                    if len(model) >= 5 and all(t for _, t in model):
                        with pytest.raises(OutboxFull):
                            box.put(
                                "MeterValues" if transactional else "StatusNotification",
                                {},
                                transactional=transactional,
                            )
                        continue
                    if len(model) >= 5:
                        victim = next(i for i, (_, t) in enumerate(model) if not t)
                        finished.add(model.pop(victim)[0])
                    message = box.put(
                        "MeterValues" if transactional else "StatusNotification", {}, transactional=transactional
                    )
                    assert message.seq > last_seq
                    last_seq = message.seq
                    model.append((message.seq, transactional))
                elif op == "reopen":
                    box.close()
                    box = Outbox(db, max_messages=5)
                elif model:
                    seq = model[0][0]
                    if op == "deliver":
                        box.delivered(seq, {})
                        finished.add(model.pop(0)[0])
                    elif op == "drop":
                        box.drop(seq, "property")
                        finished.add(model.pop(0)[0])
                    else:
                        box.failed(seq, "CALLERROR")
                pending = [m.seq for m in box.pending()]
                assert pending == [seq for seq, _ in model]
                assert not finished & set(pending)
                head = box.head()
                assert (head.seq if head else None) == (model[0][0] if model else None)
                assert len(box) == len(model)
        finally:
            box.close()


# ------------------------------------------------------------------------------------------ crash
LINE_TIMEOUT_S = 5.0  # a child that prints nothing for this long is stuck: fail instead of hanging
CRASH_ROUNDS = 6


class _ChildOutput:
    """Reads the child's stdout line by line with a deadline per line (a stuck child fails the test)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._fd, selectors.EVENT_READ)
        self._buf = b""
        self._eof = False

    def line(self) -> str | None:
        while b"\n" not in self._buf and not self._eof:
            if not self._sel.select(LINE_TIMEOUT_S):
                raise AssertionError(f"the child printed nothing for {LINE_TIMEOUT_S} s")
            chunk = os.read(self._fd, 65536)
            self._buf += chunk
            self._eof = not chunk
        if b"\n" not in self._buf:
            return None  # a partial last line (the kill cut the print) is not a report
        raw, self._buf = self._buf.split(b"\n", 1)
        return raw.decode()

    def close(self) -> None:
        self._sel.close()


def _crash_round(db: Path, tmp_path: Path, seed: int, round_no: int, wanted: int) -> list[str]:
    stderr_path = tmp_path / "child.stderr"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.firmware.ocpp.outbox_crash_child", str(db), str(seed), str(round_no)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    out = _ChildOutput(proc)
    lines: list[str] = []
    try:
        for _ in range(wanted):
            item = out.line()
            assert item is not None, f"the child ended early: {stderr_path.read_text()}"
            lines.append(item)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=LINE_TIMEOUT_S) == -signal.SIGKILL, stderr_path.read_text()
        while (item := out.line()) is not None:  # lines printed before the kill landed are reports too
            lines.append(item)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=LINE_TIMEOUT_S)
        out.close()
        if proc.stdout is not None:
            proc.stdout.close()
    return lines


def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(db: Path, tmp_path: Path) -> None:
    """A child puts, delivers and fails messages (with offline 1.6 transactions) and is SIGKILLed at random
    points, several times. After each kill: every acknowledged put is pending or delivered with its payload,
    at most one unacknowledged put per kill exists, no delivered message is pending again or delivered twice,
    and no placeholder is left unbound behind a delivered StartTransaction (the bind shares the delivery's
    transaction). SIGKILL tests a process crash; a power cut is the job of synchronous=FULL."""
    rng = random.Random(2024)
    puts: dict[int, tuple[str, dict[str, Any]]] = {}
    put_order: list[int] = []
    delivered: list[int] = []
    bound: dict[str, int] = {}
    failed: dict[int, int] = {}
    for round_no in range(1, CRASH_ROUNDS + 1):
        lines = _crash_round(db, tmp_path, rng.randrange(1 << 30), round_no, rng.randint(5, 120))
        for line in lines:
            kind, rest = line.split(" ", 1)
            if kind == "PUT":
                seq_text, action, payload_text = rest.split(" ", 2)
                puts[int(seq_text)] = (action, json.loads(payload_text))
                put_order.append(int(seq_text))
            elif kind == "DELIVERED":
                seq_text, tid_text = rest.split(" ")
                delivered.append(int(seq_text))
                if tid_text != "-":
                    bound[puts[int(seq_text)][1]["idTag"]] = int(tid_text)
            else:
                seq_text, count = rest.split(" ")
                failed[int(seq_text)] = int(count)

        with Outbox(db, keep_delivered=KEEP_ALL, keep_dropped=KEEP_ALL) as box:
            assert put_order == sorted(put_order) and len(set(put_order)) == len(put_order)
            assert len(delivered) == len(set(delivered)), "a delivered message came back and was delivered again"
            assert box.dropped() == []  # nothing had a reason to be dropped, so nothing was
            pending = box.pending()
            pending_seqs = [m.seq for m in pending]
            assert pending_seqs == sorted(pending_seqs)
            assert not set(delivered) & set(pending_seqs)
            for seq in delivered:
                assert box.state(seq) == "delivered"
            highest = max(put_order, default=0) + CRASH_ROUNDS + 1
            existing = {seq for seq in range(1, highest + 1) if box.state(seq) is not None}
            assert set(puts) <= existing, f"acknowledged puts lost: {sorted(set(puts) - existing)}"
            assert len(existing - set(puts)) <= round_no  # at most one put committed but not reported per kill
            for bound_ref, bound_id in bound.items():
                assert box.transaction_id(bound_ref) == bound_id
            for message in pending:
                if message.seq in failed:
                    assert message.attempts >= failed[message.seq]
                if message.seq not in puts:
                    continue  # committed but unreported: its content is unknown to the parent
                action, payload = puts[message.seq]
                expected = dict(payload)
                ref = message.placeholder_ref or message.tx_ref
                if isinstance(payload.get("transactionId"), str) and ref is not None:
                    tid_now = box.transaction_id(ref)
                    if tid_now is not None:
                        expected["transactionId"] = tid_now
                assert (message.action, message.payload) == (action, expected)
                if message.placeholder_ref is not None:
                    # Unbound placeholder: its StartTransaction must still be pending, ahead of it.
                    assert box.transaction_id(message.placeholder_ref) is None
                    start_seq = next(s for s, (a, p) in puts.items() if a == "StartTransaction" and p["idTag"] == ref)
                    assert box.state(start_seq) == "pending" and start_seq < message.seq
