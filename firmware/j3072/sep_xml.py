"""IEEE 2030.5 XML for the J3072 resources: what the EVSE serves, and a strict reader for what the PEV sends.

The writer builds each resource in the element order of the 2030.5 schema (sep.xsd, 2018 namespace
``urn:ieee:std:2030.5:ns``); the tests validate every resource it writes against that XSD. The board
does not need the XSD (its IEEE licence forbids redistributing it): the order is in the code here.

The reader takes only the resources a PEV may send us (EndDevice, DeviceInformation, DERCapability,
DERSettings, DERStatus, DERAvailability, Response). It refuses a document type declaration (no entity
expansion from a peer), bodies over :data:`MAX_BODY`, an unexpected root element, a missing mandatory
element and a value outside its schema type, each with a :class:`SepError` that names the element.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from firmware.j3072.site_parameters import DerCurve, PevSettings

__all__ = [
    "CONTENT_TYPE",
    "MAX_BODY",
    "NS",
    "PevCapability",
    "PevDeviceInformation",
    "PevEndDevice",
    "PevResponse",
    "SepError",
    "parse",
    "to_bytes",
]

NS = "urn:ieee:std:2030.5:ns"
#: IEEE 2030.5-2018 8.3: the media type of the XML representation.
CONTENT_TYPE = "application/sep+xml"
#: The largest body we read: the biggest resource a PEV sends (DERCapability) is under 2 KiB.
MAX_BODY = 16 * 1024
_Q = "{" + NS + "}"
# Written as the default namespace (no prefix), as 2030.5 examples and py20305 write it; once, at import.
ET.register_namespace("", NS)


class SepError(ValueError):
    """A 2030.5 body we cannot use; the message names the element or the rule it breaks."""


# ====================================================================== writing
Child = tuple[str, Any]  # (element name, text value | list of children | Node)


@dataclass(frozen=True)
class Node:
    """An element with attributes and children (children in schema order)."""

    name: str
    attrs: dict[str, str]
    children: tuple[Child, ...] = ()


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _build(parent: ET.Element | None, name: str, value: Any) -> ET.Element:
    attrs: dict[str, str] = {}
    children: Iterable[Child] = ()
    text: str | None = None
    if isinstance(value, Node):
        attrs, children = value.attrs, value.children
    elif isinstance(value, list | tuple):
        children = value
    elif value is not None:
        text = _text(value)
    el = ET.Element(_Q + name, attrs) if parent is None else ET.SubElement(parent, _Q + name, attrs)
    if text is not None:
        el.text = text
    for child_name, child_value in children:
        if child_value is None:
            continue
        _build(el, child_name, child_value)
    return el


def to_bytes(root: Node) -> bytes:
    element = _build(None, root.name, root)
    return ET.tostring(element, encoding="utf-8", xml_declaration=False)


def link(href: str) -> Node:
    return Node("", {"href": href})


def list_link(href: str, count: int) -> Node:
    return Node("", {"href": href, "all": str(count)})


def _named(node: Node, name: str) -> Node:
    return Node(name, node.attrs, node.children)


def device_capability(href: str, *, edev: str, tm: str, mup: str | None, poll_rate: int) -> Node:
    return Node(
        "DeviceCapability",
        {"href": href, "pollRate": str(poll_rate)},
        (
            ("TimeLink", link(tm)),
            ("EndDeviceListLink", list_link(edev, 1)),
            ("MirrorUsagePointListLink", list_link(mup, 0) if mup else None),
        ),
    )


def time_resource(href: str, now_unix: int, poll_rate: int) -> Node:
    # The EVSE keeps UTC, no daylight saving. quality 3: "time obtained from external authoritative
    # source such as NTP" (sep.xsd Time.quality): a networked board's clock is NTP-disciplined.
    return Node(
        "Time",
        {"href": href, "pollRate": str(poll_rate)},
        (
            ("currentTime", now_unix),
            ("dstEndTime", 0),
            ("dstOffset", 0),
            ("dstStartTime", 0),
            ("localTime", now_unix),
            ("quality", 3),
            ("tzOffset", 0),
        ),
    )


def end_device(
    href: str, *, sfdi: int, lfdi: str, changed: int, base: str, registered: bool = True, post_rate: int | None = None
) -> Node:
    return Node(
        "EndDevice",
        {"href": href, "subscribable": "0"},
        (
            ("DERListLink", list_link(f"{base}/der", 1)),
            ("DeviceInformationLink", link(f"{base}/di")),
            ("lFDI", lfdi.upper()),
            ("sFDI", sfdi),
            ("changedTime", changed),
            ("enabled", True),
            ("FunctionSetAssignmentsListLink", list_link(f"{base}/fsa", 1)),
            ("postRate", post_rate),
            ("RegistrationLink", link(f"{base}/rg") if registered else None),
        ),
    )


def list_of(name: str, href: str, items: list[Node], *, poll_rate: int | None = None, subscribable: bool) -> Node:
    attrs = {"href": href, "all": str(len(items)), "results": str(len(items))}
    if subscribable:
        attrs["subscribable"] = "0"
    if poll_rate is not None:
        attrs["pollRate"] = str(poll_rate)
    return Node(name, attrs, tuple((item.name, item) for item in items))


def registration(href: str, *, registered_at: int, pin: int, poll_rate: int) -> Node:
    return Node(
        "Registration",
        {"href": href, "pollRate": str(poll_rate)},
        (("dateTimeRegistered", registered_at), ("pIN", pin)),
    )


def der(href: str, base: str, program: str) -> Node:
    return Node(
        "DER",
        {"href": href, "subscribable": "0"},
        (
            ("CurrentDERProgramLink", link(program)),
            ("DERAvailabilityLink", link(f"{href}/dera")),
            ("DERCapabilityLink", link(f"{href}/dercap")),
            ("DERSettingsLink", link(f"{href}/derg")),
            ("DERStatusLink", link(f"{href}/ders")),
        ),
    )


def function_set_assignments(href: str, *, mrid: str, derp: str, tm: str) -> Node:
    return Node(
        "FunctionSetAssignments",
        {"href": href, "subscribable": "0"},
        (
            ("DERProgramListLink", list_link(derp, 1)),
            ("TimeLink", link(tm)),
            ("mRID", mrid),
            ("description", "J3072 site"),
            ("version", 0),
        ),
    )


def der_program(href: str, *, mrid: str, version: int, controls: int, curves: int) -> Node:
    return Node(
        "DERProgram",
        {"href": href, "subscribable": "0"},
        (
            ("mRID", mrid),
            ("description", "J3072 site parameters"),
            ("version", version),
            ("ActiveDERControlListLink", list_link(f"{href}/actderc", min(controls, 1))),
            ("DefaultDERControlLink", link(f"{href}/dderc")),
            ("DERControlListLink", list_link(f"{href}/derc", controls)),
            ("DERCurveListLink", list_link(f"{href}/dc", curves)),
            # Primacy 0 is the highest: the site's own program outranks anything a PEV may hold elsewhere.
            ("primacy", 0),
        ),
    )


def default_der_control(
    href: str,
    *,
    mrid: str,
    version: int,
    base: list[Child],
    enter_service: dict[str, int],
    grad_w: int,
) -> Node:
    return Node(
        "DefaultDERControl",
        {"href": href, "subscribable": "0"},
        (
            ("mRID", mrid),
            ("description", "J3072 site parameters"),
            ("version", version),
            ("DERControlBase", base),
            ("setESDelay", enter_service["setESDelay"]),
            ("setESHighFreq", enter_service["setESHighFreq"]),
            ("setESHighVolt", enter_service["setESHighVolt"]),
            ("setESLowFreq", enter_service["setESLowFreq"]),
            ("setESLowVolt", enter_service["setESLowVolt"]),
            ("setESRampTms", enter_service["setESRampTms"]),
            ("setESRandomDelay", enter_service["setESRandomDelay"]),
            ("setGradW", grad_w),
            ("setSoftGradW", grad_w),
        ),
    )


#: DERControlBase element order (sep.xsd); a control base is written in this order whatever the caller gives.
_BASE_ORDER = (
    "opModConnect",
    "opModEnergize",
    "opModFixedPFAbsorbW",
    "opModFixedPFInjectW",
    "opModFixedVar",
    "opModFixedW",
    "opModFreqDroop",
    "opModFreqWatt",
    "opModHFRTMayTrip",
    "opModHFRTMustTrip",
    "opModHVRTMayTrip",
    "opModHVRTMomentaryCessation",
    "opModHVRTMustTrip",
    "opModLFRTMayTrip",
    "opModLFRTMustTrip",
    "opModLVRTMayTrip",
    "opModLVRTMomentaryCessation",
    "opModLVRTMustTrip",
    "opModMaxLimW",
    "opModTargetVar",
    "opModTargetW",
    "opModVoltVar",
    "opModVoltWatt",
    "opModWattPF",
    "opModWattVar",
    "rampTms",
)


def control_base(values: dict[str, Any]) -> list[Child]:
    unknown = set(values) - set(_BASE_ORDER)
    if unknown:
        raise ValueError(f"not DERControlBase elements: {sorted(unknown)}")
    return [(name, values[name]) for name in _BASE_ORDER if name in values]


def freq_droop(values: dict[str, int]) -> list[Child]:
    return [(k, values[k]) for k in ("dBOF", "dBUF", "kOF", "kUF", "openLoopTms")]


def active_power(watts: float) -> list[Child]:
    """ActivePower: value (Int16) x 10^multiplier W. The smallest multiplier that fits keeps 1 W
    resolution below 32.767 kW, 10 W up to 327 kW."""
    multiplier = 0
    value = round(watts)
    while abs(value) > 32767:
        multiplier += 1
        value = round(watts / 10**multiplier)
    return [("multiplier", multiplier), ("value", value)]


def unsigned_quantity(value: float) -> list[Child]:
    """VoltageRMS / CurrentRMS: value (UInt16) x 10^multiplier; 0.1 resolution where it fits."""
    multiplier = -1
    while round(value / 10**multiplier) > 65535:
        multiplier += 1
    return [("multiplier", multiplier), ("value", round(value / 10**multiplier))]


def der_settings(href: str, values: dict[str, Any], *, updated: int) -> Node:
    """DERSettings in schema order; ``values`` holds integers, or Child lists for the quantities."""
    order = (
        "modesEnabled",
        "setESDelay",
        "setESHighFreq",
        "setESHighVolt",
        "setESLowFreq",
        "setESLowVolt",
        "setESRampTms",
        "setESRandomDelay",
        "setGradW",
        "setMaxA",
        "setMaxChargeRateW",
        "setMaxDischargeRateW",
        "setMaxW",
        "setSoftGradW",
        "setVNom",
        "setVRef",
        "setVRefOfs",
    )
    unknown = set(values) - set(order)
    if unknown:
        raise ValueError(f"not DERSettings elements this profile writes: {sorted(unknown)}")
    children: list[Child] = [(name, values[name]) for name in order if name in values]
    children.append(("updatedTime", updated))
    return Node("DERSettings", {"href": href, "subscribable": "0"}, tuple(children))


def der_control(
    href: str,
    *,
    mrid: str,
    version: int,
    created: int,
    status: int,
    status_time: int,
    start: int,
    duration_s: int,
    base: list[Child],
    reply_to: str | None,
) -> Node:
    attrs = {"href": href, "subscribable": "0"}
    if reply_to is not None:
        attrs["replyTo"] = reply_to
        # responseRequired bit 0: "event received" and bit 1: "specific response" (2030.5 Table 27 -
        # the PEV confirms it started, so the audit can show the setpoint reached it).
        attrs["responseRequired"] = "03"
    return Node(
        "DERControl",
        attrs,
        (
            ("mRID", mrid),
            ("description", "J3072 setpoint"),
            ("version", version),
            ("creationTime", created),
            ("EventStatus", [("currentStatus", status), ("dateTime", status_time), ("potentiallySuperseded", False)]),
            ("interval", [("duration", duration_s), ("start", start)]),
            ("DERControlBase", base),
        ),
    )


def der_curve(href: str, curve: DerCurve, *, mrid: str, version: int, created: int) -> Node:
    return Node(
        "DERCurve",
        {"href": href},
        (
            ("mRID", mrid),
            ("description", curve.key),
            ("version", version),
            ("creationTime", created),
            *(("CurveData", [("xvalue", p.x), ("yvalue", p.y)]) for p in curve.points),
            ("curveType", curve.curve_type),
            ("openLoopTms", curve.open_loop_tms),
            ("xMultiplier", curve.x_multiplier),
            ("yMultiplier", curve.y_multiplier),
            ("yRefType", curve.y_ref_type),
        ),
    )


# ====================================================================== reading
@dataclass(frozen=True)
class PevEndDevice:
    sfdi: int
    lfdi: str | None
    changed_time: int


@dataclass(frozen=True)
class PevDeviceInformation:
    lfdi: str
    model: str  # mfModel: the ISM number in our J3072 profile
    serial: str
    sw_version: str
    mf_info: str | None


@dataclass(frozen=True)
class PevCapability:
    der_type: int
    modes_supported: int
    max_w: float
    max_charge_w: float | None
    max_discharge_w: float | None
    abnormal_category: int | None
    normal_category: int | None


@dataclass(frozen=True)
class PevStatus:
    reading_time: int
    soc_percent: float | None  # stateOfChargeStatus, PerCent in hundredths -> percent


@dataclass(frozen=True)
class PevAvailability:
    reading_time: int
    stat_w_avail: float | None


@dataclass(frozen=True)
class PevResponse:
    lfdi: str
    subject: str
    status: int | None
    created: int | None


Parsed = PevEndDevice | PevDeviceInformation | PevCapability | PevSettings | PevStatus | PevAvailability | PevResponse


class _Reader:
    def __init__(self, element: ET.Element, path: str) -> None:
        self.el = element
        self.path = path

    def _find(self, name: str) -> ET.Element | None:
        return self.el.find(_Q + name)

    def text(self, name: str, *, required: bool, max_len: int = 32) -> str | None:
        child = self._find(name)
        if child is None:
            if required:
                raise SepError(f"{self.path}: {name} is required")
            return None
        value = (child.text or "").strip()
        if len(value) > max_len:
            raise SepError(f"{self.path}.{name}: longer than {max_len} characters")
        return value

    def integer(self, name: str, lo: int, hi: int, *, required: bool) -> int | None:
        raw = self.text(name, required=required, max_len=24)
        if raw is None:
            return None
        try:
            value = int(raw)
        except ValueError:
            raise SepError(f"{self.path}.{name}: {raw!r} is not an integer") from None
        if not lo <= value <= hi:
            raise SepError(f"{self.path}.{name}: {value} is outside {lo}..{hi}")
        return value

    def req_int(self, name: str, lo: int, hi: int) -> int:
        value = self.integer(name, lo, hi, required=True)
        assert value is not None
        return value

    def hex_int(self, name: str, digits: int, *, required: bool) -> int | None:
        raw = self.text(name, required=required, max_len=digits)
        if raw is None:
            return None
        try:
            return int(raw, 16)
        except ValueError:
            raise SepError(f"{self.path}.{name}: {raw!r} is not hexadecimal") from None

    def hex_text(self, name: str, digits: int, *, required: bool) -> str | None:
        raw = self.text(name, required=required, max_len=digits)
        if raw is None:
            return None
        if len(raw) != digits or any(c not in "0123456789abcdefABCDEF" for c in raw):
            raise SepError(f"{self.path}.{name}: {raw!r} is not {digits} hex digits")
        return raw.upper()

    def quantity(self, name: str, *, signed: bool, required: bool) -> float | None:
        """A value x 10^multiplier element (ActivePower, VoltageRMS, CurrentRMS, ...)."""
        child = self._find(name)
        if child is None:
            if required:
                raise SepError(f"{self.path}: {name} is required")
            return None
        inner = _Reader(child, f"{self.path}.{name}")
        multiplier = inner.req_int("multiplier", -9, 9)
        value = inner.req_int("value", -32768 if signed else 0, 32767 if signed else 65535)
        return value * 10.0**multiplier

    def status_value(self, name: str, lo: int, hi: int) -> int | None:
        child = self._find(name)
        if child is None:
            return None
        return _Reader(child, f"{self.path}.{name}").req_int("value", lo, hi)


_UINT32 = 2**32 - 1
_INT64 = 2**63 - 1


def _end_device(r: _Reader) -> PevEndDevice:
    return PevEndDevice(
        sfdi=r.req_int("sFDI", 0, 999_999_999_999),
        lfdi=r.hex_text("lFDI", 40, required=False),
        changed_time=r.req_int("changedTime", -_INT64, _INT64),
    )


def _device_information(r: _Reader) -> PevDeviceInformation:
    lfdi = r.hex_text("lFDI", 40, required=True)
    model = r.text("mfModel", required=True)
    serial = r.text("mfSerNum", required=True)
    sw = r.text("swVer", required=True)
    assert lfdi is not None and model is not None and serial is not None and sw is not None
    for name in ("mfDate", "swActTime"):
        r.req_int(name, -_INT64, _INT64)
    r.text("mfHwVer", required=True)
    r.req_int("mfID", 0, _UINT32)
    return PevDeviceInformation(lfdi, model, serial, sw, r.text("mfInfo", required=False))


def _capability(r: _Reader) -> PevCapability:
    modes = r.hex_int("modesSupported", 8, required=True)
    max_w = r.quantity("rtgMaxW", signed=True, required=True)
    der_type = r.req_int("type", 0, 255)
    assert modes is not None and max_w is not None
    return PevCapability(
        der_type=der_type,
        modes_supported=modes,
        max_w=max_w,
        max_charge_w=r.quantity("rtgMaxChargeRateW", signed=True, required=False),
        max_discharge_w=r.quantity("rtgMaxDischargeRateW", signed=True, required=False),
        abnormal_category=r.integer("rtgAbnormalCategory", 0, 255, required=False),
        normal_category=r.integer("rtgNormalCategory", 0, 255, required=False),
    )


def _settings(r: _Reader) -> PevSettings:
    max_w = r.quantity("setMaxW", signed=True, required=True)
    assert max_w is not None
    return PevSettings(
        updated_time=r.req_int("updatedTime", -_INT64, _INT64),
        set_max_w=max_w,
        set_grad_w=r.req_int("setGradW", 0, 65535),
        modes_enabled=r.hex_int("modesEnabled", 8, required=False),
        set_es_delay=r.integer("setESDelay", 0, _UINT32, required=False),
        set_es_high_freq=r.integer("setESHighFreq", 0, 65535, required=False),
        set_es_high_volt=r.integer("setESHighVolt", -32768, 32767, required=False),
        set_es_low_freq=r.integer("setESLowFreq", 0, 65535, required=False),
        set_es_low_volt=r.integer("setESLowVolt", -32768, 32767, required=False),
        set_es_ramp_tms=r.integer("setESRampTms", 0, _UINT32, required=False),
        set_es_random_delay=r.integer("setESRandomDelay", 0, _UINT32, required=False),
        set_soft_grad_w=r.integer("setSoftGradW", 0, 65535, required=False),
        set_max_a=r.quantity("setMaxA", signed=False, required=False),
        set_max_charge_rate_w=r.quantity("setMaxChargeRateW", signed=True, required=False),
        set_max_discharge_rate_w=r.quantity("setMaxDischargeRateW", signed=True, required=False),
        set_v_ref=r.quantity("setVRef", signed=False, required=False),
    )


def _status(r: _Reader) -> PevStatus:
    soc = r.status_value("stateOfChargeStatus", 0, 10000)
    return PevStatus(r.req_int("readingTime", -_INT64, _INT64), None if soc is None else soc / 100)


def _availability(r: _Reader) -> PevAvailability:
    return PevAvailability(
        r.req_int("readingTime", -_INT64, _INT64), r.quantity("statWAvail", signed=True, required=False)
    )


def _response(r: _Reader) -> PevResponse:
    lfdi = r.hex_text("endDeviceLFDI", 40, required=True)
    subject = r.hex_text("subject", 32, required=True)
    assert lfdi is not None and subject is not None
    status = r.integer("status", 0, 255, required=False)
    return PevResponse(lfdi, subject, status, r.integer("createdDateTime", -_INT64, _INT64, required=False))


_READERS: dict[str, Callable[[_Reader], Parsed]] = {
    "EndDevice": _end_device,
    "DeviceInformation": _device_information,
    "DERCapability": _capability,
    "DERSettings": _settings,
    "DERStatus": _status,
    "DERAvailability": _availability,
    "Response": _response,
    "DERControlResponse": _response,
}


def parse(body: bytes, expected: str) -> Parsed:
    """Read a PEV's ``expected`` resource (its root element name) from ``body``."""
    if not isinstance(body, bytes | bytearray):
        raise SepError("the body must be bytes")
    if len(body) > MAX_BODY:
        raise SepError(f"the body is {len(body)} bytes, more than {MAX_BODY}")
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise SepError("document type declarations are not accepted")
    try:
        root = ET.fromstring(bytes(body))
    except ET.ParseError as exc:
        raise SepError(f"not well-formed XML: {exc}") from None
    if root.tag not in (_Q + expected, _Q + "DERControlResponse" if expected == "Response" else _Q + expected):
        raise SepError(f"expected {expected} in namespace {NS}, got {root.tag}")
    name = root.tag[len(_Q) :]
    return _READERS[name](_Reader(root, name))
