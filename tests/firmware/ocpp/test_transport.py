"""The websocket transport to the CSMS: security profiles 0-3 (standards-facts.md 4.7), the handshake, the
failure classes the reconnect loop relies on, and the link wrapper. Live cases run a local `websockets`
server on 127.0.0.1 (port 0), with TLS from throw-away certificates (tests/firmware/ocpp/certs.py)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import random
import socket
import ssl
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from firmware.ocpp.link import LinkClosed
from firmware.ocpp.transport import (
    MAX_FRAME_BYTES,
    Backoff,
    OcppProtocol,
    Security,
    TransportError,
    WebsocketLink,
    connect_with_retry,
    open_link,
    station_url,
)
from hal.clock import VirtualClock
from tests.firmware.ocpp.certs import Pki, make_pki

PASSWORD = "correct-horse-battery"  # 21 characters: inside the 16-40 range of BasicAuthPassword
STATION = "CP-SEC"
ALL_PROTOCOLS: tuple[OcppProtocol, ...] = ("ocpp1.6", "ocpp2.0.1", "ocpp2.1")
SCENARIO_TIMEOUT_S = 20.0


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, SCENARIO_TIMEOUT_S))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# ====================================================================== a local CSMS


@dataclass
class Seen:
    """What the test CSMS observed."""

    requests: list[Headers] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    subprotocols: list[str | None] = field(default_factory=list)
    peer_certs: list[dict[str, Any] | None] = field(default_factory=list)
    tls_versions: list[str | None] = field(default_factory=list)
    close_codes: list[int | None] = field(default_factory=list)


@dataclass
class LocalCsms:
    url: str
    seen: Seen


Behaviour = Callable[[ServerConnection], Awaitable[None]]


async def _hold_open(ws: ServerConnection) -> None:
    await ws.wait_closed()


@asynccontextmanager
async def local_csms(
    *,
    tls: ssl.SSLContext | None = None,
    subprotocols: Sequence[str] | None = ALL_PROTOCOLS,
    status: int | None = None,
    force_subprotocol: str | None = None,
    behaviour: Behaviour = _hold_open,
) -> AsyncIterator[LocalCsms]:
    """A websocket server on 127.0.0.1 that records each handshake. ``status`` answers every handshake
    with that HTTP status instead; ``force_subprotocol`` picks that subprotocol whatever was offered."""
    seen = Seen()

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        seen.requests.append(request.headers)
        seen.paths.append(request.path)
        return connection.respond(status, "refused by the test CSMS\n") if status is not None else None

    async def handler(ws: ServerConnection) -> None:
        seen.subprotocols.append(ws.subprotocol)
        tls_object = ws.transport.get_extra_info("ssl_object")
        seen.tls_versions.append(tls_object.version() if tls_object is not None else None)
        seen.peer_certs.append(ws.transport.get_extra_info("peercert"))
        try:
            await behaviour(ws)
        finally:
            await ws.wait_closed()
            seen.close_codes.append(ws.close_code)

    extra: dict[str, Any] = {}
    if force_subprotocol is not None:
        extra["select_subprotocol"] = lambda _connection, _offered: force_subprotocol
    async with serve(
        handler,
        "127.0.0.1",
        0,
        ssl=tls,
        subprotocols=subprotocols,  # type: ignore[arg-type]  # websockets types it as a NewType
        process_request=process_request,
        **extra,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield LocalCsms(f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/ocpp", seen)


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) for the server side to catch up with what the client already saw."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def server_tls(pki: Pki, *, require_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if require_client_cert:
        context.load_verify_locations(pki.ca_cert)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _legacy_tls(context: ssl.SSLContext) -> ssl.SSLContext:
    """Allow exactly TLS 1.1 (OpenSSL 3 hides it behind security level 0)."""
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1_1 itself is deprecated
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


def basic(station_id: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{station_id}:{password}".encode()).decode()


def profile3(pki: Pki) -> Security:
    return Security(profile=3, ca_file=pki.ca_cert, client_cert=pki.client_cert, client_key=pki.client_key)


# ====================================================================== Security.check


def _complete(profile: int, tmp: Path = Path("/nonexistent")) -> Security:
    """A profile with every credential it could need, so that only the URL and the protocol decide."""
    return Security(
        profile=profile, password=PASSWORD, ca_file=tmp / "ca.pem", client_cert=tmp / "c.pem", client_key=tmp / "c.key"
    )


#: (profile, scheme) -> the protocols it may be used with. Profile 0 exists only in 1.6; TLS profiles
#: never run over plain ws:// (standards-facts.md 4.7).
ALLOWED: dict[tuple[int, str], tuple[OcppProtocol, ...]] = {
    (0, "ws"): ("ocpp1.6",),
    (0, "wss"): ("ocpp1.6",),
    (1, "ws"): ALL_PROTOCOLS,
    (1, "wss"): ALL_PROTOCOLS,
    (2, "ws"): (),
    (2, "wss"): ALL_PROTOCOLS,
    (3, "ws"): (),
    (3, "wss"): ALL_PROTOCOLS,
}


@pytest.mark.parametrize(
    ("profile", "scheme", "protocol"), list(itertools.product(range(4), ("ws", "wss"), ALL_PROTOCOLS))
)
def test_check_accepts_exactly_the_allowed_profile_scheme_and_protocol(
    profile: int, scheme: str, protocol: OcppProtocol
) -> None:
    url = f"{scheme}://csms.example:8080/ocpp"
    security = _complete(profile)
    if protocol in ALLOWED[(profile, scheme)]:
        security.check(url, protocol)
        return
    with pytest.raises(TransportError) as refused:
        security.check(url, protocol)
    if profile == 0:
        assert "1.6" in str(refused.value)
    else:
        assert url in str(refused.value) and "TLS" in str(refused.value)


@pytest.mark.parametrize(
    ("security", "url", "expected"),
    [
        (Security(profile=1), "ws://h/ocpp", "password"),
        (Security(profile=1, password=""), "ws://h/ocpp", "password"),
        (Security(profile=2), "wss://h/ocpp", "password"),
        (Security(profile=3, client_cert=Path("c.pem")), "wss://h/ocpp", "client certificate"),
        (Security(profile=3, client_key=Path("c.key")), "wss://h/ocpp", "client certificate"),
        (Security(profile=4, password=PASSWORD), "wss://h/ocpp", "security profile 4"),
        (Security(profile=-1), "ws://h/ocpp", "security profile -1"),
        (Security(), "http://h/ocpp", "scheme"),
        (Security(), "h/ocpp", "scheme"),
        (Security(), "ws:///ocpp", "no host"),
        (Security(), "ws://h:99999/ocpp", "malformed: Port out of range"),
        (Security(), "ws://h:x/ocpp", "malformed: Port could not be cast"),
        (Security(), "ws://[::1/ocpp", "malformed: Invalid IPv6"),
        (Security(), "ws://h:0/ocpp", "port 0"),
        (Security(profile=1, password=PASSWORD), "ws://cp:secret@h/ocpp", "credentials in the URL"),
        (Security(), "ws://h/ocpp#frag", "fragment"),
    ],
)
def test_check_refuses_an_incomplete_profile_or_a_bad_url(security: Security, url: str, expected: str) -> None:
    with pytest.raises(TransportError, match=expected):
        security.check(url, "ocpp1.6")


def test_a_short_password_is_allowed_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    Security(profile=1, password="short").check("ws://h/ocpp", "ocpp2.0.1")
    assert "16 to 40" in caplog.text


# ====================================================================== headers and URL


@pytest.mark.parametrize(
    ("profile", "expected"),
    [(0, None), (1, basic("CP-1", PASSWORD)), (2, basic("CP-1", PASSWORD)), (3, None)],
)
def test_basic_auth_header_only_for_profiles_1_and_2(profile: int, expected: str | None) -> None:
    headers = Security(profile=profile, password=PASSWORD).headers("CP-1")
    assert headers.get("Authorization") == expected
    assert set(headers) <= {"Authorization"}


@given(
    station_id=st.text(min_size=1, max_size=30).filter(lambda s: "/" not in s and ":" not in s),
    password=st.text(min_size=1, max_size=40),
)
def test_basic_auth_token_decodes_to_id_colon_password(station_id: str, password: str) -> None:
    header = Security(profile=2, password=password).headers(station_id)["Authorization"]
    scheme, token = header.split(" ")
    assert scheme == "Basic"
    user, _, secret = base64.b64decode(token).decode().partition(":")
    assert (user, secret) == (station_id, password)


@pytest.mark.parametrize(
    ("base", "station_id", "expected"),
    [
        ("ws://h:9000/ocpp", "CP1", "ws://h:9000/ocpp/CP1"),
        ("ws://h:9000/ocpp/", "CP1", "ws://h:9000/ocpp/CP1"),
        ("wss://h", "CP1", "wss://h/CP1"),
        ("ws://h/ocpp", "CP 1#ü?", "ws://h/ocpp/CP%201%23%C3%BC%3F"),
        ("ws://h/ocpp?tenant=a", "CP1", "ws://h/ocpp/CP1?tenant=a"),
    ],
)
def test_station_url_appends_the_quoted_identity(base: str, station_id: str, expected: str) -> None:
    assert station_url(base, station_id) == expected


@pytest.mark.parametrize("station_id", ["", "a/b", "/"])
def test_station_url_refuses_an_empty_id_or_one_with_a_slash(station_id: str) -> None:
    with pytest.raises(TransportError, match="station id"):
        station_url("ws://h/ocpp", station_id)


@given(station_id=st.text(min_size=1, max_size=40).filter(lambda s: "/" not in s))
def test_station_url_round_trips_any_identity(station_id: str) -> None:
    url = station_url("ws://csms.example/ocpp/", station_id)
    path = urlsplit(url).path
    assert path.startswith("/ocpp/")
    assert unquote(path.removeprefix("/ocpp/")) == station_id


# ====================================================================== profile 0 and 1 over ws://


@pytest.mark.timeout(30)
def test_profile_1_sends_basic_auth_and_negotiates_the_subprotocol() -> None:
    async def scenario() -> None:
        async with local_csms() as csms:
            link = await open_link(csms.url, STATION, "ocpp2.0.1", Security(profile=1, password=PASSWORD))
            try:
                assert link.subprotocol == "ocpp2.0.1"
            finally:
                await link.close()
            [headers] = csms.seen.requests
            assert headers["Authorization"] == basic(STATION, PASSWORD)
            assert headers["Sec-WebSocket-Protocol"] == "ocpp2.0.1"
            assert csms.seen.paths == [f"/ocpp/{STATION}"]
            assert csms.seen.subprotocols == ["ocpp2.0.1"]

    run(scenario())


@pytest.mark.timeout(30)
def test_profile_0_sends_no_credentials() -> None:
    async def scenario() -> None:
        async with local_csms() as csms:
            link = await open_link(csms.url, STATION, "ocpp1.6", Security())
            await link.close()
            [headers] = csms.seen.requests
            assert "Authorization" not in headers
            assert csms.seen.subprotocols == ["ocpp1.6"]

    run(scenario())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_password_is_a_transport_error_and_not_retried(status: int) -> None:
    async def scenario() -> None:
        failures: list[Exception] = []
        async with local_csms(status=status) as csms:
            security = Security(profile=1, password=PASSWORD)
            with pytest.raises(TransportError, match=f"HTTP {status}"):
                await connect_with_retry(
                    lambda: open_link(csms.url, STATION, "ocpp1.6", security),
                    VirtualClock(),
                    Backoff(),
                    on_failure=lambda _n, exc: failures.append(exc),
                )
            assert len(csms.seen.requests) == 1
            assert failures == []

    run(scenario())


@pytest.mark.timeout(30)
def test_a_server_error_is_retryable() -> None:
    async def scenario() -> None:
        async with local_csms(status=503) as csms:
            with pytest.raises(ConnectionError, match="HTTP 503"):
                await open_link(csms.url, STATION, "ocpp1.6", Security())

    run(scenario())


@pytest.mark.timeout(30)
def test_a_server_without_subprotocols_is_refused() -> None:
    async def scenario() -> None:
        async with local_csms(subprotocols=None) as csms:
            with pytest.raises(TransportError, match=r"does not speak ocpp1\.6"):
                await open_link(csms.url, STATION, "ocpp1.6", Security())
            assert csms.seen.subprotocols == [None]
            await eventually(lambda: len(csms.seen.close_codes) == 1)  # the accepted connection was closed again

    run(scenario())


@pytest.mark.timeout(30)
def test_a_server_that_picks_another_subprotocol_is_refused() -> None:
    async def scenario() -> None:
        async with local_csms(force_subprotocol="ocpp2.0.1") as csms:
            with pytest.raises(TransportError, match=r"does not speak ocpp1\.6"):
                await open_link(csms.url, STATION, "ocpp1.6", Security())

    run(scenario())


# ====================================================================== profile 2: TLS + Basic auth


@pytest.mark.timeout(30)
def test_profile_2_connects_over_tls_with_basic_auth(pki: Pki) -> None:
    async def scenario() -> None:
        async with local_csms(tls=server_tls(pki)) as csms:
            security = Security(profile=2, password=PASSWORD, ca_file=pki.ca_cert)
            link = await open_link(csms.url, STATION, "ocpp1.6", security)
            assert link.subprotocol == "ocpp1.6"
            await link.close()
            [headers] = csms.seen.requests
            assert headers["Authorization"] == basic(STATION, PASSWORD)
            [version] = csms.seen.tls_versions
            assert version in ("TLSv1.2", "TLSv1.3")

    run(scenario())


@pytest.mark.timeout(30)
def test_profile_2_refuses_a_csms_certificate_from_another_ca(pki: Pki) -> None:
    async def scenario() -> None:
        async with local_csms(tls=server_tls(pki)) as csms:
            security = Security(profile=2, password=PASSWORD, ca_file=pki.other_ca_cert)
            with pytest.raises(TransportError, match="certificate is not trusted") as refused:
                await connect_with_retry(
                    lambda: open_link(csms.url, STATION, "ocpp1.6", security), VirtualClock(), Backoff()
                )
            assert "certificate" in str(refused.value).split(":", 1)[1], "the verify message names the problem"
            assert csms.seen.requests == [], "no HTTP request, so the password never left"

    run(scenario())


@pytest.mark.parametrize(
    "security",
    [
        Security(profile=2, password=PASSWORD),
        Security(profile=1, password=PASSWORD),
        Security(profile=0),
    ],
)
def test_tls_contexts_require_tls_1_2_and_verify_the_csms(security: Security) -> None:
    # OCPP 1.6 security whitepaper / 2.0.1 A00.FR.309: TLS 1.2 or higher.
    context = security.ssl_context("wss://h/ocpp")
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


@pytest.mark.parametrize("profile", [0, 1])
def test_no_tls_context_for_plain_ws_under_profiles_0_and_1(profile: int) -> None:
    security = Security(profile=profile, password=PASSWORD)
    assert security.ssl_context("ws://h/ocpp") is None
    assert security.ssl_context() is None


def test_profile_3_context_holds_the_client_certificate(pki: Pki) -> None:
    context = profile3(pki).ssl_context()
    assert context is not None and context.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.timeout(30)
def test_a_tls_1_1_csms_is_refused(pki: Pki) -> None:
    async def scenario() -> None:
        async with local_csms(tls=_legacy_tls(server_tls(pki))) as csms:
            # Control: the server really speaks TLS 1.1 to a client that allows it.
            legacy = _legacy_tls(ssl.create_default_context(cafile=pki.ca_cert))
            async with connect(csms.url + "/control", ssl=legacy, subprotocols=["ocpp1.6"]):  # type: ignore[list-item]
                pass
            assert csms.seen.tls_versions == ["TLSv1.1"]
            security = Security(profile=2, password=PASSWORD, ca_file=pki.ca_cert)
            with pytest.raises((ConnectionError, TransportError)):
                await open_link(csms.url, STATION, "ocpp1.6", security)
            assert len(csms.seen.requests) == 1, "our handshake never reached HTTP"

    run(scenario())


@pytest.mark.timeout(30)
def test_wss_under_profile_1_still_verifies_the_csms(pki: Pki) -> None:
    async def scenario() -> None:
        async with local_csms(tls=server_tls(pki)) as csms:
            link = await open_link(
                csms.url, STATION, "ocpp1.6", Security(profile=1, password=PASSWORD, ca_file=pki.ca_cert)
            )
            await link.close()
            assert csms.seen.tls_versions[0] in ("TLSv1.2", "TLSv1.3")
            with pytest.raises(TransportError, match="certificate is not trusted"):
                await open_link(csms.url, STATION, "ocpp1.6", Security(profile=1, password=PASSWORD))

    run(scenario())


# ====================================================================== profile 3: client certificate


@pytest.mark.timeout(30)
def test_profile_3_authenticates_with_the_client_certificate(pki: Pki) -> None:
    async def scenario() -> None:
        async with local_csms(tls=server_tls(pki, require_client_cert=True)) as csms:
            link = await open_link(csms.url, STATION, "ocpp2.0.1", profile3(pki))
            assert link.subprotocol == "ocpp2.0.1"
            await link.close()
            [headers] = csms.seen.requests
            assert "Authorization" not in headers
            [peer] = csms.seen.peer_certs
            assert peer is not None
            subject = {key: value for rdn in peer["subject"] for key, value in rdn}
            assert subject["commonName"] == pki.client_common_name

    run(scenario())


@pytest.mark.timeout(30)
def test_profile_3_sends_no_password_even_if_one_is_configured(pki: Pki) -> None:
    async def scenario() -> None:
        async with local_csms(tls=server_tls(pki, require_client_cert=True)) as csms:
            security = Security(
                profile=3,
                password=PASSWORD,
                ca_file=pki.ca_cert,
                client_cert=pki.client_cert,
                client_key=pki.client_key,
            )
            link = await open_link(csms.url, STATION, "ocpp1.6", security)
            await link.close()
            assert "Authorization" not in csms.seen.requests[0]

    run(scenario())


@pytest.mark.timeout(30)
def test_profile_3_with_an_unreadable_key_is_a_transport_error(pki: Pki, tmp_path: Path) -> None:
    async def scenario() -> None:
        security = Security(
            profile=3, ca_file=pki.ca_cert, client_cert=pki.client_cert, client_key=tmp_path / "missing.key"
        )
        with pytest.raises(TransportError, match="TLS set-up failed"):
            await open_link("wss://127.0.0.1:1/ocpp", STATION, "ocpp1.6", security)

    run(scenario())


# ====================================================================== unreachable CSMS and retries


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.timeout(30)
def test_a_csms_that_is_down_is_a_quick_connection_error() -> None:
    async def scenario() -> None:
        url = f"ws://127.0.0.1:{_free_port()}/ocpp"
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="cannot reach") as failed:
            await open_link(url, STATION, "ocpp1.6", Security(), open_timeout_s=5.0)
        assert not isinstance(failed.value, TransportError)
        assert time.monotonic() - started < 2.0

    run(scenario())


class FlakyOpener:
    """Fails with the given exceptions in turn, then connects; records the clock at every attempt."""

    def __init__(self, clock: VirtualClock, failures: list[Exception]) -> None:
        self.clock = clock
        self.failures = failures
        self.attempts: list[float] = []
        self.link = WebsocketLink(None)  # type: ignore[arg-type]  # never used as a websocket

    async def __call__(self) -> WebsocketLink:
        self.attempts.append(self.clock.monotonic())
        if self.failures:
            raise self.failures.pop(0)
        return self.link


@pytest.mark.timeout(30)
def test_retries_wait_per_backoff_on_the_injected_clock() -> None:
    async def scenario() -> None:
        clock = VirtualClock()
        opener = FlakyOpener(clock, [ConnectionError("down")] * 4)
        reported: list[int] = []
        task = asyncio.create_task(
            connect_with_retry(
                opener, clock, Backoff(), rng=random.Random(61851), on_failure=lambda n, _e: reported.append(n)
            )
        )
        await clock.advance(0.5)
        assert opener.attempts == [0.0] and not task.done(), "nothing happens before the first wait is over"
        await clock.advance(30.0)
        assert task.done() and await task is opener.link
        waits = [later - earlier for earlier, later in itertools.pairwise(opener.attempts)]
        # Default RetryBackOffWaitMinimum 1 s doubled up to RetryBackOffRepeatTimes 2 times, plus a uniform
        # part in [0, RetryBackOffRandomRange 2 s] (standards-facts.md 4.6).
        draws = random.Random(61851)
        expected = [base + draws.uniform(0.0, 2.0) for base in (1.0, 2.0, 4.0, 4.0)]
        assert waits == pytest.approx(expected)
        assert reported == [1, 2, 3, 4]

    run(scenario())


@given(failures=st.integers(min_value=1, max_value=50), seed=st.integers(min_value=0, max_value=2**32))
def test_backoff_delay_stays_in_its_band(failures: int, seed: int) -> None:
    backoff = Backoff(minimum_s=1.0, random_range_s=2.0, repeat_times=2)
    base = 1.0 * 2 ** min(failures - 1, 2)
    assert base <= backoff.delay(failures, random.Random(seed)) <= base + 2.0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("failures_before", [0, 2])
def test_a_transport_error_stops_the_retries_at_once(failures_before: int) -> None:
    async def scenario() -> None:
        clock = VirtualClock()
        opener = FlakyOpener(clock, [ConnectionError("down")] * failures_before + [TransportError("bad password")])
        task = asyncio.create_task(connect_with_retry(opener, clock, Backoff(random_range_s=0.0)))
        await clock.advance(60.0)
        assert task.done()
        with pytest.raises(TransportError, match="bad password"):
            await task
        assert len(opener.attempts) == failures_before + 1
        assert opener.attempts[-1] == {0: 0.0, 2: 3.0}[failures_before]  # waits of 1 s and 2 s

    run(scenario())


# ====================================================================== WebsocketLink


@pytest.mark.timeout(30)
def test_a_frame_over_the_limit_closes_the_link() -> None:
    async def oversized(ws: ServerConnection) -> None:
        await ws.send("[2," + "x" * MAX_FRAME_BYTES + "]")

    async def scenario() -> None:
        async with local_csms(behaviour=oversized) as csms:
            link = await open_link(csms.url, STATION, "ocpp1.6", Security())
            with pytest.raises(LinkClosed, match="1009"):
                await link.recv()
            with pytest.raises(LinkClosed):
                await link.send('[2,"1","Heartbeat",{}]')
            await link.close()
        assert csms.seen.close_codes == [1009], "message too big (RFC 6455 §7.4.1)"

    run(scenario())


@pytest.mark.timeout(30)
def test_a_frame_at_the_limit_is_received() -> None:
    frame = '"' + "x" * (MAX_FRAME_BYTES - 2) + '"'

    async def at_limit(ws: ServerConnection) -> None:
        await ws.send(frame)

    async def scenario() -> None:
        async with local_csms(behaviour=at_limit) as csms:
            link = await open_link(csms.url, STATION, "ocpp1.6", Security())
            assert await link.recv() == frame
            await link.close()

    run(scenario())


@pytest.mark.timeout(30)
def test_binary_frames_decode_as_text_and_text_goes_both_ways() -> None:
    async def chatter(ws: ServerConnection) -> None:
        await ws.send('[2,"1","Heartbeat",{"x":"é"}]'.encode())
        await ws.send(b"\xff[3]")
        await ws.send(await ws.recv())

    async def scenario() -> None:
        async with local_csms(behaviour=chatter) as csms:
            link = await open_link(csms.url, STATION, "ocpp1.6", Security())
            assert await link.recv() == '[2,"1","Heartbeat",{"x":"é"}]'
            assert await link.recv() == "\ufffd[3]", "invalid UTF-8 is replaced, not raised"
            await link.send('[3,"1",{}]')
            assert await link.recv() == '[3,"1",{}]'
            await link.close()
            with pytest.raises(LinkClosed):
                await link.recv()

    run(scenario())
