"""ISO 15118-20 DC and DC_BPT: DC_ChargeParameterDiscovery, DC_CableCheck, DC_PreCharge, DC_ChargeLoop and
DC_WeldingDetection over an :class:`Iso20DcPort`.

Currents and powers are signed as everywhere in the firmware: positive charges the EV, negative
discharges it (EVTargetCurrent < 0 asks for discharge in the scheduled BPT loop); the discharge *limits*
of BPT are magnitudes (EVSEMaximumDischargePower >= 0).

Safety: a discharge current is never passed to the converter beyond what the port authorises
(:meth:`Iso20DcPort.discharge_limits`, all 0 unless the energy manager granted discharge), nor for a
service without BPT, nor in Standby; and the discharge limits announced to the EV are the authorised ones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from firmware.iso15118.session.iso20 import (
    PROCESSING,
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
    dynamic_loop_needs,
    finite,
    loop_head,
    maybe_int,
    maybe_rational,
    need_bool,
    need_choice,
    need_rational,
)
from firmware.iso15118.session.port import (
    Authorisation,
    DcEvsePort,
    DcLimits,
    DcOutput,
    DcTarget,
    EvDcStatus,
    EvseStatusCode,
    Isolation,
    Notification,
)
from firmware.iso15118.session.port_ac import MeterInfo, Schedule
from firmware.iso15118.session.values import rational

#: Connector parameter of a DC parameter set (ISO 15118-20 Table 207, standards-facts.md 2.6): CCS is the
#: extended DC connector (DIN 70121 and -2 call it DC_extended).
DC_CONNECTOR_EXTENDED = 2
#: -20 DC_PreChargeReq has no target current: the converter precharges with the 2 A DIN 70121 and
#: ISO 15118-2 allow the EV to ask for in PreChargeReq.
PRECHARGE_CURRENT_A = 2.0

_LOOP_MODES = {
    (ControlMode.SCHEDULED, False): "Scheduled_DC_CL{}ControlMode",
    (ControlMode.SCHEDULED, True): "BPT_Scheduled_DC_CL{}ControlMode",
    (ControlMode.DYNAMIC, False): "Dynamic_DC_CL{}ControlMode",
    (ControlMode.DYNAMIC, True): "BPT_Dynamic_DC_CL{}ControlMode",
}
_TERMINATING = (EvseStatusCode.SHUTDOWN, EvseStatusCode.EMERGENCY, EvseStatusCode.MALFUNCTION)


@dataclass(frozen=True)
class DcDischargeLimits:
    """What the energy manager authorises the EV to give back now (DC_BPT): all 0 = no discharge."""

    max_power_w: float = 0.0
    max_current_a: float = 0.0
    min_power_w: float = 0.0
    min_current_a: float = 0.0


@dataclass(frozen=True)
class EvDcParameters20:
    """The EV's DC_ChargeParameterDiscovery limits and its needs from ScheduleExchange / the dynamic loop,
    for the energy manager as the user's preferences."""

    max_power_w: float
    min_power_w: float
    max_current_a: float
    min_current_a: float
    max_voltage_v: float
    min_voltage_v: float
    target_soc_pct: int | None = None
    max_discharge_power_w: float | None = None
    min_discharge_power_w: float | None = None
    max_discharge_current_a: float | None = None
    min_discharge_current_a: float | None = None
    departure_in_s: int | None = None
    energy_request_wh: float | None = None
    max_energy_wh: float | None = None
    min_energy_wh: float | None = None
    min_soc_pct: int | None = None
    max_v2x_energy_wh: float | None = None
    min_v2x_energy_wh: float | None = None


@dataclass(frozen=True)
class DcDynamicDemand:
    """One dynamic-mode loop step: the window the energy manager picks the power in (the EVSE controls
    the power in dynamic mode). Charge and discharge windows are already the least of the EVSE's, the
    EV's and (for discharge) the authorised limits; both 0 in Standby, discharge 0 without BPT."""

    present_voltage_v: float
    max_power_w: float
    min_power_w: float
    max_current_a: float
    max_voltage_v: float
    min_voltage_v: float
    max_discharge_power_w: float = 0.0
    max_discharge_current_a: float = 0.0
    departure_in_s: int | None = None
    energy_request_wh: float | None = None
    max_energy_wh: float | None = None
    min_energy_wh: float | None = None


class Iso20DcPort(DcEvsePort, Protocol):
    """The DC port plus what ISO 15118-20 asks beyond DIN 70121 / ISO 15118-2."""

    def notice(self) -> Notice | None:
        """The richer -20 notifications; None: only what the base status says (a shutdown, emergency or
        malfunction and StopCharging become Terminate, ReNegotiation ScheduleRenegotiation)."""
        ...

    def discharge_limits(self) -> DcDischargeLimits:
        """The discharge the energy manager authorises now (J3072 / site limits): zeros when none."""
        ...

    def ev_parameters_20(self, params: EvDcParameters20) -> None: ...

    def schedules(self) -> list[Schedule]:
        """The offers for the EV now (scheduled control mode), as for AC."""
        ...

    def dynamic_demand(self, demand: DcDynamicDemand) -> DcOutput:
        """Dynamic control mode: drive the output within the window; report what is delivered (current
        signed: negative while discharging)."""
        ...

    def meter(self) -> MeterInfo | None: ...


class DcPart:
    """The DC side of an ISO 15118-20 session (services DC and DC_BPT)."""

    kind = Energy.DC

    def __init__(self, port: Iso20DcPort) -> None:
        self.port = port
        self.ev: EvDcParameters20 | None = None

    # ------------------------------------------------------------------ the session's way to the charger
    @property
    def evse_id(self) -> str:
        return self.port.evse_id

    def services(self, bidirectional: bool) -> tuple[ServiceId, ...]:
        return (ServiceId.DC, ServiceId.DC_BPT) if bidirectional else (ServiceId.DC,)

    def service_parameters(self) -> dict[str, int]:
        return {"Connector": DC_CONNECTOR_EXTENDED}

    def authorisation(self) -> Authorisation:
        return self.port.authorisation()

    def notice(self) -> Notice | None:
        notice = self.port.notice()
        if notice is not None:
            return notice
        status = self.port.status()
        if status.code in _TERMINATING or status.notification is Notification.STOP:
            return Notice(EvseNotification.TERMINATE, status.notification_max_delay_s)
        if status.notification is Notification.RENEGOTIATE:
            return Notice(EvseNotification.SCHEDULE_RENEGOTIATION, status.notification_max_delay_s)
        return None

    def schedules(self) -> list[Schedule]:
        return self.port.schedules()

    def max_charge_power_w(self) -> float:
        return max(0.0, finite(self.port.limits().max_power_w))

    def discharge_allowance_w(self) -> float:
        return self.discharge().max_power_w

    def discharge(self) -> DcDischargeLimits:
        """The port's authorised discharge, made safe: non-negative, finite, minimums within maximums."""
        raw = self.port.discharge_limits()
        power, current = max(0.0, finite(raw.max_power_w)), max(0.0, finite(raw.max_current_a))
        return DcDischargeLimits(
            max_power_w=power,
            max_current_a=current,
            min_power_w=min(max(0.0, finite(raw.min_power_w)), power),
            min_current_a=min(max(0.0, finite(raw.min_current_a)), current),
        )

    def ev_needs(self, needs: EvEnergyRequest) -> None:
        self._tell(
            departure_in_s=needs.departure_in_s,
            energy_request_wh=needs.target_energy_wh,
            max_energy_wh=needs.max_energy_wh,
            min_energy_wh=needs.min_energy_wh,
            target_soc_pct=needs.target_soc_pct,
            min_soc_pct=needs.min_soc_pct,
            max_v2x_energy_wh=needs.max_v2x_energy_wh,
            min_v2x_energy_wh=needs.min_v2x_energy_wh,
        )

    def _tell(self, **changes: Any) -> None:
        """Merge what the EV said into its parameters (absent values keep what it said before) and pass a
        change on to the energy manager. Before ChargeParameterDiscovery there is nothing to merge into."""
        if self.ev is None:
            return
        updated = replace(self.ev, **{name: value for name, value in changes.items() if value is not None})
        if updated != self.ev:
            self.ev = updated
            self.port.ev_parameters_20(updated)

    def power_delivery(self, start: bool, schedule_id: int | None) -> bool:
        return self.port.power_delivery(start)

    def session_stopped(self, reason: str) -> None:
        self.port.session_stopped(reason)

    def handler(self, request: str) -> Handler | None:
        handlers: dict[str, Handler] = {
            "DC_ChargeParameterDiscoveryReq": self.charge_parameter_discovery,
            "DC_CableCheckReq": self.cable_check,
            "DC_PreChargeReq": self.pre_charge,
            "DC_ChargeLoopReq": self.charge_loop,
            "DC_WeldingDetectionReq": self.welding_detection,
        }
        return handlers.get(request)

    # ------------------------------------------------------------------ DC_ChargeParameterDiscovery
    def charge_parameter_discovery(self, ctx: Context, body: dict[str, Any]) -> Reply:
        bpt = ctx.selection.bpt
        mode = body.get("BPT_DC_CPDReqEnergyTransferMode" if bpt else "DC_CPDReqEnergyTransferMode")
        if not isinstance(mode, dict):  # BPT parameters for a service without it, or the other way round
            return Reply("FAILED_WrongChargeParameter", self._cpd_fields(bpt))
        ev = EvDcParameters20(
            max_power_w=need_rational(mode, "EVMaximumChargePower"),
            min_power_w=need_rational(mode, "EVMinimumChargePower"),
            max_current_a=need_rational(mode, "EVMaximumChargeCurrent"),
            min_current_a=need_rational(mode, "EVMinimumChargeCurrent"),
            max_voltage_v=need_rational(mode, "EVMaximumVoltage"),
            min_voltage_v=need_rational(mode, "EVMinimumVoltage"),
            target_soc_pct=maybe_int(mode, "TargetSOC", 0, 100),
            max_discharge_power_w=need_rational(mode, "EVMaximumDischargePower") if bpt else None,
            min_discharge_power_w=need_rational(mode, "EVMinimumDischargePower") if bpt else None,
            max_discharge_current_a=need_rational(mode, "EVMaximumDischargeCurrent") if bpt else None,
            min_discharge_current_a=need_rational(mode, "EVMinimumDischargeCurrent") if bpt else None,
        )
        limits = self.port.limits()
        windows = [(ev.min_power_w, ev.max_power_w), (ev.min_current_a, ev.max_current_a)]
        windows.append((ev.min_voltage_v, ev.max_voltage_v))
        if bpt:
            windows.append((ev.min_discharge_power_w or 0.0, ev.max_discharge_power_w or 0.0))
            windows.append((ev.min_discharge_current_a or 0.0, ev.max_discharge_current_a or 0.0))
        if (
            any(low < 0 or low > high for low, high in windows)
            or ev.max_voltage_v < limits.min_voltage_v  # no voltage both can work at
            or ev.min_voltage_v > limits.max_voltage_v
        ):
            return Reply("FAILED_WrongChargeParameter", self._cpd_fields(bpt))
        self.ev = ev
        self.port.ev_parameters_20(ev)
        return Reply("OK", self._cpd_fields(bpt))

    def _cpd_fields(self, bpt: bool) -> dict[str, Any]:
        limits = self.port.limits()
        mode: dict[str, Any] = {
            "EVSEMaximumChargePower": bounded(finite(limits.max_power_w)),
            "EVSEMinimumChargePower": bounded(_min_power(limits)),
            "EVSEMaximumChargeCurrent": bounded(finite(limits.max_current_a)),
            "EVSEMinimumChargeCurrent": bounded(finite(limits.min_current_a)),
            "EVSEMaximumVoltage": bounded(finite(limits.max_voltage_v)),
            "EVSEMinimumVoltage": bounded(finite(limits.min_voltage_v)),
        }
        if bpt:  # only what the energy manager authorises now: 0 when it did not
            allowed = self.discharge()
            mode["EVSEMaximumDischargePower"] = bounded(allowed.max_power_w)
            mode["EVSEMinimumDischargePower"] = bounded(allowed.min_power_w)
            mode["EVSEMaximumDischargeCurrent"] = bounded(allowed.max_current_a)
            mode["EVSEMinimumDischargeCurrent"] = bounded(allowed.min_current_a)
        return {("BPT_DC_CPDResEnergyTransferMode" if bpt else "DC_CPDResEnergyTransferMode"): mode}

    # ------------------------------------------------------------------ cable check, precharge, welding
    def cable_check(self, ctx: Context, body: dict[str, Any]) -> Reply:
        isolation = self.port.cable_check()
        if isolation is Isolation.FAULT:
            return Reply("FAILED", {"EVSEProcessing": "Finished"})
        done = isolation in (Isolation.VALID, Isolation.WARNING)
        return Reply("OK", {"EVSEProcessing": "Finished" if done else "Ongoing"}, finished=done)

    def pre_charge(self, ctx: Context, body: dict[str, Any]) -> Reply:
        need_choice(body, "EVProcessing", PROCESSING)
        need_rational(body, "EVPresentVoltage")
        target = need_rational(body, "EVTargetVoltage")
        limits = self.port.limits()
        if not 0.0 <= target <= limits.max_voltage_v:
            return Reply("FAILED_WrongChargeParameter", {})
        out = self.port.precharge(DcTarget(voltage_v=target, current_a=PRECHARGE_CURRENT_A))
        return Reply("OK", {"EVSEPresentVoltage": rational(finite(out.voltage_v))})

    def welding_detection(self, ctx: Context, body: dict[str, Any]) -> Reply:
        need_choice(body, "EVProcessing", PROCESSING)
        return Reply("OK", {"EVSEPresentVoltage": rational(finite(self.port.welding_detection()))})

    # ------------------------------------------------------------------ DC_ChargeLoop
    def charge_loop(self, ctx: Context, body: dict[str, Any]) -> Reply:
        selection = ctx.selection
        key = (selection.control_mode, selection.bpt)
        mode = body.get(_LOOP_MODES[key].format("Req"))
        if not isinstance(mode, dict):  # another control mode or service than selected (libiso15118: FAILED)
            return Reply("FAILED", {})
        requested = need_bool(body, "MeterInfoRequested")
        present_v = need_rational(body, "EVPresentVoltage")
        display = body.get("DisplayParameters")
        soc = maybe_int(display, "PresentSOC", 0, 100)
        if soc is not None:  # -20 has no EVReady / error code: the EV stops by message
            self.port.ev_status(EvDcStatus(ready=True, error="NO_ERROR", soc_pct=soc))
        complete = isinstance(display, dict) and display.get("ChargingComplete") is True
        limits = self.port.limits()
        allowed = self.discharge() if selection.bpt and not ctx.standby else DcDischargeLimits()
        if selection.control_mode is ControlMode.SCHEDULED:
            out = self._scheduled(ctx, mode, present_v, complete, limits, allowed)
        else:
            out = self._dynamic(ctx, mode, present_v, limits, allowed)
        res: dict[str, Any] = {
            "EVSEMaximumChargePower": bounded(finite(limits.max_power_w)),
            "EVSEMinimumChargePower": bounded(_min_power(limits)),
            "EVSEMaximumChargeCurrent": bounded(finite(limits.max_current_a)),
            "EVSEMaximumVoltage": bounded(finite(limits.max_voltage_v)),
        }
        if selection.bpt:
            res["EVSEMaximumDischargePower"] = bounded(allowed.max_power_w)
            res["EVSEMinimumDischargePower"] = bounded(allowed.min_power_w)
            res["EVSEMaximumDischargeCurrent"] = bounded(allowed.max_current_a)
            res["EVSEMinimumVoltage"] = bounded(finite(limits.min_voltage_v))
        return Reply(
            "OK",
            {
                **loop_head(self.notice(), self.port.meter(), requested, ctx.timestamp),
                "EVSEPresentCurrent": rational(finite(out.current_a)),
                "EVSEPresentVoltage": rational(finite(out.voltage_v)),
                "EVSEPowerLimitAchieved": out.power_limit_achieved,
                "EVSECurrentLimitAchieved": out.current_limit_achieved,
                "EVSEVoltageLimitAchieved": out.voltage_limit_achieved,
                _LOOP_MODES[key].format("Res"): res,
            },
        )

    def _scheduled(
        self,
        ctx: Context,
        mode: dict[str, Any],
        present_v: float,
        complete: bool,
        limits: DcLimits,
        allowed: DcDischargeLimits,
    ) -> DcOutput:
        """The EV drives: its target current, within the EVSE's limits, and a discharge current only
        within the authorised discharge (and the EV's own maximum)."""
        voltage = need_rational(mode, "EVTargetVoltage")
        current = need_rational(mode, "EVTargetCurrent")
        volts = max(voltage, present_v, 1.0)  # the higher voltage: the smaller current for a power limit
        high = 0.0 if ctx.standby else max(0.0, min(finite(limits.max_current_a), finite(limits.max_power_w) / volts))
        low = -min(allowed.max_current_a, allowed.max_power_w / volts)
        ev_dis_current = maybe_rational(mode, "EVMaximumDischargeCurrent")
        ev_dis_power = maybe_rational(mode, "EVMaximumDischargePower")
        if ev_dis_current is not None:
            low = max(low, -max(0.0, ev_dis_current))
        if ev_dis_power is not None:
            low = max(low, -max(0.0, ev_dis_power) / volts)
        target = DcTarget(
            voltage_v=voltage,
            current_a=min(max(finite(current), min(low, 0.0)), high),
            max_voltage_v=maybe_rational(mode, "EVMaximumVoltage"),
            max_current_a=maybe_rational(mode, "EVMaximumChargeCurrent"),
            max_power_w=maybe_rational(mode, "EVMaximumChargePower"),
            charging_complete=complete,
        )
        return self.port.current_demand(target)

    def _dynamic(
        self, ctx: Context, mode: dict[str, Any], present_v: float, limits: DcLimits, allowed: DcDischargeLimits
    ) -> DcOutput:
        """The EVSE drives: the energy manager picks the power within the EVSE's and the EV's windows."""
        needs = dynamic_loop_needs(mode)
        ev_max_p = need_rational(mode, "EVMaximumChargePower")
        ev_max_i = need_rational(mode, "EVMaximumChargeCurrent")
        ev_max_v = need_rational(mode, "EVMaximumVoltage")
        ev_min_v = need_rational(mode, "EVMinimumVoltage")
        ev_min_p = need_rational(mode, "EVMinimumChargePower")
        ev_dis_p = maybe_rational(mode, "EVMaximumDischargePower")
        ev_dis_i = maybe_rational(mode, "EVMaximumDischargeCurrent")
        self._tell(
            max_power_w=ev_max_p,
            min_power_w=ev_min_p,
            max_current_a=ev_max_i,
            max_voltage_v=ev_max_v,
            min_voltage_v=ev_min_v,
            max_discharge_power_w=ev_dis_p,
            min_discharge_power_w=maybe_rational(mode, "EVMinimumDischargePower"),
            max_discharge_current_a=ev_dis_i,
            departure_in_s=needs.departure_in_s,
            energy_request_wh=needs.target_energy_wh,
            max_energy_wh=needs.max_energy_wh,
            min_energy_wh=needs.min_energy_wh,
            max_v2x_energy_wh=needs.max_v2x_energy_wh,
            min_v2x_energy_wh=needs.min_v2x_energy_wh,
        )
        on = not ctx.standby
        demand = DcDynamicDemand(
            present_voltage_v=present_v,
            max_power_w=max(0.0, min(finite(limits.max_power_w), ev_max_p)) if on else 0.0,
            min_power_w=max(0.0, ev_min_p, _min_power(limits)) if on else 0.0,
            max_current_a=max(0.0, min(finite(limits.max_current_a), ev_max_i)) if on else 0.0,
            max_voltage_v=min(finite(limits.max_voltage_v), ev_max_v),
            min_voltage_v=max(finite(limits.min_voltage_v), ev_min_v),
            max_discharge_power_w=min(allowed.max_power_w, max(0.0, ev_dis_p or 0.0)),
            max_discharge_current_a=min(allowed.max_current_a, max(0.0, ev_dis_i or 0.0)),
            departure_in_s=needs.departure_in_s,
            energy_request_wh=needs.target_energy_wh,
            max_energy_wh=needs.max_energy_wh,
            min_energy_wh=needs.min_energy_wh,
        )
        return self.port.dynamic_demand(demand)


def _min_power(limits: DcLimits) -> float:
    """DcLimits has no minimum power: the least the converter can hold is its least current at its least
    voltage."""
    return max(0.0, finite(limits.min_current_a * limits.min_voltage_v))
