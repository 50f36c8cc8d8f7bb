"""Real MicroPython for the tests: the official WebAssembly port (npm
``@micropython/micropython-webassembly-pyscript``, MicroPython v1.27; test-peers.md) under Node.

:func:`ensure_micropython` installs the pinned package with npm into a per-user cache directory
(``$EVSE_MICROPYTHON_DIR``, else ``$XDG_CACHE_HOME/evse-firmware/micropython-wasm``, else
``~/.cache/evse-firmware/micropython-wasm``), once: a marker written last records the version, parallel
workers are serialised by a lock file, every step is bounded. :func:`run_micropython` copies files into
MicroPython's filesystem root and runs an entry script (tests/mcu/run_micropython.mjs), bounded too.
A fresh machine needs only Node.js and npm (with the package registry).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

PACKAGE = "@micropython/micropython-webassembly-pyscript"
VERSION = "1.27.0"
INSTALL_TIMEOUT_S = 300.0
RUN_TIMEOUT_S = 60.0
RUNNER = Path(__file__).resolve().parent / "run_micropython.mjs"
_MARKER = "evse-micropython.json"
_LOCK = Path(tempfile.gettempdir()) / "evse-micropython-install.lock"


class MicroPythonError(RuntimeError):
    """npm or node is missing, the install failed, or the MicroPython program raised or timed out."""


def cache_dir() -> Path:
    override = os.environ.get("EVSE_MICROPYTHON_DIR")
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "evse-firmware" / "micropython-wasm"


def package_dir(base: Path | None = None) -> Path:
    return (base or cache_dir()) / "node_modules" / PACKAGE


def _installed(base: Path) -> bool:
    try:
        return bool(json.loads((base / _MARKER).read_text()) == {"package": PACKAGE, "version": VERSION})
    except (OSError, ValueError):
        return False


def ensure_micropython() -> Path:
    """The installed package's directory, installing it first if needed."""
    base = cache_dir()
    if _installed(base):
        return package_dir(base)
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise MicroPythonError("Node.js and npm are needed to run the MicroPython tests")
    base.mkdir(parents=True, exist_ok=True)
    with _LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed(base):
            return package_dir(base)
        (base / _MARKER).unlink(missing_ok=True)
        (base / "package.json").write_text('{"name": "evse-micropython-peer", "private": true}\n')
        cmd = [npm, "install", "--no-audit", "--no-fund", "--save-exact", f"{PACKAGE}@{VERSION}"]
        try:
            done = subprocess.run(cmd, cwd=base, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise MicroPythonError(
                f"npm install of {PACKAGE}@{VERSION} took longer than {INSTALL_TIMEOUT_S} s"
            ) from exc
        if done.returncode != 0 or not (package_dir(base) / "micropython.mjs").is_file():
            raise MicroPythonError(f"npm install of {PACKAGE}@{VERSION} failed:\n{(done.stdout + done.stderr)[-3000:]}")
        (base / _MARKER).write_text(json.dumps({"package": PACKAGE, "version": VERSION}))
    return package_dir(base)


def run_micropython(entry: Path, files: Sequence[Path], *, timeout_s: float = RUN_TIMEOUT_S) -> str:
    """Run ``entry`` on MicroPython with ``files`` at its filesystem root; its standard output."""
    package = ensure_micropython()
    cmd = ["node", str(RUNNER), str(package), str(entry), *map(str, files)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise MicroPythonError(f"MicroPython did not finish {entry.name} within {timeout_s} s") from exc
    if done.returncode != 0:
        raise MicroPythonError(f"{entry.name} failed on MicroPython:\n{done.stderr[-4000:]}\n{done.stdout[-2000:]}")
    return done.stdout


SERVER = Path(__file__).resolve().parent / "serve_micropython.mjs"
STOP_TIMEOUT_S = 5.0


class MicroPythonDevice:
    """The co-processor firmware on MicroPython behind a pty, as the Pi's driver finds a real one:
    ``path`` is the pty's slave side to open with pyserial; a thread carries bytes between the pty and
    the Node process (tests/mcu/serve_micropython.mjs). :meth:`plant` changes the fake hardware (the EV
    state, a residual current, ...) and :meth:`query` reads it (``coil``, ``mode``). A context manager:
    leaving it ends the process, the thread and the pty."""

    def __init__(self, serve: Path, files: Sequence[Path]) -> None:
        import queue
        import threading

        from hal.sim.pty import open_raw_pty

        package = ensure_micropython()
        self._master, self._slave, self.path = open_raw_pty()
        self.proc = subprocess.Popen(
            ["node", str(SERVER), str(package), str(serve), *map(str, files)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._answers: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._to_pi, daemon=True),
            threading.Thread(target=self._from_pi, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def __enter__(self) -> MicroPythonDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, command: dict[str, object]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def _to_pi(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            if "tx" in message:
                os.write(self._master, bytes.fromhex(message["tx"]))
            elif "answer" in message:
                self._answers.put(message["answer"])

    def _from_pi(self) -> None:
        import select

        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.01)
            if not ready:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:  # no slave side open at the moment
                continue
            if data:
                self._send({"rx": data.hex()})

    def plant(self, name: str, value: object) -> None:
        self._send({"plant": [name, value]})

    def query(self, name: str, timeout_s: float = 5.0) -> str:
        self._send({"query": name})
        import queue

        try:
            return self._answers.get(timeout=timeout_s)
        except queue.Empty:
            raise MicroPythonError(f"MicroPython did not answer the query {name!r} within {timeout_s} s") from None

    def close(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=STOP_TIMEOUT_S)
        for thread in self._threads:
            thread.join(timeout=STOP_TIMEOUT_S)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
