"""SECC Discovery Protocol (SDP): how an EV finds the SECC's address and port on the PLC link.

The EVCC multicasts an SDP request (V2GTP payload type 0x9000, 2 bytes: security, transport) to
FF02::1 on UDP port 15118 [V2G20-139][V2G20-141]; the SDP server answers the sender, from port
15118, with an SDP response (payload type 0x9001, 20 bytes: the SECC's IPv6 address, its port, the
security and the transport it offers) [V2G20-149..156]. Encoding of the two option bytes: ISO
15118-20 Table 21 (0x00 TLS / 0x10 no TLS; 0x00 TCP / 0x10 UDP, the rest reserved). The EVCC tries
every 250 ms, up to 50 times (standards-facts.md 2.1, 2.4).

Which port to announce: the requested security when the SECC offers it; otherwise what the SECC has
(TLS when it requires TLS, plain TCP when it offers no TLS), leaving the EV to decide whether to go
on. Transport is always TCP: there is no V2G over UDP to offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import AddressValueError, IPv6Address

from firmware.iso15118.transport import LinkLocal, bind_dynamic_port, link_local
from firmware.iso15118.v2gtp import Iso2PayloadType, V2gtpError, decode, encode
from hal.clock import Clock, RealClock

log = logging.getLogger(__name__)

SDP_SERVER_PORT = 15118  # V2G_UDP_SDP_SERVER, ISO 15118-20 Table 20
SDP_MULTICAST_GROUP = IPv6Address("ff02::1")  # link-local all-nodes, [V2G20-139] / IETF RFC 4291
SDP_REQUEST_TIMEOUT_S = 0.25  # EVCC SDP request timeout (standards-facts.md 2.4)
SDP_MAX_REQUESTS = 50  # EVCC SDP_MAX_REQUEST_COUNTER (standards-facts.md 2.1)
REQUEST_PAYLOAD_LEN = 2  # [V2G20-141]
RESPONSE_PAYLOAD_LEN = 20  # [V2G20-153]
_MAX_DATAGRAM = 2048  # any larger datagram is not SDP; read it whole so it cannot split


class Security(IntEnum):
    """ISO 15118-20 Table 21, byte 1 of the request / byte 19 of the response."""

    TLS = 0x00
    NONE = 0x10


class TransportProtocol(IntEnum):
    """ISO 15118-20 Table 21, byte 2 of the request / byte 20 of the response."""

    TCP = 0x00
    UDP = 0x10  # "reserved for UDP"


class SdpError(Exception):
    """A malformed SDP datagram or an impossible SDP configuration; the message says which."""


class SdpTimeoutError(SdpError):
    """No SDP response after every try."""


@dataclass(frozen=True)
class SdpRequest:
    security: Security
    transport: TransportProtocol = TransportProtocol.TCP


@dataclass(frozen=True)
class SdpResponse:
    address: IPv6Address
    port: int
    security: Security
    transport: TransportProtocol = TransportProtocol.TCP

    def sockaddr(self, interface: str) -> tuple[str, int, int, int]:
        """Where to connect: the announced address scoped to the interface it was discovered on."""
        return (str(self.address), self.port, 0, socket.if_nametoindex(interface))


@dataclass(frozen=True)
class SdpOffer:
    """What the SECC offers: its link-local address, a plain TCP port and/or a TLS port.

    ``tls_offered`` is having a TLS port; ``tls_required`` is having no plain TCP port.
    """

    address: IPv6Address
    tcp_port: int | None
    tls_port: int | None

    def __post_init__(self) -> None:
        if self.tcp_port is None and self.tls_port is None:
            raise SdpError("an SDP offer needs a TCP port, a TLS port or both")
        for port in (self.tcp_port, self.tls_port):
            if port is not None and not 0 < port <= 0xFFFF:
                raise SdpError(f"port {port} cannot be announced")

    @property
    def tls_offered(self) -> bool:
        return self.tls_port is not None

    @property
    def tls_required(self) -> bool:
        return self.tcp_port is None


def encode_request(request: SdpRequest) -> bytes:
    return encode(Iso2PayloadType.SDP_REQUEST, bytes([request.security, request.transport]))


def decode_request(datagram: bytes) -> SdpRequest:
    payload = _payload(datagram, Iso2PayloadType.SDP_REQUEST, REQUEST_PAYLOAD_LEN)
    return SdpRequest(_security(payload[0]), _transport(payload[1]))


def encode_response(response: SdpResponse) -> bytes:
    if not 0 <= response.port <= 0xFFFF:
        raise SdpError(f"port {response.port} does not fit the SDP response")
    payload = response.address.packed + struct.pack(">HBB", response.port, response.security, response.transport)
    return encode(Iso2PayloadType.SDP_RESPONSE, payload)


def decode_response(datagram: bytes) -> SdpResponse:
    payload = _payload(datagram, Iso2PayloadType.SDP_RESPONSE, RESPONSE_PAYLOAD_LEN)
    port, security, transport = struct.unpack_from(">HBB", payload, 16)
    return SdpResponse(IPv6Address(payload[:16]), port, _security(security), _transport(transport))


def answer(request: SdpRequest, offer: SdpOffer) -> SdpResponse:
    """The response to ``request``: the port of the requested security when offered, else the other."""
    if offer.tls_port is not None and (request.security is Security.TLS or offer.tcp_port is None):
        return SdpResponse(offer.address, offer.tls_port, Security.TLS)
    assert offer.tcp_port is not None  # SdpOffer guarantees one of the two ports
    return SdpResponse(offer.address, offer.tcp_port, Security.NONE)


def respond(datagram: bytes, offer: SdpOffer) -> bytes:
    """The response datagram for a request datagram; :class:`SdpError` when it is not a valid request."""
    return encode_response(answer(decode_request(datagram), offer))


def _payload(datagram: bytes, payload_type: int, length: int) -> bytes:
    try:
        return decode(datagram, max_payload=length, accept=(payload_type,)).payload
    except V2gtpError as exc:
        raise SdpError(f"not an SDP message of type 0x{payload_type:04X}: {exc}") from exc


def _security(value: int) -> Security:
    try:
        return Security(value)
    except ValueError:
        raise SdpError(f"SDP security 0x{value:02X} is reserved (0x00 TLS, 0x10 none)") from None


def _transport(value: int) -> TransportProtocol:
    try:
        return TransportProtocol(value)
    except ValueError:
        raise SdpError(f"SDP transport protocol 0x{value:02X} is reserved (0x00 TCP, 0x10 UDP)") from None


def _join_all_nodes(sock: socket.socket, scope_id: int) -> None:
    mreq = SDP_MULTICAST_GROUP.packed + struct.pack("@I", scope_id)  # struct ipv6_mreq
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)


class SdpServer:
    """Answers SDP requests arriving on one interface with ``offer`` (None: stay silent).

    Bound to [::]:15118 with SO_REUSEADDR so the SDP servers of several connectors on one host can
    coexist; each keeps only datagrams from link-local senders on its own interface (the sender's
    scope id is the interface the datagram came in on). Malformed datagrams are logged at debug
    level and dropped; nothing a peer sends can stop the server.
    """

    def __init__(self, interface: str, offer: SdpOffer | None = None, *, port: int = SDP_SERVER_PORT) -> None:
        self.interface = interface
        self.offer = offer
        self._port = port
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scope_id = 0

    async def start(self) -> None:
        if self._sock is not None:
            raise SdpError("SDP server already started")
        self._scope_id = socket.if_nametoindex(self.interface)
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::", self._port, 0, 0))
            _join_all_nodes(sock, self._scope_id)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise SdpError(f"cannot open the SDP server on {self.interface} port {self._port}: {exc}") from exc
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self._sock = sock
        log.info("SDP server on %s UDP port %d", self.interface, self._port)

    async def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None and self._loop is not None:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    async def __aenter__(self) -> SdpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(64):  # bounded, so a flood cannot starve the event loop
            try:
                datagram, source = sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("SDP receive on %s failed: %s", self.interface, exc)
                return
            self._handle(sock, datagram, source)

    def _handle(self, sock: socket.socket, datagram: bytes, source: tuple[str, int, int, int]) -> None:
        host, _port, _flow, scope_id = source
        try:
            sender = IPv6Address(host.split("%", 1)[0])
        except AddressValueError:
            return
        if not sender.is_link_local or scope_id != self._scope_id:
            return  # SDP lives on the link of this interface only ([V2G20-123])
        offer = self.offer
        if offer is None:
            log.debug("SDP request from %s ignored: no SECC port to announce yet", host)
            return
        try:
            reply = respond(datagram, offer)
        except SdpError as exc:
            log.debug("SDP datagram from %s dropped: %s", host, exc)
            return
        try:
            sock.sendto(reply, source)  # to the requester's address and port [V2G20-150][V2G20-151]
        except OSError as exc:
            log.debug("SDP response to %s not sent: %s", host, exc)


async def discover(
    interface: str,
    *,
    security: Security = Security.TLS,
    timeout_s: float = SDP_REQUEST_TIMEOUT_S,
    retries: int = SDP_MAX_REQUESTS,
    clock: Clock | None = None,
    port: int = SDP_SERVER_PORT,
) -> SdpResponse:
    """Find the SECC on ``interface`` the way an EVCC does: multicast a request, wait ``timeout_s``
    for a response, up to ``retries`` times. Any valid response counts, also a late one to an earlier
    try ([V2G20-126]); malformed ones are skipped."""
    if retries < 1:
        raise ValueError("retries must be at least 1")
    clock = clock or RealClock()
    local: LinkLocal = link_local(interface)
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, local.scope_id)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        bind_dynamic_port(sock, local)  # V2G_UDP_SDP_CLIENT: a dynamic port (ISO 15118-20 Table 20)
        sock.setblocking(False)
        request = encode_request(SdpRequest(security))
        target = (str(SDP_MULTICAST_GROUP), port, 0, local.scope_id)
        for attempt in range(retries):
            await loop.sock_sendto(sock, request, target)
            response = await _await_response(loop, sock, clock, timeout_s)
            if response is not None:
                log.debug("SDP response after %d request(s): %s", attempt + 1, response)
                return response
    except OSError as exc:
        raise SdpError(f"SDP on {interface} failed: {exc}") from exc
    finally:
        sock.close()
    raise SdpTimeoutError(f"no SDP response on {interface} after {retries} requests of {timeout_s} s")


async def _await_response(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, clock: Clock, timeout_s: float
) -> SdpResponse | None:
    timer = asyncio.ensure_future(clock.sleep(timeout_s))
    try:
        while True:
            receiving = asyncio.ensure_future(loop.sock_recvfrom(sock, _MAX_DATAGRAM))
            try:
                await asyncio.wait({receiving, timer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not receiving.done():
                    receiving.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await receiving
            if receiving.cancelled():
                return None
            datagram, _source = receiving.result()
            try:
                return decode_response(datagram)
            except SdpError as exc:
                log.debug("SDP client skipped a datagram: %s", exc)
    finally:
        timer.cancel()
