"""`evse run --j3072` end to end: the real firmware process on a simulated board serves IEEE 2030.5 over
mutual TLS on loopback; a scripted PEV registers, sends its ISM number, reads the site parameters and
reports them applied; the gate authorises, `evse why` says so, the journal keeps every decision, and an
export before authorisation opens the contactor (R152)."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from firmware.control import request
from firmware.j3072.resources import Reply, lfdi_of
from firmware.journal import Journal
from hil.models.j3072_pev import Sep2PevClient
from tests.e2e.processes import stop
from tests.firmware.ocpp.certs import Pki, make_pki

TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _configs(work: Path, pki: Pki, port: int) -> tuple[Path, Path]:
    energy = work / "energy.toml"
    energy.write_text('[site]\ngrid_import_max_kw = 11.0\ngrid_export_max_kw = 7.0\nsite_meter = "none"\n')
    j3072 = work / "j3072.toml"
    j3072.write_text(
        f"""
bind = "127.0.0.1"
port = {port}
server_cert = "{pki.server_cert}"
server_key = "{pki.server_key}"
pev_roots = "{pki.ca_cert}"
[site]
interconnection_agreement = "R21-TEST-1"
max_discharge_kw = 6.0
max_charge_kw = 7.4
max_current_a = 32
[site.der]
f_nom_hz = 50
v_nom_v = 230
p_rated_w = 7400
[utility]
service_area = "TEST"
accepted_editions = ["J3072_202406"]
approval_required = false
[backend]
v2x = "allow"
"""
    )
    return energy, j3072


def _https(pki: Pki, port: int) -> Any:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))

    def send(method: str, path: str, body: bytes) -> Reply:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        try:
            conn.request(method, path, body=body or None, headers={"Content-Type": "application/sep+xml"})
            reply = conn.getresponse()
            return Reply(reply.status, reply.read(), tuple(reply.getheaders()))
        finally:
            conn.close()

    return send


async def _until(what: str, check: Any, deadline: float) -> Any:
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no {what} in time")


@pytest.mark.timeout(120)
def test_evse_run_gates_a_j3072_pev(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    port = _free_port()
    energy, j3072 = _configs(tmp_path, pki, port)
    sock = tmp_path / "evse.sock"
    data = tmp_path / "data"
    log = (tmp_path / "evse.log").open("wb")
    cmd = [
        sys.executable, "-m", "firmware.cli", "run", "--board", "sim-ac", "--free", "--energy", str(energy),
        "--j3072", str(j3072), "--data-dir", str(data), "--control", str(sock),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    lfdi = lfdi_of(
        x509.load_pem_x509_certificate(pki.client_cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    )

    async def scenario() -> None:
        deadline = time.monotonic() + TIMEOUT_S

        async def up() -> bool:
            try:
                return sock.exists() and bool((await request(sock, {"cmd": "status"}, timeout_s=2.0))["ok"])
            except (OSError, TimeoutError):
                return False

        async def why() -> str:
            return str((await request(sock, {"cmd": "why"}))["result"])

        async def status() -> dict[str, Any]:
            return dict((await request(sock, {"cmd": "status"}))["result"])

        await _until("control socket", up, deadline)
        await request(sock, {"cmd": "sim", "ev_state": "B", "pp_ohm": 220.0})
        await _until("J3072 session", lambda: _contains(why, "J3072 connector 1: charge only"), deadline)
        pev = Sep2PevClient(_https(pki, port), lfdi=lfdi)
        await asyncio.to_thread(pev.connect_fully)
        try:
            text = await _until("authorisation", lambda: _contains(why, "discharge authorised"), deadline)
        except TimeoutError:
            raise AssertionError(await why()) from None
        assert "ok   certified" in text and "ok   parameters_applied" in text, text
        target = await asyncio.to_thread(pev.active_target_w)
        assert target is not None and target <= 0, target  # the manager's share: charging, never discharge
        # Unplug ends the authorisation; a new plug-in starts from nothing.
        await request(sock, {"cmd": "sim", "ev_state": "A", "pp_ohm": None})
        await _until("session end", lambda: _contains(why, "no PEV connected"), deadline)
        # A PEV that exports without authorisation: the contactor opens (R152).
        await request(sock, {"cmd": "sim", "ev_state": "B", "pp_ohm": 220.0})
        await asyncio.sleep(1.0)
        await request(sock, {"cmd": "sim", "ev_state": "C"})
        await _until("contactor", lambda: _field(status, "contactor_closed"), deadline)
        await request(sock, {"cmd": "sim", "current_a": -10.0})
        faults = await _until("fault", lambda: _field(status, "faults"), deadline)
        assert "unauthorised_discharge" in str(faults), faults
        assert not (await status())["contactor_closed"]

    try:
        asyncio.run(scenario())
    finally:
        stop(proc)
        log.close()
    journal = Journal.open_read_only(data / "journal.db")
    reasons = [d.reason for d in reversed(journal.j3072_decisions(1))]
    journal.close()
    assert "authorised" in reasons and "session_ended" in reasons, reasons
    assert reasons.index("authorised") < reasons.index("session_ended"), reasons
    # The operator's view of the same audit.
    listed = subprocess.run(
        [sys.executable, "-m", "firmware.cli", "j3072", "--data-dir", str(data), "--json", "--limit", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["reason"] for r in reversed(rows)] == reasons
    assert any(r["decision"] == "authorised" and r["ism"] == "ACME/OBI/7K6A/J3072_202406" for r in rows)
    table = subprocess.run(
        [sys.executable, "-m", "firmware.cli", "j3072", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "session_ended" in table and "authorised" in table


async def _contains(why: Any, text: str) -> str | None:
    value = await why()
    return value if text in value else None


async def _field(status: Any, name: str) -> Any:
    return (await status()).get(name)
