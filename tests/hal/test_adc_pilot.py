"""Pilot sensing: plant -> CP front end -> MCP3x0x simulator -> SPI -> driver -> PilotReading."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal.buses import open_spi
from hal.drivers.adc_pilot import TYPICAL_GAIN, TYPICAL_OFFSET_V, AdcPilotSense
from hal.drivers.mcp3x0x import Mcp3x0x
from hal.errors import ProtocolError
from hal.interfaces import PilotSense
from hal.sim.analog import CpChannel
from hal.sim.mcp3x0x import Mcp3x0xSim
from hal.sim.plant import Plant
from hal.sim.spi import SimSpiBus
from hal.types import PilotMode, PilotReading

CP_CHANNEL = 0
TOL_V = 0.3

# J1772 table A1 positive-plateau ranges (standards-facts 1.2) as an independent check of the levels.
J1772_HIGH = {"A": (11.40, 12.60), "B": (8.36, 9.56), "C": (5.48, 6.49), "D": (2.62, 3.25)}
J1772_LOW = (-12.60, -11.40)


class Rig:
    def __init__(
        self,
        chip: str = "mcp3202",
        *,
        gain: float = TYPICAL_GAIN,
        offset_v: float = TYPICAL_OFFSET_V,
        samples: int = 100,
        edge_s: float = 0.0,
        phase: float = 0.0,
    ) -> None:
        self.plant = Plant()
        self.bus = SimSpiBus()
        self.sim = Mcp3x0xSim(chip, vref_v=3.3)  # type: ignore[arg-type]
        self.cp = CpChannel(self.plant, gain=gain, offset_v=offset_v, edge_s=edge_s, phase=phase)
        self.sim.set_channel(CP_CHANNEL, self.cp)
        self.bus.attach(0, 0, self.sim)
        spi = open_spi(0, 0, max_speed_hz=1_000_000, factory=self.bus.factory)
        self.adc = Mcp3x0x(spi, chip=chip, vref_v=3.3, name="adc0")  # type: ignore[arg-type]
        self.sense = AdcPilotSense(self.adc, CP_CHANNEL, gain=gain, offset_v=offset_v, samples=samples)

    def pwm(self, duty: float) -> None:
        self.plant.pilot.mode = PilotMode.PWM
        self.plant.pilot.duty = duty

    def read(self) -> PilotReading:
        return asyncio.run(self.sense.read())


def test_implements_the_interface() -> None:
    assert isinstance(Rig().sense, PilotSense)


@pytest.mark.parametrize("chip", ["mcp3202", "mcp3008"])
@pytest.mark.parametrize("state", ["A", "B", "C", "D"])
def test_pwm_states_give_both_plateaus(chip: str, state: str) -> None:
    rig = Rig(chip)
    rig.plant.ev_state = state
    rig.pwm(0.533)  # 32 A
    reading = rig.read()
    high, low = rig.plant.cp_plateaus()
    assert reading.high_v == pytest.approx(high, abs=TOL_V)
    assert J1772_HIGH[state][0] <= reading.high_v <= J1772_HIGH[state][1]
    assert reading.low_v is not None
    assert reading.low_v == pytest.approx(low, abs=TOL_V)
    assert J1772_LOW[0] <= reading.low_v <= J1772_LOW[1]
    assert reading.samples == 100


@pytest.mark.parametrize("state", ["A", "B", "C", "D"])
def test_x1_gives_the_steady_level_and_no_low_phase(state: str) -> None:
    rig = Rig()
    rig.plant.ev_state = state
    rig.plant.pilot.mode = PilotMode.X1
    reading = rig.read()
    assert reading.high_v == pytest.approx(rig.plant.cp_plateaus()[0], abs=TOL_V)
    assert reading.low_v is None


@pytest.mark.parametrize("mode", [PilotMode.PWM, PilotMode.X1, PilotMode.F])
def test_state_e_short_to_pe_reads_zero_without_low_phase(mode: PilotMode) -> None:
    rig = Rig()
    rig.plant.ev_state = "E"
    rig.plant.pilot.mode = mode
    rig.plant.pilot.duty = 0.5
    reading = rig.read()
    assert reading.high_v == pytest.approx(0.0, abs=TOL_V)
    assert reading.low_v is None


def test_noise_around_0_v_does_not_invent_a_low_phase() -> None:
    rig = Rig()
    rig.sim.noise_lsb = 10.0  # sigma 0.06 V of pilot noise
    rig.plant.ev_state = "E"
    rig.pwm(0.5)
    reading = rig.read()
    assert reading.high_v == pytest.approx(0.0, abs=TOL_V)
    assert reading.low_v is None


@pytest.mark.parametrize(("pilot_v", "low_seen"), [(-0.8, False), (-1.2, True), (-2.4, True)])
def test_low_phase_threshold_is_minus_1_v(pilot_v: float, low_seen: bool) -> None:
    rig = Rig()
    rig.sim.set_channel_v(CP_CHANNEL, (pilot_v - TYPICAL_OFFSET_V) / TYPICAL_GAIN + 0.0004)
    reading = rig.read()
    assert reading.high_v == pytest.approx(pilot_v, abs=0.01)
    assert (reading.low_v is not None) is low_seen


def test_generator_driving_e_reads_zero() -> None:
    rig = Rig()
    rig.plant.ev_state = "B"
    rig.plant.pilot.mode = PilotMode.E
    reading = rig.read()
    assert reading.high_v == pytest.approx(0.0, abs=TOL_V) and reading.low_v is None


@pytest.mark.parametrize("state", ["A", "B", "C"])
def test_state_f_is_minus_12_in_both_fields(state: str) -> None:
    rig = Rig()
    rig.plant.ev_state = state
    rig.plant.pilot.mode = PilotMode.F
    reading = rig.read()
    assert reading.high_v == pytest.approx(-12.0, abs=TOL_V)
    assert reading.low_v == pytest.approx(-12.0, abs=TOL_V)


@pytest.mark.parametrize("duty", [0.05, 0.10, 0.167, 0.267, 0.533, 0.85, 0.96])
def test_duty_cycles_from_5_to_96_percent(duty: float) -> None:
    rig = Rig()
    rig.plant.ev_state = "C"
    rig.pwm(duty)
    reading = rig.read()
    assert reading.high_v == pytest.approx(6.0, abs=TOL_V)
    assert reading.low_v == pytest.approx(-12.0, abs=TOL_V)


@settings(max_examples=150, deadline=None)
@given(
    state=st.sampled_from(["A", "B", "C", "D"]),
    duty=st.floats(min_value=0.03, max_value=0.97),
    phase=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    diode_ok=st.booleans(),
)
def test_any_duty_and_start_phase_finds_both_plateaus(state: str, duty: float, phase: float, diode_ok: bool) -> None:
    rig = Rig(phase=phase, edge_s=10e-6)
    rig.plant.ev_state = state
    rig.plant.ev_diode_ok = diode_ok
    rig.pwm(duty)
    reading = rig.read()
    high, low = rig.plant.cp_plateaus()
    assert reading.high_v == pytest.approx(high, abs=TOL_V)
    assert reading.low_v == pytest.approx(low, abs=TOL_V)


@pytest.mark.parametrize(("state", "expected_low"), [("B", -8.79), ("C", -5.62), ("D", -2.37)])
def test_shorted_ev_diode_raises_the_low_plateau(state: str, expected_low: float) -> None:
    rig = Rig()
    rig.plant.ev_state = state
    rig.plant.ev_diode_ok = False
    rig.pwm(0.5)
    reading = rig.read()
    # -12 V x R_ev / (R_ev + 1 kohm): B 2740 ohm, C 882 ohm, D 246 ohm (standards-facts 1.1).
    assert reading.low_v == pytest.approx(expected_low, abs=TOL_V)
    assert reading.high_v == pytest.approx(rig.plant.cp_plateaus()[0], abs=TOL_V)


def test_slow_edges_do_not_disturb_the_extremes() -> None:
    rig = Rig(edge_s=10e-6)
    rig.plant.ev_state = "B"
    rig.pwm(0.1)
    reading = rig.read()
    assert reading.high_v == pytest.approx(rig.plant.cp_plateaus()[0], abs=TOL_V)
    assert reading.low_v == pytest.approx(-12.0, abs=TOL_V)


def test_burst_sends_the_cp_channel_command_n_times() -> None:
    rig = Rig("mcp3008", samples=40)
    rig.bus.log_transfers = True
    rig.plant.ev_state = "B"
    rig.pwm(0.5)
    reading = rig.read()
    assert reading.samples == 40
    assert [tx for _, tx, _ in rig.bus.transfers] == [b"\x01\x80\x00"] * 40


def test_sample_outside_the_possible_pilot_range_is_rejected() -> None:
    # A board with headroom maps -15..+15 V onto 0..3.3 V; 3.2 V at the ADC would be +14.1 V.
    rig = Rig(gain=30.0 / 3.3, offset_v=-15.0)
    rig.sim.set_channel_v(CP_CHANNEL, 3.2)
    with pytest.raises(ProtocolError) as err:
        rig.read()
    assert err.value.device == "pilot sense" and "+14.0" in err.value.message
    rig.sim.set_channel_v(CP_CHANNEL, 0.05)
    with pytest.raises(ProtocolError, match=r"-14\.5"):
        rig.read()


def test_headroom_calibration_reads_normal_levels() -> None:
    rig = Rig(gain=30.0 / 3.3, offset_v=-15.0)
    rig.plant.ev_state = "C"
    rig.pwm(0.25)
    reading = rig.read()
    assert reading.high_v == pytest.approx(6.0, abs=TOL_V)
    assert reading.low_v == pytest.approx(-12.0, abs=TOL_V)


def test_floating_adc_is_a_protocol_error() -> None:
    rig = Rig()
    rig.sim.floating = True
    with pytest.raises(ProtocolError, match="null bit"):
        rig.read()


def test_stuck_zero_adc_looks_like_state_f() -> None:
    # Documented: all-zero MISO is 0 V at the ADC, i.e. -12 V with the typical calibration.
    rig = Rig()
    rig.plant.ev_state = "B"
    rig.pwm(0.5)
    rig.sim.stuck_zero = True
    reading = rig.read()
    assert reading.high_v == pytest.approx(-12.0) and reading.low_v == pytest.approx(-12.0)


def test_bad_configuration() -> None:
    rig = Rig()
    with pytest.raises(ValueError, match="at least 2"):
        AdcPilotSense(rig.adc, CP_CHANNEL, samples=1)
    with pytest.raises(ValueError, match=r"channels 0\.\.1"):
        AdcPilotSense(rig.adc, 5)
    with pytest.raises(ValueError, match="gain"):
        AdcPilotSense(rig.adc, CP_CHANNEL, gain=0.0)
