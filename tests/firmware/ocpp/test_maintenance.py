"""The real transfers behind UpdateFirmware and GetDiagnostics, against a local HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

import firmware.ocpp.maintenance as maintenance
from firmware.ocpp.maintenance import TransferError, check_location, fetch_url, upload_url


class _Handler(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    uploads: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:  # the http.server API
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        if self.path.startswith("/readonly/"):
            self.send_error(403)
            return
        length = int(self.headers.get("Content-Length", "0"))
        self.uploads[self.path] = self.rfile.read(length)
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.files = {"/fw.bin": b"\x7fELF firmware" * 100, "/empty.bin": b""}
    _Handler.uploads = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.timeout(20)
def test_fetch_downloads_the_file(server: str, tmp_path: Path) -> None:
    target = tmp_path / "fw.bin"
    fetch_url(f"{server}/fw.bin", target)
    assert target.read_bytes() == b"\x7fELF firmware" * 100


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("path", "message"), [("/missing.bin", "404"), ("/empty.bin", "empty file")])
def test_fetch_failures_are_transfer_errors(server: str, tmp_path: Path, path: str, message: str) -> None:
    with pytest.raises(TransferError, match=message):
        fetch_url(f"{server}{path}", tmp_path / "x")


@pytest.mark.timeout(20)
def test_fetch_refuses_an_oversized_file(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maintenance, "MAX_DOWNLOAD_BYTES", 100)
    with pytest.raises(TransferError, match="larger than 100 bytes"):
        fetch_url(f"{server}/fw.bin", tmp_path / "x")


@pytest.mark.timeout(20)
def test_a_server_that_is_down_is_a_transfer_error(tmp_path: Path) -> None:
    with pytest.raises(TransferError):
        fetch_url("http://127.0.0.1:9/fw.bin", tmp_path / "x")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp:/no-host", "gopher://h/x", "not a url"])
def test_only_network_urls_with_a_host(url: str) -> None:
    with pytest.raises(TransferError, match="supported"):
        check_location(url)


@pytest.mark.timeout(20)
def test_upload_puts_the_bundle_into_the_directory(server: str) -> None:
    upload_url(f"{server}/logs/", "CP1-logs.tar.gz", b"tarball")
    assert _Handler.uploads == {"/logs/CP1-logs.tar.gz": b"tarball"}
    with pytest.raises(TransferError, match="403"):
        upload_url(f"{server}/readonly/", "x.tar.gz", b"tarball")
