"""board/mcu/hw_rp2040.py over a fake ``machine`` (tests/mcu/fake_machine.py): the pilot generator's duty
per mode, the plateaus sampled in step with the PWM counter away from its edges, the pins, and the main
loop over it (boot event on the UART, the watchdog fed every iteration)."""

from __future__ import annotations

import struct

import pytest

from board.mcu import loop, pins
from board.mcu import protocol as P
from board.mcu.hw_rp2040 import Rp2040Hardware
from tests.mcu import fake_machine
from tests.mcu.fake_machine import BOARD, Board


@pytest.fixture(autouse=True)
def board() -> Board:
    BOARD.__init__()  # type: ignore[misc]
    return BOARD


@pytest.mark.parametrize(
    ("ev", "permille", "high", "low"),
    [("B", 533, 9_000, -12_000), ("C", 267, 6_000, -12_000), ("C", 50, 6_000, -12_000), ("D", 900, 3_000, -12_000)],
)
def test_plateaus_are_sampled_in_step_with_the_pwm(board: Board, ev: str, permille: int, high: int, low: int) -> None:
    hw = Rp2040Hardware(fake_machine)
    hw.pilot(P.PILOT_PWM, permille)
    assert board.freq == pins.CP_FREQ_HZ and board.duty_u16 == permille * 65535 // 1000
    board.ev = ev
    for _ in range(5):
        hw.sample()
    got_high, got_low = hw.pilot_levels()
    # The ADC's 16-bit step is 0.4 mV at the ADC, 3 mV at the pilot; the divider rounds a little more.
    assert got_high == pytest.approx(high, abs=30) and got_low == pytest.approx(low, abs=30)


@pytest.mark.parametrize(("mode", "duty_u16", "level"), [(P.PILOT_X1, 65535, 9_000), (P.PILOT_F, 0, -12_000)])
def test_steady_modes_read_one_level(board: Board, mode: int, duty_u16: int, level: int) -> None:
    hw = Rp2040Hardware(fake_machine)
    board.ev = "B"
    hw.pilot(mode, 0)
    hw.sample()
    assert board.duty_u16 == duty_u16
    high, low = hw.pilot_levels()
    assert high == pytest.approx(level, abs=30) and low is None


def test_the_pins(board: Board) -> None:
    hw = Rp2040Hardware(fake_machine)
    hw.coil(True)
    assert board.outputs[pins.COIL] == 1
    board.levels[pins.MIRROR] = 0  # the mirror contact pulls its input low when closed
    assert hw.mirror() is True
    hw.lock(True)
    assert board.outputs[pins.LOCK] == 1
    board.levels[pins.LOCK_FEEDBACK] = 1
    assert hw.lock_feedback() is False
    board.levels[pins.RCD_TRIP] = 1
    assert hw.rcd_tripped() is True
    hw.rcd_test(True)
    assert board.outputs[pins.RCD_TEST] == 1


@pytest.mark.parametrize(("ohm", "expected"), [(None, P.PP_OPEN), (1500, 1500), (680, 680), (220, 220), (100, 100)])
def test_pp_is_read_through_its_pull_up(board: Board, ohm: int | None, expected: int) -> None:
    hw = Rp2040Hardware(fake_machine)
    board.pp_ohm = ohm
    assert hw.has_pp
    assert hw.pp_ohm() == pytest.approx(expected, rel=0.01)


def test_the_main_loop_on_the_rp2040_seam(board: Board) -> None:
    class Ticks:
        def ticks_ms(self) -> int:
            return board.us // 1000

        def ticks_diff(self, a: int, b: int) -> int:
            return a - b

    hw = Rp2040Hardware(fake_machine)
    firmware = loop.Loop(hw, loop.Millis(Ticks()), fake_machine.WDT(loop.WATCHDOG_MS))
    decoder = P.Decoder()
    [(_, kind, _)] = decoder.feed(bytes(board.uart_out))
    assert kind == P.MSG_EVENT_BOOT and board.duty_u16 == 0  # boots in F
    board.uart_out = bytearray()
    board.uart_in += P.encode_frame(1, P.MSG_HELLO, bytes([P.PROTOCOL_VERSION]))
    board.uart_in += P.encode_frame(2, P.MSG_SET_PILOT, struct.pack(P.SET_PILOT_FORMAT, P.PILOT_PWM, 267))
    board.ev = "C"
    for _ in range(3):
        firmware.step()
    replies = {kind: body for _, kind, body in decoder.feed(bytes(board.uart_out))}
    assert P.MSG_HELLO | P.REPLY_BIT in replies and P.MSG_SET_PILOT | P.REPLY_BIT in replies
    assert firmware.fw.cp_state == P.CP_C and board.fed == 3
