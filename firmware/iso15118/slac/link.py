"""Raw Ethernet for HomePlug AV frames: an asyncio AF_PACKET socket, and an in-memory pair for simulation.

A QCA7000-class modem shows up as an Ethernet interface (SPI ``qcaspi`` or UART ``qcauart``); the
host talks SLAC and modem management to it in Ethernet frames of Ethertype 0x88E1. The socket is an
``AF_PACKET``/``SOCK_RAW`` socket bound to that interface and Ethertype, non-blocking, read from the
event loop with ``loop.add_reader`` so nothing ever blocks the firmware's single loop.

Several parties read the same link (the SLAC state machine, the modem-management requests), so
received frames fan out to *listeners*, each with its own filter and a bounded queue: a flood of
frames drops the oldest ones of that listener (and counts them) instead of growing without limit.

Frames the kernel reports as our own transmissions (``PACKET_OUTGOING``) are never delivered, and
frames addressed to another station (``PACKET_OTHERHOST``) only on a promiscuous link: the local
modem's management address 00:B0:52:00:00:01 is such a foreign address, which a simulated modem on
the far end of a veth pair has to see.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from firmware.iso15118.slac.mme import BROADCAST, ETHERTYPE_HOMEPLUG_AV, MAC_LEN
from hal.clock import Clock

log = logging.getLogger(__name__)

# linux/if_packet.h packet types, as the 3rd element of an AF_PACKET address.
PACKET_HOST = 0
PACKET_BROADCAST = 1
PACKET_MULTICAST = 2
PACKET_OTHERHOST = 3
PACKET_OUTGOING = 4
LISTENER_QUEUE = 256  # frames; a SLAC run is ~20 frames, so only a flood fills this (our choice)
_READ_BURST = 64  # frames taken per readiness callback, so one busy link cannot starve the loop
_RECV_SIZE = 2048  # more than one Ethernet frame


class LinkError(Exception):
    """The raw link cannot do what was asked; the message names the interface."""


class InterfaceNotFoundError(LinkError):
    """No network interface of that name (in this network namespace)."""


class LinkPermissionError(LinkError):
    """Raw sockets need CAP_NET_RAW (root, a capability on the interpreter, or a user namespace)."""


class LinkClosedError(LinkError):
    """The link was closed or went away while a listener waited on it."""


Accept = Callable[[bytes], bool]
T = TypeVar("T")


class Listener:
    """Frames of one link that pass ``accept``, in arrival order, at most ``maxsize`` kept."""

    def __init__(self, owner: _FanOut, accept: Accept | None, maxsize: int) -> None:
        self._owner = owner
        self._accept = accept
        self._frames: deque[bytes] = deque()
        self._maxsize = maxsize
        self._wakeup: asyncio.Event = asyncio.Event()
        self._error: LinkError | None = None
        self.dropped = 0

    def _offer(self, frame: bytes) -> None:
        if self._accept is not None:
            try:
                if not self._accept(frame):
                    return
            except Exception:  # a filter bug must not take the link down for everyone
                log.exception("listener filter failed; frame not delivered to it")
                return
        if len(self._frames) >= self._maxsize:
            self._frames.popleft()
            self.dropped += 1
        self._frames.append(frame)
        self._wakeup.set()

    def _fail(self, error: LinkError) -> None:
        self._error = error
        self._wakeup.set()

    def get_nowait(self) -> bytes | None:
        """The oldest waiting frame, or None."""
        if self._frames:
            return self._frames.popleft()
        if self._error is not None:
            raise self._error
        return None

    async def get(self) -> bytes:
        """The next frame; LinkClosedError once the link is gone and nothing is left."""
        while True:
            frame = self.get_nowait()
            if frame is not None:
                return frame
            self._wakeup.clear()
            await self._wakeup.wait()

    async def get_within(self, seconds: float, clock: Clock) -> bytes | None:
        """The next frame, or None when none came within ``seconds`` of ``clock``'s time."""
        frame = self.get_nowait()
        if frame is not None:
            return frame
        return await first_of(self.get(), seconds=seconds, clock=clock)

    def close(self) -> None:
        self._owner._remove(self)


async def first_of(awaitable: Awaitable[T], *, seconds: float, clock: Clock) -> T | None:
    """``awaitable``'s result, or None when ``seconds`` of ``clock`` pass first (the other is cancelled).

    ``asyncio.wait_for`` would time out on the loop's real clock; this races the injected one, so the
    same code runs in virtual time.
    """
    task = asyncio.ensure_future(awaitable)
    timer = asyncio.ensure_future(clock.sleep(max(0.0, seconds)))
    try:
        await asyncio.wait((task, timer), return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return None
    return task.result()


class Link(Protocol):
    """What the SLAC code needs of a link: its MAC, sending a frame, listening to frames."""

    @property
    def mac(self) -> bytes: ...

    @property
    def name(self) -> str: ...

    def send(self, frame: bytes) -> None: ...

    def listen(self, accept: Accept | None = None, *, maxsize: int = LISTENER_QUEUE) -> Listener: ...

    def close(self) -> None: ...


class _FanOut:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._closed_error: LinkError | None = None

    def listen(self, accept: Accept | None = None, *, maxsize: int = LISTENER_QUEUE) -> Listener:
        """A new listener for the frames that pass ``accept`` (all when None)."""
        if maxsize < 1:
            raise ValueError("a listener keeps at least one frame")
        listener = Listener(self, accept, maxsize)
        if self._closed_error is not None:
            listener._fail(self._closed_error)
        self._listeners.append(listener)
        return listener

    def _remove(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def _deliver(self, frame: bytes) -> None:
        for listener in list(self._listeners):
            listener._offer(frame)

    def _fail_all(self, error: LinkError) -> None:
        self._closed_error = error
        for listener in list(self._listeners):
            listener._fail(error)


class PacketLink(_FanOut):
    """An AF_PACKET raw socket on one interface for one Ethertype; create it inside the running loop."""

    def __init__(self, interface: str, *, ethertype: int = ETHERTYPE_HOMEPLUG_AV, promiscuous: bool = False) -> None:
        super().__init__()
        self._interface = interface
        self._promiscuous = promiscuous
        try:
            socket.if_nametoindex(interface)
        except OSError as exc:
            raise InterfaceNotFoundError(f"no network interface {interface!r}") from exc
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
        except PermissionError as exc:
            raise LinkPermissionError(
                f"{interface}: a raw AF_PACKET socket needs CAP_NET_RAW (run as root or grant the capability)"
            ) from exc
        except OSError as exc:
            raise LinkError(f"{interface}: cannot open an AF_PACKET socket: {exc}") from exc
        try:
            sock.bind((interface, ethertype))
            sock.setblocking(False)
            address = sock.getsockname()
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.ENODEV, errno.ENXIO):
                raise InterfaceNotFoundError(f"no network interface {interface!r}") from exc
            raise LinkError(f"{interface}: cannot bind the raw socket: {exc}") from exc
        mac = bytes(address[4])
        if len(mac) != MAC_LEN:
            sock.close()
            raise LinkError(f"{interface} has no 6-byte Ethernet address (got {mac.hex(':') or 'none'})")
        self._mac = mac
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self.received = 0

    @property
    def mac(self) -> bytes:
        return self._mac

    @property
    def name(self) -> str:
        return self._interface

    def _on_readable(self) -> None:
        for _ in range(_READ_BURST):
            try:
                frame, address = self._sock.recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ENETDOWN, errno.ENODEV, errno.ENXIO):
                    log.error("%s: link lost (%s); closing the raw socket", self._interface, exc)
                    self._shutdown(LinkClosedError(f"{self._interface}: link lost: {exc}"))
                else:
                    log.warning("%s: receive failed: %s", self._interface, exc)
                return
            kind = address[2]
            if kind == PACKET_OUTGOING or (kind == PACKET_OTHERHOST and not self._promiscuous):
                continue
            self.received += 1
            self._deliver(frame)

    def send(self, frame: bytes) -> None:
        """Queue one frame for transmission; LinkError when the kernel refuses it."""
        if self._closed_error is not None:
            raise self._closed_error
        try:
            sent = self._sock.send(frame)
        except BlockingIOError as exc:
            raise LinkError(f"{self._interface}: transmit queue full, frame dropped") from exc
        except OSError as exc:
            raise LinkError(f"{self._interface}: send failed: {exc}") from exc
        if sent != len(frame):
            raise LinkError(f"{self._interface}: sent {sent} of {len(frame)} bytes")

    def _shutdown(self, error: LinkError) -> None:
        if self._closed_error is not None:
            return
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._fail_all(error)

    def close(self) -> None:
        self._shutdown(LinkClosedError(f"{self._interface}: link closed"))


class MemoryLink(_FanOut):
    """One end of an in-memory Ethernet segment (see :func:`memory_pair`)."""

    def __init__(self, name: str, mac: bytes, *, promiscuous: bool = False) -> None:
        super().__init__()
        if len(mac) != MAC_LEN:
            raise ValueError(f"a MAC address is {MAC_LEN} bytes")
        self._name = name
        self._mac = bytes(mac)
        self._promiscuous = promiscuous
        self.peer: MemoryLink | None = None
        self.sent: list[bytes] = []  # every frame this end transmitted, for tests and traces

    @property
    def mac(self) -> bytes:
        return self._mac

    @property
    def name(self) -> str:
        return self._name

    def send(self, frame: bytes) -> None:
        if self._closed_error is not None:
            raise self._closed_error
        self.sent.append(bytes(frame))
        peer = self.peer
        if peer is not None and peer._closed_error is None:
            # Delivered on a later loop turn, as a real link would, so a reply sent from inside a
            # receive handler cannot re-enter the sender.
            asyncio.get_running_loop().call_soon(peer._receive, bytes(frame))

    def _receive(self, frame: bytes) -> None:
        if self._closed_error is not None:
            return
        dst = frame[:MAC_LEN]
        if dst == self._mac or dst == BROADCAST or dst[0] & 1 or self._promiscuous:
            self._deliver(frame)

    def close(self) -> None:
        if self._closed_error is None:
            self._fail_all(LinkClosedError(f"{self._name}: link closed"))


def memory_pair(
    a: tuple[str, bytes], b: tuple[str, bytes], *, promiscuous_a: bool = False, promiscuous_b: bool = False
) -> tuple[MemoryLink, MemoryLink]:
    """Two connected in-memory links ``(name, mac)``, like the two ends of a veth pair."""
    end_a = MemoryLink(a[0], a[1], promiscuous=promiscuous_a)
    end_b = MemoryLink(b[0], b[1], promiscuous=promiscuous_b)
    end_a.peer, end_b.peer = end_b, end_a
    return end_a, end_b
