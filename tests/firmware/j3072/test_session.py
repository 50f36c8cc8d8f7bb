"""A connector's J3072 session end to end in process: scripted PEV -> 2030.5 resources -> gate -> manager."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest

from firmware.energy.der_settings import DerSettings
from firmware.j3072.gatekeeper import ApprovalFact
from firmware.j3072.resources import Reply, Sep2Resources
from firmware.j3072.session import SETPOINT_PERIOD_S, AuditRecord, J3072Hooks, J3072Session
from firmware.j3072.site_parameters import SiteParameters
from hil.models.j3072_pev import Sep2PevClient

PARAMS = SiteParameters(
    der=DerSettings.from_dict({"f_nom_hz": 60, "v_nom_v": 240, "p_rated_w": 7600}),
    max_discharge_w=6000,
    max_charge_w=11500,
    max_current_a=48,
)
APPROVED = ("ACME/OBI/7K6A/J3072_202406",)


@dataclass
class Rig:
    """The session with stand-ins for the energy manager, the backend and the approval list."""

    approval: Callable[[str], ApprovalFact] = field(
        default=lambda ism: ApprovalFact(ism in APPROVED, "approved" if ism in APPROVED else "ism_not_listed")
    )
    parameters: SiteParameters | None = PARAMS
    site_problem: str | None = None
    backend: bool | None = True
    manager_allows: bool = True
    share_w: float | None = -4000.0  # the manager's signed share (+ = charge): 4 kW discharge wanted
    now: float = 0.0
    grants: list[float | None] = field(default_factory=list)
    audit: list[AuditRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.resources = Sep2Resources(wall_clock=lambda: 1_800_000_000 + self.now)
        self.session = J3072Session(
            1,
            self.resources,
            parameters=self.parameters,
            site_problem=self.site_problem,
            accepted_editions=("J3072_202103", "J3072_202406"),
            approval_required=True,
            hooks=J3072Hooks(
                authorise_discharge=self.grants.append,
                setpoint=lambda: self.share_w,
                manager_v2x=lambda: (self.manager_allows, "V2X program enabled" if self.manager_allows else "off"),
                approval=self.approval,
            ),
            monotonic=lambda: self.now,
            wall_clock=lambda: 1_800_000_000 + self.now,
            audit=[self.audit.append],
        )
        self.session.set_backend_v2x(self.backend)
        self.pev = Sep2PevClient(self.resources)

    def plug_in(self) -> None:
        self.session.start()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.session.step()


def _good(rig: Rig) -> None:
    rig.plug_in()
    rig.pev.connect_fully()
    rig.advance(0.5)


def test_all_good_pev_is_authorised_and_gets_the_managers_discharge() -> None:
    rig = Rig()
    _good(rig)
    assert rig.session.authorised
    # min(site 6 kW, PEV 7.6 kW, the PEV's applied maximum: opModMaxLimW 78.94 % of 7.6 kW = 5999 W)
    assert rig.grants[-1] == 5999
    assert rig.pev.active_target_w() == 4000  # 2030.5 sign: + = inject
    assert rig.audit[-1].authorised and rig.audit[-1].ism == APPROVED[0]


def _uncertified(rig: Rig) -> None:
    rig.pev.ism = "ACME/OBI/7K6A/NONE"


def _unlisted(rig: Rig) -> None:
    rig.pev.ism = "ACME/OBI/9X/J3072_202406"


def _expired(rig: Rig) -> None:
    rig.session.hooks.approval = lambda ism: ApprovalFact(False, "list_expired", "valid until 2026-01-01")


def _tampered(rig: Rig) -> None:
    rig.session.hooks.approval = lambda ism: ApprovalFact(False, "no_list", "last update: signature does not verify")


def _no_settings(rig: Rig) -> None:
    rig.pev.apply_and_report = lambda params, **kw: Reply(204)  # type: ignore[method-assign]


def _wrong_readback(rig: Rig) -> None:
    original = rig.pev.apply_and_report
    rig.pev.apply_and_report = lambda params, **kw: original(params, max_discharge_w=6500)  # type: ignore[method-assign]


def _wrong_vref(rig: Rig) -> None:
    original = rig.pev.apply_and_report
    rig.pev.apply_and_report = lambda params, **kw: original(params, v_ref=230)  # type: ignore[method-assign]


def _backend_forbids(rig: Rig) -> None:
    rig.session.set_backend_v2x(False, "V2X disabled by the CSMS")


def _manager_forbids(rig: Rig) -> None:
    rig.manager_allows = False


DENIALS: list[tuple[str, Callable[[Rig], None], str]] = [
    ("uncertified PEV", _uncertified, "pev_not_certified"),
    ("unapproved ISM", _unlisted, "ism_not_approved"),
    ("expired approval list", _expired, "approval_list_expired"),
    ("tampered approval list", _tampered, "no_approval_list"),
    ("parameters not acknowledged", _no_settings, "parameters_not_acknowledged"),
    ("read back wrong (discharge maximum)", _wrong_readback, "parameters_mismatch"),
    ("read back wrong (nominal voltage)", _wrong_vref, "parameters_mismatch"),
    ("backend forbids V2X", _backend_forbids, "backend_forbids_v2x"),
    ("energy manager forbids V2X", _manager_forbids, "energy_manager_forbids_v2x"),
]


@pytest.mark.parametrize(("case", "breaks", "reason"), DENIALS, ids=[d[0] for d in DENIALS])
def test_each_link_failing_alone_ends_in_charge_only(case: str, breaks: Callable[[Rig], None], reason: str) -> None:
    rig = Rig()
    for share in (-4000.0, 5000.0):
        rig = Rig(share_w=share)
        breaks(rig)
        _good(rig)
        assert not rig.session.authorised
        assert rig.session.decision is not None and rig.session.decision.reason == reason
        assert all(grant is None for grant in rig.grants), "discharge was never allowed at the manager"
        # Charge only (U6): a discharge share becomes 0, a charge share goes through (2030.5: - = absorb).
        assert rig.pev.active_target_w() == (0 if share < 0 else -share)
        assert rig.audit[-1].reason == reason and not rig.audit[-1].authorised


def test_site_not_configured() -> None:
    rig = Rig(parameters=None, site_problem="no interconnection agreement on file")
    rig.plug_in()
    assert rig.pev.register().status == 201
    assert rig.pev.call("GET", "/edev/1/derp/1/dderc").status == 404  # no parameters to give
    rig.advance(1)
    assert rig.session.decision is not None and rig.session.decision.reason == "site_not_configured"
    assert "interconnection agreement" in rig.session.decision.detail


def test_unplug_ends_the_authorisation_and_the_next_pev_starts_from_nothing() -> None:
    rig = Rig()
    _good(rig)
    rig.session.end("EV unplugged")
    assert rig.grants[-1] is None
    assert rig.audit[-1].reason == "session_ended" and not rig.audit[-1].authorised
    rig.plug_in()
    rig.advance(1)
    assert rig.session.decision is not None and rig.session.decision.reason == "pev_not_certified"
    assert rig.pev.call("GET", "/edev/1").status == 404  # the old registration is gone


def test_a_parameter_change_needs_a_new_read_back() -> None:
    rig = Rig()
    _good(rig)
    rig.session.set_parameters(replace(PARAMS, max_discharge_w=3000, version=2))
    assert not rig.session.authorised
    assert rig.session.decision is not None and rig.session.decision.reason == "parameters_not_acknowledged"
    assert rig.grants[-1] is None
    # The PEV reads the new parameters and reports them applied with the lower maximum.
    rig.pev.apply_and_report(rig.pev.read_site_parameters())
    rig.advance(0.5)
    assert rig.session.authorised and rig.grants[-1] == pytest.approx(3000, abs=1)


def test_a_check_failing_mid_session_withdraws_at_once() -> None:
    rig = Rig()
    _good(rig)
    assert rig.pev.active_target_w() == 4000
    rig.session.set_backend_v2x(False, "grid operator curtailment")
    assert rig.grants[-1] is None
    assert rig.pev.active_target_w() == 0  # the new control went out in the same step


def test_setpoints_are_republished_every_period_and_follow_the_share() -> None:
    rig = Rig()
    _good(rig)
    published = rig.resources.controls[-1].index
    rig.advance(SETPOINT_PERIOD_S / 2)
    assert rig.resources.controls[-1].index == published  # nothing moved, not yet due
    rig.advance(SETPOINT_PERIOD_S / 2)
    assert rig.resources.controls[-1].index == published + 1  # due again
    assert [c.status for c in rig.resources.controls] == [4, 1]  # the old one superseded
    rig.share_w = 2000.0  # the regulation signal swings to charging: published at once
    rig.advance(0.1)
    assert rig.pev.active_target_w() == -2000


def test_responses_to_controls_are_recorded() -> None:
    rig = Rig()
    _good(rig)
    control = rig.resources.controls[-1]
    body = (
        '<Response xmlns="urn:ieee:std:2030.5:ns"><createdDateTime>1</createdDateTime>'
        f"<endDeviceLFDI>{rig.pev.lfdi}</endDeviceLFDI><status>2</status><subject>{control.mrid}</subject></Response>"
    )
    assert rig.pev.call("POST", "/rsps/1/rsp", body).status == 201
    assert rig.resources.pev is not None and rig.resources.pev.responses[control.mrid] == 2


def test_a_failing_hook_ends_in_charge_only_not_in_an_exception() -> None:
    rig = Rig()
    _good(rig)

    def broken() -> tuple[bool, str]:
        raise RuntimeError("manager crashed")

    rig.session.hooks.manager_v2x = broken
    rig.advance(0.5)
    assert not rig.session.authorised and rig.grants[-1] is None
