"""The limit arbitration: a connector's current is the minimum of tagged limits.

Every limit has a source (board rating, cable PP coding, thermal derating, energy manager, OCPP
schedule, user preference, ...) and optionally an expiry. The effective current is the minimum over
all limits in force, and :meth:`LimitSet.effective` returns the whole chain, so the firmware can
always answer "why is connector 1 at 16 A" (ARCHITECTURE.md, "Every limit has a source and an
expiry").

An external limit that expires is not simply dropped, which would raise the current to the next
limit up: it is replaced by the configured safe fallback (EVerest rejects stale limits, validUntil;
OpenEVSE's shaper falls back after 120 s; seed requirement R142: "statically limited charging power"
when communication fails).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Well-known sources. Any string works; these are the ones the firmware itself sets.
BOARD = "board"
CABLE = "cable"
THERMAL = "thermal"
FAULT = "fault"
EMS = "ems"
OCPP = "ocpp"
USER = "user"
SITE = "site"  # the site energy manager's share (firmware.energy)


@dataclass(frozen=True)
class Limit:
    source: str
    current_a: float
    expires_at: float | None = None  # clock time; None = until replaced
    detail: str = ""

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError("a limit needs a source")
        if not math.isfinite(self.current_a) or self.current_a < 0:
            raise ValueError(f"limit from {self.source!r}: current must be finite and >= 0, not {self.current_a}")


@dataclass(frozen=True)
class LimitInForce:
    """One link of the chain as seen at a given time."""

    limit: Limit
    current_a: float  # what it contributes now (the fallback value once expired)
    expired: bool

    def describe(self) -> str:
        text = f"{self.limit.source}: {self.current_a:g} A"
        if self.expired:
            text += f" (fallback: its {self.limit.current_a:g} A limit expired at t={self.limit.expires_at:g})"
        elif self.limit.expires_at is not None:
            text += f" until t={self.limit.expires_at:g}"
        if self.limit.detail:
            text += f" ({self.limit.detail})"
        return text


@dataclass(frozen=True)
class Effective:
    current_a: float
    binding: LimitInForce | None  # the link that sets the value (lowest; ties: first set)
    chain: tuple[LimitInForce, ...]  # every link, lowest first

    def explain(self) -> str:
        if self.binding is None:
            return "no limits: 0 A (default deny)"
        lines = [f"{self.current_a:g} A, set by {self.binding.limit.source}"]
        lines += [f"  {'*' if link is self.binding else '-'} {link.describe()}" for link in self.chain]
        return "\n".join(lines)


class LimitSet:
    """The limits of one connector. One limit per source: setting a source replaces its limit."""

    def __init__(self, *, fallback_a: float) -> None:
        if not math.isfinite(fallback_a) or fallback_a < 0:
            raise ValueError(f"fallback must be finite and >= 0, not {fallback_a}")
        self.fallback_a = fallback_a
        self._limits: dict[str, Limit] = {}

    def set(self, limit: Limit) -> None:
        self._limits.pop(limit.source, None)  # re-insert: ties go to the limit set first
        self._limits[limit.source] = limit

    def clear(self, source: str) -> None:
        self._limits.pop(source, None)

    def get(self, source: str) -> Limit | None:
        return self._limits.get(source)

    def effective(self, now: float) -> Effective:
        """The minimum over every limit in force at ``now`` (no limits at all = 0 A: default deny)."""
        chain = []
        for limit in self._limits.values():
            expired = limit.expires_at is not None and now >= limit.expires_at
            chain.append(LimitInForce(limit, self.fallback_a if expired else limit.current_a, expired))
        if not chain:
            return Effective(0.0, None, ())
        ordered = tuple(sorted(chain, key=lambda link: link.current_a))  # stable: ties keep set order
        return Effective(ordered[0].current_a, ordered[0], ordered)

    def next_expiry(self, now: float) -> float | None:
        """When the effective value may next change by itself."""
        pending = [lim.expires_at for lim in self._limits.values() if lim.expires_at is not None]
        pending = [t for t in pending if t > now]
        return min(pending) if pending else None
