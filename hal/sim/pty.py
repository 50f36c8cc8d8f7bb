"""A simulated serial device on the master side of a pseudo-terminal.

The driver under test opens the slave side by its path through pyserial, exactly as it would open
``/dev/ttyAMA0``; the simulator reads and answers on the master side in a thread of its own.
Subclasses implement ``_run`` (the device's loop, which must return once ``self._stop`` is set).
"""

from __future__ import annotations

import abc
import os
import select
import threading
import time
import tty
from typing import Self


def open_raw_pty() -> tuple[int, int, str]:
    """(master fd, slave fd, slave path) of a new pty in raw mode (binary-safe: no echo, no CR/LF
    translation), with the master non-blocking."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


class PtyPeer(abc.ABC):
    _thread_name = "pty-peer"

    def __init__(self, fd: int, keep_fd: int | None = None) -> None:
        self._fd = fd
        self._keep_fd = keep_fd  # the slave end, held open so the pty stays up between driver opens
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abc.abstractmethod
    def _run(self) -> None:
        """The device's loop, in the simulator's thread; returns once ``self._stop`` is set."""

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
            self._thread.start()

    def _receive(self, poll_s: float) -> bytes | None:
        """What arrived on the master side within ``poll_s`` (``b""``: nothing); None once the pty is
        gone (the loop should return). While no slave side is open the read fails with EIO: wait."""
        try:
            readable, _, _ = select.select([self._fd], [], [], poll_s)
        except (OSError, ValueError):
            return None
        if not readable:
            return b""
        try:
            return os.read(self._fd, 4096)
        except BlockingIOError:
            return b""
        except OSError:  # EIO while no slave side is open
            time.sleep(poll_s)
            return b""

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        for fd in (self._fd, self._keep_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._keep_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
