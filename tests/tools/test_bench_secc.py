"""The SECC benchmark runs (ours only, a few loop requests): a row per protocol with positive figures, the
reference columns marked n/a, and the goal line."""

from __future__ import annotations

import pytest

from tools.bench import secc

N = 12


def rows(out: str) -> dict[str, list[str]]:
    """The table's rows by case key: the columns after the message name."""
    found = {}
    for line in out.splitlines():
        for case in secc.CASES:
            head = f"{case.label:<9} {case.request:<18} "
            if line.startswith(head):
                found[case.key] = line[len(head) :].split()
    return found


def test_the_secc_benchmark_measures_every_charge_loop(capsys: pytest.CaptureFixture[str]) -> None:
    status = secc.main(["--n", str(N), "--no-reference"])
    out = capsys.readouterr().out
    table = rows(out)
    assert set(table) == {"din", "iso2-ac", "iso2-dc", "iso20-ac", "iso20-dc"}
    for cols in table.values():
        n, secc_med, secc_p99, rt_med, rt_p99 = int(cols[0]), *map(float, cols[1:5])
        assert n == N  # the EV stopped after exactly the loop requests asked for, each one answered and timed
        assert 0 < secc_med <= secc_p99
        assert 0 < rt_med <= rt_p99
        assert secc_med < rt_med  # the time inside the SECC is part of the round trip
        assert cols[5:8] == ["n/a", "n/a", "n/a"]
    # With a dozen samples the p99 is the slowest one, which a loaded test machine decides: whether the goal
    # is met is the full run's business; here the verdict must match the worst p99 printed, and the status it.
    worst = max(float(cols[2]) for cols in table.values())
    verdict = "met" if worst < secc.GOAL_P99_MS else "MISSED"
    assert f"goal: p99 inside our SECC < 5 ms: worst {worst:.3f} ms: {verdict}\n" in out
    assert status == (0 if verdict == "met" else 1)


def test_only_runs_the_cases_named(capsys: pytest.CaptureFixture[str]) -> None:
    secc.main(["--n", "3", "--no-reference", "--only", "iso20-dc"])
    assert set(rows(capsys.readouterr().out)) == {"iso20-dc"}


@pytest.mark.parametrize("argv", [["--only", "iso2"], ["--n", "0"], ["--n-ref", "-1"]])
def test_bad_arguments_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        secc.main([*argv, "--no-reference"])
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err
