"""Charging profiles: one normalised model for OCPP 1.6 and 2.0.1, and the parsers from the wire payloads.

The two protocol versions send the same idea in two shapes (1.6 ``csChargingProfiles`` with one
``chargingSchedule`` object and integer transaction ids; 2.0.1 ``chargingProfile`` with a list of
schedules and string transaction ids). Both are parsed into :class:`ChargingProfile`, which is what the
store and the composite-schedule calculation (:mod:`firmware.ocpp.smart_charging`) work on.

Validation follows OCPP 2.0.1 K01 (requirement ids in the messages). Where the 1.6 specification
allows something 2.0.1 forbids, the 1.6 parser is lenient and says so at the rule:

* an Absolute or Recurring profile without ``startSchedule`` is accepted; 1.6 ``ChargingSchedule``
  says "If absent the schedule will be relative to start of charging", so it is anchored like a
  Relative profile;
* a Relative profile with ``startSchedule`` is accepted and the start is dropped (it has no meaning
  for a Relative profile);
* a Relative ChargePointMaxProfile is accepted (1.6 has no rule against it).

Every invalid payload raises :class:`ProfileError` with the rule it breaks; nothing else escapes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal, cast

RateUnit = Literal["A", "W"]
RATE_UNITS: tuple[RateUnit, ...] = ("A", "W")

# Rule ids used in ProfileError messages that are not K01 requirement numbers.
SCHEMA_16 = "OCPP 1.6 SetChargingProfile.req schema"
SCHEMA_201 = "OCPP 2.0.1 SetChargingProfileRequest schema"
RULE_RECURRENCY = "ChargingProfile.recurrencyKind required for Recurring"  # 1.6 and 2.0.1 ChargingProfileType
RULE_VALIDITY = "ChargingProfile.validFrom before validTo"
RULE_STATION_MAX_16 = "OCPP 1.6 ChargingProfilePurposeType: ChargePointMaxProfile only at connectorId 0"
RULE_TX_CONNECTOR_16 = "OCPP 1.6 ChargingProfilePurposeType: TxProfile only at connectorId > 0"
RULE_STATE = "profile store file"


class ProfileError(ValueError):
    """A charging profile (or a stored profile file) breaks a rule; ``rule`` names it."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{detail} [{rule}]")
        self.rule = rule
        self.detail = detail


class Purpose(Enum):
    STATION_MAX = "StationMax"  # 1.6 ChargePointMaxProfile, 2.0.1 ChargingStationMaxProfile
    TX_DEFAULT = "TxDefault"
    TX = "Tx"
    EXTERNAL_CONSTRAINTS = "ExternalConstraints"  # 2.0.1 ChargingStationExternalConstraints


class Kind(Enum):
    ABSOLUTE = "Absolute"
    RECURRING = "Recurring"
    RELATIVE = "Relative"


class Recurrency(Enum):
    DAILY = "Daily"
    WEEKLY = "Weekly"


_PURPOSES_16 = {
    "ChargePointMaxProfile": Purpose.STATION_MAX,
    "TxDefaultProfile": Purpose.TX_DEFAULT,
    "TxProfile": Purpose.TX,
}
_PURPOSES_201 = {
    "ChargingStationMaxProfile": Purpose.STATION_MAX,
    "TxDefaultProfile": Purpose.TX_DEFAULT,
    "TxProfile": Purpose.TX,
    "ChargingStationExternalConstraints": Purpose.EXTERNAL_CONSTRAINTS,
}
_KINDS = {kind.value: kind for kind in Kind}
_RECURRENCIES = {rec.value: rec for rec in Recurrency}


@dataclass(frozen=True)
class SchedulePeriod:
    start_s: int  # seconds from the start of the schedule
    limit: float  # in the schedule's rate unit
    number_phases: int | None = None  # None: not given (1.6 and 2.0.1 then assume 3)

    def __post_init__(self) -> None:
        if isinstance(self.start_s, bool) or not isinstance(self.start_s, int) or self.start_s < 0:
            raise ProfileError("K01.FR.31", f"startPeriod must be an integer >= 0, not {self.start_s!r}")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int | float):
            raise ProfileError("ChargingSchedulePeriod.limit", f"limit must be a number, not {self.limit!r}")
        if not math.isfinite(self.limit) or self.limit < 0:
            raise ProfileError("ChargingSchedulePeriod.limit", f"limit must be finite and >= 0, not {self.limit!r}")
        object.__setattr__(self, "limit", float(self.limit))
        phases = self.number_phases
        if phases is not None and (isinstance(phases, bool) or not isinstance(phases, int) or not 1 <= phases <= 3):
            raise ProfileError("ChargingSchedulePeriod.numberPhases", f"numberPhases must be 1, 2 or 3, not {phases!r}")


@dataclass(frozen=True)
class ChargingSchedule:
    id: int | None  # 2.0.1 ChargingScheduleType.id; 1.6 has none
    start_schedule: datetime | None
    duration_s: int | None  # None: the last period lasts until the profile's validity ends
    rate_unit: RateUnit
    periods: tuple[SchedulePeriod, ...]
    min_charging_rate: float | None = None

    def __post_init__(self) -> None:
        if self.rate_unit not in RATE_UNITS:
            raise ProfileError("chargingRateUnit", f"chargingRateUnit must be 'A' or 'W', not {self.rate_unit!r}")
        if not self.periods:
            raise ProfileError("K01.FR.31", "a charging schedule needs at least one period")
        # K01.FR.31: the first period starts the schedule, so every instant of it has a limit.
        if self.periods[0].start_s != 0:
            raise ProfileError("K01.FR.31", f"the first startPeriod must be 0, not {self.periods[0].start_s}")
        for before, after in zip(self.periods, self.periods[1:], strict=False):
            if after.start_s <= before.start_s:  # K01.FR.35
                raise ProfileError(
                    "K01.FR.35", f"startPeriod values must increase strictly: {before.start_s} then {after.start_s}"
                )
        duration = self.duration_s
        if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int) or duration < 0):
            raise ProfileError("ChargingSchedule.duration", f"duration must be an integer >= 0, not {duration!r}")
        rate = self.min_charging_rate
        if rate is not None:
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate) or rate < 0:
                raise ProfileError("ChargingSchedule.minChargingRate", f"minChargingRate must be >= 0, not {rate!r}")
            object.__setattr__(self, "min_charging_rate", float(rate))
        object.__setattr__(self, "start_schedule", _utc(self.start_schedule, "startSchedule"))


@dataclass(frozen=True)
class ChargingProfile:
    id: int
    stack_level: int
    purpose: Purpose
    kind: Kind
    recurrency: Recurrency | None
    valid_from: datetime | None
    valid_to: datetime | None
    connector_id: int  # 1.6 connectorId / 2.0.1 evseId; 0 = the whole station
    transaction_id: str | None
    schedule: ChargingSchedule

    def __post_init__(self) -> None:
        for name in ("id", "stack_level", "connector_id"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ProfileError("ChargingProfile", f"{name} must be an integer >= 0, not {value!r}")
        if self.kind is Kind.RECURRING and self.recurrency is None:
            raise ProfileError(RULE_RECURRENCY, "a Recurring profile needs recurrencyKind")
        if self.kind is not Kind.RECURRING and self.recurrency is not None:
            raise ProfileError(RULE_RECURRENCY, f"recurrencyKind is only for Recurring profiles, not {self.kind.value}")
        if self.kind is Kind.RELATIVE and self.schedule.start_schedule is not None:
            raise ProfileError("K01.FR.41", "a Relative profile must not have a startSchedule")
        object.__setattr__(self, "valid_from", _utc(self.valid_from, "validFrom"))
        object.__setattr__(self, "valid_to", _utc(self.valid_to, "validTo"))
        if self.valid_from is not None and self.valid_to is not None and self.valid_to <= self.valid_from:
            raise ProfileError(RULE_VALIDITY, f"validTo {self.valid_to} is not after validFrom {self.valid_from}")


def _utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ProfileError(name, f"{name} must be a timezone-aware datetime, not {value!r}")
    return value.astimezone(UTC)


# --- wire payload helpers ----------------------------------------------------------------------------

# RFC 3339 date-time (section 5.6): the offset is mandatory; 'T' may be written 't' or a space.
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
)


def parse_rfc3339(text: object, field: str, rule: str) -> datetime:
    """An RFC 3339 timestamp as an aware UTC datetime (fractions beyond microseconds are truncated)."""
    if not isinstance(text, str):
        raise ProfileError(rule, f"{field} must be an RFC 3339 string, not {text!r}")
    match = _RFC3339.match(text)
    if match is None:
        raise ProfileError(rule, f"{field} is not an RFC 3339 date-time with offset: {text!r}")
    date, time, fraction, offset = match.groups()
    fraction = (fraction or "")[:7]  # '.' + at most 6 digits: datetime has microsecond resolution
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        return datetime.fromisoformat(f"{date}T{time}{fraction}{offset}").astimezone(UTC)
    except ValueError as exc:
        raise ProfileError(rule, f"{field} is not a valid date-time: {text!r} ({exc})") from None


def format_rfc3339(moment: datetime) -> str:
    """UTC with a 'Z' suffix, as OCPP peers expect."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class _Fields:
    """Typed access to one JSON object of a payload, with errors naming the field and the schema."""

    def __init__(self, data: object, where: str, rule: str) -> None:
        if not isinstance(data, Mapping):
            raise ProfileError(rule, f"{where} must be an object, not {type(data).__name__}")
        self.data = cast(Mapping[str, Any], data)
        self.where = where
        self.rule = rule

    def _fail(self, key: str, what: str) -> ProfileError:
        return ProfileError(self.rule, f"{self.where}.{key} {what}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def int_(self, key: str, *, required: bool = True, minimum: int | None = None) -> int | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self._fail(key, "is required")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(key, f"must be an integer, not {value!r}")
        if minimum is not None and value < minimum:
            raise self._fail(key, f"must be >= {minimum}, not {value}")
        return value

    def req_int(self, key: str, *, minimum: int | None = None) -> int:
        value = self.int_(key, minimum=minimum)
        assert value is not None
        return value

    def number(self, key: str, *, required: bool = True) -> float | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self._fail(key, "is required")
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self._fail(key, f"must be a finite number, not {value!r}")
        return float(value)

    def choice(self, key: str, choices: Mapping[str, Any], *, required: bool = True) -> Any:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self._fail(key, "is required")
            return None
        if not isinstance(value, str) or value not in choices:
            raise self._fail(key, f"must be one of {sorted(choices)}, not {value!r}")
        return choices[value]

    def time(self, key: str) -> datetime | None:
        value = self.data.get(key)
        if value is None:
            return None
        return parse_rfc3339(value, f"{self.where}.{key}", self.rule)

    def list_(self, key: str) -> list[Any]:
        value = self.data.get(key)
        if value is None:
            raise self._fail(key, "is required")
        if not isinstance(value, list):
            raise self._fail(key, f"must be an array, not {type(value).__name__}")
        return value


def _schedule(data: object, where: str, rule: str) -> ChargingSchedule:
    fields = _Fields(data, where, rule)
    raw_periods = fields.list_("chargingSchedulePeriod")
    periods = []
    for index, raw in enumerate(raw_periods):
        period = _Fields(raw, f"{where}.chargingSchedulePeriod[{index}]", rule)
        if period.has("phaseToUse"):
            # K01.FR.20: phaseToUse needs ACPhaseSwitchingSupported, which this firmware does not offer.
            raise ProfileError("K01.FR.20", f"{period.where}.phaseToUse: AC phase switching is not supported")
        limit = period.number("limit")
        assert limit is not None
        periods.append(
            SchedulePeriod(
                start_s=period.req_int("startPeriod"),
                limit=limit,
                number_phases=period.int_("numberPhases", required=False),
            )
        )
    unit = fields.choice("chargingRateUnit", {unit: unit for unit in RATE_UNITS})
    return ChargingSchedule(
        id=fields.int_("id", required=False),
        start_schedule=fields.time("startSchedule"),
        duration_s=fields.int_("duration", required=False, minimum=0),
        rate_unit=unit,
        periods=tuple(periods),
        min_charging_rate=fields.number("minChargingRate", required=False),
    )


def _recurrency(fields: _Fields, kind: Kind) -> Recurrency | None:
    recurrency: Recurrency | None = fields.choice("recurrencyKind", _RECURRENCIES, required=False)
    if kind is Kind.RECURRING and recurrency is None:
        raise ProfileError(RULE_RECURRENCY, f"{fields.where}: a Recurring profile needs recurrencyKind")
    # A recurrencyKind on a non-recurring profile has no effect on the schedule; it is ignored, not refused.
    return recurrency if kind is Kind.RECURRING else None


def profile_from_v16(cs_charging_profiles: object, connector_id: int) -> ChargingProfile:
    """The profile of a 1.6 SetChargingProfile.req (``csChargingProfiles``, with the request's ``connectorId``)."""
    rule = SCHEMA_16
    if isinstance(connector_id, bool) or not isinstance(connector_id, int) or connector_id < 0:
        raise ProfileError(rule, f"connectorId must be an integer >= 0, not {connector_id!r}")
    fields = _Fields(cs_charging_profiles, "csChargingProfiles", rule)
    purpose: Purpose = fields.choice("chargingProfilePurpose", _PURPOSES_16)
    kind: Kind = fields.choice("chargingProfileKind", _KINDS)
    schedule = _schedule(fields.data.get("chargingSchedule"), "csChargingProfiles.chargingSchedule", rule)
    if purpose is Purpose.STATION_MAX and connector_id != 0:
        raise ProfileError(RULE_STATION_MAX_16, f"ChargePointMaxProfile sent for connectorId {connector_id}")
    if purpose is Purpose.TX and connector_id == 0:
        raise ProfileError(RULE_TX_CONNECTOR_16, "TxProfile sent for connectorId 0")
    if kind is Kind.RELATIVE and schedule.start_schedule is not None:
        # Lenient for 1.6 (K01.FR.41 is 2.0.1): 1.6 defines startSchedule only for absolute schedules.
        schedule = replace(schedule, start_schedule=None)
    transaction = fields.int_("transactionId", required=False)
    return ChargingProfile(
        id=fields.req_int("chargingProfileId", minimum=0),
        stack_level=fields.req_int("stackLevel", minimum=0),
        purpose=purpose,
        kind=kind,
        recurrency=_recurrency(fields, kind),
        valid_from=fields.time("validFrom"),
        valid_to=fields.time("validTo"),
        connector_id=connector_id,
        # 1.6 transactionId only means something for a TxProfile (ChargingProfile.transactionId).
        transaction_id=str(transaction) if transaction is not None and purpose is Purpose.TX else None,
        schedule=schedule,
    )


def profile_from_v201(charging_profile: object, evse_id: int) -> ChargingProfile:
    """The profile of a 2.0.1 SetChargingProfileRequest (``chargingProfile``, with the request's ``evseId``).

    2.0.1 allows up to three schedules per profile (ChargingProfileType.chargingSchedule 1..3). Several
    schedules exist for ISO 15118, where the EV picks one of the offered schedules; an AC station
    without that negotiation follows the first, as the CSMS lists its preferred schedule first.
    """
    rule = SCHEMA_201
    if isinstance(evse_id, bool) or not isinstance(evse_id, int) or evse_id < 0:
        raise ProfileError(rule, f"evseId must be an integer >= 0, not {evse_id!r}")
    fields = _Fields(charging_profile, "chargingProfile", rule)
    purpose: Purpose = fields.choice("chargingProfilePurpose", _PURPOSES_201)
    kind: Kind = fields.choice("chargingProfileKind", _KINDS)
    schedules = fields.list_("chargingSchedule")
    if not 1 <= len(schedules) <= 3:
        raise ProfileError(rule, f"chargingProfile.chargingSchedule needs 1 to 3 schedules, not {len(schedules)}")
    schedule = _schedule(schedules[0], "chargingProfile.chargingSchedule[0]", rule)
    transaction = fields.data.get("transactionId")
    if transaction is not None and not isinstance(transaction, str):
        raise ProfileError(rule, f"chargingProfile.transactionId must be a string, not {transaction!r}")
    if purpose is Purpose.STATION_MAX:
        if evse_id != 0:
            raise ProfileError("K01.FR.03", f"ChargingStationMaxProfile sent for evseId {evse_id}")
        if kind is Kind.RELATIVE:
            raise ProfileError("K01.FR.38", "a ChargingStationMaxProfile cannot be Relative")
    if purpose is Purpose.TX:
        if evse_id == 0:
            raise ProfileError("K01.FR.16", "TxProfile sent for evseId 0")
        if transaction is None:
            raise ProfileError("K01.FR.03", "a TxProfile needs a transactionId")
    if kind in (Kind.ABSOLUTE, Kind.RECURRING) and schedule.start_schedule is None:
        raise ProfileError("K01.FR.40", f"an {kind.value} profile needs a startSchedule")
    if kind is Kind.RELATIVE and schedule.start_schedule is not None:
        raise ProfileError("K01.FR.41", "a Relative profile must not have a startSchedule")
    return ChargingProfile(
        id=fields.req_int("id", minimum=0),
        stack_level=fields.req_int("stackLevel", minimum=0),
        purpose=purpose,
        kind=kind,
        recurrency=_recurrency(fields, kind),
        valid_from=fields.time("validFrom"),
        valid_to=fields.time("validTo"),
        connector_id=evse_id,
        transaction_id=transaction if purpose is Purpose.TX else None,
        schedule=schedule,
    )


# --- the store's own file format (snake_case, exact round trip) ------------------------------------------


def _time_out(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def profile_to_dict(profile: ChargingProfile) -> dict[str, Any]:
    schedule = profile.schedule
    return {
        "id": profile.id,
        "stack_level": profile.stack_level,
        "purpose": profile.purpose.value,
        "kind": profile.kind.value,
        "recurrency": None if profile.recurrency is None else profile.recurrency.value,
        "valid_from": _time_out(profile.valid_from),
        "valid_to": _time_out(profile.valid_to),
        "connector_id": profile.connector_id,
        "transaction_id": profile.transaction_id,
        "schedule": {
            "id": schedule.id,
            "start_schedule": _time_out(schedule.start_schedule),
            "duration_s": schedule.duration_s,
            "rate_unit": schedule.rate_unit,
            "periods": [[p.start_s, p.limit, p.number_phases] for p in schedule.periods],
            "min_charging_rate": schedule.min_charging_rate,
        },
    }


def _stored_time(value: object, where: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProfileError(RULE_STATE, f"{where} must be a string, not {value!r}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ProfileError(RULE_STATE, f"{where} is not an ISO date-time: {value!r}") from None
    return _utc(moment, where)


def profile_from_dict(data: object) -> ChargingProfile:
    """The inverse of :func:`profile_to_dict`; a malformed entry raises :class:`ProfileError`."""
    fields = _Fields(data, "profile", RULE_STATE)
    schedule = _Fields(fields.data.get("schedule"), "profile.schedule", RULE_STATE)
    transaction = fields.data.get("transaction_id")
    if transaction is not None and not isinstance(transaction, str):
        raise ProfileError(RULE_STATE, f"profile.transaction_id must be a string, not {transaction!r}")
    try:
        periods = []
        for index, raw in enumerate(schedule.list_("periods")):
            if not isinstance(raw, list) or len(raw) != 3:
                raise ProfileError(RULE_STATE, f"profile.schedule.periods[{index}] must be [start_s, limit, phases]")
            periods.append(SchedulePeriod(raw[0], raw[1], raw[2]))
        return ChargingProfile(
            id=fields.req_int("id"),
            stack_level=fields.req_int("stack_level"),
            purpose=fields.choice("purpose", {p.value: p for p in Purpose}),
            kind=fields.choice("kind", _KINDS),
            recurrency=fields.choice("recurrency", _RECURRENCIES, required=False),
            valid_from=_stored_time(fields.data.get("valid_from"), "profile.valid_from"),
            valid_to=_stored_time(fields.data.get("valid_to"), "profile.valid_to"),
            connector_id=fields.req_int("connector_id"),
            transaction_id=transaction,
            schedule=ChargingSchedule(
                id=schedule.int_("id", required=False),
                start_schedule=_stored_time(schedule.data.get("start_schedule"), "profile.schedule.start_schedule"),
                duration_s=schedule.int_("duration_s", required=False),
                rate_unit=schedule.choice("rate_unit", {unit: unit for unit in RATE_UNITS}),
                periods=tuple(periods),
                min_charging_rate=schedule.number("min_charging_rate", required=False),
            ),
        )
    except ProfileError as exc:
        if exc.rule == RULE_STATE:
            raise
        raise ProfileError(RULE_STATE, f"stored profile is invalid: {exc}") from None
