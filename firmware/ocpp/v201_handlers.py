"""OCPP 2.0.1 and 2.1: one connection's endpoint and the calls the CSMS makes, for :mod:`firmware.ocpp.v201`.

Built on ``ocpp.v201.ChargePoint`` (``ocpp.v21`` for 2.1): it frames, validates against the official
schemas and routes calls to the ``@on`` handlers below. Handlers read the request as it came on the wire
(camelCase, JSON numbers as int/float), not the package's snake_case keyword arguments, so nothing is
lost in the renaming. They answer at once; what takes time or sends messages of its own (a report, a
reset, starting a session) runs after the answer (``@after``, F06.FR.04: the response comes first).

Every frame we send has its timestamps checked (:mod:`firmware.ocpp.timestamps`) and is reported to the
station's message events, as in :mod:`firmware.ocpp.v16`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from ocpp.charge_point import camel_to_snake_case
from ocpp.routing import after, on
from ocpp.v21 import ChargePoint as OcppChargePoint21
from ocpp.v21 import call as call21
from ocpp.v21 import call_result as call_result21
from ocpp.v21.enums import Action as Action21
from ocpp.v201 import ChargePoint as OcppChargePoint201
from ocpp.v201.enums import Action as Action201

from firmware.ocpp.calls import OcppCallError
from firmware.ocpp.charging_profiles import ChargingProfile, ProfileError, Purpose, RateUnit, profile_from_v201
from firmware.ocpp.link import Link, LinkClosed
from firmware.ocpp.maintenance import TransferError, check_location
from firmware.ocpp.smart_charging import composite_schedule, composite_to_v201
from firmware.ocpp.timestamps import TimestampError, check_payload, parse_utc, utc_iso
from firmware.ocpp.v16 import MAX_COMPOSITE_S

if TYPE_CHECKING:
    from firmware.ocpp.station import OcppStation
    from firmware.ocpp.v201 import V201Adapter

log = logging.getLogger(__name__)

#: How many recent CSMS requests are kept for their ``@after`` handlers (the CSMS has one call
#: outstanding at a time, OCPP-J part 4 §4.1.1, so a handful would do).
REQUESTS_KEPT = 32
#: Reset while busy (OnIdle): look again this often whether the last transaction ended.
RESET_POLL_S = 1.0
#: StatusInfoType.additionalInfo maxLength.
INFO_MAX = 512
#: 2.0.1 IdTokenType.idToken: identifierString, maxLength 36.
ID_TOKEN_MAX = 36

#: 2.0.1 ChargingProfilePurposeEnumType <-> the normalised purposes.
PURPOSES: dict[str, Purpose] = {
    "ChargingStationMaxProfile": Purpose.STATION_MAX,
    "TxDefaultProfile": Purpose.TX_DEFAULT,
    "TxProfile": Purpose.TX,
    "ChargingStationExternalConstraints": Purpose.EXTERNAL_CONSTRAINTS,
}
PURPOSE_NAMES: dict[Purpose, str] = {purpose: name for name, purpose in PURPOSES.items()}


@dataclass
class RemoteStart:
    """A RequestStartTransaction the station accepted, until its transaction starts."""

    remote_start_id: int
    id_tag: str
    charging_profile: dict[str, Any] | None = None


def profile_to_v201(profile: ChargingProfile) -> dict[str, Any]:
    """ChargingProfileType of an installed profile (for ReportChargingProfiles, K09)."""
    schedule = profile.schedule
    periods = []
    for period in schedule.periods:
        entry: dict[str, Any] = {"startPeriod": period.start_s, "limit": period.limit}
        if period.number_phases is not None:
            entry["numberPhases"] = period.number_phases
        periods.append(entry)
    # ChargingScheduleType.id is required in 2.0.1; a profile set over 1.6 has none, the profile id stands in.
    wire_schedule: dict[str, Any] = {
        "id": schedule.id if schedule.id is not None else profile.id,
        "chargingRateUnit": schedule.rate_unit,
        "chargingSchedulePeriod": periods,
    }
    if schedule.start_schedule is not None:
        wire_schedule["startSchedule"] = utc_iso(schedule.start_schedule)
    if schedule.duration_s is not None:
        wire_schedule["duration"] = schedule.duration_s
    if schedule.min_charging_rate is not None:
        wire_schedule["minChargingRate"] = schedule.min_charging_rate
    wire: dict[str, Any] = {
        "id": profile.id,
        "stackLevel": profile.stack_level,
        "chargingProfilePurpose": PURPOSE_NAMES[profile.purpose],
        "chargingProfileKind": profile.kind.value,
        "chargingSchedule": [wire_schedule],
    }
    if profile.recurrency is not None:
        wire["recurrencyKind"] = profile.recurrency.value
    if profile.valid_from is not None:
        wire["validFrom"] = utc_iso(profile.valid_from)
    if profile.valid_to is not None:
        wire["validTo"] = utc_iso(profile.valid_to)
    if profile.transaction_id is not None:
        wire["transactionId"] = profile.transaction_id
    return wire


def _status_info(reason: str, detail: str = "") -> dict[str, Any]:
    info: dict[str, Any] = {"reasonCode": reason[:20]}  # StatusInfoType.reasonCode maxLength 20
    if detail:
        info["additionalInfo"] = detail[:INFO_MAX]
    return info


def _payload(frame: list[Any], index: int) -> dict[str, Any]:
    value = frame[index] if len(frame) > index else {}
    return value if isinstance(value, dict) else {"value": value}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class ChargePoint201(OcppChargePoint201):  # type: ignore[misc]  # the ocpp package has no type hints
    """One connection's OCPP 2.0.1 endpoint; the station behind it lives across connections."""

    #: Every action of this version: a call without a handler is NotImplemented, an unknown one NotSupported.
    actions: ClassVar[frozenset[str]] = frozenset(a.value for a in Action201)
    #: CALLERROR codes the ``ocpp`` package spells the 1.6 way.
    error_codes: ClassVar[dict[str, str]] = {"FormationViolation": "FormatViolation"}

    def __init__(self, station: OcppStation, adapter: V201Adapter, link: Link) -> None:
        super().__init__(station.settings.station_id, link, response_timeout=adapter.message_timeout_s())
        self.station = station
        self.adapter = adapter
        self._calls_in: dict[str, str] = {}  # unique id -> action of the CSMS's calls we answer
        self._requests: OrderedDict[str, dict[str, Any]] = OrderedDict()  # unique id -> request payload
        self._tasks: set[asyncio.Task[None]] = set()
        self._log_names: dict[str, str] = {}  # GetLog unique id -> the file name we announced

    # ------------------------------------------------------------------ framing hooks
    async def route_message(self, raw_msg: str) -> None:
        try:
            frame = json.loads(raw_msg)
        except ValueError:
            log.warning("OCPP: dropped a frame that is not JSON: %.200r", raw_msg)
            return
        if isinstance(frame, list) and len(frame) >= 3 and frame[0] == 2:
            unique_id, action, payload = str(frame[1]), str(frame[2]), _payload(frame, 3)
            self._calls_in[unique_id] = action
            self._requests[unique_id] = payload
            while len(self._requests) > REQUESTS_KEPT:
                self._requests.popitem(last=False)
            self.station.message_event("rx", "call", action, payload)
            if action not in self.route_map:
                # The ocpp package answers nothing at all for an unhandled 2.1 action; answer it here.
                code = "NotImplemented" if action in self.actions else "NotSupported"
                await self._send(json.dumps([4, unique_id, code, f"{action} is not implemented", {}]))
                return
        elif isinstance(frame, list) and len(frame) >= 2 and frame[0] in (3, 4):
            kind = "result" if frame[0] == 3 else "error"
            self.station.message_event("rx", kind, None, _payload(frame, 2))
        try:
            await super().route_message(raw_msg)
        except ConnectionError:
            raise  # LinkClosed: the connection is over
        except Exception:
            # A bug in a handler's follow-up must not end the connection (the reader would die with it).
            log.exception("OCPP: handling a frame failed: %.200r", raw_msg)

    async def _send(self, message: str) -> None:
        frame = json.loads(message)
        version = self._ocpp_version
        if frame[0] == 2:
            check_payload(version, frame[2], frame[3])  # our own bug if it fails: surfaces in call()
            self.station.message_event("tx", "call", frame[2], frame[3])
        elif frame[0] == 3:
            action = self._calls_in.pop(str(frame[1]), None)
            if action is not None:
                try:
                    check_payload(version, action, frame[2], response=True)
                except TimestampError as exc:
                    log.error("OCPP: refusing to send a bad %s answer: %s", action, exc)
                    message = json.dumps([4, frame[1], "InternalError", "bad timestamp in the answer", {}])
            self.station.message_event("tx", "result", action, frame[2])
        else:
            self._calls_in.pop(str(frame[1]), None)
            if frame[2] in self.error_codes:
                frame[2] = self.error_codes[frame[2]]
                message = json.dumps(frame, separators=(",", ":"))
            self.station.message_event("tx", "error", None, {"code": frame[2], "description": frame[3]})
        await super()._send(message)

    # ------------------------------------------------------------------ helpers
    def _request(self, unique_id: str) -> dict[str, Any]:
        return self._requests.get(unique_id, {})

    def _result(self, action: str, payload: dict[str, Any]) -> Any:
        """The ``ocpp`` package's response object of ``action`` from a camelCase payload."""
        return getattr(self._call_result, action)(**camel_to_snake_case(payload))

    def _later(self, work: Awaitable[Any]) -> None:
        """Run ``work`` after the answer; its failure is logged, never raised into the reader."""

        async def guarded() -> None:
            try:
                await work
            except (OcppCallError, TimeoutError, LinkClosed) as exc:
                log.warning("OCPP: follow-up of a CSMS call failed: %s", exc)
            except Exception:
                log.exception("OCPP: follow-up of a CSMS call failed")

        task = asyncio.ensure_future(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _known_evse(self, evse_id: Any) -> bool:
        return _int(evse_id) is not None and evse_id in self.station.connectors

    def _now(self) -> datetime:
        return self.station.wall_clock()

    # ================================================================== B Provisioning
    @on("GetVariables")
    def on_get_variables(self, call_unique_id: str, **_: Any) -> Any:
        data = self._request(call_unique_id).get("getVariableData") or []
        # TooManyItemsError (more than ItemsPerMessage) is a CALLERROR OccurenceConstraintViolation (B06).
        return self._result("GetVariables", {"getVariableResult": self.adapter.device_model.get_variables(data)})

    @on("SetVariables")
    def on_set_variables(self, call_unique_id: str, **_: Any) -> Any:
        data = self._request(call_unique_id).get("setVariableData") or []
        return self._result("SetVariables", {"setVariableResult": self.adapter.device_model.set_variables(data)})

    def _base_report(self, request: dict[str, Any]) -> list[dict[str, Any]] | None:
        try:
            return self.adapter.device_model.base_report(request.get("reportBase"))  # type: ignore[arg-type]
        except ValueError:
            return None

    @on("GetBaseReport")
    def on_get_base_report(self, call_unique_id: str, **_: Any) -> Any:
        data = self._base_report(self._request(call_unique_id))
        status = "NotSupported" if data is None else "Accepted" if data else "EmptyResultSet"
        return self._result("GetBaseReport", {"status": status})

    @after("GetBaseReport")
    def after_get_base_report(self, call_unique_id: str, **_: Any) -> None:
        request = self._request(call_unique_id)
        data = self._base_report(request)
        request_id = _int(request.get("requestId"))
        if data and request_id is not None:
            self._later(self._notify_report(request_id, data))

    async def _notify_report(self, request_id: int, data: list[dict[str, Any]]) -> None:
        """B07: NotifyReport messages of at most DeviceDataCtrlr.ItemsPerMessage[GetReport] entries each,
        numbered from seqNo 0, every one but the last with tbc (to be continued)."""
        per_message = max(1, self.adapter.int_setting("DeviceDataCtrlr", "ItemsPerMessage", 100, "GetReport"))
        chunks = [data[i : i + per_message] for i in range(0, len(data), per_message)]
        generated = utc_iso(self._now())
        for seq_no, chunk in enumerate(chunks):
            payload = {
                "requestId": request_id,
                "generatedAt": generated,
                "seqNo": seq_no,
                "tbc": seq_no < len(chunks) - 1,
                "reportData": chunk,
            }
            await self.adapter.call("NotifyReport", payload)

    def _reset_status(self, request: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        kind = request.get("type")
        if request.get("evseId") is not None:
            # B11/B12: a station that cannot reset a single EVSE rejects such a request.
            return "Rejected", _status_info("UnsupportedRequest", "this station resets as a whole only")
        if kind not in ("Immediate", "OnIdle"):
            return "Rejected", _status_info("UnsupportedRequest", f"reset type {kind!r}")
        busy = any(st.tx is not None for st in self.station.state.values())
        # B12: OnIdle waits for the transactions to end; Immediate ends them (stoppedReason ImmediateReset).
        return ("Scheduled" if kind == "OnIdle" and busy else "Accepted"), None

    @on("Reset")
    def on_reset(self, call_unique_id: str, **_: Any) -> Any:
        status, info = self._reset_status(self._request(call_unique_id))
        return self._result("Reset", {"status": status, **({"statusInfo": info} if info else {})})

    @after("Reset")
    def after_reset(self, call_unique_id: str, **_: Any) -> None:
        request = self._request(call_unique_id)
        if self._reset_status(request)[0] != "Rejected":
            self._later(self._reset(str(request["type"])))

    async def _reset(self, kind: str) -> None:
        if kind == "OnIdle":
            while any(st.tx is not None for st in self.station.state.values()):
                await self.station.clock.sleep(RESET_POLL_S)
        await self.station.reset(kind)

    # ================================================================== C Authorization, D Local list
    @on("ClearCache")
    def on_clear_cache(self, **_: Any) -> Any:
        # C11: with the cache disabled there is nothing to clear: Rejected.
        cleared = self.adapter.cache_enabled and self.station.cache.clear()
        return self._result("ClearCache", {"status": "Accepted" if cleared else "Rejected"})

    @on("GetLocalListVersion")
    def on_get_local_list_version(self, **_: Any) -> Any:
        # D02: versionNumber 0 means no list (also when the local list is disabled).
        version = self.station.local_list.version if self.adapter.local_list_enabled else 0
        return self._result("GetLocalListVersion", {"versionNumber": version})

    @on("SendLocalList")
    def on_send_local_list(self, call_unique_id: str, **_: Any) -> Any:
        request = self._request(call_unique_id)
        if not self.adapter.local_list_enabled:
            info = _status_info("NotEnabled", "LocalAuthListCtrlr.Enabled is false")
            return self._result("SendLocalList", {"status": "Failed", "statusInfo": info})
        status = self.station.local_list.send_local_list(
            request.get("versionNumber"),  # type: ignore[arg-type]  # checked by send_local_list
            str(request.get("updateType")),
            request.get("localAuthorizationList"),
        )
        try:
            self.adapter.device_model.update_actual("LocalAuthListCtrlr", "Entries", str(len(self.station.local_list)))
        except (KeyError, ValueError) as exc:
            log.warning("cannot update LocalAuthListCtrlr.Entries: %s", exc)
        return self._result("SendLocalList", {"status": status})

    # ================================================================== E Transactions
    @on("GetTransactionStatus")
    def on_get_transaction_status(self, call_unique_id: str, **_: Any) -> Any:
        transaction_id = self._request(call_unique_id).get("transactionId")
        try:
            queued = [m for m in self.station.outbox.pending() if m.action == "TransactionEvent"]
        except Exception as exc:
            log.error("GetTransactionStatus: cannot read the outbox: %s", exc)
            queued = []
        answer: dict[str, Any] = {}
        if transaction_id is not None:
            # E14: whether it runs, and whether messages of it are still queued.
            answer["ongoingIndicator"] = any(
                st.tx is not None and str(st.tx.transaction_id) == str(transaction_id)
                for st in self.station.state.values()
            )
            queued = [
                m for m in queued if (m.payload.get("transactionInfo") or {}).get("transactionId") == transaction_id
            ]
        answer["messagesInQueue"] = bool(queued)
        return self._result("GetTransactionStatus", answer)

    # ================================================================== F Remote control
    def _start_target(self, request: dict[str, Any]) -> int | None:
        evse_id = request.get("evseId")
        if evse_id is None:
            return self.station.free_connector()
        return evse_id if self._known_evse(evse_id) else None

    def _start_profile_ok(self, profile: Any, connector_id: int) -> bool:
        """F01: a profile sent with RequestStartTransaction must be a TxProfile without transactionId; it is
        installed when the transaction exists (K01.FR.03 then has the id)."""
        if profile is None:
            return True
        if not isinstance(profile, dict) or profile.get("chargingProfilePurpose") != "TxProfile":
            return False
        if profile.get("transactionId") is not None:
            return False
        try:
            profile_from_v201({**profile, "transactionId": "check"}, connector_id)
        except ProfileError as exc:
            log.warning("RequestStartTransaction: invalid charging profile: %s", exc)
            return False
        return True

    @on("RequestStartTransaction")
    def on_request_start(self, call_unique_id: str, **_: Any) -> Any:
        request = self._request(call_unique_id)
        token = request.get("idToken") or {}
        id_tag, token_type = str(token.get("idToken", "")), str(token.get("type", ""))
        n = self._start_target(request)
        profile = request.get("chargingProfile")
        remote_start_id = _int(request.get("remoteStartId"))
        accepted = (
            n is not None
            and remote_start_id is not None
            and len(id_tag) <= ID_TOKEN_MAX
            and self._start_profile_ok(profile, n)
        )
        if accepted and n is not None and remote_start_id is not None:
            if token_type != "NoAuthorization":
                self.adapter.remember_token_type(id_tag, token_type)
            accepted = self.station.remote_start(n, id_tag or self.station.settings.free_id_tag)
            if accepted:
                self.adapter.remote_starts[n] = RemoteStart(remote_start_id, id_tag, profile)
        return self._result("RequestStartTransaction", {"status": "Accepted" if accepted else "Rejected"})

    @after("RequestStartTransaction")
    def after_request_start(self, call_unique_id: str, **_: Any) -> None:
        request = self._request(call_unique_id)
        for n, pending in self.adapter.remote_starts.items():
            if pending.remote_start_id == request.get("remoteStartId"):
                token = request.get("idToken") or {}
                # F01/F02: with AuthCtrlr.AuthorizeRemoteStart the identifier is checked with an Authorize first.
                authorize_first = self.adapter.bool_setting("AuthCtrlr", "AuthorizeRemoteStart", False) and (
                    token.get("type") != "NoAuthorization"
                )
                self._later(self._complete_start(n, pending.id_tag, authorize_first))
                return

    async def _complete_start(self, n: int, id_tag: str, authorize_first: bool) -> None:
        await self.station.complete_remote_start(n, id_tag or self.station.settings.free_id_tag, authorize_first)
        st = self.station.state[n]
        if st.tx is None and not st.authorized_waiting:
            self.adapter.remote_starts.pop(n, None)  # the CSMS did not authorise it after all

    @on("RequestStopTransaction")
    def on_request_stop(self, call_unique_id: str, **_: Any) -> Any:
        transaction_id = self._request(call_unique_id).get("transactionId")
        # F03.FR.08: Rejected when no transaction with this id runs.
        found = isinstance(transaction_id, str) and self.station.remote_stop(transaction_id)
        return self._result("RequestStopTransaction", {"status": "Accepted" if found else "Rejected"})

    def _trigger_targets(self, evse_id: int | None) -> list[int]:
        return list(self.station.connectors) if evse_id in (None, 0) else [evse_id]  # type: ignore[list-item]

    def _trigger_status(self, request: dict[str, Any]) -> str:
        message = request.get("requestedMessage")
        evse = request.get("evse") if isinstance(request.get("evse"), dict) else None
        evse_id = _int(evse.get("id")) if evse else None
        if evse is not None and evse_id != 0 and not self._known_evse(evse_id):
            return "Rejected"
        if message == "BootNotification":
            return "Rejected" if self.station.boot_accepted else "Accepted"  # F06.FR.17
        if message == "Heartbeat":
            return "Accepted"
        if message == "StatusNotification":
            # F06.FR.12: a StatusNotification is about one connector: evse and connectorId are needed.
            ok = evse is not None and self._known_evse(evse_id) and evse.get("connectorId") == 1
            return "Accepted" if ok else "Rejected"
        if message == "MeterValues":
            return "Accepted" if self.adapter.list_setting("AlignedDataCtrlr", "Measurands") else "Rejected"
        if message == "TransactionEvent":
            busy = any(self.station.state[n].tx is not None for n in self._trigger_targets(evse_id))
            return "Accepted" if busy else "Rejected"
        return "NotImplemented"

    @on("TriggerMessage")
    def on_trigger(self, call_unique_id: str, **_: Any) -> Any:
        return self._result("TriggerMessage", {"status": self._trigger_status(self._request(call_unique_id))})

    @after("TriggerMessage")
    def after_trigger(self, call_unique_id: str, **_: Any) -> None:
        request = self._request(call_unique_id)
        if self._trigger_status(request) != "Accepted":
            return
        message = request.get("requestedMessage")
        evse = request.get("evse") or {}
        evse_id = _int(evse.get("id"))
        if message == "BootNotification":
            self.adapter.boot_reason = "Triggered"
            self.station.trigger_boot()
        elif message == "Heartbeat":
            self._later(self.station.heartbeat())
        elif message == "StatusNotification" and evse_id is not None:
            self.adapter.forget_status(evse_id)
            self.station.trigger_status(evse_id)
        elif message == "MeterValues":
            for n in self._trigger_targets(evse_id):
                reading = self.station.connectors[n].last_meter
                values = self.adapter.meter_values(n, None, reading, "Trigger", self._now())
                if values is not None:
                    self._later(self.adapter.call(*values))
        elif message == "TransactionEvent":
            self.station.send_meter_values("Trigger", transactions_only=True, connector_id=evse_id)

    @on("UnlockConnector")
    async def on_unlock(self, call_unique_id: str, **_: Any) -> Any:
        request = self._request(call_unique_id)
        evse_id = _int(request.get("evseId"))
        if evse_id is None or not self._known_evse(evse_id) or request.get("connectorId") != 1:
            return self._result("UnlockConnector", {"status": "UnknownConnector"})  # F05.FR.03
        if self.station.transaction_of(evse_id) is not None:
            # F05.FR.02: the cable stays locked while a transaction runs; the CSMS stops it first.
            return self._result("UnlockConnector", {"status": "OngoingAuthorizedTransaction"})
        result = await self.station.unlock(evse_id)
        return self._result("UnlockConnector", {"status": "Unlocked" if result == "Unlocked" else "UnlockFailed"})

    # ================================================================== G Availability
    @on("ChangeAvailability")
    def on_change_availability(self, call_unique_id: str, **_: Any) -> Any:
        request = self._request(call_unique_id)
        evse = request.get("evse")
        n = 0
        if isinstance(evse, dict):
            n = _int(evse.get("id")) or 0
            if (n != 0 and not self._known_evse(n)) or evse.get("connectorId") not in (None, 1):
                return self._result("ChangeAvailability", {"status": "Rejected"})
        # G03/G04: an Inoperative EVSE with a transaction becomes Unavailable when it ends (Scheduled).
        status = self.station.change_availability(n, request.get("operationalStatus") == "Operative")
        return self._result("ChangeAvailability", {"status": status})

    # ================================================================== H Reservation
    @on("ReserveNow")
    def on_reserve_now(self, call_unique_id: str, **_: Any) -> Any:
        request = self._request(call_unique_id)
        if not self.adapter.bool_setting("ReservationCtrlr", "Enabled", True):
            return self._result("ReserveNow", {"status": "Rejected"})
        try:
            expiry = parse_utc(request.get("expiryDateTime"))  # type: ignore[arg-type]
        except TimestampError:
            return self._result("ReserveNow", {"status": "Rejected"})
        evse_id = request.get("evseId")
        reservation_id = _int(request.get("id"))
        token = request.get("idToken") or {}
        id_tag = str(token.get("idToken", ""))
        if (evse_id is not None and not self._known_evse(evse_id)) or reservation_id is None or not id_tag:
            return self._result("ReserveNow", {"status": "Rejected"})
        self.adapter.remember_token_type(id_tag, str(token.get("type", "")))
        current = {st.reservation_id for st in self.station.state.values()}
        for stale in [r for r in self.adapter.reservations if r not in current]:
            del self.adapter.reservations[stale]  # expired or cancelled by the station meanwhile
        status = self.station.reserve(evse_id or 0, id_tag, reservation_id, expiry)
        if status == "Accepted":
            for n, st in self.station.state.items():
                if st.reservation_id == reservation_id:
                    self.adapter.reservations[reservation_id] = (n, id_tag)
        return self._result("ReserveNow", {"status": status})

    @on("CancelReservation")
    def on_cancel_reservation(self, call_unique_id: str, **_: Any) -> Any:
        reservation_id = _int(self._request(call_unique_id).get("reservationId"))
        found = reservation_id is not None and self.station.cancel_reservation(reservation_id)
        if reservation_id is not None:
            self.adapter.reservations.pop(reservation_id, None)
        return self._result("CancelReservation", {"status": "Accepted" if found else "Rejected"})

    # ================================================================== K Smart charging
    def _profiles_changed(self) -> None:
        self.station.profiles_changed()
        try:
            self.adapter.device_model.update_actual(
                "SmartChargingCtrlr", "Entries", str(len(self.station.profiles.profiles())), instance="ChargingProfiles"
            )
        except (KeyError, ValueError) as exc:
            log.warning("cannot update SmartChargingCtrlr.Entries: %s", exc)

    @on("SetChargingProfile")
    def on_set_charging_profile(self, call_unique_id: str, **_: Any) -> Any:
        request = self._request(call_unique_id)
        evse_id = request.get("evseId")
        if _int(evse_id) is None or (evse_id != 0 and not self._known_evse(evse_id)):
            return self._result("SetChargingProfile", {"status": "Rejected", "statusInfo": _status_info("UnknownEvse")})
        assert isinstance(evse_id, int)
        try:
            profile = profile_from_v201(request.get("chargingProfile"), evse_id)
        except ProfileError as exc:
            log.warning("SetChargingProfile rejected: %s", exc)
            info = _status_info("InvalidProfile", str(exc))
            return self._result("SetChargingProfile", {"status": "Rejected", "statusInfo": info})
        if profile.schedule.rate_unit not in self.adapter.list_setting("SmartChargingCtrlr", "RateUnit"):
            info = _status_info("InvalidSchedule", f"rate unit {profile.schedule.rate_unit} [K01.FR.26]")
            return self._result("SetChargingProfile", {"status": "Rejected", "statusInfo": info})
        tx = self.station.transaction_of(evse_id) if evse_id else None
        if tx is not None:
            self.adapter.ensure_transaction_id(tx)
        # K01.FR.09/33: a TxProfile needs the running transaction of its EVSE (the store checks the id).
        result = self.station.profiles.install(profile, active_transaction_id=None if tx is None else tx.ref)
        if not result.accepted:
            log.warning("SetChargingProfile rejected: %s", result.reason)
            info = _status_info("TxNotFound" if "K01.FR.09" in result.reason else "InvalidProfile", result.reason)
            return self._result("SetChargingProfile", {"status": "Rejected", "statusInfo": info})
        self._profiles_changed()
        return self._result("SetChargingProfile", {"status": "Accepted"})

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, call_unique_id: str, **_: Any) -> Any:
        request = self._request(call_unique_id)
        criteria = request.get("chargingProfileCriteria") or {}
        purpose_name = criteria.get("chargingProfilePurpose")
        purpose = PURPOSES.get(purpose_name) if purpose_name is not None else None
        cleared = 0
        if purpose_name is None or purpose is not None:
            cleared = self.station.profiles.clear(
                id=_int(request.get("chargingProfileId")),
                connector_id=_int(criteria.get("evseId")),
                purpose=purpose,
                stack_level=_int(criteria.get("stackLevel")),
            )
        if cleared:
            self._profiles_changed()
        return self._result("ClearChargingProfile", {"status": "Accepted" if cleared else "Unknown"})

    @on("GetCompositeSchedule")
    def on_get_composite_schedule(self, call_unique_id: str, **_: Any) -> Any:
        request = self._request(call_unique_id)
        evse_id, duration = request.get("evseId"), _int(request.get("duration"))
        unit: RateUnit = "W" if request.get("chargingRateUnit") == "W" else "A"
        rejected = self._result("GetCompositeSchedule", {"status": "Rejected"})
        if _int(evse_id) is None or (evse_id != 0 and not self._known_evse(evse_id)):
            return rejected
        if unit not in self.adapter.list_setting("SmartChargingCtrlr", "RateUnit") or duration is None or duration <= 0:
            return rejected
        assert isinstance(evse_id, int)
        n = evse_id or next(iter(self.station.connectors))
        tx = self.station.transaction_of(n) if evse_id else None
        ratings = self.station.connectors[n].hal.config.ratings
        voltage = float(ratings.nominal_voltage_v or 230.0)
        # Where no profile limits, the composite shows what the hardware allows (as the 1.6 side does).
        rating_a = float(ratings.max_current_a) * (len(self.station.connectors) if evse_id == 0 else 1)
        try:
            schedule = composite_schedule(
                self.station.profiles,
                evse_id,
                self._now().replace(microsecond=0),
                min(duration, MAX_COMPOSITE_S),
                unit,
                tx_start=tx.started_at if tx else None,
                voltage_v=voltage,
                phases=ratings.phases,
                default_limit=rating_a if unit == "A" else rating_a * voltage * ratings.phases,
            )
            payload = composite_to_v201(schedule, evse_id)
        except ValueError as exc:
            log.warning("GetCompositeSchedule failed: %s", exc)
            return rejected
        return self._result("GetCompositeSchedule", payload)

    def _matching_profiles(self, request: dict[str, Any]) -> list[ChargingProfile]:
        """K09: the installed profiles matching GetChargingProfilesRequest (every given criterion)."""
        criteria = request.get("chargingProfile") or {}
        sources = criteria.get("chargingLimitSource")
        if sources is not None and "CSO" not in sources:
            return []  # every profile here was set by the CSMS (source CSO)
        evse_id = request.get("evseId")
        ids = criteria.get("chargingProfileId")
        purpose = criteria.get("chargingProfilePurpose")
        stack_level = criteria.get("stackLevel")
        return [
            p
            for p in self.station.profiles.profiles()
            if (evse_id is None or p.connector_id == evse_id)
            and (ids is None or p.id in ids)
            and (purpose is None or PURPOSE_NAMES[p.purpose] == purpose)
            and (stack_level is None or p.stack_level == stack_level)
        ]

    @on("GetChargingProfiles")
    def on_get_charging_profiles(self, call_unique_id: str, **_: Any) -> Any:
        found = self._matching_profiles(self._request(call_unique_id))
        return self._result("GetChargingProfiles", {"status": "Accepted" if found else "NoProfiles"})

    @after("GetChargingProfiles")
    def after_get_charging_profiles(self, call_unique_id: str, **_: Any) -> None:
        request = self._request(call_unique_id)
        found = self._matching_profiles(request)
        request_id = _int(request.get("requestId"))
        if found and request_id is not None:
            self._later(self._report_profiles(request_id, found))

    async def _report_profiles(self, request_id: int, profiles: list[ChargingProfile]) -> None:
        """K09: one ReportChargingProfiles per EVSE, all but the last with tbc."""
        evses = sorted({p.connector_id for p in profiles})
        for index, evse_id in enumerate(evses):
            payload = {
                "requestId": request_id,
                "chargingLimitSource": "CSO",
                "evseId": evse_id,
                "tbc": index < len(evses) - 1,
                "chargingProfile": [profile_to_v201(p) for p in profiles if p.connector_id == evse_id],
            }
            await self.adapter.call("ReportChargingProfiles", payload)

    # ================================================================== L firmware, N logs
    @on("UpdateFirmware")
    def on_update_firmware(self, call_unique_id: str, **_: Any) -> Any:
        request = self._request(call_unique_id)
        firmware = request.get("firmware") or {}
        try:
            check_location(str(firmware.get("location", "")))
            parse_utc(str(firmware.get("retrieveDateTime", "")))
        except (TransferError, TimestampError) as exc:
            log.warning("UpdateFirmware rejected: %s", exc)
            return self._result("UpdateFirmware", {"status": "Rejected"})
        if self.station.maintenance.busy:
            return self._result("UpdateFirmware", {"status": "Rejected"})  # L01.FR.24: one update at a time
        return self._result("UpdateFirmware", {"status": "Accepted"})

    @after("UpdateFirmware")
    def after_update_firmware(self, call_unique_id: str, **_: Any) -> None:
        request = self._request(call_unique_id)
        firmware = request.get("firmware") or {}
        try:
            check_location(str(firmware.get("location", "")))
            retrieve = parse_utc(str(firmware.get("retrieveDateTime", "")))
        except (TransferError, TimestampError):
            return
        if self.station.maintenance.busy:
            return
        request_id = _int(request.get("requestId"))

        async def notify(status: str) -> None:
            self.station.firmware_status = status
            payload: dict[str, Any] = {"status": status}
            if request_id is not None:
                payload["requestId"] = request_id
            await self.station.call_quietly("FirmwareStatusNotification", payload)

        self.station.spawn(
            self.station.maintenance.update_firmware(
                str(firmware["location"]),
                retrieve,
                _int(request.get("retries")) or 0,
                float(_int(request.get("retryInterval")) or 60),
                notify,
            )
        )

    @on("GetLog")
    def on_get_log(self, call_unique_id: str, **_: Any) -> Any:
        request = self._request(call_unique_id)
        location = str((request.get("log") or {}).get("remoteLocation", ""))
        try:
            check_location(location)
        except TransferError as exc:
            log.warning("GetLog rejected: %s", exc)
            return self._result("GetLog", {"status": "Rejected"})
        name = self.station.maintenance.bundle_name(self.station.settings.station_id)
        self._log_names[call_unique_id] = name
        return self._result("GetLog", {"status": "Accepted", "filename": name})

    @after("GetLog")
    def after_get_log(self, call_unique_id: str, **_: Any) -> None:
        name = self._log_names.pop(call_unique_id, None)
        if name is None:
            return
        request = self._request(call_unique_id)
        request_id = _int(request.get("requestId"))

        async def notify(status: str) -> None:
            # 1.6-style names from Maintenance -> 2.0.1 UploadLogStatusEnumType.
            status = {"UploadFailed": "UploadFailure"}.get(status, status)
            payload: dict[str, Any] = {"status": status}
            if request_id is not None:
                payload["requestId"] = request_id
            await self.station.call_quietly("LogStatusNotification", payload)

        self.station.spawn(
            self.station.maintenance.upload_logs(
                str(request["log"]["remoteLocation"]),
                name,
                _int(request.get("retries")) or 0,
                float(_int(request.get("retryInterval")) or 60),
                notify,
            )
        )

    # ================================================================== P DataTransfer
    @on("DataTransfer")
    def on_data_transfer(self, call_unique_id: str, **_: Any) -> Any:
        request = self._request(call_unique_id)
        status, info = self.station.data_transfer_from_csms(
            str(request.get("vendorId")), request.get("messageId"), request.get("data")
        )
        answer: dict[str, Any] = {"status": status}
        if info:
            answer["statusInfo"] = {"reasonCode": status, "additionalInfo": info[:1024]}
        return self._result("DataTransfer", answer)


class ChargePoint21(ChargePoint201):
    """OCPP 2.1: the 2.0.1 handlers on the 2.1 message classes, and answers to 2.1's new CSMS calls."""

    _call = call21
    _call_result = call_result21
    _ocpp_version = OcppChargePoint21._ocpp_version
    actions: ClassVar[frozenset[str]] = frozenset(a.value for a in Action21)
    error_codes: ClassVar[dict[str, str]] = {
        "FormationViolation": "FormatViolation",
        "OccurenceConstraintViolation": "OccurrenceConstraintViolation",  # 2.1 corrected the spelling
    }

    # R DER control: this AC station has no grid-support functions to configure (standards-facts.md 4.5).
    @on("SetDERControl")
    def on_set_der_control(self, **_: Any) -> Any:
        return self._result("SetDERControl", {"status": "NotSupported"})

    @on("GetDERControl")
    def on_get_der_control(self, **_: Any) -> Any:
        return self._result("GetDERControl", {"status": "NotSupported"})

    @on("ClearDERControl")
    def on_clear_der_control(self, **_: Any) -> Any:
        return self._result("ClearDERControl", {"status": "NotSupported"})
