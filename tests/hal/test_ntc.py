"""NTC temperature sensing through the MCP3x0x simulator."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal.buses import open_spi
from hal.drivers.mcp3x0x import Mcp3x0x
from hal.drivers.ntc import NtcTemperature, ntc_temperature_c
from hal.errors import ProtocolError
from hal.interfaces import TemperatureSensor
from hal.sim.analog import ntc_channel, ntc_resistance_ohm
from hal.sim.mcp3x0x import Mcp3x0xSim
from hal.sim.plant import Plant
from hal.sim.spi import SimSpiBus

R25 = 10_000.0
BETA = 3950.0
PULLUP = 10_000.0
CH = 1


def rig(chip: str = "mcp3202") -> tuple[Plant, SimSpiBus, Mcp3x0xSim, NtcTemperature]:
    plant = Plant(temperatures_c={"connector": 25.0})
    bus = SimSpiBus()
    sim = Mcp3x0xSim(chip, vref_v=3.3)  # type: ignore[arg-type]
    sim.set_channel(CH, ntc_channel(plant, "connector", r25_ohm=R25, beta=BETA, pullup_ohm=PULLUP, pullup_v=3.3))
    bus.attach(0, 0, sim)
    spi = open_spi(0, 0, max_speed_hz=1_000_000, factory=bus.factory)
    adc = Mcp3x0x(spi, chip=chip, vref_v=3.3, name="adc0")  # type: ignore[arg-type]
    sensor = NtcTemperature(adc, CH, name="connector", r25_ohm=R25, beta=BETA, pullup_ohm=PULLUP)
    return plant, bus, sim, sensor


def test_implements_the_interface_and_has_the_name() -> None:
    sensor = rig()[3]
    assert isinstance(sensor, TemperatureSensor)
    assert sensor.name == "connector"


def test_beta_equation_against_hand_computed_values() -> None:
    # 10 kohm x exp(3950 x (1/353.15 - 1/298.15)) = 1270.0 ohm at 80 °C.
    assert ntc_temperature_c(10_000.0, r25_ohm=R25, beta=BETA) == pytest.approx(25.0)
    assert ntc_temperature_c(1270.0, r25_ohm=R25, beta=BETA) == pytest.approx(80.0, abs=0.02)
    assert ntc_resistance_ohm(80.0, r25_ohm=R25, beta=BETA) == pytest.approx(1270.0, abs=1.0)


@pytest.mark.parametrize(("chip", "tol"), [("mcp3202", 0.1), ("mcp3008", 0.4)])
@pytest.mark.parametrize("temp_c", [25.0, 80.0])
def test_reads_25_and_80_degrees(chip: str, tol: float, temp_c: float) -> None:
    plant, bus, _, sensor = rig(chip)
    bus.log_transfers = True
    plant.temperatures_c["connector"] = temp_c
    assert asyncio.run(sensor.read_c()) == pytest.approx(temp_c, abs=tol)
    command = b"\x01\xe0\x00" if chip == "mcp3202" else b"\x01\x90\x00"
    assert [tx for _, tx, _ in bus.transfers] == [command] * 5


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=-30.0, max_value=125.0), st.floats(min_value=-30.0, max_value=125.0))
def test_round_trip_and_monotonic(a: float, b: float) -> None:
    plant, _, _, sensor = rig()
    plant.temperatures_c["connector"] = a
    read_a = asyncio.run(sensor.read_c())
    plant.temperatures_c["connector"] = b
    read_b = asyncio.run(sensor.read_c())
    assert read_a == pytest.approx(a, abs=0.5)
    assert read_b == pytest.approx(b, abs=0.5)
    if a <= b:
        assert read_a <= read_b


def test_open_sensor() -> None:
    _, _, sim, sensor = rig()
    sim.set_channel_v(CH, 3.3)  # NTC unplugged: the pull-up takes the input to the rail
    with pytest.raises(ProtocolError) as err:
        asyncio.run(sensor.read_c())
    assert err.value.device == "connector" and "sensor open" in err.value.message


def test_shorted_sensor() -> None:
    _, _, sim, sensor = rig()
    sim.set_channel_v(CH, 0.0)
    with pytest.raises(ProtocolError) as err:
        asyncio.run(sensor.read_c())
    assert err.value.device == "connector" and "sensor shorted" in err.value.message


def test_nearly_open_within_the_rail_margin_is_open() -> None:
    _, _, sim, sensor = rig()
    sim.set_channel_v(CH, 3.3 * 0.995)
    with pytest.raises(ProtocolError, match="sensor open"):
        asyncio.run(sensor.read_c())


def test_extreme_but_real_temperatures_are_still_read() -> None:
    plant, _, _, sensor = rig()
    for t in (-40.0, 150.0):
        plant.temperatures_c["connector"] = t
        assert asyncio.run(sensor.read_c()) == pytest.approx(t, abs=1.0)


def test_floating_adc_is_a_protocol_error() -> None:
    _, _, sim, sensor = rig()
    sim.floating = True
    with pytest.raises(ProtocolError, match="null bit"):
        asyncio.run(sensor.read_c())


def test_missing_plant_temperature_is_a_clear_sim_error() -> None:
    plant, _, _, sensor = rig()
    del plant.temperatures_c["connector"]
    with pytest.raises(KeyError, match="connector"):
        asyncio.run(sensor.read_c())


def test_bad_configuration() -> None:
    bus = SimSpiBus()
    bus.attach(0, 0, Mcp3x0xSim("mcp3202", vref_v=3.3))
    adc = Mcp3x0x(open_spi(0, 0, max_speed_hz=1_000_000, factory=bus.factory), chip="mcp3202", vref_v=3.3, name="a")
    with pytest.raises(ValueError, match="beta"):
        NtcTemperature(adc, CH, name="x", r25_ohm=R25, beta=0.0, pullup_ohm=PULLUP)
    with pytest.raises(ValueError, match="rail_margin"):
        NtcTemperature(adc, CH, name="x", r25_ohm=R25, beta=BETA, pullup_ohm=PULLUP, rail_margin=0.6)
