"""OCPP 1.6J: the message shapes and the CSMS-initiated calls, for :class:`firmware.ocpp.station.OcppStation`.

Built on ``ocpp.v16.ChargePoint``: it frames, validates against the official schemas and routes
calls to the ``@on`` handlers below. Every call we make goes with ``suppress=False`` so a CALLERROR
surfaces, and every frame we send has its timestamps checked (:mod:`firmware.ocpp.timestamps`).
Handlers answer at once; what takes time (starting a session, a reset) runs after the answer
(``@after``), so the CSMS never waits on the charger's hardware.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call, call_result

from firmware.ocpp.calls import call_action, plain_json
from firmware.ocpp.charging_profiles import ProfileError, Purpose, profile_from_v16
from firmware.ocpp.configuration import Configuration
from firmware.ocpp.link import Link
from firmware.ocpp.maintenance import TransferError, check_location
from firmware.ocpp.measurands import sampled_values_16
from firmware.ocpp.outbox import QueuedMessage
from firmware.ocpp.smart_charging import composite_schedule, composite_to_v16
from firmware.ocpp.status import Status
from firmware.ocpp.timestamps import TimestampError, check_payload, parse_utc, utc_iso

if TYPE_CHECKING:
    from firmware.ocpp.station import OcppStation, Transaction, Version

log = logging.getLogger(__name__)

#: 1.6 §7.17 idTag: CiString20Type.
ID_TAG_MAX = 20
#: The placeholder a queued message carries until StartTransaction.conf gives the transactionId
#: (firmware.ocpp.outbox).
TX_PLACEHOLDER = "$tx:{ref}"


class ChargePoint16(ChargePoint):  # type: ignore[misc]  # the ocpp package has no type hints
    """One connection's OCPP 1.6 endpoint; the station behind it lives across connections."""

    def __init__(self, station: OcppStation, adapter: V16Adapter, link: Link) -> None:
        super().__init__(station.settings.station_id, link, response_timeout=station.settings.message_timeout_s)
        self.station = station
        self.adapter = adapter
        self._calls_in: dict[str, str] = {}  # unique id -> action of the CSMS's calls we answer

    # ------------------------------------------------------------------ framing hooks
    async def route_message(self, raw_msg: str) -> None:
        try:
            frame = json.loads(raw_msg)
        except ValueError:
            log.warning("OCPP: dropped a frame that is not JSON: %.200r", raw_msg)
            return
        if isinstance(frame, list) and len(frame) >= 3 and frame[0] == 2:
            self._calls_in[str(frame[1])] = str(frame[2])
            self.station.message_event("rx", "call", str(frame[2]), _payload(frame, 3))
        elif isinstance(frame, list) and len(frame) >= 2 and frame[0] in (3, 4):
            kind = "result" if frame[0] == 3 else "error"
            self.station.message_event("rx", kind, None, _payload(frame, 2))
        await super().route_message(raw_msg)

    async def _send(self, message: str) -> None:
        frame = json.loads(message)
        if frame[0] == 2:
            check_payload("1.6", frame[2], frame[3])  # our own bug if it fails: surfaces in call()
            self.station.message_event("tx", "call", frame[2], frame[3])
        elif frame[0] == 3:
            action = self._calls_in.pop(str(frame[1]), None)
            if action is not None:
                try:
                    check_payload("1.6", action, frame[2], response=True)
                except TimestampError as exc:
                    log.error("OCPP: refusing to send a bad %s answer: %s", action, exc)
                    message = json.dumps([4, frame[1], "InternalError", "bad timestamp in the answer", {}])
            self.station.message_event("tx", "result", action, frame[2])
        else:
            self._calls_in.pop(str(frame[1]), None)
            self.station.message_event("tx", "error", None, {"code": frame[2], "description": frame[3]})
        await super()._send(message)

    # ------------------------------------------------------------------ remote control (1.6 §5)
    @on("RemoteStartTransaction")
    def on_remote_start(self, id_tag: str, connector_id: int | None = None, **kwargs: Any) -> Any:
        accepted = len(id_tag) <= ID_TAG_MAX and self.station.remote_start(connector_id, id_tag)
        profile = kwargs.get("charging_profile")
        if accepted and profile is not None:
            # 1.6 §5.11: a profile with the remote start must be a TxProfile; it applies to the
            # transaction it starts, so it is installed once that transaction exists.
            purpose = profile.get("charging_profile_purpose")
            if purpose != "TxProfile":
                accepted = False
        return call_result.RemoteStartTransaction(status="Accepted" if accepted else "Rejected")

    @after("RemoteStartTransaction")
    async def after_remote_start(self, id_tag: str, connector_id: int | None = None, **kwargs: Any) -> None:
        if not self.station.state or (connector_id is not None and connector_id not in self.station.state):
            return
        authorize_first = self.adapter.config.get_bool("AuthorizeRemoteTxRequests")
        await self.station.complete_remote_start(connector_id, id_tag, authorize_first)
        profile = kwargs.get("charging_profile")
        if profile is not None and connector_id is not None:
            self.adapter.pending_tx_profiles[connector_id] = plain_json(snake_to_camel_case(profile))

    @on("RemoteStopTransaction")
    def on_remote_stop(self, transaction_id: int, **kwargs: Any) -> Any:
        found = self.station.remote_stop(transaction_id)
        return call_result.RemoteStopTransaction(status="Accepted" if found else "Rejected")

    @on("Reset")
    def on_reset(self, type: str, **kwargs: Any) -> Any:
        return call_result.Reset(status="Accepted")

    @after("Reset")
    async def after_reset(self, type: str, **kwargs: Any) -> None:
        await self.station.reset(type)

    @on("ChangeAvailability")
    def on_change_availability(self, connector_id: int, type: str, **kwargs: Any) -> Any:
        status = self.station.change_availability(connector_id, type == "Operative")
        return call_result.ChangeAvailability(status=status)

    @on("UnlockConnector")
    async def on_unlock(self, connector_id: int, **kwargs: Any) -> Any:
        return call_result.UnlockConnector(status=await self.station.unlock(connector_id))

    @on("TriggerMessage")
    def on_trigger(self, requested_message: str, connector_id: int | None = None, **kwargs: Any) -> Any:
        supported = {
            "BootNotification",
            "Heartbeat",
            "StatusNotification",
            "MeterValues",
            "FirmwareStatusNotification",
            "DiagnosticsStatusNotification",
        }
        bad_connector = connector_id not in (None, 0) and connector_id not in self.station.connectors
        status = "Accepted" if requested_message in supported and not bad_connector else "Rejected"
        if requested_message not in supported:
            status = "NotImplemented"
        return call_result.TriggerMessage(status=status)

    @after("TriggerMessage")
    async def after_trigger(self, requested_message: str, connector_id: int | None = None, **kwargs: Any) -> None:
        if connector_id not in (None, 0) and connector_id not in self.station.connectors:
            return
        if requested_message == "BootNotification":
            self.station.trigger_boot()
            if self.station.boot_accepted:
                await self.station.call_quietly("BootNotification", self.adapter.boot_payload())
        elif requested_message == "Heartbeat":
            await self.station.heartbeat()
        elif requested_message == "StatusNotification":
            self.station.trigger_status(connector_id)
        elif requested_message == "MeterValues":
            self.station.send_meter_values("Trigger", transactions_only=False, connector_id=connector_id)
        elif requested_message == "FirmwareStatusNotification":
            # 1.6 §5.17: Idle unless a download or an installation is under way.
            status = self.station.firmware_status if self.station.maintenance.busy else "Idle"
            await self.station.call_quietly("FirmwareStatusNotification", {"status": status})
        elif requested_message == "DiagnosticsStatusNotification":
            status = (
                "Uploading"
                if self.station.maintenance.busy and self.station.diagnostics_status == "Uploading"
                else "Idle"
            )
            await self.station.call_quietly("DiagnosticsStatusNotification", {"status": status})

    # ------------------------------------------------------------------ firmware and diagnostics (1.6 §5.19, §5.9)
    @on("UpdateFirmware")
    def on_update_firmware(self, location: str, retrieve_date: str, **kwargs: Any) -> Any:
        return call_result.UpdateFirmware()

    @after("UpdateFirmware")
    async def after_update_firmware(self, location: str, retrieve_date: str, **kwargs: Any) -> None:
        try:
            check_location(location)
            retrieve = parse_utc(retrieve_date)
        except (TransferError, TimestampError) as exc:
            log.warning("UpdateFirmware: %s", exc)
            await self._firmware_status("DownloadFailed")
            return
        if self.station.maintenance.busy:
            log.warning("UpdateFirmware while a transfer runs: ignored")
            return
        self.station.spawn(
            self.station.maintenance.update_firmware(
                location,
                retrieve,
                int(kwargs.get("retries") or 0),
                float(kwargs.get("retry_interval") or 60),
                self._firmware_status,
            )
        )

    async def _firmware_status(self, status: str) -> None:
        self.station.firmware_status = status
        await self.station.call_quietly("FirmwareStatusNotification", {"status": status})

    @on("GetDiagnostics")
    def on_get_diagnostics(self, location: str, **kwargs: Any) -> Any:
        try:
            check_location(location)
        except TransferError as exc:
            log.warning("GetDiagnostics: %s", exc)
            return call_result.GetDiagnostics()  # no fileName: nothing will be uploaded (1.6 §6.30)
        name = self.station.maintenance.bundle_name(self.station.settings.station_id)
        self.adapter.pending_diagnostics = (location, name)
        return call_result.GetDiagnostics(file_name=name)

    @after("GetDiagnostics")
    async def after_get_diagnostics(self, location: str, **kwargs: Any) -> None:
        pending, self.adapter.pending_diagnostics = self.adapter.pending_diagnostics, None
        if pending is None:
            return
        self.station.spawn(
            self.station.maintenance.upload_logs(
                pending[0],
                pending[1],
                int(kwargs.get("retries") or 0),
                float(kwargs.get("retry_interval") or 60),
                self._diagnostics_status,
            )
        )

    async def _diagnostics_status(self, status: str) -> None:
        self.station.diagnostics_status = status
        await self.station.call_quietly("DiagnosticsStatusNotification", {"status": status})

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, message_id: str | None = None, data: Any = None, **_: Any) -> Any:
        # 1.6 §6.41: the station's registered vendor extensions (Station.data_transfer).
        status, info = self.station.data_transfer_from_csms(vendor_id, message_id, data)
        return call_result.DataTransfer(status=status, data=info or None)

    # ------------------------------------------------------------------ configuration (1.6 §5.3, §5.8)
    @on("GetConfiguration")
    def on_get_configuration(self, key: list[str] | None = None, **kwargs: Any) -> Any:
        known, unknown = self.adapter.config.get(key)
        return call_result.GetConfiguration(
            configuration_key=[camel_to_snake_case(k) for k in known] or None, unknown_key=unknown or None
        )

    @on("ChangeConfiguration")
    def on_change_configuration(self, key: str, value: str, **kwargs: Any) -> Any:
        return call_result.ChangeConfiguration(status=self.adapter.config.change(key, value))

    # ------------------------------------------------------------------ local authorisation (1.6 §5.4, §5.15)
    @on("ClearCache")
    def on_clear_cache(self, **kwargs: Any) -> Any:
        self.station.cache.clear()
        return call_result.ClearCache(status="Accepted")

    @on("GetLocalListVersion")
    def on_get_local_list_version(self, **kwargs: Any) -> Any:
        enabled = self.adapter.config.get_bool("LocalAuthListEnabled")
        return call_result.GetLocalListVersion(list_version=self.station.local_list.version if enabled else -1)

    @on("SendLocalList")
    def on_send_local_list(self, list_version: int, update_type: str, **kwargs: Any) -> Any:
        if not self.adapter.config.get_bool("LocalAuthListEnabled"):
            return call_result.SendLocalList(status="NotSupported")
        entries = [plain_json(snake_to_camel_case(e)) for e in kwargs.get("local_authorization_list") or []]
        status = self.station.local_list.send_local_list(list_version, update_type, entries)
        return call_result.SendLocalList(status=status)

    # ------------------------------------------------------------------ reservations (1.6 §5.13, §5.1)
    @on("ReserveNow")
    def on_reserve_now(
        self, connector_id: int, expiry_date: str, id_tag: str, reservation_id: int, **kwargs: Any
    ) -> Any:
        try:
            expiry = parse_utc(expiry_date)
        except TimestampError:
            return call_result.ReserveNow(status="Rejected")
        return call_result.ReserveNow(status=self.station.reserve(connector_id, id_tag, reservation_id, expiry))

    @on("CancelReservation")
    def on_cancel_reservation(self, reservation_id: int, **kwargs: Any) -> Any:
        found = self.station.cancel_reservation(reservation_id)
        return call_result.CancelReservation(status="Accepted" if found else "Rejected")

    # ------------------------------------------------------------------ smart charging (1.6 §3.13, §5.16)
    @on("SetChargingProfile")
    def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any], **kwargs: Any) -> Any:
        if connector_id != 0 and connector_id not in self.station.connectors:
            return call_result.SetChargingProfile(status="Rejected")
        tx = self.station.transaction_of(connector_id) if connector_id else None
        try:
            profile = profile_from_v16(plain_json(snake_to_camel_case(cs_charging_profiles)), connector_id)
            result = self.station.profiles.install(
                profile, active_transaction_id=None if tx is None else str(tx.transaction_id)
            )
        except ProfileError as exc:
            log.warning("SetChargingProfile rejected: %s", exc)
            return call_result.SetChargingProfile(status="Rejected")
        if not result.accepted:
            log.warning("SetChargingProfile rejected: %s", result.reason)
            return call_result.SetChargingProfile(status="Rejected")
        self.station.profiles_changed()
        return call_result.SetChargingProfile(status="Accepted")

    @on("ClearChargingProfile")
    def on_clear_charging_profile(
        self,
        id: int | None = None,
        connector_id: int | None = None,
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
        **kwargs: Any,
    ) -> Any:
        purpose = _PURPOSES.get(charging_profile_purpose or "")
        cleared = self.station.profiles.clear(
            id=id, connector_id=connector_id, purpose=purpose, stack_level=stack_level
        )
        if cleared:
            self.station.profiles_changed()
        return call_result.ClearChargingProfile(status="Accepted" if cleared else "Unknown")

    @on("GetCompositeSchedule")
    def on_get_composite_schedule(
        self, connector_id: int, duration: int, charging_rate_unit: str | None = None, **kwargs: Any
    ) -> Any:
        if connector_id != 0 and connector_id not in self.station.connectors:
            return call_result.GetCompositeSchedule(status="Rejected")
        allowed = self.adapter.config.get_csl("ChargingScheduleAllowedChargingRateUnit")
        unit = {"A": "A", "W": "W"}.get(charging_rate_unit or "A", "A")
        if ("Current" if unit == "A" else "Power") not in allowed:
            return call_result.GetCompositeSchedule(status="Rejected")
        if duration <= 0 or duration > MAX_COMPOSITE_S:
            return call_result.GetCompositeSchedule(status="Rejected")
        start = self.station.wall_clock().replace(microsecond=0)
        n = connector_id or next(iter(self.station.connectors))
        tx = self.station.transaction_of(n)
        connector = self.station.connectors[n]
        ratings = connector.hal.config.ratings
        voltage = float(ratings.nominal_voltage_v or 230.0)
        # Where no profile limits, the composite shows what the hardware allows (libocpp fills such
        # periods with a configured default the same way).
        rating_a = float(ratings.max_current_a) * (len(self.station.connectors) if connector_id == 0 else 1)
        default = rating_a if unit == "A" else rating_a * voltage * ratings.phases
        schedule = composite_schedule(
            self.station.profiles,
            connector_id,
            start,
            duration,
            unit,  # type: ignore[arg-type]
            tx_start=tx.started_at if tx else None,
            voltage_v=voltage,
            phases=ratings.phases,
            default_limit=default,
        )
        payload = composite_to_v16(schedule, connector_id)
        return call_result.GetCompositeSchedule(
            status="Accepted",
            connector_id=connector_id,
            schedule_start=payload.get("scheduleStart"),
            charging_schedule=camel_to_snake_case(payload["chargingSchedule"])
            if payload.get("chargingSchedule")
            else None,
        )


#: 1.6 §7.13 ChargingProfilePurposeType -> the normalised purposes.
_PURPOSES: dict[str, Purpose] = {
    "ChargePointMaxProfile": Purpose.STATION_MAX,
    "TxDefaultProfile": Purpose.TX_DEFAULT,
    "TxProfile": Purpose.TX,
}
#: GetCompositeSchedule asks for at most this many seconds: a day of 1440-period profiles already
#: costs thousands of evaluations, and no CSMS plans further ahead than a few days.
MAX_COMPOSITE_S = 7 * 86_400


def _payload(frame: list[Any], index: int) -> dict[str, Any]:
    value = frame[index] if len(frame) > index else {}
    return value if isinstance(value, dict) else {"value": value}


class V16Adapter:
    """The OCPP 1.6 side of an :class:`OcppStation`."""

    version: Version = "1.6"

    def __init__(self, station: OcppStation, config: Configuration) -> None:
        self.station = station
        self.config = config
        self._cp: ChargePoint16 | None = None
        self.pending_tx_profiles: dict[int, dict[str, Any]] = {}
        self.pending_diagnostics: tuple[str, str] | None = None

    # ------------------------------------------------------------------ the wire
    async def run(self, link: Link) -> None:
        self._cp = ChargePoint16(self.station, self, link)
        try:
            await self._cp.start()
        finally:
            self._cp = None

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await call_action(self._cp, call, action, payload, format_error="FormationViolation")

    # ------------------------------------------------------------------ settings
    def heartbeat_interval_s(self) -> float:
        return float(max(1, self.config.get_int("HeartbeatInterval")))

    def set_heartbeat_interval(self, seconds: int) -> None:
        # 1.6 §4.2: the interval in the BootNotification.conf sets HeartbeatInterval.
        self.config.change("HeartbeatInterval", str(max(1, seconds)))

    def sample_interval_s(self) -> float:
        return float(self.config.get_int("MeterValueSampleInterval"))

    def aligned_interval_s(self) -> float:
        return float(self.config.get_int("ClockAlignedDataInterval"))

    def attempts(self) -> int:
        return max(1, self.config.get_int("TransactionMessageAttempts"))

    def retry_interval_s(self) -> float:
        return float(max(1, self.config.get_int("TransactionMessageRetryInterval")))

    # authorisation settings the policy reads
    @property
    def local_pre_authorize(self) -> bool:
        return self.config.get_bool("LocalPreAuthorize")

    @property
    def local_authorize_offline(self) -> bool:
        return self.config.get_bool("LocalAuthorizeOffline")

    @property
    def allow_offline_unknown(self) -> bool:
        return self.config.get_bool("AllowOfflineTxForUnknownId")

    @property
    def local_list_enabled(self) -> bool:
        return self.config.get_bool("LocalAuthListEnabled")

    @property
    def cache_enabled(self) -> bool:
        return self.config.get_bool("AuthorizationCacheEnabled")

    # ------------------------------------------------------------------ messages
    def boot_payload(self) -> dict[str, Any]:
        s = self.station.settings
        payload: dict[str, Any] = {
            "chargePointVendor": s.vendor[:20],
            "chargePointModel": s.model[:20],
            "firmwareVersion": s.firmware_version[:50],
        }
        if s.serial_number:
            payload["chargePointSerialNumber"] = s.serial_number[:25]
        return payload

    def status_payload(self, connector_id: int, status: Status, now: datetime) -> tuple[str, dict[str, Any]]:
        payload: dict[str, Any] = {
            "connectorId": connector_id,
            "errorCode": status.error_code,
            "status": status.status16,
            "timestamp": utc_iso(now),
        }
        if status.vendor_error:
            payload["vendorErrorCode"] = status.vendor_error[:50]
        return "StatusNotification", payload

    def authorize_payload(self, id_tag: str) -> dict[str, Any]:
        return {"idTag": id_tag[:ID_TAG_MAX]}

    def authorize_status(self, result: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        info = result.get("idTagInfo") or {}
        return str(info.get("status", "Invalid")), info

    def tx_started(self, tx: Transaction, now: datetime) -> tuple[str, dict[str, Any]]:
        payload: dict[str, Any] = {
            "connectorId": tx.connector_id,
            "idTag": tx.id_tag[:ID_TAG_MAX],
            "meterStart": round(tx.meter_start_wh),
            "timestamp": utc_iso(now),
        }
        reservation = self.station.state[tx.connector_id].reservation_id
        if reservation is not None:
            payload["reservationId"] = reservation
        return "StartTransaction", payload

    def tx_meter_values(self, tx: Transaction, values: dict[str, Any], now: datetime) -> tuple[str, dict[str, Any]]:
        return "MeterValues", values

    def signed_begin_message(self, tx: Transaction, now: datetime) -> tuple[str, dict[str, Any]] | None:
        # StartTransaction has no meter values: the signed begin record follows it as MeterValues
        # with context Transaction.Begin (module docstring of firmware.ocpp.signed_meter).
        signed = self.station.signed
        if signed is None or tx.signed_begin is None:
            return None
        value = signed.sampled_value_16(tx.signed_begin, "Transaction.Begin", tx.meter_start_wh)
        return "MeterValues", {
            "connectorId": tx.connector_id,
            "transactionId": self._tx_id(tx),
            "meterValue": [{"timestamp": utc_iso(tx.started_at), "sampledValue": [value]}],
        }

    def _tx_id(self, tx: Transaction) -> int | str:
        """The CSMS's transaction id, or the outbox placeholder it is bound to on delivery."""
        return tx.transaction_id if tx.transaction_id is not None else TX_PLACEHOLDER.format(ref=tx.ref)

    def tx_stopped(self, tx: Transaction, reason: str, now: datetime) -> tuple[str, dict[str, Any]]:
        connector = self.station.connectors[tx.connector_id]
        meter_stop = connector.last_meter.import_wh if connector.last_meter is not None else tx.meter_start_wh
        if tx.meter_stop_wh is not None:
            meter_stop = tx.meter_stop_wh  # a session closed at boot: the journal's stop reading
        payload: dict[str, Any] = {
            "transactionId": self._tx_id(tx),
            "meterStop": round(meter_stop),
            "timestamp": utc_iso(now),
            "reason": reason,
            "idTag": tx.id_tag[:ID_TAG_MAX],
        }
        measurands = self.config.get_csl("StopTxnSampledData")
        data: list[dict[str, Any]] = []
        signed = self.station.signed
        if signed is not None and tx.signed_begin is not None:
            begin = signed.sampled_value_16(tx.signed_begin, "Transaction.Begin", tx.meter_start_wh)
            data.append({"timestamp": utc_iso(tx.started_at), "sampledValue": [begin]})
        end: list[dict[str, Any]] = []
        if measurands and connector.last_meter is not None and tx.meter_stop_wh is None:
            end = sampled_values_16(connector.last_meter, measurands, "Transaction.End")
        if signed is not None and tx.signed_end is not None:
            end.append(signed.sampled_value_16(tx.signed_end, "Transaction.End", meter_stop))
        if end:
            data.append({"timestamp": utc_iso(now), "sampledValue": end})
        if data:
            payload["transactionData"] = data
        return "StopTransaction", payload

    def meter_values(
        self, connector_id: int, tx: Transaction | None, reading: Any, context: str, now: datetime
    ) -> tuple[str, dict[str, Any]] | None:
        key = "MeterValuesAlignedData" if context == "Sample.Clock" else "MeterValuesSampledData"
        measurands = self.config.get_csl(key)
        if not measurands:
            return None
        sampled = sampled_values_16(reading, measurands, context)  # type: ignore[arg-type]
        signed = self.station.signed
        if (
            signed is not None
            and context in ("Sample.Periodic", "Sample.Clock")
            and self.config.get_bool("SampledDataSignReadings")
        ):
            connector = self.station.connectors[connector_id]
            record = signed.reading(connector_id, connector, tx.ref if tx is not None else None, now)
            if record is not None:
                sampled.append(signed.sampled_value_16(record, context, reading.import_wh))
        payload: dict[str, Any] = {
            "connectorId": connector_id,
            "meterValue": [{"timestamp": utc_iso(now), "sampledValue": sampled}],
        }
        if tx is not None:
            payload["transactionId"] = self._tx_id(tx)
        return "MeterValues", payload

    def on_delivered(self, message: QueuedMessage, response: dict[str, Any]) -> None:
        if message.action != "StartTransaction" or message.tx_ref is None:
            return
        tx_id = response.get("transactionId")
        if tx_id is None:
            return
        # The outbox bound the id to the session's queued messages when it recorded the delivery.
        for n, st in self.station.state.items():
            if st.tx is not None and st.tx.ref == message.tx_ref:
                st.tx.transaction_id = tx_id
                profile = self.pending_tx_profiles.pop(n, None)
                if profile is not None:
                    self._install_tx_profile(n, profile, str(tx_id))
        status = str((response.get("idTagInfo") or {}).get("status", "Accepted"))
        if status != "Accepted" and self.config.get_bool("StopTransactionOnInvalidId"):
            self.station.transaction_rejected(message.tx_ref, status)

    def _install_tx_profile(self, connector_id: int, profile: dict[str, Any], tx_id: str) -> None:
        try:
            parsed = profile_from_v16(profile, connector_id)
            result = self.station.profiles.install(parsed, active_transaction_id=tx_id)
        except ProfileError as exc:
            log.warning("the RemoteStart charging profile is invalid: %s", exc)
            return
        if result.accepted:
            self.station.profiles_changed()
