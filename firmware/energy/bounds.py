"""Tagged power bounds and how one node of the tree (site, board, connector) combines them.

Every input to the energy manager is a :class:`Bound`: a window ``[min_w, max_w]`` of signed power
(positive: the EV charges; negative: it discharges, V2G), with a source, a priority and an optional
expiry. A node's window is the intersection of the windows of all its inputs in force:

* ``max_w`` is the lowest upper bound: every limit is respected (fuse, grid connection, OCPP
  schedule, EMS setpoint, tariff, user maximum).
* ``min_w`` is the highest lower bound: a discharge floor, "no discharge" (``min_w = 0``: the
  default), a demand to charge at least so much (user minimum energy before departure).

When the inputs contradict each other (a lower bound above an upper bound: the user wants 7 kW before
departure, the grid allows 4 kW), the window is empty; it is made feasible by dropping the inputs of
the lowest priority first (they are reported as overridden, never silently ignored). Safety and
hardware inputs (:data:`SAFETY`) are never dropped: when they alone contradict, the result is the
safe window ``[0, 0]`` (default deny: no power).

Expiry: an external input (EMS, CSMS, user) that runs out is not simply removed, which would widen the
window to the next input: it is replaced by the node's fallback for that source (seed R142, the
"statically limited charging power"; EVerest rejects stale limits, OpenEVSE's shaper falls back after
120 s), and reported as expired.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

#: Priorities: higher wins a conflict. Safety and hardware ratings are never overridden; the grid
#: connection (the DSO's limit, fuses) comes next; then the operator and grid operators' commands,
#: then the site EMS, then the user's wishes.
SAFETY = 100
GRID = 80
OPERATOR = 60  # CSMS / OCPP charging profiles
EMS = 40  # site EMS / HEMS setpoints, demand response
TARIFF = 30
USER = 20


@dataclass(frozen=True)
class Bound:
    """One tagged input: a window of signed power with its origin."""

    source: str
    max_w: float = math.inf
    min_w: float = -math.inf
    priority: int = EMS
    expires_at: float | None = None  # the manager's clock; None = until replaced
    detail: str = ""

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError("a bound needs a source")
        for name in ("max_w", "min_w"):
            value = getattr(self, name)
            if math.isnan(value):
                raise ValueError(f"bound from {self.source!r}: {name} is NaN")
        if self.min_w > self.max_w:
            raise ValueError(f"bound from {self.source!r}: min_w {self.min_w} W is above max_w {self.max_w} W")

    def describe(self) -> str:
        parts = []
        if self.max_w != math.inf:
            parts.append(f"<= {_kw(self.max_w)}")
        if self.min_w != -math.inf:
            parts.append(f">= {_kw(self.min_w)}")
        text = f"{self.source}: {' and '.join(parts) or 'no bound'}"
        if self.detail:
            text += f" ({self.detail})"
        return text


@dataclass(frozen=True)
class Link:
    """An input as it counts at a given time."""

    bound: Bound  # what counts now (the fallback once the input expired)
    expired: Bound | None = None  # the input that expired, when ``bound`` is its fallback
    overridden: bool = False  # dropped to resolve a conflict with higher priorities

    def describe(self) -> str:
        text = self.bound.describe()
        if self.expired is not None:
            text += f" [fallback: {self.expired.describe()} expired]"
        if self.overridden:
            text += " [overridden: conflicts with higher-priority inputs]"
        return text


@dataclass(frozen=True)
class Window:
    """A node's resolved window and the chain that produced it."""

    min_w: float
    max_w: float
    max_by: Link | None  # the input that sets max_w (None: unbounded)
    min_by: Link | None  # the input that sets min_w
    links: tuple[Link, ...]

    def clamp(self, power_w: float) -> float:
        return min(self.max_w, max(self.min_w, power_w))

    def intersect(self, other: Window) -> Window:
        """This window inside ``other`` (a parent's share); an empty result collapses to the safe point
        nearest zero inside ``other``."""
        lo, hi = max(self.min_w, other.min_w), min(self.max_w, other.max_w)
        max_by = self.max_by if self.max_w <= other.max_w else other.max_by
        min_by = self.min_by if self.min_w >= other.min_w else other.min_by
        if lo > hi:
            point = min(other.max_w, max(other.min_w, 0.0))
            return Window(point, point, other.max_by, other.min_by, self.links + other.links)
        return Window(lo, hi, max_by, min_by, self.links + other.links)

    def explain(self) -> list[str]:
        lines = [f"window {_kw(self.min_w)} .. {_kw(self.max_w)}"]
        for link in self.links:
            mark = "*" if link is self.max_by or link is self.min_by else "-"
            lines.append(f"  {mark} {link.describe()}")
        return lines


@dataclass
class BoundSet:
    """The inputs of one node. One input per source: setting a source replaces its input.
    ``fallbacks`` maps a source to what replaces its input when it expires (absent: the safe
    ``[0, 0]`` for an unknown source, since an expired command is not a permission)."""

    fallbacks: dict[str, Bound] = field(default_factory=dict)
    _bounds: dict[str, Bound] = field(default_factory=dict)
    #: The last window and until when it holds (the next expiry): a site manager resolves every
    #: connector every cycle, and most of them did not change.
    _cache: tuple[Window, float, float] | None = field(default=None, repr=False)

    def set(self, bound: Bound) -> None:
        self._bounds[bound.source] = bound
        self._cache = None

    def clear(self, source: str) -> None:
        if self._bounds.pop(source, None) is not None:
            self._cache = None

    def get(self, source: str) -> Bound | None:
        return self._bounds.get(source)

    def sources(self) -> list[str]:
        return list(self._bounds)

    def next_expiry(self, now: float) -> float | None:
        pending = [b.expires_at for b in self._bounds.values() if b.expires_at is not None and b.expires_at > now]
        return min(pending) if pending else None

    def resolve(self, now: float) -> Window:
        cache = self._cache
        if cache is not None and cache[1] <= now < cache[2]:
            return cache[0]
        window = self._resolve_now(now)
        upcoming = self.next_expiry(now)
        self._cache = (window, now, math.inf if upcoming is None else upcoming)
        return window

    def _resolve_now(self, now: float) -> Window:
        links: list[Link] = []
        for bound in self._bounds.values():
            if bound.expires_at is not None and now >= bound.expires_at:
                fallback = self.fallbacks.get(bound.source)
                if fallback is None:
                    fallback = Bound(bound.source, 0.0, 0.0, bound.priority, detail="expired, no fallback: no power")
                links.append(Link(replace(fallback, priority=bound.priority), expired=bound))
            else:
                links.append(Link(bound))
        return _resolve(links)


def _resolve(links: list[Link]) -> Window:
    """Intersect the inputs; drop the lowest priorities until the window is not empty, then move the
    window as close to each dropped input as the kept ones allow."""
    lo = max((link.bound.min_w for link in links), default=-math.inf)
    hi = min((link.bound.max_w for link in links), default=math.inf)
    if lo <= hi:  # the usual case, no conflict: one pass (the manager resolves every connector each cycle)
        return Window(lo, hi, _argmin(links, "max_w"), _argmax(links, "min_w"), tuple(links))
    active = list(links)
    # Lowest priority first; among equals the later-set input goes first (the older agreement stands).
    order = sorted(range(len(active)), key=lambda i: (active[i].bound.priority, -i))
    dropped: set[int] = set()
    for i in [None, *order]:
        if i is not None:
            if active[i].bound.priority >= SAFETY:
                break  # safety inputs are never overridden
            dropped.add(i)
        kept = [link for j, link in enumerate(active) if j not in dropped]
        lo = max((link.bound.min_w for link in kept), default=-math.inf)
        hi = min((link.bound.max_w for link in kept), default=math.inf)
        if lo <= hi:
            # An overridden input still pulls the window towards itself as far as the kept ones allow
            # (highest priority first): an aggregator asking 1 W more discharge than the gate grants gets
            # the grant, not the far edge of the window.
            for j in sorted(dropped, key=lambda k: (-active[k].bound.priority, k)):
                bound = active[j].bound
                lo, hi = max(lo, min(bound.min_w, hi)), min(hi, max(bound.max_w, lo))
            final = [replace(link, overridden=True) if j in dropped else link for j, link in enumerate(active)]
            kept_final = [link for j, link in enumerate(final) if j not in dropped]
            return Window(lo, hi, _argmin(kept_final, "max_w"), _argmax(kept_final, "min_w"), tuple(final))
    # Safety inputs contradict each other: no power at all.
    final = [replace(link, overridden=link.bound.priority < SAFETY) for link in active]
    return Window(0.0, 0.0, None, None, tuple(final))


def _argmin(links: list[Link], attr: str) -> Link | None:
    finite = [link for link in links if getattr(link.bound, attr) != math.inf]
    return min(finite, key=lambda link: getattr(link.bound, attr)) if finite else None


def _argmax(links: list[Link], attr: str) -> Link | None:
    finite = [link for link in links if getattr(link.bound, attr) != -math.inf]
    return max(finite, key=lambda link: getattr(link.bound, attr)) if finite else None


def _kw(watts: float) -> str:
    if watts == math.inf:
        return "+inf"
    if watts == -math.inf:
        return "-inf"
    return f"{watts / 1000:.3g} kW"
