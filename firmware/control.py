"""The local control socket of a running firmware: JSON lines over a UNIX socket.

``evse run`` listens on it; ``evse status``, ``evse why`` and ``evse ctl`` talk to it. One request per
line, one answer per line::

    {"cmd": "why"}                               -> {"ok": true, "result": "connector 1: ..."}
    {"cmd": "limit", "source": "ems", "amps": 16, "for_s": 900}
    {"cmd": "bogus"}                             -> {"ok": false, "error": "unknown command 'bogus'; ..."}

A malformed request gets an error answer and the connection stays usable; nothing a client sends can
reach the control loop as an exception. The socket file is created with mode 0600: only the firmware's
own user may command the charger.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from firmware.connector import Connector
from firmware.limits import Limit
from firmware.safety.faults import FaultCode

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
CLIENT_TIMEOUT_S = 5.0


def default_socket_path() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "evse.sock" if runtime else Path(f"/tmp/evse-{os.getuid()}.sock")


class RequestError(Exception):
    """A request that cannot be carried out; its message goes back to the client."""


class ControlServer:
    def __init__(
        self,
        connector: Connector,
        path: Path,
        *,
        plant: Any = None,
        present_id: Callable[[str], Awaitable[str]] | None = None,
        site_why: Callable[[], str] | None = None,
    ) -> None:
        self.connector = connector
        # With a site energy manager, "why" shows the site's chain too (budget, fallback, every share).
        self.site_why = site_why
        self.path = path
        self.plant = plant  # simulated boards only: lets a person play the EV
        # With an OCPP uplink an id goes through its authorisation (local list, cache, CSMS), as a card
        # at the reader would; without one the connector is authorised directly.
        self.present_id = present_id
        self._pending: set[asyncio.Task[str]] = set()
        self._server: asyncio.AbstractServer | None = None
        self._commands: dict[str, Callable[[dict[str, Any]], Any]] = {
            "status": lambda _r: dataclasses.asdict(self.connector.status()),
            "why": lambda _r: self._why(),
            "authorize": self._authorize,
            "deauthorize": lambda _r: self.connector.deauthorize(),
            "pause": lambda _r: self.connector.pause(),
            "resume": lambda _r: self.connector.resume(),
            "limit": self._limit,
            "clear-limit": lambda r: self.connector.clear_limit(_text(r, "source")),
            "clear-fault": self._clear_fault,
            "sim": self._sim,
        }

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket from a crashed run
        self._server = await asyncio.start_unix_server(self._client, path=str(self.path), limit=MAX_REQUEST_BYTES)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(_answer(False, f"request longer than {MAX_REQUEST_BYTES} bytes"))
                    break
                if not line:
                    break
                writer.write(self.handle_line(line))
                await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.debug("control client went away: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    def handle_line(self, line: bytes) -> bytes:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise RequestError('a request is a JSON object, e.g. {"cmd": "status"}')
            cmd = request.get("cmd")
            handler = self._commands.get(cmd) if isinstance(cmd, str) else None
            if handler is None:
                raise RequestError(f"unknown command {cmd!r}; commands: {', '.join(sorted(self._commands))}")
            return _answer(True, handler(request))
        except json.JSONDecodeError as exc:
            return _answer(False, f"not JSON: {exc}")
        except (RequestError, ValueError) as exc:
            return _answer(False, str(exc))

    # ------------------------------------------------------------------ commands
    def _authorize(self, request: dict[str, Any]) -> str | None:
        tag = request.get("id_tag")
        if tag is not None and (not isinstance(tag, str) or not 0 < len(tag) <= 64):
            raise RequestError("id_tag must be a string of 1 to 64 characters")
        if self.present_id is None:
            self.connector.authorize(tag)
            return None
        if tag is None:
            raise RequestError("with an OCPP uplink an authorisation needs an id_tag")
        task = asyncio.ensure_future(self.present_id(tag))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return f"{tag} presented to the OCPP uplink: the status shows the outcome"

    def _why(self) -> str:
        text = self.connector.why()
        if self.site_why is not None:
            text += "\n\n" + self.site_why()
        return text

    def _limit(self, request: dict[str, Any]) -> str:
        source = _text(request, "source")
        amps = _number(request, "amps")
        for_s = request.get("for_s")
        expires = None
        if for_s is not None:
            expires = self.connector.clock.monotonic() + _number(request, "for_s")
        self.connector.set_limit(Limit(source, amps, expires_at=expires, detail="set over the control socket"))
        return self.connector.why()

    def _clear_fault(self, request: dict[str, Any]) -> bool:
        code = _text(request, "code")
        try:
            fault = FaultCode(code)
        except ValueError:
            raise RequestError(f"unknown fault {code!r}; faults: {', '.join(c.value for c in FaultCode)}") from None
        return self.connector.service_clear(fault)

    def _sim(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.plant is None:
            raise RequestError("'sim' only works on a simulated board")
        if "ev_state" in request:
            state = _text(request, "ev_state")
            if state not in ("A", "B", "C", "D", "E"):
                raise RequestError("ev_state must be one of A, B, C, D, E")
            self.plant.ev_state = state
        if "current_a" in request:
            # Signed, + into the EV: a negative current plays an EV that discharges (V2G, J3072).
            amps = _number(request, "current_a", signed=True)
            self.plant.ev_current_a = [amps] * self.plant.phases
        if "pp_ohm" in request:
            self.plant.pp_ohm = None if request["pp_ohm"] is None else _number(request, "pp_ohm")
        return {
            "ev_state": self.plant.ev_state,
            "current_a": list(self.plant.ev_current_a),
            "pp_ohm": self.plant.pp_ohm,
        }


def _text(request: dict[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str) or not value:
        raise RequestError(f"{key!r} must be a non-empty string")
    return value


def _number(request: dict[str, Any], key: str, *, signed: bool = False) -> float:
    value = request.get(key)
    wanted = "a finite number" if signed else "a number >= 0"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RequestError(f"{key!r} must be {wanted}")
    if value < 0 and not signed:
        raise RequestError(f"{key!r} must be {wanted}")
    return float(value)


def _answer(ok: bool, payload: Any) -> bytes:
    body = {"ok": True, "result": payload} if ok else {"ok": False, "error": payload}
    return (json.dumps(body, default=str) + "\n").encode()


async def request(path: Path, body: dict[str, Any], timeout_s: float = CLIENT_TIMEOUT_S) -> dict[str, Any]:
    """Send one request to a running firmware and return its answer."""

    async def exchange() -> dict[str, Any]:
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            writer.write((json.dumps(body) + "\n").encode())
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
        answer: dict[str, Any] = json.loads(line)
        return answer

    async with asyncio.timeout(timeout_s):
        return await exchange()
