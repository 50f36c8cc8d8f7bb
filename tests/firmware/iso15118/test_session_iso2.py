"""The ISO 15118-2 SECC session table, request by request: whole AC and DC sessions with EIM, an AC
session with Plug & Charge (test PKI from test_pnc), every request out of its place, wrong session ids,
the Ongoing loops, renegotiation, pause and resume, each FAILED answer, the SAScheduleList with its
SalesTariff, ChargingProfiles against the schedule. Every response is encoded with the project's ISO-2
EXI codec, so each one is checked against the schema too."""

from __future__ import annotations

import base64
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.iso15118.exi import Namespace, codec
from firmware.iso15118.session.iso2 import (
    ANSWER_WITHIN_S,
    REQUESTS,
    RESPONSE_CODES,
    SESSION_GUARDS,
    STATES,
    TRANSITIONS,
    VERDICT_CONDITIONS,
    Iso2Config,
    Iso2Error,
    Iso2Session,
    PausedIso2Session,
)
from firmware.iso15118.session.pnc import Contract, ContractStatus, PlugAndCharge, create_signature
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
from firmware.iso15118.session.values import from_physical, physical
from tests.firmware.iso15118.test_pnc import EMAID, NOW, NOW_S, encode, issue, pki

SESSION = bytes.fromhex("0102030405060708")
EVCC = "0A0B0C0D0E0F"
ISO2 = codec(Namespace.ISO2)
XSD = Path(__file__).resolve().parents[3] / "firmware/iso15118/schemas/iso15118-2/V2G_CI_MsgDataTypes.xsd"

AC_SCHEDULE = Schedule(
    schedule_id=1,
    duration_s=86_400,
    power=(PowerEntry(0, 11_000.0), PowerEntry(3_600, 7_000.0), PowerEntry(7_200, 30_000.0)),
    prices=(PriceEntry(0, 0.30), PriceEntry(3_600, 0.20), PriceEntry(7_200, 0.40)),
)
DC_SCHEDULE = Schedule(schedule_id=1, duration_s=86_400, power=(PowerEntry(0, 50_000.0),))


# ------------------------------------------------------------------------------------------ model ports
@dataclass
class AcModel:
    """An AC connector as the session sees it: it starts delivering when asked (unless refused), the
    energy manager's setpoint is ``target_power_w``, the meter has a signed reading."""

    authorisation_answers: list[Authorisation] = field(default_factory=lambda: [Authorisation.ACCEPTED])
    limits_now: AcLimits = field(
        default_factory=lambda: AcLimits(nominal_voltage_v=230.0, max_current_a=32.0, min_current_a=6.0, phases=3)
    )
    offers: list[list[Schedule]] = field(default_factory=lambda: [[AC_SCHEDULE]])
    notification: Notification = Notification.NONE
    refuse_start: bool = False
    target_power_w: float | None = 11_040.0
    signed_reading: bytes | None = b"OCMF|reading-1"
    delivering: bool = False
    calls: list[str] = field(default_factory=list)
    ev: list[EvAcParameters] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    @property
    def evse_id(self) -> str:
        return "DE*EVF*E12345"

    def authorisation(self) -> Authorisation:
        answers = self.authorisation_answers
        return answers.pop(0) if len(answers) > 1 else answers[0]

    def status(self) -> AcStatus:
        return AcStatus(
            notification=self.notification, notification_max_delay_s=10 if self.notification.value != "None" else 0
        )

    def limits(self) -> AcLimits:
        return self.limits_now

    def ev_parameters(self, params: EvAcParameters) -> None:
        self.ev.append(params)

    def schedules(self) -> list[Schedule]:
        return self.offers.pop(0) if len(self.offers) > 1 else self.offers[0]

    def power_delivery(self, start: bool, schedule_id: int | None) -> bool:
        self.calls.append(f"power_delivery {start} {schedule_id}")
        if start and self.refuse_start:
            return False
        self.delivering = start
        return True

    def charge_loop(self, ev_present_power_w: float | None) -> AcSetpoint:
        assert self.delivering, "charge loop while not delivering"
        self.calls.append("charge_loop")
        return AcSetpoint(target_power_w=self.target_power_w, present_power_w=10_000.0)

    def meter(self) -> MeterInfo | None:
        return MeterInfo("MTR-1", import_wh=12_345.6, signed=self.signed_reading)

    def session_stopped(self, reason: str) -> None:
        self.stopped.append(reason)


@dataclass
class DcModel:
    """A DC power path: the cable check passes at the second call, precharge reaches the target at once,
    the current follows the target within the limits; the contactor closes only once precharged."""

    authorisation_answers: list[Authorisation] = field(default_factory=lambda: [Authorisation.ACCEPTED])
    checks_needed: int = 2
    isolation_result: Isolation = Isolation.VALID
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
    offers: list[list[Schedule]] = field(default_factory=lambda: [[DC_SCHEDULE]])
    notification: Notification = Notification.NONE
    voltage_v: float = 0.0
    closed: bool = False
    calls: list[str] = field(default_factory=list)
    ev: list[EvDcParameters] = field(default_factory=list)
    departures: list[int | None] = field(default_factory=list)
    targets: list[DcTarget] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    _checks: int = 0

    @property
    def evse_id(self) -> str:
        return "DE*EVF*E67890"

    def authorisation(self) -> Authorisation:
        answers = self.authorisation_answers
        return answers.pop(0) if len(answers) > 1 else answers[0]

    def status(self) -> DcEvseStatus:
        iso = Isolation.VALID if self._checks >= self.checks_needed else None
        return DcEvseStatus(EvseStatusCode.READY, iso, self.notification)

    def limits(self) -> DcLimits:
        return self.limits_now

    def ev_parameters(self, params: EvDcParameters) -> None:
        self.ev.append(params)

    def ev_departure(self, departure_in_s: int | None) -> None:
        self.departures.append(departure_in_s)

    def ev_status(self, status: EvDcStatus) -> None:
        self.calls.append(f"ev_status {status.soc_pct}")

    def cable_check(self) -> Isolation:
        self._checks += 1
        return self.isolation_result if self._checks >= self.checks_needed else Isolation.INVALID

    def precharge(self, target: DcTarget) -> DcOutput:
        self.voltage_v = target.voltage_v
        return DcOutput(self.voltage_v, 0.0)

    def power_delivery(self, on: bool) -> bool:
        self.calls.append(f"power_delivery {on}")
        if on and self.voltage_v == 0.0:
            return False
        self.closed = on
        return True

    def current_demand(self, target: DcTarget) -> DcOutput:
        assert self.closed, "current demanded with the contactor open"
        self.targets.append(target)
        current = min(target.current_a, self.limits_now.max_current_a)
        return DcOutput(target.voltage_v, current)

    def welding_detection(self) -> float:
        return 0.0 if not self.closed else self.voltage_v

    def schedules(self) -> list[Schedule]:
        return self.offers.pop(0) if len(self.offers) > 1 else self.offers[0]

    def meter(self) -> MeterInfo | None:
        return None

    def session_stopped(self, reason: str) -> None:
        self.stopped.append(reason)


def _signature_placeholder() -> dict[str, Any]:
    """The CPS's Signature as a backend returns it (the session passes it on unchecked)."""
    reference = {
        "URI": "#id1",
        "Transforms": {"Transform": [{"Algorithm": "http://www.w3.org/TR/canonical-exi/"}]},
        "DigestMethod": {"Algorithm": "http://www.w3.org/2001/04/xmlenc#sha256"},
        "DigestValue": base64.b64encode(bytes(32)).decode(),
    }
    return {
        "SignedInfo": {
            "CanonicalizationMethod": {"Algorithm": "http://www.w3.org/TR/canonical-exi/"},
            "SignatureMethod": {"Algorithm": "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"},
            "Reference": [reference],
        },
        "SignatureValue": {"value": base64.b64encode(bytes(64)).decode()},
    }


def installation_reply(code: str = "OK") -> dict[str, Any]:
    p = pki()
    return {
        "V2G_Message": {
            "Header": {"SessionID": "FFFFFFFFFFFFFFFF", "Signature": _signature_placeholder()},
            "Body": {
                "CertificateInstallationRes": {
                    "ResponseCode": code,
                    "SAProvisioningCertificateChain": {"Certificate": p.root.b64},
                    "ContractSignatureCertChain": {"Id": "id1", **p.chain()},
                    "ContractSignatureEncryptedPrivateKey": {
                        "Id": "id2",
                        "value": base64.b64encode(bytes(48)).decode(),
                    },
                    "DHpublickey": {"Id": "id3", "value": base64.b64encode(b"\x04" + bytes(64)).decode()},
                    "eMAID": {"Id": "id4", "value": EMAID},
                }
            },
        }
    }


@dataclass
class Backend:
    """The PnC port: the backend's word on contracts, and certificates from the CPS."""

    statuses: list[ContractStatus] = field(default_factory=lambda: [ContractStatus.ACCEPTED])
    installation: dict[str, Any] | None = field(default_factory=installation_reply)
    requests: list[Mapping[str, Any]] = field(default_factory=list)
    contracts: list[Contract] = field(default_factory=list)

    def contract_status(self, contract: Contract) -> ContractStatus:
        self.contracts.append(contract)
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def certificate_installation(self, request: Mapping[str, Any]) -> Mapping[str, Any] | None:
        self.requests.append(request)
        return self.installation

    def certificate_update(self, request: Mapping[str, Any], contract: Contract) -> Mapping[str, Any] | None:
        self.requests.append(request)
        self.contracts.append(contract)
        if self.installation is None:
            return None
        body = dict(self.installation["V2G_Message"]["Body"]["CertificateInstallationRes"])
        return {
            "V2G_Message": {
                "Header": self.installation["V2G_Message"]["Header"],
                "Body": {"CertificateUpdateRes": body},
            }
        }


# ------------------------------------------------------------------------------------------ requests
def ev_status(soc: int = 50) -> dict[str, Any]:
    return {"EVReady": True, "EVErrorCode": "NO_ERROR", "EVRESSSOC": soc}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


AC_PARAMETERS = {
    "DepartureTime": 7_200,
    "EAmount": physical(20_000, "Wh"),
    "EVMaxVoltage": physical(400, "V"),
    "EVMaxCurrent": physical(32, "A"),
    "EVMinCurrent": physical(6, "A"),
}
DC_PARAMETERS = {
    "DepartureTime": 3_600,
    "DC_EVStatus": ev_status(),
    "EVMaximumCurrentLimit": physical(200, "A"),
    "EVMaximumPowerLimit": physical(90_000, "W"),
    "EVMaximumVoltageLimit": physical(420, "V"),
    "EVEnergyCapacity": physical(60_000, "Wh"),
    "EVEnergyRequest": physical(30_000, "Wh"),
    "FullSOC": 100,
    "BulkSOC": 80,
}
ROOT_IDS = {"RootCertificateID": [{"X509IssuerName": "CN=V2G Root CA", "X509SerialNumber": 4711}]}

BODIES: dict[str, dict[str, Any]] = {
    "SessionSetupReq": {"EVCCID": EVCC},
    "ServiceDiscoveryReq": {},
    "ServiceDetailReq": {"ServiceID": 1},
    "ServiceDetailReq:certificate": {"ServiceID": 2},
    "PaymentServiceSelectionReq": {
        "SelectedPaymentOption": "ExternalPayment",
        "SelectedServiceList": {"SelectedService": [{"ServiceID": 1}]},
    },
    "PaymentServiceSelectionReq:pnc": {
        "SelectedPaymentOption": "Contract",
        "SelectedServiceList": {"SelectedService": [{"ServiceID": 1}, {"ServiceID": 2, "ParameterSetID": 1}]},
    },
    "AuthorizationReq": {},
    "ChargeParameterDiscoveryReq": {
        "MaxEntriesSAScheduleTuple": 24,
        "RequestedEnergyTransferMode": "AC_three_phase_core",
        "AC_EVChargeParameter": AC_PARAMETERS,
    },
    "ChargeParameterDiscoveryReq:dc": {
        "RequestedEnergyTransferMode": "DC_extended",
        "DC_EVChargeParameter": DC_PARAMETERS,
    },
    "PowerDeliveryReq": {
        "ChargeProgress": "Start",
        "SAScheduleTupleID": 1,
        "ChargingProfile": {
            "ProfileEntry": [
                {"ChargingProfileEntryStart": 0, "ChargingProfileEntryMaxPower": physical(11_000, "W")},
                {"ChargingProfileEntryStart": 3_600, "ChargingProfileEntryMaxPower": physical(7_000, "W")},
            ]
        },
    },
    "PowerDeliveryReq:stop": {"ChargeProgress": "Stop", "SAScheduleTupleID": 1},
    "PowerDeliveryReq:renegotiate": {"ChargeProgress": "Renegotiate", "SAScheduleTupleID": 1},
    "PowerDeliveryReq:dc": {
        "ChargeProgress": "Start",
        "SAScheduleTupleID": 1,
        "DC_EVPowerDeliveryParameter": {"DC_EVStatus": ev_status(), "ChargingComplete": False},
    },
    "PowerDeliveryReq:dc-stop": {
        "ChargeProgress": "Stop",
        "SAScheduleTupleID": 1,
        "DC_EVPowerDeliveryParameter": {"DC_EVStatus": ev_status(80), "ChargingComplete": True},
    },
    "ChargingStatusReq": {},
    "CableCheckReq": {"DC_EVStatus": ev_status()},
    "PreChargeReq": {
        "DC_EVStatus": ev_status(),
        "EVTargetVoltage": physical(380, "V"),
        "EVTargetCurrent": physical(2, "A"),
    },
    "CurrentDemandReq": {
        "DC_EVStatus": ev_status(51),
        "EVTargetCurrent": physical(100, "A"),
        "EVMaximumVoltageLimit": physical(420, "V"),
        "ChargingComplete": False,
        "EVTargetVoltage": physical(390, "V"),
    },
    "WeldingDetectionReq": {"DC_EVStatus": ev_status(80)},
    "SessionStopReq": {"ChargingSession": "Terminate"},
    "SessionStopReq:pause": {"ChargingSession": "Pause"},
    "PaymentDetailsReq": {"eMAID": EMAID, "ContractSignatureCertChain": {}},
    "CertificateInstallationReq": {},
    "CertificateUpdateReq": {},
    "MeteringReceiptReq": {},
}


def req(name: str, body: dict[str, Any], session: bytes = SESSION, signature: Any = None) -> dict[str, Any]:
    header: dict[str, Any] = {"SessionID": session.hex().upper()}
    if signature is not None:
        header["Signature"] = signature
    return {"V2G_Message": {"Header": header, "Body": {name: body}}}


def sign(elements: dict[str, tuple[str, Mapping[str, Any]]], key: Any) -> dict[str, Any] | None:
    """The EV's signature, or none when the (deliberately broken) element cannot be encoded."""
    try:
        return create_signature(elements, key, encode)
    except ValueError:
        return None


class Run:
    """One session under test: builds each step's request (signed where PnC wants it), checks that every
    answer encodes with the ISO-2 schema, and remembers what later requests echo (challenge, meter)."""

    def __init__(self, session: Iso2Session) -> None:
        self.session = session
        self.challenge = b""
        self.meter: dict[str, Any] | None = None
        self.receipt_pending = False
        self.responses: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def request(self, step: str, change: Mapping[str, Any] | None = None) -> dict[str, Any]:
        name = step.split(":")[0]
        p = pki()
        body: dict[str, Any] = dict(BODIES.get(step, BODIES.get(name, {})))
        body.update(change or {})
        signature = None
        if step == "AuthorizationReq:pnc":
            body = {"Id": "ID1", "GenChallenge": b64(self.challenge), **(change or {})}
            signature = sign({"ID1": (name, body)}, p.contract.key)
        elif name == "PaymentDetailsReq":
            body = {"eMAID": EMAID, "ContractSignatureCertChain": p.chain(), **(change or {})}
        elif name == "CertificateInstallationReq":
            body = {
                "Id": "ID1",
                "OEMProvisioningCert": p.oem.b64,
                "ListOfRootCertificateIDs": ROOT_IDS,
                **(change or {}),
            }
            signature = sign({"ID1": (name, body)}, p.oem.key)
        elif name == "CertificateUpdateReq":
            body = {
                "Id": "ID1",
                "ContractSignatureCertChain": p.chain(),
                "eMAID": EMAID,
                "ListOfRootCertificateIDs": ROOT_IDS,
                **(change or {}),
            }
            signature = sign({"ID1": (name, body)}, p.contract.key)
        elif name == "MeteringReceiptReq":
            meter = self.meter or {"MeterID": "MTR-1"}  # out of place: no MeterInfo was sent yet
            body = {"Id": "ID2", "SessionID": SESSION.hex().upper(), "SAScheduleTupleID": 1, "MeterInfo": meter}
            body.update(change or {})
            signature = sign({"ID2": (name, body)}, p.contract.key)
        return req(name, body, signature=signature)

    def send(self, message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        response = self.session.handle(message)
        ISO2.decode(ISO2.encode(response))  # the schema accepts every answer
        [(name, body)] = response["V2G_Message"]["Body"].items()
        [(request, _)] = message["V2G_Message"]["Body"].items()
        assert name == request[:-3] + "Res"
        assert body["ResponseCode"] in RESPONSE_CODES
        if name == "PaymentDetailsRes" and body["ResponseCode"] == "OK":
            self.challenge = base64.b64decode(body["GenChallenge"])
        if "MeterInfo" in body:
            self.meter = body["MeterInfo"]
        if body.get("ReceiptRequired"):
            self.receipt_pending = True
        if name == "MeteringReceiptRes":
            self.receipt_pending = False
        self.responses.append((name, body, response["V2G_Message"]["Header"]))
        return name, body

    def step(self, step: str, change: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.send(self.request(step, change))[1]

    def run(self, steps: list[tuple[str, str, str]]) -> None:
        for step, code, state in steps:
            body = self.step(step)
            assert (body["ResponseCode"], self.session.state) == (code, state), f"{step}: {body}"


def ac_session(model: AcModel | None = None, **kwargs: Any) -> tuple[Run, AcModel]:
    model = model or AcModel()
    session = Iso2Session(
        ac=model,
        new_session_id=lambda: SESSION,
        random_bytes=lambda n: bytes(range(n)),
        wall_clock=lambda: NOW_S,
        **kwargs,
    )
    return Run(session), model


def dc_session(model: DcModel | None = None, **kwargs: Any) -> tuple[Run, DcModel]:
    model = model or DcModel()
    session = Iso2Session(dc=model, new_session_id=lambda: SESSION, wall_clock=lambda: NOW_S, **kwargs)
    return Run(session), model


def pnc_session(
    model: AcModel | None = None, backend: Backend | None = None, **kwargs: Any
) -> tuple[Run, AcModel, Backend]:
    backend = backend or Backend()
    config = kwargs.pop("config", Iso2Config(metering_receipts=True))
    plug = PlugAndCharge((pki().root.cert,), backend, encode)
    run, model = ac_session(model, tls=True, pnc=plug, config=config, **kwargs)
    return run, model, backend


HAPPY_AC = [
    ("SessionSetupReq", "OK_NewSessionEstablished", "SessionSetup"),
    ("ServiceDiscoveryReq", "OK", "ServiceDiscovery"),
    ("ServiceDetailReq", "OK", "ServiceDetail"),
    ("PaymentServiceSelectionReq", "OK", "PaymentSelected"),
    ("AuthorizationReq", "OK", "Authorised"),
    ("ChargeParameterDiscoveryReq", "OK", "ChargeParametersDone"),
    ("PowerDeliveryReq", "OK", "Charging"),
    ("ChargingStatusReq", "OK", "Charging"),
    ("ChargingStatusReq", "OK", "Charging"),
    ("PowerDeliveryReq:stop", "OK", "PowerOff"),
    ("SessionStopReq", "OK", "Stopped"),
]
HAPPY_DC = [
    ("SessionSetupReq", "OK_NewSessionEstablished", "SessionSetup"),
    ("ServiceDiscoveryReq", "OK", "ServiceDiscovery"),
    ("PaymentServiceSelectionReq", "OK", "PaymentSelected"),
    ("AuthorizationReq", "OK", "Authorised"),
    ("ChargeParameterDiscoveryReq:dc", "OK", "ChargeParametersDone"),
    ("CableCheckReq", "OK", "CableChecking"),
    ("CableCheckReq", "OK", "CableChecked"),
    ("PreChargeReq", "OK", "PreCharging"),
    ("PreChargeReq", "OK", "PreCharging"),
    ("PowerDeliveryReq:dc", "OK", "Charging"),
    ("CurrentDemandReq", "OK", "Charging"),
    ("CurrentDemandReq", "OK", "Charging"),
    ("PowerDeliveryReq:dc-stop", "OK", "PowerOff"),
    ("WeldingDetectionReq", "OK", "WeldingDetection"),
    ("SessionStopReq", "OK", "Stopped"),
]
HAPPY_PNC = [
    ("SessionSetupReq", "OK_NewSessionEstablished", "SessionSetup"),
    ("ServiceDiscoveryReq", "OK", "ServiceDiscovery"),
    ("ServiceDetailReq:certificate", "OK", "ServiceDetail"),
    ("PaymentServiceSelectionReq:pnc", "OK", "PaymentSelected"),
    ("CertificateInstallationReq", "OK", "CertificateInstalled"),
    ("PaymentDetailsReq", "OK", "PaymentDetails"),
    ("AuthorizationReq:pnc", "OK", "Authorised"),
    ("ChargeParameterDiscoveryReq", "OK", "ChargeParametersDone"),
    ("PowerDeliveryReq", "OK", "Charging"),
    ("ChargingStatusReq", "OK", "Charging"),  # ReceiptRequired: a new signed reading
    ("MeteringReceiptReq", "OK", "Charging"),
    ("ChargingStatusReq", "OK", "Charging"),
    ("PowerDeliveryReq:stop", "OK", "PowerOff"),
    ("SessionStopReq", "OK", "Stopped"),
]


def index_of(steps: list[tuple[str, str, str]], step: str) -> int:
    return next(i for i, (s, _, _) in enumerate(steps) if s == step)


# ------------------------------------------------------------------------------------------ the table
def test_the_table_names_only_known_states_conditions_and_requests() -> None:
    used = {s for _, sources, dest, _ in TRANSITIONS for s in (*sources, dest)}
    assert used == set(STATES)
    conditions = {c for *_, conds in TRANSITIONS for c in conds}
    assert conditions <= SESSION_GUARDS | VERDICT_CONDITIONS and not SESSION_GUARDS & VERDICT_CONDITIONS
    assert all(callable(getattr(Iso2Session, c)) for c in conditions)
    body = {e.get("name") for e in ET.parse(XSD.parent / "V2G_CI_MsgBody.xsd").iter() if e.tag.endswith("element")}
    assert {r for r in REQUESTS} == {n for n in body if n and n.endswith("Req")}  # every ISO-2 request, no other
    assert set(ANSWER_WITHIN_S) == set(REQUESTS)


def test_the_response_codes_are_the_schemas() -> None:
    namespace = "{http://www.w3.org/2001/XMLSchema}"
    root = ET.parse(XSD).getroot()
    [codes] = [t for t in root.iter(namespace + "simpleType") if t.get("name") == "responseCodeType"]
    assert RESPONSE_CODES == tuple(e.get("value") for e in codes.iter(namespace + "enumeration"))


def test_a_whole_ac_session_with_eim() -> None:
    run, model = ac_session()
    run.run(HAPPY_AC)
    session = run.session
    assert session.ended and model.stopped == ["SessionStop(Terminate) by the EV"]
    _, setup, header = run.responses[0]
    assert header["SessionID"] == SESSION.hex().upper()
    assert setup["EVSEID"] == "DE*EVF*E12345" and setup["EVSETimeStamp"] == int(NOW_S)
    _, discovery, _ = run.responses[1]
    assert discovery["PaymentOptionList"] == {"PaymentOption": ["ExternalPayment"]}
    assert discovery["ChargeService"]["SupportedEnergyTransferMode"]["EnergyTransferMode"] == [
        "AC_single_phase_core",
        "AC_three_phase_core",
    ]
    assert "ServiceList" not in discovery  # no PnC, no TLS: no value-added services
    [params] = model.ev
    assert params == EvAcParameters(
        max_current_a=32.0, min_current_a=6.0, max_voltage_v=400.0, energy_request_wh=20_000.0, departure_in_s=7_200
    )
    _, cpd, _ = run.responses[5]
    evse = cpd["AC_EVSEChargeParameter"]
    assert from_physical(evse["EVSENominalVoltage"]) == 230 and from_physical(evse["EVSEMaxCurrent"]) == 32
    assert model.calls[0] == "power_delivery True 1" and model.calls[-1] == "power_delivery False None"
    _, status, _ = run.responses[7]
    assert status["SAScheduleTupleID"] == 1 and status["EVSEID"] == "DE*EVF*E12345"
    assert from_physical(status["EVSEMaxCurrent"]) == pytest.approx(16.0, abs=0.01)  # 11 040 W / (230 V * 3)
    assert status["MeterInfo"]["MeterReading"] == 12_345 and "ReceiptRequired" not in status  # EIM: no receipts
    assert status["AC_EVSEStatus"] == {"NotificationMaxDelay": 0, "EVSENotification": "None", "RCD": False}
    assert session.energy_mode == "AC_three_phase_core" and session.payment == "ExternalPayment"


def test_a_whole_dc_session_with_eim() -> None:
    run, model = dc_session()
    run.run(HAPPY_DC)
    assert model.stopped == ["SessionStop(Terminate) by the EV"]
    _, discovery, _ = run.responses[1]
    assert discovery["ChargeService"]["SupportedEnergyTransferMode"]["EnergyTransferMode"] == ["DC_extended"]
    [params] = model.ev
    assert (params.max_current_a, params.max_voltage_v, params.bulk_soc_pct) == (200.0, 420.0, 80)
    assert model.departures == [3_600]
    _, cpd, _ = run.responses[4]
    [entry] = cpd["SAScheduleList"]["SAScheduleTuple"][0]["PMaxSchedule"]["PMaxScheduleEntry"]
    assert entry["RelativeTimeInterval"] == {"start": 0, "duration": 86_400} and from_physical(entry["PMax"]) == 50_000
    assert from_physical(cpd["DC_EVSEChargeParameter"]["EVSEMaximumPowerLimit"]) == 50_000
    processing = [body["EVSEProcessing"] for name, body, _ in run.responses if name == "CableCheckRes"]
    assert processing == ["Ongoing", "Finished"]
    _, demand, _ = run.responses[10]
    assert from_physical(demand["EVSEPresentCurrent"]) == 100 and demand["EVSEID"] == "DE*EVF*E67890"
    assert demand["SAScheduleTupleID"] == 1 and demand["DC_EVSEStatus"]["EVSEStatusCode"] == "EVSE_Ready"
    assert "power_delivery True" in model.calls and model.calls[-1].startswith("ev_status")
    assert "power_delivery False" in model.calls


def test_a_whole_ac_session_with_plug_and_charge() -> None:
    run, _, backend = pnc_session()
    run.run(HAPPY_PNC)
    session = run.session
    _, discovery, _ = run.responses[1]
    assert discovery["PaymentOptionList"]["PaymentOption"] == ["Contract", "ExternalPayment"]
    [service] = discovery["ServiceList"]["Service"]
    assert (service["ServiceID"], service["ServiceCategory"]) == (2, "ContractCertificate")
    _, detail, _ = run.responses[2]
    names = [s["Parameter"][0]["stringValue"] for s in detail["ServiceParameterList"]["ParameterSet"]]
    assert names == ["Installation", "Update"]
    _, installed, header = run.responses[4]
    assert installed["eMAID"]["value"] == EMAID and "Signature" in header  # the CPS's, passed on
    assert header["SessionID"] == SESSION.hex().upper()  # ours, not the backend's
    assert backend.requests[0]["V2G_Message"]["Body"]["CertificateInstallationReq"]["Id"] == "ID1"
    _, details, _ = run.responses[5]
    assert base64.b64decode(details["GenChallenge"]) == bytes(range(16)) and details["EVSETimeStamp"] == int(NOW_S)
    assert session.contract_chain is not None and session.contract_chain.emaid == EMAID
    _, status, _ = run.responses[9]
    assert status["ReceiptRequired"] is True and status["MeterInfo"]["SigMeterReading"] == b64(b"OCMF|reading-1")
    [receipt] = session.metering_receipts
    assert receipt["MeteringReceiptReq"]["MeterInfo"] == status["MeterInfo"]
    _, again, _ = run.responses[11]
    assert again["ReceiptRequired"] is False  # the same signed reading is not asked for twice
    assert len(backend.contracts) == 2  # PaymentDetails and the one AuthorizationReq


# ------------------------------------------------------------------------------------------ sequence
COMMON_NEXT = {
    "Idle": {"SessionSetupReq"},
    "SessionSetup": {"ServiceDiscoveryReq", "SessionStopReq"},
    "ServiceDiscovery": {"ServiceDetailReq", "PaymentServiceSelectionReq", "SessionStopReq"},
    "ServiceDetail": {"ServiceDetailReq", "PaymentServiceSelectionReq", "SessionStopReq"},
    "PaymentSelected": {"AuthorizationReq", "SessionStopReq"},
    "Authorised": {"ChargeParameterDiscoveryReq", "SessionStopReq"},
}
AC_NEXT = {
    **COMMON_NEXT,
    "ChargeParametersDone": {"ChargeParameterDiscoveryReq", "PowerDeliveryReq", "SessionStopReq"},
    "Charging": {"ChargingStatusReq", "PowerDeliveryReq"},
    "PowerOff": {"SessionStopReq"},
}
DC_NEXT = {
    **COMMON_NEXT,
    "ChargeParametersDone": {"ChargeParameterDiscoveryReq", "CableCheckReq", "PowerDeliveryReq", "SessionStopReq"},
    "CableChecking": {"CableCheckReq", "SessionStopReq"},
    "CableChecked": {"PreChargeReq", "PowerDeliveryReq", "SessionStopReq"},
    "PreCharging": {"PreChargeReq", "PowerDeliveryReq", "SessionStopReq"},
    "Charging": {"CurrentDemandReq", "PowerDeliveryReq"},
    "PowerOff": {"WeldingDetectionReq", "SessionStopReq"},
    "WeldingDetection": {"WeldingDetectionReq", "SessionStopReq"},
}
PNC_NEXT = {
    **AC_NEXT,
    "PaymentSelected": {"CertificateInstallationReq", "PaymentDetailsReq", "SessionStopReq"},
    "CertificateInstalled": {"PaymentDetailsReq", "SessionStopReq"},
    "PaymentDetails": {"AuthorizationReq", "SessionStopReq"},
}
PATHS = {"ac": (HAPPY_AC, AC_NEXT), "dc": (HAPPY_DC, DC_NEXT), "pnc": (HAPPY_PNC, PNC_NEXT)}


def new_run(path: str) -> Run:
    return {"ac": lambda: ac_session()[0], "dc": lambda: dc_session()[0], "pnc": lambda: pnc_session()[0]}[path]()


def _prefixes() -> list[Any]:
    """Each distinct place on each whole session: (path, steps taken), the receipt wait counted apart."""
    out, seen = [], set()
    for path, (steps, _) in PATHS.items():
        for n in range(len(steps)):
            state = steps[n - 1][2] if n else "Idle"
            key = (path, state, path == "pnc" and n == index_of(steps, "MeteringReceiptReq"))
            if key not in seen:
                seen.add(key)
                out.append(pytest.param(path, n, id=f"{path}-{state}{'-receipt' if key[2] else ''}"))
    return out


@pytest.mark.parametrize(("path", "steps"), _prefixes())
def test_every_request_out_of_its_place_is_a_sequence_error_that_ends_the_session(path: str, steps: int) -> None:
    happy, nexts = PATHS[path]
    probe = new_run(path)
    probe.run(happy[:steps])
    expected = nexts[probe.session.state] | ({"MeteringReceiptReq"} if probe.receipt_pending else set())
    assert {r for r in REQUESTS if probe.session.accepts(r)} == expected
    for name in sorted(set(REQUESTS) - expected):
        run = new_run(path)
        run.run(happy[:steps])
        state = run.session.state
        _, body = run.send(run.request(name))
        assert body["ResponseCode"] == "FAILED_SequenceError", (state, name)
        model_stops = run.session.stop_reason or ""
        assert run.session.ended and f"{name} not expected in state {state}" in model_stops
        _, again = run.send(run.request("SessionStopReq"))
        assert again["ResponseCode"] == "FAILED_SequenceError"  # nothing more once ended


@pytest.mark.parametrize("bad", [bytes(8), b"\x01\x02\x03\x04\x05\x06\x07\x09"])
def test_a_wrong_session_id_is_an_unknown_session(bad: bytes) -> None:
    run, model = ac_session()
    run.run(HAPPY_AC[:1])
    _, body = run.send(req("ServiceDiscoveryReq", {}, session=bad))
    assert body["ResponseCode"] == "FAILED_UnknownSession" and run.session.ended
    assert set(body) >= {"PaymentOptionList", "ChargeService"} and len(model.stopped) == 1


@pytest.mark.parametrize(
    "message",
    [
        {},
        {"V2G_Message": {}},
        {"V2G_Message": {"Header": {}, "Body": {}}},
        {"V2G_Message": {"Header": {}, "Body": {"SessionSetupRes": {}}}},
        {"V2G_Message": {"Header": {}, "Body": {"ContractAuthenticationReq": {}}}},  # DIN, not ISO-2
        {"V2G_Message": {"Header": {}, "Body": {"SessionSetupReq": []}}},
        [],
    ],
)
def test_something_that_is_not_an_iso2_request_raises(message: Any) -> None:
    run, _ = ac_session()
    with pytest.raises(Iso2Error):
        run.session.handle(message)


def test_a_session_needs_one_port_and_a_valid_evse_id() -> None:
    with pytest.raises(Iso2Error, match="exactly one port"):
        Iso2Session()
    with pytest.raises(Iso2Error, match="exactly one port"):
        Iso2Session(ac=AcModel(), dc=DcModel())

    class Short(AcModel):
        @property
        def evse_id(self) -> str:
            return "DE*1"

    with pytest.raises(Iso2Error, match="EVSEID"):
        Iso2Session(ac=Short())
    with pytest.raises(ValueError, match="dc_modes"):
        Iso2Config(dc_modes=("AC_three_phase_core",))


# ------------------------------------------------------------------------------------------ Ongoing loops
def test_eim_authorisation_waits_for_the_customer_until_accepted() -> None:
    pending, accepted = Authorisation.PENDING, Authorisation.ACCEPTED
    run, _ = ac_session(AcModel(authorisation_answers=[pending, pending, accepted]))
    run.run(HAPPY_AC[:4])
    answers = [run.step("AuthorizationReq")["EVSEProcessing"] for _ in range(3)]
    waiting = "Ongoing_WaitingForCustomerInteraction"
    assert answers == [waiting, waiting, "Finished"] and run.session.state == "Authorised"


def test_charge_parameters_are_ongoing_until_the_energy_manager_has_an_offer() -> None:
    run, model = ac_session(AcModel(offers=[[], [], [AC_SCHEDULE]]))
    run.run(HAPPY_AC[:5])
    first = run.step("ChargeParameterDiscoveryReq")
    assert first["EVSEProcessing"] == "Ongoing" and "SAScheduleList" not in first
    assert run.session.state == "ChargeParameters"
    run.step("ChargeParameterDiscoveryReq")
    last = run.step("ChargeParameterDiscoveryReq")
    assert last["EVSEProcessing"] == "Finished" and run.session.state == "ChargeParametersDone"
    assert len(model.ev) == 3


def test_pnc_authorisation_is_ongoing_while_the_backend_decides_and_only_the_first_request_is_signed() -> None:
    backend = Backend(statuses=[ContractStatus.ACCEPTED, ContractStatus.PENDING, ContractStatus.ACCEPTED])
    run, _, _ = pnc_session(backend=backend)
    run.run(HAPPY_PNC[:6])
    assert run.step("AuthorizationReq:pnc")["EVSEProcessing"] == "Ongoing"
    unsigned = run.send(req("AuthorizationReq", {"Id": "ID1", "GenChallenge": b64(run.challenge)}))[1]
    assert unsigned["ResponseCode"] == "OK" and unsigned["EVSEProcessing"] == "Finished"
    assert run.session.state == "Authorised"


# ------------------------------------------------------------------------------------------ FAILED answers
def _after(steps: list[tuple[str, str, str]], step: str) -> list[tuple[str, str, str]]:
    return steps[: index_of(steps, step)]


FAILURES: list[tuple[str, str, dict[str, Any], Any, str]] = [
    # (path, the step that fails, change to its body, model/config tweak, expected code)
    ("ac", "PaymentServiceSelectionReq", {"SelectedPaymentOption": "Contract"}, None, "FAILED_PaymentSelectionInvalid"),
    (
        "ac",
        "PaymentServiceSelectionReq",
        {"SelectedServiceList": {"SelectedService": [{"ServiceID": 2}]}},
        None,
        "FAILED_NoChargeServiceSelected",
    ),
    (
        "ac",
        "PaymentServiceSelectionReq",
        {"SelectedServiceList": {"SelectedService": [{"ServiceID": 1}, {"ServiceID": 99}]}},
        None,
        "FAILED_ServiceSelectionInvalid",
    ),
    ("ac", "ServiceDetailReq", {"ServiceID": 99}, None, "FAILED_ServiceIDInvalid"),
    ("ac", "AuthorizationReq", {}, "rejected", "FAILED"),
    (
        "ac",
        "ChargeParameterDiscoveryReq",
        {"RequestedEnergyTransferMode": "DC_extended"},
        None,
        "FAILED_WrongEnergyTransferMode",
    ),
    ("ac", "ChargeParameterDiscoveryReq", {}, "single-phase", "FAILED_WrongEnergyTransferMode"),
    (
        "ac",
        "ChargeParameterDiscoveryReq",
        {"AC_EVChargeParameter": {**AC_PARAMETERS, "EVMinCurrent": physical(40, "A")}},
        None,
        "FAILED_WrongChargeParameter",
    ),
    (
        "ac",
        "ChargeParameterDiscoveryReq",
        {"AC_EVChargeParameter": {**AC_PARAMETERS, "EVMaxCurrent": physical(-16, "A")}},
        None,
        "FAILED_WrongChargeParameter",
    ),
    ("ac", "PowerDeliveryReq", {"SAScheduleTupleID": 9}, None, "FAILED_TariffSelectionInvalid"),
    ("ac", "PowerDeliveryReq", {}, "refuse-start", "FAILED_PowerDeliveryNotApplied"),
    ("ac", "SessionStopReq", {"ChargingSession": "Hibernate"}, None, "FAILED"),
    ("dc", "CableCheckReq", {}, "insulation-fault", "FAILED"),
    (
        "dc",
        "ChargeParameterDiscoveryReq:dc",
        {"DC_EVChargeParameter": {**DC_PARAMETERS, "EVMaximumCurrentLimit": physical(-50, "A")}},
        None,
        "FAILED_WrongChargeParameter",
    ),
    (
        "dc",
        "ChargeParameterDiscoveryReq:dc",
        {"DC_EVChargeParameter": {**DC_PARAMETERS, "EVMaximumVoltageLimit": physical(100, "V")}},
        None,
        "FAILED_WrongChargeParameter",
    ),
    (
        "dc",
        "ChargeParameterDiscoveryReq:dc",
        {"RequestedEnergyTransferMode": "DC_extended", "AC_EVChargeParameter": AC_PARAMETERS},
        "drop-dc-parameter",
        "FAILED_WrongChargeParameter",
    ),
    ("dc", "CurrentDemandReq", {"EVTargetCurrent": physical(-20, "A")}, None, "FAILED_WrongChargeParameter"),
    ("dc", "PreChargeReq", {"EVTargetVoltage": physical(-380, "V")}, None, "FAILED_WrongChargeParameter"),
    ("dc", "CurrentDemandReq", {"EVTargetCurrent": {"Multiplier": 9, "Value": 1}}, None, "FAILED"),
    ("pnc", "CertificateInstallationReq", {}, "no-backend", "FAILED_NoCertificateAvailable"),
    ("pnc", "CertificateInstallationReq", {}, "backend-failed", "FAILED"),  # the CPS's own code, passed on
    ("pnc", "CertificateInstallationReq", {}, "backend-garbage", "FAILED_NoCertificateAvailable"),
    ("pnc", "CertificateInstallationReq", {}, "unsigned", "FAILED_SignatureError"),
    ("pnc", "PaymentDetailsReq", {}, "unknown-root", "FAILED_CertChainError"),
    ("pnc", "PaymentDetailsReq", {}, "expired-leaf", "FAILED_CertificateExpired"),
    ("pnc", "PaymentDetailsReq", {"eMAID": "DEEVFC999999999"}, None, "FAILED"),
    ("pnc", "PaymentDetailsReq", {}, ContractStatus.CERTIFICATE_REVOKED, "FAILED_CertificateRevoked"),
    ("pnc", "PaymentDetailsReq", {}, ContractStatus.CONTRACT_CANCELLED, "FAILED_ContractCanceled"),
    ("pnc", "PaymentDetailsReq", {}, ContractStatus.REJECTED, "FAILED"),
    ("pnc", "AuthorizationReq:pnc", {"GenChallenge": b64(bytes(16))}, None, "FAILED_ChallengeInvalid"),
    ("pnc", "AuthorizationReq:pnc", {}, "unsigned", "FAILED_SignatureError"),
    ("pnc", "AuthorizationReq:pnc", {}, "signed-by-another", "FAILED_SignatureError"),
    ("pnc", "AuthorizationReq:pnc", {}, "revoked-later", "FAILED"),
    (
        "pnc",
        "MeteringReceiptReq",
        {"MeterInfo": {"MeterID": "MTR-1", "MeterReading": 1}},
        None,
        "FAILED_MeteringSignatureNotValid",
    ),
    ("pnc", "MeteringReceiptReq", {"SessionID": "0000000000000001"}, None, "FAILED_MeteringSignatureNotValid"),
    ("pnc", "MeteringReceiptReq", {}, "unsigned", "FAILED_MeteringSignatureNotValid"),
]


def _failure_run(path: str, tweak: Any) -> tuple[Run, Any]:
    if path == "pnc":
        backend = Backend()
        if isinstance(tweak, ContractStatus):
            backend.statuses = [tweak]
        elif tweak == "revoked-later":
            backend.statuses = [ContractStatus.ACCEPTED, ContractStatus.CERTIFICATE_REVOKED]
        elif tweak == "no-backend":
            backend.installation = None
        elif tweak == "backend-failed":
            backend.installation = installation_reply("FAILED")
        elif tweak == "backend-garbage":
            backend.installation = {"V2G_Message": {"Body": {"SessionSetupRes": {}}}}
        run, model, _ = pnc_session(backend=backend)
        return run, model
    if path == "dc":
        dc = DcModel(isolation_result=Isolation.FAULT, checks_needed=1) if tweak == "insulation-fault" else DcModel()
        return dc_session(dc)
    ac = AcModel()
    if tweak == "rejected":
        ac.authorisation_answers = [Authorisation.REJECTED]
    elif tweak == "single-phase":
        ac.limits_now = AcLimits(nominal_voltage_v=230.0, max_current_a=32.0, min_current_a=6.0, phases=1)
    elif tweak == "refuse-start":
        ac.refuse_start = True
    return ac_session(ac)


@pytest.mark.parametrize(
    ("path", "step", "change", "tweak", "code"),
    FAILURES,
    ids=[f"{code}-{step}-{tweak or next(iter(change), '')}" for _, step, change, tweak, code in FAILURES],
)
def test_each_failed_answer_ends_the_session_with_its_code(
    path: str, step: str, change: dict[str, Any], tweak: Any, code: str
) -> None:
    run, model = _failure_run(path, tweak)
    happy = PATHS[path][0]
    run.run(_after(happy, step))
    message = run.request(step, change)
    body = message["V2G_Message"]["Body"]
    name = step.split(":")[0]
    p = pki()
    if tweak == "unsigned":
        del message["V2G_Message"]["Header"]["Signature"]
    elif tweak == "signed-by-another":
        other = issue(EMAID, p.sub2, ca=False)
        element = body[name]
        message["V2G_Message"]["Header"]["Signature"] = create_signature({"ID1": (name, element)}, other.key, encode)
    elif tweak == "unknown-root":
        stranger = issue("Stranger Root", None, ca=True)
        leaf = issue(EMAID, stranger, ca=False)
        body[name]["ContractSignatureCertChain"] = {"Certificate": leaf.b64}
    elif tweak == "expired-leaf":
        leaf = issue(EMAID, p.sub2, ca=False, valid_to=NOW - timedelta(hours=1))
        body[name]["ContractSignatureCertChain"] = p.chain(leaf)
    elif tweak == "drop-dc-parameter":
        del body[name]["DC_EVChargeParameter"]
    _, answer = run.send(message)
    assert answer["ResponseCode"] == code and run.session.ended
    assert len(model.stopped) == 1 and run.session.stop_reason == model.stopped[0]


def test_pause_is_not_allowed_while_charging() -> None:
    run, model = ac_session()
    run.run(HAPPY_AC[:8])
    _, body = run.send(run.request("SessionStopReq:pause"))
    assert body["ResponseCode"] == "FAILED_SequenceError" and run.session.paused is None
    assert model.stopped and "not expected in state Charging" in model.stopped[0]


def test_power_delivery_start_while_charging_is_a_sequence_error_and_nothing_is_switched() -> None:
    run, model = ac_session()
    run.run(HAPPY_AC[:8])
    calls = list(model.calls)
    _, body = run.send(run.request("PowerDeliveryReq"))
    assert body["ResponseCode"] == "FAILED_SequenceError" and model.calls == calls


def test_certificate_installation_needs_the_certificate_service_selected() -> None:
    run, _, backend = pnc_session()
    run.run(HAPPY_PNC[:3])
    selection = {"SelectedPaymentOption": "Contract", "SelectedServiceList": {"SelectedService": [{"ServiceID": 1}]}}
    assert run.step("PaymentServiceSelectionReq", selection)["ResponseCode"] == "OK"
    assert not run.session.accepts("CertificateInstallationReq")
    _, body = run.send(run.request("CertificateInstallationReq"))
    assert body["ResponseCode"] == "FAILED_SequenceError" and not backend.requests


def test_a_contract_certificate_update_validates_the_old_chain_and_passes_the_cps_answer_on() -> None:
    run, _, backend = pnc_session()
    run.run(HAPPY_PNC[:3])
    selection = {
        "SelectedPaymentOption": "Contract",
        "SelectedServiceList": {"SelectedService": [{"ServiceID": 1}, {"ServiceID": 2, "ParameterSetID": 2}]},
    }
    run.step("PaymentServiceSelectionReq", selection)
    assert run.session.accepts("CertificateUpdateReq") and not run.session.accepts("CertificateInstallationReq")
    body = run.step("CertificateUpdateReq")
    assert body["ResponseCode"] == "OK" and run.session.state == "CertificateInstalled"
    assert backend.contracts[0].emaid == EMAID
    assert run.step("PaymentDetailsReq")["ResponseCode"] == "OK"


def test_plug_and_charge_is_offered_only_over_tls() -> None:
    backend = Backend()
    run, _ = ac_session(tls=False, pnc=PlugAndCharge((pki().root.cert,), backend, encode))
    run.run(HAPPY_AC[:2])
    _, discovery, _ = run.responses[1]
    assert discovery["PaymentOptionList"]["PaymentOption"] == ["ExternalPayment"] and "ServiceList" not in discovery
    only_pnc, _ = ac_session(
        tls=False, pnc=PlugAndCharge((pki().root.cert,), backend, encode), config=Iso2Config(eim=False)
    )
    only_pnc.step("SessionSetupReq")
    assert only_pnc.step("ServiceDiscoveryReq")["ResponseCode"] == "FAILED"  # nothing the EV could pay with


# ------------------------------------------------------------------------------------------ renegotiation
def test_ac_renegotiation_goes_back_to_charge_parameters_and_keeps_the_power_on() -> None:
    later = Schedule(schedule_id=2, duration_s=86_400, power=(PowerEntry(0, 4_000.0),))
    run, model = ac_session(AcModel(offers=[[AC_SCHEDULE], [later]]))
    run.run(HAPPY_AC[:8])
    model.notification = Notification.RENEGOTIATE
    status = run.step("ChargingStatusReq")
    assert status["AC_EVSEStatus"]["EVSENotification"] == "ReNegotiation"
    assert status["AC_EVSEStatus"]["NotificationMaxDelay"] == 10
    model.notification = Notification.NONE
    calls = list(model.calls)
    run.run(
        [
            ("PowerDeliveryReq:renegotiate", "OK", "Renegotiating"),
            ("ChargeParameterDiscoveryReq", "OK", "Rescheduled"),
        ]
    )
    assert model.calls == calls and model.delivering  # nothing switched during the renegotiation
    _, cpd, _ = run.responses[-1]
    [tuple_] = cpd["SAScheduleList"]["SAScheduleTuple"]
    assert tuple_["SAScheduleTupleID"] == 2
    start = {"ChargeProgress": "Start", "SAScheduleTupleID": 2}
    assert run.step("PowerDeliveryReq", {**start, "ChargingProfile": _profile((0, 4_000))})["ResponseCode"] == "OK"
    assert run.session.state == "Charging" and model.calls[-1] == "power_delivery True 2"
    assert run.step("ChargingStatusReq")["SAScheduleTupleID"] == 2


def test_dc_renegotiation_skips_cable_check_and_precharge() -> None:
    run, model = dc_session()
    run.run(HAPPY_DC[:11])
    model.notification = Notification.RENEGOTIATE
    assert run.step("CurrentDemandReq")["DC_EVSEStatus"]["EVSENotification"] == "ReNegotiation"
    model.notification = Notification.NONE
    run.run(
        [
            ("PowerDeliveryReq:renegotiate", "OK", "Renegotiating"),
            ("ChargeParameterDiscoveryReq:dc", "OK", "Rescheduled"),
            ("PowerDeliveryReq:dc", "OK", "Charging"),
            ("CurrentDemandReq", "OK", "Charging"),
        ]
    )
    assert model.closed and model.calls.count("power_delivery False") == 0


def test_a_stop_charging_notification_reaches_the_ev() -> None:
    run, model = dc_session()
    run.run(HAPPY_DC[:11])
    model.notification = Notification.STOP
    assert run.step("CurrentDemandReq")["DC_EVSEStatus"]["EVSENotification"] == "StopCharging"


# ------------------------------------------------------------------------------------------ pause / resume
def _paused_ac() -> tuple[PausedIso2Session, AcModel]:
    run, model = ac_session()
    run.run([*HAPPY_AC[:-1], ("SessionStopReq:pause", "OK", "Paused")])
    assert run.session.ended and model.stopped == ["SessionStop(Pause) by the EV"]
    assert run.session.paused is not None
    return run.session.paused, model


def test_a_paused_session_is_joined_with_its_old_session_id() -> None:
    paused, _ = _paused_ac()
    assert paused == PausedIso2Session(SESSION.hex(), EVCC, "ExternalPayment", 1)
    # The energy manager now offers a schedule numbered 5: the EV keeps the id it selected before.
    later = Schedule(schedule_id=5, duration_s=86_400, power=(PowerEntry(0, 7_000.0),))
    model = AcModel(offers=[[later]])
    session = Iso2Session(ac=model, resume=paused, new_session_id=lambda: bytes(8), wall_clock=lambda: NOW_S)
    run = Run(session)
    _, setup = run.send(req("SessionSetupReq", {"EVCCID": EVCC}, session=SESSION))
    assert setup["ResponseCode"] == "OK_OldSessionJoined" and session.session_id == SESSION.hex()
    run.run(HAPPY_AC[1:6])
    _, cpd, _ = run.responses[-1]
    assert [t["SAScheduleTupleID"] for t in cpd["SAScheduleList"]["SAScheduleTuple"]] == [1]
    run.step("PowerDeliveryReq", {"ChargingProfile": _profile((0, 7_000))})
    assert model.calls[-1] == "power_delivery True 5" and session.state == "Charging"


def test_a_resumed_session_offers_only_the_payment_option_selected_before() -> None:
    run, _, _ = pnc_session()
    run.run([*HAPPY_PNC[:8], ("SessionStopReq:pause", "OK", "Paused")])
    paused = run.session.paused
    assert paused is not None and paused.payment == "Contract" and paused.schedule_id is None
    again, _, _ = pnc_session(resume=paused)
    assert again.step("SessionSetupReq")["ResponseCode"] == "OK_OldSessionJoined"
    assert again.step("ServiceDiscoveryReq")["PaymentOptionList"]["PaymentOption"] == ["Contract"]
    assert again.step("PaymentServiceSelectionReq")["ResponseCode"] == "FAILED_PaymentSelectionInvalid"


@pytest.mark.parametrize(("evcc", "session_id"), [("0A0B0C0D0E01", SESSION), (EVCC, bytes(8)), (EVCC, b"\x00")])
def test_an_unknown_or_foreign_session_id_gets_a_new_session(evcc: str, session_id: bytes) -> None:
    paused, _ = _paused_ac()
    session = Iso2Session(ac=AcModel(), resume=paused, new_session_id=lambda: b"\x11" * 8, wall_clock=lambda: NOW_S)
    _, setup = Run(session).send(req("SessionSetupReq", {"EVCCID": evcc}, session=session_id))
    assert setup["ResponseCode"] == "OK_NewSessionEstablished" and session.session_id == "11" * 8


# ------------------------------------------------------------------------------------------ schedules
def test_the_schedule_list_carries_pmax_and_a_sales_tariff_a_foreign_ev_can_plan_with() -> None:
    run, _ = ac_session()
    run.run(HAPPY_AC[:6])
    _, cpd, _ = run.responses[-1]
    [tuple_] = cpd["SAScheduleList"]["SAScheduleTuple"]
    entries = tuple_["PMaxSchedule"]["PMaxScheduleEntry"]
    assert [e["RelativeTimeInterval"] for e in entries] == [
        {"start": 0},
        {"start": 3_600},
        {"start": 7_200, "duration": 86_400 - 7_200},
    ]
    # 30 kW offered, but three phases of 32 A at 230 V give 22.08 kW at most.
    assert [from_physical(e["PMax"]) for e in entries] == [11_000, 7_000, 22_080]
    tariff = tuple_["SalesTariff"]
    assert tariff["SalesTariffID"] == 1 and tariff["NumEPriceLevels"] == 3
    levels = [e["EPriceLevel"] for e in tariff["SalesTariffEntry"]]
    assert levels == [2, 1, 3]  # ranked by price, 1 the cheapest
    costs = [e["ConsumptionCost"][0]["Cost"][0] for e in tariff["SalesTariffEntry"]]
    assert {c["costKind"] for c in costs} == {"relativePricePercentage"}
    percent = [c["amount"] * 10.0 ** c["amountMultiplier"] for c in costs]
    assert percent == pytest.approx([75.0, 50.0, 100.0])  # of the highest price, 0.40
    assert tariff["SalesTariffEntry"][-1]["RelativeTimeInterval"] == {"start": 7_200, "duration": 79_200}


def test_few_entries_allowed_merge_the_tail_on_the_safe_side() -> None:
    run, _ = ac_session()
    run.run(HAPPY_AC[:5])
    body = run.step("ChargeParameterDiscoveryReq", {"MaxEntriesSAScheduleTuple": 4})
    [tuple_] = body["SAScheduleList"]["SAScheduleTuple"]
    pmax = tuple_["PMaxSchedule"]["PMaxScheduleEntry"]
    tariff = tuple_["SalesTariff"]["SalesTariffEntry"]
    assert len(pmax) + len(tariff) <= 4
    assert [from_physical(e["PMax"]) for e in pmax] == [11_000, 7_000]  # 7 kW and 22 kW merged: the least
    assert pmax[-1]["RelativeTimeInterval"] == {"start": 3_600, "duration": 82_800}
    assert [e["EPriceLevel"] for e in tariff] == [2, 3]  # 0.20 and 0.40 merged: the highest price
    only_one = run.step("ChargeParameterDiscoveryReq", {"MaxEntriesSAScheduleTuple": 1})
    [single] = only_one["SAScheduleList"]["SAScheduleTuple"]
    assert "SalesTariff" not in single and len(single["PMaxSchedule"]["PMaxScheduleEntry"]) == 1
    assert from_physical(single["PMaxSchedule"]["PMaxScheduleEntry"][0]["PMax"]) == 7_000


def test_a_two_day_schedule_is_split_into_day_long_entries_and_port_levels_pass_through() -> None:
    two_days = Schedule(
        schedule_id=3,
        duration_s=172_800,
        power=(PowerEntry(0, 5_000.0),),
        prices=(PriceEntry(0, 0.25, level=4), PriceEntry(43_200, 0.10, level=1)),
        price_levels=5,
    )
    second = Schedule(schedule_id=7, duration_s=86_400, power=())
    run, _ = ac_session(AcModel(offers=[[two_days, second]]))
    run.run(HAPPY_AC[:5])
    body = run.step("ChargeParameterDiscoveryReq")
    first, other = body["SAScheduleList"]["SAScheduleTuple"]
    intervals = [e["RelativeTimeInterval"] for e in first["PMaxSchedule"]["PMaxScheduleEntry"]]
    assert intervals == [{"start": 0}, {"start": 86_400, "duration": 86_400}]
    tariff = first["SalesTariff"]
    assert tariff["NumEPriceLevels"] == 5 and [e["EPriceLevel"] for e in tariff["SalesTariffEntry"]] == [4, 1, 1]
    assert other["SAScheduleTupleID"] == 7 and "SalesTariff" not in other
    assert [from_physical(e["PMax"]) for e in other["PMaxSchedule"]["PMaxScheduleEntry"]] == [0]  # no power: none


@pytest.mark.parametrize(
    "offers",
    [
        [Schedule(schedule_id=0, duration_s=86_400, power=(PowerEntry(0, 1.0),))],
        [Schedule(schedule_id=1, duration_s=86_400, power=(PowerEntry(10, 1.0),))],
        [Schedule(schedule_id=1, duration_s=86_400, power=()), Schedule(schedule_id=1, duration_s=86_400, power=())],
    ],
    ids=["id-zero", "not-from-zero", "duplicate-ids"],
)
def test_a_port_offer_the_schema_cannot_carry_fails_the_session_safely(offers: list[Schedule]) -> None:
    run, model = ac_session(AcModel(offers=[offers]))
    run.run(HAPPY_AC[:5])
    body = run.step("ChargeParameterDiscoveryReq")
    assert body["ResponseCode"] == "FAILED" and run.session.ended and not model.delivering


def _profile(*entries: tuple[int, float], phases: int | None = None) -> dict[str, Any]:
    out = []
    for start, watts in entries:
        entry: dict[str, Any] = {
            "ChargingProfileEntryStart": start,
            "ChargingProfileEntryMaxPower": physical(watts, "W"),
        }
        if phases is not None:
            entry["ChargingProfileEntryMaxNumberOfPhasesInUse"] = phases
        out.append(entry)
    return {"ProfileEntry": out}


@pytest.mark.parametrize(
    ("profile", "fits"),
    [
        (_profile((0, 11_000), (3_600, 7_000), (7_200, 22_080)), True),
        (_profile((0, 11_000), (3_600, 7_000), (7_200, 22_080), phases=3), True),
        (_profile((0, 11_000), (3_600, 7_001)), False),  # above the second entry
        (_profile((0, 11_000), (1_800, 8_000)), False),  # 8 kW reaches into the 7 kW hour
        (_profile((0, 7_000)), True),
        (_profile((0, 11_000)), False),  # one entry for the whole day: the 7 kW hour too
        (_profile((0, 22_081)), False),
        (_profile((3_600, 7_000), (0, 7_000)), False),  # not in time order
        (_profile((0, 7_000), (100_000, 50_000)), True),  # beyond the schedule's end nothing is offered
        (_profile((0, -1_000)), False),  # discharge: not over ISO 15118-2 AC
        (_profile((0, 7_000), phases=3), True),
    ],
)
def test_a_charging_profile_above_the_schedule_is_invalid(profile: dict[str, Any], fits: bool) -> None:
    run, model = ac_session()
    run.run(HAPPY_AC[:6])
    body = run.step("PowerDeliveryReq", {"ChargingProfile": profile})
    assert body["ResponseCode"] == ("OK" if fits else "FAILED_ChargingProfileInvalid")
    assert model.delivering is fits


def test_three_phases_in_a_profile_on_a_single_phase_board_are_invalid() -> None:
    single = AcLimits(nominal_voltage_v=230.0, max_current_a=32.0, min_current_a=6.0, phases=1)
    run, _ = ac_session(AcModel(limits_now=single))
    run.run(HAPPY_AC[:5])
    run.step("ChargeParameterDiscoveryReq", {"RequestedEnergyTransferMode": "AC_single_phase_core"})
    body = run.step("PowerDeliveryReq", {"ChargingProfile": _profile((0, 7_000), phases=3)})
    assert body["ResponseCode"] == "FAILED_ChargingProfileInvalid"


def test_the_max_current_follows_the_energy_managers_setpoint_per_phase() -> None:
    single = AcLimits(nominal_voltage_v=230.0, max_current_a=32.0, min_current_a=6.0, phases=3)
    run, model = ac_session(AcModel(limits_now=single, target_power_w=2_300.0))
    run.run(HAPPY_AC[:5])
    run.step("ChargeParameterDiscoveryReq", {"RequestedEnergyTransferMode": "AC_single_phase_core"})
    run.step("PowerDeliveryReq", {"ChargingProfile": _profile((0, 7_000))})
    assert from_physical(run.step("ChargingStatusReq")["EVSEMaxCurrent"]) == pytest.approx(10.0)  # one phase
    model.target_power_w = None
    assert from_physical(run.step("ChargingStatusReq")["EVSEMaxCurrent"]) == 32.0
    model.target_power_w = math.inf
    assert from_physical(run.step("ChargingStatusReq")["EVSEMaxCurrent"]) == 0.0  # nonsense: default deny


# ------------------------------------------------------------------------------------------ SAE J2847/2
def _bidi_run(select: bool) -> tuple[Run, DcModel]:
    run, model = dc_session(config=Iso2Config(sae_bidi=True))
    run.run(HAPPY_DC[:2])
    _, discovery, _ = run.responses[-1]
    ids = [s["ServiceID"] for s in discovery["ServiceList"]["Service"]]
    assert ids == [28_472, 28_473]
    services = [{"ServiceID": 1}, *([{"ServiceID": 28_473}] if select else [])]
    selection = {"SelectedPaymentOption": "ExternalPayment", "SelectedServiceList": {"SelectedService": services}}
    assert run.step("PaymentServiceSelectionReq", selection)["ResponseCode"] == "OK"
    run.step("AuthorizationReq")
    return run, model


def test_negative_limits_are_accepted_only_from_an_ev_that_selected_sae_bidirectional_service() -> None:
    negative = {"DC_EVChargeParameter": {**DC_PARAMETERS, "EVMaximumCurrentLimit": physical(-50, "A")}}
    refused, _ = _bidi_run(select=False)
    assert refused.step("ChargeParameterDiscoveryReq:dc", negative)["ResponseCode"] == "FAILED_WrongChargeParameter"
    run, model = _bidi_run(select=True)
    assert run.session.bidirectional
    assert run.step("ChargeParameterDiscoveryReq:dc", negative)["ResponseCode"] == "OK"
    assert model.ev[-1].max_current_a == -50.0
    run.run(HAPPY_DC[5:10])
    assert run.step("CurrentDemandReq", {"EVTargetCurrent": physical(-20, "A")})["ResponseCode"] == "OK"
    assert model.targets[-1].current_a == -20.0  # the port bounds it by the energy manager's grant


def test_both_sae_services_at_once_are_an_invalid_selection() -> None:
    run, _ = dc_session(config=Iso2Config(sae_bidi=True))
    run.run(HAPPY_DC[:2])
    services = [{"ServiceID": 1}, {"ServiceID": 28_472}, {"ServiceID": 28_473}]
    selection = {"SelectedPaymentOption": "ExternalPayment", "SelectedServiceList": {"SelectedService": services}}
    assert run.step("PaymentServiceSelectionReq", selection)["ResponseCode"] == "FAILED_ServiceSelectionInvalid"


# ------------------------------------------------------------------------------------------ properties
_VARIANTS = sorted(BODIES)
_junk = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)
_step = st.one_of(
    st.tuples(st.sampled_from(_VARIANTS), st.just(None)),
    st.tuples(
        st.sampled_from(_VARIANTS),
        st.dictionaries(
            st.sampled_from(
                [
                    "ServiceID",
                    "SAScheduleTupleID",
                    "ChargeProgress",
                    "EVTargetCurrent",
                    "ChargingSession",
                    "EVCCID",
                    "Id",
                    "MeterInfo",
                    "ChargingProfile",
                    "RequestedEnergyTransferMode",
                    "SelectedPaymentOption",
                    "DC_EVStatus",
                    "AC_EVChargeParameter",
                ]
            ),
            _junk,
            max_size=2,
        ),
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(["ac", "dc", "pnc"]), steps=st.lists(_step, max_size=12), wrong_id=st.booleans())
def test_any_sequence_of_requests_gets_schema_valid_answers_and_never_raises(
    path: str, steps: list[tuple[str, dict[str, Any] | None]], wrong_id: bool
) -> None:
    run = new_run(path)
    run.run(PATHS[path][0][:4])  # a little way in, so the later requests have a chance
    for i, (variant, change) in enumerate(steps):
        message = run.request(variant, change)
        if wrong_id and i == len(steps) - 1:
            message["V2G_Message"]["Header"]["SessionID"] = "00"
        before = run.session.ended
        _, body = run.send(message)  # encodes with the schema, names the right response, a known code
        if before:
            assert body["ResponseCode"] == "FAILED_SequenceError"
        if body["ResponseCode"].startswith("FAILED"):
            assert run.session.ended


@settings(max_examples=100, deadline=None)
@given(message=st.dictionaries(st.sampled_from(["V2G_Message", "Header", "Body"]), _junk, max_size=2))
def test_anything_else_raises_iso2_error_only(message: dict[str, Any]) -> None:
    run, _ = ac_session()
    try:
        run.session.handle(message)
    except Iso2Error:
        pass


@settings(max_examples=120, deadline=None)
@given(
    starts=st.lists(st.integers(0, 90_000), min_size=1, max_size=6, unique=True),
    powers=st.lists(st.integers(0, 2_500).map(lambda p: p * 10), min_size=6, max_size=6),
)
def test_a_profile_fits_exactly_when_it_stays_under_pmax_at_every_instant(starts: list[int], powers: list[int]) -> None:
    """Checked pointwise (both are step functions, so their breakpoints suffice) against the PMax the EV got:
    11 kW, then 7 kW from 3600 s, then 22.08 kW (the charger's cap) from 7200 s to 86 400 s."""
    starts = sorted(starts)
    entries = list(zip(starts, powers, strict=False))
    pmax = [(0, 11_000), (3_600, 7_000), (7_200, 22_080)]

    def at(steps: list[tuple[int, int]], t: int) -> int:
        return [value for start, value in steps if start <= t][-1]

    instants = [t for t in {*starts, 0, 3_600, 7_200} if starts[0] <= t < 86_400]
    fits = all(at(entries, t) <= at(pmax, t) for t in instants)
    run, _ = ac_session()
    run.run(HAPPY_AC[:6])
    body = run.step("PowerDeliveryReq", {"ChargingProfile": _profile(*entries)})
    assert body["ResponseCode"] == ("OK" if fits else "FAILED_ChargingProfileInvalid")


def test_a_port_with_numbers_out_of_reach_still_gets_schema_valid_answers() -> None:
    broken = DcLimits(
        max_current_a=math.inf,
        max_power_w=math.nan,
        max_voltage_v=1e12,
        min_current_a=0.0,
        min_voltage_v=150.0,
        peak_current_ripple_a=-math.inf,
    )
    run, _ = dc_session(DcModel(limits_now=broken))
    run.run(HAPPY_DC[:5])  # every answer went through the codec
    _, cpd, _ = run.responses[-1]
    evse = cpd["DC_EVSEChargeParameter"]
    assert from_physical(evse["EVSEMaximumCurrentLimit"]) == 0.0  # not finite: nothing
    assert from_physical(evse["EVSEMaximumVoltageLimit"]) == 32_767_000  # the most the field carries
    [entry] = cpd["SAScheduleList"]["SAScheduleTuple"][0]["PMaxSchedule"]["PMaxScheduleEntry"]
    assert from_physical(entry["PMax"]) == 0.0  # no finite power limit: no power offered


def test_the_ev_may_pause_before_power_flows_and_terminate_early() -> None:
    run, model = ac_session()
    run.run([*HAPPY_AC[:6], ("SessionStopReq:pause", "OK", "Paused")])
    assert run.session.paused == PausedIso2Session(SESSION.hex(), EVCC, "ExternalPayment", None)
    assert not model.delivering
    early, early_model = dc_session()
    early.run([*HAPPY_DC[:2], ("SessionStopReq", "OK", "Stopped")])
    assert early_model.stopped == ["SessionStop(Terminate) by the EV"] and early.session.paused is None


def test_service_discovery_filters_value_added_services_by_category() -> None:
    run, _, _ = pnc_session()
    run.step("SessionSetupReq")
    body = run.step("ServiceDiscoveryReq", {"ServiceCategory": "EVCharging", "ServiceScope": "anything"})
    assert "ServiceList" not in body and body["ChargeService"]["ServiceID"] == 1
    _, detail = run.send(run.request("ServiceDetailReq:certificate"))
    assert detail["ResponseCode"] == "FAILED_ServiceIDInvalid" and detail["ServiceID"] == 2


def test_a_contract_status_that_arrives_later_still_needs_the_signature_once() -> None:
    backend = Backend(statuses=[ContractStatus.PENDING])
    run, _, _ = pnc_session(backend=backend)
    run.run(HAPPY_PNC[:6])
    assert run.session.state == "PaymentDetails"
    assert run.step("AuthorizationReq:pnc")["EVSEProcessing"] == "Ongoing"
    backend.statuses = [ContractStatus.ACCEPTED]
    assert run.step("AuthorizationReq", {"Id": "ID1"})["EVSEProcessing"] == "Finished"
