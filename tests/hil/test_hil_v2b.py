"""The hotel V2B scenario end to end (virtual time): ISO 15118-20 AC_BPT EVs discharge on the energy
manager's signed shares, their SoC reaches the manager through the session, the site holds its limit."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from hil.cli import SCENARIO_DIR
from hil.runner import run_scenario
from hil.scenario import ScenarioError, load_scenario, parse_scenario

NAME = "hotel-v2b-peak-shaving"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_hotel_shaves_its_peak_with_the_guests_evs(tmp_path: Path) -> None:
    path = SCENARIO_DIR / f"{NAME}.yaml"
    result = asyncio.run(run_scenario(load_scenario(path), path.parent, tmp_path, report=False))
    assert result.passed, [f"{c.check}: {c.evidence}" for c in result.checks if not c.passed]
    records = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    # Every EV ran ISO 15118-20 AC_BPT, gave energy back and was recharged (its EVCC's own account).
    evcc = [r for r in records if r["ev"] == "evcc"]
    assert len(evcc) == 5 and all(r["service"] == "AC_BPT" and r["error"] is None for r in evcc)
    assert all(r["discharged_wh"] > 50 and r["charged_wh"] > r["discharged_wh"] for r in evcc)
    # The discharge setpoint is what the session carried: negative targets only after the authorisations.
    shares = [r for r in records if r["ev"] == "cycle" and any(v < 0 for v in r["shares"].values())]
    assert shares and min(r["t"] for r in shares) >= 180.0


@pytest.mark.parametrize(
    ("snippet", "problem"),
    [
        (
            "{id: a, connector: 1, battery_kwh: 40, soc: 0.5, max_current_a: 16, discharge_floor: 0.4}",
            "discharge_floor",
        ),
        (
            "{id: a, connector: 1, protocol: iso20, battery_kwh: 40, soc: 0.5, max_current_a: 16,"
            " discharge_floor: 0.4}",
            "energy AC_BPT",
        ),
    ],
)
def test_a_floor_needs_a_bidirectional_ev(snippet: str, problem: str) -> None:
    text = (
        "format: 1\nname: x\nduration: 10\nsite: {grid_limit_kw: 10, energy_manager: {}}\n"
        f"evs:\n  - {snippet}\nexpect:\n  - {{check: site_power_below_grid_limit}}\n"
    )
    with pytest.raises(ScenarioError, match=problem):
        parse_scenario(text)


def test_an_authorisation_needs_a_bidirectional_ev_there() -> None:
    text = (
        "format: 1\nname: x\nduration: 10\nsite: {grid_limit_kw: 10, energy_manager: {}}\n"
        "evs:\n  - {id: a, connector: 1, protocol: iso20, energy: AC, battery_kwh: 40, soc: 0.5, max_current_a: 16}\n"
        "events:\n  - {at: 1, action: authorise_discharge, connector: 1, max_discharge_kw: 5}\n"
        "expect:\n  - {check: site_power_below_grid_limit}\n"
    )
    with pytest.raises(ScenarioError, match="energy AC_BPT there"):
        parse_scenario(text)
