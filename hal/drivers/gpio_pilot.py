"""Control pilot generator driven straight from one Pi PWM pin through a ±12 V op-amp stage.

The pin's logic level is the pilot's polarity: HIGH gives +12 V, LOW gives -12 V. So

* PWM (x2): 1 kHz (:data:`hal.types.PILOT_PWM_FREQUENCY_HZ`, IEC 61851-1: 980-1020 Hz,
  standards-facts.md §1.3) with gpiozero ``value = duty_permille / 1000``;
* X1: steady HIGH (``value = 1.0``);
* F: steady LOW (``value = 0.0``);
* E (0 V) cannot come out of a ±12 V push-pull stage. It needs an extra switch (relay or transistor)
  that clamps the pilot to PE; pass its pin as ``e_pin``. Without it :meth:`set_e` raises
  :class:`hal.errors.UnsupportedOperation`.

Why the driver starts in F and ``close()`` returns to F: state F means "EVSE not available"
(standards-facts.md §1.2), which is the truth until the firmware has checked its RCD, contactor and
pilot and decides to offer charging; an EV that sees F will not try to charge and does not mistake
the station for a ready one (X1 = +12 V would announce state A, "standby, EVSE ready"). F is also
what the stage shows when the Pi does not drive the pin at all: GPIO 12/13/18/19 come out of reset as
inputs with the SoC's default pull-down (BCM2835 ARM Peripherals §6.2, "Pull" column of the
alternate-function table: GPIO 9-27 pull low), and a board must keep a pull-down on the op-amp
input so that a crashed, rebooting or released Pi still gives F. Software start state and hardware
fail state are then the same, and the firmware's state machine never sees a pilot it did not
command. IEC 61851-1 also uses F after a fault (≥ 300 ms, standards-facts.md §1.6).

Pins: only the SoC's hardware-PWM-capable pins are accepted, GPIO 12, 13, 18 and 19 (PWM0/PWM1 on
BCM2711; PWM0 channels 0-3 on the Pi 5's RP1). Note that 12/18 and 13/19 share a channel on
BCM2711, so only one pin of each pair can carry an independent signal.

Timing caveat (ARCHITECTURE.md "Safety below Python's jitter": a board that drives the pilot from Pi
GPIO must say so in its board file): gpiozero's ``lgpio`` pin factory generates PWM with
``lgpio.tx_pwm``, which is *software-timed* and takes the duty as a whole percent (it truncates
``value * 100``, so 0.1 % steps are lost and, for example, 290 ‰ becomes 28 % through float
rounding). On a real charger the board builder therefore hands this driver
:class:`hal.drivers.hw_pwm.HardwarePwmFactory`, whose pilot pin is the SoC's hardware PWM block
(``/sys/class/pwm``, the board file's ``pwm_chip``/``pwm_channel``, docs/hardware-pwm.md), giving exact
0.1 % steps; or the board moves the pilot to the MCU co-processor.

The simulator follows the pin itself (:class:`hal.sim.gpio_wiring.PilotWiring` reads the mock pin's
level and frequency), so the driver needs no callback hook for it.
"""

from __future__ import annotations

from typing import Any

from gpiozero import PWMOutputDevice

from hal.drivers.gpio_io import OutputLine, claim
from hal.errors import DeviceNotFound, UnsupportedOperation
from hal.types import PILOT_DUTY_MAX_PERMILLE, PILOT_PWM_FREQUENCY_HZ, PilotMode

#: BCM GPIOs that can carry a hardware PWM channel (BCM2711 ARM Peripherals, GPIO alternate-function
#: table: PWM0_0/PWM0_1 on GPIO 12/13 (alt 0) and 18/19 (alt 5); the same four pins on the Pi 5's RP1).
HARDWARE_PWM_PINS = frozenset({12, 13, 18, 19})


class GpioPilotOutput:
    """:class:`hal.interfaces.PilotOutput` on one hardware-PWM pin (plus an optional E clamp)."""

    def __init__(
        self,
        name: str,
        *,
        pwm_pin: int,
        e_pin: int | None = None,
        e_active_high: bool = True,
        pin_factory: Any,
    ) -> None:
        self.name = name
        if isinstance(pwm_pin, bool) or not isinstance(pwm_pin, int) or pwm_pin not in HARDWARE_PWM_PINS:
            raise ValueError(
                f"{name}: pilot PWM must be on a hardware PWM pin "
                f"(GPIO {', '.join(map(str, sorted(HARDWARE_PWM_PINS)))}), not {pwm_pin!r}"
            )
        if e_pin is not None and e_pin == pwm_pin:
            raise ValueError(f"{name}: the state-E clamp needs its own pin, not GPIO{pwm_pin}")
        self._released = False
        # Start in F: steady LOW at 1 kHz carrier, so later X1/PWM changes only write the value.
        self._pwm: PWMOutputDevice = claim(
            name,
            "pilot PWM",
            pwm_pin,
            lambda: PWMOutputDevice(
                pwm_pin,
                active_high=True,
                initial_value=0.0,
                frequency=PILOT_PWM_FREQUENCY_HZ,
                pin_factory=pin_factory,
            ),
        )
        self._e: OutputLine | None = None
        if e_pin is not None:
            try:
                self._e = OutputLine(
                    name, "pilot state-E clamp", e_pin, active_high=e_active_high, pin_factory=pin_factory
                )
            except BaseException:
                self._pwm.close()
                raise
        self._mode = PilotMode.F
        self._duty = 0

    # ------------------------------------------------------------------ state
    @property
    def mode(self) -> PilotMode:
        return self._mode

    @property
    def duty_permille(self) -> int:
        """PWM duty in ‰; 1000 in X1 and 0 in F and E, matching the level on the pin."""
        return self._duty

    @property
    def supports_state_e(self) -> bool:
        return self._e is not None

    @property
    def frequency_hz(self) -> float | None:
        return None if self._released else self._pwm.frequency

    # --------------------------------------------------------------- commands
    async def set_pwm(self, duty_permille: int) -> None:
        if (
            isinstance(duty_permille, bool)
            or not isinstance(duty_permille, int)
            or not 0 < duty_permille < PILOT_DUTY_MAX_PERMILLE
        ):
            raise ValueError(
                f"{self.name}: PWM duty must be an integer 1..999 per mille, got {duty_permille!r}"
                " (use set_f() for 0 and set_x1() for 1000)"
            )
        self._drive(duty_permille / PILOT_DUTY_MAX_PERMILLE, PilotMode.PWM, duty_permille)

    async def set_x1(self) -> None:
        self._drive(1.0, PilotMode.X1, PILOT_DUTY_MAX_PERMILLE)

    async def set_f(self) -> None:
        self._drive(0.0, PilotMode.F, 0)

    async def set_e(self) -> None:
        self._check_open()
        if self._e is None:
            raise UnsupportedOperation(
                self.name, "state E (0 V) needs a pilot clamp output; this board has none (e_pin)"
            )
        # Clamp first, then park the generator in F underneath, so that releasing the clamp later
        # can never expose a stale +12 V or PWM.
        self._e.set(True)
        self._pwm.value = 0.0
        self._mode, self._duty = PilotMode.E, 0

    def _drive(self, value: float, mode: PilotMode, duty: int) -> None:
        self._check_open()
        # Set the generator first, then lift the clamp: E goes straight to the new state.
        self._pwm.value = value
        if self._e is not None:
            self._e.set(False)
        self._mode, self._duty = mode, duty

    def _check_open(self) -> None:
        if self._released:
            raise DeviceNotFound(self.name, "driver closed; the pilot pin is no longer held")

    # ------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Drive F, lift the E clamp and free the pins (the board's pull-down keeps F, see module doc)."""
        if self._released:
            return
        self._pwm.value = 0.0
        if self._e is not None:
            self._e.set(False)
            self._e.close()
        self._pwm.close()
        self._mode, self._duty = PilotMode.F, 0
        self._released = True

    release = close
