"""Smart charging: parsing and validating profiles, the store, the composite schedule and the limit in force."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.ocpp.charging_profiles import (
    RATE_UNITS,
    ChargingProfile,
    ChargingSchedule,
    Kind,
    ProfileError,
    Purpose,
    RateUnit,
    Recurrency,
    SchedulePeriod,
    parse_rfc3339,
    profile_from_v16,
    profile_from_v201,
)
from firmware.ocpp.smart_charging import (
    CompositePeriod,
    CompositeSchedule,
    ProfileStore,
    composite_schedule,
    composite_to_v16,
    composite_to_v201,
    limit_at,
)
from tests.firmware.ocpp.golden_composite import CASES, GoldenCase, v16, v201

T10 = datetime(2024, 1, 1, 10, tzinfo=UTC)


def _parse(case: GoldenCase) -> list[ChargingProfile]:
    parsers = {"1.6": profile_from_v16, "2.0.1": profile_from_v201}
    return [parsers[version](payload, connector) for version, payload, connector in case.profiles]


def _time(text: str | None) -> datetime | None:
    return None if text is None else parse_rfc3339(text, "test", "test")


# --- golden composite schedules --------------------------------------------------------------------------


def test_the_golden_table_has_at_least_25_cases() -> None:
    assert len(CASES) >= 25
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_golden_composite(case: GoldenCase) -> None:
    start = _time(case.start)
    assert start is not None
    composite = composite_schedule(
        _parse(case),
        case.connector_id,
        start,
        case.duration_s,
        case.unit,
        tx_start=_time(case.tx_start),
        voltage_v=case.voltage_v,
        phases=case.phases,
        default_limit=case.default_limit,
    )
    assert composite.start == start and composite.duration_s == case.duration_s and composite.unit == case.unit
    assert [(p.start_s, p.number_phases) for p in composite.periods] == [(s, n) for s, _, n in case.expected]
    assert [p.limit for p in composite.periods] == pytest.approx([limit for _, limit, _ in case.expected])
    assert list(composite.gaps) == case.gaps


def _anchored(case: GoldenCase) -> bool:
    """limit_at anchors transaction-less relative schedules at ``now``, the composite at its start."""
    if case.tx_start is not None:
        return True
    return all(p.schedule.start_schedule is not None for p in _parse(case))


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.default_limit is None and _anchored(c)],
    ids=[c.name for c in CASES if c.default_limit is None and _anchored(c)],
)
def test_limit_at_agrees_with_the_golden_composite(case: GoldenCase) -> None:
    start = _time(case.start)
    assert start is not None
    expected_values: dict[int, float | None] = {s: limit for s, limit, _ in case.expected}
    expected_values.update({lo: None for lo, _ in case.gaps})
    for offset, value in expected_values.items():
        limit = limit_at(
            _parse(case),
            case.connector_id,
            start + timedelta(seconds=offset),
            tx_start=_time(case.tx_start),
            voltage_v=case.voltage_v,
            phases=case.phases,
        )
        got = limit.amps if case.unit == "A" else limit.watts
        assert got == (None if value is None else pytest.approx(value)), offset


# --- parsing ---------------------------------------------------------------------------------------------


def test_v16_parse_normalises_every_field() -> None:
    payload = v16(
        7,
        3,
        "TxProfile",
        "Recurring",
        [(0, 16.5, 1), (60, 8)],
        start="2024-01-01T12:00:00+02:00",
        duration=600,
        recurrency="Daily",
        valid_from="2024-01-01T00:00:00Z",
        valid_to="2024-02-01T00:00:00.250Z",
        tx=42,
    )
    payload["chargingSchedule"]["minChargingRate"] = 6
    profile = profile_from_v16(payload, 2)
    assert profile == ChargingProfile(
        id=7,
        stack_level=3,
        purpose=Purpose.TX,
        kind=Kind.RECURRING,
        recurrency=Recurrency.DAILY,
        valid_from=datetime(2024, 1, 1, tzinfo=UTC),
        valid_to=datetime(2024, 2, 1, 0, 0, 0, 250000, tzinfo=UTC),
        connector_id=2,
        transaction_id="42",
        schedule=ChargingSchedule(
            id=None,
            start_schedule=datetime(2024, 1, 1, 10, tzinfo=UTC),
            duration_s=600,
            rate_unit="A",
            periods=(SchedulePeriod(0, 16.5, 1), SchedulePeriod(60, 8.0, None)),
            min_charging_rate=6.0,
        ),
    )
    assert profile.schedule.start_schedule is not None and profile.schedule.start_schedule.tzinfo is UTC


def test_v201_parse_normalises_every_field() -> None:
    payload = v201(9, 1, "ChargingStationExternalConstraints", "Absolute", [[(0, 11000)]], start="2024-01-01T10:00:00Z")
    payload["validTo"] = "2024-01-02T00:00:00Z"
    profile = profile_from_v201(payload, 0)
    assert profile.purpose is Purpose.EXTERNAL_CONSTRAINTS
    assert profile.schedule == ChargingSchedule(1, T10, None, "A", (SchedulePeriod(0, 11000.0),))
    assert profile.valid_to == datetime(2024, 1, 2, tzinfo=UTC)
    tx = profile_from_v201(v201(1, 0, "TxProfile", "Relative", [[(0, 16)]], tx="abc-1"), 1)
    assert tx.transaction_id == "abc-1" and tx.kind is Kind.RELATIVE


def _v16_base() -> dict[str, Any]:
    return v16(1, 0, "TxDefaultProfile", "Absolute", [(0, 16), (60, 8)], start="2024-01-01T10:00:00Z")


def _v201_base() -> dict[str, Any]:
    return v201(1, 0, "TxDefaultProfile", "Absolute", [[(0, 16), (60, 8)]], start="2024-01-01T10:00:00Z")


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    keys = path.split(".")

    def mutate(payload: dict[str, Any]) -> None:
        target: Any = payload
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        last = keys[-1]
        if value is _DELETE:
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return mutate


_DELETE = object()
S16 = "chargingSchedule"
S201 = "chargingSchedule.0"

# (name, version, mutations, connector, expected rule)
REJECTIONS: list[tuple[str, str, list[Callable[[dict[str, Any]], None]], int, str]] = [
    ("1.6 first startPeriod not 0", "1.6", [_set(f"{S16}.chargingSchedulePeriod.0.startPeriod", 5)], 1, "K01.FR.31"),
    (
        "2.0.1 first startPeriod not 0",
        "2.0.1",
        [_set(f"{S201}.chargingSchedulePeriod.0.startPeriod", 5)],
        1,
        "K01.FR.31",
    ),
    ("1.6 periods not increasing", "1.6", [_set(f"{S16}.chargingSchedulePeriod.1.startPeriod", 0)], 1, "K01.FR.35"),
    (
        "2.0.1 periods not increasing",
        "2.0.1",
        [_set(f"{S201}.chargingSchedulePeriod.1.startPeriod", 0)],
        1,
        "K01.FR.35",
    ),
    ("1.6 no periods", "1.6", [_set(f"{S16}.chargingSchedulePeriod", [])], 1, "K01.FR.31"),
    (
        "1.6 ChargePointMax at a connector",
        "1.6",
        [_set("chargingProfilePurpose", "ChargePointMaxProfile")],
        1,
        "OCPP 1.6 ChargingProfilePurposeType: ChargePointMaxProfile only at connectorId 0",
    ),
    (
        "2.0.1 ChargingStationMax at an EVSE",
        "2.0.1",
        [_set("chargingProfilePurpose", "ChargingStationMaxProfile")],
        1,
        "K01.FR.03",
    ),
    (
        "2.0.1 ChargingStationMax Relative",
        "2.0.1",
        [
            _set("chargingProfilePurpose", "ChargingStationMaxProfile"),
            _set("chargingProfileKind", "Relative"),
            _set(f"{S201}.startSchedule", _DELETE),
        ],
        0,
        "K01.FR.38",
    ),
    ("2.0.1 Absolute without startSchedule", "2.0.1", [_set(f"{S201}.startSchedule", _DELETE)], 1, "K01.FR.40"),
    (
        "2.0.1 Recurring without startSchedule",
        "2.0.1",
        [
            _set("chargingProfileKind", "Recurring"),
            _set("recurrencyKind", "Daily"),
            _set(f"{S201}.startSchedule", _DELETE),
        ],
        1,
        "K01.FR.40",
    ),
    ("2.0.1 Relative with startSchedule", "2.0.1", [_set("chargingProfileKind", "Relative")], 1, "K01.FR.41"),
    (
        "1.6 Recurring without recurrencyKind",
        "1.6",
        [_set("chargingProfileKind", "Recurring")],
        1,
        "ChargingProfile.recurrencyKind required for Recurring",
    ),
    (
        "2.0.1 Recurring without recurrencyKind",
        "2.0.1",
        [_set("chargingProfileKind", "Recurring")],
        1,
        "ChargingProfile.recurrencyKind required for Recurring",
    ),
    (
        "1.6 TxProfile at connector 0",
        "1.6",
        [_set("chargingProfilePurpose", "TxProfile")],
        0,
        "OCPP 1.6 ChargingProfilePurposeType: TxProfile only at connectorId > 0",
    ),
    (
        "2.0.1 TxProfile at EVSE 0",
        "2.0.1",
        [_set("chargingProfilePurpose", "TxProfile"), _set("transactionId", "t1")],
        0,
        "K01.FR.16",
    ),
    ("2.0.1 TxProfile without transactionId", "2.0.1", [_set("chargingProfilePurpose", "TxProfile")], 1, "K01.FR.03"),
    ("2.0.1 phaseToUse", "2.0.1", [_set(f"{S201}.chargingSchedulePeriod.0.phaseToUse", 1)], 1, "K01.FR.20"),
    ("2.0.1 four schedules", "2.0.1", [_set("chargingSchedule", [{}, {}, {}, {}])], 1, "schema"),
    ("2.0.1 no schedule", "2.0.1", [_set("chargingSchedule", [])], 1, "schema"),
    (
        "1.6 validTo before validFrom",
        "1.6",
        [_set("validFrom", "2024-01-02T00:00:00Z"), _set("validTo", "2024-01-01T00:00:00Z")],
        1,
        "validFrom before validTo",
    ),
    (
        "1.6 negative limit",
        "1.6",
        [_set(f"{S16}.chargingSchedulePeriod.0.limit", -1)],
        1,
        "ChargingSchedulePeriod.limit",
    ),
    (
        "1.6 numberPhases 4",
        "1.6",
        [_set(f"{S16}.chargingSchedulePeriod.0.numberPhases", 4)],
        1,
        "ChargingSchedulePeriod.numberPhases",
    ),
    ("1.6 unknown rate unit", "1.6", [_set(f"{S16}.chargingRateUnit", "kW")], 1, "schema"),
    ("1.6 unknown purpose", "1.6", [_set("chargingProfilePurpose", "ChargingStationMaxProfile")], 0, "schema"),
    ("2.0.1 unknown purpose", "2.0.1", [_set("chargingProfilePurpose", "ChargePointMaxProfile")], 0, "schema"),
    ("1.6 unknown kind", "1.6", [_set("chargingProfileKind", "Dynamic")], 1, "schema"),
    ("1.6 missing id", "1.6", [_set("chargingProfileId", _DELETE)], 1, "schema"),
    ("1.6 bool stack level", "1.6", [_set("stackLevel", True)], 1, "schema"),
    ("1.6 negative stack level", "1.6", [_set("stackLevel", -1)], 1, "schema"),
    ("1.6 negative duration", "1.6", [_set(f"{S16}.duration", -5)], 1, "schema"),
    ("1.6 float startPeriod", "1.6", [_set(f"{S16}.chargingSchedulePeriod.1.startPeriod", 60.5)], 1, "schema"),
    ("1.6 string limit", "1.6", [_set(f"{S16}.chargingSchedulePeriod.0.limit", "16")], 1, "schema"),
    ("1.6 timestamp without offset", "1.6", [_set(f"{S16}.startSchedule", "2024-01-01T10:00:00")], 1, "schema"),
    ("1.6 date only", "1.6", [_set("validFrom", "2024-01-01")], 1, "schema"),
    ("1.6 impossible date", "1.6", [_set("validTo", "2024-02-30T00:00:00Z")], 1, "schema"),
    ("1.6 schedule not an object", "1.6", [_set(S16, [1])], 1, "schema"),
    ("1.6 period not an object", "1.6", [_set(f"{S16}.chargingSchedulePeriod", [7])], 1, "schema"),
    (
        "2.0.1 integer transactionId",
        "2.0.1",
        [_set("chargingProfilePurpose", "TxProfile"), _set("transactionId", 5)],
        1,
        "schema",
    ),
]


@pytest.mark.parametrize(
    ("version", "mutations", "connector", "rule"), [r[1:] for r in REJECTIONS], ids=[r[0] for r in REJECTIONS]
)
def test_invalid_profiles_are_rejected_naming_the_rule(
    version: str, mutations: list[Callable[[dict[str, Any]], None]], connector: int, rule: str
) -> None:
    payload = _v16_base() if version == "1.6" else _v201_base()
    for mutate in mutations:
        mutate(payload)
    parse = profile_from_v16 if version == "1.6" else profile_from_v201
    with pytest.raises(ProfileError) as caught:
        parse(payload, connector)
    assert rule in caught.value.rule
    assert caught.value.rule in str(caught.value)


@pytest.mark.parametrize("payload", [None, [], "profile", 5])
def test_a_payload_that_is_not_an_object_is_rejected(payload: object) -> None:
    with pytest.raises(ProfileError, match="must be an object"):
        profile_from_v16(payload, 1)
    with pytest.raises(ProfileError, match="must be an object"):
        profile_from_v201(payload, 1)


@pytest.mark.parametrize("connector", [-1, True, "1"])
def test_a_bad_connector_id_is_rejected(connector: Any) -> None:
    with pytest.raises(ProfileError, match="connectorId"):
        profile_from_v16(_v16_base(), connector)
    with pytest.raises(ProfileError, match="evseId"):
        profile_from_v201(_v201_base(), connector)


def test_v16_is_lenient_where_its_specification_allows() -> None:
    absolute = _v16_base()
    del absolute[S16]["startSchedule"]
    assert profile_from_v16(absolute, 1).schedule.start_schedule is None  # anchored at the start of charging

    relative = _v16_base()
    relative["chargingProfileKind"] = "Relative"
    assert profile_from_v16(relative, 1).schedule.start_schedule is None  # dropped, not refused

    station_relative = _v16_base()
    station_relative.update(chargingProfilePurpose="ChargePointMaxProfile", chargingProfileKind="Relative")
    assert profile_from_v16(station_relative, 0).kind is Kind.RELATIVE

    tx_without_id = _v16_base()
    tx_without_id["chargingProfilePurpose"] = "TxProfile"
    assert profile_from_v16(tx_without_id, 1).transaction_id is None

    stray_recurrency = _v16_base()
    stray_recurrency["recurrencyKind"] = "Weekly"
    assert profile_from_v16(stray_recurrency, 1).recurrency is None

    tx_default_with_tx = _v16_base()
    tx_default_with_tx["transactionId"] = 5
    assert profile_from_v16(tx_default_with_tx, 1).transaction_id is None


def test_the_model_refuses_what_no_parser_may_build() -> None:
    schedule = ChargingSchedule(None, None, None, "A", (SchedulePeriod(0, 16),))
    with pytest.raises(ProfileError, match=r"K01\.FR\.41"):
        ChargingProfile(
            1, 0, Purpose.TX_DEFAULT, Kind.RELATIVE, None, None, None, 1, None, replace(schedule, start_schedule=T10)
        )
    with pytest.raises(ProfileError, match="timezone-aware"):
        ChargingSchedule(None, datetime(2024, 1, 1), None, "A", (SchedulePeriod(0, 16),))
    with pytest.raises(ProfileError, match="recurrencyKind"):
        ChargingProfile(1, 0, Purpose.TX_DEFAULT, Kind.ABSOLUTE, Recurrency.DAILY, None, None, 1, None, schedule)
    with pytest.raises(ProfileError, match="'A' or 'W'"):
        ChargingSchedule(None, None, None, "kW", (SchedulePeriod(0, 16),))  # type: ignore[arg-type]


# --- the store -------------------------------------------------------------------------------------------


def _profile(
    pid: int,
    stack: int = 0,
    purpose: Purpose = Purpose.TX_DEFAULT,
    connector: int = 0,
    limit: float = 16.0,
    *,
    tx: str | None = None,
    periods: int = 1,
) -> ChargingProfile:
    return ChargingProfile(
        id=pid,
        stack_level=stack,
        purpose=purpose,
        kind=Kind.ABSOLUTE,
        recurrency=None,
        valid_from=None,
        valid_to=None,
        connector_id=connector,
        transaction_id=tx,
        schedule=ChargingSchedule(None, T10, None, "A", tuple(SchedulePeriod(i * 60, limit) for i in range(periods))),
    )


# (name, installed before, new profile, active transaction, accepted, replaced ids, ids afterwards)
INSTALLS: list[tuple[str, list[ChargingProfile], ChargingProfile, str | None, bool, tuple[int, ...], list[int]]] = [
    ("new profile is added", [_profile(1)], _profile(2, stack=1), None, True, (), [1, 2]),
    ("same id replaces", [_profile(1, stack=0)], _profile(1, stack=3, limit=8), None, True, (1,), [1]),
    (
        "same stack level, purpose and connector replaces",
        [_profile(1, stack=2)],
        _profile(5, stack=2),
        None,
        True,
        (1,),
        [5],
    ),
    (
        "same stack level, other purpose stays",
        [_profile(1, 2, Purpose.STATION_MAX)],
        _profile(5, 2),
        None,
        True,
        (),
        [1, 5],
    ),
    (
        "same stack level, other connector stays",
        [_profile(1, 2, connector=1)],
        _profile(5, 2, connector=2),
        None,
        True,
        (),
        [1, 5],
    ),
    ("id and slot both replaced", [_profile(1, 0), _profile(2, 4)], _profile(1, 4), None, True, (1, 2), [1]),
    ("TxProfile without a transaction", [], _profile(3, purpose=Purpose.TX, connector=1), None, False, (), []),
    ("TxProfile of another transaction", [], _profile(3, purpose=Purpose.TX, connector=1, tx="9"), "8", False, (), []),
    (
        "TxProfile of the running transaction",
        [],
        _profile(3, purpose=Purpose.TX, connector=1, tx="8"),
        "8",
        True,
        (),
        [3],
    ),
    ("stack level above the maximum", [], _profile(1, stack=11), None, False, (), []),
    ("stack level at the maximum", [], _profile(1, stack=10), None, True, (), [1]),
    ("too many periods", [], _profile(1, periods=1441), None, False, (), []),
]


@pytest.mark.parametrize(
    ("before", "new", "active", "accepted", "replaced", "after"),
    [i[1:] for i in INSTALLS],
    ids=[i[0] for i in INSTALLS],
)
def test_install_semantics(
    before: list[ChargingProfile],
    new: ChargingProfile,
    active: str | None,
    accepted: bool,
    replaced: tuple[int, ...],
    after: list[int],
) -> None:
    store = ProfileStore()
    for profile in before:
        assert store.install(profile, active_transaction_id=None).accepted
    result = store.install(new, active_transaction_id=active)
    assert result.accepted is accepted, result.reason
    assert bool(result.reason) is not accepted
    assert result.replaced == replaced
    assert [p.id for p in store.profiles()] == after
    if accepted:
        assert new.id in after


def test_a_tx_profile_without_transaction_id_is_bound_to_the_running_transaction() -> None:
    store = ProfileStore()
    assert store.install(_profile(3, purpose=Purpose.TX, connector=1), active_transaction_id="77").accepted
    assert store.profiles()[0].transaction_id == "77"


def test_the_profile_limit_counts_replacements() -> None:
    store = ProfileStore(max_profiles=2)
    assert store.install(_profile(1, 0), active_transaction_id=None).accepted
    assert store.install(_profile(2, 1), active_transaction_id=None).accepted
    full = store.install(_profile(3, 2), active_transaction_id=None)
    assert not full.accepted and "MaxChargingProfilesInstalled" in full.reason
    assert store.install(_profile(2, 1, limit=6), active_transaction_id=None).accepted  # a replacement fits
    assert [p.schedule.periods[0].limit for p in store.profiles()] == [16.0, 6.0]


def _clear_fixture() -> ProfileStore:
    store = ProfileStore()
    for profile in [
        _profile(1, 0, Purpose.STATION_MAX, 0),
        _profile(2, 0, Purpose.TX_DEFAULT, 0),
        _profile(3, 1, Purpose.TX_DEFAULT, 0),
        _profile(4, 1, Purpose.TX_DEFAULT, 2),
        _profile(5, 0, Purpose.TX, 1, tx="t"),
        _profile(6, 1, Purpose.TX, 2, tx="u"),
    ]:
        assert store.install(profile, active_transaction_id=profile.transaction_id).accepted
    return store


CLEARS: list[tuple[str, dict[str, Any], int, list[int]]] = [
    ("everything", {}, 6, []),
    ("by id", {"id": 3}, 1, [1, 2, 4, 5, 6]),
    ("by id ignores the other criteria", {"id": 3, "connector_id": 2, "purpose": Purpose.TX}, 1, [1, 2, 4, 5, 6]),
    ("unknown id", {"id": 99}, 0, [1, 2, 3, 4, 5, 6]),
    ("connector 0 only", {"connector_id": 0}, 3, [4, 5, 6]),
    ("by purpose", {"purpose": Purpose.TX_DEFAULT}, 3, [1, 5, 6]),
    ("purpose and stack level", {"purpose": Purpose.TX_DEFAULT, "stack_level": 1}, 2, [1, 2, 5, 6]),
    ("connector and purpose", {"connector_id": 2, "purpose": Purpose.TX}, 1, [1, 2, 3, 4, 5]),
    ("criteria matching nothing", {"connector_id": 1, "purpose": Purpose.STATION_MAX}, 0, [1, 2, 3, 4, 5, 6]),
]


@pytest.mark.parametrize(("criteria", "count", "after"), [c[1:] for c in CLEARS], ids=[c[0] for c in CLEARS])
def test_clear_semantics(criteria: dict[str, Any], count: int, after: list[int]) -> None:
    store = _clear_fixture()
    assert store.clear(**criteria) == count
    assert [p.id for p in store.profiles()] == after


def test_end_transaction_drops_only_that_connectors_tx_profiles() -> None:
    store = _clear_fixture()
    assert store.end_transaction(2) == 1
    assert [p.id for p in store.profiles()] == [1, 2, 3, 4, 5]
    assert store.end_transaction(2) == 0
    assert store.end_transaction(0) == 0


def test_json_round_trip_is_exact() -> None:
    store = ProfileStore()
    profiles = [
        profile_from_v16(
            v16(
                1,
                2,
                "TxDefaultProfile",
                "Recurring",
                [(0, 16.3, 1), (3600, 0.1)],
                start="2024-01-01T10:00:00.123456Z",
                duration=7200,
                recurrency="Weekly",
                valid_from="2024-01-01T00:00:00Z",
                valid_to="2025-01-01T00:00:00Z",
            ),
            0,
        ),
        profile_from_v201(
            v201(
                2,
                0,
                "ChargingStationMaxProfile",
                "Absolute",
                [[(0, 22080)]],
                unit="W",
                start="2024-01-01T00:00:00+01:00",
            ),
            0,
        ),
        profile_from_v16(v16(3, 1, "TxProfile", "Relative", [(0, 32)], tx=12), 1),
    ]
    profiles[0] = replace(profiles[0], schedule=replace(profiles[0].schedule, min_charging_rate=6.1))
    for profile in profiles:
        assert store.install(profile, active_transaction_id=profile.transaction_id).accepted
    text = store.to_json()
    restored = ProfileStore.from_json(text)
    assert restored.profiles() == store.profiles()
    assert restored.to_json() == text
    assert json.loads(text)["format"] == 1


def _stored(mutate: Callable[[dict[str, Any]], None]) -> str:
    store = ProfileStore()
    store.install(_profile(1), active_transaction_id=None)
    data = json.loads(store.to_json())
    mutate(data)
    return json.dumps(data)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        json.dumps({"format": 2, "profiles": []}),
        json.dumps({"format": 1}),
        _stored(lambda d: d["profiles"].append(copy.deepcopy(d["profiles"][0]))),
        _stored(lambda d: d["profiles"][0].update(purpose="Bogus")),
        _stored(lambda d: d["profiles"][0]["schedule"].update(periods=[[5, 16.0, None]])),
        _stored(lambda d: d["profiles"][0]["schedule"].update(periods=[[0, 16.0]])),
        _stored(lambda d: d["profiles"][0]["schedule"].update(start_schedule="2024-01-01T10:00:00")),
        _stored(lambda d: d["profiles"][0]["schedule"].update(start_schedule="yesterday")),
        _stored(lambda d: d["profiles"][0].update(transaction_id=5)),
        _stored(lambda d: d["profiles"][0].pop("schedule")),
    ],
)
def test_a_bad_store_file_raises_profile_error(text: str) -> None:
    with pytest.raises(ProfileError) as caught:
        ProfileStore.from_json(text)
    assert caught.value.rule == "profile store file"


# --- limit_at --------------------------------------------------------------------------------------------


def test_limit_at_reports_sources_and_the_next_change() -> None:
    store = ProfileStore()
    station_max = v16(1, 0, "ChargePointMaxProfile", "Absolute", [(0, 20)], start="2024-01-01T10:00:00Z")
    store.install(profile_from_v16(station_max, 0), active_transaction_id=None)
    store.install(
        profile_from_v16(
            v16(2, 0, "TxDefaultProfile", "Absolute", [(0, 32), (1800, 12)], start="2024-01-01T10:00:00Z"), 0
        ),
        active_transaction_id=None,
    )
    now = T10 + timedelta(seconds=100)
    limit = limit_at(store, 1, now)
    assert (limit.amps, limit.watts, limit.source_profile_ids) == (20.0, 20.0 * 230 * 3, (1,))
    assert limit.next_change == T10 + timedelta(seconds=1800)
    later = limit_at(store, 1, limit.next_change)
    assert (later.amps, later.source_profile_ids, later.next_change) == (12.0, (2,), None)


@pytest.mark.parametrize(
    ("live", "expected_a"),
    [
        pytest.param(3, 4140 / (230 * 3), id="3-live-phases"),
        pytest.param(1, 4140 / 230, id="1-live-phase"),
    ],
)
def test_limit_at_with_live_phases_converts_watts_on_the_phases_that_carry_the_current(
    live: int, expected_a: float
) -> None:
    """numberPhases = 1 in a W profile must not triple the power of an EV drawing on three phases."""
    store = ProfileStore()
    profile = v16(1, 0, "TxDefaultProfile", "Absolute", [(0, 4140, 1)], start="2024-01-01T10:00:00Z", unit="W")
    store.install(profile_from_v16(profile, 0), active_transaction_id=None)
    declared = limit_at(store, 1, T10, phases=3)
    assert declared.amps == pytest.approx(4140 / 230)  # the period's own numberPhases, as the composite reports
    assert limit_at(store, 1, T10, phases=live, live_phases=True).amps == pytest.approx(expected_a)


def test_limit_at_without_profiles_is_unlimited_and_never_changes() -> None:
    limit = limit_at([], 1, T10)
    assert (limit.amps, limit.watts, limit.source_profile_ids, limit.next_change) == (None, None, (), None)


def test_next_change_finds_a_distant_absolute_start() -> None:
    far = datetime(2025, 6, 1, 8, tzinfo=UTC)
    profiles = [
        profile_from_v16(
            v16(1, 0, "TxDefaultProfile", "Recurring", [(0, 16)], start="2024-01-01T00:00:00Z", recurrency="Daily"), 0
        ),
        profile_from_v16(v16(2, 1, "TxDefaultProfile", "Absolute", [(0, 6)], start="2025-06-01T08:00:00Z"), 0),
    ]
    limit = limit_at(profiles, 1, T10)
    assert (limit.amps, limit.next_change) == (16.0, far)


def test_next_change_of_a_weekly_profile_is_days_ahead() -> None:
    profiles = [
        profile_from_v16(
            v16(
                1,
                0,
                "TxDefaultProfile",
                "Recurring",
                [(0, 16), (3600, 32)],
                start="2024-01-01T00:00:00Z",
                recurrency="Weekly",
            ),
            0,
        ),
    ]
    limit = limit_at(profiles, 1, datetime(2024, 1, 3, tzinfo=UTC))
    assert (limit.amps, limit.next_change) == (32.0, datetime(2024, 1, 8, tzinfo=UTC))


def test_a_recurring_profile_with_one_constant_period_never_changes() -> None:
    profiles = [
        profile_from_v16(
            v16(1, 0, "TxDefaultProfile", "Recurring", [(0, 16)], start="2024-01-01T00:00:00Z", recurrency="Daily"), 0
        ),
    ]
    assert limit_at(profiles, 1, T10).next_change is None


def test_limit_at_follows_a_relative_tx_profile_from_the_transaction_start() -> None:
    profiles = [profile_from_v16(v16(1, 0, "TxProfile", "Relative", [(0, 32), (600, 16)], duration=1200, tx=4), 1)]
    limit = limit_at(profiles, 1, T10 + timedelta(seconds=700), tx_start=T10, voltage_v=240.0, phases=1)
    assert (limit.amps, limit.watts, limit.next_change) == (16.0, 16.0 * 240, T10 + timedelta(seconds=1200))
    ended = limit_at(profiles, 1, T10 + timedelta(seconds=1200), tx_start=T10)
    assert (ended.amps, ended.next_change) == (None, None)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"now": datetime(2024, 1, 1)},
        {"now": T10, "tx_start": datetime(2024, 1, 1)},
        {"now": T10, "voltage_v": 0.0},
        {"now": T10, "phases": 4},
    ],
)
def test_limit_at_rejects_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        limit_at([], 1, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start": datetime(2024, 1, 1)},
        {"duration_s": 0},
        {"unit": "kW"},
        {"connector_id": -1},
        {"default_limit": float("nan")},
        {"voltage_v": -230.0},
    ],
)
def test_composite_schedule_rejects_bad_arguments(kwargs: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"connector_id": 1, "start": T10, "duration_s": 60, "unit": "A"} | kwargs
    with pytest.raises(ValueError):
        composite_schedule([], **arguments)


# --- GetCompositeSchedule payloads -----------------------------------------------------------------------


def test_composite_payloads() -> None:
    composite = CompositeSchedule(
        T10,
        3600,
        "A",
        (CompositePeriod(0, 15.94, None), CompositePeriod(600, 15.91, None), CompositePeriod(1200, 16.0, 1)),
    )
    periods = [{"startPeriod": 0, "limit": 15.9}, {"startPeriod": 1200, "limit": 16.0, "numberPhases": 1}]
    assert composite_to_v16(composite, 1) == {
        "status": "Accepted",
        "connectorId": 1,
        "scheduleStart": "2024-01-01T10:00:00Z",
        "chargingSchedule": {
            "duration": 3600,
            "startSchedule": "2024-01-01T10:00:00Z",
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": periods,
        },
    }
    assert composite_to_v201(composite, 2) == {
        "status": "Accepted",
        "schedule": {
            "evseId": 2,
            "duration": 3600,
            "scheduleStart": "2024-01-01T10:00:00Z",
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": periods,
        },
    }


@pytest.mark.parametrize(
    "composite",
    [
        CompositeSchedule(T10, 60, "A", ()),
        CompositeSchedule(T10, 60, "A", (CompositePeriod(30, 16.0, None),), ((0, 30),)),
    ],
)
def test_a_composite_with_gaps_cannot_be_reported(composite: CompositeSchedule) -> None:
    with pytest.raises(ValueError, match="default_limit"):
        composite_to_v16(composite, 1)
    with pytest.raises(ValueError, match="default_limit"):
        composite_to_v201(composite, 1)


# --- properties ------------------------------------------------------------------------------------------

BASE = datetime(2024, 1, 1, tzinfo=UTC)
TX_START = BASE + timedelta(hours=3)
_SLOTS = [
    (Purpose.STATION_MAX, 0),
    (Purpose.EXTERNAL_CONSTRAINTS, 0),
    (Purpose.EXTERNAL_CONSTRAINTS, 1),
    (Purpose.TX_DEFAULT, 0),
    (Purpose.TX_DEFAULT, 1),
    (Purpose.TX, 1),
]


@st.composite
def _profiles(draw: st.DrawFn) -> list[ChargingProfile]:
    out = []
    for pid in range(draw(st.integers(1, 7))):
        purpose, connector = draw(st.sampled_from(_SLOTS))
        kind = draw(st.sampled_from(list(Kind)))
        starts = sorted(draw(st.sets(st.integers(1, 24).map(lambda h: h * 30) | st.integers(1, 720), max_size=3)))
        periods = tuple(
            SchedulePeriod(start * 60, float(draw(st.integers(0, 40))), draw(st.sampled_from([None, 1, 3])))
            for start in [0, *starts]
        )

        def moment() -> datetime:
            return BASE + timedelta(
                minutes=draw(st.integers(0, 72).map(lambda h: h * 60) | st.integers(0, 3 * 24 * 60))
            )

        valid_from = moment() if draw(st.integers(0, 3)) == 0 else None
        valid_to = moment() if draw(st.integers(0, 3)) == 0 else None
        if valid_from is not None and valid_to is not None and valid_to <= valid_from:
            valid_from, valid_to = valid_to - timedelta(minutes=1), valid_from
        out.append(
            ChargingProfile(
                id=pid,
                stack_level=draw(st.integers(0, 3)),
                purpose=purpose,
                kind=kind,
                recurrency=draw(st.sampled_from(list(Recurrency))) if kind is Kind.RECURRING else None,
                valid_from=valid_from,
                valid_to=valid_to,
                connector_id=connector,
                transaction_id="t" if purpose is Purpose.TX else None,
                schedule=ChargingSchedule(
                    id=None,
                    start_schedule=None if kind is Kind.RELATIVE else moment(),
                    duration_s=draw(st.none() | st.integers(0, 48).map(lambda h: h * 3600) | st.integers(0, 48 * 3600)),
                    rate_unit=draw(st.sampled_from(RATE_UNITS)),
                    periods=periods,
                ),
            )
        )
    return out


# Whole hours as well as arbitrary seconds: hypothesis favours small integers, which would make most windows tiny.
_windows = st.tuples(
    st.integers(0, 48).map(lambda h: h * 3600) | st.integers(0, 2 * 24 * 3600),
    st.integers(1, 48).map(lambda h: h * 3600) | st.integers(1, 2 * 24 * 3600),
)


def _breakpoints(*composites: CompositeSchedule) -> set[int]:
    points = {0}
    for composite in composites:
        points.update(p.start_s for p in composite.periods)
        points.update(edge for gap in composite.gaps for edge in gap if edge < composite.duration_s)
    return points


@settings(max_examples=300, deadline=None)
@given(_profiles(), _windows, st.sampled_from(RATE_UNITS))
def test_property_the_composite_never_exceeds_station_max_or_external_constraints(
    profiles: list[ChargingProfile], window: tuple[int, int], unit: RateUnit
) -> None:
    start, duration = BASE + timedelta(seconds=window[0]), window[1]

    def composite(of: list[ChargingProfile]) -> CompositeSchedule:
        return composite_schedule(of, 1, start, duration, unit, tx_start=TX_START)

    full = composite(profiles)
    caps = [
        composite([p for p in profiles if p.purpose is purpose])
        for purpose in (Purpose.STATION_MAX, Purpose.EXTERNAL_CONSTRAINTS)
    ]
    # Both sides are piecewise constant, so comparing at every breakpoint of either is exhaustive.
    for offset in _breakpoints(full, *caps):
        value = full.period_at(offset)
        for cap in caps:
            limit = cap.period_at(offset)
            if value is not None and limit is not None:
                assert value.limit <= limit.limit


@settings(max_examples=300, deadline=None)
@given(_profiles(), _windows, st.sampled_from(RATE_UNITS), st.none() | st.integers(0, 48))
def test_property_periods_are_ordered_merged_and_inside_the_window(
    profiles: list[ChargingProfile], window: tuple[int, int], unit: RateUnit, default: int | None
) -> None:
    duration = window[1]
    composite = composite_schedule(
        profiles,
        1,
        BASE + timedelta(seconds=window[0]),
        duration,
        unit,
        tx_start=TX_START,
        default_limit=None if default is None else float(default),
    )
    starts = [p.start_s for p in composite.periods]
    assert starts == sorted(set(starts))
    assert all(0 <= s < duration for s in starts)
    pieces = sorted([(s, "period") for s in starts] + [(lo, "gap") for lo, _ in composite.gaps])
    assert pieces[0][0] == 0  # the schedule accounts for its first second
    for lo, hi in composite.gaps:
        assert 0 <= lo < hi <= duration
        assert not any(lo <= s < hi for s in starts)
    if default is not None:
        assert composite.gaps == ()
    for before, after in zip(composite.periods, composite.periods[1:], strict=False):
        contiguous = not any(before.start_s < lo < after.start_s for lo, _ in composite.gaps)
        if contiguous:
            assert (before.limit, before.number_phases) != (after.limit, after.number_phases)


@settings(max_examples=300, deadline=None)
@given(_profiles(), _windows, st.integers(0, 2 * 24 * 3600))
def test_property_limit_at_matches_the_composite_and_its_next_change(
    profiles: list[ChargingProfile], window: tuple[int, int], at: int
) -> None:
    start, duration = BASE + timedelta(seconds=window[0]), window[1]
    at %= duration
    now = start + timedelta(seconds=at)
    limit = limit_at(profiles, 1, now, tx_start=TX_START)
    composites = {
        unit: composite_schedule(profiles, 1, start, duration, unit, tx_start=TX_START) for unit in RATE_UNITS
    }
    for composite, got in ((composites["A"], limit.amps), (composites["W"], limit.watts)):
        period = composite.period_at(at)
        assert got == (None if period is None else period.limit)

    # From now on, the first breakpoint of either composite is where the limit next changes.
    ahead = [composite_schedule(profiles, 1, now, duration, unit, tx_start=TX_START) for unit in RATE_UNITS]
    first = min((b for b in _breakpoints(*ahead) if b > 0), default=None)
    if first is None:
        assert limit.next_change is None or limit.next_change >= now + timedelta(seconds=duration)
    else:
        assert limit.next_change == now + timedelta(seconds=first)


def test_profiles_tied_on_stack_level_both_count_and_the_lower_limit_wins() -> None:
    # The store never holds such a pair (the second replaces the first); a plain list may.
    profiles = [_profile(1, 2, limit=10.0), _profile(2, 2, limit=16.0), _profile(3, 2, connector=1, limit=10.0)]
    assert limit_at(profiles[:2], 1, T10).amps == 10.0
    assert limit_at(profiles[1::-1], 1, T10).amps == 10.0
    caps = [replace(p, purpose=Purpose.STATION_MAX) for p in profiles[:2]]
    assert limit_at([*caps, _profile(4, 0, limit=32.0)], 1, T10).source_profile_ids == (1,)
    tied = [replace(caps[1], schedule=replace(caps[1].schedule, periods=(SchedulePeriod(0, 10.0),))), caps[0]]
    assert limit_at(tied, 1, T10).source_profile_ids == (1, 2)


def test_dates_at_the_end_of_time_do_not_overflow() -> None:
    profiles = [
        profile_from_v16(
            v16(
                1, 0, "TxDefaultProfile", "Absolute", [(0, 16), (7200, 8)], start="9999-12-31T23:00:00Z", duration=9000
            ),
            0,
        ),
        profile_from_v16(
            v16(
                2,
                0,
                "ChargePointMaxProfile",
                "Recurring",
                [(0, 20), (3600, 10)],
                start="2024-01-01T00:00:00Z",
                recurrency="Weekly",
                valid_to="9999-12-31T23:59:59Z",
            ),
            0,
        ),
    ]
    late = datetime(9999, 12, 31, 23, 30, tzinfo=UTC)  # a Friday: the weekly cap is in its 10 A period
    limit = limit_at(profiles, 1, late)
    assert (limit.amps, limit.next_change) == (10.0, datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert limit.next_change is not None and limit_at(profiles, 1, limit.next_change).amps == 16.0
    composite = composite_schedule(profiles, 1, late, 1200, "A")
    assert list(composite.periods) == [(0, 10.0, None)]
