"""The safety supervisor: turns measurements into faults, and applies each fault's recovery rule.

The connector runtime reports *conditions* (``condition(code, present, now)``) as it measures them;
the supervisor raises a fault the moment its condition appears and clears it only as the catalogue
(:mod:`firmware.safety.faults`) allows: AUTO when the condition is gone, UNPLUG when the condition is
gone and the EV has been unplugged since, SERVICE never by itself. The connector asks it whether an
EMERGENCY or a STOP fault is active and which faults were raised since it last looked.

Also here: the pure checks that need memory over time, each a small class: soft/hard over-current
and the staged thermal derating.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware.safety.faults import CATALOGUE, FaultCode, Reaction, Recovery


@dataclass
class ActiveFault:
    code: FaultCode
    raised_at: float
    detail: str
    condition_present: bool = True
    condition_gone_at: float | None = None
    unplugged_since_gone: bool = False


@dataclass(frozen=True)
class FaultEvent:
    code: FaultCode
    raised: bool  # True = raised, False = cleared
    at: float
    detail: str


class Supervisor:
    def __init__(self) -> None:
        self.active: dict[FaultCode, ActiveFault] = {}
        self._events: list[FaultEvent] = []
        self._new_emergency = False
        self.ev_connected = False  # an UNPLUG fault whose condition goes while no EV is there clears

    # ------------------------------------------------------------------ inputs
    def condition(self, code: FaultCode, present: bool, now: float, detail: str = "") -> None:
        """Report whether the condition behind ``code`` holds now."""
        fault = self.active.get(code)
        if present:
            if fault is None:
                self.active[code] = ActiveFault(code, now, detail)
                self._events.append(FaultEvent(code, True, now, detail))
                if CATALOGUE[code].reaction is Reaction.EMERGENCY:
                    self._new_emergency = True
            else:
                fault.condition_present = True
                fault.condition_gone_at = None
                fault.unplugged_since_gone = False
            return
        if fault is None:
            return
        if fault.condition_present:
            fault.condition_present = False
            fault.condition_gone_at = now
        self._try_clear(fault, now)

    def raise_fault(self, code: FaultCode, now: float, detail: str = "") -> None:
        """A fault that is an event rather than a level (welding seen once): raised, condition gone."""
        self.condition(code, True, now, detail)
        self.condition(code, False, now)

    def ev_plugged(self) -> None:
        self.ev_connected = True

    def ev_unplugged(self, now: float) -> None:
        """The pilot reads A: UNPLUG faults whose condition is gone may clear."""
        self.ev_connected = False
        for fault in list(self.active.values()):
            if not fault.condition_present:
                fault.unplugged_since_gone = True
                self._try_clear(fault, now)

    def service_clear(self, code: FaultCode, now: float) -> bool:
        """An operator clears a fault (any recovery rule) once its condition is gone."""
        fault = self.active.get(code)
        if fault is None or fault.condition_present:
            return False
        self._clear(fault, now)
        return True

    def _try_clear(self, fault: ActiveFault, now: float) -> None:
        recovery = CATALOGUE[fault.code].recovery
        if fault.condition_present or recovery is Recovery.SERVICE:
            return
        if recovery is Recovery.UNPLUG and not fault.unplugged_since_gone and self.ev_connected:
            return
        self._clear(fault, now)

    def _clear(self, fault: ActiveFault, now: float) -> None:
        del self.active[fault.code]
        self._events.append(FaultEvent(fault.code, False, now, fault.detail))

    # ------------------------------------------------------------------ outputs
    @property
    def emergency(self) -> bool:
        return any(CATALOGUE[c].reaction is Reaction.EMERGENCY for c in self.active)

    @property
    def stop(self) -> bool:
        return any(CATALOGUE[c].reaction is Reaction.STOP for c in self.active)

    def take_new_emergency(self) -> bool:
        """True once for every batch of EMERGENCY faults raised since the last call."""
        new, self._new_emergency = self._new_emergency, False
        return new

    def take_events(self) -> list[FaultEvent]:
        events, self._events = self._events, []
        return events


# ------------------------------------------------------------------------------ over-current
#: Soft over-current: above the offered limit + 10 % + 0.5 A for 7 s (EVerest EvseManager, "Emergency
#: shutdown according to IEC 61851-23 Table CC.10"; anchors.md 1.2).
SOFT_OVERCURRENT_FACTOR = 1.10
SOFT_OVERCURRENT_MARGIN_A = 0.5
SOFT_OVERCURRENT_TIME_S = 7.0


class OvercurrentCheck:
    """Soft: measured > offered x 1.1 + 0.5 A for 7 s. Hard: measured > hardware rating (board or
    cable) x 1.1 + 0.5 A, at once: the rating protects the cable and the contacts, the offer only
    asks the EV to behave."""

    def __init__(self) -> None:
        self._over_since: float | None = None

    def check(self, *, current_a: float, offered_a: float | None, rating_a: float, now: float) -> tuple[bool, bool]:
        """(soft, hard) conditions at ``now``. ``offered_a`` is None while no current is offered."""
        hard = current_a > rating_a * SOFT_OVERCURRENT_FACTOR + SOFT_OVERCURRENT_MARGIN_A
        limit = offered_a if offered_a is not None else 0.0
        over = current_a > limit * SOFT_OVERCURRENT_FACTOR + SOFT_OVERCURRENT_MARGIN_A
        if not over:
            self._over_since = None
            return False, hard
        if self._over_since is None:
            self._over_since = now
        # 1 µs of slack: readings on a 1 s grid must trip at the 7th, not miss it by float rounding.
        return now - self._over_since >= SOFT_OVERCURRENT_TIME_S - 1e-6, hard


class UnauthorisedDischargeCheck:
    """An EV that exports while its discharge is not authorised (R152: no discharge without J3072
    authorisation). The EVSE's gate only tells the PEV; this is the EVSE's own check that the PEV obeyed.
    The time covers a PEV that was discharging when its authorisation ended: it learns at its next poll
    (1 s), follows within its ramp, and the meter's mean over its 1 s read period lags one more period."""

    #: 1 A at 230 V: the meter's noise floor and a PEV's standby flows stay below it.
    EXPORT_W = 230.0
    TIME_S = 5.0

    def __init__(self) -> None:
        self._since: float | None = None

    def check(self, *, power_w: float, permitted: bool, now: float) -> bool:
        """True once an unpermitted export of more than EXPORT_W has lasted TIME_S."""
        if permitted or power_w >= -self.EXPORT_W:
            self._since = None
            return False
        if self._since is None:
            self._since = now
        return now - self._since >= self.TIME_S - 1e-6


# ------------------------------------------------------------------------------ thermal
#: Staged derating as OpenEVSE does it (anchors.md 3: 65 °C -> 1/2 current, 68 °C -> 1/4, 71 °C ->
#: stop; restore 3 °C below the first step). The board file gives each sensor's first step
#: (``derate_from_c``) and its trip (``trip_c``); the middle step sits half-way.
THERMAL_HYSTERESIS_C = 3.0
THERMAL_HALF = 0.5
THERMAL_QUARTER = 0.25


@dataclass(frozen=True)
class ThermalVerdict:
    factor: float  # 1.0, 0.5 or 0.25 of the rating; 0.0 = stop
    hottest: str  # sensor name that decides
    temperature_c: float


class ThermalCheck:
    """Per-sensor staged derating with hysteresis: the step only falls back once every sensor is
    3 °C below the step's threshold."""

    def __init__(self, thresholds: dict[str, tuple[float, float]]) -> None:
        # name -> (derate_from_c, trip_c)
        self.thresholds = thresholds
        self._factor: dict[str, float] = dict.fromkeys(thresholds, 1.0)

    def update(self, readings: dict[str, float]) -> ThermalVerdict:
        worst = ThermalVerdict(1.0, "", float("nan"))
        for name, temp in readings.items():
            derate, trip = self.thresholds[name]
            middle = (derate + trip) / 2
            wanted = 1.0
            if temp >= trip:
                wanted = 0.0
            elif temp >= middle:
                wanted = THERMAL_QUARTER
            elif temp >= derate:
                wanted = THERMAL_HALF
            current = self._factor[name]
            if wanted < current:
                current = wanted
            else:
                # Step back up one level at a time, each only 3 °C below its own threshold.
                for factor, threshold, up in ((0.0, trip, THERMAL_QUARTER), (THERMAL_QUARTER, middle, THERMAL_HALF),
                                              (THERMAL_HALF, derate, 1.0)):  # fmt: skip
                    if current == factor and temp < threshold - THERMAL_HYSTERESIS_C and up <= wanted:
                        current = up
            self._factor[name] = current
            if current < worst.factor or not worst.hottest:
                worst = ThermalVerdict(current, name, temp)
        return worst
