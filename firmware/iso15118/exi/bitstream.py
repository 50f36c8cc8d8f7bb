"""Bit-packed EXI streams (W3C EXI 1.0 Second Edition, alignment option bit-packed, no compression).

Items are packed most significant bit first (section 7.1); an n-bit unsigned integer takes exactly n
bits (7.1.9); an Unsigned Integer is a sequence of octets carrying 7 bits each, least significant group
first, the high bit of each octet set while more octets follow (7.1.6).
"""

from .errors import ExiDecodeError

# Section 5: the header of every stream here is one byte, distinguishing bits 10, no options (presence
# bit 0), final version 1 (0 0000); no "$EXI" cookie.
HEADER = 0x80

# Longest Unsigned Integer we accept, in octets: 10 octets carry 70 bits, enough for xs:unsignedLong
# (64 bits). Unbounded xs:integer values (xmldsig X509SerialNumber) get a larger, still bounded allowance.
MAX_UINT_OCTETS = 10
MAX_BIG_UINT_OCTETS = 64


class BitWriter:
    """Collects bits; keeps at most a few bytes in an integer accumulator so appends stay O(1)."""

    __slots__ = ("_acc", "_buf", "_nbits")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._acc = 0
        self._nbits = 0

    def write_bits(self, value: int, n: int) -> None:
        """Append ``value`` as an n-bit unsigned integer (7.1.9); n = 0 writes nothing."""
        if n == 0:
            return
        self._acc = (self._acc << n) | value
        self._nbits += n
        if self._nbits >= 64:
            self._flush()

    def _flush(self) -> None:
        whole = self._nbits >> 3
        rest = self._nbits & 7
        self._buf += (self._acc >> rest).to_bytes(whole, "big")
        self._acc &= (1 << rest) - 1
        self._nbits = rest

    def write_uint(self, value: int) -> None:
        """Append an Unsigned Integer (7.1.6): 7-bit groups, least significant first."""
        if value < 0x80:
            self.write_bits(value, 8)
            return
        while value >= 0x80:
            self.write_bits((value & 0x7F) | 0x80, 8)
            value >>= 7
        self.write_bits(value, 8)

    def write_bytes(self, data: bytes) -> None:
        """Append raw octets (the body of a Binary value, 7.1.1), not necessarily byte aligned."""
        if not data:
            return
        if self._nbits == 0:
            self._buf += data
            return
        self._acc = (self._acc << (8 * len(data))) | int.from_bytes(data, "big")
        self._nbits += 8 * len(data)
        self._flush()

    def getvalue(self) -> bytes:
        """The stream so far, the last byte padded with zero bits."""
        out = bytes(self._buf)
        if self._nbits:
            pad = (-self._nbits) & 7
            out += (self._acc << pad).to_bytes((self._nbits + pad) >> 3, "big")
        return out


class BitReader:
    """Reads bits from a byte string; every read past the end raises ExiDecodeError."""

    __slots__ = ("_data", "_limit", "_pos")

    def __init__(self, data: bytes, start_bit: int = 0) -> None:
        self._data = data
        self._pos = start_bit
        self._limit = 8 * len(data)

    @property
    def position(self) -> int:
        """The number of bits consumed."""
        return self._pos

    def remaining_bits(self) -> int:
        """How many bits are left to read."""
        return self._limit - self._pos

    def read_bits(self, n: int) -> int:
        """Read an n-bit unsigned integer (7.1.9)."""
        if n == 0:
            return 0
        pos = self._pos
        end = pos + n
        if end > self._limit:
            raise ExiDecodeError(f"stream truncated: needed {n} bits at bit {pos}, {self._limit - pos} left")
        first = pos >> 3
        last = (end + 7) >> 3
        chunk = int.from_bytes(self._data[first:last], "big")
        self._pos = end
        return (chunk >> ((last << 3) - end)) & ((1 << n) - 1)

    def read_uint(self, max_octets: int = MAX_UINT_OCTETS) -> int:
        """Read an Unsigned Integer (7.1.6) of at most ``max_octets`` octets."""
        value = 0
        shift = 0
        for _ in range(max_octets):
            octet = self.read_bits(8)
            value |= (octet & 0x7F) << shift
            if octet < 0x80:
                return value
            shift += 7
        raise ExiDecodeError(f"unsigned integer longer than {max_octets} octets at bit {self._pos}")

    def read_bytes(self, n: int) -> bytes:
        """Read n raw octets; n is checked against the input left before anything is allocated."""
        if 8 * n > self._limit - self._pos:
            raise ExiDecodeError(f"stream truncated: {n} octets announced at bit {self._pos}, fewer left")
        if n == 0:
            return b""
        pos = self._pos
        self._pos = pos + 8 * n
        if pos & 7 == 0:
            return bytes(self._data[pos >> 3 : (pos >> 3) + n])
        shift = pos & 7
        first = pos >> 3
        chunk = int.from_bytes(self._data[first : first + n + 1], "big")
        return ((chunk >> (8 - shift)) & ((1 << (8 * n)) - 1)).to_bytes(n, "big")
