"""The charging station as the CSMS sees it: one OCPP client per board, over its connectors.

:class:`OcppStation` owns the connection life cycle (connect with back-off, BootNotification until
Accepted, heartbeats, reconnect), turns connector events into OCPP messages (status, transactions,
meter values) and carries out what the CSMS asks (remote start and stop, availability, reset,
unlock, charging profiles). What differs between OCPP versions, the message shapes and the handlers,
lives in an adapter (:mod:`firmware.ocpp.v16`); this module holds the behaviour they share.

Nothing here blocks the connectors: they run on their own loops and only receive commands
(authorize, deauthorize, set_limit). A CSMS that misbehaves costs at most an OCPP error, never
the control loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from firmware import limits as sources
from firmware.connector import Connector
from firmware.iec61851.pilot import CpState
from firmware.limits import Limit
from firmware.metering.ocmf import OcmfError
from firmware.metering.signing import OcmfSigner
from firmware.ocpp.authorization import AuthCache, AuthPolicy, LocalAuthList
from firmware.ocpp.calls import OcppCallError
from firmware.ocpp.configuration import write_json_atomic
from firmware.ocpp.link import Link, LinkClosed
from firmware.ocpp.maintenance import Maintenance
from firmware.ocpp.outbox import Outbox, OutboxCallError, OutboxSender, QueuedMessage
from firmware.ocpp.signed_meter import SignedMeter, billing_payload, journal_session
from firmware.ocpp.smart_charging import ProfileStore, limit_at
from firmware.ocpp.status import ConnectorView, Status, connector_status
from firmware.ocpp.transport import Backoff, Security, TransportError, connect_with_retry, open_link
from hal.clock import Clock

log = logging.getLogger(__name__)

Version = Literal["1.6", "2.0.1", "2.1"]
OcppEventSink = Callable[[dict[str, Any]], None]

#: Retry a BootNotification this long after a failure without an interval from the CSMS (libocpp's
#: default, standards-facts.md 4.6).
BOOT_RETRY_DEFAULT_S = 60.0
#: A CSMS interval shorter than this would hammer it (and us); longer than a day is a typo.
MIN_INTERVAL_S, MAX_INTERVAL_S = 1.0, 86_400.0
#: After the CSMS refused us for good (HTTP 401, an untrusted certificate, no common subprotocol), the
#: next attempt comes this much later.
CONFIG_RETRY_S = 300.0
#: Wait for the lock to confirm an UnlockConnector command (motor locks need 0.4-0.6 s).
UNLOCK_CONFIRM_S = 3.0
#: Re-evaluate the charging-profile limit at least this often (profile edges are computed exactly;
#: this only bounds the effect of a wall-clock step).
PROFILE_RECHECK_MAX_S = 60.0


@dataclass
class StationSettings:
    station_id: str
    version: Version = "1.6"
    csms_url: str | None = None
    security: Security = field(default_factory=Security)
    vendor: str = "evse-firmware"
    model: str = "evse"
    serial_number: str | None = None
    firmware_version: str = "0.1.0"
    #: 1.6 idTag used for sessions that start without one (free charging: a private wallbox).
    free_id_tag: str = "FREE"
    message_timeout_s: float = 30.0
    backoff: Backoff = field(default_factory=Backoff)


#: The sampling loops look at their interval setting at least this often, so that a CSMS lowering
#: MeterValueSampleInterval / ClockAlignedDataInterval (or the 2.0.1 variables) from 900 s sees the new
#: value within seconds rather than after the old period.
INTERVAL_RECHECK_S = 10.0
#: How many of a connector's latest sessions are checked at boot for a stop the CSMS never got.
CLOSED_AT_BOOT_LOOKBACK = 5


class ProtocolAdapter(Protocol):
    """What the station needs from one OCPP version."""

    version: Version

    async def run(self, link: Link) -> None:
        """Read frames until the link closes (LinkClosed)."""
        ...

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """A call by action name and camelCase payload; the camelCase result. Raises OcppCallError for
        a CALLERROR, LinkClosed when the link is gone, TimeoutError without an answer."""
        ...

    def boot_payload(self) -> dict[str, Any]: ...

    def status_payload(self, connector_id: int, status: Status, now: datetime) -> tuple[str, dict[str, Any]]: ...

    def authorize_payload(self, id_tag: str) -> dict[str, Any]: ...

    def authorize_status(self, result: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(status, the info dict to cache) from an Authorize result."""
        ...

    def tx_started(self, tx: Transaction, now: datetime) -> tuple[str, dict[str, Any]]: ...

    def tx_meter_values(self, tx: Transaction, values: dict[str, Any], now: datetime) -> tuple[str, dict[str, Any]]: ...

    def signed_begin_message(self, tx: Transaction, now: datetime) -> tuple[str, dict[str, Any]] | None:
        """A message of its own for the signed begin record (1.6), None when the start carries it."""
        ...

    def tx_stopped(self, tx: Transaction, reason: str, now: datetime) -> tuple[str, dict[str, Any]]: ...

    def meter_values(
        self, connector_id: int, tx: Transaction | None, reading: Any, context: str, now: datetime
    ) -> tuple[str, dict[str, Any]] | None: ...

    def on_delivered(self, message: QueuedMessage, response: dict[str, Any]) -> None: ...

    def heartbeat_interval_s(self) -> float: ...

    def set_heartbeat_interval(self, seconds: int) -> None: ...

    def sample_interval_s(self) -> float: ...

    def aligned_interval_s(self) -> float: ...

    def attempts(self) -> int: ...

    def retry_interval_s(self) -> float: ...


@dataclass
class Transaction:
    """A connector session as the CSMS knows it."""

    ref: str  # our session id
    connector_id: int
    id_tag: str
    meter_start_wh: float
    started_at: datetime
    transaction_id: int | str | None = None  # from the CSMS (1.6) or ours (2.0.1)
    seq_no: int = 0  # 2.0.1 TransactionEvent seqNo
    remote_start_id: int | None = None
    stop_reason: str | None = None
    #: OCMF records of this transaction (firmware.ocpp.signed_meter), None when not signed.
    signed_begin: str | None = None
    signed_end: str | None = None
    #: The stop reading when it is not the meter's current one (a session closed at boot).
    meter_stop_wh: float | None = None


@dataclass
class ConnectorState:
    available: bool = True
    pending_unavailable: bool = False  # Inoperative asked during a transaction: applied at its end
    reserved_for: str | None = None
    reservation_id: int | None = None
    reservation_expires: datetime | None = None
    finishing: bool = False
    authorized_waiting: bool = False
    last_status: Status | None = None
    tx: Transaction | None = None
    next_stop_reason: str | None = None


class OcppStation:
    def __init__(
        self,
        settings: StationSettings,
        connectors: dict[int, Connector],
        *,
        clock: Clock,
        data_dir: Path | None,
        outbox: Outbox,
        adapter_factory: Callable[[OcppStation], ProtocolAdapter],
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        link_factory: Callable[[], Awaitable[Link]] | None = None,
        on_ocpp: OcppEventSink | None = None,
        reset_hook: Callable[[str], Awaitable[None]] | None = None,
        install_hook: Callable[[Path], Awaitable[bool]] | None = None,
        log_files: tuple[Path, ...] = (),
    ) -> None:
        if not connectors or 0 in connectors:
            raise ValueError("a station needs connectors numbered from 1")
        self.settings = settings
        self.connectors = connectors
        self.clock = clock
        self.wall_clock = wall_clock
        self.data_dir = data_dir
        self.outbox = outbox
        #: DataTransfer from the CSMS, by vendor id: handler(messageId, data) -> (status, info), status one
        #: of Accepted, Rejected, UnknownMessageId (J3072: firmware/j3072/service.py registers itself).
        self.data_transfer: dict[str, Callable[[str | None, object], tuple[str, str]]] = {}
        self.on_ocpp = on_ocpp
        self.reset_hook = reset_hook
        self.state = {n: ConnectorState() for n in connectors}
        self.local_list = LocalAuthList(data_dir / "local-list.json" if data_dir else None)
        self.cache = AuthCache(data_dir / "auth-cache.json" if data_dir else None)
        self.policy = AuthPolicy()
        self.profiles = ProfileStore()
        self.maintenance = Maintenance(
            clock,
            wall_clock,
            download_dir=(data_dir / "firmware")
            if data_dir
            else Path(tempfile.gettempdir()) / "evse-firmware-downloads",
            install_hook=install_hook,
            log_files=log_files,
        )
        self.firmware_status = "Idle"
        self.diagnostics_status = "Idle"
        self._profiles_path = data_dir / "charging-profiles.json" if data_dir else None
        self._load_profiles()
        self.signed: SignedMeter | None = None
        try:
            signer = OcmfSigner.for_data_dir(
                data_dir,
                gateway_id=f"{settings.vendor} {settings.model}",
                gateway_serial=settings.serial_number or settings.station_id,
                gateway_version=settings.firmware_version,
            )
            self.signed = SignedMeter(signer, station_id=settings.station_id)
        except OcmfError as exc:
            # Charging goes on without signed values; the operator must fix the key file.
            log.error("signed meter values are off: %s", exc)
        self.adapter = adapter_factory(self)
        self._link_factory = link_factory
        self.online = False
        self.boot_accepted = False
        self.registration: str | None = None
        self._link: Link | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._session_tasks: list[asyncio.Task[Any]] = []
        self._running = False
        self._status_dirty = asyncio.Event()
        self._profile_wake = asyncio.Event()
        self._boot_now = asyncio.Event()
        self.sender = OutboxSender(
            outbox,
            self._send_queued,
            clock=clock,
            attempts=self.adapter.attempts,
            retry_interval_s=self.adapter.retry_interval_s,
        )
        self.sender.on_delivered = self.adapter.on_delivered
        for n, connector in connectors.items():
            connector.add_listener(self._listener(n))
            self._report_sessions_closed_at_boot(n, connector)
            if connector.session_id is not None:
                # The connector booted first and resumed a session from its journal: continue its
                # transaction (the queued messages carry its reference).
                self._on_session(n, {"action": "resumed", "id": connector.session_id})

    # ================================================================== life cycle
    async def start(self) -> None:
        self._running = True
        self._tasks = [
            asyncio.create_task(self._connection_loop(), name="ocpp-connection"),
            asyncio.create_task(self.sender.run(), name="ocpp-outbox"),
            asyncio.create_task(self._profile_loop(), name="ocpp-profiles"),
            # Transaction meter values are sampled online or not: offline they wait in the outbox.
            asyncio.create_task(self._sampling_loop(), name="ocpp-sampling"),
            asyncio.create_task(self._aligned_loop(), name="ocpp-aligned"),
        ]

    async def stop(self) -> None:
        self._running = False
        for task in self._tasks + self._session_tasks:
            task.cancel()
        for task in self._tasks + self._session_tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks, self._session_tasks = [], []
        if self._link is not None:
            with contextlib.suppress(Exception):
                await self._link.close()
        self.outbox.close()

    async def _open(self) -> Link:
        if self._link_factory is not None:
            return await self._link_factory()
        url = self.settings.csms_url
        if url is None:
            raise TransportError("no CSMS URL configured")
        protocol = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1", "2.1": "ocpp2.1"}[self.settings.version]
        return await open_link(url, self.settings.station_id, protocol, self.settings.security)  # type: ignore[arg-type]

    async def _connection_loop(self) -> None:
        while self._running:
            try:
                link = await connect_with_retry(
                    self._open,  # type: ignore[arg-type]  # any Link will do
                    self.clock,
                    self.settings.backoff,
                    on_failure=lambda n, exc: log.warning("CSMS connection attempt %d failed: %s", n, exc),
                )
            except TransportError as exc:
                # A refusal (credentials, certificate, protocol) will not go away by knocking every few
                # seconds, but it may be fixed at the CSMS: try again, rarely.
                log.error("OCPP uplink disabled: %s; trying again in %.0f s", exc, CONFIG_RETRY_S)
                self._event("tx", "error", {"error": str(exc)})
                await self.clock.sleep(CONFIG_RETRY_S)
                continue
            self._link = link
            self._event("rx", "connected", {})
            reader = asyncio.create_task(self.adapter.run(link), name="ocpp-reader")
            session = asyncio.create_task(self._session(), name="ocpp-session")
            try:
                await asyncio.wait({reader, session}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (reader, session):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                if not reader.cancelled() and reader.exception() is not None:
                    log.info("CSMS link ended: %s", reader.exception())
            for task in self._session_tasks:
                task.cancel()
            self._session_tasks = []
            self.online = False
            self.sender.link_down()
            with contextlib.suppress(Exception):
                await link.close()
            self._link = None
            self._event("rx", "disconnected", {})
            if self._running:
                await self.clock.sleep(self.settings.backoff.minimum_s)

    async def _session(self) -> None:
        """One connected session: boot, then heartbeats, status and meter values until the link drops."""
        await self._boot()
        self.online = True
        self.sender.link_up()
        for st in self.state.values():
            st.last_status = None  # the CSMS gets every connector's status after a (re)boot
        self._status_dirty.set()
        self._session_tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="ocpp-heartbeat"),
            asyncio.create_task(self._status_loop(), name="ocpp-status"),
        ]
        await asyncio.gather(*self._session_tasks)

    async def _boot(self) -> None:
        """BootNotification until Accepted. Pending and Rejected are retried after the interval the
        CSMS gave (1.6 §4.2; 2.0.1 B01-B03): only a BootNotification may be sent before Accepted."""
        while True:
            try:
                result = await self.adapter.call("BootNotification", self.adapter.boot_payload())
            except (OcppCallError, TimeoutError) as exc:
                log.warning("BootNotification failed: %s", exc)
                await self.clock.sleep(BOOT_RETRY_DEFAULT_S)
                continue
            status = str(result.get("status"))
            interval = _interval(result.get("interval"), BOOT_RETRY_DEFAULT_S)
            self.registration = status
            if status == "Accepted":
                self.boot_accepted = True
                self.adapter.set_heartbeat_interval(int(interval))
                return
            log.warning("BootNotification %s; retrying in %.0f s", status, interval)
            self._boot_now.clear()
            with contextlib.suppress(TimeoutError):
                # A CSMS may trigger the BootNotification earlier (TriggerMessage while Pending).
                await self._wait_event(self._boot_now, interval)

    async def _wait_event(self, event: asyncio.Event, timeout: float) -> None:
        waiter = asyncio.ensure_future(event.wait())
        timer = asyncio.ensure_future(self.clock.sleep(timeout))
        try:
            done, _ = await asyncio.wait({waiter, timer}, return_when=asyncio.FIRST_COMPLETED)
            if waiter not in done:
                raise TimeoutError
        finally:
            waiter.cancel()
            timer.cancel()

    async def _heartbeat_loop(self) -> None:
        while True:
            await self.clock.sleep(self.adapter.heartbeat_interval_s())
            await self.heartbeat()

    async def heartbeat(self) -> None:
        with contextlib.suppress(OcppCallError, TimeoutError):
            await self.adapter.call("Heartbeat", {})

    # ================================================================== connector events -> OCPP
    def _listener(self, n: int) -> Callable[[str, dict[str, Any]], None]:
        def listener(kind: str, data: dict[str, Any]) -> None:
            if kind == "session":
                self._on_session(n, data)
            if kind in ("state", "fault", "session", "pilot", "contactor", "meter"):
                self._status_dirty.set()
            if kind == "phases":
                self._profile_wake.set()  # a limit in W is worth other amps on the new phase count

        return listener

    def _on_session(self, n: int, data: dict[str, Any]) -> None:
        st = self.state[n]
        connector = self.connectors[n]
        now = self.wall_clock()
        action = data.get("action")
        if action == "started":
            meter = connector.last_meter.import_wh if connector.last_meter is not None else 0.0
            tx = Transaction(
                ref=str(data.get("id")),
                connector_id=n,
                id_tag=str(data.get("id_tag") or self.settings.free_id_tag),
                meter_start_wh=meter,
                started_at=now,
            )
            st.tx, st.finishing, st.authorized_waiting = tx, False, False
            if self.signed is not None:
                tx.signed_begin = self.signed.begin(n, connector, tx.ref)
            self.enqueue(*self.adapter.tx_started(tx, now), tx_ref=tx.ref)  # carries the reservation id
            begin = self.adapter.signed_begin_message(tx, now)
            if begin is not None:
                self.enqueue(*begin, tx_ref=tx.ref)
            if st.reservation_id is not None and st.reserved_for == tx.id_tag:
                st.reserved_for = st.reservation_id = st.reservation_expires = None  # used up
        elif action == "stopped" and st.tx is not None:
            tx, st.tx = st.tx, None
            reason = st.next_stop_reason or _stop_reason(str(data.get("reason") or "Other"))
            st.next_stop_reason = None
            tx.stop_reason = reason
            st.finishing = connector.debouncer.state is not CpState.A
            if self.signed is not None:
                tx.signed_end = self.signed.end(n, connector, tx.ref)
            self.enqueue(*self.adapter.tx_stopped(tx, reason, now), tx_ref=tx.ref)
            billing = billing_payload(connector, tx.ref)
            if billing is not None:
                # After the stop message, in the same persistent queue: the CSMS gets the bill even
                # when the link was down at the end of the session.
                self.enqueue("DataTransfer", billing, tx_ref=tx.ref)
            self.profiles.end_transaction(n)
            self._save_profiles()
            self._profile_wake.set()
            if st.pending_unavailable:
                st.pending_unavailable = False
                self._apply_availability(n, False)
        elif action == "resumed" and st.tx is None:
            # A session resumed after a restart keeps its transaction (queued messages carry its ref).
            ref = str(data.get("id"))
            tx_id = self.outbox.transaction_id(ref)
            meter = connector.last_meter.import_wh if connector.last_meter is not None else 0.0
            started_at = now
            record = journal_session(connector, ref)
            if record is not None:  # the start as the journal kept it, not the moment of the restart
                meter, started_at = record.meter_start_wh, datetime.fromtimestamp(record.started_at, UTC)
            st.tx = Transaction(
                ref=ref,
                connector_id=n,
                id_tag=connector.id_tag or self.settings.free_id_tag,
                meter_start_wh=meter,
                started_at=started_at,
                transaction_id=tx_id,
            )

    def _report_sessions_closed_at_boot(self, n: int, connector: Connector) -> None:
        """Sessions the journal closed at boot (a power loss; the EV left while the station was off):
        the CSMS still has their transaction open. Queue their stop with the journal's stop time and
        reading, the signed end record and the bill, as if the station had seen the end."""
        if connector.journal is None:
            return
        try:
            recent = connector.journal.sessions(connector.settings.connector_id, limit=CLOSED_AT_BOOT_LOOKBACK)
        except Exception as exc:  # a broken journal must not stop the uplink
            log.error("connector %d: cannot read the journal for sessions closed at boot: %s", n, exc)
            return
        start_action = "StartTransaction" if self.adapter.version == "1.6" else "TransactionEvent"
        for record in reversed(recent):  # oldest first: stops reach the CSMS in the order sessions ended
            if record.is_open or record.stopped_at is None or record.meter_stop_wh is None:
                continue
            events = self.outbox.session_messages(record.session_id, start_action)
            started = [m for m in events if m.action == "StartTransaction" or m.payload.get("eventType") == "Started"]
            ended = self.outbox.session_messages(record.session_id, "StopTransaction") + [
                m for m in events if m.payload.get("eventType") == "Ended"
            ]
            if not started or ended:
                continue  # never reported (nothing to close) or already closed
            stopped_at = datetime.fromtimestamp(record.stopped_at, UTC)
            tx = Transaction(
                ref=record.session_id,
                connector_id=n,
                id_tag=record.id_tag or self.settings.free_id_tag,
                meter_start_wh=record.meter_start_wh,
                started_at=datetime.fromtimestamp(record.started_at, UTC),
                transaction_id=self.outbox.transaction_id(record.session_id),
                meter_stop_wh=record.meter_stop_wh,
            )
            reason = _stop_reason(record.stop_reason or "Other")
            tx.stop_reason = reason
            log.warning("connector %d: reporting session %s closed at boot (%s)", n, record.session_id, reason)
            if self.signed is not None:
                tx.signed_end = self.signed.end(n, connector, tx.ref)
            self.enqueue(*self.adapter.tx_stopped(tx, reason, stopped_at), tx_ref=tx.ref)
            billing = billing_payload(connector, tx.ref)
            if billing is not None:
                self.enqueue("DataTransfer", billing, tx_ref=tx.ref)

    def data_transfer_from_csms(self, vendor_id: str, message_id: str | None, data: object) -> tuple[str, str]:
        """A CSMS DataTransfer: (status, info); a handler that fails answers Rejected, never raises."""
        handler = self.data_transfer.get(vendor_id)
        if handler is None:
            return "UnknownVendorId", ""
        try:
            return handler(message_id, data)
        except Exception:
            log.exception("DataTransfer %s/%s failed", vendor_id, message_id)
            return "Rejected", "the handler failed"

    def trigger_boot(self) -> None:
        """A TriggerMessage BootNotification: a Pending or Rejected station retries at once."""
        self._boot_now.set()

    def enqueue(self, action: str, payload: dict[str, Any], *, tx_ref: str | None = None) -> None:
        """Queue a transaction message in the outbox (persistent, in order) and wake the sender."""
        try:
            self.outbox.put(action, payload, transactional=True, tx_ref=tx_ref)
        except Exception:
            # The journal is full or broken: the session goes on (billing data is in the journal's
            # session table), the CSMS will miss this message. Say so loudly.
            log.exception("cannot queue %s for the CSMS", action)
            return
        self.sender.wake()

    def view(self, n: int) -> ConnectorView:
        connector = self.connectors[n]
        st = self.state[n]
        if st.reservation_expires is not None and self.wall_clock() >= st.reservation_expires:
            st.reserved_for = st.reservation_id = st.reservation_expires = None
        if connector.debouncer.state is CpState.A:
            st.finishing = False
        current = max((abs(a) for a in connector.last_meter.current_a), default=0.0) if connector.last_meter else 0.0
        return ConnectorView(
            state=connector.machine.state,
            ev_connected=connector.debouncer.state is not CpState.A,
            faults=tuple(connector.supervisor.active),
            in_transaction=st.tx is not None,
            available=st.available,
            reserved=st.reserved_for is not None,
            authorized_waiting=st.authorized_waiting,
            finishing=st.finishing,
            current_a=current,
        )

    async def _status_loop(self) -> None:
        while True:
            await self._status_dirty.wait()
            self._status_dirty.clear()
            for n in self.connectors:
                status = connector_status(self.view(n))
                st = self.state[n]
                if status == st.last_status:
                    continue
                action, payload = self.adapter.status_payload(n, status, self.wall_clock())
                try:
                    await self.adapter.call(action, payload)
                    st.last_status = status
                except (OcppCallError, TimeoutError) as exc:
                    log.warning("StatusNotification for connector %d failed: %s", n, exc)

    def trigger_status(self, connector_id: int | None = None) -> None:
        for n in self.connectors if connector_id in (None, 0) else [connector_id]:
            if n in self.state:
                self.state[n].last_status = None
        self._status_dirty.set()

    # ================================================================== meter values
    async def _sampling_loop(self) -> None:
        """Transaction meter values every MeterValueSampleInterval (1.6) / TxUpdatedInterval (2.0.1)."""
        last = self.clock.monotonic()
        while True:
            interval = self.adapter.sample_interval_s()
            now = self.clock.monotonic()
            if interval <= 0:
                last = now
                await self.clock.sleep(PROFILE_RECHECK_MAX_S)  # sampling off: look at the setting again later
                continue
            remaining = last + interval - now
            if remaining > INTERVAL_RECHECK_S:
                await self.clock.sleep(INTERVAL_RECHECK_S)  # a shorter interval set meanwhile applies soon
                continue
            await self.clock.sleep(max(remaining, 0.0))
            last = self.clock.monotonic()
            self.send_meter_values("Sample.Periodic", transactions_only=True)

    async def _aligned_loop(self) -> None:
        """Clock-aligned meter values: at every multiple of ClockAlignedDataInterval after midnight UTC
        (1.6 §9.1.7: "aligned to the start of the day")."""
        while True:
            interval = self.adapter.aligned_interval_s()
            if interval <= 0:
                await self.clock.sleep(PROFILE_RECHECK_MAX_S)
                continue
            now = self.wall_clock()
            midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
            elapsed = (now - midnight).total_seconds()
            wait = interval - (elapsed % interval)
            if wait > INTERVAL_RECHECK_S:
                await self.clock.sleep(INTERVAL_RECHECK_S)  # a changed interval applies within this
                continue
            await self.clock.sleep(max(wait, 0.001))
            self.send_meter_values("Sample.Clock", transactions_only=False)

    def send_meter_values(self, context: str, *, transactions_only: bool, connector_id: int | None = None) -> None:
        now = self.wall_clock()
        for n, connector in self.connectors.items():
            if connector_id not in (None, 0) and n != connector_id:
                continue
            tx = self.state[n].tx
            if (transactions_only and tx is None) or connector.last_meter is None:
                continue
            message = self.adapter.meter_values(n, tx, connector.last_meter, context, now)
            if message is None:
                continue
            action, payload = message
            if tx is not None:
                self.enqueue(action, payload, tx_ref=tx.ref)
            elif self.online:
                self._spawn(self.call_quietly(action, payload))

    async def call_quietly(self, action: str, payload: dict[str, Any]) -> None:
        with contextlib.suppress(OcppCallError, TimeoutError, LinkClosed):
            await self.adapter.call(action, payload)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._session_tasks.append(task)
        task.add_done_callback(lambda t: self._session_tasks.remove(t) if t in self._session_tasks else None)

    async def _send_queued(self, message: QueuedMessage) -> dict[str, Any]:
        if not self.online:
            raise ConnectionError("not connected to the CSMS")
        try:
            return await self.adapter.call(message.action, message.payload)
        except LinkClosed as exc:
            raise ConnectionError(str(exc)) from exc
        except OcppCallError as exc:
            raise OutboxCallError(exc.code, exc.description) from exc

    # ================================================================== authorisation
    async def present_id(self, connector_id: int, id_tag: str) -> str:
        """An id presented at ``connector_id`` (an RFID reader, the control socket): decide per the
        local list, the cache, the CSMS and the offline policy; authorise the connector when accepted,
        stop its transaction when it is the same id (a second swipe ends the session). Returns the
        authorisation status."""
        st = self.state.get(connector_id)
        if st is None:
            return "Invalid"
        connector = self.connectors[connector_id]
        if st.tx is not None:
            if st.tx.id_tag == id_tag:
                st.next_stop_reason = "Local"
                connector.deauthorize("Local")
                return "Accepted"
            return "ConcurrentTx"
        if not st.available:
            return "Blocked"
        if st.reserved_for is not None and st.reserved_for != id_tag:
            return "Blocked"
        status = await self.authorize_id(id_tag)
        if status == "Accepted":
            st.authorized_waiting = True
            connector.authorize(id_tag)
            self._status_dirty.set()
        return status

    async def authorize_id(self, id_tag: str) -> str:
        decision = self.policy.decide(
            id_tag,
            online=self.online,
            now=self.wall_clock(),
            local_list=self.local_list,
            cache=self.cache,
            settings=self.adapter,  # type: ignore[arg-type]
        )
        if decision.action == "accept":
            return "Accepted"
        if decision.action == "reject":
            return decision.status
        try:
            result = await self.adapter.call("Authorize", self.adapter.authorize_payload(id_tag))
        except (OcppCallError, TimeoutError, LinkClosed) as exc:
            log.warning("Authorize failed (%s): offline policy", exc)
            decision = self.policy.decide(
                id_tag,
                online=False,
                now=self.wall_clock(),
                local_list=self.local_list,
                cache=self.cache,
                settings=self.adapter,  # type: ignore[arg-type]
            )
            return "Accepted" if decision.action == "accept" else decision.status
        status, info = self.adapter.authorize_status(result)
        self.cache.update(id_tag, info, now=self.wall_clock())
        return status

    def transaction_rejected(self, tx_ref: str, status: str) -> None:
        """The CSMS answered a transaction start with a non-Accepted id status: stop it
        (StopTransactionOnInvalidId, 1.6 §5.16 / 2.0.1 StopTxOnInvalidId)."""
        for n, st in self.state.items():
            if st.tx is not None and st.tx.ref == tx_ref:
                log.warning("connector %d: the CSMS says %s for the transaction's id; stopping it", n, status)
                st.next_stop_reason = "DeAuthorized"
                self.connectors[n].deauthorize("DeAuthorized")

    # ================================================================== remote commands
    def remote_start(self, connector_id: int | None, id_tag: str) -> bool:
        """Accept a remote start when a connector can take it; the authorisation (and, per
        AuthorizeRemoteTxRequests, an Authorize first) follows after the answer."""
        n = connector_id if connector_id is not None else self.free_connector()
        if n is None or n not in self.state:
            return False
        st = self.state[n]
        if st.tx is not None or not st.available or self.view(n).faults:
            return False
        if st.reserved_for is not None and st.reserved_for != id_tag:
            return False
        st.authorized_waiting = True
        self._status_dirty.set()
        return True

    async def complete_remote_start(self, connector_id: int | None, id_tag: str, authorize_first: bool) -> None:
        n = connector_id if connector_id is not None else self.free_connector()
        if n is None:
            return
        if authorize_first and await self.authorize_id(id_tag) != "Accepted":
            self.state[n].authorized_waiting = False
            self._status_dirty.set()
            return
        self.connectors[n].authorize(id_tag)

    def free_connector(self) -> int | None:
        for n, st in self.state.items():
            if st.tx is None and st.available:
                return n
        return None

    def remote_stop(self, transaction_id: int | str) -> bool:
        for n, st in self.state.items():
            if st.tx is not None and str(st.tx.transaction_id) == str(transaction_id):
                st.next_stop_reason = "Remote"
                self.connectors[n].deauthorize("Remote")
                return True
        return False

    def change_availability(self, connector_id: int, operative: bool) -> Literal["Accepted", "Rejected", "Scheduled"]:
        targets = list(self.connectors) if connector_id == 0 else [connector_id]
        if any(n not in self.state for n in targets):
            return "Rejected"
        scheduled = False
        for n in targets:
            st = self.state[n]
            if not operative and st.tx is not None:
                st.pending_unavailable = True  # 1.6 §5.2: applied when the transaction ends
                scheduled = True
                continue
            st.pending_unavailable = False
            self._apply_availability(n, operative)
        return "Scheduled" if scheduled else "Accepted"

    def _apply_availability(self, n: int, operative: bool) -> None:
        self.state[n].available = operative
        if operative:
            self.connectors[n].clear_limit(AVAILABILITY)
        else:
            self.connectors[n].set_limit(Limit(AVAILABILITY, 0.0, detail="made Inoperative by the CSMS"))
        self._status_dirty.set()

    async def unlock(self, connector_id: int) -> Literal["Unlocked", "UnlockFailed", "NotSupported"]:
        connector = self.connectors.get(connector_id)
        if connector is None:
            return "UnlockFailed"
        lock = connector.hal.lock
        if lock is None:
            return "NotSupported"
        st = self.state[connector_id]
        if st.tx is not None:
            st.next_stop_reason = "UnlockCommand"
            connector.deauthorize("UnlockCommand")
        deadline = self.clock.monotonic() + UNLOCK_CONFIRM_S
        while self.clock.monotonic() < deadline:
            if not connector.status().locked and not lock.commanded_locked:
                return "Unlocked"
            await self.clock.sleep(0.1)
        return "UnlockFailed"

    async def reset(self, kind: str) -> None:
        """After the Reset answer: stop every transaction with the reset reason, then call the board's
        reset hook (the app restarts; in a simulation the rig decides)."""
        reason = "HardReset" if kind == "Hard" else "SoftReset"
        for n, st in self.state.items():
            if st.tx is not None:
                st.next_stop_reason = reason
                self.connectors[n].deauthorize(reason)
        await self.clock.sleep(1.0)  # the StopTransaction messages are queued by then
        if self.reset_hook is not None:
            await self.reset_hook(kind)

    def reserve(self, connector_id: int, id_tag: str, reservation_id: int, expiry: datetime) -> str:
        targets = list(self.connectors) if connector_id == 0 else [connector_id]
        for n in targets:
            if n not in self.state:
                return "Rejected"
            st = self.state[n]
            view = self.view(n)
            if view.faults:
                return "Faulted"
            if not st.available:
                return "Unavailable"
            if st.reservation_id not in (None, reservation_id) or st.tx is not None or view.ev_connected:
                continue
            st.reserved_for, st.reservation_id, st.reservation_expires = id_tag, reservation_id, expiry
            self._status_dirty.set()
            return "Accepted"
        return "Occupied"

    def cancel_reservation(self, reservation_id: int) -> bool:
        for st in self.state.values():
            if st.reservation_id == reservation_id:
                st.reserved_for = st.reservation_id = st.reservation_expires = None
                self._status_dirty.set()
                return True
        return False

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run ``coro`` beside the station (a firmware download, a log upload); cancelled at stop."""
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    def transaction_of(self, connector_id: int) -> Transaction | None:
        st = self.state.get(connector_id)
        return st.tx if st else None

    # ================================================================== charging profiles
    def profiles_changed(self) -> None:
        self._save_profiles()
        self._profile_wake.set()

    async def _profile_loop(self) -> None:
        """Turn the composite schedule into each connector's OCPP limit, at every profile edge."""
        while True:
            self._profile_wake.clear()
            next_change: datetime | None = None
            now = self.wall_clock()
            for n, connector in self.connectors.items():
                tx = self.state[n].tx
                try:
                    result = limit_at(
                        self.profiles,
                        n,
                        now,
                        tx_start=tx.started_at if tx else None,
                        voltage_v=_voltage(connector),
                        phases=connector.phases_for_limits,
                        live_phases=True,
                    )
                except Exception:
                    log.exception("charging profiles: cannot compute the limit of connector %d", n)
                    continue
                current = connector.limits.get(sources.OCPP)
                if result.amps is None:
                    if current is not None:
                        connector.clear_limit(sources.OCPP)
                else:
                    ids = ",".join(str(i) for i in result.source_profile_ids)
                    if current is None or current.current_a != result.amps:
                        connector.set_limit(Limit(sources.OCPP, result.amps, detail=f"charging profile(s) {ids}"))
                if result.next_change is not None and (next_change is None or result.next_change < next_change):
                    next_change = result.next_change
            wait = PROFILE_RECHECK_MAX_S
            if next_change is not None:
                wait = min(wait, max(0.001, (next_change - now).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await self._wait_event(self._profile_wake, wait)

    def _load_profiles(self) -> None:
        if self._profiles_path is None or not self._profiles_path.exists():
            return
        try:
            self.profiles = ProfileStore.from_json(self._profiles_path.read_text(encoding="utf-8"))
        except Exception as exc:
            log.error("charging profiles in %s are unreadable (%s); starting without", self._profiles_path, exc)

    def _save_profiles(self) -> None:
        if self._profiles_path is None:
            return
        try:
            write_json_atomic(self._profiles_path, json.loads(self.profiles.to_json()))
        except OSError as exc:
            log.error("cannot save the charging profiles: %s", exc)

    # ================================================================== events
    def _event(self, dir: str, action: str, payload: dict[str, Any], kind: str = "link") -> None:
        if self.on_ocpp is not None:
            try:
                self.on_ocpp({"dir": dir, "action": action, "kind": kind, "payload": payload})
            except Exception:
                log.exception("OCPP event sink failed")

    def message_event(self, dir: str, kind: str, action: str | None, payload: dict[str, Any]) -> None:
        self._event(dir, action or "", payload, kind)


#: The limit source of ChangeAvailability Inoperative.
AVAILABILITY = "availability"


def _interval(value: object, default: float) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    if not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
        return default if seconds <= 0 else min(max(seconds, MIN_INTERVAL_S), MAX_INTERVAL_S)
    return seconds


#: Connector session stop reasons -> OCPP 1.6 §7.34 Reason.
_REASONS = {
    "EVDisconnected": "EVDisconnected",
    "DeAuthorized": "DeAuthorized",
    "Local": "Local",
    "Remote": "Remote",
    "SoftReset": "SoftReset",
    "HardReset": "HardReset",
    "UnlockCommand": "UnlockCommand",
    "PowerLoss": "PowerLoss",
    "Reboot": "Reboot",
    "EmergencyStop": "EmergencyStop",
}


def _stop_reason(reason: str) -> str:
    return _REASONS.get(reason, "Other")


def _voltage(connector: Connector) -> float:
    meter = connector.last_meter
    if meter is not None and meter.voltage_v and max(meter.voltage_v) > 100:
        return sum(meter.voltage_v) / len(meter.voltage_v)
    return float(connector.hal.config.ratings.nominal_voltage_v or 230.0)
