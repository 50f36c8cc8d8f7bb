# Runs INSIDE MicroPython (tests/mcu/serve_micropython.mjs): the co-processor firmware (loop.Loop over
# tests/mcu/fake_hw.py) as a serial device for the Pi's real driver. The Node side calls, from its
# event loop, ``rx(hex, now_ms)`` with bytes from the Pi, ``tick(now_ms)`` every millisecond, and
# ``plant(name, value)`` to act as the EV / the wiring; each returns the frames to send to the Pi, hex.
# MicroPython subset only.

import binascii

import loop
from fake_hw import FakeClock, FakeHw

_hw = FakeHw()
_clock = FakeClock()
_fw = loop.Loop(_hw, _clock)


def _out() -> str:
    data = b"".join(frame for frame, _ in _hw.tx)
    _hw.tx = []
    return binascii.hexlify(data).decode()


def rx(hex_bytes: str, now_ms: int) -> str:
    _hw.rx += binascii.unhexlify(hex_bytes)
    return tick(now_ms)


def tick(now_ms: int) -> str:
    _clock.ms = now_ms
    _fw.step()
    return _out()


def plant(name: str, value) -> str:
    setattr(_hw, name, value)
    return ""


def coil() -> bool:
    return _hw.coil_on


def mode() -> int:
    return _hw.mode
