"""``evse``: run the firmware, inspect board files, bring-up utilities.

evse board list                     the shipped board files
evse board check FILE|NAME ...      validate board files (exit 1 on the first broken one)
evse hal probe --board FILE|NAME    exercise every peripheral of a board (sim boards: the mocks)
evse demo                           the end-to-end demo on the simulated boards
evse run --board FILE|NAME ...      the firmware on a board (--tariff FILE prices its sessions)
evse sessions [--json]              the sessions in the journal with their energy and price, newest first
evse j3072 [--json]                 the SAE J3072 discharge decisions in the journal, newest first
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from board.loader import BoardError, load_board, shipped_boards
from hal.errors import HalError

if TYPE_CHECKING:
    from firmware.journal import Journal, SessionRecord


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
    from firmware.ocpp.signed_meter import decode_signed_value

    try:
        record = Path(args.file).read_text(encoding="utf-8").strip() if args.file else args.record
        key_text = args.public_key
        if Path(key_text).is_file():
            key_text = Path(key_text).read_text(encoding="utf-8")
        if not record:
            print("evse ocmf verify: give a record or --file", file=sys.stderr)
            return 2
        # As a CSMS received it: the record, base64 of it, or a 1.6 SignedData value object.
        parsed = verify(decode_signed_value(record), public_key_from(key_text))
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


def _load_optional(path: str | None, module: str, loader: str) -> Any:
    """The file at ``path`` read by ``module.loader`` (imported only when the option is given), or None."""
    if not path:
        return None
    return getattr(importlib.import_module(module), loader)(Path(path))


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
    try:
        tariff = _load_optional(args.tariff, "firmware.metering.billing", "load_tariff")
        energy = _load_optional(args.energy, "firmware.energy.config", "load_energy_config")
        secc = _load_optional(args.secc, "firmware.iso15118.config", "load_secc_config")
        j3072 = _load_optional(args.j3072, "firmware.j3072.config", "load_j3072_config")
    except ValueError as exc:  # every loader's error names the file and the key
        print(f"evse run: {exc}", file=sys.stderr)
        return 2
    settings = ConnectorSettings(free_charging=args.free, fallback_a=args.fallback_a, tariff=tariff)
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
                energy=energy,
                secc=secc,
                j3072=j3072,
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


T = TypeVar("T")


def query_journal(args: argparse.Namespace, command: str, query: Callable[[Journal], T]) -> tuple[int, T | None]:
    """``query`` on the journal of ``--journal`` or ``--data-dir``, read-only: (0, its answer), or the exit
    status and None after saying what went wrong."""
    from firmware.journal import Journal, JournalError

    path = Path(args.journal) if args.journal else Path(args.data_dir) / "journal.db"
    if not path.is_file():
        print(f"evse {command}: no journal at {path} (give --journal FILE or --data-dir DIR)", file=sys.stderr)
        return 2, None
    try:
        # Read-only: never creates, migrates or writes the file; WAL lets it read while `evse run` writes.
        with Journal.open_read_only(path) as journal:
            return 0, query(journal)
    except JournalError as exc:
        print(f"evse {command}: {exc}", file=sys.stderr)
        return 1, None


def _cmd_sessions(args: argparse.Namespace) -> int:
    import json

    code, records = query_journal(
        args, "sessions", lambda journal: journal.sessions(args.connector, args.limit or None)
    )
    if records is None:
        return code
    if args.json:
        for record in records:
            print(json.dumps(session_json(record), ensure_ascii=False))
    else:
        print(sessions_table(records))
    return 0


def session_json(record: SessionRecord) -> dict[str, Any]:
    """What ``evse sessions --json`` prints for a session: its billing record once stopped; while open the
    same keys with the running values (``stopped_at``, the stop readings and ``stop_reason`` null, the
    duration and price up to the last checkpoint) plus ``last_checkpoint_at`` and ``state``."""
    if record.billing is not None:
        return record.billing.to_json()
    from firmware.metering.billing import BILLING_FORMAT, TariffError, meter_delta, utc_iso, utc_ms

    started, checkpoint = utc_ms(record.started_at), utc_ms(record.last_checkpoint_at)
    duration_s = max(0.0, (checkpoint - started).total_seconds())
    # The journal's CHECK constraints keep every reading >= its start, so these never raise.
    import_wh = meter_delta("import", record.last_meter_wh, record.meter_start_wh)
    export_wh = meter_delta("export", record.last_export_wh, record.export_start_wh)
    price = None
    if record.tariff is not None:
        with contextlib.suppress(TariffError):  # an absurd reading prices nothing rather than failing the list
            price = record.tariff.price(import_wh, export_wh, duration_s).to_json()
    return {
        "format": BILLING_FORMAT,
        "session_id": record.session_id,
        "connector": record.connector,
        "id_tag": record.id_tag,
        "started_at": utc_iso(started),
        "stopped_at": None,
        "duration_s": duration_s,
        "import_wh": import_wh,
        "export_wh": export_wh,
        "meter_import_start_wh": record.meter_start_wh,
        "meter_import_stop_wh": None,
        "meter_export_start_wh": record.export_start_wh,
        "meter_export_stop_wh": None,
        "stop_reason": None,
        "tariff": None if record.tariff is None else record.tariff.to_json(),
        "price": price,
        "meter_error": record.meter_error,
        "last_checkpoint_at": utc_iso(checkpoint),
        "meter_import_last_wh": record.last_meter_wh,
        "meter_export_last_wh": record.last_export_wh,
        "state": record.state,
    }


_TABLE_HEADER = ("START (UTC)", "DURATION", "CONN", "ID TAG", "IMPORT kWh", "EXPORT kWh", "PRICE", "STOP", "METER",
                 "SESSION")  # fmt: skip
_RIGHT_ALIGNED = frozenset({1, 2, 4, 5, 6})


def sessions_table(records: list[SessionRecord]) -> str:
    """The table ``evse sessions`` prints, one row per session in the given order. Open sessions show
    the duration and energy up to the last checkpoint and ``open`` as their stop; PRICE is the billed total
    (``-`` without a tariff or while open); METER says ``ERROR`` when a meter problem was flagged."""
    from firmware.metering.billing import utc_ms

    rows = [_TABLE_HEADER]
    for r in records:
        end = r.stopped_at if r.stopped_at is not None else r.last_checkpoint_at
        seconds = int(max(0.0, (utc_ms(end) - utc_ms(r.started_at)).total_seconds()))
        price = r.billing.price if r.billing is not None else None
        tag = r.id_tag if r.id_tag is not None else "-"
        rows.append(
            (
                utc_ms(r.started_at).strftime("%Y-%m-%d %H:%M"),
                f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}",
                str(r.connector),
                tag if len(tag) <= 20 else tag[:19] + "…",
                f"{r.import_wh / 1000:.3f}",
                f"{r.export_wh / 1000:.3f}",
                price.text if price is not None else "-",
                r.stop_reason if r.stop_reason is not None else "open",
                "ERROR" if r.meter_error is not None else "ok",
                r.session_id[:8],
            )
        )
    if not records:
        return "no sessions"
    widths = [max(len(row[i]) for row in rows) for i in range(len(_TABLE_HEADER))]
    lines = [
        "  ".join(
            cell.rjust(w) if i in _RIGHT_ALIGNED else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


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


def count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, not {value}")
        return value

    return parse


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
    p.add_argument(
        "record", nargs="?", help="the record OCMF|{...}|{...}, base64 of it, or an OCPP SignedData value (or --file)"
    )
    p.add_argument("--file", help="a file holding the record")
    p.add_argument("--public-key", required=True, help="public key: hex or base64 DER, PEM, or a file with one")
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
    p.add_argument("--tariff", metavar="FILE", help="a TOML file with a [tariff] table: prices every new session")
    p.add_argument(
        "--energy", metavar="FILE", help="the site energy manager: grid limit, splitting, EMS interfaces (docs/ems.md)"
    )
    p.add_argument(
        "--secc",
        metavar="FILE",
        help="ISO 15118 / DIN 70121 high-level communication on an interface (docs/iso15118.md)",
    )
    p.add_argument(
        "--j3072",
        metavar="FILE",
        help="SAE J3072 AC V2G: the IEEE 2030.5 server on the vehicle link and the discharge gate (docs/j3072.md)",
    )
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("sessions", help="the sessions in the journal: energy, price, stop reason (newest first)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--data-dir", default="evse-data", help="read DATA_DIR/journal.db (default: evse-data)")
    where.add_argument("--journal", metavar="FILE", help="the session journal (SQLite) to read")
    p.add_argument("--connector", type=count(1), metavar="N", help="only the sessions of connector N")
    p.add_argument("--limit", type=count(0), default=20, metavar="N", help="at most N sessions (default 20; 0: all)")
    p.add_argument("--json", action="store_true", help="one JSON object per line: billing record or running values")
    p.set_defaults(func=_cmd_sessions)

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

    from firmware.iso15118.exi_tool import add_parser as add_exi_parser  # evse exi decode|encode|decode-pcap

    add_exi_parser(sub)
    from firmware.mcu_deploy import add_parser as add_mcu_parser  # evse mcu deploy

    add_mcu_parser(sub)
    from firmware.j3072.cli import add_parser as add_j3072_parser  # evse j3072 (the discharge decisions)

    add_j3072_parser(sub)
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
