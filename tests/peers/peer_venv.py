"""A pinned venv of its own for an independent peer, installed by the tests themselves.

The peers (the `iso15118` package, `py20305`) pin dependencies the project cannot share (pydantic 1 vs 2,
their own cryptography), so each gets a venv in a per-user cache directory that survives between test
runs: ``$<ENV_VAR>``, else ``$XDG_CACHE_HOME/evse-firmware/<name>``, else ``~/.cache/evse-firmware/<name>``.
A marker file written last records the pins, so a later run finds a complete install and does nothing,
and a broken or outdated one is rebuilt. Parallel test workers are serialised by a lock file and install
once. Every step is bounded by the caller's timeout; pip gets a per-connection timeout so one stalled
download fails instead of eating the whole budget.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["PeerVenvError", "ensure_venv", "install_lock", "peer_dir", "venv_python"]

VENV_TIMEOUT_S = 120.0
PIP_SOCKET_TIMEOUT_S = 60
MARKER_NAME = "evse-peer-install.json"


class PeerVenvError(RuntimeError):
    """The peer's venv could not be made or checked; the message says which step failed and how."""


def peer_dir(name: str, env_var: str) -> Path:
    override = os.environ.get(env_var)
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "evse-firmware" / name


def venv_python(directory: Path) -> Path:
    return directory / "venv" / "bin" / "python"


def _marker(requirements: Sequence[str]) -> dict[str, Any]:
    return {"requirements": list(requirements), "python": f"{sys.version_info.major}.{sys.version_info.minor}"}


def _installed(directory: Path, requirements: Sequence[str]) -> bool:
    try:
        recorded = json.loads((directory / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return False
    return recorded == _marker(requirements) and venv_python(directory).is_file()


def _run(args: list[str], deadline: float, what: str, error: type[RuntimeError]) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise error(f"installing the peer ran out of time ({what})")
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=remaining, check=False)
    except subprocess.TimeoutExpired as exc:
        raise error(f"{what}: `{' '.join(args)}` timed out after {remaining:.0f} s") from exc
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-25:])
        raise error(f"{what}: `{' '.join(args)}` failed (exit {result.returncode}):\n{tail}")


def _install(
    directory: Path, requirements: Sequence[str], probe: str, deadline: float, error: type[RuntimeError]
) -> None:
    venv = directory / "venv"
    marker = directory / MARKER_NAME
    # A marker that does not match means a half-finished or outdated venv: start from nothing.
    marker.unlink(missing_ok=True)
    shutil.rmtree(venv, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    venv_deadline = min(deadline, time.monotonic() + VENV_TIMEOUT_S)
    _run([sys.executable, "-m", "venv", str(venv)], venv_deadline, "making the venv", error)
    python = str(venv_python(directory))
    pip = [python, "-m", "pip", "--disable-pip-version-check", "--no-input", "--timeout", str(PIP_SOCKET_TIMEOUT_S)]
    _run([*pip, "install", *requirements], deadline, f"pip install into {venv}", error)
    _run([python, "-c", probe], deadline, "checking the install", error)
    partial = marker.with_suffix(".tmp")
    partial.write_text(json.dumps(_marker(requirements), indent=1) + "\n")
    partial.replace(marker)  # written last and atomically: its presence means a complete install


def ensure_venv(
    directory: Path,
    requirements: Sequence[str],
    *,
    probe: str,
    timeout: float,
    error: type[RuntimeError] = PeerVenvError,
) -> Path:
    """The venv's python in ``directory``, installing ``requirements`` first when they are not there yet;
    ``probe`` is Python code that must run in the new venv (it proves the install is whole)."""
    if _installed(directory, requirements):
        return venv_python(directory)
    deadline = time.monotonic() + timeout
    lock_file = Path(tempfile.gettempdir()) / f"evse-peer-install-{directory.name}.lock"
    with install_lock(lock_file, deadline, error(f"waited {timeout:.0f} s for another install of {directory}")):
        if not _installed(directory, requirements):  # another worker may have installed it meanwhile
            _install(directory, requirements, probe, deadline, error)
    return venv_python(directory)


@contextlib.contextmanager
def install_lock(path: Path, deadline: float, timed_out: Exception) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (parallel test workers install a peer once); ``timed_out`` is
    raised when another holder keeps it past ``deadline``."""
    with open(path, "a+b") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise timed_out from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
