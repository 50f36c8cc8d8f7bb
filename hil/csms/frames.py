"""OCPP-J frames as the embedded CSMS sees them: parsing, schema checks and error codes.

The ``ocpp`` package validates payloads in a thread-pool executor. In a simulation on the virtual clock
that would let virtual time run on while a validation sits in a thread, so the CSMS checks frames
itself, synchronously, against the same official JSON schemas that ship with the package. It also
checks ``"format": "date-time"`` (which jsonschema skips unless given a checker), the way a strict
CSMS such as ocpp-rpc does, so a station that sends a malformed timestamp is caught here too.
"""

from __future__ import annotations

import decimal
import functools
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any, Literal

from jsonschema import FormatChecker
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import Draft4Validator, validator_for

Protocol = Literal["ocpp1.6", "ocpp2.0.1", "ocpp2.1"]

#: WebSocket subprotocol names (OCPP-J 2.1 part 4 §3.1.2, table 1).
PROTOCOLS: tuple[Protocol, ...] = ("ocpp1.6", "ocpp2.0.1", "ocpp2.1")

#: Message type numbers (OCPP-J 1.6 §4.1.3; OCPP 2.1 part 4 §4.1.3 adds 5 and 6).
CALL, CALLRESULT, CALLERROR, CALLRESULTERROR, SEND = 2, 3, 4, 5, 6

#: A message id is at most 36 characters (OCPP 2.1 part 4 §4.1.4, table 4).
MESSAGE_ID_MAX = 36

#: An errorDescription is at most 255 characters (OCPP 2.1 part 4 §4.2.3, table 7).
ERROR_DESCRIPTION_MAX = 255

_SCHEMA_DIRS: dict[Protocol, str] = {"ocpp1.6": "v16", "ocpp2.0.1": "v201", "ocpp2.1": "v21"}

#: RFC 3339 §5.6 date-time: full date, "T", full time with an offset or "Z".
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


class MalformedFrame(ValueError):
    """A frame that is not a well-formed OCPP-J message; ``message_id`` when one could be read."""

    def __init__(self, reason: str, *, message_id: str | None = None, type_id: object = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message_id = message_id
        self.type_id = type_id


@dataclass(frozen=True)
class Frame:
    """One parsed OCPP-J message."""

    type_id: int
    message_id: str
    action: str | None = None  # CALL and SEND only
    payload: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = None  # CALLERROR and CALLRESULTERROR only
    error_description: str | None = None


def parse_frame(raw: str, protocol: Protocol) -> Frame:
    """The frame in ``raw``, or :class:`MalformedFrame` saying what is wrong with it."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise MalformedFrame(f"not valid JSON: {exc}") from None
    if not isinstance(data, list) or not data:
        raise MalformedFrame("an OCPP-J message is a non-empty JSON array")
    type_id = data[0]
    message_id = data[1] if len(data) > 1 and isinstance(data[1], str) else None
    if message_id is not None and not 0 < len(message_id) <= MESSAGE_ID_MAX:
        raise MalformedFrame(f"message id must be 1..{MESSAGE_ID_MAX} characters", type_id=type_id)
    if not isinstance(type_id, int) or isinstance(type_id, bool):
        raise MalformedFrame(f"message type {type_id!r} is not an integer", message_id=message_id)
    known = (CALL, CALLRESULT, CALLERROR) if protocol != "ocpp2.1" else (CALL, CALLRESULT, CALLERROR, 5, 6)
    if type_id not in known:
        raise MalformedFrame(f"message type {type_id} is not supported", message_id=message_id, type_id=type_id)
    if message_id is None:
        raise MalformedFrame("message id missing or not a string", type_id=type_id)
    if type_id in (CALL, SEND):
        if len(data) != 4 or not isinstance(data[2], str) or not isinstance(data[3], dict):
            raise MalformedFrame('a CALL is [2, "<id>", "<Action>", {payload}]', message_id=message_id, type_id=type_id)
        return Frame(type_id, message_id, action=data[2], payload=data[3])
    if type_id == CALLRESULT:
        if len(data) != 3 or not isinstance(data[2], dict):
            raise MalformedFrame('a CALLRESULT is [3, "<id>", {payload}]', message_id=message_id, type_id=type_id)
        return Frame(type_id, message_id, payload=data[2])
    if len(data) != 5 or not isinstance(data[2], str) or not isinstance(data[3], str) or not isinstance(data[4], dict):
        raise MalformedFrame(
            f'a CALLERROR is [{type_id}, "<id>", "<code>", "<description>", {{details}}]',
            message_id=message_id,
            type_id=type_id,
        )
    return Frame(type_id, message_id, payload=data[4], error_code=data[2], error_description=data[3])


def call_error_frame(message_id: str, code: str, description: str, details: dict[str, Any] | None = None) -> str:
    return json.dumps(
        [CALLERROR, message_id, code, description[:ERROR_DESCRIPTION_MAX], details or {}],
        separators=(",", ":"),
        default=str,
    )


def error_code(protocol: Protocol, kind: str) -> str:
    """The RPC framework error code for ``kind``, spelled as ``protocol`` spells it.

    OCPP-J 1.6 §4.2.3 says FormationViolation and OccurenceConstraintViolation; 2.0.1 renamed the
    first to FormatViolation; 2.1 part 4 §4.3 also corrects the second to OccurrenceConstraintViolation.
    """
    if kind == "format":
        return "FormationViolation" if protocol == "ocpp1.6" else "FormatViolation"
    if kind == "occurrence":
        return "OccurrenceConstraintViolation" if protocol == "ocpp2.1" else "OccurenceConstraintViolation"
    return kind


@dataclass(frozen=True)
class SchemaProblem:
    """Why a payload does not match its schema, as a CALLERROR code and a readable cause."""

    code: str
    cause: str


def check_payload(protocol: Protocol, action: str, payload: dict[str, Any], *, response: bool) -> SchemaProblem | None:
    """None if ``payload`` is a valid ``action`` request (or response), else what is wrong with it."""
    try:
        validator, exact_decimals = _validator(protocol, action, response)
    except FileNotFoundError:
        return SchemaProblem("NotImplemented", f"no OCPP {protocol[4:]} schema for {action}")
    instance: Any = payload
    if exact_decimals:
        # Schemas with "multipleOf": 0.1 (1.6 charging schedules) need exact decimals on both sides, or
        # 21.4 parsed as a float would fail the check.
        instance = json.loads(json.dumps(payload), parse_float=decimal.Decimal)
    error = _first_error(validator, instance)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(payload)"
    return SchemaProblem(_code_for(protocol, error.validator), f"{action}: {where}: {error.message}"[:400])


def _first_error(validator: Validator, instance: Any) -> ValidationError | None:
    try:
        validator.validate(instance)
    except ValidationError as exc:
        return exc
    return None


def _code_for(protocol: Protocol, keyword: object) -> str:
    # OCPP-J 1.6 §4.2.3 / OCPP 2.1 part 4 §4.3, table 9: meaning of each error code.
    if keyword in ("type",):
        return "TypeConstraintViolation"
    if keyword == "required":
        # 1.6: "Payload for Action is incomplete"; 2.x: a mandatory field violates its cardinality.
        return "ProtocolError" if protocol == "ocpp1.6" else error_code(protocol, "occurrence")
    if keyword in ("minItems", "maxItems"):
        return error_code(protocol, "occurrence")
    if keyword in ("enum", "maxLength", "minLength", "minimum", "maximum", "pattern", "format", "multipleOf"):
        return "PropertyConstraintViolation"
    return error_code(protocol, "format")


def _schema_name(protocol: Protocol, action: str, response: bool) -> str:
    if response:
        return f"{action}Response.json"
    return f"{action}.json" if protocol == "ocpp1.6" else f"{action}Request.json"


@functools.lru_cache(maxsize=512)
def _validator(protocol: Protocol, action: str, response: bool) -> tuple[Validator, bool]:
    if not re.fullmatch(r"[A-Za-z0-9]+", action):
        raise FileNotFoundError(action)
    path = resources.files("ocpp").joinpath(_SCHEMA_DIRS[protocol], "schemas", _schema_name(protocol, action, response))
    text = path.read_text(encoding="utf-8-sig")  # the 2.0.1 schemas start with a byte order mark
    exact = '"multipleOf"' in text
    schema = json.loads(text, parse_float=decimal.Decimal if exact else float)
    cls = validator_for(schema, default=Draft4Validator)
    return cls(schema, format_checker=_FORMATS), exact


_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date-time")
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True  # a wrong type is the "type" keyword's business
    if not _RFC3339.match(value):
        return False
    try:
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
