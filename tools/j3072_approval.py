"""The utility's ISM approval list (SAE J3072 gatekeeping, docs/j3072.md) from the command line.

    python -m tools.j3072_approval keygen --key utility.key --pub utility.pub.pem
    python -m tools.j3072_approval sign --key utility.key --issuer "PG&E" --service-area PGE-BAY --serial 5 \\
        --valid-from 2026-01-01T00:00:00Z --valid-until 2027-01-01T00:00:00Z --ism ACME/OBI/7K6A/J3072_202406 \\
        --out approvals.json
    python -m tools.j3072_approval check approvals.json --j3072 /etc/evse/j3072.toml
    python -m tools.j3072_approval install approvals.json --j3072 /etc/evse/j3072.toml

``keygen`` and ``sign`` are what a utility (or a bench engineer standing in for one) does; ``check``
verifies a list against a site's configuration (trusted issuers, service area, validity) and says why
it would be refused; ``install`` stores it where the firmware keeps its list (``utility.approval_list``),
atomically, refusing a tampered, expired or older list. A running firmware reads the stored list at its
next start; the backend's DataTransfer ``J3072ApprovalList`` updates a running one.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from firmware.files import write_atomic
from firmware.j3072.approval import ApprovalListError, ApprovalStore, document, load_trusted_keys, sign_list
from firmware.j3072.config import J3072ConfigError, load_j3072_config


def _time(text: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise SystemExit(f"j3072_approval: {text!r} is not an RFC 3339 time (e.g. 2026-01-01T00:00:00Z)") from None


def _keygen(args: argparse.Namespace) -> int:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_atomic(Path(args.key), pem, mode=0o600)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    write_atomic(Path(args.pub), public, mode=0o644)
    print(f"private key {args.key} (keep it with the utility), public key {args.pub} (give it to the sites)")
    return 0


def _sign(args: argparse.Namespace) -> int:
    key = serialization.load_pem_private_key(Path(args.key).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        print("j3072_approval: the key is not an EC private key", file=sys.stderr)
        return 2
    unsigned = document(
        args.issuer, args.service_area, args.serial, _time(args.valid_from), _time(args.valid_until), args.ism
    )
    write_atomic(Path(args.out), json.dumps(sign_list(unsigned, key), indent=1).encode() + b"\n", mode=0o644)
    print(f"{args.out}: {len(args.ism)} ISM number(s), serial {args.serial}, signed by {args.issuer}")
    return 0


def _store(config_path: str) -> ApprovalStore:
    config = load_j3072_config(Path(config_path))
    trusted = load_trusted_keys({name: path.read_text() for name, path in config.trusted_issuers.items()})
    store = ApprovalStore(config.approval_list, trusted, config.service_area)
    store.load()
    return store


def _check_or_install(args: argparse.Namespace) -> int:
    try:
        store = _store(args.j3072)
        data = Path(args.list).read_bytes()
        if args.command == "install":
            if store.path is None:
                raise ApprovalListError("the configuration has no utility.approval_list to install into")
            approvals = store.update(data)
        else:
            approvals = ApprovalStore(None, store.trusted, store.service_area).update(data)
            if store.current is not None and approvals.serial < store.current.serial:
                raise ApprovalListError(f"serial {approvals.serial} is older than the stored list's")
    except (ApprovalListError, J3072ConfigError, OSError) as exc:
        print(f"j3072_approval: {args.list}: refused: {exc}", file=sys.stderr)
        return 1
    verb = "installed in " + str(store.path) if args.command == "install" else "would be accepted"
    print(f"{args.list}: {len(approvals.ism_numbers)} ISM number(s), serial {approvals.serial}, {verb}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.j3072_approval", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("keygen", help="a utility's EC P-256 signing key and its public key")
    p.add_argument("--key", required=True)
    p.add_argument("--pub", required=True)
    p.set_defaults(func=_keygen)
    p = sub.add_parser("sign", help="sign an approval list")
    p.add_argument("--key", required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--service-area", required=True)
    p.add_argument("--serial", type=int, required=True)
    p.add_argument("--valid-from", required=True)
    p.add_argument("--valid-until", required=True)
    p.add_argument("--ism", action="append", default=[], help="an approved ISM number (repeat)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_sign)
    for name, text in (("check", "would the site accept the list?"), ("install", "store the list for the site")):
        p = sub.add_parser(name, help=text)
        p.add_argument("list")
        p.add_argument("--j3072", required=True, help="the site's J3072 configuration (evse run --j3072)")
        p.set_defaults(func=_check_or_install)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
