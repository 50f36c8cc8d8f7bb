"""OCPP 2.0.1 across a CSMS outage, against the independent strict CSMS (`ocpp-rpc`) in real time.

A transaction must outlive a CSMS restart (same transactionId, seqNo going on without gap or repeat,
2.0.1 E01/E03), and what the station queued while the CSMS was away must arrive in order, flagged
`offline` (E04), with nothing lost or sent twice. Zero strict-validation failures are required.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_ocpp16_peer import Bench, _charge
from tests.e2e.test_ocpp201_peer import STATION, _bench
from tests.peers.ocpp_csms import OcppRpcCsms

#: Bounds of the waits below; each test's own timeout (90 s) is the last resort.
LINK_CHANGE_S = 10.0
CLEANUP_S = 15.0


def _events(*peers: OcppRpcCsms) -> list[dict[str, Any]]:
    """The TransactionEvent payloads the peers received, in the order they arrived."""
    return [
        e["payload"]
        for peer in peers
        for e in peer.events
        if e.get("ev") == "call" and e.get("dir") == "rx" and e.get("action") == "TransactionEvent"
    ]


async def _poll(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for a condition of the station's own state; the peer's `wait_for` looks again only when the peer
    prints an event, which may be long after the station changed."""
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


async def _until_offline(b: Bench) -> None:
    await _poll(lambda: not b.station.online, LINK_CHANGE_S, "the station sees the CSMS gone")


async def _stop_between_events(peer: OcppRpcCsms) -> None:
    """Stop the CSMS just after it answered a TransactionEvent. Stopped while one is in flight, the CSMS would
    see it again after the restart (the station never got the answer: at-least-once delivery, E04), which is
    right but not what these tests measure."""
    since = len(peer.events)
    await peer.wait_for(lambda e: e.get("ev") == "reply" and e.get("action") == "TransactionEvent", 10.0, since=since)
    await peer.stop()


async def _close(b: Bench) -> None:
    await asyncio.wait_for(b.station.stop(), CLEANUP_S)
    await asyncio.wait_for(b.sim.close(), CLEANUP_S)


@pytest.mark.timeout(90)
def test_a_transaction_goes_on_across_a_csms_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with await OcppRpcCsms.start(interval=30) as peer:
            b = await _bench(tmp_path, peer, "2.0.1")
            try:
                await b.until("BootNotification")
                await _charge(b, "TAG-RESTART")
                before = await b.until("TransactionEvent", 3, timeout=15.0)
                started = before[0]["payload"]
                assert started["eventType"] == "Started"
                tx_id = started["transactionInfo"]["transactionId"]

                port = peer.port
                await _stop_between_events(peer)
                await _until_offline(b)
                await asyncio.sleep(2.0)  # TxUpdatedInterval 1 s: updates are queued meanwhile
                assert len(b.station.outbox) >= 1, "the updates of the outage wait in the outbox"
                async with await OcppRpcCsms.start(port=port, interval=30) as peer2:
                    b.peer = peer2
                    [boot] = await b.until("BootNotification", timeout=15.0)
                    assert boot["payload"]["reason"] == "PowerUp"
                    after = await b.until("TransactionEvent", 3, timeout=15.0)
                    updates = [e["payload"] for e in after]
                    assert all(u["eventType"] == "Updated" for u in updates)
                    assert {u["transactionInfo"]["transactionId"] for u in updates} == {tx_id}
                    flags = [u.get("offline", False) for u in updates]
                    # The outage's updates come first, flagged; what follows the reconnection is not (E04).
                    assert flags[0] is True and flags == sorted(flags, reverse=True), flags

                    stop = await peer2.call(STATION, "RequestStopTransaction", {"transactionId": tx_id})
                    assert stop["status"] == "Accepted"
                    await peer2.wait_for(lambda _: any(e["eventType"] == "Ended" for e in _events(peer2)), 10.0)
                    ended = _events(peer2)[-1]
                    assert ended["eventType"] == "Ended" and ended["transactionInfo"]["transactionId"] == tx_id
                    assert ended["transactionInfo"]["stoppedReason"] == "Remote"

                    everything = _events(peer, peer2)
                    assert {e["transactionInfo"]["transactionId"] for e in everything} == {tx_id}
                    seq = [e["seqNo"] for e in everything]
                    assert seq == list(range(len(seq))), f"seqNo without gaps or repeats across the restart: {seq}"
                    assert peer2.strict_errors() == []
                assert peer.strict_errors() == []
            finally:
                await _close(b)

    asyncio.run(scenario())


@pytest.mark.timeout(90)
def test_two_hundred_queued_transaction_events_are_replayed_in_order_after_an_outage(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with await OcppRpcCsms.start(interval=30) as peer:
            b = await _bench(tmp_path, peer, "2.0.1")
            try:
                await b.until("BootNotification")
                await _charge(b, "TAG-QUEUE")
                await b.until("TransactionEvent", 2, timeout=15.0)
                # Periodic updates off, so that the outage's queue is what the test puts in it (J02).
                b.station.adapter.device_model.set_variables(  # type: ignore[attr-defined]
                    [
                        {
                            "component": {"name": "SampledDataCtrlr"},
                            "variable": {"name": "TxUpdatedInterval"},
                            "attributeValue": "0",
                        }
                    ]
                )
                port = peer.port
                await _stop_between_events(peer)
                await _until_offline(b)
                for _ in range(200):
                    b.station.send_meter_values("Trigger", transactions_only=True)
                assert len(b.station.outbox) >= 200

                async with await OcppRpcCsms.start(port=port, interval=30) as peer2:
                    b.peer = peer2
                    await peer2.wait_for(
                        lambda _: sum(e["triggerReason"] == "Trigger" for e in _events(peer2)) >= 200, 45.0
                    )
                    await _poll(lambda: len(b.station.outbox) == 0, LINK_CHANGE_S, "the outbox drains")
                    await asyncio.sleep(0.5)  # a duplicate, if any, would arrive now
                    replayed = _events(peer2)
                    triggered = [e for e in replayed if e["triggerReason"] == "Trigger"]
                    assert len(triggered) == 200, "none lost, none duplicated"
                    assert all(e["eventType"] == "Updated" and e.get("offline") is True for e in triggered)
                    seq = [e["seqNo"] for e in triggered]
                    assert seq == list(range(seq[0], seq[0] + 200)), "in the order they were queued, no gaps"
                    stamps = [e["timestamp"] for e in triggered]
                    assert stamps == sorted(stamps)

                    everything = _events(peer, peer2)
                    all_seq = [e["seqNo"] for e in everything]
                    assert all_seq == list(range(len(all_seq))), "seqNo without gaps or repeats across the outage"
                    assert len({e["transactionInfo"]["transactionId"] for e in everything}) == 1
                    assert peer2.strict_errors() == []
                assert peer.strict_errors() == []
            finally:
                await _close(b)

    asyncio.run(scenario())
