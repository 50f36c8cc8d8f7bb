"""The J3072 gate: every link failing alone denies with its own reason; all positive authorises."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.j3072.gatekeeper import CHAIN, REASONS, ApprovalFact, GateFacts, evaluate
from firmware.j3072.ism import IsmNumber

GOOD = GateFacts(
    site_problem=None,
    ism=IsmNumber.parse("ACME/OBI/7K6A/J3072_202406"),
    ism_problem="",
    accepted_editions=("J3072_202103", "J3072_202406"),
    approval_required=True,
    approval=ApprovalFact(True, "approved", "listed by PG&E serial 4"),
    parameters_version=3,
    acknowledged_version=3,
    readback_problems=(),
    backend_v2x=True,
    manager_v2x=True,
)

# (case, the one change to the all-good facts, the reason the decision must carry)
ALONE = [
    ("site not configured", {"site_problem": "no interconnection agreement on file"}, "site_not_configured"),
    ("no ISM number yet", {"ism": None, "ism_problem": "no DeviceInformation"}, "pev_not_certified"),
    ("uncertified PEV", {"ism": IsmNumber.parse("ACME/OBI/7K6A/NONE")}, "pev_not_certified"),
    ("edition not accepted", {"ism": IsmNumber.parse("ACME/OBI/7K6A/J3072_201505")}, "pev_not_certified"),
    ("ISM not on the list", {"approval": ApprovalFact(False, "ism_not_listed", "")}, "ism_not_approved"),
    ("no approval list", {"approval": ApprovalFact(False, "no_list", "tampered")}, "no_approval_list"),
    ("approval list expired", {"approval": ApprovalFact(False, "list_expired", "")}, "approval_list_expired"),
    ("list not yet valid", {"approval": ApprovalFact(False, "list_not_yet_valid", "")}, "approval_list_not_yet_valid"),
    ("list not consulted", {"approval": None}, "ism_not_approved"),
    ("no DERSettings", {"acknowledged_version": None}, "parameters_not_acknowledged"),
    ("DERSettings for old parameters", {"acknowledged_version": 2}, "parameters_not_acknowledged"),
    ("read back wrong", {"readback_problems": ("setMaxDischargeRateW above",)}, "parameters_mismatch"),
    ("backend forbids V2X", {"backend_v2x": False}, "backend_forbids_v2x"),
    ("backend silent", {"backend_v2x": None}, "backend_forbids_v2x"),
    ("energy manager forbids", {"manager_v2x": False}, "energy_manager_forbids_v2x"),
]


def test_all_links_positive_authorises() -> None:
    decision = evaluate(GOOD)
    assert decision.authorised and decision.reason == "authorised"
    assert [link.link for link in decision.links] == [name for name, _ in CHAIN]
    assert all(link.ok for link in decision.links)


@pytest.mark.parametrize(("case", "change", "reason"), ALONE, ids=[c[0] for c in ALONE])
def test_each_link_failing_alone_denies_with_its_reason(case: str, change: dict[str, object], reason: str) -> None:
    decision = evaluate(replace(GOOD, **change))  # type: ignore[arg-type]
    assert not decision.authorised
    assert decision.reason == reason
    assert reason in REASONS
    assert [link.ok for link in decision.links].count(False) == 1, "exactly one link fails"


def test_approval_not_required_relies_on_certification() -> None:
    decision = evaluate(replace(GOOD, approval_required=False, approval=None))
    assert decision.authorised
    uncertified = evaluate(replace(GOOD, approval_required=False, ism=IsmNumber.parse("A/B/C/NONE")))
    assert uncertified.reason == "pev_not_certified"


def test_default_facts_deny() -> None:
    assert evaluate(GateFacts()).reason == "site_not_configured"
    assert not evaluate(GateFacts(site_problem=None)).authorised


def test_the_first_failing_link_in_chain_order_decides() -> None:
    decision = evaluate(replace(GOOD, backend_v2x=False, readback_problems=("x",), ism=None))
    assert decision.reason == "pev_not_certified"
    assert [link.reason for link in decision.links if not link.ok] == [
        "pev_not_certified",
        "parameters_mismatch",
        "backend_forbids_v2x",
    ]


_FLIPS = st.fixed_dictionaries(
    {},
    optional={
        "site_problem": st.just("no agreement"),
        "ism": st.just(None),
        "approval": st.sampled_from([None, ApprovalFact(False, "list_expired")]),
        "acknowledged_version": st.sampled_from([None, 1]),
        "readback_problems": st.just(("x",)),
        "backend_v2x": st.sampled_from([None, False]),
        "manager_v2x": st.just(False),
    },
)


@given(_FLIPS)
def test_authorised_only_when_nothing_is_wrong(change: dict[str, object]) -> None:
    decision = evaluate(replace(GOOD, **change))  # type: ignore[arg-type]
    assert decision.authorised == (not change)
    assert decision.reason in REASONS
