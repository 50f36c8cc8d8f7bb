"""The site EMS / HEMS interface over MQTT (aiomqtt): commands in, status and measurements out.

Topics are under ``topic_prefix`` (default ``evse/station``); the map, payloads and recommended broker
ACL are in docs/ems.md. In short:

* commands (QoS 1, JSON objects, validated strictly): ``site/limit/set``, ``site/demand_response/set``,
  ``site/measurement/set`` (the site meter reading, every few seconds), ``connector/<n>/setpoint/set``,
  ``connector/<n>/preferences/set`` and ``ems/heartbeat``;
* a rejected command gets a reply on ``error`` naming the field; it never reaches the energy manager;
* ``status`` (retained, the whole snapshot, republished when it changes), ``site/measurements`` and
  ``connector/<n>/measurements`` (every ``publish_period_s``), ``availability`` (retained ``online``; the
  broker publishes the last will ``offline`` when the firmware dies, and the firmware says it on a clean
  stop).

The client never gives up: a broker that is down, refuses the credentials or drops the connection is retried
with exponential backoff (``reconnect_min_s`` doubling to ``reconnect_max_s``), logged once per outage. A
retained command is ignored (reported on ``error``): it would replay an old setpoint after every reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiomqtt

from firmware.energy.ems_port import (
    MAX_ENERGY_WH,
    MAX_EPOCH_S,
    MAX_POWER_W,
    MAX_PRICE_PER_KWH,
    MAX_VALID_S,
    EmsInputError,
    EmsPort,
    EmsSnapshot,
    UserPreferences,
    check_connector,
    check_number,
    check_optional,
)
from hal.clock import Clock

log = logging.getLogger(__name__)

SOURCE = "ems:mqtt"
COMMAND_QOS = 1  # at least once: every command is an idempotent "set", so a duplicate is harmless
MAX_PAYLOAD_BYTES = 4096  # the largest valid command is a few hundred bytes
ONLINE = "online"
OFFLINE = "offline"


class PayloadError(EmsInputError):
    """An MQTT command that cannot be accepted; ``field`` names the offending key (or "payload"/"topic")."""


@dataclass(frozen=True)
class Command:
    """A validated command, ready to hand to the :class:`EmsPort`."""

    kind: str  # "site_limit", "demand_response", "site_measurement", "setpoint", "preferences", "heartbeat"
    connector: int | None
    values: dict[str, Any]


# Fields of each command: name -> (required, parser). Parsers take (field, value) and return the clean value.
_Parser = Callable[[str, Any], Any]


def _power(lo: float) -> _Parser:
    return lambda field, value: check_optional(field, value, lo=lo, hi=MAX_POWER_W)


def _valid_s(field: str, value: Any) -> float | None:
    return check_optional(field, value, lo=0.001, hi=MAX_VALID_S)


def _required_valid_s(field: str, value: Any) -> float:
    return check_number(field, value, lo=0.001, hi=MAX_VALID_S)


def _seq(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PayloadError(field, f"must be a non-negative integer, got {value!r}")
    return value


_FIELDS: dict[str, dict[str, tuple[bool, _Parser]]] = {
    "site_limit": {
        "import_max_w": (True, _power(0.0)),
        "export_max_w": (True, _power(0.0)),
        "valid_s": (False, _valid_s),
    },
    "demand_response": {
        "reduce_by_w": (True, lambda f, v: check_number(f, v, lo=0.0, hi=MAX_POWER_W)),
        "valid_s": (True, _required_valid_s),
    },
    # The connection-point power, + import, - export (seed R60/R64); required and never null: "no reading"
    # is said by not sending one, and the manager falls back after its meter timeout.
    "site_measurement": {
        "power_w": (True, lambda f, v: check_number(f, v, lo=-MAX_POWER_W, hi=MAX_POWER_W)),
    },
    "setpoint": {
        "power_w": (True, _power(-MAX_POWER_W)),
        "valid_s": (False, _valid_s),
    },
    "preferences": {
        "departure_at": (False, lambda f, v: check_optional(f, v, lo=0.0, hi=MAX_EPOCH_S)),
        "min_energy_wh": (False, lambda f, v: check_optional(f, v, lo=0.0, hi=MAX_ENERGY_WH)),
        "max_energy_wh": (False, lambda f, v: check_optional(f, v, lo=0.0, hi=MAX_ENERGY_WH)),
        "max_price_per_kwh": (
            False,
            lambda f, v: check_optional(f, v, lo=-MAX_PRICE_PER_KWH, hi=MAX_PRICE_PER_KWH),
        ),
        "discharge_floor_soc_pct": (False, lambda f, v: check_optional(f, v, lo=0.0, hi=100.0)),
    },
    "heartbeat": {"seq": (False, _seq)},
}


def _reject_constant(name: str) -> Any:
    raise PayloadError("payload", f"{name} is not a number JSON allows")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise PayloadError(key, "appears twice")
        obj[key] = value
    return obj


def decode_json_object(payload: bytes) -> dict[str, Any]:
    """The payload as a JSON object: UTF-8, at most :data:`MAX_PAYLOAD_BYTES`, no NaN/Infinity, no duplicate
    keys."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError("payload", f"{len(payload)} bytes, more than {MAX_PAYLOAD_BYTES}")
    try:
        text = payload.decode("utf-8")
        obj = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as exc:
        raise PayloadError("payload", f"not UTF-8 ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise PayloadError("payload", f"not JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(obj, dict):
        raise PayloadError("payload", f"must be a JSON object, got {type(obj).__name__}")
    return obj


def command_kind(relative_topic: str) -> tuple[str, int | None]:
    """Which command a topic (below the prefix) carries, and for which connector."""
    parts = relative_topic.split("/")
    if parts == ["site", "limit", "set"]:
        return "site_limit", None
    if parts == ["site", "demand_response", "set"]:
        return "demand_response", None
    if parts == ["site", "measurement", "set"]:
        return "site_measurement", None
    if parts == ["ems", "heartbeat"]:
        return "heartbeat", None
    if len(parts) == 4 and parts[0] == "connector" and parts[3] == "set" and parts[2] in ("setpoint", "preferences"):
        if not parts[1].isdecimal():
            raise PayloadError("topic", f"connector {parts[1]!r} is not a number")
        return parts[2], check_connector("topic", int(parts[1]))
    raise PayloadError("topic", f"{relative_topic!r} is not a command topic")


def parse_command(relative_topic: str, payload: bytes) -> Command:
    """Validate a command strictly: known topic, JSON object, only known keys, every required key present, every
    value of the right type and range."""
    kind, connector = command_kind(relative_topic)
    obj = decode_json_object(payload)
    fields = _FIELDS[kind]
    unknown = sorted(set(obj) - set(fields))
    if unknown:
        raise PayloadError(unknown[0], f"unknown field (allowed: {', '.join(fields)})")
    values: dict[str, Any] = {}
    for name, (required, parser) in fields.items():
        if name not in obj:
            if required:
                raise PayloadError(name, "is required")
            values[name] = None
            continue
        values[name] = parser(name, obj[name])
    if kind == "preferences":
        values = {"prefs": UserPreferences(**values)}  # cross-field checks (min <= max energy)
    return Command(kind, connector, values)


def _num(value: float | None) -> float | int | None:
    """Whole numbers print as integers, so the JSON reads "7400" rather than "7400.0"."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() else round(value, 3)


def status_document(snap: EmsSnapshot) -> dict[str, Any]:
    """The retained ``status`` payload."""
    return {
        "site": {
            "power_w": _num(snap.site_power_w),
            "import_limit_w": _num(snap.import_limit_w),
            "export_limit_w": _num(snap.export_limit_w),
            "limit_source": snap.limit_source,
            "fallback": snap.fallback,
        },
        "connectors": [
            {
                "connector": c.connector,
                "state": c.state.name.lower(),
                "power_w": _num(c.power_w),
                "energy_wh": _num(c.energy_wh),
                "limit_max_w": _num(c.limit_max_w),
                "limit_min_w": _num(c.limit_min_w),
                "limit_source": c.limit_source,
                "setpoint_w": _num(c.setpoint_w),
                "fallback": c.fallback,
                "faults": list(c.faults),
            }
            for c in snap.connectors
        ],
    }


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def _check_prefix(prefix: str) -> str:
    if not prefix or prefix.startswith("/") or prefix.endswith("/") or any(c in prefix for c in "+#\0"):
        raise ValueError(f"topic_prefix {prefix!r}: must be non-empty, without wildcards or leading/trailing '/'")
    return prefix


class EmsMqttClient:
    """Connects the energy manager (an :class:`EmsPort`) to a site EMS through an MQTT broker.

    ``ems`` is the energy manager; ``port`` is the broker's TCP port. Run :meth:`run` as a task; cancel it to
    stop (the client then publishes ``offline`` and disconnects cleanly).
    """

    def __init__(
        self,
        ems: EmsPort,
        *,
        host: str,
        port: int,
        username: str,
        password: str,
        clock: Clock,
        tls: ssl.SSLContext | None = None,
        topic_prefix: str = "evse/station",
        publish_period_s: float = 5.0,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        keepalive_s: int = 30,
        timeout_s: float = 10.0,
        client_id: str | None = None,
        mqtt_version: int = 5,
    ) -> None:
        if not username:
            raise ValueError("username: the broker must authenticate the charger (no anonymous access)")
        if not 0 < port < 65536:
            raise ValueError(f"port {port}: must be 1 .. 65535")
        if mqtt_version not in (4, 5):
            raise ValueError(f"mqtt_version {mqtt_version}: 4 (MQTT 3.1.1) or 5")
        for name, value in (
            ("publish_period_s", publish_period_s),
            ("reconnect_min_s", reconnect_min_s),
            ("reconnect_max_s", reconnect_max_s),
            ("timeout_s", timeout_s),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} {value!r}: must be a positive number of seconds")
        if reconnect_max_s < reconnect_min_s:
            raise ValueError("reconnect_max_s must not be below reconnect_min_s")
        self._ems = ems
        self._host = host
        self._port = port
        self._username = username
        self._password = password
        self._tls = tls
        self._clock = clock
        self.prefix = _check_prefix(topic_prefix)
        self._publish_period_s = publish_period_s
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._keepalive_s = keepalive_s
        self._timeout_s = timeout_s
        self._client_id = client_id or "evse-" + topic_prefix.replace("/", "-")
        self._protocol = aiomqtt.ProtocolVersion.V5 if mqtt_version == 5 else aiomqtt.ProtocolVersion.V311
        self._wake = asyncio.Event()
        self._last_status: str | None = None
        #: True while connected to the broker (for supervision and tests).
        self.connected = False

    def topic(self, relative: str) -> str:
        return f"{self.prefix}/{relative}"

    async def run(self) -> None:
        """Connect, serve, and reconnect forever. Only cancellation ends it."""
        backoff = self._reconnect_min_s
        in_outage = False
        while True:
            try:
                async with self._new_client() as client:
                    self.connected = True
                    if in_outage:
                        log.info("EMS MQTT: connected again to %s:%d", self._host, self._port)
                    in_outage = False
                    backoff = self._reconnect_min_s
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                if not in_outage:
                    log.warning(
                        "EMS MQTT: broker %s:%d unreachable or connection lost (%s); retrying every %g .. %g s",
                        self._host,
                        self._port,
                        exc,
                        self._reconnect_min_s,
                        self._reconnect_max_s,
                    )
                in_outage = True
            except Exception:
                # A bug here must not stop the charger: log it with its traceback and start over.
                log.exception("EMS MQTT: unexpected error; reconnecting")
                in_outage = True
            finally:
                self.connected = False
            _raise_if_cancelled()
            await self._clock.sleep(backoff)
            backoff = min(backoff * 2, self._reconnect_max_s)

    def _new_client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self._host,
            self._port,
            username=self._username,
            password=self._password,
            identifier=self._client_id,
            protocol=self._protocol,
            tls_context=self._tls,
            keepalive=self._keepalive_s,
            timeout=self._timeout_s,
            will=aiomqtt.Will(self.topic("availability"), OFFLINE, qos=1, retain=True),
        )

    async def _serve(self, client: aiomqtt.Client) -> None:
        try:
            for pattern in ("site/+/set", "connector/+/+/set", "ems/heartbeat"):
                await client.subscribe(self.topic(pattern), qos=COMMAND_QOS)
            await client.publish(self.topic("availability"), ONLINE, qos=1, retain=True)
            _raise_if_cancelled()
            self._last_status = None  # the broker may have lost the retained status: publish it again
            await _first_failure(self._receive(client), self._publish_loop(client))
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.publish(self.topic("availability"), OFFLINE, qos=1, retain=True), 2.0)
            raise

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            await self._handle(client, message.topic.value, message.payload, retained=message.retain)
            _raise_if_cancelled()

    async def _handle(self, client: aiomqtt.Client, topic: str, payload: Any, *, retained: bool) -> None:
        """Validate and apply one command; any failure becomes an error reply, never an exception."""
        relative = topic[len(self.prefix) + 1 :]
        try:
            if retained:
                raise PayloadError("retain", "a retained command is ignored (it would replay after every reconnect)")
            if not isinstance(payload, bytes | bytearray):
                raise PayloadError("payload", "must be a JSON object")
            command = parse_command(relative, bytes(payload))
            if command.connector is not None and self._ems.snapshot().connector(command.connector) is None:
                raise PayloadError("topic", f"this charger has no connector {command.connector}")
            now = self._clock.monotonic()
            self._ems.heartbeat(SOURCE, now)
            self._apply(command, now)
        except ValueError as exc:
            field = exc.field if isinstance(exc, EmsInputError) else "payload"
            log.info("EMS MQTT: rejected %s: %s", topic, exc)
            await self._reply_error(client, topic, field, str(exc))
            return
        except Exception as exc:
            log.exception("EMS MQTT: energy manager failed on %s", topic)
            await self._reply_error(client, topic, "internal", f"the charger could not apply it: {exc}")
            return
        self._wake.set()  # show the effect in the status without waiting a whole period

    def _apply(self, command: Command, now: float) -> None:
        values = command.values

        def expiry(valid_s: float | None) -> float | None:
            return None if valid_s is None else now + valid_s

        if command.kind == "site_limit":
            self._ems.set_site_limit(
                import_max_w=values["import_max_w"],
                export_max_w=values["export_max_w"],
                expires_at=expiry(values["valid_s"]),
                source=SOURCE,
            )
        elif command.kind == "demand_response":
            self._ems.demand_response(reduce_by_w=values["reduce_by_w"], until=now + values["valid_s"], source=SOURCE)
        elif command.kind == "site_measurement":
            self._ems.site_measurement(power_w=values["power_w"], source=SOURCE, now=now)
        elif command.kind in ("setpoint", "preferences"):
            connector = command.connector
            assert connector is not None  # command_kind gives every connector command its number
            if command.kind == "setpoint":
                self._ems.set_connector_setpoint(
                    connector, power_w=values["power_w"], expires_at=expiry(values["valid_s"]), source=SOURCE
                )
            else:
                self._ems.set_preferences(connector, values["prefs"])
        # "heartbeat": the heartbeat above is all it does

    async def _reply_error(self, client: aiomqtt.Client, topic: str, field: str, error: str) -> None:
        body = _dumps({"topic": topic, "field": field, "error": error})
        await client.publish(self.topic("error"), body, qos=1)

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        while True:
            await self._publish_snapshot(client)
            _raise_if_cancelled()
            await self._next_period()

    async def _next_period(self) -> None:
        self._wake.clear()
        sleeper = asyncio.ensure_future(self._clock.sleep(self._publish_period_s))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((sleeper, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            woken.cancel()

    async def _publish_snapshot(self, client: aiomqtt.Client) -> None:
        try:
            snap = self._ems.snapshot()
        except Exception:
            log.exception("EMS MQTT: the energy manager gave no snapshot; nothing published this period")
            return
        status = _dumps(status_document(snap))
        if status != self._last_status:
            await client.publish(self.topic("status"), status, qos=1, retain=True)
            self._last_status = status
        await client.publish(self.topic("site/measurements"), _dumps({"power_w": _num(snap.site_power_w)}))
        for c in snap.connectors:
            body = _dumps({"power_w": _num(c.power_w), "energy_wh": _num(c.energy_wh)})
            await client.publish(self.topic(f"connector/{c.connector}/measurements"), body)


def _raise_if_cancelled() -> None:
    """Honour a cancellation that was swallowed on the way.

    On Python 3.11 ``asyncio.wait_for`` (which aiomqtt awaits every acknowledgement with) can lose a cancel
    that arrives as the awaited future completes; the task then runs on with ``cancelling()`` still set, and
    a shutdown would wait for it forever. Checked after every such call in the loops.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _first_failure(*coros: Coroutine[Any, Any, None]) -> None:
    """Run the coroutines together until the first one ends; cancel the others and re-raise its exception."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        exc = task.exception()
        if exc is not None:
            raise exc
    raise aiomqtt.MqttError("the message stream ended")
