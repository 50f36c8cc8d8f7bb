"""The command-line side of the probe: load, open, probe, print, close."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from board.build import open_board
from board.loader import BoardError, load_board
from hal.errors import HalError
from tools.probe import format_results, probe


async def run_probe(boards: list[str], *, actuate: bool, as_json: bool) -> int:
    status = 0
    report: dict[str, object] = {}
    for item in boards:
        try:
            cfg = load_board(item)
        except BoardError as exc:
            print(exc, file=sys.stderr)
            return 2
        try:
            hal = await open_board(cfg)
        except HalError as exc:
            print(f"board {cfg.board.name}: cannot open: {exc}", file=sys.stderr)
            status = 1
            continue
        try:
            results = await probe(hal, actuate=actuate)
        finally:
            await hal.close()
        if not all(r.ok for r in results):
            status = 1
        if as_json:
            report[cfg.board.name] = [asdict(r) for r in results]
        else:
            print(format_results(cfg.board.name, results))
            print()
    if as_json:
        print(json.dumps(report, indent=2))
    return status
