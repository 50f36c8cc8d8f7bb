"""HardwarePwmFactory / SysfsPwmPin against a fake sysfs PWM tree that refuses what the kernel refuses.

The fake (:class:`KernelLikeSysfs`) is the real :class:`FileSysfs` on a tree under tmp_path plus the checks
of the kernel's ``drivers/pwm/core.c``: ``export`` creates ``pwmM/`` (ENODEV past npwm, EBUSY when taken),
``unexport`` removes it (ENODEV when not exported), and every attribute store applies the whole channel state,
refused with EINVAL when period is 0 or duty exceeds period. A write order mistake therefore fails the test
with the same error a Pi would give.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from gpiozero import DigitalInputDevice, DigitalOutputDevice, PWMOutputDevice
from gpiozero.exc import GPIOPinInUse, PinEdgeDetectUnsupported, PinError, PinInvalidFunction
from gpiozero.pins.mock import MockFactory, MockPin, MockPWMPin
from hypothesis import given, settings
from hypothesis import strategies as st

from hal.drivers.gpio_pilot import GpioPilotOutput
from hal.drivers.hw_pwm import (
    BCM2711_PWM_CHANNELS,
    DEFAULT_PERIOD_NS,
    UNEXPORTED,
    FileSysfs,
    HardwarePwmFactory,
    PwmSysfsError,
    SysfsPwmPin,
    rp1_pwm_channels,
)
from hal.errors import DeviceNotFound, HalError
from hal.types import PilotMode

PWM_PIN = 18


@dataclass(frozen=True)
class ChannelState:
    period: int = 0
    duty: int = 0
    enabled: bool = False
    polarity: str = "normal"


class KernelLikeSysfs(FileSysfs):
    """Real files under ``root``, kernel rules on top. ``chips`` maps chip number -> npwm."""

    def __init__(self, root: Path, chips: dict[int, int]) -> None:
        self.root = root
        self.npwm = dict(chips)
        self.channels: dict[tuple[int, int], ChannelState] = {}
        self.busy: set[tuple[int, int]] = set()  # claimed by a kernel driver
        self.export_errno: int | None = None
        self.fail: dict[str, int] = {}  # attribute name -> errno for every write to it
        self.appear_after_polls = 0  # exists() calls before an exported pwmM/ shows up
        self.locked_polls = 0  # writable() calls answered False after pwmM/ shows up (udev not done)
        self._pending: dict[tuple[int, int], int] = {}
        self.log: list[tuple[str, str]] = []  # accepted writes: (path relative to root, text)
        self.history: list[ChannelState] = []  # channel state after every accepted attribute write
        for chip, npwm in chips.items():
            d = root / f"pwmchip{chip}"
            d.mkdir(parents=True)
            (d / "export").write_text("")
            (d / "unexport").write_text("")
            (d / "npwm").write_text(f"{npwm}\n")

    # -- helpers for tests
    def attr(self, chip: int, channel: int, name: str) -> str:
        return (self.root / f"pwmchip{chip}" / f"pwm{channel}" / name).read_text().strip()

    def exported(self, chip: int, channel: int) -> bool:
        return (self.root / f"pwmchip{chip}" / f"pwm{channel}").is_dir()

    def preexport(self, chip: int, channel: int, state: ChannelState) -> None:
        """A channel left exported by an earlier process."""
        self.channels[(chip, channel)] = state
        self._materialise(chip, channel)

    # -- the file layer
    def exists(self, path: str) -> bool:
        for key in list(self._pending):
            self._pending[key] -= 1
            if self._pending[key] <= 0:
                del self._pending[key]
                self._materialise(*key)
        return super().exists(path)

    def writable(self, path: str) -> bool:
        if self.locked_polls > 0:
            self.locked_polls -= 1
            return False
        return super().writable(path)

    def write(self, path: str, text: str) -> None:
        parts = Path(path).relative_to(self.root).parts
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        chip = int(parts[0].removeprefix("pwmchip"))
        if parts[1:] == ("export",):
            channel = self._uint(text)
            if self.export_errno is not None:
                raise OSError(self.export_errno, os.strerror(self.export_errno))
            if channel >= self.npwm[chip]:
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
            if (chip, channel) in self.busy or (chip, channel) in self.channels:
                raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
            super().write(path, text)
            self.channels[(chip, channel)] = ChannelState()
            if self.appear_after_polls:
                self._pending[(chip, channel)] = self.appear_after_polls
            else:
                self._materialise(chip, channel)
        elif parts[1:] == ("unexport",):
            channel = self._uint(text)
            if (chip, channel) not in self.channels:
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
            super().write(path, text)
            del self.channels[(chip, channel)]
            self._pending.pop((chip, channel), None)
            d = self.root / parts[0] / f"pwm{channel}"
            if d.is_dir():
                for f in d.iterdir():
                    f.unlink()
                d.rmdir()
        else:
            channel = int(parts[1].removeprefix("pwm"))
            name = parts[2]
            if name in self.fail:
                raise OSError(self.fail[name], os.strerror(self.fail[name]))
            st_ = self.channels[(chip, channel)]
            if name == "period":
                st_ = replace(st_, period=self._uint(text))
            elif name == "duty_cycle":
                st_ = replace(st_, duty=self._uint(text))
            elif name == "enable":
                value = self._uint(text)
                if value not in (0, 1):
                    raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
                st_ = replace(st_, enabled=bool(value))
            elif name == "polarity":
                if text.strip() not in ("normal", "inversed"):
                    raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
                st_ = replace(st_, polarity=text.strip())
            else:
                raise OSError(errno.EACCES, os.strerror(errno.EACCES))
            # drivers/pwm/core.c __pwm_apply(): "!state->period || state->duty_cycle > state->period"
            if st_.period == 0 or st_.duty > st_.period:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            self.channels[(chip, channel)] = st_
            super().write(path, text)
            self.history.append(st_)
        self.log.append(("/".join(parts), text))

    @staticmethod
    def _uint(text: str) -> int:
        try:
            value = int(text.strip(), 0)
        except ValueError:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL)) from None
        if value < 0:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return value

    def _materialise(self, chip: int, channel: int) -> None:
        s = self.channels[(chip, channel)]
        d = self.root / f"pwmchip{chip}" / f"pwm{channel}"
        d.mkdir(exist_ok=True)
        (d / "period").write_text(f"{s.period}\n")
        (d / "duty_cycle").write_text(f"{s.duty}\n")
        (d / "enable").write_text(f"{int(s.enabled)}\n")
        (d / "polarity").write_text(f"{s.polarity}\n")


@dataclass
class Rig:
    kernel: KernelLikeSysfs
    base: MockFactory
    factory: HardwarePwmFactory


def _rig(
    root: Path,
    *,
    chips: dict[int, int] | None = None,
    channels: dict[int, tuple[int, int]] | None = None,
    **kwargs: Any,
) -> Rig:
    kernel = KernelLikeSysfs(root, {0: 2} if chips is None else chips)
    base = MockFactory(pin_class=MockPWMPin)
    factory = HardwarePwmFactory(
        base,
        pwm_channels={PWM_PIN: (0, 0)} if channels is None else channels,
        sysfs_root=str(root),
        io=kernel,
        **kwargs,
    )
    return Rig(kernel, base, factory)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = _rig(tmp_path)
    yield r
    r.factory.close()
    r.base.reset()


def _pilot(r: Rig, **kwargs: Any) -> GpioPilotOutput:
    return GpioPilotOutput("cp0", pwm_pin=PWM_PIN, pin_factory=r.factory, **kwargs)


def _period(r: Rig) -> int:
    return int(r.kernel.attr(0, 0, "period"))


def _duty(r: Rig) -> int:
    return int(r.kernel.attr(0, 0, "duty_cycle"))


def _claim_error(r: Rig, pattern: str) -> str:
    """The DeviceNotFound text of a pilot that cannot be built.

    gpiozero keeps the pin reservation of a device whose constructor failed until that half-built object
    is garbage-collected (the traceback refers to it), so drop the traceback and collect before the next
    claim."""
    with pytest.raises(DeviceNotFound, match=pattern) as caught:
        _pilot(r)
    text = str(caught.value)
    del caught
    gc.collect()
    return text


def _attr_writes(r: Rig) -> list[tuple[str, str]]:
    return [(path.rsplit("/", 1)[-1], text) for path, text in r.kernel.log]


# ------------------------------------------------------------------------------------- the pilot
def test_pilot_starts_in_f_at_1khz_without_a_glitch(rig: Rig) -> None:
    pilot = _pilot(rig)
    assert pilot.mode is PilotMode.F and pilot.frequency_hz == 1000
    assert _period(rig) == 1_000_000 and _duty(rig) == 0
    assert rig.kernel.attr(0, 0, "enable") == "1" and rig.kernel.attr(0, 0, "polarity") == "normal"
    # export, a period (the kernel refuses everything while it is 0), duty 0, and only then enable.
    assert _attr_writes(rig)[:4] == [("export", "0"), ("period", "1000000"), ("duty_cycle", "0"), ("enable", "1")]
    # The channel was never enabled with any duty above 0 on the way up: the pilot never left F.
    assert all(s.duty == 0 for s in rig.kernel.history if s.enabled)
    pin = rig.factory.pin(PWM_PIN)
    assert isinstance(pin, SysfsPwmPin) and pin.function == "output" and pin.frequency == 1000


def test_every_pilot_duty_is_exact_to_the_nanosecond(rig: Rig) -> None:
    pilot = _pilot(rig)
    pin = rig.factory.pin(PWM_PIN)
    for permille in range(1, 1000):
        asyncio.run(pilot.set_pwm(permille))
        # 0.1 % of a 1 ms period is 1000 ns: every step the standard needs is a whole number of ns.
        assert _duty(rig) == permille * 1000, permille
        assert _period(rig) == 1_000_000
        assert pin.state == permille / 1000
    assert rig.kernel.attr(0, 0, "enable") == "1"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.integers(1, 999), st.sampled_from(["X1", "F"])), min_size=1, max_size=12))
def test_any_command_sequence_leaves_the_exact_duty(tmp_path_factory: pytest.TempPathFactory, cmds: list[Any]) -> None:
    r = _rig(tmp_path_factory.mktemp("pwm"))
    try:
        pilot = _pilot(r)
        for cmd in cmds:
            if cmd == "X1":
                asyncio.run(pilot.set_x1())
                expected = 1_000_000
            elif cmd == "F":
                asyncio.run(pilot.set_f())
                expected = 0
            else:
                asyncio.run(pilot.set_pwm(cmd))
                expected = cmd * 1000
            assert _duty(r) == expected and _period(r) == 1_000_000
            assert r.kernel.attr(0, 0, "enable") == "1"
            assert pilot.duty_permille * 1000 == expected
    finally:
        r.factory.close()


def test_x1_is_duty_equal_to_period_and_f_is_zero(rig: Rig) -> None:
    pilot = _pilot(rig)
    asyncio.run(pilot.set_pwm(533))
    asyncio.run(pilot.set_x1())
    assert _duty(rig) == _period(rig) == 1_000_000
    assert rig.factory.pin(PWM_PIN).state == 1.0
    asyncio.run(pilot.set_f())
    assert _duty(rig) == 0 and rig.kernel.attr(0, 0, "enable") == "1"


def test_close_drives_f_then_disables_then_unexports(rig: Rig) -> None:
    pilot = _pilot(rig)
    asyncio.run(pilot.set_pwm(267))
    rig.kernel.log.clear()
    pilot.close()
    writes = _attr_writes(rig)
    assert writes[-2:] == [("enable", "0"), ("unexport", "0")]
    assert ("duty_cycle", "0") in writes and all(w == ("duty_cycle", "0") for w in writes[:-2])
    assert not rig.kernel.exported(0, 0)
    pin = rig.factory.pin(PWM_PIN)
    assert pin.function == UNEXPORTED and pin.frequency is None and pin.state == 0.0
    # The channel can be claimed again afterwards (a restarted driver), starting in F once more.
    again = _pilot(rig)
    assert rig.kernel.exported(0, 0) and _duty(rig) == 0 and again.mode is PilotMode.F


def test_factory_close_unexports_a_pin_still_in_use(tmp_path: Path) -> None:
    r = _rig(tmp_path)
    pilot = _pilot(r)
    asyncio.run(pilot.set_x1())
    r.factory.close()
    assert not r.kernel.exported(0, 0)
    assert _attr_writes(r)[-3:] == [("duty_cycle", "0"), ("enable", "0"), ("unexport", "0")]


# ------------------------------------------------------------------------------ frequency changes
@settings(max_examples=60, deadline=None)
@given(
    value=st.integers(0, 1000).map(lambda n: n / 1000),
    freqs=st.lists(st.sampled_from([50, 100, 500, 980, 1000, 1020, 2000, 10_000, 25_000]), min_size=1, max_size=6),
)
def test_frequency_changes_never_put_duty_above_period(
    tmp_path_factory: pytest.TempPathFactory, value: float, freqs: list[int]
) -> None:
    r = _rig(tmp_path_factory.mktemp("pwm"))
    try:
        dev = PWMOutputDevice(PWM_PIN, frequency=1000, initial_value=value, pin_factory=r.factory)
        for f in freqs:
            dev.frequency = f  # the fake raises EINVAL (-> PwmSysfsError) on any duty > period
            period = round(1e9 / f)
            assert _period(r) == period
            assert _duty(r) == round(value * period)
            assert all(s.duty <= s.period for s in r.kernel.history)
        dev.close()
    finally:
        r.factory.close()


def test_shrinking_period_writes_duty_first_and_growing_writes_period_first(rig: Rig) -> None:
    dev = PWMOutputDevice(PWM_PIN, frequency=1000, initial_value=0.8, pin_factory=rig.factory)
    rig.kernel.log.clear()
    dev.frequency = 2000  # 1 ms -> 0.5 ms: duty 800000 would exceed the new period
    assert _attr_writes(rig) == [("duty_cycle", "400000"), ("period", "500000")]
    rig.kernel.log.clear()
    dev.frequency = 500  # 0.5 ms -> 2 ms: duty 1600000 would exceed the old period
    assert _attr_writes(rig) == [("period", "2000000"), ("duty_cycle", "1600000")]
    assert dev.value == 0.8
    dev.frequency = None  # gpiozero's "stop PWM": a steady LOW
    assert _duty(rig) == 0 and rig.factory.pin(PWM_PIN).frequency is None
    dev.close()


# --------------------------------------------------------------------------- other pins, other uses
def test_other_pins_and_reservations_come_from_the_base_factory(rig: Rig) -> None:
    pilot = _pilot(rig, e_pin=5)
    relay = DigitalOutputDevice(23, pin_factory=rig.factory)
    assert rig.factory.pin(23) is rig.base.pin(23) and isinstance(rig.factory.pin(23), MockPin)
    relay.on()
    assert rig.base.pin(23).state == 1
    asyncio.run(pilot.set_e())
    assert rig.base.pin(5).state == 1  # the E clamp is an ordinary base pin
    assert not isinstance(rig.factory.pin("GPIO18"), MockPin)
    assert rig.factory.pin("GPIO18") is rig.factory.pin(18) is rig.factory.pin("J8:12")
    # One pin, one owner, whichever factory object asks.
    with pytest.raises(GPIOPinInUse):
        DigitalOutputDevice(PWM_PIN, pin_factory=rig.factory)
    with pytest.raises(GPIOPinInUse):
        DigitalOutputDevice(23, pin_factory=rig.base)
    assert rig.factory.board_info is rig.base.board_info
    assert rig.factory.ticks_diff(rig.factory.ticks(), rig.factory.ticks()) <= 0
    relay.close()
    pilot.close()


def test_plain_digital_output_on_a_pwm_pin(rig: Rig) -> None:
    led = DigitalOutputDevice(PWM_PIN, initial_value=True, pin_factory=rig.factory)
    # Set up straight to HIGH: the channel is never enabled at a different level first.
    assert [s.duty for s in rig.kernel.history if s.enabled] == [DEFAULT_PERIOD_NS]
    led.off()
    assert _duty(rig) == 0 and led.value == 0
    led.on()
    assert _duty(rig) == _period(rig) and led.value == 1
    led.close()
    assert not rig.kernel.exported(0, 0)


def test_input_and_edge_detection_are_refused_with_pin_errors(rig: Rig) -> None:
    with pytest.raises(PinInvalidFunction, match="output-only"):
        DigitalInputDevice(PWM_PIN, pin_factory=rig.factory)
    pin = rig.factory.pin(PWM_PIN)
    with pytest.raises(PinEdgeDetectUnsupported):
        pin.when_changed = lambda ticks, state: None
    assert not rig.kernel.exported(0, 0)


def test_pins_sharing_a_channel_cannot_both_be_driven(tmp_path: Path) -> None:
    r = _rig(tmp_path, channels=dict(BCM2711_PWM_CHANNELS))
    first = PWMOutputDevice(12, frequency=1000, pin_factory=r.factory)
    with pytest.raises(GPIOPinInUse, match="share one PWM channel"):
        PWMOutputDevice(18, frequency=1000, pin_factory=r.factory)
    other_channel = PWMOutputDevice(13, frequency=1000, initial_value=0.5, pin_factory=r.factory)
    assert int(r.kernel.attr(0, 1, "duty_cycle")) == 500_000
    first.close()
    second = PWMOutputDevice(18, frequency=1000, initial_value=0.25, pin_factory=r.factory)
    assert _duty(r) == 250_000
    second.close()
    other_channel.close()
    r.factory.close()


def test_pi5_rp1_mapping_uses_four_channels_of_the_named_chip(tmp_path: Path) -> None:
    r = _rig(tmp_path, chips={2: 4}, channels=rp1_pwm_channels(2))
    dev = PWMOutputDevice(19, frequency=1000, initial_value=0.1, pin_factory=r.factory)
    assert int(r.kernel.attr(2, 3, "duty_cycle")) == 100_000
    assert [c for c in range(4) if r.kernel.exported(2, c)] == [3]
    dev.close()
    r.factory.close()


# ---------------------------------------------------------------------------------- error paths
def test_missing_pwmchip_names_the_path_and_the_overlay(tmp_path: Path) -> None:
    # No io layer: the real filesystem, where the chip does not exist.
    factory = HardwarePwmFactory(MockFactory(), pwm_channels={PWM_PIN: (0, 0)}, sysfs_root=str(tmp_path))
    with pytest.raises(DeviceNotFound) as caught:
        GpioPilotOutput("cp0", pwm_pin=PWM_PIN, pin_factory=factory)
    text = str(caught.value)
    assert str(tmp_path / "pwmchip0") in text
    assert "dtoverlay=pwm,pin=18,func=2" in text and "config.txt" in text
    factory.close()


def test_missing_channel_names_npwm_and_the_chip(tmp_path: Path) -> None:
    r = _rig(tmp_path, channels={PWM_PIN: (0, 2)})
    with pytest.raises(DeviceNotFound, match=r"has 2 channel\(s\).*channel 2") as caught:
        _pilot(r)
    assert str(tmp_path / "pwmchip0") in str(caught.value)
    r.factory.close()


@pytest.mark.parametrize(
    ("err", "hint"),
    [(errno.EBUSY, "claimed by a kernel driver"), (errno.EACCES, "udev rule"), (errno.EPERM, "root")],
)
def test_export_refused_is_device_not_found_with_a_hint(tmp_path: Path, err: int, hint: str) -> None:
    r = _rig(tmp_path)
    r.kernel.export_errno = err
    assert str(tmp_path / "pwmchip0") in _claim_error(r, hint)
    # Nothing half-claimed is left in sysfs or in the pin: it can be claimed once the cause is gone.
    r.kernel.export_errno = None
    _pilot(r).close()
    r.factory.close()


def test_channel_busy_in_a_kernel_driver(tmp_path: Path) -> None:
    r = _rig(tmp_path)
    r.kernel.busy.add((0, 0))
    with pytest.raises(DeviceNotFound, match="busy"):
        _pilot(r)
    r.factory.close()


def test_export_race_waits_for_the_directory_and_for_udev(tmp_path: Path) -> None:
    r = _rig(tmp_path)
    r.kernel.appear_after_polls = 12
    r.kernel.locked_polls = 3
    pilot = _pilot(r)
    asyncio.run(pilot.set_pwm(100))
    assert _duty(r) == 100_000
    assert r.kernel.locked_polls == 0
    pilot.close()
    r.factory.close()


def test_export_that_never_appears_times_out_and_unexports(tmp_path: Path) -> None:
    r = _rig(tmp_path, export_timeout_s=0.05)
    r.kernel.appear_after_polls = 10**9
    start = time.monotonic()
    with pytest.raises(DeviceNotFound, match=r"did not appear within 0\.05 s"):
        _pilot(r)
    assert time.monotonic() - start < 1.0
    assert (0, 0) not in r.kernel.channels  # unexported again
    r.factory.close()


def test_attributes_never_writable_is_a_permission_hint(tmp_path: Path) -> None:
    r = _rig(tmp_path, export_timeout_s=0.05)
    r.kernel.locked_polls = 10**9
    with pytest.raises(DeviceNotFound, match=r"not writable.*udev rule"):
        _pilot(r)
    r.factory.close()


def test_a_refused_write_is_a_hal_error_and_a_pin_error(rig: Rig) -> None:
    pilot = _pilot(rig)
    asyncio.run(pilot.set_pwm(500))
    rig.kernel.fail["duty_cycle"] = errno.EIO
    with pytest.raises(HalError) as caught:
        asyncio.run(pilot.set_pwm(600))
    assert isinstance(caught.value, PwmSysfsError) and isinstance(caught.value, PinError)
    assert "duty_cycle" in str(caught.value) and str(rig.kernel.root / "pwmchip0" / "pwm0") in str(caught.value)
    assert _duty(rig) == 500_000  # the kernel kept the old value, and so does the pin
    assert rig.factory.pin(PWM_PIN).state == 0.5
    # close still disables and unexports, then reports the duty write that failed.
    with pytest.raises(PwmSysfsError, match="duty_cycle"):
        rig.factory.pin(PWM_PIN).close()
    assert not rig.kernel.exported(0, 0)


def test_setup_failure_is_wrapped_by_the_pilot_and_cleans_up(rig: Rig) -> None:
    rig.kernel.fail["enable"] = errno.EIO
    with pytest.raises(DeviceNotFound, match=r"cannot claim GPIO18 for the pilot PWM.*enable"):
        _pilot(rig)
    assert not rig.kernel.exported(0, 0)


def test_a_leftover_export_is_taken_over_and_reset_to_f(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    r = _rig(tmp_path)
    # A crashed earlier run left the channel running, inverted, at 50 %.
    r.kernel.preexport(0, 0, ChannelState(period=1_000_000, duty=500_000, enabled=True, polarity="inversed"))
    with caplog.at_level(logging.WARNING, logger="hal.drivers.hw_pwm"):
        pilot = _pilot(r)
    assert "left over" in caplog.text
    assert ("export", "0") not in _attr_writes(r)
    assert r.kernel.attr(0, 0, "polarity") == "normal" and _duty(r) == 0 and r.kernel.attr(0, 0, "enable") == "1"
    assert pilot.mode is PilotMode.F
    pilot.close()
    r.factory.close()


def test_factory_arguments_are_checked(tmp_path: Path) -> None:
    base = MockFactory()
    with pytest.raises(ValueError, match="GPIO99"):
        HardwarePwmFactory(base, pwm_channels={99: (0, 0)}, sysfs_root=str(tmp_path))
    with pytest.raises(ValueError, match="two ints"):
        HardwarePwmFactory(base, pwm_channels={18: (0, -1)}, sysfs_root=str(tmp_path))
    with pytest.raises(ValueError, match="two ints"):
        HardwarePwmFactory(base, pwm_channels={18: 0}, sysfs_root=str(tmp_path))  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="export_timeout_s"):
        HardwarePwmFactory(base, pwm_channels={18: (0, 0)}, sysfs_root=str(tmp_path), export_timeout_s=0)
    factory = HardwarePwmFactory(base, pwm_channels={18: (0, 0)}, sysfs_root=str(tmp_path))
    assert factory.pwm_channels == {18: (0, 0)}
    assert factory.base is base
    factory.reset()  # MockFactory extras are reached through the wrapper
