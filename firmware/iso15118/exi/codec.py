"""Schema-informed EXI codec for the V2G messages, byte-exact with EXIficient as ``iso15118`` sets it up.

Options (standards-facts.md 2.1, confirmed on the oracle): schema-informed grammars, strict = false,
bit-packed alignment, no EXI options in the header, no preserve options, valuePartitionCapacity 0,
document mode (fragments only for the signature roots, see ``fragment.py``).

The tree form is the JSON the ``iso15118`` package exchanges with EXIficient: ``{root: content}`` where
a complex element is an object keyed by local names (attributes and child elements alike, a simple
content value under ``"value"``), repeatable children are arrays, and simple values are JSON scalars.
"""

from functools import cache
from typing import Any

from .bitstream import HEADER, BitReader, BitWriter
from .decoder import decode_element
from .encoder import encode_element
from .errors import ExiDecodeError, ExiEncodeError, ExiError
from .fragment import FRAGMENT_ROOTS, encode_fragment
from .grammar import GrammarSet, compile_table, load_table
from .namespaces import Namespace

# Larger than any V2GTP payload of a session (certificate chains included); bounds what a peer can make
# the decoder read.
MAX_STREAM_BYTES = 65536


class ExiCodec:
    """Encoder and decoder for one namespace's grammar; obtain instances with ``codec(namespace)``."""

    def __init__(self, grammars: GrammarSet) -> None:
        self.namespace: Namespace = Namespace(grammars.namespace)
        self._grammars = grammars

    def message_types(self) -> list[str]:
        """The global elements a stream may start with (8.5.1), by local name."""
        return sorted({prod.local for prod in self._grammars.document})

    def encode(self, tree: dict[str, Any]) -> bytes:
        """Encode ``{root: content}``; raises ExiEncodeError naming the path of what does not fit."""
        if not isinstance(tree, dict) or len(tree) != 1:
            raise ExiEncodeError("tree must be an object with exactly one key, the root element")
        ((root, content),) = tree.items()
        if not isinstance(root, str):
            raise ExiEncodeError(f"root {root!r} is not an element name")
        if root in FRAGMENT_ROOTS.get(self.namespace, ()):
            return encode_fragment(self._grammars, root, content)
        prod = self._grammars.roots.get(root)
        if prod is None:
            raise ExiEncodeError(f"{root!r} is not a global element of {self.namespace.value}")
        writer = BitWriter()
        writer.write_bits(HEADER, 8)
        # SD has one production (0 bits); DocContent: SE(G_0..G_n-1) 0..n-1, SE(*) n; DT, CM, PI pruned (8.5.1).
        writer.write_bits(prod.code, self._grammars.document_width)
        assert prod.target is not None
        encode_element(writer, prod.target, content, root)
        # DocEnd: ED is its only production once CM and PI are pruned, so it takes no bits.
        return writer.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        """Decode a stream into ``{root: content}``; raises ExiDecodeError on any malformed input."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ExiDecodeError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) > MAX_STREAM_BYTES:
            raise ExiDecodeError(f"stream of {len(data)} bytes exceeds the {MAX_STREAM_BYTES}-byte limit")
        if not data:
            raise ExiDecodeError("empty stream")
        if data[0] != HEADER:
            raise ExiDecodeError(f"EXI header byte {data[0]:#04x} is not 0x80 (no cookie, no options, version 1)")
        reader = BitReader(data, 8)
        grammars = self._grammars
        try:
            code = reader.read_bits(grammars.document_width)
            if code >= len(grammars.document):
                raise ExiDecodeError("document starts with an element the schema does not declare (SE(*))")
            prod = grammars.document[code]
            assert prod.target is not None
            content = decode_element(reader, prod.target, prod.local)
        except ExiDecodeError:
            raise
        except (RecursionError, ArithmeticError, LookupError, TypeError, ValueError) as exc:
            # Safety net: whatever a malformed stream provokes must surface as a decode error.
            raise ExiDecodeError(f"malformed stream: {exc!r}") from exc
        # The rest of the last byte is padding; whole bytes after the document must be zero padding too
        # (tolerated, as some encoders pad further), anything else is not ours.
        end = (reader.position + 7) // 8
        if any(data[end:]):
            raise ExiDecodeError(f"{len(data) - end} unexpected bytes after the end of the document")
        return {prod.local: content}


@cache
def _codec(namespace: Namespace) -> ExiCodec:
    return ExiCodec(compile_table(namespace, load_table(namespace)))


def codec(ns: Namespace | str) -> ExiCodec:
    """The (cached) codec of a namespace; an unknown namespace raises ExiError."""
    try:
        namespace = Namespace(ns)
    except ValueError:
        raise ExiError(f"no EXI grammar for namespace {ns!r}") from None
    return _codec(namespace)
