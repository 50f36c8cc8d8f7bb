"""ISO 15118-2 SECC session (AC and DC; EIM and Plug & Charge): THE table of states and requests.

The state is the last step the session completed; :data:`TRANSITIONS` lists, for every request, the
states it is accepted in and where it leads, first match wins (as in firmware.iec61851.machine and the
DIN 70121 session). A row's conditions are of two kinds: guards on the session (:data:`SESSION_GUARDS`:
AC or DC, the payment option selected, the value-added services selected, a metering receipt asked for)
and the handler's verdict on the request (:data:`VERDICT_CONDITIONS`: Finished or Ongoing, ChargeProgress,
ChargingSession). A request the table does not allow now is answered ``FAILED_SequenceError``; any FAILED
answer ends the session (ISO 15118-2 [V2G2-539]). The sequence (standards-facts.md
2.3; AC and DC share the common part and the table, the energy-specific rows carry ``ac``/``dc``):

SessionSetup -> ServiceDiscovery -> [ServiceDetail]* -> PaymentServiceSelection ->
  EIM: Authorization (repeated while Ongoing)
  PnC: [CertificateInstallation | CertificateUpdate] -> PaymentDetails -> Authorization (repeated)
-> ChargeParameterDiscovery (repeated while Ongoing) ->
  AC: PowerDelivery(Start) -> ChargingStatus (repeated; MeteringReceipt when asked for)
  DC: CableCheck (repeated) -> PreCharge (repeated) -> PowerDelivery(Start) -> CurrentDemand (repeated;
      MeteringReceipt when asked for)
-> PowerDelivery(Renegotiate) -> ChargeParameterDiscovery -> PowerDelivery(Start) -> the loop again, or
-> PowerDelivery(Stop) -> [DC: WeldingDetection (repeated)] -> SessionStop(Terminate | Pause).

SessionStop(Pause) ends the connection with :attr:`Iso2Session.paused` holding what the runner keeps; the
next connection's session gets it as ``resume=``, and a SessionSetupReq with that SessionID from the same
EVCCID joins it (``OK_OldSessionJoined``): the common part runs again offering only the payment option
selected before, and the schedule selected before keeps its SAScheduleTupleID ([V2G2-741] as the
``iso15118`` package reads it).

:class:`Iso2Session` is pure: :meth:`Iso2Session.handle` takes one decoded request (the EXI codec's tree
of a ``V2G_Message``) and returns the response tree; it reaches the charger only through its port
(:class:`~firmware.iso15118.session.port_ac.AcEvsePort` or :class:`Iso2DcPort`) and Plug & Charge's
backend only through :class:`~firmware.iso15118.session.pnc.PlugAndCharge`. Transport, codec and timers
are the runner's: the time limits it needs are below.
"""

from __future__ import annotations

import base64
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Protocol, TypeVar

from cryptography import x509
from transitions import Machine

from firmware.iso15118.session.pnc import (
    STATUS_CODE,
    Code,
    Contract,
    ContractStatus,
    PlugAndCharge,
    PncError,
    chain_from_tree,
    check_challenge,
    decode_certificate,
    new_challenge,
    same_emaid,
    utc,
    validate_contract_chain,
    verify_signature,
)
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
from firmware.iso15118.session.port_ac import AcEvsePort, EvAcParameters, MeterInfo, Schedule
from firmware.iso15118.session.values import WireValueError, from_physical, physical

# ----------------------------------------------------------------------------------------- the table
STATES: tuple[str, ...] = (
    "Idle",  # waiting for SessionSetupReq
    "SessionSetup",  # a new session, or a paused one joined
    "ServiceDiscovery",
    "ServiceDetail",
    "PaymentSelected",
    "CertificateInstalled",  # CertificateInstallation or CertificateUpdate answered
    "PaymentDetails",  # PnC: the contract chain validated, the GenChallenge sent
    "Authorising",  # Authorization answered Ongoing
    "Authorised",
    "ChargeParameters",  # ChargeParameterDiscovery answered Ongoing (no schedule yet)
    "ChargeParametersDone",  # schedules offered
    "CableChecking",
    "CableChecked",
    "PreCharging",
    "Charging",  # PowerDelivery(Start) done: the ChargingStatus / CurrentDemand loop
    "Renegotiating",  # PowerDelivery(Renegotiate) done: the power stays on the schedule in force
    "Rescheduling",  # ChargeParameterDiscovery answered Ongoing during a renegotiation
    "Rescheduled",  # new schedules offered during a renegotiation
    "PowerOff",  # PowerDelivery(Stop) done
    "WeldingDetection",
    "Paused",  # SessionStop(Pause) answered: the connection ends, the session can be joined again
    "Stopped",  # SessionStop(Terminate) answered, or the session ended on a FAILED answer
)

#: Where the EV may end the session before power flows (EVerest's ISO-2 state table allows SessionStopReq
#: in all of them; nothing is switched on yet, or the precharge is switched off by session_stopped).
_BEFORE_POWER = (
    "SessionSetup",
    "ServiceDiscovery",
    "ServiceDetail",
    "PaymentSelected",
    "CertificateInstalled",
    "PaymentDetails",
    "Authorising",
    "Authorised",
    "ChargeParameters",
    "ChargeParametersDone",
    "CableChecking",
    "CableChecked",
    "PreCharging",
)
_AFTER_POWER = ("PowerOff", "WeldingDetection")
_STOPPABLE = ("ChargeParametersDone", "CableChecked", "PreCharging", "Charging", "Rescheduled")

#: (request, accepted in, next state, conditions that must all hold). First match wins.
TRANSITIONS: tuple[tuple[str, tuple[str, ...], str, tuple[str, ...]], ...] = (
    ("SessionSetupReq", ("Idle",), "SessionSetup", ()),
    ("ServiceDiscoveryReq", ("SessionSetup",), "ServiceDiscovery", ()),
    ("ServiceDetailReq", ("ServiceDiscovery", "ServiceDetail"), "ServiceDetail", ()),
    ("PaymentServiceSelectionReq", ("ServiceDiscovery", "ServiceDetail"), "PaymentSelected", ()),
    ("CertificateInstallationReq", ("PaymentSelected",), "CertificateInstalled", ("contract", "installation_selected")),
    ("CertificateUpdateReq", ("PaymentSelected",), "CertificateInstalled", ("contract", "update_selected")),
    ("PaymentDetailsReq", ("PaymentSelected", "CertificateInstalled"), "PaymentDetails", ("contract",)),
    ("AuthorizationReq", ("PaymentSelected",), "Authorised", ("eim", "finished")),
    ("AuthorizationReq", ("PaymentSelected",), "Authorising", ("eim",)),
    ("AuthorizationReq", ("PaymentDetails",), "Authorised", ("contract", "finished")),
    ("AuthorizationReq", ("PaymentDetails",), "Authorising", ("contract",)),
    ("AuthorizationReq", ("Authorising",), "Authorised", ("finished",)),
    ("AuthorizationReq", ("Authorising",), "Authorising", ()),
    (
        "ChargeParameterDiscoveryReq",
        ("Authorised", "ChargeParameters", "ChargeParametersDone"),
        "ChargeParametersDone",
        ("finished",),
    ),
    ("ChargeParameterDiscoveryReq", ("Authorised", "ChargeParameters", "ChargeParametersDone"), "ChargeParameters", ()),
    ("ChargeParameterDiscoveryReq", ("Renegotiating", "Rescheduling", "Rescheduled"), "Rescheduled", ("finished",)),
    ("ChargeParameterDiscoveryReq", ("Renegotiating", "Rescheduling", "Rescheduled"), "Rescheduling", ()),
    ("CableCheckReq", ("ChargeParametersDone", "CableChecking"), "CableChecked", ("dc", "finished")),
    ("CableCheckReq", ("ChargeParametersDone", "CableChecking"), "CableChecking", ("dc",)),
    ("PreChargeReq", ("CableChecked", "PreCharging"), "PreCharging", ("dc",)),
    ("PowerDeliveryReq", ("ChargeParametersDone",), "Charging", ("ac", "start")),
    ("PowerDeliveryReq", ("PreCharging", "Rescheduled"), "Charging", ("start",)),
    ("PowerDeliveryReq", ("Charging",), "Renegotiating", ("renegotiate",)),
    ("PowerDeliveryReq", _STOPPABLE, "PowerOff", ("stop",)),
    ("ChargingStatusReq", ("Charging",), "Charging", ("ac",)),
    ("CurrentDemandReq", ("Charging",), "Charging", ("dc",)),
    ("MeteringReceiptReq", ("Charging",), "Charging", ("receipt_pending",)),
    ("WeldingDetectionReq", _AFTER_POWER, "WeldingDetection", ("dc",)),
    ("SessionStopReq", ("ChargeParametersDone", *_AFTER_POWER), "Paused", ("pause",)),
    ("SessionStopReq", (*_BEFORE_POWER, *_AFTER_POWER), "Stopped", ("terminate",)),
)

REQUESTS = tuple(dict.fromkeys(row[0] for row in TRANSITIONS))
ENDED = frozenset({"Paused", "Stopped"})
#: Conditions on the session, known before the request is read.
SESSION_GUARDS = frozenset(
    {"ac", "dc", "eim", "contract", "installation_selected", "update_selected", "receipt_pending"}
)
#: Conditions on the handler's verdict about the request.
VERDICT_CONDITIONS = frozenset({"finished", "start", "stop", "renegotiate", "pause", "terminate"})

#: responseCodeType (V2G_CI_MsgDataTypes.xsd), in schema order.
RESPONSE_CODES: tuple[str, ...] = (
    "OK",
    "OK_NewSessionEstablished",
    "OK_OldSessionJoined",
    "OK_CertificateExpiresSoon",
    "FAILED",
    "FAILED_SequenceError",
    "FAILED_ServiceIDInvalid",
    "FAILED_UnknownSession",
    "FAILED_ServiceSelectionInvalid",
    "FAILED_PaymentSelectionInvalid",
    "FAILED_CertificateExpired",
    "FAILED_SignatureError",
    "FAILED_NoCertificateAvailable",
    "FAILED_CertChainError",
    "FAILED_ChallengeInvalid",
    "FAILED_ContractCanceled",
    "FAILED_WrongChargeParameter",
    "FAILED_PowerDeliveryNotApplied",
    "FAILED_TariffSelectionInvalid",
    "FAILED_ChargingProfileInvalid",
    "FAILED_MeteringSignatureNotValid",
    "FAILED_NoChargeServiceSelected",
    "FAILED_WrongEnergyTransferMode",
    "FAILED_ContactorError",
    "FAILED_CertificateNotAllowedAtThisEVSE",
    "FAILED_CertificateRevoked",
)

# ----------------------------------------------------------------------------------------- time limits
#: V2G_SECC_Sequence_Timeout: the most the SECC waits for the next request (standards-facts.md 2.4).
SEQUENCE_TIMEOUT_S = 60.0
#: V2G_SECC_CommunicationSetup_Performance_Time: SessionSetupReq due this long after the TCP/TLS
#: connection ([V2G2-723], EVerest V2G_COMMUNICATION_SETUP_TIMEOUT).
COMMUNICATION_SETUP_TIMEOUT_S = 18.0
#: V2G_EVCC_Ongoing_Timeout: how long the EV repeats a request answered Ongoing before it gives up.
ONGOING_TIMEOUT_S = 60.0
#: V2G_EVCC_CableCheck_Timeout and V2G_EVCC_PreCharge_Timeout: the whole loops (standards-facts.md 2.4).
CABLE_CHECK_TIMEOUT_S = 40.0
PRECHARGE_TIMEOUT_S = 7.0
#: The SECC's budget for CertificateInstallation/UpdateRes (EVerest V2G_SECC_MSG_CERTINSTALL_TIME 4500 ms).
CERTIFICATE_ANSWER_WITHIN_S = 4.5
#: The EV's message timeouts (ISO 15118-2, standards-facts.md 2.4): the SECC's answer must be sent well
#: within them (the runner budgets its own processing against these).
ANSWER_WITHIN_S: dict[str, float] = {
    "SessionSetupReq": 2.0,
    "ServiceDiscoveryReq": 2.0,
    "ServiceDetailReq": 5.0,
    "PaymentServiceSelectionReq": 2.0,
    "CertificateInstallationReq": 5.0,
    "CertificateUpdateReq": 5.0,
    "PaymentDetailsReq": 5.0,
    "AuthorizationReq": 2.0,
    "ChargeParameterDiscoveryReq": 2.0,
    "PowerDeliveryReq": 5.0,
    "ChargingStatusReq": 2.0,
    "MeteringReceiptReq": 2.0,
    "CableCheckReq": 2.0,
    "PreChargeReq": 2.0,
    "CurrentDemandReq": 0.25,
    "WeldingDetectionReq": 2.0,
    "SessionStopReq": 2.0,
}

# ----------------------------------------------------------------------------------------- constants
NO_SESSION = "00" * 8
EVCC_ID_MAX_BYTES = 6  # evccIDType: hexBinary maxLength 6 (the EV's MAC address)
EVSE_ID_MIN_CHARS, EVSE_ID_MAX_CHARS = 7, 37  # evseIDType: string 7..37
METER_ID_MAX_CHARS = 32  # meterIDType
SIG_METER_READING_MAX_BYTES = 64  # sigMeterReadingType
SHORT_MAX = 32_767  # xs:short (ParameterSetID)
PHYSICAL_MAX = 32_767_000.0  # PhysicalValue: Value (xs:short) * 10^Multiplier (at most 3)
UNSIGNED_SHORT_MAX = 65_535  # xs:unsignedShort (ServiceID, MaxEntriesSAScheduleTuple, NotificationMaxDelay)
UNSIGNED_INT_MAX = 0xFFFF_FFFF  # xs:unsignedInt (DepartureTime, ChargingProfileEntryStart, Cost amount)

#: ServiceIDs as the iso15118 package and EVerest number them (ISO 15118-2's service table).
CHARGE_SERVICE_ID = 1
CERTIFICATE_SERVICE_ID = 2
CERTIFICATE_INSTALLATION, CERTIFICATE_UPDATE = 1, 2  # the certificate service's ParameterSetIDs
#: SAE J2847/2 bidirectional DC as value-added services (standards-facts.md 2.7, EVerest iso_server.cpp).
SAE_V2H_SERVICE_ID, SAE_V2G_SERVICE_ID = 28_472, 28_473
AC_MODES = ("AC_single_phase_core", "AC_three_phase_core")  # EnergyTransferModeType
DC_MODES = ("DC_core", "DC_extended", "DC_combo_core", "DC_unique")
PAYMENT_OPTIONS = ("Contract", "ExternalPayment")  # paymentOptionType

MAX_SA_SCHEDULE_TUPLES = 3  # SAScheduleListType: SAScheduleTuple maxOccurs 3
MAX_SCHEDULE_ENTRIES = 1024  # PMaxScheduleType / SalesTariffType: maxOccurs 1024
MAX_INTERVAL_START_S = 16_777_214  # RelativeTimeIntervalType start
MAX_ENTRY_DURATION_S = 86_400  # RelativeTimeIntervalType duration: the last entry covers at most a day
MAX_PROFILE_ENTRIES = 24  # ChargingProfileType: ProfileEntry maxOccurs 24
MAX_PRICE_LEVELS = 255  # NumEPriceLevels / EPriceLevel: xs:unsignedByte
#: ConsumptionCost: the price relative to the tariff's highest price, in units of 10^-2 % (CostType).
PRICE_PERCENT_MULTIPLIER = -2


class Iso2Error(ValueError):
    """A request that cannot be read (missing element, value out of range), or a port contract broken."""


class Iso2DcPort(DcEvsePort, Protocol):
    """The DC port with what ISO 15118-2 needs beyond DIN 70121 (the AC port has the first two already):
    the site's offers for the SAScheduleList (PMaxSchedule and SalesTariff), the meter for MeterInfo, and
    the EV's departure time (DC_EVChargeParameter DepartureTime) for the energy manager."""

    def schedules(self) -> list[Schedule]:
        """The offers for the EV now (at least one, covering at least 24 h; none yet: Ongoing)."""
        ...

    def meter(self) -> MeterInfo | None: ...

    def ev_departure(self, departure_in_s: int | None) -> None: ...


@dataclass(frozen=True)
class Iso2Config:
    """What this charger offers (the board file's ISO 15118-2 section)."""

    eim: bool = True  # offer ExternalPayment (RFID, app, OCPP remote start, free vend)
    free_service: bool = False
    certificate_service: bool = True  # with PnC over TLS: offer contract certificate installation / update
    dc_modes: tuple[str, ...] = ("DC_extended",)  # EnergyTransferModes of a DC board (CCS: DC_extended)
    sae_bidi: bool = False  # DC: offer SAE J2847/2 V2H / V2G; discharge only for an EV that selects one
    metering_receipts: bool = False  # PnC: ask the EV to sign each new signed meter reading

    def __post_init__(self) -> None:
        if not self.dc_modes or any(mode not in DC_MODES for mode in self.dc_modes):
            raise ValueError(f"Iso2Config.dc_modes {self.dc_modes!r}: one or more of {', '.join(DC_MODES)}")


@dataclass(frozen=True)
class PausedIso2Session:
    """What a paused session leaves for the next connection to join (the runner keeps it)."""

    session_id: str  # 16 lower-case hex digits
    evcc_id: str  # upper-case hex
    payment: str  # the payment option selected
    schedule_id: int | None  # the SAScheduleTupleID in force


@dataclass(frozen=True)
class _Offer:
    """One SAScheduleTuple as sent: the port's schedule behind it and the PMax intervals the EV got."""

    port_id: int
    pmax: tuple[tuple[int, int, float], ...]  # (start, end, watts as the PhysicalValue carries them)


@dataclass
class _Verdict:
    """What the handler decided about the request, for the table's conditions."""

    finished: bool = False
    progress: str | None = None  # PowerDelivery ChargeProgress
    stop_kind: str | None = None  # SessionStop ChargingSession
    receipted: bool = False  # MeteringReceipt accepted: the receipt_pending guard clears after the transition


class _Refused(Exception):
    """A request answered with a FAILED code found while reading it (out of sequence, PnC checks)."""

    def __init__(self, code: str, why: str) -> None:
        super().__init__(why)
        self.code = code


Answer = tuple[str, dict[str, Any]]
V = TypeVar("V")


# ----------------------------------------------------------------------------------------- the session
class Iso2Session:
    """One ISO 15118-2 session on one connection: give it the AC port or the DC port."""

    state: str
    trigger: Callable[..., bool]

    def __init__(
        self,
        *,
        ac: AcEvsePort | None = None,
        dc: Iso2DcPort | None = None,
        config: Iso2Config | None = None,
        tls: bool = False,
        pnc: PlugAndCharge | None = None,
        resume: PausedIso2Session | None = None,
        new_session_id: Callable[[], bytes] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        port: AcEvsePort | Iso2DcPort
        if ac is not None and dc is None:
            port = ac
        elif dc is not None and ac is None:
            port = dc
        else:
            raise Iso2Error("an ISO 15118-2 session needs exactly one port: ac= or dc=")
        evse_id = port.evse_id
        if not isinstance(evse_id, str) or not EVSE_ID_MIN_CHARS <= len(evse_id) <= EVSE_ID_MAX_CHARS:
            raise Iso2Error(
                f"EVSEID {evse_id!r}: ISO 15118-2 wants {EVSE_ID_MIN_CHARS}..{EVSE_ID_MAX_CHARS} characters"
            )
        self._ac, self._dc, self._port = ac, dc, port
        self.config = config or Iso2Config()
        self.tls = tls
        self.pnc = pnc
        self.session_id = NO_SESSION
        self.evcc_id: str | None = None
        self.joined = False
        self.payment: str | None = None
        self.contract_chain: Contract | None = None  # PnC: the contract validated in PaymentDetails
        self.energy_mode: str | None = None
        self.selected_schedule: int | None = None
        self.bidirectional = False  # the EV selected an SAE J2847/2 service this charger offers
        self.stop_reason: str | None = None
        self.paused: PausedIso2Session | None = None
        self.metering_receipts: list[dict[str, Any]] = []  # the EV's signed receipts, for the journal
        self._resume = resume
        self._new_id = new_session_id or (lambda: random_bytes(8))
        self._random = random_bytes
        self._wall = wall_clock
        self._vas: tuple[int, ...] = ()  # value-added services offered in ServiceDiscoveryRes
        self._certificate_sets: frozenset[int] = frozenset()  # certificate service parameter sets selected
        self._challenge = b""
        self._challenge_checked = False
        self._offers: dict[int, _Offer] = {}
        self._receipt: dict[str, Any] | None = None  # the MeterInfo a receipt is asked for
        self._receipted: bytes | None = None  # the last signed reading asked for
        self._request: dict[str, Any] = {}
        self._body: dict[str, Any] = {}
        self._reply_signature: Any = None
        self._verdict = _Verdict()
        self.machine = Machine(
            model=self,
            states=list(STATES),
            initial="Idle",
            auto_transitions=False,
            ignore_invalid_triggers=False,
        )
        for request, sources, dest, conditions in TRANSITIONS:
            self.machine.add_transition(request, list(sources), dest, conditions=list(conditions))

    # ------------------------------------------------------------------ conditions
    def ac(self) -> bool:
        return self._ac is not None

    def dc(self) -> bool:
        return self._dc is not None

    def eim(self) -> bool:
        return self.payment == "ExternalPayment"

    def contract(self) -> bool:
        return self.payment == "Contract"

    def installation_selected(self) -> bool:
        return CERTIFICATE_INSTALLATION in self._certificate_sets

    def update_selected(self) -> bool:
        return CERTIFICATE_UPDATE in self._certificate_sets

    def receipt_pending(self) -> bool:
        return self._receipt is not None

    def finished(self) -> bool:
        return self._verdict.finished

    def start(self) -> bool:
        return self._verdict.progress == "Start"

    def stop(self) -> bool:
        return self._verdict.progress == "Stop"

    def renegotiate(self) -> bool:
        return self._verdict.progress == "Renegotiate"

    def pause(self) -> bool:
        return self._verdict.stop_kind == "Pause"

    def terminate(self) -> bool:
        return self._verdict.stop_kind == "Terminate"

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def accepts(self, request: str) -> bool:
        """Whether the table has a row for ``request`` now whose session guards hold (what the runner may
        expect next; the request's own content may still refuse it)."""
        return not self.ended and any(
            name == request and self.state in sources and all(getattr(self, c)() for c in conds if c in SESSION_GUARDS)
            for name, sources, _, conds in TRANSITIONS
        )

    def _require(self, request: str) -> None:
        """The first-match walk the machine makes, with the verdict as it stands, before anything is switched."""
        if not any(
            name == request and self.state in sources and all(getattr(self, c)() for c in conds)
            for name, sources, _, conds in TRANSITIONS
        ):
            raise _Refused("FAILED_SequenceError", f"{request} not expected in state {self.state}")

    # ------------------------------------------------------------------ one request
    def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        """Answer one decoded ``V2G_Message``: a request the table does not allow now, or with a wrong
        SessionID, is answered with its FAILED code and ends the session, as does any other FAILED answer.
        A message that is not an ISO 15118-2 request at all raises Iso2Error: there is nothing to answer,
        the runner closes the connection."""
        header, name, body = _split(message)
        response = name[:-3] + "Res"
        self._request, self._body, self._reply_signature = message, body, None
        if self.ended:
            return self._fail(response, "FAILED_SequenceError", f"{name} after the session ended")
        if not self.accepts(name):
            return self._fail(response, "FAILED_SequenceError", f"{name} not expected in state {self.state}")
        if name != "SessionSetupReq" and _session_of(header) != self.session_id:
            return self._fail(response, "FAILED_UnknownSession", f"{name} with an unknown SessionID")
        self._verdict = _Verdict()
        handler: Callable[[dict[str, Any], dict[str, Any]], Answer] = getattr(self, "_" + _snake(name[:-3]))
        try:
            code, fields = handler(header, body)
        except _Refused as exc:
            return self._fail(response, exc.code, f"{name}: {exc}")
        except PncError as exc:
            return self._fail(response, exc.code.value, f"{name}: {exc}")
        except (Iso2Error, WireValueError) as exc:
            return self._fail(response, "FAILED", f"{name}: {exc}")
        if code.startswith("FAILED"):
            return self._fail(response, code, f"{name} answered {code}", fields)
        if not self.trigger(name):  # the handler's verdict meets no row (guarded by _require already)
            return self._fail(response, "FAILED_SequenceError", f"{name} not expected in state {self.state}")
        if self._verdict.receipted:
            self._receipt = None
        if self.state == "Stopped":
            self._end("SessionStop(Terminate) by the EV")
        elif self.state == "Paused":
            assert self.evcc_id is not None and self.payment is not None  # set before Pause is allowed
            self.paused = PausedIso2Session(self.session_id, self.evcc_id, self.payment, self.selected_schedule)
            self._end("SessionStop(Pause) by the EV")
        return self._message(response, {"ResponseCode": code, **fields})

    def _end(self, why: str) -> None:
        self.stop_reason = why
        self._port.session_stopped(why)

    def _fail(self, response: str, code: str, why: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
        first = not self.ended
        self.machine.set_state("Stopped")
        if first:
            self._end(why)
        return self._message(response, {"ResponseCode": code, **self._mandatory(response), **(fields or {})})

    def _message(self, response: str, body: dict[str, Any]) -> dict[str, Any]:
        header: dict[str, Any] = {"SessionID": self.session_id.upper()}
        if self._reply_signature is not None and not body["ResponseCode"].startswith("FAILED"):
            header["Signature"] = self._reply_signature
        return {"V2G_Message": {"Header": header, "Body": {response: body}}}

    def _now(self) -> int:
        return int(self._wall())

    def _mandatory(self, response: str) -> dict[str, Any]:
        """The mandatory elements of a FAILED answer (the schema wants them whatever the code)."""
        if response in _CERTIFICATE_PLACEHOLDER:
            return dict(_CERTIFICATE_PLACEHOLDER[response])
        if response == "SessionSetupRes":
            return {"EVSEID": self._port.evse_id}
        if response == "ServiceDiscoveryRes":
            return self._discovery_fields(self._payment_options() or ["ExternalPayment"], self._vas)
        if response == "ServiceDetailRes":
            sid = self._body.get("ServiceID")
            valid = isinstance(sid, int) and not isinstance(sid, bool) and 0 <= sid <= UNSIGNED_SHORT_MAX
            return {"ServiceID": sid if valid else CHARGE_SERVICE_ID}
        if response == "PaymentDetailsRes":
            return {"GenChallenge": base64.b64encode(bytes(16)).decode(), "EVSETimeStamp": self._now()}
        if response in ("AuthorizationRes", "CableCheckRes"):
            status = {"DC_EVSEStatus": self._dc_status()} if response == "CableCheckRes" else {}
            return {**status, "EVSEProcessing": "Finished"}
        if response == "ChargeParameterDiscoveryRes":
            return {"EVSEProcessing": "Finished", **self._evse_charge_parameter()}
        if response in ("PowerDeliveryRes", "MeteringReceiptRes"):
            return self._evse_status()
        if response == "ChargingStatusRes":
            return {
                "EVSEID": self._port.evse_id,
                "SAScheduleTupleID": self.selected_schedule or 1,
                "AC_EVSEStatus": self._ac_status(),
            }
        if response in ("PreChargeRes", "WeldingDetectionRes"):
            return {"DC_EVSEStatus": self._dc_status(), "EVSEPresentVoltage": physical(0.0, "V")}
        if response == "CurrentDemandRes":
            return {
                "DC_EVSEStatus": self._dc_status(),
                "EVSEPresentVoltage": physical(0.0, "V"),
                "EVSEPresentCurrent": physical(0.0, "A"),
                "EVSECurrentLimitAchieved": False,
                "EVSEVoltageLimitAchieved": False,
                "EVSEPowerLimitAchieved": False,
                "EVSEID": self._port.evse_id,
                "SAScheduleTupleID": self.selected_schedule or 1,
            }
        return {}  # PaymentServiceSelectionRes, SessionStopRes: the ResponseCode only

    # ------------------------------------------------------------------ common handlers: (code, fields)
    def _session_setup(self, header: dict[str, Any], body: dict[str, Any]) -> Answer:
        evcc_id = _hex(body, "EVCCID", max_bytes=EVCC_ID_MAX_BYTES).hex().upper()
        asked = _session_of(header)
        paused = self._resume
        if paused is not None and asked == paused.session_id and evcc_id == paused.evcc_id:
            self.session_id, self.joined, code = paused.session_id, True, "OK_OldSessionJoined"
        else:  # a new session; an unknown or foreign SessionID gets a new one too (as the iso15118 package does)
            self.session_id, code = self._new_id().hex(), "OK_NewSessionEstablished"
        self.evcc_id = evcc_id
        return code, {"EVSEID": self._port.evse_id, "EVSETimeStamp": self._now()}

    def _service_discovery(self, header: dict[str, Any], body: dict[str, Any]) -> Answer:
        if "ServiceScope" in body:
            _text(body, "ServiceScope", 64)  # serviceScopeType; no scopes are defined, so it filters nothing
        category = _choice(body, "ServiceCategory", _CATEGORIES) if "ServiceCategory" in body else None
        offered = tuple(sid for sid in self._value_added_services() if category in (None, _VAS_CATEGORY[sid]))
        self._vas = offered
        options = self._payment_options()
        if not options:  # PnC only, and no TLS: nothing the EV could pay with
            return "FAILED", self._discovery_fields(["ExternalPayment"], offered)
        return "OK", self._discovery_fields(options, offered)

    def _service_detail(self, header: dict[str, Any], body: dict[str, Any]) -> Answer:
        sid = _int(body, "ServiceID", 0, UNSIGNED_SHORT_MAX)
        if sid == CHARGE_SERVICE_ID:
            return "OK", {"ServiceID": sid}
        if sid not in self._vas:  # [V2G2-425]: only a ServiceID the EV was given
            return "FAILED_ServiceIDInvalid", {"ServiceID": sid}
        if sid == CERTIFICATE_SERVICE_ID:
            sets = [
                {"ParameterSetID": set_id, "Parameter": [{"Name": "Service", "stringValue": text}]}
                for set_id, text in ((CERTIFICATE_INSTALLATION, "Installation"), (CERTIFICATE_UPDATE, "Update"))
            ]
            return "OK", {"ServiceID": sid, "ServiceParameterList": {"ParameterSet": sets}}
        return "OK", {"ServiceID": sid}

    def _payment_service_selection(self, header: dict[str, Any], body: dict[str, Any]) -> Answer:
        option = _choice(body, "SelectedPaymentOption", PAYMENT_OPTIONS)
        if option not in self._payment_options():
            return "FAILED_PaymentSelectionInvalid", {}
        selected: dict[int, int | None] = {}
        for item in _items(_dict(body, "SelectedServiceList"), "SelectedService", 16):
            sid = _int(item, "ServiceID", 0, UNSIGNED_SHORT_MAX)
            set_id = _int(item, "ParameterSetID", -SHORT_MAX - 1, SHORT_MAX) if "ParameterSetID" in item else None
            if sid in selected:
                return "FAILED_ServiceSelectionInvalid", {}
            selected[sid] = set_id
        if CHARGE_SERVICE_ID not in selected:
            return "FAILED_NoChargeServiceSelected", {}
        others = set(selected) - {CHARGE_SERVICE_ID}
        if any(sid not in self._vas for sid in others) or {SAE_V2H_SERVICE_ID, SAE_V2G_SERVICE_ID} <= others:
            return "FAILED_ServiceSelectionInvalid", {}
        certificate_set = selected.get(CERTIFICATE_SERVICE_ID)
        if certificate_set not in (None, CERTIFICATE_INSTALLATION, CERTIFICATE_UPDATE):
            return "FAILED_ServiceSelectionInvalid", {}
        if CERTIFICATE_SERVICE_ID in selected:
            both = frozenset({CERTIFICATE_INSTALLATION, CERTIFICATE_UPDATE})
            self._certificate_sets = both if certificate_set is None else frozenset({certificate_set})
        self.payment = option
        self.bidirectional = bool(others & {SAE_V2H_SERVICE_ID, SAE_V2G_SERVICE_ID})
        return "OK", {}

    def _certificate_installation(self, header: dict[str, Any], body: dict[str, Any]) -> Answer:
        pnc = self._plug_and_charge()
        element_id = _text(body, "Id", 255)
        _dict(body, "ListOfRootCertificateIDs")
        oem = _load(decode_certificate(body.get("OEMProvisioningCert"), what="OEMProvisioningCert"))
        # The OEM provisioning certificate's chain is the CPS's to check; its key must have signed the request.
        verify_signature(
            header.get("Signature"), {element_id: ("CertificateInstallationReq", body)}, oem.public_key(), pnc.encode
        )
        return self._certificate_reply(pnc.port.certificate_installation(self._request), "CertificateInstallationRes")

    def _certificate_update(self, header: dict[str, Any], body: dict[str, Any]) -> Answer:
        pnc = self._plug_and_charge()
        element_id = _text(body, "Id", 255)
        _dict(body, "ListOfRootCertificateIDs")
        emaid = _text(body, "eMAID", 15)
        leaf, subs = chain_from_tree(body.get("ContractSignatureCertChain"))
        contract = validate_contract_chain(leaf, subs, pnc.roots, utc(self._wall()))
        if not same_emaid(emaid, contract.emaid):
            return "FAILED", {}
        verify_signature(
            header.get("Signature"),
            {element_id: ("CertificateUpdateReq", body)},
            contract.leaf.public_key(),
            pnc.encode,
        )
        return self._certificate_reply(pnc.port.certificate_update(self._request, contract), "CertificateUpdateRes")

    def _certificate_reply(self, reply: Mapping[str, Any] | None, response: str) -> Answer:
        """The backend's V2G_Message as this session's answer (the CPS's Signature kept in the Header)."""
        if reply is None:
            return "FAILED_NoCertificateAvailable", {}
        v2g = reply.get("V2G_Message") if isinstance(reply, Mapping) else None
        body = v2g.get("Body") if isinstance(v2g, Mapping) else None
        content = body.get(response) if isinstance(body, Mapping) and len(body) == 1 else None
        code = content.get("ResponseCode") if isinstance(content, Mapping) else None
        if not isinstance(content, Mapping) or code not in RESPONSE_CODES:
            return "FAILED_NoCertificateAvailable", {}  # not an answer the EV could use
        head = v2g.get("Header") if isinstance(v2g, Mapping) else None
        self._reply_signature = head.get("Signature") if isinstance(head, Mapping) else None
        return str(code), {k: v for k, v in content.items() if k != "ResponseCode"}

    def _payment_details(self, header: dict[str, Any], body: dict[str, Any]) -> Answer:
        pnc = self._plug_and_charge()
        emaid = _text(body, "eMAID", 15)
        leaf, subs = chain_from_tree(body.get("ContractSignatureCertChain"))
        contract = validate_contract_chain(leaf, subs, pnc.roots, utc(self._wall()))
        if not same_emaid(emaid, contract.emaid):
            return "FAILED", {}  # the EV names another contract than its certificate's
        status = pnc.port.contract_status(contract)
        if status not in (ContractStatus.ACCEPTED, ContractStatus.PENDING):
            return STATUS_CODE[status].value, {}
        self.contract_chain = contract
        self._challenge, self._challenge_checked = new_challenge(self._random), False
        return "OK", {"GenChallenge": base64.b64encode(self._challenge).decode(), "EVSETimeStamp": self._now()}

    def _authorization(self, header: dict[str, Any], body: dict[str, Any]) -> Answer:
        if self.eim():
            verdict = self._port.authorisation()
            if verdict is Authorisation.REJECTED:
                return "FAILED", {}
            self._verdict.finished = verdict is Authorisation.ACCEPTED
            # [V2G2-854]: EIM without a positive identification yet waits for the customer.
            return "OK", {"EVSEProcessing": "Finished" if self._verdict.finished else _WAITING_FOR_CUSTOMER}
        pnc, contract = self._plug_and_charge(), self.contract_chain
        if contract is None:
            raise _Refused("FAILED_SequenceError", "AuthorizationReq before a contract was validated")
        if not self._challenge_checked:  # [V2G2-684]: only the first AuthorizationReq carries the signature
            check_challenge(self._challenge, body.get("GenChallenge"))
            element_id = _text(body, "Id", 255) if "Id" in body else ""
            if not element_id:
                raise PncError(Code.SIGNATURE_ERROR, "the AuthorizationReq has no Id to sign")
            verify_signature(
                header.get("Signature"),
                {element_id: ("AuthorizationReq", body)},
                contract.leaf.public_key(),
                pnc.encode,
            )
            self._challenge_checked = True
        status = pnc.port.contract_status(contract)
        if status is ContractStatus.ACCEPTED:
            self._verdict.finished = True
            return "OK", {"EVSEProcessing": "Finished"}
        if status is ContractStatus.PENDING:
            return "OK", {"EVSEProcessing": "Ongoing"}
        code = STATUS_CODE[status]  # AuthorizationRes knows no certificate codes besides the signature
        return (code.value if code is Code.SIGNATURE_ERROR else "FAILED"), {}

    def _charge_parameter_discovery(self, header: dict[str, Any], body: dict[str, Any]) -> Answer:
        max_entries = (
            _int(body, "MaxEntriesSAScheduleTuple", 0, UNSIGNED_SHORT_MAX)
            if "MaxEntriesSAScheduleTuple" in body
            else None
        )
        mode = _choice(body, "RequestedEnergyTransferMode", (*AC_MODES, *DC_MODES))
        failed = {"EVSEProcessing": "Finished", **self._evse_charge_parameter()}
        if mode not in self._energy_modes() or self.energy_mode not in (None, mode):
            return "FAILED_WrongEnergyTransferMode", failed
        if self._ac is not None:
            refusal = self._ac_parameters(self._ac, body)
        else:
            assert self._dc is not None
            refusal = self._dc_parameters(self._dc, body)
        if refusal is not None:
            return refusal, failed
        self.energy_mode = mode
        schedules = self._port.schedules()
        if not schedules:  # the energy manager or the backend has no offer yet
            return "OK", {"EVSEProcessing": "Ongoing", **self._evse_charge_parameter()}
        budget = min(max(1, max_entries if max_entries is not None else MAX_SCHEDULE_ENTRIES), MAX_SCHEDULE_ENTRIES)
        tuples = self._sa_schedule_list(schedules[:MAX_SA_SCHEDULE_TUPLES], budget)
        self._verdict.finished = True
        return "OK", {"EVSEProcessing": "Finished", "SAScheduleList": tuples, **self._evse_charge_parameter()}

    def _ac_parameters(self, port: AcEvsePort, body: dict[str, Any]) -> str | None:
        if "AC_EVChargeParameter" not in body:
            return "FAILED_WrongChargeParameter"  # DC parameters for an AC energy transfer mode
        ev = _dict(body, "AC_EVChargeParameter")
        departure = _int(ev, "DepartureTime", 0, UNSIGNED_INT_MAX) if "DepartureTime" in ev else None
        energy, volts = _phys(ev, "EAmount"), _phys(ev, "EVMaxVoltage")
        most, least = _phys(ev, "EVMaxCurrent"), _phys(ev, "EVMinCurrent")
        if energy < 0 or volts <= 0 or least < 0 or most < least:  # no discharge over ISO 15118-2 AC
            return "FAILED_WrongChargeParameter"
        port.ev_parameters(
            EvAcParameters(
                max_current_a=most,
                min_current_a=least,
                max_voltage_v=volts,
                energy_request_wh=energy,
                departure_in_s=departure,
            )
        )
        return None

    def _dc_parameters(self, port: Iso2DcPort, body: dict[str, Any]) -> str | None:
        if "DC_EVChargeParameter" not in body:
            return "FAILED_WrongChargeParameter"
        ev = _dict(body, "DC_EVChargeParameter")
        departure = _int(ev, "DepartureTime", 0, UNSIGNED_INT_MAX) if "DepartureTime" in ev else None
        params = EvDcParameters(
            max_current_a=_phys(ev, "EVMaximumCurrentLimit"),
            max_voltage_v=_phys(ev, "EVMaximumVoltageLimit"),
            max_power_w=_phys_opt(ev, "EVMaximumPowerLimit"),
            energy_capacity_wh=_phys_opt(ev, "EVEnergyCapacity"),
            energy_request_wh=_phys_opt(ev, "EVEnergyRequest"),
            full_soc_pct=_int(ev, "FullSOC", 0, 100) if "FullSOC" in ev else None,
            bulk_soc_pct=_int(ev, "BulkSOC", 0, 100) if "BulkSOC" in ev else None,
            status=_ev_status(ev),
        )
        # SAE J2847/2 signals discharge with negative limits; without it they are wrong ([V2G2-477], 2.7).
        negative = params.max_current_a < 0 or (params.max_power_w or 0.0) < 0
        if (negative and not self.bidirectional) or params.max_voltage_v < port.limits().min_voltage_v:
            return "FAILED_WrongChargeParameter"
        port.ev_parameters(params)
        port.ev_departure(departure)
        return None

    def _power_delivery(self, header: dict[str, Any], body: dict[str, Any]) -> Answer:
        progress = _choice(body, "ChargeProgress", ("Start", "Stop", "Renegotiate"))
        tuple_id = _int(body, "SAScheduleTupleID", 1, 255)
        self._verdict.progress = progress
        self._require("PowerDeliveryReq")  # before anything is switched
        if "DC_EVPowerDeliveryParameter" in body and self._dc is not None:
            self._dc.ev_status(_ev_status(_dict(body, "DC_EVPowerDeliveryParameter")))
        if progress == "Start":
            offer = self._offers.get(tuple_id)
            if offer is None:
                return "FAILED_TariffSelectionInvalid", self._evse_status()
            if "ChargingProfile" in body and not self._profile_fits(_dict(body, "ChargingProfile"), offer):
                return "FAILED_ChargingProfileInvalid", self._evse_status()  # [V2G2-224], [V2G2-225]
            on = (
                self._ac.power_delivery(True, offer.port_id)
                if self._ac is not None
                else self._dc_port().power_delivery(True)
            )
            if not on:
                return "FAILED_PowerDeliveryNotApplied", self._evse_status()
            self.selected_schedule = tuple_id
        elif progress == "Stop":  # opening is never refused: the current is ramped to zero first
            if self._ac is not None:
                self._ac.power_delivery(False, None)
            else:
                self._dc_port().power_delivery(False)
        # Renegotiate: the power stays on the schedule in force until the next PowerDelivery(Start).
        return "OK", self._evse_status()

    def _metering_receipt(self, header: dict[str, Any], body: dict[str, Any]) -> Answer:
        sent, pnc, contract = self._receipt, self._plug_and_charge(), self.contract_chain
        assert sent is not None  # the table's receipt_pending guard
        element_id = _text(body, "Id", 255) if "Id" in body else ""
        meter = _dict(body, "MeterInfo")
        same = _session_of({"SessionID": body.get("SessionID")}) == self.session_id and _same_reading(meter, sent)
        if contract is None or not element_id or not same:
            return "FAILED_MeteringSignatureNotValid", self._evse_status()  # not a copy of what the EVSE sent
        try:
            verify_signature(
                header.get("Signature"),
                {element_id: ("MeteringReceiptReq", body)},
                contract.leaf.public_key(),
                pnc.encode,
            )
        except PncError:
            return "FAILED_MeteringSignatureNotValid", self._evse_status()
        self.metering_receipts.append({"MeteringReceiptReq": body, "Signature": header.get("Signature")})
        self._verdict.receipted = True
        return "OK", self._evse_status()

    def _session_stop(self, header: dict[str, Any], body: dict[str, Any]) -> Answer:
        self._verdict.stop_kind = _choice(body, "ChargingSession", ("Terminate", "Pause"))
        self._require("SessionStopReq")
        return "OK", {}

    # ------------------------------------------------------------------ AC handler
    def _charging_status(self, header: dict[str, Any], body: dict[str, Any]) -> Answer:
        port = self._ac_port()
        setpoint = port.charge_loop(None)
        limits = port.limits()
        most = _finite(limits.max_current_a)
        if setpoint.target_power_w is not None:
            phases = 1 if self.energy_mode == "AC_single_phase_core" else max(1, limits.phases)
            volts = _finite(limits.nominal_voltage_v)
            allowed = _finite(setpoint.target_power_w) / (volts * phases) if volts > 0 else 0.0
            most = min(max(0.0, allowed), most)
        fields: dict[str, Any] = {
            "EVSEID": port.evse_id,
            "SAScheduleTupleID": self.selected_schedule or 1,
            "EVSEMaxCurrent": _pv(max(0.0, most), "A"),
        }
        fields.update(self._metering(port.meter()))
        fields["AC_EVSEStatus"] = self._ac_status()
        return "OK", fields

    # ------------------------------------------------------------------ DC handlers
    def _cable_check(self, header: dict[str, Any], body: dict[str, Any]) -> Answer:
        port = self._dc_port()
        port.ev_status(_ev_status(body))
        isolation = port.cable_check()
        if isolation is Isolation.FAULT:
            return "FAILED", {"DC_EVSEStatus": self._dc_status(isolation), "EVSEProcessing": "Finished"}
        self._verdict.finished = isolation in (Isolation.VALID, Isolation.WARNING)
        processing = "Finished" if self._verdict.finished else "Ongoing"
        return "OK", {"DC_EVSEStatus": self._dc_status(isolation), "EVSEProcessing": processing}

    def _pre_charge(self, header: dict[str, Any], body: dict[str, Any]) -> Answer:
        port = self._dc_port()
        port.ev_status(_ev_status(body))
        target = DcTarget(voltage_v=_phys(body, "EVTargetVoltage"), current_a=_phys(body, "EVTargetCurrent"))
        if target.voltage_v < 0 or target.current_a < 0:
            return "FAILED_WrongChargeParameter", {}
        out = port.precharge(target)
        return "OK", {"DC_EVSEStatus": self._dc_status(), "EVSEPresentVoltage": _pv(out.voltage_v, "V")}

    def _current_demand(self, header: dict[str, Any], body: dict[str, Any]) -> Answer:
        port = self._dc_port()
        port.ev_status(_ev_status(body))
        target = DcTarget(
            voltage_v=_phys(body, "EVTargetVoltage"),
            current_a=_phys(body, "EVTargetCurrent"),
            max_voltage_v=_phys_opt(body, "EVMaximumVoltageLimit"),
            max_current_a=_phys_opt(body, "EVMaximumCurrentLimit"),
            max_power_w=_phys_opt(body, "EVMaximumPowerLimit"),
            charging_complete=_bool(body, "ChargingComplete"),
            bulk_charging_complete=_bool(body, "BulkChargingComplete") if "BulkChargingComplete" in body else False,
        )
        signed = (target.current_a, target.max_current_a or 0.0, target.max_power_w or 0.0)
        if any(value < 0 for value in signed) and not self.bidirectional:  # discharge needs SAE J2847/2 (2.7)
            return "FAILED_WrongChargeParameter", {}
        out = port.current_demand(target)
        limits = port.limits()
        fields: dict[str, Any] = {"DC_EVSEStatus": self._dc_status(), **_delivered(out)}
        fields["EVSEMaximumVoltageLimit"] = _pv(limits.max_voltage_v, "V")
        fields["EVSEMaximumCurrentLimit"] = _pv(limits.max_current_a, "A")
        fields["EVSEMaximumPowerLimit"] = _pv(limits.max_power_w, "W")
        fields["EVSEID"] = port.evse_id
        fields["SAScheduleTupleID"] = self.selected_schedule or 1
        fields.update(self._metering(port.meter()))
        return "OK", fields

    def _welding_detection(self, header: dict[str, Any], body: dict[str, Any]) -> Answer:
        port = self._dc_port()
        port.ev_status(_ev_status(body))
        volts = port.welding_detection()
        return "OK", {"DC_EVSEStatus": self._dc_status(), "EVSEPresentVoltage": _pv(volts, "V")}

    # ------------------------------------------------------------------ response parts
    def _ac_port(self) -> AcEvsePort:
        if self._ac is None:
            raise _Refused("FAILED_SequenceError", "an AC request in a DC session")
        return self._ac

    def _dc_port(self) -> Iso2DcPort:
        if self._dc is None:
            raise _Refused("FAILED_SequenceError", "a DC request in an AC session")
        return self._dc

    def _plug_and_charge(self) -> PlugAndCharge:
        if self.pnc is None:  # Contract is offered only with PnC configured: the table keeps this unreachable
            raise _Refused("FAILED_SequenceError", "Plug & Charge is not configured")
        return self.pnc

    def _payment_options(self) -> list[str]:
        options = []
        if self.pnc is not None and self.tls:  # PnC only over TLS, as the iso15118 package offers it
            options.append("Contract")
        if self.config.eim:
            options.append("ExternalPayment")
        if self.joined and self._resume is not None:  # [V2G2-741]: only the option selected before
            options = [o for o in options if o == self._resume.payment]
        return options

    def _value_added_services(self) -> tuple[int, ...]:
        services: list[int] = []
        if self.pnc is not None and self.tls and self.config.certificate_service:
            services.append(CERTIFICATE_SERVICE_ID)
        if self._dc is not None and self.config.sae_bidi:
            services += [SAE_V2H_SERVICE_ID, SAE_V2G_SERVICE_ID]
        return tuple(services)

    def _energy_modes(self) -> tuple[str, ...]:
        if self._ac is not None:  # a three-phase charger charges single-phase EVs on L1 too
            return AC_MODES if self._ac.limits().phases >= 3 else AC_MODES[:1]
        return self.config.dc_modes

    def _discovery_fields(self, options: Sequence[str], vas: Sequence[int]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "PaymentOptionList": {"PaymentOption": list(options)},
            "ChargeService": {
                "ServiceID": CHARGE_SERVICE_ID,
                "ServiceCategory": "EVCharging",
                "FreeService": self.config.free_service,
                "SupportedEnergyTransferMode": {"EnergyTransferMode": list(self._energy_modes())},
            },
        }
        if vas:  # ServiceListType wants at least one Service
            out["ServiceList"] = {
                "Service": [
                    {
                        "ServiceID": sid,
                        "ServiceName": _VAS_NAME[sid],
                        "ServiceCategory": _VAS_CATEGORY[sid],
                        "FreeService": True,
                    }
                    for sid in vas
                ]
            }
        return out

    def _ac_status(self) -> dict[str, Any]:
        if self._ac is None:  # a FAILED answer to an AC request in a DC session still needs one
            return {"NotificationMaxDelay": 0, "EVSENotification": "None", "RCD": False}
        status = self._ac.status()
        return {
            "NotificationMaxDelay": _clamp_int(status.notification_max_delay_s, 0, UNSIGNED_SHORT_MAX),
            "EVSENotification": status.notification.value,
            "RCD": bool(status.rcd_tripped),
        }

    def _dc_status(self, isolation: Isolation | None = None) -> dict[str, Any]:
        if self._dc is None:
            return {"NotificationMaxDelay": 0, "EVSENotification": "None", "EVSEStatusCode": "EVSE_NotReady"}
        status: DcEvseStatus = self._dc.status()
        out: dict[str, Any] = {
            "NotificationMaxDelay": _clamp_int(status.notification_max_delay_s, 0, UNSIGNED_SHORT_MAX),
            "EVSENotification": status.notification.value,
        }
        iso = isolation if isolation is not None else status.isolation
        if iso is not None:
            out["EVSEIsolationStatus"] = iso.value
        out["EVSEStatusCode"] = status.code.value
        return out

    def _evse_status(self) -> dict[str, Any]:
        """The EVSEStatus substitute of PowerDeliveryRes and MeteringReceiptRes."""
        return {"AC_EVSEStatus": self._ac_status()} if self._ac is not None else {"DC_EVSEStatus": self._dc_status()}

    def _evse_charge_parameter(self) -> dict[str, Any]:
        if self._ac is not None:
            limits = self._ac.limits()
            return {
                "AC_EVSEChargeParameter": {
                    "AC_EVSEStatus": self._ac_status(),
                    "EVSENominalVoltage": _pv(limits.nominal_voltage_v, "V"),
                    "EVSEMaxCurrent": _pv(max(0.0, _finite(limits.max_current_a)), "A"),
                }
            }
        dc = self._dc_port()
        limits_dc = dc.limits()
        evse: dict[str, Any] = {
            "DC_EVSEStatus": self._dc_status(),
            "EVSEMaximumCurrentLimit": _pv(limits_dc.max_current_a, "A"),
            "EVSEMaximumPowerLimit": _pv(limits_dc.max_power_w, "W"),
            "EVSEMaximumVoltageLimit": _pv(limits_dc.max_voltage_v, "V"),
            "EVSEMinimumCurrentLimit": _pv(limits_dc.min_current_a, "A"),
            "EVSEMinimumVoltageLimit": _pv(limits_dc.min_voltage_v, "V"),
        }
        if limits_dc.current_regulation_tolerance_a is not None:
            evse["EVSECurrentRegulationTolerance"] = _pv(limits_dc.current_regulation_tolerance_a, "A")
        evse["EVSEPeakCurrentRipple"] = _pv(limits_dc.peak_current_ripple_a, "A")
        if limits_dc.energy_to_deliver_wh is not None:
            evse["EVSEEnergyToBeDelivered"] = _pv(limits_dc.energy_to_deliver_wh, "Wh")
        return {"DC_EVSEChargeParameter": evse}

    def _power_cap_w(self) -> float:
        """The most a schedule may offer: what the charger can give now (the port's limits)."""
        if self._ac is not None:
            limits = self._ac.limits()
            rated = _finite(limits.nominal_voltage_v) * _finite(limits.max_current_a) * max(1, limits.phases)
            cap = rated if limits.max_power_w is None else min(rated, _finite(limits.max_power_w))
        else:
            cap = _finite(self._dc_port().limits().max_power_w)
        return max(0.0, cap)

    def _sa_schedule_list(self, schedules: list[Schedule], budget: int) -> dict[str, Any]:
        """SAScheduleTuples from the port's offers: PMaxSchedule within what the charger can give, and the
        SalesTariff (price levels and relative consumption costs), so that a foreign EV can plan against
        them. The EV's MaxEntriesSAScheduleTuple is taken as the most PMax and SalesTariff entries per tuple
        together (the safe reading: it then holds whether the standard counts them apart or together)."""
        wire_ids = [s.schedule_id for s in schedules]
        if len(set(wire_ids)) != len(wire_ids) or any(not 1 <= i <= 255 for i in wire_ids):
            raise Iso2Error(f"schedule ids {wire_ids} from the port are not distinct SAIDs (1..255)")
        kept = self._resume.schedule_id if self.joined and self._resume is not None else None
        if kept is not None and kept not in wire_ids:  # [V2G2-741]: the schedule selected before keeps its id
            wire_ids[0] = kept
        cap = self._power_cap_w()
        tuples, offers = [], {}
        for wire_id, schedule in zip(wire_ids, schedules, strict=True):
            power = _intervals(schedule.duration_s, [(e.start_s, e.max_power_w) for e in schedule.power], "power")
            power = [(s, e, min(max(0.0, _finite(w)), cap)) for s, e, w in power] or [(0, schedule.duration_s, 0.0)]
            tariff = _tariff(schedule) if budget > 1 else None
            tariff_budget = budget - max(1, budget // 2) if tariff is not None else 0
            entries, sent = _pmax_entries(power, budget - tariff_budget)
            item: dict[str, Any] = {"SAScheduleTupleID": wire_id, "PMaxSchedule": {"PMaxScheduleEntry": entries}}
            if tariff is not None:
                item["SalesTariff"] = _sales_tariff(wire_id, tariff, tariff_budget)
            tuples.append(item)
            offers[wire_id] = _Offer(schedule.schedule_id, tuple(sent))
        self._offers = offers
        return {"SAScheduleTuple": tuples}

    def _profile_fits(self, profile: dict[str, Any], offer: _Offer) -> bool:
        """The EV's ChargingProfile within the PMaxSchedule it was offered ([V2G2-224]): every entry at most
        the least PMax of the intervals it overlaps. ChargingProfileEntryStart counts, like the schedule's
        RelativeTimeInterval start, from the schedule's start; the last entry lasts to the schedule's end."""
        entries = _items(profile, "ProfileEntry", MAX_PROFILE_ENTRIES)
        starts = [_int(e, "ChargingProfileEntryStart", 0, UNSIGNED_INT_MAX) for e in entries]
        powers = [_phys(e, "ChargingProfileEntryMaxPower") for e in entries]
        phase_key = "ChargingProfileEntryMaxNumberOfPhasesInUse"
        phases = [_int(e, phase_key, 1, 3) for e in entries if phase_key in e]
        if any(b <= a for a, b in pairwise(starts)):
            return False
        if self._ac is not None and any(p > max(1, self._ac.limits().phases) for p in phases):
            return False
        if any(p < 0 for p in powers) and not self.bidirectional:
            return False
        ends = [*starts[1:], math.inf]
        for start, end, watts in zip(starts, ends, powers, strict=True):
            overlapping = [pmax for s, e, pmax in offer.pmax if s < end and start < e]
            if overlapping and watts > min(overlapping) + 1e-9 * max(1.0, abs(watts)):
                return False
        return True

    def _metering(self, meter: MeterInfo | None) -> dict[str, Any]:
        """MeterInfo, and ReceiptRequired when a PnC EV shall sign a new signed reading."""
        if meter is None:
            return {}
        info: dict[str, Any] = {
            "MeterID": meter.meter_id[:METER_ID_MAX_CHARS],
            "MeterReading": max(0, int(_finite(meter.import_wh))),
        }
        if meter.signed is not None and len(meter.signed) <= SIG_METER_READING_MAX_BYTES:
            info["SigMeterReading"] = base64.b64encode(meter.signed).decode()
        info["TMeter"] = self._now()
        out: dict[str, Any] = {"MeterInfo": info}
        wanted = self.config.metering_receipts and self.contract_chain is not None and self.contract()
        if wanted and meter.signed is not None and meter.signed != self._receipted:
            self._receipt, self._receipted = info, meter.signed
            out["ReceiptRequired"] = True
        elif wanted:
            out["ReceiptRequired"] = False
        return out


_WAITING_FOR_CUSTOMER = "Ongoing_WaitingForCustomerInteraction"
_CATEGORIES = ("EVCharging", "Internet", "ContractCertificate", "OtherCustom")  # serviceCategoryType
_VAS_CATEGORY = {
    CERTIFICATE_SERVICE_ID: "ContractCertificate",
    SAE_V2H_SERVICE_ID: "OtherCustom",
    SAE_V2G_SERVICE_ID: "OtherCustom",
}
_VAS_NAME = {  # serviceNameType: at most 32 characters
    CERTIFICATE_SERVICE_ID: "Certificate",
    SAE_V2H_SERVICE_ID: "SAE J2847/2 V2H",
    SAE_V2G_SERVICE_ID: "SAE J2847/2 V2G",
}
#: The mandatory elements of a FAILED certificate answer: placeholders (nothing is installed).
_CERTIFICATE_PLACEHOLDER: dict[str, dict[str, Any]] = {
    response: {
        "SAProvisioningCertificateChain": {"Certificate": ""},
        "ContractSignatureCertChain": {"Id": "id1", "Certificate": ""},
        "ContractSignatureEncryptedPrivateKey": {"Id": "id2", "value": ""},
        "DHpublickey": {"Id": "id3", "value": ""},
        "eMAID": {"Id": "id4", "value": "00000000000000"},  # eMAIDType: 14..15 characters
    }
    for response in ("CertificateInstallationRes", "CertificateUpdateRes")
}


# ----------------------------------------------------------------------------------------- schedules
def _intervals(duration_s: int, starts: list[tuple[int, float]], what: str) -> list[tuple[int, int, float]]:
    """(start, value) entries of the port's schedule as (start, end, value) intervals."""
    if not isinstance(duration_s, int) or not 0 < duration_s <= MAX_INTERVAL_START_S + MAX_ENTRY_DURATION_S:
        raise Iso2Error(f"schedule duration {duration_s!r} s from the port is out of range")
    if not starts:
        return []
    if starts[0][0] != 0 or any(b[0] <= a[0] for a, b in pairwise(starts)) or starts[-1][0] >= duration_s:
        raise Iso2Error(f"{what} entries from the port must start at 0, ascend and lie within {duration_s} s")
    if starts[-1][0] > MAX_INTERVAL_START_S:
        raise Iso2Error(f"{what} entry at {starts[-1][0]} s is beyond what RelativeTimeInterval carries")
    ends = [s for s, _ in starts[1:]] + [duration_s]
    return [(start, end, value) for (start, value), end in zip(starts, ends, strict=True)]


def _fit(intervals: list[tuple[int, int, V]], budget: int, merge: Callable[[list[V]], V]) -> list[tuple[int, int, V]]:
    """At most ``budget`` intervals: the tail merged into one with ``merge`` (the safe side: the least
    power, the highest price), then the last one split into days while the budget allows, because only
    the last entry has a duration and that is at most a day."""
    if len(intervals) > budget:
        head, tail = intervals[: budget - 1], intervals[budget - 1 :]
        intervals = [*head, (tail[0][0], tail[-1][1], merge([v for _, _, v in tail]))]
    while len(intervals) < budget and intervals[-1][1] - intervals[-1][0] > MAX_ENTRY_DURATION_S:
        start, end, value = intervals[-1]
        if start + MAX_ENTRY_DURATION_S > MAX_INTERVAL_START_S:
            break
        split = start + MAX_ENTRY_DURATION_S
        intervals = [*intervals[:-1], (start, split, value), (split, end, value)]
    start, end, value = intervals[-1]
    intervals[-1] = (start, min(end, start + MAX_ENTRY_DURATION_S), value)
    return intervals


def _time_interval(start: int, end: int, last: bool) -> dict[str, Any]:
    return {"start": start, "duration": end - start} if last else {"start": start}


def _pmax_entries(
    power: list[tuple[int, int, float]], budget: int
) -> tuple[list[dict[str, Any]], list[tuple[int, int, float]]]:
    """PMaxScheduleEntries, and the intervals as the EV reads them (for the ChargingProfile check)."""
    fitted = _fit(power, max(1, budget), min)
    entries, sent = [], []
    for i, (start, end, watts) in enumerate(fitted):
        value = _pv(watts, "W")
        entries.append({"RelativeTimeInterval": _time_interval(start, end, i == len(fitted) - 1), "PMax": value})
        sent.append((start, end, from_physical(value)))
    return entries, sent


@dataclass(frozen=True)
class _Tariff:
    rows: list[tuple[int, int, tuple[int, float]]]  # (start, end, (EPriceLevel, price per kWh))
    count: int  # NumEPriceLevels


def _tariff(schedule: Schedule) -> _Tariff | None:
    """The schedule's prices as a SalesTariff: its own levels when it has them all, else levels ranked by
    price (1 the cheapest, as the iso15118 package numbers them)."""
    if not schedule.prices:
        return None
    prices = _intervals(schedule.duration_s, [(p.start_s, _finite(p.price_per_kwh)) for p in schedule.prices], "price")
    own = [p.level for p in schedule.prices]
    if schedule.price_levels is not None and all(level is not None for level in own):
        count = _clamp_int(schedule.price_levels, 0, MAX_PRICE_LEVELS)
        levels = [_clamp_int(level or 0, 0, count) for level in own]
    else:
        ranked = {price: rank for rank, price in enumerate(sorted({p for _, _, p in prices}), start=1)}
        count = min(len(ranked), MAX_PRICE_LEVELS)
        levels = [min(ranked[price], MAX_PRICE_LEVELS) for _, _, price in prices]
    rows = [(s, e, (level, price)) for (s, e, price), level in zip(prices, levels, strict=True)]
    return _Tariff(rows, count)


def _most_expensive(values: list[tuple[int, float]]) -> tuple[int, float]:
    """Merged tariff entries: the highest level and the highest price (never a surprise for the EV)."""
    return max(level for level, _ in values), max(price for _, price in values)


def _sales_tariff(wire_id: int, tariff: _Tariff, budget: int) -> dict[str, Any]:
    rows = _fit(tariff.rows, max(1, budget), _most_expensive)
    highest = max(price for _, _, (_, price) in rows)
    entries = []
    for i, (start, end, (level, price)) in enumerate(rows):
        entry: dict[str, Any] = {"RelativeTimeInterval": _time_interval(start, end, i == len(rows) - 1)}
        entry["EPriceLevel"] = level
        if highest > 0:  # ConsumptionCost as a share of the highest price: ISO-2 has no absolute price
            percent = max(0.0, price) / highest * 100.0
            amount = _clamp_int(round(percent * 10**-PRICE_PERCENT_MULTIPLIER), 0, UNSIGNED_INT_MAX)
            cost = {
                "costKind": "relativePricePercentage",
                "amount": amount,
                "amountMultiplier": PRICE_PERCENT_MULTIPLIER,
            }
            entry["ConsumptionCost"] = [{"startValue": physical(0.0, "W"), "Cost": [cost]}]
        entries.append(entry)
    return {"SalesTariffID": wire_id, "NumEPriceLevels": tariff.count, "SalesTariffEntry": entries}


# ----------------------------------------------------------------------------------------- reading requests
def _snake(name: str) -> str:
    """PaymentServiceSelection -> payment_service_selection: the handler of a request."""
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))


def _split(message: Any) -> tuple[dict[str, Any], str, dict[str, Any]]:
    try:
        v2g = message["V2G_Message"]
        header, body = v2g["Header"], v2g["Body"]
    except (KeyError, TypeError, IndexError) as exc:
        raise Iso2Error("not a V2G_Message with a Header and a Body") from exc
    if not isinstance(body, dict) or len(body) != 1:
        raise Iso2Error("the Body must hold exactly one message")
    [(name, content)] = body.items()
    if name not in REQUESTS:
        raise Iso2Error(f"{name!r} is not an ISO 15118-2 request")
    if not isinstance(content, dict):
        raise Iso2Error(f"{name} is not a structure")
    return header if isinstance(header, dict) else {}, name, content


def _session_of(header: Any) -> str:
    value = header.get("SessionID") if isinstance(header, Mapping) else None
    text = value.lower() if isinstance(value, str) else ""
    return text if len(text) == 16 and all(c in "0123456789abcdef" for c in text) else ""


def _field(body: Any, name: str) -> Any:
    if not isinstance(body, dict) or name not in body:
        raise Iso2Error(f"{name} missing")
    return body[name]


def _dict(body: Any, name: str) -> dict[str, Any]:
    value = _field(body, name)
    if not isinstance(value, dict):
        raise Iso2Error(f"{name} is not a structure")
    return value


def _items(container: Any, name: str, most: int) -> list[dict[str, Any]]:
    value = _field(container, name)
    items = value if isinstance(value, list) else [value]
    if not 1 <= len(items) <= most or not all(isinstance(item, dict) for item in items):
        raise Iso2Error(f"{name}: 1..{most} structures expected")
    return items


def _int(body: Any, name: str, low: int, high: int) -> int:
    value = _field(body, name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Iso2Error(f"{name} {value!r} is not an integer in {low}..{high}")
    return value


def _bool(body: Any, name: str) -> bool:
    value = _field(body, name)
    if not isinstance(value, bool):
        raise Iso2Error(f"{name} is not a boolean ({value!r})")
    return value


def _text(body: Any, name: str, most: int) -> str:
    value = _field(body, name)
    if not isinstance(value, str) or len(value) > most:
        raise Iso2Error(f"{name} is not a string of at most {most} characters")
    return value


def _choice(body: Any, name: str, allowed: Sequence[str]) -> str:
    value = _field(body, name)
    if value not in allowed:
        raise Iso2Error(f"{name} {value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _hex(body: Any, name: str, *, max_bytes: int) -> bytes:
    value = _field(body, name)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or len(raw) > max_bytes:
        raise Iso2Error(f"{name} is not hex of at most {max_bytes} bytes ({value!r})")
    return raw


def _phys(body: Any, name: str) -> float:
    return from_physical(_field(body, name), what=name)


def _phys_opt(body: dict[str, Any], name: str) -> float | None:
    return from_physical(body[name], what=name) if name in body else None


def _ev_status(body: Any) -> EvDcStatus:
    status = _dict(body, "DC_EVStatus")
    return EvDcStatus(
        ready=_bool(status, "EVReady"),
        error=_text(status, "EVErrorCode", 64),
        soc_pct=_int(status, "EVRESSSOC", 0, 100),
    )


def _load(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise PncError(Code.CERT_CHAIN_ERROR, "OEMProvisioningCert is not a DER X.509 certificate") from exc


def _same_reading(received: dict[str, Any], sent: dict[str, Any]) -> bool:
    """The EV's MeterInfo is a copy of the one it was asked to sign (meter, reading, signed reading)."""
    return all(received.get(key) == sent.get(key) for key in ("MeterID", "MeterReading", "SigMeterReading"))


def _delivered(out: DcOutput) -> dict[str, Any]:
    return {
        "EVSEPresentVoltage": _pv(out.voltage_v, "V"),
        "EVSEPresentCurrent": _pv(out.current_a, "A"),
        "EVSECurrentLimitAchieved": out.current_limit_achieved,
        "EVSEVoltageLimitAchieved": out.voltage_limit_achieved,
        "EVSEPowerLimitAchieved": out.power_limit_achieved,
    }


def _pv(value: float, unit: str) -> dict[str, Any]:
    """A PhysicalValue of a number from a port: not finite is 0 (default deny), beyond the field's reach
    is its largest value."""
    return physical(min(max(_finite(value), -PHYSICAL_MAX), PHYSICAL_MAX), unit)


def _finite(value: float) -> float:
    """A port's number, or 0 when it is not finite (default deny)."""
    return value if isinstance(value, int | float) and math.isfinite(value) else 0.0


def _clamp_int(value: float, low: int, high: int) -> int:
    return int(min(max(int(_finite(value)), low), high))
