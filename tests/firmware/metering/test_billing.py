"""Tariffs, prices and billing records (firmware/metering/billing.py): the price table, rounding edges, a
property over random tariffs and sessions, tariff validation and tariff files, and the billing record's JSON."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.metering.billing import (
    BillingError,
    BillingRecord,
    Price,
    Tariff,
    TariffError,
    billing_record,
    load_tariff,
    meter_delta,
    minor_unit_digits,
)

T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z


@dataclasses.dataclass(frozen=True)
class FakeSession:
    """The fields billing_record reads, as the journal's SessionRecord has them."""

    session_id: str = "0123456789abcdef"
    connector: int = 1
    id_tag: str | None = "RFID-42"
    started_at: float = T0
    stopped_at: float | None = T0 + 3600
    meter_start_wh: float = 1000.0
    meter_stop_wh: float | None = 11_000.0
    export_start_wh: float = 200.0
    export_stop_wh: float | None = 200.0
    stop_reason: str | None = "EVDisconnected"
    tariff: Tariff | None = None
    meter_error: str | None = None


# ---------------------------------------------------------------------------------------------- prices
D = Decimal


@pytest.mark.parametrize(
    ("tariff", "import_wh", "export_wh", "duration_s", "expected"),
    [
        # energy only: 10 kWh at 0.39
        (Tariff("EUR", energy_per_kwh=D("0.39")), 10_000, 0, 3600, ("3.90", "0.00", "0.00", "3.90")),
        # time only: 1.5 h at 1.20 per hour
        (Tariff("EUR", time_per_hour=D("1.20")), 12_000, 0, 5400, ("0.00", "1.80", "0.00", "1.80")),
        # both: 22.5 kWh at 0.35 = 7.875 -> 7.88 (half up), 45 min at 2.00 = 1.50
        (Tariff("EUR", D("0.35"), D("2")), 22_500, 0, 2700, ("7.88", "1.50", "0.00", "9.38")),
        # export credit subtracted: 10 kWh at 0.30 minus 5 kWh at 0.10
        (Tariff("EUR", D("0.30"), export_credit_per_kwh=D("0.10")), 10_000, 5000, 60, ("3.00", "0.00", "0.50", "2.50")),
        # credit larger than the charges: the total is negative (the station owes the driver)
        (
            Tariff("EUR", D("0.30"), export_credit_per_kwh=D("0.25")),
            1000,
            20_000,
            60,
            ("0.30", "0.00", "5.00", "-4.70"),
        ),
        # nothing flowed, nothing charged
        (Tariff("EUR", D("0.39"), D("1"), D("0.1")), 0, 0, 0, ("0.00", "0.00", "0.00", "0.00")),
        # rounding edges: exactly half a cent goes up ...
        (Tariff("EUR", energy_per_kwh=D("5")), 1, 0, 0, ("0.01", "0.00", "0.00", "0.01")),
        # ... just under half a cent goes down
        (Tariff("EUR", energy_per_kwh=D("4.9999")), 1, 0, 0, ("0.00", "0.00", "0.00", "0.00")),
        # 100.5 Wh at 10/kWh is 1.005 exactly: half up to 1.01 (binary floats would say 1.00499... -> 1.00)
        (Tariff("EUR", energy_per_kwh=D("10")), 100.5, 0, 0, ("1.01", "0.00", "0.00", "1.01")),
        # a reading is taken by its decimal form: 1.005 Wh is 1.005, not the binary 1.00499999999999989...
        (Tariff("EUR", energy_per_kwh=D("1000")), 1.005, 0, 0, ("1.01", "0.00", "0.00", "1.01")),
        # 1 s at 18.00/h is 0.005: half up
        (Tariff("EUR", time_per_hour=D("18")), 0, 0, 1, ("0.00", "0.01", "0.00", "0.01")),
        # components are rounded one by one, then summed: 0.005 + 0.005 -> 0.01 + 0.01 = 0.02 (not 0.01)
        (Tariff("EUR", D("5"), D("18")), 1, 0, 1, ("0.01", "0.01", "0.00", "0.02")),
        # 1/3 of an hour at 1.00 is 0.3333... -> 0.33
        (Tariff("EUR", time_per_hour=D("1")), 0, 0, 1200, ("0.00", "0.33", "0.00", "0.33")),
        # currencies with other minor units (ISO 4217): yen has none, dinar has three decimals
        (Tariff("JPY", energy_per_kwh=D("31")), 1234.5, 0, 0, ("38", "0", "0", "38")),
        (Tariff("KWD", energy_per_kwh=D("0.0125")), 1000, 0, 0, ("0.013", "0.000", "0.000", "0.013")),
    ],
)
def test_price_table(
    tariff: Tariff, import_wh: float, export_wh: float, duration_s: float, expected: tuple[str, str, str, str]
) -> None:
    price = tariff.price(import_wh, export_wh, duration_s)
    assert (str(price.energy), str(price.time), str(price.export_credit), str(price.total)) == expected
    assert price.currency == tariff.currency
    assert price.text == f"{expected[3]} {tariff.currency}"
    assert Price.from_json(json.loads(json.dumps(price.to_json()))) == price


@pytest.mark.parametrize(
    ("currency", "digits"), [("EUR", 2), ("USD", 2), ("GBP", 2), ("CHF", 2), ("JPY", 0), ("KRW", 0), ("BHD", 3)]
)
def test_minor_units(currency: str, digits: int) -> None:
    assert minor_unit_digits(currency) == digits


def _exact(value: float) -> Fraction:
    return Fraction(Decimal(repr(float(value))))


prices = st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False, allow_infinity=False)
quantities = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    currency=st.sampled_from(["EUR", "JPY", "KWD"]),
    energy=prices,
    time=prices,
    credit=prices,
    import_wh=quantities,
    export_wh=quantities,
    duration_s=st.floats(min_value=0, max_value=1e7, allow_nan=False, allow_infinity=False),
)
def test_price_property_total_is_the_sum_and_each_component_is_within_half_a_minor_unit(
    currency: str,
    energy: Decimal,
    time: Decimal,
    credit: Decimal,
    import_wh: float,
    export_wh: float,
    duration_s: float,
) -> None:
    tariff = Tariff(currency, energy, time, credit)
    price = tariff.price(import_wh, export_wh, duration_s)
    assert price.total == price.energy + price.time - price.export_credit
    digits = minor_unit_digits(currency)
    half = Fraction(1, 2 * 10**digits)
    exact = {
        "energy": _exact(import_wh) * Fraction(energy) / 1000,
        "time": _exact(duration_s) * Fraction(time) / 3600,
        "export_credit": _exact(export_wh) * Fraction(credit) / 1000,
    }
    for name, value in exact.items():
        amount: Decimal = getattr(price, name)
        assert amount.as_tuple().exponent == -digits  # always shown with the currency's decimals
        assert abs(Fraction(amount) - value) <= half, (name, amount, value)
        # ROUND_HALF_UP: an exact half goes up, so the rounded value is never below value - half.
        assert Fraction(amount) - value > -half or Fraction(amount) - value == half


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1.0, 0, 0), "import_wh must be a finite number >= 0"),
        ((0, float("nan"), 0), "export_wh must be a finite number"),
        ((0, 0, float("inf")), "duration_s must be a finite number"),
        ((True, 0, 0), "import_wh must be"),
        (("10", 0, 0), "import_wh must be"),
        ((2e12, 0, 0), "import_wh must be a finite number >= 0 and <= 1e\\+12"),
    ],
)
def test_price_refuses_bad_quantities(args: tuple[object, object, object], message: str) -> None:
    with pytest.raises(TariffError, match=message):
        Tariff("EUR", energy_per_kwh=D("1")).price(*args)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- tariffs
def test_prices_accept_decimal_int_str_and_float_exactly() -> None:
    tariff = Tariff("EUR", energy_per_kwh=0.35, time_per_hour=2, export_credit_per_kwh=" 0.1 ")  # type: ignore[arg-type]
    assert (tariff.energy_per_kwh, tariff.time_per_hour, tariff.export_credit_per_kwh) == (D("0.35"), D(2), D("0.1"))
    assert all(isinstance(v, Decimal) for v in (tariff.energy_per_kwh, tariff.time_per_hour))
    assert Tariff("EUR").to_json() == {
        "currency": "EUR",
        "energy_per_kwh": "0",
        "time_per_hour": "0",
        "export_credit_per_kwh": "0",
        "text": "",
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"currency": "eur"}, "currency must be an ISO 4217 code of 3 upper-case letters"),
        ({"currency": "EURO"}, "currency must be"),
        ({"currency": "EU"}, "currency must be"),
        ({"currency": " EUR"}, "currency must be"),
        ({"currency": 978}, "currency must be"),
        ({"energy_per_kwh": D("-0.01")}, "energy_per_kwh must be a price >= 0"),
        ({"time_per_hour": -1}, "time_per_hour must be a price >= 0"),
        ({"export_credit_per_kwh": "-0.1"}, "export_credit_per_kwh must be a price >= 0"),
        ({"energy_per_kwh": "abc"}, "energy_per_kwh must be a price"),
        ({"energy_per_kwh": D("NaN")}, "energy_per_kwh must be a price"),
        ({"energy_per_kwh": float("inf")}, "energy_per_kwh must be a price"),
        ({"energy_per_kwh": True}, "energy_per_kwh must be a price"),
        ({"energy_per_kwh": None}, "energy_per_kwh must be a price"),
        ({"energy_per_kwh": "0.123456789"}, "at most 8 decimals"),
        ({"time_per_hour": "1000001"}, "<= 1000000"),
        ({"text": "x" * 251}, "text must be at most 250 characters"),
        ({"text": "0.39 EUR/kWh | 1 EUR/h"}, "must not contain '\\|'"),
        ({"text": 42}, "text must be a string"),
    ],
)
def test_bad_tariffs_are_refused_with_the_field_named(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"currency": "EUR", **kwargs}
    with pytest.raises(TariffError, match=message):
        Tariff(**args)  # type: ignore[arg-type]


def test_tariff_limits_are_inclusive() -> None:
    assert len(Tariff("EUR", text="x" * 250).text) == 250
    assert Tariff("EUR", energy_per_kwh=D("0.12345678")).energy_per_kwh == D("0.12345678")
    assert Tariff("EUR", energy_per_kwh=D("0.350000000000")).energy_per_kwh == D("0.35")  # trailing zeros are fine


@settings(max_examples=100, deadline=None)
@given(
    currency=st.sampled_from(["EUR", "USD", "JPY"]),
    energy=st.decimals(min_value=0, max_value=10**6, places=8),
    time=st.decimals(min_value=0, max_value=10**6, places=0),
    text=st.text(max_size=250).filter(lambda t: "|" not in t),
)
def test_tariff_json_round_trip_is_exact(currency: str, energy: Decimal, time: Decimal, text: str) -> None:
    tariff = Tariff(currency, energy, time, D("0.1"), text)
    data = json.loads(json.dumps(tariff.to_json()))
    again = Tariff.from_json(data)
    assert again == tariff and again.to_json() == tariff.to_json()
    assert all("E" not in data[k] for k in ("energy_per_kwh", "time_per_hour"))  # plain decimals, no exponent


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("EUR", "tariff must be a JSON object"),
        ({"energy_per_kwh": "1"}, "tariff lacks the key 'currency'"),
        ({"currency": "EUR", "vat": "0.19"}, "tariff has an unknown key 'vat'"),
        ({"currency": "EUR", "energy_per_kwh": 0.39}, "tariff.energy_per_kwh must be a decimal string"),
    ],
)
def test_tariff_from_json_refuses_bad_data(data: object, message: str) -> None:
    with pytest.raises(TariffError, match=message):
        Tariff.from_json(data)


# ----------------------------------------------------------------------------------------- tariff files
def test_load_tariff(tmp_path: Path) -> None:
    path = tmp_path / "tariff.toml"
    path.write_text(
        '# site tariff\n[tariff]\ncurrency = "EUR"\nenergy_per_kwh = "0.39"\ntime_per_hour = 1.2\n'
        'export_credit_per_kwh = 0\ntext = "0.39 EUR/kWh, 1.20 EUR/h"\n',
        encoding="utf-8",
    )
    assert load_tariff(path) == Tariff("EUR", D("0.39"), D("1.2"), D(0), "0.39 EUR/kWh, 1.20 EUR/h")
    (tmp_path / "minimal.toml").write_text('[tariff]\ncurrency = "CHF"\n', encoding="utf-8")
    assert load_tariff(tmp_path / "minimal.toml") == Tariff("CHF")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the tariff file"),
        ("[tariff\n", "not a valid TOML file"),
        (b"\xff\xfe[tariff]", "not a valid TOML file"),
        ('currency = "EUR"\n', "needs a \\[tariff\\] table"),
        ('tariff = "EUR"\n', "needs a \\[tariff\\] table"),
        ("[tariff]\nenergy_per_kwh = 1\n", "\\[tariff\\] needs the key 'currency'"),
        ('[tariff]\ncurrency = "EUR"\nprice = 1\n', "\\[tariff\\] has unknown key 'price'"),
        ('[tariff]\ncurrency = "EUR"\nenergy_per_kwh = -0.39\n', "\\[tariff\\] energy_per_kwh must be a price >= 0"),
        ('[tariff]\ncurrency = "EUR"\ntime_per_hour = "1,20"\n', "\\[tariff\\] time_per_hour must be a price"),
        ('[tariff]\ncurrency = "euro"\n', "\\[tariff\\] currency must be an ISO 4217 code"),
        ('[tariff]\ncurrency = "EUR"\ntext = "a|b"\n', "\\[tariff\\] text must not contain"),
    ],
)
def test_tariff_file_errors_name_the_file_and_the_key(
    tmp_path: Path, content: str | bytes | None, message: str
) -> None:
    path = tmp_path / "site-tariff.toml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(TariffError, match=message) as info:
        load_tariff(path)
    assert str(info.value).startswith(f"{path}: ")


# ------------------------------------------------------------------------------------- billing records
def test_billing_record_of_a_priced_session() -> None:
    tariff = Tariff("EUR", D("0.39"), D("1.20"), D("0.10"), "0.39 EUR/kWh")
    session = FakeSession(
        started_at=T0 + 0.1239, stopped_at=T0 + 5400.9999, export_stop_wh=1200.0, tariff=tariff, meter_error=None
    )
    record = billing_record(session)
    assert record.started_at == datetime(2025, 6, 15, 15, 6, 40, 123_000, tzinfo=UTC)  # milliseconds, truncated
    assert record.stopped_at == datetime(2025, 6, 15, 16, 36, 40, 999_000, tzinfo=UTC)
    assert record.duration_s == pytest.approx(5400.876)
    assert (record.import_wh, record.export_wh) == (10_000.0, 1000.0)
    assert record.price == tariff.price(10_000.0, 1000.0, record.duration_s)
    assert record.price is not None and str(record.price.total) == str(D("3.90") + D("1.80") - D("0.10"))
    data = record.to_json()
    assert data == {
        "format": 1,
        "session_id": "0123456789abcdef",
        "connector": 1,
        "id_tag": "RFID-42",
        "started_at": "2025-06-15T15:06:40.123Z",
        "stopped_at": "2025-06-15T16:36:40.999Z",
        "duration_s": record.duration_s,
        "import_wh": 10_000.0,
        "export_wh": 1000.0,
        "meter_import_start_wh": 1000.0,
        "meter_import_stop_wh": 11_000.0,
        "meter_export_start_wh": 200.0,
        "meter_export_stop_wh": 1200.0,
        "stop_reason": "EVDisconnected",
        "tariff": tariff.to_json(),
        "price": {"currency": "EUR", "energy": "3.90", "time": "1.80", "export_credit": "0.10", "total": "5.60"},
        "meter_error": None,
    }
    text = json.dumps(data, allow_nan=False)  # plain JSON types only
    assert BillingRecord.from_json(json.loads(text)) == record
    assert record.price_text == "5.60 EUR"


def test_billing_record_without_a_tariff_has_no_price() -> None:
    record = billing_record(FakeSession(meter_error="import register went backwards"))
    assert record.tariff is None and record.price is None and record.price_text == "no tariff configured"
    assert record.to_json()["price"] is None and record.to_json()["tariff"] is None
    assert record.meter_error == "import register went backwards"
    assert BillingRecord.from_json(record.to_json()) == record


def test_billing_record_energies_are_decimal_differences() -> None:
    record = billing_record(FakeSession(meter_start_wh=1000.0, meter_stop_wh=1000.1, export_stop_wh=200.3))
    assert (record.import_wh, record.export_wh) == (0.1, 0.3)  # not 0.09999999999990905 and 0.30000000000001137
    assert meter_delta("import", 0.3, 0.1) == 0.2


def test_billing_record_duration_is_never_negative() -> None:
    record = billing_record(FakeSession(started_at=T0, stopped_at=T0 - 30))  # the wall clock went back
    assert record.duration_s == 0.0


@pytest.mark.parametrize(
    ("session", "message"),
    [
        (FakeSession(stopped_at=None, meter_stop_wh=None, export_stop_wh=None, stop_reason=None), "still open"),
        (FakeSession(meter_stop_wh=999.0), "import meter stop 999.0 Wh is below its start 1000.0 Wh"),
        (FakeSession(export_stop_wh=100.0), "export meter stop"),
        (FakeSession(started_at=1e300), "started_at 1e\\+300 is not a usable time"),
    ],
)
def test_billing_record_refuses_unusable_sessions(session: FakeSession, message: str) -> None:
    with pytest.raises(BillingError, match=message):
        billing_record(session)


def _good_json() -> dict[str, object]:
    return billing_record(FakeSession(tariff=Tariff("EUR", D("0.39")))).to_json()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 2}, "format must be 1"),
        ({"extra": 1}, "unknown key 'extra'"),
        ({"session_id": ""}, "session_id must be a non-empty string"),
        ({"connector": 0}, "connector must be an integer >= 1"),
        ({"connector": True}, "connector must be an integer >= 1"),
        ({"id_tag": 5}, "id_tag must be a string or null"),
        ({"stop_reason": None}, "stop_reason must be a non-empty string"),
        ({"import_wh": -1}, "import_wh must be a finite number >= 0"),
        ({"duration_s": "60"}, "duration_s must be a finite number"),
        ({"started_at": "2025-06-15 15:06:40"}, "started_at must be a UTC time"),
        ({"stopped_at": "2025-13-15T15:06:40.000Z"}, "stopped_at"),
        ({"price": None}, "a price needs the tariff"),
        ({"tariff": None}, "a price needs the tariff"),
        ({"tariff": {"currency": "USD", "energy_per_kwh": "0.39"}}, "same currency"),
        ({"price": {"currency": "EUR", "energy": "3.9", "time": "0.00", "export_credit": "0.00", "total": "3.90"}},
         "price.energy must be an amount >= 0 with exactly 2 decimals"),
        ({"price": {"currency": "EUR", "energy": "3.90", "time": "0.00", "export_credit": "0.00", "total": "3.91"}},
         "price.total 3.91 is not energy \\+ time - export_credit"),
        ({"price": {"currency": "EUR", "energy": "3.90", "time": "x", "export_credit": "0.00", "total": "3.90"}},
         "price.time must be a decimal string"),
    ],
)  # fmt: skip
def test_billing_record_from_json_refuses_bad_data(change: dict[str, object], message: str) -> None:
    data = {**_good_json(), **change}
    with pytest.raises(BillingError, match=message):
        BillingRecord.from_json(data)


def test_billing_record_from_json_needs_every_key() -> None:
    data = _good_json()
    del data["meter_error"]
    with pytest.raises(BillingError, match="lacks the key 'meter_error'"):
        BillingRecord.from_json(data)
    with pytest.raises(BillingError, match="must be a JSON object"):
        BillingRecord.from_json([])


@settings(max_examples=100, deadline=None)
@given(
    start=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    imported=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    export_start=st.floats(min_value=0, max_value=1e9, allow_nan=False),
    exported=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    started_at=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    duration=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    priced=st.booleans(),
)
def test_billing_record_json_round_trip_is_exact(
    start: float,
    imported: float,
    export_start: float,
    exported: float,
    started_at: float,
    duration: float,
    priced: bool,
) -> None:
    session = FakeSession(
        started_at=started_at,
        stopped_at=started_at + duration,
        meter_start_wh=start,
        meter_stop_wh=start + imported,
        export_start_wh=export_start,
        export_stop_wh=export_start + exported,
        tariff=Tariff("EUR", D("0.39"), D("1.5"), D("0.08")) if priced else None,
    )
    record = billing_record(session)
    assert BillingRecord.from_json(json.loads(json.dumps(record.to_json(), allow_nan=False))) == record
    if record.price is not None:
        assert record.price.total == record.price.energy + record.price.time - record.price.export_credit
