"""The ISO 15118-20 SECC session table, request by request: AC, DC, AC_BPT and DC_BPT in scheduled and
dynamic control mode, every request out of its place, wrong session ids, the Ongoing loops, pause and
resume, service and schedule renegotiation, each FAILED answer ending the session, and the safety
property that no charge loop answer carries a discharge target beyond what the port authorises.

Every request of the table tests goes through our EXI codec first and every answer after (encode and
decode back): the trees on both sides are schema-valid -20 messages, not just dicts the session likes.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.iso15118.exi import codec
from firmware.iso15118.exi.namespaces import Namespace
from firmware.iso15118.session.iso20 import (
    ANSWER_WITHIN_S,
    OTHER_REQUESTS,
    REQUESTS,
    STATES,
    TRANSITIONS,
    ControlMode,
    EvseNotification,
    Iso20Config,
    Iso20Error,
    Iso20Session,
    Notice,
    PausedSession,
    Pricing,
    Selection,
    ServiceId,
    bounded,
)
from firmware.iso15118.session.iso20_ac import OVER_DISCHARGE_TOLERANCE_W, AcPart
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
    PriceEntry,
    Schedule,
)
from firmware.iso15118.session.values import from_rational, rational

ISO20_AC, ISO20_COMMON, ISO20_DC = Namespace.ISO20_AC, Namespace.ISO20_COMMON, Namespace.ISO20_DC

SESSION = bytes.fromhex("0102030405060708")
OTHER = bytes.fromhex("a1a2a3a4a5a6a7a8")
EVCCID = "WMIV1234567890ABCDEX"
NOW = 1_700_000_000
ALLOWED_DISCHARGE_W = 7_000.0


def r(value: float) -> dict[str, Any]:
    return rational(value)


def schedules_offer(schedule_id: int = 1) -> list[Schedule]:
    return [
        Schedule(
            schedule_id=schedule_id,
            duration_s=86_400,
            power=(PowerEntry(0, 11_000.0), PowerEntry(3_600, 50_000.0), PowerEntry(7_200, -5_000.0)),
            prices=(PriceEntry(0, 0.30, level=2), PriceEntry(3_600, 0.2155, level=1)),
            price_levels=3,
        )
    ]


# ------------------------------------------------------------------------------------------ the ports
@dataclass
class AcModel:
    """An AC connector as the session sees it: the contactor closes on a start unless refused, the
    setpoint is what the energy manager would ask, the EV's present power comes back as measured."""

    authorisation_answers: list[Authorisation] = field(default_factory=lambda: [Authorisation.ACCEPTED])
    limits_now: AcLimits = field(
        default_factory=lambda: AcLimits(
            nominal_voltage_v=230.0,
            max_current_a=32.0,
            min_current_a=6.0,
            phases=3,
            max_power_w=22_000.0,
            max_discharge_power_w=ALLOWED_DISCHARGE_W,
        )
    )
    schedules_now: list[Schedule] = field(default_factory=schedules_offer)
    setpoint_w: float | None = 7_000.0
    notice_now: Notice | None = None
    status_now: AcStatus = field(default_factory=AcStatus)
    meter_now: MeterInfo | None = field(default_factory=lambda: MeterInfo("MTR1", 1234.0))
    refuse_start: bool = False
    started: bool = False
    calls: list[str] = field(default_factory=list)
    ev: list[EvAcParameters] = field(default_factory=list)
    socs: list[int] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    @property
    def evse_id(self) -> str:
        return "DE*EVF*E1"

    def authorisation(self) -> Authorisation:
        answers = self.authorisation_answers
        return answers.pop(0) if len(answers) > 1 else answers[0]

    def status(self) -> AcStatus:
        return self.status_now

    def limits(self) -> AcLimits:
        return self.limits_now

    def ev_parameters(self, params: EvAcParameters) -> None:
        self.ev.append(params)

    def schedules(self) -> list[Schedule]:
        return self.schedules_now

    def power_delivery(self, start: bool, schedule_id: int | None) -> bool:
        self.calls.append(f"power_delivery {start} {schedule_id}")
        if start and self.refuse_start:
            return False
        self.started = start
        return True

    def charge_loop(self, ev_present_power_w: float | None) -> AcSetpoint:
        assert self.started, "a charge loop with the power off"
        return AcSetpoint(self.setpoint_w, present_power_w=ev_present_power_w or 0.0)

    def meter(self) -> MeterInfo | None:
        return self.meter_now

    def session_stopped(self, reason: str) -> None:
        self.stopped.append(reason)

    def notice(self) -> Notice | None:
        return self.notice_now

    def ev_soc(self, soc_pct: int) -> None:
        self.socs.append(soc_pct)


@dataclass
class DcModel:
    """A DC power path: the cable check passes after ``checks_needed`` calls, precharge reaches the target
    at once, the current follows the (already clamped) target; in dynamic mode the energy manager takes
    ``dynamic_pick`` of the window: "charge" the most charge, "discharge" the most discharge."""

    authorisation_answers: list[Authorisation] = field(default_factory=lambda: [Authorisation.ACCEPTED])
    checks_needed: int = 2
    isolation_result: Isolation = Isolation.VALID
    limits_now: DcLimits = field(
        default_factory=lambda: DcLimits(
            max_current_a=200.0,
            max_power_w=50_000.0,
            max_voltage_v=500.0,
            min_current_a=0.0,
            min_voltage_v=150.0,
            peak_current_ripple_a=2.0,
        )
    )
    discharge_now: DcDischargeLimits = field(
        default_factory=lambda: DcDischargeLimits(max_power_w=ALLOWED_DISCHARGE_W, max_current_a=20.0)
    )
    schedules_now: list[Schedule] = field(default_factory=schedules_offer)
    notice_now: Notice | None = None
    status_now: DcEvseStatus = field(default_factory=lambda: DcEvseStatus(EvseStatusCode.READY))
    dynamic_pick: str = "charge"
    voltage_v: float = 0.0
    closed: bool = False
    refuse_close: bool = False
    calls: list[str] = field(default_factory=list)
    targets: list[DcTarget] = field(default_factory=list)
    demands: list[DcDynamicDemand] = field(default_factory=list)
    ev: list[EvDcParameters20] = field(default_factory=list)
    socs: list[int] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    checks_done: int = 0

    @property
    def evse_id(self) -> str:
        return "DE*EVF*E2"

    def authorisation(self) -> Authorisation:
        answers = self.authorisation_answers
        return answers.pop(0) if len(answers) > 1 else answers[0]

    def status(self) -> DcEvseStatus:
        return self.status_now

    def limits(self) -> DcLimits:
        return self.limits_now

    def ev_parameters(self, params: EvDcParameters) -> None:
        raise AssertionError("the -20 session tells the EV's parameters through ev_parameters_20")

    def ev_parameters_20(self, params: EvDcParameters20) -> None:
        self.ev.append(params)

    def ev_status(self, status: EvDcStatus) -> None:
        self.socs.append(status.soc_pct)

    def cable_check(self) -> Isolation:
        self.checks_done += 1
        self.calls.append("cable_check")
        return self.isolation_result if self.checks_done >= self.checks_needed else Isolation.INVALID

    def precharge(self, target: DcTarget) -> DcOutput:
        assert target.current_a <= 2.0
        self.voltage_v = target.voltage_v
        return DcOutput(self.voltage_v, 0.0)

    def power_delivery(self, on: bool) -> bool:
        self.calls.append(f"power_delivery {on}")
        if on and (self.refuse_close or self.voltage_v == 0.0):
            return False
        self.closed = on
        return True

    def current_demand(self, target: DcTarget) -> DcOutput:
        assert self.closed, "current demanded with the contactor open"
        self.targets.append(target)
        return DcOutput(target.voltage_v, target.current_a)

    def dynamic_demand(self, demand: DcDynamicDemand) -> DcOutput:
        assert self.closed, "current demanded with the contactor open"
        self.demands.append(demand)
        volts = max(demand.present_voltage_v, 1.0)
        if self.dynamic_pick == "discharge":
            current = -min(demand.max_discharge_current_a, demand.max_discharge_power_w / volts)
        else:
            current = min(demand.max_current_a, demand.max_power_w / volts)
        return DcOutput(demand.present_voltage_v, current)

    def welding_detection(self) -> float:
        return 0.0 if not self.closed else self.voltage_v

    def session_stopped(self, reason: str) -> None:
        self.stopped.append(reason)

    def notice(self) -> Notice | None:
        return self.notice_now

    def discharge_limits(self) -> DcDischargeLimits:
        return self.discharge_now

    def schedules(self) -> list[Schedule]:
        return self.schedules_now

    def meter(self) -> MeterInfo | None:
        return MeterInfo("MTR2", 5000.0, export_wh=100.0)


Model = AcModel | DcModel


# ------------------------------------------------------------------------------------------ flavours
@dataclass(frozen=True)
class Flavour:
    energy: str  # "AC" | "DC"
    bpt: bool
    mode: ControlMode

    @property
    def service(self) -> ServiceId:
        return ServiceId[self.energy + ("_BPT" if self.bpt else "")]

    @property
    def set_id(self) -> int:
        return 1 if self.mode is ControlMode.SCHEDULED else 2  # Iso20Config's default order

    def __str__(self) -> str:
        return f"{self.service.name}-{self.mode.name.lower()}"


FLAVOURS = [Flavour(e, b, m) for e in ("AC", "DC") for b in (False, True) for m in ControlMode]
AC_SCHEDULED, AC_DYNAMIC, AC_BPT_SCHEDULED, AC_BPT_DYNAMIC = FLAVOURS[:4]
DC_SCHEDULED, DC_DYNAMIC, DC_BPT_SCHEDULED, DC_BPT_DYNAMIC = FLAVOURS[4:]


def namespace_of(name: str) -> str:
    return ISO20_AC if name.startswith("AC_") else ISO20_DC if name.startswith("DC_") else ISO20_COMMON


# ------------------------------------------------------------------------------------------ requests
def _ac_loop(f: Flavour, present_w: float = 7_000.0) -> dict[str, Any]:
    if f.mode is ControlMode.SCHEDULED:
        mode: dict[str, Any] = {"EVMaximumChargePower": r(11_000), "EVPresentActivePower": r(present_w)}
        if f.bpt:
            mode["EVMaximumDischargePower"] = r(11_000)
    else:
        mode = {
            "DepartureTime": 7_000,
            "EVTargetEnergyRequest": r(30_000),
            "EVMaximumEnergyRequest": r(40_000),
            "EVMinimumEnergyRequest": r(-10_000 if f.bpt else 5_000),
            "EVMaximumChargePower": r(11_000),
            "EVMinimumChargePower": r(1_400),
            "EVPresentActivePower": r(present_w),
            "EVPresentReactivePower": r(0),
        }
        if f.bpt:
            mode |= {"EVMaximumDischargePower": r(11_000), "EVMinimumDischargePower": r(1_000)}
    key = ("BPT_" if f.bpt else "") + ("Scheduled" if f.mode is ControlMode.SCHEDULED else "Dynamic")
    return {"MeterInfoRequested": False, f"{key}_AC_CLReqControlMode": mode}


def _dc_loop(f: Flavour, target_a: float = 100.0) -> dict[str, Any]:
    if f.mode is ControlMode.SCHEDULED:
        mode: dict[str, Any] = {"EVTargetCurrent": r(target_a), "EVTargetVoltage": r(400)}
        if f.bpt:
            mode |= {"EVMaximumDischargePower": r(60_000), "EVMaximumDischargeCurrent": r(150)}
    else:
        mode = {
            "DepartureTime": 7_000,
            "EVTargetEnergyRequest": r(30_000),
            "EVMaximumEnergyRequest": r(40_000),
            "EVMinimumEnergyRequest": r(-10_000 if f.bpt else 5_000),
            "EVMaximumChargePower": r(150_000),
            "EVMinimumChargePower": r(0),
            "EVMaximumChargeCurrent": r(300),
            "EVMaximumVoltage": r(450),
            "EVMinimumVoltage": r(200),
        }
        if f.bpt:
            mode |= {
                "EVMaximumDischargePower": r(60_000),
                "EVMinimumDischargePower": r(0),
                "EVMaximumDischargeCurrent": r(150),
            }
    key = ("BPT_" if f.bpt else "") + ("Scheduled" if f.mode is ControlMode.SCHEDULED else "Dynamic")
    return {
        "DisplayParameters": {"PresentSOC": 55},
        "MeterInfoRequested": False,
        "EVPresentVoltage": r(390),
        f"{key}_DC_CLReqControlMode": mode,
    }


def _profile(f: Flavour, tuple_id: int = 1, power_w: float = 11_000.0) -> dict[str, Any]:
    mode = (
        {"Scheduled_EVPPTControlMode": {"SelectedScheduleTupleID": tuple_id}}
        if f.mode is ControlMode.SCHEDULED
        else {"Dynamic_EVPPTControlMode": {}}
    )
    entries = {"EVPowerProfileEntry": [{"Duration": 3_600, "Power": r(power_w)}]}
    return {"TimeAnchor": NOW, **mode, "EVPowerProfileEntries": entries}


def body_for(step: str, f: Flavour) -> dict[str, Any]:
    """The request of a step ("Name" or "Name:variant") in a flavour's session."""
    name, _, variant = step.partition(":")
    bpt_ac = {"EVMaximumDischargePower": r(11_000), "EVMinimumDischargePower": r(1_000)}
    bpt_dc = {
        "EVMaximumDischargePower": r(60_000),
        "EVMinimumDischargePower": r(0),
        "EVMaximumDischargeCurrent": r(150),
        "EVMinimumDischargeCurrent": r(0),
    }
    dynamic_se = {
        "DepartureTime": 7_200,
        "MinimumSOC": 20,
        "TargetSOC": 80,
        "EVTargetEnergyRequest": r(30_000),
        "EVMaximumEnergyRequest": r(40_000),
        "EVMinimumEnergyRequest": r(5_000),
    }
    bodies: dict[str, dict[str, Any]] = {
        "SessionSetupReq": {"EVCCID": EVCCID},
        "AuthorizationSetupReq": {},
        "AuthorizationReq": {"SelectedAuthorizationService": "EIM", "EIM_AReqAuthorizationMode": {}},
        "ServiceDiscoveryReq": {},
        "ServiceDetailReq": {"ServiceID": int(f.service)},
        "ServiceSelectionReq": {
            "SelectedEnergyTransferService": {"ServiceID": int(f.service), "ParameterSetID": f.set_id}
        },
        "AC_ChargeParameterDiscoveryReq": {
            ("BPT_AC_CPDReqEnergyTransferMode" if f.bpt else "AC_CPDReqEnergyTransferMode"): {
                "EVMaximumChargePower": r(11_000),
                "EVMinimumChargePower": r(1_400),
                **(bpt_ac if f.bpt else {}),
            }
        },
        "DC_ChargeParameterDiscoveryReq": {
            ("BPT_DC_CPDReqEnergyTransferMode" if f.bpt else "DC_CPDReqEnergyTransferMode"): {
                "EVMaximumChargePower": r(150_000),
                "EVMinimumChargePower": r(0),
                "EVMaximumChargeCurrent": r(300),
                "EVMinimumChargeCurrent": r(0),
                "EVMaximumVoltage": r(450),
                "EVMinimumVoltage": r(200),
                "TargetSOC": 80,
                **(bpt_dc if f.bpt else {}),
            }
        },
        "ScheduleExchangeReq": {
            "MaximumSupportingPoints": 24,
            **(
                {"Scheduled_SEReqControlMode": {"DepartureTime": 7_200, "EVTargetEnergyRequest": r(20_000)}}
                if f.mode is ControlMode.SCHEDULED
                else {"Dynamic_SEReqControlMode": dynamic_se}
            ),
        },
        "DC_CableCheckReq": {},
        "DC_PreChargeReq": {"EVProcessing": "Ongoing", "EVPresentVoltage": r(380), "EVTargetVoltage": r(390)},
        "PowerDeliveryReq": {
            "EVProcessing": "Finished",
            "ChargeProgress": "Start",
            "EVPowerProfile": _profile(f),
            **({"BPT_ChannelSelection": "Charge"} if f.bpt else {}),
        },
        "AC_ChargeLoopReq": _ac_loop(f),
        "DC_ChargeLoopReq": _dc_loop(f),
        "MeteringConfirmationReq": {
            "SignedMeteringData": {
                "Id": "smd1",
                "SessionID": SESSION.hex().upper(),
                "MeterInfo": {"MeterID": "MTR1", "ChargedEnergyReadingWh": 1234},
                "Dynamic_SMDTControlMode": {},
            }
        },
        "DC_WeldingDetectionReq": {"EVProcessing": "Ongoing"},
        "SessionStopReq": {"ChargingSession": "Terminate"},
        "CertificateInstallationReq": {},
        "VehicleCheckInReq": {"EVCheckInStatus": "CheckIn", "ParkingMethod": "Manual"},
        "VehicleCheckOutReq": {"EVCheckOutStatus": "CheckOut", "CheckOutTime": NOW},
    }
    body = dict(bodies[name])
    variants: dict[str, dict[str, Any]] = {
        "stop": {"EVProcessing": "Finished", "ChargeProgress": "Stop"},
        "renegotiate": {"EVProcessing": "Finished", "ChargeProgress": "ScheduleRenegotiation"},
        "standby": {"EVProcessing": "Finished", "ChargeProgress": "Standby"},
        "ongoing": {"EVProcessing": "Ongoing", "ChargeProgress": "Start"},
        "pause": {"ChargingSession": "Pause"},
        "renegotiate_service": {"ChargingSession": "ServiceRenegotiation"},
    }
    return variants.get(variant, body) if variant else body


def request(name: str, body: dict[str, Any], session: bytes = SESSION) -> dict[str, Any]:
    return {name: {"Header": {"SessionID": session.hex().upper(), "TimeStamp": NOW}, **body}}


def exchange(s: Iso20Session, name: str, body: dict[str, Any], session: bytes = SESSION) -> dict[str, Any]:
    """One request through our codec to the session and its answer back through the codec."""
    ns = namespace_of(name)
    grammar = codec(ns)
    decoded = grammar.decode(grammar.encode(request(name, body, session)))
    out_ns, answer = s.handle(decoded, ns)
    assert out_ns == ns
    assert codec(out_ns).decode(codec(out_ns).encode(answer)) == answer
    [(res_name, res)] = answer.items()
    assert res_name == name[:-3] + "Res"
    assert res["Header"] == {"SessionID": s.session_id.upper(), "TimeStamp": NOW}
    return dict(res)


def step(s: Iso20Session, f: Flavour, name: str, **change: Any) -> dict[str, Any]:
    base, _, _ = name.partition(":")
    session = bytes(8) if base == "SessionSetupReq" else SESSION
    return exchange(s, base, {**body_for(name, f), **change}, session)


def raw(s: Iso20Session, f: Flavour, name: str) -> dict[str, Any]:
    """A step straight to the session, without the codec (fast, for the property tests)."""
    base = name.partition(":")[0]
    session_id = bytes(8) if base == "SessionSetupReq" else SESSION
    return s.handle(request(base, body_for(name, f), session_id), namespace_of(base))[1]


def session(
    f: Flavour, model: Model | None = None, config: Iso20Config | None = None, **kw: Any
) -> tuple[Iso20Session, Any]:
    model = model or (AcModel() if f.energy == "AC" else DcModel())
    part = AcPart(model) if isinstance(model, AcModel) else DcPart(model)
    config = config or Iso20Config(bidirectional=True, pricing=Pricing.ABSOLUTE)
    kw.setdefault("new_session_id", lambda: SESSION)
    return Iso20Session(part, config, wall_clock=lambda: NOW, **kw), model


COMMON_HEAD = [
    ("SessionSetupReq", "OK_NewSessionEstablished", "SessionSetup"),
    ("AuthorizationSetupReq", "OK", "AuthorizationSetup"),
    ("AuthorizationReq", "OK", "Authorised"),
    ("ServiceDiscoveryReq", "OK", "ServiceDiscovery"),
    ("ServiceDetailReq", "OK", "ServiceDetail"),
    ("ServiceSelectionReq", "OK", "ServiceSelected"),
]
AC_HAPPY = [
    *COMMON_HEAD,
    ("AC_ChargeParameterDiscoveryReq", "OK", "ChargeParameters"),
    ("ScheduleExchangeReq", "OK", "ScheduleExchanged"),
    ("PowerDeliveryReq", "OK", "Charging"),
    ("AC_ChargeLoopReq", "OK", "Charging"),
    ("AC_ChargeLoopReq", "OK", "Charging"),
    ("PowerDeliveryReq:stop", "OK", "PowerOff"),
    ("SessionStopReq", "OK", "Stopped"),
]
DC_HAPPY = [
    *COMMON_HEAD,
    ("DC_ChargeParameterDiscoveryReq", "OK", "ChargeParameters"),
    ("ScheduleExchangeReq", "OK", "ScheduleExchanged"),
    ("DC_CableCheckReq", "OK", "CableChecking"),
    ("DC_CableCheckReq", "OK", "CableChecked"),
    ("DC_PreChargeReq", "OK", "PreCharging"),
    ("DC_PreChargeReq", "OK", "PreCharging"),
    ("PowerDeliveryReq", "OK", "Charging"),
    ("DC_ChargeLoopReq", "OK", "Charging"),
    ("DC_ChargeLoopReq", "OK", "Charging"),
    ("PowerDeliveryReq:stop", "OK", "PowerOff"),
    ("DC_WeldingDetectionReq", "OK", "WeldingDetection"),
    ("SessionStopReq", "OK", "Stopped"),
]


def happy(f: Flavour) -> list[tuple[str, str, str]]:
    return AC_HAPPY if f.energy == "AC" else DC_HAPPY


def run(s: Iso20Session, f: Flavour, steps: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    out = []
    for name, code, state in steps:
        res = step(s, f, name)
        assert (res["ResponseCode"], s.state) == (code, state), f"{name}: {res}"
        out.append(res)
    return out


def index_of(f: Flavour, state: str) -> int:
    """How many happy-path steps reach ``state`` first."""
    return next(i for i, (_, _, reached) in enumerate(happy(f), start=1) if reached == state)


def to(f: Flavour, state: str, **kw: Any) -> tuple[Iso20Session, Any]:
    s, model = session(f, **kw)
    run(s, f, happy(f)[: index_of(f, state)])
    return s, model


def watts(value: dict[str, Any]) -> float:
    return from_rational(value)


# ------------------------------------------------------------------------------------------ the table
def test_the_table_names_only_known_states_conditions_and_timeouts() -> None:
    used = {s for _, sources, dest, _ in TRANSITIONS for s in (*sources, dest) if s != "="}
    assert used == set(STATES)
    conditions = {c for *_, conds in TRANSITIONS for c in conds}
    assert all(callable(getattr(Iso20Session, c)) for c in conditions)
    assert set(ANSWER_WITHIN_S) == set(REQUESTS)


@pytest.mark.parametrize("f", FLAVOURS, ids=str)
def test_a_whole_session(f: Flavour) -> None:
    s, model = session(f)
    answers = run(s, f, happy(f))
    assert s.ended and s.stop_reason == model.stopped[0] == "SessionStop(Terminate) by the EV"
    assert len(model.stopped) == 1
    by_name = dict(zip([n for n, _, _ in happy(f)], answers, strict=True))
    assert by_name["SessionSetupReq"]["EVSEID"] == model.evse_id
    offered = [x["ServiceID"] for x in by_name["ServiceDiscoveryReq"]["EnergyTransferServiceList"]["Service"]]
    assert offered == ([1, 5] if f.energy == "AC" else [2, 6])
    cpd = by_name[f"{f.energy}_ChargeParameterDiscoveryReq"]
    assert (f"BPT_{f.energy}_CPDResEnergyTransferMode" in cpd) == f.bpt
    schedule = by_name["ScheduleExchangeReq"]
    if f.mode is ControlMode.SCHEDULED:
        [tuple_] = schedule["Scheduled_SEResControlMode"]["ScheduleTuple"]
        assert ("DischargingSchedule" in tuple_) == f.bpt
        assert "AbsolutePriceSchedule" in tuple_["ChargingSchedule"]
    else:
        assert "Dynamic_SEResControlMode" in schedule
    loop = by_name[f"{f.energy}_ChargeLoopReq"]
    key = ("BPT_" if f.bpt else "") + ("Scheduled" if f.mode is ControlMode.SCHEDULED else "Dynamic")
    res_mode = loop[f"{key}_{f.energy}_CLResControlMode"]
    assert "EVSEStatus" not in loop and "MeterInfo" not in loop  # nothing to notify, nothing asked
    if f.energy == "AC":
        assert watts(res_mode["EVSETargetActivePower"]) == 7_000.0
        start = "power_delivery True 1" if f.mode is ControlMode.SCHEDULED else "power_delivery True None"
        assert model.calls == [start, "power_delivery False None"]
        assert not model.started and model.ev[-1].max_power_w == 11_000.0
    else:
        assert model.calls == ["cable_check", "cable_check", "power_delivery True", "power_delivery False"]
        assert model.socs == [55, 55] and model.ev[0].max_voltage_v == 450.0 and model.ev[0].target_soc_pct == 80
        assert ("EVSEMaximumDischargePower" in res_mode) == f.bpt
        if f.mode is ControlMode.SCHEDULED:
            assert [t.current_a for t in model.targets] == [100.0, 100.0]
        else:
            assert model.demands[-1].max_power_w == 50_000.0 and model.demands[-1].energy_request_wh == 30_000.0


def _reached(f: Flavour) -> list[tuple[int, str]]:
    seen: dict[str, int] = {"Idle": 0}
    for i, (_, _, state) in enumerate(happy(f), start=1):
        seen.setdefault(state, i)
    return [(n, state) for state, n in seen.items() if state != "Stopped"]


OUT_OF_PLACE = [(f, n, state) for f in (AC_SCHEDULED, DC_BPT_DYNAMIC) for n, state in _reached(f)]


@pytest.mark.parametrize(("f", "steps", "state"), OUT_OF_PLACE, ids=[f"{f}-{s}" for f, _, s in OUT_OF_PLACE])
def test_every_request_out_of_its_place_is_a_sequence_error_that_ends_the_session(
    f: Flavour, steps: int, state: str
) -> None:
    accepted = {name for name, sources, _, _ in TRANSITIONS if state in sources}
    for name in (*REQUESTS, *OTHER_REQUESTS):
        if name in accepted or name == "CertificateInstallationReq":
            continue
        s, model = session(f)
        run(s, f, happy(f)[:steps])
        res = step(s, f, name)
        assert res["ResponseCode"] == "FAILED_SequenceError", (state, name)
        assert s.ended and model.stopped == [f"{name} not expected in state {state}"]
        again = step(s, f, "SessionStopReq")
        assert again["ResponseCode"] == "FAILED_SequenceError" and len(model.stopped) == 1


@pytest.mark.parametrize(
    ("f", "state", "name"),
    [
        (AC_SCHEDULED, "ServiceSelected", "DC_ChargeParameterDiscoveryReq"),
        (AC_SCHEDULED, "ScheduleExchanged", "DC_CableCheckReq"),
        (AC_SCHEDULED, "Charging", "DC_ChargeLoopReq"),
        (DC_SCHEDULED, "Charging", "AC_ChargeLoopReq"),
        (DC_SCHEDULED, "PowerOff", "DC_ChargeLoopReq"),
        (DC_SCHEDULED, "ScheduleExchanged", "PowerDeliveryReq"),  # no power before cable check and precharge
        (DC_SCHEDULED, "CableChecked", "PowerDeliveryReq"),
    ],
)
def test_requests_of_the_other_energy_or_skipping_dc_steps_are_sequence_errors(
    f: Flavour, state: str, name: str
) -> None:
    s, model = to(f, state)
    calls = list(model.calls)
    other = Flavour("DC" if name.startswith("DC_") else "AC", f.bpt, f.mode)
    res = exchange(s, name, body_for(name, other))
    assert res["ResponseCode"] == "FAILED_SequenceError" and s.ended
    assert model.calls == calls  # nothing was switched


def test_a_wrong_session_id_is_an_unknown_session() -> None:
    s, model = to(AC_SCHEDULED, "Authorised")
    res = exchange(s, "ServiceDiscoveryReq", {}, session=OTHER)
    assert res["ResponseCode"] == "FAILED_UnknownSession" and s.ended
    assert set(res) >= {"ServiceRenegotiationSupported", "EnergyTransferServiceList"}  # still schema-complete
    assert model.stopped == ["ServiceDiscoveryReq with an unknown SessionID"]


# ------------------------------------------------------------------------------------------ authorisation
def test_eim_authorisation_is_ongoing_until_the_port_accepts() -> None:
    answers = [Authorisation.PENDING, Authorisation.PENDING, Authorisation.ACCEPTED]
    s, _ = to(AC_SCHEDULED, "AuthorizationSetup", model=AcModel(authorisation_answers=answers))
    seen = [step(s, AC_SCHEDULED, "AuthorizationReq")["EVSEProcessing"] for _ in range(3)]
    assert seen == ["Ongoing_WaitingForCustomerInteraction"] * 2 + ["Finished"] and s.state == "Authorised"


def test_a_refused_authorisation_is_a_warning_that_opens_nothing() -> None:
    s, model = to(DC_SCHEDULED, "AuthorizationSetup", model=DcModel(authorisation_answers=[Authorisation.REJECTED]))
    res = step(s, DC_SCHEDULED, "AuthorizationReq")
    assert model.stopped == [] and not s.ended
    assert (res["ResponseCode"], res["EVSEProcessing"], s.state) == (
        "WARNING_EIMAuthorizationFailure",
        "Finished",
        "Authorising",
    )
    assert step(s, DC_SCHEDULED, "ServiceDiscoveryReq")["ResponseCode"] == "FAILED_SequenceError"
    s, _ = to(DC_SCHEDULED, "AuthorizationSetup", model=DcModel(authorisation_answers=[Authorisation.REJECTED]))
    step(s, DC_SCHEDULED, "AuthorizationReq")
    assert step(s, DC_SCHEDULED, "SessionStopReq")["ResponseCode"] == "OK" and s.state == "Stopped"


@dataclass
class FakePnc:
    seen: list[bytes] = field(default_factory=list)

    def authorise(self, challenge: bytes, request: dict[str, Any]) -> Authorisation:
        self.seen.append(challenge)
        return Authorisation.ACCEPTED


PNC_REQUEST = {
    "SelectedAuthorizationService": "PnC",
    "PnC_AReqAuthorizationMode": {
        "Id": "auth1",
        "GenChallenge": base64.b64encode(bytes(range(16))).decode(),
        "ContractCertificateChain": {
            "Certificate": base64.b64encode(b"contract").decode(),
            "SubCertificates": {"Certificate": [base64.b64encode(b"sub-ca").decode()]},
        },
    },
}


def test_pnc_is_offered_only_with_an_authoriser() -> None:
    s, _ = to(AC_SCHEDULED, "SessionSetup")
    setup = step(s, AC_SCHEDULED, "AuthorizationSetupReq")
    assert setup["AuthorizationServices"] == ["EIM"] and "EIM_ASResAuthorizationMode" in setup
    res = exchange(s, "AuthorizationReq", PNC_REQUEST)
    assert res["ResponseCode"] == "WARNING_AuthorizationSelectionInvalid" and s.state == "Authorising"
    pnc = FakePnc()
    s, _ = to(AC_SCHEDULED, "SessionSetup", pnc=pnc, random_bytes=lambda n: bytes(range(n)))
    setup = step(s, AC_SCHEDULED, "AuthorizationSetupReq")
    assert setup["AuthorizationServices"] == ["EIM", "PnC"]
    assert base64.b64decode(setup["PnC_ASResAuthorizationMode"]["GenChallenge"]) == bytes(range(16))
    assert exchange(s, "AuthorizationReq", PNC_REQUEST)["ResponseCode"] == "OK" and s.state == "Authorised"
    assert pnc.seen == [bytes(range(16))]


# ------------------------------------------------------------------------------------------ services
@pytest.mark.parametrize(("energy", "bidirectional"), [("AC", False), ("AC", True), ("DC", False), ("DC", True)])
def test_bpt_services_are_offered_only_by_a_bidirectional_charger(energy: str, bidirectional: bool) -> None:
    f = Flavour(energy, True, ControlMode.SCHEDULED)
    s, _ = to(f, "Authorised", config=Iso20Config(bidirectional=bidirectional))
    res = step(s, f, "ServiceDiscoveryReq")
    services = [x["ServiceID"] for x in res["EnergyTransferServiceList"]["Service"]]
    base = 1 if energy == "AC" else 2
    assert services == ([base, base + 4] if bidirectional else [base])
    res = step(s, f, "ServiceSelectionReq")
    assert res["ResponseCode"] == ("OK" if bidirectional else "FAILED_NoEnergyTransferServiceSelected")


def test_the_ev_s_supported_services_narrow_the_offer() -> None:
    s, _ = to(AC_SCHEDULED, "Authorised")
    res = exchange(s, "ServiceDiscoveryReq", {"SupportedServiceIDs": {"ServiceID": [1, 2]}})
    assert [x["ServiceID"] for x in res["EnergyTransferServiceList"]["Service"]] == [1]
    assert step(s, AC_BPT_SCHEDULED, "ServiceDetailReq")["ResponseCode"] == "FAILED_ServiceIDInvalid"


def _parameters(res: dict[str, Any]) -> list[dict[str, int]]:
    return [
        {p["Name"]: p["intValue"] for p in ps["Parameter"]} | {"id": ps["ParameterSetID"]}
        for ps in res["ServiceParameterList"]["ParameterSet"]
    ]


def test_service_details_carry_the_parameter_sets_of_tables_205_to_207() -> None:
    s, _ = to(AC_BPT_SCHEDULED, "ServiceDiscovery")
    sets = _parameters(step(s, AC_BPT_SCHEDULED, "ServiceDetailReq"))
    common = {"Connector": 3, "EVSENominalVoltage": 230, "MobilityNeedsMode": 1, "Pricing": 1}
    bpt = {"BPTChannel": 1, "GeneratorMode": 1}
    assert sets == [{**common, **bpt, "ControlMode": 1, "id": 1}, {**common, **bpt, "ControlMode": 2, "id": 2}]
    single = AcModel(limits_now=replace(AcModel().limits_now, phases=1))
    s, _ = to(AC_SCHEDULED, "ServiceDiscovery", model=single, config=Iso20Config(control_modes=(ControlMode.DYNAMIC,)))
    assert _parameters(step(s, AC_SCHEDULED, "ServiceDetailReq")) == [
        {"Connector": 1, "EVSENominalVoltage": 230, "MobilityNeedsMode": 1, "Pricing": 0, "ControlMode": 2, "id": 1}
    ]
    s, _ = to(DC_SCHEDULED, "ServiceDiscovery")
    assert _parameters(step(s, DC_SCHEDULED, "ServiceDetailReq"))[0] == {
        "Connector": 2,
        "ControlMode": 1,
        "MobilityNeedsMode": 1,
        "Pricing": 1,
        "id": 1,
    }


# ------------------------------------------------------------------------------------------ FAILED paths
FAILURES = [
    pytest.param(AC_SCHEDULED, "ServiceDetailReq", {"ServiceID": 99}, "FAILED_ServiceIDInvalid", id="detail-unknown"),
    pytest.param(
        AC_SCHEDULED,
        "ServiceSelectionReq",
        {"SelectedEnergyTransferService": {"ServiceID": 2, "ParameterSetID": 1}},
        "FAILED_NoEnergyTransferServiceSelected",
        id="selection-dc-on-ac",
    ),
    pytest.param(
        AC_SCHEDULED,
        "ServiceSelectionReq",
        {"SelectedEnergyTransferService": {"ServiceID": 1, "ParameterSetID": 7}},
        "FAILED_ServiceSelectionInvalid",
        id="selection-parameter-set",
    ),
    pytest.param(
        AC_BPT_SCHEDULED,
        "AC_ChargeParameterDiscoveryReq",
        body_for("AC_ChargeParameterDiscoveryReq", AC_SCHEDULED),
        "FAILED_WrongChargeParameter",
        id="cpd-ac-without-bpt-parameters",
    ),
    pytest.param(
        AC_SCHEDULED,
        "AC_ChargeParameterDiscoveryReq",
        {"AC_CPDReqEnergyTransferMode": {"EVMaximumChargePower": r(30_000), "EVMinimumChargePower": r(25_000)}},
        "FAILED_WrongChargeParameter",
        id="cpd-ac-minimum-above-evse",
    ),
    pytest.param(
        DC_SCHEDULED,
        "DC_ChargeParameterDiscoveryReq",
        {
            "DC_CPDReqEnergyTransferMode": {
                **body_for("DC_ChargeParameterDiscoveryReq", DC_SCHEDULED)["DC_CPDReqEnergyTransferMode"],
                "EVMaximumVoltage": r(100),
                "EVMinimumVoltage": r(50),
            }
        },
        "FAILED_WrongChargeParameter",
        id="cpd-dc-voltage-window",
    ),
    pytest.param(
        AC_SCHEDULED,
        "ScheduleExchangeReq",
        body_for("ScheduleExchangeReq", AC_DYNAMIC),
        "FAILED",
        id="schedule-other-control-mode",
    ),
    pytest.param(
        AC_SCHEDULED,
        "PowerDeliveryReq",
        {"EVProcessing": "Finished", "ChargeProgress": "Start", "EVPowerProfile": _profile(AC_SCHEDULED, 9)},
        "FAILED_ScheduleSelectionInvalid",
        id="power-delivery-unknown-schedule",
    ),
    pytest.param(
        AC_DYNAMIC,
        "PowerDeliveryReq",
        {"EVProcessing": "Finished", "ChargeProgress": "Start", "EVPowerProfile": _profile(AC_DYNAMIC, 1, -3_000)},
        "FAILED_EVPowerProfileInvalid",
        id="power-delivery-discharge-without-bpt",
    ),
    pytest.param(
        AC_SCHEDULED,
        "AC_ChargeLoopReq",
        _ac_loop(AC_DYNAMIC),
        "FAILED",
        id="loop-other-control-mode",
    ),
    pytest.param(
        DC_SCHEDULED,
        "DC_PreChargeReq",
        {"EVProcessing": "Ongoing", "EVPresentVoltage": r(380), "EVTargetVoltage": r(900)},
        "FAILED_WrongChargeParameter",
        id="precharge-above-evse",
    ),
    pytest.param(DC_SCHEDULED, "DC_ChargeLoopReq", _dc_loop(DC_BPT_SCHEDULED), "FAILED", id="loop-bpt-on-dc"),
    pytest.param(
        AC_SCHEDULED,
        "MeteringConfirmationReq",
        {
            "SignedMeteringData": {
                "Id": "smd1",
                "SessionID": OTHER.hex(),
                "MeterInfo": {"MeterID": "MTR1", "ChargedEnergyReadingWh": 1},
                "Dynamic_SMDTControlMode": {},
            }
        },
        "FAILED_MeteringSignatureNotValid",
        id="metering-other-session",
    ),
]


@pytest.mark.parametrize(("f", "name", "body", "code"), FAILURES)
def test_wrong_requests_of_the_ev_are_refused_and_end_the_session(
    f: Flavour, name: str, body: dict[str, Any], code: str
) -> None:
    state = {"MeteringConfirmationReq": "Charging", "DC_ChargeLoopReq": "Charging", "AC_ChargeLoopReq": "Charging"}
    before = next(row for row in TRANSITIONS if row[0] == name)[1][0]
    s, model = to(f, state.get(name, before))
    res = exchange(s, name, body)
    assert res["ResponseCode"] == code and s.ended
    assert len(model.stopped) == 1 and (code in model.stopped[0] or code == "FAILED")


@pytest.mark.parametrize(
    ("f", "name", "body"),
    [
        (AC_SCHEDULED, "AC_ChargeLoopReq", {"MeterInfoRequested": False, "Scheduled_AC_CLReqControlMode": {}}),
        (DC_SCHEDULED, "DC_ChargeLoopReq", {**_dc_loop(DC_SCHEDULED), "EVPresentVoltage": {"Exponent": "x"}}),
        (AC_SCHEDULED, "PowerDeliveryReq", {"EVProcessing": "Finished", "ChargeProgress": "Later"}),
        (AC_SCHEDULED, "MeteringConfirmationReq", {"SignedMeteringData": []}),
    ],
)
def test_a_malformed_request_fails_cleanly(f: Flavour, name: str, body: dict[str, Any]) -> None:
    state = "ScheduleExchanged" if name == "PowerDeliveryReq" else "Charging"
    s, model = to(f, state)
    calls = list(model.calls)
    ns, answer = s.handle(request(name, body), namespace_of(name))  # not schema-valid: past the codec
    [res] = answer.values()
    assert res["ResponseCode"] == "FAILED" and s.ended and len(model.stopped) == 1
    codec(ns).encode(answer)  # the answer still is
    assert model.calls == calls  # nothing switched on a request that could not be read


@pytest.mark.parametrize(
    ("f", "model", "state", "name", "code"),
    [
        pytest.param(
            AC_SCHEDULED,
            AcModel(refuse_start=True),
            "ScheduleExchanged",
            "PowerDeliveryReq",
            "FAILED_PowerDeliveryNotApplied",
            id="ac-refused",
        ),
        pytest.param(
            DC_SCHEDULED,
            DcModel(refuse_close=True),
            "PreCharging",
            "PowerDeliveryReq",
            "FAILED_PowerDeliveryNotApplied",
            id="dc-refused",
        ),
        pytest.param(
            DC_SCHEDULED,
            DcModel(isolation_result=Isolation.FAULT, checks_needed=1),
            "ScheduleExchanged",
            "DC_CableCheckReq",
            "FAILED",
            id="insulation-fault",
        ),
    ],
)
def test_a_charger_side_failure_ends_the_session_with_its_code(
    f: Flavour, model: Model, state: str, name: str, code: str
) -> None:
    s, _ = to(f, state, model=model)
    res = step(s, f, name)
    assert res["ResponseCode"] == code and s.ended
    assert model.stopped == [f"{name} answered {code}"]


def test_pause_before_a_service_is_selected_is_not_allowed() -> None:
    s, _ = to(AC_SCHEDULED, "ServiceDiscovery")
    assert step(s, AC_SCHEDULED, "SessionStopReq:pause")["ResponseCode"] == "FAILED_PauseNotAllowed"
    assert s.ended and s.paused is None


def test_service_renegotiation_needs_the_charger_to_support_it() -> None:
    s, _ = to(AC_SCHEDULED, "PowerOff", config=Iso20Config(service_renegotiation=False))
    res = step(s, AC_SCHEDULED, "SessionStopReq:renegotiate_service")
    assert res["ResponseCode"] == "FAILED_NoServiceRenegotiationSupported" and s.ended


@pytest.mark.parametrize(
    "message",
    [{}, {"A": {}, "B": {}}, {"SessionSetupRes": {}}, {"FooReq": {}}, {"SessionSetupReq": []}],
)
def test_something_that_is_not_a_request_raises(message: dict[str, Any]) -> None:
    s, _ = session(AC_SCHEDULED)
    with pytest.raises(Iso20Error):
        s.handle(message, ISO20_COMMON)


def test_a_request_in_the_wrong_namespace_or_one_that_cannot_be_answered_raises() -> None:
    s, _ = session(AC_SCHEDULED)
    with pytest.raises(Iso20Error, match="namespace"):
        s.handle(request("AC_ChargeLoopReq", {}), ISO20_COMMON)
    s, model = to(AC_SCHEDULED, "Authorised")
    with pytest.raises(Iso20Error, match="certificate"):
        s.handle(request("CertificateInstallationReq", {}), ISO20_COMMON)
    assert s.ended and model.stopped == ["CertificateInstallationReq is not supported"]


# ------------------------------------------------------------------------------------------ loops and waits
def test_power_delivery_while_the_ev_is_not_ready_switches_nothing() -> None:
    s, model = to(AC_SCHEDULED, "ScheduleExchanged")
    for _ in range(2):
        assert step(s, AC_SCHEDULED, "PowerDeliveryReq:ongoing")["ResponseCode"] == "OK"
    assert s.state == "ScheduleExchanged" and model.calls == []
    step(s, AC_SCHEDULED, "PowerDeliveryReq")
    assert s.state == "Charging" and model.calls == ["power_delivery True 1"]


def test_schedule_exchange_is_ongoing_until_the_energy_manager_has_an_offer() -> None:
    model = AcModel(schedules_now=[])
    s, _ = to(AC_SCHEDULED, "ChargeParameters", model=model)
    res = step(s, AC_SCHEDULED, "ScheduleExchangeReq")
    assert (res["EVSEProcessing"], s.state) == ("Ongoing", "ScheduleExchanging")
    [placeholder] = res["Scheduled_SEResControlMode"]["ScheduleTuple"]
    entries = placeholder["ChargingSchedule"]["PowerSchedule"]["PowerScheduleEntries"]["PowerScheduleEntry"]
    assert [watts(e["Power"]) for e in entries] == [0.0]  # nothing to take while Ongoing
    model.schedules_now = schedules_offer()
    assert step(s, AC_SCHEDULED, "ScheduleExchangeReq")["EVSEProcessing"] == "Finished"
    assert s.state == "ScheduleExchanged"


def test_standby_when_allowed_holds_the_loop_at_zero_power() -> None:
    s, model = to(AC_BPT_DYNAMIC, "Charging", config=Iso20Config(bidirectional=True, standby_allowed=True))
    assert step(s, AC_BPT_DYNAMIC, "PowerDeliveryReq:standby")["ResponseCode"] == "OK" and s.state == "Standby"
    model.started = True  # the model's contactor stays usable; the session must still ask for zero power
    model.setpoint_w = -5_000.0
    loop = step(s, AC_BPT_DYNAMIC, "AC_ChargeLoopReq")
    assert watts(loop["BPT_Dynamic_AC_CLResControlMode"]["EVSETargetActivePower"]) == 0.0
    step(s, AC_BPT_DYNAMIC, "PowerDeliveryReq")
    assert s.state == "Charging" and model.calls[-2:] == ["power_delivery False None", "power_delivery True None"]


def test_standby_when_not_allowed_is_a_warning_and_charging_goes_on() -> None:
    s, _ = to(DC_SCHEDULED, "Charging")
    res = step(s, DC_SCHEDULED, "PowerDeliveryReq:standby")
    assert (res["ResponseCode"], s.state, s.ended) == ("WARNING_StandbyNotAllowed", "Charging", False)
    assert step(s, DC_SCHEDULED, "DC_ChargeLoopReq")["ResponseCode"] == "OK"


def test_metering_confirmation_in_the_loop() -> None:
    s, _ = to(AC_SCHEDULED, "Charging")
    assert step(s, AC_SCHEDULED, "MeteringConfirmationReq")["ResponseCode"] == "OK" and s.state == "Charging"
    assert s.metering_confirmations[0]["MeterInfo"]["ChargedEnergyReadingWh"] == 1234


# ------------------------------------------------------------------------------------------ notifications
@pytest.mark.parametrize(
    ("f", "setup", "expected"),
    [
        (AC_SCHEDULED, {"notice_now": Notice(EvseNotification.PAUSE, 30)}, {"Pause": 30}),
        (AC_SCHEDULED, {"status_now": AcStatus(rcd_tripped=True)}, {"Terminate": 0}),
        (AC_SCHEDULED, {"status_now": AcStatus(Notification.STOP, 5)}, {"Terminate": 5}),
        (DC_SCHEDULED, {"status_now": DcEvseStatus(EvseStatusCode.EMERGENCY)}, {"Terminate": 0}),
        (
            DC_SCHEDULED,
            {"status_now": DcEvseStatus(EvseStatusCode.READY, None, Notification.RENEGOTIATE, 9)},
            {"ScheduleRenegotiation": 9},
        ),
        (DC_DYNAMIC, {"notice_now": Notice(EvseNotification.SERVICE_RENEGOTIATION, 60)}, {"ServiceRenegotiation": 60}),
    ],
)
def test_evse_notifications_reach_the_ev_in_the_charge_loop(
    f: Flavour, setup: dict[str, Any], expected: dict[str, int]
) -> None:
    s, model = to(f, "Charging")
    for name, value in setup.items():
        setattr(model, name, value)
    loop = step(s, f, f"{f.energy}_ChargeLoopReq")
    status = loop["EVSEStatus"]
    assert {status["EVSENotification"]: status["NotificationMaxDelay"]} == expected


def test_meter_info_when_asked_or_with_a_metering_confirmation_notice() -> None:
    s, model = to(AC_SCHEDULED, "Charging")
    loop = exchange(s, "AC_ChargeLoopReq", {**_ac_loop(AC_SCHEDULED), "MeterInfoRequested": True})
    assert loop["MeterInfo"] == {"MeterID": "MTR1", "ChargedEnergyReadingWh": 1234, "MeterTimestamp": NOW}
    model.notice_now = Notice(EvseNotification.METERING_CONFIRMATION, 10)
    loop = step(s, AC_SCHEDULED, "AC_ChargeLoopReq")
    assert loop["MeterInfo"]["MeterID"] == "MTR1" and loop["EVSEStatus"]["EVSENotification"] == "MeteringConfirmation"
    s, _ = to(DC_BPT_SCHEDULED, "Charging")
    loop = exchange(s, "DC_ChargeLoopReq", {**_dc_loop(DC_BPT_SCHEDULED), "MeterInfoRequested": True})
    assert loop["MeterInfo"]["BPT_DischargedEnergyReadingWh"] == 100


# ------------------------------------------------------------------------------------------ renegotiation
@pytest.mark.parametrize("f", [AC_SCHEDULED, DC_BPT_SCHEDULED], ids=str)
def test_schedule_renegotiation_asked_by_the_evse_and_done_by_the_ev(f: Flavour) -> None:
    s, model = to(f, "Charging")
    model.notice_now = Notice(EvseNotification.SCHEDULE_RENEGOTIATION, 10)
    assert step(s, f, f"{f.energy}_ChargeLoopReq")["EVSEStatus"]["EVSENotification"] == "ScheduleRenegotiation"
    model.notice_now, model.schedules_now = None, []
    assert step(s, f, "PowerDeliveryReq:renegotiate")["ResponseCode"] == "OK" and s.state == "Renegotiating"
    assert step(s, f, "ScheduleExchangeReq")["EVSEProcessing"] == "Ongoing" and s.state == "Rescheduling"
    model.schedules_now = schedules_offer(schedule_id=2)
    res = step(s, f, "ScheduleExchangeReq")
    assert res["Scheduled_SEResControlMode"]["ScheduleTuple"][0]["ScheduleTupleID"] == 2
    assert s.state == "Rescheduled"
    old = exchange(s, "PowerDeliveryReq", {**body_for("PowerDeliveryReq", f)})
    assert old["ResponseCode"] == "FAILED_ScheduleSelectionInvalid"  # tuple 1 is no longer on offer


@pytest.mark.parametrize("f", [AC_SCHEDULED, DC_BPT_SCHEDULED], ids=str)
def test_after_schedule_renegotiation_the_loop_goes_on_with_the_new_schedule(f: Flavour) -> None:
    s, model = to(f, "Charging")
    step(s, f, "PowerDeliveryReq:renegotiate")
    model.schedules_now = schedules_offer(schedule_id=2)
    step(s, f, "ScheduleExchangeReq")
    start = {**body_for("PowerDeliveryReq", f), "EVPowerProfile": _profile(f, 2)}
    assert exchange(s, "PowerDeliveryReq", start)["ResponseCode"] == "OK" and s.state == "Charging"
    assert model.calls[-1] == ("power_delivery True 2" if f.energy == "AC" else "power_delivery True")
    assert step(s, f, f"{f.energy}_ChargeLoopReq")["ResponseCode"] == "OK"


def test_service_renegotiation_goes_back_to_service_discovery() -> None:
    f = AC_BPT_DYNAMIC
    s, model = to(f, "PowerOff")
    assert step(s, f, "SessionStopReq:renegotiate_service")["ResponseCode"] == "OK"
    assert (s.state, s.ended, model.stopped, s.selection) == ("ServiceRenegotiation", False, [], None)
    g = AC_SCHEDULED  # the EV now wants plain AC, scheduled
    for name, state in [
        ("ServiceDiscoveryReq", "ServiceDiscovery"),
        ("ServiceSelectionReq", "ServiceSelected"),
        ("AC_ChargeParameterDiscoveryReq", "ChargeParameters"),
        ("ScheduleExchangeReq", "ScheduleExchanged"),
        ("PowerDeliveryReq", "Charging"),
        ("AC_ChargeLoopReq", "Charging"),
    ]:
        assert step(s, g, name)["ResponseCode"] == "OK" and s.state == state, name
    assert s.selection == Selection(ServiceId.AC, 1, ControlMode.SCHEDULED)


# ------------------------------------------------------------------------------------------ pause and resume
@pytest.mark.parametrize("f", [AC_SCHEDULED, DC_BPT_DYNAMIC], ids=str)
def test_pause_and_resume_with_the_old_session_id(f: Flavour) -> None:
    s, model = to(f, "PowerOff" if f.energy == "AC" else "WeldingDetection")
    res = step(s, f, "SessionStopReq:pause")
    assert res["ResponseCode"] == "OK" and s.state == "Paused" and s.ended
    assert model.stopped == ["SessionStop(Pause) by the EV"]
    paused = s.paused
    assert paused == PausedSession(SESSION.hex(), EVCCID, Selection(f.service, f.set_id, f.mode))
    part = AcPart(model) if isinstance(model, AcModel) else DcPart(model)
    if isinstance(model, DcModel):
        model.checks_done = 0  # a new cable check for the new connection
    config = Iso20Config(bidirectional=True)
    joined = Iso20Session(part, config, resume=paused, new_session_id=lambda: OTHER, wall_clock=lambda: NOW)
    res = exchange(joined, "SessionSetupReq", {"EVCCID": EVCCID}, session=SESSION)
    assert (res["ResponseCode"], joined.state, joined.session_id) == ("OK_OldSessionJoined", "Resumed", SESSION.hex())
    # straight to ChargeParameterDiscovery with the service selected before the pause
    rest = happy(f)[index_of(f, "ChargeParameters") - 1 :]
    run(joined, f, rest)
    assert joined.state == "Stopped" and model.stopped[-1] == "SessionStop(Terminate) by the EV"


def test_a_joined_session_may_go_through_authorisation_and_service_selection_again() -> None:
    f = AC_DYNAMIC
    paused = PausedSession(SESSION.hex(), EVCCID, Selection(ServiceId.AC, 2, ControlMode.DYNAMIC))
    s, _ = session(f, resume=paused)
    res = exchange(s, "SessionSetupReq", {"EVCCID": EVCCID}, session=SESSION)
    assert (res["ResponseCode"], s.state) == ("OK_OldSessionJoined", "Resumed")
    run(s, f, COMMON_HEAD[1:])  # AuthorizationSetup .. ServiceSelection, as Josev's EVCC does
    run(s, f, AC_HAPPY[len(COMMON_HEAD) :])
    assert s.state == "Stopped"


def test_joining_needs_the_same_ev_and_a_still_valid_authorisation() -> None:
    paused = PausedSession(SESSION.hex(), EVCCID, Selection(ServiceId.AC, 1, ControlMode.SCHEDULED))
    s, _ = session(AC_SCHEDULED, resume=paused, new_session_id=lambda: OTHER)
    res = exchange(s, "SessionSetupReq", {"EVCCID": "ANOTHER-EV"}, session=SESSION)
    assert (res["ResponseCode"], s.state) == ("OK_NewSessionEstablished", "SessionSetup")
    assert s.session_id == OTHER.hex()
    model = AcModel(authorisation_answers=[Authorisation.PENDING])
    s, _ = session(AC_SCHEDULED, model=model, resume=paused)
    exchange(s, "SessionSetupReq", {"EVCCID": EVCCID}, session=SESSION)
    res = step(s, AC_SCHEDULED, "AC_ChargeParameterDiscoveryReq")
    assert res["ResponseCode"] == "FAILED" and s.ended and model.ev == []


# ------------------------------------------------------------------------------------------ schedules
def _entries(schedule: dict[str, Any]) -> list[tuple[int, float]]:
    entries = schedule["PowerSchedule"]["PowerScheduleEntries"]["PowerScheduleEntry"]
    return [(e["Duration"], watts(e["Power"])) for e in entries]


def test_scheduled_offers_carry_power_and_prices_within_the_grant() -> None:
    s, _ = to(AC_BPT_SCHEDULED, "ChargeParameters")
    res = step(s, AC_BPT_SCHEDULED, "ScheduleExchangeReq")
    [tuple_] = res["Scheduled_SEResControlMode"]["ScheduleTuple"]
    charging = tuple_["ChargingSchedule"]
    assert charging["PowerSchedule"]["TimeAnchor"] == NOW
    # 50 kW asked for by the site, 22 kW the most this connector gives; the discharge hour is 0 to charge
    assert _entries(charging) == [(3_600, 11_000.0), (3_600, 22_000.0), (79_200, 0.0)]
    assert _entries(tuple_["DischargingSchedule"]) == [(3_600, 0.0), (3_600, 0.0), (79_200, -5_000.0)]
    prices = charging["AbsolutePriceSchedule"]
    assert (prices["Currency"], prices["PriceAlgorithm"]) == ("EUR", "urn:iso:std:iso:15118:-20:PriceAlgorithm:1-Power")
    stacks = prices["PriceRuleStacks"]["PriceRuleStack"]
    fees = [(x["Duration"], watts(x["PriceRule"][0]["EnergyFee"])) for x in stacks]
    assert fees == [(3_600, pytest.approx(0.30)), (82_800, pytest.approx(0.2155))]


def test_the_discharging_schedule_never_offers_more_than_authorised() -> None:
    model = AcModel(limits_now=replace(AcModel().limits_now, max_discharge_power_w=2_000.0))
    s, _ = to(AC_BPT_SCHEDULED, "ChargeParameters", model=model)
    [tuple_] = step(s, AC_BPT_SCHEDULED, "ScheduleExchangeReq")["Scheduled_SEResControlMode"]["ScheduleTuple"]
    assert min(p for _, p in _entries(tuple_["DischargingSchedule"])) == -2_000.0


def test_price_levels_when_the_tariff_has_them() -> None:
    s, _ = to(AC_SCHEDULED, "ChargeParameters", config=Iso20Config(pricing=Pricing.LEVELS))
    [tuple_] = step(s, AC_SCHEDULED, "ScheduleExchangeReq")["Scheduled_SEResControlMode"]["ScheduleTuple"]
    levels = tuple_["ChargingSchedule"]["PriceLevelSchedule"]
    assert levels["NumberOfPriceLevels"] == 3
    assert levels["PriceLevelScheduleEntries"]["PriceLevelScheduleEntry"] == [
        {"Duration": 3_600, "PriceLevel": 2},
        {"Duration": 82_800, "PriceLevel": 1},
    ]


def test_more_entries_than_the_ev_takes_are_merged_on_the_safe_side() -> None:
    power = tuple(PowerEntry(i * 600, 1_000.0 + 100 * i) for i in range(30))
    model = AcModel(schedules_now=[Schedule(1, 86_400, power)])
    s, _ = to(AC_SCHEDULED, "ChargeParameters", model=model)
    body = {**body_for("ScheduleExchangeReq", AC_SCHEDULED), "MaximumSupportingPoints": 12}
    [tuple_] = exchange(s, "ScheduleExchangeReq", body)["Scheduled_SEResControlMode"]["ScheduleTuple"]
    entries = _entries(tuple_["ChargingSchedule"])
    assert len(entries) == 12 and sum(d for d, _ in entries) == 86_400
    assert entries[-1] == (86_400 - 11 * 600, 2_100.0)  # the least power of the merged tail


def test_a_malformed_offer_from_the_port_fails_the_exchange() -> None:
    model = AcModel(schedules_now=[Schedule(1, 3_600, (PowerEntry(600, 1_000.0),))])
    s, _ = to(AC_SCHEDULED, "ChargeParameters", model=model)
    assert step(s, AC_SCHEDULED, "ScheduleExchangeReq")["ResponseCode"] == "FAILED" and s.ended


@pytest.mark.parametrize("f", [AC_BPT_DYNAMIC, DC_DYNAMIC], ids=str)
def test_dynamic_mode_passes_departure_and_energy_to_the_energy_manager(f: Flavour) -> None:
    s, model = to(f, "ChargeParameters")
    res = step(s, f, "ScheduleExchangeReq")
    assert res["EVSEProcessing"] == "Finished" and "AbsolutePriceSchedule" in res["Dynamic_SEResControlMode"]
    last = model.ev[-1]
    assert (last.departure_in_s, last.min_soc_pct, last.target_soc_pct) == (7_200, 20, 80)
    assert (last.max_energy_wh, last.min_energy_wh) == (40_000.0, 5_000.0)
    told = len(model.ev)
    run(s, f, happy(f)[index_of(f, "ScheduleExchanged") : index_of(f, "Charging")])
    step(s, f, f"{f.energy}_ChargeLoopReq")
    step(s, f, f"{f.energy}_ChargeLoopReq")
    assert len(model.ev) == told + 1  # the loop's repeats reach the energy manager once, as a change
    assert model.ev[-1].departure_in_s == 7_000


# ------------------------------------------------------------------------------------------ safety properties
def _ac_charging(f: Flavour, allowed_w: float, setpoint: float | None) -> tuple[Iso20Session, AcModel]:
    model = AcModel(limits_now=replace(AcModel().limits_now, max_discharge_power_w=allowed_w), setpoint_w=setpoint)
    s, _ = session(f, model)
    for name, _, _ in AC_HAPPY[: index_of(f, "Charging")]:
        base = name.partition(":")[0]
        s.handle(
            request(base, body_for(name, f), bytes(8) if base == "SessionSetupReq" else SESSION), namespace_of(base)
        )
    assert s.state == "Charging"
    return s, model


powers = st.floats(-1e6, 1e6, allow_nan=False) | st.sampled_from([0.0, float("nan"), float("inf"), -float("inf")])
ev_values = st.builds(lambda v, e: {"Exponent": e, "Value": v}, st.integers(-32768, 32767), st.integers(-3, 4))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    f=st.sampled_from([AC_SCHEDULED, AC_DYNAMIC, AC_BPT_SCHEDULED, AC_BPT_DYNAMIC]),
    allowed=st.sampled_from([0.0, 1e-3, 3_333.3, 7_000.0]) | st.floats(0, 1e5),
    setpoint=powers | st.none(),
    ev_max=ev_values,
    ev_discharge=ev_values,
    present=ev_values,
)
def test_no_ac_charge_loop_answer_asks_for_more_discharge_than_authorised(
    f: Flavour, allowed: float, setpoint: float | None, ev_max: Any, ev_discharge: Any, present: Any
) -> None:
    s, _ = _ac_charging(f, allowed, setpoint)
    body = _ac_loop(f)
    [key] = [k for k in body if k.endswith("ControlMode")]
    mode = {**body[key], "EVMaximumChargePower": ev_max, "EVPresentActivePower": present}
    if f.bpt:
        mode["EVMaximumDischargePower"] = ev_discharge
    _, answer = s.handle(request("AC_ChargeLoopReq", {**body, key: mode}), ISO20_AC)
    res = answer["AC_ChargeLoopRes"]
    assert res["ResponseCode"] in ("OK", "FAILED")  # a nonsensical EV value may fail; never a discharge
    target = res.get(key.replace("Req", "Res"), {}).get("EVSETargetActivePower")
    if target is not None:
        value = watts(target)
        assert value >= -allowed if f.bpt else value >= 0.0
        assert value <= 22_000.0
    codec(ISO20_AC).encode(answer)


@pytest.mark.parametrize(
    ("f", "allowed_w", "presents", "terminated_at"),
    [
        # Within the grant (and within the tolerance beyond it): charging goes on.
        pytest.param(AC_BPT_SCHEDULED, 5_000.0, [-5_000.0] * 5, None, id="at-the-grant"),
        pytest.param(AC_BPT_SCHEDULED, 5_000.0, [-5_000.0 - OVER_DISCHARGE_TOLERANCE_W] * 5, None, id="tolerance"),
        # Beyond it, loop after loop: Terminate at the third and in every answer after.
        pytest.param(AC_BPT_SCHEDULED, 5_000.0, [-7_400.0] * 5, 2, id="over-the-grant"),
        pytest.param(AC_BPT_DYNAMIC, 0.0, [-2_000.0] * 4, 2, id="no-grant"),
        pytest.param(AC_SCHEDULED, 5_000.0, [-1_000.0] * 3, 2, id="no-bpt-service"),
        # A transient that comes back inside resets the count.
        pytest.param(AC_BPT_DYNAMIC, 5_000.0, [-7_400.0, -7_400.0, -4_000.0, -7_400.0, -7_400.0], None, id="transient"),
    ],
)
def test_an_ev_giving_back_more_than_allowed_is_told_to_terminate(
    f: Flavour, allowed_w: float, presents: list[float], terminated_at: int | None
) -> None:
    s, _ = _ac_charging(f, allowed_w, None)
    notifications = []
    for present in presents:
        res = exchange(s, "AC_ChargeLoopReq", _ac_loop(f, present))
        assert res["ResponseCode"] == "OK"
        notifications.append(res.get("EVSEStatus", {}).get("EVSENotification"))
    expected = [None if terminated_at is None or i < terminated_at else "Terminate" for i in range(len(presents))]
    assert notifications == expected


def _dc_charging(f: Flavour, allowed: DcDischargeLimits, pick: str) -> tuple[Iso20Session, DcModel]:
    model = DcModel(discharge_now=allowed, dynamic_pick=pick)
    s, _ = session(f, model)
    for name, _, _ in DC_HAPPY[: index_of(f, "Charging")]:
        base = name.partition(":")[0]
        s.handle(
            request(base, body_for(name, f), bytes(8) if base == "SessionSetupReq" else SESSION), namespace_of(base)
        )
    assert s.state == "Charging"
    return s, model


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    f=st.sampled_from([DC_SCHEDULED, DC_DYNAMIC, DC_BPT_SCHEDULED, DC_BPT_DYNAMIC]),
    allowed_w=st.sampled_from([0.0, 5_000.0]) | st.floats(0, 1e5),
    allowed_a=st.sampled_from([0.0, 12.5]) | st.floats(0, 500),
    target=ev_values,
    voltage=ev_values,
    ev_discharge_a=ev_values,
    pick=st.sampled_from(["charge", "discharge"]),
)
def test_no_dc_charge_loop_discharges_beyond_the_authorised_limits(
    f: Flavour, allowed_w: float, allowed_a: float, target: Any, voltage: Any, ev_discharge_a: Any, pick: str
) -> None:
    allowed = DcDischargeLimits(max_power_w=allowed_w, max_current_a=allowed_a)
    s, model = _dc_charging(f, allowed, pick)
    body = _dc_loop(f)
    [key] = [k for k in body if k.endswith("ControlMode")]
    mode = dict(body[key])
    if f.mode is ControlMode.SCHEDULED:
        mode |= {"EVTargetCurrent": target, "EVTargetVoltage": voltage}
    if f.bpt:
        mode["EVMaximumDischargeCurrent"] = ev_discharge_a
    _, answer = s.handle(request("DC_ChargeLoopReq", {**body, "EVPresentVoltage": voltage, key: mode}), ISO20_DC)
    res = answer["DC_ChargeLoopRes"]
    res_mode = res.get(key.replace("Req", "Res"), {})
    if f.bpt and res["ResponseCode"] == "OK":
        assert watts(res_mode["EVSEMaximumDischargePower"]) <= allowed_w
        assert watts(res_mode["EVSEMaximumDischargeCurrent"]) <= allowed_a
    else:
        assert "EVSEMaximumDischargePower" not in res_mode
    volts = max(from_rational(voltage), 1.0)  # present and target voltage alike here
    floor = -min(allowed_a, allowed_w / volts) if f.bpt else 0.0  # no discharge at all when 0 is authorised
    for t in model.targets:  # what the converter was told in the scheduled loop
        assert t.current_a >= floor - 1e-9 * abs(floor)
    for d in model.demands:  # the window the energy manager got in the dynamic loop
        assert d.max_discharge_power_w <= (allowed_w if f.bpt else 0.0)
        assert d.max_discharge_current_a <= (allowed_a if f.bpt else 0.0)
    codec(ISO20_DC).encode(answer)


@given(st.floats(-1e7, 1e7, allow_nan=False))
def test_limits_on_the_wire_are_rounded_toward_zero(value: float) -> None:
    carried = from_rational(bounded(value))
    assert abs(carried) <= abs(value) and (carried == 0 or (carried > 0) == (value > 0))
    # at least 3277 steps in the 16-bit value (a smaller exponent would not fit): at most one step lost
    assert abs(carried - value) <= abs(value) / 3276 + 1e-12


# ------------------------------------------------------------------------------------------ fuzz
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    f=st.sampled_from(FLAVOURS),
    depth=st.integers(0, 12),
    name=st.sampled_from(REQUESTS),
    body=st.dictionaries(st.sampled_from(["EVCCID", "ServiceID", "ChargeProgress", "EVProcessing", "x"]), json_values),
)
def test_garbage_in_any_state_gets_a_schema_valid_answer_or_a_clean_error(
    f: Flavour, depth: int, name: str, body: dict[str, Any]
) -> None:
    s, _ = session(f)
    for step_name, _, _ in happy(f)[: min(depth, len(happy(f)) - 1)]:
        base = step_name.partition(":")[0]
        s.handle(
            request(base, body_for(step_name, f), bytes(8) if base == "SessionSetupReq" else SESSION),
            namespace_of(base),
        )
    try:
        ns, answer = s.handle(request(name, body), namespace_of(name))
    except Iso20Error:
        return
    codec(ns).encode(answer)  # whatever came in, what goes out is a valid -20 message
