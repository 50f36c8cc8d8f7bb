"""The `iso15118` package (PyPI 0.31.2) as an independent peer, installed by the tests themselves.

:func:`ensure_iso15118_venv` makes a venv of its own for the package (it pins pydantic 1 and
cryptography 44 and its EVCC needs the undeclared ``aiofile``, test-peers.md, so it cannot share the
project's venv) and installs the verified set of :data:`PINNED_REQUIREMENTS` with pip, bounded by
:data:`INSTALL_TIMEOUT_S`. The venv lives in a per-user cache directory that survives between test runs
(``$EVSE_ISO15118_PEER_DIR``, else ``$XDG_CACHE_HOME/evse-firmware/iso15118-peer``, else
``~/.cache/evse-firmware/iso15118-peer``); a marker file written last records the pins, so a later run
finds a complete install and does nothing, and a broken or outdated one is rebuilt. Parallel test
workers are serialised by a lock file and install once. A fresh CI machine needs only Python 3.11, pip
(with its package index) and Java 17.

:class:`ExiOracle` runs the package's EXIficient codec (a JVM via py4j) in ONE long-lived subprocess of
that venv, ``iso15118_oracle_server.py``, and speaks JSON lines with it:

    with ExiOracle() as oracle:
        data = oracle.encode("urn:iso:15118:2:2013:MsgDef", {"V2G_Message": {...}})
        tree = oracle.decode("urn:iso:15118:2:2013:MsgDef", data)

Every call is bounded by a timeout; an error answer raises :class:`OracleError` with the Java side's text.
A call that times out kills the server (its state is unknown) and the next call starts a fresh one.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.peers import peer_venv

#: The package the oracle comes from, and the undeclared dependency of its EVCC (test-peers.md).
ISO15118_VERSION = "0.31.2"
AIOFILE_VERSION = "3.12.3"
#: The whole dependency set, as verified to install and run together on this kind of machine: pinning the
#: transitive packages too keeps a later release of one of them from changing the oracle under the tests.
PINNED_REQUIREMENTS: tuple[str, ...] = (
    f"iso15118=={ISO15118_VERSION}",
    f"aiofile=={AIOFILE_VERSION}",
    "caio==0.12.10",
    "py4j==0.10.9.9",
    "pydantic==1.10.21",
    "cryptography==44.0.0",
    "cffi==2.1.1",
    "pycparser==3.12",
    "environs==14.6.0",
    "marshmallow==4.4.0",
    "python-dotenv==1.2.4",
    "mypy_extensions==1.2.0",
    "psutil==6.1.1",
    "types-psutil==6.1.0.20241221",
    "types-toml==0.10.8.20260518",
    "typing_extensions==4.16.0",
)
INSTALL_TIMEOUT_S = 420.0
#: Starting the server includes the JVM (~2 s here); a cold, loaded CI machine gets some margin.
START_TIMEOUT_S = 60.0
#: One encode or decode takes ~40 ms; a call this slow means the JVM is stuck.
CALL_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
ENV_PEER_DIR = "EVSE_ISO15118_PEER_DIR"
SERVER_SCRIPT = Path(__file__).resolve().parent / "iso15118_oracle_server.py"
_STDERR_TAIL_LINES = 30


class Iso15118PeerError(RuntimeError):
    """The peer venv could not be made, Java is missing, or the oracle server could not be started."""


class OracleError(Exception):
    """The oracle answered with an error (the text is the Java side's), timed out, or broke its protocol."""


def peer_dir() -> Path:
    """Where the peer venv lives (see the module docstring for the order of choices)."""
    return peer_venv.peer_dir("iso15118-peer", ENV_PEER_DIR)


def venv_python(directory: Path | None = None) -> Path:
    return peer_venv.venv_python(directory or peer_dir())


#: Importing the codec module proves the install is whole (it needs py4j and the bundled jar).
_PROBE = (
    "import os, aiofile; from iso15118.shared import settings; "
    "import iso15118.shared.exificient_exi_codec; "
    "assert os.path.isfile(settings.JAR_FILE_PATH), settings.JAR_FILE_PATH"
)


def ensure_iso15118_venv(timeout: float = INSTALL_TIMEOUT_S) -> Path:
    """The peer venv's python, installing the pinned packages first when they are not there yet."""
    return peer_venv.ensure_venv(
        peer_dir(), PINNED_REQUIREMENTS, probe=_PROBE, timeout=timeout, error=Iso15118PeerError
    )


def find_java() -> Path:
    """The ``java`` the oracle's JVM will run: ``$JAVA_HOME/bin/java``, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("java")
    if found is None:
        raise Iso15118PeerError(
            "java not found (neither $JAVA_HOME/bin/java nor java on PATH): the EXI oracle runs EXIficient in a "
            "JVM; install a Java 17 runtime (Debian: apt-get install -y openjdk-17-jre-headless)"
        )
    return Path(found)


def _value_last(tree: Any) -> Any:
    """`tree` with the simple-content key ``"value"`` after the attribute keys in every object.

    The oracle's JSON reader (EclipseLink MOXy) silently encodes empty content when ``"value"`` comes before
    an attribute key, although JSON objects are unordered; the oracle's own decoder always writes attributes
    first. No V2G schema has an element or attribute named ``value``, so the key is unambiguous."""
    if isinstance(tree, dict):
        ordered = {key: _value_last(item) for key, item in tree.items() if key != "value"}
        if "value" in tree:
            ordered["value"] = _value_last(tree["value"])
        return ordered
    if isinstance(tree, list):
        return [_value_last(item) for item in tree]
    return tree


class ExiOracle:
    """The EXIficient codec of the `iso15118` package in one subprocess; a context manager.

    `ns` is the XML namespace naming the grammar (e.g. ``urn:iso:15118:2:2013:MsgDef``); trees are the codec's
    JSON form (the root element name as the only key; tests/firmware/iso15118/instances.py describes it).
    `server_script` is for tests of this class (a server that hangs or dies)."""

    def __init__(
        self,
        *,
        call_timeout: float = CALL_TIMEOUT_S,
        start_timeout: float = START_TIMEOUT_S,
        install_timeout: float = INSTALL_TIMEOUT_S,
        server_script: Path = SERVER_SCRIPT,
    ) -> None:
        self.call_timeout = call_timeout
        self.server_script = server_script
        self.start_timeout = start_timeout
        self.install_timeout = install_timeout
        self.version = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._buffer = b""
        self._ids = itertools.count(1)
        self._stderr_path: Path | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Install the peer if needed and start the server; returns once the codec is ready."""
        if self.running:
            return
        java = find_java()
        python = ensure_iso15118_venv(self.install_timeout)
        if self._workdir is None:
            # The package reads `.env` from its working directory: give it an empty one of its own.
            self._workdir = tempfile.TemporaryDirectory(prefix="evse-exi-oracle-")
        workdir = Path(self._workdir.name)
        self._stderr_path = workdir / "server.stderr"
        env = dict(os.environ)
        # py4j launches plain `java`: put the one found first on PATH.
        env["PATH"] = f"{java.parent}{os.pathsep}{env.get('PATH', '')}"
        env.pop("PYTHONPATH", None)
        env["PYTHONUNBUFFERED"] = "1"
        with open(self._stderr_path, "ab") as stderr:
            self._process = subprocess.Popen(
                [str(python), str(self.server_script)],
                cwd=workdir,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                # Own process group: close() ends the server and its JVM together, and nothing else.
                start_new_session=True,
            )
        self._buffer = b""
        try:
            hello = self._read_line(time.monotonic() + self.start_timeout, "starting")
        except OracleError as exc:
            self._kill()
            raise Iso15118PeerError(f"the EXI oracle server did not start: {exc}") from None
        if hello.get("ready") is not True:
            self._kill()
            raise Iso15118PeerError(f"the EXI oracle server did not start: {hello.get('error', hello)}{self._tail()}")
        self.version = str(hello.get("version", ""))

    def encode(self, ns: str, tree: dict[str, Any]) -> bytes:
        """EXI bytes of `tree` coded with the grammar of `ns`; OracleError when the codec refuses it."""
        answer = self._call({"op": "encode", "ns": ns, "json": _value_last(tree)})
        text = answer.get("hex")
        if not isinstance(text, str):
            raise OracleError(f"oracle answer without 'hex': {answer}")
        return bytes.fromhex(text)

    def decode(self, ns: str, data: bytes) -> dict[str, Any]:
        """The JSON tree of the EXI stream `data` decoded with the grammar of `ns`; OracleError on failure."""
        answer = self._call({"op": "decode", "ns": ns, "hex": bytes(data).hex()})
        tree = answer.get("json")
        if not isinstance(tree, dict):
            raise OracleError(f"oracle answer without a 'json' object: {answer}")
        return tree

    def close(self) -> None:
        """Stop the server and its JVM (SIGTERM to its process group, SIGKILL if it lingers). Idempotent."""
        self._kill()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        if not self.running:
            self.start()
        process = self._process
        assert process is not None and process.stdin is not None
        call_id = next(self._ids)
        deadline = time.monotonic() + self.call_timeout
        try:
            process.stdin.write(json.dumps({**request, "id": call_id}).encode() + b"\n")
            process.stdin.flush()
        except OSError as exc:
            self._kill()
            raise OracleError(f"the oracle server is gone ({exc}){self._tail()}") from None
        try:
            answer = self._read_line(deadline, request["op"])
        except OracleError:
            # Unknown state (stuck JVM, half an answer read): never reuse this server.
            self._kill()
            raise
        if answer.get("id") != call_id:
            self._kill()
            raise OracleError(f"oracle answered call {answer.get('id')!r} instead of {call_id}: {answer}")
        if "error" in answer:
            raise OracleError(str(answer["error"]))
        return answer

    def _read_line(self, deadline: float, what: str) -> dict[str, Any]:
        process = self._process
        assert process is not None and process.stdout is not None
        fd = process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OracleError(f"no answer from the oracle within the timeout ({what}){self._tail()}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(1.0)
                raise OracleError(f"the oracle server exited (rc={process.returncode}) while {what}{self._tail()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            answer = json.loads(line)
        except ValueError:
            raise OracleError(f"the oracle server printed a non-JSON line: {line[:300]!r}") from None
        if not isinstance(answer, dict):
            raise OracleError(f"the oracle server printed a non-object line: {line[:300]!r}")
        return answer

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(STOP_TIMEOUT_S)
        # The JVM is in the same group; it may outlive the server by a moment after SIGTERM.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.stdout is not None:
            process.stdout.close()
        self._buffer = b""

    def _tail(self) -> str:
        if self._stderr_path is None or not self._stderr_path.exists():
            return ""
        lines = self._stderr_path.read_text(errors="replace").splitlines()[-_STDERR_TAIL_LINES:]
        return "\n--- oracle server stderr (tail) ---\n" + "\n".join(lines) if lines else ""


__all__ = [
    "ExiOracle",
    "Iso15118PeerError",
    "OracleError",
    "ensure_iso15118_venv",
    "find_java",
    "peer_dir",
]
