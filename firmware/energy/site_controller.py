"""Runs the energy manager against the firmware's connectors: reads them, cycles, applies the shares.

Each cycle (``manager.site.period_s``):

* the site meter reading (a callable: the board's grid meter, an EMS measurement, or the HIL site
  model) goes to the manager; ``None`` means no fresh reading (the manager's fallback timer runs);
* each connector reports what it draws, whether an EV there may draw (connected, authorised, no fault
  stopping power), and what its own limit chain allows without the manager's share (rating, cable,
  thermal, OCPP schedule, ...);
* an EV that takes much less than it is offered for a while (full, tapering, on a small onboard
  charger) is capped near what it takes, so the rest goes to the others; the cap is lifted every
  ``PROBE_S`` to see whether it wants more again (the AC pilot cannot ask the EV; ISO 15118 can, later);
* a connector that can switch between one and three phases is asked for the phases the manager
  chose (the connector runs the switch sequence, firmware/phase_switching.py); its share is turned
  into amps on the larger of the phases it runs on and the phases asked for, so a limit is never
  above the share whichever side of a switch the connector is on;
* each connector's share becomes its ``site`` limit in amps, with an expiry, so that a stalled manager
  ends in the connector's static fallback, never in a stale share. The signed share itself is kept with
  the same expiry and read by the connector's session (:meth:`SiteController.setpoint`, the ISO 15118-20
  AC port's ``setpoint`` hook). A negative share (discharge) is an amp limit of 0 on a connector whose
  session cannot carry a sign (a PWM offer cannot go negative: an EV would take it as a charge offer);
  where ``bidirectional(key)`` says the session carries it now (-20 AC_BPT with discharge granted), the
  limit is the share's magnitude: the limit chain bounds the current in either direction (the connector's
  overcurrent check reads the chain) and the session's target gives the sign;
* each connector's EV state of charge (``soc``: ISO 15118-20 DisplayParameters through the AC port) goes
  to the manager, which keeps discharge above the user's floor with it; unknown SoC with a floor: none.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from firmware import limits as sources
from firmware.connector import Connector
from firmware.energy import bounds as prio
from firmware.energy.bounds import Bound
from firmware.energy.der import DerController, DerOutput
from firmware.energy.manager import DISCHARGE, ConnectorInput, CycleResult, EnergyManager
from firmware.iec61851.pilot import CpState
from firmware.limits import Limit
from firmware.safety import faults
from hal.clock import Clock

log = logging.getLogger(__name__)

#: An EV drawing less than this share of its offer for UNUSED_S is capped at what it draws + 1 A.
UNUSED_SHARE = 0.6
UNUSED_S = 60.0
#: The cap is lifted this often, to find out whether the EV wants more again.
PROBE_S = 300.0
#: The grid is checked this often for the DER functions: FFR's 49.5 Hz step must be met within 0.7 s
#: (sample period + measurement + actuation, firmware/energy/der_frequency.py).
DER_PERIOD_S = 0.1
#: The manager's connector input that carries the DER window.
DER = "der"
#: A share lives this many cycles: a manager that stops refreshing it leaves the connector's fallback.
SHARE_LIFETIME_CYCLES = 30
#: A connector meter reading taken less than this long after a signed share changed may not show the
#: change yet (the EV follows at its next charge loop, ~0.25 s, and the meter's power is a mean over its
#: 1 s read period, firmware.connector.METER_PERIOD), while the site meter already does: eq. 1.2.5.1 would
#: see a phantom load and undo the change. Such a reading counts at most at the share (a design choice).
SETTLE_S = 2.0


_STOPPING = (faults.Reaction.EMERGENCY, faults.Reaction.STOP)


@dataclass
class _Usage:
    low_since: float | None = None
    cap_w: float | None = None
    capped_at: float = -math.inf


class SiteController:
    def __init__(
        self,
        manager: EnergyManager,
        connectors: dict[int, Connector],
        *,
        clock: Clock,
        site_meter: Callable[[], float | None] | None = None,
        on_cycle: Callable[[CycleResult], None] | None = None,
        der: dict[int, DerController] | None = None,
        grid: Callable[[], tuple[float, float] | None] | None = None,
        der_period_s: float = DER_PERIOD_S,
        needs: Callable[[int, float], tuple[float, float | None]] | None = None,
        discharge_floor: Callable[[int], float | None] | None = None,
        soc: Callable[[int, float], float | None] | None = None,
        bidirectional: Callable[[int], bool] | None = None,
        offer_floor: Callable[[int], float] | None = None,
    ) -> None:
        missing = set(connectors) - set(manager.connectors)
        if missing:
            raise ValueError(f"connectors {sorted(missing)} are not in the energy manager's site")
        self.manager = manager
        self.connectors = connectors
        self.clock = clock
        self.site_meter = site_meter
        self.on_cycle = on_cycle
        self._usage = {k: _Usage() for k in connectors}
        self._applied: dict[int, tuple[float, float]] = {}  # amps, expiry
        self._shares: dict[int, tuple[float, float]] = {}  # signed W, expiry
        self._share_moved: dict[int, float] = {}  # when a connector's signed share last changed
        self.der = der or {}
        unknown = set(self.der) - set(connectors)
        if unknown:
            raise ValueError(f"DER functions for connectors {sorted(unknown)} that this site does not run")
        self.grid = grid
        if self.der and grid is None:
            raise ValueError("DER functions need the grid voltage and frequency (grid=...)")
        if not der_period_s > 0:
            raise ValueError("der_period_s must be positive")
        self.der_period_s = der_period_s
        self.der_outputs: dict[int, DerOutput] = {}
        #: (energy needed in Wh, departure as monotonic time) per connector: the user's preferences.
        self.needs = needs
        #: The user's discharge floor (SoC %) per connector: no V2G below it (R84, R135).
        self.discharge_floor = discharge_floor
        #: The EV's state of charge (%) per connector at a time, None when unknown (ISO 15118 tells it).
        self.soc = soc
        #: Whether a connector's session carries a signed setpoint now (see the module docstring).
        self.bidirectional = bidirectional
        #: The least current (A) a connector's pilot keeps offering while its session carries the sign:
        #: a J3072 PEV follows its 2030.5 setpoint, and a PWM offer under 6 A would make it pause and open
        #: the contactor at every small or zero setpoint (firmware/j3072/service.py).
        self.offer_floor = offer_floor

    async def run(self) -> None:
        """A cycle every ``period_s``; with DER functions, the grid is also checked every
        ``der_period_s`` and a narrower DER window (a trip, a frequency response) gets a cycle at once,
        not at the next period: FFR at 49.5 Hz must act within 0.7 s (firmware/energy/der_frequency.py)."""
        period = self.manager.site.period_s
        next_cycle = self.clock.monotonic()
        while True:
            try:
                urgent = self.der_tick() if self.der else False
                if urgent or self.clock.monotonic() >= next_cycle - 1e-9:
                    self.step()
                    next_cycle = self.clock.monotonic() + period
            except Exception:  # the manager must never take the connectors down; they keep their fallback
                log.exception("energy manager cycle failed")
                next_cycle = self.clock.monotonic() + period
            wait = min(self.der_period_s, next_cycle - self.clock.monotonic()) if self.der else period
            await self.clock.sleep(max(0.0, wait))

    def der_tick(self) -> bool:
        """Run every connector's DER functions on the present grid measurement; True when a window
        narrowed (the shares must follow now)."""
        now = self.clock.monotonic()
        measured = self.grid() if self.grid is not None else None
        if measured is None:
            return False
        v_pu, f_hz = measured
        urgent = False
        for key, controller in self.der.items():
            previous = self.manager.connector_inputs[key].get(DER)
            share = self._offered_w(key)
            discharge = self.manager.connector_inputs[key].get(DISCHARGE)
            may_discharge = -discharge.min_w if discharge is not None and discharge.min_w < 0 else 0.0
            out = controller.step(now, v_pu, f_hz, share, p_discharge_max_w=may_discharge)
            self.der_outputs[key] = out
            if previous is not None and (previous.max_w, previous.min_w) == (out.p_max_w, out.p_min_w):
                continue
            detail = "; ".join(out.reasons) or "DER functions"
            if out.trip:
                detail = f"tripped ({out.trip}): {detail}"
            self.manager.set_connector_input(
                key, Bound(DER, max_w=out.p_max_w, min_w=out.p_min_w, priority=prio.GRID, detail=detail)
            )
            if previous is None or out.p_max_w < previous.max_w - 1.0 or out.p_min_w > previous.min_w + 1.0:
                urgent = True
        return urgent

    def step(self) -> CycleResult:
        now = self.clock.monotonic()
        if self.site_meter is not None:
            reading = self.site_meter()
            if reading is not None:
                self.manager.site_meter(reading, now)
        inputs = {k: self._input(k, c, now) for k, c in self.connectors.items()}
        result = self.manager.cycle(now, inputs)
        for k, c in self.connectors.items():
            self._apply(k, c, result, now)
        if self.on_cycle is not None:
            self.on_cycle(result)
        return result

    def setpoint(self, key: int) -> float | None:
        """The signed share of connector ``key`` (W: + charge, - discharge) while it is in force; None
        before the first cycle, for an unknown connector and once it expired (a stalled manager)."""
        share = self._shares.get(key)
        if share is None or self.clock.monotonic() >= share[1]:
            return None
        return share[0]

    # ------------------------------------------------------------------------------ reading
    def _input(self, key: int, connector: Connector, now: float) -> ConnectorInput:
        spec = self.manager.connectors[key]
        reading = connector.last_meter
        measured = reading.total_power_w if reading is not None else 0.0
        read_at = connector.last_meter_at if connector.last_meter_at is not None else -math.inf
        discharging = self._shares.get(key, (0.0, 0.0))[0] < 0
        if connector.contactor_changed_at > read_at:
            # The contactor moved after the connector's last meter reading (taken once a second), while
            # the site meter is read now: an EV that just started already shows on the site meter, one
            # that just stopped no longer does. Count the first at its offer (a discharging one at its
            # share), the second at nothing, or eq. 1.2.5.1 takes a starting EV for other load (and
            # pauses it) and a stopped one as still drawing (and over-grants).
            closed = connector.hal.contactor.commanded_closed
            offer = self._shares[key][0] if discharging else self._offered_w(key)
            measured = offer if closed else 0.0
        elif key in self._share_moved and read_at < self._share_moved[key] + SETTLE_S:
            # Not settled (see SETTLE_S): at most the share, the side on which the site stays under its
            # limit; a reading taken once it settled counts as it is (an EV that gives less than asked).
            measured = min(measured, self._shares[key][0])
        plugged = connector.debouncer.state in (CpState.B, CpState.C, CpState.D)
        stopped = any(faults.spec(code).reaction in _STOPPING for code in connector.supervisor.active)
        wants = plugged and connector.machine.inputs.authorized and not stopped
        chain = connector.limits.effective(now).chain
        own_a = min((link.current_a for link in chain if link.limit.source != sources.SITE), default=0.0)
        usage = self._usage[key]
        offered = self._offered_w(key)
        if wants and offered > 0 and not discharging and measured < UNUSED_SHARE * offered:
            usage.low_since = now if usage.low_since is None else usage.low_since
            if now - usage.low_since >= UNUSED_S and usage.cap_w is None:
                usage.cap_w, usage.capped_at = max(spec.min_active_w, measured + spec.watts_per_amp), now
        else:
            usage.low_since = None
            if usage.cap_w is not None and measured >= 0.9 * usage.cap_w:
                usage.cap_w = None  # it takes what it got: it may want more
        if usage.cap_w is not None and now - usage.capped_at >= PROBE_S:
            usage.cap_w, usage.low_since = None, None  # probe: offer the full share again
        if not wants:
            usage.cap_w, usage.low_since = None, None
        needed_wh, deadline = self.needs(key, now) if self.needs is not None else (0.0, None)
        return ConnectorInput(
            measured_w=measured,
            wants_power=wants,
            hardware_max_w=own_a * spec.watts_per_amp,
            ev_max_w=usage.cap_w,
            needed_wh=needed_wh,
            deadline=deadline,
            # The AC pilot does not tell the SoC; an ISO 15118-20 session does. Unknown SoC + a floor: no V2G.
            soc_pct=self._soc_of(key, now),
            discharge_floor_pct=self.discharge_floor(key) if self.discharge_floor is not None else None,
        )

    def _soc_of(self, key: int, now: float) -> float | None:
        if self.soc is None:
            return None
        try:
            value = self.soc(key, now)
        except Exception:  # a failing source is an unknown SoC: with a floor, no discharge
            log.exception("connector %d: reading the EV's state of charge failed", key)
            return None
        if value is None or not (math.isfinite(value) and 0.0 <= value <= 100.0):
            return None
        return float(value)

    def _carries_sign(self, key: int) -> bool:
        if self.bidirectional is None:
            return False
        try:
            return bool(self.bidirectional(key))
        except Exception:  # unknown: the charge-only limit (default deny)
            log.exception("connector %d: asking whether its session carries a signed setpoint failed", key)
            return False

    def _offered_w(self, key: int) -> float:
        """What the connector's ``site`` limit offers now, on the phases it runs on."""
        spec = self.manager.connectors[key]
        amps = self._applied.get(key, (0.0, 0.0))[0]
        return amps * spec.voltage_v * self.connectors[key].phases_active

    # ------------------------------------------------------------------------------ applying
    def _apply(self, key: int, connector: Connector, result: CycleResult, now: float) -> None:
        share = result.connectors[key]
        spec = self.manager.connectors[key]
        if spec.phase_switching:
            connector.request_phases(share.phases)
        signed = share.power_w < 0 and self._carries_sign(key)
        watts = -share.power_w if signed else max(0.0, share.power_w)
        amps = watts / (spec.voltage_v * connector.phases_for_limits)
        amps = math.floor(amps * 10 + 1e-9) / 10  # 0.1 A steps: never above the share
        if self.offer_floor is not None and not share.paused and self._carries_sign(key):
            amps = max(amps, self.offer_floor(key))
        lifetime = SHARE_LIFETIME_CYCLES * self.manager.site.period_s
        # The signed share lives as long as the limit it goes with; a negative one only where the session
        # carries the sign (elsewhere the connector cannot discharge: it is paused at 0 A).
        signed_w = share.power_w if signed or share.power_w >= 0 else 0.0
        before = self._shares.get(key)
        if signed_w < 0 or (before is not None and before[0] < 0):
            if before is None or abs(before[0] - signed_w) > 1.0:
                self._share_moved[key] = now
        else:
            self._share_moved.pop(key, None)  # charge-only: the connector's readings as they are
        self._shares[key] = (signed_w, now + lifetime)
        applied = self._applied.get(key)
        if applied is not None and applied[0] == amps and applied[1] - now > lifetime / 2:
            return  # unchanged and still well within its lifetime
        if signed:
            why = "site energy manager discharge share (its magnitude; the session sets the sign)"
        else:
            why = "paused by the site energy manager" if share.paused else "site energy manager share"
        connector.set_limit(Limit(sources.SITE, amps, expires_at=now + lifetime, detail=why))
        self._applied[key] = (amps, now + lifetime)
