"""`evse run --secc` end to end: the real firmware process on a simulated board speaks ISO 15118-2 over a
veth pair in a private namespace with our EVCC simulator; the contactor closes only inside the session."""

from __future__ import annotations

import json

import pytest

from tests.netns import run_in_netns


@pytest.mark.timeout(150)
def test_evse_run_charges_an_iso15118_2_ev_over_the_network() -> None:
    done = run_in_netns("tests.e2e.iso15118_run_side", "main", timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert "error" not in summary, summary
    assert summary["ok"] and summary["protocol"] == "iso2", summary
    requests = summary["requests"]
    for step in ("SessionSetupReq", "AuthorizationReq", "ChargeParameterDiscoveryReq", "PowerDeliveryReq"):
        assert step in requests, requests
    assert requests.count("ChargingStatusReq") >= 3 and requests[-1] == "SessionStopReq", requests
    assert all(not code.startswith("FAILED") for code in summary["codes"]), summary["codes"]
    # Closed once, during the session, and open again after it.
    assert summary["contactor"][:3] == [False, True, False], summary["contactor"]
    assert summary["faults"] == [], summary
