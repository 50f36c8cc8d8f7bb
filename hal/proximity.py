"""Decoding the proximity pilot (PP) resistance: pure functions, no I/O.

Type 2 (IEC 62196-2 cable coding, IEC 61851-1): the cable's resistor Rc between PP and PE states the
cable's current rating. Bands from the Phoenix Contact EV Charge Control Basic manual, table 5-1
"according to IEC 61851-1" (standards-facts 1.8):

    R <= 75 Ω       error (PP shorted to PE, damaged cable)
    75 < R < 150    63 A (100 Ω; 70 A when the EVSE is single-phase)
    150 <= R < 330  32 A (220 Ω)
    330 <= R < 1000 20 A (680 Ω)
    1000 <= R < 2200  13 A (1.5 kΩ)
    R >= 2200 / open  no cable: ampacity 0

On a band edge the less permissive answer wins (the lower rating; an error rather than 63 A), as
EVerest does for values between its bands ("values between bands => the lower ampacity",
standards-facts 1.8): a measurement exactly on an edge is as likely to come from either side.

Type 1 (SAE J1772): the connector holds R6 = 150 Ω between PP and PE; pressing the latch button S3
puts R7 = 330 Ω in series, about 480 Ω (standards-facts 1.8). Bands, with edges chosen halfway between
the nominal values on a logarithmic scale (so that both nominals have the same relative margin) and
the same "less permissive wins" rule:

    R <= 75 Ω          fault (short: half of R6)
    75 < R < 270       latched (150 Ω; 270 ≈ sqrt(150 × 480), tolerates -50 % / +80 %)
    270 <= R < 1000    pressed (480 Ω; 1000 ≈ 2 × 480)
    1000 <= R < 10 kΩ  fault (neither resistor value: broken or contaminated handle)
    R >= 10 kΩ / open  unplugged

A latch reading never carries an ampacity: the Type 1 PP circuit does not code the cable rating.
"""

from __future__ import annotations

from hal.types import CableLatch, ProximityReading

# Type 2, Phoenix Contact EV Charge Control Basic table 5-1 (standards-facts 1.8).
TYPE2_SHORT_MAX_OHM = 75.0
TYPE2_BANDS: tuple[tuple[float, int], ...] = (
    # (upper edge, exclusive; rating in A), in increasing resistance
    (150.0, 63),
    (330.0, 32),
    (1000.0, 20),
    (2200.0, 13),
)
TYPE2_NO_CABLE_MIN_OHM = 2200.0
#: The 100 Ω cable is rated 63 A three-phase, 70 A single-phase (standards-facts 1.8; EVerest
#: ``IECStateMachine::set_pp_ampacity``).
TYPE2_SINGLE_PHASE_100_OHM_A = 70

# Type 1 (SAE J1772): R6 = 150 Ω, R6 + R7 = 480 Ω (standards-facts 1.8).
TYPE1_LATCHED_NOMINAL_OHM = 150.0
TYPE1_PRESSED_NOMINAL_OHM = 480.0
TYPE1_SHORT_MAX_OHM = 75.0
TYPE1_LATCHED_MAX_OHM = 270.0
TYPE1_PRESSED_MAX_OHM = 1000.0
TYPE1_UNPLUGGED_MIN_OHM = 10_000.0


def _check(resistance_ohm: float | None) -> None:
    # ``not >= 0`` also catches NaN, which every band comparison below would silently let through.
    if resistance_ohm is not None and not resistance_ohm >= 0:
        raise ValueError(f"a resistance is a non-negative number of ohms, got {resistance_ohm}")


def decode_type2(resistance_ohm: float | None, *, single_phase: bool = False) -> ProximityReading:
    """Cable rating from the PP-PE resistance; ``None`` means an open circuit (no cable)."""
    _check(resistance_ohm)
    if resistance_ohm is None or resistance_ohm >= TYPE2_NO_CABLE_MIN_OHM:
        return ProximityReading(resistance_ohm=resistance_ohm, ampacity_a=0)
    if resistance_ohm <= TYPE2_SHORT_MAX_OHM:
        return ProximityReading(
            resistance_ohm=resistance_ohm,
            ampacity_a=None,
            fault=f"PP resistance {resistance_ohm:.0f} ohm is not above {TYPE2_SHORT_MAX_OHM:.0f} ohm: "
            "PP shorted to PE or a damaged cable",
        )
    for upper, rating in TYPE2_BANDS:
        if resistance_ohm < upper:
            if rating == 63 and single_phase:
                rating = TYPE2_SINGLE_PHASE_100_OHM_A
            return ProximityReading(resistance_ohm=resistance_ohm, ampacity_a=rating)
    raise AssertionError("unreachable: the last band ends where 'no cable' starts")


def decode_type1(resistance_ohm: float | None) -> ProximityReading:
    """Latch state of a J1772 connector from the PP-PE resistance; ``None`` means open."""
    _check(resistance_ohm)
    if resistance_ohm is None or resistance_ohm >= TYPE1_UNPLUGGED_MIN_OHM:
        return ProximityReading(resistance_ohm=resistance_ohm, latch=CableLatch.UNPLUGGED)
    if resistance_ohm <= TYPE1_SHORT_MAX_OHM:
        return ProximityReading(
            resistance_ohm=resistance_ohm,
            fault=f"PP resistance {resistance_ohm:.0f} ohm is not above {TYPE1_SHORT_MAX_OHM:.0f} ohm: "
            "PP shorted to PE",
        )
    if resistance_ohm < TYPE1_LATCHED_MAX_OHM:
        return ProximityReading(resistance_ohm=resistance_ohm, latch=CableLatch.LATCHED)
    if resistance_ohm < TYPE1_PRESSED_MAX_OHM:
        return ProximityReading(resistance_ohm=resistance_ohm, latch=CableLatch.PRESSED)
    return ProximityReading(
        resistance_ohm=resistance_ohm,
        fault=f"PP resistance {resistance_ohm:.0f} ohm is neither latched (~150 ohm), pressed (~480 ohm) "
        "nor open: damaged or contaminated connector",
    )
