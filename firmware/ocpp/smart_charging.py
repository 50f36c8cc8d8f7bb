"""Smart charging: the installed profiles, the composite schedule and the limit in force now.

The rules (OCPP 1.6 "Smart Charging", OCPP 2.0.1 K01/K08; standards-facts.md 4.4):

* Within one purpose, at each instant the valid profile with the highest stack level whose schedule
  covers that instant leads. A profile outside validFrom/validTo, before its schedule starts or past
  its duration does not cover the instant, so the next lower stack level shows through. Two profiles
  of one purpose at the same stack level covering the same instant (the store never holds such a
  pair, a plain list may) both count, and the lower limit wins.
* Profiles for connector 0 apply to every connector. A TxDefault profile for the connector replaces
  the connector-0 TxDefault profiles at every instant it covers, whatever their stack levels.
* A TxProfile replaces the TxDefault profiles at every instant it covers.
* The result is the minimum of the ChargingStationMax (1.6 ChargePointMax), ExternalConstraints and
  Tx-or-TxDefault limits, each converted to the requested unit with P = I * V * phases, where phases
  is the period's numberPhases when given and the caller's ``phases`` otherwise. The composite's
  numberPhases is the smallest one given by any leading period (each says how many phases may be
  used), None when none gives one.
* Recurring profiles restart every 24 h (Daily) or 7 days (Weekly) counted from startSchedule, so
  a weekly profile's week starts on the weekday of its startSchedule; before startSchedule they do
  not apply. A duration longer than the recurrence is cut at the restart.
* Relative profiles (and 1.6 Absolute/Recurring ones without startSchedule, see
  :mod:`firmware.ocpp.charging_profiles`) start at the transaction start. OCPP leaves the start of a
  Relative schedule to the charging station ("a situation-specific start point ... determined by
  the Charge Point"). Without a transaction this module anchors them at the time being evaluated --
  the start of the requested composite, or ``now`` for :func:`limit_at` -- i.e. it reports what a
  transaction starting then would get; that is also what libocpp does. Pass ``tx_start`` while a
  transaction runs.

Periods are reported in whole seconds (OCPP startPeriod is an integer): a boundary at a fractional
offset is reported at the next whole second.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any, NamedTuple

from firmware.ocpp.charging_profiles import (
    RATE_UNITS,
    RULE_STATE,
    ChargingProfile,
    Kind,
    ProfileError,
    Purpose,
    RateUnit,
    Recurrency,
    SchedulePeriod,
    format_rfc3339,
    profile_from_dict,
    profile_to_dict,
)

DAY = timedelta(days=1)
WEEK = timedelta(days=7)
_SECOND = timedelta(seconds=1)

# OCPP 1.6 SmartCharging configuration keys (standards-facts.md 4.2).
MAX_CHARGING_PROFILES_INSTALLED = 500  # MaxChargingProfilesInstalled default
CHARGING_SCHEDULE_MAX_PERIODS = 1440  # ChargingScheduleMaxPeriods default
# ChargeProfileMaxStackLevel has no default in the specification; this is the value the station reports.
CHARGE_PROFILE_MAX_STACK_LEVEL = 10

_STORE_FORMAT = 1
_LATEST = datetime.max.replace(tzinfo=UTC)


def _plus(moment: datetime, delta: timedelta) -> datetime:
    """``moment + delta``, saturating at the end of time (a peer may send a validTo in year 9999)."""
    try:
        return moment + delta
    except OverflowError:
        return _LATEST


# --- one profile on its own ------------------------------------------------------------------------------


def _cycle(profile: ChargingProfile) -> timedelta | None:
    if profile.kind is not Kind.RECURRING:
        return None
    return DAY if profile.recurrency is Recurrency.DAILY else WEEK


def _anchor(profile: ChargingProfile, relative_anchor: datetime) -> datetime:
    # A Relative profile never has a startSchedule (model invariant); a 1.6 Absolute/Recurring one may
    # lack it, and then counts from the start of charging (1.6 ChargingSchedule.startSchedule).
    start = profile.schedule.start_schedule
    return relative_anchor if start is None else start


def _length(profile: ChargingProfile) -> timedelta | None:
    """How long one run of the schedule covers; None = until the profile's validity ends."""
    duration_s = profile.schedule.duration_s
    duration = None if duration_s is None else timedelta(seconds=duration_s)
    cycle = _cycle(profile)
    if cycle is None:
        return duration
    return cycle if duration is None else min(duration, cycle)


def _period_at(profile: ChargingProfile, moment: datetime, relative_anchor: datetime) -> SchedulePeriod | None:
    """The profile's period in force at ``moment``, or None when the profile does not cover it."""
    if profile.valid_from is not None and moment < profile.valid_from:
        return None
    if profile.valid_to is not None and moment >= profile.valid_to:
        return None
    anchor = _anchor(profile, relative_anchor)
    if moment < anchor:
        return None
    offset = moment - anchor
    cycle = _cycle(profile)
    if cycle is not None:
        offset %= cycle
    length = _length(profile)
    if length is not None and offset >= length:
        return None
    periods = profile.schedule.periods
    # startPeriod values are whole seconds, so comparing them with the floored offset is exact.
    index = bisect_right([p.start_s for p in periods], offset // _SECOND) - 1
    return periods[index]  # index >= 0: the first period starts at 0 (K01.FR.31)


def _run_edges(profile: ChargingProfile, run_start: datetime) -> Iterator[datetime]:
    length = _length(profile)
    for period in profile.schedule.periods:
        offset = timedelta(seconds=period.start_s)
        if length is not None and offset >= length:
            break
        yield _plus(run_start, offset)
    if length is not None:
        yield _plus(run_start, length)


def _edges(profile: ChargingProfile, lo: datetime, hi: datetime, relative_anchor: datetime) -> Iterator[datetime]:
    """Every instant in [lo, hi) at which the profile's contribution may change."""
    for edge in (profile.valid_from, profile.valid_to):
        if edge is not None and lo <= edge < hi:
            yield edge
    anchor = _anchor(profile, relative_anchor)
    cycle = _cycle(profile)
    if cycle is None:
        runs: Iterable[datetime] = (anchor,)
    else:
        first = max(0, (lo - anchor) // cycle)  # the run in force at lo may have edges after lo
        runs = (_plus(anchor, k * cycle) for k in count(first))
    for run_start in runs:
        if run_start >= hi or run_start == _LATEST:
            break
        for edge in _run_edges(profile, run_start):
            if lo <= edge < hi:
                yield edge


def _finite_edges(profile: ChargingProfile, relative_anchor: datetime) -> Iterator[datetime]:
    """The edges that do not repeat: validity, a recurring profile's first start, a one-off schedule's edges."""
    for edge in (profile.valid_from, profile.valid_to):
        if edge is not None:
            yield edge
    anchor = _anchor(profile, relative_anchor)
    if _cycle(profile) is None:
        yield from _run_edges(profile, anchor)
    else:
        yield anchor


# --- combining purposes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Groups:
    caps: tuple[tuple[ChargingProfile, ...], ...]  # StationMax / ExternalConstraints, per connector scope
    tx: tuple[ChargingProfile, ...]
    tx_default_own: tuple[ChargingProfile, ...]
    tx_default_station: tuple[ChargingProfile, ...]

    def all(self) -> tuple[ChargingProfile, ...]:
        return tuple(p for group in (*self.caps, self.tx, self.tx_default_own, self.tx_default_station) for p in group)


def _groups(profiles: Iterable[ChargingProfile], connector_id: int) -> _Groups:
    profiles = tuple(profiles)

    def pick(purpose: Purpose, connector: int) -> tuple[ChargingProfile, ...]:
        return tuple(p for p in profiles if p.purpose is purpose and p.connector_id == connector)

    caps = [pick(Purpose.STATION_MAX, 0), pick(Purpose.EXTERNAL_CONSTRAINTS, 0)]
    if connector_id == 0:
        # Connector 0 asks about the station as a whole: only station-wide profiles apply.
        return _Groups(tuple(caps), (), (), pick(Purpose.TX_DEFAULT, 0))
    caps += [pick(Purpose.STATION_MAX, connector_id), pick(Purpose.EXTERNAL_CONSTRAINTS, connector_id)]
    return _Groups(
        caps=tuple(group for group in caps if group),
        tx=pick(Purpose.TX, connector_id),
        tx_default_own=pick(Purpose.TX_DEFAULT, connector_id),
        tx_default_station=pick(Purpose.TX_DEFAULT, 0),
    )


def _leaders(
    profiles: tuple[ChargingProfile, ...], moment: datetime, relative_anchor: datetime
) -> list[tuple[ChargingProfile, SchedulePeriod]]:
    best = -1
    leaders: list[tuple[ChargingProfile, SchedulePeriod]] = []
    for profile in profiles:
        period = _period_at(profile, moment, relative_anchor)
        if period is None or profile.stack_level < best:
            continue
        if profile.stack_level > best:
            best, leaders = profile.stack_level, []
        leaders.append((profile, period))
    return leaders


def convert(limit: float, from_unit: RateUnit, to_unit: RateUnit, *, voltage_v: float, phases: int) -> float:
    """A limit in the other unit: P = I * V * phases."""
    if from_unit == to_unit:
        return limit
    if from_unit == "A":
        return limit * voltage_v * phases
    return limit / (voltage_v * phases)


@dataclass(frozen=True)
class _Point:
    limit: float
    number_phases: int | None
    sources: tuple[int, ...]

    def key(self) -> tuple[float, int | None]:
        return (self.limit, self.number_phases)


def _point(
    groups: _Groups,
    moment: datetime,
    relative_anchor: datetime,
    unit: RateUnit,
    voltage_v: float,
    phases: int,
    live_phases: bool = False,
) -> _Point | None:
    leaders = [leader for group in groups.caps for leader in _leaders(group, moment, relative_anchor)]
    # TxProfile overrides TxDefault; a connector's own TxDefault overrides the connector-0 one.
    leaders += (
        _leaders(groups.tx, moment, relative_anchor)
        or _leaders(groups.tx_default_own, moment, relative_anchor)
        or _leaders(groups.tx_default_station, moment, relative_anchor)
    )
    if not leaders:
        return None
    values = [
        (
            convert(
                period.limit,
                profile.schedule.rate_unit,
                unit,
                voltage_v=voltage_v,
                phases=phases if live_phases else (period.number_phases or phases),
            ),
            period.number_phases,
            profile.id,
        )
        for profile, period in leaders
    ]
    limit = min(value for value, _, _ in values)
    given = [number for _, number, _ in values if number is not None]
    sources = tuple(sorted({profile_id for value, _, profile_id in values if value == limit}))
    return _Point(limit, min(given) if given else None, sources)


# --- the composite schedule ------------------------------------------------------------------------------


class CompositePeriod(NamedTuple):
    start_s: int  # seconds from the composite's start
    limit: float  # in the composite's unit
    number_phases: int | None


@dataclass(frozen=True)
class CompositeSchedule:
    start: datetime
    duration_s: int
    unit: RateUnit
    periods: tuple[CompositePeriod, ...]
    # [from_s, to_s) stretches with no limit at all (only when no default limit was given). A period
    # lasts until the next period or gap starts, or the schedule ends.
    gaps: tuple[tuple[int, int], ...] = ()

    def period_at(self, offset_s: float) -> CompositePeriod | None:
        if not 0 <= offset_s < self.duration_s:
            return None
        if any(lo <= offset_s < hi for lo, hi in self.gaps):
            return None
        index = bisect_right([p.start_s for p in self.periods], offset_s) - 1
        return self.periods[index] if index >= 0 else None

    def limit_at(self, moment: datetime) -> float | None:
        period = self.period_at((moment - self.start) / _SECOND)
        return None if period is None else period.limit


def _profiles_of(source: ProfileStore | Iterable[ChargingProfile]) -> tuple[ChargingProfile, ...]:
    return source.profiles() if isinstance(source, ProfileStore) else tuple(source)


def _check_moment(moment: datetime | None, name: str) -> None:
    if moment is not None and (not isinstance(moment, datetime) or moment.utcoffset() is None):
        raise ValueError(f"{name} must be a timezone-aware datetime, not {moment!r}")


def _check_electrics(voltage_v: float, phases: int) -> None:
    if not (isinstance(voltage_v, int | float) and math.isfinite(voltage_v) and voltage_v > 0):
        raise ValueError(f"voltage_v must be a positive number, not {voltage_v!r}")
    if isinstance(phases, bool) or phases not in (1, 2, 3):
        raise ValueError(f"phases must be 1, 2 or 3, not {phases!r}")


def _whole_seconds_after(delta: timedelta) -> int:
    """The offset in whole seconds, rounded up (a boundary inside a second shows from the next one)."""
    return delta.days * 86400 + delta.seconds + (1 if delta.microseconds else 0)


def composite_schedule(
    store_or_profiles: ProfileStore | Iterable[ChargingProfile],
    connector_id: int,
    start: datetime,
    duration_s: int,
    unit: RateUnit,
    *,
    tx_start: datetime | None = None,
    voltage_v: float = 230.0,
    phases: int = 3,
    default_limit: float | None = None,
) -> CompositeSchedule:
    """The composite schedule of ``connector_id`` over [start, start + duration_s), in ``unit``.

    Stretches no profile covers get ``default_limit`` (in ``unit``), or become gaps when it is None.
    Raises ValueError for a bad argument.
    """
    _check_moment(start, "start")
    _check_moment(tx_start, "tx_start")
    if isinstance(duration_s, bool) or not isinstance(duration_s, int) or duration_s < 1:
        raise ValueError(f"duration_s must be an integer >= 1, not {duration_s!r}")
    if unit not in RATE_UNITS:
        raise ValueError(f"unit must be 'A' or 'W', not {unit!r}")
    if isinstance(connector_id, bool) or not isinstance(connector_id, int) or connector_id < 0:
        raise ValueError(f"connector_id must be an integer >= 0, not {connector_id!r}")
    _check_electrics(voltage_v, phases)
    if default_limit is not None and not (math.isfinite(default_limit) and default_limit >= 0):
        raise ValueError(f"default_limit must be finite and >= 0, not {default_limit!r}")

    relative_anchor = start if tx_start is None else tx_start
    groups = _groups(_profiles_of(store_or_profiles), connector_id)
    end = _plus(start, timedelta(seconds=duration_s))
    offsets = {0}
    for profile in groups.all():
        offsets.update(_whole_seconds_after(edge - start) for edge in _edges(profile, start, end, relative_anchor))

    periods: list[CompositePeriod] = []
    gaps: list[tuple[int, int]] = []
    gap_from: int | None = None
    for offset in sorted(o for o in offsets if o < duration_s):
        point = _point(groups, _plus(start, timedelta(seconds=offset)), relative_anchor, unit, voltage_v, phases)
        if point is None and default_limit is not None:
            point = _Point(float(default_limit), None, ())
        if point is None:
            if gap_from is None:
                gap_from = offset
            continue
        if gap_from is not None:
            gaps.append((gap_from, offset))
            gap_from = None
        elif periods and (periods[-1].limit, periods[-1].number_phases) == point.key():
            continue  # merge equal neighbours
        periods.append(CompositePeriod(offset, point.limit, point.number_phases))
    if gap_from is not None:
        gaps.append((gap_from, duration_s))
    return CompositeSchedule(start, duration_s, unit, tuple(periods), tuple(gaps))


# --- the limit in force now ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleLimit:
    amps: float | None  # None: no profile limits the connector now
    watts: float | None
    number_phases: int | None
    source_profile_ids: tuple[int, ...]  # the profiles that set the current limit (ties: all)
    next_change: datetime | None  # when the limit changes next; None: never, as installed now


def limit_at(
    store_or_profiles: ProfileStore | Iterable[ChargingProfile],
    connector_id: int,
    now: datetime,
    *,
    tx_start: datetime | None = None,
    voltage_v: float = 230.0,
    phases: int = 3,
    live_phases: bool = False,
) -> ScheduleLimit:
    """The schedule's limit for ``connector_id`` at ``now`` and the instant it next changes.

    ``live_phases``: ``phases`` are the phases that really carry the current, and every A/W conversion
    uses them instead of a period's numberPhases: a limit in W applied as amps per phase must count the
    phases the EV draws on, or numberPhases = 1 on a three-phase connector would triple its power.

    ``next_change`` is exact: after the last non-repeating edge (validity, absolute and relative
    schedule edges, recurrence starts) every profile repeats with a period dividing 7 days, so a week
    without a change after it means no change ever.
    """
    _check_moment(now, "now")
    _check_moment(tx_start, "tx_start")
    _check_electrics(voltage_v, phases)
    relative_anchor = now if tx_start is None else tx_start
    groups = _groups(_profiles_of(store_or_profiles), connector_id)

    def state(moment: datetime) -> tuple[_Point | None, _Point | None]:
        return (
            _point(groups, moment, relative_anchor, "A", voltage_v, phases, live_phases),
            _point(groups, moment, relative_anchor, "W", voltage_v, phases, live_phases),
        )

    def key(points: tuple[_Point | None, _Point | None]) -> tuple[tuple[float, int | None] | None, ...]:
        return tuple(None if p is None else p.key() for p in points)

    amps, watts = state(now)
    current = key((amps, watts))
    profiles = groups.all()
    finite = sorted({edge for p in profiles for edge in _finite_edges(p, relative_anchor) if edge > now})
    recurring = [p for p in profiles if p.kind is Kind.RECURRING]
    next_change: datetime | None = None
    for index, segment_start in enumerate([now, *finite]):
        segment_end = finite[index] if index < len(finite) else None
        horizon = _plus(segment_start, WEEK) if segment_end is None else min(_plus(segment_start, WEEK), segment_end)
        repeating = sorted(
            {e for p in recurring for e in _edges(p, segment_start, horizon, relative_anchor) if e > segment_start}
        )
        for edge in repeating:
            if key(state(edge)) != current:
                next_change = edge
                break
        if next_change is None and segment_end is not None and key(state(segment_end)) != current:
            next_change = segment_end
        if next_change is not None:
            break
    binding = amps if amps is not None else watts
    return ScheduleLimit(
        amps=None if amps is None else amps.limit,
        watts=None if watts is None else watts.limit,
        number_phases=None if binding is None else binding.number_phases,
        source_profile_ids=() if binding is None else binding.sources,
        next_change=next_change,
    )


# --- GetCompositeSchedule payloads -----------------------------------------------------------------------


def _wire_periods(composite: CompositeSchedule) -> list[dict[str, Any]]:
    if not composite.periods or composite.gaps:
        raise ValueError(
            "a GetCompositeSchedule answer cannot have gaps (OCPP schedules have a limit at every instant): "
            "compute the composite with a default_limit"
        )
    out: list[dict[str, Any]] = []
    for period in composite.periods:
        # 1.6 ChargingSchedulePeriod.limit is a multiple of 0.1; round down so the report never overstates.
        limit = math.floor(period.limit * 10 + 1e-9) / 10
        if out and out[-1]["limit"] == limit and out[-1].get("numberPhases") == period.number_phases:
            continue
        entry: dict[str, Any] = {"startPeriod": period.start_s, "limit": limit}
        if period.number_phases is not None:
            entry["numberPhases"] = period.number_phases
        out.append(entry)
    return out


def composite_to_v16(composite: CompositeSchedule, connector_id: int) -> dict[str, Any]:
    """A 1.6 GetCompositeSchedule.conf payload (status Accepted). Raises ValueError on gaps."""
    start = format_rfc3339(composite.start)
    return {
        "status": "Accepted",
        "connectorId": connector_id,
        "scheduleStart": start,
        "chargingSchedule": {
            "duration": composite.duration_s,
            "startSchedule": start,
            "chargingRateUnit": composite.unit,
            "chargingSchedulePeriod": _wire_periods(composite),
        },
    }


def composite_to_v201(composite: CompositeSchedule, evse_id: int) -> dict[str, Any]:
    """A 2.0.1 GetCompositeScheduleResponse payload (status Accepted). Raises ValueError on gaps."""
    return {
        "status": "Accepted",
        "schedule": {
            "evseId": evse_id,
            "duration": composite.duration_s,
            "scheduleStart": format_rfc3339(composite.start),
            "chargingRateUnit": composite.unit,
            "chargingSchedulePeriod": _wire_periods(composite),
        },
    }


# --- the store -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstallResult:
    accepted: bool
    reason: str = ""
    replaced: tuple[int, ...] = ()  # ids of the profiles the new one replaced


class ProfileStore:
    """The installed charging profiles of one station, with the 1.6 SetChargingProfile/ClearChargingProfile
    semantics. It holds no I/O: the caller persists :meth:`to_json` and restores with :meth:`from_json`."""

    def __init__(
        self,
        *,
        max_profiles: int = MAX_CHARGING_PROFILES_INSTALLED,
        max_periods: int = CHARGING_SCHEDULE_MAX_PERIODS,
        max_stack_level: int = CHARGE_PROFILE_MAX_STACK_LEVEL,
    ) -> None:
        self.max_profiles = max_profiles
        self.max_periods = max_periods
        self.max_stack_level = max_stack_level
        self._profiles: dict[int, ChargingProfile] = {}

    def install(self, profile: ChargingProfile, *, active_transaction_id: str | None) -> InstallResult:
        """Install ``profile``; ``active_transaction_id`` is the transaction running on its connector."""
        if profile.stack_level > self.max_stack_level:
            reason = f"stackLevel {profile.stack_level} > ChargeProfileMaxStackLevel {self.max_stack_level}"
            return InstallResult(False, reason)
        if len(profile.schedule.periods) > self.max_periods:
            return InstallResult(
                False,
                f"{len(profile.schedule.periods)} periods > ChargingScheduleMaxPeriods {self.max_periods}",
            )
        if profile.purpose is Purpose.TX:
            if active_transaction_id is None:
                # OCPP 1.6 §3.13.4 / K01.FR.09: a TxProfile needs a transaction on its connector.
                return InstallResult(False, f"no active transaction on connector {profile.connector_id} [K01.FR.09]")
            if profile.transaction_id is not None and profile.transaction_id != active_transaction_id:
                return InstallResult(
                    False,
                    f"transactionId {profile.transaction_id} is not the transaction on connector "
                    f"{profile.connector_id} ({active_transaction_id}) [K01.FR.33]",
                )
            # 1.6 lets transactionId be absent (e.g. a profile from RemoteStartTransaction): bind it.
            profile = replace(profile, transaction_id=active_transaction_id)
        slot = (profile.stack_level, profile.purpose, profile.connector_id)
        # OCPP 1.6 SetChargingProfile: the same chargingProfileId, or the same stackLevel and purpose
        # on the same connector, is replaced.
        replaced = tuple(
            sorted(
                old.id
                for old in self._profiles.values()
                if old.id == profile.id or (old.stack_level, old.purpose, old.connector_id) == slot
            )
        )
        if len(self._profiles) - len(replaced) + 1 > self.max_profiles:
            return InstallResult(False, f"MaxChargingProfilesInstalled {self.max_profiles} reached")
        for old_id in replaced:
            del self._profiles[old_id]
        self._profiles[profile.id] = profile
        return InstallResult(True, "", replaced)

    def clear(
        self,
        id: int | None = None,
        connector_id: int | None = None,
        purpose: Purpose | None = None,
        stack_level: int | None = None,
    ) -> int:
        """1.6 ClearChargingProfile: by id alone when given, else all profiles matching every given
        filter (none given: all). Returns how many were cleared (0 -> the answer is Unknown)."""
        if id is not None:
            victims = [id] if id in self._profiles else []
        else:
            victims = [
                p.id
                for p in self._profiles.values()
                if (connector_id is None or p.connector_id == connector_id)
                and (purpose is None or p.purpose is purpose)
                and (stack_level is None or p.stack_level == stack_level)
            ]
        for victim in victims:
            del self._profiles[victim]
        return len(victims)

    def end_transaction(self, connector_id: int) -> int:
        """Drop the TxProfiles of ``connector_id`` (they end with their transaction); returns how many."""
        return self.clear(connector_id=connector_id, purpose=Purpose.TX) if connector_id > 0 else 0

    def profiles(self) -> tuple[ChargingProfile, ...]:
        return tuple(self._profiles[key] for key in sorted(self._profiles))

    def to_json(self) -> str:
        return json.dumps({"format": _STORE_FORMAT, "profiles": [profile_to_dict(p) for p in self.profiles()]})

    @classmethod
    def from_json(
        cls,
        text: str,
        *,
        max_profiles: int = MAX_CHARGING_PROFILES_INSTALLED,
        max_periods: int = CHARGING_SCHEDULE_MAX_PERIODS,
        max_stack_level: int = CHARGE_PROFILE_MAX_STACK_LEVEL,
    ) -> ProfileStore:
        """A store from :meth:`to_json` output; anything malformed raises :class:`ProfileError`."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise ProfileError(RULE_STATE, f"profile store is not JSON: {exc}") from None
        if (
            not isinstance(data, dict)
            or data.get("format") != _STORE_FORMAT
            or not isinstance(data.get("profiles"), list)
        ):
            raise ProfileError(RULE_STATE, f"profile store must be {{'format': {_STORE_FORMAT}, 'profiles': [...]}}")
        store = cls(max_profiles=max_profiles, max_periods=max_periods, max_stack_level=max_stack_level)
        for raw in data["profiles"]:
            profile = profile_from_dict(raw)
            if profile.id in store._profiles:
                raise ProfileError(RULE_STATE, f"profile id {profile.id} appears twice")
            store._profiles[profile.id] = profile
        return store
