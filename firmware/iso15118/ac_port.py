"""The AC session port over a running :class:`~firmware.connector.Connector`: what an ISO 15118-2 or -20
AC session asks of the charger, answered from the connector's own state.

* **Authorisation** is the connector's: ACCEPTED while it is authorised (RFID, OCPP, free charging),
  PENDING while it waits for one (EIM: the EV repeats its request while the answer is Ongoing), and
  REJECTED once the authorisation seen during this session was withdrawn (``Connector.deauthorize``: a
  second card swipe, a remote stop) or the backend refused the id (:meth:`ConnectorAcPort.reject`).
* **Limits** come from the board's ratings and the connector's effective limit chain (board, cable PP,
  thermal, site share, OCPP, EMS, user: ``Connector.limits``) on the phases that reach the socket now.
  Discharge (ISO 15118-20 AC_BPT) is 0 unless an energy-manager hook authorises some (default deny).
* **Schedules**: one offer over 24 h built from the same limit chain, stepping where a limit in it expires
  (it is then replaced by the connector's fallback current, so the offer is what is guaranteed), with the
  connector's tariff as its price when the settings have one. Limits that are renewed (the energy
  manager's site share lives 30 s and is sent again each cycle) make the offer the EV holds stale: once
  it differs from what the chain allows now by more than :data:`RENEGOTIATE_DELTA_W`, status asks the
  EV to renegotiate (-2 ReNegotiation, -20 ScheduleRenegotiation), at most every
  :data:`RENEGOTIATE_EVERY_S`. Without that an EV that keeps to its schedule drops to the fallback at
  the first expiry and stays there.
* **The EV's needs** (ISO-2 EAmount/DepartureTime, -20 energy requests and departure) are kept as a
  ``needs`` provider for the energy service: (energy still needed in Wh, departure as a monotonic
  deadline), see :func:`needs_provider`.
* **PowerDelivery** is ``Connector.hlc_power``: with HLC the contactor closes in C only after Start and
  opens after Stop; the session's end always switches it off.
* **Charge loop**: the measured power (``Connector.last_meter``) and the target from the limit chain.
  With a ``setpoint`` hook (the energy manager's signed share of this connector, see
  :func:`share_setpoint`) the target is that share: a negative one (discharge, ISO 15118-20 AC_BPT) only
  while the ``discharge_allowance`` hook grants discharge, and never beyond it; no hook, no grant, no
  fresh share: never a negative target (default deny). The session clamps it once more to the grant.
* **The EV's state of charge** (-20 DisplayParameters PresentSOC) is kept with the time it was said
  (:meth:`ConnectorAcPort.ev_soc`); :meth:`ConnectorAcPort.soc_pct` gives it to the energy manager only
  while it is fresher than :data:`SOC_STALE_S` (a floor with an unknown SoC: no discharge).
* **Meter**: the last reading with the meter's serial number as MeterID when its driver reads one.
* **Plug & Charge**: :class:`ConnectorPnc` authorises the connector with the eMAID of a contract the
  backend accepted.
* **Status**: StopCharging while a STOP or EMERGENCY fault is active, or once the authorisation is gone;
  RCD set while the RCD has tripped.

Every method returns at once (the sessions are pure and driven by the EV's requests).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from firmware.connector import Connector
from firmware.energy.manager import DISCHARGE, EnergyManager
from firmware.iec61851.pilot import MIN_OFFER_A, CpState
from firmware.iso15118.session.iso20 import Notice
from firmware.iso15118.session.pnc import Contract, ContractStatus, PncPort
from firmware.iso15118.session.port import Authorisation, Notification
from firmware.iso15118.session.port_ac import (
    AcLimits,
    AcSetpoint,
    AcStatus,
    EvAcParameters,
    MeterInfo,
    PowerEntry,
    PriceEntry,
    Schedule,
)
from firmware.safety.faults import FaultCode, Reaction, spec
from hal.clock import Clock

log = logging.getLogger(__name__)

#: DIN 70121 [V2G-DC-559] / ISO 15118-2: an SAScheduleTuple covers at least 24 h (the sessions' own
#: SCHEDULE_DURATION_S and -20's 86400 s scheduled power duration, standards-facts.md 2.6).
SCHEDULE_DURATION_S = 86_400
SCHEDULE_ID = 1  # the one offer (SAScheduleTupleID / ScheduleTupleID 1..255)
#: Faults that end charging (firmware.safety.faults): the EV is told to stop.
_STOPPING = (Reaction.STOP, Reaction.EMERGENCY)
#: A renegotiation at most this often (a design choice): between two, the EV is bound to the chain at every
#: loop anyway (-2 EVSEMaxCurrent, -20 the loop's target), so the schedule only has to catch up.
RENEGOTIATE_EVERY_S = 10.0
#: A difference between the EV's schedule and the chain now that is worth a renegotiation: 1 A at 230 V,
#: above the offers' rounding and the meter's accuracy (a design choice).
RENEGOTIATE_DELTA_W = 230.0
#: The EV's state of charge is used for this long after it said it (a design choice): the -20 charge loop
#: repeats it at every step (EVCC loops run every 0.25 to 1 s), so an older one means the loop stalled,
#: and the discharge floor must not be judged on it.
SOC_STALE_S = 5.0

NeedsFn = Callable[[int, float], tuple[float, float | None]]
SocFn = Callable[[int, float], float | None]


@dataclass(frozen=True)
class _Needs:
    """What the EV said it needs, and when and at which meter reading it said it."""

    params: EvAcParameters
    at: float  # connector clock
    import_wh: float  # the meter's import total then


class AcPortError(ValueError):
    """A value from the EV's session that the port cannot take (it names the connector and the value)."""


class ConnectorAcPort:
    """:class:`~firmware.iso15118.session.port_ac.AcEvsePort` and the ISO 15118-20
    :class:`~firmware.iso15118.session.iso20_ac.Iso20AcPort` over one connector."""

    def __init__(
        self,
        connector: Connector,
        *,
        evse_id: str,
        discharge_allowance: Callable[[], float] | None = None,
        setpoint: Callable[[], float | None] | None = None,
        meter_id: str | None = None,
    ) -> None:
        self.connector = connector
        self._evse_id = evse_id
        self._discharge = discharge_allowance
        self._setpoint = setpoint
        self._soc: tuple[float, float] | None = None  # (SoC %, connector clock when the EV said it)
        self._meter_id = meter_id
        self._seen_authorised = False  # the connector was authorised during this session
        self._rejected = False
        self._needs: _Needs | None = None
        self._pilot = connector.debouncer.state
        self._offer: tuple[float, Schedule] | None = None  # the schedule the EV holds, and when it got it
        self.stopped: list[str] = []  # why each session stopped (for logs and tests)
        connector.add_listener(self._on_connector_event)

    # ------------------------------------------------------------------ identity and authorisation
    @property
    def evse_id(self) -> str:
        return self._evse_id

    def authorisation(self) -> Authorisation:
        if self.connector.machine.inputs.authorized:
            self._seen_authorised, self._rejected = True, False
            return Authorisation.ACCEPTED
        if self._rejected or self._seen_authorised:
            return Authorisation.REJECTED
        return Authorisation.PENDING

    def reject(self, reason: str = "rejected") -> None:
        """The backend refused the EV's id (OCPP Authorize not Accepted): EIM ends with REJECTED."""
        log.info("connector %d: ISO 15118 authorisation rejected: %s", self._connector_id, reason)
        self._rejected = True

    # ------------------------------------------------------------------ status
    def status(self) -> AcStatus:
        active = self.connector.supervisor.active
        stopping = any(spec(code).reaction in _STOPPING for code in active)
        withdrawn = self.authorisation() is Authorisation.REJECTED
        if stopping or withdrawn:
            notification = Notification.STOP
        elif self._offer_stale(self._now()):
            notification = Notification.RENEGOTIATE
        else:
            notification = Notification.NONE
        return AcStatus(
            notification=notification,
            notification_max_delay_s=0,
            rcd_tripped=FaultCode.RCD_TRIPPED in active,
        )

    def notice(self) -> Notice | None:
        """Nothing beyond :meth:`status` (the -20 part maps StopCharging to Terminate)."""
        return None

    # ------------------------------------------------------------------ limits and offers
    def limits(self) -> AcLimits:
        ratings = self.connector.hal.config.ratings
        amps = self._allowed_a(self._now())
        return AcLimits(
            nominal_voltage_v=ratings.nominal_voltage_v,
            max_current_a=amps,
            min_current_a=MIN_OFFER_A,  # IEC 61851-1 Table A.8: 6 A is the least a charger offers
            phases=self.connector.phases_active,
            nominal_frequency_hz=float(ratings.grid_frequency_hz),
            max_power_w=ratings.max_power_w,
            max_discharge_power_w=self._discharge_w(),
            min_discharge_power_w=0.0,
        )

    def schedules(self) -> list[Schedule]:
        """One offer over 24 h: the power the limit chain allows, stepping where a limit expires.

        A step to less power starts at the whole second before the expiry, a step to more at the whole
        second after it, so the offer never exceeds what the chain allows at any instant."""
        now = self._now()
        expiries = sorted(
            {
                link.limit.expires_at - now
                for link in self.connector.limits.effective(now).chain
                if link.limit.expires_at is not None and 0 < link.limit.expires_at - now < SCHEDULE_DURATION_S
            }
        )
        starts: dict[int, float] = {0: self._power_at(now)}
        previous = starts[0]
        for offset in expiries:
            watts = self._power_at(now + offset + 1e-6)
            start = math.floor(offset) if watts < previous else math.ceil(offset)
            if start < SCHEDULE_DURATION_S:
                starts[start] = min(watts, starts.get(start, math.inf))
            previous = watts
        entries: list[PowerEntry] = []
        for start in sorted(starts):
            if not entries or entries[-1].max_power_w != starts[start]:
                entries.append(PowerEntry(start, starts[start]))
        offer = Schedule(SCHEDULE_ID, SCHEDULE_DURATION_S, tuple(entries), **self._tariff())
        self._offer = (now, offer)
        return [offer]

    def _offer_stale(self, now: float) -> bool:
        """Whether the schedule the EV holds is no longer what the chain allows now (see the docstring)."""
        if self._offer is None or not self.connector.machine.inputs.hlc_power:
            return False
        since, offer = self._offer
        if now - since < RENEGOTIATE_EVERY_S:
            return False
        offset = now - since
        held = next((e.max_power_w for e in reversed(offer.power) if e.start_s <= offset), 0.0)
        return abs(held - self._power_at(now)) > RENEGOTIATE_DELTA_W

    def _tariff(self) -> dict[str, Any]:
        tariff = self.connector.settings.tariff
        if tariff is None:
            return {}
        # A flat tariff (firmware.metering.billing.Tariff): one price, one level.
        price = PriceEntry(0, float(tariff.energy_per_kwh), level=1)
        return {"prices": (price,), "currency": tariff.currency, "price_levels": 1}

    # ------------------------------------------------------------------ the EV's needs
    def ev_parameters(self, params: EvAcParameters) -> None:
        self._needs = _Needs(params, self._now(), self._import_wh())
        log.info(
            "connector %d: EV needs %s Wh, departure in %s s, max %s A",
            self._connector_id,
            params.energy_request_wh,
            params.departure_in_s,
            params.max_current_a,
        )

    def set_setpoint(self, setpoint: Callable[[], float | None] | None) -> None:
        """Wire (or unwire, None) the energy manager's signed share after the port was built (the SECC
        builds the port before the site controller is known to it)."""
        self._setpoint = setpoint

    def ev_soc(self, soc_pct: float) -> None:
        """The EV's present state of charge (ISO 15118-20 DisplayParameters PresentSOC, 0..100 %).

        Raises :class:`AcPortError` for a value that is no percentage; the SoC kept before is dropped
        then, so that a bad report never leaves an old SoC in force."""
        try:
            value = float(soc_pct)
        except (TypeError, ValueError):
            value = math.nan
        if not (math.isfinite(value) and 0.0 <= value <= 100.0):
            self._soc = None
            raise AcPortError(f"connector {self._connector_id}: EV state of charge {soc_pct!r} is not 0..100 %")
        self._soc = (value, self._now())

    def soc_pct(self, now: float) -> float | None:
        """The EV's state of charge for the energy manager: None when it never said it, left, its session
        ended, or its last report is older than :data:`SOC_STALE_S` (stale data = unknown = no discharge)."""
        soc = self._soc
        if soc is None or not 0.0 <= now - soc[1] <= SOC_STALE_S:
            return None
        return soc[0]

    @property
    def bidirectional(self) -> bool:
        """Whether a signed setpoint reaches the EV now: its session is bidirectional (-20 BPT: it said its
        discharge limits), a setpoint hook is wired and discharge is granted. The site controller bounds
        the connector's current by the magnitude of a negative share only then."""
        ev = self._needs.params if self._needs is not None else None
        bpt = ev is not None and ev.max_discharge_power_w is not None
        return bpt and self._setpoint is not None and self._discharge_w() > 0

    @property
    def ev(self) -> EvAcParameters | None:
        """What the EV said last (limits and needs), None before it said anything."""
        return self._needs.params if self._needs is not None else None

    def needs(self, now: float) -> tuple[float, float | None]:
        """(energy still needed in Wh, departure as a time of the connector's clock) for the energy
        manager; (0, None) without a departure time (as firmware.energy.ems_bridge answers)."""
        needs = self._needs
        if needs is None or needs.params.departure_in_s is None:
            return 0.0, None
        wanted = needs.params.energy_request_wh
        if wanted is None:
            wanted = needs.params.min_energy_wh if needs.params.min_energy_wh is not None else 0.0
        delivered = max(0.0, self._import_wh() - needs.import_wh)
        return max(0.0, wanted - delivered), needs.at + needs.params.departure_in_s

    # ------------------------------------------------------------------ power
    def power_delivery(self, start: bool, schedule_id: int | None) -> bool:
        if not start:
            self.connector.hlc_power(False)
            return True
        if self.authorisation() is not Authorisation.ACCEPTED or self.status().notification is Notification.STOP:
            return False
        self.connector.hlc_power(True)
        return True

    def charge_loop(self, ev_present_power_w: float | None) -> AcSetpoint:
        reading = self.connector.last_meter
        present = reading.total_power_w if reading is not None else 0.0
        currents = tuple(reading.current_a) if reading is not None else ()
        target = 0.0 if self.status().notification is Notification.STOP else self._target_w(self._now())
        return AcSetpoint(target_power_w=target, present_power_w=present, present_current_a=currents)

    def meter(self) -> MeterInfo | None:
        reading = self.connector.last_meter
        if reading is None:
            return None
        return MeterInfo(meter_id=self._meter_identity(), import_wh=reading.import_wh, export_wh=reading.export_wh)

    def session_stopped(self, reason: str) -> None:
        self.stopped.append(reason)
        self.connector.hlc_power(False)
        self._seen_authorised = False
        self._offer = None
        self._soc = None

    # ------------------------------------------------------------------ helpers
    @property
    def _connector_id(self) -> int:
        return self.connector.settings.connector_id

    def _now(self) -> float:
        return self.connector.clock.monotonic()

    def _allowed_a(self, at: float) -> float:
        rating = self.connector.hal.config.ratings.max_current_a
        return max(0.0, min(rating, self.connector.limits.effective(at).current_a))

    def _power_at(self, at: float) -> float:
        """The power the chain allows at ``at`` on the live phases, within the board's power rating."""
        ratings = self.connector.hal.config.ratings
        watts = self._allowed_a(at) * ratings.nominal_voltage_v * self.connector.phases_active
        return watts if ratings.max_power_w is None else min(watts, ratings.max_power_w)

    def _target_w(self, now: float) -> float:
        """The charge loop's target: the limit chain's power, or the energy manager's signed share when a
        setpoint hook gives a fresh one; a negative share only within the discharge grant (default deny)."""
        charge = self._power_at(now)
        share = self._setpoint_w()
        if share is None:
            return charge
        if share >= 0:
            return min(share, charge)
        granted = self._discharge_w()
        return max(share, -granted) if granted > 0 else 0.0

    def _setpoint_w(self) -> float | None:
        if self._setpoint is None:
            return None
        try:
            value = self._setpoint()
        except Exception:  # a failing hook gives no setpoint: the chain's charge-only target
            log.exception("connector %d: the setpoint hook failed", self._connector_id)
            return None
        if value is None:
            return None
        try:
            watts = float(value)
        except (TypeError, ValueError):
            return None
        return watts if math.isfinite(watts) else None

    def _discharge_w(self) -> float:
        if self._discharge is None:
            return 0.0
        try:
            value = float(self._discharge())
        except Exception:  # a failing hook grants nothing
            log.exception("connector %d: the discharge allowance hook failed", self._connector_id)
            return 0.0
        return value if math.isfinite(value) and value > 0 else 0.0

    def _import_wh(self) -> float:
        reading = self.connector.last_meter
        return reading.import_wh if reading is not None else 0.0

    def _meter_identity(self) -> str:
        if self._meter_id:
            return self._meter_id
        guard = self.connector.meter
        serial = getattr(guard.inner, "serial_number", None) if guard is not None else None
        return str(serial) if serial else f"{self._evse_id}-M{self._connector_id}"

    def _on_connector_event(self, kind: str, data: dict[str, Any]) -> None:
        state = self.connector.debouncer.state
        left = state is CpState.A and self._pilot is not CpState.A
        self._pilot = state
        if left:  # the EV left: what it said and what the backend said about it go with it
            self._needs, self._rejected, self._seen_authorised = None, False, False
            self._offer, self._soc = None, None


class ConnectorPnc:
    """The backend's Plug & Charge decisions (:class:`~firmware.iso15118.session.pnc.PncPort`) over one
    connector: a contract the backend accepts authorises the connector with its eMAID as the id tag, as a
    card would (OCPP 2.0.1 Authorize with an idToken of type eMAID), so PowerDelivery(Start) finds the
    connector authorised; without that a PnC EV at a non-free charger could never get power."""

    def __init__(self, backend: PncPort, connector: Connector) -> None:
        self._backend = backend
        self.connector = connector

    def contract_status(self, contract: Contract) -> ContractStatus:
        status = self._backend.contract_status(contract)
        if status is ContractStatus.ACCEPTED and self.connector.id_tag != contract.emaid:
            log.info(
                "connector %d: contract %s accepted: authorised", self.connector.settings.connector_id, contract.emaid
            )
            self.connector.authorize(contract.emaid)
        return status

    def certificate_installation(self, request: Mapping[str, Any]) -> Mapping[str, Any] | None:
        return self._backend.certificate_installation(request)

    def certificate_update(self, request: Mapping[str, Any], contract: Contract) -> Mapping[str, Any] | None:
        return self._backend.certificate_update(request, contract)


def needs_provider(ports: Mapping[int, ConnectorAcPort], user: NeedsFn | None = None) -> NeedsFn:
    """The ``needs`` callable of the site controller (firmware.energy.site_controller): the user's own
    preferences (the EMS bridge's) when they give a departure, else what the EV said over ISO 15118."""

    def needs(connector: int, now: float) -> tuple[float, float | None]:
        if user is not None:
            # Always asked: the bridge applies the user's energy cap as a side effect.
            theirs = user(connector, now)
            if theirs[1] is not None:
                return theirs
        port = ports.get(connector)
        return port.needs(now) if port is not None else (0.0, None)

    return needs


def soc_provider(ports: Mapping[int, ConnectorAcPort]) -> SocFn:
    """The ``soc`` callable of the site controller: each connector's EV state of charge from its ISO 15118
    session (None without a port, or when the port has no fresh one)."""

    def soc(connector: int, now: float) -> float | None:
        port = ports.get(connector)
        return port.soc_pct(now) if port is not None else None

    return soc


def share_setpoint(shares: Callable[[int], float | None], connector: int) -> Callable[[], float | None]:
    """A setpoint hook for :class:`ConnectorAcPort`: ``shares`` is the site controller's
    ``SiteController.setpoint`` (the signed share of a connector while it is in force, else None)."""

    def setpoint() -> float | None:
        return shares(connector)

    return setpoint


def manager_discharge(manager: EnergyManager, connector: int, clock: Clock) -> Callable[[], float]:
    """A discharge-allowance hook reading the energy manager's DISCHARGE input of ``connector``
    (``EnergyManager.authorise_discharge``): the authorised discharge power in W, 0 when none or expired."""

    def allowance() -> float:
        inputs = manager.connector_inputs.get(connector)
        bound = inputs.get(DISCHARGE) if inputs is not None else None
        if bound is None or bound.min_w >= 0:
            return 0.0
        if bound.expires_at is not None and clock.monotonic() >= bound.expires_at:
            return 0.0
        return -bound.min_w

    return allowance
