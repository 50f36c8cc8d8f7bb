"""SAE J3072 in the HIL rig: one J3072 session per connector with a ``protocol: j3072`` EV.

Each such connector runs the firmware's own session (firmware/j3072/session.py) over its own 2030.5
resources, on the run's clock: the PEV model (hil/models/j3072_pev.py) talks to the resources in process
with real XML bodies. The wiring is what ``evse run --j3072`` does (firmware/j3072/service.py): the
connector's plug events start and end the session, the gate's grant goes to the energy manager, the
manager's signed share goes to the PEV as its setpoint, the connector's own check treats an export
without authorisation as a fault, and every decision is traced (``j3072`` records). The utility's
approval list is signed by the rig with a throw-away key in the state the scenario asks for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from firmware.connector import Connector
from firmware.energy.der_settings import DerSettings
from firmware.energy.manager import EnergyManager
from firmware.energy.site_controller import SiteController
from firmware.j3072.approval import ApprovalListError, ApprovalStore, document, parse_and_verify, sign_list
from firmware.j3072.resources import Sep2Resources
from firmware.j3072.session import AuditRecord, J3072Hooks, J3072Session
from firmware.j3072.site_parameters import SiteParameters
from hal.clock import Clock
from hil.scenario import J3072SiteSpec

__all__ = ["STEP_S", "J3072Rig", "pev_lfdi"]

#: The sessions are stepped this often (as the firmware's service does: firmware/j3072/service.py).
STEP_S = 0.5
SERVICE_AREA = "HIL-AREA"
ISSUER = "HIL utility"
YEAR_S = 365 * 86400.0

Write = Callable[[str, str, dict[str, Any]], None]


def pev_lfdi(ev_id: str) -> str:
    """A PEV's LFDI in the rig: what its certificate's hash would be, derived from its id."""
    return hashlib.sha256(f"pev-certificate:{ev_id}".encode()).hexdigest()[:40].upper()


class J3072Rig:
    def __init__(
        self,
        spec: J3072SiteSpec,
        *,
        frequency_hz: float,
        voltage_v: float,
        clock: Clock,
        wall_clock: Callable[[], float],
        write: Write,
    ) -> None:
        self.spec = spec
        self.clock = clock
        self.wall_clock = wall_clock
        self.write = write
        self.parameters, self.site_problem = self._parameters(frequency_hz, voltage_v)
        self.approvals = self._approvals()
        self.sessions: dict[int, J3072Session] = {}

    def _parameters(self, frequency_hz: float, voltage_v: float) -> tuple[SiteParameters | None, str | None]:
        spec = self.spec
        if not spec.interconnection_agreement:
            return None, "no interconnection agreement on file (site.j3072.interconnection_agreement)"
        der = {"f_nom_hz": frequency_hz, "v_nom_v": voltage_v, "p_rated_w": spec.max_discharge_kw * 1000, **spec.der}
        settings = DerSettings.from_dict(der)
        return (
            SiteParameters(settings, spec.max_discharge_kw * 1000, spec.max_charge_kw * 1000, spec.max_current_a),
            None,
        )

    def _approvals(self) -> ApprovalStore | None:
        if not self.spec.approval_required:
            return None
        key = ec.generate_private_key(ec.SECP256R1())
        store = ApprovalStore(None, {ISSUER: key.public_key()}, SERVICE_AREA, wall_clock=self.wall_clock)
        approval = self.spec.approval
        if approval is None or approval.state == "none":
            return store
        now = self.wall_clock()
        if approval.state == "expired":  # valid last year, ended an hour before the scenario
            start, end = now - YEAR_S, now - 3600.0
        else:
            start, end = now - 86400.0, now + YEAR_S
        signed = sign_list(document(ISSUER, SERVICE_AREA, 1, start, end, list(approval.isms)), key)
        if approval.state == "tampered":
            signed["ism_numbers"] = [*signed["ism_numbers"], "TAMPER/X/1/J3072_202406"]
        data = json.dumps(signed).encode()
        if approval.state == "expired":
            # An expired list is refused as an update; a site can only hold one it stored while valid.
            store.current = _parse_at(data, key, start)
        else:
            try:
                store.update(data)
            except ApprovalListError as exc:  # tampered: refused, so the site has no list
                self.write("rig", "j3072_approval_list", {"accepted": False, "reason": str(exc)})
        return store

    def attach(
        self,
        n: int,
        connector: Connector,
        manager: EnergyManager,
        controller: SiteController,
    ) -> J3072Session:
        """The J3072 session of connector ``n``."""
        approvals = self.approvals
        hooks = J3072Hooks(
            authorise_discharge=lambda w: manager.authorise_discharge(n, w, source="j3072"),
            setpoint=lambda: controller.setpoint(n),
            manager_v2x=lambda: (True, "the site's V2X program runs this connector"),
        )
        if approvals is not None:
            hooks.approval = approvals.check
        session = J3072Session(
            n,
            Sep2Resources(wall_clock=self.wall_clock, evse_id=f"EVSE-{n}"),
            parameters=self.parameters,
            site_problem=self.site_problem,
            accepted_editions=tuple(self.spec.accepted_editions),
            approval_required=self.spec.approval_required,
            hooks=hooks,
            monotonic=self.clock.monotonic,
            wall_clock=self.wall_clock,
            audit=[lambda record: self._trace(n, record)],
        )
        v2x = self.spec.backend_v2x
        if v2x != "ask":
            session.set_backend_v2x(v2x == "allow", f"backend: V2X {'allowed' if v2x == 'allow' else 'forbidden'}")
        connector.add_listener(session.on_connector_event)
        # The EVSE's own check that the PEV obeys the gate (firmware/j3072/service.py wires the same).
        connector.discharge_permitted = lambda: session.authorised
        self.sessions[n] = session
        return session

    def authorised(self, n: int) -> bool:
        session = self.sessions.get(n)
        return session is not None and session.authorised

    def backend_v2x(self, n: int, allowed: bool) -> None:
        self.sessions[n].set_backend_v2x(allowed, f"backend: V2X {'allowed' if allowed else 'forbidden'} (scenario)")

    def new_parameters(self, n: int, max_discharge_kw: float) -> None:
        """The site's parameters change (a new interconnection maximum): a new version to read back."""
        session = self.sessions[n]
        current = session.resources.parameters
        if current is None:
            return
        changed = replace(current, max_discharge_w=max_discharge_kw * 1000, version=current.version + 1)
        session.set_parameters(changed)

    async def run(self) -> None:
        while True:
            for session in self.sessions.values():
                session.step()  # never raises: a failure ends in charge-only
            await self.clock.sleep(STEP_S)

    def _trace(self, n: int, record: AuditRecord) -> None:
        fields = {
            "decision": "authorised" if record.authorised else "denied",
            "reason": record.reason,
            "detail": record.detail,
            "ism": record.ism,
            "max_discharge_W": round(record.max_discharge_w, 1),
        }
        self.write(f"connector{n}", "j3072", fields)


def _parse_at(data: bytes, key: ec.EllipticCurvePrivateKey, at: float) -> Any:
    return parse_and_verify(data, {ISSUER: key.public_key()}, SERVICE_AREA, at + 1.0)
