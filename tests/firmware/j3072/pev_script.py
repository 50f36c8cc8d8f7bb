"""A scripted PEV for the J3072 unit tests: the 2030.5 client side, in process, one call per step.

It sends real XML bodies to :class:`firmware.j3072.resources.Sep2Resources` (as the HTTP layer would)
so the server's reader and writer both run. The scenario-level PEV with an inverter model is in
hil/models/j3072_pev.py; this one is the smallest thing that lets a test drive each link of the chain.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

from firmware.j3072.resources import Reply, Sep2Resources, sfdi_of

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


class ScriptedPev:
    def __init__(
        self,
        server: Sep2Resources,
        *,
        lfdi: str = LFDI,
        ism: str = "ACME/OBI/7K6A/J3072_202406",
        rating_w: float = 7600,
    ) -> None:
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
        es = "".join(
            f"<{k}>{params[k]}</{k}>"
            for k in (
                "setESDelay",
                "setESHighFreq",
                "setESHighVolt",
                "setESLowFreq",
                "setESLowVolt",
                "setESRampTms",
                "setESRandomDelay",
            )
        )
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
