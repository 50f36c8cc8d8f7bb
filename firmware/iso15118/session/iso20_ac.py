"""ISO 15118-20 AC and AC_BPT: AC_ChargeParameterDiscovery and AC_ChargeLoop over an :class:`Iso20AcPort`.

Powers are signed as everywhere in the firmware: positive charges the EV, negative discharges it (the
EV's EVPresentActivePower and the EVSE's EVSETargetActivePower carry the sign on the wire too). The
discharge *limits* of BPT are magnitudes (EVSEMaximumDischargePower >= 0).

Safety: the target power sent to the EV is always within [-allowed discharge, allowed charge], where
the allowed charge is the least of the EVSE's grant and the EV's maximum, and the allowed discharge is
the least of what the port authorises (:attr:`AcLimits.max_discharge_power_w`, 0 unless the energy
manager granted discharge) and the EV's maximum, and 0 for a service without BPT or in Standby.

An EV that gives back more than the charger grants (its EVPresentActivePower below minus the granted
discharge, 0 without BPT or in Standby, by more than :data:`OVER_DISCHARGE_TOLERANCE_W`; e.g. an
onboard inverter that ignores the target) in :data:`OVER_DISCHARGE_LOOPS` loops in a row is told to
Terminate: on AC the SECC cannot limit the EV's inverter itself, and discharge beyond the energy
manager's grant is never tolerated (default deny).

A three-phase total: with only the base element (no ``_L2``/``_L3``) a power is the sum over the phases
the connector has; with the per-phase elements present, the base is phase L1 and the total is the sum.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Protocol

from firmware.iso15118.session.iso20 import (
    Context,
    ControlMode,
    Energy,
    EvEnergyRequest,
    EvseNotification,
    Handler,
    Notice,
    Reply,
    ServiceId,
    bounded,
    clamp,
    dynamic_loop_needs,
    finite,
    loop_head,
    maybe_int,
    maybe_rational,
    need_bool,
    need_rational,
)
from firmware.iso15118.session.port import Authorisation, Notification
from firmware.iso15118.session.port_ac import AcEvsePort, AcLimits, EvAcParameters, Schedule
from firmware.iso15118.session.values import rational

#: Connector parameter of an AC parameter set (ISO 15118-20 Table 205). Single phase is 1 in every source;
#: three phase is 3 in libiso15118 (``AcConnector::ThreePhase``) but 2 in Josev: the table numbers the
#: AC connectors by phase count (two-phase is not offered), so 3 is used (standards-facts.md 2.6, 7).
AC_CONNECTOR_SINGLE_PHASE = 1
AC_CONNECTOR_THREE_PHASE = 3

_LOOP_MODES = {
    (ControlMode.SCHEDULED, False): "Scheduled_AC_CL{}ControlMode",
    (ControlMode.SCHEDULED, True): "BPT_Scheduled_AC_CL{}ControlMode",
    (ControlMode.DYNAMIC, False): "Dynamic_AC_CL{}ControlMode",
    (ControlMode.DYNAMIC, True): "BPT_Dynamic_AC_CL{}ControlMode",
}


class Iso20AcPort(AcEvsePort, Protocol):
    """The AC port plus what ISO 15118-20 asks beyond ISO 15118-2: the richer EVSE notifications
    (Pause, ExitStandby, ServiceRenegotiation, MeteringConfirmation). None: nothing beyond the base
    status (RCD trip and StopCharging become Terminate, ReNegotiation ScheduleRenegotiation)."""

    def notice(self) -> Notice | None: ...

    def ev_soc(self, soc_pct: int) -> None:
        """The EV's present state of charge from the charge loop (DisplayParameters PresentSOC, 0..100):
        the energy manager needs it for the discharge floor (no SoC, no discharge below a floor)."""
        ...


log = logging.getLogger(__name__)

#: How far below the allowed window the EV's reported power may be before it counts as over-discharge:
#: a ramp to a lower target and the meter's own accuracy need some room (a design choice, as large as
#: the 500 W step of the energy manager's hysteresis, firmware.energy.phases).
OVER_DISCHARGE_TOLERANCE_W = 500.0
#: Consecutive charge loops over the bound before the EV is told to Terminate (the EV gets the target
#: in each answer, so a compliant one is back inside within a loop or two).
OVER_DISCHARGE_LOOPS = 3


class AcPart:
    """The AC side of an ISO 15118-20 session (services AC and AC_BPT)."""

    kind = Energy.AC

    def __init__(self, port: Iso20AcPort) -> None:
        self.port = port
        self.ev: EvAcParameters | None = None  # the EV's limits and needs, as the energy manager has them
        self.over_discharge_loops = 0  # charge loops in a row with the EV giving back more than allowed
        self.over_discharge: str | None = None  # why the EV was told to Terminate, once it was

    # ------------------------------------------------------------------ the session's way to the charger
    @property
    def evse_id(self) -> str:
        return self.port.evse_id

    def services(self, bidirectional: bool) -> tuple[ServiceId, ...]:
        return (ServiceId.AC, ServiceId.AC_BPT) if bidirectional else (ServiceId.AC,)

    def service_parameters(self) -> dict[str, int]:
        limits = self.port.limits()
        connector = AC_CONNECTOR_SINGLE_PHASE if limits.phases == 1 else AC_CONNECTOR_THREE_PHASE
        return {"Connector": connector, "EVSENominalVoltage": round(limits.nominal_voltage_v)}

    def authorisation(self) -> Authorisation:
        return self.port.authorisation()

    def notice(self) -> Notice | None:
        notice = self.port.notice()
        if notice is not None:
            return notice
        status = self.port.status()
        if status.rcd_tripped:
            return Notice(EvseNotification.TERMINATE, 0)
        mapped = {
            Notification.STOP: EvseNotification.TERMINATE,
            Notification.RENEGOTIATE: EvseNotification.SCHEDULE_RENEGOTIATION,
        }.get(status.notification)
        return Notice(mapped, status.notification_max_delay_s) if mapped is not None else None

    def schedules(self) -> list[Schedule]:
        return self.port.schedules()

    def max_charge_power_w(self) -> float:
        return _max_charge(self.port.limits())

    def discharge_allowance_w(self) -> float:
        return _allowed_discharge(self.port.limits())

    def ev_needs(self, needs: EvEnergyRequest) -> None:
        self._tell(
            energy_request_wh=needs.target_energy_wh,
            max_energy_wh=needs.max_energy_wh,
            min_energy_wh=needs.min_energy_wh,
            departure_in_s=needs.departure_in_s,
            target_soc_pct=needs.target_soc_pct,
            min_soc_pct=needs.min_soc_pct,
        )

    def _tell(self, **changes: Any) -> None:
        """Merge what the EV said (absent values keep what it said before) and pass a change on to the
        energy manager: the dynamic loop repeats everything at every step."""
        base = self.ev or EvAcParameters()
        updated = replace(base, **{name: value for name, value in changes.items() if value is not None})
        if updated != self.ev:
            self.ev = updated
            self.port.ev_parameters(updated)

    def power_delivery(self, start: bool, schedule_id: int | None) -> bool:
        return self.port.power_delivery(start, schedule_id)

    def session_stopped(self, reason: str) -> None:
        self.port.session_stopped(reason)

    def handler(self, request: str) -> Handler | None:
        handlers: dict[str, Handler] = {
            "AC_ChargeParameterDiscoveryReq": self.charge_parameter_discovery,
            "AC_ChargeLoopReq": self.charge_loop,
        }
        return handlers.get(request)

    # ------------------------------------------------------------------ AC_ChargeParameterDiscovery
    def charge_parameter_discovery(self, ctx: Context, body: dict[str, Any]) -> Reply:
        bpt = ctx.selection.bpt
        key = "BPT_AC_CPDReqEnergyTransferMode" if bpt else "AC_CPDReqEnergyTransferMode"
        mode = body.get(key)
        if not isinstance(mode, dict):  # BPT parameters for a service without it, or the other way round
            return Reply("FAILED_WrongChargeParameter", self._cpd_fields(bpt))
        ev = EvAcParameters(
            max_power_w=_total(mode, "EVMaximumChargePower"),
            min_power_w=_total(mode, "EVMinimumChargePower"),
            max_discharge_power_w=_total(mode, "EVMaximumDischargePower") if bpt else None,
            min_discharge_power_w=_total(mode, "EVMinimumDischargePower") if bpt else None,
        )
        assert ev.max_power_w is not None and ev.min_power_w is not None
        limits = self.port.limits()
        discharge_window_bad = bpt and (ev.min_discharge_power_w or 0.0) > (ev.max_discharge_power_w or 0.0)
        if (
            min(ev.max_power_w, ev.min_power_w, ev.max_discharge_power_w or 0.0, ev.min_discharge_power_w or 0.0) < 0
            or ev.min_power_w > ev.max_power_w
            or discharge_window_bad
            or ev.min_power_w > _max_charge(limits)  # the EV cannot take as little as this EVSE gives
        ):
            return Reply("FAILED_WrongChargeParameter", self._cpd_fields(bpt))
        self.ev = ev
        self.port.ev_parameters(ev)
        return Reply("OK", self._cpd_fields(bpt))

    def _cpd_fields(self, bpt: bool) -> dict[str, Any]:
        limits = self.port.limits()
        mode: dict[str, Any] = {
            "EVSEMaximumChargePower": bounded(_max_charge(limits)),
            "EVSEMinimumChargePower": bounded(_min_charge(limits)),
            "EVSENominalFrequency": rational(limits.nominal_frequency_hz),
        }
        if bpt:  # only what the energy manager authorises now: 0 when it did not
            allowed = _allowed_discharge(limits)
            mode["EVSEMaximumDischargePower"] = bounded(allowed)
            mode["EVSEMinimumDischargePower"] = bounded(min(max(0.0, finite(limits.min_discharge_power_w)), allowed))
        return {("BPT_AC_CPDResEnergyTransferMode" if bpt else "AC_CPDResEnergyTransferMode"): mode}

    # ------------------------------------------------------------------ AC_ChargeLoop
    def charge_loop(self, ctx: Context, body: dict[str, Any]) -> Reply:
        selection = ctx.selection
        key = (selection.control_mode, selection.bpt)
        mode = body.get(_LOOP_MODES[key].format("Req"))
        if not isinstance(mode, dict):  # another control mode or service than selected (libiso15118: FAILED)
            return Reply("FAILED", {})
        requested = need_bool(body, "MeterInfoRequested")
        soc = maybe_int(body.get("DisplayParameters"), "PresentSOC", 0, 100)
        if soc is not None:
            self.port.ev_soc(soc)
        present = _total(mode, "EVPresentActivePower")
        ev_max = _total_opt(mode, "EVMaximumChargePower")
        ev_max_discharge = _total_opt(mode, "EVMaximumDischargePower") if selection.bpt else None
        dynamic = selection.control_mode is ControlMode.DYNAMIC
        if dynamic:
            self._dynamic_update(mode, ev_max, ev_max_discharge, selection.bpt)
        low, high = self.window(ctx, ev_max, ev_max_discharge)
        # The EV's own maximum may fall below what it gives now (it follows in the next loop): only the
        # grant bounds what counts as over-discharge.
        granted = 0.0 if ctx.standby or not selection.bpt else _allowed_discharge(self.port.limits())
        over = self._watch_discharge(present, -granted)
        setpoint = self.port.charge_loop(present)
        notice = over or self.notice()  # after the port has seen this loop
        target = setpoint.target_power_w
        res: dict[str, Any] = {}
        if dynamic or target is not None:
            # Dynamic needs a target; with none from the port the EV may take what is granted (never discharge).
            res["EVSETargetActivePower"] = bounded(clamp(high if target is None else target, low, high))
        res["EVSEPresentActivePower"] = rational(finite(setpoint.present_power_w))
        head = loop_head(notice, self.port.meter(), requested, ctx.timestamp)
        return Reply("OK", {**head, _LOOP_MODES[key].format("Res"): res})

    def _watch_discharge(self, present_w: float, low_w: float) -> Notice | None:
        """Terminate once the EV gave back more than allowed in OVER_DISCHARGE_LOOPS loops in a row."""
        if self.over_discharge is None:
            if present_w < low_w - OVER_DISCHARGE_TOLERANCE_W:
                self.over_discharge_loops += 1
            else:
                self.over_discharge_loops = 0
            if self.over_discharge_loops >= OVER_DISCHARGE_LOOPS:
                self.over_discharge = (
                    f"the EV discharged {-present_w:.0f} W with {max(0.0, -low_w):.0f} W allowed "
                    f"in {OVER_DISCHARGE_LOOPS} charge loops in a row"
                )
                log.warning("ISO 15118-20 AC: %s: told to Terminate", self.over_discharge)
        return Notice(EvseNotification.TERMINATE, 0) if self.over_discharge is not None else None

    def window(self, ctx: Context, ev_max: float | None, ev_max_discharge: float | None) -> tuple[float, float]:
        """The target power's bounds now: [-allowed discharge, allowed charge] (both 0 in Standby)."""
        if ctx.standby:
            return 0.0, 0.0
        limits = self.port.limits()
        ev = self.ev or EvAcParameters()
        ev_charge = ev_max if ev_max is not None else ev.max_power_w
        high = _max_charge(limits)
        if ev_charge is not None:
            high = min(high, max(0.0, finite(ev_charge)))
        if not ctx.selection.bpt:
            return 0.0, high
        ev_discharge = ev_max_discharge if ev_max_discharge is not None else ev.max_discharge_power_w
        allowed = min(_allowed_discharge(limits), max(0.0, finite(ev_discharge or 0.0)))
        return -allowed, high

    def _dynamic_update(self, mode: dict[str, Any], ev_max: float | None, ev_max_dis: float | None, bpt: bool) -> None:
        """The dynamic loop repeats the EV's limits and needs (Dynamic_AC_CLReqControlModeType)."""
        needs = dynamic_loop_needs(mode)
        self._tell(
            max_power_w=ev_max,
            min_power_w=_total_opt(mode, "EVMinimumChargePower"),
            max_discharge_power_w=ev_max_dis if bpt else None,
            min_discharge_power_w=_total_opt(mode, "EVMinimumDischargePower") if bpt else None,
            energy_request_wh=needs.target_energy_wh,
            max_energy_wh=needs.max_energy_wh,
            min_energy_wh=needs.min_energy_wh,
            departure_in_s=needs.departure_in_s,
        )


def _max_charge(limits: AcLimits) -> float:
    """The most the EVSE gives over all its phases: its power limit and its current limit."""
    by_current = limits.nominal_voltage_v * limits.max_current_a * limits.phases
    power = by_current if limits.max_power_w is None else min(limits.max_power_w, by_current)
    return max(0.0, finite(power))


def _min_charge(limits: AcLimits) -> float:
    return max(0.0, finite(limits.nominal_voltage_v * limits.min_current_a * limits.phases))


def _allowed_discharge(limits: AcLimits) -> float:
    return max(0.0, finite(limits.max_discharge_power_w))


def _total_opt(mode: dict[str, Any], name: str) -> float | None:
    base = maybe_rational(mode, name)
    if base is None:
        return None
    return base + (maybe_rational(mode, name + "_L2") or 0.0) + (maybe_rational(mode, name + "_L3") or 0.0)


def _total(mode: dict[str, Any], name: str) -> float:
    value = _total_opt(mode, name)
    return need_rational(mode, name) if value is None else value
