"""J3072 as ``evse run --j3072 FILE`` runs it: the 2030.5 server on the vehicle link, the connector's
J3072 session, the approval list, and the wiring to the energy manager, the journal and the backend.

* Plug-in (the pilot leaves A) starts a J3072 session with an empty link; unplug or the end of the
  charging session ends it (discharge authorisation is per session, R110).
* The session is stepped every :data:`STEP_S`: the gate is re-evaluated with fresh facts and the
  setpoint goes to the PEV (firmware/j3072/session.py).
* Discharge needs the energy manager (``--energy``): the J3072 connector is bidirectional there, the
  gate's grant bounds it, and the manager's signed share is the PEV's setpoint. Without a manager every
  PEV is charge-only (reason ``energy_manager_forbids_v2x``).
* Audit: each decision goes to the journal (``j3072_decisions``, append-only), the log, and the CSMS
  (firmware/j3072/report.py).
* The backend: DataTransfer ``org.evse-firmware`` / ``J3072V2X`` (data ``{"allowed": bool}``) allows or
  forbids V2X; ``J3072ApprovalList`` (data: the signed list) replaces the approval list.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firmware.iec61851.pilot import MIN_OFFER_A
from firmware.j3072.config import J3072Config, J3072ConfigError
from firmware.j3072.http import Sep2HttpServer, server_tls_context
from firmware.j3072.report import ocpp_messages
from firmware.j3072.resources import Sep2Resources
from firmware.j3072.session import AuditRecord, J3072Hooks, J3072Session
from firmware.journal import Journal, JournalError

log = logging.getLogger(__name__)

__all__ = ["STEP_S", "J3072Service", "backend_v2x_message"]

#: The session is stepped this often: well inside the 2 s setpoint period and the PEV's 1 s poll.
STEP_S = 0.5
V2X_MESSAGE_ID = "J3072V2X"
APPROVAL_MESSAGE_ID = "J3072ApprovalList"


def backend_v2x_message(data: object) -> tuple[bool, str]:
    """The backend's V2X permission from a DataTransfer's data (JSON text or object)."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise ValueError(f"J3072V2X data is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("allowed"), bool):
        raise ValueError('J3072V2X data must be {"allowed": true|false, "reason": "..."}')
    reason = data.get("reason", "")
    return data["allowed"], str(reason)[:200] if reason else ("allowed" if data["allowed"] else "forbidden")


@dataclass
class J3072Service:
    config: J3072Config
    session: J3072Session
    resources: Sep2Resources
    server: Sep2HttpServer
    ocpp_version: str | None = None
    enqueue: Callable[[str, dict[str, Any]], None] | None = None
    approvals: Any = None
    _task: asyncio.Task[None] | None = None
    _reported_authorised: bool = False
    _sinks: list[Callable[[AuditRecord], None]] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        config: J3072Config,
        *,
        monotonic: Callable[[], float],
        wall_clock: Callable[[], float],
        journal: Journal | None = None,
        manager: Any = None,
        controller: Any = None,
        evse_id: str = "EVSE",
    ) -> J3072Service:
        """``manager``/``controller``: the energy manager and its site controller (firmware.energy), or None."""
        n = config.connector
        approvals = _approval_store(config, wall_clock)
        hooks = J3072Hooks()
        if manager is not None and controller is not None:
            hooks.authorise_discharge = lambda w: manager.authorise_discharge(n, w, source="j3072")
            hooks.setpoint = lambda: controller.setpoint(n)
            hooks.manager_v2x = lambda: _manager_allows(manager, n)
        if approvals is not None:
            hooks.approval = approvals.check
        resources = Sep2Resources(wall_clock=wall_clock, evse_id=evse_id)
        session = J3072Session(
            n,
            resources,
            parameters=config.parameters,
            site_problem=config.site_problem,
            accepted_editions=config.accepted_editions,
            approval_required=config.approval_required,
            hooks=hooks,
            monotonic=monotonic,
            wall_clock=wall_clock,
        )
        if config.backend_v2x == "allow":
            session.set_backend_v2x(True, "allowed by the site configuration (backend.v2x = allow)")
        elif config.backend_v2x == "forbid":
            session.set_backend_v2x(False, "forbidden by the site configuration (backend.v2x = forbid)")
        if controller is not None:
            previous = controller.bidirectional
            # The manager's negative share bounds the current only while this session may discharge.
            controller.bidirectional = lambda key: (
                session.authorised if key == n else bool(previous(key)) if previous is not None else False
            )
            # While authorised the PEV follows its 2030.5 setpoint; the pilot keeps the least PWM offer so
            # a small or zero setpoint does not pause it (IEC 61851-1: under 6 A means stop).
            controller.offer_floor = lambda key: MIN_OFFER_A if key == n else 0.0
        try:
            tls = server_tls_context(config.server_cert, config.server_key, config.pev_roots)
        except (OSError, ssl.SSLError) as exc:
            files = f"{config.server_cert}, {config.server_key}, {config.pev_roots}"
            raise J3072ConfigError(f"the 2030.5 server's TLS files ({files}): {exc}") from exc
        server = Sep2HttpServer(resources, tls, host=config.bind, port=config.port)
        service = cls(config, session, resources, server, approvals=approvals)
        session.audit.append(service._audit)
        if journal is not None:
            service._sinks.append(_journal_sink(journal))
        return service

    def attach_station(self, version: str, enqueue: Callable[[str, dict[str, Any]], None]) -> None:
        """Report decisions to the CSMS through the station's persistent outbox (``Station.enqueue``);
        register :meth:`data_transfer` for the backend's J3072 messages yourself (``Station.data_transfer``)."""
        self.ocpp_version, self.enqueue = version, enqueue

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        await self.server.start()
        self._task = asyncio.create_task(self._run(), name="j3072")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.session.end("the firmware stops")
        await self.server.stop()

    async def _run(self) -> None:
        while True:
            self.session.step()  # never raises (it ends in charge-only on a bug)
            await asyncio.sleep(STEP_S)

    def on_connector_event(self, kind: str, data: dict[str, Any]) -> None:
        """A connector listener (Connector.add_listener): plug-in starts the session, unplug ends it."""
        self.session.on_connector_event(kind, data)

    def why(self) -> str:
        """For ``evse why``: the J3072 decision and every link of the chain."""
        decision = self.session.decision
        head = f"J3072 connector {self.config.connector}: "
        if not self.session.active or decision is None:
            return head + "no PEV connected"
        lines = [head + ("discharge authorised" if decision.authorised else f"charge only ({decision.summary()})")]
        for link in decision.links:
            lines.append(f"  {'ok  ' if link.ok else 'DENY'} {link.link}: {link.detail}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ backend
    def data_transfer(self, message_id: str | None, data: object) -> tuple[str, str]:
        """A backend DataTransfer to vendor ``org.evse-firmware`` (Station.data_transfer): (status, info)."""
        if message_id == V2X_MESSAGE_ID:
            try:
                allowed, reason = backend_v2x_message(data)
            except ValueError as exc:
                return "Rejected", str(exc)
            self.session.set_backend_v2x(allowed, f"backend: {reason}")
            return "Accepted", "applied"
        if message_id == APPROVAL_MESSAGE_ID:
            if self.approvals is None:
                return "Rejected", "this site has no approval list configured (utility.approval_list)"
            text = data if isinstance(data, str) else json.dumps(data)
            try:
                self.approvals.update(text.encode())
            except ValueError as exc:
                log.warning("J3072: approval list from the backend rejected: %s", exc)
                return "Rejected", str(exc)
            self.session.step()
            return "Accepted", "stored"
        return "UnknownMessageId", ""

    # ------------------------------------------------------------------ audit
    def _audit(self, record: AuditRecord) -> None:
        for sink in self._sinks:
            sink(record)
        if self.enqueue is not None and self.ocpp_version is not None:
            for action, payload in ocpp_messages(record, self.ocpp_version, was_authorised=self._reported_authorised):
                self.enqueue(action, payload)
        self._reported_authorised = record.authorised


def _journal_sink(journal: Journal) -> Callable[[AuditRecord], None]:
    def write(record: AuditRecord) -> None:
        try:
            journal.record_j3072(record)
        except JournalError as exc:
            log.error("journal: cannot record a J3072 decision: %s", exc)

    return write


def _manager_allows(manager: Any, key: int) -> tuple[bool, str]:
    spec = manager.connectors.get(key)
    if spec is None:
        return False, f"connector {key} is not in the energy manager's site"
    if not spec.bidirectional:
        return False, "the energy manager runs this connector charge-only"
    return True, "the energy manager may discharge this connector"


def _approval_store(config: J3072Config, wall_clock: Callable[[], float]) -> Any:
    if not config.approval_required or config.approval_list is None:
        return None
    from firmware.j3072.approval import ApprovalStore, load_trusted_keys

    try:
        trusted = load_trusted_keys({name: path.read_text() for name, path in config.trusted_issuers.items()})
    except OSError as exc:
        raise J3072ConfigError(f"utility.trusted_issuers: cannot read a key file: {exc}") from exc
    store = ApprovalStore(config.approval_list, trusted, config.service_area, wall_clock=wall_clock)
    store.load()
    if store.last_error:
        log.error("J3072: the stored approval list is not used: %s", store.last_error)
    return store
