"""Schema-informed grammars: event-code widths of known states and the checked-in tables."""

import pytest

from firmware.iso15118.exi import Namespace, codec
from firmware.iso15118.exi.builder import build_table, dump_table, table_path
from firmware.iso15118.exi.grammar import (
    L2_AT_ANY,
    L2_AT_UNTYPED,
    L2_CH_UNTYPED,
    L2_EE,
    L2_SE_ANY,
    L2_XSI_NIL,
    L2_XSI_TYPE,
    Grammar,
    GrammarSet,
    compile_table,
    expand_states,
    load_table,
)
from firmware.iso15118.exi.namespaces import ROOT_SCHEMAS, TABLE_NAMES

ISO2_BODY = "urn:iso:15118:2:2013:MsgBody"


def grammars(namespace: Namespace) -> GrammarSet:
    return compile_table(namespace, load_table(namespace))


def element(grammar: Grammar, *path: str) -> Grammar:
    """Follow first-level SE productions by local name from ``grammar``."""
    for name in path:
        target = next(p.target for s in grammar.states for p in s.prods if p.local == name and p.target)
        assert target is not None
        grammar = target
    return grammar


def test_document_grammar_widths() -> None:
    # 8.5.1: n global elements plus SE(*); DT, CM and PI pruned.
    sap = grammars(Namespace.SAP)
    assert [p.local for p in sap.document] == ["supportedAppProtocolReq", "supportedAppProtocolRes"]
    assert sap.document_width == 2
    iso2 = grammars(Namespace.ISO2)
    assert len(iso2.document) == 80 and iso2.document_width == 7
    assert iso2.roots["V2G_Message"].code == 76  # sorted by local name, then URI


def test_substitution_group_includes_the_abstract_head_in_sorted_order() -> None:
    # 8.5.4.1.6: BodyElement and its substitution group, by local name; plus EE (minOccurs 0).
    body = element(grammars(Namespace.ISO2).roots["V2G_Message"].target or Grammar("", "", []), "Body")
    names = [p.local for p in body.states[0].prods]
    assert names[0] == "AuthorizationReq" and "BodyElement" in names and names[-1] == ""
    assert names.index("SessionSetupReq") == 29
    assert body.states[0].width == 6  # 35 members + EE + escape to the second level
    assert "BodyElement" not in body.keys  # abstract: no JSON key


def test_widths_of_states_with_attributes_and_optional_children() -> None:
    iso2 = grammars(Namespace.ISO2)
    authorization = next(p.target for p in iso2.fragment if p.local == "AuthorizationReq")
    assert authorization is not None
    start = authorization.states[0]
    # AT(Id), SE(GenChallenge), EE, escape -> 2 bits; second level (8.5.4.4.1) without EE (first level has it).
    assert [(p.kind, p.local) for p in start.prods][:2] == [(1, "Id"), (0, "GenChallenge")]
    assert start.width == 2
    assert start.second == (L2_XSI_TYPE, L2_XSI_NIL, L2_AT_ANY, L2_AT_UNTYPED, L2_SE_ANY, L2_CH_UNTYPED)
    assert start.second_width == 3


def test_simple_type_states_have_the_full_second_level() -> None:
    # Type_0: CH -> 1 bit; its second level: EE, xsi:type, xsi:nil, AT(*), AT untyped, SE(*), CH untyped.
    header = element(grammars(Namespace.ISO2).roots["V2G_Message"].target or Grammar("", "", []), "Header")
    session_id = element(header, "SessionID")
    assert session_id.kind == "simple"
    start = session_id.states[0]
    assert start.width == 1
    assert start.second == (L2_EE, L2_XSI_TYPE, L2_XSI_NIL, L2_AT_ANY, L2_AT_UNTYPED, L2_SE_ANY, L2_CH_UNTYPED)
    assert start.second_width == 3
    # After SessionID the header may carry Notification, Signature or end: 3 + escape -> 2 bits.
    after = header.states[header.states[0].elements["SessionID"].next_state]
    assert [p.local for p in after.prods] == ["Notification", "Signature", ""]
    assert after.width == 2


def test_bounded_repetition_is_unrolled() -> None:
    # 8.5.4.1.5: maxOccurs="20" gives 20 copies; after the 20th only EE is left.
    request = grammars(Namespace.SAP).roots["supportedAppProtocolReq"].target
    assert request is not None
    state = request.states[0]
    widths = []
    for _ in range(20):
        widths.append(state.width)
        state = request.states[state.elements["AppProtocol"].next_state]
    assert widths == [1] + [2] * 19
    assert [p.local for p in state.prods] == [""] and state.width == 1


def test_message_types_are_the_global_elements() -> None:
    assert codec(Namespace.SAP).message_types() == ["supportedAppProtocolReq", "supportedAppProtocolRes"]
    assert "V2G_Message" in codec(Namespace.DIN).message_types()
    assert {"SessionSetupReq", "ScheduleExchangeRes"} <= set(codec(Namespace.ISO20_COMMON).message_types())
    assert "DC_ChargeLoopReq" in codec(Namespace.ISO20_DC).message_types()


def test_run_length_states_expand_to_shifted_copies() -> None:
    packed = [[["SE", "A", "", 0, 1, True], ["EE"]], {"repeat": 2}]
    assert expand_states(packed) == [
        [["SE", "A", "", 0, 1, True], ["EE"]],
        [["SE", "A", "", 0, 2, True], ["EE"]],
        [["SE", "A", "", 0, 3, True], ["EE"]],
    ]


@pytest.mark.parametrize("namespace", list(TABLE_NAMES))
def test_checked_in_tables_match_a_rebuild_from_the_xsds(namespace: str) -> None:
    assert ROOT_SCHEMAS[namespace].endswith(".xsd")
    assert dump_table(build_table(namespace)) == table_path(namespace).read_text(encoding="utf-8")
