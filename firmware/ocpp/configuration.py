"""OCPP 1.6 configuration keys: the catalogue, GetConfiguration / ChangeConfiguration, typed accessors.

The catalogue (:data:`CATALOGUE`) holds every required Core key (OCPP 1.6 §9.1, standards-facts.md 4.2),
the optional Core keys the station honours (AllowOfflineTxForUnknownId, AuthorizationCacheEnabled,
StopTransactionOnEVSideDisconnect, WebSocketPingInterval, the ``*MaxLength`` keys), the LocalAuthListManagement
keys (§9.2), the SmartCharging keys (§9.4) and the security whitepaper keys SecurityProfile, AuthorizationKey
and CpoName. Values are strings on the wire; the typed accessors parse them for the firmware.

Validation (ChangeConfiguration, 1.6 §5.3):

* unknown key -> ``NotSupported``; read-only key -> ``Rejected``;
* integers: an optional sign and digits only, inside the key's range (an OCPP integer is 32-bit);
* booleans: ``true`` / ``false`` in any case, stored lower-case;
* comma separated lists (CSL): every member in the key's allowed set (measurands: the 1.6 Measurand enum
  members this firmware's meter can report, :data:`firmware.ocpp.measurands.SUPPORTED`), no empty or
  duplicated member, at most the key's ``*MaxLength`` members; stored without spaces;
* ConnectorPhaseRotation (1.6 §9.1): members ``<connector>.<rotation>`` with connector 0..NumberOfConnectors
  and a rotation NotApplicable, Unknown, RST, RTS, SRT, STR, TRS or TSR, one member per connector;
* SecurityProfile may only go up (security whitepaper, "SecurityProfile"; libocpp rejects a value <= the
  current one) and 1 or 2 need an AuthorizationKey; AuthorizationKey needs at least 8 characters (libocpp)
  and is accepted with a warning below 16 (the whitepaper's minimum; libocpp warns too). Whether the
  certificates a TLS profile needs are installed is for the caller to check before it calls ``change``.

AuthorizationKey is write-only: GetConfiguration lists it without a value (whitepaper: "write-only"), and
only :meth:`Configuration.get_str` returns it, for the websocket's Basic authentication header.

Persistence: only the values the CSMS (or the firmware) changed are kept, in one JSON file, so a key nobody
changed follows the catalogue default of the firmware that runs. Every accepted change is written before
``change`` returns, with :func:`write_json_atomic`. The file helpers here are shared by
:mod:`firmware.ocpp.device_model` and :mod:`firmware.ocpp.authorization`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from ocpp.exceptions import OccurenceConstraintViolationError
from ocpp.v16.enums import Measurand

from firmware.files import write_atomic
from firmware.ocpp.measurands import SUPPORTED as METER_MEASURANDS
from firmware.ocpp.smart_charging import (
    CHARGE_PROFILE_MAX_STACK_LEVEL,
    CHARGING_SCHEDULE_MAX_PERIODS,
    MAX_CHARGING_PROFILES_INSTALLED,
)

log = logging.getLogger(__name__)

# ====================================================================== JSON files written atomically

#: Version of the layout of the JSON files of this module and its siblings; a file with another value is
#: refused (a newer firmware's file must not be half-understood).
FILE_FORMAT = 1

T = TypeVar("T")


class StoreError(Exception):
    """A data file cannot be read, is not what it should be, or cannot be written. Names the file."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def write_json_atomic(path: Path, data: object) -> None:
    """Replace ``path`` with ``data`` as JSON so that a crash or power loss leaves the old or the new file
    (:func:`firmware.files.write_atomic`: private, fsynced, renamed). Raises OSError."""
    write_atomic(path, (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files a crash left between write and rename hold nothing the target does not."""
    with contextlib.suppress(OSError):
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()


def _move_aside(path: Path) -> Path | None:
    """Keep a bad file for diagnosis instead of overwriting it at the next save."""
    aside = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, aside)
    except OSError as exc:
        log.error("%s: cannot move the bad file aside: %s", path, exc)
        return None
    return aside


def load_json_store(
    path: Path | None,
    *,
    error: type[StoreError],
    recover: bool,
    what: str,
    parse: Callable[[dict[str, Any]], T],
) -> T | None:
    """Read a ``{"format": FILE_FORMAT, ...}`` JSON file and ``parse`` it.

    None when there is no file (first start, or ``path`` None for a store kept in memory only). A file that
    cannot be read, is not JSON, has another format or that ``parse`` refuses (ValueError) raises ``error``
    naming the file and the problem; with ``recover`` it is logged, moved aside to ``<name>.corrupt`` and
    None is returned, so the caller starts from its defaults.
    """
    if path is None:
        return None
    _remove_stale_temporaries(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        problem = f"cannot read the {what} file: {exc.strerror or exc}"
    else:
        try:
            doc = json.loads(raw.decode("utf-8"))
            if not isinstance(doc, dict):
                raise ValueError(f"expected a JSON object, found {type(doc).__name__}")
            if doc.get("format") != FILE_FORMAT:
                raise ValueError(f"format {doc.get('format')!r}, this firmware reads format {FILE_FORMAT}")
            return parse(doc)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            problem = f"not a valid {what} file: {exc}"
    if not recover:
        raise error(path, problem)
    aside = _move_aside(path)
    log.error("%s: %s; starting from defaults (recover=True); the bad file is kept as %s", path, problem, aside)
    return None


# ====================================================================== the key catalogue

Kind = Literal["int", "bool", "str", "csl"]
ChangeStatus = Literal["Accepted", "Rejected", "RebootRequired", "NotSupported"]

INT32_MAX = 2**31 - 1  # OCPP-J integers are 32-bit signed

#: 1.6 §9.1 ConnectorPhaseRotation values.
PHASE_ROTATIONS = ("NotApplicable", "Unknown", "RST", "RTS", "SRT", "STR", "TRS", "TSR")

#: The 1.6 Measurand enum members this firmware's meter can report: a CSMS asking for another one
#: gets Rejected instead of a station that later cannot sample it.
MEASURANDS_16 = frozenset(m.value for m in Measurand) & frozenset(METER_MEASURANDS)

#: 1.6 §9.1 SupportedFeatureProfiles: the profiles this station implements.
FEATURE_PROFILES = "Core,FirmwareManagement,LocalAuthListManagement,Reservation,SmartCharging,RemoteTrigger"

AUTHORIZATION_KEY_MIN = 8  # libocpp v16 AUTHORIZATION_KEY_MIN_LENGTH: shorter is Rejected
AUTHORIZATION_KEY_ADVISED = 16  # security whitepaper minimum; libocpp websocket warns below it
CI_STRING_500 = 500  # ChangeConfiguration.req value is CiString500Type (1.6 ChangeConfiguration.req)

PHASE_ROTATION_KEY = "ConnectorPhaseRotation"


@dataclass(frozen=True)
class KeySpec:
    """One configuration key: its type, access and limits.

    ``minimum``/``maximum`` bound an int; ``allowed`` is the set of members of a CSL (None: any member);
    ``max_members_key`` names the read-only key that caps the number of members; ``min_length`` /
    ``max_length`` bound a str. ``write_only`` keys are never reported with their value.
    """

    name: str
    kind: Kind
    default: str
    readonly: bool = False
    write_only: bool = False
    reboot_required: bool = False
    minimum: int | None = None
    maximum: int | None = None
    allowed: frozenset[str] | None = None
    max_members_key: str | None = None
    min_length: int = 0
    max_length: int = CI_STRING_500


def _int(name: str, default: int, *, readonly: bool = False, minimum: int = 0, maximum: int = INT32_MAX) -> KeySpec:
    return KeySpec(name, "int", str(default), readonly=readonly, minimum=minimum, maximum=maximum)


def _bool(name: str, default: bool, *, readonly: bool = False) -> KeySpec:
    return KeySpec(name, "bool", "true" if default else "false", readonly=readonly)


def _measurands(name: str, default: str) -> KeySpec:
    return KeySpec(name, "csl", default, allowed=MEASURANDS_16, max_members_key=f"{name}MaxLength")


_MEASURAND_MAX = len(MEASURANDS_16)

CATALOGUE: tuple[KeySpec, ...] = (
    # ---- Core profile (1.6 §9.1); the required keys are those of standards-facts.md 4.2
    _bool("AllowOfflineTxForUnknownId", False),
    _bool("AuthorizationCacheEnabled", True),
    _bool("AuthorizeRemoteTxRequests", False),
    _int("ClockAlignedDataInterval", 900),  # 0 = no clock-aligned data (1.6 §9.1 ClockAlignedDataInterval)
    _int("ConnectionTimeOut", 60),
    KeySpec(PHASE_ROTATION_KEY, "csl", "", max_members_key="ConnectorPhaseRotationMaxLength"),
    _int("ConnectorPhaseRotationMaxLength", 2, readonly=True),
    _int("GetConfigurationMaxKeys", 50, readonly=True, minimum=1),
    _int("HeartbeatInterval", 300),
    _bool("LocalAuthorizeOffline", True),
    _bool("LocalPreAuthorize", False),
    _measurands("MeterValuesAlignedData", "Energy.Active.Import.Register"),
    _int("MeterValuesAlignedDataMaxLength", _MEASURAND_MAX, readonly=True),
    _measurands("MeterValuesSampledData", "Energy.Active.Import.Register,Power.Active.Import,Current.Import,Voltage"),
    _int("MeterValuesSampledDataMaxLength", _MEASURAND_MAX, readonly=True),
    _int("MeterValueSampleInterval", 60),  # 0 = no sampled data (1.6 §9.1 MeterValueSampleInterval)
    _int("NumberOfConnectors", 1, readonly=True, minimum=1),
    _int("ResetRetries", 3),
    _bool("StopTransactionOnEVSideDisconnect", True),
    _bool("StopTransactionOnInvalidId", True),
    _measurands("StopTxnAlignedData", ""),
    _int("StopTxnAlignedDataMaxLength", _MEASURAND_MAX, readonly=True),
    _measurands("StopTxnSampledData", "Energy.Active.Import.Register"),
    _int("StopTxnSampledDataMaxLength", _MEASURAND_MAX, readonly=True),
    KeySpec(
        "SupportedFeatureProfiles",
        "csl",
        FEATURE_PROFILES,
        readonly=True,
        allowed=frozenset(FEATURE_PROFILES.split(",")),
    ),
    _int("TransactionMessageAttempts", 3),
    _int("TransactionMessageRetryInterval", 30),
    _bool("UnlockConnectorOnEVSideDisconnect", True),
    _int("WebSocketPingInterval", 10),  # 0 disables the client's pings (1.6 §9.1 WebSocketPingInterval)
    # ---- LocalAuthListManagement profile (1.6 §9.2)
    _bool("LocalAuthListEnabled", True),
    _int("LocalAuthListMaxLength", 1000, readonly=True),
    _int("SendLocalListMaxLength", 250, readonly=True),
    # ---- SmartCharging profile (1.6 §9.4); the values the smart charging store enforces
    _int("ChargeProfileMaxStackLevel", CHARGE_PROFILE_MAX_STACK_LEVEL, readonly=True),
    KeySpec(
        "ChargingScheduleAllowedChargingRateUnit",
        "csl",
        "Current,Power",
        readonly=True,
        allowed=frozenset({"Current", "Power"}),
    ),
    _int("ChargingScheduleMaxPeriods", CHARGING_SCHEDULE_MAX_PERIODS, readonly=True),
    _int("MaxChargingProfilesInstalled", MAX_CHARGING_PROFILES_INSTALLED, readonly=True),
    # Optional SmartCharging key: the station can switch a connector between three phases and one
    # while charging (a phase contactor; set from the board at start-up).
    _bool("ConnectorSwitch3to1PhaseSupported", False, readonly=True),
    # ---- security whitepaper (OCPP 1.6 security edition 2, "Configuration keys")
    _int("SecurityProfile", 0, minimum=0, maximum=3),
    KeySpec("AuthorizationKey", "str", "", write_only=True, min_length=AUTHORIZATION_KEY_MIN),
    KeySpec("CpoName", "str", ""),
    # ---- signed meter values (vendor keys; firmware.ocpp.signed_meter). Named after 2.0.1's
    # SampledDataCtrlr.SignReadings; the public key is the form OCMF transparency software takes.
    _bool("SampledDataSignReadings", False),
    KeySpec("MeterPublicKey", "str", "", readonly=True),
)


class ConfigError(StoreError):
    """The configuration file cannot be read, is corrupt, or cannot be written."""


class TooManyKeysError(OccurenceConstraintViolationError):
    """A GetConfiguration.req asked for more keys than GetConfigurationMaxKeys (1.6 §9.1 GetConfigurationMaxKeys).

    An ``ocpp`` handler that lets it propagate answers CALLERROR OccurenceConstraintViolation."""


def _parse_int(text: str) -> int | None:
    stripped = text.strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,19}", stripped):
        return None
    return int(stripped)


def _parse_bool(text: str) -> bool | None:
    lowered = text.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    return None


def split_csl(text: str) -> list[str]:
    """The members of a comma separated list, spaces around them removed; "" is the empty list."""
    if text.strip() == "":
        return []
    return [member.strip() for member in text.split(",")]


class Configuration:
    """The station's OCPP 1.6 configuration keys.

    ``path`` None keeps the configuration in memory only. ``defaults`` overrides catalogue defaults; it is
    how the board sets the read-only keys (NumberOfConnectors, GetConfigurationMaxKeys, ...) and a
    bad entry there is a ValueError. ``recover`` lets a corrupt file fall back to the defaults (logged,
    the file moved aside) instead of raising :class:`ConfigError`. ``catalogue`` replaces
    :data:`CATALOGUE` (vendor keys, tests).

    ``on_change(key, value)`` is called after every accepted and saved change with the normalised value; an
    exception from it is logged, never raised into the OCPP handler. A key marked ``reboot_required`` answers
    ``RebootRequired``: its new value is saved and reported at once, and the firmware reads it when it
    restarts.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        defaults: dict[str, str] | None = None,
        recover: bool = False,
        catalogue: Iterable[KeySpec] | None = None,
    ) -> None:
        self.path = path
        self.on_change: Callable[[str, str], None] | None = None
        self._specs: dict[str, KeySpec] = {}
        for spec in catalogue if catalogue is not None else CATALOGUE:
            if spec.name in self._specs:
                raise ValueError(f"configuration key {spec.name} is in the catalogue twice")
            self._specs[spec.name] = spec
        self._by_folded = {name.casefold(): name for name in self._specs}
        self._values: dict[str, str] = {name: spec.default for name, spec in self._specs.items()}
        self._changed: dict[str, str] = {}
        self._apply_defaults(defaults or {})
        stored = load_json_store(path, error=ConfigError, recover=recover, what="configuration", parse=self._parse)
        if stored:
            self._values.update(stored)
            self._changed.update(stored)

    # ------------------------------------------------------------------ set-up
    def _apply_defaults(self, defaults: dict[str, str]) -> None:
        for key, value in defaults.items():
            if key not in self._specs:
                raise ValueError(f"default for unknown configuration key {key!r}")
            if not isinstance(value, str):
                raise ValueError(f"default for {key} must be a string, got {type(value).__name__}")

        # The connector count bounds ConnectorPhaseRotation, and the read-only limits bound the lists:
        # settle the connector count, then the other read-only keys, then the rest.
        def rank(item: tuple[str, str]) -> int:
            return 0 if item[0] == "NumberOfConnectors" else 1 if self._specs[item[0]].readonly else 2

        derived_done = False
        for key, value in sorted(defaults.items(), key=rank):
            if rank((key, value)) == 2 and not derived_done:
                self._derive_connector_defaults(defaults)
                derived_done = True
            normalised, reason = self._validate(self._specs[key], value)
            if normalised is None:
                raise ValueError(f"default {key}={value!r}: {reason}")
            self._values[key] = normalised
        if not derived_done:
            self._derive_connector_defaults(defaults)
        for name, spec in self._specs.items():  # e.g. a lowered *MaxLength must still fit the default list
            value = self._values[name]
            if spec.kind == "str" and value == "":
                continue  # an unset string (no AuthorizationKey yet)
            normalised, reason = self._validate(spec, value)
            if normalised is None:
                raise ValueError(f"default {name}={value!r}: {reason}")

    def _derive_connector_defaults(self, defaults: dict[str, str]) -> None:
        if PHASE_ROTATION_KEY not in self._specs or "NumberOfConnectors" not in self._specs:
            return
        connectors = int(self._values["NumberOfConnectors"])
        if "ConnectorPhaseRotationMaxLength" not in defaults and "ConnectorPhaseRotationMaxLength" in self._specs:
            self._values["ConnectorPhaseRotationMaxLength"] = str(connectors + 1)  # connector 0 is the grid
        if PHASE_ROTATION_KEY not in defaults:
            self._values[PHASE_ROTATION_KEY] = ",".join(f"{c}.Unknown" for c in range(1, connectors + 1))

    def _parse(self, doc: dict[str, Any]) -> dict[str, str]:
        values = doc.get("values")
        if not isinstance(values, dict):
            raise ValueError("'values' is missing or not an object")
        loaded: dict[str, str] = {}
        for key, value in values.items():
            spec = self._specs.get(key)
            if spec is None:
                log.warning("%s: ignoring unknown configuration key %r", self.path, key)
                continue
            if spec.readonly:
                log.warning("%s: ignoring read-only key %s (the firmware sets it)", self.path, key)
                continue
            if not isinstance(value, str):
                raise ValueError(f"key {key}: value must be a string, found {type(value).__name__}")
            normalised, reason = self._validate(spec, value)
            if normalised is None:
                raise ValueError(f"key {key}={value!r}: {reason}")
            loaded[key] = normalised
        return loaded

    # ------------------------------------------------------------------ validation
    def _validate(self, spec: KeySpec, value: str) -> tuple[str | None, str]:
        """(normalised value, "") when ``value`` fits ``spec``, else (None, why not)."""
        if len(value) > CI_STRING_500:
            return None, f"longer than {CI_STRING_500} characters"
        if spec.kind == "int":
            number = _parse_int(value)
            if number is None:
                return None, "not an integer"
            if spec.minimum is not None and number < spec.minimum:
                return None, f"below the minimum {spec.minimum}"
            if spec.maximum is not None and number > spec.maximum:
                return None, f"above the maximum {spec.maximum}"
            return str(number), ""
        if spec.kind == "bool":
            flag = _parse_bool(value)
            if flag is None:
                return None, "not 'true' or 'false'"
            return ("true" if flag else "false"), ""
        if spec.kind == "csl":
            return self._validate_csl(spec, value)
        if len(value) < spec.min_length:
            return None, f"shorter than {spec.min_length} characters"
        if len(value) > spec.max_length:
            return None, f"longer than {spec.max_length} characters"
        return value, ""

    def _validate_csl(self, spec: KeySpec, value: str) -> tuple[str | None, str]:
        members = split_csl(value)
        if any(member == "" for member in members):
            return None, "empty member in the list"
        if len(set(members)) != len(members):
            return None, "a member is listed twice"
        if spec.name == PHASE_ROTATION_KEY:
            reason = self._check_phase_rotation(members)
            if reason:
                return None, reason
        elif spec.allowed is not None:
            unknown = [member for member in members if member not in spec.allowed]
            if unknown:
                return None, f"not supported: {', '.join(unknown)} (allowed: {', '.join(sorted(spec.allowed))})"
        if spec.max_members_key is not None and spec.max_members_key in self._values:
            limit = int(self._values[spec.max_members_key])
            if len(members) > limit:
                return None, f"{len(members)} members, {spec.max_members_key} is {limit}"
        return ",".join(members), ""

    def _check_phase_rotation(self, members: list[str]) -> str:
        connectors = int(self._values.get("NumberOfConnectors", "1"))
        seen: set[int] = set()
        for member in members:
            connector_text, _, rotation = member.partition(".")
            if not connector_text.isdigit() or rotation not in PHASE_ROTATIONS:
                return f"{member!r} is not <connector>.<{'|'.join(PHASE_ROTATIONS)}>"
            connector = int(connector_text)
            if connector > connectors:
                return f"{member!r}: no connector {connector} (NumberOfConnectors is {connectors})"
            if connector in seen:
                return f"connector {connector} is listed twice"
            seen.add(connector)
        return ""

    def _special_rules(self, key: str, value: str) -> str:
        """Rules that depend on other keys; "" when ``value`` may be set."""
        if key == "SecurityProfile":
            new, current = int(value), int(self._values["SecurityProfile"])
            # Security whitepaper / libocpp: a CSMS may raise the profile, never lower it.
            if new <= current:
                return f"SecurityProfile can only be raised (now {current})"
            if new in (1, 2) and not self._values.get("AuthorizationKey"):
                return "profiles 1 and 2 need an AuthorizationKey, none is set"
        if key == "AuthorizationKey" and len(value) < AUTHORIZATION_KEY_ADVISED:
            log.warning(
                "AuthorizationKey has %d characters, fewer than the advised %d", len(value), AUTHORIZATION_KEY_ADVISED
            )
        return ""

    # ------------------------------------------------------------------ OCPP messages
    def get(self, keys: list[str] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
        """GetConfiguration.conf (1.6 §5.8): (configurationKey entries, unknownKey list).

        No keys (None or empty) means every key. Keys match case-insensitively (CiString50). A write-only
        key is listed without its value. More keys than GetConfigurationMaxKeys raises
        :class:`TooManyKeysError`.
        """
        if not keys:
            return [self._entry(spec) for spec in self._specs.values()], []
        limit = self._max_keys()
        if len(keys) > limit:
            raise TooManyKeysError(f"{len(keys)} keys requested, GetConfigurationMaxKeys is {limit}")
        known: list[dict[str, Any]] = []
        unknown: list[str] = []
        for key in keys:
            name = self._by_folded.get(key.casefold()) if isinstance(key, str) else None
            if name is None:
                unknown.append(str(key))
            else:
                known.append(self._entry(self._specs[name]))
        return known, unknown

    def _max_keys(self) -> int:
        text = self._values.get("GetConfigurationMaxKeys")
        return int(text) if text is not None else len(self._specs)

    def _entry(self, spec: KeySpec) -> dict[str, Any]:
        entry: dict[str, Any] = {"key": spec.name, "readonly": spec.readonly}
        if not spec.write_only:
            entry["value"] = self._values[spec.name]
        return entry

    def change(self, key: str, value: str) -> ChangeStatus:
        """ChangeConfiguration (1.6 §5.3): validate, save, notify. Never raises."""
        name = self._by_folded.get(key.casefold()) if isinstance(key, str) else None
        if name is None:
            log.info("ChangeConfiguration %r: unknown key", key)
            return "NotSupported"
        spec = self._specs[name]
        if spec.readonly:
            log.info("ChangeConfiguration %s: read-only", name)
            return "Rejected"
        if not isinstance(value, str):
            log.info("ChangeConfiguration %s: value is not a string", name)
            return "Rejected"
        normalised, reason = self._validate(spec, value)
        if normalised is None:
            log.info("ChangeConfiguration %s=%r rejected: %s", name, value, reason)
            return "Rejected"
        reason = self._special_rules(name, normalised)
        if reason:
            log.info("ChangeConfiguration %s rejected: %s", name, reason)
            return "Rejected"
        status: ChangeStatus = "RebootRequired" if spec.reboot_required else "Accepted"
        if self._values[name] == normalised and name in self._changed:
            return status
        previous = self._values[name]
        self._values[name] = normalised
        self._changed[name] = normalised
        try:
            self.save()
        except ConfigError as exc:
            log.error("ChangeConfiguration %s: %s; change undone", name, exc)
            self._values[name] = previous
            self._changed.pop(name)
            return "Rejected"
        if self.on_change is not None:
            try:
                self.on_change(name, normalised)
            except Exception:
                log.exception("on_change listener failed for %s", name)
        return status

    def save(self) -> None:
        """Write the changed keys (a no-op without a path). Raises ConfigError."""
        if self.path is None:
            return
        try:
            write_json_atomic(self.path, {"format": FILE_FORMAT, "values": dict(self._changed)})
        except OSError as exc:
            raise ConfigError(self.path, f"cannot write the configuration file: {exc.strerror or exc}") from exc

    # ------------------------------------------------------------------ typed accessors for the firmware
    def spec(self, key: str) -> KeySpec:
        """The catalogue entry of ``key``; KeyError for a key the catalogue does not have."""
        name = self._by_folded.get(key.casefold())
        if name is None:
            raise KeyError(f"no configuration key {key!r}")
        return self._specs[name]

    def _typed(self, key: str, kind: Kind) -> str:
        spec = self.spec(key)
        if spec.kind != kind:
            raise KeyError(f"configuration key {spec.name} is {spec.kind}, not {kind}")
        return self._values[spec.name]

    def get_str(self, key: str) -> str:
        """The value as stored, whatever the kind (also a write-only key's value)."""
        return self._values[self.spec(key).name]

    def get_int(self, key: str) -> int:
        return int(self._typed(key, "int"))

    def get_bool(self, key: str) -> bool:
        return self._typed(key, "bool") == "true"

    def get_csl(self, key: str) -> list[str]:
        return split_csl(self._typed(key, "csl"))

    def keys(self) -> list[str]:
        """Every key of the catalogue, in catalogue order."""
        return list(self._specs)
