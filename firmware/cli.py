"""``evse``: run the firmware, inspect board files, bring-up utilities.

evse board list                     the shipped board files
evse board check FILE|NAME ...      validate board files (exit 1 on the first broken one)
evse hal probe --board FILE|NAME    exercise every peripheral of a board (sim boards: the mocks)
evse demo                           the end-to-end demo on the simulated boards
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from board.loader import BoardError, load_board, shipped_boards
from hal.errors import HalError


def _cmd_board_list(args: argparse.Namespace) -> int:
    boards = shipped_boards()
    width = max(len(n) for n in boards)
    for name, path in boards.items():
        try:
            cfg = load_board(path)
            print(f"{name:<{width}}  {cfg.board.description}")
        except BoardError as exc:
            print(f"{name:<{width}}  BROKEN: {exc}")
    return 0


def _cmd_board_check(args: argparse.Namespace) -> int:
    status = 0
    for item in args.files:
        try:
            cfg = load_board(item)
        except BoardError as exc:
            print(exc, file=sys.stderr)
            status = 1
            continue
        r = cfg.ratings
        print(
            f"{item}: OK: {cfg.board.name}, {r.supply.upper()} {r.phases}-phase {r.max_current_a:g} A "
            f"{r.connector}, pilot/contactor on {cfg.safety.realtime}"
            f"{', simulated' if cfg.board.simulated else ''}"
        )
    return status


def _cmd_hal_probe(args: argparse.Namespace) -> int:
    from tools.probe_cli import run_probe

    return asyncio.run(run_probe([args.board], actuate=args.actuate, as_json=args.json))


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from firmware.demo import run_demo
    from tools.probe_cli import run_probe

    status = asyncio.run(run_demo(Path(args.out), csms_url=args.csms, ocpp=args.ocpp))
    print("\nbring-up probe of every simulated board (drivers running against bus simulators)\n")
    return status or asyncio.run(run_probe(["sim-ac", "sim-dc-bidi"], actuate=True, as_json=False))


def _cmd_ocmf_verify(args: argparse.Namespace) -> int:
    from firmware.metering.ocmf import OcmfError, public_key_from, verify

    try:
        record = Path(args.file).read_text(encoding="utf-8").strip() if args.file else args.record
        key_text = args.public_key
        if Path(key_text).is_file():
            key_text = Path(key_text).read_text(encoding="utf-8")
        if not record:
            print("evse ocmf verify: give a record or --file", file=sys.stderr)
            return 2
        parsed = verify(record, public_key_from(key_text))
    except OSError as exc:
        print(f"evse ocmf verify: {exc}", file=sys.stderr)
        return 2
    except OcmfError as exc:
        print(f"INVALID: {exc}")
        return 1
    readings = ", ".join(f"{r.get('TX')} {r.get('RV')} {r.get('RU')} at {r.get('TM')}" for r in parsed.payload["RD"])
    print(f"VALID: meter {parsed.payload.get('MS')}, {parsed.payload.get('PG')}: {readings}")
    return 0


def _cmd_faults(args: argparse.Namespace) -> int:
    from firmware.safety.faults import CATALOGUE

    for spec in CATALOGUE.values():
        print(f"{spec.code.value}  [{spec.reaction.value}, recovers: {spec.recovery.value}]")
        print(f"    when:   {spec.condition}")
        print(f"    clears: {spec.clears_when}")
    return 0


def _cmd_states(args: argparse.Namespace) -> int:
    from firmware.iec61851.diagram import render

    print(render(args.format))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from firmware.app import run_firmware
    from firmware.connector import ConnectorSettings
    from firmware.control import default_socket_path
    from firmware.journal import JournalError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_board(args.board)
    except BoardError as exc:
        print(exc, file=sys.stderr)
        return 2
    settings = ConnectorSettings(free_charging=args.free, fallback_a=args.fallback_a)
    control = Path(args.control) if args.control else default_socket_path()
    data_dir = Path(args.data_dir)
    journal = Path(args.journal) if args.journal else data_dir / "journal.db"
    uplink = None
    if args.csms:
        from firmware.ocpp.station import StationSettings
        from firmware.ocpp.transport import Security

        password = None
        if args.password_file:
            try:
                password = Path(args.password_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                print(f"evse run: cannot read the password file: {exc}", file=sys.stderr)
                return 2
        security = Security(
            profile=args.security_profile,
            password=password,
            ca_file=Path(args.ca) if args.ca else None,
            client_cert=Path(args.client_cert) if args.client_cert else None,
            client_key=Path(args.client_key) if args.client_key else None,
        )
        uplink = StationSettings(
            args.id or cfg.board.name,
            version=args.ocpp,
            csms_url=args.csms,
            security=security,
            model=cfg.board.name,
        )
    try:
        asyncio.run(
            run_firmware(
                cfg,
                journal_path=journal,
                control_path=control,
                settings=settings,
                sim_ev_state=args.sim_ev,
                uplink=uplink,
                data_dir=data_dir,
            )
        )
    except ValueError as exc:
        print(f"evse run: {exc}", file=sys.stderr)
        return 2
    except HalError as exc:
        print(f"board {cfg.board.name}: cannot open: {exc}", file=sys.stderr)
        return 1
    except (JournalError, OSError) as exc:
        print(f"evse run: {exc}", file=sys.stderr)
        return 1
    return 0


def _control_request(args: argparse.Namespace, body: dict[str, object]) -> int:
    import json
    from pathlib import Path

    from firmware.control import default_socket_path, request

    path = Path(args.control) if args.control else default_socket_path()
    try:
        answer = asyncio.run(request(path, body))
    except (OSError, TimeoutError) as exc:
        print(f"no firmware answering on {path}: {exc}", file=sys.stderr)
        return 1
    if not answer.get("ok"):
        print(f"refused: {answer.get('error')}", file=sys.stderr)
        return 1
    result = answer.get("result")
    print(result if isinstance(result, str) else json.dumps(result, indent=2))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    return _control_request(args, {"cmd": "status"})


def _cmd_why(args: argparse.Namespace) -> int:
    return _control_request(args, {"cmd": "why"})


def _cmd_ctl(args: argparse.Namespace) -> int:
    body: dict[str, object] = {"cmd": args.ctl_command}
    for item in args.params:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"parameters are key=value, not {item!r}", file=sys.stderr)
            return 2
        body[key] = _parse_value(value)
    return _control_request(args, body)


def _parse_value(text: str) -> object:
    try:
        return float(text) if any(ch in text for ch in ".eE") else int(text)
    except ValueError:
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evse", description="EV charger controller firmware")
    sub = parser.add_subparsers(dest="command", required=True)

    board = sub.add_parser("board", help="board files").add_subparsers(dest="board_command", required=True)
    p = board.add_parser("list", help="list the shipped board files")
    p.set_defaults(func=_cmd_board_list)
    p = board.add_parser("check", help="validate board files")
    p.add_argument("files", nargs="+", metavar="FILE", help="a board file path or a shipped board name")
    p.set_defaults(func=_cmd_board_check)

    hal = sub.add_parser("hal", help="hardware bring-up").add_subparsers(dest="hal_command", required=True)
    p = hal.add_parser("probe", help="exercise every peripheral of a board")
    p.add_argument("--board", required=True, help="a board file path or a shipped board name")
    p.add_argument(
        "--actuate",
        action="store_true",
        help="also switch things on a real board (pilot sweep, contactor, lock, self-tests); no vehicle connected!",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=_cmd_hal_probe)

    p = sub.add_parser("demo", help="the end-to-end demo on the simulated boards")
    p.add_argument("--out", default="evse-demo", help="where the demo writes its trace and report")
    p.add_argument("--csms", metavar="URL", help="report to this CSMS (real time) instead of the embedded one")
    p.add_argument("--ocpp", choices=("1.6", "2.0.1", "2.1"), default="1.6", help="with --csms: the OCPP version")
    p.set_defaults(func=_cmd_demo)

    ocmf = sub.add_parser("ocmf", help="signed meter values (OCMF)").add_subparsers(dest="ocmf_command", required=True)
    p = ocmf.add_parser("verify", help="check an OCMF record's signature")
    p.add_argument("record", nargs="?", help="the record, OCMF|{...}|{...} (or --file)")
    p.add_argument("--file", help="a file holding the record")
    p.add_argument("--public-key", required=True, help="hex DER public key, PEM text, or a file with either")
    p.set_defaults(func=_cmd_ocmf_verify)
    p = sub.add_parser("faults", help="the fault catalogue: each fault's reaction and recovery rule")
    p.set_defaults(func=_cmd_faults)

    p = sub.add_parser("states", help="print or draw the IEC 61851 connector state table")
    p.add_argument("--format", choices=("table", "dot", "mermaid"), default="table")
    p.set_defaults(func=_cmd_states)

    p = sub.add_parser("run", help="run the firmware on a board (real time)")
    p.add_argument("--board", required=True, help="a board file path or a shipped board name")
    p.add_argument("--data-dir", default="evse-data", help="journal, OCPP configuration and lists (default: evse-data)")
    p.add_argument("--journal", help="the session journal (SQLite); default: DATA_DIR/journal.db")
    p.add_argument("--csms", metavar="URL", help="the CSMS to report to (ws:// or wss://); none: no OCPP uplink")
    p.add_argument("--ocpp", choices=("1.6", "2.0.1", "2.1"), default="1.6", help="OCPP version (default 1.6)")
    p.add_argument("--id", help="the charging station identity (default: the board name)")
    p.add_argument(
        "--security-profile", type=int, choices=(0, 1, 2, 3), default=0, help="OCPP security profile (default 0)"
    )
    p.add_argument("--password-file", help="profiles 1-2: a file holding the Basic auth password")
    p.add_argument("--ca", help="profiles 2-3: the CSMS root certificate(s), PEM")
    p.add_argument("--client-cert", help="profile 3: our certificate, PEM")
    p.add_argument("--client-key", help="profile 3: our private key, PEM")
    p.add_argument("--control", help="control socket path (default: $XDG_RUNTIME_DIR/evse.sock)")
    p.add_argument("--free", action="store_true", help="offer without authorisation (free charging)")
    p.add_argument("--fallback-a", type=float, default=6.0, help="current when an external limit expires")
    p.add_argument("--sim-ev", choices=("A", "B", "C"), help="simulated boards: the EV's pilot state at boot")
    p.set_defaults(func=_cmd_run)

    for name, func, text in (("status", _cmd_status, "state of a running firmware"),
                             ("why", _cmd_why, "why the connector offers what it offers")):  # fmt: skip
        p = sub.add_parser(name, help=text)
        p.add_argument("--control", help="control socket path")
        p.set_defaults(func=func)

    p = sub.add_parser("ctl", help="command a running firmware")
    p.add_argument(
        "ctl_command",
        choices=("authorize", "deauthorize", "pause", "resume", "limit", "clear-limit", "clear-fault", "sim"),
    )
    p.add_argument("params", nargs="*", metavar="KEY=VALUE", help="e.g. source=ems amps=16 for_s=900")
    p.add_argument("--control", help="control socket path")
    p.set_defaults(func=_cmd_ctl)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # the output went into `head` or a closed pager: not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
