"""The station's OCMF signer: records verify, page numbers count up without gaps and survive a
restart, export readings on bidirectional boards, error flags, end reading types."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from firmware.metering import ocmf
from firmware.metering.signing import OBIS_EXPORT, OBIS_IMPORT, OcmfSigner, SignedReading, end_type

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
METER = ocmf.MeterInfo(serial="SDM630-123456", vendor="Eastron", model="SDM630")
WHO = ocmf.Identity(id_value="04A2B3C4", id_type="ISO14443", level="TRUSTED")


def _signer(tmp_path: Path) -> OcmfSigner:
    return OcmfSigner.for_data_dir(tmp_path, gateway_id="evse-firmware sim", gateway_version="0.1.0")


def _session_record(signer: OcmfSigner, **kwargs: object) -> str:
    readings = [(SignedReading(T0, 12_345.0, 10.0), "B"), (SignedReading(T0 + timedelta(hours=1), 19_345.0, 10.0), "E")]
    return signer.transaction_record(METER, WHO, readings, bidirectional=False, **kwargs)  # type: ignore[arg-type]


def test_a_transaction_record_verifies_with_the_reported_public_key(tmp_path: Path) -> None:
    signer = _signer(tmp_path)
    record = _session_record(signer, tariff_text="0.39 EUR/kWh")
    parsed = ocmf.verify(record, ocmf.public_key_from(signer.public_key_hex))
    data = parsed.payload
    assert data["PG"] == "T1"
    assert (data["MS"], data["MM"], data["GI"], data["TT"]) == (
        "SDM630-123456",
        "SDM630",
        "evse-firmware sim",
        "0.39 EUR/kWh",
    )
    assert [(r["TX"], r["RV"], r["RI"], r["ST"]) for r in data["RD"]] == [
        ("B", 12.34, OBIS_IMPORT, "G"),
        ("E", 19.34, OBIS_IMPORT, "G"),
    ]
    assert data["RD"][0]["TM"] == "2026-11-22T08:00:00,000+0000 I"
    assert (tmp_path / "ocmf-key.pem").stat().st_mode & 0o777 == 0o600


def test_page_numbers_count_up_and_survive_a_restart(tmp_path: Path) -> None:
    first = _signer(tmp_path)
    pages = [ocmf.parse(_session_record(first)).payload["PG"] for _ in range(3)]
    fiscal = first.fiscal_record(METER, SignedReading(T0, 1.0), bidirectional=False)
    again = _signer(tmp_path)  # a reboot: same key, counters from the file
    assert again.public_key_hex == first.public_key_hex
    pages.append(ocmf.parse(_session_record(again)).payload["PG"])
    assert pages == ["T1", "T2", "T3", "T4"]
    assert ocmf.parse(fiscal).payload["PG"] == "F1"
    assert "TX" not in ocmf.parse(fiscal).payload["RD"][0]  # fiscal readings have no transaction type


def test_a_damaged_counter_file_never_reuses_a_number(tmp_path: Path) -> None:
    signer = _signer(tmp_path)
    _session_record(signer)
    (tmp_path / "ocmf-pagination.json").write_text("{garbage")
    page = ocmf.parse(_session_record(_signer(tmp_path))).payload["PG"]
    assert int(page[1:]) > 1_700_000_000  # restarted from the Unix time: above any number issued


def test_bidirectional_boards_sign_export_too_and_meter_errors_are_flagged(tmp_path: Path) -> None:
    signer = _signer(tmp_path)
    readings = [
        (SignedReading(T0, 5_000.0, 2_000.0), "B"),
        (SignedReading(T0 + timedelta(hours=2), 6_000.0, 9_000.0), "P"),
    ]
    record = signer.transaction_record(METER, WHO, readings, bidirectional=True, meter_error=True)
    rd = ocmf.parse(record).payload["RD"]
    assert [(r["TX"], r["RI"], r["RV"], r.get("EF"), r["ST"]) for r in rd] == [
        ("B", OBIS_IMPORT, 5.0, "E", "E"),
        ("B", OBIS_EXPORT, 2.0, "E", "E"),
        ("P", OBIS_IMPORT, 6.0, "E", "E"),
        ("P", OBIS_EXPORT, 9.0, "E", "E"),
    ]


def test_a_tampered_record_fails_verification(tmp_path: Path) -> None:
    signer = _signer(tmp_path)
    record = _session_record(signer)
    forged = record.replace('"RV":19.34', '"RV":29.34')
    assert forged != record
    with pytest.raises(ocmf.OcmfError, match="signature does not match"):
        ocmf.verify(forged, ocmf.public_key_from(signer.public_key_hex))


@pytest.mark.parametrize(
    ("reason", "tx"),
    [
        ("Local", "L"),
        ("Remote", "R"),
        ("PowerLoss", "P"),
        ("EmergencyStop", "A"),
        ("Reboot", "A"),
        ("EVDisconnected", "E"),
        ("Other", "E"),
        (None, "E"),
    ],
)
def test_end_reading_type_per_stop_reason(reason: str | None, tx: str) -> None:
    assert end_type(reason) == tx


def test_counter_file_is_written_before_the_record_is_handed_out(tmp_path: Path) -> None:
    signer = _signer(tmp_path)
    _session_record(signer)
    assert json.loads((tmp_path / "ocmf-pagination.json").read_text()) == {"T": 2, "F": 1}
