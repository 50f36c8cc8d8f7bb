"""Firmware updates and log uploads the CSMS asks for (1.6 §5.19 UpdateFirmware, §5.9 GetDiagnostics;
2.0.1 L01 UpdateFirmware, N01 GetLog), with their status notifications.

Transfers run in a worker thread (``urllib``: http, https; ``ftplib``: ftp), bounded in time and size,
so the event loop and the connectors never wait on a slow server. Installing is the board's business:
an ``install_hook`` gets the downloaded file and says whether it installed it (a package manager, an
A/B partition switch). Without a hook the station downloads, keeps the file and reports
InstallationFailed: it never pretends to have installed anything.
"""

from __future__ import annotations

import asyncio
import ftplib
import io
import logging
import tarfile
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from hal.clock import Clock

log = logging.getLogger(__name__)

#: A charger firmware image is tens of MB; a server sending more is broken or hostile.
MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024
#: A stalled transfer fails after this long without progress (socket timeout).
TRANSFER_TIMEOUT_S = 60.0
SCHEMES = ("http", "https", "ftp")

Notify = Callable[[str], Awaitable[None]]
Fetch = Callable[[str, Path], None]  # blocking: URL -> file
Upload = Callable[[str, str, bytes], None]  # blocking: URL, file name, content


class TransferError(Exception):
    """A download or upload failed (the message says why)."""


def check_location(location: str) -> None:
    parts = urlsplit(location)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise TransferError(f"{location!r}: only {', '.join(SCHEMES)} URLs with a host are supported")


def fetch_url(url: str, target: Path) -> None:
    """Download ``url`` into ``target`` (http, https or ftp), at most MAX_DOWNLOAD_BYTES."""
    check_location(url)
    try:
        with (
            urllib.request.urlopen(url, timeout=TRANSFER_TIMEOUT_S) as response,
            target.open("wb") as out,
        ):  # scheme checked above
            total = 0
            while chunk := response.read(1 << 16):
                total += len(chunk)
                if total > MAX_DOWNLOAD_BYTES:
                    raise TransferError(f"{url}: larger than {MAX_DOWNLOAD_BYTES} bytes")
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TransferError(f"{url}: {exc}") from exc
    if total == 0:
        raise TransferError(f"{url}: empty file")


def upload_url(url: str, name: str, content: bytes) -> None:
    """Upload ``content`` as ``name`` into the directory ``url`` (HTTP PUT, or FTP STOR)."""
    check_location(url)
    parts = urlsplit(url)
    try:
        if parts.scheme == "ftp":
            with ftplib.FTP(timeout=TRANSFER_TIMEOUT_S) as ftp:
                ftp.connect(parts.hostname or "", parts.port or 21)
                ftp.login(unquote(parts.username or "anonymous"), unquote(parts.password or ""))
                if parts.path.strip("/"):
                    ftp.cwd(parts.path)
                ftp.storbinary(f"STOR {name}", io.BytesIO(content))
            return
        target = url.rstrip("/") + "/" + name
        request = urllib.request.Request(target, data=content, method="PUT")
        request.add_header("Content-Type", "application/gzip")
        with urllib.request.urlopen(request, timeout=TRANSFER_TIMEOUT_S) as response:
            if response.status >= 300:
                raise TransferError(f"{target}: HTTP {response.status}")
    except (urllib.error.URLError, ftplib.Error, OSError, ValueError) as exc:
        raise TransferError(f"{url}: {exc}") from exc


@dataclass
class Maintenance:
    clock: Clock
    wall_clock: Callable[[], datetime]
    download_dir: Path
    install_hook: Callable[[Path], Awaitable[bool]] | None = None
    log_files: tuple[Path, ...] = ()
    fetch: Fetch = fetch_url
    upload: Upload = upload_url
    busy: bool = False

    async def _wait_until(self, moment: datetime | None) -> None:
        if moment is None:
            return
        delay = (moment - self.wall_clock()).total_seconds()
        if delay > 0:
            await self.clock.sleep(delay)

    async def update_firmware(
        self, location: str, retrieve: datetime | None, retries: int, retry_interval_s: float, notify: Notify
    ) -> None:
        """Download at ``retrieve``, retrying; then install through the board's hook. Notifies
        Downloading, Downloaded / DownloadFailed, Installing, Installed / InstallationFailed."""
        self.busy = True
        try:
            await self._wait_until(retrieve)
            self.download_dir.mkdir(parents=True, exist_ok=True)
            name = Path(urlsplit(location).path).name or "firmware.bin"
            target = self.download_dir / name
            for attempt in range(max(1, retries + 1)):
                await notify("Downloading")
                try:
                    await asyncio.to_thread(self.fetch, location, target)
                    break
                except TransferError as exc:
                    log.warning("firmware download attempt %d failed: %s", attempt + 1, exc)
                    if attempt >= retries:
                        await notify("DownloadFailed")
                        return
                    await self.clock.sleep(max(1.0, retry_interval_s))
            await notify("Downloaded")
            await notify("Installing")
            installed = False
            if self.install_hook is None:
                log.error("no firmware installer is configured for this board; %s kept in %s", name, target)
            else:
                try:
                    installed = await self.install_hook(target)
                except Exception:
                    log.exception("the firmware installer failed")
            await notify("Installed" if installed else "InstallationFailed")
        finally:
            self.busy = False

    def log_bundle(self) -> bytes:
        """The log files as one gzipped tar (what GetDiagnostics / GetLog upload)."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path in self.log_files:
                if path.is_file():
                    tar.add(path, arcname=path.name)
        return buffer.getvalue()

    def bundle_name(self, station_id: str) -> str:
        stamp = self.wall_clock().strftime("%Y%m%dT%H%M%SZ")
        return f"{station_id}-logs-{stamp}.tar.gz"

    async def upload_logs(
        self, location: str, name: str, retries: int, retry_interval_s: float, notify: Notify
    ) -> None:
        """Upload the log bundle; notifies Uploading, then Uploaded / UploadFailed."""
        self.busy = True
        try:
            content = self.log_bundle()
            for attempt in range(max(1, retries + 1)):
                await notify("Uploading")
                try:
                    await asyncio.to_thread(self.upload, location, name, content)
                    await notify("Uploaded")
                    return
                except TransferError as exc:
                    log.warning("log upload attempt %d failed: %s", attempt + 1, exc)
                    if attempt >= retries:
                        await notify("UploadFailed")
                        return
                    await self.clock.sleep(max(1.0, retry_interval_s))
        finally:
            self.busy = False
