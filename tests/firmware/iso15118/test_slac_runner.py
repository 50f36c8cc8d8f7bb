"""The SLAC runner and the modem client against the simulated EV and modem, in virtual time over memory links."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from firmware.iec61851.pilot import CpState
from firmware.iso15118.slac import mme
from firmware.iso15118.slac.evse import (
    TT_EV_ATTEN_RESULTS_S,
    TT_MATCH_RESPONSE_S,
    Failed,
    Matched,
    SlacResult,
    SlacRunner,
)
from firmware.iso15118.slac.keys import nid_from_nmk
from firmware.iso15118.slac.link import LinkClosedError, MemoryLink, memory_pair
from firmware.iso15118.slac.modem import ModemError, QcaModem
from hal.clock import VirtualClock
from hil.models.slac_ev import SIM_MODEM_MAC, EvMatch, EvseModemSim, EvSlacConfig, EvSlacError, SlacEv

SECC_MAC = bytes.fromhex("020000005ec0")
EV_MAC = bytes.fromhex("0200000000e1")
T = TypeVar("T")


class Bench:
    """EVSE host on one end of a memory link; the simulated EV and the EVSE's modem on the other."""

    def __init__(self, **modem_kwargs: Any) -> None:
        self.clock = VirtualClock()
        self.secc, self.ev_end = memory_pair(("secc0", SECC_MAC), ("ev0", EV_MAC), promiscuous_b=True)
        self.modem_sim = EvseModemSim(self.ev_end, **modem_kwargs)
        self.modem = QcaModem(self.secc, clock=self.clock)
        self.results: list[SlacResult] = []
        self.runner = SlacRunner(self.secc, self.modem, clock=self.clock, on_result=self.results.append)
        self.tasks = [asyncio.ensure_future(self.modem_sim.serve()), asyncio.ensure_future(self.runner.run())]

    def ev(self, **config: Any) -> SlacEv:
        return SlacEv(self.ev_end, clock=self.clock, config=EvSlacConfig(**config), evse_modem=self.modem_sim)

    async def until(self, done: Callable[[], bool], limit_s: float = 60.0, step_s: float = 0.005) -> None:
        end = self.clock.monotonic() + limit_s
        while not done():
            if self.clock.monotonic() > end:
                raise AssertionError(f"not done within {limit_s} s of virtual time")
            await self.clock.advance(step_s)

    async def run(self, coro: Coroutine[Any, Any, T] | Awaitable[T], limit_s: float = 60.0) -> T:
        task = asyncio.ensure_future(coro)
        await self.until(task.done, limit_s)
        return task.result()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def bench_test(body: Callable[[Bench], Awaitable[None]], **modem_kwargs: Any) -> None:
    async def main() -> None:
        bench = Bench(**modem_kwargs)
        try:
            await asyncio.wait_for(body(bench), timeout=20)  # real-time guard only; the test runs in virtual time
        finally:
            await bench.close()

    asyncio.run(main())


def test_a_whole_slac_in_virtual_time() -> None:
    async def body(b: Bench) -> None:
        b.runner.pilot(CpState.B)
        await b.until(lambda: b.runner.state == "WaitingForSlac")
        assert b.modem.mac == SIM_MODEM_MAC and b.modem_sim.set_keys == 1
        ev: EvMatch = await b.run(b.ev().match())
        assert b.results == [Matched(EV_MAC, ev.run_id, ev.nid, ev.nmk, 20.0, 10)]
        assert (ev.evse_mac, ev.nmk, ev.nid) == (SECC_MAC, b.modem_sim.nmk, b.modem_sim.nid)
        assert ev.nid == nid_from_nmk(ev.nmk)
        # The standard's times, as the EV saw them.
        assert ev.times["parm_cnf"] - ev.times["parm_req"] <= TT_MATCH_RESPONSE_S
        assert ev.times["atten_char"] - ev.times["start_atten"] <= TT_EV_ATTEN_RESULTS_S
        assert ev.duration_s < 1.0
        # The key in CM_SLAC_MATCH.CNF is the one the modem was given: the AVLN forms.
        assert await b.run(b.modem.link_established()) is True
        version = await b.run(b.modem.software_version())
        assert version.version.startswith("MAC-QCA7000") and version.modem_mac == SIM_MODEM_MAC

    bench_test(body)


def test_an_ev_that_asks_for_validation_is_declined_and_still_matches() -> None:
    async def body(b: Bench) -> None:
        b.runner.pilot(CpState.C)
        ev = b.ev(validate=True)
        await b.run(ev.match())
        assert ("rx CM_VALIDATE.CNF" in [name for _, name in ev.log]) and [type(r) for r in b.results] == [Matched]

    bench_test(body)


def test_after_the_ev_leaves_the_modem_is_rekeyed_and_the_next_ev_gets_a_new_key() -> None:
    async def body(b: Bench) -> None:
        b.runner.pilot(CpState.B)
        first = await b.run(b.ev().match())
        b.runner.pilot(CpState.A)
        await b.until(lambda: b.modem_sim.set_keys == 2)
        assert b.modem_sim.nmk != first.nmk and not b.modem_sim.linked
        b.runner.pilot(CpState.B)
        await b.until(lambda: b.modem_sim.set_keys == 3)
        second = await b.run(b.ev().match())
        assert second.nmk not in (first.nmk, None) and second.nmk == b.modem_sim.nmk
        assert [type(r) for r in b.results] == [Matched, Matched]

    bench_test(body)


def test_the_ev_retries_after_a_failed_run_and_then_matches() -> None:
    async def body(b: Bench) -> None:
        b.runner.pilot(CpState.B)
        with pytest.raises(EvSlacError, match="not to answer"):
            await b.run(b.ev(answer_atten_char=False).match())
        # The EVSE resends CM_ATTEN_CHAR.IND C_EV_match_retry times, then the run fails ...
        await b.until(lambda: b.runner.machine is not None and bool(b.runner.machine.failures))
        machine = b.runner.machine
        assert machine is not None and "no CM_ATTEN_CHAR.RSP to 3" in machine.failures[0]
        assert machine.state == "WaitingForSlac"
        inds = [f for f in b.secc.sent if mme.peek_mmtype(f) == mme.CmAttenCharInd.MMTYPE]
        assert len(inds) == 3
        # ... and the EV's next attempt (TT_matching_rate later) matches.
        await b.clock.advance(0.4)
        await b.run(b.ev().match())
        assert [type(r) for r in b.results] == [Matched]

    bench_test(body)


def test_a_dead_modem_fails_the_plug_in() -> None:
    async def body(b: Bench) -> None:
        b.runner.pilot(CpState.B)
        await b.until(lambda: bool(b.results))
        assert b.results == [Failed("local modem: secc0: modem did not answer CM_SET_KEY.REQ in 3 attempts")]
        assert b.clock.monotonic() == pytest.approx(1.5, abs=0.01)  # 3 x 500 ms
        with pytest.raises(EvSlacError, match=r"no CM_SLAC_PARM\.CNF"):
            await b.run(b.ev().match())

    bench_test(body, answer=False)


def test_a_modem_refusing_the_key_fails_the_plug_in() -> None:
    async def body(b: Bench) -> None:
        b.runner.pilot(CpState.B)
        await b.until(lambda: bool(b.results))
        assert b.results == [Failed("local modem: secc0: modem refused CM_SET_KEY.REQ (result 0x02)")]

    bench_test(body, set_key_result=0x02)


def test_unplugging_mid_run_reports_a_failure() -> None:
    async def body(b: Bench) -> None:
        b.runner.pilot(CpState.B)
        ev = asyncio.ensure_future(b.ev().match())
        await b.until(lambda: b.runner.machine is not None and b.runner.machine.state == "Matching")
        b.runner.pilot(CpState.A)
        await b.until(lambda: bool(b.results))
        assert b.results == [Failed("pilot left B/C (A) before a match")]
        await b.until(ev.done)
        assert isinstance(ev.exception(), EvSlacError)

    bench_test(body)


def test_the_runner_ends_when_its_link_goes_away() -> None:
    async def body(b: Bench) -> None:
        b.runner.pilot(CpState.B)
        await b.until(lambda: b.runner.state == "WaitingForSlac")
        b.secc.close()
        runner_task = b.tasks[1]
        await b.until(runner_task.done)
        assert isinstance(runner_task.exception(), LinkClosedError)

    bench_test(body)


def test_modem_answers_count_only_from_the_modem_once_known() -> None:
    async def main() -> None:
        clock = VirtualClock()
        host, far = memory_pair(("secc0", SECC_MAC), ("plc", EV_MAC), promiscuous_b=True)
        sim = EvseModemSim(far)
        serving = asyncio.ensure_future(sim.serve())
        modem = QcaModem(host, clock=clock)
        try:
            reset = asyncio.ensure_future(modem.reset())
            await clock.advance(0.01)
            assert reset.done() and modem.mac == SIM_MODEM_MAC
            # A stranger's confirmation for the next request is not the modem's.
            sim.answer = False
            task = asyncio.ensure_future(modem.link_established())
            await clock.advance(0.01)
            far.send(mme.VsLinkStatusCnf(SECC_MAC, EV_MAC, link_status=1).encode())
            for _ in range(160):
                await clock.advance(0.01)
            assert isinstance(task.exception(), ModemError)
            # A late answer to an abandoned request is not taken for the next one's.
            far.send(mme.VsLinkStatusCnf(SECC_MAC, SIM_MODEM_MAC, link_status=1).encode())
            await clock.advance(0.01)
            sim.answer = True
            assert await _within(clock, modem.link_established()) is False
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)

    asyncio.run(asyncio.wait_for(main(), timeout=20))


async def _within(clock: VirtualClock, coro: Coroutine[Any, Any, T]) -> T:
    task = asyncio.ensure_future(coro)
    for _ in range(200):
        if task.done():
            break
        await clock.advance(0.01)
    return task.result()


def test_memory_links_deliver_like_ethernet() -> None:
    async def main() -> None:
        a, b = memory_pair(("a", SECC_MAC), ("b", EV_MAC))
        listener = b.listen(maxsize=2)
        for dst in (EV_MAC, mme.BROADCAST, bytes.fromhex("020000000099"), EV_MAC, EV_MAC):
            a.send(mme.VsResetReq(dst, SECC_MAC).encode())
        await asyncio.sleep(0)
        assert listener.dropped == 2  # 4 frames for b (one was for another MAC), 2 kept: the oldest went
        got = [listener.get_nowait(), listener.get_nowait(), listener.get_nowait()]
        assert [f[:6] if f else None for f in got] == [EV_MAC, EV_MAC, None]
        b.close()
        with pytest.raises(LinkClosedError):
            await listener.get()
        assert isinstance(a, MemoryLink)

    asyncio.run(main())
