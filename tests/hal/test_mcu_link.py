"""The co-processor driver (hal.drivers.mcu_link) against the simulated co-processor over a real pty.

Every test opens the pty slave through ``hal.buses.open_serial`` exactly like a board opens
``/dev/ttyAMA0``. The simulator's timers run on a VirtualClock that only moves when a test says so,
and so does the link's (unless a test says otherwise): heartbeats, heartbeat supervision and
feedback settle times are driven deterministically; only reply deadlines are real (and tiny).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from board.mcu.core import RCD_TEST_TRIP_WITHIN_MS
from hal.buses import open_serial
from hal.clock import Clock, RealClock, VirtualClock
from hal.drivers.mcu_frames import (
    PROTOCOL_VERSION,
    Capability,
    CpState,
    ErrorFlag,
    MsgType,
    NackCode,
    PilotCode,
    ResetReason,
    SelftestState,
    encode_bool,
    encode_set_pilot,
)
from hal.drivers.mcu_link import (
    McuConnectorLock,
    McuContactor,
    McuLink,
    McuNack,
    McuPilotOutput,
    McuPilotSense,
    McuProximity,
    McuResidualCurrentMonitor,
)
from hal.errors import DeviceTimeout, ProtocolError, UnsupportedOperation
from hal.interfaces import ConnectorLock, Contactor, PilotOutput, PilotSense, ResidualCurrentMonitor
from hal.sim.coprocessor import CoprocessorSim
from hal.sim.plant import Plant
from hal.types import PilotMode

pytestmark = pytest.mark.timeout(30)


@dataclass
class Rig:
    plant: Plant
    sim: CoprocessorSim
    link: McuLink
    sim_clock: VirtualClock

    def sent(self, msg_type: MsgType) -> list[bytes]:
        """Payloads of the requests of this type the co-processor received (retries included)."""
        return [f.payload for f in self.sim.received if f.msg_type == msg_type]

    def executed(self, msg_type: MsgType) -> int:
        return sum(1 for f in self.sim.executed if f.msg_type == msg_type)


@contextlib.asynccontextmanager
async def rig(
    *,
    plant: Plant | None = None,
    link_clock: Clock | None = None,
    start: bool = True,
    reply_timeout_s: float = 0.2,
    retries: int = 2,
    **sim_kwargs: object,
) -> AsyncIterator[Rig]:
    plant = plant or Plant()
    sim_clock = VirtualClock()
    sim, path = CoprocessorSim.open_pty(plant, clock=sim_clock, **sim_kwargs)
    port = open_serial(path, 115200, 0.05)
    link = McuLink(
        port,
        name="mcu-test",
        clock=link_clock or VirtualClock(),
        reply_timeout_s=reply_timeout_s,
        retries=retries,
    )
    try:
        if start:
            await link.start()
            # The heartbeat task beats once at start, then waits for its (virtual) clock to move.
            await eventually(lambda: sim.heartbeats_received == 1 and link.outstanding == 0, "first beat")
        yield Rig(plant, sim, link, sim_clock)
    finally:
        await link.stop()
        port.close()
        sim.close()


async def eventually(predicate: Callable[[], object], what: str, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def sim_ticks(r: Rig, count: int = 3) -> None:
    """Let the simulator's loop run a few times (it polls the pty every 5 ms of real time)."""
    target = r.sim.ticks + count
    await eventually(lambda: r.sim.ticks >= target, "simulator ticks")


async def advance_sim(r: Rig, seconds: float) -> None:
    await r.sim_clock.advance(seconds)
    await sim_ticks(r)


# ---------------------------------------------------------------------------------- handshake


def test_handshake_reports_version_and_capabilities() -> None:
    async def main() -> None:
        async with rig() as r:
            hello = r.link.hello
            assert hello is not None and hello.protocol_version == PROTOCOL_VERSION
            assert hello.heartbeat_timeout_ms == 1000
            assert r.link.capabilities & Capability.CONTACTOR_MIRROR
            assert r.sent(MsgType.HELLO) == [bytes((PROTOCOL_VERSION,))]
            assert r.sim.session_open
            status = r.link.status
            assert status is not None and status.pilot_mode is PilotCode.F  # the boot state
            for adapter, protocol in (
                (McuPilotOutput(r.link), PilotOutput),
                (McuPilotSense(r.link), PilotSense),
                (McuContactor(r.link), Contactor),
                (McuResidualCurrentMonitor(r.link), ResidualCurrentMonitor),
                (McuConnectorLock(r.link), ConnectorLock),
            ):
                assert isinstance(adapter, protocol)

    asyncio.run(main())


def test_version_mismatch_is_a_protocol_error() -> None:
    async def main() -> None:
        async with rig(start=False, protocol_version=PROTOCOL_VERSION + 1) as r:
            with pytest.raises(ProtocolError, match=f"protocol version {PROTOCOL_VERSION + 1}"):
                await r.link.start()
            assert not r.link.running
            assert not r.sim.session_open  # the co-processor refuses the session too

    asyncio.run(main())


def test_commands_before_a_session_are_refused_and_a_reboot_loses_it() -> None:
    async def main() -> None:
        async with rig() as r:
            r.plant.ev_state = "C"
            pilot = McuPilotOutput(r.link)
            await pilot.set_pwm(100)
            r.sim.reboot(ResetReason.WATCHDOG)
            await eventually(lambda: r.link.stats.mcu_restarts == 1, "EVENT_BOOT")
            assert r.link.last_boot is not None and r.link.last_boot.reset_reason is ResetReason.WATCHDOG
            assert r.plant.pilot.mode is PilotMode.F  # the co-processor boots safe
            with pytest.raises(McuNack, match="NO_SESSION") as exc:
                await pilot.set_pwm(100)
            assert exc.value.code == NackCode.NO_SESSION

    asyncio.run(main())


# ---------------------------------------------------------------------------------- pilot


def test_pilot_commands_drive_the_plant_and_the_wire() -> None:
    async def main() -> None:
        async with rig() as r:
            pilot = McuPilotOutput(r.link)
            await pilot.set_pwm(533)  # 32 A
            assert (r.plant.pilot.mode, r.plant.pilot.duty) == (PilotMode.PWM, 0.533)
            assert (pilot.mode, pilot.duty_permille) == (PilotMode.PWM, 533)
            assert r.sent(MsgType.SET_PILOT)[-1] == b"\x01\x15\x02"
            await pilot.set_x1()
            assert r.plant.pilot.mode is PilotMode.X1 and pilot.mode is PilotMode.X1
            assert pilot.duty_permille == 0
            await pilot.set_e()
            assert r.plant.pilot.mode is PilotMode.E
            await pilot.set_f()
            assert r.plant.pilot.mode is PilotMode.F and pilot.mode is PilotMode.F
            sent_before = len(r.sim.received)
            for bad in (0, 1000, -5):
                with pytest.raises(ValueError, match="per mille"):
                    await pilot.set_pwm(bad)
            assert len(r.sim.received) == sent_before  # nothing went on the wire

    asyncio.run(main())


def test_state_e_unsupported() -> None:
    async def main() -> None:
        async with rig(supports_state_e=False) as r:
            pilot = McuPilotOutput(r.link)
            assert not pilot.supports_state_e
            with pytest.raises(UnsupportedOperation, match="state E"):
                await pilot.set_e()
            assert r.sent(MsgType.SET_PILOT) == []
            # The co-processor refuses it on its own as well.
            with pytest.raises(McuNack, match="UNSUPPORTED"):
                await r.link.request(MsgType.SET_PILOT, encode_set_pilot(PilotCode.E))
            assert r.plant.pilot.mode is PilotMode.F

    asyncio.run(main())


def test_pilot_levels_for_ev_states_b_and_c_with_pwm() -> None:
    async def main() -> None:
        async with rig() as r:
            pilot, sense = McuPilotOutput(r.link), McuPilotSense(r.link)
            r.plant.ev_state = "B"
            await pilot.set_pwm(267)  # 16 A
            reading = await sense.read()
            assert reading.high_v == pytest.approx(8.98, abs=0.01)  # 2.74 kohm + diode behind 1 kohm
            assert reading.low_v == pytest.approx(-12.0)
            assert reading.samples == 50
            assert r.link.status is not None and r.link.status.cp_state is CpState.B
            r.plant.ev_state = "C"
            await eventually(lambda: r.link.status and r.link.status.cp_state is CpState.C, "state C pushed")
            reading = await sense.read()
            assert reading.high_v == pytest.approx(6.0, abs=0.01)
            assert reading.low_v == pytest.approx(-12.0)
            await pilot.set_x1()  # no PWM: no negative half to measure
            reading = await sense.read()
            assert reading.high_v == pytest.approx(6.0, abs=0.01) and reading.low_v is None
            # EV diode shorted: the negative plateau collapses and the co-processor flags it.
            await pilot.set_pwm(267)
            r.plant.ev_diode_ok = False
            await eventually(
                lambda: r.link.status and r.link.status.flags & ErrorFlag.DIODE_FAULT, "diode_fault pushed"
            )
            reading = await sense.read()
            assert reading.low_v is not None and reading.low_v > -10.9

    asyncio.run(main())


def test_stale_pilot_levels_from_a_silent_coprocessor_raise_device_timeout() -> None:
    async def main() -> None:
        clock = VirtualClock()
        async with rig(link_clock=clock, reply_timeout_s=0.05, retries=1) as r:
            sense = McuPilotSense(r.link, max_age_s=0.5)
            assert (await sense.read()).high_v == pytest.approx(-12.0)  # fresh: served from the cache
            r.sim.silent = True
            reads_before = len(r.sent(MsgType.READ_STATUS))
            await clock.advance(0.6)  # the cached levels are now too old
            t0 = time.monotonic()
            with pytest.raises(DeviceTimeout, match="READ_STATUS"):
                await sense.read()
            assert time.monotonic() - t0 < 0.5
            assert len(r.sent(MsgType.READ_STATUS)) == reads_before + 2  # first try and one retry

    asyncio.run(main())


# ---------------------------------------------------------------------------------- contactor


def test_contactor_allow_closes_in_c_and_the_mirror_comes_back() -> None:
    async def main() -> None:
        async with rig() as r:
            contactor = McuContactor(r.link)
            assert contactor.has_feedback
            r.plant.ev_state = "B"
            await McuPilotOutput(r.link).set_pwm(267)
            await contactor.close()
            assert contactor.commanded_closed and r.sim.contactor_allowed
            assert not r.sim.contactor_coil  # allowed, but the EV does not ask for power in B
            assert await contactor.feedback_closed() is False
            r.plant.ev_state = "C"
            await eventually(lambda: r.sim.contactor_coil, "coil energised in C")
            await eventually(lambda: r.link.status and r.link.status.contactor_mirror_closed, "mirror pushed")
            assert await contactor.feedback_closed() is True
            # C -> B: the co-processor opens by itself, below the Pi's jitter (IEC 61851-1 seq. 7).
            r.plant.ev_state = "B"
            await eventually(lambda: not r.sim.contactor_coil, "coil released in B")
            await eventually(lambda: r.link.status and not r.link.status.contactor_mirror_closed, "mirror")
            assert r.sent(MsgType.SET_CONTACTOR) == [encode_bool(True)]
            r.plant.ev_state = "C"
            await eventually(lambda: r.sim.contactor_coil, "coil energised again")
            await contactor.open()
            assert not contactor.commanded_closed and not r.sim.contactor_coil
            assert await contactor.feedback_closed() is False

    asyncio.run(main())


def test_welded_contactor_is_reported_and_interlocks() -> None:
    async def main() -> None:
        async with rig() as r:
            contactor = McuContactor(r.link)
            r.plant.ev_state = "C"
            await McuPilotOutput(r.link).set_pwm(267)
            await contactor.close()
            r.plant.contactor_welded = True
            await contactor.open()
            assert await contactor.feedback_closed() is True  # the mirror tells the truth
            await advance_sim(r, 0.25)  # past the 200 ms settle time
            await eventually(
                lambda: r.link.status and r.link.status.flags & ErrorFlag.COIL_FEEDBACK_DIVERGES,
                "coil_feedback_diverges",
            )
            with pytest.raises(McuNack, match="INTERLOCK") as exc:
                await contactor.close()
            assert exc.value.code == NackCode.INTERLOCK
            assert isinstance(exc.value, ProtocolError)
            assert not contactor.commanded_closed
            # Clearing is refused while the cause remains.
            status = await r.link.clear_errors(ErrorFlag.COIL_FEEDBACK_DIVERGES)
            assert status.flags & ErrorFlag.COIL_FEEDBACK_DIVERGES
            r.plant.contactor_welded = False
            status = await r.link.clear_errors(ErrorFlag.COIL_FEEDBACK_DIVERGES)
            assert not status.flags & ErrorFlag.COIL_FEEDBACK_DIVERGES
            await contactor.close()
            assert r.sim.contactor_coil

    asyncio.run(main())


def test_diode_fault_refuses_the_contactor() -> None:
    async def main() -> None:
        async with rig() as r:
            r.plant.ev_state = "C"
            r.plant.ev_diode_ok = False
            await McuPilotOutput(r.link).set_pwm(267)
            with pytest.raises(McuNack, match="INTERLOCK"):
                await McuContactor(r.link).close()
            assert not r.sim.contactor_coil

    asyncio.run(main())


# ---------------------------------------------------------------------------------- RCD and lock


@pytest.mark.parametrize(
    ("residual_is_ac", "current_ma", "trips"),
    [(False, 5.9, False), (False, 6.0, True), (True, 29.0, False), (True, 30.0, True)],
)
def test_rcd_trip_thresholds(residual_is_ac: bool, current_ma: float, trips: bool) -> None:
    async def main() -> None:
        async with rig(residual_is_ac=residual_is_ac) as r:
            rcm = McuResidualCurrentMonitor(r.link)
            r.plant.residual_current_ma = current_ma
            await sim_ticks(r)
            assert (await r.link.read_status()).flags & ErrorFlag.RCD_TRIGGERED == (
                ErrorFlag.RCD_TRIGGERED if trips else 0
            )
            assert await rcm.tripped() is trips

    asyncio.run(main())


def test_rcd_trip_opens_the_contactor_and_latches() -> None:
    async def main() -> None:
        async with rig() as r:
            rcm, contactor = McuResidualCurrentMonitor(r.link), McuContactor(r.link)
            r.plant.ev_state = "C"
            await McuPilotOutput(r.link).set_pwm(267)
            await contactor.close()
            assert r.sim.contactor_coil
            r.plant.residual_current_ma = 8.0
            await eventually(lambda: r.link.status and r.link.status.flags & ErrorFlag.RCD_TRIGGERED, "trip")
            assert await rcm.tripped()
            assert not r.sim.contactor_coil and await contactor.feedback_closed() is False
            assert r.plant.pilot.mode is PilotMode.F
            with pytest.raises(McuNack, match="INTERLOCK"):
                await contactor.close()
            assert await rcm.tripped()  # the residual current still flows: the co-processor keeps its latch
            assert r.sim.flags & ErrorFlag.RCD_TRIGGERED
            r.plant.residual_current_ma = 0.0
            assert r.sim.flags & ErrorFlag.RCD_TRIGGERED  # latched on the co-processor until the Pi looks
            assert not await rcm.tripped()  # the input is clear: the adapter cleared the latch
            assert not r.sim.flags & ErrorFlag.RCD_TRIGGERED

    asyncio.run(main())


def test_rcd_self_test_passes_and_fails() -> None:
    async def main() -> None:
        async with rig() as r:
            rcm = McuResidualCurrentMonitor(r.link, selftest_timeout_s=1.0)
            assert await rcm.self_test() is True
            assert not await rcm.tripped()  # the test current is released
            r.sim.rcd_selftest_fails = True
            # A failure is known only when the RCD has not tripped within its window of the test current.
            failing = asyncio.ensure_future(rcm.self_test())
            await sim_ticks(r)
            assert not failing.done()
            await advance_sim(r, RCD_TEST_TRIP_WITHIN_MS / 1000)
            assert await failing is False
            assert r.link.status is not None
            assert r.link.status.flags & ErrorFlag.RCD_SELFTEST_FAILED
            assert r.link.status.selftest is SelftestState.FAILED
            # Only a passing self-test clears the flag, CLEAR_ERRORS does not.
            status = await r.link.clear_errors(ErrorFlag.RCD_SELFTEST_FAILED)
            assert status.flags & ErrorFlag.RCD_SELFTEST_FAILED
            r.sim.rcd_selftest_fails = False
            assert await rcm.self_test() is True
            assert not r.link.status.flags & ErrorFlag.RCD_SELFTEST_FAILED
            assert r.executed(MsgType.RCD_SELFTEST) == 3

    asyncio.run(main())


@pytest.mark.parametrize(
    ("ohm", "coding", "ampacity", "fault"),
    [
        (220.0, "type2", 32, False),
        (None, "type2", 0, False),
        (50.0, "type2", None, True),
        (150.0, "type1", None, False),
    ],
)
def test_pp_read_by_the_coprocessor(ohm: float | None, coding: str, ampacity: int | None, fault: bool) -> None:
    async def main() -> None:
        async with rig() as r:
            r.plant.pp_ohm = ohm
            reading = await McuProximity(r.link, coding=coding).read()
            assert reading.ampacity_a == ampacity and (reading.fault is not None) is fault
            if coding == "type1":
                assert reading.latch is not None
            assert r.link.capabilities & Capability.PP

    asyncio.run(main())


def test_pp_on_a_board_without_it_is_unsupported() -> None:
    async def main() -> None:
        async with rig(has_pp=False) as r:
            with pytest.raises(UnsupportedOperation, match="read the proximity pilot"):
                await McuProximity(r.link).read()

    asyncio.run(main())


def test_connector_lock_and_a_jammed_lock() -> None:
    async def main() -> None:
        async with rig() as r:
            lock = McuConnectorLock(r.link)
            await lock.lock()
            assert lock.commanded_locked and r.sim.lock_locked
            assert await lock.feedback_locked() is True
            r.sim.lock_jammed = True
            await lock.unlock()
            assert not lock.commanded_locked
            assert await lock.feedback_locked() is True  # still locked: the motor is jammed
            await advance_sim(r, 0.25)
            await eventually(
                lambda: r.link.status and r.link.status.flags & ErrorFlag.CONNECTOR_LOCK_FAILED,
                "connector_lock_failed",
            )

    asyncio.run(main())


def test_board_without_a_lock() -> None:
    async def main() -> None:
        async with rig(has_lock=False) as r:
            lock = McuConnectorLock(r.link)
            with pytest.raises(UnsupportedOperation, match="no connector lock"):
                await lock.lock()
            assert await lock.feedback_locked() is None
            with pytest.raises(McuNack, match="UNSUPPORTED"):
                await r.link.request(MsgType.SET_LOCK, encode_bool(True))

    asyncio.run(main())


# ---------------------------------------------------------------------------------- link robustness


def test_bad_crc_from_the_coprocessor_is_dropped_and_the_link_survives() -> None:
    async def main() -> None:
        async with rig() as r:
            r.sim.corrupt_next_crc()
            status = await r.link.read_status()  # the corrupted reply is dropped, the retry answers
            assert status.pilot_mode is PilotCode.F
            assert r.link.decoder_stats.bad_crc == 1
            assert r.link.stats.retries == 1
            reads = r.sent(MsgType.READ_STATUS)
            assert len(reads) == 3  # start-up read, the request, its retry
            assert r.executed(MsgType.READ_STATUS) == 2  # the retry was answered from the reply cache
            await McuPilotOutput(r.link).set_x1()
            assert r.plant.pilot.mode is PilotMode.X1

    asyncio.run(main())


def test_corrupted_event_is_dropped_and_counted_as_lost() -> None:
    async def main() -> None:
        async with rig() as r:
            await McuPilotOutput(r.link).set_pwm(100)
            events_before = r.link.stats.events
            r.sim.corrupt_next_crc()
            r.plant.ev_state = "B"  # pushed, corrupted
            await eventually(lambda: r.link.decoder_stats.bad_crc == 1, "corrupted push")
            assert r.link.status is not None and r.link.status.cp_state is CpState.A  # not accepted
            r.plant.ev_state = "C"  # pushed intact
            await eventually(lambda: r.link.status and r.link.status.cp_state is CpState.C, "push")
            # The co-processor also pushes every 50 ms, so more intact events may have arrived under load;
            # exactly one was lost: the corrupted one.
            assert r.link.stats.events >= events_before + 1
            assert r.link.stats.events_lost == 1

    asyncio.run(main())


def test_garbage_on_the_line_is_skipped() -> None:
    async def main() -> None:
        async with rig() as r:
            noise = b"\x00\xff\xa5\x10\xef\x01\xa5\x41\xbe\x13\x37" + bytes(range(0x90, 0xB0))
            r.sim.garbage(noise)
            await McuPilotOutput(r.link).set_pwm(100)
            assert r.plant.pilot.mode is PilotMode.PWM
            await eventually(lambda: r.link.decoder_stats.garbage_bytes >= len(noise), "garbage skipped")
            assert r.link.decoder_stats.garbage_bytes == len(noise)
            assert r.link.stats.unexpected_frames == 0

    asyncio.run(main())


def test_lost_reply_is_retried_and_executed_once() -> None:
    async def main() -> None:
        async with rig() as r:
            r.plant.ev_state = "C"
            await McuPilotOutput(r.link).set_pwm(267)
            r.sim.drop_replies(1)
            await McuContactor(r.link).close()
            assert r.sent(MsgType.SET_CONTACTOR) == [encode_bool(True)] * 2  # same request re-sent
            assert r.executed(MsgType.SET_CONTACTOR) == 1
            assert r.link.stats.retries == 1
            assert r.sim.contactor_coil

    asyncio.run(main())


def test_silent_coprocessor_raises_device_timeout_in_bounded_time() -> None:
    async def main() -> None:
        async with rig(reply_timeout_s=0.05, retries=2) as r:
            r.sim.silent = True
            t0 = time.monotonic()
            with pytest.raises(DeviceTimeout, match=r"SET_CONTACTOR .* in 3 attempts"):
                await McuContactor(r.link).close()
            assert time.monotonic() - t0 < 0.5
            assert r.link.stats.timeouts == 1
            # It still heard and acted (its TX line is what died); the retries were not re-executed.
            await eventually(lambda: len(r.sent(MsgType.SET_CONTACTOR)) == 3, "three attempts")
            assert r.executed(MsgType.SET_CONTACTOR) == 1

    asyncio.run(main())


def test_silent_coprocessor_at_start() -> None:
    async def main() -> None:
        async with rig(start=False, reply_timeout_s=0.05, retries=1) as r:
            r.sim.silent = True
            with pytest.raises(DeviceTimeout, match="HELLO"):
                await r.link.start()
            assert not r.link.running
            with pytest.raises(DeviceTimeout, match="not started"):
                await r.link.request(MsgType.READ_STATUS)

    asyncio.run(main())


def test_nacks_for_bad_requests() -> None:
    async def main() -> None:
        async with rig() as r:
            with pytest.raises(McuNack, match="BAD_VALUE"):
                await r.link.request(MsgType.SET_PILOT, encode_set_pilot(PilotCode.PWM, 0))
            with pytest.raises(McuNack, match="BAD_LENGTH"):
                await r.link.request(MsgType.SET_CONTACTOR, b"\x01\x00")
            with pytest.raises(McuNack, match="type 0x3E refused: UNKNOWN_TYPE"):
                await r.link.request(0x3E)
            with pytest.raises(ValueError, match="not a request type"):
                await r.link.request(MsgType.EVENT_STATUS)
            assert r.link.stats.nacks == 3

    asyncio.run(main())


def test_loop_url_echo_is_not_mistaken_for_a_coprocessor() -> None:
    async def main() -> None:
        port = open_serial("loop://", 115200, 0.05)  # everything sent comes straight back
        link = McuLink(port, name="loop", clock=RealClock(), reply_timeout_s=0.05, retries=1)
        try:
            with pytest.raises(DeviceTimeout, match="HELLO"):
                await link.start()
            assert link.decoder_stats.frames == 2  # our own HELLO twice, decoded intact...
            assert link.stats.unexpected_frames == 2  # ...and refused as a request from the far end
        finally:
            await link.stop()
            port.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------------- heartbeat


def test_heartbeat_runs_on_the_injected_clock_and_its_loss_fails_safe() -> None:
    async def main() -> None:
        link_clock = VirtualClock()
        async with rig(link_clock=link_clock) as r:
            pilot, contactor = McuPilotOutput(r.link), McuContactor(r.link)
            r.plant.ev_state = "C"
            await pilot.set_pwm(267)
            await contactor.close()
            assert r.sim.contactor_coil
            await asyncio.sleep(0.1)
            assert r.sim.heartbeats_received == 1  # the link's clock has not moved: no more beats

            # 3 s of heartbeats every 250 ms: the co-processor stays content.
            for beat in range(2, 14):
                await link_clock.advance(0.25)
                await eventually(lambda n=beat: r.sim.heartbeats_received == n, f"heartbeat {beat}")
                await advance_sim(r, 0.25)
            assert r.sim.contactor_coil
            assert r.link.status is not None and not r.link.status.flags & ErrorFlag.HEARTBEAT_TIMEOUT

            # The Pi goes quiet (its clock stops); the co-processor's time runs on. The last beat
            # arrived 0.25 s ago.
            await advance_sim(r, 0.7)
            assert r.sim.contactor_coil and r.plant.pilot.mode is PilotMode.PWM
            await advance_sim(r, 0.1)  # 1.05 s since the last heartbeat
            await eventually(
                lambda: r.link.status and r.link.status.flags & ErrorFlag.HEARTBEAT_TIMEOUT, "heartbeat_timeout"
            )
            assert not r.sim.contactor_coil
            assert r.plant.pilot.mode is PilotMode.F
            await eventually(lambda: r.link.status and not r.link.status.contactor_mirror_closed, "mirror open")
            assert pilot.mode is PilotMode.F
            await advance_sim(r, 0.3)  # F held 300 ms, then X1
            await eventually(lambda: r.plant.pilot.mode is PilotMode.X1, "X1 after the F hold")
            await eventually(lambda: pilot.mode is PilotMode.X1, "X1 pushed")
            with pytest.raises(McuNack, match="INTERLOCK"):
                await contactor.close()

            # The Pi is back: heartbeats resume, it clears the latch and may allow again.
            await link_clock.advance(0.25)
            await eventually(lambda: r.sim.heartbeats_received == 14, "heartbeat after recovery")
            status = await r.link.clear_errors(ErrorFlag.HEARTBEAT_TIMEOUT)
            assert not status.flags & ErrorFlag.HEARTBEAT_TIMEOUT
            await pilot.set_pwm(267)
            await contactor.close()
            assert r.sim.contactor_coil

    asyncio.run(main())


def test_stop_ends_heartbeats() -> None:
    async def main() -> None:
        link_clock = VirtualClock()
        async with rig(link_clock=link_clock) as r:
            await r.link.stop()
            assert not r.link.running
            await link_clock.advance(1.0)
            await asyncio.sleep(0.05)
            assert r.sim.heartbeats_received == 1
            with pytest.raises(DeviceTimeout, match="not started"):
                await r.link.read_status()

    asyncio.run(main())


def test_periodic_status_pushes_keep_the_cache_fresh() -> None:
    async def main() -> None:
        async with rig() as r:
            before = r.link.stats.events
            for _ in range(3):
                await advance_sim(r, 0.05)
            await eventually(lambda: r.link.stats.events >= before + 3, "three periodic pushes")
            assert r.link.stats.events_lost == 0
            snapshot = r.link.status_snapshot
            assert snapshot is not None and snapshot.status.uptime_ms == 150

    asyncio.run(main())
