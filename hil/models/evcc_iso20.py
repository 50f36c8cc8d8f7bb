"""The simulated EV's ISO 15118-20 session: AC, DC, AC_BPT and DC_BPT, scheduled and dynamic control
mode, EIM authorisation.

Sequence (standards-facts.md 2.3): SessionSetup -> AuthorizationSetup -> Authorization (while Ongoing) ->
ServiceDiscovery -> ServiceDetail -> ServiceSelection -> AC_/DC_ChargeParameterDiscovery ->
ScheduleExchange (while Ongoing) -> [DC: pilot C, DC_CableCheck, DC_PreCharge] -> PowerDelivery(Start)
[AC: pilot C within 250 ms] -> AC_/DC_ChargeLoop -> PowerDelivery(Stop) [pilot B] ->
[DC_WeldingDetection] -> SessionStop(Terminate | Pause). A paused session is joined with its old SessionID
(``OK_OldSessionJoined``) and goes straight to ChargeParameterDiscovery with the service selected before.
An EVSEStatus ScheduleRenegotiation is followed (PowerDelivery(ScheduleRenegotiation) -> ScheduleExchange
-> PowerDelivery(Start)); Pause pauses, Terminate and ServiceRenegotiation end the session.

Who controls the power (ISO 15118-20 control modes, standards-facts.md 2.6):

* scheduled: AC follows EVSETargetActivePower when the EVSE sends one, else the schedule; DC asks for the
  current of the schedule in force (ChargingSchedule while below the target SoC; a negative
  DischargingSchedule entry asks a BPT EV to discharge);
* dynamic: the EVSE sets the power (AC EVSETargetActivePower, DC the current it delivers); the EV announces
  its limits and energy needs at every loop step.

In every mode the EV stays within its own limits: no charging beyond the target SoC, no discharging at
all without BPT, and never below its minimum SoC (its announced discharge limit shrinks to what is left
above it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from firmware.iso15118.exi import Namespace
from firmware.iso15118.session.values import rational
from firmware.iso15118.v2gtp import Iso20PayloadType
from hil.models.evcc_config import PRECHARGE_TOLERANCE_V, SUPPORTING_POINTS, WELDING_MAX_REQUESTS, WELDING_SAFE_V
from hil.models.evcc_session import (
    NO_POWER,
    NO_SESSION,
    Conversation,
    EvccProtocolError,
    EvccSessionError,
    EvContext,
    Outcome,
    PowerDraw,
    Resume,
    Selection20,
    int_of,
    items,
    need,
    rational_of,
    schedule_value,
)

#: Energy transfer services (ISO 15118-20 Table 204, standards-facts.md 2.6).
SERVICE_IDS = {"AC": 1, "DC": 2, "AC_BPT": 5, "DC_BPT": 6}
SERVICE_NAMES = {v: k for k, v in SERVICE_IDS.items()}
#: ControlMode parameter values (ISO 15118-20 Table 205, standards-facts.md 2.6).
CONTROL_MODE_VALUES = {"scheduled": 1, "dynamic": 2}
#: AC Connector parameter: single phase is 1 in every source (standards-facts.md 2.6).
AC_CONNECTOR_SINGLE_PHASE = 1
_PAYLOAD = {
    Namespace.ISO20_COMMON: int(Iso20PayloadType.MAINSTREAM),
    Namespace.ISO20_AC: int(Iso20PayloadType.AC_MAINSTREAM),
    Namespace.ISO20_DC: int(Iso20PayloadType.DC_MAINSTREAM),
}
RENEGOTIATE = "EVSE ScheduleRenegotiation"
_NOTICES = {
    "Terminate": "EVSE Terminate",
    "Pause": "EVSE Pause",
    "ScheduleRenegotiation": RENEGOTIATE,
    "ServiceRenegotiation": "EVSE ServiceRenegotiation",  # not followed by this EV: it terminates
}


class Iso20Dialect:
    """``{name: {"Header": {"SessionID", "TimeStamp"}, ...body}}`` in the namespace of the message."""

    protocol = "iso20"

    def __init__(self, wall_clock: Callable[[], float]) -> None:
        self._wall = wall_clock

    def namespace(self, name: str) -> Namespace:
        if name.startswith("AC_"):
            return Namespace.ISO20_AC
        if name.startswith("DC_"):
            return Namespace.ISO20_DC
        return Namespace.ISO20_COMMON

    def payload_type(self, name: str) -> int:
        return _PAYLOAD[self.namespace(name)]

    def wrap(self, name: str, body: dict[str, Any], session_id: str) -> dict[str, Any]:
        return {name: {"Header": {"SessionID": session_id.upper(), "TimeStamp": int(self._wall())}, **body}}

    def unwrap(self, tree: dict[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
        if len(tree) != 1:
            raise EvccProtocolError("an ISO 15118-20 message has exactly one root element")
        [(name, content)] = tree.items()
        if not isinstance(content, dict):
            raise EvccProtocolError(f"{name} is not a structure")
        header = content.get("Header")
        session_id = header.get("SessionID") if isinstance(header, dict) else None
        return name, session_id if isinstance(session_id, str) else None, content


def _r(value: float) -> dict[str, Any]:
    return rational(value)


class _Schedule:
    """The ScheduleTuple in force (scheduled mode): charge and discharge powers as (start, end, W), read
    from the time the EV received them (its clock and the SECC's TimeAnchor need not agree)."""

    def __init__(self, ctx: EvContext, res: dict[str, Any]) -> None:
        self.tuple_id: int | None = None
        self.charge: list[tuple[float, float, float]] = []
        self.discharge: list[tuple[float, float, float]] = []
        self.received = ctx.clock.monotonic()
        scheduled = res.get("Scheduled_SEResControlMode")
        if not isinstance(scheduled, dict):
            return
        tuples = [t for t in items(need(scheduled, "ScheduleTuple")) if isinstance(t, dict)]
        if not tuples:
            raise EvccProtocolError("Scheduled_SEResControlMode has no ScheduleTuple")
        first = tuples[0]
        self.tuple_id = int_of(first, "ScheduleTupleID")
        self.charge = _power_schedule(need(first, "ChargingSchedule"))
        if isinstance(first.get("DischargingSchedule"), dict):
            self.discharge = _power_schedule(first["DischargingSchedule"])

    def now(self, ctx: EvContext) -> tuple[float | None, float | None]:
        t = ctx.clock.monotonic() - self.received
        return schedule_value(self.charge, t), schedule_value(self.discharge, t)


def _power_schedule(schedule: Any) -> list[tuple[float, float, float]]:
    entries = items(need(schedule, "PowerSchedule", "PowerScheduleEntries", "PowerScheduleEntry"))
    out, start = [], 0.0
    for entry in entries:
        duration = float(int_of(entry, "Duration"))
        out.append((start, start + duration, _total(entry, "Power")))
        start += duration
    return out


def _total(body: dict[str, Any], name: str) -> float:
    """A power with its optional per-phase parts (_L2, _L3) summed."""
    total = rational_of(body, name)
    for phase in ("_L2", "_L3"):
        if name + phase in body:
            total += rational_of(body, name + phase)
    return total


async def run_iso20(conv: Conversation, ctx: EvContext, resume: Resume | None) -> Outcome:
    """One ISO 15118-20 session on ``conv``; with ``resume``, it asks to join that paused session."""
    result, timeouts = ctx.result, ctx.config.timeouts
    conv.session_id = resume.session_id if resume is not None else NO_SESSION
    evcc_id = ctx.config.evcc_id or ctx.config.ev.mac.hex().upper()
    setup = await conv.ask("SessionSetupReq", {"EVCCID": evcc_id})
    conv.adopt_session()
    result.evse_id = setup.get("EVSEID") if isinstance(setup.get("EVSEID"), str) else None
    if setup.get("ResponseCode") == "OK_OldSessionJoined" and resume is not None and resume.selection is not None:
        result.joined += 1
        selection = resume.selection
    else:
        if resume is not None:
            ctx.note("the SECC did not join the paused session: a new one was established")
        selection = await _select(conv, ctx)
    result.service = SERVICE_NAMES.get(selection.service_id, str(selection.service_id))
    result.control_mode = "dynamic" if selection.dynamic else "scheduled"
    ac = selection.service_id in (SERVICE_IDS["AC"], SERVICE_IDS["AC_BPT"])
    limits = await _charge_parameters(conv, ctx, selection, ac)
    schedule = await _schedule_exchange(conv, ctx, selection)
    if not ac:
        ctx.pilot("C")  # [V2G20-1418]: C (or D) before the first DC_CableCheckReq

        async def check() -> dict[str, Any]:
            return await conv.ask("DC_CableCheckReq", {})

        await ctx.repeat(check, _finished, timeouts.cable_check_s, "DC_CableCheck")
        await _pre_charge(conv, ctx)
    while True:
        await conv.ask("PowerDeliveryReq", _power_delivery_start(ctx, selection, schedule))
        if ac:
            await ctx.pilot_after_delay("C")
            reason = await _ac_loop(conv, ctx, selection, schedule)
        else:
            reason = await _dc_loop(conv, ctx, selection, schedule, limits)
        if reason != RENEGOTIATE:
            break
        await conv.ask("PowerDeliveryReq", {"EVProcessing": "Finished", "ChargeProgress": "ScheduleRenegotiation"})
        schedule = await _schedule_exchange(conv, ctx, selection)
    ctx.power(NO_POWER)
    await conv.ask("PowerDeliveryReq", {"EVProcessing": "Finished", "ChargeProgress": "Stop"})
    ctx.pilot("B")
    if not ac:
        await _welding_detection(conv, ctx)
    paused = reason in ("pause", "EVSE Pause")
    await conv.ask("SessionStopReq", {"ChargingSession": "Pause" if paused else "Terminate"})
    return Outcome(reason, Resume("iso20", conv.session_id, selection) if paused else None)


async def _select(conv: Conversation, ctx: EvContext) -> Selection20:
    """AuthorizationSetup, Authorization (EIM), ServiceDiscovery, ServiceDetail, ServiceSelection."""
    config = ctx.config
    setup = await conv.ask("AuthorizationSetupReq", {})
    if "EIM" not in items(need(setup, "AuthorizationServices")):
        raise EvccSessionError("the SECC does not offer EIM authorisation")

    async def authorise() -> dict[str, Any]:
        return await conv.ask(
            "AuthorizationReq", {"SelectedAuthorizationService": "EIM", "EIM_AReqAuthorizationMode": {}}
        )

    await ctx.repeat(
        authorise,
        lambda r: r.get("ResponseCode") == "OK" and _finished(r),
        config.timeouts.ongoing_s,
        "Authorization",
    )
    discovery = await conv.ask("ServiceDiscoveryReq", {})
    offered = {int_of(s, "ServiceID") for s in items(need(discovery, "EnergyTransferServiceList", "Service"))}
    wanted = SERVICE_IDS[config.energy]
    if wanted not in offered and config.bpt and SERVICE_IDS[config.energy[:2]] in offered:
        ctx.note(f"the SECC offers no {config.energy}: charging with {config.energy[:2]}")
        wanted = SERVICE_IDS[config.energy[:2]]
    if wanted not in offered:
        raise EvccSessionError(f"the SECC offers services {sorted(offered)}, not {config.energy} ({wanted})")
    detail = await conv.ask("ServiceDetailReq", {"ServiceID": wanted})
    sets = [s for s in items(need(detail, "ServiceParameterList", "ParameterSet")) if isinstance(s, dict)]
    if not sets:
        raise EvccProtocolError("ServiceDetailRes has no ParameterSet")
    mode = CONTROL_MODE_VALUES[config.control_mode]
    chosen = next((s for s in sets if _parameter(s, "ControlMode") == mode), None)
    if chosen is None:
        chosen = sets[0]
        ctx.note(
            f"the SECC offers no {config.control_mode} control mode: using parameter set {chosen.get('ParameterSetID')}"
        )
    set_id = int_of(chosen, "ParameterSetID")
    await conv.ask(
        "ServiceSelectionReq", {"SelectedEnergyTransferService": {"ServiceID": wanted, "ParameterSetID": set_id}}
    )
    volts = _parameter(chosen, "EVSENominalVoltage")
    phases = 1 if _parameter(chosen, "Connector") == AC_CONNECTOR_SINGLE_PHASE else config.ev.ac_phases
    return Selection20(
        service_id=wanted,
        parameter_set_id=set_id,
        dynamic=_parameter(chosen, "ControlMode") == CONTROL_MODE_VALUES["dynamic"],
        nominal_voltage_v=float(volts) if volts is not None and volts > 0 else config.ev.ac_nominal_voltage_v,
        phases=phases,
    )


def _parameter(parameter_set: dict[str, Any], name: str) -> int | None:
    """An integer service parameter of a ParameterSet, None when absent (ISO 15118-20 ParameterType)."""
    for parameter in items(parameter_set.get("Parameter", [])):
        if isinstance(parameter, dict) and parameter.get("Name") == name:
            for kind in ("intValue", "shortValue", "byteValue"):
                value = parameter.get(kind)
                if isinstance(value, int) and not isinstance(value, bool):
                    return value
    return None


class _DcLimits:
    def __init__(self, mode: dict[str, Any]) -> None:
        self.max_power_w = rational_of(mode, "EVSEMaximumChargePower")
        self.max_current_a = rational_of(mode, "EVSEMaximumChargeCurrent")

    def update(self, mode: Any) -> None:
        if isinstance(mode, dict):
            if "EVSEMaximumChargePower" in mode:
                self.max_power_w = rational_of(mode, "EVSEMaximumChargePower")
            if "EVSEMaximumChargeCurrent" in mode:
                self.max_current_a = rational_of(mode, "EVSEMaximumChargeCurrent")


async def _charge_parameters(conv: Conversation, ctx: EvContext, sel: Selection20, ac: bool) -> _DcLimits | None:
    spec = ctx.config.ev
    prefix = "BPT_" if sel.bpt else ""
    if ac:
        mode: dict[str, Any] = {
            "EVMaximumChargePower": _r(_ac_max_w(ctx, sel)),
            "EVMinimumChargePower": _r(_ac_min_w(ctx, sel)),
        }
        if sel.bpt:
            mode |= {"EVMaximumDischargePower": _r(spec.max_discharge_power_w), "EVMinimumDischargePower": _r(0.0)}
        await conv.ask("AC_ChargeParameterDiscoveryReq", {f"{prefix}AC_CPDReqEnergyTransferMode": mode})
        return None
    mode = {
        "EVMaximumChargePower": _r(spec.max_power_w),
        "EVMinimumChargePower": _r(0.0),
        "EVMaximumChargeCurrent": _r(spec.max_current_a),
        "EVMinimumChargeCurrent": _r(0.0),
        "EVMaximumVoltage": _r(spec.max_voltage_v),
        "EVMinimumVoltage": _r(spec.min_voltage_v),
        "TargetSOC": min(100, max(0, round(spec.target_soc * 100))),
    }
    if sel.bpt:
        mode |= {
            "EVMaximumDischargePower": _r(spec.max_discharge_power_w),
            "EVMinimumDischargePower": _r(0.0),
            "EVMaximumDischargeCurrent": _r(spec.max_discharge_current_a),
            "EVMinimumDischargeCurrent": _r(0.0),
        }
    res = await conv.ask("DC_ChargeParameterDiscoveryReq", {f"{prefix}DC_CPDReqEnergyTransferMode": mode})
    return _DcLimits(need(res, f"{prefix}DC_CPDResEnergyTransferMode"))


def _departure(ctx: EvContext) -> int:
    return max(0, ctx.config.ev.departure_in_s - int(ctx.clock.monotonic() - ctx.started))


def _energy_requests(ctx: EvContext, sel: Selection20) -> dict[str, Any]:
    """EVTarget/Maximum/MinimumEnergyRequest (relative to now; a negative minimum: the EV may give back)."""
    battery = ctx.battery
    least = -battery.energy_above_min_wh() if sel.bpt else 0.0
    return {
        "EVTargetEnergyRequest": _r(battery.energy_to_target_wh()),
        "EVMaximumEnergyRequest": _r(battery.energy_to_full_wh()),
        "EVMinimumEnergyRequest": _r(least),
    }


async def _schedule_exchange(conv: Conversation, ctx: EvContext, sel: Selection20) -> _Schedule:
    spec = ctx.config.ev

    async def ask() -> dict[str, Any]:
        body: dict[str, Any] = {"MaximumSupportingPoints": SUPPORTING_POINTS}
        if sel.dynamic:
            body["Dynamic_SEReqControlMode"] = {
                "DepartureTime": _departure(ctx),
                "MinimumSOC": round(spec.min_soc * 100),
                "TargetSOC": round(spec.target_soc * 100),
                **_energy_requests(ctx, sel),
            }
        else:
            body["Scheduled_SEReqControlMode"] = {"DepartureTime": _departure(ctx), **_energy_requests(ctx, sel)}
        return await conv.ask("ScheduleExchangeReq", body)

    res = await ctx.repeat(ask, _finished, ctx.config.timeouts.ongoing_s, "ScheduleExchange")
    return _Schedule(ctx, res)


async def _pre_charge(conv: Conversation, ctx: EvContext) -> None:
    battery = ctx.battery

    async def ask(processing: str = "Ongoing") -> dict[str, Any]:
        volts = battery.voltage_v()
        body = {"EVProcessing": processing, "EVPresentVoltage": _r(volts), "EVTargetVoltage": _r(volts)}
        return await conv.ask("DC_PreChargeReq", body)

    def close_enough(res: dict[str, Any]) -> bool:
        return abs(rational_of(res, "EVSEPresentVoltage") - battery.voltage_v()) <= PRECHARGE_TOLERANCE_V

    await ctx.repeat(ask, close_enough, ctx.config.timeouts.precharge("iso20"), "DC_PreCharge")
    await ask("Finished")  # the EV tells the SECC it is satisfied (EVProcessing = Finished)


def _power_delivery_start(ctx: EvContext, sel: Selection20, schedule: _Schedule) -> dict[str, Any]:
    """PowerDelivery(Start) with the EV's power profile: the schedule's charge powers within its own
    maximum (scheduled; the tuple it selects), or its maximum until departure (dynamic)."""
    own = _ac_max_w(ctx, sel) if sel.service_id in (1, 5) else ctx.config.ev.max_power_w
    if sel.dynamic or schedule.tuple_id is None:
        control: dict[str, Any] = {"Dynamic_EVPPTControlMode": {}}
        entries = [{"Duration": max(1, _departure(ctx)), "Power": _r(own)}]
    else:
        # PowerToleranceAcceptance is optional in the XSD, but some SECCs (the `iso15118` package) refuse a
        # scheduled profile without it; this EV makes no promise about the SECC's power tolerance.
        control = {
            "Scheduled_EVPPTControlMode": {
                "SelectedScheduleTupleID": schedule.tuple_id,
                "PowerToleranceAcceptance": "PowerToleranceNotConfirmed",
            }
        }
        entries = [
            {"Duration": int(end - start), "Power": _r(max(0.0, min(power, own)))}
            for start, end, power in schedule.charge[:SUPPORTING_POINTS]
        ] or [{"Duration": max(1, _departure(ctx)), "Power": _r(own)}]
    profile = {"TimeAnchor": int(ctx.wall()), **control, "EVPowerProfileEntries": {"EVPowerProfileEntry": entries}}
    body: dict[str, Any] = {"EVProcessing": "Finished", "ChargeProgress": "Start", "EVPowerProfile": profile}
    if sel.bpt:
        body["BPT_ChannelSelection"] = "Charge"  # one unified channel (BPTChannel 1): the label is nominal
    return body


def _ac_max_w(ctx: EvContext, sel: Selection20) -> float:
    return ctx.config.ev.ac_max_current_a * sel.nominal_voltage_v * sel.phases


def _ac_min_w(ctx: EvContext, sel: Selection20) -> float:
    return ctx.config.ev.ac_min_current_a * sel.nominal_voltage_v * sel.phases


def _scheduled_power(
    ctx: EvContext, sel: Selection20, schedule: _Schedule, charge_w: float, discharge_w: float
) -> float:
    """The power the EV takes in scheduled mode: a negative DischargingSchedule entry (BPT) asks it to give
    back, within what it may; otherwise it charges within the ChargingSchedule (nothing at its target)."""
    charge, discharge = schedule.now(ctx)
    if sel.bpt and discharge is not None and discharge < 0 and discharge_w > 0:
        return max(discharge, -discharge_w)
    return max(0.0, charge_w if charge is None else min(charge, charge_w))


def _display(ctx: EvContext) -> dict[str, Any]:
    spec = ctx.config.ev
    return {
        "PresentSOC": ctx.battery.soc_pct(),
        "MinimumSOC": round(spec.min_soc * 100),
        "TargetSOC": round(spec.target_soc * 100),
        "ChargingComplete": ctx.battery.full(),
    }


def _evse_says(res: dict[str, Any]) -> str | None:
    status = res.get("EVSEStatus")
    notification = status.get("EVSENotification") if isinstance(status, dict) else None
    return _NOTICES.get(notification) if isinstance(notification, str) else None


def _mode_key(sel: Selection20) -> str:
    return ("BPT_" if sel.bpt else "") + ("Dynamic" if sel.dynamic else "Scheduled")


async def _ac_loop(conv: Conversation, ctx: EvContext, sel: Selection20, schedule: _Schedule) -> str:
    battery, interval = ctx.battery, ctx.config.loop_interval_s
    volts, phases, key = sel.nominal_voltage_v, sel.phases, _mode_key(sel)
    ctx.loop_started()
    try:
        while True:
            ctx.settle()
            reason = ctx.stop_reason(discharging=ctx.draw.power_w < 0)
            if reason is not None:
                return reason
            charge_w = battery.charge_power_w(_ac_max_w(ctx, sel))
            discharge_w = battery.discharge_power_w(interval) if sel.bpt else 0.0
            least_w = min(_ac_min_w(ctx, sel), charge_w)
            mode: dict[str, Any] = {}
            if sel.dynamic:
                mode |= {"DepartureTime": _departure(ctx), **_energy_requests(ctx, sel)}
            mode |= {
                "EVMaximumChargePower": _r(charge_w),
                "EVMinimumChargePower": _r(least_w),
                "EVPresentActivePower": _r(ctx.draw.power_w),
            }
            if sel.dynamic:
                mode["EVPresentReactivePower"] = _r(0.0)
            if sel.bpt:
                mode |= {"EVMaximumDischargePower": _r(discharge_w), "EVMinimumDischargePower": _r(0.0)}
            body = {"DisplayParameters": _display(ctx), "MeterInfoRequested": False, f"{key}_AC_CLReqControlMode": mode}
            res = await conv.ask("AC_ChargeLoopReq", body)
            answer = res.get(f"{key}_AC_CLResControlMode")
            if not isinstance(answer, dict):
                raise EvccProtocolError(f"AC_ChargeLoopRes has no {key}_AC_CLResControlMode")
            if "EVSETargetActivePower" in answer:
                target = _total(answer, "EVSETargetActivePower")
            elif sel.dynamic:
                raise EvccProtocolError("AC_ChargeLoopRes (dynamic) has no EVSETargetActivePower")
            else:
                target = _scheduled_power(ctx, sel, schedule, charge_w, discharge_w)
            power = min(max(target, -discharge_w), charge_w)  # the EVSE's target within the EV's own limits
            if 0.0 < power < least_w:  # the onboard charger cannot run below its minimum current
                power = 0.0
            ctx.power(PowerDraw(power, power / (volts * phases), phases, volts))
            says = _evse_says(res)
            if says is not None:
                return says
            await ctx.clock.sleep(interval)
    finally:
        ctx.loop_ended()


async def _dc_loop(
    conv: Conversation, ctx: EvContext, sel: Selection20, schedule: _Schedule, limits: _DcLimits | None
) -> str:
    spec, battery, interval, key = ctx.config.ev, ctx.battery, ctx.config.loop_interval_s, _mode_key(sel)
    assert limits is not None  # DC_ChargeParameterDiscovery answered
    ctx.loop_started()
    try:
        while True:
            ctx.settle()
            reason = ctx.stop_reason(discharging=ctx.draw.power_w < 0)
            if reason is not None:
                return reason
            volts = battery.voltage_v()
            charge_a = min(battery.charge_current_a(), limits.max_current_a, limits.max_power_w / volts)
            discharge_w = battery.discharge_power_w(interval) if sel.bpt else 0.0
            discharge_a = battery.discharge_current_a(interval) if sel.bpt else 0.0
            if sel.dynamic:
                mode: dict[str, Any] = {
                    "DepartureTime": _departure(ctx),
                    **_energy_requests(ctx, sel),
                    "EVMaximumChargePower": _r(charge_a * volts),
                    "EVMinimumChargePower": _r(0.0),
                    "EVMaximumChargeCurrent": _r(charge_a),
                    "EVMaximumVoltage": _r(spec.max_voltage_v),
                    "EVMinimumVoltage": _r(spec.min_voltage_v),
                }
            else:
                power = _scheduled_power(ctx, sel, schedule, charge_a * volts, discharge_w)
                current = min(max(power / volts, -discharge_a), charge_a)
                mode = {
                    "EVTargetCurrent": _r(current),
                    "EVTargetVoltage": _r(volts),
                    "EVMaximumChargePower": _r(charge_a * volts),
                    "EVMinimumChargePower": _r(0.0),
                    "EVMaximumChargeCurrent": _r(charge_a),
                    "EVMaximumVoltage": _r(spec.max_voltage_v),
                    "EVMinimumVoltage": _r(spec.min_voltage_v),
                }
            if sel.bpt:
                mode |= {
                    "EVMaximumDischargePower": _r(discharge_w),
                    "EVMinimumDischargePower": _r(0.0),
                    "EVMaximumDischargeCurrent": _r(discharge_a),
                }
            body = {
                "DisplayParameters": _display(ctx),
                "MeterInfoRequested": False,
                "EVPresentVoltage": _r(volts),
                f"{key}_DC_CLReqControlMode": mode,
            }
            res = await conv.ask("DC_ChargeLoopReq", body)
            present_v = rational_of(res, "EVSEPresentVoltage")
            present_a = rational_of(res, "EVSEPresentCurrent")
            if present_a < -discharge_a - 1e-6 or not math.isfinite(present_v * present_a):
                ctx.note(f"DC_ChargeLoop: the EVSE discharged {present_a:g} A beyond the EV's {discharge_a:g} A")
            ctx.power(PowerDraw(present_v * present_a, present_a, 0, present_v))
            limits.update(res.get(f"{key}_DC_CLResControlMode"))
            says = _evse_says(res)
            if says is not None:
                return says
            await ctx.clock.sleep(interval)
    finally:
        ctx.loop_ended()


async def _welding_detection(conv: Conversation, ctx: EvContext) -> None:
    for _ in range(WELDING_MAX_REQUESTS):
        res = await conv.ask("DC_WeldingDetectionReq", {"EVProcessing": "Ongoing"})
        if rational_of(res, "EVSEPresentVoltage") < WELDING_SAFE_V:
            return
        await ctx.clock.sleep(ctx.config.poll_interval_s)
    ctx.note(f"DC_WeldingDetection: the output stayed at or above {WELDING_SAFE_V:g} V")


def _finished(res: dict[str, Any]) -> bool:
    return res.get("EVSEProcessing") == "Finished"
