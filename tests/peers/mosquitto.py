"""A real Eclipse Mosquitto broker for the EMS MQTT tests, installed and started by the tests themselves.

:func:`ensure_mosquitto` finds ``mosquitto`` and ``mosquitto_passwd`` (on PATH or in /usr/sbin, /usr/bin,
where Debian puts them) or installs the Debian package: ``apt-get update`` then
``apt-get install -y --no-install-recommends mosquitto``, as root, bounded by :data:`INSTALL_TIMEOUT_S`,
serialised across processes by a lock file so parallel test workers install once, and skipped once the
binaries are there. A fresh CI machine therefore needs nothing installed by hand.

:class:`MosquittoBroker` writes a config into a temporary directory (a listener on 127.0.0.1 and a free
port, ``allow_anonymous false``, a password file made with ``mosquitto_passwd -b``, an optional ACL file,
no persistence), starts the broker, waits until it accepts TCP connections and stops it on exit. It can be
stopped and started again on the same port to test reconnects. Every wait is bounded; a broker that fails
to start raises :class:`MosquittoError` with the tail of its log.

    with MosquittoBroker({"station": "pw1", "ems": "pw2"}, acl=ACL) as broker:
        ... connect to broker.host, broker.port ...
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.peers.peer_venv import install_lock

INSTALL_TIMEOUT_S = 300.0
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
_LOCK_FILE = Path(tempfile.gettempdir()) / "evse-mosquitto-install.lock"
_SEARCH_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")
_LOG_TAIL_LINES = 30


class MosquittoError(RuntimeError):
    """The broker could not be installed, configured or started."""


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in _SEARCH_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def find_mosquitto() -> tuple[str, str] | None:
    """Paths of ``mosquitto`` and ``mosquitto_passwd``, or None when either is missing."""
    broker, passwd = _which("mosquitto"), _which("mosquitto_passwd")
    return (broker, passwd) if broker and passwd else None


def _run_apt(args: list[str], deadline: float) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise MosquittoError(f"installing mosquitto took longer than {INSTALL_TIMEOUT_S:.0f} s")
    try:
        result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=remaining, check=False)
    except subprocess.TimeoutExpired as exc:
        raise MosquittoError(f"`{' '.join(args)}` timed out (mosquitto install bounded by {remaining:.0f} s)") from exc
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise MosquittoError(f"`{' '.join(args)}` failed (exit {result.returncode}):\n{tail}")


def ensure_mosquitto(timeout: float = INSTALL_TIMEOUT_S) -> tuple[str, str]:
    """Paths of ``mosquitto`` and ``mosquitto_passwd``, installing the Debian package when missing."""
    found = find_mosquitto()
    if found:
        return found
    apt_get = _which("apt-get")
    if apt_get is None:
        raise MosquittoError("mosquitto is not installed and there is no apt-get: install the mosquitto broker")
    if os.geteuid() != 0:
        raise MosquittoError("mosquitto is not installed and installing it needs root: apt-get install -y mosquitto")
    deadline = time.monotonic() + timeout
    with install_lock(_LOCK_FILE, deadline, MosquittoError(f"waited {timeout:.0f} s for another mosquitto install")):
        found = find_mosquitto()  # another worker may have installed it while this one waited
        if found:
            return found
        # Lists may be absent or stale on a fresh machine: update once, right before the install.
        lock_wait = ["-o", "DPkg::Lock::Timeout=120"]
        _run_apt([apt_get, *lock_wait, "update"], deadline)
        _run_apt([apt_get, *lock_wait, "install", "-y", "--no-install-recommends", "mosquitto"], deadline)
    found = find_mosquitto()
    if found is None:
        raise MosquittoError("apt-get installed mosquitto but mosquitto or mosquitto_passwd is still not found")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class MosquittoBroker:
    """One broker process with password authentication; a context manager that starts and stops it."""

    def __init__(
        self,
        users: Mapping[str, str],
        *,
        acl: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        install_timeout: float = INSTALL_TIMEOUT_S,
    ) -> None:
        if not users:
            raise ValueError("a broker without anonymous access needs at least one user")
        self.users = dict(users)
        self.acl = acl
        self.host = host
        self.port = port or free_port(host)
        self._install_timeout = install_timeout
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._binary = ""

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def _workdir(self) -> Path:
        assert self._dir is not None, "broker not configured"
        return Path(self._dir.name)

    def _configure(self) -> None:
        self._binary, passwd = ensure_mosquitto(self._install_timeout)
        self._dir = tempfile.TemporaryDirectory(prefix="evse-mosquitto-")
        work = self._workdir
        password_file = work / "passwd"
        for i, (user, password) in enumerate(self.users.items()):
            args = [passwd, "-b", *(["-c"] if i == 0 else []), str(password_file), user, password]
            result = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
            if result.returncode != 0:
                raise MosquittoError(f"mosquitto_passwd failed for {user!r}: {result.stderr.strip()}")
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous false",
            f"password_file {password_file}",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            # Started as root, mosquitto switches to the user named here (default "mosquitto"), which could
            # not read the files in this private directory: stay the user that runs the tests.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
        ]
        if self.acl is not None:
            acl_file = work / "acl"
            acl_file.write_text(self.acl)
            lines.append(f"acl_file {acl_file}")
        (work / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        """Start the broker (on the same port as before after :meth:`stop`) and wait until it listens."""
        if self.running:
            return
        if self._dir is None:
            self._configure()
        # The child gets its own copy of the descriptor; the parent's is closed at once.
        with open(self._workdir / "broker.log", "ab") as log:
            self._process = subprocess.Popen(
                [self._binary, "-c", str(self._workdir / "mosquitto.conf")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._process.poll() is not None:
                raise MosquittoError(f"mosquitto exited with {self._process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise MosquittoError(f"mosquitto did not listen on {self.host}:{self.port}:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT_S`)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self) -> str:
        if self._dir is None:
            return ""
        path = self._workdir / "broker.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:])

    def close(self) -> None:
        self.stop()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

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
