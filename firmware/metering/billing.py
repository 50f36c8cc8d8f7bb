"""Tariffs, the price of a charging session and its billing record ("Energy Charged").

The billing record is what the station keeps, shows and forwards for every stopped session (seed requirement
R119, "Energy Charged" in use case 002 §3.2.3: start and end time or duration, energy charged, the billable
price per kWh and/or per hour; R120: prices per kWh, per time or both; R122: energy fed back is recorded too;
R121: the station's meter, never the vehicle's, is what is billed).

Tariff
------
A :class:`Tariff` is fixed into a session when it starts (the journal stores it with the session), so a
tariff changed later never reprices a running or past session. It has three non-negative prices in one
currency: ``energy_per_kwh`` for energy the EV imported, ``time_per_hour`` for the session's duration
(plug-in to stop, as the journal records it), and ``export_credit_per_kwh`` credited for energy the EV
discharged (V2G). ``text`` is the human tariff text that goes into the OCMF ``TT`` field.

Price and rounding (public behaviour)
-------------------------------------
Each component is computed exactly (``Decimal`` arithmetic, never binary floats: an energy reading is taken
by its shortest decimal form, ``repr``) and then rounded on its own to the currency's minor unit with
``ROUND_HALF_UP`` (half a cent goes up). The total is the sum of the *rounded* components,
``energy + time - export_credit``: the components shown on a receipt always add up to its total, and each
component is within half a minor unit of its exact value. The total is negative only when the export
credit is larger than the energy and time charges together (the station owes the driver).

The minor unit comes from ISO 4217: 2 decimals for almost every currency (EUR, USD, GBP, CHF ...), 0 for
a few (JPY, KRW ...) and 3 for a few (KWD, BHD ...): :func:`minor_unit_digits`.

Billing record format (``format: 1``)
-------------------------------------
:meth:`BillingRecord.to_json` gives plain JSON types: times as ISO 8601 UTC with milliseconds and ``Z``,
money and prices as decimal strings (exact), energies in Wh and the duration in seconds as numbers. The same
dict is stored in the journal, sent to the CSMS and printed by ``evse sessions --json``; docs/billing.md
lists the keys. :meth:`BillingRecord.from_json` reads it back exactly.

Errors: every bad tariff, tariff file or stored record is a :class:`TariffError` or :class:`BillingError`
(both ``ValueError``) whose message names the field (and, for a file, the file and the key).
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any, Final, Protocol

#: Version of the billing record JSON (ARCHITECTURE.md: public formats are versioned).
BILLING_FORMAT: Final = 1

#: OCMF ``TT`` (tariff text) is at most 250 characters (OCMF-en.md, "User assignment"; standards-facts.md
#: §5.1); "|" separates the sections of an OCMF record and is not allowed inside one (same source).
TARIFF_TEXT_MAX: Final = 250

#: Sanity bounds on a price: no real tariff needs more than 8 decimals or a price above a million per unit
#: (even in currencies with small units); they also keep every product exact in a 60-digit context.
PRICE_MAX: Final = Decimal(1_000_000)
PRICE_MAX_DECIMALS: Final = 8

#: Upper bound for an energy (Wh) or a duration (s) to be priced: 1 TWh, ~31 years.
QUANTITY_MAX: Final = 1e12

#: ISO 4217 minor units (the "Minor unit" column of ISO 4217 list one) of the active currencies that do not
#: use 2 decimals; every other code uses 2.
_ZERO_DECIMALS: Final = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF"
_THREE_DECIMALS: Final = "BHD IQD JOD KWD LYD OMR TND"
_FOUR_DECIMALS: Final = "CLF UYW"
_MINOR_UNITS: Final[dict[str, int]] = {
    **dict.fromkeys(_ZERO_DECIMALS.split(), 0),
    **dict.fromkeys(_THREE_DECIMALS.split(), 3),
    **dict.fromkeys(_FOUR_DECIMALS.split(), 4),
}
_DEFAULT_MINOR_UNIT = 2

_CURRENCY = re.compile(r"[A-Z]{3}")
_UTC_MS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
_PRICE_FIELDS: Final = ("energy_per_kwh", "time_per_hour", "export_credit_per_kwh")
_TARIFF_KEYS: Final = ("currency", *_PRICE_FIELDS, "text")
_MAX_METER_ERROR = 500  # a diagnostic sentence, not unbounded


# --------------------------------------------------------------------------------------------- errors
class BillingError(ValueError):
    """A billing record (or its JSON) is not valid; the message names the field."""


class TariffError(BillingError):
    """A tariff, a tariff file or a price request is not valid; the message names the field (and the file)."""


def minor_unit_digits(currency: str) -> int:
    """Decimals of ``currency``'s minor unit (ISO 4217): 2 unless the table above says otherwise."""
    return _MINOR_UNITS.get(currency, _DEFAULT_MINOR_UNIT)


# ---------------------------------------------------------------------------------------------- price
@dataclass(frozen=True)
class Price:
    """The price of a session in ``currency``: each component rounded to the minor unit, ``total`` =
    ``energy + time - export_credit`` (negative only if the export credit exceeds the charges)."""

    currency: str
    energy: Decimal
    time: Decimal
    export_credit: Decimal
    total: Decimal

    @property
    def text(self) -> str:
        return f"{self.total} {self.currency}"

    def to_json(self) -> dict[str, str]:
        return {
            "currency": self.currency,
            "energy": str(self.energy),
            "time": str(self.time),
            "export_credit": str(self.export_credit),
            "total": str(self.total),
        }

    @classmethod
    def from_json(cls, data: object) -> Price:
        obj = _object("price", data, ("currency", "energy", "time", "export_credit", "total"))
        currency = obj["currency"]
        if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
            raise BillingError(f"price.currency must be an ISO 4217 code of 3 upper-case letters, not {currency!r}")
        digits = minor_unit_digits(currency)
        amounts: dict[str, Decimal] = {}
        for name in ("energy", "time", "export_credit", "total"):
            text = obj[name]
            amount = _decimal_text(f"price.{name}", text)
            if amount.as_tuple().exponent != -digits or (name != "total" and amount < 0):
                raise BillingError(
                    f"price.{name} must be an amount {'' if name == 'total' else '>= 0 '}with exactly {digits} "
                    f"decimals for {currency}, not {text!r}"
                )
            amounts[name] = amount
        if amounts["total"] != amounts["energy"] + amounts["time"] - amounts["export_credit"]:
            raise BillingError(f"price.total {amounts['total']} is not energy + time - export_credit")
        return cls(currency, **amounts)


# --------------------------------------------------------------------------------------------- tariff
@dataclass(frozen=True)
class Tariff:
    """Prices in ``currency`` (ISO 4217). The prices also accept ``int``, ``str`` (a decimal number) and
    ``float`` (taken by its shortest decimal form, so ``0.35`` is exactly 0.35) and are stored as
    ``Decimal``. Raises :class:`TariffError` naming the field."""

    currency: str
    energy_per_kwh: Decimal = Decimal(0)
    time_per_hour: Decimal = Decimal(0)
    export_credit_per_kwh: Decimal = Decimal(0)
    text: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.currency, str) or not _CURRENCY.fullmatch(self.currency):
            raise TariffError(
                f"currency must be an ISO 4217 code of 3 upper-case letters (e.g. EUR), not {self.currency!r}"
            )
        for name in _PRICE_FIELDS:
            object.__setattr__(self, name, _price(name, getattr(self, name)))
        if not isinstance(self.text, str):
            raise TariffError(f"text must be a string, not {self.text!r}")
        if len(self.text) > TARIFF_TEXT_MAX:
            raise TariffError(
                f"text must be at most {TARIFF_TEXT_MAX} characters (OCMF TT), not {len(self.text)} characters"
            )
        if "|" in self.text:
            raise TariffError("text must not contain '|' (OCMF separates its sections with it)")

    def price(self, import_wh: float, export_wh: float, duration_s: float) -> Price:
        """The price of a session that imported ``import_wh``, exported ``export_wh`` and lasted
        ``duration_s`` (all finite and >= 0, else :class:`TariffError`). Rounding: module docstring."""
        imported = _quantity("import_wh", import_wh)
        exported = _quantity("export_wh", export_wh)
        duration = _quantity("duration_s", duration_s)
        step = Decimal(1).scaleb(-minor_unit_digits(self.currency))
        with localcontext() as ctx:
            # 60 digits hold every product of the bounded inputs exactly (17 + 15 digits at most); the
            # division by 3600 is then correctly rounded far below the minor unit, so only our own
            # quantize rounds.
            ctx.prec = 60
            energy = (imported * self.energy_per_kwh / 1000).quantize(step, rounding=ROUND_HALF_UP)
            time = (duration * self.time_per_hour / 3600).quantize(step, rounding=ROUND_HALF_UP)
            credit = (exported * self.export_credit_per_kwh / 1000).quantize(step, rounding=ROUND_HALF_UP)
            total = energy + time - credit
        return Price(self.currency, energy, time, credit, total)

    def to_json(self) -> dict[str, str]:
        """Prices as plain decimal strings (never exponent notation): ``from_json`` gives back an equal tariff."""
        return {
            "currency": self.currency,
            "energy_per_kwh": format(self.energy_per_kwh, "f"),
            "time_per_hour": format(self.time_per_hour, "f"),
            "export_credit_per_kwh": format(self.export_credit_per_kwh, "f"),
            "text": self.text,
        }

    @classmethod
    def from_json(cls, data: object) -> Tariff:
        """A tariff from :meth:`to_json`'s dict. Prices must be strings (exact); unknown keys are refused."""
        obj = _object("tariff", data, ("currency",), optional=(*_PRICE_FIELDS, "text"))
        for name in _PRICE_FIELDS:
            if name in obj and not isinstance(obj[name], str):
                raise TariffError(f"tariff.{name} must be a decimal string, not {obj[name]!r}")
        return cls(**obj)


def load_tariff(path: Path) -> Tariff:
    """The tariff in the ``[tariff]`` table of the TOML file ``path``::

        [tariff]
        currency = "EUR"
        energy_per_kwh = "0.39"        # a string is exact; a number (0.39) works too
        time_per_hour = "1.20"
        export_credit_per_kwh = "0.10"
        text = "0.39 EUR/kWh, 1.20 EUR/h"

    Raises :class:`TariffError` naming the file and the key."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            document = tomllib.load(f)
    except OSError as exc:
        raise TariffError(f"{path}: cannot read the tariff file: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise TariffError(f"{path}: not a valid TOML file: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise TariffError(f"{path}: not a valid TOML file (not UTF-8): {exc}") from exc
    table = document.get("tariff")
    if not isinstance(table, dict):
        raise TariffError(f"{path}: needs a [tariff] table (with currency and the prices)")
    unknown = sorted(set(table) - set(_TARIFF_KEYS))
    if unknown:
        raise TariffError(f"{path}: [tariff] has unknown key {unknown[0]!r}; the keys are {', '.join(_TARIFF_KEYS)}")
    if "currency" not in table:
        raise TariffError(f"{path}: [tariff] needs the key 'currency' (ISO 4217, e.g. \"EUR\")")
    try:
        return Tariff(**table)
    except TariffError as exc:
        raise TariffError(f"{path}: [tariff] {exc}") from exc


# ------------------------------------------------------------------------------------- billing record
class StoppedSession(Protocol):
    """What :func:`billing_record` reads from a session (``firmware.journal.SessionRecord`` has it)."""

    @property
    def session_id(self) -> str: ...
    @property
    def connector(self) -> int: ...
    @property
    def id_tag(self) -> str | None: ...
    @property
    def started_at(self) -> float: ...
    @property
    def stopped_at(self) -> float | None: ...
    @property
    def meter_start_wh(self) -> float: ...
    @property
    def meter_stop_wh(self) -> float | None: ...
    @property
    def export_start_wh(self) -> float: ...
    @property
    def export_stop_wh(self) -> float | None: ...
    @property
    def stop_reason(self) -> str | None: ...
    @property
    def tariff(self) -> Tariff | None: ...
    @property
    def meter_error(self) -> str | None: ...


@dataclass(frozen=True)
class BillingRecord:
    """The "Energy Charged" record of one stopped session. Times are UTC (milliseconds); ``duration_s`` is
    ``stopped_at - started_at`` (0 if the wall clock went back during the session); ``import_wh`` and
    ``export_wh`` are the session's energies (stop minus start of each meter register). ``tariff`` and
    ``price`` are ``None`` when no tariff was configured. ``meter_error`` is the first meter plausibility
    problem seen during the session (the energies may then be wrong and need a look before billing)."""

    session_id: str
    connector: int
    id_tag: str | None
    started_at: datetime
    stopped_at: datetime
    duration_s: float
    import_wh: float
    export_wh: float
    meter_import_start_wh: float
    meter_import_stop_wh: float
    meter_export_start_wh: float
    meter_export_stop_wh: float
    stop_reason: str
    tariff: Tariff | None
    price: Price | None
    meter_error: str | None

    @property
    def price_text(self) -> str:
        return self.price.text if self.price is not None else "no tariff configured"

    def to_json(self) -> dict[str, Any]:
        """The record as plain JSON types (see the module docstring and docs/billing.md)."""
        return {
            "format": BILLING_FORMAT,
            "session_id": self.session_id,
            "connector": self.connector,
            "id_tag": self.id_tag,
            "started_at": utc_iso(self.started_at),
            "stopped_at": utc_iso(self.stopped_at),
            "duration_s": self.duration_s,
            "import_wh": self.import_wh,
            "export_wh": self.export_wh,
            "meter_import_start_wh": self.meter_import_start_wh,
            "meter_import_stop_wh": self.meter_import_stop_wh,
            "meter_export_start_wh": self.meter_export_start_wh,
            "meter_export_stop_wh": self.meter_export_stop_wh,
            "stop_reason": self.stop_reason,
            "tariff": None if self.tariff is None else self.tariff.to_json(),
            "price": None if self.price is None else self.price.to_json(),
            "meter_error": self.meter_error,
        }

    @classmethod
    def from_json(cls, data: object) -> BillingRecord:
        """The record from :meth:`to_json`'s dict (exactly); :class:`BillingError` naming the bad key."""
        obj = _object("billing record", data, _RECORD_KEYS)
        if obj["format"] != BILLING_FORMAT or isinstance(obj["format"], bool):
            raise BillingError(f"billing record format must be {BILLING_FORMAT}, not {obj['format']!r}")
        session_id = obj["session_id"]
        if not isinstance(session_id, str) or not session_id:
            raise BillingError(f"billing record session_id must be a non-empty string, not {session_id!r}")
        connector = obj["connector"]
        if isinstance(connector, bool) or not isinstance(connector, int) or connector < 1:
            raise BillingError(f"billing record connector must be an integer >= 1, not {connector!r}")
        for name in ("id_tag", "meter_error"):
            if obj[name] is not None and not isinstance(obj[name], str):
                raise BillingError(f"billing record {name} must be a string or null, not {obj[name]!r}")
        if not isinstance(obj["stop_reason"], str) or not obj["stop_reason"]:
            raise BillingError(f"billing record stop_reason must be a non-empty string, not {obj['stop_reason']!r}")
        numbers = {name: _json_number(name, obj[name]) for name in _RECORD_NUMBERS}
        tariff = None if obj["tariff"] is None else Tariff.from_json(obj["tariff"])
        price = None if obj["price"] is None else Price.from_json(obj["price"])
        if (tariff is None) != (price is None) or (
            tariff is not None and price is not None and price.currency != tariff.currency
        ):
            raise BillingError("billing record: a price needs the tariff it was computed with (same currency)")
        return cls(
            session_id=session_id,
            connector=connector,
            id_tag=obj["id_tag"],
            started_at=_parse_utc("started_at", obj["started_at"]),
            stopped_at=_parse_utc("stopped_at", obj["stopped_at"]),
            stop_reason=obj["stop_reason"],
            tariff=tariff,
            price=price,
            meter_error=obj["meter_error"],
            **numbers,
        )


_RECORD_NUMBERS: Final = (
    "duration_s",
    "import_wh",
    "export_wh",
    "meter_import_start_wh",
    "meter_import_stop_wh",
    "meter_export_start_wh",
    "meter_export_stop_wh",
)
_RECORD_KEYS: Final = (
    "format",
    "session_id",
    "connector",
    "id_tag",
    "started_at",
    "stopped_at",
    *_RECORD_NUMBERS,
    "stop_reason",
    "tariff",
    "price",
    "meter_error",
)


def billing_record(session: StoppedSession) -> BillingRecord:
    """The billing record of a stopped session (:class:`BillingError` if it is still open or its values
    are not usable). Energies are taken as stop minus start in decimal, so 1000.1 - 1000.0 is 0.1 Wh, not
    0.09999999999990905."""
    stopped_at, reason = session.stopped_at, session.stop_reason
    import_stop, export_stop = session.meter_stop_wh, session.export_stop_wh
    if stopped_at is None or reason is None or import_stop is None or export_stop is None:
        raise BillingError(f"session {session.session_id} is still open: only a stopped session has a billing record")
    started = _utc_ms("started_at", session.started_at)
    stopped = _utc_ms("stopped_at", stopped_at)
    duration_s = max(0.0, (stopped - started) / timedelta(seconds=1))
    import_wh = meter_delta("import", import_stop, session.meter_start_wh)
    export_wh = meter_delta("export", export_stop, session.export_start_wh)
    tariff = session.tariff
    price = tariff.price(import_wh, export_wh, duration_s) if tariff is not None else None
    meter_error = session.meter_error
    return BillingRecord(
        session_id=session.session_id,
        connector=session.connector,
        id_tag=session.id_tag,
        started_at=started,
        stopped_at=stopped,
        duration_s=duration_s,
        import_wh=import_wh,
        export_wh=export_wh,
        meter_import_start_wh=float(session.meter_start_wh),
        meter_import_stop_wh=float(import_stop),
        meter_export_start_wh=float(session.export_start_wh),
        meter_export_stop_wh=float(export_stop),
        stop_reason=reason,
        tariff=tariff,
        price=price,
        meter_error=meter_error[:_MAX_METER_ERROR] if meter_error is not None else None,
    )


# -------------------------------------------------------------------------------------------- times
def utc_iso(moment: datetime) -> str:
    """``2025-06-15T15:06:40.123Z``: UTC, milliseconds, ``Z`` (the form OCPP uses on the wire)."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def utc_ms(timestamp: float) -> datetime:
    """Seconds since the epoch as an aware UTC datetime, truncated to milliseconds (what a record keeps)."""
    return _utc_ms("time", timestamp)


def _utc_ms(name: str, timestamp: float) -> datetime:
    try:
        moment = datetime.fromtimestamp(timestamp, UTC)
    except (OverflowError, OSError, ValueError, TypeError) as exc:
        raise BillingError(f"{name} {timestamp!r} is not a usable time: {exc}") from exc
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _parse_utc(name: str, text: object) -> datetime:
    if not isinstance(text, str) or not _UTC_MS.fullmatch(text):
        raise BillingError(f"billing record {name} must be a UTC time like 2025-06-15T15:06:40.123Z, not {text!r}")
    try:
        return datetime.fromisoformat(text[:-1] + "+00:00")
    except ValueError as exc:
        raise BillingError(f"billing record {name} {text!r}: {exc}") from exc


# ------------------------------------------------------------------------------------------ helpers
def _price(name: str, value: object) -> Decimal:
    problem = f"{name} must be a price >= 0 and <= {PRICE_MAX} with at most {PRICE_MAX_DECIMALS} decimals"
    if isinstance(value, bool):
        raise TariffError(f"{problem}, not {value!r}")
    try:
        if isinstance(value, Decimal):
            amount = value
        elif isinstance(value, int):
            amount = Decimal(value)
        elif isinstance(value, float):
            amount = Decimal(repr(value))  # the shortest decimal form: 0.35 is 0.35, not 0.34999999999999997...
        elif isinstance(value, str):
            amount = Decimal(value.strip())
        else:
            raise TariffError(f"{problem}, not {value!r}")
    except InvalidOperation as exc:
        raise TariffError(f"{problem}, not {value!r}") from exc
    if not amount.is_finite() or amount < 0 or amount > PRICE_MAX:
        raise TariffError(f"{problem}, not {value!r}")
    exponent = amount.normalize().as_tuple().exponent
    assert isinstance(exponent, int)  # finite, checked above
    if -exponent > PRICE_MAX_DECIMALS:
        raise TariffError(f"{problem}, not {value!r}")
    return amount if not amount.is_zero() else Decimal(0)  # no "-0" and no "0E-12" in the JSON


def _quantity(name: str, value: float) -> Decimal:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= QUANTITY_MAX
    ):
        raise TariffError(f"{name} must be a finite number >= 0 and <= {QUANTITY_MAX:g}, not {value!r}")
    return Decimal(value) if isinstance(value, int) else Decimal(repr(float(value)))


def meter_delta(register: str, stop: float, start: float) -> float:
    """``stop - start`` of a meter register (Wh) taken in decimal, so 1000.1 - 1000.0 is 0.1, not
    0.09999999999990905; :class:`BillingError` naming ``register`` if it is negative or not a number."""
    try:
        delta = Decimal(repr(float(stop))) - Decimal(repr(float(start)))
    except (TypeError, ValueError, InvalidOperation) as exc:
        raise BillingError(f"{register} meter values {start!r} .. {stop!r} are not numbers") from exc
    if not delta.is_finite() or delta < 0:
        raise BillingError(f"{register} meter stop {stop!r} Wh is below its start {start!r} Wh")
    return float(delta)


def _decimal_text(name: str, text: object) -> Decimal:
    if not isinstance(text, str):
        raise BillingError(f"{name} must be a decimal string, not {text!r}")
    try:
        amount = Decimal(text)
    except InvalidOperation as exc:
        raise BillingError(f"{name} must be a decimal string, not {text!r}") from exc
    if not amount.is_finite():
        raise BillingError(f"{name} must be a finite decimal, not {text!r}")
    return amount


def _json_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise BillingError(f"billing record {name} must be a finite number >= 0, not {value!r}")
    return float(value)


def _object(what: str, data: object, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    error = TariffError if what == "tariff" else BillingError
    if not isinstance(data, dict):
        raise error(f"{what} must be a JSON object, not {data!r}")
    missing = [key for key in required if key not in data]
    if missing:
        raise error(f"{what} lacks the key {missing[0]!r}")
    unknown = sorted(str(key) for key in data if key not in required and key not in optional)
    if unknown:
        raise error(f"{what} has an unknown key {unknown[0]!r}")
    return dict(data)
