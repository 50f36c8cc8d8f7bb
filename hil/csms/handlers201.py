"""The CSMS's answers to everything an OCPP 2.0.1 or 2.1 charging station sends.

2.1 is a superset of 2.0.1 for station-initiated messages, so one set of handlers serves both; each
builds its response from the session's own ``call_result`` module (``self._call_result``), and 2.1
adds handlers for its new messages (bidirectional power, DER control, settlement, battery swap).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ocpp.routing import on
from ocpp.v21 import ChargePoint as ChargePoint21
from ocpp.v21.enums import Action as Action21
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201.enums import Action as Action201

from hil.csms.frames import Protocol
from hil.csms.records import AuthStatus, TransactionLedger, register_readings
from hil.csms.session import CsmsSession

#: TransactionType.stoppedReason when the station leaves it out (2.0.1: it may only be omitted when
#: the reason is Local).
_DEFAULT_STOP_REASON = "Local"


class _Csms2xHandlers(CsmsSession):  # type: ignore[misc]  # ocpp ships no type information
    """Handlers shared by 2.0.1 and 2.1 (B, C, E, G, J, K, L, M, N, P and A blocks, station side)."""

    #: NotifyEVChargingNeeds answer: this CSMS computes no schedules (K15/K17).
    ev_needs_status: ClassVar[str] = "Rejected"

    # ------------------------------------------------------------------- B Provisioning, G, J

    @on(Action201.boot_notification, skip_schema_validation=True)
    def on_boot_notification(self, **_: Any) -> Any:
        return self._call_result.BootNotification(**self.boot_answer())

    @on(Action201.heartbeat, skip_schema_validation=True)
    def on_heartbeat(self, **_: Any) -> Any:
        return self._call_result.Heartbeat(current_time=self.context.now())

    @on(Action201.status_notification, skip_schema_validation=True)
    def on_status_notification(self, **_: Any) -> Any:
        return self._call_result.StatusNotification()

    @on(Action201.notify_report, skip_schema_validation=True)
    def on_notify_report(self, **_: Any) -> Any:
        return self._call_result.NotifyReport()

    @on(Action201.meter_values, skip_schema_validation=True)
    def on_meter_values(self, **_: Any) -> Any:
        # 2.x MeterValues carry no transaction id: transaction meter values come in TransactionEvent.
        return self._call_result.MeterValues()

    # ------------------------------------------------------------- C Authorization, E Transactions

    @on(Action201.authorize, skip_schema_validation=True)
    def on_authorize(self, call_unique_id: str, **_: Any) -> Any:
        id_token = self.request_payload(call_unique_id)["idToken"]
        return self._call_result.Authorize(id_token_info={"status": self._token_status(id_token)})

    @on(Action201.transaction_event, skip_schema_validation=True)
    def on_transaction_event(self, call_unique_id: str, **_: Any) -> Any:
        request = self.request_payload(call_unique_id)
        info = request["transactionInfo"]
        now = self.context.clock.monotonic()
        record = self.context.ledger.open(self.id, info["transactionId"], self.protocol, now)
        evse = request.get("evse")
        if evse is not None:
            record["evse_id"] = evse["id"]
            record["connector_id"] = evse.get("connectorId", record["connector_id"])
        answer: dict[str, Any] = {}
        id_token = request.get("idToken")
        if id_token is not None:
            # E01/E02: idTokenInfo is returned whenever the request carries an idToken.
            status = self._token_status(id_token)
            record["id_tag"], record["id_tag_status"] = id_token["idToken"], status
            answer["id_token_info"] = {"status": status}
        meter_values = request.get("meterValue", [])
        event_type = request["eventType"]
        if event_type == "Started":
            record["started_at"] = request["timestamp"]
            begin = register_readings(meter_values, "Transaction.Begin") or register_readings(meter_values)
            if begin and record["meter_start_wh"] is None:
                record["meter_start_wh"] = begin[0]
        TransactionLedger.add_meter_values(record, meter_values)
        record["events"].append(
            {
                "eventType": event_type,
                "triggerReason": request["triggerReason"],
                "seqNo": request["seqNo"],
                "timestamp": request["timestamp"],
                "offline": request.get("offline", False),
            }
        )
        if event_type == "Ended":
            end = register_readings(meter_values, "Transaction.End") or register_readings(meter_values)
            record["stopped_at"] = request["timestamp"]
            record["stop_reason"] = info.get("stoppedReason", _DEFAULT_STOP_REASON)
            TransactionLedger.stop(record, end[-1] if end else None, now)
        return self._call_result.TransactionEvent(**answer)

    # ------------------------------------------------------------------------ K SmartCharging

    @on(Action201.notify_charging_limit, skip_schema_validation=True)
    def on_notify_charging_limit(self, **_: Any) -> Any:
        return self._call_result.NotifyChargingLimit()

    @on(Action201.cleared_charging_limit, skip_schema_validation=True)
    def on_cleared_charging_limit(self, **_: Any) -> Any:
        return self._call_result.ClearedChargingLimit()

    @on(Action201.report_charging_profiles, skip_schema_validation=True)
    def on_report_charging_profiles(self, **_: Any) -> Any:
        return self._call_result.ReportChargingProfiles()

    @on(Action201.notify_ev_charging_needs, skip_schema_validation=True)
    def on_notify_ev_charging_needs(self, **_: Any) -> Any:
        return self._call_result.NotifyEVChargingNeeds(status=self.ev_needs_status)

    @on(Action201.notify_ev_charging_schedule, skip_schema_validation=True)
    def on_notify_ev_charging_schedule(self, **_: Any) -> Any:
        return self._call_result.NotifyEVChargingSchedule(status="Accepted")

    # ----------------------------------------------- A Security, L Firmware, M Certificates, N, P

    @on(Action201.security_event_notification, skip_schema_validation=True)
    def on_security_event_notification(self, **_: Any) -> Any:
        return self._call_result.SecurityEventNotification()

    @on(Action201.sign_certificate, skip_schema_validation=True)
    def on_sign_certificate(self, **_: Any) -> Any:
        return self._call_result.SignCertificate(status="Accepted")

    @on(Action201.firmware_status_notification, skip_schema_validation=True)
    def on_firmware_status_notification(self, **_: Any) -> Any:
        return self._call_result.FirmwareStatusNotification()

    @on(Action201.publish_firmware_status_notification, skip_schema_validation=True)
    def on_publish_firmware_status_notification(self, **_: Any) -> Any:
        return self._call_result.PublishFirmwareStatusNotification()

    @on(Action201.get_15118_ev_certificate, skip_schema_validation=True)
    def on_get15118_ev_certificate(self, **_: Any) -> Any:
        # No contract certificate pool here: Failed, with the (mandatory) exiResponse empty.
        return self._call_result.Get15118EVCertificate(status="Failed", exi_response="")

    @on(Action201.get_certificate_status, skip_schema_validation=True)
    def on_get_certificate_status(self, **_: Any) -> Any:
        return self._call_result.GetCertificateStatus(status="Failed")  # no OCSP responder to ask

    @on(Action201.log_status_notification, skip_schema_validation=True)
    def on_log_status_notification(self, **_: Any) -> Any:
        return self._call_result.LogStatusNotification()

    @on(Action201.notify_event, skip_schema_validation=True)
    def on_notify_event(self, **_: Any) -> Any:
        return self._call_result.NotifyEvent()

    @on(Action201.notify_monitoring_report, skip_schema_validation=True)
    def on_notify_monitoring_report(self, **_: Any) -> Any:
        return self._call_result.NotifyMonitoringReport()

    @on(Action201.notify_customer_information, skip_schema_validation=True)
    def on_notify_customer_information(self, **_: Any) -> Any:
        return self._call_result.NotifyCustomerInformation()

    @on(Action201.notify_display_messages, skip_schema_validation=True)
    def on_notify_display_messages(self, **_: Any) -> Any:
        return self._call_result.NotifyDisplayMessages()

    @on(Action201.reservation_status_update, skip_schema_validation=True)
    def on_reservation_status_update(self, **_: Any) -> Any:
        return self._call_result.ReservationStatusUpdate()

    @on(Action201.data_transfer, skip_schema_validation=True)
    def on_data_transfer(self, **_: Any) -> Any:
        return self._call_result.DataTransfer(status="Accepted")

    # ----------------------------------------------------------------------------------- helpers

    def _token_status(self, id_token: dict[str, Any]) -> AuthStatus:
        if id_token.get("type") == "NoAuthorization":
            return "Accepted"  # there is no identifier to check (C01: NoAuthorization tokens are empty)
        return self.context.policy.id_status(str(id_token.get("idToken", "")))


class Csms201Session(_Csms2xHandlers, ChargePoint201):  # type: ignore[misc]
    protocol: ClassVar[Protocol] = "ocpp2.0.1"
    actions = Action201


class Csms21Session(_Csms2xHandlers, ChargePoint21):  # type: ignore[misc]
    protocol: ClassVar[Protocol] = "ocpp2.1"
    actions = Action21
    #: 2.1 adds NoChargingProfile: processed, but this CSMS will send no charging profile.
    ev_needs_status: ClassVar[str] = "NoChargingProfile"

    @on(Action21.battery_swap, skip_schema_validation=True)
    def on_battery_swap(self, **_: Any) -> Any:
        return self._call_result.BatterySwap()

    @on(Action21.notify_der_alarm, skip_schema_validation=True)
    def on_notify_der_alarm(self, **_: Any) -> Any:
        return self._call_result.NotifyDERAlarm()

    @on(Action21.notify_der_start_stop, skip_schema_validation=True)
    def on_notify_der_start_stop(self, **_: Any) -> Any:
        return self._call_result.NotifyDERStartStop()

    @on(Action21.report_der_control, skip_schema_validation=True)
    def on_report_der_control(self, **_: Any) -> Any:
        return self._call_result.ReportDERControl()

    @on(Action21.notify_priority_charging, skip_schema_validation=True)
    def on_notify_priority_charging(self, **_: Any) -> Any:
        return self._call_result.NotifyPriorityCharging()

    @on(Action21.notify_settlement, skip_schema_validation=True)
    def on_notify_settlement(self, **_: Any) -> Any:
        return self._call_result.NotifySettlement()

    @on(Action21.pull_dynamic_schedule_update, skip_schema_validation=True)
    def on_pull_dynamic_schedule_update(self, **_: Any) -> Any:
        return self._call_result.PullDynamicScheduleUpdate(status="Rejected")  # no dynamic profiles here

    @on(Action21.open_periodic_event_stream, skip_schema_validation=True)
    def on_open_periodic_event_stream(self, **_: Any) -> Any:
        # Accepted so that the stream's SEND frames arrive and are recorded.
        return self._call_result.OpenPeriodicEventStream(status="Accepted")

    @on(Action21.close_periodic_event_stream, skip_schema_validation=True)
    def on_close_periodic_event_stream(self, **_: Any) -> Any:
        return self._call_result.ClosePeriodicEventStream()

    @on(Action21.vat_number_validation, skip_schema_validation=True)
    def on_vat_number_validation(self, call_unique_id: str, **_: Any) -> Any:
        request = self.request_payload(call_unique_id)
        # No VAT register to consult: Rejected, echoing what was asked.
        return self._call_result.VatNumberValidation(
            status="Rejected", vat_number=request["vatNumber"], evse_id=request.get("evseId")
        )

    @on(Action21.get_certificate_chain_status, skip_schema_validation=True)
    def on_get_certificate_chain_status(self, call_unique_id: str, **_: Any) -> Any:
        request = self.request_payload(call_unique_id)
        now = self.context.now()
        statuses = [
            {
                "certificate_hash_data": entry["certificateHashData"],
                "source": entry["source"],
                "status": "Failed",  # no OCSP responder or CRL to consult
                "next_update": now,
            }
            for entry in request["certificateStatusRequests"]
        ]
        return self._call_result.GetCertificateChainStatus(certificate_status=statuses)
