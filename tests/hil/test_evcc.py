"""The simulated EVCC against the project's own SECC sessions: every request the EV makes is encoded with
our EXI codec, decoded, answered by DinSession / Iso2Session / Iso20Session over model ports, and the
answer goes back through the codec; in virtual time for the in-memory runs, in real time over TCP and
TLS on loopback (::1).

Covered: whole sessions for DIN DC, -2 AC and DC, -20 AC, DC, AC_BPT and DC_BPT in scheduled and dynamic
control mode; discharge under BPT down to (never below) the EV's minimum SoC; pause and resume with the
old SessionID; EVSE-initiated stops and renegotiations; the message, Ongoing and precharge timeouts;
SupportedAppProtocol priorities; pilot and power hooks; bad configuration; garbage from the SECC.
"""

from __future__ import annotations

import asyncio
import datetime
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.iso15118.config import SeccConfig
from firmware.iso15118.exi import Namespace, codec
from firmware.iso15118.sdp import SdpOffer, SdpServer
from firmware.iso15118.secc import Secc as FirmwareSecc
from firmware.iso15118.session.din import DinSession
from firmware.iso15118.session.iso2 import Iso2Session, PausedIso2Session
from firmware.iso15118.session.iso20 import Iso20Config, Iso20Session, PausedSession, Pricing
from firmware.iso15118.session.iso20_ac import AcPart
from firmware.iso15118.session.iso20_dc import DcDischargeLimits, DcDynamicDemand, DcPart, EvDcParameters20
from firmware.iso15118.session.port import (
    Authorisation,
    DcEvseStatus,
    DcLimits,
    DcOutput,
    DcTarget,
    EvDcParameters,
    EvDcStatus,
    EvseStatusCode,
    Isolation,
    Notification,
)
from firmware.iso15118.session.port_ac import (
    AcLimits,
    AcSetpoint,
    AcStatus,
    EvAcParameters,
    MeterInfo,
    PowerEntry,
    Schedule,
)
from firmware.iso15118.session.sap import SUPPORTED, Protocol, negotiate
from firmware.iso15118.transport import SeccServer, TlsFiles, TlsProfile, V2gConnection, link_local, tls_context
from firmware.iso15118.v2gtp import V2gtpEofError, V2gtpError, V2gtpTimeoutError, encode, read_message
from hal.clock import RealClock, VirtualClock
from hil.models.evcc import (
    Evcc,
    EvccConfig,
    EvccConfigError,
    EvccHooks,
    EvccResult,
    EvccTls,
    EvSpec,
    PowerDraw,
    Timeouts,
)
from hil.models.evcc_link import memory_pair
from hil.models.evcc_session import Battery, EvccConnectionError
from tests.netns import EV_IF, SECC_IF, run_in_netns

NOW = 1_700_000_000
SAP_PT, COMMON_PT, AC_PT, DC_PT = 0x8001, 0x8002, 0x8003, 0x8004
PT_OF = {Namespace.ISO20_COMMON: COMMON_PT, Namespace.ISO20_AC: AC_PT, Namespace.ISO20_DC: DC_PT}
NS_OF = {v: k for k, v in PT_OF.items()}
PROTOCOL_OF = {
    Namespace.DIN.value: "din",
    Namespace.ISO2.value: "iso2",
    Namespace.ISO20_AC.value: "iso20",
    Namespace.ISO20_DC.value: "iso20",
}


# ------------------------------------------------------------------------------------------ model ports
@dataclass
class DcPlant:
    """A DC charger as every DC session sees it (DIN, -2 and -20 ports at once): the cable check passes at
    the second call, precharge moves the output 200 V per request towards the target, the current follows
    the target within the limits; ``notify`` is shown in the answer to the ``notify_at``-th loop request
    (``sticky``: from then on)."""

    authorisation_answers: list[Authorisation] = field(default_factory=lambda: [Authorisation.ACCEPTED])
    limits_now: DcLimits = field(
        default_factory=lambda: DcLimits(
            max_current_a=125.0,
            max_power_w=50_000.0,
            max_voltage_v=500.0,
            min_current_a=0.0,
            min_voltage_v=150.0,
            peak_current_ripple_a=2.0,
        )
    )
    discharge_now: DcDischargeLimits = field(
        default_factory=lambda: DcDischargeLimits(max_power_w=7_000.0, max_current_a=20.0)
    )
    offers: list[Schedule] = field(
        default_factory=lambda: [Schedule(schedule_id=1, duration_s=86_400, power=(PowerEntry(0, 50_000.0),))]
    )
    dynamic_pick: str = "charge"
    notify: Notification = Notification.NONE
    notify_at: int | None = None
    sticky: bool = True
    precharge_step_v: float = 200.0
    voltage_v: float = 0.0
    closed: bool = False
    loops: int = 0
    checks: int = 0
    calls: list[str] = field(default_factory=list)
    targets: list[DcTarget] = field(default_factory=list)
    demands: list[DcDynamicDemand] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    @property
    def evse_id(self) -> str:
        return "DE*EVF*E67890"

    def authorisation(self) -> Authorisation:
        answers = self.authorisation_answers
        return answers.pop(0) if len(answers) > 1 else answers[0]

    def _notification(self) -> Notification:
        due = self.notify_at is not None and (
            self.loops >= self.notify_at if self.sticky else self.loops == self.notify_at
        )
        return self.notify if due else Notification.NONE

    def status(self) -> DcEvseStatus:
        return DcEvseStatus(EvseStatusCode.READY, Isolation.VALID if self.checks >= 2 else None, self._notification())

    def limits(self) -> DcLimits:
        return self.limits_now

    def ev_parameters(self, params: EvDcParameters) -> None:
        self.calls.append("ev_parameters")

    def ev_parameters_20(self, params: EvDcParameters20) -> None:
        self.calls.append("ev_parameters_20")

    def ev_status(self, status: EvDcStatus) -> None:
        pass

    def ev_departure(self, departure_in_s: int | None) -> None:
        pass

    def cable_check(self) -> Isolation:
        self.checks += 1
        self.calls.append("cable_check")
        return Isolation.VALID if self.checks >= 2 else Isolation.INVALID

    def precharge(self, target: DcTarget) -> DcOutput:
        step = min(self.precharge_step_v, abs(target.voltage_v - self.voltage_v))
        self.voltage_v += math.copysign(step, target.voltage_v - self.voltage_v)
        self.calls.append("precharge")
        return DcOutput(self.voltage_v, 0.0)

    def power_delivery(self, on: bool) -> bool:
        self.calls.append(f"power_delivery {on}")
        if on and self.voltage_v == 0.0:
            return False
        self.closed = on
        return True

    def current_demand(self, target: DcTarget) -> DcOutput:
        assert self.closed, "current demanded with the contactor open"
        self.loops += 1
        self.targets.append(target)
        limits = self.limits_now
        current = min(target.current_a, limits.max_current_a, limits.max_power_w / max(target.voltage_v, 1.0))
        self.voltage_v = target.voltage_v
        return DcOutput(self.voltage_v, current)

    def dynamic_demand(self, demand: DcDynamicDemand) -> DcOutput:
        assert self.closed, "current demanded with the contactor open"
        self.loops += 1
        self.demands.append(demand)
        volts = max(demand.present_voltage_v, 1.0)
        if self.dynamic_pick == "discharge":
            current = -min(demand.max_discharge_current_a, demand.max_discharge_power_w / volts)
        else:
            current = min(demand.max_current_a, demand.max_power_w / volts)
        return DcOutput(demand.present_voltage_v, current)

    def welding_detection(self) -> float:
        return 0.0 if not self.closed else self.voltage_v

    def schedules(self) -> list[Schedule]:
        return self.offers

    def meter(self) -> MeterInfo | None:
        return None

    def notice(self) -> None:
        return None

    def discharge_limits(self) -> DcDischargeLimits:
        return self.discharge_now

    def session_stopped(self, reason: str) -> None:
        self.stopped.append(reason)


@dataclass
class AcPlant:
    """An AC charger for -2 and -20: ``setpoint_w`` is the energy manager's target (None: none), the
    notification is scripted by charge loop count as for :class:`DcPlant`."""

    authorisation_answers: list[Authorisation] = field(default_factory=lambda: [Authorisation.ACCEPTED])
    limits_now: AcLimits = field(
        default_factory=lambda: AcLimits(
            nominal_voltage_v=230.0,
            max_current_a=32.0,
            min_current_a=6.0,
            phases=3,
            max_power_w=22_000.0,
            max_discharge_power_w=7_000.0,
        )
    )
    offers: list[Schedule] = field(
        default_factory=lambda: [Schedule(schedule_id=1, duration_s=86_400, power=(PowerEntry(0, 11_000.0),))]
    )
    setpoint_w: float | None = 7_000.0
    notify: Notification = Notification.NONE
    notify_at: int | None = None
    sticky: bool = True
    started: bool = False
    loops: int = 0
    calls: list[str] = field(default_factory=list)
    presents: list[float | None] = field(default_factory=list)
    socs: list[int] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    @property
    def evse_id(self) -> str:
        return "DE*EVF*E12345"

    def authorisation(self) -> Authorisation:
        answers = self.authorisation_answers
        return answers.pop(0) if len(answers) > 1 else answers[0]

    def status(self) -> AcStatus:
        due = self.notify_at is not None and (
            self.loops >= self.notify_at if self.sticky else self.loops == self.notify_at
        )
        return AcStatus(notification=self.notify if due else Notification.NONE)

    def limits(self) -> AcLimits:
        return self.limits_now

    def ev_parameters(self, params: EvAcParameters) -> None:
        self.calls.append("ev_parameters")

    def schedules(self) -> list[Schedule]:
        return self.offers

    def power_delivery(self, start: bool, schedule_id: int | None) -> bool:
        self.calls.append(f"power_delivery {start}")
        self.started = start
        return True

    def charge_loop(self, ev_present_power_w: float | None) -> AcSetpoint:
        assert self.started, "a charge loop with the power off"
        self.loops += 1
        self.presents.append(ev_present_power_w)
        return AcSetpoint(self.setpoint_w, present_power_w=ev_present_power_w or 0.0)

    def meter(self) -> MeterInfo | None:
        return MeterInfo("MTR1", 1234.0)

    def notice(self) -> None:
        return None

    def ev_soc(self, soc_pct: int) -> None:
        self.socs.append(soc_pct)

    def session_stopped(self, reason: str) -> None:
        self.stopped.append(reason)


# ------------------------------------------------------------------------------------------ the SECC side
@dataclass
class Connection:
    """One EV connection to the SECC: the protocol SupportedAppProtocol chose and its session."""

    protocol: str | None = None
    session: Any = None


class Secc:
    """Our SECC sessions behind our codec: SupportedAppProtocol, then DinSession / Iso2Session /
    Iso20Session (over ``dc`` or ``ac``). A paused session is kept for the next connection to join."""

    def __init__(
        self,
        *,
        dc: DcPlant | None = None,
        ac: AcPlant | None = None,
        supported: tuple[Protocol, ...] = SUPPORTED,
        iso20: Iso20Config | None = None,
    ) -> None:
        self.dc, self.ac, self.supported = dc, ac, supported
        self.iso20 = iso20 or Iso20Config(bidirectional=True, pricing=Pricing.NONE)
        self.paused2: PausedIso2Session | None = None
        self.paused20: PausedSession | None = None
        self.sessions: list[Any] = []
        self.requests: list[str] = []
        self.arrivals: list[tuple[str, float]] = []  # (request, clock time) as the in-memory channel got them

    def new_session(self, protocol: str) -> Any:
        if protocol == "din":
            assert self.dc is not None
            session: Any = DinSession(self.dc)
        elif protocol == "iso2":
            session = Iso2Session(dc=self.dc, ac=self.ac, resume=self.paused2, wall_clock=lambda: NOW)
        else:
            part: Any = DcPart(self.dc) if self.dc is not None else AcPart(self.ac)  # type: ignore[arg-type]
            session = Iso20Session(part, self.iso20, resume=self.paused20, wall_clock=lambda: NOW)
        self.sessions.append(session)
        return session

    def dispatch(self, conn: Connection, payload_type: int, payload: bytes) -> tuple[int, bytes]:
        if conn.protocol is None:
            assert payload_type == SAP_PT
            sap = codec(Namespace.SAP)
            tree = sap.decode(payload)
            self.requests.append("supportedAppProtocolReq")
            negotiated = negotiate(tree, self.supported)
            if negotiated.protocol is not None:
                conn.protocol = PROTOCOL_OF[negotiated.protocol.namespace]
                conn.session = self.new_session(conn.protocol)
            return SAP_PT, sap.encode(negotiated.response)
        if conn.protocol in ("din", "iso2"):
            grammar = codec(Namespace.DIN if conn.protocol == "din" else Namespace.ISO2)
            tree = grammar.decode(payload)
            self.requests.extend(tree["V2G_Message"]["Body"])
            return payload_type, grammar.encode(conn.session.handle(tree))
        namespace = NS_OF[payload_type]
        tree = codec(namespace).decode(payload)
        self.requests.extend(tree)
        out_ns, answer = conn.session.handle(tree, namespace)
        return PT_OF[Namespace(out_ns)], codec(out_ns).encode(answer)

    def closed(self, conn: Connection) -> None:
        session = conn.session
        if isinstance(session, Iso2Session) and session.paused is not None:
            self.paused2 = session.paused
        if isinstance(session, Iso20Session) and session.paused is not None:
            self.paused20 = session.paused


class MemoryChannel:
    """An in-memory connection to :class:`Secc`; ``delays`` hold back the answer to a request by name (on
    the virtual clock; infinite: never answered), ``garbage`` replaces the answer to ``garbage_for``
    (None: every answer)."""

    tls_version = None

    def __init__(
        self,
        secc: Secc,
        clock: VirtualClock,
        delays: dict[str, float] | None = None,
        garbage: bytes | None = None,
        garbage_for: str | None = None,
    ) -> None:
        self.secc, self.clock, self.delays = secc, clock, delays or {}
        self.garbage, self.garbage_for = garbage, garbage_for
        self.conn = Connection()
        self.inbox: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        self.tasks: list[asyncio.Task[None]] = []

    async def send(self, payload_type: int, payload: bytes) -> None:
        before = len(self.secc.requests)
        reply = self.secc.dispatch(self.conn, payload_type, payload)
        name = self.secc.requests[before] if len(self.secc.requests) > before else ""
        self.secc.arrivals.append((name, self.clock.monotonic()))
        if self.garbage is not None and self.garbage_for in (None, name):
            reply = (reply[0], self.garbage)
        delay = self.delays.get(name)
        if delay is None:
            self.inbox.put_nowait(reply)
        elif math.isfinite(delay):
            self.tasks.append(asyncio.ensure_future(self._later(delay, reply)))

    async def _later(self, delay: float, reply: tuple[int, bytes]) -> None:
        await self.clock.sleep(delay)
        self.inbox.put_nowait(reply)

    async def receive(self) -> tuple[int, bytes]:
        return await self.inbox.get()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.secc.closed(self.conn)


def connector(secc: Secc, clock: VirtualClock, **kw: Any) -> Callable[[], Awaitable[MemoryChannel]]:
    async def connect() -> MemoryChannel:
        return MemoryChannel(secc, clock, **kw)

    return connect


async def drive(clock: VirtualClock, work: Awaitable[EvccResult], *, limit_s: float = 300.0) -> EvccResult:
    """Run ``work`` while moving virtual time on in 50 ms steps (bounded)."""
    task = asyncio.ensure_future(work)
    waited = 0.0
    while not task.done():
        await clock.advance(0.05)
        waited += 0.05
        assert waited < limit_s, "the EV did not finish in virtual time"
    return task.result()


def run_virtual(config: EvccConfig, secc: Secc, hooks: EvccHooks | None = None, **kw: Any) -> tuple[EvccResult, float]:
    """Run one plug-in in virtual time; returns the result and the virtual time it took."""

    async def main() -> tuple[EvccResult, float]:
        clock = VirtualClock()
        evcc = Evcc(config, clock=clock, hooks=hooks, wall_clock=lambda: NOW)
        result = await drive(clock, evcc.run(connector(secc, clock, **kw)))
        return result, clock.monotonic()

    return asyncio.run(main())


def small_ev(**changes: Any) -> EvSpec:
    """A 1 kWh battery at 50 %, target 52 %: a whole session in a few seconds of virtual time."""
    base = {"battery_kwh": 1.0, "soc": 0.5, "target_soc": 0.52, "min_soc": 0.2}
    return EvSpec(**{**base, **changes})


def collapsed(names: list[str]) -> list[str]:
    """Consecutive repeats folded: the shape of the sequence."""
    return [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n]


SEQUENCES = {
    "din": [
        "supportedAppProtocolReq",
        "SessionSetupReq",
        "ServiceDiscoveryReq",
        "ServicePaymentSelectionReq",
        "ContractAuthenticationReq",
        "ChargeParameterDiscoveryReq",
        "CableCheckReq",
        "PreChargeReq",
        "PowerDeliveryReq",
        "CurrentDemandReq",
        "PowerDeliveryReq",
        "WeldingDetectionReq",
        "SessionStopReq",
    ],
    "iso2-AC": [
        "supportedAppProtocolReq",
        "SessionSetupReq",
        "ServiceDiscoveryReq",
        "PaymentServiceSelectionReq",
        "AuthorizationReq",
        "ChargeParameterDiscoveryReq",
        "PowerDeliveryReq",
        "ChargingStatusReq",
        "PowerDeliveryReq",
        "SessionStopReq",
    ],
    "iso2-DC": [
        "supportedAppProtocolReq",
        "SessionSetupReq",
        "ServiceDiscoveryReq",
        "PaymentServiceSelectionReq",
        "AuthorizationReq",
        "ChargeParameterDiscoveryReq",
        "CableCheckReq",
        "PreChargeReq",
        "PowerDeliveryReq",
        "CurrentDemandReq",
        "PowerDeliveryReq",
        "WeldingDetectionReq",
        "SessionStopReq",
    ],
    "iso20-AC": [
        "supportedAppProtocolReq",
        "SessionSetupReq",
        "AuthorizationSetupReq",
        "AuthorizationReq",
        "ServiceDiscoveryReq",
        "ServiceDetailReq",
        "ServiceSelectionReq",
        "AC_ChargeParameterDiscoveryReq",
        "ScheduleExchangeReq",
        "PowerDeliveryReq",
        "AC_ChargeLoopReq",
        "PowerDeliveryReq",
        "SessionStopReq",
    ],
    "iso20-DC": [
        "supportedAppProtocolReq",
        "SessionSetupReq",
        "AuthorizationSetupReq",
        "AuthorizationReq",
        "ServiceDiscoveryReq",
        "ServiceDetailReq",
        "ServiceSelectionReq",
        "DC_ChargeParameterDiscoveryReq",
        "ScheduleExchangeReq",
        "DC_CableCheckReq",
        "DC_PreChargeReq",
        "PowerDeliveryReq",
        "DC_ChargeLoopReq",
        "PowerDeliveryReq",
        "DC_WeldingDetectionReq",
        "SessionStopReq",
    ],
}


@dataclass(frozen=True)
class Flavour:
    protocol: str
    energy: str
    mode: str = "scheduled"

    @property
    def sequence(self) -> list[str]:
        return SEQUENCES["din" if self.protocol == "din" else f"{self.protocol}-{self.energy[:2]}"]

    def __str__(self) -> str:
        return (
            f"{self.protocol}-{self.energy}-{self.mode}"
            if self.protocol == "iso20"
            else f"{self.protocol}-{self.energy}"
        )


FLAVOURS = [
    Flavour("din", "DC"),
    Flavour("iso2", "AC"),
    Flavour("iso2", "DC"),
    *[Flavour("iso20", e, m) for e in ("AC", "DC", "AC_BPT", "DC_BPT") for m in ("scheduled", "dynamic")],
]


def secc_for(f: Flavour, **plant: Any) -> tuple[Secc, Any]:
    model: Any = AcPlant(**plant) if f.energy.startswith("AC") else DcPlant(**plant)
    supported = tuple(p for p in SUPPORTED if PROTOCOL_OF[p.namespace] == f.protocol)
    secc = Secc(ac=model, supported=supported) if isinstance(model, AcPlant) else Secc(dc=model, supported=supported)
    return secc, model


def config_for(f: Flavour, **changes: Any) -> EvccConfig:
    return EvccConfig(
        **{"ev": small_ev(), "protocols": (f.protocol,), "energy": f.energy, "control_mode": f.mode, **changes}
    )


def time_of(result: EvccResult, request: str, nth: int = 0) -> tuple[float, float]:
    """(sent, answered) clock times of the ``nth`` exchange of ``request``."""
    found = [e for e in result.exchanges if e.request == request][nth]
    return found.t, found.t + found.elapsed_s


# ------------------------------------------------------------------------------------------ whole sessions
@pytest.mark.parametrize("f", FLAVOURS, ids=str)
def test_a_whole_session_to_the_target_soc(f: Flavour) -> None:
    secc, model = secc_for(f)
    pilots: list[str] = []
    draws: list[PowerDraw] = []
    hooks = EvccHooks(pilot=pilots.append, power=draws.append)
    result, _ = run_virtual(config_for(f), secc, hooks)

    assert result.ok, result.error
    assert result.error is None and result.stop_reason == "target SoC reached"
    assert result.protocol == f.protocol
    assert collapsed(result.requests()) == f.sequence == collapsed(secc.requests)
    assert all(not (e.code or "").startswith("FAILED") for e in result.exchanges)
    [session] = secc.sessions
    assert session.state == "Stopped" and session.stop_reason.startswith("SessionStop")
    # The battery reached its target, and the energy the EV counted is what moved its SoC.
    assert 0.52 <= result.soc_end < 0.53
    assert result.charged_wh == pytest.approx((result.soc_end - result.soc_start) * 1000.0, rel=1e-9)
    assert result.discharged_wh == 0.0
    assert pilots == ["C", "B"] and [s for _, s in result.pilot] == ["C", "B"]
    assert draws[-1] == PowerDraw(0.0, 0.0, 0, 0.0) and any(d.power_w > 0 for d in draws)
    if f.protocol == "iso20":
        assert result.service == f.energy and result.control_mode == f.mode
    if f.energy.startswith("AC"):
        # B -> C within 250 ms of the PowerDeliveryRes(Start) ([V2G2-847]), C -> B after PowerDelivery(Stop).
        _, started = time_of(result, "PowerDeliveryReq", 0)
        _, stopped = time_of(result, "PowerDeliveryReq", 1)
        (t_c, _), (t_b, _) = result.pilot
        assert 0.0 <= t_c - started <= 0.25 and t_b >= stopped
        assert all(d.phases == 3 and d.current_a <= 16.0 + 1e-9 for d in draws if d.power_w > 0)
    else:
        # C before the first CableCheckReq ([V2G-DC-547], [V2G20-1418]).
        check = "CableCheckReq" if f.protocol != "iso20" else "DC_CableCheckReq"
        assert result.pilot[0][0] <= time_of(result, check)[0]
        assert model.calls.count("precharge") >= 2  # the EV waited for the output to come within 20 V
        assert model.closed is False


def test_the_dc_ev_asks_for_what_its_battery_takes_within_the_evse_limits() -> None:
    secc, model = secc_for(Flavour("iso2", "DC"))
    model.limits_now = replace(model.limits_now, max_current_a=60.0)
    result, _ = run_virtual(config_for(Flavour("iso2", "DC")), secc)
    assert result.ok, result.error
    assert model.targets and all(0 < t.current_a <= 60.0 for t in model.targets)
    assert all(t.voltage_v == pytest.approx(330 + 80 * 0.5, abs=2.0) for t in model.targets)


def test_a_lower_ac_setpoint_is_followed_and_the_ev_reports_what_it_draws() -> None:
    f = Flavour("iso20", "AC", "dynamic")
    secc, model = secc_for(f, setpoint_w=4_600.0)
    draws: list[PowerDraw] = []
    result, _ = run_virtual(config_for(f), secc, EvccHooks(power=draws.append))
    assert result.ok, result.error
    charging = [d for d in draws if d.power_w > 0]
    assert charging and all(d.power_w == pytest.approx(4_600.0) for d in charging)
    assert charging[0].current_a == pytest.approx(4_600.0 / 230.0 / 3)
    # EVPresentActivePower: 0 before the first answer, then what the EV draws.
    assert model.presents[0] == 0.0 and model.presents[1] == pytest.approx(4_600.0)


def test_a_three_phase_ev_at_a_single_phase_iso2_evse_charges_on_one_phase() -> None:
    f = Flavour("iso2", "AC")
    secc, model = secc_for(f, setpoint_w=None)
    model.limits_now = replace(model.limits_now, phases=1)
    draws: list[PowerDraw] = []
    result, _ = run_virtual(config_for(f), secc, EvccHooks(power=draws.append))
    assert result.ok, result.error
    assert result.service == "AC_single_phase_core"
    charging = [d for d in draws if d.power_w > 0]
    assert charging and all(d.phases == 1 and d.current_a == pytest.approx(16.0) for d in charging)


# ------------------------------------------------------------------------------------------ BPT
@pytest.mark.parametrize(
    ("f", "plant"),
    [
        (Flavour("iso20", "AC_BPT", "dynamic"), {"setpoint_w": -5_000.0}),
        (Flavour("iso20", "AC_BPT", "scheduled"), {"setpoint_w": -5_000.0}),
        (Flavour("iso20", "DC_BPT", "dynamic"), {"dynamic_pick": "discharge"}),
        (
            Flavour("iso20", "DC_BPT", "scheduled"),
            {"offers": [Schedule(schedule_id=1, duration_s=86_400, power=(PowerEntry(0, -5_000.0),))]},
        ),
    ],
    ids=str,
)
def test_bpt_discharges_as_the_evse_asks_but_never_below_the_minimum_soc(f: Flavour, plant: dict[str, Any]) -> None:
    secc, _ = secc_for(f, **plant)
    ev = small_ev(soc=0.205, target_soc=0.8, min_soc=0.2)  # 5 Wh above the minimum
    result, elapsed = run_virtual(config_for(f, ev=ev, max_charge_s=6.0), secc)
    assert result.ok, result.error
    assert result.stop_reason == "charge time limit"
    assert result.discharged_wh > 4.0 and result.charged_wh == 0.0
    assert result.soc_end >= 0.2 - 1e-12
    assert result.soc_end == pytest.approx(0.2, abs=0.001)
    assert elapsed > 6.0


def test_a_bpt_ev_at_an_evse_without_bpt_charges_with_the_plain_service() -> None:
    f = Flavour("iso20", "DC_BPT", "dynamic")
    secc, _ = secc_for(f)
    secc.iso20 = Iso20Config(bidirectional=False)
    result, _ = run_virtual(config_for(f), secc)
    assert result.ok, result.error
    assert result.service == "DC" and any("charging with DC" in n for n in result.notes)


@settings(max_examples=200, deadline=None)
@given(
    soc=st.floats(0.0, 1.0),
    min_soc=st.floats(0.0, 1.0),
    asks=st.lists(st.tuples(st.floats(-50_000, 50_000), st.floats(0.0, 1.0)), max_size=60),
)
def test_the_battery_never_goes_below_its_minimum_when_the_ev_keeps_its_own_limits(
    soc: float, min_soc: float, asks: list[tuple[float, float]]
) -> None:
    """Whatever the EVSE asks, a power within the EV's announced limits, held up to two loop intervals,
    never takes the battery below its minimum SoC (or above full)."""
    interval = 0.25
    battery = Battery(EvSpec(battery_kwh=1.0, soc=soc, min_soc=min(min_soc, soc), target_soc=max(min_soc, soc)))
    floor = min(battery.spec.min_soc, soc)
    for asked, share in asks:
        power = min(max(asked, -battery.discharge_power_w(interval)), battery.charge_power_w())
        battery.integrate(power, 2 * interval * share)
        assert floor - 1e-12 <= battery.soc <= 1.0


# ------------------------------------------------------------------------------------------ pause / resume
@pytest.mark.parametrize(
    "f",
    [Flavour("iso2", "DC"), Flavour("iso2", "AC"), Flavour("iso20", "AC", "dynamic"), Flavour("iso20", "DC_BPT")],
    ids=str,
)
def test_pause_and_resume_with_the_old_session_id(f: Flavour) -> None:
    secc, _ = secc_for(f)
    config = config_for(f, ev=small_ev(target_soc=0.54), pause_after_s=1.0, resume_after_s=5.0)
    result, _ = run_virtual(config, secc)
    assert result.ok, result.error
    assert result.pauses == 1 and result.joined == 1 and result.stop_reason == "target SoC reached"
    first, second = secc.sessions
    assert first.state == "Paused" and second.state == "Stopped"
    assert first.session_id == second.session_id == result.session_id
    setups = [e for e in result.exchanges if e.request == "SessionSetupReq"]
    assert [e.code for e in setups] == ["OK_NewSessionEstablished", "OK_OldSessionJoined"]
    assert [s for _, s in result.pilot] == ["C", "B", "C", "B"]
    # Nothing flowed during the pause (5 s): the SoC did not move between the two sessions.
    (t_pause, _), (t_back, _) = result.pilot[1], result.pilot[2]
    assert t_back - t_pause >= 5.0
    assert 0.54 <= result.soc_end < 0.55
    if f.protocol == "iso20":  # the joined -20 session goes straight to ChargeParameterDiscovery
        after = result.requests()[result.requests().index("SessionSetupReq", 3) + 1]
        assert after.endswith("ChargeParameterDiscoveryReq")


def test_an_ev_pauses_only_where_the_protocol_can() -> None:
    with pytest.raises(EvccConfigError, match="pause_after_s"):
        EvccConfig(protocols=("din",), pause_after_s=1.0)
    f = Flavour("din", "DC")
    secc, _ = secc_for(f)
    result, _ = run_virtual(config_for(f, protocols=("iso2", "din"), pause_after_s=0.5), secc)
    assert result.ok and result.pauses == 0 and result.stop_reason == "pause not available in DIN 70121"


# ------------------------------------------------------------------------------------------ EVSE-initiated
@pytest.mark.parametrize(
    ("f", "reason"),
    [
        (Flavour("din", "DC"), "EVSE StopCharging"),
        (Flavour("iso2", "AC"), "EVSE StopCharging"),
        (Flavour("iso20", "AC"), "EVSE Terminate"),
        (Flavour("iso20", "DC", "dynamic"), "EVSE Terminate"),
    ],
    ids=str,
)
def test_an_evse_initiated_stop_ends_the_session_regularly(f: Flavour, reason: str) -> None:
    secc, model = secc_for(f, notify=Notification.STOP, notify_at=3)
    result, _ = run_virtual(config_for(f, ev=small_ev(target_soc=0.9)), secc)
    assert result.ok, result.error
    assert result.stop_reason == reason and result.soc_end < 0.9
    assert model.loops == 3
    assert collapsed(result.requests()) == f.sequence
    assert secc.sessions[0].state == "Stopped"


@pytest.mark.parametrize(
    ("f", "again"),
    [(Flavour("iso2", "AC"), "ChargeParameterDiscoveryReq"), (Flavour("iso20", "DC"), "ScheduleExchangeReq")],
    ids=str,
)
def test_a_renegotiation_asked_by_the_evse_is_followed(f: Flavour, again: str) -> None:
    secc, _ = secc_for(f, notify=Notification.RENEGOTIATE, notify_at=2, sticky=False)
    result, _ = run_virtual(config_for(f), secc)
    assert result.ok, result.error
    assert result.requests().count(again) == 2 and result.stop_reason == "target SoC reached"
    assert result.requests().count("PowerDeliveryReq") == 4  # Start, renegotiate, Start, Stop


# ------------------------------------------------------------------------------------------ timeouts
@pytest.mark.parametrize(
    ("f", "late", "limit"),
    [
        (Flavour("din", "DC"), "CurrentDemandReq", 0.25),
        (Flavour("iso2", "AC"), "PowerDeliveryReq", 5.0),
        (Flavour("iso20", "DC"), "DC_ChargeLoopReq", 0.5),
        (Flavour("iso20", "AC"), "SessionSetupReq", 2.0),
    ],
    ids=lambda v: str(v),
)
def test_an_answer_later_than_the_message_timeout_ends_the_run_safely(f: Flavour, late: str, limit: float) -> None:
    secc, _ = secc_for(f)
    pilots: list[str] = []
    draws: list[PowerDraw] = []
    result, elapsed = run_virtual(
        config_for(f), secc, EvccHooks(pilot=pilots.append, power=draws.append), delays={late: limit + 0.05}
    )
    assert not result.ok
    assert result.error is not None and "EvccTimeoutError" in result.error
    assert f"within {limit:g} s" in result.error and late[:-3] + "Res" in result.error
    assert pilots[-1:] in ([], ["B"]) and (not draws or draws[-1].power_w == 0.0)
    sent = [t for name, t in secc.arrivals if name == late][-1]
    assert elapsed == pytest.approx(sent + limit, abs=0.051)


def test_a_slower_answer_within_the_timeout_is_fine() -> None:
    f = Flavour("iso2", "AC")
    secc, _ = secc_for(f)
    result, _ = run_virtual(config_for(f), secc, delays={"PowerDeliveryReq": 4.5})
    assert result.ok, result.error
    durations = [e.elapsed_s for e in result.exchanges if e.request == "PowerDeliveryReq"]
    assert durations == [pytest.approx(4.5, abs=0.051)] * 2


def test_ongoing_authorisation_is_given_up_after_the_ongoing_timeout() -> None:
    f = Flavour("iso2", "DC")
    secc, _ = secc_for(f, authorisation_answers=[Authorisation.PENDING])
    result, elapsed = run_virtual(config_for(f), secc)
    assert result.error is not None and "Authorization not done within 60 s" in result.error
    assert 59.5 <= elapsed <= 60.2
    assert result.requests().count("AuthorizationReq") == 241  # every 0.25 s from 0 to 60 s


def test_a_precharge_that_never_gets_close_times_out() -> None:
    f = Flavour("din", "DC")
    secc, _ = secc_for(f, precharge_step_v=1.0)
    result, _ = run_virtual(config_for(f), secc)
    assert result.error is not None and "PreCharge not done within 7 s" in result.error
    assert result.pilot[-1][1] == "B"


def test_the_message_timeouts_can_be_overridden_for_a_slow_bench() -> None:
    f = Flavour("din", "DC")
    secc, _ = secc_for(f)
    timeouts = Timeouts(responses={"CurrentDemandReq": 1.0})
    result, _ = run_virtual(config_for(f, timeouts=timeouts), secc, delays={"CurrentDemandReq": 0.5})
    assert result.ok, result.error


# ------------------------------------------------------------------------------------------ negotiation
@pytest.mark.parametrize(
    ("offered", "supported", "chosen"),
    [
        (("iso20", "iso2", "din"), ("iso2", "din"), "iso2"),
        (("din", "iso2"), ("iso2", "din"), "din"),
        (("iso2", "din"), ("din",), "din"),
    ],
)
def test_supported_app_protocol_offers_by_priority(
    offered: tuple[str, ...], supported: tuple[str, ...], chosen: str
) -> None:
    secc = Secc(dc=DcPlant(), supported=tuple(p for p in SUPPORTED if PROTOCOL_OF[p.namespace] in supported))
    result, _ = run_virtual(EvccConfig(ev=small_ev(), protocols=offered, energy="DC"), secc)
    assert result.ok, result.error
    assert result.protocol == chosen


def test_no_common_protocol_is_a_clean_failure() -> None:
    secc = Secc(dc=DcPlant(), supported=tuple(p for p in SUPPORTED if p.namespace == Namespace.DIN))
    result, _ = run_virtual(EvccConfig(ev=small_ev(), protocols=("iso20",)), secc)
    assert result.error == "EvccSessionError: SupportedAppProtocol answered Failed_NoNegotiation"
    assert result.requests() == ["supportedAppProtocolReq"]


def test_a_failed_answer_ends_the_run_with_its_code() -> None:
    f = Flavour("iso2", "AC")
    secc, _ = secc_for(f, authorisation_answers=[Authorisation.REJECTED])
    result, _ = run_virtual(config_for(f), secc)
    assert result.error == "EvccSessionError: AuthorizationReq answered FAILED"
    assert result.exchanges[-1].code == "FAILED"


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_from_the_secc_gives_a_clean_error(garbage: bytes) -> None:
    secc = Secc(dc=DcPlant())
    result, _ = run_virtual(EvccConfig(ev=small_ev()), secc, garbage=garbage)
    assert not result.ok and result.error is not None
    assert result.error.split(":")[0] in {"EvccProtocolError", "EvccSessionError", "EvccTimeoutError"}


@settings(max_examples=150, deadline=None)
@given(late=st.sampled_from(SEQUENCES["iso2-DC"][1:]), garbage=st.binary(max_size=48))
def test_a_garbled_answer_anywhere_in_the_session_gives_a_clean_error_and_a_safe_ev(late: str, garbage: bytes) -> None:
    """A stream that starts like EXI (header 0x80) gets the decoder past its first check: whatever it
    decodes to, the EV ends with a named error, no power and its pilot at B."""
    secc, _ = secc_for(Flavour("iso2", "DC"))
    draws: list[PowerDraw] = []
    result, _ = run_virtual(
        config_for(Flavour("iso2", "DC")),
        secc,
        EvccHooks(power=draws.append),
        garbage=b"\x80" + garbage,
        garbage_for=late,
    )
    assert not result.ok and result.error is not None, late
    assert result.error.split(":")[0] in {"EvccProtocolError", "EvccSessionError", "EvccTimeoutError"}
    assert not result.error.startswith("EvccProtocolError: unexpected")  # the EV's own checks, not the safety net
    assert not draws or draws[-1].power_w == 0.0
    assert not result.pilot or result.pilot[-1][1] == "B"


# ------------------------------------------------------------------------------------------ configuration
@pytest.mark.parametrize(
    ("build", "field_name"),
    [
        (lambda: EvSpec(battery_kwh=0.0), "battery_kwh"),
        (lambda: EvSpec(soc=1.5), "soc"),
        (lambda: EvSpec(min_soc=0.9, target_soc=0.8), "min_soc"),
        (lambda: EvSpec(ac_phases=2), "ac_phases"),
        (lambda: EvSpec(mac=b"\x01"), "mac"),
        (lambda: EvSpec(empty_voltage_v=500.0), "full_voltage_v"),
        (lambda: EvccConfig(protocols=("iso15118-99",)), "protocols"),
        (lambda: EvccConfig(protocols=()), "protocols"),
        (lambda: EvccConfig(energy="AC_DC"), "energy"),
        (lambda: EvccConfig(protocols=("din",), energy="AC"), "energy"),
        (lambda: EvccConfig(control_mode="manual"), "control_mode"),
        (lambda: EvccConfig(pilot_delay_s=0.3), "pilot_delay_s"),
        (lambda: EvccConfig(loop_interval_s=0.0), "loop_interval_s"),
        (lambda: EvccConfig(evcc_id=""), "evcc_id"),
        (lambda: Timeouts(responses={"CurrentDemandReq": -1.0}), "CurrentDemandReq"),
        (lambda: EvccTls(), "trust_anchors"),
    ],
)
def test_a_bad_configuration_names_the_field(build: Callable[[], object], field_name: str) -> None:
    with pytest.raises(EvccConfigError, match=field_name):
        build()


# ------------------------------------------------------------------------------------------ the firmware's runner
@pytest.mark.parametrize(
    ("f", "pause"),
    [
        (Flavour("din", "DC"), False),
        (Flavour("iso2", "AC"), False),
        (Flavour("iso2", "DC"), True),
        (Flavour("iso20", "DC", "dynamic"), False),
        (Flavour("iso20", "AC"), True),
    ],
    ids=str,
)
def test_the_ev_against_the_firmware_secc_runner_over_an_in_memory_link(f: Flavour, pause: bool) -> None:
    """How the HIL rig runs an ISO 15118 EV in virtual time: the firmware's SECC runner serves each
    connection the EV opens through :func:`memory_pair`, V2GTP frames and all."""

    async def main() -> tuple[EvccResult, list[Any]]:
        clock = VirtualClock()
        plant: Any = AcPlant() if f.energy == "AC" else DcPlant()
        port = {"ac_port": plant} if f.energy == "AC" else {"dc_port": plant}
        config = SeccConfig(interface="sim0", evse_id="DE*EVF*E67890", iso20_require_tls=False)
        secc = FirmwareSecc(config, clock=clock, wall_clock=lambda: NOW, **port)
        served: list[asyncio.Future[None]] = []

        async def connect() -> Any:
            ev_end, secc_end = memory_pair(clock)
            served.append(asyncio.ensure_future(secc.serve(secc_end)))
            return ev_end

        ev = small_ev(target_soc=0.54)
        evcc_config = config_for(f, ev=ev, pause_after_s=1.0, resume_after_s=3.0) if pause else config_for(f, ev=ev)
        result = await drive(clock, Evcc(evcc_config, clock=clock, wall_clock=lambda: NOW).run(connect))
        await clock.advance(0.1)
        assert all(s.done() for s in served)  # the runner saw every connection end
        return result, secc.outcomes

    result, outcomes = asyncio.run(main())
    assert result.ok, result.error
    assert result.stop_reason == "target SoC reached" and 0.54 <= result.soc_end < 0.55
    assert (result.pauses, result.joined) == ((1, 1) if pause else (0, 0))
    assert [o.paused for o in outcomes] == ([True, False] if pause else [False])
    assert outcomes[-1].reason.startswith("SessionStop")


def test_the_in_memory_link_times_out_and_ends_like_a_socket() -> None:
    async def main() -> None:
        clock = VirtualClock()
        ev_end, secc_end = memory_pair(clock)
        waiting = asyncio.ensure_future(secc_end.receive(2.0))
        await clock.advance(1.9)
        assert not waiting.done()
        await clock.advance(0.2)
        with pytest.raises(V2gtpTimeoutError):
            await waiting
        await ev_end.send(0x8001, b"\x80\x01")
        message = await secc_end.receive(1.0)
        assert (message.payload_type, message.payload) == (0x8001, b"\x80\x01")
        await secc_end.send(0x8001, b"\x80")
        assert await ev_end.receive() == (0x8001, b"\x80")
        await ev_end.close()
        with pytest.raises(V2gtpEofError):
            await secc_end.receive(1.0)
        with pytest.raises(V2gtpEofError):  # and it stays closed
            await secc_end.receive(1.0)
        await secc_end.close()
        with pytest.raises(EvccConnectionError):
            await ev_end.receive()
        with pytest.raises(EvccConnectionError):
            await ev_end.send(0x8001, b"")

    asyncio.run(main())


# ------------------------------------------------------------------------------------------ real sockets
async def serve(secc: Secc, ssl_context: Any = None) -> tuple[asyncio.Server, asyncio.Event]:
    """A tiny SECC on ::1: V2GTP in, our sessions, V2GTP out. The event is set when a connection ended
    (the tests wait for it, so no handler is cut off when the server closes)."""
    ended = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection()
        try:
            while True:
                message = await read_message(reader, max_payload=65_536, timeout_s=5.0)
                reply = secc.dispatch(conn, message.payload_type, message.payload)
                writer.write(encode(*reply))
                await writer.drain()
        except (V2gtpError, OSError):
            pass
        finally:
            secc.closed(conn)
            writer.close()
            ended.set()

    return await asyncio.start_server(handle, host="::1", port=0, ssl=ssl_context), ended


def test_a_whole_session_over_tcp_on_loopback() -> None:
    async def main() -> EvccResult:
        secc = Secc(dc=DcPlant())
        async with asyncio.timeout(20.0):
            server, ended = await serve(secc)
            async with server:
                port = server.sockets[0].getsockname()[1]
                ev = small_ev(target_soc=0.505)  # 5 Wh: under a second of real time at about 46 kW
                config = EvccConfig(ev=ev, protocols=("iso20",), energy="DC", control_mode="dynamic")
                result = await Evcc(config, clock=RealClock()).run(("::1", port))
                await ended.wait()
        assert secc.sessions[0].state == "Stopped"
        return result

    result = asyncio.run(main())
    assert result.ok, result.error
    assert result.protocol == "iso20" and result.tls_version is None
    assert collapsed(result.requests()) == SEQUENCES["iso20-DC"]
    loop = [e.elapsed_s for e in result.exchanges if e.request == "DC_ChargeLoopReq"]
    assert loop and max(loop) < 0.5


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SECC test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "secc.pem", tmp / "secc.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_a_whole_iso2_session_over_tls_on_loopback(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = tls_context(TlsFiles(cert_chain=cert, key=key), TlsProfile.ISO2)

    async def main() -> EvccResult:
        secc = Secc(ac=AcPlant())
        async with asyncio.timeout(20.0):
            server, ended = await serve(secc, server_ctx)
            async with server:
                port = server.sockets[0].getsockname()[1]
                config = EvccConfig(
                    ev=small_ev(target_soc=0.502),  # 2 Wh: about a second of real time at 7 kW
                    protocols=("iso20", "iso2"),
                    energy="AC",
                    tls=EvccTls(trust_anchors=cert),
                )
                result = await Evcc(config, clock=RealClock()).run(("::1", port))
                await ended.wait()
                return result

    result = asyncio.run(main())
    assert result.ok, result.error
    assert result.tls_version == "TLSv1.2" and result.protocol == "iso2"
    assert "TLS 1.2 connection: ISO 15118-20 not offered" in result.notes


def test_a_secc_with_an_untrusted_certificate_is_refused(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    other, _ = _self_signed(tmp_path / "other")
    server_ctx = tls_context(TlsFiles(cert_chain=cert, key=key), TlsProfile.ISO2)

    async def main() -> EvccResult:
        secc = Secc(ac=AcPlant())
        async with asyncio.timeout(20.0):
            server, _ = await serve(secc, server_ctx)
            async with server:
                port = server.sockets[0].getsockname()[1]
                config = EvccConfig(ev=small_ev(), protocols=("iso2",), energy="AC", tls=EvccTls(trust_anchors=other))
                return await Evcc(config, clock=RealClock()).run(("::1", port))

    result = asyncio.run(main())
    assert not result.ok and result.error is not None and "certificate verify failed" in result.error
    assert result.exchanges == []


def test_nothing_listening_is_a_clean_connection_error() -> None:
    async def main() -> EvccResult:
        probe = await asyncio.start_server(lambda r, w: None, host="::1", port=0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        async with asyncio.timeout(10.0):
            return await Evcc(EvccConfig(ev=small_ev()), clock=RealClock()).run(("::1", port))

    result = asyncio.run(main())
    assert result.error is not None and result.error.startswith("EvccConnectionError: cannot connect")


async def netns_evcc_over_sdp() -> None:
    """Runs inside a private namespace (tests/netns.py): our SDP server and SECC transport on secc0, the
    EV discovers them from ev0 and connects to the link-local address with its scope id."""
    secc = Secc(dc=DcPlant())
    done = asyncio.Event()

    async def handler(conn: V2gConnection) -> None:
        state = Connection()
        try:
            while True:
                message = await conn.receive(5.0)
                await conn.send(*secc.dispatch(state, message.payload_type, message.payload))
        except V2gtpError:
            pass
        finally:
            secc.closed(state)
            done.set()

    async with asyncio.timeout(20.0):
        server = SeccServer(SECC_IF, handler, tcp=True)
        async with server:
            assert server.tcp_port is not None
            async with SdpServer(SECC_IF, SdpOffer(link_local(SECC_IF).address, server.tcp_port, None)):
                config = EvccConfig(ev=small_ev(target_soc=0.505), protocols=("din",), energy="DC")
                result = await Evcc(config, clock=RealClock()).run(EV_IF)
            await done.wait()  # the SECC saw the EV close the connection
    assert result.ok, result.error
    assert result.protocol == "din" and collapsed(result.requests()) == SEQUENCES["din"]
    assert secc.sessions[0].state == "Stopped"


def test_sdp_then_tcp_to_our_secc_transport_over_a_veth_pair() -> None:
    proc = run_in_netns(__name__, "netns_evcc_over_sdp", timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
