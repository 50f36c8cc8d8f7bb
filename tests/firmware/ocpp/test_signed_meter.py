"""Signed meter values in virtual time against the embedded CSMS: fiscal (clock-aligned, no
transaction) records for 1.6 and 2.0.1, and the switch that turns them off."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest

from firmware.metering import ocmf
from firmware.ocpp.signed_meter import decode_signed_value
from tests.firmware.ocpp.station_rig import StationRig, station_rig


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sign", [True, False])
def test_ocpp16_clock_aligned_values_without_a_transaction_are_fiscal_records(tmp_path: Path, sign: bool) -> None:
    config = {"ClockAlignedDataInterval": "60", "SampledDataSignReadings": "true" if sign else "false"}

    async def scenario() -> None:
        async with station_rig(tmp_path, config=config) as rig:
            await rig.advance(130.0)
            values = [
                sv
                for call in rig.calls("MeterValues")
                for mv in call.payload["meterValue"]
                for sv in mv["sampledValue"]
                if sv.get("context") == "Sample.Clock"
            ]
            assert any(sv.get("format") != "SignedData" for sv in values), "the plain values are there"
            signed = [decode_signed_value(sv["value"]) for sv in values if sv.get("format") == "SignedData"]
            if not sign:
                assert signed == []
                return
            assert len(signed) >= 2
            key = ocmf.public_key_from(rig.station.adapter.config.get_str("MeterPublicKey"))  # type: ignore[attr-defined]
            pages = []
            for record in signed:
                payload = ocmf.verify(record, key).payload
                pages.append(payload["PG"])
                assert all("TX" not in r for r in payload["RD"])  # fiscal readings have no transaction type
            assert pages == [f"F{i}" for i in range(1, len(pages) + 1)]

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_ocpp201_aligned_values_without_a_transaction_carry_a_signed_fiscal_record(tmp_path: Path) -> None:
    settings = (("AlignedDataCtrlr", "Interval", "60"), ("AlignedDataCtrlr", "SignReadings", "true"))

    def configure(rig: StationRig) -> None:
        rig.station.adapter.device_model.set_variables(  # type: ignore[attr-defined]
            [{"component": {"name": c}, "variable": {"name": v}, "attributeValue": x} for c, v, x in settings]
        )

    async def scenario() -> None:
        async with station_rig(tmp_path, protocol="ocpp2.0.1", before_start=configure) as rig:
            await rig.advance(130.0)
            signed = [
                sv["signedMeterValue"]
                for call in rig.calls("MeterValues")
                for mv in call.payload["meterValue"]
                for sv in mv["sampledValue"]
                if "signedMeterValue" in sv
            ]
            assert len(signed) >= 2
            for smv in signed:
                key = ocmf.public_key_from(base64.b64decode(smv["publicKey"]).hex())
                payload = ocmf.verify(decode_signed_value(smv["signedMeterData"]), key).payload
                assert payload["PG"].startswith("F")

    asyncio.run(scenario())
