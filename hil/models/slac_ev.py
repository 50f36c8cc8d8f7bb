"""The EV side of ISO 15118-3 SLAC, and the EVSE's local PLC modem as the EV's sounds would make it talk.

:class:`SlacEv` plays a vehicle's SLAC: CM_SLAC_PARM.REQ (broadcast, retried), C_EV_start_atten_char_inds
CM_START_ATTEN_CHAR.IND and C_EV_match_MNBC CM_MNBC_SOUND.IND TP_EV_batch_msg_interval apart, then it
waits TT_EV_atten_results (from its first CM_START_ATTEN_CHAR.IND) for CM_ATTEN_CHAR.IND, answers
CM_ATTEN_CHAR.RSP, optionally asks CM_VALIDATE, and sends CM_SLAC_MATCH.REQ (retried) until the
CM_SLAC_MATCH.CNF brings the NID and NMK (ISO 15118-3 Annex A; constants in
:mod:`firmware.iso15118.slac.evse`; TP_EV_batch_msg_interval 20-50 ms, EVerest uses 40 ms).

:class:`EvseModemSim` plays the EVSE's QCA7000 as its host sees it: it answers CM_SET_KEY.REQ (with
result 0x01, as QCA parts do), VS_SW_VER, VS_LINK_STATUS and VS_RESET on the localcast address, and
for every M-Sound the EV makes it reports a CM_ATTEN_PROFILE.IND to the EVSE host. On a real
powerline the modem hears the sounds itself; here the EV tells it (:meth:`EvseModemSim.heard_sound`)
because the simulated medium is a point-to-point link. When the EV applies the NMK it matched with
(:meth:`EvseModemSim.ev_joined`), the modem reports the link as established if that is its own key,
which is how a test proves that the key handed to the EV is the one set on the modem.

Both run on an injected clock over any :class:`~firmware.iso15118.slac.link.Link` (a veth end in a
private namespace, or an in-memory pair in virtual time), so tests and the HIL rig share them.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from firmware.iso15118.slac import mme
from firmware.iso15118.slac.evse import (
    C_EV_MATCH_MNBC,
    C_EV_MATCH_RETRY,
    C_EV_START_ATTEN_CHAR_INDS,
    TP_EV_BATCH_MSG_INTERVAL_S,
    TT_EV_ATTEN_RESULTS_S,
    TT_MATCH_RESPONSE_S,
)
from firmware.iso15118.slac.keys import nid_from_nmk
from firmware.iso15118.slac.link import Link, Listener
from hal.clock import Clock

log = logging.getLogger(__name__)

QCA_SET_KEY_SUCCESS = 0x01  # what QCA firmware answers (EVerest SetKeyCnfSuccessMode::modem_compat_0x01)
SIM_MODEM_MAC = bytes.fromhex("00b052000042")  # a QCA-looking MAC for the simulated modem

M = TypeVar("M", bound=mme.Mme)


class EvSlacError(Exception):
    """The simulated EV could not match; the message says at which step."""


@dataclass(frozen=True)
class EvSlacConfig:
    """How the simulated EV behaves; the defaults follow the standard."""

    run_id: bytes | None = None  # random per run when None
    batch_interval_s: float = TP_EV_BATCH_MSG_INTERVAL_S
    start_atten_inds: int = C_EV_START_ATTEN_CHAR_INDS
    sounds: int = C_EV_MATCH_MNBC
    response_s: float = TT_MATCH_RESPONSE_S
    match_retry: int = C_EV_MATCH_RETRY
    atten_results_s: float = TT_EV_ATTEN_RESULTS_S
    validate: bool = False  # send CM_VALIDATE.REQ before matching
    answer_atten_char: bool = True  # False: never send CM_ATTEN_CHAR.RSP (fault injection)
    request_match: bool = True  # False: stop after CM_ATTEN_CHAR.RSP (fault injection)

    def __post_init__(self) -> None:
        if self.run_id is not None and len(self.run_id) != mme.RUN_ID_LEN:
            raise ValueError(f"a run id is {mme.RUN_ID_LEN} bytes")
        if not 1 <= self.sounds <= 0xFF or self.start_atten_inds < 1 or self.match_retry < 0:
            raise ValueError("sounds 1..255, start_atten_inds >= 1, match_retry >= 0")


@dataclass(frozen=True)
class EvMatch:
    """What the EV learned, and when (clock seconds) each step happened."""

    evse_mac: bytes
    run_id: bytes
    nid: bytes
    nmk: bytes
    attenuation_db: float
    times: dict[str, float] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        """From the first CM_SLAC_PARM.REQ to the CM_SLAC_MATCH.CNF."""
        return self.times["match_cnf"] - self.times["parm_req"]


class SlacEv:
    """One vehicle's SLAC over ``link``; :meth:`match` runs one matching process."""

    def __init__(
        self,
        link: Link,
        *,
        clock: Clock,
        config: EvSlacConfig | None = None,
        evse_modem: EvseModemSim | None = None,
        mac: bytes | None = None,
    ) -> None:
        self._link = link
        self._clock = clock
        self.config = config or EvSlacConfig()
        self._modem = evse_modem
        self.mac = bytes(mac) if mac is not None else link.mac
        self.log: list[tuple[float, str]] = []  # (time, message name) of everything sent and received

    def _mine(self, frame: bytes) -> bool:
        return frame[:6] in (self.mac, mme.BROADCAST) and frame[6:12] != self.mac

    def _send(self, message: mme.Mme) -> None:
        self._link.send(message.encode())
        self.log.append((self._clock.monotonic(), "tx " + message.NAME))

    async def _wait(self, listener: Listener, kind: type[M], until: float, accept: Callable[[M], bool]) -> M | None:
        while (left := until - self._clock.monotonic()) > 0:
            raw = await listener.get_within(left, self._clock)
            if raw is None:
                return None
            try:
                message = mme.decode(raw)
            except mme.MmeError:
                continue
            self.log.append((self._clock.monotonic(), "rx " + message.NAME))
            if isinstance(message, kind) and accept(message):
                return message
        return None

    async def _ask(self, listener: Listener, request: mme.Mme, kind: type[M], accept: Callable[[M], bool]) -> M:
        c = self.config
        for _ in range(1 + c.match_retry):
            self._send(request)
            answer = await self._wait(listener, kind, self._clock.monotonic() + c.response_s, accept)
            if answer is not None:
                return answer
        raise EvSlacError(f"no {kind.NAME} to {1 + c.match_retry} {request.NAME}")

    async def match(self) -> EvMatch:
        c = self.config
        run_id = c.run_id or secrets.token_bytes(mme.RUN_ID_LEN)
        times: dict[str, float] = {}
        listener = self._link.listen(self._mine)
        try:
            times["parm_req"] = self._clock.monotonic()
            cnf = await self._ask(
                listener,
                mme.CmSlacParmReq(mme.BROADCAST, self.mac, run_id=run_id),
                mme.CmSlacParmCnf,
                lambda m: m.run_id == run_id,
            )
            times["parm_cnf"] = self._clock.monotonic()
            await self._sound(run_id, cnf, times)
            ind = await self._wait(
                listener,
                mme.CmAttenCharInd,
                times["start_atten"] + c.atten_results_s,
                lambda m: m.run_id == run_id and m.source_address == self.mac,
            )
            if ind is None:
                raise EvSlacError(f"no CM_ATTEN_CHAR.IND within TT_EV_atten_results ({c.atten_results_s:g} s)")
            times["atten_char"] = self._clock.monotonic()
            evse = ind.src
            attenuation = sum(ind.aag) / len(ind.aag)
            if not c.answer_atten_char:
                raise EvSlacError("configured not to answer CM_ATTEN_CHAR.IND")
            self._send(mme.CmAttenCharRsp(evse, self.mac, source_address=self.mac, run_id=run_id, result=0))
            if c.validate:
                await self._ask(listener, mme.CmValidateReq(evse, self.mac), mme.CmValidateCnf, lambda m: True)
            if not c.request_match:
                raise EvSlacError("configured not to send CM_SLAC_MATCH.REQ")
            match = await self._ask(
                listener,
                mme.CmSlacMatchReq(evse, self.mac, pev_mac=self.mac, evse_mac=evse, run_id=run_id),
                mme.CmSlacMatchCnf,
                lambda m: m.run_id == run_id and m.pev_mac == self.mac,
            )
            times["match_cnf"] = self._clock.monotonic()
        finally:
            listener.close()
        if match.nid != nid_from_nmk(match.nmk):
            raise EvSlacError(f"CM_SLAC_MATCH.CNF NID {match.nid.hex()} does not belong to its NMK")
        if self._modem is not None:
            self._modem.ev_joined(match.nmk)
        return EvMatch(evse, run_id, match.nid, match.nmk, attenuation, times)

    async def _sound(self, run_id: bytes, cnf: mme.CmSlacParmCnf, times: dict[str, float]) -> None:
        c = self.config
        for i in range(c.start_atten_inds):
            if i:
                await self._clock.sleep(c.batch_interval_s)
            if i == 0:
                times["start_atten"] = self._clock.monotonic()
            self._send(
                mme.CmStartAttenCharInd(
                    mme.BROADCAST,
                    self.mac,
                    forwarding_sta=self.mac,
                    run_id=run_id,
                    num_sounds=c.sounds,
                    timeout=cnf.timeout,
                    resp_type=mme.RESP_TYPE_OTHER_GP_STA,
                )
            )
        for i in range(c.sounds):
            await self._clock.sleep(c.batch_interval_s)
            remaining = c.sounds - 1 - i
            self._send(
                mme.CmMnbcSoundInd(
                    mme.BROADCAST, self.mac, run_id=run_id, remaining_sounds=remaining, random=secrets.token_bytes(16)
                )
            )
            if self._modem is not None:
                self._modem.heard_sound(self.mac)


class EvseModemSim:
    """The EVSE's local QCA modem, seen from its host; run :meth:`serve` as a task."""

    def __init__(
        self,
        link: Link,
        *,
        mac: bytes = SIM_MODEM_MAC,
        host_mac: bytes | None = None,
        attenuation_db: int = 20,
        groups: int = mme.AAG_MAX_GROUPS,
        set_key_result: int = QCA_SET_KEY_SUCCESS,
        version: str = "MAC-QCA7000-1.2.5.3207-00-20180227-CS",
        answer: bool = True,
    ) -> None:
        if not 0 <= attenuation_db <= 0xFF or not 1 <= groups <= mme.AAG_MAX_GROUPS:
            raise ValueError("attenuation 0..255 dB, 1..58 groups")
        self._link = link
        self.mac = bytes(mac)
        self.host_mac = host_mac  # learned from the first request when None
        self.attenuation_db = attenuation_db
        self.groups = groups
        self.set_key_result = set_key_result
        self.version = version
        self.answer = answer  # False: a dead modem (fault injection)
        self.nmk: bytes | None = None
        self.nid: bytes | None = None
        self.set_keys = 0
        self.profiles_sent = 0
        self.linked = False

    def _for_me(self, frame: bytes) -> bool:
        return frame[:6] in (mme.QCA_LOCALCAST, self.mac) and mme.peek_mmtype(frame) in _REQUESTS

    async def serve(self) -> None:
        listener = self._link.listen(self._for_me)
        try:
            while True:
                raw = await listener.get()
                try:
                    request = mme.decode(raw)
                except mme.MmeError as exc:
                    log.debug("modem sim: %s", exc)
                    continue
                self.host_mac = self.host_mac or request.src
                reply = self._reply(request)
                if reply is not None and self.answer:
                    self._link.send(reply.encode())
        finally:
            listener.close()

    def _reply(self, request: mme.Mme) -> mme.Mme | None:
        to, me = request.src, self.mac
        if isinstance(request, mme.CmSetKeyReq):
            self.set_keys += 1
            if self.set_key_result in (0x00, QCA_SET_KEY_SUCCESS):
                if self.nmk != request.nmk:
                    self.linked = False  # a new key: the old AVLN is gone
                self.nmk, self.nid = request.nmk, request.nid
            return mme.CmSetKeyCnf(to, me, result=self.set_key_result)
        if isinstance(request, mme.VsSwVerReq):
            return mme.VsSwVerCnf(to, me, status=0, device_id=0x20, version=self.version)
        if isinstance(request, mme.VsLinkStatusReq):
            return mme.VsLinkStatusCnf(to, me, link_status=mme.QCA_LINK_STATUS_LINKED if self.linked else 0)
        if isinstance(request, mme.VsResetReq):
            self.nmk = self.nid = None
            self.linked = False
            return mme.VsResetCnf(to, me, status=0)
        return None

    def heard_sound(self, ev_mac: bytes) -> None:
        """An M-Sound of ``ev_mac`` reached the modem: report its attenuation profile to the host."""
        if self.host_mac is None or not self.answer:
            log.debug("modem sim: sound from %s not reported (no host yet)", ev_mac.hex(":"))
            return
        profile = mme.CmAttenProfileInd(
            self.host_mac, self.mac, pev_mac=ev_mac, aag=(self.attenuation_db,) * self.groups
        )
        self._link.send(profile.encode())
        self.profiles_sent += 1

    def ev_joined(self, nmk: bytes) -> None:
        """The EV's modem now uses ``nmk``: the AVLN forms if it is this modem's key."""
        self.linked = self.nmk is not None and nmk == self.nmk


_REQUESTS = frozenset(
    {mme.CmSetKeyReq.MMTYPE, mme.VsSwVerReq.MMTYPE, mme.VsLinkStatusReq.MMTYPE, mme.VsResetReq.MMTYPE}
)
