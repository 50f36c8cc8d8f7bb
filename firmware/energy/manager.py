"""The energy manager: one place where a site's power is shared among its connectors.

The tree is site -> board -> connector. Each node has tagged inputs (:mod:`firmware.energy.bounds`);
one cycle (:meth:`EnergyManager.cycle`, every ``period_s``) does, in this order:

1. **Site window** from the site's inputs: the grid connection (import and export limits), the site
   EMS setpoint (P_granted), demand response ("reduce by n kW"), each with its expiry and fallback.
2. **Chargers' budget** from the site meter, eq. 1.2.5.1 (:func:`balancing.ev_budget_w`): the site's
   other loads and generation are what the meter sees minus what the chargers draw. Without a site
   meter (dedicated grid access, R58) the chargers' total itself is held under the site window. A site
   meter that goes silent for ``meter_timeout_s`` is a fallback: the chargers get the configured
   static total (R142) until it reads again.
3. **Local battery** (optional): when the budget cannot cover what the connectors need, the ESS
   discharges per eq. 3.2.6.3-4 and the budget grows by that much.
4. **Connector windows**: each connector's own inputs (EMS setpoint, user preferences, discharge
   authorisation, DER limits) intersected with what its hardware allows now (the connector's own
   limit chain: rating, cable, thermal, OCPP, ...) and what its EV takes.
5. **Split** (:func:`balancing.split`) of the budget with the configured strategy, then each board's
   own limit (a feeder fuse) enforced by splitting that board's share again, the rest going to the
   other boards.
6. **Phases** of connectors that can switch between one and three (:mod:`firmware.energy.phases`):
   down at once when the share is below 6 A on three phases, up after a hysteresis; a connector on
   one phase is capped at what one phase carries and the budget is split again without the excess.
7. **Anti-chatter**: decreases apply at once (the grid limit is a hard limit), increases only when
   they are worth it (at least ``step_w``) or ``hold_s`` after the last change; a connector that was
   paused resumes only after ``min_pause_s`` (frequent PWM pauses upset some EVs).

Every result carries its reasons, so ``evse why`` can show the whole chain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from firmware.energy import bounds as prio
from firmware.energy.balancing import STRATEGIES, Demand, Strategy, ess_support_w, ev_budget_w, split
from firmware.energy.bounds import Bound, BoundSet, Window
from firmware.energy.phases import PhasePolicy, PhaseTrack, decide, one_phase_max_w

#: Sources the manager itself uses.
GRID = "grid"
SITE_EMS = "ems"
DEMAND_RESPONSE = "demand_response"
BOARD_RATING = "board_rating"
HARDWARE = "hardware"  # the connector's own limit chain, in W
DISCHARGE = "discharge"  # discharge authorisation (V2G): absent = no discharge
EV = "ev"  # what the EV takes
KEEP = "keep"  # what the user keeps: discharge floor, energy needed before departure


@dataclass(frozen=True)
class EssConfig:
    """A local battery the manager may discharge to keep the chargers going (eq. 3.2.6.3-4)."""

    max_discharge_w: float
    min_energy_wh: float  # the reserve it never goes below

    def __post_init__(self) -> None:
        if not self.max_discharge_w >= 0 or not self.min_energy_wh >= 0:
            raise ValueError("ESS: max_discharge_w and min_energy_wh must be >= 0")


@dataclass(frozen=True)
class SiteConfig:
    """The static parameters (R65). ``grid_import_max_w`` is the connection's import limit
    (P_grid_max), ``grid_export_max_w`` what may be exported (0: none). ``fallback_ev_total_w`` is
    what the chargers share together while the site meter or the EMS is silent."""

    grid_import_max_w: float
    grid_export_max_w: float = 0.0
    strategy: Strategy = "equal"
    period_s: float = 1.0
    meter_timeout_s: float = 10.0
    fallback_ev_total_w: float = 0.0
    #: The site import allowed while the site EMS is silent (its setpoint expired); None: the grid limit.
    ems_fallback_import_w: float | None = None
    has_site_meter: bool = True
    ess: EssConfig | None = None
    #: The site meter sits at the connection point and so sees the battery's discharge (as less
    #: import). The manager then adds the battery's last setpoint back before computing the budget, or
    #: the battery would count twice (its own discharge taken as headroom) and oscillate.
    meter_includes_ess: bool = True
    step_w: float = 690.0  # 1 A on three phases at 230 V
    hold_s: float = 10.0
    min_pause_s: float = 60.0
    phase_policy: PhasePolicy = field(default_factory=PhasePolicy)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.grid_import_max_w) and self.grid_import_max_w >= 0):
            raise ValueError(f"grid_import_max_w must be a finite power >= 0, not {self.grid_import_max_w}")
        if not (math.isfinite(self.grid_export_max_w) and self.grid_export_max_w >= 0):
            raise ValueError(f"grid_export_max_w must be a finite power >= 0, not {self.grid_export_max_w}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        for name in ("period_s", "meter_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        for name in ("fallback_ev_total_w", "step_w", "hold_s", "min_pause_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0")


@dataclass(frozen=True)
class ConnectorSpec:
    """A connector as the manager sees it."""

    key: int  # site-wide number
    board: str
    phases: int
    voltage_v: float
    bidirectional: bool = False
    priority: int = 0
    #: It can switch between one phase and ``phases`` (a phase contactor, firmware/phase_switching.py).
    phase_switching: bool = False

    @property
    def watts_per_amp(self) -> float:
        """Per amp on all its phases."""
        return self.voltage_v * self.phases

    @property
    def min_active_w(self) -> float:
        # 6 A on every phase it runs on, at least one when it can switch: the lowest offer a PWM
        # pilot can make (IEC 61851-1 Table A.8).
        return 6.0 * self.voltage_v * (1 if self.phase_switching else self.phases)


@dataclass(frozen=True)
class ConnectorInput:
    """What a connector tells the manager each cycle. ``hardware_max_w``: what its own limit chain
    allows now (rating, cable, thermal, OCPP), without the manager's share; ``wants_power``: an EV is
    there and may draw (state B/C with authorisation); ``needed_wh``/``deadline``: its energy need
    before departure (user preferences, ISO 15118)."""

    measured_w: float = 0.0
    wants_power: bool = False
    hardware_max_w: float = 0.0
    ev_max_w: float | None = None
    needed_wh: float = 0.0
    deadline: float | None = None
    #: The EV's state of charge when it tells (ISO 15118), and the user's discharge floor (R84, R135).
    soc_pct: float | None = None
    discharge_floor_pct: float | None = None


_IDLE = ConnectorInput()


@dataclass(frozen=True, slots=True)
class ConnectorResult:
    key: int
    power_w: float  # signed setpoint: the connector's share
    window: Window
    paused: bool
    reasons: tuple[str, ...]
    phases: int  # the phases it should run on


@dataclass(frozen=True)
class CycleResult:
    at: float
    site_window: Window
    budget_w: float
    budget_reason: str
    fallback: str | None  # why a fallback is active, None when every input is live
    ess_w: float
    connectors: dict[int, ConnectorResult]

    def explain(self, key: int | None = None) -> str:
        lines = [f"site at t={self.at:.1f} s:"]
        lines += ["  " + line for line in self.site_window.explain()]
        lines.append(f"  chargers' budget {self.budget_w / 1000:.2f} kW: {self.budget_reason}")
        if self.ess_w > 0:
            lines.append(f"  local battery discharging {self.ess_w / 1000:.2f} kW (eq. 3.2.6.3-4)")
        if self.fallback:
            lines.append(f"  FALLBACK: {self.fallback}")
        for k, result in sorted(self.connectors.items()):
            if key is not None and k != key:
                continue
            state = "paused" if result.paused else f"{result.power_w / 1000:.2f} kW"
            lines.append(f"connector {k}: {state}")
            lines += ["  " + line for line in result.window.explain()]
            lines += ["  " + reason for reason in result.reasons]
        return "\n".join(lines)


@dataclass
class _Track:
    """Per-connector memory for anti-chatter."""

    power_w: float = 0.0
    changed_at: float = -math.inf
    paused_at: float | None = None


@dataclass
class EnergyManager:
    site: SiteConfig
    connectors: dict[int, ConnectorSpec] = field(default_factory=dict)
    board_limits: dict[str, float] = field(default_factory=dict)  # a feeder fuse per board, in W

    def __post_init__(self) -> None:
        cfg = self.site
        ems_fallback = cfg.grid_import_max_w if cfg.ems_fallback_import_w is None else cfg.ems_fallback_import_w
        fallback_total = Bound(SITE_EMS, max_w=ems_fallback, priority=prio.EMS, detail="EMS silent: static limit")
        self.site_inputs = BoundSet(fallbacks={SITE_EMS: fallback_total})
        self.site_inputs.set(
            Bound(
                GRID,
                max_w=cfg.grid_import_max_w,
                min_w=-cfg.grid_export_max_w,
                priority=prio.GRID,
                detail="grid connection",
            )
        )
        self.connector_inputs: dict[int, BoundSet] = {}
        self._track: dict[int, _Track] = {}
        self._phases: dict[int, PhaseTrack] = {}
        self._meter_w: float | None = None
        self._meter_at = -math.inf
        self._ess_stored_wh: float | None = None
        self.last: CycleResult | None = None
        for spec in list(self.connectors.values()):
            self.add_connector(spec)

    # ------------------------------------------------------------------------------ inputs
    def add_connector(self, spec: ConnectorSpec) -> None:
        if spec.phases not in (1, 2, 3) or not spec.voltage_v > 0:
            raise ValueError(f"connector {spec.key}: phases must be 1-3 and voltage positive")
        if spec.phase_switching and spec.phases != 3:
            raise ValueError(f"connector {spec.key}: phase switching is between 1 and 3 phases (phases = 3)")
        self.connectors[spec.key] = spec
        self.connector_inputs.setdefault(spec.key, BoundSet())
        self._track.setdefault(spec.key, _Track())
        if spec.phase_switching:
            self._phases.setdefault(spec.key, PhaseTrack(phases=spec.phases))

    def set_site_input(self, bound: Bound) -> None:
        self.site_inputs.set(bound)

    def clear_site_input(self, source: str) -> None:
        if source == GRID:
            raise ValueError("the grid connection limit cannot be removed")
        self.site_inputs.clear(source)

    def set_connector_input(self, key: int, bound: Bound) -> None:
        self._inputs_of(key).set(bound)

    def clear_connector_input(self, key: int, source: str) -> None:
        self._inputs_of(key).clear(source)

    def demand_response(self, *, reduce_by_w: float, until: float, now: float, source: str = DEMAND_RESPONSE) -> None:
        """R56: reduce the site's import by ``reduce_by_w`` from what it is now, until ``until``."""
        if not (math.isfinite(reduce_by_w) and reduce_by_w >= 0):
            raise ValueError(f"reduce_by_w must be a finite power >= 0, not {reduce_by_w}")
        present = self._meter_w if self._meter_w is not None else self.site.grid_import_max_w
        target = max(0.0, present - reduce_by_w)
        detail = f"demand response: {reduce_by_w / 1000:.1f} kW below {present / 1000:.1f} kW"
        self.site_inputs.set(Bound(source, max_w=target, priority=prio.OPERATOR, expires_at=until, detail=detail))
        self.site_inputs.fallbacks[source] = Bound(source, priority=prio.OPERATOR, detail="demand response ended")

    def authorise_discharge(self, key: int, max_discharge_w: float | None, *, source: str = DISCHARGE) -> None:
        """Allow connector ``key`` to discharge down to ``-max_discharge_w`` (ISO 15118-20 BPT, J3072,
        a DC converter in inverter mode); None withdraws it (back to the default: no discharge)."""
        spec = self.connectors.get(key)
        if spec is None:
            raise KeyError(f"no connector {key} in this site")
        if max_discharge_w is None or not spec.bidirectional:
            detail = "discharge not authorised" if spec.bidirectional else "the connector cannot discharge"
            self._inputs_of(key).set(Bound(DISCHARGE, min_w=0.0, priority=prio.SAFETY, detail=detail))
            return
        if not (math.isfinite(max_discharge_w) and max_discharge_w >= 0):
            raise ValueError(f"max_discharge_w must be a finite power >= 0, not {max_discharge_w}")
        self._inputs_of(key).set(
            Bound(DISCHARGE, min_w=-max_discharge_w, priority=prio.SAFETY, detail=f"discharge authorised by {source}")
        )

    def site_meter(self, power_w: float, now: float) -> None:
        """A reading of the meter at the connection point (import positive, R60)."""
        if not math.isfinite(power_w):
            raise ValueError(f"site meter reading {power_w!r} is not a power")
        self._meter_w, self._meter_at = power_w, now

    def ess_state(self, stored_wh: float) -> None:
        if not (math.isfinite(stored_wh) and stored_wh >= 0):
            raise ValueError(f"ESS stored energy {stored_wh!r} is not an energy")
        self._ess_stored_wh = stored_wh

    def _inputs_of(self, key: int) -> BoundSet:
        if key not in self.connector_inputs:
            raise KeyError(f"no connector {key} in this site")
        return self.connector_inputs[key]

    # ------------------------------------------------------------------------------ the cycle
    def cycle(self, now: float, inputs: dict[int, ConnectorInput]) -> CycleResult:
        cfg = self.site
        site_window = self.site_inputs.resolve(now)
        ev_now = sum(inputs[k].measured_w for k in self.connectors if k in inputs)
        fallback = None
        meter_ok = False
        if not cfg.has_site_meter:
            budget = site_window.max_w
            reason = "no site meter: the chargers' total held under the site window (R58, dedicated access)"
        elif self._meter_w is None or now - self._meter_at > cfg.meter_timeout_s:
            budget = min(cfg.fallback_ev_total_w, site_window.max_w)
            fallback = (
                f"site meter silent for more than {cfg.meter_timeout_s:g} s: static {budget / 1000:.2f} kW (R142)"
            )
            reason = "fallback"
        else:
            meter_ok = True
            metered = self._meter_w
            if cfg.ess is not None and cfg.meter_includes_ess and self.last is not None:
                metered += self.last.ess_w  # what the site would import without the battery
            budget = ev_budget_w(site_window.max_w, metered, ev_now)
            reason = (
                f"eq. 1.2.5.1: {site_window.max_w / 1000:.2f} kW limit - {metered / 1000:.2f} kW metered"
                f" + {ev_now / 1000:.2f} kW the chargers draw"
            )
        # An input that expired into a restrictive fallback is a fallback to report; one that simply
        # ended (a demand response over: its fallback is no bound at all) is not.
        expired = [
            link.expired.source
            for link in site_window.links
            if link.expired is not None and (link.bound.max_w != math.inf or link.bound.min_w != -math.inf)
        ]
        if expired and fallback is None:
            fallback = "; ".join(f"{source} expired" for source in expired)

        windows: dict[int, Window] = {}
        demands: list[Demand] = []
        for key, spec in self.connectors.items():
            ci = inputs.get(key, _IDLE)
            own = self.connector_inputs[key]
            hw_max = max(0.0, ci.hardware_max_w if ci.wants_power else 0.0)
            present = own.get(HARDWARE)
            if present is None or present.max_w != hw_max:  # most cycles nothing changed: no new object
                detail = "the connector's own limit chain" if ci.wants_power else "no EV drawing"
                own.set(Bound(HARDWARE, max_w=hw_max, min_w=-hw_max, priority=prio.SAFETY, detail=detail))
            if own.get(DISCHARGE) is None:  # authorise_discharge() replaces it (bidirectional connectors only)
                own.set(Bound(DISCHARGE, min_w=0.0, priority=prio.SAFETY, detail="discharge not authorised"))
            keep = _keep(spec, ci, now)
            if keep is None:
                own.clear(KEEP)
            elif own.get(KEEP) != keep:
                own.set(keep)
            if ci.ev_max_w is not None:
                own.set(Bound(EV, max_w=max(0.0, ci.ev_max_w), priority=prio.USER, detail="what the EV takes"))
            else:
                own.clear(EV)
            window = own.resolve(now)
            windows[key] = window
            needed = 0.0
            if ci.deadline is not None and ci.needed_wh > 0:
                needed = ci.needed_wh * 3600.0 / max(cfg.period_s, ci.deadline - now)
            demands.append(
                Demand(key, window.min_w, window.max_w, spec.min_active_w, needed, ci.deadline, spec.priority)
            )

        ess_w = 0.0
        if cfg.ess is not None and self._ess_stored_wh is not None and meter_ok:
            # P_needed: every connector that wants power at least at its minimum, or what its departure
            # needs; the battery covers that, not every wish (it would be empty before the peak).
            needed = sum(min(d.max_w, max(d.needed_w, d.min_active_w)) for d in demands if d.max_w > 0)
            ess_w = ess_support_w(
                p_used_w=0.0,
                p_gen_w=0.0,
                p_needed_w=needed,
                p_grid_max_w=budget,
                p_ess_max_w=cfg.ess.max_discharge_w,
                e_stored_wh=self._ess_stored_wh,
                e_min_wh=cfg.ess.min_energy_wh,
                dt_s=cfg.period_s,
            )
            budget += ess_w

        shares = self._split_with_boards(budget, demands)
        phases, phase_reasons = self._decide_phases(demands, shares, inputs, now)
        if phases:
            # A connector on one phase cannot take more than one phase carries, and one held on three
            # phases (its switches used up) cannot run below 6 A there: split again with their windows
            # capped, so the rest goes to the others.
            capped = [self._phase_cap(d, phases.get(d.key), shares[d.key], inputs) for d in demands]
            if any(c is not d for c, d in zip(capped, demands, strict=True)):
                demands = capped
                shares = self._split_with_boards(budget, demands)
        results: dict[int, ConnectorResult] = {}
        for d in demands:
            power, reasons = self._smooth(d, shares[d.key], now)
            if d.key in phase_reasons:
                reasons = (*reasons, phase_reasons[d.key])
            n = phases.get(d.key, self.connectors[d.key].phases)
            paused = power == 0 and windows[d.key].max_w > 0
            results[d.key] = ConnectorResult(d.key, power, windows[d.key], paused, reasons, n)
        self.last = CycleResult(now, site_window, budget, reason, fallback, ess_w, results)
        return self.last

    def _decide_phases(
        self, demands: list[Demand], shares: dict[int, float], inputs: dict[int, ConnectorInput], now: float
    ) -> tuple[dict[int, int], dict[int, str]]:
        phases: dict[int, int] = {}
        reasons: dict[int, str] = {}
        for d in demands:
            track = self._phases.get(d.key)
            if track is None:
                continue
            spec = self.connectors[d.key]
            decision = decide(
                self.site.phase_policy,
                track,
                share_w=shares[d.key],
                wants_power=inputs.get(d.key, _IDLE).wants_power,
                max_phases=spec.phases,
                voltage_v=spec.voltage_v,
                now=now,
            )
            phases[d.key] = decision.phases
            if decision.reason is not None:
                reasons[d.key] = decision.reason
        return phases, reasons

    def _phase_cap(self, demand: Demand, phases: int | None, share: float, inputs: dict[int, ConnectorInput]) -> Demand:
        spec = self.connectors[demand.key]
        if phases is None:
            return demand
        if phases == 1:
            cap = one_phase_max_w(inputs.get(demand.key, _IDLE).hardware_max_w, spec.phases)
        elif 0 < share < 6.0 * spec.watts_per_amp:
            cap = 0.0
        else:
            return demand
        if demand.max_w <= cap:
            return demand
        return replace(demand, max_w=max(cap, demand.min_w))

    def _split_with_boards(self, budget: float, demands: list[Demand]) -> dict[int, float]:
        """Split the site budget, then hold each board under its own limit: a board over it gets its
        limit split among its connectors, and the rest of the site shares what is left."""
        strategy = self.site.strategy
        fixed: dict[int, float] = {}
        free = list(demands)
        left = budget
        for _ in range(len(self.board_limits) + 1):
            shares = split(left, free, strategy)
            totals: dict[str, float] = {}
            for dem in free:
                board = self.connectors[dem.key].board
                totals[board] = totals.get(board, 0.0) + shares[dem.key]
            over = next((b for b, limit in self.board_limits.items() if totals.get(b, 0.0) > limit + 1e-6), None)
            if over is None:
                return {**fixed, **shares}
            members = [dem for dem in free if self.connectors[dem.key].board == over]
            fixed.update(split(min(self.board_limits[over], left), members, strategy))
            left -= sum(fixed[dem.key] for dem in members)
            free = [dem for dem in free if self.connectors[dem.key].board != over]
        return {**fixed, **split(left, free, strategy)}

    def _smooth(self, demand: Demand, target: float, now: float) -> tuple[float, tuple[str, ...]]:
        """Anti-chatter: decreases at once, increases when worth it, no resume before min_pause_s."""
        cfg = self.site
        track = self._track[demand.key]
        reasons: list[str] = []
        power = target
        if target > track.power_w:
            if track.paused_at is not None and now - track.paused_at < cfg.min_pause_s:
                power = track.power_w
                reasons.append(f"held paused: resumes at least {cfg.min_pause_s:g} s after a pause")
            elif target - track.power_w < cfg.step_w and now - track.changed_at < cfg.hold_s:
                power = track.power_w
                reasons.append(f"increase of {target - track.power_w:.0f} W waits (anti-chatter, {cfg.hold_s:g} s)")
        if power != track.power_w:
            if power <= 0 < track.power_w:
                track.paused_at = now
            elif power > 0:
                track.paused_at = None
            track.power_w, track.changed_at = power, now
        return power, tuple(reasons)


def _keep(spec: ConnectorSpec, ci: ConnectorInput, now: float) -> Bound | None:
    """No discharge below the user's floor (unknown SoC with a floor set: none at all, default deny), nor
    when what it would give back could not be recharged before departure (R84, R130, R135)."""
    if not spec.bidirectional:
        return None
    if ci.discharge_floor_pct is not None and (ci.soc_pct is None or ci.soc_pct <= ci.discharge_floor_pct):
        why = "state of charge unknown" if ci.soc_pct is None else f"SoC {ci.soc_pct:.0f} %"
        return Bound(
            KEEP, min_w=0.0, priority=prio.SAFETY, detail=f"discharge floor {ci.discharge_floor_pct:.0f} %: {why}"
        )
    if ci.deadline is not None and ci.needed_wh > 0:
        rechargeable_wh = max(0.0, ci.deadline - now) * ci.hardware_max_w / 3600.0
        if rechargeable_wh <= ci.needed_wh:
            return Bound(KEEP, min_w=0.0, priority=prio.SAFETY, detail="its departure needs every Wh it has")
    return None
