"""The simulated EV's ISO 15118-2 session: AC and DC, external payment (EIM).

Sequence (standards-facts.md 2.3): SessionSetup -> ServiceDiscovery -> PaymentServiceSelection ->
Authorization (while Ongoing) -> ChargeParameterDiscovery (while Ongoing) ->
  AC: PowerDelivery(Start) [pilot C within 250 ms, V2G2-847] -> ChargingStatus (loop)
  DC: [pilot C] CableCheck -> PreCharge -> PowerDelivery(Start) -> CurrentDemand (loop)
-> PowerDelivery(Stop) [pilot B] -> [DC: WeldingDetection] -> SessionStop(Terminate | Pause).

An EVSENotification ReNegotiation is followed: PowerDelivery(Renegotiate) -> ChargeParameterDiscovery ->
PowerDelivery(Start) and the loop goes on. A paused session is joined again with its SessionID
(``OK_OldSessionJoined``) and runs the common part again ([V2G2-741] as the SECC reads it).

AC: the EV draws, on its phases, the least of the EVSE's EVSEMaxCurrent, its onboard charger, its battery
and the PMax of the schedule in force (the PMaxSchedule it received, read from the time it received it),
and nothing below its minimum current. It sends a ChargingProfile within that schedule with PowerDelivery.
"""

from __future__ import annotations

from typing import Any

from firmware.iso15118.session.values import physical
from hil.models.evcc_config import MAX_PROFILE_ENTRIES
from hil.models.evcc_din import (
    DC_TYPES,
    RENEGOTIATE,
    cable_check,
    current_demand,
    dc_ev_parameters,
    dc_ev_status,
    evse_dc_limits,
    pre_charge,
    welding_detection,
)
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
    dict_of,
    int_of,
    items,
    need,
    physical_of,
    schedule_value,
)

AC_THREE_PHASE, AC_SINGLE_PHASE = "AC_three_phase_core", "AC_single_phase_core"  # EnergyTransferModeType
#: The last PMaxScheduleEntry without a duration lasts a day (RelativeTimeIntervalType: at most 86400 s).
MAX_ENTRY_DURATION_S = 86_400


class _Schedule:
    """The SAScheduleTuple in force: its id and PMax intervals, read from the time the EV received it."""

    def __init__(self, ctx: EvContext, cpd: dict[str, Any]) -> None:
        tuples = items(need(cpd, "SAScheduleList", "SAScheduleTuple"))
        first = tuples[0] if tuples and isinstance(tuples[0], dict) else None
        if first is None:
            raise EvccProtocolError("SAScheduleList has no SAScheduleTuple")
        self.tuple_id = int_of(first, "SAScheduleTupleID")
        self.pmax: list[tuple[float, float, float]] = []
        entries = [e for e in items(need(first, "PMaxSchedule", "PMaxScheduleEntry")) if isinstance(e, dict)]
        starts = [float(int_of(e, "RelativeTimeInterval", "start")) for e in entries]
        for i, entry in enumerate(entries):
            duration = dict_of(entry, "RelativeTimeInterval").get("duration", MAX_ENTRY_DURATION_S)
            if isinstance(duration, bool) or not isinstance(duration, int):
                raise EvccProtocolError(f"PMaxScheduleEntry duration {duration!r} is not a number of seconds")
            end = starts[i + 1] if i + 1 < len(entries) else starts[i] + float(duration)
            self.pmax.append((starts[i], end, physical_of(entry, "PMax")))
        self.received = ctx.clock.monotonic()

    def pmax_now(self, ctx: EvContext) -> float | None:
        return schedule_value(self.pmax, ctx.clock.monotonic() - self.received)


async def run_iso2(conv: Conversation, ctx: EvContext, resume: Resume | None) -> Outcome:
    """One ISO 15118-2 session on ``conv``; with ``resume``, it asks to join that paused session."""
    config, result, timeouts = ctx.config, ctx.result, ctx.config.timeouts
    if config.bpt:
        ctx.note("ISO 15118-2 is used without bidirectional services here: charging only")
    conv.session_id = resume.session_id if resume is not None else NO_SESSION
    setup = await conv.ask("SessionSetupReq", {"EVCCID": config.ev.mac.hex().upper()})
    conv.adopt_session()
    if setup.get("ResponseCode") == "OK_OldSessionJoined" and resume is not None:
        result.joined += 1
    elif resume is not None:
        ctx.note("the SECC did not join the paused session: a new one was established")
    result.evse_id = setup.get("EVSEID") if isinstance(setup.get("EVSEID"), str) else None
    discovery = await conv.ask("ServiceDiscoveryReq", {})
    if "ExternalPayment" not in items(need(discovery, "PaymentOptionList", "PaymentOption")):
        raise EvccSessionError("the SECC does not offer ExternalPayment")
    offered = [
        str(m) for m in items(need(discovery, "ChargeService", "SupportedEnergyTransferMode", "EnergyTransferMode"))
    ]
    mode = _energy_mode(ctx, offered)
    result.service = mode
    service_id = int_of(discovery, "ChargeService", "ServiceID")
    await conv.ask(
        "PaymentServiceSelectionReq",
        {
            "SelectedPaymentOption": "ExternalPayment",
            "SelectedServiceList": {"SelectedService": [{"ServiceID": service_id}]},
        },
    )

    async def authorise() -> dict[str, Any]:
        return await conv.ask("AuthorizationReq", {})

    await ctx.repeat(authorise, _finished, timeouts.ongoing_s, "Authorization")
    cpd, schedule = await _discover_parameters(conv, ctx, mode)
    dc = mode in DC_TYPES
    if dc:
        await cable_check(conv, ctx)
        await pre_charge(conv, ctx)
    while True:
        await conv.ask("PowerDeliveryReq", _power_delivery(ctx, "Start", schedule, mode))
        if not dc:
            await ctx.pilot_after_delay("C")
        if dc:
            reason = await current_demand(conv, ctx, evse_dc_limits(cpd), renegotiation=True)
        else:
            reason = await _charging_status(conv, ctx, cpd, schedule, mode)
        if reason != RENEGOTIATE:
            break
        await conv.ask("PowerDeliveryReq", _power_delivery(ctx, "Renegotiate", schedule, mode))
        cpd, schedule = await _discover_parameters(conv, ctx, mode)
    ctx.power(NO_POWER)
    await conv.ask("PowerDeliveryReq", _power_delivery(ctx, "Stop", schedule, mode))
    ctx.pilot("B")
    if dc:
        await welding_detection(conv, ctx)
    paused = reason == "pause"
    await conv.ask("SessionStopReq", {"ChargingSession": "Pause" if paused else "Terminate"})
    return Outcome(reason, Resume("iso2", conv.session_id) if paused else None)


def _energy_mode(ctx: EvContext, offered: list[str]) -> str:
    if ctx.config.dc:
        for mode in DC_TYPES:
            if mode in offered:
                return mode
        raise EvccSessionError(f"the SECC offers {', '.join(offered)}; this EV charges DC")
    wanted = [AC_THREE_PHASE, AC_SINGLE_PHASE] if ctx.config.ev.ac_phases == 3 else [AC_SINGLE_PHASE]
    for mode in wanted:
        if mode in offered:
            return mode
    raise EvccSessionError(f"the SECC offers {', '.join(offered)}; this EV charges AC")


async def _discover_parameters(conv: Conversation, ctx: EvContext, mode: str) -> tuple[dict[str, Any], _Schedule]:
    spec, battery = ctx.config.ev, ctx.battery
    departure = max(0, spec.departure_in_s - int(ctx.clock.monotonic() - ctx.started))

    async def ask() -> dict[str, Any]:
        body: dict[str, Any] = {"MaxEntriesSAScheduleTuple": MAX_PROFILE_ENTRIES, "RequestedEnergyTransferMode": mode}
        if mode in DC_TYPES:
            body["DC_EVChargeParameter"] = {"DepartureTime": departure, **dc_ev_parameters(ctx)}
        else:
            body["AC_EVChargeParameter"] = {
                "DepartureTime": departure,
                "EAmount": physical(battery.energy_to_target_wh(), "Wh"),
                "EVMaxVoltage": physical(spec.ac_max_voltage_v, "V"),
                "EVMaxCurrent": physical(spec.ac_max_current_a, "A"),
                "EVMinCurrent": physical(spec.ac_min_current_a, "A"),
            }
        return await conv.ask("ChargeParameterDiscoveryReq", body)

    cpd = await ctx.repeat(ask, _finished, ctx.config.timeouts.ongoing_s, "ChargeParameterDiscovery")
    return cpd, _Schedule(ctx, cpd)


def _power_delivery(ctx: EvContext, progress: str, schedule: _Schedule, mode: str) -> dict[str, Any]:
    dc = mode in DC_TYPES
    body: dict[str, Any] = {"ChargeProgress": progress, "SAScheduleTupleID": schedule.tuple_id}
    if progress == "Start" and not dc:
        body["ChargingProfile"] = {"ProfileEntry": _profile(ctx, schedule, 3 if mode == AC_THREE_PHASE else 1)}
    if dc:
        body["DC_EVPowerDeliveryParameter"] = {
            "DC_EVStatus": dc_ev_status(ctx),
            "BulkChargingComplete": False,
            "ChargingComplete": progress == "Stop",
        }
    return body


def _profile(ctx: EvContext, schedule: _Schedule, phases: int) -> list[dict[str, Any]]:
    """The EV's plan within the offered PMaxSchedule ([V2G2-224]): each interval at the least of the PMax
    and what its onboard charger takes on the phases of the energy transfer mode."""
    spec = ctx.config.ev
    own = spec.ac_max_current_a * spec.ac_nominal_voltage_v * phases
    return [
        {
            "ChargingProfileEntryStart": int(start),
            "ChargingProfileEntryMaxPower": physical(min(pmax, own), "W"),
            "ChargingProfileEntryMaxNumberOfPhasesInUse": phases,
        }
        for start, _, pmax in schedule.pmax[:MAX_PROFILE_ENTRIES]
    ]


async def _charging_status(
    conv: Conversation, ctx: EvContext, cpd: dict[str, Any], schedule: _Schedule, mode: str
) -> str:
    """The AC loop: ChargingStatus, and the EV draws what the EVSE and the schedule allow."""
    spec, battery = ctx.config.ev, ctx.battery
    evse = need(cpd, "AC_EVSEChargeParameter")
    volts = physical_of(evse, "EVSENominalVoltage")
    evse_max_a = physical_of(evse, "EVSEMaxCurrent")
    phases = 3 if mode == AC_THREE_PHASE else 1
    if volts <= 0:
        raise EvccProtocolError(f"EVSENominalVoltage {volts:g} V is not a voltage to charge at")
    ctx.loop_started()
    try:
        while True:
            ctx.settle()
            reason = ctx.stop_reason()
            if reason is not None:
                return reason
            res = await conv.ask("ChargingStatusReq", {})
            if "EVSEMaxCurrent" in res:
                evse_max_a = physical_of(res, "EVSEMaxCurrent")
            status = need(res, "AC_EVSEStatus")
            says = _ac_evse_says(status)
            if says is not None:
                return says
            pmax = schedule.pmax_now(ctx)
            own_w = spec.ac_max_current_a * volts * phases
            power = min(evse_max_a * volts * phases, battery.charge_power_w(own_w))
            if pmax is not None:
                power = min(power, pmax)
            amps = max(0.0, power) / (volts * phases)
            if amps < spec.ac_min_current_a:  # an onboard charger cannot run below its minimum current
                amps = 0.0
            ctx.power(PowerDraw(amps * volts * phases, amps, phases, volts))
            await ctx.clock.sleep(ctx.config.loop_interval_s)
    finally:
        ctx.loop_ended()


def _ac_evse_says(status: Any) -> str | None:
    if not isinstance(status, dict):
        return None
    if status.get("RCD") is True:
        return "EVSE RCD tripped"
    notification = status.get("EVSENotification")
    if notification == "StopCharging":
        return "EVSE StopCharging"
    if notification == "ReNegotiation":
        return RENEGOTIATE
    return None


def _finished(res: dict[str, Any]) -> bool:
    return res.get("EVSEProcessing") == "Finished"
