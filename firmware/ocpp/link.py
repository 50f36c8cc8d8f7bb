"""The connection an OCPP endpoint reads and writes: one text frame per OCPP-J message.

The ``ocpp`` package only needs an object with ``async send(str)`` and ``async recv() -> str``. On a
board that is a websocket (:mod:`firmware.ocpp.transport`). In a simulation on the virtual clock it is
a :class:`MemoryLink`: an in-process pair of queues, so that the station and the embedded CSMS talk
without sockets and a HIL run stays deterministic however fast virtual time moves.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class LinkClosed(ConnectionError):
    """The other end closed the link (or it was never open)."""


class Link(Protocol):
    async def send(self, message: str) -> None: ...

    async def recv(self) -> str: ...

    async def close(self) -> None: ...


_CLOSED = object()


class MemoryLink:
    """One end of an in-process link; :func:`memory_link_pair` makes two connected ends."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._inbox: asyncio.Queue[object] = asyncio.Queue()
        self._peer: MemoryLink | None = None
        self.closed = False

    async def send(self, message: str) -> None:
        if not isinstance(message, str):
            raise TypeError(f"{self.name}: OCPP-J frames are text, got {type(message).__name__}")
        if self.closed or self._peer is None or self._peer.closed:
            raise LinkClosed(f"{self.name}: link closed")
        self._peer._inbox.put_nowait(message)

    async def recv(self) -> str:
        if self.closed:
            raise LinkClosed(f"{self.name}: link closed")
        item = await self._inbox.get()
        if item is _CLOSED:
            self.closed = True
            raise LinkClosed(f"{self.name}: closed by the other end")
        assert isinstance(item, str)
        return item

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._inbox.put_nowait(_CLOSED)  # wake our own reader
        if self._peer is not None and not self._peer.closed:
            self._peer._inbox.put_nowait(_CLOSED)


def memory_link_pair(client: str = "station", server: str = "csms") -> tuple[MemoryLink, MemoryLink]:
    """(station end, CSMS end) of a new in-process link."""
    a, b = MemoryLink(client), MemoryLink(server)
    a._peer, b._peer = b, a
    return a, b
