"""Limit arbitration: the effective current is the minimum of tagged limits, each with a source and an
optional expiry; an expired limit falls back to the safe value, and no limits at all means 0 A."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.limits import BOARD, CABLE, EMS, OCPP, THERMAL, USER, Limit, LimitSet


def _set(limits: LimitSet, *items: Limit) -> LimitSet:
    for item in items:
        limits.set(item)
    return limits


def test_no_limits_is_zero_amps_by_default_deny() -> None:
    eff = LimitSet(fallback_a=6.0).effective(0.0)
    assert eff.current_a == 0.0
    assert eff.binding is None
    assert eff.chain == ()
    assert eff.explain() == "no limits: 0 A (default deny)"


def test_the_effective_current_is_the_minimum_over_sources() -> None:
    limits = _set(LimitSet(fallback_a=6.0), Limit(BOARD, 32.0), Limit(CABLE, 20.0), Limit(EMS, 25.0))
    eff = limits.effective(0.0)
    assert eff.current_a == 20.0
    assert eff.binding is not None and eff.binding.limit.source == CABLE
    assert [link.limit.source for link in eff.chain] == [CABLE, EMS, BOARD]  # lowest first


def test_setting_a_source_again_replaces_its_limit() -> None:
    limits = _set(LimitSet(fallback_a=6.0), Limit(BOARD, 32.0), Limit(EMS, 10.0))
    assert limits.effective(0.0).current_a == 10.0
    limits.set(Limit(EMS, 25.0))  # raising a source's own limit is allowed: it replaces, not adds
    eff = limits.effective(0.0)
    assert eff.current_a == 25.0
    assert [link.limit.source for link in eff.chain] == [EMS, BOARD]
    assert limits.get(EMS) == Limit(EMS, 25.0)


def test_clearing_a_source_removes_it() -> None:
    limits = _set(LimitSet(fallback_a=6.0), Limit(BOARD, 32.0), Limit(THERMAL, 16.0))
    limits.clear(THERMAL)
    limits.clear("never-set")  # harmless
    assert limits.effective(0.0).current_a == 32.0
    assert limits.get(THERMAL) is None


def test_ties_go_to_the_limit_set_first() -> None:
    limits = _set(LimitSet(fallback_a=6.0), Limit(BOARD, 32.0), Limit(OCPP, 16.0), Limit(USER, 16.0))
    binding = limits.effective(0.0).binding
    assert binding is not None and binding.limit.source == OCPP
    limits.set(Limit(OCPP, 16.0))  # re-set: now the newest of the tie
    binding = limits.effective(0.0).binding
    assert binding is not None and binding.limit.source == USER


def test_an_expired_limit_is_replaced_by_the_fallback_not_removed() -> None:
    limits = _set(LimitSet(fallback_a=6.0), Limit(BOARD, 32.0), Limit(EMS, 20.0, expires_at=10.0))
    assert limits.effective(9.999).current_a == 20.0
    eff = limits.effective(10.0)  # at its expiry time it no longer counts
    # Removing it would give the board's 32 A; the fallback keeps the connector at the safe value.
    assert eff.current_a == 6.0
    assert eff.binding is not None
    assert eff.binding.limit.source == EMS and eff.binding.expired
    assert len(eff.chain) == 2
    assert "fallback" in eff.binding.describe()


def test_an_expired_limit_does_not_raise_a_lower_limit() -> None:
    limits = _set(LimitSet(fallback_a=6.0), Limit(THERMAL, 4.0), Limit(EMS, 20.0, expires_at=1.0))
    eff = limits.effective(5.0)
    assert eff.current_a == 4.0
    assert eff.binding is not None and eff.binding.limit.source == THERMAL


def test_explain_names_the_binding_source_and_every_link() -> None:
    limits = _set(
        LimitSet(fallback_a=6.0),
        Limit(BOARD, 32.0),
        Limit(THERMAL, 16.0, detail="connector at 71 °C"),
        Limit(EMS, 20.0, expires_at=100.0),
    )
    text = limits.effective(0.0).explain()
    lines = text.splitlines()
    assert lines[0] == "16 A, set by thermal"
    assert lines[1].startswith("  * thermal: 16 A") and "connector at 71 °C" in lines[1]
    assert lines[2] == "  - ems: 20 A until t=100"
    assert lines[3] == "  - board: 32 A"


def test_explain_says_when_the_binding_limit_is_a_fallback() -> None:
    limits = _set(LimitSet(fallback_a=6.0), Limit(BOARD, 32.0), Limit(OCPP, 11.0, expires_at=3.0))
    text = limits.effective(3.0).explain()
    assert text.splitlines()[0] == "6 A, set by ocpp"
    assert "fallback: its 11 A limit expired at t=3" in text


def test_next_expiry_is_the_earliest_future_expiry() -> None:
    limits = _set(
        LimitSet(fallback_a=6.0),
        Limit(BOARD, 32.0),
        Limit(EMS, 20.0, expires_at=30.0),
        Limit(OCPP, 16.0, expires_at=10.0),
    )
    assert limits.next_expiry(0.0) == 10.0
    assert limits.next_expiry(10.0) == 30.0  # already expired ones are past, not pending
    assert limits.next_expiry(30.0) is None
    assert LimitSet(fallback_a=0.0).next_expiry(0.0) is None


@pytest.mark.parametrize("current", [-0.1, math.nan, math.inf, -math.inf])
def test_a_limit_must_be_finite_and_not_negative(current: float) -> None:
    with pytest.raises(ValueError, match="ems"):
        Limit(EMS, current)


def test_a_limit_needs_a_source() -> None:
    with pytest.raises(ValueError, match="source"):
        Limit("", 16.0)


@pytest.mark.parametrize("fallback", [-1.0, math.nan, math.inf])
def test_the_fallback_must_be_finite_and_not_negative(fallback: float) -> None:
    with pytest.raises(ValueError, match="fallback"):
        LimitSet(fallback_a=fallback)


def test_a_zero_limit_is_a_limit() -> None:
    limits = _set(LimitSet(fallback_a=6.0), Limit(BOARD, 32.0), Limit(USER, 0.0))
    assert limits.effective(0.0).current_a == 0.0


_SOURCES = st.sampled_from([BOARD, CABLE, THERMAL, EMS, OCPP, USER, "site-fuse"])
_LIMITS = st.builds(
    Limit,
    source=_SOURCES,
    current_a=st.floats(min_value=0.0, max_value=100.0),
    expires_at=st.none() | st.floats(min_value=0.0, max_value=100.0),
)


@given(
    st.lists(_LIMITS, max_size=12),
    st.floats(min_value=0.0, max_value=32.0),
    st.floats(min_value=0.0, max_value=120.0),
)
def test_effective_is_the_minimum_over_the_values_in_force(limits: list[Limit], fallback: float, now: float) -> None:
    limit_set = _set(LimitSet(fallback_a=fallback), *limits)
    latest: dict[str, Limit] = {}
    for item in limits:
        latest.pop(item.source, None)  # one per source: the last one set, in the order of setting
        latest[item.source] = item
    in_force = {
        source: fallback if item.expires_at is not None and now >= item.expires_at else item.current_a
        for source, item in latest.items()
    }
    eff = limit_set.effective(now)
    if not in_force:
        assert eff.current_a == 0.0 and eff.binding is None
        return
    assert eff.current_a == min(in_force.values())
    assert eff.binding is not None
    # Ties: the source set (or last re-set) first binds.
    assert eff.binding.limit.source == next(src for src, value in in_force.items() if value == eff.current_a)
    assert len(eff.chain) == len(in_force)
    assert [link.current_a for link in eff.chain] == sorted(in_force.values())
    pending = [item.expires_at for item in latest.values() if item.expires_at is not None and item.expires_at > now]
    assert limit_set.next_expiry(now) == (min(pending) if pending else None)
