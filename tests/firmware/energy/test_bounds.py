"""The limit arbitration of one node (firmware/energy/bounds.py): priorities, conflicts, and how close an
overridden input still gets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.energy.bounds import EMS, GRID, OPERATOR, SAFETY, Bound, BoundSet


def _window(*bounds: Bound) -> tuple[float, float]:
    inputs = BoundSet()
    for bound in bounds:
        inputs.set(bound)
    window = inputs.resolve(0.0)
    return window.min_w, window.max_w


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        # No conflict: the intersection.
        ((Bound("a", max_w=10e3), Bound("b", min_w=-5e3, max_w=8e3)), (-5e3, 8e3)),
        # An aggregator asks 1 W more discharge than the gate grants: the grant, not the far edge.
        ((Bound("discharge", min_w=-5999, priority=SAFETY), Bound("regulation", -6000, -6000, EMS)), (-5999, -5999)),
        # A charge request above the grid's room: as much as the grid allows.
        ((Bound("grid", max_w=4e3, priority=GRID), Bound("ems", min_w=6e3, max_w=6e3)), (4e3, 4e3)),
        # Two overridden inputs: the higher one pulls first.
        (
            (
                Bound("safety", min_w=0, max_w=3e3, priority=SAFETY),
                Bound("operator", min_w=5e3, priority=OPERATOR),
                Bound("ems", max_w=-1e3, priority=EMS),
            ),
            (3e3, 3e3),
        ),
        # Safety inputs that contradict each other: nothing.
        ((Bound("s1", min_w=1e3, priority=SAFETY), Bound("s2", max_w=0, priority=SAFETY)), (0.0, 0.0)),
    ],
)
def test_arbitration(bounds: tuple[Bound, ...], expected: tuple[float, float]) -> None:
    assert _window(*bounds) == expected


_LEVELS = st.sampled_from([EMS, OPERATOR, GRID, SAFETY])


@st.composite
def _bound(draw: st.DrawFn, name: str) -> Bound:
    a, b = sorted(draw(st.lists(st.integers(-30_000, 30_000), min_size=2, max_size=2)))
    return Bound(name, min_w=float(a), max_w=float(b), priority=draw(_LEVELS))


_SETS = st.integers(1, 5).flatmap(lambda n: st.tuples(*(_bound(f"s{i}") for i in range(n))))


@given(_SETS)
def test_the_window_keeps_every_safety_input_and_is_never_empty(bounds: tuple[Bound, ...]) -> None:
    lo, hi = _window(*bounds)
    assert lo <= hi
    safety = [b for b in bounds if b.priority >= SAFETY]
    s_lo = max((b.min_w for b in safety), default=-float("inf"))
    s_hi = min((b.max_w for b in safety), default=float("inf"))
    if s_lo <= s_hi:
        assert s_lo <= lo and hi <= s_hi  # inside what safety allows
    else:
        assert (lo, hi) == (0.0, 0.0)
    everything_lo = max(b.min_w for b in bounds)
    everything_hi = min(b.max_w for b in bounds)
    if everything_lo <= everything_hi:
        assert (lo, hi) == (everything_lo, everything_hi)  # no conflict: the plain intersection
