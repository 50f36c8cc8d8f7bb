"""One charging connector at run time: the HAL, the IEC 61851 machine, the supervisor, the limits
and the journal, on one asyncio loop and one injected clock.

Two tasks run while the connector is started:

* the **pilot loop**, every 10 ms (``PILOT_SAMPLE_PERIOD``): read the pilot and the RCD, classify and
  debounce the pilot, and when anything changed (or a machine deadline fell due) step the machine
  and apply its outputs at once, in the same task, so a C->B change reported by the HAL reaches the
  contactor without waiting for any other task;
* the **supervision loop**, every 100 ms: proximity, temperatures, contactor and lock feedback,
  co-processor and converter health, every second the meter (over-current, energy) and every 10 s
  the journal checkpoint.

Outputs are applied in a safe order: the contactor opens before the pilot changes; it closes only
after the pilot shows the offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from board.build import BoardHal
from firmware import limits as sources
from firmware.iec61851.machine import ConnectorMachine, Outputs
from firmware.iec61851.pilot import CpState, PilotDebouncer, PilotSample, classify, current_for_duty
from firmware.iec61851.timing import (
    PILOT_DEBOUNCE_POWER_DOWN,
    PILOT_DEBOUNCE_POWER_UP,
    PILOT_INVALID_FAULT_AFTER,
    PILOT_SAMPLE_PERIOD,
    T_MIRROR_SETTLE,
)
from firmware.journal import HardwareSnapshot, Journal, JournalError
from firmware.limits import Limit, LimitSet
from firmware.metering.plausibility import MeterGuard, PlausibilityLimits
from firmware.phase_switching import PhaseSequencer
from firmware.safety.faults import FaultCode
from firmware.safety.supervisor import (
    FaultEvent,
    OvercurrentCheck,
    Supervisor,
    ThermalCheck,
    UnauthorisedDischargeCheck,
)
from hal.clock import Clock
from hal.errors import HalError, ImplausibleReading
from hal.types import MeterReading, PilotMode

if TYPE_CHECKING:
    from firmware.metering.billing import Tariff

log = logging.getLogger(__name__)

SUPERVISION_PERIOD = 0.100
#: A loop sleeping until a deadline wakes this much after it, so that "deadline reached" holds
#: whatever rounding the clock's addition did (simulated boards only, see hal.changes).
DEADLINE_SLACK = 1e-6
METER_PERIOD = 1.0
#: The meter may fail to answer plausibly this long before charging stops (energy must be billed).
METER_COMM_TIMEOUT = 5.0
#: The co-processor link may fail this long before it is a fault (its own fail-safe acts at 1 s).
COPROCESSOR_COMM_TIMEOUT = 0.5
#: After a plausibility fault, readings must be plausible this long before it clears (no chatter on
#: a meter that alternates between good and bad answers).
METER_PLAUSIBLE_RECOVERY_S = 10.0
#: Journal checkpoint of the meter totals and a running session: a power loss loses at most this much
#: energy knowledge (at 22 kW, 61 Wh). Not every second: one synchronous SQLite commit per second is
#: 86 400 flash writes a day on an SD card or eMMC, and most of the simulation's run time.
CHECKPOINT_PERIOD = 10.0
#: Time the lock actuator needs before its feedback is judged (lock pulses are 0.4-0.6 s).
T_LOCK_SETTLE = 1.0
#: A failed RCD self-test is retried every 300 s, at most 6 times, while no EV is connected (OpenEVSE
#: retries its power-on self-test the same way, anchors.md 6).
RCD_SELFTEST_RETRY_PERIOD = 300.0
#: A lock that did not reach its position is driven again: 3 times 2 s apart, then every 30 s (a
#: jammed actuator must not be driven continuously: it would overheat).
LOCK_RETRIES = 3
LOCK_RETRY_PERIOD = 2.0
LOCK_RETRY_PERIOD_SLOW = 30.0
RCD_SELFTEST_RETRIES = 6


@dataclass
class ConnectorSettings:
    connector_id: int = 1
    #: Current used when an external limit (EMS, OCPP, user) expires: the "statically limited
    #: charging power" of seed requirement R142. 6 A, the lowest offer, unless configured.
    fallback_a: float = 6.0
    #: Offer without authorisation (free charging, the demo, a private wallbox).
    free_charging: bool = False
    #: Resume a session after a restart if its last checkpoint is younger than this.
    resume_within_s: float = 300.0
    #: The tariff fixed into each session's billing record at its start (None: energy only, no price).
    tariff: Tariff | None = None


@dataclass
class ConnectorStatus:
    state: str
    ev: str
    pilot_mode: str
    duty_permille: int
    offered_a: float | None
    contactor_closed: bool
    locked: bool
    effective_a: float
    why: str
    faults: list[str]
    session_id: str | None
    energy_wh: float | None
    meter: dict[str, Any] | None = field(default=None)
    phases: int = 3  # the phases that reach the socket now


EventSink = Callable[[str, dict[str, Any]], None]


class Connector:
    def __init__(
        self,
        hal: BoardHal,
        *,
        clock: Clock,
        journal: Journal | None = None,
        settings: ConnectorSettings | None = None,
        on_event: EventSink | None = None,
    ) -> None:
        self.hal = hal
        self.clock = clock
        self.journal = journal
        self.settings = settings or ConnectorSettings()
        self._emit_to = on_event
        self._listeners: list[EventSink] = []
        cfg = hal.config
        self.machine = ConnectorMachine(supports_state_e=hal.pilot.supports_state_e)
        self.machine.inputs.ventilation_available = cfg.safety.ventilation_available
        self.machine.inputs.authorized = self.settings.free_charging
        self.supervisor = Supervisor()
        self.limits = LimitSet(fallback_a=self.settings.fallback_a)
        self.limits.set(Limit(sources.BOARD, cfg.ratings.max_current_a, detail=f"board {cfg.board.name} rating"))
        # Default deny: nothing is offered before the proximity pilot has said which cable is in.
        self.limits.set(Limit(sources.CABLE, 0.0, detail="proximity pilot not read yet"))
        self.debouncer = PilotDebouncer(up_s=PILOT_DEBOUNCE_POWER_UP, down_s=PILOT_DEBOUNCE_POWER_DOWN)
        self.overcurrent = OvercurrentCheck()
        #: Set where discharge is gated (a J3072 connector: firmware/j3072/service.py): whether the EV may
        #: export now. None: not gated here (no gate, or the session carries its own, ISO 15118-20 BPT).
        self.discharge_permitted: Callable[[], bool] | None = None
        self._unauthorised_discharge = UnauthorisedDischargeCheck()
        self.thermal = ThermalCheck({t.name: (t.derate_from_c, t.trip_c) for t in cfg.temperature})
        self.id_tag: str | None = None
        self.session_id: str | None = None
        self.last_sample: PilotSample | None = None
        self.last_meter: MeterReading | None = None
        self.last_meter_at: float | None = None  # when last_meter was read
        #: The board's meter behind the plausibility checks; every reading the firmware uses passes it.
        self.meter: MeterGuard | None = None
        if hal.meter is not None:
            self.meter = MeterGuard(hal.meter, _plausibility_limits(hal), clock=clock, name="meter")
        self._meter_plausible_since: float | None = None
        self._meter_task: asyncio.Task[None] | None = None
        self._session_start_wh: float | None = None  # the running session's meter start
        self._meter_failing = False
        self._outputs: Outputs | None = None
        self._invalid_since: float | None = None
        self._diode_bad_count = 0
        self._contactor_commanded_at = -math.inf
        self._lock_commanded_at = -math.inf
        self._meter_ok_at: float | None = None
        self._mcu_ok_at: float | None = None
        self._next_meter = 0.0
        self._next_checkpoint = 0.0
        self._history_seen = 0
        self._tasks: list[Any] = []
        self._running = False
        self._dirty = False
        self._expired_announced: set[tuple[str, float | None]] = set()
        self._selftest_at = -math.inf
        self._selftest_retries = 0
        self._rcd_selftest_running = False
        # The lock motor needs 0.4-0.6 s per move: a worker task moves it, so that a step (and the
        # contactor reaction in it) never waits for the lock.
        self._want_locked = False
        self._lock_wake = asyncio.Event()
        self._lock_force = False  # re-drive the lock although it is already commanded (a retry)
        self._lock_retries = 0
        self._recorded_totals: tuple[float, float] | None = None
        self._deauth_reason = "DeAuthorized"
        #: The 1/3-phase switch sequence on boards with a phase contactor (firmware.phase_switching);
        #: the board's full phase count is asked for at boot.
        self.phases: PhaseSequencer | None = None
        if hal.phase_switch is not None and cfg.phase_switch is not None:
            self.phases = PhaseSequencer(
                commanded=hal.phase_switch.phases_commanded,
                target=cfg.ratings.phases,
                settle_s=cfg.phase_switch.settle_s,
            )

    # ================================================================== public API
    # Every command marks the connector dirty: the pilot loop steps the machine at its next tick
    # (within 10 ms, at once on a sleeping simulated board) instead of waiting for supervision.
    def authorize(self, id_tag: str | None = None) -> None:
        self.machine.inputs.authorized = True
        self.id_tag = id_tag
        self._mark_dirty()

    def deauthorize(self, reason: str = "DeAuthorized") -> None:
        """End the authorisation; a running session stops with ``reason`` (OCPP 1.6 §7.34 Reason:
        Local, Remote, DeAuthorized, SoftReset, UnlockCommand, ...)."""
        self._deauth_reason = reason
        self.machine.inputs.authorized = self.settings.free_charging
        self._mark_dirty()

    def pause(self) -> None:
        self.machine.inputs.paused = True
        self._mark_dirty()

    def resume(self) -> None:
        self.machine.inputs.paused = False
        self._mark_dirty()

    def request_phases(self, phases: int) -> None:
        """Switch to 1 or 3 phases, in the safe order of firmware.phase_switching (the energy manager
        decides when)."""
        if self.phases is None:
            raise ValueError(f"connector {self.settings.connector_id}: the board has no phase switch")
        if phases != self.phases.target:
            self.phases.request(phases)
            self._mark_dirty()

    @property
    def contactor_changed_at(self) -> float:
        """When the main contactor was last commanded open or closed (-inf: never)."""
        return self._contactor_commanded_at

    @property
    def phases_active(self) -> int:
        """The phases that reach the socket now (the phase contactor's command on switching boards)."""
        return self.phases.commanded if self.phases is not None else self.hal.config.ratings.phases

    @property
    def phases_for_limits(self) -> int:
        """The phases to turn a power limit into amps per phase: during a pending switch the larger of
        the two sides, so the amps never exceed the power on either side of it."""
        if self.phases is None:
            return self.hal.config.ratings.phases
        return max(self.phases.commanded, self.phases.target)

    def set_hlc(self, required: bool) -> None:
        self.machine.inputs.hlc = required
        if not required:
            self.machine.inputs.hlc_power = False
        self._mark_dirty()

    def hlc_power(self, on: bool) -> None:
        """The ISO 15118 / DIN 70121 session's PowerDelivery: with HLC the contactor closes in C only
        after it (and opens after its Stop, once the EV stops drawing)."""
        self.machine.inputs.hlc_power = on
        self._mark_dirty()

    def set_limit(self, limit: Limit) -> None:
        self.limits.set(limit)
        self._mark_dirty()
        self._emit(
            "limit", {"source": limit.source, "value": limit.current_a, "unit": "A", "expires_at": limit.expires_at}
        )

    def clear_limit(self, source: str) -> None:
        self.limits.clear(source)
        self._mark_dirty()

    def service_clear(self, code: FaultCode) -> bool:
        cleared = self.supervisor.service_clear(code, self.clock.monotonic())
        if cleared:
            self._mark_dirty()
        return cleared

    def _mark_dirty(self) -> None:
        self._dirty = True
        if self.hal.changes is not None:
            self.hal.changes.notify()  # a loop sleeping on a simulated board's signal steps at once

    def why(self) -> str:
        """Why the connector offers what it offers: the limit chain, and what else blocks an offer."""
        now = self.clock.monotonic()
        effective = self.limits.effective(now)
        lines = [f"connector {self.settings.connector_id}: state {self.machine.state}, {effective.explain()}"]
        i = self.machine.inputs
        blockers = []
        if not i.authorized:
            blockers.append("not authorised")
        if i.paused:
            blockers.append("paused")
        if self.phases is not None and self.phases.holding:
            blockers.append(self.phases.describe())
        if i.hlc and not i.hlc_power:
            blockers.append("ISO 15118: waiting for the session's PowerDelivery")
        for code in self.supervisor.active:
            blockers.append(f"fault {code.value}")
        if effective.current_a < 6.0 and not i.hlc:
            blockers.append("limit below 6 A: no PWM offer possible (IEC 61851-1 Table A.7)")
        if blockers:
            lines.append("not offering because: " + "; ".join(blockers))
        return "\n".join(lines)

    @property
    def session_energy_wh(self) -> float | None:
        """Energy delivered in the running session (None without one); no journal read: the status and
        the energy manager ask every cycle."""
        if self.session_id is None or self._session_start_wh is None or self.last_meter is None:
            return None
        return self.last_meter.import_wh - self._session_start_wh

    def status(self) -> ConnectorStatus:
        now = self.clock.monotonic()
        out = self._outputs
        duty = out.duty_permille if out else 0
        pwm = out is not None and out.pilot_mode is PilotMode.PWM
        energy = self.session_energy_wh
        return ConnectorStatus(
            state=self.machine.state,
            ev=self.debouncer.state.value,
            pilot_mode=out.pilot_mode.value if out else "f",
            duty_permille=duty,
            offered_a=current_for_duty(duty) if pwm and not self.machine.inputs.hlc else None,
            contactor_closed=bool(out and out.contactor_closed),
            locked=bool(out and out.locked),
            effective_a=self.limits.effective(now).current_a,
            why=self.why(),
            faults=[code.value for code in self.supervisor.active],
            session_id=self.session_id,
            energy_wh=energy,
            phases=self.phases_active,
            meter=None
            if self.last_meter is None
            else {
                "power_w": self.last_meter.total_power_w,
                "import_wh": self.last_meter.import_wh,
                "export_wh": self.last_meter.export_wh,
            },
        )

    # ================================================================== lifecycle
    async def start(self) -> None:
        """Boot: self-test, reconcile the journal with the hardware, then run."""
        now = self.clock.monotonic()
        self._next_meter = now
        self._next_checkpoint = now + CHECKPOINT_PERIOD
        await self._boot_selftest()
        await self._read_pilot_until_stable()
        await self._check_proximity(self.clock.monotonic())
        await self._check_meter(self.clock.monotonic())  # a session started at boot needs its meter start
        await self._reconcile()
        await self._evaluate()
        self._running = True
        name = f"connector{self.settings.connector_id}"
        self._tasks = [
            asyncio.create_task(self._pilot_loop(), name=f"{name}-pilot"),
            asyncio.create_task(self._supervision_loop(), name=f"{name}-supervision"),
        ]
        if self.hal.lock is not None:
            self._tasks.append(asyncio.create_task(self._lock_worker(), name=f"{name}-lock"))

    async def stop(self) -> None:
        """Stop the loops and leave the hardware safe: contactor open, then pilot F. A running session
        stays open in the journal (checkpointed), so that a restart can resume or close it."""
        self._running = False
        tasks = [*self._tasks, *([self._meter_task] if self._meter_task is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks, self._meter_task = [], None
        with contextlib.suppress(HalError):
            await self.hal.contactor.open()
        with contextlib.suppress(HalError):
            await self.hal.pilot.set_f()
        self._checkpoint(force=True)

    # ================================================================== boot
    async def _boot_selftest(self) -> None:
        self._selftest_retries = 0
        await self._rcd_selftest("boot self-test")

    async def _retry_selftest(self, now: float) -> None:
        failed = FaultCode.RCD_SELFTEST_FAILED in self.supervisor.active
        if not failed or self.debouncer.state is not CpState.A or self._selftest_retries >= RCD_SELFTEST_RETRIES:
            return
        if now - self._selftest_at < RCD_SELFTEST_RETRY_PERIOD:
            return
        self._selftest_retries += 1
        await self._rcd_selftest(f"self-test retry {self._selftest_retries} of {RCD_SELFTEST_RETRIES}")

    async def _rcd_selftest(self, what: str) -> None:
        now = self._selftest_at = self.clock.monotonic()
        self._rcd_selftest_running = True
        try:
            passed = await self.hal.rcd.self_test()
        except HalError as exc:
            passed = False
            log.error("RCD self-test could not run: %s", exc)
        finally:
            self._rcd_selftest_running = False
        self.supervisor.condition(FaultCode.RCD_SELFTEST_FAILED, not passed, now, what)
        self._emit_faults()

    async def _read_pilot_until_stable(self) -> None:
        """Drive X1 and read the pilot until the debounced state is settled (or 0.5 s passed)."""
        with contextlib.suppress(HalError):
            await self.hal.pilot.set_x1()
        deadline = self.clock.monotonic() + PILOT_DEBOUNCE_POWER_UP * 2
        while self.clock.monotonic() < deadline:
            await self._sample_pilot()
            await self.clock.sleep(PILOT_SAMPLE_PERIOD)

    async def _reconcile(self) -> None:
        if self.journal is None:
            return
        mirror = None
        with contextlib.suppress(HalError):
            mirror = await self.hal.contactor.feedback_closed()
        meter_wh = self.last_meter.import_wh if self.last_meter is not None else None
        try:
            result = self.journal.reconcile(
                self.settings.connector_id,
                HardwareSnapshot(
                    ev_state=self.debouncer.state.value, contactor_closed=mirror, meter_import_wh=meter_wh
                ),
                resume_within_s=self.settings.resume_within_s,
            )
        except JournalError as exc:
            log.error("journal reconciliation failed: %s", exc)
            return
        if result.session is not None:
            self._emit(
                "session",
                {"id": result.session.session_id, "action": result.action, "reason": result.session.stop_reason},
            )
        if result.action == "resumed" and result.session is not None:
            self.session_id = result.session.session_id
            self._session_start_wh = result.session.meter_start_wh
            self.id_tag = result.session.id_tag
            self.machine.inputs.authorized = True
            if self.meter is not None:
                # Judge the meter against the session's last checkpoint: a meter reset or exchanged
                # while the station was off must not turn into negative (or invented) energy.
                self.meter.baseline(result.session.last_meter_wh, result.session.last_export_wh)
                await self._check_meter(self.clock.monotonic())
        if result.contactor_mismatch:
            self.supervisor.raise_fault(FaultCode.CONTACTOR_WELDED, self.clock.monotonic(), "closed at boot")

    # ================================================================== loops
    async def _pilot_loop(self) -> None:
        changes = self.hal.changes
        while self._running:
            seen = changes.count if changes is not None else 0
            changed = await self._sample_pilot()
            changed |= await self._sample_rcd()
            changed |= await self._sample_lock()
            deadline = self.machine.next_deadline(self._last_step)
            expiry = self.limits.next_expiry(self._last_step)
            now = self.clock.monotonic()
            due = any(t is not None and now >= t for t in (deadline, expiry))
            if changed or due or self._dirty:
                self._dirty = False
                await self._evaluate()
            if changes is not None and self._pilot_quiet():
                # Simulated board, nothing pending: sleep until an input changes or a deadline falls due.
                wake = _earliest(self.machine.next_deadline(now), self.limits.next_expiry(now))
                await changes.wait(seen, self.clock, None if wake is None else max(0.0, wake - now) + DEADLINE_SLACK)
            else:
                await self.clock.sleep(PILOT_SAMPLE_PERIOD)

    def _pilot_quiet(self) -> bool:
        """Nothing in the pilot loop needs another sample unless an input changes: no debounce, pilot
        validity or diode verdict pending, no command waiting to be applied."""
        return (
            not self._dirty
            and self.debouncer.pending is None
            and self._invalid_since is None
            and self._diode_bad_count == 0
            and not self._rcd_selftest_running
        )

    async def _lock_worker(self) -> None:
        lock = self.hal.lock
        assert lock is not None
        while self._running:
            await self._lock_wake.wait()
            self._lock_wake.clear()
            want = self._want_locked
            if lock.commanded_locked == want and not self._lock_force:
                continue
            self._lock_force = False
            try:
                await (lock.lock() if want else lock.unlock())
            except HalError as exc:
                log.error("lock %s failed: %s", "lock" if want else "unlock", exc)
                self.supervisor.raise_fault(FaultCode.LOCK_FAILED, self.clock.monotonic(), str(exc))
            self._lock_commanded_at = self.clock.monotonic()

    async def _supervision_loop(self) -> None:
        changes = self.hal.changes
        polled = self.hal.mcu is not None or self.hal.converter is not None  # their state arrives by I/O
        checked: int | None = None  # the change count at the last proximity and temperature reading
        while self._running:
            seen = changes.count if changes is not None else 0
            now = self.clock.monotonic()
            if changes is None or polled or seen != checked:
                # On a simulated board an unchanged world reads the same: skip the ADC conversions.
                checked = seen
                await self._check_proximity(now)
                await self._check_temperatures(now)
            await self._check_feedback(now)
            await self._check_coprocessor(now)
            await self._check_converter(now)
            await self._retry_selftest(now)
            if now >= self._next_meter - 1e-6:
                # A fixed grid, not "now + period": the 100 ms ticks would stretch it to 1.1 s.
                self._next_meter = max(self._next_meter + METER_PERIOD, now)
                if self._meter_task is None or self._meter_task.done():
                    # In a task of its own: a silent Modbus meter takes its whole timeout to fail, and
                    # the 100 ms supervision (RCD, mirror contact, co-processor) must not wait for it.
                    # A read still in flight at the next tick means that tick's reading is skipped,
                    # never queued behind it.
                    self._meter_task = asyncio.create_task(self._meter_tick(now), name="meter-read")
            self._checkpoint()
            await self._evaluate()
            if changes is not None and not polled:
                # Simulated board: the next meter reading, the next timer, or an input change.
                wake = self._supervision_due(self.clock.monotonic())
                await changes.wait(seen, self.clock, max(0.0, wake - self.clock.monotonic()) + DEADLINE_SLACK)
            else:
                await self.clock.sleep(SUPERVISION_PERIOD)

    def _supervision_due(self, now: float) -> float:
        """When a supervision check would act with no input changing: the meter grid, a machine
        deadline, the contactor mirror settling, the lock settling or retrying, an RCD self-test retry."""
        times = [self._next_meter - 1e-6]
        # The machine's own deadlines too: a step here (a limit that supervision lifted) may have
        # started one while the pilot loop sleeps on an older one.
        times += [t for t in (self.machine.next_deadline(now), self.limits.next_expiry(now)) if t is not None]
        times.append(self._contactor_commanded_at + T_MIRROR_SETTLE)
        if self.phases is not None:
            times.append(self.phases.moved_at + T_MIRROR_SETTLE)
            times += [t for t in (self.phases.next_deadline(),) if t is not None]
        if self.hal.lock is not None:
            times.append(self._lock_commanded_at + T_LOCK_SETTLE)
            if FaultCode.LOCK_FAILED in self.supervisor.active:
                times.append(self._lock_commanded_at + LOCK_RETRY_PERIOD)
                times.append(self._lock_commanded_at + LOCK_RETRY_PERIOD_SLOW)
        if FaultCode.RCD_SELFTEST_FAILED in self.supervisor.active:
            times.append(self._selftest_at + RCD_SELFTEST_RETRY_PERIOD)
        return min(t for t in times if t > now) if any(t > now for t in times) else now + SUPERVISION_PERIOD

    # ================================================================== measurements
    _last_step = 0.0

    async def _sample_pilot(self) -> bool:
        now = self.clock.monotonic()
        try:
            reading = await self.hal.pilot_sense.read()
        except HalError as exc:
            log.warning("pilot read failed: %s", exc)
            return self._pilot_invalid(now, "pilot sense failed")
        sample = classify(reading)
        self.last_sample = sample
        changed = False
        if sample.state is CpState.INVALID:
            changed |= self._pilot_invalid(now, f"pilot {sample.high_v:+.2f} V outside every window")
        else:
            self._invalid_since = None
            changed |= self._set_condition(FaultCode.PILOT_INVALID, False, now)
        out = self._outputs
        driving_f = out is not None and out.pilot_mode in (PilotMode.F, PilotMode.E)
        if not driving_f and sample.state not in (CpState.INVALID, CpState.F):
            before = self.debouncer.state
            accepted = self.debouncer.feed(sample.state, now)
            if accepted is not None:
                changed = True
                if before is CpState.A:
                    await self._check_proximity(now)  # the cable rating before the first offer
                self._on_ev_state(accepted, now)
        # Diode check: only meaningful while our PWM runs (the negative plateau exists).
        if out is not None and out.pilot_mode is PilotMode.PWM and sample.diode_ok is not None:
            if sample.diode_ok:
                self._diode_bad_count = 0
                if self.machine.inputs.diode_ok is not True:
                    self.machine.inputs.diode_ok = True
                    changed = True
            else:
                self._diode_bad_count += 1
                if self._diode_bad_count >= 2:  # two samples in a row: 20 ms, against a single glitch
                    self.machine.inputs.diode_ok = False
                    changed |= self._set_condition(FaultCode.DIODE_MISSING, True, now, f"low level {sample.low_v}")
        return changed

    def _pilot_invalid(self, now: float, detail: str) -> bool:
        if self._invalid_since is None:
            self._invalid_since = now
        if now - self._invalid_since >= PILOT_INVALID_FAULT_AFTER:
            return self._set_condition(FaultCode.PILOT_INVALID, True, now, detail)
        return False

    def _on_ev_state(self, state: CpState, now: float) -> None:
        self.machine.inputs.ev = state
        self._emit("pilot", {"state": state.value})
        self._set_condition(FaultCode.PILOT_SHORT, state is CpState.E, now, "pilot at 0 V")
        ventilation_missing = state is CpState.D and not self.machine.inputs.ventilation_available
        self._set_condition(FaultCode.VENTILATION_NOT_AVAILABLE, ventilation_missing, now, "EV in D")
        if state is not CpState.A:
            self.supervisor.ev_plugged()
        if state is CpState.A:
            self.machine.inputs.diode_ok = None  # a new vehicle must pass its own diode check
            self._diode_bad_count = 0
            for code in (
                FaultCode.DIODE_MISSING,
                FaultCode.CONTACTOR_FAILED_TO_CLOSE,
                FaultCode.LOCK_FAILED,
                FaultCode.OVERCURRENT_SOFT,
                FaultCode.OVERCURRENT_HARD,
            ):
                self.supervisor.condition(code, False, now)
            self.supervisor.ev_unplugged(now)

    async def _sample_lock(self) -> bool:
        """The contactor may close only on a connector the lock's feedback confirms as locked."""
        lock = self.hal.lock
        if lock is None:
            return False
        try:
            feedback = await lock.feedback_locked()
        except HalError:
            feedback = False
        confirmed = lock.commanded_locked if feedback is None else feedback
        if confirmed == self.machine.inputs.lock_confirmed:
            return False
        self.machine.inputs.lock_confirmed = confirmed
        return True

    async def _sample_rcd(self) -> bool:
        now = self.clock.monotonic()
        if self._rcd_selftest_running:
            return False  # the test current trips the RCD on purpose; the self-test judges it
        try:
            tripped = await self.hal.rcd.tripped()
        except HalError as exc:
            log.warning("RCD read failed: %s", exc)
            tripped = True  # default deny: an RCD we cannot read is treated as tripped
        return self._set_condition(FaultCode.RCD_TRIPPED, tripped, now, "trip input active")

    async def _check_proximity(self, now: float) -> None:
        try:
            pp = await self.hal.proximity.read()
        except HalError as exc:
            self._set_condition(FaultCode.PROXIMITY_INVALID, True, now, str(exc))
            self._set_cable_limit(0.0, f"proximity unreadable: {exc}")
            return
        self._set_condition(FaultCode.PROXIMITY_INVALID, pp.fault is not None, now, pp.fault or "")
        if pp.fault is not None:
            self._set_cable_limit(0.0, f"proximity fault: {pp.fault}")
        elif pp.latch is not None:
            # Type 1 (SAE J1772): the cable is tethered and PP only tells the latch, not a rating.
            self._set_cable_limit(None, "")
        elif not pp.ampacity_a:
            self._set_cable_limit(0.0, "no cable detected by the proximity pilot")
        else:
            self._set_cable_limit(float(pp.ampacity_a), "proximity pilot cable coding")

    def _set_cable_limit(self, amps: float | None, detail: str) -> None:
        current = self.limits.get(sources.CABLE)
        if amps is None:
            if current is not None:
                self.limits.clear(sources.CABLE)
        elif current is None or current.current_a != amps or current.detail != detail:
            self.set_limit(Limit(sources.CABLE, amps, detail=detail))

    async def _check_temperatures(self, now: float) -> None:
        if not self.hal.temperatures:
            return
        readings: dict[str, float] = {}
        sensor_fault = ""
        for sensor in self.hal.temperatures:
            try:
                readings[sensor.name] = await sensor.read_c()
            except HalError as exc:
                sensor_fault = str(exc)
        self._set_condition(FaultCode.TEMPERATURE_SENSOR, bool(sensor_fault), now, sensor_fault)
        if not readings:
            return
        verdict = self.thermal.update(readings)
        self._set_condition(
            FaultCode.OVERTEMPERATURE_STOP,
            verdict.factor == 0.0,
            now,
            f"{verdict.hottest} {verdict.temperature_c:.1f} °C",
        )
        self._set_condition(
            FaultCode.OVERTEMPERATURE_DERATE,
            0.0 < verdict.factor < 1.0,
            now,
            f"{verdict.hottest} {verdict.temperature_c:.1f} °C",
        )
        rating = self.hal.config.ratings.max_current_a
        wanted = rating * verdict.factor
        current = self.limits.get(sources.THERMAL)
        if verdict.factor >= 1.0:
            if current is not None:
                self.limits.clear(sources.THERMAL)
        elif current is None or current.current_a != wanted:
            detail = f"{verdict.hottest} at {verdict.temperature_c:.1f} °C: {verdict.factor:g} of rating"
            self.set_limit(Limit(sources.THERMAL, wanted, detail=detail))

    async def _check_feedback(self, now: float) -> None:
        out = self._outputs
        if out is None:
            return
        if now - self._contactor_commanded_at >= T_MIRROR_SETTLE:
            try:
                mirror = await self.hal.contactor.feedback_closed()
            except HalError:
                mirror = None
            if mirror is not None:
                if mirror and not out.contactor_closed:
                    self.supervisor.raise_fault(FaultCode.CONTACTOR_WELDED, now, "mirror closed, coil off")
                elif not mirror and out.contactor_closed:
                    self.supervisor.raise_fault(FaultCode.CONTACTOR_FAILED_TO_CLOSE, now, "mirror open, coil on")
        await self._check_phase_mirror(now)
        await self._check_lock(now)

    async def _check_phase_mirror(self, now: float) -> None:
        switch, seq = self.hal.phase_switch, self.phases
        if switch is None or seq is None or not switch.has_feedback or not seq.mirror_due(now):
            return
        try:
            seen = await switch.feedback_phases()
        except HalError:
            return
        if seen is not None:
            detail = f"commanded {seq.commanded} phases, the mirror contact says {seen}"
            self._set_condition(FaultCode.PHASE_SWITCH_FAILED, seen != seq.commanded, now, detail)

    async def _step_phases(self, now: float) -> bool:
        """One step of the phase switch sequence; True while the offer must stay withdrawn."""
        seq, switch = self.phases, self.hal.phase_switch
        assert seq is not None and switch is not None
        contactor_open = False
        if (
            seq.pending
            and not self.hal.contactor.commanded_closed
            and now - self._contactor_commanded_at >= (T_MIRROR_SETTLE - DEADLINE_SLACK)
        ):
            # Open means proven open where there is a mirror: a welded contactor never sees C2 move.
            try:
                contactor_open = await self.hal.contactor.feedback_closed() is not True
            except HalError:
                contactor_open = False
        before = seq.commanded
        action = seq.step(now, contactor_open=contactor_open, ev_connected=self.debouncer.state is not CpState.A)
        if action.move_to is not None:
            try:
                await switch.set_phases(action.move_to)
            except HalError as exc:
                log.error("phase switch to %d phases failed: %s", action.move_to, exc)
                seq.undo_move(before)
                return True
            self._emit("phases", {"phases": action.move_to, "from": before})
        return action.hold_offer

    async def _check_lock(self, now: float) -> None:
        lock = self.hal.lock
        if lock is None or lock.commanded_locked != self._want_locked:
            return  # no lock, or the worker is still moving it
        if now - self._lock_commanded_at < T_LOCK_SETTLE:
            return
        try:
            feedback = await lock.feedback_locked()
        except HalError:
            feedback = None
        if feedback is None:
            return
        mismatch = feedback != self._want_locked
        wanted = "locked" if self._want_locked else "unlocked"
        self._set_condition(FaultCode.LOCK_FAILED, mismatch, now, f"commanded {wanted}, feedback disagrees")
        if not mismatch:
            self._lock_retries = 0
        elif now - self._lock_commanded_at >= (
            LOCK_RETRY_PERIOD if self._lock_retries < LOCK_RETRIES else LOCK_RETRY_PERIOD_SLOW
        ):
            self._lock_retries += 1
            self._lock_force = True
            self._lock_commanded_at = now
            self._lock_wake.set()

    async def _check_coprocessor(self, now: float) -> None:
        link = self.hal.mcu
        if link is None:
            return
        status = link.status
        fresh = status is not None and link.running
        if fresh:
            self._mcu_ok_at = now
        lost = self._mcu_ok_at is None or now - self._mcu_ok_at > COPROCESSOR_COMM_TIMEOUT
        self._set_condition(FaultCode.COPROCESSOR_COMM_LOST, lost, now, "no status from the co-processor")
        if status is not None:
            from hal.drivers.mcu_frames import ErrorFlag

            self._set_condition(
                FaultCode.HEARTBEAT_LOST,
                bool(status.flags & ErrorFlag.HEARTBEAT_TIMEOUT),
                now,
                "co-processor reports heartbeat timeout",
            )

    async def _check_converter(self, now: float) -> None:
        if self.hal.converter is None:
            return
        self._set_condition(FaultCode.CONVERTER_COMM_LOST, not self.hal.converter.online, now, "keep-alive lost")

    async def _meter_tick(self, now: float) -> None:
        """One reading off the supervision loop, acted on at once (a STOP in the reading's step)."""
        await self._check_meter(now)
        if self._running:
            await self._evaluate()

    async def _check_meter(self, now: float) -> None:
        if self.meter is None:
            return
        try:
            reading = await self.meter.read()
        except ImplausibleReading as exc:
            # The meter answers, but its energy cannot be trusted: stop now, bill nothing from it.
            log.error("meter reading refused: %s", exc)
            self._meter_ok_at = now
            self._set_condition(FaultCode.METER_COMM_LOST, False, now)
            self._set_condition(FaultCode.METER_IMPLAUSIBLE, True, now, exc.message)
            self._meter_plausible_since = None
            self._flag_meter_error(exc.message)
            return
        except HalError as exc:
            # Once per outage at warning level: a dead meter must not write a line every second.
            failing = self._meter_failing
            self._meter_failing = True
            (log.debug if failing else log.warning)("meter read failed: %s", exc)
            if self._meter_ok_at is None:
                self._meter_ok_at = now
            lost = now - self._meter_ok_at >= METER_COMM_TIMEOUT
            self._set_condition(FaultCode.METER_COMM_LOST, lost, now, str(exc))
            return
        self._meter_ok_at = now
        if self._meter_failing:
            log.info("meter answers again")
            self._meter_failing = False
        self._set_condition(FaultCode.METER_COMM_LOST, False, now)
        if FaultCode.METER_IMPLAUSIBLE in self.supervisor.active:
            if self._meter_plausible_since is None:
                self._meter_plausible_since = now
            if now - self._meter_plausible_since >= METER_PLAUSIBLE_RECOVERY_S - DEADLINE_SLACK:
                self._set_condition(FaultCode.METER_IMPLAUSIBLE, False, now)
        self.last_meter, self.last_meter_at = reading, now
        self._emit(
            "meter", {"import_wh": reading.import_wh, "export_wh": reading.export_wh, "power_w": reading.total_power_w}
        )
        current = max((abs(c) for c in reading.current_a), default=0.0)
        self.machine.inputs.current_a = current
        out = self._outputs
        offered = None
        inputs = self.machine.inputs
        if out is not None and out.pilot_mode is PilotMode.PWM:
            if not inputs.hlc:
                offered = current_for_duty(out.duty_permille)
            elif inputs.hlc_power:
                # Under HLC the session tells the EV its maximum current: the connector's limit chain
                # (the 5 % duty says nothing about current).
                offered = inputs.effective_a
        cable = self.limits.get(sources.CABLE)
        rating = min(self.hal.config.ratings.max_current_a, cable.current_a if cable and cable.current_a else math.inf)
        soft, hard = self.overcurrent.check(current_a=current, offered_a=offered, rating_a=rating, now=now)
        detail = f"{current:.1f} A measured, {offered} A offered, rating {rating:g} A"
        if soft:
            self.supervisor.condition(FaultCode.OVERCURRENT_SOFT, True, now, detail)
        if hard:
            self.supervisor.condition(FaultCode.OVERCURRENT_HARD, True, now, detail)
        if self.discharge_permitted is not None:
            try:
                permitted = bool(self.discharge_permitted())
            except Exception:  # a broken gate is a closed gate
                log.exception("discharge gate failed: taken as not permitted")
                permitted = False
            power = reading.total_power_w
            if self._unauthorised_discharge.check(power_w=power, permitted=permitted, now=now):
                self.supervisor.condition(
                    FaultCode.UNAUTHORISED_DISCHARGE, True, now, f"the EV exports {-power:.0f} W without authorisation"
                )

    def _set_condition(self, code: FaultCode, present: bool, now: float, detail: str = "") -> bool:
        """Report a condition; True when the set of active faults changed."""
        before = code in self.supervisor.active
        self.supervisor.condition(code, present, now, detail)
        return (code in self.supervisor.active) != before

    # ================================================================== the step
    async def _evaluate(self) -> None:
        now = self.clock.monotonic()
        self._last_step = now
        i = self.machine.inputs
        effective = self.limits.effective(now)
        i.effective_a = effective.current_a
        for link in effective.chain:
            key = (link.limit.source, link.limit.expires_at)
            if link.expired and key not in self._expired_announced:
                # An external limit ran out: say so, with the fallback that replaces it.
                self._expired_announced.add(key)
                self._emit(
                    "limit", {"source": link.limit.source, "value": link.current_a, "unit": "A", "expired": True}
                )
        i.emergency = self.supervisor.emergency
        if self.supervisor.take_new_emergency():
            i.new_emergency = True
        i.stop = self.supervisor.stop
        if self.phases is not None:
            i.phase_switching = await self._step_phases(now)
        out = self.machine.step(now)
        self._emit_faults()
        self._emit_transitions()
        await self._apply(out, now)
        self._track_session(now)

    async def _apply(self, out: Outputs, now: float) -> None:
        prev = self._outputs
        self._outputs = out
        opening = out.contactor_closed is False and (prev is None or prev.contactor_closed)
        closing = out.contactor_closed and (prev is None or not prev.contactor_closed)
        try:
            if opening:  # open first: the contactor never carries current across a pilot change
                await self.hal.contactor.open()
                self._contactor_commanded_at = now
                self._emit("contactor", {"closed": False, "commanded": True})
            if prev is None or (prev.pilot_mode, prev.duty_permille) != (out.pilot_mode, out.duty_permille):
                await self._drive_pilot(out)
            if closing:
                await self.hal.contactor.close()
                self._contactor_commanded_at = now
                self._emit("contactor", {"closed": True, "commanded": True})
            if self.hal.lock is not None and (prev is None or prev.locked != out.locked):
                self._want_locked = out.locked
                self._lock_commanded_at = now
                self._lock_wake.set()
        except HalError as exc:
            # A failing actuator must not take the loop down; the next step re-applies everything.
            log.error("applying outputs failed: %s", exc)
            self._outputs = None
        if self.journal is not None and (prev is None or prev != out):
            with contextlib.suppress(JournalError):
                self.journal.record_actuators(
                    self.settings.connector_id,
                    contactor_closed=out.contactor_closed,
                    pilot_mode=out.pilot_mode.value,
                    duty_permille=out.duty_permille,
                    locked=out.locked,
                )

    async def _drive_pilot(self, out: Outputs) -> None:
        pilot = self.hal.pilot
        if out.pilot_mode is PilotMode.PWM:
            await pilot.set_pwm(out.duty_permille)
        elif out.pilot_mode is PilotMode.X1:
            await pilot.set_x1()
        elif out.pilot_mode is PilotMode.E:
            await pilot.set_e()
        else:
            await pilot.set_f()
        self._emit("pilot", {"mode": out.pilot_mode.value, "duty_pct": out.duty_permille / 10})

    # ================================================================== sessions
    def _track_session(self, now: float) -> None:
        """A session runs from the moment an authorised EV is connected until it is unplugged or the
        authorisation ends."""
        i = self.machine.inputs
        connected = self.machine.state[0] in "BCD" or self.machine.state in ("WAKEUP", "F", "E")
        connected = connected and self.debouncer.state is not CpState.A
        if self.session_id is None and connected and i.authorized:
            self._start_session()
        elif self.session_id is not None and (not connected or not i.authorized):
            self._stop_session("EVDisconnected" if not connected else self._deauth_reason)

    def _meter_wh(self) -> float:
        return self.last_meter.import_wh if self.last_meter is not None else 0.0

    def _export_wh(self) -> float:
        return self.last_meter.export_wh if self.last_meter is not None else 0.0

    def _flag_meter_error(self, detail: str) -> None:
        """Mark the running session: its billing record says the meter failed a check during it."""
        if self.session_id is None:
            return
        self._emit("meter_error", {"id": self.session_id, "detail": detail})
        if self.journal is not None:
            try:
                self.journal.flag_meter_error(self.session_id, detail)
            except JournalError as exc:
                log.error("journal: %s", exc)

    def _start_session(self) -> None:
        self._session_start_wh = self._meter_wh()
        if self.journal is None:
            self.session_id = f"local-{self.clock.monotonic():.3f}"
        else:
            try:
                record = self.journal.start_session(
                    self.settings.connector_id,
                    id_tag=self.id_tag,
                    meter_start_wh=self._meter_wh(),
                    meter_start_export_wh=self._export_wh(),
                    tariff=self.settings.tariff,
                )
            except JournalError as exc:
                log.error("journal: cannot start a session: %s", exc)
                return
            self.session_id = record.session_id
            self._record_meter_totals()
        self._emit("session", {"action": "started", "id": self.session_id, "id_tag": self.id_tag})

    def _stop_session(self, reason: str) -> None:
        session_id, self.session_id = self.session_id, None
        if self.journal is not None and session_id is not None:
            try:
                self.journal.stop_session(
                    session_id, reason=reason, meter_stop_wh=self._meter_wh(), meter_stop_export_wh=self._export_wh()
                )
            except JournalError as exc:
                log.error("journal: cannot stop session %s: %s", session_id, exc)
            self._record_meter_totals()
        self._emit("session", {"action": "stopped", "id": session_id, "reason": reason})
        if reason == "EVDisconnected" and not self.settings.free_charging:
            self.machine.inputs.authorized = False  # the next EV needs its own authorisation

    def _checkpoint(self, force: bool = False) -> None:
        """Every CHECKPOINT_PERIOD (and at session start, stop and shutdown): the meter totals and the
        running session's energy go to the journal."""
        now = self.clock.monotonic()
        if self.journal is None or (not force and now < self._next_checkpoint):
            return
        self._next_checkpoint = now + CHECKPOINT_PERIOD
        self._record_meter_totals()
        if self.session_id is None:
            return
        try:
            self.journal.update_session(self.session_id, meter_wh=self._meter_wh(), export_wh=self._export_wh())
        except JournalError as exc:
            log.error("journal: %s", exc)

    def _record_meter_totals(self) -> None:
        reading = self.last_meter
        if self.journal is None or reading is None:
            return
        totals = (reading.import_wh, reading.export_wh)
        if totals == self._recorded_totals:
            return
        try:
            self.journal.record_meter(self.settings.connector_id, import_wh=totals[0], export_wh=totals[1])
            self._recorded_totals = totals
        except JournalError as exc:
            log.error("journal: %s", exc)

    # ================================================================== events
    def add_listener(self, listener: EventSink) -> None:
        """Also send every event to ``listener`` (the OCPP uplink, a display); a listener that raises
        is logged and never stops the connector."""
        self._listeners.append(listener)

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        event = {"t": self.clock.monotonic(), **data}
        if self._emit_to is not None:
            self._emit_to(kind, event)
        for listener in self._listeners:
            try:
                listener(kind, dict(event))
            except Exception:
                log.exception("event listener failed on %s", kind)

    def _emit_faults(self) -> None:
        events: list[FaultEvent] = self.supervisor.take_events()
        for e in events:
            log.warning("fault %s %s: %s", e.code.value, "raised" if e.raised else "cleared", e.detail)
            self._emit("fault", {"code": e.code.value, "raised": e.raised, "detail": e.detail})

    def _emit_transitions(self) -> None:
        history = self.machine.history
        for at, trigger, source, dest in history[self._history_seen :]:
            self._emit("state", {"from": source, "to": dest, "trigger": trigger, "at": at})
        self._history_seen = len(history)


def _plausibility_limits(hal: BoardHal) -> PlausibilityLimits:
    """What this board's meter can plausibly count: the board's full power with 10 % high mains
    (EN 50160), and the meter's own register resolution and modulus when its driver states them."""
    ratings = hal.config.ratings
    full = ratings.phases * ratings.max_current_a * ratings.nominal_voltage_v * 1.1
    if ratings.max_power_w is not None:
        full = max(full, ratings.max_power_w)
    meter = hal.meter
    resolution = getattr(meter, "energy_resolution_wh", None)
    modulus = getattr(meter, "register_modulus_wh", None)
    return PlausibilityLimits(
        max_power_w=full,
        resolution_wh=float(resolution) if isinstance(resolution, int | float) else 0.01,
        register_modulus_wh=float(modulus) if isinstance(modulus, int | float) else None,
    )


def _earliest(*times: float | None) -> float | None:
    present = [t for t in times if t is not None]
    return min(present) if present else None
