"""The EMS MQTT interface against a real mosquitto broker (tests/peers/mosquitto.py installs and starts it).

The "EMS" in these tests is a plain aiomqtt client speaking MQTT 3.1.1 (the charger speaks MQTT 5), logged in
as its own broker user and restricted by the ACL that docs/ems.md recommends. Real sockets, real time, every
wait bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from firmware.energy.ems_mqtt import EmsMqttClient
from firmware.energy.ems_port import ConnectorSnapshot, ConnectorState, EmsSnapshot, UserPreferences
from hal.clock import RealClock
from tests.firmware.energy.fake_ems import FakeEms
from tests.peers.mosquitto import INSTALL_TIMEOUT_S, MosquittoBroker

ROOT = Path(__file__).resolve().parents[3]
PREFIX = "evse/test1"
USERS = {"station": "station-secret", "ems": "ems-secret"}
# The ACL docs/ems.md recommends: the charger owns its prefix; the EMS may only send commands and read.
ACL = f"""
user station
topic readwrite {PREFIX}/#

user ems
topic write {PREFIX}/site/+/set
topic write {PREFIX}/connector/+/+/set
topic write {PREFIX}/ems/heartbeat
topic read {PREFIX}/#
"""
NOW = 1000.0  # the frozen monotonic time of FrozenClock
# On a fresh machine the first test's fixture installs mosquitto (apt-get, bounded by INSTALL_TIMEOUT_S): the
# suite-wide 60 s per test would cut that short. The tests themselves are bounded by TEST_TIMEOUT_S.
pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT_S + 60)
TEST_TIMEOUT_S = 30.0
WAIT_S = 5.0


class FrozenClock(RealClock):
    """Real sleeps (the broker runs in real time) but a fixed monotonic reading, so expiries are exact."""

    def monotonic(self) -> float:
        return NOW


def _snapshot(**site: Any) -> EmsSnapshot:
    connectors = (
        ConnectorSnapshot(1, ConnectorState.CHARGING, 7400.0, 1234.5, 11000.0, 0.0, "grid", None, False),
        ConnectorSnapshot(
            2, ConnectorState.DISCHARGING, -3000.0, -250.0, 11000.0, -5000.0, "ems", -3000.0, True, ("X",)
        ),
    )
    values: dict[str, Any] = {
        "site_power_w": 4400.0,
        "import_limit_w": 17000.0,
        "export_limit_w": None,
        "limit_source": "ems",
        "fallback": False,
        "connectors": connectors,
    }
    values.update(site)
    return EmsSnapshot(**values)


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class EmsPeer:
    """The site EMS: subscribes to everything under the prefix, sends commands, waits for messages."""

    def __init__(self, broker: MosquittoBroker, *, name: str = "ems-test") -> None:
        self.client = aiomqtt.Client(
            broker.host,
            broker.port,
            username="ems",
            password=USERS["ems"],
            identifier=name,
            protocol=aiomqtt.ProtocolVersion.V311,
            timeout=WAIT_S,
        )
        self.messages: list[Received] = []
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EmsPeer:
        await self.client.__aenter__()
        await self.client.subscribe(f"{PREFIX}/#", qos=1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._reader
        with contextlib.suppress(aiomqtt.MqttError):
            await self.client.__aexit__(None, None, None)

    async def _read(self) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            async for message in self.client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
                self.messages.append(Received(message.topic.value, payload, message.retain))
                self._changed.set()

    async def wait(
        self, relative: str, match: Callable[[Received], bool] = lambda m: True, *, since: int = 0
    ) -> Received:
        """The first message on ``PREFIX/relative`` at index >= ``since`` that matches, within WAIT_S."""
        topic = f"{PREFIX}/{relative}"
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while True:
            for message in self.messages[since:]:
                if message.topic == topic and match(message):
                    return message
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                seen = [(m.topic, m.payload[:80]) for m in self.messages[-10:]]
                raise AssertionError(f"nothing on {topic} matched within {WAIT_S} s; last seen: {seen}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def send(self, relative: str, payload: Any, *, retain: bool = False) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await self.client.publish(f"{PREFIX}/{relative}", body, qos=1, retain=retain)


def _client(ems: FakeEms, broker: MosquittoBroker, *, password: str = USERS["station"], **kw: Any) -> EmsMqttClient:
    options: dict[str, Any] = {"publish_period_s": 0.2, "reconnect_min_s": 0.05, "reconnect_max_s": 0.4}
    options.update(kw)
    return EmsMqttClient(
        ems,
        host=broker.host,
        port=broker.port,
        username="station",
        password=password,
        clock=FrozenClock(),
        topic_prefix=PREFIX,
        **options,
    )


@contextlib.asynccontextmanager
async def running(client: EmsMqttClient) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(client.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT_S)


def _run(coro: Any) -> None:
    asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT_S))


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    with MosquittoBroker(USERS, acl=ACL) as started:
        yield started


def _online(m: Received) -> bool:
    return m.payload == b"online"


def _about(relative: str) -> Callable[[Received], bool]:
    """Matches an error reply about a command on ``PREFIX/relative``."""
    return lambda m: bool(m.json()["topic"] == f"{PREFIX}/{relative}")


# (topic below the prefix, payload, the call the energy manager must see)
COMMANDS: list[tuple[str, dict[str, Any], tuple[str, dict[str, Any]]]] = [
    (
        "site/limit/set",
        {"import_max_w": 11000, "export_max_w": 4600.5, "valid_s": 60},
        (
            "set_site_limit",
            {"import_max_w": 11000.0, "export_max_w": 4600.5, "expires_at": NOW + 60, "source": "ems:mqtt"},
        ),
    ),
    (
        "site/limit/set",
        {"import_max_w": None, "export_max_w": 0},
        ("set_site_limit", {"import_max_w": None, "export_max_w": 0.0, "expires_at": None, "source": "ems:mqtt"}),
    ),
    (
        "connector/2/setpoint/set",
        {"power_w": -5000, "valid_s": 30},
        ("set_connector_setpoint", {"connector": 2, "power_w": -5000.0, "expires_at": NOW + 30, "source": "ems:mqtt"}),
    ),
    (
        "connector/1/setpoint/set",
        {"power_w": None},
        ("set_connector_setpoint", {"connector": 1, "power_w": None, "expires_at": None, "source": "ems:mqtt"}),
    ),
    (
        "site/demand_response/set",
        {"reduce_by_w": 5000, "valid_s": 900},
        ("demand_response", {"reduce_by_w": 5000.0, "until": NOW + 900, "source": "ems:mqtt"}),
    ),
    (
        "connector/1/preferences/set",
        {"departure_at": 1767225600, "min_energy_wh": 10000, "max_price_per_kwh": -0.05, "discharge_floor_soc_pct": 30},
        ("set_preferences", {"connector": 1, "prefs": UserPreferences(1767225600.0, 10000.0, None, -0.05, 30.0)}),
    ),
    # The connection-point power from the EMS's smart meter: + import, - export (seed R60/R64), to +-100 MW.
    (
        "site/measurement/set",
        {"power_w": 4400.5},
        ("site_measurement", {"power_w": 4400.5, "source": "ems:mqtt", "now": NOW}),
    ),
    (
        "site/measurement/set",
        {"power_w": -1250},
        ("site_measurement", {"power_w": -1250.0, "source": "ems:mqtt", "now": NOW}),
    ),
    (
        "site/measurement/set",
        {"power_w": -100_000_000},
        ("site_measurement", {"power_w": -1e8, "source": "ems:mqtt", "now": NOW}),
    ),
    ("ems/heartbeat", {"seq": 7}, ("heartbeat-only", {})),
]


def test_commands_reach_the_energy_manager_with_their_values(broker: MosquittoBroker) -> None:
    async def main() -> None:
        ems = FakeEms(_snapshot)
        async with EmsPeer(broker) as peer, running(_client(ems, broker)):
            await peer.wait("availability", _online)
            for topic, payload, _ in COMMANDS:
                await peer.send(topic, payload)
            expected = [call for _, _, call in COMMANDS if call[0] != "heartbeat-only"]
            for _ in range(100):
                if len(ems.commands()) >= len(expected) and len(ems.calls) >= len(expected) + len(COMMANDS):
                    break
                await asyncio.sleep(0.05)
            assert ems.commands() == expected
            # Every valid message is a heartbeat from the EMS, the plain heartbeat included.
            assert ems.calls.count(("heartbeat", {"source": "ems:mqtt", "now": NOW})) == len(COMMANDS)
            assert peer.messages and not [m for m in peer.messages if m.topic.endswith("/error")]

    _run(main())


TOO_BIG = b'{"seq": 1, "pad": "' + b"x" * 5000 + b'"}'
# (topic below the prefix, raw payload, the field the error reply must name)
INVALID: list[tuple[str, bytes, str]] = [
    ("site/limit/set", b"not json", "payload"),
    ("site/limit/set", b"[11000, null]", "payload"),
    ("site/limit/set", b"\xff\xfe", "payload"),
    ("site/limit/set", b'{"import_max_w": NaN, "export_max_w": null}', "payload"),
    ("site/limit/set", b'{"import_max_w": "11000", "export_max_w": null}', "import_max_w"),
    ("site/limit/set", b'{"import_max_w": true, "export_max_w": null}', "import_max_w"),
    ("site/limit/set", b'{"import_max_w": -1, "export_max_w": null}', "import_max_w"),
    ("site/limit/set", b'{"import_max_w": 1e12, "export_max_w": null}', "import_max_w"),
    ("site/limit/set", b'{"import_max_w": 1, "import_max_w": 2, "export_max_w": null}', "import_max_w"),
    ("site/limit/set", b'{"import_max_w": 11000}', "export_max_w"),
    ("site/limit/set", b'{"import_max_w": 11000, "export_max_w": null, "valid_s": 0}', "valid_s"),
    ("site/limit/set", b'{"import_max_w": 11000, "export_max_w": null, "valid_s": 70000}', "valid_s"),
    ("site/limit/set", b'{"import_max_w": 11000, "export_max_w": null, "colour": "red"}', "colour"),
    ("site/limit/set", TOO_BIG, "payload"),
    ("site/grid/set", b"{}", "topic"),
    ("site/demand_response/set", b'{"reduce_by_w": 5000}', "valid_s"),
    ("connector/9/setpoint/set", b'{"power_w": 1000}', "topic"),
    ("connector/x/setpoint/set", b'{"power_w": 1000}', "topic"),
    ("connector/0/setpoint/set", b'{"power_w": 1000}', "topic"),
    ("connector/1/setpoint/set", b'{"power_w": 1e9}', "power_w"),
    ("connector/1/setpoint/set", b'{"valid_s": 10}', "power_w"),
    ("connector/1/preferences/set", b'{"min_energy_wh": 5000, "max_energy_wh": 1000}', "min_energy_wh"),
    ("connector/1/preferences/set", b'{"discharge_floor_soc_pct": 120}', "discharge_floor_soc_pct"),
    ("connector/1/preferences/set", b'{"departure_at": -5}', "departure_at"),
    ("ems/heartbeat", b'{"seq": -1}', "seq"),
    ("site/measurement/set", b"{}", "power_w"),
    ("site/measurement/set", b'{"power_w": null}', "power_w"),  # "no reading" is said by not sending one
    ("site/measurement/set", b'{"power_w": "4400"}', "power_w"),
    ("site/measurement/set", b'{"power_w": false}', "power_w"),
    ("site/measurement/set", b'{"power_w": 100000001}', "power_w"),
    ("site/measurement/set", b'{"power_w": -1.5e8}', "power_w"),
    ("site/measurement/set", b'{"power_w": Infinity}', "payload"),
    ("site/measurement/set", b'{"power_w": 4400, "valid_s": 5}', "valid_s"),
]


def test_invalid_commands_get_an_error_reply_naming_the_field_and_never_reach_the_energy_manager(
    broker: MosquittoBroker,
) -> None:
    async def main() -> None:
        ems = FakeEms(_snapshot)
        async with EmsPeer(broker) as peer:
            # A retained command would be replayed by the broker at every (re)subscription: refused, even valid.
            # A retained site measurement would be a stale meter reading with a fresh receive time.
            retained = {"connector/1/setpoint/set": {"power_w": 1000}, "site/measurement/set": {"power_w": 4400}}
            for topic, payload in retained.items():
                await peer.send(topic, payload, retain=True)
            async with running(_client(ems, broker)):
                for topic in retained:
                    reply = (await peer.wait("error", _about(topic))).json()
                    assert reply["field"] == "retain", reply
                # An empty retained message deletes it; delivered live, it is not a command either.
                for topic in retained:
                    since = len(peer.messages)
                    await peer.send(topic, b"", retain=True)
                    assert (await peer.wait("error", since=since)).json()["field"] == "payload"
                await peer.wait("availability", _online)
                await _invalid_commands(peer, ems)

    _run(main())


async def _invalid_commands(peer: EmsPeer, ems: FakeEms) -> None:
    for topic, payload, bad_field in INVALID:
        since = len(peer.messages)
        await peer.send(topic, payload)
        reply = (await peer.wait("error", since=since)).json()
        assert reply["topic"] == f"{PREFIX}/{topic}", reply
        assert reply["field"] == bad_field, (topic, payload[:60], reply)
        assert bad_field in reply["error"] or bad_field == "payload", reply
    assert ems.calls == []
    # A command the energy manager itself refuses is reported too (the EMS did show it is alive).
    ems.refuse = True
    since = len(peer.messages)
    await peer.send("site/limit/set", {"import_max_w": 1000, "export_max_w": None})
    reply = (await peer.wait("error", since=since)).json()
    assert reply["field"] == "payload" and "refused by the energy manager" in reply["error"]
    assert ems.commands() == []
    # The loop survived all of it: a valid command still goes through.
    ems.refuse = False
    await peer.send("connector/1/setpoint/set", {"power_w": 2000})
    for _ in range(100):
        if ems.commands():
            break
        await asyncio.sleep(0.05)
    assert ems.commands() == [
        ("set_connector_setpoint", {"connector": 1, "power_w": 2000.0, "expires_at": None, "source": "ems:mqtt"})
    ]


def test_a_wrong_password_is_refused_and_retried_quietly(
    broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        intruder = aiomqtt.Client(broker.host, broker.port, username="station", password="guess", timeout=WAIT_S)
        with pytest.raises(aiomqtt.MqttError):
            async with intruder:
                pass
        anonymous = aiomqtt.Client(broker.host, broker.port, timeout=WAIT_S)
        with pytest.raises(aiomqtt.MqttError):
            async with anonymous:
                pass
        ems = FakeEms(_snapshot)
        client = _client(ems, broker, password="wrong")
        async with EmsPeer(broker) as peer, running(client) as task:
            await peer.send("connector/1/setpoint/set", {"power_w": 1000})
            await asyncio.sleep(1.5)  # several refused attempts at 0.05 .. 0.4 s backoff
            assert not task.done()  # refusal never ends the loop
            assert not client.connected
            assert ems.calls == []
            assert not [m for m in peer.messages if m.topic == f"{PREFIX}/availability"]
        warnings = [r for r in caplog.records if r.name == "firmware.energy.ems_mqtt" and r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]  # logged once per outage, not per attempt

    caplog.set_level(logging.INFO, logger="firmware.energy.ems_mqtt")
    _run(main())


def test_status_is_published_retained_and_measurements_periodically(broker: MosquittoBroker) -> None:
    async def main() -> None:
        ems = FakeEms(_snapshot)
        async with EmsPeer(broker) as peer, running(_client(ems, broker)) as task:
            status = (await peer.wait("status")).json()
            assert status == {
                "site": {
                    "power_w": 4400,
                    "import_limit_w": 17000,
                    "export_limit_w": None,
                    "limit_source": "ems",
                    "fallback": False,
                },
                "connectors": [
                    {
                        "connector": 1,
                        "state": "charging",
                        "power_w": 7400,
                        "energy_wh": 1234.5,
                        "limit_max_w": 11000,
                        "limit_min_w": 0,
                        "limit_source": "grid",
                        "setpoint_w": None,
                        "fallback": False,
                        "faults": [],
                    },
                    {
                        "connector": 2,
                        "state": "discharging",
                        "power_w": -3000,
                        "energy_wh": -250,
                        "limit_max_w": 11000,
                        "limit_min_w": -5000,
                        "limit_source": "ems",
                        "setpoint_w": -3000,
                        "fallback": True,
                        "faults": ["X"],
                    },
                ],
            }
            first = await peer.wait("site/measurements")
            assert first.json() == {"power_w": 4400}
            assert (await peer.wait("connector/2/measurements")).json() == {"power_w": -3000, "energy_wh": -250}
            # Periodic: another site measurement follows within a few periods.
            await peer.wait("site/measurements", since=peer.messages.index(first) + 1)
            # Unchanged status is not republished every period.
            assert len([m for m in peer.messages if m.topic == f"{PREFIX}/status"]) == 1

            # A newcomer gets the status and the availability at once: both retained.
            async with EmsPeer(broker, name="ems-late") as late:
                assert (await late.wait("status", lambda m: m.retain)).json() == status
                assert (await late.wait("availability", lambda m: m.retain)).payload == b"online"

            # A change shows up in the retained status.
            ems.snap = replace(ems.snap, import_limit_w=9000.0, fallback=True, limit_source="fallback")
            changed = (await peer.wait("status", lambda m: m.json()["site"]["fallback"])).json()
            assert changed["site"]["import_limit_w"] == 9000 and changed["site"]["limit_source"] == "fallback"

            # A clean stop says "offline" itself.
            since = len(peer.messages)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, WAIT_S)
            assert (await peer.wait("availability", since=since)).payload == b"offline"

    _run(main())


async def _child(host: str, port: int) -> None:
    """Run the MQTT client in this process until it is killed (see the last-will test)."""
    client = EmsMqttClient(
        FakeEms(_snapshot),
        host=host,
        port=port,
        username="station",
        password=USERS["station"],
        clock=RealClock(),
        topic_prefix=PREFIX,
        publish_period_s=0.2,
        client_id="evse-child",
    )
    await client.run()


def test_the_broker_publishes_the_last_will_when_the_charger_dies(broker: MosquittoBroker) -> None:
    async def main() -> None:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.firmware.energy.test_ems_mqtt", broker.host, str(broker.port)],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            async with EmsPeer(broker) as peer:
                await peer.wait("availability", _online)
                since = len(peer.messages)
                child.send_signal(signal.SIGKILL)  # no DISCONNECT: only the broker can tell the EMS
                await asyncio.to_thread(child.wait, WAIT_S)
                offline = await peer.wait("availability", since=since)
                assert offline.payload == b"offline"
            async with EmsPeer(broker, name="ems-late") as late:
                assert (await late.wait("availability", lambda m: m.retain)).payload == b"offline"
        finally:
            if child.poll() is None:
                child.kill()
            _, err = child.communicate(timeout=WAIT_S)
            assert b"Traceback" not in err, err.decode(errors="replace")

    _run(main())


def test_reconnects_after_the_broker_restarts(broker: MosquittoBroker, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        ems = FakeEms(_snapshot)
        client = _client(ems, broker)
        async with running(client) as task:
            async with EmsPeer(broker) as peer:
                await peer.wait("availability", _online)
            await asyncio.to_thread(broker.stop)
            for _ in range(100):
                if not client.connected:
                    break
                await asyncio.sleep(0.05)
            assert not client.connected
            await asyncio.sleep(1.0)  # several failed attempts while the broker is down
            assert not task.done()
            await asyncio.to_thread(broker.start)  # same port, empty broker (no persistence)
            async with EmsPeer(broker, name="ems-again") as peer:
                await peer.wait("availability", _online)  # republished by the charger after reconnecting
                await peer.wait("status")
                await peer.send("connector/1/setpoint/set", {"power_w": 3000, "valid_s": 5})
                for _ in range(100):
                    if ems.commands():
                        break
                    await asyncio.sleep(0.05)
                assert ems.commands() == [
                    (
                        "set_connector_setpoint",
                        {"connector": 1, "power_w": 3000.0, "expires_at": NOW + 5, "source": "ems:mqtt"},
                    )
                ]
        records = [r for r in caplog.records if r.name == "firmware.energy.ems_mqtt"]
        assert len([r for r in records if r.levelno >= logging.WARNING]) == 1
        assert any("connected again" in r.getMessage() for r in records)

    caplog.set_level(logging.INFO, logger="firmware.energy.ems_mqtt")
    _run(main())


if __name__ == "__main__":
    asyncio.run(_child(sys.argv[1], int(sys.argv[2])))
