"""A simulated EV's ISO 15118 / DIN 70121 client (EVCC) on the project's own codec and transport pieces,
for HIL scenarios with high-level-communication EVs and for testing the SECC.

:class:`Evcc` runs one plug-in: SDP on an interface (or a given address, or any connector the caller
supplies), TCP or TLS, SupportedAppProtocol offering the configured protocols by priority, then the
session of the protocol the SECC chose (:mod:`hil.models.evcc_din`, :mod:`hil.models.evcc_iso2`,
:mod:`hil.models.evcc_iso20`), with an EV model inside (:class:`~hil.models.evcc_session.Battery`). A
configured pause ends the session with SessionStop(Pause) and, after ``resume_after_s``, joins it again
on a new connection with the old SessionID.

Every wait is on the injected clock (message timeouts, Ongoing loops, charge loop pacing), so the same
EV runs in virtual time against an in-memory SECC and in real time on a bench. Failures of the SECC or
the link never raise out of :meth:`Evcc.run`: they end the run with :attr:`EvccResult.error` set and the
EV made safe (no power, pilot B). Only a bad configuration raises (:class:`EvccConfigError`).

HIL seam: :class:`EvccHooks` reports the pilot state the EV applies ("B"/"C") and the power it draws, so
the rig can set ``plant.ev_state`` and the plant's EV currents (``PowerDraw.current_a`` on
``PowerDraw.phases`` phases, signed) and write ``v2g`` trace events from ``EvccHooks.message``. In virtual
time the rig passes a connector that opens :func:`hil.models.evcc_link.memory_pair` and hands the SECC end
to the firmware SECC runner (``Secc.serve``); on a bench it passes the EV's PLC interface (SDP).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from firmware.iso15118.exi import ExiDecodeError, Namespace, codec
from firmware.iso15118.sdp import SdpError, Security, discover
from firmware.iso15118.v2gtp import (
    Iso2PayloadType,
    V2gtpEofError,
    V2gtpError,
    encode,
    read_message,
)
from hal.clock import Clock
from hil.models.evcc_config import EvccConfig, EvccConfigError, EvccTls, EvSpec, Timeouts
from hil.models.evcc_din import run_din
from hil.models.evcc_iso2 import run_iso2
from hil.models.evcc_iso20 import Iso20Dialect, run_iso20
from hil.models.evcc_session import (
    NO_POWER,
    Conversation,
    Dialect,
    EvccConnectionError,
    EvccError,
    EvccHooks,
    EvccProtocolError,
    EvccResult,
    EvccSessionError,
    EvccTimeoutError,
    EvContext,
    Exchange,
    HeaderBodyDialect,
    Outcome,
    PowerDraw,
    Resume,
    V2gChannel,
    within,
)

__all__ = [
    "NO_POWER",
    "Connector",
    "EvSpec",
    "Evcc",
    "EvccConfig",
    "EvccConfigError",
    "EvccConnectionError",
    "EvccError",
    "EvccHooks",
    "EvccProtocolError",
    "EvccResult",
    "EvccSessionError",
    "EvccTimeoutError",
    "EvccTls",
    "Exchange",
    "PowerDraw",
    "StreamChannel",
    "Timeouts",
    "V2gChannel",
    "client_tls_context",
    "open_stream",
]

#: What each protocol is in SupportedAppProtocol: namespace, major and minor version (standards-facts.md 2.2);
#: ISO 15118-20 names the energy service's namespace, AC or DC (firmware.iso15118.session.sap).
APP_PROTOCOLS: dict[str, tuple[Namespace, int, int]] = {
    "din": (Namespace.DIN, 2, 0),
    "iso2": (Namespace.ISO2, 2, 0),
    "iso20-ac": (Namespace.ISO20_AC, 1, 0),
    "iso20-dc": (Namespace.ISO20_DC, 1, 0),
}
SAP_PAYLOAD_TYPE = int(Iso2PayloadType.EXI)  # 0x8001 for SupportedAppProtocol in every protocol (2.1)
#: The largest V2GTP payload the EV reads (certificate chains included; as the SECC's transport).
MAX_PAYLOAD = 65_536
#: ISO 15118-2 Table 7: the TLS 1.2 suite OpenSSL still has (its static-ECDH twin is gone since 1.1.0).
ISO2_CIPHERS = "ECDHE-ECDSA-AES128-SHA256"

#: Opens one connection to the SECC; the EVCC calls it again to resume a paused session.
Connector = Callable[[], Awaitable[V2gChannel]]
Target = str | tuple[str, int] | Connector

_RUNNERS: dict[str, Callable[[Conversation, EvContext, Resume | None], Awaitable[Outcome]]] = {
    "din": run_din,
    "iso2": run_iso2,
    "iso20": run_iso20,
}


class StreamChannel:
    """A TCP or TLS connection carrying V2GTP messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, clock: Clock) -> None:
        self._reader, self._writer, self._clock = reader, writer, clock
        ssl_object = writer.get_extra_info("ssl_object")
        self._tls_version: str | None = ssl_object.version() if ssl_object is not None else None

    @property
    def tls_version(self) -> str | None:
        return self._tls_version

    async def send(self, payload_type: int, payload: bytes) -> None:
        try:
            self._writer.write(encode(payload_type, payload))
            await self._writer.drain()
        except (OSError, ConnectionError) as exc:
            raise EvccConnectionError(f"sending to the SECC failed: {exc}") from exc

    async def receive(self) -> tuple[int, bytes]:
        # The EVCC bounds the wait with the message's timeout; this bound only keeps a forgotten read finite.
        try:
            message = await read_message(self._reader, max_payload=MAX_PAYLOAD, timeout_s=3600.0, clock=self._clock)
        except V2gtpEofError as exc:
            raise EvccConnectionError("the SECC closed the connection") from exc
        except V2gtpError as exc:
            raise EvccProtocolError(f"V2GTP from the SECC: {exc}") from exc
        except OSError as exc:
            raise EvccConnectionError(f"receiving from the SECC failed: {exc}") from exc
        return message.payload_type, message.payload

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            async with asyncio.timeout(1.0):  # a TLS close_notify the SECC never answers must not hold us
                await self._writer.wait_closed()


def client_tls_context(tls: EvccTls, protocols: tuple[str, ...]) -> ssl.SSLContext:
    """The EV's TLS context: TLS 1.3 only when it offers ISO 15118-20 alone (Table 6 [V2G20-2458]), TLS 1.2
    only without -20 (ISO 15118-2 Table 7), either when it offers both (the protocol is chosen after the
    handshake). The SECC's certificate is checked against the trust anchors, not against a host name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if protocols == ("iso20",) else ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3 if "iso20" in protocols else ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ISO2_CIPHERS)  # the TLS 1.2 suites; TLS 1.3 keeps OpenSSL's (Python cannot set them)
    if tls.verify:
        assert tls.trust_anchors is not None  # EvccTls checks it
        try:
            ctx.load_verify_locations(cafile=tls.trust_anchors)
        except (ssl.SSLError, OSError) as exc:
            raise EvccConfigError(f"tls.trust_anchors {tls.trust_anchors}: {exc}") from exc
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if tls.cert_chain is not None and tls.key is not None:
        try:
            ctx.load_cert_chain(tls.cert_chain, tls.key)
        except (ssl.SSLError, OSError) as exc:
            raise EvccConfigError(f"tls.cert_chain {tls.cert_chain}: {exc}") from exc
    return ctx


async def open_stream(
    address: tuple[Any, ...], clock: Clock, tls: ssl.SSLContext | None, *, family: int = socket.AF_INET6
) -> StreamChannel:
    """Connect to ``address`` (a socket address of ``family``; IPv6 with its scope id for link-local)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=tls, server_hostname="" if tls is not None else None
        )
    except (OSError, ssl.SSLError) as exc:
        sock.close()
        raise EvccConnectionError(f"cannot connect to {address[0]} port {address[1]}: {exc}") from exc
    except BaseException:
        sock.close()
        raise
    return StreamChannel(reader, writer, clock)


class Evcc:
    """One simulated EV's high-level communication; :meth:`run` plays one plug-in."""

    def __init__(
        self,
        config: EvccConfig | None = None,
        *,
        clock: Clock,
        hooks: EvccHooks | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or EvccConfig()
        self.clock = clock
        self.hooks = hooks or EvccHooks()
        self.wall_clock = wall_clock
        self._tls = client_tls_context(self.config.tls, self.config.protocols) if self.config.tls else None
        self.context: EvContext | None = None  # the run in progress (live SoC, pilot, power for the rig)

    async def run(self, target: Target) -> EvccResult:
        """Play one plug-in against ``target``: an interface name (SDP on it), an (address, port) pair, or
        a :data:`Connector`. Returns what happened; never raises for what the SECC or the link does."""
        ctx = EvContext(self.config, self.clock, self.hooks, self.wall_clock)
        self.context = ctx
        result = ctx.result
        resume: Resume | None = None
        try:
            while True:
                outcome = await self._session(target, ctx, resume)
                result.stop_reason = outcome.reason
                if outcome.resume is None:
                    break
                result.pauses += 1
                if self.config.resume_after_s is None or result.pauses > 1:
                    break
                await self.clock.sleep(self.config.resume_after_s)
                resume = outcome.resume
        except (EvccError, SdpError, V2gtpError, ExiDecodeError, OSError, ssl.SSLError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
            # Safety net: an answer this EV misreads must end its run, never the caller's loop.
            result.error = f"EvccProtocolError: unexpected {type(exc).__name__} reading the SECC's answers: {exc}"
        finally:
            ctx.off()
            result.soc_end = ctx.battery.soc
        return result

    async def _session(self, target: Target, ctx: EvContext, resume: Resume | None) -> Outcome:
        timeouts = self.config.timeouts
        ctx.setup_deadline = self.clock.monotonic() + timeouts.communication_setup_s
        channel = await within(self.clock, timeouts.communication_setup_s, self._connect(target), "connection")
        try:
            ctx.result.tls_version = channel.tls_version
            protocol = await self._negotiate(channel, ctx)
            ctx.result.protocol = protocol
            if resume is not None and resume.protocol != protocol:
                ctx.note(f"paused in {resume.protocol}, the SECC chose {protocol}: a new session")
                resume = None
            dialect: Dialect = (
                Iso20Dialect(self.wall_clock)
                if protocol == "iso20"
                else HeaderBodyDialect(protocol, APP_PROTOCOLS[protocol][0])
            )
            return await _RUNNERS[protocol](Conversation(channel, dialect, ctx), ctx, resume)
        finally:
            ctx.power(NO_POWER)  # the connection is going: whatever flowed stops
            await channel.close()

    async def _connect(self, target: Target) -> V2gChannel:
        if callable(target):
            return await target()
        if isinstance(target, tuple):
            host, port = target
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            if not infos:
                raise EvccConnectionError(f"no address for {host}")
            family, _, _, _, address = infos[0]
            return await open_stream(address, self.clock, self._tls, family=family)
        wanted = Security.TLS if self._tls is not None else Security.NONE
        found = await discover(target, security=wanted, clock=self.clock)
        if found.security is not wanted:
            offer = "only TLS" if found.security is Security.TLS else "no TLS"
            raise EvccSessionError(f"the SECC on {target} offers {offer}; this EV is configured for {wanted.name}")
        return await open_stream(found.sockaddr(target), self.clock, self._tls)

    async def _negotiate(self, channel: V2gChannel, ctx: EvContext) -> str:
        """SupportedAppProtocol: the configured protocols, priority 1 the first; which one the SECC chose."""
        offered = list(self.config.protocols)
        if not self.config.dc and "din" in offered:  # DIN 70121 is DC only (config checks a DIN-only AC EV)
            offered.remove("din")
        if channel.tls_version == "TLSv1.2" and "iso20" in offered:  # [V2G20-2356]: no -20 over TLS 1.2
            offered.remove("iso20")
            ctx.note("TLS 1.2 connection: ISO 15118-20 not offered")
        if not offered:
            raise EvccSessionError("no protocol left to offer on this connection")
        entries = []
        for priority, name in enumerate(offered, start=1):
            if name == "iso20":
                name = "iso20-ac" if self.config.energy.startswith("AC") else "iso20-dc"
            namespace, major, minor = APP_PROTOCOLS[name]
            entries.append(
                {
                    "ProtocolNamespace": namespace.value,
                    "VersionNumberMajor": major,
                    "VersionNumberMinor": minor,
                    "SchemaID": priority,
                    "Priority": priority,
                }
            )
        sap = codec(Namespace.SAP)
        sent = self.clock.monotonic()
        await channel.send(SAP_PAYLOAD_TYPE, sap.encode({"supportedAppProtocolReq": {"AppProtocol": entries}}))
        payload_type, payload = await within(
            self.clock, self.config.timeouts.sap_s, channel.receive(), "supportedAppProtocolRes"
        )
        if payload_type != SAP_PAYLOAD_TYPE:
            raise EvccProtocolError(f"supportedAppProtocolRes came with V2GTP payload type 0x{payload_type:04X}")
        try:
            tree = sap.decode(payload)
        except ExiDecodeError as exc:
            raise EvccProtocolError(f"supportedAppProtocolRes does not decode: {exc}") from exc
        [(name, body)] = tree.items()
        code = body.get("ResponseCode") if isinstance(body, dict) else None
        ctx.record(
            Exchange(
                sent,
                "supportedAppProtocolReq",
                name,
                code if isinstance(code, str) else None,
                self.clock.monotonic() - sent,
            )
        )
        if name != "supportedAppProtocolRes" or not isinstance(body, dict):
            raise EvccProtocolError(f"supportedAppProtocolReq was answered with {name}")
        if code not in ("OK_SuccessfulNegotiation", "OK_SuccessfulNegotiationWithMinorDeviation"):
            raise EvccSessionError(f"SupportedAppProtocol answered {code}", str(code))
        schema_id = body.get("SchemaID")
        if not isinstance(schema_id, int) or not 1 <= schema_id <= len(offered):
            raise EvccProtocolError(f"supportedAppProtocolRes SchemaID {schema_id!r} is none of the offered")
        return offered[schema_id - 1]
