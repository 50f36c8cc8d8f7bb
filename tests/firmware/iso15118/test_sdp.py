"""SECC Discovery Protocol: the request/response codec, which port the SECC announces, and the
server and client over a real veth link in a private network namespace."""

from __future__ import annotations

import asyncio
import socket
import time
from ipaddress import IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.iso15118.sdp import (
    SDP_MULTICAST_GROUP,
    SDP_SERVER_PORT,
    SdpError,
    SdpOffer,
    SdpRequest,
    SdpResponse,
    SdpServer,
    SdpTimeoutError,
    Security,
    TransportProtocol,
    answer,
    decode_request,
    decode_response,
    discover,
    encode_request,
    encode_response,
    respond,
)
from firmware.iso15118.transport import DYNAMIC_PORT_FIRST, link_local
from tests.netns import EV_IF, SECC_IF, run_in_netns

SECC = IPv6Address("fe80::1")

REQUESTS = [
    (SdpRequest(Security.TLS), "01fe9000000000020000"),
    (SdpRequest(Security.NONE), "01fe9000000000021000"),
    (SdpRequest(Security.TLS, TransportProtocol.UDP), "01fe9000000000020010"),
    (SdpRequest(Security.NONE, TransportProtocol.UDP), "01fe9000000000021010"),
]


@pytest.mark.parametrize(("request_", "wire"), REQUESTS)
def test_request_codec(request_: SdpRequest, wire: str) -> None:
    assert encode_request(request_).hex() == wire
    assert decode_request(bytes.fromhex(wire)) == request_


def test_response_layout_is_address_port_security_transport() -> None:
    response = SdpResponse(IPv6Address("fe80::a:b:c:d"), 0xC350, Security.NONE)
    wire = encode_response(response)
    assert wire.hex() == "01fe900100000014" + "fe80000000000000000a000b000c000d" + "c350" + "10" + "00"
    assert decode_response(wire) == response


@given(
    address=st.integers(0, 2**128 - 1).map(IPv6Address),
    port=st.integers(0, 0xFFFF),
    security=st.sampled_from(Security),
    transport=st.sampled_from(TransportProtocol),
)
def test_response_round_trip(address: IPv6Address, port: int, security: Security, transport: TransportProtocol) -> None:
    response = SdpResponse(address, port, security, transport)
    assert decode_response(encode_response(response)) == response


MALFORMED_REQUESTS = [
    ("01fe900000000002", "announced 2 bytes, got 0"),
    ("01fe900000000003000000", "length 3 above the accepted 2"),
    ("01fe9000000000020000ff", "1 bytes after the V2GTP payload"),
    ("01fe9001000000020000", "type 0x9001 not accepted"),  # a response
    ("01fe9002000000020000", "type 0x9002 not accepted"),  # wireless SDP is not served on PLC
    ("01fe8001000000020000", "type 0x8001 not accepted"),
    ("02fd9000000000020000", "version/inverse 0x02/0xFD"),
    ("01fe9000000000020100", "security 0x01 is reserved"),
    ("01fe900000000002ff00", "security 0xFF is reserved"),
    ("01fe9000000000020001", "transport protocol 0x01 is reserved"),
    ("01fe9000000000020011", "transport protocol 0x11 is reserved"),
]


@pytest.mark.parametrize(("wire", "why"), MALFORMED_REQUESTS)
def test_malformed_requests_are_sdp_errors(wire: str, why: str) -> None:
    with pytest.raises(SdpError, match=why):
        decode_request(bytes.fromhex(wire))


def test_a_response_with_a_reserved_security_is_refused() -> None:
    wire = bytearray(encode_response(SdpResponse(SECC, 50000, Security.TLS)))
    wire[-2] = 0x01
    with pytest.raises(SdpError, match="reserved"):
        decode_response(bytes(wire))


ANSWERS = [
    # tcp_port, tls_port, requested security -> announced security, port
    (50000, 50001, Security.TLS, Security.TLS, 50001),
    (50000, 50001, Security.NONE, Security.NONE, 50000),
    (50000, None, Security.TLS, Security.NONE, 50000),  # TLS not offered: the EV decides
    (50000, None, Security.NONE, Security.NONE, 50000),
    (None, 50001, Security.NONE, Security.TLS, 50001),  # TLS required: the EV decides
    (None, 50001, Security.TLS, Security.TLS, 50001),
]


@pytest.mark.parametrize(("tcp", "tls", "requested", "security", "port"), ANSWERS)
def test_answer_announces_the_requested_security_when_offered_else_what_there_is(
    tcp: int | None, tls: int | None, requested: Security, security: Security, port: int
) -> None:
    offer = SdpOffer(SECC, tcp, tls)
    assert offer.tls_offered is (tls is not None)
    assert offer.tls_required is (tcp is None)
    for transport in TransportProtocol:
        assert answer(SdpRequest(requested, transport), offer) == SdpResponse(SECC, port, security)
        assert decode_response(respond(encode_request(SdpRequest(requested, transport)), offer)) == SdpResponse(
            SECC, port, security, TransportProtocol.TCP
        )


@pytest.mark.parametrize(("tcp", "tls"), [(None, None), (0, None), (None, 70000)])
def test_an_offer_without_a_usable_port_is_refused(tcp: int | None, tls: int | None) -> None:
    with pytest.raises(SdpError):
        SdpOffer(SECC, tcp, tls)


@given(st.binary(max_size=40))
def test_respond_to_garbage_gives_a_response_or_an_sdp_error(data: bytes) -> None:
    try:
        reply = respond(data, SdpOffer(SECC, 50000, 50001))
    except SdpError:
        return
    request = decode_request(data)
    assert decode_response(reply).port == (50001 if request.security is Security.TLS else 50000)


@given(st.binary(max_size=40))
def test_decode_response_of_garbage_gives_a_response_or_an_sdp_error(data: bytes) -> None:
    try:
        response = decode_response(data)
    except SdpError:
        return
    assert encode_response(response) == data


def test_link_local_of_a_missing_interface_is_a_clear_error() -> None:
    with pytest.raises(Exception, match="no network interface named 'no-such-if0'"):
        link_local("no-such-if0")


# --- over a veth pair in a private namespace ---------------------------------------------------


async def netns_discovery() -> None:
    """Runs inside the namespace (tests/netns.py): SDP server on secc0, clients on ev0."""
    secc = link_local(SECC_IF)
    async with asyncio.timeout(15):
        server = SdpServer(SECC_IF)
        async with server:
            # No offer yet (the TCP/TLS servers not up): requests go unanswered.
            with pytest.raises(SdpTimeoutError):
                await discover(EV_IF, timeout_s=0.05, retries=2)

            server.offer = SdpOffer(secc.address, 50000, 50001)
            started = time.monotonic()
            response = await discover(EV_IF, security=Security.TLS)
            first_answer_s = time.monotonic() - started
            assert response == SdpResponse(secc.address, 50001, Security.TLS)
            assert response.sockaddr(EV_IF) == (str(secc.address), 50001, 0, socket.if_nametoindex(EV_IF))
            assert first_answer_s < 0.25, "answered within the first try"
            assert await discover(EV_IF, security=Security.NONE) == SdpResponse(secc.address, 50000, Security.NONE)

            server.offer = SdpOffer(secc.address, None, 50001)  # TLS required
            assert await discover(EV_IF, security=Security.NONE) == SdpResponse(secc.address, 50001, Security.TLS)

            # Malformed datagrams are dropped, the server keeps answering; replies go back unicast
            # to the requester's port.
            ev = link_local(EV_IF)
            raw = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            raw.setblocking(False)
            raw.bind(ev.sockaddr(DYNAMIC_PORT_FIRST + 7))
            raw.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ev.scope_id)
            group = (str(SDP_MULTICAST_GROUP), SDP_SERVER_PORT, 0, ev.scope_id)
            loop = asyncio.get_running_loop()
            for junk in (b"", b"\x01\xfe", b"\x01\xfe\x90\x00\x00\x00\x00\x02\x20\x00", b"x" * 3000):
                await loop.sock_sendto(raw, junk, group)
            await loop.sock_sendto(raw, encode_request(SdpRequest(Security.NONE)), group)
            reply, source = await asyncio.wait_for(loop.sock_recvfrom(raw, 2048), 1.0)
            assert decode_response(reply) == SdpResponse(secc.address, 50001, Security.TLS)
            assert source[1] == SDP_SERVER_PORT  # [V2G20-149]
            assert IPv6Address(source[0].split("%")[0]) == secc.address
            # Exactly one reply: the junk got none.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(loop.sock_recvfrom(raw, 2048), 0.1)
            raw.close()

        # Server closed: the client gives up after its tries.
        started = time.monotonic()
        with pytest.raises(SdpTimeoutError):
            await discover(EV_IF, timeout_s=0.02, retries=5)
        assert 0.09 < time.monotonic() - started < 1.0


def test_sdp_discovery_over_a_veth_pair() -> None:
    proc = run_in_netns(__name__, "netns_discovery", timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
