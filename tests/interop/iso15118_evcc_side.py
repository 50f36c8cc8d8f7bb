"""The inside of one interop case: runs in the private namespace (see test_iso15118_evcc.py).

Our side is the real SECC runner (firmware.iso15118.secc) on ``secc0``:

* AC cases: the SECC on a simulated sim-ac charger in real time (the connector machine, contactor,
  meter), exactly as ``evse run --secc`` wires it. The package's EVCC has no pilot of its own, so this
  side plays the EV's S2 switch: state C while the session has power on, B when it is off (the EV's
  pilot follows its PowerDelivery, ISO 15118-2 [V2G2-847]/-20 [V2G20-1750]).
* DC cases: a DC power-path model (tests.firmware.iso15118.test_secc.DcModel), since the DC stage
  itself belongs to the power-stage work; the session messages are what is under test.

The result line carries what both sides saw, for the test to judge.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from firmware.iso15118.config import SeccConfig, TlsSettings
from firmware.iso15118.secc import Secc
from firmware.iso15118.session.iso20 import ControlMode, Iso20Config, Pricing
from firmware.iso15118.session.iso20_dc import DcDischargeLimits, DcDynamicDemand
from firmware.iso15118.session.port import DcOutput, DcTarget
from firmware.iso15118.session.port_ac import PowerEntry, PriceEntry, Schedule
from firmware.iso15118.transport import TlsProfile
from firmware.metering.billing import Tariff
from hal.clock import RealClock
from tests.firmware.connector_rig import plug
from tests.firmware.iso15118.test_pnc import NoBackend
from tests.firmware.iso15118.test_secc import DcModel, _real_time_rig, config
from tests.interop.pki import make_interop_pki
from tests.netns import EV_IF
from tests.peers.iso15118_evcc import PeerCase, PeerEvcc

SESSION_WITHIN_S = 60.0
TARIFF = Tariff(currency="EUR", energy_per_kwh="0.39")


@dataclass(frozen=True)
class Case:
    peer: PeerCase
    protocol: str  # ours: din, iso2, iso20
    dc: bool
    tls: TlsProfile | None = None
    pnc: bool = False
    card_after_s: float | None = None  # EIM: a card is presented this long after the first AuthorizationReq
    free: bool = True  # AC: free charging (no authorisation needed besides the session's)
    discharge_w: float = 0.0  # what the energy manager grants for discharge (W)
    iso20: Iso20Config = field(default_factory=Iso20Config)


#: -20 offers: a price schedule always (the peer's models refuse a ChargingSchedule without one, although
#: the XSD allows it), absolute prices on AC and price levels on DC so both kinds meet the peer; the
#: peer takes the first control mode offered, so the BPT and DC cases offer dynamic only.
_SCHEDULED_ABSOLUTE = Iso20Config(control_modes=(ControlMode.SCHEDULED,), pricing=Pricing.ABSOLUTE)
_DYNAMIC_LEVELS = Iso20Config(control_modes=(ControlMode.DYNAMIC,), pricing=Pricing.LEVELS)
_ISO20_TLS = TlsProfile.ISO2_AND_ISO20  # the peer pins secp256r1 for TLS 1.3 too (see the test module)


def _bpt(energy: str, grant_w: float) -> Case:
    """A -20 BPT case with the discharging EV: scheduled with absolute prices on AC, dynamic on DC."""
    offer = _SCHEDULED_ABSOLUTE if energy == "AC" else _DYNAMIC_LEVELS
    return Case(
        PeerCase(f"iso20-{energy.lower()}", f"{energy}_BPT", tls=True, discharge=True),
        "iso20",
        dc=energy == "DC",
        tls=_ISO20_TLS,
        iso20=replace(offer, bidirectional=True),
        discharge_w=grant_w,
    )


CASES: dict[str, Case] = {
    "din-dc": Case(PeerCase("din", "DC", transfer_mode="DC_extended"), "din", dc=True),
    "iso2-ac": Case(PeerCase("iso2", "AC"), "iso2", dc=False, card_after_s=1.0, free=False),
    "iso2-dc": Case(PeerCase("iso2", "DC", transfer_mode="DC_extended"), "iso2", dc=True),
    "iso2-pnc-ac": Case(
        PeerCase("iso2", "AC", tls=True, pnc=True), "iso2", dc=False, tls=TlsProfile.ISO2, pnc=True, free=False
    ),
    "iso20-ac": Case(
        PeerCase("iso20-ac", "AC", tls=True), "iso20", dc=False, tls=_ISO20_TLS, iso20=_SCHEDULED_ABSOLUTE
    ),
    "iso20-dc": Case(PeerCase("iso20-dc", "DC", tls=True), "iso20", dc=True, tls=_ISO20_TLS, iso20=_DYNAMIC_LEVELS),
    # The discharging EV gives back 7.4 kW (tests/peers/iso15118_evcc_main.py): within a 10 kW grant, and
    # beyond a 5 kW one.
    "iso20-ac-bpt": _bpt("AC", 10_000.0),
    "iso20-ac-bpt-over": _bpt("AC", 5_000.0),
    "iso20-dc-bpt": _bpt("DC", 10_000.0),
}


@dataclass
class PricedDcModel(DcModel):
    """The DC model with a two-level tariff in its offer (cheap at night, dear by day), recording the
    current every charge loop asked for and what it was given (DIN/-2/-20 scheduled: CurrentDemand;
    -20 dynamic: the EVSE's own choice within the EV's limits)."""

    granted_w: float = 0.0  # discharge the energy manager grants (DC_BPT)
    asked_a: list[float] = field(default_factory=list)

    def schedules(self) -> list[Schedule]:
        prices = (PriceEntry(0, 0.25, level=0), PriceEntry(8 * 3600, 0.45, level=1))
        return [Schedule(1, 86_400, (PowerEntry(0, 50_000.0),), prices=prices, currency="EUR", price_levels=2)]

    def discharge_limits(self) -> DcDischargeLimits:
        return DcDischargeLimits(max_current_a=25.0, max_power_w=self.granted_w)

    def current_demand(self, target: DcTarget) -> DcOutput:
        self.asked_a.append(target.current_a)
        return super().current_demand(target)

    def dynamic_demand(self, demand: DcDynamicDemand) -> DcOutput:
        self.asked_a.append(0.0)
        return super().dynamic_demand(demand)


def _secc_config(case: Case, pki: dict[str, Path]) -> SeccConfig:
    changes: dict[str, Any] = {
        "protocols": (case.protocol,),
        "iso20_require_tls": case.tls is not None,
        "iso20": case.iso20,
    }
    if case.tls is not None:
        changes.update(tcp=False, tls=TlsSettings(files=pki["files"], profile=case.tls))  # type: ignore[arg-type]
    if case.pnc:
        changes["pnc_roots"] = (pki["v2g_root"],)
    return config(**changes)


async def _wait_session(ev: PeerEvcc, step: Any) -> None:
    end = time.monotonic() + SESSION_WITHIN_S
    while time.monotonic() < end and ("rx", "SessionStopRes") not in ev.messages() and ev.proc.poll() is None:
        step()
        await asyncio.sleep(0.02)


async def netns_interop(name: str) -> None:
    case = CASES[name]
    events: list[tuple[str, dict[str, Any]]] = []
    result: dict[str, Any] = {"case": name}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pki = make_interop_pki(tmp / "pki")
        cfg = _secc_config(case, pki)
        sinks: list[Any] = [lambda kind, data: events.append((kind, data))]

        def sink(kind: str, data: dict[str, Any]) -> None:
            for each in sinks:
                each(kind, data)

        if case.dc:
            model = PricedDcModel(granted_w=case.discharge_w)
            async with asyncio.timeout(SESSION_WITHIN_S + 20):
                secc = Secc(cfg, clock=RealClock(), dc_port=model, on_event=sink)
                async with secc:
                    with PeerEvcc(tmp / "ev", EV_IF, case.peer, pki=pki["peer"]) as ev:
                        await _wait_session(ev, lambda: None)
                        result.update(peer=ev.messages(), received=ev.received(), log_tail=ev.log()[-12000:])
            result.update(
                stopped=model.stopped,
                closed_at_end=model.closed,
                asked_a=model.asked_a,
                contactor_closed=model.closed or bool(model.asked_a),
            )
        else:
            coil: list[bool] = []
            async with (
                asyncio.timeout(SESSION_WITHIN_S + 20),
                _real_time_rig(tmp, free=case.free, tariff=TARIFF) as rig,
            ):
                allowance = (lambda: case.discharge_w) if case.peer.discharge else None
                secc, port = Secc.for_connector(
                    cfg,
                    rig.connector,
                    on_event=sink,
                    discharge_allowance=allowance,
                    pnc_port=NoBackend() if case.pnc else None,
                )
                async with secc:
                    await plug(rig, "B")
                    if case.card_after_s is not None:
                        # The driver swipes the card a little after the EV first asked for authorisation.
                        loop = asyncio.get_running_loop()

                        def card(kind: str, data: dict[str, Any]) -> None:
                            if kind == "v2g" and data.get("message") == "AuthorizationReq" and not card_due:
                                card_due.append(loop.call_later(case.card_after_s, rig.connector.authorize, "card-1"))

                        card_due: list[asyncio.TimerHandle] = []
                        sinks.append(card)

                    def s2() -> None:
                        on = rig.connector.machine.inputs.hlc_power
                        if on and rig.plant.ev_state == "B":
                            rig.load.obeys_offer = False
                            rig.load.demand_a = 16.0
                            rig.plant.ev_state = "C"
                        elif not on and rig.plant.ev_state == "C":
                            rig.load.demand_a = 0.0
                            rig.plant.ev_state = "B"
                        coil.append(rig.coil())

                    with PeerEvcc(tmp / "ev", EV_IF, case.peer, pki=pki["peer"]) as ev:
                        await _wait_session(ev, s2)
                        result.update(peer=ev.messages(), received=ev.received(), log_tail=ev.log()[-12000:])
                    end = time.monotonic() + 7.0
                    while rig.coil() and time.monotonic() < end:
                        await asyncio.sleep(0.05)
                    result.update(
                        stopped=port.stopped,
                        contactor_closed=any(coil),
                        closed_at_end=rig.coil(),
                        hlc_power_at_end=rig.connector.machine.inputs.hlc_power,
                        id_tag=rig.connector.id_tag,
                    )
    result["events"] = events
    print("RESULT " + json.dumps(result, default=str))
