"""Cards read by the board's RFID reader reach the authorisation (firmware.app's reader task).

sim-ac carries a simulated RDM6300 on a pty: the card frames cross a real line to the real driver,
while the firmware runs in virtual time. Without an OCPP uplink a card authorises the connector; with
one, the card goes to the station (and from there to the CSMS), which alone decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from board.loader import BoardError, load_board, parse_board, shipped_boards
from firmware.app import id_presenter, run_id_reader
from firmware.connector import Connector
from firmware.simulation import SimulatedCharger
from hal.clock import Clock, VirtualClock
from hal.errors import DeviceNotFound
from hal.interfaces import IdReader
from hil.csms import CsmsPolicy
from tests.firmware.ocpp.station_rig import station_rig

pytestmark = pytest.mark.timeout(60)

CARD = "62E3086CED"
REAL_WAIT_S = 10.0  # bound on the frames crossing the pty while virtual time is pumped


async def pump_until(advance: Callable[[float], Awaitable[None]], predicate: Callable[[], bool], what: str) -> None:
    """Move virtual time in small steps until ``predicate`` holds; bounded in real time, since the
    card's bytes travel over a real pty."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REAL_WAIT_S
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await advance(0.01)
        await asyncio.sleep(0.001)  # let the reader thread's bytes in


# ------------------------------------------------------------------------------- the [rfid] table
def test_the_ac_boards_declare_their_reader() -> None:
    real, sim = load_board("pi-ac").rfid, load_board("sim-ac").rfid
    assert real is not None and sim is not None
    assert (real.driver, real.port, real.baudrate, real.connector, real.repeat_after_s) == (
        "rdm6300",
        "/dev/serial0",
        9600,
        1,
        2.0,
    )
    assert sim.port == "sim"


def _rfid(**values: Any) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        data.setdefault("rfid", {"driver": "rdm6300"}).update(values)

    return apply


# (board, change, fragments the message must carry)
BROKEN_RFID: list[tuple[str, Callable[[dict[str, Any]], None], list[str]]] = [
    ("sim-ac", _rfid(port="/dev/serial0"), ["board.simulated = true", "rfid.port = '/dev/serial0'", "'sim'"]),
    ("pi-ac", _rfid(port="sim"), ["rfid.port = 'sim'", "board.simulated = true"]),
    ("pi-ac", _rfid(rx_pin=17), ["GPIO 17 is used twice", "indicator.red_pin", "rfid.rx_pin"]),
    ("pi-ac", _rfid(baudrate=115200), ["rfid.baudrate", "9600", "115200"]),
    ("pi-ac", _rfid(driver="pn532"), ["rfid.driver", "'rdm6300'", "'pn532'"]),
    ("pi-ac", _rfid(connector=0), ["rfid.connector", "greater than or equal to 1"]),
    ("pi-ac", _rfid(repeat_after_s=-1), ["rfid.repeat_after_s", "-1"]),
    ("pi-ac", _rfid(speed=1), ["rfid.speed", "unknown field", "port, repeat_after_s, rx_pin"]),
    ("pi-mcu-ac", _rfid(port="/dev/ttyAMA0"), ["serial port /dev/ttyAMA0 is used twice", "buses.serial.port"]),
]


@pytest.mark.parametrize(("board", "change", "fragments"), BROKEN_RFID)
def test_a_wrong_rfid_table_is_rejected_with_a_precise_message(
    board: str, change: Callable[[dict[str, Any]], None], fragments: list[str]
) -> None:
    data = tomllib.loads(shipped_boards()[board].read_text())
    change(data)
    with pytest.raises(BoardError) as info:
        parse_board(data, f"{board}.toml")
    for fragment in fragments:
        assert fragment in str(info.value), f"{fragment!r} not in {info.value}"


# ------------------------------------------------------------------------------------ the reader task
def authorised(connector: Connector) -> bool:
    return "not authorised" not in connector.why()


@contextlib.asynccontextmanager
async def reading(
    reader: IdReader | None, present: Callable[[str], Awaitable[str]], clock: Clock
) -> AsyncIterator[None]:
    assert reader is not None, "sim-ac has an [rfid] reader"
    task = asyncio.create_task(run_id_reader(reader, present, clock=clock))
    await asyncio.sleep(0)  # the reader is listening before a card comes
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled(), "the reader task only ends when cancelled"


def test_a_card_authorises_the_connector_of_a_standalone_charger(tmp_path: Path) -> None:
    async def main() -> None:
        async with SimulatedCharger("sim-ac", journal_path=tmp_path / "journal.db") as sim:
            assert sim.hal is not None and sim.hal.sim is not None and sim.connector is not None
            connector = sim.connector
            sim.plant.pp_ohm, sim.plant.ev_state = 220.0, "B"  # 32 A cable, EV waiting
            await sim.advance(1.0)
            assert not authorised(connector) and connector.status().offered_a is None
            assert sim.config.rfid is not None
            present = id_presenter(connector, None, sim.config.rfid.connector)
            async with reading(sim.hal.id_reader, present, sim.clock):
                sim.hal.sim.rfid.present(CARD, hold_s=0.5)
                await pump_until(sim.advance, lambda: connector.status().offered_a is not None, "a PWM offer")
            assert authorised(connector)
            assert connector.id_tag == CARD

    asyncio.run(main())


@pytest.mark.parametrize(("blocked", "accepted"), [(False, True), (True, False)])
def test_with_an_uplink_the_card_goes_to_the_station_and_the_csms_decides(
    tmp_path: Path, blocked: bool, accepted: bool
) -> None:
    async def main() -> None:
        policy = CsmsPolicy(blocked_ids={CARD} if blocked else set())
        async with station_rig(tmp_path, policy=policy) as rig:
            hal = rig.sim.hal
            assert hal is not None and hal.sim is not None
            await rig.plug("B")
            await rig.advance(1.0)
            present = id_presenter(rig.connector, rig.station, 1)
            async with reading(hal.id_reader, present, rig.sim.clock):
                hal.sim.rfid.present(CARD, hold_s=0.5)
                await pump_until(rig.advance, lambda: bool(rig.calls("Authorize")), "an Authorize to the CSMS")
                await rig.advance(1.0)
            [authorize] = rig.calls("Authorize")
            assert authorize.payload["idTag"] == CARD
            assert authorised(rig.connector) is accepted
            assert (rig.connector.id_tag == CARD) is accepted

    asyncio.run(main())


class _FakeStation:
    def __init__(self, status: str) -> None:
        self.status = status
        self.presented: list[tuple[int, str]] = []

    async def present_id(self, connector_id: int, id_tag: str) -> str:
        self.presented.append((connector_id, id_tag))
        return self.status


def test_with_a_station_the_reader_never_authorises_the_connector_itself(tmp_path: Path) -> None:
    async def main() -> None:
        async with SimulatedCharger("sim-ac", journal_path=tmp_path / "journal.db") as sim:
            assert sim.hal is not None and sim.hal.sim is not None and sim.connector is not None
            station = _FakeStation("Invalid")
            present = id_presenter(sim.connector, station, 1)
            async with reading(sim.hal.id_reader, present, sim.clock):
                sim.hal.sim.rfid.present(CARD, hold_s=0)
                await pump_until(sim.advance, lambda: bool(station.presented), "the card at the station")
            assert station.presented == [(1, CARD)]
            assert not authorised(sim.connector)

    asyncio.run(main())


class _ScriptedReader:
    """An IdReader whose reads follow a script: an exception is raised, a string is a card; then
    it waits for ever, like a reader with no card on it."""

    name = "scripted reader"

    def __init__(self, script: list[str | Exception]) -> None:
        self.script = script
        self.reads = 0

    async def read_id(self) -> str:
        self.reads += 1
        if not self.script:
            await asyncio.Event().wait()
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    async def close(self) -> None:
        pass


def test_reader_and_presentation_failures_are_logged_and_reading_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        clock = VirtualClock()
        reader = _ScriptedReader(
            [DeviceNotFound("/dev/serial0", "serial port failed"), RuntimeError("driver bug"), "BAD", "AAA"]
        )
        assert isinstance(reader, IdReader)
        presented: list[str] = []

        async def present(id_tag: str) -> str:
            presented.append(id_tag)
            if id_tag == "BAD":
                raise ValueError("the station choked")
            return "Accepted"

        task = asyncio.create_task(run_id_reader(reader, present, clock=clock, retry_after_s=5.0))
        await clock.advance(0)
        assert reader.reads == 1 and presented == []  # the port failure: paused
        await clock.advance(4.9)
        assert reader.reads == 1
        await clock.advance(0.1)
        assert reader.reads == 2 and presented == []  # the driver bug: paused again
        await clock.advance(5.0)
        assert presented == ["BAD", "AAA"]  # a failed presentation does not stop the next card
        assert not task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.INFO, logger="firmware.app"):
        asyncio.run(main())
    messages = [r.getMessage() for r in caplog.records if r.name == "firmware.app"]
    assert any("/dev/serial0: serial port failed; reading cards again in 5 s" in m for m in messages)
    assert any("reader failed" in m for m in messages)
    assert any("card BAD could not be presented" in m for m in messages)
    assert any("card AAA: Accepted" in m for m in messages)
