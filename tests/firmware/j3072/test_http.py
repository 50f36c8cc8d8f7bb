"""The 2030.5 transport: mutual TLS on a real socket; no certificate, no answer."""

from __future__ import annotations

import asyncio
import http.client
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from firmware.j3072.http import Sep2HttpServer, server_tls_context
from firmware.j3072.resources import Sep2Resources, lfdi_of, sfdi_of
from tests.firmware.ocpp.certs import Pki, make_pki

TIMEOUT_S = 10.0


def _client_context(pki: Pki, *, cert: bool = True, ca: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca or pki.ca_cert))
    if cert:
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return ctx


def _request(
    port: int, ctx: ssl.SSLContext, method: str, path: str, body: bytes = b""
) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=TIMEOUT_S)
    try:
        conn.request(method, path, body=body or None, headers={"Content-Type": "application/sep+xml"})
        reply = conn.getresponse()
        return reply.status, reply.read(), {k.lower(): v for k, v in reply.getheaders()}
    finally:
        conn.close()


async def _serve(pki: Pki, check: object, *, roots: Path | None = None) -> None:
    resources = Sep2Resources(wall_clock=lambda: 1_800_000_000)
    tls = server_tls_context(pki.server_cert, pki.server_key, roots or pki.ca_cert)
    server = Sep2HttpServer(resources, tls, host="127.0.0.1")
    await server.start()
    try:
        async with asyncio.timeout(TIMEOUT_S * 2):
            await asyncio.to_thread(check, server, resources)  # type: ignore[arg-type]
    finally:
        await server.stop()


def test_a_pev_with_a_certificate_registers_under_its_lfdi(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    der = x509.load_pem_x509_certificate(pki.client_cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    lfdi = lfdi_of(der)

    def check(server: Sep2HttpServer, resources: Sep2Resources) -> None:
        ctx = _client_context(pki)
        status, body, headers = _request(server.port, ctx, "GET", "/dcap")
        assert status == 200 and headers["content-type"] == "application/sep+xml"
        assert b"<EndDeviceListLink" in body
        device = (
            f'<EndDevice xmlns="urn:ieee:std:2030.5:ns"><lFDI>{lfdi}</lFDI><sFDI>{sfdi_of(lfdi)}</sFDI>'
            "<changedTime>0</changedTime></EndDevice>"
        ).encode()
        status, _, headers = _request(server.port, ctx, "POST", "/edev", device)
        assert status == 201 and headers["location"] == "/edev/1"
        assert resources.pev is not None and resources.pev.lfdi == lfdi
        status, _, headers = _request(server.port, ctx, "PUT", "/edev/1/der/1/derg", b"<oops")
        assert status == 400 and "well-formed" in headers["x-reason"]
        status, _, _ = _request(server.port, ctx, "PUT", "/edev/1/der/1/derg", b"x" * 20000)
        assert status == 413

    asyncio.run(_serve(pki, check))


@pytest.mark.parametrize("case", ["no certificate", "certificate of another CA"])
def test_without_a_trusted_certificate_there_is_no_answer(tmp_path: Path, case: str) -> None:
    pki = make_pki(tmp_path)
    # The second case: the PEV's certificate chains to a root the EVSE does not trust.
    roots = pki.other_ca_cert if case == "certificate of another CA" else pki.ca_cert

    def check(server: Sep2HttpServer, resources: Sep2Resources) -> None:
        ctx = _client_context(pki, cert=case != "no certificate")
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            _request(server.port, ctx, "GET", "/dcap")
        assert resources.pev is None

    asyncio.run(_serve(pki, check, roots=roots))
