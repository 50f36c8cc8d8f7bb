"""The `iso15118` package's EVCC as the independent EV for interop tests (test-peers.md).

:class:`PeerEvcc` starts the package's EVCC (``iso15118_evcc_main.py`` in the peer venv made by
:func:`tests.peers.iso15118_peer.ensure_iso15118_venv`) in a working directory of its own, with the
``.env`` and JSON configuration the package reads. It must run where the EV's interface exists: the
interop tests start it inside the private network namespace (tests/netns.py), on ``ev0``.

The package's EVCC does not end its process when a session ends, and a failed session leaves it
hanging (test-peers.md): :meth:`PeerEvcc.wait_for` polls its output for a message with a bound, and
:meth:`PeerEvcc.stop` kills it whatever state it is in. The output lines ``PEER tx|rx NAME`` (written
by the entry script) give the message sequence as the EV saw it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from tests.peers.iso15118_peer import venv_python

ENTRY = Path(__file__).resolve().parent / "iso15118_evcc_main.py"
#: The package's names for the protocols it offers in SupportedAppProtocol (its Protocol enum).
PROTOCOL_NAMES = {
    "din": "DIN_SPEC_70121",
    "iso2": "ISO_15118_2",
    "iso20-ac": "ISO_15118_20_AC",
    "iso20-dc": "ISO_15118_20_DC",
}
STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class PeerCase:
    """One EV set-up: the protocol it offers, the energy service, TLS and Plug & Charge, loop count."""

    protocol: str  # a key of PROTOCOL_NAMES
    energy: str  # AC, DC, AC_BPT, DC_BPT (the package's supportedEnergyServices)
    tls: bool = False
    pnc: bool = False
    discharge: bool = False
    #: Charge loops the EV runs: enough that an AC contactor has closed even on a loaded machine (the
    #: peer answers a loop in ~40 ms; the connector needs ~100 ms from state C to a proven close).
    loops: int = 30
    transfer_mode: str | None = None  # -2/DIN requestedEnergyTransferMode, e.g. AC_three_phase_core

    def config(self) -> dict[str, object]:
        config: dict[str, object] = {
            "supportedProtocols": [PROTOCOL_NAMES[self.protocol]],
            "supportedEnergyServices": [self.energy],
            "isCertInstallNeeded": False,
            "useTls": self.tls,
            "enforceTls": self.tls,
            "chargeLoopCycle": self.loops,
            "sdpRetryCycles": 1,
        }
        if self.transfer_mode is not None:
            config["energyTransferMode"] = self.transfer_mode
        return config


class PeerEvcc:
    """The package's EVCC in ``workdir`` on ``interface``; a context manager that always kills it."""

    def __init__(self, workdir: Path, interface: str, case: PeerCase, *, pki: Path | None = None) -> None:
        self.workdir = workdir
        self.case = case
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "evcc_config.json"
        config.write_text(json.dumps(case.config(), indent=1))
        env_lines = [f"NETWORK_INTERFACE={interface}", "LOG_LEVEL=INFO", f"EVCC_CONFIG_PATH={config}"]
        env_lines.append(
            "ENABLE_TLS_1_3=true" if case.protocol.startswith("iso20") and case.tls else "ENABLE_TLS_1_3=false"
        )
        if pki is not None:
            env_lines.append(f"PKI_PATH={pki}/")
        (workdir / ".env").write_text("\n".join(env_lines) + "\n")
        self._out = (workdir / "stdout.txt").open("w")
        self._err = (workdir / "stderr.txt").open("w")
        argv = [str(venv_python()), str(ENTRY), str(config)]
        if case.discharge:
            argv.append("--discharge")
        self.proc = subprocess.Popen(
            argv, cwd=workdir, stdout=self._out, stderr=self._err, text=True, start_new_session=True
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def messages(self) -> list[tuple[str, str]]:
        """(direction, name) of every message the EV has sent (tx) or received (rx) so far."""
        lines = (self.workdir / "stdout.txt").read_text().splitlines()
        return [
            (parts[1], parts[2]) for parts in (line.split() for line in lines) if len(parts) == 3 and parts[0] == "PEER"
        ]

    def received(self) -> list[dict[str, Any]]:
        """Every message the EV decoded, as the package's codec JSON (from its INFO log lines)."""
        out = []
        for line in self.log().splitlines():
            _, marker, text = line.partition("Decoded message (ns=")
            if marker:
                _, _, body = text.partition("): ")
                try:
                    out.append(dict(json.loads(body)))
                except ValueError:
                    continue
        return out

    def log(self) -> str:
        """Everything the EVCC wrote (the package logs to stdout, tracebacks go to stderr)."""
        return (self.workdir / "stdout.txt").read_text() + (self.workdir / "stderr.txt").read_text()

    def wait_for(self, direction: str, name: str, within_s: float) -> bool:
        """Poll (real time, bounded) until the EV has sent or received ``name``; False if it never did
        or its process ended first."""
        end = time.monotonic() + within_s
        while time.monotonic() < end:
            if (direction, name) in self.messages():
                return True
            if self.proc.poll() is not None:
                return (direction, name) in self.messages()
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        self._out.close()
        self._err.close()
