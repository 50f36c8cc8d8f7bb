"""The EVSE's IEEE 2030.5 server for one vehicle link, without the transport: requests in, replies out.

Our J3072 profile's resource tree (docs/j3072.md). One PEV at a time: the first client that registers
after a plug-in owns the link until :meth:`Sep2Resources.reset` (unplug, session end); another
certificate is refused (the link is point to point, seed 003).

    /dcap                          DeviceCapability
    /tm                            Time
    /edev                          EndDeviceList (the caller's own EndDevice only); POST registers
    /edev/1                        EndDevice
    /edev/1/rg                     Registration
    /edev/1/di                     DeviceInformation (PUT by the PEV: its ISM number in mfModel)
    /edev/1/der, /edev/1/der/1     DERList, DER
    /edev/1/der/1/{dercap,derg,ders,dera}   DERCapability, DERSettings, DERStatus, DERAvailability (PUT)
    /edev/1/fsa, /edev/1/fsa/1     FunctionSetAssignmentsList, FunctionSetAssignments
    /edev/1/derp, /edev/1/derp/1   DERProgramList, DERProgram (the J3072 site program)
    /edev/1/derp/1/dderc           DefaultDERControl: the site parameters
    /edev/1/derp/1/dc[/n]          DERCurveList, DERCurve
    /edev/1/derp/1/derc[/n]        DERControlList, DERControl: the setpoints
    /edev/1/derp/1/actderc         the active DERControl
    /rsps/1/rsp                    POST: Responses to DERControls

Every request is answered; a bad body is a 400 with the reason, never an exception to the caller. The
owner (:class:`firmware.j3072.session.J3072Session`) learns what the PEV sent through ``on_update``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from firmware.j3072 import sep_xml as sep
from firmware.j3072.site_parameters import DerCurve, PevSettings, SiteParameters, modes_bitmap

log = logging.getLogger(__name__)

__all__ = ["Control", "PevState", "Reply", "Sep2Resources"]

#: How often the PEV should poll the program's controls (pollRate, seconds): the frequency regulation
#: use case moves the setpoint every 2 s (seed 003 "AGC every few seconds"), so the PEV looks every 1 s.
CONTROL_POLL_S = 1
#: Resources that rarely change (DeviceCapability, Time, Registration) are polled less often.
SLOW_POLL_S = 300
#: How often the PEV should re-post its DERSettings/DERStatus (EndDevice.postRate, seconds).
POST_RATE_S = 10
#: DERControl EventStatus.currentStatus (sep.xsd): 1 active, 4 superseded.
ACTIVE, SUPERSEDED = 1, 4
#: Controls kept in the list: the active one and the one it superseded (the PEV sees the supersession).
KEEP_CONTROLS = 2
BASE = "/edev/1"
PROGRAM = f"{BASE}/derp/1"
RESPONSES = "/rsps/1/rsp"


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def content_type(self) -> str | None:
        return sep.CONTENT_TYPE if self.body else None


@dataclass(frozen=True)
class Control:
    """One DERControl: a target active power (2030.5 sign: + = the PEV injects) for a time."""

    index: int
    mrid: str
    target_w: float
    start: int
    duration_s: int
    created: int
    status: int = ACTIVE


@dataclass
class PevState:
    """What one PEV told us during this connection."""

    lfdi: str
    sfdi: int
    registered_at: int
    device_info: sep.PevDeviceInformation | None = None
    capability: sep.PevCapability | None = None
    settings: PevSettings | None = None
    settings_for_version: int | None = None  # the parameter version the PEV had fetched when it PUT them
    status: sep.PevStatus | None = None
    availability: sep.PevAvailability | None = None
    fetched_version: int | None = None  # the DefaultDERControl version it last read
    responses: dict[str, int | None] = field(default_factory=dict)  # control mRID -> status


def sfdi_of(lfdi_hex: str) -> int:
    """IEEE 2030.5 6.3.3: the SFDI is the first 36 bits of the certificate's hash as a decimal number,
    followed by a check digit that makes the digits sum to a multiple of 10."""
    head = int(lfdi_hex[:9], 16)
    digits = sum(int(c) for c in str(head))
    return head * 10 + (10 - digits % 10) % 10


def lfdi_of(cert_der: bytes) -> str:
    """IEEE 2030.5 6.3.4: the LFDI is the first 160 bits of the SHA-256 of the device certificate (DER)."""
    return hashlib.sha256(cert_der).hexdigest()[:40].upper()


def _mrid(*parts: object) -> str:
    """A 128-bit mRID (hex) derived from what identifies the resource, so it is stable across restarts of
    the same parameters and new for new ones. The last byte is not a PEN here: a private mRID."""
    return hashlib.sha256("/".join(str(p) for p in parts).encode()).hexdigest()[:32].upper()


class Sep2Resources:
    def __init__(
        self,
        *,
        wall_clock: Callable[[], float],
        on_update: Callable[[str], None] | None = None,
        evse_id: str = "EVSE",
    ) -> None:
        self._wall = wall_clock
        self._on_update = on_update or (lambda _what: None)
        self._evse_id = evse_id
        self.parameters: SiteParameters | None = None
        self.pev: PevState | None = None
        self.controls: list[Control] = []
        self._control_index = 0
        self._link_epoch = 0  # bumped at reset: mRIDs of a new connection never repeat an old one's
        #: The DefaultDERControl's content version: it changes with the site parameters and with the PEV's
        #: declared rating (opModMaxLimW is relative to it); a PEV's DERSettings answer the version it read.
        self.published_version = 0
        self._published_key: tuple[int, int] | None = None

    # ------------------------------------------------------------------ owner's side
    def set_parameters(self, parameters: SiteParameters | None) -> None:
        self.parameters = parameters
        self._refresh_version()
        self._on_update("parameters")

    def max_lim_w(self) -> int:
        """opModMaxLimW for the PEV on the link now (0 before it declared its rating)."""
        if self.parameters is None:
            return 0
        cap = self.pev.capability if self.pev is not None else None
        rating = None
        if cap is not None:
            rating = cap.max_discharge_w if cap.max_discharge_w is not None else cap.max_w
        return self.parameters.max_lim_w_pct(rating)

    def _refresh_version(self) -> None:
        key = (self.parameters.version if self.parameters else 0, self.max_lim_w())
        if key != self._published_key:
            self._published_key = key
            self.published_version += 1

    def reset(self) -> None:
        """Unplug or session end: forget the PEV and its controls (authorisation is per session, R110)."""
        self.pev = None
        self.controls.clear()
        self._link_epoch += 1
        self._refresh_version()

    def publish_target(self, target_w: float, duration_s: int) -> Control:
        """A new DERControl with opModTargetW = ``target_w`` (+ = discharge), superseding the last one."""
        now = self._now()
        self._control_index += 1
        control = Control(
            index=self._control_index,
            mrid=_mrid(self._evse_id, self._link_epoch, "control", self._control_index),
            target_w=target_w,
            start=now,
            duration_s=duration_s,
            created=now,
        )
        kept = [_superseded(c) for c in self.controls[-(KEEP_CONTROLS - 1) :]] if KEEP_CONTROLS > 1 else []
        self.controls = [*kept, control]
        return control

    def active_control(self) -> Control | None:
        now = self._now()
        for control in reversed(self.controls):
            if control.status == ACTIVE and control.start <= now < control.start + control.duration_s:
                return control
        return None

    # ------------------------------------------------------------------ requests
    def handle(self, method: str, path: str, body: bytes, lfdi: str) -> Reply:
        """One request from the client whose certificate has ``lfdi`` (40 hex digits)."""
        try:
            return self._route(method.upper(), path.split("?", 1)[0].rstrip("/") or "/", body, lfdi.upper())
        except sep.SepError as exc:
            log.warning("J3072: bad %s %s from %s: %s", method, path, lfdi[:8], exc)
            return Reply(400, headers=(("X-Reason", str(exc)[:200]),))

    def _route(self, method: str, path: str, body: bytes, lfdi: str) -> Reply:
        if path == "/dcap" and method == "GET":
            return self._xml(sep.device_capability("/dcap", edev="/edev", tm="/tm", mup=None, poll_rate=SLOW_POLL_S))
        if path == "/tm" and method == "GET":
            return self._xml(sep.time_resource("/tm", self._now(), SLOW_POLL_S))
        if path == "/edev":
            if method == "GET":
                own = [self._end_device()] if self.pev is not None and self.pev.lfdi == lfdi else []
                return self._xml(sep.list_of("EndDeviceList", "/edev", own, poll_rate=SLOW_POLL_S, subscribable=True))
            if method == "POST":
                return self._register(body, lfdi)
            return Reply(405)
        if path == RESPONSES and method == "POST":
            return self._response(body, lfdi)
        if not path.startswith(BASE) or self.pev is None:
            return Reply(404)
        if self.pev.lfdi != lfdi:
            # Another device's resources: 2030.5 answers as if they did not exist.
            return Reply(404)
        return self._device_route(method, path[len(BASE) :], body)

    def _device_route(self, method: str, sub: str, body: bytes) -> Reply:
        pev = self.pev
        assert pev is not None
        if method == "GET":
            return self._get(sub, pev)
        if method != "PUT":
            return Reply(405)
        now = self._now()
        if sub == "/di":
            info = sep.parse(body, "DeviceInformation")
            assert isinstance(info, sep.PevDeviceInformation)
            if info.lfdi != pev.lfdi:
                raise sep.SepError(f"DeviceInformation.lFDI {info.lfdi} is not the certificate's {pev.lfdi}")
            pev.device_info = info
            self._on_update("device_information")
        elif sub == "/der/1/dercap":
            cap = sep.parse(body, "DERCapability")
            assert isinstance(cap, sep.PevCapability)
            pev.capability = cap
            self._refresh_version()
            self._on_update("capability")
        elif sub == "/der/1/derg":
            settings = sep.parse(body, "DERSettings")
            assert isinstance(settings, PevSettings)
            pev.settings = settings
            pev.settings_for_version = pev.fetched_version
            self._on_update("settings")
        elif sub == "/der/1/ders":
            status = sep.parse(body, "DERStatus")
            assert isinstance(status, sep.PevStatus)
            pev.status = status
            self._on_update("status")
        elif sub == "/der/1/dera":
            availability = sep.parse(body, "DERAvailability")
            assert isinstance(availability, sep.PevAvailability)
            pev.availability = availability
            self._on_update("availability")
        else:
            return Reply(405 if self._get(sub, pev).status == 200 else 404)
        log.debug("J3072: PUT %s at %d", sub, now)
        return Reply(204)

    def _get(self, sub: str, pev: PevState) -> Reply:
        params = self.parameters
        version = self.published_version
        curves = params.curves() if params else ()
        match sub:
            case "":
                return self._xml(self._end_device())
            case "/rg":
                return self._xml(
                    sep.registration(
                        f"{BASE}/rg", registered_at=pev.registered_at, pin=_pin(pev.lfdi), poll_rate=SLOW_POLL_S
                    )
                )
            case "/der":
                node = sep.der(f"{BASE}/der/1", BASE, PROGRAM)
                return self._xml(sep.list_of("DERList", f"{BASE}/der", [node], subscribable=False))
            case "/der/1":
                return self._xml(sep.der(f"{BASE}/der/1", BASE, PROGRAM))
            case "/fsa" | "/fsa/1":
                fsa = sep.function_set_assignments(
                    f"{BASE}/fsa/1", mrid=_mrid(self._evse_id, "fsa"), derp=f"{BASE}/derp", tm="/tm"
                )
                if sub == "/fsa/1":
                    return self._xml(fsa)
                return self._xml(
                    sep.list_of(
                        "FunctionSetAssignmentsList", f"{BASE}/fsa", [fsa], poll_rate=SLOW_POLL_S, subscribable=True
                    )
                )
            case "/derp" | "/derp/1":
                program = sep.der_program(
                    PROGRAM,
                    mrid=_mrid(self._evse_id, "program"),
                    version=version,
                    controls=len(self.controls),
                    curves=len(curves),
                )
                if sub == "/derp/1":
                    return self._xml(program)
                return self._xml(
                    sep.list_of(
                        "DERProgramList", f"{BASE}/derp", [program], poll_rate=CONTROL_POLL_S, subscribable=True
                    )
                )
            case "/derp/1/dderc":
                if params is None:
                    return Reply(404)
                return self._parameters_read(pev, self._default_control(params))
            case "/der/1/derg":
                # GET: the settings the site requires (nominal voltage, maximum power and current are
                # absolute values only DERSettings can carry); PUT: what the PEV applied (the read-back).
                if params is None:
                    return Reply(404)
                return self._parameters_read(pev, self._required_settings(params))
            case "/derp/1/dc":
                nodes = [self._curve(i, c, params) for i, c in enumerate(curves, 1)] if params else []
                return self._xml(sep.list_of("DERCurveList", f"{PROGRAM}/dc", nodes, subscribable=False))
            case "/derp/1/derc":
                nodes = [self._control(c) for c in self.controls]
                return self._xml(sep.list_of("DERControlList", f"{PROGRAM}/derc", nodes, subscribable=True))
            case "/derp/1/actderc":
                active = self.active_control()
                nodes = [self._control(active)] if active is not None else []
                return self._xml(sep.list_of("DERControlList", f"{PROGRAM}/actderc", nodes, subscribable=True))
        if sub.startswith("/derp/1/dc/") and params is not None:
            index = _index(sub.rsplit("/", 1)[1])
            if index is not None and 1 <= index <= len(curves):
                return self._xml(self._curve(index, curves[index - 1], params))
        if sub.startswith("/derp/1/derc/"):
            index = _index(sub.rsplit("/", 1)[1])
            for control in self.controls:
                if control.index == index:
                    return self._xml(self._control(control))
        return Reply(404)

    def _parameters_read(self, pev: PevState, node: sep.Node) -> Reply:
        """The PEV reads the site parameters: its next DERSettings answer this version."""
        pev.fetched_version = self.published_version
        self._on_update("fetched_parameters")
        return self._xml(node)

    # ------------------------------------------------------------------ the PEV's POSTs
    def _register(self, body: bytes, lfdi: str) -> Reply:
        device = sep.parse(body, "EndDevice")
        assert isinstance(device, sep.PevEndDevice)
        if device.lfdi is not None and device.lfdi != lfdi:
            raise sep.SepError(f"EndDevice.lFDI {device.lfdi} is not the certificate's {lfdi}")
        if device.sfdi != sfdi_of(lfdi):
            raise sep.SepError(f"EndDevice.sFDI {device.sfdi} does not belong to the certificate ({sfdi_of(lfdi)})")
        if self.pev is not None and self.pev.lfdi != lfdi:
            # Point to point: the PEV that registered first after plug-in owns the link.
            return Reply(403, headers=(("X-Reason", "this vehicle link already serves another PEV"),))
        if self.pev is None:
            self.pev = PevState(lfdi=lfdi, sfdi=device.sfdi, registered_at=self._now())
            self._on_update("registered")
        return Reply(201, headers=(("Location", BASE),))

    def _response(self, body: bytes, lfdi: str) -> Reply:
        if self.pev is None or self.pev.lfdi != lfdi:
            return Reply(404)
        response = sep.parse(body, "Response")
        assert isinstance(response, sep.PevResponse)
        if response.lfdi != lfdi:
            raise sep.SepError(f"Response.endDeviceLFDI {response.lfdi} is not the certificate's {lfdi}")
        if not any(c.mrid == response.subject for c in self.controls):
            raise sep.SepError(f"Response.subject {response.subject} is not one of this link's controls")
        self.pev.responses[response.subject] = response.status
        self._on_update("response")
        return Reply(201, headers=(("Location", f"{RESPONSES}/{len(self.pev.responses)}"),))

    # ------------------------------------------------------------------ building
    def _now(self) -> int:
        return int(self._wall())

    def _xml(self, node: sep.Node) -> Reply:
        return Reply(200, sep.to_bytes(node))

    def _end_device(self) -> sep.Node:
        pev = self.pev
        assert pev is not None
        return sep.end_device(
            BASE, sfdi=pev.sfdi, lfdi=pev.lfdi, changed=pev.registered_at, base=BASE, post_rate=POST_RATE_S
        )

    def _default_control(self, params: SiteParameters) -> sep.Node:
        curves = params.curves()
        base: dict[str, object] = {
            "opModConnect": True,
            "opModEnergize": True,
            "opModMaxLimW": self.max_lim_w(),
        }
        if params.der.freq_watt_enabled:
            base["opModFreqDroop"] = sep.freq_droop(params.freq_droop())
        for i, curve in enumerate(curves, 1):
            base[curve.key] = sep.link(f"{PROGRAM}/dc/{i}")
        return sep.default_der_control(
            f"{PROGRAM}/dderc",
            mrid=_mrid(self._evse_id, self._link_epoch, "dderc", self.published_version),
            version=self.published_version % 65536,
            base=sep.control_base(base),
            enter_service=params.enter_service(),
            grad_w=params.grad_w(),
        )

    def _required_settings(self, params: SiteParameters) -> sep.Node:
        values: dict[str, object] = {
            "modesEnabled": f"{modes_bitmap(params.required_modes()):08X}",
            **params.enter_service(),
            "setGradW": params.grad_w(),
            "setMaxA": sep.unsigned_quantity(params.max_current_a),
            "setMaxChargeRateW": sep.active_power(params.max_charge_w),
            "setMaxDischargeRateW": sep.active_power(params.discharge_limit_w),
            "setMaxW": sep.active_power(params.discharge_limit_w),
            "setSoftGradW": params.grad_w(),
            "setVNom": sep.unsigned_quantity(params.der.v_nom_v),
            "setVRef": sep.unsigned_quantity(params.der.v_nom_v),
            "setVRefOfs": sep.unsigned_quantity(0.0),
        }
        updated = self.pev.registered_at if self.pev is not None else self._now()
        return sep.der_settings(f"{BASE}/der/1/derg", values, updated=updated)

    def _curve(self, index: int, curve: DerCurve, params: SiteParameters | None) -> sep.Node:
        assert params is not None
        return sep.der_curve(
            f"{PROGRAM}/dc/{index}",
            curve,
            mrid=_mrid(self._evse_id, "curve", params.version, index),
            version=params.version % 65536,
            created=self.pev.registered_at if self.pev else self._now(),
        )

    def _control(self, control: Control) -> sep.Node:
        return sep.der_control(
            f"{PROGRAM}/derc/{control.index}",
            mrid=control.mrid,
            version=0,
            created=control.created,
            status=control.status,
            status_time=control.created,
            start=control.start,
            duration_s=control.duration_s,
            base=sep.control_base({"opModTargetW": sep.active_power(control.target_w)}),
            reply_to=RESPONSES,
        )


def _superseded(control: Control) -> Control:
    return replace(control, status=SUPERSEDED)


def _index(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) < 9 else None


def _pin(lfdi: str) -> int:
    """Registration.pIN: 2030.5 uses it for out-of-band confirmation; the J3072 link is authenticated by
    the certificates, so the PIN is derived from the LFDI (6 digits with the SFDI check-digit rule)."""
    head = int(lfdi[:5], 16) % 100000
    digits = sum(int(c) for c in str(head))
    return head * 10 + (10 - digits % 10) % 10
