"""``evse-hil``: run and validate HIL scenarios (docs/hil-formats.md).

evse-hil run SCENARIO.yaml [--out DIR] [--realtime] [--quiet]
evse-hil run SCENARIO.yaml --bench RIG.toml --i-have-an-emergency-stop [--out DIR] [--quiet]
evse-hil validate SCENARIO.yaml ...
evse-hil list

``run`` exits 0 when every check passed, 1 when one failed, 2 when the scenario (or, in bench mode, the
confirmation, the rig file, the board or their pins) was refused before anything ran, and 3 when a
bench run was aborted by the E-stop or failed (its safe stop ran first).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hil.runner import RunResult
from hil.scenario import Scenario, ScenarioError, load_scenario

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"

_LIVE = ("state", "contactor", "fault", "session", "action", "limit", "ocpp", "auth")


def resolve_scenario(name: str) -> Path:
    path = Path(name)
    if path.exists() or path.suffix in (".yaml", ".yml"):
        return path
    return SCENARIO_DIR / f"{name}.yaml"


def live_line(record: dict[str, Any]) -> str | None:
    """One line of the live timeline for the records a person wants to follow."""
    kind = record["ev"]
    if kind not in _LIVE:
        return None
    t = record["t"]
    clock = f"{int(t // 3600):d}:{int(t % 3600 // 60):02d}:{t % 60:06.3f}"
    body = {k: v for k, v in record.items() if k not in ("t", "src", "ev")}
    if kind == "state":
        text = f"{body['from']} -> {body['to']} ({body['trigger']})"
    elif kind == "contactor":
        text = "contactor " + ("CLOSED" if body.get("closed") else "OPEN")
    elif kind == "fault":
        text = f"fault {body.get('code')} {'RAISED' if body.get('raised') else 'cleared'}"
    elif kind == "session":
        text = f"session {body.get('action')} {str(body.get('id'))[:8]} {body.get('reason') or ''}".rstrip()
    elif kind == "limit":
        text = f"limit {body.get('source')} = {body.get('value'):g} A"
    elif kind == "ocpp":
        if body.get("kind") != "call":
            return None  # the answers would double the timeline; the trace has them
        arrow = "->" if body.get("dir") == "tx" else "<-"
        text = f"ocpp {arrow} {body.get('action')}"
    elif kind == "auth":
        text = f"id {body.get('id_tag')}: {body.get('status')}"
    else:
        text = "action " + " ".join(f"{k}={v}" for k, v in body.items())
    return f"{clock}  {record['src']:<11} {text}"


def live_printer(quiet: bool = False) -> Callable[[dict[str, Any]], None]:
    """An on_line sink for run_scenario that prints the live timeline."""

    def on_line(record: dict[str, Any]) -> None:
        line = live_line(record)
        if line and not quiet:
            print(line, flush=True)

    return on_line


def print_outcome(result: RunResult, title: str) -> None:
    """The checks with their evidence, then one verdict line with the speed-up and the outputs."""
    print()
    for check in result.checks:
        print(f"  {'PASS' if check.passed else 'FAIL'}  {check.check}: {check.evidence}")
    s = result.summary
    print(f"\n{title}: {'PASSED' if result.passed else 'FAILED'}; {s['duration_s']:g} s simulated in "
          f"{s['wall_s']:.1f} s ({s['speedup']}x); report: {result.out_dir / 'report.html'}")  # fmt: skip


def _cmd_run(args: argparse.Namespace) -> int:
    from hil.runner import run_scenario

    path = resolve_scenario(args.scenario)
    try:
        scenario = load_scenario(path)
    except ScenarioError as exc:
        print(exc, file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path("hil-out") / scenario.name
    on_line = live_printer(args.quiet)
    if args.bench is not None:
        return _run_bench(args, scenario, path, out, on_line)
    try:
        result = asyncio.run(run_scenario(scenario, path.parent, out, realtime=args.realtime, on_line=on_line))
    except ScenarioError as exc:  # found only when the boards are open (e.g. a DER rating conflict)
        print(exc, file=sys.stderr)
        return 2
    print_outcome(result, scenario.name)
    return 0 if result.passed else 1


def _run_bench(
    args: argparse.Namespace, scenario: Scenario, path: Path, out: Path, on_line: Callable[[dict[str, Any]], None]
) -> int:
    """Bench mode (hil/bench/session.py): always real time, on the rig described by ``--bench``."""
    from board.loader import BoardError
    from hal.errors import HalError
    from hil.bench.rig import RigError
    from hil.bench.safety import ConfirmationMissing, SafeStopError
    from hil.bench.session import BenchError, run_bench

    try:
        result = asyncio.run(
            run_bench(scenario, path.parent, out, args.bench, confirmed=args.i_have_an_emergency_stop, on_line=on_line)
        )
    except (ConfirmationMissing, RigError, BoardError, BenchError) as exc:
        print(f"bench mode refused: {exc}", file=sys.stderr)
        return 2
    except (HalError, SafeStopError, OSError) as exc:
        print(f"bench run failed (safe stop done): {exc}", file=sys.stderr)
        for note in getattr(exc, "__notes__", []):
            print(note, file=sys.stderr)
        return 3
    print_outcome(result, scenario.name)
    aborted = result.summary.get("aborted")
    if aborted:
        print(f"ABORTED: {aborted}", file=sys.stderr)
        for error in result.summary.get("safe_stop_errors", []):
            print(f"  safe stop: {error}", file=sys.stderr)
        return 3
    return 0 if result.passed else 1


def _cmd_validate(args: argparse.Namespace) -> int:
    status = 0
    for item in args.scenarios:
        path = resolve_scenario(item)
        try:
            scenario = load_scenario(path)
            print(f"{path}: OK ({scenario.name}, {scenario.duration:g} s, {len(scenario.expect)} checks)")
        except ScenarioError as exc:
            print(exc, file=sys.stderr)
            status = 1
    return status


def _cmd_list(args: argparse.Namespace) -> int:
    for path in sorted(SCENARIO_DIR.glob("*.yaml")):
        try:
            scenario = load_scenario(path)
            print(f"{scenario.name:<34} {scenario.description}")
        except ScenarioError as exc:
            print(f"{path.stem:<34} BROKEN: {exc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evse-hil", description="HIL rig: scenarios against the firmware")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run a scenario")
    p.add_argument("scenario", help="a scenario file, or the name of a shipped scenario")
    p.add_argument("--out", help="output directory (default hil-out/<name>)")
    p.add_argument("--realtime", action="store_true", help="run in real time instead of virtual time")
    p.add_argument("--quiet", action="store_true", help="no live timeline")
    p.add_argument("--bench", metavar="RIG.toml", help="run on the bench described by this rig file (real time)")
    p.add_argument(
        "--i-have-an-emergency-stop",
        action="store_true",
        help="bench mode: confirm you are at the bench with the emergency stop within reach",
    )
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("validate", help="check scenario files")
    p.add_argument("scenarios", nargs="+")
    p.set_defaults(func=_cmd_validate)
    p = sub.add_parser("list", help="the shipped scenarios")
    p.set_defaults(func=_cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
