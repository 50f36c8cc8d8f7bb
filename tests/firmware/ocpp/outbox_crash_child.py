"""The child process of the outbox crash test in ``test_outbox.py``: plays the OCPP uplink against an outbox
until it is killed.

    python -m tests.firmware.ocpp.outbox_crash_child DB SEED ROUND

It loops for ever: it starts sessions (a StartTransaction with a tx_ref, then MeterValues and a
StopTransaction carrying the ``$tx:<ref>`` placeholder), queues status notifications, delivers the head (a
StartTransaction is answered with a transactionId, which the outbox binds in the same transaction) or records
a failed attempt of it. After each outbox call has returned (so has committed) it prints one line and
flushes, so every line the parent reads is a fact the outbox must still hold after the kill:

    PUT <seq> <action> <json payload as returned by put>
    DELIVERED <seq> <transactionId or ->
    FAILED <seq> <attempts>
"""

from __future__ import annotations

import json
import random
import sys

from firmware.ocpp.outbox import Outbox

#: No pruning during the test: the parent checks the state of every message ever put.
KEEP_ALL = 1_000_000


def _emit(*fields: object) -> None:
    print(" ".join(str(f) for f in fields), flush=True)


def main(argv: list[str]) -> int:
    db, seed, round_no = argv[0], int(argv[1]), int(argv[2])
    rng = random.Random(seed)
    outbox = Outbox(db, keep_delivered=KEEP_ALL, keep_dropped=KEEP_ALL, max_messages=KEEP_ALL)
    session = 0
    open_ref: str | None = None
    while True:
        r = rng.random()
        head = outbox.head()
        if r < 0.45 or head is None:
            if open_ref is None and rng.random() < 0.3:
                session += 1
                open_ref = f"r{round_no}s{session}"
                action, payload = "StartTransaction", {"connectorId": 1, "idTag": open_ref, "meterStart": session}
            elif open_ref is not None and rng.random() < 0.6:
                stop = rng.random() < 0.3
                action = "StopTransaction" if stop else "MeterValues"
                payload = {"transactionId": f"$tx:{open_ref}", "mark": rng.randrange(1 << 30)}
                if stop:
                    open_ref = None
            else:
                action, payload = "StatusNotification", {"connectorId": 1, "status": "Charging"}
            message = outbox.put(
                action,
                payload,
                transactional=action != "StatusNotification",
                tx_ref=open_ref if action == "StartTransaction" else None,
            )
            _emit("PUT", message.seq, action, json.dumps(message.payload, separators=(",", ":")))
        elif r < 0.85:
            tid: int | str = "-"
            response: dict[str, object] = {}
            if head.action == "StartTransaction":
                tid = 1000 * round_no + head.seq
                response = {"transactionId": tid, "idTagInfo": {"status": "Accepted"}}
            outbox.delivered(head.seq, response)
            _emit("DELIVERED", head.seq, tid)
        else:
            _emit("FAILED", head.seq, outbox.failed(head.seq, "CALLERROR InternalError"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
