"""Hand-computed composite schedules.

Every expected period list below was worked out by hand from the rules in
firmware/ocpp/smart_charging.py's docstring (the comment under each case shows the reasoning), not by
running the code. Profiles are wire payloads, so the cases also exercise the 1.6 and 2.0.1 parsers.
2024-01-01 is a Monday.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from firmware.ocpp.charging_profiles import RateUnit

Period = tuple[int, float, int | None]


def _periods(periods: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    out = []
    for entry in periods:
        period: dict[str, Any] = {"startPeriod": entry[0], "limit": entry[1]}
        if len(entry) > 2:
            period["numberPhases"] = entry[2]
        out.append(period)
    return out


def v16(
    pid: int,
    stack: int,
    purpose: str,
    kind: str,
    periods: list[tuple[Any, ...]],
    *,
    start: str | None = None,
    duration: int | None = None,
    unit: str = "A",
    recurrency: str | None = None,
    valid_from: str | None = None,
    valid_to: str | None = None,
    tx: int | None = None,
) -> dict[str, Any]:
    """A 1.6 csChargingProfiles object."""
    schedule: dict[str, Any] = {"chargingRateUnit": unit, "chargingSchedulePeriod": _periods(periods)}
    if start is not None:
        schedule["startSchedule"] = start
    if duration is not None:
        schedule["duration"] = duration
    profile: dict[str, Any] = {
        "chargingProfileId": pid,
        "stackLevel": stack,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": schedule,
    }
    for key, value in (("recurrencyKind", recurrency), ("validFrom", valid_from), ("validTo", valid_to)):
        if value is not None:
            profile[key] = value
    if tx is not None:
        profile["transactionId"] = tx
    return profile


def v201(
    pid: int,
    stack: int,
    purpose: str,
    kind: str,
    schedules: list[list[tuple[Any, ...]]],
    *,
    start: str | None = None,
    duration: int | None = None,
    unit: str = "A",
    recurrency: str | None = None,
    tx: str | None = None,
) -> dict[str, Any]:
    """A 2.0.1 chargingProfile object (one schedule entry per period list)."""
    entries = []
    for index, periods in enumerate(schedules):
        entry: dict[str, Any] = {"id": index + 1, "chargingRateUnit": unit, "chargingSchedulePeriod": _periods(periods)}
        if start is not None:
            entry["startSchedule"] = start
        if duration is not None:
            entry["duration"] = duration
        entries.append(entry)
    profile: dict[str, Any] = {
        "id": pid,
        "stackLevel": stack,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": entries,
    }
    if recurrency is not None:
        profile["recurrencyKind"] = recurrency
    if tx is not None:
        profile["transactionId"] = tx
    return profile


@dataclass(frozen=True)
class GoldenCase:
    name: str
    profiles: list[tuple[str, dict[str, Any], int]]  # (version "1.6"/"2.0.1", payload, connector/evse id)
    connector_id: int
    start: str
    duration_s: int
    unit: RateUnit
    expected: list[Period]
    gaps: list[tuple[int, int]] = field(default_factory=list)
    tx_start: str | None = None
    default_limit: float | None = None
    voltage_v: float = 230.0
    phases: int = 3


T10 = "2024-01-01T10:00:00Z"
TXD, TX, MAX = "TxDefaultProfile", "TxProfile", "ChargePointMaxProfile"
ABS, REC, REL = "Absolute", "Recurring", "Relative"

CASES: list[GoldenCase] = [
    GoldenCase(
        "single absolute profile",
        [("1.6", v16(1, 0, TXD, ABS, [(0, 16), (3600, 10)], start=T10), 0)],
        1,
        T10,
        7200,
        "A",
        # 10:00 16 A, 11:00 10 A
        [(0, 16.0, None), (3600, 10.0, None)],
    ),
    GoldenCase(
        "absolute profile starting inside the window leaves a gap",
        [("1.6", v16(1, 0, TXD, ABS, [(0, 16), (3600, 10)], start=T10), 0)],
        1,
        "2024-01-01T09:30:00Z",
        7200,
        "A",
        # 09:30-10:00 nothing; 10:00 (+1800) 16 A; 11:00 (+5400) 10 A
        [(1800, 16.0, None), (5400, 10.0, None)],
        gaps=[(0, 1800)],
    ),
    GoldenCase(
        "default limit fills before an absolute profile starts",
        [("1.6", v16(1, 0, TXD, ABS, [(0, 16), (3600, 10)], start=T10), 0)],
        1,
        "2024-01-01T09:30:00Z",
        7200,
        "A",
        [(0, 32.0, None), (1800, 16.0, None), (5400, 10.0, None)],
        default_limit=32.0,
    ),
    GoldenCase(
        "higher stack level overrides while its duration lasts",
        [
            ("1.6", v16(1, 0, TXD, ABS, [(0, 32)], start=T10), 0),
            ("1.6", v16(2, 1, TXD, ABS, [(0, 8)], start="2024-01-01T10:30:00Z", duration=1800), 0),
        ],
        1,
        T10,
        5400,
        "A",
        # 10:00 32 (level 0); 10:30 level 1 covers -> 8; 11:00 its duration ends -> 32
        [(0, 32.0, None), (1800, 8.0, None), (3600, 32.0, None)],
    ),
    GoldenCase(
        "higher stack level expiring at validTo lets the lower one show",
        [
            ("1.6", v16(1, 0, TXD, ABS, [(0, 20)], start=T10), 0),
            ("1.6", v16(2, 5, TXD, ABS, [(0, 6)], start=T10, valid_to="2024-01-01T10:45:00Z"), 0),
        ],
        1,
        T10,
        3600,
        "A",
        [(0, 6.0, None), (2700, 20.0, None)],
    ),
    GoldenCase(
        "higher stack level not yet valid before validFrom",
        [
            ("1.6", v16(1, 0, TXD, ABS, [(0, 20)], start=T10), 0),
            ("1.6", v16(2, 5, TXD, ABS, [(0, 6)], start=T10, valid_from="2024-01-01T10:20:00Z"), 0),
        ],
        1,
        T10,
        3600,
        "A",
        [(0, 20.0, None), (1200, 6.0, None)],
    ),
    GoldenCase(
        "duration ending with nothing below leaves a gap",
        [("1.6", v16(1, 0, TXD, ABS, [(0, 16)], start=T10, duration=1200), 0)],
        1,
        T10,
        3600,
        "A",
        [(0, 16.0, None)],
        gaps=[(1200, 3600)],
    ),
    GoldenCase(
        "daily recurring crossing midnight",
        [
            (
                "1.6",
                v16(
                    1,
                    0,
                    TXD,
                    REC,
                    [(0, 10), (7200, 32)],
                    start="2024-01-01T22:00:00Z",
                    duration=28800,
                    recurrency="Daily",
                ),
                0,
            )
        ],
        1,
        "2024-01-02T21:00:00Z",
        43200,
        "A",
        # Jan 2 21:00: run of Jan 1 22:00 is 23 h old > 8 h duration -> default 6
        # 22:00 (+3600) new run, 10 A; 00:00 (+10800) run offset 7200 -> 32 A; 06:00 (+32400) duration over -> 6
        [(0, 6.0, None), (3600, 10.0, None), (10800, 32.0, None), (32400, 6.0, None)],
        default_limit=6.0,
    ),
    GoldenCase(
        "daily recurring, window starting mid-run, equal limits merge across the restart",
        [
            (
                "1.6",
                v16(
                    1,
                    0,
                    TXD,
                    REC,
                    [(0, 6), (25200, 16), (79200, 6)],
                    start="2024-01-01T00:00:00Z",
                    recurrency="Daily",
                ),
                0,
            )
        ],
        1,
        "2024-01-05T20:00:00Z",
        21600,
        "A",
        # 20:00 run offset 72000 -> 16; 22:00 (+7200) -> 6; 00:00 restart -> 6 again (merged); ends 02:00
        [(0, 16.0, None), (7200, 6.0, None)],
    ),
    GoldenCase(
        "weekly recurring: the week starts on startSchedule's weekday (Wednesday)",
        [
            (
                "1.6",
                v16(1, 0, TXD, REC, [(0, 16), (86400, 32)], start="2024-01-03T00:00:00Z", recurrency="Weekly"),
                0,
            )
        ],
        1,
        "2024-01-09T12:00:00Z",
        172800,
        "A",
        # Tue Jan 9 12:00: 6.5 days into the run -> 32; Wed Jan 10 00:00 (+43200) restart -> 16;
        # Thu Jan 11 00:00 (+129600) -> 32
        [(0, 32.0, None), (43200, 16.0, None), (129600, 32.0, None)],
    ),
    GoldenCase(
        "weekly recurring does not apply before its startSchedule",
        [
            (
                "1.6",
                v16(1, 0, TXD, REC, [(0, 16), (86400, 32)], start="2024-01-03T00:00:00Z", recurrency="Weekly"),
                0,
            )
        ],
        1,
        "2024-01-02T00:00:00Z",
        172800,
        "A",
        [(86400, 16.0, None)],
        gaps=[(0, 86400)],
    ),
    GoldenCase(
        "relative TxProfile from tx_start overrides TxDefault (even upwards)",
        [
            ("1.6", v16(1, 0, TXD, ABS, [(0, 10)], start="2024-01-01T00:00:00Z"), 0),
            ("1.6", v16(2, 0, TX, REL, [(0, 32), (1800, 16)], duration=3600, tx=1), 1),
        ],
        1,
        T10,
        7200,
        "A",
        # 10:00 TxDefault 10; 10:05 (+300) Tx 32; 10:35 (+2100) Tx 16; 11:05 (+3900) Tx over -> 10
        [(0, 10.0, None), (300, 32.0, None), (2100, 16.0, None), (3900, 10.0, None)],
        tx_start="2024-01-01T10:05:00Z",
    ),
    GoldenCase(
        "relative TxDefault without a transaction starts at the window start",
        [("1.6", v16(1, 0, TXD, REL, [(0, 16), (600, 8)]), 0)],
        1,
        T10,
        1800,
        "A",
        [(0, 16.0, None), (600, 8.0, None)],
    ),
    GoldenCase(
        "relative profile keeps its offset from tx_start when validFrom comes later",
        [
            (
                "1.6",
                v16(
                    1,
                    0,
                    TXD,
                    REL,
                    [(0, 32), (3600, 6)],
                    valid_from="2024-01-01T12:00:00Z",
                    valid_to="2024-01-01T20:00:00Z",
                ),
                0,
            )
        ],
        1,
        T10,
        10800,
        "A",
        # tx 10:00; not valid until 12:00 (+7200), when the schedule is 2 h in -> 6 A
        [(7200, 6.0, None)],
        gaps=[(0, 7200)],
        tx_start=T10,
    ),
    GoldenCase(
        "connector's own TxDefault replaces connector 0's while it covers, whatever the stack levels",
        [
            ("1.6", v16(1, 5, TXD, ABS, [(0, 32)], start=T10), 0),
            ("1.6", v16(2, 0, TXD, ABS, [(0, 10)], start=T10, duration=1800), 1),
        ],
        1,
        T10,
        3600,
        "A",
        [(0, 10.0, None), (1800, 32.0, None)],
    ),
    GoldenCase(
        "connector-specific TxDefault does not apply to another connector",
        [
            ("1.6", v16(1, 5, TXD, ABS, [(0, 32)], start=T10), 0),
            ("1.6", v16(2, 0, TXD, ABS, [(0, 10)], start=T10, duration=1800), 1),
        ],
        2,
        T10,
        3600,
        "A",
        [(0, 32.0, None)],
    ),
    GoldenCase(
        "TxProfile overrides (here raises) the connector's TxDefault of higher stack level",
        [
            ("1.6", v16(1, 9, TXD, ABS, [(0, 6)], start=T10), 1),
            ("1.6", v16(2, 0, TX, ABS, [(0, 13)], start=T10, tx=7), 1),
        ],
        1,
        T10,
        3600,
        "A",
        [(0, 13.0, None)],
    ),
    GoldenCase(
        "ChargePointMax caps the TxDefault",
        [
            ("1.6", v16(1, 0, MAX, ABS, [(0, 20)], start=T10), 0),
            ("1.6", v16(2, 0, TXD, ABS, [(0, 32), (1800, 12)], start=T10), 0),
        ],
        1,
        T10,
        3600,
        "A",
        [(0, 20.0, None), (1800, 12.0, None)],
    ),
    GoldenCase(
        "ChargePointMax in W caps an amps schedule (11040 W / (230 V * 3) = 16 A)",
        [
            ("1.6", v16(1, 0, MAX, ABS, [(0, 11040)], start=T10, unit="W"), 0),
            ("1.6", v16(2, 0, TXD, ABS, [(0, 32)], start=T10), 0),
        ],
        1,
        T10,
        3600,
        "A",
        [(0, 16.0, None)],
    ),
    GoldenCase(
        "ChargingStationExternalConstraints (2.0.1) lower the limit while they last",
        [
            ("2.0.1", v201(1, 0, "ChargingStationExternalConstraints", ABS, [[(0, 25)]], start=T10, duration=1800), 0),
            ("2.0.1", v201(2, 0, TXD, ABS, [[(0, 32)]], start=T10), 0),
        ],
        1,
        T10,
        3600,
        "A",
        [(0, 25.0, None), (1800, 32.0, None)],
    ),
    GoldenCase(
        "W to A with numberPhases 1 (3680 W / 230 V = 16 A)",
        [("1.6", v16(1, 0, TXD, ABS, [(0, 3680, 1)], start=T10, unit="W"), 0)],
        1,
        T10,
        3600,
        "A",
        [(0, 16.0, 1)],
    ),
    GoldenCase(
        "A to W with the default 3 phases (16 A * 230 V * 3 = 11040 W)",
        [("1.6", v16(1, 0, TXD, ABS, [(0, 16)], start=T10), 0)],
        1,
        T10,
        3600,
        "W",
        [(0, 11040.0, None)],
    ),
    GoldenCase(
        "A to W with numberPhases 1 (10 A * 230 V = 2300 W)",
        [("1.6", v16(1, 0, TXD, ABS, [(0, 10, 1)], start=T10), 0)],
        1,
        T10,
        3600,
        "W",
        [(0, 2300.0, 1)],
    ),
    GoldenCase(
        "A to W with the caller's voltage and phases (10 A * 240 V * 1 = 2400 W)",
        [("1.6", v16(1, 0, TXD, ABS, [(0, 10)], start=T10), 0)],
        1,
        T10,
        3600,
        "W",
        [(0, 2400.0, None)],
        voltage_v=240.0,
        phases=1,
    ),
    GoldenCase(
        "mixed units in A: 6900 W max (= 10 A at 3 phases) binds below 16 A single phase",
        [
            ("1.6", v16(1, 0, MAX, ABS, [(0, 6900)], start=T10, unit="W"), 0),
            ("1.6", v16(2, 0, TXD, ABS, [(0, 16, 1)], start=T10), 0),
        ],
        1,
        T10,
        3600,
        "A",
        # min(10, 16) = 10 A; the fewest phases given is 1
        [(0, 10.0, 1)],
    ),
    GoldenCase(
        "mixed units in W: 16 A single phase (3680 W) binds below 6900 W",
        [
            ("1.6", v16(1, 0, MAX, ABS, [(0, 6900)], start=T10, unit="W"), 0),
            ("1.6", v16(2, 0, TXD, ABS, [(0, 16, 1)], start=T10), 0),
        ],
        1,
        T10,
        3600,
        "W",
        [(0, 3680.0, 1)],
    ),
    GoldenCase(
        "equal neighbouring periods of one schedule merge",
        [("1.6", v16(1, 0, TXD, ABS, [(0, 16), (600, 16), (1200, 10)], start=T10), 0)],
        1,
        T10,
        3600,
        "A",
        [(0, 16.0, None), (1200, 10.0, None)],
    ),
    GoldenCase(
        "equal limits from different profiles merge",
        [
            ("1.6", v16(1, 0, TXD, ABS, [(0, 10)], start=T10), 0),
            ("1.6", v16(2, 1, TXD, ABS, [(0, 10)], start="2024-01-01T10:10:00Z", duration=600), 0),
        ],
        1,
        T10,
        3600,
        "A",
        [(0, 10.0, None)],
    ),
    GoldenCase(
        "request window starting mid-period",
        [("1.6", v16(1, 0, TXD, ABS, [(0, 16), (3600, 8), (7200, 20)], start=T10), 0)],
        1,
        "2024-01-01T10:30:00Z",
        3600,
        "A",
        # 10:30 still in the 16 A period; 11:00 (+1800) 8 A; window ends 11:30
        [(0, 16.0, None), (1800, 8.0, None)],
    ),
    GoldenCase(
        "no profiles: the default limit fills the whole window",
        [],
        1,
        T10,
        3600,
        "A",
        [(0, 48.0, None)],
        default_limit=48.0,
    ),
    GoldenCase(
        "default limit fills the hole between two profiles",
        [
            ("1.6", v16(1, 0, TXD, ABS, [(0, 16)], start=T10, duration=600), 0),
            ("1.6", v16(2, 1, TXD, ABS, [(0, 8)], start="2024-01-01T10:20:00Z", duration=600), 0),
        ],
        1,
        T10,
        1800,
        "A",
        [(0, 16.0, None), (600, 32.0, None), (1200, 8.0, None)],
        default_limit=32.0,
    ),
    GoldenCase(
        "connector 0 composite uses station-wide profiles only",
        [
            ("1.6", v16(1, 0, MAX, ABS, [(0, 40)], start=T10), 0),
            ("1.6", v16(2, 0, TXD, ABS, [(0, 32)], start=T10), 0),
            ("1.6", v16(3, 0, TXD, ABS, [(0, 10)], start=T10), 1),
        ],
        0,
        T10,
        3600,
        "A",
        [(0, 32.0, None)],
    ),
    GoldenCase(
        "numberPhases: the fewest phases any leading period allows",
        [
            ("1.6", v16(1, 0, MAX, ABS, [(0, 32, 3)], start=T10), 0),
            ("1.6", v16(2, 0, TXD, ABS, [(0, 16, 1)], start=T10), 0),
        ],
        1,
        T10,
        3600,
        "A",
        [(0, 16.0, 1)],
    ),
    GoldenCase(
        "1.6 Absolute without startSchedule counts from the transaction start",
        [("1.6", v16(1, 0, TX, ABS, [(0, 20), (600, 10)], tx=3), 1)],
        1,
        "2024-01-01T10:05:00Z",
        1200,
        "A",
        # tx 10:00; window 10:05 is schedule offset 300 -> 20; 10:10 (+300) -> 10
        [(0, 20.0, None), (300, 10.0, None)],
        tx_start=T10,
    ),
    GoldenCase(
        "1.6 Relative with a startSchedule: the startSchedule is ignored",
        [("1.6", v16(1, 0, TXD, REL, [(0, 16), (600, 8)], start="2020-01-01T00:00:00Z"), 0)],
        1,
        T10,
        1200,
        "A",
        [(0, 16.0, None), (600, 8.0, None)],
        tx_start=T10,
    ),
    GoldenCase(
        "2.0.1 profile with two schedules follows the first",
        [("2.0.1", v201(1, 0, TXD, ABS, [[(0, 16)], [(0, 6)]], start=T10), 0)],
        1,
        T10,
        3600,
        "A",
        [(0, 16.0, None)],
    ),
    GoldenCase(
        "daily recurring ending at validTo mid-run lets the lower stack level show",
        [
            ("1.6", v16(1, 0, TXD, ABS, [(0, 6)], start="2024-01-01T00:00:00Z"), 0),
            (
                "1.6",
                v16(
                    2,
                    1,
                    TXD,
                    REC,
                    [(0, 16)],
                    start="2024-01-01T00:00:00Z",
                    recurrency="Daily",
                    valid_to="2024-01-03T06:00:00Z",
                ),
                0,
            ),
        ],
        1,
        "2024-01-03T00:00:00Z",
        43200,
        "A",
        [(0, 16.0, None), (21600, 6.0, None)],
    ),
    GoldenCase(
        "ChargePointMax: higher stack level expiring raises the cap",
        [
            ("1.6", v16(1, 0, MAX, ABS, [(0, 32)], start=T10), 0),
            ("1.6", v16(2, 1, MAX, ABS, [(0, 10)], start=T10, valid_to="2024-01-01T10:30:00Z"), 0),
            ("1.6", v16(3, 0, TXD, ABS, [(0, 20)], start=T10), 0),
        ],
        1,
        T10,
        3600,
        "A",
        # 10:00 min(10, 20) = 10; 10:30 min(32, 20) = 20
        [(0, 10.0, None), (1800, 20.0, None)],
    ),
    GoldenCase(
        "a boundary inside a second shows from the next whole second",
        [
            ("1.6", v16(1, 0, TXD, ABS, [(0, 20)], start=T10), 0),
            ("1.6", v16(2, 1, TXD, ABS, [(0, 6)], start=T10, valid_to="2024-01-01T10:00:10.500Z"), 0),
        ],
        1,
        T10,
        60,
        "A",
        [(0, 6.0, None), (11, 20.0, None)],
    ),
]
