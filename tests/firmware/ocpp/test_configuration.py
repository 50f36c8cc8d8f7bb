"""OCPP 1.6 configuration keys: catalogue, GetConfiguration / ChangeConfiguration, persistence."""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.ocpp.configuration import (
    CATALOGUE,
    MEASURANDS_16,
    ConfigError,
    Configuration,
    KeySpec,
    TooManyKeysError,
)

ROOT = Path(__file__).resolve().parents[3]

# standards-facts.md 4.2: the required keys of the Core, SmartCharging and LocalAuthList profiles.
REQUIRED_KEYS = """AuthorizeRemoteTxRequests ClockAlignedDataInterval ConnectionTimeOut ConnectorPhaseRotation
GetConfigurationMaxKeys HeartbeatInterval LocalAuthorizeOffline LocalPreAuthorize MeterValuesAlignedData
MeterValuesSampledData MeterValueSampleInterval NumberOfConnectors ResetRetries StopTransactionOnInvalidId
StopTxnAlignedData StopTxnSampledData SupportedFeatureProfiles TransactionMessageAttempts
TransactionMessageRetryInterval UnlockConnectorOnEVSideDisconnect ChargeProfileMaxStackLevel
ChargingScheduleAllowedChargingRateUnit ChargingScheduleMaxPeriods MaxChargingProfilesInstalled LocalAuthListEnabled
LocalAuthListMaxLength SendLocalListMaxLength SecurityProfile AuthorizationKey""".split()


def _schema(name: str) -> dict[str, Any]:
    text = resources.files("ocpp").joinpath("v16", "schemas", name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _value(config: Configuration, key: str) -> str | None:
    known, unknown = config.get([key])
    assert unknown == [] and len(known) == 1
    value = known[0].get("value")
    return value if value is None else str(value)


# ---------------------------------------------------------------------- catalogue and GetConfiguration


def test_catalogue_has_every_required_key() -> None:
    config = Configuration(None)
    assert set(REQUIRED_KEYS) <= set(config.keys())


@pytest.mark.parametrize(
    ("key", "default"),
    [
        ("MeterValuesSampledData", "Energy.Active.Import.Register,Power.Active.Import,Current.Import,Voltage"),
        ("MeterValueSampleInterval", "60"),
        ("ClockAlignedDataInterval", "900"),
        ("HeartbeatInterval", "300"),
        ("ConnectionTimeOut", "60"),
        ("TransactionMessageAttempts", "3"),
        ("TransactionMessageRetryInterval", "30"),
        ("LocalAuthorizeOffline", "true"),
        ("LocalPreAuthorize", "false"),
        ("AllowOfflineTxForUnknownId", "false"),
        ("AuthorizationCacheEnabled", "true"),
        ("StopTransactionOnInvalidId", "true"),
        ("StopTransactionOnEVSideDisconnect", "true"),
        ("UnlockConnectorOnEVSideDisconnect", "true"),
        (
            "SupportedFeatureProfiles",
            "Core,FirmwareManagement,LocalAuthListManagement,Reservation,SmartCharging,RemoteTrigger",
        ),
        ("ChargingScheduleAllowedChargingRateUnit", "Current,Power"),
        ("ChargingScheduleMaxPeriods", "1440"),
        ("MaxChargingProfilesInstalled", "500"),
        ("NumberOfConnectors", "1"),
        ("ConnectorPhaseRotation", "1.Unknown"),
    ],
)
def test_defaults(key: str, default: str) -> None:
    assert _value(Configuration(None), key) == default


def test_get_all_matches_the_get_configuration_conf_schema() -> None:
    config = Configuration(None, defaults={"NumberOfConnectors": "2"})
    assert config.change("AuthorizationKey", "0123456789abcdef") == "Accepted"
    known, unknown = config.get(None)
    assert unknown == []
    assert [entry["key"] for entry in known] == config.keys()
    jsonschema.validate({"configurationKey": known}, _schema("GetConfigurationResponse.json"))
    readonly = {entry["key"] for entry in known if entry["readonly"]}
    assert {"NumberOfConnectors", "SupportedFeatureProfiles", "GetConfigurationMaxKeys"} <= readonly
    assert "HeartbeatInterval" not in readonly


def test_get_lists_unknown_keys_and_matches_case_insensitively() -> None:
    known, unknown = Configuration(None).get(["heartbeatinterval", "NoSuchKey", "HEARTBEATINTERVAL"])
    assert [entry["key"] for entry in known] == ["HeartbeatInterval", "HeartbeatInterval"]
    assert unknown == ["NoSuchKey"]


def test_get_configuration_max_keys_limits_the_request() -> None:
    config = Configuration(None, defaults={"GetConfigurationMaxKeys": "3"})
    known, _ = config.get(["HeartbeatInterval", "ResetRetries", "Nope"])
    assert len(known) == 2
    with pytest.raises(TooManyKeysError) as caught:
        config.get(["HeartbeatInterval", "ResetRetries", "ConnectionTimeOut", "LocalPreAuthorize"])
    assert caught.value.code == "OccurenceConstraintViolation"
    all_keys, _ = config.get(None)  # "all keys" is not a list of requested keys
    assert len(all_keys) > 3
    assert len(config.get([])[0]) == len(all_keys)


def test_authorization_key_is_write_only() -> None:
    config = Configuration(None)
    assert config.change("AuthorizationKey", "s3cret-s3cret-s3cret") == "Accepted"
    known, _ = config.get(["AuthorizationKey"])
    assert known == [{"key": "AuthorizationKey", "readonly": False}]
    every, _ = config.get(None)
    assert all("s3cret" not in json.dumps(entry) for entry in every)
    assert config.get_str("AuthorizationKey") == "s3cret-s3cret-s3cret"


def test_short_authorization_key(caplog: pytest.LogCaptureFixture) -> None:
    config = Configuration(None)
    assert config.change("AuthorizationKey", "1234567") == "Rejected"
    with caplog.at_level(logging.WARNING, logger="firmware.ocpp.configuration"):
        assert config.change("AuthorizationKey", "12345678") == "Accepted"
    assert "fewer than the advised 16" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="firmware.ocpp.configuration"):
        assert config.change("AuthorizationKey", "1234567890123456") == "Accepted"
    assert "advised" not in caplog.text


# ---------------------------------------------------------------------- ChangeConfiguration validation

CHANGES: list[tuple[str, str, str, str | None]] = [
    # (key, value, status, value reported afterwards when accepted)
    ("HeartbeatInterval", "120", "Accepted", "120"),
    ("HeartbeatInterval", " 0120 ", "Accepted", "120"),
    ("HeartbeatInterval", "+45", "Accepted", "45"),
    ("HeartbeatInterval", "0", "Accepted", "0"),
    ("HeartbeatInterval", "-1", "Rejected", None),
    ("HeartbeatInterval", "12.5", "Rejected", None),
    ("HeartbeatInterval", "1e3", "Rejected", None),
    ("HeartbeatInterval", "1_000", "Rejected", None),
    ("HeartbeatInterval", "", "Rejected", None),
    ("HeartbeatInterval", "2147483647", "Accepted", "2147483647"),
    ("HeartbeatInterval", "2147483648", "Rejected", None),
    ("heartbeatinterval", "60", "Accepted", "60"),
    ("LocalPreAuthorize", "TRUE", "Accepted", "true"),
    ("LocalPreAuthorize", "False", "Accepted", "false"),
    ("LocalPreAuthorize", "yes", "Rejected", None),
    ("LocalPreAuthorize", "1", "Rejected", None),
    ("MeterValuesSampledData", "Voltage, Current.Import", "Accepted", "Voltage,Current.Import"),
    ("MeterValuesSampledData", "", "Accepted", ""),
    ("MeterValuesSampledData", "Voltage,Voltage", "Rejected", None),
    ("MeterValuesSampledData", "Voltage,,Current.Import", "Rejected", None),
    ("MeterValuesSampledData", "Energy.Active.Net", "Rejected", None),  # 2.0.1 only
    ("MeterValuesSampledData", "SoC", "Rejected", None),  # 1.6 enum, but the meter cannot report it
    ("MeterValuesSampledData", "voltage", "Rejected", None),
    ("StopTxnAlignedData", "Energy.Active.Import.Register", "Accepted", "Energy.Active.Import.Register"),
    ("ConnectorPhaseRotation", "0.RST,1.RTS", "Accepted", "0.RST,1.RTS"),
    ("ConnectorPhaseRotation", "1.NotApplicable", "Accepted", "1.NotApplicable"),
    ("ConnectorPhaseRotation", "2.RST", "Rejected", None),  # one connector only
    ("ConnectorPhaseRotation", "1.RST,1.TSR", "Rejected", None),
    ("ConnectorPhaseRotation", "1.XYZ", "Rejected", None),
    ("ConnectorPhaseRotation", "RST", "Rejected", None),
    ("NumberOfConnectors", "2", "Rejected", None),
    ("SupportedFeatureProfiles", "Core", "Rejected", None),
    ("GetConfigurationMaxKeys", "5", "Rejected", None),
    ("ChargingScheduleAllowedChargingRateUnit", "Current", "Rejected", None),
    ("SecurityProfile", "0", "Rejected", None),  # not above the current 0
    ("SecurityProfile", "4", "Rejected", None),
    ("SecurityProfile", "1", "Rejected", None),  # no AuthorizationKey yet
    ("CpoName", "Example CPO", "Accepted", "Example CPO"),
    ("CpoName", "x" * 501, "Rejected", None),
    ("NoSuchKey", "1", "NotSupported", None),
    ("LightIntensity", "50", "NotSupported", None),
]


@pytest.mark.parametrize(("key", "value", "status", "reported"), CHANGES)
def test_change(key: str, value: str, status: str, reported: str | None) -> None:
    config = Configuration(None)
    before, _ = config.get(None)
    assert config.change(key, value) == status
    if status == "Accepted":
        assert _value(config, key) == reported
    else:
        after, _ = config.get(None)
        assert after == before


def test_change_rejects_a_non_string_value() -> None:
    config = Configuration(None)
    assert config.change("HeartbeatInterval", 60) == "Rejected"  # type: ignore[arg-type]
    assert config.get_int("HeartbeatInterval") == 300


def test_security_profile_only_goes_up_and_needs_a_key_for_basic_auth() -> None:
    config = Configuration(None)
    assert config.change("SecurityProfile", "1") == "Rejected"
    assert config.change("AuthorizationKey", "0123456789abcdef") == "Accepted"
    assert config.change("SecurityProfile", "1") == "Accepted"
    assert config.change("SecurityProfile", "0") == "Rejected"
    assert config.change("SecurityProfile", "1") == "Rejected"
    assert config.change("SecurityProfile", "3") == "Accepted"
    assert config.get_int("SecurityProfile") == 3


def test_measurand_lists_respect_their_max_length_key() -> None:
    config = Configuration(None, defaults={"MeterValuesSampledDataMaxLength": "2", "MeterValuesSampledData": "Voltage"})
    assert config.change("MeterValuesSampledData", "Voltage,Current.Import") == "Accepted"
    assert config.change("MeterValuesSampledData", "Voltage,Current.Import,Frequency") == "Rejected"
    assert config.get_csl("MeterValuesSampledData") == ["Voltage", "Current.Import"]


def test_phase_rotation_follows_the_number_of_connectors() -> None:
    config = Configuration(None, defaults={"NumberOfConnectors": "2"})
    assert config.get_csl("ConnectorPhaseRotation") == ["1.Unknown", "2.Unknown"]
    assert config.get_int("ConnectorPhaseRotationMaxLength") == 3
    assert config.change("ConnectorPhaseRotation", "0.RST,1.RST,2.STR") == "Accepted"
    assert config.change("ConnectorPhaseRotation", "3.RST") == "Rejected"


@pytest.mark.parametrize(
    "defaults",
    [
        {"NoSuchKey": "1"},
        {"NumberOfConnectors": "zero"},
        {"NumberOfConnectors": "0"},
        {"HeartbeatInterval": 60},
        {"MeterValuesSampledData": "Bogus"},
        {"MeterValuesSampledDataMaxLength": "2", "MeterValuesSampledData": "Voltage,Current.Import,Frequency"},
        {"MeterValuesSampledDataMaxLength": "2"},  # the default list has four measurands
        {"NumberOfConnectors": "1", "ConnectorPhaseRotation": "2.RST"},
    ],
)
def test_bad_defaults_are_refused(defaults: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=list(defaults)[-1] if len(defaults) > 1 else next(iter(defaults))):
        Configuration(None, defaults=defaults)


def test_board_defaults_for_several_connectors() -> None:
    defaults = {
        "ConnectorPhaseRotation": "0.RST,1.RST,2.RTS",
        "NumberOfConnectors": "2",
        "GetConfigurationMaxKeys": "9",
    }
    config = Configuration(None, defaults=defaults)
    assert config.get_csl("ConnectorPhaseRotation") == ["0.RST", "1.RST", "2.RTS"]
    assert config.get_int("NumberOfConnectors") == 2
    assert config.get_int("GetConfigurationMaxKeys") == 9


def test_typed_accessors() -> None:
    config = Configuration(None)
    assert config.get_int("HeartbeatInterval") == 300
    assert config.get_bool("LocalAuthorizeOffline") is True
    assert config.get_csl("ChargingScheduleAllowedChargingRateUnit") == ["Current", "Power"]
    assert config.get_csl("StopTxnAlignedData") == []
    assert config.get_str("HeartbeatInterval") == "300"
    assert config.get_int("heartbeatinterval") == 300
    with pytest.raises(KeyError, match="HeartbeatInterval is int, not bool"):
        config.get_bool("HeartbeatInterval")
    with pytest.raises(KeyError, match="NoSuchKey"):
        config.get_int("NoSuchKey")


def test_on_change_hears_accepted_changes_only() -> None:
    config = Configuration(None)
    heard: list[tuple[str, str]] = []
    config.on_change = lambda key, value: heard.append((key, value))
    assert config.change("heartbeatINTERVAL", "0060") == "Accepted"
    assert config.change("HeartbeatInterval", "-5") == "Rejected"
    assert config.change("NumberOfConnectors", "3") == "Rejected"
    assert config.change("LocalPreAuthorize", "TRUE") == "Accepted"
    assert heard == [("HeartbeatInterval", "60"), ("LocalPreAuthorize", "true")]


def test_a_failing_listener_does_not_fail_the_change(caplog: pytest.LogCaptureFixture) -> None:
    config = Configuration(None)

    def broken(key: str, value: str) -> None:
        raise RuntimeError("listener bug")

    config.on_change = broken
    assert config.change("HeartbeatInterval", "90") == "Accepted"
    assert config.get_int("HeartbeatInterval") == 90
    assert "on_change listener failed" in caplog.text


def test_reboot_required_key() -> None:
    vendor = KeySpec("VendorRelayTest", "bool", "false", reboot_required=True)
    config = Configuration(None, catalogue=[*CATALOGUE, vendor])
    assert config.change("VendorRelayTest", "true") == "RebootRequired"
    assert config.get_bool("VendorRelayTest") is True


# ---------------------------------------------------------------------- persistence


def test_changes_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ocpp16-config.json"
    config = Configuration(path, defaults={"NumberOfConnectors": "2"})
    assert config.change("HeartbeatInterval", "45") == "Accepted"
    assert config.change("MeterValuesSampledData", "Voltage") == "Accepted"
    assert config.change("AuthorizationKey", "0123456789abcdef") == "Accepted"
    reopened = Configuration(path, defaults={"NumberOfConnectors": "2"})
    assert reopened.get_int("HeartbeatInterval") == 45
    assert reopened.get_csl("MeterValuesSampledData") == ["Voltage"]
    assert reopened.get_str("AuthorizationKey") == "0123456789abcdef"
    assert reopened.get_int("ResetRetries") == 3
    # Only what was changed is on file: the other keys follow the firmware's defaults.
    stored = json.loads(path.read_text())
    assert set(stored["values"]) == {"HeartbeatInterval", "MeterValuesSampledData", "AuthorizationKey"}
    assert path.stat().st_mode & 0o077 == 0  # the file holds the authorization key


def test_no_file_means_defaults(tmp_path: Path) -> None:
    config = Configuration(tmp_path / "absent.json")
    assert config.get_int("HeartbeatInterval") == 300
    assert not (tmp_path / "absent.json").exists()


def test_unknown_and_read_only_keys_on_file_are_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "config.json"
    values = {"HeartbeatInterval": "77", "RetiredKey": "1", "NumberOfConnectors": "9"}
    path.write_text(json.dumps({"format": 1, "values": values}))
    config = Configuration(path)
    assert config.get_int("HeartbeatInterval") == 77
    assert config.get_int("NumberOfConnectors") == 1
    assert "RetiredKey" in caplog.text


CORRUPT_FILES = [
    pytest.param(b'{"format": 1, "values": {"HeartbeatInterval": "6', id="torn"),
    pytest.param(b"", id="empty"),
    pytest.param(b"\xff\xfe\x00garbage", id="binary"),
    pytest.param(b"[1, 2]", id="not-an-object"),
    pytest.param(b'{"format": 99, "values": {}}', id="newer-format"),
    pytest.param(b'{"format": 1, "values": []}', id="values-not-object"),
    pytest.param(b'{"format": 1, "values": {"HeartbeatInterval": "-4"}}', id="invalid-value"),
    pytest.param(b'{"format": 1, "values": {"HeartbeatInterval": 60}}', id="value-not-string"),
]


@pytest.mark.parametrize("content", CORRUPT_FILES)
def test_a_corrupt_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        Configuration(path)
    assert caught.value.path == path
    assert str(path) in str(caught.value)
    assert path.read_bytes() == content  # left alone without recover


@pytest.mark.parametrize("content", CORRUPT_FILES)
def test_recover_falls_back_to_defaults_and_keeps_the_bad_file(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(content)
    config = Configuration(path, recover=True)
    assert config.get_int("HeartbeatInterval") == 300
    assert "starting from defaults" in caplog.text and str(path) in caplog.text
    assert (tmp_path / "config.json.corrupt").read_bytes() == content
    assert config.change("HeartbeatInterval", "33") == "Accepted"
    assert Configuration(path).get_int("HeartbeatInterval") == 33


def test_an_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.mkdir()  # reading a directory fails with an OSError, as an unreadable file would
    with pytest.raises(ConfigError, match="cannot read"):
        Configuration(path)


def test_a_failed_write_leaves_the_old_file_and_rejects_the_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.json"
    config = Configuration(path)
    assert config.change("HeartbeatInterval", "45") == "Accepted"
    before = path.read_bytes()
    heard: list[str] = []
    config.on_change = lambda key, value: heard.append(value)

    def power_cut(src: object, dst: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", power_cut)  # the write dies before the rename
    assert config.change("HeartbeatInterval", "99") == "Rejected"
    monkeypatch.undo()
    assert config.get_int("HeartbeatInterval") == 45
    assert heard == []
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary file left behind
    assert Configuration(path).get_int("HeartbeatInterval") == 45


def test_a_temporary_file_left_by_a_crash_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    assert Configuration(path).change("HeartbeatInterval", "45") == "Accepted"
    leftover = tmp_path / ".config.json.abc123.tmp"
    leftover.write_text('{"format": 1, "values": {"HeartbeatInt')
    assert Configuration(path).get_int("HeartbeatInterval") == 45
    assert not leftover.exists()


CHILD = """
import sys
from pathlib import Path
from firmware.ocpp.configuration import Configuration
config = Configuration(Path(sys.argv[1]))
value = config.get_int("HeartbeatInterval")
while True:
    value += 1
    assert config.change("HeartbeatInterval", str(value)) == "Accepted"
    print(value, flush=True)
"""


def test_a_killed_writer_leaves_a_whole_file(tmp_path: Path) -> None:
    """SIGKILL at random points of a stream of changes: the file always opens, with the last value the
    child reported saved or the one it was saving."""
    path = tmp_path / "config.json"
    deadline = time.monotonic() + 20.0
    for round_ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        assert proc.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        output = b""
        try:
            while output.count(b"\n") < 20 + 15 * round_:
                assert time.monotonic() < deadline, "the child is too slow"
                assert selector.select(timeout=5.0), "the child printed nothing for 5 s"
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, "the child died"
                output += chunk
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=5.0)
            selector.close()
            proc.stdout.close()
        last_reported = int(output.rsplit(b"\n", 2)[-2])
        value = Configuration(path).get_int("HeartbeatInterval")
        assert last_reported <= value <= last_reported + 1


# ---------------------------------------------------------------------- property: accepted values read back normalised


def _writable(spec: KeySpec) -> bool:
    return not spec.readonly and spec.name != "SecurityProfile"  # SecurityProfile only goes up


def _spaced(members: list[str]) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(["", " "]), min_size=len(members) * 2, max_size=len(members) * 2).map(
        lambda pads: ",".join(pads[2 * i] + m + pads[2 * i + 1] for i, m in enumerate(members))
    )


@st.composite
def accepted_change(draw: st.DrawFn) -> tuple[str, str, str]:
    """(key, value as a CSMS might send it, the normalised value)"""
    spec = draw(st.sampled_from([s for s in CATALOGUE if _writable(s)]))
    if spec.kind == "int":
        number = draw(st.integers(min_value=spec.minimum or 0, max_value=spec.maximum or 2**31 - 1))
        zeros = draw(st.integers(min_value=0, max_value=3))
        return spec.name, "0" * zeros + str(number), str(number)
    if spec.kind == "bool":
        flag = draw(st.sampled_from(["true", "false"]))
        text = "".join(c.upper() if draw(st.booleans()) else c for c in flag)
        return spec.name, text, flag
    if spec.kind == "csl":
        if spec.name == "ConnectorPhaseRotation":
            rotations = ["NotApplicable", "Unknown", "RST", "RTS", "SRT", "STR", "TRS", "TSR"]
            connectors = draw(st.lists(st.sampled_from([0, 1]), unique=True))
            members = [f"{c}.{draw(st.sampled_from(rotations))}" for c in connectors]
        else:
            members = draw(st.lists(st.sampled_from(sorted(MEASURANDS_16)), unique=True))
        return spec.name, draw(_spaced(members)) if members else "", ",".join(members)
    text = draw(st.text(min_size=max(spec.min_length, 1), max_size=40))
    return spec.name, text, text


@settings(max_examples=300, deadline=None)
@given(accepted_change())
def test_an_accepted_value_reads_back_normalised(change: tuple[str, str, str]) -> None:
    key, sent, normalised = change
    config = Configuration(None)
    assert config.change(key, sent) == "Accepted"
    assert config.get_str(key) == normalised
    if not config.spec(key).write_only:
        assert _value(config, key) == normalised
