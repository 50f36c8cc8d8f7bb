"""The embedded CSMS: the backend of ``evse demo`` and of HIL scenarios.

Stations reach it over a real websocket (:meth:`EmbeddedCsms.serve`) or, in a simulation on the
virtual clock, over an in-process :class:`~firmware.ocpp.link.MemoryLink` (:meth:`EmbeddedCsms.attach`).
Either way every frame is checked against the official schemas, answered per :class:`CsmsPolicy`,
and recorded in :attr:`EmbeddedCsms.events`; transactions are collected in
:attr:`EmbeddedCsms.transactions`.

``transactions`` maps a transaction id (1.6: the id this CSMS assigned, as a string; 2.x: the
station's) to a dict with the keys ``transaction_id``, ``station``, ``protocol``, ``evse_id``,
``connector_id``, ``id_tag``, ``id_tag_status``, ``meter_start_wh``, ``meter_stop_wh``,
``energy_wh`` (running while active), ``started_at``/``stopped_at`` (the station's timestamps),
``t_started``/``t_stopped`` (this CSMS's clock), ``stop_reason``, ``active``, ``meter_values``
(every meterValue entry as received) and ``events`` (one entry per transaction message).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from firmware.ocpp.link import Link, LinkClosed
from hal.clock import Clock
from hil.csms.frames import PROTOCOLS, Protocol
from hil.csms.handlers16 import Csms16Session
from hil.csms.handlers201 import Csms21Session, Csms201Session
from hil.csms.records import CsmsError, CsmsEvent, CsmsPolicy, TransactionLedger
from hil.csms.session import CsmsContext, CsmsSession

logger = logging.getLogger(__name__)

_SESSIONS: dict[str, type[CsmsSession]] = {
    "ocpp1.6": Csms16Session,
    "ocpp2.0.1": Csms201Session,
    "ocpp2.1": Csms21Session,
}

#: The charging station identity is at most 48 characters and has no ':' (it is also the Basic auth
#: user name) — OCPP 2.1 part 4 §3.1.1.
IDENTITY_MAX = 48

#: Real-time bound on waiting for a connection to finish closing: that wait is on socket I/O (the
#: websocket closing handshake), not on simulated time. A MemoryLink closes within a few loop turns.
CLOSE_BOUND_S = 5.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


def identity_problem(station_id: str) -> str | None:
    """Why ``station_id`` cannot be a charging station identity, or None."""
    if not station_id:
        return "empty charging station identity"
    if len(station_id) > IDENTITY_MAX:
        return f"charging station identity longer than {IDENTITY_MAX} characters"
    if ":" in station_id:
        return "charging station identity contains ':'"
    return None


class EmbeddedCsms:
    """A small, strict Central System for tests and demos (see the module docstring).

    ``policy`` is read on every message, so a test may change it while stations are connected.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        policy: CsmsPolicy | None = None,
        on_event: Callable[[CsmsEvent], None] | None = None,
        wall_clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.clock = clock
        self.policy = policy if policy is not None else CsmsPolicy()
        self.events: list[CsmsEvent] = []
        self._on_event = on_event
        self._ledger = TransactionLedger()
        self.transactions: dict[str, dict[str, Any]] = self._ledger.records
        self._transaction_ids = itertools.count(1)
        self._context = CsmsContext(
            clock=clock,
            policy=self.policy,
            wall_clock=wall_clock,
            record=self._record,
            ledger=self._ledger,
            next_transaction_id=lambda: next(self._transaction_ids),
        )
        self._sessions: dict[str, CsmsSession] = {}
        self._seen: dict[str, None] = {}  # every station that ever connected, in order
        self._server: Server | None = None
        self._host = "127.0.0.1"
        self._port: int | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---------------------------------------------------------------------------- connections

    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen for stations on ``ws://host:port/<path>/<station id>``; the port actually bound."""
        if self._server is not None:
            raise RuntimeError(f"already serving on {self.url}")
        self._server = await serve(
            self._on_websocket,
            host,
            port,
            subprotocols=[Subprotocol(p) for p in PROTOCOLS],
            select_subprotocol=_select_subprotocol,
            process_request=_check_request,
            close_timeout=CLOSE_BOUND_S / 2,
        )
        sockname = next(iter(self._server.sockets)).getsockname()
        self._host, self._port = host, int(sockname[1])
        return self._port

    @property
    def url(self) -> str:
        """``ws://host:port``: a station connects to this plus ``/<its id>``."""
        if self._port is None:
            raise RuntimeError("the CSMS is not serving: call serve() first")
        return f"ws://{self._host}:{self._port}"

    async def attach(self, station_id: str, link: Link, protocol: Protocol) -> None:
        """Serve one station over ``link`` (no sockets); returns once its handler task runs."""
        if protocol not in _SESSIONS:
            raise ValueError(f"unknown OCPP protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
        problem = identity_problem(station_id)
        if problem is not None:
            raise ValueError(f"{station_id!r}: {problem}")
        session = await self._open(station_id, link, protocol, "memory")
        task = asyncio.create_task(self._pump(session), name=f"csms:{station_id}")
        session.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.sleep(0)

    async def _on_websocket(self, connection: ServerConnection) -> None:
        request = connection.request
        station_id = _station_id(request.path if request is not None else "")
        if connection.subprotocol is None:
            # OCPP 2.1 part 4 §3.3: no common subprotocol -> finish the handshake without one, then close.
            await connection.close(1002, "no common OCPP subprotocol")
            return
        session = await self._open(station_id, connection, connection.subprotocol, "websocket")  # type: ignore[arg-type]
        session.task = asyncio.current_task()
        await self._pump(session)

    async def _open(self, station_id: str, connection: Link, protocol: Protocol, transport: str) -> CsmsSession:
        previous = self._sessions.get(station_id)
        if previous is not None:
            # The station reconnected before this side noticed the old connection die: the newest wins.
            await self._shutdown(previous, "replaced by a new connection")
        session = _SESSIONS[protocol](station_id, connection, self._context, transport)
        self._sessions[station_id] = session
        self._seen[station_id] = None
        self._record(
            CsmsEvent(
                self.clock.monotonic(),
                station_id,
                "rx",
                "connected",
                None,
                {"protocol": protocol, "transport": transport},
                None,
            )
        )
        return session

    async def _pump(self, session: CsmsSession) -> None:
        """Read and route frames until the connection ends; a bad frame never ends it."""
        reason = "closed by the station"
        try:
            while True:
                try:
                    raw = await session.connection.recv()
                except (LinkClosed, ConnectionClosed):
                    break
                except Exception as exc:  # a broken transport ends this connection, not the CSMS
                    reason = f"receive failed: {exc!r}"
                    break
                if not isinstance(raw, str):
                    raw = bytes(raw).decode("utf-8", errors="replace")  # OCPP-J uses text frames
                try:
                    await session.route_message(raw)
                except (LinkClosed, ConnectionClosed):
                    break
                except Exception:
                    logger.exception("%s: error while handling a frame", session.id)
        finally:
            self._finish(session, session.close_reason or reason)

    def _finish(self, session: CsmsSession, reason: str) -> None:
        if session.closed.is_set():
            return
        session.closed.set()
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
        self._record(
            CsmsEvent(self.clock.monotonic(), session.id, "rx", "disconnected", None, {"reason": reason}, None)
        )

    async def _shutdown(self, session: CsmsSession, reason: str) -> None:
        if session.closed.is_set():
            return
        session.close_reason = reason
        try:
            await asyncio.wait_for(session.connection.close(), CLOSE_BOUND_S)
        except Exception as exc:  # closing a dead connection may fail; it is closed either way
            logger.debug("%s: close: %r", session.id, exc)
        task = session.task
        if task is not None and task is not asyncio.current_task():
            await asyncio.wait({task}, timeout=CLOSE_BOUND_S)
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=CLOSE_BOUND_S)
        self._finish(session, reason)

    async def close_station(self, station_id: str) -> None:
        """Drop ``station_id``'s connection (a simulated outage); nothing happens if it is not connected."""
        session = self._sessions.get(station_id)
        if session is not None:
            await self._shutdown(session, "closed by the CSMS")

    async def stop(self) -> None:
        """Close every connection and the listening socket; bounded in time."""
        await asyncio.gather(*(self._shutdown(s, "CSMS stopped") for s in list(self._sessions.values())))
        server, self._server = self._server, None
        if server is not None:
            server.close()
            try:
                await asyncio.wait_for(server.wait_closed(), CLOSE_BOUND_S)
            except TimeoutError:
                logger.warning("websocket server did not close within %s s", CLOSE_BOUND_S)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=CLOSE_BOUND_S)

    # ------------------------------------------------------------------------------ queries

    def stations(self) -> list[str]:
        """Every station that has connected, in order of first connection."""
        return list(self._seen)

    def is_connected(self, station_id: str) -> bool:
        return station_id in self._sessions

    # ------------------------------------------------------------------- CSMS-initiated calls

    async def call(
        self, station_id: str, action: str, payload: dict[str, Any], timeout: float = 30.0
    ) -> dict[str, Any]:
        """Send ``action`` (camelCase ``payload``) to a station; its camelCase response payload.

        Raises :class:`~hil.csms.records.CsmsCallError` when the station answers with a CALLERROR,
        :class:`~hil.csms.records.CsmsError` when the station is not connected, the connection drops
        or the answer is invalid, ValueError for an action or payload the station's OCPP version does
        not define, and TimeoutError when no answer comes within ``timeout`` seconds.
        """
        session = self._sessions.get(station_id)
        if session is None:
            raise CsmsError(f"station {station_id!r} is not connected")
        return await session.request(action, payload, timeout)

    # ----------------------------------------------------------------------------- recording

    def _record(self, event: CsmsEvent) -> None:
        self.events.append(event)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # an observer's bug must not break the CSMS
                logger.exception("on_event callback failed for %s", event)


def _station_id(path: str) -> str:
    """The last path segment, percent-decoded (OCPP 2.1 part 4 §3.1.1)."""
    return unquote(urlsplit(path).path.rstrip("/").rsplit("/", 1)[-1])


def _select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    # The station lists its versions in order of preference (OCPP 2.1 part 4 §3.1.2): take the first we
    # speak; with none in common, go on without one so that _on_websocket can close (part 4 §3.3).
    for name in offered:
        if name in PROTOCOLS:
            return name
    return None


def _check_request(connection: ServerConnection, request: Request) -> Response | None:
    # OCPP 2.1 part 4 §3.3: an identity the CSMS cannot accept gets HTTP 404.
    problem = identity_problem(_station_id(request.path))
    if problem is not None:
        return connection.respond(404, f"{problem}\n")
    return None
