"""Hypothesis strategies for VALID V2G messages of every message type, read from the XSDs.

The trees are in the JSON form of the EXI oracle (the `iso15118` package's EXIficient codec, reached
through :mod:`tests.peers.iso15118_peer`), which is also the form our own codec speaks. The form, as
found by encoding and decoding with the oracle:

* A document is ``{"<root element local name>": <content>}``; namespaces and prefixes never appear.
* Element content is a JSON object whose keys are the local names of the child elements AND of the
  attributes (no ``@`` prefix, no namespace even where attributeFormDefault is qualified), e.g.
  ``{"Id": "ID1", "Certificate": "AAEC"}``. The order of element keys carries nothing.
* A child element that may occur more than once (its own maxOccurs, or that of an enclosing group,
  > 1) is always a JSON array, even with one item; any other child is a single value. Inside a complex
  type with mixed content (xmldsig's SignatureMethod, KeyInfo, KeyValue, Transform, Object ...) EVERY
  child element is an array, e.g. ``"HMACOutputLength": [128]``, ``"RSAKeyValue": [{...}]``: the
  oracle's classes hold mixed content as one list.
* Simple content with attributes is ``{"<attribute>": ..., "value": <value>}``; simple content without
  attributes is the bare value. An element without content (and no attributes) is ``{}``. The oracle
  writes attributes before ``"value"`` and loses the value if ``"value"`` comes first in what it reads
  (:class:`~tests.peers.iso15118_peer.ExiOracle` reorders for it).
* A substitution group member appears under its own name (``"AC_EVChargeParameter": {...}``, a -2/DIN
  body element, a -20 control mode); the abstract head never appears.
* Integers (all widths, also xs:integer and xs:unsignedLong beyond 2**63) are JSON numbers; booleans are
  ``true``/``false``; enumerations and strings are JSON strings.
* hexBinary is upper-case hex (the oracle accepts lower case but answers upper case); base64Binary is
  standard base64 with ``=`` padding (unpadded input is silently truncated to whole 3-byte groups).
* The oracle does not validate: unknown keys are dropped silently.

:func:`message_types` lists the message types of a namespace: for SAP and the ISO 15118-20 namespaces
every non-abstract global element of the target namespace (each may start a stream), for DIN 70121 and
ISO 15118-2 every member of the BodyElement substitution group (the V2G_Message is generated with that
body element). :func:`messages` generates instances: optional elements and attributes sometimes present
and sometimes absent, every branch of every choice and substitution group, repeated elements from their
minOccurs up to a small cap (and now and then exactly their maxOccurs when that is small), values inside
their facets (enumerations, integer ranges with their bounds, string/binary lengths with their bounds,
patterns), unique xs:ID values and xs:IDREFs that point at one of them.

With ``oracle_compatible=True`` (the default) the instances avoid what the oracle cannot carry although
the schema allows it, so that it round-trips them unchanged: :data:`ORACLE_UNSUPPORTED_ELEMENTS`,
:data:`ORACLE_UNSUPPORTED_NAMESPACES`, base64Binary anywhere in DIN 70121, absent
:data:`ORACLE_ZERO_FILLED` elements, tab/CR/LF in attribute values. :func:`oracle_message_types` lists the
message types that are left for the oracle. With ``oracle_compatible=False`` they cover the whole schema.
Never generated in either mode: wildcard (xs:any) content, character data of mixed content, xsi:type,
and the interleaving of different children of a repeated choice (JSON cannot say it).
"""

from __future__ import annotations

import base64
import copy
import functools
import string
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import xmlschema
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy
from xmlschema.validators import XsdAnyElement, XsdAttribute, XsdComplexType, XsdElement, XsdGroup

# Namespaces of the grammars: standards-facts.md 2.1/2.2 (one grammar per namespace).
SAP = "urn:iso:15118:2:2010:AppProtocol"
DIN = "urn:din:70121:2012:MsgDef"
ISO2 = "urn:iso:15118:2:2013:MsgDef"
ISO20_COMMON = "urn:iso:std:iso:15118:-20:CommonMessages"
ISO20_AC = "urn:iso:std:iso:15118:-20:AC"
ISO20_DC = "urn:iso:std:iso:15118:-20:DC"
ISO20_ACDP = "urn:iso:std:iso:15118:-20:ACDP"
ISO20_WPT = "urn:iso:std:iso:15118:-20:WPT"

#: The project's copies of the XSDs (identical to shared/schemas/, which CI does not have).
SCHEMA_DIR = Path(__file__).resolve().parents[3] / "firmware" / "iso15118" / "schemas"
ROOT_SCHEMAS: dict[str, str] = {
    SAP: "V2G_CI_AppProtocol.xsd",
    DIN: "din70121/V2G_CI_MsgDef.xsd",
    ISO2: "iso15118-2/V2G_CI_MsgDef.xsd",
    ISO20_COMMON: "iso15118-20/V2G_CI_CommonMessages.xsd",
    ISO20_AC: "iso15118-20/V2G_CI_AC.xsd",
    ISO20_DC: "iso15118-20/V2G_CI_DC.xsd",
    ISO20_ACDP: "iso15118-20/V2G_CI_ACDP.xsd",
    ISO20_WPT: "iso15118-20/V2G_CI_WPT.xsd",
}
NAMESPACES: tuple[str, ...] = tuple(ROOT_SCHEMAS)
#: Short names (as in `evse exi --proto`), for test ids and messages.
SHORT_NAMES: dict[str, str] = {
    SAP: "sap",
    DIN: "din",
    ISO2: "iso2",
    ISO20_COMMON: "iso20-common",
    ISO20_AC: "iso20-ac",
    ISO20_DC: "iso20-dc",
    ISO20_ACDP: "iso20-acdp",
    ISO20_WPT: "iso20-wpt",
}

_XSD = "{http://www.w3.org/2001/XMLSchema}"
_XMLDSIG = "{http://www.w3.org/2000/09/xmldsig#}"
_MAIL = "NoClassDefFoundError javax/mail/internet/MimeMultipart"

#: The -2 and DIN grammars wrap every message in V2G_Message/Body; the body element's name is the type.
_BODY_HEADS = {DIN: "{urn:din:70121:2012:MsgDef}BodyElement", ISO2: "{urn:iso:15118:2:2013:MsgBody}BodyElement"}

#: Namespaces whose messages the oracle refuses to encode ("A descriptor with default root element ...
#: was not found in the project": its codec never loads classes for them).
ORACLE_UNSUPPORTED_NAMESPACES: dict[str, str] = {
    ISO20_ACDP: "no JAXB classes loaded for the ACDP namespace",
    ISO20_WPT: "no JAXB classes loaded for the WPT namespace",
}
#: Elements the oracle fails on although the schema allows them (each is in a choice or optional).
#: base64Binary inside mixed or repeated-choice content needs javax.mail, which the oracle's jar lacks.
ORACLE_UNSUPPORTED_ELEMENTS: dict[str, str] = {
    f"{_XMLDSIG}X509SKI": _MAIL,
    f"{_XMLDSIG}X509Certificate": _MAIL,
    f"{_XMLDSIG}X509CRL": _MAIL,
    f"{_XMLDSIG}PGPData": f"{_MAIL} (PGPKeyID, PGPKeyPacket)",
    f"{_XMLDSIG}SPKIData": f"{_MAIL} (SPKISexp)",
}
#: Namespaces in which the oracle fails on every base64Binary value (same javax.mail error): in DIN
#: this rules out the xmldsig Signature (DigestValue, SignatureValue), certificates, keys and
#: SigMeterReading, and so the PnC message types and every IDREF target.
ORACLE_NO_BASE64: dict[str, str] = {DIN: _MAIL}
#: Optional elements the oracle's classes hold in a primitive field: absent, they are encoded as 0
#: anyway. Found by decoding and confirmed against the class fields of its jar.
ORACLE_ZERO_FILLED: dict[str, frozenset[str]] = {
    SAP: frozenset({"SchemaID"}),  # supportedAppProtocolRes (SAP local elements are unqualified)
    ISO2: frozenset(
        {
            "{urn:iso:15118:2:2013:MsgBody}SAScheduleTupleID",  # MeteringReceiptReq
            "{urn:iso:15118:2:2013:MsgDataTypes}EPriceLevel",  # SalesTariffEntry
            "{urn:iso:15118:2:2013:MsgDataTypes}NumEPriceLevels",  # SalesTariff
        }
    ),
}

#: How many occurrences beyond minOccurs a repeated element gets at most, and up to which maxOccurs the
#: exact maximum is also tried (EXI grammars unroll bounded occurrences, so the last one is a case).
_EXTRA_OCCURRENCES = 3
_TRY_MAX_OCCURS_UP_TO = 24
#: Range for xs:integer without bounds (xmldsig HMACOutputLength, X509SerialNumber): beyond 64 bits.
_UNBOUNDED_INTEGER = 2**80
#: Longest string or binary value tried when the schema sets no maxLength, and the longest tried
#: between the bounds (the bounds themselves are always tried).
_SPAN = 40

_NO_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
_CONTROL = "".join(chr(c) for c in range(0x20))
#: Characters XML 1.0 allows (the oracle's pipeline goes through XML text), surrogates excluded.
_XML_TEXT = st.characters(
    codec="utf-8", exclude_categories=_NO_SURROGATES, exclude_characters=_CONTROL.replace("\t\n\r", "") + "\ufffe\uffff"
)
#: The oracle's XML step turns tab, line feed and carriage return in attribute values into spaces
#: (attribute-value normalisation), so oracle-compatible attributes get no control characters at all.
_ATTRIBUTE_TEXT = st.characters(
    codec="utf-8", exclude_categories=_NO_SURROGATES, exclude_characters=_CONTROL + "\ufffe\uffff"
)
_NCNAME_START = string.ascii_letters + "_"
_NCNAME_REST = string.ascii_letters + string.digits + "_.-"

Tree = dict[str, Any]


@functools.cache
def schema(ns: str) -> xmlschema.XMLSchema10:
    """The compiled XSD of the grammar `ns` (cached: compiling takes ~0.1 s)."""
    try:
        root = ROOT_SCHEMAS[ns]
    except KeyError:
        raise ValueError(f"unknown namespace {ns!r}; known: {', '.join(NAMESPACES)}") from None
    return xmlschema.XMLSchema10(str(SCHEMA_DIR / root))


@functools.cache
def message_types(ns: str) -> list[str]:
    """Names of the message types of `ns` (see the module docstring), sorted."""
    return sorted(_roots(ns))


@functools.cache
def oracle_message_types(ns: str) -> list[str]:
    """The message types of `ns` that the oracle can carry (the others: :func:`oracle_refusals`)."""
    return [name for name in message_types(ns) if name not in oracle_refusals(ns)]


@functools.cache
def oracle_refusals(ns: str) -> dict[str, str]:
    """Message types of `ns` the oracle cannot carry at all, with the reason."""
    if ns in ORACLE_UNSUPPORTED_NAMESPACES:
        return dict.fromkeys(message_types(ns), ORACLE_UNSUPPORTED_NAMESPACES[ns])
    generator = _Generator.of(ns, True)
    return {
        name: f"every instance needs what the oracle cannot carry ({ORACLE_NO_BASE64.get(ns, 'see instances.py')})"
        for name, element in _roots(ns).items()
        if not generator.possible(element)
    }


def messages(ns: str, message_type: str, *, oracle_compatible: bool = True) -> SearchStrategy[Tree]:
    """Valid instances of `message_type` in `ns`, as oracle JSON trees (see the module docstring)."""
    if message_type not in message_types(ns):
        raise ValueError(f"{message_type!r} is not a message type of {ns}; known: {message_types(ns)}")
    generator = _Generator.of(ns, oracle_compatible)
    if not generator.possible(_roots(ns)[message_type]):
        raise ValueError(f"no instance of {message_type} in {ns} that the oracle can carry: {oracle_refusals(ns)}")
    return generator.message(message_type)


def to_xml(ns: str, tree: Tree) -> ET.Element:
    """The XML element of a JSON tree of `ns`, children in schema order, so that the XSD can check it.

    Raises ValueError for a key that is neither an attribute nor a child element where it stands."""
    if not isinstance(tree, dict) or len(tree) != 1:
        raise ValueError("a document is an object with exactly one key, the root element's name")
    ((name, value),) = tree.items()
    xsd = schema(ns)
    root = xsd.elements.get(name) or _roots(ns).get(name)
    if root is None:
        raise ValueError(f"{name!r} is not a global element of {ns}")
    return _to_element(root, value)


def _lexical(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    raise ValueError(f"not a simple value: {value!r}")


def _element_particles(group: XsdGroup) -> Iterator[XsdElement]:
    for particle in group:
        if isinstance(particle, XsdGroup):
            yield from _element_particles(particle)
        elif isinstance(particle, XsdElement):
            yield particle


def _to_element(decl: XsdElement, value: Any) -> ET.Element:
    element = ET.Element(decl.name)
    element_type = decl.type
    if not isinstance(element_type, XsdComplexType):
        element.text = _lexical(value)
        return element
    attributes = {a.local_name: a for a in element_type.attributes.values() if isinstance(a, XsdAttribute)}
    if element_type.has_simple_content() and not isinstance(value, dict):
        element.text = _lexical(value)
        return element
    if not isinstance(value, dict):
        raise ValueError(f"{decl.local_name} needs an object, got {value!r}")
    unused = dict(value)
    for key in list(unused):
        if key in attributes:
            element.set(attributes[key].name, _lexical(unused.pop(key)))
    if element_type.has_simple_content():
        element.text = _lexical(unused.pop("value"))
    elif isinstance(element_type.content, XsdGroup):
        for particle in _element_particles(element_type.content):
            target = particle.ref if particle.ref is not None else particle
            for candidate in _substitutes(target) if target.is_global() else [target]:
                if candidate.local_name in unused:
                    items = unused.pop(candidate.local_name)
                    for item in items if isinstance(items, list) else [items]:
                        element.append(_to_element(candidate, item))
    if unused:
        raise ValueError(f"{decl.local_name} has no attribute or child element {sorted(unused)}")
    return element


def _instantiable(element: XsdElement) -> bool:
    return not element.abstract and not (isinstance(element.type, XsdComplexType) and element.type.abstract)


def _substitutes(head: XsdElement) -> list[XsdElement]:
    """Every concrete element that may stand where `head` is referenced: itself and its substitution group
    members (transitively), in a stable order."""
    groups = head.maps.substitution_groups
    found: dict[str, XsdElement] = {}
    pending = [head]
    while pending:
        element = pending.pop()
        if element.name not in found:
            found[element.name] = element
            pending.extend(groups.get(element.name, ()))
    return [element for _, element in sorted(found.items()) if _instantiable(element)]


@functools.cache
def _roots(ns: str) -> dict[str, XsdElement]:
    xsd = schema(ns)
    if ns in _BODY_HEADS:
        head = xsd.maps.elements[_BODY_HEADS[ns]]
        return {e.local_name: e for e in _substitutes(head) if e is not head}
    return {e.local_name: e for e in xsd.elements.values() if _instantiable(e)}


# ----------------------------------------------------------------------------------------------------
# simple values


class _Id(str):
    """A generated xs:ID value; made unique within its document after generation."""

    __slots__ = ()


class _IdRef(str):
    """A generated optional xs:IDREF value; pointed at an ID of its document (or dropped) afterwards."""

    __slots__ = ()


class _RequiredIdRef(_IdRef):
    """A generated required xs:IDREF value; its document gets an ID if it has none."""

    __slots__ = ()


def _builtin_name(simple: Any) -> str:
    """Local name of the nearest XSD built-in type `simple` derives from (e.g. unsignedShort)."""
    current = simple
    while current is not None:
        name = current.name
        if isinstance(name, str) and name.startswith(_XSD):
            return name[len(_XSD) :]
        current = getattr(current, "base_type", None)
    raise ValueError(f"simple type {simple!r} derives from no XSD built-in type")


def _lengths(simple: Any) -> tuple[int, int]:
    exact = getattr(simple, "length", None)
    if exact is not None:
        return exact, exact
    low = simple.min_length or 0
    high = simple.max_length if simple.max_length is not None else max(low, _SPAN)
    return low, high


def _sized(low: int, high: int, make: Callable[[int, int], SearchStrategy[Any]]) -> SearchStrategy[Any]:
    """Values of lengths between `low` and `high`, with both bounds tried in every run."""
    return st.one_of(make(low, min(high, low + _SPAN)), make(high, high), make(low, low))


def _ncname(low: int, high: int) -> SearchStrategy[str]:
    low, high = max(low, 1), max(high, 1)
    rest = st.text(alphabet=_NCNAME_REST, min_size=low - 1, max_size=min(high, low + 20) - 1)
    return st.builds(lambda first, tail: first + tail, st.sampled_from(_NCNAME_START), rest)


def _uri(low: int, high: int) -> SearchStrategy[str]:
    body = st.text(alphabet=string.ascii_letters + string.digits + ":/#._-", max_size=min(high, 60))
    uris = st.builds(lambda scheme, rest: scheme + rest, st.sampled_from(["urn:", "http://", "https://"]), body)
    return uris.map(lambda u: u[:high]).filter(lambda u: len(u) >= low)


def _is_base64(simple: Any) -> bool:
    return (
        simple.is_simple()
        and simple.primitive_type is not None
        and simple.primitive_type.local_name == ("base64Binary")
    )


def _simple_values(simple: Any, *, attribute_text: bool = False) -> SearchStrategy[Any]:
    """Values of the simple type `simple` in their JSON form."""
    if simple.is_list() or simple.is_union():
        raise ValueError(f"list and union types are not used by the V2G schemas: {simple!r}")
    if simple.enumeration:
        return st.sampled_from(list(simple.enumeration))
    builtin = _builtin_name(simple)
    primitive = simple.primitive_type.local_name
    if primitive == "boolean":
        return st.booleans()
    if primitive == "decimal":
        if builtin == "decimal":
            raise ValueError(f"xs:decimal is not used by the V2G schemas: {simple!r}")
        low = simple.min_value if simple.min_value is not None else -_UNBOUNDED_INTEGER
        high = simple.max_value if simple.max_value is not None else _UNBOUNDED_INTEGER
        bounds = list(dict.fromkeys([low, high, 0 if low <= 0 <= high else low]))
        return st.one_of(st.sampled_from(bounds), st.integers(low, high))
    low, high = _lengths(simple)
    if primitive == "hexBinary":
        return _sized(low, high, lambda a, b: st.binary(min_size=a, max_size=b)).map(lambda b: b.hex().upper())
    if primitive == "base64Binary":
        return _sized(low, high, lambda a, b: st.binary(min_size=a, max_size=b)).map(
            lambda b: base64.b64encode(b).decode("ascii")
        )
    if builtin == "ID":
        return _ncname(low, high).map(_Id)
    if builtin in ("IDREF", "NCName"):
        return _ncname(low, high)
    if primitive == "anyURI":
        return _uri(low, high)
    if primitive == "string":
        facets = getattr(simple, "patterns", None)
        if facets is not None:
            # xmlschema translates the XSD regexes to Python ones; every pattern facet must hold.
            compiled = list(facets.patterns)
            return st.from_regex(compiled[0], fullmatch=True).filter(
                lambda s: low <= len(s) <= high and all(p.fullmatch(s) for p in compiled[1:])
            )
        alphabet = _ATTRIBUTE_TEXT if attribute_text else _XML_TEXT
        return _sized(low, high, lambda a, b: st.text(alphabet=alphabet, min_size=a, max_size=b))
    raise ValueError(f"no generator for the simple type {simple!r} (primitive {primitive})")


# ----------------------------------------------------------------------------------------------------
# structures


def _merge(parts: Iterable[Tree]) -> Tree:
    """One content object from the fragments of its particles; repeated keys concatenate their arrays."""
    merged: Tree = {}
    for part in parts:
        for key, value in part.items():
            if key not in merged:
                merged[key] = value
            elif isinstance(merged[key], list) and isinstance(value, list):
                merged[key] = merged[key] + value
            else:
                raise ValueError(f"element {key!r} occurs twice in one content model")
    return merged


def _occurrences(low: int, high: int | None) -> SearchStrategy[int]:
    cap = low + _EXTRA_OCCURRENCES if high is None else min(high, low + _EXTRA_OCCURRENCES)
    counts = st.integers(low, cap)
    if high is not None and cap < high <= _TRY_MAX_OCCURS_UP_TO:
        counts = st.one_of(counts, st.just(high))
    return counts


def _keyed(name: str, value: Any) -> Tree:
    return {name: value}


def _exactly(values: SearchStrategy[Any], count: int) -> SearchStrategy[list[Any]]:
    return st.lists(values, min_size=count, max_size=count)


def _optional(present: SearchStrategy[Tree]) -> SearchStrategy[Tree]:
    return st.one_of(st.just({}), present)


def _walk_dicts(tree: Any) -> Iterator[Tree]:
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from _walk_dicts(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _walk_dicts(item)


def _unique_ids(tree: Tree) -> list[str]:
    """Rename repeated xs:ID values (suffix ``_<n>``) and return all of them."""
    seen: list[str] = []
    for node in _walk_dicts(tree):
        for key, value in node.items():
            if isinstance(value, _Id):
                unique, n = str(value), 1
                while unique in seen:
                    unique, n = f"{value}_{n}", n + 1
                node[key] = _Id(unique)
                seen.append(unique)
    return seen


def _plain(tree: Any) -> Any:
    """`tree` with the marker string classes turned back into plain str."""
    if isinstance(tree, dict):
        return {key: _plain(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_plain(item) for item in tree]
    return str(tree) if isinstance(tree, str) else tree


class _Generator:
    """Strategies for the types of one grammar in one mode, built once and cached."""

    _instances: dict[tuple[str, bool], _Generator] = {}  # noqa: RUF012 - a process-wide cache

    def __init__(self, ns: str, oracle_compatible: bool) -> None:
        self.ns = ns
        self.schema = schema(ns)
        self.oracle = oracle_compatible
        self._values: dict[int, SearchStrategy[Any]] = {}
        self._possible: dict[int, bool] = {}
        signature = self.schema.maps.elements.get(f"{_XMLDSIG}Signature")
        self._signature = signature
        # Whether a document of this grammar can hold an xs:ID at all (DIN's only IDs are in xmldsig).
        self._ids_possible = True
        self._ids_possible = signature is not None and self.possible(signature)
        self._possible.clear()  # computed while _ids_possible was provisional

    @classmethod
    def of(cls, ns: str, oracle_compatible: bool) -> _Generator:
        key = (ns, oracle_compatible)
        if key not in cls._instances:
            cls._instances[key] = cls(ns, oracle_compatible)
        return cls._instances[key]

    # -- what may be generated ------------------------------------------------------------------------

    def allowed(self, element: XsdElement) -> bool:
        """Whether `element` itself may appear (its content is checked by :meth:`possible`)."""
        if not _instantiable(element):
            return False
        return not (self.oracle and element.name in ORACLE_UNSUPPORTED_ELEMENTS)

    def possible(self, element: XsdElement) -> bool:
        """Whether some instance of `element` can be generated in this mode."""
        key = id(element)
        if key not in self._possible:
            self._possible[key] = True  # a recursive type is assumed possible while it is being checked
            self._possible[key] = self.allowed(element) and self._type_possible(element.type)
        return self._possible[key]

    def _simple_possible(self, simple: Any) -> bool:
        return not (self.oracle and self.ns in ORACLE_NO_BASE64 and _is_base64(simple))

    def _type_possible(self, element_type: Any) -> bool:
        if not isinstance(element_type, XsdComplexType):
            return self._simple_possible(element_type)
        for attribute in self._attribute_list(element_type):
            if attribute.use == "required":
                if not self._simple_possible(attribute.type):
                    return False
                if _builtin_name(attribute.type) == "IDREF" and not self._ids_possible:
                    return False
        if element_type.has_simple_content():
            return self._simple_possible(element_type.content)
        content = element_type.content
        return not isinstance(content, XsdGroup) or content.min_occurs == 0 or self._group_possible(content)

    def _group_possible(self, group: XsdGroup) -> bool:
        needed = [p for p in group if p.min_occurs > 0]
        if group.model == "choice":
            return any(self._particle_possible(p) for p in group) or any(p.min_occurs == 0 for p in group)
        return all(self._particle_possible(p) for p in needed)

    def _particle_possible(self, particle: Any) -> bool:
        if isinstance(particle, XsdAnyElement):
            return particle.min_occurs == 0
        if isinstance(particle, XsdGroup):
            return particle.min_occurs == 0 or self._group_possible(particle)
        return bool(self._candidates(particle)) or particle.min_occurs == 0

    def _candidates(self, particle: XsdElement) -> list[XsdElement]:
        """The elements that may appear for an element particle: for a reference to a global element its
        substitution group, for a local element itself; minus what cannot be generated in this mode."""
        target = particle.ref if particle.ref is not None else particle
        elements = _substitutes(target) if target.is_global() else [target]
        return [element for element in elements if self.possible(element)]

    def _required(self, particle: XsdElement) -> bool:
        # Elements the oracle fills in with 0 when absent are always generated in oracle-compatible mode.
        target = particle.ref if particle.ref is not None else particle
        return self.oracle and target.name in ORACLE_ZERO_FILLED.get(self.ns, frozenset())

    @staticmethod
    def _attribute_list(complex_type: XsdComplexType) -> list[XsdAttribute]:
        return [a for a in complex_type.attributes.values() if isinstance(a, XsdAttribute)]

    # -- strategies -----------------------------------------------------------------------------------

    def message(self, message_type: str) -> SearchStrategy[Tree]:
        root = _roots(self.ns)[message_type]
        if self.ns in _BODY_HEADS:
            v2g_type = self.schema.elements["V2G_Message"].type
            assert isinstance(v2g_type, XsdComplexType) and isinstance(v2g_type.content, XsdGroup)
            header = next(e for e in _element_particles(v2g_type.content) if e.local_name == "Header")
            content = st.fixed_dictionaries(
                {
                    "Header": self._value(header),
                    "Body": self._value(root).map(lambda value: {message_type: value}),
                }
            )
            raw = content.map(lambda c: {"V2G_Message": c})
        else:
            raw = self._value(root).map(lambda value: {message_type: value})
        return self._with_valid_ids(raw)

    def _with_valid_ids(self, raw: SearchStrategy[Tree]) -> SearchStrategy[Tree]:
        """Make the xs:ID values of a document unique and point every xs:IDREF at one of them (validity
        constraints of XML 1.0; the oracle resolves IDREFs and fails on a dangling one). A required IDREF
        in a document without any ID gets one from an xmldsig Signature in the V2G_Message header."""
        signatures = self._value(self._signature) if self._signature is not None else st.nothing()

        @st.composite
        def valid(draw: st.DrawFn) -> Tree:
            tree = copy.deepcopy(draw(raw))  # fixed up in place below; strategies may share objects
            ids = _unique_ids(tree)
            refs = [(node, key) for node in _walk_dicts(tree) for key, v in node.items() if isinstance(v, _IdRef)]
            if not ids and any(isinstance(node[key], _RequiredIdRef) for node, key in refs):
                header = tree["V2G_Message"]["Header"]
                header.setdefault("Signature", draw(signatures))
                if not _unique_ids(tree):
                    header["Signature"] = {"Id": _Id("ID_SIGNATURE"), **header["Signature"]}
                ids = _unique_ids(tree)
            for node, key in refs:
                if ids:
                    node[key] = draw(st.sampled_from(ids))
                else:
                    del node[key]  # an optional IDREF with nothing to refer to
            return _plain(tree)  # type: ignore[no-any-return]

        return valid()

    def _value(self, element: XsdElement) -> SearchStrategy[Any]:
        """An element's value: a simple value, ``{<attributes>, "value": ...}`` or a content object."""
        element_type = element.type
        if not isinstance(element_type, XsdComplexType):
            return _simple_values(element_type)
        key = id(element_type)
        if key not in self._values:
            # Placeholder first, so a type that contains itself gets the finished strategy.
            self._values[key] = st.deferred(lambda: self._values[key])
            self._values[key] = self._complex(element_type)
        return self._values[key]

    def _complex(self, complex_type: XsdComplexType) -> SearchStrategy[Any]:
        attributes = self._attributes(complex_type)
        if complex_type.has_simple_content():
            value = _simple_values(complex_type.content)
            if not complex_type.attributes:
                return value
            # Attributes before "value", as the oracle writes them (see the module docstring).
            return st.tuples(attributes, st.fixed_dictionaries({"value": value})).map(_merge)
        content = complex_type.content
        if not isinstance(content, XsdGroup):
            return attributes
        # The oracle keeps mixed content as one list: every child element of a mixed type is an array.
        children = self._group(content, in_list=bool(complex_type.mixed))
        if content.min_occurs == 0:
            children = _optional(children)
        return st.tuples(attributes, children).map(_merge)

    def _attributes(self, complex_type: XsdComplexType) -> SearchStrategy[Tree]:
        parts: list[SearchStrategy[Tree]] = []
        for attribute in self._attribute_list(complex_type):
            name = attribute.local_name
            required = attribute.use == "required"
            values = _simple_values(attribute.type, attribute_text=self.oracle)
            if _builtin_name(attribute.type) == "IDREF":
                if not self._ids_possible:
                    continue  # optional (a required one makes the type impossible): nothing to refer to
                values = values.map(_RequiredIdRef if required else _IdRef)
            present = values.map(functools.partial(_keyed, name))
            parts.append(present if required else _optional(present))
        return st.tuples(*parts).map(_merge) if parts else st.just({})

    def _group(self, group: XsdGroup, *, in_list: bool) -> SearchStrategy[Tree]:
        """Content fragment of all the occurrences of `group` (at least one; the caller handles none)."""
        repeated = group.max_occurs != 1
        in_list = in_list or repeated  # children of a repeated group may occur more than once: arrays
        particles = [p for p in group if not isinstance(p, XsdAnyElement) and self._particle_possible(p)]
        if group.model == "choice":
            branches = [self._particle(p, in_list) for p in particles if self._branch_has_content(p)]
            if not branches:
                return st.just({})
            if not repeated:
                return st.one_of(*branches)
            # A repeated choice repeats one branch: JSON cannot keep the order of different children.
            counts = _occurrences(max(group.min_occurs, 1), group.max_occurs)
            return st.sampled_from(branches).flatmap(
                lambda branch: counts.flatmap(lambda n: st.tuples(*([branch] * n)).map(_merge))
            )
        one = st.tuples(*(self._particle(p, in_list) for p in particles)).map(_merge)
        if not repeated:
            return one
        counts = _occurrences(max(group.min_occurs, 1), group.max_occurs)
        return counts.flatmap(lambda n: st.tuples(*([one] * n)).map(_merge))

    def _branch_has_content(self, particle: Any) -> bool:
        return not isinstance(particle, XsdElement) or bool(self._candidates(particle))

    def _particle(self, particle: Any, in_list: bool) -> SearchStrategy[Tree]:
        if isinstance(particle, XsdGroup):
            inner = self._group(particle, in_list=in_list)
            return _optional(inner) if particle.min_occurs == 0 else inner
        candidates = self._candidates(particle)
        if not candidates:
            return st.just({})  # optional and impossible in this mode
        as_list = in_list or particle.max_occurs != 1
        options: list[SearchStrategy[Tree]] = []
        for element in candidates:
            name = element.local_name
            value = self._value(element)
            if as_list:
                counts = _occurrences(max(particle.min_occurs, 1), particle.max_occurs)
                items = counts.flatmap(functools.partial(_exactly, value))
                options.append(items.map(functools.partial(_keyed, name)))
            else:
                options.append(value.map(functools.partial(_keyed, name)))
        present = st.one_of(*options)
        if particle.min_occurs == 0 and not self._required(particle):
            return _optional(present)
        return present
