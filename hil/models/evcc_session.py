"""What every protocol of the simulated EVCC shares: the conversation with the SECC (encode, send, wait
within the message timeout, decode, check, record), the vehicle's battery and power path, the hooks for
the HIL rig, and the result.

Errors: everything the SECC can get wrong (no answer in time, a message that does not decode or is not
the answer to the request, a FAILED response code, a value the EV cannot read) is an :class:`EvccError`
subclass naming the message and what is wrong; :meth:`hil.models.evcc.Evcc.run` turns it into
:attr:`EvccResult.error` and leaves the vehicle safe (no power, pilot back to B).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from firmware.iso15118.exi import ExiDecodeError, ExiEncodeError, Namespace, codec
from firmware.iso15118.session.values import WireValueError, from_physical, from_rational
from firmware.iso15118.v2gtp import DinPayloadType, Iso2PayloadType, V2gtpEofError, V2gtpError
from hal.clock import Clock
from hil.models.evcc_config import EvccConfig, EvSpec

T = TypeVar("T")
NO_SESSION = "00" * 8  # SessionSetupReq with this SessionID asks for a new session
#: The battery's charge current at 100 % SoC, as a share of its maximum (the end of the linear taper).
TAPER_END_SHARE = 0.1
#: Discharge is limited so that two loop intervals at that power stay above the minimum SoC: the next
#: answer may come a little late, and the EV must never end below its minimum.
DISCHARGE_MARGIN_INTERVALS = 2.0


# ----------------------------------------------------------------------------------------- errors
class EvccError(Exception):
    """The session could not go on; the message says which message and what was wrong."""


class EvccTimeoutError(EvccError):
    """No answer within a message timeout, or an Ongoing / cable check / precharge loop that took too long."""


class EvccProtocolError(EvccError):
    """A message from the SECC that does not decode, is not the answer to the request, or lacks a value."""


class EvccSessionError(EvccError):
    """The SECC refused: a FAILED response code, or nothing this EV can charge with."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class EvccConnectionError(EvccError):
    """No connection to the SECC, or the connection broke."""


# ----------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Exchange:
    """One request and its answer: clock time the request was sent, names, ResponseCode, round trip."""

    t: float
    request: str
    response: str
    code: str | None
    elapsed_s: float


@dataclass(frozen=True)
class PowerDraw:
    """What flows into the EV now (negative: out of it). AC: ``current_a`` per phase on ``phases`` phases
    at ``voltage_v`` phase voltage; DC: ``phases`` is 0 and ``current_a`` the DC current."""

    power_w: float
    current_a: float
    phases: int
    voltage_v: float


NO_POWER = PowerDraw(0.0, 0.0, 0, 0.0)


@dataclass
class EvccHooks:
    """How the HIL rig follows the EV: ``pilot`` gets "B" or "C" when the EV switches its pilot
    resistor, ``power`` every change of what it draws, ``message`` every exchange (for the trace)."""

    pilot: Callable[[str], None] | None = None
    power: Callable[[PowerDraw], None] | None = None
    message: Callable[[Exchange], None] | None = None


@dataclass
class EvccResult:
    """Everything a run did. ``ok``: it ended by a regular SessionStop (or a pause it was told to keep)."""

    soc_start: float
    soc_end: float
    protocol: str | None = None  # "din" | "iso2" | "iso20"
    service: str | None = None  # energy transfer mode (DIN/-2) or -20 service as selected
    control_mode: str | None = None  # -20: "scheduled" | "dynamic"
    session_id: str | None = None
    evse_id: str | None = None
    tls_version: str | None = None
    exchanges: list[Exchange] = field(default_factory=list)
    pilot: list[tuple[float, str]] = field(default_factory=list)
    charged_wh: float = 0.0
    discharged_wh: float = 0.0
    stop_reason: str | None = None
    pauses: int = 0
    joined: int = 0  # sessions resumed with OK_OldSessionJoined
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.stop_reason is not None

    def requests(self) -> list[str]:
        return [e.request for e in self.exchanges]


@dataclass(frozen=True)
class Selection20:
    """The ISO 15118-20 service the EV selected, and what it learned about it (kept over a pause)."""

    service_id: int
    parameter_set_id: int
    dynamic: bool
    nominal_voltage_v: float  # AC: the EVSE's EVSENominalVoltage (or the EV's own assumption)
    phases: int  # AC: phases the EV charges on

    @property
    def bpt(self) -> bool:
        return self.service_id in (5, 6)  # AC_BPT, DC_BPT (ISO 15118-20 Table 204, standards-facts.md 2.6)


@dataclass(frozen=True)
class Resume:
    """What a paused session leaves for the next connection: its protocol, SessionID, and what the
    protocol needs to join it again (-20: the service selected)."""

    protocol: str
    session_id: str
    selection: Selection20 | None = None


@dataclass(frozen=True)
class Outcome:
    """How a protocol's session ended: why, and a :class:`Resume` when it was paused."""

    reason: str
    resume: Resume | None = None


# ----------------------------------------------------------------------------------------- transport seam
class V2gChannel(Protocol):
    """One connection to a SECC carrying V2GTP payloads (TCP, TLS, or an in-memory test double)."""

    @property
    def tls_version(self) -> str | None: ...

    async def send(self, payload_type: int, payload: bytes) -> None: ...

    async def receive(self) -> tuple[int, bytes]:
        """The next V2GTP message as (payload type, payload); the EVCC bounds the wait itself."""
        ...

    async def close(self) -> None: ...


async def within(clock: Clock, timeout_s: float, work: Awaitable[T], what: str) -> T:
    """``work``'s result, or :class:`EvccTimeoutError` after ``timeout_s`` of ``clock``."""
    task = asyncio.ensure_future(work)
    timer = asyncio.ensure_future(clock.sleep(timeout_s))
    try:
        await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise EvccTimeoutError(f"{what}: no answer within {timeout_s:g} s")
    return task.result()


class Dialect(Protocol):
    """How one protocol wraps a message body into the codec's tree and back."""

    protocol: str

    def namespace(self, name: str) -> Namespace: ...

    def payload_type(self, name: str) -> int: ...

    def wrap(self, name: str, body: dict[str, Any], session_id: str) -> dict[str, Any]: ...

    def unwrap(self, tree: dict[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
        """(message name, SessionID of the header, body)."""
        ...


class HeaderBodyDialect:
    """DIN 70121 and ISO 15118-2: ``{"V2G_Message": {"Header": {"SessionID": ...}, "Body": {name: body}}}``,
    every message in payload type 0x8001 (DIN 70121 Table 16, ISO 15118-2 Table 10)."""

    def __init__(self, protocol: str, namespace: Namespace) -> None:
        self.protocol = protocol
        self._namespace = namespace

    def namespace(self, name: str) -> Namespace:
        return self._namespace

    def payload_type(self, name: str) -> int:
        return int(DinPayloadType.EXI if self.protocol == "din" else Iso2PayloadType.EXI)

    def wrap(self, name: str, body: dict[str, Any], session_id: str) -> dict[str, Any]:
        return {"V2G_Message": {"Header": {"SessionID": session_id.upper()}, "Body": {name: body}}}

    def unwrap(self, tree: dict[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
        header = need(tree, "V2G_Message", "Header")
        body = need(tree, "V2G_Message", "Body")
        if not isinstance(body, dict) or len(body) != 1:
            raise EvccProtocolError("V2G_Message/Body does not hold exactly one message")
        [(name, content)] = body.items()
        session_id = header.get("SessionID") if isinstance(header, dict) else None
        return name, session_id if isinstance(session_id, str) else None, content if isinstance(content, dict) else {}


class Conversation:
    """Requests and answers over one channel in one protocol, each answer awaited within its timeout."""

    def __init__(self, channel: V2gChannel, dialect: Dialect, ctx: EvContext) -> None:
        self.channel = channel
        self.dialect = dialect
        self.ctx = ctx
        self.session_id = NO_SESSION
        self.answer_session_id: str | None = None  # the SessionID of the last answer

    def adopt_session(self) -> str:
        """Take the SessionID the SessionSetupRes carried as the session's (16 hex digits)."""
        sid = (self.answer_session_id or "").lower()
        if len(sid) != 16 or any(c not in "0123456789abcdef" for c in sid):
            raise EvccProtocolError(f"SessionSetupRes SessionID {self.answer_session_id!r} is not 8 bytes of hex")
        self.session_id = sid
        self.ctx.result.session_id = sid
        return sid

    async def ask(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send request ``name`` and return the body of its answer. A FAILED ResponseCode raises
        :class:`EvccSessionError`: it ends the session in every protocol."""
        ctx, dialect = self.ctx, self.dialect
        expected = name[:-3] + "Res"
        namespace = dialect.namespace(name)
        try:
            payload = codec(namespace).encode(dialect.wrap(name, body, self.session_id))
        except (ExiEncodeError, WireValueError) as exc:  # a value of this EV the schema cannot carry
            raise EvccProtocolError(f"{name} cannot be encoded: {exc}") from exc
        sent = ctx.clock.monotonic()
        try:
            await self.channel.send(dialect.payload_type(name), payload)
            payload_type, answer = await within(
                ctx.clock, ctx.config.timeouts.response(dialect.protocol, name), self.channel.receive(), expected
            )
        except V2gtpEofError as exc:
            raise EvccConnectionError(f"{name}: the SECC closed the connection") from exc
        except V2gtpError as exc:
            raise EvccProtocolError(f"{expected}: {exc}") from exc
        except OSError as exc:
            raise EvccConnectionError(f"{name}: connection failed: {exc}") from exc
        if payload_type != dialect.payload_type(name):
            raise EvccProtocolError(f"{expected} came with V2GTP payload type 0x{payload_type:04X}")
        try:
            tree = codec(namespace).decode(answer)
        except ExiDecodeError as exc:
            raise EvccProtocolError(f"{expected} does not decode: {exc}") from exc
        got, session_id, res = dialect.unwrap(tree)
        self.answer_session_id = session_id
        code = res.get("ResponseCode")
        exchange = Exchange(sent, name, got, code if isinstance(code, str) else None, ctx.clock.monotonic() - sent)
        ctx.record(exchange)
        if got != expected:
            raise EvccProtocolError(f"{name} was answered with {got}")
        if not isinstance(code, str):
            raise EvccProtocolError(f"{expected} has no ResponseCode")
        if code.startswith("FAILED"):
            raise EvccSessionError(f"{name} answered {code}", code)
        if name == "SessionSetupReq":
            if ctx.clock.monotonic() > ctx.setup_deadline:  # V2G_EVCC_CommunicationSetup_Timeout (2.4)
                raise EvccTimeoutError("SessionSetupRes came after the communication setup timeout")
        elif session_id is None or session_id.lower() != self.session_id:
            raise EvccProtocolError(f"{expected} carries SessionID {session_id}, the session is {self.session_id}")
        return res


# ----------------------------------------------------------------------------------------- the vehicle
class Battery:
    """The traction battery: SoC from the energy at the connector (losses are not modelled), a terminal
    voltage linear in SoC, a charge current that tapers linearly above ``taper_from_soc``."""

    def __init__(self, spec: EvSpec) -> None:
        self.spec = spec
        self.soc = spec.soc

    def voltage_v(self) -> float:
        s = self.spec
        return s.empty_voltage_v + (s.full_voltage_v - s.empty_voltage_v) * self.soc

    def integrate(self, power_w: float, dt_s: float) -> float:
        """Store ``power_w`` for ``dt_s``; returns the energy in Wh (signed)."""
        if dt_s <= 0 or power_w == 0 or not math.isfinite(power_w):
            return 0.0
        wh = power_w * dt_s / 3600.0
        self.soc = min(1.0, max(0.0, self.soc + wh / self.spec.capacity_wh))
        return wh

    def full(self) -> bool:
        return self.soc >= self.spec.target_soc - 1e-9

    def taper(self) -> float:
        """Share of the maximum charge current the battery takes at this SoC."""
        start = self.spec.taper_from_soc
        if self.soc <= start or start >= 1.0:
            return 1.0
        progress = min(1.0, (self.soc - start) / (1.0 - start))
        return 1.0 - progress * (1.0 - TAPER_END_SHARE)

    def charge_current_a(self) -> float:
        """DC: the most current the battery takes now (0 at the target SoC)."""
        if self.full():
            return 0.0
        s = self.spec
        return min(s.max_current_a * self.taper(), s.max_power_w / self.voltage_v())

    def charge_power_w(self, ac_max_w: float | None = None) -> float:
        """The most power the EV takes now: DC from the battery, AC also within the onboard charger."""
        if self.full():
            return 0.0
        dc = self.charge_current_a() * self.voltage_v()
        return dc if ac_max_w is None else min(dc, ac_max_w * self.taper())

    def discharge_power_w(self, interval_s: float) -> float:
        """The most the EV gives back now (a magnitude): its limit, and never below its minimum SoC."""
        s = self.spec
        reserve_wh = (self.soc - s.min_soc) * s.capacity_wh
        if reserve_wh <= 0:
            return 0.0
        return max(0.0, min(s.max_discharge_power_w, reserve_wh * 3600.0 / (DISCHARGE_MARGIN_INTERVALS * interval_s)))

    def discharge_current_a(self, interval_s: float) -> float:
        return min(self.spec.max_discharge_current_a, self.discharge_power_w(interval_s) / self.voltage_v())

    def energy_to_target_wh(self) -> float:
        return max(0.0, (self.spec.target_soc - self.soc) * self.spec.capacity_wh)

    def energy_to_full_wh(self) -> float:
        return max(0.0, (1.0 - self.soc) * self.spec.capacity_wh)

    def energy_above_min_wh(self) -> float:
        return max(0.0, (self.soc - self.spec.min_soc) * self.spec.capacity_wh)

    def soc_pct(self) -> int:
        return min(100, max(0, int(self.soc * 100.0)))


class EvContext:
    """The vehicle during a run: battery, power path, pilot, clock, configuration and the result."""

    def __init__(self, config: EvccConfig, clock: Clock, hooks: EvccHooks, wall_clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.hooks = hooks
        self.wall = wall_clock
        self.battery = Battery(config.ev)
        self.result = EvccResult(soc_start=self.battery.soc, soc_end=self.battery.soc)
        self.draw = NO_POWER
        self.pilot_state = "B"
        self.loop_time_s = 0.0  # time spent in charge loops, all sessions
        self.started = clock.monotonic()  # plug-in: the departure time counts from here
        self.setup_deadline = math.inf  # V2G_EVCC_CommunicationSetup_Timeout of the connection being set up
        self._since: float | None = None  # when the power in force began
        self._loop_entered: float | None = None

    # ------------------------------------------------------------------ records
    def record(self, exchange: Exchange) -> None:
        self.result.exchanges.append(exchange)
        if self.hooks.message is not None:
            self.hooks.message(exchange)

    def note(self, text: str) -> None:
        self.result.notes.append(text)

    # ------------------------------------------------------------------ pilot
    def pilot(self, state: str) -> None:
        if state == self.pilot_state:
            return
        self.pilot_state = state
        self.result.pilot.append((self.clock.monotonic(), state))
        if self.hooks.pilot is not None:
            self.hooks.pilot(state)

    async def pilot_after_delay(self, state: str) -> None:
        """The pilot switch the EV makes after PowerDeliveryRes(Start), within 250 ms ([V2G2-847])."""
        if self.config.pilot_delay_s > 0:
            await self.clock.sleep(self.config.pilot_delay_s)
        self.pilot(state)

    # ------------------------------------------------------------------ power path
    def power(self, draw: PowerDraw) -> None:
        """From now on the EV takes ``draw``: the energy of the power in force so far is stored first."""
        self.settle()
        if draw != self.draw:
            self.draw = draw
            if self.hooks.power is not None:
                self.hooks.power(draw)

    def settle(self) -> None:
        now = self.clock.monotonic()
        if self._since is not None:
            wh = self.battery.integrate(self.draw.power_w, now - self._since)
            if wh > 0:
                self.result.charged_wh += wh
            else:
                self.result.discharged_wh -= wh
        self._since = now
        self.result.soc_end = self.battery.soc

    def off(self) -> None:
        """No power, pilot back to B: where every session end and every failure leaves the EV."""
        self.power(NO_POWER)
        self.pilot("B")

    # ------------------------------------------------------------------ the charge loop's clock
    def loop_started(self) -> None:
        self._loop_entered = self.clock.monotonic()

    def loop_ended(self) -> None:
        if self._loop_entered is not None:
            self.loop_time_s += self.clock.monotonic() - self._loop_entered
            self._loop_entered = None

    def loop_elapsed_s(self) -> float:
        running = self.clock.monotonic() - self._loop_entered if self._loop_entered is not None else 0.0
        return self.loop_time_s + running

    def stop_reason(self, *, discharging: bool = False) -> str | None:
        """Why the EV ends the charge loop now, if it does: its target SoC (a BPT EV asked to discharge
        goes on), the charge time limit, or the pause it is configured to make."""
        c = self.config
        if self.battery.full() and not discharging:
            return "target SoC reached"
        if c.max_charge_s is not None and self.loop_elapsed_s() >= c.max_charge_s:
            return "charge time limit"
        if c.pause_after_s is not None and self.result.pauses == 0 and self.loop_elapsed_s() >= c.pause_after_s:
            return "pause"
        return None

    async def repeat(
        self,
        ask: Callable[[], Awaitable[dict[str, Any]]],
        done: Callable[[dict[str, Any]], bool],
        limit_s: float,
        what: str,
    ) -> dict[str, Any]:
        """Ask again, ``poll_interval_s`` apart, until ``done`` holds for the answer; EvccTimeoutError when
        ``limit_s`` would be over before the next try (the Ongoing / cable check / precharge timeouts)."""
        start = self.clock.monotonic()
        while True:
            res = await ask()
            if done(res):
                return res
            if self.clock.monotonic() - start + self.config.poll_interval_s > limit_s:
                raise EvccTimeoutError(f"{what} not done within {limit_s:g} s")
            await self.clock.sleep(self.config.poll_interval_s)


# ----------------------------------------------------------------------------------------- reading answers
def need(body: Any, *path: str) -> Any:
    """The value at ``path`` in an answer, or EvccProtocolError naming the path."""
    value = body
    for i, key in enumerate(path):
        if not isinstance(value, dict) or key not in value:
            raise EvccProtocolError(f"{'/'.join(path[: i + 1])} missing in the answer")
        value = value[key]
    return value


def dict_of(body: Any, *path: str) -> dict[str, Any]:
    """The structure at ``path`` in an answer, or EvccProtocolError."""
    value = need(body, *path)
    if not isinstance(value, dict):
        raise EvccProtocolError(f"{'/'.join(path)} is not a structure")
    return value


def items(value: Any) -> list[Any]:
    """A repeatable element as a list (the codec gives one occurrence as a list or a scalar)."""
    return value if isinstance(value, list) else [value]


def physical_of(body: Any, *path: str) -> float:
    try:
        return from_physical(need(body, *path), what="/".join(path))
    except WireValueError as exc:
        raise EvccProtocolError(str(exc)) from exc


def rational_of(body: Any, *path: str) -> float:
    try:
        value = from_rational(need(body, *path), what="/".join(path))
    except WireValueError as exc:
        raise EvccProtocolError(str(exc)) from exc
    if not math.isfinite(value):
        raise EvccProtocolError(f"{'/'.join(path)} is not a finite number")
    return value


def int_of(body: Any, *path: str) -> int:
    value = need(body, *path)
    if isinstance(value, bool) or not isinstance(value, int):
        raise EvccProtocolError(f"{'/'.join(path)} is not an integer ({value!r})")
    return value


def schedule_value(entries: list[tuple[float, float, float]], t: float) -> float | None:
    """The value of (start, end, value) intervals at ``t`` seconds; None outside them."""
    for start, end, value in entries:
        if start <= t < end:
            return value
    return None
