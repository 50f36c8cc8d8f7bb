"""Compile schema-informed EXI grammars from the V2G XSDs into plain tables (W3C EXI 1.0 2nd ed., 8.5).

This runs once per namespace (the tables are checked in as JSON next to this module, and a test rebuilds
them from the XSDs to prove they are current); the codec itself never imports ``xmlschema``.

Steps, per element and type grammar (8.5.4):
1. proto-grammar from the particles (8.5.4.1), built here as a nondeterministic automaton whose
   epsilon moves are the proto-grammar's productions without a terminal symbol;
2. normalisation (8.5.4.2): epsilon elimination and merging of duplicate terminals, done as a subset
   construction (each merged state k ⊔ l is the union of the states it stands for);
3. event code assignment (8.5.4.3): AT by local name then URI, SE in schema order, then SE(*), EE, CH;
4. undeclared productions (8.5.4.4.1, strict = false): they exist only at the second level and follow
   from a few facts per state, so the table records just those facts (``attr_states``, ``content``)
   and ``grammar.py`` derives them; on the first level they mean that every element and type state has
   a second level, so its first event code part takes ceil(log2(N + 1)) bits for N productions.

The JSON shape of each grammar (keys, arrays, order) follows the JAXB binding behind EXIficient in the
``iso15118`` package, as observed on it: see ``_element_props`` and ``_free_order``.

Regenerate with ``python -m firmware.iso15118.exi.builder`` (needs ``xmlschema``).

Table format (all plain JSON), see ``grammar.py`` for how it is read:
- ``datatypes``: list of datatype specs (``datatypes.from_spec``);
- states may be run-length packed: ``{"repeat": n}`` (see ``compress_states``);
- ``grammars``: list of ``{"name", "kind", "free_order", "props", "content", "attr_states", "states"}``;
  ``kind`` is ``simple`` (JSON scalar), ``complex`` (JSON object) or ``any`` (no usable grammar);
  ``free_order`` marks content whose children follow the order of the JSON keys (see ``_free_order``);
  ``props`` lists the JSON keys in schema order as ``[key, role, is_list]`` with role ``attr``, ``elem``
  or ``value``; ``attr_states`` are the states reached by attributes only and ``content`` the one where
  the content starts (8.5.4.4.1); ``states`` are lists of productions in event-code order:
  ``["SE", local, uri, grammar, next, is_list]``, ``["AT", local, uri, datatype, next]``, ``["EE"]``,
  ``["CH", datatype, next]`` (typed characters), ``["CHU", next]`` (untyped, mixed content),
  ``["SE*", next]`` (element wildcard);
- ``document``: the global elements ``[local, uri, grammar]`` sorted by local name then URI (8.5.1);
- ``fragment``: all declared element qnames ``[local, uri, grammar]`` likewise sorted (8.5.2), with
  ``[local, uri, -1, [grammars]]`` for a qname declared with several types (8.5.3);
- ``fragment_attributes``: all declared attribute qnames ``[local, uri, datatype]`` (8.5.3).
"""

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .grammar import shift_state
from .namespaces import ROOT_SCHEMAS, TABLE_NAMES

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
TABLE_DIR = Path(__file__).resolve().parent / "tables"
TABLE_FORMAT = 1

XS = "http://www.w3.org/2001/XMLSchema"
XSI = "http://www.w3.org/2001/XMLSchema-instance"

# 7.1.5: integers bounded to this many values or fewer are n-bit offsets from the minimum.
NBIT_MAX_RANGE = 4096

Terminal = tuple[Any, ...]


@dataclass
class _Nfa:
    """Proto-grammar as an automaton: per state, terminal moves and epsilon moves; accept = EE."""

    moves: list[list[tuple[Terminal, int]]] = field(default_factory=list)
    eps: list[list[int]] = field(default_factory=list)
    accept: set[int] = field(default_factory=set)

    def new(self) -> int:
        self.moves.append([])
        self.eps.append([])
        return len(self.moves) - 1


def _bits_for(count: int) -> int:
    """ceil(log2(count)) for count >= 1: the width of an n-bit integer with ``count`` values."""
    return (count - 1).bit_length()


class GrammarBuilder:
    """Builds the table of one namespace from its root XSD."""

    def __init__(self, namespace: str) -> None:
        import xmlschema  # build-time only dependency

        self.namespace = namespace
        self._xmlschema = xmlschema
        self.schema: Any = xmlschema.XMLSchema10(str(SCHEMA_DIR / ROOT_SCHEMAS[namespace]))
        self.datatypes: list[list[Any]] = []
        self._datatype_ids: dict[str, int] = {}
        self.grammars: list[dict[str, Any]] = []
        self._type_grammar: dict[int, int] = {}  # id(xsd type) -> grammar index
        self._pending: list[tuple[int, Any]] = []
        self._string_dt: int | None = None

    # ------------------------------------------------------------------ datatypes (section 7)

    def _datatype(self, simple_type: Any) -> int:
        spec = self._datatype_spec(simple_type)
        key = json.dumps(spec)
        if key not in self._datatype_ids:
            self._datatype_ids[key] = len(self.datatypes)
            self.datatypes.append(spec)
        return self._datatype_ids[key]

    def _xs(self, local: str) -> Any:
        return self.schema.maps.types[f"{{{XS}}}{local}"]

    def _datatype_spec(self, simple_type: Any) -> list[Any]:
        from xmlschema.validators import XsdAtomic, XsdList, XsdUnion

        st: Any = simple_type  # xmlschema's own annotations are too narrow for the facet arithmetic below
        if isinstance(simple_type, XsdList):
            raise NotImplementedError(f"list type {st.name} is not supported")  # none in the V2G schemas
        if isinstance(simple_type, XsdUnion):
            return ["string", 0, None, False]  # 7.1: unions are represented as strings
        if not isinstance(simple_type, XsdAtomic):
            raise NotImplementedError(f"simple type {st!r} is not supported")
        enum_values = self._enumeration(st)
        primitive = st.primitive_type.local_name
        if enum_values is not None and primitive not in ("QName", "NOTATION"):
            # 7.2: n-bit index into the most derived enumeration, in schema order.
            if st.is_derived(self._xs("integer")):
                values: list[Any] = [int(v) for v in enum_values]
            elif primitive == "boolean":
                values = [v in ("true", "1") for v in enum_values]
            else:
                values = [str(v) for v in enum_values]
            return ["enum", values, _bits_for(len(values))]
        if primitive == "boolean":
            if self._has_pattern(st):
                raise NotImplementedError(f"boolean with pattern facets ({st.name}) is not supported")
            return ["bool"]
        if st.is_derived(self._xs("integer")):
            lo, hi = st.min_value, st.max_value
            if lo is not None and hi is not None and hi - lo + 1 <= NBIT_MAX_RANGE:
                return ["nbit", int(lo), int(hi), _bits_for(int(hi) - int(lo) + 1)]
            if lo is not None and lo >= 0:
                return ["uint", int(lo), None if hi is None else int(hi)]
            return ["int", None if lo is None else int(lo), None if hi is None else int(hi)]
        min_len, max_len = self._length_facets(st)
        if primitive == "hexBinary":
            return ["hex", min_len, max_len]
        if primitive == "base64Binary":
            return ["b64", min_len, max_len]
        if primitive in ("string", "anyURI", "anySimpleType"):
            if self._has_pattern(st) and self._pattern_owner_is_user_type(st):
                raise NotImplementedError(f"restricted character sets ({st.name}) are not supported")
            # Types derived from xs:token (xs:ID, xs:IDREF, ...) have whiteSpace = collapse; the JAXB layer
            # in front of EXIficient applies it (CollapsedStringAdapter), so the value is collapsed too.
            collapse = st.is_derived(self._xs("token"))
            return ["string", min_len, max_len, collapse]
        raise NotImplementedError(f"datatype {primitive} ({st.name}) is not supported")

    @staticmethod
    def _enumeration(st: Any) -> list[Any] | None:
        node = st
        while node is not None and hasattr(node, "facets"):
            enum = getattr(node, "enumeration", None)
            if enum:
                return list(enum)
            node = getattr(node, "base_type", None)
        return None

    @staticmethod
    def _has_pattern(st: Any) -> bool:
        node = st
        while node is not None and hasattr(node, "facets"):
            if getattr(node, "patterns", None):
                return True
            node = getattr(node, "base_type", None)
        return False

    @staticmethod
    def _pattern_owner_is_user_type(st: Any) -> bool:
        node = st
        while node is not None and hasattr(node, "facets"):
            if getattr(node, "patterns", None):
                return node.target_namespace != XS
            node = getattr(node, "base_type", None)
        return False

    @staticmethod
    def _length_facets(st: Any) -> tuple[int, int | None]:
        lo, hi = 0, None
        node = st
        # The most derived facet wins; walk from the type towards its primitive.
        seen_lo = seen_hi = False
        while node is not None and hasattr(node, "facets"):
            facets = node.facets
            length = facets.get(f"{{{XS}}}length")
            if length is not None:
                value = int(length.value)
                if not seen_lo:
                    lo, seen_lo = value, True
                if not seen_hi:
                    hi, seen_hi = value, True
            min_f = facets.get(f"{{{XS}}}minLength")
            if min_f is not None and not seen_lo:
                lo, seen_lo = int(min_f.value), True
            max_f = facets.get(f"{{{XS}}}maxLength")
            if max_f is not None and not seen_hi:
                hi, seen_hi = int(max_f.value), True
            node = getattr(node, "base_type", None)
        return lo, hi

    # ------------------------------------------------------------------ grammars (section 8.5.4)

    def grammar_of_type(self, xsd_type: Any) -> int:
        """Index of the type grammar of ``xsd_type``, queued for construction on first use."""
        key = id(xsd_type)
        if key not in self._type_grammar:
            index = len(self.grammars)
            self._type_grammar[key] = index
            self.grammars.append({})
            self._pending.append((index, xsd_type))
        return self._type_grammar[key]

    def _drain(self) -> None:
        while self._pending:
            index, xsd_type = self._pending.pop()
            self.grammars[index] = self._build_type(xsd_type)

    def _build_type(self, xsd_type: Any) -> dict[str, Any]:
        name = xsd_type.name or f"type of {getattr(xsd_type.parent, 'name', None)}"
        if xsd_type.is_simple():
            dt = self._datatype(xsd_type)
            # 8.5.4.1.3.1: Type_0 : CH [schema-typed value] Type_1 ; Type_1 : EE
            return {
                "name": name,
                "kind": "simple",
                "free_order": False,
                "props": [],
                "content": 0,
                "attr_states": [0],
                "states": [[["CH", dt, 1]], [["EE"]]],
            }
        if xsd_type.name == f"{{{XS}}}anyType":
            return {
                "name": name,
                "kind": "any",
                "free_order": False,
                "props": [],
                "content": 0,
                "attr_states": [0],
                "states": [[["EE"]]],
            }
        nfa = _Nfa()
        start = nfa.new()
        props: list[list[Any]] = []
        order: dict[Terminal, tuple[int, ...]] = {}
        current = start
        # 8.5.4.1.3.2 / 8.5.4.1.4: attribute uses sorted by local name then URI, each optional or required.
        attributes = sorted(
            (a for k, a in xsd_type.attributes.items() if k is not None and a.use != "prohibited"),
            key=lambda a: (a.local_name, a.target_namespace if a.qualified else ""),
        )
        if None in xsd_type.attributes:
            raise NotImplementedError(f"attribute wildcard in {name} is not supported")
        for attr in attributes:
            uri = attr.target_namespace if attr.qualified else ""
            terminal: Terminal = ("AT", attr.local_name, uri, self._datatype(attr.type))
            order[terminal] = (0, 0)
            nxt = nfa.new()
            nfa.moves[current].append((terminal, nxt))
            if attr.use != "required":
                nfa.eps[current].append(nxt)
            props.append([attr.local_name, "attr", False])
            current = nxt
        content_first = len(nfa.moves)
        if xsd_type.has_simple_content():
            dt = self._datatype(xsd_type.content)
            end = nfa.new()
            terminal = ("CH", dt)
            order[terminal] = (0, 0)
            nfa.moves[current].append((terminal, end))
            props.append(["value", "value", False])
            current = end
        else:
            group = xsd_type.content
            leaves = _LeafCounter()
            if group is not None and len(group) > 0:
                current = self._particle(nfa, group, current, order, leaves)
            self._element_props(group, props, bool(xsd_type.mixed))
            if xsd_type.mixed:
                # 8.5.4.1.3.2: mixed content adds CH [untyped value] to every content state.
                mixed_states = set(range(content_first, len(nfa.moves))) | {current}
                for state in mixed_states:
                    nfa.moves[state].append((("CHU",), state))
        nfa.accept.add(current)
        states = self._normalise(nfa, start, order)
        attr_states, content = self._attribute_phase(states)
        return {
            "name": name,
            "kind": "complex",
            "free_order": bool(xsd_type.mixed) or self._free_order(xsd_type.content),
            "props": props,
            "content": content,
            "attr_states": attr_states,
            "states": states,
        }

    def _free_order(self, group: Any) -> bool:
        """True if JAXB binds the content to one general List<Object> (a repeated model group with more
        than one element name, or a wildcard): its JSON keys then come back in document order and the
        oracle encodes children in the order of the keys it is given."""
        from xmlschema.validators import XsdAnyElement, XsdGroup

        if not isinstance(group, XsdGroup):
            return False

        def names(particle: Any) -> set[str]:
            if isinstance(particle, XsdGroup):
                found: set[str] = set()
                for child in particle:
                    found |= names(child)
                return found
            if isinstance(particle, XsdAnyElement):
                return {"*"}
            return {m.local_name for m in self._substitutes(particle) if not m.abstract}

        def visit(particle: Any) -> bool:
            if not isinstance(particle, XsdGroup):
                return False
            repeated = particle.max_occurs is None or particle.max_occurs > 1
            if repeated and len(names(particle)) > 1:
                return True
            return any(visit(child) for child in particle)

        return visit(group)

    @staticmethod
    def _attribute_phase(states: list[list[list[Any]]]) -> tuple[list[int], int]:
        """8.5.4.4.1: the states 0..content are those reached by attributes only; ``content`` is the one
        among them without AT productions (the state after the attributes, where the content begins)."""
        seen = {0}
        queue = [0]
        while queue:
            for prod in states[queue.pop()]:
                if prod[0] == "AT" and prod[4] not in seen:
                    seen.add(prod[4])
                    queue.append(prod[4])
        without_at = [i for i in seen if not any(prod[0] == "AT" for prod in states[i])]
        if len(without_at) != 1:
            raise NotImplementedError("attribute phase without a single content state")
        return sorted(seen), without_at[0]

    def _element_props(self, group: Any, props: list[list[Any]], mixed: bool) -> None:
        """JSON keys of the child elements in schema order; a key is a list if it may occur twice.

        In mixed content every child is a list: JAXB binds mixed content to one List<Object> and its
        JSON form then gives each child element an array. Abstract elements cannot occur in an instance
        and get no key.
        """
        if group is None:
            return
        counts: dict[str, int] = {}
        ordered: list[str] = []

        def visit(particle: Any, factor: int | None) -> None:
            from xmlschema.validators import XsdAnyElement, XsdGroup

            occurs = None if particle.max_occurs is None or factor is None else particle.max_occurs * factor
            if isinstance(particle, XsdGroup):
                for child in particle:
                    visit(child, occurs)
                return
            if isinstance(particle, XsdAnyElement):
                return
            for member in self._substitutes(particle):
                if member.abstract or getattr(member.type, "abstract", False):
                    continue  # only usable with xsi:type, which the JSON form cannot express
                key = member.local_name
                if key not in counts:
                    ordered.append(key)
                    counts[key] = 0
                counts[key] = 2 if occurs is None else counts[key] + occurs

        visit(group, 1)
        for key in ordered:
            props.append([key, "elem", mixed or counts[key] > 1])

    def _substitutes(self, element: Any) -> list[Any]:
        """8.5.4.1.6: the element and everything in its substitution group, by local name then URI.

        The head is part of the set even when abstract (as the spec says and EXIficient does), which
        shifts the event codes of the members sorted after it.
        """
        head = element.ref if element.ref is not None else element
        found: dict[str, Any] = {}
        queue = [head]
        groups = self.schema.maps.substitution_groups
        while queue:
            node = queue.pop()
            if node.name in found:
                continue
            found[node.name] = node
            queue.extend(groups.get(node.name, ()))
        members = list(found.values())
        members.sort(key=lambda e: (e.local_name, e.target_namespace or ""))
        return members

    def _element_terminal(self, element: Any) -> Iterator[Terminal]:
        for member in self._substitutes(element):
            decl = member
            yield ("SE", decl.local_name, decl.target_namespace or "", self.grammar_of_type(decl.type))

    def _particle(
        self, nfa: _Nfa, particle: Any, entry: int, order: dict[Terminal, tuple[int, ...]], leaves: "_LeafCounter"
    ) -> int:
        """8.5.4.1.5: {min occurs} copies of the term, then optional or looping copies; returns the exit.

        Every copy of a particle keeps the particle's schema order (the leaf counter is rewound).
        """
        lo = particle.min_occurs
        hi = particle.max_occurs
        if hi == 0:
            return entry
        first_leaf = leaves.value
        current = entry
        for _ in range(lo):
            leaves.value = first_leaf
            current = self._term(nfa, particle, current, order, leaves)
        if hi is None:
            # one more copy whose end loops back to its start; the start is also the way out
            leaves.value = first_leaf
            nfa.eps[self._term(nfa, particle, current, order, leaves)].append(current)
            return current
        if hi == lo:
            return current
        exit_state = nfa.new()
        for _ in range(hi - lo):
            leaves.value = first_leaf
            nfa.eps[current].append(exit_state)
            current = self._term(nfa, particle, current, order, leaves)
        nfa.eps[current].append(exit_state)
        return exit_state

    def _term(
        self, nfa: _Nfa, particle: Any, entry: int, order: dict[Terminal, tuple[int, ...]], leaves: "_LeafCounter"
    ) -> int:
        from xmlschema.validators import XsdAnyElement, XsdGroup

        if isinstance(particle, XsdGroup):
            children = list(particle)
            if particle.model == "sequence":
                current = entry
                for child in children:
                    current = self._particle(nfa, child, current, order, leaves)
                return current
            if particle.model == "choice":
                exit_state = nfa.new()
                if not children:
                    nfa.eps[entry].append(exit_state)
                for child in children:
                    branch = nfa.new()
                    nfa.eps[entry].append(branch)
                    nfa.eps[self._particle(nfa, child, branch, order, leaves)].append(exit_state)
                return exit_state
            raise NotImplementedError(f"model group {particle.model!r} is not supported")
        exit_state = nfa.new()
        position = leaves.value
        leaves.value += 1
        if isinstance(particle, XsdAnyElement):
            namespaces = set(particle.namespace)
            if not namespaces <= {"##any", "##other"}:
                raise NotImplementedError(f"wildcard namespaces {namespaces} are not supported")
            terminal: Terminal = ("SE*",)
            order.setdefault(terminal, (2, position))
            nfa.moves[entry].append((terminal, exit_state))
            return exit_state
        for sub_index, terminal in enumerate(self._element_terminal(particle)):
            key = (1, position, sub_index)
            if terminal not in order or key < order[terminal]:
                order[terminal] = key
            nfa.moves[entry].append((terminal, exit_state))
        return exit_state

    @staticmethod
    def _closure(nfa: _Nfa, states: Iterable[int]) -> frozenset[int]:
        seen = set(states)
        stack = list(seen)
        while stack:
            for target in nfa.eps[stack.pop()]:
                if target not in seen:
                    seen.add(target)
                    stack.append(target)
        return frozenset(seen)

    def _normalise(self, nfa: _Nfa, start: int, order: dict[Terminal, tuple[int, ...]]) -> list[list[list[Any]]]:
        """8.5.4.2 and 8.5.4.3: determinise, then order each state's productions for event codes."""
        first = self._closure(nfa, [start])
        index = {first: 0}
        queue = [first]
        raw: list[list[tuple[Terminal, int] | None]] = []
        while queue:
            subset = queue.pop(0)
            targets: dict[Terminal, set[int]] = {}
            for state in subset:
                for terminal, target in nfa.moves[state]:
                    targets.setdefault(terminal, set()).add(target)
            prods: list[tuple[Terminal, int] | None] = []
            for terminal, target_set in targets.items():
                closed = self._closure(nfa, target_set)
                if closed not in index:
                    index[closed] = len(index)
                    queue.append(closed)
                prods.append((terminal, index[closed]))
            if subset & nfa.accept:
                prods.append(None)  # EE
            raw.append(prods)

        def sort_key(prod: tuple[Terminal, int] | None) -> tuple[Any, ...]:
            if prod is None:
                return (5,)
            terminal = prod[0]
            kind = terminal[0]
            if kind == "AT":
                return (0, terminal[1], terminal[2])
            if kind == "SE":
                return (1, *order[terminal])
            if kind == "SE*":
                return (2,)
            return (6,)  # CH, CHU

        states: list[list[list[Any]]] = []
        for prods in raw:
            out: list[list[Any]] = []
            for prod in sorted(prods, key=sort_key):
                if prod is None:
                    out.append(["EE"])
                    continue
                terminal, nxt = prod
                kind = terminal[0]
                if kind == "AT":
                    out.append(["AT", terminal[1], terminal[2], terminal[3], nxt])
                elif kind == "SE":
                    out.append(["SE", terminal[1], terminal[2], terminal[3], nxt, False])
                elif kind == "SE*":
                    out.append(["SE*", nxt])
                elif kind == "CH":
                    out.append(["CH", terminal[1], nxt])
                else:
                    out.append(["CHU", nxt])
            states.append(out)
        return states

    # ------------------------------------------------------------------ fragments (8.5.2)

    def _declarations(self) -> dict[tuple[str, str], list[Any]]:
        """Every element declaration of the schema set, global and local, by qname."""
        from xmlschema.validators import XsdElement, XsdGroup

        found: dict[tuple[str, str], list[Any]] = {}
        seen_types: set[int] = set()

        def add(decl: Any) -> None:
            found.setdefault((decl.local_name, decl.target_namespace or ""), []).append(decl)
            walk_type(decl.type)

        def walk_type(xsd_type: Any) -> None:
            if id(xsd_type) in seen_types or not xsd_type.is_complex():
                return
            seen_types.add(id(xsd_type))
            if isinstance(xsd_type.content, XsdGroup):
                walk_group(xsd_type.content)

        def walk_group(group: Any) -> None:
            for particle in group:
                if isinstance(particle, XsdGroup):
                    walk_group(particle)
                elif isinstance(particle, XsdElement) and particle.ref is None:
                    add(particle)

        maps = self.schema.maps
        for element in maps.elements.values():
            if element.target_namespace != XS:
                add(element)
        for xsd_type in maps.types.values():
            if xsd_type.target_namespace != XS:
                walk_type(xsd_type)
        return found

    def _fragment(self) -> list[list[Any]]:
        """FragmentContent (8.5.2): each element qname once, by local name then URI, with its grammar; where
        declarations of a qname differ in type or nillable, -1 and the grammars of all of them (their
        content then follows the relaxed Element Fragment grammar of 8.5.3)."""
        out: list[list[Any]] = []
        for (local, uri), decls in sorted(self._declarations().items()):
            kinds = {(id(d.type), bool(d.nillable)) for d in decls}
            if len(kinds) == 1:
                out.append([local, uri, self.grammar_of_type(decls[0].type)])
            else:
                grammars = sorted({self.grammar_of_type(d.type) for d in decls})
                out.append([local, uri, -1, grammars])
        return out

    def _fragment_attributes(self) -> list[list[Any]]:
        """8.5.3: every attribute qname declared in the schema set, by local name then URI, typed by its
        declarations' type when they all agree on the type name, else as a string."""
        found: dict[tuple[str, str], list[Any]] = {}
        for xsd_type in self.schema.maps.types.values():
            if xsd_type.target_namespace == XS or not xsd_type.is_complex():
                continue
            for key, attr in xsd_type.attributes.items():
                if key is not None:
                    qname = (attr.local_name, attr.target_namespace if attr.qualified else "")
                    found.setdefault(qname, []).append(attr)
        for attr in self.schema.maps.attributes.values():
            if attr.target_namespace not in (XSI, "http://www.w3.org/XML/1998/namespace"):
                found.setdefault((attr.local_name, attr.target_namespace or ""), []).append(attr)
        out: list[list[Any]] = []
        for (local, uri), attrs in sorted(found.items()):
            names = {a.type.name for a in attrs}
            if len(names) == 1 and None not in names:
                out.append([local, uri, self._datatype(attrs[0].type)])
            else:
                out.append([local, uri, self._datatype(self._xs("string"))])
        return out

    # ------------------------------------------------------------------ whole table

    def build(self) -> dict[str, Any]:
        maps = self.schema.maps
        globals_ = sorted(
            (e for e in maps.elements.values() if e.target_namespace != XS),
            key=lambda e: (e.local_name, e.target_namespace or ""),
        )
        document = [[e.local_name, e.target_namespace or "", self.grammar_of_type(e.type)] for e in globals_]
        fragment = self._fragment()
        fragment_attributes = self._fragment_attributes()
        self._drain()
        # JSON list flags of SE productions come from the parent's props.
        for grammar in self.grammars:
            list_keys = {key for key, role, is_list in grammar["props"] if role == "elem" and is_list}
            for state in grammar["states"]:
                for prod in state:
                    if prod[0] == "SE" and prod[1] in list_keys:
                        prod[5] = True
        return {
            "format": TABLE_FORMAT,
            "namespace": str(self.namespace),
            "root_schema": ROOT_SCHEMAS[self.namespace],
            "datatypes": self.datatypes,
            "grammars": self.grammars,
            "document": document,
            "fragment": fragment,
            "fragment_attributes": fragment_attributes,
        }


class _LeafCounter:
    """Depth-first index of element and wildcard particles: the schema order of 8.5.4.3."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


def build_table(namespace: str) -> dict[str, Any]:
    """Compile the grammar table of ``namespace`` from its XSDs."""
    return GrammarBuilder(namespace).build()


def table_path(namespace: str) -> Path:
    return TABLE_DIR / f"{TABLE_NAMES[namespace]}.json"


def compress_states(states: list[list[list[Any]]]) -> list[Any]:
    """Run-length form of a state list: a bounded repetition (maxOccurs="1024") unrolls into long runs of
    states that differ from their predecessor only by next-state indices one higher; such a run is
    stored as ``{"repeat": n}`` after its first state (see ``grammar.expand_states``)."""
    out: list[Any] = []
    run = 0
    for index, state in enumerate(states):
        if index > 0 and state == shift_state(states[index - 1], 1):
            run += 1
            continue
        if run:
            out.append({"repeat": run})
            run = 0
        out.append(state)
    if run:
        out.append({"repeat": run})
    return out


def dump_table(table: dict[str, Any]) -> str:
    """The canonical text of a table (what is checked in): compact JSON, one grammar per line."""
    head = {key: value for key, value in table.items() if key != "grammars"}
    lines = ["{" + json.dumps(head, separators=(",", ":"))[1:-1] + ',"grammars":[']
    grammars = table["grammars"]
    for index, grammar in enumerate(grammars):
        packed = dict(grammar, states=compress_states(grammar["states"]))
        lines.append(json.dumps(packed, separators=(",", ":")) + ("," if index + 1 < len(grammars) else ""))
    lines.append("]}")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Regenerate every table: ``python -m firmware.iso15118.exi.builder``."""
    TABLE_DIR.mkdir(exist_ok=True)
    for namespace in TABLE_NAMES:
        table_path(namespace).write_text(dump_table(build_table(namespace)), encoding="utf-8")


if __name__ == "__main__":
    main()
