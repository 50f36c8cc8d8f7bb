"""Decoding element content against the element and type grammars (W3C EXI 1.0 2nd ed. 6, 8.5.4).

Besides the first-level productions, two second-level ones (8.5.4.4.1) are understood because
EXIficient-based peers produce them: EE (an element whose value is lexically empty, or a required child
their JAXB layer left out) and CH [untyped value] (a value the type cannot represent, e.g. a primitive
default 0 for a field the schema bounds to 1..255). Other deviations (xsi:type, xsi:nil, undeclared
attributes or elements) are rejected with ExiDecodeError.
"""

from typing import Any

from .bitstream import BitReader
from .datatypes import read_string_value
from .errors import ExiDecodeError
from .grammar import (
    AT,
    CH,
    CHU,
    EE,
    L2_AT_ANY,
    L2_AT_UNTYPED,
    L2_CH_UNTYPED,
    L2_EE,
    L2_SE_ANY,
    L2_XSI_NIL,
    L2_XSI_TYPE,
    SE,
    Grammar,
    State,
)

MAX_DEPTH = 64  # the V2G schemas nest about 12 deep; the bound only guards against surprises

_L2_NAMES = {
    L2_XSI_TYPE: "xsi:type",
    L2_XSI_NIL: "xsi:nil",
    L2_AT_ANY: "undeclared attribute AT(*)",
    L2_AT_UNTYPED: "attribute with an untyped value",
    L2_SE_ANY: "undeclared element SE(*)",
}


def decode_element(reader: BitReader, grammar: Grammar, path: str, depth: int = 0) -> Any:
    """Read one element's content (after its SE) up to and including its EE; returns its JSON value."""
    if depth > MAX_DEPTH:
        raise ExiDecodeError(f"{path}: nesting deeper than {MAX_DEPTH}")
    states = grammar.states
    if grammar.kind == "simple":
        # Fast path for the common case: CH [schema-typed value] then EE, both first level.
        state = states[0]
        ch = state.characters
        assert ch is not None and ch.datatype is not None
        code = reader.read_bits(state.width)
        if code == ch.code:
            value = ch.datatype.decode(reader, path)
            end_state = states[ch.next_state]
            code = reader.read_bits(end_state.width)
            if end_state.end is not None and code == end_state.end.code:
                return value
            return _decode_content(reader, grammar, path, depth, end_state, code, {"value": value})
        return _decode_content(reader, grammar, path, depth, state, code, {})
    if grammar.kind != "complex":
        raise ExiDecodeError(f"{path}: content of type {grammar.name} (wildcard/anyType) is not supported")
    state = states[0]
    return _decode_content(reader, grammar, path, depth, state, reader.read_bits(state.width), {})


def _decode_content(
    reader: BitReader, grammar: Grammar, path: str, depth: int, state: State, code: int, out: dict[str, Any]
) -> Any:
    """Decode events from ``state``, whose first event code ``code`` has been read already."""
    states = grammar.states
    while True:
        prods = state.prods
        if code >= len(prods):
            next_state = _second_level(reader, grammar, state, path, out)
            if next_state is None:
                break
            state = next_state
            code = reader.read_bits(state.width)
            continue
        prod = prods[code]
        kind = prod.kind
        if kind == SE:
            key = prod.local
            assert prod.target is not None
            if prod.is_list:
                items = out.setdefault(key, [])
                items.append(decode_element(reader, prod.target, f"{path}/{key}[{len(items)}]", depth + 1))
            elif key in out:
                raise ExiDecodeError(f"{path}/{key}: occurs twice")
            else:
                out[key] = decode_element(reader, prod.target, f"{path}/{key}", depth + 1)
        elif kind == EE:
            break
        elif kind == AT:
            assert prod.datatype is not None
            out[prod.local] = prod.datatype.decode(reader, f"{path}/@{prod.local}")
        elif kind == CH:
            assert prod.datatype is not None
            out["value"] = prod.datatype.decode(reader, f"{path}/value")
        elif kind == CHU:
            raise ExiDecodeError(f"{path}: mixed character content is not supported")
        else:
            raise ExiDecodeError(f"{path}: wildcard element content is not supported")
        state = states[prod.next_state]
        code = reader.read_bits(state.width)
    if grammar.kind == "simple":
        if "value" in out:
            return out["value"]
        assert grammar.value_type is not None
        return grammar.value_type.empty_value(path)
    if grammar.value_type is not None and "value" not in out:
        out["value"] = grammar.value_type.empty_value(path)
    return out


def _second_level(reader: BitReader, grammar: Grammar, state: State, path: str, out: dict[str, Any]) -> State | None:
    """Decode a second-level event; returns the next state, or None at the end of the element."""
    index = reader.read_bits(state.second_width)
    if index >= len(state.second):
        raise ExiDecodeError(f"{path}: second-level event code {index} does not exist")
    kind = state.second[index]
    if kind == L2_EE:
        return None
    if kind == L2_CH_UNTYPED:
        text = read_string_value(reader, f"{path}/value")
        if grammar.value_type is not None:
            out["value"] = grammar.value_type.from_text(text, path)
        elif text.strip(" \t\r\n"):
            raise ExiDecodeError(f"{path}: character content {text!r:.40} in element-only content")
        return grammar.states[state.deviation_target]
    raise ExiDecodeError(f"{path}: {_L2_NAMES[kind]} (a schema deviation) is not supported")
