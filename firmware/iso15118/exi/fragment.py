"""EXI fragments (W3C EXI 1.0 2nd ed. 8.5.2, 8.5.3): what ISO 15118-2/-20 signatures are computed over.

The ``iso15118`` package hands these roots to EXIficient in fragment mode (its AbstractEXICodec lists
them as fragmentGrammarElements_ISO15118_2, signatureElements and signatureElements_20); the codec does
the same, so a digest computed over our bytes equals one computed over the oracle's.
"""

from functools import cache
from typing import Any

from .bitstream import HEADER, BitWriter
from .datatypes import write_string_value
from .encoder import encode_element
from .errors import ExiEncodeError
from .grammar import GrammarSet, bits_for, compile_table, load_table
from .namespaces import XMLDSIG, Namespace

FRAGMENT_ROOTS: dict[Namespace, frozenset[str]] = {
    Namespace.ISO2: frozenset(
        {
            "AuthorizationReq",
            "CertificateInstallationReq",
            "MeteringReceiptReq",
            "ContractSignatureCertChain",
            "ContractSignatureEncryptedPrivateKey",
            "DHpublickey",
            "eMAID",
            "SalesTariff",
        }
    ),
    Namespace.ISO20_COMMON: frozenset({"OEMProvisioningCertificateChain", "PnC_AReqAuthorizationMode"}),
}


@cache
def _xmldsig() -> GrammarSet:
    return compile_table(XMLDSIG, load_table(XMLDSIG))


def encode_signed_info(signed_info: dict[str, Any]) -> bytes:
    """The EXI fragment of a SignedInfo element that ISO 15118-2 and -20 signatures are computed over,
    with the grammar of the xmldsig schema alone (the ``iso15118`` package's namespace XML_DSIG):
    ``signed_info`` is the content of SignedInfo in the tree form (CanonicalizationMethod, ...)."""
    return encode_fragment(_xmldsig(), "SignedInfo", signed_info)


def encode_fragment(grammars: GrammarSet, root: str, content: Any) -> bytes:
    """A fragment holding one element: FragmentContent SE(root) ... ED (8.5.2)."""
    prod = grammars.fragment_roots.get(root)
    if prod is None:
        raise ExiEncodeError(f"{root!r} is not an element of {grammars.namespace}")
    writer = BitWriter()
    writer.write_bits(HEADER, 8)
    # FragmentContent: SE(F_0..F_n-1) 0..n-1, SE(*) n, ED n+1; CM and PI are pruned (no preserve options).
    width = grammars.fragment_width
    writer.write_bits(prod.code, width)
    if prod.target is None:
        _encode_relaxed(writer, grammars, root, content)
    else:
        encode_element(writer, prod.target, content, root)
    writer.write_bits(len(grammars.fragment) + 1, width)
    return writer.getvalue()


def _encode_relaxed(writer: BitWriter, grammars: GrammarSet, root: str, content: Any) -> None:
    """Content of an element whose qname is declared with different types (``eMAID`` in -2): the relaxed
    Element Fragment grammar of 8.5.3, supported for attributes and a simple value.

    ElementFragment_0: AT(A_0..A_n-1) 0..n-1, AT(*) n, SE(F_0..F_m-1) n+1..n+m, SE(*) n+m+1, EE n+m+2,
    CH [untyped value] n+m+3; ElementFragment_2: SE(F_j) j, SE(*) m, EE m+1, CH m+2. Both have undeclared
    second-level productions (8.5.4.4), so their first parts have one value more than they list.
    """
    n = len(grammars.fragment_attributes)
    m = len(grammars.fragment)
    if not isinstance(content, dict):
        raise ExiEncodeError(f"{root}: expected an object, got {type(content).__name__}")
    # The JSON keys tell which declaration is meant; its attributes give the qnames to look up in A.
    grammar = next((g for g in grammars.relaxed[root] if g.kind == "complex" and set(content) <= g.keys), None)
    if grammar is None or any(role == "elem" for key, role, _ in grammar.props if key in content):
        raise ExiEncodeError(f"{root}: only attributes and a value are supported in a relaxed fragment")
    width0 = bits_for(n + m + 4 + 1)
    attribute_codes = {(p.local, p.uri): p for p in grammars.fragment_attributes}
    state = grammar.states[0]
    for key, role, _ in grammar.props:
        if key not in content or role != "attr":
            continue
        declared = state.attributes[key]
        target = attribute_codes[(declared.local, declared.uri)]
        writer.write_bits(target.code, width0)
        assert target.datatype is not None
        target.datatype.encode(writer, content[key], f"{root}/@{key}")
        state = grammar.states[declared.next_state]
    value = content.get("value")
    if grammar.value_type is not None and value is not None and not grammar.value_type.is_empty(value):
        # The value is untyped here: its lexical form as a string literal.
        writer.write_bits(n + m + 3, width0)
        write_string_value(writer, _lexical(value))
        writer.write_bits(m + 1, bits_for(m + 3 + 1))  # EE in ElementFragment_2
    else:
        writer.write_bits(n + m + 2, width0)  # EE in ElementFragment_0


def _lexical(value: Any) -> str:
    """The XML lexical form the JAXB layer gives a JSON scalar."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
