"""The SECC runner: SDP, TCP/TLS, SupportedAppProtocol and the DIN 70121 / ISO 15118-2 / ISO 15118-20 session
of one connector, tied to the IEC 61851 connector machine.

Per connection (one at a time, :class:`~firmware.iso15118.transport.SeccServer`):

1. The first message must be a SupportedAppProtocolReq (V2GTP payload type 0x8001, SAP grammar); it is
   answered with :func:`~firmware.iso15118.session.sap.negotiate` over the protocols this connector can
   speak on this connection (DIN 70121 only for a DC port and never over TLS; ISO 15118-20 never over
   TLS 1.2 ([V2G20-2356], transport.py) and, unless configured otherwise, only over TLS).
2. The negotiated protocol's session is created with the right port (and a paused session of the same
   protocol to join, if one is kept). Then, request by request: receive within the time limit, decode
   with the protocol's grammar (ISO 15118-20: the grammar of the V2GTP payload type, 0x8002 common,
   0x8003 AC, 0x8004 DC, answered with the payload type of the answer's namespace), ``handle``, encode,
   send.
3. The connection ends when the session ends (SessionStop, or a FAILED answer: it is sent, then the
   connection closes), on a message that cannot be decoded or is not a request (closed without an
   answer), and when the time limit passes. Whenever the runner itself ends a session (time limit,
   decode error, the EV gone) it tells the port ``session_stopped``, which switches the power off, and
   it withdraws ``Connector.hlc_power`` itself too. A message of a payload type the protocol does not
   use is ignored ([V2G20-092]; its V2GTP header delimits it, so the stream stays in step).

Time limits (on the injected clock, so a simulation runs them in virtual time):

* until SessionSetupReq: V2G_SECC_CommunicationSetup_Performance_Time (18 s from the connection,
  [V2G2-723], iso2.COMMUNICATION_SETUP_TIMEOUT_S);
* after it: V2G_SECC_Sequence_Timeout between requests (60 s, iso2/iso20.SEQUENCE_TIMEOUT_S; DIN 70121
  has the same 60 s, standards-facts.md 2.4).

The connector: at start the SECC asks for HLC (``Connector.set_hlc(True)``: 5 % duty, the contactor
waits for the session's PowerDelivery). When no SessionSetupReq arrives within
V2G_EVCC_CommunicationSetup_Timeout (20 s) after the plug-in (after the SLAC match with SLAC), it falls
back to basic charging (``set_hlc(False)``), as IEC 61851-1 allows; the next plug-in asks for HLC again.
With SLAC the SDP server stays silent until the EV matched; a SLAC failure falls back at once.

Events (``on_event(kind, data)``, like the connector's): ``v2g`` for every message (``dir`` rx/tx,
``message``, ``namespace`` as the ``evse exi --proto`` names, ``code`` of an answer, ``took_ms`` from
receipt to sent) and ``hlc`` for the rest (connected, negotiated, session_started, session_stopped,
paused, fallback, slac, ignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from firmware.connector import Connector
from firmware.iec61851.pilot import CpState
from firmware.iso15118.ac_port import ConnectorAcPort, ConnectorPnc
from firmware.iso15118.config import SeccConfig, SeccConfigError, load_pnc_roots
from firmware.iso15118.exi import ExiError, Namespace, codec
from firmware.iso15118.exi.fragment import encode_signed_info
from firmware.iso15118.sdp import SdpOffer, SdpServer
from firmware.iso15118.session import iso2, iso20
from firmware.iso15118.session.din import DinError, DinSession
from firmware.iso15118.session.iso2 import Iso2DcPort, Iso2Error, Iso2Session, PausedIso2Session
from firmware.iso15118.session.iso20 import Iso20Error, Iso20Session, PausedSession
from firmware.iso15118.session.iso20_ac import AcPart, Iso20AcPort
from firmware.iso15118.session.iso20_dc import DcPart, Iso20DcPort
from firmware.iso15118.session.pnc import PlugAndCharge, PncPort
from firmware.iso15118.session.sap import Protocol as AppProtocol
from firmware.iso15118.session.sap import SapError, negotiate
from firmware.iso15118.slac.evse import Failed, Matched, SlacResult, SlacRunner
from firmware.iso15118.slac.link import LinkError, PacketLink
from firmware.iso15118.slac.modem import QcaModem
from firmware.iso15118.transport import ConnectionClosedError, SeccServer, TransportError, tls_context
from firmware.iso15118.v2gtp import Iso20PayloadType, Message, V2gtpEofError, V2gtpError, V2gtpTimeoutError
from hal.clock import Clock

log = logging.getLogger(__name__)

#: V2G_SECC_CommunicationSetup_Performance_Time: SessionSetupReq due this long after the connection
#: ([V2G2-723]; the session module's constant).
COMMUNICATION_SETUP_TIMEOUT_S = iso2.COMMUNICATION_SETUP_TIMEOUT_S
#: V2G_EVCC_CommunicationSetup_Timeout (standards-facts.md 2.4, all three protocols): the EV gives up on
#: high-level communication this long after it began; the SECC falls back to basic charging then.
EV_COMMUNICATION_SETUP_TIMEOUT_S = 20.0
#: V2G_SECC_Sequence_Timeout per protocol (standards-facts.md 2.4: 60 s for DIN 70121, -2 and -20).
SEQUENCE_TIMEOUT_S: Mapping[str, float] = {
    "din": iso2.SEQUENCE_TIMEOUT_S,  # DIN 70121 has the same 60 s; its session module names no constant
    "iso2": iso2.SEQUENCE_TIMEOUT_S,
    "iso20": iso20.SEQUENCE_TIMEOUT_S,
}
SAP_PAYLOAD_TYPE = int(Iso20PayloadType.SAP)  # 0x8001: SAP, DIN 70121 and ISO 15118-2 (Table 10 / Table 14)
#: ISO 15118-20 Table 14: the mainstream payload types and their grammars.
ISO20_PAYLOAD_TYPES: Mapping[int, Namespace] = {
    int(Iso20PayloadType.MAINSTREAM): Namespace.ISO20_COMMON,
    int(Iso20PayloadType.AC_MAINSTREAM): Namespace.ISO20_AC,
    int(Iso20PayloadType.DC_MAINSTREAM): Namespace.ISO20_DC,
}
_PAYLOAD_OF = {ns: pt for pt, ns in ISO20_PAYLOAD_TYPES.items()}
#: The protocols as SupportedAppProtocol names them (standards-facts.md 2.2, session.sap.SUPPORTED); -20 by
#: the energy service of the port: AC on an AC connector, DC on a DC one (session.sap's docstring).
APP_PROTOCOLS: Mapping[str, AppProtocol] = {
    "iso20-ac": AppProtocol(Namespace.ISO20_AC, 1, 0),
    "iso20-dc": AppProtocol(Namespace.ISO20_DC, 1, 0),
    "iso2": AppProtocol(Namespace.ISO2, 2, 0),
    "din": AppProtocol(Namespace.DIN, 2, 0),
}
#: Short grammar names in events (the ``evse exi --proto`` names).
SHORT_NAMES: Mapping[str, str] = {
    Namespace.SAP: "sap",
    Namespace.DIN: "din",
    Namespace.ISO2: "iso2",
    Namespace.ISO20_COMMON: "iso20-common",
    Namespace.ISO20_AC: "iso20-ac",
    Namespace.ISO20_DC: "iso20-dc",
}
_PLUGGED = frozenset({CpState.B, CpState.C, CpState.D})

EventSink = Callable[[str, dict[str, Any]], None]
Paused = PausedIso2Session | PausedSession


class DcPort(Iso2DcPort, Iso20DcPort, Protocol):
    """A DC port for all three protocols (DIN 70121 needs the base :class:`DcEvsePort` only)."""


class V2gLink(Protocol):
    """What the runner needs of a connection (:class:`~firmware.iso15118.transport.V2gConnection`)."""

    peer: str
    tls_version: str | None

    @property
    def tls(self) -> bool: ...

    async def receive(self, timeout_s: float) -> Message: ...

    async def send(self, payload_type: int, payload: bytes) -> None: ...

    async def close(self) -> None: ...


class _Ended(Exception):
    """The runner ends the connection (and the session with it); the message says why."""


# ----------------------------------------------------------------------------------------- dialects
class _Dialect:
    """One protocol's session behind the runner's loop."""

    name = ""
    sequence_timeout_s = 60.0

    def __init__(self, stop_port: Callable[[str], None]) -> None:
        self._stop_port = stop_port
        self._aborted = False

    def namespace_for(self, payload_type: int) -> Namespace | None:
        raise NotImplementedError

    def payload_type(self, namespace: str) -> int:
        return SAP_PAYLOAD_TYPE

    def handle(self, tree: dict[str, Any], namespace: Namespace) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    @property
    def ended(self) -> bool:
        raise NotImplementedError

    @property
    def stop_reason(self) -> str | None:
        raise NotImplementedError

    @property
    def paused(self) -> Paused | None:
        return None

    def abort(self, reason: str) -> None:
        """The runner ends the session: the port hears it once (the sessions tell it themselves otherwise)."""
        if not self.ended and not self._aborted:
            self._aborted = True
            self._stop_port(reason)


class _Din(_Dialect):
    name = "din"
    sequence_timeout_s = SEQUENCE_TIMEOUT_S["din"]

    def __init__(self, session: DinSession) -> None:
        super().__init__(session.port.session_stopped)
        self.session = session

    def namespace_for(self, payload_type: int) -> Namespace | None:
        return Namespace.DIN if payload_type == SAP_PAYLOAD_TYPE else None

    def handle(self, tree: dict[str, Any], namespace: Namespace) -> tuple[str, dict[str, Any]]:
        return Namespace.DIN, self.session.handle(tree)

    @property
    def ended(self) -> bool:
        return self.session.state == "Stopped"

    @property
    def stop_reason(self) -> str | None:
        return self.session.stop_reason


class _Iso2(_Dialect):
    name = "iso2"
    sequence_timeout_s = SEQUENCE_TIMEOUT_S["iso2"]

    def __init__(self, session: Iso2Session, stop_port: Callable[[str], None]) -> None:
        super().__init__(stop_port)
        self.session = session

    def namespace_for(self, payload_type: int) -> Namespace | None:
        return Namespace.ISO2 if payload_type == SAP_PAYLOAD_TYPE else None

    def handle(self, tree: dict[str, Any], namespace: Namespace) -> tuple[str, dict[str, Any]]:
        return Namespace.ISO2, self.session.handle(tree)

    @property
    def ended(self) -> bool:
        return self.session.ended

    @property
    def stop_reason(self) -> str | None:
        return self.session.stop_reason

    @property
    def paused(self) -> Paused | None:
        return self.session.paused


class _Iso20(_Dialect):
    name = "iso20"
    sequence_timeout_s = SEQUENCE_TIMEOUT_S["iso20"]

    def __init__(self, session: Iso20Session) -> None:
        super().__init__(session.part.session_stopped)
        self.session = session

    def namespace_for(self, payload_type: int) -> Namespace | None:
        return ISO20_PAYLOAD_TYPES.get(payload_type)

    def payload_type(self, namespace: str) -> int:
        return _PAYLOAD_OF[Namespace(namespace)]

    def handle(self, tree: dict[str, Any], namespace: Namespace) -> tuple[str, dict[str, Any]]:
        return self.session.handle(tree, namespace)

    @property
    def ended(self) -> bool:
        return self.session.ended

    @property
    def stop_reason(self) -> str | None:
        return self.session.stop_reason

    @property
    def paused(self) -> Paused | None:
        return self.session.paused


# ----------------------------------------------------------------------------------------- the runner
@dataclass(frozen=True)
class _Outcome:
    protocol: str
    reason: str
    paused: bool


class Secc:
    """The SECC of one connector: see the module docstring."""

    def __init__(
        self,
        config: SeccConfig,
        *,
        clock: Clock,
        connector: Connector | None = None,
        ac_port: Iso20AcPort | None = None,
        dc_port: DcPort | None = None,
        pnc_port: PncPort | None = None,
        slac: SlacRunner | None = None,
        on_event: EventSink | None = None,
        wall_clock: Callable[[], float] = time.time,
        new_session_id: Callable[[], bytes] | None = None,
    ) -> None:
        if ac_port is None and dc_port is None:
            raise SeccConfigError(f"{config.source}: the SECC needs an AC or a DC port")
        self.config = config
        self.clock = clock
        self.connector = connector
        self.ac_port = ac_port
        self.dc_port = dc_port
        self._on_event = on_event
        self._wall = wall_clock
        self._new_id = new_session_id
        self._pnc: PlugAndCharge | None = None
        if config.pnc_roots:
            if pnc_port is None:
                log.warning("%s: pnc.roots configured but no Plug & Charge backend: PnC not offered", config.source)
            else:
                self._pnc = PlugAndCharge(roots=load_pnc_roots(config), port=pnc_port, encode=_signed_element)
        self._slac = slac
        self._slac_link: PacketLink | None = None
        self._server: SeccServer | None = None
        self._sdp: SdpServer | None = None
        self._offer: SdpOffer | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._fallback_task: asyncio.Task[None] | None = None
        self._running = False
        self._pilot: CpState | None = None
        self._matched = not config.slac  # without SLAC the EV may discover us at once
        self._session_since_plug = False
        self._live: _Dialect | None = None  # the session running now, once set up
        self.fallen_back = False
        self.paused: Paused | None = None
        self.outcomes: list[_Outcome] = []  # every session's end, newest last (bounded)

    @classmethod
    def for_connector(
        cls,
        config: SeccConfig,
        connector: Connector,
        *,
        discharge_allowance: Callable[[], float] | None = None,
        pnc_port: PncPort | None = None,
        on_event: EventSink | None = None,
    ) -> tuple[Secc, ConnectorAcPort]:
        """The SECC of an AC connector with its :class:`ConnectorAcPort` (``discharge_allowance``: an
        energy-manager hook, e.g. :func:`firmware.iso15118.ac_port.manager_discharge`)."""
        if connector.hal.config.ratings.supply != "ac":
            raise SeccConfigError(f"{config.source}: a DC board needs a DC port over its converter (not wired yet)")
        port = ConnectorAcPort(connector, evse_id=config.evse_id, discharge_allowance=discharge_allowance)
        pnc = ConnectorPnc(pnc_port, connector) if pnc_port is not None else None
        secc = cls(config, clock=connector.clock, connector=connector, ac_port=port, pnc_port=pnc, on_event=on_event)
        return secc, port

    # ------------------------------------------------------------------ state
    @property
    def discoverable(self) -> bool:
        """Whether SDP answers now: always without SLAC, after a match with it."""
        return self._matched

    @property
    def tcp_port(self) -> int | None:
        return self._server.tcp_port if self._server is not None else None

    @property
    def tls_port(self) -> int | None:
        return self._server.tls_port if self._server is not None else None

    # ------------------------------------------------------------------ lifecycle
    async def start(self, *, listen: bool = True) -> None:
        """Ask the connector for HLC, start SLAC (when configured) and, with ``listen``, the TCP/TLS and
        SDP servers on the configured interface."""
        self._running = True
        connector = self.connector
        if connector is not None:
            connector.add_listener(self._on_connector_event)
            if self.config.hlc:
                connector.set_hlc(True)
        if self.config.slac:
            if self._slac is None:
                self._slac = self._build_slac()
            self._tasks.append(asyncio.create_task(self._run_slac(self._slac), name="secc-slac"))
            self._tasks.append(asyncio.create_task(self._slac_results(self._slac), name="secc-slac-results"))
        if connector is not None:
            self._pilot_changed(connector.debouncer.state)
        if listen:
            try:
                await self._listen()
            except BaseException:
                await self.stop()  # no SECC after all: the connector must not wait at 5 % for one
                raise
        self._emit("hlc", {"action": "started", "protocols": list(self.config.protocols)})

    async def stop(self) -> None:
        """Close the servers, end a running session (power off) and leave the connector in basic mode."""
        self._running = False
        tasks = [*self._tasks, *([self._fallback_task] if self._fallback_task is not None else [])]
        self._tasks, self._fallback_task = [], None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._sdp is not None:
            await self._sdp.close()
            self._sdp = None
        if self._server is not None:
            await self._server.close()
            self._server = None
        if self._slac_link is not None:
            self._slac_link.close()
            self._slac_link = None
        if self.connector is not None:
            self.connector.hlc_power(False)
            if self.config.hlc:
                self.connector.set_hlc(False)  # without the SECC the connector charges basic, not at 5 %

    async def __aenter__(self) -> Secc:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _listen(self) -> None:
        cfg = self.config
        tls = None
        if cfg.tls is not None:
            tls = tls_context(cfg.tls.files, cfg.tls.profile, client_auth=cfg.tls.client_auth)
        server = SeccServer(
            cfg.interface,
            self.serve,
            tcp=cfg.tcp,
            tls=tls,
            tcp_port=cfg.tcp_port,
            tls_port=cfg.tls.port if cfg.tls is not None else 0,
            clock=self.clock,
        )
        await server.start()
        self._server = server
        try:
            self._offer = SdpOffer(server.address.address, server.tcp_port, server.tls_port)
            self._sdp = SdpServer(cfg.interface, self._offer if self._matched else None)
            await self._sdp.start()
        except BaseException:
            await server.close()
            self._server = None
            raise

    # ------------------------------------------------------------------ one connection
    async def serve(self, conn: V2gLink) -> None:
        """Run one EV connection to its end (the SeccServer handler); never raises for the EV's doing."""
        opened = self.clock.monotonic()
        setup_deadline = opened + COMMUNICATION_SETUP_TIMEOUT_S
        self._emit("hlc", {"action": "connected", "peer": conn.peer, "tls": conn.tls_version})
        dialect: _Dialect | None = None
        try:
            dialect = await self._negotiate(conn, setup_deadline)
            if dialect is not None:
                await self._session(conn, dialect, setup_deadline)
        except _Ended as exc:
            self._end(dialect, str(exc))
        except asyncio.CancelledError:
            self._end(dialect, "the SECC stopped")
            raise
        except Exception as exc:  # a bug must not leave power on or take the server down
            log.exception("SECC connector %d: the session failed", self.config.connector)
            self._end(dialect, f"internal error: {exc!r}")
        finally:
            await conn.close()

    async def _negotiate(self, conn: V2gLink, deadline: float) -> _Dialect | None:
        message = await self._receive(conn, deadline, "SupportedAppProtocolReq")
        if message.payload_type != SAP_PAYLOAD_TYPE:
            raise _Ended(f"first message of payload type 0x{message.payload_type:04X}, not SupportedAppProtocolReq")
        received = time.perf_counter()
        tree = self._decode(Namespace.SAP, message.payload)
        supported = self._supported(conn)
        try:
            result = negotiate(tree, supported)
        except SapError as exc:
            raise _Ended(f"SupportedAppProtocolReq: {exc}") from None
        await self._send(conn, Namespace.SAP, result.response, SAP_PAYLOAD_TYPE, received)
        if result.protocol is None:
            offered = ", ".join(f"{p.namespace} {p.major}.{p.minor}" for p in supported) or "nothing"
            raise _Ended(f"no common protocol (offered on this connection: {offered})")
        dialect = self._dialect(result.protocol, conn)
        self._emit("hlc", {"action": "negotiated", "protocol": dialect.name, "schema_id": result.schema_id})
        return dialect

    async def _session(self, conn: V2gLink, dialect: _Dialect, setup_deadline: float) -> None:
        established = False
        last = self.clock.monotonic()
        while True:
            deadline = last + dialect.sequence_timeout_s if established else setup_deadline
            message = await self._receive(conn, deadline, "the next request" if established else "SessionSetupReq")
            received = time.perf_counter()
            namespace = dialect.namespace_for(message.payload_type)
            if namespace is None:  # [V2G20-092]: ignored; its header delimited it, the stream is in step
                self._emit("hlc", {"action": "ignored", "payload_type": message.payload_type})
                continue
            tree = self._decode(namespace, message.payload)
            name, _ = _describe(tree)
            try:
                out_ns, response = dialect.handle(tree, namespace)
            except (DinError, Iso2Error, Iso20Error) as exc:
                raise _Ended(f"{name}: not a request this session can answer: {exc}") from None
            await self._send(conn, out_ns, response, dialect.payload_type(out_ns), received)
            last = self.clock.monotonic()
            _, code = _describe(response)
            if name == "SessionSetupReq" and code is not None and code.startswith("OK"):
                established = True
                self._established(dialect, code)
            if dialect.ended or (code or "").startswith("FAILED"):
                break
        reason = dialect.stop_reason or "session ended"
        self._finish(dialect, reason)

    # ------------------------------------------------------------------ pieces of the loop
    async def _receive(self, conn: V2gLink, deadline: float, what: str) -> Message:
        remaining = deadline - self.clock.monotonic()
        if remaining <= 0:
            raise _Ended(f"timeout: no {what} in time")
        try:
            return await conn.receive(remaining)
        except V2gtpTimeoutError:
            raise _Ended(f"timeout: no {what} within {remaining:.3g} s") from None
        except V2gtpEofError:
            raise _Ended("the EV closed the connection") from None
        except (V2gtpError, TransportError, OSError) as exc:
            raise _Ended(f"connection failed: {exc}") from None

    def _decode(self, namespace: Namespace, payload: bytes) -> dict[str, Any]:
        try:
            tree = codec(namespace).decode(payload)
        except ExiError as exc:
            raise _Ended(f"undecodable {SHORT_NAMES.get(namespace, namespace)} message: {exc}") from None
        name, _ = _describe(tree)
        self._emit("v2g", {"dir": "rx", "message": name, "namespace": SHORT_NAMES.get(namespace, str(namespace))})
        return tree

    async def _send(
        self, conn: V2gLink, namespace: str, response: dict[str, Any], payload_type: int, received: float
    ) -> None:
        try:
            payload = codec(namespace).encode(response)
        except ExiError as exc:
            log.error("SECC connector %d: cannot encode our answer: %s", self.config.connector, exc)
            raise _Ended(f"cannot encode the answer: {exc}") from None
        try:
            await conn.send(payload_type, payload)
        except (ConnectionClosedError, OSError) as exc:
            raise _Ended(f"cannot answer: {exc}") from None
        name, code = _describe(response)
        took = (time.perf_counter() - received) * 1000.0
        short = SHORT_NAMES.get(namespace, str(namespace))
        self._emit("v2g", {"dir": "tx", "message": name, "namespace": short, "code": code, "took_ms": round(took, 3)})

    def _supported(self, conn: V2gLink) -> tuple[AppProtocol, ...]:
        out = []
        for name in self.config.protocols:
            if name == "din" and (self.dc_port is None or conn.tls):
                continue  # DIN 70121: DC only, and no TLS
            if name == "iso20":
                if conn.tls_version == "TLSv1.2":
                    continue  # [V2G20-2356]: -20 never on a TLS 1.2 connection
                if not conn.tls and self.config.iso20_require_tls:
                    continue
                name = "iso20-ac" if self.ac_port is not None else "iso20-dc"
            out.append(APP_PROTOCOLS[name])
        return tuple(out)

    def _dialect(self, protocol: AppProtocol, conn: V2gLink) -> _Dialect:
        paused = self.paused
        if protocol.namespace == Namespace.DIN:
            assert self.dc_port is not None  # offered only with a DC port
            return _Din(DinSession(self.dc_port, new_session_id=self._new_id))
        if protocol.namespace == Namespace.ISO2:
            resume = paused if isinstance(paused, PausedIso2Session) else None
            common: dict[str, Any] = {
                "config": self.config.iso2,
                "tls": conn.tls,
                "pnc": self._pnc if conn.tls else None,
                "resume": resume,
                "new_session_id": self._new_id,
                "wall_clock": self._wall,
            }
            if self.ac_port is not None:
                return _Iso2(Iso2Session(ac=self.ac_port, **common), self.ac_port.session_stopped)
            assert self.dc_port is not None
            return _Iso2(Iso2Session(dc=self.dc_port, **common), self.dc_port.session_stopped)
        resume20 = paused if isinstance(paused, PausedSession) else None
        part: AcPart | DcPart = AcPart(self.ac_port) if self.ac_port is not None else DcPart(_need(self.dc_port))
        session = Iso20Session(
            part, self.config.iso20, resume=resume20, new_session_id=self._new_id, wall_clock=self._wall
        )
        return _Iso20(session)

    def _established(self, dialect: _Dialect, code: str) -> None:
        self._session_since_plug = True
        self._live = dialect
        self._cancel_fallback()
        self.paused = None  # joined now, or replaced by this new session
        self._emit("hlc", {"action": "session_started", "protocol": dialect.name, "code": code})

    def _finish(self, dialect: _Dialect, reason: str) -> None:
        """The session ended by itself (SessionStop, a FAILED answer)."""
        dialect.abort(reason)  # only a session that did not end itself (a FAILED code without its end)
        paused = dialect.paused
        if paused is not None:
            self.paused = paused
        self._power_off()
        self._record(dialect.name, reason, paused is not None)

    def _end(self, dialect: _Dialect | None, reason: str) -> None:
        """The runner ends the connection: a session still running is stopped and the power goes off."""
        if dialect is None:
            log.info("SECC connector %d: connection closed: %s", self.config.connector, reason)
            self._emit("hlc", {"action": "closed", "reason": reason})
            return
        dialect.abort(reason)
        self._power_off()
        self._record(dialect.name, reason, False)

    def _record(self, protocol: str, reason: str, paused: bool) -> None:
        self._live = None
        log.info(
            "SECC connector %d: %s session %s: %s",
            self.config.connector,
            protocol,
            "paused" if paused else "ended",
            reason,
        )
        self.outcomes.append(_Outcome(protocol, reason, paused))
        del self.outcomes[:-32]
        action = "paused" if paused else "session_stopped"
        self._emit("hlc", {"action": action, "protocol": protocol, "reason": reason})

    def _power_off(self) -> None:
        if self.connector is not None:
            self.connector.hlc_power(False)

    # ------------------------------------------------------------------ the connector and the plug
    def _on_connector_event(self, kind: str, data: dict[str, Any]) -> None:
        if self._running and self.connector is not None:
            self._pilot_changed(self.connector.debouncer.state)

    def _pilot_changed(self, state: CpState) -> None:
        previous, self._pilot = self._pilot, state
        if state is previous:
            return
        if self._slac is not None:
            self._slac.pilot(state)
        was_plugged = previous in _PLUGGED
        if state in _PLUGGED and not was_plugged:
            self._plugged_in()
        elif state is CpState.A and was_plugged:
            self._unplugged()

    def _plugged_in(self) -> None:
        if self._live is not None:  # the pilot's debounce can trail a fast EV's SessionSetupReq
            return
        self._session_since_plug = False
        if not self.config.slac:
            self._arm_fallback(EV_COMMUNICATION_SETUP_TIMEOUT_S, "no SessionSetupReq within {:g} s of the plug-in")

    def _unplugged(self) -> None:
        self._cancel_fallback()
        self.paused = None  # the EV that paused has left
        if self.config.slac:
            self._set_matched(False)
        if self.fallen_back and self.connector is not None and self.config.hlc:
            self.connector.set_hlc(True)  # the next EV is asked for HLC again
        self.fallen_back = False

    def _arm_fallback(self, seconds: float, why: str) -> None:
        self._cancel_fallback()
        if not (self.config.basic_fallback and self.config.hlc and self.connector is not None):
            return
        self._fallback_task = asyncio.create_task(self._fallback_after(seconds, why.format(seconds)))

    def _cancel_fallback(self) -> None:
        if self._fallback_task is not None:
            self._fallback_task.cancel()
            self._fallback_task = None

    async def _fallback_after(self, seconds: float, why: str) -> None:
        await self.clock.sleep(seconds)
        self._fallback_task = None
        if not self._session_since_plug:
            self._fall_back(why)

    def _fall_back(self, why: str) -> None:
        if not (self.config.basic_fallback and self.config.hlc) or self.connector is None or self.fallen_back:
            return
        log.warning("SECC connector %d: %s: basic charging (IEC 61851-1)", self.config.connector, why)
        self.fallen_back = True
        self.connector.set_hlc(False)
        self._emit("hlc", {"action": "fallback", "reason": why})

    # ------------------------------------------------------------------ SLAC
    def _build_slac(self) -> SlacRunner:
        link = PacketLink(self.config.interface)
        self._slac_link = link
        modem = QcaModem(link, clock=self.clock) if self.config.slac_modem == "qca7000" else None
        return SlacRunner(link, modem, clock=self.clock)

    async def _run_slac(self, runner: SlacRunner) -> None:
        try:
            await runner.run()
        except LinkError as exc:
            log.error("SECC connector %d: SLAC stopped: %s", self.config.connector, exc)
            self._emit("hlc", {"action": "slac", "result": "stopped", "reason": str(exc)})

    async def _slac_results(self, runner: SlacRunner) -> None:
        while True:
            self._on_slac(await runner.next_result())

    def _on_slac(self, result: SlacResult) -> None:
        if isinstance(result, Matched):
            self._emit("hlc", {"action": "slac", "result": "matched", "ev_mac": result.ev_mac.hex(":")})
            self._set_matched(True)
            self._arm_fallback(EV_COMMUNICATION_SETUP_TIMEOUT_S, "no SessionSetupReq within {:g} s of the SLAC match")
        elif isinstance(result, Failed):
            self._emit("hlc", {"action": "slac", "result": "failed", "reason": result.reason})
            if self._pilot in _PLUGGED and not self._session_since_plug:
                self._fall_back(f"SLAC failed: {result.reason}")

    def _set_matched(self, matched: bool) -> None:
        self._matched = matched
        if self._sdp is not None:
            self._sdp.offer = self._offer if matched else None

    # ------------------------------------------------------------------ events
    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        if self._on_event is None:
            return
        event = {"t": self.clock.monotonic(), "connector": self.config.connector, **data}
        try:
            self._on_event(kind, event)
        except Exception:
            log.exception("SECC event listener failed on %s", kind)


def _describe(tree: Any) -> tuple[str, str | None]:
    """(message name, ResponseCode or None) of a decoded tree of any of the grammars."""
    if not isinstance(tree, dict) or len(tree) != 1:
        return "?", None
    ((root, content),) = tree.items()
    if root == "V2G_Message" and isinstance(content, dict):
        body = content.get("Body")
        if isinstance(body, dict) and len(body) == 1:
            ((root, content),) = body.items()
    code = content.get("ResponseCode") if isinstance(content, dict) else None
    return str(root), code if isinstance(code, str) else None


def _signed_element(element: str, tree: Mapping[str, Any]) -> bytes:
    """The PnC seam to the codec (pnc.SignedElementEncoder): SignedInfo as an xmldsig fragment, a signed
    body element with the ISO 15118-2 grammar (a fragment for the signature roots, fragment.py)."""
    if element == "SignedInfo":
        return encode_signed_info(dict(tree))
    return codec(Namespace.ISO2).encode({element: dict(tree)})


def _need(port: DcPort | None) -> DcPort:
    if port is None:
        raise SeccConfigError("no port for this energy")
    return port
