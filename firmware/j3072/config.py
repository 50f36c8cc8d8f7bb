"""The J3072 configuration file (TOML) of ``evse run --j3072 FILE``: the site's interconnection settings,
the utility's approval rules and the 2030.5 server on the vehicle link.

::

    connector = 1
    bind = "fe80::1%eth1"               # the vehicle link's address (link-local); "::1" on a bench
    port = 8443                         # 0: a free port (tests)
    server_cert = "evse_chain.pem"      # the EVSE's 2030.5 certificate chain and key (relative to this file)
    server_key = "evse.key"
    pev_roots = "pev_roots.pem"         # roots the PEVs' device certificates must chain to

    [site]                              # the interconnection agreement (Rule 21; seed 003, R113)
    interconnection_agreement = "R21-2026-0042"   # no agreement on file: the site is not configured
    max_discharge_kw = 7.6              # the agreement's maximum export of one PEV
    max_charge_kw = 11.5
    max_current_a = 48
    grad_w_pct_per_s = 0                # 2030.5 setGradW (% of setMaxW per s), 0 = no limit
    [site.der]                          # the site's IEEE 1547 settings: firmware.energy.der_settings (docs/der.md)
    f_nom_hz = 60
    v_nom_v = 240
    p_rated_w = 7600

    [utility]
    service_area = "PGE-BAY"
    accepted_editions = ["J3072_202103", "J3072_202406"]
    approval_required = true            # the utility keeps an ISM approval list (R107)
    approval_list = "/var/lib/evse/j3072-approvals.json"   # where the current list is kept
    trusted_issuers = { "PG&E" = "pge-approvals.pub.pem" }

    [backend]
    v2x = "ask"                         # ask: wait for the backend | allow | forbid

Every error names the file and the key (:class:`J3072ConfigError`); unknown keys are refused. A site
section with a problem is not a start-up error: the firmware runs and every PEV is charge-only with
the reason ``site_not_configured`` (the EVSE is still a charger).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.energy.der_settings import DerConfigError, DerSettings
from firmware.files import read_toml
from firmware.j3072.ism import CERTIFIED_EDITIONS
from firmware.j3072.site_parameters import SiteParameters

__all__ = ["J3072Config", "J3072ConfigError", "load_j3072_config", "parse_j3072_config"]

_TOP = {"format", "connector", "bind", "port", "server_cert", "server_key", "pev_roots", "site", "utility", "backend"}
_SITE = {"interconnection_agreement", "max_discharge_kw", "max_charge_kw", "max_current_a", "grad_w_pct_per_s", "der"}
_UTILITY = {"service_area", "accepted_editions", "approval_required", "approval_list", "trusted_issuers"}
_BACKEND = {"v2x"}
BACKEND_V2X = ("ask", "allow", "forbid")


class J3072ConfigError(ValueError):
    """The J3072 configuration cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class J3072Config:
    connector: int
    bind: str
    port: int
    server_cert: Path
    server_key: Path
    pev_roots: Path
    parameters: SiteParameters | None
    site_problem: str | None  # why the site is not configured (None: it is)
    service_area: str
    accepted_editions: tuple[str, ...]
    approval_required: bool
    approval_list: Path | None
    trusted_issuers: dict[str, Path]
    backend_v2x: str  # ask | allow | forbid


def load_j3072_config(path: Path) -> J3072Config:
    doc = read_toml(path, "the J3072 configuration", J3072ConfigError)
    return parse_j3072_config(doc, where=str(path), base=path.parent)


def parse_j3072_config(doc: Mapping[str, Any], *, where: str = "<config>", base: Path | None = None) -> J3072Config:
    base = base or Path.cwd()
    r = _Reader(doc, where, "", base)
    r.only(_TOP)
    if r.get("format", 1) != 1:
        raise J3072ConfigError(f"{where}: format {doc.get('format')!r} is not supported (1 is)")
    site = r.table("site")
    utility = r.table("utility")
    backend = r.table("backend")
    site.only(_SITE)
    utility.only(_UTILITY)
    backend.only(_BACKEND)
    parameters, problem = _site(site)
    editions = utility.get("accepted_editions", list(CERTIFIED_EDITIONS[1:]))
    if not isinstance(editions, list) or not editions or any(e not in CERTIFIED_EDITIONS for e in editions):
        raise J3072ConfigError(
            f"{where}: utility.accepted_editions must list some of {', '.join(CERTIFIED_EDITIONS)}, not {editions!r}"
        )
    issuers = utility.get("trusted_issuers", {})
    if not isinstance(issuers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in issuers.items()):
        raise J3072ConfigError(f"{where}: utility.trusted_issuers must map issuer names to public key files")
    approval_required = utility.boolean("approval_required", True)
    approval_list = utility.path("approval_list") if "approval_list" in utility.doc else None
    v2x = backend.get("v2x", "ask")
    if v2x not in BACKEND_V2X:
        raise J3072ConfigError(f"{where}: backend.v2x must be one of {', '.join(BACKEND_V2X)}, not {v2x!r}")
    port = r.get("port", 8443)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise J3072ConfigError(f"{where}: port must be 0..65535, not {port!r}")
    connector = r.get("connector", 1)
    if not isinstance(connector, int) or isinstance(connector, bool) or connector < 1:
        raise J3072ConfigError(f"{where}: connector must be an integer >= 1, not {connector!r}")
    service_area = utility.get("service_area", "")
    if not isinstance(service_area, str):
        raise J3072ConfigError(f"{where}: utility.service_area must be text")
    return J3072Config(
        connector=connector,
        bind=r.text("bind"),
        port=port,
        server_cert=r.path("server_cert"),
        server_key=r.path("server_key"),
        pev_roots=r.path("pev_roots"),
        parameters=parameters,
        site_problem=problem,
        service_area=service_area,
        accepted_editions=tuple(editions),
        approval_required=approval_required,
        approval_list=approval_list,
        trusted_issuers={name: _resolve(base, file) for name, file in issuers.items()},
        backend_v2x=v2x,
    )


def _site(site: _Reader) -> tuple[SiteParameters | None, str | None]:
    """The site parameters, or None and why the site counts as not configured."""
    if not site.doc:
        return None, "no [site] section: no interconnection settings"
    agreement = site.doc.get("interconnection_agreement")
    if not isinstance(agreement, str) or not agreement.strip():
        return None, "no interconnection agreement on file (site.interconnection_agreement)"
    if "der" not in site.doc:
        return None, "no IEEE 1547 settings for the site (site.der)"
    try:
        der = DerSettings.from_dict(site.doc["der"])
        parameters = SiteParameters(
            der=der,
            max_discharge_w=site.number("max_discharge_kw") * 1000,
            max_charge_w=site.number("max_charge_kw") * 1000,
            max_current_a=site.number("max_current_a"),
            grad_w_pct_per_s=site.number("grad_w_pct_per_s", 0.0),
        )
    except (DerConfigError, ValueError) as exc:
        return None, f"site settings unusable: {exc}"
    return parameters, None


def _resolve(base: Path, file: str) -> Path:
    path = Path(file)
    return path if path.is_absolute() else base / path


class _Reader:
    def __init__(self, doc: Any, where: str, prefix: str, base: Path) -> None:
        if not isinstance(doc, Mapping):
            raise J3072ConfigError(f"{where}: {prefix.rstrip('.') or 'the document'} must be a table")
        self.doc = doc
        self.where = where
        self.prefix = prefix
        self.base = base

    def only(self, keys: set[str]) -> None:
        unknown = sorted(set(self.doc) - keys)
        if unknown:
            raise J3072ConfigError(f"{self.where}: unknown key {self.prefix}{unknown[0]}")

    def get(self, key: str, default: Any = None) -> Any:
        return self.doc.get(key, default)

    def table(self, key: str) -> _Reader:
        return _Reader(self.doc.get(key, {}), self.where, f"{self.prefix}{key}.", self.base)

    def text(self, key: str) -> str:
        value = self.doc.get(key)
        if not isinstance(value, str) or not value:
            raise J3072ConfigError(f"{self.where}: {self.prefix}{key} is required (text)")
        return value

    def path(self, key: str) -> Path:
        return _resolve(self.base, self.text(key))

    def boolean(self, key: str, default: bool) -> bool:
        value = self.doc.get(key, default)
        if not isinstance(value, bool):
            raise J3072ConfigError(f"{self.where}: {self.prefix}{key} must be true or false, not {value!r}")
        return value

    def number(self, key: str, default: float | None = None) -> float:
        value = self.doc.get(key, default)
        if value is None:
            raise ValueError(f"{self.prefix}{key} is required")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{self.prefix}{key} must be a number >= 0, not {value!r}")
        return float(value)
