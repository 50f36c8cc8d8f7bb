"""The control socket: every command, malformed input answered with an error, never an exception."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from firmware.connector import ConnectorSettings
from firmware.control import ControlServer, request
from firmware.simulation import SimulatedCharger


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _with_server(tmp_path: Path, body: Any) -> Any:
    rig = SimulatedCharger("sim-ac", journal_path=tmp_path / "j.db", settings=ConnectorSettings())
    async with rig:
        assert rig.connector is not None
        server = ControlServer(rig.connector, tmp_path / "evse.sock", plant=rig.plant)
        await server.start()
        try:
            return await body(rig, server)
        finally:
            await server.stop()


def _handle(server: ControlServer, text: str | bytes) -> dict[str, Any]:
    raw = text.encode() if isinstance(text, str) else text
    answer: dict[str, Any] = json.loads(server.handle_line(raw))
    return answer


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "a request is a JSON object"),
        ('{"cmd": "bogus"}', "unknown command 'bogus'"),
        ('{"nocmd": 1}', "unknown command None"),
        ('{"cmd": "limit", "source": "ems"}', "'amps' must be a number >= 0"),
        ('{"cmd": "limit", "source": "ems", "amps": -3}', "'amps' must be a number >= 0"),
        ('{"cmd": "limit", "source": "ems", "amps": true}', "'amps' must be a number >= 0"),
        ('{"cmd": "limit", "source": "", "amps": 3}', "'source' must be a non-empty string"),
        ('{"cmd": "clear-fault", "code": "nope"}', "unknown fault 'nope'"),
        ('{"cmd": "authorize", "id_tag": 5}', "id_tag must be a string"),
        ('{"cmd": "sim", "ev_state": "Z"}', "ev_state must be one of"),
        (b"\xff\xfe garbage", "not JSON"),
    ],
)
def test_malformed_requests_get_a_clear_error(tmp_path: Path, line: str | bytes, fragment: str) -> None:
    async def body(rig: SimulatedCharger, server: ControlServer) -> dict[str, Any]:
        return _handle(server, line)

    answer = _run(_with_server(tmp_path, body))
    assert answer["ok"] is False
    assert fragment in answer["error"]


def test_commands_drive_the_connector(tmp_path: Path) -> None:
    async def body(rig: SimulatedCharger, server: ControlServer) -> list[dict[str, Any]]:
        path = server.path
        answers = []
        answers.append(await request(path, {"cmd": "sim", "ev_state": "B", "pp_ohm": 220}))
        await rig.advance(1.0)
        answers.append(await request(path, {"cmd": "authorize", "id_tag": "CARD1"}))
        await rig.advance(0.5)
        answers.append(await request(path, {"cmd": "limit", "source": "ems", "amps": 10, "for_s": 60}))
        await rig.advance(0.5)
        answers.append(await request(path, {"cmd": "status"}))
        answers.append(await request(path, {"cmd": "why"}))
        answers.append(await request(path, {"cmd": "pause"}))
        await rig.advance(0.5)
        answers.append(await request(path, {"cmd": "status"}))
        return answers

    answers = _run(_with_server(tmp_path, body))
    assert all(a["ok"] for a in answers), answers
    status = answers[3]["result"]
    assert status["state"] == "B2"
    assert status["duty_permille"] == 166  # 10 A = 16.6 %
    assert "10 A, set by ems" in answers[4]["result"]
    assert answers[6]["result"]["state"] == "B1"


def test_one_connection_survives_bad_lines(tmp_path: Path) -> None:
    async def body(rig: SimulatedCharger, server: ControlServer) -> list[dict[str, Any]]:
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        out = []
        for line in (b"garbage\n", b'{"cmd": "why"}\n'):
            writer.write(line)
            await writer.drain()
            out.append(json.loads(await reader.readline()))
        writer.close()
        return out

    bad, good = _run(_with_server(tmp_path, body))
    assert bad["ok"] is False and good["ok"] is True


def test_the_socket_is_private(tmp_path: Path) -> None:
    async def body(rig: SimulatedCharger, server: ControlServer) -> int:
        return server.path.stat().st_mode & 0o777

    assert _run(_with_server(tmp_path, body)) == 0o600
