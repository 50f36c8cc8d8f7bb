"""The human report: one self-contained HTML file with the verdict, checks, sessions and embedded PNG plots."""

from __future__ import annotations

import base64
import json
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hil.report import (
    decimate,
    effective_limit,
    read_trace_digest,
    render_report,
    time_unit,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE = re.compile(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


def _write_trace(path: Path, events: list[dict[str, Any]], extra_lines: Sequence[str] = ()) -> Path:
    lines = [json.dumps(event) for event in events]
    lines.extend(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _small_events() -> list[dict[str, Any]]:
    c1 = "connector1"
    return [
        {"t": 0.0, "src": "rig", "ev": "header", "format": 1, "scenario": "evening", "board": "sim-ac"},
        {"t": 10.0, "src": c1, "ev": "pilot", "state": "B", "pwm": False, "duty_pct": 0.0},
        {"t": 10.0, "src": c1, "ev": "state", "from": "A1", "to": "B1", "trigger": "ev_b"},
        {"t": 12.0, "src": c1, "ev": "limit", "value": 32.0, "unit": "A", "source": "cable"},
        {"t": 12.0, "src": c1, "ev": "limit", "value": 16.0, "unit": "A", "source": "ems"},
        {"t": 12.5, "src": c1, "ev": "pilot", "state": "B", "pwm": True, "duty_pct": 26.7},
        {"t": 13.0, "src": c1, "ev": "pilot", "state": "C", "pwm": True, "duty_pct": 26.7},
        {"t": 13.1, "src": c1, "ev": "contactor", "closed": True, "commanded": True},
        {"t": 13.2, "src": c1, "ev": "contactor", "closed": True, "commanded": False},
        *({"t": 14.0 + i, "src": c1, "ev": "power", "W": 11040.0} for i in range(30)),
        {"t": 20.0, "src": c1, "ev": "session", "action": "started", "id": "s1", "reason": None},
        {"t": 30.0, "src": c1, "ev": "limit", "value": 10.0, "unit": "A", "source": "ocpp"},
        {"t": 40.0, "src": c1, "ev": "fault", "code": "rcd_tripped", "raised": True, "detail": "30 mA"},
        {"t": 40.0, "src": c1, "ev": "contactor", "closed": False, "commanded": True},
        {"t": 41.0, "src": c1, "ev": "fault", "code": "rcd_tripped", "raised": False, "detail": ""},
        {"t": 60.0, "src": "ev1", "ev": "soc", "soc": 0.42, "kwh": 25.2},
        {"t": 120.0, "src": "ev1", "ev": "soc", "soc": 0.45, "kwh": 27.0},
        {"t": 60.0, "src": "site", "ev": "grid", "V": 230.0, "Hz": 50.0},
        {"t": 60.0, "src": "site", "ev": "site_power", "W": 13500.0, "limit_W": 11000.0, "building_W": 2500.0},
        {"t": 61.0, "src": "site", "ev": "site_power", "W": 9000.0, "limit_W": 11000.0, "pv_W": 1500.0},
        {"t": 61.0, "src": "rig", "ev": "action", "action": "unplug", "ev_id": "ev1"},
    ]


def _summary(**changes: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "format": 1,
        "scenario": "evening",
        "description": "Home charge with an EMS limit & an RCD trip",
        "board": "sim-ac",
        "time": "virtual",
        "duration_s": 180.0,
        "wall_s": 1.5,
        "passed": True,
        "checks": [
            {
                "check": "session_energy",
                "params": {"ev": "ev1", "min_kwh": 10, "max_kwh": 30},
                "passed": True,
                "evidence": "12.3 kWh in 10..30",
            },
            {
                "check": "fault_raised",
                "params": {"code": "rcd_tripped"},
                "passed": True,
                "evidence": "<script>alert(1)</script> & raised at 0:00:40",
            },
        ],
        "sessions": [
            {
                "connector": 1,
                "id": "s1",
                "energy_wh": 12345.0,
                "reason": "EVDisconnected",
                "started_s": 20.0,
                "stopped_s": 170.0,
            }
        ],
        "peak_site_power_w": 13500.0,
        "grid_limit_w": 11000.0,
    }
    summary.update(changes)
    return summary


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(data, validate=True) for data in IMAGE.findall(page)]


def test_report_holds_verdict_checks_sessions_and_embedded_plots(tmp_path: Path) -> None:
    trace = _write_trace(tmp_path / "trace.jsonl", _small_events())
    path = write_report(tmp_path / "out", trace_path=trace, summary=_summary())

    assert path == tmp_path / "out" / "report.html"
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.rstrip().endswith("</html>")
    assert "<title>HIL report: evening</title>" in page
    assert 'class="verdict pass">PASS — 2 of 2 checks passed' in page
    assert "Home charge with an EMS limit &amp; an RCD trip" in page
    assert "12.3 kWh in 10..30" in page
    # Evidence is text, never markup: the script tag arrives escaped.
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; raised at 0:00:40" in page
    assert "<script" not in page.lower()
    # Sessions: energy in kWh, times as clock times, the stop reason.
    assert "12.345" in page and "0:00:20.0" in page and "0:02:50.0" in page and "EVDisconnected" in page
    assert "rcd_tripped" in page and "cleared" in page
    # Self-contained: nothing is fetched from anywhere.
    assert "://" not in page
    images = _images(page)
    assert len(images) == 3  # connector1, EV SoC, site
    assert all(image.startswith(PNG_SIGNATURE) for image in images)
    assert not list(tmp_path.glob("out/*.partial"))


def test_failed_run_shows_fail_and_the_failing_check(tmp_path: Path) -> None:
    trace = _write_trace(tmp_path / "trace.jsonl", _small_events())
    summary = _summary(passed=False)
    summary["checks"][0] = {**summary["checks"][0], "passed": False, "evidence": "3.1 kWh, below 10"}
    page = render_report(trace_path=trace, summary=summary)
    assert 'class="verdict fail">FAIL — 1 of 2 checks passed' in page
    assert '<tr class="fail">' in page and "3.1 kWh, below 10" in page
    assert "PASS —" not in page


def test_bad_lines_and_unknown_kinds_are_counted_not_fatal(tmp_path: Path) -> None:
    events = [
        *_small_events(),
        {"t": 50.0, "src": "connector1", "ev": "<b>teleport</b>", "to": "mars"},
        {"t": 51.0, "src": "connector1", "ev": "teleport"},
        {"t": 52.0, "src": "connector1", "ev": "ocpp", "dir": "out", "action": "Heartbeat"},  # known, later issue
        {"t": 53.0, "src": "connector1", "ev": "power", "W": "lots"},
        {"t": 54.0, "src": "connector1", "ev": "pilot", "state": "invalid", "pwm": True, "duty_pct": 10.0},
        {"t": 55.0, "src": "connector1", "ev": "limit", "value": 8.0, "unit": "A", "source": "odd$name^$"},
        {"t": 56.0, "src": "connector1", "ev": "limit", "value": None, "unit": "A", "source": "ocpp"},
    ]
    bad = [
        "{not json",
        "[1, 2, 3]",
        '{"src": "connector1", "ev": "power", "W": 1.0}',
        '{"t": NaN, "src": "connector1", "ev": "power", "W": 1.0}',
        '{"t": 5.0, "src": 7, "ev": "power", "W": 1.0}',
        "[" * 100_000,
        "",  # blank: ignored, not counted
    ]
    trace_path = _write_trace(tmp_path / "trace.jsonl", events, bad)
    with trace_path.open("ab") as handle:
        handle.write(b"\xff\xfe garbage bytes\n")

    trace = read_trace_digest(trace_path)
    assert trace.skipped_lines == 8  # six bad lines, the bad bytes, the power without a number W
    assert trace.skipped["no finite number t"] == 2
    assert trace.skipped["not JSON"] == 3
    assert trace.skipped["power event without W"] == 1
    assert trace.unknown_kinds == {"<b>teleport</b>": 1, "teleport": 1}
    assert trace.connectors["connector1"].pilot[-1][1] == 6.0  # "invalid" lands on the "?" level

    page = write_report(tmp_path, trace_path=trace_path, summary=_summary()).read_text(encoding="utf-8")
    assert "8 lines skipped" in page and "2 events of unknown kinds" in page
    assert "&lt;b&gt;teleport&lt;/b&gt;" in page and "<b>" not in page
    assert len(_images(page)) == 3


def test_missing_trace_and_thin_summary_still_give_a_report(tmp_path: Path) -> None:
    page = render_report(trace_path=tmp_path / "absent.jsonl", summary={"checks": "not a list", "sessions": None})
    assert "NO VERDICT" in page
    assert "the trace could not be read" in page
    assert "Nothing to plot" in page and "No checks." in page and "No sessions." in page


def test_ten_hours_of_one_second_events_render_quickly(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = [{"t": 0.0, "src": "rig", "ev": "header", "format": 1, "scenario": "long"}]
    for i in range(36_000):
        t = float(i)
        events.append({"t": t, "src": "connector1", "ev": "power", "W": 7000.0 + 100.0 * math.sin(i / 50.0)})
        events.append({"t": t, "src": "connector1", "ev": "pilot", "state": "C", "pwm": True, "duty_pct": 26.7})
        events.append({"t": t, "src": "site", "ev": "site_power", "W": 9000.0 + (i % 600), "limit_W": 11000.0})
        if i % 60 == 0:
            events.append({"t": t, "src": "ev1", "ev": "soc", "soc": 0.2 + 0.7 * i / 36_000})
            events.append({"t": t, "src": "connector1", "ev": "limit", "value": 16.0 + i % 7, "source": "ems"})
    events.append({"t": 20_000.0, "src": "connector1", "ev": "power", "W": 25_000.0})  # out of order: sorted
    trace = _write_trace(tmp_path / "trace.jsonl", events)
    started = time.perf_counter()
    page = write_report(tmp_path, trace_path=trace, summary=_summary(duration_s=36_000.0)).read_text()
    assert time.perf_counter() - started < 30.0
    assert len(_images(page)) == 3
    assert "109202 events used, 0 lines skipped" in page  # header, 3 x 36000, 600 SoC, 600 limits, the spike


def test_effective_limit_takes_the_minimum_and_names_the_binding_source() -> None:
    result = effective_limit(
        [
            (1.0, "cable", 32.0),
            (2.0, "ems", 16.0),
            (3.0, "ocpp", 16.0),  # a tie: ems stays binding
            (4.0, "ocpp", 10.0),
            (5.0, "ocpp", None),
            (6.0, "ems", None),
            (7.0, "cable", None),
        ]
    )
    assert [value for _, value in result.steps][:6] == [32.0, 16.0, 16.0, 10.0, 16.0, 32.0]
    assert math.isnan(result.steps[-1][1])
    assert [(t, source) for t, source, _ in result.binding] == [
        (1.0, "cable"),
        (2.0, "ems"),
        (4.0, "ocpp"),
        (5.0, "ems"),
        (6.0, "cable"),
    ]
    assert set(result.per_source) == {"cable", "ems", "ocpp"}


def test_time_axis_is_minutes_up_to_three_hours_then_hours() -> None:
    assert time_unit(180.0) == (60.0, "min")
    assert time_unit(3 * 3600.0) == (60.0, "min")
    assert time_unit(10 * 3600.0) == (3600.0, "h")


@given(
    st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=3000),
    st.integers(min_value=4, max_value=400),
)
def test_decimate_keeps_order_ends_and_extremes_within_the_limit(values: list[float], limit: int) -> None:
    points = [(float(i), v) for i, v in enumerate(values)]
    reduced = decimate(points, limit)
    if len(points) <= limit:
        assert reduced == points
    assert len(reduced) <= limit
    assert reduced[0] == points[0] and reduced[-1] == points[-1]
    times = [t for t, _ in reduced]
    assert times == sorted(set(times))
    assert min(v for _, v in reduced) == min(values)
    assert max(v for _, v in reduced) == max(values)
    assert set(reduced) <= set(points)
