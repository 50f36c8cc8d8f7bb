"""``evse j3072``: the J3072 discharge decisions in the journal (the audit a utility asks for), newest first."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from firmware.cli import count, query_journal
from firmware.journal import J3072Decision

__all__ = ["add_parser", "decisions_table"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("j3072", help="the SAE J3072 discharge decisions in the journal (newest first)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--data-dir", default="evse-data", help="read DATA_DIR/journal.db (default: evse-data)")
    where.add_argument("--journal", metavar="FILE", help="the session journal (SQLite) to read")
    p.add_argument("--connector", type=count(1), metavar="N", help="only the decisions of connector N")
    p.add_argument("--limit", type=count(0), default=20, metavar="N", help="at most N decisions (default 20; 0: all)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_cmd_j3072)


def _cmd_j3072(args: argparse.Namespace) -> int:
    code, decisions = query_journal(
        args, "j3072", lambda journal: journal.j3072_decisions(args.connector, args.limit or None)
    )
    if decisions is None:
        return code
    if args.json:
        for d in decisions:
            print(json.dumps(d.as_dict(), ensure_ascii=False))
    else:
        print(decisions_table(decisions))
    return 0


def decisions_table(decisions: list[J3072Decision]) -> str:
    if not decisions:
        return "no J3072 decisions"
    rows = [("time (UTC)", "conn", "decision", "reason", "ISM", "grant W", "detail")]
    for d in decisions:
        at = datetime.fromtimestamp(d.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        verdict = "authorised" if d.authorised else "denied"
        grant = f"{d.max_discharge_w:.0f}" if d.authorised else "-"
        rows.append((at, str(d.connector), verdict, d.reason, d.ism or "-", grant, d.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])) + "  " + row[-1] for row in rows
    )
