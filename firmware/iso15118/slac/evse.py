"""ISO 15118-3 SLAC, EVSE side: the matching state machine (pure, on ``now`` arguments) and its async runner.

Sequence (ISO 15118-3 clause 9 / Annex A, standards-facts.md 2.5)::

    EV                                   EVSE host                       EVSE modem
    CM_SLAC_PARM.REQ (broadcast)  ---->  CM_SLAC_PARM.CNF (to the EV)
    3x CM_START_ATTEN_CHAR.IND    ---->  sounding window TT_EVSE_match_MNBC opens
    10x CM_MNBC_SOUND.IND         ---->  (forwarded)                <--  CM_ATTEN_PROFILE.IND per sound
                                  <----  CM_ATTEN_CHAR.IND (average attenuation per carrier group)
    CM_ATTEN_CHAR.RSP             ---->
    [CM_VALIDATE.REQ              ---->  CM_VALIDATE.CNF]
    CM_SLAC_MATCH.REQ             ---->  CM_SLAC_MATCH.CNF (NID + NMK) -> the EV joins our AVLN

The EVSE's duties, as this machine implements them:

* SLAC runs only while the pilot shows B or C ([V2G3-M06-07] counts TT_EVSE_SLAC_init from state B
  with 5 % PWM; frames in A, E, F are ignored) and only after the EV's own CM_SLAC_PARM.REQ: every
  later message must carry the EV MAC and run id of a run that REQ opened; anything else is ignored.
* Several EVs may sound at once on a shared medium: each (EV MAC, run id) is its own matching run,
  answered independently, and the EV picks the EVSE. Once one EV has matched, every other EV's
  parameters are ignored. A repeated CM_SLAC_PARM.REQ of a run restarts that run ([V2G3-A09-16] as
  EVerest cites it); the matched EV may start over (it does when it cannot join the AVLN).
* Timeouts, each run on its own clock (ISO 15118-3 Table A.1 values as EVerest ``slac.hpp`` and
  pyslac ``enums.py`` transcribe them):
  - no CM_SLAC_PARM.REQ within TT_EVSE_SLAC_init of state B -> Failed (the connector then applies
    E/F for T_step_EF and 5 % again, [V2G3-M06-07]);
  - no CM_START_ATTEN_CHAR.IND within TT_match_sequence of our CNF -> the run fails;
  - TT_EVSE_match_MNBC after the first CM_START_ATTEN_CHAR.IND the sounding ends with what the
    modem reported (or all C_EV_match_MNBC profiles ended it earlier; none at all fails the run);
  - no CM_ATTEN_CHAR.RSP within TT_match_response -> CM_ATTEN_CHAR.IND again, C_EV_match_retry times,
    then the run fails (EVerest ``WAIT_FOR_ATTEN_CHAR_RSP``);
  - no CM_VALIDATE.REQ/CM_SLAC_MATCH.REQ within TT_EVSE_match_session of the RSP -> the run fails.
  When every run has failed the machine goes back to the start: waiting for a new CM_SLAC_PARM.REQ
  under a fresh TT_EVSE_SLAC_init (the EV retries after TT_matching_rate, [V2G3-A09-124]).
* CM_VALIDATE is optional for the EVSE ([V2G3-A09-51] as EVerest cites it); we do not toggle-validate
  and answer CM_VALIDATE.REQ with result "failure", as EVerest does.
* CM_ATTEN_PROFILE.IND is believed only from our own modem once its MAC is known, so an EV cannot
  make itself look closer than it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from transitions import Machine, State

from firmware.iec61851.pilot import CpState
from firmware.iso15118.slac import mme
from firmware.iso15118.slac.keys import new_nmk, nid_from_nmk
from firmware.iso15118.slac.link import Link, LinkClosedError, LinkError, Listener
from firmware.iso15118.slac.modem import ModemError, QcaModem, is_modem_confirmation
from hal.clock import Clock

log = logging.getLogger(__name__)

# --- ISO 15118-3 Table A.1 (via EVerest lib/everest/slac/include/slac/slac.hpp, pyslac enums.py) ---
TT_EVSE_SLAC_INIT_S = 40.0  # 20 s - 50 s; EVerest uses 40 s, pyslac 50 s
TT_EVSE_SLAC_INIT_MIN_S, TT_EVSE_SLAC_INIT_MAX_S = 20.0, 50.0
TT_MATCH_SEQUENCE_S = 0.4  # max. time between two messages of a matching sequence
TT_EVSE_MATCH_MNBC_S = 0.6  # sounding window; sent as 0x06 (100 ms units) in CM_SLAC_PARM.CNF
TT_MATCH_RESPONSE_S = 0.2  # max. time from a message to its answer
TT_EVSE_MATCH_SESSION_S = 10.0  # from CM_ATTEN_CHAR.RSP to CM_VALIDATE.REQ / CM_SLAC_MATCH.REQ
C_EV_MATCH_RETRY = 2  # retransmissions of an unanswered matching message
C_EV_MATCH_MNBC = 10  # M-Sounds per run, announced in CM_SLAC_PARM.CNF NUM_SOUNDS
C_EV_START_ATTEN_CHAR_INDS = 3  # EV side: CM_START_ATTEN_CHAR.IND sent this many times
TP_EV_BATCH_MSG_INTERVAL_S = 0.04  # EV side: 20-50 ms between those and the M-Sounds; EVerest uses 40 ms
TT_EV_ATTEN_RESULTS_S = 1.2  # EV side: max. wait for CM_ATTEN_CHAR.IND from its first CM_START_ATTEN_CHAR.IND
TT_MATCH_JOIN_S = 12.0  # max. time for the EV to join the AVLN after the match (checked by the runner's user)
TIMEOUT_UNIT_S = 0.1  # CM_SLAC_PARM.CNF Time_Out is in 100 ms units (EVerest CM_SLAC_PARM_CNF_TIMEOUT 0x06)
# --- our choices ---
MAX_RUNS = 8  # concurrent matching runs kept; more EVs than this on one medium is a flood, not a car park
MAX_FAILURES_KEPT = 32  # reasons kept in EvseSlac.failures

PLUGGED = frozenset({CpState.B, CpState.C})


@dataclass(frozen=True)
class Timings:
    """Table A.1 times; overridable for HIL fault injection, checked against the standard's ranges."""

    slac_init_s: float = TT_EVSE_SLAC_INIT_S
    match_sequence_s: float = TT_MATCH_SEQUENCE_S
    match_mnbc_s: float = TT_EVSE_MATCH_MNBC_S
    match_response_s: float = TT_MATCH_RESPONSE_S
    match_session_s: float = TT_EVSE_MATCH_SESSION_S
    match_retry: int = C_EV_MATCH_RETRY
    num_sounds: int = C_EV_MATCH_MNBC

    def __post_init__(self) -> None:
        if not TT_EVSE_SLAC_INIT_MIN_S <= self.slac_init_s <= TT_EVSE_SLAC_INIT_MAX_S:
            raise ValueError(f"TT_EVSE_SLAC_init {self.slac_init_s} s outside 20..50 s (ISO 15118-3 Table A.1)")
        units = round(self.match_mnbc_s / TIMEOUT_UNIT_S)
        if not 1 <= units <= 0xFF or abs(units * TIMEOUT_UNIT_S - self.match_mnbc_s) > 1e-9:
            raise ValueError(f"TT_EVSE_match_MNBC {self.match_mnbc_s} s is not a whole number of 100 ms in 0.1..25.5 s")
        for name in ("match_sequence_s", "match_response_s", "match_session_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.match_retry < 0 or not 1 <= self.num_sounds <= 0xFF:
            raise ValueError("match_retry must be >= 0 and num_sounds 1..255")

    @property
    def mnbc_units(self) -> int:
        return round(self.match_mnbc_s / TIMEOUT_UNIT_S)


@dataclass(frozen=True)
class Matched:
    """The EV ``ev_mac`` got our NID/NMK; ``attenuation_db`` is the mean of what we sent it."""

    ev_mac: bytes
    run_id: bytes
    nid: bytes
    nmk: bytes
    attenuation_db: float
    sounds: int


@dataclass(frozen=True)
class Failed:
    reason: str


SlacResult = Matched | Failed


@dataclass
class Step:
    """What one input made the machine do: MMEs to send, a final result if one was reached, notes."""

    send: list[mme.Mme] = field(default_factory=list)
    result: SlacResult | None = None
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)
        log.debug("SLAC: %s", text)


# ------------------------------------------------------------------------------- one matching run
RUN_STATES = ("WaitStartAtten", "Sounding", "WaitAttenRsp", "WaitMatch", "Matched", "Failed")
_OPEN_RUN = ["WaitStartAtten", "Sounding", "WaitAttenRsp", "WaitMatch"]
#: (trigger, sources, destination) of one EV's matching run.
RUN_TRANSITIONS: tuple[tuple[str, str | list[str], str], ...] = (
    ("start_atten", "WaitStartAtten", "Sounding"),
    ("sounded", "Sounding", "WaitAttenRsp"),
    ("resend", "WaitAttenRsp", "WaitAttenRsp"),
    ("atten_rsp", "WaitAttenRsp", "WaitMatch"),
    ("match", ["WaitMatch", "Matched"], "Matched"),
    ("fail", _OPEN_RUN, "Failed"),
    ("restart", list(RUN_STATES), "WaitStartAtten"),
)


def _sources(sources: str | list[str]) -> str | list[str | Enum | State]:
    return sources if isinstance(sources, str) else list(sources)


class _Run:
    state: str
    trigger: Callable[..., bool]

    def __init__(self, ev_mac: bytes, run_id: bytes) -> None:
        self.ev_mac = ev_mac
        self.run_id = run_id
        self._reset()
        self.machine = Machine(model=self, states=list(RUN_STATES), initial="WaitStartAtten", auto_transitions=False)
        for trigger, sources, dest in RUN_TRANSITIONS:
            self.machine.add_transition(trigger, _sources(sources), dest)

    def _reset(self) -> None:
        self.deadline: float | None = None
        self.expected_sounds = 0
        self.sounds_heard = 0
        self.profiles = 0
        self.aag_sums: list[int] = []
        self.transmissions = 0
        self.failure: str | None = None

    def restart_run(self) -> None:
        self._reset()
        self.trigger("restart")

    @property
    def open(self) -> bool:
        return self.state in _OPEN_RUN

    def averaged(self) -> tuple[int, ...]:
        n = max(1, self.profiles)
        return tuple((total + n // 2) // n for total in self.aag_sums)


# ------------------------------------------------------------------------------- the EVSE machine
STATES = ("Idle", "WaitingForSlac", "Matching", "Matched", "Failed")
#: (trigger, sources, destination) of the EVSE's SLAC machine.
TRANSITIONS: tuple[tuple[str, str | list[str], str], ...] = (
    ("plug_in", "Idle", "WaitingForSlac"),
    ("parm_req", ["WaitingForSlac", "Matching"], "Matching"),
    ("matched", "Matching", "Matched"),
    ("all_failed", "Matching", "WaitingForSlac"),
    ("rematch", "Matched", "Matching"),
    ("init_timeout", "WaitingForSlac", "Failed"),
    ("unplug", ["WaitingForSlac", "Matching", "Matched", "Failed"], "Idle"),
)


class EvseSlac:
    """The EVSE's SLAC logic for one plug-in: feed it the pilot, frames and time; send what it returns.

    ``nmk``/``nid`` are the key of the AVLN the local modem was set to; ``modem_mac`` (when known)
    is the only source believed for CM_ATTEN_PROFILE.IND.
    """

    state: str
    trigger: Callable[..., bool]

    def __init__(
        self,
        evse_mac: bytes,
        nmk: bytes,
        *,
        nid: bytes | None = None,
        modem_mac: bytes | None = None,
        timings: Timings | None = None,
        max_runs: int = MAX_RUNS,
    ) -> None:
        if len(evse_mac) != mme.MAC_LEN or len(nmk) != mme.NMK_LEN:
            raise ValueError("evse_mac is 6 bytes and nmk 16 bytes")
        self.evse_mac = bytes(evse_mac)
        self.nmk = bytes(nmk)
        self.nid = nid_from_nmk(self.nmk) if nid is None else bytes(nid)
        if len(self.nid) != mme.NID_LEN:
            raise ValueError("nid is 7 bytes")
        self.modem_mac = modem_mac
        self.timings = timings or Timings()
        self.max_runs = max_runs
        self.runs: list[_Run] = []
        self.matched_run: _Run | None = None
        self.result: SlacResult | None = None
        self.failures: list[str] = []  # why each run failed, in order
        self.ignored = 0  # frames dropped as malformed, unexpected or not ours
        self.key_handed_out = False  # a CM_SLAC_MATCH.CNF carried our NMK to an EV
        self._init_deadline: float | None = None
        self.machine = Machine(model=self, states=list(STATES), initial="Idle", auto_transitions=False)
        for trigger, sources, dest in TRANSITIONS:
            self.machine.add_transition(trigger, _sources(sources), dest)

    # ------------------------------------------------------------------ inputs
    def pilot(self, state: CpState, now: float) -> Step:
        """The pilot state the connector reads; SLAC lives only in B and C."""
        step = self._expire(now)
        if state in PLUGGED:
            if self.state == "Idle":
                self.trigger("plug_in")
                self._init_deadline = now + self.timings.slac_init_s
                step.note(f"pilot {state.value}: waiting up to {self.timings.slac_init_s:g} s for CM_SLAC_PARM.REQ")
            return step
        if self.state == "Idle":
            return step
        was = self.state
        self.trigger("unplug")
        self.runs.clear()
        self._init_deadline = None
        step.note(f"pilot {state.value}: SLAC stopped in {was}")
        if was in ("Matching", "WaitingForSlac") and self.matched_run is None:
            step.result = self._finish(Failed(f"pilot left B/C ({state.value}) before a match"))
        return step

    def tick(self, now: float) -> Step:
        """Run the timers that fell due by ``now``."""
        return self._expire(now)

    def receive(self, frame: bytes, now: float) -> Step:
        """One received Ethernet frame; malformed or unexpected ones are counted and ignored."""
        step = self._expire(now)
        try:
            message = mme.decode(frame)
        except mme.MmeError as exc:
            self.ignored += 1
            step.note(f"frame ignored: {exc}")
            return step
        if self.state not in ("WaitingForSlac", "Matching", "Matched"):
            self.ignored += 1
            step.note(f"{message.NAME} ignored in {self.state}")
            return step
        handler = self._handlers.get(type(message))
        if handler is None or not handler(self, message, now, step):
            self.ignored += 1
        return step

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do, or None."""
        times = [run.deadline for run in self.runs if run.open and run.deadline is not None]
        if self.state == "WaitingForSlac" and self._init_deadline is not None:
            times.append(self._init_deadline)
        return min(times, default=None)

    # ------------------------------------------------------------------ timers
    def _expire(self, now: float) -> Step:
        step = Step()
        if self.state == "WaitingForSlac" and self._init_deadline is not None and now >= self._init_deadline:
            self.trigger("init_timeout")
            failed = Failed(f"no CM_SLAC_PARM.REQ within TT_EVSE_SLAC_init ({self.timings.slac_init_s:g} s)")
            step.result = self._finish(failed)
            step.note(failed.reason)
            log.warning("SLAC: %s", failed.reason)
            return step
        if self.state != "Matching":
            return step
        for run in sorted(self.runs, key=lambda r: r.deadline or 0.0):
            if run.open and run.deadline is not None and now >= run.deadline:
                self._run_timeout(run, now, step)
        if self.state == "Matching" and self.runs and not any(run.open for run in self.runs):
            self.trigger("all_failed")
            self.runs.clear()
            self._init_deadline = now + self.timings.slac_init_s
            step.note("every matching run failed; waiting for a new CM_SLAC_PARM.REQ")
        return step

    def _run_timeout(self, run: _Run, now: float, step: Step) -> None:
        t = self.timings
        if run.state == "WaitStartAtten":
            self._fail(run, f"no CM_START_ATTEN_CHAR.IND within TT_match_sequence ({t.match_sequence_s:g} s)", step)
        elif run.state == "Sounding":
            if run.profiles:
                self._send_atten_char(run, now, step)
                run.trigger("sounded")
            else:
                self._fail(run, f"no CM_ATTEN_PROFILE.IND within TT_EVSE_match_MNBC ({t.match_mnbc_s:g} s)", step)
        elif run.state == "WaitAttenRsp":
            if run.transmissions <= t.match_retry:
                self._send_atten_char(run, now, step)
                run.trigger("resend")
            else:
                self._fail(run, f"no CM_ATTEN_CHAR.RSP to {run.transmissions} CM_ATTEN_CHAR.IND", step)
        elif run.state == "WaitMatch":
            self._fail(run, f"no CM_SLAC_MATCH.REQ within TT_EVSE_match_session ({t.match_session_s:g} s)", step)

    def _fail(self, run: _Run, reason: str, step: Step) -> None:
        run.failure = f"{run.ev_mac.hex(':')} run {run.run_id.hex()}: {reason}"
        run.deadline = None
        run.trigger("fail")
        self.failures.append(run.failure)
        del self.failures[:-MAX_FAILURES_KEPT]
        step.note(run.failure)
        log.warning("SLAC: %s", run.failure)

    def _finish(self, result: SlacResult) -> SlacResult:
        self.result = result
        return result

    # ------------------------------------------------------------------ messages
    def _find(self, ev_mac: bytes, run_id: bytes) -> _Run | None:
        for run in self.runs:
            if run.ev_mac == ev_mac and run.run_id == run_id:
                return run
        return None

    def _on_parm_req(self, msg: mme.CmSlacParmReq, now: float, step: Step) -> bool:
        ev = msg.src
        if msg.application_type != mme.APPLICATION_TYPE_PEV_EVSE:
            step.note(f"{msg.NAME} from {ev.hex(':')} with application type {msg.application_type:#04x} ignored")
            return False
        if ev[0] & 1 or ev in (self.evse_mac, self.modem_mac):
            step.note(f"{msg.NAME} from {ev.hex(':')} ignored: not an EV's unicast address")
            return False
        if self.state == "Matched":
            assert self.matched_run is not None
            if ev != self.matched_run.ev_mac:
                step.note(
                    f"{msg.NAME} from a second EV {ev.hex(':')} ignored: matched with "
                    f"{self.matched_run.ev_mac.hex(':')}"
                )
                return False
            step.note(f"matched EV {ev.hex(':')} starts over (run {msg.run_id.hex()})")
            self.trigger("rematch")
            self.runs.clear()
            self.matched_run = None
        run = self._find(ev, msg.run_id)
        if run is not None:
            run.restart_run()
        else:
            # An EV that starts a new run gives up its older one; failed runs are done with.
            self.runs = [r for r in self.runs if r.ev_mac != ev and r.open]
            if sum(1 for r in self.runs if r.open) >= self.max_runs:
                step.note(f"{msg.NAME} from {ev.hex(':')} ignored: {self.max_runs} runs already open")
                return False
            run = _Run(ev, msg.run_id)
            self.runs.append(run)
        if self.state == "WaitingForSlac":
            self.trigger("parm_req")
        run.deadline = now + self.timings.match_sequence_s
        step.send.append(
            mme.CmSlacParmCnf(
                ev,
                self.evse_mac,
                forwarding_sta=ev,
                run_id=msg.run_id,
                num_sounds=self.timings.num_sounds,
                timeout=self.timings.mnbc_units,
                resp_type=mme.RESP_TYPE_OTHER_GP_STA,
                msound_target=mme.BROADCAST,
            )
        )
        step.note(f"{msg.NAME} from {ev.hex(':')} run {msg.run_id.hex()}: confirmed")
        return True

    def _on_start_atten(self, msg: mme.CmStartAttenCharInd, now: float, step: Step) -> bool:
        run = self._find(msg.src, msg.run_id)
        if run is None or run.state != "WaitStartAtten":
            return run is not None and run.state == "Sounding"  # the 2nd and 3rd copies are expected
        if (
            msg.application_type != mme.APPLICATION_TYPE_PEV_EVSE
            or msg.num_sounds == 0
            or msg.timeout == 0
            or msg.resp_type != mme.RESP_TYPE_OTHER_GP_STA
        ):
            step.note(f"{msg.NAME} from {msg.src.hex(':')} with invalid parameters ignored")
            return False
        run.expected_sounds = msg.num_sounds
        run.deadline = now + self.timings.match_mnbc_s
        run.trigger("start_atten")
        step.note(f"sounding with {msg.src.hex(':')}: {msg.num_sounds} sounds expected")
        return True

    def _on_sound(self, msg: mme.CmMnbcSoundInd, now: float, step: Step) -> bool:
        run = self._find(msg.src, msg.run_id)
        if run is None or run.state != "Sounding":
            return False
        run.sounds_heard += 1
        return True

    def _on_profile(self, msg: mme.CmAttenProfileInd, now: float, step: Step) -> bool:
        if self.modem_mac is not None and msg.src != self.modem_mac:
            step.note(f"{msg.NAME} from {msg.src.hex(':')} ignored: not our modem")
            return False
        if any(msg.src == run.ev_mac for run in self.runs):
            step.note(f"{msg.NAME} from the EV {msg.src.hex(':')} itself ignored")
            return False
        sounding = [run for run in self.runs if run.ev_mac == msg.pev_mac and run.state == "Sounding"]
        if not sounding:
            return False
        run = sounding[-1]
        if run.aag_sums and len(msg.aag) != len(run.aag_sums):
            step.note(f"{msg.NAME}: {len(msg.aag)} groups after {len(run.aag_sums)}; ignored")
            return False
        run.aag_sums = [a + b for a, b in zip(run.aag_sums or [0] * len(msg.aag), msg.aag, strict=True)]
        run.profiles += 1
        if run.profiles >= run.expected_sounds:
            self._send_atten_char(run, now, step)
            run.trigger("sounded")
        return True

    def _send_atten_char(self, run: _Run, now: float, step: Step) -> None:
        run.transmissions += 1
        run.deadline = now + self.timings.match_response_s
        step.send.append(
            mme.CmAttenCharInd(
                run.ev_mac,
                self.evse_mac,
                source_address=run.ev_mac,
                run_id=run.run_id,
                num_sounds=run.profiles,
                aag=run.averaged(),
            )
        )
        step.note(f"CM_ATTEN_CHAR.IND #{run.transmissions} to {run.ev_mac.hex(':')} ({run.profiles} profiles)")

    def _on_atten_rsp(self, msg: mme.CmAttenCharRsp, now: float, step: Step) -> bool:
        run = self._find(msg.src, msg.run_id)
        if run is None or run.state != "WaitAttenRsp":
            return False
        if msg.application_type != mme.APPLICATION_TYPE_PEV_EVSE or msg.source_address != run.ev_mac:
            step.note(f"{msg.NAME} from {msg.src.hex(':')} does not match its run; ignored")
            return False
        if msg.result != 0:
            self._fail(run, f"EV answered CM_ATTEN_CHAR.RSP with result {msg.result:#04x}", step)
            return True
        run.deadline = now + self.timings.match_session_s
        run.trigger("atten_rsp")
        return True

    def _on_validate(self, msg: mme.CmValidateReq, now: float, step: Step) -> bool:
        if not any(run.ev_mac == msg.src and run.state == "WaitMatch" for run in self.runs):
            return False
        step.send.append(
            mme.CmValidateCnf(msg.src, self.evse_mac, signal_type=msg.signal_type, result=mme.VALIDATE_RESULT_FAILURE)
        )
        step.note(f"CM_VALIDATE.REQ from {msg.src.hex(':')}: validation not offered")
        return True

    def _on_match_req(self, msg: mme.CmSlacMatchReq, now: float, step: Step) -> bool:
        run = self._find(msg.src, msg.run_id)
        if run is None or run.state not in ("WaitMatch", "Matched"):
            return False
        if (
            msg.application_type != mme.APPLICATION_TYPE_PEV_EVSE
            or msg.pev_mac != run.ev_mac
            or msg.evse_mac != self.evse_mac
        ):
            step.note(f"{msg.NAME} from {msg.src.hex(':')} names another EV or EVSE; ignored")
            return False
        step.send.append(
            mme.CmSlacMatchCnf(
                run.ev_mac,
                self.evse_mac,
                pev_mac=msg.pev_mac,
                evse_mac=self.evse_mac,
                run_id=run.run_id,
                nid=self.nid,
                nmk=self.nmk,
                pev_id=msg.pev_id,
                evse_id=msg.evse_id,
            )
        )
        self.key_handed_out = True
        if run.state == "Matched":
            step.note(f"{msg.NAME} repeated by {run.ev_mac.hex(':')}: CNF sent again")
            return True
        run.deadline = None
        run.trigger("match")
        self.matched_run = run
        self.runs = [run]  # the other EVs' runs end here
        self.trigger("matched")
        aag = run.averaged()
        result = Matched(run.ev_mac, run.run_id, self.nid, self.nmk, sum(aag) / len(aag) if aag else 0.0, run.profiles)
        step.result = self._finish(result)
        log.info("SLAC: matched with %s, run %s", run.ev_mac.hex(":"), run.run_id.hex())
        step.note(f"matched with {run.ev_mac.hex(':')} (mean attenuation {result.attenuation_db:.1f} dB)")
        return True

    _handlers: ClassVar[dict[type[mme.Mme], Callable[[EvseSlac, Any, float, Step], bool]]] = {
        mme.CmSlacParmReq: _on_parm_req,
        mme.CmStartAttenCharInd: _on_start_atten,
        mme.CmMnbcSoundInd: _on_sound,
        mme.CmAttenProfileInd: _on_profile,
        mme.CmAttenCharRsp: _on_atten_rsp,
        mme.CmValidateReq: _on_validate,
        mme.CmSlacMatchReq: _on_match_req,
    }


# ------------------------------------------------------------------------------- async runner
class SlacRunner:
    """Runs :class:`EvseSlac` on a link for every plug-in, with a fresh NMK set on the modem each time.

    Feed it the pilot with :meth:`pilot`; run :meth:`run` as a task; read results with
    :meth:`next_result` (or ``on_result``). After a matched EV leaves (pilot out of B/C) the modem gets
    another random key, so that EV's modem drops out of our AVLN (EVerest ``leave_logical_network``).
    Without a modem (``modem=None``: a simulation without one) the keys are only generated.
    """

    def __init__(
        self,
        link: Link,
        modem: QcaModem | None,
        *,
        clock: Clock,
        timings: Timings | None = None,
        nmk_factory: Callable[[], bytes] = new_nmk,
        on_result: Callable[[SlacResult], None] | None = None,
    ) -> None:
        self._link = link
        self._modem = modem
        self._clock = clock
        self._timings = timings or Timings()
        self._nmk_factory = nmk_factory
        self._on_result = on_result
        self._pilot = CpState.A
        self._pilot_changed = asyncio.Event()
        self._results: asyncio.Queue[SlacResult] = asyncio.Queue()
        self.machine: EvseSlac | None = None

    @property
    def state(self) -> str:
        return self.machine.state if self.machine is not None else "Idle"

    def pilot(self, state: CpState) -> None:
        """The pilot state changed (call from the connector logic)."""
        self._pilot = state
        self._pilot_changed.set()

    async def next_result(self) -> SlacResult:
        return await self._results.get()

    def _publish(self, result: SlacResult) -> None:
        self._results.put_nowait(result)
        if self._on_result is not None:
            try:
                self._on_result(result)
            except Exception:
                log.exception("SLAC result callback failed")

    async def run(self) -> None:
        """Serve plug-ins until cancelled; LinkClosedError when the link goes away."""
        listener = self._link.listen(lambda frame: not is_modem_confirmation(frame))
        try:
            while True:
                await self._until(lambda: self._pilot in PLUGGED)
                while listener.get_nowait() is not None:  # frames from before this plug-in
                    pass
                await self._session(listener)
        finally:
            listener.close()

    async def _until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self._pilot_changed.clear()
            await self._pilot_changed.wait()

    async def _session(self, listener: Listener) -> None:
        nmk = self._nmk_factory()
        try:
            nid = await self._modem.set_key(nmk) if self._modem is not None else nid_from_nmk(nmk)
        except (ModemError, LinkError) as exc:
            if isinstance(exc, LinkClosedError):
                raise
            self._publish(Failed(f"local modem: {exc}"))
            await self._until(lambda: self._pilot not in PLUGGED)
            return
        modem_mac = self._modem.mac if self._modem is not None else None
        machine = EvseSlac(self._link.mac, nmk, nid=nid, modem_mac=modem_mac, timings=self._timings)
        self.machine = machine
        self._pilot_changed.clear()
        self._apply(machine.pilot(self._pilot, self._clock.monotonic()))
        while machine.state != "Idle":
            await self._next_input(machine, listener)
        if machine.key_handed_out:
            await self._leave_avln()

    async def _next_input(self, machine: EvseSlac, listener: Listener) -> None:
        frame = listener.get_nowait()
        if frame is not None:
            self._apply(machine.receive(frame, self._clock.monotonic()))
            return
        if self._pilot_changed.is_set():
            self._pilot_changed.clear()
            self._apply(machine.pilot(self._pilot, self._clock.monotonic()))
            return
        deadline = machine.next_deadline()
        waiters: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(listener.get()),
            asyncio.ensure_future(self._pilot_changed.wait()),
        ]
        if deadline is not None:
            waiters.append(asyncio.ensure_future(self._clock.sleep(deadline - self._clock.monotonic())))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            for waiter in waiters:
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
        now = self._clock.monotonic()
        receiving = waiters[0]
        if receiving.done() and not receiving.cancelled():
            self._apply(machine.receive(receiving.result(), now))  # raises LinkClosedError if the link died
        elif self._pilot_changed.is_set():
            self._pilot_changed.clear()
            self._apply(machine.pilot(self._pilot, now))
        else:
            self._apply(machine.tick(now))

    def _apply(self, step: Step) -> None:
        for message in step.send:
            try:
                self._link.send(message.encode())
            except LinkClosedError:
                raise
            except LinkError as exc:  # one lost frame: the EV's retries cover it
                log.warning("SLAC: %s not sent: %s", message.NAME, exc)
        if step.result is not None:
            self._publish(step.result)

    async def _leave_avln(self) -> None:
        if self._modem is None:
            return
        try:
            await self._modem.set_key(self._nmk_factory())
        except ModemError as exc:
            log.warning("SLAC: could not re-key the modem after the EV left: %s", exc)
