"""Local authorisation: the Local Authorization List, the Authorization Cache and the offline policy.

* :class:`LocalAuthList` -- the list the CSMS manages with SendLocalList (1.6 §5.15, 2.0.1 D01) and reads
  with GetLocalListVersion (1.6 §5.10, 2.0.1 D02). Entries come in either shape: 1.6
  ``{idTag, idTagInfo{status, expiryDate, parentIdTag}}`` or 2.0.1
  ``{idToken{idToken, type}, idTokenInfo{status, cacheExpiryDateTime, groupIdToken, ...}}`` (snake_case
  keys, as the ``ocpp`` package hands them to a handler, are read too).
* :class:`AuthCache` -- the CSMS's answers (Authorize, StartTransaction, StopTransaction, TransactionEvent)
  kept per identifier (1.6 §3.5.1 "Authorization Cache", 2.0.1 C10), cleared by ClearCache (1.6 §5.4, C11).
* :class:`AuthPolicy` -- who decides when an identifier is presented (1.6 §3.5, 2.0.1 C01/C12-C15).

1.6 §3.5.3 also says an identifier on the local list is not added to the cache; the caller, which knows
whether the list is enabled, skips :meth:`AuthCache.update` for such identifiers.

Identifiers match case-insensitively (1.6 IdToken is a CiString20; 2.0.1 IdTokenType: "case insensitive").
An entry authorises only when its status is Accepted and its expiry (expiryDate / cacheExpiryDateTime) is
still ahead; an Accepted entry past its expiry counts as Expired.

Both stores are JSON files written atomically (:func:`firmware.ocpp.configuration.write_json_atomic`); a
corrupt file raises :class:`AuthStoreError` naming it, or with ``recover=True`` is logged and moved aside
and the store starts empty.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from ocpp.v16.enums import AuthorizationStatus
from ocpp.v201.enums import AuthorizationStatusEnumType

from firmware.ocpp.configuration import FILE_FORMAT, StoreError, load_json_store, write_json_atomic
from firmware.ocpp.timestamps import TimestampError, parse_utc, utc_iso

log = logging.getLogger(__name__)

#: Every status of the 1.6 AuthorizationStatus and 2.0.1 AuthorizationStatusEnumType enums.
STATUSES = frozenset(s.value for s in AuthorizationStatus) | frozenset(s.value for s in AuthorizationStatusEnumType)
ID_MAX_LENGTH = 255  # 2.1 IdTokenType.idToken; 1.6 (20) and 2.0.1 (36) are shorter and checked by the schemas

UpdateType = Literal["Full", "Differential"]
SendLocalListStatus = Literal["Accepted", "Failed", "VersionMismatch"]


class AuthStoreError(StoreError):
    """The local list or cache file cannot be read, is corrupt, or cannot be written."""


class AuthDataError(ValueError):
    """An identifier or its authorisation info (from a peer or a file) is malformed."""


def _utc(moment: datetime) -> datetime:
    """Wall-clock times are UTC; a naive one is taken as UTC rather than compared and crash."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _pick(data: dict[str, Any], camel: str, snake: str) -> Any:
    return data[camel] if camel in data else data.get(snake)


def _parse_time(text: Any, what: str) -> datetime:
    if not isinstance(text, str):
        raise AuthDataError(f"{what} must be a date-time string, got {text!r}")
    try:
        return parse_utc(text)
    except TimestampError:
        pass
    try:  # some CSMSs leave out the zone designator: OCPP times are UTC all the same
        return _utc(datetime.fromisoformat(text))
    except ValueError as exc:
        raise AuthDataError(f"{what} {text!r} is not a date-time") from exc


def _check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > ID_MAX_LENGTH:
        raise AuthDataError(f"{what} must be a non-empty string of at most {ID_MAX_LENGTH} characters, got {value!r}")
    return value


@dataclass(frozen=True)
class AuthInfo:
    """What is known about one identifier: status, expiry, parent / group id, and the info as received."""

    id_token: str
    status: str
    expiry: datetime | None = None
    parent_id: str | None = None
    token_type: str | None = None
    info: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def effective_status(self, now: datetime) -> str:
        if self.status == "Accepted" and self.expiry is not None and self.expiry <= _utc(now):
            return "Expired"
        return self.status

    def authorises(self, now: datetime) -> bool:
        return self.effective_status(now) == "Accepted"

    @classmethod
    def from_info(cls, id_token: str, info: Any, *, token_type: str | None = None) -> AuthInfo:
        """From a 1.6 idTagInfo or a 2.0.1 idTokenInfo; AuthDataError when it is malformed."""
        _check_id(id_token, "the identifier")
        if not isinstance(info, dict):
            raise AuthDataError(f"{id_token}: the authorisation info must be an object, got {info!r}")
        status = info.get("status")
        if not isinstance(status, str) or status not in STATUSES:
            raise AuthDataError(f"{id_token}: status {status!r} is not an OCPP authorisation status")
        raw_expiry = _pick(info, "expiryDate", "expiry_date")
        if raw_expiry is None:
            raw_expiry = _pick(info, "cacheExpiryDateTime", "cache_expiry_date_time")
        expiry = None if raw_expiry is None else _parse_time(raw_expiry, f"{id_token}: expiry")
        parent = _pick(info, "parentIdTag", "parent_id_tag")
        group = _pick(info, "groupIdToken", "group_id_token")
        if parent is None and isinstance(group, dict):
            parent = _pick(group, "idToken", "id_token")
        if parent is not None:
            parent = _check_id(parent, f"{id_token}: parent id")
        return cls(id_token, status, expiry, parent, token_type, dict(info))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id_token, "type": self.token_type, "info": self.info}

    @classmethod
    def from_json(cls, data: Any) -> AuthInfo:
        if not isinstance(data, dict):
            raise AuthDataError(f"entry {data!r} is not an object")
        token_type = data.get("type")
        if token_type is not None and not isinstance(token_type, str):
            raise AuthDataError(f"entry type {token_type!r} is not a string")
        return cls.from_info(_check_id(data.get("id"), "entry id"), data.get("info"), token_type=token_type)


def parse_list_entry(entry: Any) -> tuple[str, str | None, dict[str, Any] | None]:
    """(identifier, token type or None, info or None) of one SendLocalList entry, 1.6 or 2.0.1 shape."""
    if not isinstance(entry, dict):
        raise AuthDataError(f"list entry {entry!r} is not an object")
    token = _pick(entry, "idToken", "id_token")
    if token is not None:  # 2.0.1 AuthorizationData
        if not isinstance(token, dict):
            raise AuthDataError(f"idToken {token!r} is not an object")
        id_token = _check_id(_pick(token, "idToken", "id_token"), "idToken.idToken")
        token_type = token.get("type")
        if not isinstance(token_type, str):
            raise AuthDataError(f"{id_token}: idToken.type is missing")
        info = _pick(entry, "idTokenInfo", "id_token_info")
    else:  # 1.6 AuthorizationData
        id_token = _check_id(_pick(entry, "idTag", "id_tag"), "idTag")
        token_type = None
        info = _pick(entry, "idTagInfo", "id_tag_info")
    if info is not None and not isinstance(info, dict):
        raise AuthDataError(f"{id_token}: the info must be an object")
    return id_token, token_type, info


# ====================================================================== the Local Authorization List


class LocalAuthList:
    """The Local Authorization List. ``max_length`` is LocalAuthListMaxLength (2.0.1 LocalAuthListCtrlr
    Entries maxLimit), ``max_per_message`` SendLocalListMaxLength (ItemsPerMessage)."""

    def __init__(
        self,
        path: Path | None,
        *,
        max_length: int = 1000,
        max_per_message: int = 250,
        recover: bool = False,
    ) -> None:
        self.path = path
        self.max_length = max_length
        self.max_per_message = max_per_message
        self._version = 0
        self._entries: dict[str, AuthInfo] = {}
        stored = load_json_store(path, error=AuthStoreError, recover=recover, what="local list", parse=self._parse)
        if stored is not None:
            self._version, self._entries = stored

    @staticmethod
    def _parse(doc: dict[str, Any]) -> tuple[int, dict[str, AuthInfo]]:
        version = doc.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ValueError(f"version {version!r} is not a non-negative integer")
        entries = doc.get("entries")
        if not isinstance(entries, list):
            raise ValueError("'entries' is missing or not a list")
        loaded: dict[str, AuthInfo] = {}
        for data in entries:
            info = AuthInfo.from_json(data)
            loaded[info.id_token.casefold()] = info
        return version, loaded

    @property
    def version(self) -> int:
        """The version for GetLocalListVersion: 0 while the list is empty (1.6 §5.10, 2.0.1 D02)."""
        return self._version if self._entries else 0

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[AuthInfo]:
        return list(self._entries.values())

    def lookup(self, id_token: str, *, token_type: str | None = None) -> AuthInfo | None:
        """The entry for ``id_token`` (case-insensitive); with ``token_type`` a 2.0.1 entry of another
        type does not match."""
        if not isinstance(id_token, str):
            return None
        info = self._entries.get(id_token.casefold())
        if info is None:
            return None
        if token_type is not None and info.token_type is not None and info.token_type != token_type:
            return None
        return info

    def send_local_list(
        self, version: int, update_type: str, entries: list[dict[str, Any]] | None
    ) -> SendLocalListStatus:
        """Apply a SendLocalList (1.6 §5.15, 2.0.1 D01) all or nothing; never raises.

        Full replaces the list (every entry needs its info: 1.6 AuthorizationData). Differential adds or
        updates the entries with info and removes those without; a version not above the current one is
        VersionMismatch. A malformed entry, an identifier twice in one message, more entries than
        ``max_per_message`` or a resulting list longer than ``max_length`` is Failed.
        """
        entries = entries or []
        problem = self._check_request(version, update_type, entries)
        if problem:
            log.warning("SendLocalList %s v%r failed: %s", update_type, version, problem)
            return "Failed"
        if update_type == "Differential" and version <= self._version:
            log.info("SendLocalList Differential v%d: version mismatch (list is v%d)", version, self._version)
            return "VersionMismatch"
        try:
            updated = self._apply(update_type, entries)
        except AuthDataError as exc:
            log.warning("SendLocalList %s v%d failed: %s", update_type, version, exc)
            return "Failed"
        if len(updated) > self.max_length:
            log.warning("SendLocalList: %d entries, LocalAuthListMaxLength is %d", len(updated), self.max_length)
            return "Failed"
        previous = (self._version, self._entries)
        self._version, self._entries = version, updated
        try:
            self.save()
        except AuthStoreError as exc:
            log.error("SendLocalList: %s; list unchanged", exc)
            self._version, self._entries = previous
            return "Failed"
        return "Accepted"

    def _check_request(self, version: Any, update_type: Any, entries: Any) -> str:
        if update_type not in ("Full", "Differential"):
            return f"update type {update_type!r}"
        if not isinstance(version, int) or isinstance(version, bool):
            return f"version {version!r} is not an integer"
        if not isinstance(entries, list):
            return "the list is not a list"
        # Version 0 means "no list" (1.6 §5.10, 2.0.1 D02): only an empty Full list may carry it.
        if version < 0 or (version == 0 and (entries or update_type == "Differential")):
            return f"version {version}: versions are positive, 0 only for an empty Full list"
        if len(entries) > self.max_per_message:
            return f"{len(entries)} entries in one message, SendLocalListMaxLength is {self.max_per_message}"
        return ""

    def _apply(self, update_type: str, entries: list[Any]) -> dict[str, AuthInfo]:
        updated: dict[str, AuthInfo] = {} if update_type == "Full" else dict(self._entries)
        seen: set[str] = set()
        for entry in entries:
            id_token, token_type, info = parse_list_entry(entry)
            key = id_token.casefold()
            if key in seen:
                raise AuthDataError(f"{id_token} is in the message twice")
            seen.add(key)
            if info is None:
                if update_type == "Full":
                    raise AuthDataError(f"{id_token}: a Full update needs the info of every entry")
                updated.pop(key, None)
            else:
                updated[key] = AuthInfo.from_info(id_token, info, token_type=token_type)
        return updated

    def save(self) -> None:
        if self.path is None:
            return
        doc = {
            "format": FILE_FORMAT,
            "version": self._version,
            "entries": [e.to_json() for e in self._entries.values()],
        }
        try:
            write_json_atomic(self.path, doc)
        except OSError as exc:
            raise AuthStoreError(self.path, f"cannot write the local list file: {exc.strerror or exc}") from exc


# ====================================================================== the Authorization Cache


@dataclass
class _Cached:
    info: AuthInfo
    last_used: datetime


class AuthCache:
    """The Authorization Cache: at most ``max_entries`` identifiers, least recently used evicted first
    (after entries that have expired). ``lifetime_s`` (2.0.1 AuthCacheCtrlr.LifeTime) drops an entry not
    used for that long; None keeps entries until their own expiry.

    Each update and clear is saved; a lookup only reorders in memory (a tap at the reader does not write
    the SD card), so after a restart the recency order and last-use times are those of the last save.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        max_entries: int = 1000,
        lifetime_s: float | None = None,
        recover: bool = False,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.path = path
        self.max_entries = max_entries
        self.lifetime_s = lifetime_s
        self._entries: OrderedDict[str, _Cached] = OrderedDict()
        stored = load_json_store(
            path, error=AuthStoreError, recover=recover, what="authorisation cache", parse=self._parse
        )
        if stored is not None:
            self._entries = stored

    @staticmethod
    def _parse(doc: dict[str, Any]) -> OrderedDict[str, _Cached]:
        entries = doc.get("entries")
        if not isinstance(entries, list):
            raise ValueError("'entries' is missing or not a list")
        loaded: OrderedDict[str, _Cached] = OrderedDict()
        for data in entries:
            info = AuthInfo.from_json(data)
            last_used = _parse_time(data.get("lastUsed"), f"{info.id_token}: lastUsed")
            loaded[info.id_token.casefold()] = _Cached(info, last_used)
        return loaded

    def __len__(self) -> int:
        return len(self._entries)

    def _stale(self, entry: _Cached, now: datetime) -> bool:
        return self.lifetime_s is not None and entry.last_used + timedelta(seconds=self.lifetime_s) <= now

    def update(self, id_token: str, info: Any, *, now: datetime, token_type: str | None = None) -> bool:
        """Store the CSMS's answer for ``id_token`` (idTagInfo or idTokenInfo). False, logged, when the
        info is malformed or cannot be saved; never raises."""
        now = _utc(now)
        try:
            entry = AuthInfo.from_info(id_token, info, token_type=token_type)
        except AuthDataError as exc:
            log.warning("not caching the answer for %r: %s", id_token, exc)
            return False
        if entry.status == "ConcurrentTx":
            # Why: ConcurrentTx says the id is busy right now, nothing about whether it may charge later.
            return False
        key = id_token.casefold()
        previous = OrderedDict(self._entries)
        self._entries.pop(key, None)
        self._entries[key] = _Cached(entry, now)
        self._evict(now)
        try:
            self.save()
        except AuthStoreError as exc:
            log.error("authorisation cache: %s; entry not cached", exc)
            self._entries = previous
            return False
        return True

    def _evict(self, now: datetime) -> None:
        if len(self._entries) <= self.max_entries:
            return
        # Entries that can no longer authorise go first: they are worth least.
        for key in [
            k for k, e in self._entries.items() if self._stale(e, now) or e.info.effective_status(now) == "Expired"
        ]:
            if len(self._entries) <= self.max_entries:
                return
            del self._entries[key]
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def lookup(self, id_token: str, *, now: datetime) -> AuthInfo | None:
        """The cached answer (an Accepted entry past its expiry reports Expired through
        :meth:`AuthInfo.effective_status`); None when unknown or unused for longer than ``lifetime_s``."""
        if not isinstance(id_token, str):
            return None
        now = _utc(now)
        key = id_token.casefold()
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._stale(entry, now):
            del self._entries[key]
            return None
        entry.last_used = now
        self._entries.move_to_end(key)
        return entry.info

    def clear(self) -> bool:
        """ClearCache (1.6 §5.4, 2.0.1 C11): True when the cache is empty and saved so."""
        previous = self._entries
        self._entries = OrderedDict()
        try:
            self.save()
        except AuthStoreError as exc:
            log.error("ClearCache: %s", exc)
            self._entries = previous
            return False
        return True

    def save(self) -> None:
        if self.path is None:
            return
        entries = [{**e.info.to_json(), "lastUsed": utc_iso(e.last_used)} for e in self._entries.values()]
        try:
            write_json_atomic(self.path, {"format": FILE_FORMAT, "entries": entries})
        except OSError as exc:
            raise AuthStoreError(
                self.path, f"cannot write the authorisation cache file: {exc.strerror or exc}"
            ) from exc


# ====================================================================== the policy

Action = Literal["accept", "reject", "ask_csms"]
Source = Literal["local_list", "cache", "offline_policy", "csms"]


@dataclass(frozen=True)
class Decision:
    """What to do with a presented identifier. ``status`` is the authorisation status to act on (for
    ``ask_csms`` the local one, "Unknown" when there is none); ``info`` the entry that decided."""

    action: Action
    status: str
    source: Source
    info: AuthInfo | None = None


class AuthSettings(Protocol):
    """The five configuration values the policy reads (1.6 keys; 2.0.1 AuthCtrlr/AuthCacheCtrlr/
    LocalAuthListCtrlr equivalents)."""

    @property
    def local_list_enabled(self) -> bool: ...

    @property
    def cache_enabled(self) -> bool: ...

    @property
    def local_pre_authorize(self) -> bool: ...

    @property
    def local_authorize_offline(self) -> bool: ...

    @property
    def allow_offline_unknown(self) -> bool: ...


class AuthPolicy:
    """Decides on a presented identifier from the local list, the cache and the configuration.

    Online: with LocalPreAuthorize an Accepted, unexpired entry (list first, then cache) starts at once
    (1.6 §9.1 LocalPreAuthorize, 2.0.1 C13); everything else asks the CSMS, which is the authority while
    it can be reached (a stale Blocked entry must not overrule it).

    Offline (1.6 §3.5, §9.1 LocalAuthorizeOffline, 2.0.1 C12/C14/C15): an entry that is not Accepted or
    is past its expiry rejects, whatever the other settings -- a blocked card never charges. With
    LocalAuthorizeOffline an Accepted entry accepts. An identifier with no entry (or a valid one while
    LocalAuthorizeOffline is off, since the local data may then not be used to accept) is "unknown":
    AllowOfflineTxForUnknownId accepts it (1.6 §3.5.4 / 2.0.1 OfflineTxForUnknownIdEnabled), else it is
    rejected as Invalid.

    The local list, when enabled, takes priority over the cache: an identifier on the list is decided by
    its list entry alone (1.6 §3.5.3).
    """

    def __init__(self, local_list: LocalAuthList | None = None, cache: AuthCache | None = None) -> None:
        self.local_list = local_list
        self.cache = cache

    def decide(
        self,
        id_token: str,
        *,
        online: bool,
        now: datetime,
        local_list_enabled: bool | None = None,
        cache_enabled: bool | None = None,
        local_pre_authorize: bool | None = None,
        local_authorize_offline: bool | None = None,
        allow_offline_unknown: bool | None = None,
        settings: AuthSettings | None = None,
        local_list: LocalAuthList | None = None,
        cache: AuthCache | None = None,
    ) -> Decision:
        """Each flag comes from its argument or else from ``settings`` (a ValueError when neither gives
        it); the list and cache from the arguments or else from the constructor."""

        def flag(name: str, value: bool | None) -> bool:
            if value is not None:
                return value
            if settings is None:
                raise ValueError(f"decide() needs {name} or settings")
            return bool(getattr(settings, name))

        pre_authorize = flag("local_pre_authorize", local_pre_authorize)
        if online and not pre_authorize:
            return Decision("ask_csms", "Unknown", "csms")
        local_list = local_list if local_list is not None else self.local_list
        cache = cache if cache is not None else self.cache
        entry: AuthInfo | None = None
        source: Source = "local_list"
        if local_list is not None and flag("local_list_enabled", local_list_enabled):
            entry = local_list.lookup(id_token)
        if entry is None and cache is not None and flag("cache_enabled", cache_enabled):
            entry, source = cache.lookup(id_token, now=now), "cache"
        if online:
            if entry is not None and entry.authorises(now):
                return Decision("accept", "Accepted", source, entry)
            return Decision("ask_csms", entry.effective_status(now) if entry else "Unknown", "csms", entry)
        if entry is not None and not entry.authorises(now):
            return Decision("reject", entry.effective_status(now), source, entry)
        if entry is not None and flag("local_authorize_offline", local_authorize_offline):
            return Decision("accept", "Accepted", source, entry)
        if flag("allow_offline_unknown", allow_offline_unknown):
            return Decision("accept", "Accepted", "offline_policy", entry)
        return Decision("reject", "Invalid", "offline_policy", entry)
