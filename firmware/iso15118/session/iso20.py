"""ISO 15118-20 SECC session (AC, DC, AC_BPT, DC_BPT; scheduled and dynamic control): THE table.

The state is the last step the session completed; :data:`TRANSITIONS` lists, for every request, the
states it is accepted in and where it leads, first match wins (conditions are on the handler's verdict
about the request, and on the energy part: ``ac``/``dc``). A request not in the table for the current
state is answered ``FAILED_SequenceError``; any FAILED answer ends the session. The sequence
(standards-facts.md 2.3, after Josev's and libiso15118's -20 SECC states):

SessionSetup -> AuthorizationSetup -> Authorization (repeated while Ongoing) -> ServiceDiscovery ->
[ServiceDetail]* -> ServiceSelection -> AC_/DC_ChargeParameterDiscovery -> ScheduleExchange (repeated
while Ongoing) -> [DC_CableCheck (repeated) -> DC_PreCharge (repeated)] -> PowerDelivery(Start) ->
AC_/DC_ChargeLoop (repeated; PowerDelivery(Standby | ScheduleRenegotiation) and MeteringConfirmation on
the way) -> PowerDelivery(Stop) -> [DC_WeldingDetection (repeated)] -> SessionStop(Terminate | Pause |
ServiceRenegotiation -> back to ServiceDiscovery).

A paused session ends the connection; :attr:`Iso20Session.paused` then holds what the runner keeps, and
the next connection's session gets it as ``resume=``: a SessionSetupReq with that SessionID (from the
same EVCCID) joins it (``OK_OldSessionJoined``) and may go straight to ChargeParameterDiscovery with the
service selected before (or through AuthorizationSetup again).

:class:`Iso20Session` is pure: :meth:`Iso20Session.handle` takes one decoded request (the EXI codec's
tree, ``{"SessionSetupReq": {"Header": ..., ...}}``) with the namespace it was decoded with, and returns
the namespace and tree of the answer. The energy-specific messages are an :class:`EnergyPart`'s
(:mod:`~firmware.iso15118.session.iso20_ac`, :mod:`~firmware.iso15118.session.iso20_dc`), which is also
the session's only way to the charger. Transport, codec and timers are the runner's: the timeouts it
needs are below (standards-facts.md 2.4). Whenever the session ends (SessionStop, a FAILED answer, a
request it cannot answer) the part's ``session_stopped`` is called once: the port then stops any power.
"""

from __future__ import annotations

import base64
import copy
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from itertools import pairwise
from typing import Any, NamedTuple, Protocol

from transitions import Machine

from firmware.iso15118.exi.namespaces import Namespace
from firmware.iso15118.session.port import Authorisation
from firmware.iso15118.session.port_ac import MeterInfo, Schedule
from firmware.iso15118.session.values import WireValueError, from_rational, rational

ISO20_AC, ISO20_COMMON, ISO20_DC = Namespace.ISO20_AC, Namespace.ISO20_COMMON, Namespace.ISO20_DC

# ----------------------------------------------------------------------------------------- the table
STATES: tuple[str, ...] = (
    "Idle",  # waiting for SessionSetupReq
    "SessionSetup",  # a new session
    "Resumed",  # a paused session joined (OK_OldSessionJoined)
    "AuthorizationSetup",
    "Authorising",  # Authorization answered Ongoing, or refused with a WARNING (the EV may try again)
    "Authorised",
    "ServiceDiscovery",
    "ServiceDetail",
    "ServiceSelected",
    "ChargeParameters",  # AC_/DC_ChargeParameterDiscovery done
    "ScheduleExchanging",  # ScheduleExchange answered Ongoing
    "ScheduleExchanged",
    "CableChecking",
    "CableChecked",
    "PreCharging",
    "Charging",  # PowerDelivery(Start) done: the charge loop
    "Standby",  # PowerDelivery(Standby) done: the loop goes on at zero power
    "Renegotiating",  # PowerDelivery(ScheduleRenegotiation) done
    "Rescheduling",  # ScheduleExchange answered Ongoing during a renegotiation
    "Rescheduled",
    "PowerOff",  # PowerDelivery(Stop) done
    "WeldingDetection",
    "ServiceRenegotiation",  # SessionStop(ServiceRenegotiation) answered: ServiceDiscovery comes next
    "Paused",  # SessionStop(Pause) answered: the connection ends, the session can be resumed
    "Stopped",  # SessionStop(Terminate) answered, or the session ended on a FAILED answer
)

_BEFORE_POWER = (
    "Resumed",
    "AuthorizationSetup",
    "Authorising",
    "Authorised",
    "ServiceDiscovery",
    "ServiceDetail",
    "ServiceSelected",
    "ChargeParameters",
    "ScheduleExchanged",
)
_AFTER_POWER = ("PowerOff", "WeldingDetection")
_STOPPABLE = ("ScheduleExchanged", "CableChecked", "PreCharging", "Charging", "Standby", "Renegotiating", "Rescheduled")

#: (request, accepted in, next state ("=" stays), conditions that must all hold). First match wins.
TRANSITIONS: tuple[tuple[str, tuple[str, ...], str, tuple[str, ...]], ...] = (
    ("SessionSetupReq", ("Idle",), "Resumed", ("resumed",)),
    ("SessionSetupReq", ("Idle",), "SessionSetup", ()),
    ("AuthorizationSetupReq", ("SessionSetup", "Resumed"), "AuthorizationSetup", ()),
    ("AuthorizationReq", ("AuthorizationSetup", "Authorising"), "Authorised", ("finished",)),
    ("AuthorizationReq", ("AuthorizationSetup", "Authorising"), "Authorising", ()),
    ("ServiceDiscoveryReq", ("Authorised", "ServiceRenegotiation"), "ServiceDiscovery", ()),
    ("ServiceDetailReq", ("ServiceDiscovery", "ServiceDetail"), "ServiceDetail", ()),
    ("ServiceSelectionReq", ("ServiceDiscovery", "ServiceDetail"), "ServiceSelected", ()),
    ("AC_ChargeParameterDiscoveryReq", ("ServiceSelected", "Resumed"), "ChargeParameters", ("ac",)),
    ("DC_ChargeParameterDiscoveryReq", ("ServiceSelected", "Resumed"), "ChargeParameters", ("dc",)),
    ("ScheduleExchangeReq", ("ChargeParameters", "ScheduleExchanging"), "ScheduleExchanged", ("finished",)),
    ("ScheduleExchangeReq", ("ChargeParameters", "ScheduleExchanging"), "ScheduleExchanging", ()),
    ("ScheduleExchangeReq", ("Renegotiating", "Rescheduling"), "Rescheduled", ("finished",)),
    ("ScheduleExchangeReq", ("Renegotiating", "Rescheduling"), "Rescheduling", ()),
    ("DC_CableCheckReq", ("ScheduleExchanged", "CableChecking"), "CableChecked", ("dc", "finished")),
    ("DC_CableCheckReq", ("ScheduleExchanged", "CableChecking"), "CableChecking", ("dc",)),
    ("DC_PreChargeReq", ("CableChecked", "PreCharging"), "PreCharging", ("dc",)),
    ("PowerDeliveryReq", ("ScheduleExchanged",), "Charging", ("ac", "start")),
    ("PowerDeliveryReq", ("PreCharging", "Rescheduled", "Standby"), "Charging", ("start",)),
    ("PowerDeliveryReq", ("ScheduleExchanged",), "=", ("ac", "ev_ongoing")),
    ("PowerDeliveryReq", ("PreCharging", "Rescheduled", "Standby"), "=", ("ev_ongoing",)),
    ("PowerDeliveryReq", ("Charging",), "Standby", ("standby",)),
    ("PowerDeliveryReq", ("Charging",), "=", ("standby_refused",)),
    ("PowerDeliveryReq", ("Charging",), "Renegotiating", ("schedule_renegotiation",)),
    ("PowerDeliveryReq", _STOPPABLE, "PowerOff", ("stop",)),
    ("AC_ChargeLoopReq", ("Charging", "Standby"), "=", ("ac",)),
    ("DC_ChargeLoopReq", ("Charging", "Standby"), "=", ("dc",)),
    ("MeteringConfirmationReq", ("Charging", "Standby", "PowerOff"), "=", ()),
    ("DC_WeldingDetectionReq", ("PowerOff", "WeldingDetection"), "WeldingDetection", ("dc",)),
    ("SessionStopReq", ("ScheduleExchanged", *_AFTER_POWER), "Paused", ("pause",)),
    ("SessionStopReq", _AFTER_POWER, "ServiceRenegotiation", ("service_renegotiation",)),
    ("SessionStopReq", (*_BEFORE_POWER, *_AFTER_POWER), "Stopped", ("terminate",)),
)

REQUESTS = tuple(dict.fromkeys(row[0] for row in TRANSITIONS))
#: -20 requests outside the table (PnC certificate installation; vehicle check-in/out of automated
#: connection devices): answered FAILED_SequenceError. Anything else is not a -20 request at all.
OTHER_REQUESTS = ("CertificateInstallationReq", "VehicleCheckInReq", "VehicleCheckOutReq")
ENDED = frozenset({"Paused", "Stopped"})

# ----------------------------------------------------------------------------------------- timeouts
#: V2G_SECC_Sequence_Timeout: the most the SECC waits for the next request (standards-facts.md 2.4).
SEQUENCE_TIMEOUT_S = 60.0
#: V2G_EVCC_Ongoing_Timeout: how long the EV repeats a request answered Ongoing before it gives up.
ONGOING_TIMEOUT_S = 60.0
#: The EV's message timeouts (ISO 15118-20, standards-facts.md 2.4): the SECC's answer must be sent well
#: within them (the runner budgets its own processing against these).
ANSWER_WITHIN_S: dict[str, float] = {
    "SessionSetupReq": 2.0,
    "AuthorizationSetupReq": 2.0,
    "AuthorizationReq": 2.0,
    "ServiceDiscoveryReq": 2.0,
    "ServiceDetailReq": 5.0,
    "ServiceSelectionReq": 2.0,
    "AC_ChargeParameterDiscoveryReq": 2.0,
    "DC_ChargeParameterDiscoveryReq": 2.0,
    "ScheduleExchangeReq": 2.0,
    "DC_CableCheckReq": 2.0,
    "DC_PreChargeReq": 2.0,
    "PowerDeliveryReq": 2.0,
    "AC_ChargeLoopReq": 0.5,
    "DC_ChargeLoopReq": 0.5,
    "MeteringConfirmationReq": 2.0,
    "DC_WeldingDetectionReq": 2.0,
    "SessionStopReq": 2.0,
}
#: V2G_EVCC_CableCheck_Timeout and V2G_EVCC_PreCharge_Timeout (-20): the whole loops (2.4).
CABLE_CHECK_TIMEOUT_S = 40.0
PRECHARGE_TIMEOUT_S = 10.0

# ----------------------------------------------------------------------------------------- constants
NO_SESSION = "00" * 8  # SessionSetupReq with this SessionID asks for a new session (Josev, libiso15118)
#: ISO 15118-20 PriceAlgorithm identifiers (standards-facts.md 2.6); one rule per stack starting at 0 W.
PRICE_ALGORITHM_POWER = "urn:iso:std:iso:15118:-20:PriceAlgorithm:1-Power"
MOBILITY_NEEDS_BY_EVCC = 1  # MobilityNeedsMode (Table 205, standards-facts.md 2.6): the EV provides its needs
BPT_CHANNEL_UNIFIED = 1  # BPTChannel (Table 206, standards-facts.md 2.6): one channel for both directions
GENERATOR_MODE_GRID_FOLLOWING = 1  # GeneratorMode (Table 206, standards-facts.md 2.6): never grid forming
GEN_CHALLENGE_BYTES = 16  # genChallengeType: base64Binary of length 16 (CommonMessages XSD)
MAX_SCHEDULE_TUPLES = 3  # Scheduled_SEResControlModeType: ScheduleTuple maxOccurs 3
MIN_SUPPORTING_POINTS, MAX_SUPPORTING_POINTS = 12, 1024  # maxSupportingPointsScheduleTupleType
PROCESSING = ("Finished", "Ongoing", "Ongoing_WaitingForCustomerInteraction")  # processingType


class ServiceId(IntEnum):
    """Energy transfer services (ISO 15118-20 Table 204, standards-facts.md 2.6)."""

    AC = 1
    DC = 2
    AC_BPT = 5
    DC_BPT = 6


class ControlMode(IntEnum):
    """ControlMode parameter (ISO 15118-20 Table 205, standards-facts.md 2.6)."""

    SCHEDULED = 1
    DYNAMIC = 2


class Pricing(IntEnum):
    """Pricing parameter (ISO 15118-20 Table 205, standards-facts.md 2.6): the price schedule ScheduleExchange
    carries."""

    NONE = 0
    ABSOLUTE = 1
    LEVELS = 2


class Energy(StrEnum):
    AC = "AC"
    DC = "DC"


class EvseNotification(StrEnum):
    """evseNotificationType (ISO 15118-20 CommonTypes): what the EVSE asks the EV to do."""

    PAUSE = "Pause"
    EXIT_STANDBY = "ExitStandby"
    TERMINATE = "Terminate"
    SCHEDULE_RENEGOTIATION = "ScheduleRenegotiation"
    SERVICE_RENEGOTIATION = "ServiceRenegotiation"
    METERING_CONFIRMATION = "MeteringConfirmation"


@dataclass(frozen=True)
class Notice:
    """An EVSE notification for the EV, sent in the next PowerDelivery / charge loop answer."""

    notification: EvseNotification
    max_delay_s: int = 0  # NotificationMaxDelay: xs:unsignedShort


@dataclass(frozen=True)
class Iso20Config:
    """What this charger offers beyond what its port tells (the board file's ISO 15118-20 section)."""

    bidirectional: bool = False  # offer AC_BPT / DC_BPT (discharge still needs the energy manager's grant)
    control_modes: tuple[ControlMode, ...] = (ControlMode.SCHEDULED, ControlMode.DYNAMIC)
    pricing: Pricing = Pricing.NONE
    service_renegotiation: bool = True
    standby_allowed: bool = False
    free_service: bool = False
    price_language: str = "eng"  # languageType: at most 3 characters

    def __post_init__(self) -> None:
        if not self.control_modes or len(set(self.control_modes)) != len(self.control_modes):
            raise ValueError("Iso20Config.control_modes must name each control mode at most once, and one at least")
        if len(self.price_language) > 3:
            raise ValueError(f"Iso20Config.price_language {self.price_language!r} is longer than 3 characters")


@dataclass(frozen=True)
class Selection:
    """The energy transfer service the EV selected, with its parameter set."""

    service: ServiceId
    parameter_set_id: int
    control_mode: ControlMode

    @property
    def bpt(self) -> bool:
        return self.service in (ServiceId.AC_BPT, ServiceId.DC_BPT)


@dataclass(frozen=True)
class PausedSession:
    """What a paused session leaves for the next connection to join (the runner keeps it)."""

    session_id: str  # 16 lower-case hex digits
    evcc_id: str
    selection: Selection


@dataclass(frozen=True)
class EvEnergyRequest:
    """The EV's needs from ScheduleExchange / the dynamic charge loop, for the energy manager as the
    user's preferences. Energies are relative to now (ISO 15118-20: EV{Target,Maximum,Minimum}EnergyRequest;
    a negative minimum means the EV may give energy back)."""

    departure_in_s: int | None = None
    target_energy_wh: float | None = None
    max_energy_wh: float | None = None
    min_energy_wh: float | None = None
    target_soc_pct: int | None = None
    min_soc_pct: int | None = None
    max_v2x_energy_wh: float | None = None
    min_v2x_energy_wh: float | None = None

    def empty(self) -> bool:
        return all(value is None for value in vars(self).values())


@dataclass(frozen=True)
class Context:
    """What an energy part needs to know about the session to answer one request."""

    selection: Selection
    standby: bool  # PowerDelivery(Standby): the loop goes on at zero power
    timestamp: int  # seconds since the epoch (MeterTimestamp)


class Reply(NamedTuple):
    code: str
    fields: dict[str, Any]
    finished: bool = False  # EVSEProcessing = Finished (CableCheck)


Answer = tuple[str, dict[str, Any]]
Handler = Callable[[Context, dict[str, Any]], Reply]


class EnergyPart(Protocol):
    """The AC or DC side of a session: its messages, and the session's way to the charger."""

    kind: Energy

    @property
    def evse_id(self) -> str: ...

    def services(self, bidirectional: bool) -> tuple[ServiceId, ...]: ...

    def service_parameters(self) -> dict[str, int]:
        """Connector (and EVSENominalVoltage for AC) for every parameter set."""
        ...

    def authorisation(self) -> Authorisation: ...

    def notice(self) -> Notice | None: ...

    def schedules(self) -> list[Schedule]: ...

    def max_charge_power_w(self) -> float: ...

    def discharge_allowance_w(self) -> float:
        """The discharge power the energy manager authorises now (0 = none)."""
        ...

    def ev_needs(self, needs: EvEnergyRequest) -> None: ...

    def power_delivery(self, start: bool, schedule_id: int | None) -> bool: ...

    def handler(self, request: str) -> Handler | None:
        """The part's handler of an AC_/DC_ request, None for a request of the other energy."""
        ...

    def session_stopped(self, reason: str) -> None: ...


class PncAuthoriser(Protocol):
    """The Plug & Charge seam (out of scope here): given one, AuthorizationSetup offers PnC with a
    fresh GenChallenge, and AuthorizationReq(PnC) is passed to it (contract chain, signature)."""

    def authorise(self, challenge: bytes, request: dict[str, Any]) -> Authorisation: ...


class Iso20Error(ValueError):
    """A request that cannot be read (missing element, value out of range), or a port contract broken."""


class _OutOfSequence(Exception):
    def __init__(self, code: str, why: str) -> None:
        super().__init__(why)
        self.code = code


@dataclass
class _Verdict:
    """What the handler decided about the request, for the table's conditions."""

    finished: bool = False
    resumed: bool = False
    progress: str | None = None  # PowerDelivery ChargeProgress
    ev_ready: bool = False  # PowerDelivery EVProcessing = Finished
    stop_kind: str | None = None  # SessionStop ChargingSession


# ----------------------------------------------------------------------------------------- the session
class Iso20Session:
    """One ISO 15118-20 session on one connection."""

    state: str
    trigger: Callable[..., bool]

    def __init__(
        self,
        part: EnergyPart,
        config: Iso20Config | None = None,
        *,
        resume: PausedSession | None = None,
        pnc: PncAuthoriser | None = None,
        new_session_id: Callable[[], bytes] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.part = part
        self.config = config or Iso20Config()
        self.session_id = NO_SESSION
        self.evcc_id: str | None = None
        self.selection: Selection | None = None
        self.stop_reason: str | None = None
        self.paused: PausedSession | None = None
        self.ev_termination: tuple[str | None, str | None] | None = None
        self.metering_confirmations: list[dict[str, Any]] = []
        self._resume = resume
        self._pnc = pnc
        self._new_id = new_session_id or (lambda: random_bytes(8))
        self._random = random_bytes
        self._wall = wall_clock
        self._challenge = b""
        self._authorised = False
        self._offered: tuple[ServiceId, ...] = ()
        self._schedule_ids: tuple[int, ...] = ()
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
    def finished(self) -> bool:
        return self._verdict.finished

    def resumed(self) -> bool:
        return self._verdict.resumed

    def ac(self) -> bool:
        return self.part.kind is Energy.AC

    def dc(self) -> bool:
        return self.part.kind is Energy.DC

    def start(self) -> bool:
        return self._verdict.progress == "Start" and self._verdict.ev_ready

    def ev_ongoing(self) -> bool:
        return self._verdict.progress == "Start" and not self._verdict.ev_ready

    def stop(self) -> bool:
        return self._verdict.progress == "Stop"

    def standby(self) -> bool:
        return self._verdict.progress == "Standby" and self.config.standby_allowed

    def standby_refused(self) -> bool:
        return self._verdict.progress == "Standby" and not self.config.standby_allowed

    def schedule_renegotiation(self) -> bool:
        return self._verdict.progress == "ScheduleRenegotiation"

    def pause(self) -> bool:
        return self._verdict.stop_kind == "Pause"

    def terminate(self) -> bool:
        return self._verdict.stop_kind == "Terminate"

    def service_renegotiation(self) -> bool:
        return self._verdict.stop_kind == "ServiceRenegotiation"

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def _may(self, request: str) -> bool:
        """Whether the table has a row for this request now, with the verdict as it stands (the same
        first-match walk the machine makes, without taking the transition)."""
        return any(
            name == request and self.state in sources and all(getattr(self, c)() for c in conditions)
            for name, sources, _, conditions in TRANSITIONS
        )

    def _require(self, request: str) -> None:
        if not self._may(request):
            raise _OutOfSequence("FAILED_SequenceError", f"{request} not expected in state {self.state}")

    # ------------------------------------------------------------------ one request
    def handle(self, message: dict[str, Any], namespace: str) -> tuple[str, dict[str, Any]]:
        """Answer one decoded request: returns (namespace, response tree). A request the table does not
        allow now, or with a wrong SessionID, is answered with its FAILED code and ends the session. A
        message that is not a request at all raises Iso20Error: nothing to answer, the runner closes."""
        name, body = _split(message)
        if name not in REQUESTS and name not in OTHER_REQUESTS:
            raise Iso20Error(f"{name} is not an ISO 15118-20 request")
        if NAMESPACE_OF.get(name, ISO20_COMMON) != namespace:
            raise Iso20Error(f"{name} does not belong to namespace {namespace}")
        response = name[:-3] + "Res"
        if response in _UNANSWERABLE:
            self._fail(response, "FAILED_SequenceError", f"{name} is not supported")
            raise Iso20Error(f"{name}: {_UNANSWERABLE[response]}")
        return namespace, self._answer(name, response, body)

    def _answer(self, name: str, response: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.ended:
            return self._fail(response, "FAILED_SequenceError", f"{name} after the session ended")
        if name not in self.machine.get_triggers(self.state):
            return self._fail(response, "FAILED_SequenceError", f"{name} not expected in state {self.state}")
        if name != "SessionSetupReq" and _session_of(body) != self.session_id:
            return self._fail(response, "FAILED_UnknownSession", f"{name} with an unknown SessionID")
        self._verdict = _Verdict()
        try:
            code, fields = self._dispatch(name, body)
        except _OutOfSequence as exc:
            return self._fail(response, exc.code, str(exc))
        except (Iso20Error, WireValueError) as exc:
            return self._fail(response, "FAILED", f"{name}: {exc}")
        if code.startswith("FAILED"):
            return self._fail(response, code, f"{name} answered {code}", fields)
        if not self.trigger(name):
            return self._fail(response, "FAILED_SequenceError", f"{name} not expected in state {self.state}")
        if self.state == "Stopped":
            self._end("SessionStop(Terminate) by the EV")
        elif self.state == "Paused":
            self._end("SessionStop(Pause) by the EV")
        return self._message(response, {"ResponseCode": code, **fields})

    def _dispatch(self, name: str, body: dict[str, Any]) -> Answer:
        common = _COMMON_HANDLERS.get(name)
        if common is not None:
            return common(self, body)
        handler = self.part.handler(name)
        if handler is None:  # an AC request in a DC session or the other way round
            raise _OutOfSequence("FAILED_SequenceError", f"{name} in a {self.part.kind} session")
        if self.selection is None:
            raise _OutOfSequence("FAILED_SequenceError", f"{name} before ServiceSelection")
        if name.endswith("ChargeParameterDiscoveryReq") and not self._authorised:
            # A joined (paused) session skipped Authorization: it must still be authorised now.
            if self.part.authorisation() is not Authorisation.ACCEPTED:
                return "FAILED", {}
            self._authorised = True
        context = Context(self.selection, standby=self.state == "Standby", timestamp=self._now())
        reply = handler(context, body)
        self._verdict.finished = reply.finished
        return reply.code, reply.fields

    def _end(self, why: str) -> None:
        self.stop_reason = why
        self.part.session_stopped(why)

    def _fail(self, response: str, code: str, why: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
        first = not self.ended
        self.machine.set_state("Stopped")
        if first:
            self._end(why)
        # A handler's own fields are complete (they may pick the other branch of a choice): else the minimum.
        return self._message(response, {"ResponseCode": code, **(fields or self._mandatory(response))})

    def _message(self, response: str, body: dict[str, Any]) -> dict[str, Any]:
        header = {"SessionID": self.session_id.upper(), "TimeStamp": self._now()}
        return {response: {"Header": header, **body}}

    def _now(self) -> int:
        return int(self._wall())

    def _mandatory(self, response: str) -> dict[str, Any]:
        """The mandatory elements of a FAILED answer (the schema wants them whatever the code)."""
        if response == "SessionSetupRes":
            return {"EVSEID": self._evse_id(strict=False)}
        if response == "ServiceDiscoveryRes":
            return self._discovery_fields()
        if response == "ServiceDetailRes":
            first = (self._offered or self._energy_services())[0]
            return {"ServiceID": int(first), "ServiceParameterList": self._parameter_list(first)}
        return copy.deepcopy(FAILED_FIELDS.get(response, {}))

    # ------------------------------------------------------------------ common handlers: (code, fields)
    def _session_setup(self, body: dict[str, Any]) -> Answer:
        evcc_id = need_text(body, "EVCCID", max_len=255)  # identifierType
        asked = _session_of(body)
        joined = self._resume
        if joined is not None and asked != NO_SESSION and asked == joined.session_id and evcc_id == joined.evcc_id:
            self.session_id, self.selection = joined.session_id, joined.selection
            self._verdict.resumed = True
            code = "OK_OldSessionJoined"
        else:  # a new session; an unknown or foreign SessionID gets a new one too (as Josev's SECC does)
            self.session_id = self._new_id().hex()
            code = "OK_NewSessionEstablished"
        self.evcc_id = evcc_id
        return code, {"EVSEID": self._evse_id()}

    def _authorization_setup(self, body: dict[str, Any]) -> Answer:
        fields: dict[str, Any] = {
            "AuthorizationServices": ["EIM", "PnC"] if self._pnc else ["EIM"],
            "CertificateInstallationService": False,  # PnC certificate installation is not offered
        }
        if self._pnc is not None:
            self._challenge = self._random(GEN_CHALLENGE_BYTES)
            fields["PnC_ASResAuthorizationMode"] = {"GenChallenge": base64.b64encode(self._challenge).decode()}
        else:
            fields["EIM_ASResAuthorizationMode"] = {}
        return "OK", fields

    def _authorization(self, body: dict[str, Any]) -> Answer:
        selected = need_choice(body, "SelectedAuthorizationService", ("EIM", "PnC"))
        if selected == "EIM":
            need_dict(body, "EIM_AReqAuthorizationMode")
            verdict = self.part.authorisation()
            waiting, refused = "Ongoing_WaitingForCustomerInteraction", "WARNING_EIMAuthorizationFailure"
        elif self._pnc is not None:
            verdict = self._pnc.authorise(self._challenge, need_dict(body, "PnC_AReqAuthorizationMode"))
            waiting, refused = "Ongoing", "WARNING_GeneralPnCAuthorizationError"
        else:  # PnC was not offered: the EV may still choose EIM
            return "WARNING_AuthorizationSelectionInvalid", {"EVSEProcessing": "Finished"}
        if verdict is Authorisation.ACCEPTED:
            self._verdict.finished = self._authorised = True
            return "OK", {"EVSEProcessing": "Finished"}
        if verdict is Authorisation.PENDING:
            return "OK", {"EVSEProcessing": waiting}
        return refused, {"EVSEProcessing": "Finished"}  # the EV may try again or stop; nothing more opens

    def _service_discovery(self, body: dict[str, Any]) -> Answer:
        offered = self._energy_services()
        supported = body.get("SupportedServiceIDs")
        if supported is not None:
            wanted = {_int_value(item, "ServiceID") for item in _as_items(supported, "ServiceID")}
            offered = tuple(s for s in offered if int(s) in wanted) or offered
        self._offered = offered
        return "OK", self._discovery_fields()

    def _service_detail(self, body: dict[str, Any]) -> Answer:
        service = need_int(body, "ServiceID")
        if service not in self._offered:
            return "FAILED_ServiceIDInvalid", {}
        return "OK", {"ServiceID": service, "ServiceParameterList": self._parameter_list(ServiceId(service))}

    def _service_selection(self, body: dict[str, Any]) -> Answer:
        chosen = need_dict(body, "SelectedEnergyTransferService")
        service, set_id = need_int(chosen, "ServiceID"), need_int(chosen, "ParameterSetID")
        if service not in self._offered:
            return "FAILED_NoEnergyTransferServiceSelected", {}
        if "SelectedVASList" in body or not 1 <= set_id <= len(self.config.control_modes):
            return "FAILED_ServiceSelectionInvalid", {}  # no value-added services are offered
        self.selection = Selection(ServiceId(service), set_id, self.config.control_modes[set_id - 1])
        self._schedule_ids = ()
        return "OK", {}

    def _schedule_exchange(self, body: dict[str, Any]) -> Answer:
        selection = self._selected()
        points = need_int(body, "MaximumSupportingPoints", MIN_SUPPORTING_POINTS, MAX_SUPPORTING_POINTS)
        anchor = self._now()
        if selection.control_mode is ControlMode.DYNAMIC:
            mode = body.get("Dynamic_SEReqControlMode")
            if not isinstance(mode, dict):  # not the control mode the EV selected (libiso15118 answers FAILED too)
                return "FAILED", {}
            self.part.ev_needs(_dynamic_needs(mode))
            self._verdict.finished = True
            prices = self.part.schedules()[:1]
            price = self._price_schedule(prices[0], anchor, points) if prices else {}
            return "OK", {"EVSEProcessing": "Finished", "Dynamic_SEResControlMode": price}
        mode = body.get("Scheduled_SEReqControlMode")
        if not isinstance(mode, dict):
            return "FAILED", {}
        needs = _scheduled_needs(mode)
        if not needs.empty():
            self.part.ev_needs(needs)
        schedules = self.part.schedules()[:MAX_SCHEDULE_TUPLES]
        if not schedules:  # the energy manager has no offer yet: Ongoing, with a placeholder of no power
            placeholder = Schedule(schedule_id=1, duration_s=86_400, power=())
            tuples = [self._schedule_tuple(placeholder, anchor, points, selection.bpt)]
            return "OK", {"EVSEProcessing": "Ongoing", "Scheduled_SEResControlMode": {"ScheduleTuple": tuples}}
        tuples = [self._schedule_tuple(s, anchor, points, selection.bpt) for s in schedules]
        self._schedule_ids = tuple(s.schedule_id for s in schedules)
        self._verdict.finished = True
        return "OK", {"EVSEProcessing": "Finished", "Scheduled_SEResControlMode": {"ScheduleTuple": tuples}}

    def _power_delivery(self, body: dict[str, Any]) -> Answer:
        selection = self._selected()
        progress = need_choice(body, "ChargeProgress", ("Start", "Stop", "Standby", "ScheduleRenegotiation"))
        self._verdict.progress = progress
        self._verdict.ev_ready = need_choice(body, "EVProcessing", PROCESSING) == "Finished"
        if "BPT_ChannelSelection" in body:
            need_choice(body, "BPT_ChannelSelection", ("Charge", "Discharge"))
        self._require("PowerDeliveryReq")  # before anything is switched
        status = self._status_fields()
        if self.start():
            code, schedule_id = self._check_profile(selection, body.get("EVPowerProfile"))
            if code is not None:
                return code, status
            if not self.part.power_delivery(True, schedule_id):
                return "FAILED_PowerDeliveryNotApplied", status
        elif self.stop() or self.standby():
            self.part.power_delivery(False, None)  # opening is never refused: current ramps to zero first
        elif self.standby_refused():
            return "WARNING_StandbyNotAllowed", status
        return "OK", status

    def _metering_confirmation(self, body: dict[str, Any]) -> Answer:
        data = need_dict(body, "SignedMeteringData")
        if str(need(data, "SessionID")).lower() != self.session_id:
            return "FAILED_MeteringSignatureNotValid", {}  # the EV confirmed another session's reading
        need_dict(data, "MeterInfo")
        self.metering_confirmations.append(data)
        return "OK", {}

    def _session_stop(self, body: dict[str, Any]) -> Answer:
        kind = need_choice(body, "ChargingSession", ("Pause", "Terminate", "ServiceRenegotiation"))
        self._verdict.stop_kind = kind
        if kind == "ServiceRenegotiation" and not self.config.service_renegotiation:
            return "FAILED_NoServiceRenegotiationSupported", {}
        if not self._may("SessionStopReq"):
            if kind == "Pause":
                return "FAILED_PauseNotAllowed", {}
            self._require("SessionStopReq")
        code = need_text(body, "EVTerminationCode", max_len=80) if "EVTerminationCode" in body else None
        text = need_text(body, "EVTerminationExplanation", 160) if "EVTerminationExplanation" in body else None
        self.ev_termination = (code, text)
        if kind == "Pause":
            assert self.evcc_id is not None  # set by SessionSetup, and Pause needs a selected service
            self.paused = PausedSession(self.session_id, self.evcc_id, self._selected())
        elif kind == "ServiceRenegotiation":
            self.selection, self._schedule_ids = None, ()
        return "OK", {}

    # ------------------------------------------------------------------ response parts
    def _selected(self) -> Selection:
        if self.selection is None:
            raise _OutOfSequence("FAILED_SequenceError", "no energy transfer service selected")
        return self.selection

    def _evse_id(self, *, strict: bool = True) -> str:
        evse_id = self.part.evse_id
        if len(evse_id) > 255:  # identifierType: at most 255 characters
            if strict:
                raise Iso20Error(f"EVSEID {evse_id[:20]!r}... is longer than 255 characters")
            return evse_id[:255]
        return evse_id

    def _energy_services(self) -> tuple[ServiceId, ...]:
        return self.part.services(self.config.bidirectional)

    def _discovery_fields(self) -> dict[str, Any]:
        services = self._offered or self._energy_services()
        return {
            "ServiceRenegotiationSupported": self.config.service_renegotiation,
            "EnergyTransferServiceList": {
                "Service": [{"ServiceID": int(s), "FreeService": self.config.free_service} for s in services]
            },
        }

    def _parameter_list(self, service: ServiceId) -> dict[str, Any]:
        """One parameter set per offered control mode, ParameterSetID 1.. in config order (Table 205/206)."""
        energy = self.part.service_parameters()
        sets = []
        for set_id, mode in enumerate(self.config.control_modes, start=1):
            values: dict[str, int] = {"Connector": energy["Connector"], "ControlMode": int(mode)}
            if "EVSENominalVoltage" in energy:
                values["EVSENominalVoltage"] = energy["EVSENominalVoltage"]
            values["MobilityNeedsMode"] = MOBILITY_NEEDS_BY_EVCC
            values["Pricing"] = int(self.config.pricing)
            if service in (ServiceId.AC_BPT, ServiceId.DC_BPT):
                values["BPTChannel"] = BPT_CHANNEL_UNIFIED
                values["GeneratorMode"] = GENERATOR_MODE_GRID_FOLLOWING
            parameters = [{"Name": name, "intValue": value} for name, value in values.items()]
            sets.append({"ParameterSetID": set_id, "Parameter": parameters})
        return {"ParameterSet": sets}

    def _status_fields(self) -> dict[str, Any]:
        return status_fields(self.part.notice())

    def _check_profile(self, selection: Selection, profile: Any) -> tuple[str | None, int | None]:
        """The EV's power profile against what was offered: (FAILED code or None, schedule id)."""
        default = self._schedule_ids[0] if self._schedule_ids else None
        if profile is None:
            return None, default if selection.control_mode is ControlMode.SCHEDULED else None
        if not isinstance(profile, dict):
            raise Iso20Error("EVPowerProfile is not a structure")
        entries = _as_items(need_dict(profile, "EVPowerProfileEntries"), "EVPowerProfileEntry")
        if not selection.bpt and any(need_rational(e, "Power") < 0 for e in entries):
            return "FAILED_EVPowerProfileInvalid", None  # discharge in a service without BPT
        if selection.control_mode is ControlMode.DYNAMIC:
            ok = isinstance(profile.get("Dynamic_EVPPTControlMode"), dict)
            return (None, None) if ok else ("FAILED_EVPowerProfileInvalid", None)
        scheduled = profile.get("Scheduled_EVPPTControlMode")
        if not isinstance(scheduled, dict):
            return "FAILED_EVPowerProfileInvalid", None
        chosen = need_int(scheduled, "SelectedScheduleTupleID")
        if chosen not in self._schedule_ids:
            return "FAILED_ScheduleSelectionInvalid", None
        return None, chosen

    def _schedule_tuple(self, schedule: Schedule, anchor: int, points: int, bpt: bool) -> dict[str, Any]:
        """A ScheduleTuple from one of the port's offers: charging powers within the EVSE's maximum and,
        for BPT, a discharging schedule within the discharge the energy manager authorises (negative
        powers: discharge, as in the EV's power profile)."""
        if schedule.schedule_id < 1:  # numericIDType
            raise Iso20Error(f"schedule id {schedule.schedule_id} from the port is not 1 or more")
        steps = _steps(schedule.duration_s, [(e.start_s, e.max_power_w) for e in schedule.power], what="power")
        cap = max(0.0, finite(self.part.max_charge_power_w()))
        charge = [(d, min(max(0.0, finite(p)), cap)) for d, p in steps] or [(schedule.duration_s, 0.0)]
        charging: dict[str, Any] = {"PowerSchedule": _power_schedule(anchor, _fit(charge, points, min_magnitude))}
        charging.update(self._price_schedule(schedule, anchor, points))
        out: dict[str, Any] = {"ScheduleTupleID": schedule.schedule_id, "ChargingSchedule": charging}
        if bpt:
            allowed = max(0.0, finite(self.part.discharge_allowance_w()))
            discharge = [(d, -min(max(0.0, -finite(p)), allowed)) for d, p in steps] or [(schedule.duration_s, 0.0)]
            # The port's Schedule has one tariff: it prices discharged energy too (Josev's EVCC also
            # rejects a ChargingSchedule without a price schedule, though the XSD makes it optional).
            out["DischargingSchedule"] = {
                "PowerSchedule": _power_schedule(anchor, _fit(discharge, points, min_magnitude)),
                **self._price_schedule(schedule, anchor, points),
            }
        return out

    def _price_schedule(self, schedule: Schedule, anchor: int, points: int) -> dict[str, Any]:
        """The price schedule the Pricing parameter promised, when the port's offer has one."""
        pricing = self.config.pricing
        if pricing is Pricing.NONE or not schedule.prices:
            return {}
        if pricing is Pricing.ABSOLUTE:
            steps = _steps(schedule.duration_s, [(p.start_s, p.price_per_kwh) for p in schedule.prices], what="price")
            stacks = [
                {"Duration": d, "PriceRule": [{"EnergyFee": rational(price), "PowerRangeStart": rational(0.0)}]}
                for d, price in _fit(steps, points, max)  # merged tail: the highest price, never a surprise
            ]
            return {
                "AbsolutePriceSchedule": {
                    "TimeAnchor": anchor,
                    "PriceScheduleID": schedule.schedule_id,
                    "Currency": schedule.currency[:3],
                    "Language": self.config.price_language,
                    "PriceAlgorithm": PRICE_ALGORITHM_POWER,
                    "PriceRuleStacks": {"PriceRuleStack": stacks},
                }
            }
        levels = [p.level for p in schedule.prices]
        if schedule.price_levels is None or any(level is None for level in levels):
            return {}  # no levels in this tariff: no price schedule rather than invented levels
        steps = _steps(schedule.duration_s, [(p.start_s, float(p.level or 0)) for p in schedule.prices], what="price")
        entries = [{"Duration": d, "PriceLevel": int(level)} for d, level in _fit(steps, points, max)]
        return {
            "PriceLevelSchedule": {
                "TimeAnchor": anchor,
                "PriceScheduleID": schedule.schedule_id,
                "NumberOfPriceLevels": schedule.price_levels,
                "PriceLevelScheduleEntries": {"PriceLevelScheduleEntry": entries},
            }
        }


_COMMON_HANDLERS: dict[str, Callable[[Iso20Session, dict[str, Any]], Answer]] = {
    "SessionSetupReq": Iso20Session._session_setup,
    "AuthorizationSetupReq": Iso20Session._authorization_setup,
    "AuthorizationReq": Iso20Session._authorization,
    "ServiceDiscoveryReq": Iso20Session._service_discovery,
    "ServiceDetailReq": Iso20Session._service_detail,
    "ServiceSelectionReq": Iso20Session._service_selection,
    "ScheduleExchangeReq": Iso20Session._schedule_exchange,
    "PowerDeliveryReq": Iso20Session._power_delivery,
    "MeteringConfirmationReq": Iso20Session._metering_confirmation,
    "SessionStopReq": Iso20Session._session_stop,
}

_ZERO = {"Exponent": 0, "Value": 0}
#: The least a FAILED answer must carry (the XSDs' mandatory elements); zero power and voltage, so that
#: nothing in a FAILED answer can be read as a grant.
FAILED_FIELDS: dict[str, dict[str, Any]] = {
    "AuthorizationSetupRes": {
        "AuthorizationServices": ["EIM"],
        "CertificateInstallationService": False,
        "EIM_ASResAuthorizationMode": {},
    },
    "AuthorizationRes": {"EVSEProcessing": "Finished"},
    "ScheduleExchangeRes": {"EVSEProcessing": "Finished", "Dynamic_SEResControlMode": {}},
    "VehicleCheckOutRes": {"EVSECheckOutStatus": "Completed"},
    "AC_ChargeParameterDiscoveryRes": {
        "AC_CPDResEnergyTransferMode": {
            "EVSEMaximumChargePower": _ZERO,
            "EVSEMinimumChargePower": _ZERO,
            "EVSENominalFrequency": _ZERO,
        }
    },
    "AC_ChargeLoopRes": {"Scheduled_AC_CLResControlMode": {}},  # all of it optional
    "DC_ChargeParameterDiscoveryRes": {
        "DC_CPDResEnergyTransferMode": {
            name: _ZERO
            for name in (
                "EVSEMaximumChargePower",
                "EVSEMinimumChargePower",
                "EVSEMaximumChargeCurrent",
                "EVSEMinimumChargeCurrent",
                "EVSEMaximumVoltage",
                "EVSEMinimumVoltage",
            )
        }
    },
    "DC_CableCheckRes": {"EVSEProcessing": "Finished"},
    "DC_PreChargeRes": {"EVSEPresentVoltage": _ZERO},
    "DC_ChargeLoopRes": {
        "EVSEPresentCurrent": _ZERO,
        "EVSEPresentVoltage": _ZERO,
        "EVSEPowerLimitAchieved": False,
        "EVSECurrentLimitAchieved": False,
        "EVSEVoltageLimitAchieved": False,
        "Scheduled_DC_CLResControlMode": {},  # all of it optional
    },
    "DC_WeldingDetectionRes": {"EVSEPresentVoltage": _ZERO},
}

#: Known -20 requests whose answer cannot be built without what this SECC does not have.
_UNANSWERABLE = {"CertificateInstallationRes": "PnC certificate installation is not supported (no CPS chain)"}

NAMESPACE_OF: dict[str, str] = {
    **{name: ISO20_AC for name in REQUESTS if name.startswith("AC_")},
    **{name: ISO20_DC for name in REQUESTS if name.startswith("DC_")},
}


# ----------------------------------------------------------------------------------------- shared parts
def status_fields(notice: Notice | None) -> dict[str, Any]:
    """EVSEStatus, only when there is something to notify: -20 has no 'None' notification, and an EV
    takes any EVSEStatus in a charge loop answer as a request to act."""
    if notice is None:
        return {}
    delay = min(max(int(notice.max_delay_s), 0), 65_535)  # xs:unsignedShort
    return {"EVSEStatus": {"NotificationMaxDelay": delay, "EVSENotification": notice.notification.value}}


def loop_head(notice: Notice | None, meter: MeterInfo | None, requested: bool, timestamp: int) -> dict[str, Any]:
    """The ChargeLoopRes elements common to AC and DC (ChargeLoopResType): EVSEStatus and MeterInfo
    (when the EV asked for it, or with a MeteringConfirmation notification)."""
    out = status_fields(notice)
    confirm = notice is not None and notice.notification is EvseNotification.METERING_CONFIRMATION
    if meter is not None and (requested or confirm):
        out["MeterInfo"] = meter_info(meter, timestamp)
    return out


def meter_info(meter: MeterInfo, timestamp: int) -> dict[str, Any]:
    """MeterInfoType (CommonTypes XSD): readings in whole Wh; the signature only if it fits 64 bytes."""
    out: dict[str, Any] = {
        "MeterID": meter.meter_id[:32],
        "ChargedEnergyReadingWh": max(0, int(finite(meter.import_wh))),
    }
    if meter.export_wh:
        out["BPT_DischargedEnergyReadingWh"] = max(0, int(finite(meter.export_wh)))
    if meter.signed is not None and len(meter.signed) <= 64:  # meterSignatureType: maxLength 64
        out["MeterSignature"] = base64.b64encode(meter.signed).decode()
    out["MeterTimestamp"] = timestamp
    return out


def bounded(value: float) -> dict[str, Any]:
    """A RationalNumber for an EVSE limit or target: rounded toward zero where the 16-bit value cannot
    carry it exactly, so the EV never reads more power (either way) than was granted."""
    out = rational(value)
    if abs(from_rational(out)) > abs(value):
        out["Value"] -= 1 if out["Value"] > 0 else -1
    return out


def clamp(value: float | None, low: float, high: float) -> float:
    """``value`` within [low, high]; not a finite number gives 0 within the window (default deny)."""
    if value is None or not math.isfinite(value):
        value = 0.0
    return min(max(value, low), high)


def finite(value: float) -> float:
    """A port's number, or 0 when it is not finite (default deny)."""
    return value if math.isfinite(value) else 0.0


def min_magnitude(values: Sequence[float]) -> float:
    """The value closest to zero: the least power of a merged tail, charging or discharging."""
    return min(values, key=abs)


def _steps(duration_s: int, starts: list[tuple[int, float]], *, what: str) -> list[tuple[int, float]]:
    """(start, value) entries of the port's schedule as -20 (Duration, value) entries."""
    if not starts:
        return []
    if starts[0][0] != 0 or any(b[0] <= a[0] for a, b in pairwise(starts)):
        raise Iso20Error(f"{what} entries from the port must start at 0 and ascend")
    if starts[-1][0] >= duration_s or duration_s > 0xFFFF_FFFF:
        raise Iso20Error(f"{what} entries from the port must lie within the schedule's {duration_s} s")
    ends = [s for s, _ in starts[1:]] + [duration_s]
    return [(end - start, value) for (start, value), end in zip(starts, ends, strict=True)]


def _fit(steps: list[tuple[int, float]], points: int, merge: Callable[[Sequence[float]], float]) -> list[Any]:
    """At most ``points`` entries: the tail beyond them merged into the last one with ``merge`` (the EV
    said it cannot take more supporting points, so they are merged on the safe side)."""
    if len(steps) <= points:
        return steps
    head, tail = steps[: points - 1], steps[points - 1 :]
    return [*head, (sum(d for d, _ in tail), merge([v for _, v in tail]))]


def _power_schedule(anchor: int, steps: list[tuple[int, float]]) -> dict[str, Any]:
    entries = [{"Duration": d, "Power": bounded(p)} for d, p in steps]
    return {"TimeAnchor": anchor, "PowerScheduleEntries": {"PowerScheduleEntry": entries}}


def _dynamic_needs(mode: dict[str, Any]) -> EvEnergyRequest:
    """Dynamic_SEReqControlModeType (CommonMessages XSD)."""
    return EvEnergyRequest(
        departure_in_s=need_int(mode, "DepartureTime", 0, 0xFFFF_FFFF),
        min_soc_pct=maybe_int(mode, "MinimumSOC", 0, 100),
        target_soc_pct=maybe_int(mode, "TargetSOC", 0, 100),
        target_energy_wh=need_rational(mode, "EVTargetEnergyRequest"),
        max_energy_wh=need_rational(mode, "EVMaximumEnergyRequest"),
        min_energy_wh=need_rational(mode, "EVMinimumEnergyRequest"),
        max_v2x_energy_wh=maybe_rational(mode, "EVMaximumV2XEnergyRequest"),
        min_v2x_energy_wh=maybe_rational(mode, "EVMinimumV2XEnergyRequest"),
    )


def _scheduled_needs(mode: dict[str, Any]) -> EvEnergyRequest:
    """Scheduled_SEReqControlModeType: all optional (the EV's energy offer is not used)."""
    return EvEnergyRequest(
        departure_in_s=maybe_int(mode, "DepartureTime", 0, 0xFFFF_FFFF),
        target_energy_wh=maybe_rational(mode, "EVTargetEnergyRequest"),
        max_energy_wh=maybe_rational(mode, "EVMaximumEnergyRequest"),
        min_energy_wh=maybe_rational(mode, "EVMinimumEnergyRequest"),
    )


def dynamic_loop_needs(mode: dict[str, Any]) -> EvEnergyRequest:
    """Dynamic_CLReqControlModeType (CommonTypes XSD) and the BPT V2X requests of the dynamic loops."""
    return EvEnergyRequest(
        departure_in_s=maybe_int(mode, "DepartureTime", 0, 0xFFFF_FFFF),
        target_energy_wh=need_rational(mode, "EVTargetEnergyRequest"),
        max_energy_wh=need_rational(mode, "EVMaximumEnergyRequest"),
        min_energy_wh=need_rational(mode, "EVMinimumEnergyRequest"),
        max_v2x_energy_wh=maybe_rational(mode, "EVMaximumV2XEnergyRequest"),
        min_v2x_energy_wh=maybe_rational(mode, "EVMinimumV2XEnergyRequest"),
    )


# ----------------------------------------------------------------------------------------- reading requests
def _split(message: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(message, dict) or len(message) != 1:
        raise Iso20Error("a message is an object with exactly one key, the message element")
    [(name, body)] = message.items()
    if not isinstance(name, str) or not name.endswith("Req"):
        raise Iso20Error(f"{name!r} is not a request")
    if not isinstance(body, dict):
        raise Iso20Error(f"{name} is not a structure")
    return name, body


def _session_of(body: dict[str, Any]) -> str:
    header = body.get("Header")
    value = header.get("SessionID") if isinstance(header, dict) else None
    text = str(value).lower() if value is not None else ""
    return text if len(text) == 16 and all(c in "0123456789abcdef" for c in text) else ""


def need(body: Any, name: str) -> Any:
    if not isinstance(body, dict) or name not in body:
        raise Iso20Error(f"{name} missing")
    return body[name]


def need_dict(body: Any, name: str) -> dict[str, Any]:
    value = need(body, name)
    if not isinstance(value, dict):
        raise Iso20Error(f"{name} is not a structure")
    return value


def need_int(body: Any, name: str, low: int | None = None, high: int | None = None) -> int:
    return _int_value(need(body, name), name, low, high)


def _int_value(value: Any, name: str, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Iso20Error(f"{name} is not an integer ({value!r})")
    if (low is not None and value < low) or (high is not None and value > high):
        raise Iso20Error(f"{name} {value} outside {low}..{high}")
    return value


def maybe_int(body: Any, name: str, low: int | None = None, high: int | None = None) -> int | None:
    return need_int(body, name, low, high) if isinstance(body, dict) and name in body else None


def need_bool(body: Any, name: str) -> bool:
    value = need(body, name)
    if not isinstance(value, bool):
        raise Iso20Error(f"{name} is not a boolean ({value!r})")
    return value


def need_text(body: Any, name: str, max_len: int) -> str:
    value = need(body, name)
    if not isinstance(value, str) or len(value) > max_len:
        raise Iso20Error(f"{name} is not a string of at most {max_len} characters")
    return value


def need_choice(body: Any, name: str, allowed: Sequence[str]) -> str:
    value = need(body, name)
    if value not in allowed:
        raise Iso20Error(f"{name} {value!r} is not one of {', '.join(allowed)}")
    return str(value)


def need_rational(body: Any, name: str) -> float:
    return from_rational(need(body, name), what=name)


def maybe_rational(body: Any, name: str) -> float | None:
    return need_rational(body, name) if isinstance(body, dict) and name in body else None


def _as_items(container: Any, name: str) -> list[Any]:
    value = need(container, name)
    return value if isinstance(value, list) else [value]
