"""The scenario format: durations, and broken scenarios answered with the file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hil.cli import main
from hil.scenario import ScenarioError, load_scenario, parse_duration, parse_scenario

GOOD = """\
format: 1
name: ok
duration: 2min
evs:
  - id: car
    battery_kwh: 50
    soc: 0.5
    max_current_a: 16
    plug_in: 5s
events:
  - {at: 30s, action: limit, source: ems, amps: 10}
expect:
  - {check: sessions, count: 1}
"""


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), (1.5, 1.5), ("90", 90.0), ("1h30min", 5400.0), ("15min", 900.0), ("250ms", 0.25), ("2h 5s", 7205.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["1 hour", "5x", "-3", True, "1h30", None, "min"])
def test_bad_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@given(st.integers(0, 48), st.integers(0, 59), st.integers(0, 59))
def test_duration_parts_add_up(h: int, m: int, s: int) -> None:
    assert parse_duration(f"{h}h{m}min{s}s") == h * 3600 + m * 60 + s


def test_the_good_scenario_loads() -> None:
    scenario = parse_scenario(GOOD, "ok.yaml")
    assert scenario.duration == 120 and scenario.events[0].at == 30 and scenario.evs[0].plug_in == 5


# (replace this, with that, expected fragments of the message) — each names file:line: field
BROKEN = [
    ("    soc: 0.5", "    soc: 1.5", ["ok.yaml:7: evs[0].soc", "less than or equal to 1", "(got 1.5)"]),
    ("    max_current_a: 16", "    max_current_a: 16\n    colour: red", ["ok.yaml:9: evs[0].colour: unknown field"]),
    ("duration: 2min", "duration: 2 hours", ["ok.yaml:3: duration", "is not a duration"]),
    ("action: limit, source: ems, amps: 10", "action: limit, source: ems", ["ok.yaml:11: events[0]", "needs amps"]),
    ("action: limit", "action: explode", ["ok.yaml:11: events[0].action", "'explode'"]),
    ("{check: sessions, count: 1}", "{check: sessions}", ["ok.yaml:13: expect[0]", "needs count"]),
    ("{check: sessions, count: 1}", "{check: wishful, count: 1}", ["ok.yaml:13: expect[0].check"]),
    ("format: 1", "format: 2", ["ok.yaml:1: format: this rig reads format: 1 (got 2)"]),
    ("name: ok", "name: Not OK", ["ok.yaml:2: name", "(got 'Not OK')"]),
    ("  - {at: 30s,", "  - {at: 3h,", ["events[0].at = 10800 s is after the end"]),
    ("  - {at: 30s, action: limit, source: ems, amps: 10}", "  - {at: 30s, action: unplug, ev: bus}",
     ["events[0].ev = 'bus' is not one of the EVs"]),
    ("expect:\n  - {check: sessions, count: 1}\n", "expect: []\n", ["ok.yaml:12: expect", "at least 1"]),
    ("    plug_in: 5s", "    plug_in: 5s\n    unplug: 2s", ["unplug (2 s) must come after plug_in (5 s)"]),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "fragments"), BROKEN)
def test_broken_scenarios_name_the_line_and_the_field(old: str, new: str, fragments: list[str]) -> None:
    assert old in GOOD
    with pytest.raises(ScenarioError) as info:
        parse_scenario(GOOD.replace(old, new, 1), "ok.yaml")
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message


def test_yaml_syntax_errors_name_the_line() -> None:
    with pytest.raises(ScenarioError, match=r"ok\.yaml:5: not valid YAML"):
        parse_scenario("format: 1\nname: x\nevs:\n  - [unclosed\n", "ok.yaml")


def test_validate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text(GOOD.replace("    soc: 0.5", "    soc: 7"))
    assert main(["validate", str(good)]) == 0
    assert "OK (ok, 120 s, 1 checks)" in capsys.readouterr().out
    assert main(["validate", str(good), str(bad)]) == 1
    assert f"{bad}:7: evs[0].soc" in capsys.readouterr().err


def test_a_missing_profile_csv_is_reported(tmp_path: Path) -> None:
    from hil.site import Site

    scenario = parse_scenario(GOOD + "site:\n  pv_kw: {csv: nope.csv}\n", "ok.yaml")
    with pytest.raises(ValueError, match=r"nope\.csv: cannot read the profile"):
        Site(scenario.site, tmp_path)


def test_profiles_from_csv(tmp_path: Path) -> None:
    from hil.site import Site

    (tmp_path / "pv.csv").write_text("time_s,kw\n0,0\n600,2.5\n# a comment\n1200,4\n")
    scenario = parse_scenario(GOOD + "site:\n  pv_kw: {csv: pv.csv}\n  grid_limit_kw: 20\n", "ok.yaml")
    site = Site(scenario.site, tmp_path)
    assert [site.power(t, 0.0).pv_W for t in (0, 599, 600, 1500)] == [0.0, 0.0, 2500.0, 4000.0]
    assert site.power(700, 11000.0).W == 11000.0 - 2500.0


def test_every_shipped_scenario_validates() -> None:
    from hil.cli import SCENARIO_DIR

    for path in SCENARIO_DIR.glob("*.yaml"):
        load_scenario(path)
