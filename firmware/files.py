"""Files: writing so that a crash or power loss leaves the old or the new content, never a torn one, and
reading the TOML configuration files with errors that name the file."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable; a file system that cannot sync a directory is tolerated."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: a temporary file in the same directory, fsync, ``os.replace``
    (atomic on POSIX), then fsync of the directory so the rename itself is on the storage. Private
    (0600) by default: these files hold keys, passwords and id tags. Raises OSError; the temporary
    file never outlives a failure. A crash between write and rename can leave ``.<name>.*.tmp``."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    fsync_directory(directory)


def read_toml(path: Path, what: str, error: type[ValueError]) -> dict[str, Any]:
    """The parsed TOML document at ``path``; an unreadable or invalid file raises ``error`` naming the
    file and ``what`` it should hold (e.g. "the SECC configuration")."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from exc
