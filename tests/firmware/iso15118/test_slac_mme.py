"""SLAC MME codec: byte layouts by hand, frame sizes from pyslac's table, round trips, fuzzed decoding."""

from __future__ import annotations

import dataclasses
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.iso15118.slac import mme
from firmware.iso15118.slac.keys import new_nmk, nid_from_nmk

EV = bytes.fromhex("02aabbccdd01")
EVSE = bytes.fromhex("02aabbccdd02")
RUN = bytes.fromhex("0102030405060708")
NMK = bytes.fromhex("b59319d7e8157ba001b018669ccee30d")
NID = bytes.fromhex("026bcba5354e08")


def frame(dst: bytes, src: bytes, mmv_mmtype_fmi: str, body: str) -> bytes:
    return (dst + src + b"\x88\xe1" + bytes.fromhex(mmv_mmtype_fmi) + bytes.fromhex(body)).ljust(60, b"\x00")


AAG3 = (10, 20, 30)

# (message, the frame written out by hand from the field tables in mme.py's docstring)
LAYOUTS: list[tuple[mme.Mme, bytes]] = [
    (
        mme.CmSlacParmReq(mme.BROADCAST, EV, run_id=RUN),
        frame(mme.BROADCAST, EV, "01 6460 0000", "00 00 0102030405060708"),
    ),
    (
        mme.CmSlacParmCnf(EV, EVSE, forwarding_sta=EV, run_id=RUN, num_sounds=10, timeout=6),
        frame(EV, EVSE, "01 6560 0000", "ffffffffffff 0a 06 01 02aabbccdd01 00 00 0102030405060708"),
    ),
    (
        mme.CmStartAttenCharInd(mme.BROADCAST, EV, forwarding_sta=EV, run_id=RUN, num_sounds=10, timeout=6),
        frame(mme.BROADCAST, EV, "01 6a60 0000", "00 00 0a 06 01 02aabbccdd01 0102030405060708"),
    ),
    (
        mme.CmMnbcSoundInd(mme.BROADCAST, EV, run_id=RUN, remaining_sounds=9, random=b"\x55" * 16),
        frame(mme.BROADCAST, EV, "01 7660 0000", "0000" + "00" * 17 + "09" + RUN.hex() + "00" * 8 + "55" * 16),
    ),
    (
        mme.CmAttenProfileInd(EVSE, mme.QCA_LOCALCAST, pev_mac=EV, aag=AAG3),
        frame(EVSE, mme.QCA_LOCALCAST, "01 8660 0000", "02aabbccdd01 03 00 0a141e"),
    ),
    (
        mme.CmAttenCharInd(EV, EVSE, source_address=EV, run_id=RUN, num_sounds=10, aag=AAG3),
        frame(EV, EVSE, "01 6e60 0000", "0000 02aabbccdd01" + RUN.hex() + "00" * 34 + "0a 03 0a141e"),
    ),
    (
        mme.CmAttenCharRsp(EVSE, EV, source_address=EV, run_id=RUN, result=0),
        frame(EVSE, EV, "01 6f60 0000", "0000 02aabbccdd01" + RUN.hex() + "00" * 34 + "00"),
    ),
    (mme.CmValidateReq(EVSE, EV, signal_type=0, timer=0, result=1), frame(EVSE, EV, "01 7860 0000", "00 00 01")),
    (mme.CmValidateCnf(EV, EVSE, result=3), frame(EV, EVSE, "01 7960 0000", "00 00 03")),
    (
        mme.CmSlacMatchReq(EVSE, EV, pev_mac=EV, evse_mac=EVSE, run_id=RUN),
        frame(
            EVSE,
            EV,
            "01 7c60 0000",
            "0000 3e00" + "00" * 17 + EV.hex() + "00" * 17 + EVSE.hex() + RUN.hex() + "00" * 8,
        ),
    ),
    (
        mme.CmSlacMatchCnf(EV, EVSE, pev_mac=EV, evse_mac=EVSE, run_id=RUN, nid=NID, nmk=NMK),
        frame(
            EV,
            EVSE,
            "01 7d60 0000",
            "0000 5600"
            + "00" * 17
            + EV.hex()
            + "00" * 17
            + EVSE.hex()
            + RUN.hex()
            + "00" * 8
            + NID.hex()
            + "00"
            + NMK.hex(),
        ),
    ),
    (
        mme.CmSetKeyReq(mme.QCA_LOCALCAST, EVSE, nid=NID, nmk=NMK),
        frame(
            mme.QCA_LOCALCAST, EVSE, "01 0860 0000", "01 00000000 00000000 04 0000 00 00" + NID.hex() + "01" + NMK.hex()
        ),
    ),
    (
        mme.CmSetKeyCnf(EVSE, mme.QCA_LOCALCAST, result=1),
        frame(EVSE, mme.QCA_LOCALCAST, "01 0960 0000", "01 00000000 00000000 04 0000 00 00"),
    ),
    (mme.VsSwVerReq(mme.QCA_LOCALCAST, EVSE), frame(mme.QCA_LOCALCAST, EVSE, "00 00a0 00b052", "")),
    (
        mme.VsSwVerCnf(EVSE, mme.QCA_LOCALCAST, status=0, device_id=0x20, version="MAC-1"),
        frame(EVSE, mme.QCA_LOCALCAST, "00 01a0 00b052", "00 20 06" + b"MAC-1\x00".hex()),
    ),
    (mme.VsLinkStatusReq(mme.QCA_LOCALCAST, EVSE), frame(mme.QCA_LOCALCAST, EVSE, "00 b8a0 00b052", "")),
    (
        mme.VsLinkStatusCnf(EVSE, mme.QCA_LOCALCAST, link_status=1),
        frame(EVSE, mme.QCA_LOCALCAST, "00 b9a0 00b052", "00 01"),
    ),
    (mme.VsResetReq(mme.QCA_LOCALCAST, EVSE), frame(mme.QCA_LOCALCAST, EVSE, "00 1ca0 00b052", "")),
    (mme.VsResetCnf(EVSE, mme.QCA_LOCALCAST, status=0), frame(EVSE, mme.QCA_LOCALCAST, "00 1da0 00b052", "00")),
]


@pytest.mark.parametrize(("message", "wire"), LAYOUTS, ids=[m.NAME for m, _ in LAYOUTS])
def test_layout_by_hand(message: mme.Mme, wire: bytes) -> None:
    assert message.encode() == wire
    assert mme.decode(wire) == message


def test_the_table_covers_every_message_type() -> None:
    assert {type(m) for m, _ in LAYOUTS} == set(mme.MESSAGE_TYPES)


# Whole-frame sizes pyslac lists in FramesSizes (14 Ethernet + 5 HomePlug header + the entry).
@pytest.mark.parametrize(
    ("message", "size"),
    [
        (mme.CmAttenCharRsp(EVSE, EV), 70),
        (mme.CmMnbcSoundInd(mme.BROADCAST, EV), 71),
        (mme.CmAttenProfileInd(EVSE, EV), 85),
        (mme.CmSlacMatchReq(EVSE, EV), 85),
        (mme.CmSlacParmReq(mme.BROADCAST, EV), 60),
        (mme.CmStartAttenCharInd(mme.BROADCAST, EV), 60),
        (mme.CmSetKeyCnf(EVSE, EV), 60),
        (mme.VsLinkStatusCnf(EVSE, EV), 60),
        (mme.CmSlacMatchCnf(EV, EVSE), 14 + 5 + 90),
        (mme.CmAttenCharInd(EV, EVSE), 14 + 5 + 52 + 58),  # 51 fixed octets, NumGroups, 58 AAG
    ],
    ids=lambda v: getattr(v, "NAME", str(v)),
)
def test_frame_sizes(message: mme.Mme, size: int) -> None:
    assert len(message.encode()) == size


def test_an_av_1_0_framed_slac_message_without_fmi_is_read_too() -> None:
    wire = (mme.BROADCAST + EV + b"\x88\xe1" + b"\x00\x64\x60" + b"\x00\x00" + RUN).ljust(60, b"\x00")
    assert mme.decode(wire) == mme.CmSlacParmReq(mme.BROADCAST, EV, run_id=RUN)


def test_peek_mmtype() -> None:
    assert mme.peek_mmtype(mme.CmSetKeyCnf(EVSE, EV).encode()) == 0x6009
    assert mme.peek_mmtype(b"\x00" * 60) is None
    assert mme.peek_mmtype(b"short") is None


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"\x00" * 20, "shorter than the 60-byte"),
        (b"\x00" * 1515, "longer than one Ethernet frame"),
        (frame(EV, EVSE, "", "").replace(b"\x88\xe1", b"\x08\x00", 1), "Ethertype 0x0800"),
        (frame(EV, EVSE, "07 6460 0000", ""), "unknown MMV 0x07"),
        (frame(EV, EVSE, "01 6460 1000", ""), "fragmented into 2 parts"),
        (frame(EV, EVSE, "01 9960 0000", ""), "MMTYPE 0x6099 is not handled"),
        (frame(EV, EVSE, "01 6460 0000", "00 01" + RUN.hex()), "security type 0x01"),
        (frame(EV, EVSE, "00 01a0 00b053", ""), "not Qualcomm's"),
        (frame(EV, EVSE, "01 7c60 0000", "0000 3f00"), "MVFLength 0x003f"),
        (frame(EV, EVSE, "01 8660 0000", EV.hex() + "3b"), "NumGroups 59 outside 1..58"),
        (frame(EV, EVSE, "01 8660 0000", EV.hex() + "00"), "NumGroups 0 outside"),
        (frame(EV, EVSE, "01 7d60 0000", "0000 5600" + "00" * 30), "frame ends inside EVSE ID"),
        (frame(EV, EVSE, "00 01a0 00b052", "00 00 ff 41"), "frame ends inside MVERSION"),
        (frame(EV, EVSE, "00 01a0 00b052", "00 00 02 c3a9"), "MVERSION is not ASCII"),
    ],
)
def test_malformed_frames_are_named(wire: bytes, message: str) -> None:
    with pytest.raises(mme.MmeError, match=message):
        mme.decode(wire)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: mme.CmSlacParmReq(EV[:5], EVSE), "dst must be 6 bytes, got 5"),
        (lambda: mme.CmSlacMatchCnf(EV, EVSE, nmk=b"x"), "nmk must be 16 bytes"),
        (lambda: mme.CmSlacParmCnf(EV, EVSE, num_sounds=256), "num_sounds must be an integer 0..255"),
        (lambda: mme.CmAttenCharInd(EV, EVSE, aag=()), "1..58 groups"),
        (lambda: mme.CmAttenProfileInd(EV, EVSE, aag=(1,) * 59), "1..58 groups"),
        (lambda: mme.CmSetKeyReq(EV, EVSE, my_nonce=-1), "my_nonce must be an integer"),
        (lambda: mme.VsSwVerCnf(EV, EVSE, version="é"), "must be ASCII"),
        (lambda: mme.CmSlacParmReq(EV, EVSE, security_type=1), "security type 0x01"),
    ],
)
def test_encoding_refuses_impossible_fields(build: Any, message: str) -> None:
    with pytest.raises(mme.MmeError, match=message):
        build().encode()


# ------------------------------------------------------------------------- properties and fuzzing
_BYTES = {
    "dst": 6,
    "src": 6,
    "nid": 7,
    "nmk": 16,
    "run_id": 8,
    "forwarding_sta": 6,
    "msound_target": 6,
    "sender_id": 17,
    "random": 16,
    "pev_mac": 6,
    "evse_mac": 6,
    "source_address": 6,
    "source_id": 17,
    "resp_id": 17,
    "pev_id": 17,
    "evse_id": 17,
}
_WIDE = {"my_nonce": st.integers(0, 2**32 - 1), "your_nonce": st.integers(0, 2**32 - 1), "prn": st.integers(0, 0xFFFF)}


def _strategy(name: str) -> st.SearchStrategy[Any]:
    if name in _BYTES:
        return st.binary(min_size=_BYTES[name], max_size=_BYTES[name])
    if name == "security_type":
        return st.just(0)
    if name == "aag":
        return st.lists(st.integers(0, 255), min_size=1, max_size=58).map(tuple)
    if name == "version":
        return st.text(alphabet=string.printable, max_size=254)
    return _WIDE.get(name, st.integers(0, 255))


def _messages(cls: type[mme.Mme]) -> st.SearchStrategy[mme.Mme]:
    return st.builds(cls, **{f.name: _strategy(f.name) for f in dataclasses.fields(cls)})


@pytest.mark.parametrize("cls", mme.MESSAGE_TYPES, ids=lambda c: c.NAME)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_round_trip(cls: type[mme.Mme], data: st.DataObject) -> None:
    message = data.draw(_messages(cls))
    wire = message.encode()
    assert len(wire) >= mme.MME_MIN_FRAME_LEN
    assert mme.decode(wire) == message


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=1600))
def test_arbitrary_bytes_decode_or_raise_mme_error(wire: bytes) -> None:
    try:
        message = mme.decode(wire)
    except mme.MmeError:
        return
    assert isinstance(message, mme.Mme)


_HEADERS = [
    bytes((mmv,)) + cls.MMTYPE.to_bytes(2, "little") + (b"" if mmv == 0 else bytes((fmi, 0))) + oui
    for cls in mme.MESSAGE_TYPES
    for mmv, fmi in ((0, 0), (1, 0), (1, 0x10))
    for oui in ((mme.QCA_OUI,) if cls.MMTYPE >= 0xA000 else (b"",))
]


@settings(max_examples=600, deadline=None)
@given(header=st.sampled_from(_HEADERS), body=st.binary(max_size=120), pad=st.booleans())
def test_known_headers_with_random_bodies_decode_or_raise_mme_error(header: bytes, body: bytes, pad: bool) -> None:
    wire = EV + EVSE + b"\x88\xe1" + header + body
    if pad:
        wire = wire.ljust(60, b"\x00")
    try:
        message = mme.decode(wire)
    except mme.MmeError:
        return
    # Whatever decodes encodes again, and that decodes to the same message.
    assert mme.decode(message.encode()) == message


def test_nid_from_nmk_matches_the_published_pair() -> None:
    # pyslac QUALCOMM_NMK / QUALCOMM_NID (pass phrase "HomePlugAV0123", open-plc-utils evse.ini).
    assert nid_from_nmk(NMK) == NID


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.sampled_from([0, 1]))
def test_nid_has_54_bits_and_the_security_level(nmk: bytes, level: int) -> None:
    nid = nid_from_nmk(nmk, level)
    assert len(nid) == 7
    assert nid[6] >> 6 == 0
    assert (nid[6] >> 4) & 0b11 == level


def test_key_inputs_are_checked() -> None:
    assert len(new_nmk()) == 16 and new_nmk() != new_nmk()
    with pytest.raises(ValueError, match="16 bytes"):
        nid_from_nmk(b"short")
    with pytest.raises(ValueError, match="security level 2"):
        nid_from_nmk(NMK, 2)
