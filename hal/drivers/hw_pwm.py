"""Hardware PWM for gpiozero: pins backed by the kernel's sysfs PWM interface (``/sys/class/pwm``).

Why this exists: gpiozero's ``lgpio`` pin factory makes PWM in software (``lgpio.tx_pwm``) and takes the
duty as a whole percent, so a pilot duty such as 29.0 % vs 29.1 % (0.1 % ≈ 0.06 A, standards-facts.md
§1.4) cannot be produced, and the edges jitter with the scheduler. The SoC has a PWM block that makes
exact, jitter-free waveforms; Linux exposes it as ``/sys/class/pwm/pwmchipN`` (kernel
``drivers/pwm/core.c``, sysfs part). :class:`HardwarePwmFactory` wraps the board's normal pin factory and
hands out a :class:`SysfsPwmPin` for the GPIOs routed to that block, so gpiozero devices, and
:class:`hal.drivers.gpio_pilot.GpioPilotOutput` in particular, run unchanged with nanosecond duty steps.

sysfs interface (kernel ``drivers/pwm/core.c``; all times in nanoseconds, decimal ASCII):

* ``pwmchipN/npwm`` — number of channels; ``pwmchipN/export`` / ``unexport`` — write a channel number;
  ``export`` fails with ENODEV for a channel >= npwm and EBUSY when the channel is already exported or
  claimed by a kernel driver.
* ``pwmchipN/pwmM/period``, ``duty_cycle``, ``enable`` (0/1), ``polarity`` (``normal``/``inversed``).
  Every write applies the whole channel state, and the core refuses (EINVAL) any state whose period is
  0 or whose duty exceeds its period. Hence the write order here: period first on a fresh channel, and
  on a frequency change duty-then-period when the period shrinks, period-then-duty when it grows.
* The ``pwmM`` directory is created a little after ``export`` returns, and udev changes its owner and
  mode (for non-root access) a few ms later still; :class:`SysfsPwmPin` waits for both, bounded by
  ``export_timeout_s``.

Usual mappings (GPIO -> (pwmchip, channel)); the overlay line that routes the pin is in
docs/hardware-pwm.md:

* Pi 3 / Pi 4 / CM4 / Zero 2 W (BCM2835-family PWM block, one chip with two channels): GPIO12 and
  GPIO18 -> channel 0, GPIO13 and GPIO19 -> channel 1 (Raspberry Pi ``overlays/README``, ``pwm`` and
  ``pwm-2chan``: "PWM0: 12,4(Alt0) 18,2(Alt5) / PWM1: 13,4(Alt0) 19,2(Alt5)"). 12 and 18 share a channel,
  as do 13 and 19: only one pin of each pair can be used. See :data:`BCM2711_PWM_CHANNELS`.
* Pi 5 (RP1 southbridge, PWM0 with four channels, kernel ``drivers/pwm/pwm-rp1.c`` ``npwm = 4``):
  GPIO12 -> ch0, GPIO13 -> ch1 (alt0), GPIO18 -> ch2, GPIO19 -> ch3 (alt3) (RP1 peripherals datasheet
  GPIO function table; ``pinctrl -c rp1 funcs 12-13,18-19``). The chip's number depends on the kernel
  (``pwmchip2`` on some releases, ``pwmchip0`` on others), which is why the board file names the chip.
  See :func:`rp1_pwm_channels`.

Errors:

* The chip or channel is missing, ``export`` is refused, or the channel never appears:
  :class:`hal.errors.DeviceNotFound`, naming the sysfs path and saying which ``dtoverlay`` line or
  permission is needed.
* A later write fails (the kernel refuses a value, the chip went away): :class:`PwmSysfsError`, which is
  both a :class:`hal.errors.HalError` (so HAL callers such as ``GpioPilotOutput.set_pwm`` keep their
  "only HalError" contract) and a gpiozero :class:`~gpiozero.exc.PinPWMError` (so gpiozero code that
  catches pin errors, such as ``gpio_io.claim``, sees one).
* Misuse through the gpiozero API (input function, edge detection, pulls): the matching gpiozero
  ``PinError`` subclass.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from gpiozero import Factory, Pin
from gpiozero.exc import (
    GPIOPinInUse,
    PinEdgeDetectUnsupported,
    PinFixedPull,
    PinInvalidFunction,
    PinInvalidPin,
    PinInvalidState,
    PinPWMError,
    PinPWMFixedValue,
    PinSetInput,
)

from hal.errors import DeviceNotFound, HalError

log = logging.getLogger(__name__)

DEFAULT_SYSFS_ROOT = "/sys/class/pwm"
#: Upper bound for the ``pwmM`` directory to appear after ``export`` and for udev to open it up.
#: udev usually needs a few ms; a loaded boot can take longer.
EXPORT_TIMEOUT_S = 0.5
EXPORT_POLL_S = 0.005
#: Period written to a channel that has none yet (the kernel refuses any state with period 0). Any
#: period gives a steady level at duty 0 or duty = period; 1 ms is the pilot's own period (1 kHz,
#: standards-facts.md §1.3), so the pilot's first frequency write changes nothing.
DEFAULT_PERIOD_NS = 1_000_000
NS_PER_S = 1_000_000_000

#: :attr:`SysfsPwmPin.function` while this process does not drive the channel (never claimed, or
#: closed). The GPIO is still routed to the PWM block by the overlay; it is neither an input nor ours.
UNEXPORTED = "unexported"

#: Pi 3 / Pi 4 / CM4 / Zero 2 W: the BCM2835-family PWM block is pwmchip0 with channels 0 and 1
#: (overlays/README ``pwm``: "PWM0: 12,4(Alt0) 18,2(Alt5)", "PWM1: 13,4(Alt0) 19,2(Alt5)").
BCM2711_PWM_CHANNELS: Mapping[int, tuple[int, int]] = {12: (0, 0), 18: (0, 0), 13: (0, 1), 19: (0, 1)}

# The overlay line that routes a GPIO to the PWM block (overlays/README, ``pwm`` overlay: func 4 = Alt0
# for GPIO12/13, func 2 = Alt5 for GPIO18/19; the Pi 5's RP1 pinctrl maps the same legacy numbers to
# PWM0_CHAN0-3).
_OVERLAY_FUNC = {12: 4, 13: 4, 18: 2, 19: 2}
_ATTRIBUTES = ("period", "duty_cycle", "enable")
_HELP = "see docs/hardware-pwm.md"


def rp1_pwm_channels(chip: int) -> dict[int, tuple[int, int]]:
    """Pi 5: the RP1's PWM0 block as ``pwmchip<chip>``; GPIO12/13 are channels 0/1 (alt0), GPIO18/19
    channels 2/3 (alt3) (RP1 peripherals datasheet, GPIO function table)."""
    return {12: (chip, 0), 13: (chip, 1), 18: (chip, 2), 19: (chip, 3)}


def overlay_hint(gpio: int) -> str:
    """The config.txt line that routes ``gpio`` to the PWM block."""
    func = _OVERLAY_FUNC.get(gpio)
    if func is None:
        return (
            f"route GPIO{gpio} to a PWM channel with a dtoverlay in /boot/firmware/config.txt "
            f"(/boot/config.txt before Bookworm) and reboot; {_HELP}"
        )
    return (
        f"add 'dtoverlay=pwm,pin={gpio},func={func}' (or dtoverlay=pwm-2chan for two channels) to "
        f"/boot/firmware/config.txt (/boot/config.txt before Bookworm) and reboot; {_HELP}"
    )


class PwmSysfsError(HalError, PinPWMError):
    """A write to an exported PWM channel failed (the kernel refused the value, or the chip went away).

    Both a HAL error and a gpiozero pin error; see the module docstring."""


# ------------------------------------------------------------------------------------- file layer
class SysfsIO(Protocol):
    """How :class:`SysfsPwmPin` touches sysfs. The default is :class:`FileSysfs`; tests plug in a layer
    that checks every write the way the kernel would."""

    def read(self, path: str) -> str:
        """The file's content without surrounding whitespace."""
        ...

    def write(self, path: str, text: str) -> None:
        """Write ``text`` in a single ``write()``; raise ``OSError`` with the kernel's errno."""
        ...

    def exists(self, path: str) -> bool: ...

    def writable(self, path: str) -> bool: ...


class FileSysfs:
    """The real filesystem."""

    def read(self, path: str) -> str:
        with open(path, encoding="ascii") as f:
            return f.read().strip()

    def write(self, path: str, text: str) -> None:
        # One write() per value: a sysfs attribute store sees exactly what one write() hands it, and the
        # errno of a refused value comes back from that call (a buffered file would report it at close).
        # No O_CREAT: a missing attribute must fail (ENOENT), not become a new regular file.
        data = text.encode("ascii")
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
        if written != len(data):
            raise OSError(errno.EIO, f"short write ({written} of {len(data)} bytes)", path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def writable(self, path: str) -> bool:
        return os.access(path, os.W_OK)


# Channels driven by this process, across all factories: sysfs is process-wide, and a directory that
# already exists is otherwise taken to be a leftover from an earlier run (see SysfsPwmPin._export).
_ACTIVE: dict[tuple[str, int, int], SysfsPwmPin] = {}
_ACTIVE_LOCK = threading.Lock()


def _gpio_of(info: Any) -> int | None:
    name = getattr(info, "name", "")
    if isinstance(name, str) and name.startswith("GPIO") and name[4:].isdigit():
        return int(name[4:])
    return None


# -------------------------------------------------------------------------------------------- pin
class SysfsPwmPin(Pin):
    """One GPIO driven by a kernel PWM channel. Output only.

    * ``function = "output"`` (or ``output_with_state``) exports the channel, gives it a period if it
      has none, writes the duty for the requested level, then enables it — so the first thing the pin
      shows is the requested level, never a stale duty. :data:`UNEXPORTED` while not driven.
    * ``frequency = f`` switches to PWM and writes ``period = round(1e9 / f)`` ns, keeping the duty
      ratio; ``frequency = None`` (or 0) leaves PWM for a steady LOW, as gpiozero's own pins do.
    * ``state = v``: with PWM, ``duty_cycle = round(v * period)``; without, LOW (0) or HIGH (duty =
      period). Reading it back gives ``duty / period`` (exact: 290000/1000000 == 0.29).
    * ``close()``: duty 0 (the pilot's fail-safe state F), disable, unexport.

    ``io`` is the file layer (default: the real filesystem).
    """

    def __init__(
        self,
        factory: Any,
        info: Any,
        *,
        chip: int,
        channel: int,
        sysfs_root: str = DEFAULT_SYSFS_ROOT,
        io: SysfsIO | None = None,
        export_timeout_s: float = EXPORT_TIMEOUT_S,
    ) -> None:
        super().__init__()
        gpio = _gpio_of(info)
        if gpio is None:
            raise PinInvalidPin(f"{info!r} is not a GPIO pin")
        self._factory = factory
        self._info = info
        self.gpio = gpio
        self.chip = chip
        self.channel = channel
        self._io: SysfsIO = io if io is not None else FileSysfs()
        self._export_timeout_s = export_timeout_s
        self.chip_path = os.path.join(sysfs_root, f"pwmchip{chip}")
        self.channel_path = os.path.join(self.chip_path, f"pwm{channel}")
        self._key = (os.path.abspath(sysfs_root), chip, channel)
        self._device = f"GPIO{gpio} hardware PWM ({self.channel_path})"
        self._lock = threading.RLock()
        self._exported = False
        self._output = False
        self._pwm = False  # True while a frequency is set
        self._period = 0
        self._duty = 0
        self._level = 0.0  # the state last commanded; a frequency change keeps this ratio
        self._enabled = False
        self._polarity = "normal"

    def __repr__(self) -> str:
        return f"GPIO{self.gpio} (pwmchip{self.chip}/pwm{self.channel})"

    # ------------------------------------------------------------------ facts about the channel
    @property
    def factory(self) -> Any:
        return self._factory

    @property
    def period_ns(self) -> int:
        """Period last written (or read at export), in ns; 0 while not exported."""
        return self._period

    @property
    def duty_ns(self) -> int:
        return self._duty

    @property
    def enabled(self) -> bool:
        return self._enabled

    def _get_info(self) -> Any:
        return self._info

    # -------------------------------------------------------------------------------- function
    def _get_function(self) -> str:
        return "output" if self._output else UNEXPORTED

    def _set_function(self, value: str) -> None:
        if value != "output":
            raise PinInvalidFunction(
                f"{self!r} is routed to the hardware PWM block and is output-only; cannot make it {value!r}"
            )
        with self._lock:
            if not self._output:
                self._configure_output(0.0)

    def output_with_state(self, state: Any) -> None:
        with self._lock:
            level = self._checked_level(state)
            if not self._output:
                self._configure_output(level)
            else:
                self._set_state(level)

    def input_with_pull(self, pull: Any) -> None:
        self._set_function("input")

    # ----------------------------------------------------------------------------------- state
    def _get_state(self) -> float | bool:
        if not self._output or self._period == 0:
            return 0.0
        if self._pwm:
            return self._duty / self._period
        return self._duty >= self._period

    def _set_state(self, value: Any) -> None:
        with self._lock:
            if not self._output:
                raise PinSetInput(f"cannot set the state of {self!r}: it is not configured as an output")
            level = self._checked_level(value)
            if not self._pwm:
                level = 1.0 if level else 0.0
            self._write_duty(round(level * self._period))
            self._level = level

    def _checked_level(self, value: Any) -> float:
        try:
            level = float(value)
        except (TypeError, ValueError):
            raise PinInvalidState(f"invalid state {value!r} for {self!r}: expected 0..1") from None
        if not 0.0 <= level <= 1.0:  # also refuses NaN
            raise PinInvalidState(f"invalid state {value!r} for {self!r}: expected 0..1")
        return level

    # ------------------------------------------------------------------------------- frequency
    def _get_frequency(self) -> float | None:
        if not (self._output and self._pwm and self._period):
            return None
        return NS_PER_S / self._period

    def _set_frequency(self, value: Any) -> None:
        with self._lock:
            if value is None or value == 0:
                # gpiozero's convention for "stop PWM": the pin becomes a plain output at LOW.
                if self._output and self._pwm:
                    self._write_duty(0)
                    self._level = 0.0
                    self._pwm = False
                return
            if not self._output:
                raise PinPWMFixedValue(f"cannot start PWM on {self!r}: set its function to 'output' first")
            try:
                hz = float(value)
            except (TypeError, ValueError):
                raise PinPWMError(f"invalid PWM frequency {value!r} for {self!r}") from None
            if not (math.isfinite(hz) and hz > 0):
                raise PinPWMError(f"invalid PWM frequency {value!r} for {self!r}")
            period = round(NS_PER_S / hz)
            if period < 1:
                raise PinPWMError(f"{value} Hz is too fast for {self!r}: the period would be under 1 ns")
            self._change_period(period)
            self._pwm = True

    def _change_period(self, period: int) -> None:
        # Keep the commanded ratio (from the level, not the rounded old duty, so that rounding does not
        # build up over several changes), and keep duty <= period after every single write (the kernel
        # refuses anything else): shrink the duty before the period, grow the period before the duty.
        duty = min(round(self._level * period), period)
        if period < self._period:
            self._write_duty(duty)
            self._write_attr("period", period)
            self._period = period
        elif period > self._period:
            self._write_attr("period", period)
            self._period = period
            self._write_duty(duty)
        elif duty != self._duty:
            self._write_duty(duty)

    # ------------------------------------------------------------------ edges, pulls: not here
    def _get_pull(self) -> str:
        return "floating"

    def _set_pull(self, value: Any) -> None:
        raise PinFixedPull(f"{self!r} is a hardware PWM output; it has no pull resistor setting")

    def _get_bounce(self) -> None:
        return None

    def _set_bounce(self, value: Any) -> None:
        if value is not None:
            raise PinEdgeDetectUnsupported(f"{self!r} is a hardware PWM output; edge detection is not supported")

    def _get_edges(self) -> str:
        return "none"

    def _set_edges(self, value: Any) -> None:
        raise PinEdgeDetectUnsupported(f"{self!r} is a hardware PWM output; edge detection is not supported")

    def _get_when_changed(self) -> None:
        return None

    def _set_when_changed(self, value: Any) -> None:
        if value is not None:
            raise PinEdgeDetectUnsupported(f"{self!r} is a hardware PWM output; edge detection is not supported")

    # ------------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Duty 0 (pilot state F), disable, unexport; every step is tried, the first failure is raised
        afterwards."""
        with self._lock:
            if not self._exported:
                return
            failures: list[PwmSysfsError] = []
            if self._period:
                try:
                    self._write_duty(0)
                except PwmSysfsError as exc:
                    failures.append(exc)
            if self._enabled:
                try:
                    self._write_attr("enable", 0)
                    self._enabled = False
                except PwmSysfsError as exc:
                    failures.append(exc)
            try:
                self._io.write(os.path.join(self.chip_path, "unexport"), str(self.channel))
            except OSError as exc:
                # ENODEV: nothing is exported any more (kernel unexport_store), which is what we want.
                if exc.errno != errno.ENODEV:
                    failures.append(PwmSysfsError(self._device, f"unexport failed: {exc}"))
            self._forget()
        if failures:
            raise failures[0]

    def _forget(self) -> None:
        self._exported = self._output = self._pwm = self._enabled = False
        self._period = self._duty = 0
        self._level = 0.0
        with _ACTIVE_LOCK:
            if _ACTIVE.get(self._key) is self:
                del _ACTIVE[self._key]

    # ------------------------------------------------------------------------ export and set-up
    def _configure_output(self, level: float) -> None:
        if not self._exported:
            self._export()
        try:
            if self._period == 0:
                self._write_attr("period", DEFAULT_PERIOD_NS)  # duty is 0 here, so duty <= period holds
                self._period = DEFAULT_PERIOD_NS
            if self._polarity != "normal":
                # A leftover channel may be inverted. Change it only while disabled (older kernels
                # refuse polarity changes on a running channel with EBUSY).
                if self._enabled:
                    self._write_attr("enable", 0)
                    self._enabled = False
                self._write_attr("polarity", "normal")
                self._polarity = "normal"
            self._pwm = False
            self._level = 1.0 if level else 0.0
            self._write_duty(round(self._level * self._period))
            if not self._enabled:
                # Enable only now, with the wanted duty in place: a disabled channel's level is not
                # defined by the PWM API, an enabled one at duty 0 is LOW.
                self._write_attr("enable", 1)
                self._enabled = True
        except BaseException:
            self.close_quietly()
            raise
        self._output = True

    def close_quietly(self) -> None:
        """:meth:`close`, logging instead of raising (for clean-up after a failed set-up)."""
        try:
            self.close()
        except PwmSysfsError as exc:
            log.error("%s: clean-up after a failed set-up also failed: %s", self._device, exc)

    def _export(self) -> None:
        with _ACTIVE_LOCK:
            holder = _ACTIVE.get(self._key)
            if holder is not None and holder is not self:
                raise GPIOPinInUse(
                    f"{self!r}: pwmchip{self.chip} channel {self.channel} already drives {holder!r}; pins that "
                    "share one PWM channel cannot be used at the same time"
                )
            _ACTIVE[self._key] = self
        try:
            self._export_channel()
            self._read_channel()
        except BaseException:
            with _ACTIVE_LOCK:
                if _ACTIVE.get(self._key) is self:
                    del _ACTIVE[self._key]
            raise
        self._exported = True

    def _export_channel(self) -> None:
        if not self._io.exists(self.chip_path):
            raise DeviceNotFound(
                self.chip_path, f"no such PWM chip, so GPIO{self.gpio} has no hardware PWM: {overlay_hint(self.gpio)}"
            )
        npwm = self._read_int(os.path.join(self.chip_path, "npwm"), DeviceNotFound)
        if self.channel >= npwm:
            raise DeviceNotFound(
                self.chip_path,
                f"has {npwm} channel(s) (npwm), so channel {self.channel} for GPIO{self.gpio} does not exist. "
                "Wrong chip in the board file? On a Pi 5 the RP1 PWM block is pwmchip0 or pwmchip2 "
                f"depending on the kernel ('ls -l {os.path.dirname(self.chip_path)}'); {_HELP}",
            )
        if self._io.exists(self.channel_path):
            # Exported, but not by this process (see _ACTIVE): most likely left over by an earlier run
            # that crashed before unexporting. Take it over; _configure_output resets it.
            log.warning("%s: channel already exported (left over from an earlier run?); taking it over", self._device)
            self._wait_for_attributes()
            return
        try:
            self._io.write(os.path.join(self.chip_path, "export"), str(self.channel))
        except OSError as exc:
            raise DeviceNotFound(self.chip_path, self._export_refusal(exc)) from exc
        try:
            self._wait_for_attributes()
        except DeviceNotFound:
            # Do not leave a half-usable export behind for the next run to trip over.
            try:
                self._io.write(os.path.join(self.chip_path, "unexport"), str(self.channel))
            except OSError as exc:
                log.warning("%s: unexport after a failed export also failed: %s", self._device, exc)
            raise

    def _export_refusal(self, exc: OSError) -> str:
        what = f"cannot export channel {self.channel} for GPIO{self.gpio}: {exc}"
        if exc.errno == errno.EBUSY:
            return (
                f"{what}. The channel is claimed by a kernel driver (a pwm-fan or pwm-backlight overlay) or by "
                f"another program; remove that user. {_HELP}"
            )
        if exc.errno in (errno.EACCES, errno.EPERM):
            return f"{what}. Run as root or install the udev rule that opens the PWM class to the gpio group; {_HELP}"
        if exc.errno == errno.ENODEV:
            return f"{what}. The chip has no such channel; {overlay_hint(self.gpio)}"
        return f"{what}; {_HELP}"

    def _wait_for_attributes(self) -> None:
        # The kernel creates pwmM/ a little after export returns, and udev fixes its owner and mode
        # after that; poll both, within a bounded time.
        paths = [os.path.join(self.channel_path, name) for name in _ATTRIBUTES]
        deadline = time.monotonic() + self._export_timeout_s
        while True:
            missing = [p for p in paths if not self._io.exists(p)]
            locked = [] if missing else [p for p in paths if not self._io.writable(p)]
            if not missing and not locked:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(EXPORT_POLL_S)
        if missing:
            raise DeviceNotFound(
                self.channel_path,
                f"did not appear within {self._export_timeout_s} s after exporting channel {self.channel}; {_HELP}",
            )
        raise DeviceNotFound(
            self.channel_path,
            f"{', '.join(os.path.basename(p) for p in locked)} not writable within {self._export_timeout_s} s "
            f"of export: run as root or install the udev rule for the gpio group; {_HELP}",
        )

    def _read_channel(self) -> None:
        self._period = self._read_int(os.path.join(self.channel_path, "period"), PwmSysfsError)
        self._duty = self._read_int(os.path.join(self.channel_path, "duty_cycle"), PwmSysfsError)
        self._enabled = self._read_int(os.path.join(self.channel_path, "enable"), PwmSysfsError) == 1
        polarity_path = os.path.join(self.channel_path, "polarity")
        # drivers/pwm/core.c always creates the file; a tree without it is treated as normal polarity.
        self._polarity = self._read_text(polarity_path, PwmSysfsError) if self._io.exists(polarity_path) else "normal"

    # -------------------------------------------------------------------------------- raw I/O
    def _write_duty(self, duty: int) -> None:
        self._write_attr("duty_cycle", duty)
        self._duty = duty

    def _write_attr(self, name: str, value: int | str) -> None:
        path = os.path.join(self.channel_path, name)
        try:
            self._io.write(path, str(value))
        except OSError as exc:
            raise PwmSysfsError(self._device, f"writing {value!r} to {name} failed: {exc}") from exc

    def _read_text(self, path: str, error: type[HalError]) -> str:
        try:
            return self._io.read(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise error(self._device, f"cannot read {path}: {exc}") from exc

    def _read_int(self, path: str, error: type[HalError]) -> int:
        text = self._read_text(path, error)
        try:
            value = int(text)
        except ValueError:
            raise error(self._device, f"{path} holds {text!r}, not a whole number") from None
        if value < 0:
            raise error(self._device, f"{path} holds {text!r}, not a whole number")
        return value


# ---------------------------------------------------------------------------------------- factory
class HardwarePwmFactory(Factory):
    """A gpiozero pin factory: :class:`SysfsPwmPin` for the GPIOs in ``pwm_channels``, ``base`` for the
    rest.

    ``pwm_channels`` maps a BCM GPIO number to ``(pwmchip, channel)``: :data:`BCM2711_PWM_CHANNELS` on
    a Pi 3/4/CM4/Zero 2 W, :func:`rp1_pwm_channels` on a Pi 5, or only the pins the board uses. Every
    other pin, pin reservations, ticks, SPI and board info come from ``base`` (an ``LGPIOFactory`` on a
    Pi, ``MockFactory`` in tests); attributes this class does not define (``MockFactory.reset``,
    ``LGPIOFactory.chip``) are looked up on ``base`` too.

    The PWM GPIOs must never reach ``base``: an lgpio pin claims its line as a GPIO, which switches the
    pin's mux away from the PWM block. ``close()`` closes the PWM pins, then ``base``.
    """

    def __init__(
        self,
        base: Factory,
        *,
        pwm_channels: Mapping[int, tuple[int, int]],
        sysfs_root: str = DEFAULT_SYSFS_ROOT,
        io: SysfsIO | None = None,
        export_timeout_s: float = EXPORT_TIMEOUT_S,
    ) -> None:
        super().__init__()
        self._base = base
        # Share the base's reservations, as gpiozero's LocalPiFactory shares its own: one pin, one owner,
        # whichever factory object the device was built with.
        self._reservations = base._reservations
        self._res_lock = base._res_lock
        self._sysfs_root = sysfs_root
        self._io = io
        if not export_timeout_s > 0:
            raise ValueError(f"export_timeout_s must be > 0, not {export_timeout_s!r}")
        self._export_timeout_s = export_timeout_s
        self._channels: dict[int, tuple[int, int]] = {}
        for gpio, target in pwm_channels.items():
            self._channels[self._checked_gpio(gpio)] = self._checked_target(gpio, target)
        self._pins: dict[int, SysfsPwmPin] = {}
        self._pins_lock = threading.Lock()

    def _checked_gpio(self, gpio: Any) -> int:
        if isinstance(gpio, bool) or not isinstance(gpio, int):
            raise ValueError(f"pwm_channels: keys are BCM GPIO numbers, not {gpio!r}")
        infos = [info for _header, info in self._base.board_info.find_pin(gpio)]
        if not infos or _gpio_of(infos[0]) != gpio:
            raise ValueError(f"pwm_channels: GPIO{gpio} is not a GPIO on this board")
        return gpio

    @staticmethod
    def _checked_target(gpio: int, target: Any) -> tuple[int, int]:
        ok = (
            isinstance(target, tuple | list)
            and len(target) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in target)
        )
        if not ok:
            raise ValueError(f"pwm_channels: GPIO{gpio} must map to (pwmchip, channel), two ints >= 0, not {target!r}")
        return int(target[0]), int(target[1])

    @property
    def base(self) -> Factory:
        return self._base

    @property
    def pwm_channels(self) -> dict[int, tuple[int, int]]:
        return dict(self._channels)

    def __getattr__(self, name: str) -> Any:
        base = self.__dict__.get("_base")
        if base is None or name.startswith("_"):
            raise AttributeError(name)
        return getattr(base, name)

    # ------------------------------------------------------------------------------------ pins
    def pin(self, name: Any) -> Any:
        for _header, info in self._base.board_info.find_pin(name):
            gpio = _gpio_of(info)
            if gpio is not None and gpio in self._channels:
                with self._pins_lock:
                    pin = self._pins.get(gpio)
                    if pin is None:
                        chip, channel = self._channels[gpio]
                        pin = SysfsPwmPin(
                            self,
                            info,
                            chip=chip,
                            channel=channel,
                            sysfs_root=self._sysfs_root,
                            io=self._io,
                            export_timeout_s=self._export_timeout_s,
                        )
                        self._pins[gpio] = pin
                    return pin
            break
        return self._base.pin(name)

    def reserve_pins(self, requester: Any, *names: Any) -> None:
        self._base.reserve_pins(requester, *names)

    def release_pins(self, reserver: Any, *names: Any) -> None:
        self._base.release_pins(reserver, *names)

    def release_all(self, reserver: Any) -> None:
        self._base.release_all(reserver)

    def spi(self, **spi_args: Any) -> Any:
        return self._base.spi(**spi_args)

    def ticks(self) -> Any:
        return self._base.ticks()

    def ticks_diff(self, later: Any, earlier: Any) -> float:
        return self._base.ticks_diff(later, earlier)

    def _get_board_info(self) -> Any:
        return self._base.board_info

    def close(self) -> None:
        """Close every PWM pin (duty 0, disable, unexport), then ``base``; the first failure is raised
        after all of them were tried."""
        failures: list[BaseException] = []
        with self._pins_lock:
            pins = list(self._pins.values())
        for pin in pins:
            try:
                pin.close()
            except PwmSysfsError as exc:
                failures.append(exc)
        self._base.close()
        if failures:
            raise failures[0]
