"""The websocket to the CSMS: OCPP-J subprotocols, security profiles 1 to 3, and a reconnecting opener.

Security profiles (OCPP 1.6 security whitepaper and 2.0.1 part 2 A00; standards-facts.md 4.7):

* 0 -- no security (1.6 only): plain ``ws://``, no credentials;
* 1 -- HTTP Basic authentication over plain ``ws://`` (``Authorization: Basic base64(id:key)``);
* 2 -- TLS (``wss://``) with the CSMS certificate checked against our CA bundle, plus Basic auth;
* 3 -- TLS with a client certificate instead of Basic auth.

A profile of 2 or more refuses a ``ws://`` URL: the password or the client identity must never travel
in clear. A ``wss://`` URL under profile 0 or 1 is still verified like profile 2 (TLS is never used
without checking the CSMS certificate). ``websockets`` would honour a proxy from the environment; a
charger talks to its CSMS directly, so proxies are switched off.

Failures are sorted for the reconnect loop: :class:`TransportError` for what retrying cannot fix (the
configuration, a refused password, an untrusted certificate, a CSMS without our subprotocol) and
``ConnectionError`` for what may work later (the CSMS is down or drops the connection).
"""

from __future__ import annotations

import base64
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI, NegotiationError

from firmware.ocpp.link import LinkClosed
from hal.clock import Clock

log = logging.getLogger(__name__)

OcppProtocol = Literal["ocpp1.6", "ocpp2.0.1", "ocpp2.1"]
PROTOCOLS: dict[str, OcppProtocol] = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1", "2.1": "ocpp2.1"}

#: libocpp warns below 16 characters; 2.0.1 SecurityCtrlr.BasicAuthPassword is 16-40 (standards-facts.md 4.7).
BASIC_AUTH_MIN_LENGTH = 16
BASIC_AUTH_MAX_LENGTH = 40
#: OCPP frames are small; a CSMS that sends more than this per frame is broken or hostile.
MAX_FRAME_BYTES = 1 << 20


class TransportError(Exception):
    """The CSMS cannot be reached as configured (a bad URL, profile or certificate, a refused handshake)."""


@dataclass(frozen=True)
class Security:
    profile: int = 0
    password: str | None = None  # 1.6 AuthorizationKey / 2.0.1 BasicAuthPassword (profiles 1 and 2)
    ca_file: Path | None = None  # CSMS root certificate(s) (profiles 2 and 3); None = the system store
    client_cert: Path | None = None  # profile 3
    client_key: Path | None = None

    def check(self, url: str, protocol: OcppProtocol) -> None:
        """Raise TransportError unless ``url`` and this profile can work together for ``protocol``."""
        scheme = _check_url(url)
        if self.profile not in (0, 1, 2, 3):
            raise TransportError(f"security profile {self.profile}: allowed 0 (1.6 only), 1, 2, 3")
        if self.profile == 0 and protocol != "ocpp1.6":
            raise TransportError("security profile 0 (no security) exists only in OCPP 1.6; use 1 to 3")
        if self.profile >= 2 and scheme != "wss":
            raise TransportError(f"security profile {self.profile} needs TLS: refusing the plain URL {url!r}")
        if self.profile in (1, 2):
            if not self.password:
                raise TransportError(f"security profile {self.profile} needs a Basic auth password")
            if not BASIC_AUTH_MIN_LENGTH <= len(self.password) <= BASIC_AUTH_MAX_LENGTH:
                log.warning(
                    "the Basic auth password has %d characters; OCPP asks for %d to %d",
                    len(self.password),
                    BASIC_AUTH_MIN_LENGTH,
                    BASIC_AUTH_MAX_LENGTH,
                )
        if self.profile == 3 and (self.client_cert is None or self.client_key is None):
            raise TransportError("security profile 3 needs a client certificate and its key")

    def headers(self, station_id: str) -> dict[str, str]:
        """The HTTP headers of the websocket handshake: Basic auth for profiles 1 and 2 only (4.7)."""
        if self.profile not in (1, 2) or self.password is None:
            return {}
        token = base64.b64encode(f"{station_id}:{self.password}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}

    def ssl_context(self, url: str | None = None) -> ssl.SSLContext | None:
        """The TLS context to connect with: always for profiles 2 and 3; for profiles 0 and 1 only when
        ``url`` is a ``wss://`` URL (websockets refuses ``ssl=None`` there), else None."""
        secure = urlsplit(url).scheme == "wss" if url is not None else False
        if self.profile < 2 and not secure:
            return None
        try:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file) if self.ca_file else None
            )
            # OCPP 1.6 security whitepaper / 2.0.1 A00.FR.309: TLS 1.2 or higher.
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.profile == 3:
                assert self.client_cert is not None and self.client_key is not None
                context.load_cert_chain(str(self.client_cert), str(self.client_key))
        except (OSError, ssl.SSLError) as exc:
            raise TransportError(f"TLS set-up failed: {exc}") from exc
        return context


def _check_url(url: str) -> str:
    """The scheme of a usable CSMS URL; TransportError naming what is wrong otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port  # urllib raises ValueError for a port that is not a number in 0-65535
    except ValueError as exc:  # also a broken [IPv6] host
        raise TransportError(f"CSMS URL {url!r} is malformed: {exc}") from exc
    if parts.scheme not in ("ws", "wss"):
        raise TransportError(f"CSMS URL {url!r}: the scheme must be ws:// or wss://")
    if not parts.hostname:
        raise TransportError(f"CSMS URL {url!r}: no host")
    if port == 0:
        raise TransportError(f"CSMS URL {url!r}: port 0")
    if parts.username is not None or parts.password is not None:
        # websockets would send these as a second Authorization header; the password belongs in Security.
        raise TransportError(f"CSMS URL {url!r}: credentials in the URL; configure the password instead")
    if parts.fragment:
        raise TransportError(f"CSMS URL {url!r}: a websocket URL has no #fragment")
    return parts.scheme


def station_url(csms_url: str, station_id: str) -> str:
    """The CSMS URL with the station identity as the last path segment (OCPP-J 3.1.1); a query string
    stays after the path."""
    if not station_id or "/" in station_id:
        raise TransportError(f"station id {station_id!r}: must be non-empty and contain no '/'")
    parts = urlsplit(csms_url)
    path = parts.path.rstrip("/") + "/" + quote(station_id, safe="")
    return urlunsplit(parts._replace(path=path))


class WebsocketLink:
    """A connected websocket as a :class:`firmware.ocpp.link.Link`."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    @property
    def subprotocol(self) -> str | None:
        return self._ws.subprotocol

    async def send(self, message: str) -> None:
        try:
            await self._ws.send(message)
        except ConnectionClosed as exc:
            raise LinkClosed(f"websocket closed: {exc}") from exc

    async def recv(self) -> str:
        try:
            frame = await self._ws.recv()
        except ConnectionClosed as exc:
            raise LinkClosed(f"websocket closed: {exc}") from exc
        if isinstance(frame, bytes):
            # OCPP-J uses text frames only (OCPP-J 4.1.2); a binary frame is a broken peer.
            return frame.decode("utf-8", errors="replace")
        return frame

    async def close(self) -> None:
        await self._ws.close()


async def open_link(
    csms_url: str,
    station_id: str,
    protocol: OcppProtocol,
    security: Security,
    *,
    open_timeout_s: float = 10.0,
    ping_interval_s: float | None = 30.0,
) -> WebsocketLink:
    """Connect once. Raises TransportError for a configuration the CSMS can never accept and
    ConnectionError for one that may work later (the CSMS is down, a timeout)."""
    security.check(csms_url, protocol)
    url = station_url(csms_url, station_id)
    headers = security.headers(station_id)
    context = security.ssl_context(url)
    try:
        ws = await websockets.connect(
            url,
            subprotocols=[protocol],  # type: ignore[list-item]  # websockets types it as a NewType
            additional_headers=headers,
            ssl=context,
            open_timeout=open_timeout_s,
            ping_interval=ping_interval_s,
            ping_timeout=ping_interval_s,
            max_size=MAX_FRAME_BYTES,
            proxy=None,
            compression=None,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403):
            raise TransportError(f"the CSMS refused our identity or credentials (HTTP {status})") from exc
        raise ConnectionError(f"websocket handshake refused: HTTP {status}") from exc
    except NegotiationError as exc:
        # The CSMS picked a subprotocol we did not offer: it will not change its mind on a retry.
        raise TransportError(f"the CSMS does not speak {protocol}: {exc}") from exc
    except InvalidHandshake as exc:
        raise ConnectionError(f"websocket handshake failed: {exc}") from exc
    except InvalidURI as exc:
        raise TransportError(f"CSMS URL {url!r}: {exc}") from exc
    except ssl.SSLCertVerificationError as exc:
        raise TransportError(f"the CSMS certificate is not trusted: {exc.verify_message}") from exc
    except ssl.SSLError as exc:
        # A TLS version or cipher mismatch; kept retryable, as a CSMS being reconfigured can look the same.
        raise ConnectionError(f"TLS handshake with {url} failed: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(f"cannot reach {url}: {str(exc) or type(exc).__name__}") from exc
    if ws.subprotocol != protocol:
        await ws.close()
        raise TransportError(f"the CSMS does not speak {protocol} (it chose {ws.subprotocol!r})")
    return WebsocketLink(ws)


@dataclass(frozen=True)
class Backoff:
    """Reconnection waits: OCPP 2.0.1 RetryBackOffWaitMinimum, RetryBackOffRandomRange and
    RetryBackOffRepeatTimes (B04; defaults from libocpp's OCPPCommCtrlr: 1 s, 2 s, 2 times): the wait
    doubles after each failure up to ``repeat_times`` doublings, plus a random part against every
    station of a site reconnecting in the same second after a CSMS restart."""

    minimum_s: float = 1.0
    random_range_s: float = 2.0
    repeat_times: int = 2

    def delay(self, failures: int, rng: random.Random) -> float:
        doublings = min(max(failures - 1, 0), self.repeat_times)
        return self.minimum_s * (2**doublings) + rng.uniform(0.0, self.random_range_s)


async def connect_with_retry(
    opener: Callable[[], Awaitable[WebsocketLink]],
    clock: Clock,
    backoff: Backoff,
    *,
    rng: random.Random | None = None,
    on_failure: Callable[[int, Exception], None] | None = None,
) -> WebsocketLink:
    """Call ``opener`` until it connects, waiting per ``backoff`` on ``clock`` in between. A
    TransportError (a configuration that cannot work) is raised at once."""
    rng = rng or random.Random()
    failures = 0
    while True:
        try:
            return await opener()
        except ConnectionError as exc:
            failures += 1
            if on_failure is not None:
                on_failure(failures, exc)
            await clock.sleep(backoff.delay(failures, rng))
