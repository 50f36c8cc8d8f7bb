"""EXI datatype representations (W3C EXI 1.0 2nd ed. section 7) and their JSON values."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.iso15118.exi import ExiDecodeError, ExiEncodeError
from firmware.iso15118.exi.bitstream import BitReader, BitWriter
from firmware.iso15118.exi.datatypes import (
    Base64BinaryType,
    BooleanType,
    BoundedIntType,
    Datatype,
    EnumType,
    HexBinaryType,
    SignedIntType,
    StringType,
    UnsignedIntType,
    collapse_whitespace,
    from_spec,
)


def encode(datatype: Datatype, value: Any) -> str:
    writer = BitWriter()
    datatype.encode(writer, value, "x")
    return writer.getvalue().hex()


def decode(datatype: Datatype, hex_text: str) -> Any:
    return datatype.decode(BitReader(bytes.fromhex(hex_text)), "x")


@pytest.mark.parametrize(
    ("datatype", "value", "hex_text"),
    [
        # 7.1.2: one bit.
        (BooleanType(), True, "80"),
        (BooleanType(), False, "00"),
        # 7.1.5 / 7.1.9: range <= 4096 is an n-bit offset from the minimum (Priority 1..20 -> 5 bits).
        (BoundedIntType(1, 20, 5), 1, "00"),
        (BoundedIntType(1, 20, 5), 20, "98"),
        (BoundedIntType(-128, 127, 8), -128, "00"),
        (BoundedIntType(-128, 127, 8), 0, "80"),
        # 7.1.5: lower bound >= 0 -> Unsigned Integer.
        (UnsignedIntType(0, 65535), 300, "ac02"),
        # 7.1.5: otherwise sign bit, then magnitude (minus one when negative).
        (SignedIntType(-32768, 32767), 5, "0280"),
        (SignedIntType(-32768, 32767), -1, "8000"),
        (SignedIntType(-32768, 32767), -32768, "ffff8080"),
        # 7.3.3 with an empty value table: length + 2, then code points as Unsigned Integers.
        (StringType(), "", "02"),
        (StringType(), "ab", "046162"),
        (StringType(), "€", "03ac41"),
        # 7.1.1: length, then the octets.
        (HexBinaryType(), "0A0B", "020a0b"),
        (Base64BinaryType(), "AAEC", "03000102"),
        # 7.2: n-bit index in schema order.
        (EnumType(["A", "B", "C"], 2), "C", "80"),
    ],
)
def test_values_encode_to_known_bits_and_back(datatype: Datatype, value: Any, hex_text: str) -> None:
    assert encode(datatype, value) == hex_text
    assert decode(datatype, hex_text) == value


def test_hex_binary_is_decoded_upper_case_and_accepts_bytes() -> None:
    assert encode(HexBinaryType(), "0a0b") == encode(HexBinaryType(), b"\x0a\x0b")
    assert decode(HexBinaryType(), "020a0b") == "0A0B"


def test_base64_accepts_bytes() -> None:
    assert encode(Base64BinaryType(), b"\x00\x01\x02") == "03000102"


@pytest.mark.parametrize(
    ("datatype", "value", "message"),
    [
        (BooleanType(), 1, "expected a boolean"),
        (BoundedIntType(1, 20, 5), 0, "outside the schema's range 1..20"),
        (BoundedIntType(1, 20, 5), 21, "outside"),
        (BoundedIntType(1, 20, 5), True, "expected an integer"),
        (UnsignedIntType(0, 255), -1, "outside"),
        (SignedIntType(-128, 127), "5", "expected an integer"),
        (StringType(0, 3), "abcd", "length 4 outside the schema's 0..3"),
        (StringType(), 5, "expected a string"),
        (HexBinaryType(), "0g", "hex digits"),
        (HexBinaryType(), "abc", "hex digits"),
        (HexBinaryType(0, 2), "000102", "length 3"),
        (Base64BinaryType(), "!!", "not valid base64"),
        (Base64BinaryType(16, 16), "AAEC", "length 3 outside"),
        (EnumType(["A", "B"], 1), "C", "not one of"),
        (EnumType(["A", "B"], 1), ["A"], "not one of"),
    ],
)
def test_values_that_do_not_fit_the_type_are_encode_errors(datatype: Datatype, value: Any, message: str) -> None:
    with pytest.raises(ExiEncodeError, match=message):
        encode(datatype, value)


@pytest.mark.parametrize(
    ("datatype", "hex_text", "message"),
    [
        (StringType(), "00", "string table reference 0"),
        (StringType(), "01", "string table reference 1"),
        (StringType(), "7f", "stream is shorter"),
        (StringType(), "03ffffff7f", "longer than 3 octets|not Unicode"),
        (EnumType(["A", "B", "C"], 2), "c0", "index 3 beyond"),
        (BoundedIntType(1, 20, 5), "f8", "above the schema's maximum"),
        (UnsignedIntType(0, 255), "ff03", "outside"),
    ],
)
def test_impossible_values_are_decode_errors(datatype: Datatype, hex_text: str, message: str) -> None:
    with pytest.raises(ExiDecodeError, match=message):
        decode(datatype, hex_text)


def test_token_types_are_collapsed_like_the_jaxb_layer_does() -> None:
    identifier = StringType(0, None, collapse=True)
    assert encode(identifier, " a \t b\n") == encode(identifier, "a b")
    assert identifier.is_empty("  ")
    assert collapse_whitespace("\u00a0x  y ") == "\u00a0x y"  # only XML white space collapses


def test_untyped_values_map_back_to_json_values() -> None:
    assert UnsignedIntType(0, 255).from_text(" 7 ", "x") == 7
    assert BooleanType().from_text("1", "x") is True
    assert HexBinaryType().from_text("0a", "x") == "0A"
    assert EnumType(["A"], 0).from_text("A", "x") == "A"
    with pytest.raises(ExiDecodeError):
        SignedIntType(None, None).from_text("1.5", "x")


def test_table_specs_build_the_matching_types() -> None:
    assert isinstance(from_spec(["nbit", 0, 7, 3]), BoundedIntType)
    assert isinstance(from_spec(["string", 0, None, True]), StringType)
    with pytest.raises(ValueError, match="unknown datatype"):
        from_spec(["decimal"])


@given(st.text(max_size=50))
def test_any_unicode_string_round_trips(text: str) -> None:
    writer = BitWriter()
    StringType().encode(writer, text, "x")
    assert StringType().decode(BitReader(writer.getvalue()), "x") == text


@given(st.integers(-(2**80), 2**80))
def test_unbounded_integers_round_trip(value: int) -> None:
    writer = BitWriter()
    SignedIntType(None, None).encode(writer, value, "x")
    assert SignedIntType(None, None).decode(BitReader(writer.getvalue()), "x") == value
