"""OCMF records: signed with the station's key, verified by `cryptography` and, as a second independent
path, by the OpenSSL command line tool; tampering, malformed records and the key file."""

from __future__ import annotations

import base64
import json
import math
import shutil
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.metering.ocmf import (
    Identity,
    MeterInfo,
    OcmfError,
    Reading,
    load_or_create_key,
    ocmf_time,
    parse,
    payload,
    public_key_from,
    public_key_hex,
    sign,
    verify,
)

T0 = datetime(2026, 3, 2, 8, 0, 0, 123000, tzinfo=timezone(timedelta(hours=1)))
METER = MeterInfo(serial="EVSE-0001", charge_controller_fw="evse-firmware 0.1.0")
CARD = Identity(id_value="04A2B3C4", id_type="ISO14443", level="HEARSAY", flags=("RFID_PLAIN", "OCPP_RS_TLS"))


def _record(key_path: Path, start_kwh: float = 1234.56, end_kwh: float = 1241.02) -> str:
    key = load_or_create_key(key_path)
    readings = [
        Reading(ocmf_time(T0), start_kwh, "B"),
        Reading(ocmf_time(T0 + timedelta(hours=1)), end_kwh, "E"),
    ]
    return sign(payload(METER, "T1", CARD, readings), key)


def test_a_signed_record_verifies_and_reads_back(tmp_path: Path) -> None:
    key_path = tmp_path / "ocmf.key"
    record = _record(key_path)
    assert record.startswith("OCMF|{") and record.count("|") == 2
    parsed = verify(record, public_key_from(public_key_hex(load_or_create_key(key_path))))
    assert parsed.payload["PG"] == "T1" and parsed.payload["MS"] == "EVSE-0001"
    assert [r["TX"] for r in parsed.payload["RD"]] == ["B", "E"]
    assert parsed.payload["RD"][0]["TM"] == "2026-03-02T08:00:00,123+0100 S"
    assert parsed.payload["IT"] == "ISO14443" and parsed.payload["IF"] == ["RFID_PLAIN", "OCPP_RS_TLS"]
    assert parsed.signature["SA"] == "ECDSA-secp256r1-SHA256"


def test_the_key_is_created_once_private_and_reused(tmp_path: Path) -> None:
    key_path = tmp_path / "keys" / "ocmf.key"
    first = public_key_hex(load_or_create_key(key_path))
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert public_key_hex(load_or_create_key(key_path)) == first
    key_path.write_text("not a key")
    with pytest.raises(OcmfError, match="cannot read the OCMF signing key"):
        load_or_create_key(key_path)


def _flip_signature_digit(record: str) -> str:
    head, sig = record.rsplit("|", 1)
    digits = json.loads(sig)["SD"]
    flipped = digits[:-1] + ("0" if digits[-1] != "0" else "1")
    return f"{head}|" + sig.replace(digits, flipped)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda r: r.replace('"RV":1241.02', '"RV":1251.02'), "does not match"),  # the energy
        (lambda r: r.replace('"TX":"B"', '"TX":"C"'), "does not match"),
        (lambda r: r.replace('{"FV"', '{ "FV"'), "does not match"),  # even whitespace counts
        (_flip_signature_digit, "does not match"),
    ],
)
def test_any_change_breaks_the_signature(tmp_path: Path, tamper: object, message: str) -> None:
    key_path = tmp_path / "ocmf.key"
    record = _record(key_path)
    changed = tamper(record)  # type: ignore[operator]
    assert changed != record
    with pytest.raises(OcmfError, match=message):
        verify(changed, public_key_from(public_key_hex(load_or_create_key(key_path))))


def test_another_key_does_not_verify(tmp_path: Path) -> None:
    record = _record(tmp_path / "a.key")
    other = public_key_from(public_key_hex(load_or_create_key(tmp_path / "b.key")))
    with pytest.raises(OcmfError, match="does not match"):
        verify(record, other)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ("", "starts with 'OCMF|'"),
        ("OCMF|{}", "3 sections"),
        ("OCMF|{}|{}|{}", "3 sections"),
        ("OCMF|not json|{}", "not JSON"),
        ('OCMF|[1]|{"SD":"00"}', "JSON objects"),
        ('OCMF|{"FV":"1.0","PG":"T1","MS":"x"}|{"SD":"00"}', "lacks RD"),
        ('OCMF|{"FV":"1.0","PG":"T1","MS":"x","RD":[]}|{"SD":"00"}', "non-empty"),
        ('OCMF|{"FV":"1.0","PG":"T1","MS":"x","RD":[{}]}|{"SA":"RSA","SD":"00"}', "not supported"),
        ('OCMF|{"FV":"1.0","PG":"T1","MS":"x","RD":[{}]}|{"SD":"zz"}', "not valid hex"),
    ],
)
def test_malformed_records_get_a_clear_error(tmp_path: Path, record: str, message: str) -> None:
    key = public_key_from(public_key_hex(load_or_create_key(tmp_path / "k.key")))
    with pytest.raises(OcmfError, match=message):
        verify(record, key)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: payload(METER, "T01", CARD, [Reading(ocmf_time(T0), 1.0)]), "leading zeros"),
        (lambda: payload(METER, "T1", CARD, []), "at least one reading"),
        (lambda: payload(METER, "T1", CARD, [Reading("2026-03-02 08:00", 1.0)]), "reading time"),
        (lambda: payload(METER, "T1", CARD, [Reading(ocmf_time(T0), 1.0, "Q")]), "not OCMF values"),
        (lambda: ocmf_time(datetime(2026, 1, 1)), "no time zone"),
    ],
)
def test_bad_records_are_refused_when_built(build: object, message: str) -> None:
    with pytest.raises(OcmfError, match=message):
        build()  # type: ignore[operator]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the OpenSSL command line tool is not installed")
def test_openssl_verifies_our_signature_independently(tmp_path: Path) -> None:
    """A second, separate verification path: OpenSSL's own ECDSA over the payload bytes as written."""
    key_path = tmp_path / "ocmf.key"
    record = _record(key_path)
    parsed = parse(record)
    (tmp_path / "payload.txt").write_bytes(parsed.payload_text.encode("utf-8"))
    (tmp_path / "sig.der").write_bytes(parsed.signature_der)
    public = load_or_create_key(key_path).public_key()
    (tmp_path / "pub.pem").write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    command = ["openssl", "dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig.der", "payload.txt"]
    ok = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False)
    assert ok.returncode == 0 and "Verified OK" in ok.stdout
    (tmp_path / "payload.txt").write_bytes(parsed.payload_text.replace("1241.02", "1241.03").encode())
    bad = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False)
    assert bad.returncode != 0


def test_evse_ocmf_verify_on_the_command_line(tmp_path: Path) -> None:
    key_path = tmp_path / "ocmf.key"
    record = _record(key_path)
    (tmp_path / "record.txt").write_text(record)
    public = public_key_hex(load_or_create_key(key_path))
    cli = [sys.executable, "-m", "firmware.cli", "ocmf", "verify"]
    good = subprocess.run([*cli, "--file", str(tmp_path / "record.txt"), "--public-key", public],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert good.returncode == 0 and good.stdout.startswith("VALID: meter EVSE-0001, T1: B 1234.56 kWh")
    tampered = record.replace("1241.02", "9241.02")
    bad = subprocess.run(
        [*cli, tampered, "--public-key", public], capture_output=True, text=True, timeout=60, check=False
    )
    assert bad.returncode == 1 and bad.stdout.startswith("INVALID")


def test_evse_ocmf_verify_takes_what_a_csms_received(tmp_path: Path) -> None:
    """An OCPP 1.6 SignedData value (JSON with the base64 record) or a 2.0.1 signedMeterData (base64),
    with the 2.0.1 publicKey (base64 DER): pasted as the CSMS logged them."""
    key_path = tmp_path / "ocmf.key"
    record = _record(key_path)
    der = bytes.fromhex(public_key_hex(load_or_create_key(key_path)))
    b64_record = base64.b64encode(record.encode()).decode()
    value_16 = json.dumps({"signedMeterValue": b64_record, "encodingMethod": "OCMF", "publicKey": ""})
    cli = [sys.executable, "-m", "firmware.cli", "ocmf", "verify", "--public-key", base64.b64encode(der).decode()]
    for given_record in (value_16, b64_record):
        run = subprocess.run([*cli, given_record], capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 0 and run.stdout.startswith("VALID: meter EVSE-0001, T1"), run.stdout + run.stderr
    garbage = subprocess.run([*cli, "bm90IGEgcmVjb3Jk"], capture_output=True, text=True, timeout=60, check=False)
    assert garbage.returncode == 1 and "does not hold an OCMF record" in garbage.stdout


@settings(max_examples=30, deadline=None)
@given(
    start=st.floats(min_value=0, max_value=999_999, allow_nan=False),
    added=st.floats(min_value=0, max_value=500, allow_nan=False),
    tag=st.text(alphabet="0123456789ABCDEF", min_size=4, max_size=20),
)
def test_any_session_round_trips_through_sign_and_verify(tmp_path_factory: pytest.TempPathFactory,
                                                         start: float, added: float, tag: str) -> None:  # fmt: skip
    key = load_or_create_key(tmp_path_factory.getbasetemp() / "prop.key")
    readings = [Reading(ocmf_time(T0), start, "B"), Reading(ocmf_time(T0 + timedelta(minutes=90)), start + added, "E")]
    record = sign(payload(METER, "T7", Identity(tag, "ISO14443"), readings), key)
    parsed = verify(record, key.public_key())
    cut = [math.floor(v * 100 + 1e-6) / 100 for v in (start, start + added)]  # completed units, as a register
    assert [r["RV"] for r in parsed.payload["RD"]] == cut
    assert json.loads(parsed.payload_text)["ID"] == tag
