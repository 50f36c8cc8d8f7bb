"""``evse demo``: a complete AC charging session on the simulated board, in virtual time.

The same firmware that runs on a board (connector state machine, supervisor, limits, journal) drives
the real HAL drivers against the bus simulators, while a plant model plays the EV. The script walks
through what a charger engineer wants to see: plug-in, authorisation, charging, an EMS limit, a pause
and resume, an RCD trip and its recovery rule, unplugging, and the journal afterwards.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from firmware.connector import ConnectorSettings
from firmware.limits import EMS, Limit
from firmware.simulation import SimulatedCharger

_SHOWN = ("state", "contactor", "session", "fault", "limit")


def _printer(kind: str, data: dict[str, Any]) -> None:
    if kind not in _SHOWN:
        return
    t = data["t"]
    if kind == "state":
        text = f"{data['from']:>6} -> {data['to']:<6} ({data['trigger']})"
    elif kind == "contactor":
        text = "contactor " + ("CLOSE" if data["closed"] else "OPEN")
    elif kind == "session":
        text = (
            f"session {data.get('action')} {str(data.get('id'))[:8]} {data.get('reason') or data.get('id_tag') or ''}"
        )
    elif kind == "fault":
        text = f"fault {data['code']} {'RAISED' if data['raised'] else 'cleared'} {data['detail']}"
    else:
        text = f"limit {data['source']} = {data['value']:g} A"
    print(f"  t={t:8.3f}s  {text}")


async def run_demo(journal_dir: Path | None = None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        journal = (journal_dir or Path(tmp)) / "journal.db"
        rig = SimulatedCharger("sim-ac", journal_path=journal, settings=ConnectorSettings(), on_event=_printer)
        print("AC charging session on sim-ac (virtual time; real drivers on simulated buses)")
        async with rig:
            c = rig.connector
            assert c is not None
            plant = rig.plant
            say = _narrator(rig)
            say("EV plugs in with a 32 A cable (PP 220 ohm)")
            plant.pp_ohm, plant.ev_state = 220.0, "B"
            await rig.advance(1.0)
            say("RFID card presented: authorised")
            c.authorize("04A2B3C4D5")
            await rig.advance(1.0)
            say("EV ready: draws 32 A on 3 phases")
            plant.ev_state = "C"
            await rig.advance(0.5)
            plant.ev_current_a = [32.0] * 3
            await rig.advance(60.0)
            say("site EMS limits the connector to 16 A for 15 minutes")
            c.set_limit(Limit(EMS, 16.0, expires_at=rig.clock.monotonic() + 900, detail="site peak shaving"))
            await rig.advance(1.0)
            plant.ev_current_a = [16.0] * 3
            print("\n" + _indent(c.why()) + "\n")
            await rig.advance(60.0)
            say("user pauses from the app; the EV stops drawing current")
            c.pause()
            await rig.advance(0.5)
            plant.ev_current_a = [0.0] * 3
            await rig.advance(5.0)
            say("user resumes")
            c.resume()
            await rig.advance(1.0)
            plant.ev_current_a = [16.0] * 3
            await rig.advance(30.0)
            say("earth leakage: the RCD trips")
            plant.residual_current_ma = 30.0
            await rig.advance(1.0)
            plant.ev_current_a = [0.0] * 3
            plant.residual_current_ma = 0.0
            await rig.advance(5.0)
            print("\n" + _indent(c.why()) + "\n")
            say("EV unplugged (the RCD fault recovers only after unplug)")
            plant.ev_state = "A"
            await rig.advance(2.0)
            status = c.status()
            assert rig.journal is not None
            sessions = rig.journal.sessions()
            print("\njournal:")
            for s in sessions:
                print(
                    f"  session {s.session_id[:8]} tag {s.id_tag} energy {s.energy_wh:.1f} Wh, stopped: {s.stop_reason}"
                )
            print(f"\nfinal state {status.state}, faults {status.faults or 'none'}, meter {status.meter}")
            ok = status.state == "A1" and not status.faults and len(sessions) == 1 and sessions[0].energy_wh > 500
        print("\ndemo", "OK" if ok else "FAILED")
        return 0 if ok else 1


def _narrator(rig: SimulatedCharger) -> Any:
    def say(text: str) -> None:
        print(f"  t={rig.clock.monotonic():8.3f}s  >> {text}")

    return say


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())
