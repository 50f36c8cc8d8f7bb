"""``evse sessions`` and ``evse run --tariff`` (firmware/cli.py), through the real entry point
``firmware.cli.main`` and once as a subprocess, on journals the tests fill."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import firmware.app
from firmware.cli import main
from firmware.connector import ConnectorSettings
from firmware.journal import Journal, SessionRecord
from firmware.metering.billing import Tariff

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z
TARIFF = Tariff("EUR", Decimal("0.39"), Decimal("1.20"), Decimal("0.10"), "0.39 EUR/kWh")


class Filled:
    """A journal with three sessions, still open for writing (as `evse run` would have it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.journal = Journal(path, wall_clock=lambda: T0)
        j = self.journal
        # 1. connector 1, priced, V2G export, 1 h
        s = j.start_session(1, id_tag="RFID-1", meter_start_wh=1000.0, meter_start_export_wh=0.0, tariff=TARIFF)
        self.priced = j.stop_session(
            s.session_id, reason="Local", meter_stop_wh=11_000.0, meter_stop_export_wh=2500.0, stopped_at=T0 + 3600
        )
        # 2. connector 2, no tariff, a meter error, 30 min
        s = j.start_session(2, id_tag=None, meter_start_wh=0.0, started_at=T0 + 4000)
        j.flag_meter_error(s.session_id, "import register went backwards")
        self.unpriced = j.stop_session(s.session_id, reason="EVDisconnected", meter_stop_wh=750.5, stopped_at=T0 + 5800)
        # 3. connector 1 again, still running
        s = j.start_session(1, id_tag="RFID-3", meter_start_wh=11_000.0, tariff=TARIFF, started_at=T0 + 7200)
        j.update_session(s.session_id, meter_wh=13_000.0, export_wh=100.0, at=T0 + 7200 + 5400)
        j.set_session_state(s.session_id, "C2")
        running = j.session(s.session_id)
        assert running is not None
        self.running: SessionRecord = running


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[Filled]:
    data = Filled(tmp_path / "journal.db")
    yield data
    data.journal.close()


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_table_newest_first(filled: Filled, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sessions", "--journal", str(filled.path)]) == 0
    header, running, unpriced, priced = _lines(capsys.readouterr().out)
    assert header.split() == [
        "START", "(UTC)", "DURATION", "CONN", "ID", "TAG", "IMPORT", "kWh", "EXPORT", "kWh", "PRICE", "STOP", "METER",
        "SESSION",
    ]  # fmt: skip
    assert running.split() == [
        "2025-06-15", "17:06", "1:30:00", "1", "RFID-3", "2.000", "0.100", "-", "open", "ok",
        filled.running.session_id[:8],
    ]  # fmt: skip
    assert unpriced.split() == [
        "2025-06-15", "16:13", "0:30:00", "2", "-", "0.750", "0.000", "-", "EVDisconnected", "ERROR",
        filled.unpriced.session_id[:8],
    ]  # fmt: skip
    # 10 kWh * 0.39 + 1 h * 1.20 - 2.5 kWh * 0.10 = 3.90 + 1.20 - 0.25
    assert priced.split() == [
        "2025-06-15", "15:06", "1:00:00", "1", "RFID-1", "10.000", "2.500", "4.85", "EUR", "Local", "ok",
        filled.priced.session_id[:8],
    ]  # fmt: skip
    # Columns are padded to line up: the session id column starts at the same place on every line, and the
    # price column is right-aligned under its header.
    assert {line.index(ident) for line, ident in ((header, "SESSION"), (priced, filled.priced.session_id[:8]),
            (running, filled.running.session_id[:8]))} == {header.index("SESSION")}  # fmt: skip
    assert priced.index("4.85 EUR") + len("4.85 EUR") == header.index("PRICE") + len("PRICE")


def test_json_lines_are_the_billing_records_and_running_values(
    filled: Filled, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sessions", "--journal", str(filled.path), "--json"]) == 0
    running, unpriced, priced = (json.loads(line) for line in _lines(capsys.readouterr().out))
    assert filled.priced.billing is not None and filled.unpriced.billing is not None
    assert priced == filled.priced.billing.to_json()
    assert unpriced == filled.unpriced.billing.to_json()
    assert priced["price"] == {
        "currency": "EUR",
        "energy": "3.90",
        "time": "1.20",
        "export_credit": "0.25",
        "total": "4.85",
    }
    assert unpriced["price"] is None and unpriced["meter_error"] == "import register went backwards"
    assert running["session_id"] == filled.running.session_id
    assert (running["stopped_at"], running["stop_reason"], running["meter_import_stop_wh"]) == (None, None, None)
    assert (running["import_wh"], running["export_wh"], running["duration_s"]) == (2000.0, 100.0, 5400.0)
    assert running["started_at"] == "2025-06-15T17:06:40.000Z"
    assert running["last_checkpoint_at"] == "2025-06-15T18:36:40.000Z"
    assert (running["meter_import_last_wh"], running["meter_export_last_wh"], running["state"]) == (
        13_000.0,
        100.0,
        "C2",
    )
    assert running["tariff"] == TARIFF.to_json()
    # price so far: 2 kWh * 0.39 + 1.5 h * 1.20 - 0.1 kWh * 0.10 = 0.78 + 1.80 - 0.01
    assert running["price"] == {
        "currency": "EUR",
        "energy": "0.78",
        "time": "1.80",
        "export_credit": "0.01",
        "total": "2.57",
    }
    assert set(priced) <= set(running)  # an open line has every key of a billing record


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--connector", "1"], ["running", "priced"]),
        (["--connector", "2"], ["unpriced"]),
        (["--connector", "3"], []),
        (["--limit", "1"], ["running"]),
        (["--limit", "0"], ["running", "unpriced", "priced"]),  # 0: all
        (["--connector", "1", "--limit", "1"], ["running"]),
    ],
)
def test_connector_and_limit(
    filled: Filled, capsys: pytest.CaptureFixture[str], extra: list[str], expected: list[str]
) -> None:
    assert main(["sessions", "--journal", str(filled.path), "--json", *extra]) == 0
    ids = [json.loads(line)["session_id"] for line in _lines(capsys.readouterr().out)]
    assert ids == [getattr(filled, name).session_id for name in expected]


def test_data_dir_finds_the_journal_and_an_empty_journal_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Journal(tmp_path / "journal.db").close()
    assert main(["sessions", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "no sessions"
    assert main(["sessions", "--data-dir", str(tmp_path), "--json"]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("where", ["--journal", "--data-dir"])
def test_a_missing_journal_is_exit_2_and_no_new_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    target = tmp_path / ("missing.db" if where == "--journal" else "no-data")
    assert main(["sessions", where, str(target)]) == 2
    err = capsys.readouterr().err
    assert "evse sessions: no journal at" in err and str(target) in err
    assert sorted(tmp_path.iterdir()) == []  # nothing was created


def test_a_journal_that_cannot_be_read_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "journal.db"
    bad.write_bytes(b"not a database at all" * 100)
    assert main(["sessions", "--journal", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("evse sessions: journal ") and str(bad) in err
    assert bad.read_bytes() == b"not a database at all" * 100  # read-only: never moved aside or rewritten


@pytest.mark.parametrize(
    "args",
    [
        ["sessions", "--journal", "x.db", "--data-dir", "d"],
        ["sessions", "--limit", "-1"],
        ["sessions", "--connector", "0"],
        ["sessions", "--connector", "one"],
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2 and "usage: evse sessions" in capsys.readouterr().err


@pytest.mark.timeout(30)
def test_subprocess_reads_while_the_writer_holds_the_journal(filled: Filled) -> None:
    """The installed entry point in its own process, reading a journal another connection holds open and
    has just written to (WAL: readers never wait for the writer)."""
    filled.journal.update_session(filled.running.session_id, meter_wh=13_500.0, at=T0 + 7200 + 6000)
    proc = subprocess.run(
        [sys.executable, "-m", "firmware.cli", "sessions", "--journal", str(filled.path), "--json", "--limit", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    [line] = _lines(proc.stdout)
    assert json.loads(line)["import_wh"] == 2500.0


# ------------------------------------------------------------------------------------ evse run --tariff
def test_run_passes_the_tariff_to_the_connector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, Any] = {}

    async def fake_run_firmware(cfg: object, *, settings: ConnectorSettings, **kwargs: object) -> None:
        seen["settings"] = settings

    monkeypatch.setattr(firmware.app, "run_firmware", fake_run_firmware)
    tariff_file = tmp_path / "tariff.toml"
    tariff_file.write_text('[tariff]\ncurrency = "EUR"\nenergy_per_kwh = "0.39"\ntext = "0.39 EUR/kWh"\n', "utf-8")
    args = ["run", "--board", "sim-ac", "--data-dir", str(tmp_path / "data"), "--control", str(tmp_path / "s")]
    assert main([*args, "--tariff", str(tariff_file)]) == 0
    assert seen["settings"].tariff == Tariff("EUR", Decimal("0.39"), text="0.39 EUR/kWh")
    assert main(args) == 0
    assert seen["settings"].tariff is None  # no --tariff: no price


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the tariff file"),
        ('[tariff]\ncurrency = "EUR"\nenergy_per_kwh = -1\n', "[tariff] energy_per_kwh must be a price >= 0"),
        ('[tarif]\ncurrency = "EUR"\n', "needs a [tariff] table"),
    ],
)
def test_run_refuses_a_bad_tariff_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    message: str,
) -> None:
    async def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the firmware must not start with a bad tariff")

    monkeypatch.setattr(firmware.app, "run_firmware", must_not_run)
    path = tmp_path / "tariff.toml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert main(["run", "--board", "sim-ac", "--data-dir", str(tmp_path), "--tariff", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"evse run: {path}: ") and message in err
