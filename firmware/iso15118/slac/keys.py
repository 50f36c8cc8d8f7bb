"""The network membership key (NMK) and network identifier (NID) of the AVLN an EV joins after SLAC.

A fresh random NMK for every matching session keeps one EV's key from letting it into the next
EV's network (EVerest ``EvseSlacConfig::generate_nmk`` draws one per session; a matched EV leaves
the AVLN when the EVSE's modem gets a new key, EVerest ``leave_logical_network`` citing
[V2G3-A09-121]).

The NID follows from the NMK as the HomePlug AV specification defines it, in the form the
Qualcomm open-plc-utils ``HPAVKeyNID.c`` and EVerest ``slac::utils::generate_nid_from_nmk`` use:
SHA-256 of the NMK, re-hashed 4 more times (PBKDF1 with 5 iterations, no salt); the NID is the
first 52 bits of the digest - octets 0-5 whole and the upper nibble of octet 6 moved to its lower
nibble - with the 2-bit security level in bits 4-5 of octet 6 (0b00 = simple connect, the level
ISO 15118-3 uses). The two most significant bits stay zero: the NID is 54 bits in 7 octets.
Check value (pyslac ``QUALCOMM_NMK``/``QUALCOMM_NID`` for the pass phrase "HomePlugAV0123"):
NMK b59319d7e8157ba001b018669ccee30d -> NID 026bcba5354e08.
"""

from __future__ import annotations

import hashlib
import secrets

from firmware.iso15118.slac.mme import NID_LEN, NMK_LEN

SECURITY_LEVEL_SIMPLE_CONNECT = 0b00  # EVerest NID_SECURITY_LEVEL_SIMPLE_CONNECT
SECURITY_LEVEL_SECURE = 0b01
_NID_HASH_ROUNDS = 5  # one hash and 4 re-hashes (open-plc-utils HPAVKeyNID: "rehash the digest 4 times")


def new_nmk() -> bytes:
    """A random 16-byte NMK from the operating system's CSPRNG."""
    return secrets.token_bytes(NMK_LEN)


def nid_from_nmk(nmk: bytes, security_level: int = SECURITY_LEVEL_SIMPLE_CONNECT) -> bytes:
    """The 7-byte NID of the AVLN keyed with ``nmk`` (see the module docstring)."""
    if len(nmk) != NMK_LEN:
        raise ValueError(f"an NMK is {NMK_LEN} bytes, got {len(nmk)}")
    if security_level not in (SECURITY_LEVEL_SIMPLE_CONNECT, SECURITY_LEVEL_SECURE):
        raise ValueError(f"security level {security_level} is not 0 (simple connect) or 1 (secure)")
    digest = bytes(nmk)
    for _ in range(_NID_HASH_ROUNDS):
        digest = hashlib.sha256(digest).digest()
    last = (security_level << 4) | (digest[NID_LEN - 1] >> 4)
    return digest[: NID_LEN - 1] + bytes((last,))
