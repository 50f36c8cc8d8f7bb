"""The OCPP side of a HIL run: a station per simulated board, connected to our embedded CSMS (in
process, over a MemoryLink, so virtual time stays deterministic) or to an external CSMS URL (real time,
a websocket).

Every OCPP message of every station goes into the trace as an ``ocpp`` record (``src`` =
``station<n>``, ``dir`` tx = sent by the station, ``kind`` call/result/error, ``action``, and for
calls the payload). Scenario actions reach it here: ``swipe`` (an id presented at the connector),
``csms_call`` (a CSMS-initiated call), ``csms_outage`` and ``csms_restore``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import ocpp.messages

from firmware.ocpp.link import Link, memory_link_pair
from firmware.ocpp.station import OcppStation, StationSettings
from firmware.ocpp.uplink import build_station
from firmware.simulation import SimulatedCharger
from hal.clock import Clock, VirtualClock
from hil.csms import CsmsError, CsmsPolicy, EmbeddedCsms
from hil.scenario import BackendSpec, EventSpec

log = logging.getLogger(__name__)

TraceSink = Callable[[str, str, dict[str, Any]], None]  # (src, ev, fields)

_PROTOCOLS = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1", "2.1": "ocpp2.1"}


class Backend:
    def __init__(self, spec: BackendSpec, clock: Clock, t0: float, out_dir: Path, write: TraceSink) -> None:
        self.spec = spec
        self.clock = clock
        self.out_dir = out_dir
        self._write = write
        start = datetime.fromisoformat(spec.start.replace("Z", "+00:00"))
        self.wall_clock: Callable[[], datetime] = lambda: start + timedelta(seconds=clock.monotonic() - t0)
        self.csms: EmbeddedCsms | None = None
        self.stations: dict[int, OcppStation] = {}
        self.reachable = True
        self._saved_validation = ocpp.messages.ASYNC_VALIDATION
        if isinstance(clock, VirtualClock):
            # The ocpp package checks schemas in a thread pool by default; in virtual time a check must
            # finish within the loop turn, or time would run on while it is in flight. The package has
            # only this process-wide switch: it is restored when the run closes.
            ocpp.messages.ASYNC_VALIDATION = False

    def station_id(self, n: int) -> str:
        return f"{self.spec.station_id}{n}"

    async def start(self, chargers: dict[int, SimulatedCharger]) -> None:
        spec = self.spec
        if spec.kind == "embedded":
            policy = CsmsPolicy(
                heartbeat_interval_s=spec.heartbeat_s,
                accepted_ids=set(spec.accepted_ids) if spec.accepted_ids is not None else None,
                blocked_ids=set(spec.blocked_ids),
            )
            self.csms = EmbeddedCsms(clock=self.clock, policy=policy, wall_clock=self.wall_clock)
        for n, charger in chargers.items():
            assert charger.connector is not None
            station = build_station(
                StationSettings(
                    self.station_id(n), version=spec.ocpp, csms_url=spec.url, model=charger.config.board.name
                ),
                {1: charger.connector},
                clock=self.clock,
                data_dir=self.out_dir / f"ocpp-{n}",
                journal_path=self.out_dir / f"journal-{n}.db",
                wall_clock=self.wall_clock,
                link_factory=self._link_factory(n) if self.csms is not None else None,
                on_ocpp=self._sink(n),
                config_defaults=spec.config,
            )
            self.stations[n] = station
            await station.start()

    def _link_factory(self, n: int) -> Callable[[], Any]:
        async def open_link() -> Link:
            assert self.csms is not None
            if not self.reachable:
                raise ConnectionError("the CSMS is unreachable (scenario outage)")
            station_end, csms_end = memory_link_pair()
            await self.csms.attach(self.station_id(n), csms_end, _PROTOCOLS[self.spec.ocpp])  # type: ignore[arg-type]
            return station_end

        return open_link

    def _sink(self, n: int) -> Callable[[dict[str, Any]], None]:
        src = f"station{n}"

        def sink(event: dict[str, Any]) -> None:
            fields: dict[str, Any] = {"dir": event["dir"], "kind": event["kind"], "action": event["action"]}
            if event["kind"] == "call":
                fields["payload"] = event["payload"]
            self._write(src, "ocpp", fields)

        return sink

    async def act(self, event: EventSpec) -> None:
        n = event.connector
        station = self.stations.get(n)
        match event.action:
            case "swipe":
                assert station is not None and event.id_tag is not None
                status = await station.present_id(1, event.id_tag)
                self._write(f"station{n}", "auth", {"id_tag": event.id_tag, "status": status})
            case "csms_call":
                assert event.call is not None and event.payload is not None
                if self.csms is None:
                    raise ValueError("csms_call needs the embedded CSMS")
                try:
                    result = await self.csms.call(self.station_id(n), event.call, event.payload)
                    self._write("csms", "csms_result", {"call": event.call, "result": result})
                except (CsmsError, ValueError, TimeoutError) as exc:
                    self._write("csms", "csms_result", {"call": event.call, "error": str(exc)})
            case "csms_outage":
                assert self.csms is not None
                self.reachable = False
                for m in self.stations:
                    await self.csms.close_station(self.station_id(m))
            case "csms_restore":
                self.reachable = True

    def transactions(self) -> list[dict[str, Any]]:
        if self.csms is None:
            return []
        return [dict(tx) for tx in self.csms.transactions.values()]

    async def close(self) -> None:
        for station in self.stations.values():
            await station.stop()
        if self.csms is not None:
            await self.csms.stop()
        ocpp.messages.ASYNC_VALIDATION = self._saved_validation
