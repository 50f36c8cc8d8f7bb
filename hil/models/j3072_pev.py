"""A PEV with an onboard, grid-support inverter (SAE J3072) for the HIL rig and the tests.

:class:`Sep2PevClient` is the PEV's IEEE 2030.5 client in our J3072 profile (docs/j3072.md): it sends
real XML bodies to the EVSE's :class:`firmware.j3072.resources.Sep2Resources`, in process (as the HTTP
layer would hand them over) or through a function that sends them over the wire, so the server's
reader and writer both run. One call per step, so a test can drive each link of the chain.

:class:`J3072Pev` is the vehicle on a simulated plant: a PWM EV (:class:`hil.models.ev.AcEv`) whose
2030.5 client connects one second after plug-in (register, DeviceInformation with its ISM number,
DERCapability, the site parameters read and applied, DERSettings), then polls the active DERControl
every second and answers it. Its inverter follows the control's ``opModTargetW``: a positive target
(inject) is a discharge current, within its rating and above its reserve; a negative one a charge,
within the pilot's offer as any PWM EV's. Without a control it charges as a PWM EV. It never injects
unless a DERControl says so. ``misbehave``: ``wrong-readback`` reports a discharge maximum above the
site's, ``no-settings`` never reports its DERSettings, ``inject-anyway`` injects its rating whatever it
is told (the EVSE's own check must catch it).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any, Literal

from firmware.j3072.resources import Reply, Sep2Resources, sfdi_of
from hil.models.ev import AcEv

#: Sends one request (method, path, body) to the EVSE and returns its reply.
Send = Callable[[str, str, bytes], Reply]
NS = "urn:ieee:std:2030.5:ns"
Q = "{" + NS + "}"
ISM = "ACME/OBI/7K6A/J3072_202406"
LFDI = "3E4F45AB31EDFE5B67E343E5E4562E31984E23E5"
#: modesEnabled with every function a site can require (DERControlType bits 0-3, 7-26).
MODES = f"{(1 << 27) - 1:08X}"


def _quantity(name: str, value: float) -> str:
    """A value x 10^multiplier element; the smallest multiplier whose value fits the schema's Int16."""
    multiplier = 0
    while abs(round(value / 10**multiplier)) > 32767:
        multiplier += 1
    return f"<{name}><multiplier>{multiplier}</multiplier><value>{round(value / 10**multiplier)}</value></{name}>"


class Sep2PevClient:
    def __init__(
        self, server: Sep2Resources | Send, *, lfdi: str = LFDI, ism: str = ISM, rating_w: float = 7600
    ) -> None:
        """``server``: the EVSE's resources in process, or a function that sends a request over the wire."""
        self.server = server
        self.lfdi = lfdi
        self.ism = ism
        self.rating_w = rating_w

    def call(self, method: str, path: str, body: str = "") -> Reply:
        if isinstance(self.server, Sep2Resources):
            return self.server.handle(method, path, body.encode(), self.lfdi)
        return self.server(method, path, body.encode())

    def register(self) -> Reply:
        return self.call(
            "POST",
            "/edev",
            f'<EndDevice xmlns="{NS}"><lFDI>{self.lfdi}</lFDI><sFDI>{sfdi_of(self.lfdi)}</sFDI>'
            "<changedTime>0</changedTime></EndDevice>",
        )

    def send_device_information(self) -> Reply:
        return self.call(
            "PUT",
            "/edev/1/di",
            f'<DeviceInformation xmlns="{NS}"><lFDI>{self.lfdi}</lFDI><mfDate>0</mfDate><mfHwVer>1</mfHwVer>'
            f"<mfID>12345</mfID><mfModel>{self.ism}</mfModel><mfSerNum>SN1</mfSerNum>"
            "<primaryPower>0</primaryPower><secondaryPower>0</secondaryPower><swActTime>0</swActTime>"
            "<swVer>1.0</swVer></DeviceInformation>",
        )

    def send_capability(self) -> Reply:
        max_discharge_w = self.rating_w
        return self.call(
            "PUT",
            "/edev/1/der/1/dercap",
            f'<DERCapability xmlns="{NS}"><modesSupported>{MODES}</modesSupported>'
            f"{_quantity('rtgMaxChargeRateW', 11500)}{_quantity('rtgMaxDischargeRateW', max_discharge_w)}"
            f"{_quantity('rtgMaxW', max_discharge_w)}<type>81</type></DERCapability>",
        )

    def read_site_parameters(self) -> dict[str, int]:
        reply = self.call("GET", "/edev/1/derp/1/dderc")
        assert reply.status == 200, reply
        root = ET.fromstring(reply.body)
        params = {
            child.tag[len(Q) :]: int(child.text or 0)
            for child in root
            if child.tag[len(Q) :].startswith("setES") or child.tag[len(Q) :] in ("setGradW", "setSoftGradW")
        }
        params["opModMaxLimW"] = int(root.findtext(f"{Q}DERControlBase/{Q}opModMaxLimW") or 0)
        # The absolute values (nominal voltage, maximum discharge) come with the site's DERSettings.
        reply = self.call("GET", "/edev/1/der/1/derg")
        assert reply.status == 200, reply
        required = ET.fromstring(reply.body)
        for name in ("setVRef", "setMaxDischargeRateW"):
            element = required.find(f"{Q}{name}")
            assert element is not None, name
            multiplier = int(element.findtext(f"{Q}multiplier") or 0)
            params[name] = round(int(element.findtext(f"{Q}value") or 0) * 10.0**multiplier)
        return params

    def apply_and_report(
        self,
        params: dict[str, int],
        *,
        v_ref: float | None = None,
        max_discharge_w: float | None = None,
        modes: str = MODES,
    ) -> Reply:
        """PUT DERSettings that say the PEV applied ``params``: the site's nominal voltage, and the site's
        maximum within its own rating (opModMaxLimW of its rating)."""
        if v_ref is None:
            v_ref = params["setVRef"]
        if max_discharge_w is None:
            max_discharge_w = min(params["setMaxDischargeRateW"], self.rating_w * params["opModMaxLimW"] // 10000)
        # The setES* names sort in the schema's order (sep.xsd DERSettings).
        es = "".join(f"<{k}>{params[k]}</{k}>" for k in sorted(k for k in params if k.startswith("setES")))
        body = (
            f'<DERSettings xmlns="{NS}"><modesEnabled>{modes}</modesEnabled>{es}'
            f"<setGradW>{params['setGradW']}</setGradW>"
            f"{_quantity('setMaxDischargeRateW', max_discharge_w)}{_quantity('setMaxW', max_discharge_w)}"
            f"<setSoftGradW>{params['setSoftGradW']}</setSoftGradW>{_quantity('setVRef', v_ref)}"
            "<updatedTime>0</updatedTime></DERSettings>"
        )
        return self.call("PUT", "/edev/1/der/1/derg", body)

    def connect_fully(self) -> None:
        """Everything a good PEV does after plug-in."""
        assert self.register().status == 201
        assert self.send_device_information().status == 204
        assert self.send_capability().status == 204
        assert self.apply_and_report(self.read_site_parameters()).status == 204

    def active_target_w(self) -> float | None:
        """opModTargetW of the active control (+ = inject), None without one."""
        reply = self.call("GET", "/edev/1/derp/1/actderc")
        root = ET.fromstring(reply.body)
        target = root.find(f"{Q}DERControl/{Q}DERControlBase/{Q}opModTargetW")
        if target is None:
            return None
        multiplier = int(target.findtext(f"{Q}multiplier") or 0)
        return int(target.findtext(f"{Q}value") or 0) * 10.0**multiplier

    def active_control(self) -> tuple[str, float, str | None] | None:
        """(mRID, opModTargetW, replyTo) of the active control, None without one."""
        reply = self.call("GET", "/edev/1/derp/1/actderc")
        if reply.status != 200:
            return None
        control = ET.fromstring(reply.body).find(f"{Q}DERControl")
        if control is None:
            return None
        target = control.find(f"{Q}DERControlBase/{Q}opModTargetW")
        if target is None:
            return None
        multiplier = int(target.findtext(f"{Q}multiplier") or 0)
        watts = int(target.findtext(f"{Q}value") or 0) * 10.0**multiplier
        return control.findtext(f"{Q}mRID") or "", watts, control.get("replyTo")

    def program_version(self) -> int | None:
        """The J3072 DERProgram's version: it changes when the site parameters do."""
        reply = self.call("GET", "/edev/1/derp/1")
        if reply.status != 200:
            return None
        return int(ET.fromstring(reply.body).findtext(f"{Q}version") or 0)

    def respond(self, mrid: str, reply_to: str, status: int = 2) -> Reply:
        """A Response to a DERControl (status 2: event started)."""
        return self.call(
            "POST",
            reply_to,
            f'<Response xmlns="{NS}"><createdDateTime>0</createdDateTime><endDeviceLFDI>{self.lfdi}</endDeviceLFDI>'
            f"<status>{status}</status><subject>{mrid}</subject></Response>",
        )


Misbehaviour = Literal["none", "wrong-readback", "no-settings", "inject-anyway"]
#: The PEV's 2030.5 client starts this long after plug-in (its communication controller boots).
CONNECT_AFTER_S = 1.0
#: How often the PEV reads the active control (the EVSE asks for 1 s: DERProgramList pollRate).
POLL_S = 1.0


class J3072Pev(AcEv):
    """A PWM EV with a J3072 onboard inverter and a 2030.5 client (module docstring)."""

    def __init__(
        self,
        *,
        ism: str,
        inverter_w: float,
        reserve_soc: float = 0.2,
        misbehave: Misbehaviour = "none",
        lfdi: str = LFDI,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ism = ism
        self.inverter_w = inverter_w
        self.reserve_soc = reserve_soc
        self.misbehave: Misbehaviour = misbehave
        self.lfdi = lfdi
        self.link: Sep2Resources | Send | None = None  # the EVSE's 2030.5 server, set by the rig
        self.client: Sep2PevClient | None = None
        self.target_w: float | None = None  # 2030.5 sign: + = inject
        self.log: list[tuple[float, str, dict[str, Any]]] = []  # what the client did (the rig traces it)
        self._plugged_at: float | None = None
        self._next_poll: float | None = None
        self._answered: set[str] = set()
        self._version: int | None = None

    def plug_in(self, now: float) -> None:
        super().plug_in(now)
        self._plugged_at, self._next_poll, self.target_w, self.client = now, None, None, None
        self._answered.clear()
        self._version = None

    def unplug(self, now: float) -> None:
        super().unplug(now)
        self._plugged_at, self._next_poll, self.target_w, self.client = None, None, None, None

    def step(self, now: float) -> None:
        super().step(now)  # the PWM EV: its pilot state, and what it would draw from the offer
        if not self.plugged:
            return
        self._talk(now)
        amps = self._drawing_a
        plant = self.plant
        volts = sum(plant.grid_voltage_v[i] for i in range(self._active_phases())) or 1.0
        if self.misbehave == "inject-anyway" and plant.contacts_closed and self._soc > self.reserve_soc:
            amps = -self.inverter_w / volts
        elif self.target_w is not None and self._state == "C" and plant.contacts_closed:
            if self.target_w > 0:
                # Inject: within the inverter's rating, never below the reserve.
                amps = -min(self.target_w, self.inverter_w) / volts if self._soc > self.reserve_soc else 0.0
            else:
                amps = min(amps, -self.target_w / volts)  # charge: no more than the control and the offer
        self._set_current(amps)

    def next_due(self, now: float) -> float | None:
        due = super().next_due(now)
        if self._plugged_at is None:
            return due
        mine = self._next_poll if self._next_poll is not None else self._plugged_at + CONNECT_AFTER_S
        return mine if due is None else min(due, mine)

    def _talk(self, now: float) -> None:
        if self.link is None or self._plugged_at is None or now < self._plugged_at + CONNECT_AFTER_S - 1e-9:
            return
        if self.client is None:
            self.client = Sep2PevClient(self.link, lfdi=self.lfdi, ism=self.ism, rating_w=self.inverter_w)
            self._connect(now, self.client)
            self._next_poll = now
        if self._next_poll is None or now < self._next_poll - 1e-9:
            return
        self._next_poll = now + POLL_S
        version = self.client.program_version()
        if version != self._version:  # the site's parameters changed: read and apply them again
            self._version = version
            self._apply_parameters(now, self.client)
        control = self.client.active_control()
        self.target_w = control[1] if control is not None else None
        if control is not None and control[0] not in self._answered and control[2]:
            self._answered.add(control[0])
            self.client.respond(control[0], control[2])
            self.log.append((now, "control", {"mrid": control[0], "target_W": control[1]}))

    def _connect(self, now: float, client: Sep2PevClient) -> None:
        steps = [("registered", client.register), ("device_information", client.send_device_information)]
        steps.append(("capability", client.send_capability))
        for what, call in steps:
            reply = call()
            self.log.append((now, what, {"status": reply.status}))
        self._version = client.program_version()
        self._apply_parameters(now, client)

    def _apply_parameters(self, now: float, client: Sep2PevClient) -> None:
        if client.call("GET", "/edev/1/derp/1/dderc").status != 200:
            self.log.append((now, "no_site_parameters", {}))
            return
        params = client.read_site_parameters()
        if self.misbehave == "no-settings":
            return
        wrong = self.inverter_w if self.misbehave == "wrong-readback" else None
        reply = client.apply_and_report(params, max_discharge_w=wrong)
        self.log.append(
            (now, "settings", {"status": reply.status, "setMaxDischargeRateW": params["setMaxDischargeRateW"]})
        )
