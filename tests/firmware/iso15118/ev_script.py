"""A minimal scripted EVCC on our codec for the SECC runner's tests: it plays a fixed sequence of requests.

Not the EV simulator (that is hil/models/evcc.py): no timing model, no battery; a :class:`Step` says which
request to send, what answer code to expect, whether to repeat it while the SECC answers Ongoing, and what
to do to the plant before sending it (the EV closing S2 after PowerDelivery(Start), ...). Scripts for a
DIN 70121 DC session, an ISO 15118-2 AC EIM session and an ISO 15118-20 AC session are below.

Two ways to the SECC: :class:`StreamLink` over a real TCP stream, and :func:`memory_pair` in memory (on
an injected clock, for tests in virtual time). Every exchange is logged with its round-trip time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from firmware.iso15118.exi import Namespace, codec
from firmware.iso15118.session.values import physical, rational
from firmware.iso15118.v2gtp import (
    EXI_PAYLOAD_TYPES,
    Message,
    V2gtpEofError,
    V2gtpTimeoutError,
    decode,
    encode,
    read_message,
)
from hal.clock import Clock, RealClock

NAMESPACE = {"din": Namespace.DIN, "iso2": Namespace.ISO2, "iso20": Namespace.ISO20_COMMON}
VERSIONS = {"din": (2, 0), "iso2": (2, 0), "iso20": (1, 0)}
#: What the scripted EV offers in SupportedAppProtocol: a -20 EV names its energy service's namespace; this
#: one can take either (AC first), so the SECC's port decides.
SAP_OFFERS = {
    "din": [(Namespace.DIN, 2, 0)],
    "iso2": [(Namespace.ISO2, 2, 0)],
    "iso20": [(Namespace.ISO20_AC, 1, 0), (Namespace.ISO20_DC, 1, 0)],
}
PAYLOAD = {Namespace.ISO20_COMMON: 0x8002, Namespace.ISO20_AC: 0x8003, Namespace.ISO20_DC: 0x8004}
GRAMMAR_OF_PAYLOAD = {pt: ns for ns, pt in PAYLOAD.items()}
EVCC_MAC = "0A0B0C0D0E0F"
EVCC_ID_20 = "WMIV1234567890ABCDEX"
MAX_PAYLOAD = 65536


class EvScriptError(AssertionError):
    """The SECC answered something the script did not expect (or nothing)."""


# ----------------------------------------------------------------------------------------- links
class FrameLink:
    """How the EV reaches the SECC: send one V2GTP message, receive one."""

    async def send(self, payload_type: int, payload: bytes) -> None:
        raise NotImplementedError

    async def receive(self, timeout_s: float) -> Message:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class StreamLink(FrameLink):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, payload_type: int, payload: bytes) -> None:
        self.writer.write(encode(payload_type, payload))
        await self.writer.drain()

    async def receive(self, timeout_s: float) -> Message:
        return await read_message(self.reader, max_payload=MAX_PAYLOAD, timeout_s=timeout_s)

    async def close(self) -> None:
        self.writer.close()
        try:
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()
        except (OSError, TimeoutError):
            self.writer.transport.abort()


_CLOSED = b""


class _End:
    """One end of an in-memory V2GTP pipe; frames are whole V2GTP messages, ``b""`` means closed."""

    def __init__(self, clock: Clock, name: str) -> None:
        self.clock = clock
        self.peer = name
        self.tls_version: str | None = None
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.other: _End | None = None
        self.closed = False
        self.sent: list[Message] = []

    @property
    def tls(self) -> bool:
        return self.tls_version is not None

    async def send(self, payload_type: int, payload: bytes) -> None:
        if self.closed:
            raise ConnectionError(f"{self.peer}: closed")
        assert self.other is not None
        self.sent.append(Message(payload_type, payload))
        self.other.inbox.put_nowait(encode(payload_type, payload))

    def send_raw(self, frame: bytes) -> None:
        """Bytes as they are (a broken header, garbage): for the runner's robustness tests."""
        assert self.other is not None
        self.other.inbox.put_nowait(frame)

    async def receive(self, timeout_s: float) -> Message:
        if self.closed:
            raise ConnectionError(f"{self.peer}: closed")
        getting = asyncio.ensure_future(self.inbox.get())
        timer = asyncio.ensure_future(self.clock.sleep(timeout_s))
        try:
            await asyncio.wait({getting, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not getting.done():
                getting.cancel()
        if not getting.done() or getting.cancelled():
            raise V2gtpTimeoutError(f"no message within {timeout_s} s", mid_message=False)
        frame = getting.result()
        if frame == _CLOSED:
            self.closed = True
            raise V2gtpEofError("the peer closed the stream between V2GTP messages")
        try:
            return decode(frame, max_payload=MAX_PAYLOAD, accept=EXI_PAYLOAD_TYPES)
        except Exception:
            self.closed = True  # as V2gConnection: a bad header closes the connection
            raise

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            assert self.other is not None
            self.other.inbox.put_nowait(_CLOSED)


class MemoryEnd(_End, FrameLink):
    pass


def memory_pair(clock: Clock) -> tuple[MemoryEnd, MemoryEnd]:
    """(SECC end, EV end) of an in-memory connection: the SECC end has the V2gConnection interface."""
    secc, ev = MemoryEnd(clock, "secc"), MemoryEnd(clock, "[fe80::ev]:50000")
    secc.other, ev.other = ev, secc
    secc.peer = "[fe80::ev]:50000"
    return secc, ev


# ----------------------------------------------------------------------------------------- the EV
@dataclass(frozen=True)
class Step:
    name: str  # the request element, e.g. "ChargingStatusReq"
    body: dict[str, Any] | Callable[[], dict[str, Any]] = field(default_factory=dict)
    expect: str = "OK"  # the answer's ResponseCode must start with this
    until: Callable[[dict[str, Any]], bool] | None = None  # repeat while the answer does not satisfy it
    repeat: int = 1  # send it this many times (at most this many with ``until``)
    interval_s: float = 0.0  # pause before each repetition
    before: Callable[[], Awaitable[None]] | None = None  # once, before the first send


@dataclass(frozen=True)
class Exchange:
    name: str
    code: str | None
    rtt_s: float
    response: dict[str, Any]


class ScriptedEv:
    """One EV speaking one protocol over a :class:`FrameLink`."""

    def __init__(
        self,
        link: FrameLink,
        protocol: str,
        *,
        clock: Clock | None = None,
        response_timeout_s: float = 5.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if protocol not in NAMESPACE:
            raise ValueError(f"protocol {protocol!r}: one of {', '.join(NAMESPACE)}")
        self.link = link
        self.protocol = protocol
        self.clock = clock or RealClock()
        self.timeout_s = response_timeout_s
        self.wall = wall_clock
        self.session_id = "00" * 8
        self.log: list[Exchange] = []

    async def sap(self, offers: Sequence[tuple[str, int, int]] | None = None) -> dict[str, Any]:
        """SupportedAppProtocolReq with ``offers`` ((namespace, major, minor), most preferred first)."""
        offers = offers or SAP_OFFERS[self.protocol]
        entries = [
            {
                "ProtocolNamespace": ns,
                "VersionNumberMajor": major,
                "VersionNumberMinor": minor,
                "SchemaID": i,
                "Priority": i,
            }
            for i, (ns, major, minor) in enumerate(offers, start=1)
        ]
        tree = {"supportedAppProtocolReq": {"AppProtocol": entries}}
        answer = await self._exchange(Namespace.SAP, tree, 0x8001)
        res = answer["supportedAppProtocolRes"]
        self.log.append(Exchange("supportedAppProtocolReq", res.get("ResponseCode"), self._last_rtt, res))
        return dict(res)

    async def request(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """One request; the answer's body (the response element's content)."""
        if self.protocol == "iso20":
            namespace = Namespace.ISO20_AC if name.startswith("AC_") else Namespace.ISO20_COMMON
            if name.startswith("DC_"):
                namespace = Namespace.ISO20_DC
            header = {"SessionID": self.session_id.upper(), "TimeStamp": int(self.wall())}
            answer = await self._exchange(namespace, {name: {"Header": header, **body}}, PAYLOAD[namespace])
            [(res_name, res)] = answer.items()
            session_id = res["Header"]["SessionID"]
        else:
            namespace = NAMESPACE[self.protocol]
            tree = {"V2G_Message": {"Header": {"SessionID": self.session_id.upper()}, "Body": {name: body}}}
            answer = await self._exchange(namespace, tree, 0x8001)
            [(res_name, res)] = answer["V2G_Message"]["Body"].items()
            session_id = answer["V2G_Message"]["Header"]["SessionID"]
        if res_name != name[:-3] + "Res":
            raise EvScriptError(f"{name} answered with {res_name}")
        if name == "SessionSetupReq":
            self.session_id = str(session_id).lower()
        self.log.append(Exchange(name, res.get("ResponseCode"), self._last_rtt, res))
        return dict(res)

    async def run(self, steps: Sequence[Step]) -> None:
        for step in steps:
            if step.before is not None:
                await step.before()
            for i in range(step.repeat):
                if i and step.interval_s:
                    await self.clock.sleep(step.interval_s)
                body = step.body() if callable(step.body) else step.body
                res = await self.request(step.name, body)
                code = str(res.get("ResponseCode"))
                if not code.startswith(step.expect):
                    raise EvScriptError(f"{step.name}: {code}, expected {step.expect}: {res}")
                if step.until is not None and step.until(res):
                    break
            else:
                if step.until is not None:
                    raise EvScriptError(f"{step.name}: still not done after {step.repeat} tries")

    def round_trips(self, name: str) -> list[float]:
        return [e.rtt_s for e in self.log if e.name == name]

    _last_rtt = 0.0

    async def _exchange(self, namespace: str, tree: dict[str, Any], payload_type: int) -> dict[str, Any]:
        payload = codec(namespace).encode(tree)
        started = time.perf_counter()
        await self.link.send(payload_type, payload)
        message = await self.link.receive(self.timeout_s)
        self._last_rtt = time.perf_counter() - started
        if self.protocol == "iso20" and namespace != Namespace.SAP:
            grammar = GRAMMAR_OF_PAYLOAD.get(message.payload_type)
            if grammar is None:
                raise EvScriptError(f"answer of payload type 0x{message.payload_type:04X}")
            return codec(grammar).decode(message.payload)
        if message.payload_type != 0x8001:
            raise EvScriptError(f"answer of payload type 0x{message.payload_type:04X}")
        return codec(namespace).decode(message.payload)


# ----------------------------------------------------------------------------------------- scripts
Hook = Callable[[], Awaitable[None]]


def _finished(res: dict[str, Any]) -> bool:
    return res.get("EVSEProcessing") == "Finished"


def _dc_status(soc: int = 50) -> dict[str, Any]:
    return {"EVReady": True, "EVErrorCode": "NO_ERROR", "EVRESSSOC": soc}


def din_dc_steps(*, loops: int = 10, ongoing_interval_s: float = 0.05) -> list[Step]:
    """A whole DIN 70121 DC session (EIM)."""
    return [
        Step("SessionSetupReq", {"EVCCID": EVCC_MAC}),
        Step("ServiceDiscoveryReq", {}),
        Step(
            "ServicePaymentSelectionReq",
            {
                "SelectedPaymentOption": "ExternalPayment",
                "SelectedServiceList": {"SelectedService": [{"ServiceID": 1}]},
            },
        ),
        Step("ContractAuthenticationReq", {}, until=_finished, repeat=100, interval_s=ongoing_interval_s),
        Step(
            "ChargeParameterDiscoveryReq",
            {
                "EVRequestedEnergyTransferType": "DC_extended",
                "DC_EVChargeParameter": {
                    "DC_EVStatus": _dc_status(),
                    "EVMaximumCurrentLimit": physical(200, "A"),
                    "EVMaximumPowerLimit": physical(90_000, "W"),
                    "EVMaximumVoltageLimit": physical(420, "V"),
                    "EVEnergyCapacity": physical(60_000, "Wh"),
                    "EVEnergyRequest": physical(30_000, "Wh"),
                    "FullSOC": 100,
                    "BulkSOC": 80,
                },
            },
            until=_finished,
            repeat=100,
            interval_s=ongoing_interval_s,
        ),
        Step(
            "CableCheckReq", {"DC_EVStatus": _dc_status()}, until=_finished, repeat=100, interval_s=ongoing_interval_s
        ),
        Step(
            "PreChargeReq",
            {"DC_EVStatus": _dc_status(), "EVTargetVoltage": physical(380, "V"), "EVTargetCurrent": physical(2, "A")},
            repeat=2,
        ),
        Step("PowerDeliveryReq", {"ReadyToChargeState": True}),
        Step(
            "CurrentDemandReq",
            {
                "DC_EVStatus": _dc_status(51),
                "EVTargetCurrent": physical(100, "A"),
                "ChargingComplete": False,
                "EVTargetVoltage": physical(390, "V"),
            },
            repeat=loops,
        ),
        Step("PowerDeliveryReq", {"ReadyToChargeState": False}),
        Step("WeldingDetectionReq", {"DC_EVStatus": _dc_status(80)}),
        Step("SessionStopReq", {}),
    ]


def iso2_ac_head(*, ongoing_interval_s: float = 0.05, ongoing_tries: int = 400) -> list[Step]:
    """An ISO 15118-2 AC EIM session up to its schedules (ChargeParameterDiscovery Finished)."""
    return [
        Step("SessionSetupReq", {"EVCCID": EVCC_MAC}),
        Step("ServiceDiscoveryReq", {}),
        Step(
            "PaymentServiceSelectionReq",
            {
                "SelectedPaymentOption": "ExternalPayment",
                "SelectedServiceList": {"SelectedService": [{"ServiceID": 1}]},
            },
        ),
        Step("AuthorizationReq", {}, until=_finished, repeat=ongoing_tries, interval_s=ongoing_interval_s),
        Step(
            "ChargeParameterDiscoveryReq",
            {
                "MaxEntriesSAScheduleTuple": 24,
                "RequestedEnergyTransferMode": "AC_three_phase_core",
                "AC_EVChargeParameter": {
                    "DepartureTime": 7_200,
                    "EAmount": physical(20_000, "Wh"),
                    "EVMaxVoltage": physical(400, "V"),
                    "EVMaxCurrent": physical(32, "A"),
                    "EVMinCurrent": physical(6, "A"),
                },
            },
            until=_finished,
            repeat=ongoing_tries,
            interval_s=ongoing_interval_s,
        ),
    ]


def iso2_ac_steps(
    *,
    loops: int = 10,
    loop_interval_s: float = 0.0,
    on_start: Hook | None = None,
    on_stop: Hook | None = None,
    stop: str = "Terminate",
    ongoing_interval_s: float = 0.05,
) -> list[Step]:
    """A whole ISO 15118-2 AC EIM session; ``on_start`` runs after PowerDelivery(Start) (the EV closes S2),
    ``on_stop`` after PowerDelivery(Stop)."""
    return [
        *iso2_ac_head(ongoing_interval_s=ongoing_interval_s),
        Step("PowerDeliveryReq", {"ChargeProgress": "Start", "SAScheduleTupleID": 1}),
        Step("ChargingStatusReq", {}, repeat=loops, interval_s=loop_interval_s, before=on_start),
        Step("PowerDeliveryReq", {"ChargeProgress": "Stop", "SAScheduleTupleID": 1}),
        Step("SessionStopReq", {"ChargingSession": stop}, before=on_stop),
    ]


def iso2_ac_resume_steps(*, loops: int = 3) -> list[Step]:
    """A paused ISO 15118-2 AC session joined again (SessionSetupReq with the old SessionID) to its end."""
    return [
        Step("SessionSetupReq", {"EVCCID": EVCC_MAC}, expect="OK_OldSessionJoined"),
        *iso2_ac_head()[1:],
        Step("PowerDeliveryReq", {"ChargeProgress": "Start", "SAScheduleTupleID": 1}),
        Step("ChargingStatusReq", {}, repeat=loops),
        Step("PowerDeliveryReq", {"ChargeProgress": "Stop", "SAScheduleTupleID": 1}),
        Step("SessionStopReq", {"ChargingSession": "Terminate"}),
    ]


def _r(value: float) -> dict[str, Any]:
    return rational(value)


def iso20_ac_steps(
    *,
    loops: int = 10,
    loop_interval_s: float = 0.0,
    on_start: Hook | None = None,
    on_stop: Hook | None = None,
    ongoing_interval_s: float = 0.05,
    wall_clock: Callable[[], float] = time.time,
) -> list[Step]:
    """A whole ISO 15118-20 AC session, scheduled control mode (parameter set 1), EIM."""
    return [
        Step("SessionSetupReq", {"EVCCID": EVCC_ID_20}),
        Step("AuthorizationSetupReq", {}),
        Step(
            "AuthorizationReq",
            {"SelectedAuthorizationService": "EIM", "EIM_AReqAuthorizationMode": {}},
            until=_finished,
            repeat=400,
            interval_s=ongoing_interval_s,
        ),
        Step("ServiceDiscoveryReq", {}),
        Step("ServiceDetailReq", {"ServiceID": 1}),
        Step("ServiceSelectionReq", {"SelectedEnergyTransferService": {"ServiceID": 1, "ParameterSetID": 1}}),
        Step(
            "AC_ChargeParameterDiscoveryReq",
            {"AC_CPDReqEnergyTransferMode": {"EVMaximumChargePower": _r(22_000), "EVMinimumChargePower": _r(1_400)}},
        ),
        Step(
            "ScheduleExchangeReq",
            {
                "MaximumSupportingPoints": 24,
                "Scheduled_SEReqControlMode": {"DepartureTime": 7_200, "EVTargetEnergyRequest": _r(20_000)},
            },
            until=_finished,
            repeat=100,
            interval_s=ongoing_interval_s,
        ),
        Step(
            "PowerDeliveryReq",
            lambda: {
                "EVProcessing": "Finished",
                "ChargeProgress": "Start",
                "EVPowerProfile": {
                    "TimeAnchor": int(wall_clock()),
                    "Scheduled_EVPPTControlMode": {"SelectedScheduleTupleID": 1},
                    "EVPowerProfileEntries": {"EVPowerProfileEntry": [{"Duration": 3_600, "Power": _r(11_000)}]},
                },
            },
        ),
        Step(
            "AC_ChargeLoopReq",
            {
                "MeterInfoRequested": True,
                "Scheduled_AC_CLReqControlMode": {
                    "EVMaximumChargePower": _r(22_000),
                    "EVPresentActivePower": _r(11_000),
                },
            },
            repeat=loops,
            interval_s=loop_interval_s,
            before=on_start,
        ),
        Step("PowerDeliveryReq", {"EVProcessing": "Finished", "ChargeProgress": "Stop"}),
        Step("SessionStopReq", {"ChargingSession": "Terminate"}, before=on_stop),
    ]
