"""The human report of a HIL run: one self-contained ``report.html`` (docs/hil-formats.md, "outputs of a run").

The trace (JSON Lines, format 1) is read robustly: a line that is not a usable event is skipped and counted, an
unknown kind is counted, and both are listed in the report instead of stopping it, because a report of a broken
run is exactly when an engineer needs one. Plots are matplotlib PNGs embedded as base64 data URIs, and nothing is
loaded from elsewhere (no URLs, no JavaScript), so the file can be attached to a CI run and opened offline.

Long traces stay fast: state-like series are reduced to their changes and every plotted series is cut down to at
most ``MAX_PLOT_POINTS`` points, keeping each bucket's first, last, minimum and maximum so peaks stay visible.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The Agg canvas is attached explicitly (no pyplot): nothing global changes and no window can ever open.
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

TRACE_FORMAT = 1
REPORT_NAME = "report.html"

#: Every kind docs/hil-formats.md names, including the ones later issues add: they are not "unknown".
KNOWN_KINDS = frozenset(
    {
        "header",
        "pilot",
        "state",
        "contactor",
        "limit",
        "power",
        "meter",
        "session",
        "fault",
        "soc",
        "site_power",
        "grid",
        "action",
        "ocpp",
        "v2g",
        "j3072",
        "setpoint",
    }
)

#: Pilot states A..F (IEC 61851-1 Annex A) and one level for anything else the trace says (e.g. "invalid").
PILOT_LEVELS = ("A", "B", "C", "D", "E", "F", "?")
MAX_PLOT_POINTS = 2000
MAX_LABELS = 25  # text labels per plot (binding-source changes, fault codes); more would only overlap
MAX_FAULT_LINES = 200
MAX_SKIP_EXAMPLES = 10
MAX_PLOT_TEXT = 40

Point = tuple[float, float]


# --------------------------------------------------------------------------------------------------------- trace


@dataclass
class ConnectorSeries:
    """What one connector (``src`` such as ``connector1``) did over time."""

    pilot: list[Point] = field(default_factory=list)  # index into PILOT_LEVELS
    duty: list[Point] = field(default_factory=list)  # % (0 while the PWM is off)
    limits: list[tuple[float, str, float | None]] = field(default_factory=list)  # value None = source cleared
    power: list[Point] = field(default_factory=list)  # W
    contactor_commanded: list[Point] = field(default_factory=list)  # 0/1
    contactor_measured: list[Point] = field(default_factory=list)  # 0/1


@dataclass
class SiteSeries:
    power: list[Point] = field(default_factory=list)
    limit: list[Point] = field(default_factory=list)
    building: list[Point] = field(default_factory=list)
    pv: list[Point] = field(default_factory=list)


@dataclass(frozen=True)
class FaultMark:
    t: float
    src: str
    code: str
    raised: bool
    detail: str


@dataclass
class TraceDigest:
    """The parts of a trace the report shows, plus what could not be used."""

    lines: int = 0
    events: int = 0
    end_t: float = 0.0
    header: dict[str, Any] | None = None
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> lines
    skip_examples: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
    unknown_kinds: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    connectors: dict[str, ConnectorSeries] = field(default_factory=dict)
    socs: dict[str, list[Point]] = field(default_factory=dict)
    site: SiteSeries = field(default_factory=SiteSeries)
    faults: list[FaultMark] = field(default_factory=list)

    @property
    def skipped_lines(self) -> int:
        return sum(self.skipped.values())

    def connector(self, src: str) -> ConnectorSeries:
        series = self.connectors.get(src)
        if series is None:
            series = self.connectors[src] = ConnectorSeries()
        return series


def _number(value: object) -> float | None:
    """A finite JSON number (bool is not a number here), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _pilot(trace: TraceDigest, t: float, src: str, event: Mapping[str, Any]) -> str | None:
    state = event.get("state")
    if not isinstance(state, str):
        return "pilot event without a state"
    level = PILOT_LEVELS.index(state) if state in PILOT_LEVELS[:-1] else len(PILOT_LEVELS) - 1
    series = trace.connector(src)
    series.pilot.append((t, float(level)))
    duty = _number(event.get("duty_pct"))
    if event.get("pwm") is False:
        series.duty.append((t, 0.0))
    elif duty is not None:
        series.duty.append((t, duty))
    return None


def _limit(trace: TraceDigest, t: float, src: str, event: Mapping[str, Any]) -> str | None:
    unit = event.get("unit", "A")
    if unit != "A":
        return "limit event not in A (not plotted)"
    source = event.get("source")
    source = source if isinstance(source, str) and source else "unnamed"
    raw = event.get("value")
    value = _number(raw)
    if raw is not None and value is None:
        return "limit event with an invalid value"
    trace.connector(src).limits.append((t, source, value))
    return None


def _power(trace: TraceDigest, t: float, src: str, event: Mapping[str, Any]) -> str | None:
    watts = _number(event.get("W"))
    if watts is None:
        return "power event without W"
    trace.connector(src).power.append((t, watts))
    return None


def _contactor(trace: TraceDigest, t: float, src: str, event: Mapping[str, Any]) -> str | None:
    closed = event.get("closed")
    if not isinstance(closed, bool):
        return "contactor event without closed"
    series = trace.connector(src)
    # ``commanded: false`` marks a measured (feedback) state; an event without the flag is taken as the command.
    target = series.contactor_measured if event.get("commanded") is False else series.contactor_commanded
    target.append((t, 1.0 if closed else 0.0))
    return None


def _fault(trace: TraceDigest, t: float, src: str, event: Mapping[str, Any]) -> str | None:
    raised = event.get("raised")
    if not isinstance(raised, bool):
        return "fault event without raised"
    code = event.get("code")
    detail = event.get("detail")
    trace.faults.append(
        FaultMark(
            t=t,
            src=src,
            code=code if isinstance(code, str) and code else "unknown",
            raised=raised,
            detail=detail if isinstance(detail, str) else "",
        )
    )
    return None


def _soc(trace: TraceDigest, t: float, src: str, event: Mapping[str, Any]) -> str | None:
    soc = _number(event.get("soc"))
    if soc is None:
        return "soc event without soc"
    trace.socs.setdefault(src, []).append((t, soc))
    return None


def _site_power(trace: TraceDigest, t: float, src: str, event: Mapping[str, Any]) -> str | None:
    watts = _number(event.get("W"))
    if watts is None:
        return "site_power event without W"
    site = trace.site
    site.power.append((t, watts))
    for key, series in (("limit_W", site.limit), ("building_W", site.building), ("pv_W", site.pv)):
        value = _number(event.get(key))
        if value is not None:
            series.append((t, value))
    return None


def _header(trace: TraceDigest, t: float, src: str, event: Mapping[str, Any]) -> str | None:
    if trace.header is not None:
        return "second header"
    trace.header = dict(event)
    if event.get("format") != TRACE_FORMAT:
        trace.notes.append(
            f"the trace says format {event.get('format')!r}; this report reads format {TRACE_FORMAT} and may miss data"
        )
    return None


_Handler = Callable[[TraceDigest, float, str, Mapping[str, Any]], "str | None"]
_HANDLERS: dict[str, _Handler] = {
    "pilot": _pilot,
    "limit": _limit,
    "power": _power,
    "contactor": _contactor,
    "fault": _fault,
    "soc": _soc,
    "site_power": _site_power,
    "header": _header,
}


def _take(trace: TraceDigest, raw: bytes) -> str | None:
    """Add one line to the digest; the reason it was skipped, or None."""
    try:
        event = json.loads(raw)
    except (ValueError, RecursionError):  # ValueError covers bad JSON and bad UTF-8
        return "not JSON"
    if not isinstance(event, dict):
        return "not a JSON object"
    t = _number(event.get("t"))
    if t is None:
        return "no finite number t"
    kind, src = event.get("ev"), event.get("src")
    if not isinstance(kind, str) or not isinstance(src, str):
        return "ev or src missing or not a string"
    handler = _HANDLERS.get(kind)
    if handler is not None:
        reason = handler(trace, t, src, event)
        if reason is not None:
            return reason
    elif kind not in KNOWN_KINDS:
        trace.unknown_kinds[kind] += 1
    trace.events += 1
    trace.end_t = max(trace.end_t, t)
    return None


def read_trace_digest(path: Path) -> TraceDigest:
    """Read a trace for the report: never raises on content; an unreadable file gives an empty digest with a note."""
    trace = TraceDigest()
    try:
        handle = path.open("rb")
    except OSError as exc:
        trace.notes.append(f"the trace could not be read: {exc}")
        return trace
    with handle:
        try:
            for number, raw in enumerate(handle, start=1):
                trace.lines += 1
                if not raw.strip():
                    continue
                reason = _take(trace, raw)
                if reason is not None:
                    trace.skipped[reason] += 1
                    if len(trace.skip_examples) < MAX_SKIP_EXAMPLES:
                        trace.skip_examples.append((number, reason))
        except OSError as exc:
            trace.notes.append(f"reading the trace stopped at line {trace.lines}: {exc}")
    _sort_by_time(trace)
    return trace


def _sort_by_time(trace: TraceDigest) -> None:
    # The format promises time order; sorting (linear on sorted input) keeps the plots right if a writer slipped.
    def key(item: tuple[Any, ...]) -> float:
        return float(item[0])

    for series in trace.connectors.values():
        for points in (series.pilot, series.duty, series.power, series.contactor_commanded, series.contactor_measured):
            points.sort(key=key)
        series.limits.sort(key=key)
    for points in (*trace.socs.values(), trace.site.power, trace.site.limit, trace.site.building, trace.site.pv):
        points.sort(key=key)
    trace.faults.sort(key=lambda fault: fault.t)


# ------------------------------------------------------------------------------------------------------ analysis


def decimate(points: Sequence[Point], limit: int = MAX_PLOT_POINTS) -> list[Point]:
    """At most ``limit`` points (``limit`` >= 4) in time order, keeping each bucket's first, last, min and max."""
    n = len(points)
    if n <= limit:
        return list(points)
    buckets = max(1, limit // 4)
    keep: list[int] = []
    for bucket in range(buckets):
        lo, hi = bucket * n // buckets, (bucket + 1) * n // buckets
        if lo >= hi:
            continue
        chosen = {lo, hi - 1}
        low = high = lo
        low_value = high_value = points[lo][1]
        for i in range(lo + 1, hi):
            value = points[i][1]
            if value < low_value:
                low, low_value = i, value
            elif value > high_value:
                high, high_value = i, value
        chosen.update((low, high))
        keep.extend(sorted(chosen))
    return [points[i] for i in keep]


def changes(points: Sequence[Point]) -> list[Point]:
    """Only the points where the value changes (NaN equals NaN): enough for a step plot."""
    out: list[Point] = []
    for t, value in points:
        if out:
            last = out[-1][1]
            if value == last or (math.isnan(value) and math.isnan(last)):
                continue
        out.append((t, value))
    return out


@dataclass(frozen=True)
class EffectiveLimit:
    steps: list[Point]  # the minimum over the sources in force (NaN while none is)
    binding: list[tuple[float, str, float]]  # (t, source, value) whenever the binding source changes
    per_source: dict[str, list[Point]]  # each source's own value (NaN once cleared)


def effective_limit(events: Sequence[tuple[float, str, float | None]]) -> EffectiveLimit:
    """The minimum of the latest value per source, and which source binds; value None clears a source."""
    active: dict[str, float] = {}
    steps: list[Point] = []
    binding: list[tuple[float, str, float]] = []
    per_source: dict[str, list[Point]] = {}
    current: str | None = None
    for t, source, value in events:
        if value is None:
            active.pop(source, None)
        else:
            active[source] = value
        per_source.setdefault(source, []).append((t, math.nan if value is None else value))
        if not active:
            steps.append((t, math.nan))
            current = None
            continue
        lowest = min(active.values())
        # On a tie the source already binding stays binding, so equal limits do not flicker in the labels.
        chosen = current if current in active and active[current] == lowest else None
        if chosen is None:
            chosen = next(name for name, amps in active.items() if amps == lowest)
        steps.append((t, lowest))
        if chosen != current:
            binding.append((t, chosen, lowest))
        current = chosen
    return EffectiveLimit(steps=steps, binding=binding, per_source=per_source)


def time_unit(duration_s: float) -> tuple[float, str]:
    """Minutes up to three hours, hours beyond: (seconds per unit, unit name)."""
    return (60.0, "min") if duration_s <= 3 * 3600 else (3600.0, "h")


# ----------------------------------------------------------------------------------------------------- plotting


def _plain(text: str) -> str:
    """Trace text for matplotlib: shortened, and ``$`` escaped so it is never parsed as mathtext."""
    if len(text) > MAX_PLOT_TEXT:
        text = text[: MAX_PLOT_TEXT - 1] + "…"
    return text.replace("$", r"\$")


class _Axis:
    """Time scaling shared by every plot of one report."""

    def __init__(self, end_t: float) -> None:
        self.end_t = max(end_t, 1.0)
        self.scale, self.unit = time_unit(self.end_t)

    def x(self, t: float) -> float:
        return t / self.scale


def _step(ax: Axes, axis: _Axis, points: Sequence[Point], factor: float = 1.0, **style: Any) -> bool:
    """A held-value step line from the changes, drawn to the end of the run."""
    steps = changes(points)
    if not steps:
        return False
    steps.append((axis.end_t, steps[-1][1]))
    steps = decimate(steps)
    ax.step([axis.x(t) for t, _ in steps], [v * factor for _, v in steps], where="post", **style)
    return True


def _line(ax: Axes, axis: _Axis, points: Sequence[Point], factor: float = 1.0, **style: Any) -> bool:
    if not points:
        return False
    reduced = decimate(points)
    if len(reduced) < 3:  # a line needs two points to show; a marker makes a lone sample visible
        style.setdefault("marker", "o")
    ax.plot([axis.x(t) for t, _ in reduced], [v * factor for _, v in reduced], **style)
    return True


def _no_data(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} events", transform=ax.transAxes, ha="center", va="center", color="grey")


def _mark_faults(axes: Sequence[Axes], axis: _Axis, faults: Sequence[FaultMark]) -> None:
    """Vertical lines at faults raised (red) and cleared (green), the code written on the top plot."""
    if not faults:
        return
    top = axes[0]
    for n, fault in enumerate(faults[:MAX_FAULT_LINES]):
        x = axis.x(fault.t)
        color, style = ("tab:red", "-") if fault.raised else ("tab:green", "--")
        for ax in axes:
            ax.axvline(x, color=color, linestyle=style, linewidth=0.9, alpha=0.8)
        if n < MAX_LABELS:
            label = fault.code if fault.raised else f"{fault.code} cleared"
            top.text(
                x,
                0.98,
                _plain(label),
                transform=top.get_xaxis_transform(),
                rotation=90,
                ha="right",
                va="top",
                fontsize=7,
                color=color,
            )
    handles = [
        Line2D([], [], color="tab:red", linewidth=0.9, label="fault raised"),
        Line2D([], [], color="tab:green", linestyle="--", linewidth=0.9, label="fault cleared"),
    ]
    axes[-1].legend(handles=handles, loc="lower right", fontsize=7)


def _figure(rows: int, row_height: float) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(10.0, 0.8 + rows * row_height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, 1, sharex=True, squeeze=False)
    axes: list[Axes] = [grid[i][0] for i in range(rows)]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return figure, axes


def _png(figure: Figure, axes: Sequence[Axes], axis: _Axis) -> str:
    axes[-1].set_xlabel(f"time ({axis.unit})")
    axes[-1].set_xlim(0.0, axis.x(axis.end_t))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _connector_plot(src: str, series: ConnectorSeries, faults: Sequence[FaultMark], axis: _Axis) -> str:
    figure, axes = _figure(5, 1.55)
    figure.suptitle(_plain(src))
    pilot, duty, limit, power, contactor = axes

    if not _step(pilot, axis, series.pilot, color="tab:blue"):
        _no_data(pilot, "pilot")
    pilot.set_yticks(range(len(PILOT_LEVELS)), list(PILOT_LEVELS))
    pilot.set_ylim(-0.5, len(PILOT_LEVELS) - 0.5)
    pilot.set_ylabel("pilot state")

    if not _step(duty, axis, series.duty, color="tab:purple"):
        _no_data(duty, "PWM duty")
    duty.set_ylabel("PWM duty %\n(0 = off)")

    _limit_axes(limit, axis, series.limits)

    if not _line(power, axis, series.power, factor=1e-3, color="tab:orange", linewidth=0.8):
        _no_data(power, "power")
    power.set_ylabel("power kW")

    drawn = _step(contactor, axis, series.contactor_commanded, color="tab:brown", label="commanded")
    if _step(contactor, axis, series.contactor_measured, color="tab:olive", linestyle=":", label="measured"):
        contactor.legend(loc="upper left", fontsize=7)
    elif not drawn:
        _no_data(contactor, "contactor")
    contactor.set_yticks([0, 1], ["open", "closed"])
    contactor.set_ylim(-0.2, 1.2)

    _mark_faults(axes, axis, faults)
    return _png(figure, axes, axis)


def _limit_axes(ax: Axes, axis: _Axis, events: Sequence[tuple[float, str, float | None]]) -> None:
    ax.set_ylabel("limit A")
    if not events:
        _no_data(ax, "limit")
        return
    result = effective_limit(events)
    if len(result.per_source) <= 8:  # each source faintly, so the reader sees what the minimum is taken over
        for name, points in result.per_source.items():
            _step(ax, axis, points, linewidth=0.8, alpha=0.35, linestyle="--", label=_plain(name))
    _step(ax, axis, result.steps, color="black", linewidth=1.6, label="effective (minimum)")
    for t, source, value in result.binding[:MAX_LABELS]:
        ax.annotate(
            _plain(source),
            (axis.x(t), value),
            xytext=(3, 4),
            textcoords="offset points",
            fontsize=7,
            color="black",
        )
    extra = len(result.binding) - MAX_LABELS
    if extra > 0:
        ax.set_title(
            f"binding source changed {len(result.binding)} times; the first {MAX_LABELS} are labelled", fontsize=8
        )
    ax.legend(loc="best", fontsize=7, ncols=3)


def _soc_plot(socs: Mapping[str, Sequence[Point]], axis: _Axis) -> str:
    figure, axes = _figure(1, 2.6)
    ax = axes[0]
    for ev_id in sorted(socs):
        _line(ax, axis, socs[ev_id], factor=100.0, label=_plain(ev_id))
    ax.set_ylabel("SoC %")
    ax.set_ylim(0.0, 105.0)
    ax.legend(loc="lower right", fontsize=7)
    figure.suptitle("EV state of charge")
    return _png(figure, axes, axis)


def _site_plot(site: SiteSeries, faults: Sequence[FaultMark], axis: _Axis) -> str:
    figure, axes = _figure(1, 3.0)
    ax = axes[0]
    _line(ax, axis, site.power, factor=1e-3, color="tab:blue", linewidth=0.9, label="site import")
    _step(ax, axis, site.limit, factor=1e-3, color="tab:red", linestyle="--", label="grid limit")
    _line(ax, axis, site.building, factor=1e-3, color="tab:gray", linewidth=0.8, label="building")
    _line(ax, axis, site.pv, factor=1e-3, color="tab:green", linewidth=0.8, label="PV")
    ax.set_ylabel("kW")
    ax.legend(loc="upper left", fontsize=7, ncols=4)
    _mark_faults(axes, axis, faults)
    figure.suptitle("site")
    return _png(figure, axes, axis)


# ------------------------------------------------------------------------------------------------------- HTML


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _clock(seconds: object) -> str:
    value = _number(seconds)
    if value is None:
        return "—"
    sign, value = ("-", -value) if value < 0 else ("", value)
    hours, rest = divmod(value, 3600.0)
    minutes, secs = divmod(rest, 60.0)
    return f"{sign}{int(hours)}:{int(minutes):02d}:{secs:04.1f}"


def _fixed(value: object, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    number = _number(value)
    if number is None:
        return "—"
    return f"{number * scale:.{digits}f}{unit}"


def _natural(name: str) -> list[tuple[int, int | str]]:
    """Sort key so connector10 comes after connector2."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part]


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; }
.desc { white-space: pre-wrap; color: #444; }
.verdict { font-size: 1.6em; font-weight: bold; padding: 0.5em 0.8em; border-radius: 6px; margin: 1em 0; }
.verdict.pass { background: #d8f3dc; color: #1b5e20; }
.verdict.fail { background: #fde2e1; color: #b71c1c; }
.verdict.none { background: #eee; color: #555; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.pass td.result { color: #1b5e20; font-weight: bold; }
tr.fail td.result { color: #b71c1c; font-weight: bold; }
code { font-size: 0.9em; word-break: break-word; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; }
figcaption { color: #555; font-size: 0.9em; }
"""


def _table(headers: Sequence[str], rows: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def _verdict(summary: Mapping[str, Any], checks: Sequence[Mapping[str, Any]]) -> str:
    passed = summary.get("passed")
    failed = sum(1 for check in checks if check.get("passed") is False)
    counts = f"{len(checks) - failed} of {len(checks)} checks passed"
    if passed is True:
        return f'<div class="verdict pass">PASS — {_e(counts)}</div>'
    if passed is False:
        return f'<div class="verdict fail">FAIL — {_e(counts)}</div>'
    return f'<div class="verdict none">NO VERDICT — the summary has none; {_e(counts)}</div>'


def _checks_section(checks: Sequence[Mapping[str, Any]]) -> str:
    if not checks:
        return "<p>No checks.</p>"
    rows = []
    for n, check in enumerate(checks, start=1):
        passed = check.get("passed")
        css, result = ("pass", "PASS") if passed is True else ("fail", "FAIL") if passed is False else ("", "?")
        params = check.get("params", {})
        params_text = json.dumps(params, sort_keys=True, default=str) if params else ""
        rows.append(
            f'<tr class="{css}"><td class="num">{n}</td><td>{_e(check.get("check", "?"))}</td>'
            f'<td><code>{_e(params_text)}</code></td><td class="result">{result}</td>'
            f"<td>{_e(check.get('evidence', ''))}</td></tr>"
        )
    return _table(["#", "check", "parameters", "result", "evidence"], rows)


def _sessions_section(sessions: Sequence[Mapping[str, Any]]) -> str:
    if not sessions:
        return "<p>No sessions.</p>"
    rows = []
    for session in sessions:
        start, stop = _number(session.get("started_s")), _number(session.get("stopped_s"))
        length = _clock(stop - start) if start is not None and stop is not None else "—"
        rows.append(
            f"<tr><td>{_e(session.get('connector', '?'))}</td><td><code>{_e(session.get('id', ''))}</code></td>"
            f'<td class="num">{_fixed(session.get("energy_wh"), 1e-3, 3)}</td>'
            f'<td class="num">{_clock(start)}</td><td class="num">{_clock(stop)}</td><td class="num">{length}</td>'
            f"<td>{_e(session.get('reason') or '')}</td></tr>"
        )
    return _table(["connector", "session", "energy kWh", "started", "stopped", "length", "stop reason"], rows)


def _faults_section(faults: Sequence[FaultMark]) -> str:
    if not faults:
        return "<p>No faults in the trace.</p>"
    rows = [
        f'<tr><td class="num">{_clock(f.t)}</td><td>{_e(f.src)}</td><td><code>{_e(f.code)}</code></td>'
        f"<td>{'raised' if f.raised else 'cleared'}</td><td>{_e(f.detail)}</td></tr>"
        for f in faults
    ]
    return _table(["time", "source", "code", "", "detail"], rows)


def _trace_section(trace: TraceDigest, trace_path: Path) -> str:
    parts = [
        f"<p>{_e(trace_path.name)}: {trace.lines} lines, {trace.events} events used, "
        f"{trace.skipped_lines} lines skipped, {sum(trace.unknown_kinds.values())} events of unknown kinds.</p>"
    ]
    parts.extend(f"<p>Note: {_e(note)}</p>" for note in trace.notes)
    if trace.skipped:
        rows = [f'<tr><td>{_e(r)}</td><td class="num">{c}</td></tr>' for r, c in trace.skipped.most_common()]
        parts.append(_table(["skipped because", "lines"], rows))
        examples = ", ".join(f"line {n} ({_e(reason)})" for n, reason in trace.skip_examples)
        parts.append(f"<p>First skipped: {examples}.</p>")
    if trace.unknown_kinds:
        rows = [
            f'<tr><td><code>{_e(k)}</code></td><td class="num">{c}</td></tr>' for k, c in trace.unknown_kinds.items()
        ]
        parts.append(_table(["unknown kind", "events"], rows))
    return "\n".join(parts)


def _plots_section(trace: TraceDigest, axis: _Axis) -> str:
    figures: list[tuple[str, str]] = []
    connector_names = sorted(trace.connectors, key=_natural)
    # A fault from a source without its own plot (board, site, rig) concerns every connector: it goes on all plots.
    general = [f for f in trace.faults if f.src not in trace.connectors]
    for src in connector_names:
        own = [f for f in trace.faults if f.src == src or f.src not in trace.connectors]
        caption = f"{src}: pilot state, PWM duty, effective limit (binding source labelled), power, contactor"
        figures.append((caption, _connector_plot(src, trace.connectors[src], own, axis)))
    if trace.socs:
        figures.append(("EV state of charge", _soc_plot(trace.socs, axis)))
    if trace.site.power:
        figures.append(("site import, grid limit, building load and PV", _site_plot(trace.site, general, axis)))
    if not figures:
        return "<p>Nothing to plot: the trace has no connector, EV or site events.</p>"
    return "\n".join(
        f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{png}"><figcaption>{_e(caption)}'
        "</figcaption></figure>"
        for caption, png in figures
    )


def _list_of_mappings(value: object) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def render_report(*, trace_path: Path, summary: Mapping[str, Any]) -> str:
    """The report as one HTML document (see write_report)."""
    trace = read_trace_digest(trace_path)
    checks = _list_of_mappings(summary.get("checks"))
    sessions = _list_of_mappings(summary.get("sessions"))
    name = summary.get("scenario") or (trace.header or {}).get("scenario") or "unnamed scenario"
    if trace.header is not None and summary.get("scenario") and trace.header.get("scenario") != summary["scenario"]:
        trace.notes.append(
            f"the trace header names scenario {trace.header.get('scenario')!r}, the summary {summary['scenario']!r}"
        )
    duration = _number(summary.get("duration_s"))
    axis = _Axis(max(duration or 0.0, trace.end_t))
    meta = [
        ("scenario", name),
        ("board", summary.get("board", "—")),
        ("time", summary.get("time", "—")),
        ("duration", _clock(duration)),
        ("wall time", _fixed(summary.get("wall_s"), digits=1, unit=" s")),
        ("peak site power", _fixed(summary.get("peak_site_power_w"), 1e-3, 2, " kW")),
        ("grid limit", _fixed(summary.get("grid_limit_w"), 1e-3, 2, " kW")),
    ]
    meta_rows = [f"<tr><th>{_e(key)}</th><td>{_e(value)}</td></tr>" for key, value in meta]
    body = [
        f"<h1>HIL report: {_e(name)}</h1>",
        f'<p class="desc">{_e(summary.get("description") or "")}</p>',
        _verdict(summary, checks),
        "<table>\n" + "\n".join(meta_rows) + "\n</table>",
        "<h2>Checks</h2>",
        _checks_section(checks),
        "<h2>Sessions</h2>",
        _sessions_section(sessions),
        "<h2>Faults</h2>",
        _faults_section(trace.faults),
        "<h2>Plots</h2>",
        _plots_section(trace, axis),
        "<h2>Trace</h2>",
        _trace_section(trace, trace_path),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>HIL report: {_e(name)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def write_report(out_dir: Path, *, trace_path: Path, summary: Mapping[str, Any]) -> Path:
    """Write ``out_dir/report.html`` from the trace and the run summary (summary.json's content); return its path.

    The file is written next to its final name and renamed, so a reader never sees half a report.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / REPORT_NAME
    partial = out_dir / (REPORT_NAME + ".partial")
    partial.write_text(render_report(trace_path=trace_path, summary=summary), encoding="utf-8")
    os.replace(partial, target)
    return target
