"""The approval-list tool: a utility's key, a signed list, a site that checks and installs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware.j3072.approval import ApprovalStore, load_trusted_keys
from tools.j3072_approval import main

ISM = "ACME/OBI/7K6A/J3072_202406"


def _site(tmp_path: Path) -> Path:
    config = tmp_path / "j3072.toml"
    config.write_text(
        'bind = "::1"\nserver_cert = "c.pem"\nserver_key = "k.pem"\npev_roots = "r.pem"\n'
        '[utility]\nservice_area = "PGE-BAY"\napproval_required = true\napproval_list = "store/approvals.json"\n'
        'trusted_issuers = { "PG&E" = "utility.pub.pem" }\n'
    )
    return config


def _sign(tmp_path: Path, out: str, serial: int, until: str = "2099-01-01T00:00:00Z") -> Path:
    args = ["sign", "--key", str(tmp_path / "utility.key"), "--issuer", "PG&E", "--service-area", "PGE-BAY"]
    args += ["--serial", str(serial), "--valid-from", "2020-01-01T00:00:00Z", "--valid-until", until]
    args += ["--ism", ISM, "--out", str(tmp_path / out)]
    assert main(args) == 0
    return tmp_path / out


def test_a_utility_signs_and_a_site_installs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "--key", str(tmp_path / "utility.key"), "--pub", str(tmp_path / "utility.pub.pem")]) == 0
    config = _site(tmp_path)
    listed = _sign(tmp_path, "approvals.json", serial=2)
    assert main(["check", str(listed), "--j3072", str(config)]) == 0
    assert main(["install", str(listed), "--j3072", str(config)]) == 0
    assert "installed" in capsys.readouterr().out
    trusted = load_trusted_keys({"PG&E": (tmp_path / "utility.pub.pem").read_text()})
    store = ApprovalStore(tmp_path / "store" / "approvals.json", trusted, "PGE-BAY")
    store.load()  # what the firmware finds at its next start
    assert store.check(ISM).approved


@pytest.mark.parametrize("case", ["tampered", "expired", "older"])
def test_a_site_refuses_a_bad_list(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["keygen", "--key", str(tmp_path / "utility.key"), "--pub", str(tmp_path / "utility.pub.pem")])
    config = _site(tmp_path)
    assert main(["install", str(_sign(tmp_path, "current.json", serial=5)), "--j3072", str(config)]) == 0
    if case == "tampered":
        bad = _sign(tmp_path, "bad.json", serial=6)
        document = json.loads(bad.read_text())
        document["ism_numbers"].append("EVIL/X/1/J3072_202406")
        bad.write_text(json.dumps(document))
    elif case == "expired":
        bad = _sign(tmp_path, "bad.json", serial=6, until="2021-01-01T00:00:00Z")
    else:
        bad = _sign(tmp_path, "bad.json", serial=4)
    before = (tmp_path / "store" / "approvals.json").read_bytes()
    assert main(["check", str(bad), "--j3072", str(config)]) == 1
    assert main(["install", str(bad), "--j3072", str(config)]) == 1
    assert "refused" in capsys.readouterr().err
    assert (tmp_path / "store" / "approvals.json").read_bytes() == before
