"""Every shipped scenario passes against the firmware, and fails when the firmware is broken on
purpose in the way the scenario is about: each scenario has at least one expectation with teeth."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import board.mcu.core
import board.mcu.protocol
import firmware.connector
import firmware.energy.manager
import firmware.iec61851.machine
import firmware.iec61851.pilot
import firmware.j3072.approval
import firmware.j3072.session
import firmware.ocpp.station
import firmware.safety.supervisor
from firmware.connector import Connector
from firmware.energy.bounds import Bound
from firmware.energy.der import DerController
from firmware.energy.manager import SITE_EMS, EnergyManager
from firmware.energy.phases import PhaseDecision, PhasePolicy, PhaseTrack
from firmware.iec61851.machine import ConnectorMachine
from firmware.iso15118.ac_port import ConnectorAcPort
from firmware.j3072.gatekeeper import Decision
from firmware.limits import Effective, LimitSet
from firmware.ocpp.station import OcppStation
from firmware.safety.faults import FaultCode
from firmware.safety.supervisor import Supervisor, ThermalCheck, ThermalVerdict
from hil.cli import SCENARIO_DIR
from hil.runner import run_scenario
from hil.scenario import load_scenario

SCENARIOS = sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def _run(name: str, out: Path, *, report: bool = False) -> Any:
    path = SCENARIO_DIR / f"{name}.yaml"
    return asyncio.run(run_scenario(load_scenario(path), path.parent, out, report=report))


def test_at_least_twelve_scenarios_ship() -> None:
    assert len(SCENARIOS) >= 12


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", SCENARIOS)
def test_shipped_scenario_passes(name: str, tmp_path: Path) -> None:
    result = _run(name, tmp_path)
    failed = [f"{c.check}: {c.evidence}" for c in result.checks if not c.passed]
    assert result.passed, failed
    for output in ("trace.jsonl", "summary.json", "junit.xml"):
        assert (tmp_path / output).is_file()


# ------------------------------------------------------------------------------- broken on purpose
Breakage = Callable[[pytest.MonkeyPatch], None]


def _suppress(code: FaultCode) -> Breakage:
    """The firmware stops detecting one fault."""

    def apply(mp: pytest.MonkeyPatch) -> None:
        original = Supervisor.condition

        def condition(self: Supervisor, c: FaultCode, present: bool, now: float, detail: str = "") -> None:
            original(self, c, present and c is not code, now, detail)

        mp.setattr(Supervisor, "condition", condition)

    return apply


def _expired_limits_dropped(mp: pytest.MonkeyPatch) -> None:
    """An expired EMS limit is dropped instead of falling back to the safe value."""
    original = LimitSet.effective

    def effective(self: LimitSet, now: float) -> Effective:
        eff = original(self, now)
        chain = tuple(link for link in eff.chain if not link.expired)
        return Effective(chain[0].current_a, chain[0], chain) if chain else eff

    mp.setattr(LimitSet, "effective", effective)


def _slow_unplug_detection(mp: pytest.MonkeyPatch) -> None:
    """The pilot filter holds a change for 300 ms, and a withdrawn offer waits for the EV even at 0 A
    (otherwise the proximity pilot's "no cable" would still open the contactor in time)."""
    mp.setattr(firmware.connector, "PILOT_DEBOUNCE_POWER_DOWN", 0.3)
    mp.setattr(firmware.iec61851.machine, "I_OPEN_WITHOUT_WAIT_A", -1.0)


def _offers_without_authorisation(mp: pytest.MonkeyPatch) -> None:
    original = ConnectorMachine.offer_allowed

    def offer_allowed(self: ConnectorMachine, _event: Any = None) -> bool:
        saved = self.inputs.authorized
        self.inputs.authorized = True
        try:
            return original(self)
        finally:
            self.inputs.authorized = saved

    mp.setattr(ConnectorMachine, "offer_allowed", offer_allowed)


def _no_diode_check(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(firmware.iec61851.pilot, "DIODE_LOW_MAX_V", 20.0)


def _no_welding_detection(mp: pytest.MonkeyPatch) -> None:
    async def check_feedback(self: Connector, now: float) -> None:
        return None

    mp.setattr(Connector, "_check_feedback", check_feedback)


def _no_soft_overcurrent(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(firmware.safety.supervisor, "SOFT_OVERCURRENT_TIME_S", 1e9)


def _no_thermal_derating(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(ThermalCheck, "update", lambda self, readings: ThermalVerdict(1.0, "", 25.0))


def _meter_loss_ignored(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(firmware.connector, "METER_COMM_TIMEOUT", 1e9)


def _never_forces_open_in_c1(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(firmware.iec61851.machine, "T_POWER_OFF_UNDER_LOAD_C1", 600.0)


def _limits_ignored(mp: pytest.MonkeyPatch) -> None:
    original = Connector.set_limit

    def set_limit(self: Connector, limit: Any) -> None:
        if limit.source != "ems":
            original(self, limit)

    mp.setattr(Connector, "set_limit", set_limit)


def _charging_profiles_ignored(mp: pytest.MonkeyPatch) -> None:
    """The station accepts charging profiles but never turns them into a limit."""
    mp.setattr(
        firmware.ocpp.station,
        "limit_at",
        lambda *args, **kwargs: SimpleNamespace(amps=None, next_change=None, source_profile_ids=()),
    )


def _offline_messages_dropped(mp: pytest.MonkeyPatch) -> None:
    """Transaction messages produced while the CSMS is unreachable are thrown away."""
    original = OcppStation.enqueue

    def enqueue(self: OcppStation, action: str, payload: dict[str, Any], *, tx_ref: str | None = None) -> None:
        if self.online:
            original(self, action, payload, tx_ref=tx_ref)

    mp.setattr(OcppStation, "enqueue", enqueue)


def _battery_ignored(mp: pytest.MonkeyPatch) -> None:
    """The energy manager never learns what its battery holds, so it never discharges it."""
    mp.setattr(EnergyManager, "ess_state", lambda self, stored_wh: None)


def _after_manager_init(change: Callable[[EnergyManager], None]) -> Breakage:
    def apply(mp: pytest.MonkeyPatch) -> None:
        original = EnergyManager.__post_init__

        def post_init(self: EnergyManager) -> None:
            original(self)
            change(self)

        mp.setattr(EnergyManager, "__post_init__", post_init)

    return apply


def _drop_ems_fallback(manager: EnergyManager) -> None:
    """An expired EMS setpoint lifts the limit instead of falling back to the static one."""
    manager.site_inputs.fallbacks[SITE_EMS] = Bound(SITE_EMS, detail="broken: no static limit")


def _trust_a_silent_meter(manager: EnergyManager) -> None:
    """The manager keeps balancing on the last reading of a site meter that went silent."""
    manager.site = dataclasses.replace(manager.site, meter_timeout_s=1e9)


def _demand_response_ignored(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(EnergyManager, "demand_response", lambda self, **kwargs: None)


def _ffr_ignored(mp: pytest.MonkeyPatch) -> None:
    """The DER functions never apply fast frequency response: a frequency drop leaves the window open."""

    def ffr(self: DerController, t: float, f: float, lo: float, hi: float, *args: Any) -> float:
        return hi

    mp.setattr(DerController, "_ffr", ffr)


def _phases_never_switched(mp: pytest.MonkeyPatch) -> None:
    """The energy manager keeps a switchable connector on three phases: a share below 6 A there pauses
    the EV instead of moving it to one phase."""

    def decide(policy: PhasePolicy, track: PhaseTrack, **kwargs: Any) -> PhaseDecision:
        return PhaseDecision(track.phases, None)

    mp.setattr(firmware.energy.manager, "decide", decide)


def _hlc_limits_ignored(mp: pytest.MonkeyPatch) -> None:
    """The SECC's AC port offers the board's rating to ISO 15118 EVs instead of the connector's limit chain
    (the energy manager's share never reaches EVSEMaxCurrent / EVSETargetActivePower, neither through the
    chain nor through the signed setpoint hook)."""
    mp.setattr(ConnectorAcPort, "_allowed_a", lambda self, at: self.connector.hal.config.ratings.max_current_a)
    mp.setattr(ConnectorAcPort, "_setpoint_w", lambda self: None)


def _coprocessor_ignores_the_rcd(mp: pytest.MonkeyPatch) -> None:
    """The co-processor firmware still runs its RCD self-test but never reacts to a trip: it neither
    opens the contactor nor tells the Pi."""

    def rcd(self: board.mcu.core.Coprocessor, now: int) -> None:
        if self.selftest == board.mcu.protocol.SELFTEST_RUNNING:
            self._selftest_step(now)

    mp.setattr(board.mcu.core.Coprocessor, "_rcd", rcd)


def _discharge_never_authorised(mp: pytest.MonkeyPatch) -> None:
    """The energy manager ignores every discharge authorisation (the BEMS's V2B opt-in never lands): the
    EVs are only paused at the peak and the site goes above its grid limit."""
    real = EnergyManager.authorise_discharge

    def withdrawn(self: EnergyManager, key: int, max_discharge_w: float | None, *, source: str = "") -> None:
        real(self, key, None)

    mp.setattr(EnergyManager, "authorise_discharge", withdrawn)


def _j3072_setpoints_never_published(mp: pytest.MonkeyPatch) -> None:
    """The J3072 session authorises but never tells the PEV its setpoint."""
    mp.setattr(firmware.j3072.session.J3072Session, "_publish", lambda self: None)


def _j3072_readback_not_checked(mp: pytest.MonkeyPatch) -> None:
    """The gate takes any DERSettings the PEV reports as applied."""
    mp.setattr(firmware.j3072.session, "check_readback", lambda params, settings: ())


def _j3072_expiry_not_checked(mp: pytest.MonkeyPatch) -> None:
    """An approval list approves after its validity ended."""
    mp.setattr(firmware.j3072.approval, "_validity", lambda approvals, now: None)


def _j3072_gate_open(mp: pytest.MonkeyPatch) -> None:
    """The gate authorises every PEV (default allow instead of default deny)."""
    mp.setattr(firmware.j3072.session, "evaluate", lambda facts: Decision(True, "authorised", "gate open"))


BREAKAGES: dict[str, Breakage] = {
    "home-ems-fallback": _expired_limits_dropped,
    "unplug-in-every-state": _slow_unplug_detection,
    "authorisation-required": _offers_without_authorisation,
    "rcd-trip-recovery": _suppress(FaultCode.RCD_TRIPPED),
    "diode-short": _no_diode_check,
    "welded-contactor": _no_welding_detection,
    "greedy-ev-overcurrent": _no_soft_overcurrent,
    "overtemperature-derate": _no_thermal_derating,
    "meter-comm-loss": _meter_loss_ignored,
    "pause-ev-stuck-in-c": _never_forces_open_in_c1,
    "workplace-demand-window": _limits_ignored,
    "unmanaged-load-brownout": _limits_ignored,
    "cable-faults": _suppress(FaultCode.PROXIMITY_INVALID),
    "demo-ac-session": _suppress(FaultCode.RCD_TRIPPED),
    "ocpp-smart-charging": _charging_profiles_ignored,
    "ocpp-offline-session": _offline_messages_dropped,
    "amsterdam-event-evening": _battery_ignored,
    "home-ems-loss-fallback": _after_manager_init(_drop_ems_fallback),
    "demand-response": _demand_response_ignored,
    "site-meter-loss": _after_manager_init(_trust_a_silent_meter),
    "frequency-event": _ffr_ignored,
    "home-phase-switching": _phases_never_switched,
    "iso15118-ac-session": _hlc_limits_ignored,
    "mcu-coprocessor-rcd": _coprocessor_ignores_the_rcd,
    "hotel-v2b-peak-shaving": _discharge_never_authorised,
    "j3072-frequency-regulation": _j3072_setpoints_never_published,
    "j3072-denials-pev": _j3072_readback_not_checked,
    "j3072-approval-list-expired": _j3072_expiry_not_checked,
    "j3072-approval-list-tampered": _j3072_gate_open,
    "j3072-site-not-configured": _j3072_gate_open,
    "j3072-backend-forbids-v2x": _j3072_gate_open,
}


def test_every_scenario_has_a_breakage() -> None:
    assert sorted(BREAKAGES) == SCENARIOS


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_fails_when_the_firmware_misbehaves(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    BREAKAGES[name](monkeypatch)
    result = _run(name, tmp_path)
    assert not result.passed, f"{name} still passed with the firmware broken"
    assert any(not c.passed for c in result.checks)


@pytest.mark.timeout(180)
def test_outputs_follow_the_contract(tmp_path: Path) -> None:
    _run("rcd-trip-recovery", tmp_path, report=True)
    lines = (tmp_path / "trace.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    assert header == {"t": 0.0, "src": "rig", "ev": "header", "format": 1, "scenario": "rcd-trip-recovery",
                      "board": "sim-ac", "time": "virtual"}  # fmt: skip
    records = [json.loads(line) for line in lines]
    assert all({"t", "src", "ev"} <= r.keys() for r in records)
    assert [r["t"] for r in records] == sorted(r["t"] for r in records)
    kinds = {r["ev"] for r in records}
    assert {"pilot", "contactor", "limit", "power", "meter", "session", "fault", "soc", "state", "action"} <= kinds
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"] is True and summary["format"] == 1
    assert all({"check", "params", "passed", "evidence"} <= c.keys() for c in summary["checks"])
    junit = (tmp_path / "junit.xml").read_text()
    assert "<testsuite" in junit and 'failures="0"' in junit
    report = (tmp_path / "report.html").read_text()
    assert "PASS" in report and "data:image/png;base64," in report
