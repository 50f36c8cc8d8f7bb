"""Curve-based DER grid-support functions: volt-var, volt-watt, watt-var, constant power factor.

All functions are pure and work on plain floats, so the energy manager can call them every cycle
(and a benchmark can run them over arrays with a list comprehension).

Sign conventions, shared with the rest of the energy manager:

* Active power ``P`` in W, signed: positive = the EV charges (absorbs from the grid), negative = the
  EV discharges (injects into the grid).
* Reactive power ``Q`` in var: positive = injecting (over-excited, capacitive), negative = absorbing
  (under-excited, inductive), as in the IEEE 1547.1-2020 tables.
* Voltages in per unit of the nominal voltage given in the settings.

The IEEE 1547 curves are written from the DER's point of view, where active power *output*
(injection) is positive. The functions below take and return the manager's signed ``P`` and convert
internally; each says how.

Default curve points: IEEE 1547-2018 / 1547.1-2020 as encoded in ua-kxie/UL1741SB (see
/work/shared/docs/standards-facts.md section 3.3 and docs/der.md).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "PF_MIN_ABSORBING",
    "PF_MIN_INJECTING",
    "Q_CAPABILITY_ABSORBING_PU",
    "Q_CAPABILITY_INJECTING_PU",
    "VOLT_VAR_CAT_A",
    "VOLT_VAR_CAT_B",
    "VOLT_WATT_1547_1_CHAR2_ABSORBING",
    "VOLT_WATT_1547_1_CHAR3_ABSORBING",
    "VOLT_WATT_DEFAULT",
    "VOLT_WATT_GENERATING_ONLY",
    "WATT_VAR_CAT_A",
    "WATT_VAR_CAT_B",
    "DerError",
    "Excitation",
    "NormalCategory",
    "PiecewiseCurve",
    "PowerFactorError",
    "ResponseFilter",
    "fixed_power_factor",
    "volt_var",
    "volt_watt_limit",
    "watt_var",
]

NormalCategory = Literal["A", "B"]
Excitation = Literal["injecting", "absorbing"]

#: A curve longer than this is a configuration mistake, not a grid code; bounding it also bounds the
#: work of one control cycle.
MAX_CURVE_POINTS = 32


class DerError(ValueError):
    """A DER setting, curve or input that cannot be used; the message names what and why."""


class PowerFactorError(DerError):
    """A constant power factor outside the limits of the DER's normal performance category."""


def finite(name: str, value: float) -> float:
    """``value`` as a float, or a :class:`DerError` naming ``name`` when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DerError(f"{name} must be a number, not {value!r}")
    if not math.isfinite(value):
        raise DerError(f"{name} must be finite, not {value}")
    return float(value)


@dataclass(frozen=True)
class PiecewiseCurve:
    """A piecewise-linear characteristic: linear between the points, flat outside them.

    ``x`` must be non-decreasing. Two equal x values are allowed only with equal y (the 1547 Category A
    volt-var curve has V2 = V3 = VRef, both at Q = 0); a vertical jump would leave the output at that x
    undefined, so it is rejected.

    ``response_time_s`` is the open-loop response time that belongs to the curve (IEEE 2030.5
    ``DERCurve.openLoopTms`` carries it with the curve too): the time to reach 90 % of a step change,
    see :class:`ResponseFilter`. 0 means immediate.
    """

    x: tuple[float, ...]
    y: tuple[float, ...]
    response_time_s: float = 0.0
    name: str = "curve"

    def __post_init__(self) -> None:
        xs = tuple(finite(f"{self.name}: x[{i}]", v) for i, v in enumerate(self.x))
        ys = tuple(finite(f"{self.name}: y[{i}]", v) for i, v in enumerate(self.y))
        if len(xs) != len(ys):
            raise DerError(f"{self.name}: {len(xs)} x points but {len(ys)} y points")
        if len(xs) < 2:
            raise DerError(f"{self.name}: needs at least 2 points, has {len(xs)}")
        if len(xs) > MAX_CURVE_POINTS:
            raise DerError(f"{self.name}: at most {MAX_CURVE_POINTS} points, has {len(xs)}")
        for i in range(1, len(xs)):
            if xs[i] < xs[i - 1]:
                raise DerError(
                    f"{self.name}: x points must ascend, but x[{i}] = {xs[i]:g} < x[{i - 1}] = {xs[i - 1]:g}"
                )
            if xs[i] == xs[i - 1] and ys[i] != ys[i - 1]:
                raise DerError(
                    f"{self.name}: x[{i}] = x[{i - 1}] = {xs[i]:g} with different y "
                    f"({ys[i - 1]:g}, {ys[i]:g}): a vertical step is ambiguous"
                )
        if xs[0] == xs[-1]:
            raise DerError(f"{self.name}: all x points are equal ({xs[0]:g})")
        response = finite(f"{self.name}: response_time_s", self.response_time_s)
        if response < 0:
            raise DerError(f"{self.name}: response_time_s must be >= 0, not {response:g}")
        object.__setattr__(self, "x", xs)
        object.__setattr__(self, "y", ys)
        object.__setattr__(self, "response_time_s", response)

    def __call__(self, x: float) -> float:
        value = finite(f"{self.name}: input", x)
        xs, ys = self.x, self.y
        if value <= xs[0]:
            return ys[0]
        if value >= xs[-1]:
            return ys[-1]
        # First index with xs[i] > value: the segment is (i - 1, i) and xs[i] > xs[i - 1] there.
        i = bisect.bisect_right(xs, value)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (value - x0) / (x1 - x0)

    @property
    def y_min(self) -> float:
        return min(self.y)

    @property
    def y_max(self) -> float:
        return max(self.y)

    def points(self) -> list[tuple[float, float]]:
        return list(zip(self.x, self.y, strict=True))


# --- IEEE 1547-2018 default characteristics ---------------------------------------------------------
# Volt-var, Q in per unit of the nameplate apparent power (+ = injecting). IEEE 1547-2018 Table 8
# defaults = IEEE 1547.1-2020 Tables 25-27 characteristic 1 (ua-kxie/UL1741SB VoltReg/vv.py):
# Cat A: V1 0.90/+0.25, V2 = V3 = VRef 1.00/0, V4 1.10/-0.25, open-loop response time 10 s.
VOLT_VAR_CAT_A = PiecewiseCurve(
    x=(0.90, 1.00, 1.00, 1.10), y=(0.25, 0.0, 0.0, -0.25), response_time_s=10.0, name="volt-var Cat A default"
)
# Cat B: V1 0.92/+0.44, V2 0.98/0, V3 1.02/0, V4 1.08/-0.44, open-loop response time 5 s (same sources).
VOLT_VAR_CAT_B = PiecewiseCurve(
    x=(0.92, 0.98, 1.02, 1.08), y=(0.44, 0.0, 0.0, -0.44), response_time_s=5.0, name="volt-var Cat B default"
)

# Volt-watt, y = maximum active power *output* in per unit of P_rated (IEEE 1547-2018 Table 10 =
# IEEE 1547.1-2020 Table 31 characteristic 1, ua-kxie/UL1741SB VoltReg/vw.py): V1 1.06 p.u. / P1 1.0,
# V2 1.10 p.u., open-loop response time 10 s. P2 depends on the DER:
# * a DER that can absorb active power (storage, a bidirectional EV): P'2 = 0, i.e. the output is
#   driven down to zero at V2 - no more injection, absorption is not demanded;
VOLT_WATT_DEFAULT = PiecewiseCurve(
    x=(1.06, 1.10), y=(1.0, 0.0), response_time_s=10.0, name="volt-watt default (absorbing-capable, P'2 = 0)"
)
# * a generating-only DER: P2 = min(0.2, P_min / P_rated); 0.2 here (the EV has no minimum output).
VOLT_WATT_GENERATING_ONLY = PiecewiseCurve(
    x=(1.06, 1.10), y=(1.0, 0.2), response_time_s=10.0, name="volt-watt default (generating only, P2 = 0.2)"
)
# IEEE 1547.1-2020 Tables 32 and 33 (test characteristics 2 and 3) continue to P'2 = -1: at V2 the
# storage DER must absorb its full rating. Kept as examples of a curve that demands charging.
VOLT_WATT_1547_1_CHAR2_ABSORBING = PiecewiseCurve(
    x=(1.05, 1.10), y=(1.0, -1.0), response_time_s=60.0, name="volt-watt 1547.1 characteristic 2 (absorbing)"
)
VOLT_WATT_1547_1_CHAR3_ABSORBING = PiecewiseCurve(
    x=(1.09, 1.10), y=(1.0, -1.0), response_time_s=0.5, name="volt-watt 1547.1 characteristic 3 (absorbing)"
)

# Watt-var, x = active power output in per unit of rated (negative = absorbing, P'), y = Q in per unit
# of nameplate apparent power. IEEE 1547-2018 Table 9 = IEEE 1547.1-2020 Table 28 characteristic 1
# (ua-kxie/UL1741SB VoltReg/wv.py): P3' -1.0/+0.44, P2' -0.5/0, P1' -0.2/0, P1 0.2/0 (max(0.2,
# P_min/P_rated)), P2 0.5/0, P3 1.0/-0.25 (Cat A) or -0.44 (Cat B). The tables give no open-loop response
# time for watt-var; Q follows the active power, which is already rate-limited, so it is immediate.
WATT_VAR_CAT_A = PiecewiseCurve(
    x=(-1.0, -0.5, -0.2, 0.2, 0.5, 1.0), y=(0.44, 0.0, 0.0, 0.0, 0.0, -0.25), name="watt-var Cat A default"
)
WATT_VAR_CAT_B = PiecewiseCurve(
    x=(-1.0, -0.5, -0.2, 0.2, 0.5, 1.0), y=(0.44, 0.0, 0.0, 0.0, 0.0, -0.44), name="watt-var Cat B default"
)

# Constant power factor limits: PFmin,inj 0.90 for Category A and B; PFmin,abs 0.97 for Category A,
# 0.90 for Category B (IEEE 1547.1-2020 5.14.3.2, as quoted in ua-kxie/UL1741SB VoltReg/cpf.py).
PF_MIN_INJECTING: dict[str, float] = {"A": 0.90, "B": 0.90}
PF_MIN_ABSORBING: dict[str, float] = {"A": 0.97, "B": 0.90}

# Minimum reactive capability in per unit of nameplate apparent power: injection 0.44 for both
# categories, absorption 0.25 (A) / 0.44 (B). These are the extremes of the default curves above and of
# the constant-var step of IEEE 1547.1-2020 Tables 38/39 (0.44 inj for A and B); used as the default
# reactive rating when the settings give none.
Q_CAPABILITY_INJECTING_PU: dict[str, float] = {"A": 0.44, "B": 0.44}
Q_CAPABILITY_ABSORBING_PU: dict[str, float] = {"A": 0.25, "B": 0.44}


def volt_var(v_pu: float, curve: PiecewiseCurve, q_rated_var: float, *, v_ref_pu: float = 1.0) -> float:
    """Reactive power for a measured voltage, in var (+ = injecting).

    ``q_rated_var`` is what y = 1.0 on the curve stands for. The 1547 curves give Q in per unit of the
    nameplate *apparent* power, so the controller passes S_rated (in VA) here. ``v_ref_pu`` shifts the
    curve (1547 VRef: the default points are written for VRef = 1.0).
    """
    base = finite("q_rated_var", q_rated_var)
    if base < 0:
        raise DerError(f"q_rated_var must be >= 0, not {base:g}")
    shift = finite("v_ref_pu", v_ref_pu) - 1.0
    return curve(finite("v_pu", v_pu) - shift) * base


def volt_watt_limit(
    v_pu: float, curve: PiecewiseCurve, p_rated_w: float, *, p_rated_absorbing_w: float | None = None
) -> float:
    """The most the EV may *inject* at this voltage, in W (>= 0), or, when negative, the least it must absorb.

    1547 volt-watt only ever pushes active power *down* (less injection) as voltage rises: absorption
    (charging) lowers the voltage, so it is never limited at high voltage. For a DER that can absorb,
    the default curve stops at P'2 = 0 (no injection at V2 and above); curves such as 1547.1
    characteristics 2/3 continue below zero and then *demand* absorption (charging) of ``-y`` times the
    absorbing rating. In the manager's sign convention the result is a lower bound on P::

        P >= -volt_watt_limit(...)

    Positive y is scaled by ``p_rated_w`` (1547 P_rated), negative y by ``p_rated_absorbing_w``
    (1547 P'_rated, default: the same).
    """
    rated = finite("p_rated_w", p_rated_w)
    absorbing = rated if p_rated_absorbing_w is None else finite("p_rated_absorbing_w", p_rated_absorbing_w)
    if rated < 0 or absorbing < 0:
        raise DerError(f"ratings must be >= 0, not {rated:g} / {absorbing:g} W")
    y = curve(finite("v_pu", v_pu))
    return y * (rated if y >= 0 else absorbing)


def watt_var(
    p_w: float,
    curve: PiecewiseCurve,
    p_rated_w: float,
    q_rated_var: float,
    *,
    p_rated_absorbing_w: float | None = None,
) -> float:
    """Reactive power for the active power the EV exchanges, in var (+ = injecting).

    The curve's x axis is 1547's active power *output*: discharging (``p_w < 0``) maps to positive x in
    per unit of ``p_rated_w``, charging to negative x in per unit of ``p_rated_absorbing_w``.
    ``q_rated_var`` is what y = 1.0 stands for (nameplate apparent power for the 1547 curves).
    """
    p = finite("p_w", p_w)
    rated = finite("p_rated_w", p_rated_w)
    absorbing = rated if p_rated_absorbing_w is None else finite("p_rated_absorbing_w", p_rated_absorbing_w)
    base = finite("q_rated_var", q_rated_var)
    if rated <= 0 or absorbing <= 0 or base < 0:
        raise DerError(f"watt-var needs positive ratings, not P {rated:g} W, P' {absorbing:g} W, Q {base:g} var")
    output = -p  # the manager's P is + when charging; 1547's output is + when injecting
    x = output / rated if output >= 0 else output / absorbing
    return curve(x) * base


def fixed_power_factor(p_w: float, pf: float, excitation: Excitation, *, category: NormalCategory = "B") -> float:
    """Reactive power for a constant power factor, in var (+ = injecting, over-excited).

    ``|Q| = |P| * tan(acos(pf))``, with the sign from ``excitation``; the direction of P does not change
    it (1547 defines the setting as injecting or absorbing reactive power). The power factor must lie
    between the category's minimum (:data:`PF_MIN_INJECTING` / :data:`PF_MIN_ABSORBING`) and 1.
    """
    p = finite("p_w", p_w)
    factor = finite("pf", pf)
    if excitation not in ("injecting", "absorbing"):
        raise DerError(f"excitation must be 'injecting' or 'absorbing', not {excitation!r}")
    if category not in PF_MIN_INJECTING:
        raise DerError(f"normal performance category must be 'A' or 'B', not {category!r}")
    limits = PF_MIN_INJECTING if excitation == "injecting" else PF_MIN_ABSORBING
    minimum = limits[category]
    if not minimum <= factor <= 1.0:
        raise PowerFactorError(
            f"power factor {factor:g} {excitation} is outside {minimum:g}..1 for Category {category} "
            "(IEEE 1547.1-2020 5.14.3.2)"
        )
    magnitude = abs(p) * math.sqrt(1.0 / (factor * factor) - 1.0)
    return magnitude if excitation == "injecting" else -magnitude


# ln(10): a first-order lag reaches 90 % of a step after tau * ln(10).
_LN10 = math.log(10.0)


class ResponseFilter:
    """First-order lag that reaches 90 % of a step change in ``response_time_s``.

    IEEE 1547-2018 specifies each function's speed as an *open-loop response time*: the time to reach
    90 % of the change after a step (1547.1-2020: P(Tr) = 90 % x (P_final - P_initial) + P_initial).
    A first-order lag with tau = Tr / ln(10) does exactly that. The filter steps with the caller's
    ``now`` (any sample period); exact discretisation, so it is stable for any step length.
    """

    def __init__(self, response_time_s: float, initial: float | None = None) -> None:
        tr = finite("response_time_s", response_time_s)
        if tr < 0:
            raise DerError(f"response_time_s must be >= 0, not {tr:g}")
        self._tau = tr / _LN10
        self._value = None if initial is None else finite("initial", initial)
        self._last: float | None = None

    @property
    def response_time_s(self) -> float:
        return self._tau * _LN10

    @property
    def value(self) -> float | None:
        """The last output, or None before the first step."""
        return self._value

    def reset(self, value: float | None = None) -> None:
        """Forget the history; the next step starts from ``value`` (None: from its own target)."""
        self._value = None if value is None else finite("value", value)
        self._last = None

    def step(self, now: float, target: float) -> float:
        t = finite("now", now)
        goal = finite("target", target)
        if self._last is not None and t < self._last:
            raise DerError(f"time went backwards: {t:g} after {self._last:g}")
        if self._value is None or self._tau == 0.0:
            self._value = goal
        elif self._last is not None:
            alpha = 1.0 - math.exp(-(t - self._last) / self._tau)
            self._value += (goal - self._value) * alpha
        # With an initial value and no previous time, the first step only records the time.
        self._last = t
        return self._value
