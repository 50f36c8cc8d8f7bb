"""Meter readings as OCPP sampled values, for the measurands the CSMS configured.

1.6 §7.31 SampledValue (value as a string, unit beside it) and 2.0.1 SampledValueType (value as a
number, ``unitOfMeasure``). Configured by MeterValuesSampledData / MeterValuesAlignedData /
StopTxnSampledData (1.6) and the SampledDataCtrlr / AlignedDataCtrlr measurand lists (2.0.1).
"""

from __future__ import annotations

from typing import Any, Literal

from hal.types import MeterReading

Context = Literal["Sample.Periodic", "Sample.Clock", "Transaction.Begin", "Transaction.End", "Trigger"]

#: Measurands this firmware can report from its meter, with their unit (1.6 §7.31 / 2.0.1 MeasurandEnumType).
SUPPORTED: dict[str, str] = {
    "Energy.Active.Import.Register": "Wh",
    "Energy.Active.Export.Register": "Wh",
    "Power.Active.Import": "W",
    "Power.Active.Export": "W",
    "Current.Import": "A",
    "Current.Export": "A",
    "Voltage": "V",
    "Frequency": "Hz",
}
_PHASES = ("L1", "L2", "L3")


class MeasurandError(ValueError):
    """A configured measurand this firmware cannot report."""


def check_measurands(names: list[str]) -> None:
    unknown = [n for n in names if n not in SUPPORTED]
    if unknown:
        raise MeasurandError(f"unsupported measurand(s) {', '.join(unknown)}; supported: {', '.join(SUPPORTED)}")


def _values(reading: MeterReading, measurand: str) -> list[tuple[str | None, float]]:
    """(phase, value) pairs for one measurand; phase None for a total."""
    if measurand == "Energy.Active.Import.Register":
        return [(None, reading.import_wh)]
    if measurand == "Energy.Active.Export.Register":
        return [(None, reading.export_wh)]
    if measurand == "Power.Active.Import":
        return [(None, max(0.0, reading.total_power_w))]
    if measurand == "Power.Active.Export":
        return [(None, max(0.0, -reading.total_power_w))]
    if measurand == "Current.Import":
        return [(_PHASES[i], max(0.0, a)) for i, a in enumerate(reading.current_a)]
    if measurand == "Current.Export":
        return [(_PHASES[i], max(0.0, -a)) for i, a in enumerate(reading.current_a)]
    if measurand == "Voltage":
        # Phase-to-neutral voltages (1.6 §7.30 Phase "L1-N").
        return [(f"{_PHASES[i]}-N", v) for i, v in enumerate(reading.voltage_v)]
    if measurand == "Frequency":
        return [(None, reading.frequency_hz)]
    raise MeasurandError(f"unsupported measurand {measurand!r}")


def _rounded(measurand: str, value: float) -> float:
    # Energy to the Wh, the rest to 0.1: more digits are noise from the meter, not information.
    return round(value, 0 if measurand.startswith("Energy") else 1)


def sampled_values_16(reading: MeterReading, measurands: list[str], context: Context) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for measurand in measurands:
        for phase, value in _values(reading, measurand):
            item: dict[str, Any] = {
                "value": f"{_rounded(measurand, value):g}" if not measurand.startswith("Energy") else f"{value:.0f}",
                "context": context,
                "measurand": measurand,
                "location": "Outlet",
                "unit": SUPPORTED[measurand],
            }
            if phase is not None:
                item["phase"] = phase
            out.append(item)
    return out


def sampled_values_201(reading: MeterReading, measurands: list[str], context: Context) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for measurand in measurands:
        for phase, value in _values(reading, measurand):
            item: dict[str, Any] = {
                "value": _rounded(measurand, value),
                "context": context,
                "measurand": measurand,
                "location": "Outlet",
                "unitOfMeasure": {"unit": SUPPORTED[measurand]},
            }
            if phase is not None:
                item["phase"] = phase
            out.append(item)
    return out
