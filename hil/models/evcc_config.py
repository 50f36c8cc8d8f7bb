"""What the simulated EVCC is: the vehicle (battery and limits) and how it talks (protocols, timing).

Every number a scenario can set is checked here, once, with an error naming the field and what is
allowed (:class:`EvccConfigError`); the session code then trusts its configuration.

Time limits are the EVCC-side ones of standards-facts.md 2.4 (as the ``iso15118`` package's
``shared/messages/timeouts.py`` and ``din_spec/timeouts.py`` carry them; DIN 70121 Table 77 for
V2G_EVCC_ReadyToCharge_Timeout).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

PROTOCOLS = ("iso20", "iso2", "din")
ENERGIES = ("AC", "DC", "AC_BPT", "DC_BPT")
CONTROL_MODES = ("scheduled", "dynamic")

# ----------------------------------------------------------------------------------------- time limits
#: SupportedAppProtocolReq message timeout, every protocol (standards-facts.md 2.4).
SAP_TIMEOUT_S = 2.0
#: V2G_EVCC_CommunicationSetup_Timeout: from opening the connection to SessionSetupRes (2.4).
COMMUNICATION_SETUP_TIMEOUT_S = 20.0
#: V2G_EVCC_Ongoing_Timeout: how long the EV repeats a request answered Ongoing (-2 and -20; 2.4). DIN 70121
#: lists none; this EV applies the same bound to DIN's Ongoing loops (a model choice).
ONGOING_TIMEOUT_S = 60.0
#: V2G_EVCC_CableCheck_Timeout, every protocol (2.4).
CABLE_CHECK_TIMEOUT_S = 40.0
#: V2G_EVCC_PreCharge_Timeout: DIN 70121 and ISO 15118-2 7 s, ISO 15118-20 10 s (2.4).
PRECHARGE_TIMEOUT_S = {"din": 7.0, "iso2": 7.0, "iso20": 10.0}
#: V2G_EVCC_ReadyToCharge_Timeout (DIN 70121 Table 77 via 2.4): from the first ChargeParameterDiscoveryReq
#: to PowerDeliveryReq(ReadyToChargeState=true) at the latest.
READY_TO_CHARGE_TIMEOUT_S = 150.0

#: The EV's message timeouts: how long it waits for each response (standards-facts.md 2.4).
RESPONSE_TIMEOUTS_S: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "din": MappingProxyType(
            {
                "SessionSetupReq": 2.0,
                "ServiceDiscoveryReq": 2.0,
                "ServicePaymentSelectionReq": 2.0,
                "ContractAuthenticationReq": 2.0,
                "ChargeParameterDiscoveryReq": 2.0,
                "CableCheckReq": 2.0,
                "PreChargeReq": 2.0,
                "PowerDeliveryReq": 2.0,
                "CurrentDemandReq": 0.25,
                "WeldingDetectionReq": 2.0,
                "SessionStopReq": 2.0,
            }
        ),
        "iso2": MappingProxyType(
            {
                "SessionSetupReq": 2.0,
                "ServiceDiscoveryReq": 2.0,
                "ServiceDetailReq": 5.0,
                "PaymentServiceSelectionReq": 2.0,
                "AuthorizationReq": 2.0,
                "ChargeParameterDiscoveryReq": 2.0,
                "CableCheckReq": 2.0,
                "PreChargeReq": 2.0,
                "PowerDeliveryReq": 5.0,
                "ChargingStatusReq": 2.0,
                "CurrentDemandReq": 0.25,
                "MeteringReceiptReq": 2.0,
                "WeldingDetectionReq": 2.0,
                "SessionStopReq": 2.0,
            }
        ),
        "iso20": MappingProxyType(
            {
                "SessionSetupReq": 2.0,
                "AuthorizationSetupReq": 2.0,
                "AuthorizationReq": 2.0,
                "ServiceDiscoveryReq": 2.0,
                "ServiceDetailReq": 5.0,
                "ServiceSelectionReq": 2.0,
                "AC_ChargeParameterDiscoveryReq": 2.0,
                "DC_ChargeParameterDiscoveryReq": 2.0,
                "ScheduleExchangeReq": 2.0,
                "DC_CableCheckReq": 2.0,
                "DC_PreChargeReq": 2.0,
                "PowerDeliveryReq": 2.0,
                "AC_ChargeLoopReq": 0.5,
                "DC_ChargeLoopReq": 0.5,
                "MeteringConfirmationReq": 2.0,
                "DC_WeldingDetectionReq": 2.0,
                "SessionStopReq": 2.0,
            }
        ),
    }
)

# ----------------------------------------------------------------------------------------- behaviour
#: [V2G2-847]: the EV goes from B to C within 250 ms of PowerDeliveryRes(Start) (standards-facts.md 2.4).
PILOT_RESPONSE_MAX_S = 0.25
#: The EV ends PreCharge once the EVSE's present voltage is this close to its battery (EVerest bring-up
#: dc.rst, standards-facts.md 2.8).
PRECHARGE_TOLERANCE_V = 20.0
#: PreChargeReq EVTargetCurrent: DIN 70121 / ISO 15118-2 cap the precharge current at 2 A (the -20 SECC
#: uses the same 2 A, firmware.iso15118.session.iso20_dc).
PRECHARGE_CURRENT_A = 2.0
#: Welding detection is over when the EVSE's output is below the touch-safe 60 V DC of IEC 61851-23
#: (the cable check's "below 60 V" figure, standards-facts.md 2.8); at most this many requests.
WELDING_SAFE_V = 60.0
WELDING_MAX_REQUESTS = 10
#: -20 ScheduleExchangeReq MaximumSupportingPoints: 12..1024 (maxSupportingPointsScheduleTupleType).
SUPPORTING_POINTS = 24
#: -2 ChargingProfile: at most 24 ProfileEntry (ChargingProfileType).
MAX_PROFILE_ENTRIES = 24


class EvccConfigError(ValueError):
    """A configuration value the EVCC cannot work with; the message names the field."""


def _check(ok: bool, field_name: str, allowed: str, value: object) -> None:
    if not ok:
        raise EvccConfigError(f"{field_name}: {value!r} is not allowed ({allowed})")


@dataclass(frozen=True)
class EvSpec:
    """The vehicle: its battery, its limits and what its driver wants. SoCs are shares (0..1)."""

    battery_kwh: float = 60.0
    soc: float = 0.5
    target_soc: float = 0.8
    min_soc: float = 0.2  # BPT: never discharged below this
    departure_in_s: int = 14_400  # from plug-in; -20 dynamic mode requires a departure time
    taper_from_soc: float = 0.8  # the battery's charge current falls linearly to 10 % at 100 %
    # DC
    empty_voltage_v: float = 330.0  # battery voltage at 0 % SoC, linear to full_voltage_v at 100 %
    full_voltage_v: float = 410.0
    max_voltage_v: float = 420.0
    min_voltage_v: float = 250.0
    max_current_a: float = 200.0
    max_power_w: float = 90_000.0
    max_discharge_current_a: float = 100.0  # DC_BPT
    max_discharge_power_w: float = 11_000.0  # AC_BPT and DC_BPT
    # AC (onboard charger)
    ac_phases: int = 3
    ac_max_current_a: float = 16.0  # per phase
    ac_min_current_a: float = 6.0
    ac_max_voltage_v: float = 400.0  # ISO 15118-2 EVMaxVoltage
    ac_nominal_voltage_v: float = 230.0  # phase voltage when the EVSE does not announce one
    mac: bytes = bytes.fromhex("0a0b0c0d0e0f")  # EVCCID of DIN 70121 / ISO 15118-2 (the EV's MAC)

    def __post_init__(self) -> None:
        _check(0.0 < self.battery_kwh <= 1_000.0, "battery_kwh", "0 < kWh <= 1000", self.battery_kwh)
        for name in ("soc", "target_soc", "min_soc", "taper_from_soc"):
            value = getattr(self, name)
            _check(0.0 <= value <= 1.0, name, "a share 0..1", value)
        _check(self.min_soc <= self.target_soc, "min_soc", f"at most target_soc ({self.target_soc})", self.min_soc)
        _check(0 <= self.departure_in_s <= 0xFFFF_FFFF, "departure_in_s", "0..4294967295 s", self.departure_in_s)
        _check(
            0.0 < self.empty_voltage_v <= self.full_voltage_v <= self.max_voltage_v,
            "full_voltage_v",
            "0 < empty_voltage_v <= full_voltage_v <= max_voltage_v",
            self.full_voltage_v,
        )
        _check(0.0 < self.min_voltage_v <= self.empty_voltage_v, "min_voltage_v", "0 < V <= empty", self.min_voltage_v)
        for name in ("max_current_a", "max_power_w", "ac_max_current_a", "ac_max_voltage_v", "ac_nominal_voltage_v"):
            value = getattr(self, name)
            _check(0.0 < value < 1e7, name, "a positive number", value)
        for name in ("max_discharge_current_a", "max_discharge_power_w"):
            value = getattr(self, name)
            _check(0.0 <= value < 1e7, name, "0 or more", value)
        _check(self.ac_phases in (1, 3), "ac_phases", "1 or 3", self.ac_phases)
        _check(
            0.0 <= self.ac_min_current_a <= self.ac_max_current_a,
            "ac_min_current_a",
            "0..ac_max_current_a",
            self.ac_min_current_a,
        )
        _check(len(self.mac) == 6, "mac", "6 bytes", self.mac)

    @property
    def capacity_wh(self) -> float:
        return self.battery_kwh * 1000.0


@dataclass(frozen=True)
class EvccTls:
    """TLS as the EV uses it: the SECC's certificate is checked against ``trust_anchors`` (the V2G root;
    no host name check: a SECC on a link-local address has no name to check). ``verify=False`` is for
    test benches only. An EV certificate (``cert_chain``/``key``) is offered when the SECC asks (-20)."""

    trust_anchors: Path | None = None
    verify: bool = True
    cert_chain: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        if self.verify and self.trust_anchors is None:
            raise EvccConfigError("tls.trust_anchors: needed to check the SECC (or verify=False on a test bench)")
        if (self.cert_chain is None) != (self.key is None):
            raise EvccConfigError("tls.cert_chain and tls.key: give both or neither")


@dataclass(frozen=True)
class Timeouts:
    """The EVCC's time limits; defaults from standards-facts.md 2.4. ``responses`` overrides single message
    timeouts by request name (e.g. a slow bench), for every protocol."""

    responses: Mapping[str, float] = field(default_factory=dict)
    sap_s: float = SAP_TIMEOUT_S
    communication_setup_s: float = COMMUNICATION_SETUP_TIMEOUT_S
    ongoing_s: float = ONGOING_TIMEOUT_S
    cable_check_s: float = CABLE_CHECK_TIMEOUT_S
    precharge_s: float | None = None  # None: the protocol's own (PRECHARGE_TIMEOUT_S)
    ready_to_charge_s: float = READY_TO_CHARGE_TIMEOUT_S

    def __post_init__(self) -> None:
        for name, value in self.responses.items():
            _check(0.0 < value <= 600.0, f"timeouts.responses[{name!r}]", "0 < s <= 600", value)
        for name in ("sap_s", "communication_setup_s", "ongoing_s", "cable_check_s", "ready_to_charge_s"):
            value = getattr(self, name)
            _check(0.0 < value <= 3600.0, f"timeouts.{name}", "0 < s <= 3600", value)
        if self.precharge_s is not None:
            _check(0.0 < self.precharge_s <= 3600.0, "timeouts.precharge_s", "0 < s <= 3600", self.precharge_s)

    def response(self, protocol: str, request: str) -> float:
        if request in self.responses:
            return self.responses[request]
        return RESPONSE_TIMEOUTS_S[protocol].get(request, 2.0)

    def precharge(self, protocol: str) -> float:
        return self.precharge_s if self.precharge_s is not None else PRECHARGE_TIMEOUT_S[protocol]


_EVCC_ID = re.compile(r"[\x20-\x7e]{1,255}")  # -20 identifierType: a string of at most 255 characters


@dataclass(frozen=True)
class EvccConfig:
    """How the EVCC behaves. ``protocols`` is the SupportedAppProtocol offer, most preferred first.

    ``energy`` and ``control_mode`` pick the -20 service and parameter set; over ISO 15118-2 and DIN 70121
    a BPT energy charges only (neither has bidirectional services here), DIN 70121 is DC only.
    ``loop_interval_s`` paces the charge loop (CurrentDemand / ChargingStatus / ChargeLoop; ~0.25 s, the -20
    SECC expects the next loop request within 0.5 s), ``poll_interval_s`` the repeats of a request answered
    Ongoing and of PreCharge. ``pause_after_s`` pauses the session after that much charging (SessionStop
    Pause; -2 and -20), ``resume_after_s`` resumes it that much later with the old SessionID.
    """

    ev: EvSpec = field(default_factory=EvSpec)
    protocols: tuple[str, ...] = PROTOCOLS
    energy: str = "DC"
    control_mode: str = "scheduled"
    tls: EvccTls | None = None
    loop_interval_s: float = 0.25
    poll_interval_s: float = 0.25
    pilot_delay_s: float = 0.1
    max_charge_s: float | None = None
    pause_after_s: float | None = None
    resume_after_s: float | None = None
    evcc_id: str | None = None  # -20 EVCCID; default: the MAC in hex
    timeouts: Timeouts = field(default_factory=Timeouts)

    def __post_init__(self) -> None:
        _check(
            1 <= len(self.protocols) <= 3 and len(set(self.protocols)) == len(self.protocols),
            "protocols",
            f"1..3 distinct of {', '.join(PROTOCOLS)}",
            self.protocols,
        )
        for protocol in self.protocols:
            _check(protocol in PROTOCOLS, "protocols", f"each one of {', '.join(PROTOCOLS)}", protocol)
        _check(self.energy in ENERGIES, "energy", ", ".join(ENERGIES), self.energy)
        _check(self.control_mode in CONTROL_MODES, "control_mode", ", ".join(CONTROL_MODES), self.control_mode)
        if self.protocols == ("din",):
            _check(self.energy.startswith("DC"), "energy", "DC or DC_BPT: DIN 70121 is DC only", self.energy)
        _check(0.0 < self.loop_interval_s <= 60.0, "loop_interval_s", "0 < s <= 60", self.loop_interval_s)
        _check(0.0 < self.poll_interval_s <= 60.0, "poll_interval_s", "0 < s <= 60", self.poll_interval_s)
        _check(
            0.0 <= self.pilot_delay_s <= PILOT_RESPONSE_MAX_S,
            "pilot_delay_s",
            f"0..{PILOT_RESPONSE_MAX_S} s ([V2G2-847])",
            self.pilot_delay_s,
        )
        for name in ("max_charge_s", "pause_after_s", "resume_after_s"):
            value = getattr(self, name)
            _check(value is None or 0.0 <= value <= 1e7, name, "None or 0..1e7 s", value)
        if self.pause_after_s is not None:
            _check(
                any(p != "din" for p in self.protocols),
                "pause_after_s",
                "a protocol with SessionStop(Pause): iso2 or iso20",
                self.protocols,
            )
        if self.evcc_id is not None:
            _check(bool(_EVCC_ID.fullmatch(self.evcc_id)), "evcc_id", "1..255 printable characters", self.evcc_id)

    @property
    def bpt(self) -> bool:
        return self.energy.endswith("_BPT")

    @property
    def dc(self) -> bool:
        return self.energy.startswith("DC")
