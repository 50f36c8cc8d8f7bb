"""Encoding a JSON tree against the element and type grammars (W3C EXI 1.0 2nd ed. sections 6, 8.5.4).

Only first-level (schema-valid) productions are written, with one exception EXIficient also makes: an
element whose value is lexically empty (an empty string or binary value) has no CH event, so its EE is
the second-level EE of 8.5.4.4.1 when the state has no first-level EE.
"""

from typing import Any

from .bitstream import BitWriter
from .errors import ExiEncodeError
from .grammar import L2_EE, Grammar, State

MAX_DEPTH = 64  # the V2G schemas nest about 12 deep; the bound only guards against surprises


def ordered_props(grammar: Grammar, value: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The keys of ``value`` in the order their events are written: schema order, except that the children
    of free-order content (a repeated choice, mixed content) follow the order of the keys, as the oracle's
    JAXB layer does with its general content list."""
    if not grammar.free_order:
        return [prop for prop in grammar.props if prop[0] in value]
    attributes = [prop for prop in grammar.props if prop[1] == "attr" and prop[0] in value]
    children = [(key, *grammar.roles[key]) for key in value if grammar.roles[key][0] != "attr"]
    return attributes + children


def encode_element(writer: BitWriter, grammar: Grammar, value: Any, path: str, depth: int = 0) -> None:
    """Write the events of one element's content (after its SE) up to and including its EE."""
    if depth > MAX_DEPTH:
        raise ExiEncodeError(f"{path}: nesting deeper than {MAX_DEPTH}")
    states = grammar.states
    if grammar.kind == "simple":
        state = states[0]
        ch = state.characters
        assert ch is not None and ch.datatype is not None
        if value is None or isinstance(value, dict | list):
            raise ExiEncodeError(f"{path}: expected a simple value, got {type(value).__name__}")
        if ch.datatype.is_empty(value):
            write_end(writer, state, path)  # no CH event for an empty value
            return
        writer.write_bits(ch.code, state.width)
        ch.datatype.encode(writer, value, path)
        write_end(writer, states[ch.next_state], path)
        return
    if grammar.kind != "complex":
        raise ExiEncodeError(f"{path}: content of type {grammar.name} (wildcard/anyType) is not supported")
    if not isinstance(value, dict):
        raise ExiEncodeError(f"{path}: expected an object, got {type(value).__name__}")
    for key in value:
        if key not in grammar.keys:
            raise ExiEncodeError(f"{path}: unknown element or attribute {key!r}")
    state = states[0]
    for key, role, is_list in ordered_props(grammar, value):
        item = value[key]
        if role == "elem":
            # Like the JAXB/MOXy layer of the oracle, a single object is accepted for an array.
            items = item if is_list and isinstance(item, list) else [item]
            for index, element in enumerate(items):
                child_path = f"{path}/{key}[{index}]" if is_list else f"{path}/{key}"
                prod = state.elements.get(key)
                if prod is None:
                    raise ExiEncodeError(misplaced(state, child_path))
                if element is None:
                    raise ExiEncodeError(f"{child_path}: null is not a value")
                writer.write_bits(prod.code, state.width)
                assert prod.target is not None
                encode_element(writer, prod.target, element, child_path, depth + 1)
                state = states[prod.next_state]
        elif role == "attr":
            prod = state.attributes.get(key)
            if prod is None:
                raise ExiEncodeError(misplaced(state, f"{path}/@{key}"))
            writer.write_bits(prod.code, state.width)
            assert prod.datatype is not None
            prod.datatype.encode(writer, item, f"{path}/@{key}")
            state = states[prod.next_state]
        else:
            prod = state.characters
            if prod is None:
                raise ExiEncodeError(misplaced(state, f"{path}/value"))
            assert prod.datatype is not None
            if prod.datatype.is_empty(item):
                continue  # no CH event for an empty value
            writer.write_bits(prod.code, state.width)
            prod.datatype.encode(writer, item, f"{path}/value")
            state = states[prod.next_state]
    write_end(writer, state, path)


def write_end(writer: BitWriter, state: State, path: str) -> None:
    """EE: first level if the state has one, else the second-level EE (8.5.4.4.1) of a state that only
    waits for character content that may be lexically empty; anything else is missing content."""
    if state.end is not None:
        writer.write_bits(state.end.code, state.width)
        return
    ch = state.characters
    if ch is not None and ch.datatype is not None and not state.elements and ch.datatype.is_empty(""):
        writer.write_bits(len(state.prods), state.width)
        writer.write_bits(state.second.index(L2_EE), state.second_width)
        return
    raise ExiEncodeError(f"{path}: incomplete, expected {' or '.join(state.expected())}")


def misplaced(state: State, path: str) -> str:
    """Error text for an element or attribute the current state does not accept."""
    expected = state.expected()
    required = [name for name in expected if name != "end of element"]
    if state.end is None and required:
        return f"{path}: not allowed here, missing required {' or '.join(required)} before it"
    return f"{path}: not allowed here (expected {' or '.join(expected) or 'nothing'})"
