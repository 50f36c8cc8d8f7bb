"""The J3072 discharge gate: the one place that decides whether a PEV's onboard inverter may discharge.

Seed 003 / R106-R110: the EVSE is the utility's gatekeeper. At every connection it checks that the PEV's
Inverter System Model is certified to J3072 (always) and approved for this service area (when the
utility keeps an approval list), transfers the site's parameters to the inverter and verifies that it
applied them; only then does it authorise discharge, for this session only. Anything else: charge only
(SAE U6 rate control), with the reason recorded.

:func:`evaluate` walks :data:`CHAIN` in order and stops at the first link that is not positive: the
decision names that link's reason. It is pure (facts in, decision out); :mod:`firmware.j3072.session`
gathers the facts, keeps them to the session they belong to, and acts on the decision. Default deny:
every fact starts unknown, and unknown is a denial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from firmware.j3072.ism import IsmNumber

__all__ = ["CHAIN", "REASONS", "Decision", "GateFacts", "LinkResult", "evaluate"]


@dataclass(frozen=True)
class ApprovalFact:
    """The approval list's answer for this PEV's ISM (firmware.j3072.approval.ApprovalStore.check)."""

    approved: bool
    reason: str  # approved | no_list | list_expired | list_not_yet_valid | ism_not_listed
    detail: str = ""


@dataclass(frozen=True)
class GateFacts:
    """What the gate knows about this session; every field starts at 'unknown' (deny)."""

    #: The site's interconnection settings (R113): None = configured; else why not.
    site_problem: str | None = "no J3072 site configuration"
    #: The PEV's ISM number as parsed from its DeviceInformation, or why there is none.
    ism: IsmNumber | None = None
    ism_problem: str = "the PEV has not sent its DeviceInformation"
    #: The J3072 editions this site accepts (a utility may not accept the 2015 edition, standards-facts 3.1).
    accepted_editions: tuple[str, ...] = ()
    #: Whether the utility requires its ISM approval list here (R107) and the list's answer.
    approval_required: bool = True
    approval: ApprovalFact | None = None
    #: The version of the site parameters the EVSE publishes now, and the version the PEV's last
    #: DERSettings answered (None: none since the session started).
    parameters_version: int = 0
    acknowledged_version: int | None = None
    #: The differences between the PEV's DERSettings and the site parameters (empty = applied).
    readback_problems: tuple[str, ...] = ()
    #: V2X allowed by the backend (OCPP) for this station: None = not said (deny).
    backend_v2x: bool | None = None
    backend_detail: str = ""
    #: V2X allowed by the energy manager for this connector (bidirectional, a discharge program enabled).
    manager_v2x: bool = False
    manager_detail: str = ""


@dataclass(frozen=True)
class LinkResult:
    link: str
    ok: bool
    reason: str  # "ok" or the denial reason
    detail: str


@dataclass(frozen=True)
class Decision:
    authorised: bool
    reason: str  # "authorised" or the first failing link's reason
    detail: str
    links: tuple[LinkResult, ...] = field(default=())

    def summary(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


def _site(f: GateFacts) -> LinkResult:
    if f.site_problem is None:
        return LinkResult("site_configured", True, "ok", "interconnection settings configured")
    return LinkResult("site_configured", False, "site_not_configured", f.site_problem)


def _certified(f: GateFacts) -> LinkResult:
    if f.ism is None:
        return LinkResult("certified", False, "pev_not_certified", f.ism_problem)
    if not f.ism.certified:
        return LinkResult("certified", False, "pev_not_certified", f"ISM {f.ism} says it is not certified to J3072")
    if f.ism.certification not in f.accepted_editions:
        return LinkResult(
            "certified",
            False,
            "pev_not_certified",
            f"ISM {f.ism} is certified to {f.ism.certification}, this site accepts {', '.join(f.accepted_editions)}",
        )
    return LinkResult("certified", True, "ok", f"{f.ism} certified to {f.ism.certification}")


#: The approval list's reasons (firmware.j3072.approval) as the gate's denial reasons.
_APPROVAL_REASONS = {
    "no_list": "no_approval_list",
    "list_expired": "approval_list_expired",
    "list_not_yet_valid": "approval_list_not_yet_valid",
    "ism_not_listed": "ism_not_approved",
}


def _approved(f: GateFacts) -> LinkResult:
    if not f.approval_required:
        return LinkResult("ism_approved", True, "ok", "the utility relies on the certification alone")
    if f.approval is None:
        return LinkResult("ism_approved", False, "ism_not_approved", "the approval list was not consulted")
    if f.approval.approved:
        return LinkResult("ism_approved", True, "ok", f.approval.detail or "listed")
    reason = _APPROVAL_REASONS.get(f.approval.reason, "ism_not_approved")
    return LinkResult("ism_approved", False, reason, f.approval.detail or f.approval.reason)


def _acknowledged(f: GateFacts) -> LinkResult:
    if f.acknowledged_version == f.parameters_version:
        return LinkResult("parameters_acknowledged", True, "ok", f"site parameters v{f.parameters_version}")
    if f.acknowledged_version is None:
        detail = "the PEV has not reported its DERSettings since it connected"
    else:
        detail = (
            f"the PEV's DERSettings answer v{f.acknowledged_version}, the site parameters are v{f.parameters_version}"
        )
    return LinkResult("parameters_acknowledged", False, "parameters_not_acknowledged", detail)


def _applied(f: GateFacts) -> LinkResult:
    if not f.readback_problems:
        return LinkResult("parameters_applied", True, "ok", "read back as sent")
    return LinkResult("parameters_applied", False, "parameters_mismatch", "; ".join(f.readback_problems))


def _backend(f: GateFacts) -> LinkResult:
    if f.backend_v2x is True:
        return LinkResult("backend_v2x", True, "ok", f.backend_detail or "allowed")
    detail = f.backend_detail or ("forbidden" if f.backend_v2x is False else "the backend has not allowed V2X")
    return LinkResult("backend_v2x", False, "backend_forbids_v2x", detail)


def _manager(f: GateFacts) -> LinkResult:
    if f.manager_v2x:
        return LinkResult("energy_manager_v2x", True, "ok", f.manager_detail or "allowed")
    return LinkResult("energy_manager_v2x", False, "energy_manager_forbids_v2x", f.manager_detail or "not allowed")


#: The chain, in the order it is checked: the site first (nothing can discharge at a site without an
#: interconnection agreement), then the PEV's identity and approval, then the parameter transfer and its
#: read-back, then the parties who may say no for the moment.
CHAIN: tuple[tuple[str, Callable[[GateFacts], LinkResult]], ...] = (
    ("site_configured", _site),
    ("certified", _certified),
    ("ism_approved", _approved),
    ("parameters_acknowledged", _acknowledged),
    ("parameters_applied", _applied),
    ("backend_v2x", _backend),
    ("energy_manager_v2x", _manager),
)

#: Every reason a decision can carry (the audit's vocabulary; docs/j3072.md).
REASONS = (
    "authorised",
    "site_not_configured",
    "pev_not_certified",
    "no_approval_list",
    "approval_list_expired",
    "approval_list_not_yet_valid",
    "ism_not_approved",
    "parameters_not_acknowledged",
    "parameters_mismatch",
    "backend_forbids_v2x",
    "energy_manager_forbids_v2x",
    "session_ended",
)


def evaluate(facts: GateFacts) -> Decision:
    """Walk the chain; every link is evaluated (for the audit), the first failure decides."""
    links = tuple(check(facts) for _, check in CHAIN)
    for link in links:
        if not link.ok:
            return Decision(False, link.reason, link.detail, links)
    return Decision(True, "authorised", "every link of the J3072 chain is positive", links)
