"""The supervisor's recovery rules, the over-current and the thermal checks, through their public API."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.safety.faults import CATALOGUE, FaultCode, Reaction, Recovery
from firmware.safety.supervisor import OvercurrentCheck, Supervisor, ThermalCheck


def _codes(recovery: Recovery) -> list[FaultCode]:
    return [code for code, spec in CATALOGUE.items() if spec.recovery is recovery]


def test_every_fault_has_a_reaction_and_a_recovery_rule() -> None:
    assert set(CATALOGUE) == set(FaultCode)
    for spec in CATALOGUE.values():
        assert spec.condition and spec.clears_when


@pytest.mark.parametrize("code", _codes(Recovery.AUTO), ids=lambda c: c.value)
def test_auto_faults_clear_when_the_condition_goes(code: FaultCode) -> None:
    sup = Supervisor()
    sup.condition(code, True, 1.0, "x")
    assert code in sup.active
    sup.condition(code, True, 2.0)
    assert code in sup.active
    sup.condition(code, False, 3.0)
    assert code not in sup.active
    events = sup.take_events()
    assert [(e.code, e.raised, e.at) for e in events] == [(code, True, 1.0), (code, False, 3.0)]


@pytest.mark.parametrize("code", _codes(Recovery.UNPLUG), ids=lambda c: c.value)
def test_unplug_faults_need_the_condition_gone_and_then_an_unplug(code: FaultCode) -> None:
    sup = Supervisor()
    sup.ev_plugged()
    sup.condition(code, True, 1.0)
    sup.ev_unplugged(1.5)  # unplugged while the condition still holds: not enough
    sup.ev_plugged()
    sup.condition(code, False, 2.0)
    assert code in sup.active
    sup.condition(code, True, 2.5)  # comes back before the unplug
    sup.condition(code, False, 3.0)
    assert code in sup.active
    sup.ev_unplugged(4.0)
    assert code not in sup.active


@pytest.mark.parametrize("code", _codes(Recovery.UNPLUG), ids=lambda c: c.value)
def test_unplug_faults_clear_when_the_condition_goes_with_no_ev_there(code: FaultCode) -> None:
    sup = Supervisor()  # no EV connected (pilot A): a fault raised now has no car to re-energise
    sup.condition(code, True, 1.0)
    sup.condition(code, False, 2.0)
    assert code not in sup.active


@pytest.mark.parametrize("code", _codes(Recovery.SERVICE), ids=lambda c: c.value)
def test_service_faults_only_clear_by_an_operator(code: FaultCode) -> None:
    sup = Supervisor()
    sup.raise_fault(code, 1.0, "seen once")
    sup.ev_unplugged(2.0)
    assert code in sup.active
    assert sup.service_clear(code, 3.0)
    assert code not in sup.active


def test_service_clear_refuses_while_the_condition_holds() -> None:
    sup = Supervisor()
    sup.condition(FaultCode.RCD_TRIPPED, True, 1.0)
    assert not sup.service_clear(FaultCode.RCD_TRIPPED, 2.0)
    assert FaultCode.RCD_TRIPPED in sup.active


def test_reactions_and_the_new_emergency_edge() -> None:
    sup = Supervisor()
    sup.condition(FaultCode.PROXIMITY_INVALID, True, 1.0)
    assert sup.stop and not sup.emergency and not sup.take_new_emergency()
    sup.condition(FaultCode.RCD_TRIPPED, True, 2.0)
    assert sup.emergency
    assert sup.take_new_emergency() is True
    assert sup.take_new_emergency() is False  # an edge, reported once
    sup.condition(FaultCode.RCD_TRIPPED, True, 3.0)  # still present: no new edge
    assert sup.take_new_emergency() is False


@given(
    st.lists(st.tuples(st.sampled_from(list(FaultCode)), st.sampled_from(["on", "off", "unplug", "plug"])), max_size=60)
)
def test_an_active_fault_never_clears_against_its_rule(ops: list[tuple[FaultCode, str]]) -> None:
    sup = Supervisor()
    present: dict[FaultCode, bool] = {}
    unplugged_since_gone: dict[FaultCode, bool] = {}
    connected = False
    for t, (code, op) in enumerate(ops):
        before = set(sup.active)
        if op == "plug":
            sup.ev_plugged()
            connected = True
        elif op == "unplug":
            connected = False
            sup.ev_unplugged(float(t))
            for c, p in present.items():
                if not p:
                    unplugged_since_gone[c] = True
        else:
            on = op == "on"
            if present.get(code) != on:
                unplugged_since_gone[code] = False
            sup.condition(code, on, float(t))
            present[code] = on
        for c, p in present.items():
            if p:
                assert c in sup.active  # a present condition always has its fault active
        for c in before - set(sup.active):  # cleared by this operation: only as its rule allows
            rule = CATALOGUE[c].recovery
            assert not present[c]
            unplug_ok = unplugged_since_gone.get(c, False) or not connected
            assert rule is Recovery.AUTO or (rule is Recovery.UNPLUG and unplug_ok)


# ---------------------------------------------------------------------------------- over-current
def test_soft_overcurrent_needs_7_s_above_offer_plus_10_percent_plus_half_an_amp() -> None:
    check = OvercurrentCheck()
    # 16 A offered: the threshold is 16 * 1.1 + 0.5 = 18.1 A.
    assert check.check(current_a=18.0, offered_a=16.0, rating_a=32.0, now=0.0) == (False, False)
    assert check.check(current_a=18.2, offered_a=16.0, rating_a=32.0, now=1.0) == (False, False)
    assert check.check(current_a=18.2, offered_a=16.0, rating_a=32.0, now=7.9) == (False, False)
    assert check.check(current_a=18.2, offered_a=16.0, rating_a=32.0, now=8.0) == (True, False)
    # dropping below resets the timer
    assert check.check(current_a=15.0, offered_a=16.0, rating_a=32.0, now=9.0) == (False, False)
    assert check.check(current_a=18.2, offered_a=16.0, rating_a=32.0, now=10.0) == (False, False)


def test_hard_overcurrent_is_immediate_above_the_rating() -> None:
    check = OvercurrentCheck()
    # rating 32 A: 32 * 1.1 + 0.5 = 35.7 A
    assert check.check(current_a=35.6, offered_a=32.0, rating_a=32.0, now=0.0)[1] is False
    assert check.check(current_a=35.8, offered_a=32.0, rating_a=32.0, now=0.0)[1] is True


def test_current_with_nothing_offered_counts_against_zero() -> None:
    check = OvercurrentCheck()
    assert check.check(current_a=0.4, offered_a=None, rating_a=32.0, now=0.0) == (False, False)
    check.check(current_a=3.0, offered_a=None, rating_a=32.0, now=0.0)
    assert check.check(current_a=3.0, offered_a=None, rating_a=32.0, now=7.0) == (True, False)


# ---------------------------------------------------------------------------------- thermal
@pytest.mark.parametrize(
    ("temps", "factor"),
    [
        ([60.0], 1.0),
        ([65.0], 0.5),
        ([67.9], 0.5),
        ([68.0], 0.25),
        ([71.0], 0.0),
        ([65.0, 68.0, 71.0], 0.0),  # rising through every step
        ([71.0, 69.0, 66.0], 0.25),  # falling: 3 °C below the trip, up one step (quarter)
        ([71.0, 68.5], 0.0),  # not 3 °C below the trip yet
        ([71.0, 67.9], 0.25),  # 3 °C below the trip: up one step only
        ([71.0, 67.9, 64.9], 0.5),  # 3 °C below the middle step: up one more
        ([66.0, 63.0], 0.5),  # derated: stays until 3 °C below 65
        ([66.0, 61.9], 1.0),
    ],
)
def test_thermal_steps_with_hysteresis(temps: list[float], factor: float) -> None:
    check = ThermalCheck({"socket": (65.0, 71.0)})
    verdict = None
    for temp in temps:
        verdict = check.update({"socket": temp})
    assert verdict is not None and verdict.factor == factor


def test_thermal_the_hottest_sensor_decides() -> None:
    check = ThermalCheck({"socket": (65.0, 71.0), "relay": (70.0, 80.0)})
    verdict = check.update({"socket": 40.0, "relay": 76.0})
    assert (verdict.factor, verdict.hottest) == (0.25, "relay")


@given(st.lists(st.floats(min_value=-20, max_value=120), min_size=1, max_size=40))
def test_thermal_never_allows_more_than_the_step_the_temperature_is_in(temps: list[float]) -> None:
    check = ThermalCheck({"s": (65.0, 71.0)})
    for temp in temps:
        factor = check.update({"s": temp}).factor
        step = 0.0 if temp >= 71 else 0.25 if temp >= 68 else 0.5 if temp >= 65 else 1.0
        assert factor <= step


def test_catalogue_reactions_are_the_documented_ones() -> None:
    assert CATALOGUE[FaultCode.CONTACTOR_WELDED].recovery is Recovery.SERVICE
    assert CATALOGUE[FaultCode.RCD_TRIPPED].reaction is Reaction.EMERGENCY
    assert CATALOGUE[FaultCode.OVERTEMPERATURE_DERATE].reaction is Reaction.DERATE
