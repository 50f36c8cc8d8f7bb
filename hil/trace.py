"""The trace writer (JSON Lines, ``format: 1``, docs/hil-formats.md) and the reader the checks use.

The firmware's connector events are mapped onto the public trace kinds here, so the firmware's
internal event names can change without breaking a trace reader: a ``pilot`` record always carries
the EV's pilot state together with what the EVSE drives (pwm, duty_pct).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

TRACE_FORMAT = 1


class TraceWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: TextIO = path.open("w", encoding="utf-8")
        self.records: list[dict[str, Any]] = []  # kept in memory for the checks and the summary
        self._pilot: dict[str, dict[str, Any]] = {}

    def write(self, t: float, src: str, ev: str, **data: Any) -> None:
        record = {"t": round(t, 6), "src": src, "ev": ev, **data}
        self.records.append(record)
        self._handle.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")

    def connector_event(self, t: float, src: str, kind: str, data: dict[str, Any]) -> None:
        """Map one firmware connector event (firmware.connector on_event) onto the trace kinds."""
        data = {k: v for k, v in data.items() if k != "t"}
        if kind == "pilot":
            pilot = self._pilot.setdefault(src, {"state": "A", "pwm": False, "duty_pct": 0.0})
            if "state" in data:
                pilot["state"] = data["state"]
            if "mode" in data:
                pilot["pwm"] = data["mode"] == "pwm"
                pilot["duty_pct"] = data["duty_pct"]
                pilot["mode"] = data["mode"]
            self.write(t, src, "pilot", **pilot)
        elif kind in ("state", "contactor", "limit", "fault", "session", "meter", "phases"):
            if kind == "state":
                data.pop("at", None)
            self.write(t, src, kind, **data)

    def close(self) -> None:
        self._handle.close()


def read_trace(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a trace file; a line that is not a JSON object is skipped."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record
