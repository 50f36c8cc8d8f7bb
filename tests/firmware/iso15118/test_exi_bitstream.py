"""Bit-packed stream primitives (W3C EXI 1.0 2nd ed. 6.2, 7.1.1, 7.1.6, 7.1.9)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.iso15118.exi import ExiDecodeError
from firmware.iso15118.exi.bitstream import BitReader, BitWriter
from firmware.iso15118.exi.grammar import bits_for


@pytest.mark.parametrize(
    ("value", "octets"),
    [
        # 7.1.6: 7-bit groups, least significant first, high bit set while more follow.
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8001"),
        (300, "ac02"),
        (16383, "ff7f"),
        (16384, "808001"),
        (2**32 - 1, "ffffffff0f"),
        (2**64 - 1, "ffffffffffffffffff01"),
    ],
)
def test_unsigned_integer_octets(value: int, octets: str) -> None:
    writer = BitWriter()
    writer.write_uint(value)
    assert writer.getvalue().hex() == octets
    assert BitReader(bytes.fromhex(octets)).read_uint() == value


def test_event_code_parts_of_example_6_2_are_three_one_one_bits() -> None:
    # Table 6-1: six first-level values need 3 bits, the 2nd and 3rd parts 1 bit each; PI = 5.1.1.
    assert (bits_for(6), bits_for(2), bits_for(2), bits_for(1)) == (3, 1, 1, 0)
    writer = BitWriter()
    writer.write_bits(5, 3)
    writer.write_bits(1, 1)
    writer.write_bits(1, 1)
    assert writer.getvalue() == bytes([0b10111000])


def test_writer_pads_the_last_byte_with_zero_bits_msb_first() -> None:
    writer = BitWriter()
    writer.write_bits(0b1, 1)
    writer.write_bits(0b01, 2)
    writer.write_bits(0, 0)
    assert writer.getvalue() == bytes([0b10100000])


def test_unaligned_bytes_round_trip() -> None:
    writer = BitWriter()
    writer.write_bits(0b101, 3)
    writer.write_bytes(bytes(range(20)))
    writer.write_bits(1, 1)
    data = writer.getvalue()
    reader = BitReader(data)
    assert reader.read_bits(3) == 0b101
    assert reader.read_bytes(20) == bytes(range(20))
    assert reader.read_bits(1) == 1


@given(st.lists(st.tuples(st.integers(0, 64), st.integers(0, 2**64 - 1)), max_size=40))
def test_n_bit_values_round_trip(items: list[tuple[int, int]]) -> None:
    writer = BitWriter()
    for width, value in items:
        writer.write_bits(value & ((1 << width) - 1), width)
    reader = BitReader(writer.getvalue())
    for width, value in items:
        assert reader.read_bits(width) == value & ((1 << width) - 1)


@given(st.lists(st.integers(0, 2**70), max_size=30), st.integers(0, 7))
def test_unsigned_integers_round_trip_at_any_bit_offset(values: list[int], offset: int) -> None:
    writer = BitWriter()
    writer.write_bits(0, offset)
    for value in values:
        writer.write_uint(value)
    reader = BitReader(writer.getvalue())
    reader.read_bits(offset)
    assert [reader.read_uint(11) for _ in values] == values


def test_reading_past_the_end_is_a_decode_error() -> None:
    reader = BitReader(b"\xff")
    reader.read_bits(7)
    with pytest.raises(ExiDecodeError, match="truncated"):
        reader.read_bits(2)


def test_an_overlong_unsigned_integer_is_rejected() -> None:
    with pytest.raises(ExiDecodeError, match="longer than 3 octets"):
        BitReader(b"\x80\x80\x80\x01").read_uint(3)


def test_a_byte_count_beyond_the_input_is_rejected_before_reading() -> None:
    with pytest.raises(ExiDecodeError, match="truncated"):
        BitReader(b"\x00\x00").read_bytes(1_000_000)
