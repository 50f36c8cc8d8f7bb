"""The grammars the codec knows: one per V2G namespace, each compiled from its root XSD.

Namespaces from standards-facts.md 2.1/2.2; the root schema of each is the XSD whose target namespace
it is (the imports bring in the rest, e.g. xmldsig for -2 and DIN, CommonTypes for -20).
"""

from enum import StrEnum


class Namespace(StrEnum):
    """The grammar (and so the protocol) a stream is coded with."""

    SAP = "urn:iso:15118:2:2010:AppProtocol"
    DIN = "urn:din:70121:2012:MsgDef"
    ISO2 = "urn:iso:15118:2:2013:MsgDef"
    ISO20_COMMON = "urn:iso:std:iso:15118:-20:CommonMessages"
    ISO20_AC = "urn:iso:std:iso:15118:-20:AC"
    ISO20_DC = "urn:iso:std:iso:15118:-20:DC"
    ISO20_ACDP = "urn:iso:std:iso:15118:-20:ACDP"
    ISO20_WPT = "urn:iso:std:iso:15118:-20:WPT"


# Not a message namespace: the grammar of xmldsig alone, which ISO 15118-2 and -20 encode SignedInfo
# with (as an EXI fragment) to compute and check signatures.
XMLDSIG = "http://www.w3.org/2000/09/xmldsig#"

# Root XSD of each grammar, relative to firmware/iso15118/schemas/ (keys: the namespace strings).
ROOT_SCHEMAS: dict[str, str] = {
    Namespace.SAP: "V2G_CI_AppProtocol.xsd",
    Namespace.DIN: "din70121/V2G_CI_MsgDef.xsd",
    Namespace.ISO2: "iso15118-2/V2G_CI_MsgDef.xsd",
    Namespace.ISO20_COMMON: "iso15118-20/V2G_CI_CommonMessages.xsd",
    Namespace.ISO20_AC: "iso15118-20/V2G_CI_AC.xsd",
    Namespace.ISO20_DC: "iso15118-20/V2G_CI_DC.xsd",
    Namespace.ISO20_ACDP: "iso15118-20/V2G_CI_ACDP.xsd",
    Namespace.ISO20_WPT: "iso15118-20/V2G_CI_WPT.xsd",
    XMLDSIG: "xmldsig-core-schema.xsd",
}

# Short names of the generated grammar tables (firmware/iso15118/exi/tables/<name>.json).
TABLE_NAMES: dict[str, str] = {
    Namespace.SAP: "sap",
    Namespace.DIN: "din",
    Namespace.ISO2: "iso2",
    Namespace.ISO20_COMMON: "iso20_common",
    Namespace.ISO20_AC: "iso20_ac",
    Namespace.ISO20_DC: "iso20_dc",
    Namespace.ISO20_ACDP: "iso20_acdp",
    Namespace.ISO20_WPT: "iso20_wpt",
    XMLDSIG: "xmldsig",
}
