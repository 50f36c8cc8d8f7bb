"""EXI datatype representations (W3C EXI 1.0 Second Edition, section 7) and their JSON values.

A datatype is described in the grammar tables by a small list (see ``from_spec``); at run time each is an
object with ``encode(writer, value, path)`` and ``decode(reader, path)``. JSON values follow the
``iso15118`` package's EXIficient JSON: integers as numbers, booleans as true/false, enumerations as their
literal, hexBinary as upper-case hex, base64Binary as padded standard base64, strings as strings.

String values are value content items (7.3): the codec runs with valuePartitionCapacity 0 (as the
``iso15118`` package configures EXIficient), so no value is ever added to the string table, every lookup
misses and every string is written as a literal with length + 2 (7.3.3).
"""

import base64
import binascii
import re
from typing import Any, Protocol

from .bitstream import MAX_BIG_UINT_OCTETS, BitReader, BitWriter
from .errors import ExiDecodeError, ExiEncodeError

_HEX_RE = re.compile(r"(?:[0-9A-Fa-f]{2})*")
_XML_SPACE_RE = re.compile(r"[ \t\r\n]+")
_MAX_CODE_POINT = 0x10FFFF


class Datatype(Protocol):
    """What the codec needs of a datatype representation."""

    def encode(self, writer: BitWriter, value: Any, path: str) -> None: ...

    def decode(self, reader: BitReader, path: str) -> Any: ...

    def from_text(self, text: str, path: str) -> Any:
        """The JSON value of an untyped (string) value of this type, as a schema deviation carries it."""
        ...

    def is_empty(self, value: Any) -> bool:
        """True if ``value`` has an empty lexical form: EXIficient then emits no CH event at all."""
        ...

    def empty_value(self, path: str) -> Any:
        """The JSON value of an element without character content (raises if the type cannot be empty)."""
        ...


class _NeverEmpty:
    """Mixin for types whose lexical form is never empty."""

    __slots__ = ()

    def is_empty(self, value: Any) -> bool:
        return False

    def empty_value(self, path: str) -> Any:
        raise ExiDecodeError(f"{path}: element has no value")


class _MaybeEmpty:
    """Mixin for string and binary types, whose empty lexical form is legal."""

    __slots__ = ()

    def is_empty(self, value: Any) -> bool:
        return isinstance(value, str | bytes | bytearray) and len(value) == 0

    def empty_value(self, path: str) -> Any:
        return ""


def collapse_whitespace(text: str) -> str:
    """XML Schema whiteSpace = collapse: runs of space, tab, CR and LF become one space, ends trimmed."""
    return _XML_SPACE_RE.sub(" ", text).strip(" ")


def _type_name(value: object) -> str:
    return type(value).__name__


def _check_length(n: int, lo: int, hi: int | None, what: str, path: str) -> None:
    if n < lo or (hi is not None and n > hi):
        bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ExiEncodeError(f"{path}: {what} length {n} outside the schema's {bound}")


def write_string_value(writer: BitWriter, text: str) -> None:
    """A value content item as a string literal: Unsigned Integer L+2, then L code points (7.1.10, 7.3.3)."""
    writer.write_uint(len(text) + 2)
    for char in text:
        writer.write_uint(ord(char))


def read_string_value(reader: BitReader, path: str) -> str:
    """Inverse of ``write_string_value``; string-table hits (0 or 1) cannot occur with an empty table."""
    tag = reader.read_uint()
    if tag < 2:
        raise ExiDecodeError(f"{path}: string table reference {tag} but the value partitions are empty")
    length = tag - 2
    # Each character takes at least one octet: reject lengths the remaining input cannot hold.
    if 8 * length > reader.remaining_bits():
        raise ExiDecodeError(f"{path}: string of {length} characters announced, stream is shorter")
    chars = []
    for _ in range(length):
        code = reader.read_uint(3)
        if code > _MAX_CODE_POINT:
            raise ExiDecodeError(f"{path}: character code point {code:#x} is not Unicode")
        chars.append(chr(code))
    return "".join(chars)


class StringType(_MaybeEmpty):
    """exi:string (7.1.10) with the schema's length facets checked on encode.

    ``collapse`` marks types with whiteSpace = collapse (derived from xs:token, e.g. xs:ID): their values
    are collapsed before encoding and after decoding, as the JAXB layer in front of EXIficient does.
    """

    __slots__ = ("collapse", "max_len", "min_len")

    def __init__(self, min_len: int = 0, max_len: int | None = None, collapse: bool = False) -> None:
        self.min_len = min_len
        self.max_len = max_len
        self.collapse = collapse

    def encode(self, writer: BitWriter, value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise ExiEncodeError(f"{path}: expected a string, got {_type_name(value)}")
        if self.collapse:
            value = collapse_whitespace(value)
        _check_length(len(value), self.min_len, self.max_len, "string", path)
        write_string_value(writer, value)

    def decode(self, reader: BitReader, path: str) -> str:
        text = read_string_value(reader, path)
        return collapse_whitespace(text) if self.collapse else text

    def from_text(self, text: str, path: str) -> str:
        return collapse_whitespace(text) if self.collapse else text

    def is_empty(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        return not (collapse_whitespace(value) if self.collapse else value)


class BooleanType(_NeverEmpty):
    """exi:boolean without pattern facets: one bit, 0 false, 1 true (7.1.2)."""

    __slots__ = ()

    def encode(self, writer: BitWriter, value: Any, path: str) -> None:
        if not isinstance(value, bool):
            raise ExiEncodeError(f"{path}: expected a boolean, got {_type_name(value)}")
        writer.write_bits(1 if value else 0, 1)

    def decode(self, reader: BitReader, path: str) -> bool:
        return reader.read_bits(1) == 1

    def from_text(self, text: str, path: str) -> bool:
        word = text.strip()
        if word in ("true", "1"):
            return True
        if word in ("false", "0"):
            return False
        raise ExiDecodeError(f"{path}: untyped value {text!r:.40} is not a boolean")


def _int_from_text(text: str, path: str) -> int:
    word = text.strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,40}", word):
        raise ExiDecodeError(f"{path}: untyped value {text!r:.40} is not an integer")
    return int(word)


def _check_int(value: Any, lo: int | None, hi: int | None, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ExiEncodeError(f"{path}: expected an integer, got {_type_name(value)}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ExiEncodeError(f"{path}: {value} outside the schema's range {lo}..{hi}")
    return value


class BoundedIntType(_NeverEmpty):
    """An integer whose facets bound it to 4096 values or fewer: n-bit offset from the minimum (7.1.5)."""

    __slots__ = ("bits", "hi", "lo")

    def __init__(self, lo: int, hi: int, bits: int) -> None:
        self.lo = lo
        self.hi = hi
        self.bits = bits

    def encode(self, writer: BitWriter, value: Any, path: str) -> None:
        writer.write_bits(_check_int(value, self.lo, self.hi, path) - self.lo, self.bits)

    def decode(self, reader: BitReader, path: str) -> int:
        value = self.lo + reader.read_bits(self.bits)
        if value > self.hi:
            raise ExiDecodeError(f"{path}: {value} above the schema's maximum {self.hi}")
        return value

    def from_text(self, text: str, path: str) -> int:
        return _int_from_text(text, path)


class UnsignedIntType(_NeverEmpty):
    """An integer with a lower bound >= 0: Unsigned Integer (7.1.5, 7.1.6)."""

    __slots__ = ("hi", "lo", "octets")

    def __init__(self, lo: int, hi: int | None) -> None:
        self.lo = lo
        self.hi = hi
        # Octets needed for the largest value, so a decoder never reads an absurd run of continuation bits.
        self.octets = max(1, -(-hi.bit_length() // 7)) if hi is not None else MAX_BIG_UINT_OCTETS

    def encode(self, writer: BitWriter, value: Any, path: str) -> None:
        writer.write_uint(_check_int(value, self.lo, self.hi, path))

    def decode(self, reader: BitReader, path: str) -> int:
        value = reader.read_uint(self.octets)
        if value < self.lo or (self.hi is not None and value > self.hi):
            raise ExiDecodeError(f"{path}: {value} outside the schema's range {self.lo}..{self.hi}")
        return value

    def from_text(self, text: str, path: str) -> int:
        return _int_from_text(text, path)


class SignedIntType(_NeverEmpty):
    """Any other integer: a sign bit, then the magnitude (minus one if negative) as Unsigned Integer (7.1.5)."""

    __slots__ = ("hi", "lo", "octets")

    def __init__(self, lo: int | None, hi: int | None) -> None:
        self.lo = lo
        self.hi = hi
        if lo is not None and hi is not None:
            widest = max(abs(lo), abs(hi))
            self.octets = max(1, -(-widest.bit_length() // 7))
        else:
            self.octets = MAX_BIG_UINT_OCTETS

    def encode(self, writer: BitWriter, value: Any, path: str) -> None:
        value = _check_int(value, self.lo, self.hi, path)
        if value < 0:
            writer.write_bits(1, 1)
            writer.write_uint(-value - 1)
        else:
            writer.write_bits(0, 1)
            writer.write_uint(value)

    def decode(self, reader: BitReader, path: str) -> int:
        negative = reader.read_bits(1)
        magnitude = reader.read_uint(self.octets)
        value = -magnitude - 1 if negative else magnitude
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise ExiDecodeError(f"{path}: {value} outside the schema's range {self.lo}..{self.hi}")
        return value

    def from_text(self, text: str, path: str) -> int:
        return _int_from_text(text, path)


class HexBinaryType(_MaybeEmpty):
    """exi:hexBinary (7.1.1): length-prefixed octets; JSON carries upper-case hex."""

    __slots__ = ("max_len", "min_len")

    def __init__(self, min_len: int = 0, max_len: int | None = None) -> None:
        self.min_len = min_len
        self.max_len = max_len

    def encode(self, writer: BitWriter, value: Any, path: str) -> None:
        if isinstance(value, bytes | bytearray):
            data = bytes(value)
        elif isinstance(value, str) and _HEX_RE.fullmatch(value):
            data = bytes.fromhex(value)
        else:
            raise ExiEncodeError(f"{path}: expected hex digits (hexBinary), got {value!r:.40}")
        _check_length(len(data), self.min_len, self.max_len, "hexBinary", path)
        writer.write_uint(len(data))
        writer.write_bytes(data)

    def decode(self, reader: BitReader, path: str) -> str:
        return reader.read_bytes(reader.read_uint()).hex().upper()

    def from_text(self, text: str, path: str) -> str:
        word = text.strip()
        if not _HEX_RE.fullmatch(word):
            raise ExiDecodeError(f"{path}: untyped value {text!r:.40} is not hexBinary")
        return word.upper()


class Base64BinaryType(_MaybeEmpty):
    """exi:base64Binary (7.1.1): length-prefixed octets; JSON carries padded standard base64."""

    __slots__ = ("max_len", "min_len")

    def __init__(self, min_len: int = 0, max_len: int | None = None) -> None:
        self.min_len = min_len
        self.max_len = max_len

    def encode(self, writer: BitWriter, value: Any, path: str) -> None:
        if isinstance(value, bytes | bytearray):
            data = bytes(value)
        elif isinstance(value, str):
            try:
                data = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ExiEncodeError(f"{path}: not valid base64 (base64Binary): {value!r:.40}") from None
        else:
            raise ExiEncodeError(f"{path}: expected base64 text (base64Binary), got {_type_name(value)}")
        _check_length(len(data), self.min_len, self.max_len, "base64Binary", path)
        writer.write_uint(len(data))
        writer.write_bytes(data)

    def decode(self, reader: BitReader, path: str) -> str:
        return base64.b64encode(reader.read_bytes(reader.read_uint())).decode("ascii")

    def from_text(self, text: str, path: str) -> str:
        try:
            return base64.b64encode(base64.b64decode("".join(text.split()), validate=True)).decode("ascii")
        except (binascii.Error, ValueError):
            raise ExiDecodeError(f"{path}: untyped value {text!r:.40} is not base64Binary") from None


class EnumType(_NeverEmpty):
    """An enumeration: n-bit index of the literal in schema order (7.2)."""

    __slots__ = ("bits", "index", "values")

    def __init__(self, values: list[Any], bits: int) -> None:
        self.values = values
        self.bits = bits
        self.index = {value: i for i, value in enumerate(values)}

    def encode(self, writer: BitWriter, value: Any, path: str) -> None:
        try:
            position = self.index[value]
        except (KeyError, TypeError):
            raise ExiEncodeError(f"{path}: {value!r:.40} is not one of the schema's values") from None
        writer.write_bits(position, self.bits)

    def decode(self, reader: BitReader, path: str) -> Any:
        position = reader.read_bits(self.bits)
        if position >= len(self.values):
            raise ExiDecodeError(f"{path}: enumeration index {position} beyond the {len(self.values)} values")
        return self.values[position]

    def from_text(self, text: str, path: str) -> Any:
        for value in self.values:
            if str(value) == text.strip() or (isinstance(value, bool) and text.strip() == str(value).lower()):
                return value
        raise ExiDecodeError(f"{path}: untyped value {text!r:.40} is not one of the schema's values")


def from_spec(spec: list[Any]) -> Datatype:
    """Build a datatype from its table form, e.g. ``["nbit", 1, 20, 5]`` or ``["enum", ["A", "B"], 1]``."""
    kind = spec[0]
    if kind == "string":
        return StringType(spec[1], spec[2], spec[3])
    if kind == "bool":
        return BooleanType()
    if kind == "nbit":
        return BoundedIntType(spec[1], spec[2], spec[3])
    if kind == "uint":
        return UnsignedIntType(spec[1], spec[2])
    if kind == "int":
        return SignedIntType(spec[1], spec[2])
    if kind == "hex":
        return HexBinaryType(spec[1], spec[2])
    if kind == "b64":
        return Base64BinaryType(spec[1], spec[2])
    if kind == "enum":
        return EnumType(spec[1], spec[2])
    raise ValueError(f"unknown datatype kind {kind!r}")
