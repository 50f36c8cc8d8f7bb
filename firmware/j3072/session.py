"""One connector's J3072 session: gathers the gate's facts, acts on its decision, feeds setpoints to the PEV.

At plug-in the 2030.5 link starts empty (:meth:`J3072Session.start`); the PEV registers, sends its
DeviceInformation (ISM number), reads the site parameters and answers with its DERSettings. Every
:meth:`J3072Session.step` re-evaluates the chain (:func:`firmware.j3072.gatekeeper.evaluate`) with
fresh facts: the approval list is asked again each time (it can expire mid-session), the backend's and
the energy manager's permission are read again, a new parameter version needs a new read-back.

A change of decision is audited (``audit`` sinks: journal, trace, OCPP) and applied at once:

* authorised: the energy manager may discharge this connector down to
  min(site maximum, the PEV's rated discharge), and the manager's signed share goes to the PEV as a
  DERControl (opModTargetW, + = inject) every :data:`SETPOINT_PERIOD_S` or as soon as it moves;
* denied: discharge is withdrawn from the manager first, then the PEV gets a charge-only setpoint
  (SAE U6 rate control: what the manager offers, never below 0).

Authorisation ends at unplug or session end (:meth:`end`), when the parameters change
(:meth:`set_parameters`) and at any failed check.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firmware.j3072.gatekeeper import ApprovalFact, Decision, GateFacts, evaluate
from firmware.j3072.ism import IsmError, IsmNumber
from firmware.j3072.resources import Sep2Resources
from firmware.j3072.site_parameters import SiteParameters, check_readback
from firmware.journal import J3072Decision

log = logging.getLogger(__name__)

__all__ = ["SETPOINT_PERIOD_S", "AuditRecord", "J3072Hooks", "J3072Session"]

#: The setpoint is re-published this often even when it does not move: frequency regulation (seed 003,
#: "AGC signals every few seconds") runs on a 2 s cycle.
SETPOINT_PERIOD_S = 2.0
#: A DERControl lasts this long: three periods, so one lost poll does not drop the PEV back to its
#: default control, and a stalled EVSE's last setpoint ends within 6 s.
CONTROL_DURATION_S = 6
#: A setpoint change smaller than this waits for the next period (the PEV's own resolution is ~1 %).
SETPOINT_DEADBAND_W = 50.0


#: One decision as the journal, the trace and the backend get it (the journal's row type).
AuditRecord = J3072Decision


@dataclass
class J3072Hooks:
    """How the session reaches the rest of the firmware (all optional; absent = deny)."""

    #: Allow (W) or withdraw (None) discharge at the energy manager (EnergyManager.authorise_discharge).
    authorise_discharge: Callable[[float | None], None] | None = None
    #: The manager's signed share for this connector in W (+ = charge), None when there is none.
    setpoint: Callable[[], float | None] | None = None
    #: (allowed, detail): V2X allowed by the energy manager / site program for this connector.
    manager_v2x: Callable[[], tuple[bool, str]] | None = None
    #: The approval list's check of an ISM number (firmware.j3072.approval.ApprovalStore.check).
    approval: Callable[[str], ApprovalFact] | None = None


class J3072Session:
    def __init__(
        self,
        connector: int,
        resources: Sep2Resources,
        *,
        parameters: SiteParameters | None,
        site_problem: str | None,
        accepted_editions: tuple[str, ...],
        approval_required: bool,
        hooks: J3072Hooks,
        monotonic: Callable[[], float],
        wall_clock: Callable[[], float],
        audit: list[Callable[[AuditRecord], None]] | None = None,
    ) -> None:
        self.connector = connector
        self.resources = resources
        self.hooks = hooks
        self._mono = monotonic
        self._wall = wall_clock
        self.audit = audit if audit is not None else []
        self.accepted_editions = accepted_editions
        self.approval_required = approval_required
        self.site_problem = _site_problem(parameters, site_problem)
        self.backend_v2x: bool | None = None
        self.backend_detail = ""
        self.active = False
        self._plugged = False
        self.decision: Decision | None = None
        self.history: list[AuditRecord] = []
        self._granted_w: float | None = None
        self._last_target: float | None = None
        self._last_publish = -math.inf
        resources.set_parameters(parameters)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """A PEV plugged in: a new session with an empty link (nothing carries over, R110)."""
        self.resources.reset()
        self.active = True
        self.decision = None
        self._last_target = None
        self._last_publish = -math.inf
        self.step()

    def end(self, why: str = "session ended") -> None:
        """Unplug or session end: discharge authorisation ends with the session."""
        was_authorised = self.authorised
        self._withdraw()
        self.resources.reset()
        self.active = False
        if was_authorised or self.decision is not None:
            self._record(Decision(False, "session_ended", why), None, None)
        self.decision = None

    def on_connector_event(self, kind: str, data: dict[str, Any]) -> None:
        """The connector's events: the pilot leaving A starts a session, A or a stopped charging session
        ends it (firmware.connector emits ``pilot`` {state} and ``session`` {action})."""
        if kind == "pilot" and "state" in data:
            plugged = data["state"] != "A"
            if plugged and not self._plugged:
                self.start()
            elif not plugged and self._plugged:
                self.end("EV unplugged")
            self._plugged = plugged
        elif kind == "session" and data.get("action") == "stopped" and self.active:
            self.end(f"charging session ended ({data.get('reason', 'Other')})")

    def set_parameters(self, parameters: SiteParameters | None, site_problem: str | None = None) -> None:
        """New site parameters (a new version): the PEV must read and apply them again before discharge."""
        self.site_problem = _site_problem(parameters, site_problem)
        self.resources.set_parameters(parameters)
        if self.active:
            self.step()

    def set_backend_v2x(self, allowed: bool | None, detail: str = "") -> None:
        self.backend_v2x, self.backend_detail = allowed, detail
        if self.active:
            self.step()

    @property
    def authorised(self) -> bool:
        return self.decision is not None and self.decision.authorised

    # ------------------------------------------------------------------ the gate
    def facts(self) -> GateFacts:
        pev = self.resources.pev
        params = self.resources.parameters
        ism: IsmNumber | None = None
        ism_problem = "the PEV has not registered on the 2030.5 link"
        approval: ApprovalFact | None = None
        if pev is not None:
            if pev.device_info is None:
                ism_problem = "the PEV has not sent its DeviceInformation (ISM number)"
            else:
                try:
                    ism = IsmNumber.parse(pev.device_info.model)
                except IsmError as exc:
                    ism_problem = str(exc)
        if ism is not None and self.approval_required and self.hooks.approval is not None:
            approval = self.hooks.approval(str(ism))
        readback: tuple[str, ...] = ()
        acknowledged: int | None = None
        if pev is not None and pev.settings is not None and params is not None:
            acknowledged = pev.settings_for_version
            readback = check_readback(params, pev.settings)
        manager_ok, manager_detail = (
            self.hooks.manager_v2x() if self.hooks.manager_v2x else (False, "no energy manager")
        )
        return GateFacts(
            site_problem=self.site_problem,
            ism=ism,
            ism_problem=ism_problem,
            accepted_editions=self.accepted_editions,
            approval_required=self.approval_required,
            approval=approval,
            parameters_version=self.resources.published_version,
            acknowledged_version=acknowledged,
            readback_problems=readback,
            backend_v2x=self.backend_v2x,
            backend_detail=self.backend_detail,
            manager_v2x=manager_ok,
            manager_detail=manager_detail,
        )

    def step(self) -> Decision | None:
        """Re-evaluate and act; publish the PEV's setpoint when due. Never raises into the caller's loop."""
        if not self.active:
            return None
        try:
            facts = self.facts()
            decision = evaluate(facts)
            if self.decision is None or (decision.authorised, decision.reason, decision.detail) != (
                self.decision.authorised,
                self.decision.reason,
                self.decision.detail,
            ):
                self._apply(decision, facts)
            self._publish()
        except Exception:  # a bug here must end in charge-only, never in a stuck discharge
            log.exception("J3072 session step failed on connector %d: discharge withdrawn", self.connector)
            self._withdraw()
            self.decision = Decision(False, "internal_error", "the J3072 session failed; see the log")
        return self.decision

    def _apply(self, decision: Decision, facts: GateFacts) -> None:
        if decision.authorised:
            self._granted_w = self._max_discharge_w()
            if self.hooks.authorise_discharge is not None:
                self.hooks.authorise_discharge(self._granted_w)
        else:
            self._withdraw()
        changed_authorisation = self.decision is None or self.decision.authorised != decision.authorised
        self.decision = decision
        self._record(decision, facts.ism, self.resources.pev.lfdi if self.resources.pev else None)
        if changed_authorisation:
            self._last_publish = -math.inf  # tell the PEV at once

    def _withdraw(self) -> None:
        if self.hooks.authorise_discharge is not None:
            self.hooks.authorise_discharge(None)
        self._granted_w = None

    def _max_discharge_w(self) -> float:
        params = self.resources.parameters
        assert params is not None
        limit = params.discharge_limit_w
        pev = self.resources.pev
        if pev is not None and pev.capability is not None and pev.capability.max_discharge_w is not None:
            limit = min(limit, pev.capability.max_discharge_w)
        if pev is not None and pev.settings is not None and pev.settings.set_max_discharge_rate_w is not None:
            limit = min(limit, pev.settings.set_max_discharge_rate_w)
        return max(0.0, limit)

    # ------------------------------------------------------------------ setpoints to the PEV
    def target_w(self) -> float | None:
        """The 2030.5 target (+ = the PEV injects) for now, or None when there is nothing to say."""
        share = self.hooks.setpoint() if self.hooks.setpoint else None
        if share is None or not math.isfinite(share):
            return None
        if self.authorised and self._granted_w is not None:
            return -max(-self._granted_w, share)
        return -max(0.0, share)  # charge only: U6 rate control

    def _publish(self) -> None:
        if self.resources.pev is None:
            return
        target = self.target_w()
        if target is None:
            return
        now = self._mono()
        moved = self._last_target is None or abs(target - self._last_target) >= SETPOINT_DEADBAND_W
        crossed = self._last_target is not None and (target > 0) != (self._last_target > 0)
        if moved or crossed or now - self._last_publish >= SETPOINT_PERIOD_S - 1e-9:
            self.resources.publish_target(target, CONTROL_DURATION_S)
            self._last_target, self._last_publish = target, now

    # ------------------------------------------------------------------ audit
    def _record(self, decision: Decision, ism: IsmNumber | None, lfdi: str | None) -> None:
        record = AuditRecord(
            connector=self.connector,
            at=self._wall(),
            authorised=decision.authorised,
            reason=decision.reason,
            detail=decision.detail,
            ism=str(ism) if ism is not None else None,
            lfdi=lfdi,
            parameters_version=self.resources.published_version,
            max_discharge_w=self._granted_w or 0.0,
        )
        self.history.append(record)
        log.info(
            "J3072 connector %d: %s (%s)",
            self.connector,
            "authorised" if decision.authorised else "denied",
            decision.summary(),
        )
        for sink in self.audit:
            try:
                sink(record)
            except Exception:  # an audit sink that fails must not change the decision
                log.exception("J3072 audit sink failed")


def _site_problem(parameters: SiteParameters | None, problem: str | None) -> str | None:
    """Why the site is not configured: the caller's reason, and never None without parameters."""
    return problem if parameters is not None else (problem or "no site parameters")
