"""Making one OCPP call through the ``ocpp`` package, the same way for every version.

The package wants a dataclass of the version's ``call`` module with snake_case fields and answers with
one; the station speaks camelCase payloads as they go on the wire. This module builds the request,
checks that every key survives the package's renaming, makes the call with errors surfaced
(``suppress=False``) and turns the answer and every failure into what the station handles:
a camelCase dict, :class:`OcppCallError`, ``TimeoutError`` or ``LinkClosed``.
"""

from __future__ import annotations

from decimal import Decimal
from types import ModuleType
from typing import Any

from ocpp.charge_point import ChargePoint, camel_to_snake_case, remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.exceptions import OCPPError

from firmware.ocpp.link import LinkClosed
from firmware.ocpp.timestamps import TimestampError


class OcppCallError(Exception):
    """The CSMS answered one of our calls with a CALLERROR (or we could not form the call)."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


def plain_json(value: Any) -> Any:
    """The ``ocpp`` package parses JSON numbers as Decimal; our models take int and float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_json(v) for v in value]
    return value


async def call_action(
    cp: ChargePoint | None, calls: ModuleType, action: str, payload: dict[str, Any], *, format_error: str
) -> dict[str, Any]:
    """Call ``action`` with the camelCase ``payload`` on ``cp``; the camelCase answer. ``format_error``
    is the version's spelling of the error code for a payload we cannot form (1.6 FormationViolation,
    2.x FormatViolation)."""
    if cp is None:
        raise LinkClosed("not connected")
    try:
        request = getattr(calls, action)(**camel_to_snake_case(payload))
    except (AttributeError, TypeError) as exc:
        raise OcppCallError(format_error, f"cannot build {action}: {exc}") from exc
    built = remove_nones(snake_to_camel_case(serialize_as_dict(request)))
    if {key: built.get(key) for key in payload} != payload:
        # The package renames keys both ways; a key it would spell differently is our bug. (It may add
        # fields with a default value, e.g. 2.1 TransactionEvent offline=false: those are fine.)
        raise OcppCallError(format_error, f"{action}: a payload key does not survive the ocpp package")
    try:
        result = await cp.call(request, suppress=False)
    except OCPPError as exc:
        raise OcppCallError(str(exc.code), str(exc.description)) from exc
    except TimestampError as exc:  # our own frame failed the outgoing check (firmware.ocpp.timestamps)
        raise OcppCallError(format_error, str(exc)) from exc
    except TimeoutError as exc:
        raise TimeoutError(f"no answer to {action}") from exc
    if result is None:
        return {}
    answer: dict[str, Any] = plain_json(snake_to_camel_case(remove_nones(serialize_as_dict(result))))
    return answer
