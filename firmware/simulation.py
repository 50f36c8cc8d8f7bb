"""Run the firmware on a simulated board in virtual time: the rig that tests, the demo and the HIL
scenario runner use.

``SimulatedCharger`` opens a simulated board (``board.simulated = true``) on a
:class:`hal.clock.VirtualClock`, starts a :class:`firmware.connector.Connector` on it and lets the
caller move time with :meth:`SimulatedCharger.advance` while turning the plant's knobs (the EV's
pilot state, its diode, its current draw, temperatures, a welded contactor, ...). Everything on a
GPIO/SPI simulated board is synchronous, so a run is deterministic and much faster than real time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from board.build import BoardHal, open_board
from board.loader import load_board
from firmware.connector import Connector, ConnectorSettings, EventSink
from firmware.journal import Journal
from hal.clock import RealClock, VirtualClock
from hal.sim.plant import Plant

T = TypeVar("T")

#: Virtual time moves in steps of this size while the rig waits for a start-up or for an action.
PUMP_STEP_S = 0.001


class SimulatedCharger:
    def __init__(
        self,
        board: str | Path = "sim-ac",
        *,
        journal_path: str | Path | None = None,
        settings: ConnectorSettings | None = None,
        on_event: EventSink | None = None,
        before_start: Callable[[Plant], None] | None = None,
        clock: VirtualClock | RealClock | None = None,
        journal_wall_clock: Callable[[], float] | None = None,
        allow_real_board: bool = False,
    ) -> None:
        self.config = load_board(board)
        self.before_start = before_start  # sets the plant up before the firmware boots (an EV already plugged)
        # A real board only makes sense in real time: the HIL bench runs the same life cycle on one.
        real_time = clock is not None and not isinstance(clock, VirtualClock)
        if not self.config.board.simulated and not (allow_real_board and real_time):
            raise ValueError(f"{self.config.board.name} is not a simulated board (a real board needs real time)")
        # Several chargers of one site share a clock; RealClock runs the same rig in real time.
        self.clock = clock if clock is not None else VirtualClock()
        # The journal stamps sessions with wall-clock time; a rig may pass scenario time instead.
        wall = {"wall_clock": journal_wall_clock} if journal_wall_clock is not None else {}
        self.journal = Journal(journal_path, **wall) if journal_path is not None else None
        self.settings = settings or ConnectorSettings()
        self.on_event = on_event
        self.hal: BoardHal | None = None
        self.connector: Connector | None = None

    @property
    def plant(self) -> Plant:
        assert self.hal is not None and self.hal.sim is not None
        return self.hal.sim.plant

    async def run_until_done(self, awaitable: Awaitable[T]) -> T:
        """Await something that sleeps on the virtual clock, moving time until it completes."""
        task: asyncio.Task[T] = asyncio.ensure_future(awaitable)
        if not isinstance(self.clock, VirtualClock):
            return await task
        while not task.done():
            await self.clock.advance(PUMP_STEP_S)
        return task.result()

    async def start(self) -> Connector:
        """Open the simulated board, then boot the firmware on it."""
        await self.open_hal()
        return await self.boot()

    async def open_hal(self) -> BoardHal:
        """Open the simulated board only: the simulators can be set up before the firmware boots."""
        totals = (0.0, 0.0)
        if self.journal is not None:
            totals = self.journal.resume_meter_totals(self.settings.connector_id)
        self.hal = await self.run_until_done(open_board(self.config, self.clock, meter_totals_wh=totals))
        return self.hal

    async def boot(self) -> Connector:
        assert self.hal is not None, "open_hal() first"
        if self.before_start is not None:
            self.before_start(self.plant)
        self.connector = Connector(
            self.hal, clock=self.clock, journal=self.journal, settings=self.settings, on_event=self.on_event
        )
        await self.run_until_done(self.connector.start())
        return self.connector

    async def advance(self, seconds: float) -> None:
        if isinstance(self.clock, VirtualClock):
            await self.clock.advance(seconds)
        else:
            await self.clock.sleep(seconds)

    async def close(self) -> None:
        if self.connector is not None:
            await self.run_until_done(self.connector.stop())
        if self.hal is not None:
            await self.run_until_done(self.hal.close())
        if self.journal is not None:
            self.journal.close()

    async def __aenter__(self) -> SimulatedCharger:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
