"""The fault catalogue: every fault the connector knows, with its reaction and its recovery rule.

Faults are fatal unless a rule here says how they recover (anchors.md 8.3: EVerest makes every error
fatal unless allow-listed). Each entry says

* **reaction**: what the connector does at once;
  - ``EMERGENCY``: open the contactor now, even under load; pilot F for at least 300 ms
    (T_STATE_F_AFTER_FAULT), then X1 while the fault lasts;
  - ``STOP``: withdraw the PWM offer (X1); the contactor opens when the EV goes to B, or after 6 s
    under load (IEC 61851-1 sequence 10.2), like any EVSE-initiated stop; no new offer;
  - ``DERATE``: only lowers the current limit (thermal steps); charging continues;
* **recovery**: when the fault clears;
  - ``AUTO``: as soon as the condition is gone;
  - ``UNPLUG``: when the condition is gone *and* the EV has been unplugged (pilot A), so a car is
    never re-energised by the fault clearing under it;
  - ``SERVICE``: never by itself: a restart after service, or an explicit operator clear
    (a welded contactor cannot be trusted again without a person looking at it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Reaction(enum.Enum):
    EMERGENCY = "emergency"
    STOP = "stop"
    DERATE = "derate"


class Recovery(enum.Enum):
    AUTO = "auto"
    UNPLUG = "unplug"
    SERVICE = "service"


class FaultCode(enum.Enum):
    RCD_TRIPPED = "rcd_tripped"
    RCD_SELFTEST_FAILED = "rcd_selftest_failed"
    CONTACTOR_WELDED = "contactor_welded"
    CONTACTOR_FAILED_TO_CLOSE = "contactor_failed_to_close"
    DIODE_MISSING = "diode_missing"
    PILOT_SHORT = "pilot_short"
    PILOT_INVALID = "pilot_invalid"
    PROXIMITY_INVALID = "proximity_invalid"
    VENTILATION_NOT_AVAILABLE = "ventilation_not_available"
    OVERCURRENT_SOFT = "overcurrent_soft"
    OVERCURRENT_HARD = "overcurrent_hard"
    OVERTEMPERATURE_DERATE = "overtemperature_derate"
    OVERTEMPERATURE_STOP = "overtemperature_stop"
    TEMPERATURE_SENSOR = "temperature_sensor"
    METER_COMM_LOST = "meter_comm_lost"
    METER_IMPLAUSIBLE = "meter_implausible"
    COPROCESSOR_COMM_LOST = "coprocessor_comm_lost"
    CONVERTER_COMM_LOST = "converter_comm_lost"
    HEARTBEAT_LOST = "heartbeat_lost"
    LOCK_FAILED = "lock_failed"
    PHASE_SWITCH_FAILED = "phase_switch_failed"
    UNAUTHORISED_DISCHARGE = "unauthorised_discharge"


@dataclass(frozen=True)
class FaultSpec:
    code: FaultCode
    reaction: Reaction
    recovery: Recovery
    condition: str  # what raises it
    clears_when: str  # what clears it (with the recovery rule)


_CATALOGUE = (
    FaultSpec(FaultCode.RCD_TRIPPED, Reaction.EMERGENCY, Recovery.UNPLUG,
              "the RCD / RDC-DD trip input is active",
              "trip input clear and the EV unplugged"),
    FaultSpec(FaultCode.RCD_SELFTEST_FAILED, Reaction.EMERGENCY, Recovery.AUTO,
              "the RCD self-test at boot (or its retry) did not trip in time or did not clear",
              "a later self-test passes (retried every 300 s, at most 6 times, like OpenEVSE's POST)"),
    FaultSpec(FaultCode.CONTACTOR_WELDED, Reaction.EMERGENCY, Recovery.SERVICE,
              "the mirror contact still reads closed 200 ms after the contactor was commanded open",
              "operator clear after service"),
    FaultSpec(FaultCode.CONTACTOR_FAILED_TO_CLOSE, Reaction.EMERGENCY, Recovery.UNPLUG,
              "the mirror contact still reads open 200 ms after the contactor was commanded closed",
              "EV unplugged"),
    FaultSpec(FaultCode.DIODE_MISSING, Reaction.EMERGENCY, Recovery.UNPLUG,
              "PWM on and the negative pilot plateau is not -12 V (no EV diode, IEC 61851-1 Table A.4)",
              "EV unplugged"),
    FaultSpec(FaultCode.PILOT_SHORT, Reaction.EMERGENCY, Recovery.AUTO,
              "the pilot reads 0 V (state E: pilot shorted to PE)",
              "the pilot reads a valid state again"),
    FaultSpec(FaultCode.PILOT_INVALID, Reaction.EMERGENCY, Recovery.AUTO,
              "the pilot reads outside every state window for 500 ms",
              "the pilot reads a valid state again"),
    FaultSpec(FaultCode.PROXIMITY_INVALID, Reaction.STOP, Recovery.AUTO,
              "the proximity resistance is outside every cable-coding band",
              "the proximity pilot reads a valid cable (or no cable) again"),
    FaultSpec(FaultCode.VENTILATION_NOT_AVAILABLE, Reaction.STOP, Recovery.UNPLUG,
              "the EV asks for ventilation (state D) and the site has none",
              "EV unplugged"),
    FaultSpec(FaultCode.OVERCURRENT_SOFT, Reaction.EMERGENCY, Recovery.UNPLUG,
              "a phase current above offered limit + 10 % + 0.5 A for 7 s (EVerest, IEC 61851-23 CC.10)",
              "EV unplugged"),
    FaultSpec(FaultCode.OVERCURRENT_HARD, Reaction.EMERGENCY, Recovery.UNPLUG,
              "a phase current above the hardware rating (board or cable) + 10 % + 0.5 A",
              "EV unplugged"),
    FaultSpec(FaultCode.OVERTEMPERATURE_DERATE, Reaction.DERATE, Recovery.AUTO,
              "a temperature at or above its derating threshold (half current; quarter at the middle step)",
              "every temperature 3 °C below the threshold of the step it is in"),
    FaultSpec(FaultCode.OVERTEMPERATURE_STOP, Reaction.STOP, Recovery.AUTO,
              "a temperature at or above its trip threshold",
              "every temperature 3 °C below its trip threshold (charging resumes derated)"),
    FaultSpec(FaultCode.TEMPERATURE_SENSOR, Reaction.STOP, Recovery.AUTO,
              "a temperature sensor reads open or shorted",
              "the sensor reads plausibly again"),
    FaultSpec(FaultCode.METER_COMM_LOST, Reaction.STOP, Recovery.AUTO,
              "the meter has not answered plausibly for 5 s (energy cannot be measured or billed)",
              "the meter answers again"),
    FaultSpec(FaultCode.METER_IMPLAUSIBLE, Reaction.STOP, Recovery.AUTO,
              "a meter reading failed a plausibility check (energy went backwards, jumped, stuck while power "
              "flows, or a read-to-clear register overflowed); the session is marked with a meter error",
              "readings are plausible against the last good one for 10 s"),
    FaultSpec(FaultCode.COPROCESSOR_COMM_LOST, Reaction.EMERGENCY, Recovery.AUTO,
              "the safety co-processor does not answer (its own fail-safe has opened the contactor)",
              "the co-processor answers again"),
    FaultSpec(FaultCode.CONVERTER_COMM_LOST, Reaction.EMERGENCY, Recovery.AUTO,
              "the DC converter's keep-alive is lost",
              "the converter answers again"),
    FaultSpec(FaultCode.HEARTBEAT_LOST, Reaction.EMERGENCY, Recovery.AUTO,
              "the co-processor reports that it lost the Pi's heartbeat and went fail-safe",
              "heartbeats flow again and the co-processor flag is cleared"),
    FaultSpec(FaultCode.LOCK_FAILED, Reaction.STOP, Recovery.AUTO,
              "the connector lock feedback does not reach the commanded position (locked or unlocked) "
              "within 1 s; the move is retried 3 times 2 s apart, then every 30 s",
              "the feedback follows the command again (an unlock failure must be able to clear: the "
              "cable cannot be unplugged while it lasts)"),
    FaultSpec(FaultCode.PHASE_SWITCH_FAILED, Reaction.STOP, Recovery.AUTO,
              "the 1/3-phase contactor's mirror contact disagrees with its command 200 ms after a move: "
              "the EV would draw on phases the energy manager did not count",
              "the mirror follows the command again"),
    FaultSpec(FaultCode.UNAUTHORISED_DISCHARGE, Reaction.EMERGENCY, Recovery.UNPLUG,
              "on a connector whose discharge is gated (SAE J3072), the meter shows the EV exporting more "
              "than 230 W for 5 s while discharge is not authorised (R152)",
              "EV unplugged"),
)  # fmt: skip

CATALOGUE: dict[FaultCode, FaultSpec] = {spec.code: spec for spec in _CATALOGUE}
assert set(CATALOGUE) == set(FaultCode), "every fault code needs a catalogue entry"


def spec(code: FaultCode) -> FaultSpec:
    return CATALOGUE[code]
