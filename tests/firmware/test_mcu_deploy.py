"""``evse mcu deploy``: the mpremote command it builds and runs, the memory report it prints, and its
errors. mpremote itself is replaced by a recording stand-in on PATH (there is no RP2040 here); the
stand-in checks that every file it is asked to copy exists and answers the memory probe the way
MicroPython's ``gc`` would."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from firmware.cli import main
from firmware.mcu_deploy import FILES, MEMORY_PROBE, command, firmware_dir

STAND_IN = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["MPREMOTE_LOG"], "w") as log:
    json.dump(args, log)
if os.environ.get("MPREMOTE_FAIL"):
    print("mpremote: failed to access " + args[1], file=sys.stderr)
    sys.exit(1)
for i, arg in enumerate(args):
    if arg == "cp" and not os.path.isfile(args[i + 1]):
        print("no such file " + args[i + 1], file=sys.stderr)
        sys.exit(1)
if os.environ.get("MPREMOTE_BROKEN"):
    print("Traceback (most recent call last):\\nImportError: no module named 'core'")
else:
    print("MEM 41216 148032")
"""


@pytest.fixture
def mpremote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    exe = tmp_path / "bin" / "mpremote"
    exe.parent.mkdir()
    exe.write_text(STAND_IN.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    log = tmp_path / "mpremote.json"
    monkeypatch.setenv("MPREMOTE_LOG", str(log))
    return log


def test_every_firmware_file_is_copied_then_memory_is_probed_then_the_board_restarts() -> None:
    argv = command("/dev/ttyACM0")
    assert argv[:3] == ["mpremote", "connect", "/dev/ttyACM0"]
    copied = [argv[i + 2] for i, a in enumerate(argv) if a == "cp"]
    assert copied == [f":{name}" for name in FILES] and copied[-1] == ":main.py"
    assert argv[-4:] == ["exec", MEMORY_PROBE, "+", "soft-reset"]
    shipped = {p.name for p in firmware_dir().glob("*.py")} - {"__init__.py"}
    assert shipped == set(FILES)  # nothing of the firmware is left behind


def test_deploy_reports_the_memory_on_the_target(mpremote: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mcu", "deploy", "--port", "/dev/ttyACM1"]) == 0
    out = capsys.readouterr().out
    assert "heap in use 41216 bytes, free 148032 bytes (22 % used)" in out
    assert json.loads(mpremote.read_text())[:2] == ["connect", "/dev/ttyACM1"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ("MPREMOTE_FAIL", "failed (exit 1): mpremote: failed to access"),
        ("MPREMOTE_BROKEN", "did not load on the board"),
    ],
)
def test_a_failed_deploy_is_a_clear_error(
    mpremote: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: str, message: str
) -> None:
    monkeypatch.setenv(env, "1")
    assert main(["mcu", "deploy"]) == 1
    assert message in capsys.readouterr().err


def test_without_mpremote_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert main(["mcu", "deploy"]) == 1
    assert "mpremote is not installed" in capsys.readouterr().err


def test_dry_run_prints_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mcu", "deploy", "--dry-run", "--port", "a0"]) == 0
    assert capsys.readouterr().out.startswith("mpremote connect a0 fs cp ")
