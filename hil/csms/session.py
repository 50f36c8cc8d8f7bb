"""One station's connection to the embedded CSMS: framing, checking and recording every message.

:class:`CsmsSession` sits on the ``ocpp`` package's ``ChargePoint`` (server role): the version
subclasses in :mod:`hil.csms.handlers16` and :mod:`hil.csms.handlers201` add the ``@on`` handlers.
This class overrides ``route_message`` and ``_send``, the two places every frame passes, to record
each one as a :class:`CsmsEvent`, to check it against its schema synchronously (see
:mod:`hil.csms.frames` for why), and to answer malformed frames the way OCPP-J asks.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, is_dataclass
from datetime import datetime
from enum import Enum
from typing import Any, ClassVar, Literal

from ocpp.charge_point import ChargePoint, camel_to_snake_case
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallError, CallResult

from firmware.ocpp.link import Link
from firmware.ocpp.timestamps import utc_iso
from hal.clock import Clock
from hil.csms.frames import (
    CALL,
    CALLERROR,
    CALLRESULT,
    CALLRESULTERROR,
    SEND,
    Frame,
    MalformedFrame,
    Protocol,
    call_error_frame,
    check_payload,
    error_code,
    parse_frame,
)
from hil.csms.records import CsmsCallError, CsmsError, CsmsEvent, CsmsPolicy, TransactionLedger

logger = logging.getLogger(__name__)

#: Actions both a station and a CSMS may initiate (OCPP 1.6 §4.3/§5.6 DataTransfer; 2.x P01/P02).
_BOTH_WAYS = frozenset({"DataTransfer"})

#: A malformed frame is kept in the event log up to this many characters.
_MALFORMED_KEEP = 1000


@dataclass
class CsmsContext:
    """What every session shares with the CSMS that owns it."""

    clock: Clock
    policy: CsmsPolicy
    wall_clock: Callable[[], datetime]
    record: Callable[[CsmsEvent], None]
    ledger: TransactionLedger
    next_transaction_id: Callable[[], int]

    def now(self) -> str:
        return utc_iso(self.wall_clock())


@dataclass
class _Outstanding:
    """The one CSMS-initiated CALL that may be open on a connection (OCPP 2.1 part 4 §4.1.1)."""

    message_id: str
    action: str
    result: dict[str, Any] | None = None
    error: Frame | None = None
    problem: str | None = None
    outgoing_problem: str | None = None


class CsmsSession(ChargePoint):  # type: ignore[misc]  # ocpp ships no type information
    """Base of the per-version sessions; not used on its own."""

    protocol: ClassVar[Protocol]
    actions: ClassVar[type[Enum]]  # the version's ``Action`` enum: every action name it defines

    def __init__(self, station_id: str, connection: Link, context: CsmsContext, transport: str) -> None:
        super().__init__(station_id, connection, response_timeout=30)
        self.connection = connection
        self.context = context
        self.transport = transport
        self.close_reason: str | None = None
        self.closed = asyncio.Event()
        self.task: asyncio.Task[Any] | None = None
        self._rx_calls: dict[str, tuple[str, dict[str, Any]]] = {}  # id -> (action, raw payload), until answered
        self._outstanding: _Outstanding | None = None
        self._request_lock = asyncio.Lock()

    # ----------------------------------------------------------------------------------- receiving

    def request_payload(self, message_id: str) -> dict[str, Any]:
        """The camelCase payload of the station's CALL ``message_id`` (for handlers)."""
        return self._rx_calls[message_id][1]

    async def route_message(self, raw_msg: str) -> None:
        """Record, check and dispatch one frame from the station; never raises for a bad frame."""
        try:
            frame = parse_frame(raw_msg, self.protocol)
        except MalformedFrame as bad:
            await self._on_malformed(raw_msg, bad)
            return
        if frame.type_id in (CALL, SEND):
            self._record("rx", "call", frame.action, frame.payload, frame.message_id)
            if frame.type_id == CALL:
                await self._on_call(frame)
            # A SEND is never answered (OCPP 2.1 part 4 §4.2.4) and nothing here consumes one.
        elif frame.type_id == CALLRESULT:
            self._on_result(frame)
        else:
            self._on_error(frame)

    async def _on_malformed(self, raw: str, bad: MalformedFrame) -> None:
        logger.warning("%s: malformed frame (%s): %.200s", self.id, bad.reason, raw)
        self._record("rx", "error", None, {"malformed": raw[:_MALFORMED_KEEP], "reason": bad.reason}, bad.message_id)
        if self.protocol == "ocpp1.6":
            # 1.6 has no error code for an unreadable id or an unknown message type: a CALLERROR only
            # answers a CALL whose id we could read (OCPP-J 1.6 §4.2.3).
            if bad.type_id == CALL and bad.message_id is not None:
                await self._send(call_error_frame(bad.message_id, error_code(self.protocol, "format"), bad.reason))
            return
        if bad.message_id is None:
            # OCPP 2.1 part 4 §4.2.3: when the MessageId cannot be read the CALLERROR carries "-1".
            await self._send(call_error_frame("-1", "RpcFrameworkError", bad.reason))
        elif bad.type_id == CALL:
            await self._send(call_error_frame(bad.message_id, "RpcFrameworkError", bad.reason))
        elif self.protocol == "ocpp2.0.1" and bad.type_id not in (CALLRESULT, CALLERROR):
            await self._send(call_error_frame(bad.message_id, "MessageTypeNotSupported", bad.reason))
        # 2.1 ignores unknown message types (part 4 §4.1.3); a bad result or error gets no CALLERROR.

    async def _on_call(self, frame: Frame) -> None:
        action, message_id = frame.action or "", frame.message_id
        self._rx_calls[message_id] = (action, frame.payload)
        if action not in self.route_map:
            known = action in {a.value for a in self.actions}
            # OCPP-J 1.6 §4.2.3 / 2.1 part 4 §4.3: NotImplemented = action not known to the receiver,
            # NotSupported = recognised but not supported (here: one the station must not send).
            code = "NotSupported" if known else "NotImplemented"
            await self._send(call_error_frame(message_id, code, f"{action} is not handled by this CSMS"))
            return
        problem = check_payload(self.protocol, action, frame.payload, response=False)
        if problem is not None:
            await self._send(call_error_frame(message_id, problem.code, problem.cause))
            return
        try:
            # The handlers skip the package's own (threaded) validation: the request was checked above
            # and the response is checked in _send.
            await self._handle_call(Call(message_id, action, frame.payload))
        except OCPPError as exc:
            await self._send(call_error_frame(message_id, exc.code, exc.description, {"cause": str(exc.details)}))

    def _on_result(self, frame: Frame) -> None:
        pending = self._outstanding
        action = pending.action if pending is not None and pending.message_id == frame.message_id else None
        self._record("rx", "result", action, frame.payload, frame.message_id)
        if pending is None or action is None:
            logger.warning("%s: result for unknown message id %s dropped", self.id, frame.message_id)
            return
        problem = check_payload(self.protocol, pending.action, frame.payload, response=True)
        pending.result = frame.payload
        pending.problem = problem.cause if problem is not None else None
        self._response_queue.put_nowait(CallResult(frame.message_id, frame.payload, pending.action))

    def _on_error(self, frame: Frame) -> None:
        pending = self._outstanding
        matches = pending is not None and frame.type_id == CALLERROR and pending.message_id == frame.message_id
        details = {
            "errorCode": frame.error_code,
            "errorDescription": frame.error_description,
            "errorDetails": frame.payload,
        }
        self._record("rx", "error", pending.action if matches and pending else None, details, frame.message_id)
        if frame.type_id == CALLRESULTERROR:
            logger.warning("%s: station could not process our result %s: %s", self.id, frame.message_id, details)
            return
        if pending is None or not matches:
            logger.warning("%s: CALLERROR for unknown message id %s dropped", self.id, frame.message_id)
            return
        pending.error = frame
        self._response_queue.put_nowait(
            CallError(frame.message_id, frame.error_code, frame.error_description, frame.payload)
        )

    # ------------------------------------------------------------------------------------- sending

    async def _send(self, message: str) -> None:
        """Check, record and send one frame: the single exit of everything this session sends."""
        frame = parse_frame(message, self.protocol)
        if frame.type_id == CALLRESULT:
            action, _ = self._rx_calls.pop(frame.message_id, ("", {}))
            problem = check_payload(self.protocol, action, frame.payload, response=True) if action else None
            if problem is not None:
                # Our own handler built a bad response: tell the station so rather than send it.
                logger.error("%s: invalid %s response withheld: %s", self.id, action, problem.cause)
                message = call_error_frame(frame.message_id, "InternalError", "CSMS built an invalid response")
                frame = parse_frame(message, self.protocol)
            self._record_tx(frame, action or None)
        elif frame.type_id == CALLERROR:
            action, _ = self._rx_calls.pop(frame.message_id, ("", {}))
            self._record_tx(frame, action or None)
        else:
            pending = self._outstanding
            problem = check_payload(self.protocol, frame.action or "", frame.payload, response=False)
            if problem is not None:
                if pending is not None and pending.message_id == frame.message_id:
                    pending.outgoing_problem = problem.cause
                raise CsmsError(f"refusing to send an invalid {frame.action}: {problem.cause}")
            self._record_tx(frame, frame.action)
        await self._connection.send(message)

    def _record_tx(self, frame: Frame, action: str | None) -> None:
        if frame.type_id == CALLERROR:
            payload = {
                "errorCode": frame.error_code,
                "errorDescription": frame.error_description,
                "errorDetails": frame.payload,
            }
            self._record("tx", "error", action, payload, frame.message_id)
        else:
            self._record("tx", "call" if frame.type_id == CALL else "result", action, frame.payload, frame.message_id)

    def _record(
        self,
        direction: Literal["rx", "tx"],
        kind: Literal["call", "result", "error", "connected", "disconnected"],
        action: str | None,
        payload: dict[str, Any],
        message_id: str | None,
    ) -> None:
        self.context.record(
            CsmsEvent(self.context.clock.monotonic(), self.id, direction, kind, action, payload, message_id)
        )

    # --------------------------------------------------------------------- CSMS-initiated calls

    async def request(self, action: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send ``action`` with camelCase ``payload``; the station's camelCase answer.

        Raises ValueError for an action or payload this OCPP version does not define,
        :class:`CsmsCallError` for a CALLERROR, :class:`CsmsError` for a lost connection or an
        invalid answer, and TimeoutError when no answer comes within ``timeout`` seconds of the
        injected clock (or of real time, which the ``ocpp`` package's own wait uses).
        """
        message = self._build_call(action, payload)
        async with self._request_lock:  # one CALL open per connection (OCPP 2.1 part 4 §4.1.1)
            if self.closed.is_set():
                raise CsmsError(f"{self.id} is not connected")
            pending = _Outstanding(str(uuid.uuid4()), action)
            self._outstanding = pending
            self._response_timeout = timeout
            call_task = asyncio.ensure_future(
                self.call(message, suppress=False, unique_id=pending.message_id, skip_schema_validation=True)
            )
            closed_task = asyncio.ensure_future(self.closed.wait())
            timer_task = asyncio.ensure_future(self.context.clock.sleep(timeout))
            try:
                await asyncio.wait({call_task, closed_task, timer_task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (call_task, closed_task, timer_task):
                    task.cancel()
                await asyncio.gather(call_task, closed_task, timer_task, return_exceptions=True)
                self._outstanding = None
        return self._outcome(pending, call_task, timeout)

    def _build_call(self, action: str, payload: dict[str, Any]) -> Any:
        if action not in {a.value for a in self.actions}:
            raise ValueError(f"{action!r} is not an OCPP {self.protocol[4:]} action")
        # What this CSMS handles is what stations send; of those only DataTransfer goes both ways.
        if action in self.route_map and action not in _BOTH_WAYS:
            raise ValueError(f"{action} is sent by a charging station, not by a CSMS")
        cls = getattr(self._call, action, None)
        if cls is None or not is_dataclass(cls) or not isinstance(cls, type):
            raise ValueError(f"the ocpp package has no {action} request for OCPP {self.protocol[4:]}")
        if not isinstance(payload, dict):
            raise ValueError(f"{action} payload must be a dict, got {type(payload).__name__}")
        problem = check_payload(self.protocol, action, payload, response=False)
        if problem is not None:
            raise ValueError(f"invalid {action} payload ({problem.code}): {problem.cause}")
        try:
            return cls(**camel_to_snake_case(payload))
        except TypeError as exc:
            raise ValueError(f"{action} payload does not fit the ocpp package's {action}: {exc}") from None

    def _outcome(self, pending: _Outstanding, call_task: asyncio.Future[Any], timeout: float) -> dict[str, Any]:
        where = f"{self.id} {pending.action}"
        if pending.error is not None:
            error = pending.error
            raise CsmsCallError(error.error_code or "", error.error_description or "", error.payload)
        if pending.result is not None:
            if pending.problem is not None:
                raise CsmsError(f"{where}: invalid response: {pending.problem}")
            return pending.result
        if pending.outgoing_problem is not None:
            raise CsmsError(f"{where}: {pending.outgoing_problem}")
        if call_task.done() and not call_task.cancelled():
            exc = call_task.exception()
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"{where}: no answer within {timeout} s") from None
            if exc is not None:
                raise CsmsError(f"{where}: {exc}") from exc
        if self.closed.is_set():
            raise CsmsError(f"{where}: connection closed before an answer ({self.close_reason or 'closed'})")
        raise TimeoutError(f"{where}: no answer within {timeout} s")

    # ----------------------------------------------------------------------------------- helpers

    def boot_answer(self) -> dict[str, Any]:
        """currentTime, interval and status for a BootNotification response."""
        policy = self.context.policy
        # interval: the heartbeat interval when Accepted, the retry wait otherwise (OCPP 1.6 §4.2).
        return {
            "current_time": self.context.now(),
            "interval": policy.heartbeat_interval_s,
            "status": policy.boot_status,
        }
