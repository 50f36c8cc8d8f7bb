"""Run-time form of the compiled grammar tables (see ``builder.py`` for the table format).

Event codes (W3C EXI 1.0 2nd ed. 6.2, 8.5.4.3): a state's first-level productions take the codes 0..N-1
in table order. With strict = false every element and type state also has second-level (undeclared)
productions (8.5.4.4.1), so the first part has N + 1 values and takes ceil(log2(N + 1)) bits; the value N
escapes to the second level, whose entries are computed here (``State.second``). The encoder writes
only the second-level EE of lexically empty values; the decoder also reads CH [untyped value].
"""

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from .datatypes import Datatype, StringType, from_spec
from .namespaces import TABLE_NAMES

# Production kinds, as small ints for fast dispatch.
SE = 0
AT = 1
EE = 2
CH = 3
CHU = 4
SE_ANY = 5

_KINDS = {"SE": SE, "AT": AT, "EE": EE, "CH": CH, "CHU": CHU, "SE*": SE_ANY}

# Second-level (undeclared) productions of 8.5.4.4.1 with strict = false and no preserve options, in the
# order the spec adds them: EE (where there is no first-level EE), AT(xsi:type) and AT(xsi:nil) (entry
# state only), AT(*) and the AT [untyped value] group (states 0..content), SE(*), CH [untyped value].
# NS, SC, ER, CM and PI are pruned (8.3): prefixes, self-contained, DTD, comments and PIs not preserved.
L2_EE = 0
L2_XSI_TYPE = 1
L2_XSI_NIL = 2
L2_AT_ANY = 3
L2_AT_UNTYPED = 4
L2_SE_ANY = 5
L2_CH_UNTYPED = 6


def bits_for(count: int) -> int:
    """ceil(log2(count)) for count >= 1 (6.2: width of an event code part with ``count`` values)."""
    return (count - 1).bit_length()


@dataclass(slots=True)
class Production:
    """One first-level production; ``target`` is the child grammar (SE) and ``datatype`` the value type."""

    kind: int
    code: int
    local: str = ""
    uri: str = ""
    next_state: int = 0
    target: "Grammar | None" = None
    datatype: Datatype | None = None
    is_list: bool = False


@dataclass(slots=True)
class State:
    """A normalised grammar state with its productions in event-code order.

    ``second`` lists the second-level productions (``L2_*``) and ``second_width`` their code width;
    ``deviation_target`` is where SE(*) and CH [untyped value] lead (the state itself, or the copy
    Element_i,content2 of the content state for states 0..content).
    """

    prods: list[Production]
    width: int
    elements: dict[str, Production] = field(default_factory=dict)
    attributes: dict[str, Production] = field(default_factory=dict)
    end: Production | None = None
    characters: Production | None = None
    second: tuple[int, ...] = ()
    second_width: int = 0
    deviation_target: int = 0

    def expected(self) -> list[str]:
        """Human-readable names of what may come next (for error messages)."""
        names = [f"@{p.local}" if p.kind == AT else p.local for p in self.prods if p.kind in (SE, AT)]
        if self.end is not None:
            names.append("end of element")
        if self.characters is not None:
            names.append("character content")
        return names


@dataclass(slots=True)
class Grammar:
    """An element or type grammar: its JSON shape and its states.

    ``value_type`` is the datatype of the character content of a simple type or a complex type with
    simple content (None for element-only content).
    """

    name: str
    kind: str  # "simple" (JSON scalar), "complex" (JSON object) or "any" (unsupported content)
    props: list[tuple[str, str, bool]]
    states: list[State] = field(default_factory=list)
    keys: frozenset[str] = frozenset()
    value_type: Datatype | None = None
    free_order: bool = False
    roles: dict[str, tuple[str, bool]] = field(default_factory=dict)


def _second_level(state: State, is_start: bool, attribute_phase: bool) -> None:
    """Fill in the second level of ``state`` (8.5.4.4.1); ``attribute_phase`` means 0 <= j <= content."""
    second: list[int] = []
    if state.end is None:
        second.append(L2_EE)
    if is_start:
        second += [L2_XSI_TYPE, L2_XSI_NIL]
    if attribute_phase:
        second += [L2_AT_ANY, L2_AT_UNTYPED]
    second += [L2_SE_ANY, L2_CH_UNTYPED]
    # Only a handful of distinct second levels exist: share them (grammars unroll to thousands of states).
    state.second = _SECOND_LEVELS.setdefault(tuple(second), tuple(second))
    state.second_width = bits_for(len(second))


_SECOND_LEVELS: dict[tuple[int, ...], tuple[int, ...]] = {}
_NO_PRODUCTIONS: dict[str, Production] = {}  # shared by states without elements or attributes; never mutated


@dataclass(slots=True)
class GrammarSet:
    """Everything the codec needs for one namespace."""

    namespace: str
    grammars: list[Grammar]
    document: list[Production]
    document_width: int
    roots: dict[str, Production]
    fragment: list[Production] = field(default_factory=list)
    fragment_width: int = 0
    fragment_roots: dict[str, Production] = field(default_factory=dict)
    # 8.5.3 relaxed Element Fragment grammar: the declared attribute qnames and, per ambiguous element
    # qname, the grammars of its declarations.
    fragment_attributes: list[Production] = field(default_factory=list)
    relaxed: dict[str, list[Grammar]] = field(default_factory=dict)


# Position of the next-state index in each production kind of the table form.
_NEXT_FIELD = {"SE": 4, "AT": 4, "CH": 2, "CHU": 1, "SE*": 1}


def shift_state(state: list[list[Any]], offset: int) -> list[list[Any]]:
    """A table state with every next-state index moved by ``offset``."""
    shifted = []
    for prod in state:
        field_index = _NEXT_FIELD.get(prod[0])
        if field_index is None:
            shifted.append(prod)
        else:
            copy = list(prod)
            copy[field_index] += offset
            shifted.append(copy)
    return shifted


def expand_states(packed: list[Any]) -> list[list[list[Any]]]:
    """Inverse of ``builder.compress_states``: ``{"repeat": n}`` stands for n more copies of the previous
    state, each with next-state indices one higher than the one before."""
    states: list[list[list[Any]]] = []
    for entry in packed:
        if isinstance(entry, dict):
            for _ in range(entry["repeat"]):
                states.append(shift_state(states[-1], 1))
        else:
            states.append(entry)
    return states


def load_table(namespace: str) -> dict[str, Any]:
    """The checked-in table of ``namespace`` as parsed JSON."""
    text = resources.files(__package__).joinpath("tables", f"{TABLE_NAMES[namespace]}.json").read_text("utf-8")
    table: dict[str, Any] = json.loads(text)
    for grammar in table["grammars"]:
        grammar["states"] = expand_states(grammar["states"])
    return table


def compile_table(namespace: str, table: dict[str, Any]) -> GrammarSet:
    """Turn a table into linked run-time objects."""
    datatypes = [from_spec(spec) for spec in table["datatypes"]]
    untyped = StringType()
    grammars = [
        Grammar(g["name"], g["kind"], [(key, role, bool(is_list)) for key, role, is_list in g["props"]])
        for g in table["grammars"]
    ]
    for grammar, raw in zip(grammars, table["grammars"], strict=True):
        grammar.keys = frozenset(key for key, _, _ in grammar.props)
        grammar.free_order = bool(raw["free_order"])
        grammar.roles = {key: (role, is_list) for key, role, is_list in grammar.props}
        attribute_states = set(raw["attr_states"])
        for raw_state in raw["states"]:
            prods: list[Production] = []
            state = State(prods, bits_for(len(raw_state) + 1), {}, {})
            for code, raw_prod in enumerate(raw_state):
                kind = _KINDS[raw_prod[0]]
                if kind == SE:
                    prod = Production(
                        SE,
                        code,
                        raw_prod[1],
                        raw_prod[2],
                        raw_prod[4],
                        target=grammars[raw_prod[3]],
                        is_list=bool(raw_prod[5]),
                    )
                    state.elements.setdefault(prod.local, prod)
                elif kind == AT:
                    prod = Production(AT, code, raw_prod[1], raw_prod[2], raw_prod[4], datatype=datatypes[raw_prod[3]])
                    state.attributes.setdefault(prod.local, prod)
                elif kind == EE:
                    prod = Production(EE, code)
                    state.end = prod
                elif kind == CH:
                    prod = Production(CH, code, next_state=raw_prod[2], datatype=datatypes[raw_prod[1]])
                    state.characters = prod
                elif kind == CHU:
                    prod = Production(CHU, code, next_state=raw_prod[1], datatype=untyped)
                else:
                    prod = Production(SE_ANY, code, next_state=raw_prod[1])
                prods.append(prod)
            if not state.elements:
                state.elements = _NO_PRODUCTIONS
            if not state.attributes:
                state.attributes = _NO_PRODUCTIONS
            grammar.states.append(state)
        # Element_i,content2 (8.5.4.4.1): a copy of the content state that SE(*) and CH [untyped value]
        # lead to from states 0..content; it gets the second level of a content state.
        original = grammar.states[raw["content"]]
        content2 = State(original.prods, original.width, original.elements, original.attributes)
        content2.end, content2.characters = original.end, original.characters
        content2_index = len(grammar.states)
        for index, state in enumerate(grammar.states):
            in_phase = index in attribute_states
            _second_level(state, index == 0, in_phase)
            state.deviation_target = content2_index if in_phase else index
        _second_level(content2, False, False)
        content2.deviation_target = content2_index
        grammar.states.append(content2)
        for state in grammar.states:
            if state.characters is not None:
                grammar.value_type = state.characters.datatype
    document = [
        Production(SE, code, local, uri, 0, target=grammars[index])
        for code, (local, uri, index) in enumerate(table["document"])
    ]
    roots: dict[str, Production] = {}
    for prod in document:
        roots.setdefault(prod.local, prod)
    fragment: list[Production] = []
    relaxed: dict[str, list[Grammar]] = {}
    for code, entry in enumerate(table["fragment"]):
        local, uri, index = entry[:3]
        fragment.append(Production(SE, code, local, uri, 0, target=grammars[index] if index >= 0 else None))
        if index < 0:
            relaxed[local] = [grammars[i] for i in entry[3]]
    fragment_roots: dict[str, Production] = {}
    for prod in fragment:
        fragment_roots.setdefault(prod.local, prod)
    fragment_attributes = [
        Production(AT, code, local, uri, datatype=datatypes[dt])
        for code, (local, uri, dt) in enumerate(table["fragment_attributes"])
    ]
    # 8.5.1: DocContent has the n global elements and SE(*); DT, CM and PI are pruned (no preserve options).
    # 8.5.2: FragmentContent has the n element qnames, SE(*) and ED; CM and PI are pruned likewise.
    return GrammarSet(
        namespace,
        grammars,
        document,
        bits_for(len(document) + 1),
        roots,
        fragment,
        bits_for(len(fragment) + 2),
        fragment_roots,
        fragment_attributes,
        relaxed,
    )
