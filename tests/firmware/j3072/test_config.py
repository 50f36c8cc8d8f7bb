"""The J3072 configuration file: errors name the key; a site that is not set up is charge-only, not a crash."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from firmware.j3072.config import J3072ConfigError, load_j3072_config, parse_j3072_config

BASE: dict[str, Any] = {
    "connector": 1,
    "bind": "::1",
    "port": 0,
    "server_cert": "evse.pem",
    "server_key": "evse.key",
    "pev_roots": "roots.pem",
    "site": {
        "interconnection_agreement": "R21-2026-0042",
        "max_discharge_kw": 7.6,
        "max_charge_kw": 11.5,
        "max_current_a": 32,
        "der": {"f_nom_hz": 60, "v_nom_v": 240, "p_rated_w": 7600},
    },
    "utility": {
        "service_area": "PGE-BAY",
        "accepted_editions": ["J3072_202406"],
        "approval_required": True,
        "approval_list": "approvals.json",
        "trusted_issuers": {"PG&E": "pge.pub.pem"},
    },
    "backend": {"v2x": "ask"},
}


def _with(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    *parents, key = path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    if value is None:
        del node[key]
    else:
        node[key] = value
    return doc


def test_a_complete_configuration(tmp_path: Path) -> None:
    config = parse_j3072_config(BASE, base=tmp_path)
    assert config.site_problem is None and config.parameters is not None
    # The site's maximum: 7.6 kW, and 32 A at 240 V = 7.68 kW.
    assert config.parameters.discharge_limit_w == 7600
    assert config.server_cert == tmp_path / "evse.pem"
    assert config.trusted_issuers == {"PG&E": tmp_path / "pge.pub.pem"}
    assert config.accepted_editions == ("J3072_202406",)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("colour", "blue", "unknown key colour"),
        ("site.colour", 1, "unknown key site.colour"),
        ("utility.accepted_editions", ["J3072_209912"], "accepted_editions"),
        ("utility.accepted_editions", [], "accepted_editions"),
        ("utility.trusted_issuers", {"x": 3}, "trusted_issuers"),
        ("utility.approval_required", "yes", "approval_required must be true or false"),
        ("backend.v2x", "maybe", "backend.v2x"),
        ("port", 70000, "port"),
        ("connector", 0, "connector"),
        ("server_cert", None, "server_cert is required"),
        ("format", 2, "format"),
    ],
)
def test_errors_name_the_key(path: str, value: Any, message: str) -> None:
    with pytest.raises(J3072ConfigError, match=message):
        parse_j3072_config(_with(path, value), where="j3072.toml")


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        ("site", None, "no [site] section"),
        ("site.interconnection_agreement", None, "no interconnection agreement"),
        ("site.interconnection_agreement", "  ", "no interconnection agreement"),
        ("site.der", None, "IEEE 1547 settings"),
        ("site.der", {"f_nom_hz": 60, "v_nom_v": -1, "p_rated_w": 7600}, "v_nom_v"),
        ("site.max_discharge_kw", -3, "max_discharge_kw"),
        ("site.max_current_a", None, "max_current_a is required"),
    ],
)
def test_a_site_that_is_not_set_up_is_a_reason_not_a_crash(path: str, value: Any, problem: str) -> None:
    config = parse_j3072_config(_with(path, value))
    assert config.parameters is None
    assert config.site_problem is not None and problem in config.site_problem


def test_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(J3072ConfigError, match="cannot read"):
        load_j3072_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 3\n")
    with pytest.raises(J3072ConfigError, match="not valid TOML"):
        load_j3072_config(bad)
