"""ISO 15118 EVs in the HIL rig: the rig's EVCC simulator (hil.models.evcc) against the firmware's SECC
on simulated AC boards (hil.runner), the scenario fields that choose them (hil.scenario) and the checks
that read their sessions (hil.expect: v2g_sequence, no_power_before). The shipped scenario passes; an EV
that never sends PowerDelivery, a connector that ignores the session, a connector that does not wait for
it, or a check expecting the wrong order makes it fail."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import hil.models.evcc_session as evcc_session
from firmware.connector import Connector
from hil.cli import SCENARIO_DIR
from hil.expect import RunFacts, evaluate
from hil.models.evcc_session import Conversation, EvccSessionError
from hil.runner import RunResult, run_scenario
from hil.scenario import CheckSpec, Scenario, ScenarioError, load_scenario, parse_scenario

SHIPPED = SCENARIO_DIR / "iso15118-ac-session.yaml"


def _run(scenario: Scenario, out: Path) -> RunResult:
    async def main() -> RunResult:
        async with asyncio.timeout(120):  # a real-time guard only: the run is in virtual time
            return await run_scenario(scenario, SCENARIO_DIR, out, report=False)

    return asyncio.run(main())


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "trace.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------ the shipped run
@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, RunFacts]:
    out = tmp_path_factory.mktemp("iso15118-ac-session")
    scenario = load_scenario(SHIPPED)
    result = _run(scenario, out)
    records = _records(out)
    facts = RunFacts(scenario=scenario, records=records, ev_connector={ev.id: ev.connector for ev in scenario.evs})
    return result, facts


def test_the_shipped_scenario_passes(shipped: tuple[RunResult, RunFacts]) -> None:
    result, _ = shipped
    assert result.passed, [f"{c.check}: {c.evidence}" for c in result.checks if not c.passed]


def test_the_sessions_run_through_the_secc_and_drive_the_connectors(shipped: tuple[RunResult, RunFacts]) -> None:
    _, facts = shipped
    started = {r["src"]: r["protocol"] for r in facts.records if r["ev"] == "hlc" and r["action"] == "session_started"}
    assert started == {"connector1": "iso2", "connector2": "iso20"}
    namespaces = {r["namespace"] for r in facts.of("connector2", "v2g")}
    assert namespaces == {"sap", "iso20-common", "iso20-ac"}
    for n in (1, 2):
        src = f"connector{n}"
        start = next(r["t"] for r in facts.of(src, "hlc") if r["action"] == "power_delivery" and r["start"])
        close = next(r["t"] for r in facts.of(src, "contactor") if r["closed"])
        assert start < close < start + 1.0, "closed soon after PowerDelivery(Start), not before"
        duties = {r["duty_pct"] for r in facts.of(src, "pilot") if r["pwm"]}
        assert duties == {5.0}, "under HLC the connector shows 5 % duty only"
    ended = {r["src"]: r for r in facts.records if r["ev"] == "evcc"}
    assert ended["iso2-car"]["stop_reason"] == "target SoC reached" and ended["iso2-car"]["error"] is None
    assert ended["iso20-car"]["stop_reason"] == "unplugged" and ended["iso20-car"]["error"] is None
    stops = [r["reason"] for r in facts.records if r["ev"] == "hlc" and r["action"] == "session_stopped"]
    assert stops == ["SessionStop(Terminate) by the EV", "the EV closed the connection"]


@pytest.mark.parametrize(
    ("messages", "evidence"),
    [
        (["SessionStopReq", "SessionSetupReq"], "no SessionSetupReq after SessionStopReq"),
        (["ChargingStatusReq", "ServiceDiscoveryReq"], "it came only before"),
        (["SessionSetupReq", "CableCheckReq"], "no CableCheckReq after SessionSetupReq at t=12.000; never seen"),
    ],
)
def test_a_sequence_in_the_wrong_order_fails_on_the_same_trace(
    shipped: tuple[RunResult, RunFacts], messages: list[str], evidence: str
) -> None:
    _, facts = shipped
    right = evaluate(
        CheckSpec(check="v2g_sequence", connector=1, messages=["SessionSetupReq", "SessionStopReq"]), facts
    )
    assert right.passed, right.evidence
    wrong = evaluate(CheckSpec(check="v2g_sequence", connector=1, messages=messages), facts)
    assert not wrong.passed and evidence in wrong.evidence


def test_a_window_before_the_session_holds_no_messages(shipped: tuple[RunResult, RunFacts]) -> None:
    _, facts = shipped
    result = evaluate(CheckSpec(check="v2g_sequence", connector=2, messages=["SessionSetupReq"], to_s=15), facts)
    assert not result.passed and "no V2G message" in result.evidence


# ------------------------------------------------------------------------------------------ broken on purpose
SMALL = """
format: 1
name: iso15118-small
board: sim-ac
duration: 40s
settings: {free_charging: true}
evs:
  - {id: car, protocol: iso2, battery_kwh: 40, soc: 0.5, max_current_a: 16, plug_in: 5s, unplug: 35s}
events: EVENTS
expect:
  - {check: v2g_sequence, messages: [SessionSetupReq, PowerDeliveryReq, ChargingStatusReq]}
  - {check: no_power_before}
  - {check: session_energy, ev: car, min_kwh: 0.05}
"""

Breakage = Callable[[pytest.MonkeyPatch], None]


def _ev_never_sends_power_delivery(mp: pytest.MonkeyPatch) -> None:
    """The EV gives up instead of sending PowerDeliveryReq (its session ends there, pilot B)."""
    original = Conversation.ask

    async def ask(self: Conversation, name: str, body: dict[str, Any]) -> dict[str, Any]:
        if name == "PowerDeliveryReq":
            raise EvccSessionError("this EV never sends PowerDeliveryReq (test)")
        return await original(self, name, body)

    mp.setattr(evcc_session.Conversation, "ask", ask)


def _connector_ignores_power_delivery(mp: pytest.MonkeyPatch) -> None:
    """The session's PowerDelivery never reaches the connector machine."""
    mp.setattr(Connector, "hlc_power", lambda self, on: None)


def _connector_never_waits_for_the_session(mp: pytest.MonkeyPatch) -> None:
    """The connector never enters HLC: it charges as in basic mode, whatever the session says."""
    mp.setattr(Connector, "set_hlc", lambda self, required: None)


@pytest.mark.parametrize(
    ("events", "breakage", "failing"),
    [
        ("[]", _ev_never_sends_power_delivery, {"v2g_sequence", "no_power_before", "session_energy"}),
        ("[]", _connector_ignores_power_delivery, {"no_power_before", "session_energy"}),
        # An EV that switches to C before its session asked for power: the connector must wait.
        (
            "[{at: 6s, action: ev_state, ev: car, state: C}]",
            _connector_never_waits_for_the_session,
            {"no_power_before"},
        ),
    ],
    ids=["ev-never-sends-power-delivery", "connector-ignores-power-delivery", "connector-does-not-wait"],
)
def test_the_checks_fail_when_the_ev_or_the_firmware_misbehaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, events: str, breakage: Breakage, failing: set[str]
) -> None:
    scenario = parse_scenario(SMALL.replace("EVENTS", events))
    intact = _run(scenario, tmp_path / "intact")
    assert intact.passed, [f"{c.check}: {c.evidence}" for c in intact.checks if not c.passed]
    breakage(monkeypatch)
    broken = _run(scenario, tmp_path / "broken")
    assert {c.check for c in broken.checks if not c.passed} == failing, [c.evidence for c in broken.checks]


def test_no_power_before_names_the_close_without_power_delivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _connector_never_waits_for_the_session(monkeypatch)
    scenario = parse_scenario(SMALL.replace("EVENTS", "[{at: 6s, action: ev_state, ev: car, state: C}]"))
    check = next(c for c in _run(scenario, tmp_path).checks if c.check == "no_power_before")
    assert "contactor closed at t=6." in check.evidence, check.evidence


# ------------------------------------------------------------------------------------------ the checks alone
def _facts(*records: tuple[float, str, dict[str, Any]]) -> RunFacts:
    scenario = parse_scenario(SMALL.replace("EVENTS", "[]"))
    rows = [{"t": t, "src": "connector1", "ev": kind, **data} for t, kind, data in records]
    return RunFacts(scenario=scenario, records=rows)


def _v2g(t: float, message: str) -> tuple[float, str, dict[str, Any]]:
    return (t, "v2g", {"dir": "rx" if message.endswith("Req") else "tx", "message": message})


def _pd(t: float, start: bool, granted: bool = True) -> tuple[float, str, dict[str, Any]]:
    return (t, "hlc", {"action": "power_delivery", "start": start, "granted": granted})


CLOSE = {"closed": True, "commanded": True}
OPEN = {"closed": False, "commanded": True}


@pytest.mark.parametrize(
    ("records", "passed", "evidence"),
    [
        ([_pd(1, True), (1.2, "contactor", CLOSE), (2, "power", {"W": 4000.0}), _pd(3, False),
          (3.1, "power", {"W": 0.0}), (3.5, "contactor", OPEN)], True, "1 close(s) and 1 power record(s)"),
        ([(0.5, "contactor", CLOSE), _pd(1, True)], False, "contactor closed at t=0.500"),
        ([_pd(1, True, granted=False), (1.2, "contactor", CLOSE)], False, "contactor closed at t=1.200"),
        ([_pd(1, True), (1.2, "contactor", CLOSE), _pd(3, False), (3.2, "power", {"W": 4000.0})], False,
         "4000 W at t=3.200"),
        ([_pd(1, True), (1.2, "contactor", CLOSE), (2, "hlc", {"action": "session_stopped", "reason": "x"}),
          (2.5, "power", {"W": -300.0})], False, "-300 W at t=2.500"),
        ([_pd(1, True), (1.2, "contactor", CLOSE), (2, "hlc", {"action": "fallback", "reason": "x"}),
          (3, "contactor", OPEN), (4, "contactor", CLOSE)], False, "contactor closed at t=4.000"),
        ([_pd(1, True), (2, "power", {"W": 0.5})], False, "never closed: nothing to check"),
    ],
    ids=["in-order", "close-first", "refused-start", "power-after-stop", "after-session-end", "fallback", "nothing"],
)  # fmt: skip
def test_no_power_before(records: list[tuple[float, str, dict[str, Any]]], passed: bool, evidence: str) -> None:
    result = evaluate(CheckSpec(check="no_power_before"), _facts(*records))
    assert result.passed is passed and evidence in result.evidence, result.evidence


@pytest.mark.parametrize(
    ("messages", "passed", "evidence"),
    [
        (["SessionSetupReq", "PowerDeliveryReq", "SessionStopReq"], True, "all 3 in order"),
        (["PowerDeliveryReq", "PowerDeliveryReq"], True, "all 2 in order"),
        (["PowerDeliveryReq", "PowerDeliveryReq", "PowerDeliveryReq"], False, "2 of 3 in order"),
        (["SessionStopReq", "SessionSetupReq"], False, "it came only before, at t=1.000"),
        (["sessionsetupreq"], False, "never seen"),
    ],
)
def test_v2g_sequence(messages: list[str], passed: bool, evidence: str) -> None:
    names = ["SessionSetupReq", "SessionSetupRes", "PowerDeliveryReq", "ChargingStatusReq", "PowerDeliveryReq"]
    facts = _facts(*[_v2g(1.0 + i, name) for i, name in enumerate([*names, "SessionStopReq"])])
    result = evaluate(CheckSpec(check="v2g_sequence", messages=messages), facts)
    assert result.passed is passed and evidence in result.evidence, result.evidence


# ------------------------------------------------------------------------------------------ the scenario fields
BASE = """
format: 1
name: fields
duration: 60s
evs:
  - {id: car, battery_kwh: 40, soc: 0.5, max_current_a: 16, EV}
expect:
  - {check: CHECK}
"""


@pytest.mark.parametrize(
    ("ev", "check", "problem"),
    [
        ("protocol: din", "sessions, count: 1", "DIN 70121 is DC only"),
        ("protocol: iso2, energy: DC", "sessions, count: 1", "energy DC: the rig's ISO 15118 EVs charge on AC"),
        ("protocol: iso20, energy: DC_BPT", "sessions, count: 1", "energy DC_BPT"),
        ("protocol: iso2, energy: AC_BPT", "sessions, count: 1", "AC_BPT (bidirectional) needs protocol iso20"),
        ("protocol: iso2, control_mode: dynamic", "sessions, count: 1", "control_mode (scheduled | dynamic)"),
        ("energy: AC", "sessions, count: 1", "energy is for an ISO 15118 EV"),
        ("control_mode: scheduled", "sessions, count: 1", "control_mode is for an ISO 15118 EV"),
        ("protocol: iso2, behaviour: greedy", "sessions, count: 1", "behaviour describe how a PWM EV follows"),
        ("protocol: iso20, response_s: 2", "sessions, count: 1", "response_s describe how a PWM EV follows"),
        ("protocol: iso15118", "sessions, count: 1", "Input should be 'none', 'din', 'iso2', 'iso20' or 'j3072'"),
        ("protocol: none", "no_power_before", "reads the ISO 15118 session on connector 1"),
        ("protocol: iso2", "v2g_sequence, connector: 2, messages: [SessionSetupReq]", "on connector 2"),
        ("protocol: iso2", "v2g_sequence", "check 'v2g_sequence' needs messages"),
        ("protocol: iso2", "v2g_sequence, messages: []", "at least 1 item"),
        ("protocol: iso2", "v2g_sequence, messages: ['Session Setup']", "should match pattern"),
    ],
)
def test_bad_iso15118_fields_are_refused_with_the_reason(ev: str, check: str, problem: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(BASE.replace("EV", ev).replace("CHECK", check), "fields.yaml")
    assert problem in str(caught.value) and "fields.yaml:" in str(caught.value), str(caught.value)


@pytest.mark.parametrize(
    ("ev", "protocol", "energy"),
    [
        ("plug_in: 1s", "none", "AC"),
        ("protocol: basic", "none", "AC"),
        ("protocol: iso20, energy: AC_BPT", "iso20", "AC_BPT"),
    ],
)
def test_good_fields_load(ev: str, protocol: str, energy: str) -> None:
    scenario = parse_scenario(BASE.replace("EV", ev).replace("CHECK", "sessions, count: 1"))
    spec = scenario.evs[0]
    assert (spec.protocol, spec.energy_transfer, spec.hlc) == (protocol, energy, protocol != "none")


def test_an_iso15118_ev_on_a_dc_board_is_refused_before_it_runs(tmp_path: Path) -> None:
    scenario = parse_scenario(SMALL.replace("EVENTS", "[]").replace("board: sim-ac", "board: sim-dc-bidi"))
    with pytest.raises(ScenarioError, match="needs an AC board"):
        _run(scenario, tmp_path)


def test_a_second_plug_in_starts_a_new_session_where_the_battery_was_left(tmp_path: Path) -> None:
    """Plug-in actions on connector 2 (the action's own connector field left at its default): each plug-in
    plays a new session against that connector's SECC, the battery carried over."""
    text = SMALL.replace("EVENTS", "[{at: 25s, action: plug_in, ev: car}, {at: 38s, action: unplug, ev: car}]")
    text = text.replace("plug_in: 5s, unplug: 35s}", "connector: 2, plug_in: 5s, unplug: 20s}")
    text = text.replace("duration: 40s", "duration: 45s").replace(
        "{check: no_power_before}", "{check: sessions, count: 2, connector: 2}"
    )
    text = text.replace("{check: v2g_sequence,", "{check: v2g_sequence, connector: 2,")
    scenario = parse_scenario(text)
    result = _run(scenario, tmp_path)
    assert result.passed, [f"{c.check}: {c.evidence}" for c in result.checks if not c.passed]
    records = _records(tmp_path)
    starts = [r for r in records if r["ev"] == "hlc" and r["action"] == "session_started"]
    assert [(r["src"], r["t"]) for r in starts] == [("connector2", 7.0), ("connector2", 27.0)]
    ends = [r for r in records if r["ev"] == "evcc"]
    assert [r["stop_reason"] for r in ends] == ["unplugged", "unplugged"]
    socs = [r["soc"] for r in records if r["ev"] == "soc" and r["src"] == "car"]
    assert socs == sorted(socs) and ends[0]["soc"] > 0.5 and ends[1]["soc"] > ends[0]["soc"]
    elsewhere = [r for r in records if r["src"] == "connector1" and r["ev"] in ("v2g", "hlc", "contactor")]
    assert [(r["ev"], r["closed"]) for r in elsewhere] == [("contactor", False)], "connector 1: no EV, no SECC"
