"""The SECC benchmark runs (ours only, briefly): a row per protocol with positive figures and the goal line."""

from __future__ import annotations

import re

import pytest

from tools.bench import secc


def test_the_secc_benchmark_measures_both_charge_loops(capsys: pytest.CaptureFixture[str]) -> None:
    assert secc.main(["--seconds", "0.5", "--no-reference"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[2]: line.split() for line in out.splitlines() if re.match(r"^(ISO-2|-20) AC ", line)}
    assert set(rows) == {"ChargingStatusReq", "AC_ChargeLoopReq"}
    for cols in rows.values():
        n, secc_med, secc_p99, rt_med, rt_p99 = int(cols[3]), *map(float, cols[4:8])
        assert n >= 10
        assert 0 < secc_med <= secc_p99 and 0 < rt_med <= rt_p99
        assert secc_med < rt_med  # the time inside the SECC is part of the round trip
    assert "goal: p99 inside our SECC < 5 ms" in out and "met" in out
