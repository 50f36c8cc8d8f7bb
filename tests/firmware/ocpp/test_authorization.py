"""Local authorisation: SendLocalList semantics, the cache (LRU, expiry, lifetime), the offline policy."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.ocpp.authorization import (
    AuthCache,
    AuthInfo,
    AuthPolicy,
    AuthStoreError,
    Decision,
    LocalAuthList,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PAST = "2024-04-30T00:00:00Z"
FUTURE = "2024-06-01T00:00:00Z"


def v16(
    id_tag: str, status: str | None = "Accepted", expiry: str | None = None, parent: str | None = None
) -> dict[str, Any]:
    entry: dict[str, Any] = {"idTag": id_tag}
    if status is not None:
        entry["idTagInfo"] = {"status": status}
        if expiry is not None:
            entry["idTagInfo"]["expiryDate"] = expiry
        if parent is not None:
            entry["idTagInfo"]["parentIdTag"] = parent
    return entry


def v201(
    id_token: str, status: str | None = "Accepted", expiry: str | None = None, kind: str = "ISO14443"
) -> dict[str, Any]:
    entry: dict[str, Any] = {"idToken": {"idToken": id_token, "type": kind}}
    if status is not None:
        entry["idTokenInfo"] = {"status": status}
        if expiry is not None:
            entry["idTokenInfo"]["cacheExpiryDateTime"] = expiry
    return entry


def ids(local: LocalAuthList) -> dict[str, str]:
    return {e.id_token: e.status for e in local.entries()}


# ---------------------------------------------------------------------- the local list


def test_full_update_in_the_1_6_shape() -> None:
    local = LocalAuthList(None)
    assert local.version == 0
    status = local.send_local_list(3, "Full", [v16("AA11", parent="GROUP"), v16("BB22", "Blocked", FUTURE)])
    assert status == "Accepted"
    assert local.version == 3
    info = local.lookup("aa11")  # identifiers are case-insensitive
    assert info is not None
    assert (info.id_token, info.status, info.parent_id, info.expiry) == ("AA11", "Accepted", "GROUP", None)
    blocked = local.lookup("BB22")
    assert blocked is not None and blocked.expiry == datetime(2024, 6, 1, tzinfo=UTC)
    assert local.lookup("CC33") is None


def test_full_update_in_the_2_0_1_shape() -> None:
    local = LocalAuthList(None)
    group = {"status": "Accepted", "groupIdToken": {"idToken": "FLEET", "type": "Central"}}
    entries = [v201("04A1B2", expiry=FUTURE), {"idToken": {"idToken": "EMAID1", "type": "eMAID"}, "idTokenInfo": group}]
    assert local.send_local_list(1, "Full", entries) == "Accepted"
    card = local.lookup("04a1b2")
    assert card is not None and card.token_type == "ISO14443" and card.expiry == datetime(2024, 6, 1, tzinfo=UTC)
    emaid = local.lookup("EMAID1", token_type="eMAID")
    assert emaid is not None and emaid.parent_id == "FLEET"
    assert emaid.info == group  # kept as received, for the answers that echo it
    assert local.lookup("EMAID1", token_type="ISO14443") is None


def test_snake_case_entries_are_read() -> None:
    local = LocalAuthList(None)
    entry = {"id_tag": "AA11", "id_tag_info": {"status": "Accepted", "expiry_date": FUTURE, "parent_id_tag": "P"}}
    assert local.send_local_list(1, "Full", [entry]) == "Accepted"
    info = local.lookup("AA11")
    assert info is not None and info.parent_id == "P" and info.expiry is not None


def test_full_replaces_and_differential_merges() -> None:
    local = LocalAuthList(None)
    assert local.send_local_list(1, "Full", [v16("A"), v16("B"), v16("C")]) == "Accepted"
    # Differential: C updated, D added, B removed (no info), E removed although absent (no-op).
    diff = [v16("C", "Blocked"), v16("D"), v16("B", None), v16("E", None)]
    assert local.send_local_list(2, "Differential", diff) == "Accepted"
    assert ids(local) == {"A": "Accepted", "C": "Blocked", "D": "Accepted"}
    assert local.version == 2
    assert local.send_local_list(5, "Full", [v16("Z")]) == "Accepted"
    assert ids(local) == {"Z": "Accepted"}


VERSIONS = [
    # (current version, update type, new version, status)
    (5, "Differential", 4, "VersionMismatch"),
    (5, "Differential", 5, "VersionMismatch"),
    (5, "Differential", 6, "Accepted"),
    (5, "Full", 4, "Accepted"),  # a full list replaces whatever was there
    (5, "Full", 5, "Accepted"),
    (5, "Full", -1, "Failed"),
    (5, "Differential", -1, "Failed"),  # not a version at all
    (5, "Full", 0, "Failed"),  # 0 means "no list": not with entries
]


@pytest.mark.parametrize(("current", "update_type", "version", "status"), VERSIONS)
def test_versions(current: int, update_type: str, version: int, status: str) -> None:
    local = LocalAuthList(None)
    assert local.send_local_list(current, "Full", [v16("A")]) == "Accepted"
    assert local.send_local_list(version, update_type, [v16("B")]) == status
    if status == "Accepted":
        assert local.version == version and local.lookup("B") is not None
    else:
        assert local.version == current and ids(local) == {"A": "Accepted"}


def test_an_empty_full_list_clears_and_reports_version_0() -> None:
    local = LocalAuthList(None)
    assert local.send_local_list(4, "Full", [v16("A")]) == "Accepted"
    assert local.send_local_list(7, "Full", []) == "Accepted"
    assert len(local) == 0 and local.version == 0
    # the stored version still guards against a replayed differential
    assert local.send_local_list(6, "Differential", [v16("B")]) == "VersionMismatch"
    assert local.send_local_list(0, "Full", None) == "Accepted"


FAILED = [
    pytest.param("Full", [v16("A", None)], id="full-entry-without-info"),
    pytest.param("Full", [v16("A"), v16("a")], id="same-id-twice"),
    pytest.param("Full", [v16("A", "Sleeping")], id="unknown-status"),
    pytest.param("Full", [v16("A", expiry="tomorrow")], id="bad-expiry"),
    pytest.param("Full", [v16("")], id="empty-id"),
    pytest.param("Full", [{"idTag": 7, "idTagInfo": {"status": "Accepted"}}], id="id-not-string"),
    pytest.param(
        "Full", [{"idToken": {"idToken": "A"}, "idTokenInfo": {"status": "Accepted"}}], id="token-without-type"
    ),
    pytest.param("Full", [{"idTagInfo": {"status": "Accepted"}}], id="no-id"),
    pytest.param("Full", ["A"], id="entry-not-object"),
    pytest.param("Differential", [v16("B"), {"idTag": "C", "idTagInfo": "Accepted"}], id="info-not-object"),
    pytest.param("Partial", [v16("A")], id="unknown-update-type"),
]


@pytest.mark.parametrize(("update_type", "entries"), FAILED)
def test_a_bad_update_fails_and_changes_nothing(update_type: str, entries: list[Any]) -> None:
    local = LocalAuthList(None)
    assert local.send_local_list(1, "Full", [v16("KEEP")]) == "Accepted"
    assert local.send_local_list(2, update_type, entries) == "Failed"
    assert ids(local) == {"KEEP": "Accepted"} and local.version == 1


def test_local_auth_list_max_length_is_enforced() -> None:
    local = LocalAuthList(None, max_length=3, max_per_message=10)
    assert local.send_local_list(1, "Full", [v16("A"), v16("B"), v16("C")]) == "Accepted"
    assert local.send_local_list(2, "Differential", [v16("D")]) == "Failed"
    assert local.send_local_list(2, "Differential", [v16("D"), v16("A", None)]) == "Accepted"  # net size 3
    assert local.send_local_list(3, "Full", [v16(str(n)) for n in range(4)]) == "Failed"
    assert set(ids(local)) == {"B", "C", "D"}


def test_send_local_list_max_length_is_enforced() -> None:
    local = LocalAuthList(None, max_per_message=2)
    assert local.send_local_list(1, "Full", [v16("A"), v16("B"), v16("C")]) == "Failed"
    assert local.send_local_list(1, "Full", [v16("A"), v16("B")]) == "Accepted"


def test_the_local_list_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "local-list.json"
    local = LocalAuthList(path)
    assert local.send_local_list(9, "Full", [v16("AA", expiry=FUTURE, parent="P"), v201("BB", "Blocked")]) == "Accepted"
    reopened = LocalAuthList(path)
    assert reopened.version == 9
    assert reopened.entries() == local.entries()
    bb = reopened.lookup("bb")
    assert bb is not None and bb.token_type == "ISO14443" and bb.status == "Blocked"
    assert path.stat().st_mode & 0o077 == 0


def test_a_failed_write_fails_the_update(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "local-list.json"
    local = LocalAuthList(path)
    assert local.send_local_list(1, "Full", [v16("A")]) == "Accepted"

    def power_cut(src: object, dst: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", power_cut)
    assert local.send_local_list(2, "Differential", [v16("B")]) == "Failed"
    monkeypatch.undo()
    assert ids(local) == {"A": "Accepted"} and local.version == 1
    assert ids(LocalAuthList(path)) == {"A": "Accepted"}
    assert [p.name for p in tmp_path.iterdir()] == ["local-list.json"]


LIST_FILES = [
    pytest.param(b'{"format": 1, "version": 3, "entries": [{"id": "A", "type": null, "info": {"sta', id="torn"),
    pytest.param(b"null", id="null"),
    pytest.param(b'{"format": 1, "version": -2, "entries": []}', id="negative-version"),
    pytest.param(b'{"format": 1, "version": 1, "entries": {}}', id="entries-not-list"),
    pytest.param(
        b'{"format": 1, "version": 1, "entries": [{"id": "A", "info": {"status": "Maybe"}}]}', id="bad-status"
    ),
    pytest.param(b'{"format": 1, "version": 1, "entries": [{"id": "", "info": {"status": "Accepted"}}]}', id="bad-id"),
]


@pytest.mark.parametrize("content", LIST_FILES)
def test_a_corrupt_local_list_file(tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "local-list.json"
    path.write_bytes(content)
    with pytest.raises(AuthStoreError) as caught:
        LocalAuthList(path)
    assert caught.value.path == path and "local list" in str(caught.value)
    local = LocalAuthList(path, recover=True)
    assert len(local) == 0 and local.version == 0
    assert "starting from defaults" in caplog.text
    assert (tmp_path / "local-list.json.corrupt").read_bytes() == content


@st.composite
def list_updates(draw: st.DrawFn) -> list[tuple[str, list[dict[str, Any]]]]:
    names = st.sampled_from(["A", "b", "B", "c", "D", "e"])
    updates = []
    for _ in range(draw(st.integers(1, 8))):
        update_type = draw(st.sampled_from(["Full", "Differential"]))
        chosen = draw(st.lists(names, unique_by=str.casefold, max_size=4))
        entries = []
        for name in chosen:
            status = draw(
                st.sampled_from(["Accepted", "Blocked", None if update_type == "Differential" else "Invalid"])
            )
            entries.append(v16(name, status))
        updates.append((update_type, entries))
    return updates


@settings(max_examples=200, deadline=None)
@given(list_updates())
def test_updates_match_a_dictionary_model(updates: list[tuple[str, list[dict[str, Any]]]]) -> None:
    """Full = replace, Differential = upsert with info / delete without, keys case-insensitive."""
    local = LocalAuthList(None)
    model: dict[str, str] = {}
    for version, (update_type, entries) in enumerate(updates, start=1):
        assert local.send_local_list(version, update_type, entries) == "Accepted"
        if update_type == "Full":
            model = {}
        for entry in entries:
            key = entry["idTag"].casefold()
            if "idTagInfo" in entry:
                model[key] = entry["idTagInfo"]["status"]
            else:
                model.pop(key, None)
        assert {k.casefold(): v for k, v in ids(local).items()} == model
        assert local.version == (version if model else 0)


# ---------------------------------------------------------------------- the cache


def test_cache_stores_answers_of_both_versions() -> None:
    cache = AuthCache(None)
    assert cache.update("AA", {"status": "Accepted", "expiryDate": FUTURE, "parentIdTag": "P"}, now=NOW)
    assert cache.update("BB", {"status": "Blocked", "cacheExpiryDateTime": FUTURE}, now=NOW, token_type="ISO14443")
    aa, bb = cache.lookup("aa", now=NOW), cache.lookup("BB", now=NOW)
    assert aa is not None and aa.parent_id == "P" and aa.authorises(NOW)
    assert bb is not None and bb.status == "Blocked" and bb.token_type == "ISO14443" and not bb.authorises(NOW)
    assert cache.update("AA", {"status": "Invalid"}, now=NOW)  # every answer replaces the last one
    aa = cache.lookup("AA", now=NOW)
    assert aa is not None and aa.status == "Invalid"


def test_an_accepted_entry_past_its_expiry_is_expired() -> None:
    cache = AuthCache(None)
    cache.update("AA", {"status": "Accepted", "expiryDate": "2024-05-01T13:00:00Z"}, now=NOW)
    info = cache.lookup("AA", now=NOW)
    assert info is not None and info.effective_status(NOW) == "Accepted"
    later = NOW + timedelta(hours=1)
    info = cache.lookup("AA", now=later)
    assert info is not None and info.effective_status(later) == "Expired" and not info.authorises(later)


def test_an_expiry_without_a_zone_is_utc() -> None:
    cache = AuthCache(None)
    assert cache.update("AA", {"status": "Accepted", "expiryDate": "2024-05-01T12:30:00"}, now=NOW)
    info = cache.lookup("AA", now=NOW)
    assert info is not None and info.expiry == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


def test_lifetime_drops_entries_not_used_for_that_long() -> None:
    cache = AuthCache(None, lifetime_s=3600)
    cache.update("AA", {"status": "Accepted"}, now=NOW)
    cache.update("BB", {"status": "Accepted"}, now=NOW)
    assert cache.lookup("AA", now=NOW + timedelta(minutes=50)) is not None  # used: its hour starts again
    assert cache.lookup("AA", now=NOW + timedelta(minutes=100)) is not None
    assert cache.lookup("BB", now=NOW + timedelta(minutes=100)) is None
    assert cache.lookup("AA", now=NOW + timedelta(minutes=160)) is None
    assert len(cache) == 0


def test_least_recently_used_is_evicted() -> None:
    cache = AuthCache(None, max_entries=3)
    for n, name in enumerate(["A", "B", "C"]):
        cache.update(name, {"status": "Accepted"}, now=NOW + timedelta(seconds=n))
    assert cache.lookup("A", now=NOW + timedelta(seconds=5)) is not None  # A is now the most recent
    cache.update("D", {"status": "Accepted"}, now=NOW + timedelta(seconds=6))
    assert cache.lookup("B", now=NOW) is None
    assert all(cache.lookup(n, now=NOW + timedelta(seconds=7)) is not None for n in ("A", "C", "D"))
    cache.update("C", {"status": "Accepted"}, now=NOW + timedelta(seconds=8))  # an update also counts as a use
    cache.update("E", {"status": "Accepted"}, now=NOW + timedelta(seconds=9))
    assert cache.lookup("A", now=NOW) is None
    assert len(cache) == 3


def test_expired_entries_are_evicted_before_the_least_recently_used() -> None:
    cache = AuthCache(None, max_entries=2)
    cache.update("OLD", {"status": "Accepted"}, now=NOW)
    cache.update("GONE", {"status": "Accepted", "expiryDate": PAST}, now=NOW + timedelta(seconds=1))
    cache.update("NEW", {"status": "Accepted"}, now=NOW + timedelta(seconds=2))
    assert cache.lookup("GONE", now=NOW) is None
    assert cache.lookup("OLD", now=NOW) is not None


@pytest.mark.parametrize(
    "info",
    [{}, {"status": "Whatever"}, {"status": "Accepted", "expiryDate": "soon"}, "Accepted", None, {"status": 1}],
)
def test_a_malformed_answer_is_not_cached(info: Any, caplog: pytest.LogCaptureFixture) -> None:
    cache = AuthCache(None)
    assert cache.update("AA", info, now=NOW) is False
    assert cache.lookup("AA", now=NOW) is None
    assert "not caching" in caplog.text


def test_concurrent_tx_is_not_cached() -> None:
    cache = AuthCache(None)
    cache.update("AA", {"status": "Accepted"}, now=NOW)
    assert cache.update("AA", {"status": "ConcurrentTx"}, now=NOW) is False
    info = cache.lookup("AA", now=NOW)
    assert info is not None and info.status == "Accepted"


def test_clear_cache(tmp_path: Path) -> None:
    path = tmp_path / "auth-cache.json"
    cache = AuthCache(path)
    cache.update("AA", {"status": "Accepted"}, now=NOW)
    assert cache.clear() is True
    assert len(cache) == 0 and cache.lookup("AA", now=NOW) is None
    assert len(AuthCache(path)) == 0


def test_the_cache_survives_a_reopen_with_its_order(tmp_path: Path) -> None:
    path = tmp_path / "auth-cache.json"
    cache = AuthCache(path, max_entries=2)
    cache.update("A", {"status": "Accepted", "expiryDate": FUTURE}, now=NOW)
    cache.update("B", {"status": "Blocked"}, now=NOW + timedelta(seconds=1))
    reopened = AuthCache(path, max_entries=2)
    a, b = reopened.lookup("A", now=NOW), reopened.lookup("B", now=NOW)
    assert a is not None and a.expiry == datetime(2024, 6, 1, tzinfo=UTC)
    assert b is not None and b.status == "Blocked"
    again = AuthCache(path, max_entries=2)  # A is the least recently used on file
    again.update("C", {"status": "Accepted"}, now=NOW + timedelta(seconds=2))
    assert again.lookup("A", now=NOW) is None and again.lookup("B", now=NOW) is not None


def test_the_cache_file_keeps_the_last_use_for_the_lifetime(tmp_path: Path) -> None:
    path = tmp_path / "auth-cache.json"
    AuthCache(path, lifetime_s=60).update("A", {"status": "Accepted"}, now=NOW)
    assert AuthCache(path, lifetime_s=60).lookup("A", now=NOW + timedelta(seconds=59)) is not None
    assert AuthCache(path, lifetime_s=60).lookup("A", now=NOW + timedelta(seconds=60)) is None


def test_a_failed_cache_write_keeps_the_old_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "auth-cache.json"
    cache = AuthCache(path)
    cache.update("A", {"status": "Accepted"}, now=NOW)

    def power_cut(src: object, dst: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", power_cut)
    assert cache.update("A", {"status": "Blocked"}, now=NOW) is False
    assert cache.clear() is False
    monkeypatch.undo()
    info = cache.lookup("A", now=NOW)
    assert info is not None and info.status == "Accepted"


CACHE_FILES = [
    pytest.param(b'{"format": 1, "entries": [{"id": "A", "ty', id="torn"),
    pytest.param(b'{"format": 1}', id="no-entries"),
    pytest.param(b'{"format": 1, "entries": [{"id": "A", "info": {"status": "Accepted"}}]}', id="no-last-use"),
    pytest.param(
        b'{"format": 1, "entries": [{"id": "A", "info": {"status": "Accepted"}, "lastUsed": "yesterday"}]}',
        id="bad-last-use",
    ),
]


@pytest.mark.parametrize("content", CACHE_FILES)
def test_a_corrupt_cache_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "auth-cache.json"
    path.write_bytes(content)
    with pytest.raises(AuthStoreError, match="authorisation cache"):
        AuthCache(path)
    assert len(AuthCache(path, recover=True)) == 0
    assert (tmp_path / "auth-cache.json.corrupt").exists()


# ---------------------------------------------------------------------- the policy


def _policy() -> AuthPolicy:
    local = LocalAuthList(None)
    local.send_local_list(
        1,
        "Full",
        [
            v16("LIST-OK"),
            v16("LIST-BLOCKED", "Blocked"),
            v16("LIST-EXPIRED", "Accepted", PAST),
            v16("LIST-INVALID", "Invalid"),
            v16("BOTH", "Blocked"),
            v16("BOTH-OK"),
        ],
    )
    cache = AuthCache(None)
    cache.update("CACHE-OK", {"status": "Accepted", "expiryDate": FUTURE}, now=NOW)
    cache.update("CACHE-BLOCKED", {"status": "Blocked"}, now=NOW)
    cache.update("CACHE-EXPIRED", {"status": "Accepted", "expiryDate": PAST}, now=NOW)
    cache.update("BOTH", {"status": "Accepted"}, now=NOW)
    cache.update("BOTH-OK", {"status": "Blocked"}, now=NOW)
    return AuthPolicy(local, cache)


# Flags: L = local list enabled, C = cache enabled, P = LocalPreAuthorize, O = LocalAuthorizeOffline,
# U = AllowOfflineTxForUnknownId. A lower-case letter is the flag off.
POLICY: list[tuple[str, bool, str, str, str, str]] = [
    # id, online, flags, action, status, source
    # ---- online without LocalPreAuthorize: the CSMS decides, whatever is known locally
    ("LIST-OK", True, "LCpOU", "ask_csms", "Unknown", "csms"),
    ("CACHE-OK", True, "LCpOU", "ask_csms", "Unknown", "csms"),
    ("NOBODY", True, "LCpOU", "ask_csms", "Unknown", "csms"),
    # ---- online with LocalPreAuthorize: valid local entries start at once
    ("LIST-OK", True, "LCPou", "accept", "Accepted", "local_list"),
    ("CACHE-OK", True, "LCPou", "accept", "Accepted", "cache"),
    ("LIST-OK", True, "lCPou", "ask_csms", "Unknown", "csms"),  # list disabled
    ("CACHE-OK", True, "LcPou", "ask_csms", "Unknown", "csms"),  # cache disabled
    ("LIST-BLOCKED", True, "LCPOU", "ask_csms", "Blocked", "csms"),  # the CSMS may know better
    ("LIST-EXPIRED", True, "LCPOU", "ask_csms", "Expired", "csms"),
    ("CACHE-EXPIRED", True, "LCPOU", "ask_csms", "Expired", "csms"),
    ("NOBODY", True, "LCPOU", "ask_csms", "Unknown", "csms"),
    ("BOTH", True, "LCPOU", "ask_csms", "Blocked", "csms"),  # the list entry, not the cache's, counts
    ("BOTH", True, "lCPOU", "accept", "Accepted", "cache"),
    ("BOTH-OK", True, "LCPOU", "accept", "Accepted", "local_list"),
    # ---- offline with LocalAuthorizeOffline
    ("LIST-OK", False, "LCpOu", "accept", "Accepted", "local_list"),
    ("CACHE-OK", False, "LCpOu", "accept", "Accepted", "cache"),
    ("LIST-OK", False, "lCpOu", "reject", "Invalid", "offline_policy"),
    ("CACHE-OK", False, "LcpOu", "reject", "Invalid", "offline_policy"),
    ("BOTH", False, "LCpOU", "reject", "Blocked", "local_list"),
    ("BOTH", False, "lCpOu", "accept", "Accepted", "cache"),
    ("BOTH-OK", False, "LCpOu", "accept", "Accepted", "local_list"),
    # ---- offline: a blocked, invalid or expired entry never authorises
    ("LIST-BLOCKED", False, "LCPOU", "reject", "Blocked", "local_list"),
    ("LIST-INVALID", False, "LCPOU", "reject", "Invalid", "local_list"),
    ("LIST-EXPIRED", False, "LCPOU", "reject", "Expired", "local_list"),
    ("CACHE-BLOCKED", False, "LCPOU", "reject", "Blocked", "cache"),
    ("CACHE-EXPIRED", False, "LCPOU", "reject", "Expired", "cache"),
    ("LIST-BLOCKED", False, "LCpoU", "reject", "Blocked", "local_list"),
    ("CACHE-BLOCKED", False, "LCpoU", "reject", "Blocked", "cache"),
    # ---- offline, unknown identifiers
    ("NOBODY", False, "LCpOU", "accept", "Accepted", "offline_policy"),
    ("NOBODY", False, "LCpOu", "reject", "Invalid", "offline_policy"),
    ("NOBODY", False, "lcpoU", "accept", "Accepted", "offline_policy"),
    # a blocked id whose list is disabled is unknown: the offline policy decides
    ("LIST-BLOCKED", False, "lCpOU", "accept", "Accepted", "offline_policy"),
    ("LIST-BLOCKED", False, "lCpOu", "reject", "Invalid", "offline_policy"),
    # ---- offline without LocalAuthorizeOffline: valid local entries do not accept, the id is "unknown"
    ("LIST-OK", False, "LCpou", "reject", "Invalid", "offline_policy"),
    ("CACHE-OK", False, "LCpou", "reject", "Invalid", "offline_policy"),
    ("LIST-OK", False, "LCpoU", "accept", "Accepted", "offline_policy"),
    ("list-ok", False, "LCpOu", "accept", "Accepted", "local_list"),  # case-insensitive
]


class Flags(TypedDict):
    local_list_enabled: bool
    cache_enabled: bool
    local_pre_authorize: bool
    local_authorize_offline: bool
    allow_offline_unknown: bool


def _flags(flags: str) -> Flags:
    assert len(flags) == 5
    on = [letter.isupper() for letter in flags]
    return Flags(
        local_list_enabled=on[0],
        cache_enabled=on[1],
        local_pre_authorize=on[2],
        local_authorize_offline=on[3],
        allow_offline_unknown=on[4],
    )


@pytest.mark.parametrize(("id_token", "online", "flags", "action", "status", "source"), POLICY)
def test_policy(id_token: str, online: bool, flags: str, action: str, status: str, source: str) -> None:
    decision = _policy().decide(id_token, online=online, now=NOW, **_flags(flags))
    assert (decision.action, decision.status, decision.source) == (action, status, source)


def test_expiry_is_judged_at_the_time_given() -> None:
    policy = _policy()
    flags = _flags("LCpOu")
    assert policy.decide("CACHE-OK", online=False, now=NOW, **flags).action == "accept"
    later = datetime(2024, 6, 1, tzinfo=UTC)
    decision = policy.decide("CACHE-OK", online=False, now=later, **flags)
    assert (decision.action, decision.status) == ("reject", "Expired")


@dataclass
class Settings:
    local_list_enabled: bool = True
    cache_enabled: bool = True
    local_pre_authorize: bool = False
    local_authorize_offline: bool = True
    allow_offline_unknown: bool = False


def test_flags_from_a_settings_object_and_stores_per_call() -> None:
    policy = _policy()
    local, cache = policy.local_list, policy.cache
    bare = AuthPolicy()
    decision = bare.decide("LIST-OK", online=False, now=NOW, settings=Settings(), local_list=local, cache=cache)
    assert decision == Decision("accept", "Accepted", "local_list", decision.info)
    assert isinstance(decision.info, AuthInfo) and decision.info.id_token == "LIST-OK"
    # an explicit flag wins over the settings object
    decision = bare.decide(
        "NOBODY", online=False, now=NOW, settings=Settings(), allow_offline_unknown=True, local_list=local, cache=cache
    )
    assert decision.action == "accept"
    with pytest.raises(ValueError, match="local_pre_authorize"):
        bare.decide("LIST-OK", online=True, now=NOW)


def test_the_policy_reads_the_cache_files_it_is_given(tmp_path: Path) -> None:
    """The cache's answers decide offline after a restart."""
    path = tmp_path / "auth-cache.json"
    AuthCache(path).update("AA", {"status": "Accepted"}, now=NOW)
    policy = AuthPolicy(LocalAuthList(None), AuthCache(path))
    assert policy.decide("AA", online=False, now=NOW, **_flags("LCpOu")).source == "cache"
    stored = json.loads(path.read_text())
    assert [e["id"] for e in stored["entries"]] == ["AA"]
