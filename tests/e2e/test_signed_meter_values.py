"""Signed meter values and billing records end to end, against the independent strict CSMS (`ocpp-rpc`,
which validates every message against the official schemas): the firmware on the simulated board in real
time, a session with a tariff, then on the CSMS side: the OCMF records decoded from what it received,
verified with the public key the station reported, their readings matching the transaction's meter
values, and the billing record (DataTransfer) matching both."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from firmware.connector import ConnectorSettings
from firmware.metering import ocmf
from firmware.metering.billing import Tariff
from firmware.ocpp.signed_meter import decode_signed_value
from firmware.ocpp.station import StationSettings
from firmware.ocpp.transport import Backoff, Security
from firmware.ocpp.uplink import build_station
from firmware.simulation import SimulatedCharger
from hal.clock import RealClock
from tests.e2e.test_ocpp16_peer import Bench, _charge
from tests.peers.ocpp_csms import OcppRpcCsms

STATION = "E2E-SIGNED"
TARIFF = Tariff("EUR", energy_per_kwh=Decimal("0.39"), time_per_hour=Decimal("1.20"), text="0.39 EUR/kWh + 1.20 EUR/h")


@asynccontextmanager
async def _bench(tmp_path: Path, peer: OcppRpcCsms, version: str) -> AsyncIterator[Bench]:
    clock = RealClock()
    sim = SimulatedCharger(
        "sim-ac",
        journal_path=tmp_path / "journal.db",
        settings=ConnectorSettings(free_charging=False, tariff=TARIFF),
        clock=clock,
    )
    await sim.start()
    assert sim.connector is not None
    settings = StationSettings(
        STATION,
        version=version,  # type: ignore[arg-type]
        csms_url=peer.url,
        security=Security() if version == "1.6" else Security(profile=1, password="a-sixteen-char-password"),
        backoff=Backoff(minimum_s=0.2, random_range_s=0.2),
    )
    defaults = {"MeterValueSampleInterval": "1", "ClockAlignedDataInterval": "0", "SampledDataSignReadings": "true"}
    station = build_station(
        settings,
        {1: sim.connector},
        clock=clock,
        data_dir=tmp_path / "data",
        journal_path=tmp_path / "journal.db",
        config_defaults=defaults if version == "1.6" else None,
    )
    if version != "1.6":
        station.adapter.device_model.set_variables(  # type: ignore[attr-defined]
            [
                {"component": {"name": comp}, "variable": {"name": var}, "attributeValue": value}
                for comp, var, value in (
                    ("SampledDataCtrlr", "TxUpdatedInterval", "1"),
                    ("SampledDataCtrlr", "SignReadings", "true"),
                )
            ]
        )
    await station.start()
    try:
        yield Bench(sim, station, peer)
    finally:
        await asyncio.wait_for(station.stop(), 15.0)
        await asyncio.wait_for(sim.close(), 15.0)


def _signed_16(messages: list[dict[str, Any]], key: str) -> list[tuple[str, str]]:
    """(context, OCMF record) of every SignedData sampled value in 1.6 meter value lists."""
    out = []
    for message in messages:
        for mv in message["payload"].get(key, []):
            for sv in mv["sampledValue"]:
                if sv.get("format") == "SignedData":
                    out.append((sv["context"], decode_signed_value(sv["value"])))
    return out


def _check_bill(bill: dict[str, Any], start_wh: float, stop_wh: float, tolerance_wh: float = 1.0) -> None:
    assert bill["meter_import_start_wh"] == pytest.approx(start_wh, abs=tolerance_wh)
    assert bill["meter_import_stop_wh"] == pytest.approx(stop_wh, abs=tolerance_wh)
    assert bill["import_wh"] == pytest.approx(bill["meter_import_stop_wh"] - bill["meter_import_start_wh"])
    expected = TARIFF.price(bill["import_wh"], bill["export_wh"], bill["duration_s"])
    assert bill["price"]["total"] == str(expected.total)
    assert bill["tariff"]["text"] == TARIFF.text
    assert bill["meter_error"] is None


@pytest.mark.timeout(90)
def test_ocpp16_signed_begin_periodic_and_end_records_and_the_bill(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with await OcppRpcCsms.start(interval=30) as peer, _bench(tmp_path, peer, "1.6") as b:
            await b.until("BootNotification")
            config = await peer.call(STATION, "GetConfiguration", {"key": ["MeterPublicKey"]})
            [entry] = config["configurationKey"]
            assert entry["readonly"] is True
            public_key = ocmf.public_key_from(entry["value"])

            await _charge(b, "TAG-SIGNED")
            [start] = await b.until("StartTransaction")
            await b.until("MeterValues", 3)
            tx_id = b.calls("MeterValues")[-1]["payload"]["transactionId"]
            answer = await peer.call(STATION, "RemoteStopTransaction", {"transactionId": tx_id})
            assert answer["status"] == "Accepted"
            [stop] = await b.until("StopTransaction")
            [transfer] = await b.until("DataTransfer")

            # The begin record came as MeterValues right after the start, signed periodic values after it.
            signed_mv = _signed_16(b.calls("MeterValues"), "meterValue")
            assert signed_mv[0][0] == "Transaction.Begin"
            assert any(context == "Sample.Periodic" for context, _ in signed_mv)
            # StopTransaction carries the begin and the end record.
            signed_stop = _signed_16([stop], "transactionData")
            assert [context for context, _ in signed_stop] == ["Transaction.Begin", "Transaction.End"]
            pages = []
            for _, record in signed_mv + signed_stop:
                parsed = ocmf.verify(record, public_key)  # every record verifies with the reported key
                pages.append(parsed.payload["PG"])
            end = ocmf.verify(signed_stop[-1][1], public_key).payload
            begin_rv, end_rv = (r["RV"] for r in end["RD"])
            assert [r["TX"] for r in end["RD"]] == ["B", "R"]  # remote stop
            assert begin_rv == pytest.approx(start["payload"]["meterStart"] / 1000, abs=0.011)
            assert end_rv == pytest.approx(stop["payload"]["meterStop"] / 1000, abs=0.011)
            assert end["ID"] == "TAG-SIGNED" and end["TT"] == TARIFF.text
            assert signed_stop[0][1] == signed_mv[0][1], "the stop carries the very begin record sent at the start"
            assert len(set(pages)) == len(pages) - 1, "every other record has a page number of its own"

            assert transfer["payload"]["vendorId"] == "org.evse-firmware"
            assert transfer["payload"]["messageId"] == "BillingRecord"
            bill = json.loads(transfer["payload"]["data"])
            _check_bill(bill, start["payload"]["meterStart"], stop["payload"]["meterStop"])
            assert bill["stop_reason"] == "Remote"
            assert peer.strict_errors() == []

    asyncio.run(scenario())


@pytest.mark.timeout(90)
@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
def test_ocpp2_signed_meter_value_objects_and_the_bill(tmp_path: Path, version: str) -> None:
    async def scenario() -> None:
        async with await OcppRpcCsms.start(interval=30) as peer, _bench(tmp_path, peer, version) as b:
            await b.until("BootNotification")
            await _charge(b, "TAG-SIGNED2")
            events = await b.until("TransactionEvent", 3, timeout=15.0)
            tx_id = events[0]["payload"]["transactionInfo"]["transactionId"]
            answer = await peer.call(STATION, "RequestStopTransaction", {"transactionId": tx_id})
            assert answer["status"] == "Accepted"
            await peer.wait_for(
                lambda _: any(e["payload"]["eventType"] == "Ended" for e in b.calls("TransactionEvent")), 10.0
            )
            [transfer] = await b.until("DataTransfer")
            payloads = [e["payload"] for e in b.calls("TransactionEvent")]
            signed = [
                (p["eventType"], sv)
                for p in payloads
                for mv in p.get("meterValue", [])
                for sv in mv["sampledValue"]
                if "signedMeterValue" in sv
            ]
            assert signed[0][0] == "Started" and signed[-1][0] == "Ended"
            assert any(kind == "Updated" for kind, _ in signed), "SignReadings: periodic values are signed"
            # PublicKeyWithSignedMeterValue = OncePerTransaction: the key comes with the first record only.
            keys = [sv["signedMeterValue"]["publicKey"] for _, sv in signed]
            assert keys[0] and not any(keys[1:])
            public_key = ocmf.public_key_from(base64.b64decode(keys[0]).hex())
            for _, sv in signed:
                smv = sv["signedMeterValue"]
                assert (smv["encodingMethod"], smv["signingMethod"]) == ("OCMF", "ECDSA-secp256r1-SHA256")
                record = ocmf.verify(decode_signed_value(smv["signedMeterData"]), public_key)
                assert record.payload["RD"][-1]["RV"] == pytest.approx(sv["value"] / 1000, abs=0.011)
            end = ocmf.parse(decode_signed_value(signed[-1][1]["signedMeterValue"]["signedMeterData"])).payload
            assert [r["TX"] for r in end["RD"]] == ["B", "R"]
            bill = json.loads(transfer["payload"]["data"])
            _check_bill(bill, end["RD"][0]["RV"] * 1000, signed[-1][1]["value"], tolerance_wh=10.0)  # RV: 0.01 kWh
            assert peer.strict_errors() == []

    asyncio.run(scenario())
