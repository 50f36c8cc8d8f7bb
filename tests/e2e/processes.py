"""Ending the firmware processes the end-to-end tests start: terminate, wait, kill if it will not go."""

from __future__ import annotations

import subprocess

STOP_TIMEOUT_S = 10.0


def stop(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM (the firmware shuts down in order on it), then SIGKILL after ``timeout``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
