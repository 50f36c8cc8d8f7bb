"""The 2030.5 server's transport: HTTP/1.1 over TLS with mutual certificates, on the vehicle link.

IEEE 2030.5 (and so SAE J3072) runs HTTP over TLS where both ends present a certificate; the client is
known by its certificate alone (its LFDI, :func:`firmware.j3072.resources.lfdi_of`). The server here is
aiohttp's: it asks for and verifies the PEV's certificate against the configured roots, hands each
request with the caller's LFDI to :class:`~firmware.j3072.resources.Sep2Resources` and writes its reply.
A client without a certificate never gets past the handshake. The TLS suite is 2030.5's
(TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8) where the local OpenSSL offers it, with the usual ECDHE-ECDSA
AES-GCM suites beside it for PEVs whose TLS library has no CCM (our profile, docs/j3072.md).
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from aiohttp import web

from firmware.j3072.resources import Sep2Resources, lfdi_of

log = logging.getLogger(__name__)

__all__ = ["Sep2HttpServer", "server_tls_context"]

#: IEEE 2030.5-2018 6.11: TLS 1.2 with TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8; GCM suites as a fallback.
CIPHERS = "ECDHE-ECDSA-AES128-CCM8:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384"
#: The largest request body read (the resources a PEV sends are under 2 KiB; sep_xml.MAX_BODY).
MAX_BODY = 16 * 1024


def server_tls_context(cert_chain: Path, key: Path, client_roots: Path) -> ssl.SSLContext:
    """A server context that requires and verifies the client's certificate (mutual TLS)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_chain), str(key))
    ctx.load_verify_locations(cafile=str(client_roots))
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.set_ciphers(CIPHERS)
    except ssl.SSLError:  # an OpenSSL without CCM_8 in its list: the GCM suites alone
        ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384")
    return ctx


class Sep2HttpServer:
    """Serves ``resources`` on ``host``:``port`` (0 = a free port; see :attr:`port` after :meth:`start`)."""

    def __init__(self, resources: Sep2Resources, tls: ssl.SSLContext, *, host: str = "::1", port: int = 0) -> None:
        self.resources = resources
        self.tls = tls
        self.host = host
        self.port = port
        #: Every (method, path, status, body) answered: the tests validate the bodies against the XSD.
        self.capture: list[tuple[str, str, int, bytes]] | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.tls)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        log.info("J3072: IEEE 2030.5 server on [%s]:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}/dcap"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:  # the handshake requires a certificate; this is a belt to those braces
            return web.Response(status=403, text="a client certificate is required")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413)
        reply = self.resources.handle(request.method, request.path_qs, body, lfdi_of(der))
        if self.capture is not None:
            self.capture.append((request.method, request.path, reply.status, reply.body))
        headers = dict(reply.headers)
        if reply.content_type is not None:
            headers["Content-Type"] = reply.content_type
        return web.Response(status=reply.status, body=reply.body or None, headers=headers)
