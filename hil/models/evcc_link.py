"""An in-memory connection between the simulated EV and a SECC in the same event loop, for simulations in
virtual time (no sockets, no namespaces): :func:`memory_pair` gives the EV's end (a
:class:`~hil.models.evcc_session.V2gChannel` for :meth:`hil.models.evcc.Evcc.run`) and the SECC's end
(the shape of the firmware SECC runner's ``V2gLink``: ``receive(timeout_s)`` raising
:class:`~firmware.iso15118.v2gtp.V2gtpTimeoutError` / :class:`~firmware.iso15118.v2gtp.V2gtpEofError`,
``send``, ``close``, ``peer``, ``tls``).

Every message crosses as a whole V2GTP frame (header and payload, :func:`firmware.iso15118.v2gtp.encode`)
and is unpacked with the same checks as on a socket, so a simulation exercises the framing too. Closing
either end is seen by the other as the end of the stream.
"""

from __future__ import annotations

import asyncio
import contextlib

from firmware.iso15118.v2gtp import Message, V2gtpEofError, V2gtpError, V2gtpTimeoutError, decode, encode
from hal.clock import Clock
from hil.models.evcc_session import EvccConnectionError, EvccProtocolError

#: The largest payload either end accepts (the SECC transport's default, certificate chains included).
MAX_PAYLOAD = 65_536

_Queue = asyncio.Queue[bytes | None]  # None: the other end closed


class _End:
    def __init__(self, inbox: _Queue, outbox: _Queue) -> None:
        self._inbox, self._outbox = inbox, outbox
        self._closed = False

    async def send(self, payload_type: int, payload: bytes) -> None:
        if self._closed:
            raise EvccConnectionError("the in-memory connection is closed")
        self._outbox.put_nowait(encode(payload_type, payload))

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._outbox.put_nowait(None)

    async def _next(self) -> Message | None:
        frame = await self._inbox.get()
        if frame is None:
            self._inbox.put_nowait(None)  # stays closed for any later read
            return None
        return decode(frame, max_payload=MAX_PAYLOAD)


class EvEnd(_End):
    """The EV's end: a :class:`~hil.models.evcc_session.V2gChannel`."""

    tls_version: str | None = None

    async def receive(self) -> tuple[int, bytes]:
        try:
            message = await self._next()
        except V2gtpError as exc:  # a frame that does not unpack
            raise EvccProtocolError(f"V2GTP from the SECC: {exc}") from exc
        if message is None:
            raise EvccConnectionError("the SECC closed the connection")
        return message.payload_type, message.payload


class SeccEnd(_End):
    """The SECC's end, shaped like the firmware SECC runner's ``V2gLink``."""

    peer = "simulated EV (in memory)"
    tls_version: str | None = None

    def __init__(self, inbox: _Queue, outbox: _Queue, clock: Clock) -> None:
        super().__init__(inbox, outbox)
        self._clock = clock

    @property
    def tls(self) -> bool:
        return False

    async def receive(self, timeout_s: float) -> Message:
        reading = asyncio.ensure_future(self._next())
        timer = asyncio.ensure_future(self._clock.sleep(timeout_s))
        try:
            await asyncio.wait({reading, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not reading.done():
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading
        if reading.cancelled():  # a whole frame or nothing: the stream stays in step
            raise V2gtpTimeoutError(f"no complete V2GTP message within {timeout_s} s", mid_message=False)
        message = reading.result()
        if message is None:
            raise V2gtpEofError("the EV closed the connection")
        return message


def memory_pair(clock: Clock) -> tuple[EvEnd, SeccEnd]:
    """A connected pair: (the EV's end, the SECC's end); the SECC end's timeouts run on ``clock``."""
    to_secc: _Queue = asyncio.Queue()
    to_ev: _Queue = asyncio.Queue()
    return EvEnd(to_ev, to_secc), SeccEnd(to_secc, to_ev, clock)
