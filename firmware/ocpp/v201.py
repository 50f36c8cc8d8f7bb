"""OCPP 2.0.1 and 2.1: the message shapes and settings, for :class:`firmware.ocpp.station.OcppStation`.

The station runtime is protocol-independent; this adapter turns its events into 2.0.1 messages
(BootNotification, StatusNotification, Authorize, TransactionEvent, MeterValues) and reads its settings
from the device model (:class:`firmware.ocpp.device_model.DeviceModel`). The CSMS-initiated calls are
handled by :mod:`firmware.ocpp.v201_handlers`.

Transactions (2.0.1 E): the station chooses the transactionId -- our session id -- so it is known at
once and a TransactionEvent never waits for the CSMS. Each transaction numbers its events from seqNo 0
(TransactionEventRequest.seqNo), so the CSMS can tell a missing one. Every TransactionEvent goes through
the persistent outbox and carries ``offline: true`` when it happened while the CSMS was unreachable
(E04). The charging state is reported with each event and a change of it in an Updated event
(triggerReason ChargingStateChanged).

2.1 is 2.0.1's message set plus new actions: :class:`V21Adapter` only swaps the ``ocpp`` package's
2.1 modules and the handler class.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from datetime import datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ocpp.v21 import call as call21
from ocpp.v201 import call as call201

from firmware.ocpp.calls import call_action
from firmware.ocpp.charging_profiles import ProfileError, profile_from_v201
from firmware.ocpp.device_model import DeviceModel
from firmware.ocpp.link import Link, LinkClosed
from firmware.ocpp.measurands import Context, MeasurandError, sampled_values_201
from firmware.ocpp.outbox import QueuedMessage
from firmware.ocpp.status import Status, connector_status
from firmware.ocpp.timestamps import utc_iso
from firmware.ocpp.v201_handlers import ID_TOKEN_MAX, ChargePoint21, ChargePoint201, RemoteStart

if TYPE_CHECKING:
    from firmware.ocpp.station import OcppStation, Transaction, Version
    from hal.types import MeterReading

log = logging.getLogger(__name__)

#: The token type of an identifier presented at the station (an RFID card's UID) when the CSMS never
#: told us another one (2.0.1 IdTokenEnumType).
LOCAL_TOKEN_TYPE = "ISO14443"
#: How many identifiers' token types are remembered (from RequestStartTransaction).
TOKEN_TYPES_KEPT = 256

#: Connector stop reasons (1.6 style, as the station passes them) -> 2.0.1 (stoppedReason, triggerReason).
#: ReasonEnumType has no UnlockCommand and no SoftReset/HardReset: a reset ends a transaction with
#: ImmediateReset (B12), an unlock with Other.
STOP_REASONS: dict[str, tuple[str, str]] = {
    "Local": ("Local", "StopAuthorized"),
    "Remote": ("Remote", "RemoteStop"),
    "EVDisconnected": ("EVDisconnected", "EVCommunicationLost"),
    "DeAuthorized": ("DeAuthorized", "Deauthorized"),
    "SoftReset": ("ImmediateReset", "ResetCommand"),
    "HardReset": ("ImmediateReset", "ResetCommand"),
    "UnlockCommand": ("Other", "UnlockCommand"),
    "PowerLoss": ("PowerLoss", "AbnormalCondition"),
    "Reboot": ("Reboot", "AbnormalCondition"),
    "EmergencyStop": ("EmergencyStop", "AbnormalCondition"),
    "Other": ("Other", "AbnormalCondition"),
}

#: 1.6-style connector status -> 2.0.1 ChargingStateEnumType while a transaction runs.
_CHARGING_STATES = {"Charging": "Charging", "SuspendedEV": "SuspendedEV", "SuspendedEVSE": "SuspendedEVSE"}


def charging_state(status: Status, in_transaction: bool) -> str:
    """TransactionType.chargingState for a connector status."""
    state = _CHARGING_STATES.get(status.status16)
    if state is not None:
        return state
    if in_transaction and status.status16 == "Faulted":
        return "SuspendedEVSE"  # a fault stops the power, not the transaction
    return "EVConnected" if status.status201 == "Occupied" else "Idle"


def stop_reason(reason: str) -> tuple[str, str]:
    """(stoppedReason, triggerReason) of an Ended event for a station stop reason."""
    return STOP_REASONS.get(reason, STOP_REASONS["Other"])


class V201Adapter:
    """The OCPP 2.0.1 side of an :class:`OcppStation`.

    ``device_model`` holds every setting; it is public so that the board (or a test) can use another
    model, e.g. one with vendor variables.
    """

    version: Version = "2.0.1"
    #: The ``ocpp`` package's call module of this version (request dataclasses).
    calls: ModuleType = call201

    def __init__(self, station: OcppStation, device_model: DeviceModel) -> None:
        self.station = station
        self.device_model = device_model
        self.boot_reason = "PowerUp"  # B01 BootReasonEnumType; "Triggered" after a TriggerMessage
        self.remote_starts: dict[int, RemoteStart] = {}  # connector -> accepted RequestStartTransaction
        self.reservations: dict[int, tuple[int, str]] = {}  # reservation id -> (connector, id token)
        self._cp: ChargePoint201 | None = None
        self._token_types: OrderedDict[str, str] = OrderedDict()
        self._reported_status: dict[int, str] = {}  # connector -> connectorStatus sent on this connection
        self._charging_states: dict[str, str] = {}  # tx ref -> chargingState last reported

    def _charge_point(self, link: Link) -> ChargePoint201:
        return ChargePoint201(self.station, self, link)

    # ------------------------------------------------------------------ the wire
    async def run(self, link: Link) -> None:
        self._cp = self._charge_point(link)
        self._reported_status.clear()  # a new connection gets every connector's status
        try:
            await self._cp.start()
        finally:
            self._cp = None

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        cp = self._cp
        if cp is None:
            raise LinkClosed("not connected")
        if action == "StatusNotification" and self._status_unchanged(payload):
            # G01: a StatusNotification reports a change of connectorStatus; the station also calls
            # for changes only 1.6 can tell apart (Preparing, Charging...), which 2.0.1 reports in
            # TransactionEvent chargingState instead.
            return {}
        answer = await call_action(cp, self.calls, action, payload, format_error="FormatViolation")
        if action == "StatusNotification":
            self._reported_status[int(payload["evseId"])] = str(payload["connectorStatus"])
        return answer

    def _status_unchanged(self, payload: dict[str, Any]) -> bool:
        return self._reported_status.get(int(payload["evseId"])) == payload["connectorStatus"]

    def forget_status(self, connector_id: int | None = None) -> None:
        """Send the next StatusNotification of ``connector_id`` (None: of every connector) even if unchanged."""
        if connector_id is None:
            self._reported_status.clear()
        else:
            self._reported_status.pop(connector_id, None)

    # ------------------------------------------------------------------ settings
    def int_setting(self, component: str, variable: str, default: int, instance: str | None = None) -> int:
        try:
            return self.device_model.get_int(component, variable, instance)
        except (KeyError, ValueError, ArithmeticError) as exc:
            log.error("device model %s.%s unreadable (%s); using %d", component, variable, exc, default)
            return default

    def bool_setting(self, component: str, variable: str, default: bool) -> bool:
        try:
            return self.device_model.get_bool(component, variable)
        except KeyError as exc:
            log.error("device model %s.%s unreadable (%s); using %s", component, variable, exc, default)
            return default

    def list_setting(self, component: str, variable: str) -> list[str]:
        try:
            return self.device_model.get_list(component, variable)
        except KeyError as exc:
            log.error("device model %s.%s unreadable (%s); using none", component, variable, exc)
            return []

    def heartbeat_interval_s(self) -> float:
        return float(max(1, self.int_setting("OCPPCommCtrlr", "HeartbeatInterval", 300)))

    def set_heartbeat_interval(self, seconds: int) -> None:
        # B01: the interval of an Accepted BootNotificationResponse sets OCPPCommCtrlr.HeartbeatInterval. It
        # comes with every boot, so it is state, not a saved setting. A triggered boot is done with.
        self.boot_reason = "PowerUp"
        try:
            self.device_model.update_actual("OCPPCommCtrlr", "HeartbeatInterval", str(max(1, seconds)))
        except (KeyError, ValueError) as exc:
            log.error("cannot set the heartbeat interval to %s s: %s", seconds, exc)

    def sample_interval_s(self) -> float:
        # J02: TxUpdatedInterval 0 (or SampledDataCtrlr disabled) sends no periodic transaction meter values.
        if not self.bool_setting("SampledDataCtrlr", "Enabled", True):
            return 0.0
        return float(self.int_setting("SampledDataCtrlr", "TxUpdatedInterval", 60))

    def aligned_interval_s(self) -> float:
        # J01: AlignedDataCtrlr.Interval 0 (or the controller disabled) sends no clock-aligned values.
        if not self.bool_setting("AlignedDataCtrlr", "Enabled", True):
            return 0.0
        return float(self.int_setting("AlignedDataCtrlr", "Interval", 900))

    def attempts(self) -> int:
        # E13: OCPPCommCtrlr.MessageAttempts[TransactionEvent] (standards-facts.md 4.6).
        return max(1, self.int_setting("OCPPCommCtrlr", "MessageAttempts", 5, "TransactionEvent"))

    def retry_interval_s(self) -> float:
        return float(max(0, self.int_setting("OCPPCommCtrlr", "MessageAttemptInterval", 10, "TransactionEvent")))

    def message_timeout_s(self) -> float:
        return float(max(1, self.int_setting("OCPPCommCtrlr", "MessageTimeout", 60, "Default")))

    # authorisation settings the policy reads (C12-C15, D01)
    @property
    def local_pre_authorize(self) -> bool:
        return self.bool_setting("AuthCtrlr", "LocalPreAuthorize", False)

    @property
    def local_authorize_offline(self) -> bool:
        return self.bool_setting("AuthCtrlr", "LocalAuthorizeOffline", True)

    @property
    def allow_offline_unknown(self) -> bool:
        return self.bool_setting("AuthCtrlr", "OfflineTxForUnknownIdEnabled", False)

    @property
    def local_list_enabled(self) -> bool:
        return self.bool_setting("LocalAuthListCtrlr", "Enabled", True)

    @property
    def cache_enabled(self) -> bool:
        return self.bool_setting("AuthCacheCtrlr", "Enabled", True)

    # ------------------------------------------------------------------ identifiers
    def remember_token_type(self, id_tag: str, token_type: str) -> None:
        self._token_types[id_tag] = token_type
        self._token_types.move_to_end(id_tag)
        while len(self._token_types) > TOKEN_TYPES_KEPT:
            self._token_types.popitem(last=False)

    def id_token(self, id_tag: str) -> dict[str, Any]:
        """IdTokenType of an identifier; the free-charging tag is NoAuthorization (C01), with no identifier."""
        if id_tag == self.station.settings.free_id_tag and id_tag not in self._token_types:
            return {"idToken": "", "type": "NoAuthorization"}
        return {"idToken": id_tag[:ID_TOKEN_MAX], "type": self._token_types.get(id_tag, LOCAL_TOKEN_TYPE)}

    # ------------------------------------------------------------------ messages
    def boot_payload(self) -> dict[str, Any]:
        s = self.station.settings
        station: dict[str, Any] = {
            "model": s.model[:20],
            "vendorName": s.vendor[:50],
            "firmwareVersion": s.firmware_version[:50],
        }
        if s.serial_number:
            station["serialNumber"] = s.serial_number[:25]
        return {"reason": self.boot_reason, "chargingStation": station}

    def status_payload(self, connector_id: int, status: Status, now: datetime) -> tuple[str, dict[str, Any]]:
        self._update_availability(connector_id, status.status201)
        tx = self.station.state[connector_id].tx
        if tx is not None and tx.transaction_id is not None:
            self._report_charging_state(tx, status, now)
        payload = {
            "timestamp": utc_iso(now),
            "connectorStatus": status.status201,
            "evseId": connector_id,
            "connectorId": 1,  # one connector per EVSE
        }
        return "StatusNotification", payload

    def _update_availability(self, connector_id: int, status201: str) -> None:
        # The device model's AvailabilityState follows what the CSMS is told (G01, part 2 appendix).
        try:
            self.device_model.update_actual("EVSE", "AvailabilityState", status201, evse=connector_id)
            self.device_model.update_actual("Connector", "AvailabilityState", status201, evse=connector_id, connector=1)
        except (KeyError, ValueError) as exc:
            log.debug("no AvailabilityState for EVSE %d: %s", connector_id, exc)

    def _report_charging_state(self, tx: Transaction, status: Status, now: datetime) -> None:
        state = charging_state(status, True)
        if self._charging_states.get(tx.ref) == state:
            return
        self._charging_states[tx.ref] = state
        info = {"transactionId": str(tx.transaction_id), "chargingState": state}
        payload = self._transaction_event("Updated", "ChargingStateChanged", tx, now, info)
        self.station.enqueue("TransactionEvent", payload, tx_ref=tx.ref)

    def authorize_payload(self, id_tag: str) -> dict[str, Any]:
        return {"idToken": self.id_token(id_tag)}

    def authorize_status(self, result: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        info = result.get("idTokenInfo")
        info = info if isinstance(info, dict) else {}
        return str(info.get("status", "Invalid")), info

    def _meter_value(
        self, reading: MeterReading | None, measurands: list[str], context: Context, now: datetime
    ) -> list[dict[str, Any]] | None:
        if reading is None or not measurands:
            return None
        try:
            sampled = sampled_values_201(reading, measurands, context)
        except MeasurandError as exc:
            log.error("meter values: %s", exc)
            return None
        return [{"timestamp": utc_iso(now), "sampledValue": sampled}] if sampled else None

    def _with_signed(
        self,
        meter: list[dict[str, Any]] | None,
        record: str | None,
        context: str,
        value_wh: float,
        now: datetime,
        *,
        first: bool,
    ) -> list[dict[str, Any]] | None:
        """Attach a signed record to the Energy.Active.Import.Register value of ``meter`` (or add one),
        with the public key as PublicKeyWithSignedMeterValue says (J02; firmware.ocpp.signed_meter)."""
        signed = self.station.signed
        if signed is None or record is None:
            return meter
        try:
            mode = self.device_model.get("OCPPCommCtrlr", "PublicKeyWithSignedMeterValue")
        except KeyError:
            mode = "OncePerTransaction"
        with_key = mode == "EveryMeterValue" or (mode == "OncePerTransaction" and first)
        item = signed.sampled_value_201(record, context, value_wh, with_key=with_key)
        if meter is None:
            return [{"timestamp": utc_iso(now), "sampledValue": [item]}]
        values = meter[0]["sampledValue"]
        for value in values:
            if value.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register" and (
                "phase" not in value
            ):
                value["signedMeterValue"] = item["signedMeterValue"]
                return meter
        values.append(item)
        return meter

    def _transaction_event(
        self,
        event_type: str,
        trigger: str,
        tx: Transaction,
        now: datetime,
        info: dict[str, Any],
        meter_value: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "eventType": event_type,
            "timestamp": utc_iso(now),
            "triggerReason": trigger,
            "seqNo": tx.seq_no,
            "transactionInfo": info,
            "evse": {"id": tx.connector_id, "connectorId": 1},
        }
        tx.seq_no += 1
        if not self.station.online:
            payload["offline"] = True  # E04: the event happened while the CSMS was unreachable
        if meter_value:
            payload["meterValue"] = meter_value
        return payload

    def _state_of(self, connector_id: int, in_transaction: bool) -> str:
        return charging_state(connector_status(self.station.view(connector_id)), in_transaction)

    def _reading(self, connector_id: int) -> MeterReading | None:
        return self.station.connectors[connector_id].last_meter

    def tx_started(self, tx: Transaction, now: datetime) -> tuple[str, dict[str, Any]]:
        n = tx.connector_id
        tx.transaction_id = tx.ref  # the station names its transactions (E01); our session id is unique
        remote = self.remote_starts.pop(n, None)
        if remote is not None and remote.id_tag in (tx.id_tag, ""):
            tx.remote_start_id = remote.remote_start_id
            if remote.charging_profile is not None:
                self._install_tx_profile(n, remote.charging_profile, tx.ref)
        free = tx.id_tag == self.station.settings.free_id_tag
        trigger = "RemoteStart" if tx.remote_start_id is not None else "CablePluggedIn" if free else "Authorized"
        state = self._state_of(n, True)
        self._charging_states[tx.ref] = state
        info: dict[str, Any] = {"transactionId": tx.ref, "chargingState": state}
        if tx.remote_start_id is not None:
            info["remoteStartId"] = tx.remote_start_id
        measurands = self.list_setting("SampledDataCtrlr", "TxStartedMeasurands")
        meter = self._meter_value(self._reading(n), measurands, "Transaction.Begin", now)
        meter = self._with_signed(meter, tx.signed_begin, "Transaction.Begin", tx.meter_start_wh, now, first=True)
        payload = self._transaction_event("Started", trigger, tx, now, info, meter)
        payload["idToken"] = self.id_token(tx.id_tag)
        for reservation_id, (connector, id_tag) in list(self.reservations.items()):
            if connector == n and id_tag == tx.id_tag:
                payload["reservationId"] = reservation_id  # H01: the transaction uses the reservation
                del self.reservations[reservation_id]
        return "TransactionEvent", payload

    def _install_tx_profile(self, connector_id: int, profile: dict[str, Any], transaction_id: str) -> None:
        try:
            parsed = profile_from_v201({**profile, "transactionId": transaction_id}, connector_id)
            result = self.station.profiles.install(parsed, active_transaction_id=transaction_id)
        except ProfileError as exc:
            log.warning("the RequestStartTransaction charging profile is invalid: %s", exc)
            return
        if result.accepted:
            self.station.profiles_changed()
        else:
            log.warning("the RequestStartTransaction charging profile was not installed: %s", result.reason)

    def signed_begin_message(self, tx: Transaction, now: datetime) -> tuple[str, dict[str, Any]] | None:
        return None  # the Started event carries the signed begin record

    def tx_meter_values(self, tx: Transaction, values: dict[str, Any], now: datetime) -> tuple[str, dict[str, Any]]:
        self.ensure_transaction_id(tx)
        info = {"transactionId": str(tx.transaction_id), "chargingState": self._state_of(tx.connector_id, True)}
        meter = values.get("meterValue") if isinstance(values.get("meterValue"), list) else None
        return "TransactionEvent", self._transaction_event("Updated", "MeterValuePeriodic", tx, now, info, meter)

    def tx_stopped(self, tx: Transaction, reason: str, now: datetime) -> tuple[str, dict[str, Any]]:
        self.ensure_transaction_id(tx)
        stopped, trigger = stop_reason(reason)
        self._charging_states.pop(tx.ref, None)
        info: dict[str, Any] = {
            "transactionId": str(tx.transaction_id),
            "chargingState": self._state_of(tx.connector_id, False),
            "stoppedReason": stopped,
        }
        if tx.remote_start_id is not None:
            info["remoteStartId"] = tx.remote_start_id
        measurands = self.list_setting("SampledDataCtrlr", "TxEndedMeasurands")
        reading = self._reading(tx.connector_id)
        if tx.meter_stop_wh is not None:
            reading = None  # a session closed at boot: only the journal's stop reading is known
        meter = self._meter_value(reading, measurands, "Transaction.End", now)
        stop_wh = reading.import_wh if reading is not None else tx.meter_stop_wh or tx.meter_start_wh
        meter = self._with_signed(meter, tx.signed_end, "Transaction.End", stop_wh, now, first=False)
        payload = self._transaction_event("Ended", trigger, tx, now, info, meter)
        if reason == "Local":
            payload["idToken"] = self.id_token(tx.id_tag)  # E06: the identifier that stopped it
        return "TransactionEvent", payload

    def meter_values(
        self, connector_id: int, tx: Transaction | None, reading: Any, context: str, now: datetime
    ) -> tuple[str, dict[str, Any]] | None:
        if context == "Sample.Clock":
            # J01: clock-aligned values; during a transaction they go in a TransactionEvent.
            measurands = self.list_setting("AlignedDataCtrlr", "Measurands")
            trigger = "MeterValueClock"
        elif context == "Trigger":
            # F06: a triggered TransactionEvent has the TxUpdated measurands, a triggered MeterValues the
            # aligned ones.
            if tx is not None:
                measurands = self.list_setting("SampledDataCtrlr", "TxUpdatedMeasurands")
            else:
                measurands = self.list_setting("AlignedDataCtrlr", "Measurands")
            trigger = "Trigger"
        else:
            measurands = self.list_setting("SampledDataCtrlr", "TxUpdatedMeasurands")
            trigger = "MeterValuePeriodic"
        meter = self._meter_value(reading, measurands, context, now)  # type: ignore[arg-type]
        sign_in = "AlignedDataCtrlr" if context == "Sample.Clock" else "SampledDataCtrlr"
        signed = self.station.signed
        if signed is not None and meter is not None and self.bool_setting(sign_in, "SignReadings", False):
            connector = self.station.connectors[connector_id]
            record = signed.reading(connector_id, connector, tx.ref if tx is not None else None, now)
            meter = self._with_signed(meter, record, context, reading.import_wh, now, first=tx is None)
        if tx is None:
            return None if meter is None else ("MeterValues", {"evseId": connector_id, "meterValue": meter})
        if meter is None and trigger != "Trigger":
            return None  # nothing to report; a triggered event is sent anyway (F06)
        self.ensure_transaction_id(tx)
        info = {"transactionId": str(tx.transaction_id), "chargingState": self._state_of(connector_id, True)}
        return "TransactionEvent", self._transaction_event("Updated", trigger, tx, now, info, meter)

    def ensure_transaction_id(self, tx: Transaction) -> None:
        """A transaction resumed after a restart has no id yet: it is its session id again, and its seqNo
        continues after every event the outbox kept for it, delivered or still queued (E03: a seqNo is
        never repeated within a transaction)."""
        if tx.transaction_id is not None:
            return
        tx.transaction_id = tx.ref
        try:
            queued = [m.payload.get("seqNo") for m in self.station.outbox.session_messages(tx.ref, "TransactionEvent")]
        except Exception as exc:
            log.error("cannot read the outbox to continue transaction %s: %s", tx.ref, exc)
            queued = []
        numbers = [n for n in queued if isinstance(n, int)]
        if numbers:
            tx.seq_no = max(tx.seq_no, max(numbers) + 1)

    def on_delivered(self, message: QueuedMessage, response: dict[str, Any]) -> None:
        if message.action != "TransactionEvent" or message.tx_ref is None:
            return
        if message.payload.get("eventType") != "Started":
            return
        info = response.get("idTokenInfo")
        if not isinstance(info, dict):
            return
        status = str(info.get("status", "Accepted"))
        # E05: with StopTxOnInvalidId a transaction whose identifier the CSMS does not accept is stopped.
        if status != "Accepted" and self.bool_setting("TxCtrlr", "StopTxOnInvalidId", True):
            self.station.transaction_rejected(message.tx_ref, status)


class V21Adapter(V201Adapter):
    """OCPP 2.1: the 2.0.1 adapter on the ``ocpp`` package's 2.1 modules and handlers."""

    version: Version = "2.1"
    calls: ModuleType = call21

    def _charge_point(self, link: Link) -> ChargePoint201:
        return ChargePoint21(self.station, self, link)
