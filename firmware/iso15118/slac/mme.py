"""HomePlug AV / Green PHY management messages (MMEs) for ISO 15118-3 SLAC, and the QCA vendor ones.

Every MME travels in one Ethernet frame (HomePlug Green PHY 1.1 Table 11-1, as transcribed in the
public copies of chapter 11 "Management Messages"):

    ODA (6) | OSA (6) | MTYPE 0x88E1 (2, big endian) | MMV (1) | MMTYPE (2, little endian)
    | FMI (1) FMSN (1)   -- only when MMV >= 1 (HomePlug AV 1.1 and later)
    | [OUI (3)]          -- vendor-specific MMTYPEs 0xA000-0xBFFF only
    | MMENTRY ... | pad to the 60-byte minimum frame

FMI carries the number of fragments (4 MSBs, 0 = not fragmented) and the fragment number (4 LSBs);
no SLAC or modem-management MME needs more than one fragment, so a fragmented one is rejected.
SLAC MMEs are sent as MMV 0x01 (AV 1.1) with FMI/FMSN zero, the vendor ones as MMV 0x00 (AV 1.0,
no FMI), as EVerest's slac library frames them (``slac_messages``/``HomeplugMessage``; pyslac
``HOMEPLUG_MMV = 0x01``, open-plc-utils ``struct qualcomm_std``/``qualcomm_fmi``). Both framings are
accepted on receive because vehicles differ.

Field layouts (sizes in bytes, multi-byte integers little endian) are those of ISO 15118-3 Annex A
Tables A.2-A.8 as published in the open implementations: EVerest ``lib/everest/slac/include/slac/
slac.hpp`` (structs ``cm_slac_parm_req`` ... ``cm_set_key_cnf`` and the Qualcomm ones), cross-checked
against the frame sizes pyslac lists in ``pyslac/enums.py`` ``FramesSizes`` (e.g. CM_ATTEN_CHAR.RSP
70 bytes = 14 + 5 + 51). Only ``security_type`` 0x00 ("no security") is supported: with 0x01 the
CM_SLAC_PARM.REQ carries cipher suites and a different layout, which ISO 15118-3 EVs do not use.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar, Self

ETHERTYPE_HOMEPLUG_AV = 0x88E1  # IEEE-assigned HomePlug AV Ethertype (HPGP Table 11-1; EVerest slac.hpp)
ETH_HEADER_LEN = 14
MME_MIN_FRAME_LEN = 60  # MME_MIN_LENGTH in EVerest slac.hpp: Ethernet minimum without FCS
MME_MAX_FRAME_LEN = 1514  # ETH_FRAME_LEN: one untagged Ethernet frame without FCS

MAC_LEN = 6
NID_LEN = 7  # 54-bit network identifier in 7 octets (EVerest NID_LEN, open-plc-utils HPAVKEY_NID_LEN)
RUN_ID_LEN = 8  # EVerest RUN_ID_LEN; MNBC_SOUND and SLAC_MATCH carry it in a 16-byte field, 8 reserved
NMK_LEN = 16  # AES-128 network membership key (EVerest NMK_LEN)
STATION_ID_LEN = 17  # PEV/EVSE/source/response/sender ids (EVerest STATION_ID_LEN)
AAG_MAX_GROUPS = 58  # OFDM carrier groups of Green PHY (EVerest AAG_LIST_LEN)
RANDOM_LEN = 16  # CM_MNBC_SOUND.IND random value

BROADCAST = b"\xff" * MAC_LEN
QCA_OUI = bytes.fromhex("00b052")  # Qualcomm Atheros (Intellon) vendor MME code, EVerest/open-plc-utils
# The address a QCA modem answers local management MMEs on, whatever its own MAC
# (EVerest EvseSlacConfig.plc_peer_mac, open-plc-utils/faifa "localcast").
QCA_LOCALCAST = bytes.fromhex("00b052000001")

MMV_AV_1_0 = 0x00
MMV_AV_1_1 = 0x01
MMV_AV_2_0 = 0x02
_MMVS = (MMV_AV_1_0, MMV_AV_1_1, MMV_AV_2_0)

# MMTYPE = base | mode (EVerest slac.hpp MMTYPE_MODE_*).
REQ, CNF, IND, RSP = 0x0, 0x1, 0x2, 0x3
CM_SET_KEY = 0x6008
CM_SLAC_PARM = 0x6064
CM_START_ATTEN_CHAR = 0x6068
CM_ATTEN_CHAR = 0x606C
CM_MNBC_SOUND = 0x6074
CM_VALIDATE = 0x6078
CM_SLAC_MATCH = 0x607C
CM_ATTEN_PROFILE = 0x6084
# Qualcomm vendor-specific MMTYPEs (EVerest slac.hpp namespace qualcomm; open-plc-utils VS_SW_VER).
VS_SW_VER = 0xA000
VS_NW_INFO = 0xA038
VS_RESET = 0xA01C
VS_LINK_STATUS = 0xA0B8
_VENDOR_FIRST, _VENDOR_LAST = 0xA000, 0xBFFF  # vendor-specific MMTYPE category (EVerest MMTYPE_CATEGORY_*)

APPLICATION_TYPE_PEV_EVSE = 0x00  # "PEV-EVSE matching", the only one ISO 15118-3 defines
SECURITY_TYPE_NONE = 0x00
RESP_TYPE_OTHER_GP_STA = 0x01  # the sounds' recipient reports to another GP station (ISO 15118-3; pyslac)
SET_KEY_TYPE_NMK = 0x01  # CM_SET_KEY.REQ KeyType: NMK (AES-128)
SET_KEY_PID_HLE = 0x04  # protocol id "HLE protocol"
SET_KEY_NEW_EKS_NMK = 0x01
MATCH_REQ_MVF_LEN = 0x3E  # bytes that follow MVFLength in CM_SLAC_MATCH.REQ (62)
MATCH_CNF_MVF_LEN = 0x56  # ... in CM_SLAC_MATCH.CNF (86)
VALIDATE_RESULT_NOT_READY = 0x00
VALIDATE_RESULT_READY = 0x01
VALIDATE_RESULT_SUCCESS = 0x02
VALIDATE_RESULT_FAILURE = 0x03
VALIDATE_RESULT_NOT_REQUIRED = 0x04
QCA_LINK_STATUS_LINKED = 0x01  # VS_LINK_STATUS.CNF: the modem has joined an AVLN (EVerest WaitForLink)

_ZERO_ID = bytes(STATION_ID_LEN)


class MmeError(ValueError):
    """A frame that is not a well-formed MME we understand; the message says which field and why."""


class UnsupportedMme(MmeError):
    """A well-framed HomePlug MME of a type this codec does not handle (other MMTYPE, fragmented)."""


# ---------------------------------------------------------------------------------------- field I/O
class _Reader:
    def __init__(self, name: str, data: bytes, offset: int) -> None:
        self.name = name
        self.data = data
        self.pos = offset

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            left = max(0, len(self.data) - self.pos)
            raise MmeError(f"{self.name}: frame ends inside {what} (needs {n} bytes at offset {self.pos}, {left} left)")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        value: int = struct.unpack("<H", self.take(2, what))[0]
        return value

    def u32(self, what: str) -> int:
        value: int = struct.unpack("<I", self.take(4, what))[0]
        return value


def _fixed(owner: str, what: str, value: bytes, n: int) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != n:
        got = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise MmeError(f"{owner}.{what} must be {n} bytes, got {got}")
    return bytes(value)


def _u8(owner: str, what: str, value: int) -> bytes:
    if not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise MmeError(f"{owner}.{what} must be an integer 0..255, got {value!r}")
    return bytes((value,))


def _u16(owner: str, what: str, value: int) -> bytes:
    if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise MmeError(f"{owner}.{what} must be an integer 0..65535, got {value!r}")
    return struct.pack("<H", value)


def _u32(owner: str, what: str, value: int) -> bytes:
    if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise MmeError(f"{owner}.{what} must be an integer 0..2^32-1, got {value!r}")
    return struct.pack("<I", value)


def _aag(owner: str, values: tuple[int, ...]) -> bytes:
    if not 1 <= len(values) <= AAG_MAX_GROUPS:
        raise MmeError(f"{owner}.aag must list 1..{AAG_MAX_GROUPS} groups, got {len(values)}")
    return bytes((len(values),)) + b"".join(_u8(owner, "aag", v) for v in values)


def _read_aag(r: _Reader) -> tuple[int, ...]:
    groups = r.u8("NumGroups")
    if not 1 <= groups <= AAG_MAX_GROUPS:
        raise MmeError(f"{r.name}: NumGroups {groups} outside 1..{AAG_MAX_GROUPS}")
    return tuple(r.take(groups, "AAG list"))


# ---------------------------------------------------------------------------------------- messages
@dataclass(frozen=True)
class Mme:
    """One MME in one Ethernet frame: ``dst`` (ODA) and ``src`` (OSA) are 6-byte MAC addresses."""

    dst: bytes
    src: bytes

    MMTYPE: ClassVar[int]
    NAME: ClassVar[str]

    def encode(self) -> bytes:
        """The whole Ethernet frame, padded with zeros to the 60-byte minimum."""
        header = _fixed(self.NAME, "dst", self.dst, MAC_LEN) + _fixed(self.NAME, "src", self.src, MAC_LEN)
        header += struct.pack(">H", ETHERTYPE_HOMEPLUG_AV)
        if _is_vendor(self.MMTYPE):
            header += bytes((MMV_AV_1_0,)) + struct.pack("<H", self.MMTYPE) + QCA_OUI
        else:
            header += bytes((MMV_AV_1_1,)) + struct.pack("<H", self.MMTYPE) + b"\x00\x00"
        frame = header + self._body()
        if len(frame) > MME_MAX_FRAME_LEN:
            raise MmeError(f"{self.NAME}: {len(frame)} bytes do not fit one Ethernet frame")
        return frame.ljust(MME_MIN_FRAME_LEN, b"\x00")

    def _body(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def _parse(cls, dst: bytes, src: bytes, r: _Reader) -> Self:
        raise NotImplementedError


def _is_vendor(mmtype: int) -> bool:
    return _VENDOR_FIRST <= mmtype <= _VENDOR_LAST


@dataclass(frozen=True)
class CmSetKeyReq(Mme):
    """Host -> local modem: use this NMK/NID (HPGP 11.5.4 Table 11-87 via pyslac; ISO 15118-3 Table A.8)."""

    nid: bytes = bytes(NID_LEN)
    nmk: bytes = bytes(NMK_LEN)
    key_type: int = SET_KEY_TYPE_NMK
    my_nonce: int = 0  # no encrypted payload, so the nonces are zero (EVerest cm_set_key_req)
    your_nonce: int = 0
    pid: int = SET_KEY_PID_HLE
    prn: int = 0
    pmn: int = 0
    cco_capability: int = 0  # level-0 CCo capable, neither QoS nor TDMA
    new_eks: int = SET_KEY_NEW_EKS_NMK

    MMTYPE = CM_SET_KEY | REQ
    NAME = "CM_SET_KEY.REQ"

    def _body(self) -> bytes:
        n = self.NAME
        return (
            _u8(n, "key_type", self.key_type)
            + _u32(n, "my_nonce", self.my_nonce)
            + _u32(n, "your_nonce", self.your_nonce)
            + _u8(n, "pid", self.pid)
            + _u16(n, "prn", self.prn)
            + _u8(n, "pmn", self.pmn)
            + _u8(n, "cco_capability", self.cco_capability)
            + _fixed(n, "nid", self.nid, NID_LEN)
            + _u8(n, "new_eks", self.new_eks)
            + _fixed(n, "nmk", self.nmk, NMK_LEN)
        )

    @classmethod
    def _parse(cls, dst: bytes, src: bytes, r: _Reader) -> Self:
        key_type = r.u8("KeyType")
        my_nonce, your_nonce = r.u32("MyNonce"), r.u32("YourNonce")
        pid, prn, pmn, cco = r.u8("PID"), r.u16("PRN"), r.u8("PMN"), r.u8("CCoCapability")
        nid = r.take(NID_LEN, "NID")
        new_eks = r.u8("NewEKS")
        nmk = r.take(NMK_LEN, "NewKey")
        return cls(dst, src, nid, nmk, key_type, my_nonce, your_nonce, pid, prn, pmn, cco, new_eks)


@dataclass(frozen=True)
class CmSetKeyCnf(Mme):
    """Local modem -> host. HPGP says result 0x00 is success; most QCA parts answer 0x01 (EVerest
    ``SetKeyCnfSuccessMode``), so the result is left to the caller to judge."""

    result: int = 0
    my_nonce: int = 0
    your_nonce: int = 0
    pid: int = SET_KEY_PID_HLE
    prn: int = 0
    pmn: int = 0
    cco_capability: int = 0

    MMTYPE = CM_SET_KEY | CNF
    NAME = "CM_SET_KEY.CNF"

    def _body(self) -> bytes:
        n = self.NAME
        return (
            _u8(n, "result", self.result)
            + _u32(n, "my_nonce", self.my_nonce)
            + _u32(n, "your_nonce", self.your_nonce)
            + _u8(n, "pid", self.pid)
            + _u16(n, "prn", self.prn)
            + _u8(n, "pmn", self.pmn)
            + _u8(n, "cco_capability", self.cco_capability)
        )

    @classmethod
    def _parse(cls, dst: bytes, src: bytes, r: _Reader) -> Self:
        result = r.u8("Result")
        my_nonce, your_nonce = r.u32("MyNonce"), r.u32("YourNonce")
        return cls(dst, src, result, my_nonce, your_nonce, r.u8("PID"), r.u16("PRN"), r.u8("PMN"), r.u8("CCoCap"))


def _check_security(name: str, security_type: int) -> None:
    if security_type != SECURITY_TYPE_NONE:
        raise UnsupportedMme(f"{name}: security type {security_type:#04x} (secure SLAC) is not supported")


@dataclass(frozen=True)
class CmSlacParmReq(Mme):
    """EV -> broadcast: start a matching run (ISO 15118-3 Table A.2)."""

    run_id: bytes = bytes(RUN_ID_LEN)
    application_type: int = APPLICATION_TYPE_PEV_EVSE
    security_type: int = SECURITY_TYPE_NONE

    MMTYPE = CM_SLAC_PARM | REQ
    NAME = "CM_SLAC_PARM.REQ"

    def _body(self) -> bytes:
        _check_security(self.NAME, self.security_type)
        n = self.NAME
        return (
            _u8(n, "application_type", self.application_type)
            + _u8(n, "security_type", self.security_type)
            + _fixed(n, "run_id", self.run_id, RUN_ID_LEN)
        )

    @classmethod
    def _parse(cls, dst: bytes, src: bytes, r: _Reader) -> Self:
        app, sec = r.u8("ApplicationType"), r.u8("SecurityType")
        _check_security(r.name, sec)
        return cls(dst, src, r.take(RUN_ID_LEN, "RunID"), app, sec)


@dataclass(frozen=True)
class CmSlacParmCnf(Mme):
    """EVSE -> EV: sounding parameters (ISO 15118-3 Table A.2). ``timeout`` is TT_EVSE_match_MNBC in 100 ms."""

    forwarding_sta: bytes = bytes(MAC_LEN)
    run_id: bytes = bytes(RUN_ID_LEN)
    num_sounds: int = 10
    timeout: int = 6
    resp_type: int = RESP_TYPE_OTHER_GP_STA
    msound_target: bytes = BROADCAST
    application_type: int = APPLICATION_TYPE_PEV_EVSE
    security_type: int = SECURITY_TYPE_NONE

    MMTYPE = CM_SLAC_PARM | CNF
    NAME = "CM_SLAC_PARM.CNF"

    def _body(self) -> bytes:
        _check_security(self.NAME, self.security_type)
        n = self.NAME
        return (
            _fixed(n, "msound_target", self.msound_target, MAC_LEN)
            + _u8(n, "num_sounds", self.num_sounds)
            + _u8(n, "timeout", self.timeout)
            + _u8(n, "resp_type", self.resp_type)
            + _fixed(n, "forwarding_sta", self.forwarding_sta, MAC_LEN)
            + _u8(n, "application_type", self.application_type)
            + _u8(n, "security_type", self.security_type)
            + _fixed(n, "run_id", self.run_id, RUN_ID_LEN)
        )

    @classmethod
    def _parse(cls, dst: bytes, src: bytes, r: _Reader) -> Self:
        target = r.take(MAC_LEN, "M-SOUND_TARGET")
        sounds, timeout, resp = r.u8("NUM_SOUNDS"), r.u8("Time_Out"), r.u8("RESP_TYPE")
        fwd = r.take(MAC_LEN, "FORWARDING_STA")
        app, sec = r.u8("ApplicationType"), r.u8("SecurityType")
        _check_security(r.name, sec)
        return cls(dst, src, fwd, r.take(RUN_ID_LEN, "RunID"), sounds, timeout, resp, target, app, sec)


@dataclass(frozen=True)
class CmStartAttenCharInd(Mme):
    """EV -> broadcast, sent C_EV_start_atten_char_inds times: sounding starts (ISO 15118-3 Table A.3)."""

    forwarding_sta: bytes = bytes(MAC_LEN)
    run_id: bytes = bytes(RUN_ID_LEN)
    num_sounds: int = 10
    timeout: int = 6
    resp_type: int = RESP_TYPE_OTHER_GP_STA
    application_type: int = APPLICATION_TYPE_PEV_EVSE
    security_type: int = SECURITY_TYPE_NONE

    MMTYPE = CM_START_ATTEN_CHAR | IND
    NAME = "CM_START_ATTEN_CHAR.IND"

    def _body(self) -> bytes:
        _check_security(self.NAME, self.security_type)
        n = self.NAME
        return (
            _u8(n, "application_type", self.application_type)
            + _u8(n, "security_type", self.security_type)
            + _u8(n, "num_sounds", self.num_sounds)
            + _u8(n, "timeout", self.timeout)
            + _u8(n, "resp_type", self.resp_type)
            + _fixed(n, "forwarding_sta", self.forwarding_sta, MAC_LEN)
            + _fixed(n, "run_id", self.run_id, RUN_ID_LEN)
        )

    @classmethod
    def _parse(cls, dst: bytes, src: bytes, r: _Reader) -> Self:
        app, sec = r.u8("ApplicationType"), r.u8("SecurityType")
        _check_security(r.name, sec)
        sounds, timeout, resp = r.u8("NUM_SOUNDS"), r.u8("Time_Out"), r.u8("RESP_TYPE")
        fwd = r.take(MAC_LEN, "FORWARDING_STA")
        return cls(dst, src, fwd, r.take(RUN_ID_LEN, "RunID"), sounds, timeout, resp, app, sec)


@dataclass(frozen=True)
class CmMnbcSoundInd(Mme):
    """EV -> broadcast, C_EV_match_MNBC times: one M-Sound (ISO 15118-3 Table A.4)."""

    run_id: bytes = bytes(RUN_ID_LEN)
    remaining_sounds: int = 0
    sender_id: bytes = _ZERO_ID
    random: bytes = bytes(RANDOM_LEN)
    application_type: int = APPLICATION_TYPE_PEV_EVSE
    security_type: int = SECURITY_TYPE_NONE

    MMTYPE = CM_MNBC_SOUND | IND
    NAME = "CM_MNBC_SOUND.IND"

    def _body(self) -> bytes:
        _check_security(self.NAME, self.security_type)
        n = self.NAME
        return (
            _u8(n, "application_type", self.application_type)
            + _u8(n, "security_type", self.security_type)
            + _fixed(n, "sender_id", self.sender_id, STATION_ID_LEN)
            + _u8(n, "remaining_sounds", self.remaining_sounds)
            + _fixed(n, "run_id", self.run_id, RUN_ID_LEN)
            + bytes(8)  # RunID is a 16-byte field here; the upper 8 bytes are reserved
            + _fixed(n, "random", self.random, RANDOM_LEN)
        )

    @classmethod
    def _parse(cls, dst: bytes, src: bytes, r: _Reader) -> Self:
        app, sec = r.u8("ApplicationType"), r.u8("SecurityType")
        _check_security(r.name, sec)
        sender = r.take(STATION_ID_LEN, "SenderID")
        remaining = r.u8("Cnt")
        run_id = r.take(RUN_ID_LEN, "RunID")
        r.take(8, "RunID reserved octets")
        return cls(dst, src, run_id, remaining, sender, r.take(RANDOM_LEN, "Rnd"), app, sec)


@dataclass(frozen=True)
class CmAttenProfileInd(Mme):
    """Local modem -> EVSE host, one per M-Sound heard: attenuation per carrier group (ISO 15118-3 A.5)."""

    pev_mac: bytes = bytes(MAC_LEN)
    aag: tuple[int, ...] = field(default=(0,) * AAG_MAX_GROUPS)

    MMTYPE = CM_ATTEN_PROFILE | IND
    NAME = "CM_ATTEN_PROFILE.IND"

    def _body(self) -> bytes:
        groups = _aag(self.NAME, self.aag)
        # NumGroups, one reserved octet, then the list.
        return _fixed(self.NAME, "pev_mac", self.pev_mac, MAC_LEN) + groups[:1] + b"\x00" + groups[1:]

    @classmethod
    def _parse(cls, dst: bytes, src: bytes, r: _Reader) -> Self:
        pev = r.take(MAC_LEN, "PEV MAC")
        groups = r.u8("NumGroups")
        if not 1 <= groups <= AAG_MAX_GROUPS:
            raise MmeError(f"{r.name}: NumGroups {groups} outside 1..{AAG_MAX_GROUPS}")
        r.take(1, "reserved octet")
        return cls(dst, src, pev, tuple(r.take(groups, "AAG list")))


@dataclass(frozen=True)
class CmAttenCharInd(Mme):
    """EVSE -> EV: the averaged attenuation profile of the EV's sounds (ISO 15118-3 Table A.5)."""

    source_address: bytes = bytes(MAC_LEN)
    run_id: bytes = bytes(RUN_ID_LEN)
    num_sounds: int = 0
    aag: tuple[int, ...] = field(default=(0,) * AAG_MAX_GROUPS)
    source_id: bytes = _ZERO_ID
    resp_id: bytes = _ZERO_ID
    application_type: int = APPLICATION_TYPE_PEV_EVSE
    security_type: int = SECURITY_TYPE_NONE

    MMTYPE = CM_ATTEN_CHAR | IND
    NAME = "CM_ATTEN_CHAR.IND"

    def _body(self) -> bytes:
        _check_security(self.NAME, self.security_type)
        n = self.NAME
        return (
            _u8(n, "application_type", self.application_type)
            + _u8(n, "security_type", self.security_type)
            + _fixed(n, "source_address", self.source_address, MAC_LEN)
            + _fixed(n, "run_id", self.run_id, RUN_ID_LEN)
            + _fixed(n, "source_id", self.source_id, STATION_ID_LEN)
            + _fixed(n, "resp_id", self.resp_id, STATION_ID_LEN)
            + _u8(n, "num_sounds", self.num_sounds)
            + _aag(n, self.aag)
        )

    @classmethod
    def _parse(cls, dst: bytes, src: bytes, r: _Reader) -> Self:
        app, sec = r.u8("ApplicationType"), r.u8("SecurityType")
        _check_security(r.name, sec)
        source = r.take(MAC_LEN, "SOURCE_ADDRESS")
        run_id = r.take(RUN_ID_LEN, "RunID")
        source_id, resp_id = r.take(STATION_ID_LEN, "SOURCE_ID"), r.take(STATION_ID_LEN, "RESP_ID")
        sounds = r.u8("NumSounds")
        return cls(dst, src, source, run_id, sounds, _read_aag(r), source_id, resp_id, app, sec)


@dataclass(frozen=True)
class CmAttenCharRsp(Mme):
    """EV -> EVSE: profile received; ``result`` 0x00 = success (ISO 15118-3 Table A.5)."""

    source_address: bytes = bytes(MAC_LEN)
    run_id: bytes = bytes(RUN_ID_LEN)
    result: int = 0
    source_id: bytes = _ZERO_ID
    resp_id: bytes = _ZERO_ID
    application_type: int = APPLICATION_TYPE_PEV_EVSE
    security_type: int = SECURITY_TYPE_NONE

    MMTYPE = CM_ATTEN_CHAR | RSP
    NAME = "CM_ATTEN_CHAR.RSP"

    def _body(self) -> bytes:
        _check_security(self.NAME, self.security_type)
        n = self.NAME
        return (
            _u8(n, "application_type", self.application_type)
            + _u8(n, "security_type", self.security_type)
            + _fixed(n, "source_address", self.source_address, MAC_LEN)
            + _fixed(n, "run_id", self.run_id, RUN_ID_LEN)
            + _fixed(n, "source_id", self.source_id, STATION_ID_LEN)
            + _fixed(n, "resp_id", self.resp_id, STATION_ID_LEN)
            + _u8(n, "result", self.result)
        )

    @classmethod
    def _parse(cls, dst: bytes, src: bytes, r: _Reader) -> Self:
        app, sec = r.u8("ApplicationType"), r.u8("SecurityType")
        _check_security(r.name, sec)
        source = r.take(MAC_LEN, "SOURCE_ADDRESS")
        run_id = r.take(RUN_ID_LEN, "RunID")
        source_id, resp_id = r.take(STATION_ID_LEN, "SOURCE_ID"), r.take(STATION_ID_LEN, "RESP_ID")
        return cls(dst, src, source, run_id, r.u8("Result"), source_id, resp_id, app, sec)


@dataclass(frozen=True)
class CmValidateReq(Mme):
    """EV -> EVSE: optional validation by toggling the pilot (ISO 15118-3 Table A.6)."""

    signal_type: int = 0  # 0x00: PEV S2 toggles on the control pilot
    timer: int = 0
    result: int = VALIDATE_RESULT_READY

    MMTYPE = CM_VALIDATE | REQ
    NAME = "CM_VALIDATE.REQ"

    def _body(self) -> bytes:
        n = self.NAME
        return _u8(n, "signal_type", self.signal_type) + _u8(n, "timer", self.timer) + _u8(n, "result", self.result)

    @classmethod
    def _parse(cls, dst: bytes, src: bytes, r: _Reader) -> Self:
        return cls(dst, src, r.u8("SignalType"), r.u8("Timer"), r.u8("Result"))


@dataclass(frozen=True)
class CmValidateCnf(Mme):
    """EVSE -> EV (ISO 15118-3 Table A.6)."""

    signal_type: int = 0
    toggle_num: int = 0
    result: int = VALIDATE_RESULT_FAILURE

    MMTYPE = CM_VALIDATE | CNF
    NAME = "CM_VALIDATE.CNF"

    def _body(self) -> bytes:
        n = self.NAME
        return (
            _u8(n, "signal_type", self.signal_type)
            + _u8(n, "toggle_num", self.toggle_num)
            + _u8(n, "result", self.result)
        )

    @classmethod
    def _parse(cls, dst: bytes, src: bytes, r: _Reader) -> Self:
        return cls(dst, src, r.u8("SignalType"), r.u8("ToggleNum"), r.u8("Result"))


def _check_mvf(name: str, got: int, expected: int) -> None:
    if got != expected:
        raise MmeError(f"{name}: MVFLength {got:#06x}, expected {expected:#06x}")


@dataclass(frozen=True)
class CmSlacMatchReq(Mme):
    """EV -> EVSE: match with this EVSE (ISO 15118-3 Table A.7)."""

    pev_mac: bytes = bytes(MAC_LEN)
    evse_mac: bytes = bytes(MAC_LEN)
    run_id: bytes = bytes(RUN_ID_LEN)
    pev_id: bytes = _ZERO_ID
    evse_id: bytes = _ZERO_ID
    application_type: int = APPLICATION_TYPE_PEV_EVSE
    security_type: int = SECURITY_TYPE_NONE

    MMTYPE = CM_SLAC_MATCH | REQ
    NAME = "CM_SLAC_MATCH.REQ"

    def _body(self) -> bytes:
        _check_security(self.NAME, self.security_type)
        n = self.NAME
        return (
            _u8(n, "application_type", self.application_type)
            + _u8(n, "security_type", self.security_type)
            + struct.pack("<H", MATCH_REQ_MVF_LEN)
            + _fixed(n, "pev_id", self.pev_id, STATION_ID_LEN)
            + _fixed(n, "pev_mac", self.pev_mac, MAC_LEN)
            + _fixed(n, "evse_id", self.evse_id, STATION_ID_LEN)
            + _fixed(n, "evse_mac", self.evse_mac, MAC_LEN)
            + _fixed(n, "run_id", self.run_id, RUN_ID_LEN)
            + bytes(8)  # RunID is a 16-byte field here; the upper 8 bytes are reserved
        )

    @classmethod
    def _parse(cls, dst: bytes, src: bytes, r: _Reader) -> Self:
        app, sec = r.u8("ApplicationType"), r.u8("SecurityType")
        _check_security(r.name, sec)
        _check_mvf(r.name, r.u16("MVFLength"), MATCH_REQ_MVF_LEN)
        pev_id, pev_mac = r.take(STATION_ID_LEN, "PEV ID"), r.take(MAC_LEN, "PEV MAC")
        evse_id, evse_mac = r.take(STATION_ID_LEN, "EVSE ID"), r.take(MAC_LEN, "EVSE MAC")
        run_id = r.take(RUN_ID_LEN, "RunID")
        r.take(8, "RunID reserved octets")
        return cls(dst, src, pev_mac, evse_mac, run_id, pev_id, evse_id, app, sec)


@dataclass(frozen=True)
class CmSlacMatchCnf(Mme):
    """EVSE -> EV: matched; carries the AVLN's NID and NMK (ISO 15118-3 Table A.7)."""

    pev_mac: bytes = bytes(MAC_LEN)
    evse_mac: bytes = bytes(MAC_LEN)
    run_id: bytes = bytes(RUN_ID_LEN)
    nid: bytes = bytes(NID_LEN)
    nmk: bytes = bytes(NMK_LEN)
    pev_id: bytes = _ZERO_ID
    evse_id: bytes = _ZERO_ID
    application_type: int = APPLICATION_TYPE_PEV_EVSE
    security_type: int = SECURITY_TYPE_NONE

    MMTYPE = CM_SLAC_MATCH | CNF
    NAME = "CM_SLAC_MATCH.CNF"

    def _body(self) -> bytes:
        _check_security(self.NAME, self.security_type)
        n = self.NAME
        return (
            _u8(n, "application_type", self.application_type)
            + _u8(n, "security_type", self.security_type)
            + struct.pack("<H", MATCH_CNF_MVF_LEN)
            + _fixed(n, "pev_id", self.pev_id, STATION_ID_LEN)
            + _fixed(n, "pev_mac", self.pev_mac, MAC_LEN)
            + _fixed(n, "evse_id", self.evse_id, STATION_ID_LEN)
            + _fixed(n, "evse_mac", self.evse_mac, MAC_LEN)
            + _fixed(n, "run_id", self.run_id, RUN_ID_LEN)
            + bytes(8)  # reserved half of the 16-byte RunID field
            + _fixed(n, "nid", self.nid, NID_LEN)
            + b"\x00"  # NID is an 8-byte field here; the last octet is reserved
            + _fixed(n, "nmk", self.nmk, NMK_LEN)
        )

    @classmethod
    def _parse(cls, dst: bytes, src: bytes, r: _Reader) -> Self:
        app, sec = r.u8("ApplicationType"), r.u8("SecurityType")
        _check_security(r.name, sec)
        _check_mvf(r.name, r.u16("MVFLength"), MATCH_CNF_MVF_LEN)
        pev_id, pev_mac = r.take(STATION_ID_LEN, "PEV ID"), r.take(MAC_LEN, "PEV MAC")
        evse_id, evse_mac = r.take(STATION_ID_LEN, "EVSE ID"), r.take(MAC_LEN, "EVSE MAC")
        run_id = r.take(RUN_ID_LEN, "RunID")
        r.take(8, "RunID reserved octets")
        nid = r.take(NID_LEN, "NID")
        r.take(1, "NID reserved octet")
        nmk = r.take(NMK_LEN, "NMK")
        return cls(dst, src, pev_mac, evse_mac, run_id, nid, nmk, pev_id, evse_id, app, sec)


# ---------------------------------------------------------------------------- Qualcomm vendor MMEs
@dataclass(frozen=True)
class VsSwVerReq(Mme):
    """Host -> QCA modem: which firmware do you run (open-plc-utils ``VersionInfo1``)."""

    MMTYPE = VS_SW_VER | REQ
    NAME = "VS_SW_VER.REQ"

    def _body(self) -> bytes:
        return b""

    @classmethod
    def _parse(cls, dst: bytes, src: bytes, r: _Reader) -> Self:
        return cls(dst, src)


@dataclass(frozen=True)
class VsSwVerCnf(Mme):
    """QCA modem -> host: MSTATUS, MDEVICEID, MVERLENGTH, MVERSION (open-plc-utils ``vs_sw_ver_confirm``)."""

    status: int = 0
    device_id: int = 0
    version: str = ""

    MMTYPE = VS_SW_VER | CNF
    NAME = "VS_SW_VER.CNF"

    def _body(self) -> bytes:
        try:
            text = self.version.encode("ascii") + b"\x00"
        except UnicodeEncodeError as exc:
            raise MmeError(f"{self.NAME}.version must be ASCII") from exc
        if len(text) > 0xFF or b"\x00" in text[:-1]:
            raise MmeError(f"{self.NAME}.version must be at most 254 ASCII characters without NUL")
        n = self.NAME
        return _u8(n, "status", self.status) + _u8(n, "device_id", self.device_id) + bytes((len(text),)) + text

    @classmethod
    def _parse(cls, dst: bytes, src: bytes, r: _Reader) -> Self:
        status, device = r.u8("MSTATUS"), r.u8("MDEVICEID")
        raw = r.take(r.u8("MVERLENGTH"), "MVERSION")
        try:
            version = raw.split(b"\x00", 1)[0].decode("ascii")
        except UnicodeDecodeError as exc:
            raise MmeError(f"{r.name}: MVERSION is not ASCII text") from exc
        return cls(dst, src, status, device, version)


@dataclass(frozen=True)
class VsLinkStatusReq(Mme):
    """Host -> QCA modem: are you in an AVLN (EVerest ``qualcomm::link_status_req``)."""

    MMTYPE = VS_LINK_STATUS | REQ
    NAME = "VS_LINK_STATUS.REQ"

    def _body(self) -> bytes:
        return b""

    @classmethod
    def _parse(cls, dst: bytes, src: bytes, r: _Reader) -> Self:
        return cls(dst, src)


@dataclass(frozen=True)
class VsLinkStatusCnf(Mme):
    """QCA modem -> host: ``link_status`` 0x01 = joined (EVerest ``qualcomm::link_status_cnf``)."""

    link_status: int = 0
    reserved: int = 0

    MMTYPE = VS_LINK_STATUS | CNF
    NAME = "VS_LINK_STATUS.CNF"

    def _body(self) -> bytes:
        return _u8(self.NAME, "reserved", self.reserved) + _u8(self.NAME, "link_status", self.link_status)

    @classmethod
    def _parse(cls, dst: bytes, src: bytes, r: _Reader) -> Self:
        reserved = r.u8("reserved")
        return cls(dst, src, r.u8("link status"), reserved)


@dataclass(frozen=True)
class VsResetReq(Mme):
    """Host -> QCA modem: reboot (EVerest ``qualcomm::cm_reset_device_req``)."""

    MMTYPE = VS_RESET | REQ
    NAME = "VS_RESET.REQ"

    def _body(self) -> bytes:
        return b""

    @classmethod
    def _parse(cls, dst: bytes, src: bytes, r: _Reader) -> Self:
        return cls(dst, src)


@dataclass(frozen=True)
class VsResetCnf(Mme):
    """QCA modem -> host: ``status`` 0x00 = accepted (EVerest ``qualcomm::cm_reset_device_cnf``)."""

    status: int = 0

    MMTYPE = VS_RESET | CNF
    NAME = "VS_RESET.CNF"

    def _body(self) -> bytes:
        return _u8(self.NAME, "status", self.status)

    @classmethod
    def _parse(cls, dst: bytes, src: bytes, r: _Reader) -> Self:
        return cls(dst, src, r.u8("success"))


MESSAGE_TYPES: tuple[type[Mme], ...] = (
    CmSetKeyReq,
    CmSetKeyCnf,
    CmSlacParmReq,
    CmSlacParmCnf,
    CmStartAttenCharInd,
    CmMnbcSoundInd,
    CmAttenProfileInd,
    CmAttenCharInd,
    CmAttenCharRsp,
    CmValidateReq,
    CmValidateCnf,
    CmSlacMatchReq,
    CmSlacMatchCnf,
    VsSwVerReq,
    VsSwVerCnf,
    VsLinkStatusReq,
    VsLinkStatusCnf,
    VsResetReq,
    VsResetCnf,
)
_BY_MMTYPE: dict[int, type[Mme]] = {cls.MMTYPE: cls for cls in MESSAGE_TYPES}


def peek_mmtype(frame: bytes) -> int | None:
    """The MMTYPE of a HomePlug AV frame without decoding it, or None when it is not one."""
    if len(frame) < ETH_HEADER_LEN + 3 or struct.unpack_from(">H", frame, 12)[0] != ETHERTYPE_HOMEPLUG_AV:
        return None
    mmtype: int = struct.unpack_from("<H", frame, ETH_HEADER_LEN + 1)[0]
    return mmtype


def decode(frame: bytes) -> Mme:
    """One Ethernet frame to its MME; MmeError (UnsupportedMme for other valid MMEs) otherwise."""
    if not isinstance(frame, bytes | bytearray):
        raise MmeError(f"a frame is bytes, not {type(frame).__name__}")
    frame = bytes(frame)
    if len(frame) < MME_MIN_FRAME_LEN:
        raise MmeError(f"{len(frame)}-byte frame is shorter than the {MME_MIN_FRAME_LEN}-byte MME minimum")
    if len(frame) > MME_MAX_FRAME_LEN:
        raise MmeError(f"{len(frame)}-byte frame is longer than one Ethernet frame ({MME_MAX_FRAME_LEN})")
    ethertype = struct.unpack_from(">H", frame, 12)[0]
    if ethertype != ETHERTYPE_HOMEPLUG_AV:
        raise MmeError(f"Ethertype {ethertype:#06x} is not HomePlug AV ({ETHERTYPE_HOMEPLUG_AV:#06x})")
    dst, src = frame[0:6], frame[6:12]
    mmv = frame[ETH_HEADER_LEN]
    mmtype = struct.unpack_from("<H", frame, ETH_HEADER_LEN + 1)[0]
    if mmv not in _MMVS:
        raise MmeError(f"MMTYPE {mmtype:#06x}: unknown MMV {mmv:#04x}")
    cls = _BY_MMTYPE.get(mmtype)
    if cls is None:
        raise UnsupportedMme(f"MMTYPE {mmtype:#06x} is not handled here")
    r = _Reader(cls.NAME, frame, ETH_HEADER_LEN + 3)
    if mmv != MMV_AV_1_0:
        fmi = r.u8("FMI")
        r.u8("FMSN")
        if fmi >> 4:
            raise UnsupportedMme(f"{cls.NAME}: fragmented into {(fmi >> 4) + 1} parts; only whole MMEs are handled")
    if _is_vendor(mmtype):
        oui = r.take(3, "OUI")
        if oui != QCA_OUI:
            raise UnsupportedMme(f"{cls.NAME}: vendor OUI {oui.hex(':')} is not Qualcomm's {QCA_OUI.hex(':')}")
    return cls._parse(dst, src, r)
