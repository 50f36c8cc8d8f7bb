"""The utility's signed ISM approval list: every way a list is refused, its expiry, and power-cut safety."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.j3072.approval import (
    ApprovalListError,
    ApprovalStore,
    document,
    load_trusted_keys,
    parse_and_verify,
    sign_list,
)

T0 = 1_800_000_000.0
DAY = 86400.0
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
ISM = "ACME/OBI/7K6A/J3072_202406"
TRUSTED = {"PG&E": KEY.public_key()}


def _doc(**change: Any) -> dict[str, Any]:
    base = document("PG&E", "PGE-BAY", 4, T0 - DAY, T0 + 30 * DAY, [ISM, "ZETA/V2G/A1/J3072_202103"])
    return {**base, **change}


def _signed(key: ec.EllipticCurvePrivateKey = KEY, **change: Any) -> bytes:
    return json.dumps(sign_list(_doc(**change), key)).encode()


def _tampered() -> bytes:
    signed = sign_list(_doc(), KEY)
    signed["ism_numbers"] = [*signed["ism_numbers"], "EVIL/X/1/J3072_202406"]
    return json.dumps(signed).encode()


def test_a_good_list_approves_its_numbers_only() -> None:
    store = ApprovalStore(None, TRUSTED, "PGE-BAY", wall_clock=lambda: T0)
    store.update(_signed())
    assert store.check(ISM).approved and store.check(f"  {ISM} ").approved
    check = store.check("ACME/OBI/9X/J3072_202406")
    assert (check.approved, check.reason) == (False, "ism_not_listed")


REFUSED: list[tuple[str, Callable[[], bytes], str]] = [
    ("tampered after signing", _tampered, "tampered"),
    ("signed by another key", lambda: _signed(OTHER_KEY), "tampered"),
    ("unknown issuer", lambda: _signed(issuer="Someone"), "not a trusted issuer"),
    ("another service area", lambda: _signed(service_area="SCE-1"), "service area"),
    ("expired", lambda: _signed(valid_until="2026-01-01T00:00:00Z", valid_from="2025-01-01T00:00:00Z"), "expired"),
    ("not yet valid", lambda: _signed(valid_from="2030-01-01T00:00:00Z", valid_until="2031-01-01T00:00:00Z"),
     "not valid yet"),
    ("not JSON", lambda: b"{nope", "not JSON"),
    ("unknown field", lambda: _signed(extra=1), "unknown field"),
    ("a number twice", lambda: _signed(ism_numbers=[ISM, ISM]), "twice"),
    ("bad time", lambda: _signed(valid_from="yesterday"), "RFC 3339"),
    ("too big", lambda: b" " * 300_000, "more than"),
    ("wrong format", lambda: _signed(format=2), "format"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_each_refusal_keeps_the_list_in_force(case: str, make: Callable[[], bytes], message: str) -> None:
    store = ApprovalStore(None, TRUSTED, "PGE-BAY", wall_clock=lambda: T0)
    store.update(_signed(serial=2))
    with pytest.raises(ApprovalListError, match=message):
        store.update(make())
    assert store.current is not None and store.current.serial == 2 and store.check(ISM).approved
    assert store.last_error is not None and message in store.last_error


def test_an_older_serial_is_a_replay() -> None:
    store = ApprovalStore(None, TRUSTED, "PGE-BAY", wall_clock=lambda: T0)
    store.update(_signed(serial=5))
    with pytest.raises(ApprovalListError, match="older"):
        store.update(_signed(serial=4))


def test_no_list_denies_and_says_why() -> None:
    store = ApprovalStore(None, TRUSTED, "PGE-BAY", wall_clock=lambda: T0)
    with pytest.raises(ApprovalListError):
        store.update(_tampered())
    check = store.check(ISM)
    assert (check.approved, check.reason) == (False, "no_list") and "tampered" in check.detail


def test_a_list_that_expires_stops_approving() -> None:
    now = [T0]
    store = ApprovalStore(None, TRUSTED, "PGE-BAY", wall_clock=lambda: now[0])
    store.update(_signed())
    assert store.check(ISM).approved
    now[0] = T0 + 31 * DAY
    check = store.check(ISM)
    assert (check.approved, check.reason) == (False, "list_expired")


def test_the_list_survives_a_restart_and_a_damaged_file_is_no_list(tmp_path: Path) -> None:
    path = tmp_path / "approvals.json"
    store = ApprovalStore(path, TRUSTED, "PGE-BAY", wall_clock=lambda: T0)
    store.update(_signed())
    again = ApprovalStore(path, TRUSTED, "PGE-BAY", wall_clock=lambda: T0 + 60 * DAY)
    again.load()
    assert again.current is not None and again.check(ISM).reason == "list_expired"  # loaded, then expired
    path.write_bytes(path.read_bytes().replace(b"ZETA", b"ZETB"))  # a damaged or edited file
    damaged = ApprovalStore(path, TRUSTED, "PGE-BAY", wall_clock=lambda: T0)
    damaged.load()
    assert damaged.current is None and damaged.check(ISM).reason == "no_list"
    assert damaged.last_error is not None and "tampered" in damaged.last_error


def test_a_refused_update_leaves_the_stored_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "approvals.json"
    store = ApprovalStore(path, TRUSTED, "PGE-BAY", wall_clock=lambda: T0)
    store.update(_signed())
    before = path.read_bytes()
    with pytest.raises(ApprovalListError):
        store.update(_tampered())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["approvals.json"]  # no temporary file left behind


SIGNED = _signed()


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_single_byte_change_is_refused_or_harmless(data: st.DataObject) -> None:
    signed = SIGNED  # one signature: ECDSA signatures differ in length, the draws must not
    i = data.draw(st.integers(min_value=0, max_value=len(signed) - 1))
    b = data.draw(st.integers(min_value=0, max_value=255).filter(lambda v: v != signed[i]))
    changed = signed[:i] + bytes([b]) + signed[i + 1 :]
    try:
        approvals = parse_and_verify(changed, TRUSTED, "PGE-BAY", T0)
    except ApprovalListError:
        return
    original = parse_and_verify(signed, TRUSTED, "PGE-BAY", T0)
    assert approvals == original  # only whitespace or an equivalent JSON spelling can survive


def test_trusted_keys_must_be_p256() -> None:
    pem = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert "PG&E" in load_trusted_keys({"PG&E": pem.decode()})
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    p384 = other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ApprovalListError, match="P-256"):
        load_trusted_keys({"X": p384.decode()})
    with pytest.raises(ApprovalListError, match="PEM"):
        load_trusted_keys({"X": "not a key"})


@pytest.mark.parametrize(
    ("case", "reason"),
    [("approved", "authorised"), ("unlisted", "ism_not_approved"), ("expired", "approval_list_expired"),
     ("tampered", "no_approval_list")],
)  # fmt: skip
def test_the_gate_with_the_real_list(case: str, reason: str) -> None:
    """The session asks the store at every step: each state of the list gives its own reason."""
    from tests.firmware.j3072.test_session import Rig

    now = [T0]
    store = ApprovalStore(None, TRUSTED, "PGE-BAY", wall_clock=lambda: now[0])
    if case == "tampered":
        with pytest.raises(ApprovalListError):
            store.update(_tampered())
    else:
        store.update(_signed())

    rig = Rig(approval=store.check)
    if case == "unlisted":
        rig.pev.ism = "ACME/OBI/9X/J3072_202406"
    rig.plug_in()
    rig.pev.connect_fully()
    if case == "expired":
        rig.advance(0.5)
        assert rig.session.authorised
        now[0] = T0 + 31 * DAY  # the list expires during the session: the next step withdraws discharge
    rig.advance(0.5)
    assert rig.session.decision is not None and rig.session.decision.reason == reason
