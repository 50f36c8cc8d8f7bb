"""The simulated EV's DIN SPEC 70121 session (DC, external payment), and the DC steps ISO 15118-2 took
over from it unchanged (CableCheck, PreCharge, CurrentDemand, WeldingDetection: same messages, same
fields), which :mod:`hil.models.evcc_iso2` reuses.

Sequence (DIN 70121 9.1, standards-facts.md 2.3): SessionSetup -> ServiceDiscovery ->
ServicePaymentSelection -> ContractAuthentication (while Ongoing) -> ChargeParameterDiscovery (while
Ongoing) -> [pilot C] CableCheck (while Ongoing) -> PreCharge (until the EVSE's voltage is within 20 V of
the battery) -> PowerDelivery(ReadyToCharge) -> CurrentDemand (loop) -> PowerDelivery(not ready)
[pilot B] -> WeldingDetection -> SessionStop.

The EV applies pilot state C before its first CableCheckReq ([V2G-DC-547]; ISO 15118-2 and -20
([V2G20-1418]) ask the same), and goes back to B once PowerDelivery(stop) is answered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from firmware.iso15118.session.values import physical
from hil.models.evcc_config import PRECHARGE_CURRENT_A, PRECHARGE_TOLERANCE_V, WELDING_MAX_REQUESTS, WELDING_SAFE_V
from hil.models.evcc_session import (
    NO_POWER,
    Conversation,
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
)

#: DC_EVSEStatusCode values after which the EV stops charging (DIN 70121 / ISO 15118-2 DC_EVSEStatusCodeType).
STOPPING_STATUS = frozenset(
    {"EVSE_Shutdown", "EVSE_UtilityInterruptEvent", "EVSE_EmergencyShutdown", "EVSE_Malfunction"}
)
#: DC energy transfer types a CCS EV can use (DIN 70121 EVSESupportedEnergyTransferType), most preferred first.
DC_TYPES = ("DC_extended", "DC_core", "DC_combo_core", "DC_unique")
RENEGOTIATE = "EVSE ReNegotiation"


@dataclass
class EvseDcLimits:
    """The EVSE's DC limits as it announced them last (ChargeParameterDiscovery, CurrentDemand)."""

    max_current_a: float
    max_power_w: float
    max_voltage_v: float

    def update(self, body: dict[str, Any]) -> None:
        if "EVSEMaximumCurrentLimit" in body:
            self.max_current_a = physical_of(body, "EVSEMaximumCurrentLimit")
        if "EVSEMaximumPowerLimit" in body:
            self.max_power_w = physical_of(body, "EVSEMaximumPowerLimit")
        if "EVSEMaximumVoltageLimit" in body:
            self.max_voltage_v = physical_of(body, "EVSEMaximumVoltageLimit")


def dc_ev_status(ctx: EvContext) -> dict[str, Any]:
    """DC_EVStatus (DIN 70121 / ISO 15118-2 DC_EVStatusType)."""
    return {"EVReady": True, "EVErrorCode": "NO_ERROR", "EVRESSSOC": ctx.battery.soc_pct()}


def dc_ev_parameters(ctx: EvContext) -> dict[str, Any]:
    """DC_EVChargeParameter without DepartureTime (DIN 70121 and ISO 15118-2 share the rest)."""
    spec, battery = ctx.config.ev, ctx.battery
    return {
        "DC_EVStatus": dc_ev_status(ctx),
        "EVMaximumCurrentLimit": physical(spec.max_current_a, "A"),
        "EVMaximumPowerLimit": physical(spec.max_power_w, "W"),
        "EVMaximumVoltageLimit": physical(spec.max_voltage_v, "V"),
        "EVEnergyCapacity": physical(spec.capacity_wh, "Wh"),
        "EVEnergyRequest": physical(battery.energy_to_target_wh(), "Wh"),
        "FullSOC": 100,
        "BulkSOC": min(100, max(0, round(spec.target_soc * 100))),
    }


def evse_dc_limits(cpd: dict[str, Any]) -> EvseDcLimits:
    evse = need(cpd, "DC_EVSEChargeParameter")
    return EvseDcLimits(
        max_current_a=physical_of(evse, "EVSEMaximumCurrentLimit"),
        max_power_w=physical_of(evse, "EVSEMaximumPowerLimit"),
        max_voltage_v=physical_of(evse, "EVSEMaximumVoltageLimit"),
    )


def dc_evse_says(status: Any, *, renegotiation: bool) -> str | None:
    """Why the EV must stop (or renegotiate) after this DC_EVSEStatus, if it must."""
    if not isinstance(status, dict):
        return None
    code = status.get("EVSEStatusCode")
    if code in STOPPING_STATUS:
        return f"EVSE status {code}"
    if status.get("EVSEIsolationStatus") == "Fault":
        return "EVSE isolation fault"
    notification = status.get("EVSENotification")
    if notification == "StopCharging":
        return "EVSE StopCharging"
    if notification == "ReNegotiation" and renegotiation:
        return RENEGOTIATE
    return None


async def cable_check(conv: Conversation, ctx: EvContext) -> None:
    """Pilot C, then CableCheck until the EVSE reports Finished with a usable isolation."""
    ctx.pilot("C")  # [V2G-DC-547]: C (or D) before the first CableCheckReq

    async def ask() -> dict[str, Any]:
        return await conv.ask("CableCheckReq", {"DC_EVStatus": dc_ev_status(ctx)})

    res = await ctx.repeat(
        ask, lambda r: r.get("EVSEProcessing") == "Finished", ctx.config.timeouts.cable_check_s, "CableCheck"
    )
    isolation = dict_of(res, "DC_EVSEStatus").get("EVSEIsolationStatus")
    if isolation not in (None, "Valid", "Warning"):
        raise EvccSessionError(f"CableCheck finished with isolation {isolation}")


async def pre_charge(conv: Conversation, ctx: EvContext) -> None:
    """PreCharge to the battery voltage until the EVSE's present voltage is within 20 V of it."""
    battery = ctx.battery

    async def ask() -> dict[str, Any]:
        body = {
            "DC_EVStatus": dc_ev_status(ctx),
            "EVTargetVoltage": physical(battery.voltage_v(), "V"),
            "EVTargetCurrent": physical(PRECHARGE_CURRENT_A, "A"),
        }
        return await conv.ask("PreChargeReq", body)

    def close_enough(res: dict[str, Any]) -> bool:
        return abs(physical_of(res, "EVSEPresentVoltage") - battery.voltage_v()) <= PRECHARGE_TOLERANCE_V

    await ctx.repeat(ask, close_enough, ctx.config.timeouts.precharge(conv.dialect.protocol), "PreCharge")


async def current_demand(conv: Conversation, ctx: EvContext, limits: EvseDcLimits, *, renegotiation: bool) -> str:
    """The CurrentDemand loop: the EV asks for what its battery takes within the EVSE's limits and stores
    what the EVSE reports delivering. Returns why it ended."""
    spec, battery, interval = ctx.config.ev, ctx.battery, ctx.config.loop_interval_s
    ctx.loop_started()
    try:
        while True:
            ctx.settle()
            reason = ctx.stop_reason()
            if reason is not None:
                return reason
            volts = battery.voltage_v()
            wanted = min(battery.charge_current_a(), limits.max_current_a, limits.max_power_w / max(volts, 1.0))
            body = {
                "DC_EVStatus": dc_ev_status(ctx),
                "EVTargetCurrent": physical(max(0.0, wanted), "A"),
                "EVMaximumVoltageLimit": physical(spec.max_voltage_v, "V"),
                "EVMaximumCurrentLimit": physical(spec.max_current_a, "A"),
                "EVMaximumPowerLimit": physical(spec.max_power_w, "W"),
                "BulkChargingComplete": False,
                "ChargingComplete": battery.full(),
                "EVTargetVoltage": physical(volts, "V"),
            }
            res = await conv.ask("CurrentDemandReq", body)
            present_v = physical_of(res, "EVSEPresentVoltage")
            present_a = physical_of(res, "EVSEPresentCurrent")
            ctx.power(PowerDraw(present_v * present_a, present_a, 0, present_v))
            limits.update(res)
            says = dc_evse_says(need(res, "DC_EVSEStatus"), renegotiation=renegotiation)
            if says is not None:
                return says
            await ctx.clock.sleep(interval)
    finally:
        ctx.loop_ended()


async def welding_detection(conv: Conversation, ctx: EvContext) -> None:
    """WeldingDetection until the EVSE's output is below the touch-safe voltage (bounded)."""
    for _ in range(WELDING_MAX_REQUESTS):
        res = await conv.ask("WeldingDetectionReq", {"DC_EVStatus": dc_ev_status(ctx)})
        if physical_of(res, "EVSEPresentVoltage") < WELDING_SAFE_V:
            return
        await ctx.clock.sleep(ctx.config.poll_interval_s)
    ctx.note(f"WeldingDetection: the output stayed at or above {WELDING_SAFE_V:g} V")


async def run_din(conv: Conversation, ctx: EvContext, resume: Resume | None) -> Outcome:
    """One DIN 70121 session on ``conv``; DIN 70121 has no pause, so ``resume`` is not used."""
    result, timeouts = ctx.result, ctx.config.timeouts
    if ctx.config.bpt:
        ctx.note("DIN 70121 has no bidirectional power transfer: charging only")
    setup = await conv.ask("SessionSetupReq", {"EVCCID": ctx.config.ev.mac.hex().upper()})
    conv.adopt_session()
    result.evse_id = setup.get("EVSEID") if isinstance(setup.get("EVSEID"), str) else None
    discovery = await conv.ask("ServiceDiscoveryReq", {})
    if "ExternalPayment" not in items(need(discovery, "PaymentOptions", "PaymentOption")):
        raise EvccSessionError("the SECC does not offer ExternalPayment")
    transfer = need(discovery, "ChargeService", "EnergyTransferType")
    if transfer not in DC_TYPES:
        raise EvccSessionError(f"the SECC offers {transfer}, this EV charges DC")
    result.service = str(transfer)
    service_id = int_of(discovery, "ChargeService", "ServiceTag", "ServiceID")
    await conv.ask(
        "ServicePaymentSelectionReq",
        {
            "SelectedPaymentOption": "ExternalPayment",
            "SelectedServiceList": {"SelectedService": [{"ServiceID": service_id}]},
        },
    )

    async def authorise() -> dict[str, Any]:
        return await conv.ask("ContractAuthenticationReq", {})

    await ctx.repeat(authorise, _finished, timeouts.ongoing_s, "ContractAuthentication")
    asked_from = ctx.clock.monotonic()

    async def parameters() -> dict[str, Any]:
        body = {"EVRequestedEnergyTransferType": transfer, "DC_EVChargeParameter": dc_ev_parameters(ctx)}
        return await conv.ask("ChargeParameterDiscoveryReq", body)

    cpd = await ctx.repeat(parameters, _finished, timeouts.ongoing_s, "ChargeParameterDiscovery")
    limits = evse_dc_limits(cpd)
    await cable_check(conv, ctx)
    await pre_charge(conv, ctx)
    if ctx.clock.monotonic() - asked_from > timeouts.ready_to_charge_s:
        raise EvccSessionError(f"not ready to charge within {timeouts.ready_to_charge_s:g} s (V2G_EVCC_ReadyToCharge)")
    await conv.ask("PowerDeliveryReq", _power_delivery(ctx, ready=True))
    reason = await current_demand(conv, ctx, limits, renegotiation=False)
    if reason == "pause":
        ctx.note("DIN 70121 has no pause: the session is terminated instead")
        reason = "pause not available in DIN 70121"
    ctx.power(NO_POWER)
    await conv.ask("PowerDeliveryReq", _power_delivery(ctx, ready=False))
    ctx.pilot("B")
    await welding_detection(conv, ctx)
    await conv.ask("SessionStopReq", {})
    return Outcome(reason)


def _finished(res: dict[str, Any]) -> bool:
    return res.get("EVSEProcessing") == "Finished"


def _power_delivery(ctx: EvContext, *, ready: bool) -> dict[str, Any]:
    parameter = {"DC_EVStatus": dc_ev_status(ctx), "BulkChargingComplete": False, "ChargingComplete": not ready}
    return {"ReadyToChargeState": ready, "DC_EVPowerDeliveryParameter": parameter}
