"""The scenario runner: the real firmware on the scenario's (simulated) boards, against simulated EVs
and a simulated site, in virtual time by default or in real time.

Connector ``n`` of a scenario is board instance ``n``: a multi-board site. Every board runs the real
connector firmware (state machine, supervisor, journal) on its mocked HAL; the EV models turn the
plants' knobs; the site model adds the building and the PV to the chargers' power at the connection
point. With ``site.energy_manager`` the real site energy manager (firmware.energy) runs beside them on
the same clock: it reads the site model's meter and the connectors, shares the grid limit among them
and discharges the site battery; with ``site.energy_manager.der`` each connector also runs the DER
grid-support functions on the site model's grid voltage and frequency. Everything lands in the trace;
the checks are evaluated on it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sqlite3
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from board.loader import resolve, shipped_boards
from firmware.connector import Connector, ConnectorSettings
from firmware.energy import bounds as energy_priority
from firmware.energy.bounds import Bound
from firmware.energy.der import DerController, DerOutput
from firmware.energy.manager import SITE_EMS, ConnectorSpec, CycleResult, EnergyManager, EssConfig, SiteConfig
from firmware.energy.site_controller import DER_PERIOD_S, SiteController
from firmware.iec61851.pilot import MIN_OFFER_A
from firmware.iso15118.ac_port import (
    ConnectorAcPort,
    NeedsFn,
    manager_discharge,
    needs_provider,
    share_setpoint,
    soc_provider,
)
from firmware.iso15118.config import SeccConfig
from firmware.iso15118.secc import Secc
from firmware.iso15118.session.iso20 import Iso20Config
from firmware.limits import Limit
from firmware.safety.faults import FaultCode
from firmware.simulation import SimulatedCharger
from hal.changes import wait_any
from hal.clock import RealClock, VirtualClock
from hal.sim.atm90e32 import Atm90e32Fault, Atm90e32Sim
from hal.sim.gpio_wiring import LockWiring
from hal.sim.plant import Plant
from hil.backend import Backend
from hil.expect import CheckResult, RunFacts, evaluate
from hil.j3072 import J3072Rig, pev_lfdi
from hil.models.ev import CHARGE_EFFICIENCY, AcEv
from hil.models.ev import TRACE_PERIOD_S as EV_TRACE_PERIOD_S
from hil.models.evcc import Evcc, EvccConfig, EvccConfigError, EvccHooks, EvccResult, PowerDraw, V2gChannel
from hil.models.evcc_config import EvSpec as EvccEvSpec
from hil.models.evcc_link import EvEnd, memory_pair
from hil.models.j3072_pev import ISM as J3072_CERTIFIED_ISM
from hil.models.j3072_pev import J3072Pev
from hil.scenario import (
    EV_FAULTS,
    CheckSpec,
    EnergyManagerSpec,
    EventSpec,
    EvSpec,
    Scenario,
    ScenarioError,
    der_settings,
)
from hil.site import Site
from hil.trace import TRACE_FORMAT, TraceWriter

#: EV and site models are stepped this often (virtual or real seconds).
MODEL_STEP_S = 0.1
#: In virtual time, a model step in which nothing can change is skipped, but not for longer than this
#: (the battery, its taper and the power trace still move).
MODEL_IDLE_STEP_S = 1.0
#: Power and site power are traced at most this often when steady (changes are traced at once).
POWER_TRACE_PERIOD_S = 1.0
#: Residual current injected by the ``rcd_trip`` fault (above the 6 mA DC and 30 mA AC thresholds).
RCD_FAULT_MA = 40.0
#: An ``energy`` cycle record is written when the chargers' budget moved more than this (W) and more
#: than ENERGY_TRACE_SHARE of itself, or a share moved more than this, or the fallback or the
#: battery's power changed: one record per real change, not one per cycle.
ENERGY_TRACE_W = 100.0
ENERGY_TRACE_SHARE = 0.01
#: The site battery is traced when its power changes, and at least this often while it holds.
BATTERY_TRACE_PERIOD_S = 60.0

#: From the plug-in to the ISO 15118 EV's first message: what SLAC (ISO 15118-3) and SDP take on a real
#: power-line link, which the in-memory link does not have. A model choice (a few seconds are usual); it
#: also lets the connector see state B before the EV's SessionSetupReq, as on a real charger.
HLC_LINK_DELAY_S = 2.0
#: An ISO 15118 EV's minimum SoC for bidirectional power (the EVCC never discharges below it), capped at
#: its target SoC.
HLC_MIN_SOC = 0.2
#: The least current an onboard charger runs at (IEC 61851-1 Table A.8: 6 A is the least a charger
#: offers), capped at the EV's maximum.
HLC_MIN_CURRENT_A = 6.0

#: A J3072 EV's inverter rating and reserve unless its scenario entry says otherwise (an L2 onboard
#: inverter: 7.2 kW; the PEV keeps a fifth of its battery for driving).
J3072_INVERTER_KW = 7.2
J3072_RESERVE_SOC = 0.2
#: The energy manager's connector input that carries a frequency-regulation signal.
REGULATION = "regulation"
#: A regulation signal's default period: AGC frequency regulation moves every few seconds (seed 003).
REGULATION_PERIOD_S = 2.0

LineSink = Callable[[dict[str, Any]], None]


class HlcEv(AcEv):
    """An AC EV with ISO 15118 high-level communication on a simulated plant.

    The plug, the cable's PP coding, the pilot diode and the EV's fault knobs are :class:`AcEv`'s. What
    the PWM EV derives from the duty cycle comes from the EV's EVCC here (:class:`hil.models.evcc.Evcc`,
    one run per plug-in, through :class:`~hil.models.evcc.EvccHooks`): the pilot state it applies (B, C
    after PowerDelivery(Start)) and the current it draws per phase, which flows only while the charger's
    contacts are closed and the EV shows C. The battery is the EVCC's own (its SoC decides when the EV
    stops; it has no charging losses): the ``soc`` records and :attr:`energy_wh` follow it, and the next
    plug-in starts from where it ended. ``ev_state`` forcing, ``stuck_in_c``, ``pilot_short`` and
    ``overcurrent`` override the EVCC as they override the PWM EV's own choice."""

    def __init__(self, *, config: EvccConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.evcc: Evcc | None = None
        self._hlc_pilot = "B"
        self._hlc_a = 0.0  # per phase, signed (+ into the EV), as the EVCC draws it

    def new_evcc(self, clock: Any, hooks: EvccHooks) -> Evcc:
        """The EVCC of the next plug-in, its battery where the last one left it."""
        config = replace(self.config, ev=replace(self.config.ev, soc=self.soc))
        self.evcc = Evcc(config, clock=clock, hooks=hooks)
        return self.evcc

    # ------------------------------------------------------------------ the EVCC's hooks
    def hlc_pilot(self, state: str) -> None:
        """The EVCC switches its pilot resistor (B or C); ignored once unplugged."""
        self._hlc_pilot = state
        if self.plugged:
            self._settle_state()

    def hlc_power(self, draw: PowerDraw) -> None:
        """What the EVCC draws from now on (AC: ``current_a`` on each of its phases)."""
        self._hlc_a = draw.current_a if draw.phases else 0.0
        if self.plugged:
            self._apply_current()

    # ------------------------------------------------------------------ the model
    def plug_in(self, now: float) -> None:
        self._hlc_pilot, self._hlc_a = "B", 0.0
        super().plug_in(now)

    def step(self, now: float) -> None:
        self._last_t = now
        if not self.plugged:
            return
        self._sync_battery()
        self._settle_state()
        self._apply_current()

    def next_due(self, now: float) -> float | None:
        """Only the periodic ``soc`` record: the EVCC's hooks change the plant themselves."""
        if not self.plugged or self._last_trace_t is None:
            return None
        due = self._last_trace_t + EV_TRACE_PERIOD_S
        return due if due > now else None

    def _sync_battery(self) -> None:
        context = self.evcc.context if self.evcc is not None else None
        if context is None:
            return
        context.settle()  # the energy of the power in force up to now
        soc = context.battery.soc
        self._energy_wh += (soc - self._soc) * self.battery_kwh * 1000.0
        self._soc = soc

    def _settle_state(self) -> None:
        if self._forced is not None:
            state = self._forced
        elif self._stuck_in_c:
            state = "C"
        else:
            state = self._hlc_pilot
        if state != self._state:
            self._state = state
            self._dirty = True
        self._apply_state()

    def _apply_current(self) -> None:
        closed = self.plant.contacts_closed
        if self._overcurrent_a is not None:
            amps = self._overcurrent_a if closed else 0.0
        elif self._state == "C" and closed and not self._pilot_shorted:
            amps = self._hlc_a
        else:
            amps = 0.0
        self._set_current(amps)


class TracedAcPort(ConnectorAcPort):
    """The SECC's AC port over the connector (what :meth:`Secc.for_connector` builds), telling the rig of
    every PowerDelivery the session passes to the connector, and whether the charger granted it."""

    def __init__(self, *args: Any, on_power_delivery: Callable[[bool, bool], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_power_delivery = on_power_delivery

    def power_delivery(self, start: bool, schedule_id: int | None) -> bool:
        granted = super().power_delivery(start, schedule_id)
        self.on_power_delivery(start, granted)
        return granted


@dataclass
class HlcConnector:
    """One connector's SECC, its port and the plug-in being played there (the EV's session task, the
    in-memory links it opened and the SECC's task serving each)."""

    secc: Secc
    port: TracedAcPort
    session: asyncio.Task[None] | None = None
    cut: str = "unplugged"  # why the rig cut the plug-in's session short: unplugged, or the run ended
    links: list[EvEnd] = field(default_factory=list)
    serving: list[asyncio.Task[None]] = field(default_factory=list)


class TracedSiteController(SiteController):
    """The firmware's site controller, with ``on_der`` called right after every DER tick (the grid
    check every ``der_period_s``) with the connectors' DER outputs of that tick: the rig traces a
    changed DER window at the instant the controller computed it, not at the next cycle or poll."""

    def __init__(self, *args: Any, on_der: Callable[[dict[int, DerOutput]], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_der = on_der

    def der_tick(self) -> bool:
        urgent = super().der_tick()
        if self.on_der is not None:
            self.on_der(self.der_outputs)
        return urgent


@dataclass
class RunResult:
    passed: bool
    checks: list[CheckResult]
    summary: dict[str, Any]
    out_dir: Path


class ScenarioRun:
    def __init__(
        self,
        scenario: Scenario,
        base_dir: Path,
        out_dir: Path,
        *,
        realtime: bool = False,
        on_line: LineSink | None = None,
    ) -> None:
        self.scenario = scenario
        self.base_dir = base_dir
        self.out_dir = out_dir
        self.realtime = realtime or scenario.time == "realtime"
        self.on_line = on_line
        self.clock: VirtualClock | RealClock = RealClock() if self.realtime else VirtualClock()
        self.t0 = 0.0
        self.trace = TraceWriter(out_dir / "trace.jsonl")
        self.site = Site(scenario.site, base_dir)
        self.chargers: dict[int, SimulatedCharger] = {}
        self.evs: dict[str, AcEv] = {}
        self.ev_plants: dict[str, Plant] = {}
        self._last_power: dict[str, tuple[float, float]] = {}
        self._last_site: tuple[float, float | None] = (-1e9, None)
        self.backend: Backend | None = None
        self._actions: list[asyncio.Task[None]] = []
        # The site energy manager (site.energy_manager), its controller and its task.
        self.energy: EnergyManager | None = None
        self.site_controller: SiteController | None = None
        self._energy_task: asyncio.Task[None] | None = None
        self._site_meter_ok = True
        self.energy_cycles = 0
        self._last_energy: dict[str, Any] | None = None
        self._last_battery: tuple[float, float] | None = None  # (t, W) of the last battery record
        # The DER functions (site.energy_manager.der): one controller per connector, the nominal voltage
        # the site's grid voltage is divided by, and each connector's last traced window.
        self.der: dict[int, DerController] = {}
        self._der_v_nom = 230.0
        self._last_der: dict[int, tuple[float, float, str | None]] = {}
        # The SECC of each connector with an ISO 15118 EV (evs[].protocol), and its plug-ins.
        self.hlc: dict[int, HlcConnector] = {}
        # SAE J3072 (site.j3072): a session per connector with a j3072 EV, stepped by its own task.
        self.j3072: J3072Rig | None = None
        self._j3072_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ time
    def now(self) -> float:
        return self.clock.monotonic() - self.t0

    async def advance_to(self, t: float) -> None:
        delta = t - self.now()
        if delta <= 0:
            return
        if isinstance(self.clock, VirtualClock):
            await self.clock.advance(delta)
        else:
            await self.clock.sleep(delta)

    def _write(self, src: str, ev: str, **data: Any) -> None:
        self.trace.write(self.now(), src, ev, **data)
        if self.on_line is not None:
            self.on_line(self.trace.records[-1])

    # ------------------------------------------------------------------ set-up
    def _board_path(self) -> Path:
        board = self.scenario.board
        if board in shipped_boards():
            return resolve(board)
        return (self.base_dir / board).resolve()

    def _sink(self, n: int) -> Callable[[str, dict[str, Any]], None]:
        src = f"connector{n}"

        def sink(kind: str, data: dict[str, Any]) -> None:
            before = len(self.trace.records)
            self.trace.connector_event(self.now(), src, kind, data)
            if self.on_line is not None:
                for record in self.trace.records[before:]:
                    self.on_line(record)

        return sink

    async def start(self) -> None:
        self.t0 = self.clock.monotonic()
        self._write(
            "rig",
            "header",
            format=TRACE_FORMAT,
            scenario=self.scenario.name,
            board=self.scenario.board,
            time="realtime" if self.realtime else "virtual",
        )
        settings = self.scenario.settings
        for n in range(1, self.scenario.connectors + 1):
            charger = SimulatedCharger(
                self._board_path(),
                journal_path=self.out_dir / f"journal-{n}.db",
                settings=ConnectorSettings(free_charging=settings.free_charging, fallback_a=settings.fallback_a),
                on_event=self._sink(n),
                clock=self.clock,
                journal_wall_clock=self.now,
            )
            self.chargers[n] = charger
            await charger.open_hal()
            for i, voltage in enumerate(charger.plant.grid_voltage_v):
                charger.plant.grid_voltage_v[i] = self.site.voltage_v if voltage else voltage
            charger.plant.grid_frequency_hz = self.site.frequency_hz
            await charger.boot()
        if self.scenario.backend.kind != "none":
            self.backend = Backend(
                self.scenario.backend,
                self.clock,
                self.t0,
                self.out_dir,
                lambda src, ev, fields: self._write(src, ev, **fields),
            )
            await self.backend.start(self.chargers)
        for spec in self.scenario.evs:
            self.evs[spec.id] = self._make_ev(spec)
        self.build_energy_manager()
        await self._start_seccs()

    # ------------------------------------------------------------------ the site energy manager
    def build_energy_manager(self) -> None:
        """The site energy manager over every charger (``site.energy_manager``): one connector per
        charger, each its own board (``board<n>``) with the board's phases and nominal voltage."""
        site = self.scenario.site
        spec = site.energy_manager if site is not None else None
        if site is None or spec is None:
            return
        assert site.grid_limit_kw is not None  # the scenario's validation requires it
        battery = self.site.battery
        config = SiteConfig(
            grid_import_max_w=site.grid_limit_kw * 1000,
            strategy=spec.strategy,
            period_s=spec.period_s,
            meter_timeout_s=spec.meter_timeout_s,
            fallback_ev_total_w=spec.fallback_ev_total_kw * 1000,
            ems_fallback_import_w=spec.ems_fallback_kw * 1000 if spec.ems_fallback_kw is not None else None,
            ess=EssConfig(battery.max_discharge_w, battery.reserve_wh) if battery is not None else None,
            step_w=spec.step_kw * 1000,
            hold_s=spec.hold_s,
            min_pause_s=spec.min_pause_s,
        )
        priority = {ev.connector: ev.priority for ev in self.scenario.evs}
        # A connector whose EV is bidirectional (ISO 15118-20 AC_BPT) may discharge once authorised.
        bidirectional = {ev.connector for ev in self.scenario.evs if ev.energy == "AC_BPT" or ev.j3072}
        connectors = {}
        specs = {}
        for n, charger in self.chargers.items():
            assert charger.connector is not None, "boot the chargers first"
            ratings = charger.config.ratings
            specs[n] = ConnectorSpec(
                n,
                f"board{n}",
                ratings.phases,
                ratings.nominal_voltage_v,
                bidirectional=n in bidirectional,
                priority=priority.get(n, 0),
                phase_switching=charger.config.phase_switch is not None,
            )
            connectors[n] = charger.connector
        self.energy = EnergyManager(config, specs)
        # The EVs' departures and energy needs reach the manager only when a scenario gives them.
        departures = any(ev.departure is not None for ev in self.scenario.evs)
        self.der = self._der_controllers(spec)
        der_period = DER_PERIOD_S
        for controller in self.der.values():
            ffr = controller.settings.ffr
            if ffr is not None:  # sample at least as often as FFR's deadline budget assumes
                der_period = min(der_period, ffr.sample_period_s)
        self.site_controller = TracedSiteController(
            self.energy,
            connectors,
            clock=self.clock,
            site_meter=self._read_site_meter,
            on_cycle=self._on_cycle,
            needs=self._needs(departures),
            der=self.der or None,
            grid=self._grid if self.der else None,
            der_period_s=der_period,
            on_der=self._on_der,
            discharge_floor=self._discharge_floor,
            soc=self._ev_soc if bidirectional else None,
            bidirectional=self._carries_sign if bidirectional else None,
        )
        self._build_j3072(connectors)

    def _build_j3072(self, connectors: dict[int, Connector]) -> None:
        """The J3072 sessions of the connectors with a j3072 EV (hil/j3072.py), wired like evse run's."""
        site = self.scenario.site
        if site is None or site.j3072 is None:
            return
        assert self.energy is not None and self.site_controller is not None
        start = _epoch(self.scenario.backend.start)
        self.j3072 = J3072Rig(
            site.j3072,
            frequency_hz=site.frequency_hz,
            voltage_v=site.voltage_v,
            clock=self.clock,
            wall_clock=lambda: start + self.now(),
            write=lambda src, ev, fields: self._write(src, ev, **fields),
        )
        # As evse run --j3072 wires it: an authorised PEV keeps the least PWM offer (firmware/j3072/service.py).
        gated = {spec.connector for spec in self.scenario.evs if spec.j3072}
        self.site_controller.offer_floor = lambda key: MIN_OFFER_A if key in gated else 0.0
        for spec in self.scenario.evs:
            if spec.j3072:
                session = self.j3072.attach(
                    spec.connector, connectors[spec.connector], self.energy, self.site_controller
                )
                ev = self.evs[spec.id]
                assert isinstance(ev, J3072Pev)
                ev.link = session.resources

    def _discharge_floor(self, connector: int) -> float | None:
        """The user's discharge floor (%) of the EV on ``connector`` (evs[].discharge_floor)."""
        spec = next((ev for ev in self.scenario.evs if ev.connector == connector), None)
        return spec.discharge_floor * 100 if spec is not None and spec.discharge_floor is not None else None

    def _ev_soc(self, connector: int, now: float) -> float | None:
        """The EV's SoC as its ISO 15118-20 session told the connector's AC port (None without one)."""
        return soc_provider({n: c.port for n, c in self.hlc.items()})(connector, now)

    def _carries_sign(self, connector: int) -> bool:
        if self.j3072 is not None and connector in self.j3072.sessions:
            return self.j3072.authorised(connector)
        hlc = self.hlc.get(connector)
        return hlc is not None and hlc.port.bidirectional

    def _der_controllers(self, spec: EnergyManagerSpec) -> dict[int, DerController]:
        """One DER controller per connector from ``site.energy_manager.der``; where the mapping has no
        ``p_rated_w``, ``v_nom_v`` or ``f_nom_hz``, the board's rating (its ``max_power_w``, else
        current x phases x nominal voltage), nominal voltage and grid frequency."""
        if spec.der is None:
            return {}
        controllers = {}
        for n, charger in self.chargers.items():
            ratings = charger.config.ratings
            rating_w = ratings.max_power_w or ratings.max_current_a * ratings.phases * ratings.nominal_voltage_v
            try:
                settings = der_settings(
                    spec.der,
                    p_rated_w=rating_w,
                    v_nom_v=ratings.nominal_voltage_v,
                    f_nom_hz=float(ratings.grid_frequency_hz),
                )
            except ValueError as exc:
                board = charger.config.board.name
                raise ScenarioError(
                    self.scenario.name,
                    [f"site.energy_manager.der on connector {n} (board {board}, rating {rating_w:g} W): {exc}"],
                ) from exc
            controllers[n] = DerController(settings, in_service=spec.der_in_service)
            self._der_v_nom = settings.v_nom_v
        return controllers

    def _grid(self) -> tuple[float, float]:
        """What the DER functions measure: the site's grid voltage (p.u. of the DER nominal voltage: the
        board's unless the scenario's der mapping sets v_nom_v) and frequency."""
        return self.site.voltage_v / self._der_v_nom, self.site.frequency_hz

    def _on_der(self, outputs: dict[int, DerOutput]) -> None:
        """After every DER tick: a ``der`` record for each connector whose window or trip changed."""
        for n in sorted(outputs):
            out = outputs[n]
            key = (round(out.p_max_w, 1) + 0.0, round(out.p_min_w, 1) + 0.0, out.trip)  # + 0.0: no "-0.0"
            if self._last_der.get(n) == key:
                continue
            self._last_der[n] = key
            self._write(
                "energy", "der", connector=n, p_max_W=key[0], p_min_W=key[1], trip=out.trip, reasons=list(out.reasons)
            )

    def _needs(self, departures: bool) -> NeedsFn | None:
        """What the manager learns of the EVs' needs: the scenario's departures and energy needs (the
        user's preferences) when it gives them, else what an ISO 15118 EV said in its session (its
        departure and energy request, through the SECC's port)."""
        user = self._ev_needs if departures else None
        if not any(spec.hlc for spec in self.scenario.evs):
            return user

        def needs(connector: int, now: float) -> tuple[float, float | None]:
            return needs_provider({n: c.port for n, c in self.hlc.items()}, user)(connector, now)

        return needs

    def _ev_needs(self, connector: int, now: float) -> tuple[float, float | None]:
        """The user's preferences of the EV on ``connector``: the energy it still needs from the charger
        (Wh: its need less what it drew, the battery's energy over the charging efficiency) and its
        departure (the clock's time); (0, None) for an EV without them."""
        for spec in self.scenario.evs:
            if spec.connector == connector and spec.departure is not None and spec.energy_need_kwh is not None:
                ev = self.evs[spec.id]
                # An ISO 15118 EV's battery (the EVCC's) has no charging losses.
                drawn_wh = ev.energy_wh if isinstance(ev, HlcEv) else ev.energy_wh / CHARGE_EFFICIENCY
                return max(0.0, spec.energy_need_kwh * 1000 - drawn_wh), self.t0 + spec.departure
        return 0.0, None

    def chargers_w(self) -> float:
        """What the chargers draw together now (the plants' power behind closed contacts)."""
        return sum(sum(c.plant.power_w()) for c in self.chargers.values() if c.plant.contacts_closed)

    def _read_site_meter(self) -> float | None:
        """The site meter the controller reads at the start of every cycle, None while the scenario has
        it silent. It sits at the connection point (``site_power`` W, the grid limit checks): it sees the
        building, the PV, the chargers and the battery's discharge; the manager adds the discharge it
        commanded back (``SiteConfig.meter_includes_ess``) so the battery is not counted twice. The
        battery's stored energy goes to the manager here too, so that each cycle sees it up to date."""
        now = self.now()
        battery = self.site.battery
        if battery is not None and self.energy is not None:
            battery.advance(now)
            self.energy.ess_state(battery.stored_wh)
        if not self._site_meter_ok:
            return None
        return self.site.power(now, self.chargers_w()).W

    def _on_cycle(self, result: CycleResult) -> None:
        """After each cycle: the battery takes the manager's discharge setpoint; the trace gets the cycle
        (when something changed), the battery and the site power (which the battery moves)."""
        self.energy_cycles += 1
        now = self.now()
        battery = self.site.battery
        if battery is not None:
            battery.set_power(result.ess_w, now)
            self._trace_battery()
        budget = result.budget_w if math.isfinite(result.budget_w) else None
        record: dict[str, Any] = {
            "budget_W": round(budget, 1) if budget is not None else None,
            "fallback": result.fallback,
            "ess_W": round(result.ess_w, 1),
            "shares": {str(k): round(r.power_w, 1) for k, r in sorted(result.connectors.items())},
            "paused": sorted(k for k, r in result.connectors.items() if r.paused),
        }
        if _energy_changed(self._last_energy, record):
            self._write("energy", "cycle", **record)
            self._last_energy = record
        self._trace_site(now, self.chargers_w(), force=battery is not None)

    def _trace_battery(self, *, force: bool = False) -> None:
        battery = self.site.battery
        if battery is None:
            return
        now = self.now()
        battery.advance(now)
        last = self._last_battery
        if force or last is None or abs(battery.power_w - last[1]) > 1.0 or now - last[0] >= BATTERY_TRACE_PERIOD_S:
            kwh = battery.stored_wh / 1000
            self._write("site", "battery", soc=round(battery.soc, 6), W=round(battery.power_w, 1), kwh=round(kwh, 4))
            self._last_battery = (now, battery.power_w)

    async def _stop_energy(self) -> None:
        for task in (self._energy_task, self._j3072_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._energy_task = self._j3072_task = None

    def _make_ev(self, spec: EvSpec) -> AcEv:
        common: dict[str, Any] = {
            "ev_id": spec.id,
            "battery_kwh": spec.battery_kwh,
            "soc": spec.soc,
            "target_soc": spec.target_soc,
            "max_current_a": spec.max_current_a,
            "phases": spec.phases,
            "cable_a": spec.cable_a,
            "taper_from_soc": spec.taper_from_soc,
        }
        ev: AcEv
        if spec.hlc:
            ev = HlcEv(config=self._evcc_config(spec), **common)
        elif spec.j3072:
            ev = J3072Pev(
                ism=spec.ism or J3072_CERTIFIED_ISM,
                inverter_w=(spec.inverter_kw if spec.inverter_kw is not None else J3072_INVERTER_KW) * 1000,
                reserve_soc=spec.reserve_soc if spec.reserve_soc is not None else J3072_RESERVE_SOC,
                misbehave=spec.misbehave or "none",
                lfdi=pev_lfdi(spec.id),
                behaviour=spec.behaviour,
                response_s=spec.response_s,
                **common,
            )
        else:
            ev = AcEv(behaviour=spec.behaviour, response_s=spec.response_s, **common)
        charger = self.chargers[spec.connector]
        # The simulated meter integrates energy up to "now" with the old current before the EV changes
        # it, so the metered energy matches the EV's own to the step.
        meter_sync = None
        if charger.hal is not None and charger.hal.sim is not None:
            meter_sync = getattr(charger.hal.sim.meter, "sync", None)  # SimWorld.meter: any meter simulator
        ev.attach(charger.plant, before_current_change=meter_sync)
        self.ev_plants[spec.id] = charger.plant
        return ev

    # ------------------------------------------------------------------ ISO 15118 EVs
    def _evcc_config(self, spec: EvSpec) -> EvccConfig:
        """The EVCC of an ISO 15118 EV from its scenario entry (one protocol offered: the scenario's)."""
        try:
            ev = EvccEvSpec(
                battery_kwh=spec.battery_kwh,
                soc=spec.soc,
                target_soc=spec.target_soc,
                min_soc=min(HLC_MIN_SOC, spec.target_soc),
                taper_from_soc=spec.taper_from_soc,
                ac_phases=spec.phases,
                ac_max_current_a=spec.max_current_a,
                ac_min_current_a=min(HLC_MIN_CURRENT_A, spec.max_current_a),
            )
            if spec.departure is not None:  # the user's departure, as the EV tells it in its session
                ev = replace(ev, departure_in_s=round(spec.departure - spec.plug_in))
            return EvccConfig(
                ev=ev,
                protocols=(spec.protocol,),
                energy=spec.energy_transfer,
                control_mode=spec.control_mode or "scheduled",
            )
        except EvccConfigError as exc:
            raise ScenarioError(self.scenario.name, [f"evs {spec.id}: the EVCC refuses it: {exc}"]) from exc

    async def _start_seccs(self) -> None:
        """A SECC (firmware.iso15118.secc) on every connector with an ISO 15118 EV: from now on the
        connector asks for HLC (5 % duty from the plug-in; the contactor waits for PowerDelivery)."""
        for spec in self.scenario.evs:
            if not spec.hlc or spec.connector in self.hlc:
                continue
            n = spec.connector
            connector = self.chargers[n].connector
            assert connector is not None, "boot the chargers first"
            ratings = connector.hal.config.ratings
            if ratings.supply != "ac":
                raise ScenarioError(
                    self.scenario.name,
                    [f"evs {spec.id}: an ISO 15118 EV needs an AC board; {self.scenario.board} is {ratings.supply}"],
                )
            config = SeccConfig(
                interface=f"sim{n}",  # never opened: the rig hands the SECC in-memory connections
                evse_id=f"ZZ*HIL*E{n:05d}",
                connector=n,
                # The in-memory link has no TLS: ISO 15118-20 runs on it as with a lab EV (the
                # configuration's iso20.require_tls = false), AC_BPT offered for a bidirectional EV.
                iso20_require_tls=False,
                iso20=Iso20Config(bidirectional=spec.energy == "AC_BPT"),
                source=f"{self.scenario.name}: connector {n}",
            )
            discharge = manager_discharge(self.energy, n, self.clock) if self.energy is not None else None
            controller = self.site_controller
            setpoint = share_setpoint(controller.setpoint, n) if controller is not None else None
            port = TracedAcPort(
                connector,
                evse_id=config.evse_id,
                discharge_allowance=discharge,
                setpoint=setpoint,
                on_power_delivery=self._power_delivery_sink(n),
            )
            secc = Secc(config, clock=connector.clock, connector=connector, ac_port=port, on_event=self._secc_sink(n))
            await secc.start(listen=False)
            self.hlc[n] = HlcConnector(secc, port)

    def _connector_of(self, ev_id: str) -> int:
        """The EV's connector (an action's own ``connector`` field defaults to 1 whatever the EV)."""
        return next(spec.connector for spec in self.scenario.evs if spec.id == ev_id)

    def _secc_sink(self, n: int) -> Callable[[str, dict[str, Any]], None]:
        """The SECC's events as ``v2g`` and ``hlc`` records of ``connector<n>`` (docs/hil-formats.md)."""
        src = f"connector{n}"

        def sink(kind: str, data: dict[str, Any]) -> None:
            if kind in ("v2g", "hlc"):
                self._write(src, kind, **{k: v for k, v in data.items() if k not in ("t", "connector")})

        return sink

    def _power_delivery_sink(self, n: int) -> Callable[[bool, bool], None]:
        src = f"connector{n}"

        def sink(start: bool, granted: bool) -> None:
            self._write(src, "hlc", action="power_delivery", start=start, granted=granted)

        return sink

    def _plug_in_hlc(self, ev: HlcEv, n: int) -> None:
        """The plug-in of an ISO 15118 EV: after the link delay its EVCC opens in-memory connections to the
        connector's SECC (one per session; a resumed session opens another) and plays the plug-in."""
        hlc = self.hlc[n]
        plant = self.ev_plants[ev.ev_id]

        def pilot(state: str) -> None:
            before = plant.ev_state
            ev.hlc_pilot(state)
            if plant.ev_state != before:
                self._write(ev.ev_id, "ev_state", state=plant.ev_state)

        evcc = ev.new_evcc(self.clock, EvccHooks(pilot=pilot, power=ev.hlc_power))

        async def connect() -> V2gChannel:
            ev_end, secc_end = memory_pair(self.clock)
            hlc.links.append(ev_end)
            hlc.serving.append(asyncio.ensure_future(hlc.secc.serve(secc_end)))
            return ev_end

        def ended(result: EvccResult) -> bool:
            return result.stop_reason is not None or result.error is not None

        async def play() -> None:
            result: EvccResult | None = None
            try:
                await self.clock.sleep(HLC_LINK_DELAY_S)
                result = await evcc.run(connect)
            finally:
                context = evcc.context
                if result is None and context is not None:
                    result = context.result  # unplugged (cancelled) on the way
                if result is not None:
                    self._write(ev.ev_id, "evcc", **_evcc_fields(result, None if ended(result) else hlc.cut))

        hlc.session = asyncio.ensure_future(play())

    async def _end_hlc(self, n: int, cut: str = "unplugged") -> None:
        """The EV left (``cut`` "unplugged") or the run ends ("run ended"): its EVCC stops, its links close
        (the SECC sees the connection end, ends the session and switches the power off), the SECC's
        serving tasks finish."""
        hlc = self.hlc.get(n)
        if hlc is None:
            return
        hlc.cut = cut
        task, hlc.session = hlc.session, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        links, hlc.links = hlc.links, []
        for link in links:
            await link.close()
        serving, hlc.serving = hlc.serving, []
        for serve in serving:
            with contextlib.suppress(asyncio.CancelledError):
                await serve

    # ------------------------------------------------------------------ the run
    def schedule(self) -> list[tuple[float, int, EventSpec]]:
        actions: list[tuple[float, int, EventSpec]] = []
        order = 0
        for spec in self.scenario.evs:
            actions.append(
                (
                    spec.plug_in,
                    order,
                    EventSpec(at=spec.plug_in, action="plug_in", ev=spec.id, connector=spec.connector),
                )
            )
            order += 1
            if spec.unplug is not None:
                actions.append(
                    (
                        spec.unplug,
                        order,
                        EventSpec(at=spec.unplug, action="unplug", ev=spec.id, connector=spec.connector),
                    )
                )
                order += 1
        for event in self.scenario.events:
            actions.append((event.at, order, event))
            order += 1
        return sorted(actions, key=lambda a: (a[0], a[1]))

    async def model_loop(self) -> None:
        """Step the EV and site models on a grid of MODEL_STEP_S. In virtual time, steps in which nothing
        can change are skipped: the loop sleeps until a board's inputs change (hal.changes: the pilot,
        the contacts), a model's own timer falls due (AcEv.next_due, a site profile step) or
        MODEL_IDLE_STEP_S passed, and then steps at the next grid point, as the every-step loop would."""
        signals = [c.plant.changes for c in self.chargers.values()] if isinstance(self.clock, VirtualClock) else []
        start = self.clock.monotonic()
        tick = 0
        while True:
            self.step_models()
            if not signals:
                await self.clock.sleep(MODEL_STEP_S)
                continue
            watched = [(signal, signal.count) for signal in signals]  # after the step: its own changes do not count
            now = self.clock.monotonic()
            wake = now + MODEL_IDLE_STEP_S
            for ev in self.evs.values():
                due = ev.next_due(now)
                wake = min(wake, due) if due is not None else wake
            site_due = self.site.next_change(now - self.t0)
            wake = min(wake, site_due + self.t0) if site_due is not None else wake
            tick = max(tick + 1, math.ceil((wake - start) / MODEL_STEP_S - 1e-6))
            if await wait_any(watched, self.clock, start + tick * MODEL_STEP_S - now):
                # Something changed between steps: step at the next grid point.
                tick = math.floor((self.clock.monotonic() - start) / MODEL_STEP_S + 1e-6) + 1
                await self.clock.sleep(start + tick * MODEL_STEP_S - self.clock.monotonic())
            elif self.clock.monotonic() < start + tick * MODEL_STEP_S - 1e-9:
                await self.clock.sleep(start + tick * MODEL_STEP_S - self.clock.monotonic())

    def step_models(self) -> None:
        now = self.now()
        for ev_id, ev in self.evs.items():
            plant = self.ev_plants[ev_id]
            before = plant.ev_state
            ev.step(self.clock.monotonic())
            after = plant.ev_state
            if after != before:
                self._write(ev_id, "ev_state", state=after)
            for event in ev.trace_events(self.clock.monotonic()):
                src, kind = str(event.pop("src")), str(event.pop("ev"))
                self._write(src, kind, **event)
            if isinstance(ev, J3072Pev):
                for _, what, fields in ev.log:
                    self._write(ev_id, "pev", what=what, **fields)
                ev.log.clear()
        total = 0.0
        for n, charger in self.chargers.items():
            plant = charger.plant
            watts = sum(plant.power_w()) if plant.contacts_closed else 0.0
            total += watts
            src = f"connector{n}"
            last_t, last_w = self._last_power.get(src, (-1e9, float("nan")))
            if abs(watts - last_w) > max(1.0, 0.005 * abs(last_w)) or now - last_t >= POWER_TRACE_PERIOD_S:
                self._write(src, "power", W=round(watts, 3))
                self._last_power[src] = (now, watts)
        self._trace_site(now, total)
        if self.site.battery is not None:
            self._trace_battery()

    def _trace_site(self, now: float, chargers_w: float, *, force: bool = False) -> None:
        site = self.site.power(now, chargers_w)
        last_t, last_site = self._last_site
        changed = last_site is None or abs(site.W - last_site) > max(1.0, 0.005 * abs(last_site))
        if changed or now - last_t >= POWER_TRACE_PERIOD_S or (force and now > last_t):
            fields = asdict(site)
            if self.site.battery is not None:
                fields["battery_W"] = round(self.site.battery.power_w, 1)
            self._write("site", "site_power", **fields)
            self._last_site = (now, site.W)

    async def run(self) -> None:
        model_task = asyncio.create_task(self.model_loop())
        if self.site_controller is not None:
            # Its cycles sleep on the run's clock: in virtual time they fall due like every other timer. A
            # share it applies marks the connector dirty, which notifies the board's change signal: the
            # model loop wakes and the EV sees the new offer at the next model step.
            self._energy_task = asyncio.create_task(self.site_controller.run())
        if self.j3072 is not None:
            self._j3072_task = asyncio.create_task(self.j3072.run())
        try:
            self._write("site", "grid", V=self.site.voltage_v, Hz=self.site.frequency_hz)
            for t, _, event in self.schedule():
                await self.advance_to(t)
                self.act(event)
                self.step_models()
            await self.advance_to(self.scenario.duration)
            self._trace_battery(force=True)  # where the battery ended
        finally:
            await self._stop_energy()
            model_task.cancel()
            try:
                await model_task
            except asyncio.CancelledError:
                pass

    async def close(self) -> None:
        await self._stop_energy()
        for n in list(self.hlc):
            await self._end_hlc(n, "run ended")
            await self.hlc[n].secc.stop()
        for task in self._actions:
            task.cancel()
        for task in self._actions:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.backend is not None:
            await self.backend.close()
        for charger in self.chargers.values():
            await charger.close()
        self.trace.close()

    # ------------------------------------------------------------------ actions
    def act(self, event: EventSpec) -> None:
        self._write("rig", "action", **_action_fields(event))
        charger = self.chargers.get(event.connector)
        connector = charger.connector if charger is not None else None
        ev = self.evs.get(event.ev) if event.ev else None
        clock_now = self.clock.monotonic()
        match event.action:
            case "plug_in":
                assert ev is not None
                ev.plug_in(clock_now)
                if isinstance(ev, HlcEv):
                    self._plug_in_hlc(ev, self._connector_of(ev.ev_id))
            case "unplug":
                assert ev is not None
                ev.unplug(clock_now)
                if isinstance(ev, HlcEv):
                    self._actions.append(asyncio.ensure_future(self._end_hlc(self._connector_of(ev.ev_id))))
            case "authorize":
                assert connector is not None
                connector.authorize(event.id_tag)
            case "deauthorize":
                assert connector is not None
                connector.deauthorize()
            case "pause":
                assert connector is not None
                connector.pause()
            case "resume":
                assert connector is not None
                connector.resume()
            case "limit":
                assert connector is not None and event.source is not None and event.amps is not None
                expires = clock_now + event.for_ if event.for_ is not None else None
                connector.set_limit(Limit(event.source, event.amps, expires_at=expires, detail="scenario"))
            case "clear_limit":
                assert connector is not None and event.source is not None
                connector.clear_limit(event.source)
            case "service_clear":
                assert connector is not None and event.code is not None
                connector.service_clear(FaultCode(event.code))
            case "ev_state":
                assert ev is not None and event.state is not None
                ev.force_state(event.state)
            case "grid":
                for c in self.chargers.values():
                    if event.voltage_v is not None:
                        c.plant.grid_voltage_v[:] = [event.voltage_v] * len(c.plant.grid_voltage_v)
                    if event.frequency_hz is not None:
                        c.plant.grid_frequency_hz = event.frequency_hz
                if event.voltage_v is not None:
                    self.site.voltage_v = event.voltage_v
                if event.frequency_hz is not None:
                    self.site.frequency_hz = event.frequency_hz
                self._write("site", "grid", V=self.site.voltage_v, Hz=self.site.frequency_hz)
            case "fault" | "clear":
                assert charger is not None and event.fault is not None
                self._fault(charger, ev, event, on=event.action == "fault")
            case "swipe" | "csms_call" | "csms_outage" | "csms_restore":
                assert self.backend is not None
                # An OCPP exchange takes its own (virtual) time: it runs beside the scenario.
                self._actions.append(asyncio.ensure_future(self.backend.act(event)))
            case (
                "ems_setpoint"
                | "demand_response"
                | "site_meter_outage"
                | "site_meter_restore"
                | "authorise_discharge"
                | "withdraw_discharge"
            ):
                self._energy_act(event, clock_now)
            case "backend_v2x":
                assert self.j3072 is not None and event.allowed is not None
                self.j3072.backend_v2x(event.connector, event.allowed)
            case "j3072_parameters":
                assert self.j3072 is not None and event.max_discharge_kw is not None
                self.j3072.new_parameters(event.connector, event.max_discharge_kw)
            case "regulation":
                self._actions.append(asyncio.ensure_future(self._regulate(event)))

    def _energy_act(self, event: EventSpec, clock_now: float) -> None:
        """The site EMS, a grid operator or the site meter acting on the energy manager."""
        if self.energy is None:
            raise RuntimeError(f"action {event.action!r} needs the site energy manager (site.energy_manager)")
        match event.action:
            case "ems_setpoint":
                assert event.import_max_kw is not None and event.valid is not None
                self.energy.set_site_input(
                    Bound(
                        SITE_EMS,
                        max_w=event.import_max_kw * 1000,
                        priority=energy_priority.EMS,
                        expires_at=clock_now + event.valid,
                        detail="site EMS setpoint (scenario)",
                    )
                )
            case "demand_response":
                assert event.reduce_kw is not None and event.for_ is not None
                self.energy.demand_response(
                    reduce_by_w=event.reduce_kw * 1000, until=clock_now + event.for_, now=clock_now
                )
            case "site_meter_outage":
                self._site_meter_ok = False
            case "site_meter_restore":
                self._site_meter_ok = True
            case "authorise_discharge":
                assert event.max_discharge_kw is not None
                self.energy.authorise_discharge(event.connector, event.max_discharge_kw * 1000, source="scenario (V2B)")
            case "withdraw_discharge":
                self.energy.authorise_discharge(event.connector, None)

    async def _regulate(self, event: EventSpec) -> None:
        """A frequency-regulation signal (an aggregator's AGC follow, seed 003): every ``period`` the
        connector's next value as a bound on its power in the energy manager, which keeps it within what
        the site and the discharge gate allow."""
        assert self.energy is not None and event.signal_kw is not None
        period = event.period if event.period is not None else REGULATION_PERIOD_S
        for kw in event.signal_kw:
            now = self.clock.monotonic()
            self.energy.set_connector_input(
                event.connector,
                Bound(
                    REGULATION,
                    min_w=-kw * 1000,
                    max_w=-kw * 1000,
                    priority=energy_priority.EMS,
                    expires_at=now + 2 * period,
                    detail=f"frequency regulation {kw:+.1f} kW (scenario)",
                ),
            )
            self._write("rig", "regulation", connector=event.connector, kW=kw)
            await self.clock.sleep(period)

    def _fault(self, charger: SimulatedCharger, ev: AcEv | None, event: EventSpec, *, on: bool) -> None:
        plant = charger.plant
        fault = event.fault
        if fault in EV_FAULTS:
            assert ev is not None
            if fault == "diode_short":
                ev.diode_short(on)
            elif fault == "pilot_short":
                ev.pilot_short(on)
            elif fault == "pp_open":
                ev.pp_open(on)
            elif fault == "pp_invalid":
                ev.pp_invalid(on)
            elif fault == "overcurrent":
                ev.overcurrent(event.amps if on else None)
            else:
                ev.stuck_in_c(on)
        elif fault == "welding":
            plant.contactor_welded = on
        elif fault == "contactor_stuck_open":
            plant.contactor_stuck_open = on
        elif fault == "rcd_trip":
            plant.residual_current_ma = RCD_FAULT_MA if on else 0.0
        elif fault == "overtemperature":
            assert event.sensor is not None
            plant.temperatures_c[event.sensor] = event.celsius if on and event.celsius is not None else 25.0
        elif fault == "meter_garbage":
            hal = charger.hal
            assert hal is not None and hal.sim is not None and hal.sim.meter is not None
            if isinstance(hal.sim.meter, Atm90e32Sim):
                hal.sim.meter.fault = Atm90e32Fault.GARBAGE if on else Atm90e32Fault.NONE
            else:  # hal.sim.sdm630.Sdm630Sim: answers that fail their CRC
                hal.sim.meter.corrupt_crc = on
        elif fault == "lock_jam":
            hal = charger.hal
            assert hal is not None and hal.sim is not None
            for part in hal.sim.wiring.parts:
                if isinstance(part, LockWiring):
                    part.jammed = on


def _energy_changed(last: dict[str, Any] | None, record: dict[str, Any]) -> bool:
    """Whether a cycle differs enough from the last traced one to be traced (see ENERGY_TRACE_W)."""
    if last is None or last["fallback"] != record["fallback"] or last["paused"] != record["paused"]:
        return True
    if abs(last["ess_W"] - record["ess_W"]) > 1.0:
        return True
    old, new = last["budget_W"], record["budget_W"]
    if (old is None) != (new is None):
        return True
    if old is not None and new is not None and abs(new - old) > max(ENERGY_TRACE_W, ENERGY_TRACE_SHARE * abs(old)):
        return True
    shares_old, shares_new = last["shares"], record["shares"]
    return any(abs(shares_new[k] - shares_old.get(k, 0.0)) > ENERGY_TRACE_W for k in shares_new)


def _check_params(spec: CheckSpec) -> dict[str, Any]:
    """A check's parameters as hil.expect.evaluate reports them."""
    params = spec.model_dump(exclude_none=True, exclude_defaults=True)
    params.pop("check", None)
    return params


def _evcc_fields(result: EvccResult, cut: str | None) -> dict[str, Any]:
    """An ``evcc`` record: how an ISO 15118 EV's plug-in ended, as its EVCC saw it (``cut``: why the rig
    cut its session short, None when it ended by itself)."""
    return {
        "protocol": result.protocol,
        "service": result.service,
        "control_mode": result.control_mode,
        "stop_reason": cut if cut is not None else result.stop_reason,
        "error": result.error,
        "pauses": result.pauses,
        "soc": round(result.soc_end, 4),
        "charged_wh": round(result.charged_wh, 3),
        "discharged_wh": round(result.discharged_wh, 3),
    }


def _action_fields(event: EventSpec) -> dict[str, Any]:
    fields = event.model_dump(exclude_none=True, by_alias=True)
    fields.pop("at", None)
    if "ev" in fields:
        fields["ev_id"] = fields.pop("ev")
    return fields


# ---------------------------------------------------------------------------------- outputs
def _journal_sessions(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM sessions ORDER BY started_at").fetchall()
    sessions = []
    for row in rows:
        row_d = dict(row)
        end = row_d["meter_stop_wh"] if row_d["meter_stop_wh"] is not None else row_d["last_meter_wh"]
        row_d["energy_wh"] = end - row_d["meter_start_wh"]
        sessions.append(row_d)
    return sessions


def _energy_summary(run: ScenarioRun) -> dict[str, Any]:
    """The energy manager's part of the summary (only when it ran)."""
    if run.energy is None:
        return {}
    records = run.trace.records
    cycles = [r for r in records if r["src"] == "energy" and r["ev"] == "cycle"]
    out: dict[str, Any] = {
        "energy_cycles": run.energy_cycles,
        "energy_fallbacks": sum(
            1 for a, b in zip([None, *cycles], cycles, strict=False) if b["fallback"] and not (a and a["fallback"])
        ),
    }
    ffr = [c.ffr for c in run.der.values() if c.ffr is not None]
    if ffr:
        out["ffr_activations"] = {str(n): c.ffr.activations for n, c in run.der.items() if c.ffr is not None}
        out["ffr_late_samples"] = sum(f.late_samples for f in ffr)
    battery = run.site.battery
    if battery is not None:
        out["battery_soc_end"] = round(battery.soc, 4)
        out["battery_soc_min"] = min((r["soc"] for r in records if r["ev"] == "battery"), default=None)
    return out


def write_junit(path: Path, scenario: Scenario, checks: list[CheckResult], seconds: float) -> None:
    suite = ET.Element(
        "testsuite",
        name=f"hil.{scenario.name}",
        tests=str(len(checks)),
        failures=str(sum(not c.passed for c in checks)),
        time=f"{seconds:.3f}",
    )
    for i, check in enumerate(checks):
        case = ET.SubElement(suite, "testcase", classname=f"hil.{scenario.name}", name=f"{i:02d}-{check.check}")
        if check.passed:
            ET.SubElement(case, "system-out").text = check.evidence
        else:
            ET.SubElement(case, "failure", message=check.evidence).text = json.dumps(check.params)
    tree = ET.ElementTree(suite)
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)


def prepare_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and drop the journals of an earlier run (a run starts with no sessions)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("journal-*.db*"):
        stale.unlink()


async def run_scenario(
    scenario: Scenario,
    base_dir: Path,
    out_dir: Path,
    *,
    realtime: bool = False,
    on_line: LineSink | None = None,
    report: bool = True,
) -> RunResult:
    prepare_out_dir(out_dir)
    wall = time.perf_counter()
    run = ScenarioRun(scenario, base_dir, out_dir, realtime=realtime, on_line=on_line)
    # The firmware's log goes into the run's directory (firmware.log), next to the trace.
    log_handler = logging.FileHandler(out_dir / "firmware.log", mode="w", encoding="utf-8")
    log_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(log_handler)
    try:
        await run.start()
        await run.run()
    finally:
        await run.close()
        root.removeHandler(log_handler)
        log_handler.close()
    return write_outputs(run, time.perf_counter() - wall, report=report)


def write_outputs(
    run: ScenarioRun,
    wall_s: float,
    *,
    report: bool = True,
    abort: str | None = None,
    extra: dict[str, Any] | None = None,
) -> RunResult:
    """Evaluate the checks on a finished run and write summary.json, junit.xml and report.html.

    ``abort`` (the evidence, e.g. ``"aborted: E-stop ..."``) marks a run that was cut short: it proves
    nothing, so every check fails with that evidence. ``extra`` adds fields to the summary."""
    scenario, out_dir = run.scenario, run.out_dir
    sessions = {n: _journal_sessions(out_dir / f"journal-{n}.db") for n in run.chargers}
    facts = RunFacts(
        scenario=scenario,
        records=run.trace.records,
        sessions=sessions,
        ev_connector={ev.id: ev.connector for ev in scenario.evs},
        backend_transactions=run.backend.transactions() if run.backend is not None else [],
    )
    if abort is None:
        checks = [evaluate(spec, facts) for spec in scenario.expect]
    else:
        checks = [CheckResult(spec.check, _check_params(spec), False, abort) for spec in scenario.expect]
    site = [r for r in run.trace.records if r["ev"] == "site_power"]
    summary: dict[str, Any] = {
        "format": TRACE_FORMAT,
        "scenario": scenario.name,
        "description": scenario.description,
        "board": scenario.board,
        "time": "realtime" if run.realtime else "virtual",
        "duration_s": scenario.duration,
        "wall_s": round(wall_s, 3),
        "speedup": round(scenario.duration / wall_s, 1) if wall_s > 0 else None,
        "passed": abort is None and all(c.passed for c in checks),
        "checks": [asdict(c) for c in checks],
        "sessions": [
            {
                "connector": n,
                "id": s["session_id"],
                "energy_wh": round(s["energy_wh"], 3),
                "reason": s["stop_reason"],
                "started_at": s["started_at"],
                "stopped_at": s["stopped_at"],
            }
            for n, rows in sessions.items()
            for s in rows
        ],
        "peak_site_power_w": max((r["W"] for r in site), default=None),
        "grid_limit_w": run.site.grid_limit_w,
        **_energy_summary(run),
        **(extra or {}),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    write_junit(out_dir / "junit.xml", scenario, checks, wall_s)
    if report:
        from hil.report import write_report

        write_report(out_dir, trace_path=out_dir / "trace.jsonl", summary=summary)
    return RunResult(summary["passed"], checks, summary, out_dir)


def _epoch(stamp: str) -> float:
    """Unix seconds of a scenario's ``backend.start`` (YYYY-MM-DDTHH:MM:SSZ)."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
