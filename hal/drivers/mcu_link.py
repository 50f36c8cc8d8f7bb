"""Driver for the safety co-processor (RP2040) on a serial port, and HAL adapters on top of it.

The wire protocol is specified in docs/mcu-protocol.md; frames and payloads live in
:mod:`hal.drivers.mcu_frames`. :class:`McuLink` owns the port once started:

* a background thread does the blocking ``port.read()`` (short port timeout) and hands the bytes to
  the event loop with ``loop.call_soon_threadsafe``, so the loop never blocks on the UART;
* requests carry 8-bit sequence numbers; a request is re-sent (same sequence number, so the
  co-processor answers a duplicate from its reply cache instead of acting twice) when no reply comes
  within ``reply_timeout_s``, and raises :class:`DeviceTimeout` after ``retries`` re-sends; a NACK
  raises :class:`McuNack` (a :class:`ProtocolError`);
* a heartbeat goes out every ``heartbeat_period_s`` of the injected clock; the co-processor goes
  fail-safe when it stops (docs/mcu-protocol.md "Heartbeat and fail-safe");
* frames with a bad CRC or length are counted, logged and dropped, never accepted;
* the last status (from every reply and every pushed EVENT_STATUS) is cached with its arrival time.

Reply deadlines are real time (the bytes travel over a real line even in simulation); the heartbeat
period and the staleness of cached status use the injected clock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import serial

from hal.clock import Clock
from hal.drivers.mcu_frames import (
    PROTOCOL_VERSION,
    Capability,
    DecoderStats,
    ErrorFlag,
    Frame,
    FrameDecoder,
    HelloInfo,
    McuStatus,
    MsgType,
    Nack,
    NackCode,
    Output,
    PayloadError,
    PilotCode,
    SelftestState,
    decode_pp,
    encode_bool,
    encode_flags,
    encode_frame,
    encode_hello_request,
    encode_set_pilot,
    flag_names,
    is_reply_type,
    reply_type,
)
from hal.errors import DeviceNotFound, DeviceTimeout, HalError, ProtocolError, UnsupportedOperation
from hal.proximity import decode_type1, decode_type2
from hal.types import PILOT_DUTY_MAX_PERMILLE, PilotMode, PilotReading, ProximityReading

log = logging.getLogger(__name__)

#: Port read timeout: how long the reader thread blocks at most, hence how fast it notices ``stop()``
#: and how long a silence must last before a partial frame is abandonned (mcu-protocol.md
#: "Resynchronisation": 50 ms idle).
READ_TIMEOUT_S = 0.05
#: A write that cannot leave within this long means the port is wedged (70 bytes take 6 ms at
#: 115200 Bd).
WRITE_TIMEOUT_S = 0.1
#: Cached status older than this (injected clock) is refreshed with READ_STATUS before use; the
#: co-processor pushes one every 50 ms, so this is ten lost pushes.
STATUS_MAX_AGE_S = 0.5
#: An RCD self-test completes within this (mcu-protocol.md RCD_SELFTEST: result within 500 ms).
RCD_SELFTEST_TIMEOUT_S = 1.0


class McuNack(ProtocolError):
    """The co-processor refused a request (NACK); ``code`` is a :class:`NackCode` value."""

    def __init__(self, device: str, nack: Nack) -> None:
        hint = ""
        if nack.code == NackCode.NO_SESSION:
            hint = "; the co-processor has no session (did it restart?): restart the link"
        elif nack.code == NackCode.INTERLOCK:
            hint = "; a latched fault or the pilot state forbids it (see the status flags)"
        super().__init__(device, f"co-processor NACK: {nack.describe()}{hint}")
        self.code = nack.code
        self.rejected_type = nack.rejected_type


@dataclass
class LinkStats:
    requests: int = 0
    retries: int = 0
    timeouts: int = 0
    nacks: int = 0
    #: Replies whose request had already been answered or given up (a retry's second answer).
    late_replies: int = 0
    #: Valid frames that make no sense here: a reply of the wrong type, a request from the far end.
    unexpected_frames: int = 0
    #: Valid frames whose payload does not fit their type.
    malformed_payloads: int = 0
    events: int = 0
    #: Gaps in the co-processor's event sequence numbers.
    events_lost: int = 0
    heartbeat_failures: int = 0
    mcu_restarts: int = 0


@dataclass(frozen=True)
class StatusSnapshot:
    status: McuStatus
    received_at: float  # injected clock


@dataclass
class _Pending:
    msg_type: int
    future: asyncio.Future[bytes]


class McuLink:
    """The Pi end of the co-processor link on an open pyserial(-like) ``port``.

    The port's read timeout is lowered to :data:`READ_TIMEOUT_S` and a missing write timeout set to
    :data:`WRITE_TIMEOUT_S`; the port is not closed by :meth:`stop` (whoever opened it closes it).
    """

    def __init__(
        self,
        port: Any,
        *,
        name: str,
        clock: Clock,
        reply_timeout_s: float = 0.2,
        retries: int = 2,
        heartbeat_period_s: float = 0.25,
    ) -> None:
        if reply_timeout_s <= 0 or retries < 0 or heartbeat_period_s <= 0:
            raise ValueError("reply_timeout_s and heartbeat_period_s must be > 0, retries >= 0")
        self._port = port
        self._name = name
        self._clock = clock
        self._reply_timeout_s = reply_timeout_s
        self._retries = retries
        self._heartbeat_period_s = heartbeat_period_s
        self._decoder = FrameDecoder(on_error=self._on_decode_error)
        self.stats = LinkStats()
        self._pending: dict[int, _Pending] = {}
        self._seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader: threading.Thread | None = None
        self._reader_stop = threading.Event()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._running = False
        self._port_error: BaseException | None = None
        self._hello: HelloInfo | None = None
        self._boot: HelloInfo | None = None
        self._status: StatusSnapshot | None = None
        self._status_waiters: list[asyncio.Future[None]] = []
        self._last_event_seq: int | None = None

    # ------------------------------------------------------------------ cached state (no I/O)
    @property
    def name(self) -> str:
        return self._name

    @property
    def running(self) -> bool:
        return self._running

    @property
    def outstanding(self) -> int:
        """Requests sent and still waiting for their reply."""
        return len(self._pending)

    @property
    def hello(self) -> HelloInfo | None:
        """What the co-processor said in the handshake (version, capabilities, timeouts)."""
        return self._hello

    @property
    def capabilities(self) -> Capability:
        return self._hello.capabilities if self._hello else Capability(0)

    @property
    def status(self) -> McuStatus | None:
        return self._status.status if self._status else None

    @property
    def status_snapshot(self) -> StatusSnapshot | None:
        return self._status

    @property
    def last_boot(self) -> HelloInfo | None:
        """The last EVENT_BOOT seen (the co-processor restarted while the link ran)."""
        return self._boot

    @property
    def decoder_stats(self) -> DecoderStats:
        """Frames, bad CRC, bad length, garbage bytes and truncated frames seen on receive."""
        return self._decoder.stats

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> HelloInfo:
        """Start the reader, shake hands (version check) and start the heartbeat."""
        if self._running:
            assert self._hello is not None
            return self._hello
        self._loop = asyncio.get_running_loop()
        self._prepare_port()
        self._reader_stop.clear()
        self._port_error = None
        self._reader = threading.Thread(
            target=self._read_loop, args=(self._loop,), name=f"mcu-link-{self._name}", daemon=True
        )
        self._reader.start()
        self._running = True
        try:
            reply = await self.request(MsgType.HELLO, encode_hello_request(PROTOCOL_VERSION))
            try:
                hello = HelloInfo.decode(reply)
            except PayloadError as exc:
                raise ProtocolError(self._name, f"malformed HELLO reply: {exc}") from exc
            if hello.protocol_version != PROTOCOL_VERSION:
                raise ProtocolError(
                    self._name,
                    f"co-processor speaks protocol version {hello.protocol_version}, this driver "
                    f"speaks {PROTOCOL_VERSION}; flash matching co-processor firmware (board/mcu/)",
                )
            timeout_s = hello.heartbeat_timeout_ms / 1000
            if self._heartbeat_period_s * 2 > timeout_s:
                raise ProtocolError(
                    self._name,
                    f"heartbeat period {self._heartbeat_period_s} s is more than half the "
                    f"co-processor's heartbeat timeout {timeout_s} s; it would fail safe spuriously",
                )
            self._hello = hello
            log.info(
                "%s: co-processor firmware %s, protocol %d, capabilities %s, last reset %s",
                self._name,
                ".".join(map(str, hello.firmware)),
                hello.protocol_version,
                hello.capabilities,
                hello.reset_reason.name,
            )
            await self.read_status()
        except BaseException:
            await self._shutdown()
            raise
        self._heartbeat_task = self._loop.create_task(self._heartbeat_loop(), name=f"{self._name}-heartbeat")
        return hello

    async def stop(self) -> None:
        """Stop the heartbeat (the co-processor will then fail safe) and the reader."""
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._running = False
        task, self._heartbeat_task = self._heartbeat_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._reader_stop.set()
        reader, self._reader = self._reader, None
        if reader is not None:
            await asyncio.to_thread(reader.join, READ_TIMEOUT_S * 20)
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(DeviceTimeout(self._name, "link stopped"))
        self._pending.clear()

    def _prepare_port(self) -> None:
        timeout = getattr(self._port, "timeout", None)
        if timeout is None or timeout > READ_TIMEOUT_S:
            self._port.timeout = READ_TIMEOUT_S
        if getattr(self._port, "write_timeout", None) is None:
            self._port.write_timeout = WRITE_TIMEOUT_S
        try:
            self._port.reset_input_buffer()  # bytes from before the link started belong to nobody
        except (AttributeError, OSError, serial.SerialException):
            pass

    # ------------------------------------------------------------------ requests
    async def request(self, msg_type: int, payload: bytes = b"", *, retries: int | None = None) -> bytes:
        """Send a request and return the reply payload.

        Raises :class:`DeviceTimeout` when no reply comes after the retries, :class:`McuNack` when
        the co-processor refuses, :class:`ProtocolError` when the reply makes no sense.
        """
        if not 0x01 <= msg_type <= 0x3F:
            raise ValueError(f"0x{msg_type:02X} is not a request type (0x01..0x3F)")
        if not self._running or self._loop is None:
            raise DeviceTimeout(self._name, "link not started")
        seq = self._next_seq()
        frame = encode_frame(seq, msg_type, payload)
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._pending[seq] = _Pending(msg_type, future)
        self.stats.requests += 1
        attempts = 1 + (self._retries if retries is None else retries)
        try:
            for attempt in range(attempts):
                if attempt:
                    self.stats.retries += 1
                    log.info("%s: no reply to %s seq %d, re-sending", self._name, _type_name(msg_type), seq)
                self._write(frame)
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                    # that races with the reply, and stop() would then never end the heartbeat.
                    async with asyncio.timeout(self._reply_timeout_s):
                        return await asyncio.shield(future)
                except TimeoutError:
                    continue
            self.stats.timeouts += 1
            raise DeviceTimeout(
                self._name,
                f"co-processor did not answer {_type_name(msg_type)} (seq {seq}) in {attempts} attempts "
                f"of {self._reply_timeout_s * 1000:.0f} ms; check the UART wiring and that it runs",
            )
        finally:
            self._pending.pop(seq, None)
            if not future.done():
                future.cancel()

    def _next_seq(self) -> int:
        for _ in range(256):
            self._seq = (self._seq + 1) & 0xFF
            if self._seq not in self._pending:
                return self._seq
        raise ProtocolError(self._name, "256 requests outstanding; the caller is flooding the link")

    def _write(self, data: bytes) -> None:
        if self._port_error is not None:
            raise DeviceNotFound(self._name, f"serial port failed: {self._port_error}")
        try:
            self._port.write(data)
        except serial.SerialTimeoutException as exc:
            raise DeviceTimeout(self._name, "serial write blocked; is the port wedged?") from exc
        except (OSError, serial.SerialException) as exc:
            raise DeviceNotFound(self._name, f"serial write failed: {exc}") from exc

    async def read_status(self) -> McuStatus:
        await self.request(MsgType.READ_STATUS)
        assert self._status is not None  # the reply's status was cached before the request returned
        return self._status.status

    async def fresh_status(self, max_age_s: float = STATUS_MAX_AGE_S) -> McuStatus:
        """The cached status when younger than ``max_age_s`` (injected clock), else a fresh
        READ_STATUS (raising DeviceTimeout when the co-processor stays silent)."""
        snap = self._status
        if snap is not None and self._clock.monotonic() - snap.received_at <= max_age_s:
            return snap.status
        return await self.read_status()

    async def wait_for_status(self, predicate: Callable[[McuStatus], bool], timeout_s: float) -> McuStatus:
        """Wait (real time, bounded) until a received status satisfies ``predicate``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if self._status is not None and predicate(self._status.status):
                return self._status.status
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DeviceTimeout(
                    self._name, f"co-processor status did not reach the expected state in {timeout_s} s"
                )
            waiter: asyncio.Future[None] = loop.create_future()
            self._status_waiters.append(waiter)
            try:
                async with asyncio.timeout(remaining):
                    await waiter
            except TimeoutError:
                continue

    async def clear_errors(self, flags: ErrorFlag) -> McuStatus:
        """Ask the co-processor to clear latched ``flags`` whose cause is gone; returns the status."""
        await self.request(MsgType.CLEAR_ERRORS, encode_flags(flags))
        assert self._status is not None
        return self._status.status

    # ------------------------------------------------------------------ heartbeat
    async def _heartbeat_loop(self) -> None:
        next_due = self._clock.monotonic()
        while self._running:
            try:
                # No retries: the next heartbeat a period later is the retry.
                await self.request(MsgType.HEARTBEAT, retries=0)
            except HalError as exc:
                self.stats.heartbeat_failures += 1
                log.warning("%s: heartbeat failed: %s", self._name, exc)
            next_due += self._heartbeat_period_s
            now = self._clock.monotonic()
            next_due = max(next_due, now)
            await self._clock.sleep(next_due - now)

    # ------------------------------------------------------------------ receive path
    def _read_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reader thread: blocking reads with a short timeout; all parsing happens on the loop."""
        port = self._port
        while not self._reader_stop.is_set():
            try:
                data = port.read(max(1, port.in_waiting))
            except Exception as exc:  # pyserial raises several types when a port dies; all end the reader
                try:
                    loop.call_soon_threadsafe(self._on_port_error, exc)
                except RuntimeError:
                    pass
                return
            try:
                if data:
                    loop.call_soon_threadsafe(self._on_bytes, bytes(data))
                else:
                    loop.call_soon_threadsafe(self._on_idle)
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                return

    def _on_port_error(self, exc: BaseException) -> None:
        if self._reader_stop.is_set():
            return
        self._port_error = exc
        log.error("%s: serial port failed, reader stopped: %s", self._name, exc)
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(DeviceNotFound(self._name, f"serial port failed: {exc}"))

    def _on_bytes(self, data: bytes) -> None:
        for frame in self._decoder.feed(data):
            self._dispatch(frame)

    def _on_idle(self) -> None:
        if self._decoder.pending:
            for frame in self._decoder.flush():
                self._dispatch(frame)

    def _on_decode_error(self, kind: str, detail: str) -> None:
        log.warning("%s: dropped bytes from the co-processor (%s): %s", self._name, kind, detail)

    def _dispatch(self, frame: Frame) -> None:
        t = frame.msg_type
        if t == MsgType.NACK:
            self._on_nack(frame)
        elif is_reply_type(t):
            self._on_reply(frame)
        elif t == MsgType.EVENT_STATUS:
            self._count_event(frame.seq)
            self._take_status(frame.payload, "EVENT_STATUS")
        elif t == MsgType.EVENT_BOOT:
            self._on_boot(frame)
        else:
            self.stats.unexpected_frames += 1
            log.warning("%s: unexpected frame type 0x%02X seq %d dropped", self._name, t, frame.seq)

    def _on_nack(self, frame: Frame) -> None:
        pending = self._pending.get(frame.seq)
        try:
            nack = Nack.decode(frame.payload)
        except PayloadError as exc:
            self.stats.malformed_payloads += 1
            if pending is not None and not pending.future.done():
                pending.future.set_exception(ProtocolError(self._name, f"malformed NACK: {exc}"))
            return
        if pending is None or pending.future.done() or nack.rejected_type != pending.msg_type:
            self.stats.late_replies += 1
            log.info("%s: NACK seq %d (%s) matches no waiting request", self._name, frame.seq, nack.describe())
            return
        self.stats.nacks += 1
        pending.future.set_exception(McuNack(self._name, nack))

    def _on_reply(self, frame: Frame) -> None:
        pending = self._pending.get(frame.seq)
        if frame.msg_type not in (reply_type(MsgType.HELLO), reply_type(MsgType.READ_PP)):
            # Every reply but HELLO's and READ_PP's carries the status after the request took effect; cache it
            # before waking the requester so the adapters' properties are current when it returns.
            if not self._take_status(frame.payload, _type_name(frame.msg_type & 0x7F) + " reply"):
                if pending is not None and not pending.future.done():
                    pending.future.set_exception(
                        ProtocolError(self._name, f"malformed {_type_name(pending.msg_type)} reply")
                    )
                return
        if pending is None or pending.future.done():
            self.stats.late_replies += 1
            return
        if frame.msg_type != reply_type(pending.msg_type):
            self.stats.unexpected_frames += 1
            log.warning(
                "%s: reply type 0x%02X to %s seq %d ignored",
                self._name,
                frame.msg_type,
                _type_name(pending.msg_type),
                frame.seq,
            )
            return
        pending.future.set_result(frame.payload)

    def _count_event(self, seq: int) -> None:
        self.stats.events += 1
        if self._last_event_seq is not None:
            self.stats.events_lost += (seq - self._last_event_seq - 1) & 0xFF
        self._last_event_seq = seq

    def _on_boot(self, frame: Frame) -> None:
        self.stats.events += 1
        self._last_event_seq = frame.seq  # the co-processor's event counter restarted
        try:
            info = HelloInfo.decode(frame.payload)
        except PayloadError as exc:
            self.stats.malformed_payloads += 1
            log.warning("%s: malformed EVENT_BOOT: %s", self._name, exc)
            return
        self._boot = info
        if self._hello is not None:
            self.stats.mcu_restarts += 1
            log.error(
                "%s: co-processor restarted (%s); outputs are safe, the session is lost",
                self._name,
                info.reset_reason.name,
            )

    def _take_status(self, payload: bytes, what: str) -> bool:
        try:
            status = McuStatus.decode(payload)
        except PayloadError as exc:
            self.stats.malformed_payloads += 1
            log.warning("%s: malformed %s: %s", self._name, what, exc)
            return False
        previous = self._status.status if self._status else None
        self._status = StatusSnapshot(status, self._clock.monotonic())
        if previous is not None and previous.flags != status.flags:
            raised = flag_names(status.flags & ~previous.flags)
            cleared = flag_names(previous.flags & ~status.flags)
            log.warning("%s: co-processor flags raised %s cleared %s", self._name, raised, cleared)
        if previous is not None and previous.outputs & Output.SESSION_OPEN and not status.outputs & Output.SESSION_OPEN:
            log.error("%s: co-processor reports no session any more (restarted?)", self._name)
        waiters, self._status_waiters = self._status_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        return True


def _type_name(msg_type: int) -> str:
    try:
        return MsgType(msg_type).name
    except ValueError:
        return f"type 0x{msg_type:02X}"


async def _command(link: McuLink, msg_type: MsgType, payload: bytes, what: str) -> bytes:
    try:
        return await link.request(msg_type, payload)
    except McuNack as exc:
        # UNKNOWN_TYPE: an older co-processor without this request, which is the same for the caller.
        if exc.code in (NackCode.UNSUPPORTED, NackCode.UNKNOWN_TYPE):
            raise UnsupportedOperation(link.name, f"the co-processor board cannot {what}") from exc
        raise


# ---------------------------------------------------------------------------------- HAL adapters


class McuPilotOutput:
    """:class:`hal.interfaces.PilotOutput` generated by the co-processor. ``mode`` and
    ``duty_permille`` report what the co-processor last said it drives (it may have changed the
    pilot itself, e.g. to F on heartbeat loss); before any status it is F, the boot state."""

    def __init__(self, link: McuLink) -> None:
        self._link = link

    @property
    def mode(self) -> PilotMode:
        status = self._link.status
        return PilotMode[PilotCode(status.pilot_mode).name] if status else PilotMode.F

    @property
    def duty_permille(self) -> int:
        status = self._link.status
        return status.duty_permille if status else 0

    @property
    def supports_state_e(self) -> bool:
        return bool(self._link.capabilities & Capability.STATE_E)

    async def set_pwm(self, duty_permille: int) -> None:
        if not 0 < duty_permille < PILOT_DUTY_MAX_PERMILLE:
            raise ValueError(f"PWM duty {duty_permille} per mille outside 1..{PILOT_DUTY_MAX_PERMILLE - 1}")
        await _command(self._link, MsgType.SET_PILOT, encode_set_pilot(PilotCode.PWM, duty_permille), "run PWM")

    async def set_x1(self) -> None:
        await _command(self._link, MsgType.SET_PILOT, encode_set_pilot(PilotCode.X1), "drive X1")

    async def set_f(self) -> None:
        await _command(self._link, MsgType.SET_PILOT, encode_set_pilot(PilotCode.F), "drive F")

    async def set_e(self) -> None:
        if self._link.hello is not None and not self.supports_state_e:
            raise UnsupportedOperation(self._link.name, "the co-processor board has no 0 V pilot output (state E)")
        await _command(self._link, MsgType.SET_PILOT, encode_set_pilot(PilotCode.E), "drive state E")


class McuPilotSense:
    """:class:`hal.interfaces.PilotSense` from the levels the co-processor pushes; levels older than
    ``max_age_s`` are re-read, and a silent co-processor raises DeviceTimeout."""

    def __init__(self, link: McuLink, *, max_age_s: float = STATUS_MAX_AGE_S) -> None:
        self._link = link
        self._max_age_s = max_age_s

    async def read(self) -> PilotReading:
        status = await self._link.fresh_status(self._max_age_s)
        low = status.cp_low_mv / 1000 if status.cp_low_valid else None
        return PilotReading(high_v=status.cp_high_mv / 1000, low_v=low, samples=status.cp_periods)


class McuContactor:
    """:class:`hal.interfaces.Contactor` switched by the co-processor.

    ``close()`` *allows* the contactor: the co-processor energises the coil only while the pilot
    reads C or D and no fault interlocks, and opens it by itself on C->B, unplug, RCD trip or
    heartbeat loss (docs/mcu-protocol.md SET_CONTACTOR). The mirror contact is the feedback.
    """

    def __init__(self, link: McuLink, *, max_age_s: float = STATUS_MAX_AGE_S) -> None:
        self._link = link
        self._max_age_s = max_age_s
        self._commanded = False

    @property
    def commanded_closed(self) -> bool:
        return self._commanded

    @property
    def has_feedback(self) -> bool:
        return bool(self._link.capabilities & Capability.CONTACTOR_MIRROR)

    async def close(self) -> None:
        await _command(self._link, MsgType.SET_CONTACTOR, encode_bool(True), "switch the contactor")
        self._commanded = True

    async def open(self) -> None:
        self._commanded = False  # commanded open even if the request fails: never report "closed" wrongly
        await _command(self._link, MsgType.SET_CONTACTOR, encode_bool(False), "switch the contactor")

    async def feedback_closed(self) -> bool | None:
        if not self.has_feedback:
            return None
        status = await self._link.fresh_status(self._max_age_s)
        return status.contactor_mirror_closed


class McuResidualCurrentMonitor:
    """:class:`hal.interfaces.ResidualCurrentMonitor` read through the co-processor, which trips the
    contactor itself and latches ``rcd_triggered`` (its interlock while the Pi may be gone).

    ``tripped()`` is the trip *input*, as on a board whose RCD is a GPIO: while the flag is set the
    adapter asks the co-processor to clear it, which the co-processor does only once the residual
    current is below its threshold. The connector keeps its own fault until the EV is unplugged
    (firmware.safety.faults RCD_TRIPPED, Recovery.UNPLUG); without this clearing the co-processor's
    latch would hold that fault forever and the charger could never recover."""

    def __init__(
        self,
        link: McuLink,
        *,
        max_age_s: float = STATUS_MAX_AGE_S,
        selftest_timeout_s: float = RCD_SELFTEST_TIMEOUT_S,
    ) -> None:
        self._link = link
        self._max_age_s = max_age_s
        self._selftest_timeout_s = selftest_timeout_s

    async def tripped(self) -> bool:
        status = await self._link.fresh_status(self._max_age_s)
        if status.flags & ErrorFlag.RCD_TRIGGERED:
            status = await self._link.clear_errors(ErrorFlag.RCD_TRIGGERED)  # refused while the current flows
        return bool(status.flags & ErrorFlag.RCD_TRIGGERED)

    async def self_test(self) -> bool:
        await _command(self._link, MsgType.RCD_SELFTEST, b"", "test the RCD")
        # The ACK's status already says RUNNING; the result comes in a pushed STATUS.
        status = await self._link.wait_for_status(
            lambda s: s.selftest in (SelftestState.PASSED, SelftestState.FAILED), self._selftest_timeout_s
        )
        return status.selftest is SelftestState.PASSED


class McuProximity:
    """:class:`hal.interfaces.ProximityPilot` read by the co-processor (boards with capability PP): it
    measures the PP-PE resistance, the Pi decodes it (hal/proximity.py, Type 2 or Type 1 coding)."""

    def __init__(self, link: McuLink, *, coding: str = "type2", single_phase: bool = False) -> None:
        if coding not in ("type2", "type1"):
            raise ValueError(f"PP coding {coding!r}: 'type2' or 'type1'")
        self._link = link
        self._coding = coding
        self._single_phase = single_phase

    async def read(self) -> ProximityReading:
        ohm = decode_pp(await _command(self._link, MsgType.READ_PP, b"", "read the proximity pilot"))
        if self._coding == "type1":
            return decode_type1(None if ohm is None else float(ohm))
        return decode_type2(None if ohm is None else float(ohm), single_phase=self._single_phase)


class McuConnectorLock:
    """:class:`hal.interfaces.ConnectorLock` driven by the co-processor."""

    def __init__(self, link: McuLink, *, max_age_s: float = STATUS_MAX_AGE_S) -> None:
        self._link = link
        self._max_age_s = max_age_s
        self._commanded = False

    @property
    def commanded_locked(self) -> bool:
        return self._commanded

    async def lock(self) -> None:
        self._check_present()
        await _command(self._link, MsgType.SET_LOCK, encode_bool(True), "lock the connector")
        self._commanded = True

    async def unlock(self) -> None:
        self._check_present()
        await _command(self._link, MsgType.SET_LOCK, encode_bool(False), "unlock the connector")
        self._commanded = False

    async def feedback_locked(self) -> bool | None:
        if not self._link.capabilities & Capability.LOCK_FEEDBACK:
            return None
        status = await self._link.fresh_status(self._max_age_s)
        return bool(status.outputs & Output.LOCK_FEEDBACK)

    def _check_present(self) -> None:
        if self._link.hello is not None and not self._link.capabilities & Capability.LOCK:
            raise UnsupportedOperation(self._link.name, "the co-processor board has no connector lock")
