"""Signed meter values (OCMF) and billing records in OCPP messages.

Where the records go
--------------------
* Transaction begin: OCPP 1.6 has no meter value in StartTransaction, so a MeterValues message with
  context ``Transaction.Begin`` follows it; 2.0.1/2.1 put it in the ``Started`` TransactionEvent.
* Transaction end: the record holds the begin *and* the end reading, so it alone proves the session's
  energy. 1.6 puts it in StopTransaction ``transactionData`` (with the begin record when it is still
  known, as the be.ENERGISED Eichrecht note recommends: everything the transparency software needs in
  one message); 2.0.1/2.1 in the ``Ended`` TransactionEvent.
* Periodic values during a transaction: only where configured (1.6 ``SampledDataSignReadings``,
  2.0.1 ``SampledDataCtrlr.SignReadings`` / ``AlignedDataCtrlr.SignReadings``), a record with the
  begin reading and the current one (C). Clock-aligned values outside a transaction get a fiscal
  record (``F<n>``, no reading type) under the same settings.

Encoding: 2.0.1 ``SignedMeterValueType`` (signedMeterData = base64 of the OCMF text, encodingMethod
"OCMF", signingMethod, publicKey = base64 of the DER public key, sent as ``PublicKeyWithSignedMeterValue``
says: Never, OncePerTransaction (the default, in the Started event) or EveryMeterValue). 1.6 has no such
type: the sampled value has ``format`` SignedData and its ``value`` is the same object as JSON text
(the form be.ENERGISED and the German Eichrecht backends read).

The public key also sits in the read-only 1.6 configuration key ``MeterPublicKey`` (hex DER, the form
transparency software takes). Billing records (firmware.metering.billing) go to the CSMS as a
DataTransfer ``org.evse-firmware`` / ``BillingRecord`` queued after the stop message in the outbox.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from firmware.metering import ocmf
from firmware.metering.signing import OcmfSigner, SignedReading, SignerError, end_type

if TYPE_CHECKING:
    from firmware.connector import Connector
    from firmware.journal import SessionRecord

log = logging.getLogger(__name__)

MEASURAND = "Energy.Active.Import.Register"
ENCODING_METHOD = "OCMF"
#: DataTransfer that carries a session's billing record (vendor id: reverse DNS of the project).
BILLING_VENDOR_ID = "org.evse-firmware"
BILLING_MESSAGE_ID = "BillingRecord"


class SignedMeter:
    """Makes the signed records of a station's connectors from their journal sessions."""

    def __init__(self, signer: OcmfSigner, *, station_id: str) -> None:
        self.signer = signer
        self._station_id = station_id

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(bytes.fromhex(self.signer.public_key_hex)).decode()

    # ------------------------------------------------------------------------------ records
    def begin(self, n: int, connector: Connector, session_ref: str) -> str | None:
        session = journal_session(connector, session_ref)
        if session is None:
            return None
        return self._sign(n, connector, session, [(_begin_reading(session), "B")])

    def end(self, n: int, connector: Connector, session_ref: str) -> str | None:
        """The end record of a stopped session (begin and end readings)."""
        session = journal_session(connector, session_ref)
        if session is None or session.stopped_at is None or session.meter_stop_wh is None:
            return None
        stop = SignedReading(
            datetime.fromtimestamp(session.stopped_at, UTC),
            session.meter_stop_wh,
            session.export_stop_wh if session.export_stop_wh is not None else session.last_export_wh,
        )
        readings = [(_begin_reading(session), "B"), (stop, end_type(session.stop_reason))]
        return self._sign(n, connector, session, readings)

    def sample(self, n: int, connector: Connector, session_ref: str, now: datetime) -> str | None:
        """A record of the current reading of a running session (type C) with its begin reading."""
        session = journal_session(connector, session_ref)
        reading = connector.last_meter
        if session is None or reading is None:
            return None
        current = SignedReading(now, reading.import_wh, reading.export_wh)
        return self._sign(n, connector, session, [(_begin_reading(session), "B"), (current, "C")])

    def fiscal(self, n: int, connector: Connector, now: datetime) -> str | None:
        """A fiscal record (``F<n>``) of the current reading outside any transaction (clock-aligned)."""
        reading = connector.last_meter
        if reading is None:
            return None
        try:
            return self.signer.fiscal_record(
                meter_info(n, connector, self._station_id),
                SignedReading(now, reading.import_wh, reading.export_wh),
                bidirectional=connector.hal.converter is not None,
            )
        except (SignerError, ocmf.OcmfError) as exc:
            log.error("connector %d: cannot sign the meter reading: %s", n, exc)
            return None

    def reading(self, n: int, connector: Connector, tx_ref: str | None, now: datetime) -> str | None:
        """The record of a periodic or clock-aligned value: within a transaction (C) or fiscal."""
        if tx_ref is not None:
            return self.sample(n, connector, tx_ref, now)
        return self.fiscal(n, connector, now)

    def _sign(
        self, n: int, connector: Connector, session: SessionRecord, readings: list[tuple[SignedReading, str]]
    ) -> str | None:
        try:
            return self.signer.transaction_record(
                meter_info(n, connector, self._station_id),
                _identity(session),
                readings,
                bidirectional=connector.hal.converter is not None,
                meter_error=session.meter_error is not None,
                tariff_text=session.tariff.text if session.tariff is not None and session.tariff.text else None,
            )
        except (SignerError, ocmf.OcmfError) as exc:
            # The session goes on and the CSMS still gets the plain values; the gap is logged.
            log.error("connector %d: cannot sign the meter reading: %s", n, exc)
            return None

    # ------------------------------------------------------------------------------ encodings
    def sampled_value_16(self, record: str, context: str, value_wh: float) -> dict[str, Any]:
        signed = {
            "signedMeterValue": base64.b64encode(record.encode()).decode(),
            "encodingMethod": ENCODING_METHOD,
            "signingMethod": ocmf.SIGNATURE_ALGORITHM,
            "publicKey": self.public_key_b64,
        }
        return {
            "value": json.dumps(signed, separators=(",", ":")),
            "context": context,
            "format": "SignedData",
            "measurand": MEASURAND,
            "location": "Outlet",
            "unit": "Wh",
        }

    def sampled_value_201(self, record: str, context: str, value_wh: float, *, with_key: bool) -> dict[str, Any]:
        return {
            "value": round(value_wh),
            "context": context,
            "measurand": MEASURAND,
            "location": "Outlet",
            "unitOfMeasure": {"unit": "Wh"},
            "signedMeterValue": {
                "signedMeterData": base64.b64encode(record.encode()).decode(),
                "signingMethod": ocmf.SIGNATURE_ALGORITHM,
                "encodingMethod": ENCODING_METHOD,
                "publicKey": self.public_key_b64 if with_key else "",
            },
        }


def billing_payload(connector: Connector, session_ref: str) -> dict[str, Any] | None:
    """The DataTransfer payload of a stopped session's billing record (None without one)."""
    session = journal_session(connector, session_ref)
    if session is None or session.billing is None:
        return None
    return {
        "vendorId": BILLING_VENDOR_ID,
        "messageId": BILLING_MESSAGE_ID,
        "data": json.dumps(session.billing.to_json(), separators=(",", ":"), sort_keys=True),
    }


def meter_info(n: int, connector: Connector, station_id: str) -> ocmf.MeterInfo:
    """OCMF meter identity: the meter's own serial and model when its driver reads them (a Modbus
    meter), else the station and connector (a metering chip on the board has no serial of its own)."""
    inner = connector.meter.inner if connector.meter is not None else None
    serial = getattr(inner, "serial_number", None)
    model = getattr(inner, "model", None)
    vendor = getattr(inner, "vendor", None)
    dc = connector.hal.config.ratings.supply == "dc"
    return ocmf.MeterInfo(
        serial=str(serial) if serial else f"{station_id}-{n}",
        vendor=str(vendor) if vendor else "evse-firmware",
        model=str(model) if model else type(inner).__name__ if inner is not None else "none",
        current_type="DC" if dc else "AC",
    )


def decode_signed_value(text: str) -> str:
    """The OCMF record inside what a CSMS received: the record itself, base64 of it, or the 1.6 JSON
    object ``{"signedMeterValue": <base64>, ...}``. Raises OcmfError."""
    text = text.strip()
    if text.startswith("OCMF|"):
        return text
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise ocmf.OcmfError(f"not a signed value object: {exc}") from exc
        inner = obj.get("signedMeterValue") or obj.get("signedMeterData") if isinstance(obj, dict) else None
        if not isinstance(inner, str):
            raise ocmf.OcmfError("the object has no signedMeterValue / signedMeterData string")
        text = inner
    try:
        decoded = base64.b64decode(text, validate=True).decode("utf-8")
    except ValueError as exc:
        raise ocmf.OcmfError(f"neither an OCMF record nor base64 of one: {exc}") from exc
    if not decoded.startswith("OCMF|"):
        raise ocmf.OcmfError("the base64 text does not hold an OCMF record")
    return decoded


def journal_session(connector: Connector, ref: str) -> SessionRecord | None:
    """The session ``ref`` from the connector's journal; None without a journal, for an unknown session,
    or when the journal cannot be read (logged: a broken journal must not take the uplink down)."""
    if connector.journal is None:
        return None
    try:
        return connector.journal.session(ref)
    except Exception as exc:  # a broken journal must not take the uplink down
        log.error("cannot read session %s: %s", ref, exc)
        return None


def _begin_reading(session: SessionRecord) -> SignedReading:
    return SignedReading(
        datetime.fromtimestamp(session.started_at, UTC), session.meter_start_wh, session.export_start_wh
    )


def _identity(session: SessionRecord) -> ocmf.Identity:
    if session.id_tag is None:
        return ocmf.Identity()
    # The firmware knows the token was accepted (by the CSMS, its cache or local list) but not how it
    # was read: OCMF's UNDEFINED type and TRUSTED level say exactly that.
    return ocmf.Identity(id_value=session.id_tag, id_type="UNDEFINED", level="TRUSTED")
