"""Loading and validating board files, with errors a person can act on.

Every problem is reported as ``<file>: <field>: <what is wrong> (got <value>)`` so that a wrong
board file names the file, the field, the value and what would be allowed.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from board.schema import BoardConfig

BOARD_DIR = Path(__file__).resolve().parent


class BoardError(Exception):
    """A board file that cannot be used. ``problems`` holds one line per problem."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__("\n".join(f"{self.path}: {p}" for p in problems))


def shipped_boards() -> dict[str, Path]:
    """Board files that ship with the firmware, by name."""
    return {p.stem: p for p in sorted(BOARD_DIR.glob("*.toml"))}


def resolve(board: str | Path) -> Path:
    """A path to a board file, or the name of a shipped board (``sim-ac``)."""
    path = Path(board)
    if path.suffix == ".toml" or path.exists():
        return path
    shipped = shipped_boards()
    if str(board) in shipped:
        return shipped[str(board)]
    raise BoardError(board, [f"no such board file, and not a shipped board; shipped: {', '.join(shipped)}"])


def read_toml(path: Path, error: Callable[[Path, list[str]], Exception]) -> dict[str, Any]:
    """A TOML file as a dict; unreadable, non-UTF-8 or invalid TOML raises ``error`` naming the file
    (board files and rig files share this)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(path, [f"cannot read: {exc.strerror or exc}"]) from exc
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise error(path, [f"not UTF-8 text: {exc}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(path, [f"not valid TOML: {exc}"]) from exc


def load_board(board: str | Path) -> BoardConfig:
    path = resolve(board)
    return parse_board(read_toml(path, BoardError), path)


def parse_board(data: dict[str, Any], path: Path | str = "<board>") -> BoardConfig:
    if "format" not in data:
        raise BoardError(path, ["format: missing; this firmware reads board files with format = 1"])
    if data.get("format") != 1:
        raise BoardError(path, [f"format: got {data.get('format')!r}; this firmware reads format = 1"])
    try:
        return BoardConfig.model_validate(data)
    except ValidationError as exc:
        raise BoardError(path, [_describe(err, data) for err in exc.errors()]) from exc


# --------------------------------------------------------------------------- error wording
def _describe(err: Any, data: dict[str, Any]) -> str:
    loc = _location(err["loc"])
    kind = err["type"]
    value = err.get("input")
    if kind == "missing":
        return f"{loc}: missing (required)"
    if kind == "extra_forbidden":
        allowed = _allowed_fields(err["loc"][:-1], data)
        hint = f"; allowed here: {', '.join(allowed)}" if allowed else ""
        return f"{loc}: unknown field{hint}"
    if kind == "union_tag_invalid":
        expected = err.get("ctx", {}).get("expected_tags", "")
        return f"{loc}.driver: got {err.get('ctx', {}).get('tag')!r}; allowed: {expected}"
    if kind == "union_tag_not_found":
        return f"{loc}.driver: missing (required to pick the driver)"
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if loc == "(board)":
        return message  # a cross-field rule: the message names its own fields
    if isinstance(value, dict):
        return f"{loc}: {message}"
    return f"{loc}: {message} (got {value!r})"


def _location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        elif item in ("gpio-pwm", "coprocessor", "adc", "fixed-cable", "gpio", "gpio-contacts"):
            continue  # discriminated-union tags are noise in a field path
        else:
            parts.append(str(item))
    return ".".join(parts) or "(board)"


def _allowed_fields(loc: tuple[Any, ...], data: dict[str, Any]) -> list[str]:
    """Field names of the model at ``loc``, found by walking the schema along the data."""
    model: type[BaseModel] | None = BoardConfig
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            node = node[item] if isinstance(node, list) and item < len(node) else None
            continue
        if model is None:
            return []
        field = model.model_fields.get(str(item))
        if field is None:
            continue  # a discriminated-union tag: the member was already picked from "driver"
        node = node.get(item) if isinstance(node, dict) else None
        model = _model_of(field.annotation, node)
    return sorted(model.model_fields) if model is not None else []


def _model_of(annotation: Any, node: Any) -> type[BaseModel] | None:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = typing.get_args(annotation)
    candidates = [a for a in _flatten(args) if isinstance(a, type) and issubclass(a, BaseModel)]
    if len(candidates) == 1:
        return candidates[0]
    driver = node.get("driver") if isinstance(node, dict) else None
    for c in candidates:
        tag = c.model_fields.get("driver")
        if tag is not None and driver in typing.get_args(tag.annotation):
            return c
    return None


def _flatten(args: tuple[Any, ...]) -> list[Any]:
    import typing

    out: list[Any] = []
    for a in args:
        inner = typing.get_args(a)
        if inner and not (isinstance(a, type) and issubclass(a, BaseModel)):
            out.extend(_flatten(inner))
        else:
            out.append(a)
    return out
