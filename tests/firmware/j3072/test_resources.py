"""The 2030.5 resources: registration rules, one PEV per link, and clean answers to bad input."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.energy.der_settings import DerSettings
from firmware.j3072 import sep_xml
from firmware.j3072.resources import Sep2Resources, lfdi_of, sfdi_of
from firmware.j3072.site_parameters import SiteParameters
from hil.models.j3072_pev import LFDI, NS, Sep2PevClient

PARAMS = SiteParameters(
    der=DerSettings.from_dict({"f_nom_hz": 60, "v_nom_v": 240, "p_rated_w": 7600}),
    max_discharge_w=6000,
    max_charge_w=11500,
    max_current_a=48,
)
OTHER = "AA" * 20


def _server() -> Sep2Resources:
    server = Sep2Resources(wall_clock=lambda: 1_800_000_000)
    server.set_parameters(PARAMS)
    return server


def test_lfdi_and_sfdi_follow_2030_5() -> None:
    cert = b"any DER bytes"
    assert lfdi_of(cert) == hashlib.sha256(cert).hexdigest()[:40].upper()
    # IEEE 2030.5 6.3.3 worked example: LFDI 3E4F45AB31... -> 36 bits 16726121139, check digit 1 (digit sum).
    assert sfdi_of(LFDI) == 167261211391


def test_a_second_pev_cannot_take_the_link() -> None:
    server = _server()
    first = Sep2PevClient(server)
    assert first.register().status == 201
    intruder = Sep2PevClient(server, lfdi=OTHER)
    assert intruder.register().status == 403
    assert intruder.call("GET", "/edev/1").status == 404
    assert intruder.call("GET", "/edev").body.count(b"<EndDevice ") == 0  # sees nothing of the first
    assert first.call("GET", "/edev").body.count(b"<EndDevice ") == 1


def test_registration_must_match_the_certificate() -> None:
    server = _server()
    pev = Sep2PevClient(server)
    sfdi = sfdi_of(LFDI)
    body = f'<EndDevice xmlns="{NS}"><lFDI>{OTHER}</lFDI><sFDI>{sfdi}</sFDI><changedTime>0</changedTime></EndDevice>'
    assert pev.call("POST", "/edev", body).status == 400
    wrong_sfdi = f'<EndDevice xmlns="{NS}"><sFDI>123</sFDI><changedTime>0</changedTime></EndDevice>'
    reply = pev.call("POST", "/edev", wrong_sfdi)
    assert reply.status == 400 and "sFDI" in dict(reply.headers)["X-Reason"]
    assert server.pev is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<DERSettings", "well-formed"),
        (b'<!DOCTYPE x [<!ENTITY a "b">]><DERSettings xmlns="urn:ieee:std:2030.5:ns"/>', "document type"),
        (b'<DERStatus xmlns="urn:ieee:std:2030.5:ns"><readingTime>1</readingTime></DERStatus>', "expected DERSettings"),
        (b"<DERSettings><setGradW>1</setGradW></DERSettings>", "expected DERSettings"),
        (b'<DERSettings xmlns="urn:ieee:std:2030.5:ns"><updatedTime>0</updatedTime></DERSettings>', "setMaxW"),
        (
            b'<DERSettings xmlns="urn:ieee:std:2030.5:ns"><setGradW>70000</setGradW><setMaxW><multiplier>0'
            b"</multiplier><value>1</value></setMaxW><updatedTime>0</updatedTime></DERSettings>",
            "outside",
        ),
        (b"x" * (sep_xml.MAX_BODY + 1), "more than"),
    ],
)
def test_bad_bodies_are_400_with_the_reason(body: bytes, reason: str) -> None:
    server = _server()
    pev = Sep2PevClient(server)
    pev.register()
    reply = server.handle("PUT", "/edev/1/der/1/derg", body, LFDI)
    assert reply.status == 400
    assert reason in dict(reply.headers)["X-Reason"]
    assert server.pev is not None and server.pev.settings is None


@settings(max_examples=300)
@given(st.binary(max_size=600), st.sampled_from(["/edev", "/edev/1/di", "/edev/1/der/1/derg", "/rsps/1/rsp"]))
def test_fuzzed_bodies_never_raise(body: bytes, path: str) -> None:
    server = _server()
    Sep2PevClient(server).register()
    method = "POST" if path in ("/edev", "/rsps/1/rsp") else "PUT"
    reply = server.handle(method, path, body, LFDI)
    assert reply.status in (201, 204, 400, 403, 404)


def test_unknown_paths_and_methods() -> None:
    server = _server()
    pev = Sep2PevClient(server)
    assert pev.call("GET", "/edev/1").status == 404  # not registered yet
    pev.register()
    assert pev.call("GET", "/nothing").status == 404
    assert pev.call("DELETE", "/edev").status == 405
    assert pev.call("PUT", "/edev/1/derp/1/dderc", "<x/>").status == 405  # the site's, not the PEV's
    assert pev.call("GET", "/edev/1/derp/1/derc/99").status == 404


def test_the_limit_is_relative_to_the_declared_rating_and_zero_before() -> None:
    server = _server()
    pev = Sep2PevClient(server, rating_w=12000)
    pev.register()
    assert pev.read_site_parameters()["opModMaxLimW"] == 0  # no rating declared: no export
    before = server.published_version
    pev.send_capability()
    assert server.published_version == before + 1  # the PEV must read the new content
    assert pev.read_site_parameters()["opModMaxLimW"] == 5000  # 6 kW of 12 kW
