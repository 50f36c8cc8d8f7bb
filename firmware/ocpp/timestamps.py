"""Timestamps on the wire: RFC 3339 in UTC, and a check of every outgoing one.

The ``ocpp`` package validates payloads against the official JSON schemas but does not check
``"format": "date-time"`` (jsonschema ignores formats unless asked), so a naive local time or a
space instead of the ``T`` would go out and a strict CSMS would reject the message. Every payload we
send passes :func:`check_payload`, which finds the date-time fields from the same schemas.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, datetime
from importlib import resources
from typing import Any

#: RFC 3339 section 5.6 date-time, with the offset required; we send "Z" only.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$",
)


class TimestampError(ValueError):
    """A payload carries a timestamp that is not RFC 3339 in UTC."""


def utc_iso(moment: datetime) -> str:
    """``2024-05-01T12:00:00.123Z``: UTC, milliseconds, ``Z`` (OCPP-J 1.6 §3.5 / 2.0.1 part 2 §2.1.4)."""
    if moment.tzinfo is None:
        raise TimestampError(f"{moment!r} has no time zone: OCPP timestamps are UTC")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_utc(text: str) -> datetime:
    """An RFC 3339 timestamp from a peer, as an aware UTC datetime; a clear error otherwise."""
    if not isinstance(text, str) or not _RFC3339.match(text):
        raise TimestampError(f"{text!r} is not an RFC 3339 date-time")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError as exc:
        raise TimestampError(f"{text!r}: {exc}") from exc


def is_utc_rfc3339(text: object) -> bool:
    """What we promise to send: RFC 3339 with the ``Z`` designator."""
    return isinstance(text, str) and bool(_RFC3339.match(text)) and text.endswith("Z")


_SCHEMA_DIRS = {"1.6": "v16", "2.0.1": "v201", "2.1": "v21"}


@functools.lru_cache(maxsize=512)
def _date_time_paths(version: str, action: str, response: bool) -> tuple[tuple[str, ...], ...]:
    """JSON paths (``*`` for every array item) of the date-time fields of one message's schema."""
    folder = _SCHEMA_DIRS[version]
    if version == "1.6":
        name = f"{action}Response.json" if response else f"{action}.json"
    else:
        name = f"{action}Response.json" if response else f"{action}Request.json"
    try:
        text = resources.files("ocpp").joinpath(folder, "schemas", name).read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return ()
    schema = json.loads(text)
    paths: list[tuple[str, ...]] = []
    definitions = schema.get("definitions", {})

    def walk(node: dict[str, Any], path: tuple[str, ...], depth: int) -> None:
        if depth > 20:
            return  # recursive definitions: far deeper than any OCPP message
        if "$ref" in node:
            ref = node["$ref"].rsplit("/", 1)[-1]
            target = definitions.get(ref)
            if target is not None:
                walk(target, path, depth + 1)
            return
        if node.get("format") == "date-time":
            paths.append(path)
        for key, child in node.get("properties", {}).items():
            walk(child, (*path, key), depth + 1)
        items = node.get("items")
        if isinstance(items, dict):
            walk(items, (*path, "*"), depth + 1)

    walk(schema, (), 0)
    return tuple(paths)


def _values(payload: Any, path: tuple[str, ...]) -> list[tuple[str, Any]]:
    if not path:
        return [("", payload)]
    head, rest = path[0], path[1:]
    found: list[tuple[str, Any]] = []
    if head == "*":
        if isinstance(payload, list):
            for i, item in enumerate(payload):
                found += [(f"[{i}]{sub}", v) for sub, v in _values(item, rest)]
    elif isinstance(payload, dict) and head in payload:
        found += [(f".{head}{sub}", v) for sub, v in _values(payload[head], rest)]
    return found


def check_payload(version: str, action: str, payload: dict[str, Any], *, response: bool = False) -> None:
    """Raise TimestampError naming the field if any date-time field of ``payload`` is not RFC 3339
    UTC with ``Z``. ``version`` is "1.6", "2.0.1" or "2.1"."""
    for path in _date_time_paths(version, action, response):
        for where, value in _values(payload, path):
            if not is_utc_rfc3339(value):
                raise TimestampError(f"{action}{where} = {value!r}: not an RFC 3339 UTC timestamp ending in Z")
