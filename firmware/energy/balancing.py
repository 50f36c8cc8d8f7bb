"""Site load balancing: the TF-EVC formulas and the splitting strategies.

Formulas (seed requirements, 002 = the TF-EVC report)
----------------------------------------------------
* :func:`ev_budget_w`, eq. 1.2.5.1 (R58): with live metering at the connection point, the chargers'
  total may change by ``dP <= P_grid_max - P_tot(t-)``, so that ``P_tot(t) <= P_grid_max`` at all
  times. The chargers' new total is their present total plus that headroom.
* :func:`ev_headroom_w`, §2.3 (R60): the headroom from a smart meter alone, exported power negative;
  :func:`ev_headroom_bems_w` the same from a BEMS that knows production and consumption.
* :func:`granted_w`, eq. 3.2.6.1-2 (R62): ``P_granted`` with ``|P_used - P_gen + P_granted| <=
  P_grid_max`` and ``P_needed <= P_granted <= P_wished``; None when no such value exists.
* :func:`ess_support_w`, eq. 3.2.6.3-4 (R63): when that is infeasible, the local battery (ESS)
  discharges ``P_gen_ESS >= P_used - P_gen + P_needed - P_grid_max``, within ``P_max_ESS`` and the
  energy above its reserve over the recalculation period.

Splitting (R66: "all EVs aliquot in parallel, or sequential groups"; "equitable" or by priority)
-------------------------------------------------------------------------------------------------
:func:`split` shares a budget among connectors. Strategies: ``equal`` (water-filling: each gets the
same unless it wants less), ``priority`` (highest priority first), ``departure`` (earliest deadline
first gets the power its energy need requires, the rest is shared equally). A connector never gets
less than its minimum active power (6 A on its phases, IEC 61851-1: the lowest PWM offer) while
running: when the budget cannot give every connector that much, connectors are paused (0 W), the
lowest ranked first, instead of all running below the minimum. A negative budget (the site is above
its limit without any EV) is covered by discharging the connectors whose windows allow it (V2G/V2B),
shared equally.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Strategy = Literal["equal", "priority", "departure"]
STRATEGIES: tuple[Strategy, ...] = ("equal", "priority", "departure")


# ------------------------------------------------------------------------------------------ formulas
def ev_budget_w(p_grid_max_w: float, p_meter_w: float, p_ev_now_w: float) -> float:
    """Eq. 1.2.5.1: the chargers' total for the next period, from the grid limit, the metered power at
    the connection point (import positive) and the chargers' present total."""
    return p_ev_now_w + (p_grid_max_w - p_meter_w)


def ev_headroom_w(p_grid_max_w: float, p_meter_w: float) -> float:
    """§2.3, smart meter only: ``dP_max_EV = P_grid_max - P_meter`` (export negative). Positive allows
    an increase, negative requires a decrease."""
    return p_grid_max_w - p_meter_w


def ev_headroom_bems_w(p_grid_max_w: float, p_prod_w: float, p_cons_w: float) -> float:
    """§2.3, with a BEMS: ``dP_max_EV = P_grid_max + P_prod - P_cons``."""
    return p_grid_max_w + p_prod_w - p_cons_w


def granted_w(
    p_used_w: float, p_gen_w: float, p_needed_w: float, p_wished_w: float, p_grid_max_w: float
) -> float | None:
    """Eq. 3.2.6.1-2: the largest ``P_granted`` in ``[P_needed, P_wished]`` with ``|P_used - P_gen +
    P_granted| <= P_grid_max``; None when the interval and the grid constraint do not meet."""
    net = p_used_w - p_gen_w
    upper = min(p_wished_w, p_grid_max_w - net)
    lower = max(p_needed_w, -p_grid_max_w - net)
    return upper if upper >= lower else None


def ess_support_w(
    *,
    p_used_w: float,
    p_gen_w: float,
    p_needed_w: float,
    p_grid_max_w: float,
    p_ess_max_w: float,
    e_stored_wh: float,
    e_min_wh: float,
    dt_s: float,
) -> float:
    """Eq. 3.2.6.3-4: the ESS discharge that makes ``P_needed`` feasible, within the battery's power and
    the energy above its reserve over ``dt_s``; 0 when nothing is missing or nothing can be given."""
    if dt_s <= 0:
        raise ValueError(f"the recalculation period must be positive, not {dt_s} s")
    missing = p_used_w - p_gen_w + p_needed_w - p_grid_max_w
    if missing <= 0 or e_stored_wh <= e_min_wh:
        return 0.0
    by_energy = (e_stored_wh - e_min_wh) * 3600.0 / dt_s
    return max(0.0, min(missing, p_ess_max_w, by_energy))


# ------------------------------------------------------------------------------------------ splitting
@dataclass(slots=True)
class Demand:
    """One connector's part in a split. ``min_w``/``max_w``: its own window (after its bounds and what
    the EV wants); ``min_active_w``: the least power it can run at (6 A on its phases); ``needed_w``:
    the power its energy need requires until ``deadline`` (departure-aware splitting)."""

    key: int
    min_w: float
    max_w: float
    min_active_w: float = 0.0
    needed_w: float = 0.0
    deadline: float | None = None
    priority: int = 0

    def __post_init__(self) -> None:
        for name in ("min_w", "max_w", "min_active_w", "needed_w"):
            if math.isnan(getattr(self, name)):
                raise ValueError(f"connector {self.key}: {name} is NaN")
        if self.min_w > self.max_w:
            raise ValueError(f"connector {self.key}: min_w {self.min_w} is above max_w {self.max_w}")
        if self.min_active_w < 0:
            raise ValueError(f"connector {self.key}: min_active_w must be >= 0")


def split(budget_w: float, demands: Sequence[Demand], strategy: Strategy = "equal") -> dict[int, float]:
    """Share ``budget_w`` (the chargers' total allowed; negative: they must give that much back) among
    ``demands``. Every result lies in its demand's window, is 0 or at least its ``min_active_w`` when
    charging, and the total never exceeds ``budget_w`` unless the windows' own lower bounds (a
    connector that may not go below some power) force it."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown splitting strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if math.isnan(budget_w):
        raise ValueError("the budget is NaN")
    # Each connector starts at the point of its window nearest zero: nothing is given that the window
    # does not force. The forced part comes off the budget first.
    base = {d.key: min(d.max_w, max(d.min_w, 0.0)) for d in demands}
    left = budget_w - sum(base.values())
    if left < 0:
        return _give_back(left, demands, base)
    chargers = [d for d in demands if d.max_w > base[d.key]]
    extra = _split_up(left, chargers, base, strategy)
    return {d.key: base[d.key] + extra.get(d.key, 0.0) for d in demands}


def _give_back(deficit_w: float, demands: Sequence[Demand], base: dict[int, float]) -> dict[int, float]:
    """The budget is below the forced points: discharge where windows allow it, equally (water-filling
    down to each window's minimum)."""
    out = dict(base)
    room = {d.key: base[d.key] - d.min_w for d in demands if d.min_w < base[d.key]}
    for key, amount in _water_fill(-deficit_w, room).items():
        out[key] -= amount
    return out


def _split_up(left_w: float, chargers: list[Demand], base: dict[int, float], strategy: Strategy) -> dict[int, float]:
    """The extra power above each base point, given to the longest prefix of the ranked connectors in
    which nobody runs below its minimum active power; the others pause (the lowest ranked first).
    Fewer running connectors each get at least as much, so the prefix length is found by bisection
    (a 1000-connector site: about 10 allocations, not 1000)."""
    ranked = _rank(chargers, strategy)

    def attempt(count: int) -> dict[int, float] | None:
        extra = _allocate(left_w, ranked[:count], base, strategy)
        for d in ranked[:count]:
            total = base[d.key] + extra[d.key]
            if 0 < total < d.min_active_w - 1e-9:
                return None
        return extra

    everyone = attempt(len(ranked))
    if everyone is not None:  # the usual case: the budget runs every connector
        return everyone
    low, high = 0, len(ranked) - 1
    while low < high:
        middle = (low + high + 1) // 2
        if attempt(middle) is None:
            high = middle - 1
        else:
            low = middle
    return attempt(low) or {}


def _allocate(left_w: float, running: list[Demand], base: dict[int, float], strategy: Strategy) -> dict[int, float]:
    room = {d.key: d.max_w - base[d.key] for d in running}
    if strategy == "equal":
        return _water_fill(left_w, room)
    out = dict.fromkeys(room, 0.0)
    if strategy == "departure":
        # First what each needs for its departure, earliest deadline first; the rest equally.
        for d in running:
            want = min(room[d.key], max(d.needed_w, d.min_active_w) - base[d.key]) if d.needed_w > 0 else 0.0
            give = max(0.0, min(want, left_w))
            out[d.key] = give
            left_w -= give
        rest = _water_fill(left_w, {k: room[k] - out[k] for k in room})
        return {k: out[k] + rest.get(k, 0.0) for k in out}
    # priority: the highest first, each as much as it can take.
    for d in running:
        give = max(0.0, min(room[d.key], left_w))
        out[d.key] = give
        left_w -= give
    return out


def _rank(demands: Iterable[Demand], strategy: Strategy) -> list[Demand]:
    """The order in which connectors are served (and, reversed, paused)."""
    if strategy == "departure":
        return sorted(demands, key=lambda d: (d.deadline is None, d.deadline or 0.0, -d.priority, d.key))
    return sorted(demands, key=lambda d: (-d.priority, d.key))


def _water_fill(total_w: float, room: dict[int, float]) -> dict[int, float]:
    """Split ``total_w`` as equally as possible with each key taking at most its room."""
    out = dict.fromkeys(room, 0.0)
    if total_w <= 0 or not room:
        return out
    remaining = total_w
    open_keys = sorted(room, key=lambda k: room[k])
    while open_keys:
        share = remaining / len(open_keys)
        smallest = open_keys[0]
        if room[smallest] <= share:
            out[smallest] = room[smallest]
            remaining -= room[smallest]
            open_keys.pop(0)
        else:
            for k in open_keys:
                out[k] = share
            return out
    return out
