"""DIN SPEC 70121 SECC session (DC, external payment): THE table of states and requests.

The state is the last step the session completed; :data:`TRANSITIONS` lists, for every request, the
states it is accepted in and where it leads (first match wins, as in firmware.iec61851.machine). A
request not in the table for the current state is answered ``FAILED_SequenceError`` and ends the
session; so does any other FAILED answer (a FAILED response code ends the V2G communication session
in DIN 70121 and ISO 15118-2 alike). The sequence (DIN 70121 9.1, standards-facts.md 2.3):

SessionSetup -> ServiceDiscovery -> ServicePaymentSelection -> ContractAuthentication (repeated while
the EVSE answers Ongoing) -> ChargeParameterDiscovery (repeated while Ongoing) -> CableCheck (repeated
while Ongoing) -> PreCharge (repeated until the EV is satisfied) -> PowerDelivery(ReadyToCharge=true)
-> CurrentDemand (repeated) -> PowerDelivery(ReadyToCharge=false) -> WeldingDetection (optional,
repeated) -> SessionStop.

:class:`DinSession` is pure: :meth:`DinSession.handle` takes one decoded request (the EXI codec's tree
form of a ``V2G_Message``) and returns the response tree; everything it needs from the charger goes
through a :class:`~firmware.iso15118.session.port.DcEvsePort`. The transport, the EXI codec and the
timeouts around it are the SECC runner's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transitions import Machine

from firmware.iso15118.session.port import (
    Authorisation,
    DcEvsePort,
    DcEvseStatus,
    DcOutput,
    DcTarget,
    EvDcParameters,
    EvDcStatus,
    Isolation,
)
from firmware.iso15118.session.values import WireValueError, from_physical, physical

# ----------------------------------------------------------------------------------------- the table
STATES: tuple[str, ...] = (
    "Idle",  # waiting for SessionSetupReq
    "SessionSetup",
    "ServiceDiscovery",
    "PaymentSelected",
    "Authorising",  # ContractAuthentication answered Ongoing
    "Authorised",
    "ChargeParameters",  # ChargeParameterDiscovery answered Ongoing
    "ChargeParametersDone",
    "CableChecking",
    "CableChecked",
    "PreCharging",
    "Charging",  # PowerDelivery(ReadyToCharge=true) done, CurrentDemand loop
    "PowerOff",  # PowerDelivery(ReadyToCharge=false) done
    "WeldingDetection",
    "Stopped",  # SessionStop answered, or the session ended on a FAILED answer
)

#: (request, accepted in, next state, condition on the handler's verdict). First match wins.
TRANSITIONS: tuple[tuple[str, tuple[str, ...], str, str | None], ...] = (
    ("SessionSetupReq", ("Idle",), "SessionSetup", None),
    ("ServiceDiscoveryReq", ("SessionSetup",), "ServiceDiscovery", None),
    ("ServicePaymentSelectionReq", ("ServiceDiscovery",), "PaymentSelected", None),
    ("ContractAuthenticationReq", ("PaymentSelected", "Authorising"), "Authorised", "finished"),
    ("ContractAuthenticationReq", ("PaymentSelected", "Authorising"), "Authorising", None),
    ("ChargeParameterDiscoveryReq", ("Authorised", "ChargeParameters"), "ChargeParametersDone", "finished"),
    ("ChargeParameterDiscoveryReq", ("Authorised", "ChargeParameters"), "ChargeParameters", None),
    ("CableCheckReq", ("ChargeParametersDone", "CableChecking"), "CableChecked", "finished"),
    ("CableCheckReq", ("ChargeParametersDone", "CableChecking"), "CableChecking", None),
    ("PreChargeReq", ("CableChecked", "PreCharging"), "PreCharging", None),
    ("PowerDeliveryReq", ("PreCharging",), "Charging", "ready_to_charge"),
    ("PowerDeliveryReq", ("Charging",), "PowerOff", "not_ready_to_charge"),
    ("CurrentDemandReq", ("Charging",), "Charging", None),
    ("WeldingDetectionReq", ("PowerOff", "WeldingDetection"), "WeldingDetection", None),
    ("SessionStopReq", ("PowerOff", "WeldingDetection"), "Stopped", None),
)

REQUESTS = tuple(dict.fromkeys(row[0] for row in TRANSITIONS))

#: DIN 70121 [V2G-DC-559]: the PMaxSchedule covers at least 24 h; [V2G-DC-338]: duration in seconds.
SCHEDULE_DURATION_S = 86_400
#: PMaxType is an xs:short in W: a larger maximum power is announced as its largest value.
PMAX_MAX_W = 32_767
SA_SCHEDULE_TUPLE_ID = 1
#: The one service DIN 70121 knows: DC charging (ServiceID 1, category EVCharging).
CHARGE_SERVICE_ID = 1
ENERGY_TRANSFER_TYPE = "DC_extended"  # EVSESupportedEnergyTransferType offered (CCS, DIN 70121 Table 48)
EV_DC_TRANSFER_TYPES = frozenset({"DC_core", "DC_extended", "DC_combo_core", "DC_unique"})
NO_SESSION = "00" * 8


class DinError(ValueError):
    """A request that cannot be read (missing element, number out of range)."""


@dataclass
class _Verdict:
    """What the handler decided, for the table's conditions."""

    finished: bool = False
    ready: bool | None = None


class DinSession:
    """One DIN 70121 session on one connection."""

    state: str
    trigger: Callable[..., bool]

    def __init__(self, port: DcEvsePort, *, new_session_id: Callable[[], bytes] | None = None) -> None:
        self.port = port
        self.session_id = NO_SESSION
        self.stop_reason: str | None = None
        self._new_id = new_session_id or (lambda: os.urandom(8))
        self._verdict = _Verdict()
        self.machine = Machine(
            model=self,
            states=list(STATES),
            initial="Idle",
            auto_transitions=False,
            ignore_invalid_triggers=False,
        )
        for request, sources, dest, condition in TRANSITIONS:
            self.machine.add_transition(
                request, list(sources), dest, conditions=[condition] if condition is not None else []
            )

    # ------------------------------------------------------------------ conditions (the handler's verdict)
    def finished(self) -> bool:
        return self._verdict.finished

    def ready_to_charge(self) -> bool:
        return self._verdict.ready is True

    def not_ready_to_charge(self) -> bool:
        return self._verdict.ready is False

    @property
    def ended(self) -> bool:
        return self.state == "Stopped"

    # ------------------------------------------------------------------ one request
    def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        """Answer one decoded ``V2G_Message``: a request the table does not allow now or with a wrong
        session id is answered with its FAILED code and ends the session. A message that is not a
        request at all raises DinError: there is nothing to answer, the runner closes the connection."""
        header, name, body = _split(message)
        response = name[:-3] + "Res"
        if self.ended:
            return self._fail(response, "FAILED_SequenceError", f"{name} after the session ended")
        allowed = self.machine.get_triggers(self.state)
        if name not in allowed:
            return self._fail(response, "FAILED_SequenceError", f"{name} not expected in state {self.state}")
        if name != "SessionSetupReq" and str(header.get("SessionID", "")).lower() != self.session_id:
            return self._fail(response, "FAILED_UnknownSession", f"{name} with an unknown SessionID")
        self._verdict = _Verdict()
        handler = getattr(self, "_" + _snake(name[:-3]))
        try:
            code, fields = handler(body)
        except (DinError, WireValueError) as exc:
            return self._fail(response, "FAILED", f"{name}: {exc}")
        if code.startswith("FAILED"):
            return self._fail(response, code, f"{name} answered {code}", fields)
        if not self.trigger(name):  # a condition the handler's verdict does not meet (PowerDelivery)
            return self._fail(response, "FAILED_SequenceError", f"{name} not expected in state {self.state}")
        if self.state == "Stopped":
            self.stop_reason = "SessionStop by the EV"
            self.port.session_stopped(self.stop_reason)
        return self._message(response, {"ResponseCode": code, **fields})

    def _fail(self, response: str, code: str, why: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
        first = self.stop_reason is None
        self.stop_reason = self.stop_reason or why
        self.machine.set_state("Stopped")
        if first:
            self.port.session_stopped(why)
        return self._message(response, {"ResponseCode": code, **self._mandatory(response), **(fields or {})})

    def _message(self, response: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"V2G_Message": {"Header": {"SessionID": self.session_id.upper()}, "Body": {response: body}}}

    def _mandatory(self, response: str) -> dict[str, Any]:
        """The mandatory elements of a FAILED answer (the schema wants them whatever the code)."""
        status = self._dc_status()
        out: dict[str, Any] = {
            "SessionSetupRes": {"EVSEID": self._evse_id()},
            "ServiceDiscoveryRes": self._service_offer(),
            "ContractAuthenticationRes": {"EVSEProcessing": "Finished"},
            "ChargeParameterDiscoveryRes": {"EVSEProcessing": "Finished", **self._charge_parameters()},
            "PowerDeliveryRes": {"DC_EVSEStatus": status},
            "CableCheckRes": {"DC_EVSEStatus": status, "EVSEProcessing": "Finished"},
            "PreChargeRes": {"DC_EVSEStatus": status, "EVSEPresentVoltage": physical(0.0, "V")},
            "CurrentDemandRes": {
                "DC_EVSEStatus": status,
                "EVSEPresentVoltage": physical(0.0, "V"),
                "EVSEPresentCurrent": physical(0.0, "A"),
                "EVSECurrentLimitAchieved": False,
                "EVSEVoltageLimitAchieved": False,
                "EVSEPowerLimitAchieved": False,
            },
            "WeldingDetectionRes": {"DC_EVSEStatus": status, "EVSEPresentVoltage": physical(0.0, "V")},
        }.get(response, {})
        return out

    # ------------------------------------------------------------------ handlers: (ResponseCode, fields)
    def _session_setup(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        _hex(body, "EVCCID", max_bytes=8)
        self.session_id = self._new_id().hex()
        return "OK_NewSessionEstablished", {"EVSEID": self._evse_id()}

    def _service_discovery(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        category = body.get("ServiceCategory")
        if category is not None and category != "EVCharging":
            return "FAILED_ServiceIDInvalid", self._service_offer()
        return "OK", self._service_offer()

    def _service_payment_selection(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if body.get("SelectedPaymentOption") != "ExternalPayment":
            return "FAILED_PaymentSelectionInvalid", {}
        services = _list(_field(body, "SelectedServiceList"), "SelectedService")
        if not any(_int(s, "ServiceID") == CHARGE_SERVICE_ID for s in services):
            return "FAILED_ServiceSelectionInvalid", {}
        return "OK", {}

    def _contract_authentication(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        verdict = self.port.authorisation()
        if verdict is Authorisation.REJECTED:
            return "FAILED", {"EVSEProcessing": "Finished"}
        self._verdict.finished = verdict is Authorisation.ACCEPTED
        return "OK", {"EVSEProcessing": "Finished" if self._verdict.finished else "Ongoing"}

    def _charge_parameter_discovery(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if body.get("EVRequestedEnergyTransferType") not in EV_DC_TRANSFER_TYPES:
            return "FAILED_WrongEnergyTransferType", {"EVSEProcessing": "Finished", **self._charge_parameters()}
        ev = _field(body, "DC_EVChargeParameter")
        params = EvDcParameters(
            max_current_a=_phys(ev, "EVMaximumCurrentLimit"),
            max_voltage_v=_phys(ev, "EVMaximumVoltageLimit"),
            max_power_w=_phys_opt(ev, "EVMaximumPowerLimit"),
            energy_capacity_wh=_phys_opt(ev, "EVEnergyCapacity"),
            energy_request_wh=_phys_opt(ev, "EVEnergyRequest"),
            full_soc_pct=_int_opt(ev, "FullSOC"),
            bulk_soc_pct=_int_opt(ev, "BulkSOC"),
            status=_ev_status(ev),
        )
        self.port.ev_parameters(params)
        limits = self.port.limits()
        # An EV whose highest voltage is below the charger's lowest cannot be charged here.
        if params.max_voltage_v < limits.min_voltage_v:
            return "FAILED_WrongChargeParameter", {"EVSEProcessing": "Finished", **self._charge_parameters()}
        self._verdict.finished = True
        return "OK", {"EVSEProcessing": "Finished", **self._charge_parameters()}

    def _cable_check(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.port.ev_status(_ev_status(body))
        isolation = self.port.cable_check()
        if isolation is Isolation.FAULT:
            return "FAILED", {"DC_EVSEStatus": self._dc_status(isolation), "EVSEProcessing": "Finished"}
        self._verdict.finished = isolation in (Isolation.VALID, Isolation.WARNING)
        processing = "Finished" if self._verdict.finished else "Ongoing"
        return "OK", {"DC_EVSEStatus": self._dc_status(isolation), "EVSEProcessing": processing}

    def _pre_charge(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.port.ev_status(_ev_status(body))
        target = DcTarget(voltage_v=_phys(body, "EVTargetVoltage"), current_a=_phys(body, "EVTargetCurrent"))
        out = self.port.precharge(target)
        return "OK", {"DC_EVSEStatus": self._dc_status(), "EVSEPresentVoltage": physical(out.voltage_v, "V")}

    def _power_delivery(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ready = _bool(body, "ReadyToChargeState")
        self._verdict.ready = ready
        if ready and self.state != "PreCharging":
            return "FAILED_SequenceError", {"DC_EVSEStatus": self._dc_status()}
        if not ready and self.state != "Charging":
            return "FAILED_SequenceError", {"DC_EVSEStatus": self._dc_status()}
        if not self.port.power_delivery(ready):
            return "FAILED_PowerDeliveryNotApplied", {"DC_EVSEStatus": self._dc_status()}
        return "OK", {"DC_EVSEStatus": self._dc_status()}

    def _current_demand(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        status = _ev_status(body)
        self.port.ev_status(status)
        target = DcTarget(
            voltage_v=_phys(body, "EVTargetVoltage"),
            current_a=_phys(body, "EVTargetCurrent"),
            max_voltage_v=_phys_opt(body, "EVMaximumVoltageLimit"),
            max_current_a=_phys_opt(body, "EVMaximumCurrentLimit"),
            max_power_w=_phys_opt(body, "EVMaximumPowerLimit"),
            charging_complete=_bool(body, "ChargingComplete"),
            bulk_charging_complete=bool(body.get("BulkChargingComplete", False)),
        )
        out = self.port.current_demand(target)
        limits = self.port.limits()
        return "OK", {"DC_EVSEStatus": self._dc_status(), **_delivered(out, limits)}

    def _welding_detection(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self.port.ev_status(_ev_status(body))
        volts = self.port.welding_detection()
        return "OK", {"DC_EVSEStatus": self._dc_status(), "EVSEPresentVoltage": physical(volts, "V")}

    def _session_stop(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "OK", {}

    # ------------------------------------------------------------------ response parts
    def _evse_id(self) -> str:
        raw = self.port.evse_id.encode()
        if not 1 <= len(raw) <= 32:  # evseIDType: hexBinary, at most 32 bytes
            raise DinError(f"EVSEID {self.port.evse_id!r} must be 1..32 bytes")
        return raw.hex().upper()

    def _service_offer(self) -> dict[str, Any]:
        return {
            "PaymentOptions": {"PaymentOption": ["ExternalPayment"]},  # DIN 70121: EIM only
            "ChargeService": {
                "ServiceTag": {"ServiceID": CHARGE_SERVICE_ID, "ServiceCategory": "EVCharging"},
                "FreeService": False,
                "EnergyTransferType": ENERGY_TRANSFER_TYPE,
            },
        }

    def _dc_status(self, isolation: Isolation | None = None) -> dict[str, Any]:
        status: DcEvseStatus = self.port.status()
        out: dict[str, Any] = {
            "NotificationMaxDelay": status.notification_max_delay_s,
            "EVSENotification": status.notification.value,
        }
        iso = isolation if isolation is not None else status.isolation
        if iso is not None:
            out["EVSEIsolationStatus"] = iso.value
        out["EVSEStatusCode"] = status.code.value
        return out

    def _charge_parameters(self) -> dict[str, Any]:
        limits = self.port.limits()
        pmax = int(min(PMAX_MAX_W, max(0.0, limits.max_power_w)))
        schedule = {
            "SAScheduleTuple": [
                {
                    "SAScheduleTupleID": SA_SCHEDULE_TUPLE_ID,
                    "PMaxSchedule": {
                        "PMaxScheduleID": 1,
                        "PMaxScheduleEntry": [
                            {"RelativeTimeInterval": {"start": 0, "duration": SCHEDULE_DURATION_S}, "PMax": pmax}
                        ],
                    },
                }
            ]
        }
        evse: dict[str, Any] = {
            "DC_EVSEStatus": self._dc_status(),
            "EVSEMaximumCurrentLimit": physical(limits.max_current_a, "A"),
            "EVSEMaximumPowerLimit": physical(limits.max_power_w, "W"),
            "EVSEMaximumVoltageLimit": physical(limits.max_voltage_v, "V"),
            "EVSEMinimumCurrentLimit": physical(limits.min_current_a, "A"),
            "EVSEMinimumVoltageLimit": physical(limits.min_voltage_v, "V"),
        }
        if limits.current_regulation_tolerance_a is not None:
            evse["EVSECurrentRegulationTolerance"] = physical(limits.current_regulation_tolerance_a, "A")
        evse["EVSEPeakCurrentRipple"] = physical(limits.peak_current_ripple_a, "A")
        if limits.energy_to_deliver_wh is not None:
            evse["EVSEEnergyToBeDelivered"] = physical(limits.energy_to_deliver_wh, "Wh")
        return {"SAScheduleList": schedule, "DC_EVSEChargeParameter": evse}


# ----------------------------------------------------------------------------------------- reading requests
def _snake(name: str) -> str:
    """SessionSetup -> session_setup: the handler of a request."""
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))


def _split(message: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, Any]]:
    try:
        v2g = message["V2G_Message"]
        header, body = v2g["Header"], v2g["Body"]
    except (KeyError, TypeError) as exc:
        raise DinError("not a V2G_Message with a Header and a Body") from exc
    if not isinstance(body, dict) or len(body) != 1:
        raise DinError("the Body must hold exactly one message")
    [(name, content)] = body.items()
    if name not in REQUESTS and not name.endswith("Req"):
        raise DinError(f"{name} is not a request")
    return header if isinstance(header, dict) else {}, name, content if isinstance(content, dict) else {}


def _field(body: dict[str, Any], name: str) -> Any:
    if name not in body:
        raise DinError(f"{name} missing")
    return body[name]


def _list(container: Any, name: str) -> list[Any]:
    value = container.get(name) if isinstance(container, dict) else None
    if value is None:
        raise DinError(f"{name} missing")
    return value if isinstance(value, list) else [value]


def _int(body: Any, name: str) -> int:
    value = _field(body, name) if isinstance(body, dict) else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DinError(f"{name} is not an integer ({value!r})")
    return value


def _int_opt(body: dict[str, Any], name: str) -> int | None:
    return _int(body, name) if name in body else None


def _bool(body: dict[str, Any], name: str) -> bool:
    value = _field(body, name)
    if not isinstance(value, bool):
        raise DinError(f"{name} is not a boolean ({value!r})")
    return value


def _hex(body: dict[str, Any], name: str, *, max_bytes: int) -> bytes:
    value = _field(body, name)
    try:
        raw = bytes.fromhex(str(value))
    except ValueError as exc:
        raise DinError(f"{name} is not hex ({value!r})") from exc
    if len(raw) > max_bytes:
        raise DinError(f"{name} is longer than {max_bytes} bytes")
    return raw


def _phys(body: dict[str, Any], name: str) -> float:
    return from_physical(_field(body, name), what=name)


def _phys_opt(body: dict[str, Any], name: str) -> float | None:
    return from_physical(body[name], what=name) if name in body else None


def _ev_status(body: dict[str, Any]) -> EvDcStatus:
    status = _field(body, "DC_EVStatus")
    if not isinstance(status, dict):
        raise DinError("DC_EVStatus is not a structure")
    return EvDcStatus(
        ready=_bool(status, "EVReady"), error=str(_field(status, "EVErrorCode")), soc_pct=_int(status, "EVRESSSOC")
    )


def _delivered(out: DcOutput, limits: Any) -> dict[str, Any]:
    return {
        "EVSEPresentVoltage": physical(out.voltage_v, "V"),
        "EVSEPresentCurrent": physical(out.current_a, "A"),
        "EVSECurrentLimitAchieved": out.current_limit_achieved,
        "EVSEVoltageLimitAchieved": out.voltage_limit_achieved,
        "EVSEPowerLimitAchieved": out.power_limit_achieved,
        "EVSEMaximumVoltageLimit": physical(limits.max_voltage_v, "V"),
        "EVSEMaximumCurrentLimit": physical(limits.max_current_a, "A"),
        "EVSEMaximumPowerLimit": physical(limits.max_power_w, "W"),
    }
