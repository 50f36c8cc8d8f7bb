"""The scenario format (``format: 1``, docs/hil-formats.md): schema, loading and validation.

A wrong scenario gets one line per problem, naming the file, the line, the field and what is allowed:
``home.yaml:14: evs[0].behaviour: Input should be 'follow', 'greedy' or 'lower-only' (got 'eager')``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from firmware.energy.der_settings import DerConfigError, DerSettings

# ------------------------------------------------------------------------------------------ durations
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(h|min|ms|s)")
_UNIT_S = {"h": 3600.0, "min": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(value: Any) -> float:
    """Seconds from a number or from a string such as ``90``, ``1h30min``, ``15min``, ``250ms``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '1h30min'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            parts = _DURATION.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"{value!r} is not a duration: use seconds or h / min / s / ms, e.g. '1h30min'")
            seconds = sum(float(n) * _UNIT_S[u] for n, u in parts)
    else:
        raise ValueError("a duration is a number of seconds or a string like '1h30min'")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------------ site
class Profile(_Model):
    """A value over time: ``steps`` [(time, value)] held until the next step, or a ``csv`` file of
    ``time_s,value`` rows next to the scenario."""

    steps: list[tuple[Duration, float]] | None = None
    csv: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Profile:
        if (self.steps is None) == (self.csv is None):
            raise ValueError("a profile has either 'steps' or 'csv'")
        return self


class EnergyManagerSpec(_Model):
    """The site energy manager (firmware.energy) running beside the chargers: its static parameters
    (firmware.energy.manager.SiteConfig), in the scenario's units."""

    #: How the budget is shared: equally, by the EVs' ``priority``, or earliest ``departure`` first with
    #: what its ``energy_need_kwh`` requires (the rest equally).
    strategy: Literal["equal", "priority", "departure"] = "equal"
    period_s: float = Field(default=1.0, gt=0, le=60)
    meter_timeout_s: float = Field(default=10.0, gt=0)
    #: What the chargers share together while the site meter is silent (seed R142).
    fallback_ev_total_kw: float = Field(default=0.0, ge=0)
    #: The site import allowed once the EMS's last setpoint expired; omitted: the grid limit.
    ems_fallback_kw: float | None = Field(default=None, ge=0)
    hold_s: float = Field(default=10.0, ge=0)
    min_pause_s: float = Field(default=60.0, ge=0)
    step_kw: float = Field(default=0.69, ge=0)
    #: The DER grid-support functions (firmware.energy.der) on every connector: the mapping
    #: ``DerSettings.from_dict`` reads (docs/der.md); ``p_rated_w``, ``v_nom_v`` and ``f_nom_hz`` default
    #: to the board's ratings (see :func:`der_settings`).
    der: dict[str, Any] | None = None
    #: The DER functions start in service (as if the enter-service conditions had already been met);
    #: false: each connector stays out of service until the grid has been in the enter-service window
    #: for its delay (default deny, docs/der.md).
    der_in_service: bool = True

    @field_validator("der")
    @classmethod
    def _der(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            # The board's ratings are not known here: check everything else with stand-ins; the runner
            # checks again with the real ratings before anything starts.
            der_settings(value, p_rated_w=_DER_STAND_IN_RATING_W, v_nom_v=230.0, f_nom_hz=50.0)
        return value

    @model_validator(mode="after")
    def _der_in_service(self) -> EnergyManagerSpec:
        if "der_in_service" in self.model_fields_set and self.der is None:
            raise ValueError("der_in_service is for the DER functions: give der as well")
        return self


#: The rating the scenario check gives a DER mapping without ``p_rated_w`` (a board's rating is known only
#: at run time): large, so that no setting is refused for exceeding it here.
_DER_STAND_IN_RATING_W = 1e9


def der_settings(mapping: dict[str, Any], *, p_rated_w: float, v_nom_v: float, f_nom_hz: float) -> DerSettings:
    """The DER settings of a scenario's ``site.energy_manager.der`` for one connector: the mapping's own
    values, and where it has none the connector's rating (``p_rated_w``), the board's nominal voltage
    (``v_nom_v``) and nominal grid frequency (``f_nom_hz``). A bad mapping raises ValueError with the key
    path inside ``der`` (``ffr.activation_hz: must be one of 49.7, 49.6, 49.5, not '49.4'``)."""
    data = {"p_rated_w": p_rated_w, "v_nom_v": v_nom_v, "f_nom_hz": f_nom_hz, **mapping}
    try:
        return DerSettings.from_dict(data)
    except DerConfigError as exc:
        message = str(exc)
        for prefix in ("der.", "der: "):  # the error names its key path from "der"; the field already says it
            message = message.removeprefix(prefix)
        raise ValueError(message) from exc


class BatterySpec(_Model):
    """A local battery (ESS) the energy manager discharges to keep the chargers going (TF-EVC eq.
    3.2.6.3-4). It never charges in this model; losses are not modelled."""

    capacity_kwh: float = Field(gt=0)
    soc: float = Field(ge=0, le=1)
    max_discharge_kw: float = Field(gt=0)
    reserve_kwh: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _reserve(self) -> BatterySpec:
        if self.reserve_kwh >= self.capacity_kwh:
            raise ValueError(f"reserve_kwh ({self.reserve_kwh:g}) must be below capacity_kwh ({self.capacity_kwh:g})")
        return self


J3072Edition = Literal["J3072_201505", "J3072_202103", "J3072_202406"]
#: The editions a site accepts unless it says otherwise: the ones written for IEEE 1547-2018.
_RECENT_EDITIONS: tuple[J3072Edition, ...] = ("J3072_202103", "J3072_202406")


class J3072ApprovalSpec(_Model):
    """The utility's ISM approval list the rig signs for the site (firmware/j3072/approval.py)."""

    isms: list[str] = Field(default_factory=list)
    #: valid (in force now), expired (its validity ended), tampered (altered after signing: refused, so no
    #: list), none (the utility sent none yet).
    state: Literal["valid", "expired", "tampered", "none"] = "valid"


class J3072SiteSpec(_Model):
    """The site's SAE J3072 set-up (docs/j3072.md): its interconnection settings, the utility's rules and
    the backend's V2X permission. Every connector with a ``protocol: j3072`` EV runs a J3072 session."""

    #: The interconnection agreement on file; none: the site is not configured (every PEV charge-only).
    interconnection_agreement: str | None = "R21-HIL-0001"
    max_discharge_kw: float = Field(default=7.2, ge=0)
    max_charge_kw: float = Field(default=11.0, ge=0)
    max_current_a: float = Field(default=32.0, ge=0)
    accepted_editions: list[J3072Edition] = Field(default_factory=lambda: list(_RECENT_EDITIONS), min_length=1)
    approval_required: bool = False
    approval: J3072ApprovalSpec | None = None
    backend_v2x: Literal["allow", "ask", "forbid"] = "allow"
    #: The site's IEEE 1547 settings (the keys of firmware.energy.der_settings.DerSettings.from_dict);
    #: f_nom_hz, v_nom_v and p_rated_w default to the site's frequency, voltage and max_discharge_kw.
    der: dict[str, Any] = Field(default_factory=dict)


class SiteSpec(_Model):
    grid_limit_kw: float | None = Field(default=None, gt=0)
    voltage_v: float = Field(default=230.0, gt=0, le=1000)
    frequency_hz: float = Field(default=50.0, gt=40, lt=70)
    building_load_kw: Profile | None = None
    pv_kw: Profile | None = None
    energy_manager: EnergyManagerSpec | None = None
    battery: BatterySpec | None = None
    j3072: J3072SiteSpec | None = None

    @model_validator(mode="after")
    def _manager(self) -> SiteSpec:
        if self.j3072 is not None and self.energy_manager is None:
            raise ValueError("j3072 needs an energy_manager (it grants the discharge the gate allows)")
        if self.energy_manager is not None and self.grid_limit_kw is None:
            raise ValueError("an energy_manager needs grid_limit_kw (the import limit it holds the site under)")
        if self.battery is not None and self.energy_manager is None:
            raise ValueError("a battery needs an energy_manager (the manager decides when it discharges)")
        return self


class BackendSpec(_Model):
    """The CSMS the stations report to: none, our embedded CSMS (in-process, any time mode) or an
    external one at ``url`` (real time only). Station n is ``<station_id><n>``."""

    kind: Literal["none", "embedded", "url"] = "none"
    ocpp: Literal["1.6", "2.0.1", "2.1"] = "1.6"
    url: str | None = Field(default=None, pattern=r"^wss?://")
    station_id: str = Field(default="CP", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    #: Station configuration overrides: 1.6 keys (e.g. MeterValueSampleInterval: "60").
    config: dict[str, str] = Field(default_factory=dict)
    heartbeat_s: int = Field(default=300, ge=1)
    accepted_ids: list[str] | None = None  # None: every id is accepted
    blocked_ids: list[str] = Field(default_factory=list)
    #: The wall-clock time at scenario time 0 (OCPP timestamps, clock-aligned meter values).
    start: str = Field(default="2026-01-05T08:00:00Z", pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")

    @model_validator(mode="after")
    def _url(self) -> BackendSpec:
        if (self.kind == "url") != (self.url is not None):
            raise ValueError("backend kind 'url' needs url, and only it takes one")
        return self


class SettingsSpec(_Model):
    free_charging: bool = False
    fallback_a: float = Field(default=6.0, ge=0)


# ------------------------------------------------------------------------------------------ EVs
HlcProtocol = Literal["none", "din", "iso2", "iso20", "j3072"]


def _protocol_alias(value: Any) -> Any:
    """``basic`` (the spelling before ISO 15118 EVs joined the rig) is ``none``: PWM only."""
    return "none" if value == "basic" else value


class EvSpec(_Model):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    connector: int = Field(default=1, ge=1)
    #: How the EV talks to the charger: ``none`` (PWM only, IEC 61851-1 basic charging; ``basic`` is the
    #: older spelling) or high-level communication with the rig's EVCC simulator (hil.models.evcc) over
    #: ISO 15118-2 (``iso2``), ISO 15118-20 (``iso20``) or DIN 70121 (``din``, DC only).
    protocol: Annotated[HlcProtocol, BeforeValidator(_protocol_alias)] = "none"
    #: The energy transfer of an ISO 15118 EV: AC, or AC_BPT (bidirectional, ISO 15118-20 only). None:
    #: AC for an ISO 15118 EV; a PWM EV takes none.
    energy: Literal["AC", "AC_BPT", "DC", "DC_BPT"] | None = None
    #: The ISO 15118-20 control mode the EV asks for (ISO 15118-20 8.5.2.1): None is scheduled.
    control_mode: Literal["scheduled", "dynamic"] | None = None
    battery_kwh: float = Field(gt=0, le=300)
    soc: float = Field(ge=0, le=1)
    target_soc: float = Field(default=1.0, gt=0, le=1)
    max_current_a: float = Field(gt=0, le=80)
    phases: Literal[1, 3] = 3
    behaviour: Literal["follow", "greedy", "lower-only"] = "follow"
    cable_a: Literal[13, 20, 32, 63] = 32
    plug_in: Duration = 0.0
    unplug: Duration | None = None
    response_s: float = Field(default=1.0, gt=0, le=5.0)
    taper_from_soc: float = Field(default=0.8, gt=0, le=1)
    #: The priority of the EV's connector in the energy manager's ``priority`` strategy (higher first).
    priority: int = 0
    #: The user's preferences for the energy manager's ``departure`` strategy: when the EV leaves and
    #: how much energy it needs from the charger by then.
    departure: Duration | None = None
    energy_need_kwh: float | None = Field(default=None, gt=0)
    #: The user's discharge floor (SoC, 0..1) for the energy manager: no V2G/V2B below it (R84, R135). For
    #: an AC_BPT EV; the manager learns the SoC from its ISO 15118-20 session.
    discharge_floor: float | None = Field(default=None, ge=0, le=1)
    #: A ``protocol: j3072`` EV (a PWM EV with an onboard inverter and an IEEE 2030.5 client,
    #: hil.models.j3072_pev): its ISM number, inverter rating, reserve SoC and misbehaviour.
    ism: str | None = None
    inverter_kw: float | None = Field(default=None, gt=0)
    reserve_soc: float | None = Field(default=None, ge=0, le=1)
    misbehave: Literal["none", "wrong-readback", "no-settings", "inject-anyway"] | None = None

    @property
    def hlc(self) -> bool:
        """Whether the EV uses high-level communication (ISO 15118 / DIN 70121) rather than PWM only."""
        return self.protocol in ("din", "iso2", "iso20")

    @property
    def j3072(self) -> bool:
        return self.protocol == "j3072"

    @property
    def energy_transfer(self) -> str:
        """The EVCC's energy transfer (hil.models.evcc_config.ENERGIES): the scenario's, else AC."""
        return self.energy or "AC"

    @model_validator(mode="after")
    def _hlc(self) -> EvSpec:
        if not self.j3072:
            for name in ("ism", "inverter_kw", "reserve_soc", "misbehave"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} is for a J3072 EV: give protocol j3072 as well")
        if not self.hlc:
            for name in ("energy", "control_mode", "discharge_floor"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} is for an ISO 15118 EV: give protocol iso2 or iso20 as well")
            return self
        if self.protocol == "din":
            raise ValueError(
                "protocol din: DIN 70121 is DC only, and the rig's ISO 15118 EVs charge on AC boards "
                "(the SECC's DC port over a converter is not wired in the rig): use iso2 or iso20"
            )
        if self.energy in ("DC", "DC_BPT"):
            raise ValueError(
                f"energy {self.energy}: the rig's ISO 15118 EVs charge on AC boards (the SECC's DC port over a "
                "converter is not wired in the rig): use AC or AC_BPT"
            )
        if self.discharge_floor is not None and self.energy != "AC_BPT":
            raise ValueError("discharge_floor is for a bidirectional EV: give protocol iso20 and energy AC_BPT")
        if self.energy == "AC_BPT" and self.protocol != "iso20":
            raise ValueError("energy AC_BPT (bidirectional) needs protocol iso20: ISO 15118-2 AC charges only here")
        if self.control_mode is not None and self.protocol != "iso20":
            raise ValueError("control_mode (scheduled | dynamic) is an ISO 15118-20 choice: give protocol iso20")
        pwm_only = sorted({"behaviour", "response_s"} & self.model_fields_set)
        if pwm_only:
            raise ValueError(
                f"{', '.join(pwm_only)} describe how a PWM EV follows the duty cycle; an ISO 15118 EV follows "
                "its session (leave them out, or use protocol none)"
            )
        return self

    @model_validator(mode="after")
    def _times(self) -> EvSpec:
        if self.unplug is not None and self.unplug <= self.plug_in:
            raise ValueError(f"unplug ({self.unplug:g} s) must come after plug_in ({self.plug_in:g} s)")
        if (self.departure is None) != (self.energy_need_kwh is None):
            raise ValueError("departure and energy_need_kwh go together (the need is what it takes by then)")
        if self.departure is not None and self.departure <= self.plug_in:
            raise ValueError(f"departure ({self.departure:g} s) must come after plug_in ({self.plug_in:g} s)")
        return self


# ------------------------------------------------------------------------------------------ events
FaultName = Literal[
    "diode_short",
    "pilot_short",
    "welding",
    "contactor_stuck_open",
    "rcd_trip",
    "pp_open",
    "pp_invalid",
    "overcurrent",
    "stuck_in_c",
    "meter_garbage",
    "overtemperature",
    "lock_jam",
]


#: The injectable faults (docs/hil-formats.md), derived from the type so the two cannot drift apart.
FAULTS: tuple[str, ...] = get_args(FaultName)
#: The events and checks that need the site energy manager (site.energy_manager).
ENERGY_ACTIONS = frozenset(
    {
        "ems_setpoint",
        "demand_response",
        "site_meter_outage",
        "site_meter_restore",
        "authorise_discharge",
        "withdraw_discharge",
        "backend_v2x",
        "regulation",
        "j3072_parameters",
    }
)
ENERGY_CHECKS = frozenset({"energy_fallback", "ess_soc_at_least", "ess_discharged", "demand_response_met"})
#: The checks that read an ISO 15118 session (the SECC's ``v2g`` and ``hlc`` records).
HLC_CHECKS = frozenset({"v2g_sequence", "no_power_before"})
#: The faults that belong to the EV (its pilot circuit, cable and current draw), not to the charger.
EV_FAULTS = frozenset({"diode_short", "pilot_short", "pp_open", "pp_invalid", "overcurrent", "stuck_in_c"})


class EventSpec(_Model):
    at: Duration
    action: Literal[
        "authorize",
        "deauthorize",
        "pause",
        "resume",
        "limit",
        "clear_limit",
        "fault",
        "clear",
        "plug_in",
        "unplug",
        "ev_state",
        "grid",
        "service_clear",
        "swipe",
        "csms_call",
        "csms_outage",
        "csms_restore",
        "ems_setpoint",
        "demand_response",
        "site_meter_outage",
        "site_meter_restore",
        "authorise_discharge",
        "withdraw_discharge",
        "backend_v2x",
        "regulation",
        "j3072_parameters",
    ]
    connector: int = Field(default=1, ge=1)
    ev: str | None = None
    id_tag: str | None = None
    source: str | None = None
    amps: float | None = Field(default=None, ge=0)
    for_: Duration | None = Field(default=None, alias="for")
    fault: FaultName | None = None
    sensor: str | None = None
    celsius: float | None = None
    state: Literal["B", "C"] | None = None
    voltage_v: float | None = Field(default=None, gt=0)
    frequency_hz: float | None = Field(default=None, gt=0)
    code: str | None = None
    call: str | None = Field(default=None, pattern=r"^[A-Z][A-Za-z0-9]+$")  # csms_call: the OCPP action
    payload: dict[str, Any] | None = None  # csms_call: its camelCase payload
    import_max_kw: float | None = Field(default=None, ge=0)  # ems_setpoint: the site import allowed
    valid: Duration | None = None  # ems_setpoint: how long the setpoint holds
    reduce_kw: float | None = Field(default=None, gt=0)  # demand_response: by how much
    #: authorise_discharge: the most the connector may give back (the site EMS / BEMS opts the EV in, R136).
    max_discharge_kw: float | None = Field(default=None, ge=0)
    allowed: bool | None = None  # backend_v2x: the backend allows (true) or forbids (false) V2X
    #: regulation: a frequency-regulation signal for the connector (kW, + = discharge, as an aggregator's
    #: AGC follow), one value every ``period`` (default 2 s) from ``at``; the last one holds one more period.
    signal_kw: list[float] | None = Field(default=None, min_length=1)
    period: Duration | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _parameters(self) -> EventSpec:
        needs: dict[str, tuple[str, ...]] = {
            "limit": ("source", "amps"),
            "clear_limit": ("source",),
            "fault": ("fault",),
            "clear": ("fault",),
            "plug_in": ("ev",),
            "unplug": ("ev",),
            "ev_state": ("ev", "state"),
            "service_clear": ("code",),
            "swipe": ("id_tag",),
            "csms_call": ("call", "payload"),
            "ems_setpoint": ("import_max_kw", "valid"),
            "demand_response": ("reduce_kw", "for_"),
            "authorise_discharge": ("max_discharge_kw",),
            "backend_v2x": ("allowed",),
            "regulation": ("signal_kw",),
            "j3072_parameters": ("max_discharge_kw",),
        }
        missing = [name for name in needs.get(self.action, ()) if getattr(self, name) is None]
        if missing:
            names = ", ".join("for" if name == "for_" else name for name in missing)
            raise ValueError(f"action {self.action!r} needs {names}")
        if self.action == "ems_setpoint" and self.valid is not None and self.valid <= 0:
            raise ValueError("an ems_setpoint needs a positive validity (valid)")
        if self.action == "fault" and self.fault == "overcurrent" and self.amps is None:
            raise ValueError("fault 'overcurrent' needs amps (the current the EV draws)")
        if self.action == "fault" and self.fault == "overtemperature" and (self.sensor is None or self.celsius is None):
            raise ValueError("fault 'overtemperature' needs sensor and celsius")
        if self.fault in EV_FAULTS and (self.ev is None):
            raise ValueError(f"fault {self.fault!r} is the EV's: name the ev")
        if self.action == "grid" and self.voltage_v is None and self.frequency_hz is None:
            raise ValueError("action 'grid' needs voltage_v and/or frequency_hz")
        return self


# ------------------------------------------------------------------------------------------ checks
class CheckSpec(_Model):
    check: Literal[
        "contactor_opens_within",
        "contactor_never_closed_without",
        "site_power_below_grid_limit",
        "session_energy",
        "ev_soc_at_least",
        "fault_raised",
        "fault_not_raised",
        "state_reached",
        "duty_at_most",
        "no_offer_while",
        "sessions",
        "ocpp_messages",
        "backend_transactions",
        "energy_fallback",
        "ess_soc_at_least",
        "ess_discharged",
        "all_charging",
        "chargers_power",
        "site_power",
        "demand_response_met",
        "offer_stopped_within",
        "phase_switches",
        "v2g_sequence",
        "no_power_before",
        "discharged",
        "ev_soc_never_below",
        "discharge_only_authorised",
        "j3072_decision",
        "regulation_followed",
    ]
    after: Literal["unplug", "ev_stop", "fault", "pause"] | None = None
    within_ms: float | None = Field(default=None, gt=0)
    within_s: float | None = Field(default=None, gt=0)
    after_s: Duration | None = None
    condition: Literal["authorisation", "diode_check", "unauthorised", "faulted"] | None = None
    tolerance_s: float = Field(default=0.0, ge=0)
    ev: str | None = None
    min_kwh: float | None = Field(default=None, ge=0)
    max_kwh: float | None = Field(default=None, ge=0)
    soc: float | None = Field(default=None, ge=0, le=1)
    by: Duration | None = None
    code: str | None = None
    state: str | None = None
    amps: float | None = Field(default=None, ge=0)
    from_s: Duration | None = None
    to_s: Duration | None = None
    count: int | None = Field(default=None, ge=0)
    min_count: int | None = Field(default=None, ge=0)
    action: str | None = None  # ocpp_messages: the OCPP action
    dir: Literal["tx", "rx"] = "tx"  # ocpp_messages: tx = sent by the station, rx = received by it
    connector: int = Field(default=1, ge=1)
    active: bool | None = None  # energy_fallback: the fallback is (not) active
    connectors: list[Annotated[int, Field(ge=1)]] | None = Field(default=None, min_length=1)  # all_charging
    min_kw: float | None = None  # chargers_power, site_power
    max_kw: float | None = None
    event: int | None = Field(default=None, ge=0)  # offer_stopped_within: after events[event] ...
    at_s: Duration | None = None  # ... or after this time
    #: phase_switches: the phase contactor's moves in the window, in order, as [from, to] phases.
    sequence: list[tuple[Literal[1, 3], Literal[1, 3]]] | None = None
    #: v2g_sequence: V2G message names (as the ``v2g`` records name them, e.g. SessionSetupReq) that must
    #: appear in this order on the connector; other messages may come in between.
    messages: list[Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]] | None = Field(default=None, min_length=1)
    #: j3072_decision: the gate's reason (firmware.j3072.gatekeeper.REASONS; "authorised" when it authorised).
    reason: str | None = None
    tolerance_kw: float | None = Field(default=None, gt=0)  # regulation_followed: how close is reached

    @model_validator(mode="after")
    def _parameters(self) -> CheckSpec:
        needs: dict[str, tuple[str, ...]] = {
            "contactor_opens_within": ("after", "within_ms"),
            "contactor_never_closed_without": ("condition",),
            "session_energy": ("ev",),
            "ev_soc_at_least": ("ev", "soc"),
            "fault_raised": ("code",),
            "fault_not_raised": ("code",),
            "state_reached": ("state",),
            "duty_at_most": ("amps",),
            "no_offer_while": ("condition",),
            "sessions": ("count",),
            "ocpp_messages": ("action",),
            "energy_fallback": ("active",),
            "ess_soc_at_least": ("soc",),
            "ess_discharged": ("min_kwh",),
            "all_charging": ("connectors", "from_s"),
            "demand_response_met": ("within_s",),
            "offer_stopped_within": ("within_s", "connectors"),
            "phase_switches": ("sequence",),
            "v2g_sequence": ("messages",),
            "discharged": ("min_kwh",),
            "ev_soc_never_below": ("ev", "soc"),
            "j3072_decision": ("reason",),
        }
        missing = [name for name in needs.get(self.check, ()) if getattr(self, name) is None]
        if missing:
            raise ValueError(f"check {self.check!r} needs {', '.join(missing)}")
        if self.check in ("ocpp_messages", "backend_transactions") and self.count is None and self.min_count is None:
            raise ValueError(f"check {self.check!r} needs count or min_count")
        if self.check == "offer_stopped_within" and (self.event is None) == (self.at_s is None):
            raise ValueError("check 'offer_stopped_within' needs either event (an index in events) or at_s")
        if self.sequence is not None and any(a == b for a, b in self.sequence):
            raise ValueError("a phase switch changes the phases: each move is [3, 1] or [1, 3]")
        if self.check in ("chargers_power", "site_power") and self.min_kw is None and self.max_kw is None:
            raise ValueError(f"check {self.check!r} needs min_kw and/or max_kw")
        if self.from_s is not None and self.to_s is not None and self.to_s < self.from_s:
            raise ValueError(f"to_s ({self.to_s:g} s) comes before from_s ({self.from_s:g} s)")
        return self


# ------------------------------------------------------------------------------------------ scenario
class Scenario(_Model):
    format: Literal[1]
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    board: str = "sim-ac"
    duration: Duration
    time: Literal["virtual", "realtime"] = "virtual"
    settings: SettingsSpec = SettingsSpec()
    site: SiteSpec | None = None
    backend: BackendSpec = BackendSpec()
    evs: list[EvSpec] = Field(default_factory=list)
    events: list[EventSpec] = Field(default_factory=list)
    expect: list[CheckSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        if self.duration <= 0:
            raise ValueError("duration must be positive")
        ids = [ev.id for ev in self.evs]
        if len(ids) != len(set(ids)):
            raise ValueError(f"EV ids must be unique, got {ids}")
        for i, event in enumerate(self.events):
            if event.ev is not None and event.ev not in ids:
                raise ValueError(f"events[{i}].ev = {event.ev!r} is not one of the EVs: {ids}")
            if event.at > self.duration:
                raise ValueError(f"events[{i}].at = {event.at:g} s is after the end ({self.duration:g} s)")
        for i, check in enumerate(self.expect):
            if check.ev is not None and check.ev not in ids:
                raise ValueError(f"expect[{i}].ev = {check.ev!r} is not one of the EVs: {ids}")
        connectors = [ev.connector for ev in self.evs]
        if len(connectors) != len(set(connectors)):
            raise ValueError("two EVs share a connector; give each EV its own connector")
        if self.backend.kind == "url" and self.time != "realtime":
            raise ValueError("an external CSMS (backend kind 'url') runs in real time: set time: realtime")
        backend_only = ("swipe", "csms_call", "csms_outage", "csms_restore")
        for i, event in enumerate(self.events):
            if event.action in backend_only and self.backend.kind == "none":
                raise ValueError(f"events[{i}]: action {event.action!r} needs a backend (backend.kind)")
            if event.action in ("csms_outage", "csms_restore") and self.backend.kind != "embedded":
                raise ValueError(f"events[{i}]: {event.action} needs the embedded CSMS")
        for i, check in enumerate(self.expect):
            if check.check in ("ocpp_messages", "backend_transactions") and self.backend.kind == "none":
                raise ValueError(f"expect[{i}]: check {check.check!r} needs a backend (backend.kind)")
            if check.check == "backend_transactions" and self.backend.kind != "embedded":
                raise ValueError(f"expect[{i}]: backend_transactions reads the embedded CSMS's records")
        manager = self.site.energy_manager if self.site is not None else None
        battery = self.site.battery if self.site is not None else None
        for i, event in enumerate(self.events):
            if event.action in ENERGY_ACTIONS and manager is None:
                raise ValueError(f"events[{i}]: action {event.action!r} needs site.energy_manager")
        for i, ev in enumerate(self.evs):
            if ev.departure is not None and manager is None:
                raise ValueError(f"evs[{i}]: a departure and energy need are for site.energy_manager")
            if ev.discharge_floor is not None and manager is None:
                raise ValueError(f"evs[{i}]: a discharge_floor is for site.energy_manager (it holds it)")
        j3072 = self.site.j3072 if self.site is not None else None
        for i, ev in enumerate(self.evs):
            if ev.j3072 and j3072 is None:
                raise ValueError(f"evs[{i}]: a j3072 EV needs site.j3072 (the site's interconnection settings)")
        gated = {ev.connector for ev in self.evs if ev.j3072}
        for i, event in enumerate(self.events):
            if event.action in ("backend_v2x", "j3072_parameters") and event.connector not in gated:
                raise ValueError(f"events[{i}]: {event.action} on connector {event.connector}: no j3072 EV there")
        for i, check in enumerate(self.expect):
            if check.check == "j3072_decision" and check.connector not in gated:
                raise ValueError(f"expect[{i}]: j3072_decision on connector {check.connector}: no j3072 EV there")
        bidirectional = {ev.connector for ev in self.evs if ev.energy == "AC_BPT"}
        for i, event in enumerate(self.events):
            if event.action in ("authorise_discharge", "withdraw_discharge") and event.connector not in bidirectional:
                raise ValueError(
                    f"events[{i}]: {event.action} on connector {event.connector}: put an EV with energy AC_BPT there"
                )
        for i, check in enumerate(self.expect):
            if check.check in ENERGY_CHECKS and manager is None:
                raise ValueError(f"expect[{i}]: check {check.check!r} needs site.energy_manager")
            if check.check in ("ess_soc_at_least", "ess_discharged") and battery is None:
                raise ValueError(f"expect[{i}]: check {check.check!r} needs site.battery")
            if check.check == "demand_response_met" and not any(e.action == "demand_response" for e in self.events):
                raise ValueError(f"expect[{i}]: check 'demand_response_met' needs a demand_response event")
            if check.event is not None and check.event >= len(self.events):
                have = f"0..{len(self.events) - 1}" if self.events else "none"
                raise ValueError(f"expect[{i}]: event {check.event} is not an index of events ({have})")
            if check.check in HLC_CHECKS and not any(e.hlc and e.connector == check.connector for e in self.evs):
                raise ValueError(
                    f"expect[{i}]: check {check.check!r} reads the ISO 15118 session on connector {check.connector}: "
                    "put an EV with protocol iso2 or iso20 there"
                )
            if check.at_s is not None and check.at_s > self.duration:
                raise ValueError(f"expect[{i}]: at_s = {check.at_s:g} s is after the end ({self.duration:g} s)")
        return self

    @property
    def connectors(self) -> int:
        """Connector n is board instance n of the scenario's board (a multi-board site)."""
        used = [ev.connector for ev in self.evs] + [e.connector for e in self.events]
        used += [c.connector for c in self.expect]
        used += [n for c in self.expect for n in c.connectors or ()]
        return max(used, default=1)


class ScenarioError(ValueError):
    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__("\n".join(problems))


def load_scenario(path: Path | str) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(path, [f"{path}: cannot read: {exc}"]) from exc
    return parse_scenario(text, path)


def parse_scenario(text: str, path: Path | str = "<scenario>") -> Scenario:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ScenarioError(path, [f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from exc
    if not isinstance(data, dict):
        raise ScenarioError(path, [f"{path}:1: a scenario is a mapping with format, name, duration, ..."])
    if data.get("format") != 1:
        line = _line(node, ("format",)) or 1
        raise ScenarioError(path, [f"{path}:{line}: format: this rig reads format: 1 (got {data.get('format')!r})"])
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _line(node, loc) or _line(node, loc[:-1]) or 1
            field = _field_path(loc)
            message = err["msg"].removeprefix("Value error, ")
            value = err.get("input")
            got = "" if isinstance(value, dict | list) or err["type"] == "missing" else f" (got {value!r})"
            if err["type"] == "missing":
                message = "missing (required)"
            if err["type"] == "extra_forbidden":
                message = "unknown field"
            problems.append(f"{path}:{line}: {field}: {message}{got}")
        raise ScenarioError(path, problems) from exc


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
        elif str(item).startswith("function-") or str(item) in ("tuple[float, float]",):
            continue
        else:
            out += ("." if out else "") + str(item)
    return out or "(scenario)"


def _line(node: Any, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (keys of mappings, indexes of sequences)."""
    current = node
    line = None
    for item in loc:
        if isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                if key.value == item or (item == "for_" and key.value == "for"):
                    line = key.start_mark.line + 1
                    current = value
                    break
            else:
                return line
        elif isinstance(current, yaml.SequenceNode) and isinstance(item, int) and item < len(current.value):
            current = current.value[item]
            line = current.start_mark.line + 1
        else:
            return line
    return line
