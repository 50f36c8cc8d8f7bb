"""When a connector that can switch between one and three phases should switch.

A PWM pilot cannot offer less than 6 A per phase (IEC 61851-1 Table A.8), so on three phases at
230 V a connector needs at least 4.14 kW; on one phase it can run from 1.38 kW up to its rating on
that phase (7.36 kW at 32 A). A connector with a phase contactor (firmware/phase_switching.py) thus
keeps charging from a small PV surplus or behind a small connection, where a three-phase-only one
would pause. The rules (the same shape as SmartEVSE's C2 switching and EVerest's EnergyManager
``switch_3ph1ph_*`` settings, anchors.md):

* **Down at once.** A share below 6 A on three phases cannot be offered there: the connector goes to
  one phase in the same cycle (if the share reaches 6 A on one phase; below that it pauses, as any
  connector does).
* **Up only when it clearly pays and has lasted.** Back to three phases only when the share has been
  at least 6 A on three phases plus ``up_margin_w`` for ``up_after_s`` without a break, so that a
  passing cloud does not switch the EV twice.
* **Few switches.** At least ``min_interval_s`` between switches up, and at most
  ``max_switches_per_session`` switches per session: every switch pauses the EV for its settle time,
  and some onboard chargers give up after repeated phase changes. With the switches used up a
  connector stays where it is (paused if its share cannot be offered there).
* **Idle connectors go back to all phases**, with no EV there a switch costs nothing, and an EV that
  arrives at a site with power to spare starts at full power without waiting ``up_after_s``.

While a connector runs on one phase, its window is capped at what one phase carries, and the rest of
the budget goes to the other connectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: IEC 61851-1 Table A.8: the lowest current a PWM offer can carry.
MIN_OFFER_A = 6.0


@dataclass(frozen=True)
class PhasePolicy:
    #: How far above 6 A on three phases a share must be to switch up (EVerest's
    #: ``switch_3ph1ph_power_hysteresis_W``).
    up_margin_w: float = 500.0
    #: How long it must stay there (EVerest's ``switch_3ph1ph_time_hysteresis_s``).
    up_after_s: float = 30.0
    #: The least time between a switch and a switch up.
    min_interval_s: float = 120.0
    #: Switches per session, both directions (EVerest's ``switch_3ph1ph_max_nr_of_switches_per_session``).
    max_switches_per_session: int = 10

    def __post_init__(self) -> None:
        for name in ("up_margin_w", "up_after_s", "min_interval_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"phase switching: {name} must be a finite number >= 0, not {value!r}")
        if self.max_switches_per_session < 0:
            raise ValueError("phase switching: max_switches_per_session must be >= 0")


@dataclass
class PhaseTrack:
    """One switchable connector's memory between cycles."""

    phases: int = 3  # what the manager last asked for
    up_since: float | None = None
    switched_at: float = -math.inf
    switches: int = 0


@dataclass(frozen=True, slots=True)
class PhaseDecision:
    phases: int
    reason: str | None  # None: nothing worth explaining (no switch, nothing held back)


def one_phase_max_w(hardware_max_w: float, max_phases: int) -> float:
    """What the connector's own limit chain allows on one phase (the chain is per phase)."""
    return hardware_max_w / max_phases


def decide(
    policy: PhasePolicy,
    track: PhaseTrack,
    *,
    share_w: float,
    wants_power: bool,
    max_phases: int,
    voltage_v: float,
    now: float,
) -> PhaseDecision:
    """The phases the connector should run on this cycle, given the share the split gave it (computed
    with its window at all phases, so that a share worth three phases is seen while it runs on one)."""
    if not wants_power:
        decision = PhaseDecision(track.phases, None)
        if track.phases != max_phases:
            decision = _switch(track, max_phases, now, "no EV drawing: back to all phases")
        track.switches = 0  # the next EV is a new session
        return decision
    min_all = MIN_OFFER_A * voltage_v * max_phases
    min_one = MIN_OFFER_A * voltage_v
    used_up = track.switches >= policy.max_switches_per_session
    if track.phases == max_phases:
        track.up_since = None
        if share_w >= min_all - 1e-6 or share_w < min_one - 1e-6:
            return PhaseDecision(track.phases, None)  # fine here, or too little for either
        if used_up:
            return PhaseDecision(
                track.phases,
                f"{share_w / 1000:.2f} kW is below 6 A on {max_phases} phases but the "
                f"{policy.max_switches_per_session} phase switches of this session are used up: paused",
            )
        return _switch(track, 1, now, f"{share_w / 1000:.2f} kW is below 6 A on {max_phases} phases: one phase")
    # On one phase: up only when the share has been worth it for long enough.
    if share_w < min_all + policy.up_margin_w - 1e-6:
        track.up_since = None
        return PhaseDecision(track.phases, None)
    track.up_since = now if track.up_since is None else track.up_since
    waited = now - track.up_since
    if waited < policy.up_after_s - 1e-9:
        return PhaseDecision(
            track.phases, f"{max_phases} phases after {policy.up_after_s:g} s of enough power ({waited:.0f} s so far)"
        )
    if now - track.switched_at < policy.min_interval_s - 1e-9:
        return PhaseDecision(
            track.phases, f"{max_phases} phases held back: last phase switch less than {policy.min_interval_s:g} s ago"
        )
    if used_up:
        return PhaseDecision(
            track.phases, f"{max_phases} phases held back: {policy.max_switches_per_session} switches used up"
        )
    return _switch(track, max_phases, now, f"{share_w / 1000:.2f} kW for {waited:.0f} s: back to {max_phases} phases")


def _switch(track: PhaseTrack, phases: int, now: float, reason: str) -> PhaseDecision:
    track.phases = phases
    track.switched_at = now
    track.up_since = None
    track.switches += 1
    return PhaseDecision(phases, reason)
