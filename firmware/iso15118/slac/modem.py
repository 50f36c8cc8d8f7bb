"""The EVSE's own QCA7000-class PLC modem: set its network key, ask its firmware and link state.

Local management MMEs go to the modem's "localcast" address 00:B0:52:00:00:01, which every QCA
modem answers on whatever its own MAC (EVerest ``plc_peer_mac``). The first confirmation tells us
the modem's real MAC; from then on only frames from that address count as the modem's answers, so
a station on the powerline cannot confirm a key in its name.

Timeouts and attempts are our choices (the standard gives none for host-modem traffic): EVerest
waits 500 ms for CM_SET_KEY.CNF (``set_key_timeout_ms``) and retries until confirmed
(``SetKeyHandlingMode::retry_confirmed``); we do the same with 3 attempts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import TypeVar

from firmware.iso15118.slac import mme
from firmware.iso15118.slac.keys import nid_from_nmk
from firmware.iso15118.slac.link import Link
from hal.clock import Clock

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 0.5  # EVerest set_key_timeout_ms default
REQUEST_ATTEMPTS = 3
# HPGP names 0x00 success; most QCA firmware answers 0x01 (EVerest SetKeyCnfSuccessMode, default
# modem_compat_0x01). Accept both unless told otherwise.
SET_KEY_SUCCESS = frozenset({0x00, 0x01})
_CONFIRMS = frozenset(
    {mme.CmSetKeyCnf.MMTYPE, mme.VsSwVerCnf.MMTYPE, mme.VsLinkStatusCnf.MMTYPE, mme.VsResetCnf.MMTYPE}
)

C = TypeVar("C", bound=mme.Mme)


def is_modem_confirmation(frame: bytes) -> bool:
    """Whether ``frame`` is one of the confirmations a :class:`QcaModem` waits for."""
    return mme.peek_mmtype(frame) in _CONFIRMS


class ModemError(Exception):
    """The local modem did not do what was asked; the message says what and how often it was tried."""


@dataclass(frozen=True)
class SoftwareVersion:
    device_id: int
    version: str
    modem_mac: bytes


class QcaModem:
    """Requests to the local modem on ``link``, one at a time."""

    def __init__(
        self,
        link: Link,
        *,
        clock: Clock,
        address: bytes = mme.QCA_LOCALCAST,
        timeout_s: float = REQUEST_TIMEOUT_S,
        attempts: int = REQUEST_ATTEMPTS,
        set_key_success: Collection[int] = SET_KEY_SUCCESS,
    ) -> None:
        if timeout_s <= 0 or attempts < 1:
            raise ValueError("a modem request needs a positive timeout and at least one attempt")
        self._link = link
        self._clock = clock
        self._address = bytes(address)
        self._timeout = timeout_s
        self._attempts = attempts
        self._set_key_success = frozenset(set_key_success)
        self.mac: bytes | None = None  # learned from the first confirmation
        self._lock = asyncio.Lock()
        self._listener = link.listen(self._is_confirmation)

    def _is_confirmation(self, frame: bytes) -> bool:
        if mme.peek_mmtype(frame) not in _CONFIRMS or frame[:6] != self._link.mac:
            return False
        return self.mac is None or frame[6:12] == self.mac

    async def set_key(self, nmk: bytes, nid: bytes | None = None) -> bytes:
        """Make the modem's AVLN the one keyed by ``nmk``; returns the NID used (derived when None)."""
        nid = nid_from_nmk(nmk) if nid is None else nid
        request = mme.CmSetKeyReq(self._address, self._link.mac, nid=nid, nmk=nmk)
        cnf = await self._request(request, mme.CmSetKeyCnf)
        if cnf.result not in self._set_key_success:
            raise ModemError(f"{self._link.name}: modem refused CM_SET_KEY.REQ (result {cnf.result:#04x})")
        return nid

    async def software_version(self) -> SoftwareVersion:
        cnf = await self._request(mme.VsSwVerReq(self._address, self._link.mac), mme.VsSwVerCnf)
        if cnf.status != 0:
            raise ModemError(f"{self._link.name}: VS_SW_VER.CNF status {cnf.status:#04x}")
        return SoftwareVersion(cnf.device_id, cnf.version, cnf.src)

    async def link_established(self) -> bool:
        """Whether the modem has joined an AVLN (VS_LINK_STATUS.CNF link status 0x01)."""
        cnf = await self._request(mme.VsLinkStatusReq(self._address, self._link.mac), mme.VsLinkStatusCnf)
        return cnf.link_status == mme.QCA_LINK_STATUS_LINKED

    async def reset(self) -> None:
        cnf = await self._request(mme.VsResetReq(self._address, self._link.mac), mme.VsResetCnf)
        if cnf.status != 0:
            raise ModemError(f"{self._link.name}: modem refused VS_RESET.REQ (status {cnf.status:#04x})")

    async def _request(self, request: mme.Mme, answer: type[C]) -> C:
        frame = request.encode()
        async with self._lock:
            self._drain()
            for attempt in range(1, self._attempts + 1):
                self._link.send(frame)
                deadline = self._clock.monotonic() + self._timeout
                while (left := deadline - self._clock.monotonic()) > 0:
                    raw = await self._listener.get_within(left, self._clock)
                    if raw is None:
                        break
                    try:
                        reply = mme.decode(raw)
                    except mme.MmeError as exc:
                        log.warning("%s: unreadable modem confirmation ignored: %s", self._link.name, exc)
                        continue
                    if isinstance(reply, answer):
                        self.mac = self.mac or reply.src
                        return reply
                log.info(
                    "%s: no %s within %.1f s (attempt %d/%d)",
                    self._link.name,
                    answer.NAME,
                    self._timeout,
                    attempt,
                    self._attempts,
                )
        raise ModemError(f"{self._link.name}: modem did not answer {request.NAME} in {self._attempts} attempts")

    def _drain(self) -> None:
        # A late answer to an earlier, given-up request must not pass for this one's.
        while self._listener.get_nowait() is not None:
            pass

    def close(self) -> None:
        self._listener.close()
