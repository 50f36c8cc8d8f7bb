"""Expectations: the small vocabulary of checks a scenario states (docs/hil-formats.md), evaluated on
the trace after the run. Each check returns pass/fail with the evidence that decided it."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firmware.iec61851.pilot import current_for_duty
from firmware.safety.faults import CATALOGUE, FaultCode, Reaction
from hil.scenario import CheckSpec, Scenario


@dataclass(frozen=True)
class CheckResult:
    check: str
    params: dict[str, Any]
    passed: bool
    evidence: str


@dataclass
class RunFacts:
    """What the checks read besides the trace."""

    scenario: Scenario
    records: list[dict[str, Any]]
    sessions: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # connector -> journal rows
    ev_connector: dict[str, int] = field(default_factory=dict)
    backend_transactions: list[dict[str, Any]] = field(default_factory=list)  # the embedded CSMS's records

    def of(self, src: str, ev: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["src"] == src and r["ev"] == ev]


def evaluate(spec: CheckSpec, facts: RunFacts) -> CheckResult:
    params = spec.model_dump(exclude_none=True, exclude_defaults=True)
    params.pop("check", None)
    try:
        passed, evidence = _CHECKS[spec.check](spec, facts)
    except Exception as exc:  # a check that cannot be evaluated is a failed check, with the reason
        passed, evidence = False, f"could not evaluate: {exc!r}"
    return CheckResult(spec.check, params, passed, evidence)


def _src(spec: CheckSpec) -> str:
    return f"connector{spec.connector}"


# ------------------------------------------------------------------------------------------ contactor
def _opens(facts: RunFacts, src: str) -> list[float]:
    return [r["t"] for r in facts.of(src, "contactor") if r.get("closed") is False]


def _closed_at(facts: RunFacts, src: str, t: float) -> bool:
    closed = False
    for r in facts.of(src, "contactor"):
        if r["t"] > t:
            break
        closed = bool(r.get("closed"))
    return closed


def _trigger_times(spec: CheckSpec, facts: RunFacts) -> list[float]:
    src = _src(spec)
    evs = [ev for ev, c in facts.ev_connector.items() if c == spec.connector]
    if spec.after == "unplug":
        return [
            r["t"]
            for r in facts.records
            if r["ev"] == "action" and r.get("action") == "unplug" and r.get("ev_id") in evs
        ]
    if spec.after == "ev_stop":
        out, previous = [], {ev: "A" for ev in evs}
        for r in facts.records:
            if r["ev"] == "ev_state" and r["src"] in evs:
                if previous[r["src"]] in ("C", "D") and r.get("state") == "B":
                    out.append(r["t"])
                previous[r["src"]] = r.get("state", "A")
        return out
    if spec.after == "fault":
        return [
            r["t"] for r in facts.of(src, "fault") if r.get("raised") and _reaction(r.get("code")) is Reaction.EMERGENCY
        ]
    return [
        r["t"]
        for r in facts.records
        if r["ev"] == "action" and r.get("action") == "pause" and r.get("connector", 1) == spec.connector
    ]


def _reaction(code: Any) -> Reaction | None:
    try:
        return CATALOGUE[FaultCode(code)].reaction
    except ValueError:
        return None


def _contactor_opens_within(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    assert spec.within_ms is not None
    src, limit = _src(spec), spec.within_ms / 1000
    worst, n, failures = 0.0, 0, []
    for t in _trigger_times(spec, facts):
        if not _closed_at(facts, src, t - 1e-9):
            continue  # the contactor was already open
        n += 1
        after = [o for o in _opens(facts, src) if o >= t - 1e-9]
        latency = (after[0] - t) if after else float("inf")
        worst = max(worst, latency)
        if latency > limit + 1e-9:
            failures.append(f"t={t:.3f}: {'never opened' if not after else f'{latency * 1000:.0f} ms'}")
    if n == 0:
        return False, f"no '{spec.after}' happened while the contactor was closed: nothing to check"
    if failures:
        return False, f"{len(failures)} of {n} too slow (limit {spec.within_ms:g} ms): " + "; ".join(failures[:5])
    return True, f"{n} x '{spec.after}': opened within {worst * 1000:.1f} ms at worst (limit {spec.within_ms:g} ms)"


def _authorised_intervals(facts: RunFacts, connector: int) -> list[float]:
    """When an authorisation happened: an ``authorize`` action, or an id the station accepted (a
    ``swipe`` answered Accepted, a remote start the CSMS sent)."""
    times = []
    for r in facts.records:
        if r["ev"] == "action" and r.get("action") == "authorize" and r.get("connector", 1) == connector:
            times.append(r["t"])
        elif r["ev"] == "auth" and r["src"] == f"station{connector}" and r.get("status") == "Accepted":
            times.append(r["t"])
        elif r["ev"] == "ocpp" and r["src"] == f"station{connector}" and r.get("dir") == "rx":
            if r.get("kind") == "call" and r.get("action") in ("RemoteStartTransaction", "RequestStartTransaction"):
                times.append(r["t"])
    return sorted(times)


def _contactor_never_closed_without(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    src = _src(spec)
    closes = [r["t"] for r in facts.of(src, "contactor") if r.get("closed") is True]
    if spec.condition == "authorisation":
        if facts.scenario.settings.free_charging:
            return False, "the scenario uses free charging: there is no authorisation to check"
        auth = _authorised_intervals(facts, spec.connector)
        early = [t for t in closes if not any(a <= t for a in auth)]
        if early:
            return False, f"closed before any authorisation at t={early[0]:.3f}"
        return True, f"{len(closes)} closes, all after an authorisation"
    offers = [r["t"] for r in facts.of(src, "pilot") if r.get("pwm")]
    early = [t for t in closes if not any(o <= t for o in offers)]
    if early:
        return False, f"closed at t={early[0]:.3f} before any PWM offer (the diode is checked under PWM)"
    return True, f"{len(closes)} closes, each after a PWM offer in which the diode was checked"


# ------------------------------------------------------------------------------------------ site and energy
def _site_power_below_grid_limit(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    records = facts.of("site", "site_power")
    if not records or records[0].get("limit_W") is None:
        return False, "no grid limit in the scenario's site"
    longest, start, peak = 0.0, None, max(r["W"] for r in records)
    for r in records:
        over = r["W"] > r["limit_W"] + 1e-6
        if over and start is None:
            start = r["t"]
        if not over and start is not None:
            longest, start = max(longest, r["t"] - start), None
    if start is not None:
        longest = max(longest, records[-1]["t"] - start)
    limit = records[0]["limit_W"]
    if longest > spec.tolerance_s:
        return (
            False,
            f"above {limit / 1000:g} kW for {longest:.1f} s (tolerance {spec.tolerance_s:g} s); "
            f"peak {peak / 1000:.2f} kW",
        )
    return True, f"peak {peak / 1000:.2f} kW; longest excursion {longest:.1f} s (tolerance {spec.tolerance_s:g} s)"


def _session_energy(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    connector = facts.ev_connector[spec.ev or ""]
    sessions = facts.sessions.get(connector, [])
    kwh = sum(s["energy_wh"] for s in sessions) / 1000
    low = spec.min_kwh if spec.min_kwh is not None else 0.0
    high = spec.max_kwh if spec.max_kwh is not None else float("inf")
    ok = low <= kwh <= high and bool(sessions)
    return ok, f"{kwh:.3f} kWh in {len(sessions)} session(s); expected {low:g}..{high:g} kWh"


def _ev_soc_at_least(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    records = facts.of(spec.ev or "", "soc")
    if spec.by is not None:
        records = [r for r in records if r["t"] <= spec.by + 1e-9]
    best = max((r["soc"] for r in records), default=None)
    if best is None:
        return False, "no SoC recorded"
    by = f" by t={spec.by:g} s" if spec.by is not None else ""
    return best >= (spec.soc or 0) - 1e-9, f"highest SoC{by}: {best:.3f} (expected >= {spec.soc:g})"


# ------------------------------------------------------------------------------------------ faults and states
def _fault_raised(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    times = [r["t"] for r in facts.records if r["ev"] == "fault" and r.get("code") == spec.code and r.get("raised")]
    if times:
        return True, f"{spec.code} raised at t={times[0]:.3f}" + (
            f" (+{len(times) - 1} more)" if len(times) > 1 else ""
        )
    return False, f"{spec.code} never raised"


def _fault_not_raised(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    ok, evidence = _fault_raised(spec, facts)
    return not ok, evidence


def _state_reached(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    after = spec.after_s or 0.0
    hits = [r["t"] for r in facts.of(_src(spec), "state") if r.get("to") == spec.state and r["t"] >= after - 1e-9]
    if not hits:
        return False, f"never reached {spec.state} after t={after:g}"
    if spec.within_s is not None and hits[0] - after > spec.within_s + 1e-9:
        return (
            False,
            f"reached {spec.state} at t={hits[0]:.3f}, {hits[0] - after:.3f} s after t={after:g} "
            f"(limit {spec.within_s:g} s)",
        )
    return True, f"reached {spec.state} at t={hits[0]:.3f}"


def _duty_at_most(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    lo, hi = spec.from_s or 0.0, spec.to_s if spec.to_s is not None else float("inf")
    worst, in_force = 0.0, None
    for r in facts.of(_src(spec), "pilot"):
        if r["t"] < lo - 1e-9:
            in_force = r  # the pilot as it stands when the window opens
            continue
        if r["t"] > hi + 1e-9:
            break
        if in_force is not None:
            worst = max(worst, _offer_a(in_force))
            in_force = None
        worst = max(worst, _offer_a(r))
    if in_force is not None:
        worst = max(worst, _offer_a(in_force))
    ok = worst <= (spec.amps or 0.0) + 1e-6
    return ok, f"highest offer {worst:.2f} A in t={lo:g}..{hi:g} (limit {spec.amps:g} A)"


def _offer_a(record: dict[str, Any]) -> float:
    return current_for_duty(round(record.get("duty_pct", 0.0) * 10)) if record.get("pwm") else 0.0


def _no_offer_while(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    src = _src(spec)
    if spec.condition == "unauthorised":
        if facts.scenario.settings.free_charging:
            return False, "the scenario uses free charging: there is no authorisation to check"
        auth = _authorised_intervals(facts, spec.connector)
        offers = [r["t"] for r in facts.of(src, "pilot") if r.get("pwm") and not any(a <= r["t"] for a in auth)]
        return (
            not offers,
            "no offer before authorisation" if not offers else f"offer at t={offers[0]:.3f} before authorisation",
        )
    active: set[str] = set()
    for r in facts.records:
        if r["src"] != src:
            continue
        if r["ev"] == "fault" and _reaction(r.get("code")) in (Reaction.EMERGENCY, Reaction.STOP):
            (active.add if r.get("raised") else active.discard)(r["code"])
        if r["ev"] == "pilot" and r.get("pwm") and active:
            return False, f"PWM offer at t={r['t']:.3f} while {', '.join(sorted(active))} active"
    return True, "no offer while an emergency or stop fault was active"


def _sessions(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    sessions = facts.sessions.get(spec.connector, [])
    return len(sessions) == spec.count, f"{len(sessions)} session(s) in the journal (expected {spec.count})"


def _count_ok(spec: CheckSpec, n: int) -> tuple[bool, str]:
    if spec.count is not None:
        return n == spec.count, f"expected {spec.count}"
    assert spec.min_count is not None
    return n >= spec.min_count, f"expected at least {spec.min_count}"


def _ocpp_messages(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    """Calls of ``action`` the station sent (dir tx) or received (dir rx), between from_s and to_s."""
    lo = spec.from_s if spec.from_s is not None else -math.inf
    hi = spec.to_s if spec.to_s is not None else math.inf
    src = f"station{spec.connector}"
    calls = [
        r
        for r in facts.of(src, "ocpp")
        if r.get("kind") == "call"
        and r.get("dir") == spec.dir
        and r.get("action") == spec.action
        and lo <= r["t"] <= hi
    ]
    errors = [r for r in facts.of(src, "ocpp") if r.get("kind") == "error"]
    passed, expected = _count_ok(spec, len(calls))
    who = "sent by" if spec.dir == "tx" else "received by"
    return (
        passed,
        f"{len(calls)} {spec.action} {who} station{spec.connector} ({expected}); {len(errors)} CALLERROR(s) seen",
    )


def _backend_transactions(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    """Transactions the embedded CSMS recorded, all ended; each one's energy within min/max kWh."""
    txs = facts.backend_transactions
    passed, expected = _count_ok(spec, len(txs))
    open_ = [t for t in txs if t.get("active")]
    energies = [float(t.get("energy_wh") or 0.0) / 1000 for t in txs]
    bad = [
        e
        for e in energies
        if (spec.min_kwh is not None and e < spec.min_kwh - 1e-9)
        or (spec.max_kwh is not None and e > spec.max_kwh + 1e-9)
    ]
    detail = ", ".join(
        f"{t.get('transaction_id')}: {e:.3f} kWh {t.get('stop_reason') or 'open'}"
        for t, e in zip(txs, energies, strict=True)
    )
    return passed and not open_ and not bad, f"{len(txs)} transaction(s) at the CSMS ({expected}): {detail or 'none'}"


# ------------------------------------------------------------------------------------------ energy manager
#: The lowest power of a running AC connector: 6 A on each of the EV's phases (IEC 61851-1 Table A.8,
#: the lowest PWM offer), less this share for the meter's and the grid voltage's rounding.
MIN_CHARGING_A = 6.0
MIN_CHARGING_MARGIN = 0.01
#: demand_response_met: the site may exceed the reduced level by this share of the reference power (the
#: manager's own meter reading and the trace's sample differ by up to one cycle's EV movement).
DEMAND_RESPONSE_MARGIN = 0.01
_CONNECTOR_SRC = re.compile(r"connector(\d+)")


def _window(spec: CheckSpec) -> tuple[float, float]:
    lo = spec.from_s if spec.from_s is not None else 0.0
    return lo, spec.to_s if spec.to_s is not None else math.inf


def _in_force(records: list[dict[str, Any]], lo: float, hi: float) -> list[dict[str, Any]]:
    """The records that describe the window: the one in force when it opens, then those inside it."""
    before = [r for r in records if r["t"] <= lo + 1e-9]
    inside = [r for r in records if lo + 1e-9 < r["t"] <= hi + 1e-9]
    return before[-1:] + inside


def _energy_fallback(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    """The manager's fallback is active (or not) throughout the window, as its cycle records say."""
    records = facts.of("energy", "cycle")
    if not records:
        return False, "no energy manager cycle in the trace"
    lo, hi = _window(spec)
    if spec.from_s is None:
        lo = max(lo, records[0]["t"])  # from the manager's first cycle
    elif records[0]["t"] > lo + 1e-9:
        return False, f"the manager had not cycled yet at t={lo:g} (first cycle at t={records[0]['t']:.3f})"
    want = "active" if spec.active else "not active"
    for r in _in_force(records, lo, hi):
        if (r.get("fallback") is not None) != spec.active:
            at = max(r["t"], lo)
            seen = f"active ({r['fallback']})" if r.get("fallback") else "not active"
            return False, f"fallback {seen} at t={at:.3f}; expected {want}"
    reasons = sorted({str(r["fallback"]) for r in _in_force(records, lo, hi) if r.get("fallback")})
    detail = f": {'; '.join(reasons)}" if reasons else ""
    return True, f"fallback {want} throughout t={lo:g}..{hi:g}{detail}"


def _battery(facts: RunFacts) -> list[dict[str, Any]]:
    return facts.of("site", "battery")


def _ess_soc_at_least(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    """The site battery's SoC never falls below ``soc`` (up to ``by``)."""
    records = _battery(facts)
    if spec.by is not None:
        records = [r for r in records if r["t"] <= spec.by + 1e-9]
    if not records:
        return False, "no battery record"
    lowest = min(records, key=lambda r: r["soc"])
    by = f" up to t={spec.by:g} s" if spec.by is not None else ""
    return (
        lowest["soc"] >= (spec.soc or 0.0) - 1e-9,
        f"lowest battery SoC{by}: {lowest['soc']:.4f} at t={lowest['t']:.3f} (expected >= {spec.soc:g})",
    )


def _ess_discharged(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    """The energy the site battery gave in the window (its power held from one record to the next)."""
    records = _battery(facts)
    if not records:
        return False, "no battery record"
    lo, hi = _window(spec)
    wh = 0.0
    for r, following in zip(records, [*records[1:], None], strict=True):
        end = following["t"] if following is not None else r["t"]
        start, end = max(r["t"], lo), min(end, hi)
        if end > start:
            wh += r["W"] * (end - start) / 3600.0
    kwh = wh / 1000
    low = spec.min_kwh if spec.min_kwh is not None else 0.0
    high = spec.max_kwh if spec.max_kwh is not None else math.inf
    return low - 1e-9 <= kwh <= high + 1e-9, f"{kwh:.3f} kWh discharged in t={lo:g}..{hi:g}; expected {low:g}..{high:g}"


def _all_charging(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    """Every listed connector draws at least 6 A on each of its EV's phases throughout the window: at
    the window's start and after every instant inside it at which a power or the grid voltage moved."""
    lo, hi = _window(spec)
    phases = {ev.connector: ev.phases for ev in facts.scenario.evs}
    wanted = spec.connectors or []
    missing = [n for n in wanted if n not in phases]
    if missing:
        return False, f"no EV on connector(s) {missing}"
    volts = facts.scenario.site.voltage_v if facts.scenario.site is not None else 230.0
    power: dict[int, float] = {}

    def amps() -> dict[int, float]:
        return {n: power.get(n, 0.0) / (phases[n] * volts) for n in wanted}

    opening = amps()  # nothing traced yet: nothing drawn
    states: list[tuple[float, dict[int, float]]] = []
    for r in facts.records:
        if r["t"] > hi + 1e-9:
            break
        if r["ev"] == "grid" and r["src"] == "site" and r.get("V"):
            volts = float(r["V"])
        elif r["ev"] == "power" and (match := _CONNECTOR_SRC.fullmatch(r["src"])) is not None:
            power[int(match.group(1))] = float(r["W"])
        else:
            continue
        if r["t"] <= lo + 1e-9:
            opening = amps()
        elif states and states[-1][0] == r["t"]:
            states[-1] = (r["t"], amps())  # records of one instant: the state after all of them
        else:
            states.append((r["t"], amps()))
    lowest: dict[int, tuple[float, float]] = {}  # connector -> (its lowest amps per phase, when)
    for t, state in [(lo, opening), *states]:
        for n, value in state.items():
            if n not in lowest or value < lowest[n][0]:
                lowest[n] = (value, t)
    below = {n: v for n, v in lowest.items() if v[0] < MIN_CHARGING_A * (1 - MIN_CHARGING_MARGIN)}
    if below:
        detail = "; ".join(f"connector {n}: {a:.2f} A-equivalent at t={t:.3f}" for n, (a, t) in below.items())
        return False, f"{len(below)} of {len(wanted)} below 6 A: {detail}"
    worst = min(a for a, _ in lowest.values())
    return True, f"all {len(wanted)} drew at least 6 A in t={lo:g}..{hi:g} (lowest {worst:.2f} A-equivalent)"


def _chargers_total(facts: RunFacts, lo: float, hi: float) -> list[tuple[float, float]]:
    """(time, the chargers' total power): the total in force when the window opens, then the total
    after every instant inside it at which a connector's power changed."""
    power: dict[str, float] = {}
    opening: float | None = None
    out: list[tuple[float, float]] = []
    for r in facts.records:
        if r["t"] > hi + 1e-9:
            break
        if r["ev"] != "power" or _CONNECTOR_SRC.fullmatch(r["src"]) is None:
            continue
        power[r["src"]] = float(r["W"])
        total = sum(power.values())
        if r["t"] <= lo + 1e-9:
            opening = total
        elif out and out[-1][0] == r["t"]:
            out[-1] = (r["t"], total)  # records of one instant: the total after all of them
        else:
            out.append((r["t"], total))
    return ([(lo, opening)] if opening is not None else []) + out


def _chargers_power(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    """The chargers' total power stays within min_kw..max_kw throughout the window."""
    lo, hi = _window(spec)
    totals = _chargers_total(facts, lo, hi)
    if not totals:
        return False, f"no power record up to t={hi:g}"
    low = spec.min_kw * 1000 if spec.min_kw is not None else -math.inf
    high = spec.max_kw * 1000 if spec.max_kw is not None else math.inf
    bad = [(t, w) for t, w in totals if not low - 1e-6 <= w <= high + 1e-6]
    lowest, highest = min(w for _, w in totals), max(w for _, w in totals)
    expected = f"expected {_kw_or(spec.min_kw, '-inf')}..{_kw_or(spec.max_kw, 'inf')} kW"
    summary = f"chargers' total {lowest / 1000:.2f}..{highest / 1000:.2f} kW in t={lo:g}..{hi:g}; {expected}"
    if bad:
        return False, f"{bad[0][1] / 1000:.2f} kW at t={bad[0][0]:.3f}; " + summary
    return True, summary


def _site_power(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    """The site's import at the connection point stays within min_kw..max_kw throughout the window."""
    lo, hi = _window(spec)
    records = _in_force(facts.of("site", "site_power"), lo, hi)
    if not records:
        return False, f"no site power up to t={hi:g}"
    low = spec.min_kw * 1000 if spec.min_kw is not None else -math.inf
    high = spec.max_kw * 1000 if spec.max_kw is not None else math.inf
    bad = [r for r in records if not low - 1e-6 <= r["W"] <= high + 1e-6]
    lowest, highest = min(r["W"] for r in records), max(r["W"] for r in records)
    expected = f"expected {_kw_or(spec.min_kw, '-inf')}..{_kw_or(spec.max_kw, 'inf')} kW"
    summary = f"site {lowest / 1000:.2f}..{highest / 1000:.2f} kW in t={lo:g}..{hi:g}; {expected}"
    if bad:
        return False, f"{bad[0]['W'] / 1000:.2f} kW at t={max(bad[0]['t'], lo):.3f}; " + summary
    return True, summary


def _kw_or(value: float | None, default: str) -> str:
    return f"{value:g}" if value is not None else default


def _longest_above(records: list[dict[str, Any]], level: float, lo: float, hi: float) -> float:
    """The longest time the site power was above ``level`` in the window (records hold until the next)."""
    longest, start = 0.0, None
    for r in records:
        t = max(r["t"], lo)
        if r["W"] > level + 1e-6 and start is None:
            start = t
        elif r["W"] <= level + 1e-6 and start is not None:
            longest, start = max(longest, t - start), None
    if start is not None:
        longest = max(longest, hi - start)
    return longest


def _demand_response_met(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    """After each demand_response (reduce_kw, for): from ``within_s`` after it until it ends, the site
    imports at most the power before it less reduce_kw (excursions up to ``tolerance_s`` allowed: a
    step of the building load takes a cycle to be seen); after it ended (and ``within_s``) the site
    imports more again at some point."""
    within = spec.within_s or 0.0
    records = facts.records
    results, failed = [], False
    events = [i for i, r in enumerate(records) if r["ev"] == "action" and r.get("action") == "demand_response"]
    end_of_run = records[-1]["t"] if records else 0.0
    for index in events:
        action = records[index]
        t0, reduce_w, length = action["t"], float(action["reduce_kw"]) * 1000, float(action["for"])
        before = [r for r in records[:index] if r["ev"] == "site_power"]
        if not before:
            results.append(f"t={t0:g}: no site power before the request")
            failed = True
            continue
        reference = before[-1]["W"]
        target = reference - reduce_w
        allowed = target + DEMAND_RESPONSE_MARGIN * abs(reference)
        site = [r for r in records if r["ev"] == "site_power"]
        during = _in_force(site, t0 + within, t0 + length)
        peak = max(r["W"] for r in during)
        longest = _longest_above(during, allowed, t0 + within, t0 + length)
        after = [r["W"] for r in site if r["t"] >= t0 + length + within - 1e-9]
        text = (
            f"t={t0:g}: {reference / 1000:.2f} kW before, reduce {reduce_w / 1000:g} kW"
            f" -> at most {target / 1000:.2f} kW; peak {peak / 1000:.2f} kW in t={t0 + within:g}..{t0 + length:g}"
        )
        if longest > spec.tolerance_s + 1e-9:
            failed = True
            text += f" (above for {longest:.1f} s, tolerance {spec.tolerance_s:g} s)"
        elif longest > 0:
            text += f" (above for {longest:.1f} s at most, tolerance {spec.tolerance_s:g} s)"
        if t0 + length + within > end_of_run:
            failed = True
            text += "; the run ended before the request did"
        elif not after or max(after) <= allowed:
            failed = True
            text += f"; never back above {allowed / 1000:.2f} kW after it ended"
        else:
            text += f"; back to {max(after) / 1000:.2f} kW after it"
        results.append(text)
    if not events:
        return False, "no demand_response in the trace"
    return not failed, "; ".join(results)


# ------------------------------------------------------------------------------------------ grid events
def _split_at_trigger(spec: CheckSpec, facts: RunFacts) -> tuple[float, int, str]:
    """The check's trigger: (its time, the index of the first record after it, how to name it). For
    ``event`` the trigger is that event's ``action`` record (the first of its action at or after its
    ``at``): records before it show what was in force, those after it the response. For ``at_s``:
    records before that time, and those from it on."""
    records = facts.records
    if spec.at_s is not None:
        split = next((i for i, r in enumerate(records) if r["t"] >= spec.at_s - 1e-9), len(records))
        return spec.at_s, split, f"t={spec.at_s:g}"
    assert spec.event is not None
    event = facts.scenario.events[spec.event]
    for i, r in enumerate(records):
        if r["ev"] == "action" and r.get("action") == event.action and r["t"] >= event.at - 1e-6:
            return r["t"], i + 1, f"events[{spec.event}] ({event.action} at t={r['t']:.3f})"
    raise LookupError(f"events[{spec.event}] ({event.action} at {event.at:g} s) is not in the trace")


def _offer_stopped_within(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    """After the trigger, every listed connector that was offering withdraws its PWM offer (a pilot
    record that offers no current: PWM off, or a duty that decodes to 0 A) within ``within_s``. A
    connector that offered nothing when the trigger came fails: there was nothing to withdraw. The
    evidence names the limit below 6 A that came first, if one did (what made the connector withdraw)."""
    assert spec.within_s is not None and spec.connectors is not None
    try:
        t0, split, trigger = _split_at_trigger(spec, facts)
    except LookupError as exc:
        return False, str(exc)
    before, after = facts.records[:split], facts.records[split:]
    lines, failed = [], False
    for n in spec.connectors:
        src = f"connector{n}"
        pilots = [r for r in before if r["src"] == src and r["ev"] == "pilot"]
        offered = _offer_a(pilots[-1]) if pilots else 0.0
        if offered <= 0:
            failed = True
            lines.append(f"connector {n}: no offer at t={t0:.3f}, nothing to withdraw")
            continue
        withdrawn = next((r for r in after if r["src"] == src and r["ev"] == "pilot" and _offer_a(r) <= 0), None)
        limit = next(
            (
                r
                for r in after
                if r["src"] == src
                and r["ev"] == "limit"
                and not r.get("expired")
                and float(r.get("value", math.inf)) < MIN_CHARGING_A
                and (withdrawn is None or r["t"] <= withdrawn["t"])
            ),
            None,
        )
        cause = f" ({limit.get('source')} limit {limit['value']:g} A at +{limit['t'] - t0:.3f} s)" if limit else ""
        if withdrawn is None:
            failed = True
            lines.append(f"connector {n}: {offered:.1f} A offered, never withdrawn{cause}")
            continue
        latency = withdrawn["t"] - t0
        text = f"connector {n}: {offered:.1f} A withdrawn after {latency:.3f} s{cause}"
        if latency > spec.within_s + 1e-9:
            failed = True
            text += " (too late)"
        lines.append(text)
    verdict = "not all offers withdrawn" if failed else "every offer withdrawn"
    return not failed, f"after {trigger}: {verdict} within {spec.within_s:g} s: " + "; ".join(lines)


# ------------------------------------------------------------------------------------------ phase switching
@dataclass(frozen=True)
class _PhaseMove:
    t: float
    move: tuple[Any, Any]  # (from, to) phases
    closed: bool  # the main contactor as the trace last showed it before the move
    offering: bool  # the PWM offer as the trace last showed it before the move
    offered_again: float | None  # the next PWM offer after the move


def _phase_moves(facts: RunFacts, src: str) -> list[_PhaseMove]:
    """Every move of the connector's phase contactor, with the main contactor and the pilot as they
    stood just before it: records of one instant are in the order they happened, so a withdrawal
    traced after the move in the same step did not come before it."""
    closed = offering = False
    found: list[tuple[float, tuple[Any, Any], bool, bool]] = []
    offers: list[float] = []
    for r in facts.records:
        if r["src"] != src:
            continue
        if r["ev"] == "contactor":
            closed = bool(r.get("closed"))
        elif r["ev"] == "pilot":
            offering = bool(r.get("pwm"))
            if offering:
                offers.append(r["t"])
        elif r["ev"] == "phases":
            found.append((r["t"], (r.get("from"), r.get("phases")), closed, offering))
    return [
        _PhaseMove(t, move, was_closed, was_offering, next((o for o in offers if o > t + 1e-9), None))
        for t, move, was_closed, was_offering in found
    ]


def _phase_switches(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    """The connector's phase contactor (C2) moves exactly as ``sequence`` ([from, to] phases, in order)
    in the window, each move made safely: with the main contactor open and no PWM offer
    (firmware/phase_switching.py: C2 never switches under load, the EV never sees its phases change
    while it may draw). The evidence lists every move, its time and when the offer came back after it."""
    assert spec.sequence is not None
    lo, hi = _window(spec)
    moves = [m for m in _phase_moves(facts, _src(spec)) if lo - 1e-9 <= m.t <= hi + 1e-9]
    wanted = [(a, b) for a, b in spec.sequence]
    lines, unsafe = [], []
    for m in moves:
        text = f"{m.move[0]}->{m.move[1]} at t={m.t:.3f}"
        problem = " and ".join(what for what, bad in (("contactor closed", m.closed), ("offer on", m.offering)) if bad)
        if problem:
            unsafe.append(f"t={m.t:.3f} ({problem})")
            text += f" ({problem})"
        if m.offered_again is not None:
            text += f", offered again +{m.offered_again - m.t:.3f} s"
        lines.append(text)
    expected = ", ".join(f"{a}->{b}" for a, b in wanted) or "none"
    summary = f"connector {spec.connector} in t={lo:g}..{hi:g}: moves {'; '.join(lines) or 'none'}; expected {expected}"
    if unsafe:
        return False, f"C2 moved under load at {', '.join(unsafe)}; " + summary
    return [m.move for m in moves] == wanted, summary


# ------------------------------------------------------------------------------------------ ISO 15118 sessions
#: no_power_before: a ``power`` record above this many W is current flowing to or from the EV (the plant's
#: power is exactly 0 without current; the margin is for rounding).
POWER_FLOWING_W = 1.0
#: The SECC's ``hlc`` actions after which no PowerDelivery(Start) is in force any more: the session ended
#: (its port switched the power off), was paused, or the SECC fell back to basic charging.
_HLC_POWER_ENDS = frozenset({"session_stopped", "paused", "fallback", "closed"})


def _v2g_sequence(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    """The connector's V2G messages (the SECC's ``v2g`` records, both directions) contain ``messages`` in
    that order within from_s..to_s; other messages may come in between (a subsequence)."""
    assert spec.messages is not None
    lo, hi = _window(spec)
    records = [r for r in facts.of(_src(spec), "v2g") if lo - 1e-9 <= r["t"] <= hi + 1e-9]
    wanted = spec.messages
    matched: list[dict[str, Any]] = []
    for r in records:
        if len(matched) < len(wanted) and r.get("message") == wanted[len(matched)]:
            matched.append(r)
    if len(matched) == len(wanted):
        first, last = matched[0], matched[-1]
        return True, (
            f"all {len(wanted)} in order: {first['message']} at t={first['t']:.3f} .. {last['message']} at "
            f"t={last['t']:.3f} ({len(records)} V2G messages on {_src(spec)})"
        )
    missing = wanted[len(matched)]
    if not records:
        return False, f"no V2G message on {_src(spec)}: nothing matches (first expected: {missing})"
    where = f" after {matched[-1]['message']} at t={matched[-1]['t']:.3f}" if matched else ""
    earlier = [r["t"] for r in records if r.get("message") == missing]
    seen = f"; it came only before, at t={earlier[0]:.3f}" if earlier else "; never seen"
    tail = ", ".join(str(r.get("message")) for r in records[-3:])
    return False, (f"{len(matched)} of {len(wanted)} in order: no {missing}{where}{seen} (last messages: {tail})")


def _no_power_before(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    """On the connector, the contactor closes and current flows only while the ISO 15118 session's
    PowerDelivery(Start) is in force: granted by the charger (``hlc`` ``power_delivery`` start, granted)
    and neither stopped (PowerDelivery(Stop)) nor ended with the session since. Fails when the contactor
    never closed under a session (nothing to check)."""
    src = _src(spec)
    allowed, closes, flows, violations = False, 0, 0, []
    for r in facts.records:
        if r["src"] != src:
            continue
        kind = r["ev"]
        if kind == "hlc":
            action = r.get("action")
            if action == "power_delivery":
                allowed = bool(r.get("start")) and bool(r.get("granted"))
            elif action in _HLC_POWER_ENDS:
                allowed = False
        elif kind == "contactor" and r.get("closed") is True:
            closes += 1
            if not allowed:
                violations.append(f"contactor closed at t={r['t']:.3f}")
        elif kind == "power" and abs(float(r.get("W", 0.0))) > POWER_FLOWING_W:
            flows += 1
            if not allowed:
                violations.append(f"{r['W']:g} W at t={r['t']:.3f}")
    if violations:
        return False, (f"{len(violations)} without PowerDelivery(Start) in force: " + "; ".join(violations[:5]))
    if closes == 0:
        return False, f"the contactor of {src} never closed: nothing to check"
    return True, f"{closes} close(s) and {flows} power record(s) with current, all under PowerDelivery(Start)"


# ------------------------------------------------------------------------------------------ V2G / V2B
def _check_connectors(spec: CheckSpec) -> list[int]:
    return list(spec.connectors) if spec.connectors else [spec.connector]


def _discharged_wh(facts: RunFacts, src: str, lo: float, hi: float) -> float:
    """The energy connector ``src`` gave back in the window: the negative part of its power records,
    each held until the next (the rig writes a record at every change)."""
    records = facts.of(src, "power")
    wh = 0.0
    for r, following in zip(records, [*records[1:], None], strict=True):
        end = following["t"] if following is not None else max(r["t"], hi if math.isfinite(hi) else r["t"])
        start, end = max(r["t"], lo), min(end, hi)
        if end > start and r["W"] < 0:
            wh += -r["W"] * (end - start) / 3600.0
    return wh


def _discharged(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    """The energy the listed connectors (``connectors``, else ``connector``) gave back in the window."""
    lo, hi = _window(spec)
    each = {n: _discharged_wh(facts, f"connector{n}", lo, hi) / 1000 for n in _check_connectors(spec)}
    kwh = sum(each.values())
    low = spec.min_kwh if spec.min_kwh is not None else 0.0
    high = spec.max_kwh if spec.max_kwh is not None else math.inf
    parts = ", ".join(f"{n}: {v:.3f}" for n, v in each.items())
    return (
        low - 1e-9 <= kwh <= high + 1e-9,
        f"{kwh:.3f} kWh given back in t={lo:g}..{_kw_or(hi if math.isfinite(hi) else None, 'end')} ({parts}); "
        f"expected {low:g}..{high:g}",
    )


def _ev_soc_never_below(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    """The EV's SoC never falls below ``soc`` in the window (its ``soc`` records: one at every change of
    direction, so the lowest point of a discharge is among them)."""
    lo, hi = _window(spec)
    records = _in_force(facts.of(spec.ev or "", "soc"), lo, hi)
    if not records:
        return False, "no SoC recorded"
    lowest = min(records, key=lambda r: r["soc"])
    return (
        lowest["soc"] >= (spec.soc or 0.0) - 1e-9,
        f"lowest SoC {lowest['soc']:.4f} at t={max(lowest['t'], lo):.3f} (expected >= {spec.soc:g})",
    )


def _discharge_only_authorised(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    """The listed connectors give power back only while an authorisation is in force for them: an
    ``authorise_discharge`` event until a ``withdraw_discharge``, or a J3072 ``authorised`` decision until
    the next denial; with ``tolerance_s`` of slack after a withdrawal (the manager's cycle, a PEV's poll)."""
    violations: list[str] = []
    given = 0
    for n in _check_connectors(spec):
        src = f"connector{n}"
        allowed_since: float | None = None
        withdrawn_at = -math.inf
        for r in facts.records:
            if r["ev"] == "action" and r.get("connector", 1) == n:
                if r.get("action") == "authorise_discharge":
                    allowed_since = r["t"]
                elif r.get("action") == "withdraw_discharge":
                    allowed_since, withdrawn_at = None, r["t"]
            elif r["src"] == src and r["ev"] == "j3072":
                if r.get("decision") == "authorised":
                    allowed_since = r["t"]
                elif allowed_since is not None:
                    allowed_since, withdrawn_at = None, r["t"]
            elif r["src"] == src and r["ev"] == "power" and float(r["W"]) < -POWER_FLOWING_W:
                given += 1
                if allowed_since is None and r["t"] - withdrawn_at > spec.tolerance_s + 1e-9:
                    violations.append(f"connector {n}: {r['W']:g} W at t={r['t']:.3f}")
    if violations:
        return False, f"{len(violations)} discharge record(s) without authorisation: " + "; ".join(violations[:5])
    return True, f"{given} discharge record(s), all under an authorisation"


def _regulation_followed(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    """The connector's power follows the frequency-regulation signal (``regulation`` records, + = discharge):
    after each new value (in the window ``from_s``..``to_s``), its power comes within ``tolerance_kw`` of it
    within ``within_s``. A value replaced sooner than ``within_s`` counts only if it was reached before."""
    src = f"connector{spec.connector}"
    signal = [r for r in facts.of("rig", "regulation") if r.get("connector") == spec.connector]
    power = facts.of(src, "power")
    if not signal:
        return False, f"connector {spec.connector}: no regulation signal"
    # A value repeated at the next period is held, not a new setpoint: the lag counts from its first record.
    changes = [r for i, r in enumerate(signal) if i == 0 or r["kW"] != signal[i - 1]["kW"]]
    lo, hi = _window(spec)
    following_of = {id(r): f for r, f in zip(changes, [*changes[1:], None], strict=True)}
    changes = [r for r in changes if lo <= r["t"] < hi]
    tolerance_w = (spec.tolerance_kw if spec.tolerance_kw is not None else 0.3) * 1000
    within = spec.within_s or 3.0
    lags: list[float] = []
    missed: list[str] = []
    for r in changes:
        following = following_of[id(r)]
        target = -float(r["kW"]) * 1000
        end = following["t"] if following is not None else (power[-1]["t"] if power else r["t"])
        in_force = [p for p in power if p["t"] <= r["t"]][-1:]
        candidates = in_force + [p for p in power if r["t"] < p["t"] < end]
        reached = next((max(p["t"], r["t"]) for p in candidates if abs(p["W"] - target) <= tolerance_w), None)
        if reached is not None:
            lags.append(reached - r["t"])
        elif end - r["t"] >= within:
            missed.append(f"{r['kW']:+g} kW at t={r['t']:.1f}")
    late = [lag for lag in lags if lag > within + 1e-9]
    if not lags:
        return False, f"connector {spec.connector}: no setpoint reached; missed {', '.join(missed[:5])}"
    lags.sort()
    evidence = (
        f"{len(lags)} of {len(changes)} setpoint changes reached, lag median {lags[len(lags) // 2]:.2f} s, "
        f"max {lags[-1]:.2f} s (within {within:g} s, ±{tolerance_w / 1000:g} kW)"
    )
    if missed or late:
        return False, evidence + f"; missed {', '.join(missed[:5])}; {len(late)} late"
    return True, evidence


def _j3072_decision(spec: CheckSpec, facts: RunFacts) -> tuple[bool, str]:
    """The connector's J3072 gate decided ``reason`` (``authorised`` or a denial reason): its last decision
    by ``by`` (default: the end of the run) carries it."""
    src = f"connector{spec.connector}"
    until = spec.by if spec.by is not None else math.inf
    decisions = [r for r in facts.records if r["src"] == src and r["ev"] == "j3072" and r["t"] <= until + 1e-9]
    if not decisions:
        return False, f"connector {spec.connector}: no J3072 decision" + (f" by t={until:g}" if spec.by else "")
    last = decisions[-1]
    seen = ", ".join(f"{r['reason']}@{r['t']:.1f}" for r in decisions[-4:])
    if last["reason"] != spec.reason:
        return False, f"connector {spec.connector}: last decision {last['reason']} ({last['detail']}); {seen}"
    return True, f"connector {spec.connector}: {last['reason']} at t={last['t']:.1f} s ({last['detail']})"


_CHECKS: dict[str, Callable[[CheckSpec, RunFacts], tuple[bool, str]]] = {
    "contactor_opens_within": _contactor_opens_within,
    "contactor_never_closed_without": _contactor_never_closed_without,
    "site_power_below_grid_limit": _site_power_below_grid_limit,
    "session_energy": _session_energy,
    "ev_soc_at_least": _ev_soc_at_least,
    "fault_raised": _fault_raised,
    "fault_not_raised": _fault_not_raised,
    "state_reached": _state_reached,
    "duty_at_most": _duty_at_most,
    "no_offer_while": _no_offer_while,
    "sessions": _sessions,
    "ocpp_messages": _ocpp_messages,
    "backend_transactions": _backend_transactions,
    "energy_fallback": _energy_fallback,
    "ess_soc_at_least": _ess_soc_at_least,
    "ess_discharged": _ess_discharged,
    "all_charging": _all_charging,
    "chargers_power": _chargers_power,
    "site_power": _site_power,
    "demand_response_met": _demand_response_met,
    "offer_stopped_within": _offer_stopped_within,
    "phase_switches": _phase_switches,
    "v2g_sequence": _v2g_sequence,
    "no_power_before": _no_power_before,
    "discharged": _discharged,
    "ev_soc_never_below": _ev_soc_never_below,
    "discharge_only_authorised": _discharge_only_authorised,
    "j3072_decision": _j3072_decision,
    "regulation_followed": _regulation_followed,
}
