"""The child process of ``test_journal_crash.py``: plays the firmware against a journal until it is killed.

    python -m tests.firmware.journal_crash_child DB SEED PLUGGED STALE [--finish]

First it reconciles every connector with a hardware snapshot (pilot B or C when ``PLUGGED`` is 1, else A;
with ``STALE`` 1 "now" is an hour after the last checkpoints, so nothing can be resumed). With ``--finish``
it stops there. Otherwise it runs sessions on the connectors, interleaved, for ever: start, a few
checkpoints (each followed by a meter-total record, as the firmware does), stop, repeat, and continues a
resumed session first.

After each journal call has returned (so has committed) it prints one line and flushes, so every line the
parent reads is a fact the journal must still hold after the kill:

    RECONCILE <connector> <action> <session id or -> <reason or -> <meter_stop_wh or ->
    START <session id> <connector> <meter_start_wh>
    UPDATE <session id> <meter_wh>
    METER <connector> <import_wh>
    STOP <session id> <reason> <meter_stop_wh>
    DONE
"""

from __future__ import annotations

import random
import sys
import time

from firmware.journal import HardwareSnapshot, Journal

CONNECTORS = (1, 2)
#: Reasons of ordinary stops; the reconciliation reasons (PowerLoss, EVDisconnected) are never used here, so
#: the parent can tell which sessions a reconciliation closed.
STOP_REASONS = ("Local", "Remote")


def _emit(*fields: object) -> None:
    print(" ".join(str(f) for f in fields), flush=True)


def _resume_meter(journal: Journal, connector: int) -> float:
    """Where the host-kept meter total resumes: the highest of the stored total and the newest session's
    readings (a checkpoint may be newer than the last meter record)."""
    total = 0.0
    last = journal.last_meter(connector)
    if last is not None:
        total = last.import_wh
    for session in journal.sessions(connector, limit=1):
        end = session.meter_stop_wh if session.meter_stop_wh is not None else session.last_meter_wh
        total = max(total, end)
    return total


def main(argv: list[str]) -> int:
    db, seed, plugged, stale = argv[0], int(argv[1]), argv[2] == "1", argv[3] == "1"
    finish = "--finish" in argv[4:]
    rng = random.Random(seed)
    journal = Journal(db)
    now = time.time() + (3600.0 if stale else 0.0)
    meters: dict[int, float] = {}
    for connector in CONNECTORS:
        meters[connector] = _resume_meter(journal, connector)
        hw_meter = rng.choice([None, meters[connector] + rng.uniform(0.0, 20.0), max(0.0, meters[connector] - 5.0)])
        snapshot = HardwareSnapshot(
            ev_state=rng.choice("BC") if plugged else "A", contactor_closed=False, meter_import_wh=hw_meter
        )
        result = journal.reconcile(connector, snapshot, now=now)
        session = result.session
        _emit(
            "RECONCILE",
            connector,
            result.action,
            session.session_id if session else "-",
            session.stop_reason if session and session.stop_reason else "-",
            repr(session.meter_stop_wh) if session and session.meter_stop_wh is not None else "-",
        )
        meters[connector] = _resume_meter(journal, connector)
    if finish:
        _emit("DONE")
        journal.close()
        return 0
    while True:
        connector = rng.choice(CONNECTORS)
        session = journal.open_session(connector)
        if session is None:
            session = journal.start_session(
                connector, id_tag=f"tag{rng.randint(1, 9)}", meter_start_wh=meters[connector]
            )
            _emit("START", session.session_id, connector, repr(session.meter_start_wh))
        elif rng.random() < 0.25:
            reason = rng.choice(STOP_REASONS)
            stopped = journal.stop_session(session.session_id, reason=reason, meter_stop_wh=meters[connector])
            _emit("STOP", session.session_id, reason, repr(stopped.meter_stop_wh))
        else:
            meters[connector] += rng.uniform(0.0, 50.0)
            journal.update_session(session.session_id, meter_wh=meters[connector])
            _emit("UPDATE", session.session_id, repr(meters[connector]))
            journal.record_meter(connector, import_wh=meters[connector], export_wh=0.0)
            _emit("METER", connector, repr(meters[connector]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
