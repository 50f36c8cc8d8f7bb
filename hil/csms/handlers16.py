"""The CSMS's answers to everything an OCPP 1.6J charge point sends (Core, FirmwareManagement and the
security whitepaper's station-initiated messages)."""

from __future__ import annotations

from typing import Any, ClassVar

from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from hil.csms.frames import Protocol
from hil.csms.records import TransactionLedger
from hil.csms.session import CsmsSession

#: StopTransaction.reason when the charge point leaves it out (OCPP 1.6 StopTransaction.req: "Local" is assumed).
_DEFAULT_STOP_REASON = "Local"


class Csms16Session(CsmsSession, ChargePoint16):  # type: ignore[misc]  # ocpp ships no type information
    protocol: ClassVar[Protocol] = "ocpp1.6"
    actions = Action

    # ------------------------------------------------------------------------------ Core profile

    @on(Action.boot_notification, skip_schema_validation=True)
    def on_boot_notification(self, **_: Any) -> Any:
        return call_result.BootNotification(**self.boot_answer())

    @on(Action.heartbeat, skip_schema_validation=True)
    def on_heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=self.context.now())

    @on(Action.status_notification, skip_schema_validation=True)
    def on_status_notification(self, **_: Any) -> Any:
        return call_result.StatusNotification()

    @on(Action.authorize, skip_schema_validation=True)
    def on_authorize(self, id_tag: str, **_: Any) -> Any:
        return call_result.Authorize(id_tag_info={"status": self.context.policy.id_status(id_tag)})

    @on(Action.data_transfer, skip_schema_validation=True)
    def on_data_transfer(self, **_: Any) -> Any:
        return call_result.DataTransfer(status="Accepted")

    @on(Action.start_transaction, skip_schema_validation=True)
    def on_start_transaction(self, call_unique_id: str, **_: Any) -> Any:
        request = self.request_payload(call_unique_id)
        status = self.context.policy.id_status(request["idTag"])
        transaction_id = (
            self.context.next_transaction_id()
        )  # OCPP 1.6 StartTransaction.conf: the Central System assigns it
        record = self.context.ledger.open(self.id, str(transaction_id), self.protocol, self.context.clock.monotonic())
        record.update(
            connector_id=request["connectorId"],
            id_tag=request["idTag"],
            id_tag_status=status,
            meter_start_wh=float(request["meterStart"]),  # OCPP 1.6 StartTransaction.req: meterStart in Wh
            energy_wh=0.0,
            started_at=request["timestamp"],
        )
        record["events"].append({"eventType": "Started", "timestamp": request["timestamp"]})
        return call_result.StartTransaction(transaction_id=transaction_id, id_tag_info={"status": status})

    @on(Action.meter_values, skip_schema_validation=True)
    def on_meter_values(self, call_unique_id: str, **_: Any) -> Any:
        request = self.request_payload(call_unique_id)
        if "transactionId" in request:
            record = self._transaction(request["transactionId"])
            if record["connector_id"] is None:
                record["connector_id"] = request["connectorId"]
            TransactionLedger.add_meter_values(record, request["meterValue"])
            record["events"].append({"eventType": "Updated", "timestamp": _first_timestamp(request["meterValue"])})
        return call_result.MeterValues()

    @on(Action.stop_transaction, skip_schema_validation=True)
    def on_stop_transaction(self, call_unique_id: str, **_: Any) -> Any:
        request = self.request_payload(call_unique_id)
        record = self._transaction(request["transactionId"])
        TransactionLedger.add_meter_values(record, request.get("transactionData", []))
        record["stopped_at"] = request["timestamp"]
        record["stop_reason"] = request.get("reason", _DEFAULT_STOP_REASON)
        TransactionLedger.stop(record, float(request["meterStop"]), self.context.clock.monotonic())
        record["events"].append({"eventType": "Ended", "timestamp": request["timestamp"]})
        if "idTag" not in request:
            return call_result.StopTransaction()
        return call_result.StopTransaction(id_tag_info={"status": self.context.policy.id_status(request["idTag"])})

    # ------------------------------------------------------------ FirmwareManagement and Security

    @on(Action.diagnostics_status_notification, skip_schema_validation=True)
    def on_diagnostics_status_notification(self, **_: Any) -> Any:
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification, skip_schema_validation=True)
    def on_firmware_status_notification(self, **_: Any) -> Any:
        return call_result.FirmwareStatusNotification()

    @on(Action.signed_firmware_status_notification, skip_schema_validation=True)
    def on_signed_firmware_status_notification(self, **_: Any) -> Any:
        return call_result.SignedFirmwareStatusNotification()

    @on(Action.security_event_notification, skip_schema_validation=True)
    def on_security_event_notification(self, **_: Any) -> Any:
        return call_result.SecurityEventNotification()

    @on(Action.log_status_notification, skip_schema_validation=True)
    def on_log_status_notification(self, **_: Any) -> Any:
        return call_result.LogStatusNotification()

    @on(Action.sign_certificate, skip_schema_validation=True)
    def on_sign_certificate(self, **_: Any) -> Any:
        return call_result.SignCertificate(status="Accepted")

    # ----------------------------------------------------------------------------------- helpers

    def _transaction(self, transaction_id: int) -> dict[str, Any]:
        """The ledger record of ``transaction_id``, opened now if the start was never seen here."""
        return self.context.ledger.open(self.id, str(transaction_id), self.protocol, self.context.clock.monotonic())


def _first_timestamp(meter_values: list[Any]) -> str | None:
    for entry in meter_values:
        if isinstance(entry, dict) and isinstance(entry.get("timestamp"), str):
            return str(entry["timestamp"])
    return None
