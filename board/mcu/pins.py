# The co-processor board's wiring (an RP2040 on the pi-mcu-ac carrier): GPIO numbers and the pilot
# front end's scaling. Change this file, not the code, for another carrier board.

UART_ID = 0  # UART0 to the Pi: GP0 TX -> Pi GPIO15 (RXD), GP1 RX <- Pi GPIO14 (TXD)
UART_TX = 0
UART_RX = 1
UART_BAUD = 115200  # docs/mcu-protocol.md section 1

CP_PWM = 2  # pilot generator: GP2 -> op-amp stage, high = +12 V, low = -12 V (PWM slice 1, channel A)
CP_E = -1  # GP that clamps the pilot to 0 V (state E); -1: not fitted (no STATE_E capability)
CP_ADC = 26  # GP26 / ADC0: the pilot through the divider below

COIL = 3  # contactor coil driver (high = energised)
MIRROR = 4  # auxiliary (mirror) contact to GND, pull-up: low = contacts closed
LOCK = 5  # connector lock actuator (high = lock); -1 when the socket has no lock
LOCK_FEEDBACK = 6  # lock feedback switch to GND, pull-up: low = locked
RCD_TRIP = 7  # RDC-DD / RCD trip output, active high
RCD_TEST = 8  # RDC-DD test winding driver (high = test current on)
PP_ADC = 27  # GP27 / ADC1: the proximity pilot, pulled up to the ADC reference; -1 when the Pi reads PP
PP_PULLUP_OHM = 1000  # the PP pull-up: v_pp = vref * Rc / (Rc + pull-up), Rc the cable's coding resistor
LED = 25  # on-board LED: blinks while the session with the Pi is open

#: Pilot sense: v_adc = 1.65 V + v_pilot / 8 (a +/-13.2 V span onto the 0..3.3 V ADC), so
#: v_pilot_mv = (adc_mv - 1650) * 8.
ADC_VREF_MV = 3300
CP_OFFSET_MV = 1650
CP_GAIN = 8
#: Samples are taken at least this far from a PWM edge (standards-facts.md 1.3: never in the first 10 us
#: after an edge, where the EV's capacitance and the cable ring).
CP_EDGE_GUARD_US = 20
#: The pilot PWM frequency (IEC 61851-1: 1 kHz +/- 0.5 %).
CP_FREQ_HZ = 1000
