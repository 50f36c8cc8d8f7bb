"""The EVSE's SLAC state machine, driven frame by frame on explicit times (no clock, no I/O)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.iec61851.pilot import CpState
from firmware.iso15118.slac import mme
from firmware.iso15118.slac.evse import (
    C_EV_MATCH_RETRY,
    RUN_TRANSITIONS,
    TRANSITIONS,
    TT_EVSE_MATCH_MNBC_S,
    TT_EVSE_MATCH_SESSION_S,
    TT_EVSE_SLAC_INIT_S,
    TT_MATCH_RESPONSE_S,
    TT_MATCH_SEQUENCE_S,
    EvseSlac,
    Failed,
    Matched,
    Step,
    Timings,
)
from firmware.iso15118.slac.keys import nid_from_nmk

EVSE = bytes.fromhex("02000000ee01")
MODEM = bytes.fromhex("00b0520000aa")
EV1 = bytes.fromhex("02000000e001")
EV2 = bytes.fromhex("02000000e002")
EV3 = bytes.fromhex("02000000e003")
RUN1 = bytes.fromhex("1111111111111111")
RUN2 = bytes.fromhex("2222222222222222")
NMK = bytes(range(16))
EPS = 1e-6


def parm(ev: bytes = EV1, run: bytes = RUN1, app: int = 0) -> bytes:
    return mme.CmSlacParmReq(mme.BROADCAST, ev, run_id=run, application_type=app).encode()


def start(ev: bytes = EV1, run: bytes = RUN1, sounds: int = 10) -> bytes:
    return mme.CmStartAttenCharInd(
        mme.BROADCAST, ev, forwarding_sta=ev, run_id=run, num_sounds=sounds, timeout=6
    ).encode()


def sound(ev: bytes = EV1, run: bytes = RUN1, remaining: int = 0) -> bytes:
    return mme.CmMnbcSoundInd(mme.BROADCAST, ev, run_id=run, remaining_sounds=remaining).encode()


def profile(ev: bytes = EV1, aag: int = 20, src: bytes = MODEM, groups: int = 58) -> bytes:
    return mme.CmAttenProfileInd(EVSE, src, pev_mac=ev, aag=(aag,) * groups).encode()


def rsp(ev: bytes = EV1, run: bytes = RUN1, result: int = 0) -> bytes:
    return mme.CmAttenCharRsp(EVSE, ev, source_address=ev, run_id=run, result=result).encode()


def match(ev: bytes = EV1, run: bytes = RUN1, evse: bytes = EVSE, pev: bytes | None = None) -> bytes:
    return mme.CmSlacMatchReq(EVSE, ev, pev_mac=pev or ev, evse_mac=evse, run_id=run).encode()


@dataclass
class Drive:
    """A machine plus a record of everything it sent and every result, for compact scripts."""

    m: EvseSlac
    sent: list[mme.Mme]
    results: list[Matched | Failed]

    def _take(self, step: Step) -> Step:
        self.sent.extend(step.send)
        if step.result is not None:
            self.results.append(step.result)
        return step

    def rx(self, frame: bytes, t: float) -> Step:
        return self._take(self.m.receive(frame, t))

    def tick(self, t: float) -> Step:
        return self._take(self.m.tick(t))

    def pilot(self, state: CpState, t: float) -> Step:
        return self._take(self.m.pilot(state, t))

    def names(self) -> list[str]:
        return [message.NAME for message in self.sent]

    def sounded(self, ev: bytes = EV1, run: bytes = RUN1, t: float = 1.0, aag: int = 20) -> float:
        """CM_SLAC_PARM.REQ at ``t`` up to the last of 10 profiles; returns the time reached."""
        self.rx(parm(ev, run), t)
        for i in range(3):
            self.rx(start(ev, run), t + 0.02 + 0.02 * i)
        for i in range(10):
            self.rx(sound(ev, run, 9 - i), t + 0.1 + 0.02 * i)
            self.rx(profile(ev, aag), t + 0.1 + 0.02 * i)
        return t + 0.1 + 0.02 * 9


def plugged(t: float = 0.0, **kwargs: object) -> Drive:
    d = Drive(EvseSlac(EVSE, NMK, modem_mac=MODEM, **kwargs), [], [])  # type: ignore[arg-type]
    d.pilot(CpState.B, t)
    return d


def test_tables_are_as_documented() -> None:
    assert {t[0] for t in TRANSITIONS} == {
        "plug_in",
        "parm_req",
        "matched",
        "all_failed",
        "rematch",
        "init_timeout",
        "unplug",
    }
    assert {t[0] for t in RUN_TRANSITIONS} == {
        "start_atten",
        "sounded",
        "resend",
        "atten_rsp",
        "match",
        "fail",
        "restart",
    }


def test_happy_path() -> None:
    d = plugged()
    assert d.m.state == "WaitingForSlac" and d.m.next_deadline() == TT_EVSE_SLAC_INIT_S
    t = d.sounded(aag=23)
    assert d.names() == ["CM_SLAC_PARM.CNF", "CM_ATTEN_CHAR.IND"]
    cnf, ind = d.sent
    assert isinstance(cnf, mme.CmSlacParmCnf) and isinstance(ind, mme.CmAttenCharInd)
    assert (cnf.dst, cnf.src, cnf.forwarding_sta, cnf.run_id) == (EV1, EVSE, EV1, RUN1)
    assert (cnf.num_sounds, cnf.timeout, cnf.resp_type, cnf.msound_target) == (10, 6, 1, mme.BROADCAST)
    assert (ind.dst, ind.source_address, ind.run_id, ind.num_sounds, ind.aag) == (EV1, EV1, RUN1, 10, (23,) * 58)
    d.rx(rsp(), t + 0.05)
    step = d.rx(match(), t + 0.1)
    assert d.names()[-1] == "CM_SLAC_MATCH.CNF"
    match_cnf = d.sent[-1]
    assert isinstance(match_cnf, mme.CmSlacMatchCnf)
    assert (match_cnf.dst, match_cnf.pev_mac, match_cnf.evse_mac, match_cnf.run_id) == (EV1, EV1, EVSE, RUN1)
    assert (match_cnf.nid, match_cnf.nmk) == (nid_from_nmk(NMK), NMK)
    assert step.result == Matched(EV1, RUN1, nid_from_nmk(NMK), NMK, 23.0, 10)
    assert d.m.state == "Matched" and d.m.next_deadline() is None and d.m.failures == []


def _to_start_atten(d: Drive) -> None:
    d.rx(parm(), 1.0)


def _to_sounding(d: Drive) -> None:
    d.rx(parm(), 1.0)
    d.rx(start(), 1.1)


def _to_atten_rsp(d: Drive) -> None:
    d.sounded(t=1.0)  # the 10th profile at 1.28 s sends CM_ATTEN_CHAR.IND


def _to_match(d: Drive) -> None:
    d.sounded(t=1.0)
    d.rx(rsp(), 1.3)


# (id, script, when the timer falls due, what the failure says, CM_ATTEN_CHAR.IND sent in total)
TIMEOUTS: list[tuple[str, Callable[[Drive], None], float, str, int]] = [
    ("start-atten", _to_start_atten, 1.0 + TT_MATCH_SEQUENCE_S, "TT_match_sequence (0.4 s)", 0),
    ("sounding", _to_sounding, 1.1 + TT_EVSE_MATCH_MNBC_S, "no CM_ATTEN_PROFILE.IND within TT_EVSE_match_MNBC", 0),
    (
        "atten-char-rsp",
        _to_atten_rsp,
        1.28 + (1 + C_EV_MATCH_RETRY) * TT_MATCH_RESPONSE_S,
        "no CM_ATTEN_CHAR.RSP to 3 CM_ATTEN_CHAR.IND",
        1 + C_EV_MATCH_RETRY,
    ),
    ("match-req", _to_match, 1.3 + TT_EVSE_MATCH_SESSION_S, "TT_EVSE_match_session (10 s)", 1),
]


@pytest.mark.parametrize(("script", "due", "reason", "inds"), [t[1:] for t in TIMEOUTS], ids=[t[0] for t in TIMEOUTS])
def test_each_run_timeout_fails_the_run_and_goes_back_to_the_start(
    script: Callable[[Drive], None], due: float, reason: str, inds: int
) -> None:
    d = plugged()
    script(d)
    # Step through time in small increments: nothing fails before the deadline ...
    t = 1.0
    while t < due - 0.01:
        t += 0.01
        d.tick(t)
    assert d.m.failures == [] and d.m.state == "Matching"
    # ... and exactly at it the run fails, the machine waits for a new CM_SLAC_PARM.REQ.
    step = d.tick(due + EPS)
    assert len(d.m.failures) == 1 and reason in d.m.failures[0]
    assert step.result is None and d.results == []
    assert d.m.state == "WaitingForSlac"
    assert d.m.next_deadline() == pytest.approx(due + EPS + TT_EVSE_SLAC_INIT_S)
    assert d.names().count("CM_ATTEN_CHAR.IND") == inds
    # Back at the start, a new run of the same EV matches.
    t = d.sounded(run=RUN2, t=due + 1)
    d.rx(rsp(run=RUN2), t + 0.05)
    d.rx(match(run=RUN2), t + 0.1)
    assert isinstance(d.results[-1], Matched) and d.results[-1].run_id == RUN2


def test_atten_char_ind_is_resent_every_tt_match_response() -> None:
    d = plugged()
    d.sounded(t=1.0)
    times = [1.28 + TT_MATCH_RESPONSE_S * k for k in range(1, 1 + C_EV_MATCH_RETRY)]
    for k, t in enumerate(times, start=2):
        d.tick(t - EPS)
        assert d.names().count("CM_ATTEN_CHAR.IND") == k - 1
        d.tick(t)
        assert d.names().count("CM_ATTEN_CHAR.IND") == k
    d.rx(rsp(), times[-1] + 0.1)  # the RSP to the last copy still counts
    d.rx(match(), times[-1] + 0.2)
    assert isinstance(d.results[-1], Matched)


def test_no_parm_req_within_slac_init_fails_for_good() -> None:
    d = plugged(t=5.0)
    d.tick(5.0 + TT_EVSE_SLAC_INIT_S - EPS)
    assert d.results == []
    d.tick(5.0 + TT_EVSE_SLAC_INIT_S)
    assert d.results == [Failed("no CM_SLAC_PARM.REQ within TT_EVSE_SLAC_init (40 s)")]
    assert d.m.state == "Failed" and d.m.next_deadline() is None
    d.rx(parm(), 46.0)  # too late: the connector applies E/F first ([V2G3-M06-07])
    assert d.sent == []
    d.pilot(CpState.E, 47.0)
    assert d.m.state == "Idle"
    d.pilot(CpState.B, 51.0)
    assert d.m.state == "WaitingForSlac" and d.m.next_deadline() == 51.0 + TT_EVSE_SLAC_INIT_S


def test_sounding_window_end_reports_the_profiles_that_came() -> None:
    d = plugged()
    _to_sounding(d)
    for i in range(3):
        d.rx(profile(aag=10 + 10 * i), 1.2 + 0.02 * i)  # 10, 20, 30 dB
    d.tick(1.1 + TT_EVSE_MATCH_MNBC_S - EPS)
    assert "CM_ATTEN_CHAR.IND" not in d.names()
    d.tick(1.1 + TT_EVSE_MATCH_MNBC_S)
    ind = d.sent[-1]
    assert isinstance(ind, mme.CmAttenCharInd) and ind.num_sounds == 3 and ind.aag == (20,) * 58


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (start(run=RUN2), "START_ATTEN with another run id"),
        (start(ev=EV2), "START_ATTEN from another EV"),
        (start(sounds=0), "START_ATTEN announcing no sounds"),
        (profile(src=EV2), "profile not from our modem"),
        (profile(ev=EV2), "profile of another EV"),
        (rsp(), "RSP before any IND"),
        (match(), "MATCH.REQ before sounding"),
        (b"\x00" * 60, "garbage"),
        (mme.CmSlacParmCnf(EVSE, EV1).encode(), "a message only an EVSE sends"),
    ],
)
def test_out_of_sequence_or_foreign_frames_are_ignored(bad: bytes, why: str) -> None:
    d = plugged()
    d.rx(parm(), 1.0)
    before = (d.m.runs[0].state, d.m.ignored)
    d.rx(bad, 1.05)
    assert d.names() == ["CM_SLAC_PARM.CNF"], why
    assert (d.m.runs[0].state, d.m.ignored) == (before[0], before[1] + 1), why


@pytest.mark.parametrize(
    "stranger", [EV2, EV1, bytes.fromhex("00b0520000bb")], ids=["other-station", "the-ev", "other-modem"]
)
def test_only_our_modem_reports_attenuation(stranger: bytes) -> None:
    d = plugged()
    _to_sounding(d)
    for i in range(10):
        d.rx(profile(aag=1, src=stranger), 1.2 + 0.01 * i)  # would make the EV look very close
    d.rx(profile(aag=40), 1.35)
    d.tick(1.1 + TT_EVSE_MATCH_MNBC_S)
    ind = d.sent[-1]
    assert isinstance(ind, mme.CmAttenCharInd) and (ind.num_sounds, ind.aag[0]) == (1, 40)


def test_without_a_known_modem_the_ev_still_cannot_report_its_own_attenuation() -> None:
    d = Drive(EvseSlac(EVSE, NMK, modem_mac=None), [], [])
    d.pilot(CpState.B, 0.0)
    _to_sounding(d)
    d.rx(profile(aag=1, src=EV1), 1.2)
    d.rx(profile(aag=33, src=bytes.fromhex("00b0520000bb")), 1.3)
    d.tick(1.1 + TT_EVSE_MATCH_MNBC_S)
    ind = d.sent[-1]
    assert isinstance(ind, mme.CmAttenCharInd) and (ind.num_sounds, ind.aag[0]) == (1, 33)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (match(run=RUN2), "wrong run id"),
        (match(evse=bytes.fromhex("02000000ee99")), "names another EVSE"),
        (match(pev=EV2), "names another EV"),
        (match(ev=EV2), "from an EV without a run"),
        (rsp(run=RUN2), "RSP of another run"),
    ],
)
def test_match_requests_must_name_this_run(bad: bytes, why: str) -> None:
    d = plugged()
    _to_match(d)
    d.rx(bad, 1.4)
    assert "CM_SLAC_MATCH.CNF" not in d.names(), why
    d.rx(match(), 1.5)
    assert isinstance(d.results[-1], Matched), why


def test_two_evs_sound_at_once_and_the_first_to_match_wins() -> None:
    d = plugged()
    d.rx(parm(EV1, RUN1), 1.0)
    d.rx(parm(EV2, RUN2), 1.01)
    assert [(m.NAME, m.dst) for m in d.sent] == [("CM_SLAC_PARM.CNF", EV1), ("CM_SLAC_PARM.CNF", EV2)]
    d.rx(start(EV1, RUN1), 1.05)
    d.rx(start(EV2, RUN2), 1.06)
    for i in range(10):
        d.rx(profile(EV1, aag=30), 1.1 + 0.02 * i)
        d.rx(profile(EV2, aag=12), 1.1 + 0.02 * i + 0.001)
    inds = [m for m in d.sent if isinstance(m, mme.CmAttenCharInd)]
    assert [(m.dst, m.aag[0]) for m in inds] == [(EV1, 30), (EV2, 12)]
    d.rx(rsp(EV1, RUN1), 1.35)
    d.rx(rsp(EV2, RUN2), 1.36)
    d.rx(match(EV2, RUN2), 1.4)
    assert d.results == [Matched(EV2, RUN2, nid_from_nmk(NMK), NMK, 12.0, 10)]
    # The other EV and any newcomer are ignored from now on.
    count = len(d.sent)
    d.rx(match(EV1, RUN1), 1.45)
    d.rx(parm(EV3, RUN1), 1.5)
    d.rx(parm(EV1, RUN2), 1.55)
    assert len(d.sent) == count and d.m.state == "Matched"


def test_a_repeated_match_req_is_confirmed_again_without_a_second_result() -> None:
    d = plugged()
    _to_match(d)
    d.rx(match(), 1.4)
    d.rx(match(), 1.6)  # our CNF was lost: the EV retries after TT_match_response
    assert d.names().count("CM_SLAC_MATCH.CNF") == 2 and len(d.results) == 1


def test_a_repeated_parm_req_restarts_its_run() -> None:
    d = plugged()
    _to_sounding(d)
    d.rx(profile(), 1.15)
    d.rx(parm(), 1.2)  # [V2G3-A09-16]: same EV, same run id -> the run starts over
    assert d.names() == ["CM_SLAC_PARM.CNF", "CM_SLAC_PARM.CNF"]
    assert d.m.runs[0].state == "WaitStartAtten" and d.m.runs[0].profiles == 0
    assert d.m.next_deadline() == pytest.approx(1.2 + TT_MATCH_SEQUENCE_S)


def test_the_matched_ev_may_start_over_with_a_new_run() -> None:
    d = plugged()
    _to_match(d)
    d.rx(match(), 1.4)
    d.rx(parm(EV1, RUN2), 3.0)
    assert d.m.state == "Matching" and d.names()[-1] == "CM_SLAC_PARM.CNF"
    t = d.sounded(run=RUN2, t=3.1)
    d.rx(rsp(run=RUN2), t + 0.01)
    d.rx(match(run=RUN2), t + 0.02)
    assert [type(r) for r in d.results] == [Matched, Matched] and d.m.state == "Matched"


def test_validation_is_declined_and_matching_goes_on() -> None:
    d = plugged()
    _to_match(d)
    d.rx(mme.CmValidateReq(EVSE, EV1).encode(), 1.35)
    validate = d.sent[-1]
    assert isinstance(validate, mme.CmValidateCnf) and validate.result == mme.VALIDATE_RESULT_FAILURE
    d.rx(match(), 1.4)
    assert isinstance(d.results[-1], Matched)


def test_an_atten_char_rsp_with_a_failure_result_fails_the_run() -> None:
    d = plugged()
    _to_atten_rsp(d)
    d.rx(rsp(result=1), 1.3)
    assert "result 0x01" in d.m.failures[0]
    d.tick(1.31)
    assert d.m.state == "WaitingForSlac"


@pytest.mark.parametrize("state", [CpState.A, CpState.D, CpState.E, CpState.F, CpState.INVALID])
def test_slac_only_in_b_or_c(state: CpState) -> None:
    d = Drive(EvseSlac(EVSE, NMK, modem_mac=MODEM), [], [])
    d.pilot(state, 0.0)
    d.rx(parm(), 0.5)
    assert d.m.state == "Idle" and d.sent == [] and d.m.next_deadline() is None
    d.pilot(CpState.C, 1.0)
    d.rx(parm(), 1.5)
    assert d.names() == ["CM_SLAC_PARM.CNF"]


def test_leaving_b_c_during_matching_fails_and_stops() -> None:
    d = plugged()
    _to_sounding(d)
    d.pilot(CpState.A, 1.2)
    assert d.results == [Failed("pilot left B/C (A) before a match")]
    assert d.m.state == "Idle" and d.m.runs == []
    d.rx(profile(), 1.25)
    assert "CM_ATTEN_CHAR.IND" not in d.names()


def test_unplugging_after_the_match_is_no_failure() -> None:
    d = plugged()
    _to_match(d)
    d.rx(match(), 1.4)
    d.pilot(CpState.C, 2.0)  # B -> C while matched is normal
    assert d.m.state == "Matched"
    d.pilot(CpState.A, 9.0)
    assert d.m.state == "Idle" and [type(r) for r in d.results] == [Matched]
    assert d.m.key_handed_out


def test_parm_req_needs_an_ev_unicast_address_and_application_type_zero() -> None:
    d = plugged()
    d.rx(parm(app=1), 1.0)
    d.rx(parm(ev=mme.BROADCAST), 1.0)
    d.rx(parm(ev=EVSE), 1.0)
    d.rx(parm(ev=MODEM), 1.0)
    assert d.sent == [] and d.m.state == "WaitingForSlac" and d.m.ignored == 4


def test_runs_are_capped() -> None:
    d = plugged(max_runs=3)
    for i in range(5):
        d.rx(parm(bytes.fromhex(f"02000000f0{i:02x}")), 1.0 + i * 0.01)
    assert d.names().count("CM_SLAC_PARM.CNF") == 3


def test_an_ev_starting_a_new_run_drops_its_old_one() -> None:
    d = plugged()
    d.rx(parm(EV1, RUN1), 1.0)
    d.rx(parm(EV1, RUN2), 1.1)
    assert [(r.ev_mac, r.run_id) for r in d.m.runs] == [(EV1, RUN2)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slac_init_s": 19.0}, "TT_EVSE_SLAC_init 19.0 s outside 20..50"),
        ({"slac_init_s": 51.0}, "outside 20..50"),
        ({"match_mnbc_s": 0.65}, "whole number of 100 ms"),
        ({"match_response_s": 0.0}, "match_response_s must be positive"),
        ({"num_sounds": 0}, "num_sounds 1..255"),
    ],
)
def test_timings_are_checked_against_the_standard(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Timings(**kwargs)  # type: ignore[arg-type]


def test_a_longer_slac_init_and_sounding_window_are_honoured() -> None:
    d = plugged(timings=Timings(slac_init_s=50.0, match_mnbc_s=1.0))
    assert d.m.next_deadline() == 50.0
    d.rx(parm(), 1.0)
    cnf = d.sent[-1]
    assert isinstance(cnf, mme.CmSlacParmCnf) and cnf.timeout == 10


# ------------------------------------------------------------------------- property: default deny
_POOL = [
    parm(EV1, RUN1),
    parm(EV2, RUN2),
    start(EV1, RUN1),
    start(EV2, RUN2),
    sound(EV1, RUN1),
    profile(EV1),
    profile(EV2),
    profile(EV1, src=EV2),
    rsp(EV1, RUN1),
    rsp(EV2, RUN2),
    rsp(EV1, RUN1, result=2),
    match(EV1, RUN1),
    match(EV2, RUN2),
    match(EV3, RUN1),
    match(EV1, RUN2),
    mme.CmValidateReq(EVSE, EV2).encode(),
    b"\xff" * 70,
    mme.CmSlacParmReq(mme.BROADCAST, EV3, run_id=RUN1).encode()[:40],
]
_PILOTS = [CpState.A, CpState.B, CpState.C, CpState.E]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 3.0),
            st.one_of(st.sampled_from(_POOL), st.sampled_from(_PILOTS), st.binary(max_size=80)),
        ),
        max_size=60,
    )
)
def test_whatever_arrives_the_machine_answers_only_evs_that_asked(inputs: list[tuple[float, object]]) -> None:
    d = plugged()
    t = 0.0
    asked: set[bytes] = set()
    requested_match: set[tuple[bytes, bytes]] = set()
    for dt, item in inputs:
        t += dt
        if isinstance(item, CpState):
            d.pilot(item, t)
            continue
        assert isinstance(item, bytes)
        try:
            message = mme.decode(item)
        except mme.MmeError:
            message = None
        if d.m.state in ("WaitingForSlac", "Matching", "Matched") and isinstance(message, mme.CmSlacParmReq):
            asked.add(message.src)
        if isinstance(message, mme.CmSlacMatchReq):
            requested_match.add((message.src, message.run_id))
        d.rx(item, t)
    for sent in d.sent:
        assert sent.src == EVSE and sent.dst in asked
        if isinstance(sent, mme.CmSlacMatchCnf):
            assert (sent.dst, sent.run_id) in requested_match and sent.nmk == NMK
    matched = [r for r in d.results if isinstance(r, Matched)]
    assert all(r.ev_mac in asked for r in matched)
