"""The station's OCMF signer: transaction records for the CSMS, numbered without gaps or repeats.

One signer per station signs the readings of every connector's meter (OCMF ``MS`` names the meter,
so records of one meter share it). Who signs: the firmware, with the key created at first boot
(``ocmf.load_or_create_key``), not a certified meter's own signing module. A record proves that the
values were not changed after the station took them; it is not a metrological certificate. Boards
with an Eichrecht meter that signs on its own would pass its records through instead.

Pagination (OCMF ``PG``): ``T<n>`` for transaction records, ``F<n>`` for fiscal (clock-aligned)
ones, each counting up by one per record of this station and never reused. The next numbers are
written to ``ocmf-pagination.json`` (atomic, fsynced) *before* a record is handed out, so a power
loss can skip a number but never issue one twice.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric import ec

from firmware.files import write_atomic
from firmware.metering import ocmf

log = logging.getLogger(__name__)

#: OBIS codes of the readings (OCMF RI): active energy import (1.8.0) and export (2.8.0), totals.
OBIS_IMPORT = "01-00:01.08.00*FF"
OBIS_EXPORT = "01-00:02.08.00*FF"
#: OCMF reading time status: the host's clock is kept by NTP or the CSMS, not a certified time source,
#: so readings are "informative" (OCMF TM status I), never "synchronised" (S).
TIME_STATUS: ocmf.TimeStatus = "I"

#: OCMF end-reading types (RD.TX) for the stop reasons of OCPP 1.6 (7.47) and 2.0.1 (ReasonEnumType):
#: L local stop, R remote stop, P power failure, A abort; every other end is a plain E.
_END_TYPES = {
    "Local": "L",
    "Remote": "R",
    "PowerLoss": "P",
    "EmergencyStop": "A",
    "HardReset": "A",
    "SoftReset": "A",
    "Reboot": "A",
    "ImmediateReset": "A",
}

Context = Literal["T", "F"]


@dataclass(frozen=True)
class SignedReading:
    """What a record says about one moment: wall-clock time and the meter's totals."""

    at: datetime
    import_wh: float
    export_wh: float = 0.0


class SignerError(RuntimeError):
    """The signer cannot issue a record (its state file cannot be written)."""


class OcmfSigner:
    """Signs meter readings as OCMF records. ``state_path`` None keeps the counters in memory (tests,
    a station without a data directory)."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        *,
        state_path: Path | None,
        gateway_id: str,
        gateway_serial: str | None = None,
        gateway_version: str | None = None,
    ) -> None:
        self._key = key
        self._state_path = state_path
        self._gateway = (gateway_id, gateway_serial, gateway_version)
        self._next = {"T": 1, "F": 1}
        if state_path is not None and state_path.exists():
            self._next = _load_counters(state_path)
        self.public_key_hex = ocmf.public_key_hex(key)

    @classmethod
    def for_data_dir(cls, data_dir: Path | None, **gateway: Any) -> OcmfSigner:
        """The station's signer: key and counters in ``data_dir`` (created at first boot), or an
        ephemeral key without one."""
        if data_dir is None:
            return cls(ec.generate_private_key(ec.SECP256R1()), state_path=None, **gateway)
        key = ocmf.load_or_create_key(data_dir / "ocmf-key.pem")
        return cls(key, state_path=data_dir / "ocmf-pagination.json", **gateway)

    def transaction_record(
        self,
        meter: ocmf.MeterInfo,
        identity: ocmf.Identity,
        readings: list[tuple[SignedReading, str]],
        *,
        bidirectional: bool,
        meter_error: bool = False,
        tariff_text: str | None = None,
    ) -> str:
        """A transaction record (``PG`` = ``T<n>``) of ``readings``: each a reading and its OCMF type
        (B begin, C charging, E/L/R/P/A end). With ``meter_error`` every reading carries the energy
        error flag (EF "E") and the meter status E: the session had a plausibility fault."""
        return self._record("T", meter, identity, readings, bidirectional, meter_error, tariff_text)

    def fiscal_record(
        self, meter: ocmf.MeterInfo, reading: SignedReading, *, bidirectional: bool, meter_error: bool = False
    ) -> str:
        """A fiscal record (``PG`` = ``F<n>``): a clock-aligned reading outside any transaction."""
        return self._record("F", meter, ocmf.Identity(), [(reading, "")], bidirectional, meter_error, None)

    # ------------------------------------------------------------------------------- internals
    def _record(
        self,
        context: Context,
        meter: ocmf.MeterInfo,
        identity: ocmf.Identity,
        readings: list[tuple[SignedReading, str]],
        bidirectional: bool,
        meter_error: bool,
        tariff_text: str | None,
    ) -> str:
        rd: list[ocmf.Reading] = []
        for reading, kind in readings:
            when = ocmf.ocmf_time(reading.at.astimezone(UTC), TIME_STATUS)
            status = "E" if meter_error else "G"
            for obis, wh in ((OBIS_IMPORT, reading.import_wh), (OBIS_EXPORT, reading.export_wh)):
                if obis == OBIS_EXPORT and not bidirectional:
                    continue
                if not (math.isfinite(wh) and wh >= 0):
                    raise ocmf.OcmfError(f"reading {wh!r} Wh is not a meter total")
                flags = "E" if meter_error else ""
                rd.append(ocmf.Reading(when, wh / 1000.0, kind, status, obis, flags, meter.current_type))
        gateway_id, gateway_serial, gateway_version = self._gateway
        info = replace(
            meter,
            gateway_id=gateway_id,
            gateway_serial=gateway_serial,
            gateway_version=gateway_version,
            charge_controller_fw=gateway_version,
            extra={"TT": tariff_text} if tariff_text else {},
        )
        number = self._take(context)
        data = ocmf.payload(info, f"{context}{number}", identity, rd)
        return ocmf.sign(data, self._key)

    def _take(self, context: Context) -> int:
        number = self._next[context]
        following = {**self._next, context: number + 1}
        if self._state_path is not None:
            try:
                write_atomic(self._state_path, json.dumps(following).encode(), mode=0o644)
            except OSError as exc:
                raise SignerError(f"{self._state_path}: cannot keep the OCMF page counter: {exc}") from exc
        self._next = following
        return number


def end_type(stop_reason: str | None) -> str:
    """The OCMF reading type of a session's last reading for its stop reason."""
    return _END_TYPES.get(stop_reason or "", "E")


def _load_counters(path: Path) -> dict[str, int]:
    try:
        data = json.loads(path.read_text())
        counters = {key: int(data[key]) for key in ("T", "F")}
        if any(n < 1 for n in counters.values()):
            raise ValueError(f"page counters must be >= 1, not {counters}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # A damaged counter file must not stop charging. Numbers restart from the Unix time in seconds:
        # larger than any count this station issued at fewer than one record per second since 1970, so
        # they stay unique (stated in the log for the operator).
        log.error("%s: unreadable OCMF page counters (%s); continuing from a time-based number", path, exc)
        base = int(datetime.now(UTC).timestamp())
        return {"T": base, "F": base}
    return counters
