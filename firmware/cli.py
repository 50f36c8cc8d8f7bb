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

from board.loader import BoardError, load_board, shipped_boards


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
    from tools.probe_cli import run_probe

    print("evse demo: bring-up probe of every simulated board (drivers running against bus simulators)\n")
    return asyncio.run(run_probe(["sim-ac", "sim-dc-bidi"], actuate=True, as_json=False))


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
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
