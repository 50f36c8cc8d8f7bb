"""A complete test PKI for the interop sessions, in both layouts that need it.

* Ours: the SECC's TLS chain (SECC leaf <- CPO sub-CA <- V2G root) and key, the OEM root that vouches
  for the EV's TLS 1.3 certificate, and the V2G root as the Plug & Charge trust anchor.
* The `iso15118` package's: ``PKI_PATH/iso15118_2/{certs,private_keys}`` with its file names (its
  ``shared/security.py`` CertPath/KeyPath), holding the V2G root it checks our SECC against, the OEM
  provisioning chain it presents in TLS 1.3, and the contract chain (contract <- MO sub-CA 2 <- MO
  sub-CA 1 <- V2G root) it sends in PaymentDetails with its key for the Authorization signature. Its
  key password files exist and are empty, which it reads as "no password".

Certificates are made now with the Annex F profiles of tests.firmware.iso15118.test_pnc, valid from a
day ago for a year, all on secp256r1 (the -2 curve; the package's EVCC pins it for TLS 1.3 too).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from firmware.iso15118.transport import TlsFiles
from tests.firmware.iso15118.test_pnc import EMAID, Issued, issue


def _pem(*items: Issued) -> bytes:
    return b"".join(i.cert.public_bytes(serialization.Encoding.PEM) for i in items)


def _key(item: Issued) -> bytes:
    return item.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_interop_pki(directory: Path) -> dict[str, Path]:
    """Write both layouts under ``directory``; returns our paths (``files`` is a TlsFiles) and ``peer``
    (the package's PKI_PATH)."""
    now = datetime.now(UTC)
    span = {"valid_from": now - timedelta(days=1), "valid_to": now + timedelta(days=365)}
    v2g_root = issue("V2G Root CA", None, ca=True, dc="V2G", **span)
    cpo_sub = issue("CPO Sub-CA", v2g_root, ca=True, path_length=0, dc="CPO", **span)
    secc = issue("SECC EVF", cpo_sub, ca=False, dc="CPO", **span)
    mo_sub1 = issue("MO Sub-CA 1", v2g_root, ca=True, path_length=1, dc="MO", **span)
    mo_sub2 = issue("MO Sub-CA 2", mo_sub1, ca=True, path_length=0, dc="MO", **span)
    contract = issue(EMAID, mo_sub2, ca=False, dc="MO", **span)
    oem_root = issue("OEM Root CA", None, ca=True, dc="OEM", **span)
    oem = issue("OEM Prov Cert", oem_root, ca=False, dc="OEM", **span)

    ours = directory / "secc"
    ours.mkdir(parents=True, exist_ok=True)
    (ours / "secc_chain.pem").write_bytes(_pem(secc, cpo_sub))
    (ours / "secc.key").write_bytes(_key(secc))
    (ours / "oem_root.pem").write_bytes(_pem(oem_root))
    (ours / "v2g_root.pem").write_bytes(_pem(v2g_root))

    peer = directory / "peer"
    certs = peer / "iso15118_2" / "certs"
    keys = peer / "iso15118_2" / "private_keys"
    certs.mkdir(parents=True, exist_ok=True)
    keys.mkdir(parents=True, exist_ok=True)
    (certs / "v2gRootCACert.pem").write_bytes(_pem(v2g_root))
    (certs / "v2gRootCACert.der").write_bytes(v2g_root.der)
    (certs / "oemCertChain.pem").write_bytes(_pem(oem))
    (certs / "oemLeafCert.der").write_bytes(oem.der)
    (certs / "oemRootCACert.pem").write_bytes(_pem(oem_root))
    (certs / "oemRootCACert.der").write_bytes(oem_root.der)
    (certs / "contractLeafCert.der").write_bytes(contract.der)
    (certs / "moSubCA2Cert.der").write_bytes(mo_sub2.der)
    (certs / "moSubCA1Cert.der").write_bytes(mo_sub1.der)
    (certs / "moRootCACert.der").write_bytes(v2g_root.der)
    (keys / "oemLeaf.key").write_bytes(_key(oem))
    (keys / "contractLeaf.key").write_bytes(_key(contract))
    for name in ("oemLeafPassword.txt", "contractLeafPassword.txt", "seccLeafPassword.txt"):
        (keys / name).write_text("")
    return {
        "files": TlsFiles(ours / "secc_chain.pem", ours / "secc.key", trust_anchors=ours / "oem_root.pem"),  # type: ignore[dict-item]
        "v2g_root": ours / "v2g_root.pem",
        "peer": peer,
    }
