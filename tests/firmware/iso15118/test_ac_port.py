"""The AC session port over a running connector (simulated sim-ac board, virtual time): authorisation from
the connector, limits and the 24 h offer from its limit chain, the EV's needs for the energy manager,
PowerDelivery as hlc_power, the charge loop and meter from its readings, notifications from its faults."""

from __future__ import annotations

import asyncio
import math
import tempfile
from collections.abc import Callable, Coroutine
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.connector import ConnectorSettings
from firmware.energy.manager import ConnectorSpec, EnergyManager, SiteConfig
from firmware.iso15118.ac_port import (
    RENEGOTIATE_EVERY_S,
    SCHEDULE_DURATION_S,
    SOC_STALE_S,
    AcPortError,
    ConnectorAcPort,
    manager_discharge,
    needs_provider,
    share_setpoint,
    soc_provider,
)
from firmware.iso15118.session.port import Authorisation, Notification
from firmware.iso15118.session.port_ac import EvAcParameters, PowerEntry, PriceEntry
from firmware.limits import Limit
from firmware.metering.billing import Tariff
from firmware.safety.faults import FaultCode
from firmware.simulation import SimulatedCharger
from hal.clock import VirtualClock
from tests.firmware.connector_rig import Rig, charge, charger, plug, unplug

EVSE_ID = "DE*EVF*E1234*1"
V, PHASES = 230.0, 3  # sim-ac: 3 x 32 A at 230 V


def run(
    tmp_path: Path,
    body: Callable[[Rig, ConnectorAcPort], Coroutine[Any, Any, None]],
    *,
    free: bool = False,
    settings_: ConnectorSettings | None = None,
    board: str = "sim-ac",
    **port_kwargs: Any,
) -> None:
    async def main() -> None:
        async with asyncio.timeout(60), charger(tmp_path, free_charging=free, settings=settings_, board=board) as rig:
            port = ConnectorAcPort(rig.connector, evse_id=EVSE_ID, **port_kwargs)
            await body(rig, port)

    asyncio.run(main())


def power(entries: tuple[PowerEntry, ...], offset: float) -> float:
    """The offer's power at ``offset`` seconds from its start."""
    return [e.max_power_w for e in entries if e.start_s <= offset][-1]


# ------------------------------------------------------------------------------------------ authorisation
def test_authorisation_follows_the_connector(tmp_path: Path) -> None:
    async def body(rig: Rig, port: ConnectorAcPort) -> None:
        await plug(rig, "B")
        await rig.advance(0.5)
        assert port.authorisation() is Authorisation.PENDING  # waiting for a card / the backend
        rig.connector.authorize("card-1")
        assert port.authorisation() is Authorisation.ACCEPTED
        assert port.status().notification is Notification.NONE
        rig.connector.deauthorize("Local")  # a second swipe during the session
        assert port.authorisation() is Authorisation.REJECTED
        assert port.status().notification is Notification.STOP
        port.session_stopped("SessionStop")
        assert port.authorisation() is Authorisation.PENDING  # the next session waits for its own card
        port.reject("Invalid")  # the backend refused the id the EV's owner presented
        assert port.authorisation() is Authorisation.REJECTED
        rig.connector.authorize("card-2")
        assert port.authorisation() is Authorisation.ACCEPTED
        port.reject("Blocked")
        await unplug(rig)
        await rig.advance(0.5)
        rig.connector.deauthorize()
        assert port.authorisation() is Authorisation.PENDING  # the EV left: nothing is held against the next

    run(tmp_path, body)


def test_free_charging_is_accepted_at_once(tmp_path: Path) -> None:
    async def body(rig: Rig, port: ConnectorAcPort) -> None:
        assert port.authorisation() is Authorisation.ACCEPTED

    run(tmp_path, body, free=True)


# ------------------------------------------------------------------------------------------ limits
def test_limits_come_from_the_ratings_and_the_limit_chain(tmp_path: Path) -> None:
    async def body(rig: Rig, port: ConnectorAcPort) -> None:
        await plug(rig, "B", cable_a=20)
        await rig.advance(0.5)
        limits = port.limits()
        assert (limits.nominal_voltage_v, limits.phases, limits.nominal_frequency_hz) == (V, PHASES, 50.0)
        assert (limits.max_current_a, limits.min_current_a) == (20.0, 6.0)  # the cable's PP coding binds
        assert (limits.max_discharge_power_w, limits.min_discharge_power_w) == (0.0, 0.0)  # default deny
        rig.connector.set_limit(Limit("ems", 10.0, detail="site EMS"))
        assert port.limits().max_current_a == 10.0
        rig.connector.set_limit(Limit("site", 0.0, detail="paused"))
        assert port.limits().max_current_a == 0.0
        assert port.charge_loop(None).target_power_w == 0.0

    run(tmp_path, body)


@pytest.mark.parametrize(
    ("hook", "expected"),
    [
        pytest.param(lambda: 3_000.0, 3_000.0, id="granted"),
        pytest.param(lambda: 0.0, 0.0, id="none"),
        pytest.param(lambda: -50.0, 0.0, id="negative"),
        pytest.param(lambda: math.nan, 0.0, id="nan"),
        pytest.param(lambda: 1 / 0, 0.0, id="raises"),
    ],
)
def test_discharge_only_what_the_energy_manager_hook_grants(
    tmp_path: Path, hook: Callable[[], float], expected: float
) -> None:
    async def body(rig: Rig, port: ConnectorAcPort) -> None:
        assert port.limits().max_discharge_power_w == expected

    run(tmp_path, body, discharge_allowance=hook)


def test_the_manager_hook_reads_the_discharge_authorisation() -> None:
    clock = VirtualClock()
    manager = EnergyManager(SiteConfig(grid_import_max_w=22_000), {1: ConnectorSpec(1, "b", 3, V, bidirectional=True)})
    hook = manager_discharge(manager, 1, clock)
    assert hook() == 0.0
    manager.authorise_discharge(1, 4_000.0)
    assert hook() == 4_000.0
    manager.authorise_discharge(1, None)
    assert hook() == 0.0
    assert manager_discharge(manager, 2, clock)() == 0.0  # a connector the site does not have


# ------------------------------------------------------------------------------------------ schedules
def test_the_offer_covers_24_h_and_steps_where_a_limit_expires(tmp_path: Path) -> None:
    async def body(rig: Rig, port: ConnectorAcPort) -> None:
        await plug(rig, "B")
        await rig.advance(0.5)
        now = rig.now
        rig.connector.set_limit(Limit("ocpp", 10.0, expires_at=now + 3_600.4, detail="charging profile"))
        [offer] = port.schedules()
        assert (offer.schedule_id, offer.duration_s) == (1, SCHEDULE_DURATION_S)
        # 10 A until the profile ends, then the connector's 6 A fallback from the whole second before.
        assert offer.power == (PowerEntry(0, 10 * V * PHASES), PowerEntry(3_600, 6 * V * PHASES))
        assert offer.prices == ()
        rig.connector.set_limit(Limit("ems", 8.0, expires_at=now + 7_200.6))
        [offer] = port.schedules()
        # 8 A binds; when the profile ends at 3600.4 the fallback takes over; the ems expiry changes nothing.
        assert offer.power == (PowerEntry(0, 8 * V * PHASES), PowerEntry(3_600, 6 * V * PHASES))
        rig.connector.set_limit(Limit("user", 20.0, expires_at=now + 100.5))
        rig.connector.set_limit(Limit("ems", 4.0, expires_at=now + 200.5))
        rig.connector.set_limit(Limit("ocpp", 30.0, expires_at=now + 300.5))
        [offer] = port.schedules()
        # 4 A, then at 200.5 the ems limit falls back to 6 A (a rise: at 201); at 300.5 ocpp's 30 A
        # expires to 6 A: no change.
        assert offer.power == (PowerEntry(0, 4 * V * PHASES), PowerEntry(201, 6 * V * PHASES))

    run(tmp_path, body, free=True)


def test_a_lower_limit_after_an_expiry_starts_the_second_before(tmp_path: Path) -> None:
    async def body(rig: Rig, port: ConnectorAcPort) -> None:
        await plug(rig, "B")
        await rig.advance(0.5)
        rig.connector.set_limit(Limit("ems", 20.0, expires_at=rig.now + 60.7))  # falls back to 2 A
        [offer] = port.schedules()
        assert offer.power == (PowerEntry(0, 20 * V * PHASES), PowerEntry(60, 2 * V * PHASES))

    run(tmp_path, body, free=True, settings_=ConnectorSettings(free_charging=True, fallback_a=2.0))


def test_the_offer_carries_the_connectors_tariff(tmp_path: Path) -> None:
    async def body(rig: Rig, port: ConnectorAcPort) -> None:
        [offer] = port.schedules()
        assert offer.prices == (PriceEntry(0, 0.35, level=1),)
        assert (offer.currency, offer.price_levels) == ("CHF", 1)

    tariff = Tariff("CHF", energy_per_kwh=Decimal("0.35"))
    run(tmp_path, body, settings_=ConnectorSettings(tariff=tariff))


def test_the_offer_never_exceeds_the_limit_chain_at_any_instant(tmp_path: Path) -> None:
    async def body(rig: Rig, port: ConnectorAcPort) -> None:
        await plug(rig, "B")
        await rig.advance(0.5)

        @settings(max_examples=150, deadline=None)
        @given(
            limits=st.lists(
                st.tuples(
                    st.floats(0.0, 40.0),
                    st.one_of(st.none(), st.floats(0.001, 2 * SCHEDULE_DURATION_S)),
                ),
                max_size=5,
            ),
            probes=st.lists(st.floats(0.0, SCHEDULE_DURATION_S - 1e-3), max_size=20),
        )
        def check(limits: list[tuple[float, float | None]], probes: list[float]) -> None:
            now = rig.now
            for i, (amps, expiry) in enumerate(limits):
                rig.connector.limits.set(Limit(f"s{i}", amps, expires_at=None if expiry is None else now + expiry))
            try:
                [offer] = port.schedules()
                starts = [e.start_s for e in offer.power]
                assert starts[0] == 0 and starts == sorted(set(starts)) and starts[-1] < offer.duration_s
                expiries = [e for _, e in limits if e is not None and e < SCHEDULE_DURATION_S]
                moments = [*probes, *expiries, *(x - 1e-3 for x in expiries), *(x + 1e-3 for x in expiries)]
                for x in moments:
                    if not 0 <= x < SCHEDULE_DURATION_S:
                        continue
                    allowed_a = min(32.0, rig.connector.limits.effective(now + x).current_a)
                    assert power(offer.power, x) <= allowed_a * V * PHASES + 1e-6, (x, offer.power)
            finally:
                for i in range(len(limits)):
                    rig.connector.limits.clear(f"s{i}")

        check()

    run(tmp_path, body, free=True)


# ------------------------------------------------------------------------------------------ the EV's needs
def test_the_evs_needs_reach_the_energy_manager_and_shrink_as_it_charges(tmp_path: Path) -> None:
    async def body(rig: Rig, port: ConnectorAcPort) -> None:
        needs = needs_provider({1: port})
        assert needs(1, rig.now) == (0.0, None) and port.ev is None
        await plug(rig, "B")
        await rig.advance(0.5)
        port.ev_parameters(EvAcParameters(max_current_a=16.0, energy_request_wh=5_000.0, departure_in_s=3_600))
        said_at = rig.now
        assert needs(1, rig.now) == (5_000.0, said_at + 3_600)
        await charge(rig, amps=16.0)  # basic charging: the meter counts what the EV takes
        await rig.advance(60.0)
        wanted, deadline = needs(1, rig.now)
        delivered = 16 * V * PHASES * 60 / 3600  # ~184 Wh
        assert wanted == pytest.approx(5_000.0 - delivered, abs=40.0) and deadline == said_at + 3_600
        assert needs(2, rig.now) == (0.0, None)  # another connector: nothing from this EV
        port.ev_parameters(EvAcParameters(energy_request_wh=1_000.0))  # no departure: nothing to plan
        assert needs(1, rig.now) == (0.0, None)
        await unplug(rig)
        await rig.advance(0.5)
        assert port.ev is None

    run(tmp_path, body, free=True)


def test_the_users_own_preferences_win_over_the_evs() -> None:
    class Port:
        def needs(self, now: float) -> tuple[float, float | None]:
            return 2_000.0, now + 100

    asked: list[int] = []

    def user(connector: int, now: float) -> tuple[float, float | None]:
        asked.append(connector)
        return (9_000.0, now + 50) if connector == 1 else (0.0, None)

    needs = needs_provider({1: Port(), 2: Port()}, user)  # type: ignore[dict-item]
    assert needs(1, 10.0) == (9_000.0, 60.0)
    assert needs(2, 10.0) == (2_000.0, 110.0)
    assert asked == [1, 2]  # asked every time: the bridge applies the user's energy cap then


# ------------------------------------------------------------------------------------------ power and loop
def test_power_delivery_is_the_connectors_hlc_power(tmp_path: Path) -> None:
    async def body(rig: Rig, port: ConnectorAcPort) -> None:
        rig.connector.set_hlc(True)
        await plug(rig, "B")
        await rig.advance(0.5)
        assert port.power_delivery(True, 1) is False  # not authorised: refused
        assert not rig.connector.machine.inputs.hlc_power
        rig.connector.authorize("card")
        assert port.power_delivery(True, 1) is True and rig.connector.machine.inputs.hlc_power
        assert port.power_delivery(False, None) is True and not rig.connector.machine.inputs.hlc_power
        port.power_delivery(True, 1)
        port.session_stopped("timeout")
        assert not rig.connector.machine.inputs.hlc_power and port.stopped == ["timeout"]
        rig.connector.supervisor.condition(FaultCode.OVERTEMPERATURE_STOP, True, rig.now, "test")
        assert port.power_delivery(True, 1) is False  # a STOP fault: no power

    run(tmp_path, body)


def test_charge_loop_and_meter_from_the_connectors_readings(tmp_path: Path) -> None:
    async def body(rig: Rig, port: ConnectorAcPort) -> None:
        await charge(rig, amps=16.0)
        await rig.advance(3.0)
        reading = rig.connector.last_meter
        assert reading is not None
        setpoint = port.charge_loop(11_000.0)
        assert setpoint.present_power_w == reading.total_power_w and setpoint.present_power_w > 3 * 16 * 200
        assert setpoint.present_current_a == tuple(reading.current_a)
        assert setpoint.target_power_w == 32 * V * PHASES
        meter = port.meter()
        assert meter is not None and meter.import_wh == reading.import_wh > 0
        assert meter.meter_id == f"{EVSE_ID}-M1"  # the board's metering chip has no serial of its own

    run(tmp_path, body, free=True)


def test_the_meter_id_is_the_meters_serial_when_it_has_one(tmp_path: Path) -> None:
    async def main() -> None:
        async with asyncio.timeout(60), SimulatedCharger("sim-ac-sdm630", journal_path=tmp_path / "j.db") as sim:
            assert sim.connector is not None and isinstance(sim.clock, VirtualClock)
            port = ConnectorAcPort(sim.connector, evse_id=EVSE_ID)
            await sim.advance(2.0)
            meter = port.meter()
            assert meter is not None and meter.meter_id == "21000042"  # the simulated SDM630's serial register

    asyncio.run(main())


@pytest.mark.parametrize(
    ("code", "notification", "rcd"),
    [
        pytest.param(FaultCode.OVERTEMPERATURE_STOP, Notification.STOP, False, id="stop"),
        pytest.param(FaultCode.RCD_TRIPPED, Notification.STOP, True, id="emergency-rcd"),
        pytest.param(FaultCode.OVERTEMPERATURE_DERATE, Notification.NONE, False, id="derate-goes-on"),
    ],
)
def test_faults_tell_the_ev_to_stop(tmp_path: Path, code: FaultCode, notification: Notification, rcd: bool) -> None:
    async def body(rig: Rig, port: ConnectorAcPort) -> None:
        assert port.status().notification is Notification.NONE
        rig.connector.supervisor.condition(code, True, rig.now, "test")
        status = port.status()
        assert (status.notification, status.rcd_tripped) == (notification, rcd)
        if notification is Notification.STOP:
            assert port.charge_loop(None).target_power_w == 0.0

    run(tmp_path, body, free=True)


def test_a_renewed_limit_makes_the_evs_schedule_stale_and_asks_for_renegotiation(tmp_path: Path) -> None:
    """The energy manager's share lives 30 s and is renewed: the offer steps to the fallback at its expiry,
    so once the renewal makes the held schedule wrong the EV is asked to renegotiate (not more often than
    RENEGOTIATE_EVERY_S), and a fresh offer ends the request."""

    async def body(rig: Rig, port: ConnectorAcPort) -> None:
        rig.connector.set_hlc(True)
        await plug(rig, "B")
        await rig.advance(0.5)
        rig.connector.set_limit(Limit("site", 13.0, expires_at=rig.now + 30.0))
        [offer] = port.schedules()
        assert power(offer.power, 40) == 6 * V * PHASES  # the guaranteed fallback after the expiry
        assert port.power_delivery(True, 1)
        for _ in range(2):  # renewed every 10 s, as the manager does: the held schedule is right so far
            await rig.advance(10.0)
            rig.connector.set_limit(Limit("site", 13.0, expires_at=rig.now + 30.0))
            assert port.status().notification is Notification.NONE
        await rig.advance(10.0)  # 30 s on: the held schedule says 6 A, the renewed chain 13 A
        rig.connector.set_limit(Limit("site", 13.0, expires_at=rig.now + 30.0))
        assert port.status().notification is Notification.RENEGOTIATE
        port.schedules()  # the EV renegotiated
        assert port.status().notification is Notification.NONE
        # A lower share: renegotiation only after RENEGOTIATE_EVERY_S (the loop's EVSEMaxCurrent binds meanwhile).
        rig.connector.set_limit(Limit("site", 8.0, expires_at=rig.now + 30.0))
        assert port.status().notification is Notification.NONE
        await rig.advance(RENEGOTIATE_EVERY_S)
        rig.connector.set_limit(Limit("site", 8.0, expires_at=rig.now + 30.0))
        assert port.status().notification is Notification.RENEGOTIATE
        # Without power on (after PowerDelivery Stop) there is nothing to renegotiate.
        port.power_delivery(False, None)
        assert port.status().notification is Notification.NONE

    run(tmp_path, body, free=True, settings_=ConnectorSettings(free_charging=True, fallback_a=6.0))


# ------------------------------------------------------------------------------------------ signed setpoints (V2B)
def _raises() -> float | None:
    raise RuntimeError("manager gone")


CHAIN_W = 32 * V * PHASES  # sim-ac, no other limit: the chain's charge power


@pytest.mark.parametrize(
    ("setpoint", "grant", "expected"),
    [
        pytest.param(None, 0.0, CHAIN_W, id="no-hook"),
        pytest.param(lambda: None, 8_000.0, CHAIN_W, id="no-share-yet"),
        pytest.param(lambda: 5_000.0, 0.0, 5_000.0, id="charge-share"),
        pytest.param(lambda: 50_000.0, 0.0, CHAIN_W, id="charge-share-above-chain"),
        pytest.param(lambda: -5_000.0, 0.0, 0.0, id="discharge-not-granted"),
        pytest.param(lambda: -5_000.0, 3_000.0, -3_000.0, id="discharge-beyond-grant"),
        pytest.param(lambda: -5_000.0, 8_000.0, -5_000.0, id="discharge-within-grant"),
        pytest.param(lambda: math.nan, 8_000.0, CHAIN_W, id="nan"),
        pytest.param(_raises, 8_000.0, CHAIN_W, id="hook-raises"),
    ],
)
def test_the_charge_loop_target_is_the_managers_signed_share_within_the_grant(
    tmp_path: Path, setpoint: Callable[[], float | None] | None, grant: float, expected: float
) -> None:
    async def body(rig: Rig, port: ConnectorAcPort) -> None:
        await charge(rig, amps=16.0)
        assert port.charge_loop(None).target_power_w == pytest.approx(expected)

    run(tmp_path, body, free=True, setpoint=setpoint, discharge_allowance=lambda: grant)


@settings(max_examples=8, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e5, 1e5)), min_size=1, max_size=40
    )
)
def test_the_target_never_leaves_grant_and_chain(pairs: list[tuple[float, float]]) -> None:
    """A real connector (one simulated charger per example, its hooks fed every pair in turn)."""
    now: dict[str, float] = {"share": 0.0, "grant": 0.0}

    async def body(rig: Rig, port: ConnectorAcPort) -> None:
        await charge(rig, amps=16.0)
        for share, grant in pairs:
            now.update(share=share, grant=grant)
            target = port.charge_loop(None).target_power_w
            assert target is not None and -max(0.0, grant) - 1e-9 <= target <= CHAIN_W + 1e-9

    with tempfile.TemporaryDirectory() as tmp:
        run(
            Path(tmp),
            body,
            free=True,
            setpoint=lambda: now["share"],
            discharge_allowance=lambda: now["grant"],
        )


def test_the_evs_soc_is_fresh_or_unknown(tmp_path: Path) -> None:
    async def body(rig: Rig, port: ConnectorAcPort) -> None:
        now = rig.connector.clock.monotonic
        assert port.soc_pct(now()) is None  # never said
        port.ev_soc(55)
        assert port.soc_pct(now()) == 55.0
        assert soc_provider({1: port})(1, now()) == 55.0
        assert soc_provider({1: port})(2, now()) is None  # no port there
        await rig.advance(SOC_STALE_S + 0.5)
        assert port.soc_pct(now()) is None  # the loop stalled: unknown, so no discharge below a floor
        port.ev_soc(60)
        for bad in (101, -1, math.nan, "full", None):
            with pytest.raises(AcPortError, match="state of charge"):
                port.ev_soc(bad)  # type: ignore[arg-type]
            assert port.soc_pct(now()) is None  # a bad report drops the old one
        port.ev_soc(61)
        port.session_stopped("SessionStop")
        assert port.soc_pct(now()) is None

    run(tmp_path, body, free=True)


def test_the_port_carries_a_sign_only_in_a_bpt_session_with_a_grant(tmp_path: Path) -> None:
    grant = [0.0]

    async def body(rig: Rig, port: ConnectorAcPort) -> None:
        assert not port.bidirectional  # no session
        port.ev_parameters(EvAcParameters(max_power_w=11_000.0))
        assert not port.bidirectional  # AC only: no discharge limits said
        port.ev_parameters(EvAcParameters(max_power_w=11_000.0, max_discharge_power_w=11_000.0))
        assert not port.bidirectional  # BPT, but nothing granted
        grant[0] = 5_000.0
        assert port.bidirectional

    run(tmp_path, body, free=True, setpoint=lambda: -1_000.0, discharge_allowance=lambda: grant[0])


def test_share_setpoint_reads_the_controllers_share() -> None:
    shares = {1: -4_000.0}
    hook = share_setpoint(shares.get, 1)
    assert hook() == -4_000.0
    assert share_setpoint(shares.get, 2)() is None
