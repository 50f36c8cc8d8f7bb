"""``evse demo``: the representative scenario end to end, with a live timeline and the report.

The HIL runner runs the real firmware (connector state machine, supervisor, limits, journal) on the
simulated AC board, whose real drivers talk to bus simulators, against a simulated EV and site in
virtual time (hil/scenarios/demo-ac-session.yaml). The outputs (trace, summary, JUnit, report.html)
land in ``out_dir``.
"""

from __future__ import annotations

from pathlib import Path

from hil.cli import SCENARIO_DIR, live_printer, print_outcome
from hil.runner import run_scenario
from hil.scenario import load_scenario

DEMO_SCENARIO = SCENARIO_DIR / "demo-ac-session.yaml"


async def run_demo(out_dir: Path, *, csms_url: str | None = None, ocpp: str = "1.6") -> int:
    """``csms_url`` runs the demo against an external CSMS instead of the embedded one: in real time
    (five minutes), and without the checks that read the embedded CSMS's own records."""
    scenario = load_scenario(DEMO_SCENARIO)
    if csms_url is not None:
        backend = scenario.backend.model_copy(update={"kind": "url", "url": csms_url, "ocpp": ocpp})
        checks = [c for c in scenario.expect if c.check != "backend_transactions"]
        scenario = scenario.model_copy(update={"backend": backend, "time": "realtime", "expect": checks})
    print(f"{scenario.name}: {' '.join(scenario.description.split())}\n")

    result = await run_scenario(scenario, DEMO_SCENARIO.parent, out_dir, on_line=live_printer())
    print_outcome(result, "demo")
    return 0 if result.passed else 1
