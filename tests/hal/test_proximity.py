"""PP decoding (pure) and PP sensing through the MCP3x0x simulator."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hal.buses import open_spi
from hal.drivers.adc_proximity import AdcProximityPilot
from hal.drivers.mcp3x0x import Mcp3x0x
from hal.errors import ProtocolError
from hal.interfaces import ProximityPilot
from hal.proximity import decode_type1, decode_type2
from hal.sim.analog import pp_channel
from hal.sim.mcp3x0x import Mcp3x0xSim
from hal.sim.plant import Plant
from hal.sim.spi import SimSpiBus
from hal.types import CableLatch, ProximityReading

# ---------------------------------------------------------------------- Type 2 decode


@pytest.mark.parametrize(
    ("ohm", "ampacity"),
    [
        (75.1, 63),
        (100.0, 63),
        (149.9, 63),
        (150.0, 32),  # on an edge the lower rating wins
        (220.0, 32),
        (329.9, 32),
        (330.0, 20),
        (680.0, 20),
        (999.9, 20),
        (1000.0, 13),
        (1500.0, 13),
        (2199.9, 13),
        (2200.0, 0),  # no cable
        (1e6, 0),
        (math.inf, 0),
        (None, 0),
    ],
)
def test_type2_bands_and_edges(ohm: float | None, ampacity: int) -> None:
    reading = decode_type2(ohm)
    assert reading == ProximityReading(resistance_ohm=ohm, ampacity_a=ampacity)


@pytest.mark.parametrize("ohm", [0.0, 40.0, 74.9, 75.0])
def test_type2_short_is_a_fault(ohm: float) -> None:
    reading = decode_type2(ohm)
    assert reading.ampacity_a is None
    assert reading.fault is not None and "shorted" in reading.fault
    assert reading.resistance_ohm == ohm


def test_type2_single_phase_100_ohm_cable_is_70_a() -> None:
    assert decode_type2(100.0, single_phase=True).ampacity_a == 70
    assert decode_type2(220.0, single_phase=True).ampacity_a == 32
    assert decode_type2(None, single_phase=True).ampacity_a == 0


@given(st.floats(min_value=75.001, max_value=1e7), st.floats(min_value=75.001, max_value=1e7))
def test_type2_rating_never_rises_with_resistance(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    low_r, high_r = decode_type2(lo).ampacity_a, decode_type2(hi).ampacity_a
    assert low_r is not None and high_r is not None
    assert high_r <= low_r


# ---------------------------------------------------------------------- Type 1 decode


@pytest.mark.parametrize(
    ("ohm", "latch"),
    [
        (75.1, CableLatch.LATCHED),
        (150.0, CableLatch.LATCHED),
        (269.9, CableLatch.LATCHED),
        (270.0, CableLatch.PRESSED),
        (480.0, CableLatch.PRESSED),
        (999.9, CableLatch.PRESSED),
        (10_000.0, CableLatch.UNPLUGGED),
        (None, CableLatch.UNPLUGGED),
    ],
)
def test_type1_states(ohm: float | None, latch: CableLatch) -> None:
    reading = decode_type1(ohm)
    assert reading == ProximityReading(resistance_ohm=ohm, latch=latch)
    assert reading.ampacity_a is None


@pytest.mark.parametrize(
    ("ohm", "why"), [(0.0, "shorted"), (75.0, "shorted"), (1000.0, "neither"), (9999.0, "neither")]
)
def test_type1_faults(ohm: float, why: str) -> None:
    reading = decode_type1(ohm)
    assert reading.latch is None and reading.ampacity_a is None
    assert reading.fault is not None and why in reading.fault


@pytest.mark.parametrize("bad", [-1.0, math.nan])
def test_impossible_resistance_is_rejected(bad: float) -> None:
    with pytest.raises(ValueError):
        decode_type2(bad)
    with pytest.raises(ValueError):
        decode_type1(bad)


# ---------------------------------------------------------------------- through the ADC

PP_CHANNEL = 3
PULLUP_OHM = 1000.0


def rig(
    connector: str = "type2", *, single_phase: bool = False
) -> tuple[Plant, SimSpiBus, Mcp3x0xSim, AdcProximityPilot]:
    plant = Plant()
    bus = SimSpiBus()
    sim = Mcp3x0xSim("mcp3008", vref_v=3.3)
    sim.set_channel(PP_CHANNEL, pp_channel(plant, pullup_ohm=PULLUP_OHM, pullup_v=3.3))
    bus.attach(0, 1, sim)
    spi = open_spi(0, 1, max_speed_hz=1_000_000, factory=bus.factory)
    adc = Mcp3x0x(spi, chip="mcp3008", vref_v=3.3, name="adc1")
    pp = AdcProximityPilot(
        adc,
        PP_CHANNEL,
        pullup_ohm=PULLUP_OHM,
        connector=connector,
        single_phase=single_phase,  # type: ignore[arg-type]
    )
    return plant, bus, sim, pp


def test_implements_the_interface() -> None:
    assert isinstance(rig()[3], ProximityPilot)


@pytest.mark.parametrize(
    ("pp_ohm", "ampacity"),
    [
        (100.0, 63),
        (140.0, 63),
        (160.0, 32),
        (220.0, 32),
        (310.0, 32),
        (350.0, 20),
        (680.0, 20),
        (950.0, 20),
        (1050.0, 13),
        (1500.0, 13),
        (2100.0, 13),
        (2300.0, 0),
        (None, 0),
    ],
)
def test_type2_cable_ratings_measured(pp_ohm: float | None, ampacity: int) -> None:
    plant, _, _, pp = rig()
    plant.pp_ohm = pp_ohm
    reading = asyncio.run(pp.read())
    assert reading.ampacity_a == ampacity and reading.fault is None
    if pp_ohm is None:
        assert reading.resistance_ohm is None
    else:
        assert reading.resistance_ohm == pytest.approx(pp_ohm, rel=0.02)


def test_type2_measured_single_phase_and_short() -> None:
    plant, _, _, pp = rig(single_phase=True)
    plant.pp_ohm = 100.0
    assert asyncio.run(pp.read()).ampacity_a == 70
    plant.pp_ohm = 20.0
    reading = asyncio.run(pp.read())
    assert reading.ampacity_a is None and reading.fault is not None


@pytest.mark.parametrize(
    ("pp_ohm", "latch"),
    [(150.0, CableLatch.LATCHED), (480.0, CableLatch.PRESSED), (None, CableLatch.UNPLUGGED)],
)
def test_type1_states_measured(pp_ohm: float | None, latch: CableLatch) -> None:
    plant, _, _, pp = rig("type1")
    plant.pp_ohm = pp_ohm
    reading = asyncio.run(pp.read())
    assert reading.latch == latch and reading.fault is None


def test_type1_damaged_handle_measured() -> None:
    plant, _, _, pp = rig("type1")
    plant.pp_ohm = 3000.0
    reading = asyncio.run(pp.read())
    assert reading.latch is None and reading.fault is not None


def test_pp_read_traffic_is_the_pp_channel_command() -> None:
    plant, bus, _, pp = rig()
    bus.log_transfers = True
    plant.pp_ohm = 680.0
    asyncio.run(pp.read())
    assert [(addr, tx) for addr, tx, _ in bus.transfers] == [((0, 1), b"\x01\xb0\x00")] * 5


def test_one_noise_spike_does_not_change_the_rating() -> None:
    plant, _, sim, pp = rig()
    plant.pp_ohm = 220.0
    values = iter([0.66, 0.66, 3.3, 0.66, 0.66])  # 3.3 V = a spike that alone would read "no cable"
    sim.set_channel(PP_CHANNEL, lambda: next(values))
    assert asyncio.run(pp.read()).ampacity_a == 32


def test_floating_adc_is_a_protocol_error_not_no_cable() -> None:
    _, _, sim, pp = rig()
    sim.floating = True
    with pytest.raises(ProtocolError, match="adc1"):
        asyncio.run(pp.read())


def test_bad_configuration() -> None:
    bus = SimSpiBus()
    bus.attach(0, 0, Mcp3x0xSim("mcp3008", vref_v=3.3))
    adc = Mcp3x0x(open_spi(0, 0, max_speed_hz=1_000_000, factory=bus.factory), chip="mcp3008", vref_v=3.3, name="a")
    with pytest.raises(ValueError, match="pullup_ohm"):
        AdcProximityPilot(adc, 0, pullup_ohm=0.0)
    with pytest.raises(ValueError, match="connector"):
        AdcProximityPilot(adc, 0, pullup_ohm=1000.0, connector="ccs")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"channels 0\.\.7"):
        AdcProximityPilot(adc, 8, pullup_ohm=1000.0)
