"""The DIN 70121 SECC session table, request by request: the whole DC sequence, every request out of
its place, wrong session ids, the Ongoing loops, and each FAILED answer ending the session."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.iso15118.exi import Namespace, codec
from firmware.iso15118.session.din import STATES, TRANSITIONS, DinError, DinSession
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
)
from firmware.iso15118.session.values import WireValueError, from_physical, physical

SESSION = bytes.fromhex("0102030405060708")


@dataclass
class DcModel:
    """A DC power path as the session sees it: the cable check passes after ``checks_needed`` calls,
    precharge brings the output to the target at once, the current follows the target within the
    limits; the contactor closes only once the output is precharged."""

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
    voltage_v: float = 0.0
    current_a: float = 0.0
    closed: bool = False
    refuse_close: bool = False
    calls: list[str] = field(default_factory=list)
    ev: list[EvDcParameters] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    _checks: int = 0

    @property
    def evse_id(self) -> str:
        return "DE*EVF*E1"

    def authorisation(self) -> Authorisation:
        self.calls.append("authorisation")
        return (
            self.authorisation_answers.pop(0) if len(self.authorisation_answers) > 1 else self.authorisation_answers[0]
        )

    def status(self) -> DcEvseStatus:
        return DcEvseStatus(EvseStatusCode.READY, Isolation.VALID if self._checks >= self.checks_needed else None)

    def limits(self) -> DcLimits:
        return self.limits_now

    def ev_parameters(self, params: EvDcParameters) -> None:
        self.ev.append(params)

    def ev_status(self, status: EvDcStatus) -> None:
        self.calls.append(f"ev_status {status.soc_pct}")

    def cable_check(self) -> Isolation:
        self._checks += 1
        self.calls.append("cable_check")
        return self.isolation_result if self._checks >= self.checks_needed else Isolation.INVALID

    def precharge(self, target: DcTarget) -> DcOutput:
        self.voltage_v = target.voltage_v
        return DcOutput(self.voltage_v, 0.0)

    def power_delivery(self, on: bool) -> bool:
        self.calls.append(f"power_delivery {on}")
        if on and (self.refuse_close or self.voltage_v == 0.0):
            return False
        self.closed = on
        if not on:
            self.current_a = 0.0
        return True

    def current_demand(self, target: DcTarget) -> DcOutput:
        assert self.closed, "current demanded with the contactor open"
        limits = self.limits_now
        self.voltage_v = target.voltage_v
        self.current_a = min(target.current_a, limits.max_current_a, limits.max_power_w / target.voltage_v)
        return DcOutput(self.voltage_v, self.current_a, current_limit_achieved=self.current_a < target.current_a)

    def welding_detection(self) -> float:
        self.voltage_v = 0.0 if not self.closed else self.voltage_v
        return self.voltage_v

    def session_stopped(self, reason: str) -> None:
        self.stopped.append(reason)


# ------------------------------------------------------------------------------------------ requests
def ev_status(soc: int = 50) -> dict[str, Any]:
    return {"EVReady": True, "EVErrorCode": "NO_ERROR", "EVRESSSOC": soc}


def req(name: str, body: dict[str, Any] | None = None, session: bytes = SESSION) -> dict[str, Any]:
    return {"V2G_Message": {"Header": {"SessionID": session.hex().upper()}, "Body": {name: body or {}}}}


REQUESTS: dict[str, dict[str, Any]] = {
    "SessionSetupReq": {"EVCCID": "0A0B0C0D0E0F"},
    "ServiceDiscoveryReq": {},
    "ServicePaymentSelectionReq": {
        "SelectedPaymentOption": "ExternalPayment",
        "SelectedServiceList": {"SelectedService": [{"ServiceID": 1}]},
    },
    "ContractAuthenticationReq": {},
    "ChargeParameterDiscoveryReq": {
        "EVRequestedEnergyTransferType": "DC_extended",
        "DC_EVChargeParameter": {
            "DC_EVStatus": ev_status(),
            "EVMaximumCurrentLimit": physical(200, "A"),
            "EVMaximumPowerLimit": physical(90_000, "W"),
            "EVMaximumVoltageLimit": physical(420, "V"),
            "EVEnergyCapacity": physical(60_000, "Wh"),
            "EVEnergyRequest": physical(30_000, "Wh"),
            "FullSOC": 100,
            "BulkSOC": 80,
        },
    },
    "CableCheckReq": {"DC_EVStatus": ev_status()},
    "PreChargeReq": {
        "DC_EVStatus": ev_status(),
        "EVTargetVoltage": physical(380, "V"),
        "EVTargetCurrent": physical(2, "A"),
    },
    "PowerDeliveryReq": {"ReadyToChargeState": True},
    "CurrentDemandReq": {
        "DC_EVStatus": ev_status(51),
        "EVTargetCurrent": physical(100, "A"),
        "ChargingComplete": False,
        "EVTargetVoltage": physical(390, "V"),
    },
    "WeldingDetectionReq": {"DC_EVStatus": ev_status(80)},
    "SessionStopReq": {},
}

HAPPY = [
    ("SessionSetupReq", "OK_NewSessionEstablished", "SessionSetup"),
    ("ServiceDiscoveryReq", "OK", "ServiceDiscovery"),
    ("ServicePaymentSelectionReq", "OK", "PaymentSelected"),
    ("ContractAuthenticationReq", "OK", "Authorised"),
    ("ChargeParameterDiscoveryReq", "OK", "ChargeParametersDone"),
    ("CableCheckReq", "OK", "CableChecking"),
    ("CableCheckReq", "OK", "CableChecked"),
    ("PreChargeReq", "OK", "PreCharging"),
    ("PreChargeReq", "OK", "PreCharging"),
    ("PowerDeliveryReq", "OK", "Charging"),
    ("CurrentDemandReq", "OK", "Charging"),
    ("CurrentDemandReq", "OK", "Charging"),
    ("PowerDeliveryReq:stop", "OK", "PowerOff"),
    ("WeldingDetectionReq", "OK", "WeldingDetection"),
    ("SessionStopReq", "OK", "Stopped"),
]


def request_for(step: str) -> dict[str, Any]:
    name, _, variant = step.partition(":")
    body = dict(REQUESTS[name])
    if variant == "stop":
        body = {"ReadyToChargeState": False}
    return req(name, body)


def body_of(response: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    [(name, body)] = response["V2G_Message"]["Body"].items()
    return name, body


def session(model: DcModel | None = None) -> tuple[DinSession, DcModel]:
    model = model or DcModel()
    return DinSession(model, new_session_id=lambda: SESSION), model


def run_to(din: DinSession, steps: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    out = []
    for step, code, state in steps:
        response = din.handle(request_for(step))
        name, body = body_of(response)
        assert name == step.split(":")[0][:-3] + "Res"
        assert (body["ResponseCode"], din.state) == (code, state), f"{step}: {body}"
        out.append(response)
    return out


# ------------------------------------------------------------------------------------------ the table
def test_the_table_names_only_known_states_and_every_state_is_reachable() -> None:
    used = {s for _, sources, dest, _ in TRANSITIONS for s in (*sources, dest)}
    assert used == set(STATES)


def test_a_whole_dc_session() -> None:
    din, model = session()
    responses = run_to(din, HAPPY)
    din_codec = codec(Namespace.DIN)
    for step, response in zip(HAPPY, responses, strict=True):  # every answer is valid DIN 70121 EXI
        assert din_codec.decode(din_codec.encode(response)) == response, step
        din_codec.encode(request_for(step[0]))  # and so is every request of the test
    assert din.ended and din.stop_reason == "SessionStop by the EV" and model.stopped == ["SessionStop by the EV"]
    setup = responses[0]["V2G_Message"]
    assert setup["Header"]["SessionID"] == SESSION.hex().upper()
    assert bytes.fromhex(setup["Body"]["SessionSetupRes"]["EVSEID"]) == b"DE*EVF*E1"
    _, cpd = body_of(responses[4])
    [tuple_] = cpd["SAScheduleList"]["SAScheduleTuple"]
    [entry] = tuple_["PMaxSchedule"]["PMaxScheduleEntry"]
    assert entry == {"RelativeTimeInterval": {"start": 0, "duration": 86_400}, "PMax": 32_767}  # 50 kW > short
    evse = cpd["DC_EVSEChargeParameter"]
    assert from_physical(evse["EVSEMaximumCurrentLimit"]) == 125.0 and evse["EVSEMaximumVoltageLimit"]["Unit"] == "V"
    [params] = model.ev
    assert (params.max_current_a, params.max_voltage_v, params.energy_request_wh, params.bulk_soc_pct) == (
        200.0,
        420.0,
        30_000.0,
        80,
    )
    _, precharge = body_of(responses[7])
    assert from_physical(precharge["EVSEPresentVoltage"]) == 380.0
    _, demand = body_of(responses[10])
    assert from_physical(demand["EVSEPresentCurrent"]) == 100.0
    assert demand["DC_EVSEStatus"]["EVSEStatusCode"] == "EVSE_Ready"
    assert model.calls.count("cable_check") == 2
    assert "power_delivery True" in model.calls and model.calls[-1] != "power_delivery True"


def _prefix_states() -> list[tuple[int, str]]:
    """Each distinct state reached on the happy path, with how many steps reach it."""
    seen: dict[str, int] = {"Idle": 0}
    for i, (_, _, state) in enumerate(HAPPY, start=1):
        seen.setdefault(state, i)
    return [(n, state) for state, n in seen.items() if state != "Stopped"]


@pytest.mark.parametrize(("steps", "state"), _prefix_states(), ids=[s for _, s in _prefix_states()])
def test_every_request_out_of_its_place_is_a_sequence_error_that_ends_the_session(steps: int, state: str) -> None:
    accepted = {name for name, sources, _, _ in TRANSITIONS if state in sources}
    for name in REQUESTS:
        if name in accepted:
            continue
        din, model = session()
        run_to(din, HAPPY[:steps])
        response = din.handle(req(name, REQUESTS[name]))
        codec(Namespace.DIN).encode(response)  # a FAILED answer is schema-valid too
        _, body = body_of(response)
        assert body["ResponseCode"] == "FAILED_SequenceError", (state, name)
        assert din.ended and model.stopped and f"{name} not expected in state {state}" in model.stopped[0]
        _, again = body_of(din.handle(request_for("SessionStopReq")))
        assert again["ResponseCode"] == "FAILED_SequenceError"  # nothing more once ended


def test_a_wrong_session_id_is_an_unknown_session() -> None:
    din, _ = session()
    run_to(din, HAPPY[:1])
    _, body = body_of(din.handle(req("ServiceDiscoveryReq", {}, session=bytes(8))))
    assert body["ResponseCode"] == "FAILED_UnknownSession" and din.ended
    # The FAILED answer still carries every mandatory element of its message.
    assert set(body) >= {"PaymentOptions", "ChargeService"}


def test_authorisation_is_ongoing_until_accepted() -> None:
    din, _ = session(
        DcModel(authorisation_answers=[Authorisation.PENDING, Authorisation.PENDING, Authorisation.ACCEPTED])
    )
    run_to(din, HAPPY[:3])
    answers = [body_of(din.handle(request_for("ContractAuthenticationReq")))[1]["EVSEProcessing"] for _ in range(3)]
    assert answers == ["Ongoing", "Ongoing", "Finished"] and din.state == "Authorised"
    _, body = body_of(din.handle(request_for("ChargeParameterDiscoveryReq")))
    assert body["ResponseCode"] == "OK"


@pytest.mark.parametrize(
    ("model", "at", "step", "code"),
    [
        pytest.param(
            DcModel(authorisation_answers=[Authorisation.REJECTED]),
            3,
            "ContractAuthenticationReq",
            "FAILED",
            id="rejected",
        ),
        pytest.param(
            DcModel(isolation_result=Isolation.FAULT, checks_needed=1),
            5,
            "CableCheckReq",
            "FAILED",
            id="insulation-fault",
        ),
        pytest.param(
            DcModel(refuse_close=True), 8, "PowerDeliveryReq", "FAILED_PowerDeliveryNotApplied", id="contactor-refused"
        ),
    ],
)
def test_a_charger_side_failure_ends_the_session_with_its_code(model: DcModel, at: int, step: str, code: str) -> None:
    din, _ = session(model)
    run_to(din, HAPPY[:at])
    _, body = body_of(din.handle(request_for(step)))
    assert body["ResponseCode"] == code and din.ended
    assert model.stopped == [f"{step} answered {code}"]


@pytest.mark.parametrize(
    ("step", "change", "code"),
    [
        ("ServicePaymentSelectionReq", {"SelectedPaymentOption": "Contract"}, "FAILED_PaymentSelectionInvalid"),
        (
            "ServicePaymentSelectionReq",
            {"SelectedServiceList": {"SelectedService": [{"ServiceID": 7}]}},
            "FAILED_ServiceSelectionInvalid",
        ),
        (
            "ChargeParameterDiscoveryReq",
            {"EVRequestedEnergyTransferType": "AC_three_phase_core"},
            "FAILED_WrongEnergyTransferType",
        ),
    ],
)
def test_wrong_choices_of_the_ev_are_refused(step: str, change: dict[str, Any], code: str) -> None:
    din, _ = session()
    index = next(i for i, (s, _, _) in enumerate(HAPPY) if s == step)
    run_to(din, HAPPY[:index])
    _, body = body_of(din.handle(req(step, {**REQUESTS[step], **change})))
    assert body["ResponseCode"] == code and din.ended


def test_an_ev_whose_voltage_is_below_the_chargers_window_is_a_wrong_charge_parameter() -> None:
    din, _ = session()
    run_to(din, HAPPY[:4])
    body = dict(REQUESTS["ChargeParameterDiscoveryReq"])
    body["DC_EVChargeParameter"] = {**body["DC_EVChargeParameter"], "EVMaximumVoltageLimit": physical(100, "V")}
    _, answer = body_of(din.handle(req("ChargeParameterDiscoveryReq", body)))
    assert answer["ResponseCode"] == "FAILED_WrongChargeParameter"


def test_power_off_request_while_precharging_is_a_sequence_error() -> None:
    din, model = session()
    run_to(din, HAPPY[:8])
    _, body = body_of(din.handle(req("PowerDeliveryReq", {"ReadyToChargeState": False})))
    assert body["ResponseCode"] == "FAILED_SequenceError" and din.ended
    assert not model.closed


def test_a_malformed_request_in_a_known_message_fails_cleanly() -> None:
    din, _ = session()
    run_to(din, HAPPY[:10])
    broken = dict(REQUESTS["CurrentDemandReq"])
    broken["EVTargetCurrent"] = {"Multiplier": 9, "Value": 1}
    _, body = body_of(din.handle(req("CurrentDemandReq", broken)))
    assert body["ResponseCode"] == "FAILED" and din.ended


@pytest.mark.parametrize("message", [{}, {"V2G_Message": {}}, {"V2G_Message": {"Header": {}, "Body": {}}}])
def test_something_that_is_not_a_request_raises(message: dict[str, Any]) -> None:
    din, _ = session()
    with pytest.raises(DinError):
        din.handle(message)


# ------------------------------------------------------------------------------------------ physical values
@given(st.floats(-32_767_000, 32_767_000, allow_nan=False))
def test_physical_values_keep_the_best_precision_the_field_has(value: float) -> None:
    field_ = physical(value, "W")
    assert -32768 <= field_["Value"] <= 32767 and -3 <= field_["Multiplier"] <= 3
    step = 10.0 ** field_["Multiplier"]
    assert abs(from_physical(field_) - value) <= step / 2 + 1e-9 * abs(value)
    if field_["Multiplier"] > -3:  # one step finer would not fit
        assert abs(round(value / (step / 10))) > 32767


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 32_767_501.0])
def test_values_the_field_cannot_carry_are_errors(value: float) -> None:
    with pytest.raises(WireValueError):
        physical(value, "V")
