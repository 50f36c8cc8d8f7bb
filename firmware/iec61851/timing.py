"""Every IEC 61851-1 timing the connector obeys, in one place, each with the clause it comes from.

The standard itself is paywalled; the values and clause references are those that public
implementations encode (standards-facts.md 1.6, which gives the repository and file of each).
All values are seconds on the injected clock.
"""

from __future__ import annotations

# --- opening the supply ------------------------------------------------------------------------
#: EV goes C->B (Table A.6 sequence 7 / 8.2 "EV stops charging"), or is unplugged (sequence 2.x),
#: or the pilot goes to E or F: the supply must be off within 100 ms.
T_OPEN_MAX = 0.100
#: The EVSE withdrew PWM (X2 -> X1) but the EV stays in C (sequence 10.2): the EVSE forces the supply
#: off under load after 6 s. Until then it waits for the EV to reduce its current and go to B.
T_POWER_OFF_UNDER_LOAD_C1 = 6.0
#: Below this measured current the contactor may open at once after PWM withdrawal, without waiting
#: for the EV (OpenEVSE opens "when current < 1 A"; pyPLC opens only at about 0 A).
I_OPEN_WITHOUT_WAIT_A = 1.0

# --- closing the supply -------------------------------------------------------------------------
#: EV ready, B2 -> C2 (sequence 4): the EVSE "must enable power within 3 seconds".
T_CLOSE_MAX = 3.0

# --- pilot updates ------------------------------------------------------------------------------
#: The PWM duty may change at most every 5 s (EV must follow within 5 s); reductions required for
#: safety (thermal, fault, lower external limit) are applied at once.
T_PWM_MIN_UPDATE_INTERVAL = 5.0

# --- faults -------------------------------------------------------------------------------------
#: After a fault while charging, hold state F for at least 300 ms, then go to X1 (CX -> F -> C1/B1;
#: Table A.5, "minimum suggested by IEC 61851-1:2017").
T_STATE_F_AFTER_FAULT = 0.300
#: In state F the connector is unlocked after 5 s (EVerest IECStateMachine unlock_in_state_f_timeout).
T_UNLOCK_IN_F = 5.0

# --- wake-up ------------------------------------------------------------------------------------
#: An EV that stays in B2 for 30 s after the offer gets one E/F wake-up (A.5.3 legacy wake-up).
T_LEGACY_WAKEUP = 30.0
#: Length of the E/F wake-up pulse: at least 4 s (ISO 15118-3 Table 3, T_step_EF).
T_STEP_EF = 4.0
#: Pause in X1 after the E/F pulse before PWM resumes (EV READY practice: 500-1000 ms).
T_STAY_X1_AFTER_STEP_EF = 0.750

# --- pilot measurement --------------------------------------------------------------------------
#: How often the pilot is sampled and classified.
PILOT_SAMPLE_PERIOD = 0.010
#: A new pilot state must persist this long before it is accepted. Transitions that remove power
#: (to A, B, E, F or invalid) are confirmed fast, because the 100 ms opening budget includes the
#: detection ("filtering must not delay C->B detection by > 50 ms", EVerest bring-up); transitions
#: that ask for power (B -> C/D) are confirmed slowly against contact bounce and noise (OpenEVSE:
#: 250 ms, DELAY_STATE_TRANSITION).
PILOT_DEBOUNCE_POWER_DOWN = 0.020
PILOT_DEBOUNCE_POWER_UP = 0.250
#: A pilot level outside every window for this long is a pilot fault.
PILOT_INVALID_FAULT_AFTER = 0.500

# --- contactor feedback -------------------------------------------------------------------------
#: Time the mirror contact may take to follow the coil (typical relays: close 30-110 ms, open 100 ms;
#: EVerest YetiSimulator relay timing).
T_MIRROR_SETTLE = 0.200
