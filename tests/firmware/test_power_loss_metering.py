"""A power loss between two meter readings, with the OCPP uplink and a tariff.

The station charges; at an instant between two readings (and between two journal checkpoints) the
power goes: the disk is frozen as it is (the journal commits with synchronous=FULL, so a copy of its
files at that instant is what a power cut leaves), the process is gone. A second station boots on that
disk with the EV gone. What must hold:

* the session is closed at its last checkpoint: no energy invented after it, and at most
  CHECKPOINT_PERIOD of charging unknown;
* the CSMS gets the stop of the transaction it still has open (same id, the checkpoint's reading and
  time), the signed end record that verifies with the same key, and the billing record priced from
  the energy the journal knows;
* nothing is sent twice when the station boots a third time.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from firmware.connector import CHECKPOINT_PERIOD
from firmware.metering import ocmf
from firmware.metering.billing import Tariff
from firmware.ocpp.signed_meter import decode_signed_value
from tests.firmware.ocpp.station_rig import station_rig

TARIFF = Tariff("EUR", energy_per_kwh=Decimal("0.50"))
AMPS = 16.0


def _freeze_disk(src: Path, dst: Path) -> None:
    """What a power cut leaves: the files as they are now (every committed write is in them)."""
    shutil.copytree(src, dst)


@pytest.mark.timeout(60)
def test_a_power_loss_between_two_readings_bills_only_known_energy_and_tells_the_csms(tmp_path: Path) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    before.mkdir()

    async def charge_then_lose_power() -> tuple[str, int, float, float]:
        async with station_rig(before, tariff=TARIFF, config={"MeterValueSampleInterval": "0"}) as rig:
            await rig.plug("B")
            await rig.advance(1.0)
            assert await rig.run(rig.station.present_id(1, "TAG-PL")) == "Accepted"
            await rig.advance(1.0)
            rig.sim.plant.ev_state = "C"
            await rig.advance(2.0)
            await rig.draw(AMPS)
            await rig.advance(95.5)  # a reading at every whole second: this instant is between two
            [start] = rig.calls("StartTransaction")
            [answer] = [
                e for e in rig.csms.events if e.kind == "result" and e.dir == "tx" and e.message_id == start.message_id
            ]
            session_id = rig.connector.session_id
            assert session_id is not None and rig.connector.journal is not None
            record = rig.connector.journal.session(session_id)
            assert record is not None
            true_wh = rig.connector.last_meter.import_wh if rig.connector.last_meter else 0.0
            # The journal knows less than the meter did: the power loss falls between checkpoints.
            assert record.last_meter_wh < true_wh
            _freeze_disk(before, after)
            return session_id, answer.payload["transactionId"], record.last_meter_wh, true_wh

    session_id, tx_id, checkpoint_wh, true_wh = asyncio.run(charge_then_lose_power())
    power_w = 3 * 230.0 * AMPS
    assert true_wh - checkpoint_wh <= power_w * CHECKPOINT_PERIOD / 3600.0 + 1.0

    async def boot_on_the_frozen_disk() -> None:
        async with station_rig(after, tariff=TARIFF) as rig:
            await rig.advance(5.0)
            assert rig.connector.session_id is None  # EV gone: the session was closed, not resumed
            assert rig.connector.journal is not None
            closed = rig.connector.journal.session(session_id)
            assert closed is not None and closed.stop_reason == "EVDisconnected"
            assert closed.meter_stop_wh == pytest.approx(checkpoint_wh)  # nothing invented after it

            [stop] = rig.calls("StopTransaction")
            assert stop.payload["transactionId"] == tx_id
            assert stop.payload["meterStop"] == round(checkpoint_wh)
            assert stop.payload["reason"] == "EVDisconnected"
            signed = [
                decode_signed_value(sv["value"])
                for mv in stop.payload.get("transactionData", [])
                for sv in mv["sampledValue"]
                if sv.get("format") == "SignedData"
            ]
            assert signed, "the stop carries the signed end record"
            config, _ = rig.station.adapter.config.get(["MeterPublicKey"])  # type: ignore[attr-defined]
            key = ocmf.public_key_from(config[0]["value"])
            end = ocmf.verify(signed[-1], key).payload  # the key from before the power loss
            assert [r["TX"] for r in end["RD"]] == ["B", "E"]
            assert end["RD"][-1]["RV"] == pytest.approx(checkpoint_wh / 1000, abs=0.011)

            [transfer] = rig.calls("DataTransfer")
            bill = json.loads(transfer.payload["data"])
            assert bill["session_id"] == session_id
            assert bill["import_wh"] == pytest.approx(checkpoint_wh - bill["meter_import_start_wh"])
            assert Decimal(bill["price"]["total"]) == TARIFF.price(bill["import_wh"], 0.0, 0.0).total

    asyncio.run(boot_on_the_frozen_disk())

    async def boot_again() -> None:
        async with station_rig(after, tariff=TARIFF) as rig:
            await rig.advance(5.0)
            assert rig.calls("StopTransaction") == [] and rig.calls("DataTransfer") == []

    asyncio.run(boot_again())


@pytest.mark.timeout(60)
def test_ocpp201_a_session_closed_at_boot_ends_its_transaction_once(tmp_path: Path) -> None:
    """The same power loss with OCPP 2.0.1: the Ended event continues the transaction's seqNo, carries
    the signed end record, and comes once."""
    before, after = tmp_path / "before", tmp_path / "after"
    before.mkdir()

    async def charge_then_lose_power() -> tuple[str, list[int]]:
        async with station_rig(before, protocol="ocpp2.0.1", tariff=TARIFF) as rig:
            await rig.plug("B")
            await rig.advance(1.0)
            assert await rig.run(rig.station.present_id(1, "TAG-PL2")) == "Accepted"
            await rig.advance(1.0)
            rig.sim.plant.ev_state = "C"
            await rig.advance(2.0)
            await rig.draw(AMPS)
            await rig.advance(95.5)
            seq = [e.payload["seqNo"] for e in rig.calls("TransactionEvent")]
            _freeze_disk(before, after)
            assert rig.connector.session_id is not None
            return rig.connector.session_id, seq

    session_id, seq_before = asyncio.run(charge_then_lose_power())

    async def boot_on_the_frozen_disk() -> None:
        async with station_rig(after, protocol="ocpp2.0.1", tariff=TARIFF) as rig:
            await rig.advance(5.0)
            [ended] = [e for e in rig.calls("TransactionEvent") if e.payload["eventType"] == "Ended"]
            assert ended.payload["transactionInfo"]["transactionId"] == session_id
            assert ended.payload["seqNo"] == max(seq_before) + 1, "the seqNo continues, never repeats"
            assert ended.payload["transactionInfo"]["stoppedReason"] == "EVDisconnected"
            signed = [
                sv["signedMeterValue"]
                for mv in ended.payload.get("meterValue", [])
                for sv in mv["sampledValue"]
                if "signedMeterValue" in sv
            ]
            assert len(signed) == 1
            record = ocmf.parse(decode_signed_value(signed[0]["signedMeterData"])).payload
            assert [r["TX"] for r in record["RD"]] == ["B", "E"]
            [transfer] = rig.calls("DataTransfer")
            assert json.loads(transfer.payload["data"])["session_id"] == session_id

    asyncio.run(boot_on_the_frozen_disk())

    async def boot_again() -> None:
        async with station_rig(after, protocol="ocpp2.0.1", tariff=TARIFF) as rig:
            await rig.advance(5.0)
            assert [e for e in rig.calls("TransactionEvent") if e.payload["eventType"] == "Ended"] == []

    asyncio.run(boot_again())
