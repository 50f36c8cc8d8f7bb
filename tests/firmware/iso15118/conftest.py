"""The EXI oracle (the `iso15118` package's EXIficient codec in its own venv), one JVM per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.peers.iso15118_peer import ExiOracle


@pytest.fixture(scope="session")
def exi_oracle() -> Iterator[ExiOracle]:
    """Installs the peer venv on first use (bounded), starts the oracle server and stops it at the end."""
    with ExiOracle() as oracle:
        yield oracle
