"""Harness for the independent strict OCPP CSMS (npm `ocpp-rpc` 2.2.1, driven by `ocpp_rpc/csms.js`).

The Node process prints one JSON event per line on stdout and takes one JSON command per line on stdin
(protocol described in `ocpp_rpc/README.md`). This module starts it, collects its events and turns the
commands into awaitable methods. Every wait is bounded and the process is always killed on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

PEER_DIR = Path(__file__).resolve().parent / "ocpp_rpc"
NPM_CI_TIMEOUT_S = 240.0
START_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0
_STDERR_TAIL_LINES = 40

Event = dict[str, Any]


class OcppPeerError(RuntimeError):
    """The peer could not be installed, started or driven (npm failure, process died, bad command)."""


class OcppPeerCallError(Exception):
    """A CSMS-initiated call ended in an error: a CALLERROR from the station, a strict-schema rejection of either
    side, a timeout (`code == "Timeout"`) or `code == "NotConnected"`."""

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details


def _node_modules_fresh() -> bool:
    # npm writes node_modules/.package-lock.json on every install; older than the lockfile means stale.
    marker = PEER_DIR / "node_modules" / ".package-lock.json"
    lock = PEER_DIR / "package-lock.json"
    return marker.is_file() and marker.stat().st_mtime >= lock.stat().st_mtime


def ensure_node_modules(timeout: float = NPM_CI_TIMEOUT_S) -> None:
    """Run `npm ci` in the peer directory unless node_modules already matches package-lock.json.

    Serialised across processes with a lock on package-lock.json, so parallel test workers install once."""
    npm = shutil.which("npm")
    if npm is None:
        raise OcppPeerError("npm not found on PATH: Node.js 20 with npm is needed for the ocpp-rpc peer")
    deadline = time.monotonic() + timeout
    with open(PEER_DIR / "package-lock.json", "rb") as lock_file:
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OcppPeerError(f"timed out after {timeout:.0f} s waiting for another npm ci") from None
                time.sleep(0.2)
        try:
            if _node_modules_fresh():
                return
            try:
                result = subprocess.run(
                    [npm, "ci", "--no-audit", "--no-fund"],
                    cwd=PEER_DIR,
                    capture_output=True,
                    text=True,
                    timeout=max(1.0, deadline - time.monotonic()),
                )
            except subprocess.TimeoutExpired as exc:
                raise OcppPeerError(f"npm ci in {PEER_DIR} timed out after {timeout:.0f} s") from exc
            if result.returncode != 0:
                # npm states the cause first and appends usage help after it.
                head = "\n".join((result.stderr + result.stdout).splitlines()[:25])
                raise OcppPeerError(f"npm ci in {PEER_DIR} failed (exit {result.returncode}):\n{head}")
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


class OcppRpcCsms:
    """A running strict CSMS. Create with `await OcppRpcCsms.start(...)`; use as `async with`."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.events: list[Event] = []
        self.port = 0
        self._changed = asyncio.Event()
        self._stderr: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)
        self._ids = itertools.count(1)
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    @classmethod
    async def start(
        cls,
        port: int = 0,
        *,
        interval: int = 300,
        boot_status: str = "Accepted",
        startup_timeout: float = START_TIMEOUT_S,
    ) -> Self:
        """Install the Node dependencies if needed, start `node csms.js` on 127.0.0.1:`port` (0 = any free port)
        and wait until it listens. `interval` is the BootNotification heartbeat interval it hands out."""
        node = shutil.which("node")
        if node is None:
            raise OcppPeerError("node not found on PATH: Node.js 20 is needed for the ocpp-rpc peer")
        await asyncio.to_thread(ensure_node_modules)
        process = await asyncio.create_subprocess_exec(
            node,
            str(PEER_DIR / "csms.js"),
            str(port),
            "--interval",
            str(interval),
            "--boot-status",
            boot_status,
            cwd=PEER_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        csms = cls(process)
        try:
            listening = await csms.wait_for(lambda e: e["ev"] == "listening", timeout=startup_timeout)
        except BaseException:
            await csms.stop()
            raise
        csms.port = int(listening["port"])
        return csms

    @property
    def url(self) -> str:
        """Base URL; stations connect to `url + "/" + identity`."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process.returncode is None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def strict_errors(self) -> list[Event]:
        """Every message either side got wrong: schema failures (ocpp-rpc strict mode) and unparsable frames."""
        return [e for e in self.events if e["ev"] == "strict_error"]

    async def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 5.0, *, since: int = 0) -> Event:
        """Return the first event at index >= `since` matching `predicate`, waiting up to `timeout` seconds.

        Raises TimeoutError (with the last events in the message), or OcppPeerError if the process has exited
        without the event having appeared."""
        deadline = asyncio.get_running_loop().time() + timeout
        index = since
        while True:
            while index < len(self.events):
                event = self.events[index]
                index += 1
                if predicate(event):
                    return event
            if self._readers[0].done():
                # Let stderr catch up: it usually holds why the process died.
                await asyncio.wait([self._readers[1]], timeout=1.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._process.wait(), 1.0)
                raise OcppPeerError(f"CSMS process exited (rc={self._process.returncode}){self._context()}")
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"no matching CSMS event within {timeout} s{self._context()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def call(self, identity: str, action: str, payload: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send a CSMS-initiated CALL to a connected station and return its CALLRESULT payload.

        Raises OcppPeerCallError on a CALLERROR, a strict-schema failure of the request or the response, a call
        timeout after `timeout` seconds, or when the station is not connected."""
        cmd_id = f"c{next(self._ids)}"
        since = len(self.events)
        await self._send(
            {
                "cmd": "call",
                "id": cmd_id,
                "identity": identity,
                "action": action,
                "payload": payload,
                "timeout_ms": int(timeout * 1000),
            }
        )
        answer = await self.wait_for(
            lambda e: e["ev"] in ("result", "error") and e.get("id") == cmd_id, timeout=timeout + 2.0, since=since
        )
        if answer["ev"] == "error":
            raise OcppPeerCallError(str(answer["code"]), str(answer["message"]), answer.get("details"))
        result: dict[str, Any] = answer["payload"]
        return result

    async def set(self, **settings: Any) -> None:
        """Change default answers: `boot_status` ("Accepted" | "Pending" | "Rejected"), `interval` (s),
        `blocked` / `invalid` (id tokens Authorize/StartTransaction/TransactionEvent answer Blocked / Invalid),
        `passwords` ({identity: password}; listed identities must present that Basic-auth password, else 401)."""
        await self._command("set", **settings)

    async def close_station(self, identity: str, code: int = 1000) -> None:
        """Close the station's WebSocket from the CSMS side (forced after 2 s if it does not answer)."""
        await self._command("close", identity=identity, code=code)

    async def stop(self) -> None:
        """Shut the CSMS down (connections dropped) and wait for the process; killed if it lingers. Idempotent."""
        if self.running:
            with contextlib.suppress(OSError, RuntimeError, TimeoutError):
                await self._send({"cmd": "stop", "id": "stop"})
            try:
                await asyncio.wait_for(self._process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self._process.kill()
                await asyncio.wait_for(self._process.wait(), STOP_TIMEOUT_S)
        # Let the readers drain what the process printed last (e.g. "disconnected", "stopped").
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._readers, return_exceptions=True), STOP_TIMEOUT_S)
        for reader in self._readers:
            reader.cancel()

    async def _command(self, cmd: str, **fields: Any) -> None:
        cmd_id = f"c{next(self._ids)}"
        since = len(self.events)
        await self._send({**fields, "cmd": cmd, "id": cmd_id})
        answer = await self.wait_for(
            lambda e: e["ev"] in ("ack", "cmd_error") and e.get("id") == cmd_id, timeout=COMMAND_TIMEOUT_S, since=since
        )
        if answer["ev"] == "cmd_error":
            raise OcppPeerError(f"CSMS refused {cmd}: {answer.get('message')}")

    async def _send(self, command: dict[str, Any]) -> None:
        stdin = self._process.stdin
        if stdin is None or not self.running:
            raise OcppPeerError(f"CSMS process is not running (rc={self._process.returncode}){self._context()}")
        stdin.write(json.dumps(command).encode() + b"\n")
        await asyncio.wait_for(stdin.drain(), COMMAND_TIMEOUT_S)

    def _context(self) -> str:
        last = "\n  ".join(json.dumps(e)[:300] for e in self.events[-10:]) or "(none)"
        stderr = "\n  ".join(self._stderr) or "(empty)"
        return f"\nlast events:\n  {last}\nstderr tail:\n  {stderr}"

    def _append(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    async def _read_stdout(self) -> None:
        stream = self._process.stdout
        assert stream is not None
        try:
            while line := await stream.readline():
                text = line.decode(errors="replace").rstrip("\n")
                try:
                    event = json.loads(text)
                except json.JSONDecodeError:
                    event = None
                if not isinstance(event, dict) or "ev" not in event:
                    # Contract breach by csms.js; recorded so a test can see it rather than silently lost.
                    event = {"ev": "invalid_output", "line": text}
                self._append(event)
        finally:
            # Wake waiters so they notice the process is gone instead of sleeping out their timeout.
            self._changed.set()

    async def _read_stderr(self) -> None:
        stream = self._process.stderr
        assert stream is not None
        while line := await stream.readline():
            self._stderr.append(line.decode(errors="replace").rstrip())


__all__ = ["OcppPeerCallError", "OcppPeerError", "OcppRpcCsms", "ensure_node_modules"]
