"""The SECC's TCP and TLS servers on the link-local address of the PLC interface.

ISO 15118 runs over IPv6 link-local addresses only, so a listener is bound to the interface's
``fe80::`` address with that interface's scope id; the port comes from the dynamic range
49152-65535 (IETF RFC 6335, as ISO 15118-2 and -20 (Table 20) require for the SECC's TCP port;
standards-facts.md 2.1) and is reported so the SDP server can announce it.

One SECC serves one EV: while a connection is open any further one, on either port, is accepted and
closed at once (before a TLS handshake), so it never competes with the running session.

TLS (what Python's ``ssl`` on OpenSSL 3 can and cannot do; see :func:`tls_context`):

* ISO 15118-2 (Table 7, [V2G2-602] as implementers quote it) names TLS 1.2 with
  TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256 (OpenSSL ``ECDHE-ECDSA-AES128-SHA256``) and
  TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA256 (``ECDH-ECDSA-AES128-SHA256``). OpenSSL removed static
  ECDH suites in 1.1.0, so only the ECDHE suite can be offered; an EV that offers the static one
  alone cannot connect. The ECDHE group is secp256r1, the curve -2 uses throughout. The SECC
  authenticates itself only: no certificate is asked of the EV.
* ISO 15118-20 (Table 6, [V2G20-2458]) names TLS 1.3 with TLS_AES_256_GCM_SHA384 and
  TLS_CHACHA20_POLY1305_SHA256. Python cannot set TLS 1.3 suites, so OpenSSL's default list, which
  also has TLS_AES_128_GCM_SHA256, stays offered; with server preference TLS_AES_256_GCM_SHA384 is
  what an EV offering it gets. The key exchange group is pinned to secp521r1 (Table 7; x448, its
  alternative, cannot be added because Python sets one group only). Python can neither order the
  signature algorithms of Table 8 ([V2G20-1667]) nor fill the ``certificate_authorities``
  extension ([V2G20-2401]). The SECC always asks for the EV's certificate ([V2G20-2400]); by default
  an EV without one is refused; ``ClientAuth.OPTIONAL`` lets it in and leaves what it may do
  (e.g. EIM only) to the session layer, which sees :attr:`V2gConnection.peer_certificate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import secrets
import socket
import ssl
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

from cryptography import x509

from firmware.iso15118.v2gtp import (
    EXI_PAYLOAD_TYPES,
    Message,
    V2gtpError,
    V2gtpTimeoutError,
    encode,
    read_message,
)
from hal.clock import Clock, RealClock

log = logging.getLogger(__name__)

DYNAMIC_PORT_FIRST = 49152  # IETF RFC 6335 dynamic ports (ISO 15118-20 Table 20; standards-facts.md 2.1)
DYNAMIC_PORT_LAST = 65535
# Our choices, not the standard's: a V2G message is a few kB at most (a -20 ScheduleExchange with
# 1024 schedule entries stays well under this), and the whole TCP+TLS+SAP set-up must fit in the
# EV's V2G_EVCC_CommunicationSetup_Timeout of 20 s (standards-facts.md 2.4).
DEFAULT_MAX_PAYLOAD = 65536
TLS_HANDSHAKE_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 1.0
_PORT_ATTEMPTS = 64
_PROC_IF_INET6 = Path("/proc/net/if_inet6")
_IFA_F_TENTATIVE = 0x40  # linux/if_addr.h: duplicate address detection still running
_IFA_F_DADFAILED = 0x08
_SCOPE_LINK = 0x20  # /proc/net/if_inet6 scope column for link-local addresses


class TransportError(Exception):
    """The transport cannot do what was asked; the message names the interface, file or peer."""


class InterfaceError(TransportError):
    """The interface does not exist or has no usable link-local address."""


class TlsConfigError(TransportError):
    """A certificate, key or trust anchor file is missing, unreadable or does not fit."""


class ConnectionClosedError(TransportError):
    """The V2G connection is closed."""


@dataclass(frozen=True)
class LinkLocal:
    """An interface's IPv6 link-local address with the scope id that makes it routable."""

    interface: str
    address: IPv6Address
    scope_id: int

    def sockaddr(self, port: int) -> tuple[str, int, int, int]:
        return (str(self.address), port, 0, self.scope_id)


def link_local(interface: str) -> LinkLocal:
    """The first link-local address of ``interface`` whose duplicate address detection is done."""
    try:
        scope_id = socket.if_nametoindex(interface)
    except OSError:
        raise InterfaceError(f"no network interface named {interface!r}") from None
    try:
        table = _PROC_IF_INET6.read_text()
    except OSError as exc:
        raise InterfaceError(f"cannot read {_PROC_IF_INET6}: {exc}") from None
    for line in table.splitlines():
        fields = line.split()
        if len(fields) != 6 or fields[5] != interface:
            continue
        address = IPv6Address(int(fields[0], 16))
        scope, flags = int(fields[3], 16), int(fields[4], 16)
        if scope == _SCOPE_LINK and address.is_link_local and not flags & (_IFA_F_TENTATIVE | _IFA_F_DADFAILED):
            return LinkLocal(interface, address, scope_id)
    raise InterfaceError(f"interface {interface!r} has no link-local IPv6 address ready (tentative or missing)")


def bind_dynamic_port(sock: socket.socket, local: LinkLocal, port: int = 0) -> int:
    """Bind ``sock`` to ``local`` on ``port``, or on a free port of the dynamic range when 0.

    The kernel's own ephemeral range (32768-60999 by default on Linux) reaches below 49152, so the
    port is drawn here instead of leaving it to ``bind(0)``.
    """
    if port:
        if not DYNAMIC_PORT_FIRST <= port <= DYNAMIC_PORT_LAST:
            raise TransportError(f"port {port} is outside the dynamic range {DYNAMIC_PORT_FIRST}-{DYNAMIC_PORT_LAST}")
        candidates = [port]
    else:
        span = DYNAMIC_PORT_LAST - DYNAMIC_PORT_FIRST + 1
        candidates = [DYNAMIC_PORT_FIRST + secrets.randbelow(span) for _ in range(_PORT_ATTEMPTS)]
    for candidate in candidates:
        try:
            sock.bind(local.sockaddr(candidate))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise TransportError(f"cannot bind [{local.address}%{local.interface}]:{candidate}: {exc}") from exc
            continue
        return candidate
    raise TransportError(f"no free port for [{local.address}%{local.interface}] after {len(candidates)} attempts")


# --- TLS ---------------------------------------------------------------------------------------


class TlsProfile(StrEnum):
    ISO2 = "iso2"  # TLS 1.2 only, ISO 15118-2 Table 7
    ISO20 = "iso20"  # TLS 1.3 only, ISO 15118-20 Table 6
    # One TLS port for EVs of either kind (the SECC learns the protocol only in SupportedAppProtocol,
    # after the handshake; -20 permits serving TLS 1.2 for backwards compatibility, [V2G20-2359]).
    # The session layer must not select -20 on a TLS 1.2 connection ([V2G20-2356]).
    ISO2_AND_ISO20 = "iso2+iso20"


class ClientAuth(StrEnum):
    NONE = "none"  # no CertificateRequest (ISO 15118-2: the EV authenticates the SECC only)
    OPTIONAL = "optional"  # CertificateRequest sent, an EV without a certificate still gets in
    REQUIRED = "required"  # CertificateRequest sent, an EV without a valid certificate is refused


_ISO2_CIPHERS = "ECDHE-ECDSA-AES128-SHA256"  # ISO 15118-2 Table 7 minus the static-ECDH suite OpenSSL lacks
_ISO2_GROUP = "prime256v1"  # secp256r1, the curve of every ISO 15118-2 certificate and key exchange
_ISO20_GROUP = "secp521r1"  # ISO 15118-20 Table 7, first entry
_DEFAULT_CLIENT_AUTH = {
    TlsProfile.ISO2: ClientAuth.NONE,
    TlsProfile.ISO20: ClientAuth.REQUIRED,  # [V2G20-2400]
    TlsProfile.ISO2_AND_ISO20: ClientAuth.OPTIONAL,  # a -2 EV has no vehicle certificate
}


@dataclass(frozen=True)
class TlsFiles:
    """Where the SECC's TLS credentials live (paths from configuration, PEM files)."""

    cert_chain: Path  # the SECC leaf certificate followed by its sub-CA certificates
    key: Path
    key_password: str | None = None
    trust_anchors: Path | None = None  # V2G / OEM root CA(s) that vouch for the EV's certificate


def tls_context(files: TlsFiles, profile: TlsProfile, *, client_auth: ClientAuth | None = None) -> ssl.SSLContext:
    """A server-side TLS context for ``profile``; see the module docstring for what it enforces."""
    auth = client_auth if client_auth is not None else _DEFAULT_CLIENT_AUTH[profile]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if profile is TlsProfile.ISO20 else ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2 if profile is TlsProfile.ISO2 else ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    if profile is not TlsProfile.ISO20:
        ctx.set_ciphers(_ISO2_CIPHERS)
    if profile is TlsProfile.ISO2:
        ctx.set_ecdh_curve(_ISO2_GROUP)
    elif profile is TlsProfile.ISO20:
        ctx.set_ecdh_curve(_ISO20_GROUP)
    # ISO2_AND_ISO20 keeps OpenSSL's group list, which holds both secp256r1 and secp521r1.
    for path, what in ((files.cert_chain, "certificate chain"), (files.key, "private key")):
        if not path.is_file():
            raise TlsConfigError(f"TLS {what} file {path} does not exist")
    try:
        ctx.load_cert_chain(files.cert_chain, files.key, password=files.key_password)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise TlsConfigError(f"cannot load TLS certificate {files.cert_chain} with key {files.key}: {exc}") from exc
    if auth is ClientAuth.NONE:
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if files.trust_anchors is None:
        raise TlsConfigError(f"client authentication {auth.value!r} needs trust anchors to check the EV against")
    try:
        ctx.load_verify_locations(cafile=files.trust_anchors)
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(f"cannot load TLS trust anchors {files.trust_anchors}: {exc}") from exc
    ctx.verify_mode = ssl.CERT_REQUIRED if auth is ClientAuth.REQUIRED else ssl.CERT_OPTIONAL
    return ctx


# --- connections -------------------------------------------------------------------------------


class V2gConnection:
    """One EV's TCP or TLS connection, carrying V2GTP messages."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_payload: int,
        accept: Collection[int],
        clock: Clock,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._max_payload = max_payload
        self._accept = accept
        self._clock = clock
        self._closed = False
        peer = writer.get_extra_info("peername")
        self.peer: str = f"[{peer[0]}]:{peer[1]}" if peer else "unknown peer"
        ssl_object: ssl.SSLObject | None = writer.get_extra_info("ssl_object")
        self.tls_version: str | None = ssl_object.version() if ssl_object else None
        cipher = ssl_object.cipher() if ssl_object else None
        self.cipher: str | None = cipher[0] if cipher else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        self.peer_certificate: x509.Certificate | None = x509.load_der_x509_certificate(der) if der else None

    @property
    def tls(self) -> bool:
        return self.tls_version is not None

    @property
    def closed(self) -> bool:
        return self._closed

    async def receive(self, timeout_s: float) -> Message:
        """The next V2GTP message.

        Raises a :class:`~firmware.iso15118.v2gtp.V2gtpError` for a bad or missing message (an EV that
        closed between messages gives ``V2gtpEofError``) and :class:`ConnectionClosedError` when the
        connection is gone; either way the connection is closed, except after a timeout between
        messages, which loses nothing.
        """
        if self._closed:
            raise ConnectionClosedError(f"connection to {self.peer} is closed")
        try:
            return await read_message(
                self._reader, max_payload=self._max_payload, timeout_s=timeout_s, accept=self._accept, clock=self._clock
            )
        except V2gtpTimeoutError as exc:
            if exc.mid_message:
                await self.close()
            raise
        except V2gtpError:
            # ISO 15118-20 7.8.3.2: a message with a wrong header is ignored; after it the stream
            # has no trustworthy message boundary, so the connection goes.
            await self.close()
            raise
        except OSError as exc:  # reset by the peer, TLS alert (ssl.SSLError is an OSError)
            await self.close()
            raise ConnectionClosedError(f"connection to {self.peer} failed: {exc}") from exc

    async def send(self, payload_type: int, payload: bytes, *, timeout_s: float = SEND_TIMEOUT_S) -> None:
        if self._closed:
            raise ConnectionClosedError(f"connection to {self.peer} is closed")
        frame = encode(payload_type, payload)
        try:
            self._writer.write(frame)
            async with asyncio.timeout(timeout_s):
                await self._writer.drain()
        except (OSError, TimeoutError) as exc:
            await self.close()
            raise ConnectionClosedError(f"cannot send to {self.peer}: {exc or 'timed out'}") from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await _close_writer(self._writer)


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        # A TLS close_notify the peer never answers must not hold us up.
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await writer.wait_closed()
    except (OSError, ssl.SSLError, TimeoutError):
        writer.transport.abort()


Handler = Callable[[V2gConnection], Awaitable[None]]


class SeccServer:
    """The SECC's TCP and/or TLS listeners on one interface, feeding one connection at a time to
    ``handler``. The connection is closed when the handler returns or raises."""

    def __init__(
        self,
        interface: str,
        handler: Handler,
        *,
        tcp: bool = True,
        tls: ssl.SSLContext | None = None,
        tcp_port: int = 0,
        tls_port: int = 0,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        accept: Collection[int] = EXI_PAYLOAD_TYPES,
        clock: Clock | None = None,
        tls_handshake_timeout_s: float = TLS_HANDSHAKE_TIMEOUT_S,
    ) -> None:
        if not tcp and tls is None:
            raise ValueError("a SECC needs a TCP or a TLS server (or both)")
        self.interface = interface
        self._handler = handler
        self._want_tcp = tcp
        self._tls = tls
        self._requested_ports = (tcp_port, tls_port)
        self._max_payload = max_payload
        self._accept = frozenset(accept)
        self._clock = clock or RealClock()
        self._handshake_timeout_s = tls_handshake_timeout_s
        self._servers: list[asyncio.Server] = []
        self._local: LinkLocal | None = None
        self._tcp_port: int | None = None
        self._tls_port: int | None = None
        self._active: asyncio.Task[Any] | None = None
        self._connection: V2gConnection | None = None

    @property
    def address(self) -> LinkLocal:
        if self._local is None:
            raise TransportError("SECC server not started")
        return self._local

    @property
    def tcp_port(self) -> int | None:
        return self._tcp_port

    @property
    def tls_port(self) -> int | None:
        return self._tls_port

    @property
    def busy(self) -> bool:
        return self._active is not None

    async def start(self) -> None:
        if self._servers:
            raise TransportError("SECC server already started")
        self._local = link_local(self.interface)
        try:
            if self._want_tcp:
                self._tcp_port = await self._listen(self._requested_ports[0], tls=False)
            if self._tls is not None:
                self._tls_port = await self._listen(self._requested_ports[1], tls=True)
        except BaseException:
            await self.close()
            raise
        log.info(
            "SECC on [%s%%%s] TCP port %s, TLS port %s",
            self._local.address,
            self.interface,
            self._tcp_port,
            self._tls_port,
        )

    async def close(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        if self._active is not None and self._active is not asyncio.current_task():
            self._active.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._active
        for server in servers:
            await server.wait_closed()
        self._tcp_port = self._tls_port = None

    async def __aenter__(self) -> SeccServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _listen(self, port: int, *, tls: bool) -> int:
        assert self._local is not None
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebind over TIME_WAIT after a restart
            chosen = bind_dynamic_port(sock, self._local, port)
            sock.listen(4)
            sock.setblocking(False)

            async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await self._serve(reader, writer, tls=tls)

            self._servers.append(await asyncio.start_server(on_connect, sock=sock))
        except BaseException:
            sock.close()
            raise
        return chosen

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, tls: bool) -> None:
        peer = writer.get_extra_info("peername")
        # Checked and claimed before the first await, so two connections arriving together
        # cannot both get in.
        if self._active is not None:
            log.info("refusing a second connection from %s: the SECC is busy with %s", peer, self._describe())
            writer.close()
            return
        self._active = asyncio.current_task()
        try:
            if tls:
                assert self._tls is not None
                try:
                    await writer.start_tls(self._tls, ssl_handshake_timeout=self._handshake_timeout_s)
                except (OSError, ssl.SSLError, TimeoutError) as exc:
                    log.warning("TLS handshake with %s failed: %s", peer, exc)
                    writer.transport.abort()
                    return
            conn = V2gConnection(reader, writer, max_payload=self._max_payload, accept=self._accept, clock=self._clock)
            self._connection = conn
            log.info("V2G connection from %s (%s)", conn.peer, conn.tls_version or "TCP")
            try:
                await self._handler(conn)
            except Exception:
                log.exception("the V2G handler for %s failed", conn.peer)
            finally:
                await conn.close()
        finally:
            self._connection = None
            self._active = None

    def _describe(self) -> str:
        return self._connection.peer if self._connection is not None else "a connection being set up"
